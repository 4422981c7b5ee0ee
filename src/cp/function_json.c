/*
 * function_json.c: a function's spec as JSON and back (function_json.h): what the store keeps
 * and the JSON registration API reads.
 */
#include "function_json.h"

#include <stdlib.h>
#include <string.h>

json_t *cp_fn_spec_to_json(const struct cp_fn_spec *s)
{
    char buf[32];
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(s->name));
    json_object_set_new(j, "image", json_string(s->image));
    snprintf(buf, sizeof(buf), "%d", s->port);
    json_object_set_new(j, "port_forwarding", json_pack("[ss]", buf, s->proto));
#define NUM(key, v)                                                                                \
    do {                                                                                           \
        snprintf(buf, sizeof(buf), "%lld", (long long)(v));                                        \
        json_object_set_new(j, key, json_string(buf));                                             \
    } while (0)
    NUM("requested_cpu", s->cpu_milli);
    NUM("requested_memory", s->memory_mib);
    NUM("scaling_upper_bound", s->upper_bound);
    NUM("scaling_lower_bound", s->lower_bound);
    NUM("container_concurrency", s->concurrency);
    NUM("iteration_multiplier", s->iteration_multiplier);
    NUM("cold_start_busy_loop_ms", s->cold_start_busy_loop_ms);
    if (s->prewarm) /* absent: 0 (records written before the field existed read the same) */
        NUM("prewarm", s->prewarm);
#undef NUM
    json_object_set_new(j, "cold_start_sweep", json_string(s->cold_start_sweep ? "true" : "false"));
    if (s->h2c) /* absent: http1 (records written before the field existed read the same) */
        json_object_set_new(j, "upstream_protocol", json_string("h2c"));
    if (s->no_init) /* absent: true (records written before the field existed read the same) */
        json_object_set_new(j, "init", json_string("false"));
    json_t *env = json_array(), *args = json_array();
    for (size_t i = 0; i < s->env.n; i++)
        json_array_append_new(env, json_string(s->env.v[i]));
    for (size_t i = 0; i < s->args.n; i++)
        json_array_append_new(args, json_string(s->args.v[i]));
    json_object_set_new(j, "env_vars", env);
    json_object_set_new(j, "program_args", args);
    return j;
}

/* A JSON value of a field of kind `kind` (one value: an array item for the repeated ones): 0, or
 * -1 with err naming the field and what it takes. */
static int value_check(const char *key, int kind, const json_t *x, struct dg_err *err)
{
    bool ok;
    const char *what;
    switch (kind) {
    case CP_FIELD_INT:
        ok = json_is_integer(x) || json_is_string(x);
        what = "an integer";
        break;
    case CP_FIELD_BOOL:
        ok = json_is_boolean(x) || json_is_string(x);
        what = "true or false";
        break;
    default: /* strings: name, image, env_vars, program_args */
        ok = json_is_string(x);
        what = "a string";
        break;
    }
    if (ok)
        return 0;
    return dg_err_set(err, DG_E_INVAL, "field '%s': expected %s, got %s", key, what,
                      dg_json_type_name(x));
}

int cp_fn_form_from_json(const json_t *j, struct dg_form *form, struct dg_err *err)
{
    memset(form, 0, sizeof(*form));
    if (!json_is_object(j))
        return dg_err_set(err, DG_E_INVAL, "expected a JSON object");
    size_t cap = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        /* the fields the form has, each of its type ("name":123 is no name); duplicate keys
         * are refused by the parser (dg_json_parse) */
        int kind = cp_fn_field_kind(key);
        if (kind < 0) {
            dg_form_free(form);
            return dg_err_set(err, DG_E_INVAL,
                              "field '%.64s': not a registration field (name, image, "
                              "port_forwarding, requested_cpu, requested_memory, "
                              "scaling_lower_bound, scaling_upper_bound, cold_start_sweep, "
                              "container_concurrency, env_vars, program_args, "
                              "iteration_multiplier, cold_start_busy_loop_ms, "
                              "upstream_protocol, init, prewarm)",
                              key);
        }
        json_t *items = json_is_array(v) ? v : NULL;
        int rc = 0;
        if (kind == CP_FIELD_PORT) {
            if (!items || json_array_size(items) != 2)
                rc = dg_err_set(err, DG_E_INVAL,
                                "field 'port_forwarding': expected [PORT, \"tcp\"], got %s",
                                items ? "an array of another length" : dg_json_type_name(v));
            else
                rc = value_check(key, CP_FIELD_INT, json_array_get(items, 0), err) < 0 ||
                             value_check(key, CP_FIELD_STRING, json_array_get(items, 1), err) < 0
                         ? DG_E_INVAL
                         : 0;
        } else if (items && kind != CP_FIELD_LIST) {
            rc = dg_err_set(err, DG_E_INVAL, "field '%s': expected one value, got an array", key);
        }
        size_t n = items ? json_array_size(items) : 1;
        for (size_t i = 0; i < n && rc == 0; i++)
            if (kind != CP_FIELD_PORT)
                rc = value_check(key, kind, items ? json_array_get(items, i) : v, err);
        if (rc < 0) {
            dg_form_free(form);
            return DG_E_INVAL;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *x = items ? json_array_get(items, i) : v;
            char *str = json_is_string(x)    ? dg_xstrdup(json_string_value(x))
                        : json_is_boolean(x) ? dg_xstrdup(json_is_true(x) ? "true" : "false")
                                             : dg_json_dumps(x);
            if (form->n == cap) {
                cap = cap ? cap * 2 : 16;
                form->pairs = dg_xrealloc(form->pairs, cap * sizeof(*form->pairs));
            }
            form->pairs[form->n++] = (struct dg_form_pair){dg_xstrdup(key), str};
        }
    }
    return 0;
}
