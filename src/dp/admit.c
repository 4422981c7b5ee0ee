/*
 * admit.c: the admission estimator (admit.h). Two 1 s windows of busy time and
 * completions, rolled on every call; the rate is their sum of completions over
 * their sum of busy time (the current window's busy time counted up to now).
 */
#include "admit.h"

/* Credit busy time up to `t` (>= mark) to the current window. */
static void credit(struct dp_admit *a, uint64_t t)
{
    if (a->busy && t > a->mark_us)
        a->busy_us[0] += t - a->mark_us;
    a->mark_us = t;
}

/* The windows up to `now`: busy time split at each boundary passed. */
static void roll(struct dp_admit *a, uint64_t now)
{
    if (a->win_start_us == 0 || now >= a->win_start_us + 2 * DP_ADMIT_WINDOW_US) {
        /* first use, or both windows are past: the horizon starts again at now */
        a->win_start_us = now ? now : 1;
        a->busy_us[0] = a->busy_us[1] = 0;
        a->done[0] = a->done[1] = 0;
        a->mark_us = now;
        return;
    }
    if (now >= a->win_start_us + DP_ADMIT_WINDOW_US) {
        uint64_t edge = a->win_start_us + DP_ADMIT_WINDOW_US;
        credit(a, edge);
        a->busy_us[1] = a->busy_us[0];
        a->done[1] = a->done[0];
        a->busy_us[0] = 0;
        a->done[0] = 0;
        a->win_start_us = edge;
    }
    if (now > a->mark_us)
        credit(a, now);
}

void dp_admit_set_busy(struct dp_admit *a, uint64_t now, bool busy)
{
    roll(a, now);
    a->busy = busy;
}

void dp_admit_done(struct dp_admit *a, uint64_t now, uint64_t waited_us, bool found_empty)
{
    roll(a, now);
    a->done[0]++;
    if (found_empty) /* a moving average over about 8 of them */
        a->base_us = a->base_us ? a->base_us - a->base_us / 8 + waited_us / 8 : waited_us;
}

double dp_admit_rate(const struct dp_admit *a, uint64_t now)
{
    struct dp_admit c = *a; /* rolled on a copy: a query changes nothing */
    roll(&c, now);
    uint64_t done = (uint64_t)c.done[0] + c.done[1], busy = c.busy_us[0] + c.busy_us[1];
    if (done == 0)
        return 0;
    if (busy < 1000) /* completions without measurable busy time: at least 1 ms of it */
        busy = 1000;
    return (double)done * 1e6 / (double)busy;
}

bool dp_admit_wait(const struct dp_admit *a, uint64_t now, unsigned ahead, uint64_t *wait_us)
{
    double rate = dp_admit_rate(a, now);
    if (rate <= 0)
        return false;
    *wait_us = (uint64_t)((double)ahead * 1e6 / rate);
    return true;
}
