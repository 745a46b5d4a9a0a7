/*
 * redisuv: attaches a hiredis async context to a libuv loop.
 *
 * Our own adapter instead of hiredis 0.14's adapters/libuv.h, which drops poll
 * errors (status < 0) on the floor: a refused or reset connection then fires
 * neither the connect nor the disconnect callback and the client hangs. Here an
 * error is handed to hiredis as a read (or, while connecting, a write) so that
 * it discovers the socket error itself and runs its normal failure path.
 */
#ifndef BW_REDISUV_H
#define BW_REDISUV_H

#include <hiredis/async.h>
#include <uv.h>

/* Install the read/write/cleanup hooks; returns 0, or -1 if already attached or on error. */
int redisuv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
