/*
 * http_client.c: an HTTP/1.1 client with a keep-alive connection pool per
 * upstream (host:port).
 *
 * A request takes an idle connection (most recently used first, so a small
 * working set stays warm), or opens a new one while the pool is under
 * max_conns, or waits in the pool's FIFO. One request at a time per connection
 * (no pipelining: a slow response must not hold others). After a complete
 * response with keep-alive the connection goes back to the idle list, where it
 * keeps reading so an upstream that closes it is noticed and the connection
 * dropped; bytes arriving on an idle connection are a protocol error and close
 * it too.
 *
 * Retry-free on purpose: a failed request reports its error and whether any
 * byte was sent, and the caller (the data plane) decides whether a retry is
 * safe. Timeouts: connect, request (send to end of response) and idle, all on
 * one timer per connection.
 */
#include "http_internal.h"

#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct cconn;

struct dg_http_pool {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    char host[64];
    int port;
    struct dg_http_pool_opts opts;
    char *auth_line;                      /* "Authorization: Bearer ...\r\n" or NULL */
    struct cconn *idle;                   /* singly linked, most recent first */
    struct cconn *busy;                   /* all non-idle connections (doubly linked) */
    struct dg_http_creq *q_head, *q_tail; /* waiting for a connection */
    unsigned nidle, nbusy, nqueued, handles;
    bool closing;
    struct dg_http_pool_stats stats;
    struct dg__h2pool *h2; /* opts.h2c: every request goes there (http2_client.c) */
};

enum { Q_QUEUED, Q_ASSIGNED, Q_DONE };

struct dg_http_creq {
    struct dg__creq_tag tag; /* first; tag.h2 false here */
    struct dg_http_pool *pool;
    struct cconn *conn;
    struct dg_http_creq *next; /* queue */
    struct dg_http_client_cbs cbs;
    void *ud;
    struct dg_buf out; /* head (+ body) not yet handed to a connection */
    bool streaming, chunked, body_ended, sent, head_req, paused;
    int state;
    /* response */
    struct dg__hdrs hdrs, trailers; /* trailers: of a chunked body, kept for on_trailers */
    struct dg_buf body;
    struct dg_http_resp resp;
    bool head_done, complete, skip_1xx, reused, got_bytes;
    bool *alive; /* set while dg_http_request* runs: cleared when q is freed under it */
};

struct cconn {
    struct dg_http_pool *pool;
    struct cconn *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    http_parser parser;
    struct dg_http_creq *req;
    unsigned handles, writes;
    bool connected, idle, closed, served, keep_alive;
    int dead; /* a write or connect error to report from the timer (0: none) */
    char rbuf[16 * 1024];
};

static void cconn_close(struct cconn *c);
static void on_cconn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void pool_dispatch(struct dg_http_pool *p);
static const http_parser_settings resp_settings;

/* ---- pool ------------------------------------------------------------------------------- */

struct dg_http_pool *dg_http_pool_new(uv_loop_t *loop, const char *host, int port,
                                      const struct dg_http_pool_opts *opts, struct dg_err *err)
{
    struct sockaddr_storage ss;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc < 0 || port <= 0 || port > 65535) {
        dg_err_set(err, DG_E_INVAL, "upstream '%s:%d': expected a numeric IP address and a port",
                   host, port);
        return NULL;
    }
    struct dg_http_pool *p = dg_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->addr = ss;
    snprintf(p->host, sizeof(p->host), "%s", host);
    p->port = port;
    if (opts)
        p->opts = *opts;
    else
        dg_http_pool_opts_default(&p->opts);
    p->opts.bearer = NULL;
    dg_http_pool_set_bearer(p, opts ? opts->bearer : NULL);
    if (p->opts.h2c)
        p->h2 = dg__h2_pool_new(loop, &ss, p->host, port, opts);
    return p;
}

void dg_http_pool_set_bearer(struct dg_http_pool *p, const char *bearer)
{
    free(p->auth_line);
    p->auth_line = bearer ? dg_xasprintf("Authorization: Bearer %s\r\n", bearer) : NULL;
    if (p->h2)
        dg__h2_pool_set_bearer(p->h2, bearer);
}

struct dg_http_pool *dg_http_pool_new_addr(uv_loop_t *loop, const char *address,
                                           const struct dg_http_pool_opts *opts, struct dg_err *err)
{
    const char *colon = strrchr(address, ':');
    int64_t port;
    char host[64];
    if (!colon || !dg_str_to_i64(dg_str_c(colon + 1), &port) || port < 1 || port > 65535 ||
        colon == address || (size_t)(colon - address) >= sizeof(host)) {
        dg_err_set(err, DG_E_INVAL, "address '%.64s': expected IP:PORT", address);
        return NULL;
    }
    const char *h = address;
    size_t hl = (size_t)(colon - address);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') { /* [IPv6]:PORT */
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    return dg_http_pool_new(loop, host, (int)port, opts, err);
}

void dg_http_pool_stats(const struct dg_http_pool *p, struct dg_http_pool_stats *out)
{
    if (p->h2) {
        dg__h2_pool_stats(p->h2, out);
        return;
    }
    *out = p->stats;
    out->idle = p->nidle;
    out->busy = p->nbusy;
    out->queued = p->nqueued;
}

static void pool_maybe_free(struct dg_http_pool *p)
{
    if (p->closing && p->handles == 0) {
        free(p->auth_line);
        free(p);
    }
}

/* ---- request completion ----------------------------------------------------------------- */

static void creq_free(struct dg_http_creq *q)
{
    if (q->alive)
        *q->alive = false;
    dg_buf_free(&q->out);
    dg__hdrs_free(&q->hdrs);
    dg__hdrs_free(&q->trailers);
    dg_buf_free(&q->body);
    free(q);
}

/* Finish a request with a response (err NULL) or an error; frees it. */
static void creq_done(struct dg_http_creq *q, const struct dg_err *err)
{
    if (q->state == Q_DONE)
        return;
    q->state = Q_DONE;
    if (q->cbs.on_done) {
        if (err) {
            q->cbs.on_done(q, NULL, err, q->ud);
        } else {
            q->resp.body = (struct dg_str){q->body.data ? q->body.data : "", q->body.len};
            q->cbs.on_done(q, &q->resp, NULL, q->ud);
        }
    }
    creq_free(q);
}

/* Fail with "WHAT HOST:PORT: DETAIL" ("connect to 127.0.0.1:9: connection refused"). */
static void creq_fail(struct dg_http_creq *q, int code, const char *what, const char *detail)
{
    struct dg_err e;
    dg_err_set(&e, code, "%s %s:%d: %s", what, q->pool->host, q->pool->port, detail);
    creq_done(q, &e);
}

static void queue_remove(struct dg_http_pool *p, struct dg_http_creq *q)
{
    struct dg_http_creq **pp = &p->q_head, *prev = NULL;
    while (*pp && *pp != q) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = q->next;
    if (p->q_tail == q)
        p->q_tail = prev;
    q->next = NULL;
    p->nqueued--;
}

/* ---- connections ------------------------------------------------------------------------ */

static void busy_add(struct dg_http_pool *p, struct cconn *c)
{
    c->prev = NULL;
    c->next = p->busy;
    if (p->busy)
        p->busy->prev = c;
    p->busy = c;
    p->nbusy++;
}

static void busy_remove(struct dg_http_pool *p, struct cconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->busy = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    p->nbusy--;
}

static void idle_remove(struct dg_http_pool *p, struct cconn *c)
{
    struct cconn **pp = &p->idle;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = c->next;
        p->nidle--;
    }
    c->next = NULL;
    c->idle = false;
}

static void cconn_handle_closed(uv_handle_t *h)
{
    struct cconn *c = h->data;
    struct dg_http_pool *p = c->pool;
    c->handles--;
    p->handles--;
    if (c->handles == 0 && c->writes == 0)
        free(c);
    pool_maybe_free(p);
}

static void cconn_close(struct cconn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct dg_http_pool *p = c->pool;
    if (c->idle)
        idle_remove(p, c);
    else
        busy_remove(p, c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, cconn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, cconn_handle_closed);
    /* A closed slot may let a queued request open a new connection. */
    if (!p->closing)
        pool_dispatch(p);
}

/* Fail the connection's request with `code` and close the connection. */
static void cconn_error(struct cconn *c, int code, const char *what, const char *detail)
{
    struct dg_http_creq *q = c->req;
    c->req = NULL;
    if (q)
        q->conn = NULL;
    cconn_close(c);
    if (q)
        creq_fail(q, code, what, detail);
}

static void on_cconn_timer(uv_timer_t *t)
{
    struct cconn *c = t->data;
    if (c->dead) {
        cconn_error(c, c->dead, c->connected ? "request to" : "connect to", uv_strerror(c->dead));
        return;
    }
    if (c->idle) {
        cconn_close(c);
        return;
    }
    if (!c->connected)
        cconn_error(c, UV_ETIMEDOUT, "connect to", "timed out");
    else
        cconn_error(c, UV_ETIMEDOUT, "request to", "no complete response in time");
}

static void cconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct cconn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void cconn_make_idle(struct cconn *c)
{
    struct dg_http_pool *p = c->pool;
    if (p->closing || p->nidle >= p->opts.max_idle || !c->keep_alive) {
        cconn_close(c);
        return;
    }
    busy_remove(p, c);
    c->idle = true;
    uv_read_start((uv_stream_t *)&c->tcp, cconn_alloc, on_cconn_read); /* notice a close */
    c->next = p->idle;
    p->idle = c;
    p->nidle++;
    if (p->opts.idle_timeout_ms)
        uv_timer_start(&c->timer, on_cconn_timer, p->opts.idle_timeout_ms, 0);
    else
        uv_timer_stop(&c->timer);
}

static void on_cconn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cconn *c = s->data;
    if (c->closed)
        return;
    if (c->idle) {
        /* EOF from the upstream or unexpected bytes: this connection is done. */
        if (nread != 0)
            cconn_close(c);
        return;
    }
    struct dg_http_creq *q = c->req;
    if (!q) {
        cconn_close(c);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN, not EOF */
    if (nread > 0)
        q->got_bytes = true;
    if (nread < 0) {
        if (nread == UV_EOF) {
            /* A response delimited by the end of the connection ends here. */
            http_parser_execute(&c->parser, &resp_settings, NULL, 0);
            if (q->complete)
                goto complete;
            cconn_error(c, UV_EOF, "request to",
                        q->head_done ? "upstream closed the connection mid-response"
                                     : "upstream closed the connection before responding");
        } else {
            cconn_error(c, (int)nread, "request to", uv_strerror((int)nread));
        }
        return;
    }
    size_t n = http_parser_execute(&c->parser, &resp_settings, buf->base, (size_t)nread);
    if (c->closed)
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        cconn_error(c, DG_E_PROTO, "bad response from", http_errno_description(e));
        return;
    }
    if (!q->complete)
        return;
    if (n < (size_t)nread)
        c->keep_alive = false; /* bytes after the response: do not trust this connection */
complete:
    c->req = NULL;
    q->conn = NULL;
    uv_timer_stop(&c->timer);
    if (c->closed) {
        creq_done(q, NULL);
        return;
    }
    if (!c->keep_alive || (q->streaming && !q->body_ended)) {
        cconn_close(c);
    } else {
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        cconn_make_idle(c);
    }
    creq_done(q, NULL);
    if (!c->pool->closing)
        pool_dispatch(c->pool);
}

static void on_cconn_write(void *ctx, int status)
{
    struct cconn *c = ctx;
    c->writes--;
    if (c->closed) {
        if (c->handles == 0 && c->writes == 0)
            free(c);
        return;
    }
    if (status < 0 && c->req)
        cconn_error(c, status, "request to", uv_strerror(status));
}

/* Mark the connection failed; the request learns it from the timer, outside the caller's
 * stack (a write error inside dg_http_creq_write must not free the request under it). */
static void cconn_kill(struct cconn *c, int code)
{
    if (c->dead || c->closed)
        return;
    c->dead = code;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_cconn_timer, 0, 0);
}

static void cconn_write(struct cconn *c, const uv_buf_t *bufs, unsigned n)
{
    struct dg_http_creq *q = c->req;
    if (c->closed || c->dead)
        return;
    int rc = dg__http_write((uv_stream_t *)&c->tcp, bufs, n, on_cconn_write, c);
    if (rc == 0)
        c->writes++;
    if (rc < 0) {
        cconn_kill(c, rc);
        return;
    }
    if (q)
        q->sent = true;
}

/* Hand `q` to a connected connection: write what it has, start reading the response. */
static void cconn_start(struct cconn *c, struct dg_http_creq *q)
{
    struct dg_http_pool *p = c->pool;
    c->req = q;
    q->conn = c;
    q->state = Q_ASSIGNED;
    c->keep_alive = true;
    if (c->served) {
        p->stats.reused++;
        q->reused = true;
    }
    c->served = true;
    if (p->opts.request_timeout_ms)
        uv_timer_start(&c->timer, on_cconn_timer, p->opts.request_timeout_ms, 0);
    else
        uv_timer_stop(&c->timer);
    if (q->paused)
        uv_read_stop((uv_stream_t *)&c->tcp); /* an idle connection was reading */
    else
        uv_read_start((uv_stream_t *)&c->tcp, cconn_alloc, on_cconn_read);
    struct dg_buf out = q->out;
    q->out = (struct dg_buf){0};
    if (out.len) {
        uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
        cconn_write(c, &b, 1);
    }
    dg_buf_free(&out);
}

static void on_cconn_connect(uv_connect_t *cr, int status)
{
    struct cconn *c = cr->data;
    if (c->closed)
        return;
    if (status < 0) {
        cconn_error(c, status, "connect to", uv_strerror(status));
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    struct dg_http_creq *q = c->req;
    c->req = NULL;
    if (q) {
        cconn_start(c, q);
    } else {
        cconn_make_idle(c);
        pool_dispatch(c->pool);
    }
}

static void cconn_open(struct dg_http_pool *p, struct dg_http_creq *q)
{
    /* the 16 KiB read buffer is not zeroed: writing it cost a new connection more than the
     * connect itself */
    struct cconn *c = dg_xmalloc(sizeof(*c));
    memset(c, 0, offsetof(struct cconn, rbuf));
    c->pool = p;
    uv_tcp_init(p->loop, &c->tcp);
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    p->handles += 2;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    busy_add(p, c);
    p->stats.connects++;
    c->req = q;
    q->conn = c;
    q->state = Q_ASSIGNED;
    c->connect_req.data = c;
    if (p->opts.connect_timeout_ms)
        uv_timer_start(&c->timer, on_cconn_timer, p->opts.connect_timeout_ms, 0);
    int rc =
        uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&p->addr, on_cconn_connect);
    if (rc < 0)
        cconn_kill(c, rc);
}

/* Give waiting requests a connection: idle first, else a new one while under max_conns. */
static void pool_dispatch(struct dg_http_pool *p)
{
    while (p->q_head && !p->closing) {
        struct cconn *c = p->idle;
        if (!c && p->opts.max_conns && p->nidle + p->nbusy >= p->opts.max_conns)
            return;
        struct dg_http_creq *q = p->q_head;
        queue_remove(p, q);
        if (c) {
            idle_remove(p, c);
            busy_add(p, c);
            cconn_start(c, q);
        } else {
            cconn_open(p, q);
        }
    }
}

/* ---- public request API ----------------------------------------------------------------- */

/* "Content-Length: N\r\n\r\n" (the end of the head) */
static void content_length_line(struct dg_buf *b, uint64_t n)
{
    char num[20];
    size_t nl = dg_fmt_u64(num, n);
    dg_buf_append(b, "Content-Length: ", 16);
    dg_buf_append(b, num, nl);
    dg_buf_append(b, "\r\n\r\n", 4);
}

static struct dg_http_creq *creq_new(struct dg_http_pool *p, const char *method, const char *path,
                                     const struct dg_http_header *hdrs, size_t nhdrs,
                                     const struct dg_http_client_cbs *cbs, void *ud)
{
    struct dg_http_creq *q = dg_xcalloc(1, sizeof(*q));
    q->pool = p;
    q->cbs = *cbs;
    q->ud = ud;
    q->head_req = strcmp(method, "HEAD") == 0;
    /* the request line and headers without printf: this runs for every proxied request */
    dg_buf_reserve(&q->out, 256);
    dg_buf_puts(&q->out, method);
    dg_buf_append(&q->out, " ", 1);
    dg_buf_puts(&q->out, path);
    dg_buf_append(&q->out, " HTTP/1.1\r\n", 11);
    bool has_host = false, has_auth = false;
    for (size_t i = 0; i < nhdrs; i++) {
        if (dg_str_caseeq(hdrs[i].name, "host"))
            has_host = true;
        if (dg_str_caseeq(hdrs[i].name, "authorization"))
            has_auth = true;
        dg_buf_append(&q->out, hdrs[i].name.ptr, hdrs[i].name.len);
        dg_buf_append(&q->out, ": ", 2);
        dg_buf_append(&q->out, hdrs[i].value.ptr, hdrs[i].value.len);
        dg_buf_append(&q->out, "\r\n", 2);
    }
    if (!has_host) {
        if (strchr(p->host, ':'))
            dg_buf_printf(&q->out, "Host: [%s]:%d\r\n", p->host, p->port);
        else
            dg_buf_printf(&q->out, "Host: %s:%d\r\n", p->host, p->port);
    }
    if (p->auth_line && !has_auth)
        dg_buf_puts(&q->out, p->auth_line);
    return q;
}

/* Queue `q` and dispatch. Returns q, or NULL when it already finished (on_done was called
 * and q freed: a closing pool, a synchronous connect or write error). */
static struct dg_http_creq *creq_submit(struct dg_http_pool *p, struct dg_http_creq *q)
{
    bool alive = true;
    q->alive = &alive; /* cppcheck-suppress autoVariables ; reset before returning */
    q->state = Q_QUEUED;
    if (p->closing) {
        creq_fail(q, DG_E_CLOSED, "request to", "the client pool is closing");
        return NULL;
    }
    if (p->q_tail)
        p->q_tail->next = q;
    else
        p->q_head = q;
    p->q_tail = q;
    p->nqueued++;
    pool_dispatch(p);
    if (!alive)
        return NULL;
    q->alive = NULL;
    return q;
}

struct dg_http_creq *dg_http_request(struct dg_http_pool *p, const char *method, const char *path,
                                     const struct dg_http_header *hdrs, size_t nhdrs,
                                     const void *body, size_t len,
                                     const struct dg_http_client_cbs *cbs, void *ud)
{
    if (p->h2)
        return dg__h2_request(p->h2, method, path, hdrs, nhdrs, body, len, false, 0, cbs, ud);
    struct dg_http_creq *q = creq_new(p, method, path, hdrs, nhdrs, cbs, ud);
    content_length_line(&q->out, len);
    if (len)
        dg_buf_append(&q->out, body, len);
    q->body_ended = true;
    return creq_submit(p, q);
}

struct dg_http_creq *dg_http_request_stream(struct dg_http_pool *p, const char *method,
                                            const char *path, const struct dg_http_header *hdrs,
                                            size_t nhdrs, int64_t content_length,
                                            const struct dg_http_client_cbs *cbs, void *ud)
{
    if (p->h2)
        return dg__h2_request(p->h2, method, path, hdrs, nhdrs, NULL, 0, true, content_length, cbs,
                              ud);
    struct dg_http_creq *q = creq_new(p, method, path, hdrs, nhdrs, cbs, ud);
    q->streaming = true;
    if (content_length >= 0) {
        content_length_line(&q->out, (uint64_t)content_length);
    } else {
        q->chunked = true;
        dg_buf_puts(&q->out, "Transfer-Encoding: chunked\r\n\r\n");
    }
    return creq_submit(p, q);
}

/* Write now when connected, else keep for when the connection is. */
static void creq_emit(struct dg_http_creq *q, const uv_buf_t *bufs, unsigned n)
{
    if (q->conn && q->conn->connected) {
        cconn_write(q->conn, bufs, n);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        dg_buf_append(&q->out, bufs[i].base, bufs[i].len);
}

void dg_http_creq_write(struct dg_http_creq *q, const void *data, size_t len)
{
    if (q->tag.h2) {
        dg__h2_creq_write(q, data, len);
        return;
    }
    if (!len || q->body_ended || q->state == Q_DONE)
        return;
    if (q->chunked) {
        char pre[24];
        int n = snprintf(pre, sizeof(pre), "%zx\r\n", len);
        uv_buf_t bufs[3] = {uv_buf_init(pre, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                            uv_buf_init("\r\n", 2)};
        creq_emit(q, bufs, 3); /* one writev per chunk */
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        creq_emit(q, &b, 1);
    }
}

void dg_http_creq_end(struct dg_http_creq *q)
{
    if (q->tag.h2) {
        dg__h2_creq_end(q);
        return;
    }
    if (q->body_ended || q->state == Q_DONE)
        return;
    if (q->chunked) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        q->body_ended = true;
        creq_emit(q, &b, 1);
        return;
    }
    q->body_ended = true;
}

bool dg_http_creq_sent(const struct dg_http_creq *q)
{
    if (q->tag.h2)
        return dg__h2_creq_sent(q);
    return q->sent;
}

bool dg_http_creq_stale(const struct dg_http_creq *q)
{
    if (q->tag.h2)
        return dg__h2_creq_stale(q);
    return q->reused && !q->got_bytes;
}

void dg_http_creq_pause(struct dg_http_creq *q)
{
    if (q->tag.h2) {
        dg__h2_creq_pause(q);
        return;
    }
    q->paused = true;
    if (q->conn && q->conn->connected && !q->conn->closed)
        uv_read_stop((uv_stream_t *)&q->conn->tcp);
}

void dg_http_creq_resume(struct dg_http_creq *q)
{
    if (q->tag.h2) {
        dg__h2_creq_resume(q);
        return;
    }
    if (!q->paused)
        return;
    q->paused = false;
    if (q->conn && q->conn->connected && !q->conn->closed)
        uv_read_start((uv_stream_t *)&q->conn->tcp, cconn_alloc, on_cconn_read);
}

void dg_http_creq_cancel(struct dg_http_creq *q)
{
    if (q->tag.h2) {
        dg__h2_creq_cancel(q);
        return;
    }
    if (q->state == Q_DONE)
        return;
    if (q->state == Q_QUEUED) {
        queue_remove(q->pool, q);
    } else if (q->conn) {
        struct cconn *c = q->conn;
        c->req = NULL;
        q->conn = NULL;
        cconn_close(c);
    }
    q->state = Q_DONE;
    creq_free(q);
}

void dg_http_pool_close(struct dg_http_pool *p)
{
    if (p->closing)
        return;
    p->closing = true;
    if (p->h2) {
        dg__h2_pool_close(p->h2);
        p->h2 = NULL;
    }
    struct dg_err e;
    dg_err_set(&e, DG_E_CLOSED, "request to %s:%d: the client pool was closed", p->host, p->port);
    while (p->q_head) {
        struct dg_http_creq *q = p->q_head;
        queue_remove(p, q);
        creq_done(q, &e);
    }
    while (p->busy) {
        struct cconn *c = p->busy;
        struct dg_http_creq *q = c->req;
        c->req = NULL;
        cconn_close(c);
        if (q) {
            q->conn = NULL;
            creq_done(q, &e);
        }
    }
    while (p->idle)
        cconn_close(p->idle);
    pool_maybe_free(p);
}

/* ---- response parsing ------------------------------------------------------------------- */

static int r_on_message_begin(http_parser *hp)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    q->head_done = false;
    dg__hdrs_reset(&q->hdrs);
    q->skip_1xx = false;
    return 0;
}

static int r_on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    if (q->head_done) { /* a trailer: kept apart (the header views point into hdrs) */
        if (!q->cbs.on_trailers)
            return 0;
        if (q->trailers.bytes.len + len > c->pool->opts.max_header_bytes ||
            !dg__hdrs_field(&q->trailers, at, len, 1000))
            return -1;
        return 0;
    }
    if (q->hdrs.bytes.len + len > c->pool->opts.max_header_bytes ||
        !dg__hdrs_field(&q->hdrs, at, len, 1000))
        return -1;
    return 0;
}

static int r_on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    if (q->head_done) {
        if (!q->cbs.on_trailers)
            return 0;
        if (q->trailers.bytes.len + len > c->pool->opts.max_header_bytes)
            return -1;
        dg__hdrs_value(&q->trailers, at, len);
        return 0;
    }
    if (q->hdrs.bytes.len + len > c->pool->opts.max_header_bytes)
        return -1;
    dg__hdrs_value(&q->hdrs, at, len);
    return 0;
}

static int r_on_headers_complete(http_parser *hp)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    if (hp->status_code >= 100 && hp->status_code < 200) {
        q->skip_1xx = true; /* an interim response: wait for the real one */
        return 0;
    }
    dg__hdrs_finish(&q->hdrs);
    q->head_done = true;
    q->resp.status = (int)hp->status_code;
    q->resp.headers = q->hdrs.views;
    q->resp.nheaders = q->hdrs.n;
    c->keep_alive = http_should_keep_alive(hp) != 0;
    if (hp->status_code < 100) {
        q->resp.status = (int)hp->status_code;
        return -1; /* "HTTP/1.1 2 OK": not a status a proxy may pass on */
    }
    /* HEAD, 204 and 304 have no body whatever Content-Length says */
    bool no_body = q->head_req || hp->status_code == 204 || hp->status_code == 304;
    if (q->cbs.on_head) {
        q->cbs.on_head(q, &q->resp, q->ud);
        if (c->closed || c->req != q)
            return -1; /* cancelled (or the pool closed) from on_head: q is gone */
    }
    return no_body ? 1 : 0;
}

static int r_on_body(http_parser *hp, const char *at, size_t len)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    if (q->cbs.on_body) {
        q->cbs.on_body(q, at, len, q->ud);
        if (c->closed || c->req != q)
            return -1; /* cancelled from on_body */
    } else {
        dg_buf_append(&q->body, at, len);
    }
    return 0;
}

static int r_on_message_complete(http_parser *hp)
{
    struct cconn *c = hp->data;
    struct dg_http_creq *q = c->req;
    if (!q)
        return -1;
    if (q->skip_1xx) {
        q->skip_1xx = false;
        return 0;
    }
    if (q->trailers.n && q->cbs.on_trailers) {
        dg__hdrs_finish(&q->trailers);
        q->cbs.on_trailers(q, q->trailers.views, q->trailers.n, q->ud);
        if (c->closed || c->req != q)
            return -1; /* cancelled from on_trailers */
    }
    q->complete = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = r_on_message_begin,
    .on_header_field = r_on_header_field,
    .on_header_value = r_on_header_value,
    .on_headers_complete = r_on_headers_complete,
    .on_body = r_on_body,
    .on_message_complete = r_on_message_complete,
};
