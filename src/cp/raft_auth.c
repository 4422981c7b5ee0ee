/*
 * raft_auth.c: see raft_auth.h.
 *
 * Ownership. libraft's uv backend calls our connect/listen/close; we pass them to the inner
 * raft_uv_tcp transport. A connection the inner one delivers (its raft handshake done) is ours
 * until the exchange ends: then it goes to libraft's callback (accepted) or we close it
 * (refused, failed, timed out, or the transport closing). Each exchange is a `struct hs`:
 *
 *   connect: on `connecting` while the inner connect runs, on `pending` during the exchange
 *   accept:  on `pending` during the exchange
 *
 * and `nclosing` counts streams we are closing. libraft's uv backend frees itself only after
 * our close callback, so that fires once the inner transport has closed, both lists are empty,
 * every stream we close has closed, and the sweep timer too: a raft_close in the middle of an
 * exchange neither leaks nor touches freed memory. A connect cancelled that way gets
 * RAFT_CANCELED from a close callback, as raft_uv_tcp does it.
 *
 * Reads take exactly what is still missing of the frame (or the one answer byte), so nothing
 * libraft should read is ever consumed here; the peer has nothing else to send before the
 * answer. The frame and the answer go out with uv_try_write: a new connection's send buffer is
 * empty, and a short write fails the exchange (libraft retries).
 */
#include "raft_auth.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/uv.h>

#include "dirigent/log.h"

#define SWEEP_MS    250
#define ADDRESS_MAX 48
#define PEERS_MAX   64 /* ids whose last outcome is remembered (to log changes only) */

static const unsigned char magic[4] = {'D', 'G', 'R', 'A'};

enum { HS_CONNECT, HS_ACCEPT };

struct hs {
    struct cp_raft_auth *a;
    struct hs *prev, *next;
    int kind;
    uint64_t deadline_ms;
    uv_tcp_t *tcp; /* ours during the exchange */
    int status;    /* connect: for the request's callback once the stream closed */
    raft_id id;    /* connect: the target; accept: what the peer's raft handshake claims */
    char address[ADDRESS_MAX];
    /* connect */
    struct raft_uv_connect inner_req;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    /* the frame read (accept) or the answer byte (connect) */
    unsigned char buf[CP_RAFT_AUTH_HDR + DG_AUTH_CRED_MAX];
    size_t have, want;
};

struct cp_raft_auth {
    struct raft_uv_transport outer; /* libraft's; outer.data is libraft's */
    struct raft_uv_transport inner; /* raft_uv_tcp */
    bool inner_ok;                  /* raft_uv_tcp_init succeeded */
    uv_loop_t *loop;
    struct dg_auth_key key;
    char cred[DG_AUTH_CRED_MAX];
    unsigned self;
    raft_uv_accept_cb accept_cb;
    struct hs *connecting, *pending;
    size_t npending_accept;
    unsigned nclosing;
    uv_timer_t sweep;
    bool sweep_open;
    bool closing, inner_closed, closed;
    raft_uv_transport_close_cb close_cb;
    uint64_t audit_last_ms;
    unsigned audit_suppressed;
    unsigned char peer_last[PEERS_MAX]; /* 0 unknown, 1 accepted, 2 refused/failed */
};

/* ---- the frame ---------------------------------------------------------------------------- */

size_t cp_raft_auth_frame(const char *cred, unsigned char *out, size_t size)
{
    size_t n = strlen(cred);
    if (n == 0 || n >= DG_AUTH_CRED_MAX || size < CP_RAFT_AUTH_HDR + n)
        return 0;
    memcpy(out, magic, 4);
    out[4] = 1;
    out[5] = 0;
    out[6] = (unsigned char)(n >> 8);
    out[7] = (unsigned char)n;
    memcpy(out + CP_RAFT_AUTH_HDR, cred, n);
    return CP_RAFT_AUTH_HDR + n;
}

int cp_raft_auth_header_parse(const unsigned char *hdr, size_t *cred_len, struct dg_err *err)
{
    if (memcmp(hdr, magic, 4) != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "raft authentication: bad magic (not a credential frame: a replica "
                          "without authTokenFile, or not a replica)");
    if (hdr[4] != 1 || hdr[5] != 0)
        return dg_err_set(err, DG_E_INVAL, "raft authentication: frame version %u.%u: expected 1.0",
                          hdr[4], hdr[5]);
    size_t n = ((size_t)hdr[6] << 8) | hdr[7];
    if (n == 0 || n >= DG_AUTH_CRED_MAX)
        return dg_err_set(err, DG_E_INVAL,
                          "raft authentication: credential length %zu: expected 1..%d", n,
                          DG_AUTH_CRED_MAX - 1);
    *cred_len = n;
    return 0;
}

/* ---- bookkeeping -------------------------------------------------------------------------- */

static void list_add(struct hs **head, struct hs *h)
{
    h->prev = NULL;
    h->next = *head;
    if (*head)
        (*head)->prev = h;
    *head = h;
}

static void list_del(struct hs **head, struct hs *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        *head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

static void maybe_closed(struct cp_raft_auth *a)
{
    if (!a->closing || a->closed || !a->inner_closed || a->connecting || a->pending ||
        a->nclosing || a->sweep_open)
        return;
    a->closed = true;
    if (a->close_cb)
        a->close_cb(&a->outer);
}

static void on_sweep(uv_timer_t *t);

static void add_pending(struct cp_raft_auth *a, struct hs *h)
{
    h->deadline_ms = uv_now(a->loop) + CP_RAFT_AUTH_TIMEOUT_MS;
    list_add(&a->pending, h);
    if (h->kind == HS_ACCEPT)
        a->npending_accept++;
    if (!a->sweep_open) {
        uv_timer_init(a->loop, &a->sweep);
        a->sweep.data = a;
        a->sweep_open = true;
    }
    if (!uv_is_active((uv_handle_t *)&a->sweep))
        uv_timer_start(&a->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
}

static void del_pending(struct cp_raft_auth *a, struct hs *h)
{
    list_del(&a->pending, h);
    if (h->kind == HS_ACCEPT)
        a->npending_accept--;
    if (!a->pending && a->sweep_open)
        uv_timer_stop(&a->sweep);
}

static const char *peer_of(uv_tcp_t *tcp, char *out, size_t n)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(out, n, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
        return out;
    char ip[64] = "";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        uv_ip4_name(s, ip, sizeof(ip));
        snprintf(out, n, "%s:%d", ip, ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(s, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%d", ip, ntohs(s->sin6_port));
    }
    return out;
}

/* One audit line per refusal, at most one a second (a replica with another key retries every
 * heartbeat): the next line counts those not shown. */
static void audit_refusal(struct cp_raft_auth *a, struct hs *h, const char *who, const char *why)
{
    uint64_t now = dg_now_ms(); /* the clock, not the loop's cached time */
    if (a->audit_last_ms && now - a->audit_last_ms < 1000) {
        a->audit_suppressed++;
        return;
    }
    char from[80];
    char more[64] = "";
    if (a->audit_suppressed)
        snprintf(more, sizeof(more), " (%u more refused since the last line)", a->audit_suppressed);
    dg_log_always("audit",
                  "who=%s from=%s refused raft connection (claims replica %llu, %s) to replica "
                  "%u: %s%s",
                  who, peer_of(h->tcp, from, sizeof(from)), (unsigned long long)h->id,
                  h->address[0] ? h->address : "-", a->self, why, more);
    a->audit_last_ms = now;
    a->audit_suppressed = 0;
}

/* A connect's outcome towards one peer: said when it changes, not at every retry. */
static void peer_outcome(struct cp_raft_auth *a, raft_id id, bool ok, const char *fmt, ...)
    DG_PRINTF(4, 5);
static void peer_outcome(struct cp_raft_auth *a, raft_id id, bool ok, const char *fmt, ...)
{
    unsigned char v = ok ? 1 : 2;
    if (id < PEERS_MAX) {
        if (a->peer_last[id] == v)
            return;
        a->peer_last[id] = v;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dg_log(ok ? DG_LOG_INFO : DG_LOG_WARN, "election", "self=%u %s", a->self, msg);
}

static void on_hs_closed(uv_handle_t *handle)
{
    struct hs *h = handle->data;
    struct cp_raft_auth *a = h->a;
    raft_free(handle); /* raft_uv_tcp allocated it with raft_malloc */
    if (h->kind == HS_CONNECT)
        h->req->cb(h->req, NULL, h->status);
    free(h);
    a->nclosing--;
    maybe_closed(a);
}

/* End an exchange without handing the stream over. */
static void hs_fail(struct hs *h, int status)
{
    struct cp_raft_auth *a = h->a;
    del_pending(a, h);
    uv_read_stop((uv_stream_t *)h->tcp);
    h->status = status;
    a->nclosing++;
    uv_close((uv_handle_t *)h->tcp, on_hs_closed);
}

static void refuse(struct hs *h, const char *who, const char *why)
{
    audit_refusal(h->a, h, who, why);
    char no = CP_RAFT_AUTH_REFUSE;
    uv_buf_t b = uv_buf_init(&no, 1);
    uv_try_write((uv_stream_t *)h->tcp, &b, 1); /* best effort: the peer sees EOF otherwise */
    hs_fail(h, RAFT_NOCONNECTION);
}

static void on_sweep(uv_timer_t *t)
{
    struct cp_raft_auth *a = t->data;
    uint64_t now = uv_now(a->loop);
    for (struct hs *h = a->pending, *next; h; h = next) {
        next = h->next;
        if (h->deadline_ms > now)
            continue;
        if (h->kind == HS_ACCEPT) {
            refuse(h, "anonymous", "no credential frame within the timeout");
        } else {
            peer_outcome(a, h->id, false,
                         "raft connection to replica %llu (%s): no answer to our credential "
                         "within %d ms; retrying",
                         (unsigned long long)h->id, h->address, CP_RAFT_AUTH_TIMEOUT_MS);
            hs_fail(h, RAFT_NOCONNECTION);
        }
    }
}

/* ---- connecting side ---------------------------------------------------------------------- */

static void alloc_answer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct hs *h = handle->data;
    buf->base = (char *)h->buf;
    buf->len = 1;
}

static void read_answer(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hs *h = s->data;
    struct cp_raft_auth *a = h->a;
    if (nread == 0)
        return;
    if (nread < 0) {
        peer_outcome(a, h->id, false,
                     "raft connection to replica %llu (%s) closed before it answered our "
                     "credential (%s): does it run without authTokenFile?",
                     (unsigned long long)h->id, h->address, uv_strerror((int)nread));
        hs_fail(h, RAFT_NOCONNECTION);
        return;
    }
    if (h->buf[0] != CP_RAFT_AUTH_ACCEPT) {
        peer_outcome(a, h->id, false,
                     "replica %llu (%s) refused our raft credential (cp.cp-%u): is "
                     "authTokenFile the same key on every replica?",
                     (unsigned long long)h->id, h->address, a->self);
        hs_fail(h, RAFT_NOCONNECTION);
        return;
    }
    peer_outcome(a, h->id, true, "raft connection to replica %llu (%s) authenticated",
                 (unsigned long long)h->id, h->address);
    del_pending(a, h);
    uv_read_stop(s);
    uv_stream_t *stream = s;
    struct raft_uv_connect *req = h->req;
    free(h);
    stream->data = NULL;
    req->cb(req, stream, 0);
}

static void on_inner_connect(struct raft_uv_connect *inner_req, struct uv_stream_s *stream,
                             int status)
{
    struct hs *h = inner_req->data;
    struct cp_raft_auth *a = h->a;
    list_del(&a->connecting, h);
    if (status != 0) {
        struct raft_uv_connect *req = h->req;
        free(h);
        req->cb(req, NULL, status);
        maybe_closed(a);
        return;
    }
    h->tcp = (uv_tcp_t *)stream;
    stream->data = h;
    add_pending(a, h);
    if (a->closing) { /* not expected: the inner transport cancels its connects first */
        hs_fail(h, RAFT_CANCELED);
        return;
    }
    unsigned char frame[CP_RAFT_AUTH_HDR + DG_AUTH_CRED_MAX];
    size_t n = cp_raft_auth_frame(a->cred, frame, sizeof(frame));
    uv_buf_t b = uv_buf_init((char *)frame, (unsigned)n);
    int rv = uv_try_write(stream, &b, 1);
    if (rv != (int)n) {
        peer_outcome(a, h->id, false,
                     "raft connection to replica %llu (%s): sending our "
                     "credential: %s",
                     (unsigned long long)h->id, h->address,
                     rv < 0 ? uv_strerror(rv) : "short write");
        hs_fail(h, RAFT_NOCONNECTION);
        return;
    }
    h->have = 0;
    h->want = 1;
    if (uv_read_start(stream, alloc_answer, read_answer) != 0)
        hs_fail(h, RAFT_NOCONNECTION);
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, outer);
    if (a->closing)
        return RAFT_CANCELED;
    struct hs *h = calloc(1, sizeof(*h));
    if (!h)
        return RAFT_NOMEM;
    h->a = a;
    h->kind = HS_CONNECT;
    h->id = id;
    snprintf(h->address, sizeof(h->address), "%s", address);
    h->req = req;
    req->cb = cb;
    h->inner_req.data = h;
    int rv = a->inner.connect(&a->inner, &h->inner_req, id, address, on_inner_connect);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof(t->errmsg), "%s", a->inner.errmsg);
        free(h);
        return rv;
    }
    list_add(&a->connecting, h);
    return 0;
}

/* ---- listening side ----------------------------------------------------------------------- */

static void alloc_frame(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct hs *h = handle->data;
    buf->base = (char *)h->buf + h->have;
    buf->len = h->want - h->have;
}

static void read_frame(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hs *h = s->data;
    struct cp_raft_auth *a = h->a;
    if (nread == 0)
        return;
    if (nread < 0) {
        char why[96];
        snprintf(why, sizeof(why), "closed before its credential was in (%s)",
                 uv_strerror((int)nread));
        refuse(h, "anonymous", why);
        return;
    }
    h->have += (size_t)nread;
    if (h->have < h->want)
        return;
    struct dg_err err = {0};
    if (h->want == CP_RAFT_AUTH_HDR) {
        size_t n;
        if (cp_raft_auth_header_parse(h->buf, &n, &err) < 0) {
            refuse(h, "anonymous", err.msg);
            return;
        }
        h->want = CP_RAFT_AUTH_HDR + n;
        return;
    }
    uv_read_stop(s);
    struct dg_auth_identity id;
    struct dg_str cred = {(const char *)h->buf + CP_RAFT_AUTH_HDR, h->want - CP_RAFT_AUTH_HDR};
    if (dg_auth_verify(&a->key, cred, &id, &err) < 0) {
        refuse(h, "anonymous", err.msg);
        return;
    }
    char who[DG_AUTH_NAME_MAX + 16], want[32], why[160];
    snprintf(who, sizeof(who), "%s.%s", dg_auth_role_name(id.role), id.name);
    snprintf(want, sizeof(want), "cp-%llu", (unsigned long long)h->id);
    if (id.role != DG_AUTH_CP) {
        snprintf(why, sizeof(why), "credential role %s cannot join raft (it needs cp)",
                 dg_auth_role_name(id.role));
        refuse(h, who, why);
        return;
    }
    if (strcmp(id.name, want) != 0) {
        snprintf(why, sizeof(why), "credential %s cannot act as replica %llu (that is %s)", who,
                 (unsigned long long)h->id, want);
        refuse(h, who, why);
        return;
    }
    char yes = CP_RAFT_AUTH_ACCEPT;
    uv_buf_t b = uv_buf_init(&yes, 1);
    if (uv_try_write(s, &b, 1) != 1) {
        dg_log(DG_LOG_DEBUG, "election", "self=%u raft peer %s: could not answer; closed", a->self,
               who);
        hs_fail(h, RAFT_NOCONNECTION);
        return;
    }
    char from[80];
    dg_log(DG_LOG_DEBUG, "election", "self=%u raft peer %s from %s authenticated", a->self, who,
           peer_of(h->tcp, from, sizeof(from)));
    del_pending(a, h);
    raft_id rid = h->id;
    char address[ADDRESS_MAX];
    memcpy(address, h->address, sizeof(address));
    free(h);
    s->data = NULL;
    a->accept_cb(&a->outer, rid, address, s);
}

static void on_inner_accept(struct raft_uv_transport *t, raft_id id, const char *address,
                            struct uv_stream_s *stream)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, inner);
    struct hs *h = calloc(1, sizeof(*h));
    if (!h || a->closing) {
        free(h);
        uv_close((uv_handle_t *)stream, (uv_close_cb)raft_free);
        return;
    }
    h->a = a;
    h->kind = HS_ACCEPT;
    h->id = id;
    h->tcp = (uv_tcp_t *)stream;
    stream->data = h;
    bool long_address = strlen(address) >= sizeof(h->address);
    snprintf(h->address, sizeof(h->address), "%s", address);
    /* the peer's own words, unauthenticated: no control character reaches the log (a newline
     * would forge an audit line of its own) */
    bool ctl_address = false;
    for (char *c = h->address; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = '?';
            ctl_address = true;
        }
    bool full = a->npending_accept >= CP_RAFT_AUTH_PENDING;
    add_pending(a, h);
    if (long_address || ctl_address) {
        refuse(h, "anonymous",
               long_address ? "raft handshake: address too long"
                            : "raft handshake: control characters in the address");
        return;
    }
    if (full) {
        refuse(h, "anonymous", "too many connections authenticating at once");
        return;
    }
    h->have = 0;
    h->want = CP_RAFT_AUTH_HDR;
    if (uv_read_start(stream, alloc_frame, read_frame) != 0)
        hs_fail(h, RAFT_NOCONNECTION);
}

/* ---- the transport's vtable --------------------------------------------------------------- */

static int t_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, outer);
    int rv = a->inner.init(&a->inner, id, address);
    if (rv != 0)
        snprintf(t->errmsg, sizeof(t->errmsg), "%s", a->inner.errmsg);
    return rv;
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, outer);
    a->accept_cb = cb;
    int rv = a->inner.listen(&a->inner, on_inner_accept);
    if (rv != 0)
        snprintf(t->errmsg, sizeof(t->errmsg), "%s", a->inner.errmsg);
    return rv;
}

static void on_inner_closed(struct raft_uv_transport *t)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, inner);
    a->inner_closed = true;
    maybe_closed(a);
}

static void on_sweep_closed(uv_handle_t *handle)
{
    struct cp_raft_auth *a = handle->data;
    a->sweep_open = false;
    maybe_closed(a);
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct cp_raft_auth *a = DG_CONTAINER_OF(t, struct cp_raft_auth, outer);
    a->closing = true;
    a->close_cb = cb;
    unsigned npending = 0, nconnecting = 0;
    for (struct hs *h = a->pending; h; h = h->next)
        npending++;
    for (struct hs *h = a->connecting; h; h = h->next)
        nconnecting++;
    if (npending || nconnecting)
        dg_log(DG_LOG_DEBUG, "election",
               "self=%u closing: %u credential exchanges and %u connects cancelled", a->self,
               npending, nconnecting);
    while (a->pending)
        hs_fail(a->pending, RAFT_CANCELED);
    if (a->sweep_open)
        uv_close((uv_handle_t *)&a->sweep, on_sweep_closed);
    /* cancels the connects still running there: each comes back through on_inner_connect */
    a->inner.close(&a->inner, on_inner_closed);
    maybe_closed(a);
}

struct cp_raft_auth *cp_raft_auth_new(uv_loop_t *loop, const struct dg_auth_key *key,
                                      unsigned self_id, const char *bind_address,
                                      struct dg_err *err)
{
    struct cp_raft_auth *a = dg_xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->key = *key;
    a->self = self_id;
    char name[32];
    snprintf(name, sizeof(name), "cp-%u", self_id);
    if (dg_auth_credential(key, DG_AUTH_CP, name, a->cred, sizeof(a->cred), err) < 0) {
        free(a);
        return NULL;
    }
    int rv = raft_uv_tcp_init(&a->inner, loop);
    if (rv != 0) {
        dg_err_set(err, -EIO, "election: transport: %s", a->inner.errmsg);
        free(a);
        return NULL;
    }
    a->inner_ok = true;
    if (bind_address && (rv = raft_uv_tcp_set_bind_address(&a->inner, bind_address)) != 0) {
        dg_err_set(err, DG_E_INVAL, "election: bind address: %s",
                   *a->inner.errmsg ? a->inner.errmsg : raft_strerror(rv));
        cp_raft_auth_free(a);
        return NULL;
    }
    a->outer.init = t_init;
    a->outer.listen = t_listen;
    a->outer.connect = t_connect;
    a->outer.close = t_close;
    return a;
}

struct raft_uv_transport *cp_raft_auth_transport(struct cp_raft_auth *a)
{
    return &a->outer;
}

void cp_raft_auth_free(struct cp_raft_auth *a)
{
    if (!a)
        return;
    if (a->inner_ok)
        raft_uv_tcp_close(&a->inner);
    explicit_bzero(&a->key, sizeof(a->key));
    explicit_bzero(a->cred, sizeof(a->cred));
    free(a);
}
