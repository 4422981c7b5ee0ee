/*
 * dp_core.h: the data plane's I/O-free core (docs/architecture.md). It holds the
 * registry (registry.h: the function table, a name index for every invocation's
 * Host, and each function's endpoints) with the endpoints' concurrency slots
 * and load-balancing state, the per-function FIFO queue of requests waiting
 * for a slot with its deadlines, drains, why sandboxes exited, the "cannot
 * start" error, and the in-flight reports to the control plane. It never
 * touches a socket, a clock or an HTTP request: it is fed typed events
 * (dp_core_on_..., dp_core_set_...)
 * and acts through the effects table the caller gives it (forward, answer,
 * report, drained, now). dirigent-dp plugs in libuv/HTTP adapters (proxy.c,
 * api.c), dirigent-sim a simulated clock and sandboxes.
 *
 * Requests: the adapter allocates its own request with a struct dp_req inside
 * (zeroed), hands it to dp_core_on_request, and owns it. The core gives it
 * back exactly once: through effects.answer (the core's own answer: 503 from
 * the queue, 502 for a broken sandbox; the adapter answers and frees it), or
 * the adapter ends it itself (answered by the sandbox, or its client went
 * away) and calls dp_core_on_done. Between the two, effects.forward may hand
 * it to an endpoint any number of times (a retry).
 *
 * Time is in microseconds of effects.now (the daemon's loop clock in ms x 1000).
 * Single-threaded; an effect may call back into the core for another function,
 * and for the same request only as stated (forward may end it synchronously).
 */
#ifndef DIRIGENT_DP_CORE_H
#define DIRIGENT_DP_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

struct dg_metric_family;
struct dp_core;

struct dp_exit_wait;

/* One invocation as the core sees it, inside the adapter's request (zeroed by it). */
struct dp_req {
    struct dp_function *fn;
    struct dp_endpoint *ep;     /* the slot it holds (NULL: none) */
    struct dp_req *prev, *next; /* queue */
    uint64_t deadline_us;
    struct dp_exit_wait *exit_wait; /* its sandbox broke: waiting for why (NULL: not) */
    bool queued, cold, retried;
    /* the core's: queued as its function's first request waiting at zero, so it waits for
     * the cold-start pipeline (CP and workers) that every function shares; the function's
     * other requests wait for its own sandboxes (its queue, bounded by its upper bound) */
    bool pipeline;
    /* set by the adapter before dp_core_on_request (0: the core's queue timeout): the
     * client's own deadline (gRPC's grpc-timeout), at most the queue timeout */
    uint64_t timeout_us;
    /* the core's: when it was queued, and whether nothing was ahead of it then (in its
     * function's queue; among the cold starts) */
    uint64_t queued_us;
    bool found_empty_fn, found_empty_cold;
    /* with DP_ANSWER_OVERLOADED: the seconds after which a retry may be admitted */
    uint32_t retry_after_s;
};

/* Why the core answers a request itself (effects.answer). */
enum dp_answer_kind {
    DP_ANSWER_QUEUE_TIMEOUT, /* 503: no slot within the queue timeout */
    DP_ANSWER_CANNOT_START,  /* 503: the CP says its sandboxes cannot start */
    DP_ANSWER_REMOVED,       /* 503: the function was removed while it waited */
    DP_ANSWER_BROKEN,        /* 502: its sandbox failed (with why it exited, when known) */
    DP_ANSWER_OVERLOADED,    /* 503 at arrival: its expected wait is over what is admitted
                                (r->retry_after_s says when to come back) */
};

/* One function's in-flight count for the CP. */
struct dp_report_item {
    const char *name;
    unsigned inflight;
};

struct dp_effects {
    void *ud;
    /* The clock, in microseconds (monotonic). */
    uint64_t (*now)(void *ud);
    /* Send r to endpoint e: the core has given it e's slot (r->ep). The adapter may end r
     * synchronously (dp_core_on_upstream_error or dp_core_on_done) before returning. */
    void (*forward)(void *ud, struct dp_req *r, struct dp_endpoint *e);
    /* The core's answer to r: `status` with the text `msg` (borrowed). r is out of the core;
     * the adapter answers its client and frees it. */
    void (*answer)(void *ud, struct dp_req *r, enum dp_answer_kind kind, int status,
                   const char *msg);
    /* Call dp_core_report_due soon (the daemon: after this loop turn, and not before its
     * reportInterval after the last report, so that the first requests of many functions go
     * to the CP in one message). May be NULL. */
    void (*report_soon)(void *ud);
    /* In-flight counts for the CP (items borrowed for the call). May be NULL. */
    void (*report)(void *ud, const struct dp_report_item *items, size_t n);
    /* A drain (dp_core_drain) is over: none of its sandboxes has a request in flight. */
    void (*drained)(void *ud, void *token, const struct dp_function *f, size_t nids);
    /* A drain nobody will answer (dp_core_free): the adapter frees `token`. May be NULL. */
    void (*drain_dropped)(void *ud, void *token);
    /* A new endpoint: open what the adapter needs (e->data). < 0: leave it out (err said why,
     * the core logs it). May be NULL. */
    int (*ep_open)(void *ud, struct dp_endpoint *e, char *err, size_t errlen);
    /* An endpoint freed (its last request ended after it left the list). May be NULL. */
    void (*ep_close)(void *ud, struct dp_endpoint *e);
};

struct dp_core_config {
    enum dp_lb_policy policy;
    uint64_t queue_timeout_ms;
    uint64_t seed; /* per function: seed ^ its address (a function's lb.rng may be set after) */
    /* Admission control (admit.h): a request that would queue is refused at once (503,
     * DP_ANSWER_OVERLOADED) when that queue holds a backlog (dp_admit_backlog: it stood
     * admit_max_wait_ms plus the usual wait of a request that found it empty, and what it
     * served lately waited longer; not a burst into an idle queue) and its expected wait is
     * over the limit: behind every cold start (the function's first request at zero: the
     * pipeline every function shares), admit_max_wait_ms plus that usual wait, at most its
     * deadline; behind its function's own queue (its sandboxes at the function's upper
     * bound, the user's choice), its deadline only. 0: only the deadline. */
    bool admission;
    uint64_t admit_max_wait_ms;
    unsigned admit_min_queue;    /* shorter queues are refused for their deadline only */
    struct dg_metric *m_refused; /* requests refused so (NULL: none) */
    /* per-function metrics (NULL: none): requests, cold starts, queue depth, latency (the
     * adapter observes the latency: it knows when the answer ended) */
    struct dg_metric_family *f_requests, *f_cold, *f_queue, *f_latency;
};

/* A core acting through `fx` (copied); free with dp_core_free. */
struct dp_core *dp_core_new(const struct dp_core_config *c, const struct dp_effects *fx);
/* Everything goes: queued requests are dropped without an answer (the daemon is stopping and
 * its connections close), pending drains through effects.drain_dropped, endpoints through
 * effects.ep_close. */
void dp_core_free(struct dp_core *core);

/* ---- the function table ---------------------------------------------------------------- */

struct dp_function *dp_core_function_find(struct dp_core *core, const char *name, size_t len);
/* The first function (then f->next), for listings. */
struct dp_function *dp_core_functions(struct dp_core *core);
/* `name` (borrowed), created when missing (*created says which; may be NULL). */
struct dp_function *dp_core_function_get(struct dp_core *core, const char *name, size_t len,
                                         bool *created);
/* Container concurrency per sandbox (0: unlimited): more slots may start queued requests. */
void dp_core_set_concurrency(struct dp_core *core, struct dp_function *f, uint32_t cc);
/* Remove f: requests waiting for why their sandbox broke get their 502 now; if requests still
 * run on its sandboxes (drain them first) nothing else changes and the count is returned;
 * else its queued requests get 503 "was removed", f is freed, and 0 is returned. */
unsigned dp_core_remove_function(struct dp_core *core, struct dp_function *f);
/* A resync (the CP's whole table): every function not in `keep` (name -> anything non-NULL)
 * loses its endpoints and is removed (one with requests still running stays, empty, until
 * they end and the next resync). Returns how many were removed. */
unsigned dp_core_remove_others(struct dp_core *core, const struct dg_strmap *keep);

/* ---- endpoints (the control plane's pushes) ------------------------------------------- */

struct dp_endpoint_spec {
    const char *id, *address;
};

/* Replace f's endpoint list with `list` (borrowed; validated by the caller): those not in it
 * are taken out (freed when idle), new ones appended; then queued requests are dispatched and
 * drains checked. */
void dp_core_set_endpoints(struct dp_core *core, struct dp_function *f,
                           const struct dp_endpoint_spec *list, size_t n);
/* One endpoint added at the end of the list (the simulator's step; set_endpoints' too). */
void dp_core_endpoint_add(struct dp_core *core, struct dp_function *f, const char *id,
                          const char *address);
/* The CP says f's sandbox `id` exited by itself because of `reason` (borrowed, e.g.
 * "OOM-killed: memory limit 64 MiB"): requests whose connection to it broke get 502
 * "function 'F': sandbox ID REASON" now, and so do those that break later. */
void dp_core_on_exited(struct dp_core *core, struct dp_function *f, const char *id,
                       const char *reason);
/* The CP's error for f (borrowed; NULL or "": none). With endpoints the error is cleared;
 * without, a reason is kept and every queued request gets 503 "function 'NAME' cannot start:
 * REASON" now (later ones queue as usual); no reason keeps the last one. */
void dp_core_set_error(struct dp_core *core, struct dp_function *f, const char *reason);
/* Whether sandbox `id` is f's: in its list, or taken out with requests still running (what a
 * drain of it would wait for). */
bool dp_core_has_sandbox(const struct dp_function *f, const char *id);
/* Take sandboxes `ids` (borrowed) of f out of the list; effects.drained(token) once none of
 * them has a request in flight (maybe before this returns). */
void dp_core_drain(struct dp_core *core, struct dp_function *f, const char *const *ids, size_t nids,
                   void *token);

/* ---- requests ----------------------------------------------------------------------------- */

/* A new invocation of f: forwarded at once when a slot is free and nobody waits (FIFO: no
 * overtaking), else queued until a slot frees or its deadline; or, with admission control,
 * answered 503 DP_ANSWER_OVERLOADED at once when it could not be served in time. r: see the
 * top. */
void dp_core_on_request(struct dp_core *core, struct dp_function *f, struct dp_req *r);
/* The adapter ended r (its sandbox answered, or its client went away): its slot, queue place
 * or wait is given up, and queued requests may take the slot. r is the adapter's again. */
void dp_core_on_done(struct dp_core *core, struct dp_req *r);
/* r's sandbox failed before any answer (`msg`, borrowed, what the connection saw). If
 * `may_retry` (nothing was sent, no body) and r was not retried yet, another endpoint takes it
 * (forward again). Else r is answered 502, with why its sandbox exited when the CP said so; a
 * request that reached its sandbox (`sent`) first waits up to DP_EXIT_WAIT_MS for that. */
/* r's sandbox answered that it is another sandbox (`why`, borrowed: dirigent-fn's 421 with its
 * own id): r's endpoint is stale, its address given to another sandbox. The endpoint leaves f's
 * list at once (a later push may list it again); r, which that sandbox did not run, waits for
 * another endpoint as a new request would (a cold start when none is left) if `may_retry` (no
 * body: it can be sent again) and it was not retried yet, else it is answered 502. */
void dp_core_on_misrouted(struct dp_core *core, struct dp_req *r, bool may_retry, const char *why);
void dp_core_on_upstream_error(struct dp_core *core, struct dp_req *r, bool may_retry, bool sent,
                               const char *msg);

/* ---- time --------------------------------------------------------------------------------- */

/* Every 50 ms (the daemon's cron): queued requests past their deadline get 503, requests
 * whose sandbox broke and whose reason did not come in time get their 502; every 2 s while
 * there is traffic, effects.report with every busy function (and a last 0 for an idle one the
 * CP still believes busy: one whose last request did not end by dp_core_on_done). */
void dp_core_tick(struct dp_core *core);
/* f's queued requests past their deadline get 503 now (what dp_core_tick does for all). */
void dp_core_expire_function(struct dp_core *core, struct dp_function *f);
/* The reports effects.report_soon asked for: the functions whose first request since idle
 * waits, and those whose last request ended after the CP heard them busy (their 0), in one
 * effects.report. */
void dp_core_report_due(struct dp_core *core);

/* ---- admission ---------------------------------------------------------------------------- */

/* What admission control sees for f (and for every cold start): the expected wait of a new
 * request (µs; has_* false: no rate known, nothing refused), the service rates (requests/s)
 * and the wait limit (µs) it is held to. For tests, logs and status. */
struct dp_admit_view {
    bool has_fn, has_cold;
    bool backlog_fn, backlog_cold; /* the queue holds a backlog over the limit (admit.h) */
    /* limit_us: a cold start's (admit_max_wait_ms + the usual wait, at most the deadline),
     * also what shows a backlog; a function's own queue is limited by deadline_us only */
    uint64_t wait_fn_us, wait_cold_us, limit_us, deadline_us;
    double rate_fn, rate_cold;
    unsigned cold_queued;
    /* the cold starts served in the last 100-200 ms: their average wait, how many; over
     * shed_limit_us (admit_max_wait_ms + the lowest usual wait of the last 10-20 s, at most
     * the deadline), a share of new cold starts is refused */
    uint64_t recent_cold_us, shed_limit_us;
    unsigned recent_cold_n;
};
void dp_core_admit_view(struct dp_core *core, const struct dp_function *f, bool cold,
                        uint64_t timeout_us, struct dp_admit_view *v);

#define DP_EXIT_WAIT_MS 500 /* for the reason a broken sandbox exited */

#endif
