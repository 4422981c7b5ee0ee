/*
 * heartbeat.c: see heartbeat.h.
 */
#include "dirigent/heartbeat.h"

#include <stdlib.h>
#include <string.h>

#include "dirigent/json.h"
#include "dirigent/log.h"

struct dg_heartbeat {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct dg_http_pool *pool;
    char *path, *address;
    json_t *(*body)(void *ud);
    void *ud;
    bool ok, resync, in_flight, stopped;
};

static void closed(uv_handle_t *h)
{
    struct dg_heartbeat *hb = h->data;
    free(hb->path);
    free(hb->address);
    free(hb);
}

static void beat_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    struct dg_heartbeat *hb = ud;
    hb->in_flight = false;
    bool ok = resp && resp->status == 200;
    if (!ok && (hb->ok || !hb->resync))
        dg_log(DG_LOG_WARN, "heartbeat", "control plane %s: %s%.*s", hb->address,
               err ? err->msg : "refused: ", resp ? (int)DG_MIN(resp->body.len, 200) : 0,
               resp ? resp->body.ptr : "");
    else if (ok && !hb->ok)
        dg_log(DG_LOG_INFO, "heartbeat", "registered with the control plane at %s", hb->address);
    hb->ok = ok;
    hb->resync = !ok; /* after a failure the CP may have lost us: ask for everything */
}

static void beat(uv_timer_t *t)
{
    struct dg_heartbeat *hb = t->data;
    if (hb->in_flight)
        return;
    static const struct dg_http_client_cbs cbs = {.on_done = beat_done};
    static const struct dg_http_header ct[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    json_t *b = hb->body(hb->ud);
    json_object_set_new(b, "resync", json_boolean(hb->resync));
    char *s = dg_json_dumps(b);
    json_decref(b);
    hb->in_flight = true;
    dg_http_request(hb->pool, "POST", hb->path, ct, 1, s, strlen(s), &cbs, hb);
    free(s);
}

struct dg_heartbeat *dg_heartbeat_start(uv_loop_t *loop, const char *address, const char *path,
                                        uint64_t interval_ms, json_t *(*body)(void *ud), void *ud,
                                        struct dg_err *err)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 4;
    o.request_timeout_ms = interval_ms * 2;
    struct dg_http_pool *pool = dg_http_pool_new_addr(loop, address, &o, err);
    if (!pool) {
        dg_err_wrap(err, "controlPlaneAddress");
        return NULL;
    }
    struct dg_heartbeat *hb = dg_xcalloc(1, sizeof(*hb));
    hb->loop = loop;
    hb->pool = pool;
    hb->path = dg_xstrdup(path);
    hb->address = dg_xstrdup(address);
    hb->body = body;
    hb->ud = ud;
    hb->resync = true;
    uv_timer_init(loop, &hb->timer);
    hb->timer.data = hb;
    uv_timer_start(&hb->timer, beat, 0, interval_ms);
    uv_unref((uv_handle_t *)&hb->timer);
    return hb;
}

static void post_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    if (err)
        dg_log(DG_LOG_DEBUG, "heartbeat", "post: %s", err->msg);
}

void dg_heartbeat_post(struct dg_heartbeat *h, const char *path, json_t *body)
{
    static const struct dg_http_client_cbs cbs = {.on_done = post_done};
    static const struct dg_http_header ct[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    char *s = dg_json_dumps(body);
    json_decref(body);
    dg_http_request(h->pool, "POST", path, ct, 1, s, strlen(s), &cbs, h);
    free(s);
}

bool dg_heartbeat_ok(const struct dg_heartbeat *h)
{
    return h->ok;
}

void dg_heartbeat_stop(struct dg_heartbeat *h)
{
    if (!h || h->stopped)
        return;
    h->stopped = true;
    dg_http_pool_close(h->pool); /* fails what is in flight: beat_done runs now */
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, closed);
}
