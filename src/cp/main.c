/*
 * dirigent-cp: the control plane. main.c parses the config, starts the two
 * servers (api.c) and the cron timer: the autoscaler tick every 2 s
 * (scaling.c) and heartbeat checks (a worker silent for 3 periods becomes
 * unschedulable and its sandboxes are replaced; a silent data plane is
 * removed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "cp.h"
#include "election.h"
#include "haproxy.h"
#include "scaling.h"
#include "dirigent/config.h"
#include "dirigent/daemon.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"

struct cp_config {
    char *host;
    int64_t port;
    char *registration_server;
    char *placement;
    char *lb_address;
    char *log_level;
    char *trace_folder;
    int64_t heartbeat_ms;
    double chbl_eps;
    int64_t seed;
    char *autoscaler;
    char *persistence;
    char *data_dir;
    struct dg_strlist replicas, raft_addresses;
    int64_t replica_id;
    int64_t election_timeout_ms;
    char *redis_address;
    bool redis_full;
    int64_t redis_replicas;
    char *haproxy_api, *haproxy_backend, *haproxy_server_opts;
    struct dg_http_conf http;
};

static const char *const autoscalers[] = {"dirigent", "knative", NULL};
static const char *const persistences[] = {"sqlite", "redis", "none", NULL};

static const struct dg_conf_field cp_fields[] = {
    {.key = "host",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, host),
     .def = "127.0.0.1",
     .help = "address of the internal API"},
    {.key = "port",
     .type = DG_CONF_INT,
     .offset = offsetof(struct cp_config, port),
     .def = "9090",
     .min = 0,
     .max = 65535,
     .help = "internal API port: workers and data planes (0: ephemeral)"},
    {.key = "registrationServer",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, registration_server),
     .def = "127.0.0.1:9091",
     .help = "IP:PORT of the registration server (port 0: ephemeral)"},
    {.key = "placementPolicy",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct cp_config, placement),
     .def = "random",
     .choices = cp_place_policy_names,
     .help = "where new sandboxes go: random, round-robin, kubernetes (kube-scheduler's "
             "scores), chbl (consistent hashing with bounded loads)"},
    {.key = "autoscaler",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct cp_config, autoscaler),
     .def = "dirigent",
     .choices = autoscalers,
     .help = "dirigent: the original's KPA (target 100%, no scale-to-zero grace); knative: "
             "Knative's defaults (target 70%, 30 s grace, burst capacity 211)"},
    {.key = "persistence",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct cp_config, persistence),
     .def = "sqlite",
     .choices = persistences,
     .help = "where functions, workers and data planes survive a restart: sqlite (a file in "
             "dataDir), redis (shared by replicas), none"},
    {.key = "dataDir",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, data_dir),
     .def = "data/cp",
     .help = "the CP's data directory (sqlite: cp.sqlite in it)"},
    {.key = "replicas",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct cp_config, replicas),
     .def = "",
     .help = "every control-plane replica's internal API address (IP:PORT), this one included, "
             "in replica id order; empty: a single control plane"},
    {.key = "raftAddresses",
     .type = DG_CONF_STRLIST,
     .offset = offsetof(struct cp_config, raft_addresses),
     .def = "",
     .help = "with replicas: each replica's raft address (IP:PORT), in the same order"},
    {.key = "replicaId",
     .type = DG_CONF_INT,
     .offset = offsetof(struct cp_config, replica_id),
     .def = "1",
     .min = 1,
     .max = 64,
     .help = "with replicas: this replica's position in the lists, from 1"},
    {.key = "electionTimeout",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct cp_config, election_timeout_ms),
     .def = "300ms",
     .min = 50,
     .max = 60000,
     .help = "with replicas: raft election timeout (a new leader about this long after the "
             "old one is gone)"},
    {.key = "redis.address",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, redis_address),
     .def = "127.0.0.1:6379",
     .help = "persistence redis: the server, HOST:PORT"},
    {.key = "redis.fullPersistence",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct cp_config, redis_full),
     .def = "false",
     .help = "persistence redis: set appendonly yes and appendfsync always (a write is "
             "answered once fsync'd)"},
    {.key = "redis.replicas",
     .type = DG_CONF_INT,
     .offset = offsetof(struct cp_config, redis_replicas),
     .def = "0",
     .min = 0,
     .max = 100,
     .help = "persistence redis: WAIT for this many replicas to have each write"},
    {.key = "chblEpsilon",
     .type = DG_CONF_DOUBLE,
     .offset = offsetof(struct cp_config, chbl_eps),
     .def = "0.25",
     .dmin = 0.01,
     .dmax = 10,
     .help = "chbl: no worker above (1 + eps) x the average sandbox count"},
    {.key = "placementSeed",
     .type = DG_CONF_INT,
     .offset = offsetof(struct cp_config, seed),
     .def = "0",
     .min = 0,
     .max = INT64_MAX,
     .help = "seed of random placement and tie-breaks (0: from the clock)"},
    {.key = "loadBalancerAddress",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, lb_address),
     .def = "",
     .help = "returned to registrations when set (else the data planes' proxy addresses)"},
    {.key = "haproxy.api",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, haproxy_api),
     .def = "",
     .help = "HAProxy's runtime API (its stats socket: a unix socket path, or IP:PORT; level "
             "admin): the leader keeps the backend haproxy.backend equal to the registered "
             "data planes (empty: no HAProxy)"},
    {.key = "haproxy.backend",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, haproxy_backend),
     .def = "dataplanes",
     .help = "with haproxy.api: the backend whose dp_* servers are the data planes"},
    {.key = "haproxy.serverOptions",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, haproxy_server_opts),
     .def = "check inter 500ms fall 2 rise 1",
     .help = "with haproxy.api: the options of each data plane's server (HAProxy does not "
             "apply default-server to servers added at run time)"},
    {.key = "heartbeatInterval",
     .type = DG_CONF_DURATION,
     .offset = offsetof(struct cp_config, heartbeat_ms),
     .def = "5s",
     .min = 100,
     .max = 600000,
     .help = "workers and data planes report this often; silent for 3 intervals: lost"},
    {.key = "traceOutputFolder",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct cp_config, trace_folder),
     .def = "data",
     .help = "where cold_start_trace.csv is written (empty: no trace)"},
    {.key = "logLevel",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct cp_config, log_level),
     .def = "info",
     .choices = dg_log_level_choices,
     .help = "log verbosity"},
    DG_CONF_HTTP_FIELDS(struct cp_config, http),
};

static const struct dg_conf_schema cp_schema = {
    .prog = "dirigent-cp",
    .summary = "control plane: functions, autoscaling, placement, workers and data planes",
    .fields = cp_fields,
    .nfields = DG_ARRAY_LEN(cp_fields),
};

struct cp cp;

static struct {
    struct cp_config cfg;
    struct dg_daemon daemon;
    struct dg_http_server *internal, *reg;
    uv_timer_t cron;
    uint64_t next_tick, next_haproxy;
    unsigned tick_slot;
    unsigned open_servers;
    struct cp_election *election; /* with replicas */
    uv_timer_t retry_restore;     /* a takeover whose restore failed tries again */
    uv_timer_t reexec;            /* a deposed leader starts afresh */
    char **argv;
    bool stopping;
} g;

static void on_cron(uv_timer_t *t)
{
    if (!cp.leader)
        return; /* a follower keeps no registry and decides nothing */
    uint64_t now = uv_now(cp.loop);
    bool lost_dp = cp_core_check_peers(&cp.core, 3 * cp.heartbeat_timeout_ms) > 0;
    if (lost_dp || now >= g.next_haproxy) {
        g.next_haproxy = now + 5000; /* also repairs an HAProxy that restarted */
        cp_haproxy_sync();
    }
    if (now >=
        g.next_tick) { /* each function every 2 s (the original's tick), in CP_TICK_SLOTS slots */
        g.next_tick = now + 2000 / CP_TICK_SLOTS;
        cp_core_tick(&cp.core, g.tick_slot++ % CP_TICK_SLOTS);
    }
}

static void take_over(uv_timer_t *t);

/* Restored (or not): a leader acts only on the whole registry, so a store it cannot read
 * yet (Redis restarting) is read again in 1 s while it answers "restoring". */
static void took_over(void *ud, const struct dg_err *err)
{
    if (!g.election || !cp_election_is_leader(g.election)) {
        cp.taking_over = false; /* lost it again meanwhile */
        return;
    }
    if (err) {
        dg_log(DG_LOG_ERROR, "cp", "restoring: %s; trying again in 1 s", err->msg);
        uv_timer_start(&g.retry_restore, take_over, 1000, 0);
        return;
    }
    cp.taking_over = false;
    cp.leader = true;
    cp_haproxy_sync();
}

static void take_over(uv_timer_t *t)
{
    if (g.stopping || !g.election || !cp_election_is_leader(g.election)) {
        cp.taking_over = false;
        return;
    }
    cp_restore_async(took_over, NULL);
}

/* A deposed leader drops its registry, as the original does: the new leader owns the
 * sandboxes, the store and the pushes now, and a stale registry would push endpoints that
 * no longer exist should this replica lead again. Tearing down a live registry with
 * creates, drains and pushes in flight is where bugs hide; starting afresh is what a crash
 * does, and that path is tested. So the replica executes itself again (same pid, same
 * arguments; libuv's descriptors are close-on-exec) and comes back as a follower. */
static void reexec(uv_timer_t *t)
{
    if (g.stopping)
        return;
    dg_log_always("cp", "replica %lld was deposed: starting afresh to drop its registry",
                  (long long)g.cfg.replica_id);
    execv("/proc/self/exe", g.argv);
    dg_log(DG_LOG_ERROR, "cp", "restarting itself: %s; it stays a follower with a stale registry",
           strerror(errno));
}

/* Leadership changed (raft, on the loop). */
static void on_leadership(void *ud, bool is_leader, unsigned leader_id, const char *leader_raft)
{
    free(cp.leader_api);
    cp.leader_api = leader_id >= 1 && leader_id <= g.cfg.replicas.n
                        ? dg_xstrdup(g.cfg.replicas.v[leader_id - 1])
                        : NULL;
    if (is_leader && !cp.leader && !cp.taking_over) {
        dg_log_always("cp", "replica %lld leads: restoring from %s", (long long)g.cfg.replica_id,
                      cp_store_backend(cp.store));
        cp.taking_over = true; /* it acts once restored, without blocking the loop */
        cp_restore_async(took_over, NULL);
    } else if (!is_leader && (cp.leader || cp.taking_over)) {
        cp.leader = false;
        dg_log(DG_LOG_WARN, "cp", "replica %lld no longer leads (leader: %s)",
               (long long)g.cfg.replica_id, cp.leader_api ? cp.leader_api : "none yet");
        if (!g.stopping) /* not from within raft's callback */
            uv_timer_start(&g.reexec, reexec, 0, 0);
    } else if (!is_leader) {
        dg_log(DG_LOG_INFO, "cp", "replica %lld follows %s", (long long)g.cfg.replica_id,
               cp.leader_api ? cp.leader_api : "(no leader yet)");
    }
}

static double reconstruction_seconds(void *ud)
{
    return cp.reconstruction_seconds;
}

static void on_server_closed(void *ud)
{
    if (--g.open_servers > 0)
        return;
    uv_timer_stop(&g.cron);
    uv_close((uv_handle_t *)&g.cron, NULL);
    uv_close((uv_handle_t *)&g.retry_restore, NULL);
    uv_close((uv_handle_t *)&g.reexec, NULL);
    cp_restore_close();
    cp_haproxy_close();
    cp_api_close();
    if (g.election) {
        cp_election_stop(g.election, NULL, NULL);
        g.election = NULL;
    }
    cp_store_shutdown(cp.store);
    dg_trace_close(cp.cold_trace);
    cp.cold_trace = NULL;
    cp_io_close(); /* what is batched goes out; the peers' connections and timers close */
    dg_daemon_deinit(&g.daemon);
}

static void on_stop(void *ud)
{
    g.stopping = true;
    uv_timer_stop(&g.retry_restore);
    uint64_t grace = (uint64_t)g.cfg.http.shutdown_grace_ms;
    dg_http_server_close(g.internal, grace, on_server_closed, NULL);
    dg_http_server_close(g.reg, grace, on_server_closed, NULL);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    dg_log_init("cp");
    g.argv = argv;
    int rc = dg_daemon_configure(&cp_schema, &g.cfg, &g.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;
    const char *colon = strrchr(g.cfg.registration_server, ':');
    int64_t reg_port;
    if (!colon || !dg_str_to_i64(dg_str_c(colon + 1), &reg_port) || reg_port < 0 ||
        reg_port > 65535) {
        fprintf(stderr, "dirigent-cp: registrationServer: expected IP:PORT, got '%s'\n",
                g.cfg.registration_server);
        return 2;
    }
    char reg_host[64];
    snprintf(reg_host, sizeof(reg_host), "%.*s", (int)(colon - g.cfg.registration_server),
             g.cfg.registration_server);

    cp.loop = uv_default_loop();
    cp.placement = g.cfg.placement;
    cp.lb_address = g.cfg.lb_address;
    cp.heartbeat_timeout_ms = (uint64_t)g.cfg.heartbeat_ms;
    struct cp_core_config cc = {
        .placement = (enum cp_place_policy)cp_place_policy_parse(cp.placement),
        .chbl_eps = g.cfg.chbl_eps,
        .seed = g.cfg.seed ? (uint64_t)g.cfg.seed : dg_now_us(),
        .knative = strcmp(g.cfg.autoscaler, "knative") == 0,
    };
    cp_core_init(&cp.core, &cc, &cp_io_effects);
    cp.metrics = dg_metrics_new();
    cp.core.m_creates = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_sandbox_creates_total", "Sandboxes created.", NULL),
        NULL);
    cp.core.m_create_failures = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_sandbox_create_failures_total",
                           "Sandbox creates that failed (retried on the next tick).", NULL),
        NULL);
    cp.m_worker_cpu = dg_metrics_gauge(cp.metrics, "dg_cp_worker_cpu_milli",
                                       "A worker's CPU, milli-CPU: capacity, schedulable "
                                       "(capacity x its overcommit), and reserved by sandboxes "
                                       "(max(requested_cpu, its floor) each).",
                                       "worker,kind");
    cp.m_worker_mem = dg_metrics_gauge(cp.metrics, "dg_cp_worker_memory_mib",
                                       "A worker's memory, MiB: capacity, and reserved by "
                                       "sandboxes (max(requested_memory, its floor) each).",
                                       "worker,kind");
    cp.m_registrations = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_registrations_total", "Functions registered.", NULL),
        NULL);

    if (dg_daemon_init(&g.daemon, cp.loop, "cp", on_stop, NULL, &err) < 0) {
        dg_log(DG_LOG_ERROR, "cp", "%s", err.msg);
        return 1;
    }
    if (g.cfg.trace_folder[0] &&
        !(cp.cold_trace = dg_trace_open(
              cp.loop, g.cfg.trace_folder, "cold_start_trace.csv",
              "time,service_name,container_id,success,image_fetch,sandbox_create,sandbox_start,"
              "network_setup,iptables,readiness_probe,data_plane_propagation,snapshot_creation,"
              "configure_monitoring,find_snapshot,db,other_worker_node",
              &err))) {
        dg_log(DG_LOG_ERROR, "cp", "traceOutputFolder: %s", err.msg);
        return 1;
    }
    cp_io_init();
    uv_timer_init(cp.loop, &g.cron);
    uv_timer_init(cp.loop, &g.retry_restore);
    uv_timer_init(cp.loop, &g.reexec);
    uv_timer_start(&g.cron, on_cron, 50, 50); /* the tick slots */
    uv_unref((uv_handle_t *)&g.cron);

    struct dg_http_limits limits;
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.internal = dg_http_server_new(cp.loop, &limits, "internal");
    g.reg = dg_http_server_new(cp.loop, &limits, "registration");
    dg_daemon_mount_health_metrics(g.internal, cp.metrics);
    cp_api_mount(g.internal, g.reg);
    /* what survived the last run, before anything is served */
    struct cp_store_opts so = {.backend = g.cfg.persistence,
                               .dir = g.cfg.data_dir,
                               .redis_address = g.cfg.redis_address,
                               .full_persistence = g.cfg.redis_full,
                               .replicas = (int)g.cfg.redis_replicas};
    bool replicated = g.cfg.replicas.n > 0;
    if (replicated && (g.cfg.raft_addresses.n != g.cfg.replicas.n ||
                       (size_t)g.cfg.replica_id > g.cfg.replicas.n)) {
        dg_log(DG_LOG_ERROR, "cp",
               "replicas: %zu addresses, raftAddresses: %zu, replicaId: %lld: expected as many "
               "raft addresses as replicas and an id within them",
               g.cfg.replicas.n, g.cfg.raft_addresses.n, (long long)g.cfg.replica_id);
        return 1;
    }
    if (replicated && strcmp(g.cfg.persistence, "redis") != 0) {
        dg_log(DG_LOG_ERROR, "cp",
               "replicas: the replicas must share their store: set persistence: redis (got "
               "'%s')",
               g.cfg.persistence);
        return 1;
    }
    if (cp_haproxy_init(cp.loop, g.cfg.haproxy_api, g.cfg.haproxy_backend,
                        g.cfg.haproxy_server_opts, &err) < 0) {
        dg_log(DG_LOG_ERROR, "cp", "%s", err.msg);
        return 1;
    }
    cp.leader = !replicated;
    cp.replicas = g.cfg.replicas.v;
    cp.nreplicas = g.cfg.replicas.n;
    cp.replica_id = (size_t)g.cfg.replica_id;
    if (!(cp.store = cp_store_open(cp.loop, &so, &err)) || (!replicated && cp_restore(&err) < 0)) {
        dg_log(DG_LOG_ERROR, "cp", "%s", err.msg);
        return 1;
    }
    if (replicated) { /* the leader restores and acts; followers wait */
        char *raft_dir = dg_xasprintf("%s/raft-%lld", g.cfg.data_dir, (long long)g.cfg.replica_id);
        mkdir(g.cfg.data_dir, 0700);
        struct cp_election_opts eo = {.id = (unsigned)g.cfg.replica_id,
                                      .peers = (const char *const *)g.cfg.raft_addresses.v,
                                      .npeers = g.cfg.raft_addresses.n,
                                      .dir = raft_dir,
                                      .election_timeout_ms = (unsigned)g.cfg.election_timeout_ms,
                                      .heartbeat_timeout_ms =
                                          (unsigned)DG_MAX(10, g.cfg.election_timeout_ms / 3)};
        g.election = cp_election_start(cp.loop, &eo, on_leadership, NULL, &err);
        free(raft_dir);
        if (!g.election) {
            dg_log(DG_LOG_ERROR, "cp", "raft: %s", err.msg);
            return 1;
        }
    }
    dg_metrics_gauge_fn(cp.metrics, "dg_cp_reconstruction_seconds",
                        "How long the last start-up took to rebuild its state from the store and "
                        "the workers.",
                        reconstruction_seconds, NULL);
    g.open_servers = 2;
    if (dg_http_server_listen(g.internal, g.cfg.host, (int)g.cfg.port, &err) < 0 ||
        dg_http_server_listen(g.reg, reg_host, (int)reg_port, &err) < 0) {
        dg_log(DG_LOG_ERROR, "cp", "%s", err.msg);
        return 1;
    }
    dg_log_always("cp", "internal api on %s:%d, registration on %s:%d, placement %s", g.cfg.host,
                  dg_http_server_port(g.internal), reg_host, dg_http_server_port(g.reg),
                  cp.placement);

    uv_run(cp.loop, UV_RUN_DEFAULT);

    dg_loop_close_all(cp.loop);
    cp_store_close(cp.store);
    cp_core_free(&cp.core);
    cp_io_free();
    cp_haproxy_free();
    dg_metrics_free(cp.metrics);
    dg_conf_free(&cp_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "cp", "stopped");
    return 0;
}
