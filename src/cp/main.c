/*
 * dirigent-cp: the control plane. main.c only wires: the config (conf.c), the loop and its
 * signals, the core (cp_core.c) with its effects over HTTP (scaling.c), the two servers (api.c),
 * the store (store.c) and what survived the last run, the replicas' election (replicas.c),
 * HAProxy (haproxy.c), and the cron timer: one of the core's 40 tick slots every 50 ms (each
 * function decided every 2 s) and the peers' heartbeats (a worker silent for 3 periods becomes
 * unschedulable and its sandboxes are replaced; a silent data plane is removed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "async.h"
#include "conf.h"
#include "cp.h"
#include "haproxy.h"
#include "pool.h"
#include "replicas.h"
#include "scaling.h"
#include "dirigent/daemon.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"

static struct {
    struct cp_config cfg;
    struct dg_daemon daemon;
    struct dg_http_server *internal, *reg;
    uv_timer_t cron;
    uint64_t next_tick, next_haproxy;
    unsigned tick_slot;
    unsigned open_servers;
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
    cp_pool_tick(now); /* pre-created sandboxes (pool.c): once a second */
}

/* authTokenFile and registrationAuth (docs/security.md): with a key every internal route needs
 * a credential; without one, every internal listener must be loopback. The registration API is
 * open or needs an operator credential; said at start. */
static int cp_auth_setup(const char *reg_host)
{
    struct dg_err err = {0};
    const char *hosts[2] = {g.cfg.host, NULL};
    size_t nhosts = 1;
    char raft_host[64] = "";
    if (g.cfg.replicas.n > 0 && (size_t)g.cfg.replica_id <= g.cfg.raft_addresses.n) {
        const char *ra = g.cfg.raft_addresses.v[g.cfg.replica_id - 1];
        const char *c = strrchr(ra, ':');
        snprintf(raft_host, sizeof(raft_host), "%.*s", c ? (int)(c - ra) : (int)strlen(ra), ra);
        hosts[nhosts++] = raft_host;
    }
    char name[16] = "cp";
    if (g.cfg.replicas.n > 0)
        snprintf(name, sizeof(name), "cp-%lld", (long long)g.cfg.replica_id);
    int rc = dg_auth_daemon_setup("cp", g.cfg.auth_token_file, DG_AUTH_CP, name, hosts, nhosts,
                                  &cp.auth_key, cp.auth_cred, &err);
    if (rc < 0) {
        fprintf(stderr, "dirigent-cp: %s\n", err.msg);
        return -1;
    }
    cp.auth_on = rc == 1;
    const char *mode = g.cfg.registration_auth;
    bool open_reg = strcmp(mode, "none") == 0 ||
                    (strcmp(mode, "auto") == 0 && dg_auth_host_is_loopback(reg_host));
    if (!open_reg && !cp.auth_on) {
        fprintf(stderr,
                "dirigent-cp: registrationServer: %s is not loopback, so the registration API "
                "needs operator credentials (registrationAuth: %s), which need authTokenFile "
                "(dirigent token init --key FILE); or set registrationAuth: none to leave it "
                "open to anyone who reaches it\n",
                reg_host, mode);
        return -1;
    }
    cp.reg_need = DG_HTTP_AUTH_OPERATOR | (open_reg ? DG_HTTP_AUTH_ANON : 0);
    if (open_reg && !dg_auth_host_is_loopback(reg_host))
        dg_log(DG_LOG_WARN, "cp",
               "registration API on %s is open to anyone who reaches it (registrationAuth: "
               "none)",
               reg_host);
    else
        dg_log_always("cp", "registration API: %s (registrationAuth: %s)",
                      open_reg ? "open (loopback)" : "operator credential required", mode);
    return 0;
}

static void on_server_closed(void *ud)
{
    if (--g.open_servers > 0)
        return;
    uv_timer_stop(&g.cron);
    uv_close((uv_handle_t *)&g.cron, NULL);
    cp_replicas_close();
    cp_restore_close();
    cp_haproxy_close();
    cp_api_close();
    cp_async_close();
    cp_store_shutdown(cp.store);
    dg_trace_close(cp.cold_trace);
    cp.cold_trace = NULL;
    cp_io_close(); /* what is batched goes out; the peers' connections and timers close */
    dg_daemon_deinit(&g.daemon);
}

static void on_stop(void *ud)
{
    cp_replicas_stop();
    uint64_t grace = (uint64_t)g.cfg.http.shutdown_grace_ms;
    dg_http_server_close(g.internal, grace, on_server_closed, NULL);
    dg_http_server_close(g.reg, grace, on_server_closed, NULL);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    dg_log_init("cp");
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

    if (cp_auth_setup(reg_host) < 0)
        return 2;

    cp.loop = uv_default_loop();
    cp.placement = g.cfg.placement;
    cp.lb_address = g.cfg.lb_address;
    cp.heartbeat_timeout_ms = (uint64_t)g.cfg.heartbeat_ms;
    cp.batch_interval_ms = (uint64_t)g.cfg.batch_interval_ms;
    struct cp_core_config cc = {
        .placement = (enum cp_place_policy)cp_place_policy_parse(cp.placement),
        .chbl_eps = g.cfg.chbl_eps,
        .seed = g.cfg.seed ? (uint64_t)g.cfg.seed : dg_now_us(),
        .knative = strcmp(g.cfg.autoscaler, "knative") == 0,
        .quotas = {.max_functions = (unsigned)g.cfg.max_functions,
                   .max_per_function = (unsigned)g.cfg.max_per_function,
                   .max_per_worker = (unsigned)g.cfg.max_per_worker,
                   .max_total = (unsigned)g.cfg.max_sandboxes,
                   .creates_per_worker_per_s = (unsigned)g.cfg.max_creates_per_worker_s},
        .scale_down_budget = (unsigned)g.cfg.scale_down_budget,
    };
    cp_core_init(&cp.core, &cc, &cp_io_effects);
    cp.metrics = dg_metrics_new();
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
    uv_timer_start(&g.cron, on_cron, 50, 50); /* the tick slots */
    uv_unref((uv_handle_t *)&g.cron);

    struct dg_http_limits limits;
    dg_http_conf_internal_limits(&g.cfg.http, &limits);
    g.internal = dg_http_server_new(cp.loop, &limits, "internal");
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.reg = dg_http_server_new(cp.loop, &limits, "registration");
    if (cp.auth_on) {
        dg_auth_server(g.internal, &cp.auth_key);
        dg_auth_server(g.reg, &cp.auth_key);
    }
    dg_daemon_mount_health_metrics(g.internal, cp.metrics);
    cp_async_init(cp.loop, (uint64_t)g.cfg.async_ttl_ms, (uint64_t)g.cfg.async_max_records,
                  (uint64_t)g.cfg.async_max_bytes);
    cp_api_mount(g.internal, g.reg);
    /* what survived the last run, before anything is served */
    struct cp_store_opts so = {.backend = g.cfg.persistence,
                               .dir = g.cfg.data_dir,
                               .redis_address = g.cfg.redis_address,
                               .redis_password_file = g.cfg.redis_password_file,
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
    /* with replicas, the leader restores and acts; followers wait */
    if (cp_replicas_start(argv, g.cfg.raft_addresses.v, g.cfg.raft_addresses.n, g.cfg.data_dir,
                          g.cfg.election_timeout_ms, &err) < 0) {
        dg_log(DG_LOG_ERROR, "cp", "raft: %s", err.msg);
        return 1;
    }
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
    dg_strmap_free(&cp.pending_regs); /* emptied by the store's close */
    cp_core_free(&cp.core);
    cp_io_free();
    cp_haproxy_free();
    dg_metrics_free(cp.metrics);
    dg_conf_free(&cp_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "cp", "stopped");
    return 0;
}
