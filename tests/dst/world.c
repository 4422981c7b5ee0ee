/*
 * world.c: the simulated cluster of the deterministic simulation tests (world.h): the event
 * queue, the network, the control plane's and data planes' effects, the simulated workers and
 * clients, and what each message does when it arrives and when its answer comes back.
 *
 * The messages mirror the adapters (src/cp/scaling.c, src/cp/api.c, src/dp/api.c,
 * src/dp/proxy.c): a call whose answer never comes ends in an error for its sender after a
 * timeout, and the sender reacts as the adapter does (a create: cp_core_on_created with the
 * error as reason; a delete: cp_core_on_deleted with it; a drain: counted as answered; a push
 * or a forget (not a 404): cp_core_on_dp_push_failed, the DP's next heartbeat gets a resync; a
 * DP's heartbeat: its next one says "resync"; a worker's heartbeat, a report: nothing). Everything depends only on the seed: no wall
 * clock, no addresses printed or hashed, no hash order.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world.h"

/* ---- PRNG (splitmix64: the only source of randomness) -------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static const char *const rpc_names[] = {"create",       "delete", "drain",
                                        "push",         "forget", "worker-heartbeat",
                                        "dp-heartbeat", "metric", "exited"};

uint64_t dst_rnd(struct sim *s, uint64_t n) /* [0, n) */
{
    return n ? rng_next(&s->rng) % n : 0;
}

bool dst_chance(struct sim *s, unsigned permille)
{
    return dst_rnd(s, 1000) < permille;
}

void dst_failf(struct sim *s, const char *fmt, ...)
{
    if (s->fail[0])
        return; /* the first one says it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail, sizeof(s->fail), fmt, ap);
    va_end(ap);
}

void dst_tracef(struct sim *s, const char *fmt, ...)
{
    if (!s->o->trace)
        return;
    printf("%10.3f ", (double)s->now / 1e6);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* ---- the event queue (a binary heap on (t, seq)) ------------------------------------------- */

static bool ev_before(const struct ev *a, const struct ev *b)
{
    return a->t != b->t ? a->t < b->t : a->seq < b->seq;
}

static void at(struct sim *s, uint64_t t, enum ev_kind kind, int a, uint64_t gen, void *p)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? 2 * s->capheap : 1024;
        s->heap = dg_xrealloc(s->heap, s->capheap * sizeof(*s->heap));
    }
    size_t i = s->nheap++;
    struct ev e = {
        .t = t < s->now ? s->now : t, .seq = s->seq++, .kind = kind, .a = a, .gen = gen, .p = p};
    while (i > 0 && ev_before(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static struct ev ev_pop(struct sim *s)
{
    struct ev top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && ev_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap)
        s->heap[i] = last;
    return top;
}

/* ---- the network ---------------------------------------------------------------------------- */

static uint64_t latency(struct sim *s)
{
    if (!s->quiet && (s->o->faults & F_SLOW) && dst_chance(s, s->o->slow_permille))
        return 100000 + dst_rnd(s, 3000000); /* slow: 0.1-3.1 s */
    return 100 + dst_rnd(s, 2000);
}

static enum node_kind rpc_peer_kind(const struct rpc *r);

/* When a message sent now on the link to (to_cp) or from the peer of `r` arrives. */
static uint64_t deliver_at(struct sim *s, const struct rpc *r, bool to_cp)
{
    int link = (rpc_peer_kind(r) == N_WORKER ? 0 : MAX_WORKERS) + r->peer;
    uint64_t t = s->now + latency(s), *last = &s->link_last[to_cp][link];
    if (!s->quiet && (s->o->faults & F_REORDER) && dst_chance(s, 100))
        return t; /* may overtake */
    if (t < *last)
        t = *last;
    *last = t;
    return t;
}

static bool reachable(struct sim *s, enum node_kind k, int i)
{
    if (k == N_WORKER)
        return s->wk[i].alive && s->now >= s->wk[i].part_until;
    if (k == N_DP)
        return s->dp[i].alive && s->now >= s->dp[i].part_until;
    return s->cp != NULL;
}

static bool rpc_from_cp(const struct rpc *r)
{
    return r->kind <= R_FORGET;
}

static enum node_kind rpc_peer_kind(const struct rpc *r)
{
    switch (r->kind) {
    case R_CREATE:
    case R_DESTROY:
    case R_WK_HB:
    case R_EXITED:
        return N_WORKER;
    default:
        return N_DP;
    }
}

static void rpc_free(struct rpc *r)
{
    free(r->id);
    free(r->fn);
    for (size_t i = 0; i < r->npush; i++) {
        struct push_fn *p = &r->push[i];
        free(p->name);
        for (size_t k = 0; k < p->neps; k++) {
            free((char *)p->eps[k].id);
            free((char *)p->eps[k].address);
        }
        free(p->eps);
        free(p->error);
        for (unsigned k = 0; k < p->nex; k++) {
            free(p->ex_id[k]);
            free(p->ex_reason[k]);
        }
        free(p->ex_id);
        free(p->ex_reason);
    }
    free(r->push);
    for (size_t i = 0; i < r->wr.nsandboxes; i++) {
        free((char *)r->wsr[i].id);
        free((char *)r->wsr[i].function);
        free((char *)r->wsr[i].endpoint);
    }
    free(r->wsr);
    free((char *)r->wr.boot);
    for (size_t i = 0; i < r->nitems; i++)
        free((char *)r->items[i].name);
    free(r->items);
    free(r->r_id);
    free(r->r_ep);
    free(r->r_err);
    free(r);
}

/* The sender's answer: ok, or the error `err` at `t`. */
static void rpc_answer_at(struct sim *s, struct rpc *r, uint64_t t, bool ok, const char *err)
{
    r->ok = ok;
    if (!ok) {
        free(r->r_err);
        r->r_err = dg_xstrdup(err);
    }
    at(s, t, EV_REPLY, 0, 0, r);
}

/* The receiver answered (ok, or with the error `err`): the answer travels back, or is lost and
 * the sender's call times out. */
static void rpc_reply(struct sim *s, struct rpc *r, bool ok, const char *err)
{
    bool from_cp = rpc_from_cp(r);
    enum node_kind pk = rpc_peer_kind(r);
    bool back =
        reachable(s, pk, r->peer) && reachable(s, N_CP, 0) && (!from_cp || s->cp_gen == r->cp_gen);
    if (r->lose_reply || !back) {
        s->st_lost++;
        rpc_answer_at(s, r, r->sent + RPC_TIMEOUT_US, false, "timeout");
        return;
    }
    if (err && !r->r_err)
        r->r_err = dg_xstrdup(err);
    r->ok = ok;
    at(s, deliver_at(s, r, from_cp), EV_REPLY, 0, 0, r);
}

static void rpc_send(struct sim *s, struct rpc *r)
{
    bool from_cp = rpc_from_cp(r);
    enum node_kind to = from_cp ? rpc_peer_kind(r) : N_CP;
    int to_i = from_cp ? r->peer : 0;
    r->sent = s->now;
    s->rpcs_out++;
    dst_tracef(s, "send %s %s %s%d%s%s%s%s", rpc_names[r->kind], from_cp ? "->" : "<-",
               rpc_peer_kind(r) == N_WORKER ? "w" : "dp", r->peer, r->fn ? " fn " : "",
               r->fn ? r->fn : "", r->id ? " id " : "", r->id ? r->id : "");
    bool dead = to == N_CP ? !s->cp : to == N_WORKER ? !s->wk[to_i].alive : !s->dp[to_i].alive;
    if (dead) { /* connection refused, at once */
        rpc_answer_at(s, r, s->now + latency(s), false, "connection refused");
        return;
    }
    bool lost = !reachable(s, to, to_i) || (!from_cp && !reachable(s, rpc_peer_kind(r), r->peer)) ||
                (!s->quiet && (s->o->faults & F_LOSS) && dst_chance(s, s->o->loss_permille));
    if (lost) {
        s->st_lost++;
        rpc_answer_at(s, r, s->now + RPC_TIMEOUT_US, false, "timeout");
        return;
    }
    r->lose_reply = !s->quiet && (s->o->faults & F_LOSS) && dst_chance(s, s->o->loss_permille);
    at(s, deliver_at(s, r, !from_cp), EV_ARRIVE, 0, 0, r);
}

static struct rpc *rpc_new(enum rpc_kind kind, int peer, uint64_t cp_gen)
{
    struct rpc *r = dg_xcalloc(1, sizeof(*r));
    r->kind = kind;
    r->peer = peer;
    r->cp_gen = cp_gen;
    return r;
}

/* ---- the control plane's effects (as src/cp/scaling.c) ------------------------------------ */

int dst_worker_idx(const struct cp_worker *w)
{
    return atoi(w->name + 1); /* "w3" */
}

static int dp_idx(const struct cp_dp *d)
{
    return atoi(d->name + 2); /* "dp1" */
}

static uint64_t cp_now_ms(void *ud)
{
    struct sim *s = ud;
    return (s->now + s->cp_off) / 1000;
}

static uint64_t cp_wall_ms(void *ud)
{
    return 1700000000000ULL + cp_now_ms(ud);
}

static void cp_soon(void *ud, enum cp_soon what)
{
    struct sim *s = ud;
    at(s, s->now, EV_CP_SOON, (int)what, s->cp_gen, NULL);
}

static void cp_create(void *ud, struct cp_sandbox *sb)
{
    struct sim *s = ud;
    struct rpc *r = rpc_new(R_CREATE, dst_worker_idx(sb->worker), s->cp_gen);
    r->s = sb;
    r->fn = dg_xstrdup(sb->fn->spec.name);
    s->st_creates++;
    if (s->now - s->win_start >= 1000000) {
        memset(s->creates_win, 0, sizeof(s->creates_win));
        s->win_start = s->now;
    }
    /* the core never asks for more than the quotas allow (this create counted) */
    const struct cp_quotas *q = &s->cp->q;
    if (q->max_per_function && sb->fn->ready + sb->fn->creating > q->max_per_function)
        dst_failf(s, "fn %s: a create beyond maxSandboxesPerFunction %u (%u ready, %u creating)",
                  sb->fn->spec.name, q->max_per_function, sb->fn->ready, sb->fn->creating);
    if (q->max_per_worker && sb->worker->node.sandboxes > q->max_per_worker)
        dst_failf(s, "worker %s: a create beyond maxSandboxesPerWorker %u (%u there)",
                  sb->worker->name, q->max_per_worker, sb->worker->node.sandboxes);
    if (q->max_total && s->cp->nsandboxes > q->max_total)
        dst_failf(s, "a create beyond maxSandboxes %u (%u)", q->max_total, s->cp->nsandboxes);
    unsigned k = (unsigned)atoi(sb->fn->spec.name + 2) % 16; /* "fn7" */
    if (++s->creates_win[k] > CREATES_PER_S)
        dst_failf(s, "fn %s: more than %d creates within 1 s (a retry storm)", sb->fn->spec.name,
                  CREATES_PER_S);
    rpc_send(s, r);
}

static void cp_destroy(void *ud, struct cp_worker *w, const char *id, struct cp_sandbox *sb)
{
    struct sim *s = ud;
    struct rpc *r = rpc_new(R_DESTROY, dst_worker_idx(w), s->cp_gen);
    r->s = sb;
    r->id = dg_xstrdup(id);
    rpc_send(s, r);
}

static void drain_step(struct sim *s, struct cp_drain *d)
{
    if (--d->pending > 0)
        return;
    for (size_t i = 0; i < s->ndrains; i++)
        if (s->drains[i] == d) {
            s->drains[i] = s->drains[--s->ndrains];
            break;
        }
    cp_core_on_drained(s->cp, d);
}

static void cp_drain(void *ud, struct cp_drain *d)
{
    struct sim *s = ud;
    if (s->ndrains == s->capdrains) {
        s->capdrains = s->capdrains ? 2 * s->capdrains : 16;
        s->drains = dg_xrealloc(s->drains, s->capdrains * sizeof(*s->drains));
    }
    s->drains[s->ndrains++] = d;
    d->pending = 1; /* held until every DP was asked */
    for (struct cp_dp *dp = s->cp->dps; dp; dp = dp->next) {
        struct rpc *r = rpc_new(R_DRAIN, dp_idx(dp), s->cp_gen);
        r->d = d;
        r->fn = dg_xstrdup(d->f->spec.name);
        r->npush = 0;
        /* the ids travel in push[0].eps (reused as a list of strings) */
        r->push = dg_xcalloc(1, sizeof(*r->push));
        r->npush = 1;
        r->push[0].name = dg_xstrdup(d->f->spec.name);
        r->push[0].eps = dg_xcalloc(d->n ? d->n : 1, sizeof(*r->push[0].eps));
        r->push[0].neps = d->n;
        for (size_t i = 0; i < d->n; i++) {
            r->push[0].eps[i].id = dg_xstrdup(d->victims[i]->id);
            r->push[0].eps[i].address = dg_xstrdup("");
        }
        d->pending++;
        rpc_send(s, r);
    }
    drain_step(s, d);
}

/* One push of `items` to `dp` (full: its whole table, a resync). */
static void push_to(struct sim *s, struct cp_dp *dp, const struct cp_push_item *items, size_t n,
                    bool full)
{
    struct rpc *r = rpc_new(R_PUSH, dp_idx(dp), s->cp_gen);
    r->resync = full;
    r->push = dg_xcalloc(n ? n : 1, sizeof(*r->push));
    r->npush = n;
    for (size_t i = 0; i < n; i++) {
        const struct cp_fn *f = items[i].f;
        struct push_fn *p = &r->push[i];
        p->name = dg_xstrdup(f->spec.name);
        p->concurrency = f->spec.concurrency;
        p->eps = dg_xcalloc(f->ready ? f->ready : 1, sizeof(*p->eps));
        for (const struct cp_sandbox *sb = f->sbs; sb; sb = sb->next)
            if (sb->state == CP_SB_READY)
                p->eps[p->neps++] =
                    (struct dp_endpoint_spec){dg_xstrdup(sb->id), dg_xstrdup(sb->endpoint)};
        p->error = items[i].error ? dg_xstrdup(items[i].error) : NULL;
        p->nex = items[i].nexited;
        p->ex_id = dg_xcalloc(p->nex ? p->nex : 1, sizeof(char *));
        p->ex_reason = dg_xcalloc(p->nex ? p->nex : 1, sizeof(char *));
        for (unsigned k = 0; k < p->nex; k++) {
            p->ex_id[k] = dg_xstrdup(items[i].exited[k].id);
            p->ex_reason[k] = dg_xstrdup(items[i].exited[k].reason);
        }
    }
    rpc_send(s, r);
}

static void cp_push(void *ud, const struct cp_push_item *items, size_t n)
{
    struct sim *s = ud;
    for (struct cp_dp *dp = s->cp->dps; dp; dp = dp->next)
        push_to(s, dp, items, n, false);
}

/* scaling.c fx_push_dp: a resync to one DP */
static void cp_push_dp(void *ud, struct cp_dp *dp, const struct cp_push_item *items, size_t n)
{
    push_to(ud, dp, items, n, true);
}

static void cp_forget_fn(void *ud, const char *name)
{
    struct sim *s = ud;
    for (struct cp_dp *dp = s->cp->dps; dp; dp = dp->next) {
        struct rpc *r = rpc_new(R_FORGET, dp_idx(dp), s->cp_gen);
        r->fn = dg_xstrdup(name);
        rpc_send(s, r);
    }
}

static int cp_connect(void *ud, enum cp_peer kind, void **io, const char *address,
                      struct dg_err *err)
{
    return 0; /* the network needs no connection; io stays NULL */
}

static void cp_disconnect(void *ud, enum cp_peer kind, void *io)
{
}

static void cp_persist(void *ud, enum cp_peer kind, const void *peer)
{
    struct sim *s = ud;
    if (kind == CP_PEER_WORKER)
        s->st_worker[dst_worker_idx(peer)] = true;
    else
        s->st_dp[dp_idx(peer)] = true;
}

static void cp_start(struct sim *s)
{
    struct cp_effects fx = {.ud = s,
                            .now_ms = cp_now_ms,
                            .wall_ms = cp_wall_ms,
                            .soon = cp_soon,
                            .create = cp_create,
                            .destroy = cp_destroy,
                            .drain = cp_drain,
                            .push = cp_push,
                            .push_dp = cp_push_dp,
                            .forget_fn = cp_forget_fn,
                            .connect = cp_connect,
                            .disconnect = cp_disconnect,
                            .persist = cp_persist};
    struct cp_core_config cfg = {.placement = (enum cp_place_policy)(s->seed % 4),
                                 .chbl_eps = 0.25,
                                 .seed = s->seed ^ s->cp_gen};
    if (s->seed % 2 ==
        1) /* scale-downs queued behind a small budget (the daemon's default has one) */
        cfg.scale_down_budget = 1 + (unsigned)(s->seed / 2 % 3);
    if (s->seed % 3 == 0) /* quotas small enough to bind (dst.c checks them after every step) */
        cfg.quotas = (struct cp_quotas){.max_per_function = 2 + (unsigned)(s->seed / 3 % 4),
                                        .max_per_worker = 3 + (unsigned)(s->seed / 12 % 5),
                                        .max_total = 6 + (unsigned)(s->seed / 60 % 10)};
    s->cp = dg_xcalloc(1, sizeof(*s->cp));
    cp_core_init(s->cp, &cfg, &fx);
    s->cp_slot = 0;
    at(s, s->now + CRON_US, EV_CP_CRON, 0, s->cp_gen, NULL);
}

struct cp_fn_spec dst_spec_of(const struct stored_fn *sf)
{
    struct cp_fn_spec spec = {0};
    snprintf(spec.name, sizeof(spec.name), "%s", sf->name);
    spec.image = dg_xstrdup("/bin/true");
    spec.port = 80;
    snprintf(spec.proto, sizeof(spec.proto), "tcp");
    spec.cpu_milli = sf->cpu;
    spec.memory_mib = sf->mem;
    spec.concurrency = sf->concurrency;
    spec.lower_bound = sf->lo;
    spec.upper_bound = sf->hi;
    return spec;
}

/* A new leader: what the store holds (src/cp/api.c restore_*), then every list to every DP; the
 * workers' next heartbeats are answered "resync" and list their sandboxes (adopted). */
void dst_cp_restore(struct sim *s)
{
    cp_start(s);
    struct dg_err err = {0};
    for (size_t i = 0; i < s->nfns; i++) {
        struct cp_fn_spec spec = dst_spec_of(&s->fns[i]);
        cp_core_fn_register(s->cp, &spec);
    }
    for (int i = 0; i < s->nwk; i++)
        if (s->st_worker[i])
            cp_core_worker_restore(s->cp, s->wk[i].name, s->wk[i].address, "", &err);
    for (int i = 0; i < s->ndp; i++) {
        bool fresh;
        if (s->st_dp[i])
            cp_core_on_dp_heartbeat(s->cp, s->dp[i].name, s->dp[i].api, s->dp[i].proxy,
                                    CP_FROM_STORE, &fresh, &err);
    }
    for (struct cp_dp *d = s->cp->dps; d; d = d->next) /* api.c recon_finish */
        cp_core_dp_resync(s->cp, d);
    s->recon_until = s->now + 3000000;
}

bool dst_cp_reconstructing(const struct sim *s)
{
    if (!s->cp || s->now >= s->recon_until)
        return false;
    for (const struct cp_worker *w = s->cp->workers; w; w = w->next)
        if (w->need_list)
            return true; /* not listed yet */
    return false;
}

/* The leader goes (its registry with it); a new one restores 0.5-3 s later. */
void dst_cp_failover(struct sim *s)
{
    s->st_failover++;
    dst_tracef(s, "fault: control plane fails over");
    for (size_t i = 0; i < s->ndrains; i++) {
        free(s->drains[i]->victims);
        free(s->drains[i]);
    }
    s->ndrains = 0;
    cp_core_free(s->cp);
    free(s->cp);
    s->cp = NULL;
    s->cp_gen++;
    at(s, s->now + 500000 + dst_rnd(s, 2500000), EV_CP_UP, 0, s->cp_gen, NULL);
}

/* ---- workers ----------------------------------------------------------------------------- */

static struct wsb *wk_find(struct sim_worker *w, const char *id)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->sbs[i].id, id) == 0)
            return &w->sbs[i];
    return NULL;
}

/* The sandbox `id` where a request can reach it, or NULL. */
static struct wsb *sandbox_at(struct sim *s, const char *id)
{
    int wi = atoi(id + 1); /* "w2-b1-7" */
    if (wi < 0 || wi >= s->nwk || !reachable(s, N_WORKER, wi))
        return NULL;
    return wk_find(&s->wk[wi], id);
}

static void wk_remove(struct sim_worker *w, struct wsb *b)
{
    free(b->id);
    free(b->fn);
    free(b->endpoint);
    *b = w->sbs[--w->n];
}

static void wk_heartbeat(struct sim *s, struct sim_worker *w)
{
    struct rpc *r = rpc_new(R_WK_HB, w->idx, s->cp_gen);
    r->peer_inc = w->boot;
    r->wr.name = w->name;
    r->wr.address = w->address;
    char boot[32];
    snprintf(boot, sizeof(boot), "%s-boot-%u", w->name, w->boot);
    r->wr.boot = dg_xstrdup(boot);
    r->wr.res = w->res;
    r->wr.has_count = true; /* src/worker/cplink.c: every beat says how many it runs */
    r->wr.count = w->n;
    r->wr.listed = w->list_next;
    if (w->list_next) {
        r->wsr = dg_xcalloc(w->n ? w->n : 1, sizeof(*r->wsr));
        for (size_t i = 0; i < w->n; i++)
            r->wsr[i] = (struct cp_sandbox_report){
                dg_xstrdup(w->sbs[i].id), dg_xstrdup(w->sbs[i].fn), dg_xstrdup(w->sbs[i].endpoint)};
        r->wr.nsandboxes = w->n;
        r->wr.sandboxes = r->wsr;
    }
    rpc_send(s, r);
}

void dst_wk_crash(struct sim *s, struct sim_worker *w)
{
    s->st_crash_w++;
    dst_tracef(s, "fault: worker %s crashes with %zu sandboxes", w->name, w->n);
    while (w->n)
        wk_remove(w, &w->sbs[0]);
    w->alive = false;
    at(s, s->now + 1000000 + dst_rnd(s, 9000000), EV_WK_UP, w->idx, w->boot, NULL);
}

void dst_wk_start(struct sim *s, struct sim_worker *w)
{
    w->alive = true;
    w->boot++;
    w->list_next = true; /* a new daemon lists its (no) sandboxes */
    dst_tracef(s, "worker %s starts (boot %u)", w->name, w->boot);
    at(s, s->now + dst_rnd(s, HB_US), EV_WK_HB, w->idx, w->boot, NULL);
}

/* A sandbox dies by itself (OOM): the worker tells the CP. */
void dst_wk_exit_one(struct sim *s, struct sim_worker *w)
{
    if (!w->n)
        return;
    struct wsb *b = &w->sbs[dst_rnd(s, w->n)];
    s->st_exits++;
    dst_tracef(s, "fault: sandbox %s of %s exits", b->id, b->fn);
    struct rpc *r = rpc_new(R_EXITED, w->idx, s->cp_gen);
    r->peer_inc = w->boot;
    r->id = dg_xstrdup(b->id);
    r->fn = dg_xstrdup(b->fn);
    wk_remove(w, b);
    rpc_send(s, r);
}

/* ---- data planes ------------------------------------------------------------------------- */

static struct sreq *req_of(struct dp_req *r)
{
    return (struct sreq *)r; /* core is the first member */
}

static void req_answer(struct sim *s, struct sreq *q, int status, const char *why)
{
    q->answers++;
    q->status = status;
    if (status == 200)
        s->st_ok++;
    else
        s->st_err++;
    dst_tracef(s, "answer req %" PRIu64 " (%s at dp%d): %d %s", q->id, q->fn, q->dp, status, why);
    if (q->answers > 1)
        dst_failf(s, "request %" PRIu64 " (%s at dp%d) answered twice (last: %d %s)", q->id, q->fn,
                  q->dp, status, why);
}

static uint64_t dp_now(void *ud)
{
    struct sim_dp *d = ud;
    return d->sim->now + d->clock_off;
}

static void dp_forward(void *ud, struct dp_req *r, struct dp_endpoint *e)
{
    struct sim_dp *d = ud;
    struct sim *s = d->sim;
    struct sreq *q = req_of(r);
    q->attempt++;
    snprintf(q->sb, sizeof(q->sb), "%s", e->id);
    struct wsb *b = sandbox_at(s, e->id);
    if (!b) { /* nothing listens there: the connection fails before anything is sent */
        at(s, s->now + latency(s), EV_REQ_FAIL, (int)q->attempt, d->gen, q);
        return;
    }
    b->inflight++;
    q->running = true;
    at(s, s->now + 1000 + dst_rnd(s, 2000000), EV_REQ_DONE, (int)q->attempt, d->gen, q);
}

static void dp_answer(void *ud, struct dp_req *r, enum dp_answer_kind kind, int status,
                      const char *msg)
{
    struct sim_dp *d = ud;
    struct sreq *q = req_of(r);
    q->in_core = false;
    req_answer(d->sim, q, status, msg);
}

static void dp_report_soon(void *ud)
{
    struct sim_dp *d = ud;
    at(d->sim, d->sim->now, EV_DP_REPORT, d->idx, d->gen, NULL);
}

static void dp_report(void *ud, const struct dp_report_item *items, size_t n)
{
    struct sim_dp *d = ud;
    struct rpc *r = rpc_new(R_METRIC, d->idx, d->sim->cp_gen);
    r->peer_inc = d->gen;
    r->items = dg_xcalloc(n ? n : 1, sizeof(*r->items));
    r->nitems = n;
    for (size_t i = 0; i < n; i++)
        r->items[i] = (struct dp_report_item){dg_xstrdup(items[i].name), items[i].inflight};
    rpc_send(d->sim, r);
}

static void dp_drained(void *ud, void *token, const struct dp_function *f, size_t nids)
{
    struct sim_dp *d = ud;
    rpc_reply(d->sim, token, true, NULL);
}

static void dp_drain_dropped(void *ud, void *token)
{
    struct sim_dp *d = ud;
    rpc_reply(d->sim, token, false, "connection reset");
}

void dst_dp_start(struct sim *s, struct sim_dp *d)
{
    d->gen++;
    d->alive = true;
    d->resync = true; /* its first registration says "resync" */
    struct dp_effects fx = {.ud = d,
                            .now = dp_now,
                            .forward = dp_forward,
                            .answer = dp_answer,
                            .report_soon = dp_report_soon,
                            .report = dp_report,
                            .drained = dp_drained,
                            .drain_dropped = dp_drain_dropped};
    struct dp_core_config cfg = {.policy = (enum dp_lb_policy)((s->seed >> 2) % 4),
                                 .queue_timeout_ms = QUEUE_TIMEOUT_MS,
                                 .seed = s->seed ^ ((uint64_t)d->idx << 32) ^ d->gen};
    d->core = dp_core_new(&cfg, &fx);
    dst_tracef(s, "data plane %s starts (life %u)", d->name, d->gen);
    at(s, s->now + CRON_US, EV_DP_CRON, d->idx, d->gen, NULL);
    at(s, s->now + dst_rnd(s, HB_US), EV_DP_HB, d->idx, d->gen, NULL);
}

/* Its clients see their connections close; what it queued and ran is gone. */
void dst_dp_crash(struct sim *s, struct sim_dp *d)
{
    s->st_crash_dp++;
    dst_tracef(s, "fault: data plane %s crashes", d->name);
    for (size_t i = 0; i < s->nreqs; i++) {
        struct sreq *q = s->reqs[i];
        if (q->dp == d->idx && q->dp_gen == d->gen && q->in_core) {
            q->in_core = false;
            req_answer(s, q, 599, "connection lost");
        }
    }
    d->alive = false;
    dp_core_free(d->core); /* drains in flight: drain_dropped */
    d->core = NULL;
    at(s, s->now + 500000 + dst_rnd(s, 5000000), EV_DP_UP, d->idx, d->gen, NULL);
}

void dst_invoke(struct sim *s, const char *fn, int di)
{
    struct sreq *q = dg_xcalloc(1, sizeof(*q));
    q->id = s->nreqs;
    q->dp = di;
    q->t0 = s->now;
    snprintf(q->fn, sizeof(q->fn), "%s", fn);
    if (s->nreqs == s->capreqs) {
        s->capreqs = s->capreqs ? 2 * s->capreqs : 1024;
        s->reqs = dg_xrealloc(s->reqs, s->capreqs * sizeof(*s->reqs));
    }
    s->reqs[s->nreqs++] = q;
    struct sim_dp *d = &s->dp[di];
    dst_tracef(s, "invoke req %" PRIu64 " %s at dp%d", q->id, fn, di);
    if (!d->alive) {
        req_answer(s, q, 599, "connection refused");
        return;
    }
    struct dp_function *f = dp_core_function_find(d->core, fn, strlen(fn));
    if (!f) {
        req_answer(s, q, 404, "not registered");
        return;
    }
    q->dp_gen = d->gen;
    q->in_core = true;
    dp_core_on_request(d->core, f, &q->core);
}

/* The sandbox's answer, or its connection breaking (the worker died, or the sandbox went). */
static void req_done(struct sim *s, const struct ev *e)
{
    struct sreq *q = e->p;
    struct sim_dp *d = &s->dp[q->dp];
    int wi = atoi(q->sb + 1);
    struct wsb *b = wi >= 0 && wi < s->nwk ? wk_find(&s->wk[wi], q->sb) : NULL;
    if (b && b->inflight && e->kind == EV_REQ_DONE)
        b->inflight--;
    if (e->kind == EV_REQ_DONE && (unsigned)e->a == q->attempt)
        q->running = false;
    if (e->gen != d->gen || !d->alive || (unsigned)e->a != q->attempt)
        return; /* its data plane died: answered then */
    if (!q->in_core) {
        dst_failf(
            s, "request %" PRIu64 " (%s at dp%d) ended by its sandbox after the core answered it",
            q->id, q->fn, q->dp);
        return;
    }
    if (e->kind == EV_REQ_FAIL) {
        dp_core_on_upstream_error(d->core, &q->core, true, false, "connection refused");
        return;
    }
    if (!b || !reachable(s, N_WORKER, wi)) {
        dp_core_on_upstream_error(d->core, &q->core, false, true, "connection reset");
        return;
    }
    q->in_core = false;
    req_answer(s, q, 200, "ok");
    if (s->o->bug == BUG_DOUBLE_ANSWER && q->id % 97 == 13)
        req_answer(s, q, 200, "ok (injected bug: answered again)");
    dp_core_on_done(d->core, &q->core);
}

/* ---- messages arriving (each receiver as its adapter) ----------------------------------- */

static void arrive_worker(struct sim *s, struct rpc *r)
{
    struct sim_worker *w = &s->wk[r->peer];
    if (r->kind == R_CREATE) { /* it takes 5 ms - 2 s; 1 in 10 fails */
        r->peer_inc = w->boot;
        at(s, s->now + 5000 + dst_rnd(s, 2000000), EV_CREATED, 0, 0, r);
        return;
    }
    /* R_DESTROY */
    struct wsb *b = wk_find(w, r->id);
    if (!b) {
        rpc_reply(s, r, false, "404: no such sandbox");
        return;
    }
    for (size_t i = 0; i < s->nreqs; i++) { /* a live DP's request runs on it */
        struct sreq *q = s->reqs[i];
        if (q->in_core && q->running && s->dp[q->dp].alive && q->dp_gen == s->dp[q->dp].gen &&
            strcmp(q->sb, b->id) == 0) {
            s->st_busy_deletes++;
            dst_tracef(s, "busy delete: %s runs req %" PRIu64 " of dp%d", b->id, q->id, q->dp);
            break;
        }
    }
    if (s->o->bug != BUG_LEAK_DELETE)
        wk_remove(w, b);
    rpc_reply(s, r, true, NULL);
}

static void created_on_worker(struct sim *s, struct rpc *r)
{
    struct sim_worker *w = &s->wk[r->peer];
    if (!w->alive || w->boot != r->peer_inc) {
        rpc_reply(s, r, false, "connection reset");
        return;
    }
    if (dst_chance(s, 100)) {
        s->st_create_fail++;
        rpc_reply(s, r, false, "503: create failed: image pull: simulated failure");
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->sbs = dg_xrealloc(w->sbs, w->cap * sizeof(*w->sbs));
    }
    char id[48], ep[48];
    snprintf(id, sizeof(id), "%s-b%u-%u", w->name, w->boot, w->next_sb);
    snprintf(ep, sizeof(ep), "10.0.%d.1:%u", w->idx, 10000 + w->next_sb++);
    w->sbs[w->n++] = (struct wsb){dg_xstrdup(id), dg_xstrdup(r->fn), dg_xstrdup(ep), 0};
    dst_tracef(s, "worker %s created %s for %s", w->name, id, r->fn);
    r->r_id = dg_xstrdup(id);
    r->r_ep = dg_xstrdup(ep);
    rpc_reply(s, r, true, NULL);
}

static void arrive_dp(struct sim *s, struct rpc *r)
{
    struct dp_core *core = s->dp[r->peer].core;
    if (r->kind == R_PUSH) { /* as src/dp/api.c api_put_endpoints (the batch) */
        for (size_t i = 0; i < r->npush; i++) {
            struct push_fn *p = &r->push[i];
            bool created;
            struct dp_function *f = dp_core_function_get(core, p->name, strlen(p->name), &created);
            if (created) { /* the core seeds it from its address: from the name instead */
                uint64_t h = s->seed ^ ((uint64_t)r->peer << 40);
                for (const char *c = p->name; *c; c++)
                    h = (h ^ (uint8_t)*c) * 0x100000001b3ULL;
                f->lb.rng = h | 1;
            }
            f->concurrency = (uint32_t)p->concurrency;
            dp_core_set_endpoints(core, f, p->eps, p->neps);
            for (unsigned k = 0; k < p->nex; k++)
                dp_core_on_exited(core, f, p->ex_id[k], p->ex_reason[k]);
            dp_core_set_error(core, f, p->error);
        }
        if (r->resync) { /* a full push: the functions not in it go */
            struct dg_strmap keep = {0};
            for (size_t i = 0; i < r->npush; i++)
                dg_strmap_put(&keep, dg_str_c(r->push[i].name), r->push[i].name);
            dp_core_remove_others(core, &keep);
            dg_strmap_free(&keep);
        }
        rpc_reply(s, r, true, NULL);
    } else if (r->kind == R_FORGET) {
        struct dp_function *f = dp_core_function_find(core, r->fn, strlen(r->fn));
        unsigned running = f ? dp_core_remove_function(core, f) : 0;
        rpc_reply(s, r, f && !running, f ? "409: requests running" : "404");
    } else { /* R_DRAIN */
        struct dp_function *f = dp_core_function_find(core, r->fn, strlen(r->fn));
        if (!f) {
            rpc_reply(s, r, false, "404: function not registered");
            return;
        }
        const char **ids = dg_xcalloc(r->push[0].neps ? r->push[0].neps : 1, sizeof(*ids));
        for (size_t i = 0; i < r->push[0].neps; i++)
            ids[i] = r->push[0].eps[i].id;
        dp_core_drain(core, f, ids, r->push[0].neps, r); /* may answer now */
        free(ids);
    }
}

static void arrive_cp(struct sim *s, struct rpc *r)
{
    struct cp_core *c = s->cp;
    struct dg_err err = {0};
    if (r->kind == R_WK_HB) { /* src/cp/api.c api_worker */
        struct cp_worker *w = cp_core_on_worker_heartbeat(c, &r->wr, &err);
        if (r->wr.listed)
            dst_tracef(s, "worker %s listed %zu sandboxes", r->wr.name, r->wr.nsandboxes);
        r->resync = w && w->need_list;
        rpc_reply(s, r, w != NULL, err.msg);
    } else if (r->kind == R_DP_HB) { /* api_dataplane */
        struct sim_dp *d = &s->dp[r->peer];
        bool fresh;
        struct cp_dp *cd =
            cp_core_on_dp_heartbeat(c, d->name, d->api, d->proxy, CP_FROM_PEER, &fresh, &err);
        if (cd && (fresh || r->resync || cd->need_sync))
            cp_core_dp_resync(c, cd);
        rpc_reply(s, r, cd != NULL, err.msg);
    } else if (r->kind == R_METRIC) { /* api_metrics */
        struct cp_dp *cd = cp_core_dp(c, s->dp[r->peer].name);
        if (!cd) {
            rpc_reply(s, r, false, "404: data plane not registered");
            return;
        }
        for (size_t i = 0; i < r->nitems; i++) {
            struct cp_fn *f = cp_core_fn(c, dg_str_c(r->items[i].name));
            if (f)
                cp_core_on_metric(c, cd, f, r->items[i].inflight);
        }
        rpc_reply(s, r, true, NULL);
    } else { /* R_EXITED: api_sandbox_exited */
        struct cp_fn *f = cp_core_fn(c, dg_str_c(r->fn));
        bool known = f && cp_core_on_exited(c, f, r->id, "OOM-killed: memory limit (simulated)");
        rpc_reply(s, r, known, "404");
    }
}

static void arrive(struct sim *s, struct rpc *r)
{
    bool from_cp = rpc_from_cp(r);
    enum node_kind to = from_cp ? rpc_peer_kind(r) : N_CP;
    int to_i = from_cp ? r->peer : 0;
    bool up = to == N_CP ? s->cp != NULL : to == N_WORKER ? s->wk[to_i].alive : s->dp[to_i].alive;
    if (!up) { /* it died meanwhile */
        rpc_answer_at(s, r, s->now + latency(s), false, "connection reset");
        return;
    }
    if (!reachable(s, to, to_i)) {
        s->st_lost++;
        rpc_answer_at(s, r, r->sent + RPC_TIMEOUT_US, false, "timeout");
        return;
    }
    dst_tracef(s, "arrive %s at %s%d", rpc_names[r->kind],
               to == N_CP       ? "cp"
               : to == N_WORKER ? "w"
                                : "dp",
               to_i);
    if (to == N_CP)
        arrive_cp(s, r);
    else if (to == N_WORKER)
        arrive_worker(s, r);
    else
        arrive_dp(s, r);
}

/* ---- answers back at their senders ------------------------------------------------------ */

static void reply(struct sim *s, struct rpc *r)
{
    s->rpcs_out--;
    dst_tracef(s, "reply %s %s%d: %s", rpc_names[r->kind],
               rpc_peer_kind(r) == N_WORKER ? "w" : "dp", r->peer, r->ok ? "ok" : r->r_err);
    if (rpc_from_cp(r) && (!s->cp || r->cp_gen != s->cp_gen)) {
        rpc_free(r); /* the leader that asked is gone: nobody waits */
        return;
    }
    struct cp_core *c = s->cp;
    switch (r->kind) {
    case R_CREATE: { /* scaling.c created() */
        const char *reason = r->ok ? NULL : r->r_err;
        /* an answer with a status is a refusal (call_finish's DG_E_REFUSED): nothing was made;
         * any other error is a lost answer: the sandbox may exist */
        bool refused = reason && reason[0] >= '1' && reason[0] <= '9';
        if (reason && strncmp(reason, "503: create failed: ", 20) == 0)
            reason += 20;
        if (reason && !refused)
            cp_core_on_create_lost(c, r->s, reason);
        else
            cp_core_on_created(c, r->s, r->ok ? r->r_id : NULL, r->r_ep, reason);
        break;
    }
    case R_DESTROY:
        if (r->s)
            cp_core_on_deleted(c, r->s, r->ok ? NULL : r->r_err);
        break;
    case R_DRAIN:
        drain_step(s, r->d);
        break;
    case R_WK_HB: {
        struct sim_worker *w = &s->wk[r->peer];
        if (w->alive && w->boot == r->peer_inc) /* lib/heartbeat.c: lists after a failure */
            w->list_next = r->ok ? r->resync : true;
        break;
    }
    case R_DP_HB: { /* lib/heartbeat.c: after a failure the next beat says "resync" */
        struct sim_dp *d = &s->dp[r->peer];
        if (d->alive && d->gen == r->peer_inc)
            d->resync = !r->ok;
        break;
    }
    case R_PUSH: /* scaling.c push_answered */
        if (!r->ok)
            cp_core_on_dp_push_failed(c, s->dp[r->peer].name);
        break;
    case R_FORGET: /* scaling.c forgotten */
        if (!r->ok && (!r->r_err || strncmp(r->r_err, "404", 3) != 0))
            cp_core_on_dp_push_failed(c, s->dp[r->peer].name);
        break;
    default:
        break;
    }
    rpc_free(r);
}

/* ---- events ------------------------------------------------------------------------------ */

static void dp_heartbeat(struct sim *s, struct sim_dp *d)
{
    struct rpc *r = rpc_new(R_DP_HB, d->idx, s->cp_gen);
    r->peer_inc = d->gen;
    r->resync = d->resync;
    rpc_send(s, r);
}

static void run_event(struct sim *s, const struct ev *e)
{
    switch (e->kind) {
    case EV_ARRIVE:
        arrive(s, e->p);
        break;
    case EV_REPLY:
        reply(s, e->p);
        break;
    case EV_CREATED:
        created_on_worker(s, e->p);
        break;
    case EV_CP_CRON: /* src/cp/main.c on_cron */
        if (!s->cp || e->gen != s->cp_gen)
            break;
        cp_core_check_peers(s->cp, SILENT_MS);
        cp_core_tick(s->cp, s->cp_slot++ % CP_TICK_SLOTS);
        at(s, s->now + CRON_US, EV_CP_CRON, 0, s->cp_gen, NULL);
        break;
    case EV_CP_SOON:
        if (!s->cp || e->gen != s->cp_gen)
            break;
        if (e->a == CP_SOON_PUSH)
            cp_core_flush_pushes(s->cp);
        else if (e->a == CP_SOON_SCALE_DOWN)
            cp_core_scale_downs(s->cp);
        else
            cp_core_capacity_freed(s->cp);
        break;
    case EV_CP_UP:
        if (!s->cp && e->gen == s->cp_gen) {
            dst_tracef(s, "control plane restores (life %" PRIu64 ")", s->cp_gen);
            dst_cp_restore(s);
        }
        break;
    case EV_DP_CRON:
    case EV_DP_REPORT:
    case EV_DP_HB: {
        struct sim_dp *d = &s->dp[e->a];
        if (!d->alive || d->gen != e->gen)
            break;
        if (e->kind == EV_DP_CRON) {
            dp_core_tick(d->core);
            at(s, s->now + CRON_US, EV_DP_CRON, d->idx, d->gen, NULL);
        } else if (e->kind == EV_DP_REPORT) {
            dp_core_report_due(d->core);
        } else {
            dp_heartbeat(s, d);
            at(s, s->now + HB_US, EV_DP_HB, d->idx, d->gen, NULL);
        }
        break;
    }
    case EV_WK_HB: {
        struct sim_worker *w = &s->wk[e->a];
        if (!w->alive || w->boot != e->gen)
            break;
        wk_heartbeat(s, w);
        at(s, s->now + HB_US, EV_WK_HB, w->idx, w->boot, NULL);
        break;
    }
    case EV_REQ_DONE:
    case EV_REQ_FAIL:
        req_done(s, e);
        break;
    case EV_WK_UP:
        if (!s->wk[e->a].alive && s->wk[e->a].boot == e->gen)
            dst_wk_start(s, &s->wk[e->a]);
        break;
    case EV_DP_UP:
        if (!s->dp[e->a].alive && s->dp[e->a].gen == e->gen)
            dst_dp_start(s, &s->dp[e->a]);
        break;
    }
}

/* Run every event up to `until` (the clock then stands there). */
void dst_run_until(struct sim *s, uint64_t until)
{
    while (s->nheap && s->heap[0].t <= until && !s->fail[0]) {
        struct ev e = ev_pop(s);
        if (e.t > s->now)
            s->now = e.t;
        run_event(s, &e);
    }
    if (until > s->now)
        s->now = until;
}

/* ---- a run's world ---------------------------------------------------------------------------- */

void dst_sim_init(struct sim *s, struct opts *o, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    s->o = o;
    s->seed = seed;
    s->rng = seed;
    s->now = 1000000;
    s->nwk = 2 + (int)dst_rnd(s, MAX_WORKERS - 1);
    s->ndp = 1 + (int)dst_rnd(s, MAX_DPS);
    for (int i = 0; i < s->nwk; i++) {
        struct sim_worker *w = &s->wk[i];
        w->idx = i;
        snprintf(w->name, sizeof(w->name), "w%d", i);
        snprintf(w->address, sizeof(w->address), "10.0.%d.1:10010", i);
        w->res.cpu_milli = 1000 * (int64_t)(2 + dst_rnd(s, 6));
        w->res.memory_mib = 1024 * (int64_t)(2 + dst_rnd(s, 6));
        w->res.cpu_overcommit = dst_rnd(s, 2) ? 1.0 : 2.0;
        w->res.min_cpu_milli = dst_rnd(s, 2) ? 0 : 250;
        w->res.min_memory_mib = dst_rnd(s, 2) ? 0 : 128;
        dst_wk_start(s, w);
    }
    for (int i = 0; i < s->ndp; i++) {
        struct sim_dp *d = &s->dp[i];
        d->idx = i;
        d->sim = s;
        snprintf(d->name, sizeof(d->name), "dp%d", i);
        snprintf(d->api, sizeof(d->api), "10.1.%d.1:9091", i);
        snprintf(d->proxy, sizeof(d->proxy), "10.1.%d.1:8080", i);
        dst_dp_start(s, d);
    }
    cp_start(s);
}

void dst_sim_free(struct sim *s)
{
    while (s->nheap) { /* what is still in flight */
        struct ev e = ev_pop(s);
        if (e.kind == EV_ARRIVE || e.kind == EV_REPLY || e.kind == EV_CREATED)
            rpc_free(e.p);
    }
    free(s->heap);
    for (int i = 0; i < s->ndp; i++)
        if (s->dp[i].core)
            dp_core_free(s->dp[i].core);
    if (s->cp) {
        for (size_t i = 0; i < s->ndrains; i++) {
            free(s->drains[i]->victims);
            free(s->drains[i]);
        }
        cp_core_free(s->cp);
        free(s->cp);
    }
    free(s->drains);
    for (int i = 0; i < s->nwk; i++) {
        while (s->wk[i].n)
            wk_remove(&s->wk[i], &s->wk[i].sbs[0]);
        free(s->wk[i].sbs);
    }
    for (size_t i = 0; i < s->nreqs; i++)
        free(s->reqs[i]);
    free(s->reqs);
}
