/*
 * dirigent-fn over h2c with prior knowledge (h2.h): libnghttp2 does the framing, HPACK, flow
 * control, SETTINGS/PING and GOAWAY; this file moves bytes between it and a libuv socket and
 * turns a stream whose request has ended into a call of server.c's handler.
 *
 * A bad frame or a bad preface: nghttp2 answers GOAWAY with its error code (or, when it cannot,
 * the session is terminated with PROTOCOL_ERROR), the queued frames are written and the
 * connection is closed. A request body is read and ignored, as the HTTP/1.1 handler ignores it.
 * A stream whose work is still running when its connection goes is freed when the work ends.
 */
#include "h2.h"

#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/log.h"

#define H2_MAX_STREAMS 128
#define H2_MAX_BODY    (1u << 20) /* request body kept (gRPC messages); more: refused */

struct fn_h2_conn {
    struct fn_h2 *h2;
    struct fn_h2_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t linger_timer;
    uv_shutdown_t shutdown_req;
    unsigned handles;
    nghttp2_session *session;
    struct fn_h2_stream *streams; /* open streams of this connection */
    unsigned writes;
    bool closing, lingering;
};

struct fn_h2_stream {
    struct fn_h2_conn *conn; /* NULL once the connection is gone */
    struct fn_h2_stream *prev, *next;
    int32_t id;
    unsigned nh;
    char **names, **values;
    size_t *vlens;
    unsigned cap;
    uint64_t header_bytes; /* as HTTP/2 counts a header list: name + value + 32 each */
    bool headers_over;     /* over http.maxHeaders or http.maxHeaderBytes: answered 431 */
    char *resp;            /* the response body */
    size_t resp_len, resp_off;
    struct dg_buf body; /* the request body, up to H2_MAX_BODY */
    nghttp2_nv trailers[2];
    size_t ntrailers;
    char grpc_status[12];
    bool body_over, dispatched, answered, closed;
};

struct h2_write {
    uv_write_t req;
    struct fn_h2_conn *conn;
    char data[];
};

static void conn_close(struct fn_h2_conn *c);
static void stream_push(struct fn_h2_stream *st, const char *name, size_t nlen, const char *value,
                        size_t vlen);
static bool stream_answerable(struct fn_h2_stream *st);
static void conn_linger(struct fn_h2_conn *c);
static void conn_flush(struct fn_h2_conn *c);

static void stream_free(struct fn_h2_stream *st)
{
    for (unsigned i = 0; i < st->nh; i++) {
        free(st->names[i]);
        free(st->values[i]);
    }
    free(st->names);
    free(st->values);
    free(st->vlens);
    free(st->resp);
    dg_buf_free(&st->body);
    free(st);
}

static void stream_unlink(struct fn_h2_stream *st)
{
    struct fn_h2_conn *c = st->conn;
    if (!c)
        return;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->conn = NULL;
}

static void on_write(uv_write_t *w, int status)
{
    struct h2_write *hw = DG_CONTAINER_OF(w, struct h2_write, req);
    struct fn_h2_conn *c = hw->conn;
    free(hw);
    c->writes--;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes == 0 && !c->closing && !nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session))
        conn_linger(c);
}

static void on_idle(uv_timer_t *t)
{
    struct fn_h2_conn *c = t->data;
    if (c->streams || c->lingering || c->closing)
        return;
    nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
    conn_flush(c);
}

/* No stream open: GOAWAY (NO_ERROR) after http.idleTimeout, as HTTP/1.1 closes an idle
 * keep-alive connection. */
static void arm_idle(struct fn_h2_conn *c)
{
    if (c->lingering || c->closing)
        return;
    if (c->streams)
        uv_timer_stop(&c->linger_timer);
    else
        uv_timer_start(&c->linger_timer, on_idle, (uint64_t)c->h2->http->idle_timeout_ms, 0);
}

/* Write what nghttp2 has queued; close when it wants neither to read nor to write. */
static void conn_flush(struct fn_h2_conn *c)
{
    if (c->closing || c->lingering)
        return;
    struct dg_buf out = {0};
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            dg_buf_free(&out);
            conn_close(c);
            return;
        }
        if (n == 0)
            break;
        dg_buf_append(&out, data, (size_t)n);
    }
    if (out.len > 0) {
        struct h2_write *hw = dg_xmalloc(sizeof(*hw) + out.len);
        hw->conn = c;
        memcpy(hw->data, out.data, out.len);
        uv_buf_t b = uv_buf_init(hw->data, (unsigned)out.len);
        if (uv_write(&hw->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
            free(hw);
            dg_buf_free(&out);
            conn_close(c);
            return;
        }
        c->writes++;
    }
    dg_buf_free(&out);
    if (c->writes == 0 && !nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session))
        conn_linger(c);
    else
        arm_idle(c);
}

static void on_closed(uv_handle_t *h)
{
    struct fn_h2_conn *c = h->data;
    if (--c->handles > 0)
        return;
    while (c->streams) {
        struct fn_h2_stream *st = c->streams;
        bool busy = st->dispatched && !st->answered;
        stream_unlink(st);
        if (!busy)
            stream_free(st); /* else the handler's fn_h2_respond frees it */
    }
    nghttp2_session_del(c->session);
    free(c);
}

static void conn_close(struct fn_h2_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct fn_h2 *f = c->h2;
    if (c->prev)
        c->prev->next = c->next;
    else if (f->conns == c)
        f->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->linger_timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed); /* pending writes end with ECANCELED */
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct fn_h2_conn *c = req->data;
    if (status < 0)
        conn_close(c);
}

/* The session is over (a GOAWAY written, or the client's): half-close and read until the client
 * closes (at most 2 s), so bytes it sent meanwhile do not make the kernel reset the connection
 * and drop the GOAWAY before the client reads it. */
static void conn_linger(struct fn_h2_conn *c)
{
    if (c->lingering || c->closing)
        return;
    c->lingering = true;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->linger_timer, on_linger_timeout, 2000, 0);
}

static void conn_recv(struct fn_h2_conn *c, const char *data, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(c->session, (const uint8_t *)data, len);
    if (n < 0) {
        dg_log(DG_LOG_DEBUG, "fn", "h2: %s", nghttp2_strerror((int)n));
        nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
    }
    conn_flush(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rbuf[64 * 1024]; /* one loop thread: consumed before the next read */
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fn_h2_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread > 0 && !c->closing && !c->lingering)
        conn_recv(c, buf->base, (size_t)nread);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    struct fn_h2_conn *c = ud;
    if (fr->hd.type != NGHTTP2_HEADERS || fr->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct fn_h2_stream *st = dg_xcalloc(1, sizeof(*st));
    st->conn = c;
    st->id = fr->hd.stream_id;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct fn_h2_stream *st = nghttp2_session_get_stream_user_data(s, fr->hd.stream_id);
    if (!st || fr->hd.type != NGHTTP2_HEADERS)
        return 0;
    stream_push(st, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

/* Keep a request header, within HTTP/1.1's limits (http.maxHeaders fields besides the
 * pseudo-headers, http.maxHeaderBytes as HTTP/2 counts a header list); past them the stream is
 * answered 431 (headers_over). */
static void stream_push(struct fn_h2_stream *st, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    const struct dg_http_conf *hc = st->conn->h2->http;
    unsigned regular = 0;
    for (unsigned i = 0; i < st->nh; i++)
        regular += st->names[i][0] != ':';
    st->header_bytes += nlen + vlen + 32;
    if (st->headers_over || st->header_bytes > (uint64_t)hc->max_header_bytes ||
        (nlen && name[0] != ':' && regular >= (uint64_t)hc->max_headers)) {
        st->headers_over = true;
        return;
    }
    if (st->nh == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 16;
        st->names = dg_xrealloc(st->names, st->cap * sizeof(*st->names));
        st->values = dg_xrealloc(st->values, st->cap * sizeof(*st->values));
        st->vlens = dg_xrealloc(st->vlens, st->cap * sizeof(*st->vlens));
    }
    st->names[st->nh] = dg_xstrndup(name, nlen);
    st->values[st->nh] = dg_xstrndup(value, vlen);
    st->vlens[st->nh] = vlen;
    st->nh++;
}

static void dispatch(struct fn_h2_conn *c, struct fn_h2_stream *st)
{
    if (st->dispatched)
        return;
    st->dispatched = true;
    if (st->headers_over) {
        static const char msg[] = "request header fields too large\n";
        fn_h2_respond(st, 431, "text/plain", msg, sizeof(msg) - 1, NULL, NULL);
        return;
    }
    c->h2->handle(c->h2->ud, st);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *ud)
{
    struct fn_h2_conn *c = ud;
    if ((fr->hd.type != NGHTTP2_HEADERS && fr->hd.type != NGHTTP2_DATA) ||
        !(fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct fn_h2_stream *st = nghttp2_session_get_stream_user_data(s, fr->hd.stream_id);
    if (st)
        dispatch(c, st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct fn_h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    bool busy = st->dispatched && !st->answered;
    stream_unlink(st);
    if (busy)
        st->closed = true; /* freed by fn_h2_respond */
    else
        stream_free(st);
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct fn_h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || st->body_over)
        return 0;
    if (st->body.len + len > H2_MAX_BODY) {
        st->body_over = true;
        dg_buf_free(&st->body);
        return 0;
    }
    dg_buf_append(&st->body, data, len);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct fn_h2_stream *st = src->ptr;
    size_t n = DG_MIN(len, st->resp_len - st->resp_off);
    memcpy(buf, st->resp + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->ntrailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(s, id, st->trailers, st->ntrailers) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

/* ---- the interface ---------------------------------------------------------------------- */

struct dg_str fn_h2_header(struct fn_h2_stream *st, const char *name)
{
    for (unsigned i = 0; i < st->nh; i++)
        if (strcasecmp(st->names[i], name) == 0) /* HTTP/2's names are lower-case */
            return (struct dg_str){st->values[i], st->vlens[i]};
    if (strcmp(name, "host") == 0)
        return fn_h2_header(st, ":authority");
    return (struct dg_str){0};
}

struct dg_str fn_h2_path(struct fn_h2_stream *st)
{
    return fn_h2_header(st, ":path");
}

void fn_h2_respond(struct fn_h2_stream *st, int status, const char *ctype, const void *body,
                   size_t len, const char *hname, const char *hvalue)
{
    if (!stream_answerable(st))
        return;
    struct fn_h2_conn *c = st->conn;
    char code[8], clen[24];
    snprintf(code, sizeof(code), "%d", status);
    snprintf(clen, sizeof(clen), "%zu", len);
    st->resp = dg_xmalloc(len ? len : 1);
    memcpy(st->resp, body, len);
    st->resp_len = len;
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[4] = {NV(":status", code), NV("content-type", ctype),
                         NV("content-length", clen)};
    size_t nn = 3;
    char lname[64]; /* HTTP/2 field names are lower-case */
    if (hname) {
        size_t i = 0;
        for (; i < sizeof(lname) - 1 && hname[i]; i++)
            lname[i] = (char)(hname[i] >= 'A' && hname[i] <= 'Z' ? hname[i] - 'A' + 'a' : hname[i]);
        lname[i] = '\0';
        nva[nn++] = (nghttp2_nv)NV(lname, hvalue);
    }
#undef NV
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    if (nghttp2_submit_response(c->session, st->id, nva, nn, &prd) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    conn_flush(c);
}

/* A session with our SETTINGS queued; no socket yet. */
static struct fn_h2_conn *conn_new(struct fn_h2 *f)
{
    struct fn_h2_conn *c = dg_xcalloc(1, sizeof(*c));
    c->h2 = f;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_server_new(&c->session, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)f->http->max_header_bytes},
    };
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, DG_ARRAY_LEN(iv));
    return c;
}

static void free_unopened(uv_handle_t *h)
{
    struct fn_h2_conn *c = h->data;
    nghttp2_session_del(c->session);
    free(c);
}

/* Give the session its socket and start reading; false (all freed, fd closed) on failure. */
static bool conn_attach(struct fn_h2_conn *c, int fd)
{
    struct fn_h2 *f = c->h2;
    uv_tcp_init(f->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, free_unopened);
        return false;
    }
    uv_timer_init(f->loop, &c->linger_timer);
    c->linger_timer.data = c;
    c->handles = 2;
    c->next = f->conns;
    if (f->conns)
        f->conns->prev = c;
    f->conns = c;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    return true;
}

const struct dg_buf *fn_h2_body(struct fn_h2_stream *st)
{
    return st->body_over ? NULL : &st->body;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* The stream may be answered; else it is freed (its connection or the stream is gone). */
static bool stream_answerable(struct fn_h2_stream *st)
{
    if (st->answered)
        return false;
    st->answered = true;
    struct fn_h2_conn *c = st->conn;
    if (!c || st->closed || c->closing || c->lingering) {
        stream_unlink(st);
        stream_free(st);
        return false;
    }
    return true;
}

void fn_h2_grpc_reply(struct fn_h2_stream *st, const void *msg, size_t len)
{
    if (!stream_answerable(st))
        return;
    struct fn_h2_conn *c = st->conn;
    st->resp = dg_xmalloc(len + 5);
    st->resp[0] = 0; /* not compressed */
    st->resp[1] = (char)(len >> 24);
    st->resp[2] = (char)(len >> 16);
    st->resp[3] = (char)(len >> 8);
    st->resp[4] = (char)len;
    memcpy(st->resp + 5, msg, len);
    st->resp_len = len + 5;
    st->trailers[0] = (nghttp2_nv)NV("grpc-status", "0");
    st->ntrailers = 1;
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    if (nghttp2_submit_response(c->session, st->id, nva, DG_ARRAY_LEN(nva), &prd) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    conn_flush(c);
}

void fn_h2_grpc_status(struct fn_h2_stream *st, int code, const char *fmt, ...)
{
    if (!stream_answerable(st))
        return;
    struct fn_h2_conn *c = st->conn;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* grpc-message is percent-encoded (gRPC over HTTP/2): all but printable ASCII and '%' */
    char enc[3 * sizeof(msg)];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%')
            enc[n++] = (char)*p;
        else
            n += (size_t)snprintf(enc + n, 4, "%%%02X", *p);
    }
    enc[n] = '\0';
    snprintf(st->grpc_status, sizeof(st->grpc_status), "%d", code);
    /* trailers-only: one HEADERS frame that ends the stream */
    nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                        NV("grpc-status", st->grpc_status), NV("grpc-message", enc)};
    if (nghttp2_submit_response(c->session, st->id, nva, DG_ARRAY_LEN(nva), NULL) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    conn_flush(c);
}
#undef NV

void fn_h2_accept(void *ud, int fd, const char *early, size_t len)
{
    struct fn_h2_conn *c = conn_new(ud);
    if (conn_attach(c, fd))
        conn_recv(c, early, len);
}

/* base64url without padding (RFC 7540 3.2.1's HTTP2-Settings); -1 on a bad character. */
static ssize_t b64url_decode(struct dg_str in, uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < in.len; i++) {
        char ch = in.ptr[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '-' || ch == '+' ? 62
                : ch == '_' || ch == '/' ? 63
                : ch == '='              ? -2
                                         : -1;
        if (v == -2)
            break;
        if (v < 0)
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

static bool hop_by_hop(const char *name)
{
    static const char *const names[] = {"connection",       "upgrade", "http2-settings",
                                        "keep-alive",       "te",      "transfer-encoding",
                                        "proxy-connection", "host"};
    for (size_t i = 0; i < DG_ARRAY_LEN(names); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

static void stream_add_header(struct fn_h2_stream *st, const char *name, size_t nlen,
                              const char *value, size_t vlen)
{
    stream_push(st, name, nlen, value, vlen);
    char *n = st->nh ? st->names[st->nh - 1] : NULL;
    for (char *p = n; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

bool fn_h2_upgrade(struct fn_h2 *f, struct dg_http_req *r, const char **why)
{
    struct dg_str up = dg_http_req_header(r, "upgrade");
    struct dg_str set = dg_http_req_header(r, "http2-settings");
    if (!up.ptr || !dg_str_caseeq(up, "h2c"))
        return false;
    if (!set.ptr || dg_http_req_content_length(r) != 0) {
        *why = !set.ptr ? "Upgrade: h2c needs an HTTP2-Settings header"
                        : "Upgrade: h2c is served for requests without a body only";
        return false;
    }
    uint8_t settings[1024];
    ssize_t slen = b64url_decode(set, settings, sizeof(settings));
    struct fn_h2_conn *c = conn_new(f);
    const char *method = dg_http_req_method(r);
    if (slen < 0 || nghttp2_session_upgrade2(c->session, settings, (size_t)slen,
                                             strcmp(method, "HEAD") == 0, NULL) != 0) {
        nghttp2_session_del(c->session);
        free(c);
        *why = "header 'HTTP2-Settings': expected a base64url SETTINGS payload";
        return false;
    }
    struct fn_h2_stream *st = dg_xcalloc(1, sizeof(*st));
    st->id = 1;
    st->conn = c; /* for the limits; linked to it below */
    struct dg_str url = dg_http_req_url(r), host = dg_http_req_header(r, "host");
    stream_add_header(st, ":method", 7, method, strlen(method));
    stream_add_header(st, ":path", 5, url.ptr, url.len);
    if (host.ptr)
        stream_add_header(st, ":authority", 10, host.ptr, host.len);
    size_t nh;
    const struct dg_http_header *hs = dg_http_req_headers(r, &nh);
    for (size_t i = 0; i < nh; i++) {
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)DG_MIN(hs[i].name.len, 127), hs[i].name.ptr);
        if (!hop_by_hop(name))
            stream_add_header(st, hs[i].name.ptr, hs[i].name.len, hs[i].value.ptr, hs[i].value.len);
    }
    struct dg_buf rest = {0};
    int fd = dg_http_req_take_conn(r, &rest);
    if (fd < 0) {
        stream_free(st);
        nghttp2_session_del(c->session);
        free(c);
        dg_buf_free(&rest);
        *why = NULL;
        return false;
    }
    if (!conn_attach(c, fd)) {
        stream_free(st);
        dg_buf_free(&rest);
        return true;
    }
    static char switching[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                              "Upgrade: h2c\r\n\r\n";
    struct h2_write *hw = dg_xmalloc(sizeof(*hw) + sizeof(switching));
    hw->conn = c;
    memcpy(hw->data, switching, sizeof(switching) - 1);
    uv_buf_t b = uv_buf_init(hw->data, (unsigned)(sizeof(switching) - 1));
    if (uv_write(&hw->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(hw);
        stream_free(st);
        dg_buf_free(&rest);
        conn_close(c);
        return true;
    }
    c->writes++;
    st->conn = c;
    c->streams = st;
    nghttp2_session_set_stream_user_data(c->session, 1, st);
    dispatch(c, st);
    if (!c->closing)
        conn_recv(c, rest.data ? rest.data : "", rest.len);
    dg_buf_free(&rest);
    return true;
}

void fn_h2_close_all(struct fn_h2 *f)
{
    while (f->conns) {
        struct fn_h2_conn *c = f->conns;
        nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n > 0) { /* best effort: the GOAWAY, if the socket takes it now */
            uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        conn_close(c);
    }
}
