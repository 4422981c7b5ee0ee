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
 *   none    nothing is kept (writes succeed at once)
 */
#ifndef DIRIGENT_CP_STORE_H
#define DIRIGENT_CP_STORE_H

#include <uv.h>

#include "dirigent/common.h"

struct cp_store;

/* err NULL: durable. */
typedef void (*cp_store_done)(void *ud, const struct dg_err *err);

/* Open `backend` ("sqlite" or "none"); sqlite keeps DIR/cp.sqlite (DIR is created). */
struct cp_store *cp_store_open(uv_loop_t *loop, const char *backend, const char *dir,
                               struct dg_err *err);
/* Put (insert or replace) / delete; `done` (may be NULL) once durable. */
void cp_store_put(struct cp_store *s, const char *kind, const char *key, const char *value,
                  cp_store_done done, void *ud);
void cp_store_del(struct cp_store *s, const char *kind, const char *key, cp_store_done done,
                  void *ud);
/* Every (key, value) of `kind`, in key order. Blocking: start-up only, before serving. */
int cp_store_scan(struct cp_store *s, const char *kind,
                  void (*each)(void *ud, const char *key, const char *value), void *ud,
                  struct dg_err *err);
/* Writes not yet durable. */
unsigned cp_store_pending(const struct cp_store *s);
/* Finish what is queued (the loop keeps running until then), then close. */
void cp_store_close(struct cp_store *s);
const char *cp_store_backend(const struct cp_store *s);

#endif
