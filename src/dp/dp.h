/*
 * dp.h: the data plane's state: functions, their endpoints (sandboxes) with
 * concurrency slots, and per-function FIFO queues of requests waiting for an
 * endpoint (cold start, or every slot busy). proxy.c serves invocations,
 * main.c the config and the control plane's API.
 */
#ifndef DIRIGENT_DP_H
#define DIRIGENT_DP_H

#include <uv.h>

#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "dirigent/batch.h"
#include "dirigent/strmap.h"
#include "lb.h"

struct dp_inv;

struct dp_endpoint {
    char *id;      /* sandbox id */
    char *address; /* host:port */
    struct dg_http_pool *pool;
    struct dp_lb_endpoint lb; /* in_flight, processed, draining */
    struct dp_function *fn;
    bool removed;      /* no longer in the list: freed when in_flight reaches 0 */
    char *exit_reason; /* it exited by itself, why (the CP's push; NULL: not). Owned */
    struct dp_endpoint *next_removed;
};

struct dp_drain;

struct dp_function {
    char *name;
    uint32_t concurrency; /* per sandbox; 0 = unlimited */
    struct dp_endpoint **eps;
    size_t neps;
    struct dp_endpoint *removed; /* taken out of the list, requests still running */
    struct dp_inv *q_head, *q_tail;
    unsigned queued, running;
    struct dp_lb_state lb;
    struct dp_drain *drains;
    struct dg_metric *m_requests, *m_cold, *m_queue, *m_latency;
    unsigned reported; /* in-flight count last sent to the CP */
    bool waiting;      /* in dp.waiting: it has queued requests (their deadlines run) */
    bool report_due;   /* in dp.to_report: its first request since idle, not yet sent */
    struct dp_function *w_prev, *w_next, *r_next;
    char *error; /* why its sandboxes cannot start (the CP's last push), while it has
                          no endpoint; NULL: none. Owned. */
    struct dp_function *next;
};

struct dg_heartbeat;

struct dg_trace;

struct dp {
    uv_loop_t *loop;
    struct dg_trace *proxy_trace; /* proxy_trace.csv; NULL: off */
    struct dg_heartbeat *hb;      /* NULL: no control plane configured */
    char *name;
    struct dp_function *fns;
    struct dg_strmap fn_index; /* name -> function: every invocation looks its Host up */
    struct dg_strmap pools;    /* endpoint address -> its pool, shared by the endpoints there */
    enum dp_lb_policy policy;
    uint64_t queue_timeout_ms;
    struct dg_http_pool_opts pool_opts;
    uv_timer_t cron;               /* queue deadlines */
    struct dp_function *waiting;   /* functions with queued requests */
    struct dp_function *to_report; /* first requests since idle, sent together */
    uv_timer_t report_timer;       /* 0 ms: one metrics POST for all of them per loop turn */
    struct dg_metrics *metrics;
    struct dg_metric_family *f_requests, *f_cold, *f_queue;
    struct dg_metric_family *f_latency;
};

extern struct dp dp;

struct dp_function *dp_function_find(struct dg_str name);
/* Serve an invocation (the ingress fallback route, DG_HTTP_STREAM). */
void dp_invoke(struct dg_http_req *r, void *ud);
/* After the endpoint list or slots change: give queued requests their endpoints. */
void dp_dispatch(struct dp_function *f);
/* Send the first-request reports collected in this loop turn (dp.report_timer). */
void dp_report_due(uv_timer_t *t);
/* Every 50 ms: answer queued requests past their deadline with 503, and requests whose sandbox
 * broke and whose reason did not come within DP_EXIT_WAIT_MS with a plain 502. */
void dp_expire(uint64_t now_ms);
/* The CP's push says f's sandbox `id` exited by itself because of `reason` (borrowed, e.g.
 * "OOM-killed: memory limit 64 MiB"): requests whose connection to it broke get 502
 * "function 'F': sandbox ID REASON" now, and so do those that break later. */
void dp_endpoint_exited(struct dp_function *f, const char *id, const char *reason);
/* A create failed and f has no endpoint: answer every request queued for it now with 503
 * "function 'NAME' cannot start: <reason>" (f->error). Later requests queue as usual. */
void dp_fail_queued(struct dp_function *f);
/* f's requests waiting for the reason their sandbox broke get their 502 now, without it (f is
 * being removed: they must not hold the removal up). */
void dp_exit_waits_answer(struct dp_function *f);
/* Metrics to the CP every 2 s: the in-flight count of every function with traffic (and a last
 * 0 for one that went idle). Requests that wait are reported at once (dp_report_due). */
void dp_report(void);
/* Endpoint bookkeeping. */
void dp_endpoint_release(struct dp_endpoint *e);
/* A function going away: its queued requests get 503, its error is freed; the caller frees
 * its endpoints, name and the struct. */
void dp_function_free(struct dp_function *f);

#endif
