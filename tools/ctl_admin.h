/*
 * ctl_admin: backupctl's reading and operating commands on the database:
 *   list USER [--json]       a user's backups from backup_metadata
 *   stats [USER] [--json]    backup_statistics: totals, storage, success rate
 *   schedule [--dry-run]     enqueue the backups due: one job id per user and
 *                            period (sched-YYYYMMDD-USER daily, sched-IYYYWIW-USER
 *                            weekly), claimed in Redis, so runs never double one
 *   migrate [--dir DIR]      proto/sql/NNN_*.sql in order, one transaction each
 *   replicate --missing      a `replicate` job for every backup not yet (or no longer)
 *                            known to be in the replica
 * Each returns the exit status (0, or 1 after printing why).
 */
#ifndef BW_CTL_ADMIN_H
#define BW_CTL_ADMIN_H

#include "config/config.h"

int ctl_list(const Config *cfg, const char *user, int json);
int ctl_stats(const Config *cfg, const char *user, int json); /* user NULL: all */
int ctl_schedule(const Config *cfg, int dry_run, int json);
int ctl_migrate(const Config *cfg, const char *dir);
/* Show the tracking (mode NULL), or switch it to "wal" or "triggers". */
/* The user's captured transactions (and the capture's gaps) since since (NULL: all). */
int ctl_timeline(const Config *cfg, const char *user, const char *since, int json);
int ctl_tracking(const Config *cfg, const char *mode, int replace_owner_indexes, int json);
/* replicate --missing: a replicate job per backup whose copy is not complete (user NULL: all). */
int ctl_replicate_missing(const Config *cfg, const char *user, int dry_run);

#endif
