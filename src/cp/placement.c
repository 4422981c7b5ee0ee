/*
 * placement.c: see placement.h.
 */
#include "placement.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/common.h"
#include "dirigent/resources.h"

#define RING_POINTS_PER_NODE 64

const char *const cp_place_policy_names[] = {"random", "round-robin", "kubernetes", "chbl", NULL};

int cp_place_policy_parse(const char *s)
{
    for (int i = 0; cp_place_policy_names[i]; i++)
        if (strcmp(s, cp_place_policy_names[i]) == 0)
            return i;
    return -1;
}

static uint64_t next_rand(struct cp_placer *p)
{
    return dg_rand_next(&p->rng);
}

/* FNV-1a, then a 64-bit finaliser (splitmix64) so nearby names spread over the ring. */
static uint64_t hash_str(const char *s, uint64_t salt)
{
    uint64_t h = 1469598103934665603ULL ^ salt;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

void cp_placer_init(struct cp_placer *p, enum cp_place_policy policy, double chbl_eps,
                    uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->policy = policy;
    p->chbl_eps = chbl_eps > 0 ? chbl_eps : 0.25;
    p->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

void cp_placer_deinit(struct cp_placer *p)
{
    free(p->ring.points);
    p->ring.points = NULL;
    free(p->seen);
    p->seen = NULL;
}

void cp_placer_view_changed(struct cp_placer *p)
{
    p->view_gen++;
}

void cp_node_take(const struct cp_node *node, int64_t cpu, int64_t mem, int64_t *cpu_out,
                  int64_t *mem_out)
{
    struct dg_res_node r = {.min_cpu_milli = node->min_cpu, .min_memory_mib = node->min_mem};
    dg_res_take(&r, cpu, mem, cpu_out, mem_out);
}

bool cp_node_fits(const struct cp_node *node, int64_t cpu, int64_t mem)
{
    cp_node_take(node, cpu, mem, &cpu, &mem);
    return node->schedulable && !node->saturated && node->cpu_used + cpu <= node->cpu_cap &&
           node->mem_used + mem <= node->mem_cap &&
           (node->max_sandboxes == 0 || node->sandboxes < node->max_sandboxes) &&
           (!node->rate_limited || node->creates_left > 0);
}

static int64_t least_one(int64_t cap, int64_t req)
{
    if (cap <= 0 || req > cap)
        return 0;
    return (cap - req) * 100 / cap;
}

int64_t cp_score_least_allocated(int64_t cpu_cap, int64_t mem_cap, int64_t cpu_req, int64_t mem_req)
{
    return (least_one(cpu_cap, cpu_req) + least_one(mem_cap, mem_req)) / 2;
}

int64_t cp_score_balanced(int64_t cpu_cap, int64_t mem_cap, int64_t cpu_req, int64_t mem_req)
{
    double fc = cpu_cap > 0 ? (double)cpu_req / (double)cpu_cap : 1;
    double fm = mem_cap > 0 ? (double)mem_req / (double)mem_cap : 1;
    fc = fc > 1 ? 1 : fc;
    fm = fm > 1 ? 1 : fm;
    return (int64_t)((1 - fabs(fc - fm) / 2) * 100);
}

unsigned cp_chbl_bound(double eps, unsigned total, size_t n)
{
    if (n == 0)
        return 0;
    return (unsigned)ceil((1 + eps) * (double)(total + 1) / (double)n);
}

static void reserve(struct cp_node *node, int64_t cpu, int64_t mem)
{
    cp_node_take(node, cpu, mem, &cpu, &mem);
    node->cpu_used += cpu;
    node->mem_used += mem;
    node->sandboxes++;
    if (node->rate_limited && node->creates_left)
        node->creates_left--;
}

/* ---- the policies: one pick each, -1 if nothing fits ------------------------------------- */

static long pick_random(struct cp_placer *p, struct cp_node *const *nodes, size_t n, int64_t cpu,
                        int64_t mem)
{
    if (n == 0)
        return -1;
    /* rejection sampling: a uniform node, taken if the sandbox fits, is uniform among those it
     * fits on (the same distribution as the scan below) at a cost that does not grow with
     * the cluster while most nodes have room; a mostly full cluster falls back to the scan */
    if (n > CP_PLACE_SCAN_MAX)
        for (unsigned t = 0; t < CP_PLACE_RANDOM_TRIES; t++) {
            size_t i = (size_t)(next_rand(p) % n);
            if (cp_node_fits(nodes[i], cpu, mem))
                return (long)i;
        }
    size_t fit = 0;
    for (size_t i = 0; i < n; i++)
        fit += cp_node_fits(nodes[i], cpu, mem);
    if (fit == 0)
        return -1;
    size_t k = (size_t)(next_rand(p) % fit);
    for (size_t i = 0; i < n; i++)
        if (cp_node_fits(nodes[i], cpu, mem) && k-- == 0)
            return (long)i;
    return -1;
}

static long pick_round_robin(struct cp_placer *p, struct cp_node *const *nodes, size_t n,
                             int64_t cpu, int64_t mem)
{
    /* the next node in the (name-sorted) order from where the last one went; never spins:
     * one pass at most */
    for (size_t k = 0; k < n; k++) {
        size_t i = (size_t)((p->rr + k) % n);
        if (cp_node_fits(nodes[i], cpu, mem)) {
            p->rr = i + 1;
            return (long)i;
        }
    }
    return -1;
}

static long pick_kubernetes(struct cp_placer *p, struct cp_node *const *nodes, size_t n,
                            int64_t cpu, int64_t mem)
{
    long best = -1;
    int64_t best_score = -1;
    unsigned ties = 0;
    /* kube-scheduler's percentageOfNodesToScore: in a big cluster it stops once it found
     * enough feasible nodes, from where the previous search stopped (minFeasibleNodesToFind,
     * 100, here the whole sample: the cost does not grow with the cluster); a cluster of up
     * to CP_PLACE_SCAN_MAX nodes is scored whole, from its first node */
    size_t start = 0, feasible = 0;
    if (n > CP_PLACE_SCAN_MAX)
        start = (size_t)(p->kube_next % n);
    size_t k = 0;
    for (; k < n && (n <= CP_PLACE_SCAN_MAX || feasible < CP_PLACE_SCAN_MAX); k++) {
        size_t i = start + k < n ? start + k : start + k - n;
        const struct cp_node *d = nodes[i];
        if (!cp_node_fits(d, cpu, mem))
            continue;
        feasible++;
        int64_t tc, tm;
        cp_node_take(d, cpu, mem, &tc, &tm);
        int64_t rc = d->cpu_used + tc, rm = d->mem_used + tm;
        int64_t score = cp_score_least_allocated(d->cpu_cap, d->mem_cap, rc, rm) +
                        cp_score_balanced(d->cpu_cap, d->mem_cap, rc, rm);
        if (score > best_score) {
            best_score = score;
            best = (long)i;
            ties = 1;
        } else if (score == best_score && next_rand(p) % ++ties == 0) {
            best = (long)i; /* reservoir sampling: each tie equally likely */
        }
    }
    p->kube_next = start + k;
    return best;
}

static uint64_t nodes_signature(struct cp_node *const *nodes, size_t n)
{
    uint64_t h = n;
    for (size_t i = 0; i < n; i++)
        h = h * 31 + hash_str(nodes[i]->name, i);
    return h;
}

static int point_cmp(const void *a, const void *b)
{
    const struct cp_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

static void ring_build(struct cp_ring *r, uint64_t gen, struct cp_node *const *nodes, size_t n)
{
    if (gen && r->points && r->gen == gen && r->nnodes == n)
        return; /* the caller says the view is the same */
    uint64_t sig = nodes_signature(nodes, n);
    r->gen = gen;
    if (r->points && r->signature == sig && r->nnodes == n)
        return;
    free(r->points);
    r->npoints = n * RING_POINTS_PER_NODE;
    r->points = dg_xcalloc(r->npoints ? r->npoints : 1, sizeof(*r->points));
    for (size_t i = 0; i < n; i++)
        for (unsigned v = 0; v < RING_POINTS_PER_NODE; v++)
            r->points[i * RING_POINTS_PER_NODE + v] =
                (struct cp_ring_point){hash_str(nodes[i]->name, v + 1), (uint32_t)i};
    qsort(r->points, r->npoints, sizeof(*r->points), point_cmp);
    r->signature = sig;
    r->nnodes = n;
}

static long pick_chbl(struct cp_placer *p, struct cp_node *const *nodes, size_t n, const char *fn,
                      int64_t cpu, int64_t mem)
{
    unsigned total = 0;
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (!nodes[i]->schedulable)
            continue;
        total += nodes[i]->sandboxes;
        live++;
    }
    if (live == 0)
        return -1;
    unsigned bound = cp_chbl_bound(p->chbl_eps, total, live);
    ring_build(&p->ring, p->view_gen, nodes, n);
    struct cp_ring *r = &p->ring;
    uint64_t h = hash_str(fn, 0);
    /* the first point at or after h (wrapping) */
    size_t lo = 0, hi = r->npoints;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* walk clockwise; each node is considered once (its first point met) */
    if (n > p->seen_cap) { /* marks, not flags: nothing cleared per placement */
        p->seen = dg_xrealloc(p->seen, n * sizeof(*p->seen));
        memset(p->seen, 0, n * sizeof(*p->seen));
        p->seen_cap = n;
        p->seen_mark = 0;
    }
    if (++p->seen_mark == 0) { /* wrapped: clear once */
        memset(p->seen, 0, p->seen_cap * sizeof(*p->seen));
        p->seen_mark = 1;
    }
    long found = -1;
    for (size_t k = 0; k < r->npoints && found < 0; k++) {
        uint32_t i = r->points[(lo + k) % r->npoints].node;
        if (p->seen[i] == p->seen_mark)
            continue;
        p->seen[i] = p->seen_mark;
        if (nodes[i]->sandboxes < bound && cp_node_fits(nodes[i], cpu, mem))
            found = (long)i;
    }
    return found;
}

unsigned cp_place_view(struct cp_placer *p, struct cp_node *const *nodes, size_t n, const char *fn,
                       int64_t cpu, int64_t mem, unsigned count, size_t *chosen)
{
    unsigned placed = 0;
    for (; placed < count; placed++) {
        long i;
        switch (p->policy) {
        case CP_PLACE_ROUND_ROBIN:
            i = pick_round_robin(p, nodes, n, cpu, mem);
            break;
        case CP_PLACE_KUBERNETES:
            i = pick_kubernetes(p, nodes, n, cpu, mem);
            break;
        case CP_PLACE_CHBL:
            i = pick_chbl(p, nodes, n, fn, cpu, mem);
            break;
        case CP_PLACE_RANDOM:
        default:
            i = pick_random(p, nodes, n, cpu, mem);
            break;
        }
        if (i < 0)
            break;
        reserve(nodes[i], cpu, mem);
        chosen[placed] = (size_t)i;
    }
    return placed;
}

unsigned cp_place(struct cp_placer *p, struct cp_node *nodes, size_t n, const char *fn, int64_t cpu,
                  int64_t mem, unsigned count, size_t *chosen)
{
    struct cp_node *small[64] = {NULL}, **v = n <= 64 ? small : dg_xcalloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = &nodes[i];
    unsigned placed = cp_place_view(p, v, n, fn, cpu, mem, count, chosen);
    if (v != small)
        free(v);
    return placed;
}

bool cp_place_on(struct cp_node *node, int64_t cpu, int64_t mem)
{
    if (!cp_node_fits(node, cpu, mem))
        return false;
    reserve(node, cpu, mem);
    return true;
}
