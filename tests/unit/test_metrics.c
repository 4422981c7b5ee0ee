/*
 * test_metrics.c: lib/metrics.c. The exposition text is compared whole for
 * small registries (HELP/TYPE lines, label escaping, cumulative histogram
 * buckets, value formatting), plus removal, pointer stability of children and
 * the aborts on misuse (each run in a forked child).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dirigent/metrics.h"

/* Render `m` and compare with `want` in full. */
static void assert_render(struct dg_metrics *m, const char *want)
{
    struct dg_buf b = {0};
    dg_metrics_render(m, &b);
    assert_non_null(b.data);
    assert_string_equal(b.data, want);
    dg_buf_free(&b);
}

static void test_counter_gauge(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *req =
        dg_metrics_counter(m, "dg_requests_total", "Requests served.", "function, code");
    struct dg_metric_family *inflight = dg_metrics_gauge(m, "dg_inflight", "In flight.", NULL);
    struct dg_metric_family *idle = dg_metrics_counter(m, "dg_idle_total", "Never used.", NULL);

    struct dg_metric *ok = dg_metric_get(req, (const char *[]){"hello", "200"});
    struct dg_metric *err = dg_metric_get(req, (const char *[]){"hello", "503"});
    dg_counter_add(ok, 1);
    dg_counter_add(ok, 2);
    dg_counter_add(err, 0.5);
    assert_ptr_equal(dg_metric_get(req, (const char *[]){"hello", "200"}), ok);
    assert_true(dg_metric_value(ok) == 3);

    struct dg_metric *g = dg_metric_get1(inflight, NULL);
    dg_gauge_set(g, 10);
    dg_gauge_add(g, -12.25);
    assert_true(dg_metric_value(g) == -2.25);
    (void)idle;

    assert_render(m, "# HELP dg_requests_total Requests served.\n"
                     "# TYPE dg_requests_total counter\n"
                     "dg_requests_total{function=\"hello\",code=\"200\"} 3\n"
                     "dg_requests_total{function=\"hello\",code=\"503\"} 0.5\n"
                     "# HELP dg_inflight In flight.\n"
                     "# TYPE dg_inflight gauge\n"
                     "dg_inflight -2.25\n"
                     "# HELP dg_idle_total Never used.\n"
                     "# TYPE dg_idle_total counter\n"
                     "dg_idle_total 0\n");
    dg_metrics_free(m);
}

static void test_escaping(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *f =
        dg_metrics_gauge(m, "x", "Back\\slash and\nnewline, \"quotes\" kept.", "path");
    dg_gauge_set(dg_metric_get1(f, "a\\b\"c\nd"), 1);
    dg_metrics_gauge(m, "no_help", NULL, NULL);
    assert_render(m, "# HELP x Back\\\\slash and\\nnewline, \"quotes\" kept.\n"
                     "# TYPE x gauge\n"
                     "x{path=\"a\\\\b\\\"c\\nd\"} 1\n"
                     "# TYPE no_help gauge\n"
                     "no_help 0\n");
    dg_metrics_free(m);
}

static void test_values(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *f = dg_metrics_gauge(m, "v", "V.", "k");
    const struct {
        const char *k;
        double v;
    } cases[] = {
        {"int", 3},
        {"neg", -42},
        {"negzero", -0.0},
        {"frac", 0.1},
        {"third", 1.0 / 3},
        {"big", 9007199254740992.0}, /* 2^53: no longer printed as an integer */
        {"below", 9007199254740991.0},
        {"small", 1e-9},
        {"inf", INFINITY},
        {"ninf", -INFINITY},
        {"nan", NAN},
    };
    for (size_t i = 0; i < DG_ARRAY_LEN(cases); i++)
        dg_gauge_set(dg_metric_get1(f, cases[i].k), cases[i].v);
    assert_render(m, "# HELP v V.\n"
                     "# TYPE v gauge\n"
                     "v{k=\"int\"} 3\n"
                     "v{k=\"neg\"} -42\n"
                     "v{k=\"negzero\"} 0\n"
                     "v{k=\"frac\"} 0.1\n"
                     "v{k=\"third\"} 0.3333333333333333\n"
                     "v{k=\"big\"} 9007199254740992\n"
                     "v{k=\"below\"} 9007199254740991\n"
                     "v{k=\"small\"} 1e-09\n"
                     "v{k=\"inf\"} +Inf\n"
                     "v{k=\"ninf\"} -Inf\n"
                     "v{k=\"nan\"} NaN\n");
    dg_metrics_free(m);
}

static void test_histogram(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    const double bounds[] = {0.005, 0.5, 1};
    struct dg_metric_family *f =
        dg_metrics_histogram(m, "lat_seconds", "Latency.", "function", bounds, 3);
    dg_metrics_histogram(m, "empty_seconds", "Empty.", NULL, bounds, 2);
    struct dg_metric *h = dg_metric_get1(f, "hello");
    /* 0.005 is on a bound: counted in le="0.005" (bounds are inclusive). */
    const double obs[] = {0.002, 0.005, 0.25, 0.75, 0.75, 2};
    for (size_t i = 0; i < DG_ARRAY_LEN(obs); i++)
        dg_histogram_observe(h, obs[i]);
    assert_true(dg_metric_value(h) == 0.002 + 0.005 + 0.25 + 0.75 + 0.75 + 2);
    dg_histogram_observe(dg_metric_get1(f, "other"), 100);

    assert_render(m, "# HELP lat_seconds Latency.\n"
                     "# TYPE lat_seconds histogram\n"
                     "lat_seconds_bucket{function=\"hello\",le=\"0.005\"} 2\n"
                     "lat_seconds_bucket{function=\"hello\",le=\"0.5\"} 3\n"
                     "lat_seconds_bucket{function=\"hello\",le=\"1\"} 5\n"
                     "lat_seconds_bucket{function=\"hello\",le=\"+Inf\"} 6\n"
                     "lat_seconds_sum{function=\"hello\"} 3.757\n"
                     "lat_seconds_count{function=\"hello\"} 6\n"
                     "lat_seconds_bucket{function=\"other\",le=\"0.005\"} 0\n"
                     "lat_seconds_bucket{function=\"other\",le=\"0.5\"} 0\n"
                     "lat_seconds_bucket{function=\"other\",le=\"1\"} 0\n"
                     "lat_seconds_bucket{function=\"other\",le=\"+Inf\"} 1\n"
                     "lat_seconds_sum{function=\"other\"} 100\n"
                     "lat_seconds_count{function=\"other\"} 1\n"
                     "# HELP empty_seconds Empty.\n"
                     "# TYPE empty_seconds histogram\n"
                     "empty_seconds_bucket{le=\"0.005\"} 0\n"
                     "empty_seconds_bucket{le=\"0.5\"} 0\n"
                     "empty_seconds_bucket{le=\"+Inf\"} 0\n"
                     "empty_seconds_sum 0\n"
                     "empty_seconds_count 0\n");
    dg_metrics_free(m);
}

static void test_latency_buckets(void **state)
{
    assert_int_equal(dg_metrics_latency_nbuckets, 16);
    assert_true(dg_metrics_latency_buckets[0] == 0.0005);
    assert_true(dg_metrics_latency_buckets[15] == 60);
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *f = dg_metrics_histogram(
        m, "l", NULL, NULL, dg_metrics_latency_buckets, dg_metrics_latency_nbuckets);
    dg_histogram_observe(dg_metric_get(f, NULL), 0.0007);
    assert_render(m, "# TYPE l histogram\n"
                     "l_bucket{le=\"0.0005\"} 0\n"
                     "l_bucket{le=\"0.001\"} 1\n"
                     "l_bucket{le=\"0.0025\"} 1\n"
                     "l_bucket{le=\"0.005\"} 1\n"
                     "l_bucket{le=\"0.01\"} 1\n"
                     "l_bucket{le=\"0.025\"} 1\n"
                     "l_bucket{le=\"0.05\"} 1\n"
                     "l_bucket{le=\"0.1\"} 1\n"
                     "l_bucket{le=\"0.25\"} 1\n"
                     "l_bucket{le=\"0.5\"} 1\n"
                     "l_bucket{le=\"1\"} 1\n"
                     "l_bucket{le=\"2.5\"} 1\n"
                     "l_bucket{le=\"5\"} 1\n"
                     "l_bucket{le=\"10\"} 1\n"
                     "l_bucket{le=\"30\"} 1\n"
                     "l_bucket{le=\"60\"} 1\n"
                     "l_bucket{le=\"+Inf\"} 1\n"
                     "l_sum 0.0007\n"
                     "l_count 1\n");
    dg_metrics_free(m);
}

static int fn_calls;

static double queue_len(void *ud)
{
    fn_calls++;
    return *(double *)ud;
}

static void test_gauge_fn(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    double len = 4;
    dg_metrics_gauge_fn(m, "queue_length", "Queued requests.", queue_len, &len);
    fn_calls = 0;
    assert_render(m, "# HELP queue_length Queued requests.\n"
                     "# TYPE queue_length gauge\n"
                     "queue_length 4\n");
    len = 7.5;
    assert_render(m, "# HELP queue_length Queued requests.\n"
                     "# TYPE queue_length gauge\n"
                     "queue_length 7.5\n");
    assert_int_equal(fn_calls, 2);
    dg_metrics_free(m);
}

static void test_remove(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *f = dg_metrics_gauge(m, "ready", "Ready.", "function,node");
    dg_gauge_set(dg_metric_get(f, (const char *[]){"a", "n1"}), 1);
    dg_gauge_set(dg_metric_get(f, (const char *[]){"b", "n1"}), 2);
    dg_gauge_set(dg_metric_get(f, (const char *[]){"c", "n2"}), 3);

    dg_metric_remove(f, (const char *[]){"b", "n1"});
    dg_metric_remove(f, (const char *[]){"zzz", "n1"}); /* not there: no-op */
    assert_render(m, "# HELP ready Ready.\n"
                     "# TYPE ready gauge\n"
                     "ready{function=\"a\",node=\"n1\"} 1\n"
                     "ready{function=\"c\",node=\"n2\"} 3\n");

    /* Removing the first and the last keeps the list consistent; re-creating starts at 0. */
    dg_metric_remove(f, (const char *[]){"a", "n1"});
    dg_metric_remove(f, (const char *[]){"c", "n2"});
    assert_render(m, "# HELP ready Ready.\n"
                     "# TYPE ready gauge\n");
    dg_metric_get(f, (const char *[]){"b", "n1"});
    assert_render(m, "# HELP ready Ready.\n"
                     "# TYPE ready gauge\n"
                     "ready{function=\"b\",node=\"n1\"} 0\n");
    dg_metrics_free(m);
}

static void test_empty_labelled_family(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    dg_metrics_counter(m, "c_total", "C.", "function");
    const double b[] = {1};
    dg_metrics_histogram(m, "h", "H.", "function", b, 1);
    assert_render(m, "# HELP c_total C.\n"
                     "# TYPE c_total counter\n"
                     "# HELP h H.\n"
                     "# TYPE h histogram\n");
    dg_metrics_free(m);

    /* An empty registry renders nothing. */
    m = dg_metrics_new();
    struct dg_buf out = {0};
    dg_metrics_render(m, &out);
    assert_int_equal(out.len, 0);
    dg_buf_free(&out);
    dg_metrics_free(m);
    dg_metrics_free(NULL);
}

static void test_pointer_stability(void **state)
{
    struct dg_metrics *m = dg_metrics_new();
    struct dg_metric_family *f = dg_metrics_counter(m, "hits_total", "Hits.", "function");
    struct dg_metric *first = dg_metric_get1(f, "first");
    dg_counter_add(first, 1);
    /* Enough children to grow the hash table several times; remove some on the way. */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        dg_counter_add(dg_metric_get1(f, name), i);
        if (i % 3 == 0)
            dg_metric_remove(f, (const char *[]){name});
    }
    assert_ptr_equal(dg_metric_get1(f, "first"), first);
    dg_counter_add(first, 1);
    assert_true(dg_metric_value(first) == 2);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        struct dg_metric *c = dg_metric_get1(f, name);
        assert_true(dg_metric_value(c) == (i % 3 == 0 ? 0 : i));
    }
    /* Values that would collide if joined naively are distinct children. */
    struct dg_metric_family *g = dg_metrics_gauge(m, "pair", "P.", "a,b");
    struct dg_metric *x = dg_metric_get(g, (const char *[]){"a", "bc"});
    struct dg_metric *y = dg_metric_get(g, (const char *[]){"ab", "c"});
    assert_ptr_not_equal(x, y);
    dg_metrics_free(m);
}

/* ---- misuse aborts ---- */

enum misuse_case {
    BAD_METRIC_NAME,
    BAD_LABEL_NAME,
    RESERVED_LABEL,
    DUPLICATE_FAMILY,
    LE_LABEL,
    BOUNDS_NOT_INCREASING,
    NEGATIVE_ADD,
    WRONG_LABEL_COUNT,
    MISSING_LABELS,
    WRONG_TYPE,
};

static void do_misuse(enum misuse_case c)
{
    struct dg_metrics *m = dg_metrics_new();
    const double bad_bounds[] = {1, 1};
    switch (c) {
    case BAD_METRIC_NAME:
        dg_metrics_counter(m, "1bad", "x", NULL);
        break;
    case BAD_LABEL_NAME:
        dg_metrics_counter(m, "ok", "x", "good,bad-name");
        break;
    case RESERVED_LABEL:
        dg_metrics_counter(m, "ok", "x", "__name");
        break;
    case DUPLICATE_FAMILY:
        dg_metrics_counter(m, "same", "x", NULL);
        dg_metrics_gauge(m, "same", "x", NULL);
        break;
    case LE_LABEL:
        dg_metrics_histogram(m, "h", "x", "le", NULL, 0);
        break;
    case BOUNDS_NOT_INCREASING:
        dg_metrics_histogram(m, "h", "x", NULL, bad_bounds, 2);
        break;
    case NEGATIVE_ADD:
        dg_counter_add(dg_metric_get(dg_metrics_counter(m, "c", "x", NULL), NULL), -1);
        break;
    case WRONG_LABEL_COUNT:
        dg_metric_get1(dg_metrics_counter(m, "c", "x", "a,b"), "v");
        break;
    case MISSING_LABELS:
        dg_metric_get(dg_metrics_counter(m, "c", "x", "a"), NULL);
        break;
    case WRONG_TYPE:
        dg_counter_add(dg_metric_get(dg_metrics_gauge(m, "g", "x", NULL), NULL), 1);
        break;
    }
    dg_metrics_free(m);
}

/* Run the misuse in a child and check it aborts with a message containing `want`. */
static void assert_aborts(enum misuse_case c, const char *want)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        do_misuse(c);
        _exit(0); /* not reached when the misuse is caught */
    }
    close(fds[1]);
    char msg[512];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(msg) - 1 && (n = read(fds[0], msg + len, sizeof(msg) - 1 - len)) > 0)
        len += (size_t)n;
    msg[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("case %d: expected SIGABRT, status 0x%x, stderr '%s'", (int)c, status, msg);
    if (!strstr(msg, want))
        fail_msg("case %d: stderr '%s' lacks '%s'", (int)c, msg, want);
}

static void test_misuse_aborts(void **state)
{
    assert_aborts(BAD_METRIC_NAME, "invalid metric name '1bad'");
    assert_aborts(BAD_LABEL_NAME, "ok: invalid label name 'bad-name'");
    assert_aborts(RESERVED_LABEL, "ok: invalid label name '__name'");
    assert_aborts(DUPLICATE_FAMILY, "metric 'same' registered twice");
    assert_aborts(LE_LABEL, "h: a histogram cannot have a label named 'le'");
    assert_aborts(BOUNDS_NOT_INCREASING, "h: bucket bounds must be strictly increasing");
    assert_aborts(NEGATIVE_ADD, "c: counter increment -1 is negative");
    assert_aborts(WRONG_LABEL_COUNT, "c: dg_metric_get1 on a family with 2 labels");
    assert_aborts(MISSING_LABELS, "c: needs 1 label values, got none");
    assert_aborts(WRONG_TYPE, "g: dg_counter_add on a gauge");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_gauge_fn),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_empty_labelled_family),
        cmocka_unit_test(test_pointer_stability),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
