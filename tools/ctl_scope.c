/*
 * ctl_scope: print the checked backup scope (see ctl_scope.h). A command-line
 * tool may block: plain synchronous libpq.
 */
#include "ctl_scope.h"
#include "scope/scope.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ctl_scope_main(const Config *cfg, int argc, char **argv) {
    int sql = argc >= 1 && strcmp(argv[0], "--sql") == 0;
    int json = sql && argc == 2 && strcmp(argv[1], "--json") == 0;
    if (argc > 2 || (argc >= 1 && !sql) || (argc == 2 && !json)) {
        fprintf(stderr, "Usage: backupctl scope [--sql [--json]]\n");
        return 2;
    }
    PGconn *pg = PQconnectdb(cfg->database_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password */
        fprintf(stderr, "backupctl: cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }
    PGresult *res = PQexec(pg, scope_load_sql());
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "backupctl: cannot read backup_scope (run backupctl migrate?): %s",
                PQerrorMessage(pg));
        PQclear(res);
        PQfinish(pg);
        return 1;
    }
    Err err;
    Scope *s = scope_from_result(res, &err);
    PQclear(res);
    PQfinish(pg);
    if (s == NULL) {
        fprintf(stderr, "backupctl: %s\n", err.msg);
        return 1;
    }
    Buf b = BUF_INIT;
    for (int i = 0; i < scope_count(s); i++) {
        if (sql) {
            buf_reset(&b);
            if (json) /* PostgreSQL writes the JSON: what the worker's must equal */
                scope_copy_json_sql(s, i, 0, &b);
            else
                scope_copy_sql(s, i, 0, &b);
            printf("%s\t%s\n", scope_table(s, i), b.data);
        } else {
            printf("%s\n", scope_table(s, i));
        }
    }
    buf_free(&b);
    scope_free(s);
    return 0;
}
