/*
 * api.c: the control plane's two HTTP servers, as an adapter: each handler decodes its
 * request (form or JSON), turns it into an event of the core (cp_core.h) and answers from the
 * registry; a follower forwards the user API to the leader; the start-up restore reads the
 * store and asks the workers for their sandboxes (reconstruction).
 *
 * Registration server (registrationServer, 9091), for users and InVitro:
 *   POST / or /registerService   the original's form (function.h) -> 200 with the data-plane
 *                                proxy addresses joined by ';' (or loadBalancerAddress)
 *   GET  /check?name=NAME        200 registered, 404 not
 *   GET  /v1/functions[/NAME]    list / one: name, image, state, ready, desired, ...,
 *                                error (the last failure: a failed create, or a sandbox
 *                                that exited by itself such as an OOM kill; or null)
 *   POST /v1/functions           JSON with the form's field names
 *   PUT  /v1/functions/NAME      {"scaling_lower_bound":N,"scaling_upper_bound":M}
 *   DELETE /v1/functions/NAME    scale to zero, then forget
 *
 * Internal API (port, 9090), for workers and data planes:
 *   POST /v1/workers     {"name","address"}           register, and heartbeat (every 5 s)
 *   POST /v1/dataplanes  {"name","api","proxy"}       register, and heartbeat; a new one
 *                                                     gets every function and endpoint list
 *   POST /v1/metrics     {"dataplane","functions":[{"name","inflight"}]}
 *   POST /v1/sandboxes/exited {"function","id","reason"} a sandbox died on its own
 *   GET  /v1/status
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async.h"
#include "cp.h"
#include "function_json.h"
#include "haproxy.h"
#include "scaling.h"
#include "dirigent/auth.h"
#include "dirigent/form.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"

static struct cp_fn *cp_fn_find(struct dg_str name)
{
    return cp_core_fn(&cp.core, name);
}

/* ---- functions -------------------------------------------------------------------------- */

/* A function as the API shows it: its spec, its sandboxes, its state (fn_error.h) and its last
 * create failure: "error" is the reason or null; with one, "error_worker", "error_at_ms" (wall
 * clock, Unix ms), "error_age_ms" (by the CP's monotonic clock: no skew for the CLI) and
 * "error_kind" ("create", "unschedulable", or "exit": a sandbox exited by itself, e.g.
 * "sandbox ID OOM-killed: memory limit 64 MiB"). */
static void fn_view(const struct cp_fn *f, struct dg_wire_fn_view *v)
{
    const struct cp_fn_error *e = cp_fn_error_of(f);
    *v = (struct dg_wire_fn_view){
        .name = (char *)f->spec.name,
        .image = f->spec.image,
        .port = f->spec.port,
        .state = (char *)cp_fn_state(e, f->ready, f->creating, f->desired),
        .ready = f->ready,
        .desired = f->desired,
        .creating = f->creating,
        .lower_bound = f->spec.lower_bound,
        .upper_bound = f->spec.upper_bound,
        .requested_cpu = f->spec.cpu_milli,
        .requested_memory = f->spec.memory_mib,
        .cold_start_sweep = f->spec.cold_start_sweep,
        .container_concurrency = f->spec.concurrency,
        .prewarm = f->spec.prewarm,
    };
    if (!e->set)
        return;
    v->has_error = true;
    v->error = (char *)e->reason;
    v->error_worker = e->worker[0] ? (char *)e->worker : NULL;
    v->error_at_ms = (int64_t)e->wall_ms;
    v->error_age_ms = (int64_t)cp_fn_error_age_ms(e, uv_now(cp.loop));
    v->error_kind = (char *)cp_fn_error_kind(e);
}

static json_t *fn_json(const struct cp_fn *f)
{
    struct dg_wire_fn_view v;
    fn_view(f, &v);
    return dg_wire_fn_view_encode(&v);
}

static void registration_reply(struct dg_http_req *r)
{
    struct dg_buf b = {0};
    if (cp.lb_address && cp.lb_address[0]) {
        dg_buf_puts(&b, cp.lb_address);
    } else {
        for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
            if (b.len)
                dg_buf_puts(&b, ";");
            dg_buf_puts(&b, d->proxy);
        }
    }
    dg_http_respond(r, 200, "text/plain", b.data ? b.data : "", b.len);
    dg_buf_free(&b);
}

/* A registration waiting for its write to be durable (in cp.pending_regs under its name:
 * looked up and removed without a walk, many thousands may wait at once). */
struct pending_reg {
    struct cp_fn_spec spec;
    struct dg_http_req *r; /* NULL once the client left */
};

static bool name_pending(const char *name)
{
    return dg_strmap_get(&cp.pending_regs, dg_str_c(name)) != NULL;
}

static void reg_aborted(struct dg_http_req *r, void *ud)
{
    struct pending_reg *p = ud;
    p->r = NULL; /* registered all the same once durable: only nobody hears it */
}

/* The push carrying a new function was answered (or the CP stops: still registered). */
static void reg_pushed(void *ud, bool pushed)
{
    struct pending_reg *p = ud;
    if (pushed && p->r) { /* at shutdown (!pushed) the loop and its requests are gone */
        dg_http_req_on_abort(p->r, NULL, NULL);
        registration_reply(p->r);
    }
    free(p);
}

static void reg_stored(void *ud, const struct dg_err *err)
{
    struct pending_reg *p = ud;
    dg_strmap_del(&cp.pending_regs, dg_str_c(p->spec.name));
    if (err) {
        if (p->r)
            dg_http_respond_text(p->r, 503,
                                 "registration: function '%s' not registered: the store failed "
                                 "(%s); try again",
                                 p->spec.name, err->msg);
        cp_fn_spec_free(&p->spec);
        free(p);
        return;
    }
    struct cp_fn *f = cp_core_fn_register(&cp.core, &p->spec);
    dg_counter_add(cp.m_registrations, 1);
    dg_log(DG_LOG_INFO, "api", "registered fn=%s image=%s bounds=%d..%d", f->spec.name,
           f->spec.image, f->spec.lower_bound, f->spec.upper_bound);
    /* answered once the DPs have it: a caller that invokes at once (InVitro) is not told 404 */
    cp_after_push(reg_pushed, p);
}

/* Scaling bounds within maxSandboxesPerFunction: 0, or -1 with the 400 text in err naming the
 * field and the limit. An upper bound of INT32_MAX (the original's "unbounded") is the quota. */
static int bounds_check(int64_t lo, int64_t hi, struct dg_err *err)
{
    unsigned max = cp_core_max_per_function(&cp.core);
    if (!max)
        return 0;
    if (lo > max)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'scaling_lower_bound': %lld exceeds maxSandboxesPerFunction %u "
                          "(control plane config)",
                          (long long)lo, max);
    if (hi > max && hi != INT32_MAX)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'scaling_upper_bound': %lld exceeds maxSandboxesPerFunction %u "
                          "(control plane config; %d means up to it)",
                          (long long)hi, max, INT32_MAX);
    return 0;
}

/* Registered functions and those waiting for their write. */
static unsigned functions_held(void)
{
    return cp.core.nfns + (unsigned)cp.pending_regs.n;
}

/* Register from a parsed form; answers the request once the registration is durable. */
static void register_form(struct dg_http_req *r, const struct dg_form *form)
{
    struct cp_fn_spec spec;
    struct dg_err err = {0};
    if (cp_fn_spec_from_form(form, &spec, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    if (bounds_check(spec.lower_bound, spec.upper_bound, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: function '%s' not registered: %s", spec.name,
                             err.msg);
        cp_fn_spec_free(&spec);
        return;
    }
    struct cp_fn *old = cp_core_fn_any(&cp.core, dg_str_c(spec.name));
    if (old && old->deleted) {
        dg_http_respond_text(r, 409,
                             "registration: function '%s' is still being deleted (its "
                             "sandboxes drain): try again in a moment",
                             spec.name);
        cp_fn_spec_free(&spec);
        return;
    }
    if (cp_fn_find(dg_str_c(spec.name)) || name_pending(spec.name)) {
        dg_http_respond_text(r, 409, "registration: function '%s' is already registered",
                             spec.name);
        cp_fn_spec_free(&spec);
        return;
    }
    unsigned maxf = cp.core.q.max_functions;
    if (maxf && functions_held() >= maxf) {
        dg_http_respond_text(r, 429,
                             "registration: function '%s' not registered: maxFunctions %u "
                             "reached (control plane config); delete functions or raise it",
                             spec.name, maxf);
        cp_fn_spec_free(&spec);
        return;
    }
    struct pending_reg *p = dg_xcalloc(1, sizeof(*p));
    p->spec = spec;
    p->r = r;
    dg_strmap_put(&cp.pending_regs, dg_str_c(p->spec.name), p);
    dg_http_req_on_abort(r, reg_aborted, p);
    dg_auth_audit(r, "register function %s image %s", spec.name, spec.image);
    json_t *j = cp_fn_spec_to_json(&spec);
    char *value = dg_json_dumps(j);
    json_decref(j);
    cp_store_put(cp.store, "function", spec.name, value, reg_stored, p);
    free(value);
}

static void api_register(struct dg_http_req *r, void *ud)
{
    struct dg_form form;
    struct dg_err err = {0};
    if (dg_form_parse(dg_http_req_body(r), &form, &err) < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    register_form(r, &form);
    dg_form_free(&form);
}

/* POST /v1/functions: JSON with the form's field names; arrays are repeated fields. */
static void api_create_json(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 || !json_is_object(j)) {
        if (!err.msg[0])
            dg_err_set(&err, DG_E_INVAL, "expected a JSON object");
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        if (j)
            json_decref(j);
        return;
    }
    struct dg_form form;
    int rc = cp_fn_form_from_json(j, &form, &err);
    json_decref(j);
    if (rc < 0) {
        dg_http_respond_text(r, 400, "registration: %s", err.msg);
        return;
    }
    register_form(r, &form);
    dg_form_free(&form);
}

static void api_check(struct dg_http_req *r, void *ud)
{
    struct dg_form q;
    struct dg_err err = {0};
    if (dg_form_parse(dg_http_req_query(r), &q, &err) < 0) {
        dg_http_respond_text(r, 400, "check: %s", err.msg);
        return;
    }
    const char *name = dg_form_get(&q, "name", 0);
    if (!name)
        dg_http_respond_text(r, 400, "check: query parameter 'name' is required (?name=NAME)");
    else if (cp_fn_find(dg_str_c(name)))
        dg_http_respond_text(r, 200, "function '%s' is registered", name);
    else
        dg_http_respond_text(r, 404, "function '%s' is not registered", name);
    dg_form_free(&q);
}

static struct cp_fn *fn_param(struct dg_http_req *r)
{
    struct dg_str n = dg_http_req_param(r, "name");
    struct cp_fn *f = cp_fn_find(n);
    if (!f)
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)n.len, n.ptr);
    return f;
}

static void api_fn_list(struct dg_http_req *r, void *ud)
{
    json_t *a = json_array();
    for (struct cp_fn *f = cp.core.fns; f; f = f->next)
        if (!f->deleted)
            json_array_append_new(a, fn_json(f));
    dg_http_respond_json(r, 200, a);
}

static void api_fn_get(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (f)
        dg_http_respond_json(r, 200, fn_json(f));
}

struct bounds_update {
    char name[CP_NAME_MAX + 1];
    int lo, hi;
    struct dg_http_req *r;
};

static void update_aborted(struct dg_http_req *r, void *ud)
{
    ((struct bounds_update *)ud)->r = NULL;
}

static void update_stored(void *ud, const struct dg_err *err)
{
    struct bounds_update *u = ud;
    struct cp_fn *f = cp_fn_find(dg_str_c(u->name));
    if (err || !f) {
        if (u->r)
            dg_http_respond_text(u->r, err ? 503 : 404, "update: function '%s' %s%s%s", u->name,
                                 err ? "not updated: the store failed (" : "is not registered",
                                 err ? err->msg : "", err ? ")" : "");
        free(u);
        return;
    }
    cp_core_fn_set_bounds(&cp.core, f, u->lo, u->hi);
    if (u->r)
        dg_http_respond_json(u->r, 200, fn_json(f));
    free(u);
}

static void api_fn_update(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (!f)
        return;
    struct dg_str body = dg_http_req_body(r);
    json_t *j;
    struct dg_err err = {0};
    int64_t lo = f->spec.lower_bound, hi = f->spec.upper_bound;
    if (dg_json_parse(body.ptr, body.len, &j, &err) < 0 ||
        dg_json_get_int(j, "scaling_lower_bound", false, 0, INT32_MAX, &lo, &err) < 0 ||
        dg_json_get_int(j, "scaling_upper_bound", false, 0, INT32_MAX, &hi, &err) < 0) {
        json_decref(j);
        dg_http_respond_text(r, 400, "update: %s", err.msg);
        return;
    }
    json_decref(j);
    if (lo > hi) {
        dg_http_respond_text(r, 400,
                             "update: field 'scaling_lower_bound': expected at most "
                             "scaling_upper_bound (%lld), got %lld",
                             (long long)hi, (long long)lo);
        return;
    }
    if (bounds_check(lo, hi, &err) < 0) {
        dg_http_respond_text(r, 400, "update: function '%s' not updated: %s", f->spec.name,
                             err.msg);
        return;
    }
    /* durable first, then applied and answered */
    struct bounds_update *u = dg_xcalloc(1, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", f->spec.name);
    u->lo = (int)lo;
    u->hi = (int)hi;
    u->r = r;
    dg_http_req_on_abort(r, update_aborted, u);
    dg_auth_audit(r, "update function %s bounds %d..%d", u->name, u->lo, u->hi);
    struct cp_fn_spec copy = f->spec;
    copy.lower_bound = (int)lo;
    copy.upper_bound = (int)hi;
    json_t *js = cp_fn_spec_to_json(&copy);
    char *value = dg_json_dumps(js);
    json_decref(js);
    cp_store_put(cp.store, "function", f->spec.name, value, update_stored, u);
    free(value);
}

struct fn_delete {
    char name[CP_NAME_MAX + 1];
    struct dg_http_req *r;
};

static void delete_aborted(struct dg_http_req *r, void *ud)
{
    ((struct fn_delete *)ud)->r = NULL;
}

static void delete_stored(void *ud, const struct dg_err *err)
{
    struct fn_delete *d = ud;
    struct cp_fn *f = cp_fn_find(dg_str_c(d->name));
    if (err) {
        if (d->r)
            dg_http_respond_text(d->r, 503,
                                 "delete: function '%s' not deleted: the store failed (%s)",
                                 d->name, err->msg);
    } else {
        if (d->r)
            dg_http_respond_text(d->r, 200, "function '%s' deleted", d->name);
        if (f)
            cp_core_fn_delete(&cp.core, f);
    }
    free(d);
}

static void api_fn_delete(struct dg_http_req *r, void *ud)
{
    struct cp_fn *f = fn_param(r);
    if (!f)
        return;
    if (!cp.recon.done && cp.recon.waiting > 0) {
        /* its sandboxes are not all known yet: a delete now would miss the drain of those
         * listed later (a request running on one would get a 502) */
        dg_http_respond_text(r, 503,
                             "delete: function '%s' not deleted: this control plane is "
                             "reconstructing its state after a restart (its workers are "
                             "listing their sandboxes); retry in a few seconds",
                             f->spec.name);
        return;
    }
    struct fn_delete *d = dg_xcalloc(1, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", f->spec.name);
    d->r = r;
    dg_http_req_on_abort(r, delete_aborted, d);
    dg_auth_audit(r, "delete function %s", d->name);
    cp_store_del(cp.store, "function", f->spec.name, delete_stored, d);
}

/* ---- workers, data planes, metrics ------------------------------------------------------ */

/* With authentication a node acts under its credential's name only (a worker cannot register
 * as another, nor a data plane report another's metrics): else 403 naming both. */
static bool node_is(struct dg_http_req *r, const char *what, const char *name)
{
    const char *id;
    if (!cp.auth_on || dg_http_req_identity(r, &id) != DG_AUTH_NODE || strcmp(id, name) == 0)
        return true;
    dg_auth_audit(r, "refused 403 %s '%.80s': the credential is node.%s", what, name, id);
    dg_http_respond_text(r, 403,
                         "%s: credential node.%s cannot act as %s '%.80s': a node registers and "
                         "reports under its own credential's name",
                         what, id, what, name);
    return false;
}

static struct cp_worker *worker_named(const char *name)
{
    return cp_core_worker(&cp.core, name);
}

/* Whether node credential `id` speaks for worker `w`: its own name, or (emulatedNodes: one
 * process registers BASE-0..BASE-N-1 and reports exits through BASE-0) one of its siblings:
 * BASE-<digits>, registered by the same process (the same address and boot as BASE-0's). The
 * name alone is not enough: separate workers named node-0, node-1 are common. */
static bool node_speaks_for(const char *id, const struct cp_worker *w)
{
    size_t n = strlen(id);
    if (strcmp(id, w->name) == 0)
        return true;
    if (n < 3 || strcmp(id + n - 2, "-0") != 0 || strncmp(w->name, id, n - 1) != 0 ||
        !w->name[n - 1] || strspn(w->name + n - 1, "0123456789") != strlen(w->name + n - 1))
        return false;
    const struct cp_worker *first = worker_named(id);
    return first && first->boot && w->boot && strcmp(first->boot, w->boot) == 0 &&
           strcmp(first->address, w->address) == 0;
}

/* With authentication, one node credential is one node: a worker's cannot also register a
 * data plane under its name (it would get every endpoint list and the callers), nor a data
 * plane's a worker (creates, sandboxes): 403 when the name is already the other kind's. */
static bool node_kind_ok(struct dg_http_req *r, const char *what, const char *name, bool taken,
                         const char *other)
{
    const char *id;
    if (!cp.auth_on || dg_http_req_identity(r, &id) != DG_AUTH_NODE || !taken)
        return true;
    dg_auth_audit(r, "refused 403 %s '%s': the name is a registered %s's", what, name, other);
    dg_http_respond_text(r, 403,
                         "%s: credential node.%s is registered as a %s: one node credential "
                         "cannot act as a worker and a data plane (give each its own name)",
                         what, id, other);
    return false;
}

/* A worker's listing in parts (dg_wire_worker_beat's listing fields: one part per beat, in
 * order): the parts so far, until the last gives the core the whole list. Per worker name;
 * a part out of order drops it (the worker starts a new one after its last part). */
struct listing {
    char *worker;
    int64_t id, got, parts;
    struct dg_wire_sandbox_ref *refs; /* owned: moved out of the parts' messages */
    size_t n, cap;
};
static struct dg_strmap listings; /* worker name -> struct listing */

static void listing_free(struct listing *l)
{
    if (!l)
        return;
    dg_strmap_del(&listings, dg_str_c(l->worker));
    for (size_t i = 0; i < l->n; i++)
        dg_wire_sandbox_ref_free(&l->refs[i]);
    free(l->refs);
    free(l->worker);
    free(l);
}

/* Take part m of a listing in parts: its sandboxes are moved into the listing. Returns the
 * listing when m was its last part and every part came (the caller frees it), else NULL. */
static struct listing *listing_part(struct dg_wire_worker_beat *m)
{
    struct listing *l = dg_strmap_get(&listings, dg_str_c(m->name));
    if (m->listing_part == 0 || (l && (l->id != m->listing || l->got != m->listing_part))) {
        listing_free(l);
        l = NULL;
        if (m->listing_part != 0) /* a part is missing: wait for the next listing */
            return NULL;
    }
    if (!l) {
        l = dg_xcalloc(1, sizeof(*l));
        l->worker = dg_xstrdup(m->name);
        l->id = m->listing;
        l->parts = m->listing_parts;
        dg_strmap_put(&listings, dg_str_c(l->worker), l);
    }
    if (l->n + m->nsandboxes > DG_WIRE_LIST_MAX || l->parts != m->listing_parts) {
        dg_log(DG_LOG_WARN, "api",
               "worker %s: listing %lld dropped (over %d sandboxes, or its "
               "parts changed)",
               m->name, (long long)m->listing, DG_WIRE_LIST_MAX);
        listing_free(l);
        return NULL;
    }
    if (l->n + m->nsandboxes > l->cap) {
        l->cap = DG_MAX(2 * l->cap, l->n + m->nsandboxes);
        l->refs = dg_xrealloc(l->refs, l->cap * sizeof(*l->refs));
    }
    for (size_t i = 0; i < m->nsandboxes; i++) { /* moved: m frees nothing of them */
        l->refs[l->n++] = m->sandboxes[i];
        m->sandboxes[i] = (struct dg_wire_sandbox_ref){0};
    }
    l->got++;
    return m->listing_part == l->parts - 1 ? l : NULL;
}

static void api_worker(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_worker_beat m;
    struct dg_err err = {0};
    if (dg_wire_worker_beat_parse(body.ptr, body.len, &m, &err) < 0) {
        dg_http_respond_text(r, 400, "worker: %s", err.msg);
        return;
    }
    if (!node_is(r, "worker", m.name) ||
        !node_kind_ok(r, "worker", m.name, cp_core_dp(&cp.core, m.name) != NULL, "data plane")) {
        dg_wire_worker_beat_free(&m);
        return;
    }
    {
        struct cp_worker *old = worker_named(m.name);
        bool moved = old && (strcmp(old->address, m.address) != 0 ||
                             (m.boot && (!old->boot || strcmp(old->boot, m.boot) != 0)));
        if (!old || moved)
            dg_auth_audit(r, "%s worker %s at %s boot %s", old ? "re-register" : "register", m.name,
                          m.address, m.boot ? m.boot : "-");
    }
    /* its resources and the accounting rule's parameters (lib/resources.c); a worker that
     * advertises no overcommit or floors gets none */
    struct cp_worker_report rep = {
        .name = m.name,
        .address = m.address,
        .boot = m.boot,
        .subnet = m.sandbox_subnet,
        .res = {.cpu_milli = m.cpu_milli,
                .memory_mib = m.memory_mib,
                .cpu_overcommit = m.cpu_overcommit > 0 ? m.cpu_overcommit : 1.0,
                .min_cpu_milli = m.min_cpu_milli,
                .min_memory_mib = m.min_memory_mib},
        /* sandboxes it runs (only resync heartbeats list them, and those this CP asks for
         * with "resync"): the core adopts those it does not know only in the worker's first
         * listing after this CP restored it, and refuses (deletes) the others */
        .listed = m.has_sandboxes,
        .nsandboxes = m.nsandboxes,
        /* how many it runs (a one-node worker, on every beat): a count the registry does not
         * match asks for the list */
        .has_count = m.has_sandbox_count,
        .count = (size_t)m.sandbox_count,
        .saturated = m.saturated};
    /* a listing in parts: the core gets it whole with its last part; the beats before are
     * plain ones, answered "resync" for the next part */
    const struct dg_wire_sandbox_ref *refs = m.sandboxes;
    struct listing *whole = NULL;
    bool more = false;
    if (m.listing_parts) {
        whole = listing_part(&m);
        more = !whole;
        rep.listed = whole != NULL;
        rep.nsandboxes = whole ? whole->n : 0;
        refs = whole ? whole->refs : NULL;
    }
    struct cp_sandbox_report *list =
        rep.nsandboxes ? dg_xcalloc(rep.nsandboxes, sizeof(*list)) : NULL;
    for (size_t i = 0; i < rep.nsandboxes; i++)
        list[i] = (struct cp_sandbox_report){refs[i].id, refs[i].function, refs[i].endpoint};
    rep.sandboxes = list;
    struct cp_worker *w = cp_core_on_worker_heartbeat(&cp.core, &rep, &err);
    free(list);
    listing_free(whole);
    dg_wire_worker_beat_free(&m);
    if (!w) {
        dg_http_respond_text(r, 400, "worker: %s", err.msg);
        return;
    }
    dg_http_respond_text(r, 200, w->need_list || more ? DG_WIRE_BEAT_RESYNC : DG_WIRE_BEAT_OK);
}

static void api_dataplane(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_dp_beat m;
    struct dg_err err = {0};
    if (dg_wire_dp_beat_parse(body.ptr, body.len, &m, &err) < 0) {
        dg_http_respond_text(r, 400, "dataplane: %s", err.msg);
        return;
    }
    if (!node_is(r, "data plane", m.name) ||
        !node_kind_ok(r, "data plane", m.name, worker_named(m.name) != NULL, "worker")) {
        dg_wire_dp_beat_free(&m);
        return;
    }
    bool fresh;
    struct cp_dp *d =
        cp_core_on_dp_heartbeat(&cp.core, m.name, m.api, m.proxy, CP_FROM_PEER, &fresh, &err);
    /* every function with its whole endpoint list whenever the DP may have lost them: a new
     * API address, a DP that (re)started or lost us says "resync", or a push or forget to it
     * failed (need_sync) */
    bool resync = fresh || m.resync;
    dg_wire_dp_beat_free(&m);
    if (!d) {
        dg_http_respond_text(r, 400, "dataplane: %s", err.msg);
        return;
    }
    if (fresh)
        dg_auth_audit(r, "register data plane %s api %s proxy %s", d->name, d->api, d->proxy);
    if (resync || d->need_sync) /* its whole table, to it alone (it drops the others) */
        cp_core_dp_resync(&cp.core, d);
    if (resync)
        cp_haproxy_sync();
    dg_http_respond_text(r, 200, DG_WIRE_BEAT_OK);
}

static void api_metrics(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_metrics m;
    struct dg_err err = {0};
    if (dg_wire_metrics_parse(body.ptr, body.len, &m, &err) < 0) {
        dg_http_respond_text(r, 400, "metrics: %s", err.msg);
        return;
    }
    if (!node_is(r, "data plane", m.dataplane)) {
        dg_wire_metrics_free(&m);
        return;
    }
    struct cp_dp *d = cp_core_dp(&cp.core, m.dataplane);
    if (!d) {
        dg_http_respond_text(r, 404, "metrics: data plane '%s' is not registered", m.dataplane);
        dg_wire_metrics_free(&m);
        return;
    }
    for (size_t i = 0; i < m.nfunctions; i++) {
        struct cp_fn *f = cp_fn_find(dg_str_c(m.functions[i].name));
        if (f)
            cp_core_on_metric(&cp.core, d, f, (double)m.functions[i].inflight);
    }
    dg_wire_metrics_free(&m);
    dg_http_respond_text(r, 200, DG_WIRE_BEAT_OK);
}

/* A worker saw a sandbox exit that nobody asked for: forget it, record why (the function's last
 * failure), push the list with the reason; the next request (a metric) or tick replaces it. */
static void api_sandbox_exited(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_sandbox_exit m;
    struct dg_err err = {0};
    if (dg_wire_sandbox_exit_parse(body.ptr, body.len, &m, &err) < 0) {
        dg_http_respond_text(r, 400, "sandbox exit: %s", err.msg);
        return;
    }
    /* it travels to every DP and into 502 bodies: a worker's reasons are one short line */
    if (m.reason && strlen(m.reason) > CP_EXIT_REASON_MAX) {
        dg_http_respond_text(r, 400,
                             "sandbox exit: field 'reason': expected at most %d characters, got "
                             "%zu",
                             CP_EXIT_REASON_MAX, strlen(m.reason));
        dg_wire_sandbox_exit_free(&m);
        return;
    }
    struct cp_fn *f = cp_fn_find(dg_str_c(m.function));
    const char *id;
    if (f && cp.auth_on && dg_http_req_identity(r, &id) == DG_AUTH_NODE) {
        /* only the worker that runs a sandbox reports its exit */
        const struct cp_sandbox *sb = dg_strmap_get(&cp.core.sb_index, dg_str_c(m.id));
        if (sb && sb->fn == f && sb->worker && !node_speaks_for(id, sb->worker)) {
            dg_auth_audit(r, "refused 403 exit of sandbox %s on worker %s", m.id, sb->worker->name);
            dg_http_respond_text(r, 403,
                                 "sandbox exit: credential node.%s cannot report sandbox '%s': it "
                                 "runs on worker '%s'",
                                 id, m.id, sb->worker->name);
            dg_wire_sandbox_exit_free(&m);
            return;
        }
    }
    /* logs it; an exit of a sandbox this CP does not know (any more) changes nothing: said */
    if (f && cp_core_on_exited(&cp.core, f, m.id, m.reason && m.reason[0] ? m.reason : "exited"))
        dg_http_respond_text(r, 200, DG_WIRE_BEAT_OK);
    else
        dg_http_respond_text(r, 404, "sandbox exit: no sandbox '%s' of function '%s' here", m.id,
                             m.function);
    dg_wire_sandbox_exit_free(&m);
}

static void api_status(struct dg_http_req *r, void *ud)
{
    struct dg_wire_status st = {.role = cp.leader ? "leader" : "follower",
                                .leader = cp.leader_api,
                                .has_replicas = cp.nreplicas > 0};
    for (struct cp_worker *w = cp.core.workers; w; w = w->next)
        st.nworkers++;
    for (struct cp_dp *d = cp.core.dps; d; d = d->next)
        st.ndataplanes++;
    for (struct cp_fn *f = cp.core.fns; f; f = f->next)
        st.nfunctions += !f->deleted;
    st.workers = dg_xcalloc(st.nworkers + 1, sizeof(*st.workers));
    st.dataplanes = dg_xcalloc(st.ndataplanes + 1, sizeof(*st.dataplanes));
    st.functions = dg_xcalloc(st.nfunctions + 1, sizeof(*st.functions));
    st.replicas = dg_xcalloc(cp.nreplicas + 1, sizeof(*st.replicas));
    size_t i = 0;
    for (struct cp_worker *w = cp.core.workers; w; w = w->next)
        st.workers[i++] = (struct dg_wire_worker_view){
            .name = w->name,
            .address = w->address,
            .schedulable = w->node.schedulable,
            .sandboxes = w->node.sandboxes,
            .cpu_milli = w->res.cpu_milli,
            .memory_mib = w->res.memory_mib,
            .cpu_used_milli = w->node.cpu_used,
            .memory_used_mib = w->node.mem_used,
            /* what placement may reserve: cpuMilli x cpuOvercommit */
            .cpu_schedulable_milli = cp_worker_cpu_schedulable(w),
            .cpu_overcommit = w->res.cpu_overcommit > 0 ? w->res.cpu_overcommit : 1.0,
            .min_cpu_milli = w->res.min_cpu_milli,
            .min_memory_mib = w->res.min_memory_mib};
    i = 0;
    for (struct cp_dp *d = cp.core.dps; d; d = d->next)
        st.dataplanes[i++] = (struct dg_wire_dp_view){d->name, d->api, d->proxy};
    i = 0;
    for (struct cp_fn *f = cp.core.fns; f; f = f->next)
        if (!f->deleted)
            fn_view(f, &st.functions[i++]);
    for (i = 0; i < cp.nreplicas; i++)
        st.replicas[i] = (struct dg_wire_replica){
            .id = (int64_t)i + 1,
            .api = cp.replicas[i],
            .self = i + 1 == cp.replica_id,
            .leader = cp.leader_api && strcmp(cp.leader_api, cp.replicas[i]) == 0};
    st.nreplicas = cp.nreplicas;
    json_t *j = dg_wire_status_encode(&st);
    /* who answers: `up` and the tests check it is the process they started */
    json_object_set_new(j, "pid", json_integer((json_int_t)getpid()));
    free(st.workers);
    free(st.dataplanes);
    free(st.functions);
    free(st.replicas);
    dg_http_respond_json(r, 200, j);
}

/* A replica that does not lead refuses with the leader's internal API address (workers and
 * data planes follow X-Dirigent-Leader; users get it in the text). */
struct leader_route {
    void (*fn)(struct dg_http_req *r, void *ud);
};

static void refuse(struct dg_http_req *r)
{
    if (cp.leader_api)
        dg_http_resp_header(r, DG_WIRE_HDR_LEADER, cp.leader_api);
    if (cp.taking_over)
        dg_http_respond_text(r, 503,
                             "this replica was just elected and is restoring its state from the "
                             "store: try again in a moment");
    else
        dg_http_respond_text(r, 503,
                             "this control plane replica does not lead; the leader's internal "
                             "API is %s",
                             cp.leader_api ? cp.leader_api : "not elected yet: try again");
}

static void leader_only(struct dg_http_req *r, void *ud)
{
    const struct leader_route *route = ud;
    if (cp.leader)
        route->fn(r, NULL);
    else
        refuse(r);
}

/* ---- a follower forwards the user API to the leader ------------------------------------- */

/* The user API (registrations, function CRUD) is served on the registration server and, for
 * forwarding, on the internal API too. A follower passes such a request to the leader's
 * internal API and relays the answer, so any replica (and HAProxy's registration frontend
 * spreading over all of them) takes registrations. A forwarded request is never forwarded
 * again: a replica that does not lead by the time it arrives refuses it. */
struct fwd_req {
    struct dg_http_req *r; /* NULL once the client went away */
};

static void fwd_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                     const struct dg_err *err, void *ud)
{
    struct fwd_req *f = ud;
    if (f->r) {
        dg_http_req_on_abort(f->r, NULL, NULL);
        if (cp.leader_api)
            dg_http_resp_header(f->r, DG_WIRE_HDR_LEADER, cp.leader_api);
        if (!resp) {
            dg_http_respond_text(f->r, 503, "forwarding to the leader %s: %s: try again",
                                 cp.fwd.addr ? cp.fwd.addr : "?", err->msg);
        } else {
            const char *ct = "text/plain";
            char ctb[128];
            for (size_t i = 0; i < resp->nheaders; i++)
                if (dg_str_caseeq(resp->headers[i].name, "Content-Type")) {
                    snprintf(ctb, sizeof(ctb), "%.*s", (int)resp->headers[i].value.len,
                             resp->headers[i].value.ptr);
                    ct = ctb;
                }
            dg_http_respond(f->r, resp->status, ct, resp->body.ptr, resp->body.len);
        }
    }
    free(f);
}

static void fwd_abort(struct dg_http_req *r, void *ud)
{
    struct fwd_req *f = ud;
    f->r = NULL; /* the answer is dropped when it comes */
}

static void leader_or_forward(struct dg_http_req *r, void *ud)
{
    const struct leader_route *route = ud;
    if (cp.leader) {
        route->fn(r, NULL);
        return;
    }
    if (!cp.leader_api || cp.taking_over || dg_http_req_header(r, DG_WIRE_HDR_FORWARDED).ptr) {
        refuse(r);
        return;
    }
    if (!cp.fwd.addr || strcmp(cp.fwd.addr, cp.leader_api) != 0) {
        if (cp.fwd.pool)
            dg_http_pool_close(cp.fwd.pool);
        free(cp.fwd.addr);
        cp.fwd.addr = dg_xstrdup(cp.leader_api);
        struct dg_http_pool_opts o;
        dg_http_pool_opts_default(&o);
        o.connect_timeout_ms = 1000;
        o.request_timeout_ms = 30000;
        o.bearer = cp.auth_on ? cp.auth_cred : NULL; /* the leader's internal API */
        struct dg_err err = {0};
        cp.fwd.pool = dg_http_pool_new_addr(cp.loop, cp.fwd.addr, &o, &err);
        if (!cp.fwd.pool) {
            dg_http_respond_text(r, 503, "forwarding to the leader: %s", err.msg);
            return;
        }
    }
    struct dg_http_header h[2];
    size_t n = 0;
    h[n++] = (struct dg_http_header){DG_STR(DG_WIRE_HDR_FORWARDED), DG_STR("1")};
    struct dg_str ct = dg_http_req_header(r, "Content-Type");
    if (ct.ptr)
        h[n++] = (struct dg_http_header){DG_STR("Content-Type"), ct};
    struct dg_str body = dg_http_req_body(r), url = dg_http_req_url(r);
    /* "POST /" is the registration server's alias of /registerService */
    char *path = route->fn == api_register ? dg_xstrdup("/registerService")
                                           : dg_xasprintf("%.*s", (int)url.len, url.ptr);
    if (strcmp(dg_http_req_method(r), "GET") != 0) /* the leader sees this replica's cp */
        dg_auth_audit(r, "forward %s %.*s to the leader %s", dg_http_req_method(r),
                      (int)DG_MIN(url.len, 200), url.ptr, cp.leader_api);
    struct fwd_req *f = dg_xcalloc(1, sizeof(*f));
    f->r = r;
    dg_http_req_on_abort(r, fwd_abort, f);
    static const struct dg_http_client_cbs cbs = {.on_done = fwd_done};
    dg_http_request(cp.fwd.pool, dg_http_req_method(r), path, h, n, body.ptr, body.len, &cbs, f);
    free(path);
}

void cp_api_close(void)
{
    if (cp.fwd.pool)
        dg_http_pool_close(cp.fwd.pool);
    cp.fwd.pool = NULL;
    free(cp.fwd.addr);
    cp.fwd.addr = NULL;
}

static void api_health(struct dg_http_req *r, void *ud)
{
    dg_http_respond(r, 200, "text/plain", "ok\n", 3);
}

static double reconstruction_seconds(void *ud)
{
    return cp.reconstruction_seconds;
}

void cp_api_mount(struct dg_http_server *internal, struct dg_http_server *reg)
{
    cp.m_registrations = dg_metric_get1(
        dg_metrics_counter(cp.metrics, "dg_cp_registrations_total", "Functions registered.", NULL),
        NULL);
    dg_metrics_gauge_fn(cp.metrics, "dg_cp_reconstruction_seconds",
                        "How long the last start-up took to rebuild its state from the store and "
                        "the workers.",
                        reconstruction_seconds, NULL);
    static const struct leader_route r_register = {api_register}, r_check = {api_check},
                                     r_list = {api_fn_list}, r_create = {api_create_json},
                                     r_get = {api_fn_get}, r_update = {api_fn_update},
                                     r_delete = {api_fn_delete}, r_worker = {api_worker},
                                     r_dp = {api_dataplane}, r_metrics = {api_metrics},
                                     r_exited = {api_sandbox_exited};
    dg_http_route(reg, "GET", "/health", api_health, NULL, 0);
    /* the user API: on the registration server, and on the internal API for forwarding */
    /* who may call what (docs/security.md; enforced only with authTokenFile): the user API
     * needs an operator credential (on the registration server unless registrationAuth leaves
     * it open; on the internal API also a replica's cp credential: a follower forwards), the
     * workers' and data planes' routes a node credential */
    struct dg_http_server *user[2] = {reg, internal};
    const unsigned user_need[2] = {cp.reg_need, DG_HTTP_AUTH_OPERATOR | DG_HTTP_AUTH_CP};
    const unsigned node = DG_HTTP_AUTH_NODE;
    for (int i = 0; i < 2; i++) {
        struct dg_http_server *s = user[i];
        unsigned u = user_need[i];
        dg_http_route(s, "POST", "/registerService", leader_or_forward, (void *)&r_register, u);
        dg_http_route(s, "GET", "/check", leader_or_forward, (void *)&r_check, u);
        dg_http_route(s, "GET", DG_WIRE_PATH_FUNCTIONS, leader_or_forward, (void *)&r_list, u);
        dg_http_route(s, "POST", DG_WIRE_PATH_FUNCTIONS, leader_or_forward, (void *)&r_create, u);
        dg_http_route(s, "GET", DG_WIRE_PATH_FUNCTIONS "/:name", leader_or_forward, (void *)&r_get,
                      u);
        dg_http_route(s, "PUT", DG_WIRE_PATH_FUNCTIONS "/:name", leader_or_forward,
                      (void *)&r_update, u);
        dg_http_route(s, "DELETE", DG_WIRE_PATH_FUNCTIONS "/:name", leader_or_forward,
                      (void *)&r_delete, u);
    }
    dg_http_route(reg, "POST", "/", leader_or_forward, (void *)&r_register, cp.reg_need);
    dg_http_route(internal, "POST", DG_WIRE_PATH_WORKERS, leader_only, (void *)&r_worker, node);
    dg_http_route(internal, "POST", DG_WIRE_PATH_DATAPLANES, leader_only, (void *)&r_dp, node);
    dg_http_route(internal, "POST", DG_WIRE_PATH_METRICS, leader_only, (void *)&r_metrics, node);
    dg_http_route(internal, "POST", DG_WIRE_PATH_SANDBOX_EXITED, leader_only, (void *)&r_exited,
                  node);
    dg_http_route(internal, "GET", DG_WIRE_PATH_STATUS, api_status, NULL,
                  DG_HTTP_AUTH_OPERATOR | DG_HTTP_AUTH_CP);
    dg_http_route(reg, "GET", DG_WIRE_PATH_STATUS, api_status, NULL, cp.reg_need);
    cp_async_mount(internal, refuse, node_is);
}

/* ---- restore and reconstruction ---------------------------------------------------------- */

/* Each kind read back: cp.restore counts (reset by cp_restore and cp_restore_async). */
static void restore_fn(void *ud, const char *key, const char *value)
{
    struct dg_err err = {0};
    json_t *j = NULL;
    struct dg_form form = {0};
    struct cp_fn_spec spec;
    if (dg_json_parse(value, strlen(value), &j, &err) < 0 ||
        cp_fn_form_from_json(j, &form, &err) < 0 || cp_fn_spec_from_form(&form, &spec, &err) < 0) {
        dg_log(DG_LOG_ERROR, "store", "function '%s' not restored: %s", key, err.msg);
        cp.restore.skipped++;
    } else if (cp_fn_find(dg_str_c(spec.name))) {
        cp_fn_spec_free(&spec);
    } else {
        cp_core_fn_register(&cp.core, &spec);
        cp.restore.functions++;
    }
    dg_form_free(&form);
    json_decref(j);
}

static void restore_worker(void *ud, const char *key, const char *value)
{
    struct dg_err err = {0};
    struct dg_wire_worker_rec m;
    if (dg_wire_worker_rec_parse(value, strlen(value), &m, &err) < 0) {
        dg_log(DG_LOG_ERROR, "store", "worker '%s' not restored: %s", key, err.msg);
        cp.restore.skipped++;
        return;
    }
    if (!cp_core_worker_restore(&cp.core, key, m.address, m.sandbox_subnet, &err)) {
        dg_log(DG_LOG_ERROR, "store", "worker '%s' not restored: %s", key, err.msg);
        cp.restore.skipped++;
    } else {
        cp.restore.workers++;
    }
    dg_wire_worker_rec_free(&m);
}

static void restore_dp(void *ud, const char *key, const char *value)
{
    struct dg_err err = {0};
    struct dg_wire_dp_rec m;
    bool fresh;
    if (dg_wire_dp_rec_parse(value, strlen(value), &m, &err) < 0) {
        dg_log(DG_LOG_ERROR, "store", "data plane '%s' not restored: %s", key, err.msg);
        cp.restore.skipped++;
        return;
    }
    if (!cp_core_on_dp_heartbeat(&cp.core, key, m.api, m.proxy, CP_FROM_STORE, &fresh, &err)) {
        dg_log(DG_LOG_ERROR, "store", "data plane '%s' not restored: %s", key, err.msg);
        cp.restore.skipped++;
    } else {
        cp.restore.dataplanes++;
    }
    dg_wire_dp_rec_free(&m);
}

/* Reconstruction: every restored worker is asked for its sandboxes (adopted as ready); once
 * all answered, or after a deadline (an unreachable one never blocks it), every data plane gets
 * its whole table (a resync: every function's whole list; it drops the functions not in it). */
static void recon_finish(void)
{
    if (cp.recon.done)
        return;
    cp.recon.done = true;
    if (cp.recon.timer_open)
        uv_timer_stop(&cp.recon.deadline);
    for (struct cp_dp *d = cp.core.dps; d; d = d->next)
        cp_core_dp_resync(&cp.core, d); /* its whole table: what the old leader left goes */
    double secs = (double)(dg_now_us() - cp.recon.t0_us) / 1e6;
    cp.reconstruction_seconds = secs;
    dg_log(DG_LOG_INFO, "store", "reconstruction done in %.1f ms (%u workers did not answer)",
           secs * 1000, cp.recon.waiting);
}

static void recon_listed(struct dg_http_creq *q, const struct dg_http_resp *resp,
                         const struct dg_err *err, void *ud)
{
    struct cp_worker *w = ud;
    struct dg_wire_sandbox_list m;
    struct dg_err perr = {0};
    if (resp && resp->status == 200 &&
        dg_wire_sandbox_list_parse(resp->body.ptr, resp->body.len, &m, &perr) == 0) {
        w->need_list = false;
        /* the ready ones: adopted (logged "adopted") or refused by the core */
        struct cp_sandbox_report *list = dg_xcalloc(m.nsandboxes + 1, sizeof(*list));
        size_t n = 0;
        for (size_t i = 0; i < m.nsandboxes; i++) {
            const struct dg_wire_sandbox_state *sb = &m.sandboxes[i];
            if (strcmp(sb->state, DG_WIRE_SB_READY) == 0)
                list[n++] = (struct cp_sandbox_report){sb->id, sb->function, sb->endpoint};
        }
        cp_core_worker_listed(&cp.core, w, list, n);
        free(list);
        dg_wire_sandbox_list_free(&m);
    } else {
        dg_log(DG_LOG_WARN, "store", "worker %s: sandboxes not listed: %s", w->name,
               err           ? err->msg
               : perr.msg[0] ? perr.msg
               : resp        ? "bad answer"
                             : "?");
    }
    if (cp.recon.waiting && --cp.recon.waiting == 0)
        recon_finish();
}

static void recon_deadline(uv_timer_t *t)
{
    recon_finish();
}

/* What was read is in: log it, then ask the workers for their sandboxes (reconstruction). */
static void restore_done(void)
{
    if (cp.restore.functions || cp.restore.workers || cp.restore.dataplanes)
        dg_log(DG_LOG_INFO, "store",
               "restored %u functions, %u workers, %u data planes from %s (%u skipped)",
               cp.restore.functions, cp.restore.workers, cp.restore.dataplanes,
               cp_store_backend(cp.store), cp.restore.skipped);
    cp.recon.done = false;
    cp.recon.waiting = 0;
    static const struct dg_http_client_cbs cbs = {.on_done = recon_listed};
    for (struct cp_worker *w = cp.core.workers; w; w = w->next) {
        cp.recon.waiting++;
        dg_http_request(((struct cp_worker_io *)w->io)->pool, "GET", DG_WIRE_PATH_SANDBOXES, NULL,
                        0, NULL, 0, &cbs, w);
    }
    if (cp.recon.waiting == 0) {
        recon_finish();
        return;
    }
    if (!cp.recon.timer_open) {
        uv_timer_init(cp.loop, &cp.recon.deadline);
        uv_unref((uv_handle_t *)&cp.recon.deadline);
        cp.recon.timer_open = true;
    }
    uv_timer_start(&cp.recon.deadline, recon_deadline, 3000, 0);
}

static void restore_reset(void)
{
    cp.restore.functions = cp.restore.workers = cp.restore.dataplanes = 0;
    cp.restore.skipped = cp.restore.step = 0;
    cp_async_reset(); /* asynchronous invocations' records: read back too */
    cp.recon.t0_us = dg_now_us();
}

int cp_restore(struct dg_err *err)
{
    restore_reset();
    int rc = cp_store_scan(cp.store, "function", restore_fn, NULL, err);
    if (rc == 0)
        rc = cp_store_scan(cp.store, "worker", restore_worker, NULL, err);
    if (rc == 0)
        rc = cp_store_scan(cp.store, "dataplane", restore_dp, NULL, err);
    if (rc == 0)
        rc = cp_store_scan(cp.store, "async", cp_async_restore_each, NULL, err);
    if (rc < 0)
        return rc;
    restore_done();
    return 0;
}

/* The same, one kind after the other on the loop (a replica taking over). */
static void arestore_step(void *ud, const struct dg_err *err)
{
    static const struct {
        const char *kind;
        void (*each)(void *ud, const char *key, const char *value);
    } steps[] = {{"function", restore_fn},
                 {"worker", restore_worker},
                 {"dataplane", restore_dp},
                 {"async", cp_async_restore_each}};
    if (err || cp.restore.step == DG_ARRAY_LEN(steps)) {
        if (!err)
            restore_done();
        cp.restore.done(cp.restore.ud, err);
        return;
    }
    unsigned i = cp.restore.step++;
    cp_store_scan_async(cp.store, steps[i].kind, steps[i].each, arestore_step, NULL);
}

void cp_restore_async(void (*done)(void *ud, const struct dg_err *err), void *ud)
{
    restore_reset();
    cp.restore.done = done;
    cp.restore.ud = ud;
    arestore_step(NULL, NULL);
}

void cp_restore_close(void)
{
    if (cp.recon.timer_open) {
        cp.recon.timer_open = false;
        uv_close((uv_handle_t *)&cp.recon.deadline, NULL);
    }
}
