/*
 * up.c: `dirigent up`, a local cluster in the foreground: a control plane (or N replicas with
 * Redis and HAProxy), M data planes and a worker, each a child process logging to
 * <state>/logs/NAME.log with its pid in <state>/pids/NAME.pid, and the sample function
 * `hello`.
 *
 * Before it starts anything it takes the state directory's lock (one cluster per state
 * directory) and checks that every port it will use is free, so a second `up` never touches
 * a running cluster. Every port is the default plus (--port-base - 8080), so clusters with
 * different state directories and port bases run side by side.
 *
 * Signals: the daemons run in process groups of their own, so the terminal's Ctrl-C reaches
 * only `up`, which stops them one by one in reverse order of start with one SIGTERM each (the
 * worker first: it removes its sandboxes while the CP is still there), waits for each (a grace
 * period, then SIGKILL, reported), and returns. If `up` dies, PR_SET_PDEATHSIG stops them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "dirigent/auth.h"

#define UP_MAX_PROCS     24
#define UP_BASE          8080  /* the default --port-base: the data plane's proxy */
#define UP_STOP_GRACE_MS 10000 /* per daemon, after its SIGTERM */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

struct up {
    const char *self_dir, *state; /* state: absolute */
    const char *auth_set;         /* "authTokenFile=STATE/cluster.key" for our daemons */
    pid_t pids[UP_MAX_PROCS];
    char names[UP_MAX_PROCS][16];
    size_t n;
};

/* A daemon of the local cluster: our binaries from self_dir, others (redis-server, haproxy)
 * from PATH. */
static void up_spawn(struct up *u, const char *name, char *const argv[])
{
    if (u->n == UP_MAX_PROCS)
        return;
    char log[4096], pidf[4096];
    snprintf(log, sizeof(log), "%s/logs/%s.log", u->state, name);
    snprintf(pidf, sizeof(pidf), "%s/pids/%s.pid", u->state, name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        /* a process group of its own: the terminal's Ctrl-C goes to `up` alone, which relays
         * exactly one SIGTERM (the daemon never sees the same stop twice) */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        /* if `up` dies (even by SIGKILL), the cluster stops with it rather than holding the
         * ports; a race with an `up` that died before this line is closed by the check */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        if (strncmp(argv[0], "dirigent", 8) != 0) {
            execvp(argv[0], argv);
        } else {
            char exe[4096];
            snprintf(exe, sizeof(exe), "%s/%s", u->self_dir, argv[0]);
            /* every daemon of ours gets the cluster key (docs/security.md) */
            char *args[64];
            size_t n = 0;
            while (n < DG_ARRAY_LEN(args) - 3 && argv[n]) {
                args[n] = argv[n];
                n++;
            }
            if (u->auth_set) {
                args[n++] = "--set";
                args[n++] = (char *)u->auth_set;
            }
            args[n] = NULL;
            execv(exe, args);
        }
        _exit(127);
    }
    if (pid == -1) {
        fprintf(stderr, "dirigent: up: starting %s: %s\n", name, strerror(errno));
        return;
    }
    setpgid(pid, pid); /* also here: whichever of the two runs first */
    FILE *f = fopen(pidf, "w");
    if (f) {
        fprintf(f, "%d\n", (int)pid);
        fclose(f);
    }
    u->pids[u->n] = pid;
    snprintf(u->names[u->n], sizeof(u->names[0]), "%s", name);
    u->n++;
}

/* Waits up to ms for pid; true once it was reaped. */
static bool reap(pid_t pid, int ms)
{
    for (int t = 0;; t += 10) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r == -1 && errno == ECHILD))
            return true;
        if (t >= ms)
            return false;
        usleep(10000);
    }
}

/* Stop in reverse order of start (the worker removes its sandboxes before the CP goes): one
 * SIGTERM each, then up to UP_STOP_GRACE_MS, then SIGKILL, said on stderr. */
static void up_stop(struct up *u)
{
    for (size_t i = u->n; i-- > 0;) {
        kill(u->pids[i], SIGTERM);
        if (reap(u->pids[i], UP_STOP_GRACE_MS))
            continue;
        kill(u->pids[i], SIGKILL);
        reap(u->pids[i], 5000);
        fprintf(stderr,
                "dirigent: up: %s (pid %d) did not stop within %d s of its SIGTERM: killed "
                "(see its log)\n",
                u->names[i], (int)u->pids[i], UP_STOP_GRACE_MS / 1000);
    }
}

static bool healthy(const char *addr)
{
    struct cli_result r;
    int st = cli_request_anon(addr, "GET", "/health", NULL, 0, NULL, &r);
    dg_buf_free(&r.body);
    return st == 200;
}

/* Why the oci runtime cannot run here, or NULL. */
static const char *oci_unusable(const char *image_dir)
{
    static char why[4200];
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

/* The pid `up` spawned as NAME, or 0. */
static pid_t up_pid_of(const struct up *u, const char *name)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->names[i], name) == 0)
            return u->pids[i];
    return 0;
}

/* The "pid" of the JSON at GET addr path (a CP's /v1/status, a daemon's /health), -1 when it
 * does not answer 200 with one; the JSON in *out when out is given (the caller frees it). */
static long long answering_pid(const char *addr, const char *path, json_t **out)
{
    struct cli_result r;
    int st = cli_request(addr, "GET", path, NULL, 0, NULL, &r);
    json_t *j = st == 200 ? json_loads(r.body.data, 0, NULL) : NULL;
    dg_buf_free(&r.body);
    json_t *p = json_object_get(j, "pid");
    long long pid = json_is_integer(p) ? (long long)json_integer_value(p) : -1;
    if (out)
        *out = j;
    else
        json_decref(j);
    return pid;
}

/* Healthy, and ours: polls until every daemon `up` spawned answers on its port with its own
 * pid (a cluster started by someone else that holds a port is never taken for ours), and the
 * leader knows a worker and `dps` data planes. */
static bool up_ready(const struct up *u, char **apis, size_t n, unsigned dps, int off)
{
    for (int i = 0; i < 300 && !stop_flag; i++) {
        usleep(50000);
        bool ours = true, led = false;
        for (unsigned k = 0; k < dps && ours; k++) {
            char name[16], addr[32];
            snprintf(name, sizeof(name), n > 1 || dps > 1 ? "dp-%u" : "dp", k);
            snprintf(addr, sizeof(addr), "127.0.0.1:%d", 8081 + 10 * (int)k + off);
            ours = answering_pid(addr, "/health", NULL) == (long long)up_pid_of(u, name);
        }
        char waddr[32];
        snprintf(waddr, sizeof(waddr), "127.0.0.1:%d", 10010 + off);
        ours = ours && answering_pid(waddr, "/health", NULL) == (long long)up_pid_of(u, "worker");
        for (size_t k = 0; k < n && ours; k++) {
            char name[16];
            snprintf(name, sizeof(name), n > 1 ? "cp-%zu" : "cp", k);
            json_t *j = NULL;
            ours = answering_pid(apis[k], "/v1/status", &j) == (long long)up_pid_of(u, name);
            led = led || (ours && json_array_size(json_object_get(j, "workers")) >= 1 &&
                          json_array_size(json_object_get(j, "dataplanes")) >= dps &&
                          (n == 1 || strcmp(json_string_value(json_object_get(j, "role")) ?: "",
                                            "leader") == 0));
            json_decref(j);
        }
        if (ours && led)
            return true;
    }
    return false;
}

/* ---- before anything starts: the lock and the ports ------------------------------------- */

/* The state directory's lock, held (fd left open, close-on-exec) while `up` runs; its file
 * holds the pid. Returns the fd, or -1 having said why. */
static int take_lock(const char *state)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/up.lock", state);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        fprintf(stderr, "dirigent: up: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        fprintf(stderr,
                "dirigent: up: a cluster on %s is already running (pid %s): one cluster per state "
                "directory; stop it (Ctrl-C in its terminal, or kill %s) or give another "
                "--state-dir\n",
                state, buf[0] ? buf : "?", buf[0] ? buf : "PID");
        close(fd);
        return -1;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)len, 0) != len) {
        fprintf(stderr, "dirigent: up: %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The socket inode listening on TCP `port` (any address), from /proc/net/tcp{,6}; 0: none. */
static unsigned long listen_inode(int port)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t k = 0; k < DG_ARRAY_LEN(files); k++) {
        FILE *f = fopen(files[k], "r");
        if (!f)
            continue;
        char line[512];
        unsigned long inode = 0;
        while (!inode && fgets(line, sizeof(line), f)) {
            char local[128];
            unsigned st, uid;
            unsigned long ino;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %u %*s %lu", local, &st, &uid, &ino) !=
                4)
                continue;
            const char *colon = strrchr(local, ':');
            if (colon && st == 0x0A && (int)strtol(colon + 1, NULL, 16) == port)
                inode = ino;
        }
        fclose(f);
        if (inode)
            return inode;
    }
    return 0;
}

/* The process holding socket `inode` ("dirigent-cp (pid 123)"), or false. */
static bool socket_owner(unsigned long inode, char *out, size_t n)
{
    char want[64];
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    DIR *d = opendir("/proc");
    if (!d)
        return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char fds[300];
        snprintf(fds, sizeof(fds), "/proc/%s/fd", e->d_name);
        DIR *fd = opendir(fds);
        if (!fd)
            continue;
        struct dirent *x;
        while (!found && (x = readdir(fd))) {
            char p[600], l[128];
            snprintf(p, sizeof(p), "%s/%s", fds, x->d_name);
            ssize_t k = readlink(p, l, sizeof(l) - 1);
            if (k <= 0)
                continue;
            l[k] = '\0';
            if (strcmp(l, want) != 0)
                continue;
            char comm[64] = "?", cp[300];
            snprintf(cp, sizeof(cp), "/proc/%s/comm", e->d_name);
            FILE *f = fopen(cp, "r");
            if (f) {
                if (fgets(comm, sizeof(comm), f))
                    comm[strcspn(comm, "\n")] = '\0';
                fclose(f);
            }
            snprintf(out, n, "%s (pid %d)", comm, atoi(e->d_name));
            found = true;
        }
        closedir(fd);
    }
    closedir(d);
    return found;
}

/* True when 127.0.0.1:port can be bound (SO_REUSEADDR: a TIME_WAIT left by an earlier
 * cluster is no conflict, a listener on any address is). */
static bool port_free(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s == -1)
        return true;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(s);
    return ok;
}

struct port_use {
    int port;
    char what[48];
};

/* Every busy port named (with its holder when /proc says); returns how many were busy. */
static int check_ports(const struct port_use *p, size_t n)
{
    int busy = 0;
    for (size_t i = 0; i < n; i++) {
        if (port_free(p[i].port))
            continue;
        char who[128] = "", owner[120];
        unsigned long ino = listen_inode(p[i].port);
        if (ino && socket_owner(ino, owner, sizeof(owner)))
            snprintf(who, sizeof(who), " by %s", owner);
        fprintf(stderr, "dirigent: up: port %d (%s) is in use%s\n", p[i].port, p[i].what, who);
        busy++;
    }
    if (busy)
        fprintf(stderr,
                "dirigent: up: nothing started; stop what holds the port%s, or move this cluster "
                "with --port-base N (every port moves by N-%d; see dirigent help up)\n",
                busy > 1 ? "s" : "", UP_BASE);
    return busy;
}

/* ---- hello: the sample function, for this runtime ---------------------------------------- */

/* Registers hello with `image`; if a state directory made with another runtime kept hello
 * with another image, re-deploys it (delete, then register again) and says so. 0 or 1. */
static int deploy_hello(const char *reg, const char *image, const char *runtime)
{
    struct cli_result r;
    int st = cli_request(reg, "GET", "/v1/functions/hello", NULL, 0, NULL, &r);
    if (st == 200) {
        json_t *j = json_loads(r.body.data, 0, NULL);
        const char *old = j ? json_string_value(json_object_get(j, "image")) : NULL;
        bool same = !old || strcmp(old, image) == 0;
        if (!same) {
            printf("hello: registered with image %s (not this runtime's); re-deploying it for "
                   "the %s runtime with %s\n",
                   old, runtime, image);
            fflush(stdout);
        }
        json_decref(j);
        dg_buf_free(&r.body);
        if (same)
            return 0;
        st = cli_request(reg, "DELETE", "/v1/functions/hello", NULL, 0, NULL, &r);
        if (st != 200 && st != 404) {
            fprintf(stderr, "dirigent: up: deleting the old hello: %d %s%s\n", st, r.err,
                    r.body.data);
            dg_buf_free(&r.body);
            return 1;
        }
    }
    dg_buf_free(&r.body);
    char *img = cli_form_escape(image),
         *body = dg_xasprintf("name=hello&image=%s&port_forwarding=80&port_forwarding=tcp"
                              "&requested_cpu=100&requested_memory=64",
                              img);
    free(img);
    /* a hello being deleted (its sandboxes drain) answers 409 "still being deleted" for a
     * moment */
    for (int i = 0; i < 300 && !stop_flag; i++) {
        st = cli_request(reg, "POST", "/registerService", NULL, 0, body, &r);
        bool draining = st == 409 && strstr(r.body.data, "still being deleted");
        if (!draining)
            break;
        dg_buf_free(&r.body);
        usleep(100000);
    }
    free(body);
    int rc = 0;
    if (st != 200 && st != 409) {
        fprintf(stderr, "dirigent: up: deploying hello: %d %s%s\n", st, r.err, r.body.data);
        rc = 1;
    }
    dg_buf_free(&r.body);
    return rc;
}

/* ---- up --------------------------------------------------------------------------------- */

/* STATE/cluster.key (made if absent), STATE/operator.token (an operator credential "admin",
 * rewritten from the key on every start); the CLI's own requests use it from now on. */
/* Redis's password for `up --ha`: made once per state directory into STATE/redis.pass (the
 * CPs' redis.passwordFile) and STATE/redis.conf (requirepass), both mode 0600: never on a
 * command line, where any local user could read it. */
static int up_redis_password(const char *state, const char *conf)
{
    struct dg_auth_key key;
    struct dg_err e = {0};
    char *pass = dg_xasprintf("%s/redis.pass", state), pw[2 * DG_AUTH_KEY_BYTES + 1];
    int rc = 0;
    if (access(pass, F_OK) != 0 &&
        (dg_auth_key_generate(&key, &e) < 0 || dg_auth_key_write(pass, &key, &e) < 0))
        rc = cli_fail("up: %s", e.msg);
    FILE *in = rc ? NULL : fopen(pass, "r");
    if (!rc && (!in || !fgets(pw, sizeof(pw), in) || strlen(pw) != sizeof(pw) - 1))
        rc = cli_fail("up: %s: no password in it (remove it: up makes a new one)", pass);
    if (in)
        fclose(in);
    int fd = rc ? -1 : open(conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (!rc && (fd == -1 || fchmod(fd, 0600) == -1 || dprintf(fd, "requirepass %s\n", pw) < 0))
        rc = cli_fail("up: %s: %s", conf, strerror(errno));
    if (fd != -1)
        close(fd);
    free(pass);
    return rc ? -1 : 0;
}

static int up_auth(const char *state, const char *key_path)
{
    struct dg_auth_key key;
    struct dg_err e = {0};
    if (access(key_path, F_OK) != 0 &&
        (dg_auth_key_generate(&key, &e) < 0 || dg_auth_key_write(key_path, &key, &e) < 0))
        return cli_fail("up: %s", e.msg);
    char cred[DG_AUTH_CRED_MAX];
    if (dg_auth_key_load(key_path, &key, &e) < 0 ||
        dg_auth_credential(&key, DG_AUTH_OPERATOR, "admin", cred, sizeof(cred), &e) < 0)
        return cli_fail("up: %s", e.msg);
    char *tok = dg_xasprintf("%s/operator.token", state);
    int fd = open(tok, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd == -1 || fchmod(fd, 0600) == -1 || dprintf(fd, "%s\n", cred) < 0)
        rc = cli_fail("up: %s: %s", tok, strerror(errno));
    if (fd != -1)
        close(fd);
    free(tok);
    if (!rc)
        cli_set_token(cred);
    return rc;
}

int cli_cmd_up(struct cli_ctx *c)
{
    const char *runtime = cli_get(c, "--runtime") ?: "auto";
    const char *state = cli_get(c, "--state-dir") ?: "data/local";
    int64_t ncp, ndp, base;
    int rc = cli_int(c, "--cp-replicas", 1, 1, 7, &ncp);
    if (!rc && ncp % 2 == 0)
        rc = cli_usage_error(c,
                             "--cp-replicas: expected 1, 3, 5 or 7 (an odd number: a majority "
                             "must survive), got '%s'",
                             cli_get(c, "--cp-replicas"));
    if (!rc)
        rc = cli_int(c, "--dataplanes", 1, 1, 8, &ndp);
    if (rc)
        return rc;
    /* the lowest port is Redis's (base - 1700), the highest the worker's (base + 1930) */
    if ((rc = cli_int(c, "--port-base", UP_BASE, 1024 + 1700, 65535 - 1930, &base)))
        return rc;
    const int off = (int)(base - UP_BASE);
    if (strcmp(runtime, "auto") != 0 && strcmp(runtime, "oci") != 0 &&
        strcmp(runtime, "process") != 0 && strcmp(runtime, "emulated") != 0)
        return cli_usage_error(c, "--runtime: expected auto, oci, process or emulated, got '%s'",
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

    /* the state directory (with its parents) and its lock, before anything else */
    char abs_state[4096];
    struct dg_err e = {0};
    if (dg_mkdir_p(state, 0755, &e) < 0)
        return cli_fail("up: --state-dir %s: %s", state, e.msg);
    if (!realpath(state, abs_state))
        return cli_fail("up: --state-dir %s: %s", state, strerror(errno));
    int lock = take_lock(abs_state);
    if (lock < 0)
        return 1;

    /* ports: CP i: internal 9090+10i, registration 9091+10i, raft 9095+10i; DP j: proxy
     * 8080+10j, API 8081+10j; worker 10010; HAProxy 8079 (invocations), 9092
     * (registrations); Redis 6380 (the original's raft set-up used 6380-6382); all + off */
    struct port_use ports[40];
    size_t np = 0;
    for (int64_t j = 0; j < ndp; j++) {
        ports[np++] = (struct port_use){8080 + 10 * (int)j + off, ""};
        snprintf(ports[np - 1].what, sizeof(ports[0].what), "data plane %lld proxy", (long long)j);
        ports[np++] = (struct port_use){8081 + 10 * (int)j + off, ""};
        snprintf(ports[np - 1].what, sizeof(ports[0].what), "data plane %lld API", (long long)j);
    }
    for (int64_t i = 0; i < ncp; i++) {
        ports[np++] = (struct port_use){9090 + 10 * (int)i + off, ""};
        snprintf(ports[np - 1].what, sizeof(ports[0].what), "control plane %lld internal API",
                 (long long)i);
        ports[np++] = (struct port_use){9091 + 10 * (int)i + off, ""};
        snprintf(ports[np - 1].what, sizeof(ports[0].what), "control plane %lld registration",
                 (long long)i);
        if (ncp > 1) {
            ports[np++] = (struct port_use){9095 + 10 * (int)i + off, ""};
            snprintf(ports[np - 1].what, sizeof(ports[0].what), "control plane %lld raft",
                     (long long)i);
        }
    }
    ports[np++] = (struct port_use){10010 + off, "worker API"};
    if (ha) {
        ports[np++] = (struct port_use){8079 + off, "HAProxy invocations"};
        ports[np++] = (struct port_use){9092 + off, "HAProxy registrations"};
        ports[np++] = (struct port_use){6380 + off, "Redis"};
    }
    if (check_ports(ports, np)) {
        close(lock);
        return 1;
    }

    /* auto: containers when this machine can run them, else plain processes (and why) */
    char *image_dir = dg_xasprintf("%s/images/dirigent-fn", c->self_dir);
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
    /* what `up` writes itself (the daemons make their own data and trace folders) */
    static const char *const subdirs[] = {"logs", "pids"};
    for (size_t i = 0; i < DG_ARRAY_LEN(subdirs); i++) {
        char *d = dg_xasprintf("%s/%s", abs_state, subdirs[i]);
        int mk = dg_mkdir_p(d, 0755, &e);
        free(d);
        if (mk < 0) {
            free(image_dir);
            close(lock);
            return cli_fail("up: %s", e.msg);
        }
    }
    const char *S = abs_state;
    /* the cluster key (made once per state directory) and the operator's credential, both
     * mode 0600: the daemons get the key, the CLI reads the credential (docs/security.md) */
    char *key_path = dg_xasprintf("%s/cluster.key", S);
    char *auth_set = dg_xasprintf("authTokenFile=%s", key_path);
    if (up_auth(S, key_path) < 0) {
        free(key_path);
        free(auth_set);
        free(image_dir);
        close(lock);
        return 1;
    }
    struct dg_buf all = {0}, rafts = {0}, regs = {0};
    for (int64_t i = 0; i < ncp; i++) {
        dg_buf_printf(&all, "%s127.0.0.1:%d", i ? "," : "", 9090 + 10 * (int)i + off);
        dg_buf_printf(&rafts, "%s127.0.0.1:%d", i ? "," : "", 9095 + 10 * (int)i + off);
        dg_buf_printf(&regs, "%s127.0.0.1:%d", i ? "," : "", 9091 + 10 * (int)i + off);
    }
    dg_buf_append(&all, "", 1);
    dg_buf_append(&rafts, "", 1);
    dg_buf_append(&regs, "", 1);
    char *cpc = dg_xasprintf("%s/configs/local/cp.yaml", c->src_dir);
    char *dpc = dg_xasprintf("%s/configs/local/dp.yaml", c->src_dir);
    char *wkc = dg_xasprintf("%s/configs/local/worker.yaml", c->src_dir);
    char *fn = dg_xasprintf("%s/dirigent-fn", c->self_dir);
    char *sock = dg_xasprintf("%s/haproxy.sock", S);
    char *reg_addr = dg_xasprintf("127.0.0.1:%d", (ha ? 9092 : 9091) + off);
    char *inv_addr = dg_xasprintf("127.0.0.1:%d", (ha ? 8079 : 8080) + off);
    const int redis_port = 6380 + off;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL); /* the terminal closed: stop as cleanly as on Ctrl-C */
    struct up u = {.self_dir = c->self_dir, .state = S, .auth_set = auth_set};
    rc = 0;
    if (ha) {
        char *rdir = dg_xasprintf("%s/redis", S), *rport = dg_xasprintf("%d", redis_port);
        char *rconf = dg_xasprintf("%s/redis.conf", S);
        dg_mkdir_p(rdir, 0755, NULL); /* redis-server names the problem if it fails */
        if (up_redis_password(S, rconf) < 0)
            rc = 1;
        else
            up_spawn(&u, "redis",
                     (char *[]){"redis-server", rconf, "--port", rport, "--bind", "127.0.0.1",
                                "--protected-mode", "yes", "--dir", rdir, "--appendonly", "yes",
                                "--save", "", NULL});
        free(rconf);
        free(rdir);
        free(rport);
        char *hcfg = dg_xasprintf("%s/haproxy.cfg", S);
        FILE *f = fopen(hcfg, "w");
        if (!f) {
            rc = cli_fail("up: %s: %s", hcfg, strerror(errno));
        } else {
            char *cps[9];
            struct cli_hx_conf hc = {.invocations = inv_addr,
                                     .registration = reg_addr,
                                     .socket = sock,
                                     .backend = "dataplanes",
                                     .cps = cps,
                                     .ncps = cli_split_list(regs.data, cps, 8)};
            cli_haproxy_config(f, &hc);
            fclose(f);
            unlink(sock);
            up_spawn(&u, "haproxy", (char *[]){"haproxy", "-db", "-f", hcfg, NULL});
        }
        free(hcfg);
    }
    char *apis[8] = {0};
    char *rpass = dg_xasprintf("redis.passwordFile=%s/redis.pass", S);
    for (int64_t i = 0; i < ncp && !rc; i++) {
        char name[16];
        snprintf(name, sizeof(name), ncp > 1 ? "cp-%lld" : "cp", (long long)i);
        char *tdir = ncp > 1 ? dg_xasprintf("%s/trace-%s", S, name) : dg_xasprintf("%s/trace", S);
        char *trace = dg_xasprintf("traceOutputFolder=%s", tdir);
        char *data = dg_xasprintf("dataDir=%s/%s", S, name);
        char *port = dg_xasprintf("port=%d", 9090 + 10 * (int)i + off);
        char *reg = dg_xasprintf("registrationServer=127.0.0.1:%d", 9091 + 10 * (int)i + off);
        char *reps = dg_xasprintf("replicas=%s", all.data);
        char *raft = dg_xasprintf("raftAddresses=%s", rafts.data);
        char *rid = dg_xasprintf("replicaId=%lld", (long long)i + 1);
        char *redis = dg_xasprintf("redis.address=127.0.0.1:%d", redis_port);
        char *hx = dg_xasprintf("haproxy.api=%s", sock);
        char *lb = dg_xasprintf("loadBalancerAddress=%s", inv_addr);
        apis[i] = dg_xasprintf("127.0.0.1:%d", 9090 + 10 * (int)i + off);
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
                                rpass,
                                "--set",
                                hx,
                                "--set",
                                lb,
                                NULL});
        else
            up_spawn(&u, name,
                     (char *[]){"dirigent-cp", "--config", cpc, "--set", trace, "--set", data,
                                "--set", port, "--set", reg, NULL});
        free(tdir);
        free(trace);
        free(data);
        free(port);
        free(reg);
        free(reps);
        free(raft);
        free(rid);
        free(redis);
        free(hx);
        free(lb);
    }
    free(rpass);
    for (int64_t j = 0; j < ndp && !rc; j++) {
        char name[16];
        snprintf(name, sizeof(name), ha ? "dp-%lld" : "dp", (long long)j);
        char *trace = dg_xasprintf("traceOutputFolder=%s/trace", S);
        char *pp = dg_xasprintf("portProxy=%d", 8080 + 10 * (int)j + off);
        char *pg = dg_xasprintf("portGRPC=%d", 8081 + 10 * (int)j + off);
        char *nm2 = dg_xasprintf("name=%s", name);
        char *cps = dg_xasprintf("controlPlaneAddress=%s", all.data);
        /* --async: asynchronous invocations, results on 8082 (+10 per data plane) */
        char *as = dg_xasprintf("async=%s", cli_flag(c, "--async") ? "true" : "false");
        char *pr = dg_xasprintf("portProxyRead=%d", 8082 + 10 * (int)j + off);
        up_spawn(&u, name,
                 (char *[]){"dirigent-dp", "--config", dpc, "--set", trace, "--set", pp, "--set",
                            pg, "--set", nm2, "--set", cps, "--set", as, "--set", pr, NULL});
        free(as);
        free(pr);
        free(trace);
        free(pp);
        free(pg);
        free(nm2);
        free(cps);
    }
    char *rt = dg_xasprintf("runtime=%s", runtime);
    char *fnb = dg_xasprintf("fnBinary=%s", fn);
    char *wdata = dg_xasprintf("dataDir=%s/worker", S);
    char *wcps = dg_xasprintf("controlPlaneAddress=%s", all.data);
    char *wport = dg_xasprintf("port=%d", 10010 + off);
    /* run as root, the process runtime needs an unprivileged user for its sandboxes
     * (docs/security.md, "Process runtime"): nobody, when there is one */
    const char *puser = strcmp(runtime, "process") == 0 && geteuid() == 0 && getpwnam("nobody")
                            ? "processUser=nobody"
                            : "processUser=";
    if (!rc)
        up_spawn(&u, "worker",
                 (char *[]){"dirigent-worker", "--config", wkc, "--set", rt, "--set", fnb, "--set",
                            wdata, "--set", wcps, "--set", wport, "--set", (char *)puser, NULL});
    /* healthy: a leader that knows the worker and every data plane */
    bool ready = !rc && up_ready(&u, apis, (size_t)ncp, (unsigned)ndp, off);
    if (ready && ha) { /* HAProxy has the data planes once the leader synced it */
        ready = false;
        for (int k = 0; k < 200 && !stop_flag && !ready; k++) {
            usleep(50000);
            ready = healthy(inv_addr) && healthy(reg_addr);
        }
    }
    if (stop_flag) {
        rc = 130;
    } else if (!ready && !rc) {
        fprintf(stderr, "dirigent: up: the cluster did not become healthy; logs in %s/logs\n", S);
        rc = 1;
    } else if (!rc) {
        char image[4200];
        if (oci)
            snprintf(image, sizeof(image), "oci:%s:latest", image_dir);
        else
            snprintf(image, sizeof(image), "%s", fn);
        rc = deploy_hello(reg_addr, image, runtime);
        if (!rc && !stop_flag) {
            if (ha)
                printf("ready: curl -H 'Host: hello' http://%s/ (invocations through HAProxy "
                       "over %lld data planes); registrations: http://%s/registerService (%lld "
                       "control plane replicas)\n",
                       inv_addr, (long long)ndp, reg_addr, (long long)ncp);
            else
                printf("ready: curl -H 'Host: hello' http://%s/\n", inv_addr);
            fflush(stdout);
            /* sleep until a signal; blocked between the check and the wait so none is lost */
            sigset_t block, old;
            sigemptyset(&block);
            sigaddset(&block, SIGINT);
            sigaddset(&block, SIGTERM);
            sigaddset(&block, SIGHUP);
            sigprocmask(SIG_BLOCK, &block, &old);
            while (!stop_flag)
                sigsuspend(&old);
            sigprocmask(SIG_SETMASK, &old, NULL);
        }
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
    free(wport);
    free(sock);
    free(reg_addr);
    free(inv_addr);
    free(image_dir);
    free(key_path);
    free(auth_set);
    dg_buf_free(&all);
    dg_buf_free(&rafts);
    dg_buf_free(&regs);
    close(lock);
    return rc;
}
