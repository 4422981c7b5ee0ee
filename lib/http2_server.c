/*
 * http2_server.c: HTTP/2 cleartext (h2c) on the HTTP server's connections, with libnghttp2 for
 * framing, HPACK, flow control, SETTINGS/PING/GOAWAY.
 *
 * A connection of a server with dg_http_server_enable_h2c turns into an HTTP/2 connection when
 * its first bytes start the client preface (prior knowledge) or after an HTTP/1.1 request with
 * "Upgrade: h2c" (http_server.c answers that request here as stream 1). It keeps its libuv
 * handles, its place in the server's list and the connection caps; its state is C_H2 and its
 * timer is driven from here.
 *
 * Each stream is a struct dg_http_req that goes through the same routes, auth hook, limits and
 * handlers as an HTTP/1.1 request; the public dg_http_* calls branch here when r->is_h2.
 *
 * Flow control: nghttp2 sends no WINDOW_UPDATE by itself. The connection window is given back
 * as soon as DATA arrives; a stream's window only when the body went to the handler (buffered
 * routes: at once; streaming routes: when on_data ran). A streaming handler that holds or
 * pauses the body thus stops its stream only, at most one stream window (64 KiB) buffered.
 * Responses: what the handler writes is queued on its stream and handed to nghttp2 through a
 * deferred data source; frames are written while the socket queue is below 256 KiB.
 *
 * Lifetimes: nghttp2 must not be re-entered from its callbacks, so frames are written only
 * outside them (h->depth). A stream and its request are freed from the loop ("reaped") after
 * nghttp2 closed the stream, never inside a handler's call; on_abort runs from there too.
 */
#include "http_internal.h"
#include "dirigent/log.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define H2_SEND_BATCH  (64 * 1024)
#define H2_CONN_WINDOW (1 << 20) /* connection-level receive window */

struct dg__h2s {
    struct dg__h2c *h;
    struct dg__h2s *prev, *next; /* open streams of the connection; the reap list once closed */
    int32_t id;
    struct dg_http_req *req; /* NULL once detached or freed */
    /* the request head as it arrives */
    struct dg_buf path, authority;
    uint64_t hdr_bytes;
    const char *hdr_err; /* over a limit: answered with 431 and this text */
    int bad_status;      /* another problem of the head: answered with this status */
    const char *bad_msg;
    bool url_done, dispatched, remote_ended, end_called, delivering, discard, has_host;
    bool grpc; /* content-type application/grpc: the server's own errors as grpc-status */
    /* the body the handler has not taken yet (held or paused streaming route) */
    struct dg_buf in;
    size_t in_off;
    uint64_t hdr_deadline, body_deadline; /* loop ms; 0: none */
    /* the response */
    struct dg_buf out, trailers;
    size_t out_off;
    bool submitted, eof, local_ended, rst;
    int64_t pending_cl; /* resp_start with length 0: HEADERS wait for the end */
    int pending_status;
};

struct dg__h2c {
    struct conn *c;
    nghttp2_session *ses;
    struct dg__h2s *streams; /* open */
    struct dg__h2s *dead;    /* closed, to be freed from the loop */
    struct dg__h2s *spare;   /* freed streams kept for reuse, with their buffers */
    unsigned nspare;
    struct dg_http_req *spare_req[32]; /* ended requests kept for reuse, with their buffers */
    unsigned nspare_req;
    struct dg_http_req **aborts;
    size_t naborts, cap_aborts;
    struct dg_buf wbuf;
    unsigned nstreams;
    int depth;      /* inside nghttp2 (mem_recv, mem_send): no flush, no frees */
    unsigned entry; /* inside one of our loop callbacks: reaped at its end */
    bool want_flush, goaway, detached, reap_due;
    bool close_after;  /* shut down once the queued frames are written */
    bool flush_queued; /* on the server's h2_flush_list */
    struct dg__h2c *flush_next;
    uint64_t idle_deadline;
};

static const struct dg__h2_ops h2_ops;
static void h2_flush(struct dg__h2c *h);
static void h2_flush_soon(struct dg__h2c *h);
static void h2_arm(struct dg__h2c *h, uint64_t deadline);
static void stream_body_clock(struct dg__h2s *st);
static void stream_fail(struct dg__h2s *st, int status, const char *msg);

static uint64_t now_ms(const struct dg__h2c *h)
{
    return uv_now(h->c->srv->loop);
}

static bool h2_op_is_preface(const char *data, size_t len)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t n = DG_MIN(len, sizeof(preface) - 1);
    return len >= 3 && memcmp(data, preface, n) == 0;
}

/* ---- requests and streams ------------------------------------------------------------------ */

static struct dg_http_req *req_alloc(struct dg__h2c *h, struct dg__h2s *st)
{
    struct conn *c = h->c;
    struct dg_http_req *r;
    if (h->nspare_req) {
        r = h->spare_req[--h->nspare_req];
        dg__req_reset(r);
    } else {
        r = dg_xcalloc(1, sizeof(*r));
    }
    r->is_h2 = true;
    r->h2ops = &h2_ops;
    r->h2s = st;
    r->resp_remaining = -1;
    r->keep_alive = true;
    r->vminor = 1;
    r->method = r->h2_method;
    dg_buf_reserve(&r->hdrs.bytes, 511); /* the url and the fields: one allocation */
    memcpy(r->peer, c->peer, sizeof(r->peer));
    r->h2_counted = true;
    c->srv->stats.active_reqs++;
    return r;
}

static void req_uncount(struct dg__h2c *h, struct dg_http_req *r)
{
    if (r->h2_counted) {
        r->h2_counted = false;
        h->c->srv->stats.active_reqs--;
    }
}

/* Streams kept per connection for reuse: a stream's object and buffers are allocated once, not
 * once per request (the allocator was a sixth of the DP's CPU over h2c). */
#define H2_SPARE_STREAMS 32
#define H2_SPARE_BUF_MAX 16384 /* a buffer grown past this is released, not kept */

static void stream_free(struct dg__h2s *st)
{
    dg_buf_free(&st->path);
    dg_buf_free(&st->authority);
    dg_buf_free(&st->in);
    dg_buf_free(&st->out);
    dg_buf_free(&st->trailers);
    free(st);
}

static void list_unlink(struct dg__h2s **head, struct dg__h2s *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else if (*head == st)
        *head = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
}

static void list_push(struct dg__h2s **head, struct dg__h2s *st)
{
    st->prev = NULL;
    st->next = *head;
    if (*head)
        (*head)->prev = st;
    *head = st;
}

static void schedule_reap(struct dg__h2c *h)
{
    if (h->reap_due)
        return; /* already coming: the timer is armed, or an entry ends with it */
    h->reap_due = true;
    if (!h->entry && !h->detached)
        dg__conn_timer_start(h->c, 0);
}

/* The request leaves its stream. A handler that holds it (called, response not ended) is told
 * through on_abort from the loop; any other is freed from the loop. */
static void req_detach(struct dg__h2c *h, struct dg__h2s *st)
{
    struct dg_http_req *r = st->req;
    if (!r)
        return;
    st->req = NULL;
    r->h2s = NULL;
    req_uncount(h, r);
    if (r->handler_called && !r->resp_ended && !r->handler_done) {
        r->resp_started = true; /* whatever the handler does now goes nowhere */
        r->abort_pending = true;
    } else {
        r->handler_done = true; /* freed with the reap */
    }
    if (h->naborts == h->cap_aborts) {
        h->cap_aborts = h->cap_aborts ? h->cap_aborts * 2 : 8;
        h->aborts = dg_xrealloc(h->aborts, h->cap_aborts * sizeof(*h->aborts));
    }
    h->aborts[h->naborts++] = r;
    schedule_reap(h);
}

/* Free closed streams and requests, run on_abort: only from the loop. */
static void h2_reap(struct dg__h2c *h)
{
    h->reap_due = false;
    while (h->dead) {
        struct dg__h2s *st = h->dead;
        list_unlink(&h->dead, st);
        if (h->nspare < H2_SPARE_STREAMS && !h->detached) {
            st->next = h->spare;
            h->spare = st;
            h->nspare++;
        } else {
            stream_free(st);
        }
    }
    while (h->naborts > 0) {
        struct dg_http_req *r = h->aborts[--h->naborts];
        if (r->abort_pending && !r->handler_done) {
            if (r->on_abort) {
                r->on_abort(r, r->abort_ud);
                dg__req_free(r);
            } else {
                r->abort_pending = false; /* orphaned: freed when the handler ends it */
            }
        } else if (!h->detached && h->nspare_req < DG_ARRAY_LEN(h->spare_req)) {
            h->spare_req[h->nspare_req++] = r; /* ended and let go: reused by a next stream */
        } else {
            dg__req_free(r);
        }
    }
}

/* ---- writing ------------------------------------------------------------------------------- */

static bool conn_writable(const struct conn *c)
{
    return c->state == C_H2 && !c->dead && !c->shutting_down;
}

/* Hand nghttp2's frames to the socket while its queue is short; shut the connection down once
 * the session is over (GOAWAY sent or received, nothing left). */
static void h2_flush(struct dg__h2c *h)
{
    struct conn *c = h->c;
    if (h->depth > 0) {
        h->want_flush = true;
        return;
    }
    if (h->detached || !conn_writable(c))
        return;
    do {
        h->want_flush = false;
        while (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= WRITE_HIGH) {
            const uint8_t *data;
            h->depth++;
            ssize_t n = nghttp2_session_mem_send(h->ses, &data);
            h->depth--;
            if (n < 0) {
                dg_log(DG_LOG_DEBUG, c->srv->name, "%s: h2: %s", c->peer, nghttp2_strerror((int)n));
                dg__conn_kill(c);
                return;
            }
            if (n == 0)
                break;
            dg_buf_append(&h->wbuf, data, (size_t)n);
            if (h->wbuf.len >= H2_SEND_BATCH) {
                uv_buf_t b = uv_buf_init(h->wbuf.data, (unsigned)h->wbuf.len);
                dg__conn_write(c, &b, 1);
                dg_buf_reset(&h->wbuf);
                if (!conn_writable(c))
                    return;
            }
        }
        if (h->wbuf.len) {
            uv_buf_t b = uv_buf_init(h->wbuf.data, (unsigned)h->wbuf.len);
            dg__conn_write(c, &b, 1);
            dg_buf_reset(&h->wbuf);
            if (!conn_writable(c))
                return;
        }
    } while (h->want_flush);
    if (h->close_after ||
        (!nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses)))
        dg__conn_shutdown(c); /* after the queued writes */
    else
        dg__conn_update_reading(c);
}

/* Streams whose queue emptied get their on_drain (loop contexts only). */
static void h2_drains(struct dg__h2c *h);

/* After the loop turn's callbacks (uv_check): every connection that has frames to write writes
 * them in one go, so the answers of many streams finished in one turn (a batch of upstream
 * responses read together) cost one write, not one each. Output queued by a drain handler
 * is flushed in the same call. */
static void h2_check_cb(uv_check_t *t)
{
    struct dg_http_server *s = t->data;
    for (unsigned round = 0; s->h2_flush_list && round < 64; round++) {
        struct dg__h2c *list = s->h2_flush_list;
        s->h2_flush_list = NULL;
        while (list) {
            struct dg__h2c *h = list;
            list = h->flush_next;
            h->flush_next = NULL;
            h->flush_queued = false;
            if (h->detached)
                continue;
            h->entry++; /* a flush from here may free streams: at its end */
            h2_flush(h);
            h2_drains(h);
            if (--h->entry == 0 && h->reap_due)
                h2_reap(h);
        }
    }
    if (!s->h2_flush_list) {
        uv_check_stop(t);
        uv_idle_stop(&s->h2_idle);
    }
}

static void h2_idle_cb(uv_idle_t *t)
{
    (void)t; /* only there so the loop's poll does not block while a flush is due */
}

static void h2_flush_soon(struct dg__h2c *h)
{
    if (h->flush_queued || h->detached)
        return;
    struct dg_http_server *s = h->c->srv;
    h->flush_queued = true;
    h->flush_next = s->h2_flush_list;
    s->h2_flush_list = h;
    if (!uv_is_active((uv_handle_t *)&s->h2_check)) {
        uv_check_start(&s->h2_check, h2_check_cb);
        /* queued from a timer (before the poll): the poll must not block the check */
        uv_idle_start(&s->h2_idle, h2_idle_cb);
    }
}

static void h2_unqueue(struct dg__h2c *h)
{
    if (!h->flush_queued)
        return;
    h->flush_queued = false;
    for (struct dg__h2c **p = &h->c->srv->h2_flush_list; *p; p = &(*p)->flush_next)
        if (*p == h) {
            *p = h->flush_next;
            break;
        }
    h->flush_next = NULL;
}

static void h2_drains(struct dg__h2c *h)
{
    bool again = true;
    while (again && !h->detached) {
        again = false;
        for (struct dg__h2s *st = h->streams; st; st = st->next) {
            struct dg_http_req *r = st->req;
            if (r && r->on_drain && !r->resp_ended && st->out.len == st->out_off) {
                void (*fn)(struct dg_http_req *, void *) = r->on_drain;
                r->on_drain = NULL;
                fn(r, r->drain_ud);
                again = true; /* the list may have changed */
                break;
            }
        }
    }
}

static void entry_begin(struct dg__h2c *h)
{
    h->entry++;
}

static void entry_end(struct dg__h2c *h)
{
    if (--h->entry > 0)
        return;
    if (!h->detached) {
        h2_flush(h);
        h2_drains(h);
    }
    if (h->reap_due)
        h2_reap(h);
}

/* ---- responses ----------------------------------------------------------------------------- */

static bool status_has_body(int status)
{
    return !(status == 204 || status == 304 || (status >= 100 && status < 200));
}

static bool h2_forbidden(struct dg_str name)
{
    static const char *const hop[] = {"connection",        "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade",    "te",
                                      "content-length",    "date",       "http2-settings"};
    if (name.len == 0 || name.ptr[0] == ':')
        return true;
    for (size_t i = 0; i < DG_ARRAY_LEN(hop); i++)
        if (dg_str_caseeq(name, hop[i]))
            return true;
    return false;
}

/* "Name: value\r\n" lines into nv entries with lower-case names (copied into `names`). */
struct nvlist {
    nghttp2_nv *nv; /* inl until more are needed */
    size_t n, cap;
    struct dg_buf names;
    nghttp2_nv inl[24];
    char names_inl[1024];
    bool inl_used; /* names_inl holds names already */
};

/* An empty list on its inline storage (l must not move while in use). */
static void nv_init(struct nvlist *l)
{
    l->nv = l->inl;
    l->n = 0;
    l->cap = DG_ARRAY_LEN(l->inl);
    l->names = (struct dg_buf){0};
    l->inl_used = false;
}

static void nv_add(struct nvlist *l, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (l->n == l->cap) {
        l->cap *= 2;
        if (l->nv == l->inl) {
            l->nv = dg_xmalloc(l->cap * sizeof(*l->nv));
            memcpy(l->nv, l->inl, l->n * sizeof(*l->nv));
        } else {
            l->nv = dg_xrealloc(l->nv, l->cap * sizeof(*l->nv));
        }
    }
    l->nv[l->n++] =
        (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen, NGHTTP2_NV_FLAG_NONE};
}

/* Lines are parsed after every name was lower-cased into l->names (which must not move then). */
static void nv_add_lines(struct nvlist *l, const struct dg_buf *lines, bool filter)
{
    if (!lines->len)
        return;
    char *p;
    if (!l->inl_used && lines->len <= sizeof(l->names_inl)) {
        p = l->names_inl; /* no allocation for the usual few headers */
        l->inl_used = true;
    } else {
        dg_buf_reset(&l->names);
        dg_buf_reserve(&l->names, lines->len);
        l->names.len = lines->len;
        p = l->names.data;
    }
    memcpy(p, lines->data, lines->len);
    char *end = p + lines->len;
    while (p < end) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *le = eol ? eol : end;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        char *colon = memchr(p, ':', ll);
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            char *v = colon + 1;
            while (v < p + ll && (*v == ' ' || *v == '\t'))
                v++;
            for (size_t i = 0; i < nlen; i++)
                if (p[i] >= 'A' && p[i] <= 'Z')
                    p[i] = (char)(p[i] - 'A' + 'a');
            if (!filter || !h2_forbidden((struct dg_str){p, nlen}))
                nv_add(l, p, nlen, v, (size_t)(p + ll - v));
        }
        p = eol ? eol + 1 : end;
    }
}

static void nv_free(struct nvlist *l)
{
    if (l->nv != l->inl)
        free(l->nv);
    dg_buf_free(&l->names);
}

static ssize_t data_read(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ud;
    struct dg__h2s *st = src->ptr;
    size_t avail = st->out.len - st->out_off;
    size_t n = DG_MIN(avail, length);
    if (n) {
        memcpy(buf, st->out.data + st->out_off, n);
        st->out_off += n;
        if (st->out_off == st->out.len) {
            st->out.len = st->out_off = 0;
        } else if (st->out_off >= H2_SEND_BATCH && st->out_off * 2 >= st->out.len) {
            memmove(st->out.data, st->out.data + st->out_off, st->out.len - st->out_off);
            st->out.len -= st->out_off;
            st->out_off = 0;
        }
    }
    if (st->out.len != st->out_off)
        return (ssize_t)n;
    if (!st->eof) {
        if (n)
            return (ssize_t)n;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->trailers.len) {
        struct nvlist l;
        nv_init(&l);
        nv_add_lines(&l, &st->trailers, true);
        if (l.n && nghttp2_submit_trailer(ses, id, l.nv, l.n) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nv_free(&l);
    }
    return (ssize_t)n;
}

/* HEADERS of a response: status, the handler's headers (lower-cased, connection-specific ones
 * dropped), content-type, content-length when known, date. With `data` a DATA source follows;
 * without, HEADERS carries END_STREAM. */
static void submit_head(struct dg__h2s *st, int status, const char *ctype,
                        const struct dg_buf *hdrs, int64_t content_length, bool data)
{
    struct dg__h2c *h = st->h;
    char sbuf[24], clbuf[24];
    struct nvlist l;
    nv_init(&l);
    int sn = (int)dg_fmt_u64(sbuf, (uint64_t)(status < 0 ? 0 : status % 1000));
    nv_add(&l, ":status", 7, sbuf, (size_t)sn);
    if (hdrs)
        nv_add_lines(&l, hdrs, true);
    if (ctype)
        nv_add(&l, "content-type", 12, ctype, strlen(ctype));
    if (content_length >= 0 && status_has_body(status) && (data || content_length > 0)) {
        size_t n = dg_fmt_u64(clbuf, (uint64_t)content_length);
        nv_add(&l, "content-length", 14, clbuf, n);
    }
    const char *date = dg__http_date_line(); /* "Date: ...\r\n" */
    size_t dl = strlen(date);
    if (dl > 8)
        nv_add(&l, "date", 4, date + 6, dl - 8);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
    st->submitted = true;
    int rv = nghttp2_submit_response(h->ses, st->id, l.nv, l.n, data ? &prd : NULL);
    if (rv != 0)
        dg_log(DG_LOG_DEBUG, h->c->srv->name, "%s: h2 stream %d: %s", h->c->peer, st->id,
               nghttp2_strerror(rv));
    if (!data)
        st->eof = true;
    nv_free(&l);
}

static void stream_resume(struct dg__h2s *st)
{
    if (st->submitted && !st->rst)
        nghttp2_session_resume_data(st->h->ses, st->id);
}

/* The handler ended its response (or it was never called and we answered). */
static void req_done(struct dg_http_req *r)
{
    r->resp_ended = true;
    struct dg__h2s *st = r->h2s;
    if (!st) { /* detached: the stream is gone */
        r->handler_done = true;
        if (!r->abort_pending)
            dg__req_free(r);
        return;
    }
    req_uncount(st->h, r);
    h2_flush_soon(st->h);
}

/* The gRPC status for an error status of the server's own (gRPC's HTTP mapping, with the
 * limits as RESOURCE_EXHAUSTED and the timeouts as DEADLINE_EXCEEDED). */
static int grpc_code(int status)
{
    switch (status) {
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
    case 405:
    case 501:
        return 12; /* UNIMPLEMENTED */
    case 408:
        return 4; /* DEADLINE_EXCEEDED */
    case 413:
    case 431:
        return 8; /* RESOURCE_EXHAUSTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    case 400:
        return 13; /* INTERNAL */
    default:
        return 2; /* UNKNOWN */
    }
}

/* An answer of the server's own: the request was not handed to a handler. A gRPC request gets
 * gRPC's trailers-only answer (HTTP 200, grpc-status, grpc-message) a gRPC client can read. */
static void respond_plain(struct dg_http_req *r, int status, const char *msg)
{
    r->handler_called = true;
    if (r->h2s && r->h2s->grpc && !r->resp_started) {
        dg_buf_reset(&r->resp_hdrs); /* a handler's headers do not go with it */
        dg_http_respond_grpc(r, grpc_code(status), "%s", msg);
        return;
    }
    dg_http_respond_text(r, status, "%s", msg);
}

static void h2_op_respond(struct dg_http_req *r, int status, const char *content_type,
                          const void *body, size_t len)
{
    if (r->resp_started) {
        if (!r->h2s && !r->resp_ended)
            req_done(r);
        return;
    }
    r->resp_started = true;
    struct dg__h2s *st = r->h2s;
    if (st && !st->rst) {
        bool has_body = status_has_body(status);
        bool data = has_body && len > 0 && !r->head_method;
        if (data)
            dg_buf_append(&st->out, body, len);
        st->eof = true;
        submit_head(st, status, has_body ? content_type : NULL, &r->resp_hdrs,
                    has_body ? (int64_t)len : -1, data);
    }
    req_done(r);
}

static void h2_op_resp_start(struct dg_http_req *r, int status, int64_t content_length)
{
    if (r->resp_started)
        return;
    r->resp_started = true;
    struct dg__h2s *st = r->h2s;
    if (!st || st->rst)
        return;
    if (!status_has_body(status) || r->head_method) {
        /* nothing may follow: HEADERS at the end, with trailers if any */
        st->pending_status = status;
        st->pending_cl = status_has_body(status) ? content_length : -1;
        return;
    }
    if (content_length == 0) { /* trailers-only or empty: decided at the end */
        st->pending_status = status;
        st->pending_cl = 0;
        return;
    }
    submit_head(st, status, NULL, &r->resp_hdrs, content_length, true);
}

static void h2_op_resp_write(struct dg_http_req *r, const void *data, size_t len)
{
    struct dg__h2s *st = r->h2s;
    if (!st || !len || r->head_method || r->resp_ended || !r->resp_started || st->rst ||
        !st->submitted)
        return;
    dg_buf_append(&st->out, data, len);
    stream_resume(st);
    h2_flush_soon(st->h);
}

static void h2_op_resp_end(struct dg_http_req *r)
{
    if (r->resp_ended)
        return;
    struct dg__h2s *st = r->h2s;
    if (st && !st->rst && r->resp_started) {
        dg_buf_append(&st->trailers, r->trailers.data, r->trailers.len);
        st->eof = true;
        if (!st->submitted) {
            /* HEADERS with END_STREAM, or HEADERS + trailers when there are any */
            submit_head(st, st->pending_status ? st->pending_status : 200, NULL, &r->resp_hdrs,
                        st->pending_cl, st->trailers.len > 0);
        } else {
            stream_resume(st);
        }
    }
    req_done(r);
}

static void h2_op_resp_abort(struct dg_http_req *r)
{
    if (r->resp_ended)
        return;
    struct dg__h2s *st = r->h2s;
    if (st && !st->rst) {
        st->rst = true;
        nghttp2_submit_rst_stream(st->h->ses, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    }
    req_done(r);
}

static size_t h2_op_resp_queued(const struct dg_http_req *r)
{
    const struct dg__h2s *st = r->h2s;
    return st ? st->out.len - st->out_off : 0;
}

/* The server's own error on a stream (limits, timeouts): answered when nothing was sent yet,
 * else the stream is reset; a handler holding the request gets on_abort. */
static void stream_fail(struct dg__h2s *st, int status, const char *msg)
{
    struct dg__h2c *h = st->h;
    struct dg_http_req *r = st->req;
    dg_log(DG_LOG_DEBUG, h->c->srv->name, "%s: h2 stream %d: %d %s", h->c->peer, st->id, status,
           msg);
    st->discard = true;
    st->body_deadline = 0;
    if (r && !r->handler_called && !r->resp_started) {
        respond_plain(r, status, msg);
        return;
    }
    bool sent = r ? r->resp_started : st->submitted;
    if (r)
        req_detach(h, st);
    if (st->rst || st->local_ended)
        return;
    if (!sent && !st->submitted && st->grpc) {
        struct dg_buf lines = {0};
        dg__grpc_lines(&lines, grpc_code(status), msg);
        st->eof = true;
        submit_head(st, 200, "application/grpc", &lines, -1, false);
        dg_buf_free(&lines);
    } else if (!sent && !st->submitted) {
        char text[256];
        int n = snprintf(text, sizeof(text), "%s\n", msg);
        dg_buf_reset(&st->out);
        st->out_off = 0;
        dg_buf_append(&st->out, text, (size_t)DG_MIN(n, (int)sizeof(text) - 1));
        st->eof = true;
        submit_head(st, status, "text/plain", NULL, (int64_t)st->out.len, true);
    } else {
        st->rst = true;
        nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    }
}

/* ---- request bodies ------------------------------------------------------------------------ */

/* The body read clock and deadline of a stream, as http_server.c's arm_body_timer: runs while
 * the server reads the body (not held, not paused, not complete). */
static void stream_body_clock(struct dg__h2s *st)
{
    struct dg__h2c *h = st->h;
    struct dg_http_req *r = st->req;
    const struct dg_http_limits *l = &h->c->srv->limits;
    uint64_t now = now_ms(h);
    if (!r) {
        st->body_deadline = 0;
        return;
    }
    if (r->body_clock_on) {
        r->body_spent += now - r->body_since;
        r->body_clock_on = false;
    }
    if (!st->dispatched || st->remote_ended || st->discard || r->body_held || r->user_paused ||
        r->resp_ended || !l->body_timeout_ms) {
        st->body_deadline = 0;
        return;
    }
    st->body_deadline = now + dg__body_clock_start(l, r, now);
    h2_arm(h, st->body_deadline);
}

/* Give the handler what it may take now: buffered bytes, then on_end once the stream ended. */
static void stream_deliver(struct dg__h2s *st)
{
    struct dg__h2c *h = st->h;
    if (st->delivering)
        return;
    st->delivering = true;
    for (;;) {
        struct dg_http_req *r = st->req;
        if (!r || r->resp_ended || !r->body_wanted || r->body_held || r->user_paused)
            break;
        size_t avail = st->in.len - st->in_off;
        if (avail) {
            size_t n = DG_MIN(avail, (size_t)16384);
            const char *p = st->in.data + st->in_off;
            st->in_off += n;
            if (!h->detached)
                nghttp2_session_consume_stream(h->ses, st->id, n);
            if (r->on_data)
                r->on_data(r, p, n, r->body_ud); /* p stays valid: nothing appends meanwhile */
            if (st->in_off == st->in.len)
                st->in.len = st->in_off = 0;
            continue;
        }
        if (st->remote_ended && !st->end_called) {
            st->end_called = true;
            if (r->on_end)
                r->on_end(r, r->body_ud);
        }
        break;
    }
    st->delivering = false;
}

static void h2_op_read_body(struct dg_http_req *r)
{
    struct dg__h2s *st = r->h2s;
    if (!st) {
        if (r->msg_complete && r->on_end)
            r->on_end(r, r->body_ud);
        return;
    }
    struct dg__h2c *h = st->h;
    r->body_held = false;
    if (st->remote_ended && st->in.len == st->in_off) {
        st->end_called = true;
        if (r->on_end)
            r->on_end(r, r->body_ud);
        return;
    }
    stream_body_clock(st);
    stream_deliver(st);
    h2_flush_soon(h); /* window updates */
}

static void h2_op_pause(struct dg_http_req *r, bool pause)
{
    if (r->user_paused == pause)
        return;
    r->user_paused = pause;
    struct dg__h2s *st = r->h2s;
    if (!st)
        return;
    struct dg__h2c *h = st->h;
    stream_body_clock(st);
    if (!pause)
        stream_deliver(st);
    h2_flush_soon(h);
}

/* ---- the request head ---------------------------------------------------------------------- */

/* Write the url into the header storage (before the first regular header). */
static void stream_url(struct dg__h2s *st)
{
    if (st->url_done)
        return;
    st->url_done = true;
    struct dg_http_req *r = st->req;
    dg_buf_append(&r->hdrs.bytes, st->path.data ? st->path.data : "", st->path.len);
    r->url_len = (uint32_t)st->path.len;
}

static void dispatch(struct dg__h2s *st, bool end_stream)
{
    struct dg__h2c *h = st->h;
    struct dg_http_server *s = h->c->srv;
    struct dg_http_req *r = st->req;
    st->dispatched = true;
    st->hdr_deadline = 0;

    if (!r)
        return;
    stream_url(st);
    if (st->authority.len && !st->hdr_err && !st->has_host) {
        dg__hdrs_field(&r->hdrs, "host", 4, UINT32_MAX);
        dg__hdrs_value(&r->hdrs, st->authority.data, st->authority.len);
    }
    dg__hdrs_finish(&r->hdrs);
    struct dg_str url = {r->hdrs.bytes.data, r->url_len};
    const char *q = url.ptr ? memchr(url.ptr, '?', url.len) : NULL;
    if (q) {
        r->path = (struct dg_str){url.ptr, (size_t)(q - url.ptr)};
        r->query = (struct dg_str){q + 1, url.len - (size_t)(q - url.ptr) - 1};
    } else {
        r->path = url;
    }
    r->head_method = strcmp(r->method, "HEAD") == 0;
    struct dg_str cl = dg__hdrs_get(&r->hdrs, "content-length");
    if (end_stream) {
        r->content_length = 0;
        r->msg_complete = true;
        st->remote_ended = true;
    } else if (cl.ptr) {
        uint64_t v = 0;
        for (size_t i = 0; i < cl.len && v < UINT64_MAX / 20; i++)
            v = v * 10 + (uint64_t)(cl.ptr[i] - '0'); /* digits: nghttp2 checked */
        r->content_length = v > INT64_MAX ? INT64_MAX : (int64_t)v;
    } else {
        r->content_length = -1;
    }
    if (st->hdr_err) {
        respond_plain(r, 431, st->hdr_err);
        return;
    }
    if (st->bad_status) {
        respond_plain(r, st->bad_status, st->bad_msg);
        return;
    }
    if (r->content_length > 0 && (uint64_t)r->content_length > s->limits.max_body_bytes) {
        st->discard = true;
        respond_plain(r, 413, "request body too large");
        return;
    }
    s->stats.requests++;
    dg__route_request(s, r);
    if (!r->route) {
        respond_plain(r, r->not_found ? 404 : 405,
                      r->not_found ? "not found" : "method not allowed");
        return;
    }
    if (s->auth) {
        char msg[256];
        int stc = s->auth(r, r->route->flags & DG_HTTP_AUTH_MASK, s->auth_ud, msg, sizeof(msg));
        if (stc) {
            dg_http_resp_header(r, "WWW-Authenticate", "Bearer");
            respond_plain(r, stc, msg);
            return;
        }
    }
    if (r->route->flags & DG_HTTP_STREAM) {
        r->handler_called = true;
        if (!r->msg_complete)
            r->body_held = true; /* until the handler asks for it */
        r->route->fn(r, r->route->ud);
        return;
    }
    if (r->msg_complete) {
        r->handler_called = true;
        r->route->fn(r, r->route->ud);
        return;
    }
    stream_body_clock(st);
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static struct dg__h2s *stream_of(nghttp2_session *ses, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ses, id);
}

static void buf_recycle(struct dg_buf *b)
{
    if (b->cap > H2_SPARE_BUF_MAX)
        dg_buf_free(b);
    else
        dg_buf_reset(b);
}

/* A zeroed stream: a spare one (its buffers emptied, their memory kept) or a new one. */
static struct dg__h2s *stream_new(struct dg__h2c *h)
{
    struct dg__h2s *st = h->spare;
    if (!st)
        return dg_xcalloc(1, sizeof(*st));
    h->spare = st->next;
    h->nspare--;
    struct dg_buf path = st->path, authority = st->authority, in = st->in, out = st->out,
                  trailers = st->trailers;
    buf_recycle(&path);
    buf_recycle(&authority);
    buf_recycle(&in);
    buf_recycle(&out);
    buf_recycle(&trailers);
    memset(st, 0, sizeof(*st));
    st->path = path;
    st->authority = authority;
    st->in = in;
    st->out = out;
    st->trailers = trailers;
    return st;
}

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct dg__h2c *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct dg__h2s *st = stream_new(h);
    st->h = h;
    st->id = f->hd.stream_id;
    st->req = req_alloc(h, st);
    list_push(&h->streams, st);
    h->nstreams++;
    h->idle_deadline = 0;
    nghttp2_session_set_stream_user_data(ses, st->id, st);
    uint64_t t = h->c->srv->limits.header_timeout_ms;
    if (t) {
        st->hdr_deadline = now_ms(h) + t;
        h2_arm(h, st->hdr_deadline);
    }
    return 0;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    struct dg__h2c *h = ud;
    const struct dg_http_limits *l = &h->c->srv->limits;
    struct dg__h2s *st = stream_of(ses, f->hd.stream_id);
    if (!st || !st->req || st->discard)
        return 0;
    struct dg_http_req *r = st->req;
    st->hdr_bytes += nlen + vlen;
    if (!st->dispatched && nlen == 12 && memcmp(name, "content-type", 12) == 0 && vlen >= 16 &&
        strncasecmp((const char *)value, "application/grpc", 16) == 0)
        st->grpc = true;  /* known even when the header list is over the limits */
    if (st->dispatched) { /* trailer fields: counted, not kept */
        if (st->hdr_bytes > l->max_header_bytes)
            stream_fail(st, 431, "request header and trailer fields too large");
        return 0;
    }
    if (st->hdr_err)
        return 0;
    if (st->hdr_bytes > l->max_header_bytes) {
        st->hdr_err = "request header fields too large";
        return 0;
    }
    const char *n = (const char *)name, *v = (const char *)value;
    if (nlen > 0 && n[0] == ':') {
        if (nlen == 7 && memcmp(n, ":method", 7) == 0) {
            if (vlen >= sizeof(r->h2_method)) {
                st->bad_status = 501;
                st->bad_msg = "method not implemented";
            } else {
                memcpy(r->h2_method, v, vlen);
                r->h2_method[vlen] = '\0';
                if (vlen == 7 && memcmp(v, "CONNECT", 7) == 0) {
                    st->bad_status = 501;
                    st->bad_msg = "CONNECT is not supported";
                }
            }
        } else if (nlen == 5 && memcmp(n, ":path", 5) == 0) {
            dg_buf_reset(&st->path);
            dg_buf_append(&st->path, v, vlen);
        } else if (nlen == 10 && memcmp(n, ":authority", 10) == 0) {
            dg_buf_reset(&st->authority);
            dg_buf_append(&st->authority, v, vlen);
        }
        return 0;
    }
    stream_url(st);
    if (nlen == 4 && memcmp(n, "host", 4) == 0)
        st->has_host = true;

    if (!dg__hdrs_field(&r->hdrs, n, nlen, l->max_headers)) {
        st->hdr_err = "too many request header fields";
        return 0;
    }
    dg__hdrs_value(&r->hdrs, v, vlen);
    return 0;
}

/* The remote side of a stream ended (END_STREAM). */
static void remote_end(struct dg__h2s *st)
{
    if (st->remote_ended)
        return;
    st->remote_ended = true;
    struct dg_http_req *r = st->req;
    if (!r)
        return;
    r->msg_complete = true;
    stream_body_clock(st);
    if (st->discard || r->resp_ended)
        return;
    if (!r->handler_called) {
        r->handler_called = true;
        r->route->fn(r, r->route->ud);
        return;
    }
    stream_deliver(st);
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    struct dg__h2s *st = f->hd.stream_id ? stream_of(ses, f->hd.stream_id) : NULL;
    if (!st)
        return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!st->dispatched && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            dispatch(st, end);
            return 0;
        }
        if (end)
            remote_end(st);
    } else if (f->hd.type == NGHTTP2_DATA && end) {
        remote_end(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct dg__h2c *h = ud;
    nghttp2_session_consume_connection(ses, len);
    struct dg__h2s *st = stream_of(ses, id);
    struct dg_http_req *r = st ? st->req : NULL;
    if (!r || st->discard || r->resp_ended || !st->dispatched) {
        nghttp2_session_consume_stream(ses, id, len);
        return 0;
    }
    r->body_read += len;
    if (r->body_read > h->c->srv->limits.max_body_bytes) {
        nghttp2_session_consume_stream(ses, id, len);
        stream_fail(st, 413, "request body too large");
        return 0;
    }
    stream_body_clock(st);
    if (!r->handler_called) { /* buffered route */
        nghttp2_session_consume_stream(ses, id, len);
        dg_buf_append(&r->body, data, len);
        return 0;
    }
    if (st->in.len == st->in_off && r->body_wanted && !r->body_held && !r->user_paused &&
        !st->delivering) {
        nghttp2_session_consume_stream(ses, id, len);
        if (r->on_data)
            r->on_data(r, (const char *)data, len, r->body_ud);
        return 0;
    }
    dg_buf_append(&st->in, data, len); /* consumed when the handler takes it */
    return 0;
}

static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct dg__h2s *st = stream_of(ses, f->hd.stream_id);
    if (!st)
        return 0;
    st->local_ended = true;
    if (!st->remote_ended && !st->rst) {
        /* the answer is complete while the body still comes: no need for the rest */
        st->rst = true;
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    struct dg__h2c *h = ud;
    struct dg__h2s *st = stream_of(ses, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ses, id, NULL);
    if (st->req)
        req_detach(h, st);
    list_unlink(&h->streams, st);
    h->nstreams--;
    list_push(&h->dead, st);
    schedule_reap(h);
    if (h->nstreams == 0 && h->c->srv->limits.idle_timeout_ms) {
        h->idle_deadline = now_ms(h) + h->c->srv->limits.idle_timeout_ms;
        h2_arm(h, h->idle_deadline);
    }
    return 0;
}

/* ---- the connection ------------------------------------------------------------------------ */

static void h2_arm(struct dg__h2c *h, uint64_t deadline)
{
    struct conn *c = h->c;
    if (h->detached || !deadline)
        return;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_due > deadline) {
        uint64_t now = now_ms(h);
        dg__conn_timer_start(c, deadline > now ? deadline - now : 0);
    }
}

static void h2_goaway(struct dg__h2c *h, uint32_t code, const char *why)
{
    if (h->goaway)
        return;
    h->goaway = true;
    nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->ses), code,
                          (const uint8_t *)why, why ? strlen(why) : 0);
}

static void h2_op_on_timer(struct conn *c)
{
    struct dg__h2c *h = c->h2;
    if (h->detached || c->state != C_H2)
        return;
    entry_begin(h);
    uint64_t now = now_ms(h), next = 0;

    if (h->idle_deadline && h->nstreams == 0) {
        if (now >= h->idle_deadline) {
            h->idle_deadline = 0;
            h2_goaway(h, NGHTTP2_NO_ERROR, "idle (http.idleTimeout)");
        } else {
            next = h->idle_deadline;
        }
    }
    bool stalled = false;
    for (struct dg__h2s *st = h->streams, *nx; st; st = nx) {
        nx = st->next;
        if (st->hdr_deadline && !st->dispatched) {
            if (now >= st->hdr_deadline)
                stalled = true;
            else if (!next || st->hdr_deadline < next)
                next = st->hdr_deadline;
        }
        if (st->body_deadline) {
            if (now >= st->body_deadline) {
                struct dg_http_req *r = st->req;
                bool late = r && r->body_late;
                stream_fail(st, 408,
                            late ? "request body too slow: not complete within http.bodyTimeout "
                                   "plus 1 s per http.bodyMinRate bytes"
                                 : "request body not received in time");
            } else if (!next || st->body_deadline < next) {
                next = st->body_deadline;
            }
        }
    }
    if (stalled) {
        /* a header block that does not end blocks the whole connection */
        h2_goaway(h, NGHTTP2_PROTOCOL_ERROR,
                  "request headers not received in time (http.headerTimeout)");
        h->close_after = true;
    }
    if (next)
        h2_arm(h, next);
    entry_end(h);
}

static void h2_op_on_write_done(struct conn *c)
{
    struct dg__h2c *h = c->h2;
    if (h->detached)
        return;
    entry_begin(h);
    entry_end(h); /* flush more, drains */
}

static void h2_op_recv(struct conn *c, const char *data, size_t len)
{
    struct dg__h2c *h = c->h2;
    if (h->detached || c->state != C_H2)
        return;
    entry_begin(h);
    h->depth++;
    ssize_t n = nghttp2_session_mem_recv(h->ses, (const uint8_t *)data, len);
    h->depth--;
    if (n < 0) {
        dg_log(DG_LOG_DEBUG, c->srv->name, "%s: h2: %s", c->peer, nghttp2_strerror((int)n));
        nghttp2_session_terminate_session(h->ses, NGHTTP2_PROTOCOL_ERROR);
    }
    entry_end(h);
}

static struct dg__h2c *h2_new(struct conn *c)
{
    struct dg__h2c *h = dg_xcalloc(1, sizeof(*h));
    h->c = c;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_server_new3(&h->ses, cbs, h, opt, dg__h2_mem());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    const struct dg_http_limits *l = &c->srv->limits;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->h2_max_streams ? l->h2_max_streams : 100},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)DG_MIN(l->max_header_bytes + 32u * (l->max_headers + 4), UINT32_MAX)},
    };
    nghttp2_submit_settings(h->ses, NGHTTP2_FLAG_NONE, iv, DG_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(h->ses, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    c->h2 = h;
    c->state = C_H2;
    c->deadline = 0;
    if (l->idle_timeout_ms) {
        h->idle_deadline = now_ms(h) + l->idle_timeout_ms;
        h2_arm(h, h->idle_deadline);
    }
    return h;
}

static void h2_op_start(struct conn *c)
{
    h2_new(c);
}

/* base64url, padding optional (RFC 7540 3.2.1's HTTP2-Settings); -1 on a bad character. */
static ssize_t b64url_decode(struct dg_str in, uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < in.len; i++) {
        char ch = in.ptr[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '-')
            v = 62;
        else if (ch == '_')
            v = 63;
        else if (ch == '=' && i + 2 >= in.len)
            break;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)n;
}

static void h2_op_upgrade(struct conn *c, const char *rest, size_t len)
{
    struct dg_http_req *r = c->req;
    c->upgrading = false;
    uint8_t settings[256];
    ssize_t sl =
        b64url_decode(dg__hdrs_get(&r->hdrs, "http2-settings"), settings, sizeof(settings));
    if (sl < 0 || sl % 6 != 0) {
        dg__conn_fail(c, 400, "header 'HTTP2-Settings': expected a base64url SETTINGS payload");
        return;
    }
    static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             "Upgrade: h2c\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)sw, sizeof(sw) - 1);
    dg__conn_write(c, &b, 1);
    if (c->dead || c->state == C_CLOSED)
        return;
    struct dg__h2c *h = h2_new(c);
    struct dg__h2s *st = dg_xcalloc(1, sizeof(*st));
    st->h = h;
    st->id = 1;
    if (nghttp2_session_upgrade2(h->ses, settings, (size_t)sl, r->head_method, st) != 0) {
        free(st);
        nghttp2_session_terminate_session(h->ses, NGHTTP2_PROTOCOL_ERROR);
        entry_begin(h);
        entry_end(h);
        return;
    }
    /* The HTTP/1.1 request becomes stream 1 (half-closed: it had no body). */
    c->req = NULL;
    r->conn = NULL;
    r->is_h2 = true;
    r->h2ops = &h2_ops;
    r->h2s = st;
    r->keep_alive = true;
    r->h2_counted = true; /* counted in active_reqs since its first byte */
    st->req = r;
    st->url_done = true;
    list_push(&h->streams, st);
    h->nstreams++;
    h->idle_deadline = 0;
    entry_begin(h);
    /* as dispatch() after the head was parsed, without the parts HTTP/1.1 already did */
    struct dg_http_server *s = c->srv;
    st->dispatched = true;
    st->remote_ended = true;
    r->msg_complete = true;
    r->content_length = 0;
    s->stats.requests++;
    dg__route_request(s, r);
    if (!r->route) {
        respond_plain(r, r->not_found ? 404 : 405,
                      r->not_found ? "not found" : "method not allowed");
    } else {
        int stc = 0;
        char msg[256];
        if (s->auth)
            stc = s->auth(r, r->route->flags & DG_HTTP_AUTH_MASK, s->auth_ud, msg, sizeof(msg));
        if (stc) {
            r->handler_called = true;
            dg_http_resp_header(r, "WWW-Authenticate", "Bearer");
            dg_http_respond_text(r, stc, "%s", msg);
        } else {
            r->handler_called = true;
            r->route->fn(r, r->route->ud);
        }
    }
    if (len && !h->detached) {
        h->depth++;
        ssize_t n = nghttp2_session_mem_recv(h->ses, (const uint8_t *)rest, len);
        h->depth--;
        if (n < 0)
            nghttp2_session_terminate_session(h->ses, NGHTTP2_PROTOCOL_ERROR);
    }
    entry_end(h);
}

static void h2_op_detach(struct conn *c)
{
    struct dg__h2c *h = c->h2;
    if (h->detached)
        return;
    h->detached = true;
    while (h->streams) {
        struct dg__h2s *st = h->streams;
        req_detach(h, st);
        list_unlink(&h->streams, st);
        list_push(&h->dead, st);
    }
    h->nstreams = 0;
}

static void h2_op_free(struct conn *c)
{
    struct dg__h2c *h = c->h2;
    h2_op_detach(c);
    h2_unqueue(h);
    h2_reap(h);
    while (h->spare) {
        struct dg__h2s *st = h->spare;
        h->spare = st->next;
        stream_free(st);
    }
    while (h->nspare_req)
        dg__req_free(h->spare_req[--h->nspare_req]);
    nghttp2_session_del(h->ses);
    dg_buf_free(&h->wbuf);
    free(h->aborts);
    free(h);
    c->h2 = NULL;
}

static bool h2_op_closing(struct conn *c)
{
    struct dg__h2c *h = c->h2;
    if (h->detached)
        return true;
    if (!h->goaway) {
        entry_begin(h);
        h2_goaway(h, NGHTTP2_NO_ERROR, "server shutting down");
        entry_end(h);
    }
    return h->nstreams == 0;
}

static const struct dg__h2_ops h2_ops = {
    .is_preface = h2_op_is_preface,
    .start = h2_op_start,
    .upgrade = h2_op_upgrade,
    .recv = h2_op_recv,
    .on_timer = h2_op_on_timer,
    .on_write_done = h2_op_on_write_done,
    .detach = h2_op_detach,
    .free = h2_op_free,
    .closing = h2_op_closing,
    .read_body = h2_op_read_body,
    .pause = h2_op_pause,
    .respond = h2_op_respond,
    .resp_start = h2_op_resp_start,
    .resp_write = h2_op_resp_write,
    .resp_end = h2_op_resp_end,
    .resp_abort = h2_op_resp_abort,
    .resp_queued = h2_op_resp_queued,
};

void dg_http_server_enable_h2c(struct dg_http_server *s)
{
    if (s->h2 || s->closing)
        return;
    s->h2 = &h2_ops;
    uv_check_init(s->loop, &s->h2_check);
    s->h2_check.data = s;
    uv_idle_init(s->loop, &s->h2_idle);
    s->h2_idle.data = s;
    s->open_handles += 2; /* closed with the grace timer (dg_http_server_close) */
}
