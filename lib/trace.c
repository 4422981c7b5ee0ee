/*
 * trace.c: see trace.h.
 */
#include "dirigent/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLUSH_BYTES (64 * 1024)

struct dg_trace {
    uv_loop_t *loop;
    uv_file fd;
    uv_timer_t timer;
    uv_fs_t req;
    struct dg_buf pending, writing; /* rows waiting; rows being written */
    bool in_flight, closing, timer_gone;
};

static void flush(struct dg_trace *t);

/* Free once both the timer is closed and no write is in flight. */
static void trace_free(struct dg_trace *t)
{
    if (t->in_flight || !t->timer_gone)
        return; /* the other one finishes the close */
    close(t->fd);
    dg_buf_free(&t->pending);
    dg_buf_free(&t->writing);
    free(t);
}

static void timer_closed(uv_handle_t *h)
{
    struct dg_trace *t = h->data;
    t->timer_gone = true;
    trace_free(t);
}

static void on_write(uv_fs_t *req)
{
    struct dg_trace *t = req->data;
    if (req->result < 0)
        fprintf(stderr, "trace: write failed: %s\n", uv_strerror((int)req->result));
    uv_fs_req_cleanup(req);
    t->in_flight = false;
    dg_buf_reset(&t->writing);
    if (t->pending.len)
        flush(t);
    else if (t->closing)
        trace_free(t);
}

static void flush(struct dg_trace *t)
{
    if (t->in_flight || t->pending.len == 0)
        return;
    struct dg_buf b = t->writing;
    t->writing = t->pending;
    t->pending = b;
    uv_buf_t buf = uv_buf_init(t->writing.data, (unsigned)t->writing.len);
    t->req.data = t;
    if (uv_fs_write(t->loop, &t->req, t->fd, &buf, 1, -1, on_write) == 0)
        t->in_flight = true;
}

static void on_timer(uv_timer_t *h)
{
    flush(h->data);
}

struct dg_trace *dg_trace_open(uv_loop_t *loop, const char *dir, const char *name,
                               const char *header, struct dg_err *err)
{
    if (dg_mkdir_p(dir, 0755, err) < 0) {
        dg_err_wrap(err, "trace folder '%s'", dir);
        return NULL;
    }
    char *path = dg_xasprintf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd == -1) {
        dg_err_set(err, -errno, "trace file '%s': %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    free(path);
    struct dg_trace *t = dg_xcalloc(1, sizeof(*t));
    t->loop = loop;
    t->fd = fd;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size == 0)
        dg_buf_printf(&t->pending, "%s\n", header);
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, on_timer, 1000, 1000);
    uv_unref((uv_handle_t *)&t->timer);
    return t;
}

void dg_trace_row(struct dg_trace *t, const char *fmt, ...)
{
    if (!t)
        return;
    va_list ap;
    va_start(ap, fmt);
    dg_buf_vprintf(&t->pending, fmt, ap);
    va_end(ap);
    dg_buf_append(&t->pending, "\n", 1);
    if (t->pending.len >= FLUSH_BYTES)
        flush(t);
}

void dg_trace_close(struct dg_trace *t)
{
    if (!t)
        return;
    t->closing = true;
    flush(t);
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, timer_closed);
}
