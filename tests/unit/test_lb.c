/*
 * test_lb.c: load-balancing policies over hand-made endpoint lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "lb.h"

/* The policy over an array of endpoint states (dp_lb_pick takes pointers to the caller's
 * endpoints, as the data plane's core holds them). */
static int pick(enum dp_lb_policy p, struct dp_lb_state *s, struct dp_lb_endpoint *eps, size_t n,
                uint32_t cc)
{
    const void *ptrs[8];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &eps[i];
    return dp_lb_pick(p, s, ptrs, 0, n, cc);
}

static void test_parse(void **state)
{
    enum dp_lb_policy p;
    assert_true(dp_lb_policy_parse("least-processed", &p));
    assert_int_equal(p, DP_LB_LEAST_PROCESSED);
    assert_true(dp_lb_policy_parse("knative", &p));
    assert_false(dp_lb_policy_parse("fastest", &p));
}

static void test_no_candidate(void **state)
{
    struct dp_lb_state s = {0};
    struct dp_lb_endpoint eps[2] = {{.in_flight = 1}, {.draining = true}};
    for (int p = DP_LB_RANDOM; p <= DP_LB_KNATIVE; p++) {
        assert_int_equal(pick(p, &s, eps, 2, 1), -1); /* full or draining: wait */
        assert_int_equal(pick(p, &s, eps, 0, 1), -1); /* empty list: no crash */
    }
    /* unlimited concurrency: a busy endpoint still takes more */
    assert_int_equal(pick(DP_LB_ROUND_ROBIN, &s, eps, 2, 0), 0);
}

static void test_random_uniform_over_free(void **state)
{
    struct dp_lb_state s = {.rng = 42};
    struct dp_lb_endpoint eps[4] = {{0}, {.in_flight = 1}, {0}, {0}};
    int count[4] = {0};
    for (int i = 0; i < 3000; i++)
        count[pick(DP_LB_RANDOM, &s, eps, 4, 1)]++;
    assert_int_equal(count[1], 0); /* full */
    for (int i = 0; i < 4; i += 1 + (i == 0))
        assert_true(count[i] > 800 && count[i] < 1200); /* ~1000 each */
}

static void test_round_robin_stable_order(void **state)
{
    struct dp_lb_state s = {0};
    struct dp_lb_endpoint eps[3] = {{0}, {0}, {0}};
    int seq[7];
    for (int i = 0; i < 7; i++)
        seq[i] = pick(DP_LB_ROUND_ROBIN, &s, eps, 3, 1);
    int want[7] = {0, 1, 2, 0, 1, 2, 0};
    assert_memory_equal(seq, want, sizeof(want));
    /* a busy endpoint is skipped, the rotation goes on after it */
    eps[2].in_flight = 1;
    assert_int_equal(pick(DP_LB_ROUND_ROBIN, &s, eps, 3, 1), 1);
    assert_int_equal(pick(DP_LB_ROUND_ROBIN, &s, eps, 3, 1), 0);
    /* the list shrinking below the position does not spin (the original's bug) */
    s.rr = 100;
    assert_int_equal(pick(DP_LB_ROUND_ROBIN, &s, eps, 1, 1), 0);
}

static void test_least_processed(void **state)
{
    struct dp_lb_state s = {0};
    struct dp_lb_endpoint eps[3] = {{.processed = 5}, {.processed = 2}, {.processed = 2}};
    assert_int_equal(pick(DP_LB_LEAST_PROCESSED, &s, eps, 3, 1), 1); /* first on ties */
    eps[1].in_flight = 1;
    assert_int_equal(pick(DP_LB_LEAST_PROCESSED, &s, eps, 3, 1), 2);
}

static void test_knative_by_concurrency(void **state)
{
    struct dp_lb_state s = {.rng = 7};
    struct dp_lb_endpoint eps[3] = {{.in_flight = 2}, {.in_flight = 0}, {.in_flight = 1}};
    /* cc <= 3: first available in list order */
    assert_int_equal(pick(DP_LB_KNATIVE, &s, eps, 3, 3), 0);
    assert_int_equal(pick(DP_LB_KNATIVE, &s, eps, 3, 2), 1); /* 0 is full at 2 */
    /* cc > 3: round-robin over free ones */
    s.rr = 0;
    assert_int_equal(pick(DP_LB_KNATIVE, &s, eps, 3, 10), 0);
    assert_int_equal(pick(DP_LB_KNATIVE, &s, eps, 3, 10), 1);
    /* cc 0: power of two choices never picks the most loaded of three (it always loses) */
    for (int i = 0; i < 200; i++)
        assert_int_not_equal(pick(DP_LB_KNATIVE, &s, eps, 3, 0), 0);
    /* with two, always the less loaded */
    for (int i = 0; i < 50; i++)
        assert_int_equal(pick(DP_LB_KNATIVE, &s, eps + 1, 2, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_no_candidate),
        cmocka_unit_test(test_random_uniform_over_free),
        cmocka_unit_test(test_round_robin_stable_order),
        cmocka_unit_test(test_least_processed),
        cmocka_unit_test(test_knative_by_concurrency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
