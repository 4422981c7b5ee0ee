/*
 * test_trace.c: CSV traces: every row reaches the file, in order, also when the trace is
 * closed while a write is still in flight (a shutdown under load; that once freed the trace
 * twice).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dirigent/trace.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return s;
}

static void check_rows(const char *path, int nrows)
{
    size_t len;
    char *s = read_all(path, &len);
    assert_true(strncmp(s, "a,b\n", 4) == 0);
    char *p = s + 4;
    for (int i = 0; i < nrows; i++) {
        char want[64];
        int n = snprintf(want, sizeof(want), "%d,row-%d\n", i, i);
        if (strncmp(p, want, (size_t)n) != 0)
            fail_msg("row %d: got '%.40s'", i, p);
        p += n;
    }
    assert_int_equal(*p, '\0');
    free(s);
}

static void test_close_with_write_in_flight(void **state)
{
    char dir[] = "/tmp/dg-trace-test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    for (int round = 0; round < 20; round++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct dg_err err = {0};
        char name[32];
        snprintf(name, sizeof(name), "t%d.csv", round);
        struct dg_trace *t = dg_trace_open(&loop, dir, name, "a,b", &err);
        assert_non_null(t);
        /* past 64 KiB: a write starts at once; the close comes while it runs */
        int n = 3000 + round * 100;
        for (int i = 0; i < n; i++)
            dg_trace_row(t, "%d,row-%d", i, i);
        dg_trace_close(t);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        check_rows(path, n);
        unlink(path);
    }
    rmdir(dir);
}

static void test_reopen_appends_without_second_header(void **state)
{
    char dir[] = "/tmp/dg-trace-test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    for (int k = 0; k < 2; k++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct dg_err err = {0};
        struct dg_trace *t = dg_trace_open(&loop, dir, "x.csv", "a,b", &err);
        assert_non_null(t);
        dg_trace_row(t, "%d,row-%d", k, k);
        dg_trace_close(t);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/x.csv", dir);
    check_rows(path, 2);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_with_write_in_flight),
        cmocka_unit_test(test_reopen_appends_without_second_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
