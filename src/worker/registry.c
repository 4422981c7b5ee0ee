/*
 * registry.c: the worker's sandboxes, from the create request to the last trace of them on
 * the host. A sandbox is made here only (wk_registry_create), lost here only
 * (wk_sandbox_exited) and freed here only (wk_sandbox_gone, when its runtime is done with
 * it). The runtime (runtime.h) does the work; the adapters hear about the outcome through the
 * events table: the API answers creates (api.c), the control-plane link reports exits
 * (cplink.c). The registry keeps the worker's sandbox metrics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/log.h"
#include "dirigent/wire.h"
#include "registry.h"

const char *wk_sandbox_state_name(enum wk_sb_state s)
{
    switch (s) {
    case WK_SB_CREATING:
        return DG_WIRE_SB_CREATING;
    case WK_SB_READY:
        return DG_WIRE_SB_READY;
    case WK_SB_EXITED:
        return DG_WIRE_SB_EXITED;
    case WK_SB_DELETING:
        return DG_WIRE_SB_DELETING;
    }
    return "?";
}

static double sandboxes_now(void *ud)
{
    return (double)((struct wk_registry *)ud)->n;
}

static double queued_now(void *ud)
{
    return (double)((struct wk_registry *)ud)->nqueued;
}

/* ---- the create queue (maxConcurrentCreates) ---------------------------------------------- */

/* A deep copy of `spec` (a queued create outlives the request that carried it). */
static struct dg_wire_create *spec_copy(const struct dg_wire_create *spec)
{
    struct dg_wire_create *c = dg_xcalloc(1, sizeof(*c));
    *c = *spec;
    c->function = dg_xstrdup(spec->function);
    c->image = spec->image ? dg_xstrdup(spec->image) : NULL;
    c->env = (struct dg_strlist){0};
    c->args = (struct dg_strlist){0};
    for (size_t i = 0; i < spec->env.n; i++)
        dg_strlist_push(&c->env, dg_xstrdup(spec->env.v[i]));
    for (size_t i = 0; i < spec->args.n; i++)
        dg_strlist_push(&c->args, dg_xstrdup(spec->args.v[i]));
    return c;
}

static void spec_free(struct dg_wire_create *c)
{
    dg_wire_create_free(c);
    free(c);
}

static void unqueue(struct wk_registry *reg, struct wk_sandbox *sb)
{
    if (sb->qprev)
        sb->qprev->qnext = sb->qnext;
    else
        reg->q_head = sb->qnext;
    if (sb->qnext)
        sb->qnext->qprev = sb->qprev;
    else
        reg->q_tail = sb->qprev;
    sb->qprev = sb->qnext = NULL;
    reg->nqueued--;
}

bool wk_registry_saturated(const struct wk_registry *reg)
{
    /* not the clean-ups of deletes: a sandbox's slot is free once its process has gone */
    return reg->max_creates && reg->nqueued >= reg->max_creates;
}

/* Tell the adapters when the worker becomes saturated or free again. */
static void saturation_check(struct wk_registry *reg)
{
    bool now = wk_registry_saturated(reg);
    if (now == reg->saturated)
        return;
    reg->saturated = now;
    dg_log(DG_LOG_INFO, "worker",
           now ? "saturated: %u creates wait, %u run (maxConcurrentCreates %u)"
               : "no longer saturated: %u creates wait, %u run (maxConcurrentCreates %u)",
           reg->nqueued, reg->creating, reg->max_creates);
    if (reg->ev.saturation)
        reg->ev.saturation(reg->ev.ud, now);
}

/* Hand sb to its runtime, holding a create slot. */
static void start(struct wk_registry *reg, struct wk_sandbox *sb, const struct dg_wire_create *spec)
{
    sb->create_slot = true;
    reg->creating++;
    reg->rt->create(reg->rt_state, sb, spec); /* may finish, even free sb, before it returns */
}

/* Start what waits while slots are free (not re-entered: a create that finishes at once
 * inside start() frees its slot for this same loop). */
static void pump(struct wk_registry *reg)
{
    if (reg->pumping || reg->stopping)
        return;
    reg->pumping = true;
    while (reg->q_head && (!reg->max_creates || reg->creating < reg->max_creates)) {
        struct wk_sandbox *sb = reg->q_head;
        unqueue(reg, sb);
        struct dg_wire_create *spec = sb->queued;
        sb->queued = NULL;
        start(reg, sb, spec);
        spec_free(spec);
    }
    reg->pumping = false;
    saturation_check(reg);
}

static void slot_release(struct wk_sandbox *sb)
{
    if (!sb->create_slot)
        return;
    sb->create_slot = false;
    sb->reg->creating--;
    pump(sb->reg);
}

void wk_registry_set_max_creates(struct wk_registry *reg, unsigned max)
{
    reg->max_creates = max;
}

void wk_registry_init(struct wk_registry *reg, const char *name, const struct wk_runtime *rt,
                      void *rt_state, const struct wk_registry_events *ev,
                      struct dg_metrics *metrics)
{
    reg->rt = rt;
    reg->rt_state = rt_state;
    snprintf(reg->name, sizeof(reg->name), "%s", name);
    reg->ev = *ev;
    reg->creates = dg_metric_get1(
        dg_metrics_counter(metrics, "dg_worker_sandbox_creates_total", "Sandboxes created.", NULL),
        NULL);
    reg->create_failures =
        dg_metric_get1(dg_metrics_counter(metrics, "dg_worker_sandbox_create_failures_total",
                                          "Sandbox creates that failed.", NULL),
                       NULL);
    reg->unexpected_exits =
        dg_metric_get1(dg_metrics_counter(metrics, "dg_worker_sandbox_unexpected_exits_total",
                                          "Sandboxes that exited without a delete.", NULL),
                       NULL);
    reg->create_seconds = dg_metrics_histogram(
        metrics, "dg_worker_sandbox_create_seconds", "Time from create request to a ready sandbox.",
        NULL, dg_metrics_latency_buckets, dg_metrics_latency_nbuckets);
    dg_metrics_gauge_fn(metrics, "dg_worker_sandboxes", "Sandboxes on this worker.", sandboxes_now,
                        reg);
    reg->stop_seconds = dg_metric_get1(
        dg_metrics_histogram(metrics, "dg_worker_sandbox_stop_seconds",
                             "Time from a delete to the sandbox's process gone.", NULL,
                             dg_metrics_latency_buckets, dg_metrics_latency_nbuckets),
        NULL);
    reg->delete_seconds = dg_metric_get1(
        dg_metrics_histogram(metrics, "dg_worker_sandbox_delete_seconds",
                             "Time from a delete to nothing of the sandbox left on the host.", NULL,
                             dg_metrics_latency_buckets, dg_metrics_latency_nbuckets),
        NULL);
    dg_metrics_gauge_fn(metrics, "dg_worker_create_queue",
                        "Creates waiting for a slot (maxConcurrentCreates).", queued_now, reg);
}

void wk_registry_deinit(struct wk_registry *reg)
{
    dg_strmap_free(&reg->by_id);
}

int wk_registry_create(struct wk_registry *reg, const struct dg_wire_create *spec,
                       struct wk_reply reply, struct dg_err *err)
{
    if (reg->rt->validate && reg->rt->validate(reg->rt_state, spec, err) < 0)
        return -1;
    struct wk_sandbox *sb = dg_xcalloc(1, sizeof(*sb) + reg->rt->sb_size);
    sb->reg = reg;
    snprintf(sb->id, sizeof(sb->id), "%s-%x-%llu", reg->name, reg->run,
             (unsigned long long)++reg->next_id);
    sb->function = dg_xstrdup(spec->function);
    sb->state = WK_SB_CREATING;
    sb->t0_us = dg_now_us();
    sb->reply = reply;
    if (reg->ev.bind)
        reg->ev.bind(reg->ev.ud, sb);
    sb->next = reg->sandboxes;
    if (reg->sandboxes)
        reg->sandboxes->prev = sb;
    reg->sandboxes = sb;
    reg->n++;
    dg_strmap_put(&reg->by_id, dg_str_c(sb->id), sb);
    /* the sandbox learns its id (DIRIGENT_SANDBOX_ID, not the caller's): dirigent-fn refuses a
     * request meant for another sandbox at its address (docs/security.md) */
    char idenv[sizeof(sb->id) + sizeof(DG_WIRE_ENV_SANDBOX_ID) + 1];
    snprintf(idenv, sizeof(idenv), "%s=%s", DG_WIRE_ENV_SANDBOX_ID, sb->id);
    struct dg_wire_create s = *spec;
    s.env.v = dg_xcalloc(spec->env.n + 1, sizeof(*s.env.v));
    s.env.n = 0;
    for (size_t i = 0; i < spec->env.n; i++) /* borrowed */
        if (strncmp(spec->env.v[i], DG_WIRE_ENV_SANDBOX_ID "=", sizeof(DG_WIRE_ENV_SANDBOX_ID)) !=
            0)
            s.env.v[s.env.n++] = spec->env.v[i];
    s.env.v[s.env.n++] = idenv;
    if (reg->max_creates && reg->creating >= reg->max_creates) {
        /* every slot busy: it waits its turn here, not in the runtime in parallel */
        sb->queued = spec_copy(&s);
        sb->qprev = reg->q_tail;
        if (reg->q_tail)
            reg->q_tail->qnext = sb;
        else
            reg->q_head = sb;
        reg->q_tail = sb;
        reg->nqueued++;
        saturation_check(reg);
    } else {
        start(reg, sb, &s);
    }
    free(s.env.v);
    return 0;
}

void wk_registry_rename(struct wk_sandbox *sb, const char *id)
{
    struct wk_registry *reg = sb->reg;
    dg_strmap_del(&reg->by_id, dg_str_c(sb->id));
    snprintf(sb->id, sizeof(sb->id), "%s", id);
    dg_strmap_put(&reg->by_id, dg_str_c(sb->id), sb);
}

/* Answer sb's create, once. */
static void answer(struct wk_sandbox *sb, const struct dg_err *err)
{
    struct wk_registry *reg = sb->reg;
    struct wk_reply to = sb->reply;
    sb->reply = (struct wk_reply){0};
    if (to.batch && reg->ev.answer)
        reg->ev.answer(reg->ev.ud, sb, to, err);
}

void wk_sandbox_created(struct wk_sandbox *sb, const struct dg_err *err)
{
    struct wk_registry *reg = sb->reg;
    sb->lat.total_us = dg_now_us() - sb->t0_us;
    if (err) {
        dg_counter_add(reg->create_failures, 1);
        dg_log(DG_LOG_WARN, "worker", "create %s (%s) failed: %s", sb->id, sb->function, err->msg);
        answer(sb, err);
        slot_release(sb);
        return;
    }
    sb->state = WK_SB_READY;
    dg_counter_add(reg->creates, 1);
    dg_histogram_observe(dg_metric_get1(reg->create_seconds, NULL), (double)sb->lat.total_us / 1e6);
    dg_log(DG_LOG_DEBUG, "worker", "sandbox %s (%s) ready at %s:%d in %llu us", sb->id,
           sb->function, sb->host, sb->port, (unsigned long long)sb->lat.total_us);
    answer(sb, NULL);
    slot_release(sb);
}

void wk_exit_reason(int64_t status, char *buf, size_t len)
{
    if (status < 0)
        snprintf(buf, len, "killed by signal %lld (%s)", (long long)-status,
                 strsignal((int)-status));
    else
        snprintf(buf, len, "exited with status %lld", (long long)status);
}

void wk_sandbox_exited(struct wk_sandbox *sb, int64_t status, const char *reason)
{
    struct wk_registry *reg = sb->reg;
    sb->state = WK_SB_EXITED;
    sb->exit_status = status;
    if (reason && reason[0])
        snprintf(sb->exit_reason, sizeof(sb->exit_reason), "%s", reason);
    else
        wk_exit_reason(status, sb->exit_reason, sizeof(sb->exit_reason));
    dg_counter_add(reg->unexpected_exits, 1);
    dg_log(DG_LOG_WARN, "worker", "sandbox %s (%s) %s", sb->id, sb->function, sb->exit_reason);
    if (reg->ev.exited) /* the CP replaces it at once, and tells the data planes why it went */
        reg->ev.exited(reg->ev.ud, sb);
}

void wk_sandbox_stopped(struct wk_sandbox *sb)
{
    if (sb->stopped || !sb->t_delete_us)
        return;
    sb->stopped = true;
    dg_histogram_observe(sb->reg->stop_seconds, (double)(dg_now_us() - sb->t_delete_us) / 1e6);
}

void wk_sandbox_gone(struct wk_sandbox *sb)
{
    struct wk_registry *reg = sb->reg;
    if (sb->t_delete_us)
        dg_histogram_observe(reg->delete_seconds, (double)(dg_now_us() - sb->t_delete_us) / 1e6);
    if (sb->create_slot) { /* deleted while its runtime was creating it */
        sb->create_slot = false;
        reg->creating--;
    }
    dg_strmap_del(&reg->by_id, dg_str_c(sb->id));
    if (sb->prev)
        sb->prev->next = sb->next;
    else
        reg->sandboxes = sb->next;
    if (sb->next)
        sb->next->prev = sb->prev;
    reg->n--;
    free(sb->function);
    free(sb);
    pump(reg);
}

/* Mark sb as going and have its runtime stop it (in the background). */
static void destroy(struct wk_sandbox *sb)
{
    struct wk_registry *reg = sb->reg;
    sb->state = WK_SB_DELETING;
    sb->t_delete_us = dg_now_us();
    if (sb->queued) { /* its runtime never saw it: nothing to stop */
        unqueue(reg, sb);
        spec_free(sb->queued);
        sb->queued = NULL;
        wk_sandbox_gone(sb);
        saturation_check(reg);
        return;
    }
    reg->rt->destroy(reg->rt_state, sb);
}

int wk_registry_delete(struct wk_registry *reg, struct dg_str id)
{
    struct wk_sandbox *sb = dg_strmap_get(&reg->by_id, id);
    if (!sb || sb->state == WK_SB_DELETING)
        return -1;
    if (sb->state == WK_SB_CREATING) {
        struct dg_err e;
        dg_err_set(&e, DG_E_INVAL, "deleted while it was being created");
        answer(sb, &e);
    }
    destroy(sb);
    return 0;
}

void wk_registry_abandon(struct wk_sandbox *sb)
{
    sb->reply = (struct wk_reply){0};
    if (sb->state == WK_SB_CREATING || sb->state == WK_SB_READY)
        destroy(sb);
}

void wk_registry_stop(struct wk_registry *reg)
{
    reg->stopping = true; /* what waits is dropped, not started */
    /* sandboxes belong to this worker's lifetime */
    for (struct wk_sandbox *sb = reg->sandboxes, *next; sb; sb = next) {
        next = sb->next;
        if (sb->state != WK_SB_DELETING)
            destroy(sb);
    }
    if (reg->hurrying) /* a second signal came before the sandboxes were stopped */
        wk_registry_hurry(reg);
    if (reg->rt->deinit)
        reg->rt->deinit(reg->rt_state);
}

void wk_registry_hurry(struct wk_registry *reg)
{
    reg->hurrying = true;
    if (!reg->rt->hurry)
        return;
    for (struct wk_sandbox *sb = reg->sandboxes; sb; sb = sb->next)
        reg->rt->hurry(reg->rt_state, sb);
}
