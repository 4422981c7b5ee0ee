/*
 * fuzz_http_client.c: libFuzzer target for response parsing in the client pool
 * (lib/http_client.c). The data plane proxies to function instances it does
 * not control, so whatever an upstream sends back must be handled safely.
 *
 * A raw upstream (plain non-blocking sockets, no HTTP code) listens on
 * 127.0.0.1; a dg_http_pool on the fuzzer's libuv loop sends requests to it,
 * and the upstream answers every connection with the fuzz input, one piece
 * per loop turn. Input: the first byte steers, the rest is the "response".
 *   bits 0-1  number of extra split points (0-3)
 *   bits 2-3  request: 0 GET (buffered body), 1 GET with on_body, 2 HEAD,
 *             3 POST with a streamed chunked body and on_body
 *   bits 4-5  the upstream after the last piece: 0 close, 1 half-close (FIN)
 *             and wait for the client, 2 reset, 3 stay open: with an odd
 *             number of split points the driver waits for the client's 2 ms
 *             request and idle timeouts, else it cancels what is unfinished
 *   bit 6     two requests on a pool of one connection: the second waits in
 *             the queue and then reuses the idle connection (the upstream
 *             answers a connection again when it sends more bytes) or opens
 *             a new one
 *   bit 7     on_body pauses the response and the driver resumes it on the
 *             next loop turn
 * Seeds start with a printable byte: ' ' GET then reset, '#' in four pieces,
 * '$' GET with on_body, '(' HEAD, ',' POST, '0' stays open, '@' two requests
 * then close, 'P' two then FIN, 'p' two on one connection.
 *
 * Checks besides memory safety: on_done runs exactly once for every request
 * not cancelled and never for a cancelled one, with either a response or an
 * error (and an error when dg_http_creq_stale says so); a HEAD response has no
 * body; everything is closed and freed after dg_http_pool_close within a
 * bounded number of loop turns (else abort); and no descriptor leaks across
 * inputs.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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

#define MAX_PUMPS      64 /* loop turns for the requests to finish */
#define STALL_MS       20 /* longest wait for the 2 ms client timeouts */
#define MAX_UP_CONNS   4
#define FD_CHECK_EVERY 1024
#define FD_MAX         64

static uv_loop_t loop;
static int up_listen = -1, up_port;
static bool verbose;
static unsigned long n_inputs;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http_client: %s: %s\n", what, detail);
    abort();
}

/* ---- the raw upstream -------------------------------------------------------------------- */

struct up_conn {
    int fd;
    size_t piece;    /* next piece to send; npieces = all sent */
    unsigned served; /* times the whole input was sent */
    bool done;       /* ending applied (closed or half-closed or left open) */
};

struct upstream {
    const uint8_t *data;
    const size_t *cuts; /* npieces + 1 offsets */
    size_t npieces;
    unsigned ending;
    struct up_conn conns[MAX_UP_CONNS];
    size_t nconns;
};

static void up_close(struct up_conn *u, bool reset)
{
    if (u->fd < 0)
        return;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(u->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(u->fd);
    u->fd = -1;
}

static void up_send(struct up_conn *u, const uint8_t *d, size_t n)
{
    while (n > 0 && u->fd >= 0) {
        ssize_t w = send(u->fd, d, n, MSG_NOSIGNAL);
        if (w > 0) {
            d += w;
            n -= (size_t)w;
        } else if (w == -1 && errno == EINTR) {
            continue;
        } else {
            return; /* full (the client paused) or gone: the rest is dropped */
        }
    }
}

/* One step of the upstream per loop turn: accept, read and discard requests, send the next
 * piece of the answer, and after the last one end as the input says. */
static void up_step(struct upstream *up)
{
    for (;;) {
        int fd = accept4(up_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            break;
        if (up->nconns == MAX_UP_CONNS) {
            close(fd);
            continue;
        }
        up->conns[up->nconns++] = (struct up_conn){.fd = fd};
    }
    for (size_t i = 0; i < up->nconns; i++) {
        struct up_conn *u = &up->conns[i];
        if (u->fd < 0)
            continue;
        char buf[4096];
        for (;;) {
            ssize_t n = recv(u->fd, buf, sizeof(buf), 0);
            if (n > 0) {
                /* a new request on a connection already answered: answer it again */
                if (u->piece == up->npieces && u->served < 2 && up->ending == 3) {
                    u->piece = 0;
                    u->done = false;
                }
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EINTR))
                up_close(u, false);
            if (n == -1 && errno == EINTR)
                continue;
            break;
        }
        if (u->fd < 0 || u->done)
            continue;
        if (u->piece < up->npieces) {
            up_send(u, up->data + up->cuts[u->piece], up->cuts[u->piece + 1] - up->cuts[u->piece]);
            u->piece++;
            continue;
        }
        u->served++;
        u->done = true;
        switch (up->ending) {
        case 0:
            up_close(u, false);
            break;
        case 1:
            shutdown(u->fd, SHUT_WR);
            break;
        case 2:
            up_close(u, true);
            break;
        default:
            break; /* stay open */
        }
    }
}

static void up_close_all(struct upstream *up)
{
    for (size_t i = 0; i < up->nconns; i++)
        up_close(&up->conns[i], true);
    up->nconns = 0;
}

/* ---- requests ---------------------------------------------------------------------------- */

struct slot {
    struct dg_http_creq *q;
    bool head, done, cancelled, pause_body, paused, got_head;
    uint64_t body_bytes;
};

static void on_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct slot *s = ud;
    if (s->done || s->cancelled)
        die("on_head", "called for a finished request");
    /* http_parser takes one to three digits ("HTTP/1.1 2 OK" gives 2), and the client
     * passes that on; only the parser's own bound is checked here. */
    if (resp->status < 0 || resp->status > 999)
        die("on_head", "a status outside 0..999");
    size_t total = 0;
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct dg_http_header *h = &resp->headers[i];
        total += h->name.len + h->value.len;
        if (h->name.len)
            total += (unsigned char)h->name.ptr[h->name.len - 1];
        if (h->value.len)
            total += (unsigned char)h->value.ptr[0];
    }
    (void)total;
    s->got_head = true;
}

static void on_body(struct dg_http_creq *q, const char *data, size_t len, void *ud)
{
    struct slot *s = ud;
    if (s->done || s->cancelled)
        die("on_body", "called for a finished request");
    if (len) /* ASan: the whole piece is readable */
        (void)((volatile const char *)data)[0], (void)((volatile const char *)data)[len - 1];
    s->body_bytes += len;
    if (s->pause_body && !s->paused) {
        dg_http_creq_pause(q);
        s->paused = true;
    }
}

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct slot *s = ud;
    if (s->done)
        die("on_done", "called twice");
    if (s->cancelled)
        die("on_done", "called for a cancelled request");
    if (!resp == !err)
        die("on_done", "needs exactly one of a response and an error");
    /* "stale": closed before any response byte, so it can only come with an error */
    if (dg_http_creq_stale(q) && !err)
        die("on_done", "a response on a request reported stale");
    (void)dg_http_creq_sent(q);
    if (resp) {
        if (resp->status < 0 || resp->status > 999)
            die("on_done", "a status outside 0..999");
        if (s->head && resp->body.len)
            die("on_done", "a HEAD response with a body");
        if (resp->body.len)
            (void)((volatile const char *)resp->body.ptr)[resp->body.len - 1];
        for (size_t i = 0; i < resp->nheaders; i++)
            if (resp->headers[i].value.len)
                (void)((volatile const char *)resp->headers[i].value.ptr)[0];
    } else {
        if (err->code >= 0 || !err->msg[0])
            die("on_done", "an error without a negative code and a message");
        if (verbose)
            fprintf(stderr, "[client] error: %s\n", err->msg);
    }
    if (verbose && resp)
        fprintf(stderr, "[client] %d, %zu headers, %zu body bytes\n", resp->status, resp->nheaders,
                resp->body.len);
    s->done = true;
    s->q = NULL;
}

static const struct dg_http_client_cbs buffered_cbs = {.on_head = on_head, .on_done = on_done};
static const struct dg_http_client_cbs streaming_cbs = {
    .on_head = on_head, .on_body = on_body, .on_done = on_done};

static void issue(struct dg_http_pool *p, struct slot *s, unsigned kind, bool pause)
{
    static const struct dg_http_header hdrs[] = {{DG_STR("X-Fuzz"), DG_STR("1")}};
    memset(s, 0, sizeof(*s));
    s->pause_body = pause;
    struct dg_http_creq *q;
    switch (kind) {
    case 0:
        q = dg_http_request(p, "GET", "/", hdrs, 1, NULL, 0, &buffered_cbs, s);
        break;
    case 1:
        q = dg_http_request(p, "GET", "/", hdrs, 1, NULL, 0, &streaming_cbs, s);
        break;
    case 2:
        s->head = true;
        q = dg_http_request(p, "HEAD", "/", NULL, 0, NULL, 0, &buffered_cbs, s);
        break;
    default:
        q = dg_http_request_stream(p, "POST", "/up", hdrs, 1, -1, &streaming_cbs, s);
        if (!s->done) {
            dg_http_creq_write(q, "hello", 5);
            dg_http_creq_end(q);
        }
        break;
    }
    if (!s->done)
        s->q = q;
}

/* ---- driver ------------------------------------------------------------------------------ */

static void report(void)
{
    fprintf(stderr, "fuzz_http_client: %lu inputs\n", n_inputs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    dg_log_set_level(DG_LOG_OFF);
    const char *v = getenv("FUZZ_HTTP_VERBOSE");
    verbose = v && *v == '1';
    if (uv_loop_init(&loop) != 0)
        die("uv_loop_init", "failed");
    up_listen = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (up_listen == -1 || bind(up_listen, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
        listen(up_listen, 64) == -1 || getsockname(up_listen, (struct sockaddr *)&sa, &len) == -1)
        die("upstream listen", strerror(errno));
    up_port = ntohs(sa.sin_port);
    atexit(report);
    return 0;
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

static bool all_done(const struct slot *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i].done && !s[i].cancelled)
            return false;
    return true;
}

static void pump(struct upstream *up, struct slot *slots, size_t n)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    up_step(up);
    for (size_t i = 0; i < n; i++) {
        if (slots[i].paused && !slots[i].done) {
            slots[i].paused = false;
            dg_http_creq_resume(slots[i].q);
        }
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

    unsigned nsplit = ctrl & 3, kind = (ctrl >> 2) & 3;
    bool two = ctrl & 0x40, pause = ctrl & 0x80;
    size_t cuts[5];
    cuts[0] = 0;
    for (unsigned i = 1; i <= nsplit; i++)
        cuts[i] = size * i / (nsplit + 1);
    cuts[nsplit + 1] = size;
    struct upstream up = {
        .data = data, .cuts = cuts, .npieces = nsplit + 1, .ending = (ctrl >> 4) & 3};

    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 1;
    o.max_idle = 1;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 2;
    o.idle_timeout_ms = 2;
    o.max_header_bytes = 1024;
#ifdef FUZZ_H2C
    o.h2c = true; /* fuzz_http2_client.c: the input is the upstream's HTTP/2 frames */
#endif
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new(&loop, "127.0.0.1", up_port, &o, &err);
    if (!p)
        die("pool", err.msg);

    struct slot slots[2];
    size_t n = two ? 2 : 1;
    for (size_t i = 0; i < n; i++)
        issue(p, &slots[i], kind, pause);

    for (int k = 0; k < MAX_PUMPS && !all_done(slots, n); k++)
        pump(&up, slots, n);
    /* An upstream that stays silent: wait for the request timeout (only some of the time:
     * waiting is what makes an input slow). The others should be done by now. */
    bool wait = up.ending != 3 || (nsplit & 1);
    uint64_t until = uv_hrtime() + STALL_MS * 1000000ull;
    while (wait && !all_done(slots, n) && uv_hrtime() < until) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pump(&up, slots, n);
    }
    /* Still running (a paused body, say): cancel; on_done must not follow. */
    for (size_t i = 0; i < n; i++) {
        if (!slots[i].done && !slots[i].cancelled) {
            slots[i].cancelled = true;
            dg_http_creq_cancel(slots[i].q);
            slots[i].q = NULL;
        }
    }
    dg_http_pool_close(p);
    up_close_all(&up);
    int k = 0;
    for (; k < MAX_PUMPS && uv_loop_alive(&loop); k++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_alive(&loop))
        die("pool close", "handles still open after dg_http_pool_close");
    if (n_inputs % FD_CHECK_EVERY == 0)
        check_fds();
    return 0;
}
