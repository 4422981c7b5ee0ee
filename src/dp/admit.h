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
    uint64_t mark_us; /* busy time is counted up to here */
    bool busy;        /* the queue is not empty */
    uint64_t base_us; /* the wait of a request that found the queue empty (average); 0: none */
};

/* The queue became empty (busy false) or not (busy true) at `now`. */
void dp_admit_set_busy(struct dp_admit *a, uint64_t now, bool busy);
/* A request left the queue for a sandbox at `now` after waiting `waited_us`; `found_empty`:
 * nothing was queued ahead of it when it came. */
void dp_admit_done(struct dp_admit *a, uint64_t now, uint64_t waited_us, bool found_empty);
/* The service rate (requests per second) over the horizon at `now`; 0: none known. */
double dp_admit_rate(const struct dp_admit *a, uint64_t now);
/* The expected wait (µs) of a request arriving at `now` with `ahead` requests queued before
 * it: ahead / rate. False when no rate is known (no completion within the horizon). */
bool dp_admit_wait(const struct dp_admit *a, uint64_t now, unsigned ahead, uint64_t *wait_us);

#endif
