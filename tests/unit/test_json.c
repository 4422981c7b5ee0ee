/*
 * test_json.c: lib/json.c. Parsing (errors with line and column, trailing
 * garbage, duplicate keys), table-driven unpacking with the exact messages an
 * API answers with, the all-or-nothing behaviour on error (run under ASan to
 * see that nothing leaks), and the single-field getters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dirigent/config.h"
#include "dirigent/json.h"

/* Parse a literal that the test knows is valid. */
static json_t *parse_ok(const char *s)
{
    json_t *v = NULL;
    struct dg_err err = {0};
    int rc = dg_json_parse(s, strlen(s), &v, &err);
    if (rc != 0)
        fail_msg("parse '%s': %s", s, err.msg);
    return v;
}

/* Parse a literal that must fail; returns the message. */
static const char *parse_err(const char *s, struct dg_err *err)
{
    json_t *v = (json_t *)1;
    assert_int_equal(dg_json_parse(s, strlen(s), &v, err), DG_E_PROTO);
    assert_null(v);
    return err->msg;
}

static void test_parse_ok(void **state)
{
    json_t *v = parse_ok("{\"a\": [1, 2.5, \"x\", true, null], \"b\": {}}");
    assert_true(json_is_object(v));
    assert_int_equal(json_array_size(json_object_get(v, "a")), 5);
    json_decref(v);

    v = parse_ok("[]");
    assert_true(json_is_array(v));
    json_decref(v);

    /* Only the given length is read. */
    const char buf[] = "{\"k\":1}garbage";
    struct dg_err err = {0};
    assert_int_equal(dg_json_parse(buf, 7, &v, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "k")), 1);
    json_decref(v);
}

static void test_parse_errors(void **state)
{
    struct dg_err err = {0};
    assert_string_equal(parse_err("{\n  \"a\": 1,\n  \"b\" 2\n}", &err),
                        "invalid JSON at line 3 column 7: ':' expected near '2'");
    assert_string_equal(parse_err("{} x", &err),
                        "invalid JSON at line 1 column 4: end of file expected near 'x'");
    assert_string_equal(parse_err("{\"a\": 1, \"a\": 2}", &err),
                        "invalid JSON at line 1 column 12: duplicate object key near '\"a\"'");
    /* A scalar at the top level is not a request body. */
    assert_string_equal(parse_err("42", &err),
                        "invalid JSON at line 1 column 2: '[' or '{' expected near '42'");
    assert_string_equal(parse_err("", &err),
                        "invalid JSON at line 1 column 0: '[' or '{' expected near end of file");
    /* A NULL buffer is an empty one. */
    json_t *v = NULL;
    assert_int_equal(dg_json_parse(NULL, 0, &v, &err), DG_E_PROTO);
    assert_null(v);
}

static void test_type_name(void **state)
{
    json_t *v = parse_ok("[{}, [], \"s\", 1, 1.5, true, false, null]");
    const char *want[] = {"object", "array",   "string",  "integer",
                          "real",   "boolean", "boolean", "null"};
    for (size_t i = 0; i < DG_ARRAY_LEN(want); i++)
        assert_string_equal(dg_json_type_name(json_array_get(v, i)), want[i]);
    json_decref(v);
}

static void test_dumps(void **state)
{
    json_t *v = parse_ok("{ \"a\" : [ 1 , \"x\" ] , \"b\" : null }");
    char *s = dg_json_dumps(v);
    assert_string_equal(s, "{\"a\":[1,\"x\"],\"b\":null}");
    free(s);
    json_decref(v);

    json_t *n = json_integer(7);
    s = dg_json_dumps(n);
    assert_string_equal(s, "7");
    free(s);
    json_decref(n);
    assert_null(dg_json_dumps(NULL));
}

/* ---- unpack ---- */

struct req {
    char *name;
    int64_t port;
    int64_t count;
    double ratio;
    bool enabled;
    struct dg_strlist args;
};

static const struct dg_json_field req_fields[] = {
    {"name", DG_JSON_STRING, true, offsetof(struct req, name), 0, 0},
    {"port", DG_JSON_INT, false, offsetof(struct req, port), 1, 65535},
    {"count", DG_JSON_INT, false, offsetof(struct req, count), 0, 0},
    {"ratio", DG_JSON_DOUBLE, false, offsetof(struct req, ratio), 0, 0},
    {"enabled", DG_JSON_BOOL, false, offsetof(struct req, enabled), 0, 0},
    {"args", DG_JSON_STRLIST, false, offsetof(struct req, args), 0, 0},
};

static void req_free(struct req *r)
{
    free(r->name);
    for (size_t i = 0; i < r->args.n; i++)
        free(r->args.v[i]);
    free(r->args.v);
}

/* Unpack `s` into a fresh struct req with recognisable defaults; returns rc. */
static int unpack(const char *s, struct req *r, unsigned flags, struct dg_err *err)
{
    *r = (struct req){.port = 8080, .count = -5, .ratio = 0.25, .enabled = true};
    json_t *v = parse_ok(s);
    int rc = dg_json_unpack(v, req_fields, DG_ARRAY_LEN(req_fields), r, flags, err);
    json_decref(v);
    return rc;
}

/* The message of an unpack that must fail; also checks that `out` was left alone. */
static const char *unpack_err(const char *s, struct dg_err *err)
{
    struct req r;
    assert_int_equal(unpack(s, &r, 0, err), DG_E_INVAL);
    assert_null(r.name);
    assert_int_equal(r.port, 8080);
    assert_int_equal(r.count, -5);
    assert_true(r.ratio == 0.25);
    assert_true(r.enabled);
    assert_null(r.args.v);
    assert_int_equal(r.args.n, 0);
    return err->msg;
}

static void test_unpack_all_types(void **state)
{
    struct req r;
    struct dg_err err = {0};
    assert_int_equal(unpack("{\"name\": \"hello\", \"port\": 65535, \"count\": -9000000000,"
                            " \"ratio\": 1.5, \"enabled\": false, \"args\": [\"a\", \"b c\"]}",
                            &r, 0, &err),
                     0);
    assert_string_equal(r.name, "hello");
    assert_int_equal(r.port, 65535);
    assert_true(r.count == INT64_C(-9000000000));
    assert_true(r.ratio == 1.5);
    assert_false(r.enabled);
    assert_int_equal(r.args.n, 2);
    assert_string_equal(r.args.v[0], "a");
    assert_string_equal(r.args.v[1], "b c");
    req_free(&r);

    /* Bounds are inclusive; DOUBLE takes an integer; an empty list is {NULL, 0}. */
    assert_int_equal(
        unpack("{\"name\": \"\", \"port\": 1, \"ratio\": 3, \"args\": []}", &r, 0, &err), 0);
    assert_string_equal(r.name, "");
    assert_int_equal(r.port, 1);
    assert_true(r.ratio == 3.0);
    assert_null(r.args.v);
    assert_int_equal(r.args.n, 0);
    req_free(&r);
}

static void test_unpack_optional_and_null(void **state)
{
    struct req r;
    struct dg_err err = {0};
    /* Absent and null optional fields keep the defaults. */
    assert_int_equal(unpack("{\"name\": \"x\", \"port\": null, \"args\": null}", &r, 0, &err), 0);
    assert_string_equal(r.name, "x");
    assert_int_equal(r.port, 8080);
    assert_int_equal(r.count, -5);
    assert_true(r.ratio == 0.25);
    assert_true(r.enabled);
    assert_null(r.args.v);
    req_free(&r);

    /* A null required field is as good as absent. */
    assert_string_equal(unpack_err("{\"name\": null}", &err), "field 'name': required");
    assert_int_equal(err.code, DG_E_INVAL);
}

static void test_unpack_messages(void **state)
{
    struct dg_err err = {0};
    assert_string_equal(unpack_err("{}", &err), "field 'name': required");
    assert_string_equal(unpack_err("{\"name\": 3}", &err),
                        "field 'name': expected string, got integer");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"port\": 0}", &err),
                        "field 'port': expected an integer 1..65535, got 0");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"port\": 65536}", &err),
                        "field 'port': expected an integer 1..65535, got 65536");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"port\": \"80\"}", &err),
                        "field 'port': expected an integer 1..65535, got string");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"count\": 1.0}", &err),
                        "field 'count': expected an integer, got real");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"count\": true}", &err),
                        "field 'count': expected an integer, got boolean");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"ratio\": \"1\"}", &err),
                        "field 'ratio': expected a number, got string");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"enabled\": 1}", &err),
                        "field 'enabled': expected boolean, got integer");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"args\": \"a b\"}", &err),
                        "field 'args': expected an array of strings, got string");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"args\": [\"a\", 2]}", &err),
                        "field 'args': item 1: expected string, got integer");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"args\": [null]}", &err),
                        "field 'args': item 0: expected string, got null");
    assert_string_equal(unpack_err("{\"name\": \"x\", \"x\": 1}", &err),
                        "field 'x': unknown field");

    /* Not an object. */
    json_t *v = parse_ok("[1]");
    struct req r = {0};
    assert_int_equal(dg_json_unpack(v, req_fields, DG_ARRAY_LEN(req_fields), &r, 0, &err),
                     DG_E_INVAL);
    assert_string_equal(err.msg, "expected a JSON object, got array");
    json_decref(v);
}

static void test_unpack_embedded_nul(void **state)
{
    /* Parsing rejects \u0000, but a value built by code can hold a NUL. */
    json_t *v = json_object();
    json_object_set_new(v, "name", json_stringn("a\0b", 3));
    struct req r = {0};
    struct dg_err err = {0};
    assert_int_equal(dg_json_unpack(v, req_fields, DG_ARRAY_LEN(req_fields), &r, 0, &err),
                     DG_E_INVAL);
    assert_string_equal(err.msg, "field 'name': string contains a NUL character");
    assert_null(r.name);
    json_decref(v);
}

static void test_unpack_unknown_allowed(void **state)
{
    struct req r;
    struct dg_err err = {0};
    assert_int_equal(
        unpack("{\"name\": \"x\", \"extra\": {\"deep\": 1}}", &r, DG_JSON_ALLOW_UNKNOWN, &err), 0);
    assert_string_equal(r.name, "x");
    req_free(&r);
}

/* A failure after strings and a list were accepted leaves `out` as it was, so nothing leaks
 * (the sanitizer build checks) and the caller's own values survive. */
static void test_unpack_error_leaves_out_alone(void **state)
{
    struct dg_err err = {0};
    /* The bad field comes last in the table, after name and args. */
    assert_string_equal(
        unpack_err("{\"name\": \"x\", \"args\": [\"a\", \"b\"], \"enabled\": \"yes\"}", &err),
        "field 'enabled': expected boolean, got string");

    static const struct dg_json_field late[] = {
        {"name", DG_JSON_STRING, true, offsetof(struct req, name), 0, 0},
        {"args", DG_JSON_STRLIST, false, offsetof(struct req, args), 0, 0},
        {"port", DG_JSON_INT, true, offsetof(struct req, port), 1, 10},
    };
    char keep[] = "caller's";
    struct req r = {.name = keep, .port = 3};
    json_t *v = parse_ok("{\"name\": \"x\", \"args\": [\"a\"], \"port\": 11}");
    assert_int_equal(dg_json_unpack(v, late, DG_ARRAY_LEN(late), &r, 0, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'port': expected an integer 1..10, got 11");
    assert_ptr_equal(r.name, keep);
    assert_null(r.args.v);
    assert_int_equal(r.args.n, 0);
    assert_int_equal(r.port, 3);
    json_decref(v);
}

/* ---- getters ---- */

static void test_getters(void **state)
{
    json_t *v = parse_ok("{\"s\": \"str\", \"i\": 42, \"b\": true, \"n\": null, \"r\": 1.5}");
    struct dg_err err = {0};

    const char *s = NULL;
    assert_int_equal(dg_json_get_string(v, "s", true, &s, &err), 0);
    assert_string_equal(s, "str");
    assert_ptr_equal(s, json_string_value(json_object_get(v, "s"))); /* borrowed */
    s = "default";
    assert_int_equal(dg_json_get_string(v, "missing", false, &s, &err), 0);
    assert_string_equal(s, "default");
    assert_int_equal(dg_json_get_string(v, "n", false, &s, &err), 0);
    assert_string_equal(s, "default");
    assert_int_equal(dg_json_get_string(v, "missing", true, &s, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'missing': required");
    assert_int_equal(dg_json_get_string(v, "i", true, &s, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'i': expected string, got integer");

    int64_t i = 7;
    assert_int_equal(dg_json_get_int(v, "i", true, 0, 0, &i, &err), 0);
    assert_int_equal(i, 42);
    assert_int_equal(dg_json_get_int(v, "i", true, 1, 41, &i, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'i': expected an integer 1..41, got 42");
    assert_int_equal(dg_json_get_int(v, "r", true, 0, 0, &i, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'r': expected an integer, got real");
    i = 7;
    assert_int_equal(dg_json_get_int(v, "missing", false, 0, 0, &i, &err), 0);
    assert_int_equal(i, 7);

    bool b = false;
    assert_int_equal(dg_json_get_bool(v, "b", true, &b, &err), 0);
    assert_true(b);
    assert_int_equal(dg_json_get_bool(v, "s", true, &b, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 's': expected boolean, got string");
    assert_int_equal(dg_json_get_bool(v, "n", true, &b, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "field 'n': required");
    json_decref(v);

    v = parse_ok("[]");
    assert_int_equal(dg_json_get_bool(v, "b", false, &b, &err), DG_E_INVAL);
    assert_string_equal(err.msg, "expected a JSON object, got array");
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_type_name),
        cmocka_unit_test(test_dumps),
        cmocka_unit_test(test_unpack_all_types),
        cmocka_unit_test(test_unpack_optional_and_null),
        cmocka_unit_test(test_unpack_messages),
        cmocka_unit_test(test_unpack_embedded_nul),
        cmocka_unit_test(test_unpack_unknown_allowed),
        cmocka_unit_test(test_unpack_error_leaves_out_alone),
        cmocka_unit_test(test_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
