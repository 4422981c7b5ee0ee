/*
 * cplink.h: the worker's link to the control plane (cplink.c): registration and heartbeats
 * (one per emulated node), and the report of sandboxes that exited on their own.
 */
#ifndef DIRIGENT_WORKER_CPLINK_H
#define DIRIGENT_WORKER_CPLINK_H

#include "dirigent/auth.h"
#include <uv.h>

#include "registry.h"

/* Strings borrowed: they outlive the link. */
struct wk_cplink_conf {
    const char *host; /* workerNodeIp: the API's address the CP is given */
    const char *boot; /* this daemon's start: the CP tells a restart from a heartbeat */
    const struct dg_strlist *cp_addresses;
    uint64_t heartbeat_ms;
    int64_t nodes;                         /* emulatedNodes: register as NAME-0..N-1 */
    int64_t cpu_milli, memory_mib;         /* advertised capacity (0: the machine's) */
    double cpu_overcommit;                 /* placement may reserve cpu_milli x this */
    int64_t min_cpu_milli, min_memory_mib; /* the accounting rule's floors (lib/resources.c) */
    const struct dg_auth_key *key; /* authTokenFile's (borrowed); NULL: none. Each node beats
                                      with its own credential, node.NAME */
    const char *sandbox_subnet;    /* its sandboxes' IPv4 CIDR; NULL: on host */
};

struct wk_cplink_node;
struct wk_cplink_siblings;

struct wk_cplink {
    struct wk_cplink_conf conf;
    struct wk_registry *reg;
    int port;                                      /* the API's */
    struct wk_cplink_node *nodes;                  /* conf.nodes of them; NULL: not started */
    int64_t machine_cpu_milli, machine_memory_mib; /* the machine's, read at start */
    struct wk_cplink_siblings *sib; /* emulatedNodes > 1: nodes 1.. beaten by node 0 */
};

/* Register with the control plane as the worker `reg` serves, at conf->host:port, and keep
 * beating (the link is zeroed, or started once). -1 with err on a bad address. */
int wk_cplink_start(struct wk_cplink *l, uv_loop_t *loop, const struct wk_cplink_conf *conf,
                    struct wk_registry *reg, int port, struct dg_err *err);
/* Registry event (registry.h): sb exited on its own; the CP replaces it at once. `ud` is the
 * link (nothing is sent before it started or after it stopped). */
void wk_cplink_exited(void *ud, const struct wk_sandbox *sb);
/* Registry event (registry.h): the worker became saturated or free again; every node beats
 * now so that the CP places by it at once. */
void wk_cplink_saturation(void *ud, bool saturated);
/* Stop the heartbeats (shutdown); wk_cplink_free after the loop has stopped. */
void wk_cplink_stop(struct wk_cplink *l);
void wk_cplink_free(struct wk_cplink *l);

#endif
