/*
 * qmetrics: counters and histogram (see qmetrics.h).
 */
#include "queue/qmetrics.h"
#include "jobs/jobs.h"

#include <stdlib.h>
#include <string.h>

/* a label per registered type (jobs.c), and "invalid" for entries that name none: the last */
#define NTYPES_MAX 32
static const double buckets[] = {0.01, 0.1, 0.5, 1, 5, 30, 120, 600, 1800, 3600};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static const struct {
    const char *name, *help;
} counters[QM_NCOUNTERS] = {
    {"bw_jobs_started_total", "Job runs started."},
    {"bw_jobs_completed_total", "Jobs completed."},
    {"bw_jobs_failed_total", "Job runs that failed (retried or not)."},
    {"bw_jobs_retried_total", "Job runs scheduled for a retry."},
    {"bw_jobs_dead_total", "Jobs sent to the dead-letter stream."},
    {"bw_jobs_duplicate_total", "Entries skipped as repeats of a known job_id."},
    {"bw_job_rows_total", "Rows handled by completed jobs."},
    {"bw_job_bytes_total", "Bytes handled by completed jobs."},
};

typedef struct {
    uint64_t count[QM_NCOUNTERS];
    uint64_t hist[NBUCKETS + 1];
    double seconds;
} TypeStats;

struct QMetrics {
    size_t n; /* labels: the registered types, then "invalid" */
    const char *types[NTYPES_MAX + 1];
    TypeStats t[NTYPES_MAX + 1];
};

static TypeStats *of(QMetrics *m, const char *type) {
    for (size_t i = 0; type && i + 1 < m->n; i++)
        if (strcmp(m->types[i], type) == 0)
            return &m->t[i];
    return &m->t[m->n - 1];
}

QMetrics *qmetrics_new(void) {
    QMetrics *m = xcalloc(1, sizeof(QMetrics));
    size_t n;
    const JobType *const *types = job_types(&n);
    for (size_t i = 0; i < n && m->n < NTYPES_MAX; i++)
        m->types[m->n++] = types[i]->name;
    m->types[m->n++] = "invalid";
    return m;
}

void qmetrics_free(QMetrics *m) {
    free(m);
}

void qmetrics_add(QMetrics *m, const char *type, QmCounter c, uint64_t n) {
    of(m, type)->count[c] += n;
}

void qmetrics_observe(QMetrics *m, const char *type, double seconds) {
    TypeStats *s = of(m, type);
    size_t b = 0;
    while (b < NBUCKETS && seconds > buckets[b])
        b++;
    s->hist[b]++;
    s->seconds += seconds;
}

void qmetrics_write(const QMetrics *m, Buf *b) {
    for (int c = 0; c < QM_NCOUNTERS; c++) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", counters[c].name, counters[c].help,
                   counters[c].name);
        for (size_t t = 0; t < m->n; t++)
            buf_printf(b, "%s{type=\"%s\"} %llu\n", counters[c].name, m->types[t],
                       (unsigned long long)m->t[t].count[c]);
    }
    buf_printf(b, "# HELP bw_job_duration_seconds Run time of finished job runs.\n"
                  "# TYPE bw_job_duration_seconds histogram\n");
    for (size_t t = 0; t < m->n; t++) {
        uint64_t cum = 0;
        for (size_t i = 0; i <= NBUCKETS; i++) {
            cum += m->t[t].hist[i];
            if (i < NBUCKETS)
                buf_printf(b, "bw_job_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n",
                           m->types[t], buckets[i], (unsigned long long)cum);
            else
                buf_printf(b, "bw_job_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n",
                           m->types[t], (unsigned long long)cum);
        }
        buf_printf(b, "bw_job_duration_seconds_sum{type=\"%s\"} %.6f\n", m->types[t],
                   m->t[t].seconds);
        buf_printf(b, "bw_job_duration_seconds_count{type=\"%s\"} %llu\n", m->types[t],
                   (unsigned long long)cum);
    }
}
