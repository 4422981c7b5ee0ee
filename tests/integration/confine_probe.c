/*
 * confine_probe.c: a test image's entrypoint (tests/integration/test_confinement.sh) that
 * reports, from inside a sandbox, what confines it. A tiny blocking HTTP/1.0 server on $PORT:
 *
 *   GET /self             one "name: result" line per check: the capabilities and seccomp
 *                         mode from /proc/self/status, what the kernel answers to
 *                         syscalls a container escape would use (EPERM when refused, "ok"
 *                         when allowed), /proc/self/cgroup and /proc/self/uid_map
 *   GET /connect/IP/PORT  a TCP connect from inside (1.5 s): connected, refused, timeout
 *                         or the errno
 *   anything else         200 "probe" (the worker's readiness probe)
 *
 * SIGTERM ends it. Plain libc and raw syscalls: it links statically into an image that has
 * nothing else.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#define AF_VSOCK_     40
#define NETLINK_AUDIT 9

static char out[65536];
static size_t outlen;

static void put(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + outlen, sizeof(out) - outlen, fmt, ap);
    va_end(ap);
    if (n > 0)
        outlen += (size_t)n < sizeof(out) - outlen ? (size_t)n : sizeof(out) - outlen - 1;
}

/* "EPERM", "ok" or the errno's number for a syscall's result */
static void result(const char *name, long rc)
{
    if (rc >= 0)
        put("%s: ok\n", name);
    else if (errno == EPERM)
        put("%s: EPERM\n", name);
    else
        put("%s: errno %d\n", name, errno);
}

static void file_lines(const char *path, const char *prefix, const char *only)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        put("%s: unreadable (errno %d)\n", prefix, errno);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof(line), f))
        if (!only || strncmp(line, only, strlen(only)) == 0)
            put("%s: %s", prefix, line);
    fclose(f);
}

static void self_checks(void)
{
    file_lines("/proc/self/status", "status", "Cap");
    file_lines("/proc/self/status", "status", "Seccomp:");
    file_lines("/proc/self/status", "status", "Uid:");
    file_lines("/proc/self/cgroup", "cgroup", NULL);
    file_lines("/proc/self/uid_map", "uid_map", NULL);
    result("unshare_newuser", syscall(SYS_unshare, CLONE_NEWUSER));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    result("clone_newuser", pid);
    unsigned char params[120] = {0};
    long fd = syscall(SYS_io_uring_setup, 1, params);
    result("io_uring_setup", fd);
    if (fd >= 0)
        close((int)fd);
    fd = socket(AF_VSOCK_, SOCK_STREAM, 0);
    result("socket_vsock", fd);
    if (fd >= 0)
        close((int)fd);
    fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT);
    result("socket_netlink_audit", fd);
    if (fd >= 0)
        close((int)fd);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    result("socket_inet", fd);
    if (fd >= 0)
        close((int)fd);
    result("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    result("bpf", syscall(SYS_bpf, 0, NULL, 0));
    result("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    result("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    result("ptrace", syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
    result("setns", syscall(SYS_setns, 0, 0));
}

static void connect_check(const char *target)
{
    char ip[64];
    int port;
    if (sscanf(target, "%63[0-9.]/%d", ip, &port) != 2) {
        put("bad target\n");
        return;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        put("bad address\n");
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        put("socket errno %d\n", errno);
        return;
    }
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0) {
        put("connected\n");
    } else if (errno != EINPROGRESS) {
        put(errno == ECONNREFUSED ? "refused\n" : "errno %d\n", errno);
    } else {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        int r = poll(&p, 1, 1500);
        int e = 0;
        socklen_t el = sizeof(e);
        if (r == 0)
            put("timeout\n");
        else if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
            put("connected\n");
        else
            put(e == ECONNREFUSED ? "refused\n" : "errno %d\n", e);
    }
    close(s);
}

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

int main(void)
{
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    const char *p = getenv("PORT");
    int port = p ? atoi(p) : 80;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 16) < 0) {
        fprintf(stderr, "probe: listen on :%d: %s\n", port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "probe: listening on :%d\n", port);
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        char req[2048];
        ssize_t n = read(c, req, sizeof(req) - 1);
        req[n > 0 ? n : 0] = '\0';
        char path[512] = "/";
        sscanf(req, "GET %511s", path);
        outlen = 0;
        out[0] = '\0';
        if (strcmp(path, "/self") == 0)
            self_checks();
        else if (strncmp(path, "/connect/", 9) == 0)
            connect_check(path + 9);
        else
            put("probe\n");
        char head[256];
        int hn = snprintf(head, sizeof(head),
                          "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                          "%zu\r\nConnection: close\r\n\r\n",
                          outlen);
        if (write(c, head, (size_t)hn) == hn)
            (void)!write(c, out, outlen);
        close(c);
    }
}
