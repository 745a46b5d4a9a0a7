/* ctl_common: see ctl_common.h. */
#include "ctl_common.h"

#include "jobs/jobspec.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

/* Redis through the worker's own client (redis/redis.h: plain or TLS, AUTH with an ACL user,
 * SELECT) on a private loop, each command waited for: one code path with the worker's. */
struct CtlRedis {
    uv_loop_t loop;
    RedisClient *c;
    int connected, answered;
    redisReply *reply; /* a copy: the client frees its own after the callback */
    char error[ERR_MSG_MAX];
};

/* A reply tree copied with malloc, so freeReplyObject frees it. */
static redisReply *reply_copy(const redisReply *r) {
    redisReply *c = xcalloc(1, sizeof(*c));
    c->type = r->type;
    c->integer = r->integer;
    if (r->str) {
        c->len = r->len;
        c->str = xmalloc(r->len + 1);
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        c->elements = r->elements;
        c->element = xcalloc(r->elements, sizeof(*c->element));
        for (size_t i = 0; i < r->elements; i++)
            c->element[i] = reply_copy(r->element[i]);
    }
    return c;
}

static void on_ctl_state(RedisClient *c, int connected, const Err *err, void *data) {
    (void)c;
    (void)err;
    CtlRedis *r = data;
    r->connected = connected;
}

static void on_ctl_reply(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    (void)c;
    CtlRedis *r = data;
    r->answered = 1;
    r->reply = reply ? reply_copy(reply) : NULL;
    snprintf(r->error, sizeof(r->error), "%s", err && !reply ? err->msg : "");
}

void ctl_redis_close(CtlRedis *r) {
    if (r == NULL)
        return;
    redis_client_free(r->c);
    uv_run(&r->loop, UV_RUN_DEFAULT); /* the client's handles close */
    uv_loop_close(&r->loop);
    free(r);
}

CtlRedis *ctl_redis_open(const Config *cfg) {
    CtlRedis *r = xcalloc(1, sizeof(*r));
    uv_loop_init(&r->loop);
    RedisOptions o;
    config_redis_options(cfg, &o);
    o.name = "backupctl";
    o.connect_timeout_ms = 5000;
    o.on_state = on_ctl_state;
    o.data = r;
    r->c = redis_client_new(&r->loop, &o);
    /* the first failure ends it: a command-line tool says why at once, it does not retry */
    while (!r->connected && redis_client_last_error(r->c)[0] == '\0')
        uv_run(&r->loop, UV_RUN_ONCE);
    if (!r->connected) {
        const char *why = redis_client_last_error(r->c);
        if (strstr(why, "WRONGPASS") || strstr(why, "invalid password") || strstr(why, "NOAUTH"))
            fprintf(stderr, "backupctl: Redis at %s:%d refused the credentials in REDIS_URL: %s\n",
                    cfg->redis.host, cfg->redis.port, why);
        else
            fprintf(
                stderr,
                "backupctl: cannot reach Redis at %s:%d: %s (is it running? check REDIS_URL%s)\n",
                cfg->redis.host, cfg->redis.port, why, cfg->redis.tls ? " and REDIS_CA_FILE" : "");
        ctl_redis_close(r);
        return NULL;
    }
    return r;
}

/* Wait for the command just sent; its reply (error replies too), or NULL (r->error says why). */
static redisReply *wait_reply(CtlRedis *r) {
    while (!r->answered)
        uv_run(&r->loop, UV_RUN_ONCE);
    redisReply *rep = r->reply;
    r->reply = NULL;
    r->answered = 0;
    return rep;
}

redisReply *ctl_redis_raw(CtlRedis *r, const char *fmt, ...) {
    Err err;
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_vcommand(r->c, on_ctl_reply, r, &err, fmt, ap);
    va_end(ap);
    if (rc != 0) {
        snprintf(r->error, sizeof(r->error), "%s", err.msg);
        return NULL;
    }
    return wait_reply(r);
}

redisReply *ctl_redis_argv(CtlRedis *r, int argc, const char **argv) {
    Err err;
    if (redis_command_argv(r->c, on_ctl_reply, r, argc, argv, NULL, &err) != 0) {
        snprintf(r->error, sizeof(r->error), "%s", err.msg);
        return NULL;
    }
    return wait_reply(r);
}

const char *ctl_redis_error(const CtlRedis *r) {
    return r->error;
}

redisReply *ctl_redis(CtlRedis *r, const char *fmt, ...) {
    Err err;
    va_list ap;
    va_start(ap, fmt);
    int rc = redis_vcommand(r->c, on_ctl_reply, r, &err, fmt, ap);
    va_end(ap);
    redisReply *rep = rc == 0 ? wait_reply(r) : NULL;
    if (rc != 0 || rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "backupctl: Redis: %s\n", rc != 0 ? err.msg : rep ? rep->str : r->error);
        if (rep)
            freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

const char *ctl_reply_field(const redisReply *arr, const char *name) {
    for (size_t i = 0; arr && arr->type == REDIS_REPLY_ARRAY && i + 1 < arr->elements; i += 2)
        if (arr->element[i]->type == REDIS_REPLY_STRING && strcmp(arr->element[i]->str, name) == 0)
            return arr->element[i + 1]->type == REDIS_REPLY_STRING ? arr->element[i + 1]->str : "";
    return NULL;
}

const char *ctl_key(const Config *cfg, const char *suffix, char *out, size_t outsz) {
    snprintf(out, outsz, "%s:%s", cfg->redis_prefix, suffix);
    return out;
}

PGconn *ctl_pg_open(const Config *cfg) {
    char url[512];
    connurl_redact(cfg->database_url, url, sizeof(url));
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {cfg->database_url, "10", "backupctl", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(pg);
        fprintf(stderr,
                "backupctl: cannot connect to PostgreSQL at %s: %.*s (is it running? check "
                "DATABASE_URL)\n",
                url, (int)strcspn(m, "\n"), m);
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

int ctl_uuid_arg(const char *what, const char *s, char out[37]) {
    if (!jobspec_valid_uuid(s, strlen(s))) {
        fprintf(stderr, "backupctl: %s '%s' is not a UUID\n", what, s);
        return -1;
    }
    for (int i = 0; i < 36; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] + 32 : s[i]);
    out[36] = 0;
    return 0;
}

void ctl_fmt_bytes(uint64_t n, char *out, size_t outsz) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outsz, "%llu B", (unsigned long long)n);
    else
        snprintf(out, outsz, "%.1f %s", v, unit[u]);
}

void ctl_fmt_duration(double s, char *out, size_t outsz) {
    long t = (long)(s + 0.5);
    if (t >= 86400)
        snprintf(out, outsz, "%ldd %ldh", t / 86400, t % 86400 / 3600);
    else if (t >= 3600)
        snprintf(out, outsz, "%ldh %ldm", t / 3600, t % 3600 / 60);
    else if (t >= 60)
        snprintf(out, outsz, "%ldm %lds", t / 60, t % 60);
    else
        snprintf(out, outsz, "%lds", t);
}

double ctl_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}
