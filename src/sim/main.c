/*
 * dirigent-sim: replay an Azure Functions trace through the control plane's and
 * the data plane's cores against simulated workers (sim.h). One run prints a table
 * per function and overall (or --json); --compare runs several settings and prints
 * one row each:
 *
 *   dirigent-sim TRACE [--workers 20] [--placementPolicy chbl] [--autoscaler knative]
 *                [--createLatency uniform:10ms:30ms] [--minutes 20 --warmupMinutes 5]
 *                [--json] [--csv FILE]
 *                [--compare placementPolicy=random|kubernetes|chbl,autoscaler=dirigent|knative]
 *
 * The output depends only on the trace and the flags: the same seed gives the same bytes.
 * How long the simulation took goes to stderr.
 *
 * This file wires: the command line is read in options.c, the runs and their output are in
 * report.c, the simulation itself in sim.c.
 */
#include <stdio.h>

#include "dirigent/config.h"
#include "dirigent/log.h"
#include "options.h"
#include "report.h"

int main(int argc, char **argv)
{
    dg_log_init("sim");
    /* the cores log what a daemon's operator wants to see (e.g. each "cannot start", a function
     * that found no room): in a simulation those are results, counted in the output, not news */
    dg_log_set_level(DG_LOG_ERROR);
    struct sim_cli cli;
    struct dg_err err = {0};
    int rc = sim_cli_parse(argc, argv, NULL, 0, &cli, &err);
    if (rc == DG_CONF_EXIT) {
        sim_cli_free(&cli);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "dirigent-sim: %s\n", err.msg);
        sim_cli_free(&cli);
        return 2;
    }
    struct dg_strlist axes = {0};
    for (size_t i = 0; i < cli.compare.n; i++)
        dg_strlist_push(&axes, dg_xstrdup(cli.compare.v[i]));
    sim_cli_free(&cli);
    rc = axes.n ? sim_report_compare(argc, argv, &axes) : sim_report_single(argc, argv);
    dg_strlist_free(&axes);
    return rc;
}
