/*
 * jobs: the registry of job types. Each type lives in worker/jobs/<name>.c and
 * exports one JobType; adding a type is one file and one line in jobs.c.
 */
#ifndef BW_JOBS_H
#define BW_JOBS_H

#include "job.h"

extern const JobType job_type_ping;
extern const JobType job_type_sleep;
extern const JobType job_type_backup;
extern const JobType job_type_restore;
extern const JobType job_type_verify;
extern const JobType job_type_cleanup;
extern const JobType job_type_replicate;

#endif
