/*
 * dirigent-worker: creates and deletes sandboxes for the control plane (DESIGN.md §1, §6).
 * This file only wires: the config (config.c), the runtime it names (runtime.h), the sandbox
 * registry (registry.c), the HTTP API (api.c) and the link to the control plane (cplink.c),
 * the loop and the signals. The worker listens once its runtime is ready, then registers.
 *
 * Everything the worker makes on the host is named from its instance (instance.c: a hash
 * of its dataDir, or runDir), so workers of several clusters on one host never meet.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dirigent/auth.h"
#include "dirigent/daemon.h"
#include "dirigent/log.h"
#include "api.h"
#include "config.h"
#include "cplink.h"
#include "exec.h"
#include "instance.h"
#include "prewarm.h"
#include "probe.h"
#include "registry.h"

static const struct wk_runtime *const runtimes[] = {&wk_runtime_process, &wk_runtime_emulated,
                                                    &wk_runtime_oci};

static struct {
    struct wk_config cfg;
    uv_loop_t *loop;
    const struct wk_runtime *rt;
    void *rt_state;
    struct wk_runtime_conf rtc;
    struct wk_registry reg;
    struct wk_cplink link;
    struct dg_daemon daemon;
    struct dg_http_server *server;
    struct dg_metrics *metrics;
    struct wk_instance inst; /* names on the host: runDir, bridge, veths, cgroups */
    uv_signal_t again[2];    /* SIGTERM, SIGINT once shutting down */
    char name[64];
    char boot[40]; /* this daemon's start, 128 random bits in hex: the CP tells a restart from
                      a heartbeat */
    bool stopping;
    bool auth; /* authTokenFile: the key below */
    struct dg_auth_key key;
} g;

static void on_server_closed(void *ud)
{
    g.server = NULL;
    wk_cplink_stop(&g.link);
    wk_registry_stop(&g.reg); /* sandboxes belong to this worker's lifetime */
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
    wk_registry_hurry(&g.reg);
}

static void on_stop(void *ud)
{
    g.stopping = true;
    /* the daemon's watchers exit at a second signal: ours take over first (so the signal is
     * never left at its default action in between), kept until the loop ends */
    static const int sigs[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        uv_signal_init(g.loop, &g.again[i]);
        uv_signal_start(&g.again[i], on_signal_again, sigs[i]);
        uv_unref((uv_handle_t *)&g.again[i]);
    }
    dg_daemon_deinit(&g.daemon);
    if (g.server)
        dg_http_server_close(g.server, (uint64_t)g.cfg.http.shutdown_grace_ms, on_server_closed,
                             NULL);
}

/* The runtime can serve: listen, then register with the control plane. */
static void on_runtime_ready(void *ud, const struct dg_err *rerr)
{
    struct dg_err err = {0};
    if (g.stopping || !g.server)
        return;
    if (rerr) {
        dg_log(DG_LOG_ERROR, "worker", "%s", rerr->msg);
        exit(1);
    }
    if (dg_http_server_listen(g.server, g.cfg.host, (int)g.cfg.port, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        exit(1);
    }
    int port = dg_http_server_port(g.server);
    dg_log_always("worker", "%s: listening on %s:%d, runtime %s", g.name, g.cfg.host, port,
                  g.rt->name);
    if (g.cfg.cp_addresses.n == 0)
        return;
    /* the floors stand for what a real sandbox costs at least; a weightless (emulated) one
     * costs nothing, so it takes its request alone (else 20 emulated nodes would hold only
     * ~4,000 sandboxes) */
    struct wk_cplink_conf lc = {.host = g.cfg.host,
                                .boot = g.boot,
                                .cp_addresses = &g.cfg.cp_addresses,
                                .heartbeat_ms = (uint64_t)g.cfg.heartbeat_ms,
                                .nodes = g.cfg.emulated_nodes,
                                .cpu_milli = g.cfg.cap_cpu_milli,
                                .memory_mib = g.cfg.cap_memory_mib,
                                .cpu_overcommit = g.cfg.cpu_overcommit,
                                .min_cpu_milli = g.rt->weightless ? 1 : g.cfg.min_cpu_milli,
                                .min_memory_mib = g.rt->weightless ? 1 : g.cfg.min_memory_mib,
                                .key = g.auth ? &g.key : NULL,
                                .sandbox_subnet =
                                    g.rt->sandbox_subnet ? g.rt->sandbox_subnet(g.rt_state) : NULL};
    if (wk_cplink_start(&g.link, g.loop, &lc, &g.reg, port, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        exit(1);
    }
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

/* The directory of `path` (a copy; "." when it has none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return dg_xstrdup(".");
    return dg_xasprintf("%.*s", (int)(slash == path ? 1 : slash - path), path);
}

int main(int argc, char **argv)
{
    struct dg_err err = {0};
    dg_log_init("worker");
    int rc = dg_daemon_configure(&wk_schema, &g.cfg, &g.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;
    struct wk_runtime_conf *rtc = &g.rtc;
    if (dg_cpu_limit_parse(g.cfg.cpu_limit, &rtc->oci.cpu_limit, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "sandboxCpuLimit: %s", err.msg);
        dg_conf_free(&wk_schema, &g.cfg);
        return 2;
    }
    g.loop = uv_default_loop();
    /* a random nonce, not the pid and start time: the CP takes a sibling beat or an exit
     * report for NAME-1... only from the address and boot NAME-0 registered with, so the boot
     * must not be guessable by another worker (docs/security.md) */
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce)) {
        dg_log(DG_LOG_ERROR, "worker", "getrandom: %s", strerror(errno));
        dg_conf_free(&wk_schema, &g.cfg);
        return 1;
    }
    for (size_t i = 0; i < sizeof(nonce); i++)
        snprintf(g.boot + 2 * i, sizeof(g.boot) - 2 * i, "%02x", nonce[i]);
    for (size_t i = 0; i < DG_ARRAY_LEN(runtimes); i++)
        if (strcmp(g.cfg.runtime, runtimes[i]->name) == 0)
            g.rt = runtimes[i];
    if (g.cfg.name[0])
        snprintf(g.name, sizeof(g.name), "%s", g.cfg.name);
    else if (gethostname(g.name, sizeof(g.name) - 1) == -1)
        snprintf(g.name, sizeof(g.name), "worker");
    else if (g.cfg.auth_token_file[0]) /* a credential's name has no dots (lib/auth.h): an FQDN
                                         * hostname would stop a keyed worker at start */
        for (char *c = g.name; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
                *c = '-';
    /* authTokenFile (docs/security.md): the API only for the CP, heartbeats as node.NAME */
    const char *hosts[] = {g.cfg.host};
    char cred[DG_AUTH_CRED_MAX];
    int auth = dg_auth_daemon_setup("worker", g.cfg.auth_token_file, DG_AUTH_NODE, g.name, hosts, 1,
                                    &g.key, cred, &err);
    if (auth < 0) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        dg_conf_free(&wk_schema, &g.cfg);
        return 2;
    }
    g.auth = auth == 1;
    char *fn_binary = g.cfg.fn_binary[0] ? dg_xstrdup(g.cfg.fn_binary) : default_fn_binary(argv[0]);
    char *data_dir = g.cfg.data_dir[0] ? dg_xstrdup(g.cfg.data_dir)
                                       : dg_xasprintf("/var/lib/dirigent/%s", g.name);
    /* a runtime with files in dataDir makes it first: the instance id then hashes the same
     * resolved path on every start */
    if (g.rt->uses_data_dir && !g.cfg.run_dir[0] && dg_mkdir_p(data_dir, 0755, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "dataDir: %s", err.msg);
        return 1;
    }
    wk_instance_init(&g.inst, g.name, data_dir, g.cfg.run_dir, g.cfg.bridge);
    rtc->loop = g.loop;
    rtc->host = g.cfg.host;
    rtc->readiness_timeout_ms = (uint64_t)g.cfg.readiness_timeout_ms;
    rtc->data_dir = data_dir;
    rtc->run_dir = g.inst.run_dir;
    rtc->instance = &g.inst;
    rtc->min_cpu_milli = g.cfg.min_cpu_milli;
    rtc->min_memory_mib = g.cfg.min_memory_mib;
    rtc->emulated.delay_ms = g.cfg.emulated_create_delay_ms;
    rtc->emulated.fn_binary = fn_binary;
    rtc->oci.runtime = g.cfg.oci_runtime;
    rtc->oci.bridge = g.inst.bridge;
    rtc->oci.subnet = g.cfg.subnet;
    rtc->oci.netns_pool = g.cfg.netns_pool;
    rtc->oci.address_quarantine_ms =
        g.cfg.address_quarantine_ms ? g.cfg.address_quarantine_ms : 6 * g.cfg.heartbeat_ms;
    rtc->oci.pids_limit = g.cfg.pids_limit;
    rtc->oci.kill_grace_ms = g.cfg.kill_grace_ms;
    rtc->oci.insecure_registries = &g.cfg.insecure_registries;
    rtc->oci.prefetch = &g.cfg.prefetch;
    rtc->oci.egress = g.cfg.sandbox_egress;
    rtc->oci.egress_allow = &g.cfg.sandbox_egress_allow;
    rtc->oci.caps = &g.cfg.sandbox_caps;
    rtc->oci.userns = g.cfg.sandbox_userns;
    rtc->oci.image_registries = &g.cfg.image_registries;
    rtc->oci.pull_timeout_ms = (uint64_t)g.cfg.image_pull_timeout_ms;
    unsigned cores = uv_available_parallelism();
    rtc->oci.max_deletes = g.cfg.max_deletes ? (unsigned)g.cfg.max_deletes : 2 * cores;
    rtc->oci.init = g.cfg.sandbox_init;
    wk_exec_set_nice((int)g.cfg.helper_nice); /* from the nice value it started with */
    /* ahead of sandbox work (issue 16): measured at 40 cold starts/s on a busy machine, the
     * loop waited 3 s of 5 for a CPU. Only with oci: a process sandbox would inherit it */
    if (g.cfg.worker_nice && strcmp(g.rt->name, "oci") == 0 && geteuid() == 0 &&
        setpriority(PRIO_PROCESS, 0, (int)g.cfg.worker_nice) == -1)
        dg_log(DG_LOG_WARN, "worker", "workerNice %lld: %m (runs at its own priority)",
               (long long)g.cfg.worker_nice);
    /* what a create may name: by default only what this build (or installation) ships; for
     * the process runtime fnBinary itself, not its directory (installed, that is /usr/bin,
     * and /usr/bin/sh would run) */
    struct dg_strlist allowed_dirs = {0}, image_roots = {0};
    if (g.cfg.process_allowed_dirs.n == 0)
        dg_strlist_push(&allowed_dirs, dg_xstrdup(fn_binary));
    else
        for (size_t i = 0; i < g.cfg.process_allowed_dirs.n; i++)
            dg_strlist_push(&allowed_dirs, dg_xstrdup(g.cfg.process_allowed_dirs.v[i]));
    if (g.cfg.image_roots.n == 0) {
        char *bin = default_fn_binary(argv[0]), *bindir = dir_of(bin);
        dg_strlist_push(&image_roots, dg_xasprintf("%s/images", bindir));
        dg_strlist_push(&image_roots, dg_xasprintf("%s/../share/dirigent/images", bindir));
        free(bindir);
        free(bin);
    } else {
        for (size_t i = 0; i < g.cfg.image_roots.n; i++)
            dg_strlist_push(&image_roots, dg_xstrdup(g.cfg.image_roots.v[i]));
    }
    rtc->process.user = g.cfg.process_user;
    rtc->process.allowed_dirs = &allowed_dirs;
    rtc->oci.image_roots = &image_roots;

    if (dg_daemon_init(&g.daemon, g.loop, "worker", on_stop, NULL, &err) < 0 ||
        g.rt->init(rtc, &g.rt_state, &err) < 0) {
        dg_log(DG_LOG_ERROR, "worker", "%s", err.msg);
        return 1;
    }
    g.metrics = dg_metrics_new();
    struct wk_registry_events ev = {.bind = wk_api_bind,
                                    .answer = wk_api_answer,
                                    .exited = wk_cplink_exited,
                                    .saturation = wk_cplink_saturation,
                                    .ud = &g.link};
    wk_registry_init(&g.reg, g.name, g.rt, g.rt_state, &ev, g.metrics);
    /* bounded creates (issue 16): emulated ones cost a timer each, real ones a machine's CPU */
    wk_registry_set_max_creates(&g.reg, g.cfg.max_creates  ? (unsigned)g.cfg.max_creates
                                        : g.rt->weightless ? 0
                                                           : 4 * cores);
    /* a restarted worker must not reuse its predecessor's sandbox ids: late answers and the
     * CP's lists could mistake a new sandbox for an old one */
    g.reg.run = (unsigned)((dg_wall_ms() / 10) & 0xfffff);

    struct dg_http_limits limits;
    dg_http_conf_limits(&g.cfg.http, &limits);
    g.server = dg_http_server_new(g.loop, &limits, "worker");
    if (g.auth)
        dg_auth_server(g.server, &g.key);
    dg_daemon_mount_health_metrics(g.server, g.metrics);
    wk_probe_metrics(g.metrics);
    wk_api_mount(g.server, &g.reg);
    wk_prewarm_mount(g.server, g.rt->prewarm ? g.rt->prewarm(g.rt_state) : NULL, g.metrics);
    if (g.rt->start)
        g.rt->start(g.rt_state, on_runtime_ready, NULL);
    else
        on_runtime_ready(NULL, NULL);

    uv_run(g.loop, UV_RUN_DEFAULT);

    dg_loop_close_all(g.loop);
    wk_registry_deinit(&g.reg);
    if (g.rt->free)
        g.rt->free(g.rt_state);
    free(data_dir);
    wk_instance_free(&g.inst);
    dg_metrics_free(g.metrics);
    wk_cplink_free(&g.link);
    free(fn_binary);
    dg_strlist_free(&allowed_dirs);
    dg_strlist_free(&image_roots);
    dg_conf_free(&wk_schema, &g.cfg);
    dg_log(DG_LOG_INFO, "worker", "stopped");
    return 0;
}
