/*
 * test_autoscaler.c: the KPA decider against hand-computed vectors. Defaults:
 * target 1 (concurrency 1 x 100%), tick 2 s, stable window 30 ticks, panic
 * window 3 ticks, panic at 2x, scale up x1000, scale down /2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autoscaler.h"

static struct cp_as_config cfg;
static struct cp_as_state st;
static uint64_t now;

static int setup(void **state)
{
    cp_as_config_default(&cfg, false);
    cp_as_state_init(&st, &cfg);
    now = 1000000;
    return 0;
}

static int teardown(void **state)
{
    cp_as_state_deinit(&st);
    return 0;
}

/* One tick: advance the clock, decide. */
static struct cp_as_decision tick(int ready, double sample)
{
    struct cp_as_decision d;
    now += cfg.tick_ms;
    cp_as_decide(&cfg, &st, ready, sample, now, &d);
    return d;
}

static void test_defaults(void **state)
{
    assert_int_equal(cfg.container_concurrency, 1);
    assert_true(cp_as_target(&cfg) == 1.0);
    assert_int_equal(cfg.upper_bound, INT32_MAX);
    struct cp_as_config sweep;
    cp_as_config_default(&sweep, true);
    assert_int_equal(sweep.stable_window_ms, 6000);
    assert_int_equal(sweep.panic_window_ms, 2000);
    assert_int_equal(sweep.upper_bound, 1);
    /* unlimited concurrency targets 100 per sandbox; 70% of 1 is 0.7 */
    sweep.container_concurrency = 0;
    assert_true(cp_as_target(&sweep) == 100.0);
    sweep.container_concurrency = 1;
    sweep.target_pct = 70;
    assert_true(cp_as_target(&sweep) == 0.7);
}

static void test_scale_from_zero(void **state)
{
    /* ready 0, first metric 3: window = [3], ceil(3/1) = 3, 3/max(1,0) >= 2: panic */
    struct cp_as_decision d = tick(0, 3);
    assert_int_equal(d.desired, 3);
    assert_true(d.panic);
    /* a single request from zero: 1 sandbox; 1/1 < 2: no panic */
    cp_as_state_deinit(&st);
    cp_as_state_init(&st, &cfg);
    d = tick(0, 1);
    assert_int_equal(d.desired, 1);
    assert_false(d.panic);
}

static void test_steady_load(void **state)
{
    for (int i = 0; i < 40; i++) {
        struct cp_as_decision d = tick(5, 5);
        assert_int_equal(d.desired, 5);
        assert_false(d.panic);
    }
}

static void test_step_into_panic_and_stay(void **state)
{
    for (int i = 0; i < 10; i++)
        assert_int_equal(tick(2, 2).desired, 2);
    /* step to 10: panic avg (2+2+10)/3 = 4.67 -> 5; 5/2 = 2.5 >= 2: panic.
     * stable avg (10*2+10)/11 = 2.73 -> 3; desired max(3, 5) = 5 */
    struct cp_as_decision d = tick(2, 10);
    assert_true(d.panic);
    assert_int_equal(d.desired, 5);
    /* next sample 4 with 5 ready: panic avg (2+10+4)/3 = 5.33 -> 6; 6/5 < 2 (no extension),
     * still in panic; stable (20+10+4)/12 = 2.83 -> 3; desired max(3, 6, 5) = 6 */
    d = tick(5, 4);
    assert_true(d.panic);
    assert_int_equal(d.desired, 6);
    /* load gone: in panic the count never drops below the panic maximum (6) */
    for (int i = 0; i < 20; i++) {
        d = tick(6, 0);
        assert_true(d.panic);
        assert_int_equal(d.desired, 6);
    }
}

static void test_leave_panic_after_stable_window(void **state)
{
    struct cp_as_decision d = tick(1, 4); /* 4/1 >= 2: panic at t0 */
    assert_true(d.panic);
    assert_int_equal(d.desired, 4);
    uint64_t t0 = now;
    /* no further reason to panic: stays in panic while now <= t0 + 60 s */
    while (now + cfg.tick_ms <= t0 + cfg.stable_window_ms) {
        d = tick(4, 1);
        assert_true(d.panic);
        assert_int_equal(d.desired, 4);
    }
    /* first tick after the stable window: out of panic. The newest 30 samples are all 1
     * (the 4 has left the window): stable avg 1, but one step down is bounded by
     * floor(4/2) = 2 */
    d = tick(4, 1);
    assert_false(d.panic);
    assert_int_equal(d.desired, 2);
    /* then 2 -> max(1, floor(2/2)=1) = 1 */
    d = tick(2, 1);
    assert_int_equal(d.desired, 1);
}

static void test_scale_down_rate(void **state)
{
    for (int i = 0; i < 30; i++)
        assert_int_equal(tick(10, 10).desired, 10);
    /* k zero samples: stable avg (30-k)*10/30, so ceil((30-k)/3) sandboxes, but never below
     * floor(10/2) = 5 in one step with 10 ready */
    for (int k = 1; k <= 30; k++) {
        struct cp_as_decision d = tick(10, 0);
        int want = (30 - k + 2) / 3; /* ceil((30-k)/3) */
        assert_int_equal(d.desired, want > 5 ? want : 5);
        assert_false(d.panic);
    }
    assert_int_equal(tick(5, 0).desired, 2); /* floor(5/2) */
    assert_int_equal(tick(2, 0).desired, 1); /* floor(2/2) */
    assert_int_equal(tick(1, 0).desired, 0); /* floor(1/2) = 0: scale to zero */
}

static void test_scale_to_zero_after_stable_window(void **state)
{
    struct cp_as_decision d = tick(0, 1);
    assert_int_equal(d.desired, 1);
    /* samples of 0: the average stays > 0 until 30 zero samples fill the window */
    for (int i = 0; i < 29; i++) {
        d = tick(1, 0);
        assert_int_equal(d.desired, 1);
    }
    d = tick(1, 0); /* the 30th zero sample pushes the 1 out: 60 s after the last request */
    assert_true(d.stable_avg == 0);
    assert_int_equal(d.desired, 0);
}

static void test_bounds(void **state)
{
    cfg.upper_bound = 3;
    assert_int_equal(tick(1, 50).desired, 3);
    cp_as_state_deinit(&st);
    cfg.upper_bound = INT32_MAX;
    cfg.lower_bound = 2;
    cp_as_state_init(&st, &cfg);
    assert_int_equal(tick(2, 0).desired, 2); /* never below the lower bound, even idle */
    assert_int_equal(tick(0, 0).desired, 2);
}

static void test_scale_up_rate(void **state)
{
    cfg.max_scale_up_rate = 2;
    /* 1 ready, 100 requests: ceil(2 * 1) = 2 at most */
    assert_int_equal(tick(1, 100).desired, 2);
    /* 2 ready: 4 at most */
    assert_int_equal(tick(2, 100).desired, 4);
}

static void test_cold_start_sweep_profile(void **state)
{
    cp_as_state_deinit(&st);
    cp_as_config_default(&cfg, true); /* stable 3 ticks, panic 1 tick, upper bound 1 */
    cp_as_state_init(&st, &cfg);
    assert_int_equal(tick(0, 5).desired, 1); /* capped at 1 */
    assert_int_equal(tick(1, 0).desired, 1); /* window [5,0] avg 2.5 */
    assert_int_equal(tick(1, 0).desired, 1); /* [5,0,0] */
    /* [0,0,0] -> 0: 6 s after the last request; in panic? the 5 entered panic at the first
     * tick (5/1 >= 2), and panic holds for the 6 s stable window */
    struct cp_as_decision d = tick(1, 0);
    assert_int_equal(d.desired, d.panic ? 1 : 0);
    d = tick(1, 0);
    assert_false(d.panic);
    assert_int_equal(d.desired, 0);
}

static void test_ring_wraps(void **state)
{
    /* many ticks: the newest 3 samples always make the panic average (the original read
     * the wrong buckets near the wrap) */
    struct cp_as_decision d;
    for (int i = 0; i < 100; i++)
        d = tick(1, (double)(i % 7));
    /* last three samples: 97%7=6, 98%7=0, 99%7=1 -> (6+0+1)/3 */
    assert_true(d.panic_avg > 2.333 && d.panic_avg < 2.334);
    /* last 30: i = 70..99, (i % 7) sums: 70..76 full cycle (21) x4 = 84 for 70..97, + 98%7 +
     * 99%7 = 0 + 1 -> 85/30 */
    assert_true(d.stable_avg > 2.8333 && d.stable_avg < 2.8334);
}

/* ---- autoscaler: knative (Knative's KPA where the original differs) ---- */

static int setup_knative(void **state)
{
    cp_as_config_default(&cfg, false);
    cp_as_config_knative(&cfg);
    cp_as_state_init(&st, &cfg);
    now = 1000000;
    return 0;
}

static void test_knative_target_70(void **state)
{
    /* concurrency 1 x 70%: 7 in flight want ceil(7 / 0.7) = 10 sandboxes (dirigent: 7) */
    assert_true(cp_as_target(&cfg) > 0.6999 && cp_as_target(&cfg) < 0.7001);
    struct cp_as_decision d = tick(10, 7);
    assert_int_equal(d.desired, 10);
    /* unlimited concurrency: 100 x 70% = 70 per sandbox; 141 in flight want 3 */
    struct cp_as_config c = cfg;
    c.container_concurrency = 0;
    struct cp_as_state s;
    cp_as_state_init(&s, &c);
    cp_as_decide(&c, &s, 3, 141, now, &d);
    assert_int_equal(d.desired, 3);
    /* EBC = floor(3 x 100 - 211 - 141) = -52: Knative would keep its activator in the path */
    assert_true(d.excess_burst_capacity == -52);
    cp_as_state_deinit(&s);
}

static void test_knative_scale_to_zero_grace(void **state)
{
    struct cp_as_decision d = tick(0, 0.5); /* ceil(0.5 / 0.7) = 1: no panic */
    assert_int_equal(d.desired, 1);
    for (int i = 0; i < 29; i++)
        d = tick(1, 0);
    /* the window is all zeros: the original scales to zero here; Knative keeps the last
     * sandbox for the 30 s grace period (15 ticks) */
    d = tick(1, 0);
    assert_true(d.stable_avg == 0);
    assert_int_equal(d.desired, 1);
    for (int i = 0; i < 14; i++) {
        d = tick(1, 0);
        assert_int_equal(d.desired, 1);
    }
    d = tick(1, 0); /* 30 s after zero was first wanted */
    assert_int_equal(d.desired, 0);
    /* traffic in between resets the grace: a later idle period waits the whole 30 s again */
    d = tick(0, 0);
    assert_int_equal(d.desired, 0);
}

static void test_knative_grace_reset_by_traffic(void **state)
{
    tick(0, 0.5);
    for (int i = 0; i < 30; i++)
        tick(1, 0);
    for (int i = 0; i < 10; i++) /* 20 s into the grace */
        assert_int_equal(tick(1, 0).desired, 1);
    assert_int_equal(tick(1, 0.5).desired, 1); /* a request: the window is no longer zero */
    for (int i = 0; i < 29; i++)
        tick(1, 0);
    /* zero wanted again from here: 15 more ticks of grace before 0 */
    for (int i = 0; i < 15; i++)
        assert_int_equal(tick(1, 0).desired, 1);
    assert_int_equal(tick(1, 0).desired, 0);
}

/* The scale a function is expected to need again (pre-created sandboxes, src/cp/pool.c): the
 * peak of the stable window over the target, rounded up, within the upper bound; it stays
 * while the peak is in the window and goes when the window has passed it. */
static void test_expected_scale(void **state)
{
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 0); /* no sample yet */
    tick(0, 0);
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 0);
    tick(0, 4.2);
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 5);
    for (int i = 0; i < 10; i++)
        tick(5, 1);
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 5); /* the peak is still in the window */
    for (int i = 0; i < 30; i++)                          /* 60 s of 2 s ticks: past it */
        tick(1, 1);
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 1);
    cfg.upper_bound = 3;
    tick(1, 9);
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 3);
    cfg.container_concurrency = 4; /* 9 in flight over 4 slots each: 3 sandboxes */
    cfg.upper_bound = 100;
    assert_int_equal(cp_as_expected_scale(&cfg, &st), 3);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_expected_scale),
        T(test_scale_from_zero),
        T(test_steady_load),
        T(test_step_into_panic_and_stay),
        T(test_leave_panic_after_stable_window),
        T(test_scale_down_rate),
        T(test_scale_to_zero_after_stable_window),
        T(test_bounds),
        T(test_scale_up_rate),
        T(test_cold_start_sweep_profile),
        T(test_ring_wraps),
        cmocka_unit_test_setup_teardown(test_knative_target_70, setup_knative, teardown),
        cmocka_unit_test_setup_teardown(test_knative_scale_to_zero_grace, setup_knative, teardown),
        cmocka_unit_test_setup_teardown(test_knative_grace_reset_by_traffic, setup_knative,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
