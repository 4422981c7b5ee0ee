/*
 * admit.h: the data plane's admission estimator, part of its I/O-free core
 * (dp_core.h, docs/decisions.md "Admission control"). One estimator watches one
 * queue: a function's FIFO, or every cold-start request of the data plane
 * together (the cold-start pipeline through the control plane and the workers
 * that all functions share). From the queue's busy time (while it is not
 * empty) and its completions (requests that left it for a sandbox) over the
 * last two 1 s windows it estimates the service rate, so a new arrival with
 * `ahead` requests before it expects to wait ahead / rate. Busy time, not wall
 * time: at a low load the rate is measured while there is something to serve,
 * so it is the rate the queue drains at, not the arrival rate. It also keeps
 * the usual wait of a request that found the queue empty (its own service: a
 * sandbox's start, or a slot's turn), so a function whose sandboxes start in a
 * second is not refused for needing a second.
 *
 * The rate is measured one completion after another, so requests served side
 * by side (cold starts of different functions in parallel) look like a backlog
 * at a low load. So an estimate refuses only with evidence of one
 * (dp_admit_backlog): the queue has not been empty for the limit, and the
 * requests it served in the last 100-200 ms waited longer than the limit on
 * average (or, none served, the last one was longer ago). CoDel tells a
 * standing queue by its smallest recent wait; the average, because the
 * pipeline behind the queue (the control plane) does not serve in order.
 *
 * Pure: the caller passes the clock (µs) and calls on every change; nothing
 * allocated. Without a completion in the last two windows there is no rate
 * and nothing is refused (the deadline still holds).
 */
#ifndef DIRIGENT_DP_ADMIT_H
#define DIRIGENT_DP_ADMIT_H

#include <stdbool.h>
#include <stdint.h>

#define DP_ADMIT_WINDOW_US 1000000ull /* two of them make the horizon */

struct dp_admit {
    uint64_t win_start_us; /* the current window's start (0: none yet) */
    uint64_t busy_us[2];   /* [0] the current window, [1] the one before */
    uint32_t done[2];
    uint64_t mark_us;       /* busy time is counted up to here */
    bool busy;              /* the queue is not empty */
    uint64_t busy_since_us; /* since when (while busy) */
    /* the waits of those served in the current 100 ms interval and the one before */
    uint64_t min_start_us, sum_wait_us[2];
    uint32_t n_wait[2];
    uint64_t last_done_us;
    /* the wait of a request that found the queue empty: smoothed mean and deviation */
    uint64_t base_us, dev_us;
    bool has_base;
    double shed_credit; /* dp_admit_shed's: admissions owed while its waits are over */
    /* the lowest usual wait (dp_admit_usual) in the current 10 s and the one before (0: none):
     * what the queue's service takes unloaded, which lag does not raise */
    uint64_t floor_start_us, floor_us[2];
};

/* The queue became empty (busy false) or not (busy true) at `now`. */
void dp_admit_set_busy(struct dp_admit *a, uint64_t now, bool busy);
/* A request left the queue for a sandbox at `now` after waiting `waited_us`; `found_empty`:
 * nothing was queued ahead of it when it came. */
void dp_admit_done(struct dp_admit *a, uint64_t now, uint64_t waited_us, bool found_empty);
#define DP_ADMIT_MIN_INTERVAL_US 100000ull

/* Whether the queue holds a backlog over `limit_us` at `now`: it has not been empty for that
 * long, and the requests served in the last interval or two waited longer on average (none
 * served: the last one was that long ago or more). */
bool dp_admit_backlog(const struct dp_admit *a, uint64_t now, uint64_t limit_us);
#define DP_ADMIT_FLOOR_WINDOW_US 10000000ull
/* The lowest usual wait over the last 10-20 s at `now` (dp_admit_usual when none). */
uint64_t dp_admit_usual_floor(const struct dp_admit *a, uint64_t now);
/* The average wait of the requests served in the last interval or two at `now` (0: none), and
 * in *n how many: what the queue's service has lately been, however short the queue is (a
 * pipeline slowed by its loops' lag, not by its length: the overload benchmark at 1.5x). */
uint64_t dp_admit_recent(const struct dp_admit *a, uint64_t now, unsigned *n);
/* While what was served lately waited `recent_us` on average, over `limit_us`: refuse (true)
 * or admit a new arrival so that the share limit/recent of them is admitted, in turn (a
 * credit of limit/recent per arrival, an admission per whole credit): the fewer admitted the
 * later they were, until the waits are back under the limit. Deterministic. */
bool dp_admit_shed(struct dp_admit *a, uint64_t limit_us, uint64_t recent_us);
/* Served lately, the fewest that say the pipeline is slow (dp_core: or admit_min_queue). */
#define DP_ADMIT_SHED_MIN 8
/* The usual wait of a request that found the queue empty, an upper one: mean + 4 x mean
 * deviation (as TCP's retransmission timeout: a service that varies gets room); 0: none. */
uint64_t dp_admit_usual(const struct dp_admit *a);
/* The service rate (requests per second) over the horizon at `now`; 0: none known. */
double dp_admit_rate(const struct dp_admit *a, uint64_t now);
/* The expected wait (µs) of a request arriving at `now` with `ahead` requests queued before
 * it: ahead / rate. False when no rate is known (no completion within the horizon). */
bool dp_admit_wait(const struct dp_admit *a, uint64_t now, unsigned ahead, uint64_t *wait_us);

#endif
