/*
 * pgcopy: JSON values (as PostgreSQL's row_to_json writes them) turned into
 * the fields of COPY's text format, so that rows go into typed tables
 * through each type's own input function: no jsonb per row, no
 * jsonb_populate_record.
 *
 * What a JSON value becomes depends on its column's kind:
 *   PGCOPY_SCALAR  a string is its text (escapes undone), a number its digits
 *                  as written (never through a double), true/false as words;
 *                  an object or array its JSON text (as jsonb_populate_record
 *                  would hand a scalar column)
 *   PGCOPY_JSON    the JSON text itself (json and jsonb columns, and columns
 *                  staged as jsonb to be converted by PostgreSQL)
 *   PGCOPY_ARRAY   a JSON array becomes an array literal {...}: elements as
 *                  SCALAR, strings quoted, null as NULL, nested arrays nested
 *   PGCOPY_JSON_ARRAY  the same, each element quoted as its JSON text (json[])
 * null is \N. \u0000 is refused (no PostgreSQL text holds it).
 *
 * The input is assumed well-formed (the backup reader checks every row), but
 * nothing is read past its end: a malformed value is an error, not a crash.
 */
#ifndef BW_PGCOPY_H
#define BW_PGCOPY_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>

typedef enum {
    PGCOPY_SCALAR = 's',
    PGCOPY_JSON = 'j',
    PGCOPY_ARRAY = 'a',
    PGCOPY_JSON_ARRAY = 'J',
} PgCopyKind;

/* Append text as a COPY text field (backslash, tab, newline, carriage return escaped). */
void pgcopy_text(Buf *out, const char *s, size_t n);

/* Append the COPY text field of one JSON value. -1 with err when it cannot be one. */
int pgcopy_value(PgCopyKind kind, const char *json, size_t len, Buf *out, Err *err);

/* A row shape: the JSON object's member names and kinds, in the COPY's column order. */
typedef struct PgCopyRow PgCopyRow;

PgCopyRow *pgcopy_row_new(void);
void pgcopy_row_free(PgCopyRow *r);
/* Add the next column (name copied). */
void pgcopy_row_add(PgCopyRow *r, const char *name, PgCopyKind kind);
int pgcopy_row_columns(const PgCopyRow *r);

/*
 * Append one COPY text line for a JSON object: its members in column order, a
 * member absent as \N (a column added since), a member of no column ignored (a
 * column dropped since); then suffix (more fields, "\t"-led, or "") and "\n".
 * -1 with err (naming the member) when the object cannot be a row.
 */
int pgcopy_row_line(PgCopyRow *r, const char *json, size_t len, const char *suffix, Buf *out,
                    Err *err);

/* The value of a JSON object's top-level member name (its first: row_to_json never repeats
 * one, where pgcopy_row_line would take the last): 0 with *val, *vlen; -1 when absent or the
 * object is malformed before it. Members before it are skipped, those after it not read. */
int pgcopy_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen);

/* Rows of at least `at` bytes of JSON are handed on as they are written: fn gets out whenever it
 * holds `at` bytes or more, and empties it or leaves it (0), or fails (-1: the row fails). A big
 * value is then never held whole; a row that fails after a spill has been passed on in part. */
typedef int (*PgCopySpill)(Buf *out, void *data);
void pgcopy_row_spill(PgCopyRow *r, size_t at, PgCopySpill fn, void *data);

#endif
