/*
 * dirigent-fn's server (server.c): its config and state, and what main.c calls to start it,
 * stop it on a signal and free it.
 */
#ifndef DIRIGENT_FN_SERVER_H
#define DIRIGENT_FN_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dirigent/common.h"
#include "dirigent/daemon.h"
#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "dirigent/wire.h"

/* The config (main.c's schema fills it). */
struct fn_config {
    int64_t port;
    char *host;
    char *log_level;
    int64_t max_cpu_ms;
    int64_t max_memory_mib;
    bool calibrate;
    bool allocate_memory, allocate_endpoint;
    int64_t startup_loop_ms, startup_multiplier;
    int64_t parent_pid;
    struct dg_http_conf http;
};

/* One server; main.c owns it (static storage), server.c reads and fills it. */
struct fn {
    uv_loop_t *loop;
    struct fn_config cfg;
    struct dg_daemon daemon;
    struct dg_http_server *server;
    struct dg_metrics *metrics;
    struct dg_metric *invocations, *spin_seconds, *bad_requests, *iterations;
    char machine[256];
    char sandbox_id[DG_WIRE_NAME_MAX + 1]; /* DIRIGENT_SANDBOX_ID: "" when not a sandbox */
    int port;
    uv_work_t startup;
    uint64_t startup_us, startup_iterations;
    atomic_bool stopping; /* SIGTERM during the start-up loop ends it */
    bool starting;
    struct dg_buf body,
        machine_tail; /* response scratch; ',"MachineName":"...","ExecutionTime":' */
};

/* The machine name (the hostname) and the metrics, before fn_start. `port` (resolved: not -1)
 * is where fn_start listens. */
void fn_init(struct fn *f, int port);

/* Run the start-up busy loop on the thread pool (or none: at once), then listen on f->port
 * and serve. Listening failing later exits the process with 1, as a failed start does. */
int fn_start(struct fn *f, struct dg_err *err);

/* The daemon's on_stop (dg_daemon_init; ud is the struct fn): end the start-up loop or close
 * the server after the shutdown grace, then stop watching signals, so the loop ends. */
void fn_on_stop(void *ud);

/* After the loop has ended: the metrics and the response buffers. */
void fn_deinit(struct fn *f);

#endif
