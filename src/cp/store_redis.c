/*
 * store_redis.c: the redis backend of the CP's store (store_backend.h): hashes
 * dirigent:<kind> (field key, value the JSON) on a Redis server that CP replicas share,
 * through hiredis' async client on the CP's loop. A write is sent at once (HSET/HDEL; with
 * replicas > 0 followed by WAIT) and is durable when Redis answers; with fullPersistence the
 * connection first sets appendonly yes + appendfsync always, so an answer means the write is
 * in Redis' fsync'd AOF. Not connected: a write fails at once (a registration gets 503 and
 * is retried by its sender) and the connection is retried every 500 ms. The blocking scan
 * (start-up) uses a connection of its own; the asynchronous one (a replica taking over) the
 * loop's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "dirigent/log.h"
#include "store_backend.h"

struct redis_store {
    uv_loop_t *loop;
    redisAsyncContext *rc;
    char *host;
    int port;
    char *password; /* redis.passwordFile's first line, or NULL */
    bool full_persistence;
    int replicas;
    uv_timer_t reconnect; /* the next attempt, or the deadline of the one in progress */
    bool reconnect_open, connected, closing;
};

/* One write in flight: its op (owned) and the backend. */
struct rop {
    struct redis_store *s;
    struct cp_store_op *o;
};

static void redis_connect(struct redis_store *s);

/* The first line of redis.passwordFile (read once at start): *pw NULL without a file. */
static int read_password(const char *path, char **pw, struct dg_err *err)
{
    *pw = NULL;
    if (!path || !path[0])
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return dg_err_set(err, DG_E_INVAL, "redis.passwordFile: cannot read %s: %m", path);
    char line[1024] = "";
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || !line[0])
        return dg_err_set(err, DG_E_INVAL,
                          "redis.passwordFile: %s has no password on its first line", path);
    *pw = dg_xstrdup(line);
    return 0;
}

static int rd_open(uv_loop_t *loop, const struct cp_store_opts *o, void **be, struct dg_err *err)
{
    const char *addr = o->redis_address ? o->redis_address : "127.0.0.1:6379";
    const char *colon = strrchr(addr, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (!colon || colon == addr || port <= 0 || port > 65535)
        return dg_err_set(err, DG_E_INVAL, "redis.address: expected HOST:PORT, got '%s'", addr);
    char *pw;
    if (read_password(o->redis_password_file, &pw, err) < 0)
        return -1;
    struct redis_store *s = dg_xcalloc(1, sizeof(*s));
    s->password = pw;
    s->loop = loop;
    s->host = dg_xstrndup(addr, (size_t)(colon - addr));
    s->port = (int)port;
    s->full_persistence = o->full_persistence;
    s->replicas = o->replicas;
    uv_timer_init(loop, &s->reconnect);
    s->reconnect.data = s;
    s->reconnect_open = true;
    uv_unref((uv_handle_t *)&s->reconnect);
    redis_connect(s);
    *be = s;
    return 0;
}

static void on_reconnect(uv_timer_t *t)
{
    redis_connect(t->data);
}

static void redis_lost(struct redis_store *s, const char *why)
{
    s->rc = NULL;
    s->connected = false;
    dg_log(DG_LOG_WARN, "store", "redis %s:%d: %s; reconnecting", s->host, s->port, why);
    if (s->reconnect_open && !s->closing)
        uv_timer_start(&s->reconnect, on_reconnect, 500, 0);
}

static void on_connect(const redisAsyncContext *c, int status)
{
    struct redis_store *s = c->data;
    if (!s)
        return;
    if (status != REDIS_OK) {
        redis_lost(s, c->errstr[0] ? c->errstr : "cannot connect");
        return;
    }
    s->connected = true;
    if (s->reconnect_open)
        uv_timer_stop(&s->reconnect);
}

/* hiredis 0.14's libuv adapter drops a refused connect (libuv reports it as a poll error,
 * which the adapter ignores): no callback ever comes and commands wait forever. So every
 * attempt has a deadline; past it the context is freed (its commands fail) and the next
 * attempt is scheduled. */
static void on_connect_deadline(uv_timer_t *t)
{
    struct redis_store *s = t->data;
    if (s->connected || !s->rc || s->closing)
        return;
    redisAsyncContext *rc = s->rc;
    s->rc = NULL;
    rc->data = NULL;
    redisAsyncFree(rc); /* the queued commands' callbacks run with no reply */
    redis_lost(s, "cannot connect (refused or no answer within 1 s)");
}

static void on_disconnect(const redisAsyncContext *c, int status)
{
    struct redis_store *s = c->data;
    if (!s || s->rc != c)
        return;
    if (s->closing) {
        s->rc = NULL;
        return;
    }
    redis_lost(s, status == REDIS_OK ? "disconnected" : c->errstr);
}

/* The answer to AUTH: a wrong password shows here (every later command would fail with
 * NOAUTH). */
static void on_auth(redisAsyncContext *c, void *reply, void *priv)
{
    struct redis_store *s = priv;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        dg_log(DG_LOG_ERROR, "store", "redis %s:%d refused AUTH (redis.passwordFile): %s", s->host,
               s->port, r->str);
}

static void redis_connect(struct redis_store *s)
{
    redisAsyncContext *rc = redisAsyncConnect(s->host, s->port);
    if (!rc || rc->err) {
        const char *why = rc ? rc->errstr : "no memory";
        if (rc)
            redisAsyncFree(rc);
        redis_lost(s, why);
        return;
    }
    rc->data = s;
    redisLibuvAttach(rc, s->loop);
    redisAsyncSetConnectCallback(rc, on_connect);
    redisAsyncSetDisconnectCallback(rc, on_disconnect);
    s->rc = rc;
    s->connected = false;
    if (s->reconnect_open)
        uv_timer_start(&s->reconnect, on_connect_deadline, 1000, 0);
    /* AUTH first: the server answers nothing else before it (protected by a password) */
    if (s->password)
        redisAsyncCommand(rc, on_auth, s, "AUTH %s", s->password);
    /* hiredis learns the connect's outcome only with a command to send */
    redisAsyncCommand(rc, NULL, NULL, "PING");
    if (s->full_persistence) { /* queued before any write on this connection */
        redisAsyncCommand(rc, NULL, NULL, "CONFIG SET appendonly yes");
        redisAsyncCommand(rc, NULL, NULL, "CONFIG SET appendfsync always");
    }
}

/* ---- writes -------------------------------------------------------------------------------- */

static void redis_done(redisAsyncContext *c, void *r, void *privdata)
{
    struct rop *rp = privdata;
    struct redis_store *s = rp->s;
    redisReply *reply = r;
    struct dg_err err = {0};
    if (!reply)
        dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: no answer (%s)", s->host, s->port,
                   c->errstr[0] ? c->errstr : "connection lost");
    else if (reply->type == REDIS_REPLY_ERROR)
        dg_err_set(&err, DG_E_INVAL, "redis %s:%d: %s", s->host, s->port, reply->str);
    cp_store_op_end(rp->o, err.msg[0] ? &err : NULL);
    free(rp);
}

static void redis_wait_done(redisAsyncContext *c, void *r, void *privdata)
{
    struct rop *rp = privdata;
    redisReply *reply = r;
    /* WAIT answers how many replicas have the write: fewer than asked is a failure */
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer < rp->s->replicas) {
        struct dg_err err;
        dg_err_set(&err, DG_E_INVAL, "redis %s:%d: only %lld of %d replicas have the write",
                   rp->s->host, rp->s->port, reply->integer, rp->s->replicas);
        cp_store_op_end(rp->o, &err);
        free(rp);
        return;
    }
    redis_done(c, r, privdata);
}

static void rd_write(void *be, struct cp_store_op *o)
{
    struct redis_store *s = be;
    struct dg_err err;
    if (!s->rc) { /* not connected: fail fast (registration gets 503), retried by the user */
        dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: not connected", s->host, s->port);
        cp_store_op_end(o, &err);
        return;
    }
    struct rop *rp = dg_xcalloc(1, sizeof(*rp));
    rp->s = s;
    rp->o = o;
    char hash[96];
    snprintf(hash, sizeof(hash), "dirigent:%s", o->kind);
    bool wait = s->replicas > 0;
    int rc = o->value ? redisAsyncCommand(s->rc, wait ? NULL : redis_done, wait ? NULL : rp,
                                          "HSET %s %s %s", hash, o->key, o->value)
                      : redisAsyncCommand(s->rc, wait ? NULL : redis_done, wait ? NULL : rp,
                                          "HDEL %s %s", hash, o->key);
    if (rc == REDIS_OK && wait)
        rc = redisAsyncCommand(s->rc, redis_wait_done, rp, "WAIT %d %d", s->replicas, 1000);
    if (rc != REDIS_OK) {
        dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: %s", s->host, s->port,
                   s->rc->errstr[0] ? s->rc->errstr : "cannot send");
        cp_store_op_end(o, &err);
        free(rp);
    }
}

/* ---- scans --------------------------------------------------------------------------------- */

static int key_cmp(const void *a, const void *b)
{
    const redisReply *const *x = a, *const *y = b;
    return strcmp((*x)->str, (*y)->str);
}

/* An HGETALL answer's (key, value) pairs to `each`, in key order like sqlite's scan. */
static void each_in_key_order(const redisReply *r, cp_store_each each, void *ud)
{
    size_t n = r->elements / 2;
    redisReply **keys = dg_xcalloc(n ? n : 1, sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = r->element[2 * i];
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (size_t i = 0; i < n; i++) {
        size_t at = 0;
        while (r->element[at] != keys[i])
            at += 2;
        each(ud, keys[i]->str, r->element[at + 1]->str);
    }
    free(keys);
}

static int rd_scan(void *be, const char *kind, cp_store_each each, void *ud, struct dg_err *err)
{
    struct redis_store *s = be;
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) {
        dg_err_set(err, DG_E_CLOSED, "persistence redis: cannot connect to %s:%d: %s", s->host,
                   s->port, c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        return -1;
    }
    if (s->password) {
        redisReply *a = redisCommand(c, "AUTH %s", s->password);
        bool refused = !a || a->type == REDIS_REPLY_ERROR;
        if (refused)
            dg_err_set(err, DG_E_INVAL, "persistence redis %s:%d: AUTH (redis.passwordFile): %s",
                       s->host, s->port, a ? a->str : c->errstr);
        if (a)
            freeReplyObject(a);
        if (refused) {
            redisFree(c);
            return -1;
        }
    }
    redisReply *r = redisCommand(c, "HGETALL dirigent:%s", kind);
    int rc = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        rc =
            dg_err_set(err, DG_E_INVAL, "persistence redis %s:%d: HGETALL dirigent:%s: %s", s->host,
                       s->port, kind, r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    else
        each_in_key_order(r, each, ud);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* An asynchronous scan in flight. */
struct ascan {
    struct redis_store *s;
    cp_store_each each;
    cp_store_done done;
    void *ud;
};

static void ascan_reply(redisAsyncContext *c, void *r, void *privdata)
{
    struct ascan *a = privdata;
    redisReply *reply = r;
    struct dg_err err = {0};
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        dg_err_set(&err, DG_E_INVAL, "persistence redis %s:%d: HGETALL: %s", a->s->host, a->s->port,
                   reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                   : c->errstr[0]                            ? c->errstr
                                                             : "no answer");
    else
        each_in_key_order(reply, a->each, a->ud);
    a->done(a->ud, err.msg[0] ? &err : NULL);
    free(a);
}

static void rd_scan_async(void *be, const char *kind, cp_store_each each, cp_store_done done,
                          void *ud)
{
    struct redis_store *s = be;
    struct ascan *a = dg_xcalloc(1, sizeof(*a));
    *a = (struct ascan){s, each, done, ud};
    if (!s->rc ||
        redisAsyncCommand(s->rc, ascan_reply, a, "HGETALL dirigent:%s", kind) != REDIS_OK) {
        struct dg_err err;
        dg_err_set(&err, DG_E_CLOSED, "persistence redis %s:%d: not connected", s->host, s->port);
        free(a);
        done(ud, &err);
    }
}

/* ---- shutdown ------------------------------------------------------------------------------ */

static void rd_shutdown(void *be)
{
    struct redis_store *s = be;
    s->closing = true;
    if (s->reconnect_open) {
        s->reconnect_open = false;
        uv_close((uv_handle_t *)&s->reconnect, NULL);
    }
    if (s->rc && !s->connected) { /* a connect in progress may never end (see above) */
        redisAsyncContext *rc = s->rc;
        s->rc = NULL;
        rc->data = NULL;
        redisAsyncFree(rc);
    } else if (s->rc) { /* answers still due arrive, then the connection closes */
        redisAsyncDisconnect(s->rc);
    }
}

static void rd_free(void *be)
{
    struct redis_store *s = be;
    if (s->rc) { /* the loop has stopped: free the context without callbacks into us */
        redisAsyncContext *rc = s->rc;
        s->rc = NULL;
        rc->data = NULL;
        redisAsyncFree(rc); /* writes in flight end with "no answer" */
    }
    free(s->host);
    free(s->password);
    free(s);
}

const struct cp_store_ops cp_store_redis = {
    .name = "redis",
    .open = rd_open,
    .write = rd_write,
    .scan = rd_scan,
    .scan_async = rd_scan_async,
    .shutdown = rd_shutdown,
    .free = rd_free,
};
