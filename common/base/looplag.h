/*
 * looplag: measures how late the event loop runs its timers.
 *
 * A repeating timer asks to run every interval; the delay between when it was
 * due and when it ran is time the loop spent busy in some callback. The worker
 * exports the figures as a metric; tests assert that the adapters keep it low.
 */
#ifndef BW_LOOPLAG_H
#define BW_LOOPLAG_H

#include <stdint.h>
#include <uv.h>

typedef struct LoopLag LoopLag;

/* Start measuring on loop every interval_ms; the timer does not keep the loop alive. */
LoopLag *looplag_new(uv_loop_t *loop, unsigned interval_ms);
/* Stop and free (asynchronously: the loop must run once more to release it). */
void looplag_free(LoopLag *lag);
/* Largest lag seen since the last reset, in microseconds. */
uint64_t looplag_max_us(const LoopLag *lag);
/* Lag of the most recent tick, in microseconds. */
uint64_t looplag_last_us(const LoopLag *lag);
/* Number of ticks measured since the last reset. */
uint64_t looplag_samples(const LoopLag *lag);
/* Forget the maximum and the sample count. */
void looplag_reset(LoopLag *lag);

#endif
