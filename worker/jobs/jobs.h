/*
 * jobs: the registry of job types. Each type lives in worker/jobs/<name>.c and exports one
 * JobType (job.h) that carries everything derived from it: the decoder's fields and rules
 * (jobspec.c), the metrics label (qmetrics.c), the help texts. Adding a type is its file, one
 * line in jobs.c, and its name in proto/ts/src/protocol.ts (test_jobspec checks all three).
 */
#ifndef BW_JOBS_H
#define BW_JOBS_H

#include "jobs/job.h"

#include <stdio.h>

extern const JobType job_type_ping;
extern const JobType job_type_sleep;
extern const JobType job_type_backup;
extern const JobType job_type_restore;
extern const JobType job_type_verify;
extern const JobType job_type_cleanup;
extern const JobType job_type_replicate;
extern const JobType job_type_export;

/* "Job types:" and a line per type (name, fields, summary), for --help; test types left out. */
void jobs_print_help(FILE *out);

#endif
