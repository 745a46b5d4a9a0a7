/*
 * keyset: a set of row keys (uuids and integers) as 16 bytes each, in one
 * open-addressing table: 32 bytes a key at most, whatever the text was.
 *
 * Keys are compared by value, not by spelling: a uuid in upper case or with
 * braces and its canonical text are one key, and so are "+7" and "7".
 */
#ifndef BW_KEYSET_H
#define BW_KEYSET_H

#include <stddef.h>

#define KEYSET_KEY_LEN 16

typedef struct KeySet KeySet;

KeySet *keyset_new(void);
void keyset_free(KeySet *s);
/* 1 when added, 0 when it was there. */
int keyset_add(KeySet *s, const unsigned char k[KEYSET_KEY_LEN]);
int keyset_has(const KeySet *s, const unsigned char k[KEYSET_KEY_LEN]);
size_t keyset_count(const KeySet *s);

/* A key's bytes from its text. kind 'u': a uuid (32 hex digits, either case, dashes and braces
 * ignored); 'i': a 64-bit integer (sign, digits). A JSON string's quotes around it are taken
 * off; a string holding an escape is not read (-1). -1 when the text is not such a key. */
int keyset_key(char kind, const char *s, size_t n, unsigned char out[KEYSET_KEY_LEN]);

/* A key's term in a digest of keys (a sum mod 2^64, which the database computes as well): a
 * uuid's first 4 bytes read as a big-endian signed number; an integer, itself. A check against
 * mistakes and naive edits, not a cryptographic one. */
unsigned long long keyset_digest(char kind, const unsigned char k[KEYSET_KEY_LEN]);

#endif
