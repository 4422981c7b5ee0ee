/*
 * dirigent-sim's command line: one schema table (defaults, bounds, --help) read into a
 * struct sim_cli, and that turned into the simulator's struct sim_config and trace options
 * (sim.h). --compare's overrides are further KEY=VALUE settings on top of the command line.
 */
#ifndef DG_SIM_OPTIONS_H
#define DG_SIM_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dirigent/common.h"
#include "dirigent/config.h"
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

/* Parse argv (the trace may come first, without a flag) plus `sets` (KEY=VALUE, applied after
 * the command line) into `cli`, zeroed first. Returns 0, DG_CONF_EXIT when --help or
 * --print-config has printed to stdout, or negative with err set. argv is borrowed and restored;
 * free `cli` with sim_cli_free whatever the result. */
int sim_cli_parse(int argc, char **argv, const char *const *sets, size_t nsets, struct sim_cli *cli,
                  struct dg_err *err);

/* The simulator's config and trace options from a parsed command line (c->csv is left NULL).
 * Fails, naming createLatency, when that is not DURATION, uniform:MIN:MAX or exponential:MEAN. */
int sim_cli_config(const struct sim_cli *cli, struct sim_config *c, struct sim_trace_opts *o,
                   struct dg_err *err);

void sim_cli_free(struct sim_cli *cli);

#endif
