/*
 * http_server.c: the HTTP/1.1 server every daemon uses, on libuv and
 * libhttp-parser.
 *
 * A connection handles one request at a time. The parser is paused when a
 * request is complete (and, for streaming routes, between the headers and the
 * moment the handler asks for the body), so pipelined requests are answered in
 * order without queueing responses. Reads go into one buffer shared by all
 * connections of the server; bytes that cannot be parsed yet (the next
 * pipelined request, a body nobody asked for yet) are kept in the
 * connection's `pending` buffer, and reading stops while that buffer is full.
 * The next pipelined request is not parsed either while more than 256 KiB of
 * responses wait to be written (a client that sends but does not read).
 *
 * A request (struct dg_http_req) owns its header and body storage, so it can
 * outlive its connection. When the connection dies while a handler holds the
 * request, the request is detached at once (every later response call is a
 * no-op) and the handler is told through on_abort from the loop, when the
 * connection's handles are closed: never from inside one of the handler's own
 * calls. Each connection keeps its last request for reuse, so a keep-alive
 * connection does not allocate per request.
 *
 * Write errors do not close the connection inside the call that wrote: the
 * connection is marked dead and closed from its timer a moment later.
 *
 * Limits (struct dg_http_limits) and their answers: header bytes or count 431,
 * body 413, header or body read timeout 408, malformed input 400, CONNECT 501.
 * After an error answer the connection is shut down and drained for a short
 * while ("lingering close") so the client reads the answer instead of a reset.
 */
#include "http_internal.h"
#include "dirigent/log.h"
#include "dirigent/strmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The server, request and connection structures are in http_internal.h (http2_server.c
 * shares them). */

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void conn_update_reading(struct conn *c);
static void arm_idle(struct conn *c);
static void conn_fail(struct conn *c, int status, const char *msg);
static void req_finish(struct dg_http_req *r);
static void conn_write(struct conn *c, const uv_buf_t *bufs, unsigned n);
static void out_unqueue(struct conn *c);
static const http_parser_settings parser_settings;

/* ---- server object and routes ----------------------------------------------------------- */

struct dg_http_server *dg_http_server_new(uv_loop_t *loop, const struct dg_http_limits *limits,
                                          const char *name)
{
    struct dg_http_server *s = dg_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->name = dg_xstrdup(name ? name : "http");
    if (limits)
        s->limits = *limits;
    else
        dg_http_limits_default(&s->limits);
    return s;
}

static void route_init(struct route *rt, const char *method, const char *pattern,
                       dg_http_handler fn, void *ud, unsigned flags)
{
    memset(rt, 0, sizeof(*rt));
    rt->method = method ? dg_xstrdup(method) : NULL;
    rt->fn = fn;
    rt->ud = ud;
    rt->flags = flags;
    if (!pattern)
        return;
    rt->segs = dg_xcalloc(MAX_ROUTE_SEGS, sizeof(char *));
    const char *p = pattern;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (rt->nsegs == MAX_ROUTE_SEGS) {
            fprintf(stderr, "http: route pattern '%s' has too many segments\n", pattern);
            abort();
        }
        rt->segs[rt->nsegs++] = dg_xstrndup(p, n);
        p += n;
    }
}

void dg_http_route(struct dg_http_server *s, const char *method, const char *pattern,
                   dg_http_handler fn, void *ud, unsigned flags)
{
    s->routes = dg_xrealloc(s->routes, (s->nroutes + 1) * sizeof(*s->routes));
    route_init(&s->routes[s->nroutes++], method, pattern, fn, ud, flags);
}

void dg_http_set_fallback(struct dg_http_server *s, dg_http_handler fn, void *ud, unsigned flags)
{
    route_init(&s->fallback, NULL, NULL, fn, ud, flags);
    s->has_fallback = true;
}

void dg_http_server_set_auth(struct dg_http_server *s, dg_http_auth_fn fn, void *ud)
{
    s->auth = fn;
    s->auth_ud = ud;
}

static void route_free(struct route *rt)
{
    free(rt->method);
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
}

/* Match `path` against a route; fills the request's captures on success. */
static bool route_match(const struct route *rt, struct dg_str path, struct dg_http_req *r)
{
    const char *p = path.ptr, *end = path.ptr + path.len;
    unsigned np = 0;
    for (size_t i = 0; i < rt->nsegs; i++) {
        while (p < end && *p == '/')
            p++;
        const char *seg = rt->segs[i];
        if (strcmp(seg, "*") == 0 && i == rt->nsegs - 1) {
            r->nparams = np;
            return true;
        }
        if (p == end)
            return false;
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (!e)
            e = end;
        size_t n = (size_t)(e - p);
        if (seg[0] == ':') {
            if (np < MAX_PARAMS) {
                r->param_names[np] = dg_str_c(seg + 1);
                r->param_values[np] = (struct dg_str){p, n};
                np++;
            }
        } else if (strlen(seg) != n || memcmp(seg, p, n) != 0) {
            return false;
        }
        p = e;
    }
    while (p < end && *p == '/')
        p++;
    if (p != end)
        return false;
    r->nparams = np;
    return true;
}

static void route_request(struct dg_http_server *s, struct dg_http_req *r)
{
    bool path_matched = false;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct route *rt = &s->routes[i];
        if (!route_match(rt, r->path, r))
            continue;
        if (rt->method && strcmp(rt->method, r->method) != 0 &&
            !(r->head_method && strcmp(rt->method, "GET") == 0)) {
            path_matched = true;
            continue;
        }
        r->route = rt;
        return;
    }
    r->nparams = 0;
    if (path_matched)
        r->bad_method = true;
    else if (s->has_fallback)
        r->route = &s->fallback;
    else
        r->not_found = true;
}

/* ---- listening and accepting ------------------------------------------------------------ */

/* ---- reading ---------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h);

static size_t pending_len(const struct conn *c)
{
    return c->pending.len - c->pending_off;
}

static void pending_consume(struct conn *c, size_t n)
{
    c->pending_off += n;
    if (c->pending_off >= c->pending.len)
        c->pending_off = c->pending.len = 0;
}

/* Make room at the end of `pending`, moving the unparsed bytes to the front if that helps. */
static void pending_reserve(struct conn *c, size_t extra)
{
    if (c->pending_off > 0 && c->pending.cap - c->pending.len < extra + 1) {
        memmove(c->pending.data, c->pending.data + c->pending_off, pending_len(c));
        c->pending.len -= c->pending_off;
        c->pending_off = 0;
    }
    dg_buf_reserve(&c->pending, extra);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;
    if (pending_len(c) == 0 && !c->srv->read_buf_busy) {
        c->srv->read_buf_busy = true;
        *buf = uv_buf_init(c->srv->read_buf, READ_BUF_SIZE);
        return;
    }
    pending_reserve(c, 16 * 1024);
    *buf = uv_buf_init(c->pending.data + c->pending.len,
                       (unsigned)(c->pending.cap - c->pending.len - 1));
}

/* The parser may take more bytes of this connection. */
static bool conn_can_parse(const struct conn *c)
{
    return c->state != C_CLOSED && c->state != C_LINGER && !c->shutting_down && !c->dead &&
           HTTP_PARSER_ERRNO(&c->parser) == HPE_OK;
}

static bool conn_going(const struct conn *c)
{
    return c->state == C_CLOSED || c->state == C_LINGER || c->shutting_down || c->dead;
}

/* Feed bytes to the parser; returns how many it took. The framing scanner (c->frame) runs
 * ahead of the parser: the parser gets the bytes up to the end of a header section (so the
 * scanner learns the body's kind from on_headers_complete before it goes on) or up to the
 * first byte that breaks the framing, which is then answered with 400. */
static size_t conn_parse(struct conn *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        if (dg__frame_at_body(&c->frame)) {
            if (!c->body_known) {
                conn_fail(c, 400, "malformed request");
                return len;
            }
            dg__frame_body(&c->frame, c->body_kind, c->body_len);
            c->body_known = false;
        }
        struct dg__frame f = c->frame;
        size_t lim = dg__frame_scan(&f, data + done, len - done);
        size_t n = 0;
        if (lim > 0)
            n = http_parser_execute(&c->parser, &parser_settings, data + done, lim);
        if (c->upgrading) { /* the rest of the bytes are HTTP/2 */
            c->srv->h2->upgrade(c, data + done + n, len - done - n);
            return len;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            if (conn_going(c))
                return len; /* a callback already answered (431/413) or the connection is going */
            if (e == HPE_HEADER_OVERFLOW)
                conn_fail(c, 431, "request header fields too large");
            else
                conn_fail(c, 400, http_errno_description(e));
            return len;
        }
        if (n == lim)
            c->frame = f;
        else
            dg__frame_scan(&c->frame, data + done, n); /* the part the parser took */
        done += n;
        if (conn_going(c))
            return len;
        if (n == lim && f.err) {
            conn_fail(c, 400, f.err);
            return len;
        }
        if (e == HPE_PAUSED || n < lim || (lim == 0 && !dg__frame_at_body(&c->frame)))
            break;
    }
    if (done == len && dg__frame_at_body(&c->frame) && c->body_known) {
        dg__frame_body(&c->frame, c->body_kind, c->body_len);
        c->body_known = false;
    }
    return done;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    struct dg_http_server *s = c->srv;
    bool shared = buf->base == s->read_buf;
    if (shared)
        s->read_buf_busy = false;
    if (nread < 0) {
        /* EOF or error: the client is gone (a half-close counts as gone, see docs). */
        conn_close(c);
        return;
    }
    if (c->state == C_LINGER || c->state == C_CLOSED || nread == 0)
        return; /* lingering: discard */
    if (c->h2) {
        s->h2->recv(c, shared ? buf->base : c->pending.data + c->pending.len, (size_t)nread);
        return;
    }
    if (!c->got_bytes && s->h2 &&
        s->h2->is_preface(shared ? buf->base : c->pending.data + c->pending.len, (size_t)nread)) {
        c->got_bytes = true;
        s->h2->start(c);
        s->h2->recv(c, shared ? buf->base : c->pending.data + c->pending.len, (size_t)nread);
        return;
    }
    c->got_bytes = true;
    if (!shared) {
        c->pending.len += (size_t)nread;
        c->pending.data[c->pending.len] = '\0';
        conn_process(c);
        return;
    }
    c->in_process = true;
    size_t used = 0;
    while (used < (size_t)nread && conn_can_parse(c)) {
        size_t n = conn_parse(c, buf->base + used, (size_t)nread - used);
        used += n;
        if (n == 0)
            break;
    }
    c->in_process = false;
    if (c->state == C_CLOSED || c->state == C_LINGER || c->shutting_down)
        return;
    if (used < (size_t)nread) {
        pending_reserve(c, (size_t)nread - used);
        dg_buf_append(&c->pending, buf->base + used, (size_t)nread - used);
    }
    /* A response may have ended during the parse: continue with what is pending. */
    conn_process(c);
}

/* Why a new connection from `ip` is over a cap, or NULL. */
static const char *conn_over_cap(const struct dg_http_server *s, const char *ip)
{
    if (s->limits.max_conns && s->stats.open_conns >= s->limits.max_conns)
        return "too many connections to this server (http.maxConns)";
    const struct client *cl = dg_strmap_get(&s->peers, dg_str_c(ip));
    if (s->limits.max_conns_per_client && cl && cl->n >= s->limits.max_conns_per_client)
        return "too many connections from this client (http.maxConnsPerClient)";
    return NULL;
}

/* Answer 503 without reading (one try, nothing queued) and close. */
static void refuse_conn(struct conn *c, const char *why)
{
    struct dg_http_server *s = c->srv;
    char msg[512];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s\n",
                     strlen(why) + 1, why);
    uv_buf_t b = uv_buf_init(msg, (unsigned)DG_MIN((size_t)n, sizeof(msg) - 1));
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    s->stats.refused++;
    if (s->stats.refused == 1 || s->stats.refused % 1000 == 0)
        dg_log(DG_LOG_WARN, s->name, "%s: %s (%llu refused so far)", c->peer, why,
               (unsigned long long)s->stats.refused);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct dg_http_server *s = ls->data;
    if (status < 0) {
        dg_log(DG_LOG_WARN, s->name, "accept: %s", uv_strerror(status));
        return;
    }
    struct conn *c = dg_xcalloc(1, sizeof(*c));
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    s->open_handles++;
    c->state = C_CLOSED; /* until accepted */
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    s->open_handles++;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char host[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    snprintf(c->ip, sizeof(c->ip), "%s", host);
    const char *over = conn_over_cap(s, c->ip);
    if (over) {
        refuse_conn(c, over);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    dg__frame_init(&c->frame);
    c->state = C_IDLE;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->stats.accepted++;
    s->stats.open_conns++;
    struct client *cl = dg_strmap_get(&s->peers, dg_str_c(c->ip));
    if (!cl) {
        cl = dg_xcalloc(1, sizeof(*cl));
        snprintf(cl->ip, sizeof(cl->ip), "%s", c->ip);
        dg_strmap_put(&s->peers, dg_str_c(cl->ip), cl);
    }
    cl->n++;
    c->client = cl;
    conn_update_reading(c);
    arm_idle(c);
}

static void listener_closed(uv_handle_t *h);

int dg_http_server_listen(struct dg_http_server *s, const char *host, int port, struct dg_err *err)
{
    struct sockaddr_storage ss;
    int rc;
    if (s->listening || s->closing)
        return dg_err_set(err, DG_E_INVAL, "%s: already listening or closing", s->name);
    if (strchr(host, ':'))
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        return dg_err_set(err, rc, "%s: listen address '%s': expected a numeric IP address",
                          s->name, host);
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->open_handles++;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)&s->listener, listener_closed);
        return dg_err_set(err, rc, "%s: listen on %s:%d: %s", s->name, host, port, uv_strerror(rc));
    }
    s->listening = true;
    return 0;
}

int dg_http_server_port(const struct dg_http_server *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (!s->listening || uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void dg_http_server_stats(const struct dg_http_server *s, struct dg_http_server_stats *out)
{
    *out = s->stats;
}

/* ---- connection lifecycle --------------------------------------------------------------- */

static void server_maybe_done(struct dg_http_server *s)
{
    if (!s->closing || s->open_handles > 0)
        return;
    void (*done)(void *) = s->done;
    void *ud = s->done_ud;
    for (size_t i = 0; i < s->nroutes; i++)
        route_free(&s->routes[i]);
    free(s->routes);
    route_free(&s->fallback);
    dg_strmap_free(&s->peers); /* empty: every connection is closed */
    free(s->name);
    free(s);
    if (done)
        done(ud);
}

static void req_free(struct dg_http_req *r)
{
    dg__hdrs_free(&r->hdrs);
    dg_buf_free(&r->body);
    dg_buf_free(&r->resp_hdrs);
    dg_buf_free(&r->held);
    dg_buf_free(&r->trailers);
    free(r);
}

/* Free the connection once its handles are closed and its writes completed; tell the
 * handler of a request that was detached from it (from the loop, never inside a call of
 * the handler's). */
static void conn_free_if_closed(struct conn *c)
{
    if (c->handles > 0 || c->writes > 0)
        return;
    struct dg_http_req *r = c->aborted;
    if (r) {
        c->aborted = NULL;
        if (r->handler_done) {
            req_free(r);
        } else if (r->on_abort) {
            r->on_abort(r, r->abort_ud); /* abort_pending still set: responses are no-ops */
            req_free(r);
        } else {
            r->abort_pending = false; /* orphaned: freed when the handler ends its response */
        }
    }
    if (c->h2)
        c->srv->h2->free(c);
    if (c->spare)
        req_free(c->spare);
    dg_buf_free(&c->pending);
    dg_buf_free(&c->out);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct dg_http_server *s = c->srv;
    c->handles--;
    s->open_handles--;
    conn_free_if_closed(c);
    server_maybe_done(s);
}

/* Take the current request off a connection that will not answer it. */
static void req_detach(struct conn *c)
{
    struct dg_http_req *r = c->req;
    if (!r)
        return;
    c->req = NULL;
    c->srv->stats.active_reqs--;
    if (!r->handler_called) {
        req_free(r);
        return;
    }
    r->conn = NULL;
    r->resp_started = true; /* whatever the handler does now goes nowhere */
    r->abort_pending = true;
    c->aborted = r;
}

static void conn_close(struct conn *c)
{
    if (c->state == C_CLOSED)
        return;
    c->state = C_CLOSED;
    struct dg_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->stats.open_conns--;
    if (c->client && --c->client->n == 0) {
        dg_strmap_del(&s->peers, dg_str_c(c->client->ip));
        free(c->client);
    }
    c->client = NULL;
    req_detach(c);
    if (c->h2)
        c->srv->h2->detach(c);
    out_unqueue(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->dead) {
        conn_close(c);
        return;
    }
    if (c->h2 && c->state == C_H2) {
        c->srv->h2->on_timer(c);
        return;
    }
    if (c->deadline == 0)
        return; /* disarmed lazily */
    uint64_t now = uv_now(c->srv->loop);
    if (now < c->deadline) { /* the deadline moved later since the timer was armed */
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        return;
    }
    c->deadline = 0;
    switch (c->state) {
    case C_IDLE:
        conn_close(c);
        break; /* idle, or a client that stopped reading */
    case C_HEAD:
        if (c->req && c->req->hdrs.bytes.len == 0 && c->req->url_len == 0)
            conn_close(c); /* nothing received: an idle keep-alive connection */
        else
            conn_fail(c, 408, "request headers not received in time");
        break;
    case C_BODY:
        if (c->req && c->req->body_late)
            conn_fail(c, 408,
                      "request body too slow: not complete within http.bodyTimeout plus "
                      "1 s per http.bodyMinRate bytes");
        else
            conn_fail(c, 408, "request body not received in time");
        break;
    case C_LINGER:
        conn_close(c);
        break;
    default:
        break;
    }
}

/* Lazy timers: a state change stores its deadline; the libuv timer (a heap operation) is
 * restarted only when the new deadline is earlier than the one it is armed for, and a
 * timer that fires early re-arms itself for the rest. */
static void arm_timer(struct conn *c, uint64_t ms)
{
    if (c->dead || c->state == C_CLOSED)
        return;
    if (!ms) {
        c->deadline = 0;
        return;
    }
    c->deadline = uv_now(c->srv->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_due > c->deadline) {
        c->timer_due = c->deadline;
        uv_timer_start(&c->timer, on_timer, ms, 0);
    }
}

static void arm_idle(struct conn *c)
{
    arm_timer(c, c->srv->limits.idle_timeout_ms);
}

/* Arm the body timer while the server is reading a body (not while it is held or paused):
 * the earlier of body_timeout_ms of silence and the whole body's deadline, body_timeout_ms
 * plus one second per body_min_rate bytes received, on a clock that runs only while the server
 * reads the body (so a trickle that restarts the silence timer still ends, and a body held
 * while a handler waits, e.g. for a cold start, is not charged for the wait). */
static void arm_body_timer(struct conn *c)
{
    struct dg_http_req *r = c->req;
    if (c->state != C_BODY)
        return;
    const struct dg_http_limits *l = &c->srv->limits;
    uint64_t now = uv_now(c->srv->loop);
    if (r && r->body_clock_on) {
        r->body_spent += now - r->body_since;
        r->body_clock_on = false;
    }
    if (!r || r->body_held || r->user_paused || !l->body_timeout_ms) {
        arm_timer(c, 0);
        return;
    }
    arm_timer(c, dg__body_clock_start(l, r, now));
}

uint64_t dg__body_clock_start(const struct dg_http_limits *l, struct dg_http_req *r, uint64_t now)
{
    r->body_since = now;
    r->body_clock_on = true;
    uint64_t budget = l->body_timeout_ms;
    if (l->body_min_rate) {
        uint64_t extra = r->body_read / l->body_min_rate * 1000 +
                         r->body_read % l->body_min_rate * 1000 / l->body_min_rate;
        budget = extra > UINT64_MAX / 2 ? UINT64_MAX / 2 : budget + extra;
    }
    uint64_t left = budget > r->body_spent ? budget - r->body_spent : 1;
    r->body_late = left < l->body_timeout_ms;
    return r->body_late ? left : l->body_timeout_ms;
}

static void conn_update_reading(struct conn *c)
{
    bool want =
        c->state == C_LINGER || (c->state != C_CLOSED && !c->dead && !c->shutting_down &&
                                 pending_len(c) < PENDING_MAX && !(c->req && c->req->user_paused));
    if (c->h2 && want && c->state == C_H2) /* a client that does not read: stop reading too */
        want = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= WRITE_HIGH;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Mark the connection dead after a write error; it is closed from its timer, outside the
 * caller's stack. */
static void conn_kill(struct conn *c)
{
    if (c->dead || c->state == C_CLOSED)
        return;
    c->dead = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct conn *c = sr->data;
    c->writes--;
    if (c->state == C_CLOSED) {
        conn_free_if_closed(c);
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Lingering close: drain what the client still sends for a while, then close. */
    c->state = C_LINGER;
    c->pending.len = c->pending_off = 0;
    arm_timer(c, LINGER_MS);
    conn_update_reading(c);
}

/* Answer nothing more: close once the queued writes are out. */
static void conn_shutdown(struct conn *c)
{
    if (c->state == C_CLOSED || c->state == C_LINGER || c->shutting_down)
        return;
    req_detach(c);
    if (c->h2)
        c->srv->h2->detach(c);
    if (c->dead)
        return;     /* closing from the timer anyway */
    if (c->out.len) /* what the response wrote goes before the shutdown */
        conn_write(c, NULL, 0);
    c->state = C_WAIT;
    c->shutting_down = true;
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
        http_parser_pause(&c->parser, 1); /* nothing more is parsed */
    conn_update_reading(c);
    uv_timer_stop(&c->timer);
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) == 0)
        c->writes++;
    else
        conn_kill(c);
}

static void on_write_done(void *ctx, int status)
{
    struct conn *c = ctx;
    c->writes--;
    if (c->state == C_CLOSED) {
        conn_free_if_closed(c);
        return;
    }
    if (status < 0) {
        conn_close(c); /* a loop callback: safe to close here */
        return;
    }
    if (c->h2 && c->state == C_H2) {
        c->srv->h2->on_write_done(c);
        return;
    }
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (c->state == C_IDLE && !c->shutting_down)
        arm_idle(c); /* the client reads: restart the idle clock */
    struct dg_http_req *r = c->req;
    if (r && r->on_drain && queued == 0) {
        void (*fn)(struct dg_http_req *, void *) = r->on_drain;
        r->on_drain = NULL;
        fn(r, r->drain_ud);
    }
    if (c->write_blocked && queued <= WRITE_LOW && c->state != C_CLOSED) {
        c->write_blocked = false;
        conn_process(c);
    }
}

static void out_unqueue(struct conn *c)
{
    if (!c->out_queued)
        return;
    c->out_queued = false;
    for (struct conn **p = &c->srv->out_list; *p; p = &(*p)->out_next)
        if (*p == c) {
            *p = c->out_next;
            break;
        }
    c->out_next = NULL;
}

/* Write bufs, after what waits in c->out (in the same writev). */
static void conn_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    uv_buf_t all[8]; /* every caller writes at most 4 pieces */
    unsigned k = 0;
    if (n >= DG_ARRAY_LEN(all))
        abort();
    if (c->out.len)
        all[k++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
    out_unqueue(c);
    for (unsigned i = 0; i < n; i++)
        all[k++] = bufs[i];
    if (c->state == C_CLOSED || c->state == C_LINGER || c->dead || c->shutting_down) {
        dg_buf_reset(&c->out);
        return;
    }
    int rc = k ? dg__http_write((uv_stream_t *)&c->tcp, all, k, on_write_done, c) : 1;
    dg_buf_reset(&c->out); /* written or copied */
    if (rc == 0)
        c->writes++;
    else if (rc < 0)
        conn_kill(c);
}

static void h1_check_cb(uv_check_t *t)
{
    struct dg_http_server *s = t->data;
    while (s->out_list)
        conn_write(s->out_list, NULL, 0); /* writes its `out` and takes it off the list */
    uv_check_stop(&s->h1_check);
    uv_idle_stop(&s->h1_idle);
}

static void h1_idle_cb(uv_idle_t *t)
{
    (void)t; /* only there so the loop's poll does not block while a flush is due */
}

/* Add a chunked piece to c->out, written at the end of the loop turn; false if it cannot wait
 * (the server is closing, or much is waiting already): write it now. */
static bool out_cork(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct dg_http_server *s = c->srv;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    if (s->closing || c->out.len + len > 16384 || c->state == C_CLOSED || c->dead ||
        c->shutting_down)
        return false;
    if (!s->h1_on) {
        s->h1_on = true;
        uv_check_init(s->loop, &s->h1_check);
        s->h1_check.data = s;
        uv_idle_init(s->loop, &s->h1_idle);
        s->h1_idle.data = s;
        s->open_handles += 2; /* closed with the grace timer (dg_http_server_close) */
    }
    for (unsigned i = 0; i < n; i++)
        dg_buf_append(&c->out, bufs[i].base, bufs[i].len);
    if (!c->out_queued) {
        c->out_queued = true;
        c->out_next = s->out_list;
        s->out_list = c;
    }
    if (!uv_is_active((uv_handle_t *)&s->h1_check)) {
        uv_check_start(&s->h1_check, h1_check_cb);
        uv_idle_start(&s->h1_idle, h1_idle_cb); /* queued from a timer: before the poll */
    }
    return true;
}

/* Answer an error ourselves (limits, bad input) and close. */
static void conn_fail(struct conn *c, int status, const char *msg)
{
    if (c->state == C_CLOSED || c->state == C_LINGER || c->shutting_down || c->dead)
        return;
    struct dg_http_req *r = c->req;
    if (!(r && r->resp_started)) {
        char head[512];
        size_t mlen = strlen(msg) + 1;
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n%s\r\n%s\n",
                         status, dg_http_status_text(status), mlen, dg__http_date_line(), msg);
        uv_buf_t b = uv_buf_init(head, (unsigned)DG_MIN((size_t)n, sizeof(head) - 1));
        conn_write(c, &b, 1);
    }
    dg_log(DG_LOG_DEBUG, c->srv->name, "%s: %d %s", c->peer, status, msg);
    conn_shutdown(c);
}

/* ---- parser callbacks ------------------------------------------------------------------- */

static struct dg_http_req *req_new(struct conn *c)
{
    struct dg_http_req *r = c->spare;
    c->spare = NULL;
    if (!r) {
        r = dg_xcalloc(1, sizeof(*r));
    } else {
        struct dg__hdrs h = r->hdrs;
        struct dg_buf body = r->body, rh = r->resp_hdrs, held = r->held, tr = r->trailers;
        memset(r, 0, sizeof(*r));
        r->hdrs = h;
        r->body = body;
        r->resp_hdrs = rh;
        r->held = held;
        r->trailers = tr;
        dg_buf_reset(&r->trailers);
        dg_buf_reset(&r->held);
        dg__hdrs_reset(&r->hdrs);
        dg_buf_reset(&r->body);
        dg_buf_reset(&r->resp_hdrs);
    }
    r->conn = c;
    r->resp_remaining = -1;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    return r;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    if (c->req || !conn_can_parse(c))
        return -1;
    c->req = req_new(c);
    c->srv->stats.active_reqs++;
    c->state = C_HEAD;
    arm_timer(c, c->srv->limits.header_timeout_ms);
    return 0;
}

/* Header bytes (url, fields, values, and trailers after a chunked body) against the limit. */
static bool header_bytes_ok(struct conn *c, size_t more)
{
    if (c->req->hdrs.bytes.len + more > c->srv->limits.max_header_bytes) {
        conn_fail(c, 431, "request header fields too large");
        return false;
    }
    return true;
}

/* Trailer fields (not kept) count against the same limit as the headers. */
static bool trailer_bytes_ok(struct conn *c, size_t more)
{
    struct dg_http_req *r = c->req;
    r->trailer_bytes += more;
    if (r->hdrs.bytes.len + r->trailer_bytes > c->srv->limits.max_header_bytes) {
        conn_fail(c, 431, "request header and trailer fields too large");
        return false;
    }
    return true;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (!c->req || !header_bytes_ok(c, len))
        return -1;
    dg_buf_append(&c->req->hdrs.bytes, at, len);
    c->req->url_len += (uint32_t)len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct dg_http_req *r = c->req;
    if (!r)
        return -1;
    if (r->headers_done) /* a trailer after a chunked body: counted, not kept */
        return trailer_bytes_ok(c, len) ? 0 : -1;
    if (!header_bytes_ok(c, len))
        return -1;
    if (memchr(at, ' ', len)) { /* the packaged parser lets spaces into names */
        conn_fail(c, 400, "whitespace in a header field name or before its colon (RFC 9112 5.1)");
        return -1;
    }
    if (!dg__hdrs_field(&r->hdrs, at, len, c->srv->limits.max_headers)) {
        conn_fail(c, 431, "too many request header fields");
        return -1;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct dg_http_req *r = c->req;
    if (!r)
        return -1;
    if (r->headers_done)
        return trailer_bytes_ok(c, len) ? 0 : -1;
    if (!header_bytes_ok(c, len))
        return -1;
    dg__hdrs_value(&r->hdrs, at, len);
    return 0;
}

static void send_continue(struct conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
    conn_write(c, &b, 1);
}

static void respond_plain(struct dg_http_req *r, int status, const char *msg)
{
    dg_http_respond(r, status, "text/plain", msg, strlen(msg));
}

/* RFC 9112's rules the parser does not enforce: the version, and exactly one valid Host in
 * an HTTP/1.1 request (3.2). NULL when the head is acceptable. */
static const char *request_head_error(const http_parser *p, const struct dg_http_req *r)
{
    if (p->http_major != 1)
        return "HTTP version not supported: this server speaks HTTP/1.0 and HTTP/1.1";
    unsigned hosts = 0;
    struct dg_str host = {0};
    for (unsigned i = 0; i < r->hdrs.n; i++) {
        if (dg_str_caseeq(r->hdrs.views[i].name, "host")) {
            hosts++;
            host = r->hdrs.views[i].value;
        }
    }
    if (hosts > 1)
        return "more than one Host header (RFC 9112 3.2)";
    if (hosts == 0 && p->http_minor >= 1)
        return "HTTP/1.1 request without a Host header (RFC 9112 3.2)";
    for (size_t i = 0; i < host.len; i++)
        if (host.ptr[i] == ' ' || host.ptr[i] == '\t' || host.ptr[i] == ',' || host.ptr[i] == '/')
            return "invalid Host header: expected host[:port]";
    return NULL;
}

/* An Upgrade header whose list names h2c. */
static bool asks_h2c(const struct dg_http_req *r)
{
    struct dg_str u = dg__hdrs_get(&r->hdrs, "upgrade");
    size_t i = 0;
    while (i < u.len) {
        while (i < u.len && (u.ptr[i] == ' ' || u.ptr[i] == '\t' || u.ptr[i] == ','))
            i++;
        size_t b = i;
        while (i < u.len && u.ptr[i] != ',' && u.ptr[i] != ' ' && u.ptr[i] != '\t')
            i++;
        if (dg_str_caseeq((struct dg_str){u.ptr + b, i - b}, "h2c"))
            return true;
    }
    return false;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct dg_http_req *r = c->req;
    struct dg_http_server *s = c->srv;
    if (!r)
        return -1;
    r->headers_done = true;
    dg__hdrs_finish(&r->hdrs);
    c->body_known = true;
    c->body_kind = (p->flags & F_CHUNKED)         ? DG__BODY_CHUNKED
                   : (p->flags & F_CONTENTLENGTH) ? DG__BODY_LENGTH
                                                  : DG__BODY_NONE;
    c->body_len = c->body_kind == DG__BODY_LENGTH ? p->content_length : 0;
    const char *why = request_head_error(p, r);
    if (why) {
        conn_fail(c, p->http_major != 1 ? 505 : 400, why);
        return -1;
    }
    r->method = http_method_str((enum http_method)p->method);
    r->head_method = p->method == HTTP_HEAD;
    r->vminor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p) != 0;
    struct dg_str url = {r->hdrs.bytes.data, r->url_len};
    const char *q = url.ptr ? memchr(url.ptr, '?', url.len) : NULL;
    if (q) {
        r->path = (struct dg_str){url.ptr, (size_t)(q - url.ptr)};
        r->query = (struct dg_str){q + 1, url.len - (size_t)(q - url.ptr) - 1};
    } else {
        r->path = url;
    }
    if (p->flags & F_CHUNKED)
        r->content_length = -1;
    else if (p->flags & F_CONTENTLENGTH)
        r->content_length = (int64_t)p->content_length;
    else
        r->content_length = 0;
    if (p->method == HTTP_CONNECT) {
        conn_fail(c, 501, "CONNECT is not supported");
        return -1;
    }
    if (s->h2 && r->content_length == 0 && asks_h2c(r)) {
        if (!dg__hdrs_get(&r->hdrs, "http2-settings").ptr) {
            conn_fail(c, 400, "Upgrade: h2c needs an HTTP2-Settings header");
            return -1;
        }
        c->upgrading = true; /* switched in conn_parse: the parser returns after this head */
        return 0;
    }
    if (r->content_length > 0 && (uint64_t)r->content_length > s->limits.max_body_bytes) {
        conn_fail(c, 413, "request body too large");
        return -1;
    }
    struct dg_str expect = dg__hdrs_get(&r->hdrs, "expect");
    if (expect.ptr) {
        if (!dg_str_caseeq(expect, "100-continue")) {
            conn_fail(c, 417, "unsupported Expect header");
            return -1;
        }
        r->expect_continue = p->http_minor >= 1;
    }
    s->stats.requests++;
    route_request(s, r);
    bool has_body = r->content_length != 0;
    c->state = has_body ? C_BODY : C_WAIT;
    arm_timer(c, 0);
    if (!r->route) {
        /* 404/405 at once; with a body the connection closes instead of reading it */
        r->handler_called = true;
        respond_plain(r, r->not_found ? 404 : 405,
                      r->not_found ? "not found\n" : "method not allowed\n");
        return 0; /* r may be recycled now: do not touch it */
    }
    if (s->auth) {
        char msg[256];
        int st = s->auth(r, r->route->flags & DG_HTTP_AUTH_MASK, s->auth_ud, msg, sizeof(msg));
        if (st) { /* refused before any body is read; with one the connection closes */
            r->handler_called = true;
            dg_http_resp_header(r, "WWW-Authenticate", "Bearer");
            dg_http_respond_text(r, st, "%s", msg);
            return 0;
        }
    }
    if (r->route->flags & DG_HTTP_STREAM) {
        r->handler_called = true;
        /* Hold the body until the handler asks for it (it may queue the request first). */
        if (has_body) {
            r->body_held = true;
            http_parser_pause(p, 1);
        }
        r->route->fn(r, r->route->ud);
        return 0; /* r may be answered and recycled: do not touch it */
    }
    if (has_body) {
        arm_body_timer(c);
        if (r->expect_continue)
            send_continue(c);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct dg_http_req *r = c->req;
    if (!r)
        return -1;
    r->body_read += len;
    if (r->body_read > c->srv->limits.max_body_bytes) {
        conn_fail(c, 413, "request body too large");
        return -1;
    }
    arm_body_timer(c);
    if (r->handler_called) {
        if (r->on_data)
            r->on_data(r, at, len, r->body_ud);
        if (c->req == r && r->user_paused)
            http_parser_pause(p, 1);
    } else {
        dg_buf_append(&r->body, at, len);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct dg_http_req *r = c->req;
    if (!r) {
        if (c->skip_complete) { /* the end of a request answered already */
            c->skip_complete = false;
            return 0;
        }
        return -1;
    }
    if (c->upgrading) {
        http_parser_pause(p, 1); /* what follows is HTTP/2 (without Connection: upgrade the
                                    parser would go on) */
        return 0;
    }
    r->msg_complete = true;
    if (c->state == C_BODY)
        c->state = C_WAIT;
    arm_timer(c, 0);
    /* Do not parse a pipelined request before this one is answered. */
    http_parser_pause(p, 1);
    if (r->handler_called) {
        if (r->on_end && r->body_wanted)
            r->on_end(r, r->body_ud);
        return 0;
    }
    r->handler_called = true;
    r->route->fn(r, r->route->ud);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parse what is pending when the parser may run; called after a response ends, after a
 * streaming handler asks for the body, after a resume and when a blocked write queue
 * drains. Not re-entrant: a call from inside a parse is picked up by the outer loop. */
static void conn_process(struct conn *c)
{
    if (c->in_process || c->state == C_CLOSED || c->state == C_LINGER)
        return;
    c->in_process = true;
    while (pending_len(c) > 0 && conn_can_parse(c) && !c->write_blocked) {
        size_t n = conn_parse(c, c->pending.data + c->pending_off, pending_len(c));
        if (c->state == C_CLOSED || c->state == C_LINGER)
            break;
        pending_consume(c, n);
        if (n == 0)
            break;
    }
    c->in_process = false;
    if (c->state != C_CLOSED && c->state != C_LINGER)
        conn_update_reading(c);
}

/* Let the parser go on with what follows (after pause points). */
static void conn_unpause(struct conn *c)
{
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED && !c->shutting_down && !c->dead)
        http_parser_pause(&c->parser, 0);
    if (!c->in_process)
        conn_process(c);
}

/* ---- request accessors ------------------------------------------------------------------ */

const char *dg_http_req_method(const struct dg_http_req *r)
{
    return r->method;
}

struct dg_str dg_http_req_url(const struct dg_http_req *r)
{
    return (struct dg_str){r->hdrs.bytes.data, r->url_len};
}

struct dg_str dg_http_req_path(const struct dg_http_req *r)
{
    return r->path;
}

struct dg_str dg_http_req_query(const struct dg_http_req *r)
{
    return r->query;
}

struct dg_str dg_http_req_param(const struct dg_http_req *r, const char *name)
{
    for (unsigned i = 0; i < r->nparams; i++)
        if (dg_str_eq(r->param_names[i], name))
            return r->param_values[i];
    return (struct dg_str){NULL, 0};
}

struct dg_str dg_http_req_header(const struct dg_http_req *r, const char *name)
{
    return dg__hdrs_get(&r->hdrs, name);
}

const struct dg_http_header *dg_http_req_headers(const struct dg_http_req *r, size_t *n)
{
    *n = r->hdrs.n;
    return r->hdrs.views;
}

struct dg_str dg_http_req_body(const struct dg_http_req *r)
{
    return (struct dg_str){r->body.data ? r->body.data : "", r->body.len};
}

int64_t dg_http_req_content_length(const struct dg_http_req *r)
{
    return r->content_length;
}

bool dg_http_req_keep_alive(const struct dg_http_req *r)
{
    return r->keep_alive;
}

int dg_http_req_version_minor(const struct dg_http_req *r)
{
    return r->vminor;
}

const char *dg_http_req_peer(const struct dg_http_req *r)
{
    return r->peer;
}

void dg_http_req_set_data(struct dg_http_req *r, void *data)
{
    r->data = data;
}

void dg_http_req_set_identity(struct dg_http_req *r, unsigned role, const char *name)
{
    r->id_role = role;
    snprintf(r->id_name, sizeof(r->id_name), "%s", name ? name : "");
}

unsigned dg_http_req_identity(const struct dg_http_req *r, const char **name)
{
    if (name)
        *name = r->id_name;
    return r->id_role;
}

void *dg_http_req_data(const struct dg_http_req *r)
{
    return r->data;
}

void dg_http_req_on_abort(struct dg_http_req *r, void (*fn)(struct dg_http_req *, void *), void *ud)
{
    r->on_abort = fn;
    r->abort_ud = ud;
}

void dg_http_req_read_body(struct dg_http_req *r,
                           void (*on_data)(struct dg_http_req *, const char *, size_t, void *),
                           void (*on_end)(struct dg_http_req *, void *), void *ud)
{
    r->on_data = on_data;
    r->on_end = on_end;
    r->body_ud = ud;
    r->body_wanted = true;
    if (r->is_h2) {
        r->h2ops->read_body(r);
        return;
    }
    struct conn *c = r->conn;
    if (r->msg_complete || r->content_length == 0) {
        if (on_end)
            on_end(r, ud);
        return;
    }
    if (!c || !r->body_held)
        return;
    r->body_held = false;
    if (r->expect_continue && !r->resp_started) /* once a response started, no 100 */
        send_continue(c);
    arm_body_timer(c);
    if (!r->user_paused)
        conn_unpause(c); /* may run on_data, on_end, even the whole response: r may be gone */
}

void dg_http_req_pause(struct dg_http_req *r)
{
    if (r->is_h2) {
        r->h2ops->pause(r, true);
        return;
    }
    r->user_paused = true;
    struct conn *c = r->conn;
    if (!c)
        return;
    arm_body_timer(c);
    conn_update_reading(c);
}

void dg_http_req_resume(struct dg_http_req *r)
{
    if (r->is_h2) {
        r->h2ops->pause(r, false);
        return;
    }
    if (!r->user_paused)
        return;
    r->user_paused = false;
    struct conn *c = r->conn;
    if (!c)
        return;
    arm_body_timer(c);
    if (!r->msg_complete && !r->body_held)
        conn_unpause(c);
    else
        conn_update_reading(c);
}

/* ---- responses -------------------------------------------------------------------------- */

void dg_http_resp_header(struct dg_http_req *r, const char *name, const char *value)
{
    if (!r->resp_started)
        dg_buf_printf(&r->resp_hdrs, "%s: %s\r\n", name, value);
}

void dg_http_resp_header_str(struct dg_http_req *r, struct dg_str name, struct dg_str value)
{
    if (r->resp_started)
        return;
    dg_buf_append(&r->resp_hdrs, name.ptr, name.len);
    dg_buf_append(&r->resp_hdrs, ": ", 2);
    dg_buf_append(&r->resp_hdrs, value.ptr, value.len);
    dg_buf_append(&r->resp_hdrs, "\r\n", 2);
}

/* Whether the connection stays open after this response. A request whose body was not read
 * to the end closes the connection (the rest of the body would be parsed as a request). */
static bool resp_keep_alive(const struct dg_http_req *r)
{
    return r->keep_alive && !r->force_close && r->conn && !r->conn->srv->closing &&
           (r->msg_complete || r->content_length == 0);
}

static bool status_has_body(int status)
{
    return !(status == 204 || status == 304 || (status >= 100 && status < 200));
}

/* Write status line, the handler's headers and ours. content_length: >= 0 a length, -1
 * chunked, -2 none (no body allowed, or close-delimited). */
static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v)
{
    return p + dg_fmt_u64(p, v);
}

/* Status line and our headers with memcpy: printf was a third of the instructions of a
 * small response. */
/* Write the head (and `body`). With `hold`, the head is kept to go out with the first piece
 * of the body in one writev: one system call and one TCP segment fewer per proxied response
 * (the head and body of a small response arrived as two segments). */
static void write_head(struct dg_http_req *r, int status, int64_t content_length, const void *body,
                       size_t body_len, bool hold)
{
    struct conn *c = r->conn;
    char status_line[80], tail[192];
    const char *text = dg_http_status_text(status);
    size_t tl = DG_MIN(strlen(text), sizeof(status_line) - 20);
    char *p = PUT_LIT(status_line, "HTTP/1.1 ");
    p = put_u64(p, (uint64_t)(status % 1000));
    *p++ = ' ';
    p = put(p, text, tl);
    p = PUT_LIT(p, "\r\n");
    size_t sn = (size_t)(p - status_line);
    p = tail;
    if (content_length >= 0) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_u64(p, (uint64_t)content_length);
        p = PUT_LIT(p, "\r\n");
    } else if (content_length == -1) {
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    }
    bool ka = resp_keep_alive(r);
    if (!ka) {
        r->force_close = true; /* said "close": keep to it even if the body completes later */
        p = PUT_LIT(p, "Connection: close\r\n");
    } else if (r->vminor == 0) {
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    }
    const char *date = dg__http_date_line();
    p = put(p, date, strlen(date)); /* < 64 bytes */
    p = PUT_LIT(p, "\r\n");
    size_t tn = (size_t)(p - tail);
    uv_buf_t bufs[4];
    unsigned nb = 0;
    bufs[nb++] = uv_buf_init(status_line, (unsigned)sn);
    if (r->resp_hdrs.len)
        bufs[nb++] = uv_buf_init(r->resp_hdrs.data, (unsigned)r->resp_hdrs.len);
    bufs[nb++] = uv_buf_init(tail, (unsigned)tn);
    if (body_len)
        bufs[nb++] = uv_buf_init((char *)body, (unsigned)body_len);
    if (hold) {
        dg_buf_reset(&r->held);
        for (unsigned i = 0; i < nb; i++)
            dg_buf_append(&r->held, bufs[i].base, bufs[i].len);
        r->head_held = true;
        return;
    }
    conn_write(c, bufs, nb); /* one writev for head and body */
}

/* A held head goes out now (no body piece came to carry it). */
static void flush_held(struct dg_http_req *r)
{
    if (!r->head_held)
        return;
    r->head_held = false;
    if (r->conn) {
        uv_buf_t b = uv_buf_init(r->held.data, (unsigned)r->held.len);
        conn_write(r->conn, &b, 1);
    }
}

void dg_http_respond(struct dg_http_req *r, int status, const char *content_type, const void *body,
                     size_t len)
{
    if (r->is_h2) {
        r->h2ops->respond(r, status, content_type, body, len);
        return;
    }
    if (r->resp_started) {
        if (!r->conn && !r->resp_ended)
            req_finish(r); /* detached: only the bookkeeping */
        return;
    }
    r->resp_started = true;
    if (r->conn) {
        bool has_body = status_has_body(status);
        if (content_type && has_body) {
            dg_buf_puts(&r->resp_hdrs, "Content-Type: ");
            dg_buf_puts(&r->resp_hdrs, content_type);
            dg_buf_puts(&r->resp_hdrs, "\r\n");
        }
        write_head(r, status, has_body ? (int64_t)len : -2, body,
                   has_body && !r->head_method ? len : 0, false);
    }
    req_finish(r);
}

size_t dg_http_text_vfmt(char *buf, size_t size, bool newline, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, size - 1, fmt, ap);
    if (n < 0)
        n = 0;
    if (n > (int)size - 2)
        n = (int)size - 2;
    if (newline && (n == 0 || buf[n - 1] != '\n'))
        buf[n++] = '\n';
    return (size_t)n;
}

void dg__grpc_lines(struct dg_buf *b, int code, const char *msg)
{
    dg_buf_printf(b, "grpc-status: %d\r\ngrpc-message: ", code);
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%')
            dg_buf_append(b, (const char *)p, 1);
        else
            dg_buf_printf(b, "%%%02X", *p);
    }
    dg_buf_puts(b, "\r\n");
}

void dg_http_respond_grpc(struct dg_http_req *r, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!r->resp_started)
        dg__grpc_lines(&r->resp_hdrs, code, msg);
    dg_http_respond(r, 200, "application/grpc", NULL, 0);
}

void dg_http_respond_text(struct dg_http_req *r, int status, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    size_t n = dg_http_text_vfmt(buf, sizeof(buf), true, fmt, ap);
    va_end(ap);
    dg_http_respond(r, status, "text/plain", buf, n);
}

void dg_http_resp_start(struct dg_http_req *r, int status, int64_t content_length)
{
    if (r->is_h2) {
        r->h2ops->resp_start(r, status, content_length);
        return;
    }
    if (r->resp_started)
        return;
    r->resp_started = true;
    if (!r->conn)
        return;
    if (!status_has_body(status)) {
        content_length = -2;
    } else if (content_length < 0 && r->vminor == 0) {
        content_length = -2; /* HTTP/1.0 has no chunked encoding: the close ends the body */
        r->force_close = true;
    }
    r->chunked_resp = content_length == -1 && !r->head_method;
    r->resp_remaining = content_length >= 0 && !r->head_method ? content_length : -1;
    write_head(r, status, content_length, NULL, 0,
               r->resp_remaining > 0 || (r->chunked_resp && r->hold_chunked_head));
}

void dg_http_resp_hold_head(struct dg_http_req *r)
{
    r->hold_chunked_head = true;
}

void dg_http_resp_write(struct dg_http_req *r, const void *data, size_t len)
{
    if (r->is_h2) {
        r->h2ops->resp_write(r, data, len);
        return;
    }
    struct conn *c = r->conn;
    if (!c || !len || r->head_method || r->resp_ended || !r->resp_started)
        return;
    if (r->chunked_resp) {
        char pre[24];
        int n = snprintf(pre, sizeof(pre), "%zx\r\n", len);
        uv_buf_t bufs[4];
        unsigned nb = 0;
        if (r->head_held) { /* the held head goes first, in the same write */
            r->head_held = false;
            bufs[nb++] = uv_buf_init(r->held.data, (unsigned)r->held.len);
        }
        bufs[nb++] = uv_buf_init(pre, (unsigned)n);
        bufs[nb++] = uv_buf_init((char *)data, (unsigned)len);
        bufs[nb++] = uv_buf_init("\r\n", 2);
        if (!out_cork(c, bufs, nb))
            conn_write(c, bufs, nb);
        return;
    }
    if (r->resp_remaining >= 0) {
        if ((int64_t)len > r->resp_remaining) {
            dg_log(DG_LOG_DEBUG, c->srv->name, "%s: response longer than its Content-Length",
                   c->peer);
            len = (size_t)r->resp_remaining;
            r->force_close = true;
        }
        r->resp_remaining -= (int64_t)len;
        if (!len)
            return;
    }
    if (r->head_held) { /* head and this piece in one writev */
        r->head_held = false;
        uv_buf_t b2[2] = {uv_buf_init(r->held.data, (unsigned)r->held.len),
                          uv_buf_init((char *)data, (unsigned)len)};
        conn_write(c, b2, 2);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    conn_write(c, &b, 1);
}

void dg_http_resp_end(struct dg_http_req *r)
{
    if (r->is_h2) {
        r->h2ops->resp_end(r);
        return;
    }
    if (r->resp_ended)
        return;
    flush_held(r);
    if (r->conn && r->chunked_resp) {
        if (r->trailers.len) { /* the last chunk carries the trailer fields */
            uv_buf_t b[3] = {uv_buf_init("0\r\n", 3),
                             uv_buf_init(r->trailers.data, (unsigned)r->trailers.len),
                             uv_buf_init("\r\n", 2)};
            conn_write(r->conn, b, 3);
        } else {
            uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
            conn_write(r->conn, &b, 1);
        }
    }
    /* A short body cannot be completed: closing tells the client it is incomplete. */
    if (r->resp_remaining > 0)
        r->force_close = true;
    req_finish(r);
}

void dg_http_resp_abort(struct dg_http_req *r)
{
    if (r->is_h2) {
        r->h2ops->resp_abort(r);
        return;
    }
    if (r->resp_ended)
        return;
    flush_held(r);
    r->force_close = true; /* no terminal chunk: the close tells the client it is cut */
    req_finish(r);
}

size_t dg_http_resp_queued(const struct dg_http_req *r)
{
    if (r->is_h2)
        return r->h2ops->resp_queued(r);
    return r->conn ? uv_stream_get_write_queue_size((const uv_stream_t *)&r->conn->tcp) +
                         r->conn->out.len
                   : 0;
}

void dg_http_resp_trailer(struct dg_http_req *r, struct dg_str name, struct dg_str value)
{
    if (!r->resp_started || r->resp_ended)
        return;
    dg_buf_append(&r->trailers, name.ptr, name.len);
    dg_buf_append(&r->trailers, ": ", 2);
    dg_buf_append(&r->trailers, value.ptr, value.len);
    dg_buf_append(&r->trailers, "\r\n", 2);
}

bool dg_http_req_is_h2(const struct dg_http_req *r)
{
    return r->is_h2;
}

void dg_http_resp_on_drain(struct dg_http_req *r, void (*fn)(struct dg_http_req *, void *),
                           void *ud)
{
    r->on_drain = fn;
    r->drain_ud = ud;
}

/* The response is complete: recycle the request and go on with the connection. */
static void req_finish(struct dg_http_req *r)
{
    r->resp_ended = true;
    struct conn *c = r->conn;
    if (!c) { /* detached: the connection is gone */
        r->handler_done = true;
        if (!r->abort_pending)
            req_free(r);
        return;
    }
    bool keep = resp_keep_alive(r);
    if (!r->msg_complete && r->content_length == 0)
        c->skip_complete = true; /* the parser has yet to report this request's end */
    c->req = NULL;
    c->srv->stats.active_reqs--;
    if (c->spare)
        req_free(c->spare);
    c->spare = r;
    if (!keep) {
        conn_shutdown(c);
        return;
    }
    c->state = C_IDLE;
    arm_idle(c);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_HIGH)
        c->write_blocked = true; /* go on when the client has read (on_write_done) */
    conn_unpause(c);
}

/* ---- shutdown --------------------------------------------------------------------------- */

static void grace_closed(uv_handle_t *h)
{
    struct dg_http_server *s = h->data;
    s->open_handles--;
    server_maybe_done(s);
}

static void listener_closed(uv_handle_t *h)
{
    struct dg_http_server *s = h->data;
    s->open_handles--;
    server_maybe_done(s);
}

/* Every 20 ms during shutdown: close connections with nothing in flight (no request, nothing
 * pending, all written); at the deadline, close the rest (their requests are aborted). */
static void on_grace_poll(uv_timer_t *t)
{
    struct dg_http_server *s = t->data;
    bool over = uv_now(s->loop) >= s->grace_deadline;
    if (over && s->conns)
        dg_log(DG_LOG_WARN, s->name, "shutdown: grace period over, closing %u connection(s)",
               (unsigned)s->stats.open_conns);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        bool h2_quiet = true;
        if (c->h2 && c->state == C_H2 && !c->shutting_down)
            h2_quiet = s->h2->closing(c); /* GOAWAY once; may shut the connection down */
        bool quiet = !c->req && pending_len(c) == 0 && !c->shutting_down && c->state != C_LINGER &&
                     uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0;
        quiet = quiet && h2_quiet;
        if (over || quiet)
            conn_close(c);
    }
    if (!s->conns && !uv_is_closing((uv_handle_t *)t)) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, grace_closed);
        if (s->h2) { /* no connection left to flush */
            uv_close((uv_handle_t *)&s->h2_check, grace_closed);
            uv_close((uv_handle_t *)&s->h2_idle, grace_closed);
        }
        if (s->h1_on) {
            uv_close((uv_handle_t *)&s->h1_check, grace_closed);
            uv_close((uv_handle_t *)&s->h1_idle, grace_closed);
        }
    }
}

void dg_http_server_close(struct dg_http_server *s, uint64_t grace_ms, void (*done)(void *),
                          void *ud)
{
    if (s->closing)
        return;
    s->closing = true;
    s->done = done;
    s->done_ud = ud;
    if (s->listening) {
        s->listening = false;
        uv_close((uv_handle_t *)&s->listener, listener_closed);
    }
    uv_timer_init(s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    s->open_handles++;
    s->grace_deadline = uv_now(s->loop) + grace_ms;
    /* first poll from the loop, never inside the caller (it may be a handler) */
    uv_timer_start(&s->grace_timer, on_grace_poll, 0, 20);
}

/* ---- for http2_server.c ------------------------------------------------------------------ */

void dg__conn_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    conn_write(c, bufs, n);
}

void dg__conn_close(struct conn *c)
{
    conn_close(c);
}

void dg__conn_kill(struct conn *c)
{
    conn_kill(c);
}

void dg__conn_shutdown(struct conn *c)
{
    conn_shutdown(c);
}

void dg__conn_update_reading(struct conn *c)
{
    conn_update_reading(c);
}

void dg__conn_fail(struct conn *c, int status, const char *msg)
{
    conn_fail(c, status, msg);
}

void dg__route_request(struct dg_http_server *s, struct dg_http_req *r)
{
    route_request(s, r);
}

void dg__req_free(struct dg_http_req *r)
{
    req_free(r);
}

static void buf_keep(struct dg_buf *b)
{
    if (b->cap > 16384)
        dg_buf_free(b);
    else
        dg_buf_reset(b);
}

void dg__req_reset(struct dg_http_req *r)
{
    struct dg__hdrs hdrs = r->hdrs;
    struct dg_buf body = r->body, resp_hdrs = r->resp_hdrs, held = r->held, trailers = r->trailers;
    dg__hdrs_reset(&hdrs);
    if (hdrs.bytes.cap > 16384)
        dg_buf_free(&hdrs.bytes);
    buf_keep(&body);
    buf_keep(&resp_hdrs);
    buf_keep(&held);
    buf_keep(&trailers);
    memset(r, 0, sizeof(*r));
    r->hdrs = hdrs;
    r->body = body;
    r->resp_hdrs = resp_hdrs;
    r->held = held;
    r->trailers = trailers;
}

void dg__conn_timer_start(struct conn *c, uint64_t ms)
{
    if (c->state == C_CLOSED || c->dead)
        return;
    c->timer_due = uv_now(c->srv->loop) + ms;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}
