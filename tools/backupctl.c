/*
 * backupctl: the operator's command line.
 *
 * Configured by the same environment as the worker: checks the three services
 * the worker needs and says exactly which one fails and what to look at;
 * operates S3 (ctl_s3) and the job queue (ctl_queue); enqueues and follows
 * jobs, lists backups, schedules, migrates (ctl_jobs); recovers from S3 alone
 * (ctl_recover).
 */
#include "config/config.h"
#include "storage/storage_file.h"
#include "storage/storage_s3.h"
#include "ctl_admin.h"
#include "ctl_common.h"
#include "jobs/jobconfig.h"
#include "jobs/jobs.h"
#include "keys/keys.h"
#include "ctl_jobs.h"
#include "ctl_queue.h"
#include "ctl_s3.h"
#include "ctl_scope.h"
#include "ctl_recover.h"
#include "http/http.h"
#include "base/log.h"
#include "pg/pg.h"
#include "redis/redis.h"
#include "version.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(
        out,
        "Usage: backupctl [--version] [--help] COMMAND\n"
        "\n"
        "Commands:\n"
        "  backup USER [--incremental|--differential]\n"
        "  restore BACKUP_ID [--tables a,b] [--from replica] [--dry-run] | restore --key S3_KEY\n"
        "  restore USER --at TIME|LSN [--tables a,b] [--dry-run]\n"
        "             the user's rows as they were at TIME (RFC 3339 with its offset): the\n"
        "             newest backup before it, plus the changes captured from the WAL\n"
        "             (BACKUP_TRACKING=wal) that committed by then; see backupctl timeline\n"
        "  verify BACKUP_ID | verify --user USER\n"
        "  cleanup USER [--retention-days N] [--requested-by USER] | cleanup --all\n"
        "             enqueue the job, as the web API does, and follow it: options\n"
        "             --wait|--no-wait (default: wait on a terminal), --json,\n"
        "             --timeout S, --job-id ID; exit 0 only if the job completed\n"
        "  enqueue TYPE [FIELD VALUE]...\n"
        "             any job type below, its fields checked as the worker checks them\n"
        "             (then followed like the commands above)\n"
        "  wait JOB_ID | status JOB_ID\n"
        "             follow a job to its end | print its status as JSON\n"
        "  list USER [--s3|--store [--replica]] [--json]\n"
        "             the user's backups (--s3, --store: from the store's manifests alone;\n"
        "             --replica: the replica's)\n"
        "  stats [USER] [--json]\n"
        "             totals, storage, success rate, last backup\n"
        "  schedule [--dry-run] [--json]\n"
        "             enqueue the backups due (user_settings.backup_schedule)\n"
        "  migrate [--dir DIR]\n"
        "             apply proto/sql/*.sql in order (idempotent)\n"
        "  timeline USER [--since TIME] [--json]\n"
        "             the user's transactions captured from the WAL (BACKUP_TRACKING=wal):\n"
        "             commit time, LSN, xid, rows per table; and the capture's gaps\n"
        "  tracking [wal [--replace-owner-indexes]|triggers] [--json]\n"
        "             how changes are tracked: the mode, the capture's slot, leader and\n"
        "             position; or switch (every user's next backup is full);\n"
        "             --replace-owner-indexes: drop the plain indexes on a table's owner\n"
        "             column that the capture's (owner, key) index serves as well\n"
        "  download [--decode] [--from primary|replica] BACKUP_ID|S3_KEY [FILE]\n"
        "             the stored object, its SHA-256 checked against its manifest (the\n"
        "             replica's copy when the primary's fails); --decode (or --plain):\n"
        "             the JSON document, the manifest's codecs undone (decrypted with\n"
        "             BACKUP_ENCRYPTION_KEYS)\n"
        "  replicate --missing USER|--all [--dry-run]\n"
        "             enqueue a copy to the replica of every backup not yet there\n"
        "  rekey USER|--all [--to KEY_ID] [--dry-run]\n"
        "             wrap the data keys of encrypted backups under the current key\n"
        "             (manifests and records; objects unchanged), then list the keys\n"
        "             still in use: a key no backup needs can be removed\n"
        "  check      connect to Redis, PostgreSQL and S3 and report each (exit 1 if any "
        "fails)\n"
        "  config     validate the environment and print it, secrets masked\n"
        "  s3 ...     put, get, ls, rm, presign, uploads (see backupctl s3)\n"
        "  jobs       the queue: stream, consumers, pending, delayed and dead counts\n"
        "  dead ls [N] | dead retry ID | dead drop ID\n"
        "             dead letters: list, re-run with their original fields, drop\n"
        "  scope [--sql [--json]]\n"
        "             the tables a backup covers, checked, in restore order\n"
        "             (--sql: each one's COPY; --json: as PostgreSQL's row_to_json)\n"
        "  reindex USER [--replica]\n"
        "             rebuild the user's backup_metadata rows from the manifests in S3\n"
        "             (--replica: in the replica, when the primary region is gone)\n"
        "  ping [--timeout S]\n"
        "             enqueue a ping job and wait for a worker to complete it\n"
        "\n");
    config_print_help(out);
    jobconfig_print_help(out); /* the worker's, listed for its deployments */
    jobs_print_help(out);
}

typedef struct {
    const Config *cfg;
    RedisClient *redis;
    PgConn *pg;
    int redis_done, pg_done, s3_done, replica_done;
    int failures;
    uv_timer_t deadline;
    char s3_label[256];
} Check;

static void check_finish_if_done(Check *c) {
    if (c->redis_done && c->pg_done && c->s3_done && c->replica_done)
        uv_close((uv_handle_t *)&c->deadline, NULL);
}

static void on_redis_pong(RedisClient *r, redisReply *reply, const Err *err, void *data) {
    (void)reply;
    Check *c = data;
    if (err) {
        printf("redis     FAIL  %s\n", err->msg);
        c->failures++;
    } else {
        printf("redis     ok    %s:%d db %d\n", c->cfg->redis.host, c->cfg->redis.port,
               c->cfg->redis.db);
    }
    c->redis_done = 1;
    redis_client_free(r);
    c->redis = NULL;
    check_finish_if_done(c);
}

static void on_redis_state(RedisClient *r, int connected, const Err *err, void *data) {
    (void)err;
    Check *c = data;
    if (!connected || c->redis_done)
        return;
    Err e;
    err_clear(&e);
    if (redis_command(r, on_redis_pong, c, &e, "PING") != 0)
        on_redis_pong(r, NULL, &e, c);
}

static void on_pg_result(PgConn *conn, PGresult *res, const Err *err, void *data) {
    Check *c = data;
    if (err) {
        printf("postgres  FAIL  %s\n", err->msg);
        c->failures++;
    } else {
        printf("postgres  ok    PostgreSQL %s, database %s as %s\n", PQgetvalue(res, 0, 0),
               PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    }
    c->pg_done = 1;
    pg_conn_free(conn);
    c->pg = NULL;
    check_finish_if_done(c);
}

static void on_pg_connected(PgConn *conn, const Err *err, void *data) {
    Check *c = data;
    if (err) {
        on_pg_result(conn, NULL, err, c);
        return;
    }
    Err e;
    err_clear(&e);
    if (pg_conn_query(conn,
                      "SELECT current_setting('server_version'), current_database(), "
                      "current_user",
                      0, NULL, on_pg_result, c, &e) != 0)
        on_pg_result(conn, NULL, &e, c);
}

/* the primary store, probed as the worker probes it (storage_probe) */
static void on_store(const StorageResult *res, const Err *err, void *data) {
    Check *c = data;
    if (c->cfg->store_path && err)
        printf("store     FAIL  file store %s: %s\n", c->cfg->store_path, err->msg);
    else if (c->cfg->store_path)
        printf("store     ok    file store %s (a writable directory)\n", c->cfg->store_path);
    else if (err)
        printf("s3        FAIL  bucket %s at %s: %s\n", c->cfg->s3_bucket, c->s3_label, err->msg);
    else
        printf("s3        ok    bucket %s at %s (signed HEAD: HTTP %ld)\n", c->cfg->s3_bucket,
               c->s3_label, res->status);
    c->failures += err != NULL;
    c->s3_done = 1;
    check_finish_if_done(c);
}

static void on_replica(const S3Result *res, const Err *err, void *data) {
    Check *c = data;
    const Config *cfg = c->cfg;
    const char *at = cfg->s3_replica_endpoint ? cfg->s3_replica_endpoint : "AWS";
    if (err) {
        printf("replica   FAIL  bucket %s at %s: %s\n", cfg->s3_replica_bucket, at, err->msg);
        c->failures++;
    } else {
        printf("replica   ok    bucket %s at %s (signed HEAD: HTTP %ld)\n", cfg->s3_replica_bucket,
               at, res->status);
    }
    c->replica_done = 1;
    check_finish_if_done(c);
}

static void on_deadline(uv_timer_t *t) {
    Check *c = t->data;
    if (!c->redis_done) {
        printf("redis     FAIL  no connection to %s:%d within 10 s: %s\n", c->cfg->redis.host,
               c->cfg->redis.port, c->redis ? redis_client_last_error(c->redis) : "");
        c->failures++;
        c->redis_done = 1;
        redis_client_free(c->redis);
        c->redis = NULL;
    }
    check_finish_if_done(c);
}

/* download [--decode|--plain] [--from primary|replica] ID|KEY [FILE] */
static int download_main(const Config *cfg, int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0, plain = 0;
    CtlFrom from = CTL_FROM_ANY;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plain") == 0 || strcmp(argv[i], "--decode") == 0)
            plain = 1;
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "primary") == 0 || strcmp(argv[i + 1], "replica") == 0))
            from = strcmp(argv[++i], "primary") == 0 ? CTL_FROM_PRIMARY : CTL_FROM_REPLICA;
        else if (strcmp(argv[i], "--replica") == 0)
            from = CTL_FROM_REPLICA;
        else if (argv[i][0] != '-' && npos < 3)
            pos[npos++] = argv[i];
        else
            npos = 3;
    }
    if (npos < 1 || npos > 2) {
        fprintf(stderr, "Usage: backupctl download [--decode] [--from primary|replica] "
                        "BACKUP_ID|S3_KEY [FILE]\n");
        return 2;
    }
    return ctl_download(cfg, pos[0], pos[1], plain, from);
}

/* replicate --missing [USER | --all] [--dry-run] */
static int replicate_main(const Config *cfg, int argc, char **argv) {
    const char *user = NULL;
    char uid[37];
    int missing = 0, all = 0, dry = 0, bad = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--missing") == 0)
            missing = 1;
        else if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry = 1;
        else if (user == NULL && argv[i][0] != '-' && ctl_uuid_arg("user", argv[i], uid) == 0)
            user = uid;
        else
            bad = 1;
    }
    if (bad || !missing || all == (user != NULL)) {
        fprintf(stderr, "Usage: backupctl replicate --missing USER_ID | --all [--dry-run]\n");
        return 2;
    }
    return ctl_replicate_missing(cfg, user, dry);
}

/* ENCRYPTION=... (ids and where they come from, never a key); 2 when the settings are bad. */
static int print_encryption(const Config *cfg) {
    (void)cfg;
    Buf errs = BUF_INIT, d = BUF_INIT;
    int nerr = 0;
    Keys *k = keys_load(config_getenv_process, NULL, &errs, &nerr);
    if (nerr)
        printf("ENCRYPTION=invalid:\n%s", errs.data);
    else {
        keys_describe(k, &d);
        printf("ENCRYPTION=%s\n", d.data);
    }
    keys_free(k);
    buf_free(&errs);
    buf_free(&d);
    return nerr ? 2 : 0;
}

static int cmd_check(const Config *cfg) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    Check c;
    memset(&c, 0, sizeof(c));
    c.cfg = cfg;

    RedisOptions ro;
    config_redis_options(cfg, &ro);
    ro.name = "backupctl";
    ro.on_state = on_redis_state;
    ro.data = &c;
    c.redis = redis_client_new(&loop, &ro);
    c.pg = pg_conn_new(&loop, cfg->database_url, 10000, on_pg_connected, &c);

    HttpClient *http = http_client_new(&loop, 0);
    if (cfg->s3_endpoint)
        snprintf(c.s3_label, sizeof(c.s3_label), "%s", cfg->s3_endpoint);
    else
        snprintf(c.s3_label, sizeof(c.s3_label), "https://s3.%s.amazonaws.com", cfg->aws_region);
    S3Options so;
    config_s3_options(cfg, &so);
    so.max_attempts = 2;
    so.timeout_ms = 8000;
    S3Client *s3 = NULL;
    Storage *store = NULL;
    Err serr;
    if (cfg->store_path) {
        store = storage_file_new(&loop, cfg->store_path, &serr);
    } else {
        s3 = s3_client_new(&loop, http, &so);
        store = storage_s3_new(&loop, s3, (size_t)cfg->s3_part_size_mb << 20, 1);
    }
    if (store)
        storage_probe(store, on_store, &c);
    else
        on_store(NULL, &serr, &c);
    S3Options ro3;
    S3Client *replica = NULL;
    if (config_s3_replica_options(cfg, &ro3) == 0) {
        ro3.max_attempts = 2;
        ro3.timeout_ms = 8000;
        replica = s3_client_new(&loop, http, &ro3);
        s3_head_bucket(replica, on_replica, &c);
    } else {
        c.replica_done = 1;
    }
    uv_timer_init(&loop, &c.deadline);
    c.deadline.data = &c;
    uv_timer_start(&c.deadline, on_deadline, 10000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    s3_client_free(replica);
    storage_free(store);
    s3_client_free(s3);
    http_client_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    /* the keys are checked here too, not first at a restore */
    Buf errs = BUF_INIT, d = BUF_INIT;
    int nerr = 0;
    Keys *k = keys_load(config_getenv_process, NULL, &errs, &nerr);
    if (nerr) {
        for (char *line = strtok(errs.data, "\n"); line; line = strtok(NULL, "\n"))
            printf("keys      FAIL  %s\n", line);
        c.failures++;
    } else {
        Err e;
        keys_describe(k, &d);
        if (keys_probe(k, &so, &e) != 0) { /* so: the S3 settings, whose credentials KMS uses */
            printf("keys      FAIL  %s\n", e.msg);
            c.failures++;
        } else {
            printf("keys      ok    encryption %s\n", d.data);
        }
    }
    keys_free(k);
    buf_free(&errs);
    buf_free(&d);
    return c.failures ? 1 : 0;
}

int main(int argc, char **argv) {
    /* Part buffers are megabytes each: keep them mmapped so a freed one goes back to the
     * system at once, instead of glibc's adaptive threshold parking it on the heap. */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("backupctl %s\n", BW_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    int queue_cmd =
        strcmp(cmd, "jobs") == 0 || strcmp(cmd, "dead") == 0 || strcmp(cmd, "ping") == 0;
    if (strcmp(cmd, "check") != 0 && strcmp(cmd, "config") != 0 && strcmp(cmd, "s3") != 0 &&
        strcmp(cmd, "scope") != 0 && strcmp(cmd, "reindex") != 0 && strcmp(cmd, "download") != 0 &&
        strcmp(cmd, "rekey") != 0 && strcmp(cmd, "replicate") != 0 && !queue_cmd &&
        !ctl_jobs_has(cmd)) {
        fprintf(stderr, "backupctl: unknown command '%s' (see backupctl --help)\n", cmd);
        return 2;
    }
    Config cfg;
    Buf errors = BUF_INIT;
    if (config_load(&cfg, config_getenv_process, NULL, &errors) > 0) {
        fprintf(stderr, "backupctl: invalid configuration:\n%s", errors.data);
        buf_free(&errors);
        config_free(&cfg);
        return 2;
    }
    buf_free(&errors);
    log_init(LOG_ERROR, LOG_TEXT, NULL);
    int rc = 0;
    if (strcmp(cmd, "s3") == 0) {
        rc = ctl_s3_main(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "scope") == 0) {
        rc = ctl_scope_main(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "reindex") == 0) {
        rc = ctl_recover_main(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "replicate") == 0) {
        rc = replicate_main(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "rekey") == 0) {
        rc = ctl_rekey_main(&cfg, argc - 2, argv + 2);
    } else if (strcmp(cmd, "download") == 0) {
        rc = download_main(&cfg, argc - 2, argv + 2);
    } else if (ctl_jobs_has(cmd)) {
        rc = ctl_jobs_main(&cfg, cmd, argc - 2, argv + 2);
    } else if (queue_cmd) {
        rc = ctl_queue_main(&cfg, cmd, argc - 2, argv + 2);
    } else if (strcmp(cmd, "config") == 0) {
        char redis[256], db[512];
        connurl_redact(cfg.redis_url, redis, sizeof(redis));
        connurl_redact(cfg.database_url, db, sizeof(db));
        printf("REDIS_URL=%s\nDATABASE_URL=%s\nS3_ENDPOINT=%s\nS3_BUCKET=%s\nAWS_REGION=%s\n",
               redis, db, cfg.s3_endpoint ? cfg.s3_endpoint : "(AWS)", cfg.s3_bucket,
               cfg.aws_region);
        if (cfg.s3_replica_bucket) /* never its secret key, only whether it has its own */
            printf("S3_REPLICA_BUCKET=%s\nS3_REPLICA_REGION=%s\nS3_REPLICA_ENDPOINT=%s\n"
                   "S3_REPLICA_COPY=%s\nS3_REPLICA_CREDENTIALS=%s\n",
                   cfg.s3_replica_bucket,
                   cfg.s3_replica_region ? cfg.s3_replica_region : cfg.aws_region,
                   cfg.s3_replica_endpoint ? cfg.s3_replica_endpoint : "(AWS)",
                   cfg.s3_replica_server_copy ? "server" : "stream",
                   cfg.s3_replica_access_key_id ? "its own" : "the primary's");
        else
            printf("S3_REPLICA_BUCKET=(none: no replica)\n");
        rc = print_encryption(&cfg);
    } else {
        rc = cmd_check(&cfg);
    }
    config_free(&cfg);
    return rc;
}
