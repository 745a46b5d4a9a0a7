/*
 * httpd: minimal health/metrics HTTP server (see httpd.h).
 */
#include "http/httpd.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>

#define MAX_REQUEST   8192
#define CONN_DEADLINE 5000

typedef struct Conn Conn;

struct Httpd {
    uv_tcp_t server;
    HttpdHandler handler;
    void *data;
    Conn *conns;
    int closing;
    int open; /* server handle + connections */
};

struct Conn {
    Conn *prev, *next;
    Httpd *h;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    Buf in;
    Buf out;
    int handles; /* tcp + timer */
    int closing;
};

static void maybe_free_server(Httpd *h) {
    if (h->closing && h->open == 0)
        free(h);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
    Conn *c = handle->data;
    if (--c->handles > 0)
        return;
    Httpd *h = c->h;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    h->open--;
    maybe_free_server(h);
}

static void conn_close(Conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    Httpd *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_written(uv_write_t *req, int status) {
    (void)status;
    conn_close(req->data);
}

static const char *reason(int status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

static void respond(Conn *c, const char *method, HttpdResponse *resp) {
    int head = method != NULL && strcmp(method, "HEAD") == 0;
    buf_printf(&c->out,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
               resp->status, reason(resp->status),
               resp->content_type ? resp->content_type : "text/plain; charset=utf-8",
               resp->body.len);
    if (!head && resp->body.len)
        buf_append(&c->out, resp->body.data, resp->body.len);
    buf_free(&resp->body);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void simple(Conn *c, int status, const char *text) {
    HttpdResponse resp = {status, NULL, BUF_INIT};
    buf_puts(&resp.body, text);
    respond(c, NULL, &resp);
}

static void handle_request(Conn *c) {
    /* request line: METHOD SP PATH SP VERSION */
    char *line = c->in.data;
    char *eol = strstr(line, "\r\n");
    *eol = '\0';
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL) {
        simple(c, 400, "bad request\n");
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    char *path = sp1 + 1;
    path[strcspn(path, "?#")] = '\0';
    if (strcmp(line, "GET") != 0 && strcmp(line, "HEAD") != 0) {
        simple(c, 405, "method not allowed\n");
        return;
    }
    HttpdResponse resp = {200, NULL, BUF_INIT};
    c->h->handler(line, path, &resp, c->h->data);
    respond(c, line, &resp);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *b) {
    (void)suggested;
    Conn *c = handle->data;
    buf_reserve(&c->in, 1024);
    b->base = c->in.data + c->in.len;
    b->len = c->in.cap - c->in.len - 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    (void)b;
    Conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    if (c->in.len > MAX_REQUEST)
        simple(c, 413, "request too large\n");
    else if (strstr(c->in.data, "\r\n\r\n") != NULL)
        handle_request(c);
}

static void on_deadline(uv_timer_t *t) {
    conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status) {
    Httpd *h = server->data;
    if (status < 0 || h->closing)
        return;
    Conn *c = xcalloc(1, sizeof(*c));
    c->h = h;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    h->open++;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_deadline, CONN_DEADLINE, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

Httpd *httpd_new(uv_loop_t *loop, const char *ip, int port, HttpdHandler handler, void *data,
                 Err *err) {
    Httpd *h = xcalloc(1, sizeof(*h));
    h->handler = handler;
    h->data = data;
    uv_tcp_init(loop, &h->server);
    h->server.data = h;
    h->open = 1;
    struct sockaddr_storage addr;
    int rc = strchr(ip, ':') ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&addr)
                             : uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
    if (rc == 0)
        rc = uv_tcp_bind(&h->server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 64, on_connection);
    if (rc != 0) {
        err_set(err, ERR_PERMANENT, ERR_CODE_CONFIG, "http server: cannot listen on %s:%d: %s", ip,
                port, uv_strerror(rc));
        httpd_free(h);
        return NULL;
    }
    return h;
}

int httpd_port(const Httpd *h) {
    struct sockaddr_storage addr;
    int len = sizeof(addr);
    if (uv_tcp_getsockname(&h->server, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

static void on_server_closed(uv_handle_t *handle) {
    Httpd *h = handle->data;
    h->open--;
    maybe_free_server(h);
}

void httpd_free(Httpd *h) {
    if (h == NULL || h->closing)
        return;
    h->closing = 1;
    while (h->conns)
        conn_close(h->conns);
    uv_close((uv_handle_t *)&h->server, on_server_closed);
}
