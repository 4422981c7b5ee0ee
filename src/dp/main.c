/*
 * dirigent-dp: the data plane. Invocations on portProxy (8080, proxy.c); the
 * control plane's API on portGRPC (8081; HTTP/JSON, the key keeps the
 * original's name):
 *
 *   PUT    /v1/functions/NAME            {"concurrency":1}  add or update a function
 *   DELETE /v1/functions/NAME            queued requests get 503; running ones finish
 *   PUT    /v1/functions/NAME/endpoints  {"endpoints":[{"id","address"}],"error":"why"}  the
 *                                        whole list (replace, never append); "error" (only
 *                                        with an empty list): its sandboxes cannot start,
 *                                        queued requests get 503 with the reason now
 *   PUT    /v1/endpoints                 {"functions":[{"name","concurrency","endpoints",
 *                                        "error","exited"}]}  many at once (what the CP
 *                                        sends); "exited": [{"id","reason"}] sandboxes that
 *                                        died by themselves: why, for their callers' 502
 *   POST   /v1/functions/NAME/drain      {"ids":[...]}  take sandboxes out; answers when
 *                                        their requests in flight have finished
 *   GET    /v1/functions                 functions, endpoints, queue depths, errors
 *   GET    /health, /metrics
 *
 * Registration with the control plane, heartbeats and metric pushes come with
 * the control plane daemon (cluster-core issue).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/config.h"
#include "dirigent/daemon.h"
#include "dirigent/heartbeat.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"
#include "dp.h"

struct dp_config {
    char *host;
    int64_t port_proxy, port_api;
    char *lb_policy;
    char *log_level;
    char *trace_folder;
    int64_t queue_timeout_ms;
    int64_t heartbeat_ms;
    char *name;
    struct dg_strlist cp_addresses;
    struct dg_http_conf http;
};

static const struct dg_conf_field dp_fields[] = {
    {.key = "dataPlaneIp",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, host),
     .def = "127.0.0.1",
     .help = "address both ports listen on"},
    {.key = "portProxy",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, port_proxy),
     .def = "8080",
     .min = 0,
     .max = 65535,
     .help = "invocations (0: ephemeral, printed)"},
    {.key = "portGRPC",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, port_api),
     .def = "8081",
     .min = 0,
     .max = 65535,
     .help = "the control plane's API (HTTP/JSON; the original's key name)"},
    {.key = "loadBalancingPolicy",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct dp_config, lb_policy),
     .def = "random",
     .choices = dp_lb_policy_names,
     .help = "how an endpoint is chosen"},
    {.key = "coldStartTimeout",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct dp_config, queue_timeout_ms),
     .def = "60s",
     .min = 1,
     .max = 3600000,
     .help = "a request waiting for a sandbox longer gets 503"},
    {.key = "controlPlaneAddress",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct dp_config, cp_addresses),
     .def = "127.0.0.1:9090",
     .help = "control plane replicas, IP:PORT of each internal API (the leader is found; "
             "empty: run standalone)"},
    {.key = "heartbeatInterval",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct dp_config, heartbeat_ms),
     .def = "5s",
     .min = 100,
     .max = 600000,
     .help = "registration and heartbeat period"},
    {.key = "name",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, name),
     .def = "",
     .help = "identity at the CP (empty: HOSTNAME-PORTPROXY)"},
    {.key = "traceOutputFolder",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, trace_folder),
     .def = "data",
     .help = "where proxy_trace.csv is written (empty: no trace)"},
    {.key = "logLevel",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct dp_config, log_level),
     .def = "info",
     .choices = dg_log_level_choices,
     .help = "log verbosity"},
    DG_CONF_HTTP_FIELDS(struct dp_config, http),
};

static const struct dg_conf_schema dp_schema = {
    .prog = "dirigent-dp",
    .summary = "data plane: proxies invocations to sandboxes, queues cold starts",
    .fields = dp_fields,
    .nfields = DG_ARRAY_LEN(dp_fields),
};

struct dp dp;

static struct {
    struct dp_config cfg;
    struct dg_daemon daemon;
    struct dg_http_server *ingress, *api;
    unsigned open_servers;
} g;

struct dp_drain {
    struct dg_http_req *req;      /* the drain request to answer, or */
    struct dg_batch_reply *batch; /* the batch it came in (NULL: nobody waits any more) */
    size_t batch_i;
    struct dg_strlist ids;
    struct dp_drain *next;
};

/* ---- endpoints -------------------------------------------------------------------------- */

static bool id_in(const struct dg_strlist *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], id) == 0)
            return true;
    return false;
}

/* Endpoints at one address share a pool, so its connections outlive a sandbox: emulated
 * sandboxes all answer at the worker's shared server, and a runtime may give a new sandbox
 * the address of an old one. A connect per cold start was a third of the DP's time. */
struct shared_pool {
    struct dg_http_pool *pool;
    char *address;
    unsigned refs;
};

static struct dg_http_pool *pool_ref(const char *address, struct dg_err *err)
{
    struct shared_pool *sp = dg_strmap_get(&dp.pools, dg_str_c(address));
    if (!sp) {
        struct dg_http_pool *p = dg_http_pool_new_addr(dp.loop, address, &dp.pool_opts, err);
        if (!p)
            return NULL;
        sp = dg_xcalloc(1, sizeof(*sp));
        sp->pool = p;
        sp->address = dg_xstrdup(address);
        dg_strmap_put(&dp.pools, dg_str_c(sp->address), sp);
    }
    sp->refs++;
    return sp->pool;
}

static void pool_unref(const char *address)
{
    struct shared_pool *sp = dg_strmap_get(&dp.pools, dg_str_c(address));
    if (!sp || --sp->refs > 0)
        return;
    dg_strmap_del(&dp.pools, dg_str_c(sp->address));
    dg_http_pool_close(sp->pool);
    free(sp->address);
    free(sp);
}

static void endpoint_free(struct dp_endpoint *e)
{
    pool_unref(e->address);
    free(e->exit_reason);
    free(e->id);
    free(e->address);
    free(e);
}

/* Answer the drains none of whose sandboxes has requests in flight any more. */
static void drains_check(struct dp_function *f)
{
    for (struct dp_drain **pd = &f->drains; *pd;) {
        struct dp_drain *d = *pd;
        bool busy = false;
        for (struct dp_endpoint *e = f->removed; e && !busy; e = e->next_removed)
            busy = id_in(&d->ids, e->id);
        if (busy) {
            pd = &d->next;
            continue;
        }
        *pd = d->next;
        char msg[300];
        int n = snprintf(msg, sizeof(msg), "drained %zu sandbox(es) of '%s'", d->ids.n, f->name);
        if (d->req)
            dg_http_respond(d->req, 200, "text/plain", msg,
                            (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        else if (d->batch)
            dg_batch_reply_item(d->batch, d->batch_i, 200, msg,
                                (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        dg_strlist_free(&d->ids);
        free(d);
    }
}

void dp_endpoint_release(struct dp_endpoint *e)
{
    e->lb.in_flight--;
    if (!e->removed || e->lb.in_flight > 0)
        return;
    struct dp_function *f = e->fn;
    for (struct dp_endpoint **pe = &f->removed; *pe; pe = &(*pe)->next_removed) {
        if (*pe == e) {
            *pe = e->next_removed;
            break;
        }
    }
    endpoint_free(e);
    drains_check(f);
}

/* Take endpoint i out of the list; it is freed when its last request ends. */
static void endpoint_remove(struct dp_function *f, size_t i)
{
    struct dp_endpoint *e = f->eps[i];
    memmove(&f->eps[i], &f->eps[i + 1], (f->neps - i - 1) * sizeof(*f->eps));
    f->neps--;
    if (e->lb.in_flight == 0) {
        endpoint_free(e);
        return;
    }
    e->removed = true;
    e->lb.draining = true;
    e->next_removed = f->removed;
    f->removed = e;
}

/* ---- API -------------------------------------------------------------------------------- */

static struct dp_function *fn_param(struct dg_http_req *r)
{
    struct dp_function *f = dp_function_find(dg_http_req_param(r, "name"));
    if (!f) {
        struct dg_str n = dg_http_req_param(r, "name");
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
    }
    return f;
}

static int parse_body(struct dg_http_req *r, json_t **out)
{
    struct dg_str b = dg_http_req_body(r);
    struct dg_err err = {0};
    if (dg_json_parse(b.len ? b.ptr : "{}", b.len ? b.len : 2, out, &err) < 0) {
        dg_http_respond_text(r, 400, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* The function called `name`, created when missing (*created says which). */
static struct dp_function *fn_get_or_create(struct dg_str name, bool *created)
{
    struct dp_function *f = dp_function_find(name);
    *created = !f;
    if (f)
        return f;
    f = dg_xcalloc(1, sizeof(*f));
    f->name = dg_str_dup(name);
    f->concurrency = 1;
    f->lb.rng = (uint64_t)(uintptr_t)f ^ dg_now_us();
    f->m_requests = dg_metric_get1(dp.f_requests, f->name);
    f->m_cold = dg_metric_get1(dp.f_cold, f->name);
    f->m_queue = dg_metric_get1(dp.f_queue, f->name);
    f->m_latency = dg_metric_get1(dp.f_latency, f->name);
    f->next = dp.fns;
    dp.fns = f;
    dg_strmap_put(&dp.fn_index, dg_str_c(f->name), f);
    return f;
}

static void api_put_function(struct dg_http_req *r, void *ud)
{
    struct dg_str name = dg_http_req_param(r, "name");
    json_t *j;
    if (parse_body(r, &j) < 0)
        return;
    struct dg_err err = {0};
    int64_t cc = 1;
    int rc = dg_json_get_int(j, "concurrency", false, 0, 100000, &cc, &err);
    json_decref(j);
    if (rc < 0) {
        dg_http_respond_text(r, 400, "function: %s", err.msg);
        return;
    }
    bool created;
    struct dp_function *f = fn_get_or_create(name, &created);
    f->concurrency = (uint32_t)cc;
    dg_http_respond_text(r, created ? 201 : 200, "function '%s' %s", f->name,
                         created ? "added" : "updated");
    dp_dispatch(f); /* more slots per sandbox may free queued requests */
}

static void api_delete_function(struct dg_http_req *r, void *ud)
{
    struct dp_function *f = fn_param(r);
    if (!f)
        return;
    /* requests whose sandbox broke hold no sandbox, only the wait for why (at most
     * DP_EXIT_WAIT_MS): they get their 502 now, else the CP's DELETE after the drain would
     * get 409 and the function stay here */
    dp_exit_waits_answer(f);
    if (f->running > f->queued) {
        dg_http_respond_text(r, 409,
                             "function '%s' has %u request(s) running: drain its sandboxes first",
                             f->name, f->running - f->queued);
        return;
    }
    dp_function_free(f); /* queued requests: 503 */
    dg_strmap_del(&dp.fn_index, dg_str_c(f->name));
    for (struct dp_function **pf = &dp.fns; *pf; pf = &(*pf)->next) {
        if (*pf == f) {
            *pf = f->next;
            break;
        }
    }
    for (size_t i = 0; i < f->neps; i++)
        endpoint_free(f->eps[i]);
    free(f->eps);
    dg_metric_remove(dp.f_requests, (const char *const[]){f->name});
    dg_metric_remove(dp.f_cold, (const char *const[]){f->name});
    dg_metric_remove(dp.f_queue, (const char *const[]){f->name});
    dg_metric_remove(dp.f_latency, (const char *const[]){f->name});
    dg_http_respond_text(r, 200, "function '%s' removed", f->name);
    free(f->name);
    free(f);
}

/* Replace f's endpoint list with `list` (a JSON array of {"id","address"}): validate all
 * first (nothing changes on error), then drop what is not in it and add what is new. */
static int apply_endpoints(struct dp_function *f, json_t *list, struct dg_err *err)
{
    if (!json_is_array(list))
        return dg_err_set(err, DG_E_INVAL, "field 'endpoints': expected an array");
    size_t n = json_array_size(list);
    struct dg_strlist ids = {0}, addrs = {0};
    for (size_t i = 0; i < n; i++) {
        const char *id, *addr;
        json_t *item = json_array_get(list, i);
        if (dg_json_get_string(item, "id", true, &id, err) < 0 ||
            dg_json_get_string(item, "address", true, &addr, err) < 0) {
            dg_err_wrap(err, "endpoints: item %zu", i);
            goto bad;
        }
        const char *colon = strrchr(addr, ':');
        int64_t port;
        if (!colon || !dg_str_to_i64(dg_str_c(colon + 1), &port) || port < 1 || port > 65535) {
            dg_err_set(err, DG_E_INVAL,
                       "endpoints: item %zu: field 'address': expected IP:PORT, got '%.64s'", i,
                       addr);
            goto bad;
        }
        dg_strlist_push(&ids, dg_xstrdup(id));
        dg_strlist_push(&addrs, dg_xstrdup(addr));
    }
    for (size_t i = f->neps; i-- > 0;)
        if (!id_in(&ids, f->eps[i]->id))
            endpoint_remove(f, i);
    for (size_t i = 0; i < ids.n; i++) {
        bool have = false;
        for (size_t k = 0; k < f->neps && !have; k++)
            have = strcmp(f->eps[k]->id, ids.v[i]) == 0;
        if (have)
            continue;
        struct dg_err perr = {0};
        struct dg_http_pool *pool = pool_ref(addrs.v[i], &perr);
        if (!pool) {
            dg_log(DG_LOG_WARN, "api", "fn=%s endpoint %s: %s", f->name, addrs.v[i], perr.msg);
            continue;
        }
        struct dp_endpoint *e = dg_xcalloc(1, sizeof(*e));
        e->id = dg_xstrdup(ids.v[i]);
        e->address = dg_xstrdup(addrs.v[i]);
        e->pool = pool;
        e->fn = f;
        f->eps = dg_xrealloc(f->eps, (f->neps + 1) * sizeof(*f->eps));
        f->eps[f->neps++] = e;
    }
    dg_strlist_free(&ids);
    dg_strlist_free(&addrs);
    dp_dispatch(f); /* a cold start ends here */
    drains_check(f);
    return 0;
bad:
    dg_strlist_free(&ids);
    dg_strlist_free(&addrs);
    return DG_E_INVAL;
}

/* One function's update from the CP: its whole endpoint list, "exited" (the sandboxes that
 * died by themselves since the last update, with why: dp_endpoint_exited) and, when its last
 * create failed and it has no sandbox, "error" (a string; absent or null: none). With
 * endpoints the error is
 * cleared; an empty list with an error answers the queued requests with it at once (the CP
 * sends it on every failure: requests queued since the last one wait too); an empty list
 * without one keeps the last error for GET /v1/functions. */
static int apply_update(struct dp_function *f, json_t *item, struct dg_err *err)
{
    json_t *je = json_object_get(item, "error"), *jx = json_object_get(item, "exited"), *x;
    if (je && !json_is_string(je) && !json_is_null(je))
        return dg_err_set(err, DG_E_INVAL, "field 'error': expected a string or null");
    if (jx && !json_is_array(jx) && !json_is_null(jx))
        return dg_err_set(err, DG_E_INVAL, "field 'exited': expected an array of {id, reason}");
    size_t i;
    json_array_foreach(jx, i, x)
    {
        const char *id, *why;
        if (dg_json_get_string(x, "id", true, &id, err) < 0 ||
            dg_json_get_string(x, "reason", true, &why, err) < 0)
            return dg_err_wrap(err, "exited: item %zu", i);
    }
    if (apply_endpoints(f, json_object_get(item, "endpoints"), err) < 0)
        return DG_E_INVAL;
    json_array_foreach(jx, i, x) /* their callers' 502 says why they went */
    {
        dp_endpoint_exited(f, json_string_value(json_object_get(x, "id")),
                           json_string_value(json_object_get(x, "reason")));
    }
    const char *reason = json_is_string(je) ? json_string_value(je) : NULL;
    if (f->neps > 0) {
        free(f->error);
        f->error = NULL;
    } else if (reason && reason[0]) {
        free(f->error);
        f->error = dg_xstrdup(reason);
        dp_fail_queued(f);
    }
    return 0;
}

static void api_put_endpoints(struct dg_http_req *r, void *ud)
{
    struct dp_function *f = fn_param(r);
    json_t *j;
    if (!f || parse_body(r, &j) < 0)
        return;
    struct dg_err err = {0};
    int rc = apply_update(f, j, &err);
    json_decref(j);
    if (rc < 0)
        dg_http_respond_text(r, 400, "%s", err.msg);
    else
        dg_http_respond_text(r, 200, "function '%s': %zu endpoint(s)", f->name, f->neps);
}

/* PUT /v1/endpoints {"functions":[{"name","concurrency","endpoints":[...],"error"}]}: many
 * functions' whole lists in one call (the CP coalesces the changes of one loop turn); a
 * function not known yet is added. Each item as apply_update. */
static void api_put_endpoints_bulk(struct dg_http_req *r, void *ud)
{
    json_t *j;
    if (parse_body(r, &j) < 0)
        return;
    json_t *fns = json_object_get(j, "functions"), *item;
    struct dg_err err = {0};
    size_t i, applied = 0;
    if (!json_is_array(fns)) {
        json_decref(j);
        dg_http_respond_text(r, 400, "endpoints: field 'functions': expected an array");
        return;
    }
    json_array_foreach(fns, i, item)
    {
        const char *name;
        int64_t cc = 1;
        if (dg_json_get_string(item, "name", true, &name, &err) < 0 ||
            dg_json_get_int(item, "concurrency", false, 0, 100000, &cc, &err) < 0) {
            dg_log(DG_LOG_WARN, "api", "endpoints: item %zu: %s", i, err.msg);
            continue;
        }
        bool created;
        struct dp_function *f = fn_get_or_create(dg_str_c(name), &created);
        f->concurrency = (uint32_t)cc;
        if (apply_update(f, item, &err) < 0)
            dg_log(DG_LOG_WARN, "api", "fn=%s: %s", name, err.msg);
        else
            applied++;
    }
    json_decref(j);
    dg_http_respond_text(r, 200, "%zu function(s) updated", applied);
}

static void drain_aborted(struct dg_http_req *r, void *ud)
{
    struct dp_drain *d = ud;
    d->req = NULL;
}

static void api_drain(struct dg_http_req *r, void *ud)
{
    struct dp_function *f = fn_param(r);
    json_t *j;
    if (!f || parse_body(r, &j) < 0)
        return;
    static const struct dg_json_field fields[] = {
        {"ids", DG_JSON_STRLIST, true, offsetof(struct dp_drain, ids), 0, 0}};
    struct dp_drain *d = dg_xcalloc(1, sizeof(*d));
    struct dg_err err = {0};
    int rc = dg_json_unpack(j, fields, 1, d, 0, &err);
    json_decref(j);
    if (rc < 0) {
        free(d);
        dg_http_respond_text(r, 400, "drain: %s", err.msg);
        return;
    }
    for (size_t i = f->neps; i-- > 0;)
        if (id_in(&d->ids, f->eps[i]->id))
            endpoint_remove(f, i);
    d->req = r;
    dg_http_req_on_abort(r, drain_aborted, d);
    d->next = f->drains;
    f->drains = d;
    drains_check(f);
}

static void drain_item_aborted(void *ud)
{
    struct dp_drain *d = ud;
    if (d)
        d->batch = NULL;
}

/* POST /v1/drain {"items":[{"name","ids":[...]}, ...]}: the drains of many functions (the CP
 * batches one loop turn's); each item is answered once its sandboxes are idle. */
static void api_drain_batch(struct dg_http_req *r, void *ud)
{
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "drain: %s", err.msg);
        return;
    }
    static const struct dg_json_field fields[] = {
        {"ids", DG_JSON_STRLIST, true, offsetof(struct dp_drain, ids), 0, 0}};
    size_t i, n = json_array_size(items);
    struct dg_batch_reply *b = dg_batch_reply_start(r, n, drain_item_aborted);
    json_array_foreach(items, i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        struct dp_function *f = name ? dp_function_find(dg_str_c(name)) : NULL;
        struct dp_drain *d = dg_xcalloc(1, sizeof(*d));
        struct dg_err e = {0};
        if (!f || dg_json_unpack(item, fields, 1, d, DG_JSON_ALLOW_UNKNOWN, &e) < 0) {
            char msg[300];
            int len = f ? snprintf(msg, sizeof(msg), "drain: %s", e.msg)
                        : snprintf(msg, sizeof(msg), "function '%s' is not registered",
                                   name ? name : "(no name)");
            dg_strlist_free(&d->ids);
            free(d);
            dg_batch_reply_item(b, i, f ? 400 : 404, msg,
                                (size_t)DG_MIN(len, (int)sizeof(msg) - 1));
            continue;
        }
        for (size_t k = f->neps; k-- > 0;)
            if (id_in(&d->ids, f->eps[k]->id))
                endpoint_remove(f, k);
        d->batch = b;
        d->batch_i = i;
        dg_batch_reply_set_ud(b, i, d);
        d->next = f->drains;
        f->drains = d;
        drains_check(f); /* may answer it now */
    }
    json_decref(root);
}

static void api_list(struct dg_http_req *r, void *ud)
{
    json_t *fns = json_array();
    for (struct dp_function *f = dp.fns; f; f = f->next) {
        json_t *eps = json_array();
        for (size_t i = 0; i < f->neps; i++)
            json_array_append_new(eps, json_pack("{ss ss si}", "id", f->eps[i]->id, "address",
                                                 f->eps[i]->address, "inFlight",
                                                 (int)f->eps[i]->lb.in_flight));
        json_array_append_new(fns, json_pack("{ss si si si so so}", "name", f->name, "concurrency",
                                             (int)f->concurrency, "queued", (int)f->queued,
                                             "inFlight", (int)f->running, "endpoints", eps, "error",
                                             f->error ? json_string(f->error) : json_null()));
    }
    dg_http_respond_json(r, 200, fns);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static uint64_t next_report;

static void on_cron(uv_timer_t *t)
{
    uint64_t now = uv_now(dp.loop);
    dp_expire(now);
    if (now >= next_report) { /* as the original: every 2 s while there is traffic */
        next_report = now + 2000;
        dp_report();
    }
}

static json_t *registration_body(void *ud)
{
    char api[96], proxy[96];
    snprintf(api, sizeof(api), "%s:%d", g.cfg.host, dg_http_server_port(g.api));
    snprintf(proxy, sizeof(proxy), "%s:%d", g.cfg.host, dg_http_server_port(g.ingress));
    return json_pack("{ss ss ss}", "name", dp.name, "api", api, "proxy", proxy);
}

static void on_server_closed(void *ud)
{
    if (--g.open_servers > 0)
        return;
    uv_timer_stop(&dp.cron);
    uv_close((uv_handle_t *)&dp.cron, NULL);
    uv_close((uv_handle_t *)&dp.report_timer, NULL);
    dg_trace_close(dp.proxy_trace);
    dp.proxy_trace = NULL;
    dg_heartbeat_stop(dp.hb);
    dp.hb = NULL;
    dg_strmap_free(&dp.fn_index);
    while (dp.fns) {
        struct dp_function *f = dp.fns;
        dp.fns = f->next;
        dp_function_free(f);
        for (size_t i = 0; i < f->neps; i++)
            endpoint_free(f->eps[i]);
        while (f->removed) {
            struct dp_endpoint *e = f->removed;
            f->removed = e->next_removed;
            endpoint_free(e);
        }
        while (f->drains) {
            struct dp_drain *d = f->drains;
            f->drains = d->next;
            dg_strlist_free(&d->ids);
            free(d);
        }
        free(f->eps);
        free(f->name);
        free(f);
    }
    dg_strmap_free(&dp.pools); /* empty: the last endpoint closed each */
    dg_daemon_deinit(&g.daemon);
}

static void on_stop(void *ud)
{
    uint64_t grace = (uint64_t)g.cfg.http.shutdown_grace_ms;
    dg_http_server_close(g.ingress, grace, on_server_closed, NULL);
    dg_http_server_close(g.api, grace, on_server_closed, NULL);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    dg_log_init("dp");
    int rc = dg_daemon_configure(&dp_schema, &g.cfg, &g.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;

    dp.loop = uv_default_loop();
    dp_lb_policy_parse(g.cfg.lb_policy, &dp.policy);
    dp.queue_timeout_ms = (uint64_t)g.cfg.queue_timeout_ms;
    dg_http_pool_opts_default(&dp.pool_opts);
    dp.pool_opts.request_timeout_ms = 15 * 60 * 1000; /* a function may run long (original) */
    dp.pool_opts.max_conns = 0;                       /* slots bound the connections per sandbox */
    dp.pool_opts.max_idle = 64;
    dp.metrics = dg_metrics_new();
    dp.f_requests = dg_metrics_counter(dp.metrics, "dg_dp_requests_total",
                                       "Invocations received, per function.", "function");
    dp.f_cold = dg_metrics_counter(dp.metrics, "dg_dp_cold_starts_total",
                                   "Invocations that found no sandbox, per function.", "function");
    dp.f_queue = dg_metrics_gauge(dp.metrics, "dg_dp_queue_depth",
                                  "Invocations waiting for a sandbox, per function.", "function");
    dp.f_latency =
        dg_metrics_histogram(dp.metrics, "dg_dp_request_seconds",
                             "Invocation time in the data plane (queue + proxying), "
                             "per function.",
                             "function", dg_metrics_latency_buckets, dg_metrics_latency_nbuckets);

    if (dg_daemon_init(&g.daemon, dp.loop, "dp", on_stop, NULL, &err) < 0) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    if (g.cfg.trace_folder[0] &&
        !(dp.proxy_trace = dg_trace_open(dp.loop, g.cfg.trace_folder, "proxy_trace.csv",
                                         "time,service_name,container_id,get_metadata,"
                                         "add_deployment,cold_start,load_balancing,cc_throttling,"
                                         "proxying,serialization,persistence_layer,other",
                                         &err))) {
        dg_log(DG_LOG_ERROR, "dp", "traceOutputFolder: %s", err.msg);
        return 1;
    }
    uv_timer_init(dp.loop, &dp.cron);
    uv_timer_init(dp.loop, &dp.report_timer);
    uv_timer_start(&dp.cron, on_cron, 50, 50);
    uv_unref((uv_handle_t *)&dp.cron);

    struct dg_http_limits limits;
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.ingress = dg_http_server_new(dp.loop, &limits, "ingress");
    dg_http_set_fallback(g.ingress, dp_invoke, NULL, DG_HTTP_STREAM);
    g.api = dg_http_server_new(dp.loop, &limits, "api");
    dg_daemon_mount_health_metrics(g.api, dp.metrics);
    dg_http_route(g.api, "PUT", "/v1/functions/:name", api_put_function, NULL, 0);
    dg_http_route(g.api, "DELETE", "/v1/functions/:name", api_delete_function, NULL, 0);
    dg_http_route(g.api, "PUT", "/v1/functions/:name/endpoints", api_put_endpoints, NULL, 0);
    dg_http_route(g.api, "POST", "/v1/functions/:name/drain", api_drain, NULL, 0);
    dg_http_route(g.api, "POST", "/v1/drain", api_drain_batch, NULL, 0);
    dg_http_route(g.api, "PUT", "/v1/endpoints", api_put_endpoints_bulk, NULL, 0);
    dg_http_route(g.api, "GET", "/v1/functions", api_list, NULL, 0);
    g.open_servers = 2;
    if (dg_http_server_listen(g.ingress, g.cfg.host, (int)g.cfg.port_proxy, &err) < 0 ||
        dg_http_server_listen(g.api, g.cfg.host, (int)g.cfg.port_api, &err) < 0) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    if (g.cfg.name[0]) {
        dp.name = dg_xstrdup(g.cfg.name);
    } else {
        char host[64] = "dp";
        gethostname(host, sizeof(host) - 1);
        dp.name = dg_xasprintf("%s-%d", host, dg_http_server_port(g.ingress));
    }
    if (g.cfg.cp_addresses.n > 0 &&
        !(dp.hb = dg_heartbeat_start_list(dp.loop, &g.cfg.cp_addresses, "/v1/dataplanes",
                                          (uint64_t)g.cfg.heartbeat_ms, registration_body, NULL,
                                          &err))) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    dg_log_always("dp", "proxy on %s:%d, api on %s:%d, policy %s", g.cfg.host,
                  dg_http_server_port(g.ingress), g.cfg.host, dg_http_server_port(g.api),
                  g.cfg.lb_policy);

    uv_run(dp.loop, UV_RUN_DEFAULT);

    dg_loop_close_all(dp.loop);
    dg_metrics_free(dp.metrics);
    free(dp.name);
    dg_conf_free(&dp_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "dp", "stopped");
    return 0;
}
