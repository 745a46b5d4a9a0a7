/* segreplay: change segments replayed into a restore's staging tables (see segreplay.h). */
#include "capture/segreplay.h"

#include "capture/changes.h"
#include "pg/pgsnap.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct SegReplay {
    SegReplayParams p;
    PgSnap base;
    int n;
    int step;
    uint64_t changes, last_lsn;
    unsigned char **unchanged; /* per table, per staged column */
    char suffix[16];
    SegReplaySink sink;
    void *data;
};

SegReplay *segreplay_new(const SegReplayParams *p, Err *err) {
    SegReplay *r = xcalloc(1, sizeof(*r));
    r->p = *p;
    if (pgsnap_parse(p->base_snapshot, &r->base, err) != 0) {
        free(r);
        return NULL;
    }
    r->n = scope_count(p->scope);
    r->step = p->first_step;
    r->unchanged = xcalloc((size_t)r->n, sizeof(*r->unchanged));
    for (int i = 0; i < r->n; i++)
        r->unchanged[i] = xcalloc((size_t)scope_stage_columns(p->scope, i) + 1, 1);
    return r;
}

void segreplay_free(SegReplay *r) {
    if (r == NULL)
        return;
    for (int i = 0; i < r->n; i++)
        free(r->unchanged[i]);
    free(r->unchanged);
    pgsnap_free(&r->base);
    free(r);
}

/* A transaction the base does not see: its changes are replayed (up to the cut). */
static int after_base(const SegReplay *r, uint32_t xid) {
    return !pgsnap_visible(&r->base, pgsnap_widen(&r->base, xid));
}

static int after_base_of(uint32_t xid, const void *data) {
    return after_base(data, xid);
}

int segreplay_wanted(const SegReplay *r, const char *xids) {
    return pgsnap_xids_any(xids, after_base_of, r);
}

/* The columns of an update's "unchanged" array: one line each, and noted for the restore. */
static int unchanged_cols(SegReplay *r, int i, const ChangesItem *it, Err *err) {
    const char *p = it->unchanged, *e = it->unchanged + it->unchanged_len;
    if (p == e || *p != '[')
        goto bad;
    p++;
    while (p < e && *p != ']') {
        if (*p != '"')
            goto bad;
        const char *name = ++p;
        while (p < e && *p != '"' && *p != '\\')
            p++;
        if (p >= e || *p != '"')
            goto bad; /* an escaped name is no name of the scope's */
        size_t len = (size_t)(p - name);
        p++;
        int c = 0;
        char kind;
        const char *col;
        for (; (col = scope_stage_column(r->p.scope, i, c, &kind)) != NULL; c++)
            if (strlen(col) == len && memcmp(col, name, len) == 0)
                break;
        if (col == NULL) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "a change of %s keeps a column '%.*s' unchanged that the table does not have",
                    it->table, (int)(len > 64 ? 64 : len), name);
            return -1;
        }
        r->unchanged[i][c] = 1;
        buf_printf(r->sink(SEGREPLAY_UNCHANGED, r->data), "%d\t%d\t%d\n", r->step, i, c);
        if (p < e && *p == ',' && p + 1 < e && p[1] == '"')
            p++;
        else if (p >= e || *p != ']')
            goto bad;
    }
    if (p < e && *p == ']')
        return 0;
bad:
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "a change of %s has a malformed unchanged list",
            it->table);
    return -1;
}

static int on_item(const ChangesItem *it, void *data, Err *err) {
    SegReplay *r = data;
    if (it->lsn < r->last_lsn) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "change segments out of commit order (a change at %" PRIx64 " after one at %" PRIx64
                "): do two segments overlap?",
                it->lsn, r->last_lsn);
        return -1;
    }
    r->last_lsn = it->lsn;
    if (it->lsn > r->p.cut_lsn || !after_base(r, it->xid))
        return 0;
    int i = scope_find(r->p.scope, it->table);
    if (i < 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                "a change segment names table '%s', which is not in the backup scope", it->table);
        return -1;
    }
    int step = r->step;
    Buf *b;
    switch (it->op) {
    case 'i':
    case 'u':
        if (r->p.shape[i] == NULL)
            break;
        b = r->sink(i, r->data);
        if (pgcopy_row_line(r->p.shape[i], it->row, it->row_len, r->suffix, b, err) != 0) {
            err_prefix(err, "a change of %s (key %.64s) cannot be staged", it->table, it->key);
            return -1;
        }
        if (it->unchanged && unchanged_cols(r, i, it, err) != 0)
            return -1;
        break;
    case 'd':
        if (!r->p.dels[i])
            break;
        if (it->key) {
            b = r->sink(SEGREPLAY_DELETED, r->data);
            buf_printf(b, "%d\t%d\t", step, i);
            if (pgcopy_value(PGCOPY_SCALAR, it->key_json, it->key_json_len, b, err) != 0)
                return -1;
            buf_puts(b, "\n");
            break;
        }
        /* a where delete names the parent's key of the table's own parent column */
        if (strcmp(it->where_col, scope_parent_column(r->p.scope, i)) != 0) {
            err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "a change of %s deletes the rows whose %s is given: only its parent column "
                    "%s can be",
                    it->table, it->where_col, scope_parent_column(r->p.scope, i));
            return -1;
        }
        b = r->sink(SEGREPLAY_CUT, r->data);
        buf_printf(b, "%d\t%d\t", step, i);
        pgcopy_text(b, it->where_val, strlen(it->where_val));
        buf_puts(b, "\n");
        break;
    case 't':
        if (r->p.dels[i])
            buf_printf(r->sink(SEGREPLAY_CUT, r->data), "%d\t%d\t\\N\n", step, i);
        break;
    default:
        break;
    }
    r->changes++;
    r->step++;
    snprintf(r->suffix, sizeof(r->suffix), "\t%d", r->step);
    if (r->step == INT32_MAX) {
        err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "%s",
                "more than 2^31 changes to replay: restore from a newer backup");
        return -1;
    }
    return 0;
}

int segreplay_add(SegReplay *r, const char *buf, size_t len, SegReplaySink sink, void *data,
                  Err *err) {
    r->sink = sink;
    r->data = data;
    snprintf(r->suffix, sizeof(r->suffix), "\t%d", r->step);
    return changes_read(buf, len, r->p.user_id, on_item, r, err);
}

uint64_t segreplay_changes(const SegReplay *r) {
    return r->changes;
}

int segreplay_next_step(const SegReplay *r) {
    return r->step;
}

int segreplay_unchanged(const SegReplay *r, int i, int c) {
    return i >= 0 && i < r->n && c >= 0 && c < scope_stage_columns(r->p.scope, i) &&
           r->unchanged[i][c];
}
