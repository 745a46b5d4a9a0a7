/*
 * pgoutput: logical replication's messages decoded (pgoutput.h). Every read goes through a
 * bounds-checked cursor: a short or malformed message is an error, never a read past it.
 */
#include "pg/pgoutput.h"

#include "base/buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Seconds from 1970-01-01 to 2000-01-01: the protocol's epoch. */
#define PGO_EPOCH_OFFSET 946684800LL

typedef struct {
    const unsigned char *p, *end;
    const char *fail; /* what could not be read */
} Rd;

static int rd_need(Rd *r, size_t n, const char *what) {
    if (r->fail)
        return 0;
    if ((size_t)(r->end - r->p) < n) {
        r->fail = what;
        return 0;
    }
    return 1;
}

static uint8_t rd_u8(Rd *r, const char *what) {
    if (!rd_need(r, 1, what))
        return 0;
    return *r->p++;
}

static uint16_t rd_u16(Rd *r, const char *what) {
    if (!rd_need(r, 2, what))
        return 0;
    uint16_t v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return v;
}

static uint32_t rd_u32(Rd *r, const char *what) {
    if (!rd_need(r, 4, what))
        return 0;
    uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
                 (uint32_t)r->p[3];
    r->p += 4;
    return v;
}

static uint64_t rd_u64(Rd *r, const char *what) {
    uint64_t hi = rd_u32(r, what);
    uint64_t lo = rd_u32(r, what);
    return hi << 32 | lo;
}

/* A NUL-terminated string inside the message. */
static const char *rd_str(Rd *r, const char *what) {
    if (r->fail)
        return "";
    const unsigned char *z = memchr(r->p, 0, (size_t)(r->end - r->p));
    if (z == NULL) {
        r->fail = what;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p = z + 1;
    return s;
}

static void put_u32(char *o, uint32_t v) {
    o[0] = (char)(v >> 24);
    o[1] = (char)(v >> 16);
    o[2] = (char)(v >> 8);
    o[3] = (char)v;
}

static void put_u64(char *o, uint64_t v) {
    put_u32(o, (uint32_t)(v >> 32));
    put_u32(o + 4, (uint32_t)v);
}

/* ---- frames ---- */

int pgo_frame_parse(const char *buf, size_t len, PgoFrame *f, Err *err) {
    Rd r = {(const unsigned char *)buf, (const unsigned char *)buf + len, NULL};
    memset(f, 0, sizeof(*f));
    f->kind = (char)rd_u8(&r, "frame type");
    if (f->kind == 'w') {
        f->start = rd_u64(&r, "XLogData start");
        f->wal_end = rd_u64(&r, "XLogData end");
        f->send_time = (int64_t)rd_u64(&r, "XLogData time");
        f->data = (const char *)r.p;
        f->len = r.fail ? 0 : (size_t)(r.end - r.p);
    } else if (f->kind == 'k') {
        f->wal_end = rd_u64(&r, "keepalive end");
        f->send_time = (int64_t)rd_u64(&r, "keepalive time");
        f->reply = rd_u8(&r, "keepalive reply flag") != 0;
    } else if (!r.fail) {
        err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "replication: unknown frame type 0x%02x",
                (unsigned char)f->kind);
        return -1;
    }
    if (r.fail) {
        err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "replication: frame too short (%s)", r.fail);
        return -1;
    }
    return 0;
}

size_t pgo_status_update(char out[34], uint64_t written, uint64_t flushed, uint64_t applied,
                         int64_t now, int reply) {
    out[0] = 'r';
    put_u64(out + 1, written);
    put_u64(out + 9, flushed);
    put_u64(out + 17, applied);
    put_u64(out + 25, (uint64_t)now);
    out[33] = reply ? 1 : 0;
    return 34;
}

int64_t pgo_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return ((int64_t)tv.tv_sec - PGO_EPOCH_OFFSET) * 1000000 + tv.tv_usec;
}

void pgo_time_format(int64_t t, char out[32]) {
    int64_t us = t % 1000000;
    int64_t s = t / 1000000;
    if (us < 0) {
        us += 1000000;
        s--;
    }
    time_t secs = (time_t)(s + PGO_EPOCH_OFFSET);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char day[24];
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%06dZ", day, (int)us);
}

void pgo_lsn_format(uint64_t lsn, char out[24]) {
    snprintf(out, 24, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

int pgo_lsn_parse(const char *s, uint64_t *lsn) {
    uint64_t part[2] = {0, 0};
    int k = 0, digits = 0;
    for (const char *p = s; *p; p++) {
        int v;
        if (*p >= '0' && *p <= '9')
            v = *p - '0';
        else if (*p >= 'A' && *p <= 'F')
            v = *p - 'A' + 10;
        else if (*p >= 'a' && *p <= 'f')
            v = *p - 'a' + 10;
        else if (*p == '/' && k == 0 && digits > 0) {
            k = 1;
            digits = 0;
            continue;
        } else
            return -1;
        if (++digits > 8)
            return -1;
        part[k] = part[k] << 4 | (uint64_t)v;
    }
    if (k != 1 || digits == 0)
        return -1;
    *lsn = part[0] << 32 | part[1];
    return 0;
}

/* ---- messages ---- */

struct PgoDecoder {
    PgoRelation **rels; /* by arrival; looked up by relid (a few dozen at most) */
    int nrels;
    int in_stream; /* between Stream Start and Stream Stop: changes carry their xid */
    PgoValue *vals;
    int vcap;
    const PgoRelation **trunc;
    int tcap;
};

PgoDecoder *pgo_decoder_new(void) {
    return xcalloc(1, sizeof(PgoDecoder));
}

static void relation_free(PgoRelation *r) {
    if (r == NULL)
        return;
    for (int i = 0; i < r->ncols; i++)
        free(r->cols[i].name);
    free(r->cols);
    free(r->nspname);
    free(r->relname);
    free(r);
}

void pgo_decoder_free(PgoDecoder *d) {
    if (d == NULL)
        return;
    for (int i = 0; i < d->nrels; i++)
        relation_free(d->rels[i]);
    free(d->rels);
    free(d->vals);
    free(d->trunc);
    free(d);
}

const PgoRelation *pgo_relation(const PgoDecoder *d, uint32_t relid) {
    for (int i = 0; i < d->nrels; i++)
        if (d->rels[i]->relid == relid)
            return d->rels[i];
    return NULL;
}

int pgo_column(const PgoRelation *rel, const char *name) {
    for (int i = 0; i < rel->ncols; i++)
        if (strcmp(rel->cols[i].name, name) == 0)
            return i;
    return -1;
}

/* The tuple's values go to the decoder's array from index base on. */
static int read_tuple(PgoDecoder *d, Rd *r, int base, PgoTuple *t) {
    int n = rd_u16(r, "tuple column count");
    if (r->fail)
        return -1;
    if (base + n > d->vcap) {
        d->vcap = base + n + 16;
        d->vals = xrealloc(d->vals, (size_t)d->vcap * sizeof(PgoValue));
    }
    for (int i = 0; i < n; i++) {
        PgoValue *v = &d->vals[base + i];
        v->kind = (char)rd_u8(r, "column kind");
        v->val = NULL;
        v->len = 0;
        if (v->kind == 't' || v->kind == 'b') {
            v->len = rd_u32(r, "column length");
            if (!rd_need(r, v->len, "column value"))
                return -1;
            v->val = (const char *)r->p;
            r->p += v->len;
        } else if (v->kind != 'n' && v->kind != 'u' && !r->fail) {
            r->fail = "column kind";
        }
        if (r->fail)
            return -1;
    }
    t->n = n;
    t->v = NULL; /* set once the array stops moving */
    return base + n;
}

static int decode_relation(PgoDecoder *d, Rd *r, PgoMessage *m) {
    PgoRelation *rel = xcalloc(1, sizeof(*rel));
    rel->relid = rd_u32(r, "relation id");
    rel->nspname = xstrdup(rd_str(r, "relation namespace"));
    rel->relname = xstrdup(rd_str(r, "relation name"));
    rel->identity = (char)rd_u8(r, "replica identity");
    rel->ncols = rd_u16(r, "relation column count");
    if (!r->fail)
        rel->cols = xcalloc((size_t)rel->ncols + 1, sizeof(PgoColumn));
    for (int i = 0; i < rel->ncols && !r->fail; i++) {
        rel->cols[i].key = rd_u8(r, "column flags") & 1;
        rel->cols[i].name = xstrdup(rd_str(r, "column name"));
        rel->cols[i].type = rd_u32(r, "column type");
        rel->cols[i].typmod = (int32_t)rd_u32(r, "column type modifier");
    }
    if (r->fail) {
        if (rel->cols == NULL)
            rel->ncols = 0;
        relation_free(rel);
        return -1;
    }
    for (int i = 0; i < d->nrels; i++)
        if (d->rels[i]->relid == rel->relid) {
            rel->version = d->rels[i]->version + 1;
            relation_free(d->rels[i]);
            d->rels[i] = rel;
            m->rel = rel;
            return 0;
        }
    d->rels = xrealloc(d->rels, (size_t)(d->nrels + 1) * sizeof(*d->rels));
    d->rels[d->nrels++] = rel;
    m->rel = rel;
    return 0;
}

static const PgoRelation *change_relation(PgoDecoder *d, Rd *r, Err *err) {
    uint32_t relid = rd_u32(r, "relation id");
    if (r->fail)
        return NULL;
    const PgoRelation *rel = pgo_relation(d, relid);
    if (rel == NULL)
        err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL,
                "pgoutput: a change of relation %u, never described", relid);
    return rel;
}

int pgo_decode(PgoDecoder *d, const char *buf, size_t len, PgoMessage *m, Err *err) {
    Rd r = {(const unsigned char *)buf, (const unsigned char *)buf + len, NULL};
    memset(m, 0, sizeof(*m));
    err_clear(err);
    m->kind = (char)rd_u8(&r, "message type");
    /* inside a streamed block, these carry the transaction's xid first */
    if (d->in_stream && strchr("RYIUDTM", m->kind) && m->kind)
        m->xid = rd_u32(&r, "streamed xid");
    int rc = 0;
    switch (m->kind) {
    case 'B':
        m->lsn = rd_u64(&r, "begin final LSN");
        m->time = (int64_t)rd_u64(&r, "begin commit time");
        m->xid = rd_u32(&r, "begin xid");
        break;
    case 'C':
        (void)rd_u8(&r, "commit flags");
        m->lsn = rd_u64(&r, "commit LSN");
        m->end_lsn = rd_u64(&r, "commit end LSN");
        m->time = (int64_t)rd_u64(&r, "commit time");
        break;
    case 'O':
        m->lsn = rd_u64(&r, "origin LSN");
        m->prefix = rd_str(&r, "origin name");
        break;
    case 'R':
        rc = decode_relation(d, &r, m);
        break;
    case 'Y':
        (void)rd_u32(&r, "type id");
        (void)rd_str(&r, "type namespace");
        (void)rd_str(&r, "type name");
        break;
    case 'I': {
        m->rel = change_relation(d, &r, err);
        if (m->rel == NULL) {
            if (err_is_set(err))
                return -1;
            break; /* too short: r.fail says where */
        }
        if (rd_u8(&r, "insert tuple tag") != 'N' && !r.fail)
            r.fail = "insert tuple tag";
        if (!r.fail && read_tuple(d, &r, 0, &m->new_tuple) < 0)
            rc = -1;
        if (rc == 0 && !r.fail)
            m->new_tuple.v = d->vals;
        break;
    }
    case 'U':
    case 'D': {
        m->rel = change_relation(d, &r, err);
        if (m->rel == NULL) {
            if (err_is_set(err))
                return -1;
            break; /* too short: r.fail says where */
        }
        char tag = (char)rd_u8(&r, "tuple tag");
        int next = 0;
        if (tag == 'K' || tag == 'O') {
            m->old_kind = tag;
            next = read_tuple(d, &r, 0, &m->old_tuple);
            if (next < 0)
                break;
            if (m->kind == 'U')
                tag = (char)rd_u8(&r, "new tuple tag");
        }
        if (m->kind == 'U') {
            if (tag != 'N') {
                if (!r.fail)
                    r.fail = "update new tuple tag";
                break;
            }
            if (read_tuple(d, &r, next, &m->new_tuple) < 0)
                break;
            m->new_tuple.v = d->vals + next;
        } else if (m->old_kind == 0 && !r.fail) {
            r.fail = "delete tuple tag";
        }
        if (m->old_kind)
            m->old_tuple.v = d->vals;
        break;
    }
    case 'T': {
        m->nrels = (int)rd_u32(&r, "truncate relation count");
        m->truncate_flags = rd_u8(&r, "truncate options");
        if (r.fail || m->nrels < 0 || (size_t)m->nrels > len)
            break;
        if (m->nrels > d->tcap) {
            d->tcap = m->nrels + 8;
            d->trunc = xrealloc(d->trunc, (size_t)d->tcap * sizeof(*d->trunc));
        }
        for (int i = 0; i < m->nrels && !r.fail; i++)
            d->trunc[i] = pgo_relation(d, rd_u32(&r, "truncated relation id"));
        m->rels = d->trunc;
        break;
    }
    case 'M':
        m->transactional = rd_u8(&r, "message flags") & 1;
        m->lsn = rd_u64(&r, "message LSN");
        m->prefix = rd_str(&r, "message prefix");
        m->content_len = rd_u32(&r, "message length");
        if (rd_need(&r, m->content_len, "message content")) {
            m->content = (const char *)r.p;
            r.p += m->content_len;
        }
        break;
    case 'S':
        m->xid = rd_u32(&r, "stream xid");
        m->first_segment = rd_u8(&r, "stream first-segment flag") != 0;
        if (!r.fail)
            d->in_stream = 1;
        break;
    case 'E':
        d->in_stream = 0;
        break;
    case 'c':
        m->xid = rd_u32(&r, "stream commit xid");
        (void)rd_u8(&r, "stream commit flags");
        m->lsn = rd_u64(&r, "stream commit LSN");
        m->end_lsn = rd_u64(&r, "stream commit end LSN");
        m->time = (int64_t)rd_u64(&r, "stream commit time");
        break;
    case 'A':
        m->xid = rd_u32(&r, "stream abort xid");
        m->subxid = rd_u32(&r, "stream abort subxid");
        break;
    default:
        if (!r.fail) {
            err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "pgoutput: unknown message type 0x%02x",
                    (unsigned char)m->kind);
            return -1;
        }
    }
    if (r.fail || rc != 0) {
        if (!err_is_set(err))
            err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "pgoutput: message '%c' malformed (%s)",
                    m->kind ? m->kind : '?', r.fail ? r.fail : "relation");
        return -1;
    }
    return 0;
}
