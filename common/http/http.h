/*
 * http: HTTP requests on the libuv loop through libcurl's multi interface.
 *
 * curl_multi_socket_action is driven by one uv_poll_t per socket
 * (CURLMOPT_SOCKETFUNCTION) and one uv_timer_t (CURLMOPT_TIMERFUNCTION), as in
 * curl's multi-uv example; connections are reused through the multi handle's
 * cache. Request and response bodies stream through callbacks, and either side
 * can pause (backpressure) and resume. Everything S3-specific lives above.
 *
 *   HttpRequestOpts o = {.method = "GET", .url = url, .done = on_done, .data = ctx};
 *   http_request_start(client, &o, &err);
 */
#ifndef BW_HTTP_H
#define BW_HTTP_H

#include "base/buf.h"
#include "base/err.h"

#include <curl/curl.h>
#include <stdint.h>
#include <uv.h>

typedef struct HttpClient HttpClient;
typedef struct HttpRequest HttpRequest;

/* Returned by read and write callbacks to pause the transfer. */
#define HTTP_PAUSE ((size_t)-1)

/* Fill buf with up to len body bytes; return the count, 0 at the end, or HTTP_PAUSE. */
typedef size_t (*HttpReadCb)(HttpRequest *req, char *buf, size_t len, void *data);
/* Consume len response body bytes; return len, or HTTP_PAUSE to be called again later. */
typedef size_t (*HttpWriteCb)(HttpRequest *req, const char *buf, size_t len, void *data);
/*
 * The request finished: status is the HTTP status (0 when no response). err is
 * set on transport failures (retryable: connect, reset, timeout) only; an HTTP
 * error status is not an err, the caller judges it. Buffered bodies are still
 * readable with http_request_body() during this callback; the request is freed after.
 */
typedef void (*HttpDoneCb)(HttpRequest *req, long status, const Err *err, void *data);

typedef struct {
    const char *method; /* GET, PUT, POST, HEAD, DELETE */
    const char *url;
    struct curl_slist *headers; /* "Name: value" lines; copied */
    /* request body: either a buffer (copied) or a read callback */
    const void *body;
    size_t body_len;
    HttpReadCb read;
    int64_t body_size; /* with read: total length, or -1 for chunked */
    /* response body: a write callback, or buffered up to max_body bytes */
    HttpWriteCb write;
    size_t max_body;         /* default 1 MiB when buffering */
    long timeout_ms;         /* whole request; 0 = none */
    long connect_timeout_ms; /* TCP + TLS connect; 0 = curl's default (300 s) */
    long low_speed_secs;     /* abort when under 1 byte/s for this long; 0 = off */
    const char *ca_file;     /* optional CA bundle */
    HttpDoneCb done;
    void *data;
} HttpRequestOpts;

#define HTTP_DEFAULT_MAX_CONNECTIONS 16

/* A client on loop with at most max_connections sockets (0: the default). */
HttpClient *http_client_new(uv_loop_t *loop, int max_connections);
/* Cancel requests in flight (done gets ERR_CODE_CANCELLED) and free asynchronously. */
void http_client_free(HttpClient *client);
/* Requests in flight. */
int http_client_active(const HttpClient *client);
/* Bytes sent and received since creation (for metrics). */
uint64_t http_client_bytes_sent(const HttpClient *client);
uint64_t http_client_bytes_received(const HttpClient *client);

/* Start a request. Returns NULL with err set when it cannot start (done is then not called). */
HttpRequest *http_request_start(HttpClient *client, const HttpRequestOpts *opts, Err *err);
/* Resume a paused request body upload or download. */
void http_request_resume(HttpRequest *req);
/* Abort: done is called later with ERR_CODE_CANCELLED. */
void http_request_cancel(HttpRequest *req);
/* The response status once headers arrived (also inside a write callback); 0 before. */
long http_request_status(const HttpRequest *req);
/* Buffered response body (when no write callback), valid during done. */
const Buf *http_request_body(const HttpRequest *req);
/* A response header by name (case-insensitive), valid during done; NULL if absent. */
const char *http_request_header(const HttpRequest *req, const char *name);

#endif
