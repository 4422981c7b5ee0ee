/*
 * runtime_process.c: the `process` runtime. The function's command runs as a
 * plain child process (no isolation, no root: development, tests of cluster
 * logic) on a free local port passed in PORT. The sandbox is ready when it
 * answers HTTP on that port. Exits are seen at once through libuv's child
 * reaping (SIGCHLD), and a delete sends SIGTERM, then SIGKILL after 2 s.
 *
 * Confinement (docs/security.md, "Process runtime"): it runs only executables below
 * processAllowedDirs (symlinks resolved: a link out is refused), and a worker running as root
 * runs them as processUser (setgroups, setgid, setuid in the child before exec, checked in
 * /proc afterwards), or refuses to run them at all.
 *
 * Sandboxes run in their own session, so they outlive a worker killed with -9. Each one is
 * recorded as a file <runDir>/process/<pid> naming its start time and its worker's; a worker
 * that starts kills the process groups recorded by workers that are no longer running (a
 * live worker of the same name, in a parallel test, keeps its own).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/log.h"
#include "hostpaths.h"
#include "instance.h"
#include "probe.h"
#include "registry.h"

#define KILL_GRACE_MS 2000

extern char **environ;

struct proc_rt {
    uv_loop_t *loop;
    const char *host;
    uint64_t readiness_timeout_ms;
    char *proc_dir; /* where the sandboxes are recorded; NULL: not recorded */
    unsigned long long self_start;
    struct wk_dirs allowed; /* processAllowedDirs */
    bool refuse;            /* root without processUser: no sandbox runs */
    bool drop;              /* root: sandboxes run as uid:gid */
    uid_t uid;
    gid_t gid;
    char user[64];
};

/* A sandbox's part of it (at sb->ext). */
struct proc_sb {
    struct proc_rt *rt;
    uv_process_t proc;
    uv_timer_t timer; /* the kill grace */
    struct wk_probe *probe;
    unsigned handles; /* libuv handles of this sandbox not yet closed */
    bool proc_running, proc_open, timer_open;
};

/* A process's start time (clock ticks since boot, /proc/PID/stat field 22); 0 if it is gone. */
static unsigned long long start_time(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    unsigned long long t = 0;
    for (int field = 2; p && *p; p++)
        if (*p == ' ' && ++field == 22) {
            t = strtoull(p + 1, NULL, 10);
            break;
        }
    return t;
}

static void record(struct proc_rt *rt, long pid)
{
    if (!rt->proc_dir)
        return;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%ld", rt->proc_dir, pid);
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "%llu %ld %llu\n", start_time(pid), (long)getpid(), rt->self_start);
    fclose(f);
}

static void unrecord(struct proc_rt *rt, long pid)
{
    if (!rt->proc_dir || pid <= 0)
        return;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%ld", rt->proc_dir, pid);
    unlink(path);
}

/* processUser: who sandboxes run as when the worker is root. */
static int resolve_user(struct proc_rt *rt, const char *user, struct dg_err *err)
{
    if (geteuid() != 0) {
        if (user[0])
            dg_log(DG_LOG_INFO, "process",
                   "processUser '%s' is used only by a worker run as root: sandboxes run as "
                   "this worker's user (uid %u)",
                   user, (unsigned)geteuid());
        return 0;
    }
    if (!user[0]) {
        rt->refuse = true;
        dg_log(DG_LOG_WARN, "process",
               "running as root without processUser: process sandboxes are refused (set "
               "processUser to an unprivileged user, e.g. nobody)");
        return 0;
    }
    char *end;
    unsigned long n = strtoul(user, &end, 10);
    struct passwd *pw = getpwnam(user);
    if (pw) {
        rt->uid = pw->pw_uid;
        rt->gid = pw->pw_gid;
    } else if (*end == '\0' && end != user && n < UINT32_MAX) {
        rt->uid = (uid_t)n;
        rt->gid = (gid_t)n; /* a bare UID: its group of the same number */
    } else {
        return dg_err_set(err, DG_E_INVAL,
                          "processUser: no user '%s' (expected a user name or a numeric UID)",
                          user);
    }
    if (rt->uid == 0 || rt->gid == 0)
        return dg_err_set(err, DG_E_INVAL,
                          "processUser: '%s' is uid %u gid %u: expected an unprivileged user "
                          "(not uid or gid 0), e.g. nobody",
                          user, (unsigned)rt->uid, (unsigned)rt->gid);
    rt->drop = true;
    snprintf(rt->user, sizeof(rt->user), "%s", user);
    dg_log(DG_LOG_INFO, "process", "sandboxes run as %s (uid %u, gid %u) from %s", user,
           (unsigned)rt->uid, (unsigned)rt->gid, rt->allowed.text);
    return 0;
}

/* The process's uids and gids (real, effective, saved, fs) are all uid and gid, and it has no
 * supplementary group but gid. */
static bool runs_as(long pid, uid_t uid, gid_t gid)
{
    char path[64], text[4096];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    return wk_status_ids_are(text, uid, gid);
}

static int process_init(const struct wk_runtime_conf *conf, void **state, struct dg_err *err)
{
    struct proc_rt *rt = dg_xcalloc(1, sizeof(*rt));
    *state = rt;
    rt->loop = conf->loop;
    rt->host = conf->host;
    rt->readiness_timeout_ms = conf->readiness_timeout_ms;
    rt->self_start = start_time((long)getpid());
    if (wk_dirs_init(&rt->allowed, conf->process.allowed_dirs, "processAllowedDirs", err) < 0)
        return -1;
    if (resolve_user(rt, conf->process.user, err) < 0)
        return -1;
    char *dir = dg_xasprintf("%s/process", conf->run_dir);
    struct dg_err e = {0};
    if (dg_mkdir_p(dir, 0700, &e) < 0) { /* not root: /run is not ours */
        free(dir);
        dir =
            dg_xasprintf("/tmp/dirigent-%u-%s/process", (unsigned)getuid(), conf->instance->label);
        if (dg_mkdir_p(dir, 0700, &e) < 0) {
            dg_log(DG_LOG_WARN, "process",
                   "%s: sandboxes are not recorded, so a crash leaves them running", e.msg);
            free(dir);
            return 0;
        }
    }
    rt->proc_dir = dir;
    DIR *d = opendir(dir);
    unsigned killed = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 1)
            continue;
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unsigned long long t = 0, owner_t = 0;
        long owner = 0;
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%llu %ld %llu", &t, &owner, &owner_t) != 3)
                t = 0;
            fclose(f);
        }
        if (owner > 0 && owner_t && start_time(owner) == owner_t)
            continue; /* its worker runs: not ours */
        if (t && start_time(pid) == t && kill((pid_t)-pid, SIGKILL) == 0)
            killed++;
        unlink(path);
    }
    if (d)
        closedir(d);
    if (killed)
        dg_log_always("process", "removed %u sandbox(es) a previous run left behind", killed);
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    struct proc_sb *p = h->data;
    if (--p->handles == 0)
        wk_sandbox_gone(WK_SB_OF(p));
}

/* Close the sandbox's handles once its process is gone and it is being deleted. */
static void finish_if_gone(struct proc_sb *p)
{
    if (p->proc_running || WK_SB_OF(p)->state != WK_SB_DELETING)
        return;
    if (p->timer_open) {
        p->timer_open = false;
        uv_close((uv_handle_t *)&p->timer, handle_closed);
    }
    if (p->proc_open) {
        p->proc_open = false;
        uv_close((uv_handle_t *)&p->proc, handle_closed);
    }
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int term_signal)
{
    struct proc_sb *p = proc->data;
    struct wk_sandbox *sb = WK_SB_OF(p);
    p->proc_running = false;
    unrecord(p->rt, proc->pid);
    int64_t code = term_signal ? -term_signal : status;
    if (sb->state == WK_SB_CREATING) {
        wk_probe_cancel(p->probe);
        p->probe = NULL;
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "'%s' exited during start (%s %lld)", sb->function,
                   term_signal ? "signal" : "status",
                   (long long)(term_signal ? term_signal : status));
        sb->state = WK_SB_DELETING; /* nothing left to run */
        wk_sandbox_created(sb, &e);
        finish_if_gone(p);
        return;
    }
    if (sb->state == WK_SB_READY)
        wk_sandbox_exited(sb, code, NULL);
    finish_if_gone(p);
}

static void on_ready(void *ud, const struct dg_err *err)
{
    struct proc_sb *p = ud;
    struct wk_sandbox *sb = WK_SB_OF(p);
    p->probe = NULL;
    sb->lat.ready_us = dg_now_us() - sb->t0_us - sb->lat.network_us - sb->lat.start_us;
    if (err) {
        struct dg_err e = *err;
        dg_err_wrap(&e, "sandbox of '%s' on port %d", sb->function, sb->port);
        if (p->proc_running)
            kill(-p->proc.pid, SIGKILL);
        sb->state = WK_SB_DELETING;
        wk_sandbox_created(sb, &e);
        finish_if_gone(p);
        return;
    }
    wk_sandbox_created(sb, NULL);
}

/* The process runtime runs a command: the image must be the absolute path of an executable
 * below processAllowedDirs; `resolved` gets its real path ("" when it does not exist: the
 * spawn then says so). */
static int check_image(struct proc_rt *rt, const struct dg_wire_create *spec, char *resolved,
                       size_t len, struct dg_err *err)
{
    if (rt->refuse)
        return dg_err_set(err, DG_E_INVAL,
                          "the process runtime does not run sandboxes as root: set the worker's "
                          "processUser to an unprivileged user (e.g. nobody)");
    if (!spec->image || spec->image[0] != '/')
        return dg_err_set(err, DG_E_INVAL,
                          "field 'image': the process runtime runs a command: expected an "
                          "absolute path, got '%s'",
                          spec->image ? spec->image : "");
    resolved[0] = '\0';
    switch (wk_dirs_check(&rt->allowed, spec->image, resolved, len)) {
    case WK_PATH_OK:
    case WK_PATH_MISSING:
        return 0;
    case WK_PATH_REFUSED:
        break;
    }
    return dg_err_set(err, DG_E_INVAL,
                      "field 'image': '%.200s' is not below the process runtime's allowed "
                      "directories (processAllowedDirs: %s; no '.', '..' or symlinks out)",
                      spec->image, rt->allowed.text);
}

static int process_validate(void *state, const struct dg_wire_create *spec, struct dg_err *err)
{
    char resolved[PATH_MAX];
    return check_image(state, spec, resolved, sizeof(resolved), err);
}

/* A variable of the worker's environment a process sandbox inherits: the locale, the time
 * zone, PATH, the temporary directory and the sanitizers' options (a sanitized build's tests).
 * Everything else (credentials, proxies, cloud keys the worker was started with) stays out. */
static bool inherited_ok(const char *kv)
{
    static const char *const names[] = {
        "PATH=",   "LANG=",         "LANGUAGE=",      "TZ=",
        "TMPDIR=", "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS="};
    for (size_t i = 0; i < DG_ARRAY_LEN(names); i++)
        if (strncmp(kv, names[i], strlen(names[i])) == 0)
            return true;
    return strncmp(kv, "LC_", 3) == 0;
}

static void process_create(void *state, struct wk_sandbox *sb, const struct dg_wire_create *spec)
{
    struct proc_rt *rt = state;
    struct proc_sb *p = WK_SB_EXT(sb);
    p->rt = rt;
    struct dg_err err = {0};
    char exe[PATH_MAX] = "";
    int port = check_image(rt, spec, exe, sizeof(exe), &err) < 0 ? -1 : wk_free_port(&err);
    if (port < 0) {
        sb->state = WK_SB_DELETING;
        wk_sandbox_created(sb, &err);
        wk_sandbox_gone(sb);
        return;
    }
    uv_timer_init(rt->loop, &p->timer);
    p->timer.data = p;
    p->timer_open = true;
    p->handles = 1;
    p->proc.data = p;
    snprintf(sb->host, sizeof(sb->host), "%s", rt->host);
    sb->port = port;
    sb->lat.network_us = dg_now_us() - sb->t0_us;

    /* environment: PORT first (the first match wins, so env_vars cannot move the port),
     * then the function's env_vars, then of the worker's only what says how to run a program
     * (inherited_ok): never its credentials, proxies or cloud keys */
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = dg_xcalloc(nenv + spec->env.n + 2, sizeof(char *));
    size_t k = 0;
    char portenv[32];
    snprintf(portenv, sizeof(portenv), "PORT=%d", port);
    env[k++] = portenv;
    for (size_t i = 0; i < spec->env.n; i++)
        env[k++] = spec->env.v[i];
    for (size_t i = 0; i < nenv; i++)
        if (inherited_ok(environ[i]))
            env[k++] = environ[i];
    char **args = dg_xcalloc(spec->args.n + 2, sizeof(char *));
    args[0] = spec->image;
    for (size_t i = 0; i < spec->args.n; i++)
        args[i + 1] = spec->args.v[i];

    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t opts = {.exit_cb = on_exit_cb,
                                 .file = exe[0] ? exe : spec->image,
                                 .args = args,
                                 .env = env,
                                 .stdio_count = 3,
                                 .stdio = stdio,
                                 /* its own process group: a delete stops what it started too */
                                 .flags = UV_PROCESS_DETACHED};
    if (rt->drop) { /* libuv: setgroups(0, NULL), setgid, setuid in the child, before exec */
        opts.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        opts.uid = rt->uid;
        opts.gid = rt->gid;
        opts.cwd = "/"; /* the worker's own directory may be closed to the user */
    }
    uint64_t t_spawn = dg_now_us();
    int rc = uv_spawn(rt->loop, &p->proc, &opts);
    free(env);
    free(args);
    p->proc_open = true; /* a failed uv_spawn still needs uv_close */
    p->handles++;
    sb->lat.start_us = dg_now_us() - t_spawn;
    if (rc < 0) {
        dg_err_set(&err, rc, "cannot start '%s' for '%s': %s", spec->image, sb->function,
                   uv_strerror(rc));
        sb->state = WK_SB_DELETING;
        wk_sandbox_created(sb, &err);
        finish_if_gone(p);
        return;
    }
    p->proc_running = true;
    record(rt, p->proc.pid);
    /* exec has happened (uv_spawn waits for it): the drop must show */
    if (rt->drop && !runs_as(p->proc.pid, rt->uid, rt->gid)) {
        dg_err_set(&err, DG_E_INVAL, "sandbox of '%s' does not run as processUser %s (uid %u)",
                   sb->function, rt->user, (unsigned)rt->uid);
        kill(-p->proc.pid, SIGKILL);
        sb->state = WK_SB_DELETING;
        wk_sandbox_created(sb, &err);
        return; /* on_exit_cb finishes */
    }
    p->probe = wk_probe_start(rt->loop, sb->host, sb->port, rt->readiness_timeout_ms, on_ready, p);
}

static void on_kill_grace(uv_timer_t *t)
{
    struct proc_sb *p = t->data;
    struct wk_sandbox *sb = WK_SB_OF(p);
    if (p->proc_running) {
        dg_log(DG_LOG_WARN, "process", "sandbox %s (%s) ignored SIGTERM: SIGKILL", sb->id,
               sb->function);
        kill(-p->proc.pid, SIGKILL);
    }
}

static void process_destroy(void *state, struct wk_sandbox *sb)
{
    struct proc_sb *p = WK_SB_EXT(sb);
    wk_probe_cancel(p->probe);
    p->probe = NULL;
    if (p->proc_running) {
        kill(-p->proc.pid, SIGTERM); /* the group: children of a wrapper script too */
        uv_timer_start(&p->timer, on_kill_grace, KILL_GRACE_MS, 0);
        return; /* on_exit_cb finishes */
    }
    finish_if_gone(p);
}

static void process_free(void *state)
{
    struct proc_rt *rt = state;
    if (!rt)
        return;
    /* a clean stop: no record left, so the directory and the run directory above it go
     * (rmdir only: a live worker of the same instance keeps its records, and so the dirs) */
    if (rt->proc_dir && rmdir(rt->proc_dir) == 0) {
        char *slash = strrchr(rt->proc_dir, '/');
        *slash = '\0';
        rmdir(rt->proc_dir);
    }
    free(rt->proc_dir);
    wk_dirs_free(&rt->allowed);
    free(rt);
}

/* A second signal during shutdown: what is being stopped gets SIGKILL now. */
static void process_hurry(void *state, struct wk_sandbox *sb)
{
    struct proc_sb *p = WK_SB_EXT(sb);
    if (p->proc_running && sb->state == WK_SB_DELETING)
        kill(-p->proc.pid, SIGKILL);
}

const struct wk_runtime wk_runtime_process = {
    .name = "process",
    .sb_size = sizeof(struct proc_sb),
    .init = process_init,
    .validate = process_validate,
    .create = process_create,
    .destroy = process_destroy,
    .hurry = process_hurry,
    .free = process_free,
};
