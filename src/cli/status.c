/*
 * status.c: `dirigent status`: the cluster as the control plane leader sees it, as tables
 * (control-plane replicas, workers, data planes, functions) or with --json as it came. A
 * follower keeps no registry, so status asks the leader the follower names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dirigent/wire.h"

static void status_table(json_t *j)
{
    struct dg_wire_status s;
    struct dg_err err = {0};
    if (dg_wire_status_decode(j, &s, &err) < 0) {
        fprintf(stderr, "dirigent: the control plane's status: %s\n", err.msg);
        return;
    }
    if (s.nreplicas) {
        printf("CONTROL PLANE REPLICAS\n");
        struct cli_table t;
        cli_table_init(&t, 3, "ID", "INTERNAL API", "ROLE");
        for (size_t i = 0; i < s.nreplicas; i++) {
            /* each replica says for itself whether it is up and what it is */
            const char *api = s.replicas[i].api;
            struct cli_result r;
            struct dg_wire_status rs = {0};
            bool got = api &&
                       cli_request(api, "GET", DG_WIRE_PATH_STATUS, NULL, 0, NULL, &r) == 200 &&
                       dg_wire_status_parse(r.body.data, r.body.len, &rs, &err) == 0;
            char id[24];
            snprintf(id, sizeof(id), "%lld", (long long)s.replicas[i].id);
            cli_table_row(&t, id, api, got ? (rs.role ? rs.role : "?") : "unreachable");
            if (got)
                dg_wire_status_free(&rs);
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
    for (size_t i = 0; i < s.nworkers; i++) {
        const struct dg_wire_worker_view *w = &s.workers[i];
        char cpu[80], mem[48], sb[24];
        /* with an overcommit, what placement may reserve is the cap (else 5000/2000 reads as
         * a bug): "5000/20000 (2000 x10)" */
        if (w->cpu_schedulable_milli && w->cpu_schedulable_milli != w->cpu_milli)
            snprintf(cpu, sizeof(cpu), "%lld/%lld (%lld x%g)", (long long)w->cpu_used_milli,
                     (long long)w->cpu_schedulable_milli, (long long)w->cpu_milli,
                     w->cpu_overcommit);
        else
            snprintf(cpu, sizeof(cpu), "%lld/%lld", (long long)w->cpu_used_milli,
                     (long long)w->cpu_milli);
        snprintf(mem, sizeof(mem), "%lld/%lld", (long long)w->memory_used_mib,
                 (long long)w->memory_mib);
        snprintf(sb, sizeof(sb), "%lld", (long long)w->sandboxes);
        cli_table_row(&t, w->name, w->address, w->schedulable ? "yes" : "no", cpu, mem, sb);
    }
    cli_table_print(&t, stdout);
    printf("\nDATA PLANES\n");
    cli_table_init(&t, 3, "NAME", "PROXY", "API");
    for (size_t i = 0; i < s.ndataplanes; i++)
        cli_table_row(&t, s.dataplanes[i].name, s.dataplanes[i].proxy, s.dataplanes[i].api);
    cli_table_print(&t, stdout);
    printf("\nFUNCTIONS\n");
    dg_wire_status_free(&s);
    cli_fn_table(json_object_get(j, "functions"));
}

int cli_cmd_status(struct cli_ctx *c)
{
    struct cli_result r;
    int st = cli_request(c->cp, "GET", DG_WIRE_PATH_STATUS, NULL, 0, NULL, &r);
    struct dg_wire_status s;
    struct dg_err err = {0};
    if (st == 200 && dg_wire_status_parse(r.body.data, r.body.len, &s, &err) == 0) {
        /* a follower keeps no registry: ask the leader it names */
        if (s.role && strcmp(s.role, "follower") == 0 && s.leader) {
            dg_buf_free(&r.body);
            st = cli_request(s.leader, "GET", DG_WIRE_PATH_STATUS, NULL, 0, NULL, &r);
        }
        dg_wire_status_free(&s);
    }
    return cli_answer(c, &r, st, "control plane", status_table);
}
