/*
 * testlib.h: helpers for tests that drive servers through real sockets.
 * Blocking client sockets on 127.0.0.1 with timeouts (so a broken server fails
 * a test instead of hanging it), an HTTP response reader built on
 * libhttp-parser, and a server running on its own libuv loop in a thread.
 */
#ifndef DIRIGENT_TESTLIB_H
#define DIRIGENT_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "dirigent/http.h"

/* Connect to 127.0.0.1:port; receive timeout `timeout_ms`. Returns the fd or -1. */
int tl_connect(int port, int timeout_ms);
int tl_send(int fd, const void *buf, size_t len);
int tl_sends(int fd, const char *s);
/* Send in pieces of `chunk` bytes with `delay_us` between them. */
int tl_send_slowly(int fd, const char *buf, size_t len, size_t chunk, unsigned delay_us);

struct tl_resp {
    int status;
    char headers[8192]; /* "name: value\n" lines, names lowercased */
    char *body;         /* malloc'd, NUL-terminated; tl_resp_free */
    size_t body_len;
    bool keep_alive;
};
/* Read exactly one response. Returns 0, or -1 on EOF/timeout/parse error before its end. */
int tl_read_resp(int fd, struct tl_resp *r);
/* Value of a header of a response read with tl_read_resp ("" if absent); static buffer. */
const char *tl_resp_header(const struct tl_resp *r, const char *name);
void tl_resp_free(struct tl_resp *r);
/* True if the peer closed the connection (EOF or reset) within timeout_ms, reading and
 * discarding anything before it. */
bool tl_wait_closed(int fd, int timeout_ms);

/* One request on a new connection: send `req`, read one response. Returns status or -1. */
int tl_roundtrip(int port, const char *req, struct tl_resp *r);

/* A dg_http_server on its own loop in a thread. `setup` runs on that thread before the server
 * listens (add routes there). */
struct tl_server;
struct tl_server *
tl_server_start(const struct dg_http_limits *limits,
                void (*setup)(struct dg_http_server *s, uv_loop_t *loop, void *ud), void *ud);
int tl_server_port(const struct tl_server *t);
struct dg_http_server *tl_server_http(struct tl_server *t);
/* Run `fn(ud)` on the server's loop thread and wait for it. */
void tl_server_call(struct tl_server *t, void (*fn)(void *ud), void *ud);
/* Wait until the server has at least `n` requests in flight (read on its loop thread);
 * false after `timeout_ms`. Replaces sleeps before acting on an in-flight request. */
bool tl_server_wait_active(struct tl_server *t, unsigned n, int timeout_ms);
/* Polls until the server has no request in hand and no connection open (every client it had is
 * gone and cleaned up); false after timeout_ms (a bound, not a verdict on speed). */
bool tl_server_wait_idle(struct tl_server *t, int timeout_ms);
/* The requests the server has begun so far; polls until they are at least n (false after
 * timeout_ms). */
uint64_t tl_server_requests(struct tl_server *t);
bool tl_server_wait_requests(struct tl_server *t, uint64_t n, int timeout_ms);
/* Close the server with `grace_ms` and join the thread. */
void tl_server_stop(struct tl_server *t, unsigned grace_ms);

/* Run `loop` until *flag is true or timeout_ms passes; returns *flag. */
bool tl_run_until(uv_loop_t *loop, volatile bool *flag, unsigned timeout_ms);
/* The end of a test on its own loop: close `srv` (100 ms grace), run the loop until nothing is
 * left and close it; 0, or uv_loop_close's error (a handle left open). */
int tl_server_close_loop(uv_loop_t *loop, struct dg_http_server *srv);

#endif
