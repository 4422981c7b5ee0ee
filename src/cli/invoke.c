/*
 * invoke.c: `dirigent invoke NAME`: one request to the data plane's proxy with `Host: NAME`
 * (POST with --data, else GET), its answer printed as it came.
 */
#include <string.h>

#include "cli.h"

int cli_cmd_invoke(struct cli_ctx *c)
{
    if (cli_check_name(c, c->args[0]) != 0)
        return CLI_USAGE;
    struct dg_http_header hdrs[33];
    size_t n = 0;
    hdrs[n++] = (struct dg_http_header){DG_STR("Host"), dg_str_c(c->args[0])};
    const char *data = cli_get(c, "--data");
    for (int i = 0; i < c->nopts; i++) {
        if (strcmp(c->opts[i].opt->name, "--header") != 0)
            continue;
        const char *v = c->opts[i].val;
        const char *colon = strchr(v, ':');
        if (!colon || colon == v)
            return cli_usage_error(c, "--header: expected NAME:VALUE, got '%s'", v);
        if (n == DG_ARRAY_LEN(hdrs))
            return cli_usage_error(c, "--header: at most %zu", DG_ARRAY_LEN(hdrs) - 1);
        const char *val = colon + 1;
        while (*val == ' ')
            val++;
        hdrs[n++] = (struct dg_http_header){{v, (size_t)(colon - v)}, dg_str_c(val)};
    }
    struct cli_result r;
    int st = cli_request_anon(c->dp, data ? "POST" : "GET", "/", hdrs, n, data, &r);
    return cli_answer(c, &r, st, "data plane", NULL);
}
