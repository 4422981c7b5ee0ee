/*
 * dirigent-sim's command line (options.h): the schema table of every key with its default,
 * bounds and help, the trace as an optional first argument, and the translation into the
 * simulator's config, including createLatency's three forms.
 */
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/log.h"
#include "lb.h"
#include "placement.h"
#include "sim.h"

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
int sim_cli_parse(int argc, char **argv, const char *const *sets, size_t nsets, struct sim_cli *cli,
                  struct dg_err *err)
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

int sim_cli_config(const struct sim_cli *cli, struct sim_config *c, struct sim_trace_opts *o,
                   struct dg_err *err)
{
    fill(cli, c, o);
    return parse_latency(cli->create_latency, c, err);
}

void sim_cli_free(struct sim_cli *cli)
{
    dg_conf_free(&schema, cli);
}
