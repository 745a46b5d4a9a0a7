/*
 * log: leveled log lines on stderr, as text or JSON (one object per line).
 *
 * Each line may carry an id: the job id or request id it belongs to, so that a
 * job's lines can be found among many running at once. Callers never pass
 * secrets: connection strings are logged through connurl_redact().
 */
#ifndef BW_LOG_H
#define BW_LOG_H

#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } LogLevel;
typedef enum { LOG_TEXT = 0, LOG_JSON } LogFormat;

/* Configure the process-wide logger; stream NULL means stderr. */
void log_init(LogLevel level, LogFormat format, FILE *stream);
/* Parse "debug|info|warn|error"; returns 0 on success. */
int log_level_parse(const char *s, LogLevel *out);
/* Parse "text|json"; returns 0 on success. */
int log_format_parse(const char *s, LogFormat *out);
/* True when lines of this level are written. */
int log_enabled(LogLevel level);
/* Write one line; id may be NULL. */
void log_write(LogLevel level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(id, ...) log_write(LOG_DEBUG, id, __VA_ARGS__)
#define log_info(id, ...)  log_write(LOG_INFO, id, __VA_ARGS__)
#define log_warn(id, ...)  log_write(LOG_WARN, id, __VA_ARGS__)
#define log_error(id, ...) log_write(LOG_ERROR, id, __VA_ARGS__)

#endif
