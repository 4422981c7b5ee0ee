/*
 * dirigent: the command-line tool. A command table; each command is a small
 * function. Talks to the control plane's registration server (JSON API) and
 * the data plane over HTTP with the project's client on a private loop (a
 * short-lived tool may wait for its answers).
 *
 *   dirigent up [--runtime auto|oci|process|emulated] [--state-dir DIR] [--cp-replicas N]
 *               [--dataplanes M]
 *   dirigent function deploy NAME --image IMG [--port P] [--min N] [--max N] [--cpu MILLI]
 *                                 [--memory MIB] [--cold-start-sweep]
 *   dirigent function list | get NAME | delete NAME
 *   dirigent invoke NAME [--data STR] [--header K:V]...
 *   dirigent status
 *   dirigent haproxy-config --socket PATH --cp REG1,REG2,...
 * Global: --cp HOST:PORT (registration server, 127.0.0.1:9091), --dp HOST:PORT (127.0.0.1:8080),
 *         --json (machine-readable output).
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dirigent/form.h"
#include "dirigent/http.h"
#include "dirigent/json.h"
#include "cli.h"

static const char *cp_addr = "127.0.0.1:9091";
static const char *dp_addr = "127.0.0.1:8080";
static bool json_out;

/* ---- a blocking request over the library's client --------------------------------------- */

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct cli_result *r = ud;
    r->done = true;
    if (resp) {
        r->status = resp->status;
        dg_buf_append(&r->body, resp->body.ptr, resp->body.len);
    } else {
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    }
}

/* Returns the status, or -1 with r->err set. */
int cli_request(const char *addr, const char *method, const char *path,
                const struct dg_http_header *hdrs, size_t n, const char *body, struct cli_result *r)
{
    memset(r, 0, sizeof(*r));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new_addr(&loop, addr, NULL, &err);
    if (!p) {
        snprintf(r->err, sizeof(r->err), "%s", err.msg);
        uv_loop_close(&loop);
        return -1;
    }
    static const struct dg_http_client_cbs cbs = {.on_done = on_done};
    dg_http_request(p, method, path, hdrs, n, body, body ? strlen(body) : 0, &cbs, r);
    while (!r->done)
        uv_run(&loop, UV_RUN_ONCE);
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (!r->body.data)
        dg_buf_append(&r->body, "", 0);
    return r->err[0] ? -1 : r->status;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dirigent: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* Print an API answer: JSON as is with --json, else through `table`. */
static int answer(struct cli_result *r, int status, void (*table)(json_t *))
{
    if (status < 0)
        return cli_fail("%s", r->err);
    if (status >= 300) {
        fprintf(stderr, "dirigent: %d: %s", status, r->body.data);
        dg_buf_free(&r->body);
        return 1;
    }
    json_t *j = NULL;
    if (json_out || !table || dg_json_parse(r->body.data, r->body.len, &j, NULL) < 0) {
        fputs(r->body.data, stdout);
        if (r->body.len && r->body.data[r->body.len - 1] != '\n')
            putchar('\n');
    } else {
        table(j);
    }
    json_decref(j);
    dg_buf_free(&r->body);
    return 0;
}

/* ---- function commands ------------------------------------------------------------------ */

/* "3 s ago", "4 min ago", "2 h ago" */
static void fmt_age(char *out, size_t n, long long ms)
{
    long long s = ms / 1000;
    if (s < 120)
        snprintf(out, n, "%lld s ago", s);
    else if (s < 2 * 3600)
        snprintf(out, n, "%lld min ago", s / 60);
    else
        snprintf(out, n, "%lld h ago", s / 3600);
}

/* One function per row; a function whose last create failed gets a line under its row:
 * "  error: <reason> (worker w1, 3 s ago)". */
static void fn_table(json_t *list)
{
    printf("%-24s %-9s %-6s %-8s %-8s %s\n", "NAME", "STATE", "READY", "DESIRED", "BOUNDS",
           "IMAGE");
    size_t i;
    json_t *f;
    json_t *one = json_is_object(list) ? list : NULL;
    if (one) {
        list = json_array();
        json_array_append(list, one);
    }
    json_array_foreach(list, i, f)
    {
        char bounds[32];
        snprintf(bounds, sizeof(bounds), "%lld..%lld",
                 (long long)json_integer_value(json_object_get(f, "scaling_lower_bound")),
                 (long long)json_integer_value(json_object_get(f, "scaling_upper_bound")));
        const char *state = json_string_value(json_object_get(f, "state"));
        printf("%-24s %-9s %-6lld %-8lld %-8s %s\n", json_string_value(json_object_get(f, "name")),
               state ? state : "-", (long long)json_integer_value(json_object_get(f, "ready")),
               (long long)json_integer_value(json_object_get(f, "desired")), bounds,
               json_string_value(json_object_get(f, "image")));
        const char *error = json_string_value(json_object_get(f, "error"));
        if (!error)
            continue;
        const char *worker = json_string_value(json_object_get(f, "error_worker"));
        char age[32];
        fmt_age(age, sizeof(age),
                (long long)json_integer_value(json_object_get(f, "error_age_ms")));
        printf("  error: %s (worker %s, %s)\n", error, worker ? worker : "?", age);
    }
    if (one)
        json_decref(list);
}

const char *cli_opt(int *i, int argc, char **argv, const char *name)
{
    if (*i >= argc || !argv[*i] || strcmp(argv[*i], name) != 0)
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "dirigent: %s needs a value\n", name);
        exit(2);
    }
    const char *v = argv[++*i];
    return v ? v : ""; /* consumed: never NULL */
}

static int cmd_deploy(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-')
        return cli_fail("function deploy: expected a NAME");
    json_t *j = json_pack("{ss s[is]}", "name", argv[0], "port_forwarding", 80, "tcp");
    const char *v;
    for (int i = 1; i < argc; i++) {
        if ((v = cli_opt(&i, argc, argv, "--image")))
            json_object_set_new(j, "image", json_string(v));
        else if ((v = cli_opt(&i, argc, argv, "--port")))
            json_object_set_new(j, "port_forwarding", json_pack("[ss]", v, "tcp"));
        else if ((v = cli_opt(&i, argc, argv, "--min")))
            json_object_set_new(j, "scaling_lower_bound", json_string(v));
        else if ((v = cli_opt(&i, argc, argv, "--max")))
            json_object_set_new(j, "scaling_upper_bound", json_string(v));
        else if ((v = cli_opt(&i, argc, argv, "--cpu")))
            json_object_set_new(j, "requested_cpu", json_string(v));
        else if ((v = cli_opt(&i, argc, argv, "--memory")))
            json_object_set_new(j, "requested_memory", json_string(v));
        else if ((v = cli_opt(&i, argc, argv, "--concurrency")))
            json_object_set_new(j, "container_concurrency", json_string(v));
        else if (strcmp(argv[i], "--cold-start-sweep") == 0)
            json_object_set_new(j, "cold_start_sweep", json_true());
        else {
            json_decref(j);
            return cli_fail("function deploy: unknown option '%s'", argv[i]);
        }
    }
    char *body = dg_json_dumps(j);
    json_decref(j);
    struct cli_result r;
    int st = cli_request(cp_addr, "POST", "/v1/functions", NULL, 0, body, &r);
    free(body);
    if (st == 200 && !json_out) {
        printf("deployed %s: invoke with curl -H 'Host: %s' http://%s/\n", argv[0], argv[0],
               r.body.data[0] ? strtok(r.body.data, ";") : dp_addr);
        dg_buf_free(&r.body);
        return 0;
    }
    return answer(&r, st, NULL);
}

static int cmd_function(int argc, char **argv)
{
    if (argc < 1)
        return cli_fail("function: expected deploy, list, get or delete");
    struct cli_result r;
    char path[256];
    if (strcmp(argv[0], "deploy") == 0)
        return cmd_deploy(argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return answer(&r, cli_request(cp_addr, "GET", "/v1/functions", NULL, 0, NULL, &r),
                      fn_table);
    if (argc < 2)
        return cli_fail("function %s: expected a NAME", argv[0]);
    snprintf(path, sizeof(path), "/v1/functions/%s", argv[1]);
    if (strcmp(argv[0], "get") == 0)
        return answer(&r, cli_request(cp_addr, "GET", path, NULL, 0, NULL, &r), fn_table);
    if (strcmp(argv[0], "delete") == 0)
        return answer(&r, cli_request(cp_addr, "DELETE", path, NULL, 0, NULL, &r), NULL);
    return cli_fail("function: unknown sub-command '%s'", argv[0]);
}

static int cmd_invoke(int argc, char **argv)
{
    if (argc < 1)
        return cli_fail("invoke: expected a NAME");
    struct dg_http_header hdrs[33];
    size_t n = 0;
    hdrs[n++] = (struct dg_http_header){DG_STR("Host"), dg_str_c(argv[0])};
    const char *data = NULL, *v;
    for (int i = 1; i < argc; i++) {
        if ((v = cli_opt(&i, argc, argv, "--data"))) {
            data = v;
        } else if ((v = cli_opt(&i, argc, argv, "--header"))) {
            const char *colon = strchr(v, ':');
            if (!colon || n == 32)
                return cli_fail("invoke: --header: expected NAME:VALUE, got '%s'", v);
            const char *val = colon + 1;
            while (*val == ' ')
                val++;
            hdrs[n++] = (struct dg_http_header){{v, (size_t)(colon - v)}, dg_str_c(val)};
        } else {
            return cli_fail("invoke: unknown option '%s'", argv[i]);
        }
    }
    struct cli_result r;
    int st = cli_request(dp_addr, data ? "POST" : "GET", "/", hdrs, n, data, &r);
    return answer(&r, st, NULL);
}

static void status_table(json_t *s)
{
    size_t i;
    json_t *x;
    json_t *reps = json_object_get(s, "replicas");
    if (json_array_size(reps)) {
        printf("CONTROL PLANE REPLICAS\n%-4s %-22s %s\n", "ID", "INTERNAL API", "ROLE");
        json_array_foreach(reps, i, x)
        {
            /* each replica says for itself whether it is up and what it is */
            const char *api = json_string_value(json_object_get(x, "api"));
            struct cli_result r;
            const char *role = "unreachable";
            json_t *rj = NULL;
            if (cli_request(api, "GET", "/v1/status", NULL, 0, NULL, &r) == 200 &&
                (rj = json_loads(r.body.data, 0, NULL)))
                role = json_string_value(json_object_get(rj, "role")) ?: "?";
            printf("%-4lld %-22s %s\n", (long long)json_integer_value(json_object_get(x, "id")),
                   api, role);
            json_decref(rj);
            dg_buf_free(&r.body);
        }
        printf("\n");
    }
    printf("WORKERS\n%-24s %-22s %-12s %-15s %-17s %s\n", "NAME", "ADDRESS", "SCHEDULABLE",
           "CPU(m) USED/CAP", "MEM(MiB) USED/CAP", "SANDBOXES");
    json_array_foreach(json_object_get(s, "workers"), i, x)
    {
        char cpu[40], mem[40];
        snprintf(cpu, sizeof(cpu), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(x, "cpuUsedMilli")),
                 (long long)json_integer_value(json_object_get(x, "cpuMilli")));
        snprintf(mem, sizeof(mem), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(x, "memoryUsedMiB")),
                 (long long)json_integer_value(json_object_get(x, "memoryMiB")));
        printf("%-24s %-22s %-12s %-15s %-17s %lld\n",
               json_string_value(json_object_get(x, "name")),
               json_string_value(json_object_get(x, "address")),
               json_is_true(json_object_get(x, "schedulable")) ? "yes" : "no", cpu, mem,
               (long long)json_integer_value(json_object_get(x, "sandboxes")));
    }
    printf("\nDATA PLANES\n%-24s %-22s %s\n", "NAME", "PROXY", "API");
    json_array_foreach(json_object_get(s, "dataplanes"), i, x)
        printf("%-24s %-22s %s\n", json_string_value(json_object_get(x, "name")),
               json_string_value(json_object_get(x, "proxy")),
               json_string_value(json_object_get(x, "api")));
    printf("\nFUNCTIONS\n");
    fn_table(json_object_get(s, "functions"));
}

static int cmd_status(int argc, char **argv)
{
    struct cli_result r;
    int st = cli_request(cp_addr, "GET", "/v1/status", NULL, 0, NULL, &r);
    if (st == 200) { /* a follower keeps no registry: ask the leader it names */
        json_t *j = json_loads(r.body.data, 0, NULL);
        const char *role = j ? json_string_value(json_object_get(j, "role")) : NULL;
        const char *leader = j ? json_string_value(json_object_get(j, "leader")) : NULL;
        if (role && strcmp(role, "follower") == 0 && leader) {
            char *addr = dg_xstrdup(leader);
            dg_buf_free(&r.body);
            st = cli_request(addr, "GET", "/v1/status", NULL, 0, NULL, &r);
            free(addr);
        }
        json_decref(j);
    }
    return answer(&r, st, status_table);
}

/* ---- up: a local cluster in the foreground ---------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    stop_flag = 1;
}

/* A daemon of the local cluster: our binaries from `dir`, others (redis-server, haproxy) from
 * PATH; output to <state>/logs/NAME.log, pid in <state>/pids/NAME.pid. */
static pid_t spawn(const char *dir, const char *state, const char *name, char *const argv[])
{
    char log[4096], pidf[4096];
    snprintf(log, sizeof(log), "%s/logs/%s.log", state, name);
    snprintf(pidf, sizeof(pidf), "%s/pids/%s.pid", state, name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        signal(SIGINT, SIG_IGN); /* the terminal's Ctrl-C is ours to relay */
        /* if `up` dies (even by SIGKILL), the cluster stops with it rather than holding the
         * ports; a race with an `up` that died before this line is closed by the check */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        if (strncmp(argv[0], "dirigent", 8) != 0) {
            execvp(argv[0], argv);
        } else {
            char exe[4096];
            snprintf(exe, sizeof(exe), "%s/%s", dir, argv[0]);
            execv(exe, argv);
        }
        _exit(127);
    }
    FILE *f = fopen(pidf, "w");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
    return pid;
}

static bool healthy(const char *addr)
{
    struct cli_result r;
    int st = cli_request(addr, "GET", "/health", NULL, 0, NULL, &r);
    dg_buf_free(&r.body);
    return st == 200;
}

/* Why the oci runtime cannot run here, or NULL. */
static const char *oci_unusable(const char *image_dir)
{
    static char why[256];
    if (geteuid() != 0)
        return "root";
    if (system("command -v crun >/dev/null 2>&1") != 0)
        return "crun (apt-get install crun)";
    snprintf(why, sizeof(why), "%s/index.json", image_dir);
    if (access(why, R_OK) != 0) {
        snprintf(why, sizeof(why), "the image %s (make image)", image_dir);
        return why;
    }
    return NULL;
}

/* ---- haproxy-config: HAProxy in front of data planes and registration servers ----------- */

struct hx_conf {
    const char *invocations, *registration, *socket, *backend;
    char **cps; /* the CPs' registration servers */
    size_t ncps;
};

/* The two frontends of the original's configs/haproxy.cfg: invocations hashed on Host over
 * the data planes (servers added at run time by the CP leader through the stats socket), and
 * registrations spread over the CPs' registration servers (a follower forwards to the
 * leader). Timeouts are the original's; health checks every 500 ms (it had 2.5 s). */
static void haproxy_config(FILE *out, const struct hx_conf *c)
{
    fprintf(out,
            "# HAProxy for dirigent (written by `dirigent haproxy-config`)\n"
            "global\n"
            "    stats socket %s mode 600 level admin\n"
            "    log stdout format raw local0 info\n\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            "    option httplog\n"
            "    option dontlog-normal\n"
            "    timeout connect 1s\n"
            "    timeout client 900s\n"
            "    timeout server 900s\n"
            "    timeout http-request 60s\n"
            "    timeout http-keep-alive 60s\n"
            "    timeout queue 60s\n"
            "    timeout check 2s\n"
            "    retries 3\n"
            "    option redispatch 1\n"
            "    http-reuse always\n\n"
            "frontend invocations\n"
            "    bind %s\n"
            "    default_backend %s\n\n"
            "# servers dp_<name>: added and removed by the control plane leader (haproxy.api)\n"
            "backend %s\n"
            "    balance hdr(host)\n"
            "    hash-type consistent\n"
            "    option httpchk GET /health\n"
            "    retry-on conn-failure empty-response\n"
            "    default-server inter 500ms fall 2 rise 1\n\n"
            "frontend registration\n"
            "    bind %s\n"
            "    default_backend registration\n\n"
            "backend registration\n"
            "    balance roundrobin\n"
            "    option httpchk GET /health\n"
            "    option http-buffer-request\n"
            "    retry-on conn-failure empty-response 503\n"
            "    # a replica that refuses a connection is out at once (not after two checks): a\n"
            "    # registration during a failover is retried on a live one\n"
            "    default-server inter 500ms fall 2 rise 1 observe layer4 error-limit 1 "
            "on-error mark-down\n",
            c->socket, c->invocations, c->backend, c->backend, c->registration);
    for (size_t i = 0; i < c->ncps; i++)
        fprintf(out, "    server cp%zu %s check\n", i, c->cps[i]);
}

/* "a,b,c" into a NULL-terminated vector (strings point into `s`, which is modified). */
static size_t split_list(char *s, char **v, size_t cap)
{
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t && n < cap;
         t = strtok_r(NULL, ",", &save))
        v[n++] = t;
    v[n] = NULL;
    return n;
}

static int cmd_haproxy_config(int argc, char **argv)
{
    struct hx_conf c = {
        .invocations = "127.0.0.1:8079", .registration = "127.0.0.1:9092", .backend = "dataplanes"};
    char *cps[65], *list = NULL;
    const char *v;
    for (int i = 0; i < argc; i++) {
        if ((v = cli_opt(&i, argc, argv, "--invocations")))
            c.invocations = v;
        else if ((v = cli_opt(&i, argc, argv, "--registration")))
            c.registration = v;
        else if ((v = cli_opt(&i, argc, argv, "--socket")))
            c.socket = v;
        else if ((v = cli_opt(&i, argc, argv, "--backend")))
            c.backend = v;
        else if ((v = cli_opt(&i, argc, argv, "--cp")))
            list = (char *)v;
        else
            return cli_fail("haproxy-config: unknown option '%s'", argv[i]);
    }
    if (!c.socket || !list)
        return cli_fail("haproxy-config: expected --socket PATH (the runtime API the CP's "
                        "haproxy.api names) and --cp REG1,REG2,... (the CPs' registration "
                        "servers)");
    c.cps = cps;
    c.ncps = split_list(list, cps, 64);
    haproxy_config(stdout, &c);
    return 0;
}

/* ---- up: a local cluster in the foreground ---------------------------------------------- */

#define UP_MAX_PROCS 24

struct up {
    const char *self_dir, *src_dir, *state;
    pid_t pids[UP_MAX_PROCS];
    size_t n;
};

static void up_spawn(struct up *u, const char *name, char *const argv[])
{
    if (u->n < UP_MAX_PROCS)
        u->pids[u->n++] = spawn(u->self_dir, u->state, name, argv);
}

/* Stop in reverse order of start (the worker stops its sandboxes before the CP goes). */
static void up_stop(struct up *u)
{
    for (size_t i = u->n; i-- > 0;)
        kill(u->pids[i], SIGTERM);
    for (size_t i = 0; i < u->n; i++)
        while (waitpid(u->pids[i], NULL, 0) == -1 && errno == EINTR)
            ;
}

/* The leader's status: polls the replicas until one says it leads and knows `workers` workers
 * and `dps` data planes. */
static bool up_ready(char **apis, size_t n, unsigned dps)
{
    for (int i = 0; i < 300 && !stop_flag; i++) {
        usleep(50000);
        for (size_t k = 0; k < n; k++) {
            struct cli_result r;
            if (cli_request(apis[k], "GET", "/v1/status", NULL, 0, NULL, &r) != 200) {
                dg_buf_free(&r.body);
                continue;
            }
            json_t *j = json_loads(r.body.data, 0, NULL);
            dg_buf_free(&r.body);
            bool ok = j && json_array_size(json_object_get(j, "workers")) >= 1 &&
                      json_array_size(json_object_get(j, "dataplanes")) >= dps &&
                      (n == 1 ||
                       strcmp(json_string_value(json_object_get(j, "role")) ?: "", "leader") == 0);
            json_decref(j);
            if (ok)
                return true;
        }
    }
    return false;
}

static int cmd_up(int argc, char **argv, const char *self_dir, const char *src_dir)
{
    const char *runtime = "auto", *state = "data/local", *v;
    int64_t ncp = 1, ndp = 1;
    for (int i = 0; i < argc; i++) {
        if ((v = cli_opt(&i, argc, argv, "--runtime")))
            runtime = v;
        else if ((v = cli_opt(&i, argc, argv, "--state-dir")))
            state = v;
        else if ((v = cli_opt(&i, argc, argv, "--cp-replicas"))) {
            if (!dg_str_to_i64(dg_str_c(v), &ncp) || ncp < 1 || ncp > 7 || ncp % 2 == 0)
                return cli_fail("up: --cp-replicas: expected 1, 3, 5 or 7 (an odd number: a "
                                "majority must survive), got '%s'",
                                v);
        } else if ((v = cli_opt(&i, argc, argv, "--dataplanes"))) {
            if (!dg_str_to_i64(dg_str_c(v), &ndp) || ndp < 1 || ndp > 8)
                return cli_fail("up: --dataplanes: expected 1 to 8, got '%s'", v);
        } else {
            return cli_fail("up: unknown option '%s'", argv[i]);
        }
    }
    if (strcmp(runtime, "auto") != 0 && strcmp(runtime, "oci") != 0 &&
        strcmp(runtime, "process") != 0 && strcmp(runtime, "emulated") != 0)
        return cli_fail("up: --runtime: expected auto, oci, process or emulated, got '%s'",
                        runtime);
    /* HA: replicas share Redis and sit behind HAProxy with the data planes */
    bool ha = ncp > 1 || ndp > 1;
    if (ha)
        for (const char *const *b = (const char *const[]){"redis-server", "haproxy", NULL}; *b;
             b++) {
            char cmd[128];
            snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", *b);
            if (system(cmd) != 0)
                return cli_fail("up: --cp-replicas/--dataplanes need %s (make deps installs "
                                "it)",
                                *b);
        }
    /* auto: containers when this machine can run them, else plain processes (and why) */
    char *image_dir = dg_xasprintf("%s/images/dirigent-fn", self_dir);
    if (strcmp(runtime, "auto") == 0) {
        const char *why = oci_unusable(image_dir);
        runtime = why ? "process" : "oci";
        if (why)
            printf("runtime process (containers need %s)\n", why);
        else
            printf("runtime oci (crun, image oci:%s:latest)\n", image_dir);
        fflush(stdout);
    }
    bool oci = strcmp(runtime, "oci") == 0;
    char buf[4096];
    mkdir(state, 0755);
    snprintf(buf, sizeof(buf), "%s/logs", state);
    mkdir(buf, 0755);
    snprintf(buf, sizeof(buf), "%s/pids", state);
    mkdir(buf, 0755);
    char abs_state[4096];
    if (!realpath(state, abs_state))
        snprintf(abs_state, sizeof(abs_state), "%s", state);
    /* addresses: CP i: internal 9090+10i, registration 9091+10i, raft 9095+10i; DP j: proxy
     * 8080+10j, API 8081+10j; HAProxy: 8079 (invocations), 9092 (registrations) */
    struct dg_buf all = {0}, rafts = {0}, regs = {0};
    for (int64_t i = 0; i < ncp; i++) {
        dg_buf_printf(&all, "%s127.0.0.1:%lld", i ? "," : "", 9090 + 10 * (long long)i);
        dg_buf_printf(&rafts, "%s127.0.0.1:%lld", i ? "," : "", 9095 + 10 * (long long)i);
        dg_buf_printf(&regs, "%s127.0.0.1:%lld", i ? "," : "", 9091 + 10 * (long long)i);
    }
    dg_buf_append(&all, "", 1);
    dg_buf_append(&rafts, "", 1);
    dg_buf_append(&regs, "", 1);
    char *cpc = dg_xasprintf("%s/configs/local/cp.yaml", src_dir);
    char *dpc = dg_xasprintf("%s/configs/local/dp.yaml", src_dir);
    char *wkc = dg_xasprintf("%s/configs/local/worker.yaml", src_dir);
    char *fn = dg_xasprintf("%s/dirigent-fn", self_dir);
    char *sock = dg_xasprintf("%s/haproxy.sock", abs_state);
    const int redis_port = 6380; /* the original's raft set-up used 6380-6382 */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct up u = {.self_dir = self_dir, .src_dir = src_dir, .state = state};
    int rc = 0;
    if (ha) {
        char *rdir = dg_xasprintf("%s/redis", state), *rport = dg_xasprintf("%d", redis_port);
        mkdir(rdir, 0755);
        up_spawn(&u, "redis",
                 (char *[]){"redis-server", "--port", rport, "--bind", "127.0.0.1", "--dir", rdir,
                            "--appendonly", "yes", "--save", "", NULL});
        free(rdir);
        free(rport);
        char *hcfg = dg_xasprintf("%s/haproxy.cfg", state);
        FILE *f = fopen(hcfg, "w");
        if (!f) {
            rc = cli_fail("up: %s: %s", hcfg, strerror(errno));
        } else {
            char *cps[9];
            struct hx_conf hc = {.invocations = "127.0.0.1:8079",
                                 .registration = "127.0.0.1:9092",
                                 .socket = sock,
                                 .backend = "dataplanes",
                                 .cps = cps,
                                 .ncps = split_list(regs.data, cps, 8)};
            haproxy_config(f, &hc);
            fclose(f);
            unlink(sock);
            up_spawn(&u, "haproxy", (char *[]){"haproxy", "-db", "-f", hcfg, NULL});
        }
        free(hcfg);
    }
    char *apis[8] = {0};
    for (int64_t i = 0; i < ncp && !rc; i++) {
        char name[16];
        snprintf(name, sizeof(name), ncp > 1 ? "cp-%lld" : "cp", (long long)i);
        char *trace = ncp > 1 ? dg_xasprintf("traceOutputFolder=%s/trace-%s", state, name)
                              : dg_xasprintf("traceOutputFolder=%s/trace", state);
        char *data = dg_xasprintf("dataDir=%s/%s", state, name);
        char *port = dg_xasprintf("port=%lld", 9090 + 10 * (long long)i);
        char *reg = dg_xasprintf("registrationServer=127.0.0.1:%lld", 9091 + 10 * (long long)i);
        char *reps = dg_xasprintf("replicas=%s", all.data);
        char *raft = dg_xasprintf("raftAddresses=%s", rafts.data);
        char *rid = dg_xasprintf("replicaId=%lld", (long long)i + 1);
        char *redis = dg_xasprintf("redis.address=127.0.0.1:%d", redis_port);
        char *hx = dg_xasprintf("haproxy.api=%s", sock);
        apis[i] = dg_xasprintf("127.0.0.1:%lld", 9090 + 10 * (long long)i);
        if (ha)
            up_spawn(&u, name,
                     (char *[]){"dirigent-cp",
                                "--config",
                                cpc,
                                "--set",
                                trace,
                                "--set",
                                data,
                                "--set",
                                port,
                                "--set",
                                reg,
                                "--set",
                                reps,
                                "--set",
                                raft,
                                "--set",
                                rid,
                                "--set",
                                "persistence=redis",
                                "--set",
                                redis,
                                "--set",
                                "redis.fullPersistence=true",
                                "--set",
                                hx,
                                "--set",
                                "loadBalancerAddress=127.0.0.1:8079",
                                NULL});
        else
            up_spawn(
                &u, name,
                (char *[]){"dirigent-cp", "--config", cpc, "--set", trace, "--set", data, NULL});
        free(trace);
        free(data);
        free(port);
        free(reg);
        free(reps);
        free(raft);
        free(rid);
        free(redis);
        free(hx);
    }
    for (int64_t j = 0; j < ndp && !rc; j++) {
        char name[16];
        snprintf(name, sizeof(name), ha ? "dp-%lld" : "dp", (long long)j);
        char *trace = dg_xasprintf("traceOutputFolder=%s/trace", state);
        char *pp = dg_xasprintf("portProxy=%lld", 8080 + 10 * (long long)j);
        char *pg = dg_xasprintf("portGRPC=%lld", 8081 + 10 * (long long)j);
        char *nm2 = dg_xasprintf("name=%s", name);
        char *cps = dg_xasprintf("controlPlaneAddress=%s", all.data);
        up_spawn(&u, name,
                 (char *[]){"dirigent-dp", "--config", dpc, "--set", trace, "--set", pp, "--set",
                            pg, "--set", nm2, "--set", cps, NULL});
        free(trace);
        free(pp);
        free(pg);
        free(nm2);
        free(cps);
    }
    char *rt = dg_xasprintf("runtime=%s", runtime);
    char *fnb = dg_xasprintf("fnBinary=%s", fn);
    char *wdata = dg_xasprintf("dataDir=%s/worker", state);
    char *wcps = dg_xasprintf("controlPlaneAddress=%s", all.data);
    if (!rc)
        up_spawn(&u, "worker",
                 (char *[]){"dirigent-worker", "--config", wkc, "--set", rt, "--set", fnb, "--set",
                            wdata, "--set", wcps, NULL});
    /* healthy: a leader that knows the worker and every data plane */
    bool ready = !rc && up_ready(apis, (size_t)ncp, (unsigned)ndp);
    const char *reg_addr = ha ? "127.0.0.1:9092" : "127.0.0.1:9091";
    const char *inv_addr = ha ? "127.0.0.1:8079" : "127.0.0.1:8080";
    if (ready && ha) { /* HAProxy has the data planes once the leader synced it */
        ready = false;
        for (int k = 0; k < 200 && !stop_flag && !ready; k++) {
            usleep(50000);
            ready = healthy(inv_addr) && healthy(reg_addr);
        }
    }
    if (!ready && !rc) {
        fprintf(stderr, "dirigent: up: the cluster did not become healthy; logs in %s/logs\n",
                state);
        rc = 1;
    } else if (!rc) {
        char body[8192], image[4096];
        if (oci)
            snprintf(image, sizeof(image), "oci:%s:latest", image_dir);
        else
            snprintf(image, sizeof(image), "%s", fn);
        snprintf(body, sizeof(body),
                 "name=hello&image=%s&port_forwarding=80&port_forwarding=tcp"
                 "&requested_cpu=100&requested_memory=64",
                 image);
        struct cli_result r;
        int st = cli_request(reg_addr, "POST", "/registerService", NULL, 0, body, &r);
        if (st != 200 && st != 409) {
            fprintf(stderr, "dirigent: up: deploying hello: %d %s%s\n", st, r.err,
                    r.body.data ? r.body.data : "");
            rc = 1;
        } else {
            if (ha)
                printf("ready: curl -H 'Host: hello' http://%s/ (invocations through HAProxy "
                       "over %lld data planes); registrations: http://%s/registerService (%lld "
                       "control plane replicas)\n",
                       inv_addr, (long long)ndp, reg_addr, (long long)ncp);
            else
                printf("ready: curl -H 'Host: hello' http://%s/\n", inv_addr);
            fflush(stdout);
            while (!stop_flag)
                pause();
        }
        dg_buf_free(&r.body);
    }
    up_stop(&u);
    fprintf(stderr, "dirigent: stopped\n");
    for (size_t i = 0; i < DG_ARRAY_LEN(apis); i++)
        free(apis[i]);
    free(cpc);
    free(dpc);
    free(wkc);
    free(fn);
    free(rt);
    free(fnb);
    free(wdata);
    free(wcps);
    free(sock);
    free(image_dir);
    dg_buf_free(&all);
    dg_buf_free(&rafts);
    dg_buf_free(&regs);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *v;
        if ((v = cli_opt(&i, argc, argv, "--cp")))
            cp_addr = v;
        else if ((v = cli_opt(&i, argc, argv, "--dp")))
            dp_addr = v;
        else if (strcmp(argv[i], "--json") == 0)
            json_out = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            break;
        else
            return cli_fail("unknown option '%s' (see --help)", argv[i]);
    }
    if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
        printf("usage: dirigent [--cp HOST:PORT] [--dp HOST:PORT] [--json] COMMAND\n"
               "  up [--runtime auto|oci|process|emulated] [--state-dir DIR]   a local cluster\n"
               "     [--cp-replicas N] [--dataplanes M]   N CPs (Redis, raft) and M DPs behind "
               "HAProxy\n"
               "  function deploy NAME --image IMG [--port P] [--min N] [--max N] [--cpu MILLI]\n"
               "                  [--memory MIB] [--concurrency N] [--cold-start-sweep]\n"
               "  function list | get NAME | delete NAME\n"
               "  invoke NAME [--data STR] [--header K:V]...\n"
               "  status\n"
               "  haproxy-config --socket PATH --cp REG1,REG2,... [--invocations IP:PORT]\n"
               "                 [--registration IP:PORT] [--backend NAME]   HAProxy's config\n"
               "  load burst N FUNCTION\n"
               "  load rps --rate R --duration S [--cold [--cooldown S] [--image IMG]] [FUNCTION]\n"
               "  load trace DIR|FILE [--minutes N] [--warmup-minutes W] [--seed S] [--speed X]\n"
               "             [--iat equidistant|uniform|exponential] [--image IMG] [--prefix P]\n"
               "             [--dry-run]\n"
               "  load summarize FILE.csv\n"
               "     load options: --csv FILE (a row per invocation), --timeout S (120)\n");
        return i >= argc ? 2 : 0;
    }
    /* where the other binaries and the configs are: next to this one, and its source tree */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    const char *src = getenv("DIRIGENT_SOURCE_DIR") ? getenv("DIRIGENT_SOURCE_DIR") : DG_SOURCE_DIR;
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    if (strcmp(cmd, "up") == 0)
        return cmd_up(sub_argc, sub_argv, self, src);
    if (strcmp(cmd, "haproxy-config") == 0)
        return cmd_haproxy_config(sub_argc, sub_argv);
    if (strcmp(cmd, "function") == 0)
        return cmd_function(sub_argc, sub_argv);
    if (strcmp(cmd, "invoke") == 0)
        return cmd_invoke(sub_argc, sub_argv);
    if (strcmp(cmd, "status") == 0)
        return cmd_status(sub_argc, sub_argv);
    if (strcmp(cmd, "load") == 0) {
        char *fnp = dg_xasprintf("%s/dirigent-fn", self);
        int rc = cli_load(sub_argc, sub_argv, cp_addr, dp_addr, fnp, json_out);
        free(fnp);
        return rc;
    }
    return cli_fail("unknown command '%s' (see --help)", cmd);
}
