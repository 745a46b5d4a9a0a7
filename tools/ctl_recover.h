/*
 * ctl_recover: recovery when the database (or backup_metadata) is lost, from
 * S3 alone. Every backup has a manifest beside it (<key>.manifest.json,
 * written once the backup was complete) naming its id, user, type, base,
 * key, SHA-256, size, counts and snapshot.
 *
 *   reindex USER        recreate the missing backup_metadata rows from the
 *                       manifests (existing rows are left alone)
 *   list USER --s3      the user's backups as the manifests describe them
 *                       (both with --replica: the replica's, the primary gone)
 *   download ID|KEY     the stored object to a file, its SHA-256 and size
 *                       checked against the manifest (written as FILE.part,
 *                       renamed only once it passed), the replica's copy when
 *                       the primary's fails; --decode: the document, its
 *                       codecs undone (decrypted with the keyring)
 *   rekey USER|--all    the data keys of encrypted backups wrapped again under the
 *                       current key (or --to KEY_ID), in the manifests and the
 *                       records; the objects stay as they are
 */
#ifndef BW_CTL_RECOVER_H
#define BW_CTL_RECOVER_H

#include "config/config.h"

/* Which copy a command reads: the primary, then the replica when the primary's fails (ANY);
 * or only the one named. */
typedef enum { CTL_FROM_ANY, CTL_FROM_PRIMARY, CTL_FROM_REPLICA } CtlFrom;

int ctl_recover_main(const Config *cfg, int argc, char **argv);
/* quiet: print nothing when nothing was added; replica: from the replica's manifests (rows
 * added say replica_status completed). 0, 1 after printing why, 2 without a replica. */
int ctl_reindex(const Config *cfg, const char *user, int quiet, int replica);
int ctl_list_s3(const Config *cfg, const char *user, int json, int replica);
/* file NULL: the object's base name in the current directory. */
/* plain: write the document with the manifest's codecs undone, in reverse order. */
int ctl_download(const Config *cfg, const char *what, const char *file, int plain, CtlFrom from);
/* user NULL: every user. 0; 1 when a backup could not be rekeyed; 2 for bad settings. */
int ctl_rekey(const Config *cfg, const char *user, const char *to_id, int dry_run);
int ctl_rekey_main(const Config *cfg, int argc, char **argv);

#endif
