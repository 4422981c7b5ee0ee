/*
 * store.c: the store's front (see store.h): picks the backend named by `persistence:` from
 * the operation tables (store_backend.h), counts the writes not yet durable and hands each
 * call to the backend. The "none" backend lives here: it keeps nothing, so it has no state,
 * a write is durable at once and a scan finds nothing.
 */
#include "store.h"

#include <string.h>

#include "store_backend.h"

struct cp_store {
    const struct cp_store_ops *ops;
    void *be; /* the backend's own state */
    unsigned pending;
};

/* ---- none ---------------------------------------------------------------------------------- */

static int none_open(uv_loop_t *loop, const struct cp_store_opts *o, void **be, struct dg_err *err)
{
    *be = NULL;
    return 0;
}

static void none_write(void *be, struct cp_store_op *op)
{
    cp_store_op_end(op, NULL);
}

static int none_scan(void *be, const char *kind, cp_store_each each, void *ud, struct dg_err *err)
{
    return 0;
}

static void none_free(void *be)
{
}

static const struct cp_store_ops none_ops = {
    .name = "none",
    .open = none_open,
    .write = none_write,
    .scan = none_scan,
    .free = none_free,
};

static const struct cp_store_ops *const backends[] = {&cp_store_sqlite, &cp_store_redis, &none_ops};

/* ---- the front ----------------------------------------------------------------------------- */

struct cp_store *cp_store_open(uv_loop_t *loop, const struct cp_store_opts *o, struct dg_err *err)
{
    const struct cp_store_ops *ops = NULL;
    for (size_t i = 0; i < DG_ARRAY_LEN(backends) && !ops; i++)
        if (strcmp(o->backend, backends[i]->name) == 0)
            ops = backends[i];
    if (!ops) {
        dg_err_set(err, DG_E_INVAL, "persistence: expected sqlite, redis or none, got '%s'",
                   o->backend);
        return NULL;
    }
    struct cp_store *s = dg_xcalloc(1, sizeof(*s));
    s->ops = ops;
    if (ops->open(loop, o, &s->be, err) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void write_op(struct cp_store *s, const char *kind, const char *key, const char *value,
                     cp_store_done done, void *ud)
{
    struct cp_store_op *o = dg_xcalloc(1, sizeof(*o));
    o->kind = dg_xstrdup(kind);
    o->key = dg_xstrdup(key);
    o->value = value ? dg_xstrdup(value) : NULL;
    o->done = done;
    o->ud = ud;
    o->pending = &s->pending;
    s->pending++;
    s->ops->write(s->be, o);
}

void cp_store_put(struct cp_store *s, const char *kind, const char *key, const char *value,
                  cp_store_done done, void *ud)
{
    write_op(s, kind, key, value ? value : "", done, ud);
}

void cp_store_del(struct cp_store *s, const char *kind, const char *key, cp_store_done done,
                  void *ud)
{
    write_op(s, kind, key, NULL, done, ud);
}

int cp_store_scan(struct cp_store *s, const char *kind,
                  void (*each)(void *ud, const char *key, const char *value), void *ud,
                  struct dg_err *err)
{
    return s->ops->scan(s->be, kind, each, ud, err);
}

void cp_store_scan_async(struct cp_store *s, const char *kind,
                         void (*each)(void *ud, const char *key, const char *value),
                         cp_store_done done, void *ud)
{
    if (s->ops->scan_async) {
        s->ops->scan_async(s->be, kind, each, done, ud);
        return;
    }
    struct dg_err err = {0};
    int rc = s->ops->scan(s->be, kind, each, ud, &err);
    done(ud, rc < 0 ? &err : NULL);
}

unsigned cp_store_pending(const struct cp_store *s)
{
    return s->pending;
}

const char *cp_store_backend(const struct cp_store *s)
{
    return s->ops->name;
}

void cp_store_shutdown(struct cp_store *s)
{
    if (s && s->ops->shutdown)
        s->ops->shutdown(s->be);
}

void cp_store_close(struct cp_store *s)
{
    if (!s)
        return;
    s->ops->free(s->be); /* writes it ends meanwhile still count down s->pending */
    free(s);
}
