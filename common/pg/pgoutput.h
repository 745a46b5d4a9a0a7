/*
 * pgoutput: the messages of PostgreSQL's logical replication, decoded; no I/O.
 *
 * Two layers, as the protocol pages "Streaming Replication Protocol" and "Logical Replication
 * Message Formats" describe them:
 *   - the walsender's frames inside COPY BOTH: XLogData ('w': a piece of WAL at a position,
 *     here one pgoutput message), the primary keepalive ('k': the server's WAL end, and whether
 *     it wants an answer now), and the standby status update we send ('r': the positions
 *     written, flushed and applied, which let the server recycle WAL);
 *   - pgoutput's own messages inside XLogData: Begin, Commit, Relation, Insert, Update, Delete,
 *     Truncate, Type, Origin, Message, and with protocol 2's streaming the Stream Start, Stop,
 *     Commit and Abort of a large transaction sent before it commits.
 *
 * A decoder keeps the Relation messages it saw (the server sends one before the first change
 * of a table in a session, and again after its columns changed), so a change names its table
 * and columns. Tuple values point into the message given: they live as long as it does.
 * Malformed input is an error naming what was wrong, never a read past the buffer.
 */
#ifndef BW_PGOUTPUT_H
#define BW_PGOUTPUT_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/* ---- walsender frames ---- */

typedef struct {
    char kind;         /* 'w' XLogData, 'k' keepalive */
    uint64_t start;    /* 'w': the WAL position of the data */
    uint64_t wal_end;  /* the server's WAL end */
    int64_t send_time; /* microseconds since 2000-01-01 UTC */
    int reply;         /* 'k': the server asks for a status update now */
    const char *data;  /* 'w': the message (inside the frame given) */
    size_t len;
} PgoFrame;

int pgo_frame_parse(const char *buf, size_t len, PgoFrame *f, Err *err);
/* The standby status update ('r'), 34 bytes into out; returns its length. */
size_t pgo_status_update(char out[34], uint64_t written, uint64_t flushed, uint64_t applied,
                         int64_t now, int reply);
/* Now, in the protocol's clock: microseconds since 2000-01-01 UTC. */
int64_t pgo_now(void);
/* Microseconds since 2000-01-01 as an RFC 3339 UTC time with microseconds (32 bytes). */
void pgo_time_format(int64_t t, char out[32]);
/* An LSN as PostgreSQL writes it (X/X) and back; parse: 0, or -1 when malformed. */
void pgo_lsn_format(uint64_t lsn, char out[24]);
int pgo_lsn_parse(const char *s, uint64_t *lsn);

/* ---- pgoutput messages ---- */

typedef struct {
    char *name;
    uint32_t type;
    int32_t typmod;
    int key; /* part of the replica identity */
} PgoColumn;

typedef struct {
    uint32_t relid;
    char *nspname, *relname;
    char identity; /* relreplident: 'd' default, 'n' nothing, 'f' full, 'i' index */
    int ncols;
    PgoColumn *cols;
    unsigned version; /* bumped each time the server sends the relation again */
} PgoRelation;

typedef struct {
    char kind; /* 'n' null, 'u' unchanged TOAST value (not sent), 't' text, 'b' binary */
    const char *val;
    uint32_t len;
} PgoValue;

typedef struct {
    int n;
    PgoValue *v; /* the decoder's: valid until the next message */
} PgoTuple;

typedef struct {
    char kind;              /* the message type byte: B C R I U D T Y O M S E c A */
    uint32_t xid;           /* B, S, c, A; and I U D T R Y M inside a streamed block (else 0) */
    uint64_t lsn;           /* B: the transaction's final (commit) LSN; C, c: the commit LSN; M */
    uint64_t end_lsn;       /* C, c: the end of the commit record */
    int64_t time;           /* B, C, c: the commit time (microseconds since 2000-01-01) */
    const PgoRelation *rel; /* I U D R */
    char old_kind;          /* U D: 'K' the old key, 'O' the whole old row, 0 none (U) */
    PgoTuple old_tuple;     /* U D when old_kind */
    PgoTuple new_tuple;     /* I U */
    int nrels;              /* T */
    const PgoRelation *const *rels; /* T: NULL for a relation never described */
    uint8_t truncate_flags;         /* T: 1 CASCADE, 2 RESTART IDENTITY */
    int first_segment;              /* S */
    uint32_t subxid;                /* A */
    int transactional;              /* M */
    const char *prefix;             /* M, O (origin name) */
    const char *content;            /* M */
    uint32_t content_len;
} PgoMessage;

typedef struct PgoDecoder PgoDecoder;

PgoDecoder *pgo_decoder_new(void);
void pgo_decoder_free(PgoDecoder *d);
/* Decode one pgoutput message (an XLogData's data). msg and what it points to are valid until
 * the next call; relations until the decoder is freed. -1 with err when malformed (the decoder
 * stays usable). */
int pgo_decode(PgoDecoder *d, const char *buf, size_t len, PgoMessage *msg, Err *err);
/* A relation the decoder knows, or NULL. */
const PgoRelation *pgo_relation(const PgoDecoder *d, uint32_t relid);
/* Index of the column named name in rel, or -1. */
int pgo_column(const PgoRelation *rel, const char *name);

#endif
