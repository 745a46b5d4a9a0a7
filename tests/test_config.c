/*
 * test_config: environment validation, URL parsing and secret redaction.
 */
#include "testutil.h"
#include "config/config.h"
#include "jobs/jobconfig.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *kv[64]; /* name, value, name, value, ..., NULL */
} Env;

static const char *env_get(const char *name, void *data) {
    Env *e = data;
    for (int i = 0; e->kv[i]; i += 2)
        if (strcmp(e->kv[i], name) == 0)
            return e->kv[i + 1];
    return NULL;
}

static void env_set(Env *e, const char *name, const char *value) {
    int i = 0;
    for (; e->kv[i]; i += 2) {
        if (strcmp(e->kv[i], name) == 0) {
            e->kv[i + 1] = value;
            return;
        }
    }
    e->kv[i] = name;
    e->kv[i + 1] = value;
    e->kv[i + 2] = NULL;
}

static Env good_env(void) {
    Env e = {{"AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY", "topsecretkey123",
              "DATABASE_URL", "postgresql://backup:pgsecret99@db.internal:5432/app", "REDIS_URL",
              "redis://:redissecret77@cache:6380/2", NULL}};
    return e;
}

/* Load env; return the error text (caller frees) and the count. */
/* The job settings of the last load (the worker reads both from the same environment). */
static JobConfig jc;

static int load(Env *e, Config *cfg, char **errors) {
    Buf b = BUF_INIT;
    jobconfig_free(&jc);
    int n = config_load(cfg, env_get, e, &b);
    n += jobconfig_load(&jc, env_get, e, &b);
    *errors = buf_steal(&b);
    return n;
}

static void assert_no_secret(const char *text) {
    assert_null(strstr(text, "topsecretkey123"));
    assert_null(strstr(text, "pgsecret99"));
    assert_null(strstr(text, "redissecret77"));
}

static void test_defaults(void **state) {
    (void)state;
    Env e = good_env();
    Config cfg;
    char *errors;
    assert_int_equal(load(&e, &cfg, &errors), 0);
    assert_string_equal(errors, "");
    assert_string_equal(cfg.aws_region, "us-east-1");
    assert_string_equal(cfg.s3_bucket, "pedidolist-backups");
    assert_null(cfg.s3_endpoint);
    assert_int_equal(cfg.s3_force_path_style, 0);
    assert_int_equal(jc.backup_retention_days, 30);
    assert_int_equal(jc.backup_compression, 1);
    assert_string_equal(jc.backup_codecs, "gzip");
    assert_int_equal(jc.backup_compression_level, 1);
    assert_int_equal(cfg.worker_concurrency, 4);
    assert_int_equal(cfg.worker_http_port, 8080);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_int_equal(cfg.log_format, LOG_TEXT);
    assert_string_equal(cfg.redis.host, "cache");
    assert_int_equal(cfg.redis.port, 6380);
    assert_int_equal(cfg.redis.db, 2);
    assert_string_equal(cfg.redis.password, "redissecret77");
    assert_null(cfg.redis.username);
    free(errors);
    config_free(&cfg);
}

static void test_missing_required(void **state) {
    (void)state;
    Env e = {{NULL}};
    Config cfg;
    char *errors;
    int n = load(&e, &cfg, &errors);
    assert_int_equal(n, 3);
    assert_non_null(strstr(errors, "AWS_ACCESS_KEY_ID: is required but not set"));
    assert_non_null(strstr(errors, "AWS_SECRET_ACCESS_KEY: is required but not set"));
    assert_non_null(strstr(errors, "DATABASE_URL: is required but not set"));
    free(errors);
    config_free(&cfg);

    /* empty counts as unset */
    Env e2 = good_env();
    env_set(&e2, "DATABASE_URL", "");
    assert_int_equal(load(&e2, &cfg, &errors), 1);
    assert_non_null(strstr(errors, "DATABASE_URL: is required"));
    free(errors);
    config_free(&cfg);
}

/* rediss://: TLS, its CA file and client certificate checked at start (never the secret) */
static void test_redis_tls(void **state) {
    (void)state;
    Env e = good_env();
    env_set(&e, "REDIS_URL", "rediss://worker:redissecret77@cache.example:6380/0");
    Config cfg;
    char *errors;
    assert_int_equal(load(&e, &cfg, &errors), 0);
    assert_int_equal(cfg.redis.tls, 1);
    assert_string_equal(cfg.redis.host, "cache.example");
    assert_int_equal(cfg.redis.port, 6380);
    assert_string_equal(cfg.redis.username, "worker");
    assert_non_null(cfg.redis_tls); /* the system's CA store */
    RedisOptions o;
    config_redis_options(&cfg, &o);
    assert_ptr_equal(o.tls, cfg.redis_tls);
    free(errors);
    config_free(&cfg);

    Env e2 = good_env();
    env_set(&e2, "REDIS_URL", "rediss://:redissecret77@cache.example");
    env_set(&e2, "REDIS_CA_FILE", "/no/such/ca.pem");
    assert_int_equal(load(&e2, &cfg, &errors), 1);
    assert_non_null(
        strstr(errors, "REDIS_CA_FILE: TLS: cannot load the CA certificates of /no/such/ca.pem"));
    assert_null(strstr(errors, "redissecret77"));
    free(errors);
    config_free(&cfg);

    Env e3 = good_env();
    env_set(&e3, "REDIS_URL", "rediss://cache.example");
    env_set(&e3, "REDIS_TLS_CERT_FILE", "/no/such/client.pem");
    assert_int_equal(load(&e3, &cfg, &errors), 1);
    assert_non_null(strstr(errors, "REDIS_TLS_CERT_FILE: TLS: a client certificate needs its key"));
    free(errors);
    config_free(&cfg);
}

typedef struct {
    const char *var;
    const char *value;
    const char *expect; /* substring of the error */
} BadCase;

static void test_malformed(void **state) {
    (void)state;
    static const BadCase cases[] = {
        {"AWS_REGION", "US East", "AWS_REGION: 'US East' is not a region name"},
        {"S3_BUCKET", "My_Bucket", "S3_BUCKET: 'My_Bucket' is not a valid bucket name"},
        {"S3_BUCKET", "ab", "S3_BUCKET: 'ab' is not a valid bucket name"},
        {"S3_ENDPOINT", "localhost:9000", "S3_ENDPOINT: 'localhost:9000' must start with http"},
        {"S3_ENDPOINT", "http://h:9000/some/path", "without a path"},
        {"S3_ENDPOINT", "http://key:topsecretkey123@h:9000", "must not carry credentials"},
        {"S3_FORCE_PATH_STYLE", "maybe", "S3_FORCE_PATH_STYLE: 'maybe' is not a boolean"},
        {"BACKUP_RETENTION_DAYS", "0", "BACKUP_RETENTION_DAYS: '0' is not a whole number from 1"},
        {"BACKUP_RETENTION_DAYS", "30d", "BACKUP_RETENTION_DAYS: '30d'"},
        {"BACKUP_COMPRESSION", "lz4", "BACKUP_COMPRESSION: 'lz4' is not one of gzip, zstd or none"},
        {"BACKUP_COMPRESSION_LEVEL", "10",
         "BACKUP_COMPRESSION_LEVEL: '10' is not a whole number from 1 to 9"},
        {"REDIS_URL", "http://:redissecret77@x", "REDIS_URL: 'http://:***@x': must start with"},
        {"REDIS_CA_FILE", "/no/such/ca.pem",
         "REDIS_CA_FILE: is set, but REDIS_URL is redis:// (plain text): use rediss://"},
        {"REDIS_URL", "redis://:redissecret77@x:99999", "the port must be a number"},
        {"REDIS_URL", "redis://:redissecret77@x:1/abc", "the database after / must be a number"},
        {"REDIS_URL", "redis://:redissecret77@", "the host is missing"},
        {"DATABASE_URL", "postgresql://u:pgsecret99@h:5432/db?bogus=1",
         "DATABASE_URL: not a valid PostgreSQL connection string"},
        {"DATABASE_URL", "host=h password=pgsecret99 nonsense",
         "DATABASE_URL: not a valid PostgreSQL connection string"},
        {"DATABASE_URL", "postgresql://u:pgsecret99@h/db?sslmode=bogus",
         "DATABASE_URL: option sslmode=bogus is not valid: expected disable, allow"},
        {"DATABASE_URL", "host=h port=notaport password=pgsecret99",
         "DATABASE_URL: option port=notaport is not valid"},
        {"DATABASE_URL", "postgresql://u:pgsecret99@h:99999/db", "option port=99999 is not valid"},
        {"DATABASE_URL", "postgresql://u:pgsecret99@h/db?connect_timeout=soon",
         "option connect_timeout=soon is not valid: expected a whole number"},
        {"DATABASE_URL", "postgresql://u:pgsecret99@h/db?target_session_attrs=any-old",
         "option target_session_attrs=any-old is not valid"},
        {"WORKER_HTTP_HOST", "localhost", "WORKER_HTTP_HOST: 'localhost' is not an IPv4 or IPv6"},
        {"WORKER_CONCURRENCY", "0", "WORKER_CONCURRENCY: '0' is not a whole number from 1 to 1024"},
        {"WORKER_CONCURRENCY", "-3", "WORKER_CONCURRENCY: '-3'"},
        {"JOB_VISIBILITY_TIMEOUT", "10 minutes",
         "JOB_VISIBILITY_TIMEOUT: '10 minutes' is not a duration"},
        {"JOB_MAX_ATTEMPTS", "0", "JOB_MAX_ATTEMPTS: '0' is not a whole number from 1 to 100"},
        {"REDIS_PREFIX", "a b", "REDIS_PREFIX: 'a b' must be"},
        {"JOB_BACKOFF_MAX", "1ms", "JOB_BACKOFF_MAX: is shorter than JOB_BACKOFF_BASE"},
        {"WORKER_HTTP_PORT", "70000", "WORKER_HTTP_PORT: '70000' is not a whole number from 0"},
        {"LOG_LEVEL", "loud", "LOG_LEVEL: 'loud' is not one of debug, info, warn, error"},
        {"LOG_FORMAT", "xml", "LOG_FORMAT: 'xml' is not one of text, json"},
        {"AWS_SECRET_ACCESS_KEY", "top secret", "AWS_SECRET_ACCESS_KEY: must not contain spaces"},
        {"S3_SSE", "aes256", "S3_SSE: 'aes256' is not AES256 or aws:kms"},
        {"S3_SSE_KMS_KEY_ID", "key-1", "S3_SSE_KMS_KEY_ID: is set but S3_SSE is not aws:kms"},
        {"S3_CA_FILE", "/no/such/ca.pem", "S3_CA_FILE: cannot read '/no/such/ca.pem'"},
        {"AWS_ROLE_ARN", "arn:aws:iam::1:role/r",
         "AWS_WEB_IDENTITY_TOKEN_FILE: is required with AWS_ROLE_ARN"},
        {"AWS_STS_ENDPOINT", "sts.example", "AWS_STS_ENDPOINT: 'sts.example'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Env e = good_env();
        env_set(&e, cases[i].var, cases[i].value);
        Config cfg;
        char *errors;
        int n = load(&e, &cfg, &errors);
        if (n != 1 || strstr(errors, cases[i].expect) == NULL)
            print_error("case %zu (%s=%s): got %d errors:\n%s", i, cases[i].var, cases[i].value, n,
                        errors);
        assert_int_equal(n, 1);
        assert_non_null(strstr(errors, cases[i].expect));
        assert_no_secret(errors);
        if (strcmp(cases[i].var, "AWS_SECRET_ACCESS_KEY") == 0)
            assert_null(strstr(errors, "top secret"));
        free(errors);
        config_free(&cfg);
    }
}

static void test_web_identity(void **state) {
    (void)state;
    /* with a web identity the static keys are optional */
    Env e = good_env();
    env_set(&e, "AWS_ACCESS_KEY_ID", "");
    env_set(&e, "AWS_SECRET_ACCESS_KEY", "");
    env_set(&e, "AWS_WEB_IDENTITY_TOKEN_FILE", "/etc/passwd");
    env_set(&e, "AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/backup");
    Config cfg;
    char *errors;
    assert_int_equal(load(&e, &cfg, &errors), 0);
    assert_string_equal(cfg.aws_role_session_name, "backup-worker");
    S3Options o;
    config_s3_options(&cfg, &o);
    assert_string_equal(o.role_arn, "arn:aws:iam::123456789012:role/backup");
    assert_null(o.access_key);
    free(errors);
    config_free(&cfg);
    /* without one they are required, and a role that is no ARN is named */
    Env f = good_env();
    env_set(&f, "AWS_ACCESS_KEY_ID", "");
    env_set(&f, "AWS_WEB_IDENTITY_TOKEN_FILE", "/etc/passwd");
    env_set(&f, "AWS_ROLE_ARN", "backup-role");
    assert_int_equal(load(&f, &cfg, &errors), 1);
    assert_non_null(strstr(errors, "AWS_ROLE_ARN: 'backup-role' is not an ARN"));
    free(errors);
    config_free(&cfg);
    Env g = good_env();
    env_set(&g, "AWS_ACCESS_KEY_ID", "");
    assert_int_equal(load(&g, &cfg, &errors), 1);
    assert_non_null(strstr(errors, "AWS_ACCESS_KEY_ID: is required"));
    free(errors);
    config_free(&cfg);
}

static void test_all_errors_reported(void **state) {
    (void)state;
    Env e = good_env();
    env_set(&e, "LOG_LEVEL", "loud");
    env_set(&e, "WORKER_CONCURRENCY", "many");
    env_set(&e, "S3_BUCKET", "UPPER");
    Config cfg;
    char *errors;
    assert_int_equal(load(&e, &cfg, &errors), 3);
    free(errors);
    config_free(&cfg);
}

static void test_valid_variants(void **state) {
    (void)state;
    Env e = good_env();
    env_set(&e, "S3_ENDPOINT", "http://127.0.0.1:9000/");
    env_set(&e, "S3_FORCE_PATH_STYLE", "YES");
    env_set(&e, "BACKUP_COMPRESSION", "off");
    env_set(&e, "REDIS_URL", "redis://worker:p%40ss@[::1]:7000");
    env_set(&e, "DATABASE_URL", "host=127.0.0.1 port=5432 dbname=app user=u password=x");
    env_set(&e, "LOG_FORMAT", "JSON");
    env_set(&e, "LOG_LEVEL", "warning");
    Config cfg;
    char *errors;
    assert_int_equal(load(&e, &cfg, &errors), 0);
    assert_string_equal(cfg.s3_endpoint, "http://127.0.0.1:9000");
    assert_int_equal(cfg.s3_force_path_style, 1);
    assert_int_equal(jc.backup_compression, 0);
    assert_string_equal(jc.backup_codecs, "");
    assert_string_equal(cfg.redis.host, "::1");
    assert_int_equal(cfg.redis.port, 7000);
    assert_string_equal(cfg.redis.username, "worker");
    assert_string_equal(cfg.redis.password, "p@ss");
    assert_int_equal(cfg.redis.db, 0);
    assert_int_equal(cfg.log_format, LOG_JSON);
    assert_int_equal(cfg.log_level, LOG_WARN);
    free(errors);
    config_free(&cfg);
}

static void test_redact(void **state) {
    (void)state;
    char out[256];
    connurl_redact("postgresql://backup:pgsecret99@db:5432/app", out, sizeof(out));
    assert_string_equal(out, "postgresql://backup:***@db:5432/app");
    connurl_redact("redis://:redissecret77@cache:6380/2", out, sizeof(out));
    assert_string_equal(out, "redis://:***@cache:6380/2");
    connurl_redact("redis://redissecret77@cache", out, sizeof(out));
    assert_string_equal(out, "redis://***@cache");
    connurl_redact("redis://cache:6379", out, sizeof(out));
    assert_string_equal(out, "redis://cache:6379");
    connurl_redact("postgresql://u@h/db?password=pgsecret99&sslmode=require", out, sizeof(out));
    assert_string_equal(out, "postgresql://u:***@h/db?sslmode=require");
    /* every secret libpq reads, however it is spelled (the hardening issue's gaps) */
    connurl_redact("postgresql://u@h/db?sslpassword=x&password=pgsecret99", out, sizeof(out));
    assert_null(strstr(out, "pgsecret99"));
    assert_string_equal(out, "postgresql://u:***@h/db?sslpassword=***");
    connurl_redact("postgresql://u@h/db?%70assword=pgsecret99", out, sizeof(out));
    assert_string_equal(out, "postgresql://u:***@h/db");
    connurl_redact("postgresql://u:pgsecret%39%39@h/db", out, sizeof(out));
    assert_string_equal(out, "postgresql://u:***@h/db");
    connurl_redact("host=h sslpassword=pgsecret98 password=pgsecret99", out, sizeof(out));
    assert_null(strstr(out, "pgsecret9"));
    connurl_redact("postgresql://u:pgsecret99@h/db?bogus=1", out, sizeof(out));
    assert_string_equal(out, "(unparseable connection string)");
    connurl_redact("host=h user=u password=pgsecret99 dbname=d", out, sizeof(out));
    assert_null(strstr(out, "pgsecret99"));
    assert_non_null(strstr(out, "password=***"));
    assert_non_null(strstr(out, "host=h"));
    connurl_redact("p@ss:word@@x://", out, sizeof(out)); /* nonsense never crashes */
    connurl_redact("postgresql://u:a@b@host/db", out, sizeof(out));
    assert_null(strstr(out, "a@b"));
}

static void test_parsers(void **state) {
    (void)state;
    long v;
    int b;
    assert_int_equal(textval_int("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(textval_int("", 0, 100, &v), -1);
    assert_int_equal(textval_int("4 2", 0, 100, &v), -1);
    assert_int_equal(textval_int("99999999999999999999", 0, 100, &v), -1);
    assert_int_equal(textval_int("101", 0, 100, &v), -1);
    assert_int_equal(textval_bool("On", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(textval_bool("0", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(textval_bool("", &b), -1);
    long long ms;
    assert_int_equal(textval_duration_ms("30", 0, 86400000, &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(textval_duration_ms("1500ms", 0, 86400000, &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(textval_duration_ms("5m", 0, 86400000, &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(textval_duration_ms("7d", 0, 7 * 86400000LL, &ms), 0);
    assert_int_equal(ms, 7 * 86400000LL);
    assert_int_equal(textval_duration_ms("2h", 0, 3600000, &ms), -1); /* over max */
    assert_int_equal(textval_duration_ms("5 s", 0, 86400000, &ms), -1);
    assert_int_equal(textval_duration_ms("-1s", 0, 86400000, &ms), -1);
    assert_int_equal(textval_duration_ms("1w", 0, 86400000, &ms), -1);
    assert_int_equal(textval_duration_ms("", 0, 86400000, &ms), -1);
    assert_int_equal(textval_duration_ms("99999999999999999999s", 0, 86400000, &ms), -1);
}

/* BACKUP_COMPRESSION names a codec (the old booleans still mean gzip and none); the level's
 * range and default follow the codec. */
static void test_compression_codecs(void **state) {
    (void)state;
    static const struct {
        const char *comp, *level, *codecs;
        int want_level, errors;
    } cases[] = {
        {"zstd", NULL, "zstd", 1, 0}, {"zstd", "19", "zstd", 19, 0}, {"zstd", "20", "zstd", 0, 1},
        {"gzip", "9", "gzip", 9, 0},  {"gzip", "10", "gzip", 0, 1},  {"none", NULL, "", 1, 0},
        {"true", NULL, "gzip", 1, 0}, {"false", NULL, "", 1, 0},     {"brotli", NULL, "", 1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Env e = good_env();
        env_set(&e, "BACKUP_COMPRESSION", cases[i].comp);
        if (cases[i].level)
            env_set(&e, "BACKUP_COMPRESSION_LEVEL", cases[i].level);
        Config cfg;
        char *errors;
        int n = load(&e, &cfg, &errors);
        assert_int_equal(n, cases[i].errors);
        if (!cases[i].errors) {
            assert_string_equal(jc.backup_codecs, cases[i].codecs);
            assert_int_equal(jc.backup_compression_level, cases[i].want_level);
        }
        free(errors);
        config_free(&cfg);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),         cmocka_unit_test(test_compression_codecs),
        cmocka_unit_test(test_missing_required), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_redis_tls),        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_valid_variants),   cmocka_unit_test(test_redact),
        cmocka_unit_test(test_parsers),          cmocka_unit_test(test_web_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
