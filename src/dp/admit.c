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
    if (busy && !a->busy)
        a->busy_since_us = now;
    a->busy = busy;
}

/* The recent-wait intervals up to `now`. */
static void roll_min(struct dp_admit *a, uint64_t now)
{
    if (a->min_start_us == 0 || now >= a->min_start_us + 2 * DP_ADMIT_MIN_INTERVAL_US) {
        a->min_start_us = now ? now : 1;
        a->n_wait[0] = a->n_wait[1] = 0;
        a->sum_wait_us[0] = a->sum_wait_us[1] = 0;
    } else if (now >= a->min_start_us + DP_ADMIT_MIN_INTERVAL_US) {
        a->sum_wait_us[1] = a->sum_wait_us[0];
        a->n_wait[1] = a->n_wait[0];
        a->sum_wait_us[0] = 0;
        a->n_wait[0] = 0;
        a->min_start_us += DP_ADMIT_MIN_INTERVAL_US;
    }
}

bool dp_admit_backlog(const struct dp_admit *a, uint64_t now, uint64_t limit_us)
{
    if (!a->busy || now < a->busy_since_us + limit_us)
        return false; /* empty, or a burst not yet standing */
    struct dp_admit c = *a;
    roll_min(&c, now);
    uint64_t n = (uint64_t)c.n_wait[0] + c.n_wait[1];
    if (n == 0)
        return now >= c.last_done_us + limit_us;
    return (c.sum_wait_us[0] + c.sum_wait_us[1]) / n > limit_us;
}

static void floor_note(struct dp_admit *a, uint64_t now);

void dp_admit_done(struct dp_admit *a, uint64_t now, uint64_t waited_us, bool found_empty)
{
    roll(a, now);
    a->done[0]++;
    a->last_done_us = now;
    roll_min(a, now);
    a->sum_wait_us[0] += waited_us;
    a->n_wait[0]++;
    if (!found_empty)
        return;
    /* as TCP's round-trip estimate (RFC 6298): a smoothed mean and mean deviation */
    if (!a->has_base) {
        a->base_us = waited_us;
        a->dev_us = waited_us / 2;
        a->has_base = true;
        floor_note(a, now);
        return;
    }
    uint64_t d = waited_us > a->base_us ? waited_us - a->base_us : a->base_us - waited_us;
    a->dev_us = a->dev_us - a->dev_us / 4 + d / 4;
    a->base_us = a->base_us - a->base_us / 8 + waited_us / 8;
    floor_note(a, now);
}

/* The floor's windows up to `now`. */
static void roll_floor(struct dp_admit *a, uint64_t now)
{
    if (a->floor_start_us == 0 || now >= a->floor_start_us + 2 * DP_ADMIT_FLOOR_WINDOW_US) {
        a->floor_start_us = now ? now : 1;
        a->floor_us[0] = a->floor_us[1] = 0;
    } else if (now >= a->floor_start_us + DP_ADMIT_FLOOR_WINDOW_US) {
        a->floor_us[1] = a->floor_us[0];
        a->floor_us[0] = 0;
        a->floor_start_us += DP_ADMIT_FLOOR_WINDOW_US;
    }
}

/* After the usual wait changed: the floor takes it if lower. */
static void floor_note(struct dp_admit *a, uint64_t now)
{
    roll_floor(a, now);
    uint64_t u = dp_admit_usual(a);
    if (u == 0)
        u = 1; /* 0 is "none" */
    if (a->floor_us[0] == 0 || u < a->floor_us[0])
        a->floor_us[0] = u;
}

uint64_t dp_admit_usual_floor(const struct dp_admit *a, uint64_t now)
{
    struct dp_admit c = *a;
    roll_floor(&c, now);
    uint64_t f0 = c.floor_us[0], f1 = c.floor_us[1];
    uint64_t f = f0 && f1 ? (f0 < f1 ? f0 : f1) : f0 ? f0 : f1;
    return f ? f : dp_admit_usual(a);
}

uint64_t dp_admit_usual(const struct dp_admit *a)
{
    return a->has_base ? a->base_us + 4 * a->dev_us : 0;
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

uint64_t dp_admit_recent(const struct dp_admit *a, uint64_t now, unsigned *n)
{
    struct dp_admit c = *a; /* rolled on a copy: a query changes nothing */
    roll_min(&c, now);
    *n = c.n_wait[0] + c.n_wait[1];
    return *n ? (c.sum_wait_us[0] + c.sum_wait_us[1]) / *n : 0;
}

bool dp_admit_shed(struct dp_admit *a, uint64_t limit_us, uint64_t recent_us)
{
    if (recent_us <= limit_us) {
        a->shed_credit = 0;
        return false;
    }
    a->shed_credit += (double)limit_us / (double)recent_us;
    if (a->shed_credit < 1)
        return true;
    a->shed_credit -= 1;
    return false;
}
