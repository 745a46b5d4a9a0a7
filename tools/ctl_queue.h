/*
 * ctl_queue: the operator's view of the job queue: `backupctl jobs` (stream,
 * group, consumers, delayed and dead counts), `backupctl dead ls|retry|drop`
 * (dead letters, and re-running one with its original fields), and
 * `backupctl ping` (a ping job end to end). Exit 0 on success, 1 on failure,
 * 2 on bad usage.
 */
#ifndef BW_CTL_QUEUE_H
#define BW_CTL_QUEUE_H

#include "config/config.h"

int ctl_queue_main(const Config *cfg, const char *command, int argc, char **argv);

#endif
