/*
 * api.c: the control plane's side of the data plane, an adapter between HTTP/JSON
 * and the core (core.h). The API on portGRPC (8081; HTTP/JSON, the key keeps the
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
 * Input is validated here (nothing changes on error); the core gets typed calls. Towards
 * the CP: the in-flight reports (effects.report: POST /v1/metrics through the heartbeat's
 * link to the leader) and the drains' answers (effects.drained).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/heartbeat.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dp.h"

struct api_drain {                /* a drain's token: who waits for its answer */
    struct dg_http_req *req;      /* the drain request to answer, or */
    struct dg_batch_reply *batch; /* the batch it came in (NULL: nobody waits any more) */
    size_t batch_i;
};

static struct dp_function *fn_param(struct dp *d, struct dg_http_req *r)
{
    struct dg_str n = dg_http_req_param(r, "name");
    struct dp_function *f = dp_core_function_find(d->core, n.ptr, n.len);
    if (!f)
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
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

static void api_put_function(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
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
    struct dp_function *f = dp_core_function_get(d->core, name.ptr, name.len, &created);
    dg_http_respond_text(r, created ? 201 : 200, "function '%s' %s", f->name,
                         created ? "added" : "updated");
    dp_core_set_concurrency(d->core, f, (uint32_t)cc);
}

static void api_delete_function(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dp_function *f = fn_param(d, r);
    if (!f)
        return;
    char *name = dg_xstrdup(f->name);
    unsigned running = dp_core_remove_function(d->core, f); /* queued requests: 503 */
    if (running)
        dg_http_respond_text(r, 409,
                             "function '%s' has %u request(s) running: drain its sandboxes first",
                             name, running);
    else
        dg_http_respond_text(r, 200, "function '%s' removed", name);
    free(name);
}

/* Replace f's endpoint list with `list` (a JSON array of {"id","address"}): validate all
 * first (nothing changes on error), then the core drops what is not in it and adds what is
 * new. */
static int apply_endpoints(struct dp *d, struct dp_function *f, json_t *list, struct dg_err *err)
{
    if (!json_is_array(list))
        return dg_err_set(err, DG_E_INVAL, "field 'endpoints': expected an array");
    size_t n = json_array_size(list);
    struct dp_endpoint_spec stack[64],
        *specs = n > DG_ARRAY_LEN(stack) ? dg_xcalloc(n, sizeof(*specs)) : stack;
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
        specs[i] = (struct dp_endpoint_spec){id, addr}; /* borrowed from `list` */
    }
    dp_core_set_endpoints(d->core, f, specs, n);
    if (specs != stack)
        free(specs);
    return 0;
bad:
    if (specs != stack)
        free(specs);
    return DG_E_INVAL;
}

/* One function's update from the CP: its whole endpoint list, "exited" (the sandboxes that
 * died by themselves since the last update, with why: dp_core_on_exited) and, when its last
 * create failed and it has no sandbox, "error" (a string; absent or null: none): see
 * dp_core_set_error (the CP sends it on every failure: requests queued since the last one
 * wait too). */
static int apply_update(struct dp *d, struct dp_function *f, json_t *item, struct dg_err *err)
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
    if (apply_endpoints(d, f, json_object_get(item, "endpoints"), err) < 0)
        return DG_E_INVAL;
    json_array_foreach(jx, i, x) /* their callers' 502 says why they went */
    {
        dp_core_on_exited(d->core, f, json_string_value(json_object_get(x, "id")),
                          json_string_value(json_object_get(x, "reason")));
    }
    dp_core_set_error(d->core, f, json_is_string(je) ? json_string_value(je) : NULL);
    return 0;
}

static void api_put_endpoints(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dp_function *f = fn_param(d, r);
    json_t *j;
    if (!f || parse_body(r, &j) < 0)
        return;
    struct dg_err err = {0};
    int rc = apply_update(d, f, j, &err);
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
    struct dp *d = ud;
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
        struct dp_function *f = dp_core_function_get(d->core, name, strlen(name), NULL);
        f->concurrency = (uint32_t)cc; /* in effect at the dispatch of the list below */
        if (apply_update(d, f, item, &err) < 0)
            dg_log(DG_LOG_WARN, "api", "fn=%s: %s", name, err.msg);
        else
            applied++;
    }
    json_decref(j);
    dg_http_respond_text(r, 200, "%zu function(s) updated", applied);
}

/* ---- drains ------------------------------------------------------------------------------- */

/* effects.drained: answer whoever still waits for it. */
static void fx_drained(void *ud, void *token, const struct dp_function *f, size_t nids)
{
    struct api_drain *t = token;
    char msg[300];
    int n = snprintf(msg, sizeof(msg), "drained %zu sandbox(es) of '%s'", nids, f->name);
    size_t len = (size_t)DG_MIN(n, (int)sizeof(msg) - 1);
    if (t->req)
        dg_http_respond(t->req, 200, "text/plain", msg, len);
    else if (t->batch)
        dg_batch_reply_item(t->batch, t->batch_i, 200, msg, len);
    free(t);
}

static void fx_drain_dropped(void *ud, void *token)
{
    free(token);
}

static void drain_aborted(struct dg_http_req *r, void *ud)
{
    struct api_drain *t = ud;
    t->req = NULL;
}

struct drain_ids {
    struct dg_strlist ids;
};

static const struct dg_json_field drain_fields[] = {
    {"ids", DG_JSON_STRLIST, true, offsetof(struct drain_ids, ids), 0, 0}};

static void api_drain(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dp_function *f = fn_param(d, r);
    json_t *j;
    if (!f || parse_body(r, &j) < 0)
        return;
    struct drain_ids in = {0};
    struct dg_err err = {0};
    int rc = dg_json_unpack(j, drain_fields, 1, &in, 0, &err);
    json_decref(j);
    if (rc < 0) {
        dg_strlist_free(&in.ids);
        dg_http_respond_text(r, 400, "drain: %s", err.msg);
        return;
    }
    struct api_drain *t = dg_xcalloc(1, sizeof(*t));
    t->req = r;
    dg_http_req_on_abort(r, drain_aborted, t);
    dp_core_drain(d->core, f, (const char *const *)in.ids.v, in.ids.n, t); /* may answer now */
    dg_strlist_free(&in.ids);
}

static void drain_item_aborted(void *ud)
{
    struct api_drain *t = ud;
    if (t)
        t->batch = NULL;
}

/* POST /v1/drain {"items":[{"name","ids":[...]}, ...]}: the drains of many functions (the CP
 * batches one loop turn's); each item is answered once its sandboxes are idle. */
static void api_drain_batch(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "drain: %s", err.msg);
        return;
    }
    size_t i, n = json_array_size(items);
    struct dg_batch_reply *b = dg_batch_reply_start(r, n, drain_item_aborted);
    json_array_foreach(items, i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        struct dp_function *f = name ? dp_core_function_find(d->core, name, strlen(name)) : NULL;
        struct drain_ids in = {0};
        struct dg_err e = {0};
        if (!f || dg_json_unpack(item, drain_fields, 1, &in, DG_JSON_ALLOW_UNKNOWN, &e) < 0) {
            char msg[300];
            int len = f ? snprintf(msg, sizeof(msg), "drain: %s", e.msg)
                        : snprintf(msg, sizeof(msg), "function '%s' is not registered",
                                   name ? name : "(no name)");
            dg_strlist_free(&in.ids);
            dg_batch_reply_item(b, i, f ? 400 : 404, msg,
                                (size_t)DG_MIN(len, (int)sizeof(msg) - 1));
            continue;
        }
        struct api_drain *t = dg_xcalloc(1, sizeof(*t));
        t->batch = b;
        t->batch_i = i;
        dg_batch_reply_set_ud(b, i, t);
        dp_core_drain(d->core, f, (const char *const *)in.ids.v, in.ids.n, t); /* may answer */
        dg_strlist_free(&in.ids);
    }
    json_decref(root);
}

static void api_list(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    json_t *fns = json_array();
    for (struct dp_function *f = dp_core_functions(d->core); f; f = f->next) {
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

/* ---- reports to the CP ---------------------------------------------------------------------- */

static void on_report_timer(uv_timer_t *t)
{
    struct dp *d = t->data;
    dp_core_report_due(d->core);
}

static void fx_report_soon(void *ud)
{
    struct dp *d = ud;
    d->report_timer.data = d;
    uv_timer_start(&d->report_timer, on_report_timer, 0, 0);
}

/* POST /v1/metrics {"dataplane","functions":[{"name","inflight"}]} to the leader. */
static void fx_report(void *ud, const struct dp_report_item *items, size_t n)
{
    struct dp *d = ud;
    if (!d->hb)
        return;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            list, json_pack("{ss si}", "name", items[i].name, "inflight", (int)items[i].inflight));
    dg_heartbeat_post(d->hb, "/v1/metrics",
                      json_pack("{ss so}", "dataplane", d->name, "functions", list));
}

void dp_api_effects(struct dp_effects *fx)
{
    fx->report_soon = fx_report_soon;
    fx->report = fx_report;
    fx->drained = fx_drained;
    fx->drain_dropped = fx_drain_dropped;
}

void dp_api_routes(struct dp *d, struct dg_http_server *api)
{
    dg_http_route(api, "PUT", "/v1/functions/:name", api_put_function, d, 0);
    dg_http_route(api, "DELETE", "/v1/functions/:name", api_delete_function, d, 0);
    dg_http_route(api, "PUT", "/v1/functions/:name/endpoints", api_put_endpoints, d, 0);
    dg_http_route(api, "POST", "/v1/functions/:name/drain", api_drain, d, 0);
    dg_http_route(api, "POST", "/v1/drain", api_drain_batch, d, 0);
    dg_http_route(api, "PUT", "/v1/endpoints", api_put_endpoints_bulk, d, 0);
    dg_http_route(api, "GET", "/v1/functions", api_list, d, 0);
}
