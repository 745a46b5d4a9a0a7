/*
 * connurl: connection strings (see connurl.h): Redis URLs parsed, PostgreSQL conninfo checked
 * as libpq reads it, and both redacted for logs.
 */
#include "config/connurl.h"

#include "base/buf.h"
#include "base/textval.h" /* numbers read the way every setting is */

#include <ctype.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static char *dup_range(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Decode %XX escapes in place (URL userinfo may hold an escaped password). */
static int percent_decode(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%') {
            if (!isxdigit((unsigned char)r[1]) || !isxdigit((unsigned char)r[2]))
                return -1;
            char hex[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return 0;
}

void connurl_redis_free(RedisEndpoint *ep) {
    free(ep->host);
    free(ep->username);
    free(ep->password);
    memset(ep, 0, sizeof(*ep));
}

int connurl_parse_redis(const char *url, RedisEndpoint *ep, const char **why) {
    memset(ep, 0, sizeof(*ep));
    ep->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        ep->tls = 1;
        url++; /* the rest reads as redis:// does */
    } else if (strncmp(url, "redis://", 8) != 0) {
        *why = "must start with redis:// (or rediss:// for TLS)";
        return -1;
    }
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q; /* the last '@': passwords may contain '@' unescaped */
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (colon > p)
                ep->username = dup_range(p, (size_t)(colon - p));
            ep->password = dup_range(colon + 1, (size_t)(at - colon - 1));
        } else if (at > p) {
            /* redis://secret@host: a bare userinfo is the password, as redis-cli reads it */
            ep->password = dup_range(p, (size_t)(at - p));
        }
        if ((ep->username && percent_decode(ep->username) != 0) ||
            (ep->password && percent_decode(ep->password) != 0)) {
            *why = "bad %-escape in the user or password";
            goto fail;
        }
        p = at + 1;
    }
    const char *hostend;
    if (*p == '[') { /* [::1]:6379 */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL) {
            *why = "unterminated [ in the host";
            goto fail;
        }
        ep->host = dup_range(p + 1, (size_t)(rb - p - 1));
        hostend = rb + 1;
    } else {
        hostend = p;
        while (hostend < end && *hostend != ':')
            hostend++;
        ep->host = dup_range(p, (size_t)(hostend - p));
    }
    if (ep->host[0] == '\0') {
        *why = "the host is missing";
        goto fail;
    }
    if (hostend < end && *hostend == ':') {
        char *port = dup_range(hostend + 1, (size_t)(end - hostend - 1));
        long v;
        int bad = textval_int(port, 1, 65535, &v);
        free(port);
        if (bad) {
            *why = "the port must be a number from 1 to 65535";
            goto fail;
        }
        ep->port = (int)v;
    } else if (hostend != end) {
        *why = "unexpected characters after the host";
        goto fail;
    }
    if (*end == '/' && end[1] != '\0') {
        long v;
        if (textval_int(end + 1, 0, 10000, &v) != 0) {
            *why = "the database after / must be a number";
            goto fail;
        }
        ep->db = (int)v;
    } else if (*end == '?' || *end == '#') {
        *why = "query strings and fragments are not supported";
        goto fail;
    }
    return 0;
fail:
    connurl_redis_free(ep);
    return -1;
}

/* A libpq option that holds a secret: libpq marks them for display with '*'. */
static int pg_secret(const PQconninfoOption *o) {
    return (o->dispchar && o->dispchar[0] == '*') || strcmp(o->keyword, "password") == 0 ||
           strcmp(o->keyword, "sslpassword") == 0;
}

/*
 * A PostgreSQL connection string as libpq itself reads it (URI or key=value), rebuilt with every
 * secret option masked: a spelling libpq decodes (?%70assword=, sslpassword= before password=)
 * cannot slip past a text search. A URI is shown as a URI, key=value pairs as pairs.
 */
static void pg_redacted(const char *url, Buf *b) {
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (opts == NULL) {
        buf_puts(b, "(unparseable connection string)");
        return;
    }
    const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
    int has_pw = 0, uri = strstr(url, "://") != NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (uri && strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (uri && strcmp(o->keyword, "password") == 0)
            has_pw = 1;
        else if (uri && strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (uri && strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (uri && strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    if (uri) {
        buf_puts(b, "postgresql://");
        if (user || has_pw)
            buf_printf(b, "%s%s@", user ? user : "", has_pw ? ":***" : "");
        buf_printf(b, "%s%s%s/%s", host ? host : "", port ? ":" : "", port ? port : "",
                   db ? db : "");
    }
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        if (uri && (strcmp(o->keyword, "user") == 0 || strcmp(o->keyword, "password") == 0 ||
                    strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "port") == 0 ||
                    strcmp(o->keyword, "dbname") == 0))
            continue;
        buf_printf(b, "%s%s=%s", uri ? (n ? "&" : "?") : (n ? " " : ""), o->keyword,
                   pg_secret(o) ? "***" : o->val);
        n++;
    }
    PQconninfoFree(opts);
}

static int one_of(const char *v, const char *const *set) {
    for (; *set; set++)
        if (strcmp(v, *set) == 0)
            return 1;
    return 0;
}

/* Every port of a comma-separated list is a number 1-65535 (an empty entry means the default). */
static int valid_ports(const char *v) {
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, ",");
        if (n > 0) {
            if (n > 5 || strspn(p, "0123456789") != n)
                return 0;
            long port = strtol(p, NULL, 10);
            if (port < 1 || port > 65535)
                return 0;
        }
        if (p[n] == '\0')
            return 1;
        p += n + 1;
    }
}

int connurl_check_pg(const char *conninfo, char *why, size_t whylen) {
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        /* libpq's message may quote the string, password included: name the problem only */
        snprintf(why, whylen,
                 "not a valid PostgreSQL connection string (expected "
                 "postgresql://user:password@host:port/dbname or key=value pairs)");
        PQfreemem(perr);
        return -1;
    }
    static const char *const sslmodes[] = {"disable",   "allow",       "prefer", "require",
                                           "verify-ca", "verify-full", NULL};
    static const char *const gss[] = {"disable", "prefer", "require", NULL};
    static const char *const binding[] = {"disable", "prefer", "require", NULL};
    static const char *const attrs[] = {"any",     "read-write",     "read-only", "primary",
                                        "standby", "prefer-standby", NULL};
    static const char *const ints[] = {"connect_timeout",
                                       "keepalives",
                                       "keepalives_idle",
                                       "keepalives_interval",
                                       "keepalives_count",
                                       "tcp_user_timeout",
                                       NULL};
    int rc = 0;
    for (PQconninfoOption *o = opts; o->keyword && rc == 0; o++) {
        const char *k = o->keyword, *v = o->val;
        if (v == NULL)
            continue;
        const char *want = NULL;
        if (strcmp(k, "port") == 0 && !valid_ports(v))
            want = "a port number 1-65535 (or a comma-separated list)";
        else if (strcmp(k, "sslmode") == 0 && !one_of(v, sslmodes))
            want = "disable, allow, prefer, require, verify-ca or verify-full";
        else if (strcmp(k, "gssencmode") == 0 && !one_of(v, gss))
            want = "disable, prefer or require";
        else if (strcmp(k, "channel_binding") == 0 && !one_of(v, binding))
            want = "disable, prefer or require";
        else if (strcmp(k, "target_session_attrs") == 0 && !one_of(v, attrs))
            want = "any, read-write, read-only, primary, standby or prefer-standby";
        else if (one_of(k, ints) && (v[0] == '\0' || strspn(v, "0123456789") != strlen(v)))
            want = "a whole number";
        if (want) {
            if (pg_secret(o))
                snprintf(why, whylen, "option %s is not valid: expected %s", k, want);
            else
                snprintf(why, whylen, "option %s=%.60s is not valid: expected %s", k, v, want);
            rc = -1;
        }
    }
    PQconninfoFree(opts);
    return rc;
}

void connurl_redact(const char *url, char *out, size_t outlen) {
    if (outlen == 0)
        return;
    Buf b = BUF_INIT;
    const char *scheme = strstr(url, "://");
    int pg = strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
    if (scheme != NULL && !pg) { /* redis://, or any other URL: mask its userinfo */
        const char *p = scheme + 3;
        const char *end = p + strcspn(p, "/?#");
        const char *at = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == '@')
                at = q;
        if (at != NULL) {
            const char *colon = memchr(p, ':', (size_t)(at - p));
            buf_append(&b, url, (size_t)(p - url));
            if (colon != NULL)
                buf_append(&b, p, (size_t)(colon - p + 1));
            /* redis://secret@host: the bare userinfo is the password, as redis-cli reads it */
            buf_puts(&b, "***");
            buf_puts(&b, at);
        } else {
            buf_puts(&b, url);
        }
    } else {
        pg_redacted(url, &b);
    }
    snprintf(out, outlen, "%s", b.data ? b.data : "");
    buf_free(&b);
}
