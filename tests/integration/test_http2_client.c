/*
 * test_http2_client.c: the client pool with opts.h2c against a real HTTP/2 server on the same
 * loop (a small nghttp2 server written here, so that a test can make it refuse, reset, send
 * GOAWAY, die mid-stream or hold a stream), and against an HTTP/1.1-only dg_http_server:
 * streams multiplexed on one connection, queueing over the peer's concurrent-stream limit,
 * large bodies both ways with flow control (pause/resume), trailers, cancel as RST_STREAM
 * CANCEL, refused streams as not sent, connect refused, the request timeout, and trailers of
 * a chunked HTTP/1.1 response. Last, against the real dirigent-fn (its own nghttp2 server):
 * many streams on one connection and a gRPC faas.Executor/Execute call with its trailers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dirigent/faas_pb.h"
#include "dirigent/http.h"
#include "testlib.h"

static uv_loop_t loop;

/* ---- the test server --------------------------------------------------------------------- */

#define BIG_LEN (2u * 1024 * 1024)

struct sconn;
struct sstream {
    struct sconn *c;
    int32_t id;
    char path[64];
    struct dg_buf body, resp;
    size_t off;
    bool trailers;
    struct sstream *next;            /* held streams */
    struct sstream *a_next, *a_prev; /* all streams (freed at teardown if still open) */
};
static struct sstream *all_streams;
struct sconn {
    struct sconn *next; /* all connections of the test server */
    uv_tcp_t tcp;
    nghttp2_session *s;
    bool closed, in_recv;
    char rbuf[16384];
};

static uv_tcp_t listener;
static struct sconn *sconns;
static int h2port;
static struct {
    unsigned max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS; 0: 100 */
    unsigned accepted, open, peak, barrier;
    uint32_t last_rst; /* error code of the last RST_STREAM the client sent */
    unsigned rsts;
    uint64_t body_bytes;
    struct sstream *held;
    char last_authority[64], last_te[32], last_auth[64];
} S;

static void sconn_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;
    for (struct sconn **pp = &sconns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    nghttp2_session_del(c->s);
    free(c);
}

static void sconn_close(struct sconn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    uv_close((uv_handle_t *)&c->tcp, sconn_closed);
}

struct swrite {
    uv_write_t w;
    char data[];
};
static void swrite_done(uv_write_t *w, int status)
{
    free(w);
}

static void sconn_flush(struct sconn *c)
{
    if (c->closed || c->in_recv)
        return;
    struct dg_buf out = {0};
    const uint8_t *d;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->s, &d)) > 0)
        dg_buf_append(&out, d, (size_t)n);
    if (out.len) {
        struct swrite *w = malloc(sizeof(*w) + out.len);
        memcpy(w->data, out.data, out.len);
        uv_buf_t b = uv_buf_init(w->data, (unsigned)out.len);
        if (uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, swrite_done) < 0)
            free(w);
    }
    dg_buf_free(&out);
    if (n < 0 || (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s)))
        sconn_close(c);
}

static ssize_t s_read_resp(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct sstream *st = src->ptr;
    size_t n = DG_MIN(len, st->resp.len - st->off);
    memcpy(buf, st->resp.data + st->off, n);
    st->off += n;
    if (st->off == st->resp.len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_nv t[] = {
                {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0},
                {(uint8_t *)"grpc-message", (uint8_t *)"fine", 12, 4, 0},
            };
            nghttp2_submit_trailer(s, id, t, 2);
        }
    }
    return (ssize_t)n;
}

static void s_respond(struct sstream *st, const char *status, const char *body, size_t len)
{
    if (body)
        dg_buf_append(&st->resp, body, len);
    nghttp2_nv h[] = {{(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0},
                      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0}};
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = s_read_resp};
    nghttp2_submit_response(st->c->s, st->id, h, st->trailers ? 2 : 1, &dp);
}

/* The request of `st` is complete (or its headers are in, for the paths that act then). */
static void s_handle(struct sstream *st)
{
    struct sconn *c = st->c;
    const char *p = st->path;
    if (!strcmp(p, "/hello")) {
        s_respond(st, "200", "hello", 5);
    } else if (!strcmp(p, "/echo")) {
        s_respond(st, "200", st->body.data, st->body.len);
    } else if (!strcmp(p, "/big")) {
        dg_buf_reserve(&st->resp, BIG_LEN);
        for (size_t i = 0; i < BIG_LEN; i++)
            st->resp.data[i] = (char)('a' + i % 26);
        st->resp.len = BIG_LEN;
        s_respond(st, "200", NULL, 0);
    } else if (!strcmp(p, "/trailers")) {
        st->trailers = true;
        s_respond(st, "200", "abc", 3);
    } else if (!strcmp(p, "/rst")) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    } else if (!strcmp(p, "/refuse")) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
    } else if (!strcmp(p, "/goaway")) {
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, st->id - 2, NGHTTP2_NO_ERROR, NULL, 0);
    } else if (!strcmp(p, "/die")) {
        nghttp2_nv h[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
        nghttp2_submit_headers(c->s, NGHTTP2_FLAG_NONE, st->id, NULL, h, 1, NULL);
        c->in_recv = false;
        sconn_flush(c);
        c->in_recv = true;
        sconn_close(c);
    } else if (!strcmp(p, "/barrier")) { /* held until S.barrier of them are open at once */
        st->next = S.held;
        S.held = st;
        unsigned n = 0;
        for (struct sstream *h = S.held; h; h = h->next)
            n++;
        if (n >= S.barrier) {
            while (S.held) {
                struct sstream *h = S.held;
                S.held = h->next;
                s_respond(h, "200", "ok", 2);
            }
            for (struct sconn *o = sconns; o; o = o->next)
                sconn_flush(o); /* not the one reading now: it flushes after */
        }
    } /* "/hold": never answered */
}

static int s_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct sstream *st = calloc(1, sizeof(*st));
    st->c = ud;
    st->id = f->hd.stream_id;
    st->a_next = all_streams;
    if (all_streams)
        all_streams->a_prev = st;
    all_streams = st;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    if (++S.open > S.peak)
        S.peak = S.open;
    return 0;
}

static void copy_val(char *dst, size_t cap, const uint8_t *v, size_t vl)
{
    snprintf(dst, cap, "%.*s", (int)vl, (const char *)v);
}

static int s_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                    const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    struct sstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return 0;
    if (nl == 5 && !memcmp(n, ":path", 5))
        copy_val(st->path, sizeof(st->path), v, vl);
    if (nl == 10 && !memcmp(n, ":authority", 10))
        copy_val(S.last_authority, sizeof(S.last_authority), v, vl);
    if (nl == 2 && !memcmp(n, "te", 2))
        copy_val(S.last_te, sizeof(S.last_te), v, vl);
    if (nl == 13 && !memcmp(n, "authorization", 13))
        copy_val(S.last_auth, sizeof(S.last_auth), v, vl);
    return 0;
}

static int s_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
                  void *ud)
{
    struct sstream *st = nghttp2_session_get_stream_user_data(s, id);
    S.body_bytes += len;
    if (st)
        dg_buf_append(&st->body, d, len);
    return 0;
}

static int s_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        S.last_rst = f->rst_stream.error_code;
        S.rsts++;
        return 0;
    }
    struct sstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && end)
        s_handle(st);
    else if (f->hd.type == NGHTTP2_HEADERS && !strcmp(st->path, "/hold"))
        s_handle(st);
    return 0;
}

static void sstream_free(struct sstream *st)
{
    if (st->a_prev)
        st->a_prev->a_next = st->a_next;
    else
        all_streams = st->a_next;
    if (st->a_next)
        st->a_next->a_prev = st->a_prev;
    dg_buf_free(&st->body);
    dg_buf_free(&st->resp);
    free(st);
}

static int s_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct sstream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    for (struct sstream **pp = &S.held; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    S.open--;
    sstream_free(st);
    return 0;
}

static void s_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct sconn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void s_read(uv_stream_t *t, ssize_t n, const uv_buf_t *b)
{
    struct sconn *c = t->data;
    if (c->closed || n == 0)
        return;
    if (n < 0) {
        sconn_close(c);
        return;
    }
    c->in_recv = true;
    ssize_t rc = nghttp2_session_mem_recv(c->s, (const uint8_t *)b->base, (size_t)n);
    c->in_recv = false;
    if (rc < 0)
        sconn_close(c);
    else
        sconn_flush(c);
}

static void s_accept(uv_stream_t *l, int status)
{
    struct sconn *c = calloc(1, sizeof(*c));
    c->next = sconns;
    sconns = c;
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    uv_accept(l, (uv_stream_t *)&c->tcp);
    S.accepted++;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, s_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, s_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_stream_close);
    nghttp2_session_server_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, S.max_streams ? S.max_streams : 100}};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
    sconn_flush(c);
    uv_read_start((uv_stream_t *)&c->tcp, s_alloc, s_read);
}

/* ---- an HTTP/1.1-only server ---------------------------------------------------------------- */

static struct dg_http_server *h1srv;
static int h1port;

static void h_hello(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "hello", 5);
}

/* A raw HTTP/1.1 upstream answering every read with a chunked response with a trailer. */
static uv_tcp_t rawl;
static int rawport;
static const char raw_resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n";
static char raw_buf[4096];
static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    *b = uv_buf_init(raw_buf, sizeof(raw_buf));
}
static void raw_closed(uv_handle_t *h)
{
    free(h);
}
static void raw_read(uv_stream_t *t, ssize_t n, const uv_buf_t *b)
{
    if (n < 0) {
        uv_close((uv_handle_t *)t, raw_closed);
        return;
    }
    if (n > 0) {
        uv_buf_t out = uv_buf_init((char *)raw_resp, sizeof(raw_resp) - 1);
        uv_try_write(t, &out, 1);
    }
}
static void raw_accept(uv_stream_t *l, int status)
{
    uv_tcp_t *c = calloc(1, sizeof(*c));
    uv_tcp_init(&loop, c);
    uv_accept(l, (uv_stream_t *)c);
    uv_read_start((uv_stream_t *)c, raw_alloc, raw_read);
}

static int listen_on(uv_tcp_t *t, uv_connection_cb cb)
{
    uv_tcp_init(&loop, t);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(t, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)t, 64, cb), 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(t, (struct sockaddr *)&sa, &len);
    return ntohs(sa.sin_port);
}

static int setup(void **state)
{
    memset(&S, 0, sizeof(S));
    uv_loop_init(&loop);
    h2port = listen_on(&listener, s_accept);
    rawport = listen_on(&rawl, raw_accept);
    h1srv = dg_http_server_new(&loop, NULL, "h1");
    dg_http_route(h1srv, "GET", "/hello", h_hello, NULL, 0);
    struct dg_err err = {0};
    assert_int_equal(dg_http_server_listen(h1srv, "127.0.0.1", 0, &err), 0);
    h1port = dg_http_server_port(h1srv);
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TCP && !uv_is_closing(h) && !h->data && h != (uv_handle_t *)&listener &&
        h != (uv_handle_t *)&rawl) /* the raw server's connections */
        uv_close(h, raw_closed);
}

static int teardown(void **state)
{
    dg_http_server_close(h1srv, 0, NULL, NULL);
    /* the test server's connections: everything still open is closed */
    bool never = false;
    tl_run_until(&loop, &never, 20);
    for (struct sconn *c = sconns; c; c = c->next)
        sconn_close(c);
    uv_walk(&loop, close_walk, NULL);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_close((uv_handle_t *)&rawl, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&loop); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    while (all_streams)
        sstream_free(all_streams);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* ---- a request recorder ------------------------------------------------------------------- */

struct result {
    bool done, head;
    int status;
    int err_code;
    char err_msg[256];
    struct dg_buf body;
    char trailers[128];
    unsigned ntrailers;
    bool pause_first; /* pause at the first piece of body */
    struct dg_http_creq *q;
    bool sent, stale;
};

static void r_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct result *r = ud;
    r->head = true;
    r->status = resp->status;
}

static void r_body(struct dg_http_creq *q, const char *d, size_t n, void *ud)
{
    struct result *r = ud;
    dg_buf_append(&r->body, d, n);
    if (r->pause_first) {
        r->pause_first = false;
        dg_http_creq_pause(q);
    }
}

static void r_trailers(struct dg_http_creq *q, const struct dg_http_header *t, size_t n, void *ud)
{
    struct result *r = ud;
    r->ntrailers = (unsigned)n;
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof(r->trailers); i++)
        off += (size_t)snprintf(r->trailers + off, sizeof(r->trailers) - off, "%.*s=%.*s;",
                                (int)t[i].name.len, t[i].name.ptr, (int)t[i].value.len,
                                t[i].value.ptr);
}

static void r_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                   const struct dg_err *err, void *ud)
{
    struct result *r = ud;
    r->done = true;
    r->sent = dg_http_creq_sent(q);
    r->stale = dg_http_creq_stale(q);
    if (resp) {
        r->status = resp->status;
        if (resp->body.len)
            dg_buf_append(&r->body, resp->body.ptr, resp->body.len);
    } else {
        r->err_code = err->code;
        snprintf(r->err_msg, sizeof(r->err_msg), "%s", err->msg);
    }
}

static const struct dg_http_client_cbs buffered = {.on_trailers = r_trailers, .on_done = r_done};
static const struct dg_http_client_cbs streamed = {
    .on_head = r_head, .on_body = r_body, .on_trailers = r_trailers, .on_done = r_done};

static struct dg_http_pool *h2pool(int to_port, unsigned max_conns)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.h2c = true;
    o.max_conns = max_conns;
    o.bearer = "tok";
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new(&loop, "127.0.0.1", to_port, &o, &err);
    assert_non_null(p);
    return p;
}

static void run_get(struct dg_http_pool *p, const char *path, struct result *r)
{
    memset(r, 0, sizeof(*r));
    r->q = dg_http_request(p, "GET", path, NULL, 0, NULL, 0, &buffered, r);
    assert_true(tl_run_until(&loop, &r->done, 5000));
}

static void close_pool(struct dg_http_pool *p)
{
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- cases -------------------------------------------------------------------------------- */

static void test_get_and_reuse(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r;
    for (int i = 0; i < 3; i++) {
        run_get(p, "/hello", &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, 5);
        assert_memory_equal(r.body.data, "hello", 5);
        dg_buf_free(&r.body);
    }
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d", h2port);
    assert_string_equal(S.last_authority, want);
    assert_string_equal(S.last_auth, "Bearer tok");
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(ps.reused, 2);
    assert_int_equal(ps.idle, 1);
    assert_int_equal(S.accepted, 1);
    close_pool(p);
}

static void test_many_streams_one_conn(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 1);
    enum { N = 40 };
    S.barrier = N; /* the server answers none until all 40 are open at once */
    struct result r[N];
    memset(r, 0, sizeof(r));
    struct dg_http_header host = {DG_STR("Host"), DG_STR("fn-a")};
    for (int i = 0; i < N; i++)
        assert_non_null(dg_http_request(p, "GET", "/barrier", &host, 1, NULL, 0, &buffered, &r[i]));
    for (int i = 0; i < N; i++) {
        assert_true(tl_run_until(&loop, &r[i].done, 5000));
        assert_int_equal(r[i].status, 200);
        dg_buf_free(&r[i].body);
    }
    assert_int_equal(S.accepted, 1);
    assert_int_equal(S.peak, N);
    assert_string_equal(S.last_authority, "fn-a"); /* Host becomes :authority */
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(ps.reused, N - 1);
    close_pool(p);
}

static void test_peer_stream_limit(void **state)
{
    /* the server allows 3 streams per connection; the pool may open 2 connections: 6 run at
     * once, the rest wait in the FIFO */
    S.max_streams = 3;
    S.barrier = 6;
    struct dg_http_pool *p = h2pool(h2port, 2);
    struct result first;
    run_get(p, "/hello", &first); /* learn the peer's SETTINGS */
    dg_buf_free(&first.body);
    enum { N = 12 };
    struct result r[N];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++)
        dg_http_request(p, "GET", "/barrier", NULL, 0, NULL, 0, &buffered, &r[i]);
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_true(ps.queued >= N - 6);
    for (int i = 0; i < N; i++) {
        assert_true(tl_run_until(&loop, &r[i].done, 5000));
        assert_int_equal(r[i].status, 200);
        dg_buf_free(&r[i].body);
    }
    assert_int_equal(S.accepted, 2);
    assert_int_equal(S.peak, 6);
    close_pool(p);
}

static void test_large_bodies_flow_control(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    /* a 1 MiB request body, streamed in 64 KiB pieces with an unknown length */
    struct result r = {0};
    r.q = dg_http_request_stream(p, "POST", "/echo", NULL, 0, -1, &streamed, &r);
    assert_non_null(r.q);
    char piece[65536];
    for (int i = 0; i < 16; i++) {
        memset(piece, 'A' + i, sizeof(piece));
        dg_http_creq_write(r.q, piece, sizeof(piece));
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    dg_http_creq_end(r.q);
    assert_true(tl_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 16 * 65536);
    for (int i = 0; i < 16; i++)
        assert_int_equal(r.body.data[i * 65536 + 7], 'A' + i);
    dg_buf_free(&r.body);

    /* a 2 MiB response, paused at its first piece: the server stops at the stream window */
    memset(&r, 0, sizeof(r));
    r.pause_first = true;
    r.q = dg_http_request(p, "GET", "/big", NULL, 0, NULL, 0, &streamed, &r);
    bool never = false;
    size_t seen = 0;
    for (int i = 0; i < 50; i++) { /* until nothing more comes */
        tl_run_until(&loop, &never, 20);
        if (i > 5 && r.body.len == seen)
            break;
        seen = r.body.len;
    }
    assert_false(r.done);
    assert_true(r.body.len < BIG_LEN);
    assert_true(r.body.len <= 256 * 1024 + 16384);
    dg_http_creq_resume(r.q);
    assert_true(tl_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i += 4099)
        assert_int_equal(r.body.data[i], 'a' + i % 26);
    dg_buf_free(&r.body);
    close_pool(p);
}

static void test_trailers(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r = {0};
    struct dg_http_header h[] = {{DG_STR("Content-Type"), DG_STR("application/grpc")},
                                 {DG_STR("TE"), DG_STR("trailers")},
                                 {DG_STR("Connection"), DG_STR("keep-alive")}};
    r.q = dg_http_request(p, "POST", "/trailers", h, 3, "\0\0\0\0\0", 5, &streamed, &r);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 3);
    assert_int_equal(r.ntrailers, 2);
    assert_string_equal(r.trailers, "grpc-status=0;grpc-message=fine;");
    assert_string_equal(S.last_te, "trailers"); /* te: trailers passes, Connection does not */
    dg_buf_free(&r.body);
    close_pool(p);
}

static void test_rst_and_refused(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r;
    run_get(p, "/rst", &r);
    assert_int_equal(r.err_code, DG_E_PROTO);
    assert_non_null(strstr(r.err_msg, "upstream reset the stream"));
    assert_true(r.sent);
    assert_false(r.stale);
    /* refused: not processed, so not sent and stale (a caller may retry it) */
    run_get(p, "/refuse", &r);
    assert_non_null(strstr(r.err_msg, "upstream refused the stream"));
    assert_false(r.sent);
    assert_true(r.stale);
    /* the connection survives both */
    run_get(p, "/hello", &r);
    assert_int_equal(r.status, 200);
    dg_buf_free(&r.body);
    assert_int_equal(S.accepted, 1);
    close_pool(p);
}

static void test_goaway(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result a;
    run_get(p, "/hello", &a); /* stream 1 */
    dg_buf_free(&a.body);
    /* stream 3 gets GOAWAY(last_stream_id = 1): refused, not sent */
    struct result r;
    run_get(p, "/goaway", &r);
    assert_non_null(strstr(r.err_msg, "refused"));
    assert_false(r.sent);
    assert_true(r.stale);
    /* the next request goes on a new connection */
    run_get(p, "/hello", &a);
    assert_int_equal(a.status, 200);
    dg_buf_free(&a.body);
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 2);
    close_pool(p);
}

static void test_server_dies_mid_stream(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r = {0};
    r.q = dg_http_request(p, "GET", "/die", NULL, 0, NULL, 0, &streamed, &r);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_true(r.head); /* the head came, then the connection died */
    assert_int_equal(r.err_code, UV_EOF);
    assert_non_null(strstr(r.err_msg, "mid-response"));
    /* the pool recovers */
    run_get(p, "/hello", &r);
    assert_int_equal(r.status, 200);
    dg_buf_free(&r.body);
    close_pool(p);
}

static void test_cancel_and_timeout(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r = {0};
    r.q = dg_http_request(p, "GET", "/hold", NULL, 0, NULL, 0, &buffered, &r);
    bool never = false;
    for (int i = 0; i < 200 && S.open == 0; i++)
        tl_run_until(&loop, &never, 10);
    assert_int_equal(S.open, 1);
    dg_http_creq_cancel(r.q);
    for (int i = 0; i < 200 && S.rsts == 0; i++)
        tl_run_until(&loop, &never, 10);
    assert_int_equal(S.rsts, 1);
    assert_int_equal(S.last_rst, NGHTTP2_CANCEL);
    assert_false(r.done); /* cancel: no on_done */
    close_pool(p);

    /* the request timeout resets the stream too */
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.h2c = true;
    o.request_timeout_ms = 100;
    struct dg_err err = {0};
    p = dg_http_pool_new(&loop, "127.0.0.1", h2port, &o, &err);
    run_get(p, "/hold", &r);
    assert_int_equal(r.err_code, UV_ETIMEDOUT);
    assert_non_null(strstr(r.err_msg, "no complete response in time"));
    for (int i = 0; i < 200 && S.rsts < 2; i++)
        tl_run_until(&loop, &never, 10);
    assert_int_equal(S.rsts, 2);
    close_pool(p);
}

static void test_pool_close_fails_streams(void **state)
{
    struct dg_http_pool *p = h2pool(h2port, 4);
    struct result r = {0};
    r.q = dg_http_request(p, "GET", "/hold", NULL, 0, NULL, 0, &buffered, &r);
    bool never = false;
    for (int i = 0; i < 200 && S.open == 0; i++)
        tl_run_until(&loop, &never, 10);
    dg_http_pool_close(p);
    assert_true(r.done);
    assert_int_equal(r.err_code, DG_E_CLOSED);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_connect_refused(void **state)
{
    uv_tcp_t t;
    uv_tcp_init(&loop, &t);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&t, (struct sockaddr *)&sa, 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(&t, (struct sockaddr *)&sa, &len);
    int dead = ntohs(sa.sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    struct dg_http_pool *p = h2pool(dead, 4);
    struct result r[3];
    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        dg_http_request(p, "GET", "/x", NULL, 0, NULL, 0, &buffered, &r[i]);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(tl_run_until(&loop, &r[i].done, 5000));
        assert_int_equal(r[i].err_code, UV_ECONNREFUSED);
        assert_non_null(strstr(r[i].err_msg, "connect to 127.0.0.1:"));
        assert_false(r[i].sent);
    }
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1); /* the three waited on one connect */
    close_pool(p);
}

static void test_http1_only_upstream(void **state)
{
    /* an h2c pool to a server without HTTP/2: a clear error, no crash */
    struct dg_http_pool *p = h2pool(h1port, 4);
    struct result r;
    run_get(p, "/hello", &r);
    assert_int_not_equal(r.err_code, 0);
    assert_non_null(strstr(r.err_msg, "127.0.0.1:"));
    close_pool(p);
}

static void test_http1_chunked_trailers(void **state)
{
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new(&loop, "127.0.0.1", rawport, NULL, &err);
    struct result r = {0};
    r.q = dg_http_request(p, "GET", "/trailers", NULL, 0, NULL, 0, &streamed, &r);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 3);
    assert_int_equal(r.ntrailers, 1);
    assert_string_equal(r.trailers, "grpc-status=0;");
    dg_buf_free(&r.body);
    close_pool(p);
}

/* dirigent-fn from the build directory on an ephemeral port; its pid, port in *port */
static pid_t fn_start(int *port, char *logpath)
{
    const char *bd = getenv("DG_BUILD_DIR");
    char exe[512];
    snprintf(exe, sizeof(exe), "%s/dirigent-fn", bd ? bd : "build");
    strcpy(logpath, "/tmp/dg-h2client-fn-XXXXXX");
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fd, 2);
    char *argv[] = {exe, "--host", "127.0.0.1", "--port", "0", NULL};
    pid_t pid;
    extern char **environ;
    assert_int_equal(posix_spawn(&pid, exe, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fd);
    *port = 0;
    for (int i = 0; i < 200 && !*port; i++) { /* poll its log for the port */
        FILE *f = fopen(logpath, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f)) {
            const char *at = strstr(line, "listening on 127.0.0.1:");
            if (at)
                *port = atoi(at + 23);
        }
        if (f)
            fclose(f);
        if (!*port)
            usleep(20000);
    }
    assert_true(*port > 0);
    return pid;
}

static void test_against_dirigent_fn(void **state)
{
    char logpath[64];
    int fport;
    pid_t pid = fn_start(&fport, logpath);
    struct dg_http_pool *p = h2pool(fport, 1);
    enum { N = 30 };
    struct result r[N];
    memset(r, 0, sizeof(r));
    struct dg_http_header h[] = {{DG_STR("Host"), DG_STR("fa")},
                                 {DG_STR("requested_cpu"), DG_STR("20")}};
    for (int i = 0; i < N; i++)
        dg_http_request(p, "GET", "/", h, 2, NULL, 0, &buffered, &r[i]);
    for (int i = 0; i < N; i++) {
        assert_true(tl_run_until(&loop, &r[i].done, 10000));
        assert_int_equal(r[i].status, 200);
        dg_buf_append(&r[i].body, "", 1);
        assert_non_null(strstr(r[i].body.data, "\"Function\":\"fa\""));
        dg_buf_free(&r[i].body);
    }
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1); /* 30 streams, one connection */

    /* gRPC: faas.Executor/Execute, a FaasRequest, the reply and grpc-status 0 in trailers */
    uint8_t body[64];
    struct faas_request fr = {(const uint8_t *)"nothing", 7, 3, 0};
    size_t n = faas_request_encode(&fr, body + 5, sizeof(body) - 5);
    memset(body, 0, 5);
    body[4] = (uint8_t)n;
    struct dg_http_header g[] = {{DG_STR("content-type"), DG_STR("application/grpc")},
                                 {DG_STR("te"), DG_STR("trailers")}};
    struct result rr = {0};
    dg_http_request(p, "POST", "/faas.Executor/Execute", g, 2, body, n + 5, &streamed, &rr);
    assert_true(tl_run_until(&loop, &rr.done, 10000));
    assert_int_equal(rr.status, 200);
    assert_string_equal(rr.trailers, "grpc-status=0;");
    assert_true(rr.body.len > 5);
    assert_int_equal((uint8_t)rr.body.data[4], rr.body.len - 5);
    struct faas_reply rep;
    const char *perr = NULL;
    assert_int_equal(
        faas_reply_decode((const uint8_t *)rr.body.data + 5, rr.body.len - 5, &rep, &perr), 0);
    assert_true(rep.duration_us > 0);
    dg_buf_free(&rr.body);
    close_pool(p);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(logpath);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_and_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_streams_one_conn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_stream_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_bodies_flow_control, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rst_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_dies_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_close_fails_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http1_only_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http1_chunked_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_against_dirigent_fn, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
