/*
 * job: what a job type sees of a running job, and the registry of job types.
 *
 * The queue engine (queue.c) decodes an entry, claims it, and calls the type's
 * run(). From then on the job is the type's state machine on the loop: it
 * reports progress with job_progress() (coalesced by the engine into a few
 * events per second), and ends by calling job_done() exactly once. cancel()
 * asks it to stop soon (shutdown, or the lease was lost); job_done() must
 * still follow, after everything the job allocated is released: the engine
 * frees the job right after job_done().
 *
 * Errors decide what happens next: success completes the job, a retryable
 * error retries it later with backoff, a permanent one sends it to the
 * dead-letter stream at once.
 */
#ifndef BW_JOB_H
#define BW_JOB_H

#include "base/err.h"
#include "jobs/jobspec.h"
#include "services.h"

#include <stdint.h>
#include <uv.h>

typedef struct Job Job;

/*
 * A job type: everything else derives from this one entry (the decoder's field list and
 * rules, the metrics label, the help texts). Register it with one line in jobs.c.
 */
typedef struct {
    const char *name;
    /* the entry fields it takes beyond type, job_id, requested_by and trigger (space-separated) */
    const char *fields;
    int test_only; /* decoded only when WORKER_TEST_JOBS=true */
    int user_lock; /* 1: one job of this kind per user at a time, across replicas */
    /* Rules across fields, after each field is decoded on its own; may fill defaults.
     * 0, or -1 with err set (the dead-letter reason). NULL: none. */
    int (*check)(JobSpec *spec, Err *err);
    const char *summary; /* one line for --help */
    void (*run)(Job *job);
    void (*cancel)(Job *job); /* may be called at most once, any time before job_done */
} JobType;

/* The registered type of that name, NULL if none. */
const JobType *job_type_find(const char *name);
/* Every registered type, in registry order; *n gets their number. */
const JobType *const *job_types(size_t *n);

const JobSpec *job_spec(const Job *job);
uv_loop_t *job_loop(const Job *job);
Services *job_services(const Job *job);
/* Run number of this job, from 1 (counts runs that crashed too). */
int job_attempt(const Job *job);
/* 1 when err ends the job for good (the queue will dead-letter it), 0 when it will run again:
 * the one place that decides, for the job's own records (a backup_metadata or restore_history
 * row says 'failed' exactly when this says 1). An outage of a dependency (connection refused or
 * lost, a request that timed out) never ends a job: it waits for the service without using an
 * attempt. */
int job_error_is_final(const Job *job, const Err *err);

/* A job that covers many users (cleanup scope=all) takes each user's lock, the one a job of
 * that user holds while it runs, before touching that user's backups. cb gets 1 (locked: call
 * job_user_unlock when done), 0 (another job of the user runs now: skip it), or -1 (Redis
 * unreachable, or the entry was taken over). */
typedef void (*JobUserLockCb)(Job *job, int locked, void *data);
void job_user_lock(Job *job, const char *user_id, JobUserLockCb cb, void *data);
void job_user_unlock(Job *job, const char *user_id);
/* Short id for log lines ("job <job_id>"). */
const char *job_log_id(const Job *job);

/* The type's own state; owned and freed by the type. */
void *job_data(const Job *job);
void job_set_data(Job *job, void *data);

/* Report progress (percent 0-100; rows and bytes so far). stage is copied. */
void job_progress(Job *job, const char *stage, int percent, uint64_t rows, uint64_t bytes);
/* Record the backup id this job produced or used (shown in the status hash). */
void job_set_backup_id(Job *job, const char *backup_id);
/* Rows the job expects to handle in all (progress field `rows_total`; 0: unknown). */
void job_set_rows_total(Job *job, uint64_t rows_total);
/* A remark recorded with a success (status hash and event field `note`). */
void job_set_note(Job *job, const char *note);
/* A JSON document recorded with a success (status hash and event field `result`; copied). */
void job_set_result(Job *job, const char *json);
/* Enqueue another job (field/value pairs, n strings), as XADD {prefix}:jobs * does; fire and
 * forget: a failure is logged, and whatever the job was to do must be found again by a
 * backfill (the caller records what is due before it enqueues). */
void job_enqueue(Job *job, const char *const *fv, int n);
/* End the job: err NULL for success. The job must not be touched afterwards. */
void job_done(Job *job, const Err *err);

#endif
