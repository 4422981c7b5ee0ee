/*
 * cp_core.c: the control plane's core (cp_core.h). From metrics to sandboxes: every tick each
 * function's concurrency (the sum of its data planes' last reports) goes through the decider
 * (autoscaler.c); on the first metric of a function at zero it goes through at once.
 * Scale-up places sandboxes on the workers (placement.c, reserving on the workers themselves)
 * and creates them; every change of a function's endpoints is pushed as the whole list to
 * every data plane, once per event for everything that changed. Scale-down takes the newest
 * sandboxes out of the lists, drains them on every data plane, then deletes them. A failed
 * create is recorded on the function (fn_error.h: shown by the API until a create works) and
 * retried by the next tick (the decision still wants it); when no sandbox is ready and no
 * other create is in flight, the failure goes to the data planes with the (empty) list, and
 * they answer the requests they queue for it with the reason instead of letting them wait.
 */
#include "cp_core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "dirigent/log.h"
#include "dirigent/metrics.h"

#define NOW(c)  ((c)->fx.now_ms((c)->fx.ud))
#define WALL(c) ((c)->fx.wall_ms((c)->fx.ud))

static void fn_maybe_free(struct cp_core *c, struct cp_fn *f);
static void scale_down(struct cp_core *c, struct cp_fn *f, unsigned count);
static void reconcile(struct cp_core *c, struct cp_fn *f);

void cp_core_init(struct cp_core *c, const struct cp_core_config *cfg, const struct cp_effects *fx)
{
    memset(c, 0, sizeof(*c));
    c->fx = *fx;
    c->knative = cfg->knative;
    c->nslots = cfg->tick_slots ? cfg->tick_slots : CP_TICK_SLOTS;
    c->slots = dg_xcalloc(c->nslots, sizeof(*c->slots));
    c->q = cfg->quotas;
    c->scale_down_budget = cfg->scale_down_budget;
    cp_placer_init(&c->placer, cfg->placement, cfg->chbl_eps, cfg->seed);
}

/* ---- functions -------------------------------------------------------------------------- */

static struct cp_fn_error *fn_error_mut(struct cp_fn *f)
{
    if (!f->error)
        f->error = dg_xcalloc(1, sizeof(*f->error));
    return f->error;
}

const struct cp_fn_error *cp_fn_error_of(const struct cp_fn *f)
{
    static const struct cp_fn_error none;
    return f->error ? f->error : &none;
}

struct cp_fn *cp_core_fn_any(struct cp_core *c, struct dg_str name)
{
    return dg_strmap_get(&c->fn_index, name);
}

struct cp_fn *cp_core_fn(struct cp_core *c, struct dg_str name)
{
    struct cp_fn *f = dg_strmap_get(&c->fn_index, name);
    return f && !f->deleted ? f : NULL;
}

double cp_fn_sample(const struct cp_fn *f)
{
    if (f->nmetrics == 1) /* one data plane: the common case */
        return f->metrics[0].dp ? f->metrics[0].inflight : 0;
    double sum = 0;
    for (size_t i = 0; i < f->nmetrics; i++)
        if (f->metrics[i].dp)
            sum += f->metrics[i].inflight;
    return sum;
}

static void exits_clear(struct cp_fn *f)
{
    for (unsigned i = 0; i < f->nexited; i++) {
        free(f->exited[i].id);
        free(f->exited[i].reason);
    }
    free(f->exited);
    f->exited = NULL;
    f->nexited = 0;
}

static void sandbox_free(struct cp_core *c, struct cp_sandbox *s)
{
    if (s->id && dg_strmap_get(&c->sb_index, dg_str_c(s->id)) == s)
        dg_strmap_del(&c->sb_index, dg_str_c(s->id));
    free(s->id);
    free(s->endpoint);
    free(s);
    c->nsandboxes--;
}

/* A sandbox's id, from its worker (a create's answer, or a listing): indexed. */
static void sandbox_set_id(struct cp_core *c, struct cp_sandbox *s, const char *id)
{
    s->id = dg_xstrdup(id);
    dg_strmap_put(&c->sb_index, dg_str_c(s->id), s);
}

/* f's sandbox with this id, or NULL. */
static struct cp_sandbox *sandbox_of(struct cp_core *c, const struct cp_fn *f, const char *id)
{
    struct cp_sandbox *s = dg_strmap_get(&c->sb_index, dg_str_c(id));
    return s && s->fn == f ? s : NULL;
}

static void sd_unlink(struct cp_core *c, struct cp_fn *f)
{
    if (!f->sd_queued)
        return;
    *(f->sd_prev ? &f->sd_prev->sd_next : &c->sd_head) = f->sd_next;
    *(f->sd_next ? &f->sd_next->sd_prev : &c->sd_tail) = f->sd_prev;
    f->sd_prev = f->sd_next = NULL;
    f->sd_queued = false;
}

/* The one place a function's memory goes. */
static void fn_free(struct cp_core *c, struct cp_fn *f)
{
    sd_unlink(c, f);
    while (f->sbs) {
        struct cp_sandbox *s = f->sbs;
        f->sbs = s->next;
        sandbox_free(c, s);
    }
    cp_fn_spec_free(&f->spec);
    cp_as_state_deinit(&f->ast);
    free(f->metrics);
    free(f->error);
    exits_clear(f);
    free(f);
}

static void push_endpoints(struct cp_core *c, struct cp_fn *f)
{
    if (f->dirty)
        return;
    f->dirty = true;
    f->next_dirty = c->dirty;
    c->dirty = f;
    if (!c->push_soon) {
        c->push_soon = true;
        c->fx.soon(c->fx.ud, CP_SOON_PUSH);
    }
}

void cp_core_push_all(struct cp_core *c)
{
    for (struct cp_fn *f = c->fns; f; f = f->next)
        if (!f->deleted)
            push_endpoints(c, f);
}

unsigned cp_core_max_per_function(const struct cp_core *c)
{
    return c->q.max_per_function;
}

/* Bounds within maxSandboxesPerFunction (the API refuses more; a spec read back from the store
 * of a CP configured otherwise is clamped, and says so). */
static void clamp_bounds(struct cp_core *c, struct cp_fn_spec *spec)
{
    unsigned max = c->q.max_per_function;
    if (!max || spec->lower_bound <= (int64_t)max)
        return;
    dg_log(DG_LOG_WARN, "scale",
           "fn=%s lower bound %d clamped to maxSandboxesPerFunction %u (control plane config)",
           spec->name, spec->lower_bound, max);
    spec->lower_bound = (int)max;
}

/* The autoscaler's upper bound: the function's, within maxSandboxesPerFunction (an upper
 * bound is a ceiling: 2147483647, the original's "unbounded", is the quota). */
static int as_upper(const struct cp_core *c, int upper)
{
    return c->q.max_per_function ? DG_MIN(upper, (int)c->q.max_per_function) : upper;
}

struct cp_fn *cp_core_fn_register(struct cp_core *c, struct cp_fn_spec *spec)
{
    struct cp_fn *f = dg_xcalloc(1, sizeof(*f));
    clamp_bounds(c, spec);
    c->nfns++;
    f->spec = *spec;
    cp_as_config_default(&f->as, spec->cold_start_sweep);
    if (c->knative)
        cp_as_config_knative(&f->as);
    f->as.container_concurrency = spec->concurrency;
    f->as.lower_bound = spec->lower_bound;
    f->as.upper_bound = as_upper(c, spec->upper_bound);
    cp_as_state_init(&f->ast, &f->as);
    f->tick_slot = c->next_slot++ % c->nslots;
    struct cp_slot *sl = &c->slots[f->tick_slot];
    if (sl->n == sl->cap) {
        sl->cap = sl->cap ? 2 * sl->cap : 64;
        sl->v = dg_xrealloc(sl->v, sl->cap * sizeof(*sl->v));
    }
    f->slot_pos = sl->n;
    sl->v[sl->n++] = f;
    f->next = c->fns;
    if (c->fns)
        c->fns->pprev = &f->next;
    f->pprev = &c->fns;
    c->fns = f;
    dg_strmap_put(&c->fn_index, dg_str_c(f->spec.name), f);
    push_endpoints(c, f);        /* the DPs add it with its (empty) list */
    if (spec->lower_bound > 0) { /* its sandboxes come at registration */
        f->desired = spec->lower_bound;
        reconcile(c, f);
    }
    return f;
}

void cp_core_fn_set_bounds(struct cp_core *c, struct cp_fn *f, int lo, int hi)
{
    if (c->q.max_per_function) /* the API refused more */
        lo = DG_MIN(lo, (int)c->q.max_per_function);
    f->spec.lower_bound = f->as.lower_bound = lo;
    f->spec.upper_bound = hi;
    f->as.upper_bound = as_upper(c, hi);
    if (f->desired < lo || f->desired > f->as.upper_bound) {
        f->desired = f->desired < lo ? lo : f->as.upper_bound;
        reconcile(c, f);
    }
}

/* A deleted function goes once it has no sandbox and its last push went out. */
static void fn_maybe_free(struct cp_core *c, struct cp_fn *f)
{
    if (!f->deleted || f->sbs || f->dirty)
        return; /* a dirty one goes after its last push (cp_core_flush_pushes) */
    c->fx.forget_fn(c->fx.ud, f->spec.name);
    *f->pprev = f->next;
    if (f->next)
        f->next->pprev = f->pprev;
    if (dg_strmap_get(&c->fn_index, dg_str_c(f->spec.name)) == f)
        dg_strmap_del(&c->fn_index, dg_str_c(f->spec.name));
    struct cp_slot *sl = &c->slots[f->tick_slot];
    sl->v[f->slot_pos] = sl->v[--sl->n]; /* the last one takes its place */
    sl->v[f->slot_pos]->slot_pos = f->slot_pos;
    fn_free(c, f);
}

static void schedulable_again(struct cp_core *c, struct cp_fn *f)
{
    if (!f->unschedulable)
        return;
    f->unschedulable = false;
    c->unschedulable--;
    if (cp_fn_error_of(f)->set && f->error->unschedulable)
        cp_fn_error_clear(f->error);
}

void cp_core_fn_delete(struct cp_core *c, struct cp_fn *f)
{
    schedulable_again(c, f);
    if (!f->deleted)
        c->nfns--;
    f->deleted = true;
    f->desired = 0;
    if (f->ready)
        scale_down(c, f, f->ready);
    fn_maybe_free(c, f);
}

/* ---- pushes ------------------------------------------------------------------------------ */

/* All endpoint lists that changed since the last flush, in one push: a cold start's push never
 * queues behind hundreds of others (scale-downs come in bursts at a tick). */
void cp_core_flush_pushes(struct cp_core *c)
{
    c->push_soon = false;
    size_t n = 0;
    for (struct cp_fn *f = c->dirty; f; f = f->next_dirty)
        n++;
    if (n > c->items_cap) {
        c->items_cap = 2 * n;
        c->items = dg_xrealloc(c->items, c->items_cap * sizeof(*c->items));
    }
    n = 0;
    struct cp_fn *done = c->dirty;
    c->dirty = NULL;
    for (struct cp_fn *f = done; f; f = f->next_dirty) {
        f->dirty = false;
        struct cp_push_item *it = &c->items[n++];
        *it = (struct cp_push_item){.f = f, .exited = f->exited, .nexited = f->nexited};
        /* only in the push a failure made: another push (a resync, a scale-down) must not
         * answer requests that wait for an attempt still under way */
        if (f->push_error && cp_fn_error_of(f)->set && !f->error->exit && f->ready == 0)
            it->error = f->error->reason;
        f->push_error = false;
    }
    c->fx.push(c->fx.ud, c->items, n);
    /* exits told; deleted functions waited for their last push. From the items, not the
     * next_dirty chain: a function marked dirty again meanwhile is on the new chain (and its
     * exits, told or not, go with its next push) */
    for (size_t i = 0; i < n; i++) {
        struct cp_fn *f = (struct cp_fn *)c->items[i].f;
        if (!f->dirty)
            exits_clear(f);
        fn_maybe_free(c, f);
    }
}

/* ---- workers: capacity ------------------------------------------------------------------- */

int64_t cp_worker_cpu_schedulable(const struct cp_worker *w)
{
    return dg_res_cpu_schedulable(&w->res);
}

static void worker_changed(struct cp_core *c, const struct cp_worker *w)
{
    if (c->fx.worker_changed)
        c->fx.worker_changed(c->fx.ud, w);
}

/* What a sandbox of `f` holds on its worker, from placement until it is gone: max(request,
 * the worker's floor), the rule the worker limits it by (lib/resources.c). Placement reserved
 * it already (cp_place_view); an adopted sandbox reserves here. */
static void worker_reserve(struct cp_worker *w, const struct cp_fn *f)
{
    int64_t cpu, mem;
    cp_node_take(&w->node, f->spec.cpu_milli, f->spec.memory_mib, &cpu, &mem);
    w->node.sandboxes++;
    w->node.cpu_used += cpu;
    w->node.mem_used += mem;
}

static void worker_release(struct cp_core *c, struct cp_worker *w, const struct cp_fn *f)
{
    if (!w)
        return;
    if (w->node.sandboxes)
        w->node.sandboxes--;
    int64_t cpu, mem;
    cp_node_take(&w->node, f->spec.cpu_milli, f->spec.memory_mib, &cpu, &mem);
    w->node.cpu_used = DG_MAX(0, w->node.cpu_used - cpu);
    w->node.mem_used = DG_MAX(0, w->node.mem_used - mem);
    worker_changed(c, w);
    /* functions waiting for room try again once this event is handled */
    if (c->unschedulable && !c->capacity_soon) {
        c->capacity_soon = true;
        c->fx.soon(c->fx.ud, CP_SOON_CAPACITY);
    }
}

/* ---- sandboxes -------------------------------------------------------------------------- */

static void sandbox_unlink(struct cp_core *c, struct cp_fn *f, struct cp_sandbox *s)
{
    for (struct cp_sandbox **ps = &f->sbs; *ps; ps = &(*ps)->next) {
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    }
    sandbox_free(c, s);
}

/* Its index in w->deleting, or -1. */
static ssize_t deleting_find(const struct cp_worker *w, const char *id)
{
    uintptr_t v = (uintptr_t)dg_strmap_get(&w->deleting_ix, dg_str_c(id));
    return v ? (ssize_t)v - 1 : -1;
}

static bool deleting_has(const struct cp_worker *w, const char *id)
{
    return deleting_find(w, id) >= 0;
}

static void deleting_add(struct cp_worker *w, const char *id)
{
    w->deleting = dg_xrealloc(w->deleting, (w->ndeleting + 1) * sizeof(*w->deleting));
    w->deleting[w->ndeleting] = dg_xstrdup(id);
    dg_strmap_put(&w->deleting_ix, dg_str_c(w->deleting[w->ndeleting]),
                  (void *)(uintptr_t)(w->ndeleting + 1));
    w->ndeleting++;
}

static void deleting_del(struct cp_worker *w, size_t i)
{
    dg_strmap_del(&w->deleting_ix, dg_str_c(w->deleting[i]));
    free(w->deleting[i]);
    w->deleting[i] = w->deleting[--w->ndeleting]; /* the last takes its place */
    if (i < w->ndeleting)
        dg_strmap_put(&w->deleting_ix, dg_str_c(w->deleting[i]), (void *)(uintptr_t)(i + 1));
}

static void deleting_clear(struct cp_worker *w)
{
    while (w->ndeleting)
        deleting_del(w, w->ndeleting - 1);
    free(w->deleting);
    w->deleting = NULL;
    dg_strmap_free(&w->deleting_ix);
}

/* The one place the core asks a worker to delete a sandbox. Until the delete is answered or
 * a listing no longer has `id`, a listing that still has it (taken before the delete
 * arrived) does not adopt it again; a delete nobody answers (s NULL) makes the worker list
 * its sandboxes, so that one whose delete was lost is deleted again. */
static void destroy_on(struct cp_core *c, struct cp_worker *w, const char *id, struct cp_sandbox *s)
{
    if (!deleting_has(w, id))
        deleting_add(w, id);
    if (!s)
        w->need_list = true;
    c->fx.destroy(c->fx.ud, w, id, s);
}

void cp_core_on_deleted(struct cp_core *c, struct cp_sandbox *s, const char *err)
{
    struct cp_fn *f = s->fn;
    if (err)
        dg_log(DG_LOG_WARN, "scale", "fn=%s delete %s on %s: %s", f->spec.name, s->id,
               s->worker ? s->worker->name : "?", err);
    /* a delete that failed may have happened or not (its answer lost): the worker's next
     * heartbeat lists what it runs, and a sandbox still there is adopted or deleted */
    struct cp_worker *on = s->worker ? s->worker : s->abandoned_on;
    if (err && on)
        on->need_list = true;
    /* its worker answered that it is gone (a sandbox of a worker given up was not asked for
     * an answer: it stays under way until a listing lacks it) */
    ssize_t di = !err && s->worker && s->id ? deleting_find(s->worker, s->id) : -1;
    if (di >= 0)
        deleting_del(s->worker, (size_t)di);
    worker_release(c, s->worker, f);
    f->draining--;
    sandbox_unlink(c, f, s);
    fn_maybe_free(c, f);
}

static void delete_on_worker(struct cp_core *c, struct cp_sandbox *s)
{
    if (!s->worker) { /* its worker was given up: asked all the same, no answer wanted */
        if (s->abandoned_on && s->id)
            destroy_on(c, s->abandoned_on, s->id, NULL);
        cp_core_on_deleted(c, s, NULL);
        return;
    }
    destroy_on(c, s->worker, s->id, s);
}

void cp_core_on_drained(struct cp_core *c, struct cp_drain *d)
{
    for (size_t i = 0; i < d->n; i++)
        delete_on_worker(c, d->victims[i]);
    free(d->victims);
    free(d);
}

static void scale_down(struct cp_core *c, struct cp_fn *f, unsigned count)
{
    struct cp_drain *d = dg_xcalloc(1, sizeof(*d));
    d->f = f;
    d->victims = dg_xcalloc(count, sizeof(*d->victims));
    /* newest first: the list is kept newest-first */
    for (struct cp_sandbox *s = f->sbs; s && d->n < count; s = s->next) {
        if (s->state != CP_SB_READY)
            continue;
        s->state = CP_SB_DRAINING;
        f->ready--;
        f->draining++;
        d->victims[d->n++] = s;
    }
    push_endpoints(c, f);
    dg_log(DG_LOG_DEBUG, "scale", "fn=%s scale down by %zu (ready %u)", f->spec.name, d->n,
           f->ready);
    c->fx.drain(c->fx.ud, d);
}

/* The answer to a create whose worker went silent meanwhile (it was replaced): a sandbox made
 * after all is deleted, unless the worker's resync heartbeat already had it adopted. */
static void abandoned_created(struct cp_core *c, struct cp_sandbox *s, const char *id)
{
    struct cp_fn *f = s->fn;
    if (id) {
        if (!sandbox_of(c, f, id)) { /* not adopted meanwhile */
            dg_log(DG_LOG_INFO, "scale", "fn=%s sandbox %s on %s came too late: deleting it",
                   f->spec.name, id, s->abandoned_on->name);
            destroy_on(c, s->abandoned_on, id, NULL);
        }
    }
    sandbox_unlink(c, f, s);
    fn_maybe_free(c, f);
}

void cp_core_on_create_lost(struct cp_core *c, struct cp_sandbox *s, const char *reason)
{
    /* the worker may have made it after all: its next heartbeat lists what it runs (adopted, or
     * deleted). Only here: a listing after a plain refusal would find sandboxes whose answers
     * are still on their way and adopt them (holding the scale-down off) */
    if (s->worker && !s->abandoned_on)
        s->worker->need_list = true;
    cp_core_on_created(c, s, NULL, NULL, reason);
}

void cp_core_on_created(struct cp_core *c, struct cp_sandbox *s, const char *id,
                        const char *endpoint, const char *reason)
{
    struct cp_fn *f = s->fn;
    if (s->abandoned_on) {
        abandoned_created(c, s, reason ? NULL : id);
        return;
    }
    f->creating--;
    if (reason) {
        if (c->m_create_failures)
            dg_counter_add(c->m_create_failures, 1);
        /* retried by its tick: retried at once when the release below frees capacity, a
         * worker that refuses at once (it just died) would get creates at network speed */
        f->retry_after_ms = NOW(c) + 2000;
        worker_release(c, s->worker, f);
        if (!f->deleted) {
            cp_fn_error_set(fn_error_mut(f), s->worker ? s->worker->name : NULL, reason, NOW(c),
                            WALL(c));
            if (cp_fn_error_push_due(f->ready, f->creating)) {
                f->push_error = true; /* every time: requests queued since the last one wait */
                push_endpoints(c, f);
            }
        }
        sandbox_unlink(c, f, s);
        fn_maybe_free(c, f);
        return;
    }
    struct cp_sandbox *o = sandbox_of(c, f, id);
    if (o && o != s) {
        /* its worker listed it before this answer came: adopted already, once is enough */
        worker_release(c, s->worker, f);
        sandbox_unlink(c, f, s);
        return;
    }
    sandbox_set_id(c, s, id);
    s->endpoint = dg_xstrdup(endpoint);
    s->known_seq = ++c->seq;
    if (c->m_creates)
        dg_counter_add(c->m_creates, 1);
    if (f->error && cp_fn_error_create_worked(f->error))
        dg_log(DG_LOG_INFO, "scale", "fn=%s create on %s worked: error cleared", f->spec.name,
               s->worker ? s->worker->name : "?");
    if (f->deleted || !s->worker) { /* no longer wanted */
        s->state = CP_SB_DRAINING;
        f->draining++;
        delete_on_worker(c, s);
        return;
    }
    s->state = CP_SB_READY;
    f->ready++;
    dg_log(DG_LOG_DEBUG, "scale", "fn=%s sandbox %s ready at %s (ready %u)", f->spec.name, s->id,
           s->endpoint, f->ready);
    push_endpoints(c, f);
}

/* Placement reserved its room on w already. */
static void create_on(struct cp_core *c, struct cp_fn *f, struct cp_worker *w)
{
    struct cp_sandbox *s = dg_xcalloc(1, sizeof(*s));
    s->fn = f;
    s->worker = w;
    s->state = CP_SB_CREATING;
    s->next = f->sbs;
    f->sbs = s;
    f->creating++;
    c->nsandboxes++;
    if (w->node.rate_limited) {
        if (!w->in_refill) { /* a full bucket until now: refilled from now on */
            w->in_refill = true;
            w->tokens_ms = NOW(c);
            w->refill_next = c->refill;
            c->refill = w;
        }
        w->create_tokens -= 1; /* placement took it from node.creates_left already */
    }
    worker_changed(c, w);
    c->fx.create(c->fx.ud, s);
}

/* No worker has room: the function is unschedulable until capacity frees (worker_release
 * retries it); requests waiting at zero get the reason at once. */
static void unschedulable(struct cp_core *c, struct cp_fn *f, unsigned wanted, const char *why)
{
    char reason[256];
    unsigned live = 0;
    size_t nworkers = 0;
    for (struct cp_worker *w = c->workers; w; w = w->next, nworkers++)
        live += w->node.schedulable;
    if (why)
        snprintf(reason, sizeof(reason), "%s", why);
    else if (live == 0)
        snprintf(reason, sizeof(reason), "no schedulable worker (%zu registered)", nworkers);
    else {
        /* what it takes where that is more than the request (a worker's floors) */
        int64_t cpu = f->spec.cpu_milli, mem = f->spec.memory_mib;
        for (struct cp_worker *w = c->workers; w; w = w->next) {
            int64_t tc, tm;
            cp_node_take(&w->node, f->spec.cpu_milli, f->spec.memory_mib, &tc, &tm);
            cpu = DG_MAX(cpu, tc);
            mem = DG_MAX(mem, tm);
        }
        char takes[96] = "";
        if (cpu != f->spec.cpu_milli || mem != f->spec.memory_mib)
            snprintf(takes, sizeof(takes),
                     " (a sandbox takes up to cpu=%lldm memory=%lldMiB: "
                     "the workers' floors)",
                     (long long)cpu, (long long)mem);
        snprintf(reason, sizeof(reason),
                 "no capacity for cpu=%lldm memory=%lldMiB%s: none of %u schedulable workers has "
                 "that free",
                 (long long)f->spec.cpu_milli, (long long)f->spec.memory_mib, takes, live);
    }
    if (!f->unschedulable) { /* logged once per episode */
        f->unschedulable = true;
        c->unschedulable++;
        dg_log(DG_LOG_WARN, "scale", "fn=%s wants %u more sandboxes: %s", f->spec.name, wanted,
               reason);
        if (c->fx.unschedulable)
            c->fx.unschedulable(c->fx.ud, f);
    }
    if (live == 0 && !why)
        return; /* a cluster starting up: requests wait for a worker, not fail */
    cp_fn_error_set(fn_error_mut(f), NULL, reason, NOW(c), WALL(c));
    f->error->unschedulable = true;
    if (cp_fn_error_push_due(f->ready, f->creating)) {
        f->push_error = true;
        push_endpoints(c, f);
    }
}

/* The create rate limit's buckets, refilled to now (one second deep), as placement sees them. */
static void tokens_refill(struct cp_core *c)
{
    unsigned rate = c->q.creates_per_worker_per_s;
    if (!rate)
        return;
    uint64_t now = NOW(c);
    /* only the buckets that are not full (created on within the last second): a full one's
     * creates_left is the rate already, so a reconcile costs no walk of all the workers */
    for (struct cp_worker **pw = &c->refill; *pw;) {
        struct cp_worker *w = *pw;
        if (now > w->tokens_ms) {
            w->create_tokens += (double)(now - w->tokens_ms) * rate / 1000.0;
            if (w->create_tokens > rate)
                w->create_tokens = rate;
            w->tokens_ms = now;
        }
        w->node.creates_left = w->create_tokens >= 1 ? (unsigned)w->create_tokens : 0;
        if (w->create_tokens >= rate) { /* full: off the list */
            *pw = w->refill_next;
            w->refill_next = NULL;
            w->in_refill = false;
        } else {
            pw = &w->refill_next;
        }
    }
}

/* Placement found room for fewer than wanted: a quota's reason, or NULL (capacity, said by
 * unschedulable). *throttled: only the rate limit stands in the way (room comes by itself
 * within a second: no error, the tick tries again). */
static const char *shortfall(struct cp_core *c, const struct cp_fn *f, char *buf, size_t len,
                             bool *throttled, bool *saturated)
{
    bool capped = false;
    *throttled = *saturated = false;
    for (struct cp_worker *w = c->workers; w; w = w->next) {
        struct cp_node n = w->node;
        n.max_sandboxes = 0;
        n.rate_limited = false;
        n.saturated = false;
        if (!cp_node_fits(&n, f->spec.cpu_milli, f->spec.memory_mib))
            continue; /* no room by its capacity */
        if (w->node.max_sandboxes && w->node.sandboxes >= w->node.max_sandboxes)
            capped = true;
        else if (w->node.saturated)
            *throttled = *saturated = true; /* its queue drains by itself: wait, no error */
        else if (w->node.rate_limited && w->node.creates_left == 0)
            *throttled = true; /* else the policy passed it over (chbl's bound) */
    }
    if (*throttled || !capped)
        return NULL;
    snprintf(buf, len,
             "every worker with room holds maxSandboxesPerWorker %u sandboxes (control plane "
             "config)",
             c->q.max_per_worker);
    return buf;
}

/* Act on f->desired. */
static void reconcile(struct cp_core *c, struct cp_fn *f)
{
    int total = (int)(f->ready + f->creating);
    if (f->desired > total) {
        /* the k sandboxes of this decision in one placement, reserved on the workers, within
         * the quotas (a function's: its bounds were checked against it; the cluster's) */
        unsigned want = (unsigned)(f->desired - total);
        char why[192];
        const char *quota = NULL;
        if (c->q.max_per_function && (unsigned)total + want > c->q.max_per_function)
            want = (unsigned)total < c->q.max_per_function ? c->q.max_per_function - total : 0;
        if (c->q.max_total && c->nsandboxes + want > c->q.max_total) {
            want = c->nsandboxes < c->q.max_total ? c->q.max_total - c->nsandboxes : 0;
            snprintf(why, sizeof(why),
                     "the cluster holds maxSandboxes %u sandboxes (control plane config)",
                     c->q.max_total);
            quota = why;
        }
        if (want == 0) {
            if (quota)
                unschedulable(c, f, (unsigned)(f->desired - total), quota);
            return;
        }
        tokens_refill(c);
        if (want > c->chosen_cap) {
            c->chosen_cap = DG_MAX(want, 2 * c->chosen_cap);
            c->chosen = dg_xrealloc(c->chosen, c->chosen_cap * sizeof(*c->chosen));
        }
        /* a worker holding a pre-created sandbox of it first (issue 16), then the policy */
        unsigned hinted =
            f->pool_hint && cp_place_on(&f->pool_hint->node, f->spec.cpu_milli, f->spec.memory_mib);
        if (hinted)
            create_on(c, f, f->pool_hint);
        unsigned k =
            hinted + cp_place_view(&c->placer, c->view, c->nview, f->spec.name, f->spec.cpu_milli,
                                   f->spec.memory_mib, want - hinted, c->chosen);
        for (unsigned i = 0; i < k - hinted; i++)
            create_on(c, f, (struct cp_worker *)c->view[c->chosen[i]]);
        if (k > 0)
            dg_log(DG_LOG_DEBUG, "scale", "fn=%s scale up to %d (ready %u, creating %u)",
                   f->spec.name, f->desired, f->ready, f->creating);
        bool throttled = false, saturated = false;
        if (k < want && !quota)
            quota = shortfall(c, f, why, sizeof(why), &throttled, &saturated);
        if (k < want && saturated && !f->unschedulable) {
            /* retried when room comes (capacity_freed: a worker no longer saturated, a
             * sandbox gone), not only at its tick; no error: nothing is wrong */
            f->unschedulable = true;
            c->unschedulable++;
        }
        if (k < want && throttled)
            dg_log(DG_LOG_DEBUG, "scale",
                   "fn=%s %u more sandboxes wait for the create rate limit or a saturated worker "
                   "(maxCreatesPerWorkerPerSecond %u)",
                   f->spec.name, want - k, c->q.creates_per_worker_per_s);
        else if (k < want || quota)
            unschedulable(c, f, (unsigned)(f->desired - total) - k, quota);
        else
            schedulable_again(c, f);
    } else {
        schedulable_again(c, f); /* wants no more than it has */
        if (f->desired < (int)f->ready && f->creating == 0 &&
            (f->deleted || NOW(c) >= f->hold_down_until_ms)) {
            if (f->deleted || !c->scale_down_budget) {
                scale_down(c, f, f->ready - (unsigned)f->desired);
            } else if (!f->sd_queued) { /* cold starts in between go first */
                f->sd_queued = true;
                f->sd_prev = c->sd_tail;
                *(c->sd_tail ? &c->sd_tail->sd_next : &c->sd_head) = f;
                c->sd_tail = f;
                if (!c->scale_down_soon) {
                    c->scale_down_soon = true;
                    c->fx.soon(c->fx.ud, CP_SOON_SCALE_DOWN);
                }
            }
        }
    }
}

void cp_core_scale_downs(struct cp_core *c)
{
    c->scale_down_soon = false;
    unsigned done = 0;
    uint64_t now = NOW(c);
    while (c->sd_head && done < c->scale_down_budget) {
        struct cp_fn *f = c->sd_head;
        sd_unlink(c, f);
        if (f->deleted || f->desired >= (int)f->ready || f->creating != 0 ||
            now < f->hold_down_until_ms)
            continue; /* decided otherwise meanwhile (a deleted one scaled down at its delete) */
        unsigned n = f->ready - (unsigned)f->desired;
        scale_down(c, f, n);
        done += n;
    }
    if (c->sd_head) {
        c->scale_down_soon = true;
        c->fx.soon(c->fx.ud, CP_SOON_SCALE_DOWN);
    }
}

/* Capacity came back (a sandbox went away): functions that found no room try again. */
void cp_core_capacity_freed(struct cp_core *c)
{
    c->capacity_soon = false;
    uint64_t now = NOW(c);
    for (struct cp_fn *f = c->fns; f && c->unschedulable; f = f->next)
        if (f->unschedulable && !f->deleted && now >= f->retry_after_ms)
            reconcile(c, f);
}

static void decide(struct cp_core *c, struct cp_fn *f, uint64_t now_ms)
{
    struct cp_as_decision d;
    cp_as_decide(&f->as, &f->ast, (int)f->ready, cp_fn_sample(f), now_ms, &d);
    if (d.desired != f->desired)
        dg_log(DG_LOG_DEBUG, "autoscaler", "fn=%s desired=%d ready=%u stable=%.2f panic=%s",
               f->spec.name, d.desired, f->ready, d.stable_avg, d.panic ? "yes" : "no");
    f->desired = d.desired;
    reconcile(c, f);
}

void cp_core_tick(struct cp_core *c, unsigned slot)
{
    struct cp_slot *sl = &c->slots[slot % c->nslots];
    uint64_t now = NOW(c);
    for (size_t i = 0; i < sl->n; i++) { /* deciding frees no function that is not deleted */
        struct cp_fn *f = sl->v[i];
        /* idle at zero (most functions of a large registry, most of the time): the decision
         * would be 0 again and change nothing (cp_as_idle) */
        if (f->deleted || (f->ready == 0 && f->creating == 0 && f->desired == 0 &&
                           !f->unschedulable && cp_as_idle(&f->ast) && cp_fn_sample(f) == 0))
            continue;
        decide(c, f, now);
    }
}

static void scale_now(struct cp_core *c, struct cp_fn *f)
{
    if (!f->deleted && f->ready == 0 && f->creating == 0 && cp_fn_sample(f) > 0)
        decide(c, f, NOW(c)); /* scale from zero: do not wait for the tick */
}

void cp_core_set_metric(struct cp_core *c, struct cp_dp *d, struct cp_fn *f, double inflight)
{
    if (f->nmetrics && f->metrics[0].dp == d) { /* one data plane: the common case */
        f->metrics[0].inflight = inflight;
        return;
    }
    struct cp_metric *m = NULL;
    for (size_t k = 0; k < f->nmetrics && !m; k++)
        if (f->metrics[k].dp == d)
            m = &f->metrics[k];
    if (!m) {
        f->metrics = dg_xrealloc(f->metrics, (f->nmetrics + 1) * sizeof(*f->metrics));
        m = &f->metrics[f->nmetrics++];
        m->dp = d;
    }
    m->inflight = inflight;
}

void cp_core_on_metric(struct cp_core *c, struct cp_dp *d, struct cp_fn *f, double inflight)
{
    cp_core_set_metric(c, d, f, inflight);
    scale_now(c, f);
}

/* An IPv4 address "a.b.c.d" (host order); false if it is none. */
static bool ipv4_parse(const char *p, size_t len, uint32_t *out)
{
    uint32_t v = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || p[i] != '.')
                return false;
            i++;
        }
        unsigned x = 0, digits = 0;
        while (i < len && p[i] >= '0' && p[i] <= '9' && digits < 4) {
            x = x * 10 + (unsigned)(p[i++] - '0');
            digits++;
        }
        if (digits == 0 || digits > 3 || x > 255)
            return false;
        v = v << 8 | x;
    }
    if (i != len)
        return false;
    *out = v;
    return true;
}

/* The host part of "HOST:PORT" (length in *len). */
static const char *host_of(const char *hostport, size_t *len)
{
    const char *colon = strrchr(hostport, ':');
    *len = colon ? (size_t)(colon - hostport) : strlen(hostport);
    return hostport;
}

/* w's sandbox subnet from its report: the CIDR it says, else its address's host alone. */
static void worker_subnet(struct cp_worker *w, const char *subnet)
{
    w->subnet_known = true;
    if (subnet && w->subnet && strcmp(subnet, w->subnet) == 0)
        return; /* as before */
    free(w->subnet);
    w->subnet = subnet ? dg_xstrdup(subnet) : NULL;
    free(w->sb_host);
    w->sb_host = NULL;
    w->sb_net = w->sb_mask = 0;
    if (subnet && subnet[0]) {
        const char *slash = strchr(subnet, '/');
        uint32_t net;
        unsigned plen = 32;
        if (slash) {
            char *end;
            unsigned long l = strtoul(slash + 1, &end, 10);
            plen = *end || l > 32 || end == slash + 1 ? 33 : (unsigned)l;
        }
        if (plen >= 16 && plen <= 32 &&
            ipv4_parse(subnet, slash ? (size_t)(slash - subnet) : strlen(subnet), &net)) {
            w->sb_mask = plen == 32 ? 0xffffffffu : ~(0xffffffffu >> plen);
            w->sb_net = net & w->sb_mask;
            return;
        }
        dg_log(DG_LOG_WARN, "registry",
               "worker %s: sandbox subnet '%.64s' is no IPv4 CIDR of /16../32: its address's "
               "host used instead",
               w->name, subnet);
    }
    size_t hl;
    const char *h = host_of(w->address, &hl);
    uint32_t ip;
    if (ipv4_parse(h, hl, &ip)) {
        w->sb_net = ip;
        w->sb_mask = 0xffffffffu;
    } else {
        w->sb_host = dg_xasprintf("%.*s", (int)hl, h);
    }
}

/* Does `endpoint` ("IP:PORT") lie in w's sandbox subnet? */
static bool endpoint_in_subnet(const struct cp_worker *w, const char *endpoint)
{
    size_t hl;
    const char *h = host_of(endpoint, &hl);
    const char *colon = strrchr(endpoint, ':');
    if (!colon || !colon[1])
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    if (w->sb_mask) {
        uint32_t ip;
        return ipv4_parse(h, hl, &ip) && (ip & w->sb_mask) == w->sb_net;
    }
    return w->sb_host && strlen(w->sb_host) == hl && memcmp(w->sb_host, h, hl) == 0;
}

bool cp_core_adopt(struct cp_core *c, struct cp_worker *w, const char *function, const char *id,
                   const char *endpoint, const char **why)
{
    const char *no = NULL;
    if (!why)
        why = &no;
    *why = NULL;
    /* known (under any function, a deleted one included: its delete is under way; under
     * another one, it is that one's sandbox and never deleted for this listing) */
    if (dg_strmap_get(&c->sb_index, dg_str_c(id)))
        return false;
    struct cp_fn *f = cp_core_fn(c, dg_str_c(function));
    if (deleting_has(w, id))
        return false; /* a listing taken before its delete arrived */
    if (!f)
        *why = "no such function";
    else if (!w->reconstructing)
        *why = "this control plane did not ask for it (only a worker's first listing after a "
               "control-plane restart is adopted)";
    else if (!endpoint_in_subnet(w, endpoint))
        *why = "its endpoint is outside the worker's sandbox subnet";
    if (*why)
        return false;
    /* the quotas bound what this CP creates; a sandbox the previous leader made (under the
     * same quotas) may be serving requests: kept even above them (this leader's own creates
     * during the reconstruction), and the excess goes with the scale-downs (no create while
     * above: reconcile) */
    if ((c->q.max_per_worker && w->node.sandboxes >= c->q.max_per_worker) ||
        (c->q.max_total && c->nsandboxes >= c->q.max_total))
        dg_log(DG_LOG_WARN, "registry",
               "fn=%s sandbox %s on %s adopted above a quota (maxSandboxesPerWorker %u, "
               "maxSandboxes %u): no create until below",
               function, id, w->name, c->q.max_per_worker, c->q.max_total);
    c->nsandboxes++;
    struct cp_sandbox *s = dg_xcalloc(1, sizeof(*s));
    s->fn = f;
    s->worker = w;
    sandbox_set_id(c, s, id);
    s->endpoint = dg_xstrdup(endpoint);
    s->known_seq = ++c->seq;
    s->state = CP_SB_READY;
    s->next = f->sbs;
    f->sbs = s;
    f->ready++;
    worker_reserve(w, f);
    worker_changed(c, w);
    /* keep what it runs, within its bounds: more than its upper bound (creates the previous
     * leader had under way) go at the next scale-down */
    if (f->desired < (int)f->ready)
        f->desired = DG_MIN((int)f->ready, f->as.upper_bound);
    /* a CP that restarted has an empty window: hold scale-down off for one stable window */
    f->hold_down_until_ms = NOW(c) + f->as.stable_window_ms;
    push_endpoints(c, f);
    return true;
}

bool cp_core_on_exited(struct cp_core *c, struct cp_fn *f, const char *id, const char *reason)
{
    struct cp_sandbox *s = sandbox_of(c, f, id);
    if (!s || s->state == CP_SB_CREATING)
        return false;
    {
        bool draining = s->state == CP_SB_DRAINING; /* out of the lists: its delete follows */
        const char *worker = s->worker ? s->worker->name : "?";
        char msg[CP_EXIT_REASON_MAX + 128];
        snprintf(msg, sizeof(msg), "sandbox %s %s", id, reason);
        dg_log(DG_LOG_WARN, "registry", "fn=%s %s on worker %s%s", f->spec.name, msg, worker,
               draining ? " while draining" : ": replacing");
        cp_fn_error_set_exit(fn_error_mut(f), s->worker ? s->worker->name : NULL, msg, NOW(c),
                             WALL(c));
        if (f->nexited < CP_EXITED_MAX) { /* a burst of exits: the first ones say enough */
            if (!f->exited)
                f->exited = dg_xcalloc(CP_EXITED_MAX, sizeof(*f->exited));
            f->exited[f->nexited++] =
                (struct cp_exit){.id = dg_xstrdup(id), .reason = dg_xstrdup(reason)};
        }
        push_endpoints(c, f); /* the DPs hear why (and the list without it) */
        if (draining)
            return true;
        f->ready--;
        worker_release(c, s->worker, f);
        sandbox_unlink(c, f, s);
        scale_now(c, f); /* requests waiting: replace at once */
        return true;
    }
}

/* ---- workers ---------------------------------------------------------------------------- */

static void seen_unlink(struct cp_core *c, struct cp_worker *w)
{
    if (!w->in_seen)
        return;
    if (w->seen_prev)
        w->seen_prev->seen_next = w->seen_next;
    else
        c->seen_head = w->seen_next;
    if (w->seen_next)
        w->seen_next->seen_prev = w->seen_prev;
    else
        c->seen_tail = w->seen_prev;
    w->seen_prev = w->seen_next = NULL;
    w->in_seen = false;
}

/* Heard from now: to the end of the seen list (the clock is monotonic: the list stays in
 * last_seen_ms order). */
static void seen_touch(struct cp_core *c, struct cp_worker *w)
{
    seen_unlink(c, w);
    w->seen_prev = c->seen_tail;
    if (c->seen_tail)
        c->seen_tail->seen_next = w;
    else
        c->seen_head = w;
    c->seen_tail = w;
    w->in_seen = true;
}

/* Placement's view: every worker's node, in the registry's (name) order; rebuilt when a worker
 * joins (they never leave). */
static void view_rebuild(struct cp_core *c)
{
    size_t n = 0;
    for (struct cp_worker *w = c->workers; w; w = w->next)
        n++;
    if (n > c->view_cap) {
        c->view_cap = 2 * n;
        c->view = dg_xrealloc(c->view, c->view_cap * sizeof(*c->view));
    }
    n = 0;
    for (struct cp_worker *w = c->workers; w; w = w->next)
        c->view[n++] = &w->node;
    c->nview = n;
    cp_placer_view_changed(&c->placer);
}

/* The worker `name` at `address`: added, or moved to a new address (a new daemon). The
 * connection first, so a bad address changes nothing (NULL). The one place a worker is made. */
static struct cp_worker *worker_upsert(struct cp_core *c, const char *name, const char *address,
                                       enum cp_origin origin, struct dg_err *err)
{
    struct cp_worker *w = cp_core_worker(c, name); /* every heartbeat: no walk */
    if (w && strcmp(w->address, address) == 0)
        return w;
    void *io = w ? w->io : NULL;
    if (c->fx.connect(c->fx.ud, CP_PEER_WORKER, &io, address, err) < 0)
        return NULL;
    if (w) {
        free(w->address);
        w->address = dg_xstrdup(address);
        w->io = io;
    } else {
        w = dg_xcalloc(1, sizeof(*w));
        w->name = dg_xstrdup(name);
        w->node.name = w->name;
        w->address = dg_xstrdup(address);
        w->io = io;
        w->res.cpu_overcommit = 1.0;
        w->node.max_sandboxes = c->q.max_per_worker;
        w->node.rate_limited = c->q.creates_per_worker_per_s > 0;
        w->create_tokens = c->q.creates_per_worker_per_s; /* a full bucket */
        w->node.creates_left = c->q.creates_per_worker_per_s;
        w->tokens_ms = NOW(c);
        struct cp_worker **pw = &c->workers;         /* a new name: the one walk, once per worker */
        while (*pw && strcmp((*pw)->name, name) < 0) /* sorted by name: round-robin is stable */
            pw = &(*pw)->next;
        w->next = *pw;
        *pw = w;
        dg_strmap_put(&c->worker_index, dg_str_c(w->name), w);
        view_rebuild(c);
        dg_log(DG_LOG_INFO, "registry", "worker %s at %s registered", name, address);
    }
    if (origin == CP_FROM_PEER)
        c->fx.persist(c->fx.ud, CP_PEER_WORKER, w);
    return w;
}

static void worker_subnet(struct cp_worker *w, const char *subnet);

struct cp_worker *cp_core_worker_restore(struct cp_core *c, const char *name, const char *address,
                                         const char *subnet, struct dg_err *err)
{
    struct cp_worker *w = worker_upsert(c, name, address, CP_FROM_STORE, err);
    if (!w)
        return NULL;
    if (subnet)
        worker_subnet(w, subnet[0] ? subnet : NULL);
    w->node.schedulable = false; /* until its heartbeat says it is there */
    seen_unlink(c, w);
    w->need_list = true;      /* and which sandboxes it runs (answered "resync") */
    w->reconstructing = true; /* which this CP adopts (its first listing) */
    w->last_seen_ms = NOW(c);
    return w;
}

/* The worker's count of ready sandboxes differs from the registry's, and no create or drain
 * under way there explains it (a lost exit report, a create of a previous leader's that
 * completed after the worker listed); or deletes nobody waits for (w->deleting, sandboxes the
 * registry does not hold) are still remembered: only a listing forgets those, or sends them
 * again. */
static bool count_differs(struct cp_core *c, const struct cp_worker *w, size_t count)
{
    if (!w->ndeleting && count == w->node.sandboxes)
        return false; /* the usual case: no walk */
    size_t known = 0;
    for (const struct cp_fn *f = c->fns; f; f = f->next)
        for (const struct cp_sandbox *s = f->sbs; s; s = s->next) {
            if (s->worker != w && s->abandoned_on != w)
                continue;
            if (s->state != CP_SB_READY || s->abandoned_on)
                return false; /* a create or a delete under way */
            known++;
        }
    return known != count || w->ndeleting;
}

/* A listing asked for at `asked`: ready sandboxes on w known before then that it lacks exited
 * without a report that came (lost, or still on its way: then it finds none). */
static void prune_unlisted(struct cp_core *c, struct cp_worker *w, const struct cp_worker_report *r,
                           uint64_t asked)
{
    struct dg_strmap listed = {0};
    for (size_t i = 0; i < r->nsandboxes; i++)
        dg_strmap_put(&listed, dg_str_c(r->sandboxes[i].id), (void *)r->sandboxes[i].id);
    struct gone {
        struct cp_fn *f;
        char *id;
    } *gone = NULL;
    size_t n = 0, cap = 0;
    for (struct cp_fn *f = c->fns; f; f = f->next)
        for (struct cp_sandbox *s = f->sbs; s; s = s->next) {
            if (s->worker != w || s->state != CP_SB_READY || !s->id || s->known_seq > asked ||
                dg_strmap_get(&listed, dg_str_c(s->id)))
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                gone = dg_xrealloc(gone, cap * sizeof(*gone));
            }
            gone[n++] = (struct gone){f, dg_xstrdup(s->id)};
        }
    dg_strmap_free(&listed);
    for (size_t i = 0; i < n; i++) {
        cp_core_on_exited(c, gone[i].f, gone[i].id, "is gone (not in its worker's listing)");
        free(gone[i].id);
    }
    free(gone);
}

/* A create of f on w under way (or given up, its answer still to come) may be the sandbox a
 * listing shows before the create's answer arrives. */
static bool create_pending(const struct cp_fn *f, const struct cp_worker *w)
{
    for (const struct cp_sandbox *s = f->sbs; s; s = s->next)
        if (s->state == CP_SB_CREATING && (s->worker == w || s->abandoned_on == w))
            return true;
    return false;
}

/* The sandboxes a worker lists: those this CP does not know are adopted (cp_core_adopt), kept
 * for a create under way that may be theirs (listed again), or refused: deleted there. */
static void take_listing(struct cp_core *c, struct cp_worker *w,
                         const struct cp_sandbox_report *sbs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct cp_sandbox_report *sr = &sbs[i];
        const char *why;
        if (cp_core_adopt(c, w, sr->function, sr->id, sr->endpoint, &why)) {
            dg_log(DG_LOG_INFO, "registry", "fn=%s adopted sandbox %s at %s on %s", sr->function,
                   sr->id, sr->endpoint, w->name);
            continue;
        }
        if (!why) {                      /* known, or being deleted */
            if (deleting_has(w, sr->id)) /* listed before its delete arrived, or lost */
                destroy_on(c, w, sr->id, NULL);
            continue;
        }
        struct cp_fn *f = cp_core_fn(c, dg_str_c(sr->function));
        if (f && create_pending(f, w)) {
            w->need_list = true; /* its answer says; a later listing tells the rest */
            continue;
        }
        /* its function was deleted (maybe while this CP was taking over), or nobody asked for
         * it: nobody will ever delete it otherwise */
        c->refused++;
        dg_log(f ? DG_LOG_WARN : DG_LOG_INFO, "registry",
               "fn=%.64s sandbox %.80s at %.64s listed by worker %s refused: %s: deleting it",
               sr->function, sr->id, sr->endpoint, w->name, why);
        destroy_on(c, w, sr->id, NULL);
    }
}

void cp_core_worker_listed(struct cp_core *c, struct cp_worker *w,
                           const struct cp_sandbox_report *sbs, size_t n)
{
    if (!w->subnet_known) { /* a record of an older CP: its beat says, and lists */
        w->need_list = true;
        return;
    }
    take_listing(c, w, sbs, n);
    w->reconstructing = false;
}

struct cp_worker *cp_core_on_worker_heartbeat(struct cp_core *c, const struct cp_worker_report *r,
                                              struct dg_err *err)
{
    struct cp_worker *w = worker_upsert(c, r->name, r->address, CP_FROM_PEER, err);
    if (!w)
        return NULL;
    /* a new daemon under a known name (it restarted, maybe after a crash): the sandboxes of
     * its previous life are deleted there (a daemon that kept them running would orphan them)
     * and forgotten; what it lists is taken or refused below */
    if (r->boot && w->boot && strcmp(r->boot, w->boot) != 0) {
        dg_log(DG_LOG_WARN, "registry",
               "worker %s restarted (boot %.64s, was %.64s): deleting and forgetting its old "
               "sandboxes",
               w->name, r->boot, w->boot);
        for (struct cp_fn *f = c->fns; f; f = f->next)
            for (struct cp_sandbox *s = f->sbs; s; s = s->next)
                if (s->worker == w && s->id && s->state == CP_SB_READY)
                    destroy_on(c, w, s->id, NULL); /* draining ones: their delete goes on */
        cp_core_worker_forget_sandboxes(c, w);
        /* w->deleting stays: a delete may be on its way to a sandbox of the new daemon (a
         * create of its that came back too late); its listing prunes the rest */
    }
    if (r->boot && (!w->boot || strcmp(r->boot, w->boot) != 0)) {
        free(w->boot);
        w->boot = dg_xstrdup(r->boot);
    }
    /* its resources and the accounting rule's parameters (lib/resources.c), before adopting
     * sandboxes: they reserve by that rule */
    w->res = r->res;
    if (!(w->res.cpu_overcommit > 0))
        w->res.cpu_overcommit = 1.0;
    w->node.cpu_cap = cp_worker_cpu_schedulable(w);
    w->node.mem_cap = w->res.memory_mib;
    w->node.min_cpu = w->res.min_cpu_milli;
    w->node.min_mem = w->res.min_memory_mib;
    bool said = w->subnet_known;
    char *was = w->subnet ? dg_xstrdup(w->subnet) : NULL;
    worker_subnet(w, r->subnet);
    if (!said || (was == NULL) != (w->subnet == NULL) || (was && strcmp(was, w->subnet) != 0))
        c->fx.persist(c->fx.ud, CP_PEER_WORKER, w); /* a reconstruction judges by it */
    free(was);
    /* sandboxes it runs that this CP does not know: adopted only by its first listing after
     * this CP restored it (cp_core_adopt), else refused */
    if (r->listed) {
        if (w->list_asked) /* before the adoptions below: those are known after the ask */
            prune_unlisted(c, w, r, w->list_asked_seq);
        w->need_list = false;
        w->list_asked = false;
        if (w->ndeleting) { /* deleted: no longer listed */
            struct dg_strmap listed = {0};
            for (size_t k = 0; k < r->nsandboxes; k++)
                dg_strmap_put(&listed, dg_str_c(r->sandboxes[k].id), (void *)r->sandboxes[k].id);
            for (size_t i = 0; i < w->ndeleting;) {
                if (dg_strmap_get(&listed, dg_str_c(w->deleting[i])))
                    i++;
                else
                    deleting_del(w, i);
            }
            dg_strmap_free(&listed);
        }
    }
    take_listing(c, w, r->sandboxes, r->nsandboxes);
    if (r->listed)
        w->reconstructing = false; /* its first listing is in: no more adoptions */
    if (!r->listed && r->has_count && !w->need_list && count_differs(c, w, r->count)) {
        dg_log(DG_LOG_WARN, "registry",
               "worker %s runs %zu sandboxes, this CP knows %u there: asking for the list", w->name,
               r->count, w->node.sandboxes);
        w->need_list = true;
    }
    if (w->need_list && !w->list_asked) { /* this answer asks: a listing comes after it */
        w->list_asked = true;
        w->list_asked_seq = ++c->seq;
    }
    if (r->saturated != w->node.saturated) { /* alive and busy: placed on again once free */
        dg_log(DG_LOG_INFO, "registry", "worker %s %s", w->name,
               r->saturated ? "saturated: no placements on it until its queue drains"
                            : "no longer saturated");
        if (!r->saturated && c->unschedulable && !c->capacity_soon) { /* who waited, now */
            c->capacity_soon = true;
            c->fx.soon(c->fx.ud, CP_SOON_CAPACITY);
        }
    }
    w->node.saturated = r->saturated;
    worker_changed(c, w);
    if (!w->node.schedulable)
        dg_log(DG_LOG_INFO, "registry", "worker %s schedulable", w->name);
    w->node.schedulable = true;
    w->last_seen_ms = NOW(c);
    seen_touch(c, w);
    return w;
}

void cp_core_worker_forget_sandboxes(struct cp_core *c, struct cp_worker *w)
{
    /* nothing of its previous life is reserved any more, before the reconciles below: they
     * may place replacements on w itself (a restarted worker is schedulable), and those keep
     * their reservations */
    w->node.sandboxes = 0;
    w->node.cpu_used = w->node.mem_used = 0;
    for (struct cp_fn *f = c->fns; f; f = f->next) {
        bool changed = false, replace = false;
        for (struct cp_sandbox *s = f->sbs, *next; s; s = next) {
            next = s->next;
            if (s->worker != w)
                continue;
            s->worker = NULL; /* requests in flight to it finish on their own */
            if (s->state == CP_SB_READY) {
                f->ready--;
                sandbox_unlink(c, f, s);
                changed = true;
            } else if (s->state == CP_SB_CREATING && !s->abandoned_on) {
                /* not waited for (a create's answer may take up to its timeout): replaced
                 * now, its answer handled when it comes */
                s->abandoned_on = w;
                f->creating--;
                replace = true;
            } else if (s->state == CP_SB_DRAINING) {
                /* its delete still goes there (a worker only cut off keeps it running) */
                s->abandoned_on = w;
            }
        }
        if (changed)
            push_endpoints(c, f); /* the next tick replaces them elsewhere */
        if (replace && !f->deleted)
            reconcile(c, f);
    }
    worker_changed(c, w);
}

void cp_core_on_worker_lost(struct cp_core *c, struct cp_worker *w)
{
    dg_log(DG_LOG_WARN, "registry", "worker %s silent: unschedulable, its sandboxes are lost",
           w->name);
    w->node.schedulable = false;
    seen_unlink(c, w); /* back at its next heartbeat */
    /* if it was only cut off, it comes back with the same sandboxes: its next heartbeat must
     * list them (adopted, or deleted if their function went meanwhile) */
    w->need_list = true;
    cp_core_worker_forget_sandboxes(c, w);
}

/* ---- data planes ------------------------------------------------------------------------ */

struct cp_dp *cp_core_dp(struct cp_core *c, const char *name)
{
    return dg_strmap_get(&c->dp_index, dg_str_c(name));
}

struct cp_worker *cp_core_worker(struct cp_core *c, const char *name)
{
    return dg_strmap_get(&c->worker_index, dg_str_c(name));
}

/* The one place a data plane is made (or moved). */
struct cp_dp *cp_core_on_dp_heartbeat(struct cp_core *c, const char *name, const char *api,
                                      const char *proxy, enum cp_origin origin, bool *fresh,
                                      struct dg_err *err)
{
    struct cp_dp *d = cp_core_dp(c, name);
    *fresh = !d || strcmp(d->api, api) != 0;
    if (!*fresh) {
        d->last_seen_ms = NOW(c);
        return d;
    }
    void *io = d ? d->io : NULL; /* the connection first, so a bad address changes nothing */
    if (c->fx.connect(c->fx.ud, CP_PEER_DP, &io, api, err) < 0)
        return NULL;
    if (d) {
        free(d->api);
        free(d->proxy);
    } else {
        d = dg_xcalloc(1, sizeof(*d));
        d->name = dg_xstrdup(name);
        d->next = c->dps;
        c->dps = d;
        dg_strmap_put(&c->dp_index, dg_str_c(d->name), d);
    }
    d->io = io;
    d->api = dg_xstrdup(api);
    d->proxy = dg_xstrdup(proxy);
    d->last_seen_ms = NOW(c);
    dg_log(DG_LOG_INFO, "registry", "data plane %s (api %s, proxy %s) registered", name, api,
           proxy);
    if (origin == CP_FROM_PEER)
        c->fx.persist(c->fx.ud, CP_PEER_DP, d);
    return d;
}

static void dp_free(struct cp_core *c, struct cp_dp *d)
{
    if (d->io)
        c->fx.disconnect(c->fx.ud, CP_PEER_DP, d->io);
    free(d->name);
    free(d->api);
    free(d->proxy);
    free(d);
}

void cp_core_dp_resync(struct cp_core *c, struct cp_dp *d)
{
    d->need_sync = false;
    if (!c->fx.push_dp) {
        cp_core_push_all(c);
        return;
    }
    size_t n = 0;
    for (struct cp_fn *f = c->fns; f; f = f->next)
        n++;
    if (n > c->items_cap) {
        c->items_cap = 2 * n;
        c->items = dg_xrealloc(c->items, c->items_cap * sizeof(*c->items));
    }
    n = 0; /* no error, no exits: those go once, with the push a change makes */
    for (struct cp_fn *f = c->fns; f; f = f->next)
        c->items[n++] = (struct cp_push_item){.f = f};
    c->fx.push_dp(c->fx.ud, d, c->items, n);
}

void cp_core_on_dp_push_failed(struct cp_core *c, const char *name)
{
    struct cp_dp *d = cp_core_dp(c, name);
    if (d && !d->need_sync) {
        dg_log(DG_LOG_WARN, "registry", "data plane %s missed a push: resync at its next heartbeat",
               name);
        d->need_sync = true;
    }
}

void cp_core_on_dp_lost(struct cp_core *c, struct cp_dp *d)
{
    dg_log(DG_LOG_WARN, "registry", "data plane %s silent: removed", d->name);
    for (struct cp_dp **pd = &c->dps; *pd; pd = &(*pd)->next)
        if (*pd == d) {
            *pd = d->next;
            break;
        }
    dg_strmap_del(&c->dp_index, dg_str_c(d->name));
    for (struct cp_fn *f = c->fns; f; f = f->next)
        for (size_t i = 0; i < f->nmetrics; i++)
            if (f->metrics[i].dp == d) {
                f->metrics[i].dp = NULL;
                f->metrics[i].inflight = 0;
            }
    dp_free(c, d);
}

unsigned cp_core_check_peers(struct cp_core *c, uint64_t silent_ms)
{
    uint64_t now = NOW(c);
    unsigned lost = 0;
    /* from the least recently heard: every 50 ms, so no walk of all the workers */
    while (c->seen_head && now - c->seen_head->last_seen_ms > silent_ms) {
        struct cp_worker *w = c->seen_head;
        if (w->node.schedulable)
            cp_core_on_worker_lost(c, w); /* takes it off the list */
        else
            seen_unlink(c, w);
    }
    for (struct cp_dp *d = c->dps, *next; d; d = next) {
        next = d->next;
        if (now - d->last_seen_ms > silent_ms) {
            cp_core_on_dp_lost(c, d);
            lost++;
        }
    }
    return lost;
}

/* ---- the end ---------------------------------------------------------------------------- */

void cp_core_free(struct cp_core *c)
{
    dg_strmap_free(&c->fn_index);
    dg_strmap_free(&c->sb_index);
    dg_strmap_free(&c->worker_index);
    dg_strmap_free(&c->dp_index);
    for (unsigned k = 0; k < c->nslots; k++)
        free(c->slots[k].v);
    free(c->slots);
    while (c->fns) {
        struct cp_fn *f = c->fns;
        c->fns = f->next;
        fn_free(c, f);
    }
    while (c->workers) {
        struct cp_worker *w = c->workers;
        c->workers = w->next;
        if (w->io)
            c->fx.disconnect(c->fx.ud, CP_PEER_WORKER, w->io);
        free(w->name);
        free(w->address);
        free(w->boot);
        free(w->sb_host);
        free(w->subnet);
        deleting_clear(w);
        free(w);
    }
    while (c->dps) {
        struct cp_dp *d = c->dps;
        c->dps = d->next;
        dp_free(c, d);
    }
    cp_placer_deinit(&c->placer);
    free(c->view);
    free(c->chosen);
    free(c->items);
    memset(c, 0, sizeof(*c));
}
