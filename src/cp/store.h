/*
 * store.h: what the control plane keeps across restarts (DESIGN.md §7):
 * functions, workers and data planes, as JSON values under (kind, key). Only
 * registrations write; nothing on the cold-start path does. A write's callback
 * runs once it is durable (or failed): a registration is answered only then.
 *
 * Backends (`persistence:`):
 *   sqlite  one file in the CP's data directory, WAL, synchronous=FULL (fsync on
 *           commit); writes run on the thread pool, one transaction at a time,
 *           with whatever queued meanwhile committed together (group commit)
 *   redis   hashes dirigent:<kind> on a Redis server through hiredis' async client
 *           on the CP's loop (shared by CP replicas); with fullPersistence the CP sets
 *           appendonly yes + appendfsync always (Redis answers a write once it is in
 *           its fsync'd AOF) and, with replicas > 0, waits for them with WAIT
 *   none    nothing is kept (writes succeed at once)
 * Each backend is an operation table with its own state (store_backend.h, which also has the
 * options and the callback type; store_sqlite.c, store_redis.c, and "none" in store.c, the
 * front that picks one and counts pending writes).
 */
#ifndef DIRIGENT_CP_STORE_H
#define DIRIGENT_CP_STORE_H

#include <uv.h>

#include "dirigent/common.h"
#include "store_backend.h" /* cp_store_done, struct cp_store_opts */

struct cp_store;

struct cp_store *cp_store_open(uv_loop_t *loop, const struct cp_store_opts *o, struct dg_err *err);
/* Put (insert or replace) / delete; `done` (may be NULL) once durable. */
void cp_store_put(struct cp_store *s, const char *kind, const char *key, const char *value,
                  cp_store_done done, void *ud);
void cp_store_del(struct cp_store *s, const char *kind, const char *key, cp_store_done done,
                  void *ud);
/* Every (key, value) of `kind`, in key order. Blocking: start-up only, before serving. */
int cp_store_scan(struct cp_store *s, const char *kind,
                  void (*each)(void *ud, const char *key, const char *value), void *ud,
                  struct dg_err *err);
/* The same without blocking the loop (Redis: on the async connection); `done` after the last
 * `each`, with an error if the scan failed. For a replica that takes over while serving. */
void cp_store_scan_async(struct cp_store *s, const char *kind,
                         void (*each)(void *ud, const char *key, const char *value),
                         cp_store_done done, void *ud);
/* Writes not yet durable. */
unsigned cp_store_pending(const struct cp_store *s);
/* Shutdown, while the loop still runs: no reconnects; a Redis connection closes once its
 * answers are in. */
void cp_store_shutdown(struct cp_store *s);
/* After the loop: free everything (writes that never started are dropped). */
void cp_store_close(struct cp_store *s);
const char *cp_store_backend(const struct cp_store *s);

#endif
