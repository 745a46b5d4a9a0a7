/*
 * pgjson: a row of COPY's text format written as the JSON object that
 * PostgreSQL's row_to_json writes for it, byte for byte.
 *
 * PostgreSQL spends twice as long writing a row as JSON as writing it as
 * COPY text; the worker reads the text and writes the JSON itself. Each
 * column's kind says how its text becomes JSON (PostgreSQL 15's
 * datum_to_json, json.c):
 *   PGJSON_STRING     a JSON string of the text (text, uuid, bytea, time,
 *                     interval... every built-in type row_to_json quotes)
 *   PGJSON_NUMBER     the digits as written when they are a JSON number,
 *                     else a string (NaN, Infinity): never through a double
 *   PGJSON_BOOL       t/f as true/false
 *   PGJSON_DATE       a string (ISO and XSD dates are the same text)
 *   PGJSON_TIMESTAMP  a string, 'T' between date and time
 *   PGJSON_TIMESTAMPTZ  the same, and an offset of whole hours as +HH:00
 *   PGJSON_JSON       the text itself (json, jsonb, and a column the COPY
 *                     already turned into JSON with to_json)
 * and, for an array of any of these, the kind in upper case: array_out's
 * {a,"b c",NULL} becomes ["a","b c",null] with each element as its kind,
 * nested arrays nested, dimension decorations ([0:1]=) dropped.
 *
 * The session that runs the COPY must have DateStyle ISO and send UTF-8:
 * floats, bytea and intervals are printed by the same settings in both.
 * A malformed line is an error naming what was wrong, never a crash.
 */
#ifndef BW_PGJSON_H
#define BW_PGJSON_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>

typedef enum {
    PGJSON_STRING = 's',
    PGJSON_NUMBER = 'n',
    PGJSON_BOOL = 'b',
    PGJSON_DATE = 'd',
    PGJSON_TIMESTAMP = 't',
    PGJSON_TIMESTAMPTZ = 'z',
    PGJSON_JSON = 'j',
} PgJsonKind;

/* 1 if c is a kind, or an array kind (its upper case). */
int pgjson_kind_valid(char c);

typedef struct PgJsonRow PgJsonRow;

PgJsonRow *pgjson_row_new(void);
void pgjson_row_free(PgJsonRow *r);
/* Add the next column: its name (the object's member, escaped as row_to_json does) and kind
 * (a PgJsonKind, or its upper case for an array of it). */
void pgjson_row_add(PgJsonRow *r, const char *name, char kind);
int pgjson_row_columns(const PgJsonRow *r);

/* Append the JSON object of one COPY text line (a final "\n" allowed). -1 with err when the
 * line is not a row of these columns (field count, a bad escape, a value of the wrong shape);
 * out may then hold part of it. */
int pgjson_row_write(PgJsonRow *r, const char *line, size_t len, Buf *out, Err *err);

/* Where a row written in parts stands: start each row from PGJSON_CURSOR_INIT. */
typedef struct {
    int field;  /* the column being written */
    size_t pos; /* the next byte of the line to read */
    int open;   /* that column's value is written in part */
} PgJsonCursor;

#define PGJSON_CURSOR_INIT                                                                         \
    { 0, 0, 0 }

/* The same in parts, for a huge row: writes from cur on and stops once out holds at least max
 * bytes (inside a text or json value: other values are written whole). 1 when the row is
 * written, 0 when it stopped (call again with the same line and cursor), -1 with err. */
int pgjson_row_write_part(PgJsonRow *r, const char *line, size_t len, PgJsonCursor *cur, Buf *out,
                          size_t max, Err *err);

/* 1 if s (len bytes) is a JSON number as PostgreSQL's IsValidJsonNumber sees it. */
int pgjson_is_number(const char *s, size_t len);

#endif
