/*
 * dirigent-autoscale-replay: runs the control plane's scaling decider
 * (autoscaler.c, the same code) over a recorded metric series, so its
 * decisions can be checked from outside.
 *
 *   stdin:  one line per tick, "t_seconds concurrency"
 *   stdout: one line per tick, "t desired panic(0|1)"
 *
 * Ready sandboxes are assumed to follow the previous decision at once.
 * Flags default to the original's values, or to the cold-start-sweep profile
 * with --cold-start-sweep; any flag given overrides the profile.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoscaler.h"
#include "dirigent/config.h"

struct replay_config {
    int64_t stable_window_ms, panic_window_ms, tick_ms;
    int64_t target, min, max;
    double target_pct, panic_threshold, max_up_rate, max_down_rate;
    bool cold_start_sweep;
};

#define F(k, t, m, d, lo, hi, h)                                                                   \
    {                                                                                              \
        .key = k, .type = t, .offset = offsetof(struct replay_config, m), .def = d, .min = lo,     \
        .max = hi, .help = h                                                                       \
    }
#define FD(k, m, h)                                                                                \
    {                                                                                              \
        .key = k, .type = DG_CONF_DOUBLE, .offset = offsetof(struct replay_config, m), .def = "0", \
        .dmin = 0, .dmax = 1e9, .help = h                                                          \
    }

static const struct dg_conf_field fields[] = {
    F("stableWindow", DG_CONF_DURATION, stable_window_ms, "0", 0, 3600000,
      "stable window (0: 60s, or 6s with --cold-start-sweep)"),
    F("panicWindow", DG_CONF_DURATION, panic_window_ms, "0", 0, 3600000,
      "panic window (0: 6s, or 2s with --cold-start-sweep)"),
    F("tick", DG_CONF_DURATION, tick_ms, "0", 0, 3600000, "scaling period (0: 2s)"),
    F("target", DG_CONF_INT, target, "-1", -1, 100000,
      "container concurrency per sandbox (-1: 1; 0: unlimited, target 100)"),
    FD("targetPercent", target_pct, "target utilisation in percent (0: 100)"),
    FD("panicThreshold", panic_threshold, "panic threshold in percent (0: 200)"),
    FD("maxUpRate", max_up_rate, "max scale-up rate (0: 1000)"),
    FD("maxDownRate", max_down_rate, "max scale-down rate (0: 2)"),
    F("min", DG_CONF_INT, min, "-1", -1, INT32_MAX, "lower bound (-1: 0)"),
    F("max", DG_CONF_INT, max, "-1", -1, INT32_MAX,
      "upper bound (-1: unbounded, or 1 with --cold-start-sweep)"),
    {.key = "coldStartSweep",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct replay_config, cold_start_sweep),
     .def = "false",
     .help = "the original's cold-start-sweep profile"},
};

static const struct dg_conf_schema schema = {
    .prog = "dirigent-autoscale-replay",
    .summary = "replay 't concurrency' lines through the scaling decider; prints 't desired "
               "panic'",
    .fields = fields,
    .nfields = DG_ARRAY_LEN(fields),
};

int main(int argc, char **argv)
{
    struct replay_config rc = {0};
    struct dg_err err = {0};
    int r = dg_conf_parse_args(&schema, &rc, argc, argv, stdout, &err);
    if (r == DG_CONF_EXIT)
        return 0;
    if (r < 0) {
        fprintf(stderr, "dirigent-autoscale-replay: %s\n", err.msg);
        return 2;
    }
    struct cp_as_config c;
    cp_as_config_default(&c, rc.cold_start_sweep);
    if (rc.stable_window_ms)
        c.stable_window_ms = (uint64_t)rc.stable_window_ms;
    if (rc.panic_window_ms)
        c.panic_window_ms = (uint64_t)rc.panic_window_ms;
    if (rc.tick_ms)
        c.tick_ms = (uint64_t)rc.tick_ms;
    if (rc.target >= 0)
        c.container_concurrency = (int)rc.target;
    if (rc.target_pct > 0)
        c.target_pct = rc.target_pct;
    if (rc.panic_threshold > 0)
        c.panic_threshold_pct = rc.panic_threshold;
    if (rc.max_up_rate > 0)
        c.max_scale_up_rate = rc.max_up_rate;
    if (rc.max_down_rate > 0)
        c.max_scale_down_rate = rc.max_down_rate;
    if (rc.min >= 0)
        c.lower_bound = (int)rc.min;
    if (rc.max >= 0)
        c.upper_bound = (int)rc.max;
    if (c.lower_bound > c.upper_bound) {
        fprintf(stderr, "dirigent-autoscale-replay: --min %d is above --max %d\n", c.lower_bound,
                c.upper_bound);
        return 2;
    }

    struct cp_as_state st;
    cp_as_state_init(&st, &c);
    char line[256];
    int ready = 0;
    unsigned long lineno = 0;
    while (fgets(line, sizeof(line), stdin)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\n' || *p == '#' || *p == '\0')
            continue;
        double t, conc;
        char extra;
        if (sscanf(p, "%lf %lf %c", &t, &conc, &extra) != 2 || t < 0 || conc < 0) {
            fprintf(stderr,
                    "dirigent-autoscale-replay: stdin:%lu: expected 't_seconds concurrency' "
                    "(two non-negative numbers), got '%.*s'\n",
                    lineno, (int)strcspn(p, "\n"), p);
            cp_as_state_deinit(&st);
            return 2;
        }
        struct cp_as_decision d;
        cp_as_decide(&c, &st, ready, conc, (uint64_t)(t * 1000.0 + 0.5), &d);
        printf("%g %d %d\n", t, d.desired, d.panic ? 1 : 0);
        ready = d.desired;
    }
    cp_as_state_deinit(&st);
    return 0;
}
