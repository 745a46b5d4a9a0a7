/*
 * queue_intern: what the queue engine's two files share (queue.c: reading,
 * starting, the tick, shutdown; qjob.c: script calls, a job's lifetime, the job
 * API for job types). Not for anyone else.
 */
#ifndef BW_QUEUE_INTERN_H
#define BW_QUEUE_INTERN_H

#include "queue.h"
#include "jobconfig.h"
#include "s3.h"
#include "job.h"
#include "jobspec.h"
#include "log.h"
#include "qmetrics.h"
#include "qscripts.h"
#include "version.h"

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

/* qjob.c: script calls, a job's lifetime and the job API */
int call_script(Queue *q, Job *job, QScript s, QArgs *extra, CallCb cb);
int call_batch(Queue *q, Job **jobs, int n, QScript s, QArgs *extra,
               void (*cb)(Queue *q, Job **jobs, int n, redisReply *reply, const Err *err));
void add_ids(QArgs *a, const Job *job);
const char *jid_of(const Job *job);
void job_cancel(Job *job);
void job_end(Job *job);
void send_finish(Job *job);
void on_flush(uv_check_t *h);
/* queue.c: the reader and the shutdown */
void read_next(Queue *q);
void check_stopped(Queue *q);

#endif
