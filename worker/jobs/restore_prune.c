/*
 * restore_prune: a restore stages only what changed since its backup.
 *
 * Change tracking (proto/sql/004, 014) stamps every written row with its transaction and leaves
 * a tombstone for every deleted one. A row whose stamp the backup's snapshot sees, and whose
 * key left no tombstone since, is exactly the backup's row: it is neither staged nor compared,
 * and the delete leaves it alone. So a restore onto an intact tenant reads the object and
 * writes nothing, and one after a few changes stages those few.
 *
 * Only when tracking can be trusted for the whole time since the snapshot (the gate): no
 * tombstone of the user written since was purged (016), the snapshot is of this database, and
 * each table's stamp and tombstone triggers were in place, unchanged, when it was taken. Else,
 * or for a table whose key is neither a uuid nor an integer, every row is staged, as before.
 * The keys written or deleted since come in one COPY and are held as 16 bytes each (keyset);
 * past MAX_CHANGED the restore stages everything instead, keeping memory bounded.
 *
 * A child deleted with its parent (an order's items) leaves no tombstone (proto/sql/017): the
 * parent's stands for it. So a child table is pruned only with its parent, whose deleted keys
 * are kept apart: a backed-up child of a parent deleted since is staged, and the database's
 * children of such a key count as changed (scope_prune_keys_sql).
 */
#include "restore_intern.h"

#include "jobs.h"
#include "log.h"
#include "pgcopy.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANGED (2u * 1000 * 1000) /* keys held: 64 MB at most */

static void setup(JobRt *rt, Restore *r) {
    restore_setup_stmts(r);
    restore_run_stmt(rt, r);
}

static void free_sets(Restore *r) {
    for (int i = 0; r->changed && i < scope_count(r->scope); i++) {
        keyset_free(r->changed[i]);
        keyset_free(r->deleted[i]);
    }
    free(r->changed);
    free(r->deleted);
    free(r->cover);
    r->changed = r->deleted = NULL;
    r->cover = NULL;
}

/* A child table is pruned only while its covering parent is: the parent's deleted keys say
 * which of its backed-up rows are gone with their parent. */
static void prune_children(Restore *r) {
    for (int i = 0; r->prune && i < scope_count(r->scope); i++) {
        int p = scope_covering_parent(r->scope, i);
        if (r->prune[i] && p >= 0 && (!r->prune[p] || (r->changed && !r->deleted[p]))) {
            r->prune[i] = 0;
            if (r->kept)
                r->kept[i] = r->kept_sum[i] = 0;
        }
    }
}

void restore_prune_free(Restore *r) {
    free_sets(r);
    free(r->prune);
    free(r->kept);
    free(r->kept_sum);
    free(r->left);
    free(r->left_sum);
    free(r->snapshot);
    free(r->listed);
    r->listed = NULL;
    r->prune = NULL;
    r->kept = r->kept_sum = r->left = r->left_sum = NULL;
    r->snapshot = NULL;
}

/* Every row is staged after all. */
static void stage_all(JobRt *rt, Restore *r, const char *why) {
    log_info(job_log_id(jobrt_job(rt)), "every row of the backup is staged: %s", why);
    int n = scope_count(r->scope);
    free_sets(r);
    if (r->prune)
        memset(r->prune, 0, (size_t)n);
    if (r->kept)
        memset(r->kept, 0, (size_t)n * sizeof(uint64_t));
}

int restore_prune_mismatch(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope);
    for (int i = 0; r->changed && i < n; i++) {
        if (!r->prune[i] || (r->left[i] == r->kept[i] && r->left_sum[i] == r->kept_sum[i]))
            continue;
        log_warn(job_log_id(jobrt_job(rt)),
                 "backup %s disagrees with the database's history: %" PRIu64
                 " %s rows left out as unchanged since its snapshot, %" PRIu64
                 " in the database%s; read again, every row staged",
                 r->steps[r->si].id, r->left[i], scope_table(r->scope, i), r->kept[i],
                 r->left[i] == r->kept[i] ? " (with other keys)" : "");
        stage_all(rt, r, "the backup disagrees with the database's history");
        return 1;
    }
    return 0;
}

void restore_prune_start(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope), any = 0;
    if (!r->prunable || r->snapshot == NULL || !scope_snapshot_valid(r->snapshot)) {
        setup(rt, r);
        return;
    }
    r->prune = xcalloc((size_t)n, 1);
    for (int i = 0; i < n; i++)
        any += r->selected[i] && (r->prune[i] = scope_prune_kind(r->scope, i)) != 0;
    if (!any) {
        setup(rt, r);
        return;
    }
    Buf sql = BUF_INIT;
    scope_prune_gate_sql(r->scope, (const unsigned char *)r->prune, &sql);
    const char *v[] = {r->snapshot, r->spec->user_id};
    restore_query(rt, r, ST_PRUNE_GATE, 0, sql.data, 2, v);
    buf_free(&sql);
}

void restore_prune_gate(JobRt *rt, Restore *r, PGresult *res) {
    int n = scope_count(r->scope), any = 0;
    r->listed = xstrdup(PQgetvalue(res, 0, 0));
    if (!scope_snapshot_valid(r->listed)) {
        stage_all(rt, r, "the database's present snapshot could not be read");
    } else if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        stage_all(rt, r, "tombstones written since the backup's snapshot were purged");
    } else if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        stage_all(rt, r, "the backup's snapshot is not of this database's recent past");
    } else {
        Buf off = BUF_INIT;
        for (int i = 0; i < n; i++) {
            if (r->prune[i] && strcmp(PQgetvalue(res, 0, 3 + i), "t") != 0) {
                r->prune[i] = 0;
                buf_printf(&off, "%s%s", off.len ? ", " : "", scope_table(r->scope, i));
            }
            any += r->prune[i] != 0;
        }
        if (off.len)
            log_info(job_log_id(jobrt_job(rt)),
                     "every backed-up row of %s is staged: its tracking triggers were not in "
                     "place, unchanged, since the backup's snapshot",
                     off.data);
        buf_free(&off);
        prune_children(r);
        any = 0;
        for (int i = 0; i < n; i++)
            any += r->prune[i] != 0;
    }
    if (!any) {
        setup(rt, r);
        return;
    }
    r->changed = xcalloc((size_t)n, sizeof(KeySet *));
    r->deleted = xcalloc((size_t)n, sizeof(KeySet *));
    r->cover = xcalloc((size_t)n, sizeof(int));
    r->kept = xcalloc((size_t)n, sizeof(uint64_t));
    r->kept_sum = xcalloc((size_t)n, sizeof(uint64_t));
    r->left = xcalloc((size_t)n, sizeof(uint64_t));
    r->left_sum = xcalloc((size_t)n, sizeof(uint64_t));
    for (int i = 0; i < n; i++) {
        if (r->prune[i])
            r->changed[i] = keyset_new();
        int p = r->cover[i] = scope_covering_parent(r->scope, i);
        if (r->prune[i] && p >= 0 && r->deleted[p] == NULL)
            r->deleted[p] = keyset_new();
    }
    Buf sql = BUF_INIT;
    scope_prune_keys_sql(r->scope, (const unsigned char *)r->prune, r->snapshot, &sql);
    r->state = ST_PRUNE_KEYS;
    jobrt_copy_out(rt, ST_PRUNE_KEYS, sql.data);
    buf_free(&sql);
}

/* One line of the keys' COPY: "table\tkey\t1\t\N" (written since), "table\tkey\t2\t\N"
 * (deleted since) or "table\t\N\tcount\tdigest". */
int restore_prune_row(JobRt *rt, Restore *r, const JobEv *ev) {
    const char *p = ev->buf, *e = ev->buf + ev->len;
    if (r->changed == NULL) /* given up: the rest is read and dropped */
        return PG_COPY_CONTINUE;
    while (e > p && (e[-1] == '\n' || e[-1] == '\r'))
        e--;
    char *end;
    long i = strtol(p, &end, 10);
    const char *k = end + 1, *ke = k < e ? memchr(k, '\t', (size_t)(e - k)) : NULL;
    if (end == p || *end != '\t' || i < 0 || i >= scope_count(r->scope) || r->changed[i] == NULL ||
        ke == NULL) {
        stage_all(rt, r, "the database's list of changed keys could not be read");
        return PG_COPY_CONTINUE;
    }
    if (!r->prune[i]) /* this table is staged whole */
        return PG_COPY_CONTINUE;
    if (ke - k == 2 && memcmp(k, "\\N", 2) == 0) {
        char *d;
        r->kept[i] += strtoull(ke + 1, &d, 10);
        r->kept_sum[i] += *d == '\t' ? strtoull(d + 1, NULL, 10) : 0;
        return PG_COPY_CONTINUE;
    }
    unsigned char key[KEYSET_KEY_LEN];
    if (keyset_key(r->prune[i], k, (size_t)(ke - k), key) != 0) {
        /* a tombstone's key of another shape (written by hand?): this table is staged whole */
        log_info(job_log_id(jobrt_job(rt)),
                 "every backed-up row of %s is staged: a changed key is not a %s",
                 scope_table(r->scope, (int)i), r->prune[i] == 'u' ? "uuid" : "number");
        r->prune[i] = 0;
        r->kept[i] = r->kept_sum[i] = 0;
        keyset_free(r->deleted[i]); /* its children cannot be told apart either */
        r->deleted[i] = NULL;
        prune_children(r);
        return PG_COPY_CONTINUE;
    }
    r->nchanged += keyset_add(r->changed[i], key);
    if (r->deleted[i] && ke + 1 < e && ke[1] == '2')
        keyset_add(r->deleted[i], key);
    if (r->nchanged > MAX_CHANGED)
        stage_all(rt, r, "more than 2,000,000 rows changed since the backup's snapshot");
    return PG_COPY_CONTINUE;
}

void restore_prune_keys_done(JobRt *rt, Restore *r) {
    int n = scope_count(r->scope);
    Buf tables = BUF_INIT;
    for (int i = 0; r->changed && i < n; i++) {
        if (!r->prune[i])
            continue;
        buf_printf(&tables, "%s%s", tables.len ? ", " : "", scope_table(r->scope, i));
    }
    if (tables.len)
        log_info(job_log_id(jobrt_job(rt)),
                 "only what changed since the backup's snapshot is staged (%s): %" PRIu64
                 " keys written or deleted since",
                 tables.data, r->nchanged);
    buf_free(&tables);
    setup(rt, r);
}

int restore_prune_skip(Restore *r, int i, const JobEv *ev) {
    const char *v = ev->buf;
    size_t n = ev->len;
    unsigned char key[KEYSET_KEY_LEN];
    /* a step's deleted keys are all staged, changed since or not: a row an earlier step holds
     * can be staged for another reason than its own key (its parent deleted since: 017; its key
     * deleted by a parent's new owner), and only the later step's deletion then drops it */
    if (ev->section != 0)
        return 0;
    /* a row whose key cannot be read is staged: the staging and its checks say what is wrong */
    if (pgcopy_member(ev->buf, ev->len, scope_key_column(r->scope, i), &v, &n) != 0)
        return 0;
    if (keyset_key(r->prune[i], v, n, key) != 0 || keyset_has(r->changed[i], key))
        return 0;
    int p = r->cover[i];
    if (p >= 0) { /* gone with its parent since: staged, like the parent */
        const char *pv;
        size_t pn;
        unsigned char pk[KEYSET_KEY_LEN];
        if (r->deleted[p] == NULL ||
            pgcopy_member(ev->buf, ev->len, scope_parent_column(r->scope, i), &pv, &pn) != 0 ||
            keyset_key(r->prune[p], pv, pn, pk) != 0 || keyset_has(r->deleted[p], pk))
            return 0;
    }
    r->left[i]++;
    r->left_sum[i] += keyset_digest(r->prune[i], key);
    return 1;
}
