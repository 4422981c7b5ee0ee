/*
 * fn_error.h: a function's last failure and the state word the API derives
 * from it. Pure (no loop, no sockets): the core (cp_core.c) records a failed create with
 * the worker's reason and clears it when a create succeeds; it records a
 * sandbox that exited by itself (e.g. "sandbox ID OOM-killed: memory limit
 * 64 MiB") as an exit failure, which a later create does not clear (the
 * replacement may die the same way: the user must see why) and which never
 * makes the function "failing" (it starts fine); the next failure of either
 * kind replaces it. api.c shows it; the unit tests drive it with a fake clock.
 *
 * States, as `GET /v1/functions` reports them (docs/api.md):
 *   ready     at least one sandbox is ready (an error may still be shown: the
 *             last create elsewhere failed)
 *   failing   the last create failed and no sandbox is ready: invocations get
 *             503 with the reason while the CP keeps retrying on later ticks
 *   unschedulable  no worker has room for its request (cpu, memory) and no
 *             sandbox is ready: 503 with the reason; retried when capacity frees
 *   creating  no sandbox ready yet, a create is in flight (a cold start)
 *   pending   sandboxes wanted, none ready or being created (no schedulable
 *             worker)
 *   idle      no sandbox and none wanted (scaled to zero)
 *
 * Header-only (static inline): small, and the unit tests include it without
 * linking the daemon.
 */
#ifndef DIRIGENT_CP_FN_ERROR_H
#define DIRIGENT_CP_FN_ERROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct cp_fn_error {
    bool set;
    char reason[256];   /* the worker's reason */
    char worker[64];    /* the worker that failed ("" if it was gone) */
    uint64_t at_ms;     /* monotonic (the loop's clock): for the age */
    uint64_t wall_ms;   /* wall clock, Unix ms: for display */
    bool unschedulable; /* no worker had room (not a worker's failure) */
    bool exit;          /* a sandbox exited by itself (not a failed create) */
};

/* Copy `src` into `dst` of size n (>= 1), truncated and terminated (truncation is meant: no
 * snprintf, which warns about it). */
static inline void cp__fn_error_copy(char *dst, size_t n, const char *src)
{
    size_t len = strnlen(src, n - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Record a failure; `worker` may be NULL. Both strings are copied (truncated). */
static inline void cp_fn_error_set(struct cp_fn_error *e, const char *worker, const char *reason,
                                   uint64_t now_ms, uint64_t wall_ms)
{
    e->set = true;
    cp__fn_error_copy(e->reason, sizeof(e->reason), reason && reason[0] ? reason : "unknown error");
    cp__fn_error_copy(e->worker, sizeof(e->worker), worker ? worker : "");
    e->at_ms = now_ms;
    e->wall_ms = wall_ms;
    e->unschedulable = false;
    e->exit = false;
}

/* Record a sandbox's unexpected exit: as cp_fn_error_set, marked as an exit. */
static inline void cp_fn_error_set_exit(struct cp_fn_error *e, const char *worker,
                                        const char *reason, uint64_t now_ms, uint64_t wall_ms)
{
    cp_fn_error_set(e, worker, reason, now_ms, wall_ms);
    e->exit = true;
}

/* A create worked: a create failure is over; an exit failure stays (see above). */
static inline bool cp_fn_error_create_worked(struct cp_fn_error *e)
{
    if (!e->set || e->exit)
        return false;
    e->set = false;
    e->reason[0] = e->worker[0] = '\0';
    e->at_ms = e->wall_ms = 0;
    e->unschedulable = false;
    return true;
}

/* "create", "exit" or "unschedulable": what the API's error_kind says. */
static inline const char *cp_fn_error_kind(const struct cp_fn_error *e)
{
    return e->exit ? "exit" : e->unschedulable ? "unschedulable" : "create";
}

static inline void cp_fn_error_clear(struct cp_fn_error *e)
{
    e->set = false;
    e->reason[0] = e->worker[0] = '\0';
    e->at_ms = e->wall_ms = 0;
    e->exit = false;
}

/* Milliseconds since the failure (0 if the clock went backwards or there is none). */
static inline uint64_t cp_fn_error_age_ms(const struct cp_fn_error *e, uint64_t now_ms)
{
    return e->set && now_ms > e->at_ms ? now_ms - e->at_ms : 0;
}

/* The state word above for a function with `ready` ready sandboxes, `creating` creates in
 * flight and `desired` sandboxes wanted. */
static inline const char *cp_fn_state(const struct cp_fn_error *e, unsigned ready,
                                      unsigned creating, int desired)
{
    if (ready > 0)
        return "ready";
    if (e->set && !e->exit)
        return e->unschedulable ? "unschedulable" : "failing";
    if (creating > 0)
        return "creating";
    return desired > 0 ? "pending" : "idle";
}

/* After a failed create: must the data planes hear the error now (with the function's empty
 * list), so that the requests they queue are answered with it? Only when no sandbox is
 * ready (they would be served) and no other create is in flight (it may still succeed and
 * serve them; its own failure pushes then). Asked on every failure, not only when the
 * reason changes: requests that arrived since the last push wait too. */
static inline bool cp_fn_error_push_due(unsigned ready, unsigned creating)
{
    return ready == 0 && creating == 0;
}

#endif
