/*
 * connurl: connection strings. A Redis URL taken apart, a PostgreSQL connection string
 * checked as libpq will read it, and either one redacted for logs. No I/O, no job knowledge.
 */
#ifndef BW_CONNURL_H
#define BW_CONNURL_H

#include <stddef.h>

typedef struct {
    char *host; /* owned */
    int port;
    char *username; /* owned, may be NULL (Redis 6 ACL user) */
    char *password; /* owned, may be NULL; secret */
    int db;
    int tls; /* rediss:// */
} RedisEndpoint;

/*
 * Copy url into out with any password replaced by "***" (URL userinfo, or a
 * password=... key in a libpq key=value string). Safe to log.
 */
void connurl_redact(const char *url, char *out, size_t outlen);
/* Check a PostgreSQL connection string as libpq reads it, and the values of the options libpq
 * only checks when it connects (port, sslmode, gssencmode, ...): -1 with why naming the option
 * (never its secret value). */
int connurl_check_pg(const char *conninfo, char *why, size_t whylen);

/* Parse redis://[[user]:password@]host[:port][/db] (rediss://: the same over TLS); returns 0
 * or -1 with why. */
int connurl_parse_redis(const char *url, RedisEndpoint *ep, const char **why);
void connurl_redis_free(RedisEndpoint *ep);

#endif
