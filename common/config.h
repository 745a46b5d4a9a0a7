/*
 * config: the worker's and backupctl's settings, read from the environment.
 *
 * Every variable is validated once at start; a bad value yields a message that
 * names the variable and says what is wrong, never the secret it may hold.
 * config_load() takes a getenv-like function so tests can feed it a table.
 */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include "buf.h"
#include "log.h"
#include "redis.h"
#include "s3.h"

#include <stdio.h>

typedef struct {
    char *host; /* owned */
    int port;
    char *username; /* owned, may be NULL (Redis 6 ACL user) */
    char *password; /* owned, may be NULL; secret */
    int db;
} RedisEndpoint;

typedef struct {
    char *aws_access_key_id;           /* secret-ish: logged only as its first 4 chars */
    char *aws_secret_access_key;       /* secret */
    char *aws_session_token;           /* secret, may be NULL */
    char *aws_web_identity_token_file; /* may be NULL; with aws_role_arn replaces the keys */
    char *aws_role_arn;
    char *aws_role_session_name;
    char *aws_sts_endpoint; /* may be NULL */
    char *aws_region;
    char *s3_bucket;
    char *s3_endpoint; /* may be NULL: AWS itself */
    int s3_force_path_style;
    char *s3_sse;              /* NULL, AES256 or aws:kms */
    char *s3_sse_kms_key_id;   /* may be NULL */
    char *s3_ca_file;          /* may be NULL */
    int s3_part_size_mb;       /* multipart part size at the start of an upload */
    int s3_upload_concurrency; /* parts in flight per upload */
    long long s3_connect_timeout_ms, s3_stall_timeout_ms;
    int backup_retention_days;
    int backup_compression;
    int backup_compression_level; /* gzip level, 1-9 */
    int backup_notify;            /* notification row when a backup ends */
    char *redis_url;              /* secret inside: log config_redact_url(redis_url) */
    char *database_url;           /* secret inside */
    RedisEndpoint redis;
    int worker_concurrency;
    int worker_http_port;
    char *worker_http_host; /* IP address the HTTP server binds */
    long long worker_shutdown_grace_ms;
    char *redis_prefix;
    long long job_visibility_timeout_ms;
    int job_max_attempts;
    long long job_backoff_base_ms, job_backoff_max_ms;
    long long job_retention_ms;
    int events_maxlen;
    int worker_test_jobs;
    LogLevel log_level;
    LogFormat log_format;
} Config;

/* A getenv-like lookup: returns the value of name or NULL. */
typedef const char *(*ConfigGetenv)(const char *name, void *data);

/*
 * Load and validate every variable. Returns the number of errors; each error is
 * one line appended to errors ("VARIABLE: what is wrong"). On errors the config
 * is still safe to pass to config_free().
 */
int config_load(Config *cfg, ConfigGetenv getenv_fn, void *data, Buf *errors);
/* The process environment as a ConfigGetenv. */
const char *config_getenv_process(const char *name, void *data);
/* Zero o and fill in the Redis endpoint (strings borrowed from cfg). */
void config_redis_options(const Config *cfg, RedisOptions *o);
/* Zero o and fill in the S3 settings (strings borrowed from cfg). */
void config_s3_options(const Config *cfg, S3Options *o);
/* Free every string the config owns. */
void config_free(Config *cfg);
/* Print every variable with its default and meaning (for --help). */
void config_print_help(FILE *out);

/*
 * Copy url into out with any password replaced by "***" (URL userinfo, or a
 * password=... key in a libpq key=value string). Safe to log.
 */
void config_redact_url(const char *url, char *out, size_t outlen);
/* Check a PostgreSQL connection string as libpq reads it, and the values of the options libpq
 * only checks when it connects (port, sslmode, gssencmode, ...): -1 with why naming the option
 * (never its secret value). */
int config_check_conninfo(const char *conninfo, char *why, size_t whylen);

/* Parse redis://[[user]:password@]host[:port][/db]; returns 0 or -1 with why. */
int config_parse_redis_url(const char *url, RedisEndpoint *ep, const char **why);
void config_redis_endpoint_free(RedisEndpoint *ep);

/* Parse a boolean (true/false, 1/0, yes/no, on/off); returns 0 on success. */
int config_parse_bool(const char *s, int *out);
/* Parse a duration: digits then ms, s, m, h or d (no unit: seconds), within [min, max] ms. */
int config_parse_duration_ms(const char *s, long long min_ms, long long max_ms, long long *out);
/* Parse a decimal integer within [min, max]; returns 0 on success. */
int config_parse_int(const char *s, long min, long max, long *out);

#endif
