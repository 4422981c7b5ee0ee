/*
 * fuzz_json.c: libFuzzer target for lib/json.c. Every API request body goes
 * through dg_json_parse and dg_json_unpack, so both see bytes from the
 * network.
 *
 * The input is parsed as it is. When it parses, the value is serialised
 * (dg_json_dumps) and must parse again; when it is an object, it is unpacked
 * with two field tables covering every field type (one all optional, one with
 * required and bounded fields), each with and without DG_JSON_ALLOW_UNKNOWN,
 * and through the single-field getters. Besides memory safety (ASan, UBSan,
 * LeakSanitizer) the target checks what json.h promises: on error the output
 * struct is untouched; on success a bounded integer is within its bounds and
 * every string is a C string owned by the caller (freed here).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/config.h"
#include "dirigent/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The output of both tables: one member per field type, and then some. */
struct target {
    char *name;
    char *image;
    int64_t port;  /* bounded 1..65535 */
    int64_t count; /* unbounded */
    int64_t neg;   /* bounded -5..-1 */
    double ratio;
    bool enabled;
    struct dg_strlist tags;
    struct dg_strlist env;
};

#define F(n, t, req, m, lo, hi)                                                                    \
    {                                                                                              \
        .name = (n), .type = (t), .required = (req), .offset = offsetof(struct target, m),         \
        .min = (lo), .max = (hi)                                                                   \
    }

/* Every type, all optional: most objects the fuzzer makes reach the store pass. */
static const struct dg_json_field optional_fields[] = {
    F("name", DG_JSON_STRING, false, name, 0, 0),
    F("image", DG_JSON_STRING, false, image, 0, 0),
    F("port", DG_JSON_INT, false, port, 1, 65535),
    F("count", DG_JSON_INT, false, count, 0, 0),
    F("neg", DG_JSON_INT, false, neg, -5, -1),
    F("ratio", DG_JSON_DOUBLE, false, ratio, 0, 0),
    F("enabled", DG_JSON_BOOL, false, enabled, 0, 0),
    F("tags", DG_JSON_STRLIST, false, tags, 0, 0),
    F("env", DG_JSON_STRLIST, false, env, 0, 0),
};

/* Required fields of each type, and the full int64 range as bounds. */
static const struct dg_json_field required_fields[] = {
    F("name", DG_JSON_STRING, true, name, 0, 0),
    F("port", DG_JSON_INT, true, port, 1, 65535),
    F("count", DG_JSON_INT, true, count, INT64_MIN, INT64_MAX),
    F("ratio", DG_JSON_DOUBLE, true, ratio, 0, 0),
    F("enabled", DG_JSON_BOOL, true, enabled, 0, 0),
    F("tags", DG_JSON_STRLIST, true, tags, 0, 0),
};

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_json: %s: %s\n", what, detail);
    abort();
}

static void strlist_check_free(struct dg_strlist *l)
{
    if (l->n > 0 && !l->v)
        die("unpack", "a list with items but no array");
    for (size_t i = 0; i < l->n; i++) {
        if (!l->v[i])
            die("unpack", "a NULL list item");
        (void)strlen(l->v[i]); /* ASan: a real C string */
        free(l->v[i]);
    }
    free(l->v);
}

/* Free what a successful unpack stored (absent fields stayed NULL/empty). */
static void target_free(struct target *t)
{
    free(t->name);
    free(t->image);
    strlist_check_free(&t->tags);
    strlist_check_free(&t->env);
}

static void unpack_one(const json_t *obj, const struct dg_json_field *fields, size_t n,
                       unsigned flags)
{
    struct target t, zero;
    memset(&t, 0, sizeof(t));
    memset(&zero, 0, sizeof(zero));
    struct dg_err err = {0};
    int rc = dg_json_unpack(obj, fields, n, &t, flags, &err);
    if (rc < 0) {
        if (rc != DG_E_INVAL)
            die("unpack returned a code other than DG_E_INVAL", err.msg);
        if (err.msg[0] == '\0')
            die("unpack", "an error without a message");
        if (memcmp(&t, &zero, sizeof(t)) != 0)
            die("unpack changed the output on error", err.msg);
        return;
    }
    if (rc != 0)
        die("unpack", "a positive return code");
    if (t.port != 0 && (t.port < 1 || t.port > 65535))
        die("unpack", "port out of its bounds");
    if (t.neg != 0 && (t.neg < -5 || t.neg > -1))
        die("unpack", "neg out of its bounds");
    if (t.name)
        (void)strlen(t.name);
    target_free(&t);
}

/* The getters borrow from the object; nothing to free. */
static void getters(const json_t *obj)
{
    struct dg_err err;
    const char *s = NULL;
    int64_t i = 0;
    bool b = false;
    if (dg_json_get_string(obj, "name", false, &s, &err) == 0 && s)
        (void)strlen(s);
    (void)dg_json_get_string(obj, "image", true, &s, &err);
    (void)dg_json_get_int(obj, "port", false, 1, 65535, &i, &err);
    if (dg_json_get_int(obj, "neg", true, -5, -1, &i, &err) == 0 && (i < -5 || i > -1))
        die("get_int", "value out of its bounds");
    (void)dg_json_get_int(obj, "count", false, 0, 0, &i, &err);
    (void)dg_json_get_bool(obj, "enabled", false, &b, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = NULL;
    struct dg_err err = {0};
    if (dg_json_parse((const char *)data, size, &v, &err) != 0) {
        if (v)
            die("parse", "failed but set *out");
        if (err.code != DG_E_PROTO)
            die("parse", "failed with a code other than DG_E_PROTO");
        return 0;
    }
    if (!json_is_object(v) && !json_is_array(v))
        die("parse", "accepted a scalar at the top level");

    /* What we print must read back (a dumped API answer is parsed by our own CLI). */
    char *text = dg_json_dumps(v);
    json_t *again = NULL;
    if (dg_json_parse(text, strlen(text), &again, &err) != 0)
        die("dumped JSON does not parse again", err.msg);
    if (!json_equal(v, again))
        die("dumped JSON parses to another value", text);
    json_decref(again);
    free(text);
    (void)dg_json_type_name(v);

    for (unsigned flags = 0; flags <= DG_JSON_ALLOW_UNKNOWN; flags++) {
        unpack_one(v, optional_fields, DG_ARRAY_LEN(optional_fields), flags);
        unpack_one(v, required_fields, DG_ARRAY_LEN(required_fields), flags);
    }
    getters(v); /* an array is rejected with "expected a JSON object" */
    json_decref(v);
    return 0;
}
