/*
 * jobspec: the job entry format of the stream protocol, decoded strictly.
 *
 * A job arrives as the field/value pairs of one stream entry, either flat
 * (`XADD backup:jobs * type backup user_id <uuid> mode full`) or as one field
 * `msgpack` holding a map with the same keys. Decoding validates everything a
 * job will later use in a key or a query (UUIDs, backup ids, table names), so
 * a job never sees unchecked input. Errors say which field is wrong and why,
 * quoting at most a short, escaped excerpt of the bad value. proto/README.md
 * documents the format; this module is its single implementation.
 */
#ifndef BW_JOBSPEC_H
#define BW_JOBSPEC_H

#include "base/err.h"

#include <stddef.h>

#define JOBSPEC_ID_MAX     128
#define JOBSPEC_TABLES_MAX 64

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} JobField;

typedef struct {
    char type[16];                   /* ping, backup, restore, verify, cleanup (sleep: tests) */
    char job_id[JOBSPEC_ID_MAX + 1]; /* given, or the stream entry id */
    char user_id[37];                /* lowercase UUID, "" when absent */
    char requested_by[37];           /* lowercase UUID, "" when absent */
    char trigger[16];                /* manual, scheduled or api (default api) */
    char mode[16];                   /* backup: full, incremental or differential */
    char backup_id[JOBSPEC_ID_MAX + 1];
    char tables[JOBSPEC_TABLES_MAX][64]; /* restore: selected tables, validated names */
    int ntables;
    int dry_run;        /* restore: count what would change, write nothing */
    char at[40];        /* restore: the point in time, an RFC 3339 time with its offset or an
                         * LSN ("16/B374D848"), "" when a backup is named instead */
    char from[16];      /* restore, verify: "replica" forces the replica's copy, "primary" the
                         * primary's alone (no fallback); "": primary, then the replica's */
    char export_id[37]; /* export: lowercase UUID of the export, "" when absent (derived from
                         * the job id, so that a retry writes the same export) */
    int retention_days; /* cleanup: 0 = the configured default */
    int scope_all;      /* cleanup: every user */
    long sleep_ms;      /* sleep */
    int fail_permanent; /* sleep: 1 permanent, 0 retryable, -1 never fails */
    int fail_attempts;  /* sleep: fail the first N attempts (0: every attempt) */
} JobSpec;

/*
 * Decode the fields of entry entry_id into spec. The test-only type `sleep` is
 * accepted when allow_test_types is set. Returns 0, or -1 with a permanent
 * ERR_CODE_INVALID error whose message names the problem.
 */
int jobspec_decode(JobSpec *spec, const JobField *fields, size_t nfields, const char *entry_id,
                   int allow_test_types, Err *err);

/* 1 if s is a UUID (8-4-4-4-12 hex digits, either case). */
int jobspec_valid_uuid(const char *s, size_t len);
/* 1 if s is a backup id: (backup|incremental|differential)-<uuid>-<alphanumerics>. */
int jobspec_valid_backup_id(const char *s, size_t len);

/* What s is as a restore's `at`: 't' an RFC 3339 time with an offset (Z or +hh:mm),
 * 'l' an LSN (two hex numbers of at most 8 digits, "/" between), 0 neither. */
char jobspec_at_kind(const char *s, size_t len);

/* For a job type's check (job.h): refuse the entry with this reason (permanent, invalid);
 * returns -1. */
int jobspec_refuse(Err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* -1 with the reason "missing field 'user_id' ..." when the spec names no user, else 0. */
int jobspec_need_user(const JobSpec *spec, Err *err);

#endif
