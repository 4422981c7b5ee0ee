/*
 * registry.h: the data plane's registry, part of its core (dp_core.h): the
 * functions (a list and a name index for every invocation's Host) and each
 * one's endpoints (sandboxes). Each object has one create, one loss and one
 * free, here: dp_reg_function_get / dp_reg_function_free; an endpoint
 * dp_reg_endpoint_add, dp_reg_endpoint_remove (it left the CP's list: freed at
 * once when idle, else "removed" until dp_reg_endpoint_release gives back its
 * last slot). No I/O: the adapter opens and closes what an endpoint needs
 * through ep_open/ep_close.
 */
#ifndef DIRIGENT_DP_REGISTRY_H
#define DIRIGENT_DP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admit.h"
#include "dirigent/strmap.h"
#include "lb.h"

struct dg_metric;
struct dg_metric_family;
struct dp_drain;
struct dp_function;
struct dp_req;

struct dp_endpoint {
    struct dp_lb_endpoint lb; /* in_flight, processed, draining */
    char *id;                 /* sandbox id */
    char *address;            /* host:port */
    void *data;               /* the adapter's (its connection pool), from effects.ep_open */
    struct dp_function *fn;
    bool removed;      /* no longer in the list: freed when in_flight reaches 0 */
    char *exit_reason; /* it exited by itself, why (the CP's push; NULL: not). Owned */
    struct dp_endpoint *next_removed;
};

struct dp_function {
    char *name;
    uint32_t concurrency;     /* per sandbox; 0 = unlimited */
    bool h2c;                 /* its sandboxes are reached over h2c (upstream_protocol) */
    struct dp_endpoint **eps; /* the CP's list, in the order they came */
    size_t neps;
    struct dp_endpoint *removed; /* taken out of the list, requests still running */
    struct dp_req *q_head, *q_tail;
    unsigned queued, running; /* running: every request not answered yet, queued ones too */
    struct dp_lb_state lb;
    struct dp_drain *drains;
    struct dg_metric *m_requests, *m_cold, *m_queue, *m_latency; /* NULL: no metrics */
    unsigned reported; /* in-flight count last sent to the CP */
    bool waiting;      /* in the core's waiting list: it has queued requests */
    bool report_due;   /* in the core's to_report list: its first request since idle */
    struct dp_function *w_prev, *w_next, *r_next;
    char *error;           /* why its sandboxes cannot start (the CP's last push), while it has no
                    endpoint; NULL: none. Owned. */
    struct dp_admit admit; /* its queue's service rate (admission control, dp_core.c) */
    struct dp_function *next;
    struct dp_function **pprev; /* what points at it in reg->fns: O(1) removal */
};

struct dp_registry {
    struct dp_function *fns;
    struct dg_strmap index; /* name -> function */
    uint64_t seed;          /* a new function's lb.rng: seed ^ its address */
    /* per-function metrics (NULL: none) */
    struct dg_metric_family *f_requests, *f_cold, *f_queue, *f_latency;
    /* the adapter's part of an endpoint (both may be NULL): open fails < 0 with err set */
    void *ud;
    int (*ep_open)(void *ud, struct dp_endpoint *e, char *err, size_t errlen);
    void (*ep_close)(void *ud, struct dp_endpoint *e);
};

struct dp_function *dp_reg_function_find(struct dp_registry *reg, const char *name, size_t len);
/* `name` (borrowed), created when missing (*created says which; may be NULL). */
struct dp_function *dp_reg_function_get(struct dp_registry *reg, const char *name, size_t len,
                                        bool *created);
/* The one free of a function, with its endpoints (running requests or not) and metrics. The
 * caller has emptied its queue and drains and taken it off its own lists. */
void dp_reg_function_free(struct dp_registry *reg, struct dp_function *f);
/* Append endpoint `id` at `address` (both borrowed) to f's list; NULL (logged) when the
 * adapter could not open it. */
struct dp_endpoint *dp_reg_endpoint_add(struct dp_registry *reg, struct dp_function *f,
                                        const char *id, const char *address);
/* Endpoint i left f's list: freed now when idle, else it drains (takes no new request) and
 * goes with its last request (dp_reg_endpoint_release). */
void dp_reg_endpoint_remove(struct dp_registry *reg, struct dp_function *f, size_t i);
/* A request gave e's slot back. True if e had left the list and is now freed. */
bool dp_reg_endpoint_release(struct dp_registry *reg, struct dp_endpoint *e);
/* Everything goes (at exit); the caller has freed what it hung on the functions. */
void dp_reg_deinit(struct dp_registry *reg);

#endif
