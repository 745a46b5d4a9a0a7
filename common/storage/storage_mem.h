/*
 * storage_mem: a store in memory, the fake of storage.h for in-process tests of
 * what runs over a store (streams, checked reads, job state machines). Every
 * answer comes on a later loop turn, as a real driver's would, and faults can be
 * planned: a streaming write that fails after some bytes, a put or get refused.
 */
#ifndef BW_STORAGE_MEM_H
#define BW_STORAGE_MEM_H

#include "storage/storage.h"

Storage *storage_mem_new(uv_loop_t *loop);
/* The state of the store behind s (s made by storage_mem_new). */
typedef struct MemStore MemStore;
MemStore *storage_mem_of(Storage *s);
/* The object at key (NULL if none); its length in *len. */
const char *storage_mem_object(MemStore *m, const char *key, size_t *len);
/* Replace or create an object (copied). */
void storage_mem_set(MemStore *m, const char *key, const void *data, size_t len);
/* Faults: the next streaming write fails (AccessDenied) once it took more than after bytes;
 * operations whose key contains text fail with code (e.g. "AccessDenied"); "" clears. */
void storage_mem_fail_write_after(MemStore *m, size_t after);
void storage_mem_fail_key(MemStore *m, const char *text, const char *code);
/* Streaming reads deliver at most this many bytes a turn (default 64 KiB). */
void storage_mem_set_read_piece(MemStore *m, size_t n);
/* Sinks and sources still open (0 once every stream ended and was freed). */
int storage_mem_open_streams(const MemStore *m);

#endif
