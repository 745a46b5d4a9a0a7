/*
 * strmap: a map from strings to pointers, one open-addressing table (linear probing, deletion
 * by backward shift, so no tombstones pile up). Keys are copied; values are the caller's.
 */
#ifndef BW_STRMAP_H
#define BW_STRMAP_H

#include <stddef.h>

typedef struct StrMap StrMap;

StrMap *strmap_new(void);
/* free_value (may be NULL) is called on every value left. */
void strmap_free(StrMap *m, void (*free_value)(void *));
void *strmap_get(const StrMap *m, const char *key);
/* Set key's value; the previous value (or NULL) comes back for the caller to free. */
void *strmap_put(StrMap *m, const char *key, void *value);
/* Remove key; its value (or NULL) comes back. */
void *strmap_del(StrMap *m, const char *key);
size_t strmap_count(const StrMap *m);
/* Iterate: *pos starts at 0; returns 1 with the next key and value, 0 at the end. The map must
 * not change during an iteration. */
int strmap_next(const StrMap *m, size_t *pos, const char **key, void **value);

#endif
