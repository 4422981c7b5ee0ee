/*
 * proxy.c: the invocation path (DESIGN.md §3). The function is named by the
 * Host header; a request takes a concurrency slot on an endpoint chosen by the
 * load-balancing policy and is proxied over that endpoint's keep-alive pool,
 * streaming both bodies. Without a free slot (no sandbox yet: a cold start;
 * or all busy) it waits in the function's FIFO until an endpoint is pushed or
 * a slot frees, or its deadline passes (503), or the control plane pushes that
 * its sandboxes cannot start (503 with the reason). Backend failures are 502 with a
 * message; a request without a body whose connect failed (nothing sent) is
 * retried once on another endpoint.
 *
 * A sandbox that dies under a request (an OOM kill) breaks the connection
 * before its worker, the CP and the push can say why. So a request that
 * reached its sandbox, whose upstream then failed before any answer, waits up
 * to DP_EXIT_WAIT_MS (in a list the
 * 50 ms cron visits; the loop never blocks) for the push that names its
 * sandbox among the function's "exited" ones, and its 502 then says why:
 * "function 'f': sandbox ID OOM-killed: memory limit 64 MiB". No reason in
 * time: the 502 says what the connection saw (docs/decisions.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dirigent/heartbeat.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/trace.h"
#include "dp.h"

#define RESP_HIGH_WATER (1024 * 1024) /* client write queue: pause the upstream above */
#define DP_EXIT_WAIT_MS 500           /* for the reason a broken sandbox exited (above) */

/* A request whose sandbox broke, waiting for the reason (dp_endpoint_exited). */
struct exit_wait {
    uint64_t until_ms;
    char id[96];   /* the sandbox */
    char msg[600]; /* the 502 without a reason: what the connection saw */
    struct dp_inv *prev, *next;
};

struct dp_inv {
    struct dg_http_req *req;
    struct dp_function *fn;
    struct dp_endpoint *ep;
    struct dg_http_creq *up;
    struct dp_inv *prev, *next; /* queue */
    uint64_t deadline_ms;
    uint64_t t_arrive_us, t_start_us; /* for proxy_trace.csv */
    bool queued, head_sent, retried, cold;
    struct exit_wait *exit_wait; /* its sandbox broke: waiting for why (NULL: not) */
};

/* Requests waiting for the reason their sandbox broke, oldest first (one wait for all: their
 * deadlines are in order). */
static struct dp_inv *exit_waits, *exit_waits_tail;

struct dp_function *dp_function_find(struct dg_str name)
{
    return dg_strmap_get(&dp.fn_index, name);
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

/* ---- queue ------------------------------------------------------------------------------ */

/* f is in dp.waiting exactly while it has queued requests (dp_expire visits only those). */
static void waiting_update(struct dp_function *f)
{
    if (f->q_head && !f->waiting) {
        f->waiting = true;
        f->w_prev = NULL;
        f->w_next = dp.waiting;
        if (dp.waiting)
            dp.waiting->w_prev = f;
        dp.waiting = f;
    } else if (!f->q_head && f->waiting) {
        f->waiting = false;
        if (f->w_prev)
            f->w_prev->w_next = f->w_next;
        else
            dp.waiting = f->w_next;
        if (f->w_next)
            f->w_next->w_prev = f->w_prev;
        f->w_prev = f->w_next = NULL;
    }
}

static void queue_push(struct dp_function *f, struct dp_inv *v)
{
    v->queued = true;
    v->deadline_ms = uv_now(dp.loop) + dp.queue_timeout_ms;
    v->prev = f->q_tail;
    v->next = NULL;
    if (f->q_tail)
        f->q_tail->next = v;
    else
        f->q_head = v;
    f->q_tail = v;
    f->queued++;
    dg_gauge_set(f->m_queue, f->queued);
    waiting_update(f);
}

static void queue_remove(struct dp_function *f, struct dp_inv *v);

/* The first queued request, taken out of the queue; NULL if none. */
static struct dp_inv *queue_pop(struct dp_function *f)
{
    struct dp_inv *v = f->q_head;
    if (!v)
        return NULL;
    f->q_head = v->next;
    if (v->next)
        v->next->prev = NULL;
    else
        f->q_tail = NULL;
    v->prev = v->next = NULL;
    v->queued = false;
    f->queued--;
    dg_gauge_set(f->m_queue, f->queued);
    waiting_update(f);
    return v;
}

static void queue_remove(struct dp_function *f, struct dp_inv *v)
{
    if (!v->queued)
        return;
    v->queued = false;
    if (v->prev)
        v->prev->next = v->next;
    else
        f->q_head = v->next;
    if (v->next)
        v->next->prev = v->prev;
    else
        f->q_tail = v->prev;
    v->prev = v->next = NULL;
    f->queued--;
    dg_gauge_set(f->m_queue, f->queued);
    waiting_update(f);
}

/* ---- endpoint choice -------------------------------------------------------------------- */

/* The policy's pick over the function's endpoints, or NULL. `skip` is left out (a retry). */
static struct dp_endpoint *pick(struct dp_function *f, const struct dp_endpoint *skip)
{
    struct dp_lb_endpoint stack[64], *lb = stack;
    if (f->neps == 0)
        return NULL;
    if (f->neps > DG_ARRAY_LEN(stack))
        lb = dg_xmalloc(f->neps * sizeof(*lb));
    for (size_t i = 0; i < f->neps; i++) {
        lb[i] = f->eps[i]->lb;
        if (f->eps[i] == skip)
            lb[i].draining = true;
    }
    int idx = dp_lb_pick(dp.policy, &f->lb, lb, f->neps, f->concurrency);
    if (lb != stack)
        free(lb);
    return idx < 0 ? NULL : f->eps[idx];
}

/* One row of proxy_trace.csv, the original's columns (µs): the wait for a sandbox counts as
 * cold_start when there was none, as cc_throttling when all were busy. */
static void trace_request(const struct dp_inv *v, const char *container)
{
    if (!dp.proxy_trace || !v->t_start_us)
        return;
    uint64_t now = dg_now_us(), wait = v->t_start_us - v->t_arrive_us;
    dg_trace_row(dp.proxy_trace, "%llu,%s,%s,0,0,%llu,0,%llu,%llu,0,0,0",
                 (unsigned long long)dg_wall_ms() * 1000ull, v->fn->name, container,
                 (unsigned long long)(v->cold ? wait : 0), (unsigned long long)(v->cold ? 0 : wait),
                 (unsigned long long)(now - v->t_start_us));
}

/* f's in-flight count goes to the CP in this loop turn's metrics POST (with the others). */
static void report_soon(struct dp_function *f)
{
    if (f->report_due)
        return;
    f->report_due = true;
    f->r_next = dp.to_report;
    dp.to_report = f;
    uv_timer_start(&dp.report_timer, dp_report_due, 0, 0);
}

static void exit_wait_remove(struct dp_inv *v);

static void inv_finish(struct dp_inv *v)
{
    struct dp_function *f = v->fn;
    dg_histogram_observe(f->m_latency, (double)(dg_now_us() - v->t_arrive_us) / 1e6);
    f->running--;
    exit_wait_remove(v);
    free(v);
    dp_dispatch(f);
}

static void take_slot(struct dp_inv *v, struct dp_endpoint *e)
{
    v->ep = e;
    e->lb.in_flight++;
    e->lb.processed++;
}

static void give_slot(struct dp_inv *v)
{
    struct dp_endpoint *e = v->ep;
    v->ep = NULL;
    if (e)
        dp_endpoint_release(e);
}

/* ---- proxying --------------------------------------------------------------------------- */

static void start_proxy(struct dp_inv *v, struct dp_endpoint *e);

/* ---- sandboxes that broke: waiting for why ---------------------------------------------- */

static void exit_wait_remove(struct dp_inv *v)
{
    struct exit_wait *w = v->exit_wait;
    if (!w)
        return;
    if (w->prev)
        w->prev->exit_wait->next = w->next;
    else
        exit_waits = w->next;
    if (w->next)
        w->next->exit_wait->prev = w->prev;
    else
        exit_waits_tail = w->prev;
    free(w);
    v->exit_wait = NULL;
}

/* v's sandbox `id` broke before any answer; `msg` is its 502 if no reason comes in time. */
static void exit_wait_start(struct dp_inv *v, const char *id, const char *msg)
{
    struct exit_wait *w = dg_xcalloc(1, sizeof(*w));
    w->until_ms = uv_now(dp.loop) + DP_EXIT_WAIT_MS;
    snprintf(w->id, sizeof(w->id), "%s", id);
    snprintf(w->msg, sizeof(w->msg), "%s", msg);
    w->prev = exit_waits_tail;
    if (exit_waits_tail)
        exit_waits_tail->exit_wait->next = v;
    else
        exit_waits = v;
    exit_waits_tail = v;
    v->exit_wait = w;
}

/* Answer v with the 502 for its broken sandbox: why it exited when known, else `msg`. */
static void answer_broken(struct dp_inv *v, const char *id, const char *reason, const char *msg)
{
    if (reason) {
        dg_log(DG_LOG_WARN, "proxy", "fn=%s sandbox %s %s: 502", v->fn->name, id, reason);
        dg_http_respond_text(v->req, 502, "function '%s': sandbox %s %s", v->fn->name, id, reason);
    } else
        dg_http_respond_text(v->req, 502, "%s", msg);
    inv_finish(v);
}

void dp_endpoint_exited(struct dp_function *f, const char *id, const char *reason)
{
    /* requests on it whose connection has not broken yet: listed, or taken out and running */
    for (size_t i = 0; i < f->neps; i++)
        if (strcmp(f->eps[i]->id, id) == 0 && !f->eps[i]->exit_reason)
            f->eps[i]->exit_reason = dg_xstrdup(reason);
    for (struct dp_endpoint *e = f->removed; e; e = e->next_removed)
        if (strcmp(e->id, id) == 0 && !e->exit_reason)
            e->exit_reason = dg_xstrdup(reason);
    for (struct dp_inv *v = exit_waits, *next; v; v = next) {
        next = v->exit_wait->next;
        if (v->fn != f || strcmp(v->exit_wait->id, id) != 0)
            continue;
        char msg[sizeof(v->exit_wait->msg)];
        snprintf(msg, sizeof(msg), "%s", v->exit_wait->msg);
        exit_wait_remove(v);
        answer_broken(v, id, reason, msg);
    }
}

void dp_exit_waits_answer(struct dp_function *f)
{
    for (struct dp_inv *v = exit_waits, *next; v; v = next) {
        next = v->exit_wait->next;
        if (v->fn != f)
            continue;
        char msg[sizeof(v->exit_wait->msg)], id[sizeof(v->exit_wait->id)];
        snprintf(msg, sizeof(msg), "%s", v->exit_wait->msg);
        snprintf(id, sizeof(id), "%s", v->exit_wait->id);
        exit_wait_remove(v);
        answer_broken(v, id, NULL, msg);
    }
}

/* Requests whose reason did not come in time: the 502 without it. */
static void exit_waits_expire(uint64_t now_ms)
{
    while (exit_waits && exit_waits->exit_wait->until_ms <= now_ms) {
        struct dp_inv *v = exit_waits;
        char msg[sizeof(v->exit_wait->msg)], id[sizeof(v->exit_wait->id)];
        snprintf(msg, sizeof(msg), "%s", v->exit_wait->msg);
        snprintf(id, sizeof(id), "%s", v->exit_wait->id);
        exit_wait_remove(v);
        answer_broken(v, id, NULL, msg);
    }
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
    if (v->cold) /* for load generators (dirigent load): this request waited for a sandbox */
        dg_http_resp_header(v->req, "X-Dirigent-Cold-Start", "1");
    v->head_sent = true;
    dg_http_resp_start(v->req, resp->status, cl);
}

static void up_body(struct dg_http_creq *q, const char *data, size_t len, void *ud)
{
    struct dp_inv *v = ud;
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
    struct dp_endpoint *e = v->ep;
    v->up = NULL;
    if (!err) {
        trace_request(v, e->id);
        dg_http_resp_end(v->req); /* answer first: a drain waiting on this slot follows */
        give_slot(v);
        inv_finish(v);
        return;
    }
    if (v->head_sent) { /* cut mid-response: the client must see it is incomplete */
        dg_log(DG_LOG_WARN, "proxy", "fn=%s endpoint=%s: response cut: %s", v->fn->name, e->address,
               err->msg);
        dg_http_resp_abort(v->req);
        give_slot(v);
        inv_finish(v);
        return;
    }
    bool retry = !v->retried && !dg_http_creq_sent(q) && dg_http_req_content_length(v->req) == 0;
    struct dp_endpoint *other = retry ? pick(v->fn, e) : NULL;
    char addr[128], id[96], reason[256];
    snprintf(addr, sizeof(addr), "%s", e->address);
    snprintf(id, sizeof(id), "%s", e->id);
    snprintf(reason, sizeof(reason), "%s", e->exit_reason ? e->exit_reason : "");
    give_slot(v); /* e may be gone */
    if (other) {
        dg_log(DG_LOG_INFO, "proxy", "fn=%s endpoint=%s: %s; retrying on %s", v->fn->name, addr,
               err->msg, other->address);
        v->retried = true;
        start_proxy(v, other);
        return;
    }
    char msg[sizeof(((struct exit_wait *)0)->msg)];
    snprintf(msg, sizeof(msg), "function '%s': sandbox %s failed: %s", v->fn->name, addr, err->msg);
    if (reason[0]) { /* the push that said why came first */
        answer_broken(v, id, reason, msg);
        return;
    }
    /* only a sandbox that took the request and then broke may have died under it (an OOM
     * kill): one that could not be reached answers at once */
    if (!dg_http_creq_sent(q)) {
        answer_broken(v, id, NULL, msg);
        return;
    }
    exit_wait_start(v, id, msg);
}

static const struct dg_http_client_cbs up_cbs = {
    .on_head = up_head, .on_body = up_body, .on_done = up_done};

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

static void start_proxy(struct dp_inv *v, struct dp_endpoint *e)
{
    take_slot(v, e);
    if (!v->t_start_us)
        v->t_start_us = dg_now_us();
    size_t n;
    const struct dg_http_header *in = dg_http_req_headers(v->req, &n);
    struct dg_http_header stack[64],
        *hdrs = n > DG_ARRAY_LEN(stack) ? dg_xmalloc(n * sizeof(*hdrs)) : stack;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!hop_by_hop(in[i].name))
            hdrs[k++] = in[i];
    char *url = dg_str_dup(dg_http_req_url(v->req));
    int64_t cl = dg_http_req_content_length(v->req);
    struct dg_http_creq *up =
        dg_http_request_stream(e->pool, dg_http_req_method(v->req), url, hdrs, k, cl, &up_cbs, v);
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
    queue_remove(v->fn, v);
    if (v->up) {
        dg_http_creq_cancel(v->up);
        v->up = NULL;
    }
    give_slot(v);
    inv_finish(v);
}

void dp_invoke(struct dg_http_req *r, void *ud)
{
    struct dg_str host = dg_http_req_header(r, "host");
    if (host.ptr) {
        const char *colon = memchr(host.ptr, ':', host.len);
        if (colon)
            host.len = (size_t)(colon - host.ptr);
    }
    struct dp_function *f = host.ptr ? dp_function_find(host) : NULL;
    if (!f) {
        if (dg_str_eq(dg_http_req_path(r), "/health")) { /* HAProxy's check, by address */
            dg_http_respond(r, 200, "text/plain", "ok\n", 3);
            return;
        }
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)host.len,
                             host.ptr ? host.ptr : "");
        return;
    }
    struct dp_inv *v = dg_xcalloc(1, sizeof(*v));
    v->req = r;
    v->fn = f;
    v->t_arrive_us = dg_now_us();
    v->cold = f->neps == 0;
    f->running++;
    dg_counter_add(f->m_requests, 1);
    dg_http_req_on_abort(r, inv_abort, v);
    struct dp_endpoint *e = f->q_head ? NULL : pick(f, NULL); /* FIFO: no overtaking */
    if (e) {
        start_proxy(v, e);
        return;
    }
    /* it waits: at zero (scale from zero) or every sandbox busy. The CP hears it in this loop
     * turn's metrics POST, not at the next 2 s report; served requests are left to that
     * report (one POST per request at low concurrency was most of a warm request's cost) */
    if (f->reported < f->running)
        report_soon(f);
    if (f->neps == 0)
        dg_counter_add(f->m_cold, 1);
    queue_push(f, v);
}

/* f's in-flight count into a metrics POST's list; the CP now knows it. */
static void report_add(json_t *list, struct dp_function *f)
{
    json_array_append_new(list, json_pack("{ss si}", "name", f->name, "inflight", (int)f->running));
    f->reported = f->running;
}

static void report_post(json_t *list)
{
    if (dp.hb && json_array_size(list))
        dg_heartbeat_post(dp.hb, "/v1/metrics",
                          json_pack("{ss so}", "dataplane", dp.name, "functions", list));
    else
        json_decref(list);
}

void dp_report_due(uv_timer_t *t)
{
    json_t *list = json_array();
    while (dp.to_report) {
        struct dp_function *f = dp.to_report;
        dp.to_report = f->r_next;
        f->r_next = NULL;
        f->report_due = false;
        report_add(list, f);
    }
    report_post(list);
}

void dp_report(void)
{
    json_t *list = json_array();
    for (struct dp_function *f = dp.fns; f; f = f->next)
        if (f->running > 0 || f->reported > 0) /* idle and already said so: skipped */
            report_add(list, f);
    report_post(list);
}

void dp_dispatch(struct dp_function *f)
{
    while (f->q_head) {
        struct dp_endpoint *e = pick(f, NULL);
        if (!e)
            return;
        start_proxy(queue_pop(f), e);
    }
}

void dp_expire(uint64_t now_ms)
{
    exit_waits_expire(now_ms);
    for (struct dp_function *f = dp.waiting, *next; f; f = next) {
        next = f->w_next; /* f leaves the list when its queue empties */
        while (f->q_head && f->q_head->deadline_ms <= now_ms) {
            struct dp_inv *v = queue_pop(f);
            if (f->neps == 0 && f->error)
                dg_http_respond_text(v->req, 503,
                                     "function '%s': no sandbox became available within %llu ms "
                                     "(cold start timed out; the last attempt failed: %s)",
                                     f->name, (unsigned long long)dp.queue_timeout_ms, f->error);
            else
                dg_http_respond_text(v->req, 503,
                                     "function '%s': no sandbox became available within %llu ms%s",
                                     f->name, (unsigned long long)dp.queue_timeout_ms,
                                     f->neps ? " (all busy)" : " (cold start timed out)");
            f->running--;
            free(v);
        }
    }
}

void dp_fail_queued(struct dp_function *f)
{
    unsigned n = 0;
    struct dp_inv *v;
    while ((v = queue_pop(f))) {
        dg_http_respond_text(v->req, 503, "function '%s' cannot start: %s", f->name,
                             f->error ? f->error : "unknown error");
        f->running--;
        free(v);
        n++;
    }
    if (n)
        dg_log(DG_LOG_INFO, "proxy", "fn=%s cannot start: %u queued request(s) answered 503: %s",
               f->name, n, f->error ? f->error : "unknown error");
}

/* A function removed by the control plane: its queued requests get 503 now; running ones
 * finish on their endpoints. */
void dp_function_free(struct dp_function *f)
{
    for (struct dp_function **p = &dp.to_report; *p; p = &(*p)->r_next)
        if (*p == f) {
            *p = f->r_next;
            break;
        }
    struct dp_inv *v;
    while ((v = queue_pop(f))) {
        dg_http_respond_text(v->req, 503, "function '%s' was removed", f->name);
        f->running--;
        free(v);
    }
    free(f->error);
    f->error = NULL;
}
