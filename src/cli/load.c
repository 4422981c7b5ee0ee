/*
 * load.c: `dirigent load`, an open-loop load generator (DESIGN.md §9). Requests
 * are scheduled by time and sent whether or not earlier ones have answered; a
 * late response never delays the next send. Timestamps are monotonic, in µs.
 *
 *   dirigent load burst N FUNCTION
 *   dirigent load rps --rate R --duration S [--cold [--cooldown S] [--image IMG]] [FUNCTION]
 *   dirigent load trace DIR|FILE [--minutes N] [--warmup-minutes W] [--seed S]
 *                      [--iat equidistant|uniform|exponential] [--speed X] [--image IMG]
 *                      [--prefix P] [--dry-run]
 *   dirigent load summarize FILE.csv
 * Common: --csv FILE (a row per invocation), --json (the summary as JSON), --timeout S,
 * --protocol http1|h2c|grpc (grpc: POST /faas.Executor/Execute with a FaasRequest, as InVitro's
 * gRPC invoker; success is HTTP 200 with grpc-status 0).
 * --async [--results IP:PORT]: a data plane with async: true answers each request with an id;
 * every id is then fetched from the results port (GET, the id as the body, as InVitro does)
 * every 100 ms until it is done (not 204) or --timeout passed since it was sent. A sample's
 * latency is then the result's Duration-Microseconds (acceptance to result), its status the
 * function's.
 *
 * rps --cold reproduces InVitro's RPS mode with 100% cold starts: ceil(R x cooldown)
 * functions are registered (cold_start_sweep profile, upper bound 1) and each is invoked
 * once per cooldown, so every call finds its function at zero.
 * trace replays an Azure 2019 trace directory (invocations, durations, memory, dirigent.json)
 * or a 2021 per-invocation file through the cluster: its functions are registered first the
 * way InVitro registers them, arrivals and durations come from the same loader dirigent-sim
 * uses (lib/invitro_trace.c), each request asks the function to work for its duration
 * (`requested_cpu` ms), and invocations in the warm-up minutes are sent but not counted.
 * Targets only 127.0.0.0/8 (and the project's own namespaces, 100.64.0.0/10).
 */
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../sim/sim.h"
#include "cli.h"
#include "dirigent/faas_pb.h"
#include "dirigent/http.h"
#include "dirigent/json.h"

/* One planned invocation: when (from the start), which function, how long it should work. */
struct plan {
    uint64_t at_us;
    uint32_t fn;
    uint32_t dur_ms;
};

struct sample {
    uint64_t start_us;   /* when it was sent, from the start */
    uint64_t latency_us; /* send to the end of the response */
    int64_t exec_us;     /* the function's reported execution time; -1: none */
    uint32_t fn, dur_ms;
    int status; /* 0: transport error (refused, reset, timeout); grpc: see grpc_as_status */
    int16_t grpc_status; /* --protocol grpc: the answer's grpc-status; -1: none */
    int8_t cold;         /* 1: the DP reported a cold start; 0: warm; -1: unknown */
    bool warmup;         /* sent, not counted */
    /* --async: the id while its result is awaited (NULL: none), when to fetch it next */
    char *id;
    uint64_t next_poll_us;
    bool polling;
};

enum load_proto { PROTO_HTTP1, PROTO_H2C, PROTO_GRPC };

struct run {
    enum load_proto proto;
    uv_loop_t loop;
    uv_timer_t timer, progress, watch;
    bool closed;                 /* the pools, at an interrupt */
    struct dg_http_pool *pool;   /* pools[0] */
    struct dg_http_pool **pools; /* one per data plane of --dp A,B,...: function i goes to i % n */
    size_t npools;
    const struct plan *plan;
    size_t nplan, sent, done;
    struct sample *samples;
    char **names;
    size_t nnames;
    uint64_t t0, warmup_us;
    double speed;
    bool tty;
    /* progress: completions in the last second */
    uint64_t errors, *win;
    size_t nwin, capwin;
    /* --async: the results port (NULL: synchronous) */
    const char *results;
    struct dg_http_pool *rpool;
    uv_timer_t poll;
    uint64_t timeout_us;
};

static struct run *g_run; /* one run per process */

/* Ctrl-C or SIGTERM: stop sending, fail what is in flight, summarize what was sent and remove
 * what rps --cold registered. */
static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void catch_interrupts(void)
{
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void on_watch(uv_timer_t *t)
{
    struct run *r = t->data;
    if (!interrupted || r->closed)
        return;
    r->nplan = r->sent;
    uv_timer_stop(&r->timer);
    r->closed = true;
    for (size_t k = 0; k < r->npools; k++)
        dg_http_pool_close(r->pools[k]);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- sending ---------------------------------------------------------------------------- */

/* grpc-status in headers (a trailers-only answer) or trailers */
static void grpc_status_of(struct sample *s, const struct dg_http_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        if (dg_str_caseeq(h[i].name, "grpc-status") && dg_str_to_u64(h[i].value, &v) && v < 100)
            s->grpc_status = (int16_t)v;
    }
}

static void on_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct sample *s = ud;
    s->cold = 0;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (dg_str_caseeq(resp->headers[i].name, "X-Dirigent-Cold-Start"))
            s->cold = 1;
    grpc_status_of(s, resp->headers, resp->nheaders);
}

static void on_trailers(struct dg_http_creq *q, const struct dg_http_header *t, size_t n, void *ud)
{
    grpc_status_of(ud, t, n);
}

/* A gRPC answer as the HTTP status the summary counts: 200 with grpc-status 0 is 200; an
 * error is the status gRPC's HTTP mapping gives it (UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
 * NOT_FOUND 404, others 500; no grpc-status at all: 500). */
static int grpc_as_status(const struct sample *s, int http)
{
    if (http != 200)
        return http;
    switch (s->grpc_status) {
    case 0:
        return 200;
    case 14:
        return 503;
    case 4:
        return 504;
    case 5:
        return 404;
    default:
        return 500;
    }
}

static void sample_done(struct run *r, struct sample *s);

/* dirigent-fn's "ExecutionTime":µs from a 200's body. */
static void exec_time(struct sample *s, const struct dg_http_resp *resp)
{
    if (resp->status != 200 || !resp->body.len)
        return;
    char buf[512];
    size_t n = DG_MIN(resp->body.len, sizeof(buf) - 1);
    memcpy(buf, resp->body.ptr, n);
    buf[n] = '\0';
    const char *p = strstr(buf, "\"ExecutionTime\":");
    if (p)
        s->exec_us = strtoll(p + 16, NULL, 10);
}

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct sample *s = ud;
    struct run *r = g_run;
    s->latency_us = dg_now_us() - r->t0 - s->start_us;
    s->status = resp ? resp->status : 0;
    if (!resp)
        s->cold = -1;
    if (r->results && resp && resp->status == 200 && resp->body.len > 0 &&
        resp->body.len <= 64) { /* accepted: its id; the result comes from the results port */
        s->id = dg_str_dup(resp->body);
        s->next_poll_us = s->start_us + s->latency_us;
        s->cold = -1; /* a result does not say */
        return;
    }
    if (resp && r->proto == PROTO_GRPC) {
        s->status = grpc_as_status(s, resp->status);
        struct faas_reply rep;
        const char *perr;
        const uint8_t *b = (const uint8_t *)resp->body.ptr;
        /* one length-prefixed message: flag 0, a 4-byte big-endian length, the FaasReply */
        if (s->status == 200 && resp->body.len >= 5 && b[0] == 0 &&
            ((size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4]) ==
                resp->body.len - 5 &&
            faas_reply_decode(b + 5, resp->body.len - 5, &rep, &perr) == 0)
            s->exec_us = rep.duration_us;
    } else if (resp)
        exec_time(s, resp);
    sample_done(r, s);
}

/* A fetch of an asynchronous result ended: done (any status but 204 or 503), or later again. */
static void on_fetched(struct dg_http_creq *q, const struct dg_http_resp *resp,
                       const struct dg_err *err, void *ud)
{
    struct sample *s = ud;
    struct run *r = g_run;
    uint64_t now = dg_now_us() - r->t0;
    s->polling = false;
    if (!resp || resp->status == 204 || resp->status == 503) {
        s->next_poll_us = now + 100000;
        return;
    }
    s->latency_us = now - s->start_us;
    for (size_t i = 0; i < resp->nheaders; i++) {
        uint64_t us;
        if (dg_str_caseeq(resp->headers[i].name, "Duration-Microseconds") &&
            dg_str_to_u64(resp->headers[i].value, &us))
            s->latency_us = us;
    }
    s->status = resp->status;
    free(s->id);
    s->id = NULL;
    exec_time(s, resp); /* the function's answer */
    sample_done(r, s);
}

/* Every 20 ms: fetch the results that are due; give up on those past --timeout. */
static void on_poll(uv_timer_t *t)
{
    static const struct dg_http_client_cbs cbs = {.on_done = on_fetched};
    struct run *r = t->data;
    uint64_t now = dg_now_us() - r->t0;
    for (size_t i = 0; i < r->sent; i++) {
        struct sample *s = &r->samples[i];
        if (!s->id || s->polling || s->next_poll_us > now)
            continue;
        if (now - s->start_us > r->timeout_us || interrupted) {
            s->latency_us = now - s->start_us;
            s->status = 0; /* no result in time */
            free(s->id);
            s->id = NULL;
            sample_done(r, s);
            continue;
        }
        s->polling = true;
        dg_http_request(r->rpool, "GET", "/", NULL, 0, s->id, strlen(s->id), &cbs, s);
    }
}

static void sample_done(struct run *r, struct sample *s)
{
    if (!s->status)
        s->cold = -1;
    r->done++;
    if (s->status != 200)
        r->errors++;
    if (r->tty) {
        if (r->nwin == r->capwin) {
            r->capwin = r->capwin ? 2 * r->capwin : 1024;
            r->win = dg_xrealloc(r->win, r->capwin * sizeof(*r->win));
        }
        r->win[r->nwin++] = s->latency_us;
    }
}

static void send_one(struct run *r, uint64_t now_rel)
{
    static const struct dg_http_client_cbs cbs = {
        .on_head = on_head, .on_trailers = on_trailers, .on_done = on_done};
    size_t i = r->sent++;
    const struct plan *p = &r->plan[i];
    struct sample *s = &r->samples[i];
    s->start_us = now_rel;
    s->fn = p->fn;
    s->dur_ms = p->dur_ms;
    s->exec_us = -1;
    s->cold = -1;
    s->grpc_status = -1;
    s->warmup = (double)p->at_us < (double)r->warmup_us;
    if (r->proto == PROTO_GRPC) { /* InVitro's grpc_client.go: FaasRequest{"nothing", ms} */
        struct dg_http_header g[] = {{DG_STR("Host"), dg_str_c(r->names[p->fn])},
                                     {DG_STR("content-type"), DG_STR("application/grpc")},
                                     {DG_STR("te"), DG_STR("trailers")}};
        struct faas_request fr = {(const uint8_t *)"nothing", 7, p->dur_ms, 0};
        uint8_t body[64];
        size_t n = faas_request_encode(&fr, body + 5, sizeof(body) - 5);
        body[0] = 0;
        body[1] = 0;
        body[2] = 0;
        body[3] = (uint8_t)(n >> 8);
        body[4] = (uint8_t)n;
        dg_http_request(r->pools[p->fn % r->npools], "POST", "/faas.Executor/Execute", g,
                        DG_ARRAY_LEN(g), body, n + 5, &cbs, s);
        return;
    }
    char dur[24];
    struct dg_http_header h[2] = {{DG_STR("Host"), dg_str_c(r->names[p->fn])}};
    size_t nh = 1;
    if (p->dur_ms) {
        snprintf(dur, sizeof(dur), "%u", p->dur_ms);
        h[nh++] = (struct dg_http_header){DG_STR("requested_cpu"), dg_str_c(dur)};
    }
    dg_http_request(r->pools[p->fn % r->npools], r->results ? "POST" : "GET", "/", h, nh, NULL, 0,
                    &cbs, s);
}

/* Every millisecond: send what is due (the plan's time, divided by --speed). */
static void on_tick(uv_timer_t *t)
{
    struct run *r = t->data;
    uint64_t now = dg_now_us() - r->t0;
    while (r->sent < r->nplan && (double)r->plan[r->sent].at_us / r->speed <= (double)now)
        send_one(r, now);
    if (r->sent == r->nplan)
        uv_timer_stop(t);
}

static void on_progress(uv_timer_t *t)
{
    struct run *r = t->data;
    double el = (double)(dg_now_us() - r->t0) / 1e6;
    qsort(r->win, r->nwin, sizeof(*r->win), cmp_u64);
    double p99 = r->nwin ? (double)r->win[(size_t)((double)(r->nwin - 1) * 0.99)] / 1000 : 0;
    fprintf(stderr, "\r%7.1f s  sent %zu/%zu  %.0f/s  errors %llu  p99(1 s) %.1f ms   ", el,
            r->sent, r->nplan, el > 0 ? (double)r->sent / el : 0, (unsigned long long)r->errors,
            p99);
    r->nwin = 0;
}

/* Send the plan; every sample filled in. Returns the wall time in µs. */
static uint64_t run_plan(struct run *r, const char *dp, double timeout_s, struct dg_err *err)
{
    g_run = r;
    r->samples = dg_xcalloc(r->nplan ? r->nplan : 1, sizeof(*r->samples));
    uv_loop_init(&r->loop);
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 4000; /* open loop: never wait for a connection (ulimit is 20k) */
    o.max_idle = 4000;
    o.request_timeout_ms = (uint64_t)(timeout_s * 1000);
    o.h2c = r->proto != PROTO_HTTP1; /* streams on few connections */
    /* --dp A,B,...: a pool per data plane (the connection cap divided among them) */
    size_t ndp = 1;
    for (const char *c = dp; *c; c++)
        ndp += *c == ',';
    r->pools = dg_xcalloc(ndp, sizeof(*r->pools));
    o.max_conns = o.max_idle = 4000 / (unsigned)ndp;
    for (const char *a = dp; r->npools < ndp; r->npools++) {
        const char *end = strchr(a, ',');
        char *addr = end ? dg_xstrndup(a, (size_t)(end - a)) : dg_xstrdup(a);
        r->pools[r->npools] = dg_http_pool_new_addr(&r->loop, addr, &o, err);
        free(addr);
        if (!r->pools[r->npools])
            break;
        a = end ? end + 1 : a + strlen(a);
    }
    if (r->npools < ndp) {
        for (size_t k = 0; k < r->npools; k++)
            dg_http_pool_close(r->pools[k]);
        uv_run(&r->loop, UV_RUN_DEFAULT);
        uv_loop_close(&r->loop);
        free(r->pools);
        return 0;
    }
    r->pool = r->pools[0];
    if (r->results) {
        o.request_timeout_ms = 10000;
        if (!(r->rpool = dg_http_pool_new_addr(&r->loop, r->results, &o, err))) {
            for (size_t k = 0; k < r->npools; k++)
                dg_http_pool_close(r->pools[k]);
            free(r->pools);
            uv_run(&r->loop, UV_RUN_DEFAULT);
            uv_loop_close(&r->loop);
            return 0;
        }
        r->timeout_us = (uint64_t)(timeout_s * 1e6);
    }
    uv_timer_init(&r->loop, &r->poll);
    r->poll.data = r;
    if (r->results)
        uv_timer_start(&r->poll, on_poll, 20, 20);
    r->tty = isatty(2);
    uv_timer_init(&r->loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(&r->loop, &r->progress);
    r->progress.data = r;
    r->t0 = dg_now_us();
    uv_timer_start(&r->timer, on_tick, 0, 1);
    uv_timer_init(&r->loop, &r->watch);
    r->watch.data = r;
    uv_timer_start(&r->watch, on_watch, 20, 20);
    if (r->tty)
        uv_timer_start(&r->progress, on_progress, 1000, 1000);
    while (r->sent < r->nplan || r->done < r->sent)
        uv_run(&r->loop, UV_RUN_ONCE);
    uint64_t wall = dg_now_us() - r->t0;
    if (r->tty)
        fprintf(stderr, "\n");
    uv_close((uv_handle_t *)&r->timer, NULL);
    uv_close((uv_handle_t *)&r->progress, NULL);
    uv_close((uv_handle_t *)&r->watch, NULL);
    uv_close((uv_handle_t *)&r->poll, NULL);
    if (!r->closed)
        for (size_t k = 0; k < r->npools; k++)
            dg_http_pool_close(r->pools[k]);
    if (r->rpool)
        dg_http_pool_close(r->rpool);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
    free(r->pools);
    free(r->win);
    return wall;
}

/* ---- registration ----------------------------------------------------------------------- */

/* Registering (or removing) many functions: at most REG_WINDOW requests in flight, the next
 * sent as one is answered, so memory stays bounded and, after the first failure, nothing more
 * is sent (a control plane that does not answer is not sent 100,000 more). The control plane
 * answers a registration once it is stored and pushed to every data plane. */
#define REG_WINDOW      256
#define REG_PROGRESS_MS 5000

struct reg_state {
    struct dg_http_pool *pool;
    const char *cp;
    bool del;
    char **items;
    size_t n, sent, done, ok, failed;
    bool transport;  /* the first failure had no answer */
    bool submitting; /* in reg_submit: an answer given at once does not recurse */
    uint64_t t0_us;
    char first_err[256];
};

static void reg_submit(struct reg_state *st);

static void on_registered(struct dg_http_creq *q, const struct dg_http_resp *resp,
                          const struct dg_err *err, void *ud)
{
    struct reg_state *st = ud;
    st->done++;
    if (resp && (resp->status == 200 || resp->status == 404 || resp->status == 409)) {
        st->ok++;
    } else if (st->failed++ == 0) {
        st->transport = !resp;
        if (resp)
            snprintf(st->first_err, sizeof(st->first_err), "%d %.*s", resp->status,
                     (int)DG_MIN(resp->body.len, 200), resp->body.ptr);
        else
            snprintf(st->first_err, sizeof(st->first_err), "%s", err->msg);
        while (st->first_err[0] && st->first_err[strlen(st->first_err) - 1] == '\n')
            st->first_err[strlen(st->first_err) - 1] = '\0';
    }
    reg_submit(st);
}

/* Send items until REG_WINDOW are in flight. Registering stops at the first failure; removing
 * (a clean-up) goes on past a refusal, not past a control plane that did not answer. */
static void reg_submit(struct reg_state *st)
{
    static const struct dg_http_client_cbs cbs = {.on_done = on_registered};
    static const struct dg_http_header form[] = {
        {DG_STR("Content-Type"), DG_STR("application/x-www-form-urlencoded")}};
    if (st->submitting)
        return;
    st->submitting = true;
    while (st->sent < st->n && st->sent - st->done < REG_WINDOW && !(interrupted && !st->del) &&
           !(st->failed && (!st->del || st->transport))) {
        size_t i = st->sent++;
        if (st->del) {
            char path[512];
            snprintf(path, sizeof(path), "/v1/functions/%s", st->items[i]);
            dg_http_request(st->pool, "DELETE", path, NULL, 0, NULL, 0, &cbs, st);
        } else {
            dg_http_request(st->pool, "POST", "/registerService", form, 1, st->items[i],
                            strlen(st->items[i]), &cbs, st);
        }
    }
    st->submitting = false;
}

static void reg_progress(uv_timer_t *t)
{
    const struct reg_state *st = t->data;
    double s = (double)(dg_now_us() - st->t0_us) / 1e6;
    fprintf(stderr, "dirigent: load: %s: %zu of %zu answered in %.0f s (%.0f/s)\n",
            st->del ? "removing" : "registering", st->done, st->n, s,
            s > 0 ? (double)st->done / s : 0.0);
}

/* One request per item over one keep-alive pool of 64 connections, REG_WINDOW in flight:
 * POST each form to /registerService (InVitro registers its functions the same way before a
 * run), or DELETE /v1/functions/NAME for each name. 200, 404 and 409 (there already) count as
 * done. A run of more than a few seconds says how far it got every 5 s. */
static int cp_batch(const char *cp, bool del, char **items, size_t n)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 64;
    o.max_idle = 64;
    o.bearer = cli_get_token(); /* the control plane's registration API */
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new_addr(&loop, cp, &o, &err);
    if (!p) {
        uv_loop_close(&loop);
        return cli_fail("load: --cp %s: %s", cp, err.msg);
    }
    struct reg_state st = {
        .pool = p, .cp = cp, .del = del, .items = items, .n = n, .t0_us = dg_now_us()};
    uv_timer_t progress;
    uv_timer_init(&loop, &progress);
    progress.data = &st;
    uv_timer_start(&progress, reg_progress, REG_PROGRESS_MS, REG_PROGRESS_MS);
    reg_submit(&st);
    while (st.done < st.sent)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&progress, NULL);
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    const char *what = del ? "removing" : "registering";
    if (st.failed) {
        char msg[768];
        if (st.transport)
            cli_transport_error(msg, sizeof(msg), "control plane", cp, st.first_err);
        else
            snprintf(msg, sizeof(msg), "%s", st.first_err);
        return cli_fail("load: %s %zu function(s): %zu done, %zu failed, %zu not sent; the "
                        "first failure: %s%s",
                        what, n, st.ok, st.failed, n - st.sent, msg,
                        st.transport && !del ? " (the control plane answers a registration "
                                               "once it is stored and pushed to the data "
                                               "planes: see its log)"
                                             : "");
    }
    if (st.sent < n) { /* interrupted: what was registered is removed (mode_rps) */
        fprintf(stderr, "dirigent: load: %s %zu function(s): interrupted after %zu\n", what, n,
                st.ok);
        return 130;
    }
    return 0;
}

static int register_all(const char *cp, char **forms, size_t n)
{
    return cp_batch(cp, false, forms, n);
}

/* ---- the summary ------------------------------------------------------------------------ */

struct summary {
    uint64_t sent, counted, ok, cold, warm;
    uint64_t e503, e502, e504, e5xx, e4xx, transport;
    double wall_s, rate;
    double p50, p90, p99;              /* response time, ms (successful, counted) */
    double sched_p50, sched_p99;       /* response - execution, ms */
    double slowdown_geomean;           /* of the per-function geometric means */
    double slowdown_p50, slowdown_p99; /* across functions */
    size_t functions;                  /* with a counted success */
    double p50_503, p99_503;           /* response time of the 503 answers, ms: how fast a
                                          refusal (admission control) comes */
};

/* Pure: from samples (and the wall time) to the summary. A request's execution time is what
 * the function reported, else what it was asked for; its slowdown is response / execution
 * (execution at least 1 ms); a function's slowdown is the geometric mean of its requests'. */
static void summarize(const struct sample *s, size_t n, size_t nfns, double wall_s,
                      struct summary *out)
{
    memset(out, 0, sizeof(*out));
    out->sent = n;
    out->wall_s = wall_s;
    out->rate = wall_s > 0 ? (double)n / wall_s : 0;
    double *lat = dg_xcalloc(n ? n : 1, sizeof(double));
    double *sched = dg_xcalloc(n ? n : 1, sizeof(double));
    double *logsum = dg_xcalloc(nfns ? nfns : 1, sizeof(double));
    uint64_t *cnt = dg_xcalloc(nfns ? nfns : 1, sizeof(uint64_t));
    double *lat503 = dg_xcalloc(n ? n : 1, sizeof(double));
    size_t k = 0, k503 = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].warmup)
            continue;
        out->counted++;
        int st = s[i].status;
        if (st != 200) {
            if (st == 0)
                out->transport++;
            else if (st == 503) {
                out->e503++;
                lat503[k503++] = (double)s[i].latency_us / 1000;
            } else if (st == 502)
                out->e502++;
            else if (st == 504)
                out->e504++;
            else if (st >= 500)
                out->e5xx++;
            else
                out->e4xx++;
            continue;
        }
        out->ok++;
        out->cold += s[i].cold == 1;
        out->warm += s[i].cold == 0;
        double resp = (double)s[i].latency_us / 1000;
        double exec = s[i].exec_us >= 0 ? (double)s[i].exec_us / 1000 : (double)s[i].dur_ms;
        lat[k] = resp;
        sched[k] = DG_MAX(0.0, resp - exec);
        k++;
        if (s[i].fn < nfns) {
            logsum[s[i].fn] += log(DG_MAX(resp, 1e-3) / DG_MAX(exec, 1.0));
            cnt[s[i].fn]++;
        }
    }
    qsort(lat, k, sizeof(double), cmp_double);
    qsort(sched, k, sizeof(double), cmp_double);
#define PCT(v, p) (k ? (v)[(size_t)((double)(k - 1) * (p))] : 0)
    out->p50 = PCT(lat, 0.5);
    out->p90 = PCT(lat, 0.9);
    out->p99 = PCT(lat, 0.99);
    out->sched_p50 = PCT(sched, 0.5);
    out->sched_p99 = PCT(sched, 0.99);
#undef PCT
    qsort(lat503, k503, sizeof(double), cmp_double);
    out->p50_503 = k503 ? lat503[(size_t)((double)(k503 - 1) * 0.5)] : 0;
    out->p99_503 = k503 ? lat503[(size_t)((double)(k503 - 1) * 0.99)] : 0;
    free(lat503);
    double *fs = dg_xcalloc(nfns ? nfns : 1, sizeof(double)), all = 0;
    size_t m = 0;
    for (size_t f = 0; f < nfns; f++)
        if (cnt[f]) {
            fs[m++] = exp(logsum[f] / (double)cnt[f]);
            all += logsum[f] / (double)cnt[f];
        }
    qsort(fs, m, sizeof(double), cmp_double);
    out->functions = m;
    out->slowdown_geomean = m ? exp(all / (double)m) : 0;
    out->slowdown_p50 = m ? fs[(size_t)((double)(m - 1) * 0.5)] : 0;
    out->slowdown_p99 = m ? fs[(size_t)((double)(m - 1) * 0.99)] : 0;
    free(fs);
    free(lat);
    free(sched);
    free(logsum);
    free(cnt);
}

static void print_summary(const struct summary *m, bool json, const char *what)
{
    uint64_t errors = m->counted - m->ok;
    if (json) {
        printf("{\"sent\":%llu,\"counted\":%llu,\"ok\":%llu,\"errors\":%llu,\"errors_503\":%llu,"
               "\"errors_502\":%llu,\"errors_504\":%llu,\"errors_5xx\":%llu,\"errors_4xx\":%llu,"
               "\"errors_transport\":%llu,\"cold\":%llu,\"warm\":%llu,\"wall_s\":%.3f,"
               "\"rate_achieved\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
               "\"sched_p50_ms\":%.3f,\"sched_p99_ms\":%.3f,\"functions\":%zu,"
               "\"slowdown_geomean\":%.4f,\"slowdown_p50\":%.4f,\"slowdown_p99\":%.4f,"
               "\"p50_503_ms\":%.3f,\"p99_503_ms\":%.3f}\n",
               (unsigned long long)m->sent, (unsigned long long)m->counted,
               (unsigned long long)m->ok, (unsigned long long)errors, (unsigned long long)m->e503,
               (unsigned long long)m->e502, (unsigned long long)m->e504,
               (unsigned long long)m->e5xx, (unsigned long long)m->e4xx,
               (unsigned long long)m->transport, (unsigned long long)m->cold,
               (unsigned long long)m->warm, m->wall_s, m->rate, m->p50, m->p90, m->p99,
               m->sched_p50, m->sched_p99, m->functions, m->slowdown_geomean, m->slowdown_p50,
               m->slowdown_p99, m->p50_503, m->p99_503);
        return;
    }
    printf("sent %llu in %.2f s (%.1f/s)%s; counted %llu\n", (unsigned long long)m->sent, m->wall_s,
           m->rate, what, (unsigned long long)m->counted);
    printf("ok %llu (cold %llu, warm %llu), errors %llu (503 %llu, 502 %llu, 504 %llu, other "
           "5xx %llu, 4xx %llu, transport %llu)\n",
           (unsigned long long)m->ok, (unsigned long long)m->cold, (unsigned long long)m->warm,
           (unsigned long long)errors, (unsigned long long)m->e503, (unsigned long long)m->e502,
           (unsigned long long)m->e504, (unsigned long long)m->e5xx, (unsigned long long)m->e4xx,
           (unsigned long long)m->transport);
    printf("latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", m->p50, m->p90, m->p99);
    if (m->e503)
        printf("503 answers (refused or timed out) p50 %.2f ms, p99 %.2f ms\n", m->p50_503,
               m->p99_503);
    printf("scheduling latency (response - execution) p50 %.2f ms, p99 %.2f ms\n", m->sched_p50,
           m->sched_p99);
    printf("slowdown over %zu function(s): geometric mean %.3f, p50 %.3f, p99 %.3f\n", m->functions,
           m->slowdown_geomean, m->slowdown_p50, m->slowdown_p99);
}

static const char csv_header[] =
    "start_ms,function,status,response_ms,execution_ms,requested_ms,cold,phase\n";

static int write_csv(const char *path, const struct sample *s, size_t n, char **names)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cli_fail("load: --csv %s: %s", path, strerror(errno));
    fputs(csv_header, f);
    for (size_t i = 0; i < n; i++) {
        char exec[32] = "";
        if (s[i].exec_us >= 0)
            snprintf(exec, sizeof(exec), "%.3f", (double)s[i].exec_us / 1000);
        fprintf(f, "%.3f,%s,%d,%.3f,%s,%u,%s,%s\n", (double)s[i].start_us / 1000, names[s[i].fn],
                s[i].status, (double)s[i].latency_us / 1000, exec, s[i].dur_ms,
                s[i].cold == 1   ? "cold"
                : s[i].cold == 0 ? "warm"
                                 : "",
                s[i].warmup ? "warmup" : "measure");
    }
    if (fclose(f) != 0)
        return cli_fail("load: --csv %s: %s", path, strerror(errno));
    return 0;
}

/* `load summarize FILE`: the summary of a CSV written by --csv (or by hand). */
int cli_cmd_load_summarize(struct cli_ctx *c)
{
    char **argv = c->args;
    bool json = c->json;
    FILE *f = fopen(argv[0], "r");
    if (!f)
        return cli_fail("load summarize: %s: %s", argv[0], strerror(errno));
    char line[1024];
    unsigned lineno = 0;
    struct sample *s = NULL;
    size_t n = 0, cap = 0, nnames = 0;
    char **names = NULL;
    double last_ms = 0, first_ms = -1;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (lineno == 1) {
            if (strcmp(line, csv_header) != 0) {
                rc = cli_fail("load summarize: %s:1: expected the header %.*s", argv[0],
                              (int)strlen(csv_header) - 1, csv_header);
                break;
            }
            continue;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        char *col[8], *p = line;
        int nc = 0;
        while (nc < 8) {
            col[nc++] = p;
            char *comma = strchr(p, ',');
            if (!comma)
                break;
            *comma = '\0';
            p = comma + 1;
        }
        char *end;
        double start = strtod(col[0], &end);
        bool bad = nc != 8 || *end || start < 0;
        double resp = bad ? 0 : strtod(col[3], &end);
        bad = bad || *end || resp < 0;
        long status = bad ? 0 : strtol(col[2], &end, 10);
        bad = bad || *end || status < 0 || status > 999;
        double exec = -1;
        if (!bad && col[4][0]) {
            exec = strtod(col[4], &end);
            bad = *end || exec < 0;
        }
        long req = bad ? 0 : strtol(col[5], &end, 10);
        bad = bad || *end || req < 0;
        if (bad || (strcmp(col[6], "cold") != 0 && strcmp(col[6], "warm") != 0 && col[6][0]) ||
            (strcmp(col[7], "warmup") != 0 && strcmp(col[7], "measure") != 0)) {
            rc = cli_fail("load summarize: %s:%u: expected start_ms,function,status,response_ms,"
                          "execution_ms (or empty),requested_ms,cold|warm|empty,warmup|measure",
                          argv[0], lineno);
            break;
        }
        size_t fi = 0;
        while (fi < nnames && strcmp(names[fi], col[1]) != 0)
            fi++;
        if (fi == nnames) {
            names = dg_xrealloc(names, (nnames + 1) * sizeof(*names));
            names[nnames++] = dg_xstrdup(col[1]);
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            s = dg_xrealloc(s, cap * sizeof(*s));
        }
        s[n++] = (struct sample){.start_us = (uint64_t)(start * 1000),
                                 .latency_us = (uint64_t)(resp * 1000),
                                 .exec_us = exec < 0 ? -1 : (int64_t)(exec * 1000),
                                 .fn = (uint32_t)fi,
                                 .dur_ms = (uint32_t)req,
                                 .status = (int)status,
                                 .cold = col[6][0] ? strcmp(col[6], "cold") == 0 : -1,
                                 .warmup = strcmp(col[7], "warmup") == 0};
        if (first_ms < 0 || start < first_ms)
            first_ms = start;
        last_ms = DG_MAX(last_ms, start + resp);
    }
    fclose(f);
    if (rc == 0 && lineno == 0)
        rc = cli_fail("load summarize: %s: empty", argv[0]);
    if (rc == 0) {
        struct summary m;
        summarize(s, n, nnames, n ? (last_ms - first_ms) / 1000 : 0, &m);
        print_summary(&m, json, "");
    }
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    free(s);
    return rc;
}

/* ---- the modes -------------------------------------------------------------------------- */

static bool allowed_target(const char *dp)
{
    if (strncmp(dp, "127.", 4) == 0)
        return true;
    unsigned a, b;
    /* 100.64.0.0/10: the addresses of the project's network-namespace clusters */
    return sscanf(dp, "%u.%u.", &a, &b) == 2 && a == 100 && b >= 64 && b <= 127;
}

struct opts {
    const char *csv, *image, *prefix, *iat;
    enum load_proto proto;
    double timeout, rate, duration, cooldown, speed;
    int64_t minutes, warmup_minutes, seed;
    bool cold, dry_run, keep;
    char results[300]; /* --async: the results port's IP:PORT ("": synchronous) */
};

/* Run the plan against `dp`, then the CSV and the summary. */
static int execute(struct run *r, const char *dp, const struct opts *o, bool json, const char *what)
{
    struct dg_err err = {0};
    r->proto = o->proto;
    r->results = o->results[0] ? o->results : NULL;
    uint64_t wall = run_plan(r, dp, o->timeout, &err);
    if (err.msg[0])
        return cli_fail("load: %s", err.msg);
    int rc = 0;
    if (o->csv && write_csv(o->csv, r->samples, r->sent, r->names) != 0)
        rc = 1;
    struct summary m;
    summarize(r->samples, r->sent, r->nnames, (double)wall / 1e6, &m);
    print_summary(&m, json, what);
    free(r->samples);
    if (rc == 0 && m.counted != m.ok)
        rc = 3;
    if (interrupted) {
        fprintf(stderr, "dirigent: load: interrupted after %zu request(s)\n", r->sent);
        rc = 130;
    }
    return rc;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int mode_burst(const char *fn, int64_t n, const char *dp, const struct opts *o, bool json)
{
    struct plan *p = dg_xcalloc((size_t)n, sizeof(*p)); /* all at t = 0 */
    char *name = dg_xstrdup(fn);
    struct run r = {.plan = p, .nplan = (size_t)n, .names = &name, .nnames = 1, .speed = 1};
    int rc = execute(&r, dp, o, json, ", all at once");
    free(name);
    free(p);
    return rc;
}

static int mode_rps(const char *fn, const char *cp, const char *dp, const struct opts *o, bool json)
{
    size_t planned = (size_t)DG_MAX(1.0, o->rate * o->duration);
    struct run r = {.speed = 1};
    if (o->cold) {
        r.nnames = (size_t)DG_MAX(1.0, ceil(o->rate * o->cooldown));
        r.names = dg_xcalloc(r.nnames, sizeof(char *));
        char **forms = dg_xcalloc(r.nnames, sizeof(char *));
        unsigned tag = (unsigned)(dg_now_us() % 100000);
        char *img = cli_form_escape(o->image);
        for (size_t i = 0; i < r.nnames; i++) {
            r.names[i] = dg_xasprintf("cold-%u-%zu", tag, i);
            forms[i] = dg_xasprintf("name=%s&image=%s&port_forwarding=80&port_forwarding=tcp"
                                    "&requested_cpu=1&requested_memory=1&cold_start_sweep=true",
                                    r.names[i], img);
        }
        free(img);
        uint64_t t_reg = dg_now_us();
        int rc = register_all(cp, forms, r.nnames);
        free_names(forms, r.nnames);
        if (rc == 0) /* a benchmark starts its clocks here (bench/coldstart_profile.sh) */
            fprintf(stderr, "dirigent: load: registered %zu function(s) in %.1f s; sending\n",
                    r.nnames, (double)(dg_now_us() - t_reg) / 1e6);
        if (rc == 0 && interrupted)
            rc = 130;
        if (rc != 0) {
            if (!o->keep) /* what did get registered */
                cp_batch(cp, true, r.names, r.nnames);
            free_names(r.names, r.nnames);
            return rc;
        }
    } else {
        r.nnames = 1;
        r.names = dg_xcalloc(1, sizeof(char *));
        r.names[0] = dg_xstrdup(fn);
    }
    /* equidistant arrivals (InVitro's RPS mode), round-robin over the functions */
    struct plan *p = dg_xcalloc(planned, sizeof(*p));
    size_t nn = r.nnames ? r.nnames : 1;
    for (size_t i = 0; i < planned; i++)
        p[i] =
            (struct plan){.at_us = (uint64_t)((double)i * 1e6 / o->rate), .fn = (uint32_t)(i % nn)};
    r.plan = p;
    r.nplan = planned;
    char what[96];
    snprintf(what, sizeof(what), ", target %g/s, %zu function(s)%s", o->rate, r.nnames,
             o->cold ? ", every call cold" : "");
    int rc = execute(&r, dp, o, json, what);
    if (o->cold && !o->keep) {
        int rc2 = cp_batch(cp, true, r.names, r.nnames);
        if (rc2 == 0)
            fprintf(stderr,
                    "dirigent: load: removed the %zu function(s) it registered (--keep "
                    "keeps them)\n",
                    r.nnames);
        rc = rc ? rc : rc2;
    } else if (o->cold) {
        fprintf(stderr, "dirigent: load: kept the %zu function(s) it registered (%s ... %s)\n",
                r.nnames, r.names[0], r.names[r.nnames - 1]);
    }
    free(p);
    free_names(r.names, r.nnames);
    return rc;
}

/* A trace function's name: a DNS label (the Host header), its index and a short hash. */
static char *trace_name(const char *prefix, size_t i, const char *hash)
{
    char h[13];
    size_t k = 0;
    for (const char *c = hash; *c && k < 12; c++)
        if ((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z'))
            h[k++] = *c;
        else if (*c >= 'A' && *c <= 'Z')
            h[k++] = (char)(*c - 'A' + 'a');
    h[k] = '\0';
    return dg_xasprintf("%s%zu-%s", prefix, i, h);
}

static int mode_trace(const char *path, const char *cp, const char *dp, const struct opts *o,
                      bool json)
{
    struct sim_trace_opts to = {.minutes = o->minutes,
                                .iat = strcmp(o->iat, "equidistant") == 0 ? SIM_IAT_EQUIDISTANT
                                       : strcmp(o->iat, "uniform") == 0   ? SIM_IAT_UNIFORM
                                                                          : SIM_IAT_EXPONENTIAL,
                                .seed = (uint64_t)o->seed,
                                .cpu_milli = 100,
                                .memory_mib = 128};
    struct sim_trace t;
    struct dg_err err = {0};
    if (sim_trace_load(path, &to, &t, &err) < 0)
        return cli_fail("load trace: %s", err.msg);
    struct run r = {.speed = o->speed, .warmup_us = (uint64_t)o->warmup_minutes * 60000000ull};
    r.nnames = t.nfns;
    r.names = dg_xcalloc(t.nfns, sizeof(char *));
    for (size_t i = 0; i < t.nfns; i++)
        r.names[i] = trace_name(o->prefix, i, t.fns[i].name);
    struct plan *p = dg_xcalloc(t.ninvs ? t.ninvs : 1, sizeof(*p));
    for (size_t i = 0; i < t.ninvs; i++)
        p[i] = (struct plan){
            .at_us = t.invs[i].arrival_us,
            .fn = t.invs[i].fn,
            .dur_ms = (uint32_t)DG_MIN((t.invs[i].duration_us + 999) / 1000, UINT32_MAX)};
    r.plan = p;
    r.nplan = t.ninvs;
    int rc = 0;
    if (o->dry_run) { /* the plan as CSV: when, which function, how long */
        printf("at_ms,function,requested_ms,phase\n");
        for (size_t i = 0; i < r.nplan; i++)
            printf("%.3f,%s,%u,%s\n", (double)p[i].at_us / 1000, r.names[p[i].fn], p[i].dur_ms,
                   p[i].at_us < r.warmup_us ? "warmup" : "measure");
    } else {
        char **forms = dg_xcalloc(t.nfns ? t.nfns : 1, sizeof(char *));
        char *img = cli_form_escape(o->image);
        for (size_t i = 0; i < t.nfns; i++) {
            const struct sim_function *f = &t.fns[i];
            forms[i] = dg_xasprintf(
                "name=%s&image=%s&port_forwarding=80&port_forwarding=tcp&requested_cpu=%lld"
                "&requested_memory=%lld&scaling_lower_bound=%d%s%.0d",
                r.names[i], img, (long long)f->cpu_milli, (long long)f->memory_mib, f->lower_bound,
                f->upper_bound > 0 ? "&scaling_upper_bound=" : "",
                f->upper_bound > 0 ? f->upper_bound : 0);
        }
        free(img);
        rc = register_all(cp, forms, t.nfns);
        free_names(forms, t.nfns);
        if (rc == 0) {
            char what[160];
            snprintf(what, sizeof(what), ", %zu function(s) of %s trace%s", t.nfns, t.format,
                     o->speed != 1 ? " (sped up)" : "");
            rc = execute(&r, dp, o, json, what);
        }
    }
    free(p);
    free_names(r.names, r.nnames);
    sim_trace_free(&t);
    return rc;
}

/* The options every mode shares; 0 or the exit status of a bad one. */
static int common_opts(struct cli_ctx *c, struct opts *o)
{
    *o = (struct opts){.image = cli_get(c, "--image"),
                       .prefix = cli_get(c, "--prefix") ?: "trace-",
                       .iat = cli_get(c, "--iat") ?: "exponential",
                       .csv = cli_get(c, "--csv"),
                       .cold = cli_flag(c, "--cold"),
                       .keep = cli_flag(c, "--keep"),
                       .dry_run = cli_flag(c, "--dry-run")};
    int rc = cli_double(c, "--timeout", 120, 0, false, 3600, &o->timeout);
    if (rc)
        return rc;
    const char *proto = cli_get(c, "--protocol") ?: "http1";
    if (strcmp(proto, "http1") == 0)
        o->proto = PROTO_HTTP1;
    else if (strcmp(proto, "h2c") == 0)
        o->proto = PROTO_H2C;
    else if (strcmp(proto, "grpc") == 0)
        o->proto = PROTO_GRPC;
    else
        return cli_usage_error(c, "--protocol: expected http1, h2c or grpc, got '%s'", proto);
    /* --dp A,B,...: several data planes, each function always sent to the same one */
    for (const char *a = c->dp;;) {
        const char *end = strchr(a, ',');
        size_t len = end ? (size_t)(end - a) : strlen(a);
        char one[256];
        if (len == 0 || len >= sizeof(one))
            return cli_usage_error(c,
                                   "--dp %s: expected HOST:PORT or a comma-separated list of "
                                   "them",
                                   c->dp);
        memcpy(one, a, len);
        one[len] = '\0';
        if (!allowed_target(one))
            return cli_usage_error(c,
                                   "--dp %s: only 127.0.0.0/8 and the project's namespaces "
                                   "(100.64.0.0/10) are targets",
                                   one);
        if (!end)
            break;
        a = end + 1;
    }
    if (strchr(c->dp, ',') && cli_flag(c, "--async"))
        return cli_usage_error(c, "--async: with one --dp (its results port answers for it)");
    if (cli_flag(c, "--async") && o->proto == PROTO_GRPC)
        return cli_usage_error(c, "--async: with --protocol http1 or h2c (an asynchronous "
                                  "submission is answered with an id, not a gRPC reply)");
    if (cli_flag(c, "--async")) { /* the results port: given, or the DP's host at 8082 */
        const char *res = cli_get(c, "--results"), *colon = strrchr(c->dp, ':');
        if (res)
            snprintf(o->results, sizeof(o->results), "%s", res);
        else
            snprintf(o->results, sizeof(o->results), "%.*s:8082",
                     (int)(colon ? colon - c->dp : (ptrdiff_t)strlen(c->dp)), c->dp);
        if (!allowed_target(o->results))
            return cli_usage_error(c,
                                   "--results %s: only 127.0.0.0/8 and the project's namespaces "
                                   "(100.64.0.0/10) are targets",
                                   o->results);
    } else if (cli_get(c, "--results")) {
        return cli_usage_error(c, "--results: only with --async");
    }
    catch_interrupts();
    return 0;
}

int cli_cmd_load_burst(struct cli_ctx *c)
{
    struct opts o;
    int64_t n;
    int rc = common_opts(c, &o);
    if (rc)
        return rc;
    if (!dg_str_to_i64(dg_str_c(c->args[0]), &n) || n < 1 || n > 100000)
        return cli_usage_error(c, "N: expected 1..100000, got '%s'", c->args[0]);
    return mode_burst(c->args[1], n, c->dp, &o, c->json);
}

int cli_cmd_load_rps(struct cli_ctx *c)
{
    struct opts o;
    int rc = common_opts(c, &o);
    if (!rc)
        rc = cli_double(c, "--rate", 0, 0, false, 100000, &o.rate);
    if (!rc)
        rc = cli_double(c, "--duration", 0, 0, false, 3600, &o.duration);
    if (!rc)
        rc = cli_double(c, "--cooldown", 10, 1, true, 600, &o.cooldown);
    if (rc)
        return rc;
    if (o.cold == (c->nargs == 1))
        return cli_usage_error(c, "give either a FUNCTION or --cold");
    if (!o.cold && (cli_get(c, "--cooldown") || cli_get(c, "--image") || o.keep))
        return cli_usage_error(c, "--cooldown, --image and --keep go with --cold");
    char *fnp = dg_xasprintf("%s/dirigent-fn", c->self_dir);
    if (!o.image)
        o.image = fnp;
    rc = mode_rps(c->nargs ? c->args[0] : NULL, c->cp, c->dp, &o, c->json);
    free(fnp);
    return rc;
}

int cli_cmd_load_trace(struct cli_ctx *c)
{
    struct opts o;
    int rc = common_opts(c, &o);
    if (!rc)
        rc = cli_int(c, "--minutes", 0, 0, 1000000, &o.minutes);
    if (!rc)
        rc = cli_int(c, "--warmup-minutes", 0, 0, 1000000, &o.warmup_minutes);
    if (!rc)
        rc = cli_int(c, "--seed", 1, 1, INT64_MAX, &o.seed);
    if (!rc)
        rc = cli_double(c, "--speed", 1, 0.01, true, 1000, &o.speed);
    if (rc)
        return rc;
    if (strcmp(o.iat, "equidistant") != 0 && strcmp(o.iat, "uniform") != 0 &&
        strcmp(o.iat, "exponential") != 0)
        return cli_usage_error(c, "--iat: expected equidistant, uniform or exponential, got '%s'",
                               o.iat);
    if (o.minutes && o.warmup_minutes >= o.minutes)
        return cli_usage_error(c, "--warmup-minutes: expected fewer than --minutes");
    char *fnp = dg_xasprintf("%s/dirigent-fn", c->self_dir);
    if (!o.image)
        o.image = fnp;
    rc = mode_trace(c->args[0], c->cp, c->dp, &o, c->json);
    free(fnp);
    return rc;
}
