/*
 * sim.h: dirigent-sim, a deterministic cluster simulator (issue 5). A trace
 * is replayed through the control plane's core (src/cp/core.c, with the
 * decider autoscaler.c and placement.c) and the data plane's load balancing
 * (lb.c) against simulated workers and sandboxes on a simulated clock,
 * in-process: the same seed gives the same output, byte for byte, and hours of
 * trace take seconds.
 *
 * The model, step by step (docs/sim.md):
 *   arrival   the invocation joins its function's FIFO queue; a function with no
 *             sandbox (none ready, none being created) is decided at once with
 *             its concurrency as the sample (the DP's first metric: scale from
 *             zero); then the queue is dispatched
 *   dispatch  while the queue has requests, the load-balancing policy picks a
 *             ready sandbox with a free slot (container concurrency); the
 *             request runs for its duration (no interference between sandboxes)
 *   tick      every 2 s each function's concurrency (queued + running) is
 *             reported and the CP's core decides; more sandboxes are placed in
 *             one batch (placement filters by capacity) and take requests once
 *             created (the creation latency) and pushed; fewer: the newest ready
 *             ones drain and are deleted once all of them are idle
 *   images    the first sandbox of a function on a worker also pays the image
 *             pull; later ones on that worker do not (the worker caches it)
 *   capacity  a function that found no room is unschedulable: the CP pushes
 *             the reason and its queued requests get 503 at once (as the DP
 *             answers them); it is retried once a sandbox is deleted
 *   timeout   a request still queued after the queue timeout fails (503)
 * Events at the same instant run in the order: completions, sandboxes
 * ready, ticks, arrivals; each kind in the order it was scheduled.
 */
#ifndef DIRIGENT_SIM_H
#define DIRIGENT_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dirigent/common.h"

/* ---- traces ---------------------------------------------------------------------------- */

struct sim_function {
    char name[72];      /* the trace's hash (shortened in tables) */
    int64_t memory_mib; /* its request */
    int64_t cpu_milli;
    int upper_bound, lower_bound; /* from dirigent.json when present */
    /* durations: the percentile points (ms) of the 2019 format, for sampling */
    double dur_pct[7]; /* 0, 1, 25, 50, 75, 99, 100 */
    bool has_pct;
};

struct sim_invocation {
    uint64_t arrival_us;
    uint64_t duration_us;
    uint32_t fn;
};

struct sim_trace {
    struct sim_function *fns;
    size_t nfns;
    struct sim_invocation *invs; /* sorted by arrival, then function */
    size_t ninvs;
    uint64_t end_us; /* the trace's length (whole minutes for the 2019 format) */
    const char *format;
};

enum sim_iat { SIM_IAT_EQUIDISTANT, SIM_IAT_UNIFORM, SIM_IAT_EXPONENTIAL };

struct sim_trace_opts {
    int64_t minutes;    /* 2019: the first N minutes (0: all) */
    enum sim_iat iat;   /* 2019: arrivals within each minute */
    uint64_t seed;      /* arrivals and durations */
    int64_t cpu_milli;  /* a function's CPU request (2021, or no memory.csv): default */
    int64_t memory_mib; /* its memory request when the trace has none */
    double cpu_per_mib; /* 2019 with memory.csv: milli-CPU per MiB (Lambda's 1 vCPU per
                               1769 MB: 0.565); 0 = use cpu_milli */
};

/* Load DIR (the 2019 format: invocations.csv, durations.csv, memory.csv, dirigent.json) or a
 * 2021 CSV file (app,func,end_timestamp,duration) or a directory holding one. */
int sim_trace_load(const char *path, const struct sim_trace_opts *o, struct sim_trace *out,
                   struct dg_err *err);
void sim_trace_free(struct sim_trace *t);

/* ---- the simulation -------------------------------------------------------------------- */

enum sim_lat_kind { SIM_LAT_FIXED, SIM_LAT_UNIFORM, SIM_LAT_EXPONENTIAL };

struct sim_config {
    unsigned workers;
    int64_t worker_cpu_milli, worker_memory_mib;
    int placement; /* enum cp_place_policy */
    double chbl_eps;
    bool knative; /* autoscaler: knative */
    /* overrides of the autoscaler's parameters; 0: the mode's default */
    uint64_t stable_window_ms, panic_window_ms, scale_to_zero_grace_ms;
    double target_pct;
    int lb;          /* enum dp_lb_policy */
    int concurrency; /* container concurrency of every function (0: unlimited) */
    enum sim_lat_kind create_kind;
    uint64_t create_a_us, create_b_us; /* fixed: a; uniform: [a, b]; exponential: mean a */
    uint64_t image_pull_us;            /* added to the first creation of a function on a worker (the
                               worker then has its image: what chbl placement exploits) */
    uint64_t queue_timeout_us;
    uint64_t warmup_us; /* invocations arriving before are simulated, not counted */
    uint64_t seed;
    FILE *csv; /* per-invocation rows, or NULL */
};

struct sim_fn_result {
    uint64_t invocations, completed, failed, cold;
    double sched_p50_ms, sched_p99_ms;
    double slowdown_geomean;
    double sandbox_seconds, memory_mib_seconds;
    uint64_t sandboxes_created;
    uint64_t image_pulls; /* creations that had to pull the image first */
};

struct sim_result {
    struct sim_fn_result *fns; /* per function of the trace */
    struct sim_fn_result all;
    uint64_t end_us; /* simulated time at the end */
    uint64_t unschedulable_events;
};

int sim_run(const struct sim_trace *t, const struct sim_config *c, struct sim_result *out,
            struct dg_err *err);
void sim_result_free(struct sim_result *r);

#endif
