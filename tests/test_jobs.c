/*
 * test_jobs: the backup and restore state machines driven in process (no queue:
 * fakejob.c), over the real PostgreSQL and the in-memory store, where faults
 * are cheap to plan:
 *   - a backup completes: object and manifest stored, the record's checksum is
 *     the stored object's SHA-256, the connection is back in the pool;
 *   - the store refuses the write half-way: the job ends once, failed for good,
 *     AccessDenied named, nothing stored, the row failed, no transaction left;
 *   - the manifest is refused: the same, the row failed without a checksum;
 *   - a cancel in the middle of a COPY: ends once, retryable, the row pending;
 *   - a restore from the store completes; of an object damaged in the store it is
 *     refused (`Backup checksum verification failed`) and no row changes.
 */
#include "fakejob.h"
#include "jobs/jobrt.h"
#include "jobs/jobs.h"
#include "pg/pgpool.h"
#include "storage/storage_mem.h"
#include "testutil.h"

#include <libpq-fe.h>
#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define USER "70b50001-0000-4000-8000-000000000001"

typedef struct {
    uv_loop_t loop;
    PgPool *pool;
    Storage *store;
    Config cfg;
    JobConfig jcfg;
    Services sv;
    PGconn *db; /* the test's own, blocking */
} Env;

static Env env;

static char *sql1(const char *sql) { /* the first value of a query, copied ("" if none) */
    PGresult *r = PQexec(env.db, sql);
    assert_true(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    char *v = strdup(PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return v;
}

static void exec_sql(const char *sql) {
    free(sql1(sql));
}

static int setup(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s --user %s --orders 400 --seed tj1 >/dev/null", DATAGEN, USER);
    if (system(cmd) != 0)
        return -1;
    uv_loop_init(&env.loop);
    env.pool = pg_pool_new(&env.loop, tu_env("DATABASE_URL"), 4, 10000);
    env.store = storage_mem_new(&env.loop);
    env.jcfg = (JobConfig){.backup_retention_days = 30,
                           .backup_codecs = "gzip",
                           .backup_compression = 1,
                           .backup_compression_level = 1,
                           .job_max_attempts = 1};
    env.sv = (Services){env.pool, env.store, &env.cfg, &env.jcfg};
    env.db = PQconnectdb(tu_env("DATABASE_URL"));
    if (PQstatus(env.db) != CONNECTION_OK)
        return -1;
    exec_sql("DELETE FROM backup_metadata WHERE user_id = '" USER "'");
    /* a known state to back up, whatever an earlier run left */
    exec_sql("UPDATE orders SET notes = 'as backed up' WHERE user_id = '" USER "'");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    PQfinish(env.db);
    pg_pool_free(env.pool);
    storage_free(env.store);
    tu_loop_close(&env.loop);
    return 0;
}

/* Run one job of type with the spec's fields to its end; asserts it ended exactly once. */
static void run_job(Job *job, const char *type, const char *job_id, const char *mode,
                    const char *backup_id) {
    JobSpec spec;
    memset(&spec, 0, sizeof(spec));
    snprintf(spec.type, sizeof(spec.type), "%s", type);
    snprintf(spec.job_id, sizeof(spec.job_id), "%s", job_id);
    snprintf(spec.user_id, sizeof(spec.user_id), "%s", USER);
    snprintf(spec.mode, sizeof(spec.mode), "%s", mode ? mode : "");
    snprintf(spec.backup_id, sizeof(spec.backup_id), "%s", backup_id ? backup_id : "");
    void (*hook)(Job *, const char *, void *) = job->on_progress;
    void *hook_data = job->hook_data;
    fakejob_init(job, &env.loop, &env.sv, &spec);
    job->on_progress = hook;
    job->hook_data = hook_data;
    const JobType *t = job_type_find(type);
    assert_non_null(t);
    t->run(job);
    assert_true(tu_run_until(&env.loop, &job->done, 60000));
    tu_run_for(&env.loop, 50); /* nothing may follow the end */
    assert_int_equal(job->ndone, 1);
}

static char *row_of(const char *job_id, const char *col) {
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(%s::text, '') FROM backup_metadata WHERE job_id = '%s'", col, job_id);
    return sql1(sql);
}

static void assert_no_open_transaction(void) {
    /* the pool's connections are idle, none inside a transaction the job left behind */
    char *n = sql1("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                   "AND pid <> pg_backend_pid()");
    assert_string_equal(n, "0");
    free(n);
}

static char full_id[160], full_key[300];

static void test_a_backup_completes_into_the_store(void **state) {
    (void)state;
    Job job = {0};
    run_job(&job, "backup", "tj-full", "full", NULL);
    assert_false(job.failed);
    char *key = row_of("tj-full", "s3_key"), *sum = row_of("tj-full", "checksum");
    char *status = row_of("tj-full", "status");
    assert_string_equal(status, "completed");
    size_t len = 0;
    const char *obj = storage_mem_object(storage_mem_of(env.store), key, &len);
    assert_non_null(obj);
    unsigned char md[32];
    char hex[65];
    SHA256((const unsigned char *)obj, len, md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(hex, sum);
    char mkey[320];
    snprintf(mkey, sizeof(mkey), "%s.manifest.json", key);
    assert_non_null(storage_mem_object(storage_mem_of(env.store), mkey, &len));
    snprintf(full_id, sizeof(full_id), "%s", job.backup_id);
    snprintf(full_key, sizeof(full_key), "%s", key);
    assert_true(pg_pool_idle(env.pool) >= 1);
    assert_no_open_transaction();
    free(key);
    free(sum);
    free(status);
}

static void test_a_refused_write_tears_down_once(void **state) {
    (void)state;
    storage_mem_fail_write_after(storage_mem_of(env.store), 2000);
    Job job = {0};
    run_job(&job, "backup", "tj-refused", "full", NULL);
    assert_true(job.failed);
    assert_int_equal(job.err.kind, ERR_PERMANENT);
    assert_non_null(strstr(job.err.msg, "AccessDenied"));
    char *key = row_of("tj-refused", "s3_key"), *status = row_of("tj-refused", "status");
    assert_string_equal(status, "failed");
    size_t len;
    assert_null(storage_mem_object(storage_mem_of(env.store), key, &len));
    assert_int_equal(storage_mem_open_streams(storage_mem_of(env.store)), 0);
    assert_no_open_transaction();
    free(key);
    free(status);
}

static void test_a_refused_manifest_fails_the_backup(void **state) {
    (void)state;
    storage_mem_fail_key(storage_mem_of(env.store), "manifest.json", "AccessDenied");
    Job job = {0};
    run_job(&job, "backup", "tj-manifest", "full", NULL);
    storage_mem_fail_key(storage_mem_of(env.store), "", "");
    assert_true(job.failed);
    assert_non_null(strstr(job.err.msg, "AccessDenied"));
    char *status = row_of("tj-manifest", "status"), *sum = row_of("tj-manifest", "checksum");
    assert_string_equal(status, "failed");
    assert_string_equal(sum, "");
    assert_no_open_transaction();
    free(status);
    free(sum);
}

static void on_cancel_timer(uv_timer_t *t) {
    jobrt_cancel(t->data);
}

/* Once the orders are being read, the queue's cancel arrives (from a timer, as from its tick). */
static void cancel_in_orders(Job *job, const char *stage, void *data) {
    uv_timer_t *t = data;
    if (strcmp(stage, "order_items") == 0 && !uv_is_active((uv_handle_t *)t) && t->data == NULL) {
        t->data = job;
        uv_timer_start(t, on_cancel_timer, 0, 0);
    }
}

static void test_a_cancel_mid_copy_ends_once_and_retryable(void **state) {
    (void)state;
    static uv_timer_t t; /* outlives its close */
    uv_timer_init(&env.loop, &t);
    t.data = NULL;
    Job job = {0};
    job.on_progress = cancel_in_orders;
    job.hook_data = &t;
    run_job(&job, "backup", "tj-cancel", "full", NULL);
    uv_close((uv_handle_t *)&t, NULL);
    tu_run_for(&env.loop, 10);
    assert_true(job.failed);
    assert_int_equal(job.err.code, ERR_CODE_CANCELLED);
    assert_int_equal(job.err.kind, ERR_RETRYABLE);
    char *key = row_of("tj-cancel", "s3_key"), *status = row_of("tj-cancel", "status");
    assert_string_equal(status, "pending"); /* a retry runs it again */
    size_t len;
    assert_null(storage_mem_object(storage_mem_of(env.store), key, &len));
    assert_no_open_transaction();
    free(key);
    free(status);
}

static void test_restore_from_the_store_and_a_damaged_object(void **state) {
    (void)state;
    assert_true(full_id[0]);
    exec_sql("UPDATE orders SET notes = 'after the backup' WHERE user_id = '" USER "'");
    Job job = {0};
    run_job(&job, "restore", "tj-restore", NULL, full_id);
    assert_false(job.failed);
    char *back = sql1("SELECT count(*) FILTER (WHERE notes = 'as backed up') = count(*) AND "
                      "count(*) = 400 FROM orders WHERE user_id = '" USER "'");
    assert_string_equal(back, "t"); /* every order as the backup saw it */
    free(back);

    size_t len = 0;
    const char *obj = storage_mem_object(storage_mem_of(env.store), full_key, &len);
    char *bad = malloc(len);
    memcpy(bad, obj, len);
    bad[len / 2] ^= 0x01;
    storage_mem_set(storage_mem_of(env.store), full_key, bad, len);
    free(bad);
    exec_sql("UPDATE orders SET notes = 'after the backup' WHERE user_id = '" USER "'");
    Job again = {0};
    run_job(&again, "restore", "tj-restore-bad", NULL, full_id);
    assert_true(again.failed);
    assert_non_null(strstr(again.err.msg, "Backup checksum verification failed"));
    char *kept = sql1("SELECT count(*) = (SELECT count(*) FROM orders WHERE user_id = '" USER
                      "') FROM orders WHERE user_id = '" USER "' AND notes = 'after the backup'");
    assert_string_equal(kept, "t"); /* refused before any row changed */
    free(kept);
    assert_no_open_transaction();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_backup_completes_into_the_store),
        cmocka_unit_test(test_a_refused_write_tears_down_once),
        cmocka_unit_test(test_a_refused_manifest_fails_the_backup),
        cmocka_unit_test(test_a_cancel_mid_copy_ends_once_and_retryable),
        cmocka_unit_test(test_restore_from_the_store_and_a_damaged_object),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
