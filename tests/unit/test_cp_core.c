/*
 * test_cp_core.c: the control plane's core (src/cp/cp_core.c) driven by events, with a fake
 * effects table that records what the core asks of the world and a fake clock: scale from
 * zero on a metric, a failed create recorded and pushed, a worker lost while creating, a
 * scale-down that drains before it deletes, a deleted function freed once, and the workers'
 * accounting equal to the sandboxes placed on them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_core.h"
#include "dirigent/log.h"

#define MAXREC 64

/* What the core asked for, in order. */
struct fake {
    uint64_t now;
    struct cp_sandbox *creates[MAXREC];
    size_t ncreates;
    struct {
        struct cp_worker *w;
        char id[64];
        struct cp_sandbox *s;
    } destroys[MAXREC];
    size_t ndestroys;
    struct cp_drain *drains[MAXREC];
    size_t ndrains;
    unsigned pushes;
    struct {
        char name[64];
        unsigned ready;
        char error[256];
    } pushed[MAXREC]; /* the last push's items */
    size_t npushed;
    char forgotten[MAXREC][64];
    size_t nforgotten;
    struct cp_dp *resynced; /* the last push_dp's data plane, and its item count */
    size_t nresync_items;
    unsigned resyncs;
    bool push_soon, capacity_soon, scale_down_soon;
    unsigned persisted, connected, disconnected;
};

static uint64_t f_now(void *ud)
{
    return ((struct fake *)ud)->now;
}

static void f_soon(void *ud, enum cp_soon what)
{
    struct fake *k = ud;
    if (what == CP_SOON_PUSH)
        k->push_soon = true;
    else if (what == CP_SOON_SCALE_DOWN)
        k->scale_down_soon = true;
    else
        k->capacity_soon = true;
}

static void f_create(void *ud, struct cp_sandbox *s)
{
    struct fake *k = ud;
    assert_true(k->ncreates < MAXREC);
    k->creates[k->ncreates++] = s;
}

static void f_destroy(void *ud, struct cp_worker *w, const char *id, struct cp_sandbox *s)
{
    struct fake *k = ud;
    assert_true(k->ndestroys < MAXREC);
    k->destroys[k->ndestroys].w = w;
    snprintf(k->destroys[k->ndestroys].id, sizeof(k->destroys[0].id), "%s", id);
    k->destroys[k->ndestroys++].s = s;
}

static void f_drain(void *ud, struct cp_drain *d)
{
    struct fake *k = ud;
    assert_true(k->ndrains < MAXREC);
    k->drains[k->ndrains++] = d;
}

static void f_push(void *ud, const struct cp_push_item *items, size_t n)
{
    struct fake *k = ud;
    k->pushes++;
    k->npushed = n;
    for (size_t i = 0; i < n && i < MAXREC; i++) {
        unsigned ready = 0;
        for (const struct cp_sandbox *s = items[i].f->sbs; s; s = s->next)
            ready += s->state == CP_SB_READY;
        snprintf(k->pushed[i].name, sizeof(k->pushed[i].name), "%s", items[i].f->spec.name);
        k->pushed[i].ready = ready;
        snprintf(k->pushed[i].error, sizeof(k->pushed[i].error), "%s",
                 items[i].error ? items[i].error : "");
    }
}

static void f_push_dp(void *ud, struct cp_dp *d, const struct cp_push_item *items, size_t n)
{
    struct fake *k = ud;
    k->resyncs++;
    k->resynced = d;
    k->nresync_items = n;
}

static void f_forget(void *ud, const char *name)
{
    struct fake *k = ud;
    snprintf(k->forgotten[k->nforgotten++], 64, "%s", name);
}

static int f_connect(void *ud, enum cp_peer kind, void **io, const char *address,
                     struct dg_err *err)
{
    struct fake *k = ud;
    if (strchr(address, ':') == NULL)
        return dg_err_set(err, DG_E_INVAL, "address '%s': expected HOST:PORT", address);
    if (!*io) {
        *io = dg_xcalloc(1, 1);
        k->connected++;
    }
    return 0;
}

static void f_disconnect(void *ud, enum cp_peer kind, void *io)
{
    ((struct fake *)ud)->disconnected++;
    free(io);
}

static void f_persist(void *ud, enum cp_peer kind, const void *peer)
{
    ((struct fake *)ud)->persisted++;
}

struct env {
    struct fake k;
    struct cp_core c;
};

static struct env *env_new_q(const struct cp_quotas *q)
{
    struct env *e = calloc(1, sizeof(*e));
    e->k.now = 1000000;
    struct cp_effects fx = {.ud = &e->k,
                            .now_ms = f_now,
                            .wall_ms = f_now,
                            .soon = f_soon,
                            .create = f_create,
                            .destroy = f_destroy,
                            .drain = f_drain,
                            .push = f_push,
                            .push_dp = f_push_dp,
                            .forget_fn = f_forget,
                            .connect = f_connect,
                            .disconnect = f_disconnect,
                            .persist = f_persist};
    struct cp_core_config cfg = {.placement = CP_PLACE_ROUND_ROBIN, .seed = 1};
    if (q)
        cfg.quotas = *q;
    cp_core_init(&e->c, &cfg, &fx);
    return e;
}

static struct env *env_new(void)
{
    return env_new_q(NULL);
}

static void env_free(struct env *e)
{
    cp_core_free(&e->c);
    assert_int_equal(e->k.connected, e->k.disconnected); /* every connection closed once */
    free(e);
}

/* Run what the core asked to run "soon" (the daemon's 0 ms timers). */
static void settle(struct env *e)
{
    while (e->k.push_soon || e->k.capacity_soon) {
        if (e->k.capacity_soon) {
            e->k.capacity_soon = false;
            cp_core_capacity_freed(&e->c);
        }
        if (e->k.push_soon) {
            e->k.push_soon = false;
            cp_core_flush_pushes(&e->c);
        }
    }
}

static struct cp_worker *worker(struct env *e, const char *name, int64_t cpu, int64_t mem)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%zu", strlen(name) + 1000);
    struct cp_worker_report r = {
        .name = name, .address = addr, .res = {.cpu_milli = cpu, .memory_mib = mem}};
    struct dg_err err = {0};
    struct cp_worker *w = cp_core_on_worker_heartbeat(&e->c, &r, &err);
    assert_non_null(w);
    return w;
}

static struct cp_dp *dataplane(struct env *e, const char *name)
{
    bool fresh;
    struct dg_err err = {0};
    struct cp_dp *d = cp_core_on_dp_heartbeat(&e->c, name, "127.0.0.1:9", "127.0.0.1:8",
                                              CP_FROM_PEER, &fresh, &err);
    assert_non_null(d);
    assert_true(fresh);
    return d;
}

static struct cp_fn *function(struct env *e, const char *name, int64_t cpu, int64_t mem, int lo)
{
    struct cp_fn_spec spec = {0};
    snprintf(spec.name, sizeof(spec.name), "%s", name);
    spec.image = strdup("/bin/true");
    spec.port = 80;
    spec.cpu_milli = cpu;
    spec.memory_mib = mem;
    spec.concurrency = 1;
    spec.lower_bound = lo;
    spec.upper_bound = 100;
    return cp_core_fn_register(&e->c, &spec);
}

/* The create i answered: its id "sb<i>" at an endpoint. */
static void create_ok(struct env *e, size_t i)
{
    char id[32], ep[32];
    snprintf(id, sizeof(id), "sb%zu", i);
    snprintf(ep, sizeof(ep), "10.0.0.%zu:80", i + 1);
    cp_core_on_created(&e->c, e->k.creates[i], id, ep, NULL);
}

/* The workers' reservations are the sum of what their sandboxes take. */
static void check_accounting(struct env *e)
{
    for (struct cp_worker *w = e->c.workers; w; w = w->next) {
        int64_t cpu = 0, mem = 0;
        unsigned n = 0;
        for (struct cp_fn *f = e->c.fns; f; f = f->next)
            for (struct cp_sandbox *s = f->sbs; s; s = s->next)
                if (s->worker == w) {
                    int64_t tc, tm;
                    cp_node_take(&w->node, f->spec.cpu_milli, f->spec.memory_mib, &tc, &tm);
                    cpu += tc;
                    mem += tm;
                    n++;
                }
        assert_int_equal(w->node.cpu_used, cpu);
        assert_int_equal(w->node.mem_used, mem);
        assert_int_equal(w->node.sandboxes, n);
    }
}

static void test_scale_from_zero(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 4000, 4096);
    struct cp_dp *d = dataplane(e, "dp1");
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    settle(e);
    assert_int_equal(e->k.pushes, 1); /* the DPs learn it with its empty list */
    assert_int_equal(e->k.ncreates, 0);
    /* the first request: the DP reports it, the core scales at once */
    cp_core_on_metric(&e->c, d, f, 1);
    assert_int_equal(e->k.ncreates, 1);
    assert_int_equal(f->creating, 1);
    assert_ptr_equal(e->k.creates[0]->fn, f);
    check_accounting(e);
    /* a second report while creating decides nothing more */
    cp_core_on_metric(&e->c, d, f, 2);
    assert_int_equal(e->k.ncreates, 1);
    create_ok(e, 0);
    assert_int_equal(f->ready, 1);
    assert_int_equal(f->creating, 0);
    settle(e);
    assert_int_equal(e->k.npushed, 1);
    assert_string_equal(e->k.pushed[0].name, "hello");
    assert_int_equal(e->k.pushed[0].ready, 1);
    assert_string_equal(e->k.pushed[0].error, "");
    check_accounting(e);
    env_free(e);
}

static void test_create_fails(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 4000, 4096);
    struct cp_dp *d = dataplane(e, "dp1");
    struct cp_fn *f = function(e, "bad", 100, 128, 0);
    settle(e);
    cp_core_on_metric(&e->c, d, f, 1);
    assert_int_equal(e->k.ncreates, 1);
    cp_core_on_created(&e->c, e->k.creates[0], NULL, NULL, "image not found");
    assert_int_equal(f->creating, 0);
    assert_null(f->sbs);
    assert_true(cp_fn_error_of(f)->set);
    assert_string_equal(cp_fn_error_of(f)->reason, "image not found");
    assert_string_equal(cp_fn_error_of(f)->worker, "w1");
    assert_string_equal(cp_fn_state(cp_fn_error_of(f), f->ready, f->creating, f->desired),
                        "failing");
    settle(e); /* pushed with the reason: the DP answers its queued requests */
    assert_int_equal(e->k.npushed, 1);
    assert_string_equal(e->k.pushed[0].error, "image not found");
    check_accounting(e); /* the reservation went with it */
    /* the next tick tries again; a create that works clears the error */
    e->k.now += 2000;
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(e->k.ncreates, 2);
    create_ok(e, 1);
    assert_false(cp_fn_error_of(f)->set);
    settle(e);
    assert_string_equal(e->k.pushed[0].error, "");
    env_free(e);
}

static void test_worker_lost_while_creating(void **state)
{
    struct env *e = env_new();
    struct cp_worker *w1 = worker(e, "w1", 4000, 4096);
    struct cp_worker *w2 = worker(e, "w2", 4000, 4096);
    struct cp_dp *d = dataplane(e, "dp1");
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    cp_core_on_metric(&e->c, d, f, 1);
    assert_int_equal(e->k.ncreates, 1);
    struct cp_worker *first = e->k.creates[0]->worker;
    struct cp_worker *other = first == w1 ? w2 : w1;
    /* its worker goes silent: the create is replaced on the other worker at once */
    e->k.now += 16000;
    struct cp_worker_report r = {.name = other->name, .address = other->address};
    r.res = other->res;
    assert_non_null(cp_core_on_worker_heartbeat(&e->c, &r, &(struct dg_err){0}));
    cp_core_check_peers(&e->c, 15000);
    assert_false(first->node.schedulable);
    assert_true(other->node.schedulable);
    assert_int_equal(e->k.ncreates, 2);
    assert_ptr_equal(e->k.creates[1]->worker, other);
    assert_int_equal(f->creating, 1);
    check_accounting(e);
    /* the late answer from the lost worker: deleted there, never counted */
    create_ok(e, 0);
    assert_int_equal(e->k.ndestroys, 1);
    assert_ptr_equal(e->k.destroys[0].w, first);
    assert_string_equal(e->k.destroys[0].id, "sb0");
    assert_null(e->k.destroys[0].s); /* no answer wanted */
    assert_int_equal(f->ready, 0);
    create_ok(e, 1);
    assert_int_equal(f->ready, 1);
    check_accounting(e);
    env_free(e);
}

/* Deleting functions in any order (the head, the middle, the tail of the core's list) removes
 * each from the list in O(1) and leaves the rest linked: every DP is told to forget each, and
 * the list holds exactly the others (deleting 90,000 of 150,000 was quadratic with a walk). */
static void test_delete_any_order(void **state)
{
    struct env *e = env_new();
    dataplane(e, "dp1");
    const char *names[] = {"a", "b", "c", "d", "e", "f"};
    struct cp_fn *f[6];
    for (size_t i = 0; i < 6; i++)
        f[i] = function(e, names[i], 100, 128, 0);
    settle(e);
    size_t order[] = {5, 2, 0, 4}; /* the head (newest), the middle, the tail, the middle */
    for (size_t k = 0; k < 4; k++) {
        cp_core_fn_delete(&e->c, f[order[k]]);
        settle(e); /* its last push went out: freed */
        assert_string_equal(e->k.forgotten[k], names[order[k]]);
        assert_null(cp_core_fn_any(&e->c, dg_str_c(names[order[k]])));
    }
    assert_int_equal(e->k.nforgotten, 4);
    size_t n = 0;
    for (struct cp_fn *g = e->c.fns; g; g = g->next, n++)
        assert_ptr_equal(*g->pprev, g);
    assert_int_equal(n, 2);
    assert_ptr_equal(e->c.fns, f[3]);
    assert_ptr_equal(e->c.fns->next, f[1]);
    struct cp_fn *g = function(e, "g", 100, 128, 0); /* a new head after removals */
    assert_ptr_equal(e->c.fns, g);
    assert_ptr_equal(f[3]->pprev, &g->next);
    env_free(e);
}

static void test_scale_down_drains_then_deletes(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 4000, 4096);
    dataplane(e, "dp1");
    struct cp_fn *f = function(e, "hello", 100, 128, 3);
    assert_int_equal(e->k.ncreates, 3); /* the lower bound at registration */
    for (size_t i = 0; i < 3; i++)
        create_ok(e, i);
    settle(e);
    assert_int_equal(f->ready, 3);
    cp_core_fn_set_bounds(&e->c, f, 1, 100);
    assert_int_equal(f->desired, 3); /* within the bounds: nothing to do yet */
    /* with no load, a tick after the stable window decides 1: two newest drain */
    for (int t = 0; t < 40 && e->k.ndrains == 0; t++) {
        e->k.now += 2000;
        cp_core_tick(&e->c, f->tick_slot);
    }
    assert_int_equal(e->k.ndrains, 1);
    struct cp_drain *dr = e->k.drains[0];
    assert_int_equal(dr->n, 2);
    assert_string_equal(dr->victims[0]->id, "sb2"); /* newest first */
    assert_string_equal(dr->victims[1]->id, "sb1");
    assert_int_equal(f->ready, 1);
    assert_int_equal(f->draining, 2);
    assert_int_equal(e->k.ndestroys, 0); /* not before the DPs drained them */
    settle(e);
    assert_int_equal(e->k.pushed[0].ready, 1);
    check_accounting(e); /* draining sandboxes still hold their room */
    cp_core_on_drained(&e->c, dr);
    assert_int_equal(e->k.ndestroys, 2);
    for (size_t i = 0; i < 2; i++)
        cp_core_on_deleted(&e->c, e->k.destroys[i].s, NULL);
    assert_int_equal(f->draining, 0);
    check_accounting(e);
    assert_int_equal(e->c.workers->node.sandboxes, 1);
    env_free(e);
}

/* With a budget, a tick's scale-downs wait in a queue and go out a budget at a time; a function
 * decided otherwise meanwhile is skipped, and one deleted and freed meanwhile leaves the queue. */
static void test_scale_down_budget(void **state)
{
    struct env *e = env_new();
    e->c.scale_down_budget = 2;
    worker(e, "w1", 4000, 4096);
    dataplane(e, "dp1");
    const char *names[] = {"a", "b", "c", "d", "e"};
    struct cp_fn *f[5];
    for (size_t i = 0; i < 5; i++) {
        f[i] = function(e, names[i], 100, 128, 1);
        create_ok(e, i);
    }
    settle(e);
    for (size_t i = 0; i < 5; i++)
        cp_core_fn_set_bounds(&e->c, f[i], 0, 100);
    for (int t = 0; t < 40 && !f[4]->sd_queued; t++) { /* the stable window passes */
        e->k.now += 2000;
        for (unsigned slot = 0; slot < CP_TICK_SLOTS; slot++)
            cp_core_tick(&e->c, slot);
    }
    for (size_t i = 0; i < 5; i++)
        assert_true(f[i]->sd_queued);
    assert_true(e->k.scale_down_soon);
    assert_int_equal(e->k.ndrains, 0); /* decided, not done: every function still ready */
    assert_int_equal(f[0]->ready, 1);
    cp_core_fn_set_bounds(&e->c, f[1], 1, 100); /* b wants its sandbox after all */
    cp_core_fn_delete(&e->c, f[4]);             /* e goes: drained at once, then freed */
    assert_int_equal(e->k.ndrains, 1);
    cp_core_on_drained(&e->c, e->k.drains[0]);
    cp_core_on_deleted(&e->c, e->k.destroys[0].s, NULL);
    settle(e);
    assert_null(cp_core_fn_any(&e->c, dg_str_c("e"))); /* freed while queued */
    e->k.scale_down_soon = false;
    cp_core_scale_downs(&e->c); /* a, b skipped, c: the budget of 2 */
    assert_int_equal(e->k.ndrains, 3);
    assert_ptr_equal(e->k.drains[1]->f, f[0]);
    assert_ptr_equal(e->k.drains[2]->f, f[2]);
    assert_int_equal(f[1]->ready, 1);
    assert_true(e->k.scale_down_soon); /* d still waits */
    assert_true(f[3]->sd_queued);
    e->k.scale_down_soon = false;
    cp_core_scale_downs(&e->c);
    assert_int_equal(e->k.ndrains, 4);
    assert_ptr_equal(e->k.drains[3]->f, f[3]);
    assert_false(e->k.scale_down_soon);
    assert_null(e->c.sd_head);
    for (size_t i = 1; i < 4; i++)
        cp_core_on_drained(&e->c, e->k.drains[i]);
    env_free(e);
}

static void test_fn_delete_frees_once(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 4000, 4096);
    dataplane(e, "dp1");
    struct cp_fn *f = function(e, "gone", 100, 128, 2);
    create_ok(e, 0);
    create_ok(e, 1);
    settle(e);
    cp_core_fn_delete(&e->c, f);
    assert_null(cp_core_fn(&e->c, dg_str_c("gone")));
    assert_ptr_equal(cp_core_fn_any(&e->c, dg_str_c("gone")), f); /* until drained */
    assert_int_equal(e->k.ndrains, 1);
    cp_core_on_drained(&e->c, e->k.drains[0]);
    assert_int_equal(e->k.ndestroys, 2);
    cp_core_on_deleted(&e->c, e->k.destroys[0].s, NULL);
    cp_core_on_deleted(&e->c, e->k.destroys[1].s, "connection refused");
    assert_int_equal(e->k.nforgotten, 0); /* its last push is still to go */
    settle(e);
    assert_int_equal(e->k.nforgotten, 1);
    assert_string_equal(e->k.forgotten[0], "gone");
    assert_null(cp_core_fn_any(&e->c, dg_str_c("gone")));
    assert_null(e->c.fns);
    check_accounting(e);
    settle(e); /* nothing more: it was freed once */
    assert_int_equal(e->k.nforgotten, 1);
    env_free(e);
}

static void test_accounting_and_capacity(void **state)
{
    struct env *e = env_new();
    struct cp_worker *w = worker(e, "w1", 300, 4096);
    struct cp_dp *d = dataplane(e, "dp1");
    struct cp_fn *f = function(e, "big", 100, 128, 0);
    struct cp_fn *g = function(e, "other", 100, 128, 0);
    cp_core_fn_set_bounds(&e->c, f, 3, 100);
    assert_int_equal(e->k.ncreates, 3);
    assert_int_equal(w->node.cpu_used, 300);
    check_accounting(e);
    /* no room left: g is unschedulable, its waiting requests hear why */
    cp_core_on_metric(&e->c, d, g, 1);
    assert_int_equal(e->k.ncreates, 3);
    assert_true(g->unschedulable);
    settle(e);
    bool told = false;
    for (size_t i = 0; i < e->k.npushed; i++)
        told |= strcmp(e->k.pushed[i].name, "other") == 0 &&
                strstr(e->k.pushed[i].error, "no capacity") != NULL;
    assert_true(told);
    /* one of f's creates fails: its room goes to g at once */
    cp_core_on_created(&e->c, e->k.creates[2], NULL, NULL, "boom");
    assert_true(e->k.capacity_soon);
    settle(e);
    assert_int_equal(e->k.ncreates, 4);
    assert_ptr_equal(e->k.creates[3]->fn, g);
    assert_false(g->unschedulable);
    check_accounting(e);
    /* a sandbox that exits by itself: replaced, the reason recorded and pushed */
    create_ok(e, 0);
    create_ok(e, 1);
    create_ok(e, 3);
    settle(e);
    assert_true(cp_core_on_exited(&e->c, g, "sb3", "OOM-killed: memory limit 128 MiB"));
    assert_int_equal(g->nexited, 1);
    assert_int_equal(e->k.ncreates, 5); /* requests still waiting: replaced at once */
    settle(e);
    assert_int_equal(g->nexited, 0);
    assert_string_equal(cp_fn_error_of(g)->reason, "sandbox sb3 OOM-killed: memory limit 128 MiB");
    check_accounting(e);
    env_free(e);
}

static void test_adopt_after_restart(void **state)
{
    struct env *e = env_new();
    struct dg_err err = {0};
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    struct cp_worker *w = cp_core_worker_restore(&e->c, "w1", "127.0.0.1:1", "", &err);
    assert_non_null(w);
    assert_int_equal(e->k.persisted, 0); /* read back from the store: not written again */
    assert_true(w->need_list);
    assert_false(w->node.schedulable);
    struct cp_sandbox_report sb = {.id = "old1", .function = "hello", .endpoint = "10.0.0.9:80"};
    struct cp_worker_report r = {.name = "w1",
                                 .address = "127.0.0.1:1",
                                 .subnet = "10.0.0.0/24",
                                 .res = {.cpu_milli = 4000, .memory_mib = 4096},
                                 .listed = true,
                                 .sandboxes = &sb,
                                 .nsandboxes = 1};
    assert_ptr_equal(cp_core_on_worker_heartbeat(&e->c, &r, &err), w);
    assert_false(w->need_list);
    assert_true(w->node.schedulable);
    assert_int_equal(f->ready, 1);
    assert_int_equal(f->desired, 1);
    check_accounting(e);
    /* the same list again adopts nothing twice */
    cp_core_on_worker_heartbeat(&e->c, &r, &err);
    assert_int_equal(f->ready, 1);
    /* no load, but the window is empty: no scale-down within one stable window */
    e->k.now += 2000;
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(e->k.ndrains, 0);
    /* a bad address changes nothing */
    r.address = "nowhere";
    assert_null(cp_core_on_worker_heartbeat(&e->c, &r, &err));
    assert_string_equal(w->address, "127.0.0.1:1");
    env_free(e);
}

static void test_dp_lost(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 4000, 4096);
    struct cp_dp *d1 = dataplane(e, "dp1");
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    cp_core_set_metric(&e->c, d1, f, 5);
    assert_true(cp_fn_sample(f) == 5);
    e->k.now += 20000;
    assert_int_equal(cp_core_check_peers(&e->c, 15000), 1);
    assert_null(e->c.dps);
    assert_true(cp_fn_sample(f) == 0); /* its reports stop counting */
    assert_int_equal(e->k.disconnected, 1);
    env_free(e);
}

/* A worker's beat with its count of sandboxes; `list` (n ids of "hello") when listed. */
static void beat(struct env *e, const char *w, size_t count, const char *const *list, size_t n,
                 bool listed)
{
    struct cp_sandbox_report sbs[8];
    for (size_t i = 0; i < n; i++)
        sbs[i] = (struct cp_sandbox_report){list[i], "hello", "10.0.0.9:80"};
    struct cp_worker_report r = {.name = w,
                                 .address = "127.0.0.1:1002",
                                 .res = {.cpu_milli = 4000, .memory_mib = 4096},
                                 .has_count = true,
                                 .count = count,
                                 .listed = listed,
                                 .sandboxes = sbs,
                                 .nsandboxes = n};
    struct dg_err err = {0};
    assert_non_null(cp_core_on_worker_heartbeat(&e->c, &r, &err));
}

static bool has_sandbox(const struct cp_fn *f, const char *id)
{
    for (const struct cp_sandbox *s = f->sbs; s; s = s->next)
        if (s->id && strcmp(s->id, id) == 0)
            return true;
    return false;
}

/* A count that differs asks for the list; the list adopts what the CP did not know and drops
 * ready sandboxes known before the ask that it lacks (an exit report lost), not those that
 * became known after the ask (the listing may predate them). */
static void test_count_asks_for_list(void **state)
{
    struct env *e = env_new();
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    struct cp_worker *w = worker(e, "w1", 4000, 4096);
    w->reconstructing = true; /* as if restored: adopt() takes sandboxes on its host */
    assert_true(cp_core_adopt(&e->c, w, "hello", "a1", "127.0.0.1:80", NULL));
    assert_true(cp_core_adopt(&e->c, w, "hello", "b2", "127.0.0.1:81", NULL));
    w->reconstructing = false;
    beat(e, "w1", 2, NULL, 0, false); /* as the CP knows: nothing asked */
    assert_false(w->need_list);
    /* a create of a previous leader's completed after the worker listed: 3 there */
    beat(e, "w1", 3, NULL, 0, false);
    assert_true(w->need_list);
    const char *three[] = {"a1", "b2", "x9"};
    beat(e, "w1", 3, three, 3, true);
    assert_true(w->need_list); /* a listing shows the delete done */
    /* this CP did not ask for x9 and is not reconstructing: refused, deleted there */
    assert_int_equal(f->ready, 2);
    assert_false(has_sandbox(f, "x9"));
    assert_int_equal(e->k.ndestroys, 1);
    assert_string_equal(e->k.destroys[0].id, "x9");
    assert_null(e->k.destroys[0].s);
    const char *both[] = {"a1", "b2"};
    beat(e, "w1", 2, both, 2, true); /* deleted: no longer listed */
    assert_int_equal(w->ndeleting, 0);
    assert_false(w->need_list);
    /* a1 exited and its report was lost */
    beat(e, "w1", 1, NULL, 0, false);
    assert_true(w->need_list);
    /* c3 became known after the ask (a create answered): a listing lacking it keeps it */
    w->reconstructing = true;
    assert_true(cp_core_adopt(&e->c, w, "hello", "c3", "127.0.0.1:83", NULL));
    w->reconstructing = false;
    const char *b2[] = {"b2"};
    beat(e, "w1", 1, b2, 1, true);
    assert_false(w->need_list);
    assert_false(has_sandbox(f, "a1"));
    assert_true(has_sandbox(f, "b2"));
    assert_true(has_sandbox(f, "c3"));
    assert_int_equal(f->ready, 2);
    check_accounting(e);
    /* a listing nobody asked for (the worker's first after a failed beat) drops nothing */
    beat(e, "w1", 1, b2, 1, true);
    assert_true(has_sandbox(f, "c3"));
    /* while a create is under way there, a count that differs asks nothing */
    struct cp_fn *x = function(e, "x", 100, 128, 1);
    assert_int_equal(x->creating, 1);
    beat(e, "w1", 7, NULL, 0, false);
    assert_false(w->need_list);
    env_free(e);
}

/* A failed push marks its data plane; a resync sends it every function, to it alone. */
static void test_dp_resync_after_failed_push(void **state)
{
    struct env *e = env_new();
    struct cp_dp *d1 = dataplane(e, "dp1");
    dataplane(e, "dp2");
    function(e, "a", 100, 128, 0);
    function(e, "b", 100, 128, 0);
    settle(e);
    cp_core_on_dp_push_failed(&e->c, "dp1");
    cp_core_on_dp_push_failed(&e->c, "gone"); /* a data plane given up meanwhile: nothing */
    assert_true(d1->need_sync);
    assert_int_equal(e->k.resyncs, 0);
    cp_core_dp_resync(&e->c, d1);
    assert_false(d1->need_sync);
    assert_int_equal(e->k.resyncs, 1);
    assert_ptr_equal(e->k.resynced, d1);
    assert_int_equal(e->k.nresync_items, 2);
    env_free(e);
}

/* A worker's heartbeat with a listing of sandboxes of `fn` (ids[i] at eps[i]). */
static struct cp_worker *listing(struct env *e, const char *w, const char *addr, const char *subnet,
                                 const char *boot, const char *fn, const char *const *ids,
                                 const char *const *eps, size_t n)
{
    struct cp_sandbox_report sbs[8];
    for (size_t i = 0; i < n; i++)
        sbs[i] = (struct cp_sandbox_report){ids[i], fn, eps[i]};
    struct cp_worker_report r = {.name = w,
                                 .address = addr,
                                 .subnet = subnet,
                                 .boot = boot,
                                 .res = {.cpu_milli = 4000, .memory_mib = 4096},
                                 .listed = true,
                                 .sandboxes = sbs,
                                 .nsandboxes = n};
    struct dg_err err = {0};
    struct cp_worker *wk = cp_core_on_worker_heartbeat(&e->c, &r, &err);
    assert_non_null(wk);
    return wk;
}

static bool destroyed(const struct env *e, const char *id)
{
    for (size_t i = 0; i < e->k.ndestroys; i++)
        if (strcmp(e->k.destroys[i].id, id) == 0)
            return true;
    return false;
}

/* The attack of issue 14: a worker (made up, or a real one) lists a sandbox of `hello` at an
 * address of its choosing. Outside a reconstruction nothing is adopted: the sandbox is refused
 * and deleted; the DPs never hear of it. */
static void test_adoption_refused_outside_reconstruction(void **state)
{
    struct env *e = env_new();
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    dataplane(e, "dp1");
    settle(e);
    unsigned pushes = e->k.pushes;
    const char *ids[] = {"evil1"}, *eps[] = {"127.0.0.1:6666"};
    struct cp_worker *w = listing(e, "fake", "127.0.0.1:6666", NULL, "b1", "hello", ids, eps, 1);
    assert_int_equal(f->ready, 0);
    assert_null(f->sbs);
    assert_true(destroyed(e, "evil1"));
    assert_int_equal(e->c.refused, 1);
    assert_true(w->need_list); /* a listing tells the delete done */
    settle(e);
    assert_int_equal(e->k.pushes, pushes); /* no list changed */
    check_accounting(e);
    env_free(e);
}

/* After a restart (restored from the store), the worker's first listing adopts the sandboxes
 * of known functions in its subnet; those outside it, of unknown functions, and anything a
 * later listing shows that this CP did not ask for are refused and deleted. */
static void test_adoption_in_reconstruction_only(void **state)
{
    struct env *e = env_new();
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    struct dg_err err = {0};
    struct cp_worker *w = cp_core_worker_restore(&e->c, "w1", "192.168.1.5:7000", "", &err);
    assert_true(w->reconstructing);
    const char *ids[] = {"in1", "out2", "host3"},
               *eps[] = {"100.64.4.7:80", "100.64.9.7:80", "192.168.1.5:80"};
    listing(e, "w1", "192.168.1.5:7000", "100.64.4.0/22", "b1", "hello", ids, eps, 3);
    assert_false(w->reconstructing);
    assert_int_equal(f->ready, 1);
    assert_true(has_sandbox(f, "in1"));
    assert_true(destroyed(e, "out2"));  /* outside 100.64.4.0/22 */
    assert_true(destroyed(e, "host3")); /* a subnet said: the host is not in it */
    struct cp_worker *w3 = cp_core_worker_restore(&e->c, "w3", "192.168.1.6:7000", "", &err);
    const char *ids2[] = {"nofn"}, *eps2[] = {"192.168.1.6:80"};
    listing(e, "w3", "192.168.1.6:7000", NULL, "b1", "gone", ids2, eps2, 1);
    assert_true(destroyed(e, "nofn")); /* no such function */
    assert_int_equal(w3->node.sandboxes, 0);
    /* the second listing: a new sandbox nobody asked for is refused */
    const char *ids3[] = {"in1", "late4"}, *eps3[] = {"100.64.4.7:80", "100.64.4.9:80"};
    listing(e, "w1", "192.168.1.5:7000", "100.64.4.0/22", "b1", "hello", ids3, eps3, 2);
    assert_true(destroyed(e, "late4"));
    assert_int_equal(f->ready, 1);
    assert_int_equal(e->c.refused, 4);
    check_accounting(e);
    /* no subnet said: the worker's own host (process and emulated runtimes) */
    struct cp_worker *w2 = cp_core_worker_restore(&e->c, "w2", "10.1.1.1:7000", "", &err);
    const char *ids4[] = {"p1", "p2"}, *eps4[] = {"10.1.1.1:31000", "10.1.1.2:31000"};
    listing(e, "w2", "10.1.1.1:7000", NULL, "b1", "hello", ids4, eps4, 2);
    assert_true(has_sandbox(f, "p1"));
    assert_false(has_sandbox(f, "p2"));
    assert_true(destroyed(e, "p2"));
    assert_int_equal(w2->node.sandboxes, 1);
    /* a subnet broader than /16 (0.0.0.0/0: "anywhere") counts as none said: its host */
    cp_core_worker_restore(&e->c, "w4", "10.2.2.2:7000", "0.0.0.0/0", &err);
    const char *ids5[] = {"q1", "q2"}, *eps5[] = {"100.64.4.1:80", "10.2.2.2:31000"};
    listing(e, "w4", "10.2.2.2:7000", "0.0.0.0/0", "b1", "hello", ids5, eps5, 2);
    assert_true(destroyed(e, "q1"));
    assert_true(has_sandbox(f, "q2"));
    env_free(e);
}

/* A listing shows a sandbox whose create answer is still on its way: kept (neither adopted nor
 * deleted) until the answer comes; listed again after. */
static void test_listing_during_create(void **state)
{
    struct env *e = env_new();
    struct cp_worker *w = worker(e, "w1", 4000, 4096);
    struct cp_fn *f = function(e, "hello", 100, 128, 1);
    assert_int_equal(f->creating, 1);
    const char *ids[] = {"sb0"}, *eps[] = {"127.0.0.1:80"};
    listing(e, "w1", w->address, NULL, NULL, "hello", ids, eps, 1);
    assert_int_equal(e->k.ndestroys, 0);
    assert_true(w->need_list);
    cp_core_on_created(&e->c, e->k.creates[0], "sb0", "127.0.0.1:80", NULL);
    assert_int_equal(f->ready, 1);
    listing(e, "w1", w->address, NULL, NULL, "hello", ids, eps, 1);
    assert_int_equal(e->k.ndestroys, 0);
    assert_false(w->need_list);
    check_accounting(e);
    env_free(e);
}

/* A worker under a known name with a new boot: the sandboxes of the old boot are deleted there
 * (not orphaned) and replaced. */
static void test_new_boot_deletes_old_sandboxes(void **state)
{
    struct env *e = env_new();
    listing(e, "w1", "127.0.0.1:1002", NULL, "boot-1", "hello", NULL, NULL, 0);
    struct cp_fn *f = function(e, "hello", 100, 128, 2);
    create_ok(e, 0);
    create_ok(e, 1);
    assert_int_equal(f->ready, 2);
    struct cp_worker *w =
        listing(e, "w1", "127.0.0.1:1002", NULL, "boot-2", "hello", NULL, NULL, 0);
    assert_true(destroyed(e, "sb0"));
    assert_true(destroyed(e, "sb1"));
    assert_ptr_equal(e->k.destroys[0].w, w);
    assert_int_equal(f->ready, 0);
    e->k.now += 2000;
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(f->creating, 2); /* replaced (on the restarted worker: the only one) */
    check_accounting(e);
    env_free(e);
}

/* Quotas: a function's bounds, a worker's sandboxes, the cluster's, the create rate. */
static void test_quotas(void **state)
{
    struct cp_quotas q = {.max_per_function = 5, .max_per_worker = 3, .max_total = 9};
    struct env *e = env_new_q(&q);
    worker(e, "w1", 100000, 100000);
    worker(e, "w2", 100000, 100000);
    dataplane(e, "dp1");
    assert_int_equal(cp_core_max_per_function(&e->c), 5);
    struct cp_fn *f = function(e, "big", 10, 10, 0);
    cp_core_fn_set_bounds(&e->c, f, 100, 100); /* the API refuses it; the core clamps */
    assert_int_equal(f->spec.lower_bound, 5);
    assert_int_equal(f->desired, 5);
    assert_int_equal(e->k.ncreates, 5);
    assert_int_equal(e->c.nsandboxes, 5);
    for (struct cp_worker *w = e->c.workers; w; w = w->next)
        assert_true(w->node.sandboxes <= 3);
    /* another function: the workers hold 6 of their 3 + 3: one more fits, then none */
    struct cp_fn *g = function(e, "other", 10, 10, 4);
    assert_int_equal(e->k.ncreates, 6);
    assert_int_equal(g->creating, 1);
    assert_true(g->unschedulable);
    settle(e);
    assert_non_null(strstr(cp_fn_error_of(g)->reason, "maxSandboxesPerWorker 3"));
    /* a third worker: room for g's other 3 (9 in the cluster) */
    worker(e, "w3", 100000, 100000);
    e->k.now += 2000;
    for (unsigned k = 0; k < e->c.nslots; k++)
        cp_core_tick(&e->c, k);
    assert_int_equal(e->k.ncreates, 9);
    assert_int_equal(g->creating, 4);
    /* and a fourth: room by the workers, but the cluster's quota (9) is full */
    worker(e, "w4", 100000, 100000);
    struct cp_fn *h = function(e, "third", 10, 10, 1);
    assert_int_equal(e->k.ncreates, 9);
    assert_int_equal(e->c.nsandboxes, 9);
    assert_true(h->unschedulable);
    assert_non_null(strstr(cp_fn_error_of(h)->reason, "maxSandboxes 9"));
    check_accounting(e);
    /* a restored worker's listing: a sandbox the previous leader made (it may serve requests)
     * is adopted even above a quota; nothing is created while above */
    struct dg_err err = {0};
    struct cp_worker *w5 = cp_core_worker_restore(&e->c, "w5", "127.0.0.1:5", "", &err);
    const char *ids[] = {"a1"}, *eps[] = {"127.0.0.1:80"};
    listing(e, "w5", "127.0.0.1:5", NULL, NULL, "third", ids, eps, 1);
    assert_int_equal(w5->node.sandboxes, 1);
    assert_int_equal(e->c.nsandboxes, 10);
    assert_int_equal(h->ready, 1);
    e->k.now += 2000;
    for (unsigned k = 0; k < e->c.nslots; k++)
        cp_core_tick(&e->c, k);
    assert_int_equal(e->k.ncreates, 9);
    env_free(e);
}

static void test_create_rate_limit(void **state)
{
    struct cp_quotas q = {.creates_per_worker_per_s = 3};
    struct env *e = env_new_q(&q);
    worker(e, "w1", 100000, 100000);
    dataplane(e, "dp1");
    struct cp_fn *f = function(e, "burst", 10, 10, 8);
    assert_int_equal(e->k.ncreates, 3); /* a full bucket: 3 */
    assert_false(f->unschedulable);     /* it waits for tokens, not for capacity */
    settle(e);
    assert_false(cp_fn_error_of(f)->set);
    e->k.now += 500; /* half a second: 1.5 tokens */
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(e->k.ncreates, 4);
    e->k.now += 5000; /* the bucket holds one second's worth at most */
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(e->k.ncreates, 7);
    e->k.now += 1000;
    cp_core_tick(&e->c, f->tick_slot);
    assert_int_equal(e->k.ncreates, 8);
    assert_int_equal(f->creating, 8);
    env_free(e);
}

/* A store record of an older CP has no subnet: the reconstruction's listing waits for the
 * worker's beat (which says it, and lists), deleting nothing meanwhile. */

/* Many workers (issue 16): found by name without a walk, kept in name order for round-robin,
 * and the silent ones lost (in the order they went silent) without looking at those that beat;
 * a lost worker that beats again is schedulable and can be lost again. Data planes by name. */
static void test_many_workers_indexed_and_lost(void **state)
{
    struct env *e = env_new();
    char name[32];
    for (int i = 299; i >= 0; i--) { /* registered in reverse name order */
        snprintf(name, sizeof(name), "w%03d", i);
        worker(e, name, 4000, 4096);
        e->k.now += 10; /* w299 first, w000 last */
    }
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "w%03d", i);
        struct cp_worker *w = cp_core_worker(&e->c, name);
        assert_non_null(w);
        assert_string_equal(w->name, name);
    }
    assert_null(cp_core_worker(&e->c, "w300"));
    int k = 0;
    for (struct cp_worker *w = e->c.workers; w; w = w->next, k++) {
        snprintf(name, sizeof(name), "w%03d", k);
        assert_string_equal(w->name, name); /* name order */
    }
    assert_int_equal(k, 300);
    /* w299..w200 were heard at t0 + 0..990 ms, the others later: at t0 + 2995 ms only those
     * are silent for more than 2 s */
    uint64_t t0 = e->k.now - 3000; /* when w299 was heard */
    e->k.now = t0 + 2000 + 995;    /* silent > 2000 ms: heard before t0 + 995 */
    assert_int_equal(cp_core_check_peers(&e->c, 2000), 0); /* no data plane lost */
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "w%03d", i);
        bool lost = i >= 200; /* w299..w200: heard at t0 + 0..990 */
        assert_int_equal(cp_core_worker(&e->c, name)->node.schedulable, !lost);
    }
    worker(e, "w250", 4000, 4096); /* back */
    assert_true(cp_core_worker(&e->c, "w250")->node.schedulable);
    e->k.now += 2001;
    cp_core_check_peers(&e->c, 2000);
    assert_false(cp_core_worker(&e->c, "w250")->node.schedulable); /* silent again */
    assert_false(cp_core_worker(&e->c, "w000")->node.schedulable);
    /* data planes by name; gone once lost */
    struct cp_dp *d1 = dataplane(e, "dp1");
    dataplane(e, "dp2");
    assert_ptr_equal(cp_core_dp(&e->c, "dp1"), d1);
    e->k.now += 5000;
    assert_int_equal(cp_core_check_peers(&e->c, 2000), 2);
    assert_null(cp_core_dp(&e->c, "dp1"));
    assert_null(cp_core_dp(&e->c, "dp2"));
    env_free(e);
}

static void test_restore_without_subnet_waits(void **state)
{
    struct env *e = env_new();
    struct cp_fn *f = function(e, "hello", 100, 128, 0);
    struct dg_err err = {0};
    struct cp_worker *w = cp_core_worker_restore(&e->c, "w1", "192.168.1.5:7000", NULL, &err);
    struct cp_sandbox_report sb = {"c1", "hello", "100.64.4.7:80"};
    cp_core_worker_listed(&e->c, w, &sb, 1);
    assert_int_equal(e->k.ndestroys, 0);
    assert_int_equal(f->ready, 0);
    assert_true(w->reconstructing);
    assert_true(w->need_list);
    unsigned persisted = e->k.persisted;
    const char *ids[] = {"c1"}, *eps[] = {"100.64.4.7:80"};
    listing(e, "w1", "192.168.1.5:7000", "100.64.4.0/22", "b1", "hello", ids, eps, 1);
    assert_int_equal(f->ready, 1);
    assert_int_equal(e->k.ndestroys, 0);
    assert_true(e->k.persisted > persisted); /* its subnet kept for the next restart */
    assert_string_equal(w->subnet, "100.64.4.0/22");
    env_free(e);
}

/* A saturated worker (its heartbeat says its create queue is full, issue 16) stays alive and
 * schedulable, but placement passes it over; with every worker saturated a function waits
 * (no error, nothing unschedulable) and is placed at the tick after one is free again. */
static void beat_saturated(struct env *e, const char *name, bool saturated)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%zu", strlen(name) + 1000);
    struct cp_worker_report r = {.name = name,
                                 .address = addr,
                                 .res = {.cpu_milli = 100000, .memory_mib = 100000},
                                 .saturated = saturated};
    struct dg_err err = {0};
    assert_non_null(cp_core_on_worker_heartbeat(&e->c, &r, &err));
}

static void test_saturated_worker(void **state)
{
    struct env *e = env_new();
    struct cp_worker *w1 = worker(e, "w1", 100000, 100000);
    struct cp_worker *w2 = worker(e, "w22", 100000, 100000);
    dataplane(e, "dp1");
    beat_saturated(e, "w1", true);
    assert_true(w1->node.saturated);
    assert_true(w1->node.schedulable); /* busy, not lost */
    struct cp_fn *f = function(e, "spread", 10, 10, 4);
    assert_int_equal(e->k.ncreates, 4);
    for (size_t i = 0; i < 4; i++)
        assert_ptr_equal(e->k.creates[i]->worker, w2);
    /* both saturated: g waits, without an error */
    beat_saturated(e, "w22", true);
    struct cp_fn *g = function(e, "waits", 10, 10, 2);
    assert_int_equal(e->k.ncreates, 4);
    settle(e);
    assert_false(cp_fn_error_of(g)->set);
    for (size_t i = 0; i < e->k.npushed; i++) /* no error for the waiting requests */
        assert_false(strcmp(e->k.pushed[i].name, "waits") == 0 && e->k.pushed[i].error[0]);
    /* w1 drained its queue: its beat places g there at once, without waiting for a tick */
    beat_saturated(e, "w1", false);
    assert_true(e->k.capacity_soon);
    settle(e);
    assert_int_equal(e->k.ncreates, 6);
    assert_false(g->unschedulable);
    assert_ptr_equal(e->k.creates[4]->worker, w1);
    assert_ptr_equal(e->k.creates[5]->worker, w1);
    assert_int_equal(f->creating, 4);
    check_accounting(e);
    env_free(e);
}

/* A function with pre-created sandboxes on a worker (the pool table's hint, src/cp/pool.c):
 * its cold starts go to that worker while it fits, whatever the policy would pick; a hint
 * that does not fit (saturated) leaves the pick to the policy. */
static void test_pool_hint(void **state)
{
    struct env *e = env_new();
    worker(e, "w1", 100000, 100000);
    struct cp_worker *w2 = worker(e, "w22", 100000, 100000);
    struct cp_dp *d = dataplane(e, "dp1");
    size_t n = 0;
    for (int i = 0; i < 6; i++) { /* round robin alone would alternate w1, w22 */
        char name[16];
        snprintf(name, sizeof(name), "pooled%d", i);
        struct cp_fn *f = function(e, name, 100, 128, 0);
        f->pool_hint = w2;
        cp_core_on_metric(&e->c, d, f, 1);
        assert_int_equal(e->k.ncreates, ++n);
        assert_ptr_equal(e->k.creates[n - 1]->worker, w2);
    }
    beat_saturated(e, "w22", true); /* the hint does not fit: the policy picks w1 */
    struct cp_fn *g = function(e, "other", 100, 128, 0);
    g->pool_hint = w2;
    cp_core_on_metric(&e->c, d, g, 1);
    assert_int_equal(e->k.ncreates, n + 1);
    assert_string_equal(e->k.creates[n]->worker->name, "w1");
    check_accounting(e);
    env_free(e);
}

int main(void)
{
    dg_log_set_level(DG_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_from_zero),
        cmocka_unit_test(test_delete_any_order),
        cmocka_unit_test(test_create_fails),
        cmocka_unit_test(test_worker_lost_while_creating),
        cmocka_unit_test(test_scale_down_drains_then_deletes),
        cmocka_unit_test(test_fn_delete_frees_once),
        cmocka_unit_test(test_accounting_and_capacity),
        cmocka_unit_test(test_adopt_after_restart),
        cmocka_unit_test(test_dp_lost),
        cmocka_unit_test(test_count_asks_for_list),
        cmocka_unit_test(test_dp_resync_after_failed_push),
        cmocka_unit_test(test_adoption_refused_outside_reconstruction),
        cmocka_unit_test(test_adoption_in_reconstruction_only),
        cmocka_unit_test(test_listing_during_create),
        cmocka_unit_test(test_new_boot_deletes_old_sandboxes),
        cmocka_unit_test(test_quotas),
        cmocka_unit_test(test_scale_down_budget),
        cmocka_unit_test(test_create_rate_limit),
        cmocka_unit_test(test_restore_without_subnet_waits),
        cmocka_unit_test(test_many_workers_indexed_and_lost),
        cmocka_unit_test(test_saturated_worker),
        cmocka_unit_test(test_pool_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
