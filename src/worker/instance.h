/*
 * instance.h: a worker instance's identity and the host names derived from it
 * (instance.c has the scheme). The pure parts (hash, subnet choice) take their
 * inputs as arguments so that unit tests need no host.
 */
#ifndef DIRIGENT_WORKER_INSTANCE_H
#define DIRIGENT_WORKER_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dirigent/common.h"

/* Default sandbox subnets: the /22s of 100.64.0.0/10 (shared address space, RFC 6598). */
#define WK_SUBNET_BASE  0x64400000u /* 100.64.0.0 */
#define WK_SUBNET_PLEN  22u
#define WK_SUBNET_COUNT 4096u /* 2^(22 - 10) */

struct wk_instance {
    char *key;       /* the absolute path the id is hashed from (runDir if set, else dataDir) */
    uint32_t id;     /* 24 bits */
    char hex[8];     /* the id, 6 hex digits */
    char label[96];  /* <name>-<hex>: runDir's and the cgroup parent's last component */
    char *run_dir;   /* configured, else /run/dirigent/<label> */
    char bridge[16]; /* configured, else dg<hex> */
    bool bridge_derived;
    char veth_prefix[12]; /* dv<hex> */
    int lock_fd;          /* -1 until wk_instance_lock */
};

/* FNV-1a (32 bits) of s, xor-folded to 24 bits. */
uint32_t wk_instance_hash(const char *s);
/* Fill `in` (strings borrowed for the call; run_dir and bridge may be "" for the default). */
void wk_instance_init(struct wk_instance *in, const char *name, const char *data_dir,
                      const char *run_dir, const char *bridge);
void wk_instance_free(struct wk_instance *in);
/* Take <runDir>/lock (the directory exists) and write the pid into it; -1 with err
 * "... already running (pid N) ..." when another process holds it. Released at exit. */
int wk_instance_lock(struct wk_instance *in, struct dg_err *err);
/* Remove the lock file and release it: the end of a clean shutdown. */
void wk_instance_unlock(struct wk_instance *in);

/* Whether a.b.c.d/alen and e.f.g.h/blen (host byte order) share an address. */
bool wk_subnet_overlaps(uint32_t a, unsigned alen, uint32_t b, unsigned blen);
/* Whether a route of `route_table` (the text of /proc/net/route; NULL: none) other than a
 * default route or one on `own_bridge` overlaps net/plen; `conflict` then names it. */
bool wk_route_conflict(uint32_t net, unsigned plen, const char *route_table, const char *own_bridge,
                       char *conflict, size_t conflict_len);
/* The k-th default subnet tried for instance `id` (host byte order). */
uint32_t wk_subnet_candidate(uint32_t id, unsigned k);
/* The first default subnet for `id` that no route of `route_table` (the text of
 * /proc/net/route; NULL: none) overlaps, routes on `own_bridge` (a predecessor's) and default
 * routes aside. Returns how many were skipped (0: the first) with *net set, or -1 when every
 * one is taken. `conflict` gets the route that took the first candidate, if any. */
int wk_subnet_pick(uint32_t id, const char *route_table, const char *own_bridge, uint32_t *net,
                   char *conflict, size_t conflict_len);
/* "a.b.c.d/22" */
void wk_subnet_format(uint32_t net, char *out, size_t len);
/* The slot (0..WK_SUBNET_COUNT-1) of the instance's user-namespace uid range: the index of the
 * /22 of 100.64.0.0/10 its sandbox subnet `subnet` ("a.b.c.d/len") lies in, so that two
 * workers on one host, whose subnets never overlap (wk_subnet_pick skips a routed one), never
 * share a uid range either, even when their ids are equal mod 4096; `id` mod 4096 for a
 * subnet outside 100.64.0.0/10 or wider than a /22 (configured: the operator's). */
uint32_t wk_userns_slot(uint32_t id, const char *subnet);

#endif
