/*
 * rowjson_cmp: for each user given, each table of the backup scope and each time zone, read the
 * user's rows twice in one snapshot, as PostgreSQL's row_to_json writes them and as COPY text
 * written into JSON by the worker's code (scope_row_json), and compare them byte for byte.
 *
 *   rowjson_cmp USER... (DATABASE_URL from the environment)
 *
 * Prints one line per table and zone; on the first difference, both rows and exit 1.
 */
#include "scope/scope.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* zones with offsets of whole hours, half hours, negative ones, and seconds (LMT of old dates) */
static const char *const ZONES[] = {"UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam",
                                    "Pacific/Chatham"};

static int ok(PGconn *pg, PGresult *res, ExecStatusType want, const char *what) {
    if (PQresultStatus(res) == want)
        return 1;
    fprintf(stderr, "rowjson_cmp: %s: %s", what, PQerrorMessage(pg));
    return 0;
}

static void exec_ok(PGconn *pg, const char *sql, int n, const char *const *v) {
    PGresult *res = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && !ok(pg, res, PGRES_TUPLES_OK, sql))
        exit(2);
    PQclear(res);
}

/* Every line of a COPY TO STDOUT, each ending in "\n". */
static char **copy_lines(PGconn *pg, const char *sql, int *n) {
    PGresult *res = PQexec(pg, sql);
    if (!ok(pg, res, PGRES_COPY_OUT, sql))
        exit(2);
    PQclear(res);
    int cap = 64;
    char **v = malloc((size_t)cap * sizeof(char *));
    *n = 0;
    char *row;
    int len;
    while ((len = PQgetCopyData(pg, &row, 0)) > 0) {
        if (*n == cap)
            v = realloc(v, (size_t)(cap *= 2) * sizeof(char *));
        v[(*n)++] = row;
    }
    res = PQgetResult(pg);
    if (!ok(pg, res, PGRES_COMMAND_OK, sql))
        exit(2);
    PQclear(res);
    return v;
}

static int compare(PGconn *pg, const Scope *s, int t, const char *user, const char *zone) {
    Buf sql = BUF_INIT, json = BUF_INIT;
    int nw, np, bad = 0;
    scope_copy_json_sql(s, t, 0, &sql);
    char **want = copy_lines(pg, sql.data, &nw);
    buf_reset(&sql);
    scope_copy_sql(s, t, 0, &sql);
    char **got = copy_lines(pg, sql.data, &np);
    PgJsonRow *w = scope_row_json(s, t);
    if (nw != np) {
        fprintf(stderr, "%s %s %s: %d rows by row_to_json, %d by COPY\n", scope_table(s, t), user,
                zone, nw, np);
        bad = 1;
    }
    for (int i = 0; i < nw && i < np && !bad; i++) {
        Err e;
        buf_reset(&json);
        if (pgjson_row_write(w, got[i], strlen(got[i]), &json, &e) != 0) {
            fprintf(stderr, "%s row %d: %s\n  COPY: %s", scope_table(s, t), i, e.msg, got[i]);
            bad = 1;
            break;
        }
        buf_append(&json, "\n", 1);
        if (strcmp(json.data, want[i]) != 0) {
            fprintf(stderr, "%s (%s, %s) row %d differs:\n  row_to_json: %s  worker:      %s",
                    scope_table(s, t), user, zone, i, want[i], json.data);
            bad = 1;
        }
    }
    if (!bad)
        printf("%-14s %s %-18s %6d rows equal\n", scope_table(s, t), user, zone, nw);
    for (int i = 0; i < nw; i++)
        PQfreemem(want[i]);
    for (int i = 0; i < np; i++)
        PQfreemem(got[i]);
    free(want);
    free(got);
    pgjson_row_free(w);
    buf_free(&sql);
    buf_free(&json);
    return bad;
}

int main(int argc, char **argv) {
    const char *url = getenv("DATABASE_URL");
    if (argc < 2 || url == NULL) {
        fprintf(stderr, "usage: DATABASE_URL=... rowjson_cmp USER...\n");
        return 2;
    }
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "rowjson_cmp: %s", PQerrorMessage(pg));
        return 2;
    }
    PGresult *res = PQexec(pg, scope_load_sql());
    if (!ok(pg, res, PGRES_TUPLES_OK, "scope"))
        return 2;
    Err err;
    Scope *s = scope_from_result(res, &err);
    PQclear(res);
    if (s == NULL) {
        fprintf(stderr, "rowjson_cmp: %s\n", err.msg);
        return 2;
    }
    int bad = 0;
    for (size_t z = 0; z < sizeof(ZONES) / sizeof(ZONES[0]) && !bad; z++)
        for (int u = 1; u < argc && !bad; u++) {
            const char *v[] = {argv[u], ZONES[z]};
            exec_ok(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL);
            /* the backup's settings: DateStyle ISO (whatever the server's default) */
            exec_ok(pg,
                    "SELECT set_config('backup.user_id', $1, true), "
                    "set_config('TimeZone', $2, true), set_config('DateStyle', 'ISO', true)",
                    2, v);
            for (int t = 0; t < scope_count(s) && !bad; t++)
                bad = compare(pg, s, t, argv[u], ZONES[z]);
            exec_ok(pg, "COMMIT", 0, NULL);
        }
    scope_free(s);
    PQfinish(pg);
    return bad;
}
