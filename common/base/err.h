/*
 * err: errors as values.
 *
 * Every asynchronous operation reports its outcome as an Err: a kind that tells
 * the caller whether trying again can help (retryable: network, timeouts, server
 * restarts; permanent: bad input, not found, forbidden), a code naming the
 * subsystem, and a human message. The error is decided once, where the failure
 * is understood, and carried up unchanged. Messages never hold secrets.
 */
#ifndef BW_ERR_H
#define BW_ERR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    ERR_NONE = 0,  /* success */
    ERR_RETRYABLE, /* transient: the same operation may succeed later */
    ERR_PERMANENT, /* retrying cannot help */
} ErrKind;

typedef enum {
    ERR_CODE_OK = 0,
    ERR_CODE_CONFIG,    /* invalid configuration */
    ERR_CODE_CONNECT,   /* could not connect, or connection lost */
    ERR_CODE_TIMEOUT,   /* an operation took too long */
    ERR_CODE_PROTOCOL,  /* the peer answered something we cannot understand */
    ERR_CODE_SQL,       /* PostgreSQL reported an error for a statement */
    ERR_CODE_REDIS,     /* Redis replied with an error */
    ERR_CODE_HTTP,      /* HTTP transport or status error */
    ERR_CODE_CANCELLED, /* the caller or shutdown cancelled the operation */
    ERR_CODE_NOMEM,     /* allocation failed */
    ERR_CODE_INVALID,   /* invalid argument or input */
    ERR_CODE_BUSY,      /* resource in use */
    ERR_CODE_IO,        /* a file system call failed */
} ErrCode;

#define ERR_MSG_MAX 512

typedef struct {
    ErrKind kind;
    ErrCode code;
    char msg[ERR_MSG_MAX];
} Err;

/* Clear an error to "no error". */
void err_clear(Err *err);

/* Set kind, code and a printf-style message. NULL err is allowed (ignored). */
void err_set(Err *err, ErrKind kind, ErrCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix the message with context ("connect: " + old message). */
void err_prefix(Err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when err holds an error. */
static inline int err_is_set(const Err *err) {
    return err != NULL && err->kind != ERR_NONE;
}

/* Name of an error code, for logs and metrics ("connect", "timeout"...). */
const char *err_code_name(ErrCode code);

#endif
