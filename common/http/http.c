/*
 * http: libcurl multi on libuv (see http.h).
 *
 * Two rules from experience with this wiring:
 *  - CURL_POLL_REMOVE can precede a close or merely a pause, and the same
 *    socket may come back at once: each socket gets its own heap context,
 *    closed asynchronously, and a returning socket simply gets a new one.
 *  - When curl asks for a 0 ms timeout, it is served from a uv_idle_t on the
 *    next loop pass rather than from a timer started inside a timer callback,
 *    so curl is never re-entered from its own timer function and I/O is polled
 *    in between.
 * Cancellation removes the easy handle at once (outside curl callbacks) and
 * reports it from the same idle pass, so callbacks never run inside the
 * caller's frame.
 */
#include "http/http.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct HttpClient {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uv_idle_t idle;
    int timeout_now;  /* run curl's timeout action on the next idle pass */
    int handles_open; /* timer, idle and socket contexts */
    int closing;
    int active;
    HttpRequest *reqs;      /* in flight */
    HttpRequest *cancelled; /* removed from curl, done not yet called */
    uint64_t sent, received;
};

struct HttpRequest {
    HttpRequest *prev, *next;
    HttpClient *client;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t body_len, body_off;
    HttpReadCb read;
    HttpWriteCb write;
    size_t max_body;
    Buf response;
    Buf resp_headers; /* "name: value\n" lines of the last response */
    int too_large;
    int cancelled;
    int in_curl; /* inside one of curl's callbacks */
    HttpDoneCb done;
    void *data;
    char errbuf[CURL_ERROR_SIZE];
    Buf header_lookup;
};

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    int events; /* what curl asked for */
    HttpClient *client;
} SockCtx;

static void check_done(HttpClient *c);

/* ---- loop glue ---- */

static void on_handle_closed(uv_handle_t *h) {
    HttpClient *c;
    if (h->type == UV_POLL) {
        SockCtx *s = h->data;
        c = s->client;
        free(s);
    } else {
        c = h->data;
    }
    if (--c->handles_open == 0 && c->closing)
        free(c);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    SockCtx *s = h->data;
    HttpClient *c = s->client;
    int flags = 0;
    if (status < 0)
        flags |= CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running = 0;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    /* libuv stopped the handle on error; if curl still wants this socket
     * (it was not removed), watch it again with the same events */
    if (status < 0 && !uv_is_closing((uv_handle_t *)h) && s->events)
        uv_poll_start(h, s->events, on_poll);
    check_done(c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    HttpClient *c = userp;
    SockCtx *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_handle_closed);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = xcalloc(1, sizeof(*s));
        s->fd = fd;
        s->client = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->handles_open++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    s->events = events;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_idle(uv_idle_t *h);

static void on_timeout(uv_timer_t *t) {
    HttpClient *c = t->data;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    HttpClient *c = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&c->timer);
    } else if (timeout_ms == 0) {
        uv_timer_stop(&c->timer);
        c->timeout_now = 1;
        uv_idle_start(&c->idle, on_idle);
    } else {
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

/* ---- completion ---- */

static void unlink_req(HttpRequest **list, HttpRequest *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        *list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void push_req(HttpRequest **list, HttpRequest *r) {
    r->prev = NULL;
    r->next = *list;
    if (*list)
        (*list)->prev = r;
    *list = r;
}

static void req_free(HttpRequest *r) {
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    buf_free(&r->response);
    buf_free(&r->resp_headers);
    buf_free(&r->header_lookup);
    free(r);
}

static void classify(HttpRequest *r, CURLcode rc, Err *err) {
    const char *detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        err_set(err, ERR_RETRYABLE, ERR_CODE_TIMEOUT, "http: %s", detail);
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        err_set(err, ERR_PERMANENT, ERR_CODE_HTTP, "http: %s", detail);
        break;
    default:
        if (r->too_large)
            err_set(err, ERR_PERMANENT, ERR_CODE_HTTP, "http: response body over %zu bytes",
                    r->max_body);
        else
            err_set(err, ERR_RETRYABLE, ERR_CODE_CONNECT, "http: %s", detail);
    }
}

static void finish(HttpClient *c, HttpRequest *r, CURLcode rc) {
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(c->multi, r->easy);
    unlink_req(&c->reqs, r);
    c->active--;
    Err err;
    err_clear(&err);
    if (r->cancelled)
        err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "http: request cancelled");
    else if (rc != CURLE_OK)
        classify(r, rc, &err);
    r->done(r, status, err_is_set(&err) ? &err : NULL, r->data);
    req_free(r);
}

static void check_done(HttpClient *c) {
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        HttpRequest *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        finish(c, r, msg->data.result);
    }
}

static void on_idle(uv_idle_t *h) {
    HttpClient *c = h->data;
    uv_idle_stop(&c->idle);
    while (c->cancelled) {
        HttpRequest *r = c->cancelled;
        unlink_req(&c->cancelled, r);
        Err err;
        err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "http: request cancelled");
        r->done(r, 0, &err, r->data);
        req_free(r);
    }
    if (c->timeout_now) {
        c->timeout_now = 0;
        int running = 0;
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(c);
    }
}

/* ---- curl callbacks ---- */

static size_t on_read(char *buf, size_t size, size_t nitems, void *userp) {
    HttpRequest *r = userp;
    size_t len = size * nitems;
    if (r->cancelled)
        return CURL_READFUNC_ABORT;
    size_t n;
    if (r->read) {
        r->in_curl++;
        n = r->read(r, buf, len, r->data);
        r->in_curl--;
        if (r->cancelled)
            return CURL_READFUNC_ABORT;
        if (n == HTTP_PAUSE)
            return CURL_READFUNC_PAUSE;
    } else {
        n = r->body_len - r->body_off;
        if (n > len)
            n = len;
        memcpy(buf, r->body + r->body_off, n);
        r->body_off += n;
    }
    r->client->sent += n;
    return n;
}

static size_t on_write(char *buf, size_t size, size_t nmemb, void *userp) {
    HttpRequest *r = userp;
    size_t len = size * nmemb;
    if (r->cancelled)
        return 0;
    if (r->write) {
        r->in_curl++;
        size_t n = r->write(r, buf, len, r->data);
        r->in_curl--;
        if (r->cancelled)
            return 0;
        if (n == HTTP_PAUSE)
            return CURL_WRITEFUNC_PAUSE;
        r->client->received += len;
        return n;
    }
    if (r->response.len + len > r->max_body) {
        r->too_large = 1;
        return 0;
    }
    buf_append(&r->response, buf, len);
    r->client->received += len;
    return len;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp) {
    HttpRequest *r = userp;
    size_t len = size * nitems;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        buf_reset(&r->resp_headers); /* a new response (after 100 Continue, redirects) */
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (colon == NULL)
        return len;
    size_t end = len;
    while (end > 0 && (buf[end - 1] == '\r' || buf[end - 1] == '\n'))
        end--;
    if (r->resp_headers.len < 64 * 1024) {
        buf_append(&r->resp_headers, buf, end);
        buf_puts(&r->resp_headers, "\n");
    }
    return len;
}

/* ---- public ---- */

HttpClient *http_client_new(uv_loop_t *loop, int max_connections) {
    static int global_done = 0;
    if (!global_done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = 1;
    }
    HttpClient *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->multi = curl_multi_init();
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Requests beyond this wait inside curl for a free connection. Besides
     * sparing the server, it bounds the work of one loop pass: opening a
     * connection costs a dozen system calls, and a hundred opened at once
     * stalled the loop for 40 ms on this machine. */
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      (long)(max_connections > 0 ? max_connections : HTTP_DEFAULT_MAX_CONNECTIONS));
    uv_timer_init(loop, &c->timer);
    uv_idle_init(loop, &c->idle);
    c->timer.data = c->idle.data = c;
    c->handles_open = 2;
    return c;
}

HttpRequest *http_request_start(HttpClient *c, const HttpRequestOpts *o, Err *err) {
    if (c->closing) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CANCELLED, "http: client closing");
        return NULL;
    }
    HttpRequest *r = xcalloc(1, sizeof(*r));
    r->client = c;
    r->easy = curl_easy_init();
    if (r->easy == NULL) {
        free(r);
        err_set(err, ERR_RETRYABLE, ERR_CODE_NOMEM, "http: cannot create a request");
        return NULL;
    }
    r->read = o->read;
    r->write = o->write;
    r->max_body = o->max_body ? o->max_body : 1024 * 1024;
    r->done = o->done;
    r->data = o->data;
    for (struct curl_slist *h = o->headers; h; h = h->next)
        r->headers = curl_slist_append(r->headers, h->data);
    /* no 100-continue round trip: S3 answers errors after the body anyway */
    r->headers = curl_slist_append(r->headers, "Expect:");

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (o->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    if (o->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    if (o->low_speed_secs > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, o->low_speed_secs);
    }
    if (o->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);

    const char *m = o->method ? o->method : "GET";
    int has_body = o->read != NULL || o->body != NULL;
    if (o->body != NULL) {
        r->body = xmalloc(o->body_len);
        memcpy(r->body, o->body, o->body_len);
        r->body_len = o->body_len;
    }
    int64_t size = o->read ? o->body_size : (int64_t)r->body_len;
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (has_body) {
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        if (strcmp(m, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POST, 1L);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)size);
        } else {
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            if (size >= 0)
                curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
            if (strcmp(m, "PUT") != 0)
                curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
        }
    } else if (strcmp(m, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }

    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        req_free(r);
        err_set(err, ERR_RETRYABLE, ERR_CODE_HTTP, "http: cannot start the request");
        return NULL;
    }
    push_req(&c->reqs, r);
    c->active++;
    return r;
}

void http_request_resume(HttpRequest *r) {
    if (!r->cancelled)
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
}

void http_request_cancel(HttpRequest *r) {
    if (r->cancelled)
        return;
    r->cancelled = 1;
    if (r->in_curl)
        return; /* our curl callback aborts the transfer; finish() reports it */
    HttpClient *c = r->client;
    curl_multi_remove_handle(c->multi, r->easy);
    unlink_req(&c->reqs, r);
    c->active--;
    push_req(&c->cancelled, r);
    uv_idle_start(&c->idle, on_idle);
}

long http_request_status(const HttpRequest *r) {
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

const Buf *http_request_body(const HttpRequest *r) {
    return &r->response;
}

const char *http_request_header(const HttpRequest *r, const char *name) {
    size_t n = strlen(name);
    const char *p = r->resp_headers.data;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > n && p[n] == ':' && strncasecmp(p, name, n) == 0) {
            const char *v = p + n + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            Buf *out = (Buf *)&r->header_lookup; /* scratch space owned by the request */
            buf_reset(out);
            buf_append(out, v, (size_t)(eol - v));
            return out->data;
        }
        p = eol + 1;
    }
    return NULL;
}

int http_client_active(const HttpClient *c) {
    return c->active;
}

uint64_t http_client_bytes_sent(const HttpClient *c) {
    return c->sent;
}

uint64_t http_client_bytes_received(const HttpClient *c) {
    return c->received;
}

void http_client_free(HttpClient *c) {
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    Err err;
    err_set(&err, ERR_PERMANENT, ERR_CODE_CANCELLED, "http: client closed");
    while (c->reqs) {
        HttpRequest *r = c->reqs;
        curl_multi_remove_handle(c->multi, r->easy);
        unlink_req(&c->reqs, r);
        c->active--;
        r->done(r, 0, &err, r->data);
        req_free(r);
    }
    while (c->cancelled) {
        HttpRequest *r = c->cancelled;
        unlink_req(&c->cancelled, r);
        r->done(r, 0, &err, r->data);
        req_free(r);
    }
    /* may call socket_cb(REMOVE) for cached connections: their polls close here */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    uv_timer_stop(&c->timer);
    uv_idle_stop(&c->idle);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}
