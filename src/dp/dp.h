/*
 * dp.h: the data plane daemon's adapters around its core (dp_core.h): what they
 * share (the loop, the core, the pools, the trace, the link to the control
 * plane) and what each gives the others. main.c wires them; proxy.c serves
 * invocations; api.c serves the control plane's API and reports to it.
 */
#ifndef DIRIGENT_DP_H
#define DIRIGENT_DP_H

#include <uv.h>

#include "dp_core.h"
#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "dirigent/strmap.h"

struct dg_heartbeat;
struct dg_trace;

struct dp {
    uv_loop_t *loop;
    struct dp_core *core;
    struct dg_trace *proxy_trace; /* proxy_trace.csv; NULL: off */
    struct dg_heartbeat *hb;      /* NULL: no control plane configured */
    char *name;
    struct dg_strmap pools; /* endpoint address -> its pools (HTTP/1.1, h2c), shared by the
                               endpoints there (proxy.c) */
    struct dg_http_pool_opts pool_opts;
    uv_timer_t cron;         /* dp_core_tick every 50 ms */
    uv_timer_t report_timer; /* one metrics POST for the first requests that wait, paced */
    uint64_t report_interval_ms, last_report_ms; /* reportInterval; when the last was sent */
    struct dg_metrics *metrics;
    /* dg_dp_upstream_requests_total{protocol}: requests sent to sandboxes over HTTP/1.1, h2c */
    struct dg_metric *m_up_http1, *m_up_h2c;
    struct dp_resync *resync; /* api.c: a resync push in parts, until its last part */
};

/* proxy.c: serve an invocation (the ingress fallback route, DG_HTTP_STREAM; ud: struct dp). */
void dp_invoke(struct dg_http_req *r, void *ud);
/* The function a request names by its Host (":authority" over h2; a port is ignored), NULL
 * when none is registered; `host` gets the name as sent, for messages. */
struct dp_function *dp_function_of(struct dp *dp, struct dg_http_req *r, struct dg_str *host);
/* proxy.c's effects: now, forward, answer, ep_open, ep_close (ud: struct dp). */
void dp_proxy_effects(struct dp_effects *fx);

/* api.c: the control plane's routes on `api` (ud: d). */
void dp_api_routes(struct dp *d, struct dg_http_server *api);
/* api.c's effects: report_soon, report, drained, drain_dropped (ud: struct dp). */
void dp_api_effects(struct dp_effects *fx);
/* api.c: free what a resync left half-received (the daemon stops). */
void dp_api_free(struct dp *d);

#endif
