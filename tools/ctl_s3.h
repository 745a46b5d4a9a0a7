/*
 * ctl_s3: `backupctl s3 ...`, the operator's S3 commands (the container image
 * has no AWS CLI): put, get, ls, rm, presign. Exit 0 on success, 1 when S3 or
 * the local file fails (S3's error code in the message), 2 on bad usage.
 */
#ifndef BW_CTL_S3_H
#define BW_CTL_S3_H

#include "config/config.h"

int ctl_s3_main(const Config *cfg, int argc, char **argv);

#endif
