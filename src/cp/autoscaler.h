/*
 * autoscaler.h: the per-function scaling decider, a port of Knative's KPA with
 * the original Dirigent's defaults (DESIGN.md §4, reference §3.3-3.4, peers.md
 * §1.4). Pure: a decision depends only on the config, the window state (which
 * the call updates), the sample and the time given. No clock, no I/O, so it is
 * unit-tested with hand-computed vectors and replayed by tools.
 *
 * The metric is concurrency: requests in flight (queued + executing) summed
 * over data planes, one sample per tick. Windows average the newest samples:
 * the stable window (60 s = 30 ticks by default) and the panic window (6 s =
 * 3 ticks). Unlike the original, the ring buffer wraps correctly and only the
 * arithmetic mean exists (the original's exponential mode always gave 0).
 */
#ifndef DIRIGENT_CP_AUTOSCALER_H
#define DIRIGENT_CP_AUTOSCALER_H

#include <stdbool.h>
#include <stdint.h>

struct cp_as_config {
    int container_concurrency;  /* slots per sandbox; 0 = unlimited (target 100 as Knative) */
    double target_pct;          /* target utilisation of those slots, percent (100) */
    double max_scale_up_rate;   /* 1000 */
    double max_scale_down_rate; /* 2 */
    double panic_threshold_pct; /* 200 */
    uint64_t tick_ms;           /* 2000 */
    uint64_t stable_window_ms;  /* 60000 (cold_start_sweep: 6000) */
    uint64_t panic_window_ms;   /* 6000 (cold_start_sweep: 2000) */
    int lower_bound;            /* scaling_lower_bound: 0 */
    int upper_bound;            /* scaling_upper_bound: INT32_MAX (cold_start_sweep: 1) */
    /* Knative's behaviour where the original differs (autoscaler: knative) */
    bool knative;
    uint64_t scale_to_zero_grace_ms; /* the last sandbox stays this long once zero is wanted:
                                        0 (dirigent), 30000 (knative) */
    double target_burst_capacity;    /* TBC: only reported (EBC); -1 none (dirigent), 211 */
};

/* The original's defaults (NewDefaultAutoscalingMetadata); cold_start_sweep selects its
 * profile: stable 6 s, panic 2 s, upper bound 1. */
void cp_as_config_default(struct cp_as_config *c, bool cold_start_sweep);
/* Switch `c` to Knative's KPA defaults where the original differs: target utilisation 70%,
 * a 30 s scale-to-zero grace period, target burst capacity 211 (peers.md §1.1). */
void cp_as_config_knative(struct cp_as_config *c);
/* Concurrency one sandbox is meant to carry: cc (100 when 0) x target_pct / 100, >= 0.01. */
double cp_as_target(const struct cp_as_config *c);

/* Window and panic state of one function. Initialise with cp_as_state_init; free with
 * cp_as_state_deinit. */
struct cp_as_state {
    double *samples; /* ring of the newest samples, one per tick */
    unsigned cap, head, filled;
    bool in_panic;
    uint64_t panic_start_ms;
    int max_panic_pods;
    uint64_t zero_since_ms; /* when zero was first wanted with sandboxes up (grace), or 0 */
};
void cp_as_state_init(struct cp_as_state *s, const struct cp_as_config *c);
void cp_as_state_deinit(struct cp_as_state *s);

struct cp_as_decision {
    int desired;       /* sandboxes wanted, within the bounds */
    double stable_avg; /* window averages the decision used */
    double panic_avg;
    bool panic;                   /* in panic mode after this decision */
    double excess_burst_capacity; /* Knative's EBC: floor(ready x total - TBC - panic_avg);
                                     < 0 would keep Knative's activator in the path (here the
                                     data plane always is): reported, no effect */
};

/* The scale the function is expected to need again: the sandboxes the highest sample of the
 * stable window (the window the decider averages) would take, within the upper bound; 0 for
 * a function without traffic in the window. Pure; the pre-created sandboxes (src/cp/pool.c)
 * are sized by it. */
int cp_as_expected_scale(const struct cp_as_config *c, const struct cp_as_state *s);

/* Add `sample` (concurrency now) to the window and decide the scale for `ready` sandboxes
 * (those serving now) at time `now_ms`. Called every tick and, on the first metric of a
 * function at zero, at once (scale from zero: the window then holds just that sample). */
void cp_as_decide(const struct cp_as_config *c, struct cp_as_state *s, int ready, double sample,
                  uint64_t now_ms, struct cp_as_decision *out);

#endif
