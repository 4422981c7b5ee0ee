/*
 * runtime_oci.c: the `oci` runtime (DESIGN.md §6). A sandbox is an OCI
 * container run by crun (or runc/runsc) from the shared unpacked image:
 *
 *   image      the cache has it (images.c), or one pull serves every waiter
 *   network    a namespace from the pool (netpool.c): made ahead, so nothing here
 *   rootfs     the bundle's directory on the worker's one tmpfs (<run>/sandboxes), the
 *              writable layer in it, an overlay of that over the image, and config.json: image config + the function's env and args, limits
 *              (cpu weight, quota by policy, memory, pids), namespaces, capabilities, seccomp
 *              (thread pool: mounts and file writes never run on the loop)
 *   start      `crun run --detach`; the container's init is reparented to the
 *              worker (a child subreaper) and watched through a pidfd
 *   ready      the first HTTP answer on sandboxIP:port
 *
 * Delete: SIGTERM, SIGKILL after the grace period, `crun delete`, unmount,
 * the namespace back to the pool. Every step is asynchronous. A worker that
 * starts after a crash removes what its previous run left: the runtime's
 * containers (its own state root), mounts under the run directory, pooled
 * namespaces and veths, its cgroups and its bridge. All of these are named
 * from the worker's instance (instance.c), and a lock in the run directory
 * keeps a second worker off it, so that clean-up never touches another
 * worker's. A clean stop removes all of it, the bridge and the run directory
 * included.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dirigent/json.h"
#include "dirigent/log.h"
#include "confine.h"
#include "exec.h"
#include "firewall.h"
#include "images.h"
#include "instance.h"
#include "netpool.h"
#include "prewarm.h"
#include "probe.h"
#include "registry.h"

/* A user namespace maps 65536 ids: uid/gid 0..65535 inside are WK_USERNS_BASE + 65536 x
 * wk_userns_slot (its sandbox subnet's /22 index; instance id mod 4096 outside 100.64/10) and
 * up outside, a range of this worker's own, above any real user's
 * (Debian's /etc/subuid ranges start at 100000 and go up by 65536). */
#define WK_USERNS_SIZE 65536u
#define WK_USERNS_BASE 0x10000000u

enum oci_stage {
    ST_IMAGE,   /* waiting for the image */
    ST_NET,     /* waiting for a namespace */
    ST_PREP,    /* rootfs and config on the thread pool */
    ST_START,   /* crun run running */
    ST_RUNNING, /* the container runs (probing or ready) */
    ST_TEARDOWN,
    ST_POOLED, /* pre-created (prewarm.c): `crun create` done, waiting for a create to start it */
};

struct oci_rt {
    struct wk_images *images;
    struct wk_netpool *net;
    char *state_root; /* the OCI runtime's --root */
    char *sb_dir;     /* <run>/sandboxes */
    char *cgroup;     /* dirigent/<name>-<instance id> */
    char subnet[32];  /* sandboxSubnet, or the instance's default */
    char *runtime;    /* crun, runc, runsc */
    bool runsc;       /* gVisor: run_argv's wrapper and flags */
    const char *init; /* sandboxInit, checked at start (NULL: none) */
    json_t *tmpl;     /* config.json without the per-sandbox parts */
    bool userns;      /* sandboxes in a user namespace, uid 0 = host uid id_base */
    uint32_t id_base;
    char fw_table[32]; /* the nftables tables' name ("": none installed) */
    uv_timer_t reaper; /* crun's middle processes, reparented to us, are reaped */
    const struct wk_runtime_conf *conf;
    struct oci_sb *sandboxes; /* every sandbox of it, until its teardown ends */
    unsigned n;
    struct wk_prewarm *pool; /* pre-created sandboxes (prewarm.c); in `sandboxes` too */
    bool closing;
    /* clean-ups (`crun delete`, unmounts) after the process has gone: at most
     * maxConcurrentDeletes at once, the rest wait in order */
    unsigned cleaning, ncq;
    struct oci_sb *cq_head, *cq_tail;
};

/* A sandbox's part of it (at sb->ext). */
struct oci_sb {
    struct oci_sb *prev, *next; /* the runtime's list */
    struct oci_rt *rt;
    enum oci_stage stage;
    bool destroy, started, failed;
    bool exited; /* its init was reaped (on_pidfd): nothing of it runs any more */
    bool forgot; /* forget_work removed crun's state and cgroups itself */
    bool init;   /* under the minimal init (sandboxInit, unless the function says init: false) */
    bool cleanup_slot; /* it holds one of the clean-up slots */
    struct wk_image *img;
    struct wk_image_wait *img_wait;
    struct wk_netns *ns;
    struct wk_netns_wait *ns_wait;
    bool ns_lost; /* not given back: runsc_net_restore failed */
    /* the spec, kept across the asynchronous steps */
    struct dg_strlist env, args;
    int64_t cpu_milli, memory_mib;
    int port;
    char *dir, *config;
    uv_work_t work;
    struct dg_err err; /* of the thread-pool job */
    pid_t pid;
    int pidfd;
    char *memcg;   /* its memory cgroup's directory, read at the start (NULL: unknown) */
    bool memcg_v2; /* ... in the unified (v2) hierarchy */
    struct wk_probe *probe;
    uv_poll_t poll;
    uv_timer_t grace;
    bool poll_open, poll_active, grace_open;
    unsigned handles;
    uint64_t t_step;
    /* the delete's timeline (µs, dg_now_us): SIGTERM, SIGKILL, the process seen gone, the
     * clean-up queued; said in the log (where a delete's time goes under load) */
    uint64_t t_term, t_kill, t_gone;
    struct oci_sb *cq_next; /* the clean-up queue */
    bool pooled; /* a pool's (prewarm.c): made up to `crun create`, reported to the pool */
};

#define SB(o) WK_SB_OF(o)

static void teardown(struct oci_sb *o);
static void sandbox_failed(struct oci_sb *o, const struct dg_err *err);
static void exit_reason(const struct oci_sb *o, int64_t code, char *buf, size_t len);

/* ---- config.json ------------------------------------------------------------------------ */

static const char *const masked_paths[] = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
};

static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* The parts of config.json every sandbox shares, built once at start: the capabilities
 * (sandboxCapabilities, crun's default three unless the operator grants more), the seccomp
 * allowlist (confine.c), the namespaces (pid, ipc, uts, mount, cgroup; user with the
 * instance's uid range when rt->userns), masked and read-only paths. */
static json_t *config_template(const struct oci_rt *rt)
{
    const struct dg_strlist *cl = rt->conf->oci.caps;
    json_t *capset = json_array();
    for (size_t i = 0; cl && i < cl->n; i++)
        json_array_append_new(capset, json_string(cl->v[i]));
    json_t *mounts =
        json_pack("[{ss ss ss} {ss ss ss s[ssss]} {ss ss ss s[ssssss]} {ss ss ss s[sssss]}"
                  " {ss ss ss s[sss]} {ss ss ss s[ssss]}]",
                  "destination", "/proc", "type", "proc", "source", "proc",
                  /* */
                  "destination", "/dev", "type", "tmpfs", "source", "tmpfs", "options", "nosuid",
                  "strictatime", "mode=755", "size=65536k",
                  /* */
                  "destination", "/dev/pts", "type", "devpts", "source", "devpts", "options",
                  "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5",
                  /* */
                  "destination", "/dev/shm", "type", "tmpfs", "source", "shm", "options", "nosuid",
                  "noexec", "nodev", "mode=1777", "size=65536k",
                  /* */
                  "destination", "/dev/mqueue", "type", "mqueue", "source", "mqueue", "options",
                  "nosuid", "noexec", "nodev",
                  /* */
                  "destination", "/sys", "type", "sysfs", "source", "sysfs", "options", "nosuid",
                  "noexec", "nodev", "ro");
    json_t *tmpl = json_pack(
        "{ss s{sb s{sOsOsO} s[{sssisi}] sb} s{sssb} so s{s[{ss}{ss}{ss}{ss}{ss}] so so so}}",
        "ociVersion", "1.0.2", "process", "terminal", 0, "capabilities", "bounding", capset,
        "effective", capset, "permitted", capset, "rlimits", "type", "RLIMIT_NOFILE", "hard", 4096,
        "soft", 4096, "noNewPrivileges", 1, "root", "path", "rootfs", "readonly", 0, "mounts",
        mounts, "linux", "namespaces", "type", "pid", "type", "ipc", "type", "uts", "type", "mount",
        "type", "cgroup", "maskedPaths", str_array(masked_paths, DG_ARRAY_LEN(masked_paths)),
        "readonlyPaths", str_array(readonly_paths, DG_ARRAY_LEN(readonly_paths)), "seccomp",
        wk_seccomp_profile());
    json_decref(capset); /* the template holds its own three references */
    if (rt->userns) {
        json_t *linux_ = json_object_get(tmpl, "linux");
        json_array_append_new(json_object_get(linux_, "namespaces"),
                              json_pack("{ss}", "type", "user"));
        json_t *map = json_pack("[{sIsIsI}]", "containerID", (json_int_t)0, "hostID",
                                (json_int_t)rt->id_base, "size", (json_int_t)WK_USERNS_SIZE);
        json_object_set(linux_, "uidMappings", map);
        json_object_set_new(linux_, "gidMappings", map);
    }
    return tmpl;
}

/* This sandbox's config.json: the template, the image config, the function's spec. */
static char *sandbox_config(struct oci_sb *o)
{
    struct wk_sandbox *sb = SB(o);
    struct wk_image *img = o->img;
    json_t *c = json_deep_copy(o->rt->tmpl);
    json_t *proc = json_object_get(c, "process");
    /* args: the function's program_args replace the image's Cmd, as `docker run IMAGE ARGS` */
    json_t *args = json_array();
    if (o->init) { /* the init as PID 1, the entrypoint its child (its process group gets the
                      signals: -g) */
        json_array_append_new(args, json_string("/dev/init"));
        json_array_append_new(args, json_string("-g"));
        json_array_append_new(args, json_string("--"));
        json_array_append_new(json_object_get(c, "mounts"),
                              json_pack("{ss ss ss s[ssss]}", "destination", "/dev/init", "type",
                                        "bind", "source", o->rt->init, "options", "bind", "ro",
                                        "nosuid", "nodev"));
    }
    for (size_t i = 0; i < img->entrypoint.n; i++)
        json_array_append_new(args, json_string(img->entrypoint.v[i]));
    const struct dg_strlist *cmd = o->args.n ? &o->args : &img->cmd;
    for (size_t i = 0; i < cmd->n; i++)
        json_array_append_new(args, json_string(cmd->v[i]));
    json_object_set_new(proc, "args", args);
    /* env: PORT first (getenv takes the first), the function's, then the image's */
    json_t *env = json_array();
    json_array_append_new(env, json_sprintf("PORT=%d", o->port));
    for (size_t i = 0; i < o->env.n; i++)
        json_array_append_new(env, json_string(o->env.v[i]));
    for (size_t i = 0; i < img->env.n; i++)
        if (strncmp(img->env.v[i], "PORT=", 5) != 0)
            json_array_append_new(env, json_string(img->env.v[i]));
    json_object_set_new(proc, "env", env);
    json_object_set_new(proc, "cwd", json_string(img->cwd ? img->cwd : "/"));
    json_object_set_new(proc, "user", json_pack("{sisi}", "uid", img->uid, "gid", img->gid));
    json_object_set_new(c, "hostname", json_string(sb->id));
    json_t *linux_ = json_object_get(c, "linux");
    json_array_append_new(json_object_get(linux_, "namespaces"),
                          json_pack("{ss ss}", "type", "network", "path", o->ns->path));
    json_object_set_new(linux_, "cgroupsPath", json_sprintf("/%s/%s", o->rt->cgroup, sb->id));
    /* limits (lib/resources.c): the memory the sandbox takes is its limit; the CPU it takes is
     * its weight (cpu.shares, as Kubernetes maps a request), and a quota only when the
     * sandboxCpuLimit policy asks for one (default none, as the original) */
    json_t *cpu = json_pack("{sI}", "shares", (json_int_t)dg_res_cpu_shares(o->cpu_milli));
    int64_t quota = dg_cpu_limit_quota(&o->rt->conf->oci.cpu_limit, o->cpu_milli);
    if (quota > 0) {
        json_object_set_new(cpu, "quota", json_integer((json_int_t)quota * 100));
        json_object_set_new(cpu, "period", json_integer(100000));
    }
    json_object_set_new(linux_, "resources",
                        json_pack("{s{sI} so s{sI} s[{sbss}]}", "memory", "limit",
                                  (json_int_t)o->memory_mib * 1024 * 1024, "cpu", cpu, "pids",
                                  "limit", (json_int_t)o->rt->conf->oci.pids_limit, "devices",
                                  "allow", 0, "access", "rwm"));
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

/* ---- rootfs (thread pool) --------------------------------------------------------------- */

static int write_file(const char *path, const char *data, struct dg_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return dg_err_set(err, DG_E_INVAL, "open %s: %m", path);
    size_t n = strlen(data), off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return dg_err_set(err, DG_E_INVAL, "write %s: %m", path);
        }
        off += (size_t)w;
    }
    close(fd);
    return 0;
}

static void prep_work(uv_work_t *w)
{
    struct oci_sb *o = w->data;
    char scratch[4096], upper[4096], work[4096], rootfs[4096], cfg[4096], opts[16384];
    snprintf(scratch, sizeof(scratch), "%s/scratch", o->dir);
    snprintf(upper, sizeof(upper), "%s/scratch/upper", o->dir);
    snprintf(work, sizeof(work), "%s/scratch/work", o->dir);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", o->dir);
    snprintf(cfg, sizeof(cfg), "%s/config.json", o->dir);
    /* in a user namespace crun resolves the bundle as the sandbox's unprivileged root: the
     * directory must be searchable by it, by its group (the mapped gid 0), not by others
     * (0711 let any local user read the sandbox's files through <dir>/rootfs) */
    uint32_t base = o->rt->id_base;
    mode_t dmode = o->rt->userns ? 0710 : 0700;
    /* the bundle and the writable layer live in memory, on the worker's one tmpfs mounted on
     * <run>/sandboxes (not a tmpfs per sandbox: every mount on the host is copied, listed and
     * unmounted again by each `crun run`; not the run directory's disk file system: its inode
     * allocation for files made and removed at this rate was ~14% of the worker's CPU, issue
     * 16); what a sandbox writes there is charged to its memory cgroup, so its memory limit
     * bounds it */
    if (mkdir(o->dir, dmode) == -1 || (o->rt->userns && chown(o->dir, 0, base) == -1) ||
        mkdir(scratch, 0700) == -1 || mkdir(rootfs, 0755) == -1 || mkdir(upper, 0755) == -1 ||
        mkdir(work, 0700) == -1) {
        dg_err_set(&o->err, DG_E_INVAL, "mkdir in %s: %m", o->dir);
        return;
    }
    /* the upper layer's root is the container's "/": its root (the mapped uid) owns it and can
     * make /proc, /dev, /sys there; the image's files stay the host's (read-only for it) */
    if (o->rt->userns && chown(upper, base, base) == -1) {
        dg_err_set(&o->err, DG_E_INVAL, "chown %s: %m", upper);
        return;
    }
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", o->img->rootfs, upper, work);
    if (mount("overlay", rootfs, "overlay", 0, opts) == -1) {
        dg_err_set(&o->err, DG_E_INVAL, "mount overlay on %s: %m", rootfs);
        return;
    }
    write_file(cfg, o->config, &o->err);
}

/* runsc moved eth0's address into its own network stack and took it off the namespace (its
 * routes with it): put them back as the pool made them (netpool.c: the subnet's first
 * address is the gateway), so the namespace serves the next sandbox. Thread pool. False when
 * that failed: the namespace is then kept out of the pool (torn down at the stop). */
static bool runsc_net_restore(struct oci_sb *o)
{
    char cidr[32], gw[INET_ADDRSTRLEN], script[256];
    snprintf(cidr, sizeof(cidr), "%s", o->rt->subnet);
    char *slash = strchr(cidr, '/');
    struct in_addr a;
    if (!slash || inet_pton(AF_INET, (*slash = '\0', cidr), &a) != 1)
        return false;
    a.s_addr = htonl(ntohl(a.s_addr) + 1);
    inet_ntop(AF_INET, &a, gw, sizeof(gw));
    snprintf(script, sizeof(script),
             "ip addr replace %s/%s dev eth0 && ip link set eth0 up && "
             "ip route replace default via %s dev eth0",
             o->ns->ip, slash + 1, gw);
    char ns[300];
    snprintf(ns, sizeof(ns), "--net=%s", o->ns->path);
    char *argv[] = {"nsenter", ns, "sh", "-c", script, NULL};
    int rc = wk_run_sync(argv, NULL, 0);
    if (rc != 0)
        dg_log(DG_LOG_WARN, "oci",
               "sandbox %s: restoring %s in %s after runsc: status %d (the "
               "namespace is not reused)",
               SB(o)->id, o->ns->ip, o->ns->path, rc);
    return rc == 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) == -1 && errno != ENOENT)
        dg_log(DG_LOG_WARN, "oci", "removing %s: %m", path);
    return 0;
}

/* Remove `dir` and everything in it, on its own file system only (thread pool). */
static void rm_tree(const char *dir)
{
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == -1 && errno != ENOENT)
        dg_log(DG_LOG_WARN, "oci", "removing %s: %m", dir);
}

static void unmount_work(uv_work_t *w)
{
    struct oci_sb *o = w->data;
    if (o->rt->runsc && o->started && o->ns && !runsc_net_restore(o))
        o->ns_lost = true;
    char p[4096];
    snprintf(p, sizeof(p), "%s/rootfs", o->dir);
    if (umount2(p, MNT_DETACH) == -1 && errno != EINVAL && errno != ENOENT)
        dg_log(DG_LOG_WARN, "oci", "umount %s: %m", p);
    /* the bundle and the writable layer (never through a mount still there: rm_tree stays on
     * the tmpfs) */
    rm_tree(o->dir);
}

/* ---- teardown --------------------------------------------------------------------------- */

static void net_closed(void *ud);

static void sb_free(struct oci_sb *o)
{
    struct oci_rt *rt = o->rt;
    dg_strlist_free(&o->env);
    dg_strlist_free(&o->args);
    free(o->dir);
    free(o->config);
    free(o->memcg);
    if (o->prev)
        o->prev->next = o->next;
    else
        rt->sandboxes = o->next;
    if (o->next)
        o->next->prev = o->prev;
    rt->n--;
    if (o->pooled)
        wk_prewarm_gone(SB(o));
    else
        wk_sandbox_gone(SB(o));
    if (rt->closing && rt->n == 0 && rt->net) /* shutdown waited for the last one */
        wk_netpool_close(rt->net, true, net_closed, rt);
}

static void sb_handle_closed(uv_handle_t *h)
{
    struct oci_sb *o = h->data;
    if (h == (uv_handle_t *)&o->poll && o->pidfd >= 0) {
        close(o->pidfd);
        o->pidfd = -1;
    }
    if (--o->handles == 0)
        sb_free(o);
}

static void cleanup_start(struct oci_sb *o);

/* A clean-up slot frees: the next waiting starts. */
static void cleanup_done(struct oci_sb *o)
{
    struct oci_rt *rt = o->rt;
    if (!o->cleanup_slot)
        return;
    o->cleanup_slot = false;
    rt->cleaning--;
    if (o->t_gone)
        dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: cleaned up %llu ms after its process went",
               SB(o)->id, (unsigned long long)((dg_now_us() - o->t_gone) / 1000));
    unsigned max = rt->conf->oci.max_deletes;
    while (rt->cq_head && (!max || rt->cleaning < max)) {
        struct oci_sb *next = rt->cq_head;
        rt->cq_head = next->cq_next;
        if (!rt->cq_head)
            rt->cq_tail = NULL;
        next->cq_next = NULL;
        rt->ncq--;
        cleanup_start(next);
    }
}

static void finish(struct oci_sb *o)
{
    cleanup_done(o);
    if (o->ns) {
        if (!o->ns_lost)
            wk_netpool_release(o->rt->net, o->ns);
        o->ns = NULL;
    }
    o->handles = (unsigned)o->poll_open + (unsigned)o->grace_open;
    if (o->handles == 0) {
        sb_free(o);
        return;
    }
    if (o->poll_open)
        uv_close((uv_handle_t *)&o->poll, sb_handle_closed);
    if (o->grace_open)
        uv_close((uv_handle_t *)&o->grace, sb_handle_closed);
    o->poll_open = o->grace_open = false;
}

static void unmounted(uv_work_t *w, int status)
{
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: unmounted", WK_SB_OF(w->data)->id);
    finish(w->data);
}

static void runtime_deleted(void *ud, int64_t status, int sig, const char *out)
{
    struct oci_sb *o = ud;
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: runtime state deleted (%lld)", SB(o)->id,
           (long long)status);
    if ((status != 0 || sig) && !strstr(out, "does not exist") && !strstr(out, "not exist"))
        dg_log(DG_LOG_WARN, "oci", "%s delete %s: %s", o->rt->runtime, SB(o)->id, out);
    o->work.data = o;
    uv_queue_work(o->rt->conf->loop, &o->work, unmount_work, unmounted);
}

/* What `crun delete` does for a container whose init is gone, without a crun process (~5 ms of
 * fork, exec and dynamic linking per delete, issue 16): rmdir its cgroup in every hierarchy
 * (the pid namespace died with its init, so nothing is left in them), then its state directory.
 * Thread pool. o->forgot stays false when anything is left (a cgroup busy or not removable):
 * `crun delete --force` then does it all, as before. */
static void forget_work(uv_work_t *w)
{
    struct oci_sb *o = w->data;
    const char *id = SB(o)->id;
    char dir[4096 + 512];
    o->forgot = false;
    snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%s/%s", o->rt->cgroup, id); /* pure cgroup2 */
    if (rmdir(dir) == -1 && errno != ENOENT)
        return;
    DIR *top = opendir("/sys/fs/cgroup");
    if (!top)
        return;
    bool ok = true;
    for (struct dirent *h; ok && (h = readdir(top));) {
        if (h->d_name[0] == '.' || h->d_type != DT_DIR)
            continue;
        snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%s/%s/%s", h->d_name, o->rt->cgroup, id);
        ok = rmdir(dir) == 0 || errno == ENOENT || errno == ENOTDIR;
    }
    closedir(top);
    if (!ok)
        return;
    snprintf(dir, sizeof(dir), "%s/%s", o->rt->state_root, id);
    rm_tree(dir);
    o->forgot = access(dir, F_OK) == -1 && errno == ENOENT;
}

static void forgotten(uv_work_t *w, int status)
{
    struct oci_sb *o = w->data;
    if (status == 0 && o->forgot) {
        runtime_deleted(o, 0, 0, "");
        return;
    }
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: its cgroups or state stayed: crun delete", SB(o)->id);
    char *argv[] = {o->rt->runtime, "--root", o->rt->state_root, "delete", "--force",
                    SB(o)->id,      NULL};
    struct dg_err err;
    if (wk_exec(o->rt->conf->loop, argv, WK_EXEC_STDERR, runtime_deleted, o, &err) < 0)
        runtime_deleted(o, 1, 0, err.msg);
}

/* Remove the runtime's state, then the rootfs (holding a clean-up slot). */
static void cleanup_start(struct oci_sb *o)
{
    o->cleanup_slot = true;
    o->rt->cleaning++;
    if (!o->started) {
        o->work.data = o;
        uv_queue_work(o->rt->conf->loop, &o->work, unmount_work, unmounted);
        return;
    }
    if (o->exited && strcmp(o->rt->runtime, "crun") == 0) {
        o->work.data = o;
        uv_queue_work(o->rt->conf->loop, &o->work, forget_work, forgotten);
        return;
    }
    char *argv[] = {o->rt->runtime, "--root", o->rt->state_root, "delete", "--force",
                    SB(o)->id,      NULL};
    struct dg_err err;
    if (wk_exec(o->rt->conf->loop, argv, WK_EXEC_STDERR, runtime_deleted, o, &err) < 0)
        runtime_deleted(o, 1, 0, err.msg);
}

/* The container's process is gone: what it held of the machine is free now (its namespace goes
 * back to the pool; the registry hears it), then its clean-up runs, or waits for a slot. */
static void after_exit(struct oci_sb *o)
{
    struct oci_rt *rt = o->rt;
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: process gone", SB(o)->id);
    if (o->poll_active) {
        uv_poll_stop(&o->poll);
        o->poll_active = false;
    }
    if (o->grace_open)
        uv_timer_stop(&o->grace);
    o->t_gone = dg_now_us();
    /* runsc's network state is restored at the unmount (it needs the namespace then) */
    if (o->ns && !rt->runsc) {
        if (!o->ns_lost)
            wk_netpool_release(rt->net, o->ns);
        o->ns = NULL;
    }
    wk_sandbox_stopped(SB(o));
    unsigned max = rt->conf->oci.max_deletes;
    if (!max || rt->cleaning < max || rt->closing) {
        cleanup_start(o);
        return;
    }
    if (rt->cq_tail)
        rt->cq_tail->cq_next = o;
    else
        rt->cq_head = o;
    rt->cq_tail = o;
    rt->ncq++;
}

/* ms from `t0` (µs) to now, 0 if unset. */
static long long ms_since(uint64_t t0)
{
    return t0 ? (long long)((dg_now_us() - t0) / 1000) : 0;
}

/* How late the loop is handling what it saw at this turn's start: the work ahead in the turn,
 * ms (the worker noticing an exit late). */
static long long loop_late_ms(uv_loop_t *loop)
{
    long long late = (long long)(dg_now_us() / 1000) - (long long)uv_now(loop);
    return late > 0 ? late : 0;
}

/* The delete's outcome in the log: how long the process took to go, and how late the worker
 * saw it (a busy loop), so that a slow delete blames what was slow. Slow ones at info. */
static void say_exit(struct oci_sb *o, int64_t code)
{
    long long term = ms_since(o->t_term), late = loop_late_ms(o->rt->conf->loop);
    char status[64];
    wk_exit_reason(code, status, sizeof(status));
    if (o->t_kill)
        dg_log(DG_LOG_INFO, "oci",
               "sandbox %s (%s) gone %lld ms after SIGKILL (%lld ms after SIGTERM; %s; noticed "
               "%lld ms late)",
               SB(o)->id, SB(o)->function, ms_since(o->t_kill), term, status, late);
    else
        dg_log(term >= 100 || late >= 50 ? DG_LOG_INFO : DG_LOG_DEBUG, "oci",
               "sandbox %s (%s) exited %lld ms after SIGTERM (%s; noticed %lld ms late)", SB(o)->id,
               SB(o)->function, term, status, late);
}

static int pidfd_signal(struct oci_sb *o, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, o->pidfd, sig, NULL, 0);
}

static void on_pidfd(uv_poll_t *p, int status, int events);

static void on_grace(uv_timer_t *t)
{
    struct oci_sb *o = t->data;
    if (o->pid <= 0)
        return;
    long long grace = (long long)o->rt->conf->oci.kill_grace_ms, term = ms_since(o->t_term);
    /* gone already, and the loop had not got to its pidfd yet: a late notice, not a process
     * that ignored SIGTERM */
    struct pollfd pfd = {.fd = o->pidfd, .events = POLLIN};
    if (poll(&pfd, 1, 0) == 1) {
        dg_log(DG_LOG_INFO, "oci",
               "sandbox %s (%s) exited within its grace after SIGTERM; the worker noticed only "
               "at the grace's end (%lld ms after SIGTERM, killGrace %lld ms): no SIGKILL",
               SB(o)->id, SB(o)->function, term, grace);
        on_pidfd(&o->poll, 0, UV_READABLE);
        return;
    }
    dg_log(DG_LOG_WARN, "oci",
           "sandbox %s (%s) ignored SIGTERM: still running %lld ms after it (killGrace %lld "
           "ms; %s): SIGKILL",
           SB(o)->id, SB(o)->function, term, grace,
           o->init ? "under the init: its entrypoint ignored it"
                   : "no init: as PID 1 a signal without a handler does nothing");
    o->t_kill = dg_now_us();
    pidfd_signal(o, SIGKILL);
}

static void teardown(struct oci_sb *o)
{
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: teardown (pid %d, started %d)", SB(o)->id, (int)o->pid,
           o->started);
    o->stage = ST_TEARDOWN;
    wk_probe_cancel(o->probe);
    o->probe = NULL;
    if (o->pid > 0 && !o->poll_open) { /* created, never started (pooled): no grace for a
                                          process that never ran the function; gone before its
                                          namespace goes back (after_exit); the reaper reaps it */
        pidfd_signal(o, SIGKILL);
        close(o->pidfd);
        o->pidfd = -1;
        o->pid = 0;
    }
    if (o->pid > 0) { /* on_pidfd continues once it has exited */
        o->t_term = dg_now_us();
        pidfd_signal(o, SIGTERM);
        if (!o->grace_open) {
            uv_timer_init(o->rt->conf->loop, &o->grace);
            o->grace.data = o;
            o->grace_open = true;
        }
        uv_timer_start(&o->grace, on_grace, (uint64_t)o->rt->conf->oci.kill_grace_ms, 0);
        return;
    }
    after_exit(o);
}

/* Tell the caller the create failed (once; not after a delete); the caller tears down. */
static void sandbox_failed(struct oci_sb *o, const struct dg_err *err)
{
    if (o->failed || o->destroy)
        return;
    o->failed = true;
    if (o->pooled) { /* the pool's: it marks it going */
        wk_prewarm_made(SB(o), 0, err);
        return;
    }
    SB(o)->state = WK_SB_DELETING;
    wk_sandbox_created(SB(o), err);
}

/* ---- the create steps ------------------------------------------------------------------- */

static void on_pidfd(uv_poll_t *p, int status, int events)
{
    struct oci_sb *o = p->data;
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: pidfd %d (status %d)", SB(o)->id, o->pidfd, status);
    int st = 0;
    pid_t r;
    while ((r = waitpid(o->pid, &st, WNOHANG)) == -1 && errno == EINTR)
        ;
    if (r == 0)
        return; /* not yet (spurious wake-up) */
    int64_t code = r < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    o->pid = 0;
    o->exited = r > 0;
    uv_poll_stop(&o->poll);
    o->poll_active = false;
    /* the pidfd stays open until the poll handle is closed (sb_handle_closed): closed now, its
     * number could go to another handle, and libuv, closing this one, would unregister that */
    if (o->stage == ST_TEARDOWN) {
        if (o->t_term)
            say_exit(o, code);
        after_exit(o);
        return;
    }
    if (SB(o)->state == WK_SB_CREATING) {
        char why[128];
        exit_reason(o, code, why, sizeof(why));
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "the container of '%s' exited during start (%s)",
                   SB(o)->function, why);
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    char reason[128]; /* read now: the cgroup goes with `crun delete` */
    exit_reason(o, code, reason, sizeof(reason));
    wk_sandbox_exited(SB(o), code, reason); /* the CP deletes it, and destroy() tears it down */
}

static void on_ready(void *ud, const struct dg_err *err)
{
    struct oci_sb *o = ud;
    struct wk_sandbox *sb = SB(o);
    o->probe = NULL;
    sb->lat.ready_us = dg_now_us() - o->t_step;
    if (err) {
        struct dg_err e = *err;
        dg_err_wrap(&e, "sandbox of '%s' at %s:%d", sb->function, sb->host, sb->port);
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    wk_sandbox_created(sb, NULL);
}

static char *read_small(const char *path)
{
    /* the runtime's pid file or log: a few bytes on a local disk */
    static char buf[2048];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return NULL;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return NULL;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

/* ---- why a container exited ------------------------------------------------------------- */

/* The directory of `pid`'s memory cgroup (allocated; NULL if unknown), *v2 if it is in the
 * unified hierarchy. From /proc/PID/cgroup, read while the process lives: the path there is
 * relative to the worker's cgroup namespace, the host's. v1 (and hybrid hosts) name the
 * memory controller on its own line; a pure v2 host has only "0::/path". */
static char *memcg_of(pid_t pid, bool *v2)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    const char *text = read_small(path);
    if (!text)
        return NULL;
    const char *unified = NULL;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        const char *c1 = memchr(line, ':', n),
                   *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - line)) : NULL;
        if (c2) {
            const char *ctl = c1 + 1, *cg = c2 + 1;
            int cglen = (int)(n - (size_t)(cg - line));
            for (const char *t = ctl; t < c2;) { /* "memory" among "cpu,memory,..." */
                const char *comma = memchr(t, ',', (size_t)(c2 - t));
                size_t tl = comma ? (size_t)(comma - t) : (size_t)(c2 - t);
                if (tl == 6 && memcmp(t, "memory", 6) == 0) {
                    *v2 = false;
                    return dg_xasprintf("/sys/fs/cgroup/memory%.*s", cglen, cg);
                }
                t += tl + 1;
            }
            if (ctl == c2 && !unified)
                unified = cg;
        }
        line += n + (end ? 1 : 0);
    }
    if (!unified || access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0)
        return NULL; /* hybrid: the unified hierarchy holds no memory controller */
    *v2 = true;
    return dg_xasprintf("/sys/fs/cgroup%.*s", (int)strcspn(unified, "\n"), unified);
}

/* The number after `key ` in a cgroup file of `key value` lines; -1 if absent. */
static int64_t cg_counter(const char *dir, const char *file, const char *key)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    const char *text = read_small(path);
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "")
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
            return strtoll(p + kl + 1, NULL, 10);
    return -1;
}

/* A cgroup file holding one number ("max": -1); -1 if unreadable. */
static int64_t cg_value(const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    const char *text = read_small(path);
    return text && text[0] >= '0' && text[0] <= '9' ? strtoll(text, NULL, 10) : -1;
}

/* Why the container's init exited with `code` (status, or -signal), for the CP and the caller's
 * 502: the memory cgroup's OOM killer counts its kills (v1: memory.oom_control, kernels before
 * 4.13 only a failcnt; v2: memory.events), so a SIGKILL while it counted one is an OOM kill,
 * with the limit the kernel enforced. Read before `crun delete` removes the cgroup. */
static void exit_reason(const struct oci_sb *o, int64_t code, char *buf, size_t len)
{
    wk_exit_reason(code, buf, len);
    if (!o->memcg)
        return;
    int64_t kills =
        cg_counter(o->memcg, o->memcg_v2 ? "memory.events" : "memory.oom_control", "oom_kill");
    if (kills < 0 && !o->memcg_v2 && (code == -SIGKILL || (o->init && code == 128 + SIGKILL)))
        kills = cg_value(o->memcg, "memory.failcnt"); /* hit its limit at least once */
    if (kills <= 0)
        return;
    int64_t limit = cg_value(o->memcg, o->memcg_v2 ? "memory.max" : "memory.limit_in_bytes");
    long long mib = limit > 0 ? (long long)(limit >> 20) : (long long)o->memory_mib;
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: %lld OOM kill(s) in %s", SB(o)->id, (long long)kills,
           o->memcg);
    /* under the minimal init the entrypoint is its child: the init exits 128 + the signal
     * that killed it (tini's rule), so 137 is the entrypoint's SIGKILL */
    if (code == -SIGKILL || (o->init && code == 128 + SIGKILL)) {
        snprintf(buf, len, "OOM-killed: memory limit %lld MiB", mib);
        return;
    }
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, " after an OOM kill in it (memory limit %lld MiB)", mib);
}

static void pooled_made(struct oci_sb *o);

/* Its process runs: watched (its pidfd) from now on, and probed until it answers (or torn down
 * at once if it failed or was deleted meanwhile). After `crun run` and after a pooled start. */
static void watch_and_probe(struct oci_sb *o)
{
    struct wk_sandbox *sb = SB(o);
    uv_poll_init(o->rt->conf->loop, &o->poll, o->pidfd);
    o->poll.data = o;
    o->poll_open = o->poll_active = true;
    uv_poll_start(&o->poll, UV_READABLE, on_pidfd);
    o->stage = ST_RUNNING;
    if (o->failed || o->destroy) {
        teardown(o);
        return;
    }
    o->probe = wk_probe_start(o->rt->conf->loop, sb->host, sb->port,
                              o->rt->conf->readiness_timeout_ms, on_ready, o);
}

static void runtime_started(void *ud, int64_t status, int sig, const char *out)
{
    struct oci_sb *o = ud;
    struct wk_sandbox *sb = SB(o);
    char path[4096];
    sb->lat.start_us = dg_now_us() - o->t_step;
    o->t_step = dg_now_us();
    if (status != 0 || sig) {
        snprintf(path, sizeof(path), "%s/runtime.log", o->dir);
        const char *log = read_small(path);
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "%s run failed (%s %lld): %s", o->rt->runtime,
                   sig ? "signal" : "status", (long long)(sig ? sig : status),
                   log && *log ? log : "no message");
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    snprintf(path, sizeof(path), "%s/pid", o->dir);
    const char *pid = read_small(path);
    o->pid = pid ? atoi(pid) : 0;
    o->pidfd = o->pid > 0 ? (int)syscall(SYS_pidfd_open, o->pid, 0) : -1;
    if (o->pidfd < 0) {
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "the container of '%s' is gone right after its start (pid %d)",
                   sb->function, (int)o->pid);
        o->pid = 0;
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    o->memcg = memcg_of(o->pid, &o->memcg_v2);
    if (o->pooled) {
        pooled_made(o);
        return;
    }
    watch_and_probe(o);
}

/* gVisor's runsc (2022-12) tells the root network namespace by /proc/sys/net/core/rmem_default,
 * which kernels since 5.x show in every namespace: with the pooled namespace it refuses
 * ("cannot run with network enabled in root network namespace"). It runs in a private mount
 * namespace of its own where /proc/sys/net is hidden under an empty tmpfs; nothing else of it
 * reads the host's network sysctls (docs/security.md, "gVisor"). */
#define RUNSC_WRAP                                                                                 \
    "mount -t tmpfs -o size=4k,mode=0555 dg-hide-sysnet /proc/sys/net && exec \"$0\" \"$@\""

/* The command that starts a container, detached, into argv (24 slots): `RUNTIME --root R
 * --log L run --detach --pid-file P --bundle B ID`; runsc with its user-space network stack
 * (--network=sandbox, fed from the pooled namespace's veth) on the ptrace platform (no KVM
 * here; this runsc has no systrap), under the wrapper above. */
static void run_argv(struct oci_rt *rt, char **argv, char *log, char *pidfile, char *bundle,
                     char *id, bool create_only)
{
    int n = 0;
    if (rt->runsc) {
        argv[n++] = "unshare";
        argv[n++] = "--mount";
        argv[n++] = "--propagation";
        argv[n++] = "private";
        argv[n++] = "sh";
        argv[n++] = "-c";
        argv[n++] = RUNSC_WRAP;
    }
    argv[n++] = rt->runtime;
    argv[n++] = "--root";
    argv[n++] = rt->state_root;
    argv[n++] = "--log";
    argv[n++] = log;
    if (rt->runsc) {
        argv[n++] = "--network=sandbox";
        argv[n++] = "--platform=ptrace";
    }
    if (create_only) { /* pooled: `start` comes with a create (prewarm.c) */
        argv[n++] = "create";
    } else {
        argv[n++] = "run";
        argv[n++] = "--detach";
    }
    argv[n++] = "--pid-file";
    argv[n++] = pidfile;
    argv[n++] = "--bundle";
    argv[n++] = bundle;
    argv[n++] = id;
    argv[n] = NULL;
}

static void prep_done(uv_work_t *w, int status)
{
    struct oci_sb *o = w->data;
    struct wk_sandbox *sb = SB(o);
    sb->lat.rootfs_us = dg_now_us() - o->t_step;
    o->t_step = dg_now_us();
    if (o->err.msg[0]) {
        struct dg_err e = o->err;
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    if (o->failed || o->destroy) {
        teardown(o);
        return;
    }
    o->stage = ST_START;
    o->started = true;
    char pidfile[4096], log[4096];
    snprintf(pidfile, sizeof(pidfile), "%s/pid", o->dir);
    snprintf(log, sizeof(log), "%s/runtime.log", o->dir);
    char *argv[24];
    run_argv(o->rt, argv, log, pidfile, o->dir, sb->id, o->pooled);
    struct dg_err err;
    if (wk_exec(o->rt->conf->loop, argv, WK_EXEC_NONE, runtime_started, o, &err) < 0) {
        o->started = false;
        sandbox_failed(o, &err);
        teardown(o);
    }
}

static void on_netns(void *ud, struct wk_netns *ns, const struct dg_err *err)
{
    struct oci_sb *o = ud;
    struct wk_sandbox *sb = SB(o);
    o->ns_wait = NULL;
    if (err) {
        struct dg_err e = *err;
        dg_err_wrap(&e, "no network namespace");
        sandbox_failed(o, &e);
        teardown(o);
        return;
    }
    o->ns = ns;
    sb->lat.network_us = dg_now_us() - o->t_step;
    o->t_step = dg_now_us();
    snprintf(sb->host, sizeof(sb->host), "%s", ns->ip);
    sb->port = o->port;
    o->config = sandbox_config(o);
    o->stage = ST_PREP;
    o->work.data = o;
    uv_queue_work(o->rt->conf->loop, &o->work, prep_work, prep_done);
}

static void on_image(void *ud, struct wk_image *img, const struct dg_err *err)
{
    struct oci_sb *o = ud;
    struct wk_sandbox *sb = SB(o);
    o->img_wait = NULL;
    if (err) {
        sandbox_failed(o, err);
        teardown(o);
        return;
    }
    o->img = img;
    sb->lat.image_us = dg_now_us() - o->t_step;
    o->t_step = dg_now_us();
    if (o->port == 0)
        o->port = img->port ? img->port : 80;
    o->stage = ST_NET;
    o->ns_wait = wk_netpool_acquire(o->rt->net, on_netns, o);
}

static void link_sb(struct oci_rt *rt, struct oci_sb *o)
{
    o->rt = rt;
    o->prev = NULL;
    o->next = rt->sandboxes;
    if (rt->sandboxes)
        rt->sandboxes->prev = o;
    rt->sandboxes = o;
    rt->n++;
}

/* ---- pre-created sandboxes (prewarm.c) -------------------------------------------------- */

/* A pooled one is through `crun create`: what it holds now is counted (its cgroup's memory),
 * and it waits in the pool. */
static void pooled_made(struct oci_sb *o)
{
    struct wk_sandbox *sb = SB(o);
    o->stage = ST_POOLED;
    if (o->destroy) { /* dropped while being made */
        teardown(o);
        return;
    }
    int64_t held = -1;
    if (o->memcg)
        held = cg_value(o->memcg, o->memcg_v2 ? "memory.current" : "memory.usage_in_bytes");
    dg_log(DG_LOG_DEBUG, "oci", "pooled %s of %s: created (pid %d) in %.1f ms", sb->id,
           sb->function, (int)o->pid, (double)(dg_now_us() - sb->t0_us) / 1000.0);
    wk_prewarm_made(sb, held, NULL);
}

static void pooled_started(void *ud, int64_t status, int sig, const char *out)
{
    struct oci_sb *o = ud;
    struct wk_sandbox *sb = SB(o);
    sb->lat.start_us = dg_now_us() - o->t_step;
    o->t_step = dg_now_us();
    if (status != 0 || sig) {
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "%s start of the pre-created container %s failed (%s %lld): %s",
                   o->rt->runtime, sb->id, sig ? "signal" : "status",
                   (long long)(sig ? sig : status), out && *out ? out : "no message");
        sandbox_failed(o, &e);
        teardown(o); /* never watched: teardown deletes it without a signal */
        return;
    }
    watch_and_probe(o);
}

/* Start crun's created container `id` as `crun start` does (its libcrun_status_write_exec_fifo):
 * the container's init waits for a byte on <state root>/<id>/exec.fifo, which the runtime's
 * state then no longer has (`crun state` says running). A write to a FIFO in the run directory,
 * tens of microseconds, instead of a crun process (~5 ms of fork, exec and state reading).
 * Non-blocking: no reader (the container died while pooled) is an error, never a wait. */
static int fifo_start(const struct oci_rt *rt, const char *id, struct dg_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/exec.fifo", rt->state_root, id);
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1)
        return dg_err_set(err, DG_E_INVAL, "open %s: %m", path);
    unlink(path);
    char b = 0;
    ssize_t w;
    while ((w = write(fd, &b, 1)) == -1 && errno == EINTR)
        ;
    int e = errno;
    close(fd);
    if (w != 1)
        return dg_err_set(err, DG_E_INVAL, "write %s: %s", path, strerror(e));
    return 0;
}

/* A create that found a pooled sandbox of its exact spec: `sb` takes over its container (its
 * namespace, rootfs, cgroup and the process waiting to exec) and only starts it. The pooled
 * one's state moves over whole: it has no handle open and no step under way. */
static void adopt(struct oci_rt *rt, struct wk_sandbox *sb, struct wk_sandbox *psb)
{
    struct oci_sb *o = WK_SB_EXT(sb), *q = WK_SB_EXT(psb);
    if (q->prev) /* q leaves the runtime's list, o takes its place */
        q->prev->next = q->next;
    else
        rt->sandboxes = q->next;
    if (q->next)
        q->next->prev = q->prev;
    rt->n--;
    link_sb(rt, o);
    o->pidfd = -1;
    o->img = q->img;
    o->ns = q->ns;
    o->env = q->env;
    o->args = q->args;
    o->cpu_milli = q->cpu_milli;
    o->memory_mib = q->memory_mib;
    o->port = q->port;
    o->dir = q->dir;
    o->config = q->config;
    o->pid = q->pid;
    o->pidfd = q->pidfd;
    o->memcg = q->memcg;
    o->memcg_v2 = q->memcg_v2;
    o->init = q->init;
    o->started = true;
    /* one name everywhere: the container's (its hostname, cgroup and DIRIGENT_SANDBOX_ID
     * were made with it) becomes the sandbox's id for the CP and the DPs */
    char was[sizeof(sb->id)];
    snprintf(was, sizeof(was), "%s", sb->id);
    wk_registry_rename(sb, psb->id);
    memset(q, 0, sizeof(*q));
    wk_prewarm_release(psb);
    snprintf(sb->host, sizeof(sb->host), "%s", o->ns->ip);
    sb->port = o->port;
    o->stage = ST_START;
    o->t_step = dg_now_us();
    dg_log(DG_LOG_INFO, "oci", "sandbox %s (%s): pre-created, starting (create %s)", sb->id,
           sb->function, was);
    struct dg_err err = {0};
    if (strcmp(rt->runtime, "crun") == 0) { /* no process to spawn: what `crun start` does */
        int rc = fifo_start(rt, sb->id, &err);
        pooled_started(o, rc < 0 ? 1 : 0, 0, err.msg);
        return;
    }
    char *argv[] = {rt->runtime, "--root", rt->state_root, "start", sb->id, NULL};
    if (wk_exec(rt->conf->loop, argv, WK_EXEC_STDERR, pooled_started, o, &err) < 0)
        pooled_started(o, 1, 0, err.msg);
}

static void create_steps(struct oci_rt *rt, struct wk_sandbox *sb,
                         const struct dg_wire_create *spec);

static void oci_create(void *state, struct wk_sandbox *sb, const struct dg_wire_create *spec)
{
    struct oci_rt *rt = state;
    struct wk_sandbox *psb = wk_prewarm_take(rt->pool, spec);
    if (psb)
        adopt(rt, sb, psb);
    else
        create_steps(rt, sb, spec);
}

/* prewarm.c's make: the create's steps, up to `crun create`. */
static void pool_make(void *state, struct wk_sandbox *psb, const struct dg_wire_create *spec)
{
    struct oci_sb *o = WK_SB_EXT(psb);
    o->pooled = true;
    /* its id, as the registry gives every sandbox its own (registry.c): a create that takes it
     * takes this name (wk_registry_rename) */
    dg_strlist_push(&o->env, dg_xasprintf("%s=%s", DG_WIRE_ENV_SANDBOX_ID, psb->id));
    create_steps(state, psb, spec);
}

static void oci_destroy(void *state, struct wk_sandbox *sb);

static const struct wk_prewarm_ops pool_ops = {.make = pool_make, .drop = oci_destroy};

static void create_steps(struct oci_rt *rt, struct wk_sandbox *sb,
                         const struct dg_wire_create *spec)
{
    const struct wk_runtime_conf *conf = rt->conf;
    struct oci_sb *o = WK_SB_EXT(sb);
    o->rt = rt;
    o->pidfd = -1;
    link_sb(rt, o);
    /* not t0: a wait in the create queue is no image time (the total has it) */
    o->t_step = dg_now_us();
    o->port = (int)spec->port;
    o->init = rt->init && !spec->no_init;
    o->dir = dg_xasprintf("%s/%s", rt->sb_dir, sb->id);
    for (size_t i = 0; i < spec->env.n; i++)
        dg_strlist_push(&o->env, dg_xstrdup(spec->env.v[i]));
    for (size_t i = 0; i < spec->args.n; i++)
        dg_strlist_push(&o->args, dg_xstrdup(spec->args.v[i]));
    /* what it takes, by the rule the CP reserved it by (a request of 0 is the floor) */
    struct dg_res_node floors = {.min_cpu_milli = conf->min_cpu_milli,
                                 .min_memory_mib = conf->min_memory_mib};
    dg_res_take(&floors, spec->cpu_milli, spec->memory_mib, &o->cpu_milli, &o->memory_mib);
    o->stage = ST_IMAGE;
    o->img_wait = wk_image_get(rt->images, spec->image ? spec->image : "", on_image, o);
}

static void oci_destroy(void *state, struct wk_sandbox *sb)
{
    struct oci_sb *o = WK_SB_EXT(sb);
    dg_log(DG_LOG_DEBUG, "oci", "sandbox %s: destroy at stage %d", sb->id, (int)o->stage);
    if (o->destroy)
        return;
    o->destroy = true;
    switch (o->stage) {
    case ST_IMAGE:
        wk_image_wait_cancel(o->img_wait);
        o->img_wait = NULL;
        teardown(o);
        break;
    case ST_NET:
        wk_netpool_acquire_cancel(o->ns_wait);
        o->ns_wait = NULL;
        teardown(o);
        break;
    case ST_PREP:
    case ST_START:
        break; /* the step's end sees `destroy` */
    case ST_RUNNING:
        teardown(o);
        break;
    case ST_POOLED:
        teardown(o);
        break;
    case ST_TEARDOWN:
        break;
    }
}

/* ---- orphans ---------------------------------------------------------------------------- */

/* A container's init is reaped by on_pidfd (its status matters), not by the reaper. */
static bool is_container_init(pid_t pid, void *ud)
{
    struct oci_rt *rt = ud;
    for (struct oci_sb *o = rt->sandboxes; o; o = o->next)
        if (o->pid == pid)
            return true;
    return false;
}

static void on_reaper(uv_timer_t *t)
{
    struct oci_rt *rt = t->data;
    wk_reap_orphans(is_container_init, rt);
}

/* ---- start-up and shutdown -------------------------------------------------------------- */

static bool mounted_at(const char *dir)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    size_t n = strlen(dir);
    while (!found && fgets(line, sizeof(line), f)) {
        char *mp = line;
        for (int i = 0; i < 4 && mp; i++) /* the 5th field is the mount point */
            mp = strchr(mp, ' ') ? strchr(mp, ' ') + 1 : NULL;
        found = mp && strncmp(mp, dir, n) == 0 && mp[n] == ' ';
    }
    fclose(f);
    return found;
}

/* crun refuses hybrid cgroups (v1 controllers, cgroup2 with only hugetlb) until hugetlb is
 * also mounted as v1 (PLATFORM.md): do that once per boot. */
static int cgroup_hugetlb_step(struct dg_err *err)
{
    struct stat st;
    if (stat("/sys/fs/cgroup/unified", &st) != 0 || mounted_at("/sys/fs/cgroup/hugetlb") ||
        !mounted_at("/sys/fs/cgroup/memory"))
        return 0;
    if ((mkdir("/sys/fs/cgroup/hugetlb", 0755) == -1 && errno != EEXIST) ||
        mount("cgroup", "/sys/fs/cgroup/hugetlb", "cgroup", 0, "hugetlb") == -1)
        return dg_err_set(err, DG_E_INVAL,
                          "crun needs the hugetlb cgroup on hybrid cgroups: mount -t cgroup -o "
                          "hugetlb cgroup /sys/fs/cgroup/hugetlb failed: %m");
    dg_log(DG_LOG_INFO, "oci", "mounted the hugetlb cgroup (v1) for crun on hybrid cgroups");
    return 0;
}

/* Unmount everything below `dir` (deepest first): the mounts of a run that crashed. */
static unsigned unmount_below(const char *dir)
{
    unsigned n = 0;
    size_t len = strlen(dir);
    for (int round = 0; round < 8; round++) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
            return n;
        char line[4096], best[4096] = "";
        while (fgets(line, sizeof(line), f)) {
            char *mp = line;
            for (int i = 0; i < 4 && mp; i++)
                mp = strchr(mp, ' ') ? strchr(mp, ' ') + 1 : NULL;
            if (!mp || strncmp(mp, dir, len) != 0 || mp[len] != '/')
                continue;
            *strchr(mp, ' ') = '\0';
            if (strlen(mp) > strlen(best))
                snprintf(best, sizeof(best), "%s", mp);
        }
        fclose(f);
        if (!best[0])
            return n;
        if (umount2(best, MNT_DETACH) == 0)
            n++;
        else
            dg_log(DG_LOG_WARN, "oci", "umount %s: %m", best);
        round = 0;
    }
    return n;
}

/* rmdir `dir`'s subdirectories (the sandboxes' cgroups) and `dir`, then its parent; only
 * empty cgroups go. Returns how many were removed. */
static unsigned cgroup_remove_at(char *dir)
{
    unsigned n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *c; d && (c = readdir(d));) {
        char sub[4096 + 256];
        snprintf(sub, sizeof(sub), "%s/%s", dir, c->d_name);
        if (c->d_type == DT_DIR && c->d_name[0] != '.' && rmdir(sub) == 0)
            n++;
    }
    if (d)
        closedir(d);
    if (rmdir(dir) == 0)
        n++;
    *strrchr(dir, '/') = '\0';
    rmdir(dir); /* "dirigent": fails while another worker has its cgroups there */
    return n;
}

/* Remove the cgroup `rel` (e.g. dirigent/w-1a2b3c) and the sandbox cgroups below it in every
 * hierarchy (v1 controllers, the unified one, or a pure cgroup2 root): a cgroup that still
 * holds a process stays. Returns how many were removed. */
static unsigned cgroups_remove(const char *rel)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%s", rel);
    unsigned n = cgroup_remove_at(dir);
    DIR *top = opendir("/sys/fs/cgroup");
    for (struct dirent *h; top && (h = readdir(top));) {
        if (h->d_name[0] == '.' || h->d_type != DT_DIR)
            continue;
        snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%s/%s", h->d_name, rel);
        n += cgroup_remove_at(dir);
    }
    if (top)
        closedir(top);
    return n;
}

static void cleanup_previous_run(struct oci_rt *rt, const struct wk_netpool_opts *nopts)
{
    char out[65536];
    unsigned containers = 0;
    char *list[] = {rt->runtime, "--root", rt->state_root, "list", "--quiet", NULL};
    if (wk_run_sync(list, out, sizeof(out)) == 0) {
        for (char *id = strtok(out, "\n"); id; id = strtok(NULL, "\n")) {
            char *del[] = {rt->runtime, "--root", rt->state_root, "delete", "--force", id, NULL};
            if (wk_run_sync(del, NULL, 0) == 0)
                containers++;
        }
    }
    unsigned mounts = unmount_below(rt->sb_dir);
    char *rm[] = {"rm", "-rf", "--one-file-system", rt->sb_dir, NULL};
    wk_run_sync(rm, NULL, 0);
    if (umount2(rt->sb_dir, MNT_DETACH) == 0) /* the sandboxes' tmpfs */
        mounts++;
    struct dg_err err = {0};
    int ns = wk_netpool_cleanup(nopts, &err);
    if (ns < 0)
        dg_log(DG_LOG_WARN, "oci", "%s", err.msg);
    /* the sandboxes' cgroups crun did not remove (a crash between its steps) */
    unsigned cgroups = cgroups_remove(rt->cgroup);
    if (containers || mounts || ns > 0 || cgroups)
        dg_log(DG_LOG_WARN, "oci",
               "removed what an earlier run left: %u containers, %u mounts, %d namespaces, %u "
               "cgroups",
               containers, mounts, ns > 0 ? ns : 0, cgroups);
}

static void prefetched(void *ud, struct wk_image *img, const struct dg_err *err)
{
    if (err)
        dg_log(DG_LOG_WARN, "oci", "prefetch: %s", err->msg);
}

/* rt->subnet: sandboxSubnet, or the instance's default /22 (the first not routed on the
 * host; a route on this instance's own bridge is its predecessor's). */
static int pick_subnet(struct oci_rt *rt, const struct wk_runtime_conf *c, struct dg_err *err)
{
    char routes[65536] = "";
    int fd = open("/proc/net/route", O_RDONLY | O_CLOEXEC);
    if (fd != -1) {
        size_t n = 0;
        ssize_t r;
        while (n < sizeof(routes) - 1 && (r = read(fd, routes + n, sizeof(routes) - 1 - n)) > 0)
            n += (size_t)r;
        routes[n] = '\0';
        close(fd);
    }
    uint32_t net;
    char conflict[64];
    if (c->oci.subnet &&
        c->oci.subnet[0]) { /* configured: used as it is (netpool checks its form) */
        snprintf(rt->subnet, sizeof(rt->subnet), "%s", c->oci.subnet);
        unsigned a, b, cc, d, plen;
        if (sscanf(c->oci.subnet, "%u.%u.%u.%u/%u", &a, &b, &cc, &d, &plen) == 5 && plen <= 32 &&
            wk_route_conflict(a << 24 | b << 16 | cc << 8 | d, plen, routes, c->oci.bridge,
                              conflict, sizeof(conflict)))
            dg_log(DG_LOG_WARN, "oci",
                   "sandboxSubnet %s overlaps the route %s: sandboxes there may be unreachable "
                   "(another worker's? leave sandboxSubnet unset for a free one)",
                   c->oci.subnet, conflict);
        return 0;
    }
    int skipped =
        wk_subnet_pick(c->instance->id, routes, c->oci.bridge, &net, conflict, sizeof(conflict));
    if (skipped < 0)
        return dg_err_set(err, DG_E_INVAL,
                          "sandboxSubnet: every /22 of 100.64.0.0/10 is routed on this host: set "
                          "sandboxSubnet to a free range");
    wk_subnet_format(net, rt->subnet, sizeof(rt->subnet));
    if (skipped > 0) {
        char first[32];
        wk_subnet_format(wk_subnet_candidate(c->instance->id, 0), first, sizeof(first));
        dg_log_always("oci", "sandboxSubnet: %s is taken (route %s): using %s", first, conflict,
                      rt->subnet);
    }
    return 0;
}

/* Whether sandboxes can run in a user namespace here: the kernel allows one, the runtime
 * takes one (not runsc, whose sandbox kernel has its own), and crun, which resolves the bundle
 * as the sandbox's root (an unprivileged uid), can search every directory above it. The
 * run directory and its default parent /run/dirigent are made searchable (0711) here. */
static bool userns_possible(struct oci_rt *rt, char *why, size_t len)
{
    const struct wk_runtime_conf *c = rt->conf;
    if (strcmp(rt->runtime, "runsc") == 0) {
        snprintf(why, len, "runsc isolates with its own kernel and takes no user namespace");
        return false;
    }
    char buf[64] = "";
    int fd = open("/proc/sys/user/max_user_namespaces", O_RDONLY | O_CLOEXEC);
    if (fd != -1) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    if (fd == -1 || atol(buf) <= 0) {
        snprintf(why, len, "the kernel allows no user namespace (user.max_user_namespaces)");
        return false;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", c->run_dir);
    if (chmod(c->run_dir, 0711) == -1 || chmod(rt->sb_dir, 0711) == -1) {
        snprintf(why, len, "chmod %s: %s", c->run_dir, strerror(errno));
        return false;
    }
    if (strncmp(c->run_dir, "/run/dirigent/", 14) == 0 && !strchr(c->run_dir + 14, '/'))
        chmod("/run/dirigent", 0711);
    for (char *slash = strrchr(dir, '/'); slash && slash != dir; slash = strrchr(dir, '/')) {
        *slash = '\0';
        struct stat st;
        if (stat(dir, &st) == -1 || !(st.st_mode & S_IXOTH)) {
            snprintf(why, len,
                     "%s (above runDir) is not searchable by others (chmod o+x, or a runDir "
                     "elsewhere)",
                     dir);
            return false;
        }
    }
    return true;
}

/* The confinement every sandbox shares, decided at start: capabilities, user namespace,
 * the nftables tables (blocking: nft runs once here, before the loop serves). */
static int confine_init(struct oci_rt *rt, struct dg_err *err)
{
    const struct wk_runtime_conf *c = rt->conf;
    char why[4608] = "";
    const char *mode = c->oci.userns ? c->oci.userns : "auto";
    bool want = strcmp(mode, "off") != 0;
    /* the slot of its subnet: unique among the workers of this host (pick_subnet) */
    rt->id_base = WK_USERNS_BASE + WK_USERNS_SIZE * wk_userns_slot(c->instance->id, rt->subnet);
    rt->userns = want && userns_possible(rt, why, sizeof(why));
    if (want && !rt->userns && strcmp(mode, "on") == 0)
        return dg_err_set(err, DG_E_INVAL,
                          "sandboxUserNamespace on: %s (or set sandboxUserNamespace auto)", why);
    if (rt->userns)
        dg_log(DG_LOG_INFO, "oci", "sandboxes in user namespaces: uid 0 is host uid %u (to %u)",
               rt->id_base, rt->id_base + WK_USERNS_SIZE - 1);
    else if (want)
        dg_log(DG_LOG_WARN, "oci",
               "sandboxes without a user namespace (their uid 0 is the host's root, confined by "
               "capabilities and seccomp): %s",
               why);
    struct wk_fw_opts fw = {.bridge = c->oci.bridge,
                            .prefix = c->instance->veth_prefix,
                            .egress = c->oci.egress ? c->oci.egress : "none",
                            .allow = c->oci.egress_allow};
    snprintf(rt->fw_table, sizeof(rt->fw_table), "dirigent_%s", c->instance->hex);
    fw.table = rt->fw_table;
    char *path = dg_xasprintf("%s/nftables.conf", c->run_dir);
    int rc = wk_firewall_install(&fw, path, err);
    free(path);
    if (rc < 0) {
        rt->fw_table[0] = '\0';
        return -1;
    }
    dg_log(DG_LOG_INFO, "oci", "nftables tables inet/bridge %s: sandboxes reach %s%s%s",
           rt->fw_table, strcmp(fw.egress, "internet") == 0 ? "public addresses" : "nothing",
           fw.allow && fw.allow->n ? " and sandboxEgressAllow" : "",
           ", never this host nor each other");
    return 0;
}

/* The confinement keys checked before anything is made on the host: a bad one changes
 * nothing. */
static int confine_check(const struct wk_runtime_conf *c, struct dg_err *err)
{
    for (size_t i = 0; c->oci.caps && i < c->oci.caps->n; i++)
        if (!wk_cap_known(c->oci.caps->v[i]))
            return dg_err_set(err, DG_E_INVAL,
                              "sandboxCapabilities '%s': not a capability name (e.g. CAP_KILL, "
                              "see capabilities(7))",
                              c->oci.caps->v[i]);
    struct wk_fw_opts fw = {.table = "check",
                            .bridge = c->oci.bridge,
                            .prefix = c->instance->veth_prefix,
                            .egress = c->oci.egress ? c->oci.egress : "none",
                            .allow = c->oci.egress_allow};
    char *rules = dg_xcalloc(1, 65536);
    int rc = wk_firewall_ruleset(&fw, rules, 65536, err);
    free(rules);
    return rc;
}

static int oci_init(const struct wk_runtime_conf *c, void **state, struct dg_err *err)
{
    if (geteuid() != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "runtime 'oci' needs root (mounts, namespaces, cgroups): run as root "
                          "or use runtime 'process'");
    if (confine_check(c, err) < 0)
        return -1;
    char path[4096];
    char *which[] = {"sh", "-c", "command -v \"$0\"", (char *)c->oci.runtime, NULL};
    if (wk_run_sync(which, path, sizeof(path)) != 0)
        return dg_err_set(err, DG_E_INVAL, "ociRuntime '%s' is not installed (apt-get install %s)",
                          c->oci.runtime, c->oci.runtime);
    if (strcmp(c->oci.runtime, "crun") == 0 && cgroup_hugetlb_step(err) < 0)
        return -1;
    /* containers started detached are reparented to the worker: it reaps them (on_pidfd) */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
        return dg_err_set(err, DG_E_INVAL, "prctl(PR_SET_CHILD_SUBREAPER): %m");
    struct oci_rt *rt = dg_xcalloc(1, sizeof(*rt));
    *state = rt;
    rt->conf = c;
    rt->runtime = dg_xstrdup(c->oci.runtime);
    rt->runsc = strcmp(c->oci.runtime, "runsc") == 0;
    rt->state_root = dg_xasprintf("%s/%s", c->run_dir, c->oci.runtime);
    rt->sb_dir = dg_xasprintf("%s/sandboxes", c->run_dir);
    struct wk_instance *in = c->instance;
    rt->cgroup = dg_xasprintf("dirigent/%s", in->label);
    char *netns_dir = dg_xasprintf("%s/netns", c->run_dir);
    /* host-side veths are named after the instance (dv<id><N>): workers on one host never
     * touch each other's, whatever their bridges */
    struct wk_netpool_opts nopts = {.bridge = c->oci.bridge,
                                    .own_bridge = in->bridge_derived,
                                    .subnet = rt->subnet,
                                    .dir = netns_dir,
                                    .prefix = in->veth_prefix,
                                    .target = (unsigned)c->oci.netns_pool,
                                    .quarantine_ms = (uint64_t)c->oci.address_quarantine_ms};
    int rc = -1;
    /* the lock before anything else: the clean-up below removes what a dead predecessor on
     * this instance left, never what a live worker runs */
    if (dg_mkdir_p(c->run_dir, 0700, err) < 0 || wk_instance_lock(in, err) < 0)
        goto out;
    if (pick_subnet(rt, c, err) < 0)
        goto out;
    dg_log_always("oci",
                  "instance %s: runDir %s, bridge %s, veths %s<N>, sandboxSubnet %s, cgroup %s "
                  "(from %s)",
                  in->hex, c->run_dir, c->oci.bridge, in->veth_prefix, rt->subnet, rt->cgroup,
                  in->key);
    cleanup_previous_run(rt, &nopts);
    if (dg_mkdir_p(rt->sb_dir, 0700, err) < 0 || dg_mkdir_p(rt->state_root, 0700, err) < 0)
        goto out;
    if (mount("tmpfs", rt->sb_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") == -1) {
        dg_err_set(err, DG_E_INVAL, "the sandboxes' tmpfs on %s: %m", rt->sb_dir);
        goto out;
    }
    if (confine_init(rt, err) < 0)
        goto out;
    char *cache = dg_xasprintf("%s/images", c->data_dir);
    struct wk_images_opts iopts = {.insecure = c->oci.insecure_registries,
                                   .roots = c->oci.image_roots,
                                   .registries = c->oci.image_registries,
                                   .pull_timeout_ms = c->oci.pull_timeout_ms};
    rt->images = wk_images_new(c->loop, cache, &iopts, err);
    free(cache);
    if (!rt->images)
        goto out;
    rt->net = wk_netpool_new(c->loop, &nopts, err);
    if (!rt->net)
        goto out;
    rt->tmpl = config_template(rt);
    /* the minimal init: a static binary (it runs in any image), else none, said once */
    if (c->oci.init && c->oci.init[0]) {
        if (access(c->oci.init, X_OK) == 0 && !rt->runsc)
            rt->init = c->oci.init;
        else
            dg_log(DG_LOG_WARN, "oci",
                   "sandboxInit %s: %s: entrypoints run as their sandbox's PID 1 (one that "
                   "ignores SIGTERM there waits killGrace on every delete)",
                   c->oci.init,
                   rt->runsc ? "not with runsc (its own init)"
                             : "not executable (apt-get install tini, or set sandboxInit)");
    }
    if (!rt->runsc) /* runsc's network restore and wrapper are not made for create/start */
        rt->pool = wk_prewarm_new(c->loop, in->label, sizeof(struct oci_sb), &pool_ops, rt);
    uv_timer_init(c->loop, &rt->reaper);
    rt->reaper.data = rt;
    uv_timer_start(&rt->reaper, on_reaper, 1000, 1000);
    uv_unref((uv_handle_t *)&rt->reaper);
    for (size_t i = 0; c->oci.prefetch && i < c->oci.prefetch->n; i++)
        wk_image_get(rt->images, c->oci.prefetch->v[i], prefetched, NULL);
    dg_log(DG_LOG_INFO, "oci", "%s, sandboxes on %s (bridge %s), images in %s/images",
           c->oci.runtime, rt->subnet, c->oci.bridge, c->data_dir);
    rc = 0;
out:
    /* a start that fails after the tables went in takes them out again (main does not call
     * free after a failed init); only tables this start installed (never a live worker's:
     * the lock comes first) */
    if (rc < 0 && rt->fw_table[0]) {
        wk_firewall_remove(rt->fw_table);
        rt->fw_table[0] = '\0';
    }
    if (rc < 0 && rt->sb_dir && umount2(rt->sb_dir, MNT_DETACH) == 0)
        rmdir(rt->sb_dir);
    free(netns_dir);
    return rc;
}

/* The end of a clean stop: every sandbox is gone and the pool has removed its namespaces,
 * veths and the bridge. What is left of the instance on the host goes now, while the loop
 * still runs (a signal then cannot cut it short): the cgroups, the run directory (only empty
 * directories: anything unexpected stays to be seen), the lock last. */
static void host_cleanup(struct oci_rt *rt)
{
    const struct wk_runtime_conf *c = rt->conf;
    cgroups_remove(rt->cgroup);
    /* the sandboxes' tmpfs: every sandbox's directory on it went with its teardown */
    if (umount2(rt->sb_dir, MNT_DETACH) == -1 && errno != EINVAL && errno != ENOENT)
        dg_log(DG_LOG_WARN, "oci", "umount %s: %m", rt->sb_dir);
    static const char *const dirs[] = {"sandboxes", "netns", "process", NULL};
    char p[4096];
    for (size_t i = 0; dirs[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", c->run_dir, dirs[i]);
        rmdir(p);
    }
    /* the runtime's root: its per-container state is gone with `delete` */
    char *rmroot[] = {"rm", "-rf", "--one-file-system", rt->state_root, NULL};
    if (!mounted_at(rt->state_root))
        wk_run_sync(rmroot, NULL, 0);
    if (rt->fw_table[0] && wk_firewall_remove(rt->fw_table) < 0)
        dg_log(DG_LOG_WARN, "oci", "nft could not delete the tables %s", rt->fw_table);
    rt->fw_table[0] = '\0';
    wk_instance_unlock(c->instance);
    if (rmdir(c->run_dir) == -1 && errno != ENOENT)
        dg_log(DG_LOG_WARN, "oci", "stopped; %s remains: %m", c->run_dir);
    else
        dg_log(DG_LOG_INFO, "oci", "stopped: bridge %s, cgroup %s and %s removed", c->oci.bridge,
               rt->cgroup, c->run_dir);
}

static void net_closed(void *ud)
{
    struct oci_rt *rt = ud;
    rt->net = NULL;
    host_cleanup(rt);
}

/* A second signal during shutdown: the sandboxes still running get SIGKILL at once instead
 * of at the end of their grace period. */
static void oci_hurry(void *state, struct wk_sandbox *sb)
{
    struct oci_sb *o = WK_SB_EXT(sb);
    if (o->pid > 0 && o->stage == ST_TEARDOWN)
        pidfd_signal(o, SIGKILL);
}

static void oci_deinit(void *state)
{
    struct oci_rt *rt = state;
    if (!rt)
        return;
    rt->closing = true;
    wk_prewarm_stop(rt->pool); /* its sandboxes go like the others: counted in rt->n */
    uv_timer_stop(&rt->reaper);
    uv_close((uv_handle_t *)&rt->reaper, NULL);
    wk_images_close(rt->images);
    if (rt->net && rt->n == 0) /* else the last sandbox's teardown closes it */
        wk_netpool_close(rt->net, true, net_closed, rt);
}

static void oci_free(void *state)
{
    struct oci_rt *rt = state;
    if (!rt)
        return;
    /* the cgroup parent this worker made (crun removes each sandbox's own), if the stop did
     * not get to it */
    if (rt->cgroup)
        cgroups_remove(rt->cgroup);
    /* the firewall goes with the worker; a start after a crash replaces it anyway */
    if (rt->fw_table[0])
        wk_firewall_remove(rt->fw_table);
    /* crun's middle processes still exiting are ours to reap (the subreaper), not zombies left
     * to init: the loop has stopped, so wait for them here, at most 1 s */
    for (int i = 0; i < 100; i++) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r == -1 && errno != EINTR)
            break; /* no child left */
        if (r == 0)
            usleep(10000);
    }
    wk_images_free(rt->images);
    wk_prewarm_free(rt->pool);
    json_decref(rt->tmpl);
    free(rt->runtime);
    free(rt->state_root);
    free(rt->sb_dir);
    free(rt->cgroup);
    free(rt);
}

/* The subnet its sandboxes' addresses lie in: the CP adopts no endpoint outside it. */
static const char *oci_sandbox_subnet(void *state)
{
    return ((struct oci_rt *)state)->subnet;
}

/* A create naming an image this worker may not pull is a 400 before anything is made. */
static int oci_validate(void *state, const struct dg_wire_create *spec, struct dg_err *err)
{
    struct oci_rt *rt = state;
    return wk_images_check(rt->images, spec->image ? spec->image : "", err);
}

static struct wk_prewarm *oci_prewarm(void *state)
{
    return ((struct oci_rt *)state)->pool;
}

const struct wk_runtime wk_runtime_oci = {
    .prewarm = oci_prewarm,
    .sandbox_subnet = oci_sandbox_subnet,
    .name = "oci",
    .sb_size = sizeof(struct oci_sb),
    .uses_data_dir = true,
    .init = oci_init,
    .validate = oci_validate,
    .create = oci_create,
    .destroy = oci_destroy,
    .hurry = oci_hurry,
    .deinit = oci_deinit,
    .free = oci_free,
};
