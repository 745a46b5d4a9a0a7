/*
 * services: the worker's connections to Redis, PostgreSQL and the store, and the
 * HTTP endpoint that reports on them.
 *
 * Owns one RedisClient, one PgPool, one HttpClient, the loop-lag monitor and
 * the health server. Probes each service at start and then periodically, logs
 * each state change once, and answers /healthz (the loop is alive), /readyz
 * (all three reachable) and /metrics (Prometheus text). Later, the queue
 * engine and the jobs borrow these connections from here.
 */
#ifndef BW_SERVICES_H
#define BW_SERVICES_H

#include "config/config.h"
#include "jobs/jobconfig.h"
#include "base/err.h"
#include "http/http.h"
#include "aws/kms.h"
#include "pg/pgpool.h"
#include "redis/redis.h"
#include "aws/s3.h"
#include "scope/scopecache.h"
#include "storage/storage.h"

#include <stdint.h>
#include <uv.h>

typedef struct Services Services;

/* Start connecting everything; NULL with err if the HTTP port cannot be bound. */
Services *services_new(uv_loop_t *loop, const Config *cfg, const JobConfig *jcfg, Err *err);
/* Close every connection and handle; the loop then ends by itself. */
void services_free(Services *s);
/* 1 when Redis, PostgreSQL and the store were all reachable at the last probe. */
int services_ready(const Services *s);
/* Bound HTTP port (0 when disabled). */
int services_http_port(const Services *s);

/* Let another module append to /metrics (the queue engine does). */
void services_set_metrics_hook(Services *s, void (*hook)(Buf *out, void *data), void *data);

RedisClient *services_redis(Services *s);
PgPool *services_pg(Services *s);
/* The worker's last backup scope, under the catalog's fingerprint (NULL: none kept). */
ScopeCache *services_scope_cache(Services *s);
HttpClient *services_http(Services *s);
/* Shutting down: whatever the stores have in flight or waiting to retry fails now, so the
 * cancelled jobs end within seconds. */
void services_halt(Services *s);
/* The backup store (BACKUP_STORE: S3 or a file store): what jobs use. */
Storage *services_storage(Services *s);
const Config *services_config(const Services *s);
const JobConfig *services_jobconfig(const Services *s);
/* The KMS client of the encryption keys, or NULL when BACKUP_KMS_KEY_ID is not set. */
KmsClient *services_kms(Services *s);
/* The replica store (S3_REPLICA_BUCKET), or NULL when there is none. */
Storage *services_replica(Services *s);
/* A copy to the replica ended (for /metrics): bytes copied, or failed (a run that failed). */
void services_replica_copied(Services *s, uint64_t bytes, int failed);

#endif
