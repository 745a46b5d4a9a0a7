/*
 * capture: the change capture leader (capture.h has the story). One struct, one state
 * machine; every asynchronous step is an Op that carries the generation it was started in, so
 * that an answer arriving after the leader stepped down (lease lost, connection broken) is
 * dropped, and the struct is freed only once every Op answered.
 *
 * Routing. A change of a table naming its user goes to that user; an update that changes the
 * user column moves the row: a delete for the old owner, an insert for the new one. A change of
 * a child table (order_items) goes to the owner of its parent row at that commit: the owners of
 * parent rows are kept in commit order (pend: since the last flush, flushing: being recorded,
 * cache: recorded before, then capture_owners in the database, which holds exactly what was
 * recorded). When a parent row moves, its children move with it without changing: their rows
 * are read from the database and written as deletes for the old owner and inserts for the new.
 */
#include "capture/capture.h"

#include "base/backoff.h"
#include "base/log.h"
#include "base/strmap.h"
#include "capture/changes.h"
#include "capture/segcopy.h"
#include "capture/txspill.h"
#include "format/layout.h"
#include "io/codec.h"
#include "io/crypt.h"
#include "keys/keys.h"
#include "pg/pg.h"
#include "pg/pgoutput.h"
#include "pg/pgpool.h"
#include "scope/scope.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PUBLICATION     "backup_capture"
#define MAX_WRITES      8      /* segment writes in flight */
#define STATUS_EVERY_MS 10000  /* standby status updates at least this often */
#define CACHE_MAX       200000 /* owners remembered beyond the pending ones */
#define RETRY_MS        2000   /* a failed setup step, again after this */
#define PAUSE_FACTOR    1 /* the stream pauses once buffers hold a segment, a flush in flight */
/* A transaction's lines go to disk once buffers hold this many segments: twice the flush's
 * threshold, so that a transaction smaller than a segment (a flush starts at the commit before
 * it, or the stream pauses) never spills; memory holds at most 2 x CAPTURE_SEGMENT_MB. */
#define SPILL_FACTOR 2

typedef enum {
    CAP_IDLE,
    CAP_CLAIM,
    CAP_CONNECT,
    CAP_IDENTIFY,
    CAP_SLOT,
    CAP_DROP,
    CAP_CREATE,
    CAP_RESET,
    CAP_START,
    CAP_STREAM,
} CapState;

static const char *const state_names[] = {"idle", "claim",  "connect", "identify", "slot",
                                          "drop", "create", "reset",   "start",    "stream"};

typedef struct Capture Capture;

typedef struct {
    Capture *c;
    char user[37];
    Buf data;    /* change lines */
    FILE *spill; /* earlier change lines, when a transaction outgrew memory (before data) */
    uint64_t spill_len;
    uint64_t first_lsn, last_lsn;
    int64_t first_time, last_time;
    uint64_t changes, txns, txn_seq;
    Buf xids;         /* comma-separated */
    int (*counts)[5]; /* per scope table: i u d t, w (a "where" delete) */
    int ncounts;
    /* the transactions, each summed up for the timeline (change_segments.txns) */
    Buf txlist;    /* JSON objects, comma-separated */
    int (*cur)[5]; /* the open transaction's counts */
    uint32_t cur_xid;
    uint64_t cur_lsn;
    int64_t cur_time;
    int cur_open;
} Tenant;

typedef struct {
    Capture *c;
    Tenant *t;
    char id[128];
    char key[LAYOUT_KEY_MAX];
    char sha256[65];
    uint64_t size;
    StorageWrite *w;
    const Buf *piece[4]; /* head, (the spill file), data, tail */
    Buf head, tail, chunk;
    int pi;
    size_t off;
    char key_id[CRYPT_ID_MAX + 1];
    char *wrapped;
    unsigned char dek[CRYPT_KEY_LEN];
    int have_dek, started, done;
} Seg;

/* One flush: every tenant's buffer at a commit boundary, its owners, then one recording. */
typedef struct {
    Seg *segs;
    int n, next, inflight, done, failed;
    uint64_t end_lsn;
    int64_t oldest; /* the oldest commit time in it (lag) */
    StrMap *owners;
    Buf truncated; /* {a,b} */
    int attempts;
    int recording;
} Flush;

typedef struct {
    Capture *c;
    unsigned gen;
    int kind;
    Seg *seg;
    char *key; /* a lookup's owner key */
    int slot;  /* a fetch's: a child table's slot, -1 the row itself */
} Op;

enum {
    OP_LEASE,
    OP_CLAIM,
    OP_RESET,
    OP_LOOKUP,
    OP_FETCH,
    OP_TENANTS,
    OP_RECORD,
    OP_SLOTSTAT,
    OP_DEK,
    OP_WRITE,
    OP_SCOPE
};

struct Capture {
    uv_loop_t *loop;
    Services *sv;
    SegCopy *segcopy; /* new segments to the replica (NULL without one) */
    const JobConfig *jc;
    char me[160];
    char lease_key[160], epoch_key[160];
    CapState state;
    unsigned gen;
    int ops;
    int closing;
    void (*closed_cb)(void *);
    void *closed_data;
    uv_timer_t tick;  /* lease renewal, status updates, retries */
    uv_timer_t flush; /* the flush interval */
    int handles;

    long long epoch;
    uint64_t lease_ok_ms;
    uint64_t retry_at_ms;
    PgConn *repl;
    PgoDecoder *dec;
    Scope *scope;
    ChangesTable **tables; /* by relation: index in rels */
    uint32_t *relids;
    unsigned *relver, *relgens;
    int nrels;

    /* recorded state */
    uint64_t confirmed; /* recorded and confirmed to the server */
    uint64_t idle_end;  /* confirmed to the server only: nothing of a tenant up to it */
    uint64_t last_record_ms;
    char stored_system[32];
    int stored_timeline;
    char system[32];
    int timeline;
    char gap[256];
    uint64_t start_lsn;
    char snapshot[64];

    /* the stream */
    int in_txn, skip_txn;
    uint32_t xid;
    uint64_t commit_lsn, last_end, received, server_end;
    int64_t commit_time;
    uint64_t txn_seq;
    char *held; /* a message kept while a lookup runs (libpq's buffer) */
    size_t held_len;
    int paused;
    int scope_fresh; /* the scope was read again for the held Relation message */
    uint64_t last_status_ms;

    /* lookups that the held message waits for */
    StrMap *cache;         /* table\x1fkey -> user ("" none) */
    StrMap *txn_gone;      /* parent rows the transaction being read deleted: their owner, for the
                            * children it deletes after them (a cascade) */
    StrMap *pend;          /* since the last flush */
    Buf pend_truncated;    /* tables truncated since the last flush */
    PGresult *fetched[16]; /* per child table: the rows of a moved parent */
    PGresult *row_fetch;   /* a moved row with unchanged TOAST: its row now */
    PGresult *tenants;     /* a TRUNCATE: every tenant with history */

    StrMap *buffers; /* user -> Tenant */
    /* protocol 2: large transactions streamed before their commit */
    TxSpill *txs; /* transactions streamed before their commit (txspill.h) */
    int in_block; /* between a Stream Start and Stop */
    uint32_t block_xid;
    TxStream *rp;       /* the transaction being replayed at its Stream Commit */
    PgoDecoder *rp_dec; /* its own decoder: its Relation messages are its own */
    char *rp_msg;       /* the message being routed (held across a lookup) */
    uint32_t rp_len;
    uint64_t rp_end;
    unsigned relgen, rp_gen; /* which decoder table_of's relations are of */
    uint64_t m_streamed, m_stream_aborts;
    size_t buffered;      /* change lines in memory */
    uint64_t spill_bytes; /* ... and in tenants' spill files (buffers and the flush's) */
    Flush *fl;
    int flush_due;

    /* metrics */
    uint64_t m_changes, m_txns, m_segments, m_bytes, m_flushes, m_flush_failures, m_unrouted,
        m_gaps, m_lookups, m_fetches;
    double m_lag_s;
    long long m_retained;
    uint64_t m_spilled;
    int64_t m_oldest_unflushed;
    char last_error[256];
};

static uint64_t now_ms(const Capture *c) {
    return uv_now(c->loop);
}

static void step_down(Capture *c, const char *why);
static void on_scope(PgConn *pc, PGresult *res, const Err *err, void *data);
static void advance(Capture *c);
static void process_held(Capture *c);
static void start_flush(Capture *c);
static void send_status(Capture *c, int reply);

/* ---- ops ---- */

static Op *op_new(Capture *c, int kind) {
    Op *o = xcalloc(1, sizeof(*o));
    o->c = c;
    o->gen = c->gen;
    o->kind = kind;
    c->ops++;
    return o;
}

static void maybe_free(Capture *c);

/* An Op answered: 1 when its answer still matters (same generation, not closing). */
static int op_end(Op *o) {
    Capture *c = o->c;
    int live = !c->closing && o->gen == c->gen;
    c->ops--;
    free(o);
    if (c->closing)
        maybe_free(c);
    return live;
}

static void retry(Capture *c, const char *what, const Err *err);

/* The usual answer of a database step: the Capture when the answer matters and succeeded; NULL
 * when it is stale, or failed (then the leader starts over from CONNECT: retry). */
static Capture *op_answer(void *data, const Err *err, const char *what) {
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o))
        return NULL;
    if (err) {
        retry(c, what, err);
        return NULL;
    }
    return c;
}

/* ---- tenants ---- */

static void tenant_free(void *p) {
    Tenant *t = p;
    if (t == NULL)
        return;
    if (t->spill) {
        fclose(t->spill); /* unlinked when made: gone */
        t->c->spill_bytes -= t->spill_len;
    }
    buf_free(&t->data);
    buf_free(&t->xids);
    buf_free(&t->txlist);
    free(t->counts);
    free(t->cur);
    free(t);
}

/* A table's counts as {"i":..,"u":..,"d":..,"t":..[,"w":..]} ("d" includes the where deletes). */
static void counts_obj(const int *n, Buf *out) {
    buf_printf(out, "{\"i\":%d,\"u\":%d,\"d\":%d,\"t\":%d", n[0], n[1], n[2] + n[4], n[3]);
    if (n[4])
        buf_printf(out, ",\"w\":%d", n[4]);
    buf_puts(out, "}");
}

/* The open transaction's summary onto the tenant's list: what the timeline shows. */
static void close_txn(Tenant *t) {
    if (!t->cur_open)
        return;
    char lsn[24], when[32];
    pgo_lsn_format(t->cur_lsn, lsn);
    pgo_time_format(t->cur_time, when);
    buf_printf(&t->txlist, "%s{\"xid\":%u,\"lsn\":\"%s\",\"time\":\"%s\",\"counts\":{",
               t->txlist.len ? "," : "", t->cur_xid, lsn, when);
    int first = 1;
    for (int k = 0; k < t->ncounts; k++) {
        int *n = t->cur[k];
        if (n[0] + n[1] + n[2] + n[3] + n[4] == 0)
            continue;
        buf_printf(&t->txlist, "%s\"%s\":", first ? "" : ",", scope_table(t->c->scope, k));
        counts_obj(n, &t->txlist);
        first = 0;
    }
    buf_puts(&t->txlist, "}}");
    t->cur_open = 0;
}

static Tenant *tenant_of(Capture *c, const char *user) {
    Tenant *t = strmap_get(c->buffers, user);
    if (t == NULL) {
        t = xcalloc(1, sizeof(*t));
        t->c = c;
        snprintf(t->user, sizeof(t->user), "%s", user);
        t->ncounts = scope_count(c->scope);
        t->counts = xcalloc((size_t)t->ncounts, sizeof(*t->counts));
        t->cur = xcalloc((size_t)t->ncounts, sizeof(*t->cur));
        strmap_put(c->buffers, user, t);
    }
    if (t->txn_seq != c->txn_seq) {
        close_txn(t);
        t->cur_open = 1;
        t->cur_xid = c->xid;
        t->cur_lsn = c->commit_lsn;
        t->cur_time = c->commit_time;
        memset(t->cur, 0, (size_t)t->ncounts * sizeof(*t->cur));
        t->txn_seq = c->txn_seq;
        t->txns++;
        buf_printf(&t->xids, "%s%u", t->xids.len ? "," : "", c->xid);
        if (t->first_lsn == 0) {
            t->first_lsn = c->commit_lsn;
            t->first_time = c->commit_time;
        }
    }
    t->last_lsn = c->commit_lsn;
    t->last_time = c->commit_time;
    return t;
}

static void count(Tenant *t, int table, char op) {
    int k = op == 'i' ? 0 : op == 'u' ? 1 : op == 'd' ? 2 : op == 't' ? 3 : 4;
    if (table >= 0 && table < t->ncounts) {
        t->counts[table][k]++;
        t->cur[table][k]++;
    }
    t->changes++;
}

/* A transaction larger than memory should hold (CAPTURE_SEGMENT_MB): every tenant's change
 * lines so far go to its spill file (txspill_file(), under TMPDIR), to be written from there at
 * the next flush. Memory stays bounded whatever the size of a transaction; the disk holds the
 * rest until its commit is flushed. -1 with err when the file cannot be written. */
static int spill(Capture *c, Err *err) {
    size_t pos = 0;
    const char *u;
    void *v;
    while (strmap_next(c->buffers, &pos, &u, &v)) {
        Tenant *t = v;
        if (t->data.len == 0)
            continue;
        if (t->spill == NULL && (t->spill = txspill_file()) == NULL) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "a spill file: %s", strerror(errno));
            return -1;
        }
        if (fwrite(t->data.data, 1, t->data.len, t->spill) != t->data.len ||
            fflush(t->spill) != 0) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "writing a spill file: %s", strerror(errno));
            return -1;
        }
        if (t->spill_len == 0)
            log_info(NULL, "capture: a transaction outgrew memory: user %s's changes go to disk",
                     t->user);
        t->spill_len += t->data.len;
        c->spill_bytes += t->data.len;
        c->m_spilled += t->data.len;
        c->buffered -= t->data.len;
        buf_free(&t->data);
    }
    return 0;
}

/* ---- lease ---- */

/* KEYS: lease, epoch. ARGV: me, ms, my epoch ("" to take a free lease). Returns the epoch held,
 * 0 when another holds it, -1 when ours was lost. */
static const char LEASE_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if ARGV[3] ~= '' then\n"
    "  if cur == ARGV[1] .. '|' .. ARGV[3] then\n"
    "    redis.call('PEXPIRE', KEYS[1], ARGV[2]); return tonumber(ARGV[3]) end\n"
    "  return -1\n"
    "end\n"
    "if cur then return 0 end\n"
    "local e = redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. '|' .. e, 'PX', ARGV[2])\n"
    "return e\n";

/* KEYS: epoch. ARGV: the epoch recorded in capture_state. The next lease's epoch is above it:
 * after Redis lost its data, the counter starts again from what PostgreSQL remembers. */
static const char RAISE_LUA[] =
    "local e = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if e < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "return 0\n";

static const char RELEASE_LUA[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                  "  return redis.call('DEL', KEYS[1]) end\n"
                                  "return 0\n";

static void claim(Capture *c);
static void on_released(RedisClient *rc, redisReply *r, const Err *err, void *data);

static void on_lease(RedisClient *rc, redisReply *r, const Err *err, void *data) {
    (void)rc;
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o))
        return;
    if (err || r == NULL || r->type != REDIS_REPLY_INTEGER) {
        /* Redis away: a leader keeps going while its lease may still run, not longer */
        if (c->epoch > 0 && now_ms(c) - c->lease_ok_ms > (uint64_t)c->jc->capture_lease_ms / 2)
            step_down(c, "the lease could not be renewed (Redis unreachable)");
        return;
    }
    long long e = r->integer;
    if (c->epoch > 0) {
        if (e == c->epoch) {
            c->lease_ok_ms = now_ms(c);
            return;
        }
        step_down(c, "the lease was lost (another worker holds it)");
        return;
    }
    if (e <= 0)
        return; /* another worker leads */
    c->epoch = e;
    c->lease_ok_ms = now_ms(c);
    log_info(NULL, "capture: leading with epoch %lld", e);
    claim(c);
}

static void lease(Capture *c) {
    char ms[32], ep[32];
    snprintf(ms, sizeof(ms), "%lld", c->jc->capture_lease_ms);
    if (c->epoch > 0)
        snprintf(ep, sizeof(ep), "%lld", c->epoch);
    else
        ep[0] = 0;
    const char *argv[] = {"EVAL", LEASE_LUA, "2", c->lease_key, c->epoch_key, c->me, ms, ep};
    Err err;
    Op *o = op_new(c, OP_LEASE);
    if (redis_command_argv(services_redis(c->sv), on_lease, o, 8, argv, NULL, &err) != 0)
        on_lease(services_redis(c->sv), NULL, &err, o);
}

static void on_released(RedisClient *rc, redisReply *r, const Err *err, void *data) {
    (void)rc, (void)r, (void)err;
    op_end(data);
}

static void release_lease(Capture *c) {
    if (c->epoch <= 0)
        return;
    char val[200];
    snprintf(val, sizeof(val), "%s|%lld", c->me, c->epoch);
    const char *argv[] = {"EVAL", RELEASE_LUA, "1", c->lease_key, val};
    Err err;
    Op *o = op_new(c, OP_LEASE);
    if (redis_command_argv(services_redis(c->sv), on_released, o, 5, argv, NULL, &err) != 0)
        op_end(o);
}

/* ---- stepping down, failing a step ---- */

static void clear_lookups(Capture *c) {
    for (int i = 0; i < 16; i++) {
        PQclear(c->fetched[i]);
        c->fetched[i] = NULL;
    }
    PQclear(c->row_fetch);
    PQclear(c->tenants);
    c->row_fetch = c->tenants = NULL;
}

static void flush_free(Flush *f) {
    if (f == NULL)
        return;
    for (int i = 0; i < f->n; i++) {
        Seg *s = &f->segs[i];
        storage_write_free(s->w);
        tenant_free(s->t);
        buf_free(&s->head);
        buf_free(&s->tail);
        buf_free(&s->chunk);
        free(s->wrapped);
        crypt_wipe(s->dek, sizeof(s->dek));
    }
    free(f->segs);
    strmap_free(f->owners, free);
    buf_free(&f->truncated);
    free(f);
}

/* What routing a message did. */
#define ROUTE_DONE 0
#define ROUTE_WAIT 1 /* a lookup or fetch started: the message is held */
#define ROUTE_FAIL -1

/* ---- protocol 2: streamed transactions ---- */

static void streams_reset(Capture *c) {
    txspill_reset(c->txs);
    if (c->rp_dec)
        pgo_decoder_free(c->rp_dec);
    c->rp_dec = NULL;
    txstream_free(c->rp);
    c->rp = NULL;
    free(c->rp_msg);
    c->rp_msg = NULL;
    c->in_block = 0;
}

/* Stream Abort: the transaction dropped, or a subtransaction's part of it cut off. */
static int stream_abort(Capture *c, uint32_t xid, uint32_t subxid, Err *err) {
    int64_t dropped = txspill_abort(c->txs, xid, subxid, err);
    if (dropped < 0)
        return -1;
    if (subxid == xid && dropped > 0) {
        c->m_stream_aborts++;
        log_info(NULL,
                 "capture: transaction %u, streamed before its end, aborted: %" PRId64
                 " bytes dropped",
                 xid, dropped);
    }
    return 0;
}

static int route_message(Capture *c, const PgoMessage *m, Err *err);
static void end_of_txn(Capture *c, uint64_t end_lsn);

/* Stream Commit: the transaction's messages routed now, in its commit's place, with their own
 * decoder (their Relation messages describe the tables as that transaction saw them). Resumed
 * after a lookup (ROUTE_WAIT) at the message it stopped at. */
static int replay(Capture *c, Err *err) {
    for (;;) {
        if (c->rp_msg == NULL) {
            int got = txstream_next(c->rp, &c->rp_msg, &c->rp_len, err);
            if (got < 0)
                return ROUTE_FAIL;
            if (got == 0)
                break; /* its end */
        }
        PgoMessage m;
        unsigned gen = c->relgen;
        c->relgen = c->rp_gen;
        int r = pgo_decode(c->rp_dec, c->rp_msg, c->rp_len, &m, err) != 0
                    ? ROUTE_FAIL
                    : route_message(c, &m, err);
        c->relgen = gen;
        if (r != ROUTE_DONE)
            return r;
        free(c->rp_msg);
        c->rp_msg = NULL;
        clear_lookups(c);
        /* a streamed transaction is a large one: its lines past memory go to disk as they come */
        if (c->buffered > (size_t)c->jc->capture_segment_bytes * SPILL_FACTOR && spill(c, err) != 0)
            return ROUTE_FAIL;
    }
    log_info(NULL,
             "capture: transaction %u, streamed before its commit (%" PRIu64
             " bytes kept on disk), routed at its commit",
             c->xid, txstream_bytes(c->rp));
    txstream_free(c->rp);
    c->rp = NULL;
    pgo_decoder_free(c->rp_dec);
    c->rp_dec = NULL;
    c->m_streamed++;
    end_of_txn(c, c->rp_end);
    return ROUTE_DONE;
}

static int stream_commit(Capture *c, const PgoMessage *m, Err *err) {
    if (c->rp == NULL) {
        c->rp = txspill_take(c->txs, m->xid);
        c->rp_dec = pgo_decoder_new();
        /* its messages carry their xid: the decoder is told they are of a streamed block */
        char start[6] = {
            'S', (char)(m->xid >> 24), (char)(m->xid >> 16), (char)(m->xid >> 8), (char)m->xid, 1};
        PgoMessage sm;
        if (pgo_decode(c->rp_dec, start, sizeof(start), &sm, err) != 0)
            return ROUTE_FAIL;
        c->rp_gen = ++c->relgen + 1000000u; /* apart from the main decoder's */
        c->rp_end = m->end_lsn;
        PgoMessage b = {.kind = 'B', .xid = m->xid, .lsn = m->lsn, .time = m->time};
        route_message(c, &b, err);
    }
    return replay(c, err);
}

static void drop_stream(Capture *c) {
    if (c->held) {
        pg_copy_free(c->held);
        c->held = NULL;
    }
    if (c->repl) {
        pg_conn_free(c->repl);
        c->repl = NULL;
    }
    pgo_decoder_free(c->dec);
    c->dec = NULL;
    for (int i = 0; i < c->nrels; i++)
        changes_table_free(c->tables[i]);
    free(c->tables);
    free(c->relids);
    free(c->relver);
    free(c->relgens);
    c->tables = NULL;
    c->relids = NULL;
    c->relver = c->relgens = NULL;
    c->nrels = 0;
    streams_reset(c);
    strmap_free(c->buffers, tenant_free);
    c->buffers = strmap_new();
    c->buffered = 0;
    strmap_free(c->pend, free);
    c->pend = strmap_new();
    buf_reset(&c->pend_truncated);
    strmap_free(c->cache, free);
    c->cache = strmap_new();
    clear_lookups(c);
    flush_free(c->fl);
    c->fl = NULL;
    c->in_txn = c->skip_txn = c->paused = c->flush_due = 0;
    c->received = c->server_end = c->last_end = c->idle_end = 0;
}

/* Give up leading: what is not recorded is replayed by the next leader. */
static void step_down(Capture *c, const char *why) {
    if (c->epoch > 0)
        log_warn(NULL, "capture: stepping down (epoch %lld): %s", c->epoch, why);
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    c->gen++;
    drop_stream(c);
    release_lease(c);
    c->epoch = 0;
    c->state = CAP_IDLE;
}

/* A setup or stream step failed: keep the lease, start over from CONNECT a little later. */
static void retry(Capture *c, const char *what, const Err *err) {
    log_warn(NULL, "capture: %s: %s (again in %d s)", what, err ? err->msg : "failed",
             RETRY_MS / 1000);
    snprintf(c->last_error, sizeof(c->last_error), "%s: %.200s", what, err ? err->msg : "failed");
    c->gen++;
    drop_stream(c);
    c->state = CAP_CLAIM;
    c->retry_at_ms = now_ms(c) + RETRY_MS;
}

/* ---- CLAIM: our epoch into capture_state ---- */

static void on_claimed(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Capture *c = op_answer(data, err, "recording the epoch");
    if (c == NULL)
        return;
    if (PQntuples(res) != 1) {
        step_down(c, "a newer leader recorded its epoch");
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 3), "t") != 0) {
        /* capture_state holds a higher epoch than Redis gave: Redis lost its data (or another
         * leader is newer). Raise the counter past it and try again at the next tick */
        const char *argv[] = {"EVAL", RAISE_LUA, "1", c->epoch_key, PQgetvalue(res, 0, 4)};
        Err e;
        Op *ro = op_new(c, OP_LEASE);
        if (redis_command_argv(services_redis(c->sv), on_released, ro, 5, argv, NULL, &e) != 0)
            op_end(ro);
        step_down(c, "capture_state records a newer epoch");
        return;
    }
    if (pgo_lsn_parse(PQgetvalue(res, 0, 0), &c->confirmed) != 0)
        c->confirmed = 0;
    snprintf(c->stored_system, sizeof(c->stored_system), "%s", PQgetvalue(res, 0, 1));
    c->stored_timeline = atoi(PQgetvalue(res, 0, 2));
    /* the scope as it is now (a column may have changed while no one captured) */
    pg_pool_query(services_pg(c->sv), scope_load_sql(), 0, NULL, on_scope, op_new(c, OP_SCOPE));
}

static void claim(Capture *c) {
    c->state = CAP_CLAIM;
    char ep[32];
    snprintf(ep, sizeof(ep), "%lld", c->epoch);
    const char *v[] = {c->jc->capture_slot, ep, c->me};
    pg_pool_query(services_pg(c->sv),
                  "WITH up AS (INSERT INTO capture_state (slot_name, epoch, leader) "
                  "VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET slot_name = "
                  "EXCLUDED.slot_name, epoch = EXCLUDED.epoch, leader = EXCLUDED.leader, "
                  "updated_at = now() WHERE capture_state.epoch <= EXCLUDED.epoch "
                  "RETURNING confirmed_lsn::text, coalesce(system_identifier, ''), "
                  "coalesce(timeline, 0), true, epoch) "
                  "SELECT * FROM up UNION ALL SELECT confirmed_lsn::text, '', 0, false, epoch "
                  "FROM capture_state WHERE NOT EXISTS (SELECT 1 FROM up)",
                  3, v, on_claimed, op_new(c, OP_CLAIM));
}

/* ---- the replication connection ---- */

static void on_repl_result(PgConn *pc, PGresult *res, const Err *err, void *data);

static void repl_query(Capture *c, const char *sql) {
    Err err;
    if (pg_conn_simple_query(c->repl, sql, on_repl_result, op_new(c, 0), &err) != 0)
        retry(c, "replication command", &err);
}

static void on_repl_connected(PgConn *pc, const Err *err, void *data) {
    (void)pc;
    Capture *c = op_answer(data, err, "replication connection");
    if (c == NULL)
        return;
    c->state = CAP_IDENTIFY;
    repl_query(c, "IDENTIFY_SYSTEM");
}

/* DATABASE_URL with replication=database and DateStyle ISO (the values' text as in backups),
 * and the walsender's memory for a transaction before it streams it (decoding_kb, 0: the
 * server's). */
static void repl_conninfo(const char *url, int decoding_kb, Buf *out) {
    int uri = strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
    char mem[64] = "";
    if (uri) {
        if (decoding_kb > 0)
            snprintf(mem, sizeof(mem), "%%20-c%%20logical_decoding_work_mem%%3D%dkB", decoding_kb);
        buf_printf(out, "%s%sreplication=database&options=-c%%20datestyle%%3DISO%s", url,
                   strchr(url, '?') ? "&" : "?", mem);
    } else {
        if (decoding_kb > 0)
            snprintf(mem, sizeof(mem), " -c logical_decoding_work_mem=%dkB", decoding_kb);
        buf_printf(out, "%s replication=database options='-c datestyle=ISO%s'", url, mem);
    }
}

static void connect_repl(Capture *c) {
    Buf ci = BUF_INIT;
    repl_conninfo(services_config(c->sv)->database_url, c->jc->capture_decoding_kb, &ci);
    c->repl = pg_conn_new(c->loop, ci.data, 10000, on_repl_connected, op_new(c, 0));
    buf_free(&ci);
}

static void start_replication(Capture *c);
static void reset_owners(Capture *c);

static void create_slot(Capture *c) {
    c->state = CAP_CREATE;
    Buf sql = BUF_INIT;
    buf_printf(&sql, "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput (SNAPSHOT 'export')",
               c->jc->capture_slot);
    repl_query(c, sql.data);
    buf_free(&sql);
}

static void note_gap(Capture *c, const char *fmt, const char *a, const char *b) {
    if (c->gap[0] == 0)
        snprintf(c->gap, sizeof(c->gap), fmt, a, b);
}

static void on_repl_result(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Capture *c = op_answer(data, err, state_names[((Op *)data)->c->state]);
    if (c == NULL)
        return;
    switch (c->state) {
    case CAP_IDENTIFY: {
        if (PQntuples(res) != 1 || PQnfields(res) < 2) {
            retry(c, "IDENTIFY_SYSTEM", NULL);
            return;
        }
        snprintf(c->system, sizeof(c->system), "%s", PQgetvalue(res, 0, 0));
        c->timeline = atoi(PQgetvalue(res, 0, 1));
        c->gap[0] = 0;
        char tl[16], was[16];
        snprintf(tl, sizeof(tl), "%d", c->timeline);
        snprintf(was, sizeof(was), "%d", c->stored_timeline);
        if (c->stored_system[0] && strcmp(c->stored_system, c->system) != 0)
            note_gap(c, "the database system changed (identifier %s, was %s)", c->system,
                     c->stored_system);
        else if (c->stored_timeline && c->stored_timeline != c->timeline)
            note_gap(c, "the timeline changed to %s (was %s): a failover or a restore", tl, was);
        c->state = CAP_SLOT;
        Buf sql = BUF_INIT;
        buf_printf(&sql,
                   "SELECT coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, '') "
                   "FROM pg_replication_slots WHERE slot_name = '%s' "
                   "AND database = current_database()",
                   c->jc->capture_slot);
        repl_query(c, sql.data);
        buf_free(&sql);
        return;
    }
    case CAP_SLOT: {
        int exists = PQntuples(res) == 1;
        int lost = exists && strcmp(PQgetvalue(res, 0, 0), "lost") == 0;
        if (!exists && c->confirmed != 0)
            note_gap(c, "the replication slot %s was dropped%s", c->jc->capture_slot, "");
        if (lost)
            note_gap(c,
                     "the replication slot %s was invalidated (its WAL was removed: "
                     "max_slot_wal_keep_size exceeded)%s",
                     c->jc->capture_slot, "");
        if (exists && c->confirmed == 0)
            note_gap(c, "capture_state was lost while the slot %s remained%s", c->jc->capture_slot,
                     "");
        if (exists && c->gap[0]) {
            c->state = CAP_DROP;
            Buf sql = BUF_INIT;
            buf_printf(&sql, "DROP_REPLICATION_SLOT \"%s\"", c->jc->capture_slot);
            repl_query(c, sql.data);
            buf_free(&sql);
            return;
        }
        if (!exists) {
            create_slot(c);
            return;
        }
        c->start_lsn = c->confirmed;
        start_replication(c);
        return;
    }
    case CAP_DROP:
        create_slot(c);
        return;
    case CAP_CREATE: {
        /* slot_name, consistent_point, snapshot_name, output_plugin */
        if (PQntuples(res) != 1 || PQnfields(res) < 3 ||
            pgo_lsn_parse(PQgetvalue(res, 0, 1), &c->start_lsn) != 0) {
            retry(c, "CREATE_REPLICATION_SLOT", NULL);
            return;
        }
        const char *snap = PQgetvalue(res, 0, 2);
        if (strspn(snap, "0123456789ABCDEFabcdef-") != strlen(snap) || strlen(snap) >= 64) {
            retry(c, "CREATE_REPLICATION_SLOT: unexpected snapshot name", NULL);
            return;
        }
        snprintf(c->snapshot, sizeof(c->snapshot), "%s", snap);
        char lsn[24];
        pgo_lsn_format(c->start_lsn, lsn);
        log_info(NULL, "capture: slot %s created at %s%s%s", c->jc->capture_slot, lsn,
                 c->gap[0] ? "; gap: " : "", c->gap);
        reset_owners(c);
        return;
    }
    default:
        return;
    }
}

/* ---- RESET: owners loaded in the slot's snapshot, gap recorded ---- */

static void on_reset(PgConn *pc, PGresult *const *res, int n, const Err *err, void *data) {
    (void)res, (void)n;
    Op *o = data;
    Capture *c = o->c;
    PgPool *pool = services_pg(c->sv);
    pg_pool_release(pool, pc);
    if (!op_end(o))
        return;
    if (err) {
        if (strstr(err->msg, "stale"))
            step_down(c, "a newer leader recorded its epoch");
        else
            retry(c, "loading the owners in the slot's snapshot", err);
        return;
    }
    if (c->gap[0]) {
        c->m_gaps++;
        log_warn(NULL, "capture: gap recorded: %s (every user's next backup is full)", c->gap);
    }
    c->confirmed = c->start_lsn;
    start_replication(c);
}

static void on_reset_conn(PgPool *pool, PgConn *conn, const Err *err, void *data) {
    Op *o = data;
    Capture *c = o->c;
    if (err) {
        if (op_end(o))
            retry(c, "a database connection", err);
        return;
    }
    if (c->closing || o->gen != c->gen) {
        pg_pool_release(pool, conn);
        op_end(o);
        return;
    }
    char ep[32], lsn[24], tl[16], snapsql[128];
    snprintf(ep, sizeof(ep), "%lld", c->epoch);
    pgo_lsn_format(c->start_lsn, lsn);
    snprintf(tl, sizeof(tl), "%d", c->timeline);
    snprintf(snapsql, sizeof(snapsql), "SET TRANSACTION SNAPSHOT '%s'", c->snapshot);
    const char *v[] = {ep, lsn, c->system, tl, c->gap[0] ? c->gap : NULL};
    PgStmt st[] = {
        {"BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL, 0, 0},
        {snapsql, 0, NULL, 0, 0},
        {"SELECT capture_reset($1, $2, $3, $4, $5)", 5, v, 0, 0},
        {"COMMIT", 0, NULL, 1, 0},
    };
    Err e;
    if (pg_conn_pipeline(conn, st, 4, on_reset, o, &e) != 0) {
        pg_pool_release(pool, conn);
        if (op_end(o))
            retry(c, "loading the owners", &e);
    }
}

static void reset_owners(Capture *c) {
    c->state = CAP_RESET;
    pg_pool_acquire(services_pg(c->sv), on_reset_conn, op_new(c, OP_RESET));
}

/* ---- STREAM ---- */

static int on_copy_data(PgConn *pc, const char *buf, size_t len, void *data);

static void on_stream_end(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc, (void)res;
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o))
        return;
    Err e;
    if (err == NULL)
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CONNECT, "the server ended the stream");
    retry(c, "replication stream", err ? err : &e);
}

static void start_replication(Capture *c) {
    c->state = CAP_STREAM;
    c->dec = pgo_decoder_new();
    char lsn[24];
    pgo_lsn_format(c->start_lsn, lsn);
    Buf sql = BUF_INIT;
    buf_printf(&sql,
               "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '2', "
               "publication_names '\"%s\"', streaming 'on')",
               c->jc->capture_slot, lsn, PUBLICATION);
    Err err;
    Op *o = op_new(c, 0);
    if (pg_conn_copy_both(c->repl, sql.data, on_copy_data, on_stream_end, o, &err) != 0) {
        op_end(o);
        retry(c, "START_REPLICATION", &err);
    } else {
        log_info(NULL, "capture: streaming from %s", lsn);
        c->last_error[0] = 0;
        c->last_status_ms = now_ms(c);
    }
    buf_free(&sql);
}

/* The scope table a relation is, or NULL (not in scope: its changes are not ours). */
static ChangesTable *table_of(Capture *c, const PgoRelation *rel, Err *err) {
    for (int i = 0; i < c->nrels; i++)
        if (c->relids[i] == rel->relid) {
            if (c->relver[i] == rel->version && c->relgens[i] == c->relgen)
                return c->tables[i];
            changes_table_free(c->tables[i]);
            c->tables[i] = NULL;
            c->relver[i] = rel->version;
            c->relgens[i] = c->relgen;
            int si = strcmp(rel->nspname, "public") == 0 ? scope_find(c->scope, rel->relname) : -1;
            if (si >= 0)
                c->tables[i] = changes_table_new(c->scope, si, rel, err);
            return c->tables[i];
        }
    c->tables = xrealloc(c->tables, (size_t)(c->nrels + 1) * sizeof(*c->tables));
    c->relids = xrealloc(c->relids, (size_t)(c->nrels + 1) * sizeof(*c->relids));
    c->relver = xrealloc(c->relver, (size_t)(c->nrels + 1) * sizeof(*c->relver));
    c->relgens = xrealloc(c->relgens, (size_t)(c->nrels + 1) * sizeof(*c->relgens));
    c->relids[c->nrels] = rel->relid;
    c->relver[c->nrels] = rel->version;
    c->relgens[c->nrels] = c->relgen;
    int si = strcmp(rel->nspname, "public") == 0 ? scope_find(c->scope, rel->relname) : -1;
    c->tables[c->nrels] = si >= 0 ? changes_table_new(c->scope, si, rel, err) : NULL;
    return c->tables[c->nrels++];
}

/* ---- owners ---- */

static void owner_key(const char *table, const char *key, Buf *out) {
    buf_reset(out);
    buf_printf(out, "%s\x1f%s", table, key);
}

static int table_truncated(const Buf *list, const char *table) {
    char pat[SCOPE_NAME_MAX + 3];
    snprintf(pat, sizeof(pat), ",%s,", table);
    return list->len && strstr(list->data, pat) != NULL;
}

/* The owner of a parent row at the commit being read: 1 with user ("" when the row is gone or
 * has none), 0 when only the database can say (a lookup is needed). */
static int owner_known(Capture *c, const char *table, const char *key, char user[37]) {
    Buf k = BUF_INIT;
    owner_key(table, key, &k);
    const char *u = strmap_get(c->pend, k.data);
    if (!u && table_truncated(&c->pend_truncated, table))
        u = "";
    if (!u && c->fl)
        u = strmap_get(c->fl->owners, k.data);
    if (!u && c->fl && table_truncated(&c->fl->truncated, table))
        u = "";
    if (!u)
        u = strmap_get(c->cache, k.data);
    if (u && !u[0] && strmap_get(c->txn_gone, k.data))
        u = strmap_get(c->txn_gone, k.data);
    buf_free(&k);
    if (!u)
        return 0;
    snprintf(user, 37, "%s", u);
    return 1;
}

static void owner_set(Capture *c, const char *table, const char *key, const char *user) {
    Buf k = BUF_INIT;
    owner_key(table, key, &k);
    free(strmap_put(c->pend, k.data, xstrdup(user ? user : "")));
    buf_free(&k);
}

static void on_lookup(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Op *o = data;
    Capture *c = o->c;
    char *k = o->key;
    if (!op_end(o)) {
        free(k);
        return;
    }
    if (err) {
        free(k);
        retry(c, "looking up an owner", err);
        return;
    }
    if (strmap_count(c->cache) > CACHE_MAX) {
        strmap_free(c->cache, free);
        c->cache = strmap_new();
    }
    free(strmap_put(c->cache, k, xstrdup(PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "")));
    free(k);
    process_held(c);
}

static void lookup(Capture *c, const char *table, const char *key) {
    Buf k = BUF_INIT;
    owner_key(table, key, &k);
    Op *o = op_new(c, OP_LOOKUP);
    o->key = buf_steal(&k);
    const char *v[] = {table, key};
    c->m_lookups++;
    pg_pool_query(services_pg(c->sv),
                  "SELECT user_id::text FROM capture_owners WHERE table_name = $1 AND row_key = $2",
                  2, v, on_lookup, o);
}

/* ---- fetches: rows the WAL does not carry ---- */

static void on_fetch(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Op *o = data;
    Capture *c = o->c;
    int slot = o->slot;
    int kind = o->kind;
    if (op_answer(o, err, "reading rows the WAL does not carry") == NULL)
        return;
    PGresult *copy = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (kind == OP_TENANTS)
        c->tenants = copy;
    else if (slot < 0)
        c->row_fetch = copy;
    else
        c->fetched[slot] = copy;
    process_held(c);
}

static void fetch(Capture *c, int kind, int slot, const char *sql, int n, const char *const *v) {
    Op *o = op_new(c, kind);
    o->slot = slot;
    c->m_fetches++;
    pg_pool_query(services_pg(c->sv), sql, n, v, on_fetch, o);
}

/* A PGresult row as a tuple (text values), for changes_line. */
static void tuple_of_row(const PGresult *res, int r, PgoValue *vals, PgoTuple *t) {
    t->n = PQnfields(res);
    t->v = vals;
    for (int f = 0; f < t->n; f++) {
        vals[f].kind = PQgetisnull(res, r, f) ? 'n' : 't';
        vals[f].val = PQgetvalue(res, r, f);
        vals[f].len = (uint32_t)PQgetlength(res, r, f);
    }
}

/* ---- routing one change ---- */

static int append(Capture *c, ChangesTable *t, const char *user, char op, const char *key,
                  const PgoTuple *row, Err *err) {
    if (user == NULL || user[0] == 0) {
        c->m_unrouted++;
        return ROUTE_DONE;
    }
    Tenant *tn = tenant_of(c, user);
    ChangesMeta m = {c->commit_lsn, c->commit_time, c->xid, op};
    size_t before = tn->data.len;
    if (changes_line(t, &m, key, row, &tn->data, err) != 0)
        return ROUTE_FAIL;
    count(tn, changes_table_index(t), op);
    c->buffered += tn->data.len - before;
    c->m_changes++;
    return ROUTE_DONE;
}

/* The owner of a row of t in tup: its user column, or its parent's owner. */
static int owner_of(Capture *c, ChangesTable *t, const PgoTuple *tup, char user[37], Buf *tmp) {
    user[0] = 0;
    if (changes_user_col(t) >= 0) {
        if (changes_value(tup, changes_user_col(t), tmp) == 0)
            snprintf(user, 37, "%s", tmp->data);
        return ROUTE_DONE;
    }
    if (changes_parent_col(t) < 0)
        return ROUTE_DONE;
    if (changes_value(tup, changes_parent_col(t), tmp) != 0)
        return ROUTE_DONE; /* no parent: nobody's */
    int pi = scope_parent_index(c->scope, changes_table_index(t));
    const char *ptable = pi >= 0 ? scope_table(c->scope, pi) : "";
    if (owner_known(c, ptable, tmp->data, user))
        return ROUTE_DONE;
    lookup(c, ptable, tmp->data);
    return ROUTE_WAIT;
}

/* 1 when table i has children in scope (its owners are kept). */
static int is_parent(const Scope *s, int i) {
    for (int k = 0; k < scope_count(s); k++)
        if (scope_parent_index(s, k) == i)
            return 1;
    return 0;
}

/* The children of a parent row that moved: every child table's rows of that parent, read from
 * the database (the WAL does not carry rows that did not change). ROUTE_WAIT while a read runs;
 * nothing is written before all are read (the message is handled again from the start). */
static int children_read(Capture *c, ChangesTable *t, const char *pkey) {
    int ti = changes_table_index(t);
    int slot = 0;
    for (int k = 0; k < scope_count(c->scope) && slot < 16; k++) {
        if (scope_parent_index(c->scope, k) != ti)
            continue;
        if (c->fetched[slot] == NULL) {
            Buf sql = BUF_INIT;
            buf_puts(&sql, "SELECT ");
            int nc = scope_stage_columns(c->scope, k);
            for (int col = 0; col < nc; col++) {
                char kind;
                buf_printf(&sql, "%s\"%s\"::text", col ? ", " : "",
                           scope_stage_column(c->scope, k, col, &kind));
            }
            buf_printf(&sql, " FROM \"%s\" WHERE \"%s\"::text = $1", scope_table(c->scope, k),
                       scope_parent_column(c->scope, k));
            const char *v[] = {pkey};
            fetch(c, OP_FETCH, slot, sql.data, 1, v);
            buf_free(&sql);
            return ROUTE_WAIT;
        }
        slot++;
    }
    return ROUTE_DONE;
}

/* ... then written: for the owner the parent left, one delete of every child of it (whatever
 * they were at the move's commit: exact even for a child changed or deleted since); for the new
 * owner, each child as it is now (read after the commit: a child changed since comes early,
 * then again with its own change; the final state is exact either way). */
static int children_move(Capture *c, ChangesTable *t, const char *pkey, const char *from,
                         const char *to, Err *err) {
    int ti = changes_table_index(t);
    int slot = 0;
    for (int k = 0; k < scope_count(c->scope) && slot < 16; k++) {
        if (scope_parent_index(c->scope, k) != ti)
            continue;
        PGresult *res = c->fetched[slot++];
        if (from && from[0]) {
            Tenant *tn = tenant_of(c, from);
            ChangesMeta m = {c->commit_lsn, c->commit_time, c->xid, 'd'};
            size_t before = tn->data.len;
            changes_where_delete_line(scope_table(c->scope, k), scope_parent_column(c->scope, k),
                                      pkey, &m, &tn->data);
            count(tn, k, 'w');
            c->buffered += tn->data.len - before;
        }
        /* the rows were read as the scope's staged columns: a relation of those, in order */
        int nc = scope_stage_columns(c->scope, k);
        PgoRelation rel = {0};
        rel.ncols = nc;
        rel.nspname = "public";
        rel.relname = (char *)scope_table(c->scope, k);
        rel.cols = xcalloc((size_t)nc + 1, sizeof(PgoColumn));
        for (int col = 0; col < nc; col++) {
            char kind;
            rel.cols[col].name = (char *)scope_stage_column(c->scope, k, col, &kind);
        }
        ChangesTable *ct = changes_table_new(c->scope, k, &rel, err);
        free(rel.cols);
        if (ct == NULL)
            return ROUTE_FAIL;
        PgoValue *vals = xcalloc((size_t)nc + 1, sizeof(PgoValue));
        int kcol = changes_key_col(ct);
        int rc = ROUTE_DONE;
        for (int r = 0; r < PQntuples(res) && rc == ROUTE_DONE; r++) {
            PgoTuple tup;
            tuple_of_row(res, r, vals, &tup);
            const char *ckey = PQgetvalue(res, r, kcol);
            rc = append(c, ct, to, 'i', ckey, &tup, err);
            if (rc == ROUTE_DONE && is_parent(c->scope, k))
                owner_set(c, scope_table(c->scope, k), ckey, to);
        }
        free(vals);
        changes_table_free(ct);
        if (rc != ROUTE_DONE)
            return rc;
    }
    return ROUTE_DONE;
}

/* One insert, update or delete. Everything it needs to know is gathered first (owners, rows
 * the WAL lacks: each may hold the message for a lookup), and only then is anything written,
 * so that a message handled again after a lookup writes its changes once. */
static int route_change(Capture *c, const PgoMessage *m, Err *err) {
    ChangesTable *t = table_of(c, m->rel, err);
    if (t == NULL)
        return err_is_set(err) ? ROUTE_FAIL : ROUTE_DONE;
    int ti = changes_table_index(t);
    const char *tname = changes_table_name(t);
    Buf key = BUF_INIT, oldkey = BUF_INIT, tmp = BUF_INIT;
    char user[37], old_user[37];
    int rc = ROUTE_DONE;
    PgoValue *vals = NULL;
    const PgoTuple *keyed = m->kind == 'D' ? &m->old_tuple : &m->new_tuple;
    if (changes_value(keyed, changes_key_col(t), &key) != 0) {
        c->m_unrouted++;
        goto out;
    }
    if (m->kind == 'D') {
        rc = owner_of(c, t, &m->old_tuple, user, &tmp);
        if (rc == ROUTE_DONE)
            rc = append(c, t, user, 'd', key.data, NULL, err);
        if (rc == ROUTE_DONE && is_parent(c->scope, ti)) {
            owner_set(c, tname, key.data, NULL);
            owner_key(tname, key.data, &tmp);
            free(strmap_put(c->txn_gone, tmp.data, xstrdup(user)));
        }
        goto out;
    }
    rc = owner_of(c, t, &m->new_tuple, user, &tmp);
    if (rc != ROUTE_DONE)
        goto out;
    /* the old key comes only when the identity (owner, key) changed: the row moved */
    int moved = 0, owner_moved = 0;
    if (m->kind == 'U' && m->old_kind) {
        rc = owner_of(c, t, &m->old_tuple, old_user, &tmp);
        if (rc != ROUTE_DONE)
            goto out;
        if (changes_value(&m->old_tuple, changes_key_col(t), &oldkey) == 0 &&
            (strcmp(old_user, user) != 0 || strcmp(oldkey.data, key.data) != 0))
            moved = 1;
        owner_moved = moved && strcmp(old_user, user) != 0;
    }
    const PgoTuple *row = &m->new_tuple;
    PgoTuple fetched;
    if (owner_moved && changes_has_unchanged(t, row)) {
        /* the new owner has no earlier row to carry the TOASTed values from: read it */
        if (c->row_fetch == NULL) {
            Buf sql = BUF_INIT;
            buf_puts(&sql, "SELECT ");
            changes_select_list(t, &sql);
            buf_printf(&sql, " FROM \"%s\" WHERE \"%s\"::text = $1", tname,
                       scope_key_column(c->scope, ti));
            const char *v[] = {key.data};
            fetch(c, OP_FETCH, -1, sql.data, 1, v);
            buf_free(&sql);
            rc = ROUTE_WAIT;
            goto out;
        }
        if (PQntuples(c->row_fetch) == 1) {
            vals = xcalloc((size_t)PQnfields(c->row_fetch) + 1, sizeof(PgoValue));
            tuple_of_row(c->row_fetch, 0, vals, &fetched);
            row = &fetched;
        }
    }
    if (owner_moved && is_parent(c->scope, ti)) {
        rc = children_read(c, t, key.data);
        if (rc != ROUTE_DONE)
            goto out;
    }
    /* all known: write */
    if (moved)
        rc = append(c, t, old_user, 'd', oldkey.data, NULL, err);
    if (rc == ROUTE_DONE)
        rc = append(c, t, user, moved ? 'i' : m->kind == 'I' ? 'i' : 'u', key.data, row, err);
    if (rc == ROUTE_DONE && is_parent(c->scope, ti)) {
        if (moved && strcmp(oldkey.data, key.data) != 0)
            owner_set(c, tname, oldkey.data, NULL);
        owner_set(c, tname, key.data, user);
    }
    if (rc == ROUTE_DONE && owner_moved && is_parent(c->scope, ti))
        rc = children_move(c, t, key.data, old_user, user, err);
out:
    free(vals);
    buf_free(&key);
    buf_free(&oldkey);
    buf_free(&tmp);
    return rc;
}

/* TRUNCATE: a marker for every tenant with history (a backup or a segment) or buffered
 * changes, for each table truncated in scope. */
static int route_truncate(Capture *c, const PgoMessage *m, Err *err) {
    (void)err;
    int any = 0;
    for (int i = 0; i < m->nrels; i++)
        if (m->rels[i] && table_of(c, m->rels[i], err))
            any = 1;
    if (!any)
        return ROUTE_DONE;
    if (c->tenants == NULL) {
        fetch(c, OP_TENANTS, 0,
              "SELECT user_id::text FROM backup_metadata UNION "
              "SELECT user_id::text FROM change_segments",
              0, NULL);
        return ROUTE_WAIT;
    }
    StrMap *users = strmap_new();
    for (int r = 0; r < PQntuples(c->tenants); r++)
        strmap_put(users, PQgetvalue(c->tenants, r, 0), (void *)1);
    size_t pos = 0;
    const char *u;
    void *v;
    while (strmap_next(c->buffers, &pos, &u, &v))
        strmap_put(users, u, (void *)1);
    if (c->fl)
        for (int s = 0; s < c->fl->n; s++)
            strmap_put(users, c->fl->segs[s].t->user, (void *)1);
    for (int i = 0; i < m->nrels; i++) {
        ChangesTable *t = m->rels[i] ? table_of(c, m->rels[i], err) : NULL;
        if (t == NULL)
            continue;
        ChangesMeta meta = {c->commit_lsn, c->commit_time, c->xid, 't'};
        pos = 0;
        while (strmap_next(users, &pos, &u, &v)) {
            Tenant *tn = tenant_of(c, u);
            size_t before = tn->data.len;
            changes_truncate_line(changes_table_name(t), &meta, &tn->data);
            count(tn, changes_table_index(t), 't');
            c->buffered += tn->data.len - before;
        }
        if (is_parent(c->scope, changes_table_index(t))) {
            /* every owner of that table is gone: drop the pending ones, mark the table */
            const char *tn = changes_table_name(t);
            if (!table_truncated(&c->pend_truncated, tn))
                buf_printf(&c->pend_truncated, "%s%s,", c->pend_truncated.len ? "" : ",", tn);
            Buf prefix = BUF_INIT;
            buf_printf(&prefix, "%s\x1f", tn);
            StrMap *keep = strmap_new();
            pos = 0;
            const char *k;
            while (strmap_next(c->pend, &pos, &k, &v))
                if (strncmp(k, prefix.data, prefix.len) != 0)
                    strmap_put(keep, k, xstrdup(v));
            strmap_free(c->pend, free);
            c->pend = keep;
            buf_free(&prefix);
        }
    }
    strmap_free(users, NULL);
    return ROUTE_DONE;
}

/* One pgoutput message. */
/* A transaction's end (Commit, or a streamed one's replay done). */
static void end_of_txn(Capture *c, uint64_t end_lsn) {
    c->in_txn = 0;
    c->last_end = end_lsn;
    if (!c->skip_txn)
        c->m_txns++;
    c->skip_txn = 0;
    if (c->flush_due || c->buffered + c->spill_bytes >= (uint64_t)c->jc->capture_segment_bytes)
        start_flush(c);
}

static int handle_message(Capture *c, const char *buf, size_t len, Err *err) {
    if (c->rp) /* a Stream Commit held across a lookup */
        return replay(c, err);
    if (c->in_block && len > 0 && buf[0] != 'E') { /* a message of a streamed block, as it came */
        if (txspill_keep(c->txs, c->block_xid, buf, len, err) != 0)
            return ROUTE_FAIL;
        c->m_spilled += len + 4;
        return ROUTE_DONE;
    }
    PgoMessage m;
    if (pgo_decode(c->dec, buf, len, &m, err) != 0)
        return ROUTE_FAIL;
    switch (m.kind) {
    case 'S':
        c->in_block = 1;
        c->block_xid = m.xid;
        return ROUTE_DONE;
    case 'E':
        c->in_block = 0;
        return ROUTE_DONE;
    case 'A':
        return stream_abort(c, m.xid, m.subxid, err) == 0 ? ROUTE_DONE : ROUTE_FAIL;
    case 'c':
        return stream_commit(c, &m, err);
    default:
        return route_message(c, &m, err);
    }
}

static int route_message(Capture *c, const PgoMessage *mp, Err *err) {
    const PgoMessage m = *mp;
    switch (m.kind) {
    case 'B':
        c->in_txn = 1;
        c->xid = m.xid;
        c->commit_lsn = m.lsn;
        c->commit_time = m.time;
        c->txn_seq++;
        if (strmap_count(c->txn_gone)) {
            strmap_free(c->txn_gone, free);
            c->txn_gone = strmap_new();
        }
        /* a transaction the recorded position covers (a replay): not again */
        c->skip_txn = m.lsn < c->confirmed;
        return ROUTE_DONE;
    case 'C':
        end_of_txn(c, m.end_lsn);
        return ROUTE_DONE;
    case 'R':
        /* described again: its columns changed (DDL). The scope's columns are read again
         * first, so that a column added is written and one dropped is not looked for */
        if (m.rel->version > 0 && !c->scope_fresh) {
            pg_pool_query(services_pg(c->sv), scope_load_sql(), 0, NULL, on_scope,
                          op_new(c, OP_SCOPE));
            return ROUTE_WAIT;
        }
        c->scope_fresh = 0;
        return table_of(c, m.rel, err) == NULL && err_is_set(err) ? ROUTE_FAIL : ROUTE_DONE;
    case 'I':
    case 'U':
    case 'D':
        return c->skip_txn ? ROUTE_DONE : route_change(c, &m, err);
    case 'T':
        return c->skip_txn ? ROUTE_DONE : route_truncate(c, &m, err);
    default:
        return ROUTE_DONE; /* Origin, Type, Message: nothing to route */
    }
}

/* Re-run the held message now that what it waited for is known. */
static void process_held(Capture *c) {
    if (c->held == NULL || c->state != CAP_STREAM)
        return;
    PgoFrame f;
    Err err;
    err_clear(&err);
    if (pgo_frame_parse(c->held, c->held_len, &f, &err) != 0) {
        retry(c, "replication frame", &err);
        return;
    }
    int r = handle_message(c, f.data, f.len, &err);
    if (r == ROUTE_WAIT)
        return;
    pg_copy_free(c->held);
    c->held = NULL;
    clear_lookups(c);
    if (r == ROUTE_FAIL) {
        retry(c, "decoding a change", &err);
        return;
    }
    if (!c->paused)
        pg_conn_copy_resume(c->repl);
}

static int on_copy_data(PgConn *pc, const char *buf, size_t len, void *data) {
    (void)pc;
    Capture *c = ((Op *)data)->c; /* the stream's Op: it lives until the stream ends */
    if (c->closing || c->state != CAP_STREAM)
        return PG_COPY_CONTINUE;
    PgoFrame f;
    Err err;
    err_clear(&err);
    if (pgo_frame_parse(buf, len, &f, &err) != 0) {
        retry(c, "replication frame", &err);
        return PG_COPY_PAUSE;
    }
    if (f.wal_end > c->server_end)
        c->server_end = f.wal_end;
    if (f.kind == 'k') {
        if (f.reply) {
            /* nothing of a tenant pending: what the server sent can be confirmed now (a server
             * shutting down waits for exactly that) */
            if (!c->in_txn && c->held == NULL && c->fl == NULL && strmap_count(c->buffers) == 0 &&
                strmap_count(c->pend) == 0 && c->pend_truncated.len == 0 &&
                c->server_end > c->idle_end)
                c->idle_end = c->server_end;
            send_status(c, 0);
        }
        return PG_COPY_CONTINUE;
    }
    if (f.start > c->received)
        c->received = f.start;
    int r = handle_message(c, f.data, f.len, &err);
    if (r == ROUTE_WAIT) {
        c->held = (char *)buf;
        c->held_len = len;
        return PG_COPY_KEEP;
    }
    clear_lookups(c);
    if (r == ROUTE_FAIL) {
        retry(c, "decoding a change", &err);
        return PG_COPY_PAUSE;
    }
    if (c->buffered > (size_t)c->jc->capture_segment_bytes * PAUSE_FACTOR && c->fl) {
        c->paused = 1; /* the flush in flight must land first */
        return PG_COPY_PAUSE;
    }
    if (c->in_txn && c->buffered > (size_t)c->jc->capture_segment_bytes * SPILL_FACTOR &&
        spill(c, &err) != 0) { /* a transaction that outgrows memory */
        retry(c, "spilling a large transaction", &err);
        return PG_COPY_PAUSE;
    }
    return PG_COPY_CONTINUE;
}

/* The standby status update: written what was received, flushed what is recorded. */
static void send_status(Capture *c, int reply) {
    if (c->state != CAP_STREAM || c->repl == NULL)
        return;
    char msg[34];
    uint64_t flushed = c->idle_end > c->confirmed ? c->idle_end : c->confirmed;
    uint64_t written = c->received > flushed ? c->received : flushed;
    size_t n = pgo_status_update(msg, written, flushed, flushed, pgo_now(), reply);
    pg_conn_copy_send(c->repl, msg, n);
    c->last_status_ms = now_ms(c);
}

/* ---- flush: segments written, then recorded, then confirmed ---- */

static void seg_write_more(Seg *s);
static void flush_step(Capture *c);

static void on_seg_writable(StorageWrite *w, void *data) {
    (void)w;
    seg_write_more(data);
}

static void on_seg_done(StorageWrite *w, const StorageWritten *res, const Err *err, void *data) {
    (void)w;
    Seg *s = data;
    Capture *c = s->c;
    Flush *f = c->fl;
    s->w = NULL;
    storage_write_free(w);
    f->inflight--;
    if (err) {
        f->failed++;
        log_warn(NULL, "capture: writing %s: %s", s->key, err->msg);
        snprintf(c->last_error, sizeof(c->last_error), "writing a segment: %.200s", err->msg);
    } else {
        s->done = 1;
        f->done++;
        snprintf(s->sha256, sizeof(s->sha256), "%s", res->sha256);
        s->size = res->size;
    }
    flush_step(c);
}

static void seg_write_more(Seg *s) {
    while (s->pi < 4) {
        if (s->pi == 1) { /* the spill file, a chunk at a time */
            if (s->t->spill == NULL) {
                s->pi++;
                continue;
            }
            buf_reset(&s->chunk);
            buf_reserve(&s->chunk, 256 * 1024);
            size_t n = fread(s->chunk.data, 1, 256 * 1024, s->t->spill);
            if (n == 0) {
                if (ferror(s->t->spill)) {
                    log_warn(NULL, "capture: reading a spill file for %s: %s", s->key,
                             strerror(errno));
                    storage_write_abort(s->w); /* on_done: the flush again */
                    return;
                }
                s->pi++;
                continue;
            }
            int r = storage_write(s->w, s->chunk.data, n);
            if (r <= 0)
                return;
            continue;
        }
        const Buf *b = s->piece[s->pi];
        if (s->off >= b->len) {
            s->pi++;
            s->off = 0;
            continue;
        }
        size_t n = b->len - s->off;
        if (n > 256 * 1024)
            n = 256 * 1024;
        int r = storage_write(s->w, b->data + s->off, n);
        s->off += n;
        if (r < 0)
            return; /* on_done says why */
        if (r == 0)
            return; /* on_writable follows */
    }
    storage_write_finish(s->w);
}

static void seg_open(Capture *c, Seg *s, const CodecList *codecs) {
    CodecOptions co = {c->jc->backup_compression_level, NULL};
    CryptParams cp;
    memset(&cp, 0, sizeof(cp));
    Buf cj = BUF_INIT;
    codec_list_json(codecs, &cj);
    if (s->have_dek) {
        cp = (CryptParams){.user_id = s->t->user,
                           .backup_id = s->id,
                           .codecs_json = cj.data,
                           .key_id = s->key_id,
                           .wrapped_key = s->wrapped,
                           .have_dek = 1};
        memcpy(cp.dek, s->dek, CRYPT_KEY_LEN);
        co.crypt = &cp;
    }
    FilterChain *enc = codec_encoder(codecs, &co);
    crypt_wipe(&cp, sizeof(cp));
    buf_free(&cj);
    s->w = storage_write_new(services_storage(c->sv), s->key, codec_content_type(codecs), enc,
                             on_seg_writable, on_seg_done, s);
    s->piece[0] = &s->head;
    s->piece[1] = NULL; /* the spill file */
    s->piece[2] = &s->t->data;
    s->piece[3] = &s->tail;
    s->pi = 0;
    s->off = 0;
    if (s->t->spill)
        rewind(s->t->spill); /* a flush tried again reads it again */
    seg_write_more(s);
}

static void seg_codecs(const Capture *c, CodecList *out) {
    char codecs[64];
    snprintf(codecs, sizeof(codecs), "%s%s%s", c->jc->backup_codecs,
             c->jc->backup_codecs[0] && keys_enabled(c->jc->keys) ? "," : "",
             keys_enabled(c->jc->keys) ? CRYPT_CODEC : "");
    Err e;
    if (codec_list_parse(codecs, out, &e) != 0)
        out->n = 0;
}

static void on_dek(const unsigned char *dek, const char *key_id, const char *wrapped,
                   const Err *err, void *data) {
    Op *o = data;
    Seg *s = o->seg;
    Capture *c = o->c;
    if (!op_end(o))
        return;
    if (err) {
        c->fl->inflight--;
        c->fl->failed++;
        snprintf(c->last_error, sizeof(c->last_error), "a data key: %.200s", err->msg);
        flush_step(c);
        return;
    }
    memcpy(s->dek, dek, CRYPT_KEY_LEN);
    snprintf(s->key_id, sizeof(s->key_id), "%s", key_id);
    free(s->wrapped);
    s->wrapped = xstrdup(wrapped);
    s->have_dek = 1;
    CodecList codecs;
    seg_codecs(c, &codecs);
    seg_open(c, s, &codecs);
}

static void seg_start(Capture *c, Seg *s) {
    CodecList codecs;
    seg_codecs(c, &codecs);
    Buf cj = BUF_INIT;
    codec_list_json(&codecs, &cj);
    char created[32];
    pgo_time_format(pgo_now(), created);
    buf_reset(&s->head);
    ChangesHeader h = {s->id,   s->t->user, (uint64_t)c->epoch, s->t->first_lsn, s->t->last_lsn,
                       cj.data, created};
    changes_header(&h, &s->head);
    buf_free(&cj);
    buf_reset(&s->tail);
    changes_trailer(s->t->changes, s->t->txns, &s->tail);
    s->started = 1;
    c->fl->inflight++;
    if (keys_enabled(c->jc->keys)) {
        Op *o = op_new(c, OP_DEK);
        o->seg = s;
        keys_new_dek_async(c->jc->keys, services_kms(c->sv), s->t->user, s->id, on_dek, o);
        return;
    }
    seg_open(c, s, &codecs);
}

static void record(Capture *c);

/* Start what can start; record once every segment is stored; retry a failed flush whole. */
static void flush_step(Capture *c) {
    Flush *f = c->fl;
    if (f == NULL || f->recording)
        return;
    if (f->failed) {
        if (f->inflight > 0)
            return;
        c->m_flush_failures++;
        f->attempts++;
        f->failed = f->done = f->next = 0;
        for (int i = 0; i < f->n; i++)
            f->segs[i].done = f->segs[i].started = f->segs[i].have_dek = 0;
        /* the flush timer tries again (the stream keeps buffering meanwhile, up to the pause) */
        return;
    }
    while (f->next < f->n && f->inflight < MAX_WRITES && !f->failed)
        seg_start(c, &f->segs[f->next++]);
    if (f->failed)
        return;
    if (f->done == f->n && f->inflight == 0)
        record(c);
}

static void on_recorded(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc, (void)res;
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o))
        return;
    Flush *f = c->fl;
    f->recording = 0;
    if (err) {
        if (strstr(err->msg, "stale")) {
            step_down(c, "a newer leader recorded its epoch: this leader's segments do not count");
            return;
        }
        /* PostgreSQL unreachable, or shutting down: its walsender waits for this position
         * before it lets the server stop. Drop the stream (the slot replays what was not
         * recorded) and connect again */
        c->m_flush_failures++;
        retry(c, "recording segments", err);
        return;
    }
    /* durable and recorded: confirm it, and the owners become the recorded ones */
    c->confirmed = f->end_lsn;
    c->last_record_ms = now_ms(c);
    c->m_flushes++;
    c->m_segments += (uint64_t)f->n;
    for (int i = 0; i < f->n; i++)
        c->m_bytes += f->segs[i].size;
    if (f->oldest)
        c->m_lag_s = (double)(pgo_now() - f->oldest) / 1e6;
    size_t pos = 0;
    const char *k;
    void *v;
    while (strmap_next(f->owners, &pos, &k, &v))
        free(strmap_put(c->cache, k, xstrdup(v)));
    segcopy_kick(c->segcopy, f->n > 0); /* new segments to the replica; failed ones again */
    c->fl = NULL;
    flush_free(f);
    send_status(c, 0);
    if (c->paused && c->held == NULL) {
        c->paused = 0;
        pg_conn_copy_resume(c->repl);
    }
}

static void json_lsn(Buf *b, const char *name, uint64_t lsn) {
    char s[24];
    pgo_lsn_format(lsn, s);
    buf_printf(b, "\"%s\":\"%s\"", name, s);
}

static void record(Capture *c) {
    Flush *f = c->fl;
    f->recording = 1;
    Buf segs = BUF_INIT, owners = BUF_INIT;
    CodecList codecs;
    seg_codecs(c, &codecs);
    Buf cj = BUF_INIT;
    codec_list_json(&codecs, &cj);
    buf_puts(&segs, "[");
    for (int i = 0; i < f->n; i++) {
        Seg *s = &f->segs[i];
        Tenant *t = s->t;
        char a[32], b[32];
        pgo_time_format(t->first_time, a);
        pgo_time_format(t->last_time, b);
        buf_printf(&segs, "%s{\"id\":\"%s\",\"user_id\":\"%s\",\"s3_key\":\"%s\",", i ? "," : "",
                   s->id, t->user, s->key);
        json_lsn(&segs, "start_lsn", t->first_lsn);
        buf_puts(&segs, ",");
        json_lsn(&segs, "end_lsn", t->last_lsn);
        buf_printf(&segs,
                   ",\"first_commit\":\"%s\",\"last_commit\":\"%s\",\"xids\":[%s],"
                   "\"changes\":%llu,\"counts\":{",
                   a, b, t->xids.data ? t->xids.data : "", (unsigned long long)t->changes);
        int first = 1;
        for (int k = 0; k < t->ncounts; k++) {
            int *n = t->counts[k];
            if (n[0] + n[1] + n[2] + n[3] + n[4] == 0)
                continue;
            /* "d" counts the where deletes too; "w" (only when there are some) them alone */
            buf_printf(&segs, "%s\"%s\":", first ? "" : ",", scope_table(c->scope, k));
            counts_obj(n, &segs);
            first = 0;
        }
        buf_printf(&segs, "},\"txns\":[%s],\"size\":%llu,\"checksum\":\"%s\",\"codecs\":%s",
                   t->txlist.data ? t->txlist.data : "", (unsigned long long)s->size, s->sha256,
                   cj.data);
        if (s->have_dek) { /* the wrapping in the record too: a rekey rewrites it there (023) */
            buf_puts(&segs, ",\"key_id\":\"");
            buf_json_escape(&segs, s->key_id, strlen(s->key_id));
            buf_puts(&segs, "\",\"wrapped_key\":\"");
            buf_json_escape(&segs, s->wrapped, strlen(s->wrapped));
            buf_puts(&segs, "\"");
        }
        buf_puts(&segs, "}");
    }
    buf_puts(&segs, "]");
    buf_puts(&owners, "[");
    size_t pos = 0;
    const char *k;
    void *v;
    int first = 1;
    while (strmap_next(f->owners, &pos, &k, &v)) {
        const char *sep = strchr(k, '\x1f');
        buf_printf(&owners, "%s{\"t\":\"%.*s\",\"k\":\"", first ? "" : ",", (int)(sep - k), k);
        buf_json_escape(&owners, sep + 1, strlen(sep + 1));
        if (((char *)v)[0])
            buf_printf(&owners, "\",\"u\":\"%s\"}", (char *)v);
        else
            buf_puts(&owners, "\",\"u\":null}");
        first = 0;
    }
    buf_puts(&owners, "]");
    Buf trunc = BUF_INIT;
    /* ",a,b," -> "{a,b}" (plain identifiers: the scope checked them) */
    buf_puts(&trunc, "{");
    if (f->truncated.len > 2)
        buf_append(&trunc, f->truncated.data + 1, f->truncated.len - 2);
    buf_puts(&trunc, "}");
    char ep[32], lsn[24];
    snprintf(ep, sizeof(ep), "%lld", c->epoch);
    pgo_lsn_format(f->end_lsn, lsn);
    const char *vals[] = {ep, lsn, segs.data, owners.data, trunc.data};
    pg_pool_query(services_pg(c->sv), "SELECT capture_record($1, $2, $3, $4, $5)", 5, vals,
                  on_recorded, op_new(c, OP_RECORD));
    buf_free(&segs);
    buf_free(&owners);
    buf_free(&trunc);
    buf_free(&cj);
}

/* Every tenant's buffer at this commit boundary into one flush. */
static void start_flush(Capture *c) {
    c->flush_due = 0;
    if (c->fl) {
        if (!c->fl->recording && c->fl->inflight == 0 && c->fl->done < c->fl->n)
            flush_step(c); /* a write failed: the whole flush again */
        return;
    }
    if (c->in_txn || c->state != CAP_STREAM) {
        c->flush_due = 1;
        return;
    }
    /* Nothing of a tenant buffered: the position the server reported (WAL of other tables,
     * our own recordings) is confirmed to the server at once, so an idle slot never pins the
     * WAL, and recorded once per flush interval (an incremental waits for the position to reach
     * its snapshot): recording writes WAL too, and would chase itself if it were at once. */
    int idle =
        strmap_count(c->buffers) == 0 && strmap_count(c->pend) == 0 && c->pend_truncated.len == 0;
    uint64_t end = c->last_end;
    if (c->held == NULL && c->server_end > end)
        end = c->server_end;
    if (idle) {
        if (end > c->idle_end) {
            c->idle_end = end;
            send_status(c, 0);
        }
        if (end <= c->confirmed ||
            now_ms(c) - c->last_record_ms < (uint64_t)c->jc->capture_flush_ms)
            return;
    }
    Flush *f = xcalloc(1, sizeof(*f));
    f->end_lsn = end > c->confirmed ? end : c->confirmed;
    f->n = (int)strmap_count(c->buffers);
    f->segs = xcalloc((size_t)f->n + 1, sizeof(Seg));
    size_t pos = 0;
    const char *u;
    void *v;
    int i = 0;
    CodecList codecs;
    seg_codecs(c, &codecs);
    while (strmap_next(c->buffers, &pos, &u, &v)) {
        Tenant *t = v;
        close_txn(t); /* at a commit: its last transaction is whole */
        Seg *s = &f->segs[i++];
        s->c = c;
        s->t = t;
        snprintf(s->id, sizeof(s->id), "%s-%016" PRIX64 "-%016" PRIX64 "-e%lld", t->user,
                 t->first_lsn, t->last_lsn, c->epoch);
        layout_segment_key(s->key, sizeof(s->key), t->user, t->first_lsn, t->last_lsn,
                           (unsigned long long)c->epoch, &codecs);
        if (f->oldest == 0 || t->first_time < f->oldest)
            f->oldest = t->first_time;
    }
    /* the tenants now belong to the flush */
    strmap_free(c->buffers, NULL);
    c->buffers = strmap_new();
    c->buffered = 0;
    f->owners = c->pend;
    c->pend = strmap_new();
    f->truncated = c->pend_truncated;
    memset(&c->pend_truncated, 0, sizeof(c->pend_truncated));
    c->fl = f;
    flush_step(c);
}

static void on_flush_timer(uv_timer_t *t) {
    Capture *c = t->data;
    if (c->state == CAP_STREAM)
        start_flush(c);
}

/* ---- the tick: lease, retries, status ---- */

static void on_slotstat(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o) || err || PQntuples(res) != 1)
        return;
    c->m_retained = atoll(PQgetvalue(res, 0, 0));
}

static void advance(Capture *c) {
    if (c->closing)
        return;
    switch (c->state) {
    case CAP_IDLE:
        lease(c);
        return;
    case CAP_CLAIM:
        if (c->retry_at_ms && now_ms(c) >= c->retry_at_ms) {
            c->retry_at_ms = 0;
            claim(c);
        }
        return;
    case CAP_CONNECT:
        connect_repl(c);
        return;
    default:
        return;
    }
}

static void on_tick(uv_timer_t *t) {
    Capture *c = t->data;
    if (c->closing)
        return;
    if (c->epoch > 0)
        lease(c); /* renew */
    advance(c);
    if (c->state == CAP_STREAM && now_ms(c) - c->last_status_ms >= STATUS_EVERY_MS) {
        send_status(c, 0);
        const char *v[] = {c->jc->capture_slot};
        pg_pool_query(services_pg(c->sv),
                      "SELECT coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint "
                      "FROM pg_replication_slots WHERE slot_name = $1",
                      1, v, on_slotstat, op_new(c, OP_SLOTSTAT));
    }
}

/* ---- the scope, then start ---- */

static void on_scope(PgConn *pc, PGresult *res, const Err *err, void *data) {
    (void)pc;
    Op *o = data;
    Capture *c = o->c;
    if (!op_end(o))
        return;
    Err e;
    Scope *s = err ? NULL : scope_from_result(res, &e);
    if (s == NULL) {
        retry(c, "reading the backup scope", err ? err : &e);
        return;
    }
    scope_free(c->scope);
    c->scope = s;
    /* every table is mapped again against the new scope */
    for (int i = 0; i < c->nrels; i++)
        c->relver[i] = ~0u;
    if (c->state == CAP_STREAM) {
        c->scope_fresh = 1;
        process_held(c);
        return;
    }
    c->state = CAP_CONNECT;
    advance(c);
}

Capture *capture_new(uv_loop_t *loop, Services *sv) {
    Capture *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->sv = sv;
    c->jc = services_jobconfig(sv);
    const char *prefix = services_config(sv)->redis_prefix;
    char host[100];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "worker");
    host[sizeof(host) - 1] = 0;
    snprintf(c->me, sizeof(c->me), "%s:%d", host, (int)getpid());
    snprintf(c->lease_key, sizeof(c->lease_key), "%s:capture:lease", prefix);
    snprintf(c->epoch_key, sizeof(c->epoch_key), "%s:capture:epoch", prefix);
    c->buffers = strmap_new();
    c->txs = txspill_new();
    c->pend = strmap_new();
    c->cache = strmap_new();
    c->txn_gone = strmap_new();
    c->segcopy = segcopy_new(loop, sv);
    uv_timer_init(loop, &c->tick);
    uv_timer_init(loop, &c->flush);
    c->tick.data = c->flush.data = c;
    c->handles = 2;
    uint64_t every = (uint64_t)c->jc->capture_lease_ms / 3;
    uv_timer_start(&c->tick, on_tick, 100, every > 1000 ? 1000 : every);
    uv_timer_start(&c->flush, on_flush_timer, (uint64_t)c->jc->capture_flush_ms,
                   (uint64_t)c->jc->capture_flush_ms);
    return c;
}

static void on_closed(uv_handle_t *h) {
    Capture *c = h->data;
    c->handles--;
    maybe_free(c);
}

static void on_segcopy_closed(void *data) {
    Capture *c = data;
    c->segcopy = NULL;
    c->handles--;
    maybe_free(c);
}

static void maybe_free(Capture *c) {
    if (!c->closing || c->ops > 0 || c->handles > 0)
        return;
    void (*done)(void *) = c->closed_cb;
    void *data = c->closed_data;
    scope_free(c->scope);
    streams_reset(c);
    txspill_free(c->txs);
    strmap_free(c->buffers, tenant_free);
    strmap_free(c->pend, free);
    strmap_free(c->cache, free);
    strmap_free(c->txn_gone, free);
    buf_free(&c->pend_truncated);
    free(c);
    if (done)
        done(data);
}

void capture_shutdown(Capture *c, void (*done)(void *data), void *data) {
    if (c == NULL || c->closing) {
        if (done)
            done(data);
        return;
    }
    if (c->epoch > 0)
        log_info(NULL, "capture: stopping; what is not recorded is replayed by the next leader");
    release_lease(c); /* an Op: answered before the memory goes */
    c->gen++;
    drop_stream(c);
    c->epoch = 0;
    c->closing = 1;
    c->closed_cb = done;
    c->closed_data = data;
    uv_timer_stop(&c->tick);
    uv_timer_stop(&c->flush);
    uv_close((uv_handle_t *)&c->tick, on_closed);
    uv_close((uv_handle_t *)&c->flush, on_closed);
    if (c->segcopy) { /* its statement in flight answers first */
        c->handles++;
        segcopy_close(c->segcopy, on_segcopy_closed, c);
    }
}

void capture_metrics(Capture *c, Buf *out) {
    static Capture none; /* BACKUP_TRACKING=triggers: the same series, at zero */
    int enabled = c != NULL;
    if (c == NULL)
        c = &none;
    int64_t oldest = 0;
    size_t pos = 0;
    const char *u;
    void *v;
    while (c->buffers && strmap_next(c->buffers, &pos, &u, &v)) {
        Tenant *t = v;
        if (t->first_time && (oldest == 0 || t->first_time < oldest))
            oldest = t->first_time;
    }
    if (c->fl && c->fl->oldest && (oldest == 0 || c->fl->oldest < oldest))
        oldest = c->fl->oldest;
    double age = oldest ? (double)(pgo_now() - oldest) / 1e6 : 0;
    buf_printf(out,
               "# HELP bw_capture_enabled 1 when this worker runs with BACKUP_TRACKING=wal.\n"
               "# TYPE bw_capture_enabled gauge\nbw_capture_enabled %d\n"
               "# HELP bw_capture_leader 1 while this worker captures changes from the WAL.\n"
               "# TYPE bw_capture_leader gauge\nbw_capture_leader %d\n"
               "# HELP bw_capture_streaming 1 while the replication stream runs.\n"
               "# TYPE bw_capture_streaming gauge\nbw_capture_streaming %d\n"
               "# HELP bw_capture_epoch The fencing epoch of this worker's lease (0: none).\n"
               "# TYPE bw_capture_epoch gauge\nbw_capture_epoch %lld\n"
               "# HELP bw_capture_changes_total Changes routed to a tenant.\n"
               "# TYPE bw_capture_changes_total counter\nbw_capture_changes_total %" PRIu64 "\n"
               "# HELP bw_capture_transactions_total Transactions read from the slot.\n"
               "# TYPE bw_capture_transactions_total counter\n"
               "bw_capture_transactions_total %" PRIu64 "\n"
               "# HELP bw_capture_segments_total Change segments written and recorded.\n"
               "# TYPE bw_capture_segments_total counter\nbw_capture_segments_total %" PRIu64 "\n"
               "# HELP bw_capture_segment_bytes_total Bytes of the segments stored.\n"
               "# TYPE bw_capture_segment_bytes_total counter\n"
               "bw_capture_segment_bytes_total %" PRIu64 "\n"
               "# HELP bw_capture_flush_failures_total Flushes that failed (tried again).\n"
               "# TYPE bw_capture_flush_failures_total counter\n"
               "bw_capture_flush_failures_total %" PRIu64 "\n"
               "# HELP bw_capture_unrouted_total Changes no tenant owns (no user, no parent).\n"
               "# TYPE bw_capture_unrouted_total counter\nbw_capture_unrouted_total %" PRIu64 "\n"
               "# HELP bw_capture_gaps_total Gaps recorded by this worker (slot lost, system or "
               "timeline changed).\n"
               "# TYPE bw_capture_gaps_total counter\nbw_capture_gaps_total %" PRIu64 "\n"
               "# HELP bw_capture_lag_seconds Commit to durable, of the last flush's oldest "
               "change.\n"
               "# TYPE bw_capture_lag_seconds gauge\nbw_capture_lag_seconds %.3f\n"
               "# HELP bw_capture_oldest_unflushed_seconds Age of the oldest change not yet "
               "recorded.\n"
               "# TYPE bw_capture_oldest_unflushed_seconds gauge\n"
               "bw_capture_oldest_unflushed_seconds %.3f\n"
               "# HELP bw_capture_buffered_bytes Change lines buffered, not yet written.\n"
               "# TYPE bw_capture_buffered_bytes gauge\nbw_capture_buffered_bytes %zu\n"
               "# HELP bw_capture_retained_wal_bytes WAL the slot keeps (current LSN - "
               "restart_lsn).\n"
               "# TYPE bw_capture_retained_wal_bytes gauge\n"
               "bw_capture_retained_wal_bytes %lld\n"
               "# HELP bw_capture_spill_bytes Change lines of transactions larger than memory, "
               "in spill files until they are flushed.\n"
               "# TYPE bw_capture_spill_bytes gauge\nbw_capture_spill_bytes %" PRIu64 "\n"
               "# HELP bw_capture_spilled_bytes_total Bytes written to spill files.\n"
               "# TYPE bw_capture_spilled_bytes_total counter\n"
               "bw_capture_spilled_bytes_total %" PRIu64 "\n"
               "# HELP bw_capture_owner_lookups_total Children routed by a capture_owners read.\n"
               "# TYPE bw_capture_owner_lookups_total counter\n"
               "bw_capture_owner_lookups_total %" PRIu64 "\n"
               "# HELP bw_capture_row_fetches_total Reads of rows the WAL does not carry.\n"
               "# TYPE bw_capture_row_fetches_total counter\n"
               "bw_capture_row_fetches_total %" PRIu64 "\n",
               enabled, c->epoch > 0, c->state == CAP_STREAM, c->epoch, c->m_changes, c->m_txns,
               c->m_segments, c->m_bytes, c->m_flush_failures, c->m_unrouted, c->m_gaps, c->m_lag_s,
               age, c->buffered, c->m_retained,
               c->spill_bytes + (c->txs ? txspill_bytes(c->txs) : 0) +
                   (c->rp ? txstream_bytes(c->rp) : 0),
               c->m_spilled, c->m_lookups, c->m_fetches);
    segcopy_metrics(c->segcopy, out);
}

/* ---- the start check ---- */

int capture_check(const char *database_url, Err *err, Buf *warnings) {
    PGconn *pg = PQconnectdb(database_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        buf_printf(warnings, "BACKUP_TRACKING=wal: PostgreSQL could not be reached to check "
                             "its settings; the capture checks again when it starts\n");
        PQfinish(pg);
        return 1;
    }
    PGresult *res = PQexec(
        pg, "SELECT current_setting('wal_level'), "
            "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
            "current_setting('max_slot_wal_keep_size'), "
            "to_regclass('capture_state') IS NOT NULL, "
            "EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '" PUBLICATION "'), "
            "current_user");
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err_set(err, ERR_PERMANENT, ERR_CODE_SQL, "BACKUP_TRACKING=wal: checking PostgreSQL: %s",
                PQerrorMessage(pg));
        rc = -1;
    } else {
        Buf miss = BUF_INIT;
        if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
            buf_printf(&miss,
                       "%swal_level is %s, not logical (set wal_level=logical and restart "
                       "PostgreSQL; RDS: rds.logical_replication=1; Cloud SQL: "
                       "cloudsql.logical_decoding=on)",
                       miss.len ? "; " : "", PQgetvalue(res, 0, 0));
        if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
            buf_printf(&miss,
                       "%srole %s lacks REPLICATION (ALTER ROLE %s REPLICATION; RDS: GRANT "
                       "rds_replication TO %s)",
                       miss.len ? "; " : "", PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 5),
                       PQgetvalue(res, 0, 5));
        if (strcmp(PQgetvalue(res, 0, 3), "t") != 0)
            buf_printf(&miss, "%sthe capture's tables are missing (backupctl migrate)",
                       miss.len ? "; " : "");
        else if (strcmp(PQgetvalue(res, 0, 4), "t") != 0)
            buf_printf(&miss,
                       "%sthe publication " PUBLICATION " is missing (backupctl tracking wal)",
                       miss.len ? "; " : "");
        if (miss.len) {
            err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "BACKUP_TRACKING=wal: %s", miss.data);
            rc = -1;
        }
        buf_free(&miss);
        if (rc == 0) { /* scope tables the publication lacks: their changes are not captured */
            PGresult *pub = PQexec(
                pg, "SELECT string_agg(s.table_name, ', ') FROM backup_scope s WHERE NOT EXISTS "
                    "(SELECT 1 FROM pg_publication_tables p WHERE p.pubname = '" PUBLICATION
                    "' AND p.schemaname = 'public' AND p.tablename = s.table_name)");
            if (PQresultStatus(pub) == PGRES_TUPLES_OK && !PQgetisnull(pub, 0, 0))
                buf_printf(warnings,
                           "the publication " PUBLICATION " lacks %s of backup_scope: their "
                           "changes are not captured, and incrementals are full until "
                           "backupctl tracking wal adds them\n",
                           PQgetvalue(pub, 0, 0));
            PQclear(pub);
        }
        if (strcmp(PQgetvalue(res, 0, 2), "-1") == 0)
            buf_printf(warnings,
                       "max_slot_wal_keep_size is unlimited: a capture that stops keeps WAL "
                       "without bound and can fill the disk (set it: deploy/README.md)\n");
    }
    PQclear(res);
    PQfinish(pg);
    return rc;
}
