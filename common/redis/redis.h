/*
 * redis: a Redis connection that stays up.
 *
 * Our own connection on a libuv TCP handle, plain or TLS (io/tls.h), with
 * hiredis's RESP reader and command formatter; and what hiredis 0.14 lacks: TLS,
 * DNS off the loop thread, AUTH (ACL user and password) and SELECT on every
 * (re)connect, a connect timeout, a command watchdog, and reconnection with
 * capped exponential backoff and jitter. Commands sent while disconnected are
 * refused at once (the caller decides whether to retry); commands in flight
 * when the connection drops get a retryable error, never silence.
 *
 * Usage:
 *   RedisClient *r = redis_client_new(loop, &opts);
 *   redis_command(r, on_reply, ctx, "HSET %s %s %s", key, field, value);
 *   ...
 *   redis_client_free(r);   // pending callbacks get ERR_CODE_CANCELLED
 */
#ifndef BW_REDIS_H
#define BW_REDIS_H

#include "base/err.h"
#include "io/tls.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdint.h>
#include <uv.h>

typedef struct RedisClient RedisClient;

/*
 * Reply callback. reply is NULL when err is a connection error; on a Redis
 * error reply both are set (err->code == ERR_CODE_REDIS). The reply is freed
 * by hiredis after the callback returns.
 */
typedef void (*RedisReplyCb)(RedisClient *c, redisReply *reply, const Err *err, void *data);
/* Connection state changes: connected 1 when ready, 0 when lost (err says why). */
typedef void (*RedisStateCb)(RedisClient *c, int connected, const Err *err, void *data);

typedef struct {
    const char *host;
    int port;
    const char *username; /* NULL: plain AUTH password */
    const char *password; /* NULL: no AUTH */
    int db;
    TlsConfig *tls; /* borrowed, shared; NULL: plain text (rediss:// sets it) */
    /* Redis Cluster (REDIS_CLUSTER): 0 off, 1 on, 2 auto (on when the server is a cluster).
     * The client then serves one hash slot, slot_key's (every key of the queue shares it: the
     * prefix holds a {hash tag}): it finds that slot's master from any node it is given
     * (CLUSTER SLOTS), follows MOVED there, and after a failure tries the other nodes it
     * learnt, so a failover's promoted replica is found. ASK, TRYAGAIN and CLUSTERDOWN answer
     * as retryable errors: a migration or a failover under way. */
    int cluster;
    const char *slot_key;
    const char *name;            /* CLIENT SETNAME and log prefix; may be NULL */
    unsigned connect_timeout_ms; /* default 5000 */
    unsigned command_timeout_ms; /* 0: none; otherwise a stalled connection is dropped */
    unsigned backoff_min_ms;     /* default 100 */
    unsigned backoff_max_ms;     /* default 5000 */
    RedisStateCb on_state;       /* may be NULL */
    void *data;
} RedisOptions;

/* Create the client and start connecting. Strings in opts are copied. */
RedisClient *redis_client_new(uv_loop_t *loop, const RedisOptions *opts);
/* Close the connection, fail pending commands with ERR_CODE_CANCELLED, free asynchronously. */
void redis_client_free(RedisClient *c);
/* 1 when connected and ready for commands. */
int redis_client_connected(const RedisClient *c);
/* Number of successful connections after the first (for metrics). */
uint64_t redis_client_reconnects(const RedisClient *c);
/* Last connection error message, "" if none. */
const char *redis_client_last_error(const RedisClient *c);
/* User data given in the options. */
void *redis_client_data(const RedisClient *c);
/* 1 once the server is known to be a Redis Cluster node. */
int redis_client_is_cluster(const RedisClient *c);
/* The hash slot of a key (CRC16 of its {hash tag}, or of the whole key), 0-16383. */
int redis_key_slot(const char *key, size_t len);

/*
 * Send a command. Returns 0 when queued (cb will be called exactly once), or -1
 * with err set when it could not be sent (not connected): cb is then not called.
 */
int redis_command_argv(RedisClient *c, RedisReplyCb cb, void *data, int argc, const char **argv,
                       const size_t *argvlen, Err *err);
/* printf-style variant, hiredis format (%s, %b with pointer and length). */
int redis_command(RedisClient *c, RedisReplyCb cb, void *data, Err *err, const char *fmt, ...);
int redis_vcommand(RedisClient *c, RedisReplyCb cb, void *data, Err *err, const char *fmt,
                   va_list ap);

#endif
