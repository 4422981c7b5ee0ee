/*
 * strmap.h: a map from strings to pointers (open addressing, linear probing), for the
 * registries that look things up by name on every request: the CP's functions (metrics,
 * heartbeats, registrations) and the DP's (every invocation's Host header). The key's bytes
 * belong to the caller and must stay valid while the entry is in the map (the usual key is
 * the name inside the value). 24 bytes per slot, at most 3/4 full.
 */
#ifndef DIRIGENT_STRMAP_H
#define DIRIGENT_STRMAP_H

#include "dirigent/common.h"

struct dg_strmap_slot {
    const char *key; /* NULL: empty; DG_STRMAP_GONE: a removed entry */
    size_t len;
    void *val;
};

struct dg_strmap {
    struct dg_strmap_slot *slots;
    size_t cap, n, gone; /* cap: a power of two (0 before the first put) */
};

void *dg_strmap_get(const struct dg_strmap *m, struct dg_str key);
/* Insert or replace. */
void dg_strmap_put(struct dg_strmap *m, struct dg_str key, void *val);
/* Remove; returns the value that was there, or NULL. */
void *dg_strmap_del(struct dg_strmap *m, struct dg_str key);
void dg_strmap_free(struct dg_strmap *m);

#endif
