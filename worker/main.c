/*
 * backup-worker: the daemon.
 *
 * Reads its configuration from the environment (exit 2 on any invalid value,
 * before anything starts), connects to Redis, PostgreSQL and S3 on one libuv
 * loop and serves its health endpoint. SIGTERM or SIGINT stops it cleanly
 * (exit 0); a second signal exits at once.
 */
#include "config/config.h"
#include "base/log.h"
#include "capture/capture.h"
#include "jobs/jobconfig.h"
#include "jobs/jobs.h"
#include "queue/queue.h"
#include "services.h"
#include "version.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Seconds past WORKER_SHUTDOWN_GRACE after which the process exits whatever still runs. */
#define EXIT_BACKSTOP_S 10

typedef struct {
    uv_signal_t sigterm, sigint;
    uv_timer_t deadline;
    const Config *cfg;
    Services *services;
    Queue *queue;
    Capture *capture; /* BACKUP_TRACKING=wal */
    int signals;
} Daemon;

static void usage(FILE *out) {
    fprintf(out, "Usage: backup-worker [--help] [--version] [--check-config]\n"
                 "\n"
                 "Runs backup, restore and cleanup jobs from a Redis stream, moving each\n"
                 "user's data between PostgreSQL and S3. Configured by the environment.\n"
                 "\n"
                 "  --check-config  validate the environment, print a summary and exit\n"
                 "\n");
    config_print_help(out);
    jobconfig_print_help(out);
    jobs_print_help(out);
}

static void on_closed(uv_handle_t *h) {
    (void)h;
}

static void on_queue_stopped(void *data) {
    Daemon *d = data;
    d->queue = NULL;
    services_free(d->services);
    d->services = NULL;
}

static void metrics_hook(Buf *out, void *data) {
    Daemon *d = data;
    if (d->queue)
        queue_metrics(d->queue, out);
    capture_metrics(d->capture, out); /* zeros without capture: the alert rules name them */
}

/* The backstop: jobs were handed back when the grace ran out; whatever still holds the loop
 * this long after it (a dependency that never answers) must not keep the pod alive. */
static void on_exit_deadline(uv_timer_t *t) {
    (void)t;
    log_error(NULL,
              "still stopping %d s after the shutdown grace: exiting now (running jobs "
              "were handed back)",
              EXIT_BACKSTOP_S);
    _exit(1);
}

static void on_signal(uv_signal_t *sig, int signum) {
    Daemon *d = sig->data;
    if (++d->signals > 1) {
        log_warn(NULL, "second %s: exiting now", strsignal(signum));
        _exit(1);
    }
    log_info(NULL, "%s: shutting down", strsignal(signum));
    capture_shutdown(d->capture, NULL, NULL);
    d->capture = NULL;
    queue_shutdown(d->queue, on_queue_stopped, d);
    uv_timer_start(&d->deadline, on_exit_deadline,
                   (uint64_t)d->cfg->worker_shutdown_grace_ms + EXIT_BACKSTOP_S * 1000u, 0);
    uv_unref((uv_handle_t *)&d->deadline);
    /* keep handling a second signal without keeping the loop alive */
    uv_unref((uv_handle_t *)&d->sigterm);
    uv_unref((uv_handle_t *)&d->sigint);
}

static void print_summary(const Config *cfg, const JobConfig *jcfg) {
    Buf keys = BUF_INIT;
    keys_describe(jcfg->keys, &keys);
    char redis[256], db[512];
    connurl_redact(cfg->redis_url, redis, sizeof(redis));
    connurl_redact(cfg->database_url, db, sizeof(db));
    printf("REDIS_URL=%s\nDATABASE_URL=%s\nS3_ENDPOINT=%s\nS3_BUCKET=%s\nAWS_REGION=%s\n"
           "WORKER_CONCURRENCY=%d\nWORKER_HTTP_PORT=%d\nENCRYPTION=%s\n",
           redis, db, cfg->s3_endpoint ? cfg->s3_endpoint : "(AWS)", cfg->s3_bucket,
           cfg->aws_region, cfg->worker_concurrency, cfg->worker_http_port, keys.data);
    buf_free(&keys);
}

int main(int argc, char **argv) {
    /* Part buffers are megabytes each: keep them mmapped so a freed one goes back to the
     * system at once, instead of glibc's adaptive threshold parking it on the heap. */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help-markdown") == 0) { /* the README's table: one source */
            config_help_markdown();
            config_print_help(stdout);
            jobconfig_print_help(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("backup-worker %s\n", BW_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = 1;
        } else {
            fprintf(stderr, "backup-worker: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }

    Config cfg;
    JobConfig jcfg;
    Buf errors = BUF_INIT;
    int nerr = config_load(&cfg, config_getenv_process, NULL, &errors);
    nerr += jobconfig_load(&jcfg, config_getenv_process, NULL, &errors);
    if (nerr > 0) {
        fprintf(stderr, "backup-worker: invalid configuration:\n");
        for (char *line = strtok(errors.data, "\n"); line; line = strtok(NULL, "\n"))
            fprintf(stderr, "  %s\n", line);
        buf_free(&errors);
        config_free(&cfg);
        jobconfig_free(&jcfg);
        return 2;
    }
    buf_free(&errors);
    /* a KMS key that cannot be used stops the worker now, not at the first backup */
    S3Options so;
    config_s3_options(&cfg, &so);
    Err kerr;
    if (keys_probe(jcfg.keys, &so, &kerr) != 0) {
        fprintf(stderr, "backup-worker: invalid configuration:\n  %s\n", kerr.msg);
        config_free(&cfg);
        jobconfig_free(&jcfg);
        return 2;
    }
    if (jcfg.tracking_wal) {
        /* what change capture needs of PostgreSQL, said now rather than in a retry loop */
        Buf warn = BUF_INIT;
        Err cerr;
        err_clear(&cerr);
        if (capture_check(cfg.database_url, &cerr, &warn) < 0) {
            fprintf(stderr, "backup-worker: invalid configuration:\n  %s\n", cerr.msg);
            buf_free(&warn);
            config_free(&cfg);
            jobconfig_free(&jcfg);
            return 2;
        }
        if (warn.len)
            fprintf(stderr, "backup-worker: warning: %s", warn.data);
        buf_free(&warn);
    }
    if (check_only) {
        print_summary(&cfg, &jcfg);
        config_free(&cfg);
        jobconfig_free(&jcfg);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    log_init(cfg.log_level, cfg.log_format, NULL);
    log_info(NULL, "backup-worker %s starting (pid %d, concurrency %d)", BW_VERSION, (int)getpid(),
             cfg.worker_concurrency);
    Buf keys = BUF_INIT;
    keys_describe(jcfg.keys, &keys);
    log_info(NULL, "encryption: %s", keys.data);
    buf_free(&keys);

    uv_loop_t loop;
    uv_loop_init(&loop);
    Daemon d;
    memset(&d, 0, sizeof(d));
    Err err;
    err_clear(&err);
    d.services = services_new(&loop, &cfg, &jcfg, &err);
    if (d.services == NULL) {
        log_error(NULL, "%s", err.msg);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        config_free(&cfg);
        jobconfig_free(&jcfg);
        return 1;
    }
    d.queue = queue_new(&loop, &cfg, d.services);
    if (jcfg.tracking_wal)
        d.capture = capture_new(&loop, d.services);
    services_set_metrics_hook(d.services, metrics_hook, &d);
    d.cfg = &cfg;
    uv_timer_init(&loop, &d.deadline);
    uv_signal_init(&loop, &d.sigterm);
    uv_signal_init(&loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);

    uv_run(&loop, UV_RUN_DEFAULT);

    uv_close((uv_handle_t *)&d.deadline, on_closed);
    uv_close((uv_handle_t *)&d.sigterm, on_closed);
    uv_close((uv_handle_t *)&d.sigint, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    if (rc != 0)
        log_warn(NULL, "event loop closed with handles still open");
    log_info(NULL, "stopped");
    config_free(&cfg);
    jobconfig_free(&jcfg);
    return 0;
}
