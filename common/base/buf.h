/*
 * buf: a growable byte buffer, always NUL-terminated so it can hold text.
 *
 * Used for HTTP bodies, log lines and protocol messages. Allocation failure
 * aborts the process: a worker that cannot allocate a few bytes cannot make
 * progress, and hiding that behind error paths everywhere helps nobody.
 */
#ifndef BW_BUF_H
#define BW_BUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
} Buf;

#define BUF_INIT                                                                                   \
    { NULL, 0, 0 }

/* Make room for at least extra more bytes (plus the NUL). */
void buf_reserve(Buf *b, size_t extra);
/* Append len bytes. */
void buf_append(Buf *b, const void *data, size_t len);
/* Append a NUL-terminated string. */
void buf_puts(Buf *b, const char *s);
/* Append formatted text. */
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(Buf *b, const char *fmt, va_list ap);
/* Append s as the inside of a JSON string (quotes not included). */
void buf_json_escape(Buf *b, const char *s, size_t len);
/* The value of hex digit c (either case), or -1. */
int buf_hex_value(char c);
/* Empty the buffer, keeping its memory. */
void buf_reset(Buf *b);
/* Drop the first n bytes. */
void buf_consume(Buf *b, size_t n);
/* Free the memory; the buffer is empty and reusable afterwards. */
void buf_free(Buf *b);
/* Give the caller the data (malloc'ed, NUL-terminated); the buffer is left empty. */
char *buf_steal(Buf *b);

/* Allocation helpers that abort on failure (see above). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

#endif
