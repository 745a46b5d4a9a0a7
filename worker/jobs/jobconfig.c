/* jobconfig: the job settings (see jobconfig.h). */
#include "jobs/jobconfig.h"
#include "io/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ConfigVar vars[] = {
    {"BACKUP_RETENTION_DAYS", "30", "days a backup is kept by cleanup (1-36500)"},
    {"BACKUP_COMPRESSION", "gzip",
     "codec of new backup objects: gzip, zstd or none (true and false: gzip and none)"},
    {"BACKUP_COMPRESSION_LEVEL", "1", "level of that codec: gzip 1-9, zstd 1-19"},
    {"BACKUP_NOTIFY", "true",
     "write a row in the user's notifications when a backup ends (backup_completed, "
     "backup_failed) and when a restore completes (restore_completed)"},
    {"EXPORT_PLAINTEXT", "refused",
     "exports (\"download my data\") are plain JSON: with BACKUP_ENCRYPTION=required they are "
     "refused unless this is allowed"},
    {"JOB_VISIBILITY_TIMEOUT", "60s", "a job whose worker is silent this long is run again"},
    {"JOB_MAX_ATTEMPTS", "5",
     "runs of a job before it goes to the dead-letter stream (1-100); a run stopped by an outage "
     "of PostgreSQL or the store costs no attempt: the job waits for the service"},
    {"JOB_BACKOFF_BASE", "2s", "first retry delay; doubles per attempt, with full jitter"},
    {"JOB_BACKOFF_MAX", "10m", "longest retry delay"},
    {"JOB_RETENTION", "7d", "how long job status hashes are kept"},
    {"EVENTS_MAXLEN", "100000", "approximate length cap of the {prefix}:events stream"},
    {"WORKER_TEST_JOBS", "false", "enable the 'sleep' job type used by the tests"},
    {"BACKUP_TRACKING", "triggers",
     "how incremental backups learn what changed: triggers (in the application's transactions) "
     "or wal (change capture from one logical replication slot: needs wal_level=logical, a role "
     "with REPLICATION and `backupctl tracking wal`; deploy/README.md)"},
    {"CAPTURE_FLUSH_INTERVAL", "5s",
     "wal: each tenant's changes are written to the store at least this often"},
    {"CAPTURE_SEGMENT_MB", "16", "wal: ... or once a tenant's unwritten changes reach this size"},
    {"CAPTURE_LEASE", "15s",
     "wal: one worker captures; another takes over within this long after it dies"},
    {"CAPTURE_SLOT", "backup_capture", "wal: the logical replication slot's name"},
    {"CAPTURE_DECODING_KB", "0",
     "wal: the walsender's memory for one transaction, in kB, past which it streams the "
     "transaction before its commit (logical_decoding_work_mem; 0: the server's setting)"},
};

int jobconfig_load(JobConfig *jc, ConfigGetenv getenv_fn, void *data, Buf *errors) {
    ConfigLoader l;
    config_loader_init(&l, getenv_fn, data, errors, vars, sizeof(vars) / sizeof(vars[0]));
    memset(jc, 0, sizeof(*jc));
    jc->backup_retention_days = config_get_int(&l, "BACKUP_RETENTION_DAYS", 1, 36500);
    /* any compression codec of codec.c's table, or none; true/false: the first releases' */
    char *comp = config_get_str(&l, "BACKUP_COMPRESSION", 1);
    int on = 0, min = 1, max = 9, def = 1;
    char known[64];
    codec_compression_names(known, sizeof(known));
    if (comp && (strcmp(comp, "none") == 0 || codec_levels(comp, &min, &max, &def) == 0))
        snprintf(jc->backup_codecs, sizeof(jc->backup_codecs), "%s",
                 strcmp(comp, "none") == 0 ? "" : comp);
    else if (comp && textval_bool(comp, &on) == 0)
        snprintf(jc->backup_codecs, sizeof(jc->backup_codecs), "%s", on ? "gzip" : "");
    else
        config_bad(&l, "BACKUP_COMPRESSION", "'%.40s' is not one of %s or none", comp ? comp : "",
                   known);
    free(comp);
    jc->backup_compression = jc->backup_codecs[0] != 0;
    jc->backup_compression_level = config_get_int(&l, "BACKUP_COMPRESSION_LEVEL", min, max);
    jc->backup_notify = config_get_bool(&l, "BACKUP_NOTIFY");
    char *plain = config_get_str(&l, "EXPORT_PLAINTEXT", 1);
    if (plain && strcmp(plain, "allowed") == 0)
        jc->export_plaintext = 1;
    else if (!plain || strcmp(plain, "refused") != 0)
        config_bad(&l, "EXPORT_PLAINTEXT", "'%.40s' is not refused or allowed", plain ? plain : "");
    free(plain);
    jc->job_visibility_timeout_ms =
        config_get_duration(&l, "JOB_VISIBILITY_TIMEOUT", 1000, 86400000LL);
    jc->job_max_attempts = config_get_int(&l, "JOB_MAX_ATTEMPTS", 1, 100);
    jc->job_backoff_base_ms = config_get_duration(&l, "JOB_BACKOFF_BASE", 1, 86400000LL);
    jc->job_backoff_max_ms = config_get_duration(&l, "JOB_BACKOFF_MAX", 1, 7 * 86400000LL);
    if (jc->job_backoff_max_ms < jc->job_backoff_base_ms)
        config_bad(&l, "JOB_BACKOFF_MAX", "is shorter than JOB_BACKOFF_BASE");
    jc->job_retention_ms = config_get_duration(&l, "JOB_RETENTION", 60000, 3650 * 86400000LL);
    jc->events_maxlen = config_get_int(&l, "EVENTS_MAXLEN", 100, 100000000);
    jc->worker_test_jobs = config_get_bool(&l, "WORKER_TEST_JOBS");
    char *tracking = config_get_str(&l, "BACKUP_TRACKING", 1);
    if (tracking && strcmp(tracking, "wal") == 0)
        jc->tracking_wal = 1;
    else if (!tracking || strcmp(tracking, "triggers") != 0)
        config_bad(&l, "BACKUP_TRACKING", "'%.40s' is not triggers or wal",
                   tracking ? tracking : "");
    free(tracking);
    jc->capture_flush_ms = config_get_duration(&l, "CAPTURE_FLUSH_INTERVAL", 100, 3600000LL);
    jc->capture_segment_bytes = (long long)config_get_int(&l, "CAPTURE_SEGMENT_MB", 1, 1024) << 20;
    jc->capture_lease_ms = config_get_duration(&l, "CAPTURE_LEASE", 1000, 600000LL);
    char *slot = config_get_str(&l, "CAPTURE_SLOT", 1);
    size_t sl = slot ? strspn(slot, "abcdefghijklmnopqrstuvwxyz0123456789_") : 0;
    if (slot && sl == strlen(slot) && sl > 0 && sl < sizeof(jc->capture_slot))
        snprintf(jc->capture_slot, sizeof(jc->capture_slot), "%s", slot);
    else
        config_bad(&l, "CAPTURE_SLOT", "must be 1-63 of a-z, 0-9 and _ (a replication slot name)");
    free(slot);
    jc->capture_decoding_kb = (int)config_get_int(&l, "CAPTURE_DECODING_KB", 0, 1 << 30);
    if (jc->capture_decoding_kb > 0 && jc->capture_decoding_kb < 64)
        config_bad(&l, "CAPTURE_DECODING_KB", "must be 0 (the server's) or at least 64");
    int nkeys = 0;
    jc->keys = keys_load(getenv_fn, data, errors, &nkeys);
    return l.count + nkeys;
}

void jobconfig_free(JobConfig *jc) {
    keys_free(jc->keys);
    jc->keys = NULL;
}

void jobconfig_print_help(FILE *out) {
    config_print_vars(out, vars, sizeof(vars) / sizeof(vars[0]));
    keys_print_help(out);
}
