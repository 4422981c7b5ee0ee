/*
 * prewarm.h: the worker's pre-created sandboxes (prewarm.c). A pooled sandbox is made by its
 * runtime up to the last step before its start (for `oci`: image, network namespace, rootfs,
 * config and `crun create`: its cgroup and namespaces exist, its process waits to exec the
 * function), so a cold start that finds one only starts it (`crun start`) and probes it.
 *
 * The control plane says how many to keep per function (PUT /v1/prewarm, a whole table:
 * struct dg_wire_pool, its spec and a count per function); the pool makes what is missing in
 * the background, a few at a time, replaces each one a create takes, and removes what the
 * table no longer wants. Pooled sandboxes are not the registry's: they have no id the CP
 * knows until a create takes one (the create's sandbox keeps the registry's id; the container
 * keeps its own name, <instance label>-p<run>-<n>, from the worker's instance like everything
 * else it makes on the host).
 *
 * Ownership: a runtime that can pre-create makes the pool in its init (wk_prewarm_new) and
 * frees it in its free; each pooled sandbox is one allocation of the pool's (a struct
 * wk_sandbox with the runtime's sb_size bytes, as the registry's), whose contents the runtime
 * owns between ops->make and wk_prewarm_gone.
 */
#ifndef DIRIGENT_WORKER_PREWARM_H
#define DIRIGENT_WORKER_PREWARM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dirigent/wire.h"
#include "runtime.h"

struct wk_prewarm;
struct dg_http_server;
struct dg_metrics;

/* What the runtime does for its pool. */
struct wk_prewarm_ops {
    /* Make `psb` (allocated and zeroed by the pool, sb->function and sb->id set) from `spec`
     * (borrowed for the call) up to its start; wk_prewarm_made(psb, ...) when it is (or it
     * failed). */
    void (*make)(void *rt, struct wk_sandbox *psb, const struct dg_wire_create *spec);
    /* Remove `psb`, made or being made; wk_prewarm_gone(psb) when nothing of it is left. */
    void (*drop)(void *rt, struct wk_sandbox *psb);
};

/* A pool for runtime state `rt` (borrowed; outlives the pool) whose sandboxes carry `sb_size`
 * bytes of the runtime's, named from `label` (copied). */
struct wk_prewarm *wk_prewarm_new(uv_loop_t *loop, const char *label, size_t sb_size,
                                  const struct wk_prewarm_ops *ops, void *rt);

/* The control plane's table (borrowed for the call): what each function keeps. */
void wk_prewarm_set(struct wk_prewarm *p, const struct dg_wire_pool *table);

/* A made sandbox of `spec`'s function with exactly `spec` (image, port, env, args, limits), or
 * NULL. The caller (the runtime's create) moves its contents into its own sandbox and then
 * calls wk_prewarm_release(psb). A replacement is made in the background. */
struct wk_sandbox *wk_prewarm_take(struct wk_prewarm *p, const struct dg_wire_create *spec);
/* Free the allocation of a taken sandbox (its contents were moved out). */
void wk_prewarm_release(struct wk_sandbox *psb);

/* runtime -> pool: `psb` is made (err NULL; it holds `held_bytes` of memory now, as its
 * cgroup counts them) or failed (err: the runtime then drops it itself and calls _gone). */
void wk_prewarm_made(struct wk_sandbox *psb, int64_t held_bytes, const struct dg_err *err);
/* runtime -> pool: nothing of `psb` is left on the host; the pool frees it. */
void wk_prewarm_gone(struct wk_sandbox *psb);

/* Shutdown: no more are made, every pooled one is dropped. */
void wk_prewarm_stop(struct wk_prewarm *p);
/* After the loop stopped (every pooled sandbox gone). NULL: nothing. */
void wk_prewarm_free(struct wk_prewarm *p);

/* The memory the pooled sandboxes hold, MiB (rounded up): the worker advertises its capacity
 * less this. 0 for NULL. */
int64_t wk_prewarm_held_mib(const struct wk_prewarm *p);

/* PUT /v1/prewarm (the CP's credential only) and the pool's metrics: `p` may be NULL (a runtime
 * without a pool: the table is accepted and nothing is kept). */
void wk_prewarm_mount(struct dg_http_server *s, struct wk_prewarm *p, struct dg_metrics *m);

#endif
