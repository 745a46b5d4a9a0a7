/*
 * keyring: the key-encryption keys a worker holds, from
 * BACKUP_ENCRYPTION_KEYS ("ID:BASE64" entries separated by commas) or
 * BACKUP_ENCRYPTION_KEYS_FILE (one entry per line; blank lines and lines
 * starting with '#' are skipped: a Kubernetes secret mounted as a file).
 * Every key is 32 bytes; ids are 1 to 64 of [A-Za-z0-9._-] and unique. The
 * keys are secrets: no function here puts one in a message.
 */
#ifndef BW_KEYRING_H
#define BW_KEYRING_H

#include "io/crypt.h"
#include "base/err.h"

typedef struct Keyring Keyring;

/* sep: ',' for the variable, '\n' for the file. NULL with err naming the entry (by position
 * and id, never its key) that is wrong. */
Keyring *keyring_parse(const char *text, char sep, Err *err);
void keyring_free(Keyring *k);
int keyring_count(const Keyring *k);
/* The id of entry i (in the order given). */
const char *keyring_id(const Keyring *k, int i);
/* The key called id, or NULL. */
const unsigned char *keyring_find(const Keyring *k, const char *id);
/* 1 when id is a well-formed keyring id. */
int keyring_valid_id(const char *id);

#endif
