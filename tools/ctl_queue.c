/*
 * ctl_queue: `backupctl jobs`, `backupctl dead ls|retry|drop`, `backupctl ping`.
 *
 * A command-line tool may block, so this speaks to Redis with hiredis's
 * synchronous API, one command at a time, with a timeout. Every change it
 * makes to the queue is one Lua script, like the worker's.
 */
#include "ctl_queue.h"

#include "ctl_common.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define GROUP "backup-workers"

typedef struct {
    CtlRedis *r;
    const Config *cfg;
    char key[256];
} Q;

static const char *k(Q *q, const char *suffix) {
    snprintf(q->key, sizeof(q->key), "%s:%s", q->cfg->redis_prefix, suffix);
    return q->key;
}

static int q_open(Q *q, const Config *cfg) {
    memset(q, 0, sizeof(*q));
    q->cfg = cfg;
    q->r = ctl_redis_open(cfg);
    return q->r ? 0 : -1;
}

#define cmd(q, ...) ctl_redis((q)->r, __VA_ARGS__)
#define field       ctl_reply_field

static long long int_of(Q *q, const char *fmt, const char *a, const char *b) {
    redisReply *rep = cmd(q, fmt, a, b);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return v;
}

static long long num_field(const redisReply *arr, const char *name) {
    for (size_t i = 0; arr && arr->type == REDIS_REPLY_ARRAY && i + 1 < arr->elements; i += 2)
        if (arr->element[i]->type == REDIS_REPLY_STRING && strcmp(arr->element[i]->str, name) == 0)
            return arr->element[i + 1]->type == REDIS_REPLY_INTEGER ? arr->element[i + 1]->integer
                                                                    : -1;
    return -1;
}

/* ---- jobs ---- */

static int cmd_jobs(Q *q) {
    long long len = int_of(q, "XLEN %s", k(q, "jobs"), NULL);
    long long delayed = int_of(q, "ZCARD %s", k(q, "delayed"), NULL);
    long long dead = int_of(q, "XLEN %s", k(q, "dead"), NULL);
    if (len < 0 || delayed < 0 || dead < 0)
        return 1;
    printf("stream %s: %lld entries; delayed (retries, busy users): %lld; dead letters: %lld\n",
           k(q, "jobs"), len, delayed, dead);
    redisReply *groups = ctl_redis_raw(q->r, "XINFO GROUPS %s", k(q, "jobs"));
    if (groups == NULL) {
        fprintf(stderr, "backupctl: Redis: %s\n", ctl_redis_error(q->r));
        return 1;
    }
    for (size_t i = 0; groups->type == REDIS_REPLY_ARRAY && i < groups->elements; i++) {
        const redisReply *g = groups->element[i];
        const char *name = field(g, "name");
        if (name == NULL || strcmp(name, GROUP) != 0)
            continue;
        printf("group %s: %lld consumers, %lld pending (delivered, not yet acknowledged), "
               "lag %lld\n",
               GROUP, num_field(g, "consumers"), num_field(g, "pending"), num_field(g, "lag"));
    }
    freeReplyObject(groups);
    redisReply *cons = ctl_redis_raw(q->r, "XINFO CONSUMERS %s %s", k(q, "jobs"), GROUP);
    if (cons && cons->type == REDIS_REPLY_ARRAY) {
        if (cons->elements)
            printf("%-40s %8s %12s\n", "consumer", "pending", "idle");
        for (size_t i = 0; i < cons->elements; i++) {
            const redisReply *c = cons->element[i];
            printf("%-40s %8lld %10.1f s\n", field(c, "name") ? field(c, "name") : "?",
                   num_field(c, "pending"), (double)num_field(c, "idle") / 1000.0);
        }
    }
    if (cons)
        freeReplyObject(cons);
    return 0;
}

/* ---- dead letters ---- */

static int cmd_dead_ls(Q *q, long count) {
    redisReply *rep = cmd(q, "XREVRANGE %s + - COUNT %ld", k(q, "dead"), count);
    if (rep == NULL)
        return 1;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            continue;
        const redisReply *f = e->element[1];
        const char *at = field(f, "failed_at");
        char when[32] = "?";
        if (at) {
            time_t t = (time_t)(atoll(at) / 1000);
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        }
        const char *type = field(f, "type"), *user = field(f, "user_id");
        printf("%s  %s  %s  %s  %s  attempts %s  %s\n", e->element[0]->str, when,
               field(f, "job_id") ? field(f, "job_id") : "-", type ? type : "-", user ? user : "-",
               field(f, "attempts") ? field(f, "attempts") : "?",
               field(f, "error") ? field(f, "error") : "");
    }
    if (rep->elements == 0)
        printf("no dead letters in %s\n", k(q, "dead"));
    freeReplyObject(rep);
    return 0;
}

/*
 * Re-enqueue a dead letter with its original fields, as a fresh job under the
 * same job_id: the old status hash goes (else the job would be skipped as a
 * duplicate), the letter leaves the dead stream, all in one script.
 */
static const char retry_lua[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "if #e == 0 then return {err = 'no dead letter ' .. ARGV[1]} end\n"
    "local f, out, jid = e[1][2], {}, nil\n"
    "local skip = {entry = true, error = true, attempts = true, failed_at = true}\n"
    "for i = 1, #f, 2 do\n"
    "  if not skip[f[i]] then out[#out + 1] = f[i]; out[#out + 1] = f[i + 1] end\n"
    "  if f[i] == 'job_id' then jid = f[i + 1] end\n"
    "end\n"
    "if #out == 0 then return {err = 'dead letter ' .. ARGV[1] .. ' has no fields to run'} end\n"
    "local id = redis.call('XADD', KEYS[2], '*', unpack(out))\n"
    "if jid then redis.call('DEL', ARGV[2] .. ':job:' .. jid, ARGV[2] .. ':job:' .. jid .. "
    "':payload') end\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return {id, jid or ''}\n";

static int cmd_dead_retry(Q *q, const char *id) {
    char dead[256], jobs[256];
    snprintf(dead, sizeof(dead), "%s:dead", q->cfg->redis_prefix);
    snprintf(jobs, sizeof(jobs), "%s:jobs", q->cfg->redis_prefix);
    redisReply *rep =
        cmd(q, "EVAL %s 2 %s %s %s %s", retry_lua, dead, jobs, id, q->cfg->redis_prefix);
    if (rep == NULL)
        return 1;
    printf("re-enqueued dead letter %s as entry %s (job %s)\n", id, rep->element[0]->str,
           rep->element[1]->str);
    freeReplyObject(rep);
    return 0;
}

static int cmd_dead_drop(Q *q, const char *id) {
    long long n = int_of(q, "XDEL %s %s", k(q, "dead"), id);
    if (n < 0)
        return 1;
    if (n == 0) {
        fprintf(stderr, "backupctl: no dead letter %s\n", id);
        return 1;
    }
    printf("dropped dead letter %s\n", id);
    return 0;
}

/* ---- ping: the whole path, enqueue to recorded result ---- */

static int cmd_ping(Q *q, double timeout_s) {
    char jid[64];
    snprintf(jid, sizeof(jid), "ping-%ld-%d", (long)time(NULL), (int)getpid());
    double t0 = ctl_now();
    redisReply *rep = cmd(q, "XADD %s * type ping job_id %s trigger manual", k(q, "jobs"), jid);
    if (rep == NULL)
        return 1;
    freeReplyObject(rep);
    char hash[256];
    snprintf(hash, sizeof(hash), "%s:job:%s", q->cfg->redis_prefix, jid);
    while (ctl_now() - t0 < timeout_s) {
        rep = cmd(q, "HMGET %s status worker", hash);
        if (rep == NULL)
            return 1;
        const char *st = rep->element[0]->type == REDIS_REPLY_STRING ? rep->element[0]->str : "";
        if (strcmp(st, "completed") == 0) {
            printf("pong from %s in %.1f ms\n",
                   rep->element[1]->type == REDIS_REPLY_STRING ? rep->element[1]->str : "?",
                   (ctl_now() - t0) * 1000.0);
            freeReplyObject(rep);
            return 0;
        }
        freeReplyObject(rep);
        usleep(5000);
    }
    fprintf(stderr,
            "backupctl: no worker answered ping %s within %.0f s (are workers running and "
            "reading %s? see backupctl jobs)\n",
            jid, timeout_s, k(q, "jobs"));
    return 1;
}

static void usage(void) {
    fprintf(stderr, "Usage: backupctl jobs\n"
                    "       backupctl dead ls [COUNT]\n"
                    "       backupctl dead retry ENTRY_ID\n"
                    "       backupctl dead drop ENTRY_ID\n"
                    "       backupctl ping [--timeout SECONDS]\n");
}

static int valid_entry_id(const char *s) {
    size_t n = strspn(s, "0123456789");
    return n > 0 && s[n] == '-' && s[n + 1 + strspn(s + n + 1, "0123456789")] == '\0' &&
           s[n + 1] != '\0';
}

int ctl_queue_main(const Config *cfg, const char *command, int argc, char **argv) {
    int rc = 2;
    long count = 20;
    double timeout = 10;
    /* validate the whole command line before connecting */
    if (strcmp(command, "jobs") == 0 && argc == 0) {
        rc = 0;
    } else if (strcmp(command, "dead") == 0 && argc >= 1 && strcmp(argv[0], "ls") == 0 &&
               argc <= 2) {
        rc = 0;
        if (argc == 2 && (count = atol(argv[1])) <= 0)
            rc = 2;
    } else if (strcmp(command, "dead") == 0 && argc == 2 &&
               (strcmp(argv[0], "retry") == 0 || strcmp(argv[0], "drop") == 0)) {
        rc = valid_entry_id(argv[1]) ? 0 : 2;
        if (rc)
            fprintf(stderr, "backupctl: '%s' is not a stream entry id (such as 1732790000000-0)\n",
                    argv[1]);
    } else if (strcmp(command, "ping") == 0 && (argc == 0 || argc == 2)) {
        rc = 0;
        if (argc == 2 && (strcmp(argv[0], "--timeout") != 0 || (timeout = atof(argv[1])) <= 0))
            rc = 2;
    }
    if (rc != 0) {
        usage();
        return 2;
    }
    Q q;
    if (q_open(&q, cfg) != 0)
        return 1;
    if (strcmp(command, "jobs") == 0)
        rc = cmd_jobs(&q);
    else if (strcmp(command, "ping") == 0)
        rc = cmd_ping(&q, timeout);
    else if (strcmp(argv[0], "ls") == 0)
        rc = cmd_dead_ls(&q, count);
    else if (strcmp(argv[0], "retry") == 0)
        rc = cmd_dead_retry(&q, argv[1]);
    else
        rc = cmd_dead_drop(&q, argv[1]);
    ctl_redis_close(q.r);
    return rc;
}
