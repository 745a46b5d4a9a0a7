/*
 * test_base: buffers, errors, log lines and the loop-lag monitor.
 */
#include "testutil.h"
#include "base/backoff.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/looplag.h"
#include "base/strmap.h"

#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_buf(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%d,", i);
    assert_int_equal(b.len, strlen(b.data));
    assert_memory_equal(b.data, "0,1,2,", 6);
    buf_consume(&b, 2);
    assert_memory_equal(b.data, "1,2,", 4);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    buf_json_escape(&b, "a\"b\\c\nd\x01\xf0\x9f\x98\x80", 12);
    assert_string_equal(b.data, "a\\\"b\\\\c\\nd\\u0001\xf0\x9f\x98\x80");
    char *s = buf_steal(&b);
    assert_null(b.data);
    free(s);
    buf_free(&b);
}

/* strmap against a plain model: random puts and deletes over a small key space (so that runs
 * collide and deletions shift entries back), checked after every step. */
static void test_strmap(void **state) {
    (void)state;
    StrMap *m = strmap_new();
    int model[300];
    for (int i = 0; i < 300; i++)
        model[i] = -1;
    unsigned seed = 7;
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % 300);
        char key[16];
        snprintf(key, sizeof(key), "k%d", k);
        if ((seed >> 20) % 3 == 0) {
            void *v = strmap_del(m, key);
            assert_int_equal(v ? (int)(intptr_t)v - 1 : -1, model[k]);
            model[k] = -1;
        } else {
            void *v = strmap_put(m, key, (void *)(intptr_t)(step + 1));
            assert_int_equal(v ? (int)(intptr_t)v - 1 : -1, model[k]);
            model[k] = step;
        }
        if (step % 97 == 0) {
            size_t n = 0;
            for (int i = 0; i < 300; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                void *v = strmap_get(m, key);
                assert_int_equal(v ? (int)(intptr_t)v - 1 : -1, model[i]);
                n += model[i] >= 0;
            }
            assert_int_equal(strmap_count(m), n);
            size_t pos = 0, seen = 0;
            const char *kk;
            void *vv;
            while (strmap_next(m, &pos, &kk, &vv))
                seen++;
            assert_int_equal(seen, n);
        }
    }
    strmap_free(m, NULL);
}

static void test_err(void **state) {
    (void)state;
    Err e;
    err_clear(&e);
    assert_false(err_is_set(&e));
    err_set(&e, ERR_RETRYABLE, ERR_CODE_TIMEOUT, "took %d ms", 5);
    assert_true(err_is_set(&e));
    err_prefix(&e, "redis %s", "ping");
    assert_string_equal(e.msg, "redis ping: took 5 ms");
    assert_string_equal(err_code_name(e.code), "timeout");
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID, "%s", big);
    err_prefix(&e, "ctx");
    assert_int_equal(strlen(e.msg), ERR_MSG_MAX - 1);
    err_set(NULL, ERR_PERMANENT, ERR_CODE_INVALID, "ignored");
}

static void test_log_json(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    log_init(LOG_INFO, LOG_JSON, f);
    log_debug("job-1", "hidden");
    log_info("job-\"7\"", "line with \"quotes\"\nand newline");
    log_init(LOG_INFO, LOG_TEXT, f);
    log_warn(NULL, "plain %d", 3);
    fclose(f);
    log_init(LOG_INFO, LOG_TEXT, NULL);
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, "\"level\":\"info\",\"id\":\"job-\\\"7\\\"\","
                                 "\"msg\":\"line with \\\"quotes\\\"\\nand newline\"}\n"));
    assert_non_null(strstr(text, "warn  plain 3\n"));
    /* every JSON line is one line */
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[-1], '}');
    free(text);
    LogLevel lv;
    assert_int_equal(log_level_parse("ERROR", &lv), 0);
    assert_int_equal(lv, LOG_ERROR);
    assert_int_equal(log_level_parse("trace", &lv), -1);
}

static void on_block(uv_timer_t *t) {
    (void)t;
    usleep(60 * 1000); /* a callback that hogs the loop */
}

static void test_looplag_sees_a_blocked_loop(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    LoopLag *lag = looplag_new(&loop, 10);
    tu_run_for(&loop, 100);
    assert_true(looplag_samples(lag) >= 5);
    assert_true(looplag_max_us(lag) < TU_LAG_LIMIT_US);
    uv_timer_t blocker;
    uv_timer_init(&loop, &blocker);
    uv_timer_start(&blocker, on_block, 5, 0);
    tu_run_for(&loop, 100);
    /* the 60 ms stall shows up as at least ~45 ms of lag */
    assert_true(looplag_max_us(lag) >= 45000);
    looplag_reset(lag);
    assert_int_equal(looplag_max_us(lag), 0);
    uv_close((uv_handle_t *)&blocker, NULL);
    looplag_free(lag);
    tu_loop_close(&loop);
}

static void on_tick(uv_timer_t *t) {
    (*(int *)t->data)++;
}

/* A handle left open ends the wait at its deadline (the test then fails), instead of the loop
 * running until ctest's timeout; once closed, the loop ends and closes cleanly. */
static void test_a_leaked_handle_is_seen_at_the_deadline(void **state) {
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t leak;
    int ticks = 0;
    uv_timer_init(&loop, &leak);
    leak.data = &ticks;
    uv_timer_start(&leak, on_tick, 5, 5);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(tu_run_to_end(&loop, 200), 0);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms >= 150 && ms < 2000);
    assert_true(ticks > 5); /* the loop did run meanwhile */
    int n = 0;
    assert_true(tu_run_until_count(&loop, &ticks, ticks + 3, 1000));
    assert_int_equal(tu_run_until_count(&loop, &n, 1, 50), 0); /* nothing counts n: deadline */
    uv_close((uv_handle_t *)&leak, NULL);
    assert_int_equal(tu_run_to_end(&loop, 1000), 1);
    tu_loop_close(&loop);
}

/* The one retry rule: the bound doubles from base up to max; delays stay in [floor, bound]. */
static void test_backoff(void **state) {
    (void)state;
    Backoff full = {100, 5000, 0}, equal = {100, 5000, 0.5};
    assert_int_equal(backoff_bound_ms(&full, 1), 100);
    assert_int_equal(backoff_bound_ms(&full, 2), 200);
    assert_int_equal(backoff_bound_ms(&full, 6), 3200);
    assert_int_equal(backoff_bound_ms(&full, 7), 5000);
    assert_int_equal(backoff_bound_ms(&full, 1000), 5000); /* no overflow past the cap */
    int low = 0, high = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t d = backoff_delay_ms(&full, 3), e = backoff_delay_ms(&equal, 3);
        assert_true(d <= 400);
        assert_true(e >= 200 && e <= 400);
        low += d < 100;
        high += d > 300;
    }
    assert_true(low > 100 && high > 100); /* spread over the whole range, not clumped */
    Backoff none = {100, 10000, 1};
    assert_int_equal(backoff_delay_ms(&none, 4), 800);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_err),
        cmocka_unit_test(test_strmap),
        cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_looplag_sees_a_blocked_loop),
        cmocka_unit_test(test_a_leaked_handle_is_seen_at_the_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
