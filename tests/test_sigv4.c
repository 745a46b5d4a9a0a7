/*
 * test_sigv4: every case of AWS's SigV4 test suite (../shared/vectors/sigv4,
 * read at test time), header and query forms, and AWS's published S3 example.
 */
#include "testutil.h"
#include "aws/sigv4.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        print_error("cannot read %s\n", path);
        fail();
    }
    Buf b = BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    return buf_steal(&b);
}

/* The string value of "key": "..." in a flat JSON file, or NULL. */
static char *json_str(const char *json, const char *key) {
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (p == NULL)
        return NULL;
    p = strchr(p + strlen(pat), ':');
    while (*++p == ' ')
        ;
    if (*p != '"') {
        size_t n = strcspn(p, ",}\n");
        char *v = malloc(n + 1);
        memcpy(v, p, n);
        v[n] = '\0';
        return v;
    }
    const char *end = strchr(p + 1, '"');
    char *v = malloc((size_t)(end - p));
    memcpy(v, p + 1, (size_t)(end - p - 1));
    v[end - p - 1] = '\0';
    return v;
}

static int json_true(const char *json, const char *key) {
    char *v = json_str(json, key);
    int t = v != NULL && strcmp(v, "true") == 0;
    free(v);
    return t;
}

static time_t parse_time(const char *iso) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    sscanf(iso, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
           &tm.tm_sec);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

typedef struct {
    char *method, *path, *query, *body;
    SigV4Header headers[32];
    char *names[32], *values[32];
    size_t nheaders;
} Parsed;

static void parse_request(char *text, Parsed *p) {
    memset(p, 0, sizeof(*p));
    char *body = strstr(text, "\n\n");
    if (body) {
        *body = '\0';
        body += 2;
    }
    p->body = body ? body : "";
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    char *sp1 = strchr(line, ' ');
    char *sp2 = strrchr(line, ' '); /* the path itself may hold spaces */
    *sp1 = '\0';
    *sp2 = '\0';
    p->method = line;
    p->path = sp1 + 1;
    char *q = strchr(p->path, '?');
    if (q) {
        *q = '\0';
        p->query = q + 1;
    }
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        if ((line[0] == ' ' || line[0] == '\t') && p->nheaders > 0) {
            /* folded continuation of the previous header */
            size_t i = p->nheaders - 1;
            Buf b = BUF_INIT;
            buf_printf(&b, "%s %s", p->values[i], line);
            free(p->values[i]);
            p->values[i] = buf_steal(&b);
            p->headers[i].value = p->values[i];
            continue;
        }
        char *colon = strchr(line, ':');
        *colon = '\0';
        size_t i = p->nheaders++;
        p->names[i] = strdup(line);
        p->values[i] = strdup(colon + 1);
        p->headers[i].name = p->names[i];
        p->headers[i].value = p->values[i];
    }
}

static void free_parsed(Parsed *p) {
    for (size_t i = 0; i < p->nheaders; i++) {
        free(p->names[i]);
        free(p->values[i]);
    }
}

static int same(const char *what, const char *dir, const char *expected, const char *got) {
    if (strcmp(expected, got) == 0)
        return 1;
    print_error("%s %s:\n--- expected\n%s\n--- got\n%s\n", dir, what, expected, got);
    return 0;
}

static int run_case(const char *dir) {
    char *ctx = slurp(dir, "context.json");
    char *raw = slurp(dir, "request.txt");
    Parsed p;
    parse_request(raw, &p);
    char *ak = json_str(ctx, "access_key_id"), *sk = json_str(ctx, "secret_access_key");
    char *token = json_str(ctx, "token"), *region = json_str(ctx, "region");
    char *service = json_str(ctx, "service"), *ts = json_str(ctx, "timestamp");
    char *exp = json_str(ctx, "expiration_in_seconds");
    char hash[65];
    sigv4_sha256_hex(p.body, strlen(p.body), hash);
    SigV4Credentials cred = {ak, sk, token};
    SigV4Request r;
    memset(&r, 0, sizeof(r));
    r.method = p.method;
    r.path = p.path;
    r.query = p.query;
    r.headers = p.headers;
    r.nheaders = p.nheaders;
    r.payload_hash = hash;
    r.region = region;
    r.service = service;
    r.now = parse_time(ts);
    r.s3 = !json_true(ctx, "normalize");
    r.add_content_sha256 = json_true(ctx, "sign_body");
    r.omit_session_token = json_true(ctx, "omit_session_token");
    r.expires = exp ? atol(exp) : 3600;

    int ok = 1;
    SigV4Result h;
    sigv4_sign_header(&r, &cred, &h);
    char *e1 = slurp(dir, "header-canonical-request.txt");
    char *e2 = slurp(dir, "header-string-to-sign.txt");
    char *e3 = slurp(dir, "header-signature.txt");
    ok &= same("header canonical request", dir, e1, h.canonical_request.data);
    ok &= same("header string to sign", dir, e2, h.string_to_sign.data);
    ok &= same("header signature", dir, e3, h.signature);
    free(e1);
    free(e2);
    free(e3);
    sigv4_result_free(&h);

    r.add_content_sha256 = 0; /* the query form never signs the body header */
    SigV4Result q;
    sigv4_sign_query(&r, &cred, &q);
    e1 = slurp(dir, "query-canonical-request.txt");
    e2 = slurp(dir, "query-string-to-sign.txt");
    e3 = slurp(dir, "query-signature.txt");
    ok &= same("query canonical request", dir, e1, q.canonical_request.data);
    ok &= same("query string to sign", dir, e2, q.string_to_sign.data);
    ok &= same("query signature", dir, e3, q.signature);
    free(e1);
    free(e2);
    free(e3);
    sigv4_result_free(&q);

    free(ak);
    free(sk);
    free(token);
    free(region);
    free(service);
    free(ts);
    free(exp);
    free_parsed(&p);
    free(raw);
    free(ctx);
    return ok;
}

static void test_aws_suite(void **state) {
    (void)state;
    DIR *d = opendir(SIGV4_VECTORS);
    if (d == NULL) {
        print_error("the SigV4 vectors are missing at %s (../shared beside the repo)\n",
                    SIGV4_VECTORS);
        fail();
    }
    struct dirent *e;
    int cases = 0, passed = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/%s", SIGV4_VECTORS, e->d_name);
        cases++;
        passed += run_case(dir);
    }
    closedir(d);
    printf("AWS SigV4 suite: %d of %d cases pass (header and query forms)\n", passed, cases);
    assert_true(cases >= 38);
    assert_int_equal(passed, cases);
}

static void test_s3_example(void **state) {
    (void)state;
    /* AWS S3 API reference, "Examples: Signature Calculations", GET with Range */
    char empty[65];
    sigv4_sha256_hex("", 0, empty);
    SigV4Header hdrs[] = {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"}};
    SigV4Credentials cred = {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                             NULL};
    SigV4Request r;
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.path = "/test.txt";
    r.headers = hdrs;
    r.nheaders = 2;
    r.payload_hash = empty;
    r.region = "us-east-1";
    r.service = "s3";
    r.now = parse_time("2013-05-24T00:00:00Z");
    r.s3 = 1;
    r.add_content_sha256 = 1;
    SigV4Result out;
    for (int i = 0; i < 2; i++) { /* the second time from the key cache */
        sigv4_sign_header(&r, &cred, &out);
        assert_string_equal(out.signature,
                            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert_string_equal(out.signed_headers.data, "host;range;x-amz-content-sha256;x-amz-date");
        assert_non_null(strstr(out.authorization.data,
                               "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                               "aws4_request, SignedHeaders="));
        assert_null(strstr(out.authorization.data, cred.secret_key));
        sigv4_result_free(&out);
    }
    /* a different secret is not served from the cache */
    SigV4Credentials other = {"AKIAIOSFODNN7EXAMPLE", "another-secret", NULL};
    sigv4_sign_header(&r, &other, &out);
    assert_string_not_equal(out.signature,
                            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    sigv4_result_free(&out);
}

static void test_encoding(void **state) {
    (void)state;
    Buf b = BUF_INIT;
    sigv4_encode_path(&b, "/backups/6f1c/backup-x y+z~é.json.gz");
    assert_string_equal(b.data, "/backups/6f1c/backup-x%20y%2Bz~%C3%A9.json.gz");
    buf_reset(&b);
    sigv4_encode(&b, "a/b=c&d", 7);
    assert_string_equal(b.data, "a%2Fb%3Dc%26d");
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aws_suite),
        cmocka_unit_test(test_s3_example),
        cmocka_unit_test(test_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
