/*
 * test_dp_core.c: the data plane's core (src/dp/dp_core.h) with a fake effects
 * table and a fake clock: every forward, answer, drain and report it makes is
 * recorded, and each test checks them in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admit.h"
#include "dp_core.h"

#define NREQ 32

struct treq {
    struct dp_req r; /* zeroed before it goes in */
    int answers;     /* the core's answers: must end at 0 or 1 */
    int status;
    enum dp_answer_kind kind;
    char msg[600];
    char ep[16]; /* the endpoint of its last forward */
    int forwards;
};

static struct world {
    uint64_t now_us;
    struct treq reqs[NREQ];
    int order[64]; /* request indexes in the order they were forwarded */
    int nforwards;
    void *drained[8];
    size_t drained_n[8];
    int ndrained;
    int report_soon;
    char reported[8][32];
    unsigned reported_n[8];
    int nreports;
} w;

static uint64_t fx_now(void *ud)
{
    return w.now_us;
}

static int idx(struct dp_req *r)
{
    return (int)((struct treq *)r - w.reqs);
}

static void fx_forward(void *ud, struct dp_req *r, struct dp_endpoint *e)
{
    struct treq *t = (struct treq *)r;
    snprintf(t->ep, sizeof(t->ep), "%s", e->id);
    t->forwards++;
    w.order[w.nforwards++] = idx(r);
}

static void fx_answer(void *ud, struct dp_req *r, enum dp_answer_kind kind, int status,
                      const char *msg)
{
    struct treq *t = (struct treq *)r;
    t->answers++;
    t->status = status;
    t->kind = kind;
    snprintf(t->msg, sizeof(t->msg), "%s", msg);
}

static void fx_drained(void *ud, void *token, const struct dp_function *f, size_t nids)
{
    w.drained_n[w.ndrained] = nids;
    w.drained[w.ndrained++] = token;
}

static void fx_report_soon(void *ud)
{
    w.report_soon++;
}

static void fx_report(void *ud, const struct dp_report_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(w.reported[w.nreports], sizeof(w.reported[0]), "%s", items[i].name);
        w.reported_n[w.nreports++] = items[i].inflight;
    }
}

static struct dp_core *core;

static int setup(void **state)
{
    memset(&w, 0, sizeof(w));
    w.now_us = 1000000;
    struct dp_core_config c = {.policy = DP_LB_ROUND_ROBIN, .queue_timeout_ms = 1000, .seed = 1};
    struct dp_effects fx = {.now = fx_now,
                            .forward = fx_forward,
                            .answer = fx_answer,
                            .drained = fx_drained,
                            .report_soon = fx_report_soon,
                            .report = fx_report};
    core = dp_core_new(&c, &fx);
    return 0;
}

static int teardown(void **state)
{
    dp_core_free(core);
    return 0;
}

static struct dp_function *fn(const char *name, uint32_t cc)
{
    struct dp_function *f = dp_core_function_get(core, name, strlen(name), NULL);
    dp_core_set_concurrency(core, f, cc);
    return f;
}

static void eps(struct dp_function *f, const char *a, const char *b)
{
    struct dp_endpoint_spec l[2] = {{a, "127.0.0.1:1"}, {b, "127.0.0.1:2"}};
    dp_core_set_endpoints(core, f, l, a ? (b ? 2 : 1) : 0);
}

static void req(struct dp_function *f, int i)
{
    dp_core_on_request(core, f, &w.reqs[i].r);
}

/* One slot: the first request runs, the others wait in arrival order, each takes the slot
 * when the one before ends. */
static void test_fifo_waits_for_slot(void **state)
{
    struct dp_function *f = fn("f", 1);
    eps(f, "a", NULL);
    req(f, 0);
    req(f, 1);
    req(f, 2);
    assert_int_equal(w.nforwards, 1);
    assert_int_equal(f->queued, 2);
    assert_int_equal(f->running, 3);
    dp_core_on_done(core, &w.reqs[0].r);
    assert_int_equal(w.nforwards, 2);
    assert_int_equal(w.order[1], 1);
    /* a new arrival does not overtake the one still queued, even with a slot free later */
    req(f, 3);
    dp_core_on_done(core, &w.reqs[1].r);
    dp_core_on_done(core, &w.reqs[2].r);
    assert_int_equal(w.nforwards, 4);
    assert_int_equal(w.order[2], 2);
    assert_int_equal(w.order[3], 3);
    dp_core_on_done(core, &w.reqs[3].r);
    assert_int_equal(f->running, 0);
    assert_int_equal(f->eps[0]->lb.in_flight, 0);
    assert_int_equal(f->eps[0]->lb.processed, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w.reqs[i].answers, 0); /* the sandbox answered them, not the core */
}

/* A cold start: requests wait for the first endpoint, then go in order. */
static void test_cold_start_dispatch(void **state)
{
    struct dp_function *f = fn("f", 1);
    req(f, 0);
    req(f, 1);
    assert_true(w.reqs[0].r.cold);
    assert_int_equal(w.nforwards, 0);
    eps(f, "a", "b");
    assert_int_equal(w.nforwards, 2);
    assert_int_equal(w.order[0], 0);
    assert_int_equal(w.order[1], 1);
    assert_string_equal(w.reqs[0].ep, "a"); /* round-robin over both, in list order */
    assert_string_equal(w.reqs[1].ep, "b");
}

/* A request queued past the queue timeout gets one 503; not before. */
static void test_queue_deadline(void **state)
{
    struct dp_function *f = fn("f", 1);
    req(f, 0);
    w.now_us += 999 * 1000;
    dp_core_tick(core);
    assert_int_equal(w.reqs[0].answers, 0);
    w.now_us += 1000;
    dp_core_tick(core);
    assert_int_equal(w.reqs[0].answers, 1);
    assert_int_equal(w.reqs[0].status, 503);
    assert_int_equal(w.reqs[0].kind, DP_ANSWER_QUEUE_TIMEOUT);
    assert_non_null(strstr(w.reqs[0].msg, "within 1000 ms (cold start timed out)"));
    assert_int_equal(f->running, 0);
    assert_int_equal(f->queued, 0);
    w.now_us += 5000 * 1000;
    dp_core_tick(core);
    assert_int_equal(w.reqs[0].answers, 1);
}

/* A drain is answered once, when the drained sandboxes have no request left; an idle one at
 * once. The drained endpoint takes no new request meanwhile. */
static void test_drain_when_idle(void **state)
{
    struct dp_function *f = fn("f", 1);
    eps(f, "a", "b");
    req(f, 0); /* on a */
    assert_string_equal(w.reqs[0].ep, "a");
    const char *ids[] = {"a"};
    dp_core_drain(core, f, ids, 1, (void *)0x1);
    assert_int_equal(w.ndrained, 0);
    assert_int_equal(f->neps, 1);
    req(f, 1);
    assert_string_equal(w.reqs[1].ep, "b");
    dp_core_on_done(core, &w.reqs[0].r);
    assert_int_equal(w.ndrained, 1);
    assert_ptr_equal(w.drained[0], (void *)0x1);
    assert_int_equal(w.drained_n[0], 1);
    const char *idle[] = {"zzz"};
    dp_core_drain(core, f, idle, 1, (void *)0x2);
    assert_int_equal(w.ndrained, 2);
    dp_core_on_done(core, &w.reqs[1].r);
    assert_int_equal(w.ndrained, 2);
}

/* Requests whose sandbox broke get the reason it exited: the one waiting when the CP says it,
 * the one that breaks after at once; without a reason, the plain 502 after the wait. */
static void test_exited_reason(void **state)
{
    struct dp_function *f = fn("f", 2);
    eps(f, "a", NULL);
    req(f, 0);
    req(f, 1);
    dp_core_on_upstream_error(core, &w.reqs[0].r, false, true, "connection reset");
    assert_int_equal(w.reqs[0].answers, 0); /* waits for why */
    dp_core_on_exited(core, f, "a", "OOM-killed: memory limit 64 MiB");
    assert_int_equal(w.reqs[0].answers, 1);
    assert_int_equal(w.reqs[0].status, 502);
    assert_string_equal(w.reqs[0].msg, "function 'f': sandbox a OOM-killed: memory limit 64 MiB");
    dp_core_on_upstream_error(core, &w.reqs[1].r, false, true, "connection reset");
    assert_int_equal(w.reqs[1].answers, 1);
    assert_string_equal(w.reqs[1].msg, "function 'f': sandbox a OOM-killed: memory limit 64 MiB");
    /* another sandbox, no reason in time */
    eps(f, "b", NULL);
    req(f, 2);
    dp_core_on_upstream_error(core, &w.reqs[2].r, false, true, "connection reset");
    w.now_us += (DP_EXIT_WAIT_MS - 1) * 1000;
    dp_core_tick(core);
    assert_int_equal(w.reqs[2].answers, 0);
    w.now_us += 1000;
    dp_core_tick(core);
    assert_int_equal(w.reqs[2].answers, 1);
    assert_string_equal(w.reqs[2].msg,
                        "function 'f': sandbox 127.0.0.1:1 failed: connection reset");
    assert_int_equal(f->running, 0);
    /* not sent: answered at once, no wait */
    req(f, 3);
    dp_core_on_upstream_error(core, &w.reqs[3].r, false, false, "connection refused");
    assert_int_equal(w.reqs[3].answers, 1);
}

/* A failed connect of a request without a body is retried once on another endpoint. */
static void test_retry_other_endpoint(void **state)
{
    struct dp_function *f = fn("f", 1);
    eps(f, "a", "b");
    req(f, 0);
    assert_string_equal(w.reqs[0].ep, "a");
    dp_core_on_upstream_error(core, &w.reqs[0].r, true, false, "connection refused");
    assert_int_equal(w.reqs[0].forwards, 2);
    assert_string_equal(w.reqs[0].ep, "b");
    assert_int_equal(f->eps[0]->lb.in_flight, 0);
    dp_core_on_upstream_error(core, &w.reqs[0].r, true, false, "connection refused");
    assert_int_equal(w.reqs[0].forwards, 2); /* once */
    assert_int_equal(w.reqs[0].answers, 1);
    assert_int_equal(w.reqs[0].status, 502);
}

/* Issue 14 finding 9: a sandbox id listed at another address is another endpoint: the old
 * address gets no new request. */
static void test_endpoint_is_id_and_address(void **state)
{
    struct dp_function *f = fn("f", 1);
    struct dp_endpoint_spec one = {"a", "10.0.0.2:80"};
    dp_core_set_endpoints(core, f, &one, 1);
    struct dp_endpoint *old = f->eps[0];
    req(f, 0); /* running on a at .2 */
    one.address = "10.0.0.3:80";
    dp_core_set_endpoints(core, f, &one, 1);
    assert_int_equal(f->neps, 1);
    assert_string_equal(f->eps[0]->address, "10.0.0.3:80");
    assert_ptr_equal(f->removed, old); /* its request finishes there, nothing new goes */
    assert_true(dp_core_has_sandbox(f, "a"));
    assert_false(dp_core_has_sandbox(f, "b"));
}

/* Issue 14 finding 9: the sandbox at an endpoint's address says it is another one (421): the
 * endpoint leaves the list, a request without a body waits for another endpoint (here none:
 * it queues for a cold start, and the next list serves it); one already retried gets 502. */
static void test_misrouted(void **state)
{
    struct dp_function *f = fn("f", 1);
    eps(f, "a", NULL);
    req(f, 0);
    assert_string_equal(w.reqs[0].ep, "a");
    dp_core_on_misrouted(core, &w.reqs[0].r, true, "sandbox g-1 answers there");
    assert_int_equal(f->neps, 0);
    assert_null(f->removed); /* freed: nothing runs on it */
    assert_int_equal(w.reqs[0].answers, 0);
    assert_int_equal(f->queued, 1);
    assert_true(w.reqs[0].r.cold);
    eps(f, "b", NULL);
    assert_int_equal(w.reqs[0].forwards, 2);
    assert_string_equal(w.reqs[0].ep, "b");
    dp_core_on_misrouted(core, &w.reqs[0].r, true, "sandbox g-2 answers there");
    assert_int_equal(w.reqs[0].answers, 1);
    assert_int_equal(w.reqs[0].status, 502);
    assert_non_null(strstr(w.reqs[0].msg, "sandbox b at 127.0.0.1:1 is gone"));
    assert_int_equal(f->running, 0);
    /* with a body: not sent again */
    eps(f, "c", NULL);
    req(f, 1);
    dp_core_on_misrouted(core, &w.reqs[1].r, false, "sandbox g-3 answers there");
    assert_int_equal(w.reqs[1].status, 502);
    assert_non_null(strstr(w.reqs[1].msg, "the request had a body"));
}

/* The CP says the function cannot start: every queued request gets 503 with the reason once;
 * later ones queue again. */
static void test_cannot_start(void **state)
{
    struct dp_function *f = fn("f", 1);
    req(f, 0);
    req(f, 1);
    dp_core_set_error(core, f, "image not found");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(w.reqs[i].answers, 1);
        assert_int_equal(w.reqs[i].kind, DP_ANSWER_CANNOT_START);
        assert_string_equal(w.reqs[i].msg, "function 'f' cannot start: image not found");
    }
    req(f, 2);
    assert_int_equal(w.reqs[2].answers, 0);
    assert_int_equal(f->queued, 1);
    eps(f, "a", NULL);
    dp_core_set_error(core, f, NULL); /* with endpoints the error goes */
    assert_null(f->error);
    assert_int_equal(w.nforwards, 1);
}

/* Removing a function answers its queued requests once; with requests running it refuses. */
static void test_remove_function(void **state)
{
    struct dp_function *f = fn("f", 1);
    eps(f, "a", NULL);
    req(f, 0); /* running */
    req(f, 1); /* queued */
    assert_int_equal(dp_core_remove_function(core, f), 1);
    assert_int_equal(w.reqs[1].answers, 0);
    const char *ids[] = {"a"};
    dp_core_drain(core, f, ids, 1, (void *)0x3);
    dp_core_on_done(core, &w.reqs[0].r);
    assert_int_equal(w.ndrained, 1);
    assert_int_equal(dp_core_remove_function(core, f), 0);
    assert_int_equal(w.reqs[1].answers, 1);
    assert_int_equal(w.reqs[1].kind, DP_ANSWER_REMOVED);
    assert_string_equal(w.reqs[1].msg, "function 'f' was removed");
    assert_null(dp_core_function_find(core, "f", 1));
}

/* A resync keeps the functions it names; another one loses its endpoints and goes, unless
 * a request still runs there (it stays, empty, until the next resync). */
static void test_remove_others(void **state)
{
    struct dp_function *f = fn("f", 1), *g = fn("g", 1), *h = fn("h", 1);
    eps(f, "a", NULL);
    eps(g, "b", NULL);
    eps(h, "c", NULL);
    req(h, 0); /* running on c */
    struct dg_strmap keep = {0};
    dg_strmap_put(&keep, dg_str_c("f"), f);
    assert_int_equal(dp_core_remove_others(core, &keep), 1);
    assert_ptr_equal(dp_core_function_find(core, "f", 1), f);
    assert_int_equal(f->neps, 1);
    assert_null(dp_core_function_find(core, "g", 1));
    assert_ptr_equal(dp_core_function_find(core, "h", 1), h);
    assert_int_equal(h->neps, 0);
    dp_core_on_done(core, &w.reqs[0].r);
    assert_int_equal(dp_core_remove_others(core, &keep), 1);
    assert_null(dp_core_function_find(core, "h", 1));
    dg_strmap_free(&keep);
}

/* The first request that waits is reported at once (with others of the same turn); the tick
 * reports every busy function, then a last 0, then nothing. */
static void test_reports(void **state)
{
    struct dp_function *f = fn("f", 1), *g = fn("g", 1);
    req(f, 0);
    req(g, 1);
    req(f, 2);
    assert_int_equal(w.report_soon, 2); /* once per function */
    dp_core_report_due(core);
    assert_int_equal(w.nreports, 2);
    assert_int_equal(w.reported_n[0] + w.reported_n[1], 3); /* f 2, g 1 */
    dp_core_tick(core);                                     /* the periodic report: f 2, g 1 */
    assert_int_equal(w.nreports, 4);
    dp_core_set_error(core, f, "x");
    dp_core_set_error(core, g, "x");
    w.now_us += 2000 * 1000;
    dp_core_tick(core); /* both idle: a last 0 each */
    assert_int_equal(w.nreports, 6);
    assert_int_equal(w.reported_n[4] + w.reported_n[5], 0);
    w.now_us += 2000 * 1000;
    dp_core_tick(core);
    assert_int_equal(w.nreports, 6);
}

/* A cold start's function is reported busy at once, and idle again as soon as its last
 * request ends (its 0 with the next paced report, not 2 s later in one burst with every other
 * function of those 2 s); a function the CP already believes idle is not reported again. */
static void test_report_idle_at_done(void **state)
{
    struct dp_function *f = fn("f", 1);
    req(f, 0); /* at zero: waits */
    assert_int_equal(w.report_soon, 1);
    dp_core_report_due(core);
    assert_int_equal(w.nreports, 1);
    assert_int_equal(w.reported_n[0], 1);
    eps(f, "a", NULL); /* its sandbox: the request runs */
    assert_int_equal(w.nforwards, 1);
    dp_core_on_done(core, &w.reqs[0].r);
    assert_int_equal(w.report_soon, 2); /* the CP heard 1: its 0 is due */
    dp_core_report_due(core);
    assert_int_equal(w.nreports, 2);
    assert_string_equal(w.reported[1], "f");
    assert_int_equal(w.reported_n[1], 0);
    req(f, 1); /* warm, never waits: not reported, and its end neither (the CP heard 0) */
    dp_core_on_done(core, &w.reqs[1].r);
    assert_int_equal(w.report_soon, 2);
    w.now_us += 2000 * 1000;
    dp_core_tick(core); /* idle and the CP knows: the sweep has nothing to say */
    assert_int_equal(w.nreports, 2);
}

/* ---- admission control (admit.h, dp_core_on_request) -------------------------------------- */

static int setup_admit(void **state)
{
    setup(state);
    dp_core_free(core);
    struct dp_core_config c = {.policy = DP_LB_ROUND_ROBIN,
                               .queue_timeout_ms = 1000,
                               .seed = 1,
                               .admission = true,
                               .admit_max_wait_ms = 50};
    struct dp_effects fx = {.now = fx_now,
                            .forward = fx_forward,
                            .answer = fx_answer,
                            .drained = fx_drained,
                            .report_soon = fx_report_soon,
                            .report = fx_report};
    core = dp_core_new(&c, &fx);
    return 0;
}

#define MS 1000ull

/* The estimator alone: the rate is completions over busy time (idle time between is not
 * counted), the expected wait the queue ahead over it; nothing known without a completion in
 * the last two windows. */
static void test_admit_estimator(void **state)
{
    struct dp_admit a = {0};
    uint64_t t = 5000 * MS, wait = 0;
    assert_false(dp_admit_wait(&a, t, 3, &wait)); /* nothing seen: no rate */
    dp_admit_set_busy(&a, t, true);
    for (int i = 1; i <= 10; i++) /* 10 served over 100 ms busy */
        dp_admit_done(&a, t + (uint64_t)i * 10 * MS, 10 * MS, i == 1);
    dp_admit_set_busy(&a, t + 100 * MS, false);
    assert_true(dp_admit_rate(&a, t + 100 * MS) > 99.9 && dp_admit_rate(&a, t + 100 * MS) < 100.1);
    assert_int_equal(a.base_us, 10 * MS); /* the one that found the queue empty */
    /* 400 ms idle, then 100 ms busy with 10 more: still 100/s */
    dp_admit_set_busy(&a, t + 500 * MS, true);
    for (int i = 1; i <= 10; i++)
        dp_admit_done(&a, t + 500 * MS + (uint64_t)i * 10 * MS, 50 * MS, false);
    dp_admit_set_busy(&a, t + 600 * MS, false);
    assert_true(dp_admit_wait(&a, t + 600 * MS, 5, &wait));
    assert_int_equal(wait, 50 * MS);      /* 5 ahead at 100/s */
    assert_int_equal(a.base_us, 10 * MS); /* waits behind others do not count there */
    /* a window later both 100 ms are still in the two windows' horizon: 100/s */
    assert_true(dp_admit_wait(&a, t + 1500 * MS, 5, &wait));
    assert_int_equal(wait, 50 * MS);
    /* busy and slower: 2 more in the next 200 ms of busy time -> 22 over 400 ms = 55/s */
    dp_admit_set_busy(&a, t + 1600 * MS, true);
    dp_admit_done(&a, t + 1700 * MS, 100 * MS, false);
    dp_admit_done(&a, t + 1800 * MS, 100 * MS, false);
    assert_true(dp_admit_wait(&a, t + 1800 * MS, 4, &wait));
    assert_int_equal(wait, 72727); /* 4 ahead at 55/s */
    /* the first window rolled out (t + 2 s), still busy: 2 over 400 ms = 5/s */
    assert_true(dp_admit_wait(&a, t + 2000 * MS, 4, &wait));
    assert_int_equal(wait, 800 * MS);
    /* both windows past without a completion: no rate, nothing refused on it */
    dp_admit_set_busy(&a, t + 2000 * MS, false);
    assert_false(dp_admit_wait(&a, t + 4100 * MS, 4, &wait));
}

/* Cold starts: every function's first request at zero waits for the cold-start pipeline
 * every function shares: one queue. 10 served in 100 ms (100/s; the first found the queue
 * empty and waited 10 ms: the limit is 50 ms + 10 ms + 4 x its deviation, 5 ms at first). A
 * burst into the idle queue is admitted whatever its estimate (served side by side, it may be
 * no backlog); once the queue has stood 80 ms with nothing served, a cold start whose expected
 * wait is over 80 ms is refused at once, 503 with a retry hint; a client's shorter deadline
 * lowers the limit; a function's second request at zero waits behind its first, for its own
 * sandboxes, not for the pipeline: admitted; with the backlog served, new ones are admitted
 * again. */
static void test_admit_cold(void **state)
{
    struct dp_function *a[10], *b[8], *c;
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "a%d", i);
        a[i] = fn(name, 1);
        req(a[i], i);
    }
    for (int i = 0; i < 10; i++)
        assert_int_equal(w.reqs[i].answers, 0); /* no rate known yet: all admitted */
    for (int i = 0; i < 10; i++) {
        w.now_us += 10 * MS;
        eps(a[i], "s", NULL);
    }
    assert_int_equal(w.nforwards, 10);
    struct dp_admit_view v;
    dp_core_admit_view(core, a[0], true, 0, &v);
    assert_true(v.has_cold && v.rate_cold > 99.9 && v.rate_cold < 100.1);
    assert_int_equal(v.limit_us, 80 * MS); /* 50 ms + 10 ms + 4 x 5 ms of deviation */
    for (int i = 0; i < 8; i++) {          /* a burst: 7 ahead of the last (70 ms), all admitted */
        snprintf(name, sizeof(name), "b%d", i);
        b[i] = fn(name, 1);
        req(b[i], 10 + i);
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(w.reqs[10 + i].answers, 0);
    /* 60 ms later the queue has not stood for the limit: admitted */
    w.now_us += 60 * MS;
    c = fn("c", 1);
    req(c, 21);
    assert_int_equal(w.reqs[21].answers, 0);
    /* 150 ms later nothing was served for 250 ms: a backlog. 10 over 310 ms busy = 32/s, 9
     * ahead = 279 ms */
    w.now_us += 150 * MS;
    struct dp_function *e = fn("e", 1);
    req(e, 18);
    struct treq *t = &w.reqs[18];
    assert_int_equal(t->answers, 1);
    assert_int_equal(t->status, 503);
    assert_int_equal(t->kind, DP_ANSWER_OVERLOADED);
    assert_int_equal(t->r.retry_after_s, 1);
    assert_non_null(strstr(t->msg, "function 'e': overloaded: 9 cold start(s) queued ahead, "
                                   "about 279 ms expected wait"));
    assert_non_null(strstr(t->msg, "over the 80 ms admitted"));
    assert_int_equal(e->running, 0);
    assert_int_equal(e->queued, 0);
    /* a gRPC call with 30 ms left: refused too */
    w.reqs[19].r.timeout_us = 30 * MS;
    req(e, 19);
    assert_int_equal(w.reqs[19].kind, DP_ANSWER_OVERLOADED);
    assert_non_null(strstr(w.reqs[19].msg, "over the 30 ms admitted"));
    /* c's second request waits behind c's first, for c's own sandbox: admitted */
    req(c, 22);
    assert_int_equal(w.reqs[22].answers, 0);
    assert_int_equal(c->queued, 2);
    dp_core_admit_view(core, c, true, 0, &v);
    assert_int_equal(v.cold_queued, 9); /* the pipeline's queue: c's first only */
    /* the backlog served: the queue is empty, a new cold start is admitted */
    for (int i = 0; i < 8; i++)
        eps(b[i], "s", NULL);
    eps(c, "s", NULL);
    struct dp_function *d = fn("d", 1);
    req(d, 20);
    assert_int_equal(w.reqs[20].answers, 0);
    assert_int_equal(d->queued, 1);
}

/* One function whose sandbox takes its time (one slot, 160 ms a request): the queue behind its
 * own sandboxes (the function's upper bound is its user's choice) is refused for its deadline
 * (1 s here) only, never for admit_max_wait_ms. A burst into its idle queue is admitted; once
 * what it served lately waited longer than the usual wait + 50 ms (a backlog), a request
 * expected to wait longer than its deadline is refused at once. */
static void test_admit_function(void **state)
{
    struct dp_function *f = fn("slow", 1);
    eps(f, "a", NULL);
    req(f, 0); /* runs */
    req(f, 1); /* waits for the slot, found the queue empty */
    w.now_us += 100 * MS;
    dp_core_on_done(core, &w.reqs[0].r); /* 1 served after 100 ms */
    for (int i = 2; i <= 6; i++)         /* a burst: 0..4 ahead, admitted */
        req(f, i);
    for (int i = 0; i <= 6; i++)
        assert_int_equal(w.reqs[i].answers, 0);
    for (int i = 1; i <= 4; i++) { /* 2 waited 160 ms (it found the queue empty), 5 640 ms */
        w.now_us += 160 * MS;
        dp_core_on_done(core, &w.reqs[i].r);
    }
    /* 5 served over 740 ms busy (6.76/s, 148 ms each); the last served waited 640 ms, over
     * the usual wait + 50 ms (367 ms): a backlog. Up to 6 ahead (888 ms) is within the 1 s
     * deadline: admitted; 7 ahead (1036 ms) is refused */
    for (int i = 7; i <= 12; i++)
        req(f, i);
    for (int i = 7; i <= 12; i++)
        assert_int_equal(w.reqs[i].answers, 0);
    req(f, 13);
    assert_int_equal(w.reqs[13].answers, 1);
    assert_int_equal(w.reqs[13].kind, DP_ANSWER_OVERLOADED);
    assert_non_null(strstr(w.reqs[13].msg, "7 request(s) queued ahead, about 1036 ms"));
    assert_non_null(strstr(w.reqs[13].msg, "over the 1000 ms deadline"));
    assert_int_equal(w.reqs[13].r.retry_after_s, 2);
    assert_int_equal(f->running, 8); /* 5 running, 6..12 queued, 13 refused */
    /* a client with 300 ms left: 3 ahead would be served in time, 7 not */
    w.reqs[14].r.timeout_us = 300 * MS;
    req(f, 14);
    assert_int_equal(w.reqs[14].kind, DP_ANSWER_OVERLOADED);
}

static int setup_admit_minq(void **state)
{
    setup(state);
    dp_core_free(core);
    struct dp_core_config c = {.policy = DP_LB_ROUND_ROBIN,
                               .queue_timeout_ms = 1000,
                               .seed = 1,
                               .admission = true,
                               .admit_max_wait_ms = 50,
                               .admit_min_queue = 12};
    struct dp_effects fx = {.now = fx_now, .forward = fx_forward, .answer = fx_answer};
    core = dp_core_new(&c, &fx);
    return 0;
}

/* With admissionMinQueue 12 the pipeline's backlog refuses only from 12 cold starts ahead:
 * 11 ahead (341 ms, over the 80 ms limit) is admitted, 12 (372 ms) is not. */
static void test_admit_min_queue(void **state)
{
    char name[16];
    struct dp_function *a[10];
    for (int i = 0; i < 10; i++) { /* 10 served at 100/s */
        snprintf(name, sizeof(name), "a%d", i);
        a[i] = fn(name, 1);
        req(a[i], i);
    }
    for (int i = 0; i < 10; i++) {
        w.now_us += 10 * MS;
        eps(a[i], "s", NULL);
    }
    for (int i = 0; i < 11; i++) { /* 11 queued */
        snprintf(name, sizeof(name), "b%d", i);
        req(fn(name, 1), 10 + i);
    }
    w.now_us += 210 * MS; /* stood 210 ms, nothing served: 10 over 310 ms busy */
    req(fn("c", 1), 21);  /* 11 ahead: under the floor */
    assert_int_equal(w.reqs[21].answers, 0);
    req(fn("d", 1), 22); /* 12 ahead, 372 ms */
    assert_int_equal(w.reqs[22].kind, DP_ANSWER_OVERLOADED);
    assert_non_null(strstr(w.reqs[22].msg, "12 cold start(s) queued ahead, about 372 ms"));
}

/* A pipeline slowed by lag, not by its length (the overload benchmark at 1.5x: loops busy,
 * queues short): 10 cold starts served at 100/s (the usual wait 30 ms: the limit 80 ms);
 * later 9 served after 150 ms each with one still queued, the queue never long enough for a
 * backlog. New cold starts are refused in turn, 80/150 of them admitted (5 of 10), with why;
 * a function's second request waits for its own sandbox: admitted; once nothing slow was
 * served for 200 ms, a new cold start is admitted again. */
static void test_admit_lag(void **state)
{
    char name[16];
    struct dp_function *a[10], *b[10], *c[10];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "a%d", i);
        a[i] = fn(name, 1);
        req(a[i], i);
    }
    for (int i = 0; i < 10; i++) {
        w.now_us += 10 * MS;
        eps(a[i], "s", NULL);
    }
    w.now_us += 300 * MS;
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        b[i] = fn(name, 1);
        req(b[i], 10 + i);
    }
    w.now_us += 150 * MS;
    for (int i = 0; i < 9; i++) /* b9 still queued */
        eps(b[i], "s", NULL);
    struct dp_admit_view v;
    dp_core_admit_view(core, b[9], true, 0, &v);
    assert_int_equal(v.recent_cold_n, 9);
    assert_int_equal(v.recent_cold_us, 150 * MS);
    assert_int_equal(v.shed_limit_us, 80 * MS); /* the usual wait rose; its floor did not */
    assert_false(v.backlog_cold);               /* one queued: no backlog for the old rule */
    int refused = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        c[i] = fn(name, 1);
        req(c[i], 20 + i);
        refused += w.reqs[20 + i].kind == DP_ANSWER_OVERLOADED;
    }
    assert_int_equal(refused, 5);
    assert_int_equal(w.reqs[20].status, 503);
    assert_int_equal(w.reqs[20].r.retry_after_s, 1);
    assert_non_null(strstr(w.reqs[20].msg, "function 'c0': overloaded: the last 9 cold start(s) "
                                           "waited 150 ms on average, over the 80 ms admitted"));
    assert_int_equal(c[0]->running, 0);
    assert_int_equal(w.reqs[21].answers, 0); /* admitted: queued */
    assert_int_equal(c[1]->queued, 1);
    req(c[1], 30); /* c1's second request waits for c1's sandbox */
    assert_int_equal(w.reqs[30].answers, 0);
    assert_int_equal(c[1]->queued, 2);
    w.now_us += 250 * MS; /* nothing served for 250 ms: no evidence left */
    req(fn("d", 1), 31);
    assert_int_equal(w.reqs[31].answers, 0);
}

static void test_no_admission_by_default(void **state)
{
    struct dp_function *f = fn("slow", 1);
    eps(f, "a", NULL);
    req(f, 0);
    req(f, 1);
    w.now_us += 100 * MS;
    dp_core_on_done(core, &w.reqs[0].r);
    for (int i = 2; i < 12; i++)
        req(f, i);
    for (int i = 0; i < 12; i++)
        assert_int_equal(w.reqs[i].answers, 0);
    assert_int_equal(f->queued, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_waits_for_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_is_id_and_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misrouted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cold_start_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_when_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exited_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_other_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cannot_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_idle_at_done, setup, teardown),
        cmocka_unit_test(test_admit_estimator),
        cmocka_unit_test_setup_teardown(test_admit_cold, setup_admit, teardown),
        cmocka_unit_test_setup_teardown(test_admit_function, setup_admit, teardown),
        cmocka_unit_test_setup_teardown(test_admit_min_queue, setup_admit_minq, teardown),
        cmocka_unit_test_setup_teardown(test_admit_lag, setup_admit, teardown),
        cmocka_unit_test_setup_teardown(test_no_admission_by_default, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
