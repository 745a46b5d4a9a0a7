/*
 * ctl_s3: backupctl's S3 commands (see ctl_s3.h).
 *
 * A command-line tool may block on its own files: local reads and writes are
 * plain read()/write() from the loop callbacks; the network side is the same
 * asynchronous S3 client the worker uses.
 */
#include "ctl_s3.h"
#include "aws/s3list.h"
#include "aws/s3upload.h"
#include "aws/sigv4.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uv_loop_t loop;
    HttpClient *http;
    S3Client *s3;
    int done;
    int rc;
    int fd;
    const char *what; /* for messages: the key or file */
    char *buf;
} Ctl;

static void usage(void) {
    fprintf(stderr, "Usage: backupctl s3 put FILE|- KEY\n"
                    "       backupctl s3 get KEY [FILE|-]\n"
                    "       backupctl s3 ls [PREFIX]\n"
                    "       backupctl s3 rm KEY... | rm -   (keys from standard input)\n"
                    "       backupctl s3 presign KEY [--expires SECONDS]\n"
                    "       backupctl s3 uploads [PREFIX] [--abort-older-than DURATION]\n");
}

static void ctl_open(Ctl *c, const Config *cfg) {
    memset(c, 0, sizeof(*c));
    uv_loop_init(&c->loop);
    c->http = http_client_new(&c->loop, 0);
    S3Options o;
    config_s3_options(cfg, &o);
    c->s3 = s3_client_new(&c->loop, c->http, &o);
    c->fd = -1;
}

static int ctl_run(Ctl *c) {
    while (!c->done)
        uv_run(&c->loop, UV_RUN_ONCE);
    s3_client_free(c->s3);
    http_client_free(c->http);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    free(c->buf);
    return c->rc;
}

static void fail_with(Ctl *c, const char *fmt, const char *detail) {
    fprintf(stderr, "backupctl s3: ");
    fprintf(stderr, fmt, c->what, detail);
    fputc('\n', stderr);
    c->rc = 1;
    c->done = 1;
}

/* ---- put ---- */

#define CHUNK (1024 * 1024)

static void put_feed(S3Upload *u, void *data) {
    Ctl *c = data;
    for (;;) {
        ssize_t n = read(c->fd, c->buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "backupctl s3: cannot read %s: %s\n", c->what, strerror(errno));
            c->rc = 1;
            s3_upload_abort(u);
            return;
        }
        if (n == 0) {
            s3_upload_finish(u);
            return;
        }
        int r = s3_upload_write(u, c->buf, (size_t)n);
        if (r <= 0)
            return; /* 0: wait for room; -1: on_done reports */
    }
}

static void put_done(S3Upload *u, const S3Result *res, const char *sha256, uint64_t bytes,
                     const Err *err, void *data) {
    (void)res;
    s3_upload_free(u);
    Ctl *c = data;
    if (err) {
        if (c->rc == 0)
            fail_with(c, "put %s failed: %s", err->msg);
    } else {
        printf("%llu bytes  sha256 %s  %s\n", (unsigned long long)bytes, sha256, c->what);
    }
    c->done = 1;
}

static int cmd_put(const Config *cfg, const char *file, const char *key) {
    Ctl c;
    ctl_open(&c, cfg);
    c.what = key;
    c.fd = strcmp(file, "-") == 0 ? 0 : open(file, O_RDONLY);
    if (c.fd < 0) {
        fprintf(stderr, "backupctl s3: cannot open %s: %s\n", file, strerror(errno));
        c.done = 1;
        c.rc = 1;
        return ctl_run(&c);
    }
    c.buf = malloc(CHUNK);
    S3Upload *u = s3_upload_new(c.s3, key, NULL, (size_t)cfg->s3_part_size_mb << 20,
                                cfg->s3_upload_concurrency, put_feed, put_done, &c);
    put_feed(u, &c);
    int rc = ctl_run(&c);
    if (c.fd > 0)
        close(c.fd);
    return rc;
}

/* ---- get ---- */

static int get_write(S3Op *op, const char *buf, size_t len, void *data) {
    (void)op;
    Ctl *c = data;
    while (len > 0) {
        ssize_t n = write(c->fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "backupctl s3: cannot write: %s\n", strerror(errno));
            c->rc = 1;
            c->done = 1;
            return 0;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void get_done(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Ctl *c = data;
    if (err && c->rc == 0)
        fail_with(c, "get %s failed: %s", err->msg);
    c->done = 1;
}

static int cmd_get(const Config *cfg, const char *key, const char *file) {
    Ctl c;
    ctl_open(&c, cfg);
    c.what = key;
    int to_stdout = file == NULL || strcmp(file, "-") == 0;
    c.fd = to_stdout ? 1 : open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (c.fd < 0) {
        fprintf(stderr, "backupctl s3: cannot create %s: %s\n", file, strerror(errno));
        c.done = 1;
        c.rc = 1;
        return ctl_run(&c);
    }
    s3_get_stream(c.s3, key, get_write, get_done, &c);
    int rc = ctl_run(&c);
    if (!to_stdout) {
        if (close(c.fd) != 0 && rc == 0)
            rc = 1;
        if (rc != 0)
            unlink(file); /* never leave half a file behind */
    }
    return rc;
}

/* ---- ls ---- */

static int ls_page(const S3Object *objs, size_t n, void *data) {
    (void)data;
    for (size_t i = 0; i < n; i++)
        printf("%12lld  %s  %s\n", (long long)objs[i].size, objs[i].last_modified, objs[i].key);
    return 0;
}

static void ls_done(uint64_t count, const Err *err, void *data) {
    (void)count;
    Ctl *c = data;
    if (err)
        fail_with(c, "ls %s failed: %s", err->msg);
    c->done = 1;
}

static int cmd_ls(const Config *cfg, const char *prefix) {
    Ctl c;
    ctl_open(&c, cfg);
    c.what = prefix;
    s3_list(c.s3, prefix, 1000, ls_page, ls_done, &c);
    return ctl_run(&c);
}

/* ---- rm ---- */

static void rm_done(size_t deleted, size_t failed, const Err *err, void *data) {
    Ctl *c = data;
    printf("deleted %zu, failed %zu\n", deleted, failed);
    if (err)
        fail_with(c, "rm%s: %s", err->msg);
    c->done = 1;
}

static int cmd_rm(const Config *cfg, int argc, char **argv) {
    char **keys = NULL;
    size_t n = 0, cap = 0;
    int from_stdin = argc == 1 && strcmp(argv[0], "-") == 0;
    if (from_stdin) {
        char *line = NULL;
        size_t len = 0;
        ssize_t r;
        while ((r = getline(&line, &len, stdin)) > 0) {
            while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r'))
                line[--r] = '\0';
            if (r == 0)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                keys = realloc(keys, cap * sizeof(char *));
            }
            keys[n++] = strdup(line);
        }
        free(line);
    } else {
        keys = calloc((size_t)argc + 1, sizeof(char *));
        for (int i = 0; i < argc; i++)
            keys[n++] = strdup(argv[i]);
    }
    Ctl c;
    ctl_open(&c, cfg);
    c.what = "";
    s3_delete_keys(c.s3, (const char *const *)keys, n, rm_done, &c);
    int rc = ctl_run(&c);
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    return rc;
}

/* ---- uploads: multipart uploads left in progress ---- */

typedef struct {
    Ctl *c;
    long long cutoff; /* abort those initiated before this (seconds); -1: list only */
    char **keys, **ids;
    size_t n, cap, aborted, failed, answered;
    int listing_done;
} Uploads;

static int uploads_page(const S3MultipartUpload *ups, size_t n, void *data) {
    Uploads *u = data;
    for (size_t i = 0; i < n; i++) {
        printf("%s  %s  %s\n", ups[i].initiated, ups[i].upload_id, ups[i].key);
        long long t = s3_parse_time(ups[i].initiated);
        if (u->cutoff < 0 || t < 0 || t >= u->cutoff)
            continue;
        if (u->n == u->cap) {
            u->cap = u->cap ? u->cap * 2 : 64;
            u->keys = realloc(u->keys, u->cap * sizeof(char *));
            u->ids = realloc(u->ids, u->cap * sizeof(char *));
        }
        u->keys[u->n] = strdup(ups[i].key);
        u->ids[u->n++] = strdup(ups[i].upload_id);
    }
    return 0;
}

static void uploads_aborted(const S3Result *res, const Err *err, void *data) {
    (void)res;
    Uploads *u = data;
    size_t i = u->answered++;
    if (err) {
        u->failed++;
        fprintf(stderr, "backupctl s3: abort %s (%s) failed: %s\n", u->keys[i], u->ids[i],
                err->msg);
    } else {
        u->aborted++;
    }
    if (u->answered < u->n) {
        s3_abort_upload(u->c->s3, u->keys[u->answered], u->ids[u->answered], uploads_aborted, u);
        return;
    }
    printf("aborted %zu, failed %zu\n", u->aborted, u->failed);
    u->c->rc = u->failed ? 1 : 0;
    u->c->done = 1;
}

static void uploads_listed(uint64_t count, const Err *err, void *data) {
    (void)count;
    Uploads *u = data;
    if (err) {
        fail_with(u->c, "uploads %s: %s", err->msg);
        return;
    }
    if (u->cutoff < 0 || u->n == 0) {
        if (u->cutoff >= 0)
            printf("aborted 0, failed 0\n");
        u->c->done = 1;
        return;
    }
    /* one at a time: a cleanup need not be fast, and must not flood the store */
    s3_abort_upload(u->c->s3, u->keys[0], u->ids[0], uploads_aborted, u);
}

static int cmd_uploads(const Config *cfg, const char *prefix, long long older_ms) {
    Ctl c;
    ctl_open(&c, cfg);
    c.what = prefix;
    Uploads u;
    memset(&u, 0, sizeof(u));
    u.c = &c;
    u.cutoff = older_ms < 0 ? -1 : (long long)time(NULL) - older_ms / 1000;
    s3_list_uploads(c.s3, prefix, uploads_page, uploads_listed, &u);
    int rc = ctl_run(&c);
    for (size_t i = 0; i < u.n; i++) {
        free(u.keys[i]);
        free(u.ids[i]);
    }
    free(u.keys);
    free(u.ids);
    return rc;
}

/* ---- presign ---- */

static int cmd_presign(const Config *cfg, const char *key, long expires) {
    if (cfg->aws_access_key_id == NULL || cfg->aws_secret_access_key == NULL) {
        /* a URL signed with STS keys would die with them within the hour */
        fprintf(stderr, "backupctl s3: presign needs static keys (AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY), not a web identity\n");
        return 1;
    }
    char host[256], base[600];
    if (cfg->s3_endpoint) {
        const char *h = strstr(cfg->s3_endpoint, "://") + 3;
        if (cfg->s3_force_path_style) {
            snprintf(host, sizeof(host), "%s", h);
            snprintf(base, sizeof(base), "%s", cfg->s3_endpoint);
        } else {
            snprintf(host, sizeof(host), "%s.%s", cfg->s3_bucket, h);
            snprintf(base, sizeof(base), "%.*s%s", (int)(h - cfg->s3_endpoint), cfg->s3_endpoint,
                     host);
        }
    } else {
        if (cfg->s3_force_path_style)
            snprintf(host, sizeof(host), "s3.%s.amazonaws.com", cfg->aws_region);
        else
            snprintf(host, sizeof(host), "%s.s3.%s.amazonaws.com", cfg->s3_bucket, cfg->aws_region);
        snprintf(base, sizeof(base), "https://%s", host);
    }
    Buf path = BUF_INIT;
    if (cfg->s3_force_path_style)
        buf_printf(&path, "/%s/%s", cfg->s3_bucket, key);
    else
        buf_printf(&path, "/%s", key);
    SigV4Header hdrs[] = {{"Host", host}};
    SigV4Credentials cred = {cfg->aws_access_key_id, cfg->aws_secret_access_key,
                             cfg->aws_session_token};
    SigV4Request r;
    memset(&r, 0, sizeof(r));
    r.method = "GET";
    r.path = path.data;
    r.headers = hdrs;
    r.nheaders = 1;
    r.payload_hash = "UNSIGNED-PAYLOAD";
    r.region = cfg->aws_region;
    r.service = "s3";
    r.now = time(NULL);
    r.s3 = 1;
    r.expires = expires;
    SigV4Result out;
    sigv4_sign_query(&r, &cred, &out);
    Buf url = BUF_INIT;
    buf_puts(&url, base);
    sigv4_encode_path(&url, path.data);
    printf("%s?%s\n", url.data, out.query.data);
    sigv4_result_free(&out);
    buf_free(&url);
    buf_free(&path);
    return 0;
}

int ctl_s3_main(const Config *cfg, int argc, char **argv) {
    if (argc < 1) {
        usage();
        return 2;
    }
    const char *cmd = argv[0];
    if (strcmp(cmd, "put") == 0 && argc == 3)
        return cmd_put(cfg, argv[1], argv[2]);
    if (strcmp(cmd, "get") == 0 && (argc == 2 || argc == 3))
        return cmd_get(cfg, argv[1], argc == 3 ? argv[2] : NULL);
    if (strcmp(cmd, "ls") == 0 && argc <= 2)
        return cmd_ls(cfg, argc == 2 ? argv[1] : "");
    if (strcmp(cmd, "rm") == 0 && argc >= 2)
        return cmd_rm(cfg, argc - 1, argv + 1);
    if (strcmp(cmd, "presign") == 0 && (argc == 2 || argc == 4)) {
        long expires = 3600;
        if (argc == 4) {
            char *end = NULL;
            expires = strtol(argv[3], &end, 10);
            if (strcmp(argv[2], "--expires") != 0 || *end != '\0' || expires < 1 ||
                expires > 604800) {
                fprintf(stderr, "backupctl s3: --expires takes 1 to 604800 seconds\n");
                return 2;
            }
        }
        return cmd_presign(cfg, argv[1], expires);
    }
    if (strcmp(cmd, "uploads") == 0 && argc <= 4) {
        const char *prefix = "";
        long long older = -1;
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--abort-older-than") == 0 && i + 1 < argc) {
                if (textval_duration_ms(argv[++i], 0, 3650 * 86400000LL, &older) != 0) {
                    fprintf(stderr, "backupctl s3: --abort-older-than takes a duration such as "
                                    "1d, 12h or 30m\n");
                    return 2;
                }
            } else if (argv[i][0] != '-' && prefix[0] == '\0') {
                prefix = argv[i];
            } else {
                usage();
                return 2;
            }
        }
        return cmd_uploads(cfg, prefix, older);
    }
    usage();
    return 2;
}
