/*
 * httpd: a tiny HTTP/1.1 server on the loop for health checks and metrics.
 *
 * Serves one request per connection (Connection: close), GET and HEAD only,
 * with a request-size limit and a per-connection deadline so a slow or
 * hostile client cannot hold resources. Not a general web server.
 */
#ifndef BW_HTTPD_H
#define BW_HTTPD_H

#include "base/buf.h"
#include "base/err.h"

#include <uv.h>

typedef struct Httpd Httpd;

typedef struct {
    int status;               /* default 200 */
    const char *content_type; /* default text/plain; charset=utf-8 */
    Buf body;
} HttpdResponse;

/* Fill resp for method and path (query string removed). */
typedef void (*HttpdHandler)(const char *method, const char *path, HttpdResponse *resp, void *data);

/* Listen on ip:port (port 0 picks a free one). NULL with err on failure. */
Httpd *httpd_new(uv_loop_t *loop, const char *ip, int port, HttpdHandler handler, void *data,
                 Err *err);
/* The port actually bound. */
int httpd_port(const Httpd *h);
/* Stop listening, close open connections, free asynchronously. */
void httpd_free(Httpd *h);

#endif
