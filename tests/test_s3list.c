/*
 * test_s3list: 2,500 keys listed across pages and deleted in batches of 1000
 * against the local S3 server; XML entity handling.
 */
#include "testutil.h"
#include "s3list.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 2500

typedef struct {
    int puts_done, put_errors;
    int listed_done;
    uint64_t count;
    int pages;
    int seen[NKEYS + 1];
    int odd_key_seen;
    int deleted_done;
    size_t deleted, failed;
    Err err;
    int failed_list;
} State;

static void on_put(const S3Result *res, const Err *err, void *data) {
    (void)res;
    State *s = data;
    s->puts_done++;
    s->put_errors += err != NULL;
}

static int on_page(const S3Object *objs, size_t n, void *data) {
    State *s = data;
    s->pages++;
    for (size_t i = 0; i < n; i++) {
        int k = -1;
        if (sscanf(objs[i].key, "test-list/k-%d", &k) == 1 && k >= 0 && k < NKEYS)
            s->seen[k]++;
        if (strcmp(objs[i].key, "test-list/odd key é+~") == 0 && objs[i].size == 3)
            s->odd_key_seen++;
    }
    return 0;
}

static void on_listed(uint64_t count, const Err *err, void *data) {
    State *s = data;
    s->listed_done = 1;
    s->count = count;
    s->failed_list = err != NULL;
    if (err)
        s->err = *err;
}

static void on_deleted(size_t deleted, size_t failed, const Err *err, void *data) {
    State *s = data;
    s->deleted_done = 1;
    s->deleted = deleted;
    s->failed = failed;
    if (err)
        s->err = *err;
}

static void test_list_and_delete_2500(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    HttpClient *http = http_client_new(&loop, 0);
    S3Options o;
    tu_s3_options(&o);
    S3Client *s3 = s3_client_new(&loop, http, &o);
    State *s = calloc(1, sizeof(*s));

    char **keys = calloc(NKEYS + 1, sizeof(char *));
    for (int i = 0; i < NKEYS; i++) {
        char key[64];
        snprintf(key, sizeof(key), "test-list/k-%05d", i);
        keys[i] = strdup(key);
        s3_put_object(s3, key, "x", 1, NULL, on_put, s);
    }
    keys[NKEYS] = strdup("test-list/odd key é+~");
    s3_put_object(s3, keys[NKEYS], "abc", 3, NULL, on_put, s);
    while (s->puts_done < NKEYS + 1)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(s->put_errors, 0);

    s3_list(s3, "test-list/", 1000, on_page, on_listed, s);
    assert_true(tu_run_until(&loop, &s->listed_done, 60000));
    if (s->failed_list)
        print_error("list: %s\n", s->err.msg);
    assert_false(s->failed_list);
    printf("listed %llu keys in %d pages\n", (unsigned long long)s->count, s->pages);
    assert_true(s->count == NKEYS + 1);
    assert_int_equal(s->pages, 3);
    for (int i = 0; i < NKEYS; i++)
        assert_int_equal(s->seen[i], 1);
    assert_int_equal(s->odd_key_seen, 1);

    s3_delete_keys(s3, (const char *const *)keys, NKEYS + 1, on_deleted, s);
    assert_true(tu_run_until(&loop, &s->deleted_done, 60000));
    if (s->failed)
        print_error("delete: %s\n", s->err.msg);
    assert_int_equal(s->deleted, NKEYS + 1);
    assert_int_equal(s->failed, 0);

    s->listed_done = 0;
    s->count = 99;
    s3_list(s3, "test-list/", 1000, on_page, on_listed, s);
    assert_true(tu_run_until(&loop, &s->listed_done, 20000));
    assert_true(s->count == 0);

    for (int i = 0; i <= NKEYS; i++)
        free(keys[i]);
    free(keys);
    free(s);
    s3_client_free(s3);
    http_client_free(http);
    tu_loop_close(&loop);
}

static void test_xml(void **state) {
    (void)state;
    char text[] = "a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#233; &#x1F600; &bogus; &";
    s3_xml_decode(text);
    assert_string_equal(text, "a & b <c> \"d\" 'e' \xc3\xa9 \xf0\x9f\x98\x80 &bogus; &");
    Buf b = BUF_INIT;
    s3_xml_escape(&b, "<a href=\"x\">&'</a>");
    assert_string_equal(b.data, "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;");
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml),
        cmocka_unit_test(test_list_and_delete_2500),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
