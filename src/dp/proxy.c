/*
 * proxy.c: the invocation path's adapter (DESIGN.md §3) between HTTP and the
 * core (dp_core.h). The function is named by the Host header; the core gives the
 * request a concurrency slot on an endpoint (effects.forward) and this file
 * proxies it over that endpoint's keep-alive pool, streaming both bodies; the
 * core's own answers (queue timeout, cannot start, removed: 503; a broken
 * sandbox: 502) come through effects.answer. Backend failures go to the core
 * (dp_core_on_upstream_error), which retries a request without a body whose
 * connect failed (nothing sent) once on another endpoint, or answers 502 with
 * why the sandbox exited when the CP says so.
 *
 * Every forwarded request names the sandbox it is meant for (X-Dirigent-Sandbox: the
 * endpoint's id; a client's own such header is dropped). A sandbox at that address that is
 * another one answers 421 with its id (dirigent-fn): the endpoint is stale, the core drops it
 * and the request waits for another (dp_core_on_misrouted; docs/security.md).
 *
 * Endpoints at one address share a pool (effects.ep_open/ep_close), so its
 * connections outlive a sandbox: emulated sandboxes all answer at the worker's
 * shared server, and a runtime may give a new sandbox the address of an old
 * one. A connect per cold start was a third of the DP's time.
 *
 * Upstream protocol: an address has an HTTP/1.1 pool, and an h2c pool made on first use
 * (streams multiplexed on its connections). A function registered with upstream_protocol
 * h2c goes over h2c; a gRPC call (content-type application/grpc...) always does, as it cannot
 * be carried over HTTP/1.1 (its trailers); everything else keeps the HTTP/1.1 pool, whatever
 * the client spoke (an h2c client's stream to an HTTP/1.1 sandbox is translated). A gRPC
 * call's trailers pass through unchanged; the platform's own errors for one are gRPC errors
 * (HTTP 200, grpc-status, grpc-message, trailers-only) since a gRPC client cannot read an
 * HTTP status (docs/api.md, "Upstream protocol and gRPC").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dirigent/log.h"
#include "dirigent/trace.h"
#include "dirigent/wire.h"
#include "dp.h"

#define RESP_HIGH_WATER (1024 * 1024) /* client write queue: pause the upstream above */

struct dp_inv {
    struct dp_req core; /* the core's part (dp_core.h) */
    struct dp *dp;
    struct dg_http_req *req;
    struct dg_http_creq *up;
    uint64_t t_arrive_us, t_start_us; /* for proxy_trace.csv */
    bool head_sent;
    bool grpc;      /* content-type application/grpc...: over h2c, errors as grpc-status */
    bool head_held; /* a gRPC head carrying grpc-status: trailers-only unless a body follows */
    int status;     /* of the held head */
    bool misrouted; /* the sandbox said it is another one: its answer is not the client's */
    char why[200];
};

static struct dp_inv *inv_of(struct dp_req *r)
{
    return (struct dp_inv *)((char *)r - offsetof(struct dp_inv, core));
}

static bool hop_by_hop(struct dg_str name)
{
    static const struct dg_str names[] = {DG_STR("connection"),
                                          DG_STR("keep-alive"),
                                          DG_STR("proxy-connection"),
                                          DG_STR("transfer-encoding"),
                                          DG_STR("content-length"),
                                          DG_STR("te"),
                                          DG_STR("trailer"),
                                          DG_STR("upgrade"),
                                          DG_STR("proxy-authenticate"),
                                          DG_STR("proxy-authorization")};
    /* on every header of every proxied request and response: lengths first */
    for (size_t i = 0; i < DG_ARRAY_LEN(names); i++)
        if (name.len == names[i].len && strncasecmp(name.ptr, names[i].ptr, name.len) == 0)
            return true;
    return false;
}

/* One row of proxy_trace.csv, the original's columns (µs): the wait for a sandbox counts as
 * cold_start when there was none, as cc_throttling when all were busy. */
static void trace_request(const struct dp_inv *v, const char *container)
{
    if (!v->dp->proxy_trace || !v->t_start_us)
        return;
    uint64_t now = dg_now_us(), wait = v->t_start_us - v->t_arrive_us;
    dg_trace_row(v->dp->proxy_trace, "%llu,%s,%s,0,0,%llu,0,%llu,%llu,0,0,0",
                 (unsigned long long)dg_wall_ms() * 1000ull, v->core.fn->name, container,
                 (unsigned long long)(v->core.cold ? wait : 0),
                 (unsigned long long)(v->core.cold ? 0 : wait),
                 (unsigned long long)(now - v->t_start_us));
}

/* v ended here (answered by its sandbox, or its client left): the core frees its slot. */
static void inv_done(struct dp_inv *v)
{
    if (v->core.fn->m_latency)
        dg_histogram_observe(v->core.fn->m_latency, (double)(dg_now_us() - v->t_arrive_us) / 1e6);
    dp_core_on_done(v->dp->core, &v->core);
    free(v);
}

static bool is_grpc(struct dg_http_req *r)
{
    struct dg_str ct = dg_http_req_header(r, "content-type");
    return ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0 &&
           (ct.len == 16 || ct.ptr[16] == '+' || ct.ptr[16] == ';');
}

/* A gRPC call's own deadline, its grpc-timeout header (PROTOCOL-HTTP2.md: at most 8 digits
 * and a unit H M S m u n), in µs; 0: none or malformed (the queue timeout holds). */
static uint64_t grpc_timeout_us(struct dg_http_req *r)
{
    struct dg_str t = dg_http_req_header(r, "grpc-timeout");
    if (t.len < 2 || t.len > 9)
        return 0;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < t.len; i++) {
        if (t.ptr[i] < '0' || t.ptr[i] > '9')
            return 0;
        n = n * 10 + (uint64_t)(t.ptr[i] - '0');
    }
    switch (t.ptr[t.len - 1]) {
    case 'H':
        return n * 3600 * 1000000;
    case 'M':
        return n * 60 * 1000000;
    case 'S':
        return n * 1000000;
    case 'm':
        return n * 1000;
    case 'u':
        return n ? n : 1;
    case 'n':
        return n / 1000 ? n / 1000 : 1;
    default:
        return 0;
    }
}

/* gRPC status codes (grpc/doc/statuscodes.md) */
enum { GRPC_DEADLINE_EXCEEDED = 4, GRPC_NOT_FOUND = 5, GRPC_UNAVAILABLE = 14 };

/* effects.answer: the core's own answer; v is out of the core. */
static void fx_answer(void *ud, struct dp_req *r, enum dp_answer_kind kind, int status,
                      const char *msg)
{
    struct dp_inv *v = inv_of(r);
    if (kind == DP_ANSWER_OVERLOADED) { /* refused at arrival: nothing queued, no upstream */
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", r->retry_after_s);
        if (v->grpc) { /* UNAVAILABLE is what gRPC clients retry; the hint as a header too */
            dg_http_resp_header(v->req, "retry-after", ra);
            dg_http_respond_grpc(v->req, GRPC_UNAVAILABLE, "%s", msg);
        } else {
            dg_http_resp_header(v->req, "Retry-After", ra);
            dg_http_resp_header(v->req, DG_WIRE_HDR_ERROR, "overloaded");
            dg_http_respond_text(v->req, status, "%s", msg);
        }
        free(v);
        return;
    }
    if (v->grpc)
        dg_http_respond_grpc(
            v->req, kind == DP_ANSWER_QUEUE_TIMEOUT ? GRPC_DEADLINE_EXCEEDED : GRPC_UNAVAILABLE,
            "%s", msg);
    else
        dg_http_respond_text(v->req, status, "%s", msg);
    if (kind == DP_ANSWER_BROKEN && r->fn->m_latency) /* it reached a sandbox */
        dg_histogram_observe(r->fn->m_latency, (double)(dg_now_us() - v->t_arrive_us) / 1e6);
    free(v);
}

static void on_client_drain(struct dg_http_req *r, void *ud)
{
    struct dp_inv *v = ud;
    if (v->up)
        dg_http_creq_resume(v->up);
}

static void up_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct dp_inv *v = ud;
    int64_t cl = -1;
    if (resp->status == 421) { /* another sandbox at this address? */
        for (size_t i = 0; i < resp->nheaders; i++) {
            const struct dg_http_header *h = &resp->headers[i];
            if (dg_str_caseeq(h->name, DG_WIRE_HDR_SANDBOX) &&
                !dg_str_eq(h->value, v->core.ep->id)) {
                v->misrouted = true;
                snprintf(v->why, sizeof(v->why), "sandbox %.*s answers there",
                         (int)DG_MIN(h->value.len, 128), h->value.ptr);
                return;
            }
        }
    }
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct dg_http_header *h = &resp->headers[i];
        if (dg_str_caseeq(h->name, "content-length")) {
            uint64_t n;
            if (dg_str_to_u64(h->value, &n))
                cl = (int64_t)n;
            continue;
        }
        if (hop_by_hop(h->name) || (h->name.len == 4 && strncasecmp(h->name.ptr, "date", 4) == 0))
            continue; /* the server adds its own Date */
        dg_http_resp_header_str(v->req, h->name, h->value);
    }
    if (v->core.cold) /* for load generators (dirigent load): this request waited for a sandbox */
        dg_http_resp_header(v->req, DG_WIRE_HDR_COLD_START, "1");
    v->head_sent = true;
    if (v->grpc && cl <= 0) { /* a trailers-only answer stays one (one HEADERS frame) */
        for (size_t i = 0; i < resp->nheaders; i++)
            if (dg_str_caseeq(resp->headers[i].name, "grpc-status")) {
                v->head_held = true;
                v->status = resp->status;
                return;
            }
    }
    dg_http_resp_start(v->req, resp->status, cl);
}

static void up_trailers(struct dg_http_creq *q, const struct dg_http_header *t, size_t n, void *ud)
{
    struct dp_inv *v = ud;
    if (v->misrouted || !v->head_sent)
        return;
    if (v->head_held) {
        v->head_held = false;
        dg_http_resp_start(v->req, v->status, -1);
    }
    for (size_t i = 0; i < n; i++)
        dg_http_resp_trailer(v->req, t[i].name, t[i].value);
}

static void up_body(struct dg_http_creq *q, const char *data, size_t len, void *ud)
{
    struct dp_inv *v = ud;
    if (v->misrouted)
        return;
    if (v->head_held) { /* not trailers-only after all */
        v->head_held = false;
        dg_http_resp_start(v->req, v->status, -1);
    }
    dg_http_resp_write(v->req, data, len);
    if (dg_http_resp_queued(v->req) > RESP_HIGH_WATER) { /* a slow client: stop reading */
        dg_http_creq_pause(q);
        dg_http_resp_on_drain(v->req, on_client_drain, v);
    }
}

static void up_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct dp_inv *v = ud;
    v->up = NULL;
    if (v->misrouted) { /* nothing reached the client: the request may go elsewhere */
        dp_core_on_misrouted(v->dp->core, &v->core, dg_http_req_content_length(v->req) == 0,
                             v->why);
        return;
    }
    if (!err) {
        trace_request(v, v->core.ep->id);
        if (v->head_held) /* the head (with its grpc-status) ended the stream */
            dg_http_respond(v->req, v->status, NULL, NULL, 0);
        else
            dg_http_resp_end(v->req); /* answer first: a drain waiting on this slot follows */
        inv_done(v);
        return;
    }
    if (v->head_sent) { /* cut mid-response: the client must see it is incomplete */
        dg_log(DG_LOG_WARN, "proxy", "fn=%s endpoint=%s: response cut: %s", v->core.fn->name,
               v->core.ep->address, err->msg);
        if (v->head_held) /* its grpc-status was in the head: pass that on, complete */
            dg_http_respond(v->req, v->status, NULL, NULL, 0);
        else
            dg_http_resp_abort(v->req);
        inv_done(v);
        return;
    }
    bool sent = dg_http_creq_sent(q);
    dp_core_on_upstream_error(v->dp->core, &v->core,
                              !sent && dg_http_req_content_length(v->req) == 0, sent, err->msg);
}

static const struct dg_http_client_cbs up_cbs = {
    .on_head = up_head, .on_body = up_body, .on_trailers = up_trailers, .on_done = up_done};

struct shared_pool {
    struct dg_http_pool *pool, *h2; /* HTTP/1.1; h2c (made on first use) */
    char *address;
    unsigned refs;
};

/* The pool a request of v goes through at e. NULL: the h2c pool could not be made. */
static struct dg_http_pool *pool_for(struct dp_inv *v, struct dp_endpoint *e)
{
    struct shared_pool *sp = e->data;
    if (!v->grpc && !e->fn->h2c) {
        if (v->dp->m_up_http1)
            dg_counter_add(v->dp->m_up_http1, 1);
        return sp->pool;
    }
    if (!sp->h2) {
        struct dg_http_pool_opts o = v->dp->pool_opts;
        o.h2c = true;
        struct dg_err err = {0};
        sp->h2 = dg_http_pool_new_addr(v->dp->loop, sp->address, &o, &err);
        if (!sp->h2)
            return NULL;
    }
    if (v->dp->m_up_h2c)
        dg_counter_add(v->dp->m_up_h2c, 1);
    return sp->h2;
}

static void client_body(struct dg_http_req *r, const char *data, size_t len, void *ud)
{
    struct dp_inv *v = ud;
    if (v->up)
        dg_http_creq_write(v->up, data, len);
}

static void client_body_end(struct dg_http_req *r, void *ud)
{
    struct dp_inv *v = ud;
    if (v->up)
        dg_http_creq_end(v->up);
}

/* effects.forward: r has e's slot; send it there. */
static void fx_forward(void *ud, struct dp_req *r, struct dp_endpoint *e)
{
    struct dp_inv *v = inv_of(r);
    if (!v->t_start_us)
        v->t_start_us = dg_now_us();
    v->misrouted = false; /* a retry: this endpoint's answer is the client's */
    struct dg_http_pool *pool = pool_for(v, e);
    if (!pool) { /* the address did not parse: as a connect failure */
        dp_core_on_upstream_error(v->dp->core, &v->core, false, false,
                                  "no h2c pool for the sandbox's address");
        return;
    }
    size_t n;
    const struct dg_http_header *in = dg_http_req_headers(v->req, &n);
    struct dg_http_header stack[64],
        *hdrs = n + 1 > DG_ARRAY_LEN(stack) ? dg_xmalloc((n + 1) * sizeof(*hdrs)) : stack;
    size_t k = 0;
    bool h2 = pool != ((struct shared_pool *)e->data)->pool;
    for (size_t i = 0; i < n; i++) {
        if (in[i].name.len && in[i].name.ptr[0] == ':')
            continue; /* an h2 client's pseudo-header: the pool makes its own */
        if (!hop_by_hop(in[i].name) && !dg_str_caseeq(in[i].name, DG_WIRE_HDR_SANDBOX))
            hdrs[k++] = in[i];
        else if (h2 && dg_str_caseeq(in[i].name, "te") && dg_str_caseeq(in[i].value, "trailers"))
            hdrs[k++] = in[i]; /* gRPC's "te: trailers" is end-to-end over h2 */
    }
    /* the sandbox it is meant for: another one at this address refuses it (421) */
    hdrs[k++] = (struct dg_http_header){DG_STR(DG_WIRE_HDR_SANDBOX), dg_str_c(e->id)};
    char *url = dg_str_dup(dg_http_req_url(v->req));
    int64_t cl = dg_http_req_content_length(v->req);
    struct dg_http_creq *up =
        dg_http_request_stream(pool, dg_http_req_method(v->req), url, hdrs, k, cl, &up_cbs, v);
    free(url);
    if (hdrs != stack)
        free(hdrs);
    if (!up)
        return; /* already answered through up_done: v may be gone */
    v->up = up;
    if (cl == 0)
        dg_http_creq_end(v->up);
    else
        dg_http_req_read_body(v->req, client_body, client_body_end, v);
}

/* ---- invocations ------------------------------------------------------------------------ */

static void inv_abort(struct dg_http_req *r, void *ud)
{
    struct dp_inv *v = ud;
    if (v->up) {
        dg_http_creq_cancel(v->up);
        v->up = NULL;
    }
    inv_done(v);
}

struct dp_function *dp_function_of(struct dp *dp, struct dg_http_req *r, struct dg_str *host)
{
    *host = dg_http_req_header(r, "host");
    if (host->ptr) {
        const char *colon = memchr(host->ptr, ':', host->len);
        if (colon)
            host->len = (size_t)(colon - host->ptr);
    }
    return host->ptr ? dp_core_function_find(dp->core, host->ptr, host->len) : NULL;
}

void dp_invoke(struct dg_http_req *r, void *ud)
{
    struct dp *dp = ud;
    struct dg_str host;
    struct dp_function *f = dp_function_of(dp, r, &host);
    bool grpc = is_grpc(r);
    if (!f) {
        if (dg_str_eq(dg_http_req_path(r), "/health")) { /* HAProxy's check, by address */
            dg_http_respond(r, 200, "text/plain", "ok\n", 3);
            return;
        }
        if (grpc) {
            dg_http_respond_grpc(r, GRPC_NOT_FOUND, "function '%.*s' is not registered",
                                 (int)DG_MIN(host.len, 64), host.ptr ? host.ptr : "");
            return;
        }
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)host.len,
                             host.ptr ? host.ptr : "");
        return;
    }
    struct dp_inv *v = dg_xcalloc(1, sizeof(*v));
    v->dp = dp;
    v->req = r;
    v->grpc = grpc;
    v->t_arrive_us = dg_now_us();
    if (grpc)
        v->core.timeout_us = grpc_timeout_us(r);
    dg_http_req_on_abort(r, inv_abort, v);
    dp_core_on_request(dp->core, f, &v->core);
}

/* ---- endpoints' pools ----------------------------------------------------------------------- */

static int fx_ep_open(void *ud, struct dp_endpoint *e, char *errbuf, size_t errlen)
{
    struct dp *dp = ud;
    struct shared_pool *sp = dg_strmap_get(&dp->pools, dg_str_c(e->address));
    if (!sp) {
        struct dg_err err = {0};
        struct dg_http_pool *p = dg_http_pool_new_addr(dp->loop, e->address, &dp->pool_opts, &err);
        if (!p) {
            snprintf(errbuf, errlen, "%s", err.msg);
            return err.code ? err.code : -1;
        }
        sp = dg_xcalloc(1, sizeof(*sp));
        sp->pool = p;
        sp->address = dg_xstrdup(e->address);
        dg_strmap_put(&dp->pools, dg_str_c(sp->address), sp);
    }
    sp->refs++;
    e->data = sp;
    return 0;
}

static void fx_ep_close(void *ud, struct dp_endpoint *e)
{
    struct dp *dp = ud;
    struct shared_pool *sp = dg_strmap_get(&dp->pools, dg_str_c(e->address));
    if (!sp || --sp->refs > 0)
        return;
    dg_strmap_del(&dp->pools, dg_str_c(sp->address));
    dg_http_pool_close(sp->pool);
    if (sp->h2)
        dg_http_pool_close(sp->h2);
    free(sp->address);
    free(sp);
}

static uint64_t fx_now(void *ud)
{
    struct dp *dp = ud;
    return uv_now(dp->loop) * 1000;
}

void dp_proxy_effects(struct dp_effects *fx)
{
    fx->now = fx_now;
    fx->forward = fx_forward;
    fx->answer = fx_answer;
    fx->ep_open = fx_ep_open;
    fx->ep_close = fx_ep_close;
}
