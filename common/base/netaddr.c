/*
 * netaddr: resolution helpers shared by the adapters (see netaddr.h).
 */
#include "base/netaddr.h"

#include <arpa/inet.h>
#include <string.h>

int netaddr_is_ip(const char *host) {
    unsigned char tmp[16];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

int netaddr_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
                    const char *host) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    return uv_getaddrinfo(loop, req, cb, host, NULL, &hints);
}

void netaddr_first_ip(const struct addrinfo *res, char *out, size_t outlen) {
    if (outlen == 0)
        return;
    out[0] = '\0';
    if (res == NULL)
        return;
    if (res->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, out, outlen);
    else
        uv_ip4_name((const struct sockaddr_in *)res->ai_addr, out, outlen);
}
