/*
 * err: errors as values (see err.h).
 */
#include "base/err.h"
#include "base/buf.h"

#include <stdio.h>
#include <string.h>

void err_clear(Err *err) {
    if (err == NULL)
        return;
    err->kind = ERR_NONE;
    err->code = ERR_CODE_OK;
    err->msg[0] = '\0';
}

void err_set(Err *err, ErrKind kind, ErrCode code, const char *fmt, ...) {
    if (err == NULL)
        return;
    err->kind = kind;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

void err_prefix(Err *err, const char *fmt, ...) {
    if (err == NULL)
        return;
    char prefix[ERR_MSG_MAX];
    char old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* the result is cut at ERR_MSG_MAX on purpose */
    Buf b = BUF_INIT;
    buf_printf(&b, "%s: %s", prefix, old);
    snprintf(err->msg, sizeof(err->msg), "%.*s", (int)sizeof(err->msg) - 1, b.data);
    buf_free(&b);
}

const char *err_code_name(ErrCode code) {
    switch (code) {
    case ERR_CODE_OK:
        return "ok";
    case ERR_CODE_CONFIG:
        return "config";
    case ERR_CODE_CONNECT:
        return "connect";
    case ERR_CODE_TIMEOUT:
        return "timeout";
    case ERR_CODE_PROTOCOL:
        return "protocol";
    case ERR_CODE_SQL:
        return "sql";
    case ERR_CODE_REDIS:
        return "redis";
    case ERR_CODE_HTTP:
        return "http";
    case ERR_CODE_CANCELLED:
        return "cancelled";
    case ERR_CODE_NOMEM:
        return "nomem";
    case ERR_CODE_INVALID:
        return "invalid";
    case ERR_CODE_BUSY:
        return "busy";
    case ERR_CODE_IO:
        return "io";
    }
    return "unknown";
}
