/*
 * status.c: `dirigent status`: the cluster as the control plane leader sees it, as tables
 * (control-plane replicas, workers, data planes, functions) or with --json as it came. A
 * follower keeps no registry, so status asks the leader the follower names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void status_table(json_t *s)
{
    size_t i;
    json_t *x;
    json_t *reps = json_object_get(s, "replicas");
    if (json_array_size(reps)) {
        printf("CONTROL PLANE REPLICAS\n");
        struct cli_table t;
        cli_table_init(&t, 3, "ID", "INTERNAL API", "ROLE");
        json_array_foreach(reps, i, x)
        {
            /* each replica says for itself whether it is up and what it is */
            const char *api = json_string_value(json_object_get(x, "api"));
            struct cli_result r;
            const char *role = "unreachable";
            json_t *rj = NULL;
            if (api && cli_request(api, "GET", "/v1/status", NULL, 0, NULL, &r) == 200 &&
                (rj = json_loads(r.body.data, 0, NULL)))
                role = json_string_value(json_object_get(rj, "role")) ?: "?";
            char id[24];
            snprintf(id, sizeof(id), "%lld",
                     (long long)json_integer_value(json_object_get(x, "id")));
            cli_table_row(&t, id, api, role);
            json_decref(rj);
            if (api)
                dg_buf_free(&r.body);
        }
        cli_table_print(&t, stdout);
        printf("\n");
    }
    printf("WORKERS\n");
    struct cli_table t;
    cli_table_init(&t, 6, "NAME", "ADDRESS", "SCHEDULABLE", "CPU(m) USED/CAP", "MEM(MiB) USED/CAP",
                   "SANDBOXES");
    json_array_foreach(json_object_get(s, "workers"), i, x)
    {
        char cpu[80], mem[48], sb[24];
        /* with an overcommit, what placement may reserve is the cap (else 5000/2000 reads as
         * a bug): "5000/20000 (2000 x10)" */
        long long used = (long long)json_integer_value(json_object_get(x, "cpuUsedMilli")),
                  cap = (long long)json_integer_value(json_object_get(x, "cpuMilli"));
        json_t *sched = json_object_get(x, "cpuSchedulableMilli");
        double oc = json_number_value(json_object_get(x, "cpuOvercommit"));
        if (json_is_integer(sched) && json_integer_value(sched) != cap)
            snprintf(cpu, sizeof(cpu), "%lld/%lld (%lld x%g)", used,
                     (long long)json_integer_value(sched), cap, oc);
        else
            snprintf(cpu, sizeof(cpu), "%lld/%lld", used, cap);
        snprintf(mem, sizeof(mem), "%lld/%lld",
                 (long long)json_integer_value(json_object_get(x, "memoryUsedMiB")),
                 (long long)json_integer_value(json_object_get(x, "memoryMiB")));
        snprintf(sb, sizeof(sb), "%lld",
                 (long long)json_integer_value(json_object_get(x, "sandboxes")));
        cli_table_row(&t, json_string_value(json_object_get(x, "name")),
                      json_string_value(json_object_get(x, "address")),
                      json_is_true(json_object_get(x, "schedulable")) ? "yes" : "no", cpu, mem, sb);
    }
    cli_table_print(&t, stdout);
    printf("\nDATA PLANES\n");
    cli_table_init(&t, 3, "NAME", "PROXY", "API");
    json_array_foreach(json_object_get(s, "dataplanes"), i, x)
        cli_table_row(&t, json_string_value(json_object_get(x, "name")),
                      json_string_value(json_object_get(x, "proxy")),
                      json_string_value(json_object_get(x, "api")));
    cli_table_print(&t, stdout);
    printf("\nFUNCTIONS\n");
    cli_fn_table(json_object_get(s, "functions"));
}

int cli_cmd_status(struct cli_ctx *c)
{
    struct cli_result r;
    int st = cli_request(c->cp, "GET", "/v1/status", NULL, 0, NULL, &r);
    if (st == 200) { /* a follower keeps no registry: ask the leader it names */
        json_t *j = json_loads(r.body.data, 0, NULL);
        const char *role = j ? json_string_value(json_object_get(j, "role")) : NULL;
        const char *leader = j ? json_string_value(json_object_get(j, "leader")) : NULL;
        if (role && strcmp(role, "follower") == 0 && leader) {
            char *addr = dg_xstrdup(leader);
            dg_buf_free(&r.body);
            st = cli_request(addr, "GET", "/v1/status", NULL, 0, NULL, &r);
            free(addr);
        }
        json_decref(j);
    }
    return cli_answer(c, &r, st, "control plane", status_table);
}
