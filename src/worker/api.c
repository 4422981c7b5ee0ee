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
 * The messages are dirigent/wire.h's (dg_wire_create, _created, _sandbox_list, the delete
 * item); their keys are spelled only there.
 *
 * A plain request and a batch are answered alike, through a reply sink (lib/batch.c: a plain
 * request is a batch of one), so each operation has one path (create_one, delete_one). A
 * create's caller that goes away before its answer leaves a sandbox nobody would delete: it
 * is deleted then (wk_registry_abandon).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/json.h"
#include "dirigent/wire.h"
#include "api.h"

void wk_api_answer(void *ud, struct wk_sandbox *sb, struct wk_reply to, const struct dg_err *err)
{
    if (err) {
        char msg[600];
        int n = snprintf(msg, sizeof(msg), "create failed: %s", err->msg);
        dg_batch_reply_answer(to.batch, to.i, 503, "text/plain", msg,
                              (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        return;
    }
    char ep[80];
    snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
    const struct wk_latency *l = &sb->lat;
    struct dg_wire_created m = {.id = sb->id,
                                .function = sb->function,
                                .endpoint = ep,
                                .has_latency = true,
                                .latency = {.image = (int64_t)l->image_us,
                                            .rootfs = (int64_t)l->rootfs_us,
                                            .network = (int64_t)l->network_us,
                                            .start = (int64_t)l->start_us,
                                            .ready = (int64_t)l->ready_us,
                                            .total = (int64_t)l->total_us}};
    char *body = dg_wire_created_dumps(&m);
    dg_batch_reply_answer(to.batch, to.i, 201, "application/json", body, strlen(body));
    free(body);
}

/* The caller went away before the answer (the CP, timed out): it never learns the id. */
static void create_aborted(void *ud)
{
    if (ud) /* NULL: an item refused before it started */
        wk_registry_abandon(ud);
}

void wk_api_bind(void *ud, struct wk_sandbox *sb)
{
    dg_batch_reply_set_ud(sb->reply.batch, sb->reply.i, sb);
}

/* Start a sandbox from its JSON spec; the answer goes to item i of b. Returns -1 (with the
 * 400 text in err) when the spec is bad: nothing started. */
static int create_one(struct wk_registry *reg, json_t *j, struct dg_batch_reply *b, size_t i,
                      struct dg_err *err)
{
    struct dg_wire_create spec;
    if (dg_wire_create_decode(j, &spec, err) < 0)
        return -1;
    int rc = wk_registry_create(reg, &spec, (struct wk_reply){.batch = b, .i = i}, err);
    dg_wire_create_free(&spec);
    return rc;
}

/* The creates of a request, answered through b: `items` is the batch's array of specs, or
 * the one spec of a plain request (single). */
static void create_items(struct wk_registry *reg, struct dg_batch_reply *b, json_t *items,
                         bool single)
{
    size_t n = dg_batch_reply_size(b);
    /* the last item may end the reply: every spec is read before any answer can come */
    char *small[8] = {0};
    char **why = n <= DG_ARRAY_LEN(small) ? small : dg_xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        struct dg_err e = {0};
        if (create_one(reg, single ? items : json_array_get(items, i), b, i, &e) < 0)
            why[i] = dg_xasprintf("sandbox: %s", e.msg);
    }
    for (size_t i = 0; i < n; i++)
        if (why[i]) {
            dg_batch_reply_text(b, i, 400, "%s", why[i]);
            free(why[i]);
        }
    if (why != small)
        free(why);
}

static void api_create(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j = NULL;
    struct dg_err err = {0};
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0)
        dg_http_respond_text(r, 400, "sandbox: %s", err.msg);
    else
        create_items(ud, dg_batch_reply_single(r, create_aborted), j, true);
    json_decref(j);
}

/* POST /v1/sandboxes/batch {"items":[spec, ...]}: several creates; each answer streams back
 * as it is ready (the CP batches the creates of one loop turn). */
static void api_create_batch(struct dg_http_req *r, void *ud)
{
    json_t *root, *items;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err)))
        dg_http_respond_text(r, 400, "sandboxes: %s", err.msg);
    else
        create_items(ud, dg_batch_reply_start(r, json_array_size(items), create_aborted), items,
                     false);
    json_decref(root);
}

static void api_list(struct dg_http_req *r, void *ud)
{
    struct wk_registry *reg = ud;
    struct dg_wire_sandbox_state *v = dg_xcalloc(reg->n + 1, sizeof(*v));
    char(*eps)[80] = dg_xcalloc(reg->n + 1, sizeof(*eps));
    size_t n = 0;
    for (struct wk_sandbox *sb = reg->sandboxes; sb; sb = sb->next, n++) {
        snprintf(eps[n], sizeof(eps[n]), "%s:%d", sb->host, sb->port);
        v[n] = (struct dg_wire_sandbox_state){.id = sb->id,
                                              .function = sb->function,
                                              .endpoint = eps[n],
                                              .state = (char *)wk_sandbox_state_name(sb->state),
                                              .exit_reason =
                                                  sb->exit_reason[0] ? sb->exit_reason : NULL};
    }
    struct dg_wire_sandbox_list m = {
        .name = reg->name, .runtime = (char *)reg->rt->name, .sandboxes = v, .nsandboxes = n};
    dg_http_respond_json(r, 200, dg_wire_sandbox_list_encode(&m));
    free(v);
    free(eps);
}

/* Delete sandbox `id`, answered as item i of b. */
static void delete_one(struct wk_registry *reg, struct dg_batch_reply *b, size_t i,
                       struct dg_str id)
{
    if (wk_registry_delete(reg, id) < 0)
        dg_batch_reply_text(b, i, 404, "sandbox '%.*s' not found", (int)id.len, id.ptr);
    else
        dg_batch_reply_text(b, i, 200, "deleting %.*s", (int)id.len, id.ptr);
}

static void api_delete(struct dg_http_req *r, void *ud)
{
    delete_one(ud, dg_batch_reply_single(r, NULL), 0, dg_http_req_param(r, "id"));
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
    size_t i;
    struct dg_batch_reply *b = dg_batch_reply_start(r, json_array_size(items), NULL);
    json_array_foreach(items, i, item)
    {
        const char *id;
        if (dg_wire_delete_item_decode(item, &id, &err) < 0)
            dg_batch_reply_text(b, i, 400, "no sandbox: %s", err.msg);
        else
            delete_one(ud, b, i, dg_str_c(id));
    }
    json_decref(root);
}

void wk_api_mount(struct dg_http_server *s, struct wk_registry *reg)
{
    /* the control plane's API (with authTokenFile: its credential only; docs/security.md) */
    const unsigned cp_only = DG_HTTP_AUTH_CP;
    dg_http_route(s, "POST", DG_WIRE_PATH_SANDBOXES, api_create, reg, cp_only);
    dg_http_route(s, "GET", DG_WIRE_PATH_SANDBOXES, api_list, reg,
                  DG_HTTP_AUTH_CP | DG_HTTP_AUTH_OPERATOR);
    dg_http_route(s, "POST", DG_WIRE_PATH_SANDBOXES_BATCH, api_create_batch, reg, cp_only);
    dg_http_route(s, "POST", DG_WIRE_PATH_SANDBOXES_DELETE, api_delete_batch, reg, cp_only);
    dg_http_route(s, "DELETE", DG_WIRE_PATH_SANDBOXES "/:id", api_delete, reg, cp_only);
}
