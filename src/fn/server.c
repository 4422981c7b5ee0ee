/*
 * dirigent-fn's server (server.h): the HTTP API, the work on libuv's thread pool and the
 * start-up busy loop, compatible with InVitro's workload (DESIGN.md §8).
 *
 *   GET /health   -> 200 "ok"
 *   GET /metrics  -> Prometheus text
 *   POST /faas.Executor/Execute with content-type application/grpc -> InVitro's gRPC call
 *                    (FaasRequest -> FaasReply, grpc-status in the trailers)
 *   anything else -> busy-spin for `requested_cpu` ms (header), then
 *                    {"Status":"OK","Function":...,"MachineName":...,"ExecutionTime":<us>}
 *
 * Headers: `workload` ("empty" answers at once with Status "OK - EMPTY"),
 * `function` (echoed; the Host header when absent), `requested_cpu` (ms of
 * CPU to spin), `multiplier` (InVitro's iterations per ms: when given, the
 * work is exactly multiplier x requested_cpu iterations of 100 square roots,
 * as InVitro's trace function; when absent, the spin lasts requested_cpu ms
 * of wall-clock time). `requested_memory` is ignored, as the original
 * workload ignores it: InVitro sends the function's whole memory there while
 * it registers a tenth of it, so touching it would get the sandbox OOM-killed.
 * With allocateRequestedMemory, the work allocates and touches that many MiB.
 *
 * Start-up: before it listens (so before it is ready), it runs the start-up
 * busy loop of the original workload: ITERATIONS_MULTIPLIER (default 102) x
 * COLD_START_BUSY_LOOP_MS iterations, from the environment the worker sets
 * from the registration's iteration_multiplier and cold_start_busy_loop_ms.
 *
 * HTTP/1.1 and h2c (prior knowledge and upgrade) on one port: the library's server turns each
 * HTTP/2 stream into a request like any other (lib/http2_server.c).
 *
 * The spin runs on libuv's thread pool, so /health answers during long work
 * and several requests can run at once (UV_THREADPOOL_SIZE, default 4).
 *
 *   any method /_dirigent/allocate?mib=N -> allocate and touch N MiB (at most
 *                    maxMemoryMiB), free them, answer as an invocation. A
 *                    deliberate way past a sandbox's memory limit (what an OOM
 *                    kill looks like; tests), independent of requested_memory.
 *                    Only with allocateEndpoint (DIRIGENT_FN_ALLOCATE_ENDPOINT=true
 *                    in the registration's env_vars): allocation stays behind an
 *                    explicit option, as issue 12 asks of requested_memory.
 *
 * In a sandbox the worker sets DIRIGENT_SANDBOX_ID; a request whose X-Dirigent-Sandbox names
 * another sandbox is answered 421 with this one's id (and not run): the data plane's endpoint
 * is stale, its address now this sandbox's (docs/security.md "Endpoints and address reuse").
 */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dirigent/log.h"
#include "dirigent/wire.h"
#include "faas_pb.h"
#include "workload.h"

/* A request over HTTP/1.1 or an HTTP/2 stream (the library's server serves both): a gRPC call
 * is answered in gRPC's terms. */
struct fn_req {
    struct dg_http_req *r;
    bool grpc;             /* a faas.Executor/Execute call */
    uint32_t grpc_mem_mib; /* its memoryInMebiBytes */
};

static struct dg_str req_header(struct fn_req q, const char *name)
{
    return dg_http_req_header(q.r, name);
}

/* One FaasReply message (length-prefixed) and trailers grpc-status 0. */
static void grpc_reply(struct dg_http_req *r, const void *msg, size_t len)
{
    uint8_t pre[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    dg_http_resp_header(r, "content-type", "application/grpc");
    dg_http_resp_start(r, 200, -1);
    dg_http_resp_write(r, pre, sizeof(pre));
    dg_http_resp_write(r, msg, len);
    dg_http_resp_trailer(r, dg_str_c("grpc-status"), dg_str_c("0"));
    dg_http_resp_end(r);
}

/* A text/plain answer (a newline appended), with an extra header when `hname` is not NULL. */
static void DG_PRINTF(5, 6) req_respond_text(struct fn_req q, int status, const char *hname,
                                             const char *hvalue, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg) - 1, fmt, ap);
    va_end(ap);
    (void)n;
    if (q.grpc) { /* gRPC's codes: INVALID_ARGUMENT for what the caller sent, else INTERNAL */
        dg_http_respond_grpc(q.r, status == 400 ? 3 : 13, "%s", msg);
        return;
    }
    if (hname)
        dg_http_resp_header(q.r, hname, hvalue);
    dg_http_respond_text(q.r, status, "%s", msg);
}

struct job {
    uv_work_t work;
    struct fn *fn;
    struct fn_req req;
    uint64_t cpu_ms, multiplier, memory_mib, exec_us, iterations;
    const char *status;
};

/* Append `s` as a JSON string literal (quotes included), copying runs of plain bytes. */
static void json_str(struct dg_buf *b, struct dg_str s)
{
    dg_buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch != '"' && ch != '\\' && ch >= 0x20)
            continue;
        dg_buf_append(b, s.ptr + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            dg_buf_append(b, esc, 2);
        } else {
            dg_buf_printf(b, "\\u%04x", ch);
        }
    }
    dg_buf_append(b, s.ptr + run, s.len - run);
    dg_buf_append(b, "\"", 1);
}

static void buf_u64(struct dg_buf *b, uint64_t v)
{
    char tmp[20];
    dg_buf_append(b, tmp, dg_fmt_u64(tmp, v));
}

/* The body is built in one buffer reused for every response (dg_http_respond writes or
 * copies it before returning), with the constant MachineName part formatted once. */
/* FaasReply as InVitro's gRPC workload: "<status> - <machine>", the duration, and the
 * requested memory in KiB. */
static void respond_grpc(struct fn *f, struct fn_req r, const char *status, uint64_t exec_us)
{
    char msg[320];
    int n = snprintf(msg, sizeof(msg), "%s - %s", status, f->machine);
    struct faas_reply rep = {msg, (size_t)DG_MIN(n, (int)sizeof(msg) - 1),
                             (uint32_t)DG_MIN(exec_us, UINT32_MAX), r.grpc_mem_mib * 1024u};
    uint8_t out[512];
    size_t len = faas_reply_encode(&rep, out, sizeof(out));
    grpc_reply(r.r, out, len);
    dg_counter_add(f->invocations, 1);
}

static void respond_result(struct fn *f, struct fn_req r, const char *status, uint64_t exec_us)
{
    if (r.grpc) {
        respond_grpc(f, r, status, exec_us);
        return;
    }
    struct dg_str name = req_header(r, "function");
    if (!name.ptr)
        name = req_header(r, "host");
    struct dg_buf *b = &f->body;
    dg_buf_reset(b);
    dg_buf_puts(b, "{\"Status\":\"");
    dg_buf_puts(b, status);
    dg_buf_puts(b, "\",\"Function\":");
    json_str(b, name);
    dg_buf_append(b, f->machine_tail.data, f->machine_tail.len);
    buf_u64(b, exec_us);
    dg_buf_append(b, "}", 1);
    dg_http_respond(r.r, 200, "application/json", b->data, b->len);
    dg_counter_add(f->invocations, 1);
}

/* Parse an optional non-negative integer header; 400 naming it on junk or over `max`. */
static bool header_u64(struct fn *f, struct fn_req r, const char *name, uint64_t max, uint64_t *out)
{
    struct dg_str v = req_header(r, name);
    *out = 0;
    if (!v.ptr || v.len == 0)
        return true;
    if (!dg_str_to_u64(v, out) || *out > max) {
        dg_counter_add(f->bad_requests, 1);
        req_respond_text(r, 400, NULL, NULL, "header '%s': expected an integer 0..%llu, got '%.*s'",
                         name, (unsigned long long)max, (int)DG_MIN(v.len, 64), v.ptr);
        return false;
    }
    return true;
}

static void job_work(uv_work_t *w)
{
    struct job *j = DG_CONTAINER_OF(w, struct job, work);
    uint64_t start = dg_now_us();
    char *mem = NULL;
    size_t bytes = (size_t)j->memory_mib << 20;
    if (bytes) {
        mem = malloc(bytes);
        if (mem) /* touch every page so the memory is really used */
            for (size_t i = 0; i < bytes; i += 4096)
                mem[i] = (char)i;
    }
    if (j->multiplier) {
        j->iterations = j->multiplier * j->cpu_ms;
        fn_work_iterations(j->iterations);
    } else {
        j->iterations = fn_spin_ms(j->cpu_ms);
    }
    free(mem);
    j->exec_us = dg_now_us() - start;
}

static void job_done(uv_work_t *w, int status)
{
    struct job *j = DG_CONTAINER_OF(w, struct job, work);
    dg_counter_add(j->fn->spin_seconds, (double)j->exec_us / 1e6);
    dg_counter_add(j->fn->iterations, (double)j->iterations);
    respond_result(j->fn, j->req, j->status, j->exec_us);
    free(j);
}

/* A request the data plane meant for another sandbox: answered 421 with this one's id. */
static bool misdirected(struct fn *f, struct fn_req r)
{
    struct dg_str want = req_header(r, DG_WIRE_HDR_SANDBOX);
    if (!f->sandbox_id[0] || !want.ptr || dg_str_eq(want, f->sandbox_id))
        return false;
    dg_counter_add(f->bad_requests, 1);
    req_respond_text(r, 421, DG_WIRE_HDR_SANDBOX, f->sandbox_id,
                     "sandbox %s is not %.*s: a stale route (this address was given to "
                     "another sandbox)",
                     f->sandbox_id, (int)DG_MIN(want.len, 128), want.ptr);
    return true;
}

static void invoke(struct fn *f, struct fn_req r)
{
    if (misdirected(f, r))
        return;
    uint64_t cpu_ms, mult, mem = 0;
    if (!header_u64(f, r, "requested_cpu", (uint64_t)f->cfg.max_cpu_ms, &cpu_ms) ||
        !header_u64(f, r, "multiplier", 1000000000u, &mult) ||
        (f->cfg.allocate_memory &&
         !header_u64(f, r, "requested_memory", (uint64_t)f->cfg.max_memory_mib, &mem)))
        return;
    struct dg_str workload = req_header(r, "workload");
    bool empty = workload.ptr && dg_str_caseeq(workload, "empty");
    if (empty || (cpu_ms == 0 && mem == 0)) {
        respond_result(f, r, empty ? "OK - EMPTY" : "OK", 0);
        return;
    }
    struct job *j = dg_xcalloc(1, sizeof(*j));
    j->fn = f;
    j->req = r;
    j->cpu_ms = cpu_ms;
    j->multiplier = mult;
    j->memory_mib = mem;
    j->status = "OK";
    int rc = uv_queue_work(f->loop, &j->work, job_work, job_done);
    if (rc < 0) {
        free(j);
        req_respond_text(r, 500, NULL, NULL, "cannot start the work: %s", uv_strerror(rc));
    }
}

static bool is_grpc(struct dg_http_req *r)
{
    struct dg_str ctype = dg_http_req_header(r, "content-type");
    return ctype.ptr && ctype.len >= 16 && strncasecmp(ctype.ptr, "application/grpc", 16) == 0;
}

/* Any other path: an invocation; a gRPC call of another method: UNIMPLEMENTED. */
static void on_invoke(struct dg_http_req *r, void *ud)
{
    struct fn *f = ud;
    if (is_grpc(r)) {
        struct dg_str path = dg_http_req_path(r);
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_grpc(r, 12,
                             "unknown method %.*s: dirigent-fn serves /faas.Executor/Execute",
                             (int)DG_MIN(path.len, 128), path.ptr ? path.ptr : "");
        return;
    }
    invoke(f, (struct fn_req){.r = r});
}

/* gRPC faas.Executor/Execute (InVitro's gRPC invoker): runtimeInMilliSec of work as InVitro's
 * gRPC workload does it (iterationsMultiplier x ms iterations), memoryInMebiBytes touched only
 * with allocateRequestedMemory (as requested_memory over HTTP). */
static void on_grpc_execute(struct dg_http_req *st, void *ud)
{
    struct fn *f = ud;
    if (!is_grpc(st)) { /* not gRPC: an invocation like any other path */
        invoke(f, (struct fn_req){.r = st});
        return;
    }
    struct dg_str body = dg_http_req_body(st);
    const uint8_t *p = (const uint8_t *)body.ptr;
    size_t len = body.len;
    uint32_t mlen =
        len >= 5 ? (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4] : 0;
    struct faas_request q;
    const char *err = NULL;
    if (len < 5 || mlen != len - 5) {
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_grpc(st, 3, "%s", "expected one length-prefixed FaasRequest message");
        return;
    }
    if (p[0] != 0) {
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_grpc(st, 12,
                             "compressed messages are not supported (grpc-encoding identity)");
        return;
    }
    if (faas_request_decode(p + 5, mlen, &q, &err) < 0) {
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_grpc(st, 3, "FaasRequest: %s", err);
        return;
    }
    if (q.runtime_ms > (uint64_t)f->cfg.max_cpu_ms ||
        (f->cfg.allocate_memory && q.memory_mib > (uint64_t)f->cfg.max_memory_mib)) {
        bool cpu = q.runtime_ms > (uint64_t)f->cfg.max_cpu_ms;
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_grpc(st, 3, "%s: expected 0..%lld (%s), got %u",
                             cpu ? "runtimeInMilliSec" : "memoryInMebiBytes",
                             (long long)(cpu ? f->cfg.max_cpu_ms : f->cfg.max_memory_mib),
                             cpu ? "maxCpuMs" : "maxMemoryMiB", cpu ? q.runtime_ms : q.memory_mib);
        return;
    }
    struct fn_req r = {.r = st, .grpc = true, .grpc_mem_mib = q.memory_mib};
    uint64_t mem = f->cfg.allocate_memory ? q.memory_mib : 0;
    if (q.runtime_ms == 0 && mem == 0) {
        respond_result(f, r, "OK", 0);
        return;
    }
    struct job *j = dg_xcalloc(1, sizeof(*j));
    j->fn = f;
    j->req = r;
    j->cpu_ms = q.runtime_ms;
    j->multiplier = (uint64_t)f->cfg.startup_multiplier;
    j->memory_mib = mem;
    j->status = "OK";
    int rc = uv_queue_work(f->loop, &j->work, job_work, job_done);
    if (rc < 0) {
        free(j);
        dg_http_respond_grpc(st, 13, "cannot start the work: %s", uv_strerror(rc));
    }
}

/* ---- /_dirigent/allocate ---------------------------------------------------------------- */

struct alloc_job {
    uv_work_t work;
    struct fn *fn;
    struct dg_http_req *req;
    uint64_t mib, exec_us;
    bool failed;
};

static void alloc_work(uv_work_t *w)
{
    struct alloc_job *j = DG_CONTAINER_OF(w, struct alloc_job, work);
    uint64_t start = dg_now_us();
    size_t bytes = (size_t)j->mib << 20;
    char *mem = malloc(bytes ? bytes : 1);
    j->failed = !mem;
    for (size_t i = 0; mem && i < bytes; i += 4096) /* every page: really used */
        mem[i] = (char)i;
    free(mem);
    j->exec_us = dg_now_us() - start;
}

static void alloc_done(uv_work_t *w, int status)
{
    struct alloc_job *j = DG_CONTAINER_OF(w, struct alloc_job, work);
    if (j->failed)
        dg_http_respond_text(j->req, 500, "cannot allocate %llu MiB", (unsigned long long)j->mib);
    else
        respond_result(j->fn, (struct fn_req){.r = j->req}, "OK", j->exec_us);
    free(j);
}

static void on_allocate(struct dg_http_req *r, void *ud)
{
    struct fn *f = ud;
    if (misdirected(f, (struct fn_req){.r = r}))
        return;
    struct dg_str q = dg_http_req_query(r);
    uint64_t mib = 0;
    if (!q.ptr || q.len < 5 || memcmp(q.ptr, "mib=", 4) != 0 ||
        !dg_str_to_u64((struct dg_str){q.ptr + 4, q.len - 4}, &mib) ||
        mib > (uint64_t)f->cfg.max_memory_mib) {
        dg_counter_add(f->bad_requests, 1);
        dg_http_respond_text(r, 400, "allocate: expected ?mib=N with N 0..%lld (maxMemoryMiB)",
                             (long long)f->cfg.max_memory_mib);
        return;
    }
    struct alloc_job *j = dg_xcalloc(1, sizeof(*j));
    j->fn = f;
    j->req = r;
    j->mib = mib;
    int rc = uv_queue_work(f->loop, &j->work, alloc_work, alloc_done);
    if (rc < 0) {
        free(j);
        dg_http_respond_text(r, 500, "cannot start the work: %s", uv_strerror(rc));
    }
}

static void on_server_closed(void *ud)
{
    struct fn *f = ud;
    f->server = NULL;
    dg_daemon_deinit(&f->daemon);
}

void fn_on_stop(void *ud)
{
    struct fn *f = ud;
    atomic_store(&f->stopping, true);
    if (f->starting)
        return; /* startup_done sees it and ends the daemon */
    if (f->server)
        dg_http_server_close(f->server, (uint64_t)f->cfg.http.shutdown_grace_ms, on_server_closed,
                             f);
}

/* The original workload's start-up busy loop: multiplier x ms iterations, in slices of one
 * "millisecond" (multiplier iterations) so a SIGTERM ends it soon. */
static void startup_work(uv_work_t *w)
{
    struct fn *f = DG_CONTAINER_OF(w, struct fn, startup);
    uint64_t t0 = dg_now_us(), mult = (uint64_t)f->cfg.startup_multiplier;
    for (int64_t ms = 0; ms < f->cfg.startup_loop_ms && !atomic_load(&f->stopping); ms++) {
        fn_work_iterations(mult);
        f->startup_iterations += mult;
    }
    f->startup_us = dg_now_us() - t0;
}

static void startup_done(uv_work_t *w, int status)
{
    struct fn *f = DG_CONTAINER_OF(w, struct fn, startup);
    struct dg_err err = {0};
    f->starting = false;
    if (atomic_load(&f->stopping)) {
        dg_daemon_deinit(&f->daemon);
        return;
    }
    if (f->cfg.startup_loop_ms > 0)
        dg_log(DG_LOG_INFO, "fn", "start-up busy loop: %lld x %lld iterations in %.1f ms",
               (long long)f->cfg.startup_multiplier, (long long)f->cfg.startup_loop_ms,
               (double)f->startup_us / 1e3);
    dg_gauge_set(dg_metric_get1(dg_metrics_gauge(f->metrics, "dg_fn_startup_work_iterations",
                                                 "Iterations of the start-up busy loop done "
                                                 "before listening.",
                                                 NULL),
                                NULL),
                 (double)f->startup_iterations);
    struct dg_http_limits limits;
    dg_http_conf_limits(&f->cfg.http, &limits);
    f->server = dg_http_server_new(f->loop, &limits, "fn");
    dg_daemon_mount_health_metrics(f->server, f->metrics);
    if (f->cfg.allocate_endpoint)
        dg_http_route(f->server, NULL, "/_dirigent/allocate", on_allocate, f, 0);
    dg_http_route(f->server, NULL, "/faas.Executor/Execute", on_grpc_execute, f, 0);
    dg_http_set_fallback(f->server, on_invoke, f, 0);
    dg_http_server_enable_h2c(f->server); /* HTTP/1.1 and h2c on one port */
    if (dg_http_server_listen(f->server, f->cfg.host, f->port, &err) < 0) {
        dg_log(DG_LOG_ERROR, "fn", "%s", err.msg);
        exit(1); /* as before the loop ran: nothing to clean up that the exit does not */
    }
    dg_log_always("fn", "listening on %s:%d (machine %s)", f->cfg.host,
                  dg_http_server_port(f->server), f->machine);
}

void fn_init(struct fn *f, int port)
{
    f->port = port;
    if (gethostname(f->machine, sizeof(f->machine) - 1) == -1)
        snprintf(f->machine, sizeof(f->machine), "unknown");
    const char *sid = getenv(DG_WIRE_ENV_SANDBOX_ID);
    if (sid && dg_wire_id_ok(sid))
        snprintf(f->sandbox_id, sizeof(f->sandbox_id), "%s", sid);

    dg_buf_puts(&f->machine_tail, ",\"MachineName\":");
    json_str(&f->machine_tail, dg_str_c(f->machine));
    dg_buf_puts(&f->machine_tail, ",\"ExecutionTime\":");

    f->metrics = dg_metrics_new();
    f->invocations = dg_metric_get1(
        dg_metrics_counter(f->metrics, "dg_fn_invocations_total", "Invocations answered.", NULL),
        NULL);
    f->bad_requests = dg_metric_get1(dg_metrics_counter(f->metrics, "dg_fn_bad_requests_total",
                                                        "Invocations refused with 400.", NULL),
                                     NULL);
    f->spin_seconds = dg_metric_get1(dg_metrics_counter(f->metrics, "dg_fn_busy_seconds_total",
                                                        "CPU work done for invocations.", NULL),
                                     NULL);
    f->iterations = dg_metric_get1(
        dg_metrics_counter(f->metrics, "dg_fn_work_iterations_total",
                           "Iterations of the work unit (100 square roots) done for invocations.",
                           NULL),
        NULL);
}

int fn_start(struct fn *f, struct dg_err *err)
{
    /* the start-up loop runs on the thread pool: signals are still handled meanwhile. Without
     * one, listen now: a cold start waits for this, and the pool's threads are started only
     * when a request needs them */
    f->starting = true;
    if (f->cfg.startup_loop_ms == 0) {
        startup_done(&f->startup, 0);
        return 0;
    }
    int rc = uv_queue_work(f->loop, &f->startup, startup_work, startup_done);
    if (rc < 0)
        return dg_err_set(err, rc, "cannot start the start-up loop: %s", uv_strerror(rc));
    return 0;
}

void fn_deinit(struct fn *f)
{
    dg_metrics_free(f->metrics);
    dg_buf_free(&f->body);
    dg_buf_free(&f->machine_tail);
}
