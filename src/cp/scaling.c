/*
 * scaling.c: from metrics to sandboxes. Every 2 s each function's
 * concurrency (the sum of its data planes' last reports) goes through the
 * decider; on the first metric of a function at zero it goes through at once.
 * Scale-up places sandboxes on workers (random or round-robin) and creates
 * them in parallel; every change of a function's endpoints is pushed as the
 * whole list to every data plane. Scale-down takes the newest sandboxes out
 * of the lists, drains them on every data plane, then deletes them on their
 * workers. A failed create is logged with the worker's reason, recorded on
 * the function (fn_error.h: shown by the API until a create works) and retried
 * by the next tick (the decision still wants it). When no sandbox is ready and
 * no other create is in flight, the failure is pushed to every data plane
 * with the (empty) list, "error": reason, and they answer the requests they
 * queue for it with 503 and the reason instead of letting them wait.
 */
#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "placement.h"
#include "dirigent/batch.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/resources.h"
#include "dirigent/trace.h"

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
        dg_err_set(&e, DG_E_PROTO, "%d: %.*s", resp->status, (int)DG_MIN(resp->body.len, 200),
                   resp->body.ptr);
        while (e.msg[0] && e.msg[strlen(e.msg) - 1] == '\n')
            e.msg[strlen(e.msg) - 1] = '\0';
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

static void flush_batches(uv_timer_t *t)
{
    for (struct cp_worker *w = cp.workers; w; w = w->next) {
        if (w->creates)
            dg_batch_flush(w->creates, w->pool);
        if (w->deletes)
            dg_batch_flush(w->deletes, w->pool);
    }
    for (struct cp_dp *d = cp.dps; d; d = d->next)
        if (d->drains)
            dg_batch_flush(d->drains, d->drain_pool);
}

void cp_flush_batches(void)
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
        uv_timer_start(&cp.batch_timer, flush_batches, 0, 0);
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

static void log_dp_error(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    if (err)
        dg_log(DG_LOG_WARN, "push", "%s: %s", (const char *)ud, err->msg);
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

static void trace_create(const struct cp_sandbox *s, json_t *answer, bool ok)
{
    if (!cp.cold_trace)
        return;
    json_t *l = answer ? json_object_get(answer, "latencyUs") : NULL;
#define LAT(k) ((long long)json_integer_value(json_object_get(l, k)))
    struct trace_row r = {.fn = s->fn->spec.name,
                          .id = s->id ? s->id : "",
                          .image = LAT("image"),
                          .rootfs = LAT("rootfs"),
                          .start = LAT("start"),
                          .net = LAT("network"),
                          .ready = LAT("ready"),
                          .wall_us = dg_wall_ms() * 1000ull,
                          .t_ready_us = dg_now_us()};
    r.other = LAT("total") - r.image - r.rootfs - r.start - r.net - r.ready;
#undef LAT
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
struct push {
    struct trace_row *rows;
    unsigned waiting;
};

static void pushed(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct push *p = ud;
    if (err)
        dg_log(DG_LOG_WARN, "push", "endpoint lists: %s", err->msg);
    if (--p->waiting > 0)
        return;
    uint64_t now = dg_now_us();
    for (struct trace_row *r = p->rows; r; r = r->next)
        trace_write(r, true, (long long)(now - r->t_ready_us));
    trace_free(p->rows);
    free(p);
}

/* ---- pushes to data planes -------------------------------------------------------------- */

static json_t *endpoint_list(const struct cp_fn *f)
{
    json_t *eps = json_array();
    for (const struct cp_sandbox *s = f->sbs; s; s = s->next)
        if (s->state == CP_SB_READY)
            json_array_append_new(eps, json_pack("{ss ss}", "id", s->id, "address", s->endpoint));
    return json_pack("{so}", "endpoints", eps);
}

static void fn_maybe_free(struct cp_fn *f);

/* All endpoint lists that changed during this loop turn, in one call per DP: a cold start's
 * push never queues behind hundreds of others (scale-downs come in bursts at a tick). */
static void flush_pushes(uv_timer_t *t)
{
    json_t *fns = json_array();
    struct cp_fn *done = NULL;
    while (cp.dirty) {
        struct cp_fn *f = cp.dirty;
        cp.dirty = f->next_dirty;
        f->dirty = false;
        json_t *one = endpoint_list(f);
        json_object_set_new(one, "name", json_string(f->spec.name));
        json_object_set_new(one, "concurrency", json_integer(f->spec.concurrency));
        /* only in the push a failure made: another push (a resync, a scale-down) must not
         * answer requests that wait for an attempt still under way */
        if (f->push_error && cp_fn_error_of(f)->set && !f->error->exit && f->ready == 0)
            json_object_set_new(one, "error", json_string(f->error->reason));
        f->push_error = false;
        if (f->exited) { /* why its sandboxes went: the DPs tell callers whose request died */
            json_object_set_new(one, "exited", f->exited);
            f->exited = NULL;
        }
        json_array_append_new(fns, one);
        f->next_dirty = done;
        done = f;
    }
    struct push *p = dg_xcalloc(1, sizeof(*p));
    p->rows = cp.trace_pending; /* created since the last push: their endpoints are in this one */
    cp.trace_pending = NULL;
    p->waiting = 1; /* held until every DP was asked */
    for (struct cp_dp *d = cp.dps; d; d = d->next) {
        p->waiting++;
        call(d->pool, "PUT", "/v1/endpoints", json_pack("{sO}", "functions", fns), pushed, p);
    }
    pushed(p, NULL, NULL);
    json_decref(fns);
    while (done) { /* deleted functions waited for their last push */
        struct cp_fn *f = done;
        done = f->next_dirty;
        fn_maybe_free(f);
    }
}

void cp_push_endpoints(struct cp_fn *f)
{
    if (f->dirty)
        return;
    f->dirty = true;
    f->next_dirty = cp.dirty;
    cp.dirty = f;
    if (!uv_is_active((uv_handle_t *)&cp.push_timer))
        uv_timer_start(&cp.push_timer, flush_pushes, 0, 0);
}

/* ---- placement and capacity ------------------------------------------------------------ */

void cp_worker_metrics(const struct cp_worker *w)
{
    if (!cp.m_worker_cpu)
        return;
    const char *cap[] = {w->name, "capacity"}, *res[] = {w->name, "reserved"},
               *sched[] = {w->name, "schedulable"};
    dg_gauge_set(dg_metric_get(cp.m_worker_cpu, cap), (double)w->cpu_milli);
    dg_gauge_set(dg_metric_get(cp.m_worker_cpu, sched), (double)cp_worker_cpu_schedulable(w));
    dg_gauge_set(dg_metric_get(cp.m_worker_cpu, res), (double)w->cpu_used);
    dg_gauge_set(dg_metric_get(cp.m_worker_mem, cap), (double)w->memory_mib);
    dg_gauge_set(dg_metric_get(cp.m_worker_mem, res), (double)w->mem_used);
}

static struct dg_res_node worker_res(const struct cp_worker *w)
{
    return (struct dg_res_node){.cpu_milli = w->cpu_milli,
                                .memory_mib = w->memory_mib,
                                .cpu_overcommit = w->cpu_overcommit,
                                .min_cpu_milli = w->min_cpu_milli,
                                .min_memory_mib = w->min_memory_mib};
}

int64_t cp_worker_cpu_schedulable(const struct cp_worker *w)
{
    struct dg_res_node r = worker_res(w);
    return dg_res_cpu_schedulable(&r);
}

/* What a sandbox of `f` holds on its worker, from placement until it is gone: max(request,
 * the worker's floor), the rule the worker limits it by (lib/resources.c). */
static void worker_reserve(struct cp_worker *w, const struct cp_fn *f)
{
    struct dg_res_node r = worker_res(w);
    int64_t cpu, mem;
    dg_res_take(&r, f->spec.cpu_milli, f->spec.memory_mib, &cpu, &mem);
    w->sandboxes++;
    w->cpu_used += cpu;
    w->mem_used += mem;
    cp_worker_metrics(w);
}

static void capacity_freed(uv_timer_t *t);

static void worker_release(struct cp_worker *w, const struct cp_fn *f)
{
    if (!w)
        return;
    if (w->sandboxes)
        w->sandboxes--;
    struct dg_res_node r = worker_res(w);
    int64_t cpu, mem;
    dg_res_take(&r, f->spec.cpu_milli, f->spec.memory_mib, &cpu, &mem);
    w->cpu_used = DG_MAX(0, w->cpu_used - cpu);
    w->mem_used = DG_MAX(0, w->mem_used - mem);
    cp_worker_metrics(w);
    /* functions waiting for room try again once this loop turn is over */
    if (cp.unschedulable && !uv_is_active((uv_handle_t *)&cp.capacity_timer))
        uv_timer_start(&cp.capacity_timer, capacity_freed, 0, 0);
}

/* Placement's view of the workers, in the registry's (name) order. */
static size_t worker_nodes(struct cp_worker ***ws)
{
    size_t n = 0;
    for (struct cp_worker *w = cp.workers; w; w = w->next)
        n++;
    if (n > cp.nodes_cap) {
        cp.nodes_cap = n * 2;
        cp.nodes = dg_xrealloc(cp.nodes, cp.nodes_cap * sizeof(*cp.nodes));
        cp.node_workers = dg_xrealloc(cp.node_workers, cp.nodes_cap * sizeof(*cp.node_workers));
    }
    size_t i = 0;
    for (struct cp_worker *w = cp.workers; w; w = w->next, i++) {
        cp.nodes[i] = (struct cp_node){.name = w->name,
                                       .cpu_cap = cp_worker_cpu_schedulable(w),
                                       .mem_cap = w->memory_mib,
                                       .cpu_used = w->cpu_used,
                                       .mem_used = w->mem_used,
                                       .min_cpu = w->min_cpu_milli,
                                       .min_mem = w->min_memory_mib,
                                       .sandboxes = w->sandboxes,
                                       .schedulable = w->schedulable};
        cp.node_workers[i] = w;
    }
    *ws = cp.node_workers;
    return n;
}

/* ---- sandboxes -------------------------------------------------------------------------- */

static void sandbox_unlink(struct cp_fn *f, struct cp_sandbox *s)
{
    for (struct cp_sandbox **ps = &f->sbs; *ps; ps = &(*ps)->next) {
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    }
    free(s->id);
    free(s->endpoint);
    free(s);
}

static void deleted_on_worker(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct cp_sandbox *s = ud;
    struct cp_fn *f = s->fn;
    if (err)
        dg_log(DG_LOG_WARN, "scale", "fn=%s delete %s on %s: %s", f->spec.name, s->id,
               s->worker ? s->worker->name : "?", err->msg);
    worker_release(s->worker, f);
    f->draining--;
    sandbox_unlink(f, s);
    fn_maybe_free(f);
}

static void delete_on_worker(struct cp_sandbox *s)
{
    if (!s->worker) { /* its worker is gone */
        deleted_on_worker(s, NULL, NULL);
        return;
    }
    batch_call(&s->worker->deletes, "/v1/sandboxes/delete", s->worker->pool, json_string(s->id),
               deleted_on_worker, s);
}

/* A drain round: the victims leave every DP's list, each DP answers once their requests
 * finished, then the workers delete them. */
struct drain {
    struct cp_fn *f;
    struct cp_sandbox **victims;
    size_t n;
    unsigned pending;
};

static void drain_step(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct drain *d = ud;
    if (err)
        dg_log(DG_LOG_WARN, "scale", "fn=%s drain: %s", d->f->spec.name, err->msg);
    if (--d->pending > 0)
        return;
    for (size_t i = 0; i < d->n; i++)
        delete_on_worker(d->victims[i]);
    free(d->victims);
    free(d);
}

static void scale_down(struct cp_fn *f, unsigned count)
{
    struct drain *d = dg_xcalloc(1, sizeof(*d));
    d->f = f;
    d->victims = dg_xcalloc(count, sizeof(*d->victims));
    /* newest first: the list is kept newest-first */
    for (struct cp_sandbox *s = f->sbs; s && d->n < count; s = s->next) {
        if (s->state != CP_SB_READY)
            continue;
        s->state = CP_SB_DRAINING;
        f->ready--;
        f->draining++;
        d->victims[d->n++] = s;
    }
    cp_push_endpoints(f);
    json_t *ids = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(ids, json_string(d->victims[i]->id));
    d->pending = 1; /* held until every DP was asked */
    for (struct cp_dp *dp = cp.dps; dp; dp = dp->next) {
        d->pending++;
        batch_call(&dp->drains, "/v1/drain", dp->drain_pool,
                   json_pack("{ss sO}", "name", f->spec.name, "ids", ids), drain_step, d);
    }
    json_decref(ids);
    dg_log(DG_LOG_DEBUG, "scale", "fn=%s scale down by %zu (ready %u)", f->spec.name, d->n,
           f->ready);
    drain_step(d, NULL, NULL);
}

/* One row of cold_start_trace.csv, the original's columns (µs); the worker's breakdown from
 * its answer, other_worker_node = the worker's total - its steps. */

/* The answer to a create whose worker went silent meanwhile (it was replaced): a sandbox made
 * after all is deleted, unless the worker's resync heartbeat already had it adopted. */
static void abandoned_created(struct cp_sandbox *s, const struct dg_http_resp *resp,
                              const struct dg_err *err)
{
    struct cp_fn *f = s->fn;
    json_t *j = NULL;
    const char *id = NULL;
    struct dg_err perr = {0};
    if (!err && dg_json_parse(resp->body.ptr, resp->body.len, &j, &perr) == 0 &&
        dg_json_get_string(j, "id", true, &id, &perr) == 0) {
        bool adopted = false;
        for (struct cp_sandbox *o = f->sbs; o && !adopted; o = o->next)
            adopted = o->id && strcmp(o->id, id) == 0;
        if (!adopted) {
            dg_log(DG_LOG_INFO, "scale", "fn=%s sandbox %s on %s came too late: deleting it",
                   f->spec.name, id, s->abandoned_on->name);
            batch_call(&s->abandoned_on->deletes, "/v1/sandboxes/delete", s->abandoned_on->pool,
                       json_string(id), NULL, NULL);
        }
    }
    json_decref(j);
    sandbox_unlink(f, s);
    fn_maybe_free(f);
}

static void created(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct cp_sandbox *s = ud;
    struct cp_fn *f = s->fn;
    if (s->abandoned_on) {
        abandoned_created(s, resp, err);
        return;
    }
    f->creating--;
    const char *id = NULL, *ep = NULL;
    json_t *j = NULL;
    struct dg_err perr = {0};
    if (!err && (dg_json_parse(resp->body.ptr, resp->body.len, &j, &perr) < 0 ||
                 dg_json_get_string(j, "id", true, &id, &perr) < 0 ||
                 dg_json_get_string(j, "endpoint", true, &ep, &perr) < 0))
        err = &perr;
    if (err) {
        trace_create(s, NULL, false);
        dg_counter_add(cp.m_create_failures, 1);
        dg_log(DG_LOG_WARN, "scale", "fn=%s create on %s failed: %s", f->spec.name,
               s->worker ? s->worker->name : "?", err->msg);
        worker_release(s->worker, f);
        if (!f->deleted) {
            /* the worker's reason without the wrapping of its refusal ("503: create failed: ") */
            const char *reason = err->msg;
            if (strncmp(reason, "503: create failed: ", 20) == 0)
                reason += 20;
            cp_fn_error_set(cp_fn_error_mut(f), s->worker ? s->worker->name : NULL, reason,
                            uv_now(cp.loop), dg_wall_ms());
            if (cp_fn_error_push_due(f->ready, f->creating)) {
                f->push_error = true; /* every time: requests queued since the last one wait */
                cp_push_endpoints(f);
            }
        }
        json_decref(j);
        sandbox_unlink(f, s);
        fn_maybe_free(f);
        return;
    }
    s->id = dg_xstrdup(id);
    s->endpoint = dg_xstrdup(ep);
    trace_create(s, j, true);
    json_decref(j);
    dg_counter_add(cp.m_creates, 1);
    if (f->error && cp_fn_error_create_worked(f->error))
        dg_log(DG_LOG_INFO, "scale", "fn=%s create on %s worked: error cleared", f->spec.name,
               s->worker ? s->worker->name : "?");
    if (f->deleted || !s->worker) { /* no longer wanted */
        s->state = CP_SB_DRAINING;
        f->draining++;
        delete_on_worker(s);
        return;
    }
    s->state = CP_SB_READY;
    f->ready++;
    dg_log(DG_LOG_DEBUG, "scale", "fn=%s sandbox %s ready at %s (ready %u)", f->spec.name, s->id,
           s->endpoint, f->ready);
    cp_push_endpoints(f);
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
static void sandbox_workload_env(const struct cp_fn_spec *spec, json_t *env)
{
    if (spec->cold_start_busy_loop_ms > 0 && !env_has(spec, "COLD_START_BUSY_LOOP_MS"))
        json_array_append_new(env, json_sprintf("COLD_START_BUSY_LOOP_MS=%lld",
                                                (long long)spec->cold_start_busy_loop_ms));
    if ((spec->iteration_multiplier > 0 || spec->cold_start_busy_loop_ms > 0) &&
        !env_has(spec, "ITERATIONS_MULTIPLIER"))
        json_array_append_new(env, json_sprintf("ITERATIONS_MULTIPLIER=%lld",
                                                (long long)(spec->iteration_multiplier > 0
                                                                ? spec->iteration_multiplier
                                                                : 102)));
}

static void create_on(struct cp_fn *f, struct cp_worker *w)
{
    struct cp_sandbox *s = dg_xcalloc(1, sizeof(*s));
    s->fn = f;
    s->worker = w;
    s->state = CP_SB_CREATING;
    s->t0_us = dg_now_us();
    s->next = f->sbs;
    f->sbs = s;
    f->creating++;
    worker_reserve(w, f);
    json_t *env = json_array(), *args = json_array();
    for (size_t i = 0; i < f->spec.env.n; i++)
        json_array_append_new(env, json_string(f->spec.env.v[i]));
    sandbox_workload_env(&f->spec, env);
    for (size_t i = 0; i < f->spec.args.n; i++)
        json_array_append_new(args, json_string(f->spec.args.v[i]));
    batch_call(&w->creates, "/v1/sandboxes/batch", w->pool,
               json_pack("{ss ss si so so sI sI}", "function", f->spec.name, "image", f->spec.image,
                         "port", f->spec.port, "env", env, "args", args, "cpuMilli",
                         (json_int_t)f->spec.cpu_milli, "memoryMiB",
                         (json_int_t)f->spec.memory_mib),
               created, s);
}

/* No worker has room: the function is unschedulable until capacity frees (worker_release
 * retries it); requests waiting at zero get 503 with the reason at once. */
static void unschedulable(struct cp_fn *f, unsigned wanted, size_t nworkers)
{
    char reason[256];
    unsigned live = 0;
    for (struct cp_worker *w = cp.workers; w; w = w->next)
        live += w->schedulable;
    if (live == 0)
        snprintf(reason, sizeof(reason), "no schedulable worker (%zu registered)", nworkers);
    else {
        /* what it takes where that is more than the request (a worker's floors) */
        int64_t cpu = f->spec.cpu_milli, mem = f->spec.memory_mib;
        for (struct cp_worker *w = cp.workers; w; w = w->next) {
            struct dg_res_node r = worker_res(w);
            int64_t c, m;
            dg_res_take(&r, f->spec.cpu_milli, f->spec.memory_mib, &c, &m);
            cpu = DG_MAX(cpu, c);
            mem = DG_MAX(mem, m);
        }
        char takes[96] = "";
        if (cpu != f->spec.cpu_milli || mem != f->spec.memory_mib)
            snprintf(takes, sizeof(takes),
                     " (a sandbox takes up to cpu=%lldm memory=%lldMiB: "
                     "the workers' floors)",
                     (long long)cpu, (long long)mem);
        snprintf(reason, sizeof(reason),
                 "no capacity for cpu=%lldm memory=%lldMiB%s: none of %u schedulable workers has "
                 "that free",
                 (long long)f->spec.cpu_milli, (long long)f->spec.memory_mib, takes, live);
    }
    if (!f->unschedulable) { /* logged once per episode */
        f->unschedulable = true;
        cp.unschedulable++;
        dg_log(DG_LOG_WARN, "scale", "fn=%s wants %u more sandboxes: %s", f->spec.name, wanted,
               reason);
    }
    if (live == 0)
        return; /* a cluster starting up: requests wait for a worker, not fail */
    cp_fn_error_set(cp_fn_error_mut(f), NULL, reason, uv_now(cp.loop), dg_wall_ms());
    f->error->unschedulable = true;
    if (cp_fn_error_push_due(f->ready, f->creating)) {
        f->push_error = true;
        cp_push_endpoints(f);
    }
}

static void schedulable_again(struct cp_fn *f)
{
    if (!f->unschedulable)
        return;
    f->unschedulable = false;
    cp.unschedulable--;
    if (cp_fn_error_of(f)->set && f->error->unschedulable)
        cp_fn_error_clear(f->error);
}

void cp_reconcile(struct cp_fn *f)
{
    int total = (int)(f->ready + f->creating);
    if (f->desired > total) {
        /* the k sandboxes of this decision in one placement */
        unsigned want = (unsigned)(f->desired - total);
        struct cp_worker **ws;
        size_t n = worker_nodes(&ws);
        size_t *chosen = dg_xcalloc(want, sizeof(*chosen));
        unsigned k = cp_place(&cp.placer, cp.nodes, n, f->spec.name, f->spec.cpu_milli,
                              f->spec.memory_mib, want, chosen);
        for (unsigned i = 0; i < k; i++)
            create_on(f, ws[chosen[i]]);
        free(chosen);
        if (k > 0)
            dg_log(DG_LOG_DEBUG, "scale", "fn=%s scale up to %d (ready %u, creating %u)",
                   f->spec.name, f->desired, f->ready, f->creating);
        if (k < want)
            unschedulable(f, want - k, n);
        else
            schedulable_again(f);
    } else {
        schedulable_again(f); /* wants no more than it has */
        if (f->desired < (int)f->ready && f->creating == 0 &&
            (f->deleted || uv_now(cp.loop) >= f->hold_down_until_ms))
            scale_down(f, f->ready - (unsigned)f->desired);
    }
}

/* Capacity came back (a sandbox went away): functions that found no room try again. */
static void capacity_freed(uv_timer_t *t)
{
    for (struct cp_fn *f = cp.fns; f && cp.unschedulable; f = f->next)
        if (f->unschedulable && !f->deleted)
            cp_reconcile(f);
}

static void decide(struct cp_fn *f, uint64_t now_ms)
{
    struct cp_as_decision d;
    cp_as_decide(&f->as, &f->ast, (int)f->ready, cp_fn_sample(f), now_ms, &d);
    if (d.desired != f->desired)
        dg_log(DG_LOG_DEBUG, "autoscaler", "fn=%s desired=%d ready=%u stable=%.2f panic=%s",
               f->spec.name, d.desired, f->ready, d.stable_avg, d.panic ? "yes" : "no");
    f->desired = d.desired;
    cp_reconcile(f);
}

void cp_tick(uint64_t now_ms, unsigned slot)
{
    struct cp_slot *sl = &cp.slots[slot % CP_TICK_SLOTS];
    for (size_t i = 0; i < sl->n; i++) /* deciding frees no function that is not deleted */
        if (!sl->v[i]->deleted)
            decide(sl->v[i], now_ms);
}

void cp_scale_now(struct cp_fn *f, uint64_t now_ms)
{
    if (!f->deleted && f->ready == 0 && f->creating == 0 && cp_fn_sample(f) > 0)
        decide(f, now_ms); /* scale from zero: do not wait for the tick */
}

/* ---- deletion and failures -------------------------------------------------------------- */

static void fn_maybe_free(struct cp_fn *f)
{
    if (!f->deleted || f->sbs || f->dirty)
        return; /* a dirty one goes after its last push (flush_pushes) */
    char path[128];
    snprintf(path, sizeof(path), "/v1/functions/%s", f->spec.name);
    for (struct cp_dp *d = cp.dps; d; d = d->next)
        call(d->pool, "DELETE", path, NULL, log_dp_error, "delete function");
    for (struct cp_fn **pf = &cp.fns; *pf; pf = &(*pf)->next) {
        if (*pf == f) {
            *pf = f->next;
            break;
        }
    }
    if (dg_strmap_get(&cp.fn_index, dg_str_c(f->spec.name)) == f)
        dg_strmap_del(&cp.fn_index, dg_str_c(f->spec.name));
    struct cp_slot *sl = &cp.slots[f->tick_slot];
    sl->v[f->slot_pos] = sl->v[--sl->n]; /* the last one takes its place */
    sl->v[f->slot_pos]->slot_pos = f->slot_pos;
    cp_fn_spec_free(&f->spec);
    cp_as_state_deinit(&f->ast);
    free(f->metrics);
    free(f->error);
    json_decref(f->exited);
    free(f);
}

void cp_fn_delete(struct cp_fn *f)
{
    schedulable_again(f);
    f->deleted = true;
    f->desired = 0;
    if (f->ready)
        scale_down(f, f->ready);
    fn_maybe_free(f);
}

bool cp_sandbox_adopt(struct cp_fn *f, struct cp_worker *w, const char *id, const char *endpoint)
{
    for (struct cp_sandbox *s = f->sbs; s; s = s->next)
        if (s->id && strcmp(s->id, id) == 0)
            return false;
    struct cp_sandbox *s = dg_xcalloc(1, sizeof(*s));
    s->fn = f;
    s->worker = w;
    s->id = dg_xstrdup(id);
    s->endpoint = dg_xstrdup(endpoint);
    s->state = CP_SB_READY;
    s->next = f->sbs;
    f->sbs = s;
    f->ready++;
    worker_reserve(w, f);
    if (f->desired < (int)f->ready)
        f->desired = (int)f->ready;
    /* a CP that restarted has an empty window: hold scale-down off for one stable window */
    f->hold_down_until_ms = uv_now(cp.loop) + f->as.stable_window_ms;
    cp_push_endpoints(f);
    return true;
}

bool cp_sandbox_exited(struct cp_fn *f, const char *id, const char *reason)
{
    for (struct cp_sandbox *s = f->sbs; s; s = s->next) {
        if (s->state == CP_SB_CREATING || !s->id || strcmp(s->id, id) != 0)
            continue;
        bool draining = s->state == CP_SB_DRAINING; /* out of the lists: its delete follows */
        const char *worker = s->worker ? s->worker->name : "?";
        char msg[256];
        snprintf(msg, sizeof(msg), "sandbox %s %s", id, reason);
        dg_log(DG_LOG_WARN, "registry", "fn=%s %s on worker %s%s", f->spec.name, msg, worker,
               draining ? " while draining" : ": replacing");
        cp_fn_error_set_exit(cp_fn_error_mut(f), s->worker ? s->worker->name : NULL, msg,
                             uv_now(cp.loop), dg_wall_ms());
        if (!f->exited)
            f->exited = json_array();
        if (json_array_size(f->exited) < 64) /* a burst of exits: the first ones say enough */
            json_array_append_new(f->exited, json_pack("{ss ss}", "id", id, "reason", reason));
        cp_push_endpoints(f); /* the DPs hear why (and the list without it) */
        if (draining)
            return true;
        f->ready--;
        worker_release(s->worker, f);
        sandbox_unlink(f, s);
        cp_scale_now(f, uv_now(cp.loop)); /* requests waiting: replace at once */
        return true;
    }
    return false;
}

void cp_worker_lost(struct cp_worker *w)
{
    dg_log(DG_LOG_WARN, "registry", "worker %s silent: unschedulable, its sandboxes are lost",
           w->name);
    w->schedulable = false;
    cp_worker_forget_sandboxes(w);
}

void cp_worker_forget_sandboxes(struct cp_worker *w)
{
    for (struct cp_fn *f = cp.fns; f; f = f->next) {
        bool changed = false, replace = false;
        for (struct cp_sandbox *s = f->sbs, *next; s; s = next) {
            next = s->next;
            if (s->worker != w)
                continue;
            s->worker = NULL; /* requests in flight to it finish on their own */
            if (s->state == CP_SB_READY) {
                f->ready--;
                sandbox_unlink(f, s);
                changed = true;
            } else if (s->state == CP_SB_CREATING && !s->abandoned_on) {
                /* not waited for (a create's answer may take up to its timeout): replaced
                 * now, its answer handled when it comes */
                s->abandoned_on = w;
                f->creating--;
                replace = true;
            }
        }
        if (changed)
            cp_push_endpoints(f); /* the next tick replaces them elsewhere */
        if (replace && !f->deleted)
            cp_reconcile(f);
    }
    w->sandboxes = 0;
    w->cpu_used = w->mem_used = 0;
    cp_worker_metrics(w);
}

void cp_free_all(void)
{
    trace_free(cp.trace_pending);
    cp.trace_pending = NULL;
    dg_strmap_free(&cp.fn_index);
    for (size_t k = 0; k < CP_TICK_SLOTS; k++) {
        free(cp.slots[k].v);
        cp.slots[k] = (struct cp_slot){0};
    }
    while (cp.fns) {
        struct cp_fn *f = cp.fns;
        cp.fns = f->next;
        while (f->sbs) {
            struct cp_sandbox *s = f->sbs;
            f->sbs = s->next;
            free(s->id);
            free(s->endpoint);
            free(s);
        }
        cp_fn_spec_free(&f->spec);
        cp_as_state_deinit(&f->ast);
        free(f->metrics);
        free(f->error);
        json_decref(f->exited);
        free(f);
    }
    while (cp.workers) {
        struct cp_worker *w = cp.workers;
        cp.workers = w->next;
        dg_batch_free(w->creates, NULL); /* empty: flushed into the pool before it closed */
        dg_batch_free(w->deletes, NULL);
        free(w->name);
        free(w->address);
        free(w->boot);
        free(w);
    }
    while (cp.dps) {
        struct cp_dp *d = cp.dps;
        cp.dps = d->next;
        dg_batch_free(d->drains, NULL);
        free(d->name);
        free(d->api);
        free(d->proxy);
        free(d);
    }
}

void cp_dp_lost(struct cp_dp *d)
{
    dg_log(DG_LOG_WARN, "registry", "data plane %s silent: removed", d->name);
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        for (size_t i = 0; i < f->nmetrics; i++)
            if (f->metrics[i].dp == d)
                f->metrics[i].inflight = 0;
}
