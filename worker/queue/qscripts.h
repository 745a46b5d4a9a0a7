/*
 * qscripts: the Lua scripts that make each queue transition atomic in Redis.
 *
 * Every state change of a job (claim, lease renewal, progress, result, hand
 * back, delayed retry) is one script, so the status hash, the events stream,
 * the pub/sub message, the dead-letter stream, the per-user lock and the XACK
 * can never disagree, whichever worker crashes when. Each script first checks
 * that the stream entry is still pending for this consumer (the fencing that
 * rejects a late result from a worker whose lease expired).
 *
 * The sources live in worker/queue/lua/, one file per script. Common arguments,
 * ARGV[1..6]: prefix, group, consumer, now (ms), events
 * MAXLEN, status-hash retention (ms). Script-specific ones follow; see each
 * script. Not for Redis Cluster: keys are derived in the scripts.
 */
#ifndef BW_QSCRIPTS_H
#define BW_QSCRIPTS_H

#include "redis/redis.h"

typedef enum {
    QS_START,    /* claim a delivered entry: dedupe, user lock, attempts, status running */
    QS_FINISH,   /* record completed / retry / dead, XACK, release the lock */
    QS_RENEW,    /* keep a running entry's lease and user lock */
    QS_PROGRESS, /* status hash + event for a progress step */
    QS_HANDBACK, /* give an unfinished entry back at shutdown */
    QS_PROMOTE,  /* move due delayed retries back to the jobs stream */
    QS_RETIRE,   /* remove this consumer from the group if it holds nothing */
    QS_USERLOCK, /* take or release one user's lock for a job that covers many users */
    QS_COUNT
} QScript;

/* A growing list of arguments (binary-safe copies). */
typedef struct {
    char **v;
    size_t *len;
    int n, cap;
} QArgs;

void qargs_add(QArgs *a, const char *s, size_t len);
void qargs_str(QArgs *a, const char *s);
void qargs_fmt(QArgs *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qargs_free(QArgs *a);

typedef void (*QScriptCb)(redisReply *reply, const Err *err, void *data);
/*
 * Run script s on r with ARGV = argv (taken; emptied): EVALSHA, and EVAL once
 * when Redis has lost its script cache (a restart). Returns -1 when Redis is
 * not connected (cb is then not called), else cb runs exactly once.
 */
int qscript_run(RedisClient *r, QScript s, QArgs *argv, QScriptCb cb, void *data);

/* The script's source. */
const char *qscript_body(QScript s);
/* Its SHA-1 in hex, as EVALSHA wants it. */
const char *qscript_sha(QScript s);

#endif
