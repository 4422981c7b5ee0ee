/*
 * test_netpool.c: the network namespace pool against the real kernel. Root
 * only: otherwise the whole file is reported skipped. The pool fills
 * to its target; an acquired namespace is a bind-mounted nsfs file whose
 * address the host reaches over TCP (a listener opened inside through setns);
 * two namespaces differ; release and reacquire; an acquire waiting for the
 * refill, and a cancelled one; subnet exhaustion; close removes every
 * namespace and veth (counted in /sys/class/net and /proc/self/mountinfo);
 * cleanup after a crash (a child that fills a pool and exits without closing
 * it) leaves nothing; the figures (creation, acquire, teardown); a failed
 * creation (the bridge deleted under the pool) reaches the waiting acquire and
 * leaves nothing; and at the end the test bridges are removed through
 * close(remove_bridge) (the last pool re-creates the deleted one). The group
 * teardown cleans up after a failed test too.
 *
 * Only addresses inside the test namespaces and the test bridges are used.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/link.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "netpool.h"

#define T_ROOT   "/run/dirigent-test-netpool"
#define T_DIR    T_ROOT "/netns"
#define T_BRIDGE "dgtbr0"
#define T_PREFIX "dgt"
#define T_TARGET 4
/* a second pool on its own bridge and a /29 (5 sandbox addresses) for exhaustion */
#define T_DIR2    T_ROOT "/netns2"
#define T_BRIDGE2 "dgubr0"
#define T_PREFIX2 "dgu"

static const struct wk_netpool_opts opts = {
    .bridge = T_BRIDGE,
    .subnet = "100.127.0.0/24",
    .dir = T_DIR,
    .prefix = T_PREFIX,
    .target = T_TARGET,
};
static const struct wk_netpool_opts opts2 = {
    .bridge = T_BRIDGE2,
    .subnet = "100.127.1.0/29",
    .dir = T_DIR2,
    .prefix = T_PREFIX2,
    .target = 2,
};

static uv_loop_t loop;
static struct wk_netpool *pool;
static int links_before;
static struct wk_netns *held[64];
static unsigned nheld;

/* ---- helpers ---- */

static void tick(uv_timer_t *t)
{
}

/* Run the loop until pred(arg) or timeout_ms; returns pred's last answer. */
static bool run_until(bool (*pred)(void *), void *arg, unsigned timeout_ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick, 1, 1);
    uint64_t end = dg_now_ms() + timeout_ms;
    bool ok;
    while (!(ok = pred(arg)) && dg_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

struct ready_want {
    struct wk_netpool *p;
    unsigned n;
};
static bool pred_ready(void *arg)
{
    struct ready_want *w = arg;
    return wk_netpool_ready(w->p) >= w->n;
}
static bool pred_flag(void *arg)
{
    return *(bool *)arg;
}

/* Links named prefix + digits, as in /sys/class/net. */
static int count_links(const char *prefix)
{
    DIR *d = opendir("/sys/class/net");
    if (!d)
        return -1;
    int n = 0;
    size_t pl = strlen(prefix);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, prefix, pl) != 0 || !de->d_name[pl])
            continue;
        bool digits = true;
        for (const char *s = de->d_name + pl; *s; s++)
            digits = digits && *s >= '0' && *s <= '9';
        n += digits;
    }
    closedir(d);
    return n;
}

static int count_ns_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "ns-", 3) == 0;
    closedir(d);
    return n;
}

/* Mounts at dir or below it. */
static int count_mounts(const char *dir)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    size_t dl = strlen(dir);
    while (fgets(line, sizeof(line), f)) {
        char mp[4096];
        /* id parent major:minor root mountpoint ... */
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strncmp(mp, dir, dl) == 0 &&
            (mp[dl] == '/' || mp[dl] == '\0'))
            n++;
    }
    fclose(f);
    return n;
}

static bool is_nsfs(const char *path)
{
    struct statfs sf;
    return statfs(path, &sf) == 0 && sf.f_type == NSFS_MAGIC;
}

static void delete_link(const char *name)
{
    struct nl_sock *sk = nl_socket_alloc();
    if (!sk)
        return;
    if (nl_connect(sk, NETLINK_ROUTE) == 0) {
        struct rtnl_link *l = rtnl_link_alloc();
        rtnl_link_set_name(l, name);
        rtnl_link_delete(sk, l);
        rtnl_link_put(l);
    }
    nl_socket_free(sk);
}

/* Run inside the namespace at nspath: a TCP listener on ip:0 (returned, *port set), and
 * whether the namespace's main table has a default route via `gw`. */
static int listen_inside(const char *nspath, const char *ip, const char *gw, int *port,
                         bool *has_default)
{
    int host = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(nspath, O_RDONLY | O_CLOEXEC);
    if (host == -1 || target == -1 || setns(target, CLONE_NEWNET) == -1) {
        fprintf(stderr, "# entering %s: %s\n", nspath, strerror(errno));
        abort();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    socklen_t sl = sizeof(sa);
    if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(fd, 8) == -1 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) == -1) {
        fprintf(stderr, "# listening on %s in %s: %s\n", ip, nspath, strerror(errno));
        if (fd != -1)
            close(fd);
        fd = -1;
    }
    *port = ntohs(sa.sin_port);
    /* /proc/net/route: Iface Destination Gateway ... in hex, network byte order */
    *has_default = false;
    uint32_t want;
    inet_pton(AF_INET, gw, &want);
    FILE *f = fopen("/proc/thread-self/net/route", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        char ifn[32];
        unsigned dst, via;
        if (sscanf(line, "%31s %x %x", ifn, &dst, &via) == 3 && dst == 0 && via == want &&
            strcmp(ifn, "eth0") == 0)
            *has_default = true;
    }
    if (f)
        fclose(f);
    if (setns(host, CLONE_NEWNET) == -1)
        abort();
    close(host);
    close(target);
    return fd;
}

/* Connect from the host to ip:port; -1 with errno on failure. */
static int connect_to(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* A listener inside ns, a connection from the host, one message each way. */
static void check_tcp(const struct wk_netns *ns)
{
    int port;
    bool has_default;
    int lfd = listen_inside(ns->path, ns->ip, "100.127.0.1", &port, &has_default);
    assert_true(lfd >= 0);
    assert_true(has_default);
    int c = connect_to(ns->ip, port);
    if (c == -1)
        fprintf(stderr, "# connect %s:%d: %s\n", ns->ip, port, strerror(errno));
    assert_true(c >= 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int a = accept(lfd, NULL, NULL);
    assert_true(a >= 0);
    setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[8] = {0};
    assert_int_equal(write(c, "ping", 4), 4);
    assert_int_equal(read(a, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(write(a, "pong", 4), 4);
    assert_int_equal(read(c, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "pong", 4);
    close(a);
    close(c);
    close(lfd);
}

struct got {
    bool called;
    struct wk_netns *ns;
    struct dg_err err;
};
static void on_ns(void *ud, struct wk_netns *ns, const struct dg_err *err)
{
    struct got *g = ud;
    g->called = true;
    g->ns = ns;
    if (err)
        g->err = *err;
    else
        dg_err_clear(&g->err);
}

/* Acquire one that is ready: the callback runs before acquire returns. */
static struct wk_netns *acquire_now(struct wk_netpool *p)
{
    struct got g = {0};
    struct wk_netns_wait *w = wk_netpool_acquire(p, on_ns, &g);
    assert_null(w);
    assert_true(g.called);
    assert_non_null(g.ns);
    return g.ns;
}

static void on_done(void *ud)
{
    *(bool *)ud = true;
}

/* Close p and wait; returns the milliseconds it took. */
static double close_and_wait(struct wk_netpool *p, bool remove_bridge)
{
    bool done = false;
    uint64_t t0 = dg_now_us();
    wk_netpool_close(p, remove_bridge, on_done, &done);
    assert_true(run_until(pred_flag, &done, 30000));
    return (double)(dg_now_us() - t0) / 1000.0;
}

/* The gateway's entry in ns's ARP table (`ip neigh`, run inside through nsenter) is
 * PERMANENT and holds the bridge's MAC: sandboxes never learn it, so they take no place in the
 * kernel's one ARP table (issue 16). */
static void check_gateway_neigh(const struct wk_netns *ns)
{
    char mac[32] = "", cmd[512], out[512] = "";
    FILE *f = fopen("/sys/class/net/" T_BRIDGE "/address", "r");
    assert_non_null(f);
    assert_non_null(fgets(mac, sizeof(mac), f));
    fclose(f);
    mac[strcspn(mac, "\n")] = '\0';
    snprintf(cmd, sizeof(cmd), "nsenter --net=%s ip -4 neigh show 100.127.0.1 dev eth0", ns->path);
    f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    pclose(f);
    if (!strstr(out, "PERMANENT") || !strstr(out, mac))
        fprintf(stderr, "# gateway entry in %s: '%s' (bridge MAC %s)\n", ns->path, out, mac);
    assert_non_null(strstr(out, "PERMANENT"));
    assert_non_null(strstr(out, mac));
}

/* ---- tests ---- */

static void test_bad_opts(void **state)
{
    struct dg_err err;
    struct wk_netpool_opts o = opts;
    o.bridge = "dgt0"; /* prefix + digits: would collide with the veth of index 0 */
    assert_null(wk_netpool_new(&loop, &o, &err));
    assert_non_null(strstr(err.msg, "collide"));
    o = opts;
    o.subnet = "100.127.0.5/24";
    assert_null(wk_netpool_new(&loop, &o, &err));
    assert_non_null(strstr(err.msg, "expected 100.127.0.0/24"));
    o = opts;
    o.subnet = "100.127.0.0";
    assert_null(wk_netpool_new(&loop, &o, &err));
    assert_non_null(strstr(err.msg, "CIDR"));
    o = opts;
    o.prefix = "muchtoolong1";
    assert_int_equal(wk_netpool_cleanup(&o, &err), -1);
    assert_non_null(strstr(err.msg, "prefix"));
    o = opts;
    o.target = 300; /* a /24 has 253 sandbox addresses */
    assert_null(wk_netpool_new(&loop, &o, &err));
    assert_non_null(strstr(err.msg, "253"));
}

static void test_fill(void **state)
{
    struct dg_err err;
    int removed = wk_netpool_cleanup(&opts, &err); /* a previous failed run */
    assert_true(removed >= 0);
    links_before = count_links(T_PREFIX);
    assert_int_equal(links_before, 0);
    uint64_t t0 = dg_now_us();
    pool = wk_netpool_new(&loop, &opts, &err);
    if (!pool)
        fail_msg("%s", err.msg);
    struct ready_want rw = {pool, T_TARGET};
    assert_true(run_until(pred_ready, &rw, 5000));
    printf("# fill: %u namespaces ready %.2f ms after new()\n", T_TARGET,
           (double)(dg_now_us() - t0) / 1000.0);
    assert_int_equal(wk_netpool_ready(pool), T_TARGET);
    assert_int_equal(count_links(T_PREFIX), T_TARGET);
    assert_int_equal(count_ns_files(T_DIR), T_TARGET);
    assert_int_equal(count_mounts(T_DIR), T_TARGET);
    assert_true(if_nametoindex(T_BRIDGE) > 0);
}

static void test_acquire_tcp(void **state)
{
    struct wk_netns *ns = acquire_now(pool);
    held[nheld++] = ns;
    struct stat st;
    assert_int_equal(stat(ns->path, &st), 0);
    assert_true(is_nsfs(ns->path));
    assert_int_equal(strncmp(ns->path, T_DIR "/ns-", strlen(T_DIR "/ns-")), 0);
    assert_int_equal(strncmp(ns->ip, "100.127.0.", 10), 0);
    assert_string_not_equal(ns->ip, "100.127.0.1");
    assert_int_equal(strncmp(ns->host_if, T_PREFIX, strlen(T_PREFIX)), 0);
    assert_true(if_nametoindex(ns->host_if) > 0);
    check_tcp(ns);
    check_gateway_neigh(ns);
}

static void test_two_distinct(void **state)
{
    struct wk_netns *a = held[0];
    struct wk_netns *b = acquire_now(pool);
    held[nheld++] = b;
    assert_string_not_equal(a->ip, b->ip);
    assert_string_not_equal(a->path, b->path);
    assert_string_not_equal(a->host_if, b->host_if);
    assert_int_not_equal(a->index, b->index);
    check_tcp(b);
    /* a listener in a is not in b: b's address refuses that port */
    int port;
    bool dflt;
    int lfd = listen_inside(a->path, a->ip, "100.127.0.1", &port, &dflt);
    assert_true(lfd >= 0);
    int c = connect_to(b->ip, port);
    assert_int_equal(c, -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(lfd);
}

static void test_release_reacquire(void **state)
{
    struct wk_netns *a = held[0];
    unsigned index = a->index;
    char ip[16];
    snprintf(ip, sizeof(ip), "%s", a->ip);
    unsigned before = wk_netpool_ready(pool);
    wk_netpool_release(pool, a);
    assert_int_equal(wk_netpool_ready(pool), before + 1);
    /* the namespaces that never served go first: a released address is reused last (issue 14
     * finding 9: a data plane that still lists the old sandbox must not reach a new one) */
    struct wk_netns *fresh[64];
    for (unsigned i = 0; i < before; i++) {
        fresh[i] = acquire_now(pool);
        assert_int_not_equal(fresh[i]->index, index);
    }
    struct wk_netns *again = acquire_now(pool);
    held[0] = again;
    assert_int_equal(again->index, index);
    assert_string_equal(again->ip, ip);
    check_tcp(again);
    for (unsigned i = 0; i < before; i++)
        wk_netpool_release(pool, fresh[i]);
}

static void test_wait_and_cancel(void **state)
{
    struct ready_want rw = {pool, T_TARGET};
    assert_true(run_until(pred_ready, &rw, 5000));
    while (wk_netpool_ready(pool) > 0)
        held[nheld++] = acquire_now(pool);
    /* none ready: the callback comes from the refill */
    struct got g = {0};
    struct wk_netns_wait *w = wk_netpool_acquire(pool, on_ns, &g);
    assert_non_null(w);
    assert_false(g.called);
    assert_true(run_until(pred_flag, &g.called, 5000));
    assert_non_null(g.ns);
    held[nheld++] = g.ns;
    check_tcp(g.ns);
    /* drain again, then a cancelled acquire never calls back */
    assert_true(run_until(pred_ready, &rw, 5000));
    while (wk_netpool_ready(pool) > 0)
        held[nheld++] = acquire_now(pool);
    struct got g2 = {0};
    w = wk_netpool_acquire(pool, on_ns, &g2);
    assert_non_null(w);
    wk_netpool_acquire_cancel(w);
    assert_true(run_until(pred_ready, &rw, 5000));
    assert_false(g2.called);
    /* every address distinct */
    for (unsigned i = 0; i < nheld; i++)
        for (unsigned j = i + 1; j < nheld; j++)
            assert_string_not_equal(held[i]->ip, held[j]->ip);
    for (unsigned i = 0; i < nheld; i++)
        wk_netpool_release(pool, held[i]);
}

static void test_close(void **state)
{
    unsigned total = wk_netpool_ready(pool);
    assert_int_equal(count_links(T_PREFIX), (int)total);
    assert_int_equal(count_ns_files(T_DIR), (int)total);
    double ms = close_and_wait(pool, false);
    pool = NULL;
    nheld = 0;
    printf("# close: %u namespaces torn down in %.1f ms (%.2f ms each)\n", total, ms, ms / total);
    assert_int_equal(count_links(T_PREFIX), links_before);
    assert_int_equal(count_ns_files(T_DIR), 0);
    assert_int_equal(count_mounts(T_DIR), 0);
    assert_true(if_nametoindex(T_BRIDGE) > 0); /* the bridge stays */
}

static void test_exhausted(void **state)
{
    struct dg_err err;
    assert_true(wk_netpool_cleanup(&opts2, &err) >= 0);
    struct wk_netpool *p = wk_netpool_new(&loop, &opts2, &err);
    if (!p)
        fail_msg("%s", err.msg);
    struct wk_netns *got[5];
    for (int i = 0; i < 5; i++) { /* a /29: .1 the gateway, .2 to .6 the sandboxes */
        struct got g = {0};
        wk_netpool_acquire(p, on_ns, &g);
        assert_true(run_until(pred_flag, &g.called, 5000));
        if (!g.ns)
            fail_msg("%s", g.err.msg);
        got[i] = g.ns;
    }
    struct got g = {0};
    assert_null(wk_netpool_acquire(p, on_ns, &g));
    assert_true(g.called);
    assert_null(g.ns);
    assert_int_equal(g.err.code, DG_E_LIMIT);
    assert_non_null(strstr(g.err.msg, "exhausted"));
    for (int i = 0; i < 5; i++) { /* .2 to .6, each once */
        struct in_addr a;
        assert_int_equal(inet_pton(AF_INET, got[i]->ip, &a), 1);
        unsigned last = ntohl(a.s_addr) & 0xff;
        assert_true(last >= 2 && last <= 6);
        for (int k = 0; k < i; k++)
            assert_string_not_equal(got[i]->ip, got[k]->ip);
    }
    /* a release makes one available again, with its address */
    char ip[16];
    snprintf(ip, sizeof(ip), "%s", got[2]->ip);
    wk_netpool_release(p, got[2]);
    struct wk_netns *again = acquire_now(p);
    assert_ptr_equal(again, got[2]);
    assert_string_equal(again->ip, ip);
    struct got g3 = {0};
    assert_null(wk_netpool_acquire(p, on_ns, &g3)); /* exhausted again: the error at once */
    assert_true(g3.called);
    assert_int_equal(g3.err.code, DG_E_LIMIT);
    close_and_wait(p, true);
    assert_int_equal(count_links(T_PREFIX2), 0);
    assert_int_equal(count_ns_files(T_DIR2), 0);
    assert_int_equal(if_nametoindex(T_BRIDGE2), 0);
}

struct since {
    uint64_t t0, ms;
};
static bool pred_since(void *arg)
{
    struct since *w = arg;
    return uv_now(&loop) - w->t0 >= w->ms;
}

/* A released namespace rests for quarantine_ms before its address serves another sandbox; the
 * least recently released comes back first. */
static void test_quarantine(void **state)
{
    struct dg_err err;
    assert_true(wk_netpool_cleanup(&opts2, &err) >= 0);
    struct wk_netpool_opts o = opts2;
    o.quarantine_ms = 300;
    struct wk_netpool *p = wk_netpool_new(&loop, &o, &err);
    if (!p)
        fail_msg("%s", err.msg);
    struct wk_netns *got[5];
    for (int i = 0; i < 5; i++) {
        struct got g = {0};
        wk_netpool_acquire(p, on_ns, &g);
        assert_true(run_until(pred_flag, &g.called, 5000));
        if (!g.ns)
            fail_msg("%s", g.err.msg);
        got[i] = g.ns;
    }
    uv_update_time(&loop);
    struct since s = {uv_now(&loop), o.quarantine_ms};
    wk_netpool_release(p, got[3]);
    wk_netpool_release(p, got[1]);
    /* resting: not ready, and with every other address taken an acquire says why */
    assert_int_equal(wk_netpool_ready(p), 0);
    struct got g = {0};
    assert_null(wk_netpool_acquire(p, on_ns, &g));
    assert_int_equal(g.err.code, DG_E_LIMIT);
    assert_non_null(strstr(g.err.msg, "2 resting after their sandbox ended"));
    /* after the quarantine: back, the first released first */
    assert_true(run_until(pred_since, &s, 5000));
    assert_ptr_equal(acquire_now(p), got[3]);
    assert_ptr_equal(acquire_now(p), got[1]);
    close_and_wait(p, true);
    assert_int_equal(count_links(T_PREFIX2), 0);
}

static void test_close_fails_waiters(void **state)
{
    struct dg_err err;
    struct wk_netpool_opts o = opts;
    o.target = 0; /* nothing made ahead: the acquire waits */
    struct wk_netpool *p = wk_netpool_new(&loop, &o, &err);
    if (!p)
        fail_msg("%s", err.msg);
    struct got g = {0};
    assert_non_null(wk_netpool_acquire(p, on_ns, &g));
    bool done = false;
    wk_netpool_close(p, false, on_done, &done);
    assert_true(g.called); /* before close returns */
    assert_null(g.ns);
    assert_int_equal(g.err.code, DG_E_CLOSED);
    assert_true(run_until(pred_flag, &done, 10000));
    assert_int_equal(count_links(T_PREFIX), 0);
    assert_int_equal(count_ns_files(T_DIR), 0);
}

/* A child fills a pool and exits without closing it (a crash); cleanup removes it all. */
static void test_crash_cleanup(void **state)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uv_loop_t l;
        struct dg_err err;
        uv_loop_init(&l);
        struct wk_netpool *p = wk_netpool_new(&l, &opts, &err);
        if (!p)
            _exit(2);
        uint64_t end = dg_now_ms() + 5000;
        while (wk_netpool_ready(p) < T_TARGET && dg_now_ms() < end)
            uv_run(&l, UV_RUN_ONCE);
        _exit(wk_netpool_ready(p) == T_TARGET ? 0 : 3);
    }
    int status = 0;
    uint64_t end = dg_now_ms() + 10000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (dg_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the crashing child did not finish");
        }
        usleep(1000);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(count_links(T_PREFIX), T_TARGET);
    assert_int_equal(count_ns_files(T_DIR), T_TARGET);
    assert_int_equal(count_mounts(T_DIR), T_TARGET);
    struct dg_err err;
    uint64_t t0 = dg_now_us();
    int removed = wk_netpool_cleanup(&opts, &err);
    if (removed < 0)
        fail_msg("%s", err.msg);
    printf("# cleanup: %d namespaces removed in %.1f ms\n", removed,
           (double)(dg_now_us() - t0) / 1000.0);
    assert_int_equal(removed, T_TARGET);
    assert_int_equal(count_links(T_PREFIX), 0);
    assert_int_equal(count_ns_files(T_DIR), 0);
    assert_int_equal(count_mounts(T_DIR), 0);
    assert_int_equal(wk_netpool_cleanup(&opts, &err), 0); /* nothing left */
}

/* The figures: creation time (average over a fill of 32), acquire latency when ready,
 * teardown per namespace. */
static void test_measure(void **state)
{
    enum { N = 32, ROUNDS = 10000 };
    struct dg_err err;
    struct wk_netpool_opts o = opts;
    o.target = N;
    uint64_t t0 = dg_now_us();
    struct wk_netpool *p = wk_netpool_new(&loop, &o, &err);
    if (!p)
        fail_msg("%s", err.msg);
    uint64_t t_new = dg_now_us() - t0;
    struct ready_want rw = {p, N};
    assert_true(run_until(pred_ready, &rw, 10000));
    uint64_t t_fill = dg_now_us() - t0;
    struct wk_netns *v[N];
    uint64_t sum = 0, max = 0, min = UINT64_MAX;
    for (int i = 0; i < N; i++) {
        v[i] = acquire_now(p);
        sum += v[i]->create_us;
        max = DG_MAX(max, v[i]->create_us);
        min = DG_MIN(min, v[i]->create_us);
    }
    for (int i = 0; i < N; i++)
        wk_netpool_release(p, v[i]);
    printf("# create: %d namespaces, %.3f ms each on average (min %.3f, max %.3f) on the "
           "thread pool; all ready %.1f ms after new() (new() itself %.2f ms)\n",
           N, (double)sum / N / 1000.0, (double)min / 1000.0, (double)max / 1000.0,
           (double)t_fill / 1000.0, (double)t_new / 1000.0);
    uint64_t t1 = dg_now_us();
    for (int i = 0; i < ROUNDS; i++) {
        struct wk_netns *ns = acquire_now(p);
        wk_netpool_release(p, ns);
    }
    printf("# acquire when ready: %.3f us per acquire+release (%d rounds)\n",
           (double)(dg_now_us() - t1) / ROUNDS, ROUNDS);
    check_tcp(v[0]);
    double ms = close_and_wait(p, false);
    printf("# teardown: %d namespaces in %.1f ms, %.2f ms each\n", N, ms, ms / N);
    assert_int_equal(count_links(T_PREFIX), 0);
    assert_int_equal(count_ns_files(T_DIR), 0);
    assert_int_equal(count_mounts(T_DIR), 0);
}

/* A creation that fails (the bridge vanished under the pool): the waiting acquire gets the
 * error, nothing of the half-made namespace stays, the pool still closes. */
static void test_creation_failure(void **state)
{
    struct dg_err err;
    struct wk_netpool_opts o = opts;
    o.target = 0;
    struct wk_netpool *p = wk_netpool_new(&loop, &o, &err);
    if (!p)
        fail_msg("%s", err.msg);
    delete_link(T_BRIDGE);
    assert_int_equal(if_nametoindex(T_BRIDGE), 0);
    dg_log_set_level(DG_LOG_OFF); /* the expected warning */
    struct got g = {0};
    assert_non_null(wk_netpool_acquire(p, on_ns, &g));
    assert_true(run_until(pred_flag, &g.called, 5000));
    dg_log_set_level(DG_LOG_WARN);
    assert_null(g.ns);
    assert_true(g.err.code < 0);
    printf("# the acquire's error: %s\n", g.err.msg);
    assert_non_null(strstr(g.err.msg, "veth " T_PREFIX "0"));
    assert_int_equal(count_links(T_PREFIX), 0);
    assert_int_equal(count_ns_files(T_DIR), 0);
    assert_int_equal(count_mounts(T_DIR), 0);
    close_and_wait(p, false);
}

/* Last: close(remove_bridge) right after new(), creations still queued or running. */
static void test_remove_bridge(void **state)
{
    struct dg_err err;
    struct wk_netpool *p = wk_netpool_new(&loop, &opts, &err);
    if (!p)
        fail_msg("%s", err.msg);
    close_and_wait(p, true);
    assert_int_equal(if_nametoindex(T_BRIDGE), 0);
    assert_int_equal(count_links(T_PREFIX), 0);
    assert_int_equal(count_ns_files(T_DIR), 0);
    assert_int_equal(count_mounts(T_DIR), 0);
}

static int group_setup(void **state)
{
    dg_log_init("test_netpool");
    dg_log_set_level(DG_LOG_WARN);
    uv_loop_init(&loop);
    return 0;
}

/* Whatever a failed test left: namespaces, veths, bridges, directories. */
static int group_teardown(void **state)
{
    struct dg_err err;
    if (wk_netpool_cleanup(&opts, &err) < 0)
        fprintf(stderr, "# teardown: %s\n", err.msg);
    if (wk_netpool_cleanup(&opts2, &err) < 0)
        fprintf(stderr, "# teardown: %s\n", err.msg);
    delete_link(T_BRIDGE);
    delete_link(T_BRIDGE2);
    rmdir(T_DIR);
    rmdir(T_DIR2);
    rmdir(T_ROOT);
    return 0;
}

int main(void)
{
    /* A skipped plan, not cmocka's skip(): cmocka 1.1 prints "not ok N # SKIP", which Meson's
     * TAP parser counts as a failure. */
    if (geteuid() != 0) {
        printf("1..0 # SKIP not root: network namespaces, veths and mounts need root\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_opts),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_acquire_tcp),
        cmocka_unit_test(test_two_distinct),
        cmocka_unit_test(test_release_reacquire),
        cmocka_unit_test(test_wait_and_cancel),
        cmocka_unit_test(test_close),
        cmocka_unit_test(test_exhausted),
        cmocka_unit_test(test_quarantine),
        cmocka_unit_test(test_close_fails_waiters),
        cmocka_unit_test(test_crash_cleanup),
        cmocka_unit_test(test_measure),
        cmocka_unit_test(test_creation_failure),
        cmocka_unit_test(test_remove_bridge),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
