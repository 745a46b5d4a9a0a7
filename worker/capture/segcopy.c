/* segcopy: new change segments copied to the replica (see segcopy.h). */
#include "capture/segcopy.h"

#include "base/log.h"
#include "format/layout.h"
#include "pg/pgpool.h"
#include "storage/storage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDLE_PASS_MS 10000 /* a pass without fresh segments: at most this often */

struct SegCopy {
    uv_loop_t *loop;
    Services *sv;
    PGresult *due; /* the pass's segments: id, s3_key, checksum, size, user_id */
    int i;
    StorageCopy *copy;
    int server;   /* the store's own copy, until the service refuses one */
    int busy;     /* a pass runs */
    int querying; /* a statement is in flight */
    int again;    /* kicked with fresh segments during a pass */
    int stop;     /* the replica is unreachable: the pass ends once this one is recorded */
    int closing;
    uint64_t last_pass_ms;
    void (*closed_cb)(void *);
    void *closed_data;
    uint64_t copied, failed, bytes;
};

static void pass_next(SegCopy *s);

static void maybe_free(SegCopy *s) {
    if (!s->closing || s->querying)
        return;
    void (*done)(void *) = s->closed_cb;
    void *data = s->closed_data;
    storage_copy_free(s->copy);
    PQclear(s->due);
    free(s);
    if (done)
        done(data);
}

/* A statement or delete answered: 0 to go on, 1 when closing (the memory may be gone). */
static int answered(SegCopy *s) {
    s->querying = 0;
    if (!s->closing)
        return 0;
    maybe_free(s);
    return 1;
}

static void pass_end(SegCopy *s) {
    PQclear(s->due);
    s->due = NULL;
    s->busy = 0;
    if (s->again && !s->closing) {
        s->again = 0;
        segcopy_kick(s, 1);
    }
}

static void on_listed(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    SegCopy *s = data;
    if (answered(s))
        return;
    if (err) {
        log_warn(NULL, "capture: listing the segments to copy to the replica: %s", err->msg);
        pass_end(s);
        return;
    }
    s->due = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    s->i = 0;
    pass_next(s);
}

static void on_recorded(PgConn *pc, PGresult *res, const Err *err, void *data);

/* outcome: "completed", "failed" (the primary's copy is lost), or NULL (an outage) */
static void record(SegCopy *s, const char *outcome, const char *why) {
    char attempts[4];
    snprintf(attempts, sizeof(attempts), "%d",
             outcome && strcmp(outcome, "completed") == 0 ? 0 : 1);
    const char *v[] = {PQgetvalue(s->due, s->i, 0), outcome, why, attempts};
    s->querying = 1;
    pg_pool_query(services_pg(s->sv),
                  "UPDATE change_segments SET replica_status = $2, replicated_at = CASE WHEN "
                  "$2 = 'completed' THEN now() END, replica_error = $3, replica_attempts = "
                  "replica_attempts + $4::int, replica_tried_at = now() WHERE id = $1 "
                  "RETURNING id",
                  4, v, on_recorded, s);
}

static void on_undone(size_t deleted, size_t failed, const Err *err, void *data) {
    (void)deleted;
    SegCopy *s = data;
    if (err || failed)
        log_warn(NULL, "capture: the replica's copy of %s outlived its segment: %s",
                 PQgetvalue(s->due, s->i, 1), err ? err->msg : "not deleted");
    if (answered(s))
        return;
    s->i++;
    pass_next(s);
}

static void on_recorded(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    SegCopy *s = data;
    if (answered(s))
        return;
    if (err || s->stop) { /* unrecorded: the next pass copies it again */
        if (err)
            log_warn(NULL, "capture: recording the replica's copy of %s: %s",
                     PQgetvalue(s->due, s->i, 1), err->msg);
        pass_end(s);
        return;
    }
    if (PQntuples(res) == 0) { /* a cleanup deleted the segment meanwhile: no copy outlives it */
        const char *key = PQgetvalue(s->due, s->i, 1);
        s->querying = 1;
        storage_delete(services_replica(s->sv), &key, 1, on_undone, s);
        return;
    }
    s->i++;
    pass_next(s);
}

static void start_copy(SegCopy *s);

static void on_copied(StorageCopy *c, const StorageWritten *res, const Err *err, void *data) {
    (void)c;
    SegCopy *s = data;
    storage_copy_free(s->copy);
    s->copy = NULL;
    const char *key = PQgetvalue(s->due, s->i, 1);
    int lost = storage_copy_source_lost(err);
    if (s->server && !lost && storage_copy_refused(err)) {
        log_warn(NULL, "capture: the replica refused a server-side copy (%s): streaming instead",
                 err->msg);
        s->server = 0;
        start_copy(s);
        return;
    }
    services_replica_copied(s->sv, err ? 0 : res->size, err != NULL);
    if (!err) {
        s->copied++;
        s->bytes += res->size;
        record(s, "completed", NULL);
        return;
    }
    s->failed++;
    char why[ERR_MSG_MAX];
    snprintf(why, sizeof(why), "%s: %.200s: %.200s",
             !lost                           ? "replica unreachable"
             : err->code == ERR_CODE_INVALID ? "Change segment checksum verification failed"
                                             : "change segment missing in the primary",
             key, err->msg);
    log_warn(NULL, "capture: copying %s to the replica: %s", key, why);
    s->stop = !lost; /* an outage: the pass stops once this is recorded */
    record(s, lost ? "failed" : NULL, why);
}

static void start_copy(SegCopy *s) {
    Storage *from = services_storage(s->sv), *to = services_replica(s->sv);
    const char *key = PQgetvalue(s->due, s->i, 1), *sum = PQgetvalue(s->due, s->i, 2);
    uint64_t size = strtoull(PQgetvalue(s->due, s->i, 3), NULL, 10);
    const char *ctype = "application/octet-stream";
    s->copy =
        s->server ? storage_copy_server_new(from, to, key, size, ctype, sum, on_copied, s) : NULL;
    if (s->copy == NULL) {
        s->server = 0;
        s->copy = storage_copy_new(from, to, key, ctype, sum, size, on_copied, s);
    }
}

static void pass_next(SegCopy *s) {
    int n = PQntuples(s->due);
    /* a key outside its user's prefix is never copied (the capture writes none) */
    while (s->i < n &&
           !layout_key_is_users(PQgetvalue(s->due, s->i, 1), PQgetvalue(s->due, s->i, 4)))
        s->i++;
    if (s->i >= n) {
        pass_end(s);
        return;
    }
    start_copy(s);
}

SegCopy *segcopy_new(uv_loop_t *loop, Services *sv) {
    if (services_replica(sv) == NULL)
        return NULL;
    SegCopy *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->sv = sv;
    s->server = services_config(sv)->s3_replica_server_copy;
    return s;
}

void segcopy_kick(SegCopy *s, int fresh) {
    if (s == NULL || s->closing)
        return;
    if (s->busy) {
        s->again |= fresh;
        return;
    }
    uint64_t now = uv_now(s->loop);
    if (!fresh && s->last_pass_ms && now - s->last_pass_ms < IDLE_PASS_MS)
        return;
    s->last_pass_ms = now;
    s->busy = 1;
    s->stop = 0;
    s->querying = 1;
    /* newest first: a backlog (a replica turned on, an outage) must not hold back what was
     * just recorded, the copies a restore to a recent point needs (test_pitr waited behind
     * 1,684 older segments oldest first); a failed one after 10 s x 2^attempts (at most an
     * hour), 10 attempts */
    pg_pool_query(services_pg(s->sv),
                  "SELECT id, s3_key, checksum, size, user_id::text FROM change_segments "
                  "WHERE replica_status IS DISTINCT FROM 'completed' AND replica_attempts < 10 "
                  "AND (replica_tried_at IS NULL OR replica_tried_at < now() - least(interval "
                  "'1 hour', interval '10 seconds' * power(2, replica_attempts))) "
                  "ORDER BY end_lsn DESC, id DESC LIMIT 64",
                  0, NULL, on_listed, s);
}

void segcopy_close(SegCopy *s, void (*done)(void *data), void *data) {
    if (s == NULL) {
        if (done)
            done(data);
        return;
    }
    s->closing = 1;
    s->closed_cb = done;
    s->closed_data = data;
    storage_copy_free(s->copy); /* abandoned: its segment stays uncopied */
    s->copy = NULL;
    maybe_free(s);
}

void segcopy_metrics(const SegCopy *s, Buf *out) {
    static const SegCopy none;
    if (s == NULL)
        s = &none;
    buf_printf(out,
               "# HELP bw_segment_replica_copies_total Change segments copied to the replica "
               "by the capture's leader.\n"
               "# TYPE bw_segment_replica_copies_total counter\n"
               "bw_segment_replica_copies_total %" PRIu64 "\n"
               "# HELP bw_segment_replica_failures_total Copies of change segments to the "
               "replica that failed (tried again later).\n"
               "# TYPE bw_segment_replica_failures_total counter\n"
               "bw_segment_replica_failures_total %" PRIu64 "\n"
               "# HELP bw_segment_replica_bytes_total Bytes of change segments copied to the "
               "replica.\n"
               "# TYPE bw_segment_replica_bytes_total counter\n"
               "bw_segment_replica_bytes_total %" PRIu64 "\n",
               s->copied, s->failed, s->bytes);
}
