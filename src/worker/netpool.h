/*
 * netpool.h: a pool of pre-created network namespaces for container sandboxes
 * (the oci runtime gives one to each container as its "network" namespace).
 * Each namespace has a veth pair: eth0 inside with its own address of the
 * pool's subnet and a default route via the bridge, the host side attached to
 * one bridge that holds the gateway address, so the host (and the data plane
 * on it) reaches every sandbox address directly. Creating one costs 1-1.5 ms
 * and tearing one down 2-4 ms in a batch (25-45 ms alone), so they are made
 * ahead of time in the background and reused: an acquire is a list pop.
 *
 * Everything that touches netlink or namespaces runs on the libuv thread pool
 * (uv_queue_work); the API below is for the loop thread only. All work goes
 * through libnl-route-3, never ip(8).
 */
#ifndef DIRIGENT_WORKER_NETPOOL_H
#define DIRIGENT_WORKER_NETPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "dirigent/common.h"

/* Strings borrowed for the call to wk_netpool_cleanup / wk_netpool_new (copied). */
struct wk_netpool_opts {
    const char *bridge;     /* bridge name, e.g. "dg0"; created if missing, reused if present */
    const char *subnet;     /* CIDR, e.g. "100.100.0.0/16": the bridge gets the first host address
                           (gateway, .1), sandboxes the following ones */
    const char *dir;        /* directory for the namespaces' bind mounts (created), e.g.
                           /run/dirigent/NAME/netns */
    const char *prefix;     /* host-side veth name prefix, <= 10 chars, e.g. "dv1a2b3c"; names are
                           prefix + index, within IFNAMSIZ. The bridge must not be named prefix +
                           digits. */
    bool own_bridge;        /* the bridge is this pool's alone (named after its owner): the cleanup
                           also removes a leftover one (with its stale addresses) */
    unsigned target;        /* namespaces kept ready (refilled in the background), e.g. 8 */
    uint64_t quarantine_ms; /* a released namespace (its address) is not handed out again for
                               this long: a data plane that still lists the old sandbox must
                               not reach a new one there (0: reusable at once) */
};

/* One namespace. Owned by the pool: valid from the acquire callback until the pool's close
 * finishes; the caller reads the public fields and must not write any. */
struct wk_netns {
    char path[256]; /* the namespace file: what an OCI config's "network" namespace "path" takes */
    char ip[16];    /* the sandbox's address, dotted quad (its eth0) */
    char host_if[16]; /* the host-side veth */
    unsigned index;
    uint64_t create_us; /* how long its creation took on the thread pool, microseconds */
    /* private to netpool.c */
    struct wk_netpool *pool;
    struct wk_netns *next;                /* the ready list */
    struct wk_netns *all_prev, *all_next; /* every namespace of the pool */
    uint64_t released_ms;                 /* in quarantine since (uv_now) */
    bool acquired;
};

struct wk_netpool;

/* Exactly one of ns and err is non-NULL. err is borrowed for the call. */
typedef void (*wk_netns_cb)(void *ud, struct wk_netns *ns, const struct dg_err *err);

/* Remove what an earlier run left in opts->dir (ns-N bind mounts), veth links named
 * opts->prefix + digits and, with opts->own_bridge, the bridge: run at start, before the loop serves and before wk_netpool_new with
 * the same opts (it blocks: tens of milliseconds). Returns the number of namespaces
 * removed, or -1 with err. */
int wk_netpool_cleanup(const struct wk_netpool_opts *o, struct dg_err *err);

/* Validate opts, create the bridge (fixed MAC, the gateway address with the subnet's prefix
 * length, up; an existing bridge is reused) and start filling the pool in the background
 * (uv_queue_work). Call at start: the bridge setup is a few netlink round trips on the calling
 * thread. Returns NULL with err on bad opts or when the bridge cannot be set up. */
struct wk_netpool *wk_netpool_new(uv_loop_t *loop, const struct wk_netpool_opts *o,
                                  struct dg_err *err);

/* A ready namespace: cb at once (synchronously, before this returns) when one is ready, else
 * when the refill makes one, or with err when its creation fails, the subnet is exhausted or
 * the pool closes. Returns a handle valid until cb runs, for wk_netpool_acquire_cancel; NULL
 * when cb has already run. */
struct wk_netns_wait;
struct wk_netns_wait *wk_netpool_acquire(struct wk_netpool *p, wk_netns_cb cb, void *ud);
/* Forget a pending acquire: its cb never runs. Only before its cb ran. */
void wk_netpool_acquire_cancel(struct wk_netns_wait *w);

/* Give a namespace back: it is reused as it is (its address stays with it), after
 * opts->quarantine_ms, and after the namespaces that never served or were released before it
 * (an acquire takes a fresh one first, else the least recently released). With no quarantine
 * it is handed at once to the oldest pending acquire if any (whose cb runs before this
 * returns). The caller makes sure
 * nothing runs in it any more. After wk_netpool_close it is a no-op. */
void wk_netpool_release(struct wk_netpool *p, struct wk_netns *ns);

/* Tear everything down (namespaces, acquired ones included, and veths; the bridge stays unless
 * remove_bridge) in the background; done(ud) when finished: the pool and every wk_netns are
 * freed then. Pending acquires get an error (DG_E_CLOSED) before this returns. */
void wk_netpool_close(struct wk_netpool *p, bool remove_bridge, void (*done)(void *ud), void *ud);

/* Namespaces ready now. Released ones count once out of quarantine: the pool may hold more
 * than target. */
unsigned wk_netpool_ready(const struct wk_netpool *p);

#endif
