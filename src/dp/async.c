/*
 * async.c: asynchronous invocations on the data plane (async.h).
 *
 * Submission (the proxy port's fallback when `async: true`): the function is found by Host as
 * for a synchronous call (unknown: 404); the whole request (method, target, end-to-end
 * headers, body up to DG_WIRE_ASYNC_BODY_MAX) gets a UUID-shaped id and goes to the CP
 * (POST /v1/async), which answers once its store has it; only then is the client answered,
 * 200 with the id as the body (the original's answer, what InVitro reads). A CP that cannot
 * store it: 503 (and the request, which starts at once, is cancelled: it may have run); over
 * asyncMaxPending requests not finished here: 429. Its result goes to the CP only after the
 * request itself was stored.
 *
 * Running: each accepted request is sent to a loopback listener of the ordinary proxy
 * (dp_invoke), so it waits for a sandbox in the core's queue, takes a concurrency slot and is
 * load-balanced exactly like a synchronous one. An answer 200 or 400 is its result (as the
 * original); anything else (5xx from the sandbox or the platform, a connection error) counts
 * as a failed try and is sent again after a backoff (250 ms doubling, at most 10 s) until
 * numberRetries tries failed; then the result is 500 with what the last try got. The result
 * goes to the CP (POST /v1/async-results, retried until stored) with the time from acceptance
 * to result (Duration-Microseconds).
 *
 * Results (portProxyRead): the id as the request body (InVitro's GET), or as the path /ID;
 * the record comes from the CP: done: the stored status, Content-Type and body with
 * Duration-Microseconds; pending: 204; unknown or expired: 404, empty body, the reason in
 * X-Dirigent-Error (InVitro reads any body as the answer).
 *
 * Start: the CP gives back this DP's requests that have no result yet (POST
 * /v1/async-claims, by the DP's name; retried every second until answered), which run again.
 * Then every 10 s it asks for orphans: the unfinished requests of data planes the CP lost
 * (silent for 3 heartbeats), which become this DP's and run here. A request may so run twice
 * (a DP the CP lost that was still running it): at least once, never lost.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "async.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"

#define RESULT_BODY_MAX 256 /* the result port's request body: an id */
#define BACKOFF_MS      250
#define BACKOFF_MAX_MS  10000
#define CLAIM_EVERY_MS  10000 /* requests of data planes the CP lost: taken over */
/* After a start the CP's function list arrives after the claim may have: a claimed request
 * whose function this DP does not know yet waits (no try counted) for this long after it. */
#define FN_WAIT_MS 30000

struct job {
    struct dg_wire_async_req req; /* owned */
    char *body;                   /* decoded */
    size_t body_len;
    unsigned tries;
    uint64_t t_accept_us; /* accepted by this process (monotonic µs); 0: taken over by a claim */
    bool waited;          /* for its function to be known here (FN_WAIT_MS) */
    uv_timer_t timer;     /* backoff before a retry, or before posting the result again */
    struct dg_http_creq *run;
    struct cp_call *post;
    /* the try in flight */
    int status;
    char *ctype;
    char *out;
    size_t out_len;
    bool too_big;
    /* the result, once known */
    char *result; /* dg_wire_async_result JSON */
    /* its submission: the client waits for the CP's store (NULL once it went away); the result
     * is posted only after the request was stored */
    struct dg_http_req *client;
    bool stored;
    struct job *prev, *next;
};

/* One call to the CP's leader: tried on the replicas in turn (a refusal names the leader). */
struct cp_call {
    char *method, *path, *body;
    unsigned attempts;
    struct dg_http_creq *q;
    struct dg_http_pool *pool; /* the one it was sent on */
    uv_timer_t timer;
    void (*cb)(void *ud, int status, struct dg_str body, const char *err);
    void *ud;
    struct cp_call *prev, *next;
};

static struct {
    struct dp *dp;
    unsigned retries, max_pending;
    const struct dg_strlist *cp;
    size_t cp_idx;
    char *bearer;
    struct dg_http_pool *cp_pool, *run_pool;
    struct dg_http_server *runner, *reader;
    struct dg_strmap jobs; /* id -> job */
    struct job *head;
    unsigned njobs;
    struct cp_call *calls;
    uv_timer_t claim_timer;
    bool stopping, claimed, claim_failing;
    uint64_t start_us;
    int64_t boot, page; /* the claim under way, its next page (struct dg_wire_async_claim) */
    unsigned open_servers;
    void (*stop_done)(void *ud);
    void *stop_ud;
} A;

/* ---- the link to the CP ------------------------------------------------------------------ */

/* A timer's close frees what it is in (its data). */
static void free_owner(uv_handle_t *h)
{
    free(h->data);
}

static void cp_pool_open(void)
{
    struct dg_http_pool *old = A.cp_pool;
    A.cp_pool = NULL; /* calls failing as it closes see a pool that is not current */
    if (old)
        dg_http_pool_close(old);
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 10000;
    o.bearer = A.bearer;
    struct dg_err err = {0};
    A.cp_pool = dg_http_pool_new_addr(A.dp->loop, A.cp->v[A.cp_idx], &o, &err);
    if (!A.cp_pool)
        dg_log(DG_LOG_ERROR, "async", "control plane %s: %s", A.cp->v[A.cp_idx], err.msg);
}

static void call_free(struct cp_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        A.calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->method);
    free(c->path);
    free(c->body);
    uv_close((uv_handle_t *)&c->timer, free_owner);
}

static void call_send(struct cp_call *c);

static void call_retry_timer(uv_timer_t *t)
{
    call_send(t->data);
}

static void call_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    struct cp_call *c = ud;
    c->q = NULL;
    if (A.stopping)
        return;
    if (!resp && c->pool != A.cp_pool) { /* its pool was replaced (another replica): resend */
        uv_timer_start(&c->timer, call_retry_timer, 0, 0);
        return;
    }
    bool refused = resp && resp->status == 503;
    if ((!resp || refused) && c->attempts > 1) {
        /* another replica: the one a refusal names, else the next */
        size_t next = (A.cp_idx + 1) % A.cp->n;
        for (size_t i = 0; resp && i < resp->nheaders; i++)
            if (dg_str_caseeq(resp->headers[i].name, DG_WIRE_HDR_LEADER))
                for (size_t k = 0; k < A.cp->n; k++)
                    if (dg_str_eq(resp->headers[i].value, A.cp->v[k]))
                        next = k;
        if (next != A.cp_idx || !resp) {
            A.cp_idx = next;
            cp_pool_open();
        }
        c->attempts--;
        uv_timer_start(&c->timer, call_retry_timer, 200, 0);
        return;
    }
    char why[300];
    if (!resp)
        snprintf(why, sizeof(why), "control plane %s: %s", A.cp->v[A.cp_idx], err->msg);
    void (*cb)(void *, int, struct dg_str, const char *) = c->cb;
    void *cud = c->ud;
    int status = resp ? resp->status : 0;
    struct dg_str body = resp ? resp->body : (struct dg_str){0};
    call_free(c);
    cb(cud, status, body, resp ? NULL : why);
}

static void call_send(struct cp_call *c)
{
    static const struct dg_http_client_cbs cbs = {.on_done = call_done};
    struct dg_http_header h = {DG_STR("Content-Type"), DG_STR("application/json")};
    if (!A.cp_pool)
        cp_pool_open();
    if (!A.cp_pool) { /* a bad address: logged; tried again later */
        uv_timer_start(&c->timer, call_retry_timer, 1000, 0);
        return;
    }
    c->pool = A.cp_pool;
    struct dg_http_creq *q = dg_http_request(A.cp_pool, c->method, c->path, &h, c->body ? 1 : 0,
                                             c->body, c->body ? strlen(c->body) : 0, &cbs, c);
    if (q) /* else on_done ran already */
        c->q = q;
}

/* `body` taken (NULL: none). `attempts`: sends before cb gets the failure. */
static struct cp_call *cp_call(const char *method, const char *path, char *body, unsigned attempts,
                               void (*cb)(void *, int, struct dg_str, const char *), void *ud)
{
    struct cp_call *c = dg_xcalloc(1, sizeof(*c));
    c->method = dg_xstrdup(method);
    c->path = dg_xstrdup(path);
    c->body = body;
    c->attempts = attempts;
    c->cb = cb;
    c->ud = ud;
    uv_timer_init(A.dp->loop, &c->timer);
    c->timer.data = c;
    c->next = A.calls;
    if (A.calls)
        A.calls->prev = c;
    A.calls = c;
    call_send(c);
    return c;
}

/* ---- jobs ---------------------------------------------------------------------------------- */

static void job_run(struct job *j);
static bool hop_by_hop(struct dg_str name);
static void claim_lost(void);

static void job_free(struct job *j)
{
    if (j->run)
        dg_http_creq_cancel(j->run);
    dg_strmap_del(&A.jobs, dg_str_c(j->req.id));
    if (j->prev)
        j->prev->next = j->next;
    else
        A.head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    A.njobs--;
    dg_wire_async_req_free(&j->req);
    free(j->body);
    free(j->ctype);
    free(j->out);
    free(j->result);
    uv_close((uv_handle_t *)&j->timer, free_owner);
}

static struct job *job_new(struct dg_wire_async_req *req, char *body, size_t len)
{
    struct job *j = dg_xcalloc(1, sizeof(*j));
    j->req = *req; /* taken */
    j->body = body;
    j->body_len = len;
    uv_timer_init(A.dp->loop, &j->timer);
    j->timer.data = j;
    dg_strmap_put(&A.jobs, dg_str_c(j->req.id), j);
    j->next = A.head;
    if (A.head)
        A.head->prev = j;
    A.head = j;
    A.njobs++;
    return j;
}

static void post_result(struct job *j);

static void post_timer(uv_timer_t *t)
{
    post_result(t->data);
}

static void result_posted(void *ud, int status, struct dg_str body, const char *err)
{
    struct job *j = ud;
    j->post = NULL;
    if (status == 200 || status == 404 || status == 400 || status == 403) {
        if (status != 200)
            dg_log(DG_LOG_WARN, "async", "result %s not stored: %d %.*s", j->req.id, status,
                   (int)DG_MIN(body.len, 300), body.ptr);
        job_free(j);
        return;
    }
    dg_log(DG_LOG_WARN, "async", "result %s: %s; trying again in 1 s", j->req.id,
           err ? err : "the control plane refused");
    uv_timer_start(&j->timer, post_timer, 1000, 0);
}

static void post_result(struct job *j)
{
    j->post = cp_call("POST", DG_WIRE_PATH_ASYNC_RESULT, dg_xstrdup(j->result), A.cp->n + 1,
                      result_posted, j);
}

static void job_finish(struct job *j, int status, const char *ctype, const char *body, size_t len)
{
    /* acceptance to result: in µs from this process's clock when it accepted the request
     * (never less than the function's own time), else from the stored wall-clock ms */
    uint64_t now = dg_wall_ms(), accepted = (uint64_t)j->req.accepted_ms;
    uint64_t dur = j->t_accept_us ? dg_now_us() - j->t_accept_us
                                  : (now > accepted ? (now - accepted) * 1000 : 0);
    char *b64 = dg_wire_b64_encode(body, len);
    struct dg_wire_async_result r = {
        .id = j->req.id,
        .status = status,
        .content_type = (char *)ctype,
        .body = b64,
        .duration_us = (int64_t)dur,
        .tries = j->tries,
    };
    j->result = dg_wire_async_result_dumps(&r);
    free(b64);
    if (j->stored) /* else once it is (submit_stored) */
        post_result(j);
}

static void retry_timer(uv_timer_t *t)
{
    job_run(t->data);
}

/* A try failed (`what`): again after a backoff, or the request fails. */
static void job_failed(struct job *j, const char *what)
{
    j->tries++;
    if (j->tries >= A.retries) {
        char msg[600];
        int n = snprintf(msg, sizeof(msg),
                         "asynchronous request %s to function '%s' failed %u "
                         "times (numberRetries); the last try: %s\n",
                         j->req.id, j->req.function, j->tries, what);
        dg_log(DG_LOG_WARN, "async", "%.*s", n - 1, msg);
        job_finish(j, 500, "text/plain", msg, (size_t)DG_MIN(n, (int)sizeof(msg) - 1));
        return;
    }
    uint64_t delay = (uint64_t)BACKOFF_MS << DG_MIN(j->tries - 1, 6u);
    dg_log(DG_LOG_INFO, "async", "request %s: try %u failed (%s); again in %llu ms", j->req.id,
           j->tries, what, (unsigned long long)DG_MIN(delay, BACKOFF_MAX_MS));
    uv_timer_start(&j->timer, retry_timer, DG_MIN(delay, BACKOFF_MAX_MS), 0);
}

static void run_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct job *j = ud;
    j->status = resp->status;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (dg_str_caseeq(resp->headers[i].name, "content-type")) {
            free(j->ctype);
            j->ctype = dg_str_dup(resp->headers[i].value);
        }
}

static void run_body(struct dg_http_creq *q, const char *data, size_t len, void *ud)
{
    struct job *j = ud;
    if (j->too_big || j->out_len + len > DG_WIRE_ASYNC_BODY_MAX) {
        j->too_big = true;
        return;
    }
    j->out = realloc(j->out, j->out_len + len + 1);
    if (!j->out)
        abort();
    memcpy(j->out + j->out_len, data, len);
    j->out_len += len;
}

static bool ctype_ok(const char *s)
{
    for (; s && *s; s++)
        if (!((*s >= 0x20 && *s < 0x7f) || *s == '\t'))
            return false;
    return true;
}

static void run_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                     const struct dg_err *err, void *ud)
{
    struct job *j = ud;
    j->run = NULL;
    if (A.stopping)
        return;
    char what[400];
    if (!resp) {
        snprintf(what, sizeof(what), "%s", err->msg);
        job_failed(j, what);
    } else if (j->too_big) {
        snprintf(what, sizeof(what), "the answer's body is over %d bytes, the most a result keeps",
                 DG_WIRE_ASYNC_BODY_MAX);
        job_failed(j, what);
    } else if (j->status == 200 || j->status == 400) {
        job_finish(j, j->status, ctype_ok(j->ctype) ? j->ctype : NULL, j->out ? j->out : "",
                   j->out_len);
    } else {
        snprintf(what, sizeof(what), "%d %.*s", j->status, (int)DG_MIN(j->out_len, 300),
                 j->out ? j->out : "");
        size_t n = strlen(what);
        while (n && (what[n - 1] == '\n' || what[n - 1] == '\r'))
            what[--n] = '\0';
        job_failed(j, what);
    }
    free(j->out);
    j->out = NULL;
    j->out_len = 0;
}

static void job_run(struct job *j)
{
    static const struct dg_http_client_cbs cbs = {
        .on_head = run_head, .on_body = run_body, .on_done = run_done};
    if (!dp_core_function_find(A.dp->core, j->req.function, strlen(j->req.function)) &&
        dg_now_us() - A.start_us < (uint64_t)FN_WAIT_MS * 1000) {
        if (!j->waited)
            dg_log(DG_LOG_INFO, "async",
                   "request %s: function '%s' not known here yet (the control plane's list "
                   "comes after a start): waiting for it",
                   j->req.id, j->req.function);
        j->waited = true;
        uv_timer_start(&j->timer, retry_timer, 200, 0);
        return;
    }
    j->status = 0;
    j->too_big = false;
    size_t n = 0;
    struct dg_http_header *h = dg_xcalloc(j->req.nheaders + 1, sizeof(*h));
    for (size_t i = 0; i < j->req.nheaders; i++) {
        /* what a submission keeps; a record from the store (another node's) is held to it too */
        struct dg_str name = dg_str_c(j->req.headers[i].name);
        if (!hop_by_hop(name))
            h[n++] = (struct dg_http_header){name, dg_str_c(j->req.headers[i].value)};
    }
    h[n] = (struct dg_http_header){DG_STR("Host"), dg_str_c(j->req.function)};
    struct dg_http_creq *q = dg_http_request(A.run_pool, j->req.method, j->req.url, h, n + 1,
                                             j->body, j->body_len, &cbs, j);
    free(h);
    if (q) /* else run_done ran already */
        j->run = q;
}

/* ---- submission ---------------------------------------------------------------------------- */

static bool hop_by_hop(struct dg_str name)
{
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "transfer-encoding",
                                        "content-length",
                                        "te",
                                        "trailer",
                                        "upgrade",
                                        "host",
                                        "proxy-authorization",
                                        DG_WIRE_HDR_SANDBOX};
    for (size_t i = 0; i < DG_ARRAY_LEN(names); i++)
        if (dg_str_caseeq(name, names[i]))
            return true;
    return false;
}

/* A header name the wire keeps: HTTP's token characters (a pseudo-header's ':' is not). */
static bool token(struct dg_str s)
{
    static const char ok[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (size_t i = 0; i < s.len; i++)
        if (!s.ptr[i] || !strchr(ok, s.ptr[i]))
            return false;
    return s.len > 0;
}

static bool printable(struct dg_str s, bool tab)
{
    for (size_t i = 0; i < s.len; i++)
        if (!((s.ptr[i] >= 0x20 && s.ptr[i] < 0x7f) || (tab && s.ptr[i] == '\t')))
            return false;
    return true;
}

static void new_id(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) { /* never on Linux >= 3.17 */
        uint64_t t = dg_now_us() ^ ((uint64_t)rand() << 20);
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)rand();
    }
    b[6] = (b[6] & 0x0f) | 0x40; /* a version-4 UUID's shape */
    b[8] = (b[8] & 0x3f) | 0x80;
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[k++] = '-';
        out[k++] = hex[b[i] >> 4];
        out[k++] = hex[b[i] & 15];
    }
    out[k] = '\0';
}

static void submit_abort(struct dg_http_req *r, void *ud)
{
    struct job *j = ud;
    j->client = NULL;
}

/* The CP stored the request (200) or not. It has been running meanwhile: only now does its
 * client get the id, and its result go to the CP; not stored, it is cancelled. */
static void submit_stored(void *ud, int status, struct dg_str body, const char *err)
{
    struct job *j = ud;
    struct dg_http_req *r = j->client;
    j->client = NULL;
    if (r)
        dg_http_req_on_abort(r, NULL, NULL);
    if (status == 200) {
        j->stored = true;
        if (r) /* (a client that left meanwhile: the request runs all the same) */
            dg_http_respond(r, 200, "text/plain; charset=utf-8", j->req.id, strlen(j->req.id));
        if (j->result)
            post_result(j);
        return;
    }
    if (err) /* no answer: it may be stored all the same; the next claim takes it if so */
        claim_lost();
    if (r) {
        if (err)
            dg_http_respond_text(r, 503,
                                 "asynchronous request not accepted: the control plane did not "
                                 "store it (%s): try again",
                                 err);
        else
            dg_http_respond_text(r,
                                 status == 429   ? 429
                                 : status >= 500 ? 503
                                                 : 500,
                                 "asynchronous request not accepted: the control plane answered "
                                 "%d: %.*s",
                                 status, (int)DG_MIN(body.len, 300), body.ptr);
    }
    uv_timer_stop(&j->timer);
    job_free(j);
}

static void async_submit(struct dg_http_req *r, void *ud)
{
    struct dp *dp = ud;
    struct dg_str host;
    struct dp_function *f = dp_function_of(dp, r, &host);
    if (!f) {
        if (dg_str_eq(dg_http_req_path(r), "/health")) {
            dg_http_respond(r, 200, "text/plain", "ok\n", 3);
            return;
        }
        dg_http_respond_text(r, 404, "function '%.*s' is not registered", (int)host.len,
                             host.ptr ? host.ptr : "");
        return;
    }
    if (A.njobs >= A.max_pending) {
        dg_http_respond_text(r, 429,
                             "too many asynchronous requests not finished on this data plane "
                             "(asyncMaxPending %u): try again later",
                             A.max_pending);
        return;
    }
    struct dg_str body = dg_http_req_body(r), url = dg_http_req_url(r);
    if (body.len > DG_WIRE_ASYNC_BODY_MAX) {
        dg_http_respond_text(r, 413, "an asynchronous request's body is at most %d bytes (got %zu)",
                             DG_WIRE_ASYNC_BODY_MAX, body.len);
        return;
    }
    if (url.len == 0 || url.ptr[0] != '/' || url.len > DG_WIRE_ARG_MAX || !printable(url, false)) {
        dg_http_respond_text(r, 400,
                             "an asynchronous request's target must be a path of printable "
                             "ASCII of at most %d bytes",
                             DG_WIRE_ARG_MAX);
        return;
    }
    size_t n;
    const struct dg_http_header *in = dg_http_req_headers(r, &n);
    struct dg_wire_async_req req = {0};
    char id[37];
    new_id(id);
    req.id = dg_xstrdup(id);
    req.dataplane = dg_xstrdup(dp->name);
    req.function = dg_xstrdup(f->name);
    req.method = dg_xstrdup(dg_http_req_method(r));
    req.url = dg_str_dup(url);
    req.accepted_ms = (int64_t)dg_wall_ms();
    req.headers = dg_xcalloc(DG_WIRE_ASYNC_HEADERS_MAX, sizeof(*req.headers));
    for (size_t i = 0; i < n && req.nheaders < DG_WIRE_ASYNC_HEADERS_MAX; i++) {
        /* what the wire keeps: end-to-end headers of printable ASCII (others are dropped) */
        if (hop_by_hop(in[i].name) || in[i].name.len > 256 || in[i].value.len > 8192 ||
            !token(in[i].name) || !printable(in[i].value, true))
            continue;
        struct dg_wire_async_header *h = &req.headers[req.nheaders++];
        h->name = dg_str_dup(in[i].name);
        h->value = dg_str_dup(in[i].value);
    }
    req.body = dg_wire_b64_encode(body.ptr, body.len);
    char *msg = dg_wire_async_req_dumps(&req);
    free(req.body);
    req.body = dg_xstrdup(""); /* the job keeps the decoded body */
    char *copy = dg_xmalloc(body.len + 1);
    memcpy(copy, body.ptr, body.len);
    /* it runs while the CP stores it (the store's fsync is not on its latency); the client
     * gets the id, and the CP the result, only once it is stored */
    struct job *j = job_new(&req, copy, body.len);
    j->t_accept_us = dg_now_us(); /* µs: a run of less than a ms still shows (not 0) */
    j->client = r;
    dg_http_req_on_abort(r, submit_abort, j);
    job_run(j); /* first: a failed send only schedules a retry, j stays */
    cp_call("POST", DG_WIRE_PATH_ASYNC, msg, A.cp->n + 1, submit_stored, j);
}

/* ---- results ------------------------------------------------------------------------------- */

struct fetch {
    struct dg_http_req *r;
    uint64_t t0_us;
    char id[DG_WIRE_ASYNC_ID_MAX + 1];
};

static void fetch_abort(struct dg_http_req *r, void *ud)
{
    struct fetch *f = ud;
    f->r = NULL;
}

/* A fetch that has no result to give: `status` with an empty body (InVitro reads any
 * non-empty body as the function's answer, an empty one as "no result", as the original's empty
 * 400) and the reason in X-Dirigent-Error. */
static void fetch_refuse(struct dg_http_req *r, int status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    dg_http_resp_header(r, DG_WIRE_HDR_ERROR, msg);
    dg_http_respond(r, status, NULL, NULL, 0);
}

static void fetched(void *ud, int status, struct dg_str body, const char *err)
{
    struct fetch *f = ud;
    struct dg_http_req *r = f->r;
    if (!r) {
        free(f);
        return;
    }
    dg_http_req_on_abort(r, NULL, NULL);
    if (status == 404) {
        fetch_refuse(r, 404, "asynchronous request %s: unknown or expired", f->id);
    } else if (status == 204) {
        dg_http_respond(r, 204, NULL, NULL, 0); /* not finished */
    } else if (status != 200) {
        if (err)
            fetch_refuse(r, 503, "asynchronous request %s: the control plane: %s: try again", f->id,
                         err);
        else
            fetch_refuse(r, 503,
                         "asynchronous request %s: the control plane answered %d: try again", f->id,
                         status);
    } else {
        struct dg_wire_async_state st;
        struct dg_err e = {0};
        char *out = NULL;
        size_t len = 0;
        if (dg_wire_async_state_parse(body.ptr, body.len, &st, &e) < 0) {
            fetch_refuse(r, 502, "asynchronous request %s: the control plane's record: %s", f->id,
                         e.msg);
        } else {
            if (!st.has_result) {
                dg_http_respond(r, 204, NULL, NULL, 0); /* not finished */
            } else if (dg_wire_b64_decode(st.result.body, &out, &len) < 0) {
                fetch_refuse(r, 502, "asynchronous request %s: a bad stored body", f->id);
            } else {
                char us[32];
                snprintf(us, sizeof(us), "%llu",
                         (unsigned long long)((uint64_t)st.result.duration_us +
                                              (dg_now_us() - f->t0_us)));
                dg_http_resp_header(r, "Duration-Microseconds", us);
                dg_http_respond(r, (int)st.result.status, st.result.content_type, out, len);
                free(out);
            }
            dg_wire_async_state_free(&st);
        }
    }
    free(f);
}

static void async_fetch(struct dg_http_req *r, void *ud)
{
    struct dg_str id = dg_http_req_body(r);
    while (id.len &&
           (id.ptr[id.len - 1] == '\n' || id.ptr[id.len - 1] == '\r' || id.ptr[id.len - 1] == ' '))
        id.len--;
    if (id.len == 0) { /* no body: the path /ID */
        id = dg_http_req_path(r);
        if (id.len && id.ptr[0] == '/')
            id.ptr++, id.len--;
    }
    if (!dg_wire_async_id_ok(id.ptr, id.len)) {
        char q[80];
        size_t k = 0;
        for (; k < id.len && k < 40; k++)
            q[k] = id.ptr[k] >= 0x20 && id.ptr[k] < 0x7f ? id.ptr[k] : '?';
        q[k] = '\0';
        dg_http_respond_text(r, 400,
                             "expected the id an asynchronous submission answered (1..%d of "
                             "0-9 a-f -) as the request body, or as the path /ID; got '%s'%s",
                             DG_WIRE_ASYNC_ID_MAX, q, id.len > 40 ? "..." : "");
        return;
    }
    struct fetch *f = dg_xcalloc(1, sizeof(*f));
    f->r = r;
    f->t0_us = dg_now_us();
    memcpy(f->id, id.ptr, id.len);
    dg_http_req_on_abort(r, fetch_abort, f);
    char *path = dg_xasprintf(DG_WIRE_PATH_ASYNC "/%s", f->id);
    cp_call("GET", path, NULL, A.cp->n + 1, fetched, f);
    free(path);
}

/* ---- claim at start ------------------------------------------------------------------------ */

static void claim(uv_timer_t *t);

/* A claim's answer did not arrive (or could not be read). The CP may have handed records in it
 * (marked with this boot; orphans rewritten as this DP's): they would never come again. So the
 * next claim is a whole one (this DP's own requests, not only orphans) under a new boot; the
 * requests already running here are skipped. */
static void claim_lost(void)
{
    A.claimed = false;
    A.boot = 0;
    A.page = 0;
}

static void claimed(void *ud, int status, struct dg_str body, const char *err)
{
    if (status != 200) { /* soon again (a warning for the first of a row of failures) */
        dg_log(A.claim_failing ? DG_LOG_DEBUG : DG_LOG_WARN, "async",
               "claiming unfinished requests: %s%.*s; again in 1 s", err ? err : "",
               err ? 0 : (int)DG_MIN(body.len, 300), body.ptr ? body.ptr : "");
        A.claim_failing = true;
        claim_lost();
        uv_timer_start(&A.claim_timer, claim, 1000, 0);
        return;
    }
    A.claim_failing = false;
    struct dg_wire_async_batch b;
    struct dg_err e = {0};
    if (dg_wire_async_batch_parse(body.ptr, body.len, &b, &e) < 0) {
        dg_log(DG_LOG_ERROR, "async", "claiming unfinished requests: %s; again in %d s", e.msg,
               CLAIM_EVERY_MS / 1000);
        claim_lost();
        uv_timer_start(&A.claim_timer, claim, CLAIM_EVERY_MS, 0);
        return;
    }
    unsigned n = 0;
    for (size_t i = 0; i < b.nrequests; i++) {
        struct dg_wire_async_req *q = &b.requests[i];
        char *data = NULL;
        size_t len = 0;
        if (dg_strmap_get(&A.jobs, dg_str_c(q->id)) || dg_wire_b64_decode(q->body, &data, &len) < 0)
            continue;
        struct dg_wire_async_req taken = *q;
        memset(q, 0, sizeof(*q));
        struct job *j = job_new(&taken, data, len);
        j->stored = true;
        job_run(j);
        n++;
    }
    bool more = b.more;
    dg_wire_async_batch_free(&b);
    if (!A.claimed || n)
        dg_log_always("async", "%u unfinished asynchronous requests taken over%s", n,
                      more ? ", more to come" : "");
    if (more) { /* the answer was cut below the body limit: the rest at once */
        A.page++;
        uv_timer_start(&A.claim_timer, claim, 0, 0);
        return;
    }
    A.claimed = true;
    A.boot = 0; /* the next claim is a new one */
    A.page = 0;
    uv_timer_start(&A.claim_timer, claim, CLAIM_EVERY_MS, 0); /* lost data planes' */
}

static void claim(uv_timer_t *t)
{
    if (!A.boot) { /* a new claim, for the CP's pages of it */
        uint64_t b = 0;
        if (getrandom(&b, sizeof(b), 0) != (ssize_t)sizeof(b))
            b = dg_now_us();
        A.boot = (int64_t)(b & ((1ull << 53) - 1)) | 1;
    }
    /* other data planes' requests only up to asyncMaxPending here (at least 1 in a whole
     * claim: 0 would be no bound); a claim for orphans alone waits while there is no room */
    if (A.claimed && A.njobs >= A.max_pending) {
        A.boot = 0;
        A.page = 0;
        uv_timer_start(&A.claim_timer, claim, CLAIM_EVERY_MS, 0);
        return;
    }
    struct dg_wire_async_claim c = {
        .dataplane = A.dp->name,
        .orphans_only = A.claimed,
        .boot = A.boot,
        .page = A.page,
        .max_orphans = A.njobs < A.max_pending ? (int64_t)(A.max_pending - A.njobs) : 1};
    cp_call("POST", DG_WIRE_PATH_ASYNC_CLAIM, dg_wire_async_claim_dumps(&c), A.cp->n + 1, claimed,
            NULL);
}

/* ---- start and stop ------------------------------------------------------------------------ */

int dp_async_start(struct dp *dp, struct dg_http_server *ingress, const struct dp_async_config *c,
                   struct dg_err *err)
{
    A.dp = dp;
    A.start_us = dg_now_us();
    A.retries = c->retries ? c->retries : 1;
    A.max_pending = c->max_pending;
    A.cp = c->cp;
    A.bearer = c->bearer ? dg_xstrdup(c->bearer) : NULL;
    /* the ordinary proxy on loopback: what the jobs go through */
    A.runner = dg_http_server_new(dp->loop, c->limits, "async-runner");
    dg_http_set_fallback(A.runner, dp_invoke, dp, DG_HTTP_STREAM);
    struct dg_http_limits rl = *c->limits;
    rl.max_body_bytes = RESULT_BODY_MAX;
    A.reader = dg_http_server_new(dp->loop, &rl, "async-results");
    dg_http_set_fallback(A.reader, async_fetch, dp, 0);
    if (dg_http_server_listen(A.runner, "127.0.0.1", 0, err) < 0 ||
        dg_http_server_listen(A.reader, c->host, c->port_read, err) < 0)
        return dg_err_wrap(err, "portProxyRead");
    A.open_servers = 2;
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    /* each try in flight holds a loopback connection (two descriptors): at most half what the
     * runner takes from one client (127.0.0.1); the other tries wait in the pool's FIFO, where
     * no timeout runs (a refused connection would be a failed try) */
    unsigned per =
        c->limits->max_conns_per_client ? c->limits->max_conns_per_client : c->limits->max_conns;
    o.max_conns = per >= 2 ? per / 2 : 1;
    if (!per)
        o.max_conns = 1024;
    o.max_idle = DG_MIN(256u, o.max_conns);
    o.request_timeout_ms = 15 * 60 * 1000; /* as the proxy's own upstreams */
    A.run_pool = dg_http_pool_new(dp->loop, "127.0.0.1", dg_http_server_port(A.runner), &o, err);
    if (!A.run_pool)
        return -1;
    dg_http_set_fallback(ingress, async_submit, dp, 0);
    uv_timer_init(dp->loop, &A.claim_timer);
    uv_timer_start(&A.claim_timer, claim, 0, 0);
    return 0;
}

int dp_async_read_port(void)
{
    return A.reader ? dg_http_server_port(A.reader) : 0;
}

static void server_closed(void *ud)
{
    if (--A.open_servers > 0)
        return;
    while (A.calls) {
        struct cp_call *c = A.calls;
        if (c->q)
            dg_http_creq_cancel(c->q);
        if (c->cb == fetched) /* its owner goes too (a job goes below) */
            free(c->ud);
        call_free(c);
    }
    while (A.head)
        job_free(A.head);
    dg_strmap_free(&A.jobs);
    if (A.cp_pool)
        dg_http_pool_close(A.cp_pool);
    if (A.run_pool)
        dg_http_pool_close(A.run_pool);
    uv_close((uv_handle_t *)&A.claim_timer, NULL);
    free(A.bearer);
    A.stop_done(A.stop_ud);
}

void dp_async_stop(uint64_t grace_ms, void (*done)(void *ud), void *ud)
{
    A.stopping = true;
    A.stop_done = done;
    A.stop_ud = ud;
    dg_http_server_close(A.runner, grace_ms, server_closed, NULL);
    dg_http_server_close(A.reader, grace_ms, server_closed, NULL);
}
