/*
 * config: environment settings, validated (see config.h).
 *
 * The table below is the single source for defaults and help text, so --help,
 * the README and the loader cannot drift apart.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <uv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const ConfigVar vars[] = {
    {"BACKUP_STORE", "s3",
     "where backups live: s3 (the bucket of the S3_* settings) or file:///path (a local or "
     "mounted directory; atomic writes)"},
    {"AWS_ACCESS_KEY_ID", NULL, "S3 access key id (required without a web identity)"},
    {"AWS_SECRET_ACCESS_KEY", NULL,
     "S3 secret access key (required without a web identity; never logged)"},
    {"AWS_SESSION_TOKEN", NULL, "temporary session token (optional; never logged)"},
    {"AWS_WEB_IDENTITY_TOKEN_FILE", NULL,
     "web identity token (Kubernetes); with AWS_ROLE_ARN replaces the keys above"},
    {"AWS_ROLE_ARN", NULL, "role assumed with the web identity token"},
    {"AWS_ROLE_SESSION_NAME", "backup-worker", "session name for the assumed role"},
    {"AWS_STS_ENDPOINT", NULL, "STS endpoint (default https://sts.{region}.amazonaws.com)"},
    {"AWS_REGION", "us-east-1", "S3 region used in request signatures"},
    {"S3_BUCKET", "pedidolist-backups", "bucket holding backups/{user_id}/..."},
    {"S3_ENDPOINT", NULL, "http(s)://host[:port] of an S3-compatible store (default: AWS)"},
    {"S3_FORCE_PATH_STYLE", "false", "address the bucket in the path, not the host name"},
    {"S3_SSE", NULL, "server-side encryption of new objects: AES256 or aws:kms (optional)"},
    {"S3_SSE_KMS_KEY_ID", NULL, "KMS key id with S3_SSE=aws:kms (optional)"},
    {"S3_CA_FILE", NULL, "CA bundle for TLS to S3 (optional; verification is always on)"},
    {"S3_PART_SIZE_MB", "8",
     "multipart part size at the start of an upload, MiB (5-5120; doubles every 1000 parts, so "
     "10,000 parts pass 1 TiB)"},
    {"S3_CONNECT_TIMEOUT", "10s", "connect timeout of one S3 request (TCP and TLS)"},
    {"S3_STALL_TIMEOUT", "30s",
     "an S3 request that moves no byte this long is retried (no cap on a slow one that moves)"},
    {"S3_UPLOAD_CONCURRENCY", "4",
     "parts in flight per upload (1-64); memory per upload is about this x the part size"},
    {"S3_REPLICA_BUCKET", NULL, "second bucket every backup is copied to (turns replication on)"},
    {"S3_REPLICA_REGION", NULL, "region of the replica bucket (default: AWS_REGION)"},
    {"S3_REPLICA_ENDPOINT", NULL, "http(s)://host[:port] of the replica's store (default: AWS)"},
    {"S3_REPLICA_FORCE_PATH_STYLE", "false", "address the replica bucket in the path"},
    {"S3_REPLICA_SSE", NULL, "server-side encryption in the replica: AES256 or aws:kms"},
    {"S3_REPLICA_SSE_KMS_KEY_ID", NULL, "KMS key id with S3_REPLICA_SSE=aws:kms"},
    {"S3_REPLICA_ACCESS_KEY_ID", NULL,
     "access key of the replica (default: the primary's credentials)"},
    {"S3_REPLICA_SECRET_ACCESS_KEY", NULL,
     "secret key of the replica, with S3_REPLICA_ACCESS_KEY_ID (never logged)"},
    {"S3_REPLICA_COPY", "auto",
     "how copies go: server (CopyObject, both buckets on one service), stream (through the "
     "worker), auto (server when the replica shares the primary's endpoint and keys)"},
    {"REDIS_CA_FILE", NULL,
     "rediss://: CA bundle (PEM) the server's certificate must chain to (default: the system's "
     "store); the certificate and its name are always verified"},
    {"REDIS_TLS_CERT_FILE", NULL, "rediss://: client certificate (PEM) for mutual TLS (optional)"},
    {"REDIS_TLS_KEY_FILE", NULL, "rediss://: its private key (PEM; never logged)"},
    {"REDIS_CLUSTER", "auto",
     "Redis Cluster: auto (when the server is a cluster node), on, or off; a cluster needs a "
     "REDIS_PREFIX with a {hash tag}"},
    {"REDIS_URL", "redis://127.0.0.1:6379/0",
     "redis://[[user]:password@]host[:port][/db] (the password never logged)"},
    {"DATABASE_URL", NULL, "PostgreSQL URI or key=value string (required)"},
    {"WORKER_CONCURRENCY", "4", "jobs run at once by one worker process (1-1024)"},
    {"WORKER_HTTP_PORT", "8080", "port of /healthz, /readyz and /metrics (0: off)"},
    {"WORKER_HTTP_HOST", "0.0.0.0", "address the HTTP port listens on (127.0.0.1: this host only)"},
    {"WORKER_SHUTDOWN_GRACE", "25s",
     "time running jobs get to finish after SIGTERM; then they are handed back, requests still "
     "out are cancelled, and the process exits within seconds"},
    {"REDIS_PREFIX", "backup", "prefix of every Redis key ({prefix}:jobs, {prefix}:job:ID...)"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
    {"LOG_FORMAT", "text", "text or json (one object per line)"},
};

const char *config_getenv_process(const char *name, void *data) {
    (void)data;
    return getenv(name);
}

static int help_markdown; /* the README's table instead of --help's lines */

void config_help_markdown(void) {
    help_markdown = 1;
}

/* a markdown cell: '|' would end it */
static void md_cell(FILE *out, const char *s) {
    for (; *s; s++)
        fputs(*s == '|' ? "\\|" : (char[]){*s, 0}, out);
}

void config_print_vars(FILE *out, const ConfigVar *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!help_markdown) {
            fprintf(out, "  %-22s %s%s%s\n", v[i].name, v[i].help, v[i].def ? "; default " : "",
                    v[i].def ? v[i].def : "");
            continue;
        }
        fprintf(out, "| `%s` | %s%s%s | ", v[i].name, v[i].def ? "`" : "", v[i].def ? v[i].def : "",
                v[i].def ? "`" : "");
        md_cell(out, v[i].help);
        fputs(" |\n", out);
    }
}

void config_print_help(FILE *out) {
    if (help_markdown)
        fprintf(out, "| variable | default | meaning |\n| --- | --- | --- |\n");
    else
        fprintf(out, "Environment:\n");
    config_print_vars(out, vars, sizeof(vars) / sizeof(vars[0]));
}

/* ---- loader ---- */

typedef ConfigLoader Loader;

void config_loader_init(ConfigLoader *l, ConfigGetenv get, void *data, Buf *errors,
                        const ConfigVar *v, size_t n) {
    memset(l, 0, sizeof(*l));
    l->get = get;
    l->data = data;
    l->errors = errors;
    l->vars = v;
    l->nvars = n;
}

#define bad config_bad

void config_bad(Loader *l, const char *name, const char *fmt, ...) {
    buf_printf(l->errors, "%s: ", name);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(l->errors, fmt, ap);
    va_end(ap);
    buf_puts(l->errors, "\n");
    l->count++;
}

/* The value, or NULL when unset or empty. */
static const char *get(Loader *l, const char *name) {
    const char *v = l->get(name, l->data);
    return (v != NULL && v[0] != '\0') ? v : NULL;
}

static const char *def_of_in(const Loader *l, const char *name) {
    for (size_t i = 0; i < l->nvars; i++)
        if (strcmp(l->vars[i].name, name) == 0)
            return l->vars[i].def;
    return NULL;
}
#define def_of(name) def_of_in(l, name)

char *config_get_str(Loader *l, const char *name, int required) {
    const char *v = get(l, name);
    if (v == NULL)
        v = def_of(name);
    if (v == NULL) {
        if (required)
            bad(l, name, "is required but not set");
        return NULL;
    }
    return xstrdup(v);
}

int config_get_bool(Loader *l, const char *name) {
    const char *v = get(l, name);
    int out = 0;
    if (v == NULL)
        v = def_of(name);
    if (textval_bool(v, &out) != 0)
        bad(l, name, "'%s' is not a boolean (use true or false)", v);
    return out;
}

int config_get_int(Loader *l, const char *name, long min, long max) {
    const char *v = get(l, name);
    long out = 0;
    if (v == NULL)
        v = def_of(name);
    if (textval_int(v, min, max, &out) != 0)
        bad(l, name, "'%.40s' is not a whole number from %ld to %ld", v, min, max);
    return (int)out;
}

long long config_get_duration(Loader *l, const char *name, long long min_ms, long long max_ms) {
    const char *v = get(l, name);
    long long out = 0;
    if (v == NULL)
        v = def_of(name);
    if (textval_duration_ms(v, min_ms, max_ms, &out) != 0)
        bad(l, name, "'%.40s' is not a duration from %lldms to %llds (such as 500ms, 30s, 5m, 7d)",
            v, min_ms, max_ms / 1000);
    return out;
}

static int valid_prefix(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.:-{}", *p))
            return 0;
    return 1;
}

static int valid_bucket(const char *s) {
    size_t n = strlen(s);
    if (n < 3 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-' && c != '.')
            return 0;
        if ((i == 0 || i == n - 1) && !alnum)
            return 0;
        if (c == '.' && i > 0 && s[i - 1] == '.')
            return 0;
    }
    return 1;
}

static int valid_region(const char *s) {
    if (*s == '\0' || strlen(s) > 32)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

static int valid_endpoint(const char *s, const char **why) {
    const char *p;
    if (strncmp(s, "http://", 7) == 0)
        p = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        p = s + 8;
    else {
        *why = "must start with http:// or https://";
        return 0;
    }
    if (*p == '\0' || *p == '/' || *p == ':') {
        *why = "the host is missing";
        return 0;
    }
    if (strchr(p, '@') != NULL) {
        *why = "must not carry credentials; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
        return 0;
    }
    const char *slash = strchr(p, '/');
    if (slash != NULL && slash[1] != '\0') {
        *why = "must be a bare http(s)://host[:port] without a path";
        return 0;
    }
    return 1;
}

/* BACKUP_STORE: s3, or file:// and an absolute path */
static void load_store(Loader *l, Config *cfg) {
    char *store = config_get_str(l, "BACKUP_STORE", 1);
    if (store && strncmp(store, "file://", 7) == 0) {
        const char *path = store + 7;
        if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./") ||
            (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0))
            bad(l, "BACKUP_STORE", "'%.200s': file:// takes an absolute path (file:///srv/backups)",
                store);
        else
            cfg->store_path = xstrdup(path);
    } else if (store && strcmp(store, "s3") != 0) {
        bad(l, "BACKUP_STORE", "'%.80s' is not s3 or file:///path", store);
    }
    free(store);
}

/* the AWS identity: keys, or a web identity (Kubernetes); keys are needed only when S3 is */
static void load_aws(Loader *l, Config *cfg) {
    cfg->aws_web_identity_token_file = config_get_str(l, "AWS_WEB_IDENTITY_TOKEN_FILE", 0);
    cfg->aws_role_arn = config_get_str(l, "AWS_ROLE_ARN", 0);
    cfg->aws_role_session_name = config_get_str(l, "AWS_ROLE_SESSION_NAME", 1);
    cfg->aws_sts_endpoint = config_get_str(l, "AWS_STS_ENDPOINT", 0);
    int web = cfg->aws_web_identity_token_file != NULL && cfg->aws_role_arn != NULL;
    if ((cfg->aws_web_identity_token_file != NULL) != (cfg->aws_role_arn != NULL))
        bad(l, cfg->aws_role_arn ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
            "is required with %s (web identity needs both)",
            cfg->aws_role_arn ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
    if (cfg->aws_web_identity_token_file && access(cfg->aws_web_identity_token_file, R_OK) != 0)
        bad(l, "AWS_WEB_IDENTITY_TOKEN_FILE", "cannot read '%.200s'",
            cfg->aws_web_identity_token_file);
    if (cfg->aws_role_arn && strncmp(cfg->aws_role_arn, "arn:", 4) != 0)
        bad(l, "AWS_ROLE_ARN", "'%.100s' is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)",
            cfg->aws_role_arn);
    if (cfg->aws_sts_endpoint) {
        const char *why = NULL;
        if (!valid_endpoint(cfg->aws_sts_endpoint, &why))
            bad(l, "AWS_STS_ENDPOINT", "'%.80s' %s", cfg->aws_sts_endpoint, why);
    }
    /* a file store needs no key (KMS and a replica check theirs when they are set) */
    int needed = !web && cfg->store_path == NULL;
    cfg->aws_access_key_id = config_get_str(l, "AWS_ACCESS_KEY_ID", needed);
    cfg->aws_secret_access_key = config_get_str(l, "AWS_SECRET_ACCESS_KEY", needed);
    cfg->aws_session_token = config_get_str(l, "AWS_SESSION_TOKEN", 0);
    if (cfg->aws_access_key_id && strpbrk(cfg->aws_access_key_id, " \t\r\n"))
        bad(l, "AWS_ACCESS_KEY_ID", "must not contain spaces or line breaks");
    if (cfg->aws_secret_access_key && strpbrk(cfg->aws_secret_access_key, " \t\r\n"))
        bad(l, "AWS_SECRET_ACCESS_KEY", "must not contain spaces or line breaks");

    cfg->aws_region = config_get_str(l, "AWS_REGION", 1);
    if (cfg->aws_region && !valid_region(cfg->aws_region))
        bad(l, "AWS_REGION", "'%.40s' is not a region name (such as us-east-1)", cfg->aws_region);
}

/* the primary bucket and how requests reach it */
static void load_s3(Loader *l, Config *cfg) {
    cfg->s3_bucket = config_get_str(l, "S3_BUCKET", 1);
    if (cfg->s3_bucket && !valid_bucket(cfg->s3_bucket))
        bad(l, "S3_BUCKET",
            "'%.70s' is not a valid bucket name (3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit)",
            cfg->s3_bucket);

    cfg->s3_endpoint = config_get_str(l, "S3_ENDPOINT", 0);
    if (cfg->s3_endpoint) {
        const char *why = NULL;
        if (!valid_endpoint(cfg->s3_endpoint, &why)) {
            char red[256];
            if (strchr(cfg->s3_endpoint, '@') != NULL) /* may carry credentials */
                connurl_redact(cfg->s3_endpoint, red, sizeof(red));
            else
                snprintf(red, sizeof(red), "%s", cfg->s3_endpoint);
            bad(l, "S3_ENDPOINT", "'%.80s' %s", red, why);
        }
        size_t n = strlen(cfg->s3_endpoint);
        if (n > 0 && cfg->s3_endpoint[n - 1] == '/')
            cfg->s3_endpoint[n - 1] = '\0';
    }
    cfg->s3_force_path_style = config_get_bool(l, "S3_FORCE_PATH_STYLE");
    cfg->s3_sse = config_get_str(l, "S3_SSE", 0);
    if (cfg->s3_sse && strcmp(cfg->s3_sse, "AES256") != 0 && strcmp(cfg->s3_sse, "aws:kms") != 0)
        bad(l, "S3_SSE", "'%.40s' is not AES256 or aws:kms", cfg->s3_sse);
    cfg->s3_sse_kms_key_id = config_get_str(l, "S3_SSE_KMS_KEY_ID", 0);
    if (cfg->s3_sse_kms_key_id && (cfg->s3_sse == NULL || strcmp(cfg->s3_sse, "aws:kms") != 0))
        bad(l, "S3_SSE_KMS_KEY_ID", "is set but S3_SSE is not aws:kms");
    cfg->s3_ca_file = config_get_str(l, "S3_CA_FILE", 0);
    if (cfg->s3_ca_file && access(cfg->s3_ca_file, R_OK) != 0)
        bad(l, "S3_CA_FILE", "cannot read '%.200s'", cfg->s3_ca_file);
    cfg->s3_part_size_mb = config_get_int(l, "S3_PART_SIZE_MB", 5, 5120);
    cfg->s3_upload_concurrency = config_get_int(l, "S3_UPLOAD_CONCURRENCY", 1, 64);
    cfg->s3_connect_timeout_ms = config_get_duration(l, "S3_CONNECT_TIMEOUT", 100, 600000LL);
    cfg->s3_stall_timeout_ms = config_get_duration(l, "S3_STALL_TIMEOUT", 1000, 3600000LL);
}

/* the replica: the same rules, its own bucket, store and (optionally) credentials */
static void load_replica(Loader *l, Config *cfg) {
    cfg->s3_replica_bucket = config_get_str(l, "S3_REPLICA_BUCKET", 0);
    if (cfg->s3_replica_bucket && !valid_bucket(cfg->s3_replica_bucket))
        bad(l, "S3_REPLICA_BUCKET", "'%.70s' is not a valid bucket name", cfg->s3_replica_bucket);
    cfg->s3_replica_region = config_get_str(l, "S3_REPLICA_REGION", 0);
    if (cfg->s3_replica_region && !valid_region(cfg->s3_replica_region))
        bad(l, "S3_REPLICA_REGION", "'%.40s' is not a region name (such as eu-west-1)",
            cfg->s3_replica_region);
    cfg->s3_replica_endpoint = config_get_str(l, "S3_REPLICA_ENDPOINT", 0);
    if (cfg->s3_replica_endpoint) {
        const char *why = NULL;
        if (!valid_endpoint(cfg->s3_replica_endpoint, &why) ||
            strchr(cfg->s3_replica_endpoint, '@') != NULL)
            bad(l, "S3_REPLICA_ENDPOINT", "%s",
                why ? why : "must not carry credentials (S3_REPLICA_ACCESS_KEY_ID)");
        size_t n = strlen(cfg->s3_replica_endpoint);
        if (n > 0 && cfg->s3_replica_endpoint[n - 1] == '/')
            cfg->s3_replica_endpoint[n - 1] = '\0';
    }
    cfg->s3_replica_force_path_style = config_get_bool(l, "S3_REPLICA_FORCE_PATH_STYLE");
    cfg->s3_replica_sse = config_get_str(l, "S3_REPLICA_SSE", 0);
    if (cfg->s3_replica_sse && strcmp(cfg->s3_replica_sse, "AES256") != 0 &&
        strcmp(cfg->s3_replica_sse, "aws:kms") != 0)
        bad(l, "S3_REPLICA_SSE", "'%.40s' is not AES256 or aws:kms", cfg->s3_replica_sse);
    cfg->s3_replica_sse_kms_key_id = config_get_str(l, "S3_REPLICA_SSE_KMS_KEY_ID", 0);
    if (cfg->s3_replica_sse_kms_key_id &&
        (cfg->s3_replica_sse == NULL || strcmp(cfg->s3_replica_sse, "aws:kms") != 0))
        bad(l, "S3_REPLICA_SSE_KMS_KEY_ID", "is set but S3_REPLICA_SSE is not aws:kms");
    cfg->s3_replica_access_key_id = config_get_str(l, "S3_REPLICA_ACCESS_KEY_ID", 0);
    cfg->s3_replica_secret_access_key = config_get_str(l, "S3_REPLICA_SECRET_ACCESS_KEY", 0);
    if ((cfg->s3_replica_access_key_id == NULL) != (cfg->s3_replica_secret_access_key == NULL))
        bad(l,
            cfg->s3_replica_access_key_id ? "S3_REPLICA_SECRET_ACCESS_KEY"
                                          : "S3_REPLICA_ACCESS_KEY_ID",
            "is required with %s",
            cfg->s3_replica_access_key_id ? "S3_REPLICA_ACCESS_KEY_ID"
                                          : "S3_REPLICA_SECRET_ACCESS_KEY");
    if (cfg->s3_replica_secret_access_key && strpbrk(cfg->s3_replica_secret_access_key, " \t\r\n"))
        bad(l, "S3_REPLICA_SECRET_ACCESS_KEY", "must not contain spaces or line breaks");
    if (cfg->s3_replica_bucket == NULL &&
        (cfg->s3_replica_endpoint || cfg->s3_replica_region || cfg->s3_replica_access_key_id))
        bad(l, "S3_REPLICA_BUCKET", "%s",
            "is required with the other S3_REPLICA_* settings (it turns replication on)");
    if (cfg->s3_replica_bucket &&
        strcmp(cfg->s3_replica_bucket, cfg->s3_bucket ? cfg->s3_bucket : "") == 0 &&
        (cfg->s3_replica_endpoint
             ? cfg->s3_endpoint && strcmp(cfg->s3_replica_endpoint, cfg->s3_endpoint) == 0
             : cfg->s3_endpoint == NULL))
        bad(l, "S3_REPLICA_BUCKET", "%s",
            "is the primary bucket itself: a replica must be elsewhere");
    char *copy = config_get_str(l, "S3_REPLICA_COPY", 1);
    int same_service =
        (cfg->s3_replica_endpoint == NULL) == (cfg->s3_endpoint == NULL) &&
        (cfg->s3_endpoint == NULL || strcmp(cfg->s3_replica_endpoint, cfg->s3_endpoint) == 0) &&
        cfg->s3_replica_access_key_id == NULL;
    if (copy && strcmp(copy, "auto") == 0)
        cfg->s3_replica_server_copy = same_service;
    else if (copy && strcmp(copy, "server") == 0)
        cfg->s3_replica_server_copy = 1;
    else if (copy && strcmp(copy, "stream") == 0)
        cfg->s3_replica_server_copy = 0;
    else
        bad(l, "S3_REPLICA_COPY", "'%.40s' is not auto, server or stream", copy ? copy : "");
    if (cfg->s3_replica_bucket && copy && strcmp(copy, "server") == 0 && !same_service)
        bad(l, "S3_REPLICA_COPY", "%s",
            "server: the replica must be on the primary's service (the same S3_ENDPOINT) with its "
            "credentials (no S3_REPLICA_ACCESS_KEY_ID)");
    free(copy);
    if (cfg->s3_replica_bucket && cfg->aws_access_key_id == NULL &&
        cfg->s3_replica_access_key_id == NULL && cfg->aws_web_identity_token_file == NULL)
        bad(l, "S3_REPLICA_ACCESS_KEY_ID", "%s",
            "is required: the replica needs credentials (or AWS_ACCESS_KEY_ID)");
}

/* Redis, PostgreSQL, the worker's own port and limits, logging */
static void load_worker(Loader *l, Config *cfg) {
    cfg->redis_url = config_get_str(l, "REDIS_URL", 1);
    if (cfg->redis_url) {
        const char *why = NULL;
        if (connurl_parse_redis(cfg->redis_url, &cfg->redis, &why) != 0) {
            char red[256];
            connurl_redact(cfg->redis_url, red, sizeof(red));
            bad(l, "REDIS_URL", "'%.120s': %s", red, why);
        }
    }
    char *cl = config_get_str(l, "REDIS_CLUSTER", 1);
    if (cl && strcmp(cl, "on") == 0)
        cfg->redis_cluster = 1;
    else if (cl && strcmp(cl, "auto") == 0)
        cfg->redis_cluster = 2;
    else if (!cl || strcmp(cl, "off") != 0)
        bad(l, "REDIS_CLUSTER", "'%.20s' is not auto, on or off", cl ? cl : "");
    free(cl);
    cfg->redis_ca_file = config_get_str(l, "REDIS_CA_FILE", 0);
    cfg->redis_tls_cert_file = config_get_str(l, "REDIS_TLS_CERT_FILE", 0);
    cfg->redis_tls_key_file = config_get_str(l, "REDIS_TLS_KEY_FILE", 0);
    const char *tls_var = cfg->redis_ca_file         ? "REDIS_CA_FILE"
                          : cfg->redis_tls_cert_file ? "REDIS_TLS_CERT_FILE"
                          : cfg->redis_tls_key_file  ? "REDIS_TLS_KEY_FILE"
                                                     : NULL;
    if (cfg->redis_url && !cfg->redis.tls && tls_var) {
        bad(l, tls_var, "is set, but REDIS_URL is redis:// (plain text): use rediss://");
    } else if (cfg->redis.tls) {
        TlsOptions to = {cfg->redis_ca_file, cfg->redis_tls_cert_file, cfg->redis_tls_key_file,
                         "REDIS_CA_FILE", "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE"};
        Err err;
        cfg->redis_tls = tls_config_new(&to, &err);
        if (cfg->redis_tls == NULL)
            bad(l,
                cfg->redis_tls_cert_file || cfg->redis_tls_key_file ? "REDIS_TLS_CERT_FILE"
                                                                    : "REDIS_CA_FILE",
                "%s", err.msg);
    }

    cfg->database_url = config_get_str(l, "DATABASE_URL", 1);
    if (cfg->database_url) {
        char why[200];
        if (connurl_check_pg(cfg->database_url, why, sizeof(why)) != 0)
            bad(l, "DATABASE_URL", "%s", why);
    }

    cfg->worker_concurrency = config_get_int(l, "WORKER_CONCURRENCY", 1, 1024);
    cfg->worker_http_port = config_get_int(l, "WORKER_HTTP_PORT", 0, 65535);
    cfg->worker_http_host = config_get_str(l, "WORKER_HTTP_HOST", 1);
    if (cfg->worker_http_host) {
        struct sockaddr_in6 a6;
        struct sockaddr_in a4;
        if (uv_ip4_addr(cfg->worker_http_host, 0, &a4) != 0 &&
            uv_ip6_addr(cfg->worker_http_host, 0, &a6) != 0)
            bad(l, "WORKER_HTTP_HOST", "'%.80s' is not an IPv4 or IPv6 address",
                cfg->worker_http_host);
    }
    cfg->worker_shutdown_grace_ms = config_get_duration(l, "WORKER_SHUTDOWN_GRACE", 0, 3600000LL);
    cfg->redis_prefix = config_get_str(l, "REDIS_PREFIX", 1);
    if (cfg->redis_prefix && !valid_prefix(cfg->redis_prefix))
        bad(l, "REDIS_PREFIX", "'%.70s' must be 1-64 letters, digits or _.:-{}", cfg->redis_prefix);

    const char *lv = get(l, "LOG_LEVEL");
    if (lv == NULL)
        lv = def_of_in(l, "LOG_LEVEL");
    if (log_level_parse(lv, &cfg->log_level) != 0)
        bad(l, "LOG_LEVEL", "'%.40s' is not one of debug, info, warn, error", lv);
    const char *lf = get(l, "LOG_FORMAT");
    if (lf == NULL)
        lf = def_of_in(l, "LOG_FORMAT");
    if (log_format_parse(lf, &cfg->log_format) != 0)
        bad(l, "LOG_FORMAT", "'%.40s' is not one of text, json", lf);
}

int config_load(Config *cfg, ConfigGetenv getenv_fn, void *data, Buf *errors) {
    Loader l;
    config_loader_init(&l, getenv_fn, data, errors, vars, sizeof(vars) / sizeof(vars[0]));
    memset(cfg, 0, sizeof(*cfg));
    load_store(&l, cfg);
    load_aws(&l, cfg);
    load_s3(&l, cfg);
    load_replica(&l, cfg);
    load_worker(&l, cfg);
    return l.count;
}

void config_redis_options(const Config *cfg, RedisOptions *o) {
    memset(o, 0, sizeof(*o));
    o->host = cfg->redis.host;
    o->port = cfg->redis.port;
    o->username = cfg->redis.username;
    o->password = cfg->redis.password;
    o->db = cfg->redis.db;
    o->tls = cfg->redis_tls;
    o->cluster = cfg->redis_cluster;
    o->slot_key = cfg->redis_prefix;
}

void config_s3_options(const Config *cfg, S3Options *o) {
    memset(o, 0, sizeof(*o));
    o->endpoint = cfg->s3_endpoint;
    o->region = cfg->aws_region;
    o->bucket = cfg->s3_bucket;
    o->access_key = cfg->aws_access_key_id;
    o->secret_key = cfg->aws_secret_access_key;
    o->session_token = cfg->aws_session_token;
    o->path_style = cfg->s3_force_path_style;
    o->sse = cfg->s3_sse;
    o->sse_kms_key_id = cfg->s3_sse_kms_key_id;
    o->ca_file = cfg->s3_ca_file;
    o->connect_timeout_ms = (long)cfg->s3_connect_timeout_ms;
    o->stall_secs = (long)((cfg->s3_stall_timeout_ms + 999) / 1000);
    o->web_identity_token_file = cfg->aws_web_identity_token_file;
    o->role_arn = cfg->aws_role_arn;
    o->role_session_name = cfg->aws_role_session_name;
    o->sts_endpoint = cfg->aws_sts_endpoint;
}

int config_s3_replica_options(const Config *cfg, S3Options *o) {
    config_s3_options(cfg, o);
    if (cfg->s3_replica_bucket == NULL)
        return -1;
    o->bucket = cfg->s3_replica_bucket;
    o->endpoint = cfg->s3_replica_endpoint;
    if (cfg->s3_replica_region)
        o->region = cfg->s3_replica_region;
    o->path_style = cfg->s3_replica_force_path_style;
    o->sse = cfg->s3_replica_sse;
    o->sse_kms_key_id = cfg->s3_replica_sse_kms_key_id;
    if (cfg->s3_replica_access_key_id) { /* another account or provider: its keys alone */
        o->access_key = cfg->s3_replica_access_key_id;
        o->secret_key = cfg->s3_replica_secret_access_key;
        o->session_token = NULL;
        o->web_identity_token_file = NULL;
        o->role_arn = NULL;
    }
    return 0;
}

void config_free(Config *cfg) {
    free(cfg->s3_replica_bucket);
    free(cfg->s3_replica_region);
    free(cfg->s3_replica_endpoint);
    free(cfg->s3_replica_sse);
    free(cfg->s3_replica_sse_kms_key_id);
    free(cfg->s3_replica_access_key_id);
    free(cfg->s3_replica_secret_access_key);
    free(cfg->aws_access_key_id);
    free(cfg->aws_secret_access_key);
    free(cfg->aws_session_token);
    free(cfg->aws_web_identity_token_file);
    free(cfg->aws_role_arn);
    free(cfg->aws_role_session_name);
    free(cfg->aws_sts_endpoint);
    free(cfg->aws_region);
    free(cfg->s3_bucket);
    free(cfg->store_path);
    free(cfg->s3_endpoint);
    free(cfg->s3_sse);
    free(cfg->s3_sse_kms_key_id);
    free(cfg->s3_ca_file);
    free(cfg->redis_url);
    free(cfg->database_url);
    free(cfg->redis_prefix);
    free(cfg->worker_http_host);
    connurl_redis_free(&cfg->redis);
    free(cfg->redis_ca_file);
    free(cfg->redis_tls_cert_file);
    free(cfg->redis_tls_key_file);
    tls_config_free(cfg->redis_tls);
    cfg->redis_tls = NULL;
    memset(cfg, 0, sizeof(*cfg));
}
