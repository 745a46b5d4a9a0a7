/* ctl_jobs: backupctl's job commands (see ctl_jobs.h). */
#include "ctl_jobs.h"

#include "ctl_common.h"
#include "ctl_recover.h"
#include "jobspec.h"
#include "version.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_US 150000

typedef enum { OUT_BAR, OUT_LINES, OUT_JSON, OUT_QUIET } OutMode;

typedef struct {
    const Config *cfg;
    int wait; /* -1: default (a terminal) */
    int json;
    double timeout; /* 0: none */
    char job_id[129];
} Opts;

/* ---- the job's status hash ---- */

typedef struct {
    redisReply *rep; /* HGETALL */
} Job;

static const char *jstr(const Job *j, const char *name) {
    const char *v = ctl_reply_field(j->rep, name);
    return v ? v : "";
}

static unsigned long long jnum(const Job *j, const char *name) {
    return strtoull(jstr(j, name), NULL, 10);
}

/* HGETALL of the job's hash; 0 fetched (empty reply if the hash does not exist yet), -1 error */
static int job_get(redisContext *r, const Config *cfg, const char *jid, Job *j) {
    char key[300];
    snprintf(key, sizeof(key), "%s:job:%s", cfg->redis_prefix, jid);
    j->rep = ctl_redis(r, "HGETALL %s", key);
    return j->rep ? 0 : -1;
}

static void job_release(Job *j) {
    if (j->rep)
        freeReplyObject(j->rep);
    j->rep = NULL;
}

static int all_digits(const char *s) {
    return *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 19;
}

static void print_json(const Job *j, const char *jid) {
    Buf b = BUF_INIT;
    buf_puts(&b, "{\"job_id\":\"");
    buf_json_escape(&b, jid, strlen(jid));
    buf_puts(&b, "\"");
    for (size_t i = 0; j->rep && i + 1 < j->rep->elements; i += 2) {
        const char *k = j->rep->element[i]->str, *v = j->rep->element[i + 1]->str;
        if (k == NULL || v == NULL || strcmp(k, "entry") == 0 || strcmp(k, "job_id") == 0)
            continue;
        buf_puts(&b, ",\"");
        buf_json_escape(&b, k, strlen(k));
        if (all_digits(v)) {
            buf_printf(&b, "\":%s", v);
        } else {
            buf_puts(&b, "\":\"");
            buf_json_escape(&b, v, strlen(v));
            buf_puts(&b, "\"");
        }
    }
    buf_puts(&b, "}\n");
    fputs(b.data, stdout);
    buf_free(&b);
}

static void stamp(char *out, size_t n) {
    time_t t = time(NULL);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
}

/* ---- following a job ---- */

typedef struct {
    OutMode mode;
    char last_status[32], last_stage[64], last_error[256];
    unsigned long long last_rows, last_attempts;
    double last_line, t_first, rows_first;
    int bar_drawn;
} Follow;

static void bar(Follow *f, const Job *j, double now) {
    unsigned long long rows = jnum(j, "rows"), total = jnum(j, "rows_total"),
                       bytes = jnum(j, "bytes");
    int pct = (int)jnum(j, "progress");
    if (total > 0 && rows <= total)
        pct = (int)(100.0 * (double)rows / (double)total);
    if (pct > 100)
        pct = 100;
    char bb[32], eta[32] = "", rate[32] = "";
    ctl_fmt_bytes(bytes, bb, sizeof(bb));
    if (f->t_first == 0 && rows > 0) {
        f->t_first = now;
        f->rows_first = (double)rows;
    }
    double dt = now - f->t_first;
    if (f->t_first > 0 && dt > 0.5) {
        double rps = ((double)rows - f->rows_first) / dt;
        if (rps > 0) {
            snprintf(rate, sizeof(rate), "  %.0f rows/s", rps);
            if (total > rows) {
                char d[24];
                ctl_fmt_duration((double)(total - rows) / rps, d, sizeof(d));
                snprintf(eta, sizeof(eta), "  ETA %s", d);
            }
        }
    }
    char fill[31];
    int w = 30, n = pct * w / 100;
    for (int i = 0; i < w; i++)
        fill[i] = i < n ? '#' : '.';
    fill[w] = 0;
    const char *stage = jstr(j, "stage");
    printf("\r\033[K%-9s [%s] %3d%%  %-14.14s %llu", jstr(j, "status"), fill, pct,
           *stage ? stage : "-", rows);
    if (total)
        printf("/%llu", total);
    printf(" rows  %s%s%s", bb, rate, eta);
    fflush(stdout);
    f->bar_drawn = 1;
}

static void line(Follow *f, const Job *j, double now) {
    const char *st = jstr(j, "status"), *stage = jstr(j, "stage");
    unsigned long long rows = jnum(j, "rows");
    int changed = strcmp(st, f->last_status) != 0 || strcmp(stage, f->last_stage) != 0;
    if (!changed && !(rows != f->last_rows && now - f->last_line >= 2.0))
        return;
    char ts[32], bb[32];
    stamp(ts, sizeof(ts));
    ctl_fmt_bytes(jnum(j, "bytes"), bb, sizeof(bb));
    printf("%s  %-9s %-14s %3llu%%  rows %llu", ts, st, *stage ? stage : "-", jnum(j, "progress"),
           rows);
    if (jnum(j, "rows_total"))
        printf("/%llu", jnum(j, "rows_total"));
    printf("  %s\n", bb);
    fflush(stdout);
    f->last_line = now;
    f->last_rows = rows;
}

/* Say a retry once per attempt, on stderr (the bar stays on stdout). */
static void note_retry(Follow *f, const Job *j) {
    const char *err = jstr(j, "error");
    if (strcmp(jstr(j, "status"), "retrying") != 0 ||
        (jnum(j, "attempts") == f->last_attempts && strcmp(err, f->last_error) == 0))
        return;
    if (f->bar_drawn)
        printf("\n");
    f->bar_drawn = 0;
    if (f->mode != OUT_JSON && f->mode != OUT_QUIET)
        fprintf(stderr, "retrying after attempt %llu: %s\n", jnum(j, "attempts"), err);
    f->last_attempts = jnum(j, "attempts");
    snprintf(f->last_error, sizeof(f->last_error), "%s", err);
}

static void summary(const Job *j) {
    const char *st = jstr(j, "status"), *bid = jstr(j, "backup_id"), *note = jstr(j, "note");
    double secs = (double)(jnum(j, "finished_at") - jnum(j, "started_at")) / 1000.0;
    char bb[32], d[24];
    ctl_fmt_bytes(jnum(j, "bytes"), bb, sizeof(bb));
    ctl_fmt_duration(secs, d, sizeof(d));
    if (strcmp(st, "completed") == 0) {
        printf("completed: %s%s%s, %llu rows, %s, in %s (%.1f s)%s%s\n", jstr(j, "type"),
               *bid ? " " : "", bid, jnum(j, "rows"), bb, d, secs, *note ? "; " : "", note);
    } else {
        fprintf(stderr, "failed: %s%s%s after %llu attempt%s: %s\n", jstr(j, "type"),
                *bid ? " " : "", bid, jnum(j, "attempts"), jnum(j, "attempts") == 1 ? "" : "s",
                jstr(j, "error"));
    }
}

static int follow(redisContext *r, const Opts *o, const char *jid) {
    Follow f;
    memset(&f, 0, sizeof(f));
    f.mode = o->json ? OUT_JSON : isatty(1) ? OUT_BAR : OUT_LINES;
    double t0 = ctl_now();
    int said_waiting = 0;
    for (;;) {
        Job j = {0};
        if (job_get(r, o->cfg, jid, &j) != 0)
            return 1;
        double now = ctl_now();
        const char *st = jstr(&j, "status");
        if (!*st) {
            if (!said_waiting && f.mode != OUT_JSON && now - t0 > 2.0) {
                fprintf(stderr, "waiting for a worker to take job %s (see backupctl jobs)\n", jid);
                said_waiting = 1;
            }
        } else if (strcmp(st, "completed") == 0 || strcmp(st, "dead") == 0) {
            if (f.mode == OUT_BAR)
                bar(&f, &j, now);
            if (f.bar_drawn)
                printf("\n");
            if (f.mode == OUT_LINES)
                line(&f, &j, now);
            if (f.mode == OUT_JSON)
                print_json(&j, jid);
            else
                summary(&j);
            int rc = strcmp(st, "completed") == 0 ? 0 : 1;
            job_release(&j);
            return rc;
        } else {
            note_retry(&f, &j);
            if (f.mode == OUT_BAR)
                bar(&f, &j, now);
            else if (f.mode == OUT_LINES)
                line(&f, &j, now);
        }
        snprintf(f.last_status, sizeof(f.last_status), "%s", st);
        snprintf(f.last_stage, sizeof(f.last_stage), "%s", jstr(&j, "stage"));
        job_release(&j);
        if (o->timeout > 0 && now - t0 > o->timeout) {
            if (f.bar_drawn)
                printf("\n");
            fprintf(stderr,
                    "backupctl: job %s still %s after %.0f s; it goes on (follow it with "
                    "backupctl wait %s)\n",
                    jid, *f.last_status ? f.last_status : "unclaimed", o->timeout, jid);
            return 3;
        }
        usleep(POLL_US);
    }
}

/* ---- enqueue ---- */

/* XADD the fields (name, value pairs, NULL-terminated), then follow or print the job id. */
static int submit(const Opts *o, const char **fv) {
    redisContext *r = ctl_redis_open(o->cfg);
    if (r == NULL)
        return 1;
    const char *argv[40];
    char stream[256];
    int n = 0;
    argv[n++] = "XADD";
    argv[n++] = ctl_key(o->cfg, "jobs", stream, sizeof(stream));
    argv[n++] = "*";
    argv[n++] = "job_id";
    argv[n++] = o->job_id;
    argv[n++] = "trigger";
    argv[n++] = "manual";
    for (int i = 0; fv[i] && n < 38; i += 2) {
        argv[n++] = fv[i];
        argv[n++] = fv[i + 1];
    }
    redisReply *rep = redisCommandArgv(r, n, argv, NULL);
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "backupctl: cannot enqueue on %s: %s\n", stream,
                rep ? rep->str : r->errstr);
        if (rep)
            freeReplyObject(rep);
        redisFree(r);
        return 1;
    }
    freeReplyObject(rep);
    int wait = o->wait >= 0 ? o->wait : (o->json ? 0 : isatty(1));
    int rc = 0;
    if (!wait) {
        if (o->json)
            printf("{\"job_id\":\"%s\",\"status\":\"queued\"}\n", o->job_id);
        else
            printf("enqueued job %s (follow it with backupctl wait %s)\n", o->job_id, o->job_id);
    } else {
        if (!o->json && !isatty(1))
            printf("enqueued job %s\n", o->job_id);
        rc = follow(r, o, o->job_id);
    }
    redisFree(r);
    return rc;
}

static void default_job_id(Opts *o, const char *type) {
    if (!o->job_id[0])
        snprintf(o->job_id, sizeof(o->job_id), "ctl-%s-%lld-%d", type,
                 (long long)(ctl_now() * 1000), (int)getpid());
}

/* The user a backup id names: (backup|incremental|differential)-<uuid>-... */
static void user_of(const char *backup_id, char user[37]) {
    memcpy(user, strchr(backup_id, '-') + 1, 36);
    user[36] = 0;
}

static int valid_backup_arg(const char *s) {
    if (jobspec_valid_backup_id(s, strlen(s)))
        return 1;
    fprintf(stderr,
            "backupctl: '%s' is not a backup id (such as backup-<user uuid>-1732790000000; see "
            "backupctl list USER)\n",
            s);
    return 0;
}

/* The backup at key (its rows rebuilt from the manifests if they are missing). */
static int backup_at_key(const Config *cfg, const char *key, char *id, size_t idsz, char user[37]) {
    if (strncmp(key, "backups/", 8) != 0 || strlen(key) < 46 || key[44] != '/' ||
        !jobspec_valid_uuid(key + 8, 36) || strstr(key, "..")) {
        fprintf(stderr, "backupctl restore: '%s' is not a key under backups/USER_ID/\n", key);
        return -1;
    }
    memcpy(user, key + 8, 36);
    user[36] = 0;
    if (ctl_reindex(cfg, user, 1) != 0)
        return -1;
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return -1;
    const char *v[] = {key, user};
    PGresult *res = PQexecParams(pg,
                                 "SELECT id FROM backup_metadata WHERE s3_key = $1 AND user_id = "
                                 "$2::uuid AND status IN ('completed', 'expired')",
                                 2, NULL, v, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "backupctl restore: %s", PQerrorMessage(pg));
    else if (PQntuples(res) == 0)
        fprintf(stderr,
                "backupctl restore: no complete backup at %s (no manifest %s.manifest.json?)\n",
                key, key);
    else {
        snprintf(id, idsz, "%s", PQgetvalue(res, 0, 0));
        rc = 0;
    }
    PQclear(res);
    PQfinish(pg);
    return rc;
}

/* ---- list, stats ---- */

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *v) {
    PGresult *res = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "backupctl: %s", PQerrorMessage(pg));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Rows of res as a JSON array of objects (numbers and JSON columns as they are). */
static void print_rows_json(PGresult *res, const char *raw_cols) {
    Buf b = BUF_INIT;
    buf_puts(&b, "[");
    for (int i = 0; i < PQntuples(res); i++) {
        buf_puts(&b, i ? ",{" : "{");
        for (int c = 0; c < PQnfields(res); c++) {
            const char *name = PQfname(res, c), *v = PQgetvalue(res, i, c);
            char pat[80];
            snprintf(pat, sizeof(pat), " %s ", name);
            buf_printf(&b, "%s\"%s\":", c ? "," : "", name);
            if (PQgetisnull(res, i, c)) {
                buf_puts(&b, "null");
            } else if (strstr(raw_cols, pat)) {
                buf_puts(&b, v);
            } else {
                buf_puts(&b, "\"");
                buf_json_escape(&b, v, strlen(v));
                buf_puts(&b, "\"");
            }
        }
        buf_puts(&b, "}");
    }
    buf_puts(&b, "]\n");
    fputs(b.data, stdout);
    buf_free(&b);
}

static int cmd_list(const Config *cfg, const char *user, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    const char *v[] = {user};
    PGresult *res =
        query(pg,
              "SELECT id AS backup_id, type, status, size, (SELECT sum(value::bigint) FROM "
              "jsonb_each_text(coalesce(row_counts, '{}'))) AS rows, "
              "extract(epoch FROM now() - created_at)::bigint AS age_seconds, created_at, "
              "base_backup_id, verify_status, s3_key, error FROM backup_metadata "
              "WHERE user_id = $1::uuid AND status <> 'deleted' ORDER BY created_at, id",
              1, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    if (json) {
        print_rows_json(res, " size rows age_seconds ");
    } else if (PQntuples(res) == 0) {
        printf("no backups of %s (backupctl list %s --s3 reads S3 alone)\n", user, user);
    } else {
        printf("%-62s %-12s %-9s %10s %10s %8s  %-8s %s\n", "BACKUP", "TYPE", "STATUS", "SIZE",
               "ROWS", "AGE", "VERIFIED", "BASE");
        for (int i = 0; i < PQntuples(res); i++) {
            char size[32] = "-", age[24];
            if (!PQgetisnull(res, i, 3))
                ctl_fmt_bytes(strtoull(PQgetvalue(res, i, 3), NULL, 10), size, sizeof(size));
            ctl_fmt_duration(atof(PQgetvalue(res, i, 5)), age, sizeof(age));
            const char *base = PQgetvalue(res, i, 7), *ver = PQgetvalue(res, i, 8);
            printf("%-62s %-12s %-9s %10s %10s %8s  %-8s %s\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), size,
                   PQgetisnull(res, i, 4) ? "-" : PQgetvalue(res, i, 4), age, *ver ? ver : "-",
                   *base ? base : "-");
        }
    }
    PQclear(res);
    PQfinish(pg);
    return 0;
}

static int cmd_stats(const Config *cfg, const char *user, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    const char *v[] = {user};
    PGresult *res = query(
        pg,
        "SELECT coalesce(user_id::text, 'all') AS user_id, sum(total_backups)::bigint AS "
        "total_backups, sum(total_size_bytes)::bigint AS total_size_bytes, "
        "sum(successful_backups)::bigint AS successful_backups, sum(failed_backups)::bigint AS "
        "failed_backups, round(100.0 * sum(successful_backups) / nullif(sum(successful_backups) "
        "+ sum(failed_backups), 0), 1) AS success_rate, max(last_backup_at) AS last_backup_at, "
        "count(*) AS users FROM backup_statistics WHERE $1::uuid IS NULL OR user_id = $1::uuid "
        "GROUP BY GROUPING SETS ((user_id), ()) HAVING $1::uuid IS NOT NULL OR user_id IS NULL",
        1, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    int row = PQntuples(res) > 0 ? 0 : -1;
    if (user && row >= 0 && strcmp(PQgetvalue(res, 0, 0), "all") == 0)
        row = PQntuples(res) > 1 ? 1 : -1;
    if (json) {
        print_rows_json(res, " total_backups total_size_bytes successful_backups "
                             "failed_backups success_rate users ");
    } else if (row < 0 || strcmp(PQgetvalue(res, row, 1), "") == 0) {
        printf("no backups%s%s\n", user ? " of " : "", user ? user : "");
    } else {
        char size[32];
        ctl_fmt_bytes(strtoull(PQgetvalue(res, row, 2), NULL, 10), size, sizeof(size));
        if (!user)
            printf("users with backups:  %s\n", PQgetvalue(res, row, 7));
        else
            printf("user:                %s\n", user);
        printf("backups:             %s (%s completed, %s failed)\n", PQgetvalue(res, row, 1),
               PQgetvalue(res, row, 3), PQgetvalue(res, row, 4));
        printf("storage:             %s\n", size);
        printf("success rate:        %s%%\n",
               PQgetisnull(res, row, 5) ? "-" : PQgetvalue(res, row, 5));
        printf("last backup:         %s\n",
               PQgetisnull(res, row, 6) ? "never" : PQgetvalue(res, row, 6));
    }
    PQclear(res);
    PQfinish(pg);
    return 0;
}

/* ---- schedule ---- */

/*
 * One job id per user and period (sched-<YYYYMMDD>-<user> daily, sched-<IYYY>W<IW>-<user>
 * weekly): the queue runs a job id once, and users whose backup of the period exists are
 * skipped here, so running the schedule twice never doubles a backup.
 */
/* KEYS: claim, status hash, stream; ARGV: job id, user, mode. The claim (kept 8 days, longer
 * than a period) makes two schedule runs enqueue a period's job once, even before a worker
 * has taken it. 1 enqueued, 0 already. */
static const char schedule_lua[] =
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\n"
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 691200) then return 0 end\n"
    "redis.call('XADD', KEYS[3], '*', 'type', 'backup', 'job_id', ARGV[1], 'user_id', ARGV[2], "
    "'mode', ARGV[3], 'trigger', 'scheduled')\n"
    "return 1\n";

static int cmd_schedule(const Config *cfg, int dry_run, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    PGresult *res = query(
        pg,
        "WITH u AS (SELECT p.id, coalesce(s.backup_schedule, 'daily') AS schedule, "
        "  'sched-' || CASE coalesce(s.backup_schedule, 'daily') WHEN 'weekly' THEN "
        "  to_char(now() AT TIME ZONE 'UTC', 'IYYY\"W\"IW') ELSE "
        "  to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') END || '-' || p.id AS job_id "
        "  FROM profiles p LEFT JOIN user_settings s ON s.user_id = p.id) "
        "SELECT u.id::text, u.schedule, u.job_id, CASE WHEN u.schedule = 'weekly' OR NOT EXISTS "
        "  (SELECT 1 FROM backup_metadata f WHERE f.user_id = u.id AND f.type = 'full' AND "
        "  f.status IN ('pending', 'running', 'completed') AND f.created_at > now() - "
        "  interval '7 days') THEN 'full' ELSE 'incremental' END AS mode, "
        "  EXISTS (SELECT 1 FROM backup_metadata m WHERE m.job_id = u.job_id) AS done "
        "FROM u WHERE u.schedule <> 'off' ORDER BY u.id",
        0, NULL);
    PGresult *off =
        res ? query(pg, "SELECT count(*) FROM user_settings WHERE backup_schedule = 'off'", 0, NULL)
            : NULL;
    PQfinish(pg);
    if (res == NULL || off == NULL) {
        PQclear(res);
        return 1;
    }
    redisContext *r = dry_run ? NULL : ctl_redis_open(cfg);
    if (!dry_run && r == NULL) {
        PQclear(res);
        PQclear(off);
        return 1;
    }
    int full = 0, incr = 0, known = 0, rc = 0;
    char stream[256], hash[300], mark[300];
    ctl_key(cfg, "jobs", stream, sizeof(stream));
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        const char *user = PQgetvalue(res, i, 0), *jid = PQgetvalue(res, i, 2),
                   *mode = PQgetvalue(res, i, 3);
        if (strcmp(PQgetvalue(res, i, 4), "t") == 0) {
            known++;
            continue;
        }
        if (r) {
            snprintf(mark, sizeof(mark), "%s:sched:%s", cfg->redis_prefix, jid);
            snprintf(hash, sizeof(hash), "%s:job:%s", cfg->redis_prefix, jid);
            redisReply *x = ctl_redis(r, "EVAL %s 3 %s %s %s %s %s %s", schedule_lua, mark, hash,
                                      stream, jid, user, mode);
            if (x == NULL || x->type != REDIS_REPLY_INTEGER) {
                if (x)
                    freeReplyObject(x);
                rc = 1;
                break;
            }
            long long added = x->integer;
            freeReplyObject(x);
            if (!added) {
                known++;
                continue;
            }
        }
        if (strcmp(mode, "full") == 0)
            full++;
        else
            incr++;
        if (!json)
            printf("%s %s backup of %s (%s, job %s)\n", dry_run ? "would enqueue" : "enqueued",
                   mode, user, PQgetvalue(res, i, 1), jid);
    }
    if (rc == 0 && json)
        printf("{\"enqueued\":%d,\"full\":%d,\"incremental\":%d,\"already\":%d,\"off\":%s,"
               "\"dry_run\":%s}\n",
               full + incr, full, incr, known, PQgetvalue(off, 0, 0), dry_run ? "true" : "false");
    else if (rc == 0)
        printf("schedule: %s %d backup%s (%d full, %d incremental); %d already done or queued "
               "for this period; %s user%s off\n",
               dry_run ? "would enqueue" : "enqueued", full + incr, full + incr == 1 ? "" : "s",
               full, incr, known, PQgetvalue(off, 0, 0),
               strcmp(PQgetvalue(off, 0, 0), "1") == 0 ? "" : "s");
    PQclear(res);
    PQclear(off);
    if (r)
        redisFree(r);
    return rc;
}

/* ---- migrate ---- */

static int sql_file(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return d->d_name[0] >= '0' && d->d_name[0] <= '9' && n > 4 &&
           strcmp(d->d_name + n - 4, ".sql") == 0;
}

static const char *sql_dir(const char *arg) {
    if (arg)
        return arg;
    const char *env = getenv("BACKUP_SQL_DIR");
    if (env && *env)
        return env;
    if (access(BW_SQL_DIR, R_OK) == 0)
        return BW_SQL_DIR;
    return BW_SOURCE_SQL_DIR;
}

static int cmd_migrate(const Config *cfg, const char *dir_arg) {
    const char *dir = sql_dir(dir_arg);
    struct dirent **files = NULL;
    int n = scandir(dir, &files, sql_file, alphasort);
    if (n <= 0) {
        fprintf(stderr,
                "backupctl migrate: no NNN_*.sql files in %s (set --dir or "
                "BACKUP_SQL_DIR)\n",
                dir);
        free(files);
        return 1;
    }
    PGconn *pg = ctl_pg_open(cfg);
    int rc = pg ? 0 : 1;
    PGresult *res = NULL;
    if (pg) { /* two replicas migrating at once take turns */
        res = PQexec(pg, "SET client_min_messages = warning; "
                         "SELECT pg_advisory_lock(hashtext('backup-worker migrate'))");
        rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : 1;
        PQclear(res);
    }
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]->d_name);
        FILE *f = fopen(path, "r");
        Buf sql = BUF_INIT;
        char chunk[65536];
        size_t got;
        while (f && (got = fread(chunk, 1, sizeof(chunk), f)) > 0)
            buf_append(&sql, chunk, got);
        if (f == NULL || ferror(f)) {
            fprintf(stderr, "backupctl migrate: cannot read %s\n", path);
            rc = 1;
        } else {
            double t0 = ctl_now();
            /* one file, one transaction: a failing file changes nothing */
            Buf tx = BUF_INIT;
            buf_printf(&tx, "BEGIN;\n%s\n;COMMIT;", sql.data ? sql.data : "");
            res = PQexec(pg, tx.data);
            if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
                fprintf(stderr, "backupctl migrate: %s failed: %s", files[i]->d_name,
                        PQerrorMessage(pg));
                PQclear(PQexec(pg, "ROLLBACK"));
                rc = 1;
            } else {
                printf("applied %s (%.0f ms)\n", files[i]->d_name, (ctl_now() - t0) * 1000);
            }
            PQclear(res);
            buf_free(&tx);
        }
        if (f)
            fclose(f);
        buf_free(&sql);
    }
    for (int i = 0; i < n; i++)
        free(files[i]);
    free(files);
    if (pg)
        PQfinish(pg);
    if (rc == 0)
        printf("schema up to date (%d files from %s)\n", n, dir);
    return rc;
}

/* ---- command line ---- */

static const char *const commands[] = {"backup", "restore", "verify", "cleanup",  "wait",
                                       "status", "list",    "stats",  "schedule", "migrate"};

int ctl_jobs_has(const char *command) {
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(command, commands[i]) == 0)
            return 1;
    return 0;
}

static int usage(void) {
    fprintf(stderr,
            "Usage: backupctl backup USER [--incremental|--differential]\n"
            "       backupctl restore BACKUP_ID [--tables a,b] | restore --key S3_KEY\n"
            "       backupctl verify BACKUP_ID | verify --user USER\n"
            "       backupctl cleanup USER [--retention-days N] [--requested-by USER] | "
            "cleanup --all [--retention-days N]\n"
            "         job options: --wait | --no-wait (default: wait on a terminal), --json,\n"
            "                      --timeout SECONDS, --job-id ID\n"
            "       backupctl wait JOB_ID [--json] [--timeout SECONDS]\n"
            "       backupctl status JOB_ID\n"
            "       backupctl list USER [--s3] [--json]\n"
            "       backupctl stats [USER] [--json]\n"
            "       backupctl schedule [--dry-run] [--json]\n"
            "       backupctl migrate [--dir DIR]\n");
    return 2;
}

int ctl_jobs_main(const Config *cfg, const char *command, int argc, char **argv) {
    Opts o;
    memset(&o, 0, sizeof(o));
    o.cfg = cfg;
    o.wait = -1;
    const char *pos[4] = {0};
    int npos = 0, incremental = 0, differential = 0, all = 0, s3 = 0, dry_run = 0;
    const char *tables = NULL, *key = NULL, *user_opt = NULL, *days = NULL, *by = NULL, *dir = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
#define OPTARG(name, var)                                                                          \
    if (strcmp(a, name) == 0) {                                                                    \
        if (next == NULL) {                                                                        \
            fprintf(stderr, "backupctl %s: %s needs a value\n", command, name);                    \
            return 2;                                                                              \
        }                                                                                          \
        var = next;                                                                                \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        OPTARG("--tables", tables)
        OPTARG("--key", key)
        OPTARG("--user", user_opt)
        OPTARG("--retention-days", days)
        OPTARG("--requested-by", by)
        OPTARG("--dir", dir)
        if (strcmp(a, "--timeout") == 0 && next) {
            o.timeout = atof(next);
            i++;
            if (o.timeout <= 0)
                return usage();
            continue;
        }
        if (strcmp(a, "--job-id") == 0 && next) {
            if (strlen(next) > 128 || strspn(next, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
                                                   "tuvwxyz0123456789_.:-") != strlen(next)) {
                fprintf(stderr, "backupctl: --job-id: 1-128 of A-Za-z0-9_.:-\n");
                return 2;
            }
            snprintf(o.job_id, sizeof(o.job_id), "%s", next);
            i++;
            continue;
        }
        if (strcmp(a, "--wait") == 0)
            o.wait = 1;
        else if (strcmp(a, "--no-wait") == 0)
            o.wait = 0;
        else if (strcmp(a, "--json") == 0)
            o.json = 1;
        else if (strcmp(a, "--incremental") == 0)
            incremental = 1;
        else if (strcmp(a, "--differential") == 0)
            differential = 1;
        else if (strcmp(a, "--all") == 0)
            all = 1;
        else if (strcmp(a, "--s3") == 0)
            s3 = 1;
        else if (strcmp(a, "--dry-run") == 0)
            dry_run = 1;
        else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "backupctl %s: unknown option %s\n", command, a);
            return usage();
        } else if (npos < 4)
            pos[npos++] = a;
        else
            return usage();
    }
#undef OPTARG
    char user[37], by_user[37], id[200];
    if (strcmp(command, "backup") == 0) {
        if (npos != 1 || (incremental && differential))
            return usage();
        if (ctl_uuid_arg("user", pos[0], user))
            return 2;
        default_job_id(&o, "backup");
        const char *fv[] = {
            "type", "backup", "user_id",
            user,   "mode",   incremental ? "incremental" : differential ? "differential" : "full",
            NULL};
        return submit(&o, fv);
    }
    if (strcmp(command, "restore") == 0) {
        if ((npos == 1) == (key != NULL))
            return usage();
        if (key) {
            if (backup_at_key(cfg, key, id, sizeof(id), user) != 0)
                return 1;
        } else {
            if (!valid_backup_arg(pos[0]))
                return 2;
            snprintf(id, sizeof(id), "%s", pos[0]);
            user_of(id, user);
        }
        default_job_id(&o, "restore");
        const char *fv[] = {
            "type", "restore", "user_id", user, "backup_id", id, tables ? "tables" : NULL,
            tables, NULL};
        return submit(&o, fv);
    }
    if (strcmp(command, "verify") == 0) {
        if ((npos == 1) == (user_opt != NULL))
            return usage();
        default_job_id(&o, "verify");
        if (user_opt) {
            if (ctl_uuid_arg("user", user_opt, user))
                return 2;
            const char *fv[] = {"type", "verify", "user_id", user, NULL};
            return submit(&o, fv);
        }
        if (!valid_backup_arg(pos[0]))
            return 2;
        user_of(pos[0], user);
        const char *fv[] = {"type", "verify", "user_id", user, "backup_id", pos[0], NULL};
        return submit(&o, fv);
    }
    if (strcmp(command, "cleanup") == 0) {
        if ((npos == 1) == all || (all && by))
            return usage();
        if (days && (atoi(days) < 1 || atoi(days) > 36500 || !all_digits(days))) {
            fprintf(stderr, "backupctl cleanup: --retention-days: 1-36500 days\n");
            return 2;
        }
        if (!all && ctl_uuid_arg("user", pos[0], user))
            return 2;
        if (by && ctl_uuid_arg("--requested-by", by, by_user))
            return 2;
        default_job_id(&o, "cleanup");
        const char *fv[10];
        int n = 0;
        fv[n++] = "type";
        fv[n++] = "cleanup";
        if (all) {
            fv[n++] = "scope";
            fv[n++] = "all";
        } else {
            fv[n++] = "user_id";
            fv[n++] = user;
        }
        if (by) {
            fv[n++] = "requested_by";
            fv[n++] = by_user;
        }
        if (days) {
            fv[n++] = "retention_days";
            fv[n++] = days;
        }
        fv[n] = NULL;
        return submit(&o, fv);
    }
    if (strcmp(command, "wait") == 0 || strcmp(command, "status") == 0) {
        if (npos != 1)
            return usage();
        redisContext *r = ctl_redis_open(cfg);
        if (r == NULL)
            return 1;
        int rc;
        if (strcmp(command, "wait") == 0) {
            rc = follow(r, &o, pos[0]);
        } else {
            Job j = {0};
            rc = job_get(r, cfg, pos[0], &j) ? 1 : 0;
            if (rc == 0 && j.rep->elements == 0) {
                fprintf(stderr, "backupctl status: no job %s (not yet taken, or expired)\n",
                        pos[0]);
                rc = 1;
            } else if (rc == 0) {
                print_json(&j, pos[0]);
            }
            job_release(&j);
        }
        redisFree(r);
        return rc;
    }
    if (strcmp(command, "list") == 0) {
        if (npos != 1)
            return usage();
        if (ctl_uuid_arg("user", pos[0], user))
            return 2;
        return s3 ? ctl_list_s3(cfg, user, o.json) : cmd_list(cfg, user, o.json);
    }
    if (strcmp(command, "stats") == 0) {
        if (npos > 1)
            return usage();
        if (npos == 1 && ctl_uuid_arg("user", pos[0], user))
            return 2;
        return cmd_stats(cfg, npos ? user : NULL, o.json);
    }
    if (strcmp(command, "schedule") == 0)
        return npos ? usage() : cmd_schedule(cfg, dry_run, o.json);
    if (strcmp(command, "migrate") == 0)
        return npos ? usage() : cmd_migrate(cfg, dir);
    return usage();
}
