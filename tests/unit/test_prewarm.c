/*
 * test_prewarm.c: the worker's pool of pre-created sandboxes (src/worker/prewarm.c) through a
 * scripted runtime: the test answers each make and drop itself. What the control plane's
 * table asks for is made at most two at a time, a create takes a made one only with the same
 * spec (the registry's DIRIGENT_SANDBOX_ID aside), a failed make stops the function's pool
 * until the next table, a smaller table drops what is beyond it, and a stop drops everything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "prewarm.h"

static struct wk_sandbox *made[64], *dropped[64];
static size_t nmade, ndropped;

static void fake_make(void *rt, struct wk_sandbox *psb, const struct dg_wire_create *spec)
{
    assert_string_equal(psb->function, spec->function);
    made[nmade++] = psb;
}

static void fake_drop(void *rt, struct wk_sandbox *psb)
{
    dropped[ndropped++] = psb;
}

static void noop(uv_timer_t *t)
{
}

static const struct wk_prewarm_ops ops = {.make = fake_make, .drop = fake_drop};

static char *env_a[] = {"A=1"};

static struct dg_wire_pool_item item(const char *fn, int64_t count)
{
    return (struct dg_wire_pool_item){.spec = {.function = (char *)fn,
                                               .image = "oci:/x:latest",
                                               .port = 80,
                                               .env = {.v = env_a, .n = 1},
                                               .cpu_milli = 100,
                                               .memory_mib = 64},
                                      .count = count};
}

static void set1(struct wk_prewarm *p, const char *fn, int64_t count)
{
    struct dg_wire_pool_item it = item(fn, count);
    struct dg_wire_pool t = {.items = &it, .nitems = 1};
    wk_prewarm_set(p, &t);
}

/* every dropped one gone (as the runtime would say once it removed it) */
static void all_gone(void)
{
    for (size_t i = 0; i < ndropped; i++)
        wk_prewarm_gone(dropped[i]);
    ndropped = 0;
}

static void test_pool(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    nmade = ndropped = 0;
    struct wk_prewarm *p = wk_prewarm_new(&loop, "w1-abc123", 16, &ops, NULL);
    set1(p, "f", 3);
    assert_int_equal(nmade, 2); /* two at a time */
    wk_prewarm_made(made[0], 300 << 10, NULL);
    assert_int_equal(nmade, 3);
    wk_prewarm_made(made[1], 300 << 10, NULL);
    wk_prewarm_made(made[2], 300 << 10, NULL);
    assert_int_equal(nmade, 3);
    assert_int_equal(wk_prewarm_held_mib(p), 1); /* 900 KiB, rounded up */
    assert_non_null(strstr(made[0]->id, "w1-abc123-p"));

    /* a create's spec: the registry adds the sandbox's own id to its env */
    char *env_c[] = {"DIRIGENT_SANDBOX_ID=w1-1-1", "A=1"};
    struct dg_wire_pool_item c = item("f", 0);
    c.spec.env = (struct dg_strlist){.v = env_c, .n = 2};
    struct wk_sandbox *got = wk_prewarm_take(p, &c.spec);
    assert_non_null(got);
    assert_int_equal(got->state, WK_SB_READY);
    wk_prewarm_release(got);
    /* another spec (an env that differs) takes none */
    char *env_d[] = {"A=2"};
    c.spec.env = (struct dg_strlist){.v = env_d, .n = 1};
    assert_null(wk_prewarm_take(p, &c.spec));
    c.spec.env = (struct dg_strlist){.v = env_a, .n = 1};
    c.spec.memory_mib = 128;
    assert_null(wk_prewarm_take(p, &c.spec));
    /* the replacement comes later (a timer), after the start it served (the pool's timer does
     * not keep a loop running: the test's does, past it) */
    assert_int_equal(nmade, 3);
    uv_timer_t keep;
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, noop, 1500, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(nmade, 4);
    wk_prewarm_made(made[3], 300 << 10, NULL);

    /* a smaller table: the made ones beyond it are dropped */
    set1(p, "f", 1);
    assert_int_equal(ndropped, 2);
    all_gone();
    assert_int_equal(wk_prewarm_held_mib(p), 1);

    /* a make that fails: no more for that function until the next table */
    struct dg_wire_pool_item two[] = {item("f", 1), item("g", 2)};
    struct dg_wire_pool t = {.items = two, .nitems = 2};
    wk_prewarm_set(p, &t);
    assert_int_equal(nmade, 6); /* f has its one: g's two */
    assert_int_equal(ndropped, 0);
    struct dg_err e = {0};
    dg_err_set(&e, DG_E_INVAL, "no such image");
    wk_prewarm_made(made[4], 0, &e);
    wk_prewarm_gone(made[4]); /* the runtime removes what it made of it */
    assert_int_equal(nmade, 6);
    wk_prewarm_set(p, &t); /* a new table tries it again */
    assert_int_equal(nmade, 7);

    /* stop: everything goes, made or being made */
    wk_prewarm_stop(p);
    assert_int_equal(ndropped, 3); /* f's one, g's two being made */
    all_gone();
    assert_null(wk_prewarm_take(p, &c.spec));
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* the closed timers */
    wk_prewarm_free(p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
