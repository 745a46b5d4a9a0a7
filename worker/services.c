/*
 * services: connections, probes and the health endpoint (see services.h).
 *
 * A probe timer re-checks PostgreSQL and S3 every PROBE_MS; Redis reports its
 * own state through the client's state callback. Probes never overlap: each
 * has an in-flight flag, so a hung service costs one request, not a pile.
 * With a replica, the same timer probes its bucket (never a condition of
 * readiness: backups do not need it) and reads what waits for a copy.
 */
#include "services.h"
#include "http/httpd.h"
#include "base/log.h"
#include "base/looplag.h"
#include "aws/s3.h"
#include "storage/storage_file.h"
#include "storage/storage_s3.h"
#include "version.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROBE_MS      10000
#define PROBE_DOWN_MS 1000

struct Services {
    uv_loop_t *loop;
    const Config *cfg;
    const JobConfig *jcfg;
    RedisClient *redis;
    PgPool *pg;
    HttpClient *http;
    S3Client *s3;
    KmsClient *kms;
    S3Client *replica_s3;
    Storage *replica;
    Storage *store;
    LoopLag *lag;
    ScopeCache *scopes;
    Httpd *httpd;
    uv_timer_t probe;
    char s3_label[256];
    int redis_ok, pg_ok, s3_ok;
    int pg_probing, s3_probing;
    int pg_warned, s3_warned;
    /* the replica: its bucket's state, what waits for a copy (from backup_metadata, so every
     * worker reports the same), this worker's copies */
    int replica_ok, replica_probing, replica_warned, waiting_probing;
    int s3_answered; /* the primary's probe answered once: until then, no verdict on it */
    long long replica_waiting, replica_failed;
    double replica_oldest_s;
    int last_probing;
    double last_completed_s; /* newest completed backup of anyone (epoch seconds; 0: none yet) */
    uint64_t replica_bytes, replica_copies, replica_failures;
    int announced_ready;
    int closing;
    int pending; /* probes in flight: their callbacks need this struct */
    int probe_closed;
    void (*metrics_hook)(Buf *out, void *data);
    void *metrics_data;
};

static void maybe_release(Services *s) {
    if (s->closing && s->pending == 0 && s->probe_closed)
        free(s);
}

static void announce(Services *s) {
    int level = !services_ready(s) ? 0 : s->s3_ok ? 2 : 1;
    if (level == 2 && s->announced_ready != 2)
        log_info(NULL, "ready: Redis, PostgreSQL and the store (%s) are reachable",
                 storage_name(s->store));
    else if (level == 1 && s->announced_ready != 1)
        log_warn(NULL, "ready on the replica alone: the primary bucket is unreachable (restores "
                       "and verifies read the replica; backups wait for the primary)");
    s->announced_ready = level;
}

/* ---- Redis ---- */

static void on_redis_state(RedisClient *c, int connected, const Err *err, void *data) {
    (void)c;
    Services *s = data;
    s->redis_ok = connected;
    if (connected)
        log_info(NULL, "connected to Redis at %s:%d (db %d)", s->cfg->redis.host,
                 s->cfg->redis.port, s->cfg->redis.db);
    else
        log_warn(NULL, "lost Redis: %s", err ? err->msg : "unknown error");
    announce(s);
}

/* ---- PostgreSQL ---- */

static void on_pg_probe(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Services *s = data;
    s->pending--;
    s->pg_probing = 0;
    if (s->closing) {
        maybe_release(s);
        return;
    }
    int was = s->pg_ok;
    s->pg_ok = err == NULL;
    if (err != NULL && !s->pg_warned) {
        if (err->code == ERR_CODE_CONFIG)
            log_error(NULL,
                      "PostgreSQL refuses the worker (a configuration error, not an outage: check "
                      "DATABASE_URL's user, password and database; not ready until it is fixed): "
                      "%s",
                      err->msg);
        else
            log_warn(NULL, "PostgreSQL unreachable: %s", err->msg);
        s->pg_warned = 1;
    } else if (err == NULL && !was) {
        s->pg_warned = 0;
        log_info(NULL, "connected to PostgreSQL %s (database %s as %s)", PQgetvalue(res, 0, 0),
                 PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    }
    announce(s);
}

static void probe_pg(Services *s) {
    if (s->pg_probing)
        return;
    s->pg_probing = 1;
    s->pending++;
    pg_pool_query(s->pg,
                  "SELECT current_setting('server_version'), current_database(), current_user", 0,
                  NULL, on_pg_probe, s);
}

/* The newest completed backup, for an alert when none completes for a day (every worker
 * reports the same value, read from backup_metadata). */
static void on_last_completed(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Services *s = data;
    s->pending--;
    s->last_probing = 0;
    if (s->closing) {
        maybe_release(s);
        return;
    }
    if (err == NULL && PQntuples(res) == 1) /* an error (no table yet) keeps the last value */
        s->last_completed_s = strtod(PQgetvalue(res, 0, 0), NULL);
}

static void probe_last_completed(Services *s) {
    if (s->last_probing || !s->pg_ok)
        return;
    s->last_probing = 1;
    s->pending++;
    /* the partial index of 015 answers it */
    pg_pool_query(s->pg,
                  "SELECT coalesce(extract(epoch FROM max(completed_at)), 0)::float8 FROM "
                  "backup_metadata WHERE status = 'completed'",
                  0, NULL, on_last_completed, s);
}

/* ---- S3 ---- */

static void on_store_probe(const StorageResult *res, const Err *err, void *data) {
    Services *s = data;
    s->pending--;
    s->s3_probing = 0;
    if (s->closing) {
        maybe_release(s);
        return;
    }
    int was = s->s3_ok;
    s->s3_answered = 1;
    /* S3: a signed HEAD of the bucket (endpoint, credentials and bucket); a file store: its
     * root is a writable directory */
    s->s3_ok = err == NULL;
    if (s->s3_ok && !was) {
        s->s3_warned = 0;
        log_info(NULL, "%s reachable (HTTP %ld)", s->s3_label, res->status);
    } else if (!s->s3_ok && !s->s3_warned) {
        s->s3_warned = 1;
        log_warn(NULL, "%s unusable: %s", s->s3_label, err->msg);
    }
    announce(s);
}

static void probe_s3(Services *s) {
    if (s->s3_probing)
        return;
    s->s3_probing = 1;
    s->pending++;
    storage_probe(s->store, on_store_probe, s);
}

/* ---- the replica ---- */

static void on_replica_probe(const StorageResult *res, const Err *err, void *data) {
    Services *s = data;
    s->pending--;
    s->replica_probing = 0;
    if (s->closing) {
        maybe_release(s);
        return;
    }
    int was = s->replica_ok;
    s->replica_ok = err == NULL;
    if (s->replica_ok && !was) {
        s->replica_warned = 0;
        log_info(NULL, "replica bucket %s reachable (signed HEAD: HTTP %ld)",
                 s->cfg->s3_replica_bucket, res->status);
    } else if (!s->replica_ok && !s->replica_warned) {
        s->replica_warned = 1;
        log_warn(NULL, "replica bucket %s unusable: %s (copies wait and are retried)",
                 s->cfg->s3_replica_bucket, err->msg);
    }
    announce(s);
}

static void on_waiting(PgConn *conn, PGresult *res, const Err *err, void *data) {
    (void)conn;
    Services *s = data;
    s->pending--;
    s->waiting_probing = 0;
    if (s->closing) {
        maybe_release(s);
        return;
    }
    if (err == NULL && PQntuples(res) == 1) { /* an error keeps the last values */
        s->replica_waiting = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        s->replica_oldest_s = strtod(PQgetvalue(res, 0, 1), NULL);
        s->replica_failed = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    }
}

static void probe_replica(Services *s) {
    if (s->replica_s3 == NULL)
        return;
    if (!s->replica_probing) {
        s->replica_probing = 1;
        s->pending++;
        storage_probe(s->replica, on_replica_probe, s);
    }
    if (!s->waiting_probing && s->pg_ok) { /* the partial index on (completed_at) answers it */
        s->waiting_probing = 1;
        s->pending++;
        pg_pool_query(s->pg,
                      "SELECT count(*) FILTER (WHERE replica_status = 'pending'), "
                      "coalesce(extract(epoch FROM now() - min(completed_at) FILTER (WHERE "
                      "replica_status = 'pending')), 0)::float8, "
                      "count(*) FILTER (WHERE replica_status = 'failed') FROM backup_metadata "
                      "WHERE replica_status IN ('pending', 'failed') AND status = 'completed'",
                      0, NULL, on_waiting, s);
    }
}

void services_replica_copied(Services *s, uint64_t bytes, int failed) {
    if (failed) {
        s->replica_failures++;
        return;
    }
    s->replica_copies++;
    s->replica_bytes += bytes;
}

static void on_probe(uv_timer_t *t) {
    Services *s = t->data;
    probe_pg(s);
    probe_last_completed(s);
    probe_s3(s);
    probe_replica(s);
    /* while something is down, look again every second: jobs wait for it to come back */
    uv_timer_start(&s->probe, on_probe, services_ready(s) ? PROBE_MS : PROBE_DOWN_MS, 0);
}

/* ---- HTTP endpoint ---- */

/* /readyz: 200 while jobs can run (the primary store down and the replica up: degraded) */
static void write_readyz(Services *s, HttpdResponse *resp) {
    int ok = services_ready(s);
    resp->status = ok ? 200 : 503;
    resp->content_type = "application/json";
    buf_printf(&resp->body, "{\"status\":\"%s\",\"redis\":%s,\"postgres\":%s,\"s3\":%s",
               !ok        ? "unavailable"
               : s->s3_ok ? "ready"
                          : "degraded",
               s->redis_ok ? "true" : "false", s->pg_ok ? "true" : "false",
               s->s3_ok ? "true" : "false");
    /* "s3" is the primary store's state whatever its driver (the field predates the file
     * store); "store" names the driver */
    buf_printf(&resp->body, ",\"store\":\"%s\"", storage_name(s->store));
    if (s->replica_s3)
        buf_printf(&resp->body, ",\"replica\":%s", s->replica_ok ? "true" : "false");
    buf_puts(&resp->body, "}\n");
}

/* the replica's gauges and counters, when there is one */
static void write_replica_metrics(Services *s, Buf *b) {
    if (s->replica_s3) {
        buf_printf(b,
                   "# HELP bw_replica_waiting_backups Completed backups whose copy to the "
                   "replica is pending (all workers).\n"
                   "# TYPE bw_replica_waiting_backups gauge\nbw_replica_waiting_backups %lld\n",
                   s->replica_waiting);
        buf_printf(b,
                   "# HELP bw_replica_oldest_waiting_seconds Age of the oldest backup waiting "
                   "for its copy.\n# TYPE bw_replica_oldest_waiting_seconds gauge\n"
                   "bw_replica_oldest_waiting_seconds %.3f\n",
                   s->replica_oldest_s);
        buf_printf(b,
                   "# HELP bw_replica_failed_backups Backups whose copy gave up (replicate "
                   "--missing queues them again).\n# TYPE bw_replica_failed_backups gauge\n"
                   "bw_replica_failed_backups %lld\n",
                   s->replica_failed);
        buf_printf(b,
                   "# HELP bw_replica_copies_total Copies to the replica by this worker.\n"
                   "# TYPE bw_replica_copies_total counter\n"
                   "bw_replica_copies_total{result=\"completed\"} %llu\n"
                   "bw_replica_copies_total{result=\"failed\"} %llu\n",
                   (unsigned long long)s->replica_copies, (unsigned long long)s->replica_failures);
        buf_printf(b,
                   "# HELP bw_replica_bytes_copied_total Bytes copied to the replica by this "
                   "worker (objects and manifests).\n"
                   "# TYPE bw_replica_bytes_copied_total counter\n"
                   "bw_replica_bytes_copied_total %llu\n",
                   (unsigned long long)s->replica_bytes);
    }
}

/* /metrics: reachability, the loop, the connections and the store (the queue adds its own
 * through the hook) */
static void write_metrics(Services *s, Buf *b, double lag_ms) {
    buf_printf(b, "# HELP bw_up Service reachability (1 reachable).\n# TYPE bw_up gauge\n");
    buf_printf(b, "bw_up{service=\"redis\"} %d\n", s->redis_ok);
    buf_printf(b, "bw_up{service=\"postgres\"} %d\n", s->pg_ok);
    buf_printf(b, "bw_up{service=\"%s\"} %d\n", storage_name(s->store), s->s3_ok);
    if (s->replica_s3) /* a family's samples stay together (the exposition format says so) */
        buf_printf(b, "bw_up{service=\"replica\"} %d\n", s->replica_ok);
    buf_printf(b,
               "# HELP bw_scope_reads_total Backup scopes read from the catalog.\n"
               "# TYPE bw_scope_reads_total counter\nbw_scope_reads_total %" PRIu64 "\n",
               scopecache_reads(s->scopes));
    buf_printf(b,
               "# HELP bw_scope_reuses_total Backup scopes reused (the catalog's "
               "fingerprint unchanged).\n# TYPE bw_scope_reuses_total counter\n"
               "bw_scope_reuses_total %" PRIu64 "\n",
               scopecache_hits(s->scopes));
    buf_printf(b,
               "# HELP bw_pg_round_trips_total Statements, COPYs and pipelines sent to "
               "PostgreSQL (one round trip each).\n# TYPE bw_pg_round_trips_total counter\n"
               "bw_pg_round_trips_total %" PRIu64 "\n",
               pg_round_trips());
    buf_printf(b, "# HELP bw_event_loop_lag_seconds Event-loop lag at the last tick.\n"
                  "# TYPE bw_event_loop_lag_seconds gauge\n");
    buf_printf(b, "bw_event_loop_lag_seconds %.6f\n", lag_ms / 1000.0);
    buf_printf(b, "# HELP bw_event_loop_lag_max_seconds Largest event-loop lag seen.\n"
                  "# TYPE bw_event_loop_lag_max_seconds gauge\n");
    buf_printf(b, "bw_event_loop_lag_max_seconds %.6f\n", (double)looplag_max_us(s->lag) / 1e6);
    buf_printf(b, "# HELP bw_redis_reconnects_total Redis reconnections.\n"
                  "# TYPE bw_redis_reconnects_total counter\n");
    buf_printf(b, "bw_redis_reconnects_total %llu\n",
               (unsigned long long)redis_client_reconnects(s->redis));
    buf_printf(b, "# HELP bw_pg_pool_connections PostgreSQL pool connections.\n"
                  "# TYPE bw_pg_pool_connections gauge\n");
    buf_printf(b, "bw_pg_pool_connections{state=\"open\"} %d\n", pg_pool_open(s->pg));
    buf_printf(b, "bw_pg_pool_connections{state=\"idle\"} %d\n", pg_pool_idle(s->pg));
    buf_printf(b, "# HELP bw_s3_bytes_total Bytes moved to and from S3.\n"
                  "# TYPE bw_s3_bytes_total counter\n");
    buf_printf(b, "bw_s3_bytes_total{direction=\"up\"} %llu\n",
               (unsigned long long)http_client_bytes_sent(s->http));
    buf_printf(b, "bw_s3_bytes_total{direction=\"down\"} %llu\n",
               (unsigned long long)http_client_bytes_received(s->http));
    buf_printf(b, "# HELP bw_s3_retries_total S3 requests sent again after a failed attempt.\n"
                  "# TYPE bw_s3_retries_total counter\n");
    if (s->s3)
        buf_printf(b, "bw_s3_retries_total{bucket=\"primary\"} %llu\n",
                   (unsigned long long)s3_client_retries(s->s3));
    if (s->replica_s3)
        buf_printf(b, "bw_s3_retries_total{bucket=\"replica\"} %llu\n",
                   (unsigned long long)s3_client_retries(s->replica_s3));
    buf_printf(b,
               "# HELP bw_backup_last_completed_timestamp_seconds When the newest completed "
               "backup completed (any user; 0: none yet).\n"
               "# TYPE bw_backup_last_completed_timestamp_seconds gauge\n"
               "bw_backup_last_completed_timestamp_seconds %.3f\n",
               s->last_completed_s);
    write_replica_metrics(s, b);
}

static void on_http(const char *method, const char *path, HttpdResponse *resp, void *data) {
    (void)method;
    Services *s = data;
    double lag_ms = (double)looplag_last_us(s->lag) / 1000.0;
    if (strcmp(path, "/healthz") == 0) {
        resp->content_type = "application/json";
        buf_printf(&resp->body, "{\"status\":\"ok\",\"version\":\"%s\",\"loop_lag_ms\":%.3f}\n",
                   BW_VERSION, lag_ms);
    } else if (strcmp(path, "/readyz") == 0) {
        write_readyz(s, resp);
    } else if (strcmp(path, "/metrics") == 0) {
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        write_metrics(s, &resp->body, lag_ms);
        if (s->metrics_hook)
            s->metrics_hook(&resp->body, s->metrics_data);
    } else {
        resp->status = 404;
        buf_puts(&resp->body, "not found: try /healthz, /readyz or /metrics\n");
    }
}

/* ---- lifecycle ---- */

Services *services_new(uv_loop_t *loop, const Config *cfg, const JobConfig *jcfg, Err *err) {
    Services *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->jcfg = jcfg;
    s->lag = looplag_new(loop, 100);
    s->scopes = scopecache_new();
    if (cfg->store_path)
        snprintf(s->s3_label, sizeof(s->s3_label), "file store %s", cfg->store_path);
    else if (cfg->s3_endpoint)
        snprintf(s->s3_label, sizeof(s->s3_label), "S3 bucket %s at %s", cfg->s3_bucket,
                 cfg->s3_endpoint);
    else
        snprintf(s->s3_label, sizeof(s->s3_label), "S3 bucket %s at https://s3.%s.amazonaws.com",
                 cfg->s3_bucket, cfg->aws_region);

    /* a file store's root that cannot be made is a configuration error: refuse to start */
    Storage *file_store = NULL;
    if (cfg->store_path && (file_store = storage_file_new(loop, cfg->store_path, err)) == NULL) {
        looplag_free(s->lag);
        scopecache_free(s->scopes);
        free(s);
        return NULL;
    }
    if (cfg->worker_http_port > 0) {
        s->httpd = httpd_new(loop, cfg->worker_http_host, cfg->worker_http_port, on_http, s, err);
        if (s->httpd == NULL) {
            storage_free(file_store);
            looplag_free(s->lag);
            scopecache_free(s->scopes);
            free(s);
            return NULL;
        }
        log_info(NULL, "serving /healthz, /readyz and /metrics on port %d", httpd_port(s->httpd));
    }

    char host[256], name[300];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "worker");
    host[sizeof(host) - 1] = '\0';
    snprintf(name, sizeof(name), "backup-worker:%s:%d", host, (int)getpid());
    RedisOptions ro;
    config_redis_options(cfg, &ro);
    ro.name = name;
    ro.command_timeout_ms = 10000;
    ro.on_state = on_redis_state;
    ro.data = s;
    s->redis = redis_client_new(loop, &ro);

    s->pg = pg_pool_new(loop, cfg->database_url, cfg->worker_concurrency + 2, 10000);
    s->http = http_client_new(loop, 0);
    S3Options so;
    config_s3_options(cfg, &so);
    s->kms = keys_kms_client(jcfg->keys, loop, s->http, &so);
    if (cfg->store_path) {
        s->store = file_store;
    } else {
        s->s3 = s3_client_new(loop, s->http, &so);
        s->store = storage_s3_new(loop, s->s3, (size_t)cfg->s3_part_size_mb << 20,
                                  cfg->s3_upload_concurrency);
    }
    S3Options ro3;
    if (config_s3_replica_options(cfg, &ro3) == 0) { /* copies only: never on a backup's path */
        s->replica_s3 = s3_client_new(loop, s->http, &ro3);
        s->replica = storage_s3_new(loop, s->replica_s3, (size_t)cfg->s3_part_size_mb << 20,
                                    cfg->s3_upload_concurrency);
        log_info(NULL, "replica: bucket %s at %s", cfg->s3_replica_bucket,
                 cfg->s3_replica_endpoint ? cfg->s3_replica_endpoint : "AWS");
    }

    uv_timer_init(loop, &s->probe);
    s->probe.data = s;
    uv_timer_start(&s->probe, on_probe, 0, 0);
    return s;
}

static void on_probe_closed(uv_handle_t *h) {
    Services *s = h->data;
    s->probe_closed = 1;
    maybe_release(s);
}

void services_free(Services *s) {
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    uv_timer_stop(&s->probe);
    uv_close((uv_handle_t *)&s->probe, on_probe_closed);
    httpd_free(s->httpd);
    redis_client_free(s->redis);
    storage_free(s->store);
    storage_free(s->replica);
    s3_client_free(s->replica_s3);
    s3_client_free(s->s3); /* cancels the S3 probe: its callback runs now */
    kms_client_free(s->kms);
    http_client_free(s->http);
    pg_pool_free(s->pg); /* fails a waiting probe now; a running one completes */
    looplag_free(s->lag);
    scopecache_free(s->scopes);
}

int services_ready(const Services *s) {
    /* the primary bucket down and the replica up: jobs still run (restores and verifies read
     * the replica; backups wait out the outage, which costs them no attempt) */
    return s->redis_ok && s->pg_ok &&
           (s->s3_ok || (s->s3_answered && s->replica_s3 && s->replica_ok));
}

int services_http_port(const Services *s) {
    return s->httpd ? httpd_port(s->httpd) : 0;
}

void services_set_metrics_hook(Services *s, void (*hook)(Buf *out, void *data), void *data) {
    s->metrics_hook = hook;
    s->metrics_data = data;
}

RedisClient *services_redis(Services *s) {
    return s->redis;
}

ScopeCache *services_scope_cache(Services *s) {
    return s->scopes;
}

PgPool *services_pg(Services *s) {
    return s->pg;
}

void services_halt(Services *s) {
    storage_halt(s->store);
    storage_halt(s->replica);
}

Storage *services_storage(Services *s) {
    return s->store;
}

const JobConfig *services_jobconfig(const Services *s) {
    return s->jcfg;
}

Storage *services_replica(Services *s) {
    return s->replica;
}

KmsClient *services_kms(Services *s) {
    return s->kms;
}

const Config *services_config(const Services *s) {
    return s->cfg;
}

HttpClient *services_http(Services *s) {
    return s->http;
}
