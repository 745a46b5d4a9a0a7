/*
 * segkeys: the keys an incremental names, from a user's change segments (BACKUP_TRACKING=wal);
 * no I/O.
 *
 * An incremental holds the rows written, and the keys deleted, by every transaction its base's
 * snapshot does not see and its own does. The segments name those transactions' changes; the
 * backup then reads the rows by key in its own snapshot (a key that is no row of the user's
 * there is a deletion). A TRUNCATE or a "where" delete (an order that moved to another user
 * took its items along) names no keys: such a segment makes the incremental impossible, and
 * the caller makes a full backup (capture_incremental_ok refuses those at the claim).
 */
#ifndef BW_SEGKEYS_H
#define BW_SEGKEYS_H

#include "base/buf.h"
#include "base/err.h"
#include "scope/scope.h"

typedef struct SegKeys SegKeys;

/* base, snap: the snapshots (pg_snapshot text) of the base and of the incremental. NULL with
 * err when either is malformed. */
SegKeys *segkeys_new(const Scope *s, const char *user_id, const char *base, const char *snap,
                     Err *err);
void segkeys_free(SegKeys *k);
/* 1 when a segment whose transactions are xids (comma-separated 32-bit xids, change_segments'
 * xids) holds a change of the incremental. */
int segkeys_wanted(const SegKeys *k, const char *xids);
/* A decoded segment's changes: 0; -1 with err (a malformed segment, a table outside the scope);
 * SEGKEYS_NO_KEYS with err saying which, for a TRUNCATE or "where" delete of a transaction of
 * the incremental. */
#define SEGKEYS_NO_KEYS (-2)
int segkeys_add(SegKeys *k, const char *buf, size_t len, Err *err);
/* Table i's keys as an array literal ({"k1","k2"}), for scope_keys_setting(i). */
void segkeys_array(const SegKeys *k, int i, Buf *out);
/* How many keys table i has, and all tables. */
size_t segkeys_count(const SegKeys *k, int i);
size_t segkeys_total(const SegKeys *k);

#endif
