/*
 * firewall.h: the oci runtime's nftables rules (firewall.c): what a sandbox may reach.
 * One table per worker instance, in two families of the same name, dirigent_<instance hex>:
 * `inet` (the host's input and the routed path) and `bridge` (frames between two veths of the
 * worker's bridge). Installed at start, before the loop serves (replacing a crashed
 * predecessor's table atomically), removed at the end of a clean stop.
 */
#ifndef DIRIGENT_WORKER_FIREWALL_H
#define DIRIGENT_WORKER_FIREWALL_H

#include <stddef.h>

#include "dirigent/common.h"

struct wk_fw_opts {
    const char *table;              /* dirigent_<hex> */
    const char *bridge;             /* the sandboxes' bridge */
    const char *prefix;             /* the host-side veths' name prefix (dv<hex>) */
    const char *egress;             /* "none" or "internet" */
    const struct dg_strlist *allow; /* IPv4 addresses or CIDRs a sandbox may reach anyway */
};

/* The ruleset text for `nft -f` into buf (pure: unit-testable); -1 with err naming the field
 * (sandboxEgress, sandboxEgressAllow) on bad options. */
int wk_firewall_ruleset(const struct wk_fw_opts *o, char *buf, size_t len, struct dg_err *err);
/* Write the ruleset to `path` and load it with `nft -f` (blocking, a few ms: start-up only,
 * before the event loop runs). */
int wk_firewall_install(const struct wk_fw_opts *o, const char *path, struct dg_err *err);
/* Delete both tables (blocking: the end of a clean stop, or start-up). Returns 0 when they
 * are gone (or were never there). */
int wk_firewall_remove(const char *table);

#endif
