/*
 * cp.h: the control plane's registry (DESIGN.md §1-§5): functions with their
 * autoscaler state and sandboxes, workers and data planes with heartbeats.
 * api.c serves the registration server (9091) and the internal API (9090);
 * scaling.c runs the autoscaler, placement, sandbox creates and deletes, and
 * the pushes to data planes. One libuv loop; no locks.
 */
#ifndef DIRIGENT_CP_H
#define DIRIGENT_CP_H

#include <uv.h>

#include "autoscaler.h"
#include "dirigent/http.h"
#include "dirigent/metrics.h"
#include "dirigent/strmap.h"
#include "fn_error.h"
#include "function.h"
#include "placement.h"
#include "store.h"

struct dg_batch;

#define CP_TICK_SLOTS      40  /* the 2 s autoscaling tick in 50 ms slots (cp_tick) */
#define CP_EXIT_REASON_MAX 256 /* a worker's reason a sandbox exited (api_sandbox_exited) */

struct cp_worker {
    char *name;
    char *address; /* host:port of its API */
    struct dg_http_pool *pool;
    uint64_t last_seen_ms;
    bool schedulable;
    unsigned sandboxes;
    int64_t cpu_milli, memory_mib;         /* advertised capacity */
    double cpu_overcommit;                 /* advertised: schedulable CPU = cpu_milli x this */
    int64_t min_cpu_milli, min_memory_mib; /* advertised per-sandbox floors (0: none) */
    int64_t cpu_used, mem_used;            /* reserved by its sandboxes: max(request, floor) each */
    char *boot;                            /* the daemon's start id: a new one means it restarted */
    bool need_list; /* restored from the store: its next heartbeat must list its sandboxes */
    struct dg_batch *creates, *deletes; /* this loop turn's, sent together (NULL: none yet) */
    struct cp_worker *next;
};

struct cp_dp {
    char *name;
    char *api;                       /* host:port of its API */
    char *proxy;                     /* host:port invocations go to */
    struct dg_http_pool *pool;       /* ordered pushes: one connection */
    struct dg_http_pool *drain_pool; /* drains wait for requests: never in front of pushes */
    struct dg_batch *drains;         /* this loop turn's (NULL: none yet) */
    uint64_t last_seen_ms;
    struct cp_dp *next;
};

enum cp_sb_state { CP_SB_CREATING, CP_SB_READY, CP_SB_DRAINING };

struct cp_sandbox {
    char *id; /* the worker's id; NULL while creating */
    char *endpoint;
    struct cp_worker *worker;
    enum cp_sb_state state;
    struct cp_fn *fn;
    uint64_t t0_us;                 /* create started */
    struct cp_worker *abandoned_on; /* its worker went silent while creating it: replaced */
    struct cp_sandbox *next;
};

struct cp_metric {
    struct cp_dp *dp;
    double inflight;
};

struct cp_fn {
    struct cp_fn_spec spec;
    struct cp_as_config as;
    struct cp_as_state ast;
    struct cp_sandbox *sbs;
    unsigned ready, creating, draining;
    int desired;
    struct cp_metric *metrics;
    size_t nmetrics;
    bool deleted;
    bool unschedulable;          /* sandboxes wanted that no worker has room for */
    bool dirty;                  /* its endpoint list changed since the last push */
    bool push_error;             /* the next push carries error.reason (a create just failed) */
    struct cp_fn_error *error;   /* the last failure (allocated at the first; most
                                    functions never fail: 350 bytes each saved) */
    struct json_t *exited;       /* [{"id","reason"}]: sandboxes that exited by themselves
                                    since the last push, for it (NULL: none) */
    uint64_t hold_down_until_ms; /* no scale-down before (sandboxes adopted after a restart) */
    unsigned tick_slot;          /* which of the CP_TICK_SLOTS ticks decides it */
    size_t slot_pos;             /* its index in cp.slots[tick_slot] */
    struct cp_fn *next_dirty;
    struct cp_fn *next;
};

struct dg_trace;
struct trace_row;

struct cp {
    uv_loop_t *loop;
    struct dg_trace *cold_trace;     /* cold_start_trace.csv; NULL: off */
    struct trace_row *trace_pending; /* its rows waiting for the push of their endpoint */
    struct cp_fn *fns;
    struct dg_strmap fn_index; /* name -> function (a deleted one until it is freed) */
    struct cp_slot {
        struct cp_fn **v;
        size_t n, cap;
    } slots[CP_TICK_SLOTS]; /* the functions each tick slot decides */
    struct cp_worker *workers;
    struct cp_dp *dps;
    char *placement;
    bool knative;     /* autoscaler: knative */
    bool leader;      /* this replica acts (always, without replicas) */
    bool taking_over; /* elected, restoring from the store before it acts */
    char *leader_api; /* the leader's internal API address, NULL if none known */
    char **replicas;  /* every replica's internal API address (config `replicas`) */
    size_t nreplicas; /* 0: a single control plane */
    size_t replica_id;
    struct cp_store *store;
    double reconstruction_seconds; /* the last start-up's, for /metrics */
    struct cp_placer placer;
    struct cp_node *nodes; /* placement's view of the workers (scratch) */
    struct cp_worker **node_workers;
    size_t nodes_cap;
    unsigned unschedulable;    /* functions waiting for capacity */
    uv_timer_t capacity_timer; /* 0 ms: retry them once capacity frees */
    struct cp_fn *dirty;       /* functions whose lists go out in the next push */
    uv_timer_t push_timer;     /* 0 ms: one push per DP for everything changed in a loop turn */
    uv_timer_t batch_timer;    /* 0 ms: creates, deletes and drains of a loop turn, batched */
    uint64_t heartbeat_timeout_ms;
    char *lb_address; /* returned to registrations when set */
    struct dg_metrics *metrics;
    struct dg_metric *m_creates, *m_create_failures, *m_registrations;
    struct dg_metric_family *m_worker_cpu, *m_worker_mem; /* {worker, kind=capacity|reserved} */
};

extern struct cp cp;

struct cp_fn *cp_fn_find(struct dg_str name);

/* f's last create failure (a cleared one if it never had any), and the same to record one. */
static inline const struct cp_fn_error *cp_fn_error_of(const struct cp_fn *f)
{
    static const struct cp_fn_error none;
    return f->error ? f->error : &none;
}
static inline struct cp_fn_error *cp_fn_error_mut(struct cp_fn *f)
{
    if (!f->error)
        f->error = dg_xcalloc(1, sizeof(*f->error));
    return f->error;
}
double cp_fn_sample(const struct cp_fn *f);

/* scaling.c */
/* Every 50 ms, slot 0..39 in turn: decides the functions in that slot, so each function every
 * 2 s (the original's tick) while the scale-ups and -downs of thousands of functions spread
 * over the 2 s in small pieces instead of arriving at once. */
void cp_tick(uint64_t now_ms, unsigned slot);
void cp_scale_now(struct cp_fn *f, uint64_t now_ms); /* scale from zero on a metric */
void cp_reconcile(struct cp_fn *f);                  /* act on f->desired */
void cp_push_endpoints(struct cp_fn *f);             /* whole list to every DP */
void cp_fn_delete(struct cp_fn *f);                  /* scale to zero, then forget */
void cp_worker_lost(struct cp_worker *w);
/* Its capacity and reservations into /metrics (milli-CPU, MiB). */
void cp_worker_metrics(const struct cp_worker *w);
/* The CPU placement may reserve on it: its advertised CPU x its overcommit (milli-CPU). */
int64_t cp_worker_cpu_schedulable(const struct cp_worker *w);
/* Its sandboxes are gone (it restarted): out of the lists; the next tick replaces them. */
void cp_worker_forget_sandboxes(struct cp_worker *w);
/* A sandbox a worker reports that this CP does not know (after a CP restart): take it as
 * ready. False if it is known already. */
bool cp_sandbox_adopt(struct cp_fn *f, struct cp_worker *w, const char *id, const char *endpoint);
/* A sandbox died on its own: record `reason` (borrowed; the worker's, e.g. "OOM-killed: memory
 * limit 64 MiB") as f's last failure, log it, push it to the data planes (they answer the
 * requests it had with it) and, if it was ready, remove it from the list and replace it (a
 * draining one goes on to its delete). False if unknown. */
bool cp_sandbox_exited(struct cp_fn *f, const char *id, const char *reason);
void cp_dp_lost(struct cp_dp *d);
void cp_flush_batches(void); /* send what is batched now (before pools close) */
void cp_free_all(void);      /* at exit, once the loop has closed everything */

/* api.c */
void cp_api_mount(struct dg_http_server *internal, struct dg_http_server *registration);
void cp_api_close(void); /* shutdown: the pool a follower forwards with */
/* Start-up: functions, workers and data planes from the store (before serving), then ask the
 * workers for their sandboxes and push every list to the data planes (reconstruction). */
int cp_restore(struct dg_err *err);
void cp_restore_close(void); /* shutdown */
/* The same without blocking the loop (a replica taking over); `done` when it is restored. */
void cp_restore_async(void (*done)(void *ud, const struct dg_err *err), void *ud);

/* haproxy.c: the leader keeps HAProxy's data-plane backend equal to the registered data
 * planes through its runtime API (`api`: a unix socket path or IP:PORT; "" = off). */
int cp_haproxy_init(uv_loop_t *loop, const char *api, const char *backend, const char *server_opts,
                    struct dg_err *err);
void cp_haproxy_sync(void);  /* soon (coalesced); a no-op on a follower */
void cp_haproxy_close(void); /* shutdown: abandon the command in flight */
void cp_haproxy_free(void);

#endif
