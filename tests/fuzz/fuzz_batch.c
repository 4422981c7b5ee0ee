/*
 * fuzz_batch.c: libFuzzer target for the batch client's NDJSON reader
 * (lib/batch.c: the answer to a batch streams one line per item,
 * {"i":K,"status":S,"body":"..."}; a worker or data plane answers the control
 * plane's batches this way).
 *
 * A real dg_http_server on 127.0.0.1 answers every batch with the fuzz input
 * as its body, in pieces written on separate loop turns; a dg_http_pool on the
 * same loop sends the batch (dg_batch_flush). Input: the first byte steers,
 * the rest is the body.
 *   bits 0-2  items in the batch (1..8)
 *   bits 3-4  extra split points of the body (0-3)
 *   bit 5     the answer's status is 503 instead of 200 (every item gets the
 *             whole body then)
 *   bit 6     Content-Length instead of chunked
 * Checked besides memory safety: every item's callback runs exactly once,
 * with a response or an error, within a bounded number of loop turns; an item
 * answered from a line gets that line's status and a body that is a view into
 * valid memory (read in full here).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "dirigent/batch.h"
#include "dirigent/http.h"
#include "dirigent/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TURNS 2000

static uv_loop_t loop;
static struct dg_http_server *srv;
static int port;

/* the current input's answer */
static const char *body;
static size_t body_len, cuts[5], ncuts, next_piece;
static int status;
static bool use_length;
static struct dg_http_req *pending;
static uv_timer_t piece_timer;

static unsigned calls[8];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_batch: %s\n", what);
    abort();
}

static void write_piece(uv_timer_t *t)
{
    (void)t;
    if (!pending)
        return;
    size_t a = cuts[next_piece], b = cuts[next_piece + 1];
    if (b > a)
        dg_http_resp_write(pending, body + a, b - a);
    next_piece++;
    if (next_piece + 1 >= ncuts) {
        dg_http_resp_end(pending);
        pending = NULL;
        return;
    }
    uv_timer_start(&piece_timer, write_piece, 0, 0);
}

static void on_abort(struct dg_http_req *r, void *ud)
{
    (void)r;
    (void)ud;
    pending = NULL;
}

static void h_batch(struct dg_http_req *r, void *ud)
{
    (void)ud;
    pending = r;
    next_piece = 0;
    dg_http_req_on_abort(r, on_abort, NULL);
    dg_http_resp_header(r, "Content-Type", "application/x-ndjson");
    dg_http_resp_start(r, status, use_length ? (int64_t)body_len : -1);
    uv_timer_start(&piece_timer, write_piece, 0, 0);
}

static void item_cb(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    size_t i = (size_t)(uintptr_t)ud;
    calls[i]++;
    if (!resp && (!err || err->msg[0] == '\0'))
        die("an item answered with neither a response nor an error");
    if (resp) {
        volatile unsigned sum = 0;
        for (size_t k = 0; k < resp->body.len; k++)
            sum += (unsigned char)resp->body.ptr[k];
        (void)sum;
    }
}

static void init(void)
{
    dg_log_set_level(DG_LOG_ERROR + 1);
    uv_loop_init(&loop);
    uv_timer_init(&loop, &piece_timer);
    struct dg_http_limits l;
    dg_http_limits_default(&l);
    srv = dg_http_server_new(&loop, &l, "fuzz");
    dg_http_route(srv, "POST", "/batch", h_batch, NULL, 0);
    struct dg_err err = {0};
    if (dg_http_server_listen(srv, "127.0.0.1", 0, &err) != 0)
        die(err.msg);
    port = dg_http_server_port(srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        init();
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    size_t nitems = (ctl & 7) + 1, extra = (ctl >> 3) & 3;
    body = (const char *)data + 1;
    body_len = size - 1;
    status = (ctl & 32) ? 503 : 200;
    use_length = (ctl & 64) != 0;
    /* cut points spread over the body: 0, ..., len */
    ncuts = 0;
    cuts[ncuts++] = 0;
    for (size_t k = 1; k <= extra; k++)
        cuts[ncuts++] = body_len * k / (extra + 1);
    cuts[ncuts++] = body_len;

    struct dg_err err = {0};
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.request_timeout_ms = 2000;
    struct dg_http_pool *pool = dg_http_pool_new(&loop, "127.0.0.1", port, &o, &err);
    if (!pool)
        die(err.msg);
    memset(calls, 0, sizeof(calls));
    struct dg_batch *b = dg_batch_new("/batch");
    for (size_t i = 0; i < nitems; i++)
        dg_batch_add(b, json_pack("{s:I}", "n", (json_int_t)i), item_cb, (void *)(uintptr_t)i);
    dg_batch_flush(b, pool);
    dg_batch_free(b, NULL);
    for (int turn = 0; turn < MAX_TURNS; turn++) {
        size_t done = 0;
        for (size_t i = 0; i < nitems; i++)
            done += calls[i] > 0;
        if (done == nitems)
            break;
        uv_run(&loop, UV_RUN_ONCE);
    }
    for (size_t i = 0; i < nitems; i++)
        if (calls[i] != 1)
            die(calls[i] ? "an item answered twice" : "an item never answered");
    dg_http_pool_close(pool);
    for (int turn = 0; turn < 50 && (pending || uv_loop_alive(&loop)); turn++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
