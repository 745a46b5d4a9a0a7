/*
 * ctl_recover: recovery when backup_metadata is lost. `backupctl reindex USER`
 * reads the manifests under backups/USER/ in S3 (each written next to its
 * backup once the backup was complete) and recreates the missing
 * backup_metadata rows from them, so restore, verify and cleanup work again.
 * Rows that exist are left alone.
 */
#ifndef BW_CTL_RECOVER_H
#define BW_CTL_RECOVER_H

#include "config.h"

int ctl_recover_main(const Config *cfg, int argc, char **argv);

#endif
