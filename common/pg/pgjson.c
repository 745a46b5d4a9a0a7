/*
 * pgjson: COPY text rows written as row_to_json's JSON (see pgjson.h).
 *
 * The output is written straight into the Buf's memory: each step reserves the
 * most it can write (6 bytes a byte for a string: \u00XX) for a slice of its
 * input, so a 50 MB value never reserves 300 MB at once.
 */
#include "pg/pgjson.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* input bytes handled per reservation */
#define SLICE 65536

typedef struct {
    char *key; /* "name": or ,"name": (the first column without its comma) */
    size_t keylen;
    char kind;
} Col;

struct PgJsonRow {
    Col *c;
    int n, cap;
    Buf scratch; /* a field with its COPY escapes undone (arrays, json) */
    Buf elem;    /* an array element with its quoting undone */
};

/* ---- characters ---- */

/* A byte a JSON string cannot hold as it is: '"', '\\' and the controls (in COPY text, '\\'
 * also starts a COPY escape). */
static inline int json_special(unsigned char c) {
    return c < 0x20 || c == '"' || c == '\\';
}

static const char hexdig[] = "0123456789abcdef";

/* Write byte c as inside a JSON string, as escape_json does; room for 6 bytes reserved. */
static inline char *put_json_byte(char *o, unsigned char c) {
    switch (c) {
    case '\b':
        *o++ = '\\', *o++ = 'b';
        break;
    case '\f':
        *o++ = '\\', *o++ = 'f';
        break;
    case '\n':
        *o++ = '\\', *o++ = 'n';
        break;
    case '\r':
        *o++ = '\\', *o++ = 'r';
        break;
    case '\t':
        *o++ = '\\', *o++ = 't';
        break;
    case '"':
        *o++ = '\\', *o++ = '"';
        break;
    case '\\':
        *o++ = '\\', *o++ = '\\';
        break;
    default:
        if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hexdig[c >> 4];
            o[5] = hexdig[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    return o;
}

static int isoct(char c) {
    return c >= '0' && c <= '7';
}

/* The byte a COPY escape stands for, p just after the backslash (COPY FROM's rules, as the
 * server may write any of them). Advances *i past the escape. */
static unsigned char copy_unescape(const char *p, size_t n, size_t *i) {
    char c = p[*i];
    (*i)++;
    switch (c) {
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'v':
        return '\v';
    case 'x':
        if (*i < n && buf_hex_value(p[*i]) >= 0) {
            int v = buf_hex_value(p[(*i)++]);
            if (*i < n && buf_hex_value(p[*i]) >= 0)
                v = v * 16 + buf_hex_value(p[(*i)++]);
            return (unsigned char)v;
        }
        return 'x';
    default:
        if (isoct(c)) {
            int v = c - '0';
            for (int k = 0; k < 2 && *i < n && isoct(p[*i]); k++)
                v = v * 8 + (p[(*i)++] - '0');
            return (unsigned char)v;
        }
        return (unsigned char)c;
    }
}

/* ---- the row shape ---- */

int pgjson_kind_valid(char c) {
    return c && strchr("snbdtzjSNBDTZJ", c) != NULL;
}

PgJsonRow *pgjson_row_new(void) {
    return xcalloc(1, sizeof(PgJsonRow));
}

void pgjson_row_free(PgJsonRow *r) {
    if (r == NULL)
        return;
    for (int i = 0; i < r->n; i++)
        free(r->c[i].key);
    free(r->c);
    buf_free(&r->scratch);
    buf_free(&r->elem);
    free(r);
}

void pgjson_row_add(PgJsonRow *r, const char *name, char kind) {
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->c = xrealloc(r->c, (size_t)r->cap * sizeof(Col));
    }
    Buf k = BUF_INIT;
    if (r->n > 0)
        buf_puts(&k, ",");
    buf_puts(&k, "\"");
    buf_json_escape(&k, name, strlen(name));
    buf_puts(&k, "\":");
    Col *c = &r->c[r->n++];
    c->keylen = k.len;
    c->key = buf_steal(&k);
    c->kind = pgjson_kind_valid(kind) ? kind : PGJSON_STRING;
}

int pgjson_row_columns(const PgJsonRow *r) {
    return r->n;
}

/* ---- values ---- */

/* COPY field text from p[i] on, escapes undone, then escaped as inside a JSON string (esc) or
 * as it is (json): at least up to stop, and past it to finish an escape (never past end).
 * Returns where it stopped. */
static size_t put_copy_text(Buf *out, const char *p, size_t i, size_t stop, size_t end, int esc) {
    /* room for the text as it is, grown only when escapes lengthen it: reserving the worst case
     * (6 bytes a byte) up front made a 300 KB value's buffer 1 MB, mmap'd and faulted in again
     * for every backup (perf: half the worker's CPU per small backup went to that) */
    buf_reserve(out, stop - i + 16);
    char *o = out->data + out->len, *lim = out->data + out->cap - 1;
    while (i < stop) {
        size_t j = i;
        if (esc)
            while (j < stop && !json_special((unsigned char)p[j]))
                j++;
        else
            while (j < stop && p[j] != '\\')
                j++;
        if ((size_t)(lim - o) < j - i + 6) { /* the run and one escape of at most 6 bytes */
            out->len = (size_t)(o - out->data);
            buf_reserve(out, stop - i + (stop - i) / 4 + 16);
            o = out->data + out->len;
            lim = out->data + out->cap - 1;
        }
        memcpy(o, p + i, j - i);
        o += j - i;
        i = j;
        if (i == stop)
            break;
        unsigned char c;
        if (p[i] == '\\' && i + 1 < end) {
            i++;
            c = copy_unescape(p, end, &i);
        } else {
            c = (unsigned char)p[i++];
        }
        if (esc)
            o = put_json_byte(o, c);
        else
            *o++ = (char)c;
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return i;
}

/* A JSON string of plain text (no COPY escapes left). */
static void put_string(Buf *out, const char *p, size_t n) {
    size_t i = 0;
    buf_reserve(out, 1);
    out->data[out->len++] = '"';
    while (i < n) {
        size_t end = n - i > SLICE ? i + SLICE : n;
        buf_reserve(out, (end - i) * 6 + 8);
        char *o = out->data + out->len;
        for (; i < end; i++) {
            unsigned char c = (unsigned char)p[i];
            if (json_special(c))
                o = put_json_byte(o, c);
            else
                *o++ = (char)c;
        }
        out->len = (size_t)(o - out->data);
    }
    buf_reserve(out, 1);
    out->data[out->len++] = '"';
    out->data[out->len] = '\0';
}

static int isdig(char c) {
    return c >= '0' && c <= '9';
}

int pgjson_is_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    /* json_lex_number: 0 | [1-9][0-9]*, then .[0-9]+, then [eE][+-]?[0-9]+, and nothing after */
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && isdig(s[i]))
            i++;
    } else {
        return 0;
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i == n || !isdig(s[i]))
            return 0;
        while (i < n && isdig(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i == n || !isdig(s[i]))
            return 0;
        while (i < n && isdig(s[i]))
            i++;
    }
    return i == n;
}

/* A timestamp's text as XSD writes it: 'T' for the first space (the one between date and
 * time; " BC" comes later), and with a zone (tz) an offset of whole hours as +HH:00. */
static void put_timestamp(Buf *out, const char *p, size_t n, int tz) {
    const char *sp = memchr(p, ' ', n);
    if (sp == NULL) { /* infinity, -infinity */
        put_string(out, p, n);
        return;
    }
    buf_reserve(out, n + 6);
    char *o = out->data + out->len;
    *o++ = '"';
    size_t d = (size_t)(sp - p);
    memcpy(o, p, d);
    o += d;
    *o++ = 'T';
    size_t i = d + 1;
    if (tz) {
        /* the time is digits, ':' and '.'; the offset starts at its sign (none: not ISO, kept) */
        size_t s = i;
        while (s < n && p[s] != '+' && p[s] != '-')
            s++;
        if (s < n) {
            size_t h = s + 1;
            while (h < n && isdig(p[h]))
                h++;
            memcpy(o, p + i, h - i);
            o += h - i;
            i = h;
            if (h == n || p[h] != ':') {
                memcpy(o, ":00", 3);
                o += 3;
            }
        }
    }
    memcpy(o, p + i, n - i);
    o += n - i;
    *o++ = '"';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
}

/* One value of kind k (lower case) from its text (no COPY escapes left). */
static int put_value(Buf *out, char k, const char *p, size_t n, Err *err) {
    switch (k) {
    case PGJSON_NUMBER:
        if (pgjson_is_number(p, n))
            buf_append(out, p, n);
        else
            put_string(out, p, n);
        return 0;
    case PGJSON_BOOL:
        if (n == 1 && (p[0] == 't' || p[0] == 'f')) {
            buf_puts(out, p[0] == 't' ? "true" : "false");
            return 0;
        }
        err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "'%.*s' is not a boolean",
                (int)(n > 32 ? 32 : n), p);
        return -1;
    case PGJSON_TIMESTAMP:
    case PGJSON_TIMESTAMPTZ:
        put_timestamp(out, p, n, k == PGJSON_TIMESTAMPTZ);
        return 0;
    case PGJSON_JSON:
        buf_append(out, p, n);
        return 0;
    default: /* strings and dates */
        put_string(out, p, n);
        return 0;
    }
}

/* Undo COPY's escapes of field p into b (emptied first). */
static void copy_decode(Buf *b, const char *p, size_t n) {
    buf_reset(b);
    buf_reserve(b, n);
    char *o = b->data;
    for (size_t i = 0; i < n;) {
        const char *bs = memchr(p + i, '\\', n - i);
        size_t j = bs ? (size_t)(bs - p) : n;
        memcpy(o, p + i, j - i);
        o += j - i;
        i = j;
        if (i < n) {
            i++;
            if (i == n) { /* a lone final backslash: keep it */
                *o++ = '\\';
                break;
            }
            *o++ = (char)copy_unescape(p, n, &i);
        }
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/* An array literal as array_out writes it, as array_to_json writes the array. */
static int put_array(PgJsonRow *r, Buf *out, char k, const char *p, size_t n, Err *err) {
    size_t i = 0;
    int depth = 0, expect_elem = 1;
    if (n && p[0] == '[') { /* [lo:hi]...= */
        const char *eq = memchr(p, '=', n);
        if (eq == NULL)
            goto bad;
        i = (size_t)(eq - p) + 1;
    }
    if (i >= n || p[i] != '{')
        goto bad;
    while (i < n) {
        char c = p[i];
        if (c == '{') {
            if (!expect_elem)
                goto bad;
            buf_append(out, "[", 1);
            depth++;
            i++;
            expect_elem = 1;
            if (i < n && p[i] == '}')
                expect_elem = 0;
            continue;
        }
        if (c == '}') {
            if (depth == 0 || expect_elem)
                goto bad;
            buf_append(out, "]", 1);
            depth--;
            i++;
            if (depth == 0)
                break;
            continue;
        }
        if (c == ',') {
            if (depth == 0 || expect_elem)
                goto bad;
            buf_append(out, ",", 1);
            i++;
            expect_elem = 1;
            continue;
        }
        if (depth == 0 || !expect_elem)
            goto bad;
        expect_elem = 0;
        if (c == '"') { /* quoted: \x is x */
            buf_reset(&r->elem);
            i++;
            for (;;) {
                if (i >= n)
                    goto bad;
                size_t j = i;
                while (j < n && p[j] != '"' && p[j] != '\\')
                    j++;
                buf_append(&r->elem, p + i, j - i);
                i = j;
                if (i >= n)
                    goto bad;
                if (p[i] == '"') {
                    i++;
                    break;
                }
                if (i + 1 >= n)
                    goto bad;
                buf_append(&r->elem, p + i + 1, 1);
                i += 2;
            }
            if (put_value(out, k, r->elem.data ? r->elem.data : "", r->elem.len, err) != 0)
                return -1;
            continue;
        }
        size_t j = i;
        while (j < n && p[j] != ',' && p[j] != '}')
            j++;
        if (j - i == 4 && memcmp(p + i, "NULL", 4) == 0)
            buf_append(out, "null", 4);
        else if (put_value(out, k, p + i, j - i, err) != 0)
            return -1;
        i = j;
    }
    if (depth != 0 || i != n)
        goto bad;
    return 0;
bad:
    err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "'%.*s' is not an array literal",
            (int)(n > 48 ? 48 : n), p);
    return -1;
}

/* A field written in slices (a huge one never makes a huge buffer): strings, dates, json. */
static int sliced(char k) {
    return k == PGJSON_STRING || k == PGJSON_DATE || k == PGJSON_JSON;
}

/* One whole field (its COPY text) of column c that is not sliced, or NULL. */
static int put_field(PgJsonRow *r, Buf *out, const Col *c, const char *p, size_t n, Err *err) {
    if (n == 2 && p[0] == '\\' && p[1] == 'N') {
        buf_append(out, "null", 4);
        return 0;
    }
    char k = c->kind;
    const char *v = p;
    size_t vn = n;
    if (memchr(p, '\\', n) != NULL) {
        copy_decode(&r->scratch, p, n);
        v = r->scratch.data;
        vn = r->scratch.len;
    }
    if (k >= 'A' && k <= 'Z')
        return put_array(r, out, (char)(k - 'A' + 'a'), v, vn, err);
    return put_value(out, k, v, vn, err);
}

int pgjson_row_write_part(PgJsonRow *r, const char *line, size_t len, PgJsonCursor *cur, Buf *out,
                          size_t max, Err *err) {
    if (len && line[len - 1] == '\n')
        len--;
    size_t i = cur->pos;
    if (cur->field == 0 && !cur->open && i == 0)
        buf_append(out, "{", 1);
    for (int f = cur->field; f < r->n; f++) {
        const Col *c = &r->c[f];
        if (!cur->open) {
            if (f > 0) {
                if (i >= len || line[i] != '\t')
                    goto count;
                i++;
            }
        }
        const char *tab = memchr(line + i, '\t', len - i);
        size_t end = tab ? (size_t)(tab - line) : len;
        if (!cur->open) {
            buf_append(out, c->key, c->keylen);
            int null = end - i == 2 && line[i] == '\\' && line[i + 1] == 'N';
            if (!sliced(c->kind) || null) {
                if (put_field(r, out, c, line + i, end - i, err) != 0) {
                    err_prefix(err, "column %d: ", f + 1);
                    return -1;
                }
                i = end;
                continue;
            }
            if (c->kind != PGJSON_JSON)
                buf_append(out, "\"", 1);
            cur->open = 1;
        }
        while (i < end) {
            i = put_copy_text(out, line, i, end - i > SLICE ? i + SLICE : end, end,
                              c->kind != PGJSON_JSON);
            if (out->len >= max && i < end) { /* to be resumed here */
                cur->field = f;
                cur->pos = i;
                return 0;
            }
        }
        if (c->kind != PGJSON_JSON)
            buf_append(out, "\"", 1);
        cur->open = 0;
    }
    if (i != len)
        goto count;
    buf_append(out, "}", 1);
    memset(cur, 0, sizeof(*cur));
    /* the scratch buffers hold at most one huge field: not kept past it */
    if (r->scratch.cap > (4u << 20))
        buf_free(&r->scratch);
    if (r->elem.cap > (4u << 20))
        buf_free(&r->elem);
    return 1;
count:
    err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "a COPY row does not have %d fields", r->n);
    return -1;
}

int pgjson_row_write(PgJsonRow *r, const char *line, size_t len, Buf *out, Err *err) {
    PgJsonCursor cur = PGJSON_CURSOR_INIT;
    return pgjson_row_write_part(r, line, len, &cur, out, SIZE_MAX, err) == 1 ? 0 : -1;
}
