/*
 * dirigent-fn's HTTP/2 cleartext side (h2.c): connections the HTTP/1.1 server hands over when
 * their first bytes are the HTTP/2 client preface (h2c with prior knowledge), served with
 * libnghttp2. Each stream is answered by the same request handling as an HTTP/1.1 request
 * (server.c through struct fn_req).
 */
#ifndef DIRIGENT_FN_H2_H
#define DIRIGENT_FN_H2_H

#include <stdbool.h>
#include <stddef.h>

#include "dirigent/common.h"
#include "dirigent/daemon.h"
#include "dirigent/http.h"

struct fn_h2_stream;
struct fn_h2_conn;

/* The HTTP/2 side of one server (the caller fills the first four fields). */
struct fn_h2 {
    uv_loop_t *loop;
    const struct dg_http_conf *http;                   /* limits and idle timeout, HTTP/1.1's */
    void (*handle)(void *ud, struct fn_h2_stream *st); /* a stream whose request has ended */
    void *ud;
    struct fn_h2_conn *conns; /* open connections */
};

/* dg_http_h2c_fn for the HTTP/1.1 server: take over `fd` (ud is the struct fn_h2). */
void fn_h2_accept(void *ud, int fd, const char *early, size_t len);

/* HTTP/1.1's `Upgrade: h2c` (with HTTP2-Settings, no body): answer 101, take the connection over
 * and answer the request as stream 1; true when taken. False: answer over HTTP/1.1 (with 400 and
 * `*why` when *why is set: the upgrade is malformed). */
struct dg_http_req;
bool fn_h2_upgrade(struct fn_h2 *f, struct dg_http_req *r, const char **why);

/* A request header of the stream (lower-case name; "host" falls back to :authority); {0} when
 * absent. */
struct dg_str fn_h2_header(struct fn_h2_stream *st, const char *name);
/* The stream's :path. */
struct dg_str fn_h2_path(struct fn_h2_stream *st);

/* Answer the stream (once); an extra header when `hname` is not NULL. The body is copied.
 * When the stream or its connection is gone, frees it and sends nothing. */
void fn_h2_respond(struct fn_h2_stream *st, int status, const char *ctype, const void *body,
                   size_t len, const char *hname, const char *hvalue);

/* The request body (NULL when it was over 1 MiB and not kept). */
const struct dg_buf *fn_h2_body(struct fn_h2_stream *st);

/* gRPC answers: one message (length-prefixed here) and trailers grpc-status 0; or an error,
 * trailers-only, with grpc-status `code` and the formatted grpc-message. */
void fn_h2_grpc_reply(struct fn_h2_stream *st, const void *msg, size_t len);
void fn_h2_grpc_status(struct fn_h2_stream *st, int code, const char *fmt, ...) DG_PRINTF(3, 4);

/* Close every HTTP/2 connection (GOAWAY, then close): on shutdown. */
void fn_h2_close_all(struct fn_h2 *f);

#endif
