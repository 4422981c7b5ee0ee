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
#undef NUM
    json_object_set_new(j, "cold_start_sweep", json_string(s->cold_start_sweep ? "true" : "false"));
    json_t *env = json_array(), *args = json_array();
    for (size_t i = 0; i < s->env.n; i++)
        json_array_append_new(env, json_string(s->env.v[i]));
    for (size_t i = 0; i < s->args.n; i++)
        json_array_append_new(args, json_string(s->args.v[i]));
    json_object_set_new(j, "env_vars", env);
    json_object_set_new(j, "program_args", args);
    return j;
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
        json_t *items = json_is_array(v) ? v : NULL;
        size_t n = items ? json_array_size(items) : 1;
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
