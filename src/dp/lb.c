/*
 * lb.c: see lb.h. The original's bugs are not copied: its best-of-two picked
 * the endpoint with the higher count, and an empty list dereferenced nil.
 */
#include "lb.h"

#include <string.h>

#include "dirigent/common.h"

const char *const dp_lb_policy_names[] = {"random", "round-robin", "least-processed", "knative",
                                          NULL};

bool dp_lb_policy_parse(const char *name, enum dp_lb_policy *out)
{
    for (int i = 0; dp_lb_policy_names[i]; i++) {
        if (strcmp(name, dp_lb_policy_names[i]) == 0) {
            *out = (enum dp_lb_policy)i;
            return true;
        }
    }
    return false;
}

static uint64_t next_rand(struct dp_lb_state *s)
{
    return dg_rand_next(&s->rng);
}

/* The caller's i-th endpoint's state: `off` bytes into the struct eps[i] points to. */
#define EP(i) ((const struct dp_lb_endpoint *)((const char *)eps[i] + off))

static bool free_slot(const struct dp_lb_endpoint *e, uint32_t cc)
{
    return !e->draining && (cc == 0 || e->in_flight < cc);
}

/* The k-th candidate (0-based) in list order, or -1. */
static int nth_candidate(const void *const *eps, size_t off, size_t n, uint32_t cc, size_t k)
{
    for (size_t i = 0; i < n; i++)
        if (free_slot(EP(i), cc) && k-- == 0)
            return (int)i;
    return -1;
}

static int pick_random(struct dp_lb_state *s, const void *const *eps, size_t off, size_t n,
                       uint32_t cc, size_t ncand)
{
    return nth_candidate(eps, off, n, cc, (size_t)(next_rand(s) % ncand));
}

static int pick_round_robin(struct dp_lb_state *s, const void *const *eps, size_t off, size_t n,
                            uint32_t cc)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = (size_t)((s->rr + k) % n);
        if (free_slot(EP(i), cc)) {
            s->rr = i + 1;
            return (int)i;
        }
    }
    return -1;
}

int dp_lb_pick(enum dp_lb_policy p, struct dp_lb_state *s, const void *const *eps, size_t off,
               size_t n, uint32_t cc)
{
    size_t ncand = 0;
    for (size_t i = 0; i < n; i++)
        ncand += free_slot(EP(i), cc);
    if (ncand == 0)
        return -1;
    switch (p) {
    case DP_LB_RANDOM:
        return pick_random(s, eps, off, n, cc, ncand);
    case DP_LB_ROUND_ROBIN:
        return pick_round_robin(s, eps, off, n, cc);
    case DP_LB_LEAST_PROCESSED: {
        int best = -1;
        for (size_t i = 0; i < n; i++)
            if (free_slot(EP(i), cc) && (best < 0 || EP(i)->processed < EP(best)->processed))
                best = (int)i;
        return best;
    }
    case DP_LB_KNATIVE:
        if (cc == 0) { /* power of two choices: the less loaded of two distinct candidates */
            if (ncand == 1)
                return nth_candidate(eps, off, n, cc, 0);
            size_t a = (size_t)(next_rand(s) % ncand);
            size_t b = (size_t)(next_rand(s) % (ncand - 1));
            if (b >= a)
                b++;
            int ia = nth_candidate(eps, off, n, cc, a), ib = nth_candidate(eps, off, n, cc, b);
            return EP(ib)->in_flight < EP(ia)->in_flight ? ib : ia;
        }
        if (cc <= 3)
            return nth_candidate(eps, off, n, cc, 0); /* first available */
        return pick_round_robin(s, eps, off, n, cc);
    }
    return -1;
}
