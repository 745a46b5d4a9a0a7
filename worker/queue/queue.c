/*
 * queue: the engine (see queue.h; the Redis side of each step is in qscripts.c).
 *
 * A job's life in this process:
 *
 *   entry read ──decode──► STARTING ──START 'run'──► RUNNING ──job_done──► FINISHING ─► freed
 *        │                     │ busy/duplicate/dead/lost: freed       ▲      │ Redis down:
 *        └─ malformed ─────────┴──────────────────────────────────────┘      └ FINISH_WAIT
 * (retried)
 *
 * The reader is the only place that takes new work and it asks for exactly
 * the free slots, so concurrency is never exceeded; the sweep of stale
 * entries runs in the reader's turn for the same reason. Everything else is
 * paced by one tick timer: lease renewals, coalesced progress, result
 * retries while Redis is away, and promotion of due retries.
 */
#include "queue/queue.h"
#include "base/backoff.h"
#include "jobs/jobconfig.h"
#include "aws/s3.h"
#include "jobs/job.h"
#include "jobs/jobspec.h"
#include "base/log.h"
#include "queue/qmetrics.h"
#include "queue/qscripts.h"
#include "version.h"

#include <malloc.h>
#include <unistd.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#define GROUP           "backup-workers"
#define BLOCK_MS        2000
#define TICK_MS         100
#define PROGRESS_MIN_MS 250
#define PROMOTE_MS      500
#define BUSY_WAIT_MS    1000
#define FINISH_RETRY_MS 1000
#define STATS_MS        5000
#define MAX_FIELD_BYTES (1 << 20)
#define MAX_SWEEP       64

typedef enum {
    J_STARTING,
    J_RUNNING,
    J_HANDBACK,
    J_FINISH_QUEUED, /* result waiting for the next FINISH batch */
    J_FINISHING,
    J_FINISH_WAIT, /* Redis away: retried by the tick */
    J_DONE
} JobState;

#define MAX_BATCH 64

struct Job {
    Queue *q;
    JobState state;
    JobSpec spec;
    const JobType *type;
    int valid;
    Err decode_err;
    char entry[64];
    QArgs fields; /* the entry's field/value pairs, copied */
    int deliveries;
    int attempt;
    uint64_t started_ms;
    char stage[96];
    int percent;
    uint64_t rows, bytes, rows_total;
    int progress_dirty, progress_inflight, renew_inflight;
    uint64_t progress_sent_ms, finish_next_ms;
    char backup_id[JOBSPEC_ID_MAX + 1];
    char note[256];    /* said with a success (the status hash's `note`) */
    char *result_json; /* the same, a JSON document (the status hash's `result`), or NULL */
    void *data;
    int cancelled, lost, handed_back, finish_tries;
    const char *outcome;   /* completed, retry, wait (an outage: not an attempt) or dead */
    JobUserLockCb lock_cb; /* job_user_lock in flight */
    void *lock_data;
    Err result;
    uint64_t retry_at;
    int refs; /* Redis calls in flight that point at this job */
    char log_id[JOBSPEC_ID_MAX + 8];
    Job *prev, *next;
    Job *fnext; /* in the FINISH queue */
};

struct Queue {
    uv_loop_t *loop;
    const Config *cfg;
    const JobConfig *jcfg;
    Services *svc;
    RedisClient *cmd;    /* borrowed from services: scripts and acks */
    RedisClient *reader; /* ours: XREADGROUP ... BLOCK */
    char me[300];
    char stream[128];
    Job *jobs;
    int njobs;
    int reading, sweeping, group_ready, creating_group, pending_first;
    /* a group that cannot be created (a key of another type, MOVED from a cluster node): asked
     * for again with backoff, the error logged when it changes, not at every try */
    uint64_t next_group_ms;
    uint32_t group_backoff_ms;
    int group_attempts;
    char group_err[160];
    long long reader_id; /* CLIENT ID of the reader's connection: shutdown unblocks its read */
    int promoting, stats_inflight;
    uint64_t next_sweep_ms, next_renew_ms, next_promote_ms, next_stats_ms;
    uv_timer_t tick, grace;
    uv_check_t flush; /* sends queued results at the end of each loop turn, batched */
    Job *finq, *finq_tail;
    int calls; /* Redis calls in flight that point at the queue */
    int stopping, grace_expired, retiring, closing, handles;
    uint64_t stop_deadline_ms;
    void (*on_stopped)(void *);
    void *stop_data;
    struct {
        char id[64];
        int deliveries;
    } swept[MAX_SWEEP];
    int nswept;
    QMetrics *metrics;
    long long pending, delayed;
    long long waiting, dead;    /* entries not yet delivered to the group; dead-letter entries */
    uint64_t oldest_waiting_ms; /* enqueue time of the oldest undelivered entry (0: none) */
    uint64_t handed_back, lost, promoted;
};

/* ---- small helpers ---- */

static inline uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The metrics label of a job: its type, or "invalid" for an entry that did not decode. */
static inline const char *mtype(const Job *job) {
    return job->valid ? job->spec.type : NULL;
}

static inline int reply_is(const redisReply *r, const char *s) {
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           strcmp(r->str, s) == 0;
}

typedef void (*CallCb)(Queue *q, Job *job, redisReply *reply, const Err *err);

typedef struct {
    Queue *q;
    Job *job;    /* the job a single-job script is about, or NULL */
    Job **batch; /* the jobs of a batched script (START, FINISH) */
    int nbatch;
    CallCb cb;
    void (*batch_cb)(Queue *q, Job **jobs, int n, redisReply *reply, const Err *err);
    QArgs argv;
    QScript s;
} Call;

/* script calls, a job's lifetime and the job API (below) */
static int call_script(Queue *q, Job *job, QScript s, QArgs *extra, CallCb cb);
static int call_batch(Queue *q, Job **jobs, int n, QScript s, QArgs *extra,
                      void (*cb)(Queue *q, Job **jobs, int n, redisReply *reply, const Err *err));
static void add_ids(QArgs *a, const Job *job);
static const char *jid_of(const Job *job);
static void job_cancel(Job *job);
static void job_end(Job *job);
static void send_finish(Job *job);
static void on_flush(uv_check_t *h);
/* the reader and the shutdown */
static void read_next(Queue *q);
static void check_stopped(Queue *q);

/* ---- starting ---- */

static void on_handback(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)reply;
    (void)err;
    q->handed_back++;
    if (job->state == J_HANDBACK)
        job_end(job);
}

static void hand_back(Job *job) {
    Queue *q = job->q;
    QArgs a = {0};
    add_ids(&a, job);
    qargs_fmt(&a, "%lld", q->jcfg->job_visibility_timeout_ms);
    if (job->state != J_RUNNING)
        job->state = J_HANDBACK;
    job->handed_back = 1;
    log_info(job->log_id, "handing back (shutdown)");
    if (call_script(q, job, QS_HANDBACK, &a, on_handback) != 0 && job->state == J_HANDBACK)
        job_end(job); /* Redis is away: the lease runs out and another worker takes it */
}

static void on_start_one(Queue *q, Job *job, const redisReply *r, const Err *err) {
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        /* unknown outcome: the entry stays pending and is swept after the lease */
        log_warn(job->log_id, "could not claim entry %s: %s", job->entry,
                 err ? err->msg : "unexpected reply");
        job_end(job);
        return;
    }
    const char *what = r->element[0]->str;
    if (strcmp(what, "run") == 0 && r->elements == 2) {
        job->attempt = (int)r->element[1]->integer;
        if (q->stopping) {
            job->state = J_HANDBACK;
            hand_back(job);
            return;
        }
        job->state = J_RUNNING;
        job->started_ms = now_ms();
        qmetrics_add(q->metrics, mtype(job), QM_STARTED, 1);
        log_info(job->log_id, "started %s%s%s (attempt %d, entry %s)", job->spec.type,
                 job->spec.user_id[0] ? " for user " : "", job->spec.user_id, job->attempt,
                 job->entry);
        job->type->run(job);
        return;
    }
    if (strcmp(what, "duplicate") == 0) {
        qmetrics_add(q->metrics, mtype(job), QM_DUPLICATE, 1);
        log_info(job->log_id, "entry %s repeats a job already %s: acknowledged, not run",
                 job->entry,
                 r->elements > 1 && r->element[1]->str[0] ? r->element[1]->str : "seen");
    } else if (strcmp(what, "busy") == 0) {
        log_debug(job->log_id, "user %s is busy with another job: waiting", job->spec.user_id);
    } else if (strcmp(what, "dead") == 0) {
        qmetrics_add(q->metrics, mtype(job), QM_DEAD, 1);
        log_error(job->log_id, "dead-lettered: it never finished in %d attempts",
                  q->jcfg->job_max_attempts);
    }
    job_end(job);
}

static void on_start(Queue *q, Job **jobs, int n, redisReply *reply, const Err *err) {
    int ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == (size_t)n;
    for (int i = 0; i < n; i++)
        on_start_one(q, jobs[i], ok ? reply->element[i] : NULL, err);
}

/* Claim the entries of one read with one START script. */
static void start_jobs(Queue *q, Job **jobs, int n) {
    Job *batch[MAX_BATCH];
    int nb = 0;
    QArgs a = {0};
    qargs_fmt(&a, "%d", BUSY_WAIT_MS / 2 + rand() % BUSY_WAIT_MS);
    qargs_fmt(&a, "%lld", q->jcfg->job_visibility_timeout_ms);
    qargs_fmt(&a, "%d", q->jcfg->job_max_attempts);
    for (int j = 0; j < n; j++) {
        Job *job = jobs[j];
        if (!job->valid || job->deliveries > q->jcfg->job_max_attempts + 1) {
            /* malformed, or an entry nothing could even start: dead letter at once */
            if (job->valid)
                err_set(&job->decode_err, ERR_PERMANENT, ERR_CODE_PROTOCOL,
                        "delivered %d times without ever being started", job->deliveries);
            job->result = job->decode_err;
            job->outcome = "dead";
            qmetrics_add(q->metrics, mtype(job), QM_DEAD, 1);
            log_error(job->log_id, "rejected entry %s: %s", job->entry, job->result.msg);
            send_finish(job);
            continue;
        }
        if (q->stopping) {
            hand_back(job);
            continue;
        }
        batch[nb++] = job;
        add_ids(&a, job);
        qargs_str(&a, job->type->user_lock && job->spec.user_id[0] ? "1" : "0");
        qargs_str(&a, job->deliveries > 0 ? "1" : "0");
        qargs_fmt(&a, "%d", job->fields.n);
        for (int i = 0; i < job->fields.n; i++)
            qargs_add(&a, job->fields.v[i], job->fields.len[i]);
    }
    if (nb == 0) {
        qargs_free(&a);
        return;
    }
    if (call_batch(q, batch, nb, QS_START, &a, on_start) != 0)
        for (int i = 0; i < nb; i++)
            job_end(batch[i]); /* still pending: swept after the lease */
}

/* A delivered entry (fields NULL when deleted while pending), decoded into a new job. */
static Job *take_entry(Queue *q, const redisReply *id, const redisReply *fields, int deliveries) {
    if (id == NULL || id->type != REDIS_REPLY_STRING)
        return NULL;
    /* One run per entry per process: an entry this process already holds (taken over by the
     * sweep, then handed back again by the first XREADGROUP ... 0 of its pending list, or
     * read twice around a reconnect) is left to the run it has. */
    for (Job *j = q->jobs; j; j = j->next)
        if (strcmp(j->entry, id->str) == 0) {
            log_debug(j->log_id, "entry %s is already running here: not started again", id->str);
            return NULL;
        }
    Job *job = xcalloc(1, sizeof(*job));
    job->q = q;
    job->state = J_STARTING;
    job->deliveries = deliveries;
    snprintf(job->entry, sizeof(job->entry), "%s", id->str);
    JobField jf[32];
    size_t n = 0;
    int too_big = 0;
    if (fields && fields->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            const redisReply *k = fields->element[i], *v = fields->element[i + 1];
            if (k->len + v->len > MAX_FIELD_BYTES) {
                too_big = 1;
                continue; /* not copied: a dead letter keeps the rest and says why */
            }
            qargs_add(&job->fields, k->str, k->len);
            qargs_add(&job->fields, v->str, v->len);
            if (n < 32) {
                jf[n].name = k->str;
                jf[n].name_len = k->len;
                jf[n].value = v->str;
                jf[n].value_len = v->len;
            }
            n++;
        }
    }
    err_clear(&job->decode_err);
    if (too_big)
        err_set(&job->decode_err, ERR_PERMANENT, ERR_CODE_INVALID,
                "a field is larger than %d bytes (dropped from this dead letter)", MAX_FIELD_BYTES);
    else if (jobspec_decode(&job->spec, jf, n, job->entry, q->jcfg->worker_test_jobs,
                            &job->decode_err) == 0)
        job->valid = 1;
    if (job->valid) {
        job->type = job_type_find(job->spec.type);
        if (job->type == NULL) {
            job->valid = 0;
            err_set(&job->decode_err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "job type '%s' has no implementation", job->spec.type);
        }
    }
    snprintf(job->log_id, sizeof(job->log_id), "job %s", jid_of(job));
    job->next = q->jobs;
    if (q->jobs)
        q->jobs->prev = job;
    q->jobs = job;
    q->njobs++;
    return job;
}

/* ---- reading ---- */

static void on_group(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    Queue *q = data;
    q->calls--;
    q->creating_group = 0;
    if (err == NULL ||
        (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) == 0)) {
        if (!q->group_ready)
            log_info(NULL, "consuming %s as %s in group %s", q->stream, q->me, GROUP);
        q->group_ready = 1;
        q->group_backoff_ms = 0;
        q->group_attempts = 0;
        q->group_err[0] = '\0';
        read_next(q);
    } else {
        Backoff b = {100, 10000, 1}; /* no jitter: one reader per process asks */
        q->group_attempts++;
        q->group_backoff_ms = (uint32_t)backoff_bound_ms(&b, q->group_attempts);
        q->next_group_ms = now_ms() + q->group_backoff_ms;
        if (strncmp(q->group_err, err->msg, sizeof(q->group_err) - 1) != 0) {
            log_warn(NULL,
                     "cannot create consumer group %s on %s: %s (asked again with backoff, up to "
                     "every 10 s; logged again only if the error changes)",
                     GROUP, q->stream, err->msg);
            snprintf(q->group_err, sizeof(q->group_err), "%.159s", err->msg);
        }
    }
    check_stopped(q);
}

static void ensure_group(Queue *q) {
    if (q->creating_group || now_ms() < q->next_group_ms)
        return;
    Err e;
    /* start id 0: jobs enqueued before the first worker ever started still run */
    if (redis_command(q->cmd, on_group, q, &e, "XGROUP CREATE %s %s 0 MKSTREAM", q->stream,
                      GROUP) == 0) {
        q->creating_group = 1;
        q->calls++;
    }
}

static void on_reader_id(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    Queue *q = data;
    q->calls--;
    q->reader_id = !err && reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
    check_stopped(q);
}

static void on_unblocked(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    (void)reply;
    (void)err; /* not unblocked: the read ends after BLOCK_MS as it would have */
    Queue *q = data;
    q->calls--;
    check_stopped(q);
}

static void on_read(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    Queue *q = data;
    q->reading = 0;
    q->calls--;
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOGROUP", 7) == 0) {
        q->group_ready = 0; /* the stream or group was deleted: create again */
    } else if (err) {
        if (err->code != ERR_CODE_CANCELLED)
            log_debug(NULL, "XREADGROUP: %s", err->msg);
    } else {
        q->pending_first = 0;
        Job *jobs[MAX_BATCH];
        int n = 0;
        if (reply && reply->type == REDIS_REPLY_ARRAY) {
            for (size_t s = 0; s < reply->elements; s++) {
                const redisReply *sr = reply->element[s];
                if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2)
                    continue;
                const redisReply *entries = sr->element[1];
                for (size_t i = 0; i < entries->elements && n < MAX_BATCH; i++) {
                    const redisReply *e = entries->element[i];
                    if (e->type == REDIS_REPLY_ARRAY && e->elements == 2)
                        if ((jobs[n] = take_entry(q, e->element[0], e->element[1], 0)) != NULL)
                            n++;
                }
            }
        }
        start_jobs(q, jobs, n);
    }
    if (!q->closing)
        read_next(q);
    check_stopped(q);
}

static void on_claim(RedisClient *c, redisReply *reply, const Err *err, void *data);

static void on_sweep(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    Queue *q = data;
    q->calls--;
    if (err || reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        q->sweeping = 0;
        read_next(q);
        check_stopped(q);
        return;
    }
    /* XPENDING ... IDLE: [id, consumer, idle ms, deliveries]; skip what runs here */
    QArgs a = {0};
    qargs_str(&a, "XCLAIM");
    qargs_str(&a, q->stream);
    qargs_str(&a, GROUP);
    qargs_str(&a, q->me);
    qargs_fmt(&a, "%lld", q->jcfg->job_visibility_timeout_ms);
    int n = 0;
    q->nswept = 0;
    for (size_t i = 0; i < reply->elements && q->nswept < MAX_SWEEP; i++) {
        const redisReply *p = reply->element[i];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4)
            continue;
        int running_here = 0;
        for (Job *j = q->jobs; j; j = j->next)
            if (strcmp(j->entry, p->element[0]->str) == 0)
                running_here = 1;
        if (running_here)
            continue;
        log_info(NULL, "taking over entry %s from %s (silent for %lld ms, delivered %lld times)",
                 p->element[0]->str, p->element[1]->str, p->element[2]->integer,
                 p->element[3]->integer);
        qargs_str(&a, p->element[0]->str);
        snprintf(q->swept[q->nswept].id, sizeof(q->swept[0].id), "%s", p->element[0]->str);
        q->swept[q->nswept++].deliveries = (int)p->element[3]->integer + 1;
        n++;
    }
    Err e;
    if (n > 0 && redis_command_argv(c, on_claim, q, a.n, (const char **)a.v, a.len, &e) == 0) {
        q->calls++;
    } else {
        q->sweeping = 0;
        read_next(q);
    }
    qargs_free(&a);
    check_stopped(q);
}

static void on_claim(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    (void)err;
    Queue *q = data;
    q->calls--;
    q->sweeping = 0;
    Job *jobs[MAX_BATCH];
    int n = 0;
    if (reply && reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements && n < MAX_BATCH; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            int deliveries = 1; /* swept: never taken for a fresh read */
            for (int k = 0; k < q->nswept; k++)
                if (strcmp(q->swept[k].id, e->element[0]->str) == 0)
                    deliveries = q->swept[k].deliveries;
            if ((jobs[n] = take_entry(q, e->element[0], e->element[1], deliveries)) != NULL)
                n++;
        }
    start_jobs(q, jobs, n);
    read_next(q);
    check_stopped(q);
}

static void sweep(Queue *q, int free_slots) {
    Err e;
    long long lease = q->jcfg->job_visibility_timeout_ms;
    q->next_sweep_ms = now_ms() + (uint64_t)(lease / 2 < 5000 ? lease / 2 : 5000);
    if (redis_command(q->cmd, on_sweep, q, &e, "XPENDING %s %s IDLE %lld - + %d", q->stream, GROUP,
                      lease, free_slots < MAX_SWEEP ? free_slots : MAX_SWEEP) == 0) {
        q->sweeping = 1;
        q->calls++;
    }
}

static void read_next(Queue *q) {
    if (q->reading || q->sweeping || q->stopping || q->closing)
        return;
    /* jobs whose result is only being recorded hold no slot, up to a second allowance */
    int active = 0;
    for (Job *j = q->jobs; j; j = j->next)
        active += j->state <= J_HANDBACK;
    int conc = q->cfg->worker_concurrency;
    int free_slots = conc - active;
    if (free_slots > 2 * conc - q->njobs)
        free_slots = 2 * conc - q->njobs;
    if (free_slots > MAX_BATCH)
        free_slots = MAX_BATCH;
    if (free_slots <= 0 || !redis_client_connected(q->cmd))
        return;
    if (!q->group_ready) {
        ensure_group(q);
        return;
    }
    /* a dependency is down (readiness false): take no new job until it is back */
    if (!services_ready(q->svc))
        return;
    if (now_ms() >= q->next_sweep_ms) {
        sweep(q, free_slots);
        if (q->sweeping)
            return;
    }
    if (!redis_client_connected(q->reader))
        return;
    char count[16], block[16];
    snprintf(count, sizeof(count), "%d", free_slots);
    snprintf(block, sizeof(block), "%d", BLOCK_MS);
    /* at start, what this consumer name already holds (a restarted pod keeps its name) */
    const char *argv[] = {"XREADGROUP",
                          "GROUP",
                          GROUP,
                          q->me,
                          "COUNT",
                          count,
                          "BLOCK",
                          block,
                          "STREAMS",
                          q->stream,
                          q->pending_first ? "0" : ">"};
    Err e;
    /* the connection's id first (pipelined: it answers before the read blocks), so that a
     * shutdown can end the wait at once instead of after BLOCK_MS */
    if (redis_command(q->reader, on_reader_id, q, &e, "CLIENT ID") == 0)
        q->calls++;
    if (redis_command_argv(q->reader, on_read, q, 11, argv, NULL, &e) == 0) {
        q->reading = 1;
        q->calls++;
    }
}

/* ---- the tick: leases, progress, result retries, promotion, stats ---- */

static void on_renew(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)q;
    job->renew_inflight = 0;
    if (err == NULL && reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 &&
        job->state == J_RUNNING && !job->lost) {
        job->lost = 1;
        q->lost++;
        log_warn(job->log_id, "lease lost: entry %s was taken over; cancelling this run",
                 job->entry);
        job_cancel(job);
    }
}

static void on_progress(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)q;
    (void)reply;
    (void)err;
    job->progress_inflight = 0;
}

static void on_promote(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)job;
    (void)err;
    q->promoting = 0;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        q->promoted += (uint64_t)reply->integer;
}

static void on_stats(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    (void)err;
    Queue *q = data;
    q->calls--;
    q->stats_inflight = 0;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 5) {
        const redisReply *p = reply->element[0], *d = reply->element[1], *x = reply->element[2],
                         *w = reply->element[3], *o = reply->element[4];
        if (p->type == REDIS_REPLY_ARRAY && p->elements >= 1 &&
            p->element[0]->type == REDIS_REPLY_INTEGER)
            q->pending = p->element[0]->integer;
        if (d->type == REDIS_REPLY_INTEGER)
            q->delayed = d->integer;
        if (x->type == REDIS_REPLY_INTEGER)
            q->dead = x->integer;
        if (w->type == REDIS_REPLY_INTEGER)
            q->waiting = w->integer;
        if (o->type == REDIS_REPLY_STRING) /* an entry id: <ms>-<seq> */
            q->oldest_waiting_ms = strtoull(o->str, NULL, 10);
        else if (o->type == REDIS_REPLY_INTEGER)
            q->oldest_waiting_ms = 0;
    }
    check_stopped(q);
}

static void tick_jobs(Queue *q, uint64_t now) {
    int renew = now >= q->next_renew_ms;
    if (renew)
        q->next_renew_ms = now + (uint64_t)q->jcfg->job_visibility_timeout_ms / 3;
    Job *next;
    for (Job *job = q->jobs; job; job = next) {
        next = job->next;
        if (job->state == J_FINISH_WAIT && now >= job->finish_next_ms) {
            if (q->stopping && q->grace_expired && now >= q->stop_deadline_ms) {
                log_error(job->log_id, "result could not be recorded before exit (Redis "
                                       "unreachable); another worker will run it again");
                job_end(job);
                continue;
            }
            send_finish(job);
            continue;
        }
        if (job->state != J_RUNNING || job->lost || job->handed_back)
            continue;
        if (renew && !job->renew_inflight) {
            QArgs a = {0};
            qargs_str(&a, job->entry);
            qargs_str(&a, job->type->user_lock ? job->spec.user_id : "");
            qargs_fmt(&a, "%lld", q->jcfg->job_visibility_timeout_ms);
            if (call_script(q, job, QS_RENEW, &a, on_renew) == 0)
                job->renew_inflight = 1;
        }
        if (job->progress_dirty && !job->progress_inflight &&
            now >= job->progress_sent_ms + PROGRESS_MIN_MS) {
            QArgs a = {0};
            add_ids(&a, job);
            qargs_str(&a, job->stage);
            qargs_fmt(&a, "%d", job->percent);
            qargs_fmt(&a, "%llu", (unsigned long long)job->rows);
            qargs_fmt(&a, "%llu", (unsigned long long)job->bytes);
            qargs_fmt(&a, "%llu", (unsigned long long)job->rows_total);
            if (call_script(q, job, QS_PROGRESS, &a, on_progress) == 0) {
                job->progress_inflight = 1;
                job->progress_dirty = 0;
                job->progress_sent_ms = now;
            }
        }
    }
}

static void on_tick(uv_timer_t *t) {
    Queue *q = t->data;
    uint64_t now = now_ms();
    tick_jobs(q, now);
    if (!redis_client_connected(q->cmd))
        return;
    if (!q->stopping && !q->promoting && now >= q->next_promote_ms) {
        q->next_promote_ms = now + PROMOTE_MS;
        QArgs a = {0};
        qargs_str(&a, "100");
        if (call_script(q, NULL, QS_PROMOTE, &a, on_promote) == 0)
            q->promoting = 1;
    }
    if (!q->stats_inflight && now >= q->next_stats_ms) {
        q->next_stats_ms = now + STATS_MS;
        Err e;
        char delayed[160], dead[160];
        snprintf(delayed, sizeof(delayed), "%s:delayed", q->cfg->redis_prefix);
        snprintf(dead, sizeof(dead), "%s:dead", q->cfg->redis_prefix);
        /* One round trip; a missing group just leaves the gauges as they were. Waiting entries:
         * the group's lag (Redis 7), counted up to 10000 when Redis cannot tell (after an
         * XDEL); the oldest is the first entry after the group's last delivered id. */
        if (redis_command(
                q->cmd, on_stats, q, &e, "EVAL %s 0 %s %s %s %s",
                "local ok, p = pcall(redis.call, 'XPENDING', ARGV[1], ARGV[2]) "
                "if not ok then p = {0} end "
                "local waiting, oldest = 0, 0 "
                "local okg, gs = pcall(redis.call, 'XINFO', 'GROUPS', ARGV[1]) "
                "if okg then for _, g in ipairs(gs) do "
                "  local f = {} for i = 1, #g, 2 do f[g[i]] = g[i + 1] end "
                "  if f['name'] == ARGV[2] then "
                "    local from = '(' .. f['last-delivered-id'] "
                "    local n = redis.call('XRANGE', ARGV[1], from, '+', 'COUNT', 1) "
                "    if #n > 0 then oldest = n[1][1] end "
                "    if type(f['lag']) == 'number' then waiting = f['lag'] "
                "    elseif #n > 0 then "
                "      waiting = #redis.call('XRANGE', ARGV[1], from, '+', 'COUNT', 10000) "
                "    end "
                "  end "
                "end end "
                "return {p, redis.call('ZCARD', ARGV[3]), redis.call('XLEN', ARGV[4]), "
                "waiting, oldest}",
                q->stream, GROUP, delayed, dead) == 0) {
            q->stats_inflight = 1;
            q->calls++;
        }
    }
    read_next(q);
}

/* ---- shutdown ---- */

static void on_handle_closed(uv_handle_t *h) {
    Queue *q = h->data;
    if (--q->handles == 0) {
        void (*done)(void *) = q->on_stopped;
        void *data = q->stop_data;
        qmetrics_free(q->metrics);
        free(q);
        if (done)
            done(data);
    }
}

static void on_retire(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)job;
    (void)err;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        log_info(NULL, "left consumer group %s", GROUP);
    else if (reply && reply->type == REDIS_REPLY_INTEGER)
        log_info(NULL, "consumer %s kept: it still holds entries for other workers to take", q->me);
}

static void check_stopped(Queue *q) {
    if (!q->stopping || q->closing || q->njobs > 0 || q->reading || q->sweeping)
        return;
    if (!q->retiring) {
        q->retiring = 1;
        QArgs a = {0};
        if (call_script(q, NULL, QS_RETIRE, &a, on_retire) == 0)
            return;
    }
    if (q->calls > 0)
        return;
    q->closing = 1;
    redis_client_free(q->reader);
    q->reader = NULL;
    uv_timer_stop(&q->tick);
    uv_timer_stop(&q->grace);
    uv_check_stop(&q->flush);
    uv_close((uv_handle_t *)&q->tick, on_handle_closed);
    uv_close((uv_handle_t *)&q->grace, on_handle_closed);
    uv_close((uv_handle_t *)&q->flush, on_handle_closed);
}

static void on_grace(uv_timer_t *t) {
    Queue *q = t->data;
    q->grace_expired = 1;
    q->stop_deadline_ms = now_ms() + 5000;
    Job *next;
    for (Job *job = q->jobs; job; job = next) {
        next = job->next;
        if (job->state == J_RUNNING && !job->handed_back) {
            hand_back(job);
            job_cancel(job);
        }
    }
    /* a slow or stalled store must not hold the exit: every request still out fails now, so
     * the cancelled jobs end within seconds (their entries are already handed back) */
    services_halt(q->svc);
}

void queue_shutdown(Queue *q, void (*done)(void *data), void *data) {
    if (q->stopping)
        return;
    q->stopping = 1;
    q->on_stopped = done;
    q->stop_data = data;
    log_info(NULL, "queue: no new jobs; %d running get %.1f s to finish", q->njobs,
             (double)q->cfg->worker_shutdown_grace_ms / 1000.0);
    /* the read waiting for new entries answers now, with none (as if its BLOCK ran out) */
    Err e;
    if (q->reading && q->reader_id > 0 &&
        redis_command(q->cmd, on_unblocked, q, &e, "CLIENT UNBLOCK %lld TIMEOUT", q->reader_id) ==
            0)
        q->calls++;
    uv_timer_start(&q->grace, on_grace, (uint64_t)q->cfg->worker_shutdown_grace_ms, 0);
    check_stopped(q);
}

/* ---- setup and metrics ---- */

Queue *queue_new(uv_loop_t *loop, const Config *cfg, Services *svc) {
    Queue *q = xcalloc(1, sizeof(*q));
    q->loop = loop;
    q->cfg = cfg;
    q->jcfg = services_jobconfig(svc);
    q->svc = svc;
    q->cmd = services_redis(svc);
    q->pending_first = 1;
    q->metrics = qmetrics_new();
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "worker");
    host[sizeof(host) - 1] = '\0';
    snprintf(q->me, sizeof(q->me), "%s:%d", host, (int)getpid());
    snprintf(q->stream, sizeof(q->stream), "%s:jobs", cfg->redis_prefix);

    RedisOptions ro;
    config_redis_options(cfg, &ro);
    char name[340];
    snprintf(name, sizeof(name), "backup-worker-reader:%s", q->me);
    ro.name = name;
    ro.command_timeout_ms = BLOCK_MS + 10000;
    q->reader = redis_client_new(loop, &ro);

    uv_timer_init(loop, &q->tick);
    uv_timer_init(loop, &q->grace);
    uv_check_init(loop, &q->flush);
    q->tick.data = q->grace.data = q->flush.data = q;
    q->handles = 3;
    uv_timer_start(&q->tick, on_tick, TICK_MS, TICK_MS);
    return q;
}

void queue_metrics(Queue *q, Buf *b) {
    qmetrics_write(q->metrics, b);
    buf_printf(b,
               "# HELP bw_jobs_in_flight Jobs held by this process.\n"
               "# TYPE bw_jobs_in_flight gauge\nbw_jobs_in_flight %d\n",
               q->njobs);
    buf_printf(b,
               "# HELP bw_queue_pending Entries delivered and not yet acknowledged (all "
               "workers).\n# TYPE bw_queue_pending gauge\nbw_queue_pending %lld\n",
               q->pending);
    buf_printf(b,
               "# HELP bw_queue_delayed Jobs waiting for a retry or a busy user.\n"
               "# TYPE bw_queue_delayed gauge\nbw_queue_delayed %lld\n",
               q->delayed);
    uint64_t now = now_ms();
    buf_printf(b,
               "# HELP bw_queue_waiting Entries enqueued and not yet delivered to a worker.\n"
               "# TYPE bw_queue_waiting gauge\nbw_queue_waiting %lld\n",
               q->waiting);
    buf_printf(b,
               "# HELP bw_queue_oldest_waiting_seconds Age of the oldest entry not yet "
               "delivered (0: none).\n# TYPE bw_queue_oldest_waiting_seconds gauge\n"
               "bw_queue_oldest_waiting_seconds %.3f\n",
               q->waiting > 0 && q->oldest_waiting_ms && now > q->oldest_waiting_ms
                   ? (double)(now - q->oldest_waiting_ms) / 1000.0
                   : 0.0);
    buf_printf(b,
               "# HELP bw_queue_dead Entries in the dead-letter stream.\n"
               "# TYPE bw_queue_dead gauge\nbw_queue_dead %lld\n",
               q->dead);
    buf_printf(b,
               "# HELP bw_jobs_handed_back_total Jobs given back at shutdown.\n"
               "# TYPE bw_jobs_handed_back_total counter\nbw_jobs_handed_back_total %llu\n",
               (unsigned long long)q->handed_back);
    buf_printf(b,
               "# HELP bw_jobs_lease_lost_total Runs cancelled because another worker took "
               "the entry over.\n# TYPE bw_jobs_lease_lost_total counter\n"
               "bw_jobs_lease_lost_total %llu\n",
               (unsigned long long)q->lost);
}

/* ---- a job's life inside the queue engine:
 * the script calls that carry it, its end (job_done: the outcome decided once,
 * then FINISH batched per loop turn), and the API job types see (job.h).
 */

/* ---- script calls ---- */

static void job_unref(Job *job);

static void on_call_done(redisReply *reply, const Err *err, void *data) {
    Call *call = data;
    Queue *q = call->q;
    if (call->batch_cb)
        call->batch_cb(q, call->batch, call->nbatch, reply, err);
    else
        call->cb(q, call->job, reply, err);
    q->calls--;
    if (call->job)
        job_unref(call->job);
    for (int i = 0; i < call->nbatch; i++)
        job_unref(call->batch[i]);
    free(call->batch);
    free(call);
    check_stopped(q);
}

/* A call of script s: the common arguments (qscripts.h), then extra (taken). */
static Call *call_new(Queue *q, QScript s, QArgs *extra) {
    Call *call = xcalloc(1, sizeof(*call));
    call->q = q;
    call->s = s;
    QArgs *a = &call->argv;
    qargs_str(a, q->cfg->redis_prefix);
    qargs_str(a, GROUP);
    qargs_str(a, q->me);
    qargs_fmt(a, "%llu", (unsigned long long)now_ms());
    qargs_fmt(a, "%d", q->jcfg->events_maxlen);
    qargs_fmt(a, "%lld", q->jcfg->job_retention_ms);
    for (int i = 0; i < extra->n; i++)
        qargs_add(a, extra->v[i], extra->len[i]);
    qargs_free(extra);
    return call;
}

static int call_send(Call *call) {
    Queue *q = call->q;
    if (qscript_run(q->cmd, call->s, &call->argv, on_call_done, call) != 0) {
        free(call->batch);
        free(call);
        return -1;
    }
    q->calls++;
    if (call->job)
        call->job->refs++;
    for (int i = 0; i < call->nbatch; i++)
        call->batch[i]->refs++;
    return 0;
}

/* Run script s about job (or NULL) with the common arguments then extra (taken). -1 if Redis is
 * not connected. */
static int call_script(Queue *q, Job *job, QScript s, QArgs *extra, CallCb cb) {
    Call *call = call_new(q, s, extra);
    call->job = job;
    call->cb = cb;
    return call_send(call);
}

/* The same for a batch of jobs (the array is copied). */
static int call_batch(Queue *q, Job **jobs, int n, QScript s, QArgs *extra,
                      void (*cb)(Queue *, Job **, int, redisReply *, const Err *)) {
    Call *call = call_new(q, s, extra);
    call->batch = xmalloc((size_t)n * sizeof(Job *));
    memcpy(call->batch, jobs, (size_t)n * sizeof(Job *));
    call->nbatch = n;
    call->batch_cb = cb;
    return call_send(call);
}

/* ---- job lifetime ---- */

static void job_free(Job *job) {
    qargs_free(&job->fields);
    free(job->result_json);
    free(job);
}

static void job_unref(Job *job) {
    if (--job->refs == 0 && job->state == J_DONE)
        job_free(job);
}

/* The job leaves its slot; memory goes when the last call referring to it returns. */
static void job_end(Job *job) {
    Queue *q = job->q;
    if (job->state == J_DONE)
        return;
    job->state = J_DONE;
    if (job->prev)
        job->prev->next = job->next;
    else
        q->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    q->njobs--;
    if (job->refs == 0)
        job_free(job);
    /* a job that met a huge row grew the heap; give the pages back once nothing runs, so the
     * resident size returns to the baseline between jobs */
    if (q->njobs == 0)
        malloc_trim(0);
    read_next(q);
    check_stopped(q);
}

static const char *user_of(const Job *job) {
    return job->valid ? job->spec.user_id : "";
}

static const char *jid_of(const Job *job) {
    return job->spec.job_id[0] ? job->spec.job_id : job->entry;
}

static void add_ids(QArgs *a, const Job *job) {
    qargs_str(a, job->entry);
    qargs_str(a, jid_of(job));
    qargs_str(a, job->valid ? job->spec.type : "");
    qargs_str(a, user_of(job));
}

/* ---- finishing ---- */

/*
 * Results are queued and sent at the end of the loop turn, many per FINISH
 * script: one round trip and one script call for a whole batch is what lets
 * short jobs run at thousands per second.
 */
static void send_finish(Job *job) {
    Queue *q = job->q;
    job->state = J_FINISH_QUEUED;
    job->fnext = NULL;
    if (q->finq_tail)
        q->finq_tail->fnext = job;
    else
        q->finq = job;
    q->finq_tail = job;
    if (!uv_is_active((uv_handle_t *)&q->flush) && !q->closing)
        uv_check_start(&q->flush, on_flush);
    read_next(q); /* the job's slot is free for the next one */
}

static void finish_later(Job *job, const Err *err) {
    if (job->finish_tries == 1 || job->finish_tries % 30 == 0)
        log_warn(job->log_id, "could not record the result (%s); retrying",
                 err ? err->msg : "unexpected reply");
    job->state = J_FINISH_WAIT;
    job->finish_next_ms = now_ms() + FINISH_RETRY_MS;
}

static void on_finish(Queue *q, Job **jobs, int n, redisReply *reply, const Err *err) {
    (void)q;
    int ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == (size_t)n;
    for (int i = 0; i < n; i++) {
        Job *job = jobs[i];
        redisReply *r = ok ? reply->element[i] : NULL;
        if (reply_is(r, "ok")) {
            job_end(job);
        } else if (reply_is(r, "lost")) {
            if (job->finish_tries > 1)
                log_info(job->log_id, "result already recorded, or the entry was taken over");
            else
                log_warn(job->log_id,
                         "result not recorded: the entry is no longer ours (lease expired?)");
            job_end(job);
        } else {
            finish_later(job, err);
        }
    }
}

static void on_flush(uv_check_t *h) {
    Queue *q = h->data;
    uv_check_stop(h);
    while (q->finq) {
        Job *batch[MAX_BATCH];
        int n = 0;
        QArgs a = {0};
        while (q->finq && n < MAX_BATCH) {
            Job *job = q->finq;
            q->finq = job->fnext;
            if (q->finq == NULL)
                q->finq_tail = NULL;
            job->finish_tries++;
            job->state = J_FINISHING;
            batch[n++] = job;
            add_ids(&a, job);
            qargs_str(&a, job->outcome);
            qargs_str(&a, job->result.kind == ERR_NONE ? job->note : job->result.msg);
            qargs_fmt(&a, "%llu", (unsigned long long)job->retry_at);
            qargs_str(&a, job->backup_id);
            qargs_fmt(&a, "%llu", (unsigned long long)job->rows);
            qargs_fmt(&a, "%llu", (unsigned long long)job->bytes);
            qargs_fmt(&a, "%d", job->attempt);
            qargs_str(&a, job->result_json ? job->result_json : "");
            /* the original fields: a retry is re-enqueued from them, a dead letter keeps them */
            int with_fields = strcmp(job->outcome, "completed") != 0;
            qargs_fmt(&a, "%d", with_fields ? job->fields.n : 0);
            for (int i = 0; with_fields && i < job->fields.n; i++)
                qargs_add(&a, job->fields.v[i], job->fields.len[i]);
        }
        if (call_batch(q, batch, n, QS_FINISH, &a, on_finish) != 0) {
            Err e;
            err_set(&e, ERR_RETRYABLE, ERR_CODE_CONNECT, "Redis not connected");
            for (int i = 0; i < n; i++)
                finish_later(batch[i], &e);
        }
    }
}

static uint64_t backoff_ms(const JobConfig *jcfg, int attempt) {
    Backoff b = {(uint64_t)jcfg->job_backoff_base_ms, (uint64_t)jcfg->job_backoff_max_ms, 0};
    uint64_t r = backoff_delay_ms(&b, attempt);
    /* never less than a tenth of the base: no instant retry storms */
    uint64_t least = (uint64_t)jcfg->job_backoff_base_ms / 10;
    return r < least ? least : r;
}

static int is_outage(const Err *err);

void job_done(Job *job, const Err *err) {
    Queue *q = job->q;
    if (job->state != J_RUNNING) {
        log_error(job->log_id, "job_done called twice (ignored)");
        return;
    }
    double secs = (double)(now_ms() - job->started_ms) / 1000.0;
    qmetrics_observe(q->metrics, mtype(job), secs);
    if (job->lost || job->handed_back) {
        job_end(job);
        return;
    }
    if (!err_is_set(err)) {
        err_clear(&job->result);
        job->outcome = "completed";
        qmetrics_add(q->metrics, mtype(job), QM_COMPLETED, 1);
        qmetrics_add(q->metrics, mtype(job), QM_ROWS, job->rows);
        qmetrics_add(q->metrics, mtype(job), QM_BYTES, job->bytes);
        log_info(job->log_id, "completed in %.3f s (attempt %d)", secs, job->attempt);
    } else if (!job->cancelled && is_outage(err)) {
        /* a dependency is down: wait for it, this run does not count as an attempt */
        job->result = *err;
        job->outcome = "wait";
        uint64_t delay = backoff_ms(q->jcfg, 1);
        job->retry_at = now_ms() + delay;
        qmetrics_add(q->metrics, mtype(job), QM_FAILED, 1);
        qmetrics_add(q->metrics, mtype(job), QM_RETRIED, 1);
        log_warn(job->log_id,
                 "attempt %d stopped by an outage (%s); it runs again in %.1f s, "
                 "as the same attempt",
                 job->attempt, err->msg, (double)delay / 1000.0);
    } else if (!job_error_is_final(job, err)) {
        job->result = *err;
        job->outcome = "retry";
        uint64_t delay = backoff_ms(q->jcfg, job->attempt);
        job->retry_at = now_ms() + delay;
        qmetrics_add(q->metrics, mtype(job), QM_FAILED, 1);
        qmetrics_add(q->metrics, mtype(job), QM_RETRIED, 1);
        log_warn(job->log_id, "attempt %d of %d failed: %s; retrying in %.1f s", job->attempt,
                 q->jcfg->job_max_attempts, err->msg, (double)delay / 1000.0);
    } else {
        job->result = *err;
        if (err->kind == ERR_RETRYABLE && !job->cancelled)
            err_prefix(&job->result, "gave up after %d attempts", job->attempt);
        job->outcome = "dead";
        qmetrics_add(q->metrics, mtype(job), QM_FAILED, 1);
        qmetrics_add(q->metrics, mtype(job), QM_DEAD, 1);
        log_error(job->log_id, "failed for good: %s", job->result.msg);
    }
    send_finish(job);
}

/* ---- the job API for job types ---- */

const JobSpec *job_spec(const Job *job) {
    return &job->spec;
}
uv_loop_t *job_loop(const Job *job) {
    return job->q->loop;
}
Services *job_services(const Job *job) {
    return job->q->svc;
}
static void on_user_lock(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)q;
    JobUserLockCb cb = job->lock_cb;
    job->lock_cb = NULL;
    int r = -1;
    if (err == NULL && reply && reply->type == REDIS_REPLY_INTEGER)
        r = (int)reply->integer;
    if (cb)
        cb(job, r, job->lock_data);
}

void job_user_lock(Job *job, const char *user_id, JobUserLockCb cb, void *data) {
    Queue *q = job->q;
    QArgs a = {0};
    qargs_str(&a, job->entry);
    qargs_str(&a, user_id);
    qargs_fmt(&a, "%lld", q->jcfg->job_visibility_timeout_ms);
    qargs_str(&a, "lock");
    job->lock_cb = cb;
    job->lock_data = data;
    if (call_script(q, job, QS_USERLOCK, &a, on_user_lock) != 0) {
        job->lock_cb = NULL;
        cb(job, -1, data);
    }
}

static void on_user_unlock(Queue *q, Job *job, redisReply *reply, const Err *err) {
    (void)q;
    (void)job;
    (void)reply;
    (void)err; /* an unreleased lock expires with its TTL */
}

void job_user_unlock(Job *job, const char *user_id) {
    QArgs a = {0};
    qargs_str(&a, job->entry);
    qargs_str(&a, user_id);
    qargs_str(&a, "0");
    qargs_str(&a, "unlock");
    call_script(job->q, job, QS_USERLOCK, &a, on_user_unlock);
}

/* Connection refused or lost, or a request that timed out: the service, not the job. */
static int is_outage(const Err *err) {
    return err->kind == ERR_RETRYABLE &&
           (err->code == ERR_CODE_CONNECT || err->code == ERR_CODE_TIMEOUT);
}

int job_error_is_final(const Job *job, const Err *err) {
    if (err == NULL || job->cancelled || is_outage(err))
        return 0;
    return err->kind != ERR_RETRYABLE || job->attempt >= job->q->jcfg->job_max_attempts;
}

int job_attempt(const Job *job) {
    return job->attempt;
}
const char *job_log_id(const Job *job) {
    return job->log_id;
}
void *job_data(const Job *job) {
    return job->data;
}
void job_set_data(Job *job, void *data) {
    job->data = data;
}

void job_progress(Job *job, const char *stage, int percent, uint64_t rows, uint64_t bytes) {
    if (stage)
        snprintf(job->stage, sizeof(job->stage), "%s", stage);
    job->percent = percent < 0 ? 0 : percent > 100 ? 100 : percent;
    job->rows = rows;
    job->bytes = bytes;
    job->progress_dirty = 1;
}

void job_set_backup_id(Job *job, const char *backup_id) {
    snprintf(job->backup_id, sizeof(job->backup_id), "%s", backup_id);
}

void job_set_rows_total(Job *job, uint64_t rows_total) {
    job->rows_total = rows_total;
    job->progress_dirty = 1;
}

static void on_enqueued(RedisClient *r, redisReply *reply, const Err *err, void *data) {
    (void)r;
    (void)reply;
    char *what = data;
    if (err) /* the job it was to start stays due: its record says so, a backfill finds it */
        log_warn(NULL, "could not enqueue %s: %s", what, err->msg);
    free(what);
}

void job_enqueue(Job *job, const char *const *fv, int n) {
    Queue *q = job->q;
    char key[256];
    snprintf(key, sizeof(key), "%s:jobs", q->cfg->redis_prefix);
    const char **argv = xcalloc((size_t)n + 3, sizeof(char *));
    argv[0] = "XADD";
    argv[1] = key;
    argv[2] = "*";
    for (int i = 0; i < n; i++)
        argv[3 + i] = fv[i];
    char what[160];
    snprintf(what, sizeof(what), "job %s", n >= 2 && strcmp(fv[0], "job_id") == 0 ? fv[1] : "?");
    char *w = xstrdup(what);
    Err e;
    if (redis_command_argv(q->cmd, on_enqueued, w, n + 3, argv, NULL, &e) != 0) {
        log_warn(NULL, "could not enqueue %s: %s", what, e.msg);
        free(w);
    }
    free(argv);
}

void job_set_result(Job *job, const char *json) {
    free(job->result_json);
    job->result_json = json ? xstrdup(json) : NULL;
}

void job_set_note(Job *job, const char *note) {
    snprintf(job->note, sizeof(job->note), "%s", note);
}

static void job_cancel(Job *job) {
    if (job->cancelled || job->state != J_RUNNING)
        return;
    job->cancelled = 1;
    if (job->type->cancel)
        job->type->cancel(job);
}
