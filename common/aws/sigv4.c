/*
 * sigv4: AWS Signature Version 4 (see sigv4.h).
 *
 * The canonical request, line by line: method, canonical path, canonical
 * query (keys and values decoded then encoded again, sorted), canonical
 * headers (lower-case names, trimmed values with inner runs of spaces
 * collapsed, folded lines joined by a space, repeated names joined by a
 * comma, sorted), a blank line, the signed header names, the payload hash.
 */
#include "aws/sigv4.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int unreserved(unsigned char c) {
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

void sigv4_encode(Buf *out, const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            buf_append(out, &s[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(out, e, 3);
        }
    }
}

void sigv4_encode_path(Buf *out, const char *path) {
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, "/");
        sigv4_encode(out, p, n);
        p += n;
        if (*p == '/') {
            buf_puts(out, "/");
            p++;
        }
    }
}

static void hex_of(const unsigned char *d, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65]) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    hex_of(md, sizeof(md), out);
}

static void hmac(const unsigned char *key, size_t keylen, const char *msg, size_t msglen,
                 unsigned char out[32]) {
    unsigned int outlen = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, msglen, out, &outlen);
}

/* ---- signing key cache: one entry suffices for one region and service a day ---- */

static struct {
    char date[9], region[64], service[64];
    unsigned char secret_hash[32]; /* which secret made the key (never the secret) */
    unsigned char key[32];
    int valid;
} key_cache;

static void signing_key(const char *secret, const char *date, const char *region,
                        const char *service, unsigned char out[32]) {
    unsigned char sh[32];
    SHA256((const unsigned char *)secret, strlen(secret), sh);
    if (key_cache.valid && strcmp(key_cache.date, date) == 0 &&
        strcmp(key_cache.region, region) == 0 && strcmp(key_cache.service, service) == 0 &&
        memcmp(key_cache.secret_hash, sh, 32) == 0) {
        memcpy(out, key_cache.key, 32);
        return;
    }
    Buf k = BUF_INIT;
    buf_printf(&k, "AWS4%s", secret);
    unsigned char a[32], b[32];
    hmac((unsigned char *)k.data, k.len, date, strlen(date), a);
    hmac(a, 32, region, strlen(region), b);
    hmac(b, 32, service, strlen(service), a);
    hmac(a, 32, "aws4_request", 12, out);
    memset(k.data, 0, k.len);
    buf_free(&k);
    if (strlen(region) < sizeof(key_cache.region) && strlen(service) < sizeof(key_cache.service)) {
        snprintf(key_cache.date, sizeof(key_cache.date), "%s", date);
        snprintf(key_cache.region, sizeof(key_cache.region), "%s", region);
        snprintf(key_cache.service, sizeof(key_cache.service), "%s", service);
        memcpy(key_cache.secret_hash, sh, 32);
        memcpy(key_cache.key, out, 32);
        key_cache.valid = 1;
    }
}

/* ---- canonical pieces ---- */

/* Remove "." and ".." segments and empty segments, keeping a trailing slash. */
static void normalize_path(const char *in, Buf *out) {
    size_t n = strlen(in);
    char **segs = xcalloc(n + 1, sizeof(char *));
    size_t nseg = 0;
    char *copy = xstrdup(in);
    for (char *save = NULL, *s = strtok_r(copy, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (strcmp(s, ".") == 0)
            continue;
        if (strcmp(s, "..") == 0) {
            if (nseg > 0)
                nseg--;
            continue;
        }
        segs[nseg++] = s;
    }
    buf_puts(out, "/");
    for (size_t i = 0; i < nseg; i++) {
        buf_puts(out, segs[i]);
        if (i + 1 < nseg)
            buf_puts(out, "/");
    }
    int trailing = n > 1 && in[n - 1] == '/';
    const char *last = n ? strrchr(in, '/') : NULL;
    int ends_dot = last && (strcmp(last, "/.") == 0 || strcmp(last, "/..") == 0);
    if ((trailing || ends_dot) && nseg > 0)
        buf_puts(out, "/");
    free(copy);
    free(segs);
}

/* Decode %XX (and keep anything else), then encode canonically. */
static void reencode(Buf *out, const char *s, size_t len) {
    Buf raw = BUF_INIT;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && buf_hex_value(s[i + 1]) >= 0 &&
            buf_hex_value(s[i + 2]) >= 0) {
            char c = (char)(buf_hex_value(s[i + 1]) * 16 + buf_hex_value(s[i + 2]));
            buf_append(&raw, &c, 1);
            i += 2;
        } else {
            buf_append(&raw, &s[i], 1);
        }
    }
    sigv4_encode(out, raw.data ? raw.data : "", raw.len);
    buf_free(&raw);
}

typedef struct {
    char *key;
    char *value;
} Pair;

static int pair_cmp(const void *a, const void *b) {
    const Pair *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->value, y->value);
}

typedef struct {
    const char *key;
    const char *value;
} QParam;

static void canonical_query(const char *query, const QParam *extra, size_t nextra, Buf *out) {
    size_t cap = nextra + 1;
    for (const char *p = query ? query : ""; *p; p++)
        cap += *p == '&';
    Pair *pairs = xcalloc(cap, sizeof(Pair));
    size_t n = 0;
    const char *p = query ? query : "";
    while (*p) {
        size_t len = strcspn(p, "&");
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            Buf k = BUF_INIT, v = BUF_INIT;
            reencode(&k, p, klen);
            if (eq)
                reencode(&v, eq + 1, len - klen - 1);
            pairs[n].key = buf_steal(&k);
            pairs[n].value = buf_steal(&v);
            n++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    for (size_t i = 0; i < nextra; i++) {
        Buf k = BUF_INIT, v = BUF_INIT;
        sigv4_encode(&k, extra[i].key, strlen(extra[i].key));
        sigv4_encode(&v, extra[i].value, strlen(extra[i].value));
        pairs[n].key = buf_steal(&k);
        pairs[n].value = buf_steal(&v);
        n++;
    }
    qsort(pairs, n, sizeof(Pair), pair_cmp);
    for (size_t i = 0; i < n; i++) {
        buf_printf(out, "%s%s=%s", i ? "&" : "", pairs[i].key, pairs[i].value);
        free(pairs[i].key);
        free(pairs[i].value);
    }
    free(pairs);
}

typedef struct {
    char *name; /* lower case */
    Buf value;  /* canonical value; repeated names joined by ',' */
    size_t order;
} Hdr;

static int hdr_cmp(const void *a, const void *b) {
    const Hdr *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Trim, and collapse runs of whitespace (folded lines included) into one space. */
static void canonical_value(Buf *out, const char *v) {
    int space = 0, started = 0;
    for (const char *p = v; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            space = started;
            continue;
        }
        if (space)
            buf_puts(out, " ");
        buf_append(out, p, 1);
        space = 0;
        started = 1;
    }
}

static size_t collect_headers(const SigV4Header *in, size_t n, const SigV4Header *extra,
                              size_t nextra, Hdr *out) {
    size_t count = 0;
    for (size_t i = 0; i < n + nextra; i++) {
        const SigV4Header *h = i < n ? &in[i] : &extra[i - n];
        char *name = xstrdup(h->name);
        for (char *c = name; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        Hdr *found = NULL;
        for (size_t j = 0; j < count; j++)
            if (strcmp(out[j].name, name) == 0)
                found = &out[j];
        if (found) {
            buf_puts(&found->value, ",");
            canonical_value(&found->value, h->value);
            free(name);
        } else {
            out[count].name = name;
            memset(&out[count].value, 0, sizeof(Buf));
            buf_puts(&out[count].value, "");
            canonical_value(&out[count].value, h->value);
            count++;
        }
    }
    qsort(out, count, sizeof(Hdr), hdr_cmp);
    return count;
}

static void free_headers(Hdr *h, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        buf_free(&h[i].value);
    }
    free(h);
}

static void format_date(time_t now, char amz[17], char day[9]) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(amz, 17, "%Y%m%dT%H%M%SZ", &tm);
    memcpy(day, amz, 8);
    day[8] = '\0';
}

/* Build canonical request, string to sign and signature into out. */
static void sign(const SigV4Request *r, const SigV4Credentials *cred, const QParam *qextra,
                 size_t nqextra, const SigV4Header *hextra, size_t nhextra, const char *day,
                 SigV4Result *out) {
    Buf *c = &out->canonical_request;
    buf_printf(c, "%s\n", r->method);
    const char *path = r->path && r->path[0] ? r->path : "/";
    if (r->s3) {
        sigv4_encode_path(c, path);
    } else {
        Buf norm = BUF_INIT;
        normalize_path(path, &norm);
        sigv4_encode_path(c, norm.data);
        buf_free(&norm);
    }
    buf_puts(c, "\n");
    canonical_query(r->query, qextra, nqextra, c);
    buf_puts(c, "\n");

    Hdr *hdrs = xcalloc(r->nheaders + nhextra + 1, sizeof(Hdr));
    size_t nh = collect_headers(r->headers, r->nheaders, hextra, nhextra, hdrs);
    for (size_t i = 0; i < nh; i++) {
        buf_printf(c, "%s:%s\n", hdrs[i].name, hdrs[i].value.data);
        buf_printf(&out->signed_headers, "%s%s", i ? ";" : "", hdrs[i].name);
    }
    free_headers(hdrs, nh);
    buf_printf(c, "\n%s\n%s", out->signed_headers.data ? out->signed_headers.data : "",
               r->payload_hash);

    char chash[65];
    sigv4_sha256_hex(c->data, c->len, chash);
    buf_printf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
               out->amz_date, day, r->region, r->service, chash);
    unsigned char key[32], sig[32];
    signing_key(cred->secret_key, day, r->region, r->service, key);
    hmac(key, 32, out->string_to_sign.data, out->string_to_sign.len, sig);
    hex_of(sig, 32, out->signature);
}

void sigv4_sign_header(const SigV4Request *r, const SigV4Credentials *cred, SigV4Result *out) {
    memset(out, 0, sizeof(*out));
    char day[9];
    format_date(r->now, out->amz_date, day);
    SigV4Header extra[3];
    size_t n = 0;
    extra[n++] = (SigV4Header){"x-amz-date", out->amz_date};
    if (r->add_content_sha256)
        extra[n++] = (SigV4Header){"x-amz-content-sha256", r->payload_hash};
    if (cred->session_token && !r->omit_session_token)
        extra[n++] = (SigV4Header){"x-amz-security-token", cred->session_token};
    sign(r, cred, NULL, 0, extra, n, day, out);
    buf_printf(&out->authorization,
               "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
               "Signature=%s",
               cred->access_key, day, r->region, r->service, out->signed_headers.data,
               out->signature);
}

void sigv4_sign_query(const SigV4Request *r, const SigV4Credentials *cred, SigV4Result *out) {
    memset(out, 0, sizeof(*out));
    char day[9];
    format_date(r->now, out->amz_date, day);
    /* the signed header names are part of the query: compute them first */
    Hdr *hdrs = xcalloc(r->nheaders + 1, sizeof(Hdr));
    size_t nh = collect_headers(r->headers, r->nheaders, NULL, 0, hdrs);
    Buf names = BUF_INIT;
    for (size_t i = 0; i < nh; i++)
        buf_printf(&names, "%s%s", i ? ";" : "", hdrs[i].name);
    free_headers(hdrs, nh);

    char cred_scope[512], expires[32];
    snprintf(cred_scope, sizeof(cred_scope), "%s/%s/%s/%s/aws4_request", cred->access_key, day,
             r->region, r->service);
    snprintf(expires, sizeof(expires), "%ld", r->expires > 0 ? r->expires : 3600);
    QParam q[6];
    size_t n = 0;
    q[n++] = (QParam){"X-Amz-Algorithm", "AWS4-HMAC-SHA256"};
    q[n++] = (QParam){"X-Amz-Credential", cred_scope};
    q[n++] = (QParam){"X-Amz-Date", out->amz_date};
    q[n++] = (QParam){"X-Amz-Expires", expires};
    if (cred->session_token && !r->omit_session_token)
        q[n++] = (QParam){"X-Amz-Security-Token", cred->session_token};
    q[n++] = (QParam){"X-Amz-SignedHeaders", names.data ? names.data : ""};
    sign(r, cred, q, n, NULL, 0, day, out);
    /* the query to send: the canonical query plus the signature */
    const char *cq = strchr(strchr(out->canonical_request.data, '\n') + 1, '\n') + 1;
    size_t cqlen = strcspn(cq, "\n");
    buf_append(&out->query, cq, cqlen);
    buf_printf(&out->query, "&X-Amz-Signature=%s", out->signature);
    buf_free(&names);
}

void sigv4_result_free(SigV4Result *out) {
    buf_free(&out->canonical_request);
    buf_free(&out->string_to_sign);
    buf_free(&out->signed_headers);
    buf_free(&out->authorization);
    buf_free(&out->query);
}
