/*
 * test_http_client.c: the client pool against a real dg_http_server on the
 * same loop: connection reuse (counted by the server's accepts), an upstream
 * that closes idle connections, connect refused, timeouts, queueing under
 * max_conns, streamed request and response bodies, cancel and pool close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/http.h"
#include "testlib.h"

static uv_loop_t loop;
static struct dg_http_server *srv;
static int port;
static struct dg_http_req *held; /* a request the server never answers (until told) */

static void h_hello(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "hello", 5);
}

static void h_echo(struct dg_http_req *r, void *ud)
{
    struct dg_str b = dg_http_req_body(r);
    dg_http_respond(r, 200, "application/octet-stream", b.ptr, b.len);
}

static void h_big(struct dg_http_req *r, void *ud)
{
    /* chunked response in many pieces */
    dg_http_resp_start(r, 200, -1);
    char piece[1000];
    for (int i = 0; i < 100; i++) {
        memset(piece, 'a' + i % 26, sizeof(piece));
        dg_http_resp_write(r, piece, sizeof(piece));
    }
    dg_http_resp_end(r);
}

static void held_abort(struct dg_http_req *r, void *ud)
{
    held = NULL;
}

static void h_hold(struct dg_http_req *r, void *ud)
{
    held = r;
    dg_http_req_on_abort(r, held_abort, NULL);
}

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
    dg_http_respond(d->r, 200, "text/plain", "late", 4);
    uv_close((uv_handle_t *)t, delayed_closed);
}
static void h_delay(struct dg_http_req *r, void *ud)
{
    struct delayed *d = calloc(1, sizeof(*d));
    d->r = r;
    uv_timer_init(&loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, delayed_fire, 50, 0);
}

static int setup(void **state)
{
    uv_loop_init(&loop);
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    l.idle_timeout_ms = 300; /* the server drops idle keep-alive connections quickly */
    srv = dg_http_server_new(&loop, &l, "upstream");
    dg_http_route(srv, "GET", "/hello", h_hello, NULL, 0);
    dg_http_route(srv, "POST", "/echo", h_echo, NULL, 0);
    dg_http_route(srv, "GET", "/big", h_big, NULL, 0);
    dg_http_route(srv, "GET", "/hold", h_hold, NULL, 0);
    dg_http_route(srv, "GET", "/delay", h_delay, NULL, 0);
    struct dg_err err = {0};
    assert_int_equal(dg_http_server_listen(srv, "127.0.0.1", 0, &err), 0);
    port = dg_http_server_port(srv);
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tl_server_close_loop(&loop, srv), 0);
    return 0;
}

/* ---- a request recorder ----------------------------------------------------------------- */

struct result {
    bool done;
    int status;
    int err_code;
    char err_msg[256];
    struct dg_buf body;
    size_t pieces;
};

static void on_body(struct dg_http_creq *q, const char *d, size_t n, void *ud)
{
    struct result *r = ud;
    dg_buf_append(&r->body, d, n);
    r->pieces++;
}

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct result *r = ud;
    r->done = true;
    if (resp) {
        r->status = resp->status;
        if (resp->body.len)
            dg_buf_append(&r->body, resp->body.ptr, resp->body.len);
    } else {
        r->err_code = err->code;
        snprintf(r->err_msg, sizeof(r->err_msg), "%s", err->msg);
    }
}

static const struct dg_http_client_cbs buffered = {.on_done = on_done};
static const struct dg_http_client_cbs streamed = {.on_body = on_body, .on_done = on_done};

static void run_get(struct dg_http_pool *p, const char *path, struct result *r)
{
    memset(r, 0, sizeof(*r));
    dg_http_request(p, "GET", path, NULL, 0, NULL, 0, &buffered, r);
    assert_true(tl_run_until(&loop, &r->done, 5000));
}

static struct dg_http_pool *new_pool(int to_port, const struct dg_http_pool_opts *o)
{
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new(&loop, "127.0.0.1", to_port, o, &err);
    assert_non_null(p);
    return p;
}

static void close_pool(struct dg_http_pool *p)
{
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- cases ------------------------------------------------------------------------------ */

static void test_reuse(void **state)
{
    struct dg_http_pool *p = new_pool(port, NULL);
    struct dg_http_server_stats before, after;
    dg_http_server_stats(srv, &before);
    struct result r;
    for (int i = 0; i < 5; i++) {
        run_get(p, "/hello", &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body.data, "hello");
        dg_buf_free(&r.body);
    }
    dg_http_server_stats(srv, &after);
    assert_int_equal(after.accepted - before.accepted, 1); /* one connection, five requests */
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(ps.reused, 4);
    assert_int_equal(ps.idle, 1);
    close_pool(p);
}

static void test_upstream_closes_idle(void **state)
{
    struct dg_http_pool *p = new_pool(port, NULL);
    struct result r;
    run_get(p, "/hello", &r);
    assert_int_equal(r.status, 200);
    dg_buf_free(&r.body);
    /* the upstream closes its idle side after 300 ms; the pool notices and drops it */
    bool never = false;
    tl_run_until(&loop, &never, 700);
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.idle, 0);
    run_get(p, "/hello", &r);
    assert_int_equal(r.status, 200);
    dg_buf_free(&r.body);
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 2);
    close_pool(p);
}

static void test_connect_refused(void **state)
{
    /* a port nobody listens on: bind one, read its number, close it */
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

    struct dg_http_pool *p = new_pool(dead, NULL);
    struct result r;
    run_get(p, "/hello", &r);
    assert_int_equal(r.err_code, UV_ECONNREFUSED);
    assert_non_null(strstr(r.err_msg, "connect to 127.0.0.1:"));
    assert_non_null(strstr(r.err_msg, "refused"));
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.idle + ps.busy, 0);
    close_pool(p);
}

static void test_bad_address(void **state)
{
    struct dg_err err = {0};
    assert_null(dg_http_pool_new(&loop, "not-an-ip", 80, NULL, &err));
    assert_non_null(strstr(err.msg, "numeric IP address"));
    /* from "IP:PORT" */
    assert_null(dg_http_pool_new_addr(&loop, "127.0.0.1", NULL, &err));
    assert_string_equal(err.msg, "address '127.0.0.1': expected IP:PORT");
    assert_null(dg_http_pool_new_addr(&loop, "127.0.0.1:0", NULL, &err));
    struct dg_http_pool *p = dg_http_pool_new_addr(&loop, "[::1]:8080", NULL, &err);
    assert_non_null(p);
    close_pool(p);
    p = dg_http_pool_new_addr(&loop, "127.0.0.1:8080", NULL, &err);
    assert_non_null(p);
    close_pool(p);
}

static void test_request_timeout(void **state)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.request_timeout_ms = 200;
    struct dg_http_pool *p = new_pool(port, &o);
    struct result r;
    uint64_t t0 = dg_now_ms();
    run_get(p, "/hold", &r);
    assert_int_equal(r.err_code, UV_ETIMEDOUT);
    assert_true(dg_now_ms() - t0 >= 150);
    assert_non_null(strstr(r.err_msg, "no complete response in time"));
    /* the timed-out connection was closed: the server sees its request aborted */
    bool never = false;
    tl_run_until(&loop, &never, 100);
    assert_null(held);
    close_pool(p);
}

static void test_queue_under_max_conns(void **state)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 2;
    struct dg_http_pool *p = new_pool(port, &o);
    struct result r[6];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 6; i++)
        dg_http_request(p, "GET", "/delay", NULL, 0, NULL, 0, &buffered, &r[i]);
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.queued, 4);
    assert_true(tl_run_until(&loop, &r[5].done, 5000));
    for (int i = 0; i < 6; i++) {
        assert_true(r[i].done);
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body.data, "late");
        dg_buf_free(&r[i].body);
    }
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 2);
    close_pool(p);
}

static void test_streamed_bodies(void **state)
{
    struct dg_http_pool *p = new_pool(port, NULL);
    /* request body written in pieces, chunked */
    struct result r = {0};
    struct dg_http_header h[] = {{DG_STR("X-Trace"), DG_STR("1")}};
    struct dg_http_creq *q = dg_http_request_stream(p, "POST", "/echo", h, 1, -1, &buffered, &r);
    dg_http_creq_write(q, "hello ", 6);
    dg_http_creq_write(q, "streamed ", 9);
    dg_http_creq_write(q, "world", 5);
    dg_http_creq_end(q);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "hello streamed world");
    dg_buf_free(&r.body);
    /* with a declared length */
    memset(&r, 0, sizeof(r));
    q = dg_http_request_stream(p, "POST", "/echo", NULL, 0, 4, &buffered, &r);
    dg_http_creq_write(q, "ab", 2);
    dg_http_creq_write(q, "cd", 2);
    dg_http_creq_end(q);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_string_equal(r.body.data, "abcd");
    dg_buf_free(&r.body);
    /* response body delivered in pieces */
    memset(&r, 0, sizeof(r));
    dg_http_request(p, "GET", "/big", NULL, 0, NULL, 0, &streamed, &r);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 100000);
    assert_int_equal(r.body.data[0], 'a');
    assert_int_equal(r.body.data[99999], 'a' + 99 % 26);
    assert_true(r.pieces >= 1);
    dg_buf_free(&r.body);
    /* buffered request body */
    memset(&r, 0, sizeof(r));
    dg_http_request(p, "POST", "/echo", NULL, 0, "xyz", 3, &buffered, &r);
    assert_true(tl_run_until(&loop, &r.done, 5000));
    assert_string_equal(r.body.data, "xyz");
    dg_buf_free(&r.body);
    struct dg_http_pool_stats ps;
    dg_http_pool_stats(p, &ps);
    assert_int_equal(ps.connects, 1);
    close_pool(p);
}

static void test_cancel_and_close(void **state)
{
    struct dg_http_pool *p = new_pool(port, NULL);
    struct result r1 = {0}, r2 = {0};
    struct dg_http_creq *q = dg_http_request(p, "GET", "/hold", NULL, 0, NULL, 0, &buffered, &r1);
    bool never = false;
    tl_run_until(&loop, &never, 100);
    assert_non_null(held);
    dg_http_creq_cancel(q);
    tl_run_until(&loop, &never, 100);
    assert_false(r1.done); /* no callback after cancel */
    assert_null(held);     /* and the upstream saw the connection go */
    /* pool close fails what is in flight */
    dg_http_request(p, "GET", "/hold", NULL, 0, NULL, 0, &buffered, &r2);
    tl_run_until(&loop, &never, 100);
    dg_http_pool_close(p);
    assert_true(r2.done);
    assert_int_equal(r2.err_code, DG_E_CLOSED);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* A raw upstream that reads a request, writes `reply` and closes the connection. */
struct raw_upstream {
    uv_tcp_t listener;
    const char *reply;
    int port;
};
struct raw_conn {
    uv_tcp_t tcp;
    uv_write_t w;
    struct raw_upstream *up;
    char buf[4096];
};
static void raw_closed(uv_handle_t *h)
{
    free(h->data);
}
static void raw_written(uv_write_t *w, int status)
{
    struct raw_conn *c = w->data;
    uv_close((uv_handle_t *)&c->tcp, raw_closed);
}
static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct raw_conn *c = h->data;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}
static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct raw_conn *c = s->data;
    uv_read_stop(s);
    if (n < 0) {
        uv_close((uv_handle_t *)&c->tcp, raw_closed);
        return;
    }
    uv_buf_t out = uv_buf_init((char *)c->up->reply, (unsigned)strlen(c->up->reply));
    c->w.data = c;
    uv_write(&c->w, s, &out, 1, raw_written);
}
static void raw_accept(uv_stream_t *ls, int status)
{
    struct raw_upstream *up = ls->data;
    struct raw_conn *c = calloc(1, sizeof(*c));
    c->up = up;
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    uv_accept(ls, (uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, raw_alloc, raw_read);
}
static void raw_start(struct raw_upstream *up, const char *reply)
{
    up->reply = reply;
    uv_tcp_init(&loop, &up->listener);
    up->listener.data = up;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&up->listener, (struct sockaddr *)&sa, 0);
    uv_listen((uv_stream_t *)&up->listener, 16, raw_accept);
    int len = sizeof(sa);
    uv_tcp_getsockname(&up->listener, (struct sockaddr *)&sa, &len);
    up->port = ntohs(sa.sin_port);
}

static void test_upstream_vanishes(void **state)
{
    static const struct {
        const char *reply, *expect;
        int code;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "mid-response", UV_EOF},
        {"", "before responding", UV_EOF},
        {"HTTP/1.1 2x0 OK\r\n\r\n", "bad response", DG_E_PROTO},
        {"HTTP/1.1 2 OK\r\nContent-Length: 2\r\n\r\nok", "bad response", DG_E_PROTO},
        /* a response delimited by the close is complete, not an error */
        {"HTTP/1.1 200 OK\r\n\r\nuntil-eof", NULL, 0},
        /* 304 has no body whatever its Content-Length says (a conditional GET) */
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", NULL, 304},
        /* trailers after a chunked body leave the response intact */
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nuntil-eof\r\n0\r\n"
         "X-Trailer-1: a\r\nX-Trailer-2: b\r\n\r\n",
         NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct raw_upstream up;
        raw_start(&up, cases[i].reply);
        struct dg_http_pool *p = new_pool(up.port, NULL);
        struct result r;
        run_get(p, "/x", &r);
        if (cases[i].expect) {
            assert_int_equal(r.err_code, cases[i].code);
            assert_non_null(strstr(r.err_msg, cases[i].expect));
        } else if (cases[i].code == 304) {
            assert_int_equal(r.err_code, 0);
            assert_int_equal(r.status, 304);
            assert_int_equal(r.body.len, 0);
        } else {
            assert_int_equal(r.err_code, 0);
            assert_int_equal(r.status, 200);
            assert_string_equal(r.body.data, "until-eof");
        }
        dg_buf_free(&r.body);
        close_pool(p);
        uv_close((uv_handle_t *)&up.listener, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
}

static void cancel_on_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct result *r = ud;
    r->status = resp->status;
    dg_http_creq_cancel(q);
}

static void test_cancel_from_callbacks(void **state)
{
    struct dg_http_pool *p = new_pool(port, NULL);
    struct result r = {0};
    struct dg_http_client_cbs cbs = {.on_head = cancel_on_head, .on_done = on_done};
    dg_http_request(p, "GET", "/big", NULL, 0, NULL, 0, &cbs, &r);
    bool never = false;
    tl_run_until(&loop, &never, 200);
    assert_int_equal(r.status, 200); /* on_head ran */
    assert_false(r.done);            /* and nothing after the cancel */
    /* the pool still works */
    struct result r2;
    run_get(p, "/hello", &r2);
    assert_int_equal(r2.status, 200);
    dg_buf_free(&r2.body);
    close_pool(p);
}

static void test_long_close_delimited_body(void **state)
{
    static char reply[40100];
    int n = snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\n\r\n");
    memset(reply + n, 'q', 40000);
    reply[n + 40000] = '\0';
    struct raw_upstream up;
    raw_start(&up, reply);
    struct dg_http_pool *p = new_pool(up.port, NULL);
    struct result r;
    run_get(p, "/x", &r);
    assert_int_equal(r.err_code, 0);
    assert_int_equal(r.body.len, 40000);
    dg_buf_free(&r.body);
    close_pool(p);
    uv_close((uv_handle_t *)&up.listener, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_closes_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_under_max_conns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_vanishes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_close_delimited_body, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
