/*
 * queue: the job-queue engine on Redis streams (protocol in proto/README.md).
 *
 * Reads {prefix}:jobs through the consumer group `backup-workers` on its own
 * Redis connection (XREADGROUP blocks), runs up to WORKER_CONCURRENCY jobs at
 * once, and records every transition with one atomic script (qscripts.h) on
 * the shared connection. Delivery is at least once: an entry is acknowledged
 * only together with its recorded result; a running job renews its lease
 * every third of JOB_VISIBILITY_TIMEOUT; entries whose worker went silent are
 * taken over by the sweep of any live worker. Retryable failures wait in
 * {prefix}:delayed with exponential backoff and full jitter; permanent ones,
 * and jobs out of attempts, go to {prefix}:dead.
 *
 * Usage:
 *   Queue *q = queue_new(loop, cfg, services);
 *   ...                       // on SIGTERM:
 *   queue_shutdown(q, on_stopped, data);   // grace, hand back, then on_stopped; q is freed
 */
#ifndef BW_QUEUE_H
#define BW_QUEUE_H

#include "base/buf.h"
#include "config/config.h"
#include "services.h"

#include <uv.h>

typedef struct Queue Queue;

/* Start consuming. Redis may be down: the engine waits for it. */
Queue *queue_new(uv_loop_t *loop, const Config *cfg, Services *services);
/*
 * Stop taking jobs; running ones get WORKER_SHUTDOWN_GRACE to finish, then are
 * cancelled and handed back. done runs once everything is released; the
 * queue is freed by then.
 */
void queue_shutdown(Queue *q, void (*done)(void *data), void *data);
/* Append the queue's Prometheus metrics. */
void queue_metrics(Queue *q, Buf *out);

#endif
