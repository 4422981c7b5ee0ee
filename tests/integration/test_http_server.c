/*
 * test_http_server.c: the HTTP server through real sockets. A server with a
 * few routes runs on its own loop thread; each case talks raw bytes to it and
 * checks what a client would see, and then that the server still answers a
 * normal request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dirigent/http.h"
#include "testlib.h"

static struct tl_server *srv;
static int port;

/* ---- routes ----------------------------------------------------------------------------- */

static void h_hello(struct dg_http_req *r, void *ud)
{
    dg_http_resp_header(r, "X-Test", "yes");
    dg_http_respond(r, 200, "text/plain", "hello", 5);
}

static void h_echo(struct dg_http_req *r, void *ud)
{
    struct dg_str b = dg_http_req_body(r);
    dg_http_respond(r, 200, "application/octet-stream", b.ptr, b.len);
}

static void h_params(struct dg_http_req *r, void *ud)
{
    struct dg_str a = dg_http_req_param(r, "a"), b = dg_http_req_param(r, "b");
    struct dg_str q = dg_http_req_query(r);
    dg_http_respond_text(r, 200, "a=%.*s b=%.*s q=%.*s", (int)a.len, a.ptr, (int)b.len, b.ptr,
                         (int)q.len, q.ptr ? q.ptr : "");
}

static void h_header(struct dg_http_req *r, void *ud)
{
    struct dg_str v = dg_http_req_header(r, "x-probe");
    size_t n;
    dg_http_req_headers(r, &n);
    dg_http_respond_text(r, 200, "probe=[%.*s] n=%zu", (int)v.len, v.ptr ? v.ptr : "", n);
}

/* Streaming echo: chunked response written as the body arrives. */
static void s_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    dg_http_resp_write(r, d, n);
}
static void s_end(struct dg_http_req *r, void *ud)
{
    dg_http_resp_end(r);
}
static void s_abort(struct dg_http_req *r, void *ud)
{
    /* the client left mid-body: nothing more will come; the request is freed after this */
}
static void h_stream(struct dg_http_req *r, void *ud)
{
    dg_http_req_on_abort(r, s_abort, NULL);
    dg_http_resp_start(r, 200, -1);
    dg_http_req_read_body(r, s_data, s_end, NULL);
}

/* Answers after `ms` from the query (?ms=N), default 100. */
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
    uv_loop_t *loop = ud;
    struct delayed *d = calloc(1, sizeof(*d));
    d->r = r;
    uv_timer_init(loop, &d->t);
    d->t.data = d;
    struct dg_str q = dg_http_req_query(r);
    uint64_t ms = 100;
    if (q.ptr && q.len > 3 && memcmp(q.ptr, "ms=", 3) == 0)
        dg_str_to_u64((struct dg_str){q.ptr + 3, q.len - 3}, &ms);
    dg_http_req_on_abort(r, delayed_abort, d);
    uv_timer_start(&d->t, delayed_fire, ms, 0);
}

/* A streaming route answered at once, before the parser saw the end of the request. */
static void h_stream_sync(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "sync", 4);
}

/* A streaming route answered from its first piece of body. */
static void early_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "early", 5);
}
static void h_stream_early(struct dg_http_req *r, void *ud)
{
    dg_http_req_read_body(r, early_data, NULL, NULL);
}

/* A request whose on_abort answers it (must be a no-op, not a double free). */
static void abort_respond(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "too late", 8);
    dg_http_resp_end(r);
}
static void h_abort_respond(struct dg_http_req *r, void *ud)
{
    dg_http_req_on_abort(r, abort_respond, NULL);
}

static void h_ctype(struct dg_http_req *r, void *ud)
{
    char ct[700];
    memset(ct, 'x', sizeof(ct) - 1);
    ct[sizeof(ct) - 1] = '\0';
    memcpy(ct, "text/", 5);
    dg_http_respond(r, 200, ct, "ct", 2);
}

/* Holds the body 600 ms (longer than the 400 ms body timeout) before reading it, after a
 * pause/resume that must not release it early. */
struct held {
    uv_timer_t t;
    struct dg_http_req *r;
    struct dg_buf body;
};
static void held_closed(uv_handle_t *h)
{
    struct held *hd = h->data;
    dg_buf_free(&hd->body);
    free(hd);
}
static void held_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    struct held *hd = ud;
    dg_buf_append(&hd->body, d, n);
}
static void held_end(struct dg_http_req *r, void *ud)
{
    struct held *hd = ud;
    dg_http_respond(r, 200, "text/plain", hd->body.data ? hd->body.data : "", hd->body.len);
    uv_close((uv_handle_t *)&hd->t, held_closed);
}
static void held_fire(uv_timer_t *t)
{
    struct held *hd = t->data;
    dg_http_req_read_body(hd->r, held_data, held_end, hd);
}
static void h_held(struct dg_http_req *r, void *ud)
{
    struct held *hd = calloc(1, sizeof(*hd));
    hd->r = r;
    uv_timer_init(ud, &hd->t);
    hd->t.data = hd;
    dg_http_req_pause(r);
    dg_http_req_resume(r);
    uv_timer_start(&hd->t, held_fire, 600, 0);
}

static void h_short(struct dg_http_req *r, void *ud)
{
    dg_http_resp_start(r, 200, 10);
    dg_http_resp_write(r, "abc", 3);
    dg_http_resp_end(r);
}

static void h_chunked(struct dg_http_req *r, void *ud)
{
    dg_http_resp_start(r, 200, -1);
    dg_http_resp_write(r, "abc", 3);
    dg_http_resp_write(r, "def", 3);
    dg_http_resp_end(r);
}

static void h_nocontent(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 204, "text/plain", "ignored", 7);
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

static void setup_routes(struct dg_http_server *s, uv_loop_t *loop, void *ud)
{
    dg_http_route(s, "POST", "/sink", h_sink, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/stream_sync", h_stream_sync, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "POST", "/stream_early", h_stream_early, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/abort_respond", h_abort_respond, NULL, 0);
    dg_http_route(s, "GET", "/ctype", h_ctype, NULL, 0);
    dg_http_route(s, "POST", "/held", h_held, loop, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/short", h_short, NULL, 0);
    dg_http_route(s, "GET", "/chunked", h_chunked, NULL, 0);
    dg_http_route(s, "GET", "/nocontent", h_nocontent, NULL, 0);
    dg_http_route(s, "GET", "/hello", h_hello, NULL, 0);
    dg_http_route(s, "POST", "/echo", h_echo, NULL, 0);
    dg_http_route(s, "GET", "/p/:a/x/:b", h_params, NULL, 0);
    dg_http_route(s, "GET", "/header", h_header, NULL, 0);
    dg_http_route(s, "POST", "/stream", h_stream, NULL, DG_HTTP_STREAM);
    dg_http_route(s, "GET", "/delay", h_delay, loop, 0);
}

static int group_setup(void **state)
{
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    l.max_body_bytes = 64 * 1024;
    l.header_timeout_ms = 400;
    l.body_timeout_ms = 400;
    l.idle_timeout_ms = 1500;
    srv = tl_server_start(&l, setup_routes, NULL);
    port = tl_server_port(srv);
    return 0;
}

static int group_teardown(void **state)
{
    tl_server_stop(srv, 1000);
    return 0;
}

/* The server still answers a plain request on a fresh connection. */
static void assert_still_serving(void)
{
    struct tl_resp r;
    assert_int_equal(tl_roundtrip(port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    assert_string_equal(r.body, "hello");
    tl_resp_free(&r);
}

static void expect_status(int fd, int status)
{
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, status);
    tl_resp_free(&r);
}

/* ---- cases ------------------------------------------------------------------------------ */

static void test_basic_and_headers(void **state)
{
    struct tl_resp r;
    assert_int_equal(tl_roundtrip(port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    assert_string_equal(r.body, "hello");
    assert_string_equal(tl_resp_header(&r, "x-test"), "yes");
    assert_string_equal(tl_resp_header(&r, "content-length"), "5");
    assert_true(r.keep_alive);
    tl_resp_free(&r);
    /* case-insensitive lookup, an empty value, and the header count */
    assert_int_equal(tl_roundtrip(port,
                                  "GET /header HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n"
                                  "x-PROBE: found\r\n\r\n",
                                  &r),
                     200);
    assert_string_equal(r.body, "probe=[found] n=3\n");
    tl_resp_free(&r);
}

static void test_split_writes(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
    assert_int_equal(tl_send_slowly(fd, req, strlen(req), 1, 200), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    tl_resp_free(&r);
    close(fd);
    assert_still_serving();
}

static void test_keep_alive_many(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        expect_status(fd, 200);
    }
    close(fd);
}

static void test_pipelined_in_order(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    /* the first answers late, yet must come first */
    assert_int_equal(tl_sends(fd, "GET /delay?ms=150 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                                  "GET /delay?ms=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "/delay?ms=150");
    tl_resp_free(&r);
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "abc");
    tl_resp_free(&r);
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "/delay?ms=1");
    tl_resp_free(&r);
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "hello");
    tl_resp_free(&r);
    close(fd);
}

static void test_chunked_request_body(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    assert_int_equal(tl_send_slowly(fd, req, strlen(req), 7, 1000), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    tl_resp_free(&r);
    /* keep-alive continues after a chunked body */
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    expect_status(fd, 200);
    close(fd);
}

static void test_streaming_route(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    char body[40000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('a' + i % 26);
    char head[128];
    snprintf(head, sizeof(head), "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             sizeof(body));
    assert_int_equal(tl_sends(fd, head), 0);
    assert_int_equal(tl_send_slowly(fd, body, sizeof(body), 4096, 2000), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(tl_resp_header(&r, "transfer-encoding"), "chunked");
    assert_int_equal(r.body_len, sizeof(body));
    assert_memory_equal(r.body, body, sizeof(body));
    tl_resp_free(&r);
    close(fd);
}

static void test_expect_continue(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                  "Expect: 100-continue\r\n\r\n"),
                     0);
    char buf[64] = {0};
    ssize_t n = recv(fd, buf, 25, 0); /* "HTTP/1.1 100 Continue\r\n\r\n" */
    assert_int_equal(n, 25);
    assert_memory_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    assert_int_equal(tl_sends(fd, "ping"), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ping");
    tl_resp_free(&r);
    close(fd);
}

static void test_oversized_headers_431(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    size_t n = 20 * 1024;
    char *req = malloc(n + 128);
    int off = sprintf(req, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + off, 'a', n);
    strcpy(req + off + n, "\r\n\r\n");
    tl_send(fd, req, strlen(req)); /* the server may close before all is sent */
    free(req);
    expect_status(fd, 431);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    assert_still_serving();
}

static void test_too_many_headers_431(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    struct dg_buf b = {0};
    dg_buf_puts(&b, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 120; i++)
        dg_buf_printf(&b, "X-H%d: v\r\n", i);
    dg_buf_puts(&b, "\r\n");
    tl_send(fd, b.data, b.len);
    dg_buf_free(&b);
    expect_status(fd, 431);
    close(fd);
    assert_still_serving();
}

static void test_oversized_body_413(void **state)
{
    /* declared too large: refused before the body is read */
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                                  "\r\nsome of it"),
                     0);
    expect_status(fd, 413);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    /* chunked, growing past the limit while it is read */
    fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                  "\r\n\r\n"),
                     0);
    char chunk[8192 + 16];
    int h = sprintf(chunk, "2000\r\n");
    memset(chunk + h, 'z', 8192);
    memcpy(chunk + h + 8192, "\r\n", 2);
    for (int i = 0; i < 9; i++)
        if (tl_send(fd, chunk, (size_t)h + 8192 + 2) == -1)
            break;
    expect_status(fd, 413);
    close(fd);
    assert_still_serving();
}

static void test_garbage_400(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "\x01\x02 this is not http\r\n\r\n"), 0);
    expect_status(fd, 400);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    /* a bad header line after a good request line */
    fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHost x y z\r\n\r\n"), 0);
    expect_status(fd, 400);
    close(fd);
    /* a bad Content-Length */
    fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(
        tl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"), 0);
    expect_status(fd, 400);
    close(fd);
    assert_still_serving();
}

static void test_slow_client_408(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHo"), 0);
    expect_status(fd, 408); /* header timeout is 400 ms in this suite */
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    /* a body that stops coming */
    fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    assert_int_equal(tl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"),
                     0);
    expect_status(fd, 408);
    close(fd);
    assert_still_serving();
}

static void test_client_closes_mid_body(void **state)
{
    for (int i = 0; i < 3; i++) {
        assert_true(tl_server_wait_idle(srv, 5000));
        int fd = tl_connect(port, 3000);
        assert_true(fd >= 0);
        const char *path = i == 0 ? "/echo" : "/stream";
        char req[256];
        snprintf(req, sizeof(req),
                 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial", path);
        assert_int_equal(tl_sends(fd, req), 0);
        assert_true(tl_server_wait_active(srv, 1, 5000)); /* it has the partial request */
        close(fd);
    }
    /* a client gone while its (delayed) handler holds the request */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /delay?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_true(tl_server_wait_active(srv, 1, 5000));
    close(fd);
    /* every one of them cleaned up (no request or connection left), and still serving */
    assert_true(tl_server_wait_idle(srv, 5000));
    assert_still_serving();
}

static void test_routes_404_405_params(void **state)
{
    struct tl_resp r;
    assert_int_equal(tl_roundtrip(port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    tl_resp_free(&r);
    assert_int_equal(tl_roundtrip(port, "DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 405);
    tl_resp_free(&r);
    assert_int_equal(tl_roundtrip(port, "GET /p/one/x/two?k=v HTTP/1.1\r\nHost: x\r\n\r\n", &r),
                     200);
    assert_string_equal(r.body, "a=one b=two q=k=v\n");
    tl_resp_free(&r);
    assert_int_equal(tl_roundtrip(port, "GET /p/one/x HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    tl_resp_free(&r);
    /* HEAD gets GET's headers without a body */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    char buf[2048];
    size_t got = 0;
    /* read until both responses are in: two status lines and the GET's body at the end */
    while (got < sizeof(buf) - 1) {
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
        buf[got] = '\0';
        char *second = strstr(buf, "HTTP/1.1 200");
        second = second ? strstr(second + 1, "HTTP/1.1 200") : NULL;
        if (second && got >= 5 && memcmp(buf + got - 5, "hello", 5) == 0)
            break;
    }
    /* exactly one body ("hello"), belonging to the GET */
    char *first = strstr(buf, "hello");
    assert_non_null(first);
    assert_null(strstr(first + 5, "hello"));
    assert_non_null(strstr(buf, "Content-Length: 5"));
    close(fd);
}

static void test_http10_closes(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.0\r\n\r\n"), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(tl_resp_header(&r, "connection"), "close");
    tl_resp_free(&r);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    /* and keeps the connection when asked to */
    fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(tl_resp_header(&r, "connection"), "keep-alive");
    tl_resp_free(&r);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    expect_status(fd, 200);
    close(fd);
}

static void test_idle_connection_closed(void **state)
{
    int fd = tl_connect(port, 4000);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    expect_status(fd, 200);
    /* idle timeout is 1.5 s in this suite */
    assert_true(tl_wait_closed(fd, 4000));
    close(fd);
}

static void test_many_connections(void **state)
{
    enum { N = 200 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = tl_connect(port, 3000);
        assert_true(fds[i] >= 0);
        assert_int_equal(tl_sends(fds[i], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    }
    for (int i = 0; i < N; i++) {
        expect_status(fds[i], 200);
        close(fds[i]);
    }
}

/* Shutdown: a request in flight finishes within the grace period, then the port is closed. */
static void test_graceful_shutdown(void **state)
{
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    struct tl_server *s2 = tl_server_start(&l, setup_routes, NULL);
    int p2 = tl_server_port(s2);
    int fd = tl_connect(p2, 3000);
    assert_int_equal(tl_sends(fd, "GET /delay?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    int idle = tl_connect(p2, 3000);
    assert_true(tl_server_wait_active(s2, 1, 5000));
    tl_server_stop(s2, 2000); /* returns when everything is closed */
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(tl_resp_header(&r, "connection"), "close");
    tl_resp_free(&r);
    assert_true(tl_wait_closed(idle, 1000));
    close(fd);
    close(idle);
    assert_int_equal(tl_connect(p2, 1000), -1);
}

static void test_chunked_trailers(void **state)
{
    /* trailers after a chunked body must not disturb the request's headers and path */
    struct dg_buf b = {0};
    dg_buf_puts(&b, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n0\r\n");
    for (int i = 0; i < 40; i++)
        dg_buf_printf(&b, "X-Trailer-%d: %0100d\r\n", i, i);
    dg_buf_puts(&b, "\r\n");
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_send(fd, b.data, b.len), 0);
    dg_buf_free(&b);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc");
    tl_resp_free(&r);
    close(fd);
    assert_still_serving();
}

/* RFC 9112's MUST-reject cases the packaged http_parser lets through: each is refused with
 * 400 (505 for the version) and a message naming what is wrong, and the connection closes. */
static void test_strict_parsing(void **state)
{
    static const struct {
        const char *req;
        int status;
        const char *says;
    } cases[] = {
        {"GET /hello HTTP/1.1\r\nHost : x\r\n\r\n", 400, "before its colon"},
        {"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400, "obs-fold"},
        {"GET /hello HTTP/1.1\r\n X-A: 1\r\nHost: x\r\n\r\n", 400, "obs-fold"},
        {"GET /hello HTTP/1.1\nHost: x\n\n", 400, "bare LF"},
        {"GET /hello HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400, "bare LF"},
        {"GET /hello HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", 400, "bare CR"},
        {"GET /hello HTTP/9.9\r\nHost: x\r\n\r\n", 505, "HTTP version not supported"},
        {"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version not supported"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3\r\nabcXY0\r\n\r\n",
         400, "chunk data"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
         400, "bare LF"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3\r\nabc\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
         400, "obs-fold"},
        {"GET /hello HTTP/1.1\r\nHost: x\r\nHost: evil\r\n\r\n", 400, "more than one Host"},
        {"GET /hello HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "without a Host"},
        {"GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"},
    };
    for (size_t i = 0; i < DG_ARRAY_LEN(cases); i++) {
        int fd = tl_connect(port, 3000);
        assert_true(fd >= 0);
        assert_int_equal(tl_sends(fd, cases[i].req), 0);
        struct tl_resp r;
        assert_int_equal(tl_read_resp(fd, &r), 0);
        if (r.status != cases[i].status || !strstr(r.body, cases[i].says))
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, r.status, r.body, cases[i].status,
                     cases[i].says);
        assert_string_equal(tl_resp_header(&r, "connection"), "close");
        tl_resp_free(&r);
        assert_true(tl_wait_closed(fd, 3000));
        close(fd);
    }
    /* the legitimate forms still work: CRLF everywhere, one Host, HTTP/1.0 without Host,
     * leading empty lines, chunk extensions and trailers, a higher 1.x minor */
    static const struct {
        const char *req, *body;
    } good[] = {
        {"\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "hello"},
        {"GET /hello HTTP/1.0\r\n\r\n", "hello"},
        {"GET /hello HTTP/1.1\r\nhost:x:80\r\nX-A: \t v \t\r\n\r\n", "hello"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
         "abcde"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\n\r\n ", "\n\r\n "},
    };
    for (size_t i = 0; i < DG_ARRAY_LEN(good); i++) {
        struct tl_resp r;
        int st = tl_roundtrip(port, good[i].req, &r);
        if (st != 200 || strcmp(r.body, good[i].body) != 0)
            fail_msg("good case %zu: got %d '%s'", i, st, r.body ? r.body : "");
        tl_resp_free(&r);
    }
    /* pipelined: the good request is answered, the bad one after it gets the 400 */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /hello HTTP/1.1\nHost: x\n\n"),
                     0);
    expect_status(fd, 200);
    expect_status(fd, 400);
    assert_true(tl_wait_closed(fd, 3000));
    close(fd);
    assert_still_serving();
}

/* Trailer fields count against the header limit (16 KiB by default): a 70 KiB trailer. */
static void test_trailer_limit_431(void **state)
{
    struct dg_buf b = {0};
    dg_buf_puts(&b, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n0\r\n");
    for (int i = 0; i < 70; i++)
        dg_buf_printf(&b, "X-T%d: %01000d\r\n", i, i);
    dg_buf_puts(&b, "\r\n");
    int fd = tl_connect(port, 3000);
    tl_send(fd, b.data, b.len); /* the server may close before all is sent */
    dg_buf_free(&b);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 431);
    assert_non_null(strstr(r.body, "trailer"));
    tl_resp_free(&r);
    close(fd);
    assert_still_serving();
}

/* A connection from `ip` (any 127/8 address is this host) to the port; -1 on failure. */
static int connect_from(const char *ip, int p)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &src.sin_addr);
    dst.sin_port = htons((uint16_t)p);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == -1 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The status of a request on a new connection from `ip`; *fd keeps the connection open
 * (closed and -1 when the server closed it). The body must contain `says` when given. */
static int request_from(const char *ip, int p, int *fd, const char *says)
{
    *fd = connect_from(ip, p);
    assert_true(*fd >= 0);
    struct tl_resp r;
    int st = -1;
    /* a connection over a cap is answered without being read: read before sending */
    struct pollfd pfd = {.fd = *fd, .events = POLLIN};
    if (poll(&pfd, 1, 200) == 0)
        assert_int_equal(tl_sends(*fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    if (tl_read_resp(*fd, &r) == 0) {
        st = r.status;
        if (says && !strstr(r.body, says))
            fail_msg("%s: %d '%s' does not say '%s'", ip, st, r.body, says);
        tl_resp_free(&r);
    }
    if (st != 200) {
        close(*fd);
        *fd = -1;
    }
    return st;
}

/* Per-listener and per-client caps: over either, 503 naming the cap, and the connection is
 * closed; others are served, and a freed slot is used again. */
static void test_connection_caps(void **state)
{
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    l.max_conns = 5;
    l.max_conns_per_client = 3;
    struct tl_server *s2 = tl_server_start(&l, setup_routes, NULL);
    int p2 = tl_server_port(s2), fds[5], fd;
    for (int i = 0; i < 3; i++)
        assert_int_equal(request_from("127.0.0.1", p2, &fds[i], "hello"), 200);
    assert_int_equal(request_from("127.0.0.1", p2, &fd, "from this client"), 503);
    for (int i = 3; i < 5; i++)
        assert_int_equal(request_from("127.0.0.2", p2, &fds[i], "hello"), 200);
    assert_int_equal(request_from("127.0.0.3", p2, &fd, "to this server"), 503);
    /* a connection closes: its slot is free again (once the server saw the close) */
    close(fds[0]);
    int st = 0;
    for (int i = 0; i < 100 && st != 200; i++) {
        st = request_from("127.0.0.3", p2, &fds[0], NULL);
        if (st != 200)
            usleep(20 * 1000);
    }
    assert_int_equal(st, 200);
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    tl_server_stop(s2, 1000);
}

/* Send `body` to `path` in pieces of `piece` bytes every `gap_ms` until the server answers;
 * returns the status and copies the answer's body into `out` (size n). */
static int trickle(const char *path, size_t len, size_t piece, int gap_ms, char *out, size_t n)
{
    int fd = tl_connect(port, 3000);
    assert_true(fd >= 0);
    char head[256];
    snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", path,
             len);
    assert_int_equal(tl_sends(fd, head), 0);
    char *body = malloc(len);
    memset(body, 'b', len);
    size_t sent = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (sent < len && poll(&pfd, 1, gap_ms) == 0) {
        size_t k = DG_MIN(piece, len - sent);
        if (tl_send(fd, body + sent, k) == -1)
            break;
        sent += k;
    }
    free(body);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    int st = r.status;
    snprintf(out, n, "%s", r.body);
    if (st == 200 && r.body_len != len)
        fail_msg("%s: %zu bytes back of %zu", path, r.body_len, len);
    tl_resp_free(&r);
    close(fd);
    return st;
}

/* A body trickling in (a byte every 100 ms, each restarting the 400 ms silence timer) gets 408
 * once the whole body's deadline passes (bodyTimeout plus 1 s per bodyMinRate bytes); a body
 * flowing at a fair rate for longer than bodyTimeout completes, buffered and streamed. */
static void test_slow_body_deadline(void **state)
{
    char msg[256];
    assert_int_equal(trickle("/echo", 1000, 1, 100, msg, sizeof(msg)), 408);
    assert_non_null(strstr(msg, "too slow"));
    assert_int_equal(trickle("/sink", 1000, 1, 100, msg, sizeof(msg)), 408);
    assert_non_null(strstr(msg, "too slow"));
    /* 48 KiB in 4 KiB pieces 100 ms apart: 1.2 s, three times bodyTimeout */
    assert_int_equal(trickle("/echo", 48 * 1024, 4096, 100, msg, sizeof(msg)), 200);
    assert_int_equal(trickle("/sink", 48 * 1024, 4096, 100, msg, sizeof(msg)), 200);
    assert_still_serving();
}

static void test_stream_route_answers_at_once(void **state)
{
    int fd = tl_connect(port, 3000);
    for (int i = 0; i < 3; i++) { /* keep-alive survives an answer given from the headers */
        assert_int_equal(tl_sends(fd, "GET /stream_sync HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        struct tl_resp r;
        assert_int_equal(tl_read_resp(fd, &r), 0);
        assert_string_equal(r.body, "sync");
        assert_true(r.keep_alive);
        tl_resp_free(&r);
    }
    close(fd);
    /* answered from the first piece of a body: the connection closes (the rest is unread) */
    fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "POST /stream_early HTTP/1.1\r\nHost: x\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n"),
                     0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "early");
    assert_string_equal(tl_resp_header(&r, "connection"), "close");
    tl_resp_free(&r);
    tl_sends(fd, "3\r\nghi\r\n0\r\n\r\n");
    assert_true(tl_wait_closed(fd, 4000));
    close(fd);
    assert_still_serving();
}

static void test_abort_then_respond(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /abort_respond HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_true(tl_server_wait_active(srv, 1, 5000));
    close(fd); /* on_abort answers: a no-op, and no double free (ASan) */
    assert_true(tl_server_wait_idle(srv, 5000));
    assert_still_serving();
}

static void test_long_content_type(void **state)
{
    struct tl_resp r;
    assert_int_equal(tl_roundtrip(port, "GET /ctype HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    assert_string_equal(r.body, "ct");
    assert_int_equal(strlen(tl_resp_header(&r, "content-type")), 699);
    tl_resp_free(&r);
}

static void test_held_body_not_timed_out(void **state)
{
    /* the body is all sent at once; the handler holds it longer than the body timeout */
    struct tl_resp r;
    assert_int_equal(tl_roundtrip(port,
                                  "POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
                                  "hello",
                                  &r),
                     200);
    assert_string_equal(r.body, "hello");
    tl_resp_free(&r);
}

static void test_short_body_closes(void **state)
{
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_true(tl_wait_closed(fd, 3000)); /* the client learns the body is incomplete */
    close(fd);
    assert_still_serving();
}

static void test_response_framing(void **state)
{
    /* HTTP/1.0 gets no chunked encoding: the close ends the body */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /chunked HTTP/1.0\r\n\r\n"), 0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_string_equal(r.body, "abcdef");
    assert_string_equal(tl_resp_header(&r, "transfer-encoding"), "");
    tl_resp_free(&r);
    close(fd);
    /* 1.1 gets chunked */
    assert_int_equal(tl_roundtrip(port, "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    assert_string_equal(r.body, "abcdef");
    assert_string_equal(tl_resp_header(&r, "transfer-encoding"), "chunked");
    tl_resp_free(&r);
    /* 204 has no body and no Content-Length; the connection stays usable */
    fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(tl_resp_header(&r, "content-length"), "");
    tl_resp_free(&r);
    expect_status(fd, 200);
    close(fd);
    /* CONNECT is refused */
    assert_int_equal(tl_roundtrip(port, "CONNECT example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n", &r),
                     501);
    tl_resp_free(&r);
}

static void test_pipelined_flood_not_read(void **state)
{
    /* a client that pipelines many requests and reads nothing: the server stops parsing
     * (bounded memory) and still serves others; then the client reads them all */
    int fd = tl_connect(port, 5000);
    struct dg_buf b = {0};
    for (int i = 0; i < 2000; i++)
        dg_buf_puts(&b, "GET /ctype HTTP/1.1\r\nHost: x\r\n\r\n");
    uint64_t before = tl_server_requests(srv);
    assert_int_equal(tl_send(fd, b.data, b.len), 0);
    dg_buf_free(&b);
    assert_true(tl_server_wait_requests(srv, before + 1, 5000)); /* the flood is being parsed */
    assert_still_serving();
    for (int i = 0; i < 2000; i++)
        expect_status(fd, 200);
    close(fd);
}

static void test_stream_response_before_body(void **state)
{
    /* the streaming echo starts its response before reading the body: no 100 Continue may
     * appear inside it, and having said "Connection: close" it must not answer more */
    int fd = tl_connect(port, 3000);
    assert_int_equal(tl_sends(fd, "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                  "Expect: 100-continue\r\n\r\nabc"
                                  "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"),
                     0);
    struct tl_resp r;
    assert_int_equal(tl_read_resp(fd, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc");
    assert_string_equal(tl_resp_header(&r, "connection"), "close");
    tl_resp_free(&r);
    assert_true(tl_wait_closed(fd, 3000)); /* and nothing for the GET */
    close(fd);
    assert_still_serving();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_and_headers),
        cmocka_unit_test(test_split_writes),
        cmocka_unit_test(test_keep_alive_many),
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_chunked_request_body),
        cmocka_unit_test(test_streaming_route),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_oversized_headers_431),
        cmocka_unit_test(test_too_many_headers_431),
        cmocka_unit_test(test_oversized_body_413),
        cmocka_unit_test(test_garbage_400),
        cmocka_unit_test(test_slow_client_408),
        cmocka_unit_test(test_client_closes_mid_body),
        cmocka_unit_test(test_routes_404_405_params),
        cmocka_unit_test(test_http10_closes),
        cmocka_unit_test(test_idle_connection_closed),
        cmocka_unit_test(test_many_connections),
        cmocka_unit_test(test_chunked_trailers),
        cmocka_unit_test(test_strict_parsing),
        cmocka_unit_test(test_trailer_limit_431),
        cmocka_unit_test(test_connection_caps),
        cmocka_unit_test(test_slow_body_deadline),
        cmocka_unit_test(test_stream_route_answers_at_once),
        cmocka_unit_test(test_abort_then_respond),
        cmocka_unit_test(test_long_content_type),
        cmocka_unit_test(test_held_body_not_timed_out),
        cmocka_unit_test(test_short_body_closes),
        cmocka_unit_test(test_response_framing),
        cmocka_unit_test(test_pipelined_flood_not_read),
        cmocka_unit_test(test_stream_response_before_body),
        cmocka_unit_test(test_graceful_shutdown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
