/*
 * json.c: the JSON layer every API handler goes through. Parsing is jansson's
 * strict mode (object or array at the top, duplicate keys and trailing garbage
 * rejected); unpacking is table-driven so a handler declares its request body
 * as a struct plus a field table and gets, on bad input, one message that names
 * the field and what was expected (`field 'port': expected an integer 1..65535,
 * got 0`), ready to be sent back with a 400.
 *
 * dg_json_unpack works in two passes: the first checks every field (types,
 * bounds, required, unknown keys, list items) without touching `out`; only when
 * all are valid does the second pass copy them. Copying cannot fail (allocation
 * aborts), so an error never leaves half-unpacked strings behind: on error
 * `out` is exactly as the caller left it. A JSON null counts as absent.
 */
#include "dirigent/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/common.h"
#include "dirigent/http.h"

int dg_json_parse(const char *buf, size_t len, json_t **out, struct dg_err *err)
{
    json_error_t je;
    /* Not JSON_DECODE_ANY: the top level must be an object or an array. The EOF check stays
     * on, so "{} x" is an error. */
    json_t *v = json_loadb(buf ? buf : "", buf ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        *out = NULL;
        return dg_err_set(err, DG_E_PROTO, "invalid JSON at line %d column %d: %s", je.line,
                          je.column, je.text);
    }
    *out = v;
    return 0;
}

const char *dg_json_type_name(const json_t *v)
{
    if (!v)
        return "null";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

char *dg_json_dumps(const json_t *v)
{
    if (!v)
        return NULL;
    /* JSON_ENCODE_ANY so a scalar serialises too instead of returning NULL. */
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) {
        /* jansson only fails here when its allocator does; treat it like dg_xmalloc. */
        abort();
    }
    return s;
}

/* The value of `name` in `obj`, or NULL when absent or JSON null. */
static json_t *lookup(const json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return v && json_is_null(v) ? NULL : v;
}

static int check_object(const json_t *obj, struct dg_err *err)
{
    if (!json_is_object(obj))
        return dg_err_set(err, DG_E_INVAL, "expected a JSON object, got %s",
                          dg_json_type_name(obj));
    return 0;
}

/* A string usable as a C string: jansson allows embedded NULs in values built by code. */
static bool is_c_string(const json_t *v)
{
    return strlen(json_string_value(v)) == json_string_length(v);
}

/* Check one present (non-null) value against its field description. Touches nothing. */
static int check_value(const json_t *v, const struct dg_json_field *f, struct dg_err *err)
{
    switch (f->type) {
    case DG_JSON_STRING:
        if (!json_is_string(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected string, got %s", f->name,
                              dg_json_type_name(v));
        if (!is_c_string(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': string contains a NUL character",
                              f->name);
        return 0;
    case DG_JSON_INT: {
        bool bounded = f->min != 0 || f->max != 0;
        /* json_is_integer is false for reals and booleans, as wanted. */
        bool ok =
            json_is_integer(v) &&
            (!bounded || (json_integer_value(v) >= f->min && json_integer_value(v) <= f->max));
        if (ok)
            return 0; /* the common case formats nothing (every push's "concurrency") */
        char expected[64] = "an integer";
        if (bounded)
            snprintf(expected, sizeof(expected), "an integer %" PRId64 "..%" PRId64, f->min,
                     f->max);
        if (!json_is_integer(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected %s, got %s", f->name, expected,
                              dg_json_type_name(v));
        return dg_err_set(err, DG_E_INVAL, "field '%s': expected %s, got %" JSON_INTEGER_FORMAT,
                          f->name, expected, json_integer_value(v));
    }
    case DG_JSON_DOUBLE:
        if (!json_is_number(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected a number, got %s", f->name,
                              dg_json_type_name(v));
        return 0;
    case DG_JSON_BOOL:
        if (!json_is_boolean(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected boolean, got %s", f->name,
                              dg_json_type_name(v));
        return 0;
    case DG_JSON_STRLIST: {
        if (!json_is_array(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected an array of strings, got %s",
                              f->name, dg_json_type_name(v));
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item))
                return dg_err_set(err, DG_E_INVAL, "field '%s': item %zu: expected string, got %s",
                                  f->name, i, dg_json_type_name(item));
            if (!is_c_string(item))
                return dg_err_set(err, DG_E_INVAL,
                                  "field '%s': item %zu: string contains a NUL character", f->name,
                                  i);
        }
        return 0;
    }
    }
    return dg_err_set(err, DG_E_INVAL, "field '%s': bad field type %d in the table", f->name,
                      (int)f->type);
}

/* Copy a value already accepted by check_value into `out`. Cannot fail. */
static void store_value(const json_t *v, const struct dg_json_field *f, void *out)
{
    char *dst = (char *)out + f->offset;
    switch (f->type) {
    case DG_JSON_STRING: {
        char *s = dg_xstrdup(json_string_value(v));
        memcpy(dst, &s, sizeof(s));
        break;
    }
    case DG_JSON_INT: {
        int64_t n = json_integer_value(v);
        memcpy(dst, &n, sizeof(n));
        break;
    }
    case DG_JSON_DOUBLE: {
        double d = json_number_value(v);
        memcpy(dst, &d, sizeof(d));
        break;
    }
    case DG_JSON_BOOL: {
        bool b = json_is_true(v);
        memcpy(dst, &b, sizeof(b));
        break;
    }
    case DG_JSON_STRLIST: {
        struct dg_strlist l = {NULL, json_array_size(v)};
        if (l.n > 0) {
            l.v = dg_xcalloc(l.n, sizeof(*l.v));
            for (size_t i = 0; i < l.n; i++)
                l.v[i] = dg_xstrdup(json_string_value(json_array_get(v, i)));
        }
        memcpy(dst, &l, sizeof(l));
        break;
    }
    }
}

int dg_json_unpack(const json_t *obj, const struct dg_json_field *fields, size_t nfields, void *out,
                   unsigned flags, struct dg_err *err)
{
    int rc = check_object(obj, err);
    if (rc < 0)
        return rc;

    if (!(flags & DG_JSON_ALLOW_UNKNOWN)) {
        const char *key;
        json_t *v;
        /* jansson's iteration API is not const-correct; it does not modify the object. */
        json_object_foreach((json_t *)obj, key, v)
        {
            size_t i = 0;
            while (i < nfields && strcmp(fields[i].name, key) != 0)
                i++;
            if (i == nfields)
                return dg_err_set(err, DG_E_INVAL, "field '%s': unknown field", key);
        }
    }

    for (size_t i = 0; i < nfields; i++) {
        const json_t *v = lookup(obj, fields[i].name);
        if (!v) {
            if (fields[i].required)
                return dg_err_set(err, DG_E_INVAL, "field '%s': required", fields[i].name);
            continue;
        }
        rc = check_value(v, &fields[i], err);
        if (rc < 0)
            return rc;
    }

    for (size_t i = 0; i < nfields; i++) {
        const json_t *v = lookup(obj, fields[i].name);
        if (v)
            store_value(v, &fields[i], out);
    }
    return 0;
}

int dg_json_check_value(const json_t *v, const struct dg_json_field *f, struct dg_err *err)
{
    return check_value(v, f, err);
}

int dg_json_unpack_value(const json_t *v, const struct dg_json_field *f, void *out,
                         struct dg_err *err)
{
    int rc = check_value(v, f, err);
    if (rc == 0)
        store_value(v, f, out);
    return rc;
}

/* Shared by the getters: the checked value of one field, or NULL when absent and optional
 * (rc 0). */
static int get_checked(const json_t *obj, const struct dg_json_field *f, const json_t **v,
                       struct dg_err *err)
{
    int rc = check_object(obj, err);
    if (rc < 0)
        return rc;
    *v = lookup(obj, f->name);
    if (!*v)
        return f->required ? dg_err_set(err, DG_E_INVAL, "field '%s': required", f->name) : 0;
    return check_value(*v, f, err);
}

int dg_json_get_string(const json_t *obj, const char *name, bool required, const char **out,
                       struct dg_err *err)
{
    struct dg_json_field f = {.name = name, .type = DG_JSON_STRING, .required = required};
    const json_t *v = NULL;
    int rc = get_checked(obj, &f, &v, err);
    if (rc == 0 && v)
        *out = json_string_value(v);
    return rc;
}

int dg_json_get_int(const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
                    int64_t *out, struct dg_err *err)
{
    struct dg_json_field f = {
        .name = name, .type = DG_JSON_INT, .required = required, .min = min, .max = max};
    const json_t *v = NULL;
    int rc = get_checked(obj, &f, &v, err);
    if (rc == 0 && v)
        *out = json_integer_value(v);
    return rc;
}

int dg_json_get_bool(const json_t *obj, const char *name, bool required, bool *out,
                     struct dg_err *err)
{
    struct dg_json_field f = {.name = name, .type = DG_JSON_BOOL, .required = required};
    const json_t *v = NULL;
    int rc = get_checked(obj, &f, &v, err);
    if (rc == 0 && v)
        *out = json_is_true(v);
    return rc;
}

void dg_http_respond_json(struct dg_http_req *r, int status, json_t *v)
{
    char *s = dg_json_dumps(v);
    dg_http_respond(r, status, "application/json", s, strlen(s));
    free(s);
    json_decref(v);
}
