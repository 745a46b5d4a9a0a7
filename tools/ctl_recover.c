/*
 * ctl_recover: `backupctl reindex USER` (see ctl_recover.h). S3 through the
 * worker's asynchronous client on a private loop; PostgreSQL with plain
 * synchronous libpq (a command-line tool may block).
 */
#include "ctl_recover.h"

#include "bfile.h"
#include "jobspec.h"
#include "s3list.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUFFIX ".manifest.json"

typedef struct {
    uv_loop_t loop;
    HttpClient *http;
    S3Client *s3;
    char **keys;
    int nkeys;
    Buf body;
    int done, failed;
    char err[ERR_MSG_MAX];
} Rec;

static int on_page(const S3Object *objs, size_t n, void *data) {
    Rec *r = data;
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(objs[i].key);
        if (k > strlen(SUFFIX) && strcmp(objs[i].key + k - strlen(SUFFIX), SUFFIX) == 0) {
            r->keys = xrealloc(r->keys, (size_t)(r->nkeys + 1) * sizeof(char *));
            r->keys[r->nkeys++] = xstrdup(objs[i].key);
        }
    }
    return 0;
}

static void on_listed(uint64_t count, const Err *err, void *data) {
    (void)count;
    Rec *r = data;
    if (err) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    }
    r->done = 1;
}

static void on_got(const S3Result *res, const Err *err, void *data) {
    Rec *r = data;
    buf_reset(&r->body);
    if (err) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    } else {
        buf_append(&r->body, res->body->data, res->body->len);
    }
    r->done = 1;
}

static void run(Rec *r) {
    r->done = 0;
    while (!r->done)
        uv_run(&r->loop, UV_RUN_ONCE);
}

/* The value text of "name": an object (flat, as the manifest writes its counts). */
static int object_field(const char *json, const char *name, char *out, size_t outsz) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":{", name);
    const char *p = strstr(json, pat);
    if (p == NULL)
        return -1;
    p += strlen(pat) - 1;
    const char *e = strchr(p, '}');
    if (e == NULL || (size_t)(e - p + 1) >= outsz)
        return -1;
    memcpy(out, p, (size_t)(e - p + 1));
    out[e - p + 1] = 0;
    return 0;
}

/* One manifest into backup_metadata (base left NULL: set in a second pass). 1 inserted,
 * 0 already known, -1 refused (message printed). */
static int insert(PGconn *pg, const char *user, const char *mkey, const char *m, size_t n,
                  char *base_out, size_t base_sz, char *id_out, size_t id_sz) {
    char id[160], u[48], type[16], base[160], snap[4096], comp[8], key[300], sha[80], size[24],
        raw[24], created[40], finished[40], rows[8192];
    if (bfile_field(m, n, "backup_id", id, sizeof(id)) ||
        bfile_field(m, n, "user_id", u, sizeof(u)) ||
        bfile_field(m, n, "type", type, sizeof(type)) ||
        bfile_field(m, n, "base_backup_id", base, sizeof(base)) ||
        bfile_field(m, n, "snapshot", snap, sizeof(snap)) ||
        bfile_field(m, n, "compression", comp, sizeof(comp)) ||
        bfile_field(m, n, "key", key, sizeof(key)) ||
        bfile_field(m, n, "sha256", sha, sizeof(sha)) ||
        bfile_field(m, n, "size", size, sizeof(size)) ||
        bfile_field(m, n, "raw_size", raw, sizeof(raw)) ||
        bfile_field(m, n, "created_at", created, sizeof(created)) ||
        bfile_field(m, n, "finished_at", finished, sizeof(finished)) ||
        object_field(m, "rows", rows, sizeof(rows))) {
        fprintf(stderr, "backupctl reindex: %s: not a manifest this tool wrote; skipped\n", mkey);
        return -1;
    }
    size_t kl = strlen(key);
    if (strcmp(u, user) != 0 || !jobspec_valid_backup_id(id, strlen(id)) ||
        strncmp(mkey, key, kl) != 0 || strcmp(mkey + kl, SUFFIX) != 0 ||
        (base[0] && !jobspec_valid_backup_id(base, strlen(base)))) {
        fprintf(stderr,
                "backupctl reindex: %s: does not describe a backup of %s at this key; "
                "skipped\n",
                mkey, user);
        return -1;
    }
    snprintf(base_out, base_sz, "%s", base);
    snprintf(id_out, id_sz, "%s", id);
    const char *v[] = {id, u, type, key, size, raw, sha, comp, rows, snap, created, finished};
    PGresult *res = PQexecParams(
        pg,
        "INSERT INTO backup_metadata (id, user_id, type, requested_type, status, s3_key, size, "
        "uncompressed_size, checksum, compression, row_counts, snapshot, format_version, "
        "created_at, completed_at) VALUES ($1, $2::uuid, $3, $3, 'completed', $4, $5, $6, $7, $8, "
        "$9::jsonb, $10, 1, $11::timestamptz, $12::timestamptz) ON CONFLICT (id) DO NOTHING",
        12, NULL, v, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
        rc = strcmp(PQcmdTuples(res), "1") == 0;
    else
        fprintf(stderr, "backupctl reindex: %s: %s", id, PQerrorMessage(pg));
    PQclear(res);
    return rc;
}

int ctl_recover_main(const Config *cfg, int argc, char **argv) {
    if (argc != 1 || !jobspec_valid_uuid(argv[0], strlen(argv[0]))) {
        fprintf(stderr, "Usage: backupctl reindex USER_ID\n");
        return 2;
    }
    char user[37];
    for (int i = 0; i < 36; i++)
        user[i] = (char)(argv[0][i] >= 'A' && argv[0][i] <= 'F' ? argv[0][i] + 32 : argv[0][i]);
    user[36] = 0;
    PGconn *pg = PQconnectdb(cfg->database_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "backupctl: cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }
    Rec r;
    memset(&r, 0, sizeof(r));
    uv_loop_init(&r.loop);
    r.http = http_client_new(&r.loop, 0);
    S3Options o;
    config_s3_options(cfg, &o);
    r.s3 = s3_client_new(&r.loop, r.http, &o);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", user);
    s3_list(r.s3, prefix, 1000, on_page, on_listed, &r);
    run(&r);
    int rc = 0, added = 0, known = 0, skipped = 0;
    char(*ids)[160] = xcalloc((size_t)r.nkeys + 1, sizeof(*ids));
    char(*bases)[160] = xcalloc((size_t)r.nkeys + 1, sizeof(*bases));
    if (r.failed) {
        fprintf(stderr, "backupctl reindex: cannot list %s: %s\n", prefix, r.err);
        rc = 1;
    }
    for (int i = 0; rc == 0 && i < r.nkeys; i++) {
        s3_get_object(r.s3, r.keys[i], 1 << 20, on_got, &r);
        run(&r);
        if (r.failed) {
            fprintf(stderr, "backupctl reindex: cannot read %s: %s\n", r.keys[i], r.err);
            rc = 1;
            break;
        }
        buf_puts(&r.body, ""); /* NUL-terminated */
        int k = insert(pg, user, r.keys[i], r.body.data, r.body.len, bases[i], sizeof(bases[i]),
                       ids[i], sizeof(ids[i]));
        added += k == 1;
        known += k == 0;
        skipped += k < 0;
    }
    /* second pass: the chain, now that every base row exists */
    for (int i = 0; rc == 0 && i < r.nkeys; i++) {
        if (!bases[i][0] || !ids[i][0])
            continue;
        const char *v[] = {ids[i], bases[i]};
        PGresult *res = PQexecParams(pg,
                                     "UPDATE backup_metadata SET base_backup_id = $2 WHERE id = $1 "
                                     "AND base_backup_id IS NULL AND EXISTS (SELECT 1 FROM "
                                     "backup_metadata WHERE id = $2)",
                                     2, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "backupctl reindex: %s: %s", ids[i], PQerrorMessage(pg));
            rc = 1;
        }
        PQclear(res);
    }
    if (rc == 0)
        printf("reindexed %s: %d backup%s added, %d already known, %d skipped\n", user, added,
               added == 1 ? "" : "s", known, skipped);
    for (int i = 0; i < r.nkeys; i++)
        free(r.keys[i]);
    free(r.keys);
    free(ids);
    free(bases);
    buf_free(&r.body);
    s3_client_free(r.s3);
    http_client_free(r.http);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_loop_close(&r.loop);
    PQfinish(pg);
    return rc;
}
