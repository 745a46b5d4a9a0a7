/*
 * ctl_scope: `backupctl scope [--sql]`: what a backup covers, as the worker
 * will read it (backup_scope checked against the catalog), and with --sql
 * the COPY statement each table is read with.
 */
#ifndef BW_CTL_SCOPE_H
#define BW_CTL_SCOPE_H

#include "config/config.h"

int ctl_scope_main(const Config *cfg, int argc, char **argv);

#endif
