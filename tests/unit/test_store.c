/*
 * test_store.c: the CP's store (src/cp/store.h) through its public API on each backend that
 * needs no server: "none" keeps nothing and answers at once; "sqlite" keeps puts and deletes
 * across a reopen, answers writes in the order given and only once durable, scans one kind in
 * key order (blocking or not) and counts what is not yet durable; a bad backend name, a data
 * directory that is a file and a bad Redis address are refused, each naming the culprit. A
 * Redis backend whose server refuses fails a write and the start-up scan with the address (no
 * server started: 127.0.0.1:1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "testlib.h"

/* What the callbacks saw. */
struct seen {
    int done, failed;
    int order[16]; /* the `id` of each callback, in the order they ran */
    char last_err[256];
    char rows[1024]; /* "key=value;" of a scan */
    int want;
    bool all_done; /* done == want */
};

struct wr {
    struct seen *s;
    int id;
};

static void on_done(void *ud, const struct dg_err *err)
{
    struct wr *w = ud;
    w->s->order[w->s->done++] = w->id;
    if (err) {
        w->s->failed++;
        snprintf(w->s->last_err, sizeof(w->s->last_err), "%s", err->msg);
    }
    w->s->all_done = w->s->done >= w->s->want;
}

static void on_row(void *ud, const char *key, const char *value)
{
    struct seen *s = ud;
    snprintf(s->rows + strlen(s->rows), sizeof(s->rows) - strlen(s->rows), "%s=%s;", key, value);
}

/* Runs the loop until n callbacks ran (a bound of 10 s, for a broken store, not a timing). */
/* The end of an asynchronous scan (its `ud` is the rows'). */
static void on_scanned(void *ud, const struct dg_err *err)
{
    struct seen *s = ud;
    s->done++;
    s->failed += err != NULL;
}

static void run_until_done(uv_loop_t *loop, struct seen *s, int n)
{
    s->want = n;
    tl_run_until(loop, &s->all_done, 10000);
    assert_int_equal(s->done, n);
}

static char *tmpdir(void)
{
    char *d = dg_xstrdup("/tmp/dg-test-store.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rmtree(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static void test_none(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct cp_store_opts o = {.backend = "none"};
    struct cp_store *st = cp_store_open(&loop, &o, &err);
    assert_non_null(st);
    assert_string_equal(cp_store_backend(st), "none");
    struct seen s = {0};
    struct wr w = {&s, 1};
    cp_store_put(st, "function", "hello", "{}", on_done, &w);
    assert_int_equal(s.done, 1); /* durable at once: nothing to keep */
    assert_int_equal(s.failed, 0);
    assert_int_equal(cp_store_pending(st), 0);
    assert_int_equal(cp_store_scan(st, "function", on_row, &s, &err), 0);
    assert_string_equal(s.rows, "");
    cp_store_shutdown(st);
    cp_store_close(st);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_refused_settings(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct cp_store_opts o = {.backend = "postgres"};
    assert_null(cp_store_open(&loop, &o, &err));
    assert_string_equal(err.msg, "persistence: expected sqlite, redis or none, got 'postgres'");

    char *d = tmpdir(), file[300];
    snprintf(file, sizeof(file), "%s/file", d);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    o = (struct cp_store_opts){.backend = "sqlite", .dir = file};
    memset(&err, 0, sizeof(err));
    assert_null(cp_store_open(&loop, &o, &err));
    assert_non_null(strstr(err.msg, "sqlite: open '"));
    assert_non_null(strstr(err.msg, file));

    o = (struct cp_store_opts){.backend = "redis", .redis_address = "nohost"};
    memset(&err, 0, sizeof(err));
    assert_null(cp_store_open(&loop, &o, &err));
    assert_string_equal(err.msg, "redis.address: expected HOST:PORT, got 'nohost'");
    rmtree(d);
    free(d);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_sqlite(void **state)
{
    char *d = tmpdir(), dir[300];
    snprintf(dir, sizeof(dir), "%s/a/b", d); /* made with its parents */
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct cp_store_opts o = {.backend = "sqlite", .dir = dir};
    struct cp_store *st = cp_store_open(&loop, &o, &err);
    assert_non_null(st);
    assert_string_equal(cp_store_backend(st), "sqlite");

    /* five writes at once: answered in the order given, none before it is durable */
    struct seen s = {0};
    struct wr w[5];
    for (int i = 0; i < 5; i++)
        w[i] = (struct wr){&s, i};
    cp_store_put(st, "function", "zeta", "{\"z\":1}", on_done, &w[0]);
    cp_store_put(st, "function", "alpha", "{\"a\":1}", on_done, &w[1]);
    cp_store_put(st, "worker", "w1", "{\"w\":1}", on_done, &w[2]);
    cp_store_put(st, "function", "alpha", "{\"a\":2}", on_done, &w[3]); /* replaces */
    cp_store_del(st, "function", "zeta", on_done, &w[4]);
    assert_int_equal(s.done, 0);
    assert_int_equal(cp_store_pending(st), 5);
    run_until_done(&loop, &s, 5);
    assert_int_equal(s.failed, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.order[i], i);
    assert_int_equal(cp_store_pending(st), 0);
    cp_store_put(st, "function", "mid", "{\"m\":1}", NULL, NULL); /* nobody waits */
    uv_run(&loop, UV_RUN_DEFAULT); /* until its transaction is done */
    assert_int_equal(cp_store_pending(st), 0);

    assert_int_equal(cp_store_scan(st, "function", on_row, &s, &err), 0);
    assert_string_equal(s.rows, "alpha={\"a\":2};mid={\"m\":1};");
    cp_store_shutdown(st);
    uv_run(&loop, UV_RUN_DEFAULT);
    cp_store_close(st);

    /* reopened: what was durable is there, each kind on its own */
    st = cp_store_open(&loop, &o, &err);
    assert_non_null(st);
    memset(&s, 0, sizeof(s));
    assert_int_equal(cp_store_scan(st, "worker", on_row, &s, &err), 0);
    assert_string_equal(s.rows, "w1={\"w\":1};");
    memset(&s, 0, sizeof(s));
    cp_store_scan_async(st, "function", on_row, on_scanned, &s);
    assert_int_equal(s.done, 1); /* a local file: at once */
    assert_int_equal(s.failed, 0);
    assert_string_equal(s.rows, "alpha={\"a\":2};mid={\"m\":1};");
    cp_store_shutdown(st);
    cp_store_close(st);
    assert_int_equal(uv_loop_close(&loop), 0);
    rmtree(d);
    free(d);
}

static void test_redis_refused(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct cp_store_opts o = {.backend = "redis", .redis_address = "127.0.0.1:1"};
    struct cp_store *st = cp_store_open(&loop, &o, &err);
    assert_non_null(st); /* it connects in the background */
    assert_string_equal(cp_store_backend(st), "redis");
    struct seen s = {0};
    struct wr w = {&s, 1};
    cp_store_put(st, "function", "hello", "{}", on_done, &w);
    run_until_done(&loop, &s, 1);
    assert_int_equal(s.failed, 1);
    assert_non_null(strstr(s.last_err, "redis 127.0.0.1:1"));
    assert_int_equal(cp_store_pending(st), 0);
    /* the blocking scan (start-up) says the same */
    assert_int_equal(cp_store_scan(st, "function", on_row, &s, &err), -1);
    assert_non_null(strstr(err.msg, "127.0.0.1:1"));
    cp_store_shutdown(st);
    uv_run(&loop, UV_RUN_DEFAULT);
    cp_store_close(st);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_refused_settings),
        cmocka_unit_test(test_sqlite),
        cmocka_unit_test(test_redis_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
