/*
 * store_sqlite.c: the sqlite backend of the CP's store (store_backend.h): one file,
 * DIR/cp.sqlite, in WAL mode with synchronous=FULL (fsync on commit), one table of
 * (kind, key) -> value. Writes queue here and run on the thread pool one transaction at a
 * time, with whatever queued meanwhile committed together (group commit); their callbacks run
 * on the loop once the commit returned. One connection, used by one thread-pool job at a
 * time, so SQLite's own locking never waits. Scans run on the caller's thread.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "dirigent/log.h"
#include "store_backend.h"

struct sqlite_store {
    uv_loop_t *loop;
    sqlite3 *db;
    sqlite3_stmt *put, *del;
    struct cp_store_op *queue, **tail; /* waiting for the next transaction */
    struct cp_store_op *batch;         /* in the running transaction */
    uv_work_t work;
    bool busy;
    struct dg_err batch_err; /* the running transaction's outcome (set on the pool thread) */
};

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

static void sq_free(void *be)
{
    struct sqlite_store *s = be;
    /* called after the loop: what was queued ran (uv_run waits for thread-pool work) */
    while (s->queue) { /* never started (the loop stopped first) */
        struct cp_store_op *o = s->queue;
        s->queue = o->next;
        cp_store_op_drop(o);
    }
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->del);
    if (s->db)
        sqlite3_close(s->db);
    free(s);
}

static int sq_open(uv_loop_t *loop, const struct cp_store_opts *o, void **be, struct dg_err *err)
{
    if (dg_mkdir_p(o->dir, 0700, err) < 0)
        return dg_err_wrap(err, "dataDir '%s'", o->dir);
    struct sqlite_store *s = dg_xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->tail = &s->queue;
    s->work.data = s;
    char *path = dg_xasprintf("%s/cp.sqlite", o->dir);
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) { /* e.g. dataDir is a file */
        dg_err_set(err, DG_E_INVAL, "sqlite: open '%s': %s", path,
                   s->db ? sqlite3_errmsg(s->db) : "no memory");
        free(path);
        goto fail;
    }
    free(path);
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
    *be = s;
    return 0;
fail:
    sq_free(s);
    return -1;
}

/* ---- writes: one transaction per batch on the thread pool --------------------------------- */

static void batch_work(uv_work_t *w)
{
    struct sqlite_store *s = w->data;
    struct dg_err *err = &s->batch_err;
    memset(err, 0, sizeof(*err));
    if (exec(s->db, "BEGIN IMMEDIATE", err) < 0)
        return;
    for (struct cp_store_op *o = s->batch; o; o = o->next) {
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

static void kick(struct sqlite_store *s);

static void batch_done(uv_work_t *w, int status)
{
    struct sqlite_store *s = w->data;
    struct cp_store_op *o = s->batch;
    s->batch = NULL;
    s->busy = false;
    const struct dg_err *err = s->batch_err.msg[0] ? &s->batch_err : NULL;
    if (err)
        dg_log(DG_LOG_ERROR, "store", "%s", err->msg);
    struct dg_err copy = s->batch_err; /* a callback may queue (and so overwrite) the next */
    while (o) {
        struct cp_store_op *next = o->next;
        cp_store_op_end(o, err ? &copy : NULL);
        o = next;
    }
    kick(s);
}

static void kick(struct sqlite_store *s)
{
    if (s->busy || !s->queue)
        return;
    s->batch = s->queue;
    s->queue = NULL;
    s->tail = &s->queue;
    s->busy = true;
    uv_queue_work(s->loop, &s->work, batch_work, batch_done);
}

static void sq_write(void *be, struct cp_store_op *o)
{
    struct sqlite_store *s = be;
    o->next = NULL;
    *s->tail = o;
    s->tail = &o->next;
    kick(s);
}

static int sq_scan(void *be, const char *kind, cp_store_each each, void *ud, struct dg_err *err)
{
    struct sqlite_store *s = be;
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

const struct cp_store_ops cp_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .write = sq_write,
    .scan = sq_scan,
    .free = sq_free,
};
