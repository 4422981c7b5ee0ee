/*
 * exec.c: run a helper command (skopeo, umoci, crun) off the event loop and
 * get its exit status and what it printed. The loop never waits: the child is
 * reaped through libuv, its output read through a pipe, and `cb` runs once
 * both are done.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "dirigent/log.h"
#include "exec.h"

static int helper_nice; /* wk_exec_set_nice: the absolute nice value of helpers */
static bool helper_niced;

void wk_exec_set_nice(int nice)
{
    errno = 0;
    int own = getpriority(PRIO_PROCESS, 0);
    if (own == -1 && errno)
        own = 0;
    helper_nice = DG_MIN(own + nice, 19);
    helper_niced = nice > 0;
}

#define OUTPUT_MAX 4096

struct wk_exec {
    struct wk_exec *prev, *next; /* running: libuv reaps these, wk_reap_orphans must not */
    uv_process_t proc;
    uv_pipe_t out;
    char buf[OUTPUT_MAX + 1];
    size_t len;
    int64_t status;
    int term_signal;
    int open; /* handles not yet closed */
    bool exited, eof;
    bool group; /* its own process group (wk_exec_group) */
    wk_exec_cb cb;
    void *ud;
};

static struct wk_exec *running;

static void exec_closed(uv_handle_t *h)
{
    struct wk_exec *x = h->data;
    if (--x->open > 0)
        return;
    x->buf[x->len] = '\0';
    /* trailing newlines are noise in an error message */
    while (x->len > 0 && (x->buf[x->len - 1] == '\n' || x->buf[x->len - 1] == '\r'))
        x->buf[--x->len] = '\0';
    if (x->cb)
        x->cb(x->ud, x->status, x->term_signal, x->buf);
    free(x);
}

static void exec_maybe_done(struct wk_exec *x)
{
    if (!x->exited || !x->eof)
        return;
    uv_close((uv_handle_t *)&x->proc, exec_closed);
    uv_close((uv_handle_t *)&x->out, exec_closed);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    struct wk_exec *x = p->data;
    if (x->prev)
        x->prev->next = x->next;
    else
        running = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->status = status;
    x->term_signal = term_signal;
    x->exited = true;
    exec_maybe_done(x);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char scratch[1024];
    struct wk_exec *x = h->data;
    if (x->len < OUTPUT_MAX)
        *buf = uv_buf_init(x->buf + x->len, (unsigned)(OUTPUT_MAX - x->len));
    else /* keep reading (the child must not block on a full pipe), drop the rest */
        *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct wk_exec *x = s->data;
    if (n > 0 && buf->base == x->buf + x->len)
        x->len += (size_t)n;
    if (n < 0) {
        uv_read_stop(s);
        x->eof = true;
        exec_maybe_done(x);
    }
}

static struct wk_exec *exec_start(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture,
                                  bool group, wk_exec_cb cb, void *ud, struct dg_err *err)
{
    struct wk_exec *x = dg_xcalloc(1, sizeof(*x));
    x->cb = cb;
    x->ud = ud;
    x->proc.data = x;
    x->out.data = x;
    uv_pipe_init(loop, &x->out, 0);
    /* one stream is read: stderr (the reason of a failure), or stdout when that is the
     * answer (the other one goes to the worker's stderr) */
    uv_stdio_container_t pipe = {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
                                 .data.stream = (uv_stream_t *)&x->out};
    uv_stdio_container_t inherit = {.flags = UV_INHERIT_FD, .data.fd = 2};
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     capture == WK_EXEC_STDOUT ? pipe : inherit,
                                     capture == WK_EXEC_STDERR ? pipe : inherit};
    uv_process_options_t opts = {.exit_cb = on_exit_cb,
                                 .file = argv[0],
                                 .args = (char **)argv,
                                 .stdio_count = 3,
                                 .stdio = stdio,
                                 .flags = group ? UV_PROCESS_DETACHED : 0};
    x->group = group;
    int rc = uv_spawn(loop, &x->proc, &opts);
    if (rc < 0) {
        x->cb = NULL;
        x->open = 2;
        x->exited = x->eof = true;
        exec_maybe_done(x);
        dg_err_set(err, rc, "cannot run %s: %s", argv[0], uv_strerror(rc));
        return NULL;
    }
    /* below the worker (issue 16): its loop (heartbeats, the API, exit notices) goes first
     * when the CPUs are busy. Set right after the exec: what the command forks later inherits
     * it; a container's processes are weighed by their own cgroup's cpu.shares anyway */
    if (helper_niced && setpriority(PRIO_PROCESS, (id_t)x->proc.pid, helper_nice) == -1)
        dg_log(DG_LOG_DEBUG, "exec", "setpriority %s: %m", argv[0]);
    x->open = 2;
    x->next = running;
    if (running)
        running->prev = x;
    running = x;
    if (capture == WK_EXEC_NONE) /* nothing to read (a detached container keeps our fds) */
        x->eof = true;
    else
        uv_read_start((uv_stream_t *)&x->out, on_alloc, on_read);
    return x;
}

int wk_exec(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture, wk_exec_cb cb,
            void *ud, struct dg_err *err)
{
    return exec_start(loop, argv, capture, false, cb, ud, err) ? 0 : -1;
}

struct wk_exec *wk_exec_group(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture,
                              wk_exec_cb cb, void *ud, struct dg_err *err)
{
    return exec_start(loop, argv, capture, true, cb, ud, err);
}

void wk_exec_kill(struct wk_exec *x)
{
    /* not once it exited: its pid (the group's id) may be another's by now */
    if (x && x->group && !x->exited && x->proc.pid > 0)
        kill(-x->proc.pid, SIGKILL);
}

const char *wk_tool_message(const char *out)
{
    /* skopeo and umoci log as `time="..." level=fatal msg="the reason"`: keep the reason */
    static __thread char msg[OUTPUT_MAX + 1];
    const char *m = strstr(out, "msg=\"");
    if (!m)
        return out;
    m += 5;
    size_t n = 0;
    for (const char *p = m; *p && *p != '\n' && n < OUTPUT_MAX; p++) {
        if (*p == '"' && p[-1] != '\\')
            break;
        if (*p == '\\' && p[1] == '"')
            continue;
        msg[n++] = *p;
    }
    msg[n] = '\0';
    return msg;
}

int wk_run_sync(char *const argv[], char *out, size_t outlen)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == -1)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t r = out && len + 1 < outlen ? read(fds[0], out + len, outlen - 1 - len)
                                            : read(fds[0], (char[256]){0}, 256);
        if (r > 0 && out && len + 1 < outlen)
            len += (size_t)r;
        else if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    close(fds[0]);
    if (out && outlen)
        out[len] = '\0';
    int st = 0;
    if (pid < 0)
        return -1;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

unsigned wk_reap_orphans(bool (*keep)(pid_t pid, void *ud), void *ud)
{
    /* children of this process that exited and that nobody else waits for: the middle
     * processes of `crun run --detach`, reparented to us as the subreaper */
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    unsigned reaped = 0;
    for (char *p = buf, *end; *p; p = end) {
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        bool ours = false;
        for (struct wk_exec *x = running; x && !ours; x = x->next)
            ours = x->proc.pid == pid;
        if (ours || (keep && keep((pid_t)pid, ud)))
            continue;
        /* only a zombie: a live orphan (a container's init) is left alone */
        char stat[64], st[256];
        snprintf(stat, sizeof(stat), "/proc/%ld/stat", pid);
        int sfd = open(stat, O_RDONLY | O_CLOEXEC);
        if (sfd == -1)
            continue;
        ssize_t k = read(sfd, st, sizeof(st) - 1);
        close(sfd);
        if (k <= 0)
            continue;
        st[k] = '\0';
        const char *rparen = strrchr(st, ')');
        if (rparen && rparen[1] == ' ' && rparen[2] == 'Z' &&
            waitpid((pid_t)pid, NULL, WNOHANG) == (pid_t)pid)
            reaped++;
    }
    return reaped;
}
