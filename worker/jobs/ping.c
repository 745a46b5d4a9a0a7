/*
 * ping: answered at once. Lets the web tier check, end to end, that a job
 * enqueued now is picked up and recorded (and is the benchmark's no-op job).
 */
#include "jobs/jobs.h"

static void ping_run(Job *job) {
    job_progress(job, "pong", 100, 0, 0);
    job_done(job, NULL);
}

const JobType job_type_ping = {
    .name = "ping",
    .fields = "user_id",
    .summary = "complete at once (checks the queue end to end)",
    .run = ping_run,
};
