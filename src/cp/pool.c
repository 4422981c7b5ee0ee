/*
 * pool.c: the control plane's side of pre-created sandboxes (src/worker/prewarm.c). Once a
 * second the leader works out how many sandboxes of each function the workers should keep
 * created but not started:
 *
 *   the registration's `prewarm`, plus what the autoscaler expects the function to need
 *   again beyond the sandboxes it has (cp_as_expected_scale: the peak of its stable window),
 *   at most what its upper bound leaves room for,
 *
 * spread over the schedulable workers (from a worker picked by the function's name, one each
 * in turn), and sends each worker its whole table (PUT /v1/prewarm, dg_wire_pool) when it
 * changed or the worker restarted. A worker never sent a table keeps no pool; an empty table
 * goes only to a worker that had a non-empty one.
 *
 * The walk skips a function without `prewarm` and without sandboxes at once (no traffic in
 * its window: scale to zero waits for an empty window), so an idle registry costs a pointer
 * chase per function per second.
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"
#include "scaling.h"

#define POOL_PERIOD_MS 1000

static uint64_t next_ms;
static bool resend; /* a table was not delivered: every worker's goes again */

static uint64_t fnv(const char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

int cp_pool_want(const struct cp_fn *f)
{
    int have = (int)(f->ready + f->creating);
    if (f->deleted || (f->spec.prewarm == 0 && have == 0))
        return 0;
    int predicted = cp_as_expected_scale(&f->as, &f->ast) - have;
    int64_t want = (int64_t)f->spec.prewarm + (predicted > 0 ? predicted : 0);
    int64_t room = (int64_t)f->spec.upper_bound - have; /* never more than may ever run */
    want = DG_MIN(want, DG_MAX(room, 0));
    return (int)DG_MIN(want, DG_WIRE_POOL_MAX);
}

static void sent(struct dg_http_creq *q, const struct dg_http_resp *resp, const struct dg_err *err,
                 void *ud)
{
    char *name = ud;
    if (err || !resp || resp->status != 200) {
        dg_log(DG_LOG_WARN, "pool", "worker %s: the pool table was not taken (%s%.*s): sent again",
               name, err ? err->msg : "", resp && !err ? (int)DG_MIN(resp->body.len, 200) : 0,
               resp && !err ? resp->body.ptr : "");
        resend = true;
    }
    free(name);
}

static void send_table(struct cp_worker *w, json_t *items)
{
    struct cp_worker_io *io = w->io;
    size_t nitems = json_array_size(items);
    json_t *body = json_pack("{so}", "items", items);
    char *s = dg_json_dumps(body);
    json_decref(body);
    size_t n = strlen(s);
    uint64_t sig = nitems == 0 ? 0
                               : fnv(w->boot ? w->boot : "", w->boot ? strlen(w->boot) : 0,
                                     fnv(s, n, 1469598103934665603ull)) |
                                     1;
    if ((sig == io->pool_sig && !resend) || (sig == 0 && io->pool_sig == 0)) {
        free(s);
        return;
    }
    io->pool_sig = sig;
    static const struct dg_http_client_cbs cbs = {.on_done = sent};
    static const struct dg_http_header json_type[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    dg_log(DG_LOG_DEBUG, "pool", "worker %s: pool table of %zu functions", w->name, nitems);
    dg_http_request(io->pool, "PUT", DG_WIRE_PATH_PREWARM, json_type, 1, s, n, &cbs,
                    dg_xstrdup(w->name));
    free(s);
}

static json_t *item_json(const struct cp_fn *f, int64_t count)
{
    const struct cp_fn_spec *spec = &f->spec;
    /* the create's spec, exactly (scaling.c's fx_create): the worker matches on it */
    char **envv = dg_xcalloc(spec->env.n + 2, sizeof(*envv));
    struct dg_strlist env = {.v = envv, .n = spec->env.n};
    if (spec->env.n)
        memcpy(envv, spec->env.v, spec->env.n * sizeof(*envv));
    char bufs[2][64];
    cp_sandbox_workload_env(spec, &env, bufs);
    struct dg_wire_pool_item it = {.spec = {.function = (char *)spec->name,
                                            .image = spec->image,
                                            .port = spec->port,
                                            .env = env,
                                            .args = spec->args,
                                            .cpu_milli = spec->cpu_milli,
                                            .memory_mib = spec->memory_mib,
                                            .no_init = spec->no_init},
                                   .count = count};
    json_t *j = dg_wire_pool_item_encode(&it);
    free(envv);
    return j;
}

void cp_pool_tick(uint64_t now_ms)
{
    if (now_ms < next_ms)
        return;
    next_ms = now_ms + POOL_PERIOD_MS;
    struct cp_core *c = &cp.core;
    size_t nw = 0;
    for (struct cp_worker *w = c->workers; w; w = w->next)
        nw += w->node.schedulable && w->io && ((struct cp_worker_io *)w->io)->pool;
    if (nw == 0)
        return;
    struct cp_worker **ws = dg_xcalloc(nw, sizeof(*ws));
    json_t **tables = dg_xcalloc(nw, sizeof(*tables));
    size_t k = 0;
    for (struct cp_worker *w = c->workers; w; w = w->next)
        if (w->node.schedulable && w->io && ((struct cp_worker_io *)w->io)->pool) {
            ws[k] = w;
            tables[k++] = json_array();
        }
    for (struct cp_fn *f = c->fns; f; f = f->next) {
        int want = cp_pool_want(f);
        f->pool_hint = NULL;
        if (want <= 0)
            continue;
        size_t first =
            (size_t)(fnv(f->spec.name, strlen(f->spec.name), 1469598103934665603ull) % nw);
        f->pool_hint = ws[first]; /* it gets one at least: placement tries it first */
        for (size_t i = 0; i < nw && (int)i < want; i++) {
            int64_t count = want / (int64_t)nw + ((int64_t)i < want % (int64_t)nw);
            json_array_append_new(tables[(first + i) % nw], item_json(f, count));
        }
    }
    for (size_t i = 0; i < nw; i++)
        send_table(ws[i], tables[i]); /* takes the table */
    resend = false;
    free(ws);
    free(tables);
}
