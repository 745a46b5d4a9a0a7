/*
 * ctl_recover: recovery from the store alone (see ctl_recover.h). The store (BACKUP_STORE: S3
 * or a file store; the replica's bucket) through the storage interface on a private loop, as
 * the worker reads it; PostgreSQL with plain synchronous libpq (a command-line tool may block
 * on its own work).
 */
#include "base/json.h"
#include "ctl_recover.h"

#include "format/bfile.h"
#include "aws/sigv4.h"
#include "io/codec.h"
#include "format/manifest.h"
#include "ctl_common.h"
#include "io/filter.h"
#include "jobs/jobspec.h"
#include "keys/keys.h"
#include "format/layout.h"
#include "storage/storage_file.h"
#include "storage/storage_s3.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SUFFIX ".manifest.json"

typedef struct {
    uv_loop_t loop;
    HttpClient *http;
    S3Client *s3; /* NULL for a file store */
    Storage *store;
    StorageRead *read;
    char **keys;
    int nkeys;
    Buf body;
    int done, failed;
    char err[ERR_MSG_MAX];
    /* download, and the header check of reindex */
    int fd;
    FilterChain *dec; /* with --plain, the codecs undone */
    Buf plain;
    StorageReadResult got; /* its decode_error copied into decode_error: the read goes first */
    char decode_error[ERR_MSG_MAX];
    KmsClient *kms; /* rekey and download --decode of backups under a KMS key */
    int replica;    /* reading S3_REPLICA_BUCKET, not the primary */
    const Config *cfg;
} Rec;

static int on_page(const StorageObject *objs, size_t n, void *data) {
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

static void on_got(const StorageResult *res, const Err *err, void *data) {
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

/* A data key (and its wrapping) from keys_*_async, waited for on the loop. */
typedef struct {
    int done, failed;
    Err err;
    unsigned char dek[CRYPT_KEY_LEN];
    char wrapped[CRYPT_WRAPPED_MAX + 1];
} KeyWait;

static void on_key(const unsigned char *dek, const char *key_id, const char *wrapped,
                   const Err *err, void *data) {
    (void)key_id;
    KeyWait *w = data;
    if (err) {
        w->err = *err;
        w->failed = 1;
    } else {
        memcpy(w->dek, dek, CRYPT_KEY_LEN);
        snprintf(w->wrapped, sizeof(w->wrapped), "%s", wrapped ? wrapped : "");
    }
    w->done = 1;
}

static int key_wait(Rec *r, KeyWait *w) {
    while (!w->done)
        uv_run(&r->loop, UV_RUN_ONCE);
    return w->failed ? -1 : 0;
}

static void rec_kms(Rec *r, const Config *cfg, const Keys *keys) {
    S3Options o;
    config_s3_options(cfg, &o);
    r->kms = keys_kms_client(keys, &r->loop, r->http, &o);
}

/* One manifest into backup_metadata (base left NULL: set in a second pass). 1 inserted,
 * 0 already known, -1 refused (message printed). */
static int insert(PGconn *pg, const char *user, const char *mkey, const char *m, size_t n,
                  int replica, int required, char *base_out, size_t base_sz, char *id_out,
                  size_t id_sz) {
    Manifest man;
    Err e;
    if (manifest_parse(m, n, &man, &e) != 0) {
        fprintf(stderr, "backupctl reindex: %s: not a manifest this tool wrote (%s); skipped\n",
                mkey, e.msg);
        return -1;
    }
    const char *id = man.backup_id, *u = man.user_id, *base = man.base_backup_id, *key = man.key;
    char size[24], raw[24], codecs[64], ver[8];
    snprintf(size, sizeof(size), "%" PRIu64, man.size);
    snprintf(raw, sizeof(raw), "%" PRIu64, man.raw_size);
    snprintf(ver, sizeof(ver), "%d", man.version);
    codec_list_csv(&man.codecs, codecs, sizeof(codecs));
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
    /* under required encryption a cleartext object is recorded refused (list shows it; no
     * restore takes it): anyone who can write to the bucket could have planted it */
    int refused = required && !codec_list_encrypted(&man.codecs);
    if (refused)
        fprintf(stderr,
                "backupctl reindex: %s: not encrypted, and BACKUP_ENCRYPTION=required: recorded "
                "as refused\n",
                id);
    const char *v[] = {id,
                       u,
                       man.type,
                       key,
                       size,
                       raw,
                       man.sha256,
                       codec_list_compression(&man.codecs),
                       man.rows,
                       man.snapshot,
                       man.created_at,
                       man.finished_at,
                       codecs,
                       ver,
                       man.key_id[0] ? man.key_id : NULL,
                       man.wrapped_key[0] ? man.wrapped_key : NULL,
                       man.origin_key_id[0] ? man.origin_key_id : NULL,
                       replica ? "completed" : NULL,
                       refused ? "failed" : "completed",
                       refused ? "refused: not encrypted, and BACKUP_ENCRYPTION=required" : NULL};
    PGresult *res = PQexecParams(
        pg,
        "INSERT INTO backup_metadata (id, user_id, type, requested_type, status, s3_key, size, "
        "uncompressed_size, checksum, compression, row_counts, snapshot, format_version, "
        "created_at, completed_at, recorded_by, codecs, key_id, wrapped_key, origin_key_id, "
        "replica_status, replicated_at, error) "
        "VALUES ($1, $2::uuid, $3, $3, $19, $4, $5, $6, $7, $8, $9::jsonb, $10, "
        "$14::int, $11::timestamptz, $12::timestamptz, 'reindex', string_to_array($13, ','), "
        "$15, $16, $17, $18::text, CASE WHEN $18::text IS NOT NULL THEN now() END, $20) "
        "ON CONFLICT (id) DO NOTHING",
        20, NULL, v, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
        rc = strcmp(PQcmdTuples(res), "1") == 0;
    else
        fprintf(stderr, "backupctl reindex: %s: %s", id, PQerrorMessage(pg));
    PQclear(res);
    return rc;
}

/* The object's first decoded bytes (its header) gathered in r->plain; the read stops there. */
#define HEADER_BYTES 4096
/* The first decoded bytes, enough for the header; then the read stops. */
static int hdr_data(StorageRead *rd, const char *buf, size_t len, void *data) {
    Rec *r = data;
    buf_append(&r->plain, buf, len);
    if (r->plain.len >= HEADER_BYTES)
        storage_read_stop(rd);
    return 1;
}

static void hdr_done(StorageRead *rd, const StorageReadResult *res, const Err *err, void *data) {
    (void)rd;
    Rec *r = data;
    if (err && err->code != ERR_CODE_CANCELLED) { /* cancelled: stopped on purpose */
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    } else if (res && res->decode_error && r->plain.len < HEADER_BYTES) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", res->decode_error);
    }
    r->done = 1;
}

/* A cleartext object's own header must name the manifest's backup and user: an object put
 * under another user's key (or another backup's) is refused before it is recorded. 1 when it
 * does (or the object is encrypted: its data key is bound to the user and backup, and restore
 * checks the header), 0 after printing why not. */
static int header_agrees(Rec *r, const char *mkey, const Manifest *m) {
    if (codec_list_encrypted(&m->codecs))
        return 1;
    CryptParams cp;
    memset(&cp, 0, sizeof(cp));
    FilterChain *dec = codec_decoder(&m->codecs, &cp);
    buf_reset(&r->plain);
    r->failed = 0;
    if (dec) {
        r->read = storage_read_new(r->store, m->key, dec, hdr_data, hdr_done, r);
        run(r);
        storage_read_free(r->read);
        r->read = NULL;
    }
    char id[160] = "", user[40] = "";
    int ok = dec && !r->failed &&
             json_field(r->plain.data ? r->plain.data : "", r->plain.len, "backup_id", id,
                        sizeof(id)) == 0 &&
             json_field(r->plain.data, r->plain.len, "user_id", user, sizeof(user)) == 0 &&
             strcmp(id, m->backup_id) == 0 && strcmp(user, m->user_id) == 0;
    if (!ok)
        fprintf(
            stderr,
            "backupctl reindex: %s: the object's own header names backup '%s' of user '%s'%s%s, "
            "not this manifest's; skipped\n",
            mkey, id, user, r->failed ? ": " : "", r->failed ? r->err : "");
    buf_reset(&r->plain);
    return ok;
}

/* The primary store (BACKUP_STORE), or the replica's bucket, as the worker opens them; -1
 * after printing why (nothing to close). */
static int rec_open(Rec *r, const Config *cfg, int replica, const char *what) {
    S3Options o;
    if (replica && config_s3_replica_options(cfg, &o) != 0) {
        fprintf(stderr, "backupctl %s: no replica is configured (S3_REPLICA_BUCKET)\n", what);
        return -1;
    }
    if (!replica)
        config_s3_options(cfg, &o);
    memset(r, 0, sizeof(*r));
    uv_loop_init(&r->loop);
    r->http = http_client_new(&r->loop, 0);
    r->fd = -1;
    r->replica = replica;
    r->cfg = cfg;
    if (!replica && cfg->store_path) {
        Err e;
        if ((r->store = storage_file_new(&r->loop, cfg->store_path, &e)) == NULL) {
            fprintf(stderr, "backupctl %s: %s\n", what, e.msg);
            http_client_free(r->http);
            uv_loop_close(&r->loop);
            return -1;
        }
    } else {
        r->s3 = s3_client_new(&r->loop, r->http, &o);
        r->store = storage_s3_new(&r->loop, r->s3, (size_t)cfg->s3_part_size_mb << 20,
                                  cfg->s3_upload_concurrency);
    }
    return 0;
}

/* "S3", "the replica" or "the file store": where a message says it looked */
static const char *rec_where(const Rec *r) {
    return r->replica ? "the replica" : r->s3 ? "S3" : "the file store";
}

static void rec_close(Rec *r) {
    for (int i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->keys);
    buf_free(&r->body);
    buf_free(&r->plain);
    kms_client_free(r->kms);
    storage_free(r->store);
    s3_client_free(r->s3);
    http_client_free(r->http);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
}

/* The manifest keys under backups/USER/, in key order; 0 or -1 after printing why. */
static int list_manifests(Rec *r, const char *what, const char *user) {
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "backups/%s/", user);
    storage_list(r->store, prefix, on_page, on_listed, r);
    run(r);
    if (r->failed)
        fprintf(stderr, "backupctl %s: cannot list %s in %s: %s\n", what, prefix, rec_where(r),
                r->err);
    return r->failed ? -1 : 0;
}

/* One manifest's text into r->body (NUL-terminated); 0 or -1 after printing why. */
static int get_manifest(Rec *r, const char *what, const char *mkey) {
    r->failed = 0;
    storage_get(r->store, mkey, 1 << 20, on_got, r);
    run(r);
    if (r->failed) {
        fprintf(stderr, "backupctl %s: cannot read %s: %s\n", what, mkey, r->err);
        return -1;
    }
    buf_puts(&r->body, "");
    return 0;
}

int ctl_reindex(const Config *cfg, const char *user, int quiet, int replica) {
    Rec r;
    if (rec_open(&r, cfg, replica, "reindex") != 0)
        return 2;
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL) {
        rec_close(&r);
        return 1;
    }
    int rc = list_manifests(&r, "reindex", user) ? 1 : 0, added = 0, known = 0, skipped = 0;
    Buf errs = BUF_INIT;
    int nerr = 0;
    Keys *keys = keys_load(config_getenv_process, NULL, &errs, &nerr);
    int required = keys_required(keys);
    keys_free(keys);
    buf_free(&errs);
    char(*ids)[160] = xcalloc((size_t)r.nkeys + 1, sizeof(*ids));
    char(*bases)[160] = xcalloc((size_t)r.nkeys + 1, sizeof(*bases));
    for (int i = 0; rc == 0 && i < r.nkeys; i++) {
        if (get_manifest(&r, "reindex", r.keys[i])) {
            rc = 1;
            break;
        }
        Manifest hm;
        Err he;
        if (manifest_parse(r.body.data, r.body.len, &hm, &he) == 0 &&
            !header_agrees(&r, r.keys[i], &hm)) {
            skipped++;
            continue;
        }
        int k = insert(pg, user, r.keys[i], r.body.data, r.body.len, replica, required, bases[i],
                       sizeof(bases[i]), ids[i], sizeof(ids[i]));
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
    if (rc == 0 && (!quiet || added))
        printf("reindexed %s%s: %d backup%s added, %d already known, %d skipped\n", user,
               replica ? " from the replica" : "", added, added == 1 ? "" : "s", known, skipped);
    free(ids);
    free(bases);
    rec_close(&r);
    PQfinish(pg);
    return rc;
}

int ctl_recover_main(const Config *cfg, int argc, char **argv) {
    char user[37];
    int replica = argc == 2 && strcmp(argv[1], "--replica") == 0;
    if (argc != 1 + replica) {
        fprintf(stderr, "Usage: backupctl reindex USER_ID [--replica]\n");
        return 2;
    }
    if (ctl_uuid_arg("user", argv[0], user))
        return 2;
    return ctl_reindex(cfg, user, 0, replica);
}

/* ---- list --s3 ---- */

/* A manifest read whole; -1 when it is not one (the reader says why in err). */
static int parse_manifest(const char *m, size_t n, Manifest *out, uint64_t *rows) {
    Err e;
    return manifest_parse(m, n, out, &e) != 0 || manifest_counts_sum(out->rows, rows) != 0 ? -1 : 0;
}

int ctl_list_s3(const Config *cfg, const char *user, int json, int replica) {
    Rec r;
    if (rec_open(&r, cfg, replica, "list") != 0)
        return 2;
    int rc = list_manifests(&r, "list", user) ? 1 : 0, shown = 0;
    if (rc == 0 && json)
        printf("[");
    else if (rc == 0 && r.nkeys)
        printf("%-62s %-12s %10s %10s  %-20s  %s\n",
               replica ? "BACKUP (from the replica's manifests)" : "BACKUP (from S3 manifests)",
               "TYPE", "SIZE", "ROWS", "CREATED", "BASE");
    for (int i = 0; rc == 0 && i < r.nkeys; i++) {
        Manifest m;
        uint64_t rows = 0;
        if (get_manifest(&r, "list", r.keys[i])) {
            rc = 1;
            break;
        }
        if (parse_manifest(r.body.data, r.body.len, &m, &rows) != 0) {
            fprintf(stderr, "backupctl list: %s: not a manifest this tool wrote; skipped\n",
                    r.keys[i]);
            continue;
        }
        if (json) {
            const char *base = m.base_backup_id;
            printf("%s{\"backup_id\":\"%s\",\"type\":\"%s\",\"size\":%" PRIu64 ",\"rows\":%" PRIu64
                   ",\"created_at\":\"%s\",\"base_backup_id\":%s%s%s,"
                   "\"key\":\"",
                   shown ? "," : "", m.backup_id, m.type, m.size, rows, m.created_at,
                   base[0] ? "\"" : "", base[0] ? base : "null", base[0] ? "\"" : "");
            Buf k = BUF_INIT;
            buf_json_escape(&k, m.key, strlen(m.key));
            printf("%s\",\"sha256\":\"%s\"}", k.data ? k.data : "", m.sha256);
            buf_free(&k);
        } else {
            char size[32];
            ctl_fmt_bytes(m.size, size, sizeof(size));
            printf("%-62s %-12s %10s %10" PRIu64 "  %-20.19s  %s\n", m.backup_id, m.type, size,
                   rows, m.created_at, m.base_backup_id[0] ? m.base_backup_id : "-");
        }
        shown++;
    }
    if (rc == 0 && json)
        printf("]\n");
    else if (rc == 0 && shown == 0)
        printf("no backups of %s in %s (no manifests under backups/%s/)\n", user, rec_where(&r),
               user);
    rec_close(&r);
    return rc;
}

/* ---- download ---- */

static int write_all(Rec *r, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(r->fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(r->err, sizeof(r->err), "cannot write: %s", strerror(errno));
            r->failed = 1;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The bytes read (the store's read stream hashes the stored bytes and runs the decoders after
 * them), written as they come: the stored bytes, or (--plain) with the codecs undone. */
static int dl_data(StorageRead *rd, const char *buf, size_t len, void *data) {
    Rec *r = data;
    if (write_all(r, buf, len) != 0)
        storage_read_stop(rd);
    return 1;
}

static void dl_done(StorageRead *rd, const StorageReadResult *res, const Err *err, void *data) {
    (void)rd;
    Rec *r = data;
    if (res) {
        r->got = *res;
        snprintf(r->decode_error, sizeof(r->decode_error), "%s",
                 res->decode_error ? res->decode_error : "");
        r->got.decode_error = NULL; /* freed with the read */
    }
    if (err && !r->failed) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    }
    r->done = 1;
}

/* WHAT is a backup id (its manifest found among the user's) or an object key: 0, -1 after
 * printing why, -2 when WHAT is neither. */
/* A change segment has no manifest beside it: its record in change_segments is one (the wrapping
 * of an encrypted segment's data key is the record's; before 023, only in its own header). 0,
 * -1 after saying why. */
static int segment_manifest(const Config *cfg, const char *key, Manifest *m) {
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL)
        return -1;
    const char *v[] = {key};
    PGresult *res = PQexecParams(pg,
                                 "SELECT id, user_id::text, checksum, size, "
                                 "array_to_string(codecs, ','), coalesce(key_id, ''), "
                                 "coalesce(wrapped_key, '') FROM change_segments "
                                 "WHERE s3_key = $1",
                                 1, NULL, v, NULL, NULL, 0);
    int rc = -1;
    Err e;
    memset(m, 0, sizeof(*m));
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "backupctl download: %s", PQerrorMessage(pg));
    else if (PQntuples(res) != 1)
        fprintf(stderr, "backupctl download: %s is no recorded change segment\n", key);
    else if (codec_list_parse(PQgetvalue(res, 0, 4), &m->codecs, &e) != 0)
        fprintf(stderr, "backupctl download: %s: %s\n", key, e.msg);
    else {
        snprintf(m->key, sizeof(m->key), "%s", key);
        snprintf(m->backup_id, sizeof(m->backup_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(m->user_id, sizeof(m->user_id), "%s", PQgetvalue(res, 0, 1));
        snprintf(m->sha256, sizeof(m->sha256), "%s", PQgetvalue(res, 0, 2));
        m->size = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        snprintf(m->key_id, sizeof(m->key_id), "%s", PQgetvalue(res, 0, 5));
        snprintf(m->wrapped_key, sizeof(m->wrapped_key), "%s", PQgetvalue(res, 0, 6));
        rc = 0;
    }
    PQclear(res);
    PQfinish(pg);
    return rc;
}

static int find_manifest(Rec *r, const char *what, Manifest *m) {
    char mkey[400] = "";
    size_t n = strlen(what);
    if (jobspec_valid_backup_id(what, n)) {
        char user[37];
        if (layout_user_of_backup_id(what, user) != 0) {
            fprintf(stderr, "backupctl download: %s names no user\n", what);
            return -2;
        }
        if (list_manifests(r, "download", user))
            return -1;
        for (int i = 0; i < r->nkeys && !mkey[0]; i++) {
            const char *base = strrchr(r->keys[i], '/') + 1;
            if (strncmp(base, what, n) == 0 && base[n] == '.')
                snprintf(mkey, sizeof(mkey), "%s", r->keys[i]);
        }
        if (!mkey[0]) {
            fprintf(stderr, "backupctl download: no manifest of backup %s under backups/%s/%s\n",
                    what, user, r->replica ? " in the replica" : "");
            return -1;
        }
    } else {
        char user[37];
        if (layout_user_of_key(what, user) != 0) {
            fprintf(stderr,
                    "backupctl download: '%s' is neither a backup id nor a key under "
                    "backups/USER_ID/\n",
                    what);
            return -2;
        }
        if (strstr(what, "/changes/"))
            return segment_manifest(r->cfg, what, m);
        snprintf(mkey, sizeof(mkey), "%s" SUFFIX, what);
    }
    if (get_manifest(r, "download", mkey))
        return -1;
    uint64_t rows;
    if (parse_manifest(r->body.data, r->body.len, m, &rows) != 0 ||
        strncmp(mkey, m->key, strlen(m->key)) != 0 || strcmp(mkey + strlen(m->key), SUFFIX)) {
        fprintf(stderr, "backupctl download: %s does not describe the object beside it\n", mkey);
        return -1;
    }
    return 0;
}

/* One copy's download: 0, 1 (that copy failed: the other may do), 2 (bad arguments or
 * settings: the other would fail the same). */
static int download_from(const Config *cfg, const char *what, const char *file, int plain,
                         int replica) {
    Rec r;
    if (rec_open(&r, cfg, replica, "download") != 0)
        return 2;
    Manifest m;
    int found = find_manifest(&r, what, &m);
    if (found != 0) {
        rec_close(&r);
        return found == -2 ? 2 : 1;
    }
    char out[4096], part[4200];
    if (file)
        snprintf(out, sizeof(out), "%s", file);
    else { /* the key's name; --plain: the document's, up to ".json" (backup-....json) */
        const char *name = strrchr(m.key, '/') + 1, *json = strstr(name, ".json");
        int n = plain && json ? (int)(json + 5 - name) : (int)strlen(name);
        snprintf(out, sizeof(out), "%.*s%s", n, name, plain && !json ? ".json" : "");
    }
    snprintf(part, sizeof(part), "%s.part", out);
    r.fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (r.fd < 0) {
        fprintf(stderr, "backupctl download: cannot create %s: %s\n", part, strerror(errno));
        rec_close(&r);
        return 1;
    }
    Keys *keys = NULL;
    if (plain) {
        Buf errs = BUF_INIT, codecs = BUF_INIT;
        int nerr = 0;
        keys = keys_load(config_getenv_process, NULL, &errs, &nerr);
        codec_list_json(&m.codecs, &codecs);
        /* the manifest's wrapping (the newest), else the one in the object's own header */
        CryptParams cp = {.user_id = m.user_id,
                          .backup_id = m.backup_id,
                          .codecs_json = codecs.data,
                          .unwrap = keys_unwrap_fn,
                          .unwrap_data = keys};
        KeyWait kw;
        memset(&kw, 0, sizeof(kw));
        if (nerr == 0 && codec_list_encrypted(&m.codecs) && keys_has(keys, m.key_id)) {
            rec_kms(&r, cfg, keys);
            keys_unwrap_async(keys, r.kms, m.key_id, m.wrapped_key, m.user_id, m.backup_id, on_key,
                              &kw);
            if (key_wait(&r, &kw) == 0) {
                memcpy(cp.dek, kw.dek, CRYPT_KEY_LEN);
                cp.have_dek = 1;
            } else {
                fprintf(stderr, "backupctl download: %s\n", kw.err.msg);
            }
        }
        if (nerr == 0 && !kw.failed)
            r.dec = codec_decoder(&m.codecs, &cp);
        else
            fprintf(stderr, "backupctl download: invalid configuration:\n%s", errs.data);
        crypt_wipe(&cp, sizeof(cp));
        crypt_wipe(&kw, sizeof(kw));
        buf_free(&errs);
        buf_free(&codecs);
        if (r.dec == NULL) {
            keys_free(keys);
            close(r.fd);
            unlink(part);
            rec_close(&r);
            return nerr ? 2 : 1;
        }
    }
    r.failed = 0;
    r.read = storage_read_new(r.store, m.key, r.dec, dl_data, dl_done, &r);
    r.dec = NULL; /* the read stream's now */
    run(&r);
    storage_read_free(r.read);
    r.read = NULL;
    int rc = 0;
    if (r.failed) {
        fprintf(stderr, "backupctl download: %s: %s\n", m.key, r.err);
        rc = 1;
    } else if (strcmp(r.got.sha256, m.sha256) != 0 || r.got.size != m.size) {
        /* the digest names a damaged object before its decoding error does */
        fprintf(stderr,
                "backupctl download: Backup checksum verification failed: %s has %" PRIu64
                " bytes with sha256 %s; its manifest records %" PRIu64 " bytes with sha256 %s\n",
                m.key, r.got.size, r.got.sha256, m.size, m.sha256);
        rc = 1;
    } else if (r.decode_error[0]) {
        fprintf(stderr, "backupctl download: %s: %s\n", m.key, r.decode_error);
        rc = 1;
    }
    if (rc == 0 && fsync(r.fd) != 0) {
        fprintf(stderr, "backupctl download: cannot write %s: %s\n", part, strerror(errno));
        rc = 1;
    }
    if (close(r.fd) != 0 && rc == 0) {
        fprintf(stderr, "backupctl download: cannot write %s: %s\n", part, strerror(errno));
        rc = 1;
    }
    if (rc == 0 && rename(part, out) != 0) {
        fprintf(stderr, "backupctl download: cannot rename %s: %s\n", part, strerror(errno));
        rc = 1;
    }
    keys_free(keys);
    if (rc != 0)
        unlink(part); /* never leave a file that did not pass */
    else
        printf("%s  %" PRIu64 " bytes  sha256 %s (verified against %s" SUFFIX "%s)%s\n", out,
               m.size, m.sha256, m.key, replica ? " in the replica" : "",
               plain ? "; written with its codecs undone" : "");
    rec_close(&r);
    return rc;
}

int ctl_download(const Config *cfg, const char *what, const char *file, int plain, CtlFrom from) {
    if (from == CTL_FROM_REPLICA)
        return download_from(cfg, what, file, plain, 1);
    int rc = download_from(cfg, what, file, plain, 0);
    if (rc == 1 && from == CTL_FROM_ANY && cfg->s3_replica_bucket) {
        /* missing, unreachable after retries, or not what its manifest says: the other copy */
        fprintf(stderr, "backupctl download: the primary copy failed; reading the replica's\n");
        rc = download_from(cfg, what, file, plain, 1);
    }
    return rc;
}

/* ---- rekey ---- */

static void on_put(const StorageResult *res, const Err *err, void *data) {
    (void)res;
    Rec *r = data;
    if (err) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    }
    r->done = 1;
}

/* The data key of object id wrapped under `from` as `wrapped`, wrapped again under `to` into
 * out. 0, or -1 after printing why. */
static int rewrap(Rec *r, const Keys *keys, const char *from, const char *wrapped, const char *to,
                  const char *user, const char *id, Buf *out) {
    KeyWait kw, ww;
    memset(&kw, 0, sizeof(kw));
    memset(&ww, 0, sizeof(ww));
    keys_unwrap_async(keys, r->kms, from, wrapped, user, id, on_key, &kw);
    if (key_wait(r, &kw) == 0)
        keys_wrap_async(keys, r->kms, to, kw.dek, user, id, on_key, &ww);
    crypt_wipe(kw.dek, sizeof(kw.dek));
    int rc = 0;
    if (kw.failed || key_wait(r, &ww) != 0) {
        fprintf(stderr, "backupctl rekey: %s: %s\n", id, kw.failed ? kw.err.msg : ww.err.msg);
        rc = -1;
    } else {
        buf_puts(out, ww.wrapped);
    }
    crypt_wipe(&ww, sizeof(ww));
    return rc;
}

/* One backup's wrapping replaced: the manifest first (so that reindex finds the new one), the
 * replica's copy of it (rr, when the backup has one), then the record, only if nobody changed
 * it meanwhile. 0, or -1 after printing why. */
static int rekey_one(Rec *r, Rec *rr, PGconn *pg, const Keys *keys, const char *to, const char *id,
                     const char *user, const char *key, const char *from, const char *wrapped,
                     const char *replica_status) {
    Buf nw = BUF_INIT, man = BUF_INIT;
    Err e;
    char mkey[400];
    int rc = -1;
    if (rewrap(r, keys, from, wrapped, to, user, id, &nw) != 0)
        goto out;
    snprintf(mkey, sizeof(mkey), "%s" SUFFIX, key);
    if (get_manifest(r, "rekey", mkey) != 0)
        goto out;
    Manifest m;
    if (manifest_parse(r->body.data, r->body.len, &m, &e) != 0 || strcmp(m.backup_id, id) != 0 ||
        manifest_rewrap(r->body.data, r->body.len, to, nw.data, &man) != 0) {
        fprintf(stderr, "backupctl rekey: %s: its manifest is not this backup's, or has no key\n",
                mkey);
        goto out;
    }
    r->failed = 0;
    storage_put(r->store, mkey, man.data, man.len, "application/json", on_put, r);
    run(r);
    if (r->failed) {
        fprintf(stderr, "backupctl rekey: cannot write %s: %s\n", mkey, r->err);
        goto out;
    }
    if (rr) { /* the record moves only once both manifests say the same */
        rr->failed = 0;
        storage_put(rr->store, mkey, man.data, man.len, "application/json", on_put, rr);
        run(rr);
        if (rr->failed) {
            fprintf(stderr, "backupctl rekey: cannot write %s in the replica: %s\n", mkey, rr->err);
            goto out;
        }
    }
    /* also unless its copy completed meanwhile: that copy may hold the old manifest, which this
     * run did not rewrite (the replica's copy was not made when the backups were listed); a
     * copy still pending copies the new one (the worker checks the record at its end) */
    const char *v[] = {id, to, nw.data, from, wrapped, replica_status};
    PGresult *res = PQexecParams(pg,
                                 "UPDATE backup_metadata SET key_id = $2, wrapped_key = $3 "
                                 "WHERE id = $1 AND key_id = $4 AND wrapped_key = $5 AND "
                                 "coalesce(replica_status, '') = $6",
                                 6, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fprintf(stderr, "backupctl rekey: %s: %s", id, PQerrorMessage(pg));
    else if (strcmp(PQcmdTuples(res), "1") != 0)
        fprintf(stderr, "backupctl rekey: %s: its record changed meanwhile; run rekey again\n", id);
    else
        rc = 0;
    PQclear(res);
out:
    buf_free(&nw);
    buf_free(&man);
    return rc;
}

/* One change segment's wrapping replaced in its record (the object, whose header keeps the
 * wrapping it was written with, is never rewritten: its checksum stays, and so does the replica's
 * copy). A segment recorded before 023 has no wrapping in its record: its header's is read
 * (the object's SHA-256 checked against the record first). The record moves only if nobody
 * changed it meanwhile. 0, or -1 after printing why. */
static int rekey_segment(Rec *r, PGconn *pg, const Keys *keys, const char *to, const char *id,
                         const char *user, const char *key, const char *checksum,
                         const char *from_rec, const char *wrapped_rec) {
    char from[CRYPT_ID_MAX + 1], wrapped[CRYPT_WRAPPED_MAX + 1];
    snprintf(from, sizeof(from), "%s", from_rec);
    snprintf(wrapped, sizeof(wrapped), "%s", wrapped_rec);
    if (!from[0]) {
        r->failed = 0;
        storage_get(r->store, key, (size_t)64 << 20, on_got, r);
        run(r);
        char hex[65];
        CryptHeader h;
        Err e;
        if (r->failed) {
            fprintf(stderr, "backupctl rekey: cannot read %s: %s\n", key, r->err);
            return -1;
        }
        sigv4_sha256_hex(r->body.data, r->body.len, hex);
        if (strcmp(hex, checksum) != 0) {
            fprintf(stderr,
                    "backupctl rekey: Change segment checksum verification failed: %s (its "
                    "wrapping was not recorded, and the object is not the one recorded)\n",
                    key);
            return -1;
        }
        if (crypt_header_parse(r->body.data, r->body.len, &h, &e) != 1) {
            fprintf(stderr, "backupctl rekey: %s: no envelope header: %s\n", key, e.msg);
            return -1;
        }
        snprintf(from, sizeof(from), "%s", h.key_id);
        snprintf(wrapped, sizeof(wrapped), "%s", h.wrapped_key);
    }
    Buf nw = BUF_INIT;
    if (strcmp(from, to) == 0) /* already under it: the header's wrapping recorded as it is */
        buf_puts(&nw, wrapped);
    else if (rewrap(r, keys, from, wrapped, to, user, id, &nw) != 0) {
        buf_free(&nw);
        return -1;
    }
    const char *v[] = {id, to, nw.data, from_rec, wrapped_rec};
    PGresult *res = PQexecParams(pg,
                                 "UPDATE change_segments SET key_id = $2, wrapped_key = $3 "
                                 "WHERE id = $1 AND coalesce(key_id, '') = $4 AND "
                                 "coalesce(wrapped_key, '') = $5",
                                 5, NULL, v, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fprintf(stderr, "backupctl rekey: %s: %s", id, PQerrorMessage(pg));
    else if (strcmp(PQcmdTuples(res), "1") != 0)
        fprintf(stderr, "backupctl rekey: segment %s: deleted or rekeyed meanwhile\n", id);
    else
        rc = 0;
    PQclear(res);
    buf_free(&nw);
    return rc;
}

/* The user's (NULL: everyone's) encrypted change segments not recorded under `to`. */
static int rekey_segments(Rec *r, PGconn *pg, const Keys *keys, const char *to, const char *user,
                          int dry_run, int *done, int *failed) {
    const char *v[] = {to, user};
    PGresult *res = PQexecParams(
        pg,
        "SELECT id, user_id::text, s3_key, checksum, coalesce(key_id, ''), "
        "coalesce(wrapped_key, '') FROM change_segments WHERE 'aes-256-gcm' = ANY (codecs) AND "
        "key_id IS DISTINCT FROM $1 AND ($2::uuid IS NULL OR user_id = $2::uuid) "
        "ORDER BY user_id, end_lsn, id",
        2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "backupctl rekey: %s", PQerrorMessage(pg));
        PQclear(res);
        return -1;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(res, i, 0), *from = PQgetvalue(res, i, 4);
        if (dry_run) {
            printf("segment %s: under '%s', would be wrapped under '%s'%s\n", id,
                   from[0] ? from : "(its header's; not recorded)", to,
                   !from[0] || keys_has(keys, from) ? "" : " (but that key is not here)");
            continue;
        }
        if (rekey_segment(r, pg, keys, to, id, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                          PQgetvalue(res, i, 3), from, PQgetvalue(res, i, 5)) == 0)
            (*done)++;
        else
            (*failed)++;
    }
    PQclear(res);
    return 0;
}

int ctl_rekey(const Config *cfg, const char *user, const char *to_id, int dry_run) {
    Buf errs = BUF_INIT;
    int nerr = 0;
    Keys *keys = keys_load(config_getenv_process, NULL, &errs, &nerr);
    const char *to = to_id ? to_id : keys_current(keys);
    if (nerr || !keys_has(keys, to)) {
        if (nerr)
            fprintf(stderr, "backupctl rekey: invalid configuration:\n%s", errs.data);
        else if (to[0] == 0)
            fprintf(stderr, "backupctl rekey: no keyring (BACKUP_ENCRYPTION_KEYS) to wrap with\n");
        else
            fprintf(stderr, "backupctl rekey: key '%s' is not in the keyring\n", to);
        buf_free(&errs);
        keys_free(keys);
        return 2;
    }
    buf_free(&errs);
    PGconn *pg = ctl_pg_open(cfg);
    if (pg == NULL) {
        keys_free(keys);
        return 1;
    }
    /* every encrypted backup whose newest wrapping is under another key (pending rows have none
     * yet; deleted ones have no object left) */
    const char *v[] = {to, user};
    PGresult *res = PQexecParams(
        pg,
        "SELECT id, user_id::text, s3_key, key_id, wrapped_key, "
        "coalesce(replica_status, '') FROM backup_metadata WHERE key_id IS NOT NULL AND key_id <> "
        "$1 AND status <> 'deleted' "
        "AND ($2::uuid IS NULL OR user_id = $2::uuid) ORDER BY user_id, created_at, id",
        2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "backupctl rekey: %s", PQerrorMessage(pg));
        PQclear(res);
        PQfinish(pg);
        keys_free(keys);
        return 1;
    }
    Rec r, rr;
    rec_open(&r, cfg, 0, "rekey");
    int replica = cfg->s3_replica_bucket && rec_open(&rr, cfg, 1, "rekey") == 0;
    rec_kms(&r, cfg, keys);
    int n = PQntuples(res), done = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(res, i, 0), *from = PQgetvalue(res, i, 3);
        if (dry_run) {
            printf("%s: under '%s', would be wrapped under '%s'%s\n", id, from, to,
                   keys_has(keys, from) ? "" : " (but that key is not here)");
            continue;
        }
        int copied = replica && strcmp(PQgetvalue(res, i, 5), "completed") == 0;
        if (rekey_one(&r, copied ? &rr : NULL, pg, keys, to, id, PQgetvalue(res, i, 1),
                      PQgetvalue(res, i, 2), from, PQgetvalue(res, i, 4),
                      PQgetvalue(res, i, 5)) == 0)
            done++;
        else
            failed++;
    }
    PQclear(res);
    int segs_done = 0, segs_failed = 0;
    if (rekey_segments(&r, pg, keys, to, user, dry_run, &segs_done, &segs_failed) != 0)
        segs_failed++;
    failed += segs_failed;
    rec_close(&r);
    if (replica)
        rec_close(&rr);
    if (!dry_run)
        printf("rekeyed %d backup%s and %d change segment%s under '%s'%s%d failed\n", done,
               done == 1 ? "" : "s", segs_done, segs_done == 1 ? "" : "s", to, failed ? ", " : "; ",
               failed);
    /* what still needs which key: a key no backup and no segment needs can be retired (a
     * segment whose wrapping is not recorded yet needs the key in its header) */
    res = PQexec(pg, "SELECT coalesce(key_id, '(not recorded: in their headers)'), "
                     "count(*) FILTER (WHERE b), count(*) FILTER (WHERE NOT b) FROM ("
                     "SELECT key_id, true AS b FROM backup_metadata WHERE key_id IS NOT NULL AND "
                     "status <> 'deleted' UNION ALL SELECT key_id, false FROM change_segments "
                     "WHERE 'aes-256-gcm' = ANY (codecs)) k GROUP BY 1 ORDER BY 1");
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
        const char *nb = PQgetvalue(res, i, 1), *ns = PQgetvalue(res, i, 2);
        printf("key '%s': %s backup%s, %s change segment%s\n", PQgetvalue(res, i, 0), nb,
               strcmp(nb, "1") ? "s" : "", ns, strcmp(ns, "1") ? "s" : "");
    }
    PQclear(res);
    /* work in flight may still write under a key this run moved away from: a backup not yet
     * completed wraps under the key its worker had at its start, and a copy to the replica not
     * yet made copies whatever manifest it read */
    const char *u[] = {user};
    res = PQexecParams(pg,
                       "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), "
                       "count(*) FILTER (WHERE status = 'completed' AND replica_status = "
                       "'pending') FROM backup_metadata WHERE $1::uuid IS NULL OR user_id = $1",
                       1, NULL, u, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        const char *running = PQgetvalue(res, 0, 0), *copies = PQgetvalue(res, 0, 1);
        if (strcmp(running, "0") != 0 || strcmp(copies, "0") != 0)
            printf("in flight: %s backup%s not yet completed, %s cop%s to the replica not yet "
                   "made: a key not listed above is not yet safe to retire; run rekey again once "
                   "they end\n",
                   running, strcmp(running, "1") ? "s" : "", copies,
                   strcmp(copies, "1") ? "ies" : "y");
        else if (!dry_run && failed == 0)
            printf("nothing in flight: no backup, manifest or replica copy needs a key not "
                   "listed above\n");
    }
    PQclear(res);
    PQfinish(pg);
    keys_free(keys);
    return failed ? 1 : 0;
}

int ctl_rekey_main(const Config *cfg, int argc, char **argv) {
    const char *user = NULL, *to = NULL;
    char uid[37];
    int all = 0, dry = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry = 1;
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (user == NULL && argv[i][0] != '-') {
            if (ctl_uuid_arg("user", argv[i], uid))
                return 2;
            user = uid;
        } else {
            user = NULL, all = 0;
            break;
        }
    }
    if (all == (user != NULL)) {
        fprintf(stderr, "Usage: backupctl rekey USER_ID | --all [--to KEY_ID] [--dry-run]\n");
        return 2;
    }
    return ctl_rekey(cfg, user, to, dry);
}
