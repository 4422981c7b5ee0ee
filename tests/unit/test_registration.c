/*
 * test_registration.c: the urlencoded form parser and the registration form as
 * InVitro sends it: defaults, every field, and an error naming the field for
 * each kind of bad value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dirigent/form.h"
#include "function_json.h"

static void test_form_decoding(void **state)
{
    struct dg_form f;
    struct dg_err err = {0};
    assert_int_equal(dg_form_parse(DG_STR("a=1&b=x+y%2Bz%3d&&c&a=2&d="), &f, &err), 0);
    assert_string_equal(dg_form_get(&f, "a", 0), "1");
    assert_string_equal(dg_form_get(&f, "a", 1), "2");
    assert_null(dg_form_get(&f, "a", 2));
    assert_int_equal(dg_form_count(&f, "a"), 2);
    assert_string_equal(dg_form_get(&f, "b", 0), "x y+z=");
    assert_string_equal(dg_form_get(&f, "c", 0), "");
    assert_string_equal(dg_form_get(&f, "d", 0), "");
    assert_null(dg_form_get(&f, "zz", 0));
    dg_form_free(&f);
    assert_int_equal(dg_form_parse(DG_STR("name=%zz"), &f, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "form: field 'name': bad percent-encoding");
    assert_int_equal(f.n, 0);
    assert_int_equal(dg_form_parse(DG_STR("name=a%00b"), &f, &err), DG_E_INVAL);
    assert_int_equal(dg_form_parse(DG_STR("name=%4"), &f, &err), DG_E_INVAL);
    assert_int_equal(dg_form_parse(DG_STR(""), &f, &err), 0);
    assert_int_equal(f.n, 0);
}

/* Parse `body` as a registration; returns the error code, fills spec/err. */
static int reg(const char *body, struct cp_fn_spec *spec, struct dg_err *err)
{
    struct dg_form f;
    int rc = dg_form_parse(dg_str_c(body), &f, err);
    if (rc == 0)
        rc = cp_fn_spec_from_form(&f, spec, err);
    dg_form_free(&f);
    return rc;
}

static void test_invitro_form(void **state)
{
    struct cp_fn_spec s;
    struct dg_err err = {0};
    assert_int_equal(reg("name=trace-func-0&image=docker.io%2Fcvetkovic%2Fdirigent_trace_function"
                         "%3Alatest&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=10"
                         "&scaling_lower_bound=1&requested_cpu=250&requested_memory=512"
                         "&cold_start_sweep=false&iteration_multiplier=102&env_vars=A%3D1"
                         "&env_vars=B_2%3Dx%3Dy&program_args=--fast&prepull_mode=none",
                         &s, &err),
                     0);
    assert_string_equal(s.name, "trace-func-0");
    assert_string_equal(s.image, "docker.io/cvetkovic/dirigent_trace_function:latest");
    assert_int_equal(s.port, 80);
    assert_string_equal(s.proto, "tcp");
    assert_int_equal(s.cpu_milli, 250);
    assert_int_equal(s.memory_mib, 512);
    assert_int_equal(s.upper_bound, 10);
    assert_int_equal(s.lower_bound, 1);
    assert_false(s.cold_start_sweep);
    assert_int_equal(s.iteration_multiplier, 102);
    assert_int_equal(s.concurrency, 1); /* default: one request at a time per sandbox */
    assert_int_equal(s.env.n, 2);
    assert_string_equal(s.env.v[1], "B_2=x=y");
    assert_int_equal(s.args.n, 1);
    assert_string_equal(s.args.v[0], "--fast");
    cp_fn_spec_free(&s);
}

/* Exactly what InVitro's dirigent deployer posts (url.Values.Encode: keys sorted) for a trace
 * function whose memory is under 10 MiB: requested_memory=0 is the minimum, not an error, and
 * so is requested_cpu=0 (the worker's floor applies, lib/resources.c). */
static void test_invitro_zero_requests(void **state)
{
    struct cp_fn_spec s;
    struct dg_err err = {0};
    assert_int_equal(reg("cold_start_busy_loop_ms=300&cold_start_sweep=false&image=docker.io%2F"
                         "cvetkovic%2Fdirigent_grpc_function%3Alatest&iteration_multiplier=80"
                         "&name=invitro-0-123&port_forwarding=80&port_forwarding=tcp"
                         "&requested_cpu=0&requested_memory=0&scaling_lower_bound=0"
                         "&scaling_upper_bound=1",
                         &s, &err),
                     0);
    assert_int_equal(s.cpu_milli, 0);
    assert_int_equal(s.memory_mib, 0);
    assert_int_equal(s.cold_start_busy_loop_ms, 300);
    assert_int_equal(s.iteration_multiplier, 80);
    assert_int_equal(s.upper_bound, 1);
    cp_fn_spec_free(&s);
}

static void test_defaults(void **state)
{
    struct cp_fn_spec s;
    struct dg_err err = {0};
    assert_int_equal(
        reg("name=f&image=/usr/bin/fn&port_forwarding=8080&port_forwarding=tcp", &s, &err), 0);
    assert_int_equal(s.cpu_milli, 1); /* the original's defaults */
    assert_int_equal(s.memory_mib, 1);
    assert_int_equal(s.lower_bound, 0);
    assert_int_equal(s.upper_bound, INT32_MAX);
    cp_fn_spec_free(&s);
    /* the cold-start sweep profile caps at 1 unless a bound is given */
    assert_int_equal(reg("name=f&image=x&port_forwarding=80&port_forwarding=tcp"
                         "&cold_start_sweep=true",
                         &s, &err),
                     0);
    assert_true(s.cold_start_sweep);
    assert_int_equal(s.upper_bound, 1);
    assert_false(s.h2c); /* upstream_protocol: http1 unless declared */
    cp_fn_spec_free(&s);
    assert_int_equal(reg("name=f&image=x&port_forwarding=80&port_forwarding=tcp"
                         "&upstream_protocol=h2c",
                         &s, &err),
                     0);
    assert_true(s.h2c);
    cp_fn_spec_free(&s);
    assert_int_equal(reg("name=f&image=x&port_forwarding=80&port_forwarding=tcp"
                         "&upstream_protocol=http2",
                         &s, &err),
                     DG_E_INVAL);
    assert_non_null(strstr(err.msg, "field 'upstream_protocol': expected 'http1' (the default) "
                                    "or 'h2c'"));
}

static void test_errors_name_the_field(void **state)
{
    static const struct {
        const char *body, *msg;
    } cases[] = {
        {"image=x&port_forwarding=80&port_forwarding=tcp", "field 'name': required"},
        {"name=Hello&image=x&port_forwarding=80&port_forwarding=tcp",
         "field 'name': expected lowercase letters, digits and '-' (1..63, not starting or "
         "ending with '-'), got 'Hello'"},
        {"name=-a&image=x&port_forwarding=80&port_forwarding=tcp", "field 'name': expected"},
        {"name=a&port_forwarding=80&port_forwarding=tcp", "field 'image': required"},
        {"name=a&image=has+space&port_forwarding=80&port_forwarding=tcp",
         "field 'image': expected no spaces or control characters, got 'has space' (accepted: "},
        {"name=a&image=r%2Fx%40sha256%3Azz&port_forwarding=80&port_forwarding=tcp",
         "field 'image': expected a digest"},
        {"name=a&image=x&port_forwarding=80",
         "field 'port_forwarding': expected two values, the guest port and 'tcp' "
         "(port_forwarding=80&port_forwarding=tcp), got 1"},
        {"name=a&image=x&port_forwarding=0&port_forwarding=tcp",
         "field 'port_forwarding': expected a port 1..65535, got '0'"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=sctp",
         "field 'port_forwarding': expected protocol 'tcp' (invocations are HTTP over TCP), "
         "got 'sctp'"},
        /* issue 14: strictness */
        {"name=a&image=x&port_forwarding=80&port_forwarding=udp",
         "field 'port_forwarding': expected protocol 'tcp'"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&udp",
         "field 'udp': not a registration field, and without a value"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&name=b",
         "field 'name': given 2 times, expected once"},
        {"name=a&image=x&image=y&port_forwarding=80&port_forwarding=tcp",
         "field 'image': given 2 times, expected once"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=1"
         "&scaling_upper_bound=9",
         "field 'scaling_upper_bound': given 2 times, expected once"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&cold_start_sweep=true"
         "&cold_start_sweep=false",
         "field 'cold_start_sweep': given 2 times, expected once"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&port_forwarding=81",
         "field 'port_forwarding': expected two values"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&requested_cpu=-5",
         "field 'requested_cpu': expected an integer 0..1000000, got '-5'"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&requested_memory=lots",
         "field 'requested_memory': expected an integer"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&cold_start_sweep=yes",
         "field 'cold_start_sweep': expected true or false, got 'yes'"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=2"
         "&scaling_lower_bound=3",
         "field 'scaling_lower_bound': expected at most scaling_upper_bound (2), got 3"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&container_concurrency=-1",
         "field 'container_concurrency': expected an integer 0..1000, got '-1'"},
        {"name=a&image=x&port_forwarding=80&port_forwarding=tcp&env_vars=1A%3Db",
         "field 'env_vars': expected NAME=VALUE"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cp_fn_spec s;
        struct dg_err err = {0};
        assert_int_equal(reg(cases[i].body, &s, &err), DG_E_INVAL);
        if (strncmp(err.msg, cases[i].msg, strlen(cases[i].msg)) != 0)
            fail_msg("case %zu: got \"%s\"\nwant prefix \"%s\"", i, err.msg, cases[i].msg);
    }
}

/* Parse `json` as a JSON registration; returns the error code, fills spec/err. */
static int reg_json(const char *json, struct cp_fn_spec *spec, struct dg_err *err)
{
    json_t *j = NULL;
    struct dg_form f = {0};
    int rc = dg_json_parse(json, strlen(json), &j, err);
    if (rc == 0)
        rc = cp_fn_form_from_json(j, &f, err);
    if (rc == 0)
        rc = cp_fn_spec_from_form(&f, spec, err);
    dg_form_free(&f);
    json_decref(j);
    return rc;
}

/* The JSON registration: each field of its type; what the CLI and the store send works. */
/* prewarm (issue 16): an integer 0..1000, at most the upper bound, default 0, kept by the
 * store's JSON (and left out there when 0). */
static void test_prewarm(void **state)
{
    struct cp_fn_spec s;
    struct dg_err err = {0};
    const char *base = "name=a&image=x&port_forwarding=80&port_forwarding=tcp";
    char body[256];
    assert_int_equal(reg(base, &s, &err), 0);
    assert_int_equal(s.prewarm, 0);
    json_t *j = cp_fn_spec_to_json(&s);
    assert_null(json_object_get(j, "prewarm"));
    json_decref(j);
    cp_fn_spec_free(&s);
    snprintf(body, sizeof(body), "%s&prewarm=4", base);
    assert_int_equal(reg(body, &s, &err), 0);
    assert_int_equal(s.prewarm, 4);
    j = cp_fn_spec_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(j, "prewarm")), "4");
    json_decref(j);
    cp_fn_spec_free(&s);
    static const struct {
        const char *extra, *msg;
    } bad[] = {
        {"&prewarm=-1", "field 'prewarm': expected an integer 0..1000, got '-1'"},
        {"&prewarm=1001", "field 'prewarm': expected an integer 0..1000, got '1001'"},
        {"&prewarm=many", "field 'prewarm': expected an integer 0..1000, got 'many'"},
        {"&prewarm=1&prewarm=2", "field 'prewarm': given 2 times, expected once"},
        {"&prewarm=3&scaling_upper_bound=2",
         "field 'prewarm': expected at most scaling_upper_bound (2), got 3 (lower prewarm or "
         "raise scaling_upper_bound)"},
        {"&prewarm=2&cold_start_sweep=true", "expected at most scaling_upper_bound (1), got 2"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "%s%s", base, bad[i].extra);
        assert_true(reg(body, &s, &err) < 0);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: got \"%s\"\nwant \"%s\"", i, err.msg, bad[i].msg);
    }
}

static void test_json_strict(void **state)
{
    static const struct {
        const char *body, *msg;
    } cases[] = {
        {"{\"name\":123,\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"]}",
         "field 'name': expected a string, got integer"},
        {"{\"name\":[\"a\",\"b\"],\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"]}",
         "field 'name': expected one value, got an array"},
        {"{\"name\":\"a\",\"name\":\"b\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"]}",
         "duplicate"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"udp\"]}",
         "field 'port_forwarding': expected protocol 'tcp'"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\",\"udp\"]}",
         "field 'port_forwarding': expected [PORT, \"tcp\"]"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,17]}",
         "field 'port_forwarding': expected a string, got integer"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"],"
         "\"scaling_upper_bound\":1.5}",
         "field 'scaling_upper_bound': expected an integer, got real"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"],"
         "\"cold_start_sweep\":1}",
         "field 'cold_start_sweep': expected true or false, got integer"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"],"
         "\"env_vars\":[{\"A\":1}]}",
         "field 'env_vars': expected a string, got object"},
        {"{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"],\"nmae\":\"b\"}",
         "field 'nmae': not a registration field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cp_fn_spec s;
        struct dg_err err = {0};
        assert_true(reg_json(cases[i].body, &s, &err) < 0);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: got \"%s\"\nwant \"%s\"", i, err.msg, cases[i].msg);
    }
    /* the CLI's form (numbers as strings, a boolean) and the store's (all strings) */
    struct cp_fn_spec s;
    struct dg_err err = {0};
    assert_int_equal(reg_json("{\"name\":\"a\",\"image\":\"x\",\"port_forwarding\":[80,\"tcp\"],"
                              "\"scaling_upper_bound\":\"5\",\"cold_start_sweep\":true,"
                              "\"requested_cpu\":250,\"env_vars\":\"A=1\"}",
                              &s, &err),
                     0);
    assert_int_equal(s.upper_bound, 1 + 4);
    assert_int_equal(s.cpu_milli, 250);
    assert_true(s.cold_start_sweep);
    cp_fn_spec_free(&s);
    json_t *j = cp_fn_spec_to_json(&(struct cp_fn_spec){
        .name = "b", .image = "x", .port = 8080, .proto = "tcp", .upper_bound = 3});
    char *text = dg_json_dumps(j);
    json_decref(j);
    assert_int_equal(reg_json(text, &s, &err), 0);
    free(text);
    assert_string_equal(s.name, "b");
    assert_int_equal(s.port, 8080);
    assert_int_equal(s.upper_bound, 3);
    assert_false(s.h2c);
    cp_fn_spec_free(&s);
    /* the store keeps upstream_protocol h2c */
    j = cp_fn_spec_to_json(
        &(struct cp_fn_spec){.name = "c", .image = "x", .port = 80, .proto = "tcp", .h2c = true});
    text = dg_json_dumps(j);
    json_decref(j);
    assert_int_equal(reg_json(text, &s, &err), 0);
    free(text);
    assert_true(s.h2c);
    cp_fn_spec_free(&s);
}

static void test_name_rule(void **state)
{
    assert_true(cp_fn_name_valid("a"));
    assert_true(cp_fn_name_valid("hello-world-2"));
    char n63[64], n64[65];
    memset(n63, 'a', 63);
    n63[63] = '\0';
    memset(n64, 'a', 64);
    n64[64] = '\0';
    assert_true(cp_fn_name_valid(n63));
    assert_false(cp_fn_name_valid(n64));
    assert_false(cp_fn_name_valid(""));
    assert_false(cp_fn_name_valid("a-"));
    assert_false(cp_fn_name_valid("a_b"));
    assert_false(cp_fn_name_valid("a.b"));
    struct dg_err e;
    assert_int_equal(cp_fn_image_check("docker.io/library/busybox:1.36", &e), 0);
    assert_int_equal(
        cp_fn_image_check("localhost:5000/fn@sha256:abcdef0123456789abcdef0123456789", &e), 0);
    assert_int_equal(cp_fn_image_check("oci:/var/cache/fn:latest", &e), 0);
    assert_int_equal(cp_fn_image_check("/usr/local/bin/dirigent-fn", &e), 0);
    assert_true(cp_fn_image_check("bad image", &e) < 0);
    assert_non_null(strstr(e.msg, "field 'image': expected no spaces"));
    assert_true(cp_fn_image_check("x@sha256:", &e) < 0);
    assert_non_null(strstr(e.msg, "field 'image': expected a digest"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_decoding),         cmocka_unit_test(test_invitro_form),
        cmocka_unit_test(test_invitro_zero_requests), cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors_name_the_field), cmocka_unit_test(test_name_rule),
        cmocka_unit_test(test_json_strict),           cmocka_unit_test(test_prewarm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
