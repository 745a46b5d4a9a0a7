/* pgcopy: JSON values to COPY text fields (see pgcopy.h). */
#include "pg/pgcopy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 512

/* Where text goes: a buffer, handed to spill whenever it holds `at` bytes or more (a big value
 * is then never held whole). */
typedef struct {
    Buf *b;
    size_t at;
    PgCopySpill fn;
    void *data;
    int failed, spilled;
} Sink;

static void out_append(Sink *o, const void *p, size_t n) {
    buf_append(o->b, p, n);
    if (o->fn && !o->failed && o->b->len >= o->at) {
        o->spilled = 1;
        if (o->fn(o->b, o->data) != 0)
            o->failed = 1;
    }
}

/* Bytes COPY's text format escapes (besides '"' inside a quoted array element). */
static const unsigned char copy_special[256] = {['\\'] = 1, ['\n'] = 1, ['\r'] = 1, ['\t'] = 1};

/* Append bytes as COPY text; q: inside a quoted array element, where '"' and '\' are first
 * escaped for the array literal (so a backslash becomes four). */
static void put_text(Sink *out, const char *s, size_t n, int q) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!copy_special[c] && !(q && c == '"'))
            continue;
        out_append(out, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '\\':
            out_append(out, q ? "\\\\\\\\" : "\\\\", q ? 4 : 2);
            break;
        case '"':
            out_append(out, "\\\\\"", 3);
            break;
        case '\n':
            out_append(out, "\\n", 2);
            break;
        case '\r':
            out_append(out, "\\r", 2);
            break;
        default: /* tab */
            out_append(out, "\\t", 2);
            break;
        }
    }
    out_append(out, s + run, n - run);
}

void pgcopy_text(Buf *out, const char *s, size_t n) {
    Sink o = {out, 0, NULL, NULL, 0, 0};
    put_text(&o, s, n, 0);
}

static int bad(Err *err, const char *what) {
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", what);
    return -1;
}

/* ---- scanning (values are assumed well-formed; nothing past e is read) ---- */

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at '"': just past the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *e) {
    for (p++; p < e; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\')
            p++;
    }
    return NULL;
}

/* Just past the value at p, or NULL. */
static const char *skip_value(const char *p, const char *e) {
    if (p >= e)
        return NULL;
    if (*p == '"')
        return skip_string(p, e);
    if (*p == '[' || *p == '{') {
        int depth = 0;
        for (; p < e; p++) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, e);
                if (p == NULL)
                    return NULL;
                p--;
            } else if (c == '[' || c == '{') {
                if (++depth > MAX_DEPTH)
                    return NULL;
            } else if ((c == ']' || c == '}') && --depth == 0) {
                return p + 1;
            }
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\t' && *p != '\n' &&
           *p != '\r')
        p++;
    return p > s ? p : NULL;
}

static int hex4(const char *p, const char *e, unsigned *v) {
    if (e - p < 4)
        return -1;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16)
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

static size_t utf8(unsigned cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The text of the JSON string p..e (quotes included), escapes undone, as COPY text. */
static int put_string(const char *p, const char *e, int q, Sink *out, Err *err) {
    p++, e--; /* inside the quotes */
    while (p < e) {
        const char *s = p;
        while (p < e && *p != '\\')
            p++;
        put_text(out, s, (size_t)(p - s), q);
        if (p >= e)
            break;
        if (e - p < 2)
            return bad(err, "a JSON string ends inside an escape");
        char c = p[1], o[8];
        size_t n = 1;
        p += 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            o[0] = c;
            break;
        case 'b':
            o[0] = '\b';
            break;
        case 'f':
            o[0] = '\f';
            break;
        case 'n':
            o[0] = '\n';
            break;
        case 'r':
            o[0] = '\r';
            break;
        case 't':
            o[0] = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(p, e, &cp) != 0)
                return bad(err, "a JSON string holds a malformed \\u escape");
            p += 4;
            if (cp == 0)
                return bad(err, "\\u0000 cannot be stored in PostgreSQL text");
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return bad(err, "a JSON string holds a lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return bad(err, "a JSON string holds a lone high surrogate");
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            n = utf8(cp, o);
            break;
        }
        default:
            return bad(err, "a JSON string holds an unknown escape");
        }
        put_text(out, o, n, q);
    }
    return 0;
}

/* ---- values ---- */

static int put_element(PgCopyKind kind, const char *p, const char *e, int depth, Sink *out,
                       Err *err);

/* A JSON array as an array literal: {e1,e2,...}. */
static int put_array(PgCopyKind kind, const char *p, const char *e, int depth, Sink *out,
                     Err *err) {
    if (depth > MAX_DEPTH)
        return bad(err, "a JSON array nests too deep");
    out_append(out, "{", 1);
    p = skip_ws(p + 1, e - 1);
    int first = 1;
    while (p < e - 1) {
        const char *ve = skip_value(p, e - 1);
        if (ve == NULL)
            return bad(err, "a JSON array is malformed");
        if (!first)
            out_append(out, ",", 1);
        first = 0;
        if (put_element(kind, p, ve, depth + 1, out, err) != 0)
            return -1;
        p = skip_ws(ve, e - 1);
        if (p < e - 1) {
            if (*p != ',')
                return bad(err, "a JSON array is malformed");
            p = skip_ws(p + 1, e - 1);
        }
    }
    out_append(out, "}", 1);
    return 0;
}

/* One element inside an array literal. */
static int put_element(PgCopyKind kind, const char *p, const char *e, int depth, Sink *out,
                       Err *err) {
    switch (*p) {
    case 'n':
        out_append(out, "NULL", 4);
        return 0;
    case '[':
        if (kind == PGCOPY_ARRAY)
            return put_array(kind, p, e, depth, out, err);
        break;
    case '"':
        if (kind == PGCOPY_ARRAY) {
            out_append(out, "\"", 1);
            if (put_string(p, e, 1, out, err) != 0)
                return -1;
            out_append(out, "\"", 1);
            return 0;
        }
        break;
    case '{':
        break;
    default: /* a number, true or false: safe unquoted */
        put_text(out, p, (size_t)(e - p), 0);
        return 0;
    }
    /* an object (or, in json[], any string or array): its JSON text, quoted */
    out_append(out, "\"", 1);
    put_text(out, p, (size_t)(e - p), 1);
    out_append(out, "\"", 1);
    return 0;
}

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A value p..e as a top-level field. Whitespace around it is json's own (row_to_json writes
 * none): kept for a json column, dropped for the others. */
static int put_field(PgCopyKind kind, const char *p, const char *e, Sink *out, Err *err) {
    const char *raw = p, *raw_end = e;
    p = skip_ws(p, e);
    while (e > p && is_ws(e[-1]))
        e--;
    if (p >= e)
        return bad(err, "a JSON value is empty");
    if (*p == 'n') {
        out_append(out, "\\N", 2);
        return 0;
    }
    switch (kind) {
    case PGCOPY_JSON:
        put_text(out, raw, (size_t)(raw_end - raw), 0);
        return 0;
    case PGCOPY_ARRAY:
    case PGCOPY_JSON_ARRAY:
        if (*p == '[')
            return put_array(kind, p, e, 0, out, err);
        break;
    default:
        break;
    }
    if (*p == '"') /* a scalar's text, or an array given as its literal */
        return put_string(p, e, 0, out, err);
    put_text(out, p, (size_t)(e - p), 0); /* digits, true, false, or an object's JSON text */
    return 0;
}

int pgcopy_value(PgCopyKind kind, const char *json, size_t len, Buf *out, Err *err) {
    const char *e = json + len, *p = skip_ws(json, e);
    const char *ve = skip_value(p, e);
    if (ve == NULL || skip_ws(ve, e) != e)
        return bad(err, "not one JSON value");
    Sink o = {out, 0, NULL, NULL, 0, 0};
    return put_field(kind, p, ve, &o, err);
}

/* ---- rows ---- */

typedef struct {
    char *name;
    size_t len;
    PgCopyKind kind;
} Col;

struct PgCopyRow {
    Col *cols;
    int n, cap;
    const char **vs, **ve; /* this row's value of each column, or NULL */
    size_t spill_at;
    PgCopySpill spill;
    void *spill_data;
};

PgCopyRow *pgcopy_row_new(void) {
    PgCopyRow *r = xcalloc(1, sizeof(PgCopyRow));
    r->spill_at = SIZE_MAX;
    return r;
}

void pgcopy_row_free(PgCopyRow *r) {
    if (r == NULL)
        return;
    for (int i = 0; i < r->n; i++)
        free(r->cols[i].name);
    free(r->cols);
    free(r->vs);
    free(r->ve);
    free(r);
}

void pgcopy_row_add(PgCopyRow *r, const char *name, PgCopyKind kind) {
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->cols = xrealloc(r->cols, (size_t)r->cap * sizeof(Col));
        r->vs = xrealloc(r->vs, (size_t)r->cap * sizeof(char *));
        r->ve = xrealloc(r->ve, (size_t)r->cap * sizeof(char *));
    }
    r->cols[r->n++] = (Col){xstrdup(name), strlen(name), kind};
}

int pgcopy_row_columns(const PgCopyRow *r) {
    return r->n;
}

/* The column named by the member name s..s+n (escapes never match: names are plain), trying
 * hint first (members come in column order). */
static int find_col(const PgCopyRow *r, const char *s, size_t n, int hint) {
    if (hint < r->n && r->cols[hint].len == n && memcmp(r->cols[hint].name, s, n) == 0)
        return hint;
    for (int i = 0; i < r->n; i++)
        if (r->cols[i].len == n && memcmp(r->cols[i].name, s, n) == 0)
            return i;
    return -1;
}

void pgcopy_row_spill(PgCopyRow *r, size_t at, PgCopySpill fn, void *data) {
    r->spill_at = at;
    r->spill = fn;
    r->spill_data = data;
}

int pgcopy_row_line(PgCopyRow *r, const char *json, size_t len, const char *suffix, Buf *out,
                    Err *err) {
    const char *e = json + len, *p = skip_ws(json, e);
    for (int i = 0; i < r->n; i++)
        r->vs[i] = NULL;
    if (p >= e || *p != '{')
        return bad(err, "a row is not a JSON object");
    p = skip_ws(p + 1, e);
    int hint = 0;
    while (p < e && *p != '}') {
        const char *ke = *p == '"' ? skip_string(p, e) : NULL;
        if (ke == NULL)
            return bad(err, "a row's member name is malformed");
        const char *v = skip_ws(ke, e);
        if (v >= e || *v != ':')
            return bad(err, "a row's member has no value");
        const char *raw = v + 1; /* the value with the whitespace around it */
        v = skip_ws(raw, e);
        const char *ve = skip_value(v, e);
        if (ve == NULL)
            return bad(err, "a row's member value is malformed");
        int c = find_col(r, p + 1, (size_t)(ke - p - 2), hint);
        p = skip_ws(ve, e);
        if (c >= 0) { /* a repeated member: the last wins, as in jsonb */
            r->vs[c] = raw, r->ve[c] = p;
            hint = c + 1;
        }
        if (p < e && *p == ',')
            p = skip_ws(p + 1, e);
    }
    if (p >= e)
        return bad(err, "a row's JSON object is not closed");
    /* the spill is for big rows: a row under its size is never split */
    Sink o = {out, r->spill_at, len >= r->spill_at ? r->spill : NULL, r->spill_data, 0, 0};
    size_t start = out->len;
    for (int i = 0; i < r->n; i++) {
        if (i)
            out_append(&o, "\t", 1);
        if (r->vs[i] == NULL) {
            out_append(&o, "\\N", 2);
        } else if (put_field(r->cols[i].kind, r->vs[i], r->ve[i], &o, err) != 0) {
            if (!o.spilled) { /* nothing was passed on: the buffer is as it was */
                out->len = start;
                if (out->data)
                    out->data[start] = '\0';
            }
            err_prefix(err, "column %s", r->cols[i].name);
            return -1;
        }
        if (o.failed)
            return bad(err, "the row could not be passed on");
    }
    out_append(&o, suffix, strlen(suffix));
    out_append(&o, "\n", 1);
    return o.failed ? bad(err, "the row could not be passed on") : 0;
}

int pgcopy_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen) {
    const char *e = json + len, *p = skip_ws(json, e);
    size_t n = strlen(name);
    if (p >= e || *p != '{')
        return -1;
    p = skip_ws(p + 1, e);
    while (p < e && *p != '}') {
        const char *ke = *p == '"' ? skip_string(p, e) : NULL;
        if (ke == NULL)
            return -1;
        const char *v = skip_ws(ke, e);
        if (v >= e || *v != ':')
            return -1;
        v = skip_ws(v + 1, e);
        const char *ve = skip_value(v, e);
        if (ve == NULL)
            return -1;
        /* compared as pgcopy_row_line finds its columns */
        if ((size_t)(ke - p - 2) == n && memcmp(p + 1, name, n) == 0) {
            *val = v;
            *vlen = (size_t)(ve - v);
            return 0;
        }
        p = skip_ws(ve, e);
        if (p < e && *p == ',')
            p = skip_ws(p + 1, e);
    }
    return -1;
}
