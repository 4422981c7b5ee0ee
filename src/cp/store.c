/*
 * store.c: see store.h. The sqlite backend keeps one connection; only one
 * thread-pool job uses it at a time, so SQLite's own locking never waits.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sqlite3.h>

#include "dirigent/log.h"

struct op {
    struct op *next;
    char *kind, *key, *value; /* value NULL: delete */
    cp_store_done done;
    void *ud;
};

struct cp_store {
    uv_loop_t *loop;
    char *backend;
    sqlite3 *db;
    sqlite3_stmt *put, *del;
    struct op *queue, **tail; /* waiting for the next transaction */
    struct op *batch;         /* in the running transaction */
    unsigned pending;
    uv_work_t work;
    bool busy, closing;
    struct dg_err batch_err;
    /* redis */
    redisAsyncContext *rc;
    char *host;
    int port;
    bool full_persistence;
    int replicas;
    uv_timer_t reconnect; /* the next attempt, or the deadline of the one in progress */
    bool reconnect_open, connected;
};

/* One redis write in flight: its op (owned) and the store. */
struct rop {
    struct cp_store *s;
    struct op *o;
};

static void redis_connect(struct cp_store *s);

static void op_free(struct op *o)
{
    free(o->kind);
    free(o->key);
    free(o->value);
    free(o);
}

static void store_free(struct cp_store *s)
{
    free(s->host);
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->del);
    if (s->db)
        sqlite3_close(s->db);
    free(s->backend);
    free(s);
}

static int sql_err(struct dg_err *err, sqlite3 *db, const char *what)
{
    return dg_err_set(err, DG_E_INVAL, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : "?");
}

static int exec(sqlite3 *db, const char *sql, struct dg_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        dg_err_set(err, DG_E_INVAL, "sqlite: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int redis_open(struct cp_store *s, const struct cp_store_opts *o, struct dg_err *err);

struct cp_store *cp_store_open(uv_loop_t *loop, const struct cp_store_opts *o, struct dg_err *err)
{
    const char *backend = o->backend, *dir = o->dir;
    struct cp_store *s = dg_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->backend = dg_xstrdup(backend);
    s->tail = &s->queue;
    s->work.data = s;
    if (strcmp(backend, "none") == 0)
        return s;
    if (strcmp(backend, "redis") == 0) {
        if (redis_open(s, o, err) < 0)
            goto fail;
        return s;
    }
    if (strcmp(backend, "sqlite") != 0) {
        dg_err_set(err, DG_E_INVAL, "persistence: expected sqlite, redis or none, got '%s'",
                   backend);
        goto fail;
    }
    if (dg_mkdir_p(dir, 0700, err) < 0) {
        dg_err_wrap(err, "dataDir '%s'", dir);
        goto fail;
    }
    char *path = dg_xasprintf("%s/cp.sqlite", dir);
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    free(path);
    if (rc != SQLITE_OK) {
        sql_err(err, s->db, "open");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (exec(s->db, "PRAGMA journal_mode=WAL", err) < 0 ||
        exec(s->db, "PRAGMA synchronous=FULL", err) < 0 ||
        exec(s->db,
             "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, key TEXT NOT NULL, "
             "value TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID",
             err) < 0)
        goto fail;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO objects VALUES (?1, ?2, ?3)", -1, &s->put,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "DELETE FROM objects WHERE kind = ?1 AND key = ?2", -1, &s->del,
                           NULL) != SQLITE_OK) {
        sql_err(err, s->db, "prepare");
        goto fail;
    }
    return s;
fail:
    store_free(s);
    return NULL;
}

/* ---- writes: one transaction per batch on the thread pool --------------------------------- */

static void batch_work(uv_work_t *w)
{
    struct cp_store *s = w->data;
    struct dg_err *err = &s->batch_err;
    memset(err, 0, sizeof(*err));
    if (exec(s->db, "BEGIN IMMEDIATE", err) < 0)
        return;
    for (struct op *o = s->batch; o; o = o->next) {
        sqlite3_stmt *st = o->value ? s->put : s->del;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, o->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, o->key, -1, SQLITE_STATIC);
        if (o->value)
            sqlite3_bind_text(st, 3, o->value, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sql_err(err, s->db, o->value ? "write" : "delete");
            sqlite3_reset(st);
            struct dg_err ignored;
            exec(s->db, "ROLLBACK", &ignored);
            return;
        }
    }
    if (exec(s->db, "COMMIT", err) < 0) { /* fsync'd by synchronous=FULL when it returns */
        struct dg_err ignored;
        exec(s->db, "ROLLBACK", &ignored);
    }
}

static void kick(struct cp_store *s);

static void batch_done(uv_work_t *w, int status)
{
    struct cp_store *s = w->data;
    struct op *o = s->batch;
    s->batch = NULL;
    s->busy = false;
    const struct dg_err *err = s->batch_err.msg[0] ? &s->batch_err : NULL;
    if (err)
        dg_log(DG_LOG_ERROR, "store", "%s", err->msg);
    struct dg_err copy = s->batch_err;
    while (o) {
        struct op *next = o->next;
        s->pending--;
        if (o->done)
            o->done(o->ud, err ? &copy : NULL);
        op_free(o);
        o = next;
    }
    kick(s);
}

static void redis_kick(struct cp_store *s);

static void kick(struct cp_store *s)
{
    if (s->rc || (s->host && !s->db)) {
        redis_kick(s);
        return;
    }
    if (s->busy || !s->queue)
        return;
    if (!s->db) { /* none: nothing to keep */
        struct op *o = s->queue;
        s->queue = NULL;
        s->tail = &s->queue;
        s->batch = o;
        s->batch_err.msg[0] = '\0';
        batch_done(&s->work, 0);
        return;
    }
    s->batch = s->queue;
    s->queue = NULL;
    s->tail = &s->queue;
    s->busy = true;
    s->work.data = s;
    uv_queue_work(s->loop, &s->work, batch_work, batch_done);
}

static void enqueue(struct cp_store *s, const char *kind, const char *key, const char *value,
                    cp_store_done done, void *ud)
{
    struct op *o = dg_xcalloc(1, sizeof(*o));
    o->kind = dg_xstrdup(kind);
    o->key = dg_xstrdup(key);
    o->value = value ? dg_xstrdup(value) : NULL;
    o->done = done;
    o->ud = ud;
    *s->tail = o;
    s->tail = &o->next;
    s->pending++;
    kick(s);
}

void cp_store_put(struct cp_store *s, const char *kind, const char *key, const char *value,
                  cp_store_done done, void *ud)
{
    enqueue(s, kind, key, value ? value : "", done, ud);
}

void cp_store_del(struct cp_store *s, const char *kind, const char *key, cp_store_done done,
                  void *ud)
{
    enqueue(s, kind, key, NULL, done, ud);
}

static int redis_scan(struct cp_store *s, const char *kind,
                      void (*each)(void *ud, const char *key, const char *value), void *ud,
                      struct dg_err *err);

int cp_store_scan(struct cp_store *s, const char *kind,
                  void (*each)(void *ud, const char *key, const char *value), void *ud,
                  struct dg_err *err)
{
    if (s->host)
        return redis_scan(s, kind, each, ud, err);
    if (!s->db)
        return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT key, value FROM objects WHERE kind = ?1 ORDER BY key", -1,
                           &st, NULL) != SQLITE_OK)
        return sql_err(err, s->db, "scan");
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        each(ud, (const char *)sqlite3_column_text(st, 0),
             (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_err(err, s->db, "scan");
    return 0;
}

unsigned cp_store_pending(const struct cp_store *s)
{
    return s->pending;
}

const char *cp_store_backend(const struct cp_store *s)
{
    return s->backend;
}

void cp_store_close(struct cp_store *s)
{
    if (!s)
        return;
    if (s->rc) { /* the loop has stopped: free the context without callbacks into us */
        redisAsyncContext *rc = s->rc;
        s->rc = NULL;
        rc->data = NULL;
        redisAsyncFree(rc);
    }
    /* called after the loop: what was queued ran (uv_run waits for thread-pool work) */
    while (s->queue) { /* never started (the loop stopped first) */
        struct op *o = s->queue;
        s->queue = o->next;
        op_free(o);
    }
    store_free(s);
}

/* ---- redis --------------------------------------------------------------------------------- */

static int redis_open(struct cp_store *s, const struct cp_store_opts *o, struct dg_err *err)
{
    const char *addr = o->redis_address ? o->redis_address : "127.0.0.1:6379";
    const char *colon = strrchr(addr, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (!colon || colon == addr || port <= 0 || port > 65535)
        return dg_err_set(err, DG_E_INVAL, "redis.address: expected HOST:PORT, got '%s'", addr);
    s->host = dg_xstrndup(addr, (size_t)(colon - addr));
    s->port = (int)port;
    s->full_persistence = o->full_persistence;
    s->replicas = o->replicas;
    uv_timer_init(s->loop, &s->reconnect);
    s->reconnect.data = s;
    s->reconnect_open = true;
    uv_unref((uv_handle_t *)&s->reconnect);
    redis_connect(s);
    return 0;
}

static void redis_fail_all(struct cp_store *s, const char *why)
{
    struct dg_err err;
    dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: %s", s->host, s->port, why);
    while (s->queue) {
        struct op *o = s->queue;
        s->queue = o->next;
        s->pending--;
        if (o->done)
            o->done(o->ud, &err);
        op_free(o);
    }
    s->tail = &s->queue;
}

static void on_reconnect(uv_timer_t *t)
{
    redis_connect(t->data);
}

static void redis_lost(struct cp_store *s, const char *why)
{
    s->rc = NULL;
    s->connected = false;
    dg_log(DG_LOG_WARN, "store", "redis %s:%d: %s; reconnecting", s->host, s->port, why);
    redis_fail_all(s, why);
    if (s->reconnect_open && !s->closing)
        uv_timer_start(&s->reconnect, on_reconnect, 500, 0);
}

static void on_connect(const redisAsyncContext *c, int status)
{
    struct cp_store *s = c->data;
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
    struct cp_store *s = t->data;
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
    struct cp_store *s = c->data;
    if (!s || s->rc != c)
        return;
    if (s->closing) {
        s->rc = NULL;
        return;
    }
    redis_lost(s, status == REDIS_OK ? "disconnected" : c->errstr);
}

static void redis_connect(struct cp_store *s)
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
    /* hiredis learns the connect's outcome only with a command to send */
    redisAsyncCommand(rc, NULL, NULL, "PING");
    if (s->full_persistence) { /* queued before any write on this connection */
        redisAsyncCommand(rc, NULL, NULL, "CONFIG SET appendonly yes");
        redisAsyncCommand(rc, NULL, NULL, "CONFIG SET appendfsync always");
    }
    redis_kick(s);
}

static void redis_done(redisAsyncContext *c, void *r, void *privdata)
{
    struct rop *rp = privdata;
    struct cp_store *s = rp->s;
    redisReply *reply = r;
    struct dg_err err = {0};
    if (!reply)
        dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: no answer (%s)", s->host, s->port,
                   c->errstr[0] ? c->errstr : "connection lost");
    else if (reply->type == REDIS_REPLY_ERROR)
        dg_err_set(&err, DG_E_INVAL, "redis %s:%d: %s", s->host, s->port, reply->str);
    s->pending--;
    if (rp->o->done)
        rp->o->done(rp->o->ud, err.msg[0] ? &err : NULL);
    op_free(rp->o);
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
        rp->s->pending--;
        if (rp->o->done)
            rp->o->done(rp->o->ud, &err);
        op_free(rp->o);
        free(rp);
        return;
    }
    redis_done(c, r, privdata);
}

static void redis_kick(struct cp_store *s)
{
    if (!s->rc) /* not connected: fail fast (registration gets 503), retried by the user */
        return redis_fail_all(s, "not connected");
    while (s->queue) {
        struct op *o = s->queue;
        s->queue = o->next;
        if (!s->queue)
            s->tail = &s->queue;
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
            struct dg_err err;
            dg_err_set(&err, DG_E_CLOSED, "redis %s:%d: %s", s->host, s->port,
                       s->rc->errstr[0] ? s->rc->errstr : "cannot send");
            s->pending--;
            if (o->done)
                o->done(o->ud, &err);
            op_free(o);
            free(rp);
        }
    }
}

static int key_cmp(const void *a, const void *b)
{
    const redisReply *const *x = a, *const *y = b;
    return strcmp((*x)->str, (*y)->str);
}

static int redis_scan(struct cp_store *s, const char *kind,
                      void (*each)(void *ud, const char *key, const char *value), void *ud,
                      struct dg_err *err)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) {
        dg_err_set(err, DG_E_CLOSED, "persistence redis: cannot connect to %s:%d: %s", s->host,
                   s->port, c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "HGETALL dirigent:%s", kind);
    int rc = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        rc =
            dg_err_set(err, DG_E_INVAL, "persistence redis %s:%d: HGETALL dirigent:%s: %s", s->host,
                       s->port, kind, r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    } else {
        /* pairs (key, value), in key order like sqlite's scan */
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
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

void cp_store_shutdown(struct cp_store *s)
{
    if (!s)
        return;
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
        redisAsyncContext *rc = s->rc;
        redisAsyncDisconnect(rc);
    }
}

/* ---- asynchronous scan (a replica taking over: the loop must not wait for Redis) ----------- */

struct ascan {
    struct cp_store *s;
    void (*each)(void *ud, const char *key, const char *value);
    cp_store_done done;
    void *ud;
};

static void ascan_reply(redisAsyncContext *c, void *r, void *privdata)
{
    struct ascan *a = privdata;
    redisReply *reply = r;
    struct dg_err err = {0};
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        dg_err_set(&err, DG_E_INVAL, "persistence redis %s:%d: HGETALL: %s", a->s->host, a->s->port,
                   reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                   : c->errstr[0]                            ? c->errstr
                                                             : "no answer");
    } else {
        size_t n = reply->elements / 2;
        size_t *order = dg_xcalloc(n ? n : 1, sizeof(*order));
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        /* key order, as the other backends scan (insertion sort: small, start-up only) */
        for (size_t i = 1; i < n; i++)
            for (size_t k = i; k > 0 && strcmp(reply->element[2 * order[k - 1]]->str,
                                               reply->element[2 * order[k]]->str) > 0;
                 k--) {
                size_t t = order[k];
                order[k] = order[k - 1];
                order[k - 1] = t;
            }
        for (size_t i = 0; i < n; i++)
            a->each(a->ud, reply->element[2 * order[i]]->str,
                    reply->element[2 * order[i] + 1]->str);
        free(order);
    }
    a->done(a->ud, err.msg[0] ? &err : NULL);
    free(a);
}

void cp_store_scan_async(struct cp_store *s, const char *kind,
                         void (*each)(void *ud, const char *key, const char *value),
                         cp_store_done done, void *ud)
{
    struct dg_err err = {0};
    if (!s->host) { /* sqlite (local, quick) or none */
        int rc = cp_store_scan(s, kind, each, ud, &err);
        done(ud, rc < 0 ? &err : NULL);
        return;
    }
    struct ascan *a = dg_xcalloc(1, sizeof(*a));
    *a = (struct ascan){s, each, done, ud};
    if (!s->rc ||
        redisAsyncCommand(s->rc, ascan_reply, a, "HGETALL dirigent:%s", kind) != REDIS_OK) {
        dg_err_set(&err, DG_E_CLOSED, "persistence redis %s:%d: not connected", s->host, s->port);
        free(a);
        done(ud, &err);
    }
}
