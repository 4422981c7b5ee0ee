/*
 * fuzz_h2_server.c: libFuzzer target for the HTTP server's h2c side (lib/http2_server.c and
 * its hooks in lib/http_server.c) through its real code path: a dg_http_server with h2c enabled
 * listening on 127.0.0.1, a real TCP connection per input, and the server's own libuv loop run
 * here step by step on the fuzzer's thread.
 *
 * Input: the first byte steers the client, the rest are the frames it sends after the client
 * preface and an empty SETTINGS frame (which the client always sends first, so the fuzzer
 * starts inside HTTP/2).
 *   bits 0-1  number of extra split points (0-3): the server sees the frames in up to four reads
 *   bit  2    start by upgrade: an HTTP/1.1 request with Upgrade: h2c (answered as stream 1),
 *             then the preface and the frames
 *   bits 4-5  how the client ends: 0, 1 half-close (FIN) and read until the server closes;
 *             2 reset (RST) at once; 3 the server is closed (grace 0) with the client still
 *             connected, then started afresh
 *   bit  6    the client ACKs the server's SETTINGS as soon as it sees them
 *   bit  7    pieces are sent without running the loop between them
 *
 * Routes cover the stream paths: buffered echo (every accessor), a streaming echo that pauses
 * and resumes, a route answered later from a check handle with on_abort and one without (an
 * orphan), a streamed 128 KiB answer with on_drain, trailers, and gRPC's trailers-only answer.
 * Limits are small (1 KiB of headers, 10 headers, 4 KiB of body, 2 ms timers, 4 streams).
 *
 * Checks besides memory safety: what the server sends is a sequence of well-formed frames, none
 * longer than the client's SETTINGS_MAX_FRAME_SIZE (16384); the server is done with the
 * connection within a bounded number of loop turns (else it is closed and started afresh,
 * counted as a "restart"; FUZZ_HTTP_STRICT=1 aborts instead); a server closed with grace 0
 * frees itself and every request; no descriptor leaks across inputs.
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

#include <uv.h>

#include "dirigent/http.h"
#include "dirigent/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PUMPS_PER_PIECE 3
#define MAX_PUMPS       64
#define BIG_BODY        (128 * 1024)
#define FD_CHECK_EVERY  1024
#define FD_MAX          64

static uv_loop_t loop;
static uv_check_t check;
static struct dg_http_server *srv;
static int srv_port;
static bool strict;
static unsigned long n_inputs, n_restarts;
static char big_body[BIG_BODY];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_h2_server: %s: %s\n", what, detail);
    abort();
}

/* ---- deferred work (as in fuzz_http_server.c) -------------------------------------------- */

enum job_kind { J_RESPOND, J_RESUME, J_DRAIN };

struct job {
    struct dg_http_req *r;
    enum job_kind kind;
    bool queued;
    struct job *link;
    uint64_t bytes;
    unsigned chunks;
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
    return j;
}

static void job_finish(struct job *j)
{
    j->r = NULL;
    job_queue(j, J_RESPOND);
}

static void on_abort(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    if (j->r && j->r != r)
        die("on_abort", "called for a request the job does not hold");
    job_finish(j);
}

static void st_data(struct dg_http_req *r, const char *d, size_t n, void *ud)
{
    struct job *j = ud;
    j->bytes += n;
    j->chunks++;
    dg_http_resp_write(r, d, n);
    if (!j->r)
        return;
    if (j->chunks % 2 == 1) {
        dg_http_req_pause(r);
        job_queue(j, J_RESUME);
    }
}

static void st_end(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    char tail[64];
    int n = snprintf(tail, sizeof(tail), "\n%llu bytes in %u pieces\n",
                     (unsigned long long)j->bytes, j->chunks);
    dg_http_resp_write(r, tail, (size_t)n);
    if (!j->r)
        return;
    job_finish(j);
    dg_http_resp_trailer(r, dg_str_c("x-pieces"), dg_str_c("counted"));
    dg_http_resp_end(r);
}

static void bs_drain(struct dg_http_req *r, void *ud);

static void bs_write(struct job *j)
{
    struct dg_http_req *r = j->r;
    while (j->bytes < BIG_BODY && dg_http_resp_queued(r) < 32 * 1024) {
        size_t n = DG_MIN((size_t)16 * 1024, BIG_BODY - (size_t)j->bytes);
        dg_http_resp_write(r, big_body + j->bytes, n);
        if (!j->r)
            return;
        j->bytes += n;
    }
    if (j->bytes < BIG_BODY) {
        dg_http_resp_on_drain(r, bs_drain, j);
        return;
    }
    job_finish(j);
    dg_http_resp_end(r);
}

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
    dg_http_respond_text(r, 200, "hello %s h2=%d", dg_http_req_peer(r), dg_http_req_is_h2(r));
}

static void h_echo(struct dg_http_req *r, void *ud)
{
    size_t n, total = 0;
    const struct dg_http_header *h = dg_http_req_headers(r, &n);
    for (size_t i = 0; i < n; i++)
        total += h[i].name.len + h[i].value.len +
                 (h[i].name.len ? (unsigned char)h[i].name.ptr[0] : 0) +
                 (h[i].value.len ? (unsigned char)h[i].value.ptr[h[i].value.len - 1] : 0);
    struct dg_str url = dg_http_req_url(r), q = dg_http_req_query(r);
    struct dg_str host = dg_http_req_header(r, "Host");
    char buf[256];
    snprintf(buf, sizeof(buf), "%s %.*s q=%.*s host=%.*s n=%zu t=%zu cl=%lld ka=%d",
             dg_http_req_method(r), (int)DG_MIN(url.len, 64), url.ptr ? url.ptr : "",
             (int)DG_MIN(q.len, 32), q.ptr ? q.ptr : "", (int)DG_MIN(host.len, 32),
             host.ptr ? host.ptr : "", n, total, (long long)dg_http_req_content_length(r),
             dg_http_req_keep_alive(r));
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    dg_http_resp_header(r, "X-Echo", buf);
    struct dg_str b = dg_http_req_body(r);
    dg_http_respond(r, 200, "application/octet-stream", b.ptr, b.len);
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
        dg_http_req_read_body(r, st_data, st_end, j);
}

static void h_defer(struct dg_http_req *r, void *ud)
{
    job_queue(job_new(r), J_RESPOND); /* no on_abort: an orphan if the client goes */
}

static void h_later(struct dg_http_req *r, void *ud)
{
    struct job *j = job_new(r);
    dg_http_req_on_abort(r, on_abort, j);
    job_queue(j, J_RESPOND);
}

static void h_grpc(struct dg_http_req *r, void *ud)
{
    dg_http_resp_header(r, "grpc-status", "5");
    dg_http_resp_header(r, "grpc-message", "not found");
    dg_http_respond(r, 200, "application/grpc", NULL, 0);
}

static void h_abort(struct dg_http_req *r, void *ud)
{
    dg_http_resp_start(r, 200, 10);
    dg_http_resp_write(r, "abc", 3);
    dg_http_resp_abort(r);
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
    l.h2_max_streams = 4;
    srv = dg_http_server_new(&loop, &l, "fuzz");
    dg_http_server_enable_h2c(srv);
    dg_http_route(srv, "GET", "/", h_root, NULL, 0);
    dg_http_route(srv, "POST", "/echo", h_echo, NULL, 0);
    dg_http_route(srv, "GET", "/bigstream", h_bigstream, NULL, 0);
    dg_http_route(srv, NULL, "/s", h_stream, NULL, DG_HTTP_STREAM);
    dg_http_route(srv, NULL, "/d/*", h_defer, NULL, 0);
    dg_http_route(srv, "GET", "/l", h_later, NULL, 0);
    dg_http_route(srv, NULL, "/g", h_grpc, NULL, DG_HTTP_STREAM);
    dg_http_route(srv, "GET", "/a", h_abort, NULL, 0);
    dg_http_route(srv, NULL, "/e/:a/*", h_echo, NULL, 0);
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

static void server_reopen(void)
{
    bool closed = false;
    dg_http_server_close(srv, 0, server_closed, &closed);
    for (int i = 0; i < 10000 && (!closed || jobs || live_jobs); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!closed)
        die("server close", "done callback not called after close with grace 0");
    if (live_jobs)
        die("server close", "requests still held by handlers after the server closed");
    server_start();
}

static void server_restart(void)
{
    if (strict) {
        struct dg_http_server_stats st;
        dg_http_server_stats(srv, &st);
        char msg[128];
        snprintf(msg, sizeof(msg), "open_conns=%llu active_reqs=%llu live_jobs=%u",
                 (unsigned long long)st.open_conns, (unsigned long long)st.active_reqs, live_jobs);
        die("the server did not finish with a client", msg);
    }
    n_restarts++;
    server_reopen();
}

static void report(void)
{
    fprintf(stderr, "fuzz_h2_server: %lu inputs, %lu server restarts\n", n_inputs, n_restarts);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    dg_log_set_level(DG_LOG_OFF);
    const char *s = getenv("FUZZ_HTTP_STRICT");
    strict = s && *s == '1';
    for (size_t i = 0; i < sizeof(big_body); i++)
        big_body[i] = (char)('a' + i % 26);
    if (uv_loop_init(&loop) != 0)
        die("uv_loop_init", "failed");
    uv_check_init(&loop, &check);
    uv_check_start(&check, on_check);
    server_start();
    atexit(report);
    return 0;
}

/* ---- the client -------------------------------------------------------------------------- */

struct client {
    int fd;
    bool eof;
    bool ack;       /* ACK the server's SETTINGS */
    size_t skip;    /* bytes of the HTTP/1.1 101 answer still to skip (upgrade) */
    bool in_head;   /* reading the 101 head */
    char tail[4];   /* last bytes of the head, to find its end */
    uint8_t hdr[9]; /* the frame header being read */
    size_t hn;
    uint32_t left; /* payload bytes of the current frame still to skip */
};

static void client_open(struct client *c, bool upgrade, bool ack)
{
    memset(c, 0, sizeof(*c));
    c->ack = ack;
    c->in_head = upgrade;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1)
        die("socket", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
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

static void client_send_raw(struct client *c, const void *d, size_t n);

/* Check the frames the server sends: well-formed headers, no frame over 16384 bytes. */
static void client_feed(struct client *c, const uint8_t *d, size_t n)
{
    while (n > 0) {
        if (c->in_head) { /* "HTTP/1.1 101 ...\r\n\r\n" or an HTTP/1.1 error answer */
            memmove(c->tail, c->tail + 1, 3);
            c->tail[3] = (char)*d;
            d++;
            n--;
            if (memcmp(c->tail, "\r\n\r\n", 4) == 0)
                c->in_head = false;
            continue;
        }
        if (c->left) {
            size_t k = DG_MIN((size_t)c->left, n);
            c->left -= (uint32_t)k;
            d += k;
            n -= k;
            continue;
        }
        c->hdr[c->hn++] = *d++;
        n--;
        if (c->hn < 9)
            continue;
        c->hn = 0;
        uint32_t len = (uint32_t)c->hdr[0] << 16 | (uint32_t)c->hdr[1] << 8 | c->hdr[2];
        if (len > 16384) {
            char msg[64];
            snprintf(msg, sizeof(msg), "a frame of type %u with %u bytes", c->hdr[3], len);
            die("server broke the frame size limit", msg);
        }
        if (c->hdr[3] == 4 && !(c->hdr[4] & 1) && c->ack) {
            static const uint8_t ack[9] = {0, 0, 0, 4, 1, 0, 0, 0, 0};
            client_send_raw(c, ack, sizeof(ack));
        }
        c->left = len;
    }
}

static void client_drain(struct client *c)
{
    uint8_t buf[64 * 1024];
    while (c->fd >= 0 && !c->eof) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            client_feed(c, buf, (size_t)n);
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN)
            c->eof = true;
        break;
    }
}

static void client_send_raw(struct client *c, const void *d, size_t n)
{
    const uint8_t *p = d;
    while (n > 0 && !c->eof) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1 && errno == EAGAIN)
            return; /* the server does not read: the rest is dropped (no recursion here) */
        c->eof = true;
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
            uv_run(&loop, UV_RUN_NOWAIT);
            client_drain(c);
            continue;
        }
        c->eof = true;
    }
}

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

    unsigned nsplit = ctrl & 3;
    bool upgrade = ctrl & 4;
    unsigned ending = (ctrl >> 4) & 3;
    bool ack = ctrl & 0x40, coalesce = ctrl & 0x80;
    size_t cuts[5];
    cuts[0] = 0;
    for (unsigned i = 1; i <= nsplit; i++)
        cuts[i] = size * i / (nsplit + 1);
    cuts[nsplit + 1] = size;

    struct client c;
    client_open(&c, upgrade, ack);
    pump(&c); /* accept */
    static const char up[] = "GET /e/up/x?q=1 HTTP/1.1\r\nHost: fn\r\nConnection: Upgrade, "
                             "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
                             "\r\n";
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                     "\0\0\0\4\0\0\0\0\0"; /* + empty SETTINGS */
    if (upgrade) {
        client_send(&c, (const uint8_t *)up, sizeof(up) - 1);
        pump(&c);
    }
    client_send(&c, preface, sizeof(preface) - 1);
    for (unsigned i = 0; i <= nsplit; i++) {
        client_send(&c, data + cuts[i], cuts[i + 1] - cuts[i]);
        for (int k = 0; k < (coalesce ? 0 : PUMPS_PER_PIECE); k++)
            pump(&c);
    }
    for (int k = 0; k < PUMPS_PER_PIECE; k++)
        pump(&c);

    if (ending == 2) {
        client_close(&c);
    } else {
        if (ending == 3)
            server_reopen();
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
    pump(NULL);
    if (n_inputs % FD_CHECK_EVERY == 0)
        check_fds();
    return 0;
}
