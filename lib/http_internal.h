/*
 * http_internal.h: pieces shared by the HTTP server and client: writing with
 * uv_try_write first (no allocation when the socket takes everything, which is
 * the common case), the cached Date header, and header storage that records
 * offsets while parsing (the buffer may move) and turns them into views once
 * the headers are complete.
 */
#ifndef DIRIGENT_HTTP_INTERNAL_H
#define DIRIGENT_HTTP_INTERNAL_H

#include <http_parser.h>
#include <nghttp2/nghttp2.h>

#include "dirigent/strmap.h"

#include "dirigent/http.h"

/* Write `bufs` to `s`: first uv_try_write, then copy what is left into one allocation and
 * queue it with uv_write. `cb` (may be NULL) runs when a queued write completes with its
 * status; it is not called when everything was written at once (returns 1 then, 0 when
 * queued, negative on error). */
typedef void (*dg__write_cb)(void *ctx, int status);
int dg__http_write(uv_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, dg__write_cb cb,
                   void *ctx);

/* "Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n", formatted at most once per second. */
const char *dg__http_date_line(void);

/* Header storage: names and values appended as the parser hands out fragments. */
struct dg__hdr_span {
    uint32_t name_off, name_len, value_off, value_len;
};
struct dg__hdrs {
    struct dg_buf bytes;        /* url + header fragments, in order */
    struct dg__hdr_span *spans; /* one per header */
    unsigned n, cap;
    bool in_value; /* last fragment was a value */
    struct dg_http_header *views;
    unsigned views_cap;
};
void dg__hdrs_reset(struct dg__hdrs *h);
void dg__hdrs_free(struct dg__hdrs *h);
/* Append a fragment; returns false when the header count would exceed `max_headers`. */
bool dg__hdrs_field(struct dg__hdrs *h, const char *at, size_t len, unsigned max_headers);
void dg__hdrs_value(struct dg__hdrs *h, const char *at, size_t len);
/* Build h->views from the spans (call once the headers are complete). */
void dg__hdrs_finish(struct dg__hdrs *h);
struct dg_str dg__hdrs_get(const struct dg__hdrs *h, const char *name);

/* Strict framing (RFC 9112), checked on the raw bytes before http_parser sees them: the
 * packaged libhttp-parser is built without HTTP_PARSER_STRICT and accepts a bare LF or CR as a
 * line end, obs-fold (a header line starting with whitespace) and chunk data not followed by
 * CRLF. The scanner follows the message framing byte by byte: start line and header lines
 * (each ending in CRLF, none starting with SP or HTAB), then a body whose kind the caller
 * reads from the parser at the end of the headers (dg__frame_body), chunk size lines, chunk
 * data followed by CRLF, and the trailer section. */
enum dg__frame_kind { DG__BODY_NONE, DG__BODY_LENGTH, DG__BODY_CHUNKED, DG__BODY_EOF };
struct dg__frame {
    uint8_t st;
    bool trailer;    /* in the trailer section of a chunked body */
    unsigned digits; /* chunk size digits seen */
    uint64_t remain; /* body or chunk bytes still to skip */
    const char *err; /* what broke the framing; set once */
};
void dg__frame_init(struct dg__frame *f);
/* Scan `data`: returns how many bytes may be handed to the parser. Stops after the blank line
 * that ends a header section (dg__frame_at_body() is then true until dg__frame_body) and
 * before the first byte that breaks the framing (f->err says what). */
size_t dg__frame_scan(struct dg__frame *f, const char *data, size_t len);
bool dg__frame_at_body(const struct dg__frame *f);
void dg__frame_body(struct dg__frame *f, enum dg__frame_kind kind, uint64_t length);

/* ---- HTTP/2 client (http2_client.c) ---------------------------------------------------------
 * A pool made with opts.h2c keeps an h2 pool behind it and the public dg_http_* client calls
 * forward to these. Every request object starts with a dg__creq_tag, so the public calls tell
 * an HTTP/1.1 request (struct dg_http_creq, http_client.c) from a stream (http2_client.c). */
struct dg__creq_tag {
    bool h2;
};
struct dg__h2pool;
/* the stats struct under another name: http2_client.c names nothing of http_client.c's, so the
 * two files depend one way only (tests/check_includes.py reads names, not kinds) */
typedef struct dg_http_pool_stats dg__pool_stats;
struct dg__h2pool *dg__h2_pool_new(uv_loop_t *loop, const struct sockaddr_storage *addr,
                                   const char *host, int port,
                                   const struct dg_http_pool_opts *opts);
void dg__h2_pool_close(struct dg__h2pool *p);
void dg__h2_pool_set_bearer(struct dg__h2pool *p, const char *bearer);
void dg__h2_pool_stats(const struct dg__h2pool *p, dg__pool_stats *out);
/* streaming false: `body` (len bytes) is the whole body; true: content_length (-1: unknown)
 * and the body comes through dg__h2_creq_write/end. NULL when it already ended. */
struct dg_http_creq *dg__h2_request(struct dg__h2pool *p, const char *method, const char *path,
                                    const struct dg_http_header *hdrs, size_t nhdrs,
                                    const void *body, size_t len, bool streaming,
                                    int64_t content_length, const struct dg_http_client_cbs *cbs,
                                    void *ud);
void dg__h2_creq_write(struct dg_http_creq *q, const void *data, size_t len);
void dg__h2_creq_end(struct dg_http_creq *q);
bool dg__h2_creq_sent(const struct dg_http_creq *q);
bool dg__h2_creq_stale(const struct dg_http_creq *q);
void dg__h2_creq_pause(struct dg_http_creq *q);
void dg__h2_creq_resume(struct dg_http_creq *q);
void dg__h2_creq_cancel(struct dg_http_creq *q);
/* Tests: the pool's new h2c connections start at stream id `id` (odd), to reach the end of the
 * stream id space without 2^30 requests. */
void dg__h2_pool_test_first_stream_id(struct dg__h2pool *p, int32_t id);
void dg__http_pool_test_first_stream_id(struct dg_http_pool *p, int32_t id);

/* nghttp2's allocator for the library's h2 sessions (http_common.c): per-thread free lists of
 * small blocks (no locks; a block freed on another thread joins that thread's lists). */
nghttp2_mem *dg__h2_mem(void); /* nghttp2 copies it */

/* ---- server internals shared by http_server.c and http2_server.c ---- */

struct dg__h2c; /* an HTTP/2 connection (http2_server.c) */
struct dg__h2s; /* one of its streams */
struct dg__h2_ops;

#define READ_BUF_SIZE  (64 * 1024)
#define PENDING_MAX    (64 * 1024)
#define WRITE_HIGH     (256 * 1024) /* stop parsing pipelined requests above */
#define WRITE_LOW      (64 * 1024)  /* and go on below */
#define LINGER_MS      2000
#define MAX_ROUTE_SEGS 16
#define MAX_PARAMS     8

struct route {
    char *method; /* NULL = any */
    char **segs;  /* ":name" captures, "*" rest */
    size_t nsegs;
    dg_http_handler fn;
    void *ud;
    unsigned flags;
};

struct conn;

/* Open connections from one IP address (for max_conns_per_client). */
struct client {
    unsigned n;
    char ip[48];
};

struct dg_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    char *name;
    struct dg_http_limits limits;
    struct route *routes;
    size_t nroutes;
    struct route fallback;
    dg_http_auth_fn auth;
    void *auth_ud;
    bool has_fallback, listening, closing;
    const struct dg__h2_ops *h2; /* dg_http_server_enable_h2c: the HTTP/2 side */
    /* HTTP/2 connections with frames to write, flushed once per loop turn from h2_check (after
     * the turn's callbacks): one write per connection for all its streams' answers */
    uv_check_t h2_check;
    uv_idle_t h2_idle;
    struct dg__h2c *h2_flush_list;
    /* HTTP/1.1 connections whose chunked response pieces wait in their `out` until the loop
     * turn's callbacks are done (h1_check; h1_idle when queued from a timer): a batch's NDJSON
     * lines answered in one turn go out in one write (made on first use) */
    uv_check_t h1_check;
    uv_idle_t h1_idle;
    bool h1_on;
    struct conn *out_list;
    struct conn *conns;     /* doubly linked list of open connections */
    struct dg_strmap peers; /* IP address -> struct client, of the open connections */
    unsigned open_handles;
    uv_timer_t grace_timer;
    uint64_t grace_deadline;
    void (*done)(void *);
    void *done_ud;
    struct dg_http_server_stats stats;
    char read_buf[READ_BUF_SIZE];
    bool read_buf_busy;
};

/* C_H2: the connection speaks HTTP/2 (c->h2); its streams are the requests. */
enum conn_state { C_IDLE, C_HEAD, C_BODY, C_WAIT, C_LINGER, C_CLOSED, C_H2 };

struct dg_http_req {
    struct conn *conn; /* NULL once detached from its connection */
    struct dg__hdrs hdrs;
    struct dg_buf body;
    uint32_t url_len;
    const char *method;
    struct dg_str path, query;
    struct dg_str param_names[MAX_PARAMS], param_values[MAX_PARAMS];
    unsigned nparams;
    const struct route *route;
    int64_t content_length;
    int64_t resp_remaining; /* bytes still owed by a Content-Length response; -1: none */
    uint64_t body_read;
    uint64_t trailer_bytes;
    uint64_t body_since, body_spent; /* body read clock: since when it runs, ms spent before */
    bool body_clock_on, body_late;   /* body_late: the armed deadline is the whole body's */
    bool keep_alive, head_method, expect_continue, headers_done;
    bool msg_complete, handler_called, resp_started, resp_ended, chunked_resp, force_close;
    bool body_wanted, body_held, not_found, bad_method, user_paused;
    bool abort_pending, handler_done;
    int vminor;
    struct dg_buf resp_hdrs;
    struct dg_buf held; /* the head of a response whose body is to follow: sent with it */
    bool head_held;
    bool hold_chunked_head; /* dg_http_resp_hold_head: a chunked head waits for a piece too */
    void (*on_data)(struct dg_http_req *, const char *, size_t, void *);
    void (*on_end)(struct dg_http_req *, void *);
    void *body_ud;
    void (*on_abort)(struct dg_http_req *, void *);
    void *abort_ud;
    void (*on_drain)(struct dg_http_req *, void *);
    void *drain_ud;
    void *data;
    struct dg_buf trailers; /* dg_http_resp_trailer: "Name: value\r\n" lines */
    /* HTTP/2: the stream (NULL once detached from it), the method's text */
    bool is_h2, h2_counted;
    const struct dg__h2_ops *h2ops;
    struct dg__h2s *h2s;
    char h2_method[24];
    unsigned id_role;
    char id_name[64];
    char peer[64];
};

struct conn {
    struct dg_http_server *srv;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    http_parser parser;
    enum conn_state state;
    struct dg_http_req *req;     /* current request */
    struct dg_http_req *spare;   /* kept for reuse */
    struct dg_http_req *aborted; /* detached, its on_abort still to run */
    struct dg_buf pending;       /* unparsed bytes from pending_off to pending.len */
    size_t pending_off;
    unsigned handles;   /* open libuv handles: tcp, timer */
    uint64_t deadline;  /* loop ms when the current state times out; 0: none (lazy timer) */
    uint64_t timer_due; /* when `timer` is armed to fire; may be before `deadline` */
    unsigned writes;    /* queued writes and shutdown not yet completed */
    bool reading, in_process, shutting_down, dead, write_blocked;
    bool got_bytes;         /* any byte read: the h2c preface is looked for in the first */
    bool skip_complete;     /* answered before the parser saw the end of a body-less request */
    bool upgrading;         /* an HTTP/1.1 request asked for h2c: switch after its head */
    struct dg__h2c *h2;     /* the HTTP/2 session once the connection speaks it */
    struct dg__frame frame; /* strict framing of the bytes given to the parser */
    bool body_known;        /* on_headers_complete saw the body's kind (for frame) */
    enum dg__frame_kind body_kind;
    uint64_t body_len;
    char ip[48];           /* the peer's address */
    struct client *client; /* its count of open connections */
    char peer[64];
    struct dg_buf out; /* chunked pieces not written yet (srv->out_list); written before
                          anything else on the connection */
    struct conn *out_next;
    bool out_queued;
};

/* http_server.c, for http2_server.c */
void dg__conn_write(struct conn *c, const uv_buf_t *bufs, unsigned n);
void dg__conn_close(struct conn *c);
void dg__conn_kill(struct conn *c);
void dg__conn_shutdown(struct conn *c);
void dg__conn_update_reading(struct conn *c);
void dg__conn_fail(struct conn *c, int status, const char *msg);
void dg__route_request(struct dg_http_server *s, struct dg_http_req *r);
void dg__req_free(struct dg_http_req *r);
/* r zeroed for another request, its buffers emptied and kept (large ones released). */
/* The body clock of r runs again from `now` (loop ms): how long to wait for more of its body
 * (http.bodyTimeout, or less when the whole-body budget of http.bodyMinRate is nearly spent:
 * r->body_late). HTTP/1.1 and HTTP/2 alike. */
/* "grpc-status: CODE\r\ngrpc-message: MSG\r\n" into b, MSG percent-encoded as gRPC over
 * HTTP/2 asks (all but printable ASCII and '%'): dg_http_respond_grpc and the h2 server's own
 * answers to a gRPC stream. */
void dg__grpc_lines(struct dg_buf *b, int code, const char *msg);
uint64_t dg__body_clock_start(const struct dg_http_limits *l, struct dg_http_req *r, uint64_t now);
void dg__req_reset(struct dg_http_req *r);
/* Start of a connection's timer: on_timer hands C_H2 connections to dg__h2_on_timer. */
void dg__conn_timer_start(struct conn *c, uint64_t ms);

/* The HTTP/2 side (http2_server.c), reached through this table (set on the server by
 * dg_http_server_enable_h2c, on each stream's request) so that http_server.c does not depend
 * on http2_server.c, which uses the dg__conn_* calls above. */
struct dg__h2_ops {
    bool (*is_preface)(const char *data, size_t len);
    /* Switch a connection to HTTP/2 with prior knowledge (the preface is in the bytes to come). */
    void (*start)(struct conn *c);
    /* Switch after an HTTP/1.1 request with Upgrade: h2c (c->req, no body): answers 101, serves
     * the request as stream 1 and feeds `rest` (the bytes after the request) to the session. */
    void (*upgrade)(struct conn *c, const char *rest, size_t len);
    void (*recv)(struct conn *c, const char *data, size_t len);
    void (*on_timer)(struct conn *c);
    void (*on_write_done)(struct conn *c);
    /* The connection closes or shuts down: detach every stream's request (on_abort later). */
    void (*detach)(struct conn *c);
    /* From conn_free_if_closed: run pending on_abort calls, free the session. */
    void (*free)(struct conn *c);
    /* Server closing: GOAWAY once; true when nothing is in flight any more. */
    bool (*closing)(struct conn *c);
    /* The public calls on a stream's request. */
    void (*read_body)(struct dg_http_req *r);
    void (*pause)(struct dg_http_req *r, bool pause);
    void (*respond)(struct dg_http_req *r, int status, const char *content_type, const void *body,
                    size_t len);
    void (*resp_start)(struct dg_http_req *r, int status, int64_t content_length);
    void (*resp_write)(struct dg_http_req *r, const void *data, size_t len);
    void (*resp_end)(struct dg_http_req *r);
    void (*resp_abort)(struct dg_http_req *r);
    size_t (*resp_queued)(const struct dg_http_req *r);
};

#endif
