/*
 * fakejob: the job API (job.h) and the services a job borrows, without the
 * queue: a job type's state machine driven in process, over a real PostgreSQL
 * pool and any store (the in-memory one for faults). Linked into a test
 * instead of queue/queue.c (the job API) and services.c (a test that uses it must not pull those
 * in).
 */
#ifndef BW_FAKEJOB_H
#define BW_FAKEJOB_H

#include "jobs/job.h"
#include "jobs/jobconfig.h"

struct Services {
    PgPool *pool;
    Storage *store;
    const Config *cfg;
    const JobConfig *jcfg;
};

struct Job {
    JobSpec spec;
    uv_loop_t *loop;
    Services *sv;
    void *data;
    int attempt, max_attempts;
    int done, ndone; /* job_done calls */
    Err err;
    int failed;
    char stage[96], backup_id[JOBSPEC_ID_MAX + 1], note[256];
    char result[4096]; /* job_set_result's JSON, "" when none */
    uint64_t rows, rows_total;
    /* a hook on progress (for example: cancel once a table is being read) */
    void (*on_progress)(Job *job, const char *stage, void *data);
    void *hook_data;
};

/* A job of type (one of jobs.h) with spec, ready for type->run(job). */
void fakejob_init(Job *job, uv_loop_t *loop, Services *sv, const JobSpec *spec);

#endif
