/*
 * http2_client.c: the client pool's HTTP/2 side (h2c with prior knowledge), behind a
 * struct dg_http_pool made with opts.h2c. libnghttp2 does framing, HPACK, flow control,
 * SETTINGS/PING and GOAWAY; this file moves bytes between it and libuv sockets and maps
 * streams onto the dg_http_creq API of http.h.
 *
 * Requests are streams. A request goes to the first usable connection with a free stream
 * slot (the peer's SETTINGS_MAX_CONCURRENT_STREAMS; 100 until its SETTINGS arrive), else to
 * a new connection while the pool is under max_conns, else it waits in the pool's FIFO. A
 * connection being opened takes streams at once: nghttp2 queues their frames until the
 * connect completes, so a burst opens one connection, not max_conns.
 *
 * Bodies: a request body (buffered or streamed) goes through a deferred data provider that
 * reads the bytes the caller wrote; the response body is handed to on_body as DATA arrives.
 * The response's stream window is only given back (WINDOW_UPDATE, automatic updates off)
 * while the request is not paused, so dg_http_creq_pause stops the peer after one window;
 * the connection window is given back at once so that one paused stream does not stall the
 * others. Cancel sends RST_STREAM CANCEL. A stream the peer refused (RST_STREAM
 * REFUSED_STREAM, or above the last stream id of its GOAWAY) was not processed: it counts as
 * not sent and stale, so a caller may retry it. After a GOAWAY a connection takes no new
 * stream and closes when its last stream ends; so does one that used its last stream id.
 *
 * A peer that does not read: over H2_WRITE_HIGH bytes queued for the socket the connection
 * stops reading (frames that want answers, PING or SETTINGS, cannot pile up answers in memory)
 * until the writes drain; a request timeout on such a connection closes it. A peer that
 * answers the preface with "HTTP/1.x" fails the requests with "does not speak h2c".
 *
 * Writing: frames are written once per loop turn (the pool's uv_check, after the poll's
 * callbacks, and uv_prepare for what timers queued), not where they are made, so a turn's
 * requests, body pieces and window updates on a connection go out in one write; this also
 * keeps nghttp2 from being driven (mem_send) from inside its own callbacks. Closing
 * (GOAWAY) and a read that queued many frames write at once.
 */
#include "http_internal.h"

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2_STREAM_WINDOW (256 * 1024)       /* per response stream */
#define H2_CONN_WINDOW   (16 * 1024 * 1024) /* per connection */
#define H2_MAX_HEADERS   1000
#define H2_WRITE_HIGH    (256 * 1024) /* queued for the socket: stop reading and sending above */
#define H2_SEND_BATCH    (64 * 1024)  /* frames handed to the socket at once */
#define H2_FLUSH_FRAMES  64 /* queued by one read: written at once, not at the turn's end */

struct h2conn;

struct dg__h2pool {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    char host[64];
    char authority[80]; /* "host:port" for requests without a Host header */
    int port;
    struct dg_http_pool_opts opts;
    char *bearer;                  /* "Bearer ..." or NULL */
    struct h2conn *conns;          /* all open connections */
    struct h2req *q_head, *q_tail; /* waiting for a stream slot */
    unsigned nconns, nqueued, handles;
    struct h2conn *pend_head, *pend_tail; /* connections with frames to write this turn */
    uv_prepare_t prep; /* both flush them: check after the poll's callbacks, prepare before */
    uv_check_t check;  /* the next poll for what was queued outside the poll phase */
    /* streams with a request timeout, oldest first: one timeout for all, so their deadlines
     * come in this order and one timer (for the first) serves them */
    struct h2req *tl_head, *tl_tail;
    uv_timer_t tl_timer;
    uint32_t peer_max; /* the peer's concurrent-stream limit as last seen (100 at first) */
    int32_t first_id;  /* tests: new connections' first stream id (0: 1) */
    bool closing;
    dg__pool_stats stats;
    struct h2req *spare[32]; /* finished requests kept for reuse, with their buffers */
    unsigned nspare;
};

enum { Q_QUEUED, Q_ASSIGNED, Q_DONE };

/* A stream's user data in nghttp2: outlives its request (a cancelled request is freed at
 * once, its stream closes later), freed when nghttp2 closes the stream or never opened it. */
struct h2slot {
    struct h2req *q; /* NULL once the request is done or cancelled */
    struct h2slot *next, *prev;
    int32_t id;
};

struct h2req {
    struct dg__creq_tag tag; /* first: tag.h2 = true */
    struct dg__h2pool *pool;
    struct h2conn *conn;
    struct h2slot *slot;
    struct h2req *next, *prev; /* pool queue */
    struct dg_http_client_cbs cbs;
    void *ud;
    int state;
    int32_t stream_id;
    /* request */
    nghttp2_nv *nva;
    size_t nnv, nva_cap;
    struct dg_buf hstore; /* names and values the nva point into */
    struct dg_buf out;    /* body bytes written and not yet taken by nghttp2 */
    size_t out_off;
    bool has_body, body_ended, deferred, sent, refused, reused, got_bytes, paused;
    uint64_t deadline; /* request timeout (loop ms), while on the pool's list */
    struct h2req *tl_next, *tl_prev;
    bool timed;
    bool *alive;       /* set while dg__h2_request runs: cleared when q is freed under it */
    size_t unconsumed; /* response bytes delivered while paused: window not given back yet */
    /* response */
    struct dg__hdrs hdrs, trailers;
    struct dg_buf body;
    struct dg_http_resp resp;
    bool head_done, in_trailers;
    bool hdr_over; /* a header block over max_header_bytes or H2_MAX_HEADERS: reset by us */
    int status;
    uint64_t header_bytes;
};

struct h2conn {
    struct dg__h2pool *pool;
    struct h2conn *next, *prev;
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout, idle timeout, a deferred failure */
    uv_connect_t connect_req;
    nghttp2_session *s;
    struct h2slot *slots; /* streams submitted and not closed yet */
    unsigned nstreams;    /* their number */
    unsigned handles, writes;
    int dead; /* a write or connect error to report from the timer (0: none) */
    bool connected, closed, goaway, served, in_recv, pending, settings, got_bytes;
    struct h2conn *pend_next, *pend_prev; /* the pool's pending list */
    bool read_stopped; /* over H2_WRITE_HIGH: reading waits for the writes to drain */
    char rbuf[16 * 1024];
};

static void conn_close(struct h2conn *c, int code, const char *what, const char *detail);
static void conn_flush(struct h2conn *c);
static void conn_flush_now(struct h2conn *c);
static void pend_remove(struct h2conn *c);
static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void pool_dispatch(struct dg__h2pool *p);
static void conn_maybe_idle(struct h2conn *c);

static struct h2req *req_of(struct dg_http_creq *q)
{
    return (struct h2req *)(void *)q;
}

/* ---- requests ------------------------------------------------------------------------------ */

static void pool_handle_closed(uv_handle_t *h)
{
    struct dg__h2pool *p = h->data;
    p->handles--;
    if (p->closing && p->handles == 0) {
        free(p->bearer);
        free(p);
    }
}

static void tl_remove(struct dg__h2pool *p, struct h2req *q)
{
    if (!q->timed)
        return;
    if (q->tl_prev)
        q->tl_prev->tl_next = q->tl_next;
    else
        p->tl_head = q->tl_next;
    if (q->tl_next)
        q->tl_next->tl_prev = q->tl_prev;
    else
        p->tl_tail = q->tl_prev;
    q->tl_next = q->tl_prev = NULL;
    q->timed = false; /* the timer stays set for it: it finds the next one then */
    if (!p->tl_head)  /* none left: the timer would hold a finished loop for a timeout */
        uv_timer_stop(&p->tl_timer);
}

static void req_release(struct h2req *q)
{
    free(q->nva);
    dg_buf_free(&q->hstore);
    dg_buf_free(&q->out);
    dg__hdrs_free(&q->hdrs);
    dg__hdrs_free(&q->trailers);
    dg_buf_free(&q->body);
    free(q);
}

static void buf_keep(struct dg_buf *b)
{
    if (b->cap > 16384)
        dg_buf_free(b);
    else
        dg_buf_reset(b);
}

/* A zeroed request: a finished one of the pool's (buffers emptied, memory kept) or a new one. */
static struct h2req *req_new(struct dg__h2pool *p)
{
    if (!p->nspare)
        return dg_xcalloc(1, sizeof(struct h2req));
    struct h2req *q = p->spare[--p->nspare];
    nghttp2_nv *nva = q->nva;
    size_t nva_cap = q->nva_cap;
    struct dg_buf hstore = q->hstore, out = q->out, body = q->body;
    struct dg__hdrs hdrs = q->hdrs, trailers = q->trailers;
    buf_keep(&hstore);
    buf_keep(&out);
    buf_keep(&body);
    dg__hdrs_reset(&hdrs);
    dg__hdrs_reset(&trailers);
    memset(q, 0, sizeof(*q));
    q->nva = nva;
    q->nva_cap = nva_cap;
    q->hstore = hstore;
    q->out = out;
    q->body = body;
    q->hdrs = hdrs;
    q->trailers = trailers;
    return q;
}

static void req_free(struct h2req *q)
{
    if (q->alive)
        *q->alive = false;
    tl_remove(q->pool, q);
    struct dg__h2pool *p = q->pool;
    if (!p->closing && p->nspare < DG_ARRAY_LEN(p->spare)) {
        p->spare[p->nspare++] = q;
        return;
    }
    free(q->nva);
    dg_buf_free(&q->hstore);
    dg_buf_free(&q->out);
    dg__hdrs_free(&q->hdrs);
    dg__hdrs_free(&q->trailers);
    dg_buf_free(&q->body);
    free(q);
}

static void queue_remove(struct dg__h2pool *p, struct h2req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        p->q_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        p->q_tail = q->prev;
    q->next = q->prev = NULL;
    p->nqueued--;
}

/* Take q off its connection (the stream may stay open in nghttp2, without q). */
static void req_detach(struct h2req *q)
{
    if (q->slot)
        q->slot->q = NULL;
    q->slot = NULL;
    q->conn = NULL;
}

static void slot_free(struct h2conn *c, struct h2slot *sl)
{
    if (sl->prev)
        sl->prev->next = sl->next;
    else
        c->slots = sl->next;
    if (sl->next)
        sl->next->prev = sl->prev;
    if (sl->q)
        sl->q->slot = NULL;
    if (c->nstreams)
        c->nstreams--;
    nghttp2_session_set_stream_user_data(c->s, sl->id, NULL); /* no callback may find it */
    free(sl);
}

static void conn_free(struct h2conn *c)
{
    while (c->slots)
        slot_free(c, c->slots);
    nghttp2_session_del(c->s);
    free(c);
}

/* Finish q with its response (err NULL) or an error; frees it. */
static void req_done(struct h2req *q, const struct dg_err *err)
{
    if (q->state == Q_DONE)
        return;
    if (q->state == Q_QUEUED)
        queue_remove(q->pool, q);
    req_detach(q);
    q->state = Q_DONE;
    if (q->cbs.on_done) {
        if (err) {
            q->cbs.on_done((struct dg_http_creq *)(void *)q, NULL, err, q->ud);
        } else {
            q->resp.body = (struct dg_str){q->body.data ? q->body.data : "", q->body.len};
            q->cbs.on_done((struct dg_http_creq *)(void *)q, &q->resp, NULL, q->ud);
        }
    }
    req_free(q);
}

static void req_fail(struct h2req *q, int code, const char *what, const char *detail)
{
    struct dg_err e;
    dg_err_set(&e, code, "%s %s:%d: %s", what, q->pool->host, q->pool->port, detail);
    req_done(q, &e);
}

static void req_timed_out(struct h2req *q)
{
    struct h2conn *c = q->conn;
    req_detach(q); /* first: sending the RST closes the stream, which must not fail q */
    if (c && !c->closed && q->stream_id > 0) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, q->stream_id, NGHTTP2_CANCEL);
        conn_flush(c);
    }
    req_fail(q, UV_ETIMEDOUT, "request to", "no complete response in time");
    /* a peer that reads nothing got not even the RST: its streams would never close */
    if (c && c->read_stopped && !c->closed)
        conn_close(c, UV_ETIMEDOUT, "request to", "the upstream reads nothing (writes stalled)");
}

/* The pool's request timer: every stream past its deadline fails; set again for the next. */
static void on_tl_timer(uv_timer_t *t)
{
    struct dg__h2pool *p = t->data;
    uint64_t now = uv_now(p->loop);
    while (p->tl_head && p->tl_head->deadline <= now && !p->closing) {
        struct h2req *q = p->tl_head;
        tl_remove(p, q);
        req_timed_out(q); /* callbacks may add or end others: the list is read again */
    }
    if (p->tl_head && !p->closing)
        uv_timer_start(&p->tl_timer, on_tl_timer, p->tl_head->deadline - now, 0);
}

static void tl_add(struct dg__h2pool *p, struct h2req *q)
{
    q->deadline = uv_now(p->loop) + p->opts.request_timeout_ms;
    q->timed = true;
    q->tl_prev = p->tl_tail;
    if (p->tl_tail)
        p->tl_tail->tl_next = q;
    else
        p->tl_head = q;
    p->tl_tail = q;
    if (!uv_is_active((uv_handle_t *)&p->tl_timer))
        uv_timer_start(&p->tl_timer, on_tl_timer, p->opts.request_timeout_ms, 0);
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    struct h2conn *c = h->data;
    struct dg__h2pool *p = c->pool;
    c->handles--;
    p->handles--;
    if (c->handles == 0 && c->writes == 0)
        conn_free(c);
    if (p->closing && p->handles == 0) {
        free(p->bearer);
        free(p);
    }
}

/* Close the connection and fail its requests ("WHAT HOST:PORT: DETAIL"). */
static void conn_close(struct h2conn *c, int code, const char *what, const char *detail)
{
    if (c->closed)
        return;
    c->closed = true;
    struct dg__h2pool *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    p->nconns--;
    pend_remove(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    for (struct h2slot *sl = c->slots; sl; sl = sl->next) {
        struct h2req *q = sl->q;
        if (!q)
            continue;
        req_detach(q);
        if (code == UV_EOF && q->got_bytes)
            req_fail(q, code, what, "upstream closed the connection mid-response");
        else
            req_fail(q, code, what, detail);
    }
    if (!p->closing)
        pool_dispatch(p);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct h2conn *c = t->data;
    if (c->dead) {
        conn_close(c, c->dead, c->connected ? "request to" : "connect to", uv_strerror(c->dead));
        return;
    }
    if (!c->connected) {
        conn_close(c, UV_ETIMEDOUT, "connect to", "timed out");
        return;
    }
    if (c->nstreams == 0) { /* idle too long: GOAWAY and close */
        nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
        conn_flush_now(c);
        conn_close(c, DG_E_CLOSED, "request to", "idle connection closed");
    }
}

/* Report a failure from the timer, outside the caller's stack. */
static void conn_kill(struct h2conn *c, int code)
{
    if (c->dead || c->closed)
        return;
    c->dead = code;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
}

static void on_conn_write(void *ctx, int status)
{
    struct h2conn *c = ctx;
    c->writes--;
    if (c->closed) {
        if (c->handles == 0 && c->writes == 0)
            conn_free(c);
        return;
    }
    if (status < 0) {
        conn_kill(c, status);
        return;
    }
    if (c->read_stopped && !c->dead &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= H2_WRITE_HIGH / 2) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, on_conn_read);
        conn_flush(c); /* what nghttp2 held back meanwhile */
    }
}

/* ---- writing: once per loop turn ------------------------------------------------------- */

/* Frames are not written where they are made (a request submitted, a body piece, a response
 * read): the connection goes on the pool's pending list and all of them are written once, when
 * this turn's callbacks are done (uv_check; uv_prepare for what was queued from timers, before
 * the poll could block). Many responses and requests of a turn go out in one write. */
static void pend_remove(struct h2conn *c)
{
    if (!c->pending)
        return;
    struct dg__h2pool *p = c->pool;
    if (c->pend_prev)
        c->pend_prev->pend_next = c->pend_next;
    else
        p->pend_head = c->pend_next;
    if (c->pend_next)
        c->pend_next->pend_prev = c->pend_prev;
    else
        p->pend_tail = c->pend_prev;
    c->pend_next = c->pend_prev = NULL;
    c->pending = false;
}

static void pool_flush_pending(struct dg__h2pool *p)
{
    while (p->pend_head) {
        struct h2conn *c = p->pend_head;
        pend_remove(c);
        conn_flush_now(c); /* may fail requests: their callbacks may queue more */
    }
    uv_prepare_stop(&p->prep);
    uv_check_stop(&p->check);
}

static void on_pool_prepare(uv_prepare_t *h)
{
    pool_flush_pending(h->data);
}

static void on_pool_check(uv_check_t *h)
{
    pool_flush_pending(h->data);
}

/* Write what nghttp2 has queued at the end of this loop turn. */
static void conn_flush(struct h2conn *c)
{
    if (c->closed || c->dead || c->pending)
        return;
    struct dg__h2pool *p = c->pool;
    if (p->closing)
        return;
    if (!p->pend_head) {
        uv_prepare_start(&p->prep, on_pool_prepare);
        uv_check_start(&p->check, on_pool_check);
    }
    c->pending = true;
    c->pend_prev = p->pend_tail;
    if (p->pend_tail)
        p->pend_tail->pend_next = c;
    else
        p->pend_head = c;
    p->pend_tail = c;
}

/* Write what nghttp2 has queued now (never from inside nghttp2's callbacks: then at the end of
 * the turn). */
static void conn_flush_now(struct h2conn *c)
{
    if (c->closed || c->dead || !c->connected)
        return;
    if (c->in_recv) {
        conn_flush(c);
        return;
    }
    pend_remove(c);
    struct dg_buf out = {0};
    /* a peer that does not read (or floods frames that want answers, PING, SETTINGS) fills
     * the socket: the rest stays in nghttp2 and reading stops until the writes drain (the
     * write callback flushes again) */
    for (;;) {
        ssize_t n = 0;
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= H2_WRITE_HIGH) {
            const uint8_t *data;
            n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                dg_buf_free(&out);
                conn_kill(c, DG_E_PROTO);
                return;
            }
            if (n > 0)
                dg_buf_append(&out, data, (size_t)n);
        }
        if (out.len && (n == 0 || out.len >= H2_SEND_BATCH)) {
            uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
            int rc = dg__http_write((uv_stream_t *)&c->tcp, &b, 1, on_conn_write, c);
            out.len = 0;
            if (rc == 0)
                c->writes++;
            else if (rc < 0) {
                conn_kill(c, rc);
                break;
            }
            continue; /* the socket may have taken it all: more fits */
        }
        if (n == 0)
            break;
    }
    dg_buf_free(&out);
    if (c->closed || c->dead)
        return;
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s)) {
        conn_close(c, UV_EOF, "request to", "the upstream ended the connection");
        return;
    }
    if (!c->read_stopped &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > H2_WRITE_HIGH) {
        c->read_stopped = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* A connection without streams: closed after GOAWAY or over max_idle, else idle-timed. */
static void conn_maybe_idle(struct h2conn *c)
{
    struct dg__h2pool *p = c->pool;
    if (c->closed || c->nstreams > 0 || !c->connected)
        return;
    if (c->goaway || p->closing) {
        conn_flush_now(c); /* what is queued for it (an RST, a SETTINGS ack) */
        if (!c->closed)
            conn_close(c, DG_E_CLOSED, "request to", "connection closed");
        return;
    }
    unsigned idle = 0;
    for (struct h2conn *o = p->conns; o; o = o->next)
        if (o->connected && o->nstreams == 0)
            idle++;
    if (idle > p->opts.max_idle) {
        nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
        conn_flush_now(c);
        conn_close(c, DG_E_CLOSED, "request to", "connection closed");
        return;
    }
    if (p->opts.idle_timeout_ms && !c->dead)
        uv_timer_start(&c->timer, on_conn_timer, p->opts.idle_timeout_ms, 0);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct h2conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct h2conn *c = st->data;
    if (c->closed || nread == 0)
        return;
    if (nread < 0) {
        conn_close(c, (int)nread, "request to",
                   nread == UV_EOF ? "upstream closed the connection before responding"
                                   : uv_strerror((int)nread));
        return;
    }
    if (!c->got_bytes) {
        c->got_bytes = true;
        /* never an HTTP/2 frame (a length of 0x485454 is over any frame size): an HTTP/1.x
         * server's answer to the preface */
        if (nread >= 5 && memcmp(buf->base, "HTTP/", 5) == 0) {
            for (struct h2slot *sl = c->slots; sl; sl = sl->next)
                if (sl->q) /* it read no request of ours */
                    sl->q->sent = false;
            conn_close(c, DG_E_PROTO, "request to",
                       "the upstream answered HTTP/1.x to the h2c preface: it does not speak "
                       "h2c (a function it serves needs upstream_protocol http1)");
            return;
        }
    }
    c->in_recv = true;
    ssize_t rc = nghttp2_session_mem_recv(c->s, (const uint8_t *)buf->base, (size_t)nread);
    c->in_recv = false;
    if (c->closed)
        return;
    if (rc < 0) {
        conn_close(c, DG_E_PROTO, "bad response from", nghttp2_strerror((int)rc));
        return;
    }
    /* what the read wants sent waits for the end of the turn, unless frames pile up (a peer
     * flooding PINGs: nghttp2 gives up past 1000 unsent acks; this meets H2_WRITE_HIGH first) */
    if (nghttp2_session_get_outbound_queue_size(c->s) >= H2_FLUSH_FRAMES)
        conn_flush_now(c);
    else
        conn_flush(c);
    if (!c->closed && c->goaway && c->nstreams == 0)
        conn_maybe_idle(c);
    if (!c->closed && !c->pool->closing)
        pool_dispatch(c->pool);
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static struct h2req *stream_req(nghttp2_session *s, int32_t id)
{
    struct h2slot *sl = id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
    return sl ? sl->q : NULL;
}

static ssize_t cb_send_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2req *q = stream_req(s, id);
    if (!q) { /* cancelled meanwhile: end the stream's body (an RST follows) */
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t avail = q->out.len - q->out_off;
    if (avail == 0 && !q->body_ended) {
        q->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = DG_MIN(avail, length);
    if (n)
        memcpy(buf, q->out.data + q->out_off, n);
    q->out_off += n;
    if (q->out_off == q->out.len) {
        q->out.len = 0;
        q->out_off = 0;
        if (q->body_ended)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static int cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2req *q = stream_req(s, f->hd.stream_id);
    if (q && f->hd.type == NGHTTP2_HEADERS) {
        q->got_bytes = true;
        if (q->head_done) {
            q->in_trailers = true;
            dg__hdrs_reset(&q->trailers);
        } else {
            dg__hdrs_reset(&q->hdrs);
            q->status = 0;
        }
    }
    return 0;
}

static int cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2req *q = stream_req(s, f->hd.stream_id);
    if (!q || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    q->header_bytes += namelen + valuelen + 32;
    if (q->header_bytes > q->pool->opts.max_header_bytes) {
        q->hdr_over = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset; fails below */
    }
    if (namelen && name[0] == ':') {
        if (!q->in_trailers && namelen == 7 && memcmp(name, ":status", 7) == 0) {
            int st = 0;
            for (size_t i = 0; i < valuelen && i < 3; i++)
                st = st * 10 + (value[i] - '0');
            q->status = st;
        }
        return 0;
    }
    struct dg__hdrs *h = q->in_trailers ? &q->trailers : &q->hdrs;
    if (!dg__hdrs_field(h, (const char *)name, namelen, H2_MAX_HEADERS)) {
        q->hdr_over = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    dg__hdrs_value(h, (const char *)value, valuelen);
    return 0;
}

static int cb_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct h2conn *c = ud;
    nghttp2_session_consume_connection(s, len);
    struct h2req *q = stream_req(s, id);
    if (!q) {
        nghttp2_session_consume_stream(s, id, len);
        return 0;
    }
    q->got_bytes = true;
    if (q->paused)
        q->unconsumed += len;
    else
        nghttp2_session_consume_stream(s, id, len);
    if (q->cbs.on_body) {
        q->cbs.on_body((struct dg_http_creq *)(void *)q, (const char *)data, len, q->ud);
        (void)c; /* q may be gone (cancelled): not touched after */
    } else {
        dg_buf_append(&q->body, data, len);
    }
    return 0;
}

/* The response ended (END_STREAM): trailers, then on_done. */
static void req_complete(struct h2conn *c, struct h2req *q)
{
    int32_t id = q->stream_id;
    if (q->in_trailers && q->trailers.n && q->cbs.on_trailers) {
        dg__hdrs_finish(&q->trailers);
        q->cbs.on_trailers((struct dg_http_creq *)(void *)q, q->trailers.views, q->trailers.n,
                           q->ud);
        if (stream_req(c->s, id) != q)
            return; /* cancelled from on_trailers */
    }
    bool body_open = !q->body_ended;
    req_done(q, NULL);
    if (body_open) /* answered before the request body ended: stop sending it */
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
}

static int cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2conn *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->settings = true;
        c->pool->peer_max =
            nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true; /* streams above last_stream_id close as REFUSED_STREAM */
        return 0;
    }
    struct h2req *q = stream_req(s, f->hd.stream_id);
    if (!q)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && !q->head_done) {
        if (q->status >= 100 && q->status < 200) {
            if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
                return 0; /* an interim response: wait for the real one */
        }
        dg__hdrs_finish(&q->hdrs);
        q->head_done = true;
        q->header_bytes = 0;
        q->resp.status = q->status;
        q->resp.headers = q->hdrs.views;
        q->resp.nheaders = q->hdrs.n;
        if (q->cbs.on_head) {
            q->cbs.on_head((struct dg_http_creq *)(void *)q, &q->resp, q->ud);
            if (stream_req(s, f->hd.stream_id) != q)
                return 0; /* cancelled from on_head */
        }
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        req_complete(c, q);
    return 0;
}

static int cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2req *q = stream_req(s, f->hd.stream_id);
    if (q && f->hd.type == NGHTTP2_HEADERS)
        q->sent = true;
    return 0;
}

/* The stream `sl` ended with `code` (nghttp2's error code): fail a request still on it. */
static void slot_closed(struct h2conn *c, struct h2slot *sl, uint32_t code)
{
    struct h2req *q = sl->q;
    slot_free(c, sl);
    if (q) {
        char detail[96];
        if (code == NGHTTP2_REFUSED_STREAM && !q->head_done) {
            q->sent = false; /* not processed (RFC 9113 §8.7): safe to retry */
            q->refused = true;
            snprintf(detail, sizeof(detail), "upstream refused the stream");
        } else if (q->hdr_over) {
            snprintf(detail, sizeof(detail),
                     "response header block over %zu bytes or %d fields (max_header_bytes)",
                     q->pool->opts.max_header_bytes, H2_MAX_HEADERS);
        } else if (code == NGHTTP2_NO_ERROR) {
            snprintf(detail, sizeof(detail), "upstream ended the stream without a response");
        } else {
            snprintf(detail, sizeof(detail), "upstream reset the stream (%s)",
                     nghttp2_http2_strerror(code));
        }
        req_fail(q, code == NGHTTP2_REFUSED_STREAM ? DG_E_CLOSED : DG_E_PROTO, "request to",
                 detail);
    }
    conn_maybe_idle(c);
}

static int cb_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct h2slot *sl = nghttp2_session_get_stream_user_data(s, id);
    if (sl)
        slot_closed(ud, sl, code);
    return 0;
}

/* A request's HEADERS never went out (a GOAWAY came first, or the stream was cancelled before
 * it opened): nghttp2 opened no stream, so no close callback comes for it. */
static int cb_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error, void *ud)
{
    struct h2conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || nghttp2_session_find_stream(s, f->hd.stream_id))
        return 0; /* a stream nghttp2 opened: its close callback follows */
    for (struct h2slot *sl = c->slots; sl; sl = sl->next)
        if (sl->id == f->hd.stream_id) {
            slot_closed(c, sl, NGHTTP2_REFUSED_STREAM);
            break;
        }
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
        nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, cb_not_send);
    }
    return cbs;
}

static void on_conn_connect(uv_connect_t *cr, int status)
{
    struct h2conn *c = cr->data;
    if (c->closed)
        return;
    if (status < 0) {
        conn_close(c, status, "connect to", uv_strerror(status));
        return;
    }
    c->connected = true;
    uv_timer_stop(&c->timer);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, on_conn_read);
    conn_flush(c);
    conn_maybe_idle(c);
}

static struct h2conn *conn_open(struct dg__h2pool *p)
{
    struct h2conn *c = dg_xmalloc(sizeof(*c));
    memset(c, 0, offsetof(struct h2conn, rbuf));
    c->pool = p;
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    nghttp2_session_client_new3(&c->s, h2_callbacks(), c, opt, dg__h2_mem());
    nghttp2_option_del(opt);
    if (p->first_id > 1)
        nghttp2_session_set_next_stream_id(c->s, p->first_id);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)p->opts.max_header_bytes},
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, DG_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    uv_tcp_init(p->loop, &c->tcp);
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    p->handles += 2;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    p->stats.connects++;
    c->connect_req.data = c;
    if (p->opts.connect_timeout_ms)
        uv_timer_start(&c->timer, on_conn_timer, p->opts.connect_timeout_ms, 0);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&p->addr, on_conn_connect);
    if (rc < 0)
        conn_kill(c, rc);
    return c;
}

/* Free stream slots of c (the peer's limit; before its SETTINGS, the limit the pool's other
 * connections saw, 100 at first). */
static unsigned conn_room(const struct h2conn *c)
{
    if (c->closed || c->dead || c->goaway)
        return 0;
    uint32_t max =
        c->settings
            ? nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
            : c->pool->peer_max;
    return max > c->nstreams ? max - c->nstreams : 0;
}

/* Open q's stream on c. */
static void stream_start(struct h2conn *c, struct h2req *q)
{
    struct dg__h2pool *p = c->pool;
    q->conn = c;
    q->state = Q_ASSIGNED;
    if (c->served) {
        p->stats.reused++;
        q->reused = true;
    }
    c->served = true;
    if (c->connected)
        uv_timer_stop(&c->timer); /* no longer idle */
    nghttp2_data_provider dp = {.source.ptr = q, .read_callback = cb_send_body};
    struct h2slot *sl = dg_xcalloc(1, sizeof(*sl));
    int32_t id = nghttp2_submit_request(c->s, NULL, q->nva, q->nnv, q->has_body ? &dp : NULL, sl);
    q->nnv = 0; /* nghttp2 copied the header block (nva and hstore stay for a reuse of q) */
    if (id < 0) {
        free(sl);
        req_fail(q, DG_E_PROTO, "request to", nghttp2_strerror(id));
        return;
    }
    sl->q = q;
    sl->id = id;
    sl->next = c->slots;
    if (c->slots)
        c->slots->prev = sl;
    c->slots = sl;
    q->slot = sl;
    q->stream_id = id;
    c->nstreams++;
    if (id > INT32_MAX - 2) /* the connection's last stream id: no more streams, closes when done */
        c->goaway = true;
    if (p->opts.request_timeout_ms)
        tl_add(p, q);
    conn_flush(c);
}

static void pool_dispatch(struct dg__h2pool *p)
{
    while (p->q_head && !p->closing) {
        struct h2conn *c = NULL;
        for (struct h2conn *o = p->conns; o; o = o->next)
            if (conn_room(o) > 0) {
                c = o;
                break;
            }
        if (!c) {
            if (p->opts.max_conns && p->nconns >= p->opts.max_conns)
                return;
            c = conn_open(p);
        }
        struct h2req *q = p->q_head;
        queue_remove(p, q);
        stream_start(c, q);
    }
}

/* ---- pool ------------------------------------------------------------------------------------ */

struct dg__h2pool *dg__h2_pool_new(uv_loop_t *loop, const struct sockaddr_storage *addr,
                                   const char *host, int port, const struct dg_http_pool_opts *opts)
{
    struct dg__h2pool *p = dg_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->addr = *addr;
    p->port = port;
    snprintf(p->host, sizeof(p->host), "%s", host);
    if (strchr(host, ':'))
        snprintf(p->authority, sizeof(p->authority), "[%s]:%d", host, port);
    else
        snprintf(p->authority, sizeof(p->authority), "%s:%d", host, port);
    p->opts = *opts;
    p->opts.bearer = NULL;
    p->peer_max = 100;
    uv_prepare_init(loop, &p->prep);
    uv_check_init(loop, &p->check);
    uv_timer_init(loop, &p->tl_timer);
    p->prep.data = p->check.data = p->tl_timer.data = p;
    p->handles += 3;
    if (!p->opts.max_header_bytes)
        p->opts.max_header_bytes = 64 * 1024;
    dg__h2_pool_set_bearer(p, opts->bearer);
    return p;
}

void dg__h2_pool_set_bearer(struct dg__h2pool *p, const char *bearer)
{
    free(p->bearer);
    p->bearer = bearer ? dg_xasprintf("Bearer %s", bearer) : NULL;
}

void dg__h2_pool_test_first_stream_id(struct dg__h2pool *p, int32_t id)
{
    p->first_id = id;
}

void dg__h2_pool_stats(const struct dg__h2pool *p, dg__pool_stats *out)
{
    *out = p->stats;
    out->idle = out->busy = 0;
    for (const struct h2conn *c = p->conns; c; c = c->next) {
        if (c->nstreams)
            out->busy++;
        else
            out->idle++;
    }
    out->queued = p->nqueued;
}

void dg__h2_pool_close(struct dg__h2pool *p)
{
    if (p->closing)
        return;
    p->closing = true;
    while (p->nspare)
        req_release(p->spare[--p->nspare]);
    struct dg_err e;
    dg_err_set(&e, DG_E_CLOSED, "request to %s:%d: the client pool was closed", p->host, p->port);
    while (p->q_head)
        req_done(p->q_head, &e);
    while (p->conns) {
        struct h2conn *c = p->conns;
        for (struct h2slot *sl = c->slots; sl; sl = sl->next)
            if (sl->q)
                req_done(sl->q, &e);
        if (c->connected && !c->closed) {
            nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
            conn_flush_now(c);
        }
        conn_close(c, DG_E_CLOSED, "request to", "the client pool was closed");
    }
    uv_close((uv_handle_t *)&p->prep, pool_handle_closed);
    uv_close((uv_handle_t *)&p->check, pool_handle_closed);
    uv_close((uv_handle_t *)&p->tl_timer, pool_handle_closed);
}

/* ---- requests: the public side ----------------------------------------------------------- */

/* Connection-specific fields have no place in HTTP/2 (RFC 9113 §8.2.2). */
static bool h2_skip(struct dg_str n, struct dg_str v)
{
    static const char *const names[] = {"connection",    "keep-alive",        "proxy-connection",
                                        "upgrade",       "transfer-encoding", "host",
                                        "content-length"};
    for (size_t i = 0; i < DG_ARRAY_LEN(names); i++)
        if (dg_str_caseeq(n, names[i]))
            return true;
    return dg_str_caseeq(n, "te") && !dg_str_caseeq(v, "trailers");
}

struct nv_off {
    size_t name, nlen, value, vlen;
};

static void nv_add(struct dg_buf *store, struct nv_off *o, const char *n, size_t nl, const char *v,
                   size_t vl, bool lower)
{
    o->name = store->len;
    o->nlen = nl;
    dg_buf_append(store, n, nl);
    if (lower)
        for (size_t i = 0; i < nl; i++) {
            char ch = store->data[o->name + i];
            if (ch >= 'A' && ch <= 'Z')
                store->data[o->name + i] = (char)(ch - 'A' + 'a');
        }
    o->value = store->len;
    o->vlen = vl;
    dg_buf_append(store, v, vl);
}

struct dg_http_creq *dg__h2_request(struct dg__h2pool *p, const char *method, const char *path,
                                    const struct dg_http_header *hdrs, size_t nhdrs,
                                    const void *body, size_t len, bool streaming,
                                    int64_t content_length, const struct dg_http_client_cbs *cbs,
                                    void *ud)
{
    struct h2req *q = req_new(p);
    q->tag.h2 = true;
    q->pool = p;
    q->cbs = *cbs;
    q->ud = ud;
    struct nv_off stack[40];
    struct nv_off *offs =
        nhdrs + 6 > DG_ARRAY_LEN(stack) ? dg_xmalloc((nhdrs + 6) * sizeof(*offs)) : stack;
    size_t n = 0;
    struct dg_str authority = dg_str_c(p->authority);
    bool has_auth = false;
    size_t method_len = strlen(method), path_len = strlen(path);
    size_t total = 7 + method_len + 7 + 4 + 10 + 5 + path_len + 14 + 20;
    for (size_t i = 0; i < nhdrs; i++) {
        total += hdrs[i].name.len + hdrs[i].value.len;
        if (dg_str_caseeq(hdrs[i].name, "host"))
            authority = hdrs[i].value;
        if (dg_str_caseeq(hdrs[i].name, "authorization"))
            has_auth = true;
    }
    total += authority.len + (p->bearer ? 13 + strlen(p->bearer) : 0);
    dg_buf_reserve(&q->hstore, total); /* one allocation: the nva point into it */
    nv_add(&q->hstore, &offs[n++], ":method", 7, method, method_len, false);
    nv_add(&q->hstore, &offs[n++], ":scheme", 7, "http", 4, false);
    nv_add(&q->hstore, &offs[n++], ":authority", 10, authority.ptr, authority.len, false);
    nv_add(&q->hstore, &offs[n++], ":path", 5, path, path_len, false);
    for (size_t i = 0; i < nhdrs; i++)
        if (!h2_skip(hdrs[i].name, hdrs[i].value))
            nv_add(&q->hstore, &offs[n++], hdrs[i].name.ptr, hdrs[i].name.len, hdrs[i].value.ptr,
                   hdrs[i].value.len, true);
    if (p->bearer && !has_auth)
        nv_add(&q->hstore, &offs[n++], "authorization", 13, p->bearer, strlen(p->bearer), false);
    int64_t cl = streaming ? content_length : (int64_t)len;
    char num[24];
    if (cl >= 0 && (cl > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)) {
        size_t nl = dg_fmt_u64(num, (uint64_t)cl);
        nv_add(&q->hstore, &offs[n++], "content-length", 14, num, nl, false);
    }
    if (q->nva_cap < n) {
        free(q->nva);
        q->nva_cap = DG_MAX(n, (size_t)16);
        q->nva = dg_xmalloc(q->nva_cap * sizeof(*q->nva));
    }
    for (size_t i = 0; i < n; i++)
        q->nva[i] = (nghttp2_nv){(uint8_t *)q->hstore.data + offs[i].name,
                                 (uint8_t *)q->hstore.data + offs[i].value, offs[i].nlen,
                                 offs[i].vlen, NGHTTP2_NV_FLAG_NONE};
    q->nnv = n;
    if (offs != stack)
        free(offs);
    if (streaming) {
        q->has_body = content_length != 0;
    } else {
        q->has_body = len > 0;
        q->body_ended = true;
        if (len)
            dg_buf_append(&q->out, body, len);
    }
    q->state = Q_QUEUED;
    if (p->closing) {
        req_fail(q, DG_E_CLOSED, "request to", "the client pool is closing");
        return NULL;
    }
    q->prev = p->q_tail;
    if (p->q_tail)
        p->q_tail->next = q;
    else
        p->q_head = q;
    p->q_tail = q;
    p->nqueued++;
    /* a stream fails only from the loop (connect, write errors go through the timer), or
     * synchronously when nghttp2 refuses the header block */
    bool alive = true;
    q->alive = &alive; /* cppcheck-suppress autoVariables ; reset before returning */
    pool_dispatch(p);
    if (!alive)
        return NULL;
    q->alive = NULL;
    return (struct dg_http_creq *)(void *)q;
}

static void req_kick(struct h2req *q)
{
    struct h2conn *c = q->conn;
    if (!c || c->closed || q->stream_id <= 0)
        return;
    if (q->deferred) {
        q->deferred = false;
        nghttp2_session_resume_data(c->s, q->stream_id);
    }
    conn_flush(c);
}

void dg__h2_creq_write(struct dg_http_creq *cq, const void *data, size_t len)
{
    struct h2req *q = req_of(cq);
    if (!len || q->body_ended || q->state == Q_DONE)
        return;
    dg_buf_append(&q->out, data, len);
    req_kick(q);
}

void dg__h2_creq_end(struct dg_http_creq *cq)
{
    struct h2req *q = req_of(cq);
    if (q->body_ended || q->state == Q_DONE)
        return;
    q->body_ended = true;
    req_kick(q);
}

bool dg__h2_creq_sent(const struct dg_http_creq *cq)
{
    return ((const struct h2req *)(const void *)cq)->sent;
}

bool dg__h2_creq_stale(const struct dg_http_creq *cq)
{
    return ((const struct h2req *)(const void *)cq)->refused;
}

void dg__h2_creq_pause(struct dg_http_creq *cq)
{
    req_of(cq)->paused = true;
}

void dg__h2_creq_resume(struct dg_http_creq *cq)
{
    struct h2req *q = req_of(cq);
    if (!q->paused)
        return;
    q->paused = false;
    struct h2conn *c = q->conn;
    if (c && !c->closed && q->stream_id > 0 && q->unconsumed) {
        nghttp2_session_consume_stream(c->s, q->stream_id, q->unconsumed);
        q->unconsumed = 0;
        conn_flush(c);
    }
}

void dg__h2_creq_cancel(struct dg_http_creq *cq)
{
    struct h2req *q = req_of(cq);
    if (q->state == Q_DONE)
        return;
    if (q->state == Q_QUEUED) {
        queue_remove(q->pool, q);
    } else if (q->conn) {
        struct h2conn *c = q->conn;
        int32_t id = q->stream_id;
        req_detach(q);
        if (!c->closed && id > 0) {
            nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
            conn_flush(c);
        }
    }
    q->state = Q_DONE;
    req_free(q);
}
