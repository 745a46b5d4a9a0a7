/*
 * filterpipe: see filterpipe.h. Two buffers swap: `fill` belongs to the loop
 * thread, `work` and `out` to the pool thread while a chunk is in flight
 * (`working`); the loop reads `out` only after the chunk came back. A huge
 * write (filter_pipe_write_owned) is not copied into `fill`: it is handed to
 * the pool a chunk at a time after what `fill` held, so `work` and `out` stay
 * about a chunk.
 */
#include "io/filterpipe.h"

#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DEFAULT_CHUNK (1u << 20)
/* A bounded run feeds the chain this much input at a time: a deflate stream expands at most
 * ~1032:1, so a run's output stays under the bound + ~4 MiB whatever the input holds. */
#define OUT_SLICE (4u * 1024)

struct FilterPipe {
    uv_loop_t *loop;
    FilterChain *chain;
    size_t chunk;
    FilterPipeSink sink;
    FilterPipeWritableCb on_writable;
    FilterPipeDoneCb on_done;
    void *data;
    Buf fill, work, out;
    char *big; /* filter_pipe_write_owned: a buffer we own, sent after fill */
    size_t big_len, big_off;
    size_t work_off;  /* input of `work` already through the chain (a bounded run stopped) */
    size_t out_bound; /* 0, or stop a run once its output passed this (filter_pipe_bound_output) */
    void (*big_free)(void *);
    uv_work_t req;
    Err work_err;   /* set by the pool thread */
    int working;    /* a chunk is on the thread pool */
    int work_final; /* that chunk ends the chain */
    int blocked;    /* the sink asked us to hold on */
    int finishing;  /* the producer is done */
    int finished;   /* the chain wrote its last byte */
    int want_writable, stopped, freed;
    int depth; /* inside one of the owner's callbacks: filter_pipe_free waits for its return */
    uint64_t wait_from; /* the producer waits for on_writable since (0: it does not) */
    uint64_t held_from; /* the sink holds output back since (0: it does not) */
    FilterPipeTimes times;
};

FilterPipe *filter_pipe_new(uv_loop_t *loop, FilterChain *chain, size_t chunk, FilterPipeSink sink,
                            FilterPipeWritableCb on_writable, FilterPipeDoneCb on_done,
                            void *data) {
    FilterPipe *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->chain = chain;
    p->chunk = chunk ? chunk : DEFAULT_CHUNK;
    p->sink = sink;
    p->on_writable = on_writable;
    p->on_done = on_done;
    p->data = data;
    p->req.data = p;
    return p;
}

static int gone(FilterPipe *p);

static void release(FilterPipe *p) {
    if (p->big)
        p->big_free(p->big);
    filter_chain_free(p->chain);
    buf_free(&p->fill);
    buf_free(&p->work);
    buf_free(&p->out);
    free(p);
}

void filter_pipe_free(FilterPipe *p) {
    if (p == NULL)
        return;
    p->freed = 1;
    gone(p); /* or after_work, or the return of the callback we are in */
}

static void run_chunk(uv_work_t *req) {
    FilterPipe *p = req->data;
    /* A thread that compresses yields the CPU to the loop thread when cores are short: a
     * higher nice value for this pool thread only (Linux: per-thread). Once per thread. */
    static __thread int niced;
    if (!niced) {
        niced = 1;
        pid_t tid = (pid_t)syscall(SYS_gettid);
        setpriority(PRIO_PROCESS, (id_t)tid, getpriority(PRIO_PROCESS, (id_t)tid) + 5);
    }
    err_clear(&p->work_err);
    uint64_t t0 = uv_hrtime();
    size_t step = p->out_bound ? OUT_SLICE : p->work.len;
    while (p->work_off < p->work.len && (!p->out_bound || p->out.len < p->out_bound)) {
        size_t n = p->work.len - p->work_off;
        if (n > step)
            n = step;
        if (filter_chain_write(p->chain, p->work.data + p->work_off, n, &p->out, &p->work_err) != 0)
            return;
        p->work_off += n;
    }
    if (p->work_off == p->work.len && p->work_final)
        filter_chain_finish(p->chain, &p->out, &p->work_err);
    p->times.chain_ns += uv_hrtime() - t0;
}

static void pump(FilterPipe *p, int from_write);

/* After an owner's callback: 1 when the owner freed p (released now, unless a chunk is still on
 * the pool or an outer call of ours is still on the stack: then by whichever ends last). */
static int gone(FilterPipe *p) {
    if (!p->freed)
        return 0;
    if (p->depth == 0 && !p->working)
        release(p);
    return 1;
}

/* The end, told once; p may be freed by the owner inside the callback. */
static void call_done(FilterPipe *p, const Err *err) {
    p->depth++;
    p->on_done(p, err, p->data);
    p->depth--;
    gone(p);
}

static void after_chunk(uv_work_t *req, int status) {
    FilterPipe *p = req->data;
    p->working = 0;
    if (p->freed) {
        release(p);
        return;
    }
    int partial = p->work_off < p->work.len && !err_is_set(&p->work_err);
    if (!partial) {
        p->work.len = 0;
        p->work_off = 0;
    }
    if (status != 0 && !err_is_set(&p->work_err))
        err_set(&p->work_err, ERR_RETRYABLE, ERR_CODE_CANCELLED, "filter work cancelled");
    if (err_is_set(&p->work_err)) {
        p->stopped = 1;
        Err err = p->work_err;
        call_done(p, &err);
        return;
    }
    if (p->work_final && !partial)
        p->finished = 1;
    pump(p, 0);
}

/* The next chunk into `work`: what `fill` holds, else the owned buffer's next chunk. */
static void take_chunk(FilterPipe *p) {
    if (p->fill.len == 0 && p->big) { /* the owned buffer, a chunk at a time, after fill */
        size_t n = p->big_len - p->big_off;
        if (n > p->chunk)
            n = p->chunk;
        buf_reset(&p->work);
        buf_append(&p->work, p->big + p->big_off, n);
        p->big_off += n;
        if (p->big_off == p->big_len) {
            p->big_free(p->big);
            p->big = NULL;
        }
        p->work_final = 0;
    } else {
        Buf t = p->work;
        p->work = p->fill;
        p->fill = t;
        p->work_final = p->finishing && p->big == NULL;
    }
}

/* Deliver output, start the next chunk, and tell whoever waits. May free p (callbacks). */
static void pump(FilterPipe *p, int from_write) {
    if (p->stopped || p->working)
        return;
    if (p->out.len > 0 && !p->blocked) {
        p->depth++;
        int r = p->sink(p->out.data, p->out.len, p->data);
        p->depth--;
        if (gone(p))
            return;
        p->out.len = 0;
        if (r < 0) {
            p->stopped = 1; /* the sink's owner knows why */
            return;
        }
        if (r == 0) {
            p->blocked = 1;
            p->held_from = uv_hrtime();
        }
    }
    /* the rest of a chunk whose run stopped at the output bound goes first */
    int rest = p->work.len > 0;
    int go = rest || p->fill.len >= p->chunk || p->finishing || p->big != NULL;
    if (p->out.len == 0 && !p->blocked && !p->finished && go) {
        if (!rest)
            take_chunk(p);
        p->working = 1;
        if (uv_queue_work(p->loop, &p->req, run_chunk, after_chunk) != 0) {
            p->working = 0;
            p->stopped = 1;
            Err err;
            err_set(&err, ERR_RETRYABLE, ERR_CODE_NOMEM, "cannot queue filter work");
            call_done(p, &err);
            return;
        }
    }
    if (p->finished && p->out.len == 0) {
        p->stopped = 1;
        call_done(p, NULL);
        return;
    }
    if (!from_write && p->want_writable && p->fill.len < p->chunk && !p->big) {
        p->want_writable = 0;
        if (p->wait_from) {
            p->times.wait_ns += uv_hrtime() - p->wait_from;
            p->wait_from = 0;
        }
        p->depth++;
        p->on_writable(p, p->data);
        p->depth--;
        gone(p);
    }
}

/* Public entries hold a depth too: an owner freeing p inside a callback they cause finds it
 * released on the way out, never under the caller's feet. */
static int leave(FilterPipe *p, int r) {
    p->depth--;
    return gone(p) ? -1 : r;
}

/* The producer is told to wait: since when, and for whom. */
static void waiting(FilterPipe *p) {
    if (p->wait_from == 0)
        p->wait_from = uv_hrtime();
}

int filter_pipe_write(FilterPipe *p, const void *buf, size_t len) {
    if (p->stopped || p->finishing)
        return -1;
    p->depth++;
    buf_append(&p->fill, buf, len);
    if (p->fill.len >= p->chunk)
        pump(p, 1);
    int r = 1;
    if (p->stopped || p->freed)
        r = -1;
    else if (p->fill.len >= p->chunk) {
        p->want_writable = 1;
        r = 0;
        waiting(p);
    }
    return leave(p, r);
}

int filter_pipe_write_owned(FilterPipe *p, char *buf, size_t len, void (*release_fn)(void *)) {
    if (p->stopped || p->finishing || p->big) {
        release_fn(buf);
        return -1;
    }
    p->depth++;
    p->big = buf;
    p->big_len = len;
    p->big_off = 0;
    p->big_free = release_fn;
    pump(p, 1);
    int r = 0;
    if (p->stopped || p->freed)
        r = -1;
    else
        p->want_writable = 1; /* always: the buffer goes to the pool a chunk at a time */
    if (r == 0)
        waiting(p);
    return leave(p, r);
}

void filter_pipe_unblock(FilterPipe *p) {
    p->depth++;
    if (p->blocked && p->held_from)
        p->times.sink_held_ns += uv_hrtime() - p->held_from;
    p->blocked = 0;
    p->held_from = 0;
    pump(p, 0);
    leave(p, 0);
}

void filter_pipe_finish(FilterPipe *p) {
    if (p->finishing || p->stopped)
        return;
    p->depth++;
    p->finishing = 1;
    p->want_writable = 0;
    pump(p, 0);
    leave(p, 0);
}

void filter_pipe_times(const FilterPipe *p, FilterPipeTimes *t) {
    *t = p->times;
}

const FilterChain *filter_pipe_chain(const FilterPipe *p) {
    return p->chain;
}

void filter_pipe_bound_output(FilterPipe *p, size_t bytes) {
    p->out_bound = bytes;
}

size_t filter_pipe_buffered(const FilterPipe *p) {
    return p->fill.cap + p->work.cap + p->out.cap;
}
