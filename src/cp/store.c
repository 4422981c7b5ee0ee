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
};

static void op_free(struct op *o)
{
    free(o->kind);
    free(o->key);
    free(o->value);
    free(o);
}

static void store_free(struct cp_store *s)
{
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

struct cp_store *cp_store_open(uv_loop_t *loop, const char *backend, const char *dir,
                               struct dg_err *err)
{
    struct cp_store *s = dg_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->backend = dg_xstrdup(backend);
    s->tail = &s->queue;
    s->work.data = s;
    if (strcmp(backend, "none") == 0)
        return s;
    if (strcmp(backend, "sqlite") != 0) {
        dg_err_set(err, DG_E_INVAL, "persistence: expected sqlite or none, got '%s'", backend);
        goto fail;
    }
    if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
        dg_err_set(err, -errno, "dataDir '%s': %s", dir, strerror(errno));
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

static void kick(struct cp_store *s)
{
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

int cp_store_scan(struct cp_store *s, const char *kind,
                  void (*each)(void *ud, const char *key, const char *value), void *ud,
                  struct dg_err *err)
{
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
    /* called after the loop: what was queued ran (uv_run waits for thread-pool work) */
    while (s->queue) { /* never started (the loop stopped first) */
        struct op *o = s->queue;
        s->queue = o->next;
        op_free(o);
    }
    store_free(s);
}
