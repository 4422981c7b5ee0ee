/*
 * daemon.c: signals, end-of-main loop cleanup and the /health and /metrics
 * routes shared by every daemon.
 */
#include "dirigent/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dirigent/log.h"

static void on_signal(uv_signal_t *h, int signum)
{
    struct dg_daemon *d = h->data;
    if (d->stopping) {
        dg_log(DG_LOG_WARN, d->name, "second signal %d during shutdown: exiting now", signum);
        _exit(1);
    }
    d->stopping = true;
    dg_log(DG_LOG_INFO, d->name, "signal %d: shutting down", signum);
    if (d->on_stop)
        d->on_stop(d->ud);
}

int dg_daemon_init(struct dg_daemon *d, uv_loop_t *loop, const char *name,
                   void (*on_stop)(void *ud), void *ud, struct dg_err *err)
{
    signal(SIGPIPE, SIG_IGN);
    d->loop = loop;
    d->name = name;
    d->on_stop = on_stop;
    d->ud = ud;
    d->stopping = false;
    uv_signal_init(loop, &d->sigterm);
    uv_signal_init(loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    int rc = uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    if (rc == 0)
        rc = uv_signal_start(&d->sigint, on_signal, SIGINT);
    if (rc < 0)
        return dg_err_set(err, rc, "signal handlers: %s", uv_strerror(rc));
    uv_unref((uv_handle_t *)&d->sigterm);
    uv_unref((uv_handle_t *)&d->sigint);
    return 0;
}

/* Descriptors the daemon inherited (a shell's, a supervisor's pipe) are not handed on to what
 * it starts (sandboxes, skopeo, crun): close-on-exec from the start. */
static void cloexec_inherited(void)
{
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    for (int fd = 3; fd < 1024; fd++) { /* kernels before 5.11 */
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

int dg_daemon_configure(const struct dg_conf_schema *s, void *cfg, char *const *log_level, int argc,
                        char **argv)
{
    struct dg_err err = {0};
    cloexec_inherited();
    int rc = dg_conf_parse_args(s, cfg, argc, argv, stdout, &err);
    if (rc != DG_CONF_RUN) {
        if (rc < 0)
            fprintf(stderr, "%s: %s\n", s->prog, err.msg);
        dg_conf_free(s, cfg);
        return rc < 0 ? 2 : 0;
    }
    int level = DG_LOG_INFO;
    if (log_level && *log_level)
        dg_log_level_parse(*log_level, &level);
    dg_log_set_level(level);
    return -1;
}

void dg_daemon_deinit(struct dg_daemon *d)
{
    if (!uv_is_closing((uv_handle_t *)&d->sigterm))
        uv_close((uv_handle_t *)&d->sigterm, NULL);
    if (!uv_is_closing((uv_handle_t *)&d->sigint))
        uv_close((uv_handle_t *)&d->sigint, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int dg_loop_close_all(uv_loop_t *loop)
{
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop);
}

/* {"status":"ok","pid":N}: the pid lets whoever started the daemon (`dirigent up`, a test)
 * check that the one answering on a port is theirs and not another cluster's. */
static void health(struct dg_http_req *r, void *ud)
{
    (void)ud;
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%d}\n", (int)getpid());
    dg_http_respond(r, 200, "application/json", body, (size_t)n);
}

static void metrics(struct dg_http_req *r, void *ud)
{
    struct dg_buf out = {0};
    dg_metrics_render(ud, &out);
    dg_http_respond(r, 200, "text/plain; version=0.0.4", out.data, out.len);
    dg_buf_free(&out);
}

static double open_conns(void *ud)
{
    struct dg_http_server_stats st;
    dg_http_server_stats(ud, &st);
    return (double)st.open_conns;
}

static double active_reqs(void *ud)
{
    struct dg_http_server_stats st;
    dg_http_server_stats(ud, &st);
    return (double)st.active_reqs;
}

static double refused_conns(void *ud)
{
    struct dg_http_server_stats st;
    dg_http_server_stats(ud, &st);
    return (double)st.refused;
}

void dg_daemon_mount_health_metrics(struct dg_http_server *s, struct dg_metrics *m)
{
    dg_metrics_gauge_fn(m, "dg_http_refused_connections",
                        "Connections of the API server refused at http.internalConns, "
                        "http.maxConns or http.maxConnsPerClient, since start.",
                        refused_conns, s);
    dg_metrics_gauge_fn(m, "dg_http_open_connections", "Open connections of the API server.",
                        open_conns, s);
    dg_metrics_gauge_fn(m, "dg_http_active_requests",
                        "Requests of the API server being handled now.", active_reqs, s);
    dg_http_route(s, "GET", "/health", health, NULL, 0);
    /* any cluster credential when the server authenticates (lib/auth.h) */
    dg_http_route(s, "GET", "/metrics", metrics, m, DG_HTTP_AUTH_ROLES);
}

uint64_t dg_nofile_limit(void)
{
    static uint64_t limit;
    if (limit)
        return limit;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return limit = 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            dg_log(DG_LOG_DEBUG, "daemon", "open files limit raised from %llu to %llu",
                   (unsigned long long)was, (unsigned long long)rl.rlim_max);
        else
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    limit = rl.rlim_cur == RLIM_INFINITY ? (uint64_t)1 << 20 : (uint64_t)rl.rlim_cur;
    return limit;
}

static unsigned auto_cap(int64_t set, unsigned div)
{
    if (set > 0)
        return (unsigned)set;
    uint64_t n = dg_nofile_limit();
    uint64_t b = n > 256 + 64 ? n - 256 : 64;
    uint64_t cap = b / div;
    if (cap < 64)
        cap = 64;
    return cap > 10000000 ? 10000000 : (unsigned)cap;
}

static void conf_limits(const struct dg_http_conf *c, struct dg_http_limits *out, int64_t set,
                        unsigned div)
{
    out->max_header_bytes = (size_t)c->max_header_bytes;
    out->max_headers = (unsigned)c->max_headers;
    out->max_body_bytes = (uint64_t)c->max_body_bytes;
    out->header_timeout_ms = (uint64_t)c->header_timeout_ms;
    out->body_timeout_ms = (uint64_t)c->body_timeout_ms;
    out->idle_timeout_ms = (uint64_t)c->idle_timeout_ms;
    out->body_min_rate = (uint64_t)c->body_min_rate;
    out->h2_max_streams = c->h2_max_streams > 0 ? (unsigned)c->h2_max_streams : 100;
    out->max_conns = auto_cap(set, div);
    out->max_conns_per_client =
        c->max_conns_per_client > 0 ? (unsigned)c->max_conns_per_client : out->max_conns / 2;
    if (out->max_conns_per_client == 0)
        out->max_conns_per_client = 1;
}

void dg_http_conf_internal_limits(const struct dg_http_conf *c, struct dg_http_limits *out)
{
    conf_limits(c, out, c->internal_conns, 8);
}

void dg_http_conf_limits(const struct dg_http_conf *c, struct dg_http_limits *out)
{
    conf_limits(c, out, c->max_conns, 3);
}
