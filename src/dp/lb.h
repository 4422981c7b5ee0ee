/*
 * lb.h: the data plane's load-balancing policies (DESIGN.md §3, reference
 * §2.1, peers.md §1.7), pure functions over a function's endpoint list.
 *
 * Only endpoints with a free concurrency slot (in flight < container
 * concurrency, or concurrency 0 = unlimited) that are not draining are
 * candidates; when none is, the pick fails and the request waits in the
 * function's queue until a slot frees (the original polled 60 x 250 ms and
 * then answered 410).
 */
#ifndef DIRIGENT_DP_LB_H
#define DIRIGENT_DP_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dp_lb_policy {
    DP_LB_RANDOM,
    DP_LB_ROUND_ROBIN,
    DP_LB_LEAST_PROCESSED,
    DP_LB_KNATIVE,
};

/* Config names, in enum order (NULL-terminated): "random", "round-robin", ... */
extern const char *const dp_lb_policy_names[];
/* Parse a config name; false if unknown. */
bool dp_lb_policy_parse(const char *name, enum dp_lb_policy *out);

struct dp_lb_endpoint {
    uint32_t in_flight; /* requests running on it now */
    uint64_t processed; /* requests ever routed to it */
    bool draining;      /* being removed: takes no new requests */
};

struct dp_lb_state {
    uint64_t rr;  /* round-robin position */
    uint64_t rng; /* xorshift64* state; any non-zero seed */
};

/* Pick the endpoint for one request: an index into `eps`, or -1 when no endpoint has a free
 * slot. `eps` are the caller's own endpoints (borrowed, not copied: the pick is on every
 * request's path), each holding its struct dp_lb_endpoint `off` bytes in (offsetof; 0 when
 * they point at dp_lb_endpoint themselves). `cc` is the per-sandbox container concurrency
 * (0 = unlimited). The caller then increments in_flight and processed of the chosen one.
 *   random          uniform over candidates
 *   round-robin     the next candidate after the last pick, in list order
 *   least-processed the candidate with the fewest requests ever routed (first on ties)
 *   knative         as Knative's activator: cc 0 -> power of two choices on in_flight;
 *                   cc <= 3 -> first candidate in list order; else round-robin */
int dp_lb_pick(enum dp_lb_policy p, struct dp_lb_state *s, const void *const *eps, size_t off,
               size_t n, uint32_t cc);

#endif
