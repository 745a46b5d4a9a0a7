/* changes: the change segment format (changes.h). A row goes through pgjson, the same writer
 * as a backup's rows: the tuple's text values are put in COPY's text form first, which is
 * what pgjson reads (pgoutput's values are the types' output text, as COPY's are). */
#define _GNU_SOURCE /* memmem */
#include "capture/changes.h"

#include "base/json.h"
#include "pg/pgcopy.h"
#include "pg/pgjson.h"

#include <stdlib.h>
#include <string.h>

struct ChangesTable {
    int index;
    char *name;
    int ncols;             /* the scope's staged columns */
    int *rcol;             /* each one's column in the relation */
    char **col;            /* and its name */
    int key, user, parent; /* relation columns, -1 none */
    int nrel;
    char **relcols; /* the relation's column names, for changes_select_list */
    PgJsonRow *json;
    Buf line;
};

static int rel_col(const PgoRelation *rel, const char *name) {
    return name && name[0] ? pgo_column(rel, name) : -1;
}

ChangesTable *changes_table_new(const Scope *s, int i, const PgoRelation *rel, Err *err) {
    ChangesTable *t = xcalloc(1, sizeof(*t));
    t->index = i;
    t->name = xstrdup(scope_table(s, i));
    t->ncols = scope_stage_columns(s, i);
    t->rcol = xcalloc((size_t)t->ncols + 1, sizeof(int));
    t->col = xcalloc((size_t)t->ncols + 1, sizeof(char *));
    t->json = pgjson_row_new();
    for (int c = 0; c < t->ncols; c++) {
        char kind;
        const char *name = scope_stage_column(s, i, c, &kind);
        t->col[c] = xstrdup(name);
        t->rcol[c] = rel_col(rel, name);
        char jk = scope_json_kind(s, i, c);
        /* a type PostgreSQL writes with to_json in a backup (an extension's): its text here */
        pgjson_row_add(t->json, name, jk == SCOPE_KIND_PG || jk == 0 ? PGJSON_STRING : jk);
    }
    t->key = rel_col(rel, scope_key_column(s, i));
    t->user = rel_col(rel, scope_user_column(s, i));
    t->parent = rel_col(rel, scope_parent_column(s, i));
    t->nrel = rel->ncols;
    t->relcols = xcalloc((size_t)rel->ncols + 1, sizeof(char *));
    for (int c = 0; c < rel->ncols; c++)
        t->relcols[c] = xstrdup(rel->cols[c].name);
    const char *missing = t->key < 0                                  ? scope_key_column(s, i)
                          : scope_user_column(s, i)[0] && t->user < 0 ? scope_user_column(s, i)
                          : scope_parent_column(s, i)[0] && t->parent < 0
                              ? scope_parent_column(s, i)
                              : NULL;
    if (missing) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "capture: table %s as the WAL describes it has no column %s", t->name, missing);
        changes_table_free(t);
        return NULL;
    }
    return t;
}

void changes_table_free(ChangesTable *t) {
    if (t == NULL)
        return;
    for (int c = 0; c < t->ncols; c++)
        free(t->col[c]);
    for (int c = 0; c < t->nrel; c++)
        free(t->relcols[c]);
    free(t->relcols);
    free(t->col);
    free(t->rcol);
    free(t->name);
    pgjson_row_free(t->json);
    buf_free(&t->line);
    free(t);
}

int changes_table_index(const ChangesTable *t) {
    return t->index;
}
const char *changes_table_name(const ChangesTable *t) {
    return t->name;
}
int changes_key_col(const ChangesTable *t) {
    return t->key;
}
int changes_user_col(const ChangesTable *t) {
    return t->user;
}
int changes_parent_col(const ChangesTable *t) {
    return t->parent;
}

int changes_has_unchanged(const ChangesTable *t, const PgoTuple *tup) {
    for (int c = 0; c < t->ncols; c++)
        if (t->rcol[c] >= 0 && t->rcol[c] < tup->n && tup->v[t->rcol[c]].kind == 'u')
            return 1;
    return 0;
}

void changes_select_list(const ChangesTable *t, Buf *sql) {
    for (int c = 0; c < t->nrel; c++)
        buf_printf(sql, "%s\"%s\"::text", c ? ", " : "", t->relcols[c]);
}

int changes_value(const PgoTuple *tup, int col, Buf *out) {
    buf_reset(out);
    if (col < 0 || col >= tup->n || tup->v[col].kind != 't')
        return -1;
    buf_append(out, tup->v[col].val, tup->v[col].len);
    return 0;
}

/* A JSON string (buf_json_escape writes no quotes). */
static void put_str(Buf *b, const char *s) {
    buf_puts(b, "\"");
    buf_json_escape(b, s, strlen(s));
    buf_puts(b, "\"");
}

static void meta(const ChangesMeta *m, const char *table, Buf *out) {
    char lsn[24], when[32];
    pgo_lsn_format(m->lsn, lsn);
    pgo_time_format(m->time, when);
    buf_printf(out, "{\"lsn\":\"%s\",\"time\":\"%s\",\"xid\":%u,\"table\":", lsn, when, m->xid);
    put_str(out, table);
    buf_printf(out, ",\"op\":\"%c\"", m->op);
}

int changes_line(ChangesTable *t, const ChangesMeta *m, const char *key, const PgoTuple *row,
                 Buf *out, Err *err) {
    size_t mark = out->len;
    meta(m, t->name, out);
    if (key) {
        buf_puts(out, ",\"key\":");
        put_str(out, key);
    }
    if (row) {
        Buf *line = &t->line;
        buf_reset(line);
        int unchanged = 0;
        for (int c = 0; c < t->ncols; c++) {
            int rc = t->rcol[c];
            if (c)
                buf_puts(line, "\t");
            const PgoValue *v = rc >= 0 && rc < row->n ? &row->v[rc] : NULL;
            if (v && v->kind == 't')
                pgcopy_text(line, v->val, v->len);
            else
                buf_puts(line, "\\N"); /* null, unchanged, or a column the row lacks */
            unchanged += v && v->kind == 'u';
            if (v && v->kind == 'b') {
                err_set(err, ERR_PERMANENT, ERR_CODE_PROTOCOL, "capture: %s.%s came in binary form",
                        t->name, t->col[c]);
                out->len = mark;
                return -1;
            }
        }
        buf_puts(out, ",\"row\":");
        if (pgjson_row_write(t->json, line->data ? line->data : "", line->len, out, err) != 0) {
            out->len = mark;
            out->data[mark] = 0;
            return -1;
        }
        if (unchanged) {
            buf_puts(out, ",\"unchanged\":[");
            int first = 1;
            for (int c = 0; c < t->ncols; c++) {
                int rc = t->rcol[c];
                if (rc >= 0 && rc < row->n && row->v[rc].kind == 'u') {
                    buf_puts(out, first ? "" : ",");
                    put_str(out, t->col[c]);
                    first = 0;
                }
            }
            buf_puts(out, "]");
        }
    }
    buf_puts(out, "}\n");
    return 0;
}

void changes_truncate_line(const char *table, const ChangesMeta *m, Buf *out) {
    meta(m, table, out);
    buf_puts(out, "}\n");
}

void changes_where_delete_line(const char *table, const char *column, const char *value,
                               const ChangesMeta *m, Buf *out) {
    meta(m, table, out);
    buf_puts(out, ",\"where\":{");
    put_str(out, column);
    buf_puts(out, ":");
    put_str(out, value);
    buf_puts(out, "}}\n");
}

void changes_header(const ChangesHeader *h, Buf *out) {
    char a[24], b[24];
    pgo_lsn_format(h->start_lsn, a);
    pgo_lsn_format(h->end_lsn, b);
    buf_printf(out, "{\"format\":\"%s\",\"version\":%d,\"segment\":", CHANGES_FORMAT,
               CHANGES_VERSION);
    put_str(out, h->segment);
    buf_puts(out, ",\"user_id\":");
    put_str(out, h->user_id);
    buf_printf(out, ",\"epoch\":%llu,\"start_lsn\":\"%s\",\"end_lsn\":\"%s\",\"codecs\":%s",
               (unsigned long long)h->epoch, a, b, h->codecs_json ? h->codecs_json : "[]");
    buf_puts(out, ",\"created_at\":");
    put_str(out, h->created_at);
    buf_puts(out, "}\n");
}

void changes_trailer(uint64_t changes, uint64_t transactions, Buf *out) {
    buf_printf(out, "{\"changes\":%llu,\"transactions\":%llu}\n", (unsigned long long)changes,
               (unsigned long long)transactions);
}

/* ---- reading ---- */

/* A JSON string's text (json_field keeps escapes) decoded into out; -1 when malformed. Keys
 * and column names are short: \uXXXX beyond ASCII is written as UTF-8. */
static int unescape(const char *in, char *out, size_t outsz) {
    size_t o = 0;
    for (const char *p = in; *p; p++) {
        unsigned c = (unsigned char)*p;
        if (c == '\\') {
            p++;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
                c = (unsigned char)*p;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                char hex[5] = {0};
                for (int k = 0; k < 4; k++)
                    if (!(hex[k] = p[k + 1]))
                        return -1;
                c = (unsigned)strtoul(hex, NULL, 16);
                p += 4;
                if (c >= 0x80) { /* two or three bytes of UTF-8 (no surrogate pairs in keys) */
                    if (o + 3 >= outsz)
                        return -1;
                    if (c < 0x800) {
                        out[o++] = (char)(0xC0 | (c >> 6));
                    } else {
                        out[o++] = (char)(0xE0 | (c >> 12));
                        out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
                    }
                    c = 0x80 | (c & 0x3F);
                }
                break;
            }
            default:
                return -1;
            }
        }
        if (o + 1 >= outsz)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static int field_str(const char *line, size_t len, const char *name, char *out, size_t outsz) {
    char raw[1024];
    if (json_field(line, len, name, raw, sizeof(raw)) != 0)
        return -1;
    return unescape(raw, out, outsz);
}

int changes_read(const char *buf, size_t len, const char *user_id, ChangesItemCb cb, void *data,
                 Err *err) {
    const char *p = buf, *end = buf + len;
    uint64_t n = 0, lineno = 0;
    int trailer = 0;
    char v[512], table[128], key[512], wcol[128], wval[512], op[4], xid[16];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        p = nl ? nl + 1 : end;
        lineno++;
        if (trailer || !json_valid(line, l, NULL))
            goto bad;
        if (lineno == 1) {
            char ver[8];
            if (field_str(line, l, "format", v, sizeof(v)) != 0 || strcmp(v, CHANGES_FORMAT) ||
                json_field(line, l, "version", ver, sizeof(ver)) != 0 ||
                atoi(ver) != CHANGES_VERSION)
                goto bad;
            if (field_str(line, l, "user_id", v, sizeof(v)) != 0 || strcmp(v, user_id) != 0) {
                err_set(err, ERR_PERMANENT, ERR_CODE_INVALID,
                        "change segment of user '%s' where one of %s was expected", v, user_id);
                return -1;
            }
            continue;
        }
        if (json_field(line, l, "changes", v, sizeof(v)) == 0 &&
            json_field(line, l, "lsn", op, sizeof(op)) != 0) {
            if (strtoull(v, NULL, 10) != n)
                goto bad;
            trailer = 1;
            continue;
        }
        if (field_str(line, l, "table", table, sizeof(table)) != 0 ||
            field_str(line, l, "op", op, sizeof(op)) != 0 || strlen(op) != 1 ||
            json_field(line, l, "xid", xid, sizeof(xid)) != 0)
            goto bad;
        ChangesItem it = {.table = table, .op = op[0], .xid = (uint32_t)strtoul(xid, NULL, 10)};
        if (field_str(line, l, "lsn", v, sizeof(v)) != 0 || pgo_lsn_parse(v, &it.lsn) != 0)
            goto bad;
        if (op[0] == 'd' && json_field(line, l, "key", v, sizeof(v)) != 0) {
            /* a "where" delete: {"where":{"column":"value"}} */
            const char *w = memmem(line, l, "\"where\":{", 9);
            char raw[1024];
            if (w == NULL)
                goto bad;
            w += 9;
            const char *colon = memchr(w, ':', (size_t)(line + l - w));
            if (colon == NULL || *w != '"' || colon[-1] != '"' || (size_t)(colon - w - 2) >= 128)
                goto bad;
            memcpy(raw, w + 1, (size_t)(colon - w - 2));
            raw[colon - w - 2] = '\0';
            if (unescape(raw, wcol, sizeof(wcol)) != 0 ||
                field_str(line, l, wcol, wval, sizeof(wval)) != 0)
                goto bad;
            it.where_col = wcol;
            it.where_val = wval;
        } else if (op[0] != 't') {
            if ((op[0] != 'i' && op[0] != 'u' && op[0] != 'd') ||
                field_str(line, l, "key", key, sizeof(key)) != 0)
                goto bad;
            it.key = key;
            if (pgcopy_member(line, l, "key", &it.key_json, &it.key_json_len) != 0)
                goto bad;
            if (op[0] != 'd' && pgcopy_member(line, l, "row", &it.row, &it.row_len) != 0)
                goto bad;
            /* "unchanged" is written after the row, last (changes_line): looked for there,
             * not by skipping the row's JSON a second time */
            static const char U[] = ",\"unchanged\":[";
            const char *after = it.row ? it.row + it.row_len : NULL, *le = line + l;
            if (op[0] == 'u' && after && (size_t)(le - after) > sizeof(U) &&
                memcmp(after, U, sizeof(U) - 1) == 0 && le[-1] == '}' && le[-2] == ']') {
                it.unchanged = after + sizeof(U) - 2;
                it.unchanged_len = (size_t)(le - 1 - it.unchanged);
            }
        }
        n++;
        if (cb(&it, data, err) != 0)
            return -1;
    }
    if (trailer)
        return 0;
bad:
    err_set(err, ERR_PERMANENT, ERR_CODE_INVALID, "change segment line %llu is not of its format",
            (unsigned long long)lineno);
    return -1;
}
