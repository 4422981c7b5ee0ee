/*
 * test_batch.c: the batch reply sink against a real dg_http_server and the dg_batch client on
 * one loop. One handler function serves both a plain route (dg_batch_reply_single) and a
 * batch route (dg_batch_reply_start) holding only (reply, i): a single request's answer is an
 * ordinary HTTP response (status, Content-Type, exact body; text ends with a newline as
 * dg_http_respond_text's), a batch answers each item once in any order, and a client that
 * goes away hands exactly the unanswered items to on_abort.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/http.h"
#include "dirigent/wire.h"
#include "testlib.h"

static uv_loop_t loop;
static struct dg_http_server *srv;
static struct dg_http_pool *pool;

/* Items the handler holds to answer later; on_abort marks them. */
struct held {
    struct dg_batch_reply *b;
    size_t i;
    bool aborted;
};
static struct held held[8];
static size_t nheld, naborted;

static void item_aborted(void *ud)
{
    struct held *h = ud;
    if (!h)
        return;
    h->aborted = true;
    h->b = NULL;
    naborted++;
}

/* The one answer path: what item i of reply b asks for. */
static void serve(struct dg_batch_reply *b, size_t i, const char *what)
{
    if (strcmp(what, "json") == 0) {
        dg_batch_reply_answer(b, i, 201, "application/json", "{\"a\":1}", 7);
    } else if (strcmp(what, "later") == 0) {
        struct held *h = &held[nheld++];
        *h = (struct held){b, i, false};
        dg_batch_reply_set_ud(b, i, h);
    } else {
        dg_batch_reply_text(b, i, 400, "bad spec: %s", what);
    }
}

static void h_one(struct dg_http_req *r, void *ud)
{
    struct dg_str body = dg_http_req_body(r);
    char what[64];
    snprintf(what, sizeof(what), "%.*s", (int)body.len, body.ptr);
    struct dg_batch_reply *b = dg_batch_reply_single(r, item_aborted);
    assert_int_equal(dg_batch_reply_size(b), 1);
    serve(b, 0, what);
}

static unsigned many_requests; /* batch requests the server took */

static void h_many(struct dg_http_req *r, void *ud)
{
    many_requests++;
    json_t *root, *items, *item;
    struct dg_err err = {0};
    if (!(items = dg_batch_items(r, &root, &err))) {
        json_decref(root);
        dg_http_respond_text(r, 400, "%s", err.msg);
        return;
    }
    struct dg_batch_reply *b = dg_batch_reply_start(r, json_array_size(items), item_aborted);
    size_t i;
    json_array_foreach(items, i, item) serve(b, i, json_string_value(item));
    json_decref(root);
}

static int setup(void **state)
{
    uv_loop_init(&loop);
    srv = dg_http_server_new(&loop, NULL, "batch");
    dg_http_route(srv, "POST", "/one", h_one, NULL, 0);
    dg_http_route(srv, "POST", "/many", h_many, NULL, 0);
    struct dg_err err = {0};
    assert_int_equal(dg_http_server_listen(srv, "127.0.0.1", 0, &err), 0);
    pool = dg_http_pool_new(&loop, "127.0.0.1", dg_http_server_port(srv), NULL, &err);
    assert_non_null(pool);
    memset(held, 0, sizeof(held));
    nheld = naborted = 0;
    return 0;
}

static int teardown(void **state)
{
    dg_http_pool_close(pool);
    assert_int_equal(tl_server_close_loop(&loop, srv), 0);
    return 0;
}

/* ---- a plain request ---------------------------------------------------------------------- */

struct result {
    bool done;
    int status;
    char ctype[64];
    char body[256];
    size_t body_len;
};

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct result *r = ud;
    r->done = true;
    if (!resp)
        return;
    r->status = resp->status;
    for (size_t k = 0; k < resp->nheaders; k++)
        if (dg_str_caseeq(resp->headers[k].name, "Content-Type"))
            snprintf(r->ctype, sizeof(r->ctype), "%.*s", (int)resp->headers[k].value.len,
                     resp->headers[k].value.ptr);
    r->body_len = DG_MIN(resp->body.len, sizeof(r->body) - 1);
    memcpy(r->body, resp->body.ptr, r->body_len);
}

static struct dg_http_creq *post_one(const char *what, struct result *res)
{
    static const struct dg_http_client_cbs cbs = {.on_done = on_done};
    return dg_http_request(pool, "POST", "/one", NULL, 0, what, strlen(what), &cbs, res);
}

static void test_single_json(void **state)
{
    struct result res = {0};
    post_one("json", &res);
    assert_true(tl_run_until(&loop, &res.done, 3000));
    assert_int_equal(res.status, 201);
    assert_string_equal(res.ctype, "application/json");
    assert_string_equal(res.body, "{\"a\":1}");
}

static void test_single_text(void **state)
{
    struct result res = {0};
    post_one("nonsense", &res);
    assert_true(tl_run_until(&loop, &res.done, 3000));
    assert_int_equal(res.status, 400);
    assert_string_equal(res.ctype, "text/plain");
    assert_string_equal(res.body, "bad spec: nonsense\n"); /* as dg_http_respond_text */
}

static void test_single_later(void **state)
{
    struct result res = {0};
    post_one("later", &res);
    /* the handler holds it: nothing is sent until item 0 is answered */
    while (nheld < 1)
        assert_int_equal(uv_run(&loop, UV_RUN_ONCE) > 0, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_false(res.done);
    dg_batch_reply_answer(held[0].b, 0, 200, "text/plain", "done", 4);
    assert_true(tl_run_until(&loop, &res.done, 3000));
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "done");
    assert_int_equal(naborted, 0);
}

static void test_single_abort(void **state)
{
    struct result res = {0};
    struct dg_http_creq *q = post_one("later", &res);
    assert_non_null(q);
    while (nheld < 1)
        assert_int_equal(uv_run(&loop, UV_RUN_ONCE) > 0, 1);
    dg_http_creq_cancel(q); /* the client goes away: its connection closes */
    for (int k = 0; k < 1000 && naborted < 1; k++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(naborted, 1);
    assert_true(held[0].aborted);
    assert_false(res.done); /* a cancelled request gets no on_done */
}

/* ---- a batch ------------------------------------------------------------------------------ */

struct item_result {
    bool done;
    int status;
    char body[256];
    int err_code;
};
static unsigned items_done;

static void on_item(void *ud, const struct dg_http_resp *resp, const struct dg_err *err)
{
    struct item_result *r = ud;
    assert_false(r->done); /* exactly once */
    r->done = true;
    items_done++;
    if (resp) {
        r->status = resp->status;
        snprintf(r->body, sizeof(r->body), "%.*s", (int)resp->body.len, resp->body.ptr);
    } else {
        r->err_code = err->code;
    }
}

static void test_batch_same_path(void **state)
{
    struct item_result res[3] = {{0}};
    items_done = 0;
    struct dg_batch *b = dg_batch_new("/many");
    dg_batch_add(b, json_string("later"), on_item, &res[0]);
    dg_batch_add(b, json_string("json"), on_item, &res[1]);
    dg_batch_add(b, json_string("nonsense"), on_item, &res[2]);
    assert_int_equal(dg_batch_size(b), 3);
    dg_batch_flush(b, pool);
    assert_int_equal(dg_batch_size(b), 0);
    /* items 1 and 2 stream back while item 0 is still held */
    for (int k = 0; k < 1000 && items_done < 2; k++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(items_done, 2);
    assert_false(res[0].done);
    assert_int_equal(res[1].status, 201);
    assert_string_equal(res[1].body, "{\"a\":1}");
    assert_int_equal(res[2].status, 400);
    assert_string_equal(res[2].body, "bad spec: nonsense"); /* a line's text: no newline */
    assert_int_equal(nheld, 1);
    assert_int_equal(dg_batch_reply_size(held[0].b), 3);
    dg_batch_reply_answer(held[0].b, held[0].i, 200, NULL, "done", 4);
    for (int k = 0; k < 1000 && items_done < 3; k++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(res[0].status, 200);
    assert_string_equal(res[0].body, "done");
    assert_int_equal(naborted, 0);
    dg_batch_free(b, NULL);
}

static bool first_line;
static void on_body_first(struct dg_http_creq *q, const char *d, size_t n, void *ud)
{
    if (memchr(d, '\n', n))
        first_line = true;
}

static void test_batch_abort(void **state)
{
    static const struct dg_http_client_cbs cbs = {.on_body = on_body_first, .on_done = on_done};
    static const char body[] = "{\"items\":[\"later\",\"json\",\"later\"]}";
    struct result res = {0};
    first_line = false;
    struct dg_http_creq *q =
        dg_http_request(pool, "POST", "/many", NULL, 0, body, sizeof(body) - 1, &cbs, &res);
    assert_non_null(q);
    assert_true(tl_run_until(&loop, &first_line, 3000)); /* item 1's line */
    assert_int_equal(nheld, 2);
    dg_http_creq_cancel(q);
    for (int k = 0; k < 1000 && naborted < 2; k++)
        uv_run(&loop, UV_RUN_ONCE);
    /* exactly the two unanswered items, each once */
    assert_int_equal(naborted, 2);
    assert_true(held[0].aborted);
    assert_true(held[1].aborted);
}

/* A batch over the receiver's body limit (1 MiB, the server's default) goes in parts, each
 * below it: every item is answered by the server (none refused with 413), in order of the
 * parts; an item larger than a part alone is answered with a clear error and never sent. */
static void test_batch_parts(void **state)
{
    enum { N = 3000, LEN = 900 };
    struct item_result *res = calloc(N + 1, sizeof(*res));
    items_done = 0;
    many_requests = 0;
    struct dg_batch *b = dg_batch_new("/many");
    char *item = malloc(DG_WIRE_PART_MAX + 8);
    for (int k = 0; k < N; k++) {
        int n = snprintf(item, LEN, "\"p%d-", k);
        memset(item + n, 'x', LEN - n - 1);
        item[LEN - 1] = '"';
        dg_batch_add_text(b, item, LEN, on_item, &res[k]);
    }
    assert_int_equal(dg_batch_parts(b), 3); /* 2.7 MB: three parts of at most 960 KiB */
    /* an item that alone is over a part: "..." of DG_WIRE_PART_MAX bytes */
    memset(item, 'y', DG_WIRE_PART_MAX);
    item[0] = item[DG_WIRE_PART_MAX - 1] = '"';
    dg_batch_add_text(b, item, DG_WIRE_PART_MAX, on_item, &res[N]);
    assert_false(res[N].done); /* answered at the flush, not from inside the add */
    assert_int_equal(dg_batch_size(b), N + 1);
    dg_batch_flush(b, pool);
    assert_true(res[N].done);
    assert_int_equal(res[N].err_code, DG_E_LIMIT);
    for (int k = 0; k < 100000 && items_done < N + 1; k++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(items_done, N + 1);
    assert_int_equal(many_requests, 3);
    for (int k = 0; k < N; k++) {
        char want[32];
        snprintf(want, sizeof(want), "bad spec: p%d-x", k);
        assert_int_equal(res[k].status, 400); /* the handler's answer, not 413 */
        assert_memory_equal(res[k].body, want, strlen(want));
    }
    dg_batch_free(b, NULL);
    free(item);
    free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_same_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_parts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
