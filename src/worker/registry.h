/*
 * registry.h: the worker's sandboxes (registry.c): each one has one create
 * (wk_registry_create), one lost (wk_sandbox_exited: it exited without a delete) and one free
 * (wk_sandbox_gone: its runtime has removed everything of it). The registry drives one runtime
 * (runtime.h) and tells its adapters (api.c, cplink.c) what happened through an events table;
 * it knows nothing of HTTP or JSON.
 */
#ifndef DIRIGENT_WORKER_REGISTRY_H
#define DIRIGENT_WORKER_REGISTRY_H

#include "dirigent/metrics.h"
#include "dirigent/strmap.h"
#include "runtime.h"

/* What the registry tells its adapters. Callbacks may be NULL. */
struct wk_registry_events {
    /* A sandbox was registered and its runtime is about to start: bind sb->reply (the
     * create's caller's) to sb, e.g. for the client going away. */
    void (*bind)(void *ud, struct wk_sandbox *sb);
    /* The answer to sb's create (err NULL: it is ready) for `to`, who waited for it (sb->reply
     * was cleared: it is answered once). */
    void (*answer)(void *ud, struct wk_sandbox *sb, struct wk_reply to, const struct dg_err *err);
    /* sb exited on its own (sb->exit_status, sb->exit_reason): tell the control plane. */
    void (*exited)(void *ud, const struct wk_sandbox *sb);
    /* wk_registry_saturated changed: tell the control plane now, not at the next beat. */
    void (*saturation)(void *ud, bool saturated);
    void *ud;
};

struct wk_registry {
    const struct wk_runtime *rt;
    void *rt_state; /* the runtime's own (runtime.h) */
    struct wk_sandbox *sandboxes;
    struct dg_strmap by_id; /* id -> sandbox (deletes look them up) */
    unsigned n;
    uint64_t next_id;
    unsigned run; /* this run's mark in sandbox ids (from its start time) */
    /* maxConcurrentCreates (0: no bound): creates past it wait in a FIFO, not in the runtime
     * in parallel; the worker is saturated while as many wait as run */
    unsigned max_creates, creating, nqueued;
    struct wk_sandbox *q_head, *q_tail;
    bool pumping, saturated, stopping;
    char name[64];
    bool hurrying; /* wk_registry_hurry was called */
    struct wk_registry_events ev;
    struct dg_metric *creates, *create_failures, *unexpected_exits;
    struct dg_metric_family *create_seconds;
    struct dg_metric *stop_seconds, *delete_seconds; /* delete -> process gone, -> all gone */
};

/* Set up `reg` for worker `name` (copied) on runtime `rt` (its state made already), with its
 * metrics in `metrics` (borrowed; outlives reg). */
void wk_registry_init(struct wk_registry *reg, const char *name, const struct wk_runtime *rt,
                      void *rt_state, const struct wk_registry_events *ev,
                      struct dg_metrics *metrics);
/* Bound the creates running at once (0: none); the rest wait in order. */
void wk_registry_set_max_creates(struct wk_registry *reg, unsigned max);
/* Saturated: as many creates wait as may run: more creates here only wait; the control plane
 * should place elsewhere (heartbeat "saturated"). */
bool wk_registry_saturated(const struct wk_registry *reg);
/* Free what is left after the loop has stopped (every sandbox is gone by then). */
void wk_registry_deinit(struct wk_registry *reg);

/* One create: check `spec` (borrowed for the call), register a sandbox of it and start its
 * runtime. `reply` says who waits for the answer (given to ev.bind, answered through
 * ev.answer). Returns -1 with the 400 text in err when the spec is bad: nothing made. The
 * sandbox may be answered, even freed, before this returns. */
int wk_registry_create(struct wk_registry *reg, const struct dg_wire_create *spec,
                       struct wk_reply reply, struct dg_err *err);
/* Delete sandbox `id`: 0 (its runtime stops it in the background; a create still under way
 * is answered as failed), or -1 when there is no such sandbox or it is going already. */
int wk_registry_delete(struct wk_registry *reg, struct dg_str id);
/* A runtime that gives `sb` an existing container (a pre-created one, prewarm.c) gives it that
 * container's name too, during its create: `sb` is `id` (copied) from now on, in the
 * registry's index, the create's answer and the control plane. */
void wk_registry_rename(struct wk_sandbox *sb, const char *id);
/* The caller of sb's create went away: nobody would delete it, so it goes now. */
void wk_registry_abandon(struct wk_sandbox *sb);
/* Shutdown: every sandbox is stopped, then the runtime releases what it shares. */
void wk_registry_stop(struct wk_registry *reg);
/* A second signal during shutdown: what is being stopped is killed now. */
void wk_registry_hurry(struct wk_registry *reg);
const char *wk_sandbox_state_name(enum wk_sb_state s);

/* ---- runtime -> registry ---------------------------------------------------------------- */

/* The create finished (err NULL: ready). */
void wk_sandbox_created(struct wk_sandbox *sb, const struct dg_err *err);
/* The lost: an exit nobody asked for (reported to the CP). `status` is the exit status, or
 * -signal; `reason` (borrowed; NULL: said from the status) is what the CP, `dirigent function
 * get` and the caller's 502 show after "sandbox ID ": e.g. "OOM-killed: memory limit 64 MiB",
 * "exited with status 1", "killed by signal 9 (Killed)". */
void wk_sandbox_exited(struct wk_sandbox *sb, int64_t status, const char *reason);
/* Being deleted, sb's process is gone (what it held of the machine is free; its runtime may
 * still be cleaning up): the delete's time to here is observed. Optional for a runtime. */
void wk_sandbox_stopped(struct wk_sandbox *sb);
/* The free: nothing of sb is left on the host; sb is freed. */
void wk_sandbox_gone(struct wk_sandbox *sb);
/* `status` (exit status or -signal) as such a reason, into buf. */
void wk_exit_reason(int64_t status, char *buf, size_t len);

#endif
