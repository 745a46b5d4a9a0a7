/*
 * filter: byte-stream steps (compress, decompress, encrypt, hash, count) chained in the
 * order data flows, after pgBackRest's IoFilterGroup.
 *
 * A job wires a chain once, pushes its bytes through filter_chain_write()
 * and ends with filter_chain_finish(); the last transforming stage's output
 * is appended to the caller's buffer, and observing stages (SHA-256, size)
 * see the bytes where they sit in the chain without copying them. Results
 * (a digest, a byte count) are read by filter name after finish. A new codec is a
 * filter and one row of codec.c's table, not an edit of the jobs.
 *
 *   FilterChain *c = filter_chain_new();
 *   filter_chain_add(c, filter_size_new("raw"));           // raw JSON size
 *   filter_chain_add(c, filter_gzip_new("gzip", 1));
 *   filter_chain_add(c, filter_sha256_new("sha256"));      // over the stored bytes
 *   filter_chain_write(c, json, n, &out, &err) ... filter_chain_finish(c, &out, &err);
 *   filter_chain_result(c, "sha256");
 *   filter_chain_free(c);
 *
 * (test_filter's test_header_example runs these lines.)
 *
 * The chain is synchronous and touches no loop: CPU-heavy chains can run on
 * libuv's thread pool.
 */
#ifndef BW_FILTER_H
#define BW_FILTER_H

#include "base/buf.h"
#include "base/err.h"

typedef struct Filter Filter;
typedef struct FilterChain FilterChain;

/*
 * A filter's behaviour. A transforming filter implements process(): consume
 * in (len may be 0), append output to out; with end set, the input is over
 * and everything left must be written. An observing filter implements
 * observe() instead and passes its input on unchanged. result() writes the
 * filter's result as text after the end (may be NULL); free() releases self.
 */
typedef struct {
    int (*process)(void *self, const char *in, size_t len, int end, Buf *out, Err *err);
    void (*observe)(void *self, const char *in, size_t len);
    void (*result)(void *self, Buf *res);
    void (*free)(void *self);
} FilterVtbl;

/* A filter from a vtable and its state (owned). name is copied; may be NULL. */
Filter *filter_new(const char *name, const FilterVtbl *vt, void *self);
/* gzip (RFC 1952) at level 1-9, as gunzip and jq read it. */
Filter *filter_gzip_new(const char *name, int level);
/* gunzip: several members are read in turn; corrupt or truncated input is an error. */
Filter *filter_gunzip_new(const char *name);
/* zstd (RFC 8878) at level 1-19, one frame with its checksum, as `zstd -d` reads it. */
Filter *filter_zstd_new(const char *name, int level);
/* zstd decompression: frames read in turn; corrupt or truncated input is an error. */
Filter *filter_unzstd_new(const char *name);
/* Observes: the hex SHA-256 of the bytes it saw. */
Filter *filter_sha256_new(const char *name);
/* Observes: the number of bytes it saw, in decimal. */
Filter *filter_size_new(const char *name);

/* A whole chain (taken) as one filter, so chains compose. tolerant 0: its failure fails the
 * outer chain. tolerant 1: once it fails, the rest of the input is dropped unseen and the
 * filter's result is the first error's message ("" while none): a reader can go on hashing
 * the stored bytes to their end after a decoder gave up. */
Filter *filter_chain_filter_new(const char *name, FilterChain *inner, int tolerant);

FilterChain *filter_chain_new(void);
/* Append f (taken) at the end of the chain. */
void filter_chain_add(FilterChain *c, Filter *f);
/* Push len bytes through; output of the chain is appended to out. -1 with err on failure. */
int filter_chain_write(FilterChain *c, const void *buf, size_t len, Buf *out, Err *err);
/* End of input: flush every stage in order. */
int filter_chain_finish(FilterChain *c, Buf *out, Err *err);
/* The result of the filter called name, once finished; NULL if none. */
const char *filter_chain_result(const FilterChain *c, const char *name);
void filter_chain_free(FilterChain *c);

#endif
