/*
 * qmetrics: the queue engine's per-job-type counters and run-time histogram,
 * written as Prometheus text. Types outside the known list count as "invalid"
 * (entries that did not decode), so label values stay a fixed, small set.
 */
#ifndef BW_QMETRICS_H
#define BW_QMETRICS_H

#include "base/buf.h"

#include <stdint.h>

typedef enum {
    QM_STARTED,
    QM_COMPLETED,
    QM_FAILED, /* runs that failed, retried or not */
    QM_RETRIED,
    QM_DEAD,
    QM_DUPLICATE,
    QM_ROWS, /* of completed jobs */
    QM_BYTES,
    QM_NCOUNTERS
} QmCounter;

typedef struct QMetrics QMetrics;

QMetrics *qmetrics_new(void);
void qmetrics_free(QMetrics *m);
/* Add n to counter c of job type (NULL or unknown: "invalid"). */
void qmetrics_add(QMetrics *m, const char *type, QmCounter c, uint64_t n);
/* Record one finished run of seconds. */
void qmetrics_observe(QMetrics *m, const char *type, double seconds);
/* Append the counters and the histogram. */
void qmetrics_write(const QMetrics *m, Buf *out);

#endif
