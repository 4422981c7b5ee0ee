/*
 * dirigent-sim: replay an Azure Functions trace through the control plane's
 * decision code against simulated workers (sim.h). One run prints a table per
 * function and overall (or --json); --compare runs several settings and prints
 * one row each:
 *
 *   dirigent-sim TRACE [--workers 20] [--placementPolicy chbl] [--autoscaler knative]
 *                [--createLatency uniform:10ms:30ms] [--minutes 20 --warmupMinutes 5]
 *                [--json] [--csv FILE]
 *                [--compare placementPolicy=random|kubernetes|chbl,autoscaler=dirigent|knative]
 *
 * The output depends only on the trace and the flags: the same seed gives the same bytes.
 * How long the simulation took goes to stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dirigent/config.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "lb.h"
#include "placement.h"
#include "sim.h"

struct sim_cli {
    char *trace;
    int64_t workers, worker_cpu, worker_mem;
    char *placement;
    double chbl_eps;
    char *autoscaler;
    char *lb;
    int64_t stable_window_ms, panic_window_ms, grace_ms;
    double target_pct;
    int64_t concurrency;
    char *create_latency;
    int64_t image_pull_ms;
    int64_t queue_timeout_ms;
    int64_t minutes, warmup_minutes;
    char *iat;
    int64_t seed;
    int64_t cpu_milli, memory_mib;
    double cpu_per_mib;
    bool json;
    char *csv;
    struct dg_strlist compare;
};

static const char *const autoscalers[] = {"dirigent", "knative", NULL};
static const char *const iats[] = {"equidistant", "uniform", "exponential", NULL};

#define OFF(m) offsetof(struct sim_cli, m)
static const struct dg_conf_field fields[] = {
    {.key = "trace",
     .type = DG_CONF_STRING,
     .offset = OFF(trace),
     .def = "",
     .help = "the trace: a directory in the Azure 2019 format (invocations.csv, durations.csv, "
             "memory.csv, dirigent.json) or an Azure 2021 CSV (also the first argument)"},
    {.key = "workers",
     .type = DG_CONF_INT,
     .offset = OFF(workers),
     .def = "20",
     .min = 1,
     .max = 100000,
     .help = "simulated workers"},
    {.key = "workerCpuMilli",
     .type = DG_CONF_INT,
     .offset = OFF(worker_cpu),
     .def = "10000",
     .min = 1,
     .max = 1LL << 40,
     .help = "each worker's CPU, milli-CPU"},
    {.key = "workerMemoryMiB",
     .type = DG_CONF_INT,
     .offset = OFF(worker_mem),
     .def = "65536",
     .min = 1,
     .max = 1LL << 40,
     .help = "each worker's memory, MiB"},
    {.key = "placementPolicy",
     .type = DG_CONF_ENUM,
     .offset = OFF(placement),
     .def = "random",
     .choices = cp_place_policy_names,
     .help = "as the CP's"},
    {.key = "chblEpsilon",
     .type = DG_CONF_DOUBLE,
     .offset = OFF(chbl_eps),
     .def = "0.25",
     .dmin = 0.01,
     .dmax = 10,
     .help = "as the CP's"},
    {.key = "autoscaler",
     .type = DG_CONF_ENUM,
     .offset = OFF(autoscaler),
     .def = "dirigent",
     .choices = autoscalers,
     .help = "as the CP's"},
    {.key = "stableWindow",
     .type = DG_CONF_DURATION,
     .offset = OFF(stable_window_ms),
     .def = "0",
     .min = 0,
     .max = 3600000,
     .help = "the decider's stable window (0: the mode's, 60s)"},
    {.key = "panicWindow",
     .type = DG_CONF_DURATION,
     .offset = OFF(panic_window_ms),
     .def = "0",
     .min = 0,
     .max = 3600000,
     .help = "the decider's panic window (0: the mode's, 6s)"},
    {.key = "targetUtilization",
     .type = DG_CONF_DOUBLE,
     .offset = OFF(target_pct),
     .def = "0",
     .dmin = 0,
     .dmax = 100,
     .help = "percent of container concurrency a sandbox is meant to carry (0: the mode's: "
             "dirigent 100, knative 70)"},
    {.key = "scaleToZeroGrace",
     .type = DG_CONF_DURATION,
     .offset = OFF(grace_ms),
     .def = "0",
     .min = 0,
     .max = 3600000,
     .help = "the last sandbox stays this long once zero is wanted (0: the mode's: dirigent "
             "none, knative 30s)"},
    {.key = "loadBalancingPolicy",
     .type = DG_CONF_ENUM,
     .offset = OFF(lb),
     .def = "random",
     .choices = dp_lb_policy_names,
     .help = "as the DP's"},
    {.key = "containerConcurrency",
     .type = DG_CONF_INT,
     .offset = OFF(concurrency),
     .def = "1",
     .min = 0,
     .max = 1000,
     .help = "requests at once per sandbox (0: unlimited)"},
    {.key = "createLatency",
     .type = DG_CONF_STRING,
     .offset = OFF(create_latency),
     .def = "20ms",
     .help = "sandbox creation, decision to ready: DURATION, uniform:MIN:MAX or "
             "exponential:MEAN"},
    {.key = "imagePull",
     .type = DG_CONF_DURATION,
     .offset = OFF(image_pull_ms),
     .def = "0",
     .min = 0,
     .max = 86400000,
     .help = "added to a function's first sandbox on a worker (the image pull)"},
    {.key = "queueTimeout",
     .type = DG_CONF_DURATION,
     .offset = OFF(queue_timeout_ms),
     .def = "60s",
     .min = 1,
     .max = 86400000,
     .help = "a request queued longer fails (503)"},
    {.key = "minutes",
     .type = DG_CONF_INT,
     .offset = OFF(minutes),
     .def = "0",
     .min = 0,
     .max = 1000000,
     .help = "Azure 2019: replay the first N minutes (0: all)"},
    {.key = "warmupMinutes",
     .type = DG_CONF_INT,
     .offset = OFF(warmup_minutes),
     .def = "0",
     .min = 0,
     .max = 1000000,
     .help = "simulated, not counted (the paper excludes 10)"},
    {.key = "iat",
     .type = DG_CONF_ENUM,
     .offset = OFF(iat),
     .def = "exponential",
     .choices = iats,
     .help = "Azure 2019: arrivals within each minute"},
    {.key = "seed",
     .type = DG_CONF_INT,
     .offset = OFF(seed),
     .def = "1",
     .min = 1,
     .max = INT64_MAX,
     .help = "arrivals, durations, placement and load balancing"},
    {.key = "cpuMilli",
     .type = DG_CONF_INT,
     .offset = OFF(cpu_milli),
     .def = "100",
     .min = 1,
     .max = 1000000,
     .help = "a function's CPU request when cpuPerMiB is 0"},
    {.key = "memoryMiB",
     .type = DG_CONF_INT,
     .offset = OFF(memory_mib),
     .def = "128",
     .min = 1,
     .max = 1 << 24,
     .help = "a function's memory request when the trace has none"},
    {.key = "cpuPerMiB",
     .type = DG_CONF_DOUBLE,
     .offset = OFF(cpu_per_mib),
     .def = "0",
     .dmin = 0,
     .dmax = 1000,
     .help = "milli-CPU per MiB of memory (Lambda: 0.565); 0: cpuMilli for every function"},
    {.key = "json",
     .type = DG_CONF_BOOL,
     .offset = OFF(json),
     .def = "false",
     .help = "print JSON instead of tables"},
    {.key = "csv",
     .type = DG_CONF_STRING,
     .offset = OFF(csv),
     .def = "",
     .help = "write one row per invocation to this file"},
    {.key = "compare",
     .type = DG_CONF_STRLIST,
     .offset = OFF(compare),
     .def = "",
     .help = "KEY=V1|V2|...[,KEY=...]: run every combination, one row each"},
};

static const struct dg_conf_schema schema = {
    .prog = "dirigent-sim",
    .summary = "replays a trace through the control plane's decisions on a simulated cluster",
    .fields = fields,
    .nfields = DG_ARRAY_LEN(fields),
};

static int parse_latency(const char *s, struct sim_config *c, struct dg_err *err)
{
    struct dg_conf_field f = {.key = "x", .type = DG_CONF_DURATION, .max = 86400000};
    struct dg_conf_schema one = {.prog = "", .fields = &f, .nfields = 1};
    int64_t ms[2] = {0, 0};
    const char *parts = s;
    c->create_kind = SIM_LAT_FIXED;
    if (strncmp(s, "uniform:", 8) == 0) {
        c->create_kind = SIM_LAT_UNIFORM;
        parts = s + 8;
    } else if (strncmp(s, "exponential:", 12) == 0) {
        c->create_kind = SIM_LAT_EXPONENTIAL;
        parts = s + 12;
    }
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", parts);
    char *second = c->create_kind == SIM_LAT_UNIFORM ? strchr(buf, ':') : NULL;
    if (second)
        *second++ = '\0';
    if (c->create_kind == SIM_LAT_UNIFORM && !second)
        return dg_err_set(err, DG_E_INVAL,
                          "createLatency: expected uniform:MIN:MAX (e.g. uniform:10ms:30ms), got "
                          "'%s'",
                          s);
    const char *vals[2] = {buf, second};
    for (int i = 0; i < (second ? 2 : 1); i++) {
        char set[160];
        snprintf(set, sizeof(set), "x=%s", vals[i]);
        struct dg_err e = {0};
        if (dg_conf_set(&one, &ms[i], set, &e) < 0)
            return dg_err_set(err, DG_E_INVAL,
                              "createLatency: expected DURATION, uniform:MIN:MAX or "
                              "exponential:MEAN (e.g. 20ms), got '%s'",
                              s);
    }
    if (c->create_kind == SIM_LAT_UNIFORM && ms[1] < ms[0])
        return dg_err_set(err, DG_E_INVAL, "createLatency: MAX below MIN in '%s'", s);
    c->create_a_us = (uint64_t)ms[0] * 1000;
    c->create_b_us = (uint64_t)ms[1] * 1000;
    return 0;
}

/* Parse the command line (plus compare overrides) into a fresh config. */
static int configure(int argc, char **argv, const char *const *sets, size_t nsets,
                     struct sim_cli *cli, struct dg_err *err)
{
    memset(cli, 0, sizeof(*cli));
    char *trace_arg = NULL;
    if (argc > 1 && argv[1][0] != '-') { /* the trace as the first argument */
        trace_arg = argv[1];
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    int rc = dg_conf_parse_args(&schema, cli, argc, argv, stdout, err);
    if (trace_arg) {
        argv--;
        argv[0] = argv[1];
        argv[1] = trace_arg;
    }
    if (rc != DG_CONF_RUN)
        return rc;
    if (trace_arg) {
        free(cli->trace);
        cli->trace = dg_xstrdup(trace_arg);
    }
    for (size_t i = 0; i < nsets; i++)
        if (dg_conf_set(&schema, cli, sets[i], err) < 0)
            return -1;
    if (!cli->trace[0])
        return dg_err_set(err, DG_E_INVAL,
                          "trace: required (dirigent-sim TRACE_DIR_OR_CSV ...; see --help)");
    return 0;
}

static void fill(const struct sim_cli *cli, struct sim_config *c, struct sim_trace_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->workers = (unsigned)cli->workers;
    c->worker_cpu_milli = cli->worker_cpu;
    c->worker_memory_mib = cli->worker_mem;
    c->placement = cp_place_policy_parse(cli->placement);
    c->chbl_eps = cli->chbl_eps;
    c->knative = strcmp(cli->autoscaler, "knative") == 0;
    c->stable_window_ms = (uint64_t)cli->stable_window_ms;
    c->panic_window_ms = (uint64_t)cli->panic_window_ms;
    c->scale_to_zero_grace_ms = (uint64_t)cli->grace_ms;
    c->target_pct = cli->target_pct;
    enum dp_lb_policy lb = DP_LB_RANDOM;
    dp_lb_policy_parse(cli->lb, &lb);
    c->lb = (int)lb;
    c->concurrency = (int)cli->concurrency;
    c->queue_timeout_us = (uint64_t)cli->queue_timeout_ms * 1000;
    c->image_pull_us = (uint64_t)cli->image_pull_ms * 1000;
    c->warmup_us = (uint64_t)cli->warmup_minutes * 60000000ULL;
    c->seed = (uint64_t)cli->seed;
    *o = (struct sim_trace_opts){.minutes = cli->minutes,
                                 .iat = strcmp(cli->iat, "equidistant") == 0 ? SIM_IAT_EQUIDISTANT
                                        : strcmp(cli->iat, "uniform") == 0   ? SIM_IAT_UNIFORM
                                                                             : SIM_IAT_EXPONENTIAL,
                                 .seed = (uint64_t)cli->seed,
                                 .cpu_milli = cli->cpu_milli,
                                 .memory_mib = cli->memory_mib,
                                 .cpu_per_mib = cli->cpu_per_mib};
}

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
    int rc = configure(argc, argv, sets, nsets, cli, err);
    if (rc != 0)
        return rc;
    struct sim_config c;
    struct sim_trace_opts o;
    fill(cli, &c, &o);
    if (parse_latency(cli->create_latency, &c, err) < 0)
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

static int single(int argc, char **argv)
{
    struct sim_cli cli;
    struct sim_trace t = {0};
    struct sim_result res = {0};
    struct dg_err err = {0};
    double wall = 0;
    int rc = run_one(argc, argv, NULL, 0, &cli, &t, &res, &wall, &err);
    if (rc == DG_CONF_EXIT) {
        dg_conf_free(&schema, &cli);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "dirigent-sim: %s\n", err.msg);
        dg_conf_free(&schema, &cli);
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
    dg_conf_free(&schema, &cli);
    return 0;
}

/* --compare KEY=V1|V2,KEY2=...: every combination, one row each. */
static int compare(int argc, char **argv, const struct dg_strlist *axes)
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
        dg_conf_free(&schema, &cli);
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

int main(int argc, char **argv)
{
    dg_log_init("sim");
    dg_log_set_level(DG_LOG_ERROR); /* the core's log lines are the daemon's */
    struct sim_cli cli;
    struct dg_err err = {0};
    int rc = configure(argc, argv, NULL, 0, &cli, &err);
    if (rc == DG_CONF_EXIT) {
        dg_conf_free(&schema, &cli);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "dirigent-sim: %s\n", err.msg);
        dg_conf_free(&schema, &cli);
        return 2;
    }
    struct dg_strlist axes = {0};
    for (size_t i = 0; i < cli.compare.n; i++)
        dg_strlist_push(&axes, dg_xstrdup(cli.compare.v[i]));
    dg_conf_free(&schema, &cli);
    rc = axes.n ? compare(argc, argv, &axes) : single(argc, argv);
    dg_strlist_free(&axes);
    return rc;
}
