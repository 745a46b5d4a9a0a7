/*
 * scopecache: the last backup scope a worker read from the catalog, kept with
 * the catalog's fingerprint (scope_fingerprint_sql) when it was read. A backup
 * reads the fingerprint with its snapshot, in the statement it sends anyway;
 * while it matches, the scope is built from the kept rows and the catalog is
 * not read again (two statements less a small backup, and the scope query is
 * the largest of them). One per worker process (services_scope_cache).
 */
#ifndef BW_SCOPECACHE_H
#define BW_SCOPECACHE_H

#include "scope/scope.h"

#include <libpq-fe.h>
#include <stdint.h>

typedef struct ScopeCache ScopeCache;

ScopeCache *scopecache_new(void);
void scopecache_free(ScopeCache *c);
/* A scope built from the kept rows when they were read under fingerprint fp; NULL otherwise. */
Scope *scopecache_get(ScopeCache *c, const char *fp);
/* The scope kept last, whatever the catalog is now, and its fingerprint (fp_out, n bytes);
 * NULL if none. For a guess sent ahead: the caller checks the fingerprint once it has it and
 * counts a hit with scopecache_hit(). */
Scope *scopecache_latest(ScopeCache *c, char *fp_out, size_t n);
void scopecache_hit(ScopeCache *c);
/* Keep res (rows of scope_load_sql that made a valid scope, copied) under fingerprint fp. */
void scopecache_put(ScopeCache *c, const char *fp, const PGresult *res);
/* Scopes built from kept rows, and rows kept (catalog reads), since the start. */
uint64_t scopecache_hits(const ScopeCache *c);
uint64_t scopecache_reads(const ScopeCache *c);

#endif
