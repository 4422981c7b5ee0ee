/*
 * cp.h: the control-plane daemon's state around its core (cp_core.h): the loop, the store, the
 * peers' connections, the timers that run the core's "soon" calls, the cold-start trace, the
 * replicas, and the state of the HTTP API. One instance (`cp`, defined in cp.c), one libuv loop, no
 * locks. The adapters: scaling.c (the core's effects over HTTP and libuv), api.c (HTTP
 * handlers into core events), haproxy.c (HAProxy's data-plane backend).
 */
#ifndef DIRIGENT_CP_H
#define DIRIGENT_CP_H

#include <uv.h>

#include "cp_core.h"
#include "dirigent/auth.h"
#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "store.h"

struct dg_batch;
struct dg_trace;
struct trace_row;
struct pending_reg;
struct cp_election;
struct cp_haproxy;

/* A worker's connection (cp_worker.io). */
/* A connection pool to one worker address, shared by the workers there (one process emulating
 * many nodes registers them all at its one address: one pool each would open thousands of
 * connections to it, over its per-client cap). */
struct cp_worker_pool {
    char *address;
    struct dg_http_pool *pool;
    unsigned refs;
    /* this loop turn's creates and deletes to the address (any worker there: the items name no
     * node), sent together (NULL: none yet): the (emulated) nodes of one worker share a batch */
    struct dg_batch *creates, *deletes;
    bool flush_pending; /* on cp.flush_list: a batch waits for the flush */
    struct cp_worker_pool *flush_next;
};

struct cp_worker_io {
    struct dg_http_pool *pool; /* = wpool->pool */
    struct cp_worker_pool *wpool;
    struct dg_metric *m[5]; /* its /metrics gauges (workers never leave): no lookup per beat */
    uint64_t pool_sig;      /* the pool table it was last sent (pool.c), hashed; 0: none or empty */
};

/* A data plane's connections (cp_dp.io). */
struct cp_dp_io {
    struct dg_http_pool *pool;       /* ordered pushes: one connection */
    struct dg_http_pool *drain_pool; /* drains wait for requests: never in front of pushes */
    struct dg_batch *drains;         /* this loop turn's (NULL: none yet) */
    struct dg_batch *forgets;        /* deleted functions, on `pool`, before its next push */
};

struct cp {
    uv_loop_t *loop;
    struct cp_core core;
    struct dg_trace *cold_trace;     /* cold_start_trace.csv; NULL: off */
    struct trace_row *trace_pending; /* its rows waiting for the push of their endpoint */
    struct after_push *after_push;   /* cp_after_push's callers, waiting for the next push */
    char *placement;
    bool leader;      /* this replica acts (always, without replicas) */
    bool taking_over; /* elected, restoring from the store before it acts */
    char *leader_api; /* the leader's internal API address, NULL if none known */
    char **replicas;  /* every replica's internal API address (config `replicas`) */
    size_t nreplicas; /* 0: a single control plane */
    size_t replica_id;
    struct {
        struct cp_election *election; /* with replicas */
        uv_timer_t retry_restore;     /* a takeover whose restore failed tries again */
        uv_timer_t reexec;            /* a deposed leader starts afresh */
        bool timers_open;
        char **argv;
        bool stopping;
    } rep;                      /* replicas.c */
    struct cp_haproxy *haproxy; /* haproxy.c */
    struct cp_store *store;
    double reconstruction_seconds; /* the last start-up's, for /metrics */
    uv_timer_t capacity_timer;     /* 0 ms: the core's capacity_freed */
    uv_timer_t push_timer;         /* 0 ms: the core's push, once per loop turn */
    uv_timer_t batch_timer;        /* 0 ms: creates, deletes and drains of a loop turn, batched */
    struct cp_worker_pool *flush_list; /* the worker addresses with a batch to flush */
    struct dg_strmap worker_pools;     /* address -> struct cp_worker_pool */
    uv_timer_t scale_down_timer;       /* the core's queued scale-downs, a budget per turn */
    /* batchInterval: a push, or a flush of the batches, comes at least this long after the
     * previous one (0: once per loop turn); when, last (loop ms) */
    uint64_t batch_interval_ms, last_push_ms, last_batch_ms;
    uint64_t heartbeat_timeout_ms;
    char *lb_address; /* returned to registrations when set */
    struct dg_metrics *metrics;
    struct dg_metric *m_registrations;
    struct dg_metric_family *m_worker_cpu, *m_worker_mem; /* {worker, kind=capacity|reserved} */
    /* api.c */
    struct dg_strmap pending_regs; /* registrations waiting for their write, by name */
    /* authentication (lib/auth.h): with authTokenFile, the key, the CP's own credential (on
     * every call to workers, data planes and the leader) and the registration API's
     * requirement (DG_HTTP_AUTH_* bits of its routes) */
    bool auth_on;
    struct dg_auth_key auth_key;
    char auth_cred[DG_AUTH_CRED_MAX];
    unsigned reg_need;
    struct {
        struct dg_http_pool *pool;
        char *addr; /* the leader the pool goes to */
    } fwd;          /* a follower forwards the user API to the leader */
    struct {
        unsigned waiting;
        uint64_t t0_us;
        uv_timer_t deadline;
        bool done, timer_open;
    } recon; /* reconstruction: the workers asked for their sandboxes */
    struct {
        unsigned functions, workers, dataplanes, skipped;
        unsigned step;
        void (*done)(void *ud, const struct dg_err *err);
        void *ud;
    } restore; /* the store read back, one kind after the other */
};

extern struct cp cp; /* cp.c */

#endif
