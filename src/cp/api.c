/*
 * api.c: the control plane's two HTTP servers.
 *
 * Registration server (registrationServer, 9091), for users and InVitro:
 *   POST / or /registerService   the original's form (function.h) -> 200 with the data-plane
 *                                proxy addresses joined by ';' (or loadBalancerAddress)
 *   GET  /check?name=NAME        200 registered, 404 not
 *   GET  /v1/functions[/NAME]    list / one: name, image, state, ready, desired, ...,
 *                                error (the last failure: a failed create, or a sandbox
 *                                that exited by itself such as an OOM kill; or null)
 *   POST /v1/functions           JSON with the form's field names
 *   PUT  /v1/functions/NAME      {"scaling_lower_bound":N,"scaling_upper_bound":M}
 *   DELETE /v1/functions/NAME    scale to zero, then forget
 *
 * Internal API (port, 9090), for workers and data planes:
 *   POST /v1/workers     {"name","address"}           register, and heartbeat (every 5 s)
 *   POST /v1/dataplanes  {"name","api","proxy"}       register, and heartbeat; a new one
 *                                                     gets every function and endpoint list
 *   POST /v1/metrics     {"dataplane","functions":[{"name","inflight"}]}
 *   GET  /v1/status
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cp.h"
#include "dirigent/form.h"
#include "dirigent/json.h"
#include "dirigent/log.h"

struct cp_fn *cp_fn_find(struct dg_str name)
{
    struct cp_fn *f = dg_strmap_get(&cp.fn_index, name);
    return f && !f->deleted ? f : NULL;
}

double cp_fn_sample(const struct cp_fn *f)
{
    double sum = 0;
    for (size_t i = 0; i < f->nmetrics; i++)
        if (f->metrics[i].dp)
            sum += f->metrics[i].inflight;
    return sum;
}

/* ---- functions -------------------------------------------------------------------------- */

/* A function as the API shows it: its spec, its sandboxes, its state (fn_error.h) and its last
 * create failure: "error" is the reason or null; with one, "error_worker", "error_at_ms" (wall
 * clock, Unix ms), "error_age_ms" (by the CP's monotonic clock: no skew for the CLI) and
 * "error_kind" ("create", "unschedulable", or "exit": a sandbox exited by itself, e.g.
 * "sandbox ID OOM-killed: memory limit 64 MiB"). */
static json_t *fn_json(const struct cp_fn *f)
{
    const struct cp_fn_error *e = cp_fn_error_of(f);
    json_t *j = json_pack(
        "{ss ss si ss si si si si si sI sI sb si}", "name", f->spec.name, "image", f->spec.image,
        "port", f->spec.port, "state", cp_fn_state(e, f->ready, f->creating, f->desired), "ready",
        (int)f->ready, "desired", f->desired, "creating", (int)f->creating, "scaling_lower_bound",
        f->spec.lower_bound, "scaling_upper_bound", f->spec.upper_bound, "requested_cpu",
        (json_int_t)f->spec.cpu_milli, "requested_memory", (json_int_t)f->spec.memory_mib,
        "cold_start_sweep", f->spec.cold_start_sweep, "container_concurrency", f->spec.concurrency);
    if (!e->set) {
        json_object_set_new(j, "error", json_null());
        return j;
    }
    json_object_set_new(j, "error", json_string(e->reason));
    json_object_set_new(j, "error_worker", e->worker[0] ? json_string(e->worker) : json_null());
    json_object_set_new(j, "error_at_ms", json_integer((json_int_t)e->wall_ms));
    json_object_set_new(j, "error_age_ms",
                        json_integer((json_int_t)cp_fn_error_age_ms(e, uv_now(cp.loop))));
    json_object_set_new(j, "error_kind", json_string(cp_fn_error_kind(e)));
    return j;
}

static void registration_reply(struct dg_http_req *r)
{
    struct dg_buf b = {0};
    if (cp.lb_address && cp.lb_address[0]) {
        dg_buf_puts(&b, cp.lb_address);
    } else {
        for (struct cp_dp *d = cp.dps; d; d = d->next) {
            if (b.len)
                dg_buf_puts(&b, ";");
            dg_buf_puts(&b, d->proxy);
        }
    }
    dg_http_respond(r, 200, "text/plain", b.data ? b.data : "", b.len);
    dg_buf_free(&b);
}

/* A function into the registry (registered now, or restored from the store). */
static struct cp_fn *fn_install(struct cp_fn_spec *spec)
{
    struct cp_fn *f = dg_xcalloc(1, sizeof(*f));
    f->spec = *spec;
    cp_as_config_default(&f->as, spec->cold_start_sweep);
    if (cp.knative)
        cp_as_config_knative(&f->as);
    f->as.container_concurrency = spec->concurrency;
    f->as.lower_bound = spec->lower_bound;
    f->as.upper_bound = spec->upper_bound;
    cp_as_state_init(&f->ast, &f->as);
    static unsigned next_slot;
    f->tick_slot = next_slot++ % CP_TICK_SLOTS;
    struct cp_slot *sl = &cp.slots[f->tick_slot];
    if (sl->n == sl->cap) {
        sl->cap = sl->cap ? 2 * sl->cap : 64;
        sl->v = dg_xrealloc(sl->v, sl->cap * sizeof(*sl->v));
    }
    f->slot_pos = sl->n;
    sl->v[sl->n++] = f;
    f->next = cp.fns;
    cp.fns = f;
    dg_strmap_put(&cp.fn_index, dg_str_c(f->spec.name), f);
    cp_push_endpoints(f);        /* the DPs add it with its (empty) list, batched */
    if (spec->lower_bound > 0) { /* its sandboxes come at registration */
        f->desired = spec->lower_bound;
        cp_reconcile(f);
    }
    return f;
}

/* A registration waiting for its write to be durable. */
struct pending_reg {
    struct pending_reg *next;
    struct cp_fn_spec spec;
    struct dg_http_req *r; /* NULL once the client left */
};
static struct pending_reg *pending_regs;

static bool name_pending(const char *name)
{
    for (struct pending_reg *p = pending_regs; p; p = p->next)
        if (strcmp(p->spec.name, name) == 0)
            return true;
    return false;
}

static void reg_aborted(struct dg_http_req *r, void *ud)
{
    struct pending_reg *p = ud;
    p->r = NULL; /* registered all the same once durable: only nobody hears it */
}

static void reg_stored(void *ud, const struct dg_err *err)
{
    struct pending_reg *p = ud;
    for (struct pending_reg **pp = &pending_regs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (err) {
        if (p->r)
            dg_http_respond_text(p->r, 503,
                                 "registration: function '%s' not registered: the store failed "
                                 "(%s); try again",
                                 p->spec.name, err->msg);
        cp_fn_spec_free(&p->spec);
        free(p);
        return;
    }
    struct cp_fn *f = fn_install(&p->spec);
    dg_counter_add(cp.m_registrations, 1);
    dg_log(DG_LOG_INFO, "api", "registered fn=%s image=%s bounds=%d..%d", f->spec.name,
           f->spec.image, f->spec.lower_bound, f->spec.upper_bound);
    if (p->r)
        registration_reply(p->r);
    free(p);
}

/* Register from a parsed form; answers the request once the registration is durable. */
static void register_form(struct dg_http_req *r, const struct dg_form *form)
{
    struct cp_fn_spec spec;
    struct dg_err err = {0};
    if (cp_fn_spec_from_form(form, &spec, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    struct cp_fn *old = dg_strmap_get(&cp.fn_index, dg_str_c(spec.name));
    if (old && old->deleted) {
        dg_http_respond_text(r, 409,
                             "registration: function '%s' is still being deleted (its "
                             "sandboxes drain): try again in a moment",
                             spec.name);
        cp_fn_spec_free(&spec);
        return;
    }
    if (cp_fn_find(dg_str_c(spec.name)) || name_pending(spec.name)) {
        dg_http_respond_text(r, 409, "registration: function '%s' is already registered",
                             spec.name);
        cp_fn_spec_free(&spec);
        return;
    }
    struct pending_reg *p = dg_xcalloc(1, sizeof(*p));
    p->spec = spec;
    p->r = r;
    p->next = pending_regs;
    pending_regs = p;
    dg_http_req_on_abort(r, reg_aborted, p);
    json_t *j = cp_fn_spec_to_json(&spec);
    char *value = dg_json_dumps(j);
    json_decref(j);
    cp_store_put(cp.store, "function", spec.name, value, reg_stored, p);
    free(value);
}

static void api_register(struct dg_http_req *r, void *ud)
{
    struct dg_form form;
    struct dg_err err = {0};
    if (dg_form_parse(dg_http_req_body(r), &form, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    register_form(r, &form);
    dg_form_free(&form);
}

/* POST /v1/functions: JSON with the form's field names; arrays are repeated fields. */
static void api_create_json(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 || !json_is_object(j)) {
        if (!err.msg[0])
            dg_err_set(&err, DG_E_INVAL, "expected a JSON object");
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        if (j)
            json_decref(j);
        return;
    }
    struct dg_form form;
    cp_fn_form_from_json(j, &form, &err);
    json_decref(j);
    register_form(r, &form);
    dg_form_free(&form);
}

static void api_check(struct dg_http_req *r, void *ud)
{
    struct dg_form q;
    struct dg_err err = {0};
    if (dg_form_parse(dg_http_req_query(r), &q, &err) < 0) {
        dg_http_respond_text(r, 400, "check: %s", err.msg);
        return;
    }
    const char *name = dg_form_get(&q, "name", 0);
    if (!name)
        dg_http_respond_text(r, 400, "check: query parameter 'name' is required (?name=NAME)");
    else if (cp_fn_find(dg_str_c(name)))
        dg_http_respond_text(r, 200, "function '%s' is registered", name);
    else
        dg_http_respond_text(r, 404, "function '%s' is not registered", name);
    dg_form_free(&q);
}

static struct cp_fn *fn_param(struct dg_http_req *r)
{
    struct dg_str n = dg_http_req_param(r, "name");
    struct cp_fn *f = cp_fn_find(n);
    if (!f)
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
    return f;
}

static void api_fn_list(struct dg_http_req *r, void *ud)
{
    json_t *a = json_array();
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        if (!f->deleted)
            json_array_append_new(a, fn_json(f));
    dg_http_respond_json(r, 200, a);
}

static void api_fn_get(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (f)
        dg_http_respond_json(r, 200, fn_json(f));
}

struct bounds_update {
    char name[CP_NAME_MAX + 1];
    int lo, hi;
    struct dg_http_req *r;
};

static void update_aborted(struct dg_http_req *r, void *ud)
{
    ((struct bounds_update *)ud)->r = NULL;
}

static void update_stored(void *ud, const struct dg_err *err)
{
    struct bounds_update *u = ud;
    struct cp_fn *f = cp_fn_find(dg_str_c(u->name));
    if (err || !f) {
        if (u->r)
            dg_http_respond_text(u->r, err ? 503 : 404, "update: function '%s' %s%s%s", u->name,
                                 err ? "not updated: the store failed (" : "is not registered",
                                 err ? err->msg : "", err ? ")" : "");
        free(u);
        return;
    }
    f->spec.lower_bound = f->as.lower_bound = u->lo;
    f->spec.upper_bound = f->as.upper_bound = u->hi;
    if (f->desired < u->lo || f->desired > u->hi) {
        f->desired = f->desired < u->lo ? u->lo : u->hi;
        cp_reconcile(f);
    }
    if (u->r)
        dg_http_respond_json(u->r, 200, fn_json(f));
    free(u);
}

static void api_fn_update(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (!f)
        return;
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    int64_t lo = f->spec.lower_bound, hi = f->spec.upper_bound;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_int(j, "scaling_lower_bound", false, 0, INT32_MAX, &lo, &err) < 0 ||
        dg_json_get_int(j, "scaling_upper_bound", false, 0, INT32_MAX, &hi, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "update: %s", err.msg);
        return;
    }
    json_decref(j);
    if (lo > hi) {
        dg_http_respond_text(r, 400,
                             "update: field 'scaling_lower_bound': expected at most "
                             "scaling_upper_bound (%lld), got %lld",
                             (long long)hi, (long long)lo);
        return;
    }
    /* durable first, then applied and answered */
    struct bounds_update *u = dg_xcalloc(1, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", f->spec.name);
    u->lo = (int)lo;
    u->hi = (int)hi;
    u->r = r;
    dg_http_req_on_abort(r, update_aborted, u);
    struct cp_fn_spec copy = f->spec;
    copy.lower_bound = (int)lo;
    copy.upper_bound = (int)hi;
    json_t *js = cp_fn_spec_to_json(&copy);
    char *value = dg_json_dumps(js);
    json_decref(js);
    cp_store_put(cp.store, "function", f->spec.name, value, update_stored, u);
    free(value);
}

struct fn_delete {
    char name[CP_NAME_MAX + 1];
    struct dg_http_req *r;
};

static void delete_aborted(struct dg_http_req *r, void *ud)
{
    ((struct fn_delete *)ud)->r = NULL;
}

static void delete_stored(void *ud, const struct dg_err *err)
{
    struct fn_delete *d = ud;
    struct cp_fn *f = cp_fn_find(dg_str_c(d->name));
    if (err) {
        if (d->r)
            dg_http_respond_text(d->r, 503,
                                 "delete: function '%s' not deleted: the store failed (%s)",
                                 d->name, err->msg);
    } else {
        if (d->r)
            dg_http_respond_text(d->r, 200, "function '%s' deleted", d->name);
        if (f)
            cp_fn_delete(f);
    }
    free(d);
}

static void api_fn_delete(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (!f)
        return;
    struct fn_delete *d = dg_xcalloc(1, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", f->spec.name);
    d->r = r;
    dg_http_req_on_abort(r, delete_aborted, d);
    cp_store_del(cp.store, "function", f->spec.name, delete_stored, d);
}

/* ---- workers, data planes, metrics ------------------------------------------------------ */

static bool restoring; /* set by restore_worker/restore_dp: what is read back is not written
                          * again */

static struct dg_http_pool *pool_to(const char *address, unsigned max_conns, struct dg_err *err)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = max_conns;
    o.request_timeout_ms = 60 * 1000; /* as the original: 60 s per worker/DP call */
    return dg_http_pool_new_addr(cp.loop, address, &o, err);
}

/* The worker `name` at `address`: added, or moved to a new address (a new daemon). The pool
 * first, so a bad address changes nothing (NULL). A new name or address is stored. */
static struct cp_worker *worker_upsert(const char *name, const char *address, struct dg_err *err)
{
    struct cp_worker **pw = &cp.workers;
    while (*pw && strcmp((*pw)->name, name) < 0) /* sorted by name: round-robin is stable */
        pw = &(*pw)->next;
    struct cp_worker *w = *pw && strcmp((*pw)->name, name) == 0 ? *pw : NULL;
    struct dg_http_pool *pool = NULL;
    if (w && strcmp(w->address, address) == 0)
        return w;
    if (!(pool = pool_to(address, 256, err)))
        return NULL;
    if (w) {
        dg_http_pool_close(w->pool);
        w->pool = pool;
        free(w->address);
        w->address = dg_xstrdup(address);
    } else {
        w = dg_xcalloc(1, sizeof(*w));
        w->name = dg_xstrdup(name);
        w->address = dg_xstrdup(address);
        w->pool = pool;
        w->next = *pw;
        *pw = w;
        dg_log(DG_LOG_INFO, "registry", "worker %s at %s registered", name, address);
    }
    if (!restoring) {
        json_t *v = json_pack("{ss}", "address", address);
        char *value = dg_json_dumps(v);
        json_decref(v);
        cp_store_put(cp.store, "worker", name, value, NULL, NULL);
        free(value);
    }
    return w;
}

/* The data plane `name`: added, or at a new API address (restarted elsewhere: start over).
 * NULL on a bad address (nothing changed). `fresh` says it is new or moved; then stored. */
static struct cp_dp *dp_upsert(const char *name, const char *api, const char *proxy, bool *fresh,
                               struct dg_err *err)
{
    struct cp_dp *d = cp.dps;
    while (d && strcmp(d->name, name) != 0)
        d = d->next;
    *fresh = !d || strcmp(d->api, api) != 0;
    if (!*fresh)
        return d;
    /* the pools first, so a bad address changes nothing */
    struct dg_http_pool *pool = pool_to(api, 1, err); /* one connection: ordered pushes */
    struct dg_http_pool *drain_pool = pool ? pool_to(api, 64, err) : NULL;
    if (!pool || !drain_pool) {
        if (pool)
            dg_http_pool_close(pool);
        return NULL;
    }
    if (d) {
        dg_http_pool_close(d->pool);
        dg_http_pool_close(d->drain_pool);
        free(d->api);
        free(d->proxy);
    } else {
        d = dg_xcalloc(1, sizeof(*d));
        d->name = dg_xstrdup(name);
        d->next = cp.dps;
        cp.dps = d;
    }
    d->api = dg_xstrdup(api);
    d->proxy = dg_xstrdup(proxy);
    d->pool = pool;
    d->drain_pool = drain_pool;
    dg_log(DG_LOG_INFO, "registry", "data plane %s (api %s, proxy %s) registered", name, api,
           proxy);
    if (!restoring) {
        json_t *v = json_pack("{ss ss}", "api", api, "proxy", proxy);
        char *value = dg_json_dumps(v);
        json_decref(v);
        cp_store_put(cp.store, "dataplane", name, value, NULL, NULL);
        free(value);
    }
    return d;
}

static void api_worker(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    const char *name, *address;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_string(j, "name", true, &name, &err) < 0 ||
        dg_json_get_string(j, "address", true, &address, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "worker: %s", err.msg);
        return;
    }
    struct cp_worker *w = worker_upsert(name, address, &err);
    if (!w) {
        json_decref(j);
        dg_http_respond_text(r, 400, "worker: %s", err.msg);
        return;
    }
    /* a new daemon under a known name (it restarted, maybe after a crash): what it does not
     * report is gone; what it reports is adopted below */
    const char *boot = NULL;
    dg_json_get_string(j, "boot", false, &boot, &err);
    if (boot && w->boot && strcmp(boot, w->boot) != 0) {
        dg_log(DG_LOG_WARN, "registry", "worker %s restarted: forgetting its old sandboxes",
               w->name);
        cp_worker_forget_sandboxes(w);
    }
    if (boot && (!w->boot || strcmp(boot, w->boot) != 0)) {
        free(w->boot);
        w->boot = dg_xstrdup(boot);
    }
    /* its resources and the accounting rule's parameters (lib/resources.c), before adopting
     * sandboxes: they reserve by that rule. A worker that advertises no overcommit or floors
     * gets none. */
    json_t *cpu = json_object_get(j, "cpuMilli"), *mem = json_object_get(j, "memoryMiB");
    json_t *oc = json_object_get(j, "cpuOvercommit");
    json_t *fc = json_object_get(j, "sandboxMinCpuMilli"),
           *fm = json_object_get(j, "sandboxMinMemoryMiB");
    w->cpu_milli = json_is_integer(cpu) ? (int64_t)json_integer_value(cpu) : 0;
    w->memory_mib = json_is_integer(mem) ? (int64_t)json_integer_value(mem) : 0;
    w->cpu_overcommit =
        json_is_number(oc) && json_number_value(oc) > 0 ? json_number_value(oc) : 1.0;
    w->min_cpu_milli = json_is_integer(fc) ? (int64_t)json_integer_value(fc) : 0;
    w->min_memory_mib = json_is_integer(fm) ? (int64_t)json_integer_value(fm) : 0;
    /* sandboxes it runs that this CP does not know (this CP restarted): adopt them. Only
     * resync heartbeats list them (and those this CP asks for with "resync"). */
    json_t *sbs = json_object_get(j, "sandboxes"), *item;
    if (json_is_array(sbs))
        w->need_list = false;
    size_t i;
    json_array_foreach(sbs, i, item)
    {
        const char *sid, *fname, *ep;
        struct cp_fn *f;
        if (dg_json_get_string(item, "id", true, &sid, &err) == 0 &&
            dg_json_get_string(item, "function", true, &fname, &err) == 0 &&
            dg_json_get_string(item, "endpoint", true, &ep, &err) == 0 &&
            (f = cp_fn_find(dg_str_c(fname))) && cp_sandbox_adopt(f, w, sid, ep))
            dg_log(DG_LOG_INFO, "registry", "fn=%s adopted sandbox %s on %s", fname, sid, w->name);
    }
    cp_worker_metrics(w);
    json_decref(j);
    if (!w->schedulable)
        dg_log(DG_LOG_INFO, "registry", "worker %s schedulable", w->name);
    w->schedulable = true;
    w->last_seen_ms = uv_now(cp.loop);
    dg_http_respond_text(r, 200, w->need_list ? "resync" : "ok");
}

static void api_dataplane(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    const char *name, *api, *proxy;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_string(j, "name", true, &name, &err) < 0 ||
        dg_json_get_string(j, "api", true, &api, &err) < 0 ||
        dg_json_get_string(j, "proxy", true, &proxy, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "dataplane: %s", err.msg);
        return;
    }
    bool fresh;
    struct cp_dp *d = dp_upsert(name, api, proxy, &fresh, &err);
    if (!d) {
        json_decref(j);
        dg_http_respond_text(r, 400, "dataplane: %s", err.msg);
        return;
    }
    /* every function with its whole endpoint list whenever the DP may have lost them: a new
     * API address, or a DP that (re)started says "resync" in its first registration */
    bool resync = fresh || json_is_true(json_object_get(j, "resync"));
    json_decref(j);
    d->last_seen_ms = uv_now(cp.loop);
    if (resync) /* every function with its whole list, in the next batched push */
        for (struct cp_fn *f = cp.fns; f; f = f->next)
            if (!f->deleted)
                cp_push_endpoints(f);
    if (resync)
        cp_haproxy_sync();
    dg_http_respond_text(r, 200, "ok");
}

static void api_metrics(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    const char *dpname;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_string(j, "dataplane", true, &dpname, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "metrics: %s", err.msg);
        return;
    }
    struct cp_dp *d = cp.dps;
    while (d && strcmp(d->name, dpname) != 0)
        d = d->next;
    if (!d) {
        json_decref(j);
        dg_http_respond_text(r, 404, "metrics: data plane '%s' is not registered", dpname);
        return;
    }
    json_t *list = json_object_get(j, "functions"), *item;
    size_t i;
    uint64_t now = uv_now(cp.loop);
    json_array_foreach(list, i, item)
    {
        const char *name;
        json_t *v = json_object_get(item, "inflight");
        if (dg_json_get_string(item, "name", true, &name, &err) < 0 || !json_is_number(v))
            continue;
        struct cp_fn *f = cp_fn_find(dg_str_c(name));
        if (!f)
            continue;
        struct cp_metric *m = NULL;
        for (size_t k = 0; k < f->nmetrics && !m; k++)
            if (f->metrics[k].dp == d)
                m = &f->metrics[k];
        if (!m) {
            f->metrics = dg_xrealloc(f->metrics, (f->nmetrics + 1) * sizeof(*f->metrics));
            m = &f->metrics[f->nmetrics++];
            m->dp = d;
        }
        m->inflight = json_number_value(v);
        cp_scale_now(f, now);
    }
    json_decref(j);
    dg_http_respond_text(r, 200, "ok");
}

/* A worker saw a sandbox exit that nobody asked for: forget it, record why (the function's last
 * failure), push the list with the reason; the next request (a metric) or tick replaces it. */
static void api_sandbox_exited(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    const char *fname, *id, *reason = NULL;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_string(j, "function", true, &fname, &err) < 0 ||
        dg_json_get_string(j, "id", true, &id, &err) < 0 ||
        dg_json_get_string(j, "reason", false, &reason, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "sandbox exit: %s", err.msg);
        return;
    }
    /* it travels to every DP and into 502 bodies: a worker's reasons are one short line */
    if (reason && strlen(reason) > CP_EXIT_REASON_MAX) {
        dg_http_respond_text(r, 400,
                             "sandbox exit: field 'reason': expected at most %d characters, got "
                             "%zu",
                             CP_EXIT_REASON_MAX, strlen(reason));
        json_decref(j);
        return;
    }
    struct cp_fn *f = cp_fn_find(dg_str_c(fname));
    if (f)
        cp_sandbox_exited(f, id, reason && reason[0] ? reason : "exited"); /* logs it */
    json_decref(j);
    dg_http_respond_text(r, 200, "ok");
}

static void api_status(struct dg_http_req *r, void *ud)
{
    json_t *ws = json_array(), *ds = json_array(), *fs = json_array();
    for (struct cp_worker *w = cp.workers; w; w = w->next)
        json_array_append_new(
            ws, json_pack("{ss ss sb si sI sI sI sI sI sf sI sI}", "name", w->name, "address",
                          w->address, "schedulable", w->schedulable, "sandboxes", (int)w->sandboxes,
                          "cpuMilli", (json_int_t)w->cpu_milli, "memoryMiB",
                          (json_int_t)w->memory_mib, "cpuUsedMilli", (json_int_t)w->cpu_used,
                          "memoryUsedMiB", (json_int_t)w->mem_used,
                          /* what placement may reserve: cpuMilli x cpuOvercommit */
                          "cpuSchedulableMilli", (json_int_t)cp_worker_cpu_schedulable(w),
                          "cpuOvercommit", w->cpu_overcommit > 0 ? w->cpu_overcommit : 1.0,
                          "sandboxMinCpuMilli", (json_int_t)w->min_cpu_milli, "sandboxMinMemoryMiB",
                          (json_int_t)w->min_memory_mib));
    for (struct cp_dp *d = cp.dps; d; d = d->next)
        json_array_append_new(
            ds, json_pack("{ss ss ss}", "name", d->name, "api", d->api, "proxy", d->proxy));
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        if (!f->deleted)
            json_array_append_new(fs, fn_json(f));
    json_t *st = json_pack("{so so so ss}", "workers", ws, "dataplanes", ds, "functions", fs,
                           "role", cp.leader ? "leader" : "follower");
    json_object_set_new(st, "leader", cp.leader_api ? json_string(cp.leader_api) : json_null());
    /* who answers: `up` and the tests check it is the process they started */
    json_object_set_new(st, "pid", json_integer((json_int_t)getpid()));
    if (cp.nreplicas) {
        json_t *rs = json_array();
        for (size_t i = 0; i < cp.nreplicas; i++)
            json_array_append_new(
                rs, json_pack("{si ss sb sb}", "id", (int)i + 1, "api", cp.replicas[i], "self",
                              i + 1 == cp.replica_id, "leader",
                              cp.leader_api && strcmp(cp.leader_api, cp.replicas[i]) == 0));
        json_object_set_new(st, "replicas", rs);
    }
    dg_http_respond_json(r, 200, st);
}

/* A replica that does not lead refuses with the leader's internal API address (workers and
 * data planes follow X-Dirigent-Leader; users get it in the text). */
struct leader_route {
    void (*fn)(struct dg_http_req *r, void *ud);
};

static void refuse(struct dg_http_req *r)
{
    if (cp.leader_api)
        dg_http_resp_header(r, "X-Dirigent-Leader", cp.leader_api);
    if (cp.taking_over)
        dg_http_respond_text(r, 503,
                             "this replica was just elected and is restoring its state from the "
                             "store: try again in a moment");
    else
        dg_http_respond_text(r, 503,
                             "this control plane replica does not lead; the leader's internal "
                             "API is %s",
                             cp.leader_api ? cp.leader_api : "not elected yet: try again");
}

static void leader_only(struct dg_http_req *r, void *ud)
{
    const struct leader_route *route = ud;
    if (cp.leader)
        route->fn(r, NULL);
    else
        refuse(r);
}

/* ---- a follower forwards the user API to the leader ------------------------------------- */

/* The user API (registrations, function CRUD) is served on the registration server and, for
 * forwarding, on the internal API too. A follower passes such a request to the leader's
 * internal API and relays the answer, so any replica (and HAProxy's registration frontend
 * spreading over all of them) takes registrations. A forwarded request is never forwarded
 * again: a replica that does not lead by the time it arrives refuses it. */
static struct {
    struct dg_http_pool *pool;
    char *addr; /* the leader the pool goes to */
} fwd;

struct fwd_req {
    struct dg_http_req *r; /* NULL once the client went away */
};

static void fwd_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                     const struct dg_err *err, void *ud)
{
    struct fwd_req *f = ud;
    if (f->r) {
        dg_http_req_on_abort(f->r, NULL, NULL);
        if (cp.leader_api)
            dg_http_resp_header(f->r, "X-Dirigent-Leader", cp.leader_api);
        if (!resp) {
            dg_http_respond_text(f->r, 503, "forwarding to the leader %s: %s: try again",
                                 fwd.addr ? fwd.addr : "?", err->msg);
        } else {
            const char *ct = "text/plain";
            char ctb[128];
            for (size_t i = 0; i < resp->nheaders; i++)
                if (dg_str_caseeq(resp->headers[i].name, "Content-Type")) {
                    snprintf(ctb, sizeof(ctb), "%.*s", (int)resp->headers[i].value.len,
                             resp->headers[i].value.ptr);
                    ct = ctb;
                }
            dg_http_respond(f->r, resp->status, ct, resp->body.ptr, resp->body.len);
        }
    }
    free(f);
}

static void fwd_abort(struct dg_http_req *r, void *ud)
{
    struct fwd_req *f = ud;
    f->r = NULL; /* the answer is dropped when it comes */
}

static void leader_or_forward(struct dg_http_req *r, void *ud)
{
    const struct leader_route *route = ud;
    if (cp.leader) {
        route->fn(r, NULL);
        return;
    }
    if (!cp.leader_api || cp.taking_over || dg_http_req_header(r, "X-Dirigent-Forwarded").ptr) {
        refuse(r);
        return;
    }
    if (!fwd.addr || strcmp(fwd.addr, cp.leader_api) != 0) {
        if (fwd.pool)
            dg_http_pool_close(fwd.pool);
        free(fwd.addr);
        fwd.addr = dg_xstrdup(cp.leader_api);
        struct dg_http_pool_opts o;
        dg_http_pool_opts_default(&o);
        o.connect_timeout_ms = 1000;
        o.request_timeout_ms = 30000;
        struct dg_err err = {0};
        fwd.pool = dg_http_pool_new_addr(cp.loop, fwd.addr, &o, &err);
        if (!fwd.pool) {
            dg_http_respond_text(r, 503, "forwarding to the leader: %s", err.msg);
            return;
        }
    }
    struct dg_http_header h[2];
    size_t n = 0;
    h[n++] = (struct dg_http_header){DG_STR("X-Dirigent-Forwarded"), DG_STR("1")};
    struct dg_str ct = dg_http_req_header(r, "Content-Type");
    if (ct.ptr)
        h[n++] = (struct dg_http_header){DG_STR("Content-Type"), ct};
    struct dg_str body = dg_http_req_body(r), url = dg_http_req_url(r);
    /* "POST /" is the registration server's alias of /registerService */
    char *path = route->fn == api_register ? dg_xstrdup("/registerService")
                                           : dg_xasprintf("%.*s", (int)url.len, url.ptr);
    struct fwd_req *f = dg_xcalloc(1, sizeof(*f));
    f->r = r;
    dg_http_req_on_abort(r, fwd_abort, f);
    static const struct dg_http_client_cbs cbs = {.on_done = fwd_done};
    dg_http_request(fwd.pool, dg_http_req_method(r), path, h, n, body.ptr, body.len, &cbs, f);
    free(path);
}

void cp_api_close(void)
{
    if (fwd.pool)
        dg_http_pool_close(fwd.pool);
    fwd.pool = NULL;
    free(fwd.addr);
    fwd.addr = NULL;
}

static void api_health(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "ok\n", 3);
}

void cp_api_mount(struct dg_http_server *internal, struct dg_http_server *reg)
{
    static const struct leader_route r_register = {api_register}, r_check = {api_check},
                                     r_list = {api_fn_list}, r_create = {api_create_json},
                                     r_get = {api_fn_get}, r_update = {api_fn_update},
                                     r_delete = {api_fn_delete}, r_worker = {api_worker},
                                     r_dp = {api_dataplane}, r_metrics = {api_metrics},
                                     r_exited = {api_sandbox_exited};
    dg_http_route(reg, "GET", "/health", api_health, NULL, 0);
    /* the user API: on the registration server, and on the internal API for forwarding */
    struct dg_http_server *user[2] = {reg, internal};
    for (int i = 0; i < 2; i++) {
        struct dg_http_server *s = user[i];
        dg_http_route(s, "POST", "/registerService", leader_or_forward, (void *)&r_register, 0);
        dg_http_route(s, "GET", "/check", leader_or_forward, (void *)&r_check, 0);
        dg_http_route(s, "GET", "/v1/functions", leader_or_forward, (void *)&r_list, 0);
        dg_http_route(s, "POST", "/v1/functions", leader_or_forward, (void *)&r_create, 0);
        dg_http_route(s, "GET", "/v1/functions/:name", leader_or_forward, (void *)&r_get, 0);
        dg_http_route(s, "PUT", "/v1/functions/:name", leader_or_forward, (void *)&r_update, 0);
        dg_http_route(s, "DELETE", "/v1/functions/:name", leader_or_forward, (void *)&r_delete, 0);
    }
    dg_http_route(reg, "POST", "/", leader_or_forward, (void *)&r_register, 0);
    dg_http_route(internal, "POST", "/v1/workers", leader_only, (void *)&r_worker, 0);
    dg_http_route(internal, "POST", "/v1/dataplanes", leader_only, (void *)&r_dp, 0);
    dg_http_route(internal, "POST", "/v1/metrics", leader_only, (void *)&r_metrics, 0);
    dg_http_route(internal, "POST", "/v1/sandboxes/exited", leader_only, (void *)&r_exited, 0);
    dg_http_route(internal, "GET", "/v1/status", api_status, NULL, 0);
    dg_http_route(reg, "GET", "/v1/status", api_status, NULL, 0);
}

/* ---- restore and reconstruction ---------------------------------------------------------- */

struct restore {
    unsigned functions, workers, dataplanes, skipped;
};

static void restore_fn(void *ud, const char *key, const char *value)
{
    struct restore *rs = ud;
    struct dg_err err = {0};
    json_t *j = NULL;
    struct dg_form form = {0};
    struct cp_fn_spec spec;
    if (dg_json_parse(value, strlen(value), &j, &err) < 0 ||
        cp_fn_form_from_json(j, &form, &err) < 0 || cp_fn_spec_from_form(&form, &spec, &err) < 0) {
        dg_log(DG_LOG_ERROR, "store", "function '%s' not restored: %s", key, err.msg);
        rs->skipped++;
    } else if (cp_fn_find(dg_str_c(spec.name))) {
        cp_fn_spec_free(&spec);
    } else {
        fn_install(&spec);
        rs->functions++;
    }
    dg_form_free(&form);
    json_decref(j);
}

static void restore_worker(void *ud, const char *key, const char *value)
{
    struct restore *rs = ud;
    restoring = true; /* read back: not written again */
    struct dg_err err = {0};
    json_t *j = NULL;
    const char *address;
    struct cp_worker *w;
    if (dg_json_parse(value, strlen(value), &j, &err) < 0 ||
        dg_json_get_string(j, "address", true, &address, &err) < 0 ||
        !(w = worker_upsert(key, address, &err))) {
        dg_log(DG_LOG_ERROR, "store", "worker '%s' not restored: %s", key, err.msg);
        rs->skipped++;
    } else {
        w->schedulable = false; /* until its heartbeat says it is there */
        w->need_list = true;    /* and which sandboxes it runs (answered "resync") */
        w->last_seen_ms = uv_now(cp.loop);
        rs->workers++;
    }
    restoring = false;
    json_decref(j);
}

static void restore_dp(void *ud, const char *key, const char *value)
{
    struct restore *rs = ud;
    restoring = true;
    struct dg_err err = {0};
    json_t *j = NULL;
    const char *api, *proxy;
    bool fresh;
    struct cp_dp *d;
    if (dg_json_parse(value, strlen(value), &j, &err) < 0 ||
        dg_json_get_string(j, "api", true, &api, &err) < 0 ||
        dg_json_get_string(j, "proxy", true, &proxy, &err) < 0 ||
        !(d = dp_upsert(key, api, proxy, &fresh, &err))) {
        dg_log(DG_LOG_ERROR, "store", "data plane '%s' not restored: %s", key, err.msg);
        rs->skipped++;
    } else {
        d->last_seen_ms = uv_now(cp.loop);
        rs->dataplanes++;
    }
    restoring = false;
    json_decref(j);
}

/* Reconstruction: every restored worker is asked for its sandboxes (adopted as ready); once
 * all answered, or after a deadline (an unreachable one never blocks it), every function's
 * whole list goes to every data plane. */
static struct {
    unsigned waiting;
    uint64_t t0_us;
    uv_timer_t deadline;
    bool done, timer_open;
} recon;

static void recon_finish(void)
{
    if (recon.done)
        return;
    recon.done = true;
    if (recon.timer_open)
        uv_timer_stop(&recon.deadline);
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        if (!f->deleted)
            cp_push_endpoints(f);
    double secs = (double)(dg_now_us() - recon.t0_us) / 1e6;
    cp.reconstruction_seconds = secs;
    dg_log(DG_LOG_INFO, "store", "reconstruction done in %.1f ms (%u workers did not answer)",
           secs * 1000, recon.waiting);
}

static void recon_listed(struct dg_http_creq *q, const struct dg_http_resp *resp,
                         const struct dg_err *err, void *ud)
{
    struct cp_worker *w = ud;
    json_t *j = NULL;
    struct dg_err perr = {0};
    if (resp && resp->status == 200 &&
        dg_json_parse(resp->body.ptr, resp->body.len, &j, &perr) == 0) {
        w->need_list = false;
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(j, "sandboxes"), i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            const char *fname = json_string_value(json_object_get(item, "function"));
            const char *ep = json_string_value(json_object_get(item, "endpoint"));
            const char *state = json_string_value(json_object_get(item, "state"));
            struct cp_fn *f;
            if (id && fname && ep && state && strcmp(state, "ready") == 0 &&
                (f = cp_fn_find(dg_str_c(fname))) && cp_sandbox_adopt(f, w, id, ep))
                dg_log(DG_LOG_INFO, "store", "fn=%s sandbox %s on %s rediscovered", fname, id,
                       w->name);
        }
    } else {
        dg_log(DG_LOG_WARN, "store", "worker %s: sandboxes not listed: %s", w->name,
               err    ? err->msg
               : resp ? "bad answer"
                      : "?");
    }
    json_decref(j);
    if (recon.waiting && --recon.waiting == 0)
        recon_finish();
}

static void recon_deadline(uv_timer_t *t)
{
    recon_finish();
}

/* What was read is in: log it, then ask the workers for their sandboxes (reconstruction). */
static void restore_done(const struct restore *rs)
{
    if (rs->functions || rs->workers || rs->dataplanes)
        dg_log(DG_LOG_INFO, "store",
               "restored %u functions, %u workers, %u data planes from %s (%u skipped)",
               rs->functions, rs->workers, rs->dataplanes, cp_store_backend(cp.store), rs->skipped);
    recon.done = false;
    recon.waiting = 0;
    static const struct dg_http_client_cbs cbs = {.on_done = recon_listed};
    for (struct cp_worker *w = cp.workers; w; w = w->next) {
        recon.waiting++;
        dg_http_request(w->pool, "GET", "/v1/sandboxes", NULL, 0, NULL, 0, &cbs, w);
    }
    if (recon.waiting == 0) {
        recon_finish();
        return;
    }
    if (!recon.timer_open) {
        uv_timer_init(cp.loop, &recon.deadline);
        uv_unref((uv_handle_t *)&recon.deadline);
        recon.timer_open = true;
    }
    uv_timer_start(&recon.deadline, recon_deadline, 3000, 0);
}

int cp_restore(struct dg_err *err)
{
    struct restore rs = {0};
    recon.t0_us = dg_now_us();
    int rc = cp_store_scan(cp.store, "function", restore_fn, &rs, err);
    if (rc == 0)
        rc = cp_store_scan(cp.store, "worker", restore_worker, &rs, err);
    if (rc == 0)
        rc = cp_store_scan(cp.store, "dataplane", restore_dp, &rs, err);
    if (rc < 0)
        return rc;
    restore_done(&rs);
    return 0;
}

/* The same, one kind after the other on the loop (a replica taking over). */
static struct {
    struct restore rs;
    unsigned step;
    void (*done)(void *ud, const struct dg_err *err);
    void *ud;
} arestore;

static void arestore_step(void *ud, const struct dg_err *err)
{
    static const struct {
        const char *kind;
        void (*each)(void *ud, const char *key, const char *value);
    } steps[] = {{"function", restore_fn}, {"worker", restore_worker}, {"dataplane", restore_dp}};
    if (err || arestore.step == DG_ARRAY_LEN(steps)) {
        if (!err)
            restore_done(&arestore.rs);
        arestore.done(arestore.ud, err);
        return;
    }
    unsigned i = arestore.step++;
    cp_store_scan_async(cp.store, steps[i].kind, steps[i].each, arestore_step, &arestore.rs);
}

void cp_restore_async(void (*done)(void *ud, const struct dg_err *err), void *ud)
{
    memset(&arestore.rs, 0, sizeof(arestore.rs));
    arestore.step = 0;
    arestore.done = done;
    arestore.ud = ud;
    recon.t0_us = dg_now_us();
    arestore_step(NULL, NULL);
}

void cp_restore_close(void)
{
    if (recon.timer_open) {
        recon.timer_open = false;
        uv_close((uv_handle_t *)&recon.deadline, NULL);
    }
}
