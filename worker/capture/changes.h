/*
 * changes: the change segment format (proto/README.md, "Change segments"), written from
 * pgoutput's messages; no I/O.
 *
 * A segment is JSON lines: a header object, one object per change in commit order, a trailer.
 *
 *   {"format":"pedidolist-changes","version":1,"segment":ID,"user_id":U,"epoch":E,
 *    "start_lsn":"0/16B3748","end_lsn":"0/16B3A10","codecs":["gzip"],"created_at":T}
 *   {"lsn":"0/16B3748","time":"2026-12-07T09:14:00.123456Z","xid":741,"table":"orders",
 *    "op":"u","key":"5f0c...","row":{...},"unchanged":["notes"]}
 *   {"changes":2,"transactions":1}
 *
 * lsn is the commit LSN of the change's transaction (changes of one transaction share it and
 * keep their order), time its commit time, op i(nsert), u(pdate), d(elete: key only; or, with
 * "where":{"order_id":K} instead of a key, every row of table whose column is K: the children
 * of a parent that moved to another owner, for the owner it left) or t(runcate: the user's rows
 * of table are all gone; no key). row is the whole new row as
 * PostgreSQL's row_to_json writes it (the same bytes as a backup's row), except the columns in
 * "unchanged": TOASTed values the update did not touch, which the WAL does not carry; they are
 * null in row and keep the value the row had before.
 *
 * A ChangesTable maps one scope table onto the columns of a Relation message (by name, so a
 * column added or dropped since is no surprise) and writes its rows.
 */
#ifndef BW_CHANGES_H
#define BW_CHANGES_H

#include "base/buf.h"
#include "base/err.h"
#include "pg/pgoutput.h"
#include "scope/scope.h"

#include <stdint.h>

#define CHANGES_FORMAT  "pedidolist-changes"
#define CHANGES_VERSION 1

typedef struct ChangesTable ChangesTable;

/* Table i of the scope as rel sends it; NULL with err when rel lacks a column the scope needs
 * (its key, user or parent column). */
ChangesTable *changes_table_new(const Scope *s, int i, const PgoRelation *rel, Err *err);
void changes_table_free(ChangesTable *t);
int changes_table_index(const ChangesTable *t);
const char *changes_table_name(const ChangesTable *t);
/* The relation's index of the key, user and parent columns (-1: the table has none). */
int changes_key_col(const ChangesTable *t);
int changes_user_col(const ChangesTable *t);
int changes_parent_col(const ChangesTable *t);
/* 1 when a column of the scope is 'u' (unchanged TOAST) in tup. */
int changes_has_unchanged(const ChangesTable *t, const PgoTuple *tup);
/* The relation's columns, comma-separated and quoted with ::text, for a SELECT whose row
 * changes_row_from_result() reads as a tuple. */
void changes_select_list(const ChangesTable *t, Buf *sql);

/* Text of column col of tup into out (NUL-terminated); -1 when null, unchanged or binary. */
int changes_value(const PgoTuple *tup, int col, Buf *out);

/* Append one change line (with its newline). row: the tuple of i/u (NULL for d, t); key: the
 * key's text (NULL for t). -1 with err when a value is not of its column's shape. */
typedef struct {
    uint64_t lsn;
    int64_t time;
    uint32_t xid;
    char op;
} ChangesMeta;
int changes_line(ChangesTable *t, const ChangesMeta *m, const char *key, const PgoTuple *row,
                 Buf *out, Err *err);
/* A truncate line of table (no key, no row). */
void changes_truncate_line(const char *table, const ChangesMeta *m, Buf *out);
/* A delete of every row of table whose column equals value ("where"): the children of a parent
 * row that moved to another owner, for the owner it left. */
void changes_where_delete_line(const char *table, const char *column, const char *value,
                               const ChangesMeta *m, Buf *out);

typedef struct {
    const char *segment, *user_id;
    uint64_t epoch, start_lsn, end_lsn;
    const char *codecs_json; /* ["gzip"] */
    const char *created_at;
} ChangesHeader;
void changes_header(const ChangesHeader *h, Buf *out);
void changes_trailer(uint64_t changes, uint64_t transactions, Buf *out);

/* ---- reading ---- */

/* One change of a segment as changes_read passes it on (valid during the call). key: the key's
 * text, NULL for t and for a "where" delete (then where_col = where_val); key_json its JSON
 * string. row: i and u, the row's JSON object; unchanged: the JSON array of the columns an
 * update left as they were (NULL: none). */
typedef struct {
    const char *table;
    char op;
    uint32_t xid;
    uint64_t lsn; /* the commit LSN of its transaction */
    const char *key;
    const char *where_col, *where_val;
    const char *key_json, *row, *unchanged;
    size_t key_json_len, row_len, unchanged_len;
} ChangesItem;
/* 0 to go on, -1 to stop (with err set). */
typedef int (*ChangesItemCb)(const ChangesItem *it, void *data, Err *err);

/* A whole decoded segment of user_id: the header checked (format, version, user), each change
 * to cb in order, the trailer's count checked. -1 with err (ERR_CODE_INVALID) when it is not a
 * segment of user_id, or is cut short. */
int changes_read(const char *buf, size_t len, const char *user_id, ChangesItemCb cb, void *data,
                 Err *err);

#endif
