/*
 * test_http2_server.c: the HTTP server's h2c side (lib/http2_server.c) through real sockets.
 * A server with h2c enabled runs on its own loop thread; the client here is libnghttp2's client
 * session on a blocking socket (or raw frames where the client must misbehave), and each case
 * checks what an HTTP/2 client sees: the same answers as over HTTP/1.1, streams multiplexed on
 * one connection, the upgrade from HTTP/1.1, flow control of a large body, trailers, and the
 * limits (REFUSED_STREAM, 431, 413, 408, GOAWAY on a bad frame or when idle).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dirigent/http.h"
#include "testlib.h"

static struct tl_server *srv;
static int port;
static atomic_int aborts; /* on_abort calls of /wait */

/* ---- routes ------------------------------------------------------------------------------ */

static void h_hello(struct dg_http_req *r, void *ud)
{
    dg_http_resp_header(r, "X-Test", "yes");
    dg_http_resp_header(r, "Connection", "keep-alive"); /* not sent over h2 */
    dg_http_respond(r, 200, "text/plain", "hello", 5);
}

static void h_echo(struct dg_http_req *r, void *ud)
{
    struct dg_str b = dg_http_req_body(r);
    char cl[32];
    snprintf(cl, sizeof(cl), "%lld", (long long)dg_http_req_content_length(r));
    dg_http_resp_header(r, "x-content-length", cl);
    dg_http_respond(r, 200, "application/octet-stream", b.ptr, b.len);
}

static void h_info(struct dg_http_req *r, void *ud)
{
    struct dg_str host = dg_http_req_header(r, "host"), q = dg_http_req_query(r);
    struct dg_str a = dg_http_req_param(r, "a"), p = dg_http_req_header(r, "x-probe");
    dg_http_respond_text(r, 200, "%s h2=%d host=%.*s a=%.*s q=%.*s probe=%.*s",
                         dg_http_req_method(r), dg_http_req_is_h2(r), (int)host.len,
                         host.ptr ? host.ptr : "", (int)a.len, a.ptr ? a.ptr : "", (int)q.len,
                         q.ptr ? q.ptr : "", (int)p.len, p.ptr ? p.ptr : "");
}

/* Streaming sink: the body is read as it comes and echoed once complete. */
static void sink_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    dg_buf_append(dg_http_req_data(r), d, n);
}
static void sink_end(struct dg_http_req *r, void *ud)
{
    struct dg_buf *b = dg_http_req_data(r);
    dg_http_respond(r, 200, "application/octet-stream", b->data, b->len);
    dg_buf_free(b);
    free(b);
}
static void sink_abort(struct dg_http_req *r, void *ud)
{
    struct dg_buf *b = dg_http_req_data(r);
    dg_buf_free(b);
    free(b);
}
static void h_sink(struct dg_http_req *r, void *ud)
{
    dg_http_req_set_data(r, calloc(1, sizeof(struct dg_buf)));
    dg_http_req_on_abort(r, sink_abort, NULL);
    dg_http_req_read_body(r, sink_data, sink_end, NULL);
}

/* Streaming echo: the response is written as the body arrives, paused for a while on every
 * 256 KiB so the client's window fills (flow control on both sides). */
struct pecho {
    uv_timer_t t;
    struct dg_http_req *r;
    uint64_t got;
    bool ended, gone;
};
static void pecho_closed(uv_handle_t *h)
{
    free(h->data);
}
static void pecho_fire(uv_timer_t *t)
{
    struct pecho *p = t->data;
    if (!p->gone)
        dg_http_req_resume(p->r);
}
static void pecho_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    struct pecho *p = ud;
    uint64_t before = p->got;
    p->got += n;
    dg_http_resp_write(r, d, n);
    if (before / (256 * 1024) != p->got / (256 * 1024)) {
        dg_http_req_pause(r);
        uv_timer_start(&p->t, pecho_fire, 50, 0);
    }
}
static void pecho_end(struct dg_http_req *r, void *ud)
{
    struct pecho *p = ud;
    dg_http_resp_end(r);
    uv_close((uv_handle_t *)&p->t, pecho_closed);
}
static void pecho_abort(struct dg_http_req *r, void *ud)
{
    struct pecho *p = ud;
    p->gone = true;
    uv_close((uv_handle_t *)&p->t, pecho_closed);
}
static void h_pecho(struct dg_http_req *r, void *ud)
{
    struct pecho *p = calloc(1, sizeof(*p));
    p->r = r;
    uv_timer_init(ud, &p->t);
    p->t.data = p;
    dg_http_req_on_abort(r, pecho_abort, p);
    dg_http_resp_start(r, 200, -1);
    dg_http_req_read_body(r, pecho_data, pecho_end, p);
}

/* Answers after ?ms=N (default 100) with the url. */
struct delayed {
    uv_timer_t t;
    struct dg_http_req *r;
};
static void delayed_closed(uv_handle_t *h)
{
    free(h->data);
}
static void delayed_fire(uv_timer_t *t)
{
    struct delayed *d = t->data;
    if (d->r) {
        struct dg_str path = dg_http_req_url(d->r);
        dg_http_respond(d->r, 200, "text/plain", path.ptr, path.len);
    }
    uv_close((uv_handle_t *)t, delayed_closed);
}
static void delayed_abort(struct dg_http_req *r, void *ud)
{
    struct delayed *d = ud;
    d->r = NULL;
}
static void h_delay(struct dg_http_req *r, void *ud)
{
    struct delayed *d = calloc(1, sizeof(*d));
    d->r = r;
    uv_timer_init(ud, &d->t);
    d->t.data = d;
    struct dg_str q = dg_http_req_query(r);
    uint64_t ms = 100;
    if (q.ptr && q.len > 3 && memcmp(q.ptr, "ms=", 3) == 0)
        dg_str_to_u64((struct dg_str){q.ptr + 3, q.len - 3}, &ms);
    dg_http_req_on_abort(r, delayed_abort, d);
    uv_timer_start(&d->t, delayed_fire, ms, 0);
}

/* Never answers; counts its on_abort. */
static void wait_abort(struct dg_http_req *r, void *ud)
{
    atomic_fetch_add(&aborts, 1);
}
static void h_wait(struct dg_http_req *r, void *ud)
{
    dg_http_req_on_abort(r, wait_abort, NULL);
}

/* A body with trailers (gRPC's OK answer). */
static void h_trailers(struct dg_http_req *r, void *ud)
{
    dg_http_resp_header(r, "content-type", "application/grpc");
    dg_http_resp_start(r, 200, -1);
    dg_http_resp_write(r, "abc", 3);
    dg_http_resp_trailer(r, dg_str_c("grpc-status"), dg_str_c("0"));
    dg_http_resp_trailer(r, dg_str_c("grpc-message"), dg_str_c("fine"));
    dg_http_resp_end(r);
}

/* gRPC's trailers-only error: one HEADERS frame with END_STREAM. */
static void h_grpc_error(struct dg_http_req *r, void *ud)
{
    dg_http_resp_header(r, "grpc-status", "5");
    dg_http_resp_header(r, "grpc-message", "no such function");
    dg_http_respond(r, 200, "application/grpc", NULL, 0);
}

/* A response of 300 KiB at once (more than a stream window). */
static void h_big(struct dg_http_req *r, void *ud)
{
    size_t n = 300 * 1024;
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + i % 26);
    dg_http_respond(r, 200, "text/plain", b, n);
    free(b);
}

static void setup_routes(struct dg_http_server *s, uv_loop_t *loop, void *ud)
{
    dg_http_server_enable_h2c(s);
    dg_http_route(s, "GET", "/hello", h_hello, NULL, 0);
    dg_http_route(s, "POST", "/echo", h_echo, NULL, 0);
    dg_http_route(s, NULL, "/info/:a", h_info, NULL, 0);
    dg_http_route(s, "POST", "/sink", h_sink, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "POST", "/pecho", h_pecho, loop, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/delay", h_delay, loop, 0);
    dg_http_route(s, "GET", "/wait", h_wait, NULL, 0);
    dg_http_route(s, "GET", "/trailers", h_trailers, NULL, 0);
    dg_http_route(s, "POST", "/grpc", h_grpc_error, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/big", h_big, NULL, 0);
}

static void limits(struct dg_http_limits *l)
{
    dg_http_limits_default(l);
    l->max_body_bytes = 4 * 1024 * 1024;
    l->header_timeout_ms = 400;
    l->body_timeout_ms = 400;
    l->body_min_rate = 0;
    l->max_header_bytes = 4096;
    l->max_headers = 20;
    l->h2_max_streams = 8;
}

static int group_setup(void **state)
{
    struct dg_http_limits l;
    limits(&l);
    srv = tl_server_start(&l, setup_routes, NULL);
    port = tl_server_port(srv);
    return 0;
}

static int group_teardown(void **state)
{
    tl_server_stop(srv, 1000);
    return 0;
}

/* ---- a blocking nghttp2 client ----------------------------------------------------------- */

struct h2r {
    int32_t id;
    int status;
    char hdrs[4096], trailers[1024];
    struct dg_buf body;
    int head_frames, data_frames;
    bool closed, rst_recv;
    uint32_t code;
    const char *up; /* request body */
    size_t up_len, up_off;
};

struct h2c {
    int fd;
    nghttp2_session *s;
    struct h2r r[64];
    int n;
    bool goaway, eof, settings;
    uint32_t goaway_code;
    char goaway_dbg[256];
};

static struct h2r *h2r_of(struct h2c *c, int32_t id)
{
    for (int i = 0; i < c->n; i++)
        if (c->r[i].id == id)
            return &c->r[i];
    return NULL;
}

static ssize_t cl_send(nghttp2_session *s, const uint8_t *d, size_t len, int flags, void *ud)
{
    struct h2c *c = ud;
    if (tl_send(c->fd, d, len) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int cl_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct h2r *r = h2r_of(ud, f->hd.stream_id);
    if (!r)
        return 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        r->status = atoi((const char *)value);
        return 0;
    }
    char *dst = f->headers.cat == NGHTTP2_HCAT_HEADERS ? r->trailers : r->hdrs;
    size_t cap = f->headers.cat == NGHTTP2_HCAT_HEADERS ? sizeof(r->trailers) : sizeof(r->hdrs);
    size_t l = strlen(dst);
    snprintf(dst + l, cap - l, "%.*s: %.*s\n", (int)nlen, name, (int)vlen, value);
    return 0;
}

static int cl_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2c *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        c->settings = true;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        c->goaway_code = f->goaway.error_code;
        snprintf(c->goaway_dbg, sizeof(c->goaway_dbg), "%.*s", (int)f->goaway.opaque_data_len,
                 f->goaway.opaque_data);
        return 0;
    }
    struct h2r *r = h2r_of(c, f->hd.stream_id);
    if (!r)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS)
        r->head_frames++;
    else if (f->hd.type == NGHTTP2_DATA)
        r->data_frames++;
    else if (f->hd.type == NGHTTP2_RST_STREAM)
        r->rst_recv = true;
    return 0;
}

static int cl_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *d, size_t len,
                   void *ud)
{
    struct h2r *r = h2r_of(ud, id);
    if (r)
        dg_buf_append(&r->body, d, len);
    return 0;
}

static int cl_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct h2r *r = h2r_of(ud, id);
    if (r) {
        r->closed = true;
        r->code = code;
    }
    return 0;
}

static ssize_t cl_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    struct h2r *r = src->ptr;
    size_t n = r->up_len - r->up_off;
    if (n > len)
        n = len;
    memcpy(buf, r->up + r->up_off, n);
    r->up_off += n;
    if (r->up_off == r->up_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void h2c_session(struct h2c *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, cl_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, cl_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cl_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cl_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cl_close);
    nghttp2_session_client_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
}

static struct h2c *h2c_open(int p)
{
    struct h2c *c = calloc(1, sizeof(*c));
    c->fd = tl_connect(p, 5000);
    assert_true(c->fd >= 0);
    h2c_session(c);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0);
    return c;
}

static void h2c_free(struct h2c *c)
{
    for (int i = 0; i < c->n; i++)
        dg_buf_free(&c->r[i].body);
    nghttp2_session_del(c->s);
    close(c->fd);
    free(c);
}

/* Submit a request; extra headers as "name", "value" pairs ending with NULL. */
static struct h2r *h2c_req(struct h2c *c, const char *method, const char *path,
                           const char *authority, const char *body, size_t len, ...)
{
    nghttp2_nv nv[40];
    size_t n = 0;
#define NV(a, b) (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0}
    nv[n++] = NV(":method", method);
    nv[n++] = NV(":scheme", "http");
    nv[n++] = NV(":path", path);
    nv[n++] = NV(":authority", authority);
    va_list ap;
    va_start(ap, len);
    const char *k;
    while ((k = va_arg(ap, const char *)) && n < 40) {
        const char *v = va_arg(ap, const char *);
        nv[n++] = NV(k, v);
    }
    va_end(ap);
    struct h2r *r = &c->r[c->n++];
    memset(r, 0, sizeof(*r));
    r->up = body;
    r->up_len = len;
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = cl_read};
    r->id = nghttp2_submit_request(c->s, NULL, nv, n, body ? &prd : NULL, NULL);
    assert_true(r->id > 0);
    return r;
}

static bool all_closed(struct h2c *c)
{
    for (int i = 0; i < c->n; i++)
        if (!c->r[i].closed)
            return false;
    return true;
}

/* Exchange frames until every stream is closed (or until `done` says so), EOF, or timeout. */
static bool h2c_run_until(struct h2c *c, bool (*done)(struct h2c *), int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms;) {
        if (nghttp2_session_send(c->s) != 0)
            return false;
        if (done(c))
            return true;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int rc = poll(&pfd, 1, 50);
        if (rc == 0) {
            waited += 50;
            continue;
        }
        char buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            c->eof = true;
            return done(c);
        }
        if (nghttp2_session_mem_recv(c->s, (uint8_t *)buf, (size_t)n) < 0)
            return false;
    }
    return false;
}

static bool h2c_run(struct h2c *c)
{
    bool ok = h2c_run_until(c, all_closed, 10000);
    if (!ok) {
        fprintf(stderr, "run failed: eof=%d goaway=%d code=%u %s\n", c->eof, c->goaway,
                c->goaway_code, c->goaway_dbg);
        for (int i = 0; i < c->n; i++)
            fprintf(stderr, "  stream %d status %d closed %d code %u body %zu\n", c->r[i].id,
                    c->r[i].status, c->r[i].closed, c->r[i].code, c->r[i].body.len);
    }
    return ok;
}

static bool got_settings(struct h2c *c)
{
    return c->settings;
}

static bool got_goaway(struct h2c *c)
{
    return c->goaway;
}

static void assert_still_serving(void)
{
    struct h2c *c = h2c_open(port);
    struct h2r *r = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(r->status, 200);
    h2c_free(c);
    struct tl_resp hr;
    assert_int_equal(tl_roundtrip(port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &hr), 200);
    tl_resp_free(&hr);
}

static bool body_is(const struct h2r *r, const char *s)
{
    return r->body.len == strlen(s) && memcmp(r->body.data, s, r->body.len) == 0;
}

/* ---- cases -------------------------------------------------------------------------------- */

/* The same answers as over HTTP/1.1: status, headers, body; :authority is the host header. */
static void test_same_answers(void **state)
{
    struct h2c *c = h2c_open(port);
    struct h2r *a = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    struct h2r *b = h2c_req(c, "POST", "/echo", "localhost", "ping", 4, NULL);
    struct h2r *i =
        h2c_req(c, "GET", "/info/seg?x=1", "myfunc.example", NULL, 0, "x-probe", "P", NULL);
    struct h2r *m = h2c_req(c, "GET", "/missing", "localhost", NULL, 0, NULL);
    struct h2r *w = h2c_req(c, "POST", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(a->status, 200);
    assert_true(body_is(a, "hello"));
    assert_non_null(strstr(a->hdrs, "x-test: yes\n"));
    assert_non_null(strstr(a->hdrs, "content-type: text/plain\n"));
    assert_non_null(strstr(a->hdrs, "content-length: 5\n"));
    assert_null(strstr(a->hdrs, "connection"));
    assert_int_equal(b->status, 200);
    assert_true(body_is(b, "ping"));
    /* the client sent no content-length: the body length is unknown at the head */
    assert_non_null(strstr(b->hdrs, "x-content-length: -1\n"));
    assert_int_equal(i->status, 200);
    assert_true(body_is(i, "GET h2=1 host=myfunc.example a=seg q=x=1 probe=P\n"));
    assert_int_equal(m->status, 404);
    assert_int_equal(w->status, 405);
    h2c_free(c);

    struct tl_resp hr;
    assert_int_equal(tl_roundtrip(port,
                                  "GET /info/seg?x=1 HTTP/1.1\r\nHost: myfunc.example\r\n"
                                  "X-Probe: P\r\n\r\n",
                                  &hr),
                     200);
    assert_string_equal(hr.body, "GET h2=0 host=myfunc.example a=seg q=x=1 probe=P\n");
    tl_resp_free(&hr);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Many streams at once on one connection: all answered, each with its own body. */
static void test_multiplexed(void **state)
{
    uint64_t before = tl_server_requests(srv);
    struct h2c *c = h2c_open(port);
    /* the server allows 8 at once: the client keeps to it once it has the server's SETTINGS */
    assert_true(h2c_run_until(c, got_settings, 5000));
    assert_int_equal(
        nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 8);
    char paths[40][32];
    struct h2r *rs[40];
    for (int i = 0; i < 40; i++) {
        snprintf(paths[i], sizeof(paths[i]), "/delay?ms=%d", 50 + (i * 37) % 100);
        rs[i] = h2c_req(c, "GET", paths[i], "localhost", NULL, 0, NULL);
    }
    assert_true(h2c_run(c));
    for (int i = 0; i < 40; i++) {
        assert_int_equal(rs[i]->status, 200);
        assert_true(body_is(rs[i], paths[i]));
    }
    assert_true(tl_server_requests(srv) >= before + 40); /* streams count as requests */
    h2c_free(c);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Prior-knowledge client sending more streams than the limit before it saw the server's
 * SETTINGS: the ones over it are refused with REFUSED_STREAM, the others answered. */
static void test_refused_stream(void **state)
{
    struct h2c *c = calloc(1, sizeof(*c));
    c->fd = tl_connect(port, 5000);
    h2c_session(c);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0);
    struct h2r *rs[12];
    for (int i = 0; i < 12; i++)
        rs[i] = h2c_req(c, "GET", "/delay?ms=200", "localhost", NULL, 0, NULL);
    assert_int_equal(nghttp2_session_send(c->s), 0); /* all 12 go out before any reading */
    assert_true(h2c_run(c));
    int ok = 0, refused = 0;
    for (int i = 0; i < 12; i++) {
        if (rs[i]->status == 200)
            ok++;
        else if (rs[i]->rst_recv && rs[i]->code == NGHTTP2_REFUSED_STREAM)
            refused++;
    }
    assert_int_equal(ok, 8);
    assert_int_equal(refused, 4);
    h2c_free(c);
    assert_still_serving();
}

/* Upgrade from HTTP/1.1: 101, the request is answered as stream 1, then more streams. */
static void test_upgrade(void **state)
{
    struct h2c *c = calloc(1, sizeof(*c));
    c->fd = tl_connect(port, 5000);
    h2c_session(c);
    uint8_t sp[64];
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    ssize_t spl = nghttp2_pack_settings_payload(sp, sizeof(sp), iv, 1);
    assert_true(spl > 0);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
    char b64[128];
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (ssize_t i = 0; i < spl; i += 3) {
        uint32_t v = (uint32_t)sp[i] << 16 | (i + 1 < spl ? (uint32_t)sp[i + 1] << 8 : 0) |
                     (i + 2 < spl ? sp[i + 2] : 0);
        b64[o++] = tbl[v >> 18 & 63];
        b64[o++] = tbl[v >> 12 & 63];
        if (i + 1 < spl)
            b64[o++] = tbl[v >> 6 & 63];
        if (i + 2 < spl)
            b64[o++] = tbl[v & 63];
    }
    b64[o] = '\0';
    char req[512];
    snprintf(req, sizeof(req),
             "GET /info/up HTTP/1.1\r\nHost: upfn\r\nConnection: Upgrade, HTTP2-Settings\r\n"
             "Upgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n",
             b64);
    assert_int_equal(tl_sends(c->fd, req), 0);
    /* read the 101 head byte by byte, so nothing after it is lost */
    char head[1024];
    size_t hl = 0;
    while (hl < sizeof(head) - 1 && (hl < 4 || memcmp(head + hl - 4, "\r\n\r\n", 4) != 0)) {
        assert_int_equal(recv(c->fd, head + hl, 1, 0), 1);
        hl++;
    }
    head[hl] = '\0';
    assert_non_null(strstr(head, "HTTP/1.1 101 "));
    assert_non_null(strstr(head, "Upgrade: h2c"));
    struct h2r *r1 = &c->r[c->n++];
    memset(r1, 0, sizeof(*r1));
    r1->id = 1;
    assert_int_equal(nghttp2_session_upgrade2(c->s, sp, (size_t)spl, 0, NULL), 0);
    struct h2r *r3 = h2c_req(c, "GET", "/hello", "upfn", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(r1->status, 200);
    assert_true(body_is(r1, "GET h2=1 host=upfn a=up q= probe=\n"));
    assert_int_equal(r3->status, 200);
    assert_true(body_is(r3, "hello"));
    h2c_free(c);

    /* with a body the upgrade is ignored: answered over HTTP/1.1 */
    struct tl_resp hr;
    assert_int_equal(tl_roundtrip(port,
                                  "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                                  "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
                                  "Content-Length: 3\r\n\r\nabc",
                                  &hr),
                     200);
    assert_string_equal(hr.body, "abc");
    tl_resp_free(&hr);
    /* no HTTP2-Settings: 400 */
    assert_int_equal(tl_roundtrip(port,
                                  "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                                  "Upgrade: h2c\r\n\r\n",
                                  &hr),
                     400);
    assert_non_null(strstr(hr.body, "HTTP2-Settings"));
    tl_resp_free(&hr);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Large bodies both ways through flow control: 2 MiB into a streaming handler that pauses
 * and resumes, echoed back as it comes; 1.5 MiB into a buffered route; 300 KiB out at once. */
static void test_large_bodies(void **state)
{
    size_t n = 2 * 1024 * 1024;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 1000);
    struct h2c *c = h2c_open(port);
    struct h2r *a = h2c_req(c, "POST", "/pecho", "localhost", big, n, NULL);
    struct h2r *b = h2c_req(c, "POST", "/echo", "localhost", big, 1536 * 1024, NULL);
    struct h2r *s = h2c_req(c, "POST", "/sink", "localhost", big + 5, 100000, NULL);
    struct h2r *g = h2c_req(c, "GET", "/big", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(a->status, 200);
    assert_int_equal(a->body.len, n);
    assert_memory_equal(a->body.data, big, n);
    assert_int_equal(b->status, 200);
    assert_int_equal(b->body.len, 1536 * 1024);
    assert_memory_equal(b->body.data, big, 1536 * 1024);
    assert_int_equal(s->status, 200);
    assert_int_equal(s->body.len, 100000);
    assert_memory_equal(s->body.data, big + 5, 100000);
    assert_int_equal(g->status, 200);
    assert_int_equal(g->body.len, 300 * 1024);
    h2c_free(c);
    free(big);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Trailers after a body, the trailers-only answer, and trailers over HTTP/1.1 chunked. */
static void test_trailers(void **state)
{
    struct h2c *c = h2c_open(port);
    struct h2r *t = h2c_req(c, "GET", "/trailers", "localhost", NULL, 0, NULL);
    struct h2r *e = h2c_req(c, "POST", "/grpc", "localhost", "\0\0\0\0\0", 5, "content-type",
                            "application/grpc", "te", "trailers", NULL);
    assert_true(h2c_run(c));
    assert_int_equal(t->status, 200);
    assert_true(body_is(t, "abc"));
    assert_string_equal(t->trailers, "grpc-status: 0\ngrpc-message: fine\n");
    assert_int_equal(t->head_frames, 2);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->head_frames, 1); /* trailers-only: one HEADERS with END_STREAM */
    assert_int_equal(e->data_frames, 0);
    assert_non_null(strstr(e->hdrs, "grpc-status: 5\n"));
    assert_non_null(strstr(e->hdrs, "grpc-message: no such function\n"));
    h2c_free(c);

    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /trailers HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    char buf[2048];
    size_t got = 0;
    while (got < sizeof(buf) - 1 && !strstr(buf, "fine\r\n\r\n")) {
        ssize_t k = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        buf[got] = '\0';
    }
    assert_non_null(strstr(buf, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(
        strstr(buf, "\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n"));
    close(fd);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Header list over the limits: 431 on that stream; the connection goes on. */
static void test_header_limits(void **state)
{
    char big[5000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct h2c *c = h2c_open(port);
    struct h2r *a = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, "x-big", big, NULL);
    struct h2r *b =
        h2c_req(c, "GET", "/hello", "localhost", NULL, 0, "h1", "1", "h2", "1", "h3", "1", "h4",
                "1", "h5", "1", "h6", "1", "h7", "1", "h8", "1", "h9", "1", "h10", "1", "h11", "1",
                "h12", "1", "h13", "1", "h14", "1", "h15", "1", "h16", "1", "h17", "1", "h18", "1",
                "h19", "1", "h20", "1", "h21", "1", NULL);
    /* a gRPC call over the limit: gRPC's trailers-only answer with RESOURCE_EXHAUSTED */
    struct h2r *g = h2c_req(c, "POST", "/grpc", "localhost", NULL, 0, "content-type",
                            "application/grpc", "x-big", big, NULL);
    struct h2r *ok = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(g->status, 200);
    assert_int_equal(g->head_frames, 1);
    assert_non_null(strstr(g->hdrs, "grpc-status: 8\n"));
    assert_non_null(strstr(g->hdrs, "grpc-message: request header fields too large\n"));
    assert_int_equal(a->status, 431);
    assert_true(body_is(a, "request header fields too large\n"));
    assert_int_equal(b->status, 431);
    assert_true(body_is(b, "too many request header fields\n"));
    assert_int_equal(ok->status, 200);
    assert_false(c->goaway);
    h2c_free(c);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* Bodies over max_body_bytes: 413 from the declared length, and from the bytes received
 * without one (a streaming handler holding it is told through on_abort). */
static void test_body_limit(void **state)
{
    size_t n = 4 * 1024 * 1024 + 100;
    char *big = calloc(1, n);
    struct h2c *c = h2c_open(port);
    struct h2r *a =
        h2c_req(c, "POST", "/echo", "localhost", big, n, "content-length", "4194404", NULL);
    struct h2r *b = h2c_req(c, "POST", "/sink", "localhost", big, n, NULL);
    struct h2r *ok = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(a->status, 413);
    assert_int_equal(b->status, 413);
    assert_true(body_is(b, "request body too large\n"));
    assert_int_equal(ok->status, 200);
    h2c_free(c);
    free(big);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* A body that stops coming: 408 on the stream after the body timeout. */
static void test_body_timeout(void **state)
{
    struct h2c *c = h2c_open(port);
    /* HEADERS without END_STREAM, no DATA: nghttp2's client only does that for a body source
     * that defers; a raw frame is simpler */
    nghttp2_nv nv[] = {NV(":method", "POST"), NV(":scheme", "http"), NV(":path", "/echo"),
                       NV(":authority", "x"), NV("content-length", "10")};
    struct h2r *r = &c->r[c->n++];
    memset(r, 0, sizeof(*r));
    r->id = nghttp2_submit_headers(c->s, NGHTTP2_FLAG_NONE, -1, NULL, nv, 5, NULL);
    assert_true(r->id > 0);
    assert_true(h2c_run(c));
    assert_int_equal(r->status, 408);
    assert_true(body_is(r, "request body not received in time\n"));
    h2c_free(c);
    assert_true(tl_server_wait_idle(srv, 5000)); /* every request and connection freed */
}

/* The client resets a stream: the handler's on_abort runs; the connection goes on. A
 * connection that closes aborts all of its streams. */
static void test_client_reset(void **state)
{
    int before = atomic_load(&aborts);
    struct h2c *c = h2c_open(port);
    struct h2r *w = h2c_req(c, "GET", "/wait", "localhost", NULL, 0, NULL);
    struct h2r *w2 = h2c_req(c, "GET", "/wait", "localhost", NULL, 0, NULL);
    assert_int_equal(nghttp2_session_send(c->s), 0);
    assert_true(tl_server_wait_active(srv, 2, 5000));
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, w->id, NGHTTP2_CANCEL);
    struct h2r *ok = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    w2->closed = true; /* not waited for */
    assert_true(h2c_run(c));
    assert_int_equal(ok->status, 200);
    for (int i = 0; i < 100 && atomic_load(&aborts) < before + 1; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&aborts), before + 1);
    h2c_free(c); /* closes the connection: w2 is aborted too */
    for (int i = 0; i < 100 && atomic_load(&aborts) < before + 2; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&aborts), before + 2);
    assert_true(tl_server_wait_idle(srv, 5000));
}

/* A frame that breaks the protocol: GOAWAY with its code, and the server serves others. */
static void test_bad_frame_goaway(void **state)
{
    struct h2c *c = h2c_open(port);
    assert_int_equal(nghttp2_session_send(c->s), 0);
    /* DATA on stream 0 */
    static const uint8_t bad[] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 'x'};
    assert_int_equal(tl_send(c->fd, bad, sizeof(bad)), 0);
    h2c_run_until(c, got_goaway, 5000);
    assert_true(c->goaway);
    assert_int_equal(c->goaway_code, NGHTTP2_PROTOCOL_ERROR);
    assert_true(tl_wait_closed(c->fd, 3000));
    h2c_free(c);

    /* a bad preface: the connection is closed */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), 0);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    assert_still_serving();
}

/* A header block that does not end (HEADERS without END_HEADERS, no CONTINUATION) blocks the
 * whole connection: GOAWAY after the header timeout, then closed. */
static void test_header_timeout(void **state)
{
    struct h2c *c = h2c_open(port);
    assert_true(h2c_run_until(c, got_settings, 5000));
    /* :method GET, :path /, :scheme http (static table), no END_HEADERS */
    static const uint8_t part[] = {0, 0, 3, 1, 0, 0, 0, 0, 1, 0x82, 0x84, 0x86};
    assert_int_equal(tl_send(c->fd, part, sizeof(part)), 0);
    h2c_run_until(c, got_goaway, 5000);
    assert_true(c->goaway);
    assert_int_equal(c->goaway_code, NGHTTP2_PROTOCOL_ERROR);
    assert_string_equal(c->goaway_dbg, "request headers not received in time (http.headerTimeout)");
    assert_true(tl_wait_closed(c->fd, 3000));
    h2c_free(c);
    assert_true(tl_server_wait_idle(srv, 5000));
}

/* Idle connection: GOAWAY NO_ERROR after the idle timeout, then closed. Graceful server close:
 * a stream in flight finishes, GOAWAY tells the client no more. */
static void test_idle_and_close(void **state)
{
    struct dg_http_limits l;
    limits(&l);
    l.idle_timeout_ms = 300;
    struct tl_server *s2 = tl_server_start(&l, setup_routes, NULL);
    int p2 = tl_server_port(s2);
    struct h2c *c = h2c_open(p2);
    struct h2r *r = h2c_req(c, "GET", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c));
    assert_int_equal(r->status, 200);
    h2c_run_until(c, got_goaway, 5000);
    assert_true(c->goaway);
    assert_int_equal(c->goaway_code, NGHTTP2_NO_ERROR);
    assert_true(tl_wait_closed(c->fd, 3000));
    h2c_free(c);

    c = h2c_open(p2);
    r = h2c_req(c, "GET", "/delay?ms=300", "localhost", NULL, 0, NULL);
    assert_int_equal(nghttp2_session_send(c->s), 0);
    assert_true(tl_server_wait_active(s2, 1, 5000));
    tl_server_stop(s2, 3000); /* returns when everything is closed */
    assert_true(h2c_run(c));
    assert_int_equal(r->status, 200);
    assert_true(body_is(r, "/delay?ms=300"));
    assert_true(c->goaway);
    h2c_free(c);
}

/* h2c connections count against the connection caps like any other. */
static void test_conn_caps(void **state)
{
    struct dg_http_limits l;
    limits(&l);
    l.max_conns = 2;
    struct tl_server *s2 = tl_server_start(&l, setup_routes, NULL);
    int p2 = tl_server_port(s2);
    struct h2c *c1 = h2c_open(p2), *c2 = h2c_open(p2);
    struct h2r *r1 = h2c_req(c1, "GET", "/hello", "localhost", NULL, 0, NULL);
    struct h2r *r2 = h2c_req(c2, "GET", "/hello", "localhost", NULL, 0, NULL);
    assert_true(h2c_run(c1));
    assert_true(h2c_run(c2));
    assert_int_equal(r1->status + r2->status, 400);
    struct tl_resp hr;
    assert_int_equal(tl_roundtrip(p2, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &hr), 503);
    tl_resp_free(&hr);
    h2c_free(c1);
    h2c_free(c2);
    tl_server_stop(s2, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_answers),     cmocka_unit_test(test_multiplexed),
        cmocka_unit_test(test_refused_stream),   cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_large_bodies),     cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_header_limits),    cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_body_timeout),     cmocka_unit_test(test_client_reset),
        cmocka_unit_test(test_bad_frame_goaway), cmocka_unit_test(test_idle_and_close),
        cmocka_unit_test(test_conn_caps),        cmocka_unit_test(test_header_timeout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
