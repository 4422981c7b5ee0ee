/*
 * probe.c: readiness probing (DESIGN.md §6: the endpoint is returned only
 * after the sandbox answers on its port, so the first request never meets a
 * closed port). Any HTTP answer counts: the function may not serve /health. And the free
 * local port a sandbox on the host's loopback is given.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dirigent/http.h"
#include "probe.h"

struct wk_probe {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct dg_http_pool *pool;
    struct dg_http_creq *req;
    uint64_t deadline, delay_ms;
    wk_probe_cb cb;
    void *ud;
    struct dg_err last;
};

static void probe_attempt(struct wk_probe *p);

static void probe_closed(uv_handle_t *h)
{
    free(h->data);
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
    uv_timer_start(&p->timer, on_retry, p->delay_ms, 0);
    p->delay_ms = DG_MIN(p->delay_ms * 2, 50);
}

static void probe_attempt(struct wk_probe *p)
{
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
    p->delay_ms = 1;
    p->deadline = uv_now(loop) + timeout_ms;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
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
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, probe_closed);
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
