/*
 * config: the settings of the connections (Redis, PostgreSQL, S3), the HTTP port and the
 * log, read from the environment; the job settings are the worker's (jobconfig.h).
 *
 * Every variable is validated once at start; a bad value yields a message that
 * names the variable and says what is wrong, never the secret it may hold.
 * config_load() takes a getenv-like function so tests can feed it a table.
 */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include "base/buf.h"
#include "base/textval.h"
#include "config/connurl.h"
#include "base/log.h"
#include "redis/redis.h"
#include "aws/s3.h"

#include <stdio.h>

typedef struct {
    char *store_path;                  /* BACKUP_STORE=file://PATH: the directory; NULL: S3 */
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
    /* the replica (NULL bucket: none); credentials NULL: the primary's */
    char *s3_replica_bucket, *s3_replica_region, *s3_replica_endpoint;
    int s3_replica_force_path_style;
    char *s3_replica_sse, *s3_replica_sse_kms_key_id;
    char *s3_replica_access_key_id, *s3_replica_secret_access_key; /* secret */
    int s3_replica_server_copy; /* copies made by the service itself (S3_REPLICA_COPY) */
    char *redis_url;            /* secret inside: log connurl_redact(redis_url) */
    char *database_url;         /* secret inside */
    RedisEndpoint redis;
    char *redis_ca_file, *redis_tls_cert_file, *redis_tls_key_file;
    TlsConfig *redis_tls; /* rediss://: the context every Redis connection shares; owned */
    int redis_cluster;    /* REDIS_CLUSTER: 0 off, 1 on, 2 auto */
    int worker_concurrency;
    int worker_http_port;
    char *worker_http_host; /* IP address the HTTP server binds */
    long long worker_shutdown_grace_ms;
    char *redis_prefix;
    LogLevel log_level;
    LogFormat log_format;
} Config;

/* A getenv-like lookup: returns the value of name or NULL. */
typedef const char *(*ConfigGetenv)(const char *name, void *data);

/* One variable: its name, default (NULL: required or none) and help line. */
typedef struct {
    const char *name;
    const char *def;
    const char *help;
} ConfigVar;

/* Reading a table of variables, for config_load and for other modules' own settings (the
 * worker's job settings live in worker/jobs/jobconfig.h): each getter takes the value or the
 * table's default, and each bad value is one line in errors. */
typedef struct {
    ConfigGetenv get;
    void *data;
    Buf *errors;
    int count; /* errors so far */
    const ConfigVar *vars;
    size_t nvars;
} ConfigLoader;

void config_loader_init(ConfigLoader *l, ConfigGetenv get, void *data, Buf *errors,
                        const ConfigVar *vars, size_t nvars);
char *config_get_str(ConfigLoader *l, const char *name, int required); /* owned, or NULL */
int config_get_bool(ConfigLoader *l, const char *name);
int config_get_int(ConfigLoader *l, const char *name, long min, long max);
long long config_get_duration(ConfigLoader *l, const char *name, long long min_ms,
                              long long max_ms);
void config_bad(ConfigLoader *l, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void config_print_vars(FILE *out, const ConfigVar *vars, size_t nvars);

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
/* The replica's S3 settings (the primary's where it has none of its own); -1 without one. */
int config_s3_replica_options(const Config *cfg, S3Options *o);
/* Free every string the config owns. */
void config_free(Config *cfg);
/* Print every variable with its default and meaning (for --help). */
void config_print_help(FILE *out);
/* From now on the help prints as the README's markdown table (backup-worker --help-markdown;
 * tools/readme-config puts it in the README, test_docs checks it is current). */
void config_help_markdown(void);

#endif
