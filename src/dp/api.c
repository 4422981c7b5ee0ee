/*
 * api.c: the control plane's side of the data plane, an adapter between HTTP and the
 * core (dp_core.h). The API on portGRPC (8081; HTTP/JSON, the key keeps the original's
 * name); every body is a message of wire.h (docs/api.md):
 *
 *   PUT    /v1/functions/NAME            dg_wire_dp_fn: add or update a function
 *   DELETE /v1/functions/NAME            queued requests get 503; running ones finish
 *   PUT    /v1/functions/NAME/endpoints  dg_wire_fn_update without a name: the whole list
 *                                        (replace, never append); an error (only with an
 *                                        empty list): its sandboxes cannot start, queued
 *                                        requests get 503 with the reason now; exit notes:
 *                                        sandboxes that died by themselves, why (their
 *                                        callers' 502 says it)
 *   PUT    /v1/endpoints                 dg_wire_push: many functions' updates at once (what
 *                                        the CP sends); an unknown function is added; a full
 *                                        one (a resync) is the whole table: others removed
 *   POST   /v1/functions/NAME/drain      dg_wire_drain without a name: take sandboxes out;
 *                                        answers when their requests in flight have finished
 *   POST   /v1/drain                     a batch of dg_wire_drain (what the CP sends)
 *   GET    /v1/functions                 dg_wire_dp_fn_view each: endpoints, queues, errors
 *   GET    /health, /metrics
 *
 * Input is validated here (nothing changes on error); the core gets typed calls. A drain
 * answers through the reply sink (batch.h): a single drain is a batch of one, so the core's
 * effects.drained answers (reply, item) whichever route it came by. Towards the CP: the
 * in-flight reports (effects.report: dg_wire_metrics through the heartbeat's link to the
 * leader).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/heartbeat.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"
#include "dp.h"

struct api_drain {                /* a drain's token: who waits for its answer */
    struct dg_batch_reply *reply; /* NULL: nobody waits any more (the client went away) */
    size_t i;                     /* its item in `reply` */
    char *unknown;                /* the ids that are not the function's ("a, b"), or NULL */
};

static struct dp_function *fn_param(struct dp *d, struct dg_http_req *r)
{
    struct dg_str n = dg_http_req_param(r, "name");
    return dp_core_function_find(d->core, n.ptr, n.len);
}

static void respond_unknown(struct dg_http_req *r)
{
    struct dg_str n = dg_http_req_param(r, "name");
    dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
}

/* r's body as JSON (an empty body is {}). */
static int body_json(struct dg_http_req *r, json_t **out, struct dg_err *err)
{
    struct dg_str b = dg_http_req_body(r);
    return dg_json_parse(b.len ? b.ptr : "{}", b.len ? b.len : 2, out, err);
}

static void api_put_function(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dg_str name = dg_http_req_param(r, "name");
    struct dg_err err = {0};
    json_t *j;
    if (body_json(r, &j, &err) < 0) {
        dg_http_respond_text(r, 400, "%s", err.msg);
        return;
    }
    struct dg_wire_dp_fn m;
    int rc = dg_wire_dp_fn_decode(j, &m, &err);
    json_decref(j);
    if (rc < 0) {
        dg_http_respond_text(r, 400, "function: %s", err.msg);
        return;
    }
    char *n = dg_xstrndup(name.ptr, name.len);
    bool ok = dg_wire_fn_name_ok(n);
    free(n);
    if (!ok) { /* as every function name of the wire messages */
        dg_http_respond_text(r, 400,
                             "function: expected a function name in the path (a DNS label: "
                             "1..%d of a-z 0-9 -), got '%.*s'",
                             DG_WIRE_FN_NAME_MAX, (int)DG_MIN(name.len, 64), name.ptr);
        dg_wire_dp_fn_free(&m);
        return;
    }
    bool created;
    struct dp_function *f = dp_core_function_get(d->core, name.ptr, name.len, &created);
    dg_http_respond_text(r, created ? 201 : 200, "function '%s' %s", f->name,
                         created ? "added" : "updated");
    dp_core_set_concurrency(d->core, f, (uint32_t)m.concurrency);
    f->h2c = m.h2c; /* requests forwarded from now on */
    dg_wire_dp_fn_free(&m);
}

static void api_delete_function(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dp_function *f = fn_param(d, r);
    if (!f) {
        respond_unknown(r);
        return;
    }
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

/* One function's update from the CP (checked): the core drops the endpoints not in the list
 * and adds the new ones; the sandboxes that exited by themselves since the last update, with
 * why (dp_core_on_exited); and, when its last create failed and it has no sandbox, the error
 * (NULL: none): see dp_core_set_error (the CP sends it on every failure: requests queued since
 * the last one wait too). */
static void apply_update(struct dp *d, struct dp_function *f, const struct dg_wire_fn_update *u)
{
    size_t n = u->nendpoints;
    struct dp_endpoint_spec stack[64],
        *specs = n > DG_ARRAY_LEN(stack) ? dg_xcalloc(n, sizeof(*specs)) : stack;
    for (size_t i = 0; i < n; i++) /* borrowed from `u` */
        specs[i] = (struct dp_endpoint_spec){u->endpoints[i].id, u->endpoints[i].address};
    dp_core_set_endpoints(d->core, f, n ? specs : NULL, n); /* (gcc: stack unset when n is 0) */
    if (specs != stack)
        free(specs);
    for (size_t i = 0; i < u->nexited; i++) /* their callers' 502 says why they went */
        dp_core_on_exited(d->core, f, u->exited[i].id, u->exited[i].reason);
    dp_core_set_error(d->core, f, u->error);
}

static void api_put_endpoints(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dp_function *f = fn_param(d, r);
    struct dg_err err = {0};
    json_t *j;
    if (!f) {
        respond_unknown(r);
        return;
    }
    if (body_json(r, &j, &err) < 0) {
        dg_http_respond_text(r, 400, "%s", err.msg);
        return;
    }
    struct dg_wire_fn_update u; /* its strings borrowed from j */
    if (dg_wire_fn_endpoints_view(j, &u, &err) < 0) {
        dg_http_respond_text(r, 400, "%s", err.msg);
    } else {
        apply_update(d, f, &u);
        dg_http_respond_text(r, 200, "function '%s': %zu endpoint(s)", f->name, f->neps);
    }
    dg_wire_fn_update_view_free(&u); /* nothing to free after a failed decode */
    json_decref(j);
}

/* A resync in parts (dg_wire_push's sync, part, parts): the names its parts carried, copied
 * (a function may go between two parts), until the last part says which functions to drop. */
struct dp_resync {
    int64_t sync, parts, got;
    struct dg_strmap keep; /* name -> name, keys in `names` */
    char **names;
    size_t n, cap;
};

void dp_api_free(struct dp *d)
{
    struct dp_resync *rs = d->resync;
    if (!rs)
        return;
    for (size_t i = 0; i < rs->n; i++)
        free(rs->names[i]);
    free(rs->names);
    dg_strmap_free(&rs->keep);
    free(rs);
    d->resync = NULL;
}

static void resync_keep(struct dp_resync *rs, const char *name)
{
    if (dg_strmap_get(&rs->keep, dg_str_c(name)))
        return;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? 2 * rs->cap : 256;
        rs->names = dg_xrealloc(rs->names, rs->cap * sizeof(*rs->names));
    }
    char *c = rs->names[rs->n++] = dg_xstrdup(name);
    dg_strmap_put(&rs->keep, dg_str_c(c), c);
}

/* PUT /v1/endpoints (dg_wire_push): many functions' whole lists in one call (the CP coalesces
 * the changes of one loop turn, in parts below this API's body limit); a function not known
 * yet is added. A full one (a resync) is the whole table: the functions not in it are
 * removed; a resync in parts removes them only at its last part, and only when every part
 * came (a missing part: nothing is removed; the CP, whose push failed, resyncs again). Every
 * item is decoded (its strings borrowed from the JSON: no copy per endpoint) before any is
 * applied: one bad item refuses the whole part with 400 naming it, and nothing changes (a
 * full push with a forged item must not remove the function it names). */
/* Apply a push's n decoded items `us` (with its flags and part fields `part`) and answer. */
static void apply_push(struct dp *d, struct dg_http_req *r, const struct dg_wire_fn_update *us,
                       size_t n, const struct dg_wire_push *part)
{
    bool full = part->full, parted = part->parts > 0;
    struct dg_strmap keep = {0}; /* full in one body: the names in it (borrowed from the body) */
    struct dp_resync *rs = NULL;
    if (parted) { /* a new resync starts at its part 0 (parts come in order) */
        if (part->part == 0 || !d->resync || d->resync->sync != part->sync) {
            dp_api_free(d);
            d->resync = dg_xcalloc(1, sizeof(*d->resync));
            d->resync->sync = part->sync;
            d->resync->parts = part->parts;
        }
        rs = d->resync;
        rs->got++;
    }
    for (size_t i = 0; i < n; i++) {
        const struct dg_wire_fn_update *u = &us[i];
        if (rs)
            resync_keep(rs, u->name);
        else if (full)
            dg_strmap_put(&keep, dg_str_c(u->name), (void *)u->name);
        struct dp_function *f = dp_core_function_get(d->core, u->name, strlen(u->name), NULL);
        f->concurrency = (uint32_t)u->concurrency; /* in effect at the list's dispatch */
        f->h2c = u->h2c;
        apply_update(d, f, u);
    }
    unsigned removed = 0;
    if (rs && part->part == part->parts - 1) { /* the last part */
        if (rs->got == rs->parts && rs->parts == part->parts)
            removed = dp_core_remove_others(d->core, &rs->keep);
        else
            dg_log(DG_LOG_WARN, "api",
                   "resync %lld: %lld of %lld part(s) came: no function removed",
                   (long long)part->sync, (long long)rs->got, (long long)part->parts);
        dp_api_free(d);
    } else if (full && !parted) { /* a resync: the CP's whole table; deleted ones go */
        removed = dp_core_remove_others(d->core, &keep);
        dg_strmap_free(&keep);
    }
    dg_http_respond_text(r, 200, "%zu function(s) updated, %u removed", n, removed);
}

static void api_put_endpoints_bulk(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dg_err err = {0};
    struct dg_wire_push part;
    char *store;
    struct dg_str body = dg_http_req_body(r);
    /* what the CP writes, decoded whole without a JSON tree (most of a push's cost); anything
     * else (valid or not) goes the way below, item by item, which names a bad item */
    if (dg_wire_push_view_fast(body.ptr, body.len, &part, &store) == 0) {
        apply_push(d, r, part.functions, part.nfunctions, &part);
        dg_wire_push_view_free(&part, store);
        return;
    }
    json_t *j, *item;
    const json_t *fns;
    if (body_json(r, &j, &err) < 0) {
        dg_http_respond_text(r, 400, "%s", err.msg);
        return;
    }
    if (!(fns = dg_wire_push_items(j, &err)) || dg_wire_push_part(j, &part, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "endpoints: %s (nothing applied)", err.msg);
        return;
    }
    size_t i, n = json_array_size(fns), ok = 0;
    struct dg_wire_fn_update *us = dg_xcalloc(n ? n : 1, sizeof(*us));
    json_array_foreach(fns, i, item)
    {
        if (dg_wire_fn_update_view(item, &us[i], &err) < 0) {
            dg_err_wrap(&err, "field 'functions': item %zu", i);
            break;
        }
        ok++;
    }
    if (ok < n)
        dg_http_respond_text(r, 400, "endpoints: %s (nothing applied)", err.msg);
    else
        apply_push(d, r, us, n, &part);
    for (i = 0; i < ok; i++)
        dg_wire_fn_update_view_free(&us[i]);
    free(us);
    json_decref(j);
}

/* ---- drains ------------------------------------------------------------------------------- */

/* effects.drained: answer the drain's item, if anybody still waits for it. */
static void fx_drained(void *ud, void *token, const struct dp_function *f, size_t nids)
{
    struct api_drain *t = token;
    if (t->reply)
        dg_batch_reply_text(t->reply, t->i, 200, "drained %zu sandbox(es) of '%s'%s%.400s%s", nids,
                            f->name, t->unknown ? "; not found: " : "",
                            t->unknown ? t->unknown : "", t->unknown ? " (not its sandboxes)" : "");
    free(t->unknown);
    free(t);
}

static void fx_drain_dropped(void *ud, void *token)
{
    struct api_drain *t = token;
    free(t->unknown);
    free(t);
}

/* The client went away before item's drain ended: the drain goes on, nobody is answered. */
static void drain_aborted(void *item_ud)
{
    struct api_drain *t = item_ud;
    if (t)
        t->reply = NULL;
}

/* Item i of `b`: take m's sandboxes out of f; answered by fx_drained (maybe before this
 * returns: then `b` may be gone). Ids that are not f's (never were, or already gone and idle)
 * are named in the answer; when none is, the item is a 404 and nothing is drained. */
static void drain_start(struct dp *d, struct dg_batch_reply *b, size_t i, struct dp_function *f,
                        const struct dg_wire_drain *m)
{
    const char **known = dg_xcalloc(m->ids.n + 1, sizeof(*known));
    size_t nknown = 0;
    struct dg_buf unknown = {0};
    for (size_t k = 0; k < m->ids.n; k++) {
        if (dp_core_has_sandbox(f, m->ids.v[k])) {
            known[nknown++] = m->ids.v[k];
        } else {
            if (unknown.len)
                dg_buf_append(&unknown, ", ", 2);
            dg_buf_append(&unknown, m->ids.v[k], strlen(m->ids.v[k]));
        }
    }
    if (nknown == 0 && m->ids.n > 0) {
        dg_batch_reply_text(b, i, 404, "no sandbox %.400s in function '%s' (nothing drained)",
                            unknown.data, f->name);
        dg_buf_free(&unknown);
        free(known);
        return;
    }
    struct api_drain *t = dg_xmalloc(sizeof(*t));
    *t = (struct api_drain){b, i, unknown.len ? dg_xstrdup(unknown.data) : NULL};
    dg_buf_free(&unknown);
    dg_batch_reply_set_ud(b, i, t);
    dp_core_drain(d->core, f, known, nknown, t);
    free(known);
}

/* POST /v1/functions/NAME/drain: a batch of one. */
static void api_drain(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    struct dg_batch_reply *b = dg_batch_reply_single(r, drain_aborted);
    struct dp_function *f = fn_param(d, r);
    struct dg_err err = {0};
    json_t *j;
    if (!f) {
        struct dg_str n = dg_http_req_param(r, "name");
        dg_batch_reply_text(b, 0, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
        return;
    }
    if (body_json(r, &j, &err) < 0) {
        dg_batch_reply_text(b, 0, 400, "%s", err.msg);
        return;
    }
    struct dg_wire_drain m;
    int rc = dg_wire_drain_ids_decode(j, &m, &err);
    json_decref(j);
    if (rc < 0) {
        dg_batch_reply_text(b, 0, 400, "drain: %s", err.msg);
        return;
    }
    drain_start(d, b, 0, f, &m);
    dg_wire_drain_free(&m);
}

/* POST /v1/drain: the drains of many functions (the CP batches one loop turn's); each item is
 * answered once its sandboxes are idle. */
static void api_drain_batch(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    json_t *root, *items, *item;
    struct dg_err err = {0};
    struct dg_wire_drain *ms;
    size_t i, n;
    char *store;
    struct dg_str body = dg_http_req_body(r);
    /* what the CP writes, decoded whole without a JSON tree; else item by item below */
    if (dg_wire_drains_view_fast(body.ptr, body.len, &ms, &n, &store) == 0) {
        struct dg_batch_reply *b = dg_batch_reply_start(r, n, drain_aborted);
        for (i = 0; i < n; i++) {
            struct dp_function *f = dp_core_function_find(d->core, ms[i].name, strlen(ms[i].name));
            if (!f)
                dg_batch_reply_text(b, i, 404, "function '%s' is not registered", ms[i].name);
            else
                drain_start(d, b, i, f, &ms[i]); /* the last item's answer may free b */
        }
        dg_wire_drains_view_free(ms, n, store);
        return;
    }
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "drain: %s", err.msg);
        return;
    }
    n = json_array_size(items);
    struct dg_batch_reply *b = dg_batch_reply_start(r, n, drain_aborted);
    json_array_foreach(items, i, item)
    {
        struct dg_wire_drain m;
        struct dp_function *f;
        if (dg_wire_drain_decode(item, &m, &err) < 0)
            dg_batch_reply_text(b, i, 400, "drain: %s", err.msg);
        else if (!(f = dp_core_function_find(d->core, m.name, strlen(m.name))))
            dg_batch_reply_text(b, i, 404, "function '%s' is not registered", m.name);
        else
            drain_start(d, b, i, f, &m); /* the last item's answer may free b */
        dg_wire_drain_free(&m);
    }
    json_decref(root);
}

/* POST /v1/forget: a batch of function names deleted at the CP. Each is removed (200), or
 * 404 when this DP has no such function, or 409 while requests run on it (the CP then
 * resyncs this DP, which drops it once they are done): DELETE /v1/functions/NAME for many. */
static void api_forget_batch(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "forget: %s", err.msg);
        return;
    }
    size_t i, n = json_array_size(items);
    struct dg_batch_reply *b = dg_batch_reply_start(r, n, NULL);
    json_array_foreach(items, i, item)
    {
        const char *name;
        struct dp_function *f;
        unsigned running;
        if (dg_wire_forget_item_decode(item, &name, &err) < 0)
            dg_batch_reply_text(b, i, 400, "forget: item %zu: %s", i, err.msg);
        else if (!(f = dp_core_function_find(d->core, name, strlen(name))))
            dg_batch_reply_text(b, i, 404, "function '%s' is not registered", name);
        else if ((running = dp_core_remove_function(d->core, f)) > 0)
            dg_batch_reply_text(b, i, 409,
                                "function '%s' has %u request(s) running: drain its sandboxes "
                                "first",
                                name, running);
        else
            dg_batch_reply_text(b, i, 200, "function '%s' removed", name);
    } /* the last answer freed b */
    json_decref(root);
}

/* GET /v1/functions: a dg_wire_dp_fn_view per function. */
static void api_list(struct dg_http_req *r, void *ud)
{
    struct dp *d = ud;
    json_t *fns = json_array();
    struct dg_wire_dp_endpoint_view stack[64], *eps = stack;
    size_t cap = DG_ARRAY_LEN(stack);
    for (struct dp_function *f = dp_core_functions(d->core); f; f = f->next) {
        if (f->neps > cap) {
            cap = f->neps;
            if (eps != stack)
                free(eps);
            eps = dg_xmalloc(cap * sizeof(*eps));
        }
        for (size_t i = 0; i < f->neps; i++) /* borrowed for the encode */
            eps[i] = (struct dg_wire_dp_endpoint_view){f->eps[i]->id, f->eps[i]->address,
                                                       (int64_t)f->eps[i]->lb.in_flight};
        struct dg_wire_dp_fn_view v = {.name = f->name,
                                       .concurrency = f->concurrency,
                                       .queued = f->queued,
                                       .in_flight = f->running,
                                       .endpoints = eps,
                                       .nendpoints = f->neps,
                                       .error = f->error,
                                       .h2c = f->h2c};
        json_array_append_new(fns, dg_wire_dp_fn_view_encode(&v));
    }
    if (eps != stack)
        free(eps);
    dg_http_respond_json(r, 200, fns);
}

/* ---- reports to the CP ---------------------------------------------------------------------- */

static void on_report_timer(uv_timer_t *t)
{
    struct dp *d = t->data;
    d->last_report_ms = uv_now(d->loop);
    dp_core_report_due(d->core);
}

/* Once this loop turn is done, but not before reportInterval after the last report: at
 * thousands of cold starts a second nearly every loop turn has a new one, and each report
 * costs a POST on both ends (and the CP's handler); the first after a quiet spell goes at once,
 * so a cold start at low load never waits for the pacing. */
static void fx_report_soon(void *ud)
{
    struct dp *d = ud;
    if (uv_is_active((uv_handle_t *)&d->report_timer))
        return; /* due already: this function joins it */
    d->report_timer.data = d;
    uint64_t now = uv_now(d->loop), due = d->last_report_ms + d->report_interval_ms;
    uv_timer_start(&d->report_timer, on_report_timer,
                   d->last_report_ms && due > now ? due - now : 0, 0);
}

/* dg_wire_metrics to the leader (through the heartbeat's link), in parts below the CP's body
 * limit (each item is one function's count: any split is valid). */
static void fx_report(void *ud, const struct dp_report_item *items, size_t n)
{
    struct dp *d = ud;
    if (!d->hb)
        return;
    struct dg_wire_fn_load stack[64],
        *fl = n > DG_ARRAY_LEN(stack) ? dg_xmalloc(n * sizeof(*fl)) : stack;
    struct dg_wire_parts split;
    dg_wire_parts_init(&split, DG_WIRE_PART_MAX);
    size_t first = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        /* {"name":"NAME","inflight":N}: a function name needs no escaping */
        size_t len = strlen(items[i].name) + 40;
        struct dg_err err;
        int where = dg_wire_parts_add(&split, len, &err);
        if (where < 0) /* cannot be: a name is at most 63 bytes */
            continue;
        if (where == DG_WIRE_PART_NEW && k > first) {
            struct dg_wire_metrics m = {
                .dataplane = d->name, .functions = fl + first, .nfunctions = k - first};
            dg_heartbeat_post_text(d->hb, DG_WIRE_PATH_METRICS, dg_wire_metrics_dumps(&m));
            first = k;
        }
        fl[k++] = (struct dg_wire_fn_load){(char *)items[i].name, (int64_t)items[i].inflight};
    }
    struct dg_wire_metrics m = {
        .dataplane = d->name, .functions = fl + first, .nfunctions = k - first};
    dg_heartbeat_post_text(d->hb, DG_WIRE_PATH_METRICS, dg_wire_metrics_dumps(&m));
    if (fl != stack)
        free(fl);
}

void dp_api_effects(struct dp_effects *fx)
{
    fx->report_soon = fx_report_soon;
    fx->report = fx_report;
    fx->drained = fx_drained;
    fx->drain_dropped = fx_drain_dropped;
}

#define FN_PATH DG_WIRE_PATH_FUNCTIONS "/:name" /* the function's name: dg_http_req_param */

void dp_api_routes(struct dp *d, struct dg_http_server *api)
{
    dg_http_route(api, "PUT", FN_PATH, api_put_function, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "DELETE", FN_PATH, api_delete_function, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "PUT", FN_PATH "/endpoints", api_put_endpoints, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "POST", FN_PATH "/drain", api_drain, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "POST", DG_WIRE_PATH_DRAIN, api_drain_batch, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "POST", DG_WIRE_PATH_FORGET, api_forget_batch, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "PUT", DG_WIRE_PATH_ENDPOINTS, api_put_endpoints_bulk, d, DG_HTTP_AUTH_CP);
    dg_http_route(api, "GET", DG_WIRE_PATH_FUNCTIONS, api_list, d,
                  DG_HTTP_AUTH_CP | DG_HTTP_AUTH_OPERATOR);
}
