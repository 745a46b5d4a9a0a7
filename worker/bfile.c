/* bfile: the backup document writer (see bfile.h). */
#include "bfile.h"

#include <inttypes.h>
#include <string.h>

static void str_or_null(Buf *out, const char *name, const char *v) {
    buf_printf(out, ",\"%s\":", name);
    if (v == NULL) {
        buf_puts(out, "null");
        return;
    }
    buf_puts(out, "\"");
    buf_json_escape(out, v, strlen(v));
    buf_puts(out, "\"");
}

static void header_fields(Buf *out, const BfileHeader *h) {
    buf_printf(out, "\"format\":\"%s\",\"version\":%d", BFILE_FORMAT, BFILE_VERSION);
    str_or_null(out, "backup_id", h->backup_id);
    str_or_null(out, "user_id", h->user_id);
    str_or_null(out, "type", h->type);
    str_or_null(out, "base_backup_id", h->base_backup_id);
    str_or_null(out, "snapshot", h->snapshot);
    str_or_null(out, "base_snapshot", h->base_snapshot);
    str_or_null(out, "created_at", h->created_at);
    str_or_null(out, "compression", h->compression);
}

void bfile_begin(BfileWriter *w, Buf *out, const BfileHeader *h) {
    memset(w, 0, sizeof(*w));
    buf_puts(out, "{");
    header_fields(out, h);
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

void bfile_manifest(Buf *out, const BfileHeader *h, const char *key, const char *rows,
                    const char *deleted, const char *sha256, uint64_t size, uint64_t raw_size,
                    const char *finished_at) {
    buf_puts(out, "{");
    header_fields(out, h);
    str_or_null(out, "key", key);
    buf_printf(out, ",\"rows\":%s,\"deleted\":%s", rows, deleted);
    str_or_null(out, "sha256", sha256);
    buf_printf(out, ",\"size\":%" PRIu64 ",\"raw_size\":%" PRIu64, size, raw_size);
    str_or_null(out, "finished_at", finished_at);
    buf_puts(out, "}\n");
}
