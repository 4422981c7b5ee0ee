/*
 * autoscaler.c: see autoscaler.h. Each step cites Knative's Scale()
 * (pkg/autoscaler/scaling/autoscaler.go) as peers.md §1.4 gives it.
 */
#include "autoscaler.h"

#include <math.h>
#include <stdlib.h>

#include "dirigent/common.h"

void cp_as_config_default(struct cp_as_config *c, bool cold_start_sweep)
{
    c->container_concurrency = 1;
    c->target_pct = 100;
    c->max_scale_up_rate = 1000;
    c->max_scale_down_rate = 2;
    c->panic_threshold_pct = 200;
    c->tick_ms = 2000;
    c->stable_window_ms = cold_start_sweep ? 6000 : 60000;
    c->panic_window_ms = cold_start_sweep ? 2000 : 6000;
    c->lower_bound = 0;
    c->upper_bound = cold_start_sweep ? 1 : INT32_MAX;
    c->knative = false;
    c->scale_to_zero_grace_ms = 0;
    c->target_burst_capacity = -1;
}

void cp_as_config_knative(struct cp_as_config *c)
{
    c->knative = true;
    c->target_pct = 70;                /* container-concurrency-target-percentage 0.7 */
    c->scale_to_zero_grace_ms = 30000; /* scale-to-zero-grace-period */
    c->target_burst_capacity = 211;    /* target-burst-capacity */
}

double cp_as_target(const struct cp_as_config *c)
{
    double total = c->container_concurrency > 0 ? c->container_concurrency : 100;
    return DG_MAX(0.01, total * c->target_pct / 100.0); /* Knative's TargetMin */
}

static unsigned buckets(uint64_t window_ms, uint64_t tick_ms)
{
    uint64_t n = tick_ms ? (window_ms + tick_ms - 1) / tick_ms : 1;
    return (unsigned)DG_MAX(n, 1);
}

void cp_as_state_init(struct cp_as_state *s, const struct cp_as_config *c)
{
    s->cap = buckets(c->stable_window_ms, c->tick_ms);
    s->samples = dg_xcalloc(s->cap, sizeof(double));
    s->head = s->filled = 0;
    s->in_panic = false;
    s->panic_start_ms = 0;
    s->max_panic_pods = 0;
    s->zero_since_ms = 0;
}

void cp_as_state_deinit(struct cp_as_state *s)
{
    free(s->samples);
    s->samples = NULL;
}

/* Mean of the newest min(n, filled) samples. */
static double window_avg(const struct cp_as_state *s, unsigned n)
{
    n = DG_MIN(n, s->filled);
    if (n == 0)
        return 0;
    double sum = 0; /* newest first, as before: the same sum to the last bit */
    unsigned i = s->head;
    for (unsigned k = 0; k < n; k++) { /* newest is at head - 1, wrapping at cap (no division:
                                          this runs for every function at every tick) */
        i = i ? i - 1 : s->cap - 1;
        sum += s->samples[i];
    }
    return sum / n;
}

int cp_as_expected_scale(const struct cp_as_config *c, const struct cp_as_state *s)
{
    double peak = 0;
    for (unsigned i = 0; i < s->filled; i++) /* the ring's filled part, in any order */
        peak = DG_MAX(peak, s->samples[i]);
    if (peak <= 0)
        return 0;
    double n = ceil(peak / cp_as_target(c) - 1e-9);
    return n >= c->upper_bound ? c->upper_bound : (int)n;
}

static int clampi(int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo)
        v = lo;
    if (v > hi)
        v = hi;
    return (int)v;
}

void cp_as_decide(const struct cp_as_config *c, struct cp_as_state *s, int ready, double sample,
                  uint64_t now_ms, struct cp_as_decision *out)
{
    s->samples[s->head] = sample;
    if (++s->head == s->cap)
        s->head = 0;
    if (s->filled < s->cap)
        s->filled++;

    double ready_n = DG_MAX(1, ready);
    int64_t max_up = (int64_t)ceil(c->max_scale_up_rate * ready_n);
    int64_t max_down = (int64_t)floor(ready_n / c->max_scale_down_rate);
    double target = cp_as_target(c);
    double stable = window_avg(s, s->cap);
    double panic = window_avg(s, buckets(c->panic_window_ms, c->tick_ms));
    double dspc = ceil(stable / target), dppc = ceil(panic / target);
    int64_t stable_pods = (int64_t)DG_MIN(DG_MAX(dspc, (double)max_down), (double)max_up);
    int64_t panic_pods = (int64_t)DG_MIN(DG_MAX(dppc, (double)max_down), (double)max_up);

    bool over = dppc / ready_n >= c->panic_threshold_pct / 100.0;
    if (over) {
        s->in_panic = true; /* enter, or extend */
        s->panic_start_ms = now_ms;
    } else if (s->in_panic && s->panic_start_ms + c->stable_window_ms < now_ms) {
        s->in_panic = false; /* a whole stable window without a reason to panic */
        s->max_panic_pods = 0;
    }
    int64_t desired = stable_pods;
    if (s->in_panic) { /* never scale down while in panic */
        desired = DG_MAX(desired, panic_pods);
        desired = DG_MAX(desired, (int64_t)s->max_panic_pods);
        s->max_panic_pods = (int)DG_MIN(desired, (int64_t)INT32_MAX);
    }
    desired = clampi(desired, c->lower_bound, c->upper_bound);
    /* scale to zero: Knative removes the last sandbox only once zero has been wanted for the
     * grace period (it waits for the activator to be in the path); the original at once */
    if (desired == 0 && ready > 0 && c->scale_to_zero_grace_ms > 0) {
        if (s->zero_since_ms == 0)
            s->zero_since_ms = now_ms ? now_ms : 1;
        if (now_ms - s->zero_since_ms < c->scale_to_zero_grace_ms)
            desired = 1;
    } else if (desired > 0 || ready == 0) {
        s->zero_since_ms = 0;
    }
    out->desired = (int)desired;
    double total = c->container_concurrency > 0 ? c->container_concurrency : 100;
    out->excess_burst_capacity = c->target_burst_capacity == 0 ? 0
                                 : c->target_burst_capacity < 0
                                     ? -1
                                     : floor(ready * total - c->target_burst_capacity - panic);
    out->stable_avg = stable;
    out->panic_avg = panic;
    out->panic = s->in_panic;
}
