/*
 * dirigent-dp: the data plane. Invocations on portProxy (8080, proxy.c), the
 * control plane's API on portGRPC (8081, api.c), both adapters around the
 * I/O-free core (dp_core.c: functions, endpoints, queues, dispatch). This file
 * wires them: the config, the loop and its 50 ms cron (dp_core_tick), the
 * registration and heartbeats with the control plane, signals and shutdown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/auth.h"
#include "dirigent/config.h"
#include "dirigent/daemon.h"
#include "dirigent/heartbeat.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"
#include "dirigent/wire.h"
#include "async.h"
#include "dp.h"

struct dp_config {
    char *host;
    int64_t port_proxy, port_api;
    char *lb_policy;
    char *log_level;
    char *trace_folder;
    int64_t queue_timeout_ms;
    bool admission;
    int64_t admission_max_wait_ms, admission_min_queue;
    int64_t heartbeat_ms, report_interval_ms;
    char *name;
    struct dg_strlist cp_addresses;
    char *auth_token_file;
    bool async; /* asynchronous invocations (async.h) */
    int64_t port_read, number_retries, async_max_pending;
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
    {.key = "admissionControl",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct dp_config, admission),
     .def = "true",
     .help = "refuse at once (503 with Retry-After; gRPC UNAVAILABLE) a request that would "
             "queue when its expected wait (the queue ahead of it over the rate that queue is "
             "served at) is over the limit: behind every cold start, admissionMaxWait; behind "
             "its function's own sandboxes, its deadline (docs/decisions.md)"},
    {.key = "admissionMaxWait",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct dp_config, admission_max_wait_ms),
     .def = "50ms",
     .min = 0,
     .max = 3600000,
     .help = "with admissionControl: the longest expected wait behind a backlog of cold "
             "starts a function's first request at zero is admitted with, over the usual wait "
             "of one that found that queue empty (0: only the deadline, coldStartTimeout or "
             "the client's grpc-timeout; a function's own queue has only the deadline)"},
    {.key = "admissionMinQueue",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, admission_min_queue),
     .def = "16",
     .min = 0,
     .max = 1000000,
     .help = "with admissionControl: fewer cold starts queued than this are a burst served "
             "side by side, not a backlog: admissionMaxWait does not refuse for them, only the "
             "deadline does"},
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
    {.key = "reportInterval",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct dp_config, report_interval_ms),
     .def = "2ms",
     .min = 0,
     .max = 1000,
     .help = "the least time between two reports to the control plane of functions whose "
             "requests wait (a cold start): one after a quiet spell goes at once, what comes "
             "sooner joins the next (0: one per loop turn)"},
    {.key = "name",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, name),
     .def = "",
     .help = "identity at the CP (empty: HOSTNAME-PORTPROXY)"},
    {.key = "authTokenFile",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, auth_token_file),
     .def = "",
     .help = "the cluster key file (mode 0600): the API then needs the CP's credential and the "
             "heartbeats carry node.NAME; empty: no authentication, allowed only on a loopback "
             "dataPlaneIp"},
    {.key = "traceOutputFolder",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct dp_config, trace_folder),
     .def = "data",
     .help = "where proxy_trace.csv is written (empty: no trace)"},
    {.key = "async",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct dp_config, async),
     .def = "false",
     .help = "asynchronous invocations: every request on portProxy is answered at once with a "
             "request id, runs when a sandbox is free, and its result is fetched on "
             "portProxyRead (needs controlPlaneAddress: requests and results are kept in the "
             "control plane's store)"},
    {.key = "portProxyRead",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, port_read),
     .def = "8082",
     .min = 0,
     .max = 65535,
     .help = "with async: asynchronous results, the id as the request body or the path /ID "
             "(0: ephemeral, printed)"},
    {.key = "numberRetries",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, number_retries),
     .def = "3",
     .min = 1,
     .max = 100,
     .help = "with async: tries of a request whose sandbox fails (not 200 or 400) before its "
             "result is 500"},
    {.key = "asyncMaxPending",
     .type = DG_CONF_INT,
     .offset = offsetof(struct dp_config, async_max_pending),
     .def = "10000",
     .min = 1,
     .max = 1000000,
     .help = "with async: accepted requests without a stored result at most; more get 429"},
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

static struct {
    struct dp_config cfg;
    struct dp dp;
    struct dg_daemon daemon;
    struct dg_http_server *ingress, *api;
    unsigned open_servers;
    int proxy_port, api_port;
    struct dg_auth_key key;
    char cred[DG_AUTH_CRED_MAX];
} g;

static void on_cron(uv_timer_t *t)
{
    dp_core_tick(g.dp.core);
}

static json_t *registration_body(void *ud)
{
    char api[96], proxy[96];
    /* the ports as bound: the servers may be gone while a last beat goes out at shutdown */
    snprintf(api, sizeof(api), "%s:%d", g.cfg.host, g.api_port);
    snprintf(proxy, sizeof(proxy), "%s:%d", g.cfg.host, g.proxy_port);
    struct dg_wire_dp_beat m = {.name = g.dp.name, .api = api, .proxy = proxy};
    return dg_wire_dp_beat_encode(&m); /* the heartbeat sets its resync flag */
}

static void on_server_closed(void *ud)
{
    struct dp *dp = &g.dp;
    if (--g.open_servers > 0)
        return;
    uv_timer_stop(&dp->cron);
    uv_close((uv_handle_t *)&dp->cron, NULL);
    uv_close((uv_handle_t *)&dp->report_timer, NULL);
    dg_trace_close(dp->proxy_trace);
    dp->proxy_trace = NULL;
    dg_heartbeat_stop(dp->hb);
    dp->hb = NULL;
    dp_api_free(dp);
    dp_core_free(dp->core); /* its endpoints close their pools */
    dp->core = NULL;
    dg_strmap_free(&dp->pools);
    dg_daemon_deinit(&g.daemon);
}

static void on_stop(void *ud)
{
    uint64_t grace = (uint64_t)g.cfg.http.shutdown_grace_ms;
    dg_http_server_close(g.ingress, grace, on_server_closed, NULL);
    dg_http_server_close(g.api, grace, on_server_closed, NULL);
    if (g.cfg.async)
        dp_async_stop(grace, on_server_closed, NULL);
}

/* The core with its metrics and the adapters' effects. */
static void core_new(struct dp *dp)
{
    struct dp_core_config cc = {.queue_timeout_ms = (uint64_t)g.cfg.queue_timeout_ms,
                                .seed = dg_now_us(),
                                .admission = g.cfg.admission,
                                .admit_max_wait_ms = (uint64_t)g.cfg.admission_max_wait_ms,
                                .admit_min_queue = (unsigned)g.cfg.admission_min_queue};
    dp_lb_policy_parse(g.cfg.lb_policy, &cc.policy);
    dp->metrics = dg_metrics_new();
    cc.f_requests = dg_metrics_counter(dp->metrics, "dg_dp_requests_total",
                                       "Invocations received, per function.", "function");
    cc.f_cold = dg_metrics_counter(dp->metrics, "dg_dp_cold_starts_total",
                                   "Invocations that found no sandbox, per function.", "function");
    cc.f_queue = dg_metrics_gauge(dp->metrics, "dg_dp_queue_depth",
                                  "Invocations waiting for a sandbox, per function.", "function");
    cc.m_refused = dg_metric_get1(
        dg_metrics_counter(dp->metrics, "dg_dp_refused_total",
                           "Invocations refused at arrival by admission control (503 with "
                           "Retry-After): their expected wait was over what is admitted.",
                           NULL),
        NULL);
    struct dg_metric_family *up = dg_metrics_counter(
        dp->metrics, "dg_dp_upstream_requests_total",
        "Requests sent to sandboxes, per upstream protocol (http1, h2c).", "protocol");
    dp->m_up_http1 = dg_metric_get1(up, "http1");
    dp->m_up_h2c = dg_metric_get1(up, "h2c");
    cc.f_latency =
        dg_metrics_histogram(dp->metrics, "dg_dp_request_seconds",
                             "Invocation time in the data plane (queue + proxying), "
                             "per function.",
                             "function", dg_metrics_latency_buckets, dg_metrics_latency_nbuckets);
    struct dp_effects fx = {.ud = dp};
    dp_proxy_effects(&fx);
    dp_api_effects(&fx);
    dp->core = dp_core_new(&cc, &fx);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    struct dp *dp = &g.dp;
    dg_log_init("dp");
    int rc = dg_daemon_configure(&dp_schema, &g.cfg, &g.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;

    dp->loop = uv_default_loop();
    dg_http_pool_opts_default(&dp->pool_opts);
    dp->pool_opts.request_timeout_ms = 15 * 60 * 1000; /* a function may run long (original) */
    dp->pool_opts.max_conns = 0;                       /* slots bound the connections per sandbox */
    /* kept for bursts: at thousands of cold starts a second a stall of a few ms puts hundreds
     * of requests in flight to one address (emulated sandboxes share one), and each connection
     * closed over the limit was a connect, an accept and a close at the next burst */
    dp->pool_opts.max_idle = 1024;
    dp->report_interval_ms = (uint64_t)g.cfg.report_interval_ms;
    core_new(dp);

    if (dg_daemon_init(&g.daemon, dp->loop, "dp", on_stop, NULL, &err) < 0) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    if (g.cfg.trace_folder[0] &&
        !(dp->proxy_trace = dg_trace_open(dp->loop, g.cfg.trace_folder, "proxy_trace.csv",
                                          "time,service_name,container_id,get_metadata,"
                                          "add_deployment,cold_start,load_balancing,cc_throttling,"
                                          "proxying,serialization,persistence_layer,other",
                                          &err))) {
        dg_log(DG_LOG_ERROR, "dp", "traceOutputFolder: %s", err.msg);
        return 1;
    }
    uv_timer_init(dp->loop, &dp->cron);
    uv_timer_init(dp->loop, &dp->report_timer);
    uv_timer_start(&dp->cron, on_cron, 50, 50);
    uv_unref((uv_handle_t *)&dp->cron);

    struct dg_http_limits limits;
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.ingress = dg_http_server_new(dp->loop, &limits, "ingress");
    dg_http_set_fallback(g.ingress, dp_invoke, dp, DG_HTTP_STREAM);
    dg_http_server_enable_h2c(g.ingress); /* HTTP/1.1 and h2c on the proxy port */
    dg_http_conf_internal_limits(&g.cfg.http, &limits);
    g.api = dg_http_server_new(dp->loop, &limits, "api");
    dg_daemon_mount_health_metrics(g.api, dp->metrics);
    dp_api_routes(dp, g.api);
    g.open_servers = 2;
    if (dg_http_server_listen(g.ingress, g.cfg.host, (int)g.cfg.port_proxy, &err) < 0 ||
        dg_http_server_listen(g.api, g.cfg.host, (int)g.cfg.port_api, &err) < 0) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    g.proxy_port = dg_http_server_port(g.ingress);
    g.api_port = dg_http_server_port(g.api);
    if (g.cfg.name[0]) {
        dp->name = dg_xstrdup(g.cfg.name);
    } else {
        char host[64] = "dp";
        gethostname(host, sizeof(host) - 1);
        for (char *c = host; *c; c++) /* a credential's name: no dots (lib/auth.h) */
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
                *c = '-';
        dp->name = dg_xasprintf("%s-%d", host, dg_http_server_port(g.ingress));
    }
    /* authTokenFile (docs/security.md): the API only for the CP, heartbeats as node.NAME */
    const char *hosts[] = {g.cfg.host};
    int auth = dg_auth_daemon_setup("dp", g.cfg.auth_token_file, DG_AUTH_NODE, dp->name, hosts, 1,
                                    &g.key, g.cred, &err);
    if (auth < 0) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 2;
    }
    if (auth)
        dg_auth_server(g.api, &g.key);
    if (g.cfg.cp_addresses.n > 0 &&
        !(dp->hb = dg_heartbeat_start_list(dp->loop, &g.cfg.cp_addresses, DG_WIRE_PATH_DATAPLANES,
                                           (uint64_t)g.cfg.heartbeat_ms, registration_body, NULL,
                                           &err))) {
        dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
        return 1;
    }
    if (auth && dp->hb)
        dg_heartbeat_set_bearer(dp->hb, g.cred);
    if (g.cfg.async) {
        if (g.cfg.cp_addresses.n == 0) {
            dg_log(DG_LOG_ERROR, "dp",
                   "async: asynchronous requests are kept in the control plane's store: set "
                   "controlPlaneAddress");
            return 2;
        }
        struct dp_async_config ac = {.host = g.cfg.host,
                                     .port_read = (int)g.cfg.port_read,
                                     .retries = (unsigned)g.cfg.number_retries,
                                     .max_pending = (unsigned)g.cfg.async_max_pending,
                                     .cp = &g.cfg.cp_addresses,
                                     .bearer = auth ? g.cred : NULL,
                                     .limits = &limits};
        dg_http_conf_limits(&g.cfg.http, &limits);
        if (dp_async_start(dp, g.ingress, &ac, &err) < 0) {
            dg_log(DG_LOG_ERROR, "dp", "%s", err.msg);
            return 1;
        }
        g.open_servers++;
        dg_log_always("dp", "async results on %s:%d, numberRetries %lld", g.cfg.host,
                      dp_async_read_port(), (long long)g.cfg.number_retries);
    }
    dg_log_always("dp", "proxy on %s:%d, api on %s:%d, policy %s", g.cfg.host,
                  dg_http_server_port(g.ingress), g.cfg.host, dg_http_server_port(g.api),
                  g.cfg.lb_policy);

    uv_run(dp->loop, UV_RUN_DEFAULT);

    dg_loop_close_all(dp->loop);
    dg_metrics_free(dp->metrics);
    free(dp->name);
    dg_conf_free(&dp_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "dp", "stopped");
    return 0;
}
