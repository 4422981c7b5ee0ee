/*
 * api.c: the worker's HTTP API, an adapter: it decodes the control plane's requests, hands
 * them to the registry (registry.c) and answers what the registry reports (DESIGN.md §6).
 *
 *   POST   /v1/sandboxes      {"function","image","port","env":[],"args":[],
 *                              "cpuMilli","memoryMiB"} -> 201 {"id","endpoint",
 *                              "latencyUs":{...}} once the sandbox answers on its port
 *   GET    /v1/sandboxes      -> {"name","runtime","sandboxes":[{"id","function",
 *                              "endpoint","state","exitReason"}]} (exitReason: with
 *                              state "exited", e.g. "OOM-killed: memory limit 64 MiB")
 *   DELETE /v1/sandboxes/ID   -> 200 (the runtime stops it in the background)
 *   POST   /v1/sandboxes/batch  {"items":[spec, ...]} and
 *   POST   /v1/sandboxes/delete {"items":["id", ...]}: the same for many (the CP batches
 *                              what one loop turn decides); answers stream back one
 *                              NDJSON line per item as each is done (lib/batch.c)
 *
 * A create's caller that goes away before its answer leaves a sandbox nobody would delete:
 * it is deleted then (wk_registry_abandon).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/json.h"
#include "api.h"

static json_t *latency_json(const struct wk_latency *l)
{
    return json_pack("{sI sI sI sI sI sI}", "image", (json_int_t)l->image_us, "rootfs",
                     (json_int_t)l->rootfs_us, "network", (json_int_t)l->network_us, "start",
                     (json_int_t)l->start_us, "ready", (json_int_t)l->ready_us, "total",
                     (json_int_t)l->total_us);
}

/* Answer a create: its request, or its item in a batch. */
static void create_answer(struct wk_reply to, int status, const char *ctype, const char *body,
                          size_t len)
{
    if (to.req)
        dg_http_respond(to.req, status, ctype, body, len);
    else if (to.batch)
        dg_batch_reply_item(to.batch, to.i, status, body, len);
}

void wk_api_answer(void *ud, struct wk_sandbox *sb, struct wk_reply to, const struct dg_err *err)
{
    if (err) {
        char msg[600];
        int n = snprintf(msg, sizeof(msg), "create failed: %s", err->msg);
        create_answer(to, 503, "text/plain", msg, (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        return;
    }
    char ep[80];
    snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
    json_t *j = json_pack("{ss ss ss so}", "id", sb->id, "function", sb->function, "endpoint", ep,
                          "latencyUs", latency_json(&sb->lat));
    char *body = dg_json_dumps(j);
    json_decref(j);
    create_answer(to, 201, "application/json", body, strlen(body));
    free(body);
}

static void create_aborted(struct dg_http_req *r, void *ud)
{
    wk_registry_abandon(ud); /* the caller (the CP, timed out) never learns its id */
}

static void create_item_aborted(void *ud)
{
    if (ud) /* NULL: an item refused before it started */
        wk_registry_abandon(ud);
}

void wk_api_bind(void *ud, struct wk_sandbox *sb)
{
    if (sb->reply.req)
        dg_http_req_on_abort(sb->reply.req, create_aborted, sb);
    else if (sb->reply.batch)
        dg_batch_reply_set_ud(sb->reply.batch, sb->reply.i, sb);
}

static const struct dg_json_field spec_fields[] = {
    {"function", DG_JSON_STRING, true, offsetof(struct wk_spec, function), 0, 0},
    {"image", DG_JSON_STRING, false, offsetof(struct wk_spec, image), 0, 0},
    {"port", DG_JSON_INT, false, offsetof(struct wk_spec, port), 1, 65535},
    {"env", DG_JSON_STRLIST, false, offsetof(struct wk_spec, env), 0, 0},
    {"args", DG_JSON_STRLIST, false, offsetof(struct wk_spec, args), 0, 0},
    {"cpuMilli", DG_JSON_INT, false, offsetof(struct wk_spec, cpu_milli), 0, 100000000},
    {"memoryMiB", DG_JSON_INT, false, offsetof(struct wk_spec, memory_mib), 0, 1 << 24},
};

/* Start a sandbox from its JSON spec; the answer goes to r or to item i of batch. Returns
 * -1 (with the 400 text in err) when the spec is bad: nothing started. */
static int create_from(struct wk_registry *reg, json_t *j, struct dg_http_req *r,
                       struct dg_batch_reply *batch, size_t i, struct dg_err *err)
{
    struct wk_spec spec = {0};
    if (dg_json_unpack(j, spec_fields, DG_ARRAY_LEN(spec_fields), &spec, 0, err) < 0)
        return -1;
    int rc =
        wk_registry_create(reg, &spec, (struct wk_reply){.batch = batch, .i = i, .req = r}, err);
    wk_spec_free(&spec);
    return rc;
}

static void api_create(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j = NULL;
    struct dg_err err = {0};
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 || create_from(ud, j, r, NULL, 0, &err) < 0)
        dg_http_respond_text(r, 400, "sandbox: %s", err.msg);
    json_decref(j);
}

/* POST /v1/sandboxes/batch {"items":[spec, ...]}: several creates; each answer streams back
 * as it is ready (the CP batches the creates of one loop turn). */
static void api_create_batch(struct dg_http_req *r, void *ud)
{
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "sandboxes: %s", err.msg);
        return;
    }
    struct dg_batch_reply *b = dg_batch_reply_start(r, json_array_size(items), create_item_aborted);
    size_t i, n = json_array_size(items);
    /* the last item may end the reply: every spec is read before any answer can come */
    bool *bad = dg_xcalloc(n, sizeof(bool));
    char **why = dg_xcalloc(n, sizeof(char *));
    json_array_foreach(items, i, item)
    {
        struct dg_err e = {0};
        if (create_from(ud, item, NULL, b, i, &e) < 0) {
            bad[i] = true;
            why[i] = dg_xasprintf("sandbox: %s", e.msg);
        }
    }
    for (i = 0; i < n; i++)
        if (bad[i]) {
            dg_batch_reply_item(b, i, 400, why[i], strlen(why[i]));
            free(why[i]);
        }
    free(bad);
    free(why);
    json_decref(root);
}

static void api_list(struct dg_http_req *r, void *ud)
{
    struct wk_registry *reg = ud;
    json_t *list = json_array();
    for (struct wk_sandbox *sb = reg->sandboxes; sb; sb = sb->next) {
        char ep[80];
        snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
        json_t *one = json_pack("{ss ss ss ss}", "id", sb->id, "function", sb->function, "endpoint",
                                ep, "state", wk_sandbox_state_name(sb->state));
        if (sb->exit_reason[0])
            json_object_set_new(one, "exitReason", json_string(sb->exit_reason));
        json_array_append_new(list, one);
    }
    dg_http_respond_json(
        r, 200,
        json_pack("{ss ss so}", "name", reg->name, "runtime", reg->rt->name, "sandboxes", list));
}

static void api_delete(struct dg_http_req *r, void *ud)
{
    struct dg_str id = dg_http_req_param(r, "id");
    if (wk_registry_delete(ud, id) < 0)
        dg_http_respond_text(r, 404, "sandbox '%.*s' not found", (int)id.len, id.ptr);
    else
        dg_http_respond_text(r, 200, "deleting %.*s", (int)id.len, id.ptr);
}

/* POST /v1/sandboxes/delete {"items":["id", ...]}: several deletes, answered at once. */
static void api_delete_batch(struct dg_http_req *r, void *ud)
{
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "delete: %s", err.msg);
        return;
    }
    size_t i, n = json_array_size(items);
    struct dg_batch_reply *b = dg_batch_reply_start(r, n, NULL);
    json_array_foreach(items, i, item)
    {
        const char *id = json_string_value(item);
        int st = !id ? 400 : wk_registry_delete(ud, dg_str_c(id)) < 0 ? 404 : 200;
        char msg[160];
        int len = snprintf(msg, sizeof(msg), "%s %s", st == 200 ? "deleting" : "no sandbox",
                           id ? id : "(not a string)");
        dg_batch_reply_item(b, i, st, msg, (size_t)DG_MIN(len, (int)sizeof(msg) - 1));
    }
    json_decref(root);
}

void wk_api_mount(struct dg_http_server *s, struct wk_registry *reg)
{
    dg_http_route(s, "POST", "/v1/sandboxes", api_create, reg, 0);
    dg_http_route(s, "GET", "/v1/sandboxes", api_list, reg, 0);
    dg_http_route(s, "POST", "/v1/sandboxes/batch", api_create_batch, reg, 0);
    dg_http_route(s, "POST", "/v1/sandboxes/delete", api_delete_batch, reg, 0);
    dg_http_route(s, "DELETE", "/v1/sandboxes/:id", api_delete, reg, 0);
}
