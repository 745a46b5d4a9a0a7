/* storage_file: the file system driver of storage.h (see storage_file.h). */
#include "storage/storage_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SINK_CHUNK (1u << 20)   /* bytes handed to the pool per write */
#define SINK_HIGH  (4u << 20)   /* held bytes above which storage_write waits */
#define READ_PIECE (256u << 10) /* bytes read per turn */
#define LIST_PAGE  1000         /* keys per page, as S3's */
#define PART_MARK  ".part-"     /* in the name of a write's temporary file */

typedef struct {
    uv_loop_t *loop;
    char *root;
} FileStore;

static atomic_uint part_seq;

/* ---- paths and errors (pool side: plain syscalls, errors as values) ---- */

/* 1 when key may name a file under the root: relative, no empty, "." or ".." component. */
static int valid_key(const char *key) {
    if (key == NULL || key[0] == '\0' || key[0] == '/' || strlen(key) >= PATH_MAX / 2)
        return 0;
    for (const char *p = key; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (p[0] == '.' && strstr(p, PART_MARK) && strstr(p, PART_MARK) < p + n)
            return 0; /* a temporary file's name: never an object */
        p += n;
        if (*p == '/' && *++p == '\0')
            return 0; /* a trailing "/" names a directory */
    }
    return 1;
}

static char *join(const char *root, const char *key) {
    size_t n = strlen(root) + strlen(key) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", root, key);
    return p;
}

/* errno as the store's answer: a missing file is S3's NoSuchKey, anything else an I/O
 * failure worth a retry (a full disk, a share that went away). */
static void io_fail(Err *err, StorageResult *res, int e, const char *what, const char *key) {
    if (e == ENOENT || e == ENOTDIR) {
        if (res) {
            res->status = 404;
            snprintf(res->code, sizeof(res->code), "NoSuchKey");
        }
        err_set(err, ERR_PERMANENT, ERR_CODE_IO, "file store: NoSuchKey: %s", key);
        return;
    }
    if (res) {
        res->status = 500;
        snprintf(res->code, sizeof(res->code), "InternalError");
    }
    err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "file store: %s %s: %s", what, key, strerror(e));
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* mkdir -p of path's parent directory; each directory made is made durable in its parent */
static int make_parents(const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    struct stat st;
    if (stat(tmp, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
    if (make_parents(tmp) != 0)
        return -1;
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    char *up = strrchr(tmp, '/');
    if (up) {
        *up = '\0';
        fsync_dir(tmp);
    }
    return 0;
}

/* A new temporary file beside path, its name in tmp: ".<name>.part-<pid>-<n>". */
static int open_part(const char *path, char *tmp, size_t tmpsz) {
    if (make_parents(path) != 0)
        return -1;
    const char *slash = strrchr(path, '/');
    snprintf(tmp, tmpsz, "%.*s/.%s%s%ld-%u", (int)(slash - path), path, slash + 1, PART_MARK,
             (long)getpid(), atomic_fetch_add(&part_seq, 1));
    return open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The temporary file made durable and put in place of the object, whole. */
static int commit_part(int fd, const char *tmp, const char *path) {
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    return fsync_dir(dir);
}

static void iso_time(const struct stat *st, char out[32]) {
    struct tm tm;
    gmtime_r(&st->st_mtim.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(st->st_mtim.tv_nsec / 1000000));
}

/* ---- small operations: work on the pool, answer on the loop ---- */

typedef struct {
    char *key;
    int64_t size;
    char mtime[32];
    char *upload_id; /* list_pending: the temporary file's name */
} Entry;

typedef struct Op {
    uv_work_t w;
    FileStore *fs;
    void (*work)(struct Op *op);
    void (*answer)(struct Op *op);
    char *key, *path, *prefix;
    const void *body; /* put: the caller's bytes, valid until the call returns: copied */
    Buf in;
    size_t max;
    StorageDoneCb cb;
    StorageListCb page;
    StoragePendingCb pending_page;
    StorageListDoneCb list_done;
    StorageDeleteDoneCb del_done;
    void *data;
    StorageResult res;
    Buf out;
    Err err;
    Entry *entries;
    size_t nentries, cap;
    char **keys;
    size_t nkeys, deleted, failed;
} Op;

static void op_free(Op *op) {
    for (size_t i = 0; i < op->nentries; i++) {
        free(op->entries[i].key);
        free(op->entries[i].upload_id);
    }
    for (size_t i = 0; i < op->nkeys; i++)
        free(op->keys[i]);
    free(op->entries);
    free(op->keys);
    free(op->key);
    free(op->path);
    free(op->prefix);
    buf_free(&op->in);
    buf_free(&op->out);
    free(op);
}

static void op_work(uv_work_t *w) {
    Op *op = w->data;
    op->work(op);
}

static void op_after(uv_work_t *w, int status) {
    Op *op = w->data;
    if (status == UV_ECANCELED)
        err_set(&op->err, ERR_RETRYABLE, ERR_CODE_CANCELLED, "file store: cancelled");
    op->answer(op);
    op_free(op);
}

/* An operation on key (NULL: none) whose work runs on the pool and answer on the loop; set its
 * callback and arguments, then op_start. */
static Op *op_new(FileStore *fs, const char *key, void (*work)(Op *), void (*answer)(Op *),
                  void *data) {
    Op *op = xcalloc(1, sizeof(*op));
    op->fs = fs;
    op->res.size = -1;
    op->w.data = op;
    op->work = work;
    op->answer = answer;
    op->data = data;
    if (key) {
        op->key = xstrdup(key);
        if (valid_key(key))
            op->path = join(fs->root, key);
        else
            err_set(&op->err, ERR_PERMANENT, ERR_CODE_INVALID,
                    "file store: '%.200s' is not a key this store accepts", key);
    }
    return op;
}

static void answer_done(Op *op);

/* A small operation answered with a StorageResult. */
static Op *small_op(FileStore *fs, const char *key, void (*work)(Op *), StorageDoneCb cb,
                    void *data) {
    Op *op = op_new(fs, key, work, answer_done, data);
    op->cb = cb;
    return op;
}

static void op_start(Op *op) {
    uv_queue_work(op->fs->loop, &op->w, op_work, op_after);
}

static void answer_done(Op *op) {
    op->res.body = &op->out;
    op->cb(&op->res, err_is_set(&op->err) ? &op->err : NULL, op->data);
}

static void w_put(Op *op) {
    if (err_is_set(&op->err))
        return;
    char tmp[PATH_MAX];
    int fd = open_part(op->path, tmp, sizeof(tmp));
    if (fd < 0 || write_all(fd, op->in.data ? op->in.data : "", op->in.len) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        io_fail(&op->err, &op->res, e, "write", op->key);
        return;
    }
    if (commit_part(fd, tmp, op->path) != 0)
        io_fail(&op->err, &op->res, errno, "store", op->key);
    else
        op->res.status = 200;
}

static void d_put(void *drv, const char *key, const void *body, size_t len, const char *ctype,
                  StorageDoneCb cb, void *data) {
    (void)ctype; /* a file has none: readers know their objects by key */
    Op *op = small_op(drv, key, w_put, cb, data);
    buf_append(&op->in, body, len);
    op_start(op);
}

static void w_get(Op *op) {
    if (err_is_set(&op->err))
        return;
    int fd = open(op->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        io_fail(&op->err, &op->res, e, "open", op->key);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        io_fail(&op->err, &op->res, ENOENT, "open", op->key);
        return;
    }
    op->res.size = st.st_size;
    snprintf(op->res.etag, sizeof(op->res.etag), "\"%llx-%lx-%llx\"", (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, (long long)st.st_size);
    if (op->max == 0) { /* head */
        close(fd);
        op->res.status = 200;
        return;
    }
    if ((uint64_t)st.st_size > op->max) {
        close(fd);
        op->res.status = 413;
        snprintf(op->res.code, sizeof(op->res.code), "TooLarge");
        err_set(&op->err, ERR_PERMANENT, ERR_CODE_INVALID, "file store: TooLarge: %s (%lld bytes)",
                op->key, (long long)st.st_size);
        return;
    }
    buf_reserve(&op->out, (size_t)st.st_size + 1);
    for (;;) {
        ssize_t n = read(fd, op->out.data + op->out.len, op->out.cap - op->out.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            io_fail(&op->err, &op->res, errno, "read", op->key);
            break;
        }
        if (n == 0)
            break;
        op->out.len += (size_t)n;
        op->out.data[op->out.len] = '\0';
        if (op->out.len + 1 >= op->out.cap)
            buf_reserve(&op->out, 64 << 10);
    }
    close(fd);
    if (!err_is_set(&op->err))
        op->res.status = 200;
}

static void d_get(void *drv, const char *key, size_t max, StorageDoneCb cb, void *data) {
    Op *op = small_op(drv, key, w_get, cb, data);
    op->max = max ? max : 1;
    op_start(op);
}

static void d_head(void *drv, const char *key, StorageDoneCb cb, void *data) {
    op_start(small_op(drv, key, w_get, cb, data)); /* max 0: the size alone */
}

/* ---- listings ---- */

static void add_entry(Op *op, const char *key, const struct stat *st, const char *upload_id) {
    if (op->nentries == op->cap) {
        op->cap = op->cap ? op->cap * 2 : 64;
        op->entries = xrealloc(op->entries, op->cap * sizeof(Entry));
    }
    Entry *e = &op->entries[op->nentries++];
    e->key = xstrdup(key);
    e->size = st->st_size;
    iso_time(st, e->mtime);
    e->upload_id = upload_id ? xstrdup(upload_id) : NULL;
}

/* Walk dir (rel: its path under the root, "" for the root) for keys under op->prefix: objects,
 * or with pending set, the temporary files of unfinished writes. */
static int walk(Op *op, const char *rel, int pending) {
    char *dir = rel[0] ? join(op->fs->root, rel) : xstrdup(op->fs->root);
    DIR *d = opendir(dir);
    if (d == NULL) {
        int e = errno;
        free(dir);
        return e == ENOENT || e == ENOTDIR ? 0 : (errno = e, -1);
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        char key[PATH_MAX];
        snprintf(key, sizeof(key), "%s%s%s", rel, rel[0] ? "/" : "", name);
        int part = name[0] == '.' && strstr(name, PART_MARK) != NULL;
        char full[PATH_MAX];
        snprintf(full, sizeof(full), "%s/%s", dir, name);
        struct stat st;
        if (lstat(full, &st) != 0)
            continue; /* gone since readdir (a concurrent delete or rename) */
        if (S_ISDIR(st.st_mode)) {
            /* descend only where keys under the prefix can be */
            size_t kl = strlen(key), pl = strlen(op->prefix);
            if (name[0] != '.' && strncmp(key, op->prefix, kl < pl ? kl : pl) == 0)
                rc = walk(op, key, pending);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (pending && part) {
            /* ".<name>.part-..." stands for the key <dir>/<name> */
            char object[PATH_MAX];
            const char *mark = strstr(name, PART_MARK);
            snprintf(object, sizeof(object), "%s%s%.*s", rel, rel[0] ? "/" : "",
                     (int)(mark - name - 1), name + 1);
            if (strncmp(object, op->prefix, strlen(op->prefix)) == 0)
                add_entry(op, object, &st, name);
        } else if (!pending && name[0] != '.' &&
                   strncmp(key, op->prefix, strlen(op->prefix)) == 0) {
            add_entry(op, key, &st, NULL);
        }
    }
    closedir(d);
    free(dir);
    return rc;
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const Entry *)a)->key, ((const Entry *)b)->key);
}

static void w_list_any(Op *op, int pending) {
    if (walk(op, "", pending) != 0)
        io_fail(&op->err, NULL, errno, "list", op->prefix);
    if (op->nentries > 1)
        qsort(op->entries, op->nentries, sizeof(Entry), by_key);
}
static void w_list(Op *op) {
    w_list_any(op, 0);
}
static void w_list_pending(Op *op) {
    w_list_any(op, 1);
}

static void answer_list(Op *op) {
    uint64_t count = 0;
    if (!err_is_set(&op->err)) {
        StorageObject page[LIST_PAGE];
        for (size_t i = 0; i < op->nentries;) {
            size_t n = 0;
            for (; n < LIST_PAGE && i < op->nentries; n++, i++)
                page[n] =
                    (StorageObject){op->entries[i].key, op->entries[i].size, op->entries[i].mtime};
            count += n;
            if (op->page(page, n, op->data))
                break;
        }
    }
    op->list_done(count, err_is_set(&op->err) ? &op->err : NULL, op->data);
}

static void answer_pending(Op *op) {
    uint64_t count = 0;
    if (!err_is_set(&op->err))
        for (size_t i = 0; i < op->nentries; i++) {
            StoragePending p = {op->entries[i].key, op->entries[i].upload_id, op->entries[i].mtime};
            count++;
            if (op->pending_page(&p, 1, op->data))
                break;
        }
    op->list_done(count, err_is_set(&op->err) ? &op->err : NULL, op->data);
}

static void d_list(void *drv, const char *prefix, StorageListCb page, StorageListDoneCb done,
                   void *data) {
    Op *op = op_new(drv, NULL, w_list, answer_list, data);
    op->prefix = xstrdup(prefix);
    op->page = page;
    op->list_done = done;
    op_start(op);
}

static void d_list_pending(void *drv, const char *prefix, StoragePendingCb page,
                           StorageListDoneCb done, void *data) {
    Op *op = op_new(drv, NULL, w_list_pending, answer_pending, data);
    op->prefix = xstrdup(prefix);
    op->pending_page = page;
    op->list_done = done;
    op_start(op);
}

/* ---- deletion ---- */

static void w_del(Op *op) {
    for (size_t i = 0; i < op->nkeys; i++) {
        if (!valid_key(op->keys[i])) {
            op->failed++;
            continue;
        }
        char *path = join(op->fs->root, op->keys[i]);
        if (unlink(path) == 0 || errno == ENOENT) /* S3 deletes a missing key too */
            op->deleted++;
        else
            op->failed++;
        free(path);
    }
}

static void answer_del(Op *op) {
    op->del_done(op->deleted, op->failed, NULL, op->data);
}

static void d_del(void *drv, const char *const *keys, size_t n, StorageDeleteDoneCb done,
                  void *data) {
    Op *op = op_new(drv, NULL, w_del, answer_del, data);
    op->keys = xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        op->keys[op->nkeys++] = xstrdup(keys[i]);
    op->del_done = done;
    op_start(op);
}

static void w_probe(Op *op) {
    struct stat st;
    int e = stat(op->fs->root, &st) != 0             ? errno
            : !S_ISDIR(st.st_mode)                   ? ENOTDIR
            : access(op->fs->root, W_OK | X_OK) != 0 ? errno
                                                     : 0;
    op->res.status = e ? 500 : 200;
    if (e)
        err_set(&op->err, ERR_RETRYABLE, ERR_CODE_IO, "file store: %s: %s", op->fs->root,
                strerror(e));
}

static void d_probe(void *drv, StorageDoneCb cb, void *data) {
    op_start(small_op(drv, NULL, w_probe, cb, data));
}

/* upload_id: the temporary file's name, beside the key's object */
static void w_abort_pending(Op *op) {
    if (err_is_set(&op->err))
        return;
    const char *base = strrchr(op->key, '/');
    base = base ? base + 1 : op->key;
    const char *id = op->prefix;
    if (strchr(id, '/') || id[0] != '.' || strncmp(id + 1, base, strlen(base)) != 0 ||
        strncmp(id + 1 + strlen(base), PART_MARK, strlen(PART_MARK)) != 0) {
        err_set(&op->err, ERR_PERMANENT, ERR_CODE_INVALID,
                "file store: '%.100s' is not an unfinished write of %.200s", id, op->key);
        return;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%.*s%s", (int)(strlen(op->path) - strlen(base)), op->path, id);
    if (unlink(tmp) != 0 && errno != ENOENT)
        io_fail(&op->err, &op->res, errno, "remove", tmp);
    else
        op->res.status = 204;
}

static void d_abort_pending(void *drv, const char *key, const char *upload_id, StorageDoneCb cb,
                            void *data) {
    Op *op = small_op(drv, key, w_abort_pending, cb, data);
    op->prefix = xstrdup(upload_id ? upload_id : "");
    op_start(op);
}

/* ---- streaming write: a temporary file filled from the pool, committed at the end ---- */

struct StorageSink {
    FileStore *fs;
    uv_work_t w;
    char *key, *path;
    char tmp[PATH_MAX];
    int fd;
    Buf buf;      /* taken, not yet handed to the pool */
    Buf inflight; /* being written by the pool */
    /* loop side; the pool reads only do_abort and do_commit, set before each pass */
    int busy, finishing, aborting, ended, freed, want_writable;
    int do_abort, do_commit, committed;
    Err err;
    StorageSinkWritableCb writable;
    StorageSinkDoneCb done;
    void *data;
};

static void sink_release(StorageSink *k) {
    buf_free(&k->buf);
    buf_free(&k->inflight);
    free(k->key);
    free(k->path);
    free(k);
}

/* One pass on the pool: remove the temporary file (abort), or write the bytes handed over and,
 * with the last of them, commit. A failure removes the temporary file at once. */
static void sink_work(uv_work_t *w) {
    StorageSink *k = w->data;
    if (k->do_abort || err_is_set(&k->err)) {
        if (k->fd >= 0) {
            close(k->fd);
            unlink(k->tmp);
            k->fd = -1;
        }
        return;
    }
    if (k->fd < 0 && (k->fd = open_part(k->path, k->tmp, sizeof(k->tmp))) < 0) {
        io_fail(&k->err, NULL, errno, "write", k->key);
        return;
    }
    if (k->inflight.len && write_all(k->fd, k->inflight.data, k->inflight.len) != 0) {
        io_fail(&k->err, NULL, errno, "write", k->key);
        close(k->fd);
        unlink(k->tmp);
        k->fd = -1;
        return;
    }
    if (k->do_commit) {
        int fd = k->fd;
        k->fd = -1;
        if (commit_part(fd, k->tmp, k->path) != 0)
            io_fail(&k->err, NULL, errno, "store", k->key);
        else
            k->committed = 1;
    }
}

static void sink_after(uv_work_t *w, int status);

/* Hand what is held to the pool: a chunk's worth, or the rest when finishing or aborting. */
static void sink_kick(StorageSink *k) {
    if (k->busy || k->ended)
        return;
    if (!k->aborting && !k->finishing && k->buf.len < SINK_CHUNK)
        return;
    Buf t = k->inflight;
    k->inflight = k->buf;
    k->buf = t;
    k->do_abort = k->aborting;
    k->do_commit = k->finishing && !k->aborting;
    k->busy = 1;
    uv_queue_work(k->fs->loop, &k->w, sink_work, sink_after);
}

static void sink_after(uv_work_t *w, int status) {
    (void)status; /* nothing calls uv_cancel on it */
    StorageSink *k = w->data;
    k->busy = 0;
    buf_reset(&k->inflight);
    if (k->aborting && k->fd >= 0) { /* aborted during a write: one more pass removes the file */
        sink_kick(k);
        return;
    }
    if (k->committed || k->aborting || err_is_set(&k->err)) {
        if (!k->committed && !err_is_set(&k->err))
            err_set(&k->err, ERR_RETRYABLE, ERR_CODE_CANCELLED, "file store: write aborted");
        k->ended = 1;
        if (k->freed)
            sink_release(k);
        else
            k->done(err_is_set(&k->err) ? &k->err : NULL, k->data);
        return;
    }
    sink_kick(k);
    if (k->want_writable && !k->freed && k->buf.len + k->inflight.len < SINK_HIGH) {
        k->want_writable = 0;
        k->writable(k->data);
    }
}

static StorageSink *d_sink_new(void *drv, const char *key, const char *ctype,
                               StorageSinkWritableCb writable, StorageSinkDoneCb done, void *data) {
    (void)ctype;
    StorageSink *k = xcalloc(1, sizeof(*k));
    k->fs = drv;
    k->w.data = k;
    k->fd = -1;
    k->key = xstrdup(key);
    k->writable = writable;
    k->done = done;
    k->data = data;
    if (valid_key(key)) {
        k->path = join(k->fs->root, key);
    } else {
        err_set(&k->err, ERR_PERMANENT, ERR_CODE_INVALID,
                "file store: '%.200s' is not a key this store accepts", key);
        k->aborting = 1;
        sink_kick(k); /* answers on a later turn, as every failure does */
    }
    return k;
}

static int d_sink_write(StorageSink *k, const char *buf, size_t len) {
    if (k->ended || k->aborting || k->finishing || err_is_set(&k->err))
        return -1;
    buf_append(&k->buf, buf, len);
    sink_kick(k);
    if (k->buf.len + k->inflight.len < SINK_HIGH)
        return 1;
    k->want_writable = 1;
    return 0;
}

static void d_sink_finish(StorageSink *k) {
    if (k->ended || k->aborting || k->finishing)
        return;
    k->finishing = 1;
    sink_kick(k);
}

static void d_sink_abort(StorageSink *k) {
    if (k->ended || k->aborting)
        return;
    k->aborting = 1;
    sink_kick(k);
}

static size_t d_sink_buffered(const StorageSink *k) {
    return k->buf.len + k->inflight.len;
}

static void d_sink_free(StorageSink *k) {
    if (k == NULL)
        return;
    k->freed = 1;
    if (k->ended) {
        sink_release(k);
        return;
    }
    k->aborting = 1; /* the temporary file goes; no callback follows */
    sink_kick(k);
}

/* ---- streaming read ---- */

struct StorageSource {
    FileStore *fs;
    uv_work_t w;
    char *key, *path;
    int fd, eof, paused, busy;
    Buf piece;
    uint64_t total;
    StorageResult res;
    Err err;
    StorageSourceDataCb on_data;
    StorageDoneCb done;
    void *data;
};

static void source_work(uv_work_t *w) {
    StorageSource *src = w->data;
    if (err_is_set(&src->err))
        return;
    if (src->fd < 0) {
        src->fd = open(src->path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (src->fd >= 0 && fstat(src->fd, &st) == 0 && !S_ISREG(st.st_mode)) {
            close(src->fd);
            src->fd = -1;
            errno = ENOENT;
        }
        if (src->fd < 0) {
            io_fail(&src->err, &src->res, errno, "open", src->key);
            return;
        }
    }
    buf_reset(&src->piece);
    buf_reserve(&src->piece, READ_PIECE);
    ssize_t n;
    do
        n = read(src->fd, src->piece.data, READ_PIECE);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        io_fail(&src->err, &src->res, errno, "read", src->key);
    else if (n == 0)
        src->eof = 1;
    else
        src->piece.len = (size_t)n;
    if (n <= 0) {
        close(src->fd);
        src->fd = -1;
    }
}

static void source_end(StorageSource *src, const Err *err) {
    if (src->fd >= 0)
        close(src->fd); /* stopped early: a read-only descriptor closes at once */
    src->res.size = (int64_t)src->total;
    src->done(&src->res, err, src->data);
    buf_free(&src->piece);
    free(src->key);
    free(src->path);
    free(src);
}

static void source_after(uv_work_t *w, int status);

/* Offer the piece read; read the next once it is taken. */
static void source_deliver(StorageSource *src) {
    if (err_is_set(&src->err)) {
        source_end(src, &src->err);
        return;
    }
    if (src->eof) {
        src->res.status = 200;
        source_end(src, NULL);
        return;
    }
    int rc = src->on_data(src->piece.data, src->piece.len, src->data);
    if (rc == STORAGE_SOURCE_PAUSE) {
        src->paused = 1;
        return;
    }
    if (rc == STORAGE_SOURCE_STOP) {
        Err e;
        err_set(&e, ERR_RETRYABLE, ERR_CODE_CANCELLED, "file store: read stopped");
        source_end(src, &e);
        return;
    }
    src->total += src->piece.len;
    src->busy = 1;
    uv_queue_work(src->fs->loop, &src->w, source_work, source_after);
}

static void source_after(uv_work_t *w, int status) {
    (void)status;
    StorageSource *src = w->data;
    src->busy = 0;
    source_deliver(src);
}

static StorageSource *d_source_new(void *drv, const char *key, StorageSourceDataCb on_data,
                                   StorageDoneCb done, void *data) {
    StorageSource *src = xcalloc(1, sizeof(*src));
    src->fs = drv;
    src->w.data = src;
    src->fd = -1;
    src->key = xstrdup(key);
    src->on_data = on_data;
    src->done = done;
    src->data = data;
    src->res.size = -1;
    if (valid_key(key))
        src->path = join(src->fs->root, key);
    else
        err_set(&src->err, ERR_PERMANENT, ERR_CODE_INVALID,
                "file store: '%.200s' is not a key this store accepts", key);
    src->busy = 1;
    uv_queue_work(src->fs->loop, &src->w, source_work, source_after);
    return src;
}

static void d_source_resume(StorageSource *src) {
    if (!src->paused || src->busy)
        return;
    src->paused = 0;
    source_deliver(src);
}

static void d_free(void *drv) {
    FileStore *fs = drv;
    free(fs->root);
    free(fs);
}

static const StorageDriver file_driver = {
    .name = "file",
    .put = d_put,
    .get = d_get,
    .head = d_head,
    .list = d_list,
    .del = d_del,
    .list_pending = d_list_pending,
    .abort_pending = d_abort_pending,
    .sink_new = d_sink_new,
    .sink_write = d_sink_write,
    .sink_finish = d_sink_finish,
    .sink_abort = d_sink_abort,
    .sink_buffered = d_sink_buffered,
    .sink_free = d_sink_free,
    .source_new = d_source_new,
    .source_resume = d_source_resume,
    .copy_new = NULL, /* streamed through storage_copy_new */
    .copy_free = NULL,
    .probe = d_probe,
    .free = d_free,
};

Storage *storage_file_new(uv_loop_t *loop, const char *root, Err *err) {
    if (root == NULL || root[0] != '/') {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG,
                "file store: the root must be an absolute path (file:///path)");
        return NULL;
    }
    char *r = xstrdup(root);
    size_t n = strlen(r);
    while (n > 1 && r[n - 1] == '/')
        r[--n] = '\0';
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/x", r);
    if (make_parents(probe) != 0 || access(r, W_OK | X_OK) != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "file store: %s: %s", r, strerror(errno));
        free(r);
        return NULL;
    }
    FileStore *fs = xcalloc(1, sizeof(*fs));
    fs->loop = loop;
    fs->root = r;
    return storage_new(loop, &file_driver, fs);
}
