/* manifest: the object beside each backup, written and read here (see manifest.h). */
#include "base/json.h"
#include "format/manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void manifest_write(Buf *out, const BfileHeader *h, const char *key, const char *rows,
                    const char *deleted, const char *sha256, uint64_t size, uint64_t raw_size,
                    const char *finished_at, const char *key_id, const char *wrapped_key,
                    const char *origin_key_id) {
    buf_puts(out, "{");
    bfile_header_fields(out, h);
    bfile_put_string(out, "key", key);
    buf_printf(out, ",\"rows\":%s,\"deleted\":%s", rows, deleted);
    bfile_put_string(out, "sha256", sha256);
    buf_printf(out, ",\"size\":%" PRIu64 ",\"raw_size\":%" PRIu64, size, raw_size);
    bfile_put_string(out, "finished_at", finished_at);
    if (key_id) {
        bfile_put_string(out, "origin_key_id", origin_key_id ? origin_key_id : key_id);
        bfile_put_string(out, "key_id", key_id);
        bfile_put_string(out, "wrapped_key", wrapped_key);
    }
    buf_puts(out, "}\n");
}

int manifest_rewrap(const char *json, size_t len, const char *key_id, const char *wrapped_key,
                    Buf *out) {
    static const char pat[] = ",\"key_id\":\"";
    const char *at = NULL;
    for (const char *p = json; p + sizeof(pat) - 1 <= json + len; p++)
        if (memcmp(p, pat, sizeof(pat) - 1) == 0)
            at = p; /* the last one: the wrapping ends the object */
    if (at == NULL)
        return -1;
    buf_append(out, json, (size_t)(at - json));
    bfile_put_string(out, "key_id", key_id);
    bfile_put_string(out, "wrapped_key", wrapped_key);
    buf_puts(out, "}\n");
    return 0;
}

/* The text of "name":{...} (flat), into out. */
static int object_of(const char *json, size_t len, const char *name, char *out, size_t outsz) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":{", name);
    size_t pl = strlen(pat);
    for (const char *p = json; p + pl <= json + len; p++) {
        if (memcmp(p, pat, pl) != 0)
            continue;
        const char *s = p + pl - 1, *e = memchr(s, '}', (size_t)(json + len - s));
        if (e == NULL || (size_t)(e - s + 1) >= outsz)
            return -1;
        memcpy(out, s, (size_t)(e - s + 1));
        out[e - s + 1] = 0;
        return 0;
    }
    return -1;
}

int manifest_parse(const char *json, size_t len, Manifest *m, Err *err) {
    memset(m, 0, sizeof(*m));
    char version[16], size[24], raw[24];
    struct {
        const char *name;
        char *out;
        size_t sz;
    } f[] = {
        {"version", version, sizeof(version)},
        {"backup_id", m->backup_id, sizeof(m->backup_id)},
        {"user_id", m->user_id, sizeof(m->user_id)},
        {"type", m->type, sizeof(m->type)},
        {"base_backup_id", m->base_backup_id, sizeof(m->base_backup_id)},
        {"snapshot", m->snapshot, sizeof(m->snapshot)},
        {"created_at", m->created_at, sizeof(m->created_at)},
        {"finished_at", m->finished_at, sizeof(m->finished_at)},
        {"key", m->key, sizeof(m->key)},
        {"sha256", m->sha256, sizeof(m->sha256)},
        {"size", size, sizeof(size)},
        {"raw_size", raw, sizeof(raw)},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (json_field(json, len, f[i].name, f[i].out, f[i].sz) != 0) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "manifest: no usable \"%s\"", f[i].name);
            return -1;
        }
    if (object_of(json, len, "rows", m->rows, sizeof(m->rows)) != 0 ||
        object_of(json, len, "deleted", m->deleted, sizeof(m->deleted)) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "manifest: no usable counts");
        return -1;
    }
    if (bfile_codecs(json, len, &m->codecs, err) != 0) {
        err_prefix(err, "manifest");
        return -1;
    }
    if (json_field(json, len, "key_id", m->key_id, sizeof(m->key_id)) == 0 &&
        json_field(json, len, "wrapped_key", m->wrapped_key, sizeof(m->wrapped_key)) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s", "manifest: a key id without its key");
        return -1;
    }
    if (json_field(json, len, "origin_key_id", m->origin_key_id, sizeof(m->origin_key_id)) != 0)
        snprintf(m->origin_key_id, sizeof(m->origin_key_id), "%s", m->key_id);
    if (codec_list_encrypted(&m->codecs) && (!m->key_id[0] || !m->wrapped_key[0])) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s",
                "manifest: an encrypted backup without its wrapped key");
        return -1;
    }
    m->version = atoi(version);
    m->size = strtoull(size, NULL, 10);
    m->raw_size = strtoull(raw, NULL, 10);
    return 0;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
        p++;
    return p;
}

int manifest_counts_next(const char **pp, const char *end, char *table, size_t tablesz,
                         uint64_t *count) {
    const char *p = skip_ws(*pp, end);
    if (p < end && (*p == '{' || *p == ','))
        p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 0;
    }
    if (p >= end || *p != '"')
        return -1;
    const char *name = ++p;
    while (p < end && *p != '"')
        p++;
    if (p >= end || (size_t)(p - name) >= tablesz)
        return -1;
    snprintf(table, tablesz, "%.*s", (int)(p - name), name);
    p = skip_ws(p + 1, end);
    if (p >= end || *p != ':')
        return -1;
    p = skip_ws(p + 1, end);
    char *e;
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    *count = strtoull(p, &e, 10);
    p = skip_ws(e, end);
    if (p >= end || (*p != ',' && *p != '}'))
        return -1;
    *pp = p;
    return 1;
}

int manifest_count_of(const char *obj, const char *table, uint64_t *count) {
    const char *p = obj, *end = obj + strlen(obj);
    char t[64];
    uint64_t n;
    int rc;
    while ((rc = manifest_counts_next(&p, end, t, sizeof(t), &n)) == 1)
        if (strcmp(t, table) == 0) {
            *count = n;
            return 0;
        }
    return -1;
}

int manifest_counts_sum(const char *obj, uint64_t *sum) {
    const char *p = obj, *end = obj + strlen(obj);
    char t[64];
    uint64_t n;
    int rc;
    *sum = 0;
    while ((rc = manifest_counts_next(&p, end, t, sizeof(t), &n)) == 1)
        *sum += n;
    return rc;
}
