/*
 * runtime_emulated.c: the `emulated` runtime (like the original's
 * scalability_test): no real sandbox. A create costs emulatedCreateDelayMs
 * and returns an endpoint at one dirigent-fn that the worker starts and
 * shares, so invocations still succeed; the runtime is ready once that
 * dirigent-fn answers. One worker process can stand for many nodes in scale
 * benchmarks on one machine.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dirigent/log.h"
#include "probe.h"
#include "registry.h"

struct emu_rt {
    uv_loop_t *loop;
    const char *host;
    uint64_t readiness_timeout_ms;
    int64_t delay_ms;
    /* the one shared dirigent-fn */
    uv_process_t shared_fn;
    bool shared_fn_running;
    int shared_fn_port;
    struct wk_probe *probe; /* start: until it answers */
    wk_runtime_ready_cb ready;
    void *ready_ud;
};

/* A sandbox's part of it (at sb->ext). */
struct emu_sb {
    uv_timer_t timer; /* the emulated delay */
    bool timer_open;
};

static void timer_closed(uv_handle_t *h)
{
    wk_sandbox_gone(WK_SB_OF(h->data));
}

static void on_delay(uv_timer_t *t)
{
    struct wk_sandbox *sb = WK_SB_OF(t->data);
    sb->lat.start_us = dg_now_us() - sb->t0_us; /* the emulated cost; ready at once */
    wk_sandbox_created(sb, NULL);
}

static void emulated_create(void *state, struct wk_sandbox *sb, const struct dg_wire_create *spec)
{
    struct emu_rt *rt = state;
    struct emu_sb *e = WK_SB_EXT(sb);
    snprintf(sb->host, sizeof(sb->host), "%s", rt->host);
    sb->port = rt->shared_fn_port;
    uv_timer_init(rt->loop, &e->timer);
    e->timer.data = e;
    e->timer_open = true;
    uv_timer_start(&e->timer, on_delay, (uint64_t)rt->delay_ms, 0);
}

static void emulated_destroy(void *state, struct wk_sandbox *sb)
{
    struct emu_sb *e = WK_SB_EXT(sb);
    uv_timer_stop(&e->timer);
    if (e->timer_open) {
        e->timer_open = false;
        uv_close((uv_handle_t *)&e->timer, timer_closed);
    }
}

static void shared_exit(uv_process_t *p, int64_t status, int sig)
{
    struct emu_rt *rt = p->data;
    bool stopping = !rt->shared_fn_running; /* emulated_deinit stopped it */
    rt->shared_fn_running = false;
    if (!stopping) /* on its own: every emulated sandbox points at it */
        dg_log(DG_LOG_ERROR, "emulated", "the shared dirigent-fn exited (status %lld, signal %d)",
               (long long)status, sig);
    uv_close((uv_handle_t *)p, NULL);
}

static int emulated_init(const struct wk_runtime_conf *conf, void **state, struct dg_err *err)
{
    struct emu_rt *rt = dg_xcalloc(1, sizeof(*rt));
    *state = rt;
    rt->loop = conf->loop;
    rt->host = conf->host;
    rt->readiness_timeout_ms = conf->readiness_timeout_ms;
    rt->delay_ms = conf->emulated.delay_ms;
    const char *fn = conf->emulated.fn_binary;
    int port = wk_free_port(err);
    if (port < 0)
        return port;
    char portarg[16], parent[16];
    snprintf(portarg, sizeof(portarg), "%d", port);
    snprintf(parent, sizeof(parent), "%d", (int)getpid()); /* it dies with us, even by SIGKILL */
    char *args[] = {(char *)fn,   "--host", (char *)rt->host, "--port", portarg,
                    "--logLevel", "warn",   "--parentPid",    parent,   NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t opts = {
        .exit_cb = shared_exit, .file = fn, .args = args, .stdio_count = 3, .stdio = stdio};
    rt->shared_fn.data = rt;
    int rc = uv_spawn(rt->loop, &rt->shared_fn, &opts);
    if (rc < 0) {
        uv_close((uv_handle_t *)&rt->shared_fn, NULL);
        return dg_err_set(err, rc,
                          "emulated runtime: cannot start fnBinary '%s': %s (set "
                          "fnBinary to the path of dirigent-fn)",
                          fn, uv_strerror(rc));
    }
    rt->shared_fn_running = true;
    rt->shared_fn_port = port;
    return 0;
}

static void shared_ready(void *ud, const struct dg_err *perr)
{
    struct emu_rt *rt = ud;
    rt->probe = NULL;
    if (!perr) {
        rt->ready(rt->ready_ud, NULL);
        return;
    }
    struct dg_err e = *perr;
    dg_err_wrap(&e, "emulated runtime: the shared dirigent-fn");
    rt->ready(rt->ready_ud, &e);
}

/* Serve once the shared dirigent-fn answers. */
static void emulated_start(void *state, wk_runtime_ready_cb ready, void *ud)
{
    struct emu_rt *rt = state;
    rt->ready = ready;
    rt->ready_ud = ud;
    rt->probe = wk_probe_start(rt->loop, rt->host, rt->shared_fn_port, rt->readiness_timeout_ms,
                               shared_ready, rt);
}

static void emulated_deinit(void *state)
{
    struct emu_rt *rt = state;
    wk_probe_cancel(rt->probe);
    rt->probe = NULL;
    if (rt->shared_fn_running) {
        rt->shared_fn_running = false; /* its exit is expected now */
        uv_process_kill(&rt->shared_fn, SIGTERM);
    }
}

static void emulated_free(void *state)
{
    free(state);
}

const struct wk_runtime wk_runtime_emulated = {
    .name = "emulated",
    .sb_size = sizeof(struct emu_sb),
    .weightless = true,
    .init = emulated_init,
    .start = emulated_start,
    .create = emulated_create,
    .destroy = emulated_destroy,
    .deinit = emulated_deinit,
    .free = emulated_free,
};
