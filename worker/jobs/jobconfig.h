/*
 * jobconfig: the worker's job settings (retention, compression, notifications,
 * the queue's retry policy), read from the environment with the loader of
 * config.h, which itself knows nothing of jobs.
 */
#ifndef BW_JOBCONFIG_H
#define BW_JOBCONFIG_H

#include "config/config.h"
#include "keys/keys.h"

typedef struct {
    int backup_retention_days;
    char backup_codecs[16];       /* the codecs of new objects: "gzip", "zstd" or "" */
    int backup_compression;       /* 1 unless "" */
    int backup_compression_level; /* of that codec: gzip 1-9, zstd 1-19 */
    int backup_notify;            /* notification row when a backup ends */
    int export_plaintext;         /* EXPORT_PLAINTEXT=allowed: exports under required encryption */
    long long job_visibility_timeout_ms;
    int job_max_attempts;
    long long job_backoff_base_ms, job_backoff_max_ms;
    long long job_retention_ms;
    int events_maxlen;
    int worker_test_jobs;
    int tracking_wal;                /* BACKUP_TRACKING=wal: the capture runs (capture/capture.h) */
    long long capture_flush_ms;      /* segments written at least this often */
    long long capture_segment_bytes; /* ... or once a tenant's buffer holds this much */
    long long capture_lease_ms;
    char capture_slot[64];
    int capture_decoding_kb; /* the walsender's logical_decoding_work_mem (0: the server's) */
    Keys *keys;              /* encryption (keys.h); owned */
} JobConfig;

/* The number of errors, each one line in errors ("VARIABLE: what is wrong"). */
int jobconfig_load(JobConfig *jc, ConfigGetenv getenv_fn, void *data, Buf *errors);
void jobconfig_free(JobConfig *jc);
/* The job settings with their defaults, after config_print_help. */
void jobconfig_print_help(FILE *out);

#endif
