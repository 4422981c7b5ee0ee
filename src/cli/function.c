/*
 * function.c: `dirigent function deploy|list|get|delete` over the control plane's JSON API
 * (docs/api.md); also the function table `status` prints and the function-name check `invoke`
 * shares.
 *
 * deploy checks its numbers here, naming the option (`--max: expected an integer ...`); what
 * only the control plane can judge comes back naming a form field, which is translated back
 * into the option the user typed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cp/function.h"
#include "cli.h"
#include "dirigent/wire.h"

/* "3 s ago", "4 min ago", "2 h ago" */
static void fmt_age(char *out, size_t n, long long ms)
{
    long long s = ms / 1000;
    if (s < 120)
        snprintf(out, n, "%lld s ago", s);
    else if (s < 2 * 3600)
        snprintf(out, n, "%lld min ago", s / 60);
    else
        snprintf(out, n, "%lld h ago", s / 3600);
}

/* One function per row; a function whose last create failed gets a line under its row:
 * "  error: <reason> (worker w1, 3 s ago)". */
/* Rows of functions as the CP shows them (dg_wire_fn_view), with their last error as a note. */
static void fn_rows(struct cli_table *t, const struct dg_wire_fn_view *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct dg_wire_fn_view *f = &v[i];
        char bounds[48], ready[24], desired[24];
        cli_fmt_bounds(bounds, sizeof(bounds), (long long)f->lower_bound,
                       (long long)f->upper_bound);
        snprintf(ready, sizeof(ready), "%lld", (long long)f->ready);
        snprintf(desired, sizeof(desired), "%lld", (long long)f->desired);
        cli_table_row(t, f->name, f->state, ready, desired, bounds, f->image);
        if (!f->error)
            continue;
        char age[32];
        fmt_age(age, sizeof(age), (long long)f->error_age_ms);
        cli_table_note(t, "  error: %s (worker %s, %s)", f->error,
                       f->error_worker ? f->error_worker : "?", age);
    }
}

void cli_fn_table(json_t *list)
{
    struct cli_table t;
    cli_table_init(&t, 6, "NAME", "STATE", "READY", "DESIRED", "BOUNDS", "IMAGE");
    size_t n = json_is_object(list) ? 1 : json_array_size(list);
    struct dg_wire_fn_view *v = dg_xcalloc(n ? n : 1, sizeof(*v));
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        struct dg_err err = {0};
        const json_t *f = json_is_object(list) ? list : json_array_get(list, i);
        if (dg_wire_fn_view_decode(f, &v[ok], &err) < 0)
            fprintf(stderr, "dirigent: function %zu of the answer: %s\n", i, err.msg);
        else
            ok++;
    }
    fn_rows(&t, v, ok);
    for (size_t i = 0; i < ok; i++)
        dg_wire_fn_view_free(&v[i]);
    free(v);
    cli_table_print(&t, stdout);
}

/* The registration's form fields and the options that set them. */
static const struct {
    const char *field, *opt;
} fields[] = {
    {"scaling_upper_bound", "--max"},
    {"scaling_lower_bound", "--min"},
    {"requested_cpu", "--cpu"},
    {"requested_memory", "--memory"},
    {"container_concurrency", "--concurrency"},
    {"port_forwarding", "--port"},
    {"image", "--image"},
    {"cold_start_sweep", "--cold-start-sweep"},
    {"upstream_protocol", "--upstream-protocol"},
    {"init", "--no-init"},
    {"prewarm", "--prewarm"},
    {"name", "NAME"},
};

/* The control plane's message in the CLI's words: "registration: field 'scaling_upper_bound':
 * expected ..." -> "--max: expected ..."; other mentions of a field get its option too. */
static void speak_cli(const char *in, struct dg_buf *out)
{
    if (strncmp(in, "registration: ", 14) == 0)
        in += 14;
    while (*in) {
        size_t best = 0, k = 0;
        for (size_t i = 0; i < DG_ARRAY_LEN(fields); i++) {
            char q[64];
            snprintf(q, sizeof(q), "field '%s'", fields[i].field);
            if (strncmp(in, q, strlen(q)) == 0 && strlen(q) > best) {
                best = strlen(q), k = i;
                continue;
            }
            size_t n = strlen(fields[i].field);
            if (strcmp(fields[i].opt, "NAME") != 0 && strcmp(fields[i].field, "image") != 0 &&
                strncmp(in, fields[i].field, n) == 0 && n > best)
                best = n, k = i;
        }
        if (best) {
            dg_buf_printf(out, "%s", fields[k].opt);
            in += best;
        } else {
            dg_buf_append(out, in, 1);
            in++;
        }
    }
    dg_buf_append(out, "", 1);
}

int cli_cmd_deploy(struct cli_ctx *c)
{
    const char *name = c->args[0];
    int64_t port, min, max, cpu, mem, cc, prewarm;
    /* the syntax here (naming the option); the bounds that are policy stay the CP's */
    int rc = cli_int(c, "--port", 80, 1, 65535, &port);
    if (!rc)
        rc = cli_int(c, "--min", 0, 0, INT32_MAX, &min);
    if (!rc)
        rc = cli_int(c, "--max", INT32_MAX, 0, INT32_MAX, &max);
    if (!rc)
        rc = cli_int(c, "--cpu", 1, 0, 1000000, &cpu);
    if (!rc)
        rc = cli_int(c, "--memory", 1, 0, 1 << 24, &mem);
    if (!rc)
        rc = cli_int(c, "--concurrency", 1, 0, 1000, &cc);
    if (!rc)
        rc = cli_int(c, "--prewarm", 0, 0, 1000, &prewarm);
    if (rc)
        return rc;
    if (cli_get(c, "--min") && cli_get(c, "--max") && min > max)
        return cli_usage_error(c, "--min %lld is above --max %lld", (long long)min, (long long)max);
    json_t *j = json_pack("{ss ss s[is]}", "name", name, "image", cli_get(c, "--image"),
                          "port_forwarding", (int)port, "tcp");
    /* only what was given: the control plane's defaults stay the defaults */
    static const char *const num[][2] = {{"--min", "scaling_lower_bound"},
                                         {"--max", "scaling_upper_bound"},
                                         {"--cpu", "requested_cpu"},
                                         {"--memory", "requested_memory"},
                                         {"--concurrency", "container_concurrency"},
                                         {"--prewarm", "prewarm"}};
    for (size_t i = 0; i < DG_ARRAY_LEN(num); i++)
        if (cli_get(c, num[i][0]))
            json_object_set_new(j, num[i][1], json_string(cli_get(c, num[i][0])));
    if (cli_flag(c, "--cold-start-sweep"))
        json_object_set_new(j, "cold_start_sweep", json_true());
    if (cli_flag(c, "--no-init"))
        json_object_set_new(j, "init", json_false());
    if (cli_get(c, "--upstream-protocol")) /* checked by the CP, named back as the option */
        json_object_set_new(j, "upstream_protocol", json_string(cli_get(c, "--upstream-protocol")));
    char *body = dg_json_dumps(j);
    json_decref(j);
    struct cli_result r;
    int st = cli_request(c->cp, "POST", "/v1/functions", NULL, 0, body, &r);
    free(body);
    if (st == 200 && c->json) { /* the answer is the proxies' addresses joined by ';' */
        json_t *o = json_pack("{ss s[]}", "name", name, "invoke");
        for (char *save = NULL, *t = strtok_r(r.body.data, ";\r\n", &save); t;
             t = strtok_r(NULL, ";\r\n", &save))
            json_array_append_new(json_object_get(o, "invoke"), json_string(t));
        char *out = dg_json_dumps(o);
        puts(out);
        free(out);
        json_decref(o);
        dg_buf_free(&r.body);
        return 0;
    }
    if (st == 200) {
        printf("deployed %s: invoke with curl -H 'Host: %s' http://%s/\n", name, name,
               r.body.data[0] ? strtok(r.body.data, ";") : c->dp);
        dg_buf_free(&r.body);
        return 0;
    }
    if (st == 400) {
        struct dg_buf b = {0};
        speak_cli(r.body.data, &b);
        dg_buf_free(&r.body);
        size_t n = strlen(b.data);
        while (n && b.data[n - 1] == '\n')
            b.data[--n] = '\0';
        rc = cli_fail("function deploy: %s", b.data);
        dg_buf_free(&b);
        return rc;
    }
    return cli_answer(c, &r, st, "control plane", NULL);
}

int cli_cmd_list(struct cli_ctx *c)
{
    struct cli_result r;
    return cli_answer(c, &r, cli_request(c->cp, "GET", "/v1/functions", NULL, 0, NULL, &r),
                      "control plane", cli_fn_table);
}

int cli_check_name(const struct cli_ctx *c, const char *name)
{
    if (cp_fn_name_valid(name))
        return 0;
    return cli_usage_error(c,
                           "NAME: expected a function name (lower-case letters, digits and '-', "
                           "1 to %d, as registered), got '%s'",
                           CP_NAME_MAX, name);
}

static int one(struct cli_ctx *c, const char *method, void (*table)(json_t *))
{
    if (cli_check_name(c, c->args[0]) != 0)
        return CLI_USAGE;
    char path[512];
    snprintf(path, sizeof(path), "/v1/functions/%s", c->args[0]);
    struct cli_result r;
    return cli_answer(c, &r, cli_request(c->cp, method, path, NULL, 0, NULL, &r), "control plane",
                      table);
}

int cli_cmd_get(struct cli_ctx *c)
{
    return one(c, "GET", cli_fn_table);
}

int cli_cmd_delete(struct cli_ctx *c)
{
    return one(c, "DELETE", NULL);
}
