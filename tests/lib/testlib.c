/*
 * testlib.c: see testlib.h.
 */
#include "testlib.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dirigent/common.h"

int tl_connect(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

int tl_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int tl_sends(int fd, const char *s)
{
    return tl_send(fd, s, strlen(s));
}

int tl_send_slowly(int fd, const char *buf, size_t len, size_t chunk, unsigned delay_us)
{
    for (size_t off = 0; off < len; off += chunk) {
        if (tl_send(fd, buf + off, DG_MIN(chunk, len - off)) == -1)
            return -1;
        usleep(delay_us);
    }
    return 0;
}

struct rstate {
    struct tl_resp *r;
    struct dg_buf body;
    size_t hlen;
    bool done, in_value;
};

static int r_field(http_parser *p, const char *at, size_t len)
{
    struct rstate *s = p->data;
    if (s->in_value || s->hlen == 0) {
        if (s->hlen && s->hlen < sizeof(s->r->headers) - 1)
            s->r->headers[s->hlen++] = '\n';
        s->in_value = false;
    }
    for (size_t i = 0; i < len && s->hlen < sizeof(s->r->headers) - 4; i++)
        s->r->headers[s->hlen++] = (char)tolower((unsigned char)at[i]);
    return 0;
}

static int r_value(http_parser *p, const char *at, size_t len)
{
    struct rstate *s = p->data;
    if (!s->in_value && s->hlen < sizeof(s->r->headers) - 4) {
        s->r->headers[s->hlen++] = ':';
        s->r->headers[s->hlen++] = ' ';
    }
    s->in_value = true;
    for (size_t i = 0; i < len && s->hlen < sizeof(s->r->headers) - 2; i++)
        s->r->headers[s->hlen++] = at[i];
    return 0;
}

static int r_headers_complete(http_parser *p)
{
    struct rstate *s = p->data;
    s->r->status = (int)p->status_code;
    s->r->keep_alive = http_should_keep_alive(p);
    if (s->hlen < sizeof(s->r->headers) - 1)
        s->r->headers[s->hlen++] = '\n';
    s->r->headers[s->hlen] = '\0';
    return 0;
}

static int r_body(http_parser *p, const char *at, size_t len)
{
    struct rstate *s = p->data;
    dg_buf_append(&s->body, at, len);
    return 0;
}

static int r_complete(http_parser *p)
{
    struct rstate *s = p->data;
    if (p->status_code >= 100 && p->status_code < 200) {
        /* interim response: reset and read the real one */
        s->hlen = 0;
        s->in_value = false;
        return 0;
    }
    s->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings rsettings = {
    .on_header_field = r_field,
    .on_header_value = r_value,
    .on_headers_complete = r_headers_complete,
    .on_body = r_body,
    .on_message_complete = r_complete,
};

/* Reads byte by byte into the parser so that nothing after the response is consumed
 * (pipelined responses stay in the socket for the next call). */
int tl_read_resp(int fd, struct tl_resp *r)
{
    memset(r, 0, sizeof(*r));
    struct rstate s = {.r = r};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &s;
    char buf[4096];
    while (!s.done) {
        /* peek, feed, and consume exactly what the parser took */
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0) {
                http_parser_execute(&p, &rsettings, NULL, 0);
                if (s.done)
                    break;
            }
            dg_buf_free(&s.body);
            return -1;
        }
        size_t used = http_parser_execute(&p, &rsettings, buf, (size_t)n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p);
        if (e != HPE_OK && e != HPE_PAUSED) {
            dg_buf_free(&s.body);
            return -1;
        }
        if (recv(fd, buf, used, 0) != (ssize_t)used) {
            dg_buf_free(&s.body);
            return -1;
        }
    }
    if (!s.body.data)
        dg_buf_append(&s.body, "", 0);
    r->body = s.body.data;
    r->body_len = s.body.len;
    return 0;
}

const char *tl_resp_header(const struct tl_resp *r, const char *name)
{
    static char val[1024];
    size_t nl = strlen(name);
    const char *p = r->headers;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            eol = p + strlen(p);
        if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = DG_MIN((size_t)(eol - v), sizeof(val) - 1);
            memcpy(val, v, vl);
            val[vl] = '\0';
            return val;
        }
        p = *eol ? eol + 1 : eol;
    }
    return "";
}

void tl_resp_free(struct tl_resp *r)
{
    free(r->body);
    r->body = NULL;
}

bool tl_wait_closed(int fd, int timeout_ms)
{
    char buf[4096];
    uint64_t end = dg_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = dg_now_ms();
        if (now >= end)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)(end - now));
        if (rc <= 0)
            return false;
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n == -1 && errno == ECONNRESET))
            return true;
    }
}

int tl_roundtrip(int port, const char *req, struct tl_resp *r)
{
    int fd = tl_connect(port, 5000);
    if (fd == -1)
        return -1;
    int status = -1;
    if (tl_sends(fd, req) == 0 && tl_read_resp(fd, r) == 0)
        status = r->status;
    close(fd);
    return status;
}

/* ---- threaded server -------------------------------------------------------------------- */

struct tl_server {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dg_http_server *http;
    struct dg_http_limits limits;
    void (*setup)(struct dg_http_server *, uv_loop_t *, void *);
    void *ud;
    int port;
    bool ready;
    /* pending call */
    void (*call)(void *);
    void *call_ud;
    bool call_done, stop;
    unsigned grace_ms;
};

static void server_closed(void *ud)
{
    struct tl_server *t = ud;
    uv_close((uv_handle_t *)&t->async, NULL);
}

static void on_async(uv_async_t *a)
{
    struct tl_server *t = a->data;
    pthread_mutex_lock(&t->mu);
    void (*fn)(void *) = t->call;
    void *ud = t->call_ud;
    bool stop = t->stop;
    t->call = NULL;
    pthread_mutex_unlock(&t->mu);
    if (fn) {
        fn(ud);
        pthread_mutex_lock(&t->mu);
        t->call_done = true;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
    if (stop && t->http) {
        struct dg_http_server *s = t->http;
        t->http = NULL;
        dg_http_server_close(s, t->grace_ms, server_closed, t);
    }
}

static void *server_thread(void *arg)
{
    struct tl_server *t = arg;
    struct dg_err err = {0};
    uv_loop_init(&t->loop);
    uv_async_init(&t->loop, &t->async, on_async);
    t->async.data = t;
    t->http = dg_http_server_new(&t->loop, &t->limits, "test");
    if (t->setup)
        t->setup(t->http, &t->loop, t->ud);
    if (dg_http_server_listen(t->http, "127.0.0.1", 0, &err) < 0) {
        fprintf(stderr, "testlib: %s\n", err.msg);
        abort();
    }
    pthread_mutex_lock(&t->mu);
    t->port = dg_http_server_port(t->http);
    t->ready = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    return NULL;
}

struct tl_server *tl_server_start(const struct dg_http_limits *limits,
                                  void (*setup)(struct dg_http_server *, uv_loop_t *, void *),
                                  void *ud)
{
    struct tl_server *t = dg_xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (limits)
        t->limits = *limits;
    else
        dg_http_limits_default(&t->limits);
    t->setup = setup;
    t->ud = ud;
    pthread_create(&t->thread, NULL, server_thread, t);
    pthread_mutex_lock(&t->mu);
    while (!t->ready)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    return t;
}

int tl_server_port(const struct tl_server *t)
{
    return t->port;
}

struct dg_http_server *tl_server_http(struct tl_server *t)
{
    return t->http;
}

void tl_server_call(struct tl_server *t, void (*fn)(void *), void *ud)
{
    pthread_mutex_lock(&t->mu);
    t->call = fn;
    t->call_ud = ud;
    t->call_done = false;
    uv_async_send(&t->async);
    while (!t->call_done)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

struct stats_call {
    struct tl_server *t;
    struct dg_http_server_stats st;
};

static void read_stats(void *ud)
{
    struct stats_call *c = ud;
    dg_http_server_stats(c->t->http, &c->st);
}

bool tl_server_wait_active(struct tl_server *t, unsigned n, int timeout_ms)
{
    uint64_t end = dg_now_ms() + (uint64_t)timeout_ms;
    do {
        struct stats_call c = {.t = t};
        tl_server_call(t, read_stats, &c);
        if (c.st.active_reqs >= n)
            return true;
        usleep(5000);
    } while (dg_now_ms() < end);
    return false;
}

bool tl_server_wait_requests(struct tl_server *t, uint64_t n, int timeout_ms)
{
    uint64_t end = dg_now_ms() + (uint64_t)timeout_ms;
    do {
        struct stats_call c = {.t = t};
        tl_server_call(t, read_stats, &c);
        if (c.st.requests >= n)
            return true;
        usleep(5000);
    } while (dg_now_ms() < end);
    return false;
}

uint64_t tl_server_requests(struct tl_server *t)
{
    struct stats_call c = {.t = t};
    tl_server_call(t, read_stats, &c);
    return c.st.requests;
}

bool tl_server_wait_idle(struct tl_server *t, int timeout_ms)
{
    uint64_t end = dg_now_ms() + (uint64_t)timeout_ms;
    do {
        struct stats_call c = {.t = t};
        tl_server_call(t, read_stats, &c);
        if (c.st.active_reqs == 0 && c.st.open_conns == 0)
            return true;
        usleep(5000);
    } while (dg_now_ms() < end);
    return false;
}

void tl_server_stop(struct tl_server *t, unsigned grace_ms)
{
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->grace_ms = grace_ms;
    uv_async_send(&t->async);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static void on_deadline(uv_timer_t *tm)
{
    *(bool *)tm->data = true;
}

bool tl_run_until(uv_loop_t *loop, volatile bool *flag, unsigned timeout_ms)
{
    uv_timer_t tm;
    bool expired = false;
    uv_timer_init(loop, &tm);
    tm.data = &expired;
    uv_timer_start(&tm, on_deadline, timeout_ms, 0);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tm, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

static void on_closed(void *ud)
{
    *(bool *)ud = true;
}

int tl_server_close_loop(uv_loop_t *loop, struct dg_http_server *srv)
{
    bool closed = false;
    dg_http_server_close(srv, 100, on_closed, &closed);
    tl_run_until(loop, &closed, 3000);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop);
}
