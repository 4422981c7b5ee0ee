/*
 * sim.c: the simulation (sim.h). A discrete-event loop on a simulated clock
 * in microseconds: arrivals come from the trace (sorted), completions and
 * sandboxes becoming ready from a binary heap ordered by (time, kind,
 * sequence), ticks every 2 s. Both planes are the daemons' own cores driven
 * through simulated effects tables, the clock being the simulated one:
 *   control plane  src/cp/cp_core.c (autoscaling, placement, the sandbox
 *                  lifecycle, endpoint pushes): a create becomes ready after
 *                  the simulated latency, a push updates the data plane's list,
 *                  a drain goes to the data plane, a delete is immediate
 *   data plane     src/dp/dp_core.h (queue, slots, load balancing, deadlines,
 *                  "cannot start"): forward schedules the completion after the
 *                  invocation's duration, answer records a failed invocation,
 *                  drained answers the CP's drain
 * What the CP asks "soon" runs once the event at hand is handled (settle), as
 * the daemon's 0 ms timers do.
 */
#include "sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cp_core.h"
#include "dp_core.h"

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
    struct cp_sandbox *cp;  /* the CP core's record of it */
    struct cp_drain *drain; /* the CP's drain round it is in (DRAINING) */
};

struct fn_state {
    const struct sim_function *spec;
    struct cp_fn *cp;        /* the CP core's function */
    struct dp_function *dpf; /* the DP core's function: queue, endpoints (ready sandboxes) */
    struct sandbox *sbs;     /* in creation order */
    size_t nsbs, capsbs;
    uint32_t next_sb;
    unsigned ready, creating; /* in the DP's list / being created */
    uint32_t *pulled;         /* workers that have its image */
    size_t npulled, cappulled;
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
    struct cp_core core; /* the control plane */
    struct cp_dp *cp_dp; /* the data plane as the CP knows it */
    bool push_soon, capacity_soon, scale_down_soon;
    struct cp_drain **drained; /* drain rounds the DP answered: for the CP, in settle */
    size_t ndrained, capdrained;
    struct event *heap;
    size_t nheap, capheap;
    uint64_t seq, now, rng;
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

/* The worker deleted it: its life ends. */
static void sb_remove(struct sim *s, struct fn_state *f, size_t i)
{
    account_life(s, f, &f->sbs[i]);
    memmove(&f->sbs[i], &f->sbs[i + 1], (f->nsbs - i - 1) * sizeof(*f->sbs));
    f->nsbs--;
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

static void cp_drained(struct sim *s, struct cp_drain *d)
{
    if (s->ndrained == s->capdrained) {
        s->capdrained = s->capdrained ? 2 * s->capdrained : 16;
        s->drained = dg_xrealloc(s->drained, s->capdrained * sizeof(*s->drained));
    }
    s->drained[s->ndrained++] = d;
}

/* The sandboxes of a CP drain round have no request left (token: the round): the CP hears it
 * once the event at hand is handled. */
static void fx_drained(void *ud, void *token, const struct dp_function *df, size_t nids)
{
    cp_drained(ud, token);
}

/* The simulation is over: the round is done with all the same. */
static void fx_drain_dropped(void *ud, void *token)
{
    struct sim *s = ud;
    cp_core_on_drained(&s->core, token);
}

/* The id the CP and the DP know a sandbox by, in decimal (snprintf costs more here). */
static const char *sb_id(char *buf, size_t len, uint32_t v)
{
    char *p = buf + len;
    *--p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    return p;
}

/* ---- the control plane's effects --------------------------------------------------------- */

static uint64_t fx_now_ms(void *ud)
{
    return ((struct sim *)ud)->now / 1000;
}

static void fx_soon(void *ud, enum cp_soon what)
{
    struct sim *s = ud;
    if (what == CP_SOON_PUSH)
        s->push_soon = true;
    else if (what == CP_SOON_SCALE_DOWN) /* only with a budget (the simulator sets none) */
        s->scale_down_soon = true;
    else
        s->capacity_soon = true;
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

/* A worker creates it: ready after the creation latency (and the image pull on a worker
 * without the image). */
static void fx_create(void *ud, struct cp_sandbox *cs)
{
    struct sim *s = ud;
    struct fn_state *f = cs->fn->ctx;
    uint32_t w = (uint32_t)((uintptr_t)cs->worker->io - 1);
    if (f->nsbs == f->capsbs) {
        f->capsbs = f->capsbs ? f->capsbs * 2 : 4;
        f->sbs = dg_xrealloc(f->sbs, f->capsbs * sizeof(*f->sbs));
    }
    struct sandbox *sb = &f->sbs[f->nsbs++];
    *sb = (struct sandbox){
        .id = f->next_sb++, .worker = w, .state = SB_CREATING, .born_us = s->now, .cp = cs};
    f->creating++;
    if (s->now >= s->c->warmup_us)
        f->r.sandboxes_created++;
    uint64_t lat = create_latency(s);
    if (!image_cached(f, w)) {
        lat += s->c->image_pull_us;
        if (s->now >= s->c->warmup_us)
            f->r.image_pulls++;
    }
    heap_push(s,
              (struct event){
                  .t = s->now + lat, .kind = EV_READY, .fn = (uint32_t)(f - s->fns), .sb = sb->id});
}

static size_t sb_index(struct fn_state *f, const char *id)
{
    uint32_t v = (uint32_t)strtoul(id, NULL, 10);
    for (size_t i = 0; i < f->nsbs; i++)
        if (f->sbs[i].id == v)
            return i;
    return SIZE_MAX;
}

/* A delete takes no time. */
static void fx_destroy(void *ud, struct cp_worker *w, const char *id, struct cp_sandbox *cs)
{
    struct sim *s = ud;
    struct fn_state *f = cs->fn->ctx;
    size_t i = sb_index(f, id);
    if (i != SIZE_MAX)
        sb_remove(s, f, i);
    cp_core_on_deleted(&s->core, cs, NULL);
}

/* The round's sandboxes leave the DP's list; it answers once none has a request in flight. */
static void fx_drain(void *ud, struct cp_drain *d)
{
    struct sim *s = ud;
    struct fn_state *f = d->f->ctx;
    const char *small[16], **ids = d->n <= 16 ? small : dg_xcalloc(d->n, sizeof(*ids));
    for (size_t k = 0; k < d->n; k++) {
        ids[k] = d->victims[k]->id;
        size_t i = sb_index(f, ids[k]);
        if (i != SIZE_MAX && f->sbs[i].state == SB_READY) {
            f->sbs[i].state = SB_DRAINING;
            f->ready--;
        }
    }
    dp_core_drain(s->dp, f->dpf, ids, d->n, d);
    if (ids != small)
        free(ids);
}

/* The DP's list follows the pushes: a sandbox listed for the first time is added (the DP's
 * list keeps creation order); a push with an error answers the requests queued for the
 * function (no capacity: the only failure simulated). */
static void fx_push(void *ud, const struct cp_push_item *items, size_t n)
{
    struct sim *s = ud;
    for (size_t k = 0; k < n; k++) {
        struct fn_state *f = items[k].f->ctx;
        for (size_t i = 0; i < f->nsbs; i++) {
            struct sandbox *sb = &f->sbs[i];
            if (sb->state == SB_CREATING && sb->cp->state == CP_SB_READY) {
                sb->state = SB_READY;
                f->creating--;
                f->ready++;
                char id[16];
                dp_core_endpoint_add(s->dp, f->dpf, sb_id(id, sizeof(id), sb->id), "");
            }
        }
        if (items[k].error)
            dp_core_set_error(s->dp, f->dpf, "no capacity"); /* the DP answers them 503 */
    }
}

static void fx_forget_fn(void *ud, const char *name)
{
}

static int fx_connect(void *ud, enum cp_peer kind, void **io, const char *address,
                      struct dg_err *err)
{
    if (kind == CP_PEER_WORKER) /* the worker's index + 1, from its address "sim:INDEX" */
        *io = (void *)(uintptr_t)(strtoul(address + 4, NULL, 10) + 1);
    return 0;
}

static void fx_disconnect(void *ud, enum cp_peer kind, void *io)
{
}

static void fx_persist(void *ud, enum cp_peer kind, const void *peer)
{
}

static void fx_unschedulable(void *ud, const struct cp_fn *f)
{
    ((struct sim *)ud)->out->unschedulable_events++;
}

/* What the daemon runs once the current event is handled (its 0 ms timers): the CP hears the
 * drains the DP answered, retries functions waiting for capacity, pushes. */
static void settle(struct sim *s)
{
    while (s->ndrained || s->capacity_soon || s->push_soon || s->scale_down_soon) {
        if (s->ndrained) {
            struct cp_drain *d = s->drained[0];
            memmove(s->drained, s->drained + 1, --s->ndrained * sizeof(*s->drained));
            cp_core_on_drained(&s->core, d);
        } else if (s->capacity_soon) {
            s->capacity_soon = false;
            cp_core_capacity_freed(&s->core);
        } else if (s->scale_down_soon) {
            s->scale_down_soon = false;
            cp_core_scale_downs(&s->core);
        } else {
            s->push_soon = false;
            cp_core_flush_pushes(&s->core);
        }
    }
}

/* The DP's report of a function's requests in flight (queued + running). */
static double inflight(const struct fn_state *f)
{
    return (double)f->dpf->running;
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
    /* the DP's first metric: a function at zero scales at once. With a sandbox ready or being
     * created the metric would change no decision (scale from zero acts only at zero, and the
     * tick samples afresh): not sent, as the DP sends none for a request that finds a slot */
    if (f->cp->ready == 0 && f->cp->creating == 0) {
        cp_core_on_metric(&s->core, s->cp_dp, f->cp, inflight(f));
        settle(s);
    }
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
    settle(s);
}

static void on_ready(struct sim *s, const struct event *e)
{
    struct fn_state *f = &s->fns[e->fn];
    struct sandbox *sb = sb_find(f, e->sb);
    if (!sb)
        return;
    dp_core_expire_function(s->dp, f->dpf);
    char id[16];
    cp_core_on_created(&s->core, sb->cp, sb_id(id, sizeof(id), sb->id), "sim", NULL);
    settle(s); /* the push adds it to the DP's list */
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
    s.start_us = dg_xcalloc(t->ninvs, sizeof(*s.start_us));
    s.reqs = dg_xcalloc(t->ninvs ? t->ninvs : 1, sizeof(*s.reqs));
    struct dp_core_config dc = {.policy = (enum dp_lb_policy)c->lb,
                                .queue_timeout_ms = c->queue_timeout_us / 1000};
    struct dp_effects fx = {.ud = &s,
                            .now = fx_now,
                            .forward = fx_forward,
                            .answer = fx_answer,
                            .drained = fx_drained,
                            .drain_dropped = fx_drain_dropped};
    s.dp = dp_core_new(&dc, &fx);
    s.cold = dg_xcalloc(t->ninvs, sizeof(*s.cold));
    /* the control plane, its workers, the data plane as it knows it, the functions */
    static const struct cp_effects cfx = {.now_ms = fx_now_ms,
                                          .wall_ms = fx_now_ms,
                                          .soon = fx_soon,
                                          .create = fx_create,
                                          .destroy = fx_destroy,
                                          .drain = fx_drain,
                                          .push = fx_push,
                                          .forget_fn = fx_forget_fn,
                                          .connect = fx_connect,
                                          .disconnect = fx_disconnect,
                                          .persist = fx_persist,
                                          .unschedulable = fx_unschedulable};
    struct cp_effects sfx = cfx;
    sfx.ud = &s;
    struct cp_core_config cc = {.placement = (enum cp_place_policy)c->placement,
                                .chbl_eps = c->chbl_eps,
                                .seed = s.rng,
                                .knative = c->knative,
                                .tick_slots = 1}; /* every function at each tick, in order */
    cp_core_init(&s.core, &cc, &sfx);
    for (unsigned i = 0; i < c->workers; i++) {
        char name[24], addr[24];
        snprintf(name, sizeof(name), "worker-%04u", i);
        snprintf(addr, sizeof(addr), "sim:%u", i);
        struct cp_worker_report r = {
            .name = name,
            .address = addr,
            .res = {.cpu_milli = c->worker_cpu_milli, .memory_mib = c->worker_memory_mib}};
        cp_core_on_worker_heartbeat(&s.core, &r, err);
    }
    bool fresh;
    s.cp_dp = cp_core_on_dp_heartbeat(&s.core, "dp", "sim:dp", "sim:dp", CP_FROM_PEER, &fresh, err);
    for (size_t i = 0; i < t->nfns; i++) {
        struct fn_state *f = &s.fns[i];
        f->spec = &t->fns[i];
        /* registered as a user would (a name is at most CP_NAME_MAX characters: the last
         * ones of a longer one, where traces keep what tells functions apart) */
        struct cp_fn_spec spec = {.port = 80,
                                  .cpu_milli = f->spec->cpu_milli,
                                  .memory_mib = f->spec->memory_mib,
                                  .upper_bound =
                                      f->spec->upper_bound > 0 ? f->spec->upper_bound : INT32_MAX,
                                  .lower_bound = f->spec->lower_bound,
                                  .concurrency = c->concurrency};
        size_t len = strlen(f->spec->name);
        snprintf(spec.name, sizeof(spec.name), "%s",
                 f->spec->name + (len > CP_NAME_MAX ? len - CP_NAME_MAX : 0));
        spec.image = dg_xstrdup("sim");
        char name[24];
        snprintf(name, sizeof(name), "%zu", i); /* unique, as trace names may not be */
        f->dpf = dp_core_function_get(s.dp, name, strlen(name), NULL);
        f->dpf->concurrency = (uint32_t)DG_MAX(0, c->concurrency);
        f->dpf->lb.rng = s.rng + i + 1;
        f->cp = cp_core_fn_register(&s.core, &spec);
        f->cp->ctx = f;
        /* the simulator's overrides of the decider's parameters */
        struct cp_as_config *as = &f->cp->as;
        if (c->stable_window_ms)
            as->stable_window_ms = c->stable_window_ms;
        if (c->panic_window_ms)
            as->panic_window_ms = c->panic_window_ms;
        if (c->scale_to_zero_grace_ms)
            as->scale_to_zero_grace_ms = c->scale_to_zero_grace_ms;
        if (c->target_pct > 0)
            as->target_pct = c->target_pct;
        cp_as_state_deinit(&f->cp->ast);
        cp_as_state_init(&f->cp->ast, as);
    }
    settle(&s);
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
            for (size_t i = 0; i < t->nfns; i++) { /* the DP's reports, then the CP's tick */
                const struct cp_fn *cf = s.fns[i].cp;
                double v = inflight(&s.fns[i]);
                if (cf->nmetrics != 1 || cf->metrics[0].inflight != v) /* else: as reported */
                    cp_core_set_metric(&s.core, s.cp_dp, s.fns[i].cp, v);
            }
            cp_core_tick(&s.core, 0);
            settle(&s);
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
    while (s.ndrained) /* drains answered on the way: deleted (nothing new starts) */
        cp_core_on_drained(&s.core, s.drained[--s.ndrained]);
    finish_results(&s);
    for (size_t i = 0; i < t->nfns; i++) {
        free(s.fns[i].sbs);
        free(s.fns[i].pulled);
        free(s.fns[i].sched_ms);
    }
    dp_core_free(s.dp); /* drains it never answered go to the CP (fx_drain_dropped) */
    cp_core_free(&s.core);
    free(s.drained);
    free(s.fns);
    free(s.heap);
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
