/*
 * qjob: a job's life inside the queue engine (see queue.c for the picture):
 * the script calls that carry it, its end (job_done: the outcome decided once,
 * then FINISH batched per loop turn), and the API job types see (job.h).
 */
#include "queue_intern.h"

#include <malloc.h>

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
int call_script(Queue *q, Job *job, QScript s, QArgs *extra, CallCb cb) {
    Call *call = call_new(q, s, extra);
    call->job = job;
    call->cb = cb;
    return call_send(call);
}

/* The same for a batch of jobs (the array is copied). */
int call_batch(Queue *q, Job **jobs, int n, QScript s, QArgs *extra,
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
void job_end(Job *job) {
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

const char *jid_of(const Job *job) {
    return job->spec.job_id[0] ? job->spec.job_id : job->entry;
}

void add_ids(QArgs *a, const Job *job) {
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
void send_finish(Job *job) {
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

void on_flush(uv_check_t *h) {
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
    uint64_t cap = (uint64_t)jcfg->job_backoff_base_ms;
    for (int i = 1; i < attempt && cap < (uint64_t)jcfg->job_backoff_max_ms; i++)
        cap *= 2;
    if (cap > (uint64_t)jcfg->job_backoff_max_ms)
        cap = (uint64_t)jcfg->job_backoff_max_ms;
    /* full jitter, but never less than a tenth of the base: no instant retry storms */
    uint64_t floor = (uint64_t)jcfg->job_backoff_base_ms / 10;
    uint64_t r = ((uint64_t)rand() << 31 | (uint64_t)rand()) % (cap + 1);
    return r < floor ? floor : r;
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

void job_cancel(Job *job) {
    if (job->cancelled || job->state != J_RUNNING)
        return;
    job->cancelled = 1;
    if (job->type->cancel)
        job->type->cancel(job);
}
