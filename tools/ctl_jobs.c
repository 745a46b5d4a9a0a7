/* ctl_jobs: backupctl's job commands (see ctl_jobs.h). */
#include "ctl_jobs.h"
#include "queue/jobstatus.h"

#include "ctl_admin.h"
#include "ctl_common.h"
#include "ctl_recover.h"
#include "jobs/jobspec.h"
#include "format/layout.h"
#include "proto_lua.h"
#include "base/textval.h"

#include <stddef.h>
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

/* The job's status hash: <prefix>:job:<job id> */
static const char *job_key(const Config *cfg, const char *jid, char *key, size_t keysz) {
    snprintf(key, keysz, "%s:job:%s", cfg->redis_prefix, jid);
    return key;
}

/* HGETALL of the job's hash; 0 fetched (empty reply if the hash does not exist yet), -1 error */
static int job_get(CtlRedis *r, const Config *cfg, const char *jid, Job *j) {
    char key[300];
    job_key(cfg, jid, key, sizeof(key));
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
        size_t vn = strlen(v);
        if (all_digits(v)) {
            buf_printf(&b, "\":%s", v);
        } else if (strcmp(k, JS_RESULT) == 0 && vn >= 2 && v[0] == '{' && v[vn - 1] == '}') {
            buf_printf(&b, "\":%s", v); /* the worker's JSON document, as it wrote it */
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
    unsigned long long rows = jnum(j, JS_ROWS), total = jnum(j, JS_ROWS_TOTAL),
                       bytes = jnum(j, JS_BYTES);
    int pct = (int)jnum(j, JS_PROGRESS);
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
    const char *stage = jstr(j, JS_STAGE);
    printf("\r\033[K%-9s [%s] %3d%%  %-14.14s %llu", jstr(j, JS_STATUS), fill, pct,
           *stage ? stage : "-", rows);
    if (total)
        printf("/%llu", total);
    printf(" rows  %s%s%s", bb, rate, eta);
    fflush(stdout);
    f->bar_drawn = 1;
}

static void line(Follow *f, const Job *j, double now) {
    const char *st = jstr(j, JS_STATUS), *stage = jstr(j, JS_STAGE);
    unsigned long long rows = jnum(j, JS_ROWS);
    int changed = strcmp(st, f->last_status) != 0 || strcmp(stage, f->last_stage) != 0;
    if (!changed && !(rows != f->last_rows && now - f->last_line >= 2.0))
        return;
    char ts[32], bb[32];
    stamp(ts, sizeof(ts));
    ctl_fmt_bytes(jnum(j, JS_BYTES), bb, sizeof(bb));
    printf("%s  %-9s %-14s %3llu%%  rows %llu", ts, st, *stage ? stage : "-", jnum(j, JS_PROGRESS),
           rows);
    if (jnum(j, JS_ROWS_TOTAL))
        printf("/%llu", jnum(j, JS_ROWS_TOTAL));
    printf("  %s\n", bb);
    fflush(stdout);
    f->last_line = now;
    f->last_rows = rows;
}

/* Say a retry once per attempt, on stderr (the bar stays on stdout). */
static void note_retry(Follow *f, const Job *j) {
    const char *err = jstr(j, JS_ERROR);
    if (strcmp(jstr(j, JS_STATUS), "retrying") != 0 ||
        (jnum(j, JS_ATTEMPTS) == f->last_attempts && strcmp(err, f->last_error) == 0))
        return;
    if (f->bar_drawn)
        printf("\n");
    f->bar_drawn = 0;
    if (f->mode != OUT_JSON && f->mode != OUT_QUIET)
        fprintf(stderr, "retrying after attempt %llu: %s\n", jnum(j, JS_ATTEMPTS), err);
    f->last_attempts = jnum(j, JS_ATTEMPTS);
    snprintf(f->last_error, sizeof(f->last_error), "%s", err);
}

static void summary(const Job *j) {
    const char *st = jstr(j, JS_STATUS), *bid = jstr(j, JS_BACKUP_ID), *note = jstr(j, JS_NOTE);
    double secs = (double)(jnum(j, "finished_at") - jnum(j, "started_at")) / 1000.0;
    char bb[32], d[24];
    ctl_fmt_bytes(jnum(j, JS_BYTES), bb, sizeof(bb));
    ctl_fmt_duration(secs, d, sizeof(d));
    if (strcmp(st, JS_COMPLETED) == 0) {
        printf("completed: %s%s%s, %llu rows, %s, in %s (%.1f s)%s%s\n", jstr(j, "type"),
               *bid ? " " : "", bid, jnum(j, JS_ROWS), bb, d, secs, *note ? "; " : "", note);
    } else {
        fprintf(stderr, "failed: %s%s%s after %llu attempt%s: %s\n", jstr(j, "type"),
                *bid ? " " : "", bid, jnum(j, JS_ATTEMPTS), jnum(j, JS_ATTEMPTS) == 1 ? "" : "s",
                jstr(j, JS_ERROR));
    }
}

/* 1 if the jobs stream still holds an entry with this job_id (added by XADD alone: no status
 * hash until a worker claims it); the newest 10,000 entries are looked at. */
static int in_stream(CtlRedis *r, const Config *cfg, const char *jid) {
    redisReply *rep = ctl_redis(r, "EVAL %s 0 %s %s",
                                "for _, e in ipairs(redis.call('XREVRANGE', ARGV[1] .. ':jobs', "
                                "'+', '-', 'COUNT', 10000)) do local f = e[2] for i = 1, #f, 2 do "
                                "if f[i] == 'job_id' and f[i + 1] == ARGV[2] then return 1 end "
                                "end end return 0",
                                cfg->redis_prefix, jid);
    int found = rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    if (rep)
        freeReplyObject(rep);
    return found;
}

static int follow(CtlRedis *r, const Opts *o, const char *jid) {
    Follow f;
    memset(&f, 0, sizeof(f));
    f.mode = o->json ? OUT_JSON : isatty(1) ? OUT_BAR : OUT_LINES;
    double t0 = ctl_now();
    int said_waiting = 0, known = 0;
    for (;;) {
        Job j = {0};
        if (job_get(r, o->cfg, jid, &j) != 0)
            return 1;
        double now = ctl_now();
        const char *st = jstr(&j, JS_STATUS);
        if (*st)
            known = 1;
        else if (!known && !(known = in_stream(r, o->cfg, jid))) {
            /* neither a status hash nor an entry: waiting would never end */
            fprintf(stderr, "backupctl wait: no job %s (never enqueued, or expired)\n", jid);
            job_release(&j);
            return 1;
        }
        if (!*st) {
            if (!said_waiting && f.mode != OUT_JSON && now - t0 > 2.0) {
                fprintf(stderr, "waiting for a worker to take job %s (see backupctl jobs)\n", jid);
                said_waiting = 1;
            }
        } else if (strcmp(st, JS_COMPLETED) == 0 || strcmp(st, JS_DEAD) == 0) {
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
            int rc = strcmp(st, JS_COMPLETED) == 0 ? 0 : 1;
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
        snprintf(f.last_stage, sizeof(f.last_stage), "%s", jstr(&j, JS_STAGE));
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

static const char *field_of(const char **fv, const char *name) {
    for (int i = 0; fv[i]; i += 2)
        if (strcmp(fv[i], name) == 0)
            return fv[i + 1];
    return "";
}

/* Enqueue the fields (name, value pairs, NULL-terminated) with proto/lua/enqueue.lua (the entry
 * and the status `queued`), then follow or print the job id. */
static int submit(const Opts *o, const char **fv) {
    CtlRedis *r = ctl_redis_open(o->cfg);
    if (r == NULL)
        return 1;
    const char *argv[48];
    char stream[256], hash[300], now[32], keep[32];
    int n = 0;
    snprintf(now, sizeof(now), "%lld", (long long)(ctl_now() * 1000));
    /* the status hash is kept as long as the workers keep it (JOB_RETENTION, default 7d) */
    long long keep_ms = 7LL * 86400000;
    const char *jr = getenv("JOB_RETENTION");
    if (jr && *jr && textval_duration_ms(jr, 60000, 3650 * 86400000LL, &keep_ms) != 0) {
        fprintf(stderr, "backupctl: JOB_RETENTION: '%.40s' is not a duration (7d, 12h)\n", jr);
        ctl_redis_close(r);
        return 1;
    }
    snprintf(keep, sizeof(keep), "%lld", keep_ms);
    argv[n++] = "EVAL";
    argv[n++] = lua_enqueue;
    argv[n++] = "2";
    argv[n++] = ctl_key(o->cfg, "jobs", stream, sizeof(stream));
    argv[n++] = job_key(o->cfg, o->job_id, hash, sizeof(hash));
    argv[n++] = field_of(fv, "type");
    argv[n++] = field_of(fv, "user_id");
    argv[n++] = now;
    argv[n++] = keep;
    argv[n++] = "job_id";
    argv[n++] = o->job_id;
    argv[n++] = "trigger";
    argv[n++] = "manual";
    for (int i = 0; fv[i] && n < 46; i += 2) {
        argv[n++] = fv[i];
        argv[n++] = fv[i + 1];
    }
    redisReply *rep = ctl_redis_argv(r, n, argv);
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "backupctl: cannot enqueue on %s: %s\n", stream,
                rep ? rep->str : ctl_redis_error(r));
        if (rep)
            freeReplyObject(rep);
        ctl_redis_close(r);
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
    ctl_redis_close(r);
    return rc;
}

static void default_job_id(Opts *o, const char *type) {
    if (!o->job_id[0])
        snprintf(o->job_id, sizeof(o->job_id), "ctl-%s-%lld-%d", type,
                 (long long)(ctl_now() * 1000), (int)getpid());
}

/* The user a backup id names (checked by valid_backup_arg first). */
static void user_of(const char *backup_id, char user[37]) {
    if (layout_user_of_backup_id(backup_id, user) != 0)
        user[0] = '\0';
}

static int valid_backup_arg(const char *s) {
    char user[37];
    if (jobspec_valid_backup_id(s, strlen(s)) && layout_user_of_backup_id(s, user) == 0)
        return 1;
    fprintf(stderr,
            "backupctl: '%s' is not a backup id (such as backup-<user uuid>-1732790000000; see "
            "backupctl list USER)\n",
            s);
    return 0;
}

/* The backup at key (its rows rebuilt from the manifests, the replica's with from_replica, if
 * they are missing). */
static int backup_at_key(const Config *cfg, const char *key, int from_replica, char *id,
                         size_t idsz, char user[37]) {
    if (layout_user_of_key(key, user) != 0 || strlen(key) < 46) {
        fprintf(stderr, "backupctl restore: '%s' is not a key under backups/USER_ID/\n", key);
        return -1;
    }
    if (ctl_reindex(cfg, user, 1, from_replica) != 0)
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

/* ---- command line ---- */

/* What the command line said: the job options (Opts) and every command's own. */
typedef struct {
    Opts o;
    const char *command;
    const char *pos[4];
    int npos, incremental, differential, all, s3, dry_run, replica, replace_owner_indexes;
    const char *tables, *key, *user_opt, *days, *by, *dir, *from, *since, *at;
    const char **fields; /* enqueue: the FIELD VALUE pairs after TYPE */
    int nfields;
} Args;

static int usage(void) {
    fprintf(
        stderr,
        "Usage: backupctl backup USER [--incremental|--differential]\n"
        "       backupctl restore BACKUP_ID [--tables a,b] [--from primary|replica] [--dry-run] |\n"
        "                 restore --key S3_KEY [--from primary|replica] |\n"
        "                 restore USER --at TIME|LSN [--tables a,b] [--dry-run]\n"
        "       backupctl verify BACKUP_ID | verify --user USER\n"
        "       backupctl cleanup USER [--retention-days N] [--requested-by USER] | "
        "cleanup --all [--retention-days N]\n"
        "       backupctl enqueue TYPE [FIELD VALUE]...   (any job type; see backupctl --help)\n"
        "         job options: --wait | --no-wait (default: wait on a terminal), --json,\n"
        "                      --timeout SECONDS, --job-id ID\n"
        "       backupctl wait JOB_ID [--json] [--timeout SECONDS]\n"
        "       backupctl status JOB_ID\n"
        "       backupctl list USER [--s3|--store [--replica]] [--json]\n"
        "       backupctl stats [USER] [--json]\n"
        "       backupctl schedule [--dry-run] [--json]\n"
        "       backupctl migrate [--dir DIR]\n");
    return 2;
}

/* 0 when parsed, else the exit code (2: a usage error, already reported) */
static int parse_args(Args *a, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        static const struct {
            const char *name;
            size_t off;
        } valued[] = {
            {"--tables", offsetof(Args, tables)},
            {"--from", offsetof(Args, from)},
            {"--key", offsetof(Args, key)},
            {"--user", offsetof(Args, user_opt)},
            {"--retention-days", offsetof(Args, days)},
            {"--requested-by", offsetof(Args, by)},
            {"--dir", offsetof(Args, dir)},
            {"--since", offsetof(Args, since)},
            {"--at", offsetof(Args, at)},
        };
        static const struct {
            const char *name;
            size_t off;
        } flags[] = {
            {"--incremental", offsetof(Args, incremental)},
            {"--differential", offsetof(Args, differential)},
            {"--all", offsetof(Args, all)},
            {"--s3", offsetof(Args, s3)},
            {"--store", offsetof(Args, s3)}, /* the same: the store's manifests, S3 or files */
            {"--replica", offsetof(Args, replica)},
            {"--dry-run", offsetof(Args, dry_run)},
            {"--replace-owner-indexes", offsetof(Args, replace_owner_indexes)},
            {"--json", offsetof(Args, o) + offsetof(Opts, json)},
        };
        int matched = 0;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]) && !matched; k++)
            if (strcmp(s, valued[k].name) == 0) {
                if (next == NULL) {
                    fprintf(stderr, "backupctl %s: %s needs a value\n", a->command, s);
                    return 2;
                }
                *(const char **)((char *)a + valued[k].off) = next;
                i++;
                matched = 1;
            }
        for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]) && !matched; k++)
            if (strcmp(s, flags[k].name) == 0) {
                *(int *)((char *)a + flags[k].off) = 1;
                matched = 1;
            }
        if (matched)
            continue;
        if (strcmp(s, "--timeout") == 0 && next) {
            a->o.timeout = atof(next);
            i++;
            if (a->o.timeout <= 0)
                return usage();
        } else if (strcmp(s, "--job-id") == 0 && next) {
            if (strlen(next) > 128 || strspn(next, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
                                                   "tuvwxyz0123456789_.:-") != strlen(next)) {
                fprintf(stderr, "backupctl: --job-id: 1-128 of A-Za-z0-9_.:-\n");
                return 2;
            }
            snprintf(a->o.job_id, sizeof(a->o.job_id), "%s", next);
            i++;
        } else if (strcmp(s, "--wait") == 0) {
            a->o.wait = 1;
        } else if (strcmp(s, "--no-wait") == 0) {
            a->o.wait = 0;
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "backupctl %s: unknown option %s\n", a->command, s);
            return usage();
        } else if (strcmp(a->command, "enqueue") == 0 && a->npos == 1) {
            /* after TYPE: FIELD VALUE pairs, kept in order */
            if (next == NULL) {
                fprintf(stderr, "backupctl enqueue: field %s needs a value\n", s);
                return 2;
            }
            if (a->fields == NULL)
                a->fields = xcalloc((size_t)argc + 1, sizeof(char *));
            a->fields[a->nfields++] = s;
            a->fields[a->nfields++] = next;
            i++;
        } else if (a->npos < 4) {
            a->pos[a->npos++] = s;
        } else {
            return usage();
        }
    }
    return 0;
}

static int cmd_backup(Args *a) {
    char user[37];
    if (a->npos != 1 || (a->incremental && a->differential))
        return usage();
    if (ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    default_job_id(&a->o, "backup");
    const char *mode = a->incremental ? "incremental" : a->differential ? "differential" : "full";
    const char *fv[] = {"type", "backup", "user_id", user, "mode", mode, NULL};
    return submit(&a->o, fv);
}

/* backupctl restore USER --at TIME: the user's rows as they were at that instant (proto/sql/022).
 */
static int restore_at(Args *a) {
    char user[37];
    if (a->npos != 1 || a->key || a->from)
        return usage();
    if (ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    if (strlen(a->at) >= sizeof(((JobSpec *)0)->at) || !jobspec_at_kind(a->at, strlen(a->at))) {
        fprintf(stderr,
                "backupctl restore: --at '%.60s': a time with its offset "
                "(2026-12-07T09:14:00+01:00, or ...Z) or an LSN (16/B374D848)\n",
                a->at);
        return 2;
    }
    default_job_id(&a->o, "restore");
    const char *fv[11] = {"type", "restore", "user_id", user, "at", a->at};
    int n = 6;
    if (a->dry_run) {
        fv[n++] = "dry_run";
        fv[n++] = "true";
    }
    if (a->tables) {
        fv[n++] = "tables";
        fv[n++] = a->tables;
    }
    fv[n] = NULL;
    return submit(&a->o, fv);
}

static int cmd_restore(Args *a) {
    char user[37], id[200];
    if (a->at)
        return restore_at(a);
    if ((a->npos == 1) == (a->key != NULL))
        return usage();
    const char *from = a->from;
    if (from && strcmp(from, "primary") != 0 && strcmp(from, "replica") != 0) {
        fprintf(stderr, "backupctl restore: --from: primary or replica\n");
        return 2;
    }
    if (from && strcmp(from, "replica") == 0 && a->o.cfg->s3_replica_bucket == NULL) {
        fprintf(stderr, "backupctl restore: --from replica: no replica is configured "
                        "(S3_REPLICA_BUCKET)\n");
        return 2;
    }
    int from_replica = from && strcmp(from, "replica") == 0;
    if (a->key) {
        if (backup_at_key(a->o.cfg, a->key, from_replica, id, sizeof(id), user) != 0)
            return 1;
    } else {
        if (!valid_backup_arg(a->pos[0]))
            return 2;
        snprintf(id, sizeof(id), "%s", a->pos[0]);
        user_of(id, user);
    }
    default_job_id(&a->o, "restore");
    const char *fv[11] = {"type", "restore", "user_id", user, "backup_id", id};
    int n = 6;
    if (a->dry_run) { /* a preview: the counts of what would change, nothing written */
        fv[n++] = "dry_run";
        fv[n++] = "true";
    }
    if (from) { /* primary: that copy alone, no fallback */
        fv[n++] = "from";
        fv[n++] = from;
    }
    if (a->tables) {
        fv[n++] = "tables";
        fv[n++] = a->tables;
    }
    fv[n] = NULL;
    return submit(&a->o, fv);
}

static int cmd_verify(Args *a) {
    char user[37];
    if ((a->npos == 1) == (a->user_opt != NULL))
        return usage();
    default_job_id(&a->o, "verify");
    if (a->user_opt) {
        if (ctl_uuid_arg("user", a->user_opt, user))
            return 2;
        const char *fv[] = {"type", "verify", "user_id", user, NULL};
        return submit(&a->o, fv);
    }
    if (!valid_backup_arg(a->pos[0]))
        return 2;
    user_of(a->pos[0], user);
    const char *fv[] = {"type", "verify", "user_id", user, "backup_id", a->pos[0], NULL};
    return submit(&a->o, fv);
}

static int cmd_cleanup(Args *a) {
    char user[37], by_user[37];
    const char *days = a->days;
    if ((a->npos == 1) == a->all || (a->all && a->by))
        return usage();
    if (days && (atoi(days) < 1 || atoi(days) > 36500 || !all_digits(days))) {
        fprintf(stderr, "backupctl cleanup: --retention-days: 1-36500 days\n");
        return 2;
    }
    if (!a->all && ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    if (a->by && ctl_uuid_arg("--requested-by", a->by, by_user))
        return 2;
    default_job_id(&a->o, "cleanup");
    const char *fv[10];
    int n = 0;
    fv[n++] = "type";
    fv[n++] = "cleanup";
    fv[n++] = a->all ? "scope" : "user_id";
    fv[n++] = a->all ? "all" : user;
    if (a->by) {
        fv[n++] = "requested_by";
        fv[n++] = by_user;
    }
    if (days) {
        fv[n++] = "retention_days";
        fv[n++] = days;
    }
    fv[n] = NULL;
    return submit(&a->o, fv);
}

/* enqueue TYPE FIELD VALUE...: any registered job type, checked here by the worker's own
 * decoder (jobspec.c) so a bad entry is refused before it reaches the queue */
static int cmd_enqueue(Args *a) {
    if (a->npos != 1)
        return usage();
    size_t n = (size_t)a->nfields / 2 + 1;
    JobField *f = xcalloc(n, sizeof(JobField));
    const char **fv = xcalloc((size_t)a->nfields + 3, sizeof(char *));
    f[0] = (JobField){"type", 4, a->pos[0], strlen(a->pos[0])};
    fv[0] = "type";
    fv[1] = a->pos[0];
    for (int i = 0; i < a->nfields; i += 2) {
        f[i / 2 + 1] = (JobField){a->fields[i], strlen(a->fields[i]), a->fields[i + 1],
                                  strlen(a->fields[i + 1])};
        fv[i + 2] = a->fields[i];
        fv[i + 3] = a->fields[i + 1];
    }
    JobSpec spec;
    Err err;
    err_clear(&err);
    int rc;
    if (jobspec_decode(&spec, f, n, "ctl", 0, &err) != 0) {
        fprintf(stderr, "backupctl enqueue: %s\n", err.msg);
        rc = 2;
    } else {
        default_job_id(&a->o, spec.type);
        rc = submit(&a->o, fv);
    }
    free(f);
    free(fv);
    return rc;
}

static int cmd_wait_status(Args *a) {
    if (a->npos != 1)
        return usage();
    CtlRedis *r = ctl_redis_open(a->o.cfg);
    if (r == NULL)
        return 1;
    int rc;
    if (strcmp(a->command, "wait") == 0) {
        rc = follow(r, &a->o, a->pos[0]);
    } else {
        Job j = {0};
        rc = job_get(r, a->o.cfg, a->pos[0], &j) ? 1 : 0;
        if (rc == 0 && j.rep->elements == 0) {
            fprintf(stderr, "backupctl status: no job %s (not yet taken, or expired)\n", a->pos[0]);
            rc = 1;
        } else if (rc == 0) {
            print_json(&j, a->pos[0]);
        }
        job_release(&j);
    }
    ctl_redis_close(r);
    return rc;
}

static int cmd_list(Args *a) {
    char user[37];
    if (a->npos != 1)
        return usage();
    if (ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    if (a->replica && !a->s3) {
        fprintf(stderr, "backupctl list: --replica reads the replica's manifests: with --s3\n");
        return 2;
    }
    return a->s3 ? ctl_list_s3(a->o.cfg, user, a->o.json, a->replica)
                 : ctl_list(a->o.cfg, user, a->o.json);
}

static int cmd_stats(Args *a) {
    char user[37];
    if (a->npos > 1)
        return usage();
    if (a->npos == 1 && ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    return ctl_stats(a->o.cfg, a->npos ? user : NULL, a->o.json);
}

static int cmd_schedule(Args *a) {
    return a->npos ? usage() : ctl_schedule(a->o.cfg, a->dry_run, a->o.json);
}

static int cmd_migrate(Args *a) {
    return a->npos ? usage() : ctl_migrate(a->o.cfg, a->dir);
}

static int cmd_timeline(Args *a) {
    char user[37];
    if (a->npos != 1)
        return usage();
    if (ctl_uuid_arg("user", a->pos[0], user))
        return 2;
    return ctl_timeline(a->o.cfg, user, a->since, a->o.json);
}

static int cmd_tracking(Args *a) {
    if (a->npos > 1 ||
        (a->npos == 1 && strcmp(a->pos[0], "wal") != 0 && strcmp(a->pos[0], "triggers") != 0) ||
        (a->replace_owner_indexes && (a->npos != 1 || strcmp(a->pos[0], "wal") != 0)))
        return usage();
    return ctl_tracking(a->o.cfg, a->npos ? a->pos[0] : NULL, a->replace_owner_indexes, a->o.json);
}

static const struct {
    const char *name;
    int (*run)(Args *a);
} commands[] = {
    {"tracking", cmd_tracking}, {"timeline", cmd_timeline}, {"backup", cmd_backup},
    {"restore", cmd_restore},   {"verify", cmd_verify},     {"cleanup", cmd_cleanup},
    {"enqueue", cmd_enqueue},   {"wait", cmd_wait_status},  {"status", cmd_wait_status},
    {"list", cmd_list},         {"stats", cmd_stats},       {"schedule", cmd_schedule},
    {"migrate", cmd_migrate},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

int ctl_jobs_has(const char *command) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(command, commands[i].name) == 0)
            return 1;
    return 0;
}

int ctl_jobs_main(const Config *cfg, const char *command, int argc, char **argv) {
    Args a;
    memset(&a, 0, sizeof(a));
    a.o.cfg = cfg;
    a.o.wait = -1;
    a.command = command;
    int rc = parse_args(&a, argc, argv);
    for (size_t i = 0; rc == 0 && i < NCOMMANDS; i++)
        if (strcmp(command, commands[i].name) == 0) {
            rc = commands[i].run(&a);
            free(a.fields);
            return rc;
        }
    free(a.fields);
    return rc ? rc : usage();
}
