/*
 * ctl_jobs: backupctl's job commands. Each enqueues exactly what a web API
 * sends (proto/README.md, stream protocol) and, with --wait (the default when
 * standard output is a terminal), follows the job's status hash until it ends:
 * a progress bar on a terminal, one line per change otherwise, a JSON object
 * with --json. Exit 0 only if the job completed; 1 if it failed; 3 if --timeout
 * passed first (the job goes on); 2 on bad usage.
 *
 *   backup USER [--incremental|--differential]
 *   restore BACKUP_ID [--tables a,b] | restore --key KEY
 *   verify BACKUP_ID | verify --user USER
 *   cleanup USER [--retention-days N] [--requested-by USER] | cleanup --all
 *   wait JOB_ID, status JOB_ID
 *
 * And the reading side: list USER [--s3], stats [USER], schedule, migrate.
 */
#ifndef BW_CTL_JOBS_H
#define BW_CTL_JOBS_H

#include "config/config.h"

/* 1 if command is one of ctl_jobs'. */
int ctl_jobs_has(const char *command);
int ctl_jobs_main(const Config *cfg, const char *command, int argc, char **argv);

#endif
