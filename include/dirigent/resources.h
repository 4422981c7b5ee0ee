/*
 * resources.h: the one accounting rule for sandbox resources, shared by the
 * control plane (what placement reserves on a worker) and the worker (what a
 * sandbox is limited to), so the two cannot disagree.
 *
 * A worker advertises its capacity (milli-CPU, MiB), its CPU overcommit factor
 * and its per-sandbox floors. A sandbox of a function that requests (cpu, mem)
 * takes max(request, floor) of each; a worker fits sandboxes while the sum of
 * what they take stays within capacity x overcommit (CPU) and capacity
 * (memory, never overcommitted: it is a hard limit in the sandbox, and running
 * out of it kills). A request of 0 is the minimum, i.e. the floor.
 *
 * The CPU a sandbox takes is a scheduling request (its cgroup weight), not a
 * quota, unless the worker's CPU limit policy says otherwise: `none` (no quota,
 * as the original Dirigent), `request` (a quota of what it takes) or a factor
 * `Nx` (N times that). Units everywhere: milli-CPU and MiB.
 */
#ifndef DIRIGENT_RESOURCES_H
#define DIRIGENT_RESOURCES_H

#include <stdint.h>

#include "dirigent/common.h"

/* Defaults (the worker's config and what the CP assumes for a worker that advertises none). */
#define DG_RES_MIN_CPU_MILLI  100
#define DG_RES_MIN_MEMORY_MIB 32
#define DG_RES_CPU_OVERCOMMIT 10.0

/* What a worker advertises about its resources. */
struct dg_res_node {
    int64_t cpu_milli;      /* CPU of the machine (or configured), milli-CPU */
    int64_t memory_mib;     /* memory of the machine (or configured), MiB */
    double cpu_overcommit;  /* schedulable CPU = cpu_milli x this; <= 0 counts as 1 */
    int64_t min_cpu_milli;  /* floor of what one sandbox takes; <= 0 counts as 1 */
    int64_t min_memory_mib; /* likewise, MiB */
};

/* What one sandbox of a function requesting (cpu, mem) takes on `node`: max(request, floor)
 * each (a request <= 0 is the floor). */
void dg_res_take(const struct dg_res_node *node, int64_t cpu, int64_t mem, int64_t *cpu_out,
                 int64_t *mem_out);

/* The CPU placement may hand out on `node`: cpu_milli x cpu_overcommit (rounded down). */
int64_t dg_res_cpu_schedulable(const struct dg_res_node *node);

/* The CPU limit policy of a worker's sandboxes. */
enum dg_cpu_limit_kind {
    DG_CPU_LIMIT_NONE,    /* no quota: the request is a weight only */
    DG_CPU_LIMIT_REQUEST, /* quota = what the sandbox takes */
    DG_CPU_LIMIT_FACTOR,  /* quota = factor x what the sandbox takes */
};
struct dg_cpu_limit {
    enum dg_cpu_limit_kind kind;
    double factor; /* DG_CPU_LIMIT_FACTOR only, > 0 */
};

/* Parse "none", "request" or a factor "2x" / "1.5x" (the 'x' may be left out). Errors name
 * what was expected: "expected none, request or a factor like 2x, got 'abc'". */
int dg_cpu_limit_parse(const char *s, struct dg_cpu_limit *out, struct dg_err *err);

/* The quota, milli-CPU, for a sandbox that takes `cpu_milli` (what dg_res_take gave); 0 means
 * no quota. Never below 1 milli-CPU when there is one. */
int64_t dg_cpu_limit_quota(const struct dg_cpu_limit *l, int64_t cpu_milli);

/* The cgroup v1 cpu.shares that stand for a request of `cpu_milli` (1024 per CPU, as
 * Kubernetes maps requests; at least 2, the kernel's minimum). */
uint64_t dg_res_cpu_shares(int64_t cpu_milli);

#endif
