/*
 * sleep: a job that takes time and fails on request, for the tests of the
 * queue engine (lease renewal, takeover, shutdown, retries, per-user locks).
 * Only registered when WORKER_TEST_JOBS is on. Fields: ms (duration), fail
 * (retryable|permanent), fail_attempts (fail only the first N attempts).
 */
#include "jobs/jobs.h"
#include "base/buf.h"

#include <stdlib.h>

typedef struct {
    uv_timer_t timer;
    Job *job;
    uint64_t start_ms;
    int cancelled;
} Sleep;

static void on_closed(uv_handle_t *h) {
    Sleep *s = h->data;
    Job *job = s->job;
    const JobSpec *spec = job_spec(job);
    int cancelled = s->cancelled;
    free(s);
    Err err;
    err_clear(&err);
    if (cancelled)
        err_set(&err, ERR_RETRYABLE, ERR_CODE_CANCELLED, "cancelled");
    else if (spec->fail_permanent >= 0 &&
             (spec->fail_attempts == 0 || job_attempt(job) <= spec->fail_attempts))
        err_set(&err, spec->fail_permanent ? ERR_PERMANENT : ERR_RETRYABLE, ERR_CODE_INVALID,
                "sleep job asked to fail (%s) on attempt %d",
                spec->fail_permanent ? "permanent" : "retryable", job_attempt(job));
    job_done(job, err_is_set(&err) ? &err : NULL);
}

static void on_timer(uv_timer_t *t) {
    Sleep *s = t->data;
    const JobSpec *spec = job_spec(s->job);
    uint64_t elapsed = uv_now(t->loop) - s->start_ms;
    if (elapsed < (uint64_t)spec->sleep_ms) {
        job_progress(s->job, "sleeping", (int)(elapsed * 100 / (uint64_t)spec->sleep_ms),
                     elapsed / 100, 0);
        return;
    }
    uv_close((uv_handle_t *)t, on_closed);
}

static void sleep_run(Job *job) {
    Sleep *s = xcalloc(1, sizeof(*s));
    s->job = job;
    job_set_data(job, s);
    uv_timer_init(job_loop(job), &s->timer);
    s->timer.data = s;
    long ms = job_spec(job)->sleep_ms;
    s->start_ms = uv_now(job_loop(job));
    uv_timer_start(&s->timer, on_timer, ms < 100 ? (uint64_t)ms : 100, 100);
}

static void sleep_cancel(Job *job) {
    Sleep *s = job_data(job);
    if (s->cancelled || uv_is_closing((uv_handle_t *)&s->timer))
        return;
    s->cancelled = 1;
    uv_close((uv_handle_t *)&s->timer, on_closed);
}

const JobType job_type_sleep = {
    .name = "sleep",
    .fields = "user_id ms fail fail_attempts",
    .test_only = 1,
    .user_lock = 1,
    .summary = "sleep ms, then fail or succeed (tests only)",
    .run = sleep_run,
    .cancel = sleep_cancel,
};
