/*
 * runtime_emulated.c: the `emulated` runtime (like the original's
 * scalability_test): no real sandbox. A create costs emulatedCreateDelayMs
 * and returns an endpoint at one dirigent-fn that the worker starts and
 * shares, so invocations still succeed. One worker process can stand for many
 * nodes in scale benchmarks on one machine.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dirigent/log.h"
#include "worker.h"

static void timer_closed(uv_handle_t *h)
{
    wk_sandbox_gone(h->data);
}

static void on_delay(uv_timer_t *t)
{
    struct wk_sandbox *sb = t->data;
    sb->lat.start_us = dg_now_us() - sb->t0_us; /* the emulated cost; ready at once */
    wk_sandbox_created(sb, NULL);
}

static void emulated_create(struct wk_sandbox *sb, const struct wk_spec *spec)
{
    struct wk_worker *w = sb->w;
    snprintf(sb->host, sizeof(sb->host), "%s", w->host);
    sb->port = w->shared_fn_port;
    uv_timer_init(w->loop, &sb->timer);
    sb->timer.data = sb;
    sb->timer_open = true;
    uv_timer_start(&sb->timer, on_delay, (uint64_t)w->emulated_delay_ms, 0);
}

static void emulated_destroy(struct wk_sandbox *sb)
{
    uv_timer_stop(&sb->timer);
    if (sb->timer_open) {
        sb->timer_open = false;
        uv_close((uv_handle_t *)&sb->timer, timer_closed);
    }
}

static void shared_exit(uv_process_t *p, int64_t status, int sig)
{
    struct wk_worker *w = p->data;
    bool stopping = !w->shared_fn_running; /* emulated_deinit stopped it */
    w->shared_fn_running = false;
    if (!stopping) /* on its own: every emulated sandbox points at it */
        dg_log(DG_LOG_ERROR, "emulated", "the shared dirigent-fn exited (status %lld, signal %d)",
               (long long)status, sig);
    uv_close((uv_handle_t *)p, NULL);
}

static int emulated_init(struct wk_worker *w, struct dg_err *err)
{
    int port = wk_free_port(err);
    if (port < 0)
        return port;
    char portarg[16], parent[16];
    snprintf(portarg, sizeof(portarg), "%d", port);
    snprintf(parent, sizeof(parent), "%d", (int)getpid()); /* it dies with us, even by SIGKILL */
    char *args[] = {w->fn_binary, "--host", (char *)w->host, "--port", portarg,
                    "--logLevel", "warn",   "--parentPid",   parent,   NULL};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t opts = {.exit_cb = shared_exit,
                                 .file = w->fn_binary,
                                 .args = args,
                                 .stdio_count = 3,
                                 .stdio = stdio};
    w->shared_fn.data = w;
    int rc = uv_spawn(w->loop, &w->shared_fn, &opts);
    if (rc < 0) {
        uv_close((uv_handle_t *)&w->shared_fn, NULL);
        return dg_err_set(err, rc,
                          "emulated runtime: cannot start fnBinary '%s': %s (set "
                          "fnBinary to the path of dirigent-fn)",
                          w->fn_binary, uv_strerror(rc));
    }
    w->shared_fn_running = true;
    w->shared_fn_port = port;
    return 0;
}

static void emulated_deinit(struct wk_worker *w)
{
    if (w->shared_fn_running) {
        w->shared_fn_running = false; /* its exit is expected now */
        uv_process_kill(&w->shared_fn, SIGTERM);
    }
}

const struct wk_runtime wk_runtime_emulated = {
    .name = "emulated",
    .create = emulated_create,
    .destroy = emulated_destroy,
    .init = emulated_init,
    .deinit = emulated_deinit,
};
