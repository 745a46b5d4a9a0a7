/*
 * segcopy: the change segments copied to the replica bucket (S3_REPLICA_BUCKET) as they are
 * recorded, so that a restore to a point in time has a second copy of every segment within
 * seconds, not after the user's next backup.
 *
 * Run by the capture's leader only (one per deployment: no two workers copy the same segment),
 * kicked after each recording. A pass lists the segments due (not yet copied; or failed, tried
 * again after 10 s x 2^attempts, at most an hour, for 10 attempts), newest first (a backlog
 * never holds back what was just recorded), and copies
 * them one at a time as the replicate job does: the store's own copy when S3_REPLICA_COPY allows
 * it (streamed through this worker when the service refuses), the copy's SHA-256 checked
 * against change_segments.checksum. Each outcome is recorded in change_segments
 * (replica_status, replica_error, replica_attempts, replica_tried_at; proto/sql/023):
 *   completed  the copy is whole
 *   failed     the primary's copy is missing or not the record's (verify names it too)
 *   NULL       the replica was unreachable: the pass stops, the next one tries again later
 * A segment whose row a cleanup deleted during its copy loses the copy just made.
 */
#ifndef BW_SEGCOPY_H
#define BW_SEGCOPY_H

#include "base/buf.h"
#include "services.h"

#include <uv.h>

typedef struct SegCopy SegCopy;

/* NULL when the worker has no replica. */
SegCopy *segcopy_new(uv_loop_t *loop, Services *sv);
/* Segments were recorded (fresh = 1), or time passed (fresh = 0: a pass at most every 10 s, for
 * the copies that failed). A pass in progress runs again once it ends. */
void segcopy_kick(SegCopy *s, int fresh);
/* Stop: the copy in flight is abandoned (its segment stays uncopied), and the memory goes once
 * the statement in flight answered; done (may be NULL) then. s may be NULL. */
void segcopy_close(SegCopy *s, void (*done)(void *data), void *data);
/* Prometheus lines (bw_segment_replica_*); s NULL: the same at zero. */
void segcopy_metrics(const SegCopy *s, Buf *out);

#endif
