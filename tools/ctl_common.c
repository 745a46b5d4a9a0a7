/* ctl_common: see ctl_common.h. */
#include "ctl_common.h"

#include "jobs/jobspec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

redisContext *ctl_redis_open(const Config *cfg) {
    struct timeval tv = {5, 0};
    redisContext *r = redisConnectWithTimeout(cfg->redis.host, cfg->redis.port, tv);
    if (r == NULL || r->err) {
        fprintf(stderr,
                "backupctl: cannot reach Redis at %s:%d: %s (is it running? check REDIS_URL)\n",
                cfg->redis.host, cfg->redis.port, r ? r->errstr : "out of memory");
        if (r)
            redisFree(r);
        return NULL;
    }
    redisSetTimeout(r, tv);
    redisReply *rep = NULL;
    if (cfg->redis.password) {
        rep = cfg->redis.username
                  ? redisCommand(r, "AUTH %s %s", cfg->redis.username, cfg->redis.password)
                  : redisCommand(r, "AUTH %s", cfg->redis.password);
        if (rep == NULL) {
            fprintf(stderr, "backupctl: Redis at %s:%d: %s\n", cfg->redis.host, cfg->redis.port,
                    r->errstr);
            redisFree(r);
            return NULL;
        }
        if (rep->type == REDIS_REPLY_ERROR) { /* the reply never echoes the password */
            fprintf(stderr, "backupctl: Redis at %s:%d refused the credentials in REDIS_URL: %s\n",
                    cfg->redis.host, cfg->redis.port, rep->str);
            freeReplyObject(rep);
            redisFree(r);
            return NULL;
        }
        freeReplyObject(rep);
    }
    if (cfg->redis.db) {
        rep = ctl_redis(r, "SELECT %d", cfg->redis.db);
        if (rep == NULL) {
            redisFree(r);
            return NULL;
        }
        freeReplyObject(rep);
    }
    return r;
}

redisReply *ctl_redis(redisContext *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    if (rep == NULL) {
        fprintf(stderr, "backupctl: Redis: %s\n", r->errstr);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "backupctl: Redis: %s\n", rep->str);
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
