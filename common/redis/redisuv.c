/*
 * redisuv: hiredis <-> libuv glue (see redisuv.h).
 *
 * Same shape as the upstream adapter: one uv_poll_t per context, an event
 * mask, and a cleanup hook that closes the poll handle asynchronously (memory
 * is released in the close callback, never before).
 */
#include "redis/redisuv.h"
#include "base/buf.h"

#include <stdlib.h>

typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    int events;
} RedisUvEvents;

static void on_poll(uv_poll_t *handle, int status, int events) {
    RedisUvEvents *p = handle->data;
    if (status < 0) {
        /* Let hiredis find the error: while connecting, the write path checks
         * SO_ERROR; once connected, read() returns the reset or EOF. */
        if (p->ac != NULL) {
            if (!(p->ac->c.flags & REDIS_CONNECTED))
                redisAsyncHandleWrite(p->ac);
            else
                redisAsyncHandleRead(p->ac);
        }
        /* libuv stopped the handle; if hiredis kept the connection, watch on */
        if (p->ac != NULL && p->events)
            uv_poll_start(&p->poll, p->events, on_poll);
        return;
    }
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void update(RedisUvEvents *p, int events) {
    p->events = events;
    if (p->events)
        uv_poll_start(&p->poll, p->events, on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void add_read(void *privdata) {
    RedisUvEvents *p = privdata;
    update(p, p->events | UV_READABLE);
}

static void del_read(void *privdata) {
    RedisUvEvents *p = privdata;
    update(p, p->events & ~UV_READABLE);
}

static void add_write(void *privdata) {
    RedisUvEvents *p = privdata;
    update(p, p->events | UV_WRITABLE);
}

static void del_write(void *privdata) {
    RedisUvEvents *p = privdata;
    update(p, p->events & ~UV_WRITABLE);
}

static void on_close(uv_handle_t *handle) {
    free(handle->data);
}

static void cleanup(void *privdata) {
    RedisUvEvents *p = privdata;
    p->ac = NULL;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, on_close);
}

int redisuv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data != NULL)
        return -1;
    RedisUvEvents *p = xcalloc(1, sizeof(*p));
    if (uv_poll_init_socket(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = p;
    return 0;
}
