/*
 * rowkeys: a set of row keys (uuids and integers) as 16 bytes each, in one
 * open-addressing table: 32 bytes a key at most, whatever the text was.
 *
 * Keys are compared by value, not by spelling: a uuid in upper case or with
 * braces and its canonical text are one key, and so are "+7" and "7".
 */
#ifndef BW_ROWKEYS_H
#define BW_ROWKEYS_H

#include <stddef.h>

#define ROWKEYS_KEY_LEN 16

typedef struct RowKeys RowKeys;

RowKeys *rowkeys_new(void);
void rowkeys_free(RowKeys *s);
/* 1 when added, 0 when it was there. */
int rowkeys_add(RowKeys *s, const unsigned char k[ROWKEYS_KEY_LEN]);
int rowkeys_has(const RowKeys *s, const unsigned char k[ROWKEYS_KEY_LEN]);
size_t rowkeys_count(const RowKeys *s);

/* A key's bytes from its text. kind 'u': a uuid (32 hex digits, either case, dashes and braces
 * ignored); 'i': a 64-bit integer (sign, digits). A JSON string's quotes around it are taken
 * off; a string holding an escape is not read (-1). -1 when the text is not such a key. */
int rowkeys_key(char kind, const char *s, size_t n, unsigned char out[ROWKEYS_KEY_LEN]);

/* A key's term in a digest of keys (a sum mod 2^64, which the database computes as well): a
 * uuid's first 4 bytes read as a big-endian signed number; an integer, itself. A check against
 * mistakes and naive edits, not a cryptographic one. */
unsigned long long rowkeys_digest(char kind, const unsigned char k[ROWKEYS_KEY_LEN]);

#endif
