/*
 * store_backend.h: the operation table a persistence backend of the CP's store fills in, and
 * the write it is handed. store.c (the front the rest of the CP calls, store.h) picks the
 * table by `persistence:` and drives it; each backend keeps its own state, opaque to the
 * front: store_sqlite.c (one file, group commit on the thread pool), store_redis.c (hashes
 * on a Redis server, hiredis' async client on the CP's loop) and the "none" backend in
 * store.c (nothing is kept).
 *
 * The layers: store.h (the front's API) includes this header, and a backend includes only
 * this one, so the front depends on the backends (it names their tables) and never the other
 * way round.
 */
#ifndef DIRIGENT_CP_STORE_BACKEND_H
#define DIRIGENT_CP_STORE_BACKEND_H

#include <stdlib.h>
#include <uv.h>

#include "dirigent/common.h"

/* err NULL: durable. */
typedef void (*cp_store_done)(void *ud, const struct dg_err *err);

/* What cp_store_open is given; each backend reads its own part. */
struct cp_store_opts {
    const char *backend;             /* sqlite, redis, none */
    const char *dir;                 /* sqlite: DIR/cp.sqlite (DIR is created) */
    const char *redis_address;       /* host:port */
    bool full_persistence;           /* redis: AOF with fsync on every write */
    int replicas;                    /* redis: WAIT for this many replicas (0: none) */
    const char *redis_password_file; /* redis: AUTH with the file's first line ("": none) */
};

/* One write, put (value set) or delete (value NULL). The front allocates it and counts it as
 * pending; the backend takes it over in `write` and ends it exactly once with
 * cp_store_op_end (durable: err NULL), or, after the loop, cp_store_op_drop (never started). */
struct cp_store_op {
    struct cp_store_op *next; /* free for the backend's own lists */
    char *kind, *key, *value;
    cp_store_done done; /* NULL: nobody waits */
    void *ud;
    unsigned *pending; /* the front's count of writes not yet durable */
};

static inline void cp_store_op_drop(struct cp_store_op *o)
{
    free(o->kind);
    free(o->key);
    free(o->value);
    free(o);
}

/* Runs the write's callback with `err` (borrowed) and frees it. */
static inline void cp_store_op_end(struct cp_store_op *o, const struct dg_err *err)
{
    (*o->pending)--;
    if (o->done)
        o->done(o->ud, err);
    cp_store_op_drop(o);
}

typedef void (*cp_store_each)(void *ud, const char *key, const char *value);

/* A backend. `be` is what its `open` returned; every entry is set unless said otherwise. */
struct cp_store_ops {
    const char *name; /* the `persistence:` value */
    /* Opens (borrows `o` for the call only): 0 and *be, or a negative code with `err` set. */
    int (*open)(uv_loop_t *loop, const struct cp_store_opts *o, void **be, struct dg_err *err);
    /* Takes `op` over (see above); its callback may run before this returns. */
    void (*write)(void *be, struct cp_store_op *op);
    /* Every (key, value) of `kind` in key order, blocking (start-up only). */
    int (*scan)(void *be, const char *kind, cp_store_each each, void *ud, struct dg_err *err);
    /* The same without blocking the loop; `done` after the last `each`. NULL: the front runs
     * `scan` and then `done` (a local backend is quick). */
    void (*scan_async)(void *be, const char *kind, cp_store_each each, cp_store_done done,
                       void *ud);
    /* While the loop still runs: stop reconnecting, let answers due arrive. NULL: nothing. */
    void (*shutdown)(void *be);
    /* After the loop: free `be`; writes still queued are dropped, writes in flight end with an
     * error. */
    void (*free)(void *be);
};

extern const struct cp_store_ops cp_store_sqlite;
extern const struct cp_store_ops cp_store_redis;

#endif
