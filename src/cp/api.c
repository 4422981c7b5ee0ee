/*
 * api.c: the control plane's two HTTP servers.
 *
 * Registration server (registrationServer, 9091), for users and InVitro:
 *   POST / or /registerService   the original's form (function.h) -> 200 with the data-plane
 *                                proxy addresses joined by ';' (or loadBalancerAddress)
 *   GET  /check?name=NAME        200 registered, 404 not
 *   GET  /v1/functions[/NAME]    list / one: name, image, state, ready, desired, ...,
 *                                error (the last create failure, or null)
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

#include "cp.h"
#include "dirigent/form.h"
#include "dirigent/json.h"
#include "dirigent/log.h"

struct cp_fn *cp_fn_find(struct dg_str name)
{
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        if (!f->deleted && dg_str_eq(name, f->spec.name))
            return f;
    return NULL;
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
 * clock, Unix ms) and "error_age_ms" (by the CP's monotonic clock: no skew for the CLI). */
static json_t *fn_json(const struct cp_fn *f)
{
    json_t *j = json_pack("{ss ss si ss si si si si si sI sI sb si}", "name", f->spec.name, "image",
                          f->spec.image, "port", f->spec.port, "state",
                          cp_fn_state(&f->error, f->ready, f->creating, f->desired), "ready",
                          (int)f->ready, "desired", f->desired, "creating", (int)f->creating,
                          "scaling_lower_bound", f->spec.lower_bound, "scaling_upper_bound",
                          f->spec.upper_bound, "requested_cpu", (json_int_t)f->spec.cpu_milli,
                          "requested_memory", (json_int_t)f->spec.memory_mib, "cold_start_sweep",
                          f->spec.cold_start_sweep, "container_concurrency", f->spec.concurrency);
    if (!f->error.set) {
        json_object_set_new(j, "error", json_null());
        return j;
    }
    json_object_set_new(j, "error", json_string(f->error.reason));
    json_object_set_new(j, "error_worker",
                        f->error.worker[0] ? json_string(f->error.worker) : json_null());
    json_object_set_new(j, "error_at_ms", json_integer((json_int_t)f->error.wall_ms));
    json_object_set_new(j, "error_age_ms",
                        json_integer((json_int_t)cp_fn_error_age_ms(&f->error, uv_now(cp.loop))));
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

/* Register from a parsed form; answers the request. */
static void register_form(struct dg_http_req *r, const struct dg_form *form)
{
    struct cp_fn_spec spec;
    struct dg_err err = {0};
    if (cp_fn_spec_from_form(form, &spec, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    for (struct cp_fn *old = cp.fns; old; old = old->next) {
        if (old->deleted && strcmp(old->spec.name, spec.name) == 0) {
            dg_http_respond_text(r, 409,
                                 "registration: function '%s' is still being deleted (its "
                                 "sandboxes drain): try again in a moment",
                                 spec.name);
            cp_fn_spec_free(&spec);
            return;
        }
    }
    if (cp_fn_find(dg_str_c(spec.name))) {
        dg_http_respond_text(r, 409, "registration: function '%s' is already registered",
                             spec.name);
        cp_fn_spec_free(&spec);
        return;
    }
    struct cp_fn *f = dg_xcalloc(1, sizeof(*f));
    f->spec = spec;
    cp_as_config_default(&f->as, spec.cold_start_sweep);
    if (cp.knative)
        cp_as_config_knative(&f->as);
    f->as.container_concurrency = spec.concurrency;
    f->as.lower_bound = spec.lower_bound;
    f->as.upper_bound = spec.upper_bound;
    cp_as_state_init(&f->ast, &f->as);
    f->next = cp.fns;
    cp.fns = f;
    dg_counter_add(cp.m_registrations, 1);
    cp_push_endpoints(f); /* the DPs add it with its (empty) list, batched */
    dg_log(DG_LOG_INFO, "api", "registered fn=%s image=%s bounds=%d..%d", spec.name, spec.image,
           spec.lower_bound, spec.upper_bound);
    if (spec.lower_bound > 0) { /* its sandboxes come at registration */
        f->desired = spec.lower_bound;
        cp_reconcile(f);
    }
    registration_reply(r);
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
    struct dg_form form = {0};
    size_t cap = 0;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        json_t *items = json_is_array(v) ? v : NULL;
        size_t n = items ? json_array_size(items) : 1;
        for (size_t i = 0; i < n; i++) {
            json_t *x = items ? json_array_get(items, i) : v;
            char *s = json_is_string(x)    ? dg_xstrdup(json_string_value(x))
                      : json_is_boolean(x) ? dg_xstrdup(json_is_true(x) ? "true" : "false")
                                           : dg_json_dumps(x);
            if (form.n == cap) {
                cap = cap ? cap * 2 : 16;
                form.pairs = dg_xrealloc(form.pairs, cap * sizeof(*form.pairs));
            }
            form.pairs[form.n++] = (struct dg_form_pair){dg_xstrdup(key), s};
        }
    }
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
    f->spec.lower_bound = f->as.lower_bound = (int)lo;
    f->spec.upper_bound = f->as.upper_bound = (int)hi;
    if (f->desired < lo || f->desired > hi) {
        f->desired = f->desired < lo ? (int)lo : (int)hi;
        cp_reconcile(f);
    }
    dg_http_respond_json(r, 200, fn_json(f));
}

static void api_fn_delete(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (!f)
        return;
    dg_http_respond_text(r, 200, "function '%s' deleted", f->spec.name);
    cp_fn_delete(f);
}

/* ---- workers, data planes, metrics ------------------------------------------------------ */

static struct dg_http_pool *pool_to(const char *address, unsigned max_conns, struct dg_err *err)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = max_conns;
    o.request_timeout_ms = 60 * 1000; /* as the original: 60 s per worker/DP call */
    return dg_http_pool_new_addr(cp.loop, address, &o, err);
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
    struct cp_worker **pw = &cp.workers;
    while (*pw && strcmp((*pw)->name, name) < 0) /* sorted by name: round-robin is stable */
        pw = &(*pw)->next;
    struct cp_worker *w = *pw && strcmp((*pw)->name, name) == 0 ? *pw : NULL;
    struct dg_http_pool *pool = NULL;
    if (!w || strcmp(w->address, address) != 0) {
        /* a new worker, or the same name at a new address (a new daemon): the pool first, so
         * a bad address changes nothing */
        if (!(pool = pool_to(address, 256, &err))) {
            json_decref(j);
            dg_http_respond_text(r, 400, "worker: %s", err.msg);
            return;
        }
    }
    if (w && pool) {
        dg_http_pool_close(w->pool);
        w->pool = pool;
        free(w->address);
        w->address = dg_xstrdup(address);
    } else if (!w) {
        w = dg_xcalloc(1, sizeof(*w));
        w->name = dg_xstrdup(name);
        w->address = dg_xstrdup(address);
        w->pool = pool;
        w->next = *pw;
        *pw = w;
        dg_log(DG_LOG_INFO, "registry", "worker %s at %s registered", name, address);
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
    /* sandboxes it runs that this CP does not know (this CP restarted): adopt them */
    json_t *sbs = json_object_get(j, "sandboxes"), *item;
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
    json_t *cpu = json_object_get(j, "cpuMilli"), *mem = json_object_get(j, "memoryMiB");
    w->cpu_milli = json_is_integer(cpu) ? (int64_t)json_integer_value(cpu) : 0;
    w->memory_mib = json_is_integer(mem) ? (int64_t)json_integer_value(mem) : 0;
    cp_worker_metrics(w);
    json_decref(j);
    if (!w->schedulable)
        dg_log(DG_LOG_INFO, "registry", "worker %s schedulable", w->name);
    w->schedulable = true;
    w->last_seen_ms = uv_now(cp.loop);
    dg_http_respond_text(r, 200, "ok");
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
    struct cp_dp *d = cp.dps;
    while (d && strcmp(d->name, name) != 0)
        d = d->next;
    bool fresh = !d || strcmp(d->api, api) != 0;
    if (fresh) {
        /* the pools first, so a bad address changes nothing */
        struct dg_http_pool *pool = pool_to(api, 1, &err); /* one connection: ordered pushes */
        struct dg_http_pool *drain_pool = pool ? pool_to(api, 64, &err) : NULL;
        if (!pool || !drain_pool) {
            if (pool)
                dg_http_pool_close(pool);
            json_decref(j);
            dg_http_respond_text(r, 400, "dataplane: %s", err.msg);
            return;
        }
        if (d) { /* restarted elsewhere: start over */
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

/* A worker saw a sandbox exit that nobody asked for: forget it, push the list; the next
 * request (a metric) or tick replaces it. */
static void api_sandbox_exited(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    const char *fname, *id;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_string(j, "function", true, &fname, &err) < 0 ||
        dg_json_get_string(j, "id", true, &id, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "sandbox exit: %s", err.msg);
        return;
    }
    struct cp_fn *f = cp_fn_find(dg_str_c(fname));
    if (f && cp_sandbox_exited(f, id))
        dg_log(DG_LOG_WARN, "registry", "fn=%s sandbox %s exited on its worker: replacing", fname,
               id);
    json_decref(j);
    dg_http_respond_text(r, 200, "ok");
}

static void api_status(struct dg_http_req *r, void *ud)
{
    json_t *ws = json_array(), *ds = json_array(), *fs = json_array();
    for (struct cp_worker *w = cp.workers; w; w = w->next)
        json_array_append_new(ws, json_pack("{ss ss sb si sI sI sI sI}", "name", w->name, "address",
                                            w->address, "schedulable", w->schedulable, "sandboxes",
                                            (int)w->sandboxes, "cpuMilli", (json_int_t)w->cpu_milli,
                                            "memoryMiB", (json_int_t)w->memory_mib, "cpuUsedMilli",
                                            (json_int_t)w->cpu_used, "memoryUsedMiB",
                                            (json_int_t)w->mem_used));
    for (struct cp_dp *d = cp.dps; d; d = d->next)
        json_array_append_new(
            ds, json_pack("{ss ss ss}", "name", d->name, "api", d->api, "proxy", d->proxy));
    for (struct cp_fn *f = cp.fns; f; f = f->next)
        if (!f->deleted)
            json_array_append_new(fs, fn_json(f));
    dg_http_respond_json(r, 200,
                         json_pack("{so so so}", "workers", ws, "dataplanes", ds, "functions", fs));
}

static void api_health(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "ok\n", 3);
}

void cp_api_mount(struct dg_http_server *internal, struct dg_http_server *reg)
{
    dg_http_route(reg, "GET", "/health", api_health, NULL, 0);
    dg_http_route(reg, "POST", "/", api_register, NULL, 0);
    dg_http_route(reg, "POST", "/registerService", api_register, NULL, 0);
    dg_http_route(reg, "GET", "/check", api_check, NULL, 0);
    dg_http_route(reg, "GET", "/v1/functions", api_fn_list, NULL, 0);
    dg_http_route(reg, "POST", "/v1/functions", api_create_json, NULL, 0);
    dg_http_route(reg, "GET", "/v1/functions/:name", api_fn_get, NULL, 0);
    dg_http_route(reg, "PUT", "/v1/functions/:name", api_fn_update, NULL, 0);
    dg_http_route(reg, "DELETE", "/v1/functions/:name", api_fn_delete, NULL, 0);
    dg_http_route(internal, "POST", "/v1/workers", api_worker, NULL, 0);
    dg_http_route(internal, "POST", "/v1/dataplanes", api_dataplane, NULL, 0);
    dg_http_route(internal, "POST", "/v1/metrics", api_metrics, NULL, 0);
    dg_http_route(internal, "POST", "/v1/sandboxes/exited", api_sandbox_exited, NULL, 0);
    dg_http_route(internal, "GET", "/v1/status", api_status, NULL, 0);
    dg_http_route(reg, "GET", "/v1/status", api_status, NULL, 0);
}
