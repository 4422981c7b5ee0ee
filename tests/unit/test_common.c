/*
 * test_common.c: errors, string views, integer parsing, byte buffers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "dirigent/strmap.h"

static void test_err_set_and_wrap(void **state)
{
    struct dg_err e = {0};
    assert_int_equal(dg_err_set(&e, DG_E_INVAL, "field '%s': expected %s", "port", "a port"),
                     DG_E_INVAL);
    assert_string_equal(e.msg, "field 'port': expected a port");
    assert_int_equal(dg_err_wrap(&e, "registration"), DG_E_INVAL);
    assert_string_equal(e.msg, "registration: field 'port': expected a port");
    /* NULL err is allowed and still returns the code */
    assert_int_equal(dg_err_set(NULL, -5, "x"), -5);
    /* a long context truncates instead of overflowing */
    char big[600];
    memset(big, 'c', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    dg_err_wrap(&e, "%s", big);
    assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
    dg_err_clear(&e);
    assert_int_equal(e.code, 0);
    assert_string_equal(e.msg, "");
}

static void test_str_to_int(void **state)
{
    int64_t i;
    uint64_t u;
    assert_true(dg_str_to_i64(dg_str_c("-42"), &i));
    assert_int_equal(i, -42);
    assert_true(dg_str_to_i64(dg_str_c("9223372036854775807"), &i));
    assert_int_equal(i, INT64_MAX);
    assert_true(dg_str_to_i64(dg_str_c("-9223372036854775808"), &i));
    assert_true(i == INT64_MIN);
    assert_false(dg_str_to_i64(dg_str_c("9223372036854775808"), &i));
    assert_false(dg_str_to_i64(dg_str_c("12a"), &i));
    assert_false(dg_str_to_i64(dg_str_c(""), &i));
    assert_false(dg_str_to_i64(dg_str_c("-"), &i));
    assert_true(dg_str_to_u64(dg_str_c("18446744073709551615"), &u));
    assert_true(u == UINT64_MAX);
    assert_false(dg_str_to_u64(dg_str_c("18446744073709551616"), &u));
    assert_false(dg_str_to_u64(dg_str_c("-1"), &u));
    /* a view, not a C string: only its length counts */
    assert_true(dg_str_to_u64((struct dg_str){"123456", 3}, &u));
    assert_int_equal(u, 123);
}

static void test_str_compare(void **state)
{
    assert_true(dg_str_eq(DG_STR("host"), "host"));
    assert_false(dg_str_eq(DG_STR("host"), "hos"));
    assert_true(dg_str_caseeq(DG_STR("Content-Length"), "content-length"));
    assert_false(dg_str_caseeq((struct dg_str){NULL, 0}, ""));
    char *d = dg_str_dup((struct dg_str){"abcdef", 3});
    assert_string_equal(d, "abc");
    free(d);
}

static void test_buf(void **state)
{
    struct dg_buf b = {0};
    for (int i = 0; i < 1000; i++)
        dg_buf_printf(&b, "%d,", i);
    assert_int_equal(b.len, strlen(b.data));
    assert_memory_equal(b.data, "0,1,2,", 6);
    assert_string_equal(b.data + b.len - 4, "999,");
    dg_buf_reset(&b);
    assert_int_equal(b.len, 0);
    dg_buf_append(&b, "x\0y", 3); /* binary safe */
    assert_int_equal(b.len, 3);
    assert_int_equal(b.data[2], 'y');
    dg_buf_free(&b);
    assert_null(b.data);
    char *s = dg_xasprintf("%s-%d", "fn", 7);
    assert_string_equal(s, "fn-7");
    free(s);
}

static void test_log_levels(void **state)
{
    int l;
    assert_true(dg_log_level_parse("debug", &l));
    assert_int_equal(l, DG_LOG_DEBUG);
    assert_false(dg_log_level_parse("loud", &l));
}

static void test_clock_monotonic(void **state)
{
    uint64_t a = dg_now_us(), b = dg_now_us();
    assert_true(b >= a);
    assert_true(dg_wall_ms() > 1700000000000ull);
}

/* The registries' name index: against a plain array as the model, through growth,
 * removals (markers) and re-insertion. */
static void test_strmap(void **state)
{
    enum { N = 20000 };
    char(*names)[16] = calloc(N, 16);
    int *vals = calloc(N, sizeof(int));
    bool *in = calloc(N, sizeof(bool));
    struct dg_strmap m = {0};
    assert_null(dg_strmap_get(&m, dg_str_c("x")));
    assert_null(dg_strmap_del(&m, dg_str_c("x")));
    for (int i = 0; i < N; i++) {
        snprintf(names[i], 16, "fn-%d", i);
        vals[i] = i;
        dg_strmap_put(&m, dg_str_c(names[i]), &vals[i]);
        in[i] = true;
    }
    assert_int_equal(m.n, N);
    assert_true(m.n * 4 <= m.cap * 3);
    uint64_t seed = 7;
    for (int round = 0; round < 3 * N; round++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        int i = (int)(seed % N);
        if (in[i]) {
            assert_ptr_equal(dg_strmap_del(&m, dg_str_c(names[i])), &vals[i]);
            in[i] = false;
        } else {
            dg_strmap_put(&m, dg_str_c(names[i]), &vals[i]);
            in[i] = true;
        }
    }
    size_t live = 0;
    for (int i = 0; i < N; i++) {
        live += in[i];
        void *v = dg_strmap_get(&m, dg_str_c(names[i]));
        if (in[i])
            assert_ptr_equal(v, &vals[i]);
        else
            assert_null(v);
    }
    assert_int_equal(m.n, live);
    /* a view that is a prefix of a key is another key */
    assert_null(dg_strmap_get(&m, (struct dg_str){names[1234], 4}));
    /* replacing keeps one entry */
    int other = -1;
    dg_strmap_put(&m, dg_str_c("fn-1"), &other);
    dg_strmap_put(&m, dg_str_c("fn-1"), &other);
    assert_ptr_equal(dg_strmap_get(&m, dg_str_c("fn-1")), &other);
    dg_strmap_free(&m);
    free(names);
    free(vals);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_wrap), cmocka_unit_test(test_str_to_int),
        cmocka_unit_test(test_str_compare),      cmocka_unit_test(test_buf),
        cmocka_unit_test(test_log_levels),       cmocka_unit_test(test_clock_monotonic),
        cmocka_unit_test(test_strmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
