/*
 * dirigent-worker: creates and deletes sandboxes for the control plane
 * (DESIGN.md §1, §6). This file parses the config, serves the worker API and
 * keeps the sandbox list; the runtimes (runtime_process.c,
 * runtime_emulated.c) do the work.
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
 *   GET    /health, /metrics
 *
 * Registration with the control plane and heartbeats come with the control
 * plane daemon (cluster-core issue); until then the worker serves its API
 * standalone.
 *
 * Everything the worker makes on the host is named from its instance (instance.c: a hash
 * of its dataDir, or runDir), so workers of several clusters on one host never meet.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "dirigent/config.h"
#include "dirigent/daemon.h"
#include "dirigent/heartbeat.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/resources.h"
#include "instance.h"
#include "worker.h"

struct wk_config {
    int64_t port;
    char *host;
    char *name;
    char *runtime;
    char *log_level;
    int64_t readiness_timeout_ms;
    int64_t emulated_create_delay_ms;
    int64_t heartbeat_ms;
    int64_t emulated_nodes;
    char *fn_binary;
    struct dg_strlist cp_addresses;
    struct dg_http_conf http;
    /* oci runtime */
    char *oci_runtime;
    char *data_dir, *run_dir;
    char *bridge, *subnet;
    int64_t netns_pool, pids_limit, min_cpu_milli, min_memory_mib, kill_grace_ms;
    int64_t cap_cpu_milli, cap_memory_mib;
    double cpu_overcommit;
    char *cpu_limit;
    struct dg_strlist insecure_registries, prefetch;
};

static const char *const runtimes[] = {"process", "emulated", "oci", NULL};
static const char *const oci_runtimes[] = {"crun", "runc", "runsc", NULL};

static const struct dg_conf_field wk_fields[] = {
    {.key = "port",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, port),
     .def = "10010",
     .min = 0,
     .max = 65535,
     .help = "API port (0: ephemeral, printed at start)"},
    {.key = "workerNodeIp",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, host),
     .def = "127.0.0.1",
     .help = "address the API listens on and the CP reaches"},
    {.key = "name",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, name),
     .def = "",
     .help = "worker identity, kept across restarts (empty: the hostname)"},
    {.key = "runtime",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct wk_config, runtime),
     .def = "process",
     .choices = runtimes,
     .help = "sandbox runtime"},
    {.key = "logLevel",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct wk_config, log_level),
     .def = "info",
     .choices = dg_log_level_choices,
     .help = "log verbosity"},
    {.key = "readinessTimeout",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct wk_config, readiness_timeout_ms),
     .def = "10s",
     .min = 1,
     .max = 600000,
     .help = "a sandbox not answering on its port by then fails its create"},
    {.key = "emulatedCreateDelayMs",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, emulated_create_delay_ms),
     .def = "0",
     .min = 0,
     .max = 600000,
     .help = "emulated runtime: what one create costs, ms"},
    {.key = "fnBinary",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, fn_binary),
     .def = "",
     .help = "emulated runtime: dirigent-fn to share (empty: next to this binary)"},
    {.key = "controlPlaneAddress",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct wk_config, cp_addresses),
     .def = "127.0.0.1:9090",
     .help = "control plane replicas, IP:PORT of each internal API (the leader is found; "
             "empty: run standalone)"},
    {.key = "emulatedNodes",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, emulated_nodes),
     .def = "1",
     .min = 1,
     .max = 10000,
     .help = "register as N workers NAME-0..N-1 (scale tests on one machine; emulated runtime)"},
    {.key = "cpuMilli",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, cap_cpu_milli),
     .def = "0",
     .min = 0,
     .max = 1LL << 40,
     .help = "CPU advertised to the CP for placement, milli-CPU (0: the machine's cores x 1000; "
             "each emulated node advertises it whole); placement may reserve it x cpuOvercommit"},
    {.key = "memoryMiB",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, cap_memory_mib),
     .def = "0",
     .min = 0,
     .max = 1LL << 40,
     .help = "memory advertised to the CP for placement, MiB (0: the machine's)"},
    {.key = "cpuOvercommit",
     .type = DG_CONF_DOUBLE,
     .offset = offsetof(struct wk_config, cpu_overcommit),
     .def = "10",
     .dmin = 1,
     .dmax = 1000,
     .help = "placement may reserve cpuMilli x this for sandboxes (CPU requests are weights, "
             "not quotas, unless sandboxCpuLimit says so; memory is never overcommitted)"},
    {.key = "heartbeatInterval",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct wk_config, heartbeat_ms),
     .def = "5s",
     .min = 100,
     .max = 600000,
     .help = "registration and heartbeat period"},
    {.key = "ociRuntime",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct wk_config, oci_runtime),
     .def = "crun",
     .choices = oci_runtimes,
     .help = "oci runtime: the OCI runtime that runs containers"},
    {.key = "dataDir",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, data_dir),
     .def = "",
     .help = "oci runtime: image cache (empty: /var/lib/dirigent/NAME); without runDir it also "
             "names this worker instance: ID = 6 hex digits hashed from its absolute path"},
    {.key = "runDir",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, run_dir),
     .def = "",
     .help = "sandboxes, namespaces, runtime state, the instance lock (empty: "
             "/run/dirigent/NAME-ID; when set, ID is hashed from it)"},
    {.key = "bridge",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, bridge),
     .def = "",
     .help = "oci runtime: the bridge sandboxes' veths (dvID<N>) join (empty: dgID, created "
             "at start and removed at stop)"},
    {.key = "sandboxSubnet",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, subnet),
     .def = "",
     .help = "oci runtime: sandbox addresses (CIDR; the bridge takes the first; empty: the /22 "
             "of 100.64.0.0/10 numbered ID mod 4096, or the next one not routed yet)"},
    {.key = "netnsPool",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, netns_pool),
     .def = "16",
     .min = 1,
     .max = 4096,
     .help = "oci runtime: network namespaces kept ready"},
    {.key = "sandboxPidsLimit",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, pids_limit),
     .def = "1024",
     .min = 1,
     .max = 1 << 22,
     .help = "oci runtime: processes a sandbox may have"},
    {.key = "sandboxMinCpuMilli",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, min_cpu_milli),
     .def = "100",
     .min = 1,
     .max = 1000000,
     .help = "a sandbox takes at least this much CPU (milli-CPU): what the CP reserves for "
             "it and its weight (cpu.shares) and quota base in the oci runtime (emulated "
             "sandboxes, which cost nothing, take their request alone)"},
    {.key = "sandboxMinMemoryMiB",
     .type = DG_CONF_INT,
     .offset = offsetof(struct wk_config, min_memory_mib),
     .def = "32",
     .min = 1,
     .max = 1 << 24,
     .help = "a sandbox takes at least this much memory (MiB): what the CP reserves for it "
             "and its limit in the oci runtime (not for emulated sandboxes)"},
    {.key = "sandboxCpuLimit",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct wk_config, cpu_limit),
     .def = "none",
     .help = "oci runtime: CPU quota of a sandbox: none (its CPU request is a weight only, as "
             "the original), request (a quota of max(request, sandboxMinCpuMilli)), or a "
             "factor of that like 2x"},
    {.key = "killGrace",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct wk_config, kill_grace_ms),
     .def = "2s",
     .min = 0,
     .max = 600000,
     .help = "oci runtime: SIGTERM to SIGKILL on a delete"},
    {.key = "insecureRegistries",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct wk_config, insecure_registries),
     .def = "",
     .help = "oci runtime: registries (host:port) pulled from without TLS (local ones always)"},
    {.key = "prefetchImages",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct wk_config, prefetch),
     .def = "",
     .help = "oci runtime: images pulled at start"},
    DG_CONF_HTTP_FIELDS(struct wk_config, http),
};

static const struct dg_conf_schema wk_schema = {
    .prog = "dirigent-worker",
    .summary = "creates and deletes function sandboxes for the control plane",
    .fields = wk_fields,
    .nfields = DG_ARRAY_LEN(wk_fields),
};

static struct {
    struct wk_config cfg;
    struct wk_worker w;
    struct dg_daemon daemon;
    struct dg_http_server *server;
    struct dg_heartbeat *hb;        /* the first node's link to the CP (exits, metrics) */
    struct dg_heartbeat **node_hbs; /* one per node (emulatedNodes) */
    char **node_names;
    struct wk_probe *shared_probe;
    struct wk_oci_conf oci;
    struct wk_instance inst; /* names on the host: runDir, bridge, veths, cgroups */
    uv_signal_t again[2];    /* SIGTERM, SIGINT once shutting down */
    char boot[40];           /* this daemon's start: the CP tells a restart from a heartbeat */
    bool stopping, hurry;
} g;

/* ---- sandboxes -------------------------------------------------------------------------- */

void wk_spec_free(struct wk_spec *s)
{
    free(s->function);
    free(s->image);
    dg_strlist_free(&s->env);
    dg_strlist_free(&s->args);
}

int wk_free_port(struct dg_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return dg_err_set(err, DG_E_INVAL, "no free port: socket: %m");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    if (port < 0)
        return dg_err_set(err, DG_E_INVAL, "no free port on 127.0.0.1");
    return port;
}

static const char *state_name(enum wk_sb_state s)
{
    switch (s) {
    case WK_SB_CREATING:
        return "creating";
    case WK_SB_READY:
        return "ready";
    case WK_SB_EXITED:
        return "exited";
    case WK_SB_DELETING:
        return "deleting";
    }
    return "?";
}

static struct wk_sandbox *sandbox_find(const char *id, size_t len)
{
    return dg_strmap_get(&g.w.by_id, (struct dg_str){id, len});
}

static json_t *latency_json(const struct wk_latency *l)
{
    return json_pack("{sI sI sI sI sI sI}", "image", (json_int_t)l->image_us, "rootfs",
                     (json_int_t)l->rootfs_us, "network", (json_int_t)l->network_us, "start",
                     (json_int_t)l->start_us, "ready", (json_int_t)l->ready_us, "total",
                     (json_int_t)l->total_us);
}

/* Answer sb's create: its request, or its item in a batch (once). */
static void create_answer(struct wk_sandbox *sb, int status, const char *ctype, const char *body,
                          size_t len)
{
    struct dg_http_req *r = sb->created_ud;
    struct dg_batch_reply *b = sb->batch;
    sb->created_ud = NULL;
    sb->batch = NULL;
    if (r)
        dg_http_respond(r, status, ctype, body, len);
    else if (b)
        dg_batch_reply_item(b, sb->batch_i, status, body, len);
}

void wk_sandbox_created(struct wk_sandbox *sb, const struct dg_err *err)
{
    sb->lat.total_us = dg_now_us() - sb->t0_us;
    if (err) {
        dg_counter_add(g.w.create_failures, 1);
        dg_log(DG_LOG_WARN, "worker", "create %s (%s) failed: %s", sb->id, sb->function, err->msg);
        char msg[600];
        int n = snprintf(msg, sizeof(msg), "create failed: %s", err->msg);
        create_answer(sb, 503, "text/plain", msg, (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        return;
    }
    sb->state = WK_SB_READY;
    dg_counter_add(g.w.creates, 1);
    dg_histogram_observe(dg_metric_get1(g.w.create_seconds, NULL), (double)sb->lat.total_us / 1e6);
    dg_log(DG_LOG_DEBUG, "worker", "sandbox %s (%s) ready at %s:%d in %llu us", sb->id,
           sb->function, sb->host, sb->port, (unsigned long long)sb->lat.total_us);
    if (sb->created_ud || sb->batch) {
        char ep[80];
        snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
        json_t *j = json_pack("{ss ss ss so}", "id", sb->id, "function", sb->function, "endpoint",
                              ep, "latencyUs", latency_json(&sb->lat));
        char *body = dg_json_dumps(j);
        json_decref(j);
        create_answer(sb, 201, "application/json", body, strlen(body));
        free(body);
    }
}

void wk_exit_reason(int64_t status, char *buf, size_t len)
{
    if (status < 0)
        snprintf(buf, len, "killed by signal %lld (%s)", (long long)-status,
                 strsignal((int)-status));
    else
        snprintf(buf, len, "exited with status %lld", (long long)status);
}

void wk_sandbox_exited(struct wk_sandbox *sb, int64_t status, const char *reason)
{
    sb->state = WK_SB_EXITED;
    sb->exit_status = status;
    if (reason && reason[0])
        snprintf(sb->exit_reason, sizeof(sb->exit_reason), "%s", reason);
    else
        wk_exit_reason(status, sb->exit_reason, sizeof(sb->exit_reason));
    dg_counter_add(g.w.unexpected_exits, 1);
    dg_log(DG_LOG_WARN, "worker", "sandbox %s (%s) %s", sb->id, sb->function, sb->exit_reason);
    if (g.hb) /* the CP replaces it at once, and tells the data planes why it went */
        dg_heartbeat_post(g.hb, "/v1/sandboxes/exited",
                          json_pack("{ss ss ss sI ss}", "worker", g.w.name, "id", sb->id,
                                    "function", sb->function, "status", (json_int_t)status,
                                    "reason", sb->exit_reason));
}

void wk_sandbox_gone(struct wk_sandbox *sb)
{
    dg_strmap_del(&g.w.by_id, dg_str_c(sb->id));
    if (sb->prev)
        sb->prev->next = sb->next;
    else
        g.w.sandboxes = sb->next;
    if (sb->next)
        sb->next->prev = sb->prev;
    g.w.nsandboxes--;
    free(sb->function);
    free(sb);
}

static void create_aborted(struct dg_http_req *r, void *ud)
{
    struct wk_sandbox *sb = ud;
    sb->created_ud = NULL;
    sb->batch = NULL;
    /* the caller (the CP, timed out) never learns its id: nobody would delete it */
    if (sb->state == WK_SB_CREATING || sb->state == WK_SB_READY) {
        sb->state = WK_SB_DELETING;
        g.w.rt->destroy(sb);
    }
}

static void create_item_aborted(void *ud)
{
    if (ud) /* NULL: an item refused before it started */
        create_aborted(NULL, ud);
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
 * false (with the 400 text in err) when the spec is bad: nothing started. */
static bool create_from(json_t *j, struct dg_http_req *r, struct dg_batch_reply *batch, size_t i,
                        struct dg_err *err)
{
    struct wk_spec spec = {0};
    if (dg_json_unpack(j, spec_fields, DG_ARRAY_LEN(spec_fields), &spec, 0, err) < 0)
        return false;
    if (g.w.rt == &wk_runtime_process && (!spec.image || spec.image[0] != '/')) {
        dg_err_set(err, DG_E_INVAL,
                   "field 'image': the process runtime runs a command: expected an absolute "
                   "path, got '%s'",
                   spec.image ? spec.image : "");
        wk_spec_free(&spec);
        return false;
    }
    struct wk_sandbox *sb = dg_xcalloc(1, sizeof(*sb));
    sb->w = &g.w;
    snprintf(sb->id, sizeof(sb->id), "%s-%x-%llu", g.w.name, g.w.run,
             (unsigned long long)++g.w.next_id);
    sb->function = dg_xstrdup(spec.function);
    sb->state = WK_SB_CREATING;
    sb->t0_us = dg_now_us();
    if (r) {
        sb->created_ud = r;
        dg_http_req_on_abort(r, create_aborted, sb);
    } else {
        sb->batch = batch;
        sb->batch_i = i;
        dg_batch_reply_set_ud(batch, i, sb);
    }
    sb->next = g.w.sandboxes;
    if (g.w.sandboxes)
        g.w.sandboxes->prev = sb;
    g.w.sandboxes = sb;
    g.w.nsandboxes++;
    dg_strmap_put(&g.w.by_id, dg_str_c(sb->id), sb);
    g.w.rt->create(sb, &spec); /* may finish, even free sb, before it returns */
    wk_spec_free(&spec);
    return true;
}

static void api_create(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j = NULL;
    struct dg_err err = {0};
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 || !create_from(j, r, NULL, 0, &err))
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
        if (!create_from(item, NULL, b, i, &e)) {
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
    json_t *list = json_array();
    for (struct wk_sandbox *sb = g.w.sandboxes; sb; sb = sb->next) {
        char ep[80];
        snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
        json_t *one = json_pack("{ss ss ss ss}", "id", sb->id, "function", sb->function, "endpoint",
                                ep, "state", state_name(sb->state));
        if (sb->exit_reason[0])
            json_object_set_new(one, "exitReason", json_string(sb->exit_reason));
        json_array_append_new(list, one);
    }
    dg_http_respond_json(
        r, 200,
        json_pack("{ss ss so}", "name", g.w.name, "runtime", g.w.rt->name, "sandboxes", list));
}

/* Delete one sandbox: 200, or 404 when there is no such sandbox (or it is going already). */
static int delete_one(struct dg_str id)
{
    struct wk_sandbox *sb = sandbox_find(id.ptr, id.len);
    if (!sb || sb->state == WK_SB_DELETING)
        return 404;
    if (sb->state == WK_SB_CREATING) {
        static const char msg[] = "create failed: deleted while it was being created";
        create_answer(sb, 503, "text/plain", msg, sizeof(msg) - 1);
    }
    sb->state = WK_SB_DELETING;
    g.w.rt->destroy(sb); /* in the background */
    return 200;
}

static void api_delete(struct dg_http_req *r, void *ud)
{
    struct dg_str id = dg_http_req_param(r, "id");
    if (delete_one(id) == 404)
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
        int st = id ? delete_one(dg_str_c(id)) : 400;
        char msg[160];
        int len = snprintf(msg, sizeof(msg), "%s %s", st == 200 ? "deleting" : "no sandbox",
                           id ? id : "(not a string)");
        dg_batch_reply_item(b, i, st, msg, (size_t)DG_MIN(len, (int)sizeof(msg) - 1));
    }
    json_decref(root);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static double sandboxes_now(void *ud)
{
    return (double)g.w.nsandboxes;
}

static void on_server_closed(void *ud)
{
    g.server = NULL;
    for (int64_t i = 0; g.node_hbs && i < g.cfg.emulated_nodes; i++)
        dg_heartbeat_stop(g.node_hbs[i]);
    g.hb = NULL;
    /* stop what is left: sandboxes belong to this worker's lifetime */
    for (struct wk_sandbox *sb = g.w.sandboxes, *next; sb; sb = next) {
        next = sb->next;
        if (sb->state != WK_SB_DELETING) {
            sb->state = WK_SB_DELETING;
            g.w.rt->destroy(sb);
        }
    }
    if (g.hurry && g.w.rt->hurry) /* a second signal came before the sandboxes were stopped */
        g.w.rt->hurry(&g.w);
    if (g.w.rt->deinit)
        g.w.rt->deinit(&g.w);
}

/* A signal once shutting down (Ctrl-C in a terminal sends SIGINT to every process of the
 * group, and `dirigent up` sends SIGTERM too): never exit with sandboxes, mounts or the
 * bridge left behind; hurry instead (the sandboxes get SIGKILL now). */
static void on_signal_again(uv_signal_t *h, int signum)
{
    dg_log(DG_LOG_WARN, "worker",
           "signal %d: already shutting down; killing the sandboxes now, then removing what "
           "this worker made (SIGKILL abandons that)",
           signum);
    g.hurry = true;
    if (g.w.rt->hurry)
        g.w.rt->hurry(&g.w);
}

static void on_stop(void *ud)
{
    g.stopping = true;
    /* the daemon's watchers exit at a second signal: ours take over first (so the signal is
     * never left at its default action in between), kept until the loop ends */
    static const int sigs[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        uv_signal_init(g.w.loop, &g.again[i]);
        uv_signal_start(&g.again[i], on_signal_again, sigs[i]);
        uv_unref((uv_handle_t *)&g.again[i]);
    }
    dg_daemon_deinit(&g.daemon);
    wk_probe_cancel(g.shared_probe);
    g.shared_probe = NULL;
    if (g.server)
        dg_http_server_close(g.server, (uint64_t)g.cfg.http.shutdown_grace_ms, on_server_closed,
                             NULL);
}

static json_t *registration_body(void *ud)
{
    char address[96];
    snprintf(address, sizeof(address), "%s:%d", g.cfg.host, dg_http_server_port(g.server));
    const char *name = ud ? (const char *)ud : g.w.name;
    /* capacity for placement: configured, else the machine's (an emulated node stands for a
     * machine like this one: emulated sandboxes use nothing real) */
    int64_t cpu =
        g.cfg.cap_cpu_milli ? g.cfg.cap_cpu_milli : (int64_t)uv_available_parallelism() * 1000;
    int64_t mem = g.cfg.cap_memory_mib ? g.cfg.cap_memory_mib
                                       : (int64_t)(uv_get_total_memory() / (1024 * 1024));
    /* and the accounting rule's parameters: the CP reserves by them (lib/resources.c). The
     * floors stand for what a real sandbox costs at least; an emulated one costs nothing, so
     * it takes its request alone (else 20 emulated nodes would hold only ~4,000 sandboxes) */
    bool emulated = g.w.rt == &wk_runtime_emulated;
    json_t *body = json_pack(
        "{ss ss ss sI sI sf sI sI}", "name", name, "address", address, "boot", g.boot, "cpuMilli",
        (json_int_t)cpu, "memoryMiB", (json_int_t)mem, "cpuOvercommit", g.cfg.cpu_overcommit,
        "sandboxMinCpuMilli", (json_int_t)(emulated ? 1 : g.cfg.min_cpu_milli),
        "sandboxMinMemoryMiB", (json_int_t)(emulated ? 1 : g.cfg.min_memory_mib));
    if (ud && strcmp(name, g.node_names[0]) != 0)
        return body; /* the sandboxes are reported once, by the first node */
    /* the sandboxes it runs, when the CP may not know them (the first beat, the first after a
     * failure, or when the CP asks): it adopts them. Not on every beat: with thousands of
     * sandboxes that list would be most of the CP's work. */
    if (g.node_hbs && g.node_hbs[0] && !dg_heartbeat_resyncing(g.node_hbs[0]))
        return body;
    json_t *sbs = json_array();
    for (struct wk_sandbox *sb = g.w.sandboxes; sb; sb = sb->next) {
        if (sb->state != WK_SB_READY)
            continue;
        char ep[80];
        snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
        json_array_append_new(
            sbs, json_pack("{ss ss ss}", "id", sb->id, "function", sb->function, "endpoint", ep));
    }
    json_object_set_new(body, "sandboxes", sbs);
    return body;
}

static void shared_ready(void *ud, const struct dg_err *perr)
{
    struct dg_err err = {0};
    g.shared_probe = NULL;
    if (g.stopping || !g.server)
        return;
    if (perr) {
        dg_log(DG_LOG_ERROR, "worker", "emulated runtime: the shared dirigent-fn: %s", perr->msg);
        exit(1);
    }
    if (dg_http_server_listen(g.server, g.cfg.host, (int)g.cfg.port, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        exit(1);
    }
    dg_log_always("worker", "%s: listening on %s:%d, runtime %s", g.w.name, g.cfg.host,
                  dg_http_server_port(g.server), g.w.rt->name);
    if (g.cfg.cp_addresses.n == 0)
        return;
    /* emulatedNodes: NAME-0..N-1, all at this address (one process stands for N nodes) */
    int64_t n = g.cfg.emulated_nodes;
    g.node_hbs = dg_xcalloc((size_t)n, sizeof(*g.node_hbs));
    g.node_names = dg_xcalloc((size_t)n, sizeof(*g.node_names));
    for (int64_t i = 0; i < n; i++) {
        g.node_names[i] = n > 1 ? dg_xasprintf("%s-%lld", g.w.name, (long long)i) : NULL;
        g.node_hbs[i] = dg_heartbeat_start_list(g.w.loop, &g.cfg.cp_addresses, "/v1/workers",
                                                (uint64_t)g.cfg.heartbeat_ms, registration_body,
                                                g.node_names[i], &err);
        if (!g.node_hbs[i]) {
            dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
            exit(1);
        }
    }
    g.hb = g.node_hbs[0];
}

static char *default_fn_binary(const char *argv0)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    const char *base = argv0;
    if (n > 0) {
        exe[n] = '\0';
        base = exe;
    }
    const char *slash = strrchr(base, '/');
    if (!slash)
        return dg_xstrdup("dirigent-fn");
    return dg_xasprintf("%.*s/dirigent-fn", (int)(slash - base), base);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    dg_log_init("worker");
    int rc = dg_daemon_configure(&wk_schema, &g.cfg, &g.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;
    struct dg_cpu_limit cpu_limit;
    if (dg_cpu_limit_parse(g.cfg.cpu_limit, &cpu_limit, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "sandboxCpuLimit: %s", err.msg);
        dg_conf_free(&wk_schema, &g.cfg);
        return 2;
    }

    struct wk_worker *w = &g.w;
    w->loop = uv_default_loop();
    snprintf(g.boot, sizeof(g.boot), "%d-%llu", (int)getpid(), (unsigned long long)dg_wall_ms());
    /* a restarted worker must not reuse its predecessor's sandbox ids: late answers and the
     * CP's lists could mistake a new sandbox for an old one */
    g.w.run = (unsigned)((dg_wall_ms() / 10) & 0xfffff);
    w->rt = strcmp(g.cfg.runtime, "emulated") == 0 ? &wk_runtime_emulated
            : strcmp(g.cfg.runtime, "oci") == 0    ? &wk_runtime_oci
                                                   : &wk_runtime_process;
    if (g.cfg.name[0])
        snprintf(w->name, sizeof(w->name), "%s", g.cfg.name);
    else if (gethostname(w->name, sizeof(w->name) - 1) == -1)
        snprintf(w->name, sizeof(w->name), "worker");
    w->readiness_timeout_ms = (uint64_t)g.cfg.readiness_timeout_ms;
    w->host = g.cfg.host;
    w->emulated_delay_ms = g.cfg.emulated_create_delay_ms;
    w->fn_binary = g.cfg.fn_binary[0] ? dg_xstrdup(g.cfg.fn_binary) : default_fn_binary(argv[0]);
    char *data_dir = g.cfg.data_dir[0] ? dg_xstrdup(g.cfg.data_dir)
                                       : dg_xasprintf("/var/lib/dirigent/%s", w->name);
    /* the oci runtime makes its dataDir first: the instance id then hashes the same resolved
     * path on every start */
    if (w->rt == &wk_runtime_oci && !g.cfg.run_dir[0] && dg_mkdir_p(data_dir, 0755, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "dataDir: %s", err.msg);
        return 1;
    }
    wk_instance_init(&g.inst, w->name, data_dir, g.cfg.run_dir, g.cfg.bridge);
    g.oci = (struct wk_oci_conf){.oci_runtime = g.cfg.oci_runtime,
                                 .data_dir = data_dir,
                                 .run_dir = g.inst.run_dir,
                                 .instance = &g.inst,
                                 .bridge = g.inst.bridge,
                                 .subnet = g.cfg.subnet,
                                 .netns_pool = g.cfg.netns_pool,
                                 .pids_limit = g.cfg.pids_limit,
                                 .min_cpu_milli = g.cfg.min_cpu_milli,
                                 .min_memory_mib = g.cfg.min_memory_mib,
                                 .cpu_limit = cpu_limit,
                                 .kill_grace_ms = g.cfg.kill_grace_ms,
                                 .insecure_registries = &g.cfg.insecure_registries,
                                 .prefetch = &g.cfg.prefetch};
    w->oci = &g.oci;

    if (dg_daemon_init(&g.daemon, w->loop, "worker", on_stop, NULL, &err) < 0 ||
        (w->rt->init && w->rt->init(w, &err) < 0)) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        return 1;
    }
    w->metrics = dg_metrics_new();
    w->creates = dg_metric_get1(dg_metrics_counter(w->metrics, "dg_worker_sandbox_creates_total",
                                                   "Sandboxes created.", NULL),
                                NULL);
    w->create_failures =
        dg_metric_get1(dg_metrics_counter(w->metrics, "dg_worker_sandbox_create_failures_total",
                                          "Sandbox creates that failed.", NULL),
                       NULL);
    w->unexpected_exits =
        dg_metric_get1(dg_metrics_counter(w->metrics, "dg_worker_sandbox_unexpected_exits_total",
                                          "Sandboxes that exited without a delete.", NULL),
                       NULL);
    w->create_seconds =
        dg_metrics_histogram(w->metrics, "dg_worker_sandbox_create_seconds",
                             "Time from create request to a ready sandbox.", NULL,
                             dg_metrics_latency_buckets, dg_metrics_latency_nbuckets);
    dg_metrics_gauge_fn(w->metrics, "dg_worker_sandboxes", "Sandboxes on this worker.",
                        sandboxes_now, NULL);

    struct dg_http_limits limits;
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.server = dg_http_server_new(w->loop, &limits, "worker");
    dg_daemon_mount_health_metrics(g.server, w->metrics);
    dg_http_route(g.server, "POST", "/v1/sandboxes", api_create, NULL, 0);
    dg_http_route(g.server, "GET", "/v1/sandboxes", api_list, NULL, 0);
    dg_http_route(g.server, "POST", "/v1/sandboxes/batch", api_create_batch, NULL, 0);
    dg_http_route(g.server, "POST", "/v1/sandboxes/delete", api_delete_batch, NULL, 0);
    dg_http_route(g.server, "DELETE", "/v1/sandboxes/:id", api_delete, NULL, 0);
    if (w->rt == &wk_runtime_emulated) /* serve once the shared dirigent-fn answers */
        g.shared_probe = wk_probe_start(w->loop, w->host, w->shared_fn_port,
                                        w->readiness_timeout_ms, shared_ready, NULL);
    else
        shared_ready(NULL, NULL);

    uv_run(w->loop, UV_RUN_DEFAULT);

    dg_loop_close_all(w->loop);
    dg_strmap_free(&w->by_id);
    wk_oci_free(w);
    wk_process_free();
    free(data_dir);
    wk_instance_free(&g.inst);
    dg_metrics_free(w->metrics);
    for (int64_t i = 0; g.node_names && i < g.cfg.emulated_nodes; i++)
        free(g.node_names[i]);
    free(g.node_names);
    free(g.node_hbs);
    free(w->fn_binary);
    dg_conf_free(&wk_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "worker", "stopped");
    return 0;
}
