/*
 * probe.c: readiness probing (DESIGN.md §6: the endpoint is returned only
 * after the sandbox answers on its port, so the first request never meets a
 * closed port). Any HTTP answer counts: the function may not serve /health. And the free
 * local port a sandbox on the host's loopback is given.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "probe.h"

/* The retry schedule (issue 16: a pre-created sandbox's cold start is mostly the wait for
 * its server to listen, ~4-5 ms after the start, and a 1-2-4 ms back-off found it up to 2-4 ms
 * late). A refused connect on loopback or a veth is immediate, so there is nothing to wait on
 * but a timer: every 250 µs for the first 2 ms, every 500 µs up to 10 ms, then doubling from
 * 1 ms to 50 ms. A server that listens after 5 ms is found within 0.5 ms of it for ~14
 * attempts (a refused connect each: socket, connect, close); one that takes a second costs
 * ~30 attempts (docs/decisions.md). Sub-millisecond waits need a timerfd: libuv's timers
 * count whole milliseconds. */
#define PROBE_FINE_US       250
#define PROBE_FINE_UNTIL_US 2000
#define PROBE_MID_US        500
#define PROBE_MID_UNTIL_US  10000
#define PROBE_MAX_US        50000

struct wk_probe {
    uv_loop_t *loop;
    uv_timer_t timer; /* whole-millisecond waits, and the fallback without a timerfd */
    uv_poll_t tpoll;  /* the timerfd's: sub-millisecond waits */
    int tfd;
    int open_handles;
    struct dg_http_pool *pool;
    struct dg_http_creq *req;
    uint64_t deadline, started_us, delay_us;
    wk_probe_cb cb;
    void *ud;
    struct dg_err last;
};

static struct dg_metric *m_probes, *m_attempts;

void wk_probe_metrics(struct dg_metrics *m)
{
    m_probes = dg_metric_get1(
        dg_metrics_counter(m, "dg_worker_probes_total", "Readiness probes ended.", NULL), NULL);
    m_attempts =
        dg_metric_get1(dg_metrics_counter(m, "dg_worker_probe_attempts_total",
                                          "Readiness probe attempts (a connect each; sum over "
                                          "dg_worker_probes_total).",
                                          NULL),
                       NULL);
}

static void probe_attempt(struct wk_probe *p);

static void probe_closed(uv_handle_t *h)
{
    struct wk_probe *p = h->data;
    if (--p->open_handles == 0) {
        if (p->tfd >= 0)
            close(p->tfd);
        free(p);
    }
}

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

static void probe_end(struct wk_probe *p, const struct dg_err *err)
{
    wk_probe_cb cb = p->cb;
    void *ud = p->ud;
    wk_probe_cancel(p);
    cb(ud, err);
}

static void on_retry(uv_timer_t *t)
{
    probe_attempt(t->data);
}

static void on_tfd(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct wk_probe *p = h->data;
    uint64_t n;
    if (read(p->tfd, &n, sizeof(n)) != (ssize_t)sizeof(n))
        return; /* not expired yet (spurious wake-up) */
    uv_poll_stop(&p->tpoll);
    probe_attempt(p);
}

/* Wait the next delay of the schedule, then attempt again. */
static void probe_wait(struct wk_probe *p)
{
    uint64_t since = now_us() - p->started_us, d;
    if (since < PROBE_FINE_UNTIL_US)
        d = PROBE_FINE_US;
    else if (since < PROBE_MID_UNTIL_US)
        d = PROBE_MID_US;
    else
        d = p->delay_us = DG_MIN(p->delay_us ? p->delay_us * 2 : 1000, PROBE_MAX_US);
    if (d % 1000 == 0 || p->tfd < 0) {
        uv_timer_start(&p->timer, on_retry, (d + 999) / 1000, 0);
        return;
    }
    struct itimerspec its = {.it_value = {.tv_sec = 0, .tv_nsec = (long)d * 1000}};
    if (timerfd_settime(p->tfd, 0, &its, NULL) != 0) {
        uv_timer_start(&p->timer, on_retry, 1, 0);
        return;
    }
    uv_poll_start(&p->tpoll, UV_READABLE, on_tfd);
}

static void on_probe_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                          const struct dg_err *err, void *ud)
{
    struct wk_probe *p = ud;
    p->req = NULL;
    if (resp) {
        probe_end(p, NULL);
        return;
    }
    p->last = *err;
    if (uv_now(p->loop) >= p->deadline) {
        struct dg_err e;
        dg_err_set(&e, UV_ETIMEDOUT, "not answering on its port in time (last: %s)", p->last.msg);
        probe_end(p, &e);
        return;
    }
    probe_wait(p);
}

static void probe_attempt(struct wk_probe *p)
{
    if (m_attempts)
        dg_counter_add(m_attempts, 1);
    static const struct dg_http_client_cbs cbs = {.on_done = on_probe_done};
    p->req = dg_http_request(p->pool, "GET", "/health", NULL, 0, NULL, 0, &cbs, p);
}

struct wk_probe *wk_probe_start(uv_loop_t *loop, const char *host, int port, uint64_t timeout_ms,
                                wk_probe_cb cb, void *ud)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 1;
    o.max_idle = 0;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = DG_MIN(2000, timeout_ms); /* a probe never outlasts the deadline */
    struct dg_err err;
    struct dg_http_pool *pool = dg_http_pool_new(loop, host, port, &o, &err);
    if (!pool)
        return NULL;
    struct wk_probe *p = dg_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->pool = pool;
    p->cb = cb;
    p->ud = ud;
    p->started_us = now_us();
    p->deadline = uv_now(loop) + timeout_ms;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->open_handles = 1;
    p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (p->tfd >= 0 && uv_poll_init(loop, &p->tpoll, p->tfd) == 0) {
        p->tpoll.data = p;
        p->open_handles++;
    } else if (p->tfd >= 0) {
        close(p->tfd);
        p->tfd = -1;
    }
    probe_attempt(p);
    return p;
}

void wk_probe_cancel(struct wk_probe *p)
{
    if (!p)
        return;
    if (p->req)
        dg_http_creq_cancel(p->req);
    p->req = NULL;
    dg_http_pool_close(p->pool);
    if (m_probes)
        dg_counter_add(m_probes, 1);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, probe_closed);
    if (p->tfd >= 0)
        uv_close((uv_handle_t *)&p->tpoll, probe_closed);
}

int wk_free_port(struct dg_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return dg_err_set(err, DG_E_INVAL, "no free port: socket: %m");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    if (port < 0)
        return dg_err_set(err, DG_E_INVAL, "no free port on 127.0.0.1");
    return port;
}
