/*
 * dp_core.c: the data plane's core (dp_core.h). Requests take a concurrency slot on
 * an endpoint chosen by the load-balancing policy (lb.c, over the real
 * endpoints, nothing copied); without a free slot (no sandbox yet: a cold
 * start; or all busy) they wait in the function's FIFO until an endpoint is
 * pushed or a slot frees, or their deadline passes (503), or the control plane
 * says its sandboxes cannot start (503 with the reason).
 *
 * A sandbox that dies under a request (an OOM kill) breaks the connection
 * before its worker, the CP and the push can say why. So a request that
 * reached its sandbox, whose upstream then failed before any answer, waits up
 * to DP_EXIT_WAIT_MS (in a list dp_core_tick visits) for the push that names
 * its sandbox among the function's "exited" ones, and its 502 then says why:
 * "function 'f': sandbox ID OOM-killed: memory limit 64 MiB". No reason in
 * time: the 502 says what the connection saw (docs/decisions.md).
 *
 * The functions and endpoints themselves, their one create, loss and free, are
 * the registry's (registry.c); this file is the mechanism around them.
 */
#include "dp_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "dirigent/metrics.h"

/* A request whose sandbox broke, waiting for the reason (dp_core_on_exited). */
struct dp_exit_wait {
    uint64_t until_us;
    char id[96];   /* the sandbox */
    char msg[600]; /* the 502 without a reason: what the connection saw */
    struct dp_req *prev, *next;
};

struct dp_drain {
    void *token;
    char **ids;
    size_t nids;
    struct dp_drain *next;
};

struct dp_core {
    struct dp_core_config c;
    struct dp_effects fx;
    struct dp_registry reg;                      /* functions and endpoints */
    struct dp_function *waiting;                 /* functions with queued requests */
    struct dp_function *to_report;               /* first requests since idle, reported together */
    struct dp_req *exit_waits, *exit_waits_tail; /* oldest first: their deadlines are in order */
    uint64_t next_report_us;
    struct dp_admit cold_admit; /* every cold start's wait together (admission control) */
    unsigned cold_queued;       /* queued requests that are cold starts */
};

static uint64_t now_us(struct dp_core *core)
{
    return core->fx.now(core->fx.ud);
}

static void answer(struct dp_core *core, struct dp_req *r, enum dp_answer_kind kind, int status,
                   const char *fmt, ...) DG_PRINTF(5, 6);

/* The core's answer to r (already out of the queue, the slot and the waits). */
static void answer(struct dp_core *core, struct dp_req *r, enum dp_answer_kind kind, int status,
                   const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    core->fx.answer(core->fx.ud, r, kind, status, msg);
}

struct dp_core *dp_core_new(const struct dp_core_config *c, const struct dp_effects *fx)
{
    struct dp_core *core = dg_xcalloc(1, sizeof(*core));
    core->c = *c;
    core->fx = *fx;
    core->reg = (struct dp_registry){.seed = c->seed,
                                     .f_requests = c->f_requests,
                                     .f_cold = c->f_cold,
                                     .f_queue = c->f_queue,
                                     .f_latency = c->f_latency,
                                     .ud = fx->ud,
                                     .ep_open = fx->ep_open,
                                     .ep_close = fx->ep_close};
    return core;
}

/* ---- queue ------------------------------------------------------------------------------ */

/* f is in core->waiting exactly while it has queued requests (the tick visits only those). */
static void waiting_update(struct dp_core *core, struct dp_function *f)
{
    if (f->q_head && !f->waiting) {
        f->waiting = true;
        f->w_prev = NULL;
        f->w_next = core->waiting;
        if (core->waiting)
            core->waiting->w_prev = f;
        core->waiting = f;
    } else if (!f->q_head && f->waiting) {
        f->waiting = false;
        if (f->w_prev)
            f->w_prev->w_next = f->w_next;
        else
            core->waiting = f->w_next;
        if (f->w_next)
            f->w_next->w_prev = f->w_prev;
        f->w_prev = f->w_next = NULL;
    }
}

static void queue_depth(struct dp_function *f)
{
    if (f->m_queue)
        dg_gauge_set(f->m_queue, f->queued);
}

/* The admission estimators (admit.h) hear when their queues start or stop being empty. */
static void admit_busy(struct dp_core *core, struct dp_function *f, bool pipeline, uint64_t now)
{
    if ((f->queued > 0) != f->admit.busy)
        dp_admit_set_busy(&f->admit, now, f->queued > 0);
    if (pipeline && (core->cold_queued > 0) != core->cold_admit.busy)
        dp_admit_set_busy(&core->cold_admit, now, core->cold_queued > 0);
}

static uint64_t timeout_of(const struct dp_core *core, const struct dp_req *r)
{
    uint64_t t = core->c.queue_timeout_ms * 1000;
    return r->timeout_us && r->timeout_us < t ? r->timeout_us : t;
}

static void queue_push(struct dp_core *core, struct dp_function *f, struct dp_req *r)
{
    uint64_t now = now_us(core);
    r->queued = true;
    r->deadline_us = now + timeout_of(core, r);
    r->queued_us = now;
    r->pipeline = r->cold && f->queued == 0;
    r->found_empty_fn = f->queued == 0;
    r->found_empty_cold = r->pipeline && core->cold_queued == 0;
    r->prev = f->q_tail;
    r->next = NULL;
    if (f->q_tail)
        f->q_tail->next = r;
    else
        f->q_head = r;
    f->q_tail = r;
    f->queued++;
    core->cold_queued += r->pipeline;
    admit_busy(core, f, r->pipeline, now);
    queue_depth(f);
    waiting_update(core, f);
}

static void queue_remove(struct dp_core *core, struct dp_function *f, struct dp_req *r)
{
    if (!r->queued)
        return;
    r->queued = false;
    if (r->prev)
        r->prev->next = r->next;
    else
        f->q_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        f->q_tail = r->prev;
    r->prev = r->next = NULL;
    f->queued--;
    core->cold_queued -= r->pipeline;
    admit_busy(core, f, r->pipeline, now_us(core));
    queue_depth(f);
    waiting_update(core, f);
}

/* The first queued request, taken out of the queue; NULL if none. */
static struct dp_req *queue_pop(struct dp_core *core, struct dp_function *f)
{
    struct dp_req *r = f->q_head;
    if (r)
        queue_remove(core, f, r);
    return r;
}

/* ---- endpoints -------------------------------------------------------------------------- */

static bool id_in(const char *const *ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

/* Answer the drains none of whose sandboxes has requests in flight any more. */
static void drains_check(struct dp_core *core, struct dp_function *f)
{
    for (struct dp_drain **pd = &f->drains; *pd;) {
        struct dp_drain *d = *pd;
        bool busy = false;
        for (struct dp_endpoint *e = f->removed; e && !busy; e = e->next_removed)
            busy = id_in((const char *const *)d->ids, d->nids, e->id);
        if (busy) {
            pd = &d->next;
            continue;
        }
        *pd = d->next;
        core->fx.drained(core->fx.ud, d->token, f, d->nids);
        for (size_t i = 0; i < d->nids; i++)
            free(d->ids[i]);
        free(d->ids);
        free(d);
    }
}

/* r gives its slot back; a removed endpoint goes with its last request. */
static void release(struct dp_core *core, struct dp_req *r)
{
    struct dp_endpoint *e = r->ep;
    if (!e)
        return;
    r->ep = NULL;
    if (dp_reg_endpoint_release(&core->reg, e))
        drains_check(core, r->fn);
}

static void dispatch(struct dp_core *core, struct dp_function *f);

void dp_core_endpoint_add(struct dp_core *core, struct dp_function *f, const char *id,
                          const char *address)
{
    dp_reg_endpoint_add(&core->reg, f, id, address);
    dispatch(core, f); /* a cold start ends here */
}

void dp_core_set_endpoints(struct dp_core *core, struct dp_function *f,
                           const struct dp_endpoint_spec *list, size_t n)
{
    /* an endpoint stays only if its sandbox id is still listed AT THE SAME ADDRESS: a sandbox
     * is its id and its address together, so one listed elsewhere is a new endpoint and the
     * old address gets no new request (issue 14 finding 9: an address may be reused by
     * another function's sandbox) */
    for (size_t i = f->neps; i-- > 0;) {
        bool keep = false;
        for (size_t k = 0; k < n && !keep; k++)
            keep = strcmp(list[k].id, f->eps[i]->id) == 0 &&
                   strcmp(list[k].address, f->eps[i]->address) == 0;
        if (!keep)
            dp_reg_endpoint_remove(&core->reg, f, i);
    }
    for (size_t i = 0; i < n; i++) {
        bool have = false;
        for (size_t k = 0; k < f->neps && !have; k++)
            have = strcmp(f->eps[k]->id, list[i].id) == 0;
        if (!have)
            dp_reg_endpoint_add(&core->reg, f, list[i].id, list[i].address);
    }
    dispatch(core, f); /* a cold start ends here */
    drains_check(core, f);
}

bool dp_core_has_sandbox(const struct dp_function *f, const char *id)
{
    for (size_t i = 0; i < f->neps; i++)
        if (strcmp(f->eps[i]->id, id) == 0)
            return true;
    for (const struct dp_endpoint *e = f->removed; e; e = e->next_removed)
        if (strcmp(e->id, id) == 0)
            return true;
    return false;
}

void dp_core_drain(struct dp_core *core, struct dp_function *f, const char *const *ids, size_t nids,
                   void *token)
{
    for (size_t i = f->neps; i-- > 0;)
        if (id_in(ids, nids, f->eps[i]->id))
            dp_reg_endpoint_remove(&core->reg, f, i);
    struct dp_drain *d = dg_xcalloc(1, sizeof(*d));
    d->token = token;
    d->ids = dg_xcalloc(nids ? nids : 1, sizeof(*d->ids));
    for (size_t i = 0; i < nids; i++)
        d->ids[i] = dg_xstrdup(ids[i]);
    d->nids = nids;
    d->next = f->drains;
    f->drains = d;
    drains_check(core, f);
}

/* ---- the function table ------------------------------------------------------------------ */

struct dp_function *dp_core_function_find(struct dp_core *core, const char *name, size_t len)
{
    return dp_reg_function_find(&core->reg, name, len);
}

struct dp_function *dp_core_functions(struct dp_core *core)
{
    return core->reg.fns;
}

struct dp_function *dp_core_function_get(struct dp_core *core, const char *name, size_t len,
                                         bool *created)
{
    return dp_reg_function_get(&core->reg, name, len, created);
}

void dp_core_set_concurrency(struct dp_core *core, struct dp_function *f, uint32_t cc)
{
    f->concurrency = cc;
    dispatch(core, f); /* more slots per sandbox may free queued requests */
}

static void exit_waits_answer(struct dp_core *core, struct dp_function *f);

/* A function goes: its queued requests get 503 if `answer_queued` (a removal; else they are
 * dropped: the core goes), its drains are dropped, then the registry frees it. */
static void function_free(struct dp_core *core, struct dp_function *f, bool answer_queued)
{
    for (struct dp_function **p = &core->to_report; *p; p = &(*p)->r_next)
        if (*p == f) {
            *p = f->r_next;
            break;
        }
    struct dp_req *r;
    while ((r = queue_pop(core, f))) {
        f->running--;
        if (answer_queued)
            answer(core, r, DP_ANSWER_REMOVED, 503, "function '%s' was removed", f->name);
    }
    while (f->drains) {
        struct dp_drain *d = f->drains;
        f->drains = d->next;
        if (core->fx.drain_dropped)
            core->fx.drain_dropped(core->fx.ud, d->token);
        for (size_t i = 0; i < d->nids; i++)
            free(d->ids[i]);
        free(d->ids);
        free(d);
    }
    dp_reg_function_free(&core->reg, f);
}

unsigned dp_core_remove_function(struct dp_core *core, struct dp_function *f)
{
    /* requests whose sandbox broke hold no sandbox, only the wait for why (at most
     * DP_EXIT_WAIT_MS): they get their 502 now, else the CP's DELETE after the drain would
     * find them running and the function stay here */
    exit_waits_answer(core, f);
    if (f->running > f->queued)
        return f->running - f->queued;
    function_free(core, f, true);
    return 0;
}

unsigned dp_core_remove_others(struct dp_core *core, const struct dg_strmap *keep)
{
    unsigned removed = 0;
    for (struct dp_function *f = core->reg.fns, *next; f; f = next) {
        next = f->next;
        if (dg_strmap_get(keep, dg_str_c(f->name)))
            continue;
        dp_core_set_endpoints(core, f, NULL, 0); /* its sandboxes are gone at the CP */
        removed += dp_core_remove_function(core, f) == 0;
    }
    return removed;
}

void dp_core_free(struct dp_core *core)
{
    if (!core)
        return;
    while (core->exit_waits) { /* dropped: the daemon stops */
        struct dp_req *r = core->exit_waits;
        core->exit_waits = r->exit_wait->next;
        free(r->exit_wait);
        r->exit_wait = NULL;
    }
    while (core->reg.fns) {
        struct dp_function *f = core->reg.fns;
        /* endpoints with requests still running: their requests end without the core */
        for (struct dp_endpoint *e = f->removed; e; e = e->next_removed)
            e->lb.in_flight = 0;
        function_free(core, f, false);
    }
    dp_reg_deinit(&core->reg);
    free(core);
}

/* ---- reports to the CP ------------------------------------------------------------------- */

/* f's in-flight count goes to the CP with this loop turn's other first requests. */
static void report_soon(struct dp_core *core, struct dp_function *f)
{
    if (f->report_due)
        return;
    f->report_due = true;
    f->r_next = core->to_report;
    core->to_report = f;
    if (core->fx.report_soon)
        core->fx.report_soon(core->fx.ud);
}

/* Reports being collected: f's in-flight count is added, and is what the CP heard last. */
struct report_buf {
    struct dp_report_item *items;
    size_t n, cap;
};

static void report_add(struct report_buf *rb, struct dp_function *f)
{
    if (rb->n == rb->cap) {
        rb->cap = rb->cap ? rb->cap * 2 : 8;
        rb->items = dg_xrealloc(rb->items, rb->cap * sizeof(*rb->items));
    }
    rb->items[rb->n++] = (struct dp_report_item){f->name, f->running};
    f->reported = f->running;
}

/* Send items[0..n) and forget them. */
static void report_send(struct dp_core *core, struct dp_report_item *items, size_t n)
{
    if (core->fx.report && n)
        core->fx.report(core->fx.ud, items, n);
    free(items);
}

void dp_core_report_due(struct dp_core *core)
{
    struct report_buf rb = {0};
    while (core->to_report) {
        struct dp_function *f = core->to_report;
        core->to_report = f->r_next;
        f->r_next = NULL;
        f->report_due = false;
        report_add(&rb, f);
    }
    report_send(core, rb.items, rb.n);
}

/* As the original: every 2 s while there is traffic, every function with requests (and a last
 * 0 for one that went idle; idle and already said so: skipped). */
static void report_all(struct dp_core *core)
{
    struct report_buf rb = {0};
    for (struct dp_function *f = core->reg.fns; f; f = f->next)
        if (f->running != 0 || f->reported != 0)
            report_add(&rb, f);
    report_send(core, rb.items, rb.n);
}

/* ---- requests ----------------------------------------------------------------------------- */

/* The policy's pick over f's endpoints, or NULL. `skip` is left out (a retry). */
static struct dp_endpoint *pick(struct dp_core *core, struct dp_function *f,
                                struct dp_endpoint *skip)
{
    if (f->neps == 0)
        return NULL;
    bool was = false;
    if (skip) {
        was = skip->lb.draining;
        skip->lb.draining = true;
    }
    int idx = dp_lb_pick(core->c.policy, &f->lb, (const void *const *)f->eps,
                         offsetof(struct dp_endpoint, lb), f->neps, f->concurrency);
    if (skip)
        skip->lb.draining = was;
    return idx < 0 ? NULL : f->eps[idx];
}

/* r takes e's slot and goes there. r may be gone when this returns. */
static void start(struct dp_core *core, struct dp_req *r, struct dp_endpoint *e)
{
    r->ep = e;
    e->lb.in_flight++;
    e->lb.processed++;
    core->fx.forward(core->fx.ud, r, e);
}

static void dispatch(struct dp_core *core, struct dp_function *f)
{
    while (f->q_head) {
        struct dp_endpoint *e = pick(core, f, NULL);
        if (!e)
            return;
        struct dp_req *r = queue_pop(core, f);
        /* a completion for the admission estimators: the queue served one */
        uint64_t now = now_us(core), waited = now - r->queued_us;
        dp_admit_done(&f->admit, now, waited, r->found_empty_fn);
        if (r->pipeline)
            dp_admit_done(&core->cold_admit, now, waited, r->found_empty_cold);
        start(core, r, e);
    }
}

/* ---- admission ---------------------------------------------------------------------------- */

void dp_core_admit_view(struct dp_core *core, const struct dp_function *f, bool cold,
                        uint64_t timeout_us, struct dp_admit_view *v)
{
    uint64_t now = now_us(core);
    *v = (struct dp_admit_view){.cold_queued = core->cold_queued};
    v->has_fn = dp_admit_wait(&f->admit, now, f->queued, &v->wait_fn_us);
    v->rate_fn = dp_admit_rate(&f->admit, now);
    if (cold) {
        v->has_cold = dp_admit_wait(&core->cold_admit, now, core->cold_queued, &v->wait_cold_us);
        v->rate_cold = dp_admit_rate(&core->cold_admit, now);
        v->recent_cold_us = dp_admit_recent(&core->cold_admit, now, &v->recent_cold_n);
    }
    /* what the request's own service takes (a sandbox's start, a slot's turn) is not a
     * backlog: the limit is over the usual wait of one that found the queue empty */
    uint64_t base = dp_admit_usual(&f->admit);
    if (cold && dp_admit_usual(&core->cold_admit) > base)
        base = dp_admit_usual(&core->cold_admit);
    uint64_t deadline = core->c.queue_timeout_ms * 1000;
    if (timeout_us && timeout_us < deadline)
        deadline = timeout_us;
    v->deadline_us = deadline;
    v->limit_us = core->c.admit_max_wait_ms ? core->c.admit_max_wait_ms * 1000 + base : deadline;
    if (v->limit_us > deadline)
        v->limit_us = deadline;
    /* the usual wait unloaded: lag raises the usual wait, not this floor */
    uint64_t floor = dp_admit_usual_floor(&f->admit, now);
    if (cold)
        floor = DG_MAX(floor, dp_admit_usual_floor(&core->cold_admit, now));
    v->shed_limit_us =
        core->c.admit_max_wait_ms ? core->c.admit_max_wait_ms * 1000 + floor : deadline;
    if (v->shed_limit_us > deadline)
        v->shed_limit_us = deadline;
    v->backlog_fn = dp_admit_backlog(&f->admit, now, v->limit_us);
    v->backlog_cold = cold && dp_admit_backlog(&core->cold_admit, now, v->limit_us);
}

/* r is refused: no longer counted as running, a Retry-After of its expected wait (1..60 s). */
static void refuse(struct dp_core *core, struct dp_function *f, struct dp_req *r, uint64_t wait_us)
{
    f->running--;
    if (core->c.m_refused)
        dg_counter_add(core->c.m_refused, 1);
    uint64_t s = (wait_us + 999999) / 1000000;
    r->retry_after_s = (uint32_t)(s < 1 ? 1 : s > 60 ? 60 : s);
}

/* Admission control: r (of f, not queued yet, counted in f->running) is refused with 503
 * when its expected wait is over the limit; true if so (r is the adapter's again). */
static bool admit_refuse(struct dp_core *core, struct dp_function *f, struct dp_req *r)
{
    struct dp_admit_view v;
    /* the function's first request at zero waits for the shared cold-start pipeline; its
     * others wait behind it for the function's own sandboxes */
    bool pipeline = r->cold && f->queued == 0;
    dp_core_admit_view(core, f, pipeline, r->timeout_us, &v);
    /* only a backlog's estimate counts: a burst into an idle queue is admitted. A function's
     * own queue (its sandboxes at its upper bound: the user's choice, as Knative's activator
     * queues) is refused for its deadline only; the pipeline for admit_max_wait_ms over its
     * usual wait, and a pipeline queue shorter than admit_min_queue for the deadline only (a
     * few cold starts are served side by side: their estimate says little) */
    unsigned minq = core->c.admit_min_queue;
    bool fn = v.has_fn && v.backlog_fn && v.wait_fn_us > v.deadline_us;
    bool cold = v.has_cold && v.backlog_cold && v.wait_cold_us > v.limit_us &&
                (v.cold_queued >= minq || v.wait_cold_us > v.deadline_us);
    if (fn || cold) {
        bool by_cold = cold && (!fn || v.wait_cold_us > v.wait_fn_us);
        uint64_t wait = by_cold ? v.wait_cold_us : v.wait_fn_us;
        refuse(core, f, r, wait);
        if (by_cold)
            answer(core, r, DP_ANSWER_OVERLOADED, 503,
                   "function '%s': overloaded: %u cold start(s) queued ahead, about %llu ms "
                   "expected wait at %.0f/s, over the %llu ms admitted; retry after %u s",
                   f->name, v.cold_queued, (unsigned long long)(wait / 1000), v.rate_cold,
                   (unsigned long long)(v.limit_us / 1000), r->retry_after_s);
        else
            answer(core, r, DP_ANSWER_OVERLOADED, 503,
                   "function '%s': overloaded: %u request(s) queued ahead, about %llu ms "
                   "expected wait at %.0f/s, over the %llu ms deadline; retry after %u s",
                   f->name, f->queued, (unsigned long long)(wait / 1000), v.rate_fn,
                   (unsigned long long)(v.deadline_us / 1000), r->retry_after_s);
        return true;
    }
    /* however short the pipeline's queue (not empty: an empty one serves a new cold start
     * at once), when the cold starts it served lately (enough of them to say: as many as
     * admit_min_queue, DP_ADMIT_SHED_MIN at least) waited longer than admit_max_wait_ms over
     * the lowest usual wait of the last 10-20 s on average, a share of new ones is refused,
     * the larger the later they were (dp_admit_shed): its lag, not its length (the loops busy
     * at 1.5x the sustainable rate) */
    if (!pipeline)
        return false;
    bool slow = v.recent_cold_n >= DG_MAX(minq, DP_ADMIT_SHED_MIN) && v.cold_queued > 0;
    if (!dp_admit_shed(&core->cold_admit, v.shed_limit_us, slow ? v.recent_cold_us : 0))
        return false;
    refuse(core, f, r, v.recent_cold_us);
    answer(core, r, DP_ANSWER_OVERLOADED, 503,
           "function '%s': overloaded: the last %u cold start(s) waited %llu ms on "
           "average, over the %llu ms admitted; retry after %u s",
           f->name, v.recent_cold_n, (unsigned long long)(v.recent_cold_us / 1000),
           (unsigned long long)(v.shed_limit_us / 1000), r->retry_after_s);
    return true;
}

void dp_core_on_request(struct dp_core *core, struct dp_function *f, struct dp_req *r)
{
    r->fn = f;
    r->cold = f->neps == 0;
    f->running++;
    if (f->m_requests)
        dg_counter_add(f->m_requests, 1);
    struct dp_endpoint *e = f->q_head ? NULL : pick(core, f, NULL); /* FIFO: no overtaking */
    if (e) {
        start(core, r, e);
        return;
    }
    if (core->c.admission && admit_refuse(core, f, r))
        return;
    /* it waits: at zero (scale from zero) or every sandbox busy. The CP hears it in this loop
     * turn's report, not at the next 2 s one; served requests are left to that report (one
     * message per request at low concurrency was most of a warm request's cost) */
    if (f->reported < f->running)
        report_soon(core, f);
    if (f->neps == 0 && f->m_cold)
        dg_counter_add(f->m_cold, 1);
    queue_push(core, f, r);
}

/* ---- sandboxes that broke: waiting for why ---------------------------------------------- */

static void exit_wait_remove(struct dp_core *core, struct dp_req *r)
{
    struct dp_exit_wait *w = r->exit_wait;
    if (!w)
        return;
    if (w->prev)
        w->prev->exit_wait->next = w->next;
    else
        core->exit_waits = w->next;
    if (w->next)
        w->next->exit_wait->prev = w->prev;
    else
        core->exit_waits_tail = w->prev;
    free(w);
    r->exit_wait = NULL;
}

/* r's sandbox `id` broke before any answer; `msg` is its 502 if no reason comes in time. */
static void exit_wait_start(struct dp_core *core, struct dp_req *r, const char *id, const char *msg)
{
    struct dp_exit_wait *w = dg_xcalloc(1, sizeof(*w));
    w->until_us = now_us(core) + DP_EXIT_WAIT_MS * 1000;
    snprintf(w->id, sizeof(w->id), "%s", id);
    snprintf(w->msg, sizeof(w->msg), "%s", msg);
    w->prev = core->exit_waits_tail;
    if (core->exit_waits_tail)
        core->exit_waits_tail->exit_wait->next = r;
    else
        core->exit_waits = r;
    core->exit_waits_tail = r;
    r->exit_wait = w;
}

/* Answer r (holding no slot, out of the waits) with the 502 for its broken sandbox: why it
 * exited when known, else `msg`. */
static void answer_broken(struct dp_core *core, struct dp_req *r, const char *id,
                          const char *reason, const char *msg)
{
    struct dp_function *f = r->fn;
    f->running--;
    if (reason) {
        dg_log(DG_LOG_WARN, "proxy", "fn=%s sandbox %s %s: 502", f->name, id, reason);
        answer(core, r, DP_ANSWER_BROKEN, 502, "function '%s': sandbox %s %s", f->name, id, reason);
    } else
        answer(core, r, DP_ANSWER_BROKEN, 502, "%s", msg);
    dispatch(core, f);
}

/* r leaves its wait and gets the 502 without a reason. */
static void exit_wait_answer(struct dp_core *core, struct dp_req *r)
{
    char msg[sizeof(r->exit_wait->msg)], id[sizeof(r->exit_wait->id)];
    snprintf(msg, sizeof(msg), "%s", r->exit_wait->msg);
    snprintf(id, sizeof(id), "%s", r->exit_wait->id);
    exit_wait_remove(core, r);
    answer_broken(core, r, id, NULL, msg);
}

void dp_core_on_exited(struct dp_core *core, struct dp_function *f, const char *id,
                       const char *reason)
{
    /* requests on it whose connection has not broken yet: listed, or taken out and running */
    for (size_t i = 0; i < f->neps; i++)
        if (strcmp(f->eps[i]->id, id) == 0 && !f->eps[i]->exit_reason)
            f->eps[i]->exit_reason = dg_xstrdup(reason);
    for (struct dp_endpoint *e = f->removed; e; e = e->next_removed)
        if (strcmp(e->id, id) == 0 && !e->exit_reason)
            e->exit_reason = dg_xstrdup(reason);
    for (struct dp_req *r = core->exit_waits, *next; r; r = next) {
        next = r->exit_wait->next;
        if (r->fn != f || strcmp(r->exit_wait->id, id) != 0)
            continue;
        char msg[sizeof(r->exit_wait->msg)];
        snprintf(msg, sizeof(msg), "%s", r->exit_wait->msg);
        exit_wait_remove(core, r);
        answer_broken(core, r, id, reason, msg);
    }
}

static void exit_waits_answer(struct dp_core *core, struct dp_function *f)
{
    for (struct dp_req *r = core->exit_waits, *next; r; r = next) {
        next = r->exit_wait->next;
        if (r->fn == f)
            exit_wait_answer(core, r);
    }
}

void dp_core_on_upstream_error(struct dp_core *core, struct dp_req *r, bool may_retry, bool sent,
                               const char *err)
{
    struct dp_function *f = r->fn;
    struct dp_endpoint *e = r->ep;
    struct dp_endpoint *other = may_retry && !r->retried ? pick(core, f, e) : NULL;
    char addr[128], id[96], reason[256];
    snprintf(addr, sizeof(addr), "%s", e->address);
    snprintf(id, sizeof(id), "%s", e->id);
    snprintf(reason, sizeof(reason), "%s", e->exit_reason ? e->exit_reason : "");
    release(core, r); /* e may be gone */
    if (other) {
        dg_log(DG_LOG_INFO, "proxy", "fn=%s endpoint=%s: %s; retrying on %s", f->name, addr, err,
               other->address);
        r->retried = true;
        start(core, r, other);
        return;
    }
    char msg[sizeof(((struct dp_exit_wait *)0)->msg)];
    snprintf(msg, sizeof(msg), "function '%s': sandbox %s failed: %s", f->name, addr, err);
    if (reason[0]) { /* the push that said why came first */
        answer_broken(core, r, id, reason, msg);
        return;
    }
    /* only a sandbox that took the request and then broke may have died under it (an OOM
     * kill): one that could not be reached answers at once */
    if (!sent) {
        answer_broken(core, r, id, NULL, msg);
        return;
    }
    exit_wait_start(core, r, id, msg);
}

void dp_core_on_misrouted(struct dp_core *core, struct dp_req *r, bool may_retry, const char *why)
{
    struct dp_function *f = r->fn;
    struct dp_endpoint *e = r->ep;
    char addr[128], id[96];
    snprintf(addr, sizeof(addr), "%s", e->address);
    snprintf(id, sizeof(id), "%s", e->id);
    for (size_t i = 0; i < f->neps; i++)
        if (f->eps[i] == e) {
            dp_reg_endpoint_remove(&core->reg, f, i);
            break;
        }
    release(core, r); /* e may be gone */
    dg_log(DG_LOG_WARN, "proxy", "fn=%s endpoint %s at %s is stale (%s): taken out of the list",
           f->name, id, addr, why);
    if (may_retry && !r->retried) {
        r->retried = true;
        struct dp_endpoint *o = f->q_head ? NULL : pick(core, f, NULL);
        if (o) {
            start(core, r, o);
        } else {
            r->cold = f->neps == 0;
            if (f->reported < f->running)
                report_soon(core, f);
            queue_push(core, f, r);
        }
        return;
    }
    f->running--;
    answer(core, r, DP_ANSWER_BROKEN, 502,
           "function '%s': sandbox %s at %s is gone (its address now serves another sandbox); "
           "not retried: %s",
           f->name, id, addr, may_retry ? "it was retried once already" : "the request had a body");
    dispatch(core, f);
}

void dp_core_on_done(struct dp_core *core, struct dp_req *r)
{
    struct dp_function *f = r->fn;
    queue_remove(core, f, r);
    release(core, r);
    f->running--;
    exit_wait_remove(core, r);
    /* idle again after the CP heard it busy: its 0 rides the next paced report, not the 2 s
     * sweep (at thousands of cold starts a second the sweep carried one 0 per cold start of
     * the last 2 s in one burst, parsed in one loop turn on both ends) */
    if (f->running == 0 && f->reported != 0)
        report_soon(core, f);
    dispatch(core, f);
}

/* ---- errors and time ---------------------------------------------------------------------- */

/* Every queued request of f gets 503 "cannot start" with f->error. */
static void fail_queued(struct dp_core *core, struct dp_function *f)
{
    unsigned n = 0;
    struct dp_req *r;
    while ((r = queue_pop(core, f))) {
        f->running--;
        answer(core, r, DP_ANSWER_CANNOT_START, 503, "function '%s' cannot start: %s", f->name,
               f->error ? f->error : "unknown error");
        n++;
    }
    if (n)
        dg_log(DG_LOG_INFO, "proxy", "fn=%s cannot start: %u queued request(s) answered 503: %s",
               f->name, n, f->error ? f->error : "unknown error");
}

void dp_core_set_error(struct dp_core *core, struct dp_function *f, const char *reason)
{
    if (f->neps > 0) {
        free(f->error);
        f->error = NULL;
    } else if (reason && reason[0]) {
        free(f->error);
        f->error = dg_xstrdup(reason);
        fail_queued(core, f);
    }
}

void dp_core_expire_function(struct dp_core *core, struct dp_function *f)
{
    uint64_t now = now_us(core);
    unsigned long long timeout = (unsigned long long)core->c.queue_timeout_ms;
    while (f->q_head && f->q_head->deadline_us <= now) {
        struct dp_req *r = queue_pop(core, f);
        f->running--;
        if (f->neps == 0 && f->error)
            answer(core, r, DP_ANSWER_QUEUE_TIMEOUT, 503,
                   "function '%s': no sandbox became available within %llu ms "
                   "(cold start timed out; the last attempt failed: %s)",
                   f->name, timeout, f->error);
        else
            answer(core, r, DP_ANSWER_QUEUE_TIMEOUT, 503,
                   "function '%s': no sandbox became available within %llu ms%s", f->name, timeout,
                   f->neps ? " (all busy)" : " (cold start timed out)");
    }
}

void dp_core_tick(struct dp_core *core)
{
    uint64_t now = now_us(core);
    while (core->exit_waits && core->exit_waits->exit_wait->until_us <= now)
        exit_wait_answer(core, core->exit_waits);
    for (struct dp_function *f = core->waiting, *next; f; f = next) {
        next = f->w_next; /* f leaves the list when its queue empties */
        dp_core_expire_function(core, f);
    }
    if (now >= core->next_report_us) {
        core->next_report_us = now + 2000 * 1000;
        report_all(core);
    }
}
