/*
 * dirigent-sim's two modes and their output: one simulation printed as a table per function and
 * overall (or --json, and --csv with a row per invocation), or --compare's every combination of
 * settings, one row each. Tables and JSON go to stdout; how long each simulation took to stderr.
 */
#ifndef DG_SIM_REPORT_H
#define DG_SIM_REPORT_H

#include "dirigent/config.h"

/* One simulation with the command line in argv (borrowed). Returns the exit status: 0, or 2
 * after printing the error to stderr. */
int sim_report_single(int argc, char **argv);

/* Every combination of the KEY=V1|V2|... axes (borrowed) on top of argv, one row each. Returns
 * the exit status: 0, or 2 when an axis or a run failed (the error on stderr). */
int sim_report_compare(int argc, char **argv, const struct dg_strlist *axes);

#endif
