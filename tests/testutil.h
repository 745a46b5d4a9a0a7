/*
 * testutil: helpers shared by the tests.
 *
 * Service tests read their endpoints from the environment that
 * `tools/devenv env` prints; a missing variable fails the test with a message
 * saying how to run it, never a silent skip.
 */
#ifndef BW_TESTUTIL_H
#define BW_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include <uv.h>

#include "aws/s3.h"

/*
 * The loop-lag bound the adapters must keep: 50 ms in optimised builds (20 ms
 * flaked on this shared 2-core machine: 20.95 ms in test_http on a quiet CI run,
 * the scheduler's doing, not ours; a blocking connect or request still breaks
 * 50 ms). A sanitizer build (-O0, every
 * access checked) runs several times slower, so there the same assertion uses
 * 250 ms (100 ms flaked: test_http's 100 concurrent requests saw 136 ms under ASan
 * while an npm install shared the two cores; a blocking call still takes seconds).
 * Under valgrind (TU_VALGRIND=1, set by the valgrind: tests) the run checks memory, not
 * time: 2 s, as an idle loop measured 50 ms there while three lanes shared two cores.
 */
#ifdef TU_SANITIZED
#define TU_LAG_BASE_US 250000
#else
#define TU_LAG_BASE_US 50000
#endif
#define TU_LAG_LIMIT_US (getenv("TU_VALGRIND") ? 2000000 : TU_LAG_BASE_US)

/* The value of an environment variable the test needs; fails the test if unset. */
const char *tu_env(const char *name);
/* Run the loop until *flag becomes non-zero or timeout_ms passes; returns *flag. */
int tu_run_until(uv_loop_t *loop, volatile int *flag, unsigned timeout_ms);
/* Run the loop for ms milliseconds of wall time. */
void tu_run_for(uv_loop_t *loop, unsigned ms);
/* Run the loop until *n reaches target or timeout_ms passes; returns 1 when it did. */
int tu_run_until_count(uv_loop_t *loop, volatile int *n, int target, unsigned timeout_ms);
/* Run the loop until nothing keeps it alive, or timeout_ms passes; returns 1 when it ended. */
int tu_run_to_end(uv_loop_t *loop, unsigned timeout_ms);
/* Close the loop, failing the test when a handle is left open: the loop runs at most
 * TU_CLOSE_MS to finish what is closing, never until the ctest timeout. */
#define TU_CLOSE_MS 20000
void tu_loop_close(uv_loop_t *loop);
/* Zero o and fill in the local S3 server from the environment (path style). */
void tu_s3_options(S3Options *o);
/* A reproducible byte pattern: byte i of a test object, and n of them from pos. */
unsigned char tu_pattern_byte(uint64_t i);
void tu_pattern(unsigned char *out, uint64_t pos, size_t n);
/* n pattern bytes from 0, malloc'd. */
unsigned char *tu_pattern_new(size_t n);
/* The codec encoder of "gzip" at level 1 (io/codec.h). */
struct FilterChain *tu_gzip_encoder(void);

/* A loop with an HTTP client and an S3 client, for the S3 tests. */
typedef struct {
    uv_loop_t loop;
    HttpClient *http;
    S3Client *s3;
} TuS3;
/* Open all three, the S3 client made with o. */
void tu_s3_open(TuS3 *e, const S3Options *o);
/* Free them and close the loop, asserting nothing is left open. */
void tu_s3_close(TuS3 *e);
/* Run a shell command through the dev environment script: "$BW_DEVENV args". */
int tu_devenv(const char *args);

#endif
