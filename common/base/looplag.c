/*
 * looplag: event-loop lag from a repeating timer (see looplag.h).
 *
 * uv_hrtime() rather than uv_now(): the loop's cached time is only refreshed
 * once per iteration, which is exactly the delay we want to see.
 */
#include "base/looplag.h"
#include "base/buf.h"

#include <stdlib.h>

struct LoopLag {
    uv_timer_t timer;
    uint64_t interval_ns;
    uint64_t due_ns;
    uint64_t last_us;
    uint64_t max_us;
    uint64_t samples;
};

static void on_tick(uv_timer_t *t) {
    LoopLag *lag = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late = now > lag->due_ns ? (now - lag->due_ns) / 1000 : 0;
    lag->last_us = late;
    if (late > lag->max_us)
        lag->max_us = late;
    lag->samples++;
    lag->due_ns = now + lag->interval_ns;
}

LoopLag *looplag_new(uv_loop_t *loop, unsigned interval_ms) {
    LoopLag *lag = xcalloc(1, sizeof(*lag));
    lag->interval_ns = (uint64_t)interval_ms * 1000000u;
    uv_timer_init(loop, &lag->timer);
    lag->timer.data = lag;
    lag->due_ns = uv_hrtime() + lag->interval_ns;
    uv_timer_start(&lag->timer, on_tick, interval_ms, interval_ms);
    uv_unref((uv_handle_t *)&lag->timer);
    return lag;
}

static void on_close(uv_handle_t *h) {
    free(h->data);
}

void looplag_free(LoopLag *lag) {
    if (lag == NULL)
        return;
    uv_timer_stop(&lag->timer);
    uv_close((uv_handle_t *)&lag->timer, on_close);
}

uint64_t looplag_max_us(const LoopLag *lag) {
    return lag->max_us;
}

uint64_t looplag_last_us(const LoopLag *lag) {
    return lag->last_us;
}

uint64_t looplag_samples(const LoopLag *lag) {
    return lag->samples;
}

void looplag_reset(LoopLag *lag) {
    lag->max_us = 0;
    lag->samples = 0;
}
