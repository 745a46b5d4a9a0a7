/*
 * filterpipe: a filter chain run off the loop thread, between a producer and
 * a sink, with backpressure both ways.
 *
 * Compressing and hashing cost CPU (gzip level 1: ~10 ms per MiB here), so a
 * job must not run them on the loop. The producer writes into a chunk buffer;
 * a full chunk goes through the chain on libuv's thread pool while the next
 * one fills (double buffering: the chain only ever runs one chunk at a time,
 * so it needs no lock). Output goes to the sink on the loop thread. When the
 * sink is blocked (S3 has every part in flight) and both chunks are full,
 * filter_pipe_write() says so and the producer pauses until on_writable:
 * memory stays about 2 x chunk + the chain's output of one chunk.
 *
 *   FilterPipe *p = filter_pipe_new(loop, chain, 0, sink, on_writable, on_finished, ctx);
 *   if (filter_pipe_write(p, row, n) == 0) pause the producer until on_writable;
 *   filter_pipe_finish(p);  // on_finished(err) after the sink got everything
 */
#ifndef BW_FILTERPIPE_H
#define BW_FILTERPIPE_H

#include "io/filter.h"

#include <uv.h>

typedef struct FilterPipe FilterPipe;

/* Take len output bytes. 1: send more; 0: taken, but hold on until filter_pipe_unblock();
 * -1: the sink failed (the pipe stops; its owner learns why from the sink itself). */
typedef int (*FilterPipeSink)(const char *buf, size_t len, void *data);
typedef void (*FilterPipeWritableCb)(FilterPipe *p, void *data);
/* Everything was filtered and taken by the sink (err NULL), or the chain failed. */
typedef void (*FilterPipeDoneCb)(FilterPipe *p, const Err *err, void *data);

/* chain is taken. chunk 0: 1 MiB. */
FilterPipe *filter_pipe_new(uv_loop_t *loop, FilterChain *chain, size_t chunk, FilterPipeSink sink,
                            FilterPipeWritableCb on_writable, FilterPipeDoneCb on_done, void *data);
/* Always takes the bytes. 1: write more; 0: wait for on_writable; -1: the pipe failed. */
int filter_pipe_write(FilterPipe *p, const void *buf, size_t len);
/* The same without a copy, for one huge write: the pipe takes buf (release_fn(buf) once it has
 * gone through, or if the pipe fails) and the producer waits for on_writable (returns 0, or -1
 * when the pipe failed). One at a time. */
int filter_pipe_write_owned(FilterPipe *p, char *buf, size_t len, void (*release_fn)(void *));
/* The sink can take output again. */
void filter_pipe_unblock(FilterPipe *p);
/* No more input: flush the chain; on_done follows once. */
void filter_pipe_finish(FilterPipe *p);
/* Hold the chain's output to about bytes per run (0: unbounded, the default): a run stops
 * once its output passed the bound and the rest of its chunk waits for the sink, so a chunk
 * that decompresses 1000:1 reaches the sink in slices the sink can pause between. */
void filter_pipe_bound_output(FilterPipe *p, size_t bytes);
/* Where a stream's time went (nanoseconds): the chain's runs on the pool, the producer's waits
 * for on_writable, and the time the sink held output back (between a 0 from the sink and
 * filter_pipe_unblock). */
typedef struct {
    uint64_t chain_ns, wait_ns, sink_held_ns;
} FilterPipeTimes;
void filter_pipe_times(const FilterPipe *p, FilterPipeTimes *t);
/* The chain (read results after on_done). */
const FilterChain *filter_pipe_chain(const FilterPipe *p);
/* Bytes held now (both chunks and pending output). */
size_t filter_pipe_buffered(const FilterPipe *p);
/* Release; no callback follows. Safe while a chunk is on the thread pool (freed after it). */
void filter_pipe_free(FilterPipe *p);

#endif
