/*
 * http.h: HTTP/1.1 on libuv with libhttp-parser: a server with routing and a
 * client with a keep-alive connection pool per upstream. Both can stream a
 * body through without buffering it whole, which the data plane's proxy path
 * needs; both also offer a buffered form for small API calls.
 *
 * Ownership: the server and pools are owned by the caller and closed with
 * their _close function (they free themselves once their libuv handles are
 * closed). A request object (struct dg_http_req, struct dg_http_creq) is owned
 * by the library; the caller holds it from the handler/request call until the
 * response ends (server) or on_done/cancel (client).
 */
#ifndef DIRIGENT_HTTP_H
#define DIRIGENT_HTTP_H

#include <stdarg.h>
#include <stdbool.h>

#include <uv.h>

#include "dirigent/common.h"

struct dg_http_header {
    struct dg_str name, value;
};

/* Limits of the server (and of response parsing in the client). Every one has a config key
 * in the daemons (see DG_HTTP_CONF_FIELDS in docs/api.md). */
struct dg_http_limits {
    size_t max_header_bytes;    /* request line + headers; over it: 431. Default 16 KiB */
    unsigned max_headers;       /* header count; over it: 431. Default 100 */
    uint64_t max_body_bytes;    /* buffered and streamed request bodies; over it: 413. 1 MiB */
    uint64_t header_timeout_ms; /* from the first byte of a request to its last header: 408. 10 s */
    uint64_t body_timeout_ms;   /* longest silence while reading a body: 408. 30 s */
    uint64_t idle_timeout_ms;   /* keep-alive connection without a request: closed. 60 s */
    /* A whole body must arrive within body_timeout_ms plus one second per body_min_rate bytes
     * received, counted while the server reads it (not while a streaming handler holds or
     * pauses it); later: 408. 0: within body_timeout_ms. Default 4 KiB/s. */
    uint64_t body_min_rate;
    /* Open connections of this server (listener), and of one client IP address on it; a
     * connection over either cap is answered 503 at once (written without reading) and
     * closed. 0: no cap (the default here; the daemons derive theirs from RLIMIT_NOFILE). */
    unsigned max_conns, max_conns_per_client;
    /* HTTP/2 (servers with dg_http_server_enable_h2c): streams open at once on one connection
     * (SETTINGS_MAX_CONCURRENT_STREAMS; a stream over it is refused with RST_STREAM
     * REFUSED_STREAM). Default 100. The header list is bounded by max_header_bytes and
     * max_headers, a stream's body by max_body_bytes, as over HTTP/1.1. */
    unsigned h2_max_streams;
};
void dg_http_limits_default(struct dg_http_limits *l);

/* ---- server ------------------------------------------------------------------------------ */

struct dg_http_server;
struct dg_http_req;

typedef void (*dg_http_handler)(struct dg_http_req *req, void *ud);

enum dg_http_route_flags {
    /* Call the handler as soon as the headers are in; the body (if any) is read with
     * dg_http_req_read_body. Without this flag the body is buffered (up to max_body_bytes)
     * and the handler runs when it is complete. */
    DG_HTTP_STREAM = 1u << 0,
    /* Who may call the route when the server has an auth hook (dg_http_server_set_auth): any
     * of the roles whose bit is set (lib/auth.h's DG_AUTH_* use the same bits). A route with
     * none of them is open (a credential presented there is still checked). Without a hook
     * every route is open: a daemon without authTokenFile, on loopback only. */
    DG_HTTP_AUTH_NODE = 1u << 4,     /* workers and data planes */
    DG_HTTP_AUTH_CP = 1u << 5,       /* the control plane calling nodes */
    DG_HTTP_AUTH_OPERATOR = 1u << 6, /* CLI, registration and user API */
    /* With role bits: anonymous callers are let in too, but a credential presented must be
     * valid and of one of the roles (an open registration API: a node credential still
     * cannot register functions). */
    DG_HTTP_AUTH_ANON = 1u << 7,
};
#define DG_HTTP_AUTH_ROLES (DG_HTTP_AUTH_NODE | DG_HTTP_AUTH_CP | DG_HTTP_AUTH_OPERATOR)
#define DG_HTTP_AUTH_MASK  (DG_HTTP_AUTH_ROLES | DG_HTTP_AUTH_ANON)

/* Create a server on `loop` (borrowed). `limits` is copied; NULL = defaults. `name` (copied)
 * appears in logs. */
struct dg_http_server *dg_http_server_new(uv_loop_t *loop, const struct dg_http_limits *limits,
                                          const char *name);

/* Add a route. `method` NULL matches any method. `pattern` is a path of segments where
 * ":name" captures one segment ("/v1/functions/:name") and a last segment "*" matches the
 * rest of the path. Routes are tried in the order added; the first match wins. A path that
 * matches a pattern with another method gets 405; no match: the fallback or 404. */
void dg_http_route(struct dg_http_server *s, const char *method, const char *pattern,
                   dg_http_handler fn, void *ud, unsigned flags);
/* Handler for requests no route matches (the data plane proxies everything else). */
void dg_http_set_fallback(struct dg_http_server *s, dg_http_handler fn, void *ud, unsigned flags);

/* Serve HTTP/2 cleartext on this server's port besides HTTP/1.1: with prior knowledge (a
 * connection starting with the client preface) and by upgrade (Upgrade: h2c). Each stream is
 * a struct dg_http_req going through the same routes, auth hook, limits and handlers as an
 * HTTP/1.1 request: ":authority" is its "host" header, dg_http_req_is_h2 tells them apart. */
void dg_http_server_enable_h2c(struct dg_http_server *s);
/* True when r is an HTTP/2 stream. */
bool dg_http_req_is_h2(const struct dg_http_req *r);

/* Authentication hook: called for every request that matched a route, as soon as its headers
 * are in (before any body is read), with the route's DG_HTTP_AUTH_* bits as `need` (0: open).
 * Returns 0 to go on (it records the caller with dg_http_req_set_identity), or the status to
 * refuse with (401, 403) after writing the reason into msg (size bytes); the server then
 * answers it as text with "WWW-Authenticate: Bearer" and closes a connection whose body was
 * not read. `ud` is borrowed. */
typedef int (*dg_http_auth_fn)(struct dg_http_req *r, unsigned need, void *ud, char *msg,
                               size_t size);
void dg_http_server_set_auth(struct dg_http_server *s, dg_http_auth_fn fn, void *ud);

/* Listen on host:port (port 0: ephemeral, read it with dg_http_server_port). */
int dg_http_server_listen(struct dg_http_server *s, const char *host, int port, struct dg_err *err);
int dg_http_server_port(const struct dg_http_server *s);

/* Stop accepting, close idle connections, let requests in flight finish (their responses
 * carry "Connection: close") for up to `grace_ms`, then close everything. `done` (may be
 * NULL) runs once all handles are closed, after the server was freed. Safe to call from a
 * handler. */
void dg_http_server_close(struct dg_http_server *s, uint64_t grace_ms, void (*done)(void *ud),
                          void *ud);

struct dg_http_server_stats {
    uint64_t accepted, requests, open_conns, active_reqs;
    uint64_t refused; /* connections over max_conns or max_conns_per_client */
};
void dg_http_server_stats(const struct dg_http_server *s, struct dg_http_server_stats *out);

/* Request accessors. Views stay valid until the response ends. */
const char *dg_http_req_method(const struct dg_http_req *r); /* "GET" */
struct dg_str dg_http_req_url(const struct dg_http_req *r);  /* path?query as received */
struct dg_str dg_http_req_path(const struct dg_http_req *r);
struct dg_str dg_http_req_query(const struct dg_http_req *r); /* without '?'; {NULL,0} if none */
struct dg_str dg_http_req_param(const struct dg_http_req *r, const char *name);  /* :capture */
struct dg_str dg_http_req_header(const struct dg_http_req *r, const char *name); /* any case */
const struct dg_http_header *dg_http_req_headers(const struct dg_http_req *r, size_t *n);
struct dg_str dg_http_req_body(const struct dg_http_req *r); /* buffered routes only */
/* Declared body length, -1 when chunked, 0 when there is no body. */
int64_t dg_http_req_content_length(const struct dg_http_req *r);
bool dg_http_req_keep_alive(const struct dg_http_req *r);
int dg_http_req_version_minor(const struct dg_http_req *r);
/* Numeric peer address ("127.0.0.1:51512") */
const char *dg_http_req_peer(const struct dg_http_req *r);
void dg_http_req_set_data(struct dg_http_req *r, void *data);
/* Who called, as the auth hook found it: the role bit (DG_HTTP_AUTH_*; 0 = anonymous, no
 * credential or no hook) and the name in the credential ("" when anonymous). `name` is copied
 * (at most 63 bytes). */
void dg_http_req_set_identity(struct dg_http_req *r, unsigned role, const char *name);
unsigned dg_http_req_identity(const struct dg_http_req *r, const char **name);
void *dg_http_req_data(const struct dg_http_req *r);

/* Streaming request bodies (DG_HTTP_STREAM routes). `on_data` gets borrowed bytes, valid only
 * during the call; `on_end` runs once the whole body was read (at once if there is none).
 * Over max_body_bytes the server answers 413 itself and on_abort follows from the loop.
 * The body timeout runs only while the server reads (not while held or paused). */
void dg_http_req_read_body(struct dg_http_req *r,
                           void (*on_data)(struct dg_http_req *, const char *, size_t, void *),
                           void (*on_end)(struct dg_http_req *, void *), void *ud);
/* Flow control: stop / restart reading the client's socket. */
void dg_http_req_pause(struct dg_http_req *r);
void dg_http_req_resume(struct dg_http_req *r);
/* Called if the connection dies before the response ended (client gone, timeout), from the
 * loop (never inside one of the handler's own calls); from then on responses to it are
 * no-ops. After it returns the request is freed: drop every pointer to it. Without on_abort the request is
 * kept ("orphaned") until the handler ends its response, which is then discarded: a handler
 * that waits for something that may never come (the rest of a body, an upstream) must set
 * on_abort. */
void dg_http_req_on_abort(struct dg_http_req *r, void (*fn)(struct dg_http_req *, void *),
                          void *ud);

/* Responses. Headers added with dg_http_resp_header are sent with the status line; the server
 * adds Content-Length or Transfer-Encoding, Connection and Date itself. */
void dg_http_resp_header(struct dg_http_req *r, const char *name, const char *value);
/* The same from views (a proxy passing an upstream's headers on): copied, no formatting. */
void dg_http_resp_header_str(struct dg_http_req *r, struct dg_str name, struct dg_str value);
/* Whole response in one call; `body` is copied. Ends the request. */
void dg_http_respond(struct dg_http_req *r, int status, const char *content_type, const void *body,
                     size_t len);
/* gRPC's trailers-only error: HTTP 200, content-type application/grpc, grpc-status `code` and
 * the formatted grpc-message percent-encoded (all but printable ASCII and '%'), no body: one
 * HEADERS frame ending the stream over HTTP/2. Headers already added are sent too. Ends the
 * request. */
void dg_http_respond_grpc(struct dg_http_req *r, int code, const char *fmt, ...) DG_PRINTF(3, 4);
/* text/plain response with a trailing newline. */
void dg_http_respond_text(struct dg_http_req *r, int status, const char *fmt, ...) DG_PRINTF(3, 4);
/* The text of such an answer into buf (size > 2): formatted, cut to fit, and newline-ended when
 * `newline` (dg_http_respond_text's); returns its length. */
size_t dg_http_text_vfmt(char *buf, size_t size, bool newline, const char *fmt, va_list ap)
    DG_PRINTF(4, 0);
/* Streaming: start with a known length (>= 0) or chunked (-1), write pieces (copied), end. */
void dg_http_resp_start(struct dg_http_req *r, int status, int64_t content_length);
void dg_http_resp_write(struct dg_http_req *r, const void *data, size_t len);
void dg_http_resp_end(struct dg_http_req *r);
/* Before dg_http_resp_start of a chunked response over HTTP/1.1: its head waits for the first
 * piece (or the end) and goes out in the same write (a batch answer whose items finish a loop
 * turn later: one write and one read fewer per batch). The client sees no head until then. */
void dg_http_resp_hold_head(struct dg_http_req *r);
/* A trailer field sent after the body (gRPC's grpc-status, grpc-message): added after
 * dg_http_resp_start and before dg_http_resp_end. Over HTTP/2 it goes in a trailing HEADERS
 * frame; over HTTP/1.1 in the last chunk of a chunked response (dropped when the length was
 * known). A response without body whose status-line headers carry grpc-status is sent by
 * dg_http_respond with an empty body as a single HEADERS frame with END_STREAM over HTTP/2
 * (gRPC's "trailers-only" answer). */
void dg_http_resp_trailer(struct dg_http_req *r, struct dg_str name, struct dg_str value);
/* End a started response as broken (an upstream died mid-body): the connection closes
 * without completing the body, so the client sees the response is cut. */
void dg_http_resp_abort(struct dg_http_req *r);
/* Bytes queued on the client socket and not yet written: pause the producer above a
 * threshold and resume it from `on_drain` (called once when the queue empties). */
size_t dg_http_resp_queued(const struct dg_http_req *r);
void dg_http_resp_on_drain(struct dg_http_req *r, void (*fn)(struct dg_http_req *, void *),
                           void *ud);
const char *dg_http_status_text(int status);

/* ---- client ------------------------------------------------------------------------------ */

struct dg_http_pool;
struct dg_http_creq;

struct dg_http_pool_opts {
    unsigned max_conns;          /* open connections at most (idle + busy); more requests wait
                                    in FIFO order. Default 64; 0 = unlimited */
    unsigned max_idle;           /* idle connections kept for reuse. Default 16 */
    uint64_t connect_timeout_ms; /* default 5 s */
    uint64_t request_timeout_ms; /* from send to the end of the response; 0 = none. 30 s */
    uint64_t idle_timeout_ms;    /* idle connections closed after. Default 60 s */
    size_t max_header_bytes;     /* of a response; default 64 KiB */
    /* Speak HTTP/2 cleartext with prior knowledge to the upstream: requests are streams
     * multiplexed on at most max_conns connections (each up to the peer's concurrent-stream
     * limit), same dg_http_creq API; trailers come through on_trailers. */
    bool h2c;
    const char *bearer; /* a credential (copied; NULL: none): every request carries
                                    "Authorization: Bearer <bearer>" unless it has its own */
};
void dg_http_pool_opts_default(struct dg_http_pool_opts *o);

/* A pool for one upstream host:port (numeric IPv4/IPv6 address; no DNS on the loop).
 * `opts` NULL = defaults. */
struct dg_http_pool *dg_http_pool_new(uv_loop_t *loop, const char *host, int port,
                                      const struct dg_http_pool_opts *opts, struct dg_err *err);
/* The same from "IP:PORT" ("[IPv6]:PORT" too). Errors: "address 'x': expected IP:PORT". */
struct dg_http_pool *dg_http_pool_new_addr(uv_loop_t *loop, const char *address,
                                           const struct dg_http_pool_opts *opts,
                                           struct dg_err *err);
/* Fail queued and running requests (on_done with DG_E_CLOSED), close every connection, free
 * the pool once handles are closed. */
void dg_http_pool_close(struct dg_http_pool *p);
/* Set or replace (NULL: drop) the pool's credential, as opts.bearer; for requests sent later. */
void dg_http_pool_set_bearer(struct dg_http_pool *p, const char *bearer);

struct dg_http_pool_stats {
    uint64_t connects;   /* connections opened so far */
    uint64_t reused;     /* requests sent on a connection that served before */
    unsigned idle, busy; /* now */
    unsigned queued;     /* requests waiting for a connection */
};
void dg_http_pool_stats(const struct dg_http_pool *p, struct dg_http_pool_stats *out);

struct dg_http_resp {
    int status;
    const struct dg_http_header *headers;
    size_t nheaders;
    struct dg_str body; /* only when no on_body callback was given */
};

struct dg_http_client_cbs {
    /* Status and headers arrived (optional). Views valid during the call. */
    void (*on_head)(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud);
    /* A piece of the response body (optional; without it the body is buffered into
     * resp->body for on_done). Borrowed during the call. */
    void (*on_body)(struct dg_http_creq *q, const char *data, size_t len, void *ud);
    /* The end: `resp` non-NULL on success, else `err` says why (connect refused, timeout,
     * upstream closed, bad response). The request is freed after it returns. */
    /* Trailer fields after the body (optional; HTTP/2 upstreams, and chunked HTTP/1.1). Views
     * valid during the call; called at most once, before on_done. */
    void (*on_trailers)(struct dg_http_creq *q, const struct dg_http_header *trailers, size_t n,
                        void *ud);
    void (*on_done)(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud);
};

/* Send a request with a buffered body (`body` copied; may be NULL with len 0). Headers are
 * copied; the client adds Host (unless given) and Content-Length (HTTP/1.1 keeps the
 * connection alive by default).
 * Returns the request handle, or NULL when the request already ended before this call
 * returned (on_done has run: a closing pool, a synchronous connect or write error). */
struct dg_http_creq *dg_http_request(struct dg_http_pool *p, const char *method, const char *path,
                                     const struct dg_http_header *hdrs, size_t nhdrs,
                                     const void *body, size_t len,
                                     const struct dg_http_client_cbs *cbs, void *ud);
/* Send a request whose body is streamed: `content_length` >= 0, or -1 for chunked. Write the
 * body with dg_http_creq_write and finish with dg_http_creq_end (also when length is 0). The
 * caller must not pass Content-Length or Transfer-Encoding headers. NULL as above. */
struct dg_http_creq *dg_http_request_stream(struct dg_http_pool *p, const char *method,
                                            const char *path, const struct dg_http_header *hdrs,
                                            size_t nhdrs, int64_t content_length,
                                            const struct dg_http_client_cbs *cbs, void *ud);
void dg_http_creq_write(struct dg_http_creq *q, const void *data, size_t len);
void dg_http_creq_end(struct dg_http_creq *q);
/* True once any byte of this request was written to a socket (a proxy may retry elsewhere
 * only when this is false). */
bool dg_http_creq_sent(const struct dg_http_creq *q);
/* True when the request went out on a reused keep-alive connection that closed before any
 * response byte: the upstream most likely closed it idle at the same moment (the keep-alive
 * race), so an idempotent request can be retried on a fresh connection. For on_done. */
bool dg_http_creq_stale(const struct dg_http_creq *q);
/* Flow control of the response body: stop / restart reading the upstream (a piece already
 * read may still be delivered after pause). */
void dg_http_creq_pause(struct dg_http_creq *q);
void dg_http_creq_resume(struct dg_http_creq *q);
/* Abandon the request: on_done is not called; its connection is closed, not reused. */
void dg_http_creq_cancel(struct dg_http_creq *q);

#endif
