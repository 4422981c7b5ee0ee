/*
 * config_compat.c: the keys of the original's YAML files (Go Dirigent, eth-easl/dirigent
 * cmd/{master_node,data_plane,worker_node}/config*.yaml) and what each becomes here, one table
 * per daemon. The loader (config.c) takes a daemon's table by its program name, so the daemons'
 * own schema tables stay as they are.
 *
 * Every key of every shipped file is here (tests/data/original-configs/ holds copies, and
 * tests/integration/test_original_configs.sh loads each in its daemon). A key either maps to
 * ours, with its value translated where the spelling differs (`verbosity: trace` is
 * `logLevel: trace`, `persistence: false` is `persistence: none`), or is ignored with the reason
 * in the warning (Firecracker, containerd, Go's profiler, workflows: not available here). The
 * original had no defaults in code (viper's zero values); ours apply to what a file leaves out.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dirigent/config_compat.h"

/* ---- value translators (dg_conf_compat_value_fn) ---- */

static bool is_true(const char *t)
{
    return !strcasecmp(t, "true") || !strcasecmp(t, "yes") || !strcasecmp(t, "on") ||
           !strcmp(t, "1");
}

static bool is_false(const char *t)
{
    return !strcasecmp(t, "false") || !strcasecmp(t, "no") || !strcasecmp(t, "off") ||
           !strcmp(t, "0");
}

/* The original's rule (pkg/logger): debug, trace, anything else is info. */
static int verbosity(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    snprintf(buf, n, "%s", !strcmp(t, "trace") || !strcmp(t, "debug") ? t : "info");
    if (strcmp(buf, t) != 0)
        *note = "the original logs anything but debug and trace at info";
    return DG_COMPAT_USE;
}

/* The original's bool: true meant Redis, false nothing at all. */
static int persistence(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (is_true(t)) {
        snprintf(buf, n, "redis");
        *note = "the original's true was Redis; sqlite keeps a single control plane's state in "
                "a file";
    } else if (is_false(t)) {
        snprintf(buf, n, "none");
        *note = "nothing survives a restart; sqlite (the default here) keeps it in a file";
    } else {
        return DG_COMPAT_SAME;
    }
    return DG_COMPAT_USE;
}

static int autoscaler(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (strcmp(t, "default") != 0)
        return DG_COMPAT_SAME;
    snprintf(buf, n, "dirigent");
    *note = "the original's port of Knative's KPA";
    return DG_COMPAT_USE;
}

/* This host's first IPv4 address that is up and not loopback into buf; false if none. */
static bool first_address(char *buf, size_t n)
{
    struct ifaddrs *ifs = NULL, *i;
    bool found = false;
    if (getifaddrs(&ifs) == -1)
        return false;
    for (i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
            !(i->ifa_flags & IFF_UP))
            continue;
        char a[INET_ADDRSTRLEN];
        if (inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof(a))) {
            snprintf(buf, n, "%s", a);
            found = true;
        }
    }
    freeifaddrs(ifs);
    return found;
}

/* dataPlaneIp / workerNodeIp: "dynamic" picked the original's first 10.0.1.x address (its
 * Cloudlab network); ours takes the first non-loopback IPv4 address. No name lookups here, so
 * "localhost" becomes 127.0.0.1. */
static int node_ip(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (!strcmp(t, "dynamic")) {
        if (first_address(buf, n)) {
            *note = "the original's dynamic took its first 10.0.1.x address; this is the host's "
                    "first non-loopback IPv4 address: write the address to be sure";
        } else {
            snprintf(buf, n, "127.0.0.1");
            *note = "the original's dynamic took its first 10.0.1.x address; this host has no "
                    "non-loopback IPv4 address up: write the address";
        }
        return DG_COMPAT_USE;
    }
    if (!strcmp(t, "localhost")) {
        snprintf(buf, n, "127.0.0.1");
        *note = "addresses are IPv4 literals here";
        return DG_COMPAT_USE;
    }
    return DG_COMPAT_SAME;
}

/* controlPlaneAddress "localhost:9090,10.0.1.3:10000": localhost becomes 127.0.0.1. */
static int cp_addresses(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    size_t len = 0;
    bool changed = false;
    buf[0] = '\0';
    for (const char *p = t; *p && len < n;) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ',');
        size_t item = end ? (size_t)(end - p) : strlen(p);
        bool local = item >= 10 && !strncmp(p, "localhost:", 10);
        changed |= local;
        len += (size_t)snprintf(buf + len, n - len, "%s%s%.*s", len ? "," : "",
                                local ? "127.0.0.1" : "", (int)(local ? item - 9 : item),
                                local ? p + 9 : p);
        p = end ? end + 1 : p + item;
    }
    if (!changed)
        return DG_COMPAT_SAME;
    *note = "addresses are IPv4 literals here";
    return DG_COMPAT_USE;
}

/* port: "${DAEMON_PORT}" in the original's fake-worker files, which its scripts filled in. */
static int placeholder(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (t[0] != '$')
        return DG_COMPAT_SAME;
    const char *name = t + 1;
    size_t len = strlen(name);
    if (name[0] == '{' && len >= 2 && name[len - 1] == '}') {
        name++;
        len -= 2;
    }
    char var[128];
    snprintf(var, sizeof(var), "%.*s", (int)len, name);
    const char *v = getenv(var);
    if (!v || !*v)
        return dg_err_set(err, DG_E_INVAL,
                          "'%s' is a placeholder the original's scripts filled in: set %s in the "
                          "environment or write the value",
                          t, var);
    snprintf(buf, n, "%s", v);
    *note = "from the environment";
    return DG_COMPAT_USE;
}

/* criType: the original's sandbox runtimes to ours. */
static int cri_type(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    static const struct {
        const char *from, *to, *note;
    } map[] = {
        {"containerd", "oci", "containers run under crun directly, without containerd"},
        {"firecracker", "oci",
         "Firecracker is not available here (no usable KVM, not packaged): containers instead"},
        {"dandelion", "oci", "Dandelion is not available here: containers instead"},
        {"scalability_test", "emulated", "no real sandboxes, as the original's fake worker"},
    };
    for (size_t i = 0; i < DG_ARRAY_LEN(map); i++) {
        if (!strcmp(t, map[i].from)) {
            snprintf(buf, n, "%s", map[i].to);
            *note = map[i].note;
            return DG_COMPAT_USE;
        }
    }
    return dg_err_set(err, DG_E_INVAL,
                      "expected one of containerd|firecracker|dandelion|scalability_test, got "
                      "'%s' (or write runtime: oci|process|emulated)",
                      t);
}

/* redis.replicas: ours is a count to WAIT for, the original's a list of Redis addresses. */
static int redis_replicas(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    char *end;
    if (*t && (strtoll(t, &end, 10), *end == '\0'))
        return DG_COMPAT_SAME;
    *note = *t ? "the original made these Redis servers replicas of its own; ours does not manage "
                 "replication: set them up with replicaof, then redis.replicas: N waits for N of "
                 "them (docs/operations.md)"
               : "no Redis replicas";
    return DG_COMPAT_DROP;
}

static int redis_password(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (*t)
        return dg_err_set(err, DG_E_INVAL,
                          "a Redis password is not supported: keep Redis on a private network "
                          "and remove the key");
    *note = "empty (no password)";
    return DG_COMPAT_DROP;
}

static int redis_db(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (strcmp(t, "0") != 0 && *t)
        return dg_err_set(err, DG_E_INVAL,
                          "only database 0 is used, got '%s': give the control plane a Redis "
                          "of its own",
                          t);
    *note = "database 0 is the one used";
    return DG_COMPAT_DROP;
}

/* cpuConstraints: whether the original limited a sandbox's CPU to its request; ours is the
 * worker's CPU limit policy (sandboxCpuLimit). */
static int cpu_constraints(const char *t, char *buf, size_t n, const char **note,
                           struct dg_err *err)
{
    if (!strcmp(t, "true") || !strcmp(t, "false")) {
        snprintf(buf, n, "%s", t[0] == 't' ? "request" : "none");
        *note = t[0] == 't' ? "a CPU quota of the registered request"
                            : "the registered CPU is a scheduling weight, no quota";
        return DG_COMPAT_USE;
    }
    return dg_err_set(err, DG_E_INVAL, "expected true or false, got '%s'", t);
}

static int control_plane_ip(const char *t, char *buf, size_t n, const char **note,
                            struct dg_err *err)
{
    if (strcmp(t, "localhost") != 0)
        return DG_COMPAT_SAME;
    snprintf(buf, n, "127.0.0.1");
    return DG_COMPAT_USE;
}

/* ---- the tables ---- */

#define IGNORE(k, w)                                                                               \
    {                                                                                              \
        .key = k, .kind = DG_COMPAT_IGNORE, .why = w                                               \
    }
#define MAP(k, t, fn)                                                                              \
    {                                                                                              \
        .key = k, .kind = DG_COMPAT_MAP, .to = t, .value = fn                                      \
    }

/* the data plane's and the worker's controlPlaneIp + controlPlanePort: our controlPlaneAddress
 * (port 9090 and host 127.0.0.1 where one of the two is not given) */
#define CONTROL_PLANE_IP_PORT                                                                      \
    {.key = "controlPlaneIp",                                                                      \
     .kind = DG_COMPAT_HOST,                                                                       \
     .to = "controlPlaneAddress",                                                                  \
     .value = control_plane_ip,                                                                    \
     .def = "9090"},                                                                               \
    {                                                                                              \
        .key = "controlPlanePort", .kind = DG_COMPAT_PORT, .to = "controlPlaneAddress",            \
        .def = "127.0.0.1"                                                                         \
    }

#define WHY_PROFILER "Go's pprof; use GET /metrics, perf or valgrind --tool=callgrind"
#define WHY_DOCKER_REDIS                                                                           \
    "the original pointed Redis replicas at this address (SLAVEOF); ours does not manage "         \
    "replication"
#define WHY_FIRECRACKER                                                                            \
    "Firecracker is not available here (no usable KVM, not packaged); the oci runtime runs "       \
    "containers"
#define WHY_WORKFLOWS "workflows are not implemented here"
#define WHY_ASYNC                                                                                  \
    "the newer nested async section is not read; set async, persistRequests and numberRetries "    \
    "at the top level (the original's released keys)"
#define WHY_CONTAINERD "no containerd here: the oci runtime runs crun (ociRuntime) directly"
#define WHY_CNI        "sandbox networking is built in (bridge, sandboxSubnet), no CNI"
#define WHY_PREFETCH   "the original's test image; list images to pull at start in prefetchImages"

static const struct dg_conf_compat cp_compat[] = {
    MAP("verbosity", "logLevel", verbosity),
    MAP("persistence", "persistence", persistence),
    MAP("autoscaler", "autoscaler", autoscaler),
    MAP("redis.replicas", "redis.replicas", redis_replicas),
    {.key = "portRegistration",
     .kind = DG_COMPAT_PORT,
     .to = "registrationServer",
     .def = "127.0.0.1"},
    IGNORE("registrationServerReplicas",
           "HAProxy's registration backends: followers here forward registrations to the "
           "leader, and haproxy.api keeps HAProxy's data-plane list"),
    IGNORE("reconstruct", "ours always rebuilds sandboxes from the workers' lists on start and "
                          "on leadership"),
    IGNORE("removeWorkerNode", "the original's empty worker stubs for tests; use the emulated "
                               "runtime"),
    IGNORE("removeDataplane", "the original's empty data-plane stubs for tests"),
    IGNORE("precreateSnapshots", "no snapshots here (Firecracker is not available)"),
    IGNORE("traceCreation", "the cold-start trace is written whenever traceOutputFolder is set"),
    IGNORE("endpointPersistence", "sandboxes are never persisted here: they are rebuilt from the "
                                  "workers"),
    IGNORE("autoscalingPeriod", "the autoscaler ticks every 2 s, the original's default"),
    IGNORE("defaultWFPartitionMethod", WHY_WORKFLOWS),
    IGNORE("imageStorage", "images are cached on each worker (oci runtime)"),
    IGNORE("cidr", "sandbox addresses are each worker's sandboxSubnet"),
    IGNORE("profiler.*", WHY_PROFILER),
    IGNORE("redis.dockerAddress", WHY_DOCKER_REDIS),
    IGNORE("redis.addressFromDockerNetwork", WHY_DOCKER_REDIS),
    MAP("redis.password", NULL, redis_password),
    MAP("redis.db", NULL, redis_db),
};

static const struct dg_conf_compat dp_compat[] = {
    MAP("verbosity", "logLevel", verbosity),
    MAP("dataPlaneIp", "dataPlaneIp", node_ip),
    MAP("controlPlaneAddress", "controlPlaneAddress", cp_addresses),
    CONTROL_PLANE_IP_PORT,
    IGNORE("async.*", WHY_ASYNC),
    IGNORE("persistRequests", "asynchronous requests and results are always kept in the control "
                              "plane's store here (they survive a data plane's restart)"),
    IGNORE("redis.*", "the data plane keeps nothing in Redis (the original's asynchronous "
                      "requests did)"),
    IGNORE("controlPlaneNotifyIntervalMinutes",
           "the data plane reports to the control plane every heartbeatInterval"),
    IGNORE("workflowDefaultScheduler", WHY_WORKFLOWS),
    IGNORE("workflowPreferredWorkerParallelism", WHY_WORKFLOWS),
};

static const struct dg_conf_compat wk_compat[] = {
    MAP("verbosity", "logLevel", verbosity),
    MAP("workerNodeIp", "workerNodeIp", node_ip),
    MAP("controlPlaneAddress", "controlPlaneAddress", cp_addresses),
    MAP("port", "port", placeholder),
    CONTROL_PLANE_IP_PORT,
    MAP("criType", "runtime", cri_type),
    IGNORE("criPath", WHY_CONTAINERD),
    IGNORE("containerd.criPath", WHY_CONTAINERD),
    IGNORE("cniConfigPath", WHY_CNI),
    IGNORE("containerd.cniConfigPath", WHY_CNI),
    IGNORE("prefetchImage", WHY_PREFETCH),
    IGNORE("containerd.prefetchImage", WHY_PREFETCH),
    MAP("cpuConstaint", "sandboxCpuLimit", cpu_constraints), /* sic, the original's spelling */
    MAP("cpuConstraint", "sandboxCpuLimit", cpu_constraints),
    MAP("cpuConstraints", "sandboxCpuLimit", cpu_constraints),
    IGNORE("firecracker.*", WHY_FIRECRACKER),
    IGNORE("firecrackerKernel", WHY_FIRECRACKER),
    IGNORE("firecrackerFileSystem", WHY_FIRECRACKER),
    IGNORE("firecrackerIPPrefix", WHY_FIRECRACKER),
    IGNORE("firecrackerInternalIPPrefix", WHY_FIRECRACKER),
    IGNORE("firecrackerExposedIPPrefix", WHY_FIRECRACKER),
    IGNORE("firecrackerVMDebugMode", WHY_FIRECRACKER),
    IGNORE("firecrackerUseSnapshots", WHY_FIRECRACKER),
    IGNORE("firecrackerNetworkPoolSize", WHY_FIRECRACKER " (its pool of pre-made networks is "
                                                         "netnsPool here)"),
    IGNORE("dandelion.*", "Dandelion is not available here"),
};

const struct dg_conf_compat *dg_conf_compat_for(const char *prog, size_t *n)
{
    static const struct {
        const char *prog;
        const struct dg_conf_compat *t;
        size_t n;
    } tables[] = {
        {"dirigent-cp", cp_compat, DG_ARRAY_LEN(cp_compat)},
        {"dirigent-dp", dp_compat, DG_ARRAY_LEN(dp_compat)},
        {"dirigent-worker", wk_compat, DG_ARRAY_LEN(wk_compat)},
    };
    for (size_t i = 0; prog && i < DG_ARRAY_LEN(tables); i++) {
        if (!strcmp(prog, tables[i].prog)) {
            *n = tables[i].n;
            return tables[i].t;
        }
    }
    *n = 0;
    return NULL;
}
