/*
 * dirigent-sim's runs and output (report.h): each run parses the command line (options.h),
 * loads the trace, opens the --csv file (not under --compare) and calls sim_run; the results
 * become the table of functions (or JSON), or, under --compare, one row per combination of
 * settings.
 */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dirigent/json.h"
#include "dirigent/log.h"
#include "options.h"
#include "sim.h"

static json_t *result_json(const struct sim_fn_result *r)
{
    return json_pack("{sI sI sI sI sf sf sf sf sf sf sI sI}", "invocations",
                     (json_int_t)r->invocations, "completed", (json_int_t)r->completed, "failed",
                     (json_int_t)r->failed, "coldStarts", (json_int_t)r->cold, "coldStartRatio",
                     r->invocations ? (double)r->cold / (double)r->invocations : 0.0,
                     "schedulingLatencyP50Ms", r->sched_p50_ms, "schedulingLatencyP99Ms",
                     r->sched_p99_ms, "slowdownGeomean", r->slowdown_geomean, "sandboxSeconds",
                     r->sandbox_seconds, "memoryMiBSeconds", r->memory_mib_seconds,
                     "sandboxesCreated", (json_int_t)r->sandboxes_created, "imagePulls",
                     (json_int_t)r->image_pulls);
}

static int name_width = 14; /* function names are cut there; compare labels get more */

static void row(const char *name, const struct sim_fn_result *r)
{
    printf("%-*.*s %11llu %7llu %6.2f%% %10.2f %10.2f %9.3f %11.1f %13.1f %7llu %7llu\n",
           name_width, name_width, name, (unsigned long long)r->invocations,
           (unsigned long long)r->cold,
           r->invocations ? 100.0 * (double)r->cold / (double)r->invocations : 0.0, r->sched_p50_ms,
           r->sched_p99_ms, r->slowdown_geomean, r->sandbox_seconds, r->memory_mib_seconds / 1024,
           (unsigned long long)r->failed, (unsigned long long)r->image_pulls);
}

static void print_header(const char *first)
{
    printf("%-*s %11s %7s %7s %10s %10s %9s %11s %13s %7s %7s\n", name_width, first, "INVOCATIONS",
           "COLD", "COLD%", "SCHED p50", "SCHED p99", "SLOWDOWN", "SANDBOX-S", "MEM GiB-S",
           "FAILED", "PULLS");
}

static void describe(const struct sim_cli *cli, const struct sim_trace *t, FILE *out)
{
    fprintf(out,
            "dirigent-sim: %s trace %s: %zu functions, %zu invocations over %.1f min; %lld "
            "workers x %lldm/%lldMiB; placement %s, autoscaler %s, load balancing %s, "
            "concurrency %lld, create %s + image pull %lld ms, warm-up %lld min, seed %lld\n",
            t->format, cli->trace, t->nfns, t->ninvs, (double)t->end_us / 60e6,
            (long long)cli->workers, (long long)cli->worker_cpu, (long long)cli->worker_mem,
            cli->placement, cli->autoscaler, cli->lb, (long long)cli->concurrency,
            cli->create_latency, (long long)cli->image_pull_ms, (long long)cli->warmup_minutes,
            (long long)cli->seed);
}

/* One simulation with the command line plus `sets`. */
static int run_one(int argc, char **argv, const char *const *sets, size_t nsets,
                   struct sim_cli *cli, struct sim_trace *t, struct sim_result *res, double *wall_s,
                   struct dg_err *err)
{
    int rc = sim_cli_parse(argc, argv, sets, nsets, cli, err);
    if (rc != 0)
        return rc;
    struct sim_config c;
    struct sim_trace_opts o;
    if (sim_cli_config(cli, &c, &o, err) < 0)
        return -1;
    if (sim_trace_load(cli->trace, &o, t, err) < 0)
        return -1;
    FILE *csv = NULL;
    if (cli->csv[0] && nsets == 0) {
        csv = fopen(cli->csv, "w");
        if (!csv)
            return dg_err_set(err, DG_E_INVAL, "csv: cannot write '%s': %m", cli->csv);
        fprintf(csv, "function,arrival_ms,start_ms,end_ms,duration_ms,scheduling_ms,cold,"
                     "status\n");
    }
    c.csv = csv;
    uint64_t t0 = dg_now_us();
    rc = sim_run(t, &c, res, err);
    *wall_s = (double)(dg_now_us() - t0) / 1e6;
    if (csv)
        fclose(csv);
    return rc;
}

static void speed(const struct sim_trace *t, double wall_s)
{
    fprintf(stderr, "dirigent-sim: %zu invocations simulated in %.3f s (%.0f per second)\n",
            t->ninvs, wall_s, wall_s > 0 ? (double)t->ninvs / wall_s : 0.0);
}

int sim_report_single(int argc, char **argv)
{
    struct sim_cli cli;
    struct sim_trace t = {0};
    struct sim_result res = {0};
    struct dg_err err = {0};
    double wall = 0;
    int rc = run_one(argc, argv, NULL, 0, &cli, &t, &res, &wall, &err);
    if (rc == DG_CONF_EXIT) {
        sim_cli_free(&cli);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "dirigent-sim: %s\n", err.msg);
        sim_cli_free(&cli);
        sim_trace_free(&t);
        return 2;
    }
    if (cli.json) {
        json_t *fns = json_array();
        for (size_t i = 0; res.fns && i < t.nfns; i++) {
            json_t *one = result_json(&res.fns[i]);
            json_object_set_new(one, "function", json_string(t.fns[i].name));
            json_array_append_new(fns, one);
        }
        json_t *j = json_pack(
            "{s{ss ss sI sI sI ss ss ss sI ss sI sI} so so sf}", "config", "trace", cli.trace,
            "format", t.format, "workers", (json_int_t)cli.workers, "workerCpuMilli",
            (json_int_t)cli.worker_cpu, "workerMemoryMiB", (json_int_t)cli.worker_mem,
            "placementPolicy", cli.placement, "autoscaler", cli.autoscaler, "loadBalancingPolicy",
            cli.lb, "containerConcurrency", (json_int_t)cli.concurrency, "createLatency",
            cli.create_latency, "warmupMinutes", (json_int_t)cli.warmup_minutes, "seed",
            (json_int_t)cli.seed, "functions", fns, "total", result_json(&res.all),
            "simulatedSeconds", (double)res.end_us / 1e6);
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        describe(&cli, &t, stdout);
        print_header("FUNCTION");
        for (size_t i = 0; res.fns && i < t.nfns; i++)
            row(t.fns[i].name, &res.fns[i]);
        row("ALL", &res.all);
        printf("scheduling latency in ms (response - execution time); slowdown = response / "
               "execution time, geometric mean; %llu sandboxes created, %llu image pulls\n",
               (unsigned long long)res.all.sandboxes_created,
               (unsigned long long)res.all.image_pulls);
    }
    speed(&t, wall);
    sim_result_free(&res);
    sim_trace_free(&t);
    sim_cli_free(&cli);
    return 0;
}

/* --compare KEY=V1|V2,KEY2=...: every combination, one row each. */
int sim_report_compare(int argc, char **argv, const struct dg_strlist *axes)
{
    size_t n = axes->n, total = 1;
    struct dg_strlist *vals = dg_xcalloc(n, sizeof(*vals));
    char **keys = dg_xcalloc(n, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(axes->v[i], '=');
        if (!eq || eq == axes->v[i] || !eq[1]) {
            fprintf(stderr, "dirigent-sim: compare: expected KEY=V1|V2|..., got '%s'\n",
                    axes->v[i]);
            for (size_t k = 0; k < i; k++) {
                free(keys[k]);
                dg_strlist_free(&vals[k]);
            }
            free(keys);
            free(vals);
            return 2;
        }
        keys[i] = dg_xstrndup(axes->v[i], (size_t)(eq - axes->v[i]));
        for (const char *p = eq + 1;;) {
            const char *bar = strchr(p, '|');
            dg_strlist_push(&vals[i], dg_xstrndup(p, bar ? (size_t)(bar - p) : strlen(p)));
            if (!bar)
                break;
            p = bar + 1;
        }
        total *= vals[i].n;
    }
    bool json = false;
    json_t *rows = json_array();
    int rc = 0;
    for (size_t combo = 0; combo < total && rc == 0; combo++) {
        char **sets = dg_xcalloc(n, sizeof(*sets));
        char label[512] = "";
        size_t rest = combo;
        for (size_t i = n; i-- > 0;) { /* the last axis varies fastest */
            const char *v = vals[i].v[rest % vals[i].n];
            rest /= vals[i].n;
            sets[i] = dg_xasprintf("%s=%s", keys[i], v);
        }
        for (size_t i = 0; i < n; i++) {
            const char *v = strchr(sets[i], '=') + 1;
            snprintf(label + strlen(label), sizeof(label) - strlen(label), "%s%s", i ? " " : "", v);
        }
        struct sim_cli cli;
        struct sim_trace t = {0};
        struct sim_result res = {0};
        struct dg_err err = {0};
        double wall = 0;
        int r = run_one(argc, argv, (const char *const *)sets, n, &cli, &t, &res, &wall, &err);
        if (r != 0) {
            fprintf(stderr, "dirigent-sim: compare %s: %s\n", label, err.msg);
            rc = 2;
        } else {
            json = cli.json;
            if (combo == 0 && !json) {
                describe(&cli, &t, stdout);
                char axes_label[256] = "";
                for (size_t i = 0; i < n; i++)
                    snprintf(axes_label + strlen(axes_label),
                             sizeof(axes_label) - strlen(axes_label), "%s%s", i ? "/" : "",
                             keys[i]);
                printf("compared: %s\n", axes_label);
                name_width = 28;
                print_header("SETTING");
            }
            if (json) {
                json_t *one = result_json(&res.all);
                json_t *settings = json_object();
                for (size_t i = 0; i < n; i++)
                    json_object_set_new(settings, keys[i], json_string(strchr(sets[i], '=') + 1));
                json_array_append_new(rows,
                                      json_pack("{so so}", "settings", settings, "total", one));
            } else {
                row(label, &res.all);
            }
            speed(&t, wall);
        }
        sim_result_free(&res);
        sim_trace_free(&t);
        sim_cli_free(&cli);
        for (size_t i = 0; i < n; i++)
            free(sets[i]);
        free(sets);
    }
    if (json && rc == 0) {
        char *s = json_dumps(rows, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("%s\n", s);
        free(s);
    }
    json_decref(rows);
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        dg_strlist_free(&vals[i]);
    }
    free(keys);
    free(vals);
    return rc;
}
