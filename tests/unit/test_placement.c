/*
 * test_placement.c: placement policies as a researcher compares them: kube-scheduler's scores
 * for the same inputs (the original's vectors and more), filtering by free capacity, batch
 * placement, round-robin that never spins, chbl's bound and stickiness.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

static struct cp_node node(const char *name, int64_t cpu_cap, int64_t mem_cap, int64_t cpu_used,
                           int64_t mem_used)
{
    return (struct cp_node){.name = name,
                            .cpu_cap = cpu_cap,
                            .mem_cap = mem_cap,
                            .cpu_used = cpu_used,
                            .mem_used = mem_used,
                            .schedulable = true};
}

static void test_kube_scheduler_vectors(void **state)
{
    /* the original's k8s_placement_test.go, from kube-scheduler's noderesources tests:
     * request (1000, 2000) on n1 (4000, 10000) holding (2000, 4000) and n2 (6000, 10000)
     * holding (1000, 2000) */
    assert_int_equal(cp_score_least_allocated(4000, 10000, 3000, 6000), 32);
    assert_int_equal(cp_score_least_allocated(6000, 10000, 2000, 4000), 63);
    /* request (3000, 5000) on n1 (10000, 20000) holding (3000, 0) and n2 (10000, 50000)
     * holding (3000, 5000) */
    assert_int_equal(cp_score_balanced(10000, 20000, 6000, 5000), 82);
    assert_int_equal(cp_score_balanced(10000, 50000, 6000, 10000), 80);
    /* more: kube-scheduler's "nothing scheduled, resources requested, differently sized
     * machines": (25 + 50) / 2 = 37 and (50 + 50) / 2 = 50 */
    assert_int_equal(cp_score_least_allocated(4000, 10000, 3000, 5000), 37);
    assert_int_equal(cp_score_least_allocated(6000, 10000, 3000, 5000), 50);
    /* an empty node; a request above capacity scores 0 for that resource */
    assert_int_equal(cp_score_least_allocated(4000, 8192, 0, 0), 100);
    assert_int_equal(cp_score_least_allocated(4000, 8192, 5000, 0), 50);
    /* perfectly balanced; fractions capped at 1 */
    assert_int_equal(cp_score_balanced(4000, 8000, 1000, 2000), 100);
    assert_int_equal(cp_score_balanced(1000, 1000, 3000, 0), 50);
}

static void test_kubernetes_picks_best_and_batches(void **state)
{
    struct cp_node n[2] = {node("n1", 4000, 10000, 2000, 4000),
                           node("n2", 6000, 10000, 1000, 2000)};
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_KUBERNETES, 0, 1);
    size_t chosen[8];
    /* n1: 32 + 92, n2: 63 + 96 */
    assert_int_equal(cp_place(&p, n, 2, "f", 1000, 2000, 1, chosen), 1);
    assert_int_equal(chosen[0], 1);
    assert_int_equal(n[1].cpu_used, 2000);
    assert_int_equal(n[1].mem_used, 4000);
    /* a batch of up to 8 more: each sees the ones before, nothing goes beyond capacity */
    unsigned k = cp_place(&p, n, 2, "f", 1000, 2000, 8, chosen);
    assert_int_equal(n[0].cpu_used + n[1].cpu_used, 2000 + 2000 + 1000 * (int64_t)k);
    assert_true(n[0].cpu_used <= 4000 && n[1].cpu_used <= 6000);
    assert_true(n[0].mem_used <= 10000 && n[1].mem_used <= 10000);
    assert_int_equal(k, 5); /* n1 has cpu for 2 more, n2 memory for 3 more */
    cp_placer_deinit(&p);
}

static void test_filter_by_capacity(void **state)
{
    struct cp_node n[3] = {node("a", 1000, 1024, 900, 0), node("b", 1000, 1024, 0, 1000),
                           node("c", 1000, 1024, 0, 0)};
    n[2].schedulable = false;
    for (int pol = 0; cp_place_policy_names[pol]; pol++) {
        struct cp_placer p;
        cp_placer_init(&p, (enum cp_place_policy)pol, 0.25, 7);
        size_t chosen[4];
        /* 200m/64 MiB fits nowhere: a lacks cpu, b memory, c is unschedulable */
        assert_int_equal(cp_place(&p, n, 3, "f", 200, 64, 1, chosen), 0);
        /* 100m/16 MiB fits once on a (100m free) and once on b (24 MiB free) */
        assert_int_equal(cp_place(&p, n, 3, "f", 100, 16, 4, chosen), 2);
        assert_true(chosen[0] != chosen[1] && chosen[0] < 2 && chosen[1] < 2);
        n[0].cpu_used = 900, n[0].mem_used = 0, n[0].sandboxes = 0;
        n[1].cpu_used = 0, n[1].mem_used = 1000, n[1].sandboxes = 0;
        cp_placer_deinit(&p);
    }
}

static void test_round_robin_stable_and_never_spins(void **state)
{
    struct cp_node n[3] = {node("a", 10000, 10000, 0, 0), node("b", 10000, 10000, 0, 0),
                           node("c", 10000, 10000, 0, 0)};
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_ROUND_ROBIN, 0, 1);
    size_t chosen[6];
    assert_int_equal(cp_place(&p, n, 3, "f", 1, 1, 6, chosen), 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(chosen[i], i % 3);
    /* the list shrinks below the position (the original's CAS loop spun forever here) */
    assert_int_equal(cp_place(&p, n, 1, "f", 1, 1, 2, chosen), 2);
    assert_int_equal(chosen[0], 0);
    /* a full node is skipped, the order goes on */
    n[1].cpu_used = 10000;
    p.rr = 0;
    assert_int_equal(cp_place(&p, n, 3, "f", 1, 1, 4, chosen), 4);
    assert_int_equal(chosen[0], 0);
    assert_int_equal(chosen[1], 2);
    assert_int_equal(chosen[2], 0);
    assert_int_equal(chosen[3], 2);
    cp_placer_deinit(&p);
}

static void test_random_is_seeded_and_spreads(void **state)
{
    struct cp_node a[4], b[4];
    const char *names[4] = {"w0", "w1", "w2", "w3"};
    for (int i = 0; i < 4; i++)
        a[i] = b[i] = node(names[i], 1000000, 1000000, 0, 0);
    struct cp_placer p, q;
    cp_placer_init(&p, CP_PLACE_RANDOM, 0, 42);
    cp_placer_init(&q, CP_PLACE_RANDOM, 0, 42);
    size_t x[4000], y[4000];
    assert_int_equal(cp_place(&p, a, 4, "f", 1, 1, 4000, x), 4000);
    assert_int_equal(cp_place(&q, b, 4, "f", 1, 1, 4000, y), 4000);
    assert_memory_equal(x, y, sizeof(x)); /* same seed, same placements */
    for (int i = 0; i < 4; i++)           /* about 1000 each */
        assert_true(a[i].sandboxes > 850 && a[i].sandboxes < 1150);
    cp_placer_deinit(&p);
    cp_placer_deinit(&q);
}

static void test_chbl_bound_over_random_placements(void **state)
{
    enum { N = 10 };
    struct cp_node n[N];
    char names[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "w%d", i);
        n[i] = node(names[i], 1 << 30, 1 << 30, 0, 0);
    }
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_CHBL, 0.25, 3);
    srand(5);
    unsigned total = 0;
    for (int k = 0; k < 10000; k++) {
        char fn[16];
        snprintf(fn, sizeof(fn), "f%d", rand() % 1000);
        unsigned bound = cp_chbl_bound(0.25, total, N);
        size_t c;
        assert_int_equal(cp_place(&p, n, N, fn, 1, 1, 1, &c), 1);
        total++;
        for (int i = 0; i < N; i++)
            if (n[i].sandboxes > bound)
                fail_msg("placement %d: %s holds %u > bound %u", k, n[i].name, n[i].sandboxes,
                         bound);
        /* now and then one goes away (scale-down), so loads move both ways */
        if (k % 3 == 2) {
            int i = rand() % N;
            if (n[i].sandboxes) {
                n[i].sandboxes--;
                total--;
            }
        }
    }
    cp_placer_deinit(&p);
}

static void test_chbl_same_function_same_worker(void **state)
{
    enum { N = 8 };
    struct cp_node n[N];
    char names[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "w%d", i);
        n[i] = node(names[i], 100000, 100000, 0, 0);
        n[i].sandboxes = 10; /* a balanced cluster */
    }
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_CHBL, 0.25, 1);
    size_t first, c;
    assert_int_equal(cp_place(&p, n, N, "image-heavy", 100, 128, 1, &first), 1);
    for (int k = 0; k < 20; k++) { /* scale 1 -> 0 -> 1 ...: back to the same worker */
        n[first].sandboxes--;
        n[first].cpu_used -= 100;
        n[first].mem_used -= 128;
        assert_int_equal(cp_place(&p, n, N, "image-heavy", 100, 128, 1, &c), 1);
        assert_int_equal(c, first);
    }
    /* while it fits and stays under the bound, a batch of 2 adds to it first */
    assert_int_equal(cp_place(&p, n, N, "image-heavy", 100, 128, 1, &c), 1);
    assert_int_equal(c, first);
    /* once that worker cannot take it (full), the next one on the ring does, and that is
     * again the same one every time */
    n[first].cpu_used = 100000;
    size_t second, again;
    assert_int_equal(cp_place(&p, n, N, "image-heavy", 100, 128, 1, &second), 1);
    assert_true(second != first);
    n[second].sandboxes--;
    n[second].cpu_used -= 100;
    n[second].mem_used -= 128;
    assert_int_equal(cp_place(&p, n, N, "image-heavy", 100, 128, 1, &again), 1);
    assert_int_equal(again, second);
    /* different functions spread over the workers */
    unsigned used[N] = {0};
    for (int k = 0; k < 200; k++) {
        char fn[16];
        snprintf(fn, sizeof(fn), "fn-%d", k);
        struct cp_node m[N];
        memcpy(m, n, sizeof(m));
        m[first].cpu_used = 0;
        assert_int_equal(cp_place(&p, m, N, fn, 1, 1, 1, &c), 1);
        used[c]++;
    }
    for (int i = 0; i < N; i++)
        assert_true(used[i] > 5);
    cp_placer_deinit(&p);
}

/* ---- big clusters: sampled where the policy allows (issue 16) ------------------------------ */

#define BIG 1000

static struct cp_node *big_cluster(char (*names)[16])
{
    struct cp_node *n = calloc(BIG, sizeof(*n));
    for (size_t i = 0; i < BIG; i++) {
        snprintf(names[i], sizeof(names[i]), "w%04zu", i);
        n[i] = node(names[i], 4000, 8192, 0, 0);
    }
    return n;
}

/* Random over a big cluster samples: it lands only where the sandbox fits, and on every such
 * node about equally (uniform among the nodes with room, as the scan was). */
static void test_big_random_only_where_it_fits(void **state)
{
    static char names[BIG][16];
    struct cp_node *n = big_cluster(names);
    for (size_t i = 1; i < BIG; i += 2)
        n[i].schedulable = false; /* odd ones: no room */
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_RANDOM, 0, 11);
    static size_t chosen[20 * BIG];
    unsigned k = cp_place(&p, n, BIG, "f", 10, 10, 20 * BIG, chosen);
    assert_int_equal(k, 20 * BIG);
    unsigned min = ~0u, max = 0;
    for (size_t i = 0; i < BIG; i++) {
        if (i % 2) {
            assert_int_equal(n[i].sandboxes, 0);
            continue;
        }
        min = n[i].sandboxes < min ? n[i].sandboxes : min;
        max = n[i].sandboxes > max ? n[i].sandboxes : max;
    }
    assert_true(min >= 15 && max <= 65); /* 40 each on average */
    cp_placer_deinit(&p);
    free(n);
}

/* A big cluster with room on one node only: random (its draws miss) and kubernetes (its sample
 * is empty) still find that node, and both say no once it is full. */
static void test_big_nearly_full_still_found(void **state)
{
    static char names[BIG][16];
    enum cp_place_policy pols[] = {CP_PLACE_RANDOM, CP_PLACE_KUBERNETES, CP_PLACE_ROUND_ROBIN};
    for (size_t k = 0; k < sizeof(pols) / sizeof(pols[0]); k++) {
        struct cp_node *n = big_cluster(names);
        for (size_t i = 0; i < BIG; i++)
            n[i].cpu_used = i == 777 ? 3900 : 4000; /* room for one on w0777 */
        struct cp_placer p;
        cp_placer_init(&p, pols[k], 0, 3);
        size_t chosen[2];
        assert_int_equal(cp_place(&p, n, BIG, "f", 100, 10, 2, chosen), 1);
        assert_int_equal(chosen[0], 777);
        assert_int_equal(cp_place(&p, n, BIG, "f", 100, 10, 1, chosen), 0);
        cp_placer_deinit(&p);
        free(n);
    }
}

/* Kubernetes over a big cluster scores a bounded window of feasible nodes from a rotating
 * start (kube-scheduler's percentageOfNodesToScore): identical empty nodes fill evenly. */
static void test_big_kubernetes_spreads(void **state)
{
    static char names[BIG][16];
    struct cp_node *n = big_cluster(names);
    struct cp_placer p;
    cp_placer_init(&p, CP_PLACE_KUBERNETES, 0, 5);
    static size_t chosen[2 * BIG];
    assert_int_equal(cp_place(&p, n, BIG, "f", 100, 100, 2 * BIG, chosen), 2 * BIG);
    for (size_t i = 0; i < BIG; i++)
        assert_true(n[i].sandboxes >= 1 && n[i].sandboxes <= 3);
    cp_placer_deinit(&p);
    free(n);
}

/* chbl with a caller that says when its view changed places as one that does not (which
 * compares every name each time), and follows a change it is told about. */
static void test_chbl_view_generation(void **state)
{
    static char names[BIG][16];
    struct cp_node *a = big_cluster(names), *b = big_cluster(names);
    struct cp_node *va[BIG], *vb[BIG];
    for (size_t i = 0; i < BIG; i++) {
        va[i] = &a[i];
        vb[i] = &b[i];
    }
    struct cp_placer pa, pb;
    cp_placer_init(&pa, CP_PLACE_CHBL, 0.25, 1);
    cp_placer_init(&pb, CP_PLACE_CHBL, 0.25, 1);
    cp_placer_view_changed(&pb);
    for (int round = 0; round < 2; round++) {
        for (int f = 0; f < 300; f++) {
            char fn[16];
            snprintf(fn, sizeof(fn), "fn%d", f);
            size_t ca, cb;
            assert_int_equal(cp_place_view(&pa, va, BIG, fn, 10, 10, 1, &ca), 1);
            assert_int_equal(cp_place_view(&pb, vb, BIG, fn, 10, 10, 1, &cb), 1);
            assert_int_equal(ca, cb);
        }
        /* the view changes: the first 500 nodes leave it (as if renamed away) */
        for (size_t i = 0; i < BIG / 2; i++) {
            va[i] = &a[BIG / 2 + i];
            vb[i] = &b[BIG / 2 + i];
        }
        cp_placer_view_changed(&pb);
    }
    cp_placer_deinit(&pa);
    cp_placer_deinit(&pb);
    free(a);
    free(b);
}

static void test_policy_names(void **state)
{
    assert_int_equal(cp_place_policy_parse("random"), CP_PLACE_RANDOM);
    assert_int_equal(cp_place_policy_parse("round-robin"), CP_PLACE_ROUND_ROBIN);
    assert_int_equal(cp_place_policy_parse("kubernetes"), CP_PLACE_KUBERNETES);
    assert_int_equal(cp_place_policy_parse("chbl"), CP_PLACE_CHBL);
    assert_int_equal(cp_place_policy_parse("best"), -1);
    assert_int_equal(cp_chbl_bound(0.25, 99, 10), 13); /* ceil(1.25 x 100 / 10) */
    assert_int_equal(cp_chbl_bound(0.25, 0, 4), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kube_scheduler_vectors),
        cmocka_unit_test(test_kubernetes_picks_best_and_batches),
        cmocka_unit_test(test_filter_by_capacity),
        cmocka_unit_test(test_round_robin_stable_and_never_spins),
        cmocka_unit_test(test_random_is_seeded_and_spreads),
        cmocka_unit_test(test_chbl_bound_over_random_placements),
        cmocka_unit_test(test_chbl_same_function_same_worker),
        cmocka_unit_test(test_big_random_only_where_it_fits),
        cmocka_unit_test(test_big_nearly_full_still_found),
        cmocka_unit_test(test_big_kubernetes_spreads),
        cmocka_unit_test(test_chbl_view_generation),
        cmocka_unit_test(test_policy_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
