/*
 * scaling.c: the control plane core's effects over HTTP and libuv (cp_core.h: struct
 * cp_effects). Creates and deletes go to the workers, drains and endpoint lists to the data
 * planes, as the JSON the daemons speak; the answers come back as core events. What one loop
 * turn decides goes out as one request per peer (lib/batch.c); the core's "soon" calls run
 * from 0 ms timers, so one push per data plane carries every list that changed in a loop
 * turn. A create's row of cold_start_trace.csv waits for the push that carries its endpoint.
 */
#include "scaling.h"

#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "dirigent/batch.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"
#include "dirigent/wire.h"

/* ---- requests to workers and data planes ------------------------------------------------ */

typedef void (*call_cb)(void *ud, const struct dg_http_resp *resp, const struct dg_err *err);

struct call {
    call_cb cb;
    void *ud;
};

static void call_finish(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct call *c = ud;
    struct dg_err e;
    if (resp && resp->status >= 300) { /* an answer, but a refusal: its body says why */
        dg_err_set(&e, DG_E_REFUSED, "%d: %.*s", resp->status, (int)DG_MIN(resp->body.len, 200),
                   resp->body.ptr);
        while (e.msg[0] && e.msg[strlen(e.msg) - 1] == '\n')
            e.msg[strlen(e.msg) - 1] = '\0';
        err = &e;
    } else if (!resp && !err) { /* never: an item always ends with one or the other */
        dg_err_set(&e, DG_E_CLOSED, "no answer");
        err = &e;
    }
    if (c->cb)
        c->cb(c->ud, err ? NULL : resp, err);
    free(c);
}

static void call_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    call_finish(ud, resp, err);
}

/* ---- batches: one request per peer per loop turn ------------------------------------------ */

/* Creates and deletes to each worker, drains to each DP: what one loop turn decides goes out
 * as one request per peer (lib/batch.c), answered item by item. At thousands of cold starts
 * a second, one request per item was most of the CP's, the DP's and the worker's time. */
#define BATCH_MAX 512

static void call(struct dg_http_pool *pool, const char *method, const char *path, json_t *body,
                 call_cb cb, void *ud);

/* Start `t` (not started yet) to run `cb` once the current loop turn is done, but not before
 * batchInterval after `last`: at thousands of cold starts a second a loop turn holds a few
 * items only, and each request costs a write, a wake-up, a read and a parse on both sides; a
 * millisecond's items in one request cost the same. At low rates the previous request is long
 * past and nothing waits. */
static void start_paced(uv_timer_t *t, uv_timer_cb cb, uint64_t last)
{
    uint64_t now = uv_now(cp.loop), due = last + cp.batch_interval_ms;
    uv_timer_start(t, cb, due > now ? due - now : 0, 0);
}

static void flush_batches(uv_timer_t *t)
{
    cp.last_batch_ms = uv_now(cp.loop);
    while (cp.flush_list) { /* only the workers this loop turn batched for */
        struct cp_worker_pool *io = cp.flush_list;
        cp.flush_list = io->flush_next;
        io->flush_next = NULL;
        io->flush_pending = false;
        if (io->creates)
            dg_batch_flush(io->creates, io->pool);
        if (io->deletes)
            dg_batch_flush(io->deletes, io->pool);
    }
    for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
        struct cp_dp_io *io = d->io;
        if (io->drains && io->drain_pool) /* none once closed (cp_io_close) */
            dg_batch_flush(io->drains, io->drain_pool);
        if (io->forgets && io->pool)
            dg_batch_flush(io->forgets, io->pool);
    }
}

void cp_io_flush(void)
{
    flush_batches(NULL);
}

/* Add `item` (taken) to *bp (made on first use) for the next flush. */
static void batch_call(struct dg_batch **bp, const char *path, struct dg_http_pool *pool,
                       json_t *item, call_cb cb, void *ud)
{
    if (!pool) { /* its worker or data plane is gone */
        call(NULL, "POST", path, item, cb, ud);
        return;
    }
    if (!*bp)
        *bp = dg_batch_new(path);
    struct call *c = dg_xmalloc(sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    dg_batch_add(*bp, item, call_finish, c);
    if (dg_batch_size(*bp) >= BATCH_MAX)
        dg_batch_flush(*bp, pool);
    else if (!uv_is_active((uv_handle_t *)&cp.batch_timer))
        start_paced(&cp.batch_timer, flush_batches, cp.last_batch_ms);
}

/* batch_call of an item already encoded (`text` taken): no JSON tree per create. */
static void batch_call_text(struct dg_batch **bp, const char *path, struct dg_http_pool *pool,
                            char *text, call_cb cb, void *ud)
{
    if (!pool) {
        free(text);
        call(NULL, "POST", path, NULL, cb, ud);
        return;
    }
    if (!*bp)
        *bp = dg_batch_new(path);
    struct call *c = dg_xmalloc(sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    dg_batch_add_text(*bp, text, strlen(text), call_finish, c);
    free(text);
    if (dg_batch_size(*bp) >= BATCH_MAX)
        dg_batch_flush(*bp, pool);
    else if (!uv_is_active((uv_handle_t *)&cp.batch_timer))
        start_paced(&cp.batch_timer, flush_batches, cp.last_batch_ms);
}

/* A worker address's batch waits for the flush. */
static void worker_flush_pending(struct cp_worker_pool *io)
{
    if (io->flush_pending)
        return;
    io->flush_pending = true;
    io->flush_next = cp.flush_list;
    cp.flush_list = io;
}

/* Send `body` (taken; may be NULL) as JSON; `cb` gets the response or an error. */
static void call(struct dg_http_pool *pool, const char *method, const char *path, json_t *body,
                 call_cb cb, void *ud)
{
    static const struct dg_http_client_cbs cbs = {.on_done = call_done};
    static const struct dg_http_header json_type[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    if (!pool) { /* its worker or data plane is gone (shutdown, replaced) */
        struct dg_err e;
        dg_err_set(&e, DG_E_CLOSED, "no connection: the peer was removed");
        json_decref(body);
        if (cb)
            cb(ud, NULL, &e);
        return;
    }
    struct call *c = dg_xmalloc(sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    char *s = body ? dg_json_dumps(body) : NULL;
    dg_http_request(pool, method, path, json_type, 1, s, s ? strlen(s) : 0, &cbs, c);
    free(s);
    json_decref(body);
}

/* ---- the cold-start trace --------------------------------------------------------------- */

/* A successful create's row waits for the push that carries its endpoint: its
 * data_plane_propagation is the time from the worker's answer to every DP's acknowledgement. */
struct trace_row {
    char *fn, *id;
    long long image, rootfs, start, net, ready, other;
    uint64_t wall_us, t_ready_us;
    struct trace_row *next;
};

static void trace_write(const struct trace_row *r, bool ok, long long propagation_us)
{
    if (cp.cold_trace)
        dg_trace_row(cp.cold_trace, "%llu,%s,%s,%s,%lld,%lld,%lld,%lld,0,%lld,%lld,0,0,0,0,%lld",
                     (unsigned long long)r->wall_us, r->fn, r->id, ok ? "true" : "false", r->image,
                     r->rootfs, r->start, r->net, r->ready, propagation_us,
                     r->other > 0 ? r->other : 0);
}

static void trace_free(struct trace_row *r)
{
    while (r) {
        struct trace_row *next = r->next;
        free(r->fn);
        free(r->id);
        free(r);
        r = next;
    }
}

static void trace_create(const struct cp_sandbox *s, const char *id,
                         const struct dg_wire_latency *lat, bool ok)
{
    if (!cp.cold_trace)
        return;
    static const struct dg_wire_latency none;
    const struct dg_wire_latency *l = lat ? lat : &none;
    struct trace_row r = {.fn = s->fn->spec.name,
                          .id = id ? (char *)id : "",
                          .image = l->image,
                          .rootfs = l->rootfs,
                          .start = l->start,
                          .net = l->network,
                          .ready = l->ready,
                          .wall_us = dg_wall_ms() * 1000ull,
                          .t_ready_us = dg_now_us()};
    r.other = l->total - r.image - r.rootfs - r.start - r.net - r.ready;
    if (!ok) {
        trace_write(&r, false, 0);
        return;
    }
    struct trace_row *p = dg_xmalloc(sizeof(*p));
    *p = r;
    p->fn = dg_xstrdup(r.fn);
    p->id = dg_xstrdup(r.id);
    p->next = cp.trace_pending;
    cp.trace_pending = p;
}

/* One push to every DP; the rows of the creates it carries are written once all answered. */
struct after_push {
    void (*fn)(void *ud, bool pushed);
    void *ud;
    struct after_push *next;
};

void cp_after_push(void (*fn)(void *ud, bool pushed), void *ud)
{
    struct after_push *a = dg_xmalloc(sizeof(*a));
    *a = (struct after_push){fn, ud, cp.after_push};
    cp.after_push = a;
}

static void after_push_run(struct after_push *a, bool pushed)
{
    while (a) {
        struct after_push *next = a->next;
        a->fn(a->ud, pushed);
        free(a);
        a = next;
    }
}

struct push {
    struct trace_row *rows;
    struct after_push *after; /* to call once every DP answered */
    unsigned waiting;
};

/* The last push sent, until every DP answered it (NULL: answered), and when it went. The next
 * push waits for it (PUSH_WAIT_MAX_MS at most: a DP that hangs delays the others no longer),
 * and then carries every list that changed meanwhile: pushes sent at batchInterval whatever
 * their answers, on the one ordered connection to a DP slower than that (its loop busy with
 * thousands of cold starts a second), queued without bound (814 behind one another, measured),
 * and a registration, answered once the push carrying it is acknowledged, waited seconds. */
#define PUSH_WAIT_MAX_MS 200
static struct push *push_last;
static uint64_t push_last_ms;

static void push_soon(uv_timer_t *t);

static void pushed(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct push *p = ud;
    if (--p->waiting > 0)
        return;
    if (p == push_last) {
        push_last = NULL;
        if (uv_is_active((uv_handle_t *)&cp.push_timer)) /* one waits for this answer */
            start_paced(&cp.push_timer, push_soon, cp.last_push_ms);
    }
    uint64_t now = dg_now_us();
    for (struct trace_row *r = p->rows; r; r = r->next)
        trace_write(r, true, (long long)(now - r->t_ready_us));
    trace_free(p->rows);
    after_push_run(p->after, true);
    free(p);
}

/* ---- sandboxes on workers ---------------------------------------------------------------- */

static void deleted_on_worker(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    cp_core_on_deleted(&cp.core, ud, err ? err->msg : NULL);
}

static void fx_destroy(void *ud, struct cp_worker *w, const char *id, struct cp_sandbox *s)
{
    struct cp_worker_pool *io = ((struct cp_worker_io *)w->io)->wpool;
    struct dg_batch *none = NULL; /* no pool (shutdown): batch_call fails the item at once */
    batch_call(io ? &io->deletes : &none, DG_WIRE_PATH_SANDBOXES_DELETE, io ? io->pool : NULL,
               dg_wire_delete_item_encode(id), s ? deleted_on_worker : NULL, s);
    if (io)
        worker_flush_pending(io);
}

static void drain_step(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct cp_drain *d = ud;
    /* 404: the DP has none of them (its push, sent alongside, took an idle one out already):
     * drained. Common at every scale-down: a warning each was a log write per scale-down */
    if (err)
        dg_log(strncmp(err->msg, "404:", 4) == 0 ? DG_LOG_DEBUG : DG_LOG_WARN, "scale",
               "fn=%s drain: %s", d->f->spec.name, err->msg);
    if (--d->pending == 0)
        cp_core_on_drained(&cp.core, d);
}

static void fx_drain(void *ud, struct cp_drain *d)
{
    char *small[16], **ids = d->n <= 16 ? small : dg_xcalloc(d->n, sizeof(*ids));
    for (size_t i = 0; i < d->n; i++)
        ids[i] = d->victims[i]->id;
    struct dg_wire_drain m = {.name = d->f->spec.name, .ids = {.v = ids, .n = d->n}};
    d->pending = 1; /* held until every DP was asked */
    for (struct cp_dp *dp = cp.core.dps; dp; dp = dp->next) {
        struct cp_dp_io *io = dp->io;
        d->pending++;
        batch_call(&io->drains, DG_WIRE_PATH_DRAIN, io->drain_pool, dg_wire_drain_encode(&m),
                   drain_step, d);
    }
    if (ids != small)
        free(ids);
    drain_step(d, NULL, NULL);
}

static void created(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct cp_sandbox *s = ud;
    struct cp_fn *f = s->fn;
    struct dg_wire_created m = {0};
    struct dg_err perr = {0};
    bool parsed = false;
    if (!err) {
        if (dg_wire_created_parse(resp->body.ptr, resp->body.len, &m, &perr) < 0)
            err = &perr;
        else
            parsed = true;
    }
    const char *id = m.id, *ep = m.endpoint;
    if (s->abandoned_on) { /* its worker was given up: the core deletes what came after all */
        cp_core_on_created(&cp.core, s, err ? NULL : id, ep, err ? err->msg : NULL);
        if (parsed)
            dg_wire_created_free(&m);
        return;
    }
    if (err) {
        trace_create(s, NULL, NULL, false);
        dg_log(DG_LOG_WARN, "scale", "fn=%s create on %s failed: %s", f->spec.name,
               s->worker ? s->worker->name : "?", err->msg);
        /* the worker's reason without the wrapping of its refusal ("503: create failed: ") */
        const char *reason = err->msg;
        if (strncmp(reason, "503: create failed: ", 20) == 0)
            reason += 20;
        /* the worker said no, or the create was never sent (over a part): nothing was made */
        if (err->code == DG_E_REFUSED || err->code == DG_E_LIMIT)
            cp_core_on_created(&cp.core, s, NULL, NULL, reason);
        else /* no answer, or one that could not be read: it may have been made */
            cp_core_on_create_lost(&cp.core, s, reason);
    } else {
        trace_create(s, id, m.has_latency ? &m.latency : NULL, true);
        cp_core_on_created(&cp.core, s, id, ep, NULL);
    }
    if (parsed)
        dg_wire_created_free(&m);
}

static bool env_has(const struct cp_fn_spec *spec, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < spec->env.n; i++)
        if (strncmp(spec->env.v[i], name, n) == 0 && spec->env.v[i][n] == '=')
            return true;
    return false;
}

/* The registration's start-up busy loop, under the names the original's workload reads
 * (its worker sets ITERATIONS_MULTIPLIER and COLD_START_BUSY_LOOP_MS the same way); the
 * function's own env_vars win. Only when registered: other images get nothing new. */
void cp_sandbox_workload_env(const struct cp_fn_spec *spec, struct dg_strlist *env,
                             char bufs[2][64])
{
    if (spec->cold_start_busy_loop_ms > 0 && !env_has(spec, "COLD_START_BUSY_LOOP_MS")) {
        snprintf(bufs[0], 64, "COLD_START_BUSY_LOOP_MS=%lld",
                 (long long)spec->cold_start_busy_loop_ms);
        env->v[env->n++] = bufs[0];
    }
    if ((spec->iteration_multiplier > 0 || spec->cold_start_busy_loop_ms > 0) &&
        !env_has(spec, "ITERATIONS_MULTIPLIER")) {
        snprintf(bufs[1], 64, "ITERATIONS_MULTIPLIER=%lld",
                 (long long)(spec->iteration_multiplier > 0 ? spec->iteration_multiplier : 102));
        env->v[env->n++] = bufs[1];
    }
}

static void fx_create(void *ud, struct cp_sandbox *s)
{
    const struct cp_fn_spec *spec = &s->fn->spec;
    struct cp_worker_pool *io = ((struct cp_worker_io *)s->worker->io)->wpool;
    /* the function's env, then the workload's (borrowed: encoded at once) */
    char *small[16],
        **envv = spec->env.n + 2 <= 16 ? small : dg_xcalloc(spec->env.n + 2, sizeof(*envv));
    struct dg_strlist env = {.v = envv, .n = spec->env.n};
    if (spec->env.n) /* none: env.v is NULL, and memcpy's source must not be */
        memcpy(envv, spec->env.v, spec->env.n * sizeof(*envv));
    char bufs[2][64];
    cp_sandbox_workload_env(spec, &env, bufs);
    struct dg_wire_create m = {.function = (char *)spec->name,
                               .image = spec->image,
                               .port = spec->port,
                               .env = env,
                               .args = spec->args,
                               .cpu_milli = spec->cpu_milli,
                               .memory_mib = spec->memory_mib,
                               .no_init = spec->no_init};
    struct dg_batch *none = NULL; /* no pool (shutdown): batch_call fails the item at once */
    batch_call_text(io ? &io->creates : &none, DG_WIRE_PATH_SANDBOXES_BATCH, io ? io->pool : NULL,
                    dg_wire_create_dumps(&m), created, s);
    if (io)
        worker_flush_pending(io);
    if (envv != small)
        free(envv);
}

/* ---- pushes to data planes -------------------------------------------------------------- */

/* A push in parts: each body below the DPs' body limit (DG_WIRE_PART_MAX), a valid push of
 * its own; a function's update is never cut (it replaces the DP's list at once). */
struct push_parts {
    char **bodies;
    size_t *lens;
    size_t n;
};

static void push_parts_free(struct push_parts *pp)
{
    for (size_t k = 0; k < pp->n; k++)
        free(pp->bodies[k]);
    free(pp->bodies);
    free(pp->lens);
}

/* One function's update (name, concurrency, whole endpoint list, exits) as JSON text. */
static char *push_item(const struct cp_push_item *it, size_t *len)
{
    size_t neps = 0;
    for (const struct cp_sandbox *s = it->f->sbs; s; s = s->next)
        neps += s->state == CP_SB_READY;
    struct dg_wire_endpoint eps_small[16],
        *eps = neps <= 16 ? eps_small : dg_xcalloc(neps, sizeof(*eps));
    struct dg_wire_exit_note exs_small[4],
        *exs = it->nexited <= 4 ? exs_small : dg_xcalloc(it->nexited, sizeof(*exs));
    /* borrowed from the registry: encoded below */
    struct dg_wire_fn_update u = {.name = (char *)it->f->spec.name,
                                  .concurrency = it->f->spec.concurrency,
                                  .h2c = it->f->spec.h2c,
                                  .endpoints = eps,
                                  .error = (char *)it->error};
    for (const struct cp_sandbox *s = it->f->sbs; s; s = s->next)
        if (s->state == CP_SB_READY)
            eps[u.nendpoints++] = (struct dg_wire_endpoint){s->id, s->endpoint};
    /* why its sandboxes went: the DPs tell callers whose request died */
    u.exited = it->nexited ? exs : NULL;
    for (unsigned k = 0; k < it->nexited; k++)
        exs[u.nexited++] = (struct dg_wire_exit_note){it->exited[k].id, it->exited[k].reason};
    char *text = dg_wire_fn_update_dumps(&u);
    if (eps != eps_small)
        free(eps);
    if (exs != exs_small)
        free(exs);
    *len = strlen(text);
    return text;
}

/* The bodies of a push of `items` (full: the receiver's whole table; in more than one part,
 * they carry the resync's number and their place: the DP drops the functions none named only
 * after the last). An update that alone is over a part is left out, with an error logged. */
static void push_parts(const struct cp_push_item *items, size_t n, bool full,
                       struct push_parts *out)
{
    static int64_t sync_seq; /* a resync's number: new for each resync from this CP */
    struct dg_str *enc = dg_xcalloc(n ? n : 1, sizeof(*enc));
    size_t *part_end = dg_xcalloc(n + 1, sizeof(*part_end)); /* one past each part's last */
    size_t nparts = 0, k = 0;
    struct dg_wire_parts split;
    dg_wire_parts_init(&split, DG_WIRE_PART_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *text = push_item(&items[i], &len);
        struct dg_err err;
        int where = dg_wire_parts_add(&split, len, &err);
        if (where < 0) {
            dg_log(DG_LOG_ERROR, "push",
                   "fn=%s: its endpoint list cannot be sent to the data planes: %s (the data "
                   "planes keep what they had)",
                   items[i].f->spec.name, err.msg);
            free(text);
            continue;
        }
        if (where == DG_WIRE_PART_NEW && k > 0)
            part_end[nparts++] = k;
        enc[k++] = (struct dg_str){text, len};
    }
    part_end[nparts++] = k; /* the last (or the only one, maybe empty: a full push of none) */
    if (nparts > 1 && full && sync_seq == 0)
        sync_seq = (int64_t)(dg_wall_ms() % 1000000000) * 1000; /* unlike a previous run's */
    int64_t sync = nparts > 1 && full ? ++sync_seq : 0;
    out->n = nparts;
    out->bodies = dg_xcalloc(nparts, sizeof(*out->bodies));
    out->lens = dg_xcalloc(nparts, sizeof(*out->lens));
    for (size_t p = 0, first = 0; p < nparts; first = part_end[p++]) {
        struct dg_wire_push m = {.full = full};
        if (sync)
            m.sync = sync, m.part = (int64_t)p, m.parts = (int64_t)nparts;
        out->bodies[p] = dg_wire_push_join(enc + first, part_end[p] - first, &m, &out->lens[p]);
    }
    for (size_t i = 0; i < k; i++)
        free((char *)enc[i].ptr);
    free(enc);
    free(part_end);
}

/* One DP's part of a push: a failure makes its next heartbeat get a resync. */
struct push_call {
    struct push *p; /* NULL: a resync (no trace rows) */
    char *dp;
};

static void push_answered(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct push_call *pc = ud;
    if (err) {
        dg_log(DG_LOG_WARN, "push", "endpoint lists to %s: %s", pc->dp, err->msg);
        cp_core_on_dp_push_failed(&cp.core, pc->dp);
    }
    if (pc->p)
        pushed(pc->p, NULL, NULL);
    free(pc->dp);
    free(pc);
}

/* Send the parts of a push to `d`, in order (its pool has one connection). */
static void push_call(struct cp_dp *d, const struct push_parts *pp, struct push *p)
{
    static const struct dg_http_client_cbs cbs = {.on_done = call_done};
    static const struct dg_http_header json_type[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    struct dg_http_pool *pool = ((struct cp_dp_io *)d->io)->pool;
    struct dg_batch *forgets = ((struct cp_dp_io *)d->io)->forgets;
    if (forgets && pool) /* a function deleted before this push goes first: a push after its
                            forget may carry a new function of the same name */
        dg_batch_flush(forgets, pool);
    for (size_t k = 0; k < pp->n; k++) {
        struct push_call *pc = dg_xmalloc(sizeof(*pc));
        *pc = (struct push_call){p, dg_xstrdup(d->name)};
        if (p)
            p->waiting++;
        struct call *c = dg_xmalloc(sizeof(*c));
        *c = (struct call){push_answered, pc};
        if (!pool) { /* its data plane is gone (shutdown, replaced) */
            struct dg_err e;
            dg_err_set(&e, DG_E_CLOSED, "no connection: the peer was removed");
            call_finish(c, NULL, &e);
            continue;
        }
        dg_http_request(pool, "PUT", DG_WIRE_PATH_ENDPOINTS, json_type, 1, pp->bodies[k],
                        pp->lens[k], &cbs, c);
    }
}

/* All endpoint lists that changed during this loop turn, in one call per DP (more than one
 * when they are over a body: DG_WIRE_PART_MAX). */
static void fx_push(void *ud, const struct cp_push_item *items, size_t n)
{
    struct push *p = dg_xcalloc(1, sizeof(*p));
    p->rows = cp.trace_pending; /* created since the last push: their endpoints are in this one */
    cp.trace_pending = NULL;
    p->after = cp.after_push; /* registered before this push: it carries their functions */
    cp.after_push = NULL;
    p->waiting = 1; /* held until every DP was asked: a call that fails at once (no pool)
                       answers before the next, and must not free p */
    push_last = p;
    push_last_ms = uv_now(cp.loop);
    struct push_parts pp = {0};
    if (cp.core.dps)
        push_parts(items, n, false, &pp);
    for (struct cp_dp *d = cp.core.dps; d; d = d->next)
        push_call(d, &pp, p); /* NOLINT(clang-analyzer-unix.Malloc): p is held */
    pushed(p, NULL, NULL);    /* NOLINT(clang-analyzer-unix.Malloc): the hold ends */
    push_parts_free(&pp);
}

/* A resync: every function's whole list to `d` alone, as its whole table. */
static void fx_push_dp(void *ud, struct cp_dp *d, const struct cp_push_item *items, size_t n)
{
    struct push_parts pp = {0};
    push_parts(items, n, true, &pp);
    push_call(d, &pp, NULL);
    push_parts_free(&pp);
}

/* A forget that failed (but for a 404: the DP had no such function) leaves it there: the DP's
 * next heartbeat gets a resync, which drops it. */
static void forgotten(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    char *dp = ud;
    if (err && strncmp(err->msg, "404:", 4) != 0) {
        dg_log(DG_LOG_WARN, "push", "delete function on %s: %s", dp, err->msg);
        cp_core_on_dp_push_failed(&cp.core, dp);
    }
    free(dp);
}

/* The DPs forget a deleted function in a batch (POST /v1/forget, up to BATCH_MAX names a
 * request) on the push connection, flushed with the other batches or before the next push.
 * One DELETE per function was one request each on that one ordered connection: deleting
 * 90,000 functions queued 90,000 requests in front of every push, and registrations (answered
 * once the push carrying them is acknowledged) waited behind them past their timeout. */
static void fx_forget_fn(void *ud, const char *name)
{
    for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
        struct cp_dp_io *io = d->io;
        batch_call(&io->forgets, DG_WIRE_PATH_FORGET, io->pool, dg_wire_forget_item_encode(name),
                   forgotten, dg_xstrdup(d->name));
    }
}

/* ---- the clock and the core's "soon" ------------------------------------------------------ */

static uint64_t fx_now_ms(void *ud)
{
    return uv_now(cp.loop);
}

static uint64_t fx_wall_ms(void *ud)
{
    return dg_wall_ms();
}

static void push_soon(uv_timer_t *t)
{
    uint64_t now = uv_now(cp.loop);
    if (push_last && now < push_last_ms + PUSH_WAIT_MAX_MS) { /* its answer restarts this */
        uv_timer_start(&cp.push_timer, push_soon, push_last_ms + PUSH_WAIT_MAX_MS - now, 0);
        return;
    }
    cp.last_push_ms = now;
    cp_core_flush_pushes(&cp.core);
}

static void capacity_soon(uv_timer_t *t)
{
    cp_core_capacity_freed(&cp.core);
}

static bool in_scale_downs;

static void scale_downs_soon(uv_timer_t *t)
{
    in_scale_downs = true;
    cp_core_scale_downs(&cp.core);
    in_scale_downs = false;
}

static void fx_soon(void *ud, enum cp_soon what)
{
    if (what == CP_SOON_PUSH) {
        if (!uv_is_active((uv_handle_t *)&cp.push_timer))
            start_paced(&cp.push_timer, push_soon, cp.last_push_ms);
        return;
    }
    if (what == CP_SOON_SCALE_DOWN) {
        /* the budget spent (asked from its own run): 1 ms, since libuv (1.44) runs a 0 ms timer
         * started from a timer callback in the same turn, before the I/O that waits */
        if (!uv_is_active((uv_handle_t *)&cp.scale_down_timer))
            uv_timer_start(&cp.scale_down_timer, scale_downs_soon, in_scale_downs ? 1 : 0, 0);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&cp.capacity_timer))
        uv_timer_start(&cp.capacity_timer, capacity_soon, 0, 0);
}

/* ---- workers and data planes: connections, the store, /metrics ---------------------------- */

static struct dg_http_pool *pool_to(const char *address, unsigned max_conns, struct dg_err *err)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = max_conns;
    /* keep what the load opened: one worker address serves many (emulated) nodes, whose create,
     * delete and drain batches go out at once; over 16 idle, each flush connected anew */
    o.max_idle = max_conns;
    o.request_timeout_ms = 60 * 1000; /* as the original: 60 s per worker/DP call */
    o.bearer = cp.auth_on ? cp.auth_cred : NULL;
    return dg_http_pool_new_addr(cp.loop, address, &o, err);
}

/* The pool to worker `address`, shared by every worker there (NULL with err: a bad address). */
static struct cp_worker_pool *worker_pool_get(const char *address, struct dg_err *err)
{
    struct cp_worker_pool *wp = dg_strmap_get(&cp.worker_pools, dg_str_c(address));
    if (!wp) {
        struct dg_http_pool *pool = pool_to(address, 256, err);
        if (!pool)
            return NULL;
        wp = dg_xcalloc(1, sizeof(*wp));
        wp->address = dg_xstrdup(address);
        wp->pool = pool;
        dg_strmap_put(&cp.worker_pools, dg_str_c(wp->address), wp);
    }
    wp->refs++;
    return wp;
}

/* One worker less at that address: its pool closes with the last. */
static void worker_pool_put(struct cp_worker_pool *wp)
{
    if (!wp || --wp->refs)
        return;
    for (struct cp_worker_pool **pi = &cp.flush_list; *pi; pi = &(*pi)->flush_next)
        if (*pi == wp) { /* at exit (workers never leave), or the last worker there moved */
            *pi = wp->flush_next;
            break;
        }
    if (wp->creates) /* what is waiting goes out before the pool closes (at exit: empty) */
        dg_batch_flush(wp->creates, wp->pool);
    if (wp->deletes)
        dg_batch_flush(wp->deletes, wp->pool);
    dg_batch_free(wp->creates, NULL);
    dg_batch_free(wp->deletes, NULL);
    dg_strmap_del(&cp.worker_pools, dg_str_c(wp->address));
    struct dg_http_pool *pool = wp->pool;
    free(wp->address);
    free(wp);
    dg_http_pool_close(pool);
}

static int fx_connect(void *ud, enum cp_peer kind, void **iop, const char *address,
                      struct dg_err *err)
{
    if (kind == CP_PEER_WORKER) {
        struct cp_worker_pool *wp = worker_pool_get(address, err);
        if (!wp)
            return -1;
        struct cp_worker_io *io = *iop ? *iop : dg_xcalloc(1, sizeof(*io));
        struct cp_worker_pool *old = io->wpool;
        io->wpool = wp;
        io->pool = wp->pool;
        *iop = io;
        worker_pool_put(old); /* after: a move to the same address keeps the pool */
        return 0;
    }
    struct dg_http_pool *pool = pool_to(address, 1, err); /* one connection: ordered pushes */
    struct dg_http_pool *drain_pool = pool ? pool_to(address, 64, err) : NULL;
    if (!pool || !drain_pool) {
        if (pool)
            dg_http_pool_close(pool);
        return -1;
    }
    struct cp_dp_io *io = *iop ? *iop : dg_xcalloc(1, sizeof(*io));
    if (io->pool)
        dg_http_pool_close(io->pool);
    if (io->drain_pool)
        dg_http_pool_close(io->drain_pool);
    io->pool = pool;
    io->drain_pool = drain_pool;
    *iop = io;
    return 0;
}

static void fx_disconnect(void *ud, enum cp_peer kind, void *iop)
{
    if (kind == CP_PEER_WORKER) {
        struct cp_worker_io *io = iop;
        struct cp_worker_pool *wp = io->wpool;
        io->pool = NULL;
        io->wpool = NULL;
        free(io);
        worker_pool_put(wp);
        return;
    }
    struct cp_dp_io *io = iop;
    struct dg_err gone;
    dg_err_set(&gone, DG_E_CLOSED, "the data plane is gone");
    struct dg_batch *drains = io->drains, *forgets = io->forgets;
    io->drains = io->forgets = NULL;
    dg_batch_free(drains, &gone); /* drains not sent yet: nothing to wait for */
    dg_batch_free(forgets, &gone);
    if (io->pool)
        dg_http_pool_close(io->pool);
    if (io->drain_pool)
        dg_http_pool_close(io->drain_pool);
    free(io);
}

static void fx_persist(void *ud, enum cp_peer kind, const void *peer)
{
    char *value;
    const char *name;
    if (kind == CP_PEER_WORKER) {
        const struct cp_worker *w = peer;
        value = dg_wire_worker_rec_dumps(
            &(struct dg_wire_worker_rec){.address = w->address,
                                         /* "": it said none (its host); absent: not said yet */
                                         .sandbox_subnet = w->subnet         ? w->subnet
                                                           : w->subnet_known ? ""
                                                                             : NULL});
        name = w->name;
    } else {
        const struct cp_dp *d = peer;
        value = dg_wire_dp_rec_dumps(&(struct dg_wire_dp_rec){.api = d->api, .proxy = d->proxy});
        name = d->name;
    }
    cp_store_put(cp.store, kind == CP_PEER_WORKER ? "worker" : "dataplane", name, value, NULL,
                 NULL);
    free(value);
}

static void fx_worker_changed(void *ud, const struct cp_worker *w)
{
    struct cp_worker_io *io = w->io;
    if (!cp.m_worker_cpu || !io)
        return;
    if (!io->m[0]) { /* looked up once: every heartbeat and create sets them */
        const char *cap[] = {w->name, "capacity"}, *res[] = {w->name, "reserved"},
                   *sched[] = {w->name, "schedulable"};
        io->m[0] = dg_metric_get(cp.m_worker_cpu, cap);
        io->m[1] = dg_metric_get(cp.m_worker_cpu, sched);
        io->m[2] = dg_metric_get(cp.m_worker_cpu, res);
        io->m[3] = dg_metric_get(cp.m_worker_mem, cap);
        io->m[4] = dg_metric_get(cp.m_worker_mem, res);
    }
    dg_gauge_set(io->m[0], (double)w->res.cpu_milli);
    dg_gauge_set(io->m[1], (double)cp_worker_cpu_schedulable(w));
    dg_gauge_set(io->m[2], (double)w->node.cpu_used);
    dg_gauge_set(io->m[3], (double)w->res.memory_mib);
    dg_gauge_set(io->m[4], (double)w->node.mem_used);
}

const struct cp_effects cp_io_effects = {
    .now_ms = fx_now_ms,
    .wall_ms = fx_wall_ms,
    .soon = fx_soon,
    .create = fx_create,
    .destroy = fx_destroy,
    .drain = fx_drain,
    .push = fx_push,
    .push_dp = fx_push_dp,
    .forget_fn = fx_forget_fn,
    .connect = fx_connect,
    .disconnect = fx_disconnect,
    .persist = fx_persist,
    .worker_changed = fx_worker_changed,
};

void cp_io_init(void)
{
    cp.core.m_creates = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_sandbox_creates_total", "Sandboxes created.", NULL),
        NULL);
    cp.core.m_create_failures = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_sandbox_create_failures_total",
                           "Sandbox creates that failed (retried on the next tick).", NULL),
        NULL);
    cp.m_worker_cpu = dg_metrics_gauge(cp.metrics, "dg_cp_worker_cpu_milli",
                                       "A worker's CPU, milli-CPU: capacity, schedulable "
                                       "(capacity x its overcommit), and reserved by sandboxes "
                                       "(max(requested_cpu, its floor) each).",
                                       "worker,kind");
    cp.m_worker_mem = dg_metrics_gauge(cp.metrics, "dg_cp_worker_memory_mib",
                                       "A worker's memory, MiB: capacity, and reserved by "
                                       "sandboxes (max(requested_memory, its floor) each).",
                                       "worker,kind");
    uv_timer_init(cp.loop, &cp.push_timer);
    uv_timer_init(cp.loop, &cp.batch_timer);
    uv_timer_init(cp.loop, &cp.scale_down_timer);
    uv_timer_init(cp.loop, &cp.capacity_timer);
}

/* At exit: fail (with `err`, at once, the core still whole) what a data plane's batches hold
 * (the workers' are their address pools', flushed and freed by worker_pool_put). */
static void batches_fail(const struct dg_err *err)
{
    for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
        struct cp_dp_io *io = d->io;
        struct dg_batch *b = io->drains, *f = io->forgets;
        io->drains = io->forgets = NULL;
        dg_batch_free(b, err);
        dg_batch_free(f, err);
    }
}

void cp_io_close(void)
{
    cp_io_flush(); /* what is batched goes out, and fails with the pools below */
    /* every peer loses its pool before any pool closes: a pool's close answers its requests
     * with errors at once, and the core's answer to them (a drain that failed deletes its
     * sandboxes; a create lost is deleted) must fail at once too, not wait in the batch of a
     * peer whose pool is still open: that batch was never sent, and was answered only by
     * cp_core_free, on a registry being freed (a use after free at SIGTERM under load) */
    size_t ndps = 0, nwps = 0, k = 0;
    for (struct cp_dp *d = cp.core.dps; d; d = d->next)
        ndps++;
    for (struct cp_worker *w = cp.core.workers; w; w = w->next)
        nwps++;
    struct dg_http_pool **dpp = dg_xcalloc(2 * ndps + 1, sizeof(*dpp));
    struct cp_worker_pool **wps = dg_xcalloc(nwps + 1, sizeof(*wps));
    for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
        struct cp_dp_io *io = d->io;
        dpp[k++] = io->pool;
        dpp[k++] = io->drain_pool;
        io->pool = io->drain_pool = NULL;
    }
    k = 0;
    for (struct cp_worker *w = cp.core.workers; w; w = w->next) {
        struct cp_worker_io *io = w->io;
        wps[k++] = io->wpool;
        io->pool = NULL;
        io->wpool = NULL;
    }
    /* data planes first (their drains end in worker deletes); a pool shared by the workers at
     * one address closes once none of them has it */
    for (k = 0; k < 2 * ndps; k++)
        if (dpp[k])
            dg_http_pool_close(dpp[k]);
    for (k = 0; k < nwps; k++)
        worker_pool_put(wps[k]);
    free(dpp);
    free(wps);
    struct dg_err gone;
    dg_err_set(&gone, DG_E_CLOSED, "the control plane is stopping");
    batches_fail(&gone); /* none expected (no pool: nothing is batched), but never left over */
    uv_close((uv_handle_t *)&cp.push_timer, NULL);
    uv_close((uv_handle_t *)&cp.batch_timer, NULL);
    uv_close((uv_handle_t *)&cp.scale_down_timer, NULL);
    uv_close((uv_handle_t *)&cp.capacity_timer, NULL);
}

void cp_io_free(void)
{
    trace_free(cp.trace_pending);
    after_push_run(cp.after_push, false);
    cp.after_push = NULL;
    cp.trace_pending = NULL;
}
