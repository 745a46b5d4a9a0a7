/* fakejob: job.h without the queue (see fakejob.h). */
#include "fakejob.h"

#include <stdio.h>
#include <string.h>

void fakejob_init(Job *job, uv_loop_t *loop, Services *sv, const JobSpec *spec) {
    memset(job, 0, sizeof(*job));
    job->spec = *spec;
    job->loop = loop;
    job->sv = sv;
    job->attempt = 1;
    job->max_attempts = 1;
}

const JobSpec *job_spec(const Job *job) {
    return &job->spec;
}
uv_loop_t *job_loop(const Job *job) {
    return job->loop;
}
Services *job_services(const Job *job) {
    return job->sv;
}
int job_attempt(const Job *job) {
    return job->attempt;
}
int job_error_is_final(const Job *job, const Err *err) {
    return err->kind == ERR_PERMANENT || job->attempt >= job->max_attempts;
}
void job_user_lock(Job *job, const char *user_id, JobUserLockCb cb, void *data) {
    (void)user_id;
    cb(job, 1, data);
}
void job_user_unlock(Job *job, const char *user_id) {
    (void)job;
    (void)user_id;
}
const char *job_log_id(const Job *job) {
    return job->spec.job_id;
}
void *job_data(const Job *job) {
    return job->data;
}
void job_set_data(Job *job, void *data) {
    job->data = data;
}
void job_progress(Job *job, const char *stage, int percent, uint64_t rows, uint64_t bytes) {
    (void)percent;
    (void)bytes;
    snprintf(job->stage, sizeof(job->stage), "%s", stage);
    job->rows = rows;
    if (job->on_progress)
        job->on_progress(job, stage, job->hook_data);
}
void job_set_backup_id(Job *job, const char *backup_id) {
    snprintf(job->backup_id, sizeof(job->backup_id), "%s", backup_id);
}
void job_set_rows_total(Job *job, uint64_t rows_total) {
    job->rows_total = rows_total;
}
void job_set_result(Job *job, const char *json) {
    snprintf(job->result, sizeof(job->result), "%s", json ? json : "");
}
void job_set_note(Job *job, const char *note) {
    snprintf(job->note, sizeof(job->note), "%s", note);
}
void job_enqueue(Job *job, const char *const *fv, int n) {
    (void)job;
    (void)fv;
    (void)n; /* the in-process tests run one job at a time */
}
void job_done(Job *job, const Err *err) {
    job->ndone++;
    job->done = 1;
    job->failed = err != NULL;
    if (err)
        job->err = *err;
}

ScopeCache *services_scope_cache(Services *s) {
    (void)s;
    return NULL; /* every in-process backup reads the catalog */
}
PgPool *services_pg(Services *s) {
    return s->pool;
}
Storage *services_storage(Services *s) {
    return s->store;
}
const Config *services_config(const Services *s) {
    return s->cfg;
}
Storage *services_replica(Services *s) {
    (void)s;
    return NULL;
}
void services_replica_copied(Services *s, uint64_t bytes, int failed) {
    (void)s;
    (void)bytes;
    (void)failed;
}

KmsClient *services_kms(Services *s) {
    (void)s;
    return NULL; /* in-process tests use keyrings */
}
const JobConfig *services_jobconfig(const Services *s) {
    return s->jcfg;
}
