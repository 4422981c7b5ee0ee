/*
 * heartbeat.c: see heartbeat.h. The beat's "resync" flag, the CP's answer and the leader header
 * are the wire's (dirigent/wire.h); the body is the daemon's own message, encoded by it.
 */
#include "dirigent/heartbeat.h"

#include <stdlib.h>
#include <string.h>

#include "dirigent/json.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"

struct dg_heartbeat {
    uv_loop_t *loop;
    uv_timer_t timer;
    struct dg_http_pool *pool; /* = pools[cur] */
    struct dg_http_pool **pools;
    char **addrs;
    size_t naddrs, cur;
    uint64_t interval_ms;
    uint64_t anchor_ms;   /* loop time of one periodic beat: the others at anchor + k * interval */
    char *path, *address; /* = addrs[cur] */
    json_t *(*body)(void *ud);
    void *ud;
    bool ok, resync, in_flight, stopped;
    bool borrowed;     /* pools are another heartbeat's (dg_heartbeat_start_shared) */
    bool free_pending; /* closed while a beat was in flight: freed by its answer */
    bool kicked;       /* dg_heartbeat_kick while one was in flight: the next goes at its end */
    bool held;         /* dg_heartbeat_hold: no beat (its timer stopped) until released */
    int auth_refused;  /* the last 401/403 logged (once until it changes) */
};

static void hb_free(struct dg_heartbeat *hb)
{
    free(hb->path);
    for (size_t i = 0; i < hb->naddrs; i++)
        free(hb->addrs[i]);
    free(hb->addrs);
    free(hb->pools);
    free(hb);
}

static void closed(uv_handle_t *h)
{
    struct dg_heartbeat *hb = h->data;
    if (hb->in_flight) { /* a borrower's beat in its owner's pool: its answer frees */
        hb->free_pending = true;
        return;
    }
    hb_free(hb);
}

/* Talk to control plane `i` from now on. */
static void switch_to(struct dg_heartbeat *hb, size_t i)
{
    if (i == hb->cur)
        return;
    hb->cur = i;
    hb->pool = hb->pools[i];
    hb->address = hb->addrs[i];
    dg_log(DG_LOG_INFO, "heartbeat", "trying the control plane at %s", hb->address);
}

static void beat(uv_timer_t *t);
static void schedule_next(struct dg_heartbeat *hb);

/* The leader a refusing replica names (DG_WIRE_HDR_LEADER: IP:PORT), or an empty view. */
static struct dg_str leader_of(const struct dg_http_resp *resp)
{
    for (size_t i = 0; resp && i < resp->nheaders; i++) {
        const struct dg_http_header *h = &resp->headers[i];
        if (dg_str_caseeq(h->name, DG_WIRE_HDR_LEADER))
            return h->value;
    }
    return (struct dg_str){0};
}

static void beat_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    struct dg_heartbeat *hb = ud;
    hb->in_flight = false;
    if (hb->free_pending) {
        hb_free(hb);
        return;
    }
    if (hb->stopped && hb->borrowed)
        return; /* its timer is closing */
    if (hb->kicked && !hb->stopped && !hb->held) {
        hb->kicked = false;
        uv_timer_start(&hb->timer, beat, 0, 0);
    }
    bool ok = resp && resp->status == 200;
    bool auth = false;
    if (resp && (resp->status == 401 || resp->status == 403)) {
        auth = true;
        if (hb->auth_refused != resp->status) /* a wrong or missing key: say it at once */
            dg_log(DG_LOG_ERROR, "heartbeat", "control plane %s refused our credential (%d): %.*s",
                   hb->address, resp->status, (int)DG_MIN(resp->body.len, 300), resp->body.ptr);
        hb->auth_refused = resp->status;
    } else {
        hb->auth_refused = 0;
    }
    if (!ok && !auth && (hb->ok || !hb->resync))
        dg_log(DG_LOG_WARN, "heartbeat", "control plane %s: %s%.*s", hb->address,
               err ? err->msg : "refused: ", resp ? (int)DG_MIN(resp->body.len, 200) : 0,
               resp ? resp->body.ptr : "");
    else if (ok && !hb->ok)
        dg_log(DG_LOG_INFO, "heartbeat", "registered with the control plane at %s", hb->address);
    hb->ok = ok;
    hb->resync = !ok; /* after a failure the CP may have lost us: ask for everything */
    if (ok && dg_wire_beat_answer_is_resync(resp->body.ptr, resp->body.len) && !hb->stopped) {
        hb->resync = true; /* the CP asks for everything (it restored us from its store) */
        /* at once, unless a borrower: its body never lists (an emulated node; node 0 lists
         * for all), so beating again within 100 ms would only repeat, ten times a second for
         * as long as the CP asks (every node once lost, at 10,000 nodes) */
        if (!hb->borrowed)
            uv_timer_start(&hb->timer, beat, DG_MIN(hb->interval_ms, 100), 0);
        return;
    }
    if (ok || hb->naddrs < 2 || hb->stopped)
        return;
    /* a replica that does not lead names the leader; else try the next one, soon */
    size_t next = (hb->cur + 1) % hb->naddrs;
    struct dg_str leader = leader_of(resp);
    for (size_t i = 0; leader.len && i < hb->naddrs; i++)
        if (dg_str_eq(leader, hb->addrs[i]))
            next = i;
    switch_to(hb, next);
    uv_timer_start(&hb->timer, beat, DG_MIN(hb->interval_ms, 100), 0);
}

/* The next periodic beat at its own phase of the interval (anchor + k * interval), at least
 * half an interval from now. Not `now + interval`: timers that fired late in the same loop
 * turn would all get the same next time and stay together, so that the beats of thousands of
 * emulated nodes, spread over the interval at the start, drifted into bursts (at 10,000 nodes:
 * 175 ms without a beat, then 40 a millisecond), each one a stall of the CP's loop. */
static void schedule_next(struct dg_heartbeat *hb)
{
    uint64_t now = uv_now(hb->loop), iv = hb->interval_ms ? hb->interval_ms : 1;
    uint64_t next = hb->anchor_ms;
    if (next <= now)
        next += ((now - next) / iv + 1) * iv;
    if (next - now < iv / 2)
        next += iv;
    uv_timer_start(&hb->timer, beat, next - now, 0);
}

static void beat(uv_timer_t *t)
{
    struct dg_heartbeat *hb = t->data;
    if (hb->held)
        return;
    schedule_next(hb);
    if (hb->in_flight)
        return;
    static const struct dg_http_client_cbs cbs = {.on_done = beat_done};
    static const struct dg_http_header ct[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    json_t *b = hb->body(hb->ud);
    if (!b) /* nothing to say this time (another message beats for it) */
        return;
    dg_wire_beat_set_resync(b, hb->resync);
    char *s = dg_json_dumps(b);
    json_decref(b);
    hb->in_flight = true;
    dg_http_request(hb->pool, "POST", hb->path, ct, 1, s, strlen(s), &cbs, hb);
    free(s);
}

struct dg_heartbeat *dg_heartbeat_start_list(uv_loop_t *loop, const struct dg_strlist *addresses,
                                             const char *path, uint64_t interval_ms,
                                             json_t *(*body)(void *ud), void *ud,
                                             struct dg_err *err)
{
    return dg_heartbeat_start_conns(loop, addresses, path, interval_ms, 4, body, ud, err);
}

struct dg_heartbeat *dg_heartbeat_start_conns(uv_loop_t *loop, const struct dg_strlist *addresses,
                                              const char *path, uint64_t interval_ms,
                                              unsigned max_conns, json_t *(*body)(void *ud),
                                              void *ud, struct dg_err *err)
{
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = max_conns ? max_conns : 4;
    if (o.max_idle < o.max_conns)
        o.max_idle = o.max_conns; /* kept open: a busy shared pool would reconnect */
    o.request_timeout_ms = interval_ms * 2;
    if (addresses->n == 0) {
        dg_err_set(err, DG_E_INVAL, "controlPlaneAddress: expected at least one IP:PORT");
        return NULL;
    }
    struct dg_http_pool **pools = dg_xcalloc(addresses->n, sizeof(*pools));
    for (size_t i = 0; i < addresses->n; i++) {
        if (!(pools[i] = dg_http_pool_new_addr(loop, addresses->v[i], &o, err))) {
            dg_err_wrap(err, "controlPlaneAddress");
            while (i-- > 0)
                dg_http_pool_close(pools[i]);
            free(pools);
            return NULL;
        }
    }
    struct dg_heartbeat *hb = dg_xcalloc(1, sizeof(*hb));
    hb->loop = loop;
    hb->pools = pools;
    hb->naddrs = addresses->n;
    hb->addrs = dg_xcalloc(addresses->n, sizeof(*hb->addrs));
    for (size_t i = 0; i < addresses->n; i++)
        hb->addrs[i] = dg_xstrdup(addresses->v[i]);
    hb->pool = pools[0];
    hb->address = hb->addrs[0];
    hb->interval_ms = interval_ms;
    hb->path = dg_xstrdup(path);
    hb->body = body;
    hb->ud = ud;
    hb->resync = true;
    hb->anchor_ms = uv_now(loop);
    uv_timer_init(loop, &hb->timer);
    hb->timer.data = hb;
    uv_timer_start(&hb->timer, beat, 0, 0);
    uv_unref((uv_handle_t *)&hb->timer);
    return hb;
}

struct dg_heartbeat *dg_heartbeat_start_shared(struct dg_heartbeat *owner, uint64_t first_ms,
                                               json_t *(*body)(void *ud), void *ud)
{
    struct dg_heartbeat *hb = dg_xcalloc(1, sizeof(*hb));
    hb->loop = owner->loop;
    hb->borrowed = true;
    hb->naddrs = owner->naddrs;
    hb->pools = dg_xcalloc(owner->naddrs, sizeof(*hb->pools));
    hb->addrs = dg_xcalloc(owner->naddrs, sizeof(*hb->addrs));
    for (size_t i = 0; i < owner->naddrs; i++) {
        hb->pools[i] = owner->pools[i];
        hb->addrs[i] = dg_xstrdup(owner->addrs[i]);
    }
    hb->pool = hb->pools[0];
    hb->address = hb->addrs[0];
    hb->interval_ms = owner->interval_ms;
    hb->path = dg_xstrdup(owner->path);
    hb->body = body;
    hb->ud = ud;
    hb->resync = true;
    hb->anchor_ms = uv_now(hb->loop) + first_ms;
    uv_timer_init(hb->loop, &hb->timer);
    hb->timer.data = hb;
    uv_timer_start(&hb->timer, beat, first_ms, 0);
    uv_unref((uv_handle_t *)&hb->timer);
    return hb;
}

static void post_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                      const struct dg_err *err, void *ud)
{
    if (err)
        dg_log(DG_LOG_DEBUG, "heartbeat", "post: %s", err->msg);
}

struct dg_heartbeat *dg_heartbeat_start(uv_loop_t *loop, const char *address, const char *path,
                                        uint64_t interval_ms, json_t *(*body)(void *ud), void *ud,
                                        struct dg_err *err)
{
    char *one = (char *)address;
    struct dg_strlist l = {.v = &one, .n = 1};
    return dg_heartbeat_start_list(loop, &l, path, interval_ms, body, ud, err);
}

/* POST `body` (JSON text, taken) on the heartbeat's pool; the answer to cbs. */
static void post_text_cb(struct dg_heartbeat *h, const char *path, char *body,
                         const struct dg_http_client_cbs *cbs, void *ud)
{
    static const struct dg_http_header ct[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    dg_http_request(h->pool, "POST", path, ct, 1, body, strlen(body), cbs, ud);
    free(body);
}

void dg_heartbeat_post_text(struct dg_heartbeat *h, const char *path, char *body)
{
    static const struct dg_http_client_cbs cbs = {.on_done = post_done};
    post_text_cb(h, path, body, &cbs, h);
}

void dg_heartbeat_post(struct dg_heartbeat *h, const char *path, json_t *body)
{
    char *s = dg_json_dumps(body);
    json_decref(body);
    dg_heartbeat_post_text(h, path, s);
}

void dg_heartbeat_post_cb(struct dg_heartbeat *h, const char *path, json_t *body,
                          const struct dg_http_client_cbs *cbs, void *ud)
{
    char *s = dg_json_dumps(body);
    json_decref(body);
    post_text_cb(h, path, s, cbs, ud);
}

void dg_heartbeat_set_bearer(struct dg_heartbeat *h, const char *bearer)
{
    for (size_t i = 0; i < h->naddrs; i++)
        dg_http_pool_set_bearer(h->pools[i], bearer);
}

void dg_heartbeat_hold(struct dg_heartbeat *h, bool hold)
{
    if (!h || h->stopped || h->held == hold)
        return;
    h->held = hold;
    if (hold)
        uv_timer_stop(&h->timer);
    else
        schedule_next(h); /* at its own phase again */
}

void dg_heartbeat_kick(struct dg_heartbeat *h)
{
    if (!h || h->stopped || h->held)
        return;
    if (h->in_flight)
        h->kicked = true;
    else
        uv_timer_start(&h->timer, beat, 0, 0);
}

bool dg_heartbeat_resyncing(const struct dg_heartbeat *h)
{
    return h->resync;
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
    for (size_t i = 0; i < h->naddrs && !h->borrowed; i++) /* fails what is in flight:
                                                             beat_done runs now */
        dg_http_pool_close(h->pools[i]);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, closed);
}
