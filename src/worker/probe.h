/*
 * probe.h: readiness probing of a sandbox's port (probe.c), and a free local port for a
 * runtime that runs sandboxes on the host's loopback.
 */
#ifndef DIRIGENT_WORKER_PROBE_H
#define DIRIGENT_WORKER_PROBE_H

#include <stdint.h>
#include <uv.h>

#include "dirigent/common.h"

/* A free TCP port on 127.0.0.1 (bound and released at once). */
int wk_free_port(struct dg_err *err);

/* Readiness: GET /health on host:port, retried (every 250 µs for 2 ms, every 500 µs to 10 ms,
 * then 1 ms doubling to 50 ms) until
 * any HTTP answer (the server is up) or `timeout_ms`; then `cb` once, unless cancelled. */
struct wk_probe;
typedef void (*wk_probe_cb)(void *ud, const struct dg_err *err);
struct wk_probe *wk_probe_start(uv_loop_t *loop, const char *host, int port, uint64_t timeout_ms,
                                wk_probe_cb cb, void *ud);
/* Stop a probe before its callback (NULL: nothing). */
void wk_probe_cancel(struct wk_probe *p);
/* Count probes and their attempts in `m` (dg_worker_probes_total,
 * dg_worker_probe_attempts_total). */
struct dg_metrics;
void wk_probe_metrics(struct dg_metrics *m);

#endif
