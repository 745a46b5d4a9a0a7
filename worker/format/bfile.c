/* bfile: the backup document writer (see bfile.h). */
#include "format/bfile.h"

#include "base/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bfile_put_string(Buf *out, const char *name, const char *v) {
    buf_printf(out, ",\"%s\":", name);
    if (v == NULL) {
        buf_puts(out, "null");
        return;
    }
    buf_puts(out, "\"");
    buf_json_escape(out, v, strlen(v));
    buf_puts(out, "\"");
}

void bfile_header_fields(Buf *out, const BfileHeader *h) {
    buf_printf(out, "\"format\":\"%s\",\"version\":%d", BFILE_FORMAT, BFILE_VERSION);
    bfile_put_string(out, "backup_id", h->backup_id);
    bfile_put_string(out, "user_id", h->user_id);
    bfile_put_string(out, "type", h->type);
    bfile_put_string(out, "base_backup_id", h->base_backup_id);
    bfile_put_string(out, "snapshot", h->snapshot);
    bfile_put_string(out, "base_snapshot", h->base_snapshot);
    bfile_put_string(out, "created_at", h->created_at);
    /* v1 readers know only "compression" (the first codec); the codecs are the truth from v2 on */
    bfile_put_string(out, "compression", codec_list_compression(h->codecs));
    buf_puts(out, ",\"codecs\":");
    codec_list_json(h->codecs, out);
}

int bfile_codecs(const char *json, size_t len, CodecList *out, Err *err) {
    const char *end = json + len, *p = json;
    static const char name[] = "\"codecs\":";
    for (; p + sizeof(name) - 1 <= end; p++)
        if (memcmp(p, name, sizeof(name) - 1) == 0)
            return codec_list_from_json(p + sizeof(name) - 1,
                                        (size_t)(end - p - (sizeof(name) - 1)), out, err);
    char comp[16];
    if (json_field(json, len, "compression", comp, sizeof(comp)) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "no codecs and no compression named");
        return -1;
    }
    return codec_list_parse(strcmp(comp, "none") == 0 ? "" : comp, out, err); /* format v1 */
}

void bfile_begin(BfileWriter *w, Buf *out, const BfileHeader *h) {
    Buf fields = BUF_INIT;
    bfile_header_fields(&fields, h);
    bfile_begin_fields(w, out, fields.data);
    buf_free(&fields);
}

void bfile_begin_fields(BfileWriter *w, Buf *out, const char *fields) {
    memset(w, 0, sizeof(*w));
    buf_puts(out, "{");
    buf_puts(out, fields);
    buf_puts(out, ",\"tables\":{");
}

void bfile_list_begin(BfileWriter *w, Buf *out, const char *table) {
    buf_puts(out, w->lists++ ? ",\n\"" : "\n\"");
    buf_json_escape(out, table, strlen(table));
    buf_puts(out, "\":[");
    w->items = 0;
}

void bfile_item(BfileWriter *w, Buf *out, const char *json, size_t len) {
    buf_puts(out, w->items++ ? ",\n" : "\n");
    buf_append(out, json, len);
}

void bfile_list_end(BfileWriter *w, Buf *out) {
    buf_puts(out, w->items ? "\n]" : "]");
}

void bfile_deleted_begin(BfileWriter *w, Buf *out) {
    buf_puts(out, "},\n\"deleted\":{");
    w->section = 1;
    w->lists = 0;
}

void bfile_end(BfileWriter *w, Buf *out, const char *trailer) {
    if (w->section == 0)
        bfile_deleted_begin(w, out);
    buf_printf(out, "},\n\"trailer\":%s}\n", trailer);
}

/* ---- reading ---- */

#define LINE_MAX_BYTES (256u << 20)

typedef enum {
    R_HEADER,
    R_LISTS,   /* expecting a list of the current section */
    R_ITEMS,   /* inside a list */
    R_CLOSE,   /* after the last item: the list's closer */
    R_DELETED, /* expecting "deleted" */
    R_TRAILER,
    R_DONE,
} RState;

struct BfileReader {
    BfileReaderCb cb;
    void *data;
    int check_json;
    RState st;
    int section;
    char table[64];
    Buf line;
    uint64_t lineno;
};

BfileReader *bfile_reader_new(const BfileReaderCb *cb, int check_json, void *data) {
    BfileReader *r = xcalloc(1, sizeof(*r));
    r->cb = *cb;
    r->data = data;
    r->check_json = check_json;
    return r;
}

void bfile_reader_free(BfileReader *r) {
    if (r == NULL)
        return;
    buf_free(&r->line);
    free(r);
}

static int malformed(BfileReader *r, Err *err, const char *why) {
    err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL,
            "malformed backup document at line %" PRIu64 ": %s", r->lineno, why);
    return -1;
}

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* A list opener `"name":[` plus rest (one of "", "]," or "]},"); 1 with r->table set. */
static int list_open(BfileReader *r, const char *s, size_t n, const char *rest) {
    size_t k = strlen(rest);
    if (n < 5 + k || s[0] != '"' || !ends_with(s, n - k, "\":[") || memcmp(s + n - k, rest, k))
        return 0;
    size_t name = n - k - 4;
    if (name == 0 || name >= sizeof(r->table))
        return 0;
    for (size_t i = 1; i <= name; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (i > 1 && c >= '0' && c <= '9')))
            return 0;
    }
    memcpy(r->table, s + 1, name);
    r->table[name] = 0;
    return 1;
}

static int check(BfileReader *r, const char *s, size_t n, Err *err, const char *what) {
    size_t at = 0;
    if (r->check_json && !json_valid(s, n, &at)) {
        char why[96];
        snprintf(why, sizeof(why), "%s is not valid JSON (byte %zu)", what, at + 1);
        return malformed(r, err, why);
    }
    return 0;
}

/* After a list ended with `],` or `]},`. */
static void list_closed(BfileReader *r, int section_end) {
    if (!section_end)
        r->st = R_LISTS;
    else
        r->st = r->section == 0 ? R_DELETED : R_TRAILER;
}

static int line(BfileReader *r, const char *s, size_t n, Err *err) {
    r->lineno++;
    switch (r->st) {
    case R_HEADER: {
        static const char start[] = "{\"format\":\"" BFILE_FORMAT "\",\"version\":";
        if (n < sizeof(start) || memcmp(s, start, sizeof(start) - 1) != 0)
            return malformed(r, err, "not a " BFILE_FORMAT " document");
        if (!ends_with(s, n, ",\"tables\":{"))
            return malformed(r, err, "the header line must end with \"tables\":{");
        Buf h = BUF_INIT;
        buf_append(&h, s, n - 11);
        buf_puts(&h, "}");
        int rc = check(r, h.data, h.len, err, "the header");
        if (rc == 0 && r->cb.header)
            rc = r->cb.header(h.data, h.len, r->data, err);
        buf_free(&h);
        r->st = R_LISTS;
        return rc;
    }
    case R_LISTS:
        if (list_open(r, s, n, "")) {
            r->st = R_ITEMS;
            return 0;
        }
        if (list_open(r, s, n, "],") || list_open(r, s, n, "]},")) {
            list_closed(r, s[n - 2] == '}');
            return 0;
        }
        return malformed(r, err, "expected a table's list");
    case R_ITEMS:
    case R_CLOSE:
        if (n == 2 && memcmp(s, "],", 2) == 0) {
            list_closed(r, 0);
            return 0;
        }
        if (n == 3 && memcmp(s, "]},", 3) == 0) {
            list_closed(r, 1);
            return 0;
        }
        if (r->st == R_CLOSE)
            return malformed(r, err, "expected the end of a list after an item without a comma");
        {
            int more = n > 0 && s[n - 1] == ',';
            size_t k = n - (size_t)more;
            if (k == 0 || (r->section == 0 && s[0] != '{') || (r->section == 1 && s[0] != '"'))
                return malformed(r, err,
                                 r->section ? "a deleted key must be a JSON string"
                                            : "a row must be a JSON object");
            if (check(r, s, k, err, r->section ? "a deleted key" : "a row") != 0)
                return -1;
            if (!more)
                r->st = R_CLOSE;
            return r->cb.item ? r->cb.item(r->section, r->table, s, k, r->data, err) : 0;
        }
    case R_DELETED:
        if (n == 11 && memcmp(s, "\"deleted\":{", 11) == 0) {
            r->section = 1;
            r->st = R_LISTS;
            return 0;
        }
        if (n == 13 && memcmp(s, "\"deleted\":{},", 13) == 0) {
            r->section = 1;
            r->st = R_TRAILER;
            return 0;
        }
        return malformed(r, err, "expected \"deleted\"");
    case R_TRAILER:
        if (n < 13 || memcmp(s, "\"trailer\":{", 11) != 0 || s[n - 1] != '}')
            return malformed(r, err, "expected the trailer");
        if (check(r, s + 10, n - 11, err, "the trailer") != 0)
            return -1;
        r->st = R_DONE;
        return r->cb.trailer ? r->cb.trailer(s + 10, n - 11, r->data, err) : 0;
    case R_DONE:
        return malformed(r, err, "data after the end of the document");
    }
    return -1;
}

#define LINE_KEEP_BYTES (1u << 20)

int bfile_reader_feed(BfileReader *r, const char *buf, size_t len, Err *err) {
    while (len > 0) {
        const char *nl = memchr(buf, '\n', len);
        size_t k = nl ? (size_t)(nl - buf) : len;
        if (r->line.len + k > LINE_MAX_BYTES)
            return malformed(r, err, "line longer than 256 MiB");
        if (nl == NULL) {
            buf_append(&r->line, buf, k);
            return 0;
        }
        int rc;
        if (r->line.len) {
            buf_append(&r->line, buf, k);
            rc = line(r, r->line.data, r->line.len, err);
            if (r->line.cap > LINE_KEEP_BYTES) /* a huge row's memory goes back at once */
                buf_free(&r->line);
            r->line.len = 0;
        } else {
            rc = line(r, buf, k, err);
        }
        if (rc != 0)
            return -1;
        buf += k + 1;
        len -= k + 1;
    }
    return 0;
}

int bfile_reader_end(BfileReader *r, Err *err) {
    if (r->line.len > 0)
        return malformed(r, err, "the document does not end with a newline (truncated?)");
    if (r->st != R_DONE)
        return malformed(r, err, "the document ends early (truncated?)");
    return 0;
}
