/*
 * bfile: the backup file format (proto/README.md), written as a stream.
 *
 * One JSON document per backup, one row per line: the header fields and
 * "tables" on the first line, each table's rows (row_to_json's text, written
 * by pgjson.h from COPY text), the keys deleted since the base, and a trailer
 * with the counts. The writer only adds the punctuation between pieces. The
 * manifest (manifest.h) repeats the header's fields.
 */
#ifndef BW_BFILE_H
#define BW_BFILE_H

#include "base/json.h"
#include "base/buf.h"
#include "io/codec.h"
#include "base/err.h"

#include <stdint.h>

#define BFILE_FORMAT  "pedidolist-backup"
#define BFILE_VERSION 2 /* 2: "codecs"; 1 (still read): "compression" gzip|none */

typedef struct {
    const char *backup_id, *user_id, *type;
    const char *base_backup_id; /* NULL for a full backup */
    const char *snapshot;       /* pg_current_snapshot() of the backup */
    const char *base_snapshot;  /* NULL for a full backup */
    const char *created_at;     /* ISO 8601 UTC */
    const CodecList *codecs;    /* applied to the stored bytes, in order */
} BfileHeader;

typedef struct {
    int section; /* 0: tables, 1: deleted */
    int lists;   /* lists opened in this section */
    uint64_t items;
} BfileWriter;

/* The header line and the opening of "tables". */
void bfile_begin(BfileWriter *w, Buf *out, const BfileHeader *h);
/* The same with header fields of the caller's (comma-separated, without braces): an export. */
void bfile_begin_fields(BfileWriter *w, Buf *out, const char *fields);
/* Open the list of a table (in "tables") or of its deleted keys (in "deleted"). */
void bfile_list_begin(BfileWriter *w, Buf *out, const char *table);
/* One element: a row object or a deleted key, already JSON. */
void bfile_item(BfileWriter *w, Buf *out, const char *json, size_t len);
void bfile_list_end(BfileWriter *w, Buf *out);
/* Close "tables" and open "deleted". */
void bfile_deleted_begin(BfileWriter *w, Buf *out);
/* Close "deleted" and end the document with trailer (a JSON object). */
void bfile_end(BfileWriter *w, Buf *out, const char *trailer);

/* ,"name":"value" (JSON-escaped), or ,"name":null for NULL. */
void bfile_put_string(Buf *out, const char *name, const char *v);
/* The header's fields, comma-separated, without braces (the manifest repeats them). */
void bfile_header_fields(Buf *out, const BfileHeader *h);

/*
 * Reading: the document fed in pieces of any size, checked line by line
 * against the layout above. Each row (or deleted key) is handed on as the text
 * it was written as; with check_json every row, the header and the trailer are
 * also checked to be well-formed JSON (json.h). A callback returning -1 stops
 * the reader; bfile_reader_feed then returns -1 with err as the callback set it.
 */
typedef struct BfileReader BfileReader;

typedef struct {
    /* the header as a JSON object (without "tables") */
    int (*header)(const char *json, size_t len, void *data, Err *err);
    /* section 0: a row of table; section 1: a deleted key of table */
    int (*item)(int section, const char *table, const char *json, size_t len, void *data, Err *err);
    /* the trailer object */
    int (*trailer)(const char *json, size_t len, void *data, Err *err);
} BfileReaderCb;

BfileReader *bfile_reader_new(const BfileReaderCb *cb, int check_json, void *data);
int bfile_reader_feed(BfileReader *r, const char *buf, size_t len, Err *err);
/* The input ended: -1 with err unless the document was complete. */
int bfile_reader_end(BfileReader *r, Err *err);
void bfile_reader_free(BfileReader *r);

/* Fields of a header, manifest or trailer: json_field (base/json.h). */
/* The codecs a header or manifest names: "codecs" (v2), else "compression" (v1). */
int bfile_codecs(const char *json, size_t len, CodecList *out, Err *err);

#endif
