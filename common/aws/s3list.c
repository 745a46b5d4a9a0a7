/*
 * s3list: ListObjectsV2 pagination and batched DeleteObjects (see s3list.h).
 *
 * S3's list and delete answers are flat enough to read with a small tag
 * scanner; keys come back XML-escaped and are decoded before use.
 */
#include "aws/s3list.h"
#include "base/buf.h"
#include "aws/sigv4.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void s3_xml_escape(Buf *out, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&':
            buf_puts(out, "&amp;");
            break;
        case '<':
            buf_puts(out, "&lt;");
            break;
        case '>':
            buf_puts(out, "&gt;");
            break;
        case '"':
            buf_puts(out, "&quot;");
            break;
        case '\'':
            buf_puts(out, "&apos;");
            break;
        default:
            buf_append(out, s, 1);
        }
    }
}

static size_t utf8_put(char *out, unsigned long cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

void s3_xml_decode(char *s) {
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *w = s;
    for (char *r = s; *r;) {
        if (*r == '&') {
            int done = 0;
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
                size_t n = strlen(ents[i].name);
                if (strncmp(r, ents[i].name, n) == 0) {
                    *w++ = ents[i].c;
                    r += n;
                    done = 1;
                }
            }
            if (!done && r[1] == '#') {
                char *end = NULL;
                unsigned long cp =
                    (r[2] == 'x') ? strtoul(r + 3, &end, 16) : strtoul(r + 2, &end, 10);
                if (end && *end == ';' && cp > 0 && cp <= 0x10FFFF) {
                    w += utf8_put(w, cp); /* never longer than the entity itself */
                    r = end + 1;
                    done = 1;
                }
            }
            if (done)
                continue;
        }
        *w++ = *r++;
    }
    *w = '\0';
}

/* Copy the text of the next <tag>...</tag> in [p, end) into a new string. */
static char *tag_text(const char *p, const char *end, const char *tag) {
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = strstr(p, open);
    if (s == NULL || s >= end)
        return NULL;
    s += strlen(open);
    const char *e = strstr(s, close);
    if (e == NULL || e > end)
        return NULL;
    char *v = xmalloc((size_t)(e - s) + 1);
    memcpy(v, s, (size_t)(e - s));
    v[e - s] = '\0';
    s3_xml_decode(v);
    return v;
}

/* ---- listing ---- */

typedef struct {
    S3Client *s3;
    char *prefix;
    int page_size;
    char *token;
    uint64_t count;
    S3ListPageCb page;
    S3ListDoneCb done;
    void *data;
} List;

static void list_next(List *l);

static void list_end(List *l, const Err *err) {
    l->done(l->count, err, l->data);
    free(l->prefix);
    free(l->token);
    free(l);
}

static void on_list_page(const S3Result *res, const Err *err, void *data) {
    List *l = data;
    if (err) {
        list_end(l, err);
        return;
    }
    const char *body = res->body && res->body->data ? res->body->data : "";
    size_t cap = 64, n = 0;
    S3Object *objs = xcalloc(cap, sizeof(S3Object));
    char **owned = xcalloc(cap * 3, sizeof(char *));
    const char *p = body;
    while ((p = strstr(p, "<Contents>")) != NULL) {
        const char *end = strstr(p, "</Contents>");
        if (end == NULL)
            break;
        if (n == cap) {
            cap *= 2;
            objs = xrealloc(objs, cap * sizeof(S3Object));
            owned = xrealloc(owned, cap * 3 * sizeof(char *));
        }
        char *key = tag_text(p, end, "Key");
        char *size = tag_text(p, end, "Size");
        char *lm = tag_text(p, end, "LastModified");
        char *etag = tag_text(p, end, "ETag");
        if (etag && etag[0] == '"') {
            memmove(etag, etag + 1, strlen(etag));
            size_t m = strlen(etag);
            if (m && etag[m - 1] == '"')
                etag[m - 1] = '\0';
        }
        objs[n].key = key ? key : "";
        objs[n].size = size ? strtoll(size, NULL, 10) : -1;
        objs[n].last_modified = lm ? lm : "";
        objs[n].etag = etag ? etag : "";
        owned[3 * n] = key;
        owned[3 * n + 1] = lm;
        owned[3 * n + 2] = etag;
        free(size);
        n++;
        p = end;
    }
    l->count += n;
    int stop = n > 0 ? l->page(objs, n, l->data) : 0;
    for (size_t i = 0; i < 3 * n; i++)
        free(owned[i]);
    free(owned);
    free(objs);
    char *truncated = tag_text(body, body + strlen(body), "IsTruncated");
    int more = truncated && strcmp(truncated, "true") == 0;
    free(truncated);
    free(l->token);
    l->token = more ? tag_text(body, body + strlen(body), "NextContinuationToken") : NULL;
    if (stop || !more || l->token == NULL) {
        list_end(l, NULL);
        return;
    }
    list_next(l);
}

static void list_next(List *l) {
    Buf q = BUF_INIT;
    buf_printf(&q, "list-type=2&max-keys=%d&prefix=", l->page_size);
    sigv4_encode(&q, l->prefix, strlen(l->prefix));
    if (l->token) {
        buf_puts(&q, "&continuation-token=");
        sigv4_encode(&q, l->token, strlen(l->token));
    }
    s3_request(l->s3, "GET", NULL, q.data, NULL, 0, NULL, 8u << 20, on_list_page, l);
    buf_free(&q);
}

void s3_list(S3Client *s3, const char *prefix, int page_size, S3ListPageCb page, S3ListDoneCb done,
             void *data) {
    List *l = xcalloc(1, sizeof(*l));
    l->s3 = s3;
    l->prefix = xstrdup(prefix ? prefix : "");
    l->page_size = page_size > 0 && page_size <= 1000 ? page_size : 1000;
    l->page = page;
    l->done = done;
    l->data = data;
    list_next(l);
}

/* ---- multipart uploads in progress ---- */

typedef struct {
    S3Client *s3;
    char *prefix;
    char *key_marker, *id_marker;
    uint64_t count;
    S3UploadsPageCb page;
    S3ListDoneCb done;
    void *data;
} Ups;

static void ups_next(Ups *u);

static void ups_end(Ups *u, const Err *err) {
    u->done(u->count, err, u->data);
    free(u->prefix);
    free(u->key_marker);
    free(u->id_marker);
    free(u);
}

static void on_ups_page(const S3Result *res, const Err *err, void *data) {
    Ups *u = data;
    if (err) {
        ups_end(u, err);
        return;
    }
    const char *body = res->body && res->body->data ? res->body->data : "";
    const char *bend = body + strlen(body);
    size_t cap = 16, n = 0;
    S3MultipartUpload *ups = xcalloc(cap, sizeof(*ups));
    char **owned = xcalloc(cap * 3, sizeof(char *));
    for (const char *p = body; (p = strstr(p, "<Upload>")) != NULL;) {
        const char *end = strstr(p, "</Upload>");
        if (end == NULL)
            break;
        if (n == cap) {
            cap *= 2;
            ups = xrealloc(ups, cap * sizeof(*ups));
            owned = xrealloc(owned, cap * 3 * sizeof(char *));
        }
        owned[3 * n] = tag_text(p, end, "Key");
        owned[3 * n + 1] = tag_text(p, end, "UploadId");
        owned[3 * n + 2] = tag_text(p, end, "Initiated");
        ups[n].key = owned[3 * n] ? owned[3 * n] : "";
        ups[n].upload_id = owned[3 * n + 1] ? owned[3 * n + 1] : "";
        ups[n].initiated = owned[3 * n + 2] ? owned[3 * n + 2] : "";
        n++;
        p = end;
    }
    u->count += n;
    int stop = n > 0 ? u->page(ups, n, u->data) : 0;
    for (size_t i = 0; i < 3 * n; i++)
        free(owned[i]);
    free(owned);
    free(ups);
    char *truncated = tag_text(body, bend, "IsTruncated");
    int more = truncated && strcmp(truncated, "true") == 0;
    free(truncated);
    free(u->key_marker);
    free(u->id_marker);
    u->key_marker = more ? tag_text(body, bend, "NextKeyMarker") : NULL;
    u->id_marker = more ? tag_text(body, bend, "NextUploadIdMarker") : NULL;
    if (stop || !more || u->key_marker == NULL) {
        ups_end(u, NULL);
        return;
    }
    ups_next(u);
}

static void ups_next(Ups *u) {
    Buf q = BUF_INIT;
    buf_puts(&q, "uploads=&prefix=");
    sigv4_encode(&q, u->prefix, strlen(u->prefix));
    if (u->key_marker) {
        buf_puts(&q, "&key-marker=");
        sigv4_encode(&q, u->key_marker, strlen(u->key_marker));
        if (u->id_marker) {
            buf_puts(&q, "&upload-id-marker=");
            sigv4_encode(&q, u->id_marker, strlen(u->id_marker));
        }
    }
    s3_request(u->s3, "GET", NULL, q.data, NULL, 0, NULL, 8u << 20, on_ups_page, u);
    buf_free(&q);
}

void s3_list_uploads(S3Client *s3, const char *prefix, S3UploadsPageCb page, S3ListDoneCb done,
                     void *data) {
    Ups *u = xcalloc(1, sizeof(*u));
    u->s3 = s3;
    u->prefix = xstrdup(prefix ? prefix : "");
    u->page = page;
    u->done = done;
    u->data = data;
    ups_next(u);
}

void s3_abort_upload(S3Client *s3, const char *key, const char *upload_id, S3DoneCb done,
                     void *data) {
    Buf q = BUF_INIT;
    buf_puts(&q, "uploadId=");
    sigv4_encode(&q, upload_id, strlen(upload_id));
    s3_request(s3, "DELETE", key, q.data, NULL, 0, NULL, 0, done, data);
    buf_free(&q);
}

long long s3_parse_time(const char *iso) {
    int y, mo, d, h, mi, sec;
    if (sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) != 6)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return (long long)timegm(&tm);
}

/* ---- batch delete ---- */

typedef struct {
    S3Client *s3;
    char **keys;
    size_t n, next, batch;
    size_t deleted, failed;
    Err first;
    S3DeleteDoneCb done;
    void *data;
} Del;

static void del_next(Del *d);

static void del_end(Del *d, const Err *err) {
    const Err *e = err ? err : (d->failed ? &d->first : NULL);
    d->done(d->deleted, d->failed, e, d->data);
    for (size_t i = 0; i < d->n; i++)
        free(d->keys[i]);
    free(d->keys);
    free(d);
}

static void on_deleted(const S3Result *res, const Err *err, void *data) {
    Del *d = data;
    if (err) {
        d->failed += d->batch;
        del_end(d, err);
        return;
    }
    /* Quiet mode: the answer lists only the keys that failed */
    const char *body = res->body && res->body->data ? res->body->data : "";
    size_t errors = 0;
    for (const char *p = body; (p = strstr(p, "<Error>")) != NULL; p += 7) {
        const char *end = strstr(p, "</Error>");
        if (errors++ == 0 && d->failed == 0 && end) {
            char *key = tag_text(p, end, "Key");
            char *code = tag_text(p, end, "Code");
            char *msg = tag_text(p, end, "Message");
            err_set(&d->first, ERR_PERMANENT, ERR_CODE_HTTP, "s3 delete %s: %s%s%s",
                    key ? key : "?", code ? code : "?", msg ? ": " : "", msg ? msg : "");
            free(key);
            free(code);
            free(msg);
        }
    }
    d->failed += errors;
    d->deleted += d->batch - errors;
    if (d->next >= d->n)
        del_end(d, NULL);
    else
        del_next(d);
}

static void del_next(Del *d) {
    Buf xml = BUF_INIT;
    buf_puts(&xml, "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    d->batch = 0;
    while (d->next < d->n && d->batch < 1000) {
        buf_puts(&xml, "<Object><Key>");
        s3_xml_escape(&xml, d->keys[d->next++]);
        buf_puts(&xml, "</Key></Object>");
        d->batch++;
    }
    buf_puts(&xml, "</Delete>");
    size_t len = xml.len;
    s3_delete_objects_xml(d->s3, buf_steal(&xml), len, on_deleted, d);
}

void s3_delete_keys(S3Client *s3, const char *const *keys, size_t n, S3DeleteDoneCb done,
                    void *data) {
    Del *d = xcalloc(1, sizeof(*d));
    d->s3 = s3;
    d->keys = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        d->keys[i] = xstrdup(keys[i]);
    d->n = n;
    d->done = done;
    d->data = data;
    err_clear(&d->first);
    if (n == 0) {
        del_end(d, NULL); /* nothing to send (see s3list.h) */
        return;
    }
    del_next(d);
}
