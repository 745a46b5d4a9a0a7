/* bcheck: a backup object read and checked as it streams (see bcheck.h). */
#include "base/json.h"
#include "format/bcheck.h"

#include "format/bfile.h"
#include "base/buf.h"
#include "io/filter.h"
#include "format/manifest.h"
#include "storage/storage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[64];
    uint64_t n[2]; /* rows, deleted keys */
} Count;

struct BCheck {
    StorageRead *rd;
    char *id, *user, *checksum;
    BfileReader *reader;
    BCheckItemCb item;
    BCheckDoneCb done;
    void *data;
    Count *counts;
    int ncounts;
    uint64_t bytes;
    int held, draining;
    int hash_only; /* encrypted, and no key given */
    Err decode_err;
};

static Count *count_of(BCheck *c, const char *table) {
    for (int i = 0; i < c->ncounts; i++)
        if (strcmp(c->counts[i].name, table) == 0)
            return &c->counts[i];
    c->counts = xrealloc(c->counts, (size_t)(c->ncounts + 1) * sizeof(Count));
    Count *n = &c->counts[c->ncounts++];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", table);
    return n;
}

uint64_t bcheck_count(const BCheck *c, int section, const char *table) {
    for (int i = 0; i < c->ncounts; i++)
        if (strcmp(c->counts[i].name, table) == 0)
            return c->counts[i].n[section ? 1 : 0];
    return 0;
}

uint64_t bcheck_bytes(const BCheck *c) {
    return c->bytes;
}

static int on_header(const char *json, size_t len, void *data, Err *err) {
    BCheck *c = data;
    char id[160], user[48];
    if (json_field(json, len, "backup_id", id, sizeof(id)) != 0 ||
        json_field(json, len, "user_id", user, sizeof(user)) != 0 || strcmp(id, c->id) != 0 ||
        strcmp(user, c->user) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "the object holds backup %.80s of user %.40s, not %s of user %s", id, user, c->id,
                c->user);
        return -1;
    }
    return 0;
}

static int on_item(int section, const char *table, const char *json, size_t len, void *data,
                   Err *err) {
    BCheck *c = data;
    count_of(c, table)->n[section]++;
    return c->item(section, table, json, len, c->data, err);
}

/* A flat {"name":count,...} object of the trailer against what came; -1 with err when a count
 * differs, or a table came that it does not count. */
static int match_counts(BCheck *c, const char *p, const char *end, int section, Err *err) {
    char table[64];
    uint64_t want;
    int rc, matched = 0;
    while ((rc = manifest_counts_next(&p, end, table, sizeof(table), &want)) == 1) {
        uint64_t got = bcheck_count(c, section, table);
        if (got != want) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "backup %s: its trailer counts %" PRIu64
                    " %s of %s, the document holds %" PRIu64,
                    c->id, want, section ? "deleted keys" : "rows", table, got);
            return -1;
        }
        if (got)
            matched++;
    }
    if (rc < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: unreadable trailer counts",
                c->id);
        return -1;
    }
    for (int i = 0; i < c->ncounts; i++) /* every table seen must be counted */
        if (c->counts[i].n[section])
            matched--;
    if (matched != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "backup %s: the document holds tables its trailer does not count", c->id);
        return -1;
    }
    return 0;
}

static int on_trailer(const char *json, size_t len, void *data, Err *err) {
    BCheck *c = data;
    const char *end = json + len;
    const char *rows = strstr(json, "{\"rows\":");
    const char *del = strstr(json, ",\"deleted\":");
    if (rows == NULL || del == NULL || del > end) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: the trailer has no counts",
                c->id);
        return -1;
    }
    if (match_counts(c, rows + 8, end, 0, err) != 0)
        return -1;
    return match_counts(c, del + 11, end, 1, err);
}

static const BfileReaderCb reader_cb = {on_header, on_item, on_trailer};

/* Decoded bytes (off the thread pool) into the reader, on the loop. */
static int on_plain(StorageRead *rd, const char *buf, size_t len, void *data) {
    (void)rd;
    BCheck *c = data;
    if (!c->draining && !c->hash_only &&
        bfile_reader_feed(c->reader, buf, len, &c->decode_err) != 0)
        c->draining = 1; /* only hash the rest: the digest tells whether this is the object */
    if (c->held) {
        c->held = 0;
        return 0;
    }
    return 1;
}

static void on_read(StorageRead *rd, const StorageReadResult *res, const Err *err, void *data) {
    BCheck *c = data;
    c->bytes = storage_read_bytes(rd);
    Err e;
    if (err) {
        e = *err;
        if (err->code != ERR_CODE_CANCELLED)
            err_prefix(&e, "reading backup %s", c->id);
        c->done(c, &e, c->data);
        return;
    }
    static const char failed[] = "Backup checksum verification failed: ";
    if (res->decode_error && !c->draining) {
        /* a tag that fails is corruption like any other, and says so first */
        const char *f = strstr(res->decode_error, failed);
        if (f)
            err_set(&c->decode_err, ERR_PERMANENT, ERR_CODE_INVALID, "%sbackup %s: %s", failed,
                    c->id, f + sizeof(failed) - 1);
        else
            err_set(&c->decode_err, ERR_PERMANENT, ERR_CODE_INVALID, "backup %s: %s", c->id,
                    res->decode_error);
        c->draining = 1;
    }
    if (!c->draining && !c->hash_only && bfile_reader_end(c->reader, &c->decode_err) != 0)
        c->draining = 1;
    if (strcmp(res->sha256, c->checksum) != 0) {
        err_set(&e, ERR_PERMANENT, ERR_CODE_INVALID,
                "Backup checksum verification failed: backup %s has SHA-256 %.16s..., its record "
                "says %.16s...%s%s",
                c->id, res->sha256, c->checksum, c->draining ? "; and: " : "",
                c->draining ? c->decode_err.msg : "");
        c->done(c, &e, c->data);
        return;
    }
    c->done(c, c->draining ? &c->decode_err : NULL, c->data);
}

BCheck *bcheck_start(Storage *store, const BCheckTarget *t, int check_json, BCheckItemCb item,
                     BCheckDoneCb done, void *data) {
    BCheck *c = xcalloc(1, sizeof(*c));
    c->id = xstrdup(t->backup_id);
    c->user = xstrdup(t->user_id);
    c->checksum = xstrdup(t->checksum);
    c->item = item;
    c->done = done;
    c->data = data;
    c->reader = bfile_reader_new(&reader_cb, check_json, c);
    FilterChain *dec = codec_decoder(t->codecs, t->crypt);
    if (dec == NULL) { /* encrypted, no key: the stored bytes are hashed as they are */
        c->hash_only = 1;
        dec = filter_chain_new();
    }
    c->rd = storage_read_new(store, t->key, dec, on_plain, on_read, c);
    return c;
}

void bcheck_hold(BCheck *c) {
    c->held = 1;
}

void bcheck_resume(BCheck *c) {
    c->held = 0;
    storage_read_resume(c->rd);
}

void bcheck_stop(BCheck *c) {
    storage_read_stop(c->rd);
}

void bcheck_free(BCheck *c) {
    if (c == NULL)
        return;
    storage_read_free(c->rd);
    bfile_reader_free(c->reader);
    free(c->counts);
    free(c->id);
    free(c->user);
    free(c->checksum);
    free(c);
}
