/*
 * netpool.c: the pool of network namespaces of netpool.h.
 *
 * Loop side: a ready list (fresh namespaces at its head, released ones at its
 * tail: an address that served a sandbox is reused as late as possible), a
 * quarantine FIFO of released namespaces (back to the ready tail once
 * quarantine_ms passed: docs/security.md "Endpoints and address reuse"), a
 * FIFO of pending acquires, a bitmap of the indexes in use (index i
 * has address gateway + 1 + i and names <prefix>i, ns-i) and the creation jobs
 * in flight. The refill keeps target + pending acquires namespaces ready or in
 * creation, NP_MAX_CREATING (1) at a time: the kernel serializes creations
 * anyway, and the libuv thread pool (4 threads by default) is shared. A
 * failed creation is logged, reported to the acquires no other creation in
 * flight will serve, and the refill backs off (50 ms doubling to 2 s).
 *
 * Thread side (np_create, np_teardown): everything that blocks. A thread-pool
 * thread enters a namespace only inside np_enter_new and always leaves it
 * before returning: if it could not, every later job on that thread (DNS
 * lookups included) would run in a sandbox's namespace, so that is fatal. The
 * pool's configuration (struct np_conf, the bridge's ifindex, the host
 * namespace fd) is written before the first job and only read afterwards.
 *
 * Creating one (about 1 ms): an empty file dir/ns-i; unshare(CLONE_NEWNET);
 * bind-mount the thread's namespace onto it, open a netlink socket in it (a
 * netlink socket stays bound to the namespace it was created in) and bring lo
 * up; back to the host namespace; a veth pair <prefix>i (master: the bridge)
 * with its peer eth0 created directly in the namespace; the host side up in a
 * second request (libnl refuses IFF_UP with the add); then through the socket
 * inside: eth0's address, eth0 up, the default route via the gateway, and when the bridge's
 * MAC is fixed (ours always is) a permanent neighbour entry for the gateway. The kernel's
 * ARP table is one for all namespaces, and past gc_thresh3 (1024) entries it refuses new
 * ones: with ~500 sandboxes, one gateway entry in each plus the host's entry for each
 * sandbox filled it, and readiness probes timed out (issue 16, bench/oci_floor.sh).
 * Permanent entries are not counted, and the first reply needs no ARP round trip.
 *
 * Tearing down (close, or a failed creation): umount(MNT_DETACH) and unlink
 * of every namespace file first, then RTM_DELLINK of each host veth still
 * present. A namespace nothing else holds dies with its veth pair, and the
 * kernel cleans up namespaces that die together in one batch: ~2-3 ms each
 * for 32, where deleting veth after veth costs ~30 ms each (an RCU grace
 * period per device). Either way the veth name is free when the delete
 * returns, so the index can be reused at once.
 */
#include "netpool.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>

#include "dirigent/log.h"

#define NP_MAX_INDEX 65536 /* sandbox addresses per pool at most (the index bitmap) */
/* Creations in flight on the libuv thread pool. More do not fill faster (the kernel serializes
 * them: 32 take ~35 ms at 1, 2 or 4 at a time, each taking longer) and would take threads from
 * the loop's file system work. */
#ifndef NP_MAX_CREATING
#define NP_MAX_CREATING 1
#endif
#define NP_BACKOFF_MIN_MS 50
#define NP_BACKOFF_MAX_MS 2000
#define NP_SELF_NET       "/proc/thread-self/ns/net"

/* The validated options. */
struct np_conf {
    char bridge[IFNAMSIZ];
    char prefix[11];
    char dir[200];
    char subnet[32];
    uint32_t net; /* network address, host byte order */
    unsigned plen;
    unsigned capacity; /* sandbox addresses */
    unsigned target;
    uint64_t quarantine_ms;
};

struct wk_netns_wait {
    struct wk_netns_wait *prev, *next;
    struct wk_netpool *p;
    wk_netns_cb cb;
    void *ud;
};

enum np_job_kind { NP_JOB_CREATE, NP_JOB_TEARDOWN };

struct np_job {
    uv_work_t req;
    struct np_job *prev, *next; /* creations in flight */
    struct wk_netpool *p;
    enum np_job_kind kind;
    struct wk_netns *ns; /* create */
    struct wk_netns **v; /* teardown: every namespace of the pool */
    unsigned n;          /* teardown: how many */
    bool remove_bridge;  /* teardown */
    struct dg_err err;   /* create: written by the thread */
    uint64_t us;         /* time on the thread */
};

struct wk_netpool {
    uv_loop_t *loop;
    struct np_conf c;
    int bridge_ifindex;
    unsigned char gw_mac[6]; /* the bridge's MAC when fixed (gw_mac_fixed) */
    bool gw_mac_fixed;
    int host_netns; /* fd of the namespace the pool was made in */
    uint64_t *used; /* index bitmap */
    unsigned nused;
    struct wk_netns *ready, *ready_tail;
    unsigned nready;
    struct wk_netns *q_head, *q_tail; /* released, in quarantine (oldest first) */
    unsigned nquarantined;
    struct wk_netns *all;
    struct wk_netns_wait *wait_head, *wait_tail;
    unsigned nwait;
    struct np_job *jobs; /* creations in flight */
    unsigned ncreating;
    uv_timer_t backoff;
    unsigned backoff_ms;
    bool backing_off;
    bool closing, remove_bridge, teardown_started, teardown_done, timer_closed;
    bool refilling; /* below half the target: creating up to it */
    void (*done)(void *ud);
    void *done_ud;
};

static void np_refill(struct wk_netpool *p);

/* ---- errors ---- */

static int np_errno(int nlerr)
{
    switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_EXIST:
        return -EEXIST;
    case NLE_PERM:
    case NLE_NOACCESS:
        return -EPERM;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
        return -ENODEV;
    case NLE_NOMEM:
        return -ENOMEM;
    case NLE_BUSY:
        return -EBUSY;
    case NLE_INVAL:
    case NLE_RANGE:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static bool np_notfound(int nlerr)
{
    return nlerr == -NLE_OBJ_NOTFOUND || nlerr == -NLE_NODEV;
}

/* err = "<what>: <libnl's message>"; returns the negative errno-like code. */
DG_PRINTF(3, 4) static int np_nlerr(struct dg_err *err, int nlerr, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return dg_err_set(err, np_errno(nlerr), "%s: %s", what, nl_geterror(nlerr));
}

DG_PRINTF(2, 3) static int np_syserr(struct dg_err *err, const char *fmt, ...)
{
    int e = errno;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return dg_err_set(err, -e, "%s: %s", what, strerror(e));
}

/* ---- options ---- */

static bool np_ifname_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

/* `name` is prefix followed by one or more digits only: one of our veth names. */
static bool np_is_ours(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0 || name[n] == '\0')
        return false;
    for (const char *s = name + n; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int np_conf_parse(struct np_conf *c, const struct wk_netpool_opts *o, struct dg_err *err)
{
    memset(c, 0, sizeof(*c));
    if (!o->prefix || !np_ifname_ok(o->prefix, sizeof(c->prefix) - 1))
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: prefix '%s': expected 1 to 10 letters, digits, '-', '_' or '.'",
                          o->prefix ? o->prefix : "");
    if (!o->bridge || !np_ifname_ok(o->bridge, IFNAMSIZ - 1))
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: bridge '%s': expected an interface name of 1 to %d letters, "
                          "digits, '-', '_' or '.'",
                          o->bridge ? o->bridge : "", IFNAMSIZ - 1);
    if (np_is_ours(o->bridge, o->prefix))
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: bridge '%s' has the form of the veth names '%s<N>': choose a "
                          "bridge name or a prefix that does not collide",
                          o->bridge, o->prefix);
    if (!o->dir || o->dir[0] != '/' || strlen(o->dir) >= sizeof(c->dir))
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: dir '%s': expected an absolute path shorter than %zu bytes",
                          o->dir ? o->dir : "", sizeof(c->dir));
    snprintf(c->prefix, sizeof(c->prefix), "%s", o->prefix);
    snprintf(c->bridge, sizeof(c->bridge), "%s", o->bridge);
    snprintf(c->dir, sizeof(c->dir), "%s", o->dir);
    size_t dl = strlen(c->dir);
    while (dl > 1 && c->dir[dl - 1] == '/')
        c->dir[--dl] = '\0';

    const char *s = o->subnet ? o->subnet : "";
    const char *slash = strchr(s, '/');
    char addr[INET_ADDRSTRLEN];
    struct in_addr in;
    int64_t plen;
    if (!slash || (size_t)(slash - s) >= sizeof(addr) ||
        !dg_str_to_i64((struct dg_str){slash + 1, strlen(slash + 1)}, &plen) || plen < 1 ||
        plen > 30)
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: subnet '%s': expected IPv4 CIDR a.b.c.d/N with N 1..30, e.g. "
                          "100.100.0.0/16",
                          s);
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    if (inet_pton(AF_INET, addr, &in) != 1)
        return dg_err_set(err, DG_E_INVAL, "netpool: subnet '%s': '%s' is not an IPv4 address", s,
                          addr);
    uint32_t a = ntohl(in.s_addr);
    uint32_t mask = 0xffffffffu << (32 - plen);
    if (a & ~mask) {
        struct in_addr net = {htonl(a & mask)};
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &net, buf, sizeof(buf));
        return dg_err_set(err, DG_E_INVAL, "netpool: subnet '%s': host bits set, expected %s/%d", s,
                          buf, (int)plen);
    }
    c->net = a;
    c->plen = (unsigned)plen;
    /* minus the network address, the gateway and the broadcast address */
    uint64_t cap = (UINT64_C(1) << (32 - plen)) - 3;
    c->capacity = (unsigned)DG_MIN(cap, (uint64_t)NP_MAX_INDEX);
    snprintf(c->subnet, sizeof(c->subnet), "%s", s);
    if (o->target > c->capacity)
        return dg_err_set(err, DG_E_INVAL,
                          "netpool: target %u exceeds the %u sandbox addresses of subnet %s: "
                          "lower it or use a larger subnet",
                          o->target, c->capacity, s);
    c->target = o->target;
    c->quarantine_ms = o->quarantine_ms;
    return 0;
}

/* Address i of the subnet (0: network, 1: gateway, 2: the first sandbox), network byte order. */
static uint32_t np_addr(const struct np_conf *c, uint32_t i)
{
    return htonl(c->net + i);
}

/* ---- netlink helpers (any thread) ---- */

/* A NETLINK_ROUTE socket bound to the calling thread's network namespace. */
static int np_socket(struct nl_sock **out, struct dg_err *err)
{
    struct nl_sock *sk = nl_socket_alloc();
    if (!sk)
        return dg_err_set(err, -ENOMEM, "netlink: no memory for a socket");
    int rc = nl_connect(sk, NETLINK_ROUTE);
    if (rc < 0) {
        nl_socket_free(sk);
        return np_nlerr(err, rc, "netlink: connecting a route socket");
    }
    *out = sk;
    return 0;
}

/* Set IFF_UP on the link named `name` (a second request: libnl refuses IFF_UP with an add). */
static int np_link_up(struct nl_sock *sk, const char *name, struct dg_err *err)
{
    struct rtnl_link *orig = rtnl_link_alloc(), *ch = rtnl_link_alloc();
    int rc = -NLE_NOMEM;
    if (orig && ch) {
        rtnl_link_set_name(ch, name);
        rtnl_link_set_flags(ch, IFF_UP);
        rc = rtnl_link_change(sk, orig, ch, 0);
    }
    if (orig)
        rtnl_link_put(orig);
    if (ch)
        rtnl_link_put(ch);
    return rc < 0 ? np_nlerr(err, rc, "bringing %s up", name) : 0;
}

/* Delete the link named `name`; absent is fine. */
static int np_link_delete(struct nl_sock *sk, const char *name, struct dg_err *err)
{
    struct rtnl_link *l = rtnl_link_alloc();
    if (!l)
        return dg_err_set(err, -ENOMEM, "deleting %s: no memory", name);
    rtnl_link_set_name(l, name);
    int rc = rtnl_link_delete(sk, l);
    rtnl_link_put(l);
    if (rc < 0 && !np_notfound(rc))
        return np_nlerr(err, rc, "deleting link %s", name);
    return 0;
}

/* Add address `ip` (network order) / plen to ifindex; already present is fine. */
static int np_addr_add(struct nl_sock *sk, int ifindex, const char *ifname, uint32_t ip,
                       unsigned plen, struct dg_err *err)
{
    struct rtnl_addr *a = rtnl_addr_alloc();
    struct nl_addr *local = nl_addr_build(AF_INET, &ip, 4);
    int rc = -NLE_NOMEM;
    if (a && local) {
        rtnl_addr_set_ifindex(a, ifindex);
        rtnl_addr_set_family(a, AF_INET);
        rc = rtnl_addr_set_local(a, local);
        rtnl_addr_set_prefixlen(a, (int)plen);
        if (rc >= 0)
            rc = rtnl_addr_add(sk, a, 0);
    }
    if (local)
        nl_addr_put(local);
    if (a)
        rtnl_addr_put(a);
    if (rc < 0 && rc != -NLE_EXIST) {
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &ip, buf, sizeof(buf));
        return np_nlerr(err, rc, "adding address %s/%u to %s", buf, plen, ifname);
    }
    return 0;
}

static int np_default_route(struct nl_sock *sk, int ifindex, uint32_t gw, struct dg_err *err)
{
    uint32_t any = 0;
    struct rtnl_route *r = rtnl_route_alloc();
    struct nl_addr *dst = nl_addr_build(AF_INET, &any, 4);
    struct nl_addr *via = nl_addr_build(AF_INET, &gw, 4);
    struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
    int rc = -NLE_NOMEM;
    if (r && dst && via && nh) {
        nl_addr_set_prefixlen(dst, 0);
        rtnl_route_set_family(r, AF_INET);
        rtnl_route_set_dst(r, dst);
        rtnl_route_nh_set_ifindex(nh, ifindex);
        rtnl_route_nh_set_gateway(nh, via);
        rtnl_route_add_nexthop(r, nh); /* the route owns it now */
        nh = NULL;
        rc = rtnl_route_add(sk, r, NLM_F_EXCL);
    }
    if (nh)
        rtnl_route_nh_free(nh);
    if (via)
        nl_addr_put(via);
    if (dst)
        nl_addr_put(dst);
    if (r)
        rtnl_route_put(r);
    if (rc < 0) {
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &gw, buf, sizeof(buf));
        return np_nlerr(err, rc, "adding the default route via %s", buf);
    }
    return 0;
}

/* A permanent ARP entry gw -> mac on ifindex (see the top of the file). */
static int np_gateway_neigh(struct nl_sock *sk, int ifindex, uint32_t gw,
                            const unsigned char mac[6], struct dg_err *err)
{
    struct rtnl_neigh *n = rtnl_neigh_alloc();
    struct nl_addr *dst = nl_addr_build(AF_INET, &gw, 4);
    struct nl_addr *ll = nl_addr_build(AF_LLC, mac, 6);
    int rc = -NLE_NOMEM;
    if (n && dst && ll) {
        rtnl_neigh_set_ifindex(n, ifindex);
        rtnl_neigh_set_family(n, AF_INET);
        rtnl_neigh_set_lladdr(n, ll);
        rtnl_neigh_set_state(n, NUD_PERMANENT);
        rc = rtnl_neigh_set_dst(n, dst);
        if (rc >= 0)
            rc = rtnl_neigh_add(sk, n, NLM_F_CREATE | NLM_F_REPLACE);
    }
    if (ll)
        nl_addr_put(ll);
    if (dst)
        nl_addr_put(dst);
    if (n)
        rtnl_neigh_put(n);
    if (rc < 0)
        return np_nlerr(err, rc, "adding the gateway's neighbour entry");
    return 0;
}

/* The bridge's MAC was set, not taken from its ports (NET_ADDR_SET): it does not change as
 * veths come and go, so sandboxes may keep it in a permanent entry. */
static bool np_mac_fixed(const char *bridge)
{
    char path[96], buf[8] = "";
    snprintf(path, sizeof(path), "/sys/class/net/%s/addr_assign_type", bridge);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    return n > 0 && atoi(buf) == 3;
}

/* ---- thread side ---- */

/* Back to the pool's namespace. A thread-pool thread left in a sandbox's namespace would run
 * every later job there (DNS lookups, connects), so failing here is fatal. */
static void np_go_home(const struct wk_netpool *p)
{
    if (setns(p->host_netns, CLONE_NEWNET) == -1) {
        dg_log(DG_LOG_ERROR, "netpool", "setns back to the host network namespace: %s: aborting",
               strerror(errno));
        abort();
    }
}

/* Make a new namespace, bind-mount it on ns->path, open *in (a netlink socket inside) and
 * *nsfd, bring lo up. Always returns in the host namespace. */
/* No IPv6 on `ifname` ("all", "default" or a link) in the calling thread's namespace: every
 * new eth0 would otherwise send DAD/MLD/RS multicast that the bridge floods to every
 * sandbox (~20% of a container start's CPU at 100 sandboxes). Sandboxes speak IPv4. */
static void np_no_ipv6(const char *ifname)
{
    char path[128];
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd == -1)
        return; /* no IPv6 in this kernel: nothing to silence */
    if (write(fd, "1", 1) != 1)
        dg_log(DG_LOG_DEBUG, "netpool", "%s: %m", path);
    close(fd);
}

/* Ports below 1024 need no capability in the calling thread's namespace: a sandbox in a user
 * namespace has its capabilities only there, not in this namespace (the host's user
 * namespace owns it), and still serves on port 80 as Docker's containers do. */
static void np_low_ports(void)
{
    const char *path = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd == -1 || write(fd, "0", 1) != 1)
        dg_log(DG_LOG_WARN, "netpool", "%s: %m", path);
    if (fd != -1)
        close(fd);
}

static int np_enter_new(const struct wk_netpool *p, struct wk_netns *ns, int *nsfd,
                        struct nl_sock **in, struct dg_err *err)
{
    if (unshare(CLONE_NEWNET) == -1)
        return np_syserr(err, "unshare(CLONE_NEWNET)");
    np_no_ipv6("all");
    np_no_ipv6("default");
    np_low_ports();
    int rc = 0;
    *nsfd = open(NP_SELF_NET, O_RDONLY | O_CLOEXEC);
    if (*nsfd == -1)
        rc = np_syserr(err, "opening %s", NP_SELF_NET);
    else if (mount(NP_SELF_NET, ns->path, NULL, MS_BIND, NULL) == -1)
        rc = np_syserr(err, "bind-mounting the namespace on %s", ns->path);
    else if ((rc = np_socket(in, err)) == 0)
        rc = np_link_up(*in, "lo", err);
    np_go_home(p);
    return rc;
}

/* Unmount and remove a namespace file: the namespace dies once nothing else holds it (a
 * process in it, an open fd), taking its veth pair with it. */
static void np_drop_file(const char *path)
{
    if (umount2(path, MNT_DETACH) == -1 && errno != EINVAL && errno != ENOENT)
        dg_log(DG_LOG_WARN, "netpool", "unmounting %s: %s", path, strerror(errno));
    if (unlink(path) == -1 && errno != ENOENT)
        dg_log(DG_LOG_WARN, "netpool", "removing %s: %s", path, strerror(errno));
}

/* Delete a host veth if still there. After np_drop_file the kernel is usually already
 * unregistering it (absent is fine); either way its name is free when this returns. */
static void np_drop_veth(struct nl_sock *host, const char *name)
{
    struct dg_err e;
    if (host && np_link_delete(host, name, &e) < 0)
        dg_log(DG_LOG_WARN, "netpool", "%s", e.msg);
}

/* Tear down v[0..n): every file first, then the veths still present. Namespaces that die
 * together are cleaned up by the kernel in one batch (one RCU grace period for all their
 * devices: ~2 ms each for 32), where deleting veth after veth costs ~30 ms each. */
static void np_teardown(struct nl_sock *host, struct wk_netns *const *v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        np_drop_file(v[i]->path);
    for (unsigned i = 0; i < n; i++)
        np_drop_veth(host, v[i]->host_if);
}

static int np_configure_inside(const struct wk_netpool *p, struct nl_sock *in,
                               const struct wk_netns *ns, struct dg_err *err)
{
    struct rtnl_link *eth0 = NULL;
    int rc = rtnl_link_get_kernel(in, 0, "eth0", &eth0);
    if (rc < 0)
        return np_nlerr(err, rc, "finding eth0 in %s", ns->path);
    int ifindex = rtnl_link_get_ifindex(eth0);
    rtnl_link_put(eth0);
    uint32_t ip;
    inet_pton(AF_INET, ns->ip, &ip);
    if ((rc = np_addr_add(in, ifindex, "eth0", ip, p->c.plen, err)) < 0)
        return rc;
    if ((rc = np_link_up(in, "eth0", err)) < 0)
        return rc;
    if ((rc = np_default_route(in, ifindex, np_addr(&p->c, 1), err)) < 0)
        return rc;
    return p->gw_mac_fixed ? np_gateway_neigh(in, ifindex, np_addr(&p->c, 1), p->gw_mac, err) : 0;
}

static int np_create(const struct wk_netpool *p, struct wk_netns *ns, struct dg_err *err)
{
    struct nl_sock *in = NULL, *host = NULL;
    int nsfd = -1, rc;

    /* a file left by a crashed run that cleanup did not see */
    umount2(ns->path, MNT_DETACH);
    unlink(ns->path);
    int fd = open(ns->path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd == -1)
        return np_syserr(err, "creating %s", ns->path);
    close(fd);

    if ((rc = np_enter_new(p, ns, &nsfd, &in, err)) < 0)
        goto fail;
    if ((rc = np_socket(&host, err)) < 0)
        goto fail;

    struct rtnl_link *veth = rtnl_link_veth_alloc();
    if (!veth) {
        rc = dg_err_set(err, -ENOMEM, "no memory for a veth");
        goto fail;
    }
    struct rtnl_link *peer = rtnl_link_veth_get_peer(veth);
    rtnl_link_set_name(veth, ns->host_if);
    rtnl_link_set_master(veth, p->bridge_ifindex);
    rtnl_link_set_name(peer, "eth0");
    rtnl_link_set_ns_fd(peer, nsfd);
    rtnl_link_put(peer);
    rc = rtnl_link_add(host, veth, NLM_F_CREATE | NLM_F_EXCL);
    rtnl_link_put(veth);
    if (rc == -NLE_EXIST) {
        /* not ours: leave it alone */
        rc = dg_err_set(err, -EEXIST,
                        "creating veth %s: a link of that name exists: another pool uses prefix "
                        "'%s', or a previous run was not cleaned up (wk_netpool_cleanup)",
                        ns->host_if, p->c.prefix);
        nl_socket_free(host);
        host = NULL;
        goto fail;
    }
    if (rc < 0) {
        rc = np_nlerr(err, rc, "creating veth %s on bridge %s (peer eth0 in %s)", ns->host_if,
                      p->c.bridge, ns->path);
        goto fail;
    }
    np_no_ipv6(ns->host_if);
    if ((rc = np_link_up(host, ns->host_if, err)) < 0)
        goto fail;
    if ((rc = np_configure_inside(p, in, ns, err)) < 0)
        goto fail;
    close(nsfd);
    nl_socket_free(in);
    nl_socket_free(host);
    return 0;

fail:
    if (nsfd != -1)
        close(nsfd);
    if (in)
        nl_socket_free(in);
    np_teardown(host, &ns, 1); /* host NULL: no veth of ours to delete */
    if (host)
        nl_socket_free(host);
    return rc;
}

static void np_work(uv_work_t *req)
{
    struct np_job *j = DG_CONTAINER_OF(req, struct np_job, req);
    const struct wk_netpool *p = j->p;
    uint64_t t0 = dg_now_us();
    if (j->kind == NP_JOB_CREATE) {
        dg_err_clear(&j->err);
        np_create(p, j->ns, &j->err);
    } else {
        struct nl_sock *sk = NULL;
        struct dg_err e;
        if (np_socket(&sk, &e) < 0)
            dg_log(DG_LOG_WARN, "netpool", "teardown: %s", e.msg);
        np_teardown(sk, j->v, j->n);
        if (sk && j->remove_bridge && np_link_delete(sk, p->c.bridge, &e) < 0)
            dg_log(DG_LOG_WARN, "netpool", "%s", e.msg);
        if (sk)
            nl_socket_free(sk);
    }
    j->us = dg_now_us() - t0;
}

/* ---- bridge and start-up (calling thread) ---- */

static int np_mkdirs(const char *dir, struct dg_err *err)
{
    char path[sizeof(((struct np_conf *)0)->dir)];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *s = path + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(path, 0755) == -1 && errno != EEXIST)
            return np_syserr(err, "netpool: creating directory %s", path);
        *s = saved;
        if (!saved)
            return 0;
    }
}

/* A random locally administered unicast MAC: without a fixed address a bridge takes the lowest
 * of its ports' and changes it as veths come and go, leaving stale gateway ARP entries in the
 * sandboxes. */
static struct nl_addr *np_bridge_mac(void)
{
    unsigned char mac[6];
    if (getrandom(mac, sizeof(mac), 0) != (ssize_t)sizeof(mac)) {
        uint64_t t = dg_now_us() ^ ((uint64_t)getpid() << 24);
        memcpy(mac, &t, sizeof(mac));
    }
    mac[0] = (unsigned char)((mac[0] & 0xfe) | 0x02);
    return nl_addr_build(AF_LLC, mac, sizeof(mac));
}

/* The bridge named c->bridge in *br: looked up, or created (with a fixed MAC). */
static int np_bridge_get(struct nl_sock *sk, const struct np_conf *c, struct rtnl_link **br,
                         bool *created, struct dg_err *err)
{
    int rc = rtnl_link_get_kernel(sk, 0, c->bridge, br);
    if (rc >= 0)
        return 0;
    if (!np_notfound(rc))
        return np_nlerr(err, rc, "netpool: looking up bridge %s", c->bridge);
    struct rtnl_link *l = rtnl_link_alloc();
    struct nl_addr *mac = np_bridge_mac();
    rc = -NLE_NOMEM;
    if (l && mac) {
        rtnl_link_set_name(l, c->bridge);
        rtnl_link_set_addr(l, mac);
        rc = rtnl_link_set_type(l, "bridge");
        if (rc >= 0)
            rc = rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL);
    }
    if (mac)
        nl_addr_put(mac);
    if (l)
        rtnl_link_put(l);
    if (rc < 0 && rc != -NLE_EXIST) /* EXIST: someone made it meanwhile */
        return np_nlerr(err, rc, "netpool: creating bridge %s", c->bridge);
    *created = rc >= 0;
    rc = rtnl_link_get_kernel(sk, 0, c->bridge, br);
    if (rc < 0)
        return np_nlerr(err, rc, "netpool: looking up bridge %s", c->bridge);
    return 0;
}

static int np_bridge_setup(struct wk_netpool *p, struct dg_err *err)
{
    struct nl_sock *sk = NULL;
    int rc = np_socket(&sk, err);
    if (rc < 0)
        return rc;
    struct rtnl_link *br = NULL;
    bool created = false;
    uint32_t gw = np_addr(&p->c, 1);
    if ((rc = np_bridge_get(sk, &p->c, &br, &created, err)) < 0)
        goto out;
    const char *type = rtnl_link_get_type(br);
    if (!type || strcmp(type, "bridge") != 0) {
        rc = dg_err_set(err, DG_E_INVAL,
                        "netpool: interface %s exists and is a %s, not a bridge: choose another "
                        "bridge name",
                        p->c.bridge, type ? type : "device of unknown type");
        goto out;
    }
    p->bridge_ifindex = rtnl_link_get_ifindex(br);
    struct nl_addr *mac = rtnl_link_get_addr(br);
    if (mac && nl_addr_get_len(mac) == 6 && np_mac_fixed(p->c.bridge)) {
        memcpy(p->gw_mac, nl_addr_get_binary_addr(mac), 6);
        p->gw_mac_fixed = true;
    }
    if ((rc = np_addr_add(sk, p->bridge_ifindex, p->c.bridge, gw, p->c.plen, err)) < 0 ||
        (rc = np_link_up(sk, p->c.bridge, err)) < 0) {
        dg_err_wrap(err, "netpool");
        goto out;
    }
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &gw, buf, sizeof(buf));
    dg_log(DG_LOG_INFO, "netpool", "bridge=%s gateway=%s/%u %s", p->c.bridge, buf, p->c.plen,
           created ? "created" : "reused");
out:
    if (br)
        rtnl_link_put(br);
    nl_socket_free(sk);
    return rc;
}

/* ---- loop side ---- */

static int np_index_alloc(struct wk_netpool *p)
{
    if (p->nused >= p->c.capacity)
        return -1;
    for (unsigned w = 0; w < (p->c.capacity + 63) / 64; w++) {
        if (p->used[w] == ~UINT64_C(0))
            continue;
        unsigned b = (unsigned)__builtin_ctzll(~p->used[w]);
        unsigned i = w * 64 + b;
        if (i >= p->c.capacity)
            return -1;
        p->used[w] |= UINT64_C(1) << b;
        p->nused++;
        return (int)i;
    }
    return -1;
}

static void np_index_free(struct wk_netpool *p, unsigned i)
{
    p->used[i / 64] &= ~(UINT64_C(1) << (i % 64));
    p->nused--;
}

static void np_all_add(struct wk_netpool *p, struct wk_netns *ns)
{
    ns->all_prev = NULL;
    ns->all_next = p->all;
    if (p->all)
        p->all->all_prev = ns;
    p->all = ns;
}

/* A fresh namespace goes to the head of the ready list, a released one to its tail. */
static void np_ready_push(struct wk_netpool *p, struct wk_netns *ns, bool fresh)
{
    ns->next = NULL;
    if (!p->ready) {
        p->ready = p->ready_tail = ns;
    } else if (fresh) {
        ns->next = p->ready;
        p->ready = ns;
    } else {
        p->ready_tail->next = ns;
        p->ready_tail = ns;
    }
    p->nready++;
}

static struct wk_netns *np_ready_pop(struct wk_netpool *p)
{
    struct wk_netns *ns = p->ready;
    if (!ns)
        return NULL;
    p->ready = ns->next;
    if (!p->ready)
        p->ready_tail = NULL;
    p->nready--;
    ns->next = NULL;
    return ns;
}

/* Released namespaces whose quarantine is over join the ready list (checked when one is
 * wanted: no timer). */
static void np_quarantine_expire(struct wk_netpool *p)
{
    uint64_t now = uv_now(p->loop);
    while (p->q_head && now - p->q_head->released_ms >= p->c.quarantine_ms) {
        struct wk_netns *ns = p->q_head;
        p->q_head = ns->next;
        if (!p->q_head)
            p->q_tail = NULL;
        p->nquarantined--;
        np_ready_push(p, ns, false);
    }
}

static struct wk_netns_wait *np_wait_pop(struct wk_netpool *p)
{
    struct wk_netns_wait *w = p->wait_head;
    if (!w)
        return NULL;
    p->wait_head = w->next;
    if (p->wait_head)
        p->wait_head->prev = NULL;
    else
        p->wait_tail = NULL;
    p->nwait--;
    return w;
}

/* Pop the oldest acquire and call it. The callback may re-enter the pool (acquire, release,
 * close), so nothing of the waiter is touched after it. */
static void np_wait_finish(struct wk_netpool *p, struct wk_netns *ns, const struct dg_err *err)
{
    struct wk_netns_wait *w = np_wait_pop(p);
    wk_netns_cb cb = w->cb;
    void *ud = w->ud;
    free(w);
    if (ns)
        ns->acquired = true;
    cb(ud, ns, err);
}

static void np_on_backoff(uv_timer_t *t)
{
    struct wk_netpool *p = t->data;
    p->backing_off = false;
    np_refill(p);
}

static void np_maybe_finish(struct wk_netpool *p)
{
    if (!p->teardown_done || !p->timer_closed)
        return;
    void (*done)(void *) = p->done;
    void *ud = p->done_ud;
    close(p->host_netns);
    free(p->used);
    free(p);
    if (done)
        done(ud);
}

static void np_after_teardown(uv_work_t *req, int status)
{
    struct np_job *j = DG_CONTAINER_OF(req, struct np_job, req);
    struct wk_netpool *p = j->p;
    dg_log(DG_LOG_INFO, "netpool", "closed: %u namespaces torn down in %.1f ms%s", j->n,
           (double)j->us / 1000.0, j->remove_bridge ? ", bridge removed" : "");
    for (unsigned i = 0; i < j->n; i++)
        free(j->v[i]);
    free(j->v);
    free(j);
    p->all = NULL;
    p->teardown_done = true;
    np_maybe_finish(p);
}

static void np_maybe_teardown(struct wk_netpool *p)
{
    if (p->ncreating || p->teardown_started)
        return;
    p->teardown_started = true;
    struct np_job *j = dg_xcalloc(1, sizeof(*j));
    j->p = p;
    j->kind = NP_JOB_TEARDOWN;
    j->remove_bridge = p->remove_bridge;
    for (struct wk_netns *ns = p->all; ns; ns = ns->all_next)
        j->n++;
    j->v = dg_xcalloc(j->n ? j->n : 1, sizeof(*j->v));
    unsigned i = 0;
    for (struct wk_netns *ns = p->all; ns; ns = ns->all_next)
        j->v[i++] = ns;
    uv_queue_work(p->loop, &j->req, np_work, np_after_teardown);
}

static void np_after_create(uv_work_t *req, int status)
{
    struct np_job *j = DG_CONTAINER_OF(req, struct np_job, req);
    struct wk_netpool *p = j->p;
    struct wk_netns *ns = j->ns;
    if (j->prev)
        j->prev->next = j->next;
    else
        p->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    p->ncreating--;

    if (status == UV_ECANCELED || j->err.code) {
        unsigned index = ns->index;
        np_index_free(p, index);
        free(ns);
        if (status != UV_ECANCELED && !p->closing) {
            struct dg_err e = j->err;
            dg_err_wrap(&e, "network namespace %u", index);
            p->backoff_ms =
                p->backoff_ms ? DG_MIN(p->backoff_ms * 2, NP_BACKOFF_MAX_MS) : NP_BACKOFF_MIN_MS;
            dg_log(DG_LOG_WARN, "netpool", "%s (retrying in %u ms)", e.msg, p->backoff_ms);
            p->backing_off = true;
            uv_timer_start(&p->backoff, np_on_backoff, p->backoff_ms, 0);
            /* the acquires no creation in flight will serve */
            while (p->nwait > p->ncreating && !p->closing)
                np_wait_finish(p, NULL, &e);
        }
    } else {
        ns->create_us = j->us;
        np_all_add(p, ns);
        p->backoff_ms = 0;
        dg_log(DG_LOG_DEBUG, "netpool", "ns=%s ip=%s veth=%s created in %.2f ms", ns->path, ns->ip,
               ns->host_if, (double)j->us / 1000.0);
        if (!p->closing && p->wait_head)
            np_wait_finish(p, ns, NULL);
        else
            np_ready_push(p, ns, true);
    }
    free(j);
    if (p->closing)
        np_maybe_teardown(p);
    else
        np_refill(p);
}

static void np_start_create(struct wk_netpool *p, unsigned index)
{
    struct wk_netns *ns = dg_xcalloc(1, sizeof(*ns));
    ns->pool = p;
    ns->index = index;
    snprintf(ns->path, sizeof(ns->path), "%s/ns-%u", p->c.dir, index);
    snprintf(ns->host_if, sizeof(ns->host_if), "%s%hu", p->c.prefix, (unsigned short)index);
    uint32_t a = np_addr(&p->c, 2 + index);
    inet_ntop(AF_INET, &a, ns->ip, sizeof(ns->ip));
    struct np_job *j = dg_xcalloc(1, sizeof(*j));
    j->p = p;
    j->kind = NP_JOB_CREATE;
    j->ns = ns;
    j->next = p->jobs;
    if (p->jobs)
        p->jobs->prev = j;
    p->jobs = j;
    p->ncreating++;
    uv_queue_work(p->loop, &j->req, np_work, np_after_create);
}

/* Keep target + pending acquires ready or in creation; with nobody waiting, refill in
 * batches, from half the target back to it, so that most cold starts do not share the
 * CPU with a namespace creation. */
static void np_refill(struct wk_netpool *p)
{
    if (p->nwait == 0 && !p->refilling && p->nready + p->ncreating > p->c.target / 2)
        return;
    p->refilling = true;
    if (p->nready + p->ncreating >= p->c.target + p->nwait)
        p->refilling = false;
    while (!p->closing && !p->backing_off && p->ncreating < NP_MAX_CREATING &&
           p->nready + p->ncreating < p->c.target + p->nwait) {
        int i = np_index_alloc(p);
        if (i < 0)
            break;
        np_start_create(p, (unsigned)i);
    }
}

/* ---- API ---- */

int wk_netpool_cleanup(const struct wk_netpool_opts *o, struct dg_err *err)
{
    struct np_conf c;
    if (np_conf_parse(&c, o, err) < 0)
        return -1;
    struct nl_sock *sk = NULL;
    if (np_socket(&sk, err) < 0)
        return -1;
    /* Namespace files first, then the veths the kernel has not removed with them yet: see
     * np_teardown. */
    int removed = 0, failed = 0;
    DIR *d = opendir(c.dir);
    if (!d && errno != ENOENT) {
        np_syserr(err, "netpool cleanup: opening %s", c.dir);
        return -1;
    }
    while (d) {
        struct dirent *de = readdir(d);
        if (!de)
            break;
        if (!np_is_ours(de->d_name, "ns-"))
            continue;
        char path[sizeof(c.dir) + sizeof(de->d_name) + 1];
        snprintf(path, sizeof(path), "%s/%s", c.dir, de->d_name);
        if (umount2(path, MNT_DETACH) == 0)
            removed++;
        else if (errno != EINVAL && !failed++)
            np_syserr(err, "netpool cleanup: unmounting %s", path);
        if (unlink(path) == -1 && errno != ENOENT && !failed++)
            np_syserr(err, "netpool cleanup: removing %s", path);
    }
    if (d)
        closedir(d);
    struct nl_cache *cache;
    int rc = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache);
    if (rc < 0) {
        np_nlerr(err, rc, "netpool cleanup: listing links");
        nl_socket_free(sk);
        return -1;
    }
    for (struct nl_object *obj = nl_cache_get_first(cache); obj; obj = nl_cache_get_next(obj)) {
        struct rtnl_link *l = (struct rtnl_link *)obj;
        const char *name = rtnl_link_get_name(l);
        const char *type = rtnl_link_get_type(l);
        if (!name || !type || strcmp(type, "veth") != 0 || !np_is_ours(name, c.prefix))
            continue;
        rc = rtnl_link_delete(sk, l);
        if (rc < 0 && !np_notfound(rc) && !failed++)
            np_nlerr(err, rc, "netpool cleanup: deleting veth %s", name);
    }
    nl_cache_free(cache);
    if (o->own_bridge) {
        struct rtnl_link *br = NULL;
        if (rtnl_link_get_kernel(sk, 0, c.bridge, &br) >= 0) {
            const char *type = rtnl_link_get_type(br);
            if (type && strcmp(type, "bridge") == 0) {
                rc = rtnl_link_delete(sk, br);
                if (rc < 0 && !np_notfound(rc) && !failed++)
                    np_nlerr(err, rc, "netpool cleanup: deleting bridge %s", c.bridge);
                else
                    dg_log(DG_LOG_INFO, "netpool", "removed bridge %s an earlier run left",
                           c.bridge);
            }
            rtnl_link_put(br);
        }
    }
    nl_socket_free(sk);
    return failed ? -1 : removed;
}

struct wk_netpool *wk_netpool_new(uv_loop_t *loop, const struct wk_netpool_opts *o,
                                  struct dg_err *err)
{
    struct wk_netpool *p = dg_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->host_netns = -1;
    if (np_conf_parse(&p->c, o, err) < 0 || np_mkdirs(p->c.dir, err) < 0)
        goto fail;
    p->host_netns = open(NP_SELF_NET, O_RDONLY | O_CLOEXEC);
    if (p->host_netns == -1) {
        np_syserr(err, "netpool: opening %s", NP_SELF_NET);
        goto fail;
    }
    if (np_bridge_setup(p, err) < 0)
        goto fail;
    p->used = dg_xcalloc((p->c.capacity + 63) / 64, sizeof(uint64_t));
    uv_timer_init(loop, &p->backoff);
    p->backoff.data = p;
    np_refill(p);
    return p;
fail:
    if (p->host_netns != -1)
        close(p->host_netns);
    free(p);
    return NULL;
}

struct wk_netns_wait *wk_netpool_acquire(struct wk_netpool *p, wk_netns_cb cb, void *ud)
{
    struct dg_err e;
    if (p->closing) {
        dg_err_set(&e, DG_E_CLOSED, "network namespace pool closed");
        cb(ud, NULL, &e);
        return NULL;
    }
    np_quarantine_expire(p);
    struct wk_netns *ns = np_ready_pop(p);
    if (ns) {
        ns->acquired = true;
        np_refill(p);
        cb(ud, ns, NULL);
        return NULL;
    }
    /* every index taken and every creation in flight spoken for: nothing will come */
    if (p->nused >= p->c.capacity && p->ncreating <= p->nwait) {
        dg_err_set(&e, DG_E_LIMIT,
                   "network namespace pool: subnet %s exhausted: all %u sandbox addresses are "
                   "in use (%u resting after their sandbox ended: addressQuarantine); give the "
                   "worker a larger subnet",
                   p->c.subnet, p->c.capacity, p->nquarantined);
        cb(ud, NULL, &e);
        return NULL;
    }
    struct wk_netns_wait *w = dg_xcalloc(1, sizeof(*w));
    w->p = p;
    w->cb = cb;
    w->ud = ud;
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwait++;
    np_refill(p); /* never fails a waiter: it only starts creations */
    return w;
}

void wk_netpool_acquire_cancel(struct wk_netns_wait *w)
{
    if (!w)
        return;
    struct wk_netpool *p = w->p;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    p->nwait--;
    free(w);
}

void wk_netpool_release(struct wk_netpool *p, struct wk_netns *ns)
{
    if (p->closing || ns->pool != p || !ns->acquired)
        return;
    ns->acquired = false;
    if (p->c.quarantine_ms > 0) { /* its address rests; older ones may be free now */
        ns->next = NULL;
        ns->released_ms = uv_now(p->loop);
        if (p->q_tail)
            p->q_tail->next = ns;
        else
            p->q_head = ns;
        p->q_tail = ns;
        p->nquarantined++;
        np_quarantine_expire(p);
        while (p->wait_head && p->ready)
            np_wait_finish(p, np_ready_pop(p), NULL);
        return;
    }
    if (p->wait_head) {
        np_wait_finish(p, ns, NULL);
        return;
    }
    np_ready_push(p, ns, false);
}

static void np_timer_closed(uv_handle_t *h)
{
    struct wk_netpool *p = h->data;
    p->timer_closed = true;
    np_maybe_finish(p);
}

void wk_netpool_close(struct wk_netpool *p, bool remove_bridge, void (*done)(void *ud), void *ud)
{
    if (p->closing)
        return;
    p->closing = true;
    p->remove_bridge = remove_bridge;
    p->done = done;
    p->done_ud = ud;
    uv_timer_stop(&p->backoff);
    uv_close((uv_handle_t *)&p->backoff, np_timer_closed);
    /* creations not started yet: not worth making to tear down */
    for (struct np_job *j = p->jobs; j; j = j->next)
        uv_cancel((uv_req_t *)&j->req);
    struct dg_err e;
    dg_err_set(&e, DG_E_CLOSED, "network namespace pool closed");
    while (p->wait_head)
        np_wait_finish(p, NULL, &e);
    np_maybe_teardown(p);
}

unsigned wk_netpool_ready(const struct wk_netpool *p)
{
    return p->nready;
}
