/*
 * test_resources.c: the accounting rule the control plane and the worker share
 * (lib/resources.c): what a sandbox takes, a worker's schedulable CPU, the CPU
 * limit policy as an operator writes it, and placement with a worker's floors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dirigent/resources.h"
#include "placement.h"

static void test_take_is_request_or_floor(void **state)
{
    struct dg_res_node n = {.cpu_milli = 2000,
                            .memory_mib = 4096,
                            .cpu_overcommit = DG_RES_CPU_OVERCOMMIT,
                            .min_cpu_milli = DG_RES_MIN_CPU_MILLI,
                            .min_memory_mib = DG_RES_MIN_MEMORY_MIB};
    int64_t c, m;
    /* InVitro's trace function: 100 m, a tenth of 152 MiB */
    dg_res_take(&n, 100, 15, &c, &m);
    assert_int_equal(c, 100);
    assert_int_equal(m, 32);
    /* 0 (InVitro under 10 MiB) and the registration's default 1 are the floor */
    dg_res_take(&n, 0, 0, &c, &m);
    assert_int_equal(c, 100);
    assert_int_equal(m, 32);
    dg_res_take(&n, 1, 1, &c, &m);
    assert_int_equal(c, 100);
    assert_int_equal(m, 32);
    /* above the floor: the request */
    dg_res_take(&n, 1500, 204, &c, &m);
    assert_int_equal(c, 1500);
    assert_int_equal(m, 204);
    /* a worker that advertises no floors (an older worker, a test's fake): 1 each */
    struct dg_res_node bare = {.cpu_milli = 1000, .memory_mib = 1024};
    dg_res_take(&bare, 0, 0, &c, &m);
    assert_int_equal(c, 1);
    assert_int_equal(m, 1);
}

static void test_schedulable_cpu(void **state)
{
    struct dg_res_node n = {.cpu_milli = 2000, .memory_mib = 4096, .cpu_overcommit = 10};
    assert_int_equal(dg_res_cpu_schedulable(&n), 20000);
    n.cpu_overcommit = 1.5;
    assert_int_equal(dg_res_cpu_schedulable(&n), 3000);
    n.cpu_overcommit = 0; /* not advertised: none */
    assert_int_equal(dg_res_cpu_schedulable(&n), 2000);
    /* with the defaults a 2-core worker holds 200 sandboxes at the floor */
    n.cpu_overcommit = DG_RES_CPU_OVERCOMMIT;
    assert_int_equal(dg_res_cpu_schedulable(&n) / DG_RES_MIN_CPU_MILLI, 200);
}

static void test_cpu_limit_policy(void **state)
{
    struct dg_cpu_limit l;
    struct dg_err err = {0};
    assert_int_equal(dg_cpu_limit_parse("none", &l, &err), 0);
    assert_int_equal(l.kind, DG_CPU_LIMIT_NONE);
    assert_int_equal(dg_cpu_limit_quota(&l, 100), 0);
    assert_int_equal(dg_cpu_limit_parse("request", &l, &err), 0);
    assert_int_equal(dg_cpu_limit_quota(&l, 100), 100);
    assert_int_equal(dg_cpu_limit_parse("2x", &l, &err), 0);
    assert_int_equal(l.kind, DG_CPU_LIMIT_FACTOR);
    assert_int_equal(dg_cpu_limit_quota(&l, 100), 200);
    assert_int_equal(dg_cpu_limit_parse("1.5", &l, &err), 0);
    assert_int_equal(dg_cpu_limit_quota(&l, 333), 500);
    assert_int_equal(dg_cpu_limit_parse("0.5X", &l, &err), 0);
    assert_int_equal(dg_cpu_limit_quota(&l, 1), 1); /* never a zero quota */
    static const char *const bad[] = {"",    "x",   "0x",  "-2x",  "2xx",     "two",
                                      "nan", "inf", "2 x", "1e9x", "Request", "+2x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dg_err_clear(&err);
        assert_int_equal(dg_cpu_limit_parse(bad[i], &l, &err), DG_E_INVAL);
        assert_non_null(strstr(err.msg, "expected none, request or a factor"));
    }
}

static void test_shares(void **state)
{
    assert_int_equal(dg_res_cpu_shares(1000), 1024);
    assert_int_equal(dg_res_cpu_shares(100), 102);
    assert_int_equal(dg_res_cpu_shares(1), 2);
    assert_int_equal(dg_res_cpu_shares(0), 2);
    assert_int_equal(dg_res_cpu_shares(1000000), 262144);
}

/* Placement reserves by the same rule: 1 m requests on a worker with a 100 m floor take 100 m
 * each, so a 2-core worker with overcommit 10 holds 200 of them, not 20,000. */
static void test_placement_uses_floors(void **state)
{
    struct dg_res_node r = {.cpu_milli = 2000, .memory_mib = 1 << 20, .cpu_overcommit = 10};
    struct cp_node n = {.name = "w",
                        .cpu_cap = dg_res_cpu_schedulable(&r),
                        .mem_cap = r.memory_mib,
                        .min_cpu = 100,
                        .min_mem = 32,
                        .schedulable = true};
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_KUBERNETES, 0, 1);
    size_t *chosen = calloc(1000, sizeof(*chosen));
    assert_int_equal(cp_place(&p, &n, 1, "f", 1, 1, 1000, chosen), 200);
    assert_int_equal(n.cpu_used, 20000);
    assert_int_equal(n.mem_used, 200 * 32);
    /* memory binds too: 204 MiB each (InVitro's RPS functions) on 1 GiB: 5 */
    struct cp_node m = {.name = "m",
                        .cpu_cap = 20000,
                        .mem_cap = 1024,
                        .min_cpu = 100,
                        .min_mem = 32,
                        .schedulable = true};
    assert_int_equal(cp_place(&p, &m, 1, "g", 100, 204, 1000, chosen), 5);
    free(chosen);
    cp_placer_deinit(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_is_request_or_floor), cmocka_unit_test(test_schedulable_cpu),
        cmocka_unit_test(test_cpu_limit_policy),         cmocka_unit_test(test_shares),
        cmocka_unit_test(test_placement_uses_floors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
