/*
 * strmap.c: see strmap.h. FNV-1a hashes; removal leaves a marker that a put may reuse and
 * a resize drops.
 */
#include <stdlib.h>
#include <string.h>

#include "dirigent/strmap.h"

static const char gone_marker;
#define GONE (&gone_marker)

static uint64_t hash(struct dg_str k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.ptr[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool same(const struct dg_strmap_slot *s, struct dg_str k)
{
    return s->key != GONE && s->len == k.len && memcmp(s->key, k.ptr, k.len) == 0;
}

/* The slot holding `k`, or NULL. */
static struct dg_strmap_slot *find(const struct dg_strmap *m, struct dg_str k)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash(k) & mask;; i = (i + 1) & mask) {
        struct dg_strmap_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (same(s, k))
            return s;
    }
}

static void grow(struct dg_strmap *m)
{
    size_t ncap = m->cap ? m->cap : 16;
    while ((m->n + 1) * 2 > ncap) /* at most half full after a resize */
        ncap *= 2;
    struct dg_strmap_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = dg_xcalloc(ncap, sizeof(*m->slots));
    m->cap = ncap;
    m->gone = 0;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].key || old[i].key == GONE)
            continue;
        struct dg_str k = {old[i].key, old[i].len};
        size_t j = hash(k) & (ncap - 1);
        while (m->slots[j].key)
            j = (j + 1) & (ncap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

void *dg_strmap_get(const struct dg_strmap *m, struct dg_str key)
{
    struct dg_strmap_slot *s = find(m, key);
    return s ? s->val : NULL;
}

void dg_strmap_put(struct dg_strmap *m, struct dg_str key, void *val)
{
    struct dg_strmap_slot *s = find(m, key);
    if (s) {
        s->key = key.ptr; /* the new owner's bytes */
        s->val = val;
        return;
    }
    if ((m->n + m->gone + 1) * 4 > m->cap * 3)
        grow(m);
    size_t mask = m->cap - 1, i = hash(key) & mask;
    while (m->slots[i].key && m->slots[i].key != GONE)
        i = (i + 1) & mask;
    if (m->slots[i].key == GONE)
        m->gone--;
    m->slots[i] = (struct dg_strmap_slot){key.ptr, key.len, val};
    m->n++;
}

void *dg_strmap_del(struct dg_strmap *m, struct dg_str key)
{
    struct dg_strmap_slot *s = find(m, key);
    if (!s)
        return NULL;
    void *v = s->val;
    s->key = GONE;
    s->len = 0;
    s->val = NULL;
    m->n--;
    m->gone++;
    return v;
}

void dg_strmap_free(struct dg_strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}
