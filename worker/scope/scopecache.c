/*
 * scopecache: the last scope read, under the catalog's fingerprint (see scopecache.h).
 */
#include "scope/scopecache.h"

#include "base/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ScopeCache {
    char *fp;
    PGresult *res;
    uint64_t hits, reads;
};

ScopeCache *scopecache_new(void) {
    return xcalloc(1, sizeof(ScopeCache));
}

void scopecache_free(ScopeCache *c) {
    if (c == NULL)
        return;
    free(c->fp);
    PQclear(c->res);
    free(c);
}

Scope *scopecache_get(ScopeCache *c, const char *fp) {
    if (c == NULL || c->res == NULL || fp == NULL || fp[0] == '\0' || strcmp(c->fp, fp) != 0)
        return NULL;
    Err e;
    Scope *s = scope_from_result(c->res, &e); /* it made a scope once: it makes the same */
    if (s)
        c->hits++;
    return s;
}

Scope *scopecache_latest(ScopeCache *c, char *fp_out, size_t n) {
    if (c == NULL || c->res == NULL)
        return NULL;
    Err e;
    Scope *s = scope_from_result(c->res, &e);
    if (s)
        snprintf(fp_out, n, "%s", c->fp);
    return s;
}

void scopecache_hit(ScopeCache *c) {
    if (c)
        c->hits++;
}

void scopecache_put(ScopeCache *c, const char *fp, const PGresult *res) {
    if (c == NULL)
        return;
    c->reads++;
    if (fp == NULL || fp[0] == '\0')
        return;
    PGresult *copy = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (copy == NULL)
        return;
    free(c->fp);
    PQclear(c->res);
    c->fp = xstrdup(fp);
    c->res = copy;
}

uint64_t scopecache_hits(const ScopeCache *c) {
    return c ? c->hits : 0;
}

uint64_t scopecache_reads(const ScopeCache *c) {
    return c ? c->reads : 0;
}
