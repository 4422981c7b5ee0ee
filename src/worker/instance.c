/*
 * instance.c: what makes one worker on a host distinct from every other (issue 12: one
 * cluster never harms another). Every object a worker creates on the host is named from its
 * instance id, six hex digits hashed (FNV-1a, 32 bits, folded to 24) from the worker's
 * absolute runDir when one is configured, else from its absolute dataDir (`dirigent up`
 * sets <state>/worker): two `dirigent up` with different state directories never share a
 * name, and a restart of the same one finds what its predecessor left.
 *
 *   runDir          /run/dirigent/<name>-<id>   (sandboxes, netns files, crun root, lock)
 *   bridge          dg<id>                       (8 characters)
 *   host veths      dv<id><N>                    (N: the pool index, at most 15 characters)
 *   sandboxSubnet   a /22 of 100.64.0.0/10: number <id> mod 4096, or the next one not
 *                   routed on the host yet
 *   cgroup parent   dirigent/<name>-<id>         (below every hierarchy)
 *
 * Configured keys win. A lock (flock on <runDir>/lock, holding the pid) keeps a second
 * worker off an instance that runs: it exits with "already running (pid N)".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "instance.h"

uint32_t wk_instance_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return (h >> 24 ^ h) & 0xffffff; /* xor-fold to 24 bits (FNV's advice for short hashes) */
}

/* `path` made absolute and lexically normal (no ".", "..", "//", trailing "/"); resolved
 * through symlinks when it exists. Returns a new string. */
static char *absolute(const char *path)
{
    char resolved[PATH_MAX];
    if (realpath(path, resolved))
        return dg_xstrdup(resolved);
    char cwd[PATH_MAX] = "";
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    char *joined = dg_xasprintf("%s/%s", cwd, path);
    char *out = dg_xmalloc(strlen(joined) + 2);
    size_t n = 0;
    for (char *seg = strtok(joined, "/"); seg; seg = strtok(NULL, "/")) {
        if (strcmp(seg, ".") == 0)
            continue;
        if (strcmp(seg, "..") == 0) {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--; /* the '/' before it */
            continue;
        }
        out[n++] = '/';
        size_t l = strlen(seg);
        memcpy(out + n, seg, l);
        n += l;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    free(joined);
    return out;
}

void wk_instance_init(struct wk_instance *in, const char *name, const char *data_dir,
                      const char *run_dir, const char *bridge)
{
    memset(in, 0, sizeof(*in));
    in->lock_fd = -1;
    in->key = absolute(run_dir && run_dir[0] ? run_dir : data_dir);
    in->id = wk_instance_hash(in->key);
    snprintf(in->hex, sizeof(in->hex), "%06x", (unsigned)in->id);
    snprintf(in->label, sizeof(in->label), "%.80s-%s", name, in->hex);
    in->run_dir =
        run_dir && run_dir[0] ? dg_xstrdup(run_dir) : dg_xasprintf("/run/dirigent/%s", in->label);
    in->bridge_derived = !bridge || !bridge[0];
    if (in->bridge_derived)
        snprintf(in->bridge, sizeof(in->bridge), "dg%s", in->hex);
    else
        snprintf(in->bridge, sizeof(in->bridge), "%s", bridge);
    snprintf(in->veth_prefix, sizeof(in->veth_prefix), "dv%s", in->hex);
}

void wk_instance_free(struct wk_instance *in)
{
    if (in->lock_fd >= 0)
        close(in->lock_fd);
    in->lock_fd = -1;
    free(in->key);
    free(in->run_dir);
    in->key = in->run_dir = NULL;
}

/* ---- the lock ----------------------------------------------------------------------------- */

int wk_instance_lock(struct wk_instance *in, struct dg_err *err)
{
    char *path = dg_xasprintf("%s/lock", in->run_dir);
    int fd = -1;
    for (int attempt = 0; fd == -1; attempt++) {
        /* CLOEXEC: a container or helper started later must not hold it past this worker */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd == -1 && errno == ENOENT && attempt < 1000 &&
            (mkdir(in->run_dir, 0700) == 0 || errno == EEXIST))
            continue; /* the run directory went with the clean stop of its last holder */
        if (fd == -1) {
            dg_err_set(err, DG_E_INVAL, "instance lock %s: %m", path);
            free(path);
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
            int e = errno;
            char buf[32] = "";
            ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
            buf[n > 0 ? n : 0] = '\0';
            long pid = strtol(buf, NULL, 10);
            close(fd);
            if (e == EWOULDBLOCK)
                dg_err_set(err, DG_E_INVAL,
                           "worker instance %s (runDir %s) already running (pid %ld): stop it, "
                           "or give this worker another dataDir or runDir",
                           in->hex, in->run_dir, pid);
            else
                dg_err_set(err, DG_E_INVAL, "instance lock %s: flock: %s", path, strerror(e));
            free(path);
            return -1;
        }
        /* locked: but is it still the lock? A holder that stops unlinks the file before it
         * lets go (wk_instance_unlock): a file opened before that unlink can be locked once
         * it is gone, while the next worker locks a new one, and both would run. Only the
         * file the path names now counts: else open it again. */
        struct stat held, now;
        if (fstat(fd, &held) == 0 && stat(path, &now) == 0 && held.st_dev == now.st_dev &&
            held.st_ino == now.st_ino)
            break;
        close(fd);
        fd = -1;
        if (attempt == 1000) {
            dg_err_set(err, DG_E_INVAL,
                       "instance lock %s: the file keeps being replaced (another worker "
                       "starting and stopping on this runDir?)",
                       path);
            free(path);
            return -1;
        }
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)n, 0) != n) {
        dg_err_set(err, DG_E_INVAL, "instance lock %s: writing the pid: %m", path);
        close(fd);
        free(path);
        return -1;
    }
    free(path);
    in->lock_fd = fd;
    return 0;
}

void wk_instance_unlock(struct wk_instance *in)
{
    if (in->lock_fd < 0)
        return;
    /* unlinked while still held: a worker starting now either sees the lock held or makes a
     * new file; the clean-up is over either way */
    char *path = dg_xasprintf("%s/lock", in->run_dir);
    unlink(path);
    free(path);
    close(in->lock_fd);
    in->lock_fd = -1;
}

/* ---- the subnet -------------------------------------------------------------------------- */

bool wk_subnet_overlaps(uint32_t a, unsigned alen, uint32_t b, unsigned blen)
{
    unsigned len = alen < blen ? alen : blen;
    uint32_t mask = len ? 0xffffffffu << (32 - len) : 0;
    return ((a ^ b) & mask) == 0;
}

uint32_t wk_subnet_candidate(uint32_t id, unsigned k)
{
    uint32_t n = (id + k) % WK_SUBNET_COUNT;
    return WK_SUBNET_BASE + (n << (32 - WK_SUBNET_PLEN));
}

bool wk_route_conflict(uint32_t net, unsigned plen, const char *route_table, const char *own_bridge,
                       char *conflict, size_t conflict_len)
{
    /* /proc/net/route: a header line, then "Iface Destination Gateway Flags RefCnt Use Metric
     * Mask ...", addresses as the kernel's network-order words in hex */
    const char *line = route_table ? strchr(route_table, '\n') : NULL;
    while (line && *line) {
        line++;
        char ifname[32];
        unsigned dst, gw, flags, refcnt, use, metric, mask;
        if (sscanf(line, "%31s %x %x %x %u %u %u %x", ifname, &dst, &gw, &flags, &refcnt, &use,
                   &metric, &mask) == 8 &&
            mask != 0 && strcmp(ifname, own_bridge) != 0) {
            uint32_t d = ntohl(dst), m = ntohl(mask);
            unsigned rlen = (unsigned)__builtin_popcount(m);
            if (wk_subnet_overlaps(net, plen, d, rlen)) {
                if (conflict_len)
                    snprintf(conflict, conflict_len, "%u.%u.%u.%u/%u on %s", d >> 24,
                             (d >> 16) & 255, (d >> 8) & 255, d & 255, rlen, ifname);
                return true;
            }
        }
        line = strchr(line, '\n');
    }
    return false;
}

int wk_subnet_pick(uint32_t id, const char *route_table, const char *own_bridge, uint32_t *net,
                   char *conflict, size_t conflict_len)
{
    if (conflict_len)
        conflict[0] = '\0';
    for (unsigned k = 0; k < WK_SUBNET_COUNT; k++) {
        uint32_t cand = wk_subnet_candidate(id, k);
        if (!wk_route_conflict(cand, WK_SUBNET_PLEN, route_table, own_bridge,
                               k == 0 ? conflict : NULL, k == 0 ? conflict_len : 0)) {
            *net = cand;
            return (int)k;
        }
    }
    return -1;
}

void wk_subnet_format(uint32_t net, char *out, size_t len)
{
    snprintf(out, len, "%u.%u.%u.%u/%u", net >> 24, (net >> 16) & 255, (net >> 8) & 255, net & 255,
             WK_SUBNET_PLEN);
}

uint32_t wk_userns_slot(uint32_t id, const char *subnet)
{
    unsigned a, b, c, d, plen;
    char end;
    if (subnet && sscanf(subnet, "%u.%u.%u.%u/%u%c", &a, &b, &c, &d, &plen, &end) == 5 && a < 256 &&
        b < 256 && c < 256 && d < 256 && plen >= WK_SUBNET_PLEN && plen <= 32) {
        uint32_t net = a << 24 | b << 16 | c << 8 | d;
        if (wk_subnet_overlaps(net, 32, WK_SUBNET_BASE, 10))
            return (net - WK_SUBNET_BASE) >> (32 - WK_SUBNET_PLEN);
    }
    return id % WK_SUBNET_COUNT;
}
