/*
 * function.c: function specs from the registration form, with the original's
 * defaults (requested_cpu 1, requested_memory 1, bounds 0..MaxInt32, or an
 * upper bound of 1 with cold_start_sweep) and validation it lacked.
 */
#include "function.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/image.h"

bool cp_fn_name_valid(const char *name)
{
    /* [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?: a DNS label, since it is the Host header */
    size_t n = strlen(name);
    if (n == 0 || n > CP_NAME_MAX || name[0] == '-' || name[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '-'))
            return false;
    return true;
}

int cp_fn_image_check(const char *image, struct dg_err *err)
{
    struct dg_image_ref ref;
    struct dg_err e = {0};
    if (dg_image_ref_parse(image, &ref, &e) == 0)
        return 0;
    return dg_err_set(err, DG_E_INVAL,
                      "field 'image': %s (accepted: host[:port]/name[:tag|@digest], docker://..., "
                      "oci:PATH[:TAG], oci-archive:PATH, docker-archive:PATH, or an absolute "
                      "path of an executable for the process runtime)",
                      e.msg);
}

static int field_int(const struct dg_form *f, const char *key, int64_t min, int64_t max,
                     int64_t *out, struct dg_err *err)
{
    const char *v = dg_form_get(f, key, 0);
    if (!v)
        return 0;
    int64_t x;
    if (!dg_str_to_i64(dg_str_c(v), &x) || x < min || x > max)
        return dg_err_set(err, DG_E_INVAL,
                          "field '%s': expected an integer %lld..%lld, got '%.64s'", key,
                          (long long)min, (long long)max, v);
    *out = x;
    return 0;
}

/* Go's strconv.ParseBool, which the original used. */
static int field_bool(const struct dg_form *f, const char *key, bool *out, struct dg_err *err)
{
    static const char *const yes[] = {"1", "t", "T", "true", "TRUE", "True"};
    static const char *const no[] = {"0", "f", "F", "false", "FALSE", "False"};
    const char *v = dg_form_get(f, key, 0);
    if (!v)
        return 0;
    for (size_t i = 0; i < DG_ARRAY_LEN(yes); i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return dg_err_set(err, DG_E_INVAL, "field '%s': expected true or false, got '%.64s'", key, v);
}

static bool env_valid(const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || isdigit((unsigned char)kv[0]))
        return false;
    for (const char *p = kv; p < eq; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return true;
}

static const struct {
    const char *key;
    enum cp_fn_field_kind kind;
} known_fields[] = {
    {"name", CP_FIELD_STRING},
    {"image", CP_FIELD_STRING},
    {"port_forwarding", CP_FIELD_PORT},
    {"requested_cpu", CP_FIELD_INT},
    {"requested_memory", CP_FIELD_INT},
    {"scaling_upper_bound", CP_FIELD_INT},
    {"scaling_lower_bound", CP_FIELD_INT},
    {"cold_start_sweep", CP_FIELD_BOOL},
    {"container_concurrency", CP_FIELD_INT},
    {"iteration_multiplier", CP_FIELD_INT},
    {"cold_start_busy_loop_ms", CP_FIELD_INT},
    {"upstream_protocol", CP_FIELD_STRING},
    {"init", CP_FIELD_BOOL},
    {"prewarm", CP_FIELD_INT},
    {"env_vars", CP_FIELD_LIST},
    {"program_args", CP_FIELD_LIST},
};

int cp_fn_field_kind(const char *key)
{
    for (size_t i = 0; i < DG_ARRAY_LEN(known_fields); i++)
        if (strcmp(key, known_fields[i].key) == 0)
            return (int)known_fields[i].kind;
    return -1;
}

/* Every field at most as often as it may be given (a second name= is not the first one's
 * silent loser); a bare unknown key (no value: "port_forwarding=80&udp") is a mistake. */
static int fields_check(const struct dg_form *f, struct dg_err *err)
{
    for (size_t i = 0; i < f->n; i++) {
        const char *key = f->pairs[i].key;
        int kind = cp_fn_field_kind(key);
        if (kind < 0) {
            if (!f->pairs[i].value[0])
                return dg_err_set(err, DG_E_INVAL,
                                  "field '%.64s': not a registration field, and without a "
                                  "value (the protocol is port_forwarding's second value: "
                                  "port_forwarding=80&port_forwarding=tcp)",
                                  key);
            continue;
        }
        if (kind == CP_FIELD_LIST || kind == CP_FIELD_PORT)
            continue;
        size_t n = dg_form_count(f, key);
        if (n > 1)
            return dg_err_set(err, DG_E_INVAL, "field '%s': given %zu times, expected once", key,
                              n);
    }
    return 0;
}

int cp_fn_spec_from_form(const struct dg_form *f, struct cp_fn_spec *out, struct dg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (fields_check(f, err) < 0)
        return DG_E_INVAL;
    const char *name = dg_form_get(f, "name", 0);
    if (!name || !*name)
        return dg_err_set(err, DG_E_INVAL, "field 'name': required");
    if (!cp_fn_name_valid(name))
        return dg_err_set(err, DG_E_INVAL,
                          "field 'name': expected lowercase letters, digits and '-' (1..63, "
                          "not starting or ending with '-'), got '%.80s'",
                          name);
    const char *image = dg_form_get(f, "image", 0);
    if (!image || !*image)
        return dg_err_set(err, DG_E_INVAL, "field 'image': required");
    int rc = cp_fn_image_check(image, err);
    if (rc < 0)
        return rc;
    size_t npf = dg_form_count(f, "port_forwarding");
    if (npf != 2)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'port_forwarding': expected two values, the guest port and "
                          "'tcp' (port_forwarding=80&port_forwarding=tcp), got %zu",
                          npf);
    const char *port = dg_form_get(f, "port_forwarding", 0);
    const char *proto = dg_form_get(f, "port_forwarding", 1);
    int64_t p;
    if (!dg_str_to_i64(dg_str_c(port), &p) || p < 1 || p > 65535)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'port_forwarding': expected a port 1..65535, got '%.32s'", port);
    if (strcmp(proto, "tcp") != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'port_forwarding': expected protocol 'tcp' (invocations are "
                          "HTTP over TCP), got '%.32s'",
                          proto);

    int64_t cpu = 1, mem = 1, lower = 0, mult = 0, busy = 0, cc = 1, prewarm = 0;
    bool sweep = false, init = true;
    if (field_bool(f, "cold_start_sweep", &sweep, err) < 0 ||
        field_bool(f, "init", &init, err) < 0 ||
        field_int(f, "requested_cpu", 0, 1000000, &cpu, err) < 0 ||
        field_int(f, "requested_memory", 0, 1 << 24, &mem, err) < 0 ||
        field_int(f, "scaling_lower_bound", 0, INT32_MAX, &lower, err) < 0 ||
        field_int(f, "iteration_multiplier", 0, 1000000000, &mult, err) < 0 ||
        field_int(f, "cold_start_busy_loop_ms", 0, 3600000, &busy, err) < 0 ||
        field_int(f, "container_concurrency", 0, 1000, &cc, err) < 0 ||
        field_int(f, "prewarm", 0, CP_PREWARM_MAX, &prewarm, err) < 0)
        return DG_E_INVAL;
    int64_t upper = sweep ? 1 : INT32_MAX;
    if (field_int(f, "scaling_upper_bound", 0, INT32_MAX, &upper, err) < 0)
        return DG_E_INVAL;
    if (lower > upper)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'scaling_lower_bound': expected at most scaling_upper_bound "
                          "(%lld), got %lld",
                          (long long)upper, (long long)lower);
    if (prewarm > upper) /* a pool beyond what may ever run would only hold memory */
        return dg_err_set(err, DG_E_INVAL,
                          "field 'prewarm': expected at most scaling_upper_bound (%lld), got "
                          "%lld (lower prewarm or raise scaling_upper_bound)",
                          (long long)upper, (long long)prewarm);
    const char *up = dg_form_get(f, "upstream_protocol", 0);
    if (up && strcmp(up, "http1") != 0 && strcmp(up, "h2c") != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'upstream_protocol': expected 'http1' (the default) or 'h2c' "
                          "(the function's server speaks HTTP/2 cleartext), got '%.32s'",
                          up);
    for (size_t i = 0, n = dg_form_count(f, "env_vars"); i < n; i++) {
        const char *kv = dg_form_get(f, "env_vars", i);
        if (!env_valid(kv))
            return dg_err_set(err, DG_E_INVAL,
                              "field 'env_vars': expected NAME=VALUE with NAME of letters, "
                              "digits and '_', got '%.64s'",
                              kv);
    }

    snprintf(out->name, sizeof(out->name), "%s", name);
    out->image = dg_xstrdup(image);
    out->port = (int)p;
    snprintf(out->proto, sizeof(out->proto), "%s", proto);
    out->cpu_milli = cpu;
    out->memory_mib = mem;
    out->upper_bound = (int)upper;
    out->lower_bound = (int)lower;
    out->cold_start_sweep = sweep;
    out->concurrency = (int)cc;
    out->iteration_multiplier = mult;
    out->cold_start_busy_loop_ms = busy;
    out->prewarm = (int)prewarm;
    out->h2c = up && strcmp(up, "h2c") == 0;
    out->no_init = !init;
    for (size_t i = 0, n = dg_form_count(f, "env_vars"); i < n; i++)
        dg_strlist_push(&out->env, dg_xstrdup(dg_form_get(f, "env_vars", i)));
    for (size_t i = 0, n = dg_form_count(f, "program_args"); i < n; i++)
        dg_strlist_push(&out->args, dg_xstrdup(dg_form_get(f, "program_args", i)));
    return 0;
}

void cp_fn_spec_free(struct cp_fn_spec *s)
{
    free(s->image);
    s->image = NULL;
    dg_strlist_free(&s->env);
    dg_strlist_free(&s->args);
}
