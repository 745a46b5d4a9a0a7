/* scope's insides, shared by scope.c (the scope, backup SQL) and scope_restore.c (restore
 * SQL). Not for other modules. */
#ifndef BW_SCOPE_INTERN_H
#define BW_SCOPE_INTERN_H

#include "scope/scope.h"

/* A column as the catalog describes it: its type (as regtype prints it, checked to be a plain
 * type name), how restore stages it (kind, SCOPE_KIND_*) and whether equality of two values
 * means they are the same value (exact), and the single-column foreign key it carries, if any. */
typedef struct {
    char name[SCOPE_NAME_MAX + 1];
    char type[SCOPE_NAME_MAX + 1];
    char kind;
    char json; /* how backup writes its JSON: a pgjson kind, or SCOPE_KIND_PG (to_json) */
    int exact;
    char ref_table[SCOPE_NAME_MAX + 1], ref_col[SCOPE_NAME_MAX + 1];
} Column;

typedef struct {
    char name[SCOPE_NAME_MAX + 1], key[SCOPE_NAME_MAX + 1], user_col[SCOPE_NAME_MAX + 1];
    char parent[SCOPE_NAME_MAX + 1], parent_col[SCOPE_NAME_MAX + 1];
    int order;
    Column *cols;
    int ncols, capcols;
} Table;

struct Scope {
    Table *t;
    int n, cap;
};

const Column *scope_col(const Table *t, const char *c);
/* The type of column c of t: checked by scope_check for every column a key comparison uses. */
const char *scope_col_type(const Table *t, const char *c);
/* A foreign key of t that restore must check beyond its user and parent columns: one that points
 * at another table of the scope. */
int scope_checked_ref(const Scope *s, const Table *t, const Column *c);
/* WHERE condition selecting the user's rows of t (recursing through parents); qual prefixes
 * the first level's column ("x." for an aliased table, or ""). */
void scope_user_filter(const Scope *s, const Table *t, const char *qual, Buf *sql);
/* WHERE condition selecting the tombstones of t that are the user's (scope.c). */
void scope_tombstone_filter(const Scope *s, const Table *t, Buf *sql);
/* The tracking stamp: not backed up, not restored. */
int scope_is_stamp(const Column *c);

#endif
