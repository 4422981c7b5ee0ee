/*
 * placement.h: where sandboxes go (DESIGN.md §5). Pure: the CP, the
 * simulator and the unit tests give it a view of the workers (capacity and
 * what is reserved on each) and get node indexes back; a placement reserves
 * the function's request on the node it picked, so the k sandboxes of one
 * decision see each other (batch placement).
 *
 * Units everywhere: CPU in milli-CPU, memory in MiB.
 *
 * Policies (placementPolicy):
 *   random       uniform among the workers the sandbox fits on (sampled above
 *                CP_PLACE_SCAN_MAX nodes: the same distribution, no scan)
 *   round-robin  the next worker in name order the sandbox fits on
 *   kubernetes   kube-scheduler's NodeResourcesFit (LeastAllocated) plus
 *                NodeResourcesBalancedAllocation, highest sum; ties at random; above
 *                CP_PLACE_SCAN_MAX nodes among CP_PLACE_SCAN_MAX feasible ones from a rotating
 *                start, as kube-scheduler's percentageOfNodesToScore
 *   chbl         consistent hashing with bounded loads (Mirrokni, Thorup,
 *                Zadimoghaddam): the function's name on a ring of workers, the
 *                first one clockwise whose sandbox count stays within
 *                ceil((1 + eps) x average) and that fits; a function's
 *                sandboxes keep landing where its image is already pulled
 */
#ifndef DIRIGENT_CP_PLACEMENT_H
#define DIRIGENT_CP_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Clusters of up to this many nodes are scanned whole (every policy as it always was);
 * bigger ones are sampled where the policy allows: random by rejection sampling (up to
 * CP_PLACE_RANDOM_TRIES draws, then the scan), kubernetes scores this many feasible nodes from
 * a rotating start (kube-scheduler's minFeasibleNodesToFind). */
#define CP_PLACE_SCAN_MAX     100
#define CP_PLACE_RANDOM_TRIES 16

enum cp_place_policy { CP_PLACE_RANDOM, CP_PLACE_ROUND_ROBIN, CP_PLACE_KUBERNETES, CP_PLACE_CHBL };

extern const char *const cp_place_policy_names[]; /* NULL-terminated, in enum order */
/* The policy named `s`; -1 if none. */
int cp_place_policy_parse(const char *s);

/* What placement sees of a worker. */
struct cp_node {
    const char *name;
    int64_t cpu_cap, mem_cap;   /* schedulable capacity (CPU with the worker's overcommit) */
    int64_t cpu_used, mem_used; /* reserved by its sandboxes (updated by cp_place) */
    int64_t min_cpu, min_mem;   /* the worker's per-sandbox floors (0: none): a sandbox takes
                                   max(request, floor), dg_res_take */
    unsigned sandboxes;         /* its sandboxes (updated by cp_place) */
    bool schedulable;
    bool saturated;         /* its heartbeat says its create/delete queue is full: alive, but placed
                       on only when it says it is free again (issue 16) */
    unsigned max_sandboxes; /* quota (maxSandboxesPerWorker): no more sandboxes; 0: none */
    bool rate_limited;      /* creates_left counts (maxCreatesPerWorkerPerSecond) */
    unsigned creates_left;  /* rate_limited: creates it may still get now (updated by cp_place) */
};

/* The ring of the chbl policy, rebuilt when the set of workers changes. */
struct cp_ring {
    struct cp_ring_point {
        uint64_t hash;
        uint32_t node;
    } * points;
    size_t npoints;
    uint64_t signature; /* of the node names it was built from */
    size_t nnodes;
    uint64_t gen; /* the view generation it was built for (cp_placer_view_changed) */
};

struct cp_placer {
    enum cp_place_policy policy;
    double chbl_eps;    /* bound factor: (1 + eps) x average load; default 0.25 */
    uint64_t rr;        /* round-robin position */
    uint64_t kube_next; /* kubernetes: where the next sampled search starts */
    uint64_t rng;       /* xorshift64* state: placements are reproducible for a seed */
    struct cp_ring ring;
    uint64_t view_gen; /* 0: unknown (the ring compares node names at each placement); else
                           bumped by cp_placer_view_changed whenever the view changes */
    uint32_t *seen;    /* chbl: the nodes the walk met (== seen_mark), no clearing */
    size_t seen_cap;
    uint32_t seen_mark;
};

void cp_placer_init(struct cp_placer *p, enum cp_place_policy policy, double chbl_eps,
                    uint64_t seed);
void cp_placer_deinit(struct cp_placer *p);
/* The caller's view (cp_place_view's nodes, their order or names) changed: a caller that says
 * so spares chbl the comparison of every node's name at each placement. */
void cp_placer_view_changed(struct cp_placer *p);

/* What a sandbox requesting (cpu, mem) takes on `node` (dg_res_take with its floors). */
void cp_node_take(const struct cp_node *node, int64_t cpu, int64_t mem, int64_t *cpu_out,
                  int64_t *mem_out);

/* Place `count` sandboxes of function `fn` requesting (cpu, mem) on `nodes`: chosen[i] is the
 * index of the i-th one's node. Each placement reserves on its node. Returns how many were
 * placed: fewer than `count` when no schedulable node has room for the rest. */
unsigned cp_place(struct cp_placer *p, struct cp_node *nodes, size_t n, const char *fn, int64_t cpu,
                  int64_t mem, unsigned count, size_t *chosen);
/* The same over a view: pointers to the nodes where they live (the CP's workers carry their
 * node, so a placement reserves on the worker itself: nothing is copied, nothing recomputed). */
unsigned cp_place_view(struct cp_placer *p, struct cp_node *const *nodes, size_t n, const char *fn,
                       int64_t cpu, int64_t mem, unsigned count, size_t *chosen);

/* Does a sandbox of (cpu, mem) fit on the node now? (Schedulable, the request within what
 * is free, below its sandbox quota and with a create left in its rate limit.) */
bool cp_node_fits(const struct cp_node *node, int64_t cpu, int64_t mem);

/* kube-scheduler's scores (0..100) for a node of capacity (cpu_cap, mem_cap) once `cpu_req`
 * and `mem_req` (all that is requested on it, the new pod included) are placed:
 * LeastAllocated = mean over cpu and memory of (cap - req) x 100 / cap (0 if req > cap), in
 * integers as kube-scheduler computes it; BalancedAllocation = (1 - std of the two fractions)
 * x 100 = (1 - |cpu/cap - mem/cap| / 2) x 100, fractions capped at 1. */
int64_t cp_score_least_allocated(int64_t cpu_cap, int64_t mem_cap, int64_t cpu_req,
                                 int64_t mem_req);
int64_t cp_score_balanced(int64_t cpu_cap, int64_t mem_cap, int64_t cpu_req, int64_t mem_req);

/* The chbl bound: the most sandboxes a node may hold when one more is placed, given the
 * total on the n schedulable nodes: ceil((1 + eps) x (total + 1) / n). */
unsigned cp_chbl_bound(double eps, unsigned total, size_t n);

/* Reserve one sandbox on `node` if it fits (cp_node_fits), whatever the policy: a hint taken
 * before the policy's pick (a worker holding a pre-created sandbox of the function). */
bool cp_place_on(struct cp_node *node, int64_t cpu, int64_t mem);

#endif
