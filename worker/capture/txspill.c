/* txspill: large transactions on disk (see txspill.h). */
#include "capture/txspill.h"

#include "base/buf.h"
#include "base/strmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

FILE *txspill_file(void) {
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/bw-capture-XXXXXX", dir && dir[0] ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    FILE *f = fdopen(fd, "w+");
    if (f == NULL)
        close(fd);
    return f;
}

struct TxStream {
    uint32_t xid;
    FILE *f;
    uint64_t bytes;
    uint32_t *subxid; /* the subtransactions seen, with their first message's offset */
    long *suboff;
    int nsub, capsub;
};

struct TxSpill {
    StrMap *txns; /* xid -> TxStream */
    uint64_t bytes;
};

void txstream_free(TxStream *t) {
    if (t == NULL)
        return;
    if (t->f)
        fclose(t->f);
    free(t->subxid);
    free(t->suboff);
    free(t);
}

static void free_stream(void *p) {
    txstream_free(p);
}

TxSpill *txspill_new(void) {
    TxSpill *s = xcalloc(1, sizeof(*s));
    s->txns = strmap_new();
    return s;
}

void txspill_reset(TxSpill *s) {
    strmap_free(s->txns, free_stream);
    s->txns = strmap_new();
    s->bytes = 0;
}

void txspill_free(TxSpill *s) {
    if (s == NULL)
        return;
    strmap_free(s->txns, free_stream);
    free(s);
}

uint64_t txspill_bytes(const TxSpill *s) {
    return s->bytes;
}

static TxStream *stream_of(TxSpill *s, uint32_t xid, int make) {
    char k[16];
    snprintf(k, sizeof(k), "%u", xid);
    TxStream *t = strmap_get(s->txns, k);
    if (t == NULL && make) {
        t = xcalloc(1, sizeof(*t));
        t->xid = xid;
        strmap_put(s->txns, k, t);
    }
    return t;
}

int txspill_keep(TxSpill *s, uint32_t xid, const char *msg, size_t len, Err *err) {
    TxStream *t = stream_of(s, xid, 1);
    if (t->f == NULL && (t->f = txspill_file()) == NULL) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "a spill file: %s", strerror(errno));
        return -1;
    }
    /* the (sub)transaction a change is of follows its type byte */
    if (len >= 5 && strchr("IUDTRYM", msg[0])) {
        uint32_t x = ((uint32_t)(unsigned char)msg[1] << 24) |
                     ((uint32_t)(unsigned char)msg[2] << 16) |
                     ((uint32_t)(unsigned char)msg[3] << 8) | (unsigned char)msg[4];
        int seen = x == t->xid;
        for (int i = 0; !seen && i < t->nsub; i++)
            seen = t->subxid[i] == x;
        if (!seen) {
            if (t->nsub == t->capsub) {
                t->capsub = t->capsub ? t->capsub * 2 : 8;
                t->subxid = xrealloc(t->subxid, (size_t)t->capsub * sizeof(*t->subxid));
                t->suboff = xrealloc(t->suboff, (size_t)t->capsub * sizeof(*t->suboff));
            }
            t->subxid[t->nsub] = x;
            t->suboff[t->nsub++] = (long)t->bytes;
        }
    }
    uint32_t n = (uint32_t)len;
    if (fwrite(&n, sizeof(n), 1, t->f) != 1 || fwrite(msg, 1, len, t->f) != len) {
        err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "writing a spill file: %s", strerror(errno));
        return -1;
    }
    t->bytes += sizeof(n) + len;
    s->bytes += sizeof(n) + len;
    return 0;
}

int64_t txspill_abort(TxSpill *s, uint32_t xid, uint32_t subxid, Err *err) {
    TxStream *t = stream_of(s, xid, 0);
    if (t == NULL)
        return 0;
    if (subxid == xid) {
        char k[16];
        snprintf(k, sizeof(k), "%u", xid);
        strmap_del(s->txns, k);
        int64_t dropped = (int64_t)t->bytes;
        s->bytes -= t->bytes;
        txstream_free(t);
        return dropped;
    }
    for (int i = 0; i < t->nsub; i++)
        if (t->subxid[i] == subxid) {
            long off = t->suboff[i];
            if (fflush(t->f) != 0 || ftruncate(fileno(t->f), off) != 0 ||
                fseek(t->f, off, SEEK_SET) != 0) {
                err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "cutting a spill file: %s",
                        strerror(errno));
                return -1;
            }
            int64_t dropped = (int64_t)(t->bytes - (uint64_t)off);
            s->bytes -= (uint64_t)dropped;
            t->bytes = (uint64_t)off;
            t->nsub = i; /* it and the ones after it: nested in it */
            return dropped;
        }
    return 0;
}

TxStream *txspill_take(TxSpill *s, uint32_t xid) {
    char k[16];
    snprintf(k, sizeof(k), "%u", xid);
    TxStream *t = strmap_del(s->txns, k);
    if (t == NULL) { /* nothing of it came (nothing of it is published) */
        t = xcalloc(1, sizeof(*t));
        t->xid = xid;
        return t;
    }
    s->bytes -= t->bytes;
    if (t->f)
        rewind(t->f);
    return t;
}

int txstream_next(TxStream *t, char **msg, uint32_t *len, Err *err) {
    uint32_t n;
    if (t->f == NULL || fread(&n, sizeof(n), 1, t->f) != 1) {
        if (t->f && ferror(t->f)) {
            err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "reading a spill file: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    *msg = xmalloc(n ? n : 1);
    *len = n;
    if (fread(*msg, 1, n, t->f) != n) {
        free(*msg);
        *msg = NULL;
        err_set(err, ERR_RETRYABLE, ERR_CODE_IO, "a spill file cut short");
        return -1;
    }
    return 1;
}

uint64_t txstream_bytes(const TxStream *t) {
    return t->bytes;
}
