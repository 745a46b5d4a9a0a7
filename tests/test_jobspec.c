/* jobspec: strict decoding of flat and msgpack job entries. */
#include "jobs/jobspec.h"
#include "jobs/jobs.h"
#include "queue/qmetrics.h"

#include <msgpack.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define U1 "0b7d7c1e-4a2b-4c3d-8e9f-0123456789ab"
#define U2 "11111111-2222-4333-8444-555555555555"

/* Decode alternating name/value strings (NULL-terminated). */
static int decode(JobSpec *spec, Err *err, ...) {
    JobField f[40];
    size_t n = 0;
    va_list ap;
    va_start(ap, err);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        f[n].name = name;
        f[n].name_len = strlen(name);
        f[n].value = value;
        f[n].value_len = strlen(value);
        n++;
    }
    va_end(ap);
    err_clear(err);
    return jobspec_decode(spec, f, n, "1700000000000-0", 1, err);
}

static void expect_error(int rc, const Err *err, const char *needle) {
    assert_int_equal(rc, -1);
    assert_int_equal(err->kind, ERR_PERMANENT);
    if (strstr(err->msg, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err->msg, needle);
}

static void test_flat_valid(void **state) {
    (void)state;
    JobSpec s;
    Err e;
    assert_int_equal(decode(&s, &e, "type", "backup", "user_id", U1, "mode", "incremental", NULL),
                     0);
    assert_string_equal(s.type, "backup");
    assert_string_equal(s.user_id, U1);
    assert_string_equal(s.mode, "incremental");
    assert_string_equal(s.job_id, "1700000000000-0"); /* defaults to the entry id */
    assert_string_equal(s.trigger, "api");

    assert_int_equal(decode(&s, &e, "type", "backup", "user_id",
                            "0B7D7C1E-4A2B-4C3D-8E9F-0123456789AB", "job_id", "nightly:42",
                            "trigger", "scheduled", NULL),
                     0);
    assert_string_equal(s.user_id, U1); /* lowercased: keys and queries see one spelling */
    assert_string_equal(s.mode, "full");
    assert_string_equal(s.job_id, "nightly:42");

    assert_int_equal(decode(&s, &e, "type", "restore", "user_id", U1, "backup_id",
                            "backup-" U1 "-1732790000000", "tables", "orders,order_items", NULL),
                     0);
    assert_int_equal(s.ntables, 2);
    assert_string_equal(s.tables[1], "order_items");

    assert_int_equal(decode(&s, &e, "type", "cleanup", "scope", "all", NULL), 0);
    assert_int_equal(s.scope_all, 1);
    assert_int_equal(decode(&s, &e, "type", "cleanup", "user_id", U1, "requested_by", U2,
                            "retention_days", "14", NULL),
                     0);
    assert_int_equal(s.retention_days, 14);
    assert_string_equal(s.requested_by, U2);
    assert_int_equal(decode(&s, &e, "type", "ping", NULL), 0);
    assert_int_equal(decode(&s, &e, "type", "sleep", "ms", "250", "fail", "retryable",
                            "fail_attempts", "2", NULL),
                     0);
    assert_int_equal(s.sleep_ms, 250);
    assert_int_equal(s.fail_permanent, 0);
    assert_int_equal(s.fail_attempts, 2);
}

static void test_flat_invalid(void **state) {
    (void)state;
    JobSpec s;
    Err e;
    expect_error(decode(&s, &e, "user_id", U1, NULL), &e, "missing field 'type'");
    expect_error(decode(&s, &e, "type", "explode", NULL), &e,
                 "field 'type': 'explode' is not a job type");
    expect_error(decode(&s, &e, "type", "backup", NULL), &e, "missing field 'user_id'");
    expect_error(decode(&s, &e, "type", "backup", "user_id", "not-a-uuid", NULL), &e,
                 "field 'user_id': 'not-a-uuid' is not a UUID");
    expect_error(decode(&s, &e, "type", "backup", "user_id", U1 "x", NULL), &e, "is not a UUID");
    expect_error(decode(&s, &e, "type", "backup", "user_id", U1, "mode", "everything", NULL), &e,
                 "is not full, incremental or differential");
    expect_error(decode(&s, &e, "type", "backup", "user_id", U1, "user_id", U1, NULL), &e,
                 "field 'user_id' given twice");
    expect_error(decode(&s, &e, "type", "backup", "user_id", U1, "colour", "red", NULL), &e,
                 "field 'colour' is not part of a backup job");
    expect_error(decode(&s, &e, "type", "restore", "user_id", U1, NULL), &e,
                 "missing field 'backup_id' (the backup to restore) or 'at'");
    /* a point in time: a time with its offset, or an LSN; never both a backup and a point */
    const char *ats[] = {"2026-12-07T09:14:00+01:00", "2026-12-07T09:14:00.123456Z",
                         "2026-12-07 09:14:00-05:30", "16/B374D848", "0/0"};
    for (size_t i = 0; i < sizeof(ats) / sizeof(ats[0]); i++) {
        assert_int_equal(decode(&s, &e, "type", "restore", "user_id", U1, "at", ats[i], NULL), 0);
        assert_string_equal(s.at, ats[i]);
        assert_int_equal(jobspec_at_kind(ats[i], strlen(ats[i])), strchr(ats[i], '/') ? 'l' : 't');
    }
    const char *bad_ats[] = {"2026-12-07T09:14:00",
                             "2026-12-07",
                             "yesterday",
                             "2026-13-07T09:14:00Z",
                             "2026-12-07T25:14:00Z",
                             "2026-12-07T09:14:00+1",
                             "/0",
                             "0/",
                             "123456789/0",
                             "G/0",
                             "2026-12-07T09:14:00.Z",
                             "2026-12-07T09:14:00Z'; DROP TABLE x"};
    for (size_t i = 0; i < sizeof(bad_ats) / sizeof(bad_ats[0]); i++)
        expect_error(decode(&s, &e, "type", "restore", "user_id", U1, "at", bad_ats[i], NULL), &e,
                     "is not a time with its offset");
    expect_error(decode(&s, &e, "type", "restore", "user_id", U1, "at", "16/B374D848", "backup_id",
                        "backup-" U1 "-1", NULL),
                 &e, "both 'backup_id' and 'at'");
    expect_error(
        decode(&s, &e, "type", "restore", "user_id", U1, "backup_id", "backup-../../etc-1", NULL),
        &e, "is not a backup id");
    expect_error(decode(&s, &e, "type", "restore", "user_id", U1, "backup_id", "backup-" U1 "-1",
                        "tables", "orders;drop table x", NULL),
                 &e, "must be table names");
    expect_error(decode(&s, &e, "type", "restore", "user_id", U1, "backup_id", "backup-" U1 "-1",
                        "tables", "orders,orders", NULL),
                 &e, "names a table twice");
    expect_error(decode(&s, &e, "type", "cleanup", "scope", "all", "user_id", U1, NULL), &e,
                 "drop the field 'user_id'");
    expect_error(decode(&s, &e, "type", "cleanup", "user_id", U1, "retention_days", "-1", NULL), &e,
                 "is not a number of days");
    expect_error(decode(&s, &e, "type", "ping", "job_id", "a b", NULL), &e,
                 "field 'job_id': 'a b' must be");
    { /* a NUL inside the value (redis-cli -x can send one): refused, not cut short */
        JobField nul[] = {{"type", 4, "ping", 4}, {"job_id", 6, "victim-job\0xyz", 14}};
        expect_error(jobspec_decode(&s, nul, 2, "1-0", 0, &e), &e, "field 'job_id'");
    }
    expect_error(decode(&s, &e, "type", "ping", "job_id", "", NULL), &e, "field 'job_id'");

    /* a rejected job with a valid job_id still reports under that id */
    expect_error(decode(&s, &e, "type", "nope", "job_id", "web-7", NULL), &e, "not a job type");
    assert_string_equal(s.job_id, "web-7");

    /* binary garbage is quoted escaped and cut short */
    char garbage[2000];
    for (size_t i = 0; i < sizeof(garbage) - 1; i++)
        garbage[i] = (char)(1 + i % 250);
    garbage[sizeof(garbage) - 1] = '\0';
    expect_error(decode(&s, &e, "type", "backup", "user_id", garbage, NULL), &e, "bytes)");
    assert_true(strlen(e.msg) < 300);
    assert_null(strchr(e.msg, '\n'));

    /* test types only when enabled */
    JobField f = {"type", 4, "sleep", 5};
    err_clear(&e);
    expect_error(jobspec_decode(&s, &f, 1, "1-0", 0, &e), &e, "not a job type");
    err_clear(&e);
    expect_error(jobspec_decode(&s, &f, 0, "1-0", 0, &e), &e, "empty entry");
}

static JobField packed(msgpack_sbuffer *sb) {
    JobField f = {"msgpack", 7, sb->data, sb->size};
    return f;
}

static void pack_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void test_msgpack(void **state) {
    (void)state;
    JobSpec s;
    Err e;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "type");
    pack_str(&pk, "cleanup");
    pack_str(&pk, "user_id");
    pack_str(&pk, U1);
    pack_str(&pk, "retention_days");
    msgpack_pack_int(&pk, 7);
    pack_str(&pk, "job_id");
    pack_str(&pk, "mp-1");
    JobField f = packed(&sb);
    err_clear(&e);
    assert_int_equal(jobspec_decode(&s, &f, 1, "1-0", 0, &e), 0);
    assert_string_equal(s.type, "cleanup");
    assert_int_equal(s.retention_days, 7);
    assert_string_equal(s.job_id, "mp-1");

    /* trailing bytes */
    msgpack_pack_nil(&pk);
    f = packed(&sb);
    expect_error(jobspec_decode(&s, &f, 1, "1-0", 0, &e), &e, "1 bytes after the map");
    msgpack_sbuffer_destroy(&sb);

    /* sizes the bytes cannot hold: refused before msgpack-c allocates them (a map header
     * claiming 4 billion entries asked it for 64 GiB) */
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } hostile[] = {
        {"\xdf\xff\xff\xff\xff", 5, "declares 8589934590 elements"},
        {"\x81\xa4type\xdd\xff\xff\xff\xff", 11, "declares 4294967295 elements"},
        {"\x81\xa4type\xdb\xff\xff\xff\xf0xx", 13, "declares 4294967280 bytes"},
        {"\x81\xa4type\xc9\x7f\xff\xff\xff\x01", 12, "declares 2147483648 bytes"},
        {"\x81\xa4typ", 5, "declares 4 bytes"},
        {"\x81\xc1\x01", 3, "is not a msgpack type"},
        {"\x82\xa1"
         "a",
         3, "declares 4 elements"},
        {"\x81\xa1"
         "a\xcd\x01",
         4, "declares 2 bytes"},
        {"\xdc\x00", 2, "truncated"},
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        JobField h = {"msgpack", 7, hostile[i].bytes, hostile[i].len};
        expect_error(jobspec_decode(&s, &h, 1, "1-0", 0, &e), &e, hostile[i].why);
    }

    /* wrong shapes */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    pack_str(&pk, "type");
    pack_str(&pk, "ping");
    f = packed(&sb);
    expect_error(jobspec_decode(&s, &f, 1, "1-0", 0, &e), &e, "must hold a map");
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "type");
    pack_str(&pk, "backup");
    pack_str(&pk, "user_id");
    msgpack_pack_true(&pk);
    f = packed(&sb);
    expect_error(jobspec_decode(&s, &f, 1, "1-0", 0, &e), &e,
                 "the value of 'user_id' must be a string");
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "ping");
    f = packed(&sb);
    expect_error(jobspec_decode(&s, &f, 1, "1-0", 0, &e), &e, "key 1 is not a string");
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "type");
    pack_str(&pk, "ping");
    f = packed(&sb);
    JobField two[2] = {f, {"type", 4, "ping", 4}};
    expect_error(jobspec_decode(&s, two, 2, "1-0", 0, &e), &e, "must be the only field");
    JobField with_id[2] = {f, {"job_id", 6, "again-1", 7}};
    err_clear(&e);
    assert_int_equal(jobspec_decode(&s, with_id, 2, "1-0", 0, &e), 0);
    assert_string_equal(s.job_id, "again-1");
    msgpack_sbuffer_destroy(&sb);

    JobField junk = {"msgpack", 7, "\xc1\xff\x00", 3};
    expect_error(jobspec_decode(&s, &junk, 1, "1-0", 0, &e), &e, "not valid msgpack");
    JobField empty = {"msgpack", 7, "", 0};
    expect_error(jobspec_decode(&s, &empty, 1, "1-0", 0, &e), &e, "not valid msgpack");
}

/* Every registered job type is known everywhere that derives from the registry: its own
 * metrics label (not "invalid"), the worker's --help, the decoder (with its own fields), and
 * the TypeScript protocol's JobType union. */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    fclose(f);
    s[n] = '\0';
    return s;
}

static void test_registry(void **state) {
    (void)state;
    size_t n;
    const JobType *const *types = job_types(&n);
    assert_true(n >= 7);
    QMetrics *m = qmetrics_new();
    Buf metrics = BUF_INIT;
    qmetrics_write(m, &metrics);
    buf_append(&metrics, "", 1);
    char *help = NULL;
    size_t helplen = 0;
    FILE *h = open_memstream(&help, &helplen);
    jobs_print_help(h);
    fclose(h);
    char *ts = slurp(PROTOCOL_TS);
    const char *union_line = strstr(ts, "export type JobType =");
    assert_non_null(union_line);
    size_t union_len = strcspn(union_line, ";");
    for (size_t i = 0; i < n; i++) {
        const JobType *t = types[i];
        char want[128];
        assert_non_null(t->name);
        assert_non_null(t->fields);
        assert_non_null(t->summary);
        assert_non_null(t->run);
        assert_ptr_equal(job_type_find(t->name), t);
        snprintf(want, sizeof(want), "bw_jobs_started_total{type=\"%s\"}", t->name);
        assert_non_null(strstr(metrics.data, want));
        /* decoded as itself, each of its fields accepted by name */
        JobSpec spec;
        Err err;
        err_clear(&err);
        JobField f[1] = {{"type", 4, t->name, strlen(t->name)}};
        if (jobspec_decode(&spec, f, 1, "1-1", 1, &err) == 0)
            assert_string_equal(spec.type, t->name);
        else /* refused for a missing field, never as an unknown type */
            assert_null(strstr(err.msg, "is not a job type"));
        if (t->test_only)
            continue;
        snprintf(want, sizeof(want), "\n  %-10s ", t->name);
        assert_non_null(strstr(help, want));
        snprintf(want, sizeof(want), "'%s'", t->name);
        char *hit = strstr(union_line, want);
        assert_true(hit != NULL && (size_t)(hit - union_line) < union_len);
        /* and the client accepts exactly its fields: ALLOWED's camelCase names, as the wire's */
        snprintf(want, sizeof(want), "\n  %s: [", t->name);
        const char *row = strstr(strstr(ts, "const ALLOWED"), want);
        assert_non_null(row);
        char wire[256] = "";
        size_t w = 0;
        for (const char *p = row + strlen(want); *p && *p != ']'; p++) {
            if (*p == '\'' || *p == ' ')
                continue;
            if (*p == ',')
                wire[w++] = ' ';
            else if (*p >= 'A' && *p <= 'Z') {
                wire[w++] = '_';
                wire[w++] = (char)(*p - 'A' + 'a');
            } else
                wire[w++] = *p;
            assert_true(w < sizeof(wire) - 2);
        }
        wire[w] = '\0';
        assert_string_equal(wire, t->fields);
    }
    /* an entry naming no type is labelled invalid */
    qmetrics_add(m, "no-such-type", QM_STARTED, 1);
    buf_reset(&metrics);
    qmetrics_write(m, &metrics);
    buf_append(&metrics, "", 1);
    assert_non_null(strstr(metrics.data, "bw_jobs_started_total{type=\"invalid\"} 1"));
    buf_free(&metrics);
    qmetrics_free(m);
    free(help);
    free(ts);
}

static void test_validators(void **state) {
    (void)state;
    assert_true(jobspec_valid_uuid(U1, 36));
    assert_false(jobspec_valid_uuid(U1, 35));
    assert_false(jobspec_valid_uuid("0b7d7c1e-4a2b-4c3d-8e9f+0123456789ab", 36));
    assert_true(
        jobspec_valid_backup_id("incremental-" U1 "-abc123", strlen("incremental-" U1 "-abc123")));
    assert_false(jobspec_valid_backup_id("incremental-" U1 "-", strlen("incremental-" U1 "-")));
    assert_false(jobspec_valid_backup_id("full-" U1 "-1", strlen("full-" U1 "-1")));
    assert_false(jobspec_valid_backup_id("backup-" U1 "-a/b", strlen("backup-" U1 "-a/b")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_valid), cmocka_unit_test(test_flat_invalid),
        cmocka_unit_test(test_msgpack),    cmocka_unit_test(test_validators),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
