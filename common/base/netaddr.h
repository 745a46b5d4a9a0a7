/*
 * netaddr: host names and addresses for the connection adapters.
 *
 * Both hiredis and libpq resolve names with a blocking getaddrinfo() inside
 * their connect calls. The adapters resolve first on libuv's thread pool and
 * hand the libraries a numeric address; these helpers are that shared step.
 */
#ifndef BW_NETADDR_H
#define BW_NETADDR_H

#include <stddef.h>
#include <uv.h>

#define NETADDR_IP_MAX 46 /* INET6_ADDRSTRLEN */

/* 1 when host is a numeric IPv4 or IPv6 address (nothing to resolve). */
int netaddr_is_ip(const char *host);
/* Start resolving host for a TCP connection; returns 0 or a libuv error. */
int netaddr_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb, const char *host);
/* The first address of a resolver answer as text. */
void netaddr_first_ip(const struct addrinfo *res, char *out, size_t outlen);

#endif
