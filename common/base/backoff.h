/*
 * backoff: how long to wait before trying again, the one rule every retry here follows (S3
 * requests, KMS calls, Redis reconnects, job retries, the queue's group creation): a bound
 * that doubles from base with each attempt up to max, and a random delay under it ("full
 * jitter", as AWS's architecture blog names it), so that many clients retrying at once spread
 * out instead of hitting a recovering service together.
 */
#ifndef BW_BACKOFF_H
#define BW_BACKOFF_H

#include <stdint.h>

typedef struct {
    uint64_t base_ms, max_ms;
    /* the least delay, as a fraction of the bound: 0 is full jitter (any delay from 0), 0.5
     * "equal jitter" (half fixed, half random) */
    double floor;
} Backoff;

/* The bound of attempt n (1: the first retry): base x 2^(n-1), at most max. */
uint64_t backoff_bound_ms(const Backoff *b, int attempt);
/* A delay for attempt n: uniform in [floor x bound, bound]. */
uint64_t backoff_delay_ms(const Backoff *b, int attempt);

#endif
