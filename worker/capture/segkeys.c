/* segkeys: an incremental's keys from the change segments (see segkeys.h). */
#include "capture/segkeys.h"

#include "base/strmap.h"
#include "capture/changes.h"
#include "pg/pgsnap.h"

#include <stdlib.h>
#include <string.h>

struct SegKeys {
    const Scope *scope;
    char user[40];
    PgSnap base, snap;
    StrMap **keys; /* per scope table: the keys, values unused */
    int n;
    int no_keys; /* the last segment stopped at a change that names no keys */
};

SegKeys *segkeys_new(const Scope *s, const char *user_id, const char *base, const char *snap,
                     Err *err) {
    SegKeys *k = xcalloc(1, sizeof(*k));
    k->scope = s;
    snprintf(k->user, sizeof(k->user), "%s", user_id);
    if (pgsnap_parse(base, &k->base, err) != 0 || pgsnap_parse(snap, &k->snap, err) != 0) {
        segkeys_free(k);
        return NULL;
    }
    k->n = scope_count(s);
    k->keys = xcalloc((size_t)k->n, sizeof(*k->keys));
    for (int i = 0; i < k->n; i++)
        k->keys[i] = strmap_new();
    return k;
}

void segkeys_free(SegKeys *k) {
    if (k == NULL)
        return;
    for (int i = 0; i < k->n; i++)
        strmap_free(k->keys[i], NULL);
    free(k->keys);
    pgsnap_free(&k->base);
    pgsnap_free(&k->snap);
    free(k);
}

/* A committed transaction's changes belong to the incremental: its snapshot sees it, the
 * base's does not. */
static int ours(const SegKeys *k, uint32_t xid) {
    uint64_t x = pgsnap_widen(&k->snap, xid);
    return pgsnap_visible(&k->snap, x) && !pgsnap_visible(&k->base, x);
}

static int ours_of(uint32_t xid, const void *data) {
    return ours(data, xid);
}

int segkeys_wanted(const SegKeys *k, const char *xids) {
    return pgsnap_xids_any(xids, ours_of, k);
}

static int on_item(const ChangesItem *it, void *data, Err *err) {
    SegKeys *k = data;
    if (!ours(k, it->xid))
        return 0;
    int i = scope_find(k->scope, it->table);
    if (i < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "a change segment names table '%s', which is not in the backup scope", it->table);
        return -1;
    }
    if (it->key == NULL) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "%s of %s since the base (transaction %u) names no keys",
                it->op == 't' ? "a TRUNCATE" : "an order moved to another user: the delete",
                it->table, it->xid);
        k->no_keys = 1;
        return -1;
    }
    if (strmap_get(k->keys[i], it->key) == NULL)
        strmap_put(k->keys[i], it->key, (void *)1);
    return 0;
}

int segkeys_add(SegKeys *k, const char *buf, size_t len, Err *err) {
    k->no_keys = 0;
    int rc = changes_read(buf, len, k->user, on_item, k, err);
    return rc != 0 && k->no_keys ? SEGKEYS_NO_KEYS : rc;
}

void segkeys_array(const SegKeys *k, int i, Buf *out) {
    buf_puts(out, "{");
    size_t pos = 0;
    const char *key;
    void *v;
    int first = 1;
    while (strmap_next(k->keys[i], &pos, &key, &v)) {
        buf_puts(out, first ? "\"" : ",\"");
        for (const char *p = key; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_append(out, "\\", 1);
            buf_append(out, p, 1);
        }
        buf_puts(out, "\"");
        first = 0;
    }
    buf_puts(out, "}");
}

size_t segkeys_count(const SegKeys *k, int i) {
    return strmap_count(k->keys[i]);
}

size_t segkeys_total(const SegKeys *k) {
    size_t n = 0;
    for (int i = 0; i < k->n; i++)
        n += strmap_count(k->keys[i]);
    return n;
}
