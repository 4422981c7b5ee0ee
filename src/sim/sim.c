/*
 * sim.c: the simulation (sim.h). A discrete-event loop on a simulated clock
 * in microseconds: arrivals come from the trace (sorted), completions and
 * sandboxes becoming ready from a binary heap ordered by (time, kind,
 * sequence), ticks every `tick_ms`. The decisions are the CP's own code
 * (cp_as_decide, cp_place); the data plane is the real one, its core (dp/dp_core.h:
 * queue, slots, load balancing, deadlines, "cannot start") driven through a
 * simulated effects table: forward schedules the completion after the
 * invocation's duration, answer records a failed invocation, now is the
 * simulated clock. The list of ready sandboxes is the interface between the two
 * halves: a sandbox that becomes ready is added to the core's endpoint list, one
 * scaled down is drained there and goes when the core says it is idle.
 */
#include "sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autoscaler.h"
#include "dp_core.h"
#include "placement.h"

enum ev_kind { EV_COMPLETE, EV_READY }; /* the order at one instant; then ticks, arrivals */

struct event {
    uint64_t t;
    uint64_t seq;
    enum ev_kind kind;
    uint32_t fn;
    uint32_t sb;  /* sandbox id (READY) */
    uint32_t inv; /* COMPLETE */
};

enum sb_state { SB_CREATING, SB_READY, SB_DRAINING };

struct sandbox {
    uint32_t id; /* unique within its function */
    uint32_t worker;
    enum sb_state state;
    uint64_t born_us;
};

struct fn_state {
    const struct sim_function *spec;
    struct cp_as_config as;
    struct cp_as_state ast;
    struct dp_function *dpf; /* the DP core's function: queue, endpoints (ready sandboxes) */
    struct sandbox *sbs;     /* in creation order */
    size_t nsbs, capsbs;
    uint32_t next_sb;
    unsigned ready, creating;
    uint32_t *pulled; /* workers that have its image */
    size_t npulled, cappulled;
    int desired; /* the last decision */
    bool unschedulable;
    /* results */
    double *sched_ms;
    size_t nsched, capsched;
    double log_slowdown;
    struct sim_fn_result r;
};

struct sim {
    const struct sim_trace *t;
    const struct sim_config *c;
    struct fn_state *fns;
    struct cp_node *nodes;
    struct cp_placer placer;
    struct event *heap;
    size_t nheap, capheap;
    uint64_t seq, now, rng;
    unsigned unschedulable;
    bool ending;         /* results: removing what is left retries nothing */
    struct dp_core *dp;  /* the data plane */
    struct dp_req *reqs; /* per invocation: its request in the DP core */
    uint64_t *start_us;  /* per invocation: when it started (0: not yet) */
    bool *cold;
    struct sim_result *out;
};

/* ---- the event heap --------------------------------------------------------------------- */

static bool ev_before(const struct event *a, const struct event *b)
{
    if (a->t != b->t)
        return a->t < b->t;
    if (a->kind != b->kind)
        return a->kind < b->kind;
    return a->seq < b->seq;
}

static void heap_push(struct sim *s, struct event e)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 1024;
        s->heap = dg_xrealloc(s->heap, s->capheap * sizeof(*s->heap));
    }
    e.seq = s->seq++;
    size_t i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_before(&e, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
}

static struct event heap_pop(struct sim *s)
{
    struct event top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct event *best = &last;
        if (l < s->nheap && ev_before(&s->heap[l], best))
            m = l, best = &s->heap[l];
        if (r < s->nheap && ev_before(&s->heap[r], best))
            m = r;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->nheap)
        s->heap[i] = last;
    return top;
}

/* ---- sandboxes -------------------------------------------------------------------------- */

static double rand01(struct sim *s)
{
    return (double)(dg_rand_next(&s->rng) >> 11) / 9007199254740992.0;
}

static uint64_t create_latency(struct sim *s)
{
    const struct sim_config *c = s->c;
    switch (c->create_kind) {
    case SIM_LAT_UNIFORM:
        return c->create_a_us + (uint64_t)(rand01(s) * (double)(c->create_b_us - c->create_a_us));
    case SIM_LAT_EXPONENTIAL:
        return (uint64_t)(-log(1 - rand01(s)) * (double)c->create_a_us);
    case SIM_LAT_FIXED:
    default:
        return c->create_a_us;
    }
}

static struct sandbox *sb_find(struct fn_state *f, uint32_t id)
{
    for (size_t i = 0; i < f->nsbs; i++)
        if (f->sbs[i].id == id)
            return &f->sbs[i];
    return NULL;
}

/* Account a sandbox's life within the measured interval [warmup, now]. */
static void account_life(struct sim *s, struct fn_state *f, const struct sandbox *sb)
{
    uint64_t from = DG_MAX(sb->born_us, s->c->warmup_us);
    if (s->now <= from)
        return;
    double secs = (double)(s->now - from) / 1e6;
    f->r.sandbox_seconds += secs;
    f->r.memory_mib_seconds += secs * (double)f->spec->memory_mib;
}

static void reconcile(struct sim *s, struct fn_state *f);

static void sb_remove(struct sim *s, struct fn_state *f, size_t i)
{
    struct sandbox *sb = &f->sbs[i];
    account_life(s, f, sb);
    struct cp_node *n = &s->nodes[sb->worker];
    n->cpu_used -= f->spec->cpu_milli;
    n->mem_used -= f->spec->memory_mib;
    n->sandboxes--;
    memmove(&f->sbs[i], &f->sbs[i + 1], (f->nsbs - i - 1) * sizeof(*f->sbs));
    f->nsbs--;
    /* capacity freed: functions waiting for room try again now (as the CP does) */
    if (s->unschedulable && !s->ending)
        for (size_t k = 0; k < s->t->nfns && s->unschedulable; k++)
            if (s->fns[k].unschedulable)
                reconcile(s, &s->fns[k]);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void finish_failed(struct sim *s, struct fn_state *f, uint32_t inv, const char *why)
{
    const struct sim_invocation *v = &s->t->invs[inv];
    if (v->arrival_us < s->c->warmup_us)
        return;
    f->r.failed++;
    if (s->c->csv)
        fprintf(s->c->csv, "%s,%.3f,,%.3f,%.3f,,%s,%s\n", f->spec->name,
                (double)v->arrival_us / 1000, (double)s->now / 1000, (double)v->duration_us / 1000,
                s->cold[inv] ? "cold" : "warm", why);
}

/* ---- the data plane's effects ------------------------------------------------------------ */

static uint64_t fx_now(void *ud)
{
    struct sim *s = ud;
    return s->now;
}

/* A request got a slot on a ready sandbox: it runs for its duration (no interference). */
static void fx_forward(void *ud, struct dp_req *r, struct dp_endpoint *e)
{
    struct sim *s = ud;
    uint32_t inv = (uint32_t)(r - s->reqs);
    const struct sim_invocation *v = &s->t->invs[inv];
    s->start_us[inv] = s->now;
    heap_push(s, (struct event){
                     .t = s->now + v->duration_us, .kind = EV_COMPLETE, .fn = v->fn, .inv = inv});
}

/* The DP answered a request itself: it failed (no capacity, or it waited too long). */
static void fx_answer(void *ud, struct dp_req *r, enum dp_answer_kind kind, int status,
                      const char *msg)
{
    struct sim *s = ud;
    uint32_t inv = (uint32_t)(r - s->reqs);
    finish_failed(s, &s->fns[s->t->invs[inv].fn], inv,
                  kind == DP_ANSWER_CANNOT_START ? "no-capacity" : "timeout");
}

/* A scaled-down sandbox has no request left (token: function index << 32 | sandbox id). */
static void fx_drained(void *ud, void *token, const struct dp_function *df, size_t nids)
{
    struct sim *s = ud;
    uint64_t t = (uint64_t)(uintptr_t)token;
    struct fn_state *f = &s->fns[t >> 32];
    struct sandbox *sb = sb_find(f, (uint32_t)t);
    if (sb)
        sb_remove(s, f, (size_t)(sb - f->sbs));
}

static void sb_id(char *buf, size_t len, uint32_t id)
{
    snprintf(buf, len, "%u", id);
}

/* ---- decisions --------------------------------------------------------------------------- */

static void scale_down(struct sim *s, struct fn_state *f, unsigned count)
{
    /* newest first, as the CP: they drain, then go once idle */
    for (size_t i = f->nsbs; i-- > 0 && count > 0;) {
        struct sandbox *sb = &f->sbs[i];
        if (sb->state != SB_READY)
            continue;
        sb->state = SB_DRAINING;
        f->ready--;
        count--;
        char id[16];
        const char *ids[] = {id};
        sb_id(id, sizeof(id), sb->id);
        uint64_t token = (uint64_t)(f - s->fns) << 32 | sb->id;
        dp_core_drain(s->dp, f->dpf, ids, 1, (void *)(uintptr_t)token); /* gone when idle */
    }
}

/* Does worker w have f's image? If not, it will: the creation pulls it. */
static bool image_cached(struct fn_state *f, uint32_t w)
{
    for (size_t i = 0; i < f->npulled; i++)
        if (f->pulled[i] == w)
            return true;
    if (f->npulled == f->cappulled) {
        f->cappulled = f->cappulled ? f->cappulled * 2 : 4;
        f->pulled = dg_xrealloc(f->pulled, f->cappulled * sizeof(*f->pulled));
    }
    f->pulled[f->npulled++] = w;
    return false;
}

/* Act on f->desired (after a decision, or again once capacity freed). */
static void reconcile(struct sim *s, struct fn_state *f)
{
    int desired = f->desired;
    int total = (int)(f->ready + f->creating);
    uint32_t fi = (uint32_t)(f - s->fns);
    if (desired > total) {
        unsigned want = (unsigned)(desired - total);
        size_t *chosen = dg_xcalloc(want, sizeof(*chosen));
        unsigned k = cp_place(&s->placer, s->nodes, s->c->workers, f->spec->name,
                              f->spec->cpu_milli, f->spec->memory_mib, want, chosen);
        for (unsigned i = 0; i < k; i++) {
            if (f->nsbs == f->capsbs) {
                f->capsbs = f->capsbs ? f->capsbs * 2 : 4;
                f->sbs = dg_xrealloc(f->sbs, f->capsbs * sizeof(*f->sbs));
            }
            struct sandbox *sb = &f->sbs[f->nsbs++];
            *sb = (struct sandbox){.id = f->next_sb++,
                                   .worker = (uint32_t)chosen[i],
                                   .state = SB_CREATING,
                                   .born_us = s->now};
            f->creating++;
            if (s->now >= s->c->warmup_us)
                f->r.sandboxes_created++;
            uint64_t lat = create_latency(s);
            if (!image_cached(f, (uint32_t)chosen[i])) {
                lat += s->c->image_pull_us;
                if (s->now >= s->c->warmup_us)
                    f->r.image_pulls++;
            }
            heap_push(s,
                      (struct event){.t = s->now + lat, .kind = EV_READY, .fn = fi, .sb = sb->id});
        }
        free(chosen);
        if (k < want && !f->unschedulable) {
            f->unschedulable = true;
            s->unschedulable++;
            s->out->unschedulable_events++;
        }
        if (k == want && f->unschedulable) {
            f->unschedulable = false;
            s->unschedulable--;
        }
        if (k < want && f->ready == 0 && f->creating == 0)
            dp_core_set_error(s->dp, f->dpf, "no capacity"); /* the DP answers them 503 */
    } else {
        if (f->unschedulable) {
            f->unschedulable = false;
            s->unschedulable--;
        }
        if (desired < (int)f->ready && f->creating == 0)
            scale_down(s, f, f->ready - (unsigned)desired);
    }
}

static void decide(struct sim *s, struct fn_state *f)
{
    struct cp_as_decision d;
    double sample = (double)f->dpf->running; /* queued + running */
    cp_as_decide(&f->as, &f->ast, (int)f->ready, sample, s->now / 1000, &d);
    f->desired = d.desired;
    reconcile(s, f);
}

/* ---- events ----------------------------------------------------------------------------- */

static void on_arrival(struct sim *s, uint32_t inv)
{
    const struct sim_invocation *v = &s->t->invs[inv];
    struct fn_state *f = &s->fns[v->fn];
    /* cold: no sandbox of the function is ready when the request arrives */
    s->cold[inv] = f->ready == 0;
    if (v->arrival_us >= s->c->warmup_us) {
        f->r.invocations++;
        f->r.cold += s->cold[inv];
    }
    dp_core_on_request(s->dp, f->dpf, &s->reqs[inv]);
    if (f->ready == 0 && f->creating == 0)
        decide(s, f); /* scale from zero: the DP's first metric */
    dp_core_expire_function(s->dp, f->dpf);
}

static void on_complete(struct sim *s, const struct event *e)
{
    struct fn_state *f = &s->fns[e->fn];
    const struct sim_invocation *v = &s->t->invs[e->inv];
    uint64_t start = s->start_us[e->inv];
    if (v->arrival_us >= s->c->warmup_us) {
        double sched = (double)(start - v->arrival_us) / 1000;
        double response = (double)(s->now - v->arrival_us);
        f->r.completed++;
        if (f->nsched == f->capsched) {
            f->capsched = f->capsched ? f->capsched * 2 : 64;
            f->sched_ms = dg_xrealloc(f->sched_ms, f->capsched * sizeof(double));
        }
        f->sched_ms[f->nsched++] = sched;
        f->log_slowdown += log(response / (double)v->duration_us);
        if (s->c->csv)
            fprintf(s->c->csv, "%s,%.3f,%.3f,%.3f,%.3f,%.3f,%s,ok\n", f->spec->name,
                    (double)v->arrival_us / 1000, (double)start / 1000, (double)s->now / 1000,
                    (double)v->duration_us / 1000, sched, s->cold[e->inv] ? "cold" : "warm");
    }
    /* queued requests past their deadline fail before the slot is given to the next */
    dp_core_expire_function(s->dp, f->dpf);
    dp_core_on_done(s->dp, &s->reqs[e->inv]);
}

static void on_ready(struct sim *s, const struct event *e)
{
    struct fn_state *f = &s->fns[e->fn];
    struct sandbox *sb = sb_find(f, e->sb);
    if (!sb)
        return;
    sb->state = SB_READY;
    f->creating--;
    f->ready++;
    dp_core_expire_function(s->dp, f->dpf);
    char id[16];
    sb_id(id, sizeof(id), sb->id);
    dp_core_endpoint_add(s->dp, f->dpf, id, "");
}

/* ---- results ---------------------------------------------------------------------------- */

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p / 100 * (double)n);
    return v[i ? i - 1 : 0]; /* nearest rank */
}

static void finish_results(struct sim *s)
{
    struct sim_result *out = s->out;
    struct sim_fn_result *all = &out->all;
    size_t total = 0;
    double log_all = 0;
    for (size_t i = 0; i < s->t->nfns; i++)
        total += s->fns[i].nsched;
    double *every = dg_xcalloc(total ? total : 1, sizeof(double));
    size_t k = 0;
    s->ending = true;
    for (size_t i = 0; i < s->t->nfns; i++) {
        struct fn_state *f = &s->fns[i];
        while (f->nsbs) /* still up at the end: their life so far */
            sb_remove(s, f, f->nsbs - 1);
        qsort(f->sched_ms, f->nsched, sizeof(double), dcmp);
        f->r.sched_p50_ms = pct(f->sched_ms, f->nsched, 50);
        f->r.sched_p99_ms = pct(f->sched_ms, f->nsched, 99);
        f->r.slowdown_geomean = f->nsched ? exp(f->log_slowdown / (double)f->nsched) : 0;
        memcpy(every + k, f->sched_ms, f->nsched * sizeof(double));
        k += f->nsched;
        log_all += f->log_slowdown;
        all->invocations += f->r.invocations;
        all->completed += f->r.completed;
        all->failed += f->r.failed;
        all->cold += f->r.cold;
        all->sandbox_seconds += f->r.sandbox_seconds;
        all->memory_mib_seconds += f->r.memory_mib_seconds;
        all->sandboxes_created += f->r.sandboxes_created;
        all->image_pulls += f->r.image_pulls;
        out->fns[i] = f->r;
    }
    qsort(every, total, sizeof(double), dcmp);
    all->sched_p50_ms = pct(every, total, 50);
    all->sched_p99_ms = pct(every, total, 99);
    all->slowdown_geomean = total ? exp(log_all / (double)total) : 0;
    free(every);
    out->end_us = s->now;
}

int sim_run(const struct sim_trace *t, const struct sim_config *c, struct sim_result *out,
            struct dg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (c->workers == 0)
        return dg_err_set(err, DG_E_INVAL, "workers: expected at least 1");
    struct sim s = {.t = t, .c = c, .out = out, .rng = c->seed ? c->seed : 1};
    out->fns = dg_xcalloc(t->nfns ? t->nfns : 1, sizeof(*out->fns));
    s.fns = dg_xcalloc(t->nfns ? t->nfns : 1, sizeof(*s.fns));
    s.nodes = dg_xcalloc(c->workers, sizeof(*s.nodes));
    s.start_us = dg_xcalloc(t->ninvs, sizeof(*s.start_us));
    s.reqs = dg_xcalloc(t->ninvs ? t->ninvs : 1, sizeof(*s.reqs));
    struct dp_core_config dc = {.policy = (enum dp_lb_policy)c->lb,
                                .queue_timeout_ms = c->queue_timeout_us / 1000};
    struct dp_effects fx = {
        .ud = &s, .now = fx_now, .forward = fx_forward, .answer = fx_answer, .drained = fx_drained};
    s.dp = dp_core_new(&dc, &fx);
    s.cold = dg_xcalloc(t->ninvs, sizeof(*s.cold));
    char(*names)[24] = dg_xcalloc(c->workers, sizeof(*names));
    for (unsigned i = 0; i < c->workers; i++) {
        snprintf(names[i], sizeof(names[i]), "worker-%04u", i);
        s.nodes[i] = (struct cp_node){.name = names[i],
                                      .cpu_cap = c->worker_cpu_milli,
                                      .mem_cap = c->worker_memory_mib,
                                      .schedulable = true};
    }
    cp_placer_init(&s.placer, (enum cp_place_policy)c->placement, c->chbl_eps, s.rng);
    for (size_t i = 0; i < t->nfns; i++) {
        struct fn_state *f = &s.fns[i];
        f->spec = &t->fns[i];
        cp_as_config_default(&f->as, false);
        if (c->knative)
            cp_as_config_knative(&f->as);
        f->as.container_concurrency = c->concurrency;
        if (c->stable_window_ms)
            f->as.stable_window_ms = c->stable_window_ms;
        if (c->panic_window_ms)
            f->as.panic_window_ms = c->panic_window_ms;
        if (c->scale_to_zero_grace_ms)
            f->as.scale_to_zero_grace_ms = c->scale_to_zero_grace_ms;
        if (c->target_pct > 0)
            f->as.target_pct = c->target_pct;
        if (f->spec->upper_bound > 0)
            f->as.upper_bound = f->spec->upper_bound;
        f->as.lower_bound = f->spec->lower_bound;
        cp_as_state_init(&f->ast, &f->as);
        char name[24];
        snprintf(name, sizeof(name), "%zu", i); /* unique, as trace names may not be */
        f->dpf = dp_core_function_get(s.dp, name, strlen(name), NULL);
        f->dpf->concurrency = (uint32_t)DG_MAX(0, c->concurrency);
        f->dpf->lb.rng = s.rng + i + 1;
    }
    uint64_t tick_us = 2000 * 1000ULL, next_tick = tick_us;
    size_t next_arrival = 0;
    for (;;) {
        /* the next thing to happen: heap (completions, ready), tick, arrival */
        uint64_t t_heap = s.nheap ? s.heap[0].t : UINT64_MAX;
        uint64_t t_arr = next_arrival < t->ninvs ? t->invs[next_arrival].arrival_us : UINT64_MAX;
        bool busy = s.nheap > 0 || next_arrival < t->ninvs;
        for (size_t i = 0; i < t->nfns && !busy; i++)
            busy = s.fns[i].dpf->queued > 0;
        if (!busy)
            break;
        if (t_heap <= next_tick && t_heap <= t_arr) {
            struct event e = heap_pop(&s);
            s.now = e.t;
            if (e.kind == EV_COMPLETE)
                on_complete(&s, &e);
            else
                on_ready(&s, &e);
        } else if (next_tick <= t_arr) {
            s.now = next_tick;
            next_tick += tick_us;
            for (size_t i = 0; i < t->nfns; i++)
                decide(&s, &s.fns[i]);
            for (size_t i = 0; i < t->nfns; i++) /* queued requests past their deadline */
                if (s.fns[i].dpf->queued)
                    dp_core_expire_function(s.dp, s.fns[i].dpf);
        } else {
            s.now = t_arr;
            on_arrival(&s, (uint32_t)next_arrival++);
        }
    }
    /* requests still queued when nothing else can happen cannot be served */
    for (size_t i = 0; i < t->nfns; i++)
        dp_core_remove_function(s.dp, s.fns[i].dpf); /* answers them (as "timeout") */
    finish_results(&s);
    for (size_t i = 0; i < t->nfns; i++) {
        cp_as_state_deinit(&s.fns[i].ast);
        free(s.fns[i].sbs);
        free(s.fns[i].pulled);
        free(s.fns[i].sched_ms);
    }
    cp_placer_deinit(&s.placer);
    free(s.fns);
    free(s.nodes);
    free(names);
    free(s.heap);
    dp_core_free(s.dp);
    free(s.reqs);
    free(s.start_us);
    free(s.cold);
    return 0;
}

void sim_result_free(struct sim_result *r)
{
    free(r->fns);
    r->fns = NULL;
}
