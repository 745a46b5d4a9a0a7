/*
 * capture: every tenant's committed changes, read from one logical replication slot and
 * written to the store as change segments within seconds (BACKUP_TRACKING=wal).
 *
 * One worker of a deployment captures: the one holding the Redis lease {prefix}:capture:lease,
 * whose value carries an epoch that only grows ({prefix}:capture:epoch). The leader writes its
 * epoch into capture_state when it takes over and every recording checks it there, so a leader
 * that lost its lease (paused, partitioned) can write objects but never record a segment.
 *
 * The leader, as a state machine on the loop:
 *   CLAIM     our epoch into capture_state; read the position recorded last
 *   CONNECT   a replication connection (replication=database, DateStyle ISO: the values come
 *             as the same text a backup's COPY reads)
 *   IDENTIFY  IDENTIFY_SYSTEM: another system or timeline than recorded is a gap
 *   SLOT      the slot: missing or lost (wal_status) is a gap, and a new slot is made
 *   CREATE    CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')
 *   RESET     in that snapshot: the owners of parent rows loaded, the gap recorded
 *   STREAM    START_REPLICATION at the recorded position: pgoutput's messages decoded, each
 *             change routed to its tenant (the user column, or the owner of its parent row)
 *             and appended to that tenant's buffer; every CAPTURE_FLUSH_INTERVAL (or
 *             CAPTURE_SEGMENT_MB), at a commit boundary, every tenant's buffer becomes one
 *             segment object (the backup codecs, encryption, SHA-256), then one transaction
 *             records them all with the position after the last commit (capture_record), and
 *             only then is that position confirmed to PostgreSQL. A crash replays from the
 *             recorded position; nothing is recorded twice.
 * A quiet database still advances: with nothing buffered, the server's keepalive position is
 * recorded and confirmed, so an idle slot never pins the WAL.
 */
#ifndef BW_CAPTURE_H
#define BW_CAPTURE_H

#include "base/buf.h"
#include "base/err.h"
#include "services.h"

#include <uv.h>

typedef struct Capture Capture;

/* What BACKUP_TRACKING=wal needs of PostgreSQL, checked at start with a blocking connection:
 * wal_level=logical, a role with REPLICATION, the schema (migration 019) and the publication
 * (backupctl tracking wal). -1 with err naming everything missing; warnings (a line each)
 * for what is risky (max_slot_wal_keep_size unlimited). 1 when PostgreSQL could not be reached
 * (the capture retries later). */
int capture_check(const char *database_url, Err *err, Buf *warnings);

/* Start competing for the lease; the capture runs while this worker holds it. */
Capture *capture_new(uv_loop_t *loop, Services *sv);
/* Stop: the lease is given up, what is not recorded is left to the next leader (it replays
 * it), and memory goes once the operations in flight answered. done (may be NULL) follows. */
void capture_shutdown(Capture *c, void (*done)(void *data), void *data);
/* Prometheus lines (bw_capture_*); c NULL (BACKUP_TRACKING=triggers): the same at zero. */
void capture_metrics(Capture *c, Buf *out);

#endif
