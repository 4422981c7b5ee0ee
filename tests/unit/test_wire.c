/*
 * test_wire.c: the messages between the daemons (lib/wire.c). Each message is decoded from
 * the exact bytes its sender produced before wire.c existed (the json_pack calls of the
 * worker, the DP, the CP and the heartbeat, run with sample values), its fields are checked,
 * and its encoding is compared with those bytes; messages built in C round-trip; bad input
 * gives an error that names the field and leaves nothing to free.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dirigent/json.h"
#include "dirigent/wire.h"

/* ---- today's bytes ------------------------------------------------------------------------ */

/* src/worker/main.c node_body (a resync beat) + lib/heartbeat.c's "resync" */
static const char WORKER_BEAT[] =
    "{\"name\":\"w1\",\"address\":\"127.0.0.1:10010\",\"boot\":\"3f2a9c\",\"cpuMilli\":8000,"
    "\"memoryMiB\":15890,\"cpuOvercommit\":2.0,\"sandboxMinCpuMilli\":1,\"sandboxMinMemoryMiB\":1,"
    "\"sandboxes\":[{\"id\":\"w1-1a2b-1\",\"function\":\"hello\",\"endpoint\":\"10.0.0.2:8080\"}],"
    "\"resync\":true}";
/* the same, not a resync: no "sandboxes" */
static const char WORKER_BEAT_PLAIN[] =
    "{\"name\":\"w2\",\"address\":\"127.0.0.1:10011\",\"boot\":\"77\",\"cpuMilli\":4000,"
    "\"memoryMiB\":2048,\"cpuOvercommit\":1.0,\"sandboxMinCpuMilli\":100,"
    "\"sandboxMinMemoryMiB\":64,\"resync\":false}";
/* src/worker/cplink.c siblings_tick */
static const char SIBLING_BEAT[] =
    "{\"sender\":\"emu-0\",\"address\":\"127.0.0.1:10010\",\"boot\":\"12-34\","
    "\"cpuMilli\":2000,\"memoryMiB\":1024,\"cpuOvercommit\":1.0,\"sandboxMinCpuMilli\":0,"
    "\"sandboxMinMemoryMiB\":0,\"sandboxSubnet\":\"10.1.0.0/16\",\"nodes\":[\"emu-1\","
    "\"emu-2\"]}";
/* src/worker/main.c wk_sandbox_exited */
static const char SANDBOX_EXIT[] =
    "{\"worker\":\"w1\",\"id\":\"w1-1a2b-7\",\"function\":\"hello\",\"status\":-9,\"reason\":"
    "\"OOM-killed: memory limit 64 MiB\"}";
/* src/dp/main.c registration_body + "resync" */
static const char DP_BEAT[] =
    "{\"name\":\"dp0\",\"api\":\"127.0.0.1:9092\",\"proxy\":\"127.0.0.1:8080\",\"resync\":false}";
/* src/dp/proxy.c report_add + report_post */
static const char METRICS[] = "{\"dataplane\":\"dp0\",\"functions\":[{\"name\":\"hello\","
                              "\"inflight\":3},{\"name\":\"other\",\"inflight\":0}]}";
/* src/cp/scaling.c create_on (one batch item) */
static const char CREATE[] =
    "{\"function\":\"hello\",\"image\":\"docker.io/cvetkovic/dirigent_empty_function:latest\","
    "\"port\":80,\"env\":[\"A=1\",\"COLD_START_BUSY_LOOP_MS=10\"],\"args\":[\"--x\"],"
    "\"cpuMilli\":250,\"memoryMiB\":128}";
/* src/worker/main.c wk_sandbox_created */
static const char CREATED[] =
    "{\"id\":\"w1-1a2b-1\",\"function\":\"hello\",\"endpoint\":\"10.0.0.2:8080\",\"latencyUs\":"
    "{\"image\":1,\"rootfs\":2,\"network\":3,\"start\":4,\"ready\":5,\"total\":20}}";
/* src/worker/main.c api_list */
static const char SANDBOX_LIST[] =
    "{\"name\":\"w1\",\"runtime\":\"emulated\",\"sandboxes\":[{\"id\":\"w1-1a2b-1\",\"function\":"
    "\"hello\",\"endpoint\":\"10.0.0.2:8080\",\"state\":\"ready\"},{\"id\":\"w1-1a2b-2\","
    "\"function\":\"hello\",\"endpoint\":\"10.0.0.3:8080\",\"state\":\"exited\",\"exitReason\":"
    "\"exited with status 1\"}]}";
/* src/cp/scaling.c flush_pushes */
static const char PUSH[] =
    "{\"functions\":[{\"endpoints\":[{\"id\":\"w1-1a2b-1\",\"address\":\"10.0.0.2:8080\"}],"
    "\"name\":\"hello\",\"concurrency\":1},{\"endpoints\":[],\"name\":\"broken\",\"concurrency\":4,"
    "\"error\":\"create failed: image not found\",\"exited\":[{\"id\":\"w1-1a2b-9\",\"reason\":"
    "\"OOM-killed: memory limit 64 MiB\"}]}]}";
/* src/cp/scaling.c scale_down (one batch item) */
static const char DRAIN[] = "{\"name\":\"hello\",\"ids\":[\"w1-1a2b-1\",\"w1-1a2b-2\"]}";
/* src/cp/api.c worker_upsert, dp_upsert (the store) */
static const char WORKER_REC[] = "{\"address\":\"127.0.0.1:10010\"}";
static const char DP_REC[] = "{\"api\":\"127.0.0.1:9092\",\"proxy\":\"127.0.0.1:8080\"}";
/* src/cp/api.c api_status with fn_json: no error, an error with and without a worker */
static const char STATUS[] =
    "{\"workers\":[{\"name\":\"w1\",\"address\":\"127.0.0.1:10010\",\"schedulable\":true,"
    "\"sandboxes\":2,\"cpuMilli\":8000,\"memoryMiB\":16000,\"cpuUsedMilli\":500,"
    "\"memoryUsedMiB\":256,\"cpuSchedulableMilli\":16000,\"cpuOvercommit\":2.0,"
    "\"sandboxMinCpuMilli\":1,\"sandboxMinMemoryMiB\":1}],\"dataplanes\":[{\"name\":\"dp0\","
    "\"api\":\"127.0.0.1:9092\",\"proxy\":\"127.0.0.1:8080\"}],\"functions\":[{\"name\":\"hello\","
    "\"image\":\"img\",\"port\":80,\"state\":\"ready\",\"ready\":1,\"desired\":2,\"creating\":1,"
    "\"scaling_lower_bound\":0,\"scaling_upper_bound\":10,\"requested_cpu\":250,"
    "\"requested_memory\":128,\"cold_start_sweep\":false,\"container_concurrency\":1,\"error\":"
    "null},{\"name\":\"broken\",\"image\":\"img\",\"port\":80,\"state\":\"failing\",\"ready\":1,"
    "\"desired\":2,\"creating\":1,\"scaling_lower_bound\":0,\"scaling_upper_bound\":10,"
    "\"requested_cpu\":250,\"requested_memory\":128,\"cold_start_sweep\":false,"
    "\"container_concurrency\":1,\"error\":\"create failed: no image\",\"error_worker\":\"w1\","
    "\"error_at_ms\":1733450000000,\"error_age_ms\":1500,\"error_kind\":\"create\"},{\"name\":"
    "\"nowhere\",\"image\":\"img\",\"port\":80,\"state\":\"failing\",\"ready\":1,\"desired\":2,"
    "\"creating\":1,\"scaling_lower_bound\":0,\"scaling_upper_bound\":10,\"requested_cpu\":250,"
    "\"requested_memory\":128,\"cold_start_sweep\":false,\"container_concurrency\":1,\"error\":"
    "\"create failed: no image\",\"error_worker\":null,\"error_at_ms\":1733450000000,"
    "\"error_age_ms\":1500,\"error_kind\":\"create\"}],\"role\":\"leader\",\"leader\":"
    "\"127.0.0.1:9090\",\"replicas\":[{\"id\":1,\"api\":\"127.0.0.1:9090\",\"self\":true,"
    "\"leader\":true},{\"id\":2,\"api\":\"127.0.0.1:9190\",\"self\":false,\"leader\":false}]}";
/* src/dp/main.c api_list (one item of its array each) */
static const char DP_FN_VIEW[] =
    "{\"name\":\"hello\",\"concurrency\":1,\"queued\":3,\"inFlight\":5,\"endpoints\":[{\"id\":"
    "\"w1-1a2b-1\",\"address\":\"10.0.0.2:8080\",\"inFlight\":2}],\"error\":null}";
static const char DP_FN_VIEW_ERR[] =
    "{\"name\":\"broken\",\"concurrency\":1,\"queued\":0,"
    "\"inFlight\":0,\"endpoints\":[],\"error\":\"create failed: x\"}";
static const char STATUS_FOLLOWER[] = "{\"workers\":[],\"dataplanes\":[],\"functions\":[],\"role\":"
                                      "\"follower\",\"leader\":null}";

/* Decode `lit` as x into m (asserting success); after the checks, SAME re-encodes it and
 * compares with the bytes, then frees. */
#define DECODE(x, lit, m)                                                                          \
    do {                                                                                           \
        struct dg_err e_ = {0};                                                                    \
        int rc_ = dg_wire_##x##_parse(lit, strlen(lit), &(m), &e_);                                \
        if (rc_ != 0)                                                                              \
            fail_msg("%s: %s", #x, e_.msg);                                                        \
    } while (0)
#define SAME(x, lit, m)                                                                            \
    do {                                                                                           \
        char *s_ = dg_wire_##x##_dumps(&(m));                                                      \
        assert_string_equal(s_, lit);                                                              \
        free(s_);                                                                                  \
        dg_wire_##x##_free(&(m));                                                                  \
    } while (0)

static void test_worker_beat(void **state)
{
    struct dg_wire_worker_beat m;
    DECODE(worker_beat, WORKER_BEAT, m);
    assert_string_equal(m.name, "w1");
    assert_string_equal(m.address, "127.0.0.1:10010");
    assert_string_equal(m.boot, "3f2a9c");
    assert_int_equal(m.cpu_milli, 8000);
    assert_int_equal(m.memory_mib, 15890);
    assert_true(m.cpu_overcommit == 2.0);
    assert_int_equal(m.min_cpu_milli, 1);
    assert_int_equal(m.min_memory_mib, 1);
    assert_true(m.has_sandboxes);
    assert_int_equal(m.nsandboxes, 1);
    assert_string_equal(m.sandboxes[0].id, "w1-1a2b-1");
    assert_string_equal(m.sandboxes[0].function, "hello");
    assert_string_equal(m.sandboxes[0].endpoint, "10.0.0.2:8080");
    assert_true(m.resync);
    SAME(worker_beat, WORKER_BEAT, m);

    DECODE(worker_beat, WORKER_BEAT_PLAIN, m);
    assert_false(m.has_sandboxes); /* absent, not an empty list: the CP keeps asking */
    assert_false(m.resync);
    assert_int_equal(m.min_memory_mib, 64);
    SAME(worker_beat, WORKER_BEAT_PLAIN, m);

    /* an old worker without resources: capacity unknown, overcommit 1 */
    static const char old[] = "{\"name\":\"w\",\"address\":\"127.0.0.1:1\"}";
    DECODE(worker_beat, old, m);
    assert_int_equal(m.cpu_milli, 0);
    assert_true(m.cpu_overcommit == 1.0);
    assert_null(m.boot);
    assert_false(m.saturated); /* absent: not saturated */
    dg_wire_worker_beat_free(&m);

    /* saturated (issue 16): said only when true; anything but a bool names the field */
    static const char sat[] = "{\"name\":\"w\",\"address\":\"127.0.0.1:1\",\"saturated\":true}";
    DECODE(worker_beat, sat, m);
    assert_true(m.saturated);
    char *s_ = dg_wire_worker_beat_dumps(&m);
    assert_non_null(strstr(s_, "\"saturated\":true"));
    free(s_);
    m.saturated = false;
    s_ = dg_wire_worker_beat_dumps(&m);
    assert_null(strstr(s_, "saturated"));
    free(s_);
    dg_wire_worker_beat_free(&m);
    static const char bad[] = "{\"name\":\"w\",\"address\":\"127.0.0.1:1\",\"saturated\":1}";
    struct dg_err e = {0};
    assert_int_not_equal(dg_wire_worker_beat_parse(bad, strlen(bad), &m, &e), 0);
    assert_non_null(strstr(e.msg, "saturated"));
}

/* issue 16: the beats of many emulated nodes in one message; every field checked */
static void test_sibling_beat(void **state)
{
    struct dg_wire_sibling_beat m;
    DECODE(sibling_beat, SIBLING_BEAT, m);
    assert_string_equal(m.sender, "emu-0");
    assert_string_equal(m.boot, "12-34");
    assert_int_equal(m.nodes.n, 2);
    assert_string_equal(m.nodes.v[1], "emu-2");
    assert_false(m.saturated);
    SAME(sibling_beat, SIBLING_BEAT, m);
    struct dg_err e = {0};
    static const char none[] =
        "{\"sender\":\"a-0\",\"address\":\"127.0.0.1:1\",\"boot\":\"b\",\"nodes\":[]}";
    assert_int_equal(dg_wire_sibling_beat_parse(none, strlen(none), &m, &e), DG_E_INVAL);
    assert_non_null(strstr(e.msg, "field 'nodes': expected 1..1000 names"));
    static const char self[] =
        "{\"sender\":\"a-0\",\"address\":\"127.0.0.1:1\",\"boot\":\"b\",\"nodes\":[\"a-1\","
        "\"a-0\"]}";
    assert_int_equal(dg_wire_sibling_beat_parse(self, strlen(self), &m, &e), DG_E_INVAL);
    assert_non_null(strstr(e.msg, "item 1 is the sender 'a-0'"));
    static const char noboot[] =
        "{\"sender\":\"a-0\",\"address\":\"127.0.0.1:1\",\"nodes\":[\"a/1\"]}";
    assert_int_equal(dg_wire_sibling_beat_parse(noboot, strlen(noboot), &m, &e), DG_E_INVAL);
    assert_non_null(strstr(e.msg, "boot"));
    static const char badname[] =
        "{\"sender\":\"a-0\",\"address\":\"127.0.0.1:1\",\"boot\":\"b\",\"nodes\":[\"a/1\"]}";
    assert_int_equal(dg_wire_sibling_beat_parse(badname, strlen(badname), &m, &e), DG_E_INVAL);
    assert_non_null(strstr(e.msg, "field 'nodes': item 0"));
    /* more than DG_WIRE_SIBLINGS_MAX names: refused, naming the bound */
    struct dg_buf b = {0};
    dg_buf_printf(&b, "{\"sender\":\"a-0\",\"address\":\"127.0.0.1:1\",\"boot\":\"b\",\"nodes\":[");
    for (int i = 1; i <= DG_WIRE_SIBLINGS_MAX + 1; i++)
        dg_buf_printf(&b, "%s\"a-%d\"", i > 1 ? "," : "", i);
    dg_buf_printf(&b, "]}");
    assert_int_equal(dg_wire_sibling_beat_parse(b.data, b.len, &m, &e), DG_E_INVAL);
    assert_non_null(strstr(e.msg, "at most 1000 items"));
    dg_buf_free(&b);

    struct dg_wire_sibling_answer a;
    static const char ans[] = "{\"refused\":[\"emu-7\"]}";
    DECODE(sibling_answer, ans, a);
    assert_int_equal(a.refused.n, 1);
    assert_string_equal(a.refused.v[0], "emu-7");
    SAME(sibling_answer, ans, a);
    DECODE(sibling_answer, "{}", a); /* took all */
    assert_int_equal(a.refused.n, 0);
    dg_wire_sibling_answer_free(&a);
}

static void test_sandbox_exit(void **state)
{
    struct dg_wire_sandbox_exit m;
    DECODE(sandbox_exit, SANDBOX_EXIT, m);
    assert_string_equal(m.worker, "w1");
    assert_string_equal(m.id, "w1-1a2b-7");
    assert_string_equal(m.function, "hello");
    assert_int_equal(m.status, -9);
    assert_string_equal(m.reason, "OOM-killed: memory limit 64 MiB");
    SAME(sandbox_exit, SANDBOX_EXIT, m);
}

static void test_dp_beat_and_metrics(void **state)
{
    struct dg_wire_dp_beat b;
    DECODE(dp_beat, DP_BEAT, b);
    assert_string_equal(b.name, "dp0");
    assert_string_equal(b.api, "127.0.0.1:9092");
    assert_string_equal(b.proxy, "127.0.0.1:8080");
    assert_false(b.resync);
    SAME(dp_beat, DP_BEAT, b);

    struct dg_wire_metrics m;
    DECODE(metrics, METRICS, m);
    assert_string_equal(m.dataplane, "dp0");
    assert_int_equal(m.nfunctions, 2);
    assert_string_equal(m.functions[0].name, "hello");
    assert_int_equal(m.functions[0].inflight, 3);
    assert_string_equal(m.functions[1].name, "other");
    assert_int_equal(m.functions[1].inflight, 0);
    SAME(metrics, METRICS, m);
}

static void test_create_and_created(void **state)
{
    struct dg_wire_create c;
    DECODE(create, CREATE, c);
    assert_string_equal(c.function, "hello");
    assert_string_equal(c.image, "docker.io/cvetkovic/dirigent_empty_function:latest");
    assert_int_equal(c.port, 80);
    assert_int_equal(c.env.n, 2);
    assert_string_equal(c.env.v[1], "COLD_START_BUSY_LOOP_MS=10");
    assert_int_equal(c.args.n, 1);
    assert_string_equal(c.args.v[0], "--x");
    assert_int_equal(c.cpu_milli, 250);
    assert_int_equal(c.memory_mib, 128);
    SAME(create, CREATE, c);

    /* noInit (issue 16): absent is false and is not sent; true round-trips; a non-boolean is
     * refused naming the field */
    DECODE(create, CREATE, c);
    assert_false(c.no_init);
    dg_wire_create_free(&c);
    static const char noinit[] = "{\"function\":\"f\",\"noInit\":true,\"env\":[],\"args\":[],"
                                 "\"cpuMilli\":0,\"memoryMiB\":0}";
    DECODE(create, noinit, c);
    assert_true(c.no_init);
    SAME(create, noinit, c);
    static const char bad[] = "{\"function\":\"f\",\"noInit\":\"yes\"}";
    struct dg_err e = {0};
    assert_int_not_equal(dg_wire_create_parse(bad, strlen(bad), &c, &e), 0);
    assert_non_null(strstr(e.msg, "noInit"));

    struct dg_wire_created a;
    DECODE(created, CREATED, a);
    assert_string_equal(a.id, "w1-1a2b-1");
    assert_string_equal(a.endpoint, "10.0.0.2:8080");
    assert_true(a.has_latency);
    assert_int_equal(a.latency.image, 1);
    assert_int_equal(a.latency.network, 3);
    assert_int_equal(a.latency.total, 20);
    SAME(created, CREATED, a);
}

/* PUT /v1/prewarm's table: a create's keys and a count per function, strict, bounded, one
 * item per function. */
static void test_pool(void **state)
{
    static const char ok[] =
        "{\"items\":[{\"function\":\"hello\",\"image\":\"oci:/x:latest\",\"port\":80,"
        "\"env\":[\"A=1\"],\"args\":[],\"cpuMilli\":100,\"memoryMiB\":64,\"count\":2},"
        "{\"function\":\"b\",\"env\":[],\"args\":[],\"cpuMilli\":0,\"memoryMiB\":0,"
        "\"count\":0}]}";
    struct dg_wire_pool m;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_pool_parse(ok, strlen(ok), &m, &err), 0);
    assert_int_equal(m.nitems, 2);
    assert_string_equal(m.items[0].spec.function, "hello");
    assert_string_equal(m.items[0].spec.image, "oci:/x:latest");
    assert_int_equal(m.items[0].spec.port, 80);
    assert_string_equal(m.items[0].spec.env.v[0], "A=1");
    assert_int_equal(m.items[0].spec.memory_mib, 64);
    assert_int_equal(m.items[0].count, 2);
    assert_null(m.items[1].spec.image);
    char *again = dg_wire_pool_dumps(&m);
    struct dg_wire_pool m2;
    assert_int_equal(dg_wire_pool_parse(again, strlen(again), &m2, &err), 0);
    assert_int_equal(m2.items[0].count, 2);
    free(again);
    dg_wire_pool_free(&m2);
    dg_wire_pool_free(&m);
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"{}", "field 'items'"},
        {"{\"items\":[{\"function\":\"a\"}]}", "field 'count'"},
        {"{\"items\":[{\"function\":\"a\",\"count\":1001}]}", "field 'count'"},
        {"{\"items\":[{\"function\":\"a\",\"count\":-1}]}", "field 'count'"},
        {"{\"items\":[{\"function\":\"A_\",\"count\":1}]}", "field 'function'"},
        {"{\"items\":[{\"function\":\"a\",\"count\":1,\"cnt\":2}]}", "cnt"},
        {"{\"items\":[{\"function\":\"a\",\"count\":1},{\"function\":\"a\",\"count\":2}]}",
         "field 'items': function 'a' given twice (one item per function)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(dg_wire_pool_parse(bad[i].body, strlen(bad[i].body), &m, &err) < 0);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: got \"%s\"\nwant \"%s\"", i, err.msg, bad[i].msg);
    }
}

static void test_sandbox_list(void **state)
{
    struct dg_wire_sandbox_list m;
    DECODE(sandbox_list, SANDBOX_LIST, m);
    assert_string_equal(m.runtime, "emulated");
    assert_int_equal(m.nsandboxes, 2);
    assert_string_equal(m.sandboxes[0].state, "ready");
    assert_null(m.sandboxes[0].exit_reason);
    assert_string_equal(m.sandboxes[1].exit_reason, "exited with status 1");
    SAME(sandbox_list, SANDBOX_LIST, m);
}

static void test_push(void **state)
{
    struct dg_wire_push m;
    DECODE(push, PUSH, m);
    assert_int_equal(m.nfunctions, 2);
    const struct dg_wire_fn_update *a = &m.functions[0], *b = &m.functions[1];
    assert_string_equal(a->name, "hello");
    assert_int_equal(a->concurrency, 1);
    assert_int_equal(a->nendpoints, 1);
    assert_string_equal(a->endpoints[0].address, "10.0.0.2:8080");
    assert_null(a->error);
    assert_int_equal(a->nexited, 0);
    assert_string_equal(b->name, "broken");
    assert_int_equal(b->concurrency, 4);
    assert_int_equal(b->nendpoints, 0);
    assert_string_equal(b->error, "create failed: image not found");
    assert_int_equal(b->nexited, 1);
    assert_string_equal(b->exited[0].reason, "OOM-killed: memory limit 64 MiB");
    assert_false(a->h2c); /* absent: HTTP/1.1 */
    SAME(push, PUSH, m);

    /* upstream_protocol h2c: "h2c": true, sent only when true */
    struct dg_wire_fn_update h = {.name = "g", .concurrency = 1, .h2c = true};
    char *text = dg_wire_fn_update_dumps(&h);
    assert_non_null(strstr(text, "\"h2c\":true"));
    json_t *hj = json_loads(text, 0, NULL);
    free(text);
    struct dg_wire_fn_update hd;
    struct dg_err herr = {0};
    assert_int_equal(dg_wire_fn_update_decode(hj, &hd, &herr), 0);
    assert_true(hd.h2c);
    dg_wire_fn_update_free(&hd);
    json_decref(hj);

    /* a receiver that applies item by item */
    json_t *root = json_loads(PUSH, 0, NULL);
    struct dg_err err = {0};
    const json_t *items = dg_wire_push_items(root, &err);
    assert_non_null(items);
    struct dg_wire_fn_update u;
    assert_int_equal(dg_wire_fn_update_decode(json_array_get(items, 1), &u, &err), 0);
    assert_string_equal(u.name, "broken");
    dg_wire_fn_update_free(&u);
    json_decref(root);
    root = json_loads("{\"functions\":{}}", 0, NULL);
    assert_null(dg_wire_push_items(root, &err));
    assert_string_equal(err.msg, "field 'functions': expected an array, got object");
    json_decref(root);

    /* PUT /v1/functions/NAME/endpoints: no name, concurrency absent is 1 */
    root = json_loads("{\"endpoints\":[{\"id\":\"a\",\"address\":\"1.2.3.4:5\"}],\"error\":null}",
                      0, NULL);
    assert_int_equal(dg_wire_fn_endpoints_decode(root, &u, &err), 0);
    assert_null(u.name);
    assert_null(u.error);
    assert_int_equal(u.concurrency, 0); /* not part of that body */
    assert_int_equal(u.nendpoints, 1);
    dg_wire_fn_update_free(&u);
    json_decref(root);
}

static void test_drain_and_records(void **state)
{
    struct dg_wire_drain d;
    DECODE(drain, DRAIN, d);
    assert_string_equal(d.name, "hello");
    assert_int_equal(d.ids.n, 2);
    assert_string_equal(d.ids.v[1], "w1-1a2b-2");
    SAME(drain, DRAIN, d);

    /* POST /v1/functions/NAME/drain is strict, as the DP's handler was */
    struct dg_err err = {0};
    json_t *j = json_loads("{\"ids\":[\"a\"],\"name\":\"x\"}", 0, NULL);
    assert_int_equal(dg_wire_drain_ids_decode(j, &d, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'name': unknown field");
    json_decref(j);
    j = json_loads("{\"ids\":[\"a\"]}", 0, NULL);
    assert_int_equal(dg_wire_drain_ids_decode(j, &d, &err), 0);
    assert_int_equal(d.ids.n, 1);
    dg_wire_drain_free(&d);
    json_decref(j);

    struct dg_wire_worker_rec w;
    DECODE(worker_rec, WORKER_REC, w);
    assert_string_equal(w.address, "127.0.0.1:10010");
    SAME(worker_rec, WORKER_REC, w);
    struct dg_wire_dp_rec r;
    DECODE(dp_rec, DP_REC, r);
    assert_string_equal(r.proxy, "127.0.0.1:8080");
    SAME(dp_rec, DP_REC, r);

    /* delete items are plain strings */
    json_t *item = dg_wire_delete_item_encode("w1-1a2b-1");
    const char *id = NULL;
    assert_int_equal(dg_wire_delete_item_decode(item, &id, &err), 0);
    assert_string_equal(id, "w1-1a2b-1");
    json_decref(item);
    item = json_integer(3);
    assert_int_equal(dg_wire_delete_item_decode(item, &id, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "expected a sandbox id (string), got integer");
    json_decref(item);

    /* forget items (POST /v1/forget) are function names */
    const char *name = NULL;
    item = dg_wire_forget_item_encode("cold-1-2");
    assert_int_equal(dg_wire_forget_item_decode(item, &name, &err), 0);
    assert_string_equal(name, "cold-1-2");
    json_decref(item);
    item = json_integer(3);
    assert_int_equal(dg_wire_forget_item_decode(item, &name, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "expected a function name (string), got integer");
    json_decref(item);
    item = json_string("Bad_Name");
    assert_int_equal(dg_wire_forget_item_decode(item, &name, &err), DG_E_INVAL);
    assert_non_null(strstr(err.msg, "expected a function name (a DNS label"));
    assert_non_null(strstr(err.msg, "got 'Bad_Name'"));
    json_decref(item);
}

static void test_status(void **state)
{
    struct dg_wire_status m;
    DECODE(status, STATUS, m);
    assert_int_equal(m.nworkers, 1);
    assert_true(m.workers[0].schedulable);
    assert_int_equal(m.workers[0].cpu_schedulable_milli, 16000);
    assert_true(m.workers[0].cpu_overcommit == 2.0);
    assert_int_equal(m.ndataplanes, 1);
    assert_int_equal(m.nfunctions, 3);
    assert_null(m.functions[0].error);
    assert_false(m.functions[0].has_error);
    assert_true(m.functions[1].has_error);
    assert_string_equal(m.functions[1].error_worker, "w1");
    assert_int_equal(m.functions[1].error_at_ms, 1733450000000LL);
    assert_string_equal(m.functions[1].error_kind, "create");
    assert_true(m.functions[2].has_error);
    assert_null(m.functions[2].error_worker);
    assert_string_equal(m.role, "leader");
    assert_string_equal(m.leader, "127.0.0.1:9090");
    assert_true(m.has_replicas);
    assert_int_equal(m.nreplicas, 2);
    assert_true(m.replicas[0].self);
    assert_int_equal(m.replicas[1].id, 2);
    SAME(status, STATUS, m);

    DECODE(status, STATUS_FOLLOWER, m);
    assert_null(m.leader);
    assert_false(m.has_replicas);
    SAME(status, STATUS_FOLLOWER, m);
}

static void test_dp_fn_view(void **state)
{
    struct dg_wire_dp_fn_view m;
    DECODE(dp_fn_view, DP_FN_VIEW, m);
    assert_int_equal(m.queued, 3);
    assert_int_equal(m.in_flight, 5);
    assert_int_equal(m.nendpoints, 1);
    assert_int_equal(m.endpoints[0].in_flight, 2);
    assert_null(m.error);
    SAME(dp_fn_view, DP_FN_VIEW, m);
    DECODE(dp_fn_view, DP_FN_VIEW_ERR, m);
    assert_string_equal(m.error, "create failed: x");
    SAME(dp_fn_view, DP_FN_VIEW_ERR, m);
}

/* ---- built in C ----------------------------------------------------------------------------- */

static void test_roundtrip_built(void **state)
{
    struct dg_wire_sandbox_ref refs[2] = {{"a", "f", "1.1.1.1:1"}, {"b", "g", "2.2.2.2:2"}};
    struct dg_wire_worker_beat w = {.name = "w",
                                    .address = "127.0.0.1:1",
                                    .boot = "b",
                                    .cpu_milli = 1000,
                                    .memory_mib = 512,
                                    .cpu_overcommit = 1.5,
                                    .min_cpu_milli = 10,
                                    .min_memory_mib = 20,
                                    .has_sandboxes = true,
                                    .sandboxes = refs,
                                    .nsandboxes = 2,
                                    .resync = true};
    char *s = dg_wire_worker_beat_dumps(&w);
    struct dg_wire_worker_beat back;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_worker_beat_parse(s, strlen(s), &back, &err), 0);
    assert_string_equal(back.name, "w");
    assert_true(back.cpu_overcommit == 1.5);
    assert_int_equal(back.nsandboxes, 2);
    assert_string_equal(back.sandboxes[1].endpoint, "2.2.2.2:2");
    assert_int_equal(back.min_memory_mib, 20);
    char *s2 = dg_wire_worker_beat_dumps(&back);
    assert_string_equal(s, s2);
    free(s);
    free(s2);
    dg_wire_worker_beat_free(&back);

    /* "sandboxCount": sent when set, absent (an older worker) decodes as not said */
    assert_false(back.has_sandbox_count);
    w.has_sandbox_count = true;
    w.sandbox_count = 3;
    s = dg_wire_worker_beat_dumps(&w);
    assert_non_null(strstr(s, "\"sandboxCount\":3"));
    assert_int_equal(dg_wire_worker_beat_parse(s, strlen(s), &back, &err), 0);
    assert_true(back.has_sandbox_count);
    assert_int_equal(back.sandbox_count, 3);
    free(s);
    dg_wire_worker_beat_free(&back);
    w.has_sandbox_count = false;

    /* an empty resync list is sent (the CP learns the worker runs nothing) */
    w.nsandboxes = 0;
    w.sandboxes = NULL;
    json_t *j = dg_wire_worker_beat_encode(&w);
    assert_true(json_is_array(json_object_get(j, "sandboxes")));
    dg_wire_beat_set_resync(j, false);
    assert_true(json_is_false(json_object_get(j, "resync")));
    json_decref(j);

    char *env[] = {"A=1"};
    struct dg_wire_create c = {.function = "f",
                               .image = "/bin/true",
                               .port = 8080,
                               .env = {env, 1},
                               .cpu_milli = 100,
                               .memory_mib = 64};
    s = dg_wire_create_dumps(&c);
    assert_string_equal(
        s, "{\"function\":\"f\",\"image\":\"/bin/true\",\"port\":8080,\"env\":[\"A=1\"],"
           "\"args\":[],\"cpuMilli\":100,\"memoryMiB\":64}");
    struct dg_wire_create cb;
    assert_int_equal(dg_wire_create_parse(s, strlen(s), &cb, &err), 0);
    assert_int_equal(cb.env.n, 1);
    assert_int_equal(cb.args.n, 0);
    dg_wire_create_free(&cb);
    free(s);
    /* no port (0) is left out: "port":0 would be refused (found by fuzz_wire) */
    c.port = 0;
    s = dg_wire_create_dumps(&c);
    assert_null(strstr(s, "port"));
    assert_int_equal(dg_wire_create_parse(s, strlen(s), &cb, &err), 0);
    dg_wire_create_free(&cb);
    free(s);

    /* no error: "error" and "exited" are left out of a push item */
    struct dg_wire_endpoint ep = {"x", "1.2.3.4:80"};
    struct dg_wire_fn_update u = {.name = "f", .concurrency = 2, .endpoints = &ep, .nendpoints = 1};
    struct dg_wire_push p = {.functions = &u, .nfunctions = 1};
    s = dg_wire_push_dumps(&p);
    assert_string_equal(
        s, "{\"functions\":[{\"endpoints\":[{\"id\":\"x\",\"address\":\"1.2.3.4:80\"}],"
           "\"name\":\"f\",\"concurrency\":2}]}");
    json_t *pj = json_loads(s, 0, NULL);
    assert_false(dg_wire_push_is_full(pj)); /* not a resync: "full" left out, reads false */
    json_decref(pj);
    free(s);
    p.full = true; /* a resync: the receiver's whole table */
    s = dg_wire_push_dumps(&p);
    assert_non_null(strstr(s, "\"full\":true"));
    pj = json_loads(s, 0, NULL);
    assert_true(dg_wire_push_is_full(pj));
    json_decref(pj);
    free(s);

    /* a string that is not UTF-8 (a reason read from a process) keeps its key */
    struct dg_wire_sandbox_exit x = {.id = "i", .function = "f", .reason = "bad \xff byte"};
    s = dg_wire_sandbox_exit_dumps(&x);
    assert_non_null(strstr(s, "\"reason\":\"bad ? byte\""));
    free(s);
}

/* ---- bad input ---------------------------------------------------------------------------- */

#define BAD(x, text, want)                                                                         \
    do {                                                                                           \
        struct dg_wire_##x m_;                                                                     \
        struct dg_err e_ = {0};                                                                    \
        assert_int_not_equal(dg_wire_##x##_parse(text, strlen(text), &m_, &e_), 0);                \
        assert_string_equal(e_.msg, want);                                                         \
    } while (0)

static void test_errors_name_the_field(void **state)
{
    BAD(worker_beat, "{\"address\":\"127.0.0.1:1\"}", "field 'name': required");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"cpuMilli\":\"8\"}",
        "field 'cpuMilli': expected an integer 0..1099511627776, got string");
    BAD(worker_beat,
        "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxes\":[{\"id\":\"a\",\"function\":\"f\","
        "\"endpoint\":\"1.2.3.4:5\"},{\"id\":\"b\",\"function\":3}]}",
        "field 'sandboxes': item 1: field 'function': expected string, got integer");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxes\":{}}",
        "field 'sandboxes': expected an array, got object");
    BAD(worker_beat, "[1]", "expected a JSON object, got array");
    BAD(worker_beat,
        "{\"name\":", "invalid JSON at line 1 column 8: unexpected token near end of file");
    BAD(create, "{\"function\":\"f\",\"port\":0}",
        "field 'port': expected an integer 1..65535, got 0");
    BAD(create, "{\"function\":\"f\",\"resync\":true}", "field 'resync': unknown field");
    BAD(create, "{\"function\":\"f\",\"env\":[\"A=1\",2]}",
        "field 'env': item 1: expected string, got integer");
    BAD(metrics, "{\"dataplane\":\"d\",\"functions\":[{\"name\":\"f\",\"inflight\":1.5}]}",
        "field 'functions': item 0: field 'inflight': expected an integer 0..1000000000, got real");
    BAD(push, "{\"functions\":[{\"name\":\"f\"}]}",
        "field 'functions': item 0: field 'endpoints': required");
    BAD(push, "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"exited\":[{\"id\":\"a\"}]}]}",
        "field 'functions': item 0: field 'exited': item 0: field 'reason': required");
    BAD(fn_update, "{\"name\":\"f\",\"endpoints\":[],\"concurrency\":-1}",
        "field 'concurrency': expected an integer 0..100000, got -1");
    BAD(fn_update, "{\"name\":\"f\",\"endpoints\":[],\"h2c\":\"yes\"}",
        "field 'h2c': expected boolean, got string");
    BAD(dp_fn, "{\"h2c\":1}", "field 'h2c': expected boolean, got integer");
    BAD(created, "{\"id\":\"a\",\"endpoint\":\"1.2.3.4:5\",\"latencyUs\":{\"image\":\"x\"}}",
        "field 'latencyUs': field 'image': expected an integer 0..9223372036854775807, got string");
    BAD(drain, "{\"name\":\"f\"}", "field 'ids': required");
    BAD(status, "{\"workers\":[],\"dataplanes\":[],\"functions\":[]}", "field 'role': required");
}

/* Issue 14 finding 12: every field is validated, not only typed. Each line is a forged
 * message a daemon refuses (the receiver answers 400 with this text after its own prefix). */
#define NAME_RULE "expected a name (1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)"
#define ADDR_RULE "expected HOST:PORT (an IPv4 address, [IPv6] or a host name, and a port 1..65535)"
#define ID_RULE                                                                                    \
    "expected a sandbox id (1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)"
#define FN_RULE                                                                                    \
    "expected a function name (a DNS label: 1..63 of a-z 0-9 -, not starting or ending with -)"

static void test_validation(void **state)
{
    /* worker names: charset and length */
    BAD(worker_beat, "{\"name\":\"w\\n1\",\"address\":\"127.0.0.1:1\"}",
        "field 'name': " NAME_RULE ", got 'w?1'");
    char *big = malloc(10300), *msg = malloc(11000);
    strcpy(big, "{\"name\":\"");
    memset(big + 9, 'a', 10240);
    strcpy(big + 9 + 10240, "\",\"address\":\"127.0.0.1:1\"}");
    BAD(worker_beat, big,
        "field 'name': " NAME_RULE ", got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' "
        "(10240 bytes)");
    BAD(worker_beat, "{\"name\":\"-w\",\"address\":\"127.0.0.1:1\"}",
        "field 'name': " NAME_RULE ", got '-w'");
    BAD(dp_beat, "{\"name\":\"d p\",\"api\":\"127.0.0.1:1\",\"proxy\":\"127.0.0.1:2\"}",
        "field 'name': " NAME_RULE ", got 'd p'");
    /* addresses */
    BAD(dp_beat, "{\"name\":\"dp\",\"api\":\"127.0.0.1:1\",\"proxy\":\"junk;evil\"}",
        "field 'proxy': " ADDR_RULE ", got 'junk;evil'");
    BAD(dp_beat, "{\"name\":\"dp\",\"api\":\"127.0.0.1:0\",\"proxy\":\"127.0.0.1:2\"}",
        "field 'api': " ADDR_RULE ", got '127.0.0.1:0'");
    BAD(dp_beat, "{\"name\":\"dp\",\"api\":\"127.0.0.1:65536\",\"proxy\":\"127.0.0.1:2\"}",
        "field 'api': " ADDR_RULE ", got '127.0.0.1:65536'");
    BAD(dp_beat, "{\"name\":\"dp\",\"api\":\"127.0.0.1:+80\",\"proxy\":\"127.0.0.1:2\"}",
        "field 'api': " ADDR_RULE ", got '127.0.0.1:+80'");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"999.1.1.1:80\"}",
        "field 'address': " ADDR_RULE ", got '999.1.1.1:80'");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"[::g]:80\"}",
        "field 'address': " ADDR_RULE ", got '[::g]:80'");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"a..b:80\"}",
        "field 'address': " ADDR_RULE ", got 'a..b:80'");
    BAD(worker_rec, "{\"address\":\"x\"}", "field 'address': " ADDR_RULE ", got 'x'");
    /* a worker's sandbox subnet (the CP logs it and judges adoptions by it) */
    BAD(worker_beat,
        "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxSubnet\":\"10.0.0.0/24\\nX\"}",
        "field 'sandboxSubnet': expected an address prefix (e.g. 10.200.0.0/16), or empty, got "
        "'10.0.0.0/24?X'");
    BAD(worker_rec, "{\"address\":\"1.2.3.4:5\",\"sandboxSubnet\":\"a b\"}",
        "field 'sandboxSubnet': expected an address prefix (e.g. 10.200.0.0/16), or empty, got "
        "'a b'");
    {
        struct dg_wire_worker_beat wb;
        struct dg_err e = {0};
        const char *ok =
            "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxSubnet\":\"10.200.0.0/16\"}";
        assert_int_equal(dg_wire_worker_beat_parse(ok, strlen(ok), &wb, &e), 0);
        assert_string_equal(wb.sandbox_subnet, "10.200.0.0/16");
        dg_wire_worker_beat_free(&wb);
    }
    BAD(dp_rec, "{\"api\":\"1.2.3.4:5\",\"proxy\":\"1.2.3.4\"}",
        "field 'proxy': " ADDR_RULE ", got '1.2.3.4'");
    const char *good_addrs[] = {"127.0.0.1:9090", "[::1]:80", "::1:80", "node-1.example.org:65535",
                                "localhost:1"};
    for (size_t i = 0; i < sizeof(good_addrs) / sizeof(*good_addrs); i++)
        assert_true(dg_wire_address_ok(good_addrs[i]));
    /* numbers: ranges, non-negative, finite and bounded */
    BAD(metrics, "{\"dataplane\":\"d\",\"functions\":[{\"name\":\"f\",\"inflight\":-1}]}",
        "field 'functions': item 0: field 'inflight': expected an integer 0..1000000000, got -1");
    BAD(metrics, "{\"dataplane\":\"d\",\"functions\":[{\"name\":\"f\",\"inflight\":1e300}]}",
        "field 'functions': item 0: field 'inflight': expected an integer 0..1000000000, got "
        "real");
    BAD(metrics, "{\"dataplane\":\"d\",\"functions\":[{\"name\":\"F\",\"inflight\":1}]}",
        "field 'functions': item 0: field 'name': " FN_RULE ", got 'F'");
    BAD(metrics, "{\"dataplane\":\"d;x\",\"functions\":[]}",
        "field 'dataplane': " NAME_RULE ", got 'd;x'");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"cpuMilli\":-1}",
        "field 'cpuMilli': expected an integer 0..1099511627776, got -1");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"cpuOvercommit\":1e300}",
        "field 'cpuOvercommit': expected 0..1000, got 1e+300");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxCount\":-3}",
        "field 'sandboxCount': expected an integer 0..1048576, got -3");
    BAD(worker_beat, "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"boot\":\"a b\"}",
        "field 'boot': expected a word (1..64 of A-Z a-z 0-9 . _ -), got 'a b'");
    BAD(sandbox_exit, "{\"id\":\"a\",\"function\":\"f\",\"status\":100000}",
        "field 'status': expected an integer -255..255, got 100000");
    /* ids */
    BAD(worker_beat,
        "{\"name\":\"w\",\"address\":\"1.2.3.4:5\",\"sandboxes\":[{\"id\":\"../x\",\"function\":"
        "\"f\",\"endpoint\":\"1.2.3.4:5\"}]}",
        "field 'sandboxes': item 0: field 'id': " ID_RULE ", got '../x'");
    BAD(drain, "{\"name\":\"f\",\"ids\":[\"a\",\"\"]}", "field 'ids': item 1: " ID_RULE ", got ''");
    BAD(push,
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[{\"id\":\"a "
        "b\",\"address\":\"1.2.3.4:5\"}]}]}",
        "field 'functions': item 0: field 'endpoints': item 0: field 'id': " ID_RULE ", got 'a b'");
    BAD(push,
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[{\"id\":\"a\",\"address\":\"1.2.3.4\"}]}]}",
        "field 'functions': item 0: field 'endpoints': item 0: field 'address': " ADDR_RULE
        ", got '1.2.3.4'");
    BAD(created, "{\"id\":\"a\",\"endpoint\":\"1.2.3.4:5\",\"latencyUs\":{\"image\":-1}}",
        "field 'latencyUs': field 'image': expected an integer 0..9223372036854775807, got -1");
    /* creates: function names, env entries, argument counts */
    BAD(create, "{\"function\":\"Hello_World\"}",
        "field 'function': " FN_RULE ", got 'Hello_World'");
    BAD(create, "{\"function\":\"f\",\"env\":[\"=x\"]}",
        "field 'env': item 0: expected NAME=value (NAME of A-Z a-z 0-9 _, not starting with a "
        "digit), got '=x'");
    BAD(create, "{\"function\":\"f\",\"env\":[\"LD_PRELOAD\"]}",
        "field 'env': item 0: expected NAME=value (NAME of A-Z a-z 0-9 _, not starting with a "
        "digit), got 'LD_PRELOAD'");
    /* enumerations */
    BAD(sandbox_list,
        "{\"sandboxes\":[{\"id\":\"a\",\"function\":\"f\",\"endpoint\":\"1.2.3.4:5\","
        "\"state\":\"gone\"}]}",
        "field 'sandboxes': item 0: field 'state': expected one of creating, ready, exited, "
        "deleting, got 'gone'");
    BAD(sandbox_list,
        "{\"sandboxes\":[{\"id\":\"a\",\"function\":\"f\",\"endpoint\":\":0\","
        "\"state\":\"ready\"}]}",
        "field 'sandboxes': item 0: field 'endpoint': expected HOST:PORT for a ready sandbox, got "
        "':0'");
    BAD(status, "{\"workers\":[],\"dataplanes\":[],\"functions\":[],\"role\":\"king\"}",
        "field 'role': expected leader or follower, got 'king'");
    /* a sandbox still creating has no address yet: listed as ":0" */
    struct dg_wire_sandbox_list l;
    struct dg_err err = {0};
    const char creating[] = "{\"sandboxes\":[{\"id\":\"a\",\"function\":\"f\",\"endpoint\":\":0\","
                            "\"state\":\"creating\"}]}";
    assert_int_equal(dg_wire_sandbox_list_parse(creating, strlen(creating), &l, &err), 0);
    dg_wire_sandbox_list_free(&l);
    /* list lengths */
    json_t *ids = json_array();
    for (int i = 0; i < 4097; i++)
        json_array_append_new(ids, json_string("a"));
    json_t *c = json_pack("{ss so}", "function", "f", "args", ids);
    struct dg_wire_create cr;
    assert_int_equal(dg_wire_create_decode(c, &cr, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'args': expected at most 4096 items, got 4097");
    json_decref(c);
    /* texts */
    memset(big, 'r', 5000);
    big[5000] = '\0';
    snprintf(msg, 11000, "{\"id\":\"a\",\"function\":\"f\",\"reason\":\"%s\"}", big);
    struct dg_wire_sandbox_exit ex;
    assert_int_equal(dg_wire_sandbox_exit_parse(msg, strlen(msg), &ex, &err), DG_E_INVAL);
    assert_non_null(strstr(err.msg, "field 'reason': expected at most 4096 bytes"));
    free(big);
    free(msg);
}

/* a failed decode leaves nothing behind (the leak checker of the sanitizer build says so) */
/* The DP's push path: the same update with its strings borrowed from the JSON (no copy per
 * endpoint); the same errors; arrays freed by the view's free (ASan: nothing leaks, nothing
 * borrowed is freed). */
static void test_fn_update_view(void **state)
{
    json_t *root = json_loads(PUSH, 0, NULL);
    struct dg_err err = {0};
    const json_t *items = dg_wire_push_items(root, &err);
    assert_non_null(items);
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i);
        struct dg_wire_fn_update c, v;
        assert_int_equal(dg_wire_fn_update_decode(item, &c, &err), 0);
        assert_int_equal(dg_wire_fn_update_view(item, &v, &err), 0);
        assert_ptr_equal(v.name, json_string_value(json_object_get(item, "name")));
        assert_string_equal(v.name, c.name);
        assert_int_equal(v.concurrency, c.concurrency);
        assert_int_equal(v.nendpoints, c.nendpoints);
        for (size_t k = 0; k < c.nendpoints; k++) {
            assert_string_equal(v.endpoints[k].id, c.endpoints[k].id);
            assert_string_equal(v.endpoints[k].address, c.endpoints[k].address);
        }
        assert_int_equal(v.nexited, c.nexited);
        for (size_t k = 0; k < c.nexited; k++)
            assert_string_equal(v.exited[k].reason, c.exited[k].reason);
        if (c.error)
            assert_string_equal(v.error, c.error);
        else
            assert_null(v.error);
        char *a = dg_wire_fn_update_dumps(&c), *b = dg_wire_fn_update_dumps(&v);
        assert_string_equal(a, b);
        free(a);
        free(b);
        dg_wire_fn_update_free(&c);
        dg_wire_fn_update_view_free(&v);
    }
    json_decref(root);

    /* a bad item: the decoder's error, nothing to free */
    root = json_loads("{\"name\":\"b\",\"endpoints\":[{\"id\":\"x\",\"address\":\"1.2.3.4:5\"},"
                      "{\"id\":\"z\"}]}",
                      0, NULL);
    struct dg_wire_fn_update v;
    assert_int_equal(dg_wire_fn_update_view(root, &v, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'endpoints': item 1: field 'address': required");
    assert_null(v.endpoints);
    dg_wire_fn_update_view_free(&v); /* harmless */
    assert_int_equal(dg_wire_fn_endpoints_view(root, &v, &err), DG_E_INVAL);
    json_decref(root);

    /* PUT /v1/functions/NAME/endpoints */
    root = json_loads("{\"endpoints\":[{\"id\":\"a\",\"address\":\"1.2.3.4:5\"}],"
                      "\"exited\":[{\"id\":\"a0\",\"reason\":\"OOM\"}]}",
                      0, NULL);
    assert_int_equal(dg_wire_fn_endpoints_view(root, &v, &err), 0);
    assert_null(v.name);
    assert_int_equal(v.nendpoints, 1);
    assert_string_equal(v.endpoints[0].address, "1.2.3.4:5");
    assert_string_equal(v.exited[0].reason, "OOM");
    dg_wire_fn_update_view_free(&v);
    json_decref(root);
}

static void test_failed_decode_frees(void **state)
{
    static const char late_error[] =
        "{\"functions\":[{\"name\":\"a\",\"endpoints\":[{\"id\":\"x\",\"address\":\"1.2.3.4:5\"}]},"
        "{\"name\":\"b\",\"endpoints\":[{\"id\":\"x\",\"address\":\"1.2.3.4:5\"},{\"id\":7}]}]}";
    struct dg_wire_push m;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_push_parse(late_error, strlen(late_error), &m, &err), DG_E_INVAL);
    assert_string_equal(err.msg,
                        "field 'functions': item 1: field 'endpoints': item 1: field 'id': "
                        "expected string, got integer");
    assert_null(m.functions);
    assert_int_equal(m.nfunctions, 0);
    dg_wire_push_free(&m); /* harmless */
}

/* lib/batch.c: the body {"items":[...]} and a line of the answer, as dg_batch_reply_item wrote
 * it with json_pack("{sI sI ss%}") */
static void test_batch_framing(void **state)
{
    static const char line[] = "{\"i\":2,\"status\":201,\"body\":\"{\\\"a\\\":1}\"}";
    char *s = dg_wire_batch_line_dumps(2, 201, "{\"a\":1}", 7);
    assert_string_equal(s, line);
    free(s);
    struct dg_wire_batch_line l;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_batch_line_parse(line, strlen(line), &l, &err), 0);
    assert_int_equal(l.i, 2);
    assert_int_equal(l.status, 201);
    assert_int_equal(l.body.len, 7);
    assert_memory_equal(l.body.ptr, "{\"a\":1}", 7);
    dg_wire_batch_line_free(&l);

    /* any bytes: a NUL survives, bytes that are not UTF-8 become '?' */
    s = dg_wire_batch_line_dumps(0, 400, "a\0b\xff", 4);
    assert_int_equal(dg_wire_batch_line_parse(s, strlen(s), &l, &err), 0);
    assert_int_equal(l.body.len, 4);
    assert_memory_equal(l.body.ptr, "a\0b?", 4);
    dg_wire_batch_line_free(&l);
    free(s);

    static const char no_i[] = "{\"status\":200}";
    assert_int_equal(dg_wire_batch_line_parse(no_i, strlen(no_i), &l, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'i': required");
    assert_null(l.root_);
    static const char bad_body[] = "{\"i\":0,\"status\":200,\"body\":1}";
    assert_int_equal(dg_wire_batch_line_parse(bad_body, strlen(bad_body), &l, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'body': expected string, got integer");

    json_t *items = json_array();
    json_array_append_new(items, dg_wire_delete_item_encode("x"));
    json_t *body = dg_wire_batch_encode(items);
    s = dg_json_dumps(body);
    assert_string_equal(s, "{\"items\":[\"x\"]}");
    free(s);
    assert_ptr_equal(dg_wire_batch_items(body, &err), items);
    json_decref(body);
    body = json_loads("{\"items\":[]}", 0, NULL);
    assert_null(dg_wire_batch_items(body, &err));
    assert_string_equal(err.msg, "field 'items': expected a non-empty array");
    json_decref(body);
}

static void test_heartbeat_answer(void **state)
{
    assert_true(dg_wire_beat_answer_is_resync("resync\n", 7));
    assert_true(dg_wire_beat_answer_is_resync(DG_WIRE_BEAT_RESYNC, 6));
    assert_false(dg_wire_beat_answer_is_resync("ok\n", 3));
    assert_false(dg_wire_beat_answer_is_resync("res", 3));
    assert_false(dg_wire_beat_answer_is_resync(NULL, 0));
}

#define ASYNC_REQ                                                                                  \
    "{\"id\":\"0f1e2d3c-4b5a-4697-8877-665544332211\",\"dataplane\":\"dp1\",\"function\":"         \
    "\"hello\",\"method\":\"POST\",\"url\":\"/x?y=1\",\"headers\":[{\"name\":\"requested_cpu\","   \
    "\"value\":\"5\"}],\"body\":\"aGk=\",\"acceptedMs\":1700000000000,\"tries\":0}"
#define ASYNC_STATE_DONE                                                                           \
    "{\"state\":\"done\",\"result\":{\"id\":\"ab-12\",\"status\":200,\"contentType\":"             \
    "\"application/json\",\"body\":\"e30=\",\"durationUs\":1500,\"tries\":1},\"expiresMs\":5}"

/* asynchronous invocations: every field checked; base64 both ways */
static void test_async(void **state)
{
    struct dg_wire_async_req q;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_async_req_parse(ASYNC_REQ, strlen(ASYNC_REQ), &q, &err), 0);
    assert_string_equal(q.function, "hello");
    assert_int_equal(q.nheaders, 1);
    assert_string_equal(q.headers[0].value, "5");
    char *body;
    size_t len;
    assert_int_equal(dg_wire_b64_decode(q.body, &body, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(body, "hi", 2);
    free(body);
    dg_wire_async_req_free(&q);
    static const struct {
        const char *json, *err;
    } bad[] = {
        {"{\"id\":\"XYZ\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"/\","
         "\"body\":\"\"}",
         "field 'id': expected an asynchronous request id"},
        {"{\"id\":\"ab\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"x\","
         "\"body\":\"\"}",
         "field 'url': expected a request target"},
        {"{\"id\":\"ab\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"/\","
         "\"body\":\"aGk\"}",
         "field 'body': expected base64"},
        {"{\"id\":\"ab\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"/\","
         "\"body\":\"aGl=\"}",
         "field 'body': expected base64"}, /* non-zero padding bits: not the one encoding */
        {"{\"id\":\"ab\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"/\","
         "\"body\":\"\",\"headers\":[{\"name\":\"a b\",\"value\":\"1\"}]}",
         "field 'headers': item 0: field 'name': expected a header name"},
        {"{\"id\":\"ab\",\"dataplane\":\"d\",\"function\":\"f\",\"method\":\"GET\",\"url\":\"/\","
         "\"body\":\"\",\"extra\":1}",
         "field 'extra': unknown field"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(dg_wire_async_req_parse(bad[i].json, strlen(bad[i].json), &q, &err) < 0);
        if (!strstr(err.msg, bad[i].err))
            fail_msg("%zu: %s", i, err.msg);
    }
    struct dg_wire_async_state st;
    assert_int_equal(
        dg_wire_async_state_parse(ASYNC_STATE_DONE, strlen(ASYNC_STATE_DONE), &st, &err), 0);
    assert_true(st.has_result);
    assert_int_equal(st.result.status, 200);
    dg_wire_async_state_free(&st);
    const char *pending_without = "{\"state\":\"pending\"}";
    assert_true(dg_wire_async_state_parse(pending_without, strlen(pending_without), &st, &err) < 0);
    assert_string_equal(err.msg, "field 'request': required when state is pending");
    /* base64: every length round-trips, and the encoder's output passes the check */
    unsigned char data[300];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n < sizeof(data); n++) {
        char *e = dg_wire_b64_encode(data, n), *d;
        size_t dl;
        assert_int_equal(dg_wire_b64_decode(e, &d, &dl), 0);
        assert_int_equal(dl, n);
        assert_memory_equal(d, data, n);
        char *msg = dg_xasprintf("{\"id\":\"a\",\"status\":200,\"body\":\"%s\"}", e);
        struct dg_wire_async_result r;
        assert_int_equal(dg_wire_async_result_parse(msg, strlen(msg), &r, &err), 0);
        dg_wire_async_result_free(&r);
        free(msg);
        free(e);
        free(d);
    }
    assert_true(dg_wire_async_id_ok("0f1e-ab", 7));
    assert_false(dg_wire_async_id_ok("0F1E", 4));
    assert_false(dg_wire_async_id_ok("", 0));
}

/* every decoder on every sample: what one accepts round-trips (dg_wire_roundtrip_nth aborts
 * otherwise), and each sample is accepted by its own decoder */
static void test_roundtrip_all(void **state)
{
    static const struct {
        const char *msg, *bytes;
    } samples[] = {{"worker_beat", WORKER_BEAT},
                   {"worker_beat", WORKER_BEAT_PLAIN},
                   {"sandbox_exit", SANDBOX_EXIT},
                   {"sibling_beat", SIBLING_BEAT},
                   {"dp_beat", DP_BEAT},
                   {"metrics", METRICS},
                   {"create", CREATE},
                   {"created", CREATED},
                   {"sandbox_list", SANDBOX_LIST},
                   {"push", PUSH},
                   {"drain", DRAIN},
                   {"worker_rec", WORKER_REC},
                   {"dp_rec", DP_REC},
                   {"status", STATUS},
                   {"status", STATUS_FOLLOWER},
                   {"dp_fn_view", DP_FN_VIEW},
                   {"dp_fn_view", DP_FN_VIEW_ERR},
                   {"async_req", ASYNC_REQ},
                   {"async_state", ASYNC_STATE_DONE}};
    size_t nmsgs = 0;
    const char *name;
    struct dg_err err;
    while (dg_wire_roundtrip_nth(nmsgs, "{}", 2, &name, &err) != -1)
        nmsgs++;
    assert_true(nmsgs >= 30);
    for (size_t s = 0; s < sizeof(samples) / sizeof(samples[0]); s++) {
        bool own = false;
        for (size_t i = 0; i < nmsgs; i++) {
            int rc =
                dg_wire_roundtrip_nth(i, samples[s].bytes, strlen(samples[s].bytes), &name, &err);
            if (strcmp(name, samples[s].msg) == 0) {
                assert_int_equal(rc, 0);
                own = true;
            }
        }
        assert_true(own);
    }
}

/* The fast path (issue 16, session 2): what a daemon writes decodes without a JSON tree, the
 * strings borrowed from one copy of the body; anything else (valid or not) is left to the usual
 * decode (-1, nothing to free), which reads the valid ones the same and names the error of the
 * others. */
static void test_fast_path(void **state)
{
    struct dg_wire_push p;
    char *store;
    assert_int_equal(dg_wire_push_view_fast(PUSH, strlen(PUSH), &p, &store), 0);
    assert_non_null(store);
    assert_int_equal(p.nfunctions, 2);
    assert_string_equal(p.functions[0].name, "hello");
    assert_int_equal(p.functions[0].concurrency, 1);
    assert_string_equal(p.functions[0].endpoints[0].address, "10.0.0.2:8080");
    assert_string_equal(p.functions[1].error, "create failed: image not found");
    assert_string_equal(p.functions[1].exited[0].reason, "OOM-killed: memory limit 64 MiB");
    assert_int_equal(p.functions[1].concurrency, 4);
    assert_false(p.full);
    dg_wire_push_view_free(&p, store);
    /* a resync part, with spaces and newlines between the tokens */
    static const char part[] = "{ \"functions\" : [ {\"name\":\"f\",\"endpoints\":[]} ],\n"
                               "\"full\":true,\"sync\":3,\"part\":0,\"parts\":2 }\n";
    assert_int_equal(dg_wire_push_view_fast(part, strlen(part), &p, &store), 0);
    assert_true(p.full);
    assert_int_equal(p.functions[0].concurrency, 1); /* absent: 1 */
    assert_int_equal(p.sync, 3);
    assert_int_equal(p.parts, 2);
    dg_wire_push_view_free(&p, store);
    static const char *const other[] = {
        /* valid, not the common case: the usual decode reads them */
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"error\":\"say \\\"no\\\"\"}]}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"error\":\"caf\xc3\xa9\"}]}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"x\":[1.5,{\"y\":[]}]}]}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"concurrency\":00}]}",
        /* not valid: refused by both */
        "{\"functions\":[{\"name\":\"f\",\"name\":\"g\",\"endpoints\":[]}]}",
        "{\"functions\":[{\"name\":\"F\",\"endpoints\":[]}]}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[],\"concurrency\":100001}]}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[]}]} x",
        "{\"functions\":[],\"sync\":1,\"part\":0,\"parts\":2}",
        "{\"functions\":[{\"name\":\"f\",\"endpoints\":[]}]",
        "",
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        assert_int_equal(dg_wire_push_view_fast(other[i], strlen(other[i]), &p, &store), -1);
        assert_null(store);
        assert_null(p.functions);
        struct dg_wire_push d;
        struct dg_err err = {0};
        int rc = dg_wire_push_parse(other[i], strlen(other[i]), &d, &err);
        assert_int_equal(rc == 0, i < 3); /* "00" is not JSON */
        if (i == 0)
            assert_string_equal(d.functions[0].error, "say \"no\"");
        if (rc == 0)
            dg_wire_push_free(&d);
    }
    /* and written back in one pass, the same bytes as jansson's dump, escapes included (a
     * non-ASCII string and a real number are left to jansson) */
    static const char *const texts[] = {"plain", "say \"no\" \\ now\n\t\r\b\f\x01\x1f\x7f",
                                        "caf\xc3\xa9", "bad \xff byte", ""};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct dg_wire_endpoint ep = {"w1-0-1", "10.0.0.1:80"};
        struct dg_wire_exit_note ex = {"w1-0-2", (char *)texts[i]};
        struct dg_wire_fn_update u = {.name = "f1",
                                      .concurrency = 0,
                                      .endpoints = &ep,
                                      .nendpoints = 1,
                                      .error = (char *)texts[i],
                                      .exited = &ex,
                                      .nexited = 1,
                                      .h2c = true};
        char *fast = dg_wire_fn_update_dumps(&u);
        json_t *j = dg_wire_fn_update_encode(&u);
        char *slow = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(fast, slow);
        free(fast);
        free(slow);
        json_decref(j);
    }
    /* a batch of drains (the DP's POST /v1/drain) */
    static const char drains[] = "{\"items\":[{\"name\":\"a\",\"ids\":[\"w1-1\",\"w1-2\"]},"
                                 "{\"name\":\"b\",\"ids\":[]}]}";
    struct dg_wire_drain *ds;
    size_t nd;
    assert_int_equal(dg_wire_drains_view_fast(drains, strlen(drains), &ds, &nd, &store), 0);
    assert_int_equal(nd, 2);
    assert_string_equal(ds[0].name, "a");
    assert_int_equal(ds[0].ids.n, 2);
    assert_string_equal(ds[0].ids.v[1], "w1-2");
    assert_int_equal(ds[1].ids.n, 0);
    dg_wire_drains_view_free(ds, nd, store);
    static const char *const bad_drains[] = {"{\"items\":[]}", "{\"items\":[{\"name\":\"a\"}]}",
                                             "{\"items\":[{\"name\":\"a\",\"ids\":[1]}]}"};
    for (size_t i = 0; i < sizeof(bad_drains) / sizeof(bad_drains[0]); i++) {
        assert_int_equal(
            dg_wire_drains_view_fast(bad_drains[i], strlen(bad_drains[i]), &ds, &nd, &store), -1);
        assert_null(store);
    }
    /* every *_parse goes this way first: the CP's metric reports */
    static const char metrics[] =
        "{\"dataplane\":\"dp1\",\"functions\":[{\"name\":\"a\",\"inflight\":2},"
        "{\"name\":\"b\",\"inflight\":0}]}";
    struct dg_wire_metrics m;
    struct dg_err err = {0};
    assert_int_equal(dg_wire_metrics_parse(metrics, strlen(metrics), &m, &err), 0);
    assert_int_equal(m.nfunctions, 2);
    assert_string_equal(m.functions[1].name, "b");
    assert_int_equal(m.functions[0].inflight, 2);
    dg_wire_metrics_free(&m);
    static const char neg[] =
        "{\"dataplane\":\"dp1\",\"functions\":[{\"name\":\"a\",\"inflight\":-1}]}";
    assert_true(dg_wire_metrics_parse(neg, strlen(neg), &m, &err) < 0);
    assert_non_null(strstr(err.msg, "inflight"));
}

/* The splitter at its boundaries (issue 16): an item that fills a part exactly fits alone;
 * one byte more is refused with an error, nothing changes, and the next item goes on; parts
 * hold as many whole items as fit with their separators. */
static void test_parts(void **state)
{
    struct dg_wire_parts p;
    struct dg_err err;
    const size_t max = 1000, room = max - DG_WIRE_ENVELOPE_MAX;
    dg_wire_parts_init(&p, max);
    /* exactly at the limit: fits, alone */
    assert_int_equal(dg_wire_parts_add(&p, room, &err), DG_WIRE_PART_NEW);
    assert_int_equal(p.parts, 1);
    /* the next, however small, needs a new part (the separator does not fit) */
    assert_int_equal(dg_wire_parts_add(&p, 1, &err), DG_WIRE_PART_NEW);
    assert_int_equal(p.parts, 2);
    /* one byte over a part alone: refused, clearly, and nothing changes */
    assert_int_equal(dg_wire_parts_add(&p, room + 1, &err), DG_E_LIMIT);
    assert_non_null(strstr(err.msg, "an item of 745 bytes is more than a part holds"));
    assert_int_equal(p.parts, 2);
    assert_int_equal(p.items, 1);
    /* a huge one too (no loop, no wrap-around) */
    assert_int_equal(dg_wire_parts_add(&p, SIZE_MAX, &err), DG_E_LIMIT);
    /* the part of 1 byte takes items while item + ',' fit: 1 + 371*2 = 743 < 744, 745 > 744 */
    for (int i = 0; i < 371; i++)
        assert_int_equal(dg_wire_parts_add(&p, 1, &err), DG_WIRE_PART_SAME);
    assert_int_equal(p.used, 743);
    assert_int_equal(dg_wire_parts_add(&p, 1, &err), DG_WIRE_PART_NEW);
    assert_int_equal(p.parts, 3);
    /* a part of nothing but the envelope holds nothing */
    dg_wire_parts_init(&p, DG_WIRE_ENVELOPE_MAX);
    assert_int_equal(dg_wire_parts_add(&p, 1, &err), DG_E_LIMIT);
    assert_int_equal(dg_wire_parts_add(&p, 0, &err), DG_WIRE_PART_NEW);
    /* the defaults stay below the receivers' limit */
    assert_true(DG_WIRE_PART_MAX < DG_WIRE_BODY_LIMIT);
}

/* A push built from encoded items, in parts: each part is a valid push whose part fields
 * decode; bad part fields are refused naming the field. */
static void test_push_parts(void **state)
{
    struct dg_wire_endpoint ep = {"w1-0-1", "10.0.0.1:80"};
    struct dg_wire_fn_update u = {
        .name = "f1", .concurrency = 1, .endpoints = &ep, .nendpoints = 1};
    char *item = dg_wire_fn_update_dumps(&u);
    struct dg_str items[2] = {dg_str_c(item), dg_str_c(item)};
    size_t len;
    struct dg_wire_push m = {.full = true, .sync = 7, .part = 1, .parts = 3};
    char *body = dg_wire_push_join(items, 2, &m, &len);
    assert_int_equal(len, strlen(body));
    assert_true(len <= 2 * strlen(item) + 1 + DG_WIRE_ENVELOPE_MAX);
    struct dg_wire_push d;
    struct dg_err err;
    assert_int_equal(dg_wire_push_parse(body, len, &d, &err), 0);
    assert_int_equal(d.nfunctions, 2);
    assert_string_equal(d.functions[1].endpoints[0].address, "10.0.0.1:80");
    assert_true(d.full);
    assert_int_equal(d.sync, 7);
    assert_int_equal(d.part, 1);
    assert_int_equal(d.parts, 3);
    dg_wire_push_free(&d);
    free(body);
    /* one body: no part fields; an empty push is valid */
    m = (struct dg_wire_push){0};
    body = dg_wire_push_join(NULL, 0, &m, &len);
    assert_string_equal(body, "{\"functions\":[]}");
    free(body);
    free(item);

    static const struct {
        const char *body, *err;
    } bad[] = {
        {"{\"functions\":[],\"sync\":1,\"part\":0,\"parts\":2}",
         "field 'parts': only a full push (\"full\": true) comes in parts"},
        {"{\"functions\":[],\"full\":true,\"part\":0,\"parts\":2}",
         "field 'sync': expected 1.., got 0"},
        {"{\"functions\":[],\"full\":true,\"sync\":1,\"part\":2,\"parts\":2}",
         "field 'part': expected 0..parts-1 with parts >= 1, got part 2 of 2"},
        {"{\"functions\":[],\"full\":true,\"sync\":1,\"part\":-1,\"parts\":2}", "field 'part'"},
        {"{\"functions\":[],\"full\":true,\"sync\":\"1\",\"part\":0,\"parts\":2}", "field 'sync'"},
    };
    for (size_t i = 0; i < DG_ARRAY_LEN(bad); i++) {
        assert_int_equal(dg_wire_push_parse(bad[i].body, strlen(bad[i].body), &d, &err),
                         DG_E_INVAL);
        assert_non_null(strstr(err.msg, bad[i].err));
        json_t *root = json_loads(bad[i].body, 0, NULL);
        assert_int_equal(dg_wire_push_part(root, &d, &err), DG_E_INVAL);
        assert_non_null(strstr(err.msg, bad[i].err));
        json_decref(root);
    }
}

/* A JSON answer's compact line: written and read without a JSON parser, the object handed
 * on as it is; what is not exactly that form goes to the full parser (and its errors). */
static void test_batch_json_line(void **state)
{
    struct dg_wire_batch_line l;
    struct dg_err err;
    char *s = dg_wire_batch_line_json(12, 201, "{\"id\":\"a\"}", 10);
    assert_string_equal(s, "{\"i\":12,\"status\":201,\"json\":{\"id\":\"a\"}}");
    assert_int_equal(dg_wire_batch_line_parse(s, strlen(s), &l, &err), 0);
    assert_int_equal(l.i, 12);
    assert_int_equal(l.status, 201);
    assert_int_equal(l.body.len, 10);
    assert_memory_equal(l.body.ptr, "{\"id\":\"a\"}", 10);
    assert_null(l.root_); /* no JSON tree was made */
    dg_wire_batch_line_free(&l);
    free(s);
    static const char *const bad[] = {
        "{\"i\":01,\"status\":201,\"json\":{}}",                  /* a leading zero */
        "{\"i\":1234567890123456789,\"status\":201,\"json\":{}}", /* 19 digits */
        "{\"i\":1,\"status\":2011,\"json\":{}}",                  /* status of 4 digits */
        "{\"i\":1,\"status\":201,\"json\":{}",                    /* cut short */
        "{\"i\":-1,\"status\":201,\"json\":{}}",
    };
    /* a plain text answer: the same bytes the JSON encoder wrote, read without a parser */
    s = dg_wire_batch_line_dumps(3, 200, "deleting w1-0-1", 15);
    assert_string_equal(s, "{\"i\":3,\"status\":200,\"body\":\"deleting w1-0-1\"}");
    assert_int_equal(dg_wire_batch_line_parse(s, strlen(s), &l, &err), 0);
    assert_null(l.root_);
    assert_int_equal(l.body.len, 15);
    assert_memory_equal(l.body.ptr, "deleting w1-0-1", 15);
    free(s);
    /* text that needs escaping goes through the encoder and the parser */
    s = dg_wire_batch_line_dumps(4, 400, "a \"b\"\n", 7);
    assert_int_equal(dg_wire_batch_line_parse(s, strlen(s), &l, &err), 0);
    assert_non_null(l.root_);
    assert_int_equal(l.body.len, 7);
    assert_memory_equal(l.body.ptr, "a \"b\"\n", 7);
    dg_wire_batch_line_free(&l);
    free(s);
    /* refused, or read by the full parser, which hands no object on (its body is empty) */
    for (size_t k = 0; k < DG_ARRAY_LEN(bad); k++) {
        int rc = dg_wire_batch_line_parse(bad[k], strlen(bad[k]), &l, &err);
        assert_true(rc < 0 || l.body.len == 0);
        if (rc == 0)
            dg_wire_batch_line_free(&l);
    }
}

/* A batch body from encoded items is what the JSON encoder made, and its items decode. */
static void test_batch_text(void **state)
{
    struct dg_buf b = {0};
    dg_wire_batch_open(&b);
    dg_wire_batch_append(&b, 0, "\"a\"", 3);
    dg_wire_batch_append(&b, 1, "{\"n\":1}", 7);
    dg_wire_batch_close(&b);
    assert_string_equal(b.data, "{\"items\":[\"a\",{\"n\":1}]}");
    json_t *root = json_loads(b.data, 0, NULL);
    struct dg_err err;
    assert_int_equal(json_array_size(dg_wire_batch_items(root, &err)), 2);
    json_decref(root);
    dg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_beat),
        cmocka_unit_test(test_sandbox_exit),
        cmocka_unit_test(test_sibling_beat),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_dp_beat_and_metrics),
        cmocka_unit_test(test_create_and_created),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_sandbox_list),
        cmocka_unit_test(test_push),
        cmocka_unit_test(test_drain_and_records),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_dp_fn_view),
        cmocka_unit_test(test_roundtrip_built),
        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_fn_update_view),
        cmocka_unit_test(test_failed_decode_frees),
        cmocka_unit_test(test_batch_framing),
        cmocka_unit_test(test_heartbeat_answer),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_push_parts),
        cmocka_unit_test(test_fast_path),
        cmocka_unit_test(test_batch_text),
        cmocka_unit_test(test_batch_json_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
