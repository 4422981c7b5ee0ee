/*
 * registry.c: see registry.h.
 */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "dirigent/metrics.h"

struct dp_function *dp_reg_function_find(struct dp_registry *reg, const char *name, size_t len)
{
    return dg_strmap_get(&reg->index, (struct dg_str){name, len});
}

static struct dg_metric *metric(struct dg_metric_family *fam, const char *name)
{
    return fam ? dg_metric_get1(fam, name) : NULL;
}

static void metric_remove(struct dg_metric_family *fam, const char *name)
{
    if (fam)
        dg_metric_remove(fam, (const char *const[]){name});
}

struct dp_function *dp_reg_function_get(struct dp_registry *reg, const char *name, size_t len,
                                        bool *created)
{
    struct dp_function *f = dp_reg_function_find(reg, name, len);
    if (created)
        *created = !f;
    if (f)
        return f;
    f = dg_xcalloc(1, sizeof(*f));
    f->name = dg_xstrndup(name, len);
    f->concurrency = 1;
    f->lb.rng = (reg->seed ^ (uint64_t)(uintptr_t)f) | 1;
    f->m_requests = metric(reg->f_requests, f->name);
    f->m_cold = metric(reg->f_cold, f->name);
    f->m_queue = metric(reg->f_queue, f->name);
    f->m_latency = metric(reg->f_latency, f->name);
    f->next = reg->fns;
    if (reg->fns)
        reg->fns->pprev = &f->next;
    f->pprev = &reg->fns;
    reg->fns = f;
    dg_strmap_put(&reg->index, dg_str_c(f->name), f);
    return f;
}

/* The one free of an endpoint. */
static void endpoint_free(struct dp_registry *reg, struct dp_endpoint *e)
{
    if (reg->ep_close)
        reg->ep_close(reg->ud, e);
    free(e->exit_reason);
    free(e->id);
    free(e->address);
    free(e);
}

void dp_reg_function_free(struct dp_registry *reg, struct dp_function *f)
{
    dg_strmap_del(&reg->index, dg_str_c(f->name));
    *f->pprev = f->next; /* a walk of the list was O(n) a removal: 90,000 forgotten at once */
    if (f->next)
        f->next->pprev = f->pprev;
    for (size_t i = 0; i < f->neps; i++)
        endpoint_free(reg, f->eps[i]);
    while (f->removed) {
        struct dp_endpoint *e = f->removed;
        f->removed = e->next_removed;
        endpoint_free(reg, e);
    }
    metric_remove(reg->f_requests, f->name);
    metric_remove(reg->f_cold, f->name);
    metric_remove(reg->f_queue, f->name);
    metric_remove(reg->f_latency, f->name);
    free(f->eps);
    free(f->error);
    free(f->name);
    free(f);
}

struct dp_endpoint *dp_reg_endpoint_add(struct dp_registry *reg, struct dp_function *f,
                                        const char *id, const char *address)
{
    struct dp_endpoint *e = dg_xcalloc(1, sizeof(*e));
    e->id = dg_xstrdup(id);
    e->address = dg_xstrdup(address);
    e->fn = f;
    char err[256] = "";
    if (reg->ep_open && reg->ep_open(reg->ud, e, err, sizeof(err)) < 0) {
        dg_log(DG_LOG_WARN, "api", "fn=%s endpoint %s: %s", f->name, address, err);
        free(e->id);
        free(e->address);
        free(e);
        return NULL;
    }
    f->eps = dg_xrealloc(f->eps, (f->neps + 1) * sizeof(*f->eps));
    f->eps[f->neps++] = e;
    return e;
}

void dp_reg_endpoint_remove(struct dp_registry *reg, struct dp_function *f, size_t i)
{
    struct dp_endpoint *e = f->eps[i];
    memmove(&f->eps[i], &f->eps[i + 1], (f->neps - i - 1) * sizeof(*f->eps));
    f->neps--;
    if (e->lb.in_flight == 0) {
        endpoint_free(reg, e);
        return;
    }
    e->removed = true;
    e->lb.draining = true;
    e->next_removed = f->removed;
    f->removed = e;
}

bool dp_reg_endpoint_release(struct dp_registry *reg, struct dp_endpoint *e)
{
    e->lb.in_flight--;
    if (!e->removed || e->lb.in_flight > 0)
        return false;
    struct dp_function *f = e->fn;
    for (struct dp_endpoint **pe = &f->removed; *pe; pe = &(*pe)->next_removed) {
        if (*pe == e) {
            *pe = e->next_removed;
            break;
        }
    }
    endpoint_free(reg, e);
    return true;
}

void dp_reg_deinit(struct dp_registry *reg)
{
    while (reg->fns)
        dp_reg_function_free(reg, reg->fns);
    dg_strmap_free(&reg->index);
}
