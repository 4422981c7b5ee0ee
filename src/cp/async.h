/*
 * async.h: the control plane's side of asynchronous invocations (docs/api.md "Asynchronous
 * invocations"): the records the data planes hand over (an accepted request, then its result)
 * kept in the store under kind "async" (key: the request id), an index of them in memory on
 * the leader, the internal routes the data planes call, and the expiry of results after
 * asyncResultTtl. The cores know nothing of it.
 */
#ifndef DIRIGENT_CP_ASYNC_H
#define DIRIGENT_CP_ASYNC_H

#include <uv.h>

#include "dirigent/http.h"

/* Start: results live `ttl_ms` after they are stored; at most `max_records` records (pending
 * and done) are kept, a submission beyond gets 429. */
void cp_async_init(uv_loop_t *loop, uint64_t ttl_ms, uint64_t max_records);
/* The routes on the internal API (node credentials; the leader acts, followers refuse). From
 * api.c: `refuse` answers a follower's 503 naming the leader, `node_is` whether a node
 * credential may act as `name` (else it answered 403). */
void cp_async_mount(struct dg_http_server *internal, void (*refuse)(struct dg_http_req *r),
                    bool (*node_is)(struct dg_http_req *r, const char *what, const char *name));
/* The store read back: forget the index, then one record (cp_store_scan's `each`). */
void cp_async_reset(void);
void cp_async_restore_each(void *ud, const char *key, const char *value);
/* Records in the index (pending, done). */
void cp_async_counts(unsigned *pending, unsigned *done);
void cp_async_close(void); /* shutdown */

#endif
