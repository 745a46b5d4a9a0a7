/*
 * layout: where a backup lives in the store and how its id names its user
 * (proto/README.md), for the worker and backupctl alike:
 *
 *   backups/{user_id}/{backup_id}.json{suffix}               full, differential
 *   backups/{user_id}/incremental/{backup_id}.json{suffix}   incremental
 *   backups/{user_id}/changes/{start}-{end}-e{epoch}.jsonl{suffix}  change segments
 *   {key}.manifest.json                                      next to each backup
 *   exports/{user_id}/{export_id}.json.gz                    a user's download (export job)
 *
 * backup_id is {backup|incremental}-{user_id}-{milliseconds}; suffix comes from
 * the codecs (".gz" for gzip, "" for none).
 */
#ifndef BW_LAYOUT_H
#define BW_LAYOUT_H

#include "io/codec.h"

#include <stddef.h>

#define LAYOUT_KEY_MAX      256
#define LAYOUT_MANIFEST_EXT ".manifest.json"

/* SQL: a backup_metadata row's codecs as a comma list (format v1 rows: from compression). */
#define BW_SQL_CODECS(t)                                                                           \
    "coalesce(array_to_string(" t ".codecs, ','), CASE " t ".compression WHEN 'gzip' THEN "        \
    "'gzip' ELSE '' END)"

/* 0, or -1 when it does not fit. */
int layout_backup_key(char *out, size_t n, const char *user_id, const char *backup_id,
                      int incremental, const CodecList *codecs);
/* A change segment: backups/{user_id}/changes/{start}-{end}-e{epoch}.jsonl{suffix}, the LSNs as
 * 16 hex digits (so that keys sort in commit order). 0, or -1 when it does not fit. */
int layout_segment_key(char *out, size_t n, const char *user_id, unsigned long long start_lsn,
                       unsigned long long end_lsn, unsigned long long epoch,
                       const CodecList *codecs);
void layout_manifest_key(char *out, size_t n, const char *key);
/* backups/{user_id}/ */
void layout_user_prefix(char *out, size_t n, const char *user_id);
/* exports/{user_id}/{export_id}.json.gz: an export (a plain JSON document, gzip), apart from
 * the backups so that a lifecycle rule on exports/ cannot touch them. */
void layout_export_key(char *out, size_t n, const char *user_id, const char *export_id);
/* 1 when key is an export of user_id's (exports/{user_id}/, no "..", shorter than the max). */
int layout_key_is_users_export(const char *key, const char *user_id);
/* 1 when key is an object of user_id's (under the prefix, no "..", shorter than the max). */
int layout_key_is_users(const char *key, const char *user_id);
/* The user a backup id names ({word}-{user_id}-...) into user (37 bytes); 0, or -1 when it
 * names none. */
int layout_user_of_backup_id(const char *backup_id, char user[37]);
/* The user of a key under backups/{user_id}/ into user; 0, or -1 when it is not such a key. */
int layout_user_of_key(const char *key, char user[37]);
/* 1 when backup_id is of the form {word}-{user_id}-{digits...}. */
int layout_backup_id_names_user(const char *backup_id, const char *user_id);

#endif
