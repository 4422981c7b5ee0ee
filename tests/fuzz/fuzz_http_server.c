/*
 * fuzz_http_server.c: libFuzzer target for the HTTP server (lib/http_server.c)
 * through its real code path: a dg_http_server listening on 127.0.0.1, a real
 * TCP connection per input, and the server's own libuv loop, run here step by
 * step on the fuzzer's thread.
 *
 * Input: the first byte steers the client, the rest are the bytes it sends.
 *   bits 0-1  number of extra split points (0-3), so the server sees the bytes
 *             in up to four reads (a request line or a chunk size cut in two)
 *   bits 2-3  shift of the split points (-1..+2 bytes)
 *   bits 4-6  how the client ends: 0-3 half-close (FIN) and read until the
 *             server closes; 4, 5 reset (RST) at once; 6 "slow": 3 ms pass
 *             without the loop running before the last piece is sent (so a
 *             server timer and the last bytes meet in one loop turn), and the
 *             client waits up to 8 ms for the server to time out before it
 *             half-closes; 7 the server is closed (grace 0) with the client
 *             still connected, then started afresh
 *   bit 7     pieces are sent without running the loop between them (they
 *             coalesce into one read)
 * Seeds start with a printable byte: ' ' and '0' one piece, '"' three, '#'
 * four, 'A' two pieces then RST, 'a' two pieces with the last one "slow", 'q'
 * server close.
 *
 * Routes cover the server's paths: buffered echo, ":capture" routes, a route
 * that answers 128 KiB at once and one that streams 128 KiB with on_drain flow
 * control, streaming request bodies with the handler pausing and resuming the
 * socket, a streaming route that asks for the body only later, and requests
 * answered later from a check handle with and without on_abort (so requests
 * get orphaned and aborted when the client goes away).
 * Limits are small (1 KiB of headers, 10 headers, 4 KiB of body, 2 ms timers),
 * and so are the socket buffers of the connection (the server's end is found
 * with uv_walk), so big answers take the server's queued-write path.
 *
 * Checks besides memory safety: everything the server sends parses as a
 * sequence of HTTP responses, none after one that says "Connection: close"
 * (skipped when the input holds "HEAD", whose answers carry a Content-Length
 * without a body); the server is done with the connection within a bounded
 * number of loop turns (else it is closed and started afresh, counted as a
 * "restart" and reported at exit; FUZZ_HTTP_STRICT=1 aborts instead); a
 * server closed with grace 0 frees itself and every request; and no
 * descriptor leaks across inputs.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <uv.h>

#include "dirigent/http.h"
#include "dirigent/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PUMPS_PER_PIECE 3  /* loop turns after each piece: accept, read, deferred work */
#define MAX_PUMPS       64 /* loop turns to wait for the server to finish with a client */
#define GAP_MS          3  /* ending 6: time before the last piece, past the 2 ms timers */
#define STALL_MS        8  /* ending 6: longest wait for the server to time out */
#define BIG_BODY        (128 * 1024)
#define SMALL_SOCKBUF   16384 /* both ends of the connection, so big answers get queued */
#define FD_CHECK_EVERY  1024
#define FD_MAX          64

static uv_loop_t loop;
static uv_check_t check;
static struct dg_http_server *srv;
static int srv_port;
static bool strict, verbose;
static unsigned long n_inputs, n_restarts;
static char big_body[BIG_BODY];

/* FUZZ_HTTP_VERBOSE=1: what the client receives and what happens to each job. */
#define trace(...)                                                                                 \
    do {                                                                                           \
        if (verbose)                                                                               \
            fprintf(stderr, __VA_ARGS__);                                                          \
    } while (0)

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http_server: %s: %s\n", what, detail);
    abort();
}

/* ---- deferred work ----------------------------------------------------------------------- */

/*
 * A handler that does not answer at once leaves a job: what to do with its request on a
 * later loop turn (the check handle runs them). A job is freed only there, after its
 * request is gone (`r` NULL): answered, or aborted by the server (on_abort). Handlers never
 * touch a request after a call that may end it.
 */
enum job_kind { J_RESPOND, J_READ, J_RESUME, J_DRAIN };

struct job {
    struct dg_http_req *r;
    enum job_kind kind;
    bool queued;
    struct job *link;
    uint64_t bytes;
    unsigned chunks;
    uint32_t sum;
};

static struct job *jobs;
static unsigned live_jobs;

static void job_queue(struct job *j, enum job_kind kind)
{
    j->kind = kind;
    if (j->queued)
        return;
    j->queued = true;
    j->link = jobs;
    jobs = j;
}

static struct job *job_new(struct dg_http_req *r)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->r = r;
    live_jobs++;
    trace("[job %p] new for %s %.*s\n", (void *)j, dg_http_req_method(r),
          (int)dg_http_req_path(r).len, dg_http_req_path(r).ptr);
    return j;
}

/* The request is answered or gone: the job is freed on the next loop turn. */
static void job_finish(struct job *j)
{
    trace("[job %p] finish\n", (void *)j);
    j->r = NULL;
    job_queue(j, J_RESPOND);
}

static void on_abort(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    trace("[job %p] on_abort\n", (void *)j);
    if (j->r && j->r != r)
        die("on_abort", "called for a request the job does not hold");
    job_finish(j); /* j->r may already be NULL: aborted while we were answering */
}

/* Streaming body: echo each piece into a chunked response; pause after every odd piece and
 * resume on the next loop turn. */
static void st_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    struct job *j = ud;
    j->bytes += n;
    j->chunks++;
    for (size_t i = 0; i < n; i++)
        j->sum = j->sum * 31 + (unsigned char)d[i];
    dg_http_resp_write(r, d, n);
    if (!j->r)
        return; /* the write failed and the request was aborted */
    if (j->chunks % 2 == 1) {
        dg_http_req_pause(r);
        job_queue(j, J_RESUME);
    }
}

static void st_end(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    char tail[64];
    int n = snprintf(tail, sizeof(tail), "\n%llu bytes in %u pieces, sum %08x\n",
                     (unsigned long long)j->bytes, j->chunks, j->sum);
    dg_http_resp_write(r, tail, (size_t)n);
    if (!j->r)
        return;
    job_finish(j);
    dg_http_resp_end(r);
}

/* Body read late (the parser held it meanwhile): answer with a length once it is in. */
static void up_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    struct job *j = ud;
    j->bytes += n;
    j->chunks++;
}

static void up_end(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    struct dg_str id = dg_http_req_param(r, "id");
    job_finish(j);
    dg_http_respond_text(r, 201, "upload %.*s: %llu bytes in %u pieces", (int)id.len,
                         id.ptr ? id.ptr : "", (unsigned long long)j->bytes, j->chunks);
}

/* Streamed big answer: write while less than 64 KiB is queued, then wait for on_drain. */
static void bs_drain(struct dg_http_req *r, void *ud);

static void bs_write(struct job *j)
{
    struct dg_http_req *r = j->r;
    while (j->bytes < BIG_BODY && dg_http_resp_queued(r) < 64 * 1024) {
        size_t n = DG_MIN((size_t)16 * 1024, BIG_BODY - (size_t)j->bytes);
        dg_http_resp_write(r, big_body + j->bytes, n);
        if (!j->r)
            return; /* the write failed and the request was aborted */
        j->bytes += n;
    }
    if (j->bytes < BIG_BODY) {
        dg_http_resp_on_drain(r, bs_drain, j);
        return;
    }
    job_finish(j);
    dg_http_resp_end(r);
}

/* Called from the server's write callback: continue on the next loop turn. */
static void bs_drain(struct dg_http_req *r, void *ud)
{
    job_queue(ud, J_DRAIN);
}

static void on_check(uv_check_t *h)
{
    struct job *list = jobs;
    jobs = NULL;
    while (list) {
        struct job *j = list;
        list = j->link;
        j->link = NULL;
        j->queued = false;
        struct dg_http_req *r = j->r;
        trace("[job %p] run %d%s\n", (void *)j, (int)j->kind, r ? "" : " (free)");
        if (!r) {
            free(j);
            live_jobs--;
            continue;
        }
        switch (j->kind) {
        case J_RESPOND: {
            struct dg_str p = dg_http_req_path(r);
            job_finish(j);
            dg_http_resp_header(r, "X-Deferred", "yes");
            dg_http_respond(r, 200, "text/plain", p.ptr, p.len);
            break;
        }
        case J_READ:
            dg_http_req_read_body(r, up_data, up_end, j);
            break;
        case J_RESUME:
            dg_http_req_resume(r);
            break;
        case J_DRAIN:
            bs_write(j);
            break;
        }
    }
}

/* ---- routes ------------------------------------------------------------------------------ */

static void h_root(struct dg_http_req *r, void *ud)
{
    dg_http_respond_text(r, 200, "hello %s", dg_http_req_peer(r));
}

/* Touch every accessor, answer the body back with a summary of the request in headers. */
static void h_echo(struct dg_http_req *r, void *ud)
{
    size_t n, total = 0;
    const struct dg_http_header *h = dg_http_req_headers(r, &n);
    for (size_t i = 0; i < n; i++)
        total += h[i].name.len + h[i].value.len +
                 (h[i].name.len ? (unsigned char)h[i].name.ptr[0] : 0) +
                 (h[i].value.len ? (unsigned char)h[i].value.ptr[h[i].value.len - 1] : 0);
    struct dg_str url = dg_http_req_url(r), q = dg_http_req_query(r);
    struct dg_str ct = dg_http_req_header(r, "content-type");
    struct dg_str probe = dg_http_req_header(r, "X-PROBE");
    char buf[256];
    snprintf(buf, sizeof(buf), "%s %.*s q=%.*s ct=%.*s probe=%.*s n=%zu t=%zu cl=%lld ka=%d v=1.%d",
             dg_http_req_method(r), (int)DG_MIN(url.len, 64), url.ptr, (int)DG_MIN(q.len, 32),
             q.ptr ? q.ptr : "", (int)DG_MIN(ct.len, 32), ct.ptr ? ct.ptr : "",
             (int)DG_MIN(probe.len, 32), probe.ptr ? probe.ptr : "", n, total,
             (long long)dg_http_req_content_length(r), dg_http_req_keep_alive(r),
             dg_http_req_version_minor(r));
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?'; /* a header value must not carry CR/LF */
    dg_http_resp_header(r, "X-Echo", buf);
    struct dg_str b = dg_http_req_body(r);
    dg_http_respond(r, 200, "application/octet-stream", b.ptr, b.len);
}

static void h_items(struct dg_http_req *r, void *ud)
{
    struct dg_str id = dg_http_req_param(r, "id"), name = dg_http_req_param(r, "name");
    struct dg_str none = dg_http_req_param(r, "missing");
    if (none.ptr)
        die("param", "a capture the route does not have");
    dg_http_respond_text(r, 200, "id=%.*s name=%.*s", (int)id.len, id.ptr ? id.ptr : "",
                         (int)name.len, name.ptr ? name.ptr : "");
}

static void h_big(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "application/octet-stream", big_body, sizeof(big_body));
}

static void h_bigstream(struct dg_http_req *r, void *ud)
{
    struct job *j = job_new(r);
    dg_http_req_on_abort(r, on_abort, j);
    dg_http_resp_start(r, 200, BIG_BODY);
    if (j->r)
        bs_write(j);
}

static void h_stream(struct dg_http_req *r, void *ud)
{
    struct job *j = job_new(r);
    dg_http_req_on_abort(r, on_abort, j);
    dg_http_resp_header(r, "X-Stream", "yes");
    dg_http_resp_start(r, 200, -1);
    if (j->r)
        dg_http_req_read_body(r, st_data, st_end, j); /* may end the request at once */
}

static void h_upload(struct dg_http_req *r, void *ud)
{
    struct job *j = job_new(r);
    dg_http_req_on_abort(r, on_abort, j);
    job_queue(j, J_READ);
}

/* Answered on the next loop turn without on_abort: if the client leaves first, the request
 * is orphaned and the answer discarded. */
static void h_defer(struct dg_http_req *r, void *ud)
{
    job_queue(job_new(r), J_RESPOND);
}

static void h_later(struct dg_http_req *r, void *ud)
{
    struct job *j = job_new(r);
    dg_http_req_on_abort(r, on_abort, j);
    job_queue(j, J_RESPOND);
}

/* ---- the server -------------------------------------------------------------------------- */

static void server_start(void)
{
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    l.max_header_bytes = 1024;
    l.max_headers = 10;
    l.max_body_bytes = 4096;
    l.header_timeout_ms = 2;
    l.body_timeout_ms = 2;
    l.idle_timeout_ms = 2;
    srv = dg_http_server_new(&loop, &l, "fuzz");
    dg_http_route(srv, "GET", "/", h_root, NULL, 0);
    dg_http_route(srv, "POST", "/echo", h_echo, NULL, 0);
    dg_http_route(srv, "GET", "/items/:id/sub/:name", h_items, NULL, 0);
    dg_http_route(srv, "GET", "/big", h_big, NULL, 0);
    dg_http_route(srv, "GET", "/bigstream", h_bigstream, NULL, 0);
    dg_http_route(srv, NULL, "/stream", h_stream, NULL, DG_HTTP_STREAM);
    dg_http_route(srv, "POST", "/upload/:id", h_upload, NULL, DG_HTTP_STREAM);
    dg_http_route(srv, NULL, "/defer/*", h_defer, NULL, 0);
    dg_http_route(srv, "GET", "/later", h_later, NULL, 0);
    dg_http_route(srv, NULL, "/any/:a/*", h_echo, NULL, 0);
    struct dg_err err = {0};
    if (dg_http_server_listen(srv, "127.0.0.1", 0, &err) != 0)
        die("listen", err.msg);
    srv_port = dg_http_server_port(srv);
}

static void server_closed(void *ud)
{
    *(bool *)ud = true;
}

static bool quiescent(void)
{
    struct dg_http_server_stats st;
    dg_http_server_stats(srv, &st);
    return st.open_conns == 0 && st.active_reqs == 0 && !jobs && live_jobs == 0;
}

/* The server kept a connection or request past the bound: close it (grace 0) and start a
 * fresh one, so nothing carries over to the next input. */
static void server_reopen(void);

static void server_restart(void)
{
    struct dg_http_server_stats st;
    dg_http_server_stats(srv, &st);
    if (strict) {
        char msg[128];
        snprintf(msg, sizeof(msg), "open_conns=%llu active_reqs=%llu live_jobs=%u",
                 (unsigned long long)st.open_conns, (unsigned long long)st.active_reqs, live_jobs);
        die("the server did not finish with a client", msg);
    }
    n_restarts++;
    server_reopen();
}

/* Close the server with grace 0 (aborting what is in flight), wait until it is freed and
 * every job settled, start a new one. */
static void server_reopen(void)
{
    bool closed = false;
    dg_http_server_close(srv, 0, server_closed, &closed);
    for (int i = 0; i < 10000 && (!closed || jobs || live_jobs); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!closed) {
        struct dg_http_server_stats st;
        dg_http_server_stats(srv, &st);
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "done callback not called after close with grace 0 (open_conns=%llu "
                 "active_reqs=%llu live_jobs=%u)",
                 (unsigned long long)st.open_conns, (unsigned long long)st.active_reqs, live_jobs);
        die("server close", msg);
    }
    if (live_jobs)
        die("server close", "requests still held by handlers after the server closed");
    server_start();
}

static void report(void)
{
    fprintf(stderr, "fuzz_http_server: %lu inputs, %lu server restarts\n", n_inputs, n_restarts);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    dg_log_set_level(DG_LOG_OFF);
    const char *s = getenv("FUZZ_HTTP_STRICT");
    strict = s && *s == '1';
    s = getenv("FUZZ_HTTP_VERBOSE");
    verbose = s && *s == '1';
    for (size_t i = 0; i < sizeof(big_body); i++)
        big_body[i] = (char)('a' + i % 26);
    if (uv_loop_init(&loop) != 0)
        die("uv_loop_init", "failed");
    uv_check_init(&loop, &check);
    /* Left referenced: uv_run returns at once on a loop with nothing referenced, and jobs
     * may be left when the server is gone. */
    uv_check_start(&check, on_check);
    server_start();
    atexit(report);
    return 0;
}

/* ---- the client -------------------------------------------------------------------------- */

struct client {
    int fd;
    bool eof;        /* the server closed (or reset) the connection */
    bool check_resp; /* validate what the server sends */
    bool closed_msg; /* a response said the connection closes after it */
    bool after_close;
    http_parser parser;
};

/* RFC 9112 9.6: after a response with "close" the server answers nothing more. */
static int resp_begin(http_parser *p)
{
    struct client *c = p->data;
    if (c->closed_msg) {
        c->after_close = true;
        return -1;
    }
    return 0;
}

static int resp_complete(http_parser *p)
{
    struct client *c = p->data;
    if (!http_should_keep_alive(p))
        c->closed_msg = true;
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = resp_begin,
    .on_message_complete = resp_complete,
};

static void client_open(struct client *c, bool check_resp)
{
    memset(c, 0, sizeof(*c));
    c->check_resp = check_resp;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1)
        die("socket", strerror(errno));
    int small = SMALL_SOCKBUF;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The kernel completes the handshake without the server accepting yet, so waiting here
     * (poll, not a blocking connect: libFuzzer's SIGALRM would interrupt that) is short. */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        if (errno != EINPROGRESS && errno != EINTR)
            die("connect", strerror(errno));
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        int rc;
        while ((rc = poll(&pfd, 1, 5000)) == -1 && errno == EINTR)
            ;
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (rc != 1 || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1 || soerr)
            die("connect", rc != 1 ? "timed out" : strerror(soerr ? soerr : errno));
    }
}

/* uv_walk callback: shrink the send buffer of the server's end of our connection (its peer
 * port is our local port), as a slow client would make it fill up. */
static void shrink_sndbuf(uv_handle_t *h, void *arg)
{
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    struct sockaddr_in sa;
    int len = sizeof(sa);
    if (uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&sa, &len) != 0 ||
        sa.sin_family != AF_INET || ntohs(sa.sin_port) != *(int *)arg)
        return;
    int small = SMALL_SOCKBUF;
    uv_send_buffer_size(h, &small);
}

static int client_local_port(const struct client *c)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(c->fd, (struct sockaddr *)&sa, &len) == -1)
        die("getsockname", strerror(errno));
    return ntohs(sa.sin_port);
}

static void client_feed(struct client *c, const char *d, size_t n)
{
    if (verbose)
        fprintf(stderr, "[client] received %zu bytes: %.*s\n", n, (int)DG_MIN(n, 200), d);
    if (!c->check_resp)
        return;
    size_t used = http_parser_execute(&c->parser, &resp_settings, d, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->after_close) {
        fprintf(stderr,
                "fuzz_http_server: server answered after a \"Connection: close\" "
                "response:\n%.*s\n",
                (int)DG_MIN(n, 512), d);
        abort();
    }
    if (e != HPE_OK || used != n) {
        fprintf(stderr,
                "fuzz_http_server: server sent bytes that are not HTTP responses "
                "(%s) near:\n%.*s\n",
                http_errno_description(e), (int)DG_MIN(n, 512), d);
        abort();
    }
}

/* Read and check what the server sent; notes EOF or a reset. */
static void client_drain(struct client *c)
{
    char buf[64 * 1024];
    while (c->fd >= 0 && !c->eof) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            client_feed(c, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->eof = true; /* a response cut short by a close is fine: no EOF check */
            if (verbose)
                fprintf(stderr, "[client] %s\n", n == 0 ? "EOF" : strerror(errno));
        }
        if (n == -1 && errno == EINTR)
            continue;
        break;
    }
}

static void client_send(struct client *c, const uint8_t *d, size_t n)
{
    while (n > 0 && !c->eof) {
        ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
        if (w > 0) {
            d += w;
            n -= (size_t)w;
            continue;
        }
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1 && errno == EAGAIN) {
            /* the server stopped reading (paused or busy): let it run */
            uv_run(&loop, UV_RUN_NOWAIT);
            client_drain(c);
            continue;
        }
        c->eof = true; /* reset by the server: the rest is not sent */
    }
}

/* Close without a TIME_WAIT on our side: SO_LINGER 0 sends a reset if still open. */
static void client_close(struct client *c)
{
    if (c->fd < 0)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(c->fd);
    c->fd = -1;
}

static void pump(struct client *c)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    if (c)
        client_drain(c);
}

static void check_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    if (n > FD_MAX) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%d open descriptors", n);
        die("descriptor leak", msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctrl = data[0];
    data++;
    size--;
    n_inputs++;

    /* split points, shifted and kept in order */
    unsigned nsplit = ctrl & 3;
    int shift = (int)((ctrl >> 2) & 3) - 1;
    unsigned ending = (ctrl >> 4) & 7;
    bool coalesce = ctrl & 0x80;
    size_t cuts[5];
    cuts[0] = 0;
    for (unsigned i = 1; i <= nsplit; i++) {
        long p = (long)(size * i / (nsplit + 1)) + shift;
        p = p < (long)cuts[i - 1] ? (long)cuts[i - 1] : p > (long)size ? (long)size : p;
        cuts[i] = (size_t)p;
    }
    cuts[nsplit + 1] = size;

    struct client c;
    client_open(&c, !memmem(data, size, "HEAD", 4));
    pump(&c); /* accept */
    int port = client_local_port(&c);
    uv_walk(&loop, shrink_sndbuf, &port);
    for (unsigned i = 0; i <= nsplit; i++) {
        if (ending == 6 && i == nsplit) {
            struct timespec ts = {0, GAP_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
        client_send(&c, data + cuts[i], cuts[i + 1] - cuts[i]);
        for (int k = 0; k < (coalesce ? 0 : PUMPS_PER_PIECE); k++)
            pump(&c);
    }
    for (int k = 0; k < PUMPS_PER_PIECE; k++)
        pump(&c);

    if (ending == 4 || ending == 5) {
        client_close(&c);
    } else {
        if (ending == 7)
            server_reopen();
        if (ending == 6) {
            uint64_t until = uv_hrtime() + STALL_MS * 1000000ull;
            while (!c.eof && uv_hrtime() < until) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                pump(&c);
            }
        }
        if (!c.eof)
            shutdown(c.fd, SHUT_WR);
        for (int k = 0; k < MAX_PUMPS && !c.eof; k++)
            pump(&c);
        client_close(&c);
    }
    for (int k = 0; k < MAX_PUMPS && !quiescent(); k++)
        pump(NULL);
    if (!quiescent())
        server_restart();
    pump(NULL); /* close callbacks */
    if (n_inputs % FD_CHECK_EVERY == 0)
        check_fds();
    return 0;
}
