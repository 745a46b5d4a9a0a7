/*
 * ctl_admin: backupctl's database-side commands (see ctl_admin.h): list,
 * stats, schedule, migrate. Plain synchronous libpq; schedule also enqueues
 * through Redis with one Lua script per job.
 */
#include "ctl_admin.h"

#include "ctl_common.h"
#include "format/layout.h"
#include "version.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int ctl_list(const Config *cfg, const char *user, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    const char *v[] = {user};
    PGresult *res =
        query(pg,
              "SELECT id AS backup_id, type, status, size, (SELECT sum(value::bigint) FROM "
              "jsonb_each_text(coalesce(row_counts, '{}'))) AS rows, "
              "extract(epoch FROM now() - created_at)::bigint AS age_seconds, created_at, "
              "base_backup_id, verify_status, s3_key, error, CASE recorded_by WHEN 'worker' THEN "
              "'true' ELSE 'false' END AS worker_verified, " BW_SQL_CODECS(
                  "m") " AS codecs, key_id, replica_status "
                       "FROM backup_metadata m "
                       "WHERE user_id = $1::uuid AND status <> 'deleted' ORDER BY created_at, id",
              1, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    if (json) {
        print_rows_json(res, " size rows age_seconds worker_verified ");
    } else if (PQntuples(res) == 0) {
        printf("no backups of %s (backupctl list %s --s3 reads S3 alone)\n", user, user);
    } else {
        printf("%-62s %-12s %-9s %10s %10s %8s  %-10s %-16s %-8s %-9s %s\n", "BACKUP", "TYPE",
               "STATUS", "SIZE", "ROWS", "AGE", "VERIFIED", "CODECS", "KEY", "REPLICA", "BASE");
        for (int i = 0; i < PQntuples(res); i++) {
            char size[32] = "-", age[24];
            if (!PQgetisnull(res, i, 3))
                ctl_fmt_bytes(strtoull(PQgetvalue(res, i, 3), NULL, 10), size, sizeof(size));
            ctl_fmt_duration(atof(PQgetvalue(res, i, 5)), age, sizeof(age));
            const char *base = PQgetvalue(res, i, 7), *ver = PQgetvalue(res, i, 8);
            /* a row rebuilt from a manifest (reindex) holds a digest the worker never computed */
            if (strcmp(PQgetvalue(res, i, 11), "false") == 0 && strcmp(ver, "ok") != 0)
                ver = "unverified";
            const char *codecs = PQgetvalue(res, i, 12), *key = PQgetvalue(res, i, 13);
            const char *replica = PQgetvalue(res, i, 14);
            printf("%-62s %-12s %-9s %10s %10s %8s  %-10s %-16s %-8s %-9s %s\n",
                   PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), size,
                   PQgetisnull(res, i, 4) ? "-" : PQgetvalue(res, i, 4), age, *ver ? ver : "-",
                   *codecs ? codecs : "none", *key ? key : "-", *replica ? replica : "-",
                   *base ? base : "-");
        }
    }
    PQclear(res);
    PQfinish(pg);
    return 0;
}

/* The user's transactions from the change segments (BACKUP_TRACKING=wal), oldest first, and the
 * capture's gaps among them: the restore points a person chooses from. Segments recorded before
 * 021 carry no per-transaction summary: one line for the whole segment. */
int ctl_timeline(const Config *cfg, const char *user, const char *since, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    const char *v[] = {user, since ? since : ""};
    PGresult *res = query(
        pg,
        "WITH since AS (SELECT coalesce(nullif($2, '')::timestamptz, '-infinity') AS t) "
        "SELECT kind, time, lsn, xid, transactions, counts, reason FROM ("
        " SELECT 'commit' AS kind, coalesce(t->>'time', to_char(s.last_commit AT TIME ZONE 'UTC',"
        "  'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS time,"
        "  coalesce(t->>'lsn', s.end_lsn::text) AS lsn, (t->>'xid')::bigint AS xid,"
        "  CASE WHEN t IS NULL THEN cardinality(s.xids) ELSE 1 END AS transactions,"
        "  coalesce(t->'counts', s.counts) AS counts, NULL AS reason"
        " FROM change_segments s LEFT JOIN LATERAL jsonb_array_elements(s.txns) t ON true"
        " WHERE s.user_id = $1::uuid AND s.last_commit >= (SELECT t FROM since)"
        " UNION ALL"
        " SELECT 'gap', to_char(detected_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        "  coalesce(last_lsn, '0/0')::text, NULL, 0, NULL, reason"
        " FROM capture_gaps WHERE detected_at >= (SELECT t FROM since)"
        ") x WHERE EXISTS (SELECT 1 FROM change_segments WHERE user_id = $1::uuid)"
        " ORDER BY time, lsn::pg_lsn",
        2, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    if (json) {
        print_rows_json(res, " xid transactions counts ");
    } else if (PQntuples(res) == 0) {
        printf("no changes of %s captured%s%s (BACKUP_TRACKING=wal records them: deploy/README.md, "
               "\"Change capture\")\n",
               user, since ? " since " : "", since ? since : "");
    } else {
        printf("%-27s %-14s %-10s %s\n", "COMMIT TIME (UTC)", "LSN", "XID", "CHANGES");
        for (int i = 0; i < PQntuples(res); i++) {
            if (strcmp(PQgetvalue(res, i, 0), "gap") == 0) {
                printf("%-27s %-14s %-10s gap: %s (no restore point inside it)\n",
                       PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), "-", PQgetvalue(res, i, 6));
                continue;
            }
            char xid[24];
            if (PQgetisnull(res, i, 3))
                snprintf(xid, sizeof(xid), "%s txns", PQgetvalue(res, i, 4));
            else
                snprintf(xid, sizeof(xid), "%s", PQgetvalue(res, i, 3));
            /* {"orders":{"i":1,"u":0,"d":0,"t":0}} as "orders +1 ~0 -0" */
            const char *c = PQgetvalue(res, i, 5);
            Buf line = BUF_INIT;
            for (const char *p = strchr(c, '"'); p; p = strchr(p, '"')) {
                const char *e = strchr(p + 1, '"');
                if (e == NULL)
                    break;
                char table[64];
                snprintf(table, sizeof(table), "%.*s", (int)(e - p - 1), p + 1);
                const char *close = strchr(e, '}');
                if (close == NULL)
                    break;
                char obj[160];
                snprintf(obj, sizeof(obj), "%.*s", (int)(close - e), e);
                int n[5] = {0};
                const char *keys[] = {"\"i\":", "\"u\":", "\"d\":", "\"t\":", "\"w\":"};
                for (int k = 0; k < 5; k++) {
                    const char *q = strstr(obj, keys[k]);
                    n[k] = q ? atoi(q + 4) : 0;
                }
                buf_printf(&line, "%s%s", line.len ? "; " : "", table);
                if (n[0])
                    buf_printf(&line, " +%d", n[0]);
                if (n[1])
                    buf_printf(&line, " ~%d", n[1]);
                if (n[2] > n[4])
                    buf_printf(&line, " -%d", n[2] - n[4]);
                if (n[4]) /* a "where" delete: every row of a parent that moved away */
                    buf_puts(&line, " (those of the moved order)");
                if (n[3])
                    buf_puts(&line, " truncated");
                p = close + 1;
            }
            printf("%-27s %-14s %-10s %s\n", PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), xid,
                   line.data ? line.data : "");
            buf_free(&line);
        }
    }
    PQclear(res);
    PQfinish(pg);
    return 0;
}

int ctl_stats(const Config *cfg, const char *user, int json) {
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

/* ---- tracking: triggers or change capture from the WAL ---- */

static const char *capture_slot(void) {
    const char *s = getenv("CAPTURE_SLOT");
    return s && *s ? s : "backup_capture";
}

int ctl_tracking(const Config *cfg, const char *mode, int replace_owner_indexes, int json) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    int rc = 0;
    if (mode) {
        const char *v[] = {mode, capture_slot()};
        PGresult *res = query(pg, "SELECT backup_tracking_switch($1, $2)", 2, v);
        if (res == NULL) {
            PQfinish(pg);
            return 1;
        }
        printf("%s\n", PQgetvalue(res, 0, 0));
        int already = strncmp(PQgetvalue(res, 0, 0), "already", 7) == 0;
        PQclear(res);
        if (already && strcmp(mode, "wal") == 0) {
            /* a table added to backup_scope since: into the publication, with its identity */
            res = query(pg, "SELECT backup_capture_setup()", 0, NULL);
            if (res == NULL) {
                PQfinish(pg);
                return 1;
            }
            printf("publication backup_capture and replica identities up to date (%s tables)\n",
                   PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        if (replace_owner_indexes) { /* the identity index serves what they served */
            res = query(pg, "SELECT array_to_string(backup_capture_replace_owner_indexes(), ', ')",
                        0, NULL);
            if (res == NULL) {
                PQfinish(pg);
                return 1;
            }
            printf("owner indexes replaced by the capture's identity indexes: %s\n",
                   PQgetvalue(res, 0, 0)[0] ? PQgetvalue(res, 0, 0) : "none");
            PQclear(res);
        }
        if (strcmp(mode, "wal") == 0) {
            res = query(pg,
                        "SELECT current_setting('wal_level') = 'logical', (SELECT rolreplication "
                        "OR rolsuper FROM pg_roles WHERE rolname = current_user)",
                        0, NULL);
            if (res && strcmp(PQgetvalue(res, 0, 0), "t") != 0)
                printf("warning: wal_level is not logical: the workers refuse to start with "
                       "BACKUP_TRACKING=wal until it is (deploy/README.md)\n");
            if (res && strcmp(PQgetvalue(res, 0, 1), "t") != 0)
                printf("warning: this role lacks REPLICATION: the workers need it for "
                       "BACKUP_TRACKING=wal\n");
            PQclear(res);
            printf("set BACKUP_TRACKING=wal on every worker; every user's next backup is full\n");
        } else {
            printf("set BACKUP_TRACKING=triggers on every worker; every user's next backup is "
                   "full\n");
        }
        PQfinish(pg);
        return 0;
    }
    const char *v[] = {capture_slot()};
    PGresult *res = query(
        pg,
        "SELECT backup_tracking_mode() AS mode, "
        "(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1) AS slot, "
        "(SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1) AS "
        "wal_status, (SELECT active FROM pg_replication_slots WHERE slot_name = $1) AS active, "
        "(SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = "
        "$1)::bigint AS retained_wal_bytes, "
        "(SELECT epoch FROM capture_state) AS epoch, (SELECT leader FROM capture_state) AS "
        "leader, (SELECT confirmed_lsn::text FROM capture_state) AS confirmed_lsn, "
        "(SELECT count(*) FROM change_segments) AS segments, "
        "(SELECT max(last_commit) FROM change_segments) AS last_commit, "
        "(SELECT count(*) FROM capture_gaps) AS gaps, "
        "(SELECT reason || ' (' || detected_at || ')' FROM capture_gaps ORDER BY id DESC "
        "LIMIT 1) AS last_gap",
        1, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    if (json) {
        print_rows_json(res, " slot epoch segments gaps retained_wal_bytes ");
    } else {
        for (int f = 0; f < PQnfields(res); f++)
            printf("%-20s %s\n", PQfname(res, f),
                   PQgetisnull(res, 0, f) ? "-" : PQgetvalue(res, 0, f));
    }
    PQclear(res);
    PQfinish(pg);
    return rc;
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

int ctl_schedule(const Config *cfg, int dry_run, int json) {
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
    CtlRedis *r = dry_run ? NULL : ctl_redis_open(cfg);
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
        ctl_redis_close(r);
    return rc;
}

/* ---- migrate ---- */

/* The versions applied, one row per file (the runners record them: tools/devenv migrate too). */
#define MIGRATIONS_TABLE_SQL                                                                       \
    "CREATE TABLE IF NOT EXISTS backup_schema_migrations (version text PRIMARY KEY, "              \
    "applied_at timestamptz NOT NULL DEFAULT now()); "                                             \
    "ALTER TABLE backup_schema_migrations ENABLE ROW LEVEL SECURITY"

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

int ctl_migrate(const Config *cfg, const char *dir_arg) {
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
        res = PQexec(
            pg,
            "SET client_min_messages = warning; "
            "SELECT pg_advisory_lock(hashtext('backup-worker migrate')); " MIGRATIONS_TABLE_SQL);
        rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : 1;
        if (rc)
            fprintf(stderr, "backupctl migrate: %s", PQerrorMessage(pg));
        PQclear(res);
    }
    int skipped = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        /* applied once: re-running a migration re-created the tracking triggers, and a restore
         * trusts tracking only when its triggers are older than the backup (issue 29) */
        const char *v[] = {files[i]->d_name};
        res = PQexecParams(pg, "SELECT 1 FROM backup_schema_migrations WHERE version = $1", 1, NULL,
                           v, NULL, NULL, 0);
        int done = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        PQclear(res);
        if (done) {
            skipped++;
            continue;
        }
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
            char *name = PQescapeLiteral(pg, files[i]->d_name, strlen(files[i]->d_name));
            buf_printf(&tx,
                       "BEGIN;\n%s\n;INSERT INTO backup_schema_migrations (version) VALUES (%s);"
                       "COMMIT;",
                       sql.data ? sql.data : "", name ? name : "NULL");
            PQfreemem(name);
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
        printf("schema up to date (%d files from %s, %d applied before)\n", n, dir, skipped);
    return rc;
}

int ctl_replicate_missing(const Config *cfg, const char *user, int dry_run) {
    if (cfg->s3_replica_bucket == NULL) {
        fprintf(stderr, "backupctl replicate: no replica is configured (S3_REPLICA_BUCKET)\n");
        return 2;
    }
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return 1;
    /* every backup with an object whose copy is not known to be complete */
    const char *v[] = {user};
    PGresult *res;
    res = query(pg,
                "SELECT id FROM backup_metadata WHERE status = 'completed' "
                "AND replica_status IS DISTINCT FROM 'completed' "
                "AND ($1::uuid IS NULL OR user_id = $1::uuid) ORDER BY completed_at, id",
                1, v);
    if (res == NULL) {
        PQfinish(pg);
        return 1;
    }
    int n = PQntuples(res), rc = 0;
    CtlRedis *r = dry_run || n == 0 ? NULL : ctl_redis_open(cfg);
    if (!dry_run && n > 0 && r == NULL)
        rc = 1;
    char jobs[256];
    ctl_key(cfg, "jobs", jobs, sizeof(jobs));
    long long ms = (long long)(ctl_now() * 1000);
    for (int i = 0; rc == 0 && i < n; i++) {
        const char *id = PQgetvalue(res, i, 0);
        if (dry_run) {
            printf("%s: would be copied to the replica\n", id);
            continue;
        }
        char jid[200];
        snprintf(jid, sizeof(jid), "replicate-%s-%lld", id, ms); /* a fresh id: earlier runs may
                                                                   have given up under theirs */
        redisReply *x = ctl_redis(
            r, "XADD %s * job_id %s type replicate backup_id %s trigger manual", jobs, jid, id);
        if (x == NULL) {
            rc = 1;
            break;
        }
        freeReplyObject(x);
        const char *u[] = {id};
        PGresult *up = PQexecParams(pg,
                                    "UPDATE backup_metadata SET replica_status = 'pending' "
                                    "WHERE id = $1 AND replica_status IS DISTINCT FROM "
                                    "'completed'",
                                    1, NULL, u, NULL, NULL, 0);
        PQclear(up);
    }
    if (rc == 0)
        printf("%s %d cop%s to the replica%s%s\n", dry_run ? "would enqueue" : "enqueued", n,
               n == 1 ? "y" : "ies", user ? " for " : "", user ? user : "");
    if (r)
        ctl_redis_close(r);
    PQclear(res);
    PQfinish(pg);
    return rc;
}
