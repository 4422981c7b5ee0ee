/*
 * async.c: asynchronous invocations on the control plane (async.h). A record per request id,
 * in the store under kind "async" as a dg_wire_async_state (JSON) and in an index here:
 *
 *   POST /v1/async          a DP accepted a request: stored as "pending" (its request with
 *                           it); answered 200 once durable, so the DP answers its client
 *                           only then. An id already known: 409.
 *   POST /v1/async-results  its result: stored as "done" with expiresMs = now +
 *                           asyncResultTtl, the request dropped. Again for a done id: 200
 *                           (a DP retrying after a lost answer); an unknown id: 404.
 *   POST /v1/async-claims   a DP starting: the pending requests it accepted before (same name)
 *                           come back to it to run.
 *   GET  /v1/async/ID       done: the record (200, the stored JSON); pending: 204; 404: never
 *                           seen or expired.
 *
 * At most asyncMaxRecords records (pending and done; the index holds each whole, in memory):
 * a submission beyond gets 429.
 *
 * Only the leader answers (a follower refuses as for heartbeats, naming the leader); every
 * replica that takes over reads the records back from the shared store. A timer deletes
 * expired results from the store and the index (five times a second, at most GC_MAX_PER_TICK
 * each time).
 *
 * Nothing on the loop walks every record (asyncMaxRecords may be 1,000,000): the pending ones
 * are also on a list (claims walk only it, and hand at most CLAIM_PAGE_RECORDS per answer), the
 * done ones on a min-heap by expiry (the timer takes only the expired ones off its top).
 */
#include <stdlib.h>
#include <string.h>

#include "async.h"
#include "cp.h"
#include "store.h"
#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"

struct rec {
    char *id;
    char *dataplane; /* pending: who runs it */
    char *value;     /* the stored JSON (dg_wire_async_state) */
    bool done;
    uint64_t expires_ms;
    int64_t handed_boot;     /* the claim (a DP's, random) this pending record was last handed in */
    int64_t handed_page;     /* and the page of it */
    size_t heap_i;           /* done: its place in A.heap */
    struct rec *prev, *next; /* pending: A.pending_list */
};

#define CLAIM_PAGE_RECORDS 1000 /* a claim's answer at most (each costs a parse on the loop) */
#define GC_EVERY_MS        200
#define GC_MAX_PER_TICK    2000 /* expired results deleted per tick at most (10,000 a second) */

static struct {
    uv_loop_t *loop;
    uint64_t ttl_ms, max_records, max_bytes;
    uint64_t bytes;         /* the records' values together */
    struct dg_strmap index; /* id -> struct rec */
    unsigned pending, done;
    struct rec *pending_list; /* the pending records */
    struct rec **heap;        /* the done records, a min-heap by expires_ms */
    size_t heap_cap;
    uv_timer_t gc;
    bool open;
    void (*refuse)(struct dg_http_req *r);
    bool (*node_is)(struct dg_http_req *r, const char *what, const char *name);
} A;

static void rec_free(struct rec *r)
{
    free(r->id);
    free(r->dataplane);
    free(r->value);
    free(r);
}

/* ---- the expiry heap (A.done entries) ---------------------------------------------------- */

static void heap_set(size_t i, struct rec *r)
{
    A.heap[i] = r;
    r->heap_i = i;
}

static void heap_up(size_t i)
{
    struct rec *r = A.heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (A.heap[p]->expires_ms <= r->expires_ms)
            break;
        heap_set(i, A.heap[p]);
        i = p;
    }
    heap_set(i, r);
}

static void heap_down(size_t i)
{
    size_t n = A.done;
    struct rec *r = A.heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && A.heap[c + 1]->expires_ms < A.heap[c]->expires_ms)
            c++;
        if (r->expires_ms <= A.heap[c]->expires_ms)
            break;
        heap_set(i, A.heap[c]);
        i = c;
    }
    heap_set(i, r);
}

static void heap_push(struct rec *r)
{
    if (A.done == A.heap_cap) {
        A.heap_cap = A.heap_cap ? 2 * A.heap_cap : 1024;
        A.heap = dg_xrealloc(A.heap, A.heap_cap * sizeof(*A.heap));
    }
    heap_set(A.done, r);
    A.done++;
    heap_up(r->heap_i);
}

static void heap_remove(struct rec *r)
{
    size_t i = r->heap_i, last = --A.done;
    if (i == last)
        return;
    heap_set(i, A.heap[last]);
    heap_up(i);
    heap_down(A.heap[i]->heap_i);
}

static void rec_drop(struct rec *r)
{
    dg_strmap_del(&A.index, dg_str_c(r->id));
    A.bytes -= strlen(r->value);
    if (r->done) {
        heap_remove(r);
    } else {
        if (r->prev)
            r->prev->next = r->next;
        else
            A.pending_list = r->next;
        if (r->next)
            r->next->prev = r->prev;
        A.pending--;
    }
    rec_free(r);
}

static void rec_put(struct rec *r)
{
    struct rec *old = dg_strmap_get(&A.index, dg_str_c(r->id));
    if (old)
        rec_drop(old);
    dg_strmap_put(&A.index, dg_str_c(r->id), r);
    A.bytes += strlen(r->value);
    if (r->done) {
        heap_push(r);
    } else {
        r->prev = NULL;
        r->next = A.pending_list;
        if (A.pending_list)
            A.pending_list->prev = r;
        A.pending_list = r;
        A.pending++;
    }
}

void cp_async_reset(void)
{
    for (size_t i = 0; i < A.index.cap; i++) {
        struct dg_strmap_slot *s = &A.index.slots[i];
        if (s->val) /* a live entry (a removed one has none) */
            rec_free(s->val);
    }
    dg_strmap_free(&A.index);
    memset(&A.index, 0, sizeof(A.index));
    A.pending = A.done = 0;
    A.bytes = 0;
    A.pending_list = NULL;
    free(A.heap);
    A.heap = NULL;
    A.heap_cap = 0;
}

void cp_async_restore_each(void *ud, const char *key, const char *value)
{
    struct dg_wire_async_state st;
    struct dg_err err = {0};
    if (dg_wire_async_state_parse(value, strlen(value), &st, &err) < 0) {
        dg_log(DG_LOG_WARN, "async", "store: record '%.80s' skipped: %s", key, err.msg);
        return;
    }
    const char *id = st.has_result ? st.result.id : st.request.id;
    if (strcmp(id, key) != 0) {
        dg_log(DG_LOG_WARN, "async", "store: record '%.80s' names id '%s': skipped", key, id);
        dg_wire_async_state_free(&st);
        return;
    }
    struct rec *r = dg_xcalloc(1, sizeof(*r));
    r->id = dg_xstrdup(key);
    r->value = dg_xstrdup(value);
    r->done = strcmp(st.state, "done") == 0;
    r->expires_ms = (uint64_t)st.expires_ms;
    if (!r->done)
        r->dataplane = dg_xstrdup(st.request.dataplane);
    dg_wire_async_state_free(&st);
    rec_put(r);
}

void cp_async_counts(unsigned *pending, unsigned *done)
{
    *pending = A.pending;
    *done = A.done;
}

/* ---- routes -------------------------------------------------------------------------------- */

/* A write in flight: the DP's request waits for it (NULL once it went away). */
struct write {
    struct dg_http_req *r;
    struct rec *rec; /* what goes into the index once durable */
    const char *what;
};

static void write_abort(struct dg_http_req *r, void *ud)
{
    struct write *w = ud;
    w->r = NULL;
}

static void write_done(void *ud, const struct dg_err *err)
{
    struct write *w = ud;
    if (w->r)
        dg_http_req_on_abort(w->r, NULL, NULL);
    if (err) {
        dg_log(DG_LOG_WARN, "async", "%s %s: store: %s", w->what, w->rec->id, err->msg);
        if (w->r)
            dg_http_respond_text(w->r, 503, "async %s %s: the store failed: %s: try again", w->what,
                                 w->rec->id, err->msg);
        rec_free(w->rec);
    } else {
        struct rec *cur = dg_strmap_get(&A.index, dg_str_c(w->rec->id));
        if (cur && cur->done && !w->rec->done) /* its result came first: keep it */
            rec_free(w->rec);
        else
            rec_put(w->rec);
        if (w->r)
            dg_http_respond_text(w->r, 200, "stored");
    }
    free(w);
}

static void store_rec(struct dg_http_req *r, struct rec *rec, const char *what)
{
    struct write *w = dg_xcalloc(1, sizeof(*w));
    w->r = r;
    w->rec = rec;
    w->what = what;
    dg_http_req_on_abort(r, write_abort, w);
    cp_store_put(cp.store, "async", rec->id, rec->value, write_done, w);
}

static void api_submit(struct dg_http_req *r, void *ud)
{
    if (!cp.leader) {
        A.refuse(r);
        return;
    }
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_async_state st = {.state = "pending", .has_request = true};
    struct dg_err err = {0};
    if (dg_wire_async_req_parse(body.ptr, body.len, &st.request, &err) < 0) {
        dg_http_respond_text(r, 400, "async request: %s", err.msg);
        return;
    }
    if (!A.node_is(r, "data plane", st.request.dataplane)) {
        dg_wire_async_req_free(&st.request);
        return;
    }
    struct rec *known = dg_strmap_get(&A.index, dg_str_c(st.request.id));
    if (known) {
        /* the same data plane sending it again (its client resent a request whose answer was
         * lost, or it asked the next replica): stored already; else the id is another's */
        if (!known->done && strcmp(known->dataplane, st.request.dataplane) == 0)
            dg_http_respond_text(r, 200, "stored");
        else
            dg_http_respond_text(r, 409, "async request %s: the id is taken", st.request.id);
        dg_wire_async_req_free(&st.request);
        return;
    }
    if ((uint64_t)A.pending + A.done >= A.max_records) {
        dg_http_respond_text(r, 429,
                             "asynchronous request not stored: the control plane keeps %llu "
                             "records (asyncMaxRecords); results expire after asyncResultTtl: "
                             "try again later",
                             (unsigned long long)A.max_records);
        dg_wire_async_req_free(&st.request);
        return;
    }
    struct rec *rec = dg_xcalloc(1, sizeof(*rec));
    rec->id = dg_xstrdup(st.request.id);
    rec->dataplane = dg_xstrdup(st.request.dataplane);
    rec->value = dg_wire_async_state_dumps(&st);
    st.state = NULL;
    dg_wire_async_req_free(&st.request);
    if (A.bytes + strlen(rec->value) > A.max_bytes) {
        dg_http_respond_text(r, 429,
                             "asynchronous request not stored: the control plane keeps %llu MiB of "
                             "records (asyncMaxBytes); results expire after asyncResultTtl: try "
                             "again later",
                             (unsigned long long)(A.max_bytes >> 20));
        rec_free(rec);
        return;
    }
    store_rec(r, rec, "request");
}

static void api_result(struct dg_http_req *r, void *ud)
{
    if (!cp.leader) {
        A.refuse(r);
        return;
    }
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_async_state st = {.state = "done", .has_result = true};
    struct dg_err err = {0};
    if (dg_wire_async_result_parse(body.ptr, body.len, &st.result, &err) < 0) {
        dg_http_respond_text(r, 400, "async result: %s", err.msg);
        return;
    }
    struct rec *cur = dg_strmap_get(&A.index, dg_str_c(st.result.id));
    if (!cur || cur->done) { /* expired meanwhile, or a retry of a stored result */
        if (cur)
            dg_http_respond_text(r, 200, "stored");
        else
            dg_http_respond_text(r, 404, "async result %s: no such request (expired?)",
                                 st.result.id);
        dg_wire_async_result_free(&st.result);
        return;
    }
    if (!A.node_is(r, "data plane", cur->dataplane)) {
        dg_wire_async_result_free(&st.result);
        return;
    }
    struct rec *rec = dg_xcalloc(1, sizeof(*rec));
    rec->id = dg_xstrdup(st.result.id);
    rec->done = true;
    rec->expires_ms = dg_wall_ms() + A.ttl_ms;
    st.expires_ms = (int64_t)rec->expires_ms;
    rec->value = dg_wire_async_state_dumps(&st);
    dg_wire_async_result_free(&st.result);
    store_rec(r, rec, "result");
}

static void api_claim(struct dg_http_req *r, void *ud)
{
    if (!cp.leader) {
        A.refuse(r);
        return;
    }
    struct dg_str body = dg_http_req_body(r);
    struct dg_wire_async_claim c;
    struct dg_err err = {0};
    if (dg_wire_async_claim_parse(body.ptr, body.len, &c, &err) < 0) {
        dg_http_respond_text(r, 400, "async claim: %s", err.msg);
        return;
    }
    if (!A.node_is(r, "data plane", c.dataplane)) {
        dg_wire_async_claim_free(&c);
        return;
    }
    /* other data planes' requests go only to a registered data plane (a node credential may be
     * a worker's: it would get the bodies and headers of requests it never accepted) */
    bool registered = cp_core_dp(&cp.core, c.dataplane) != NULL;
    /* {"requests":[...]}: the stored requests as they are, without decoding them again */
    json_t *list = json_array();
    size_t bytes = 0, orphans = 0;
    bool more = false;
    for (struct rec *rec = A.pending_list; rec; rec = rec->next) {
        bool own = strcmp(rec->dataplane, c.dataplane) == 0;
        if (own && c.boot && rec->handed_boot == c.boot) {
            /* handed in this claim (an orphan then became the claimer's): again only when this
             * very page is asked again (its answer was lost), whatever the bounds */
            if (rec->handed_page != c.page)
                continue;
        } else {
            if (own ? c.orphans_only : !registered || cp_core_dp(&cp.core, rec->dataplane) != NULL)
                continue; /* not asked for, or its data plane is alive */
            if (!own && c.max_orphans && orphans >= (size_t)c.max_orphans)
                continue; /* the claimer has no room: left for a later claim, or another's */
            if (json_array_size(list) >= CLAIM_PAGE_RECORDS ||
                (bytes && bytes + strlen(rec->value) > DG_WIRE_ASYNC_CLAIM_BYTES)) {
                more = true; /* the rest in the claimer's next ask, below its body limit */
                continue;    /* (this page's own records, asked again, may come further on) */
            }
        }
        bytes += strlen(rec->value);
        orphans += !own;
        rec->handed_boot = c.boot;
        rec->handed_page = c.page;
        json_t *j = NULL;
        if (dg_json_parse(rec->value, strlen(rec->value), &j, &err) < 0)
            continue;
        json_t *req = json_object_get(j, "request");
        if (req && !own) { /* an orphan: the claimer's from now on, in the store too */
            dg_log(DG_LOG_INFO, "async", "request %s of lost data plane %s goes to %s", rec->id,
                   rec->dataplane, c.dataplane);
            json_object_set_new(req, "dataplane", json_string(c.dataplane));
            free(rec->dataplane);
            rec->dataplane = dg_xstrdup(c.dataplane);
            free(rec->value);
            rec->value = dg_json_dumps(j);
            cp_store_put(cp.store, "async", rec->id, rec->value, NULL, NULL);
        }
        if (req)
            json_array_append(list, req);
        json_decref(j);
    }
    json_t *out = json_object();
    json_object_set_new(out, "requests", list);
    if (more)
        json_object_set_new(out, "more", json_true());
    char *text = dg_json_dumps(out);
    json_decref(out);
    if (json_array_size(list) || !c.orphans_only)
        dg_log(DG_LOG_INFO, "async", "data plane %s claims %zu unfinished requests", c.dataplane,
               json_array_size(list));
    dg_http_respond(r, 200, "application/json", text, strlen(text));
    free(text);
    dg_wire_async_claim_free(&c);
}

static void api_get(struct dg_http_req *r, void *ud)
{
    if (!cp.leader) {
        A.refuse(r);
        return;
    }
    struct dg_str id = dg_http_req_param(r, "id");
    struct rec *rec = dg_wire_async_id_ok(id.ptr, id.len) ? dg_strmap_get(&A.index, id) : NULL;
    if (!rec || (rec->done && rec->expires_ms <= dg_wall_ms())) {
        dg_http_respond_text(r, 404, "async request %.*s: unknown or expired",
                             (int)DG_MIN(id.len, 80), id.ptr);
        return;
    }
    if (!rec->done) { /* not finished: no need to send its request back */
        dg_http_respond(r, 204, NULL, NULL, 0);
        return;
    }
    dg_http_respond(r, 200, "application/json", rec->value, strlen(rec->value));
}

void cp_async_mount(struct dg_http_server *internal, void (*refuse)(struct dg_http_req *r),
                    bool (*node_is)(struct dg_http_req *r, const char *what, const char *name))
{
    A.refuse = refuse;
    A.node_is = node_is;
    const unsigned node = DG_HTTP_AUTH_NODE;
    dg_http_route(internal, "POST", DG_WIRE_PATH_ASYNC, api_submit, NULL, node);
    dg_http_route(internal, "POST", DG_WIRE_PATH_ASYNC_RESULT, api_result, NULL, node);
    dg_http_route(internal, "POST", DG_WIRE_PATH_ASYNC_CLAIM, api_claim, NULL, node);
    dg_http_route(internal, "GET", DG_WIRE_PATH_ASYNC "/:id", api_get, NULL, node);
}

/* ---- expiry -------------------------------------------------------------------------------- */

static void on_gc(uv_timer_t *t)
{
    if (!cp.leader)
        return;
    uint64_t now = dg_wall_ms();
    unsigned n = 0;
    while (A.done && A.heap[0]->expires_ms <= now && n < GC_MAX_PER_TICK) {
        struct rec *rec = A.heap[0]; /* the first to expire */
        cp_store_del(cp.store, "async", rec->id, NULL, NULL);
        rec_drop(rec);
        n++;
    }
    if (n)
        dg_log(DG_LOG_INFO, "async", "%u results expired (asyncResultTtl %llu ms)", n,
               (unsigned long long)A.ttl_ms);
}

void cp_async_init(uv_loop_t *loop, uint64_t ttl_ms, uint64_t max_records, uint64_t max_bytes)
{
    A.max_bytes = max_bytes;
    A.loop = loop;
    A.ttl_ms = ttl_ms;
    A.max_records = max_records;
    uv_timer_init(loop, &A.gc);
    uv_timer_start(&A.gc, on_gc, GC_EVERY_MS, GC_EVERY_MS);
    uv_unref((uv_handle_t *)&A.gc);
    A.open = true;
}

void cp_async_close(void)
{
    if (A.open) {
        A.open = false;
        uv_close((uv_handle_t *)&A.gc, NULL);
    }
    cp_async_reset();
}
