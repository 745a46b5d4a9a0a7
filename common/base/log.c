/*
 * log: leveled text or JSON lines (see log.h).
 *
 * Each line is formatted into one buffer and written with one fwrite so lines
 * from the loop thread and the thread pool never interleave mid-line.
 */
#include "base/log.h"
#include "base/buf.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static LogLevel g_level = LOG_INFO;
static LogFormat g_format = LOG_TEXT;
static FILE *g_stream = NULL;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_init(LogLevel level, LogFormat format, FILE *stream) {
    g_level = level;
    g_format = format;
    g_stream = stream;
}

int log_level_parse(const char *s, LogLevel *out) {
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (LogLevel)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

int log_format_parse(const char *s, LogFormat *out) {
    if (strcasecmp(s, "text") == 0)
        *out = LOG_TEXT;
    else if (strcasecmp(s, "json") == 0)
        *out = LOG_JSON;
    else
        return -1;
    return 0;
}

int log_enabled(LogLevel level) {
    return level >= g_level;
}

void log_write(LogLevel level, const char *id, const char *fmt, ...) {
    if (level < g_level)
        return;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    Buf msg = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);

    Buf line = BUF_INIT;
    if (g_format == LOG_JSON) {
        buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\"", when, level_names[level]);
        if (id != NULL) {
            buf_puts(&line, ",\"id\":\"");
            buf_json_escape(&line, id, strlen(id));
            buf_puts(&line, "\"");
        }
        buf_puts(&line, ",\"msg\":\"");
        buf_json_escape(&line, msg.data ? msg.data : "", msg.len);
        buf_puts(&line, "\"}\n");
    } else {
        buf_printf(&line, "%s %-5s ", when, level_names[level]);
        if (id != NULL)
            buf_printf(&line, "[%s] ", id);
        buf_append(&line, msg.data ? msg.data : "", msg.len);
        buf_puts(&line, "\n");
    }
    FILE *out = g_stream ? g_stream : stderr;
    fwrite(line.data, 1, line.len, out);
    fflush(out);
    buf_free(&line);
    buf_free(&msg);
}
