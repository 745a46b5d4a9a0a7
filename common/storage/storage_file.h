/*
 * storage_file: the local file system driver of storage.h, for a single host or an
 * on-premises share (a NAS, NFS): BACKUP_STORE=file:///path. The key layout is S3's, as
 * paths under the root (backups/{user}/... is a file in a directory of that name).
 *
 * Writes are atomic: the bytes go to a temporary file beside the object (".<name>.part-..."),
 * which is fsynced, renamed over the object and its directory fsynced, so a reader sees the
 * old object or the whole new one, never part, and a crash leaves at most a temporary file,
 * which listings skip and storage_list_pending reports (storage_abort_pending removes it).
 * Several workers on one host may share a root: each write has its own temporary file, and of
 * two writes of one key the last rename wins whole.
 *
 * Every file system call runs on libuv's thread pool, never on the loop. Keys are checked: a
 * key with an empty, "." or ".." component, a leading "/" or a NUL is refused (ERR_CODE_INVALID),
 * so no key reaches outside the root. A missing object answers "NoSuchKey" (status 404), as S3.
 */
#ifndef BW_STORAGE_FILE_H
#define BW_STORAGE_FILE_H

#include "storage/storage.h"

/* A store rooted at the directory root (created if missing, with its parents); NULL with err
 * when it cannot be created or is not a writable directory. */
Storage *storage_file_new(uv_loop_t *loop, const char *root, Err *err);

#endif
