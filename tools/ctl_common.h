/*
 * ctl_common: what backupctl's commands share. A command-line tool may block,
 * so Redis and PostgreSQL are spoken to synchronously (the worker's Redis client
 * on a private loop, each reply waited for: plain or TLS alike; libpq), with
 * timeouts; a failure to connect names the endpoint (never its secrets) and
 * what to check. Also argument checks and human-readable figures.
 */
#ifndef BW_CTL_COMMON_H
#define BW_CTL_COMMON_H

#include "config/config.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef struct CtlRedis CtlRedis;
/* Connected (TLS, AUTH, SELECT done), or NULL after printing why. */
CtlRedis *ctl_redis_open(const Config *cfg);
void ctl_redis_close(CtlRedis *r);
/* A reply that is not an error (freeReplyObject it), or NULL after printing why. */
redisReply *ctl_redis(CtlRedis *r, const char *fmt, ...);
/* Any reply, error replies too; NULL when the connection failed (ctl_redis_error says why). */
redisReply *ctl_redis_raw(CtlRedis *r, const char *fmt, ...);
redisReply *ctl_redis_argv(CtlRedis *r, int argc, const char **argv);
const char *ctl_redis_error(const CtlRedis *r);
/* Value of name in a flat [name, value, ...] array reply; NULL if absent. */
const char *ctl_reply_field(const redisReply *arr, const char *name);
/* "<prefix>:<suffix>" in out. */
const char *ctl_key(const Config *cfg, const char *suffix, char *out, size_t outsz);

/* Connected (10 s timeout), or NULL after printing why. */
PGconn *ctl_pg_open(const Config *cfg);

/* A UUID argument, lowercased into out; 0, or -1 after printing why (what names it). */
int ctl_uuid_arg(const char *what, const char *s, char out[37]);

/* 1.5 GiB, 12.0 MiB, 512 B */
void ctl_fmt_bytes(uint64_t n, char *out, size_t outsz);
/* 3d 4h, 5h 12m, 4m 10s, 12s */
void ctl_fmt_duration(double seconds, char *out, size_t outsz);
/* Seconds since the epoch, with microseconds. */
double ctl_now(void);

#endif
