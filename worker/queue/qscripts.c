/*
 * qscripts: the scripts, embedded from worker/queue/lua/ at build time (see
 * embed.cmake). Each script's source is the shared prelude followed by its
 * own file; the SHA-1 of that text is what EVALSHA names.
 */
#include "queue/qscripts.h"
#include "base/buf.h"
#include "qscripts_lua.h"

#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const own[QS_COUNT] = {lua_start,    lua_finish,  lua_renew,  lua_progress,
                                          lua_handback, lua_promote, lua_retire, lua_userlock};
static char *bodies[QS_COUNT];
static char shas[QS_COUNT][41];

const char *qscript_body(QScript s) {
    if (bodies[s] == NULL) {
        Buf b = BUF_INIT;
        buf_puts(&b, lua_prelude);
        buf_puts(&b, own[s]);
        bodies[s] = buf_steal(&b);
    }
    return bodies[s];
}

const char *qscript_sha(QScript s) {
    if (shas[s][0] == '\0') {
        const char *body = qscript_body(s);
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)body, strlen(body), md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
            snprintf(shas[s] + 2 * i, 3, "%02x", md[i]);
    }
    return shas[s];
}

/* ---- arguments ---- */

/* Append s (taken, NUL-terminated at len). */
static void qargs_take(QArgs *a, char *s, size_t len) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 24;
        a->v = xrealloc(a->v, (size_t)a->cap * sizeof(*a->v));
        a->len = xrealloc(a->len, (size_t)a->cap * sizeof(*a->len));
    }
    a->v[a->n] = s;
    a->len[a->n++] = len;
}

void qargs_add(QArgs *a, const char *s, size_t len) {
    char *copy = xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    qargs_take(a, copy, len);
}

void qargs_str(QArgs *a, const char *s) {
    qargs_add(a, s, strlen(s));
}

void qargs_fmt(QArgs *a, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    qargs_str(a, tmp);
}

void qargs_free(QArgs *a) {
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* ---- running ---- */

typedef struct {
    QScript s;
    QArgs cmd; /* EVALSHA sha 0 ARGV... */
    int evaled;
    QScriptCb cb;
    void *data;
} Run;

static void run_free(Run *run) {
    qargs_free(&run->cmd);
    free(run);
}

static void on_reply(RedisClient *c, redisReply *reply, const Err *err, void *data) {
    Run *run = data;
    Err e;
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        !run->evaled) {
        /* Redis restarted or flushed its script cache: send the body once */
        run->evaled = 1;
        free(run->cmd.v[0]);
        free(run->cmd.v[1]);
        run->cmd.v[0] = xstrdup("EVAL");
        run->cmd.len[0] = 4;
        run->cmd.v[1] = xstrdup(qscript_body(run->s));
        run->cmd.len[1] = strlen(run->cmd.v[1]);
        if (redis_command_argv(c, on_reply, run, run->cmd.n, (const char **)run->cmd.v,
                               run->cmd.len, &e) == 0)
            return;
        reply = NULL;
        err = &e;
    }
    run->cb(reply, err, run->data);
    run_free(run);
}

int qscript_run(RedisClient *r, QScript s, QArgs *argv, QScriptCb cb, void *data) {
    Run *run = xcalloc(1, sizeof(*run));
    run->s = s;
    run->cb = cb;
    run->data = data;
    qargs_str(&run->cmd, "EVALSHA");
    qargs_str(&run->cmd, qscript_sha(s));
    qargs_str(&run->cmd, "0");
    for (int i = 0; i < argv->n; i++) /* the strings move over, uncopied */
        qargs_take(&run->cmd, argv->v[i], argv->len[i]);
    free(argv->v);
    free(argv->len);
    memset(argv, 0, sizeof(*argv));
    Err e;
    if (redis_command_argv(r, on_reply, run, run->cmd.n, (const char **)run->cmd.v, run->cmd.len,
                           &e) != 0) {
        run_free(run);
        return -1;
    }
    return 0;
}
