/*
 * sim.h: dirigent-sim, a deterministic cluster simulator (issue 5). A trace
 * is replayed through the control plane's core (src/cp/cp_core.c, with the
 * decider autoscaler.c and placement.c) and the data plane's core
 * (src/dp/dp_core.c: queue, slots, load balancing, deadlines) against
 * simulated workers and sandboxes on a simulated clock, in-process: the same
 * seed gives the same output, byte for byte, and hours of trace take seconds.
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
#include "dirigent/invitro_trace.h"

/* ---- traces ---------------------------------------------------------------------------- */

/* The trace reader is the library's (lib/invitro_trace.c), shared with `dirigent load`; these
 * are its types and functions under the simulator's older names, until its callers use the
 * dg_invitro_ names themselves. */
#define sim_function        dg_invitro_function
#define sim_invocation      dg_invitro_invocation
#define sim_trace           dg_invitro_trace
#define sim_iat             dg_invitro_iat
#define SIM_IAT_EQUIDISTANT DG_INVITRO_IAT_EQUIDISTANT
#define SIM_IAT_UNIFORM     DG_INVITRO_IAT_UNIFORM
#define SIM_IAT_EXPONENTIAL DG_INVITRO_IAT_EXPONENTIAL
#define sim_trace_opts      dg_invitro_trace_opts
#define sim_trace_load      dg_invitro_trace_load
#define sim_trace_free      dg_invitro_trace_free

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
