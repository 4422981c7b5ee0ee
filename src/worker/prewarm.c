/*
 * prewarm.c: the worker's pool of pre-created sandboxes (prewarm.h). Per function it keeps
 * the spec the control plane sent and the sandboxes made of it; `pump` makes what the table
 * wants, at most PREWARM_PARALLEL at a time so that refilling never takes the machine from the
 * cold starts it exists to speed up, and drops what it no longer wants. A function whose make
 * fails keeps no pool until the next table (a bad image would otherwise be retried forever).
 *
 * The pool counts what its sandboxes hold (their cgroups' memory, read by the runtime when
 * each is made): the worker advertises its memory less that, so the control plane does not
 * place on memory the pool already holds (cplink.c).
 */
#include "prewarm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/http.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/metrics.h"
#include "dirigent/strmap.h"

/* Sandboxes being made at once: each costs a `crun create` (a few ms of CPU); two overlap the
 * thread pool's rootfs step with the runtime's. */
#define PREWARM_PARALLEL 2
/* A taken sandbox is replaced this long after: the start it serves comes first, and the
 * control plane's next table (once a second, pool.c) may want fewer now (a function at its
 * upper bound): a replacement made before it would be deleted at once. */
#define PREWARM_REFILL_DELAY_MS 1200
/* Pooled sandboxes at most on one worker, whatever the tables say. */
#define PREWARM_TOTAL_MAX 512

struct pfn;

/* One pooled sandbox: the pool's header, then the sandbox (and the runtime's bytes after it). */
struct entry {
    _Alignas(max_align_t) struct wk_prewarm *pool;
    struct pfn *fn;
    struct entry *prev, *next; /* the function's */
    int64_t held;              /* bytes of memory it holds, once made */
    bool dropping;
};

#define ENTRY_SB(e)  ((struct wk_sandbox *)((e) + 1))
#define SB_ENTRY(sb) ((struct entry *)(sb)-1)

/* One function's pool. */
struct pfn {
    char *name;
    struct dg_wire_create spec; /* owned copy */
    unsigned target;            /* what the table wants */
    unsigned ready, making;     /* made (and not dropping); being made */
    bool failed;                /* a make failed: none made until the next table */
    bool in_table;              /* named by the last table */
    struct entry *entries;
    struct pfn *prev, *next;
};

struct wk_prewarm {
    uv_loop_t *loop;
    char label[96];
    unsigned run;
    uint64_t next_id;
    size_t sb_size;
    const struct wk_prewarm_ops *ops;
    void *rt;
    struct pfn *fns;
    struct dg_strmap by_name;
    unsigned making, total; /* being made; every entry (made, being made, dropping) */
    int64_t held;           /* bytes the made ones hold */
    bool stopping;
    bool capped_logged;
    bool pumping, pump_again; /* pump runs once at a time (a make may answer at once) */
    uv_timer_t refill;        /* a taken one's replacement starts after the start it served */
    struct dg_metric *hits, *misses, *made, *failures, *make_seconds;
};

static bool strlist_eq(const struct dg_strlist *a, const struct dg_strlist *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

/* `create` (a create's, with the DIRIGENT_SANDBOX_ID the registry gave it) is `pool`'s spec
 * (the CP's table, without it): the same image, port, env, args and limits. */
static bool spec_eq(const struct dg_wire_create *pool, const struct dg_wire_create *create)
{
    if (strcmp(pool->function, create->function) != 0 ||
        strcmp(pool->image ? pool->image : "", create->image ? create->image : "") != 0 ||
        pool->port != create->port || pool->cpu_milli != create->cpu_milli ||
        pool->memory_mib != create->memory_mib || pool->no_init != create->no_init ||
        !strlist_eq(&pool->args, &create->args))
        return false;
    size_t k = 0, idlen = strlen(DG_WIRE_ENV_SANDBOX_ID "=");
    for (size_t i = 0; i < create->env.n; i++) {
        if (strncmp(create->env.v[i], DG_WIRE_ENV_SANDBOX_ID "=", idlen) == 0)
            continue;
        if (k >= pool->env.n || strcmp(pool->env.v[k], create->env.v[i]) != 0)
            return false;
        k++;
    }
    return k == pool->env.n;
}

static void strlist_copy(struct dg_strlist *to, const struct dg_strlist *from)
{
    for (size_t i = 0; i < from->n; i++)
        dg_strlist_push(to, dg_xstrdup(from->v[i]));
}

static void spec_copy(struct dg_wire_create *to, const struct dg_wire_create *from)
{
    memset(to, 0, sizeof(*to));
    to->function = dg_xstrdup(from->function);
    to->image = from->image ? dg_xstrdup(from->image) : NULL;
    to->port = from->port;
    strlist_copy(&to->env, &from->env);
    strlist_copy(&to->args, &from->args);
    to->cpu_milli = from->cpu_milli;
    to->memory_mib = from->memory_mib;
    to->no_init = from->no_init;
}

static void spec_free(struct dg_wire_create *s)
{
    free(s->function);
    free(s->image);
    dg_strlist_free(&s->env);
    dg_strlist_free(&s->args);
    memset(s, 0, sizeof(*s));
}

struct wk_prewarm *wk_prewarm_new(uv_loop_t *loop, const char *label, size_t sb_size,
                                  const struct wk_prewarm_ops *ops, void *rt)
{
    struct wk_prewarm *p = dg_xcalloc(1, sizeof(*p));
    p->loop = loop;
    snprintf(p->label, sizeof(p->label), "%s", label);
    /* a restarted worker's containers never share a name with its predecessor's */
    p->run = (unsigned)((dg_wall_ms() / 10) & 0xfffff);
    p->sb_size = sb_size;
    p->ops = ops;
    p->rt = rt;
    uv_timer_init(loop, &p->refill);
    p->refill.data = p;
    uv_unref((uv_handle_t *)&p->refill);
    return p;
}

static void unlink_entry(struct entry *e)
{
    struct pfn *f = e->fn;
    if (e->prev)
        e->prev->next = e->next;
    else
        f->entries = e->next;
    if (e->next)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

/* A function nobody wants any more, with nothing of it left: it goes. */
static void fn_maybe_free(struct wk_prewarm *p, struct pfn *f)
{
    if (f->in_table || f->entries)
        return;
    dg_strmap_del(&p->by_name, dg_str_c(f->name));
    if (f->prev)
        f->prev->next = f->next;
    else
        p->fns = f->next;
    if (f->next)
        f->next->prev = f->prev;
    spec_free(&f->spec);
    free(f->name);
    free(f);
}

static void drop(struct wk_prewarm *p, struct entry *e)
{
    if (e->dropping)
        return;
    e->dropping = true;
    struct wk_sandbox *sb = ENTRY_SB(e);
    if (sb->state == WK_SB_READY) {
        e->fn->ready--;
        p->held -= e->held;
    } else if (sb->state == WK_SB_CREATING) {
        e->fn->making--;
        p->making--;
    }
    sb->state = WK_SB_DELETING;
    p->ops->drop(p->rt, sb);
}

static void make_one(struct wk_prewarm *p, struct pfn *f)
{
    struct entry *e = dg_xcalloc(1, sizeof(*e) + sizeof(struct wk_sandbox) + p->sb_size);
    e->pool = p;
    e->fn = f;
    e->next = f->entries;
    if (f->entries)
        f->entries->prev = e;
    f->entries = e;
    struct wk_sandbox *sb = ENTRY_SB(e);
    snprintf(sb->id, sizeof(sb->id), "%.64s-p%x-%llu", p->label, p->run,
             (unsigned long long)++p->next_id);
    sb->function = dg_xstrdup(f->name);
    sb->state = WK_SB_CREATING;
    sb->t0_us = dg_now_us();
    f->making++;
    p->making++;
    p->total++;
    p->ops->make(p->rt, sb, &f->spec);
}

/* Make what is missing (a few at a time, functions in turn) and drop what is beyond. */
static void pump_once(struct wk_prewarm *p)
{
    for (struct pfn *f = p->fns, *next; f; f = next) {
        next = f->next;
        unsigned want = f->in_table && !f->failed ? f->target : 0;
        /* beyond the target: the made ones go first (the ones being made finish, then go) */
        for (struct entry *e = f->entries, *en; e && f->ready + f->making > want; e = en) {
            en = e->next;
            if (!e->dropping && ENTRY_SB(e)->state == WK_SB_READY)
                drop(p, e);
        }
        fn_maybe_free(p, f);
    }
    bool progress = true;
    while (progress && p->making < PREWARM_PARALLEL) {
        progress = false;
        for (struct pfn *f = p->fns; f && p->making < PREWARM_PARALLEL; f = f->next) {
            if (!f->in_table || f->failed || f->ready + f->making >= f->target)
                continue;
            if (p->total >= PREWARM_TOTAL_MAX) {
                if (!p->capped_logged)
                    dg_log(DG_LOG_WARN, "prewarm",
                           "%u pooled sandboxes: the most one worker keeps; the tables want more",
                           p->total);
                p->capped_logged = true;
                return;
            }
            make_one(p, f);
            progress = true;
        }
    }
}

static void pump(struct wk_prewarm *p)
{
    if (p->pumping) {
        p->pump_again = true;
        return;
    }
    p->pumping = true;
    do {
        p->pump_again = false;
        if (!p->stopping)
            pump_once(p);
    } while (p->pump_again);
    p->pumping = false;
}

void wk_prewarm_set(struct wk_prewarm *p, const struct dg_wire_pool *table)
{
    if (!p || p->stopping)
        return;
    for (struct pfn *f = p->fns; f; f = f->next)
        f->in_table = false;
    for (size_t i = 0; i < table->nitems; i++) {
        const struct dg_wire_pool_item *it = &table->items[i];
        struct pfn *f = dg_strmap_get(&p->by_name, dg_str_c(it->spec.function));
        if (!f) {
            if (it->count == 0)
                continue;
            f = dg_xcalloc(1, sizeof(*f));
            f->name = dg_xstrdup(it->spec.function);
            spec_copy(&f->spec, &it->spec);
            dg_strmap_put(&p->by_name, dg_str_c(f->name), f);
            f->next = p->fns;
            if (p->fns)
                p->fns->prev = f;
            p->fns = f;
        } else if (!spec_eq(&f->spec, &it->spec)) { /* (a table's spec has no sandbox id) */
            /* the function changed (an update): what was made of the old spec goes */
            spec_free(&f->spec);
            spec_copy(&f->spec, &it->spec);
            for (struct entry *e = f->entries; e; e = e->next)
                if (!e->dropping && ENTRY_SB(e)->state == WK_SB_READY)
                    drop(p, e);
        }
        if (f->target != (unsigned)it->count)
            dg_log(DG_LOG_INFO, "prewarm", "fn=%s pool %u -> %lld", f->name, f->target,
                   (long long)it->count);
        f->target = (unsigned)it->count;
        f->in_table = true;
        f->failed = false; /* a new table: a failed function is tried again */
    }
    for (struct pfn *f = p->fns; f; f = f->next)
        if (!f->in_table && f->target) {
            dg_log(DG_LOG_INFO, "prewarm", "fn=%s pool %u -> 0", f->name, f->target);
            f->target = 0;
        }
    p->capped_logged = false;
    pump(p);
}

static void on_refill(uv_timer_t *t)
{
    pump(t->data);
}

struct wk_sandbox *wk_prewarm_take(struct wk_prewarm *p, const struct dg_wire_create *spec)
{
    if (!p || p->stopping)
        return NULL;
    struct pfn *f = dg_strmap_get(&p->by_name, dg_str_c(spec->function));
    struct entry *e = NULL;
    if (f && spec_eq(&f->spec, spec))
        for (e = f->entries; e; e = e->next)
            if (!e->dropping && ENTRY_SB(e)->state == WK_SB_READY)
                break;
    if (!e) {
        if (f && f->target && p->misses)
            dg_counter_add(p->misses, 1);
        return NULL;
    }
    unlink_entry(e);
    f->ready--;
    p->held -= e->held;
    p->total--;
    if (p->hits)
        dg_counter_add(p->hits, 1);
    struct wk_sandbox *sb = ENTRY_SB(e);
    dg_log(DG_LOG_DEBUG, "prewarm", "fn=%s: pooled %s taken (%u left, %u being made)", f->name,
           sb->id, f->ready, f->making);
    /* its replacement, later (PREWARM_REFILL_DELAY_MS) */
    if (!uv_is_active((uv_handle_t *)&p->refill))
        uv_timer_start(&p->refill, on_refill, PREWARM_REFILL_DELAY_MS, 0);
    return sb;
}

void wk_prewarm_release(struct wk_sandbox *psb)
{
    free(psb->function);
    free(SB_ENTRY(psb));
}

void wk_prewarm_made(struct wk_sandbox *psb, int64_t held_bytes, const struct dg_err *err)
{
    struct entry *e = SB_ENTRY(psb);
    struct wk_prewarm *p = e->pool;
    struct pfn *f = e->fn;
    if (psb->state != WK_SB_CREATING)
        return; /* dropped while being made: _gone follows */
    f->making--;
    p->making--;
    if (err) {
        psb->state = WK_SB_DELETING;
        e->dropping = true;
        if (!f->failed)
            dg_log(DG_LOG_WARN, "prewarm",
                   "fn=%s: pre-creating a sandbox failed (no pool for it "
                   "until the control plane's next table): %s",
                   f->name, err->msg);
        f->failed = true;
        if (p->failures)
            dg_counter_add(p->failures, 1);
        pump(p);
        return;
    }
    psb->state = WK_SB_READY;
    e->held = held_bytes > 0 ? held_bytes : 0;
    p->held += e->held;
    f->ready++;
    if (p->made) {
        dg_counter_add(p->made, 1);
        dg_counter_add(p->make_seconds, (double)(dg_now_us() - psb->t0_us) / 1e6);
    }
    dg_log(DG_LOG_DEBUG, "prewarm", "fn=%s: %s made in %.1f ms, holds %lld KiB", f->name, psb->id,
           (double)(dg_now_us() - psb->t0_us) / 1000.0, (long long)(e->held >> 10));
    pump(p);
}

void wk_prewarm_gone(struct wk_sandbox *psb)
{
    struct entry *e = SB_ENTRY(psb);
    struct wk_prewarm *p = e->pool;
    struct pfn *f = e->fn;
    unlink_entry(e);
    p->total--;
    free(psb->function);
    free(e);
    if (!p->pumping) /* else pump_once, which walks the functions, frees it */
        fn_maybe_free(p, f);
    pump(p);
}

void wk_prewarm_stop(struct wk_prewarm *p)
{
    if (!p || p->stopping)
        return;
    p->stopping = true;
    uv_close((uv_handle_t *)&p->refill, NULL);
    unsigned n = 0;
    for (struct pfn *f = p->fns, *fnext; f; f = fnext) {
        fnext = f->next;
        f->in_table = false;
        for (struct entry *e = f->entries, *en; e; e = en) {
            en = e->next;
            if (!e->dropping) {
                n++;
                drop(p, e); /* may free f once its last entry is gone */
            }
        }
    }
    if (n)
        dg_log(DG_LOG_INFO, "prewarm", "stopping: %u pooled sandboxes removed", n);
}

void wk_prewarm_free(struct wk_prewarm *p)
{
    if (!p)
        return;
    for (struct pfn *f = p->fns, *next; f; f = next) { /* only what never had an entry */
        next = f->next;
        spec_free(&f->spec);
        free(f->name);
        free(f);
    }
    dg_strmap_free(&p->by_name);
    free(p);
}

int64_t wk_prewarm_held_mib(const struct wk_prewarm *p)
{
    return p ? (p->held + (1 << 20) - 1) >> 20 : 0;
}

/* ---- the API and metrics ---------------------------------------------------------------- */

static void api_set(struct dg_http_req *r, void *ud)
{
    struct wk_prewarm *p = ud;
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_pool m;
    struct dg_err err = {0};
    if (dg_wire_pool_parse(body.ptr, body.len, &m, &err) < 0) {
        dg_http_respond_text(r, 400, "prewarm: %s", err.msg);
        return;
    }
    dg_log(DG_LOG_DEBUG, "prewarm", "the control plane's table: %zu functions%s", m.nitems,
           p ? "" : " (no pool on this runtime)");
    if (p)
        wk_prewarm_set(p, &m);
    dg_http_respond_text(r, 200,
                         p ? "pool table of %zu functions"
                           : "no pool on this runtime "
                             "(%zu functions ignored)",
                         m.nitems);
    dg_wire_pool_free(&m);
}

static double gauge_ready(void *ud)
{
    const struct wk_prewarm *p = ud;
    double n = 0;
    for (const struct pfn *f = p->fns; f; f = f->next)
        n += f->ready;
    return n;
}

static double gauge_held(void *ud)
{
    return (double)((const struct wk_prewarm *)ud)->held;
}

void wk_prewarm_mount(struct dg_http_server *s, struct wk_prewarm *p, struct dg_metrics *m)
{
    dg_http_route(s, "PUT", DG_WIRE_PATH_PREWARM, api_set, p, DG_HTTP_AUTH_CP);
    if (!p)
        return;
    p->hits =
        dg_metric_get1(dg_metrics_counter(m, "dg_worker_prewarm_hits_total",
                                          "Creates that started a pre-created sandbox.", NULL),
                       NULL);
    p->misses = dg_metric_get1(
        dg_metrics_counter(m, "dg_worker_prewarm_misses_total",
                           "Creates of a function with a pool that found none made.", NULL),
        NULL);
    p->made = dg_metric_get1(
        dg_metrics_counter(m, "dg_worker_prewarm_made_total", "Sandboxes pre-created.", NULL),
        NULL);
    p->make_seconds = dg_metric_get1(
        dg_metrics_counter(m, "dg_worker_prewarm_make_seconds_total",
                           "Time from the start of a pre-creation to its container created "
                           "(sum over dg_worker_prewarm_made_total).",
                           NULL),
        NULL);
    p->failures = dg_metric_get1(dg_metrics_counter(m, "dg_worker_prewarm_failures_total",
                                                    "Pre-creations that failed.", NULL),
                                 NULL);
    dg_metrics_gauge_fn(m, "dg_worker_prewarm_ready", "Pre-created sandboxes ready to start.",
                        gauge_ready, p);
    dg_metrics_gauge_fn(m, "dg_worker_prewarm_held_bytes",
                        "Memory the pre-created sandboxes hold (their cgroups').", gauge_held, p);
}
