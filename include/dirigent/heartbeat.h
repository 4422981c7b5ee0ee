/*
 * heartbeat.h: a daemon's link to the control plane. Workers and data planes
 * register by POSTing a JSON body to the CP every interval (the original's
 * heartbeats: register = heartbeat, 5 s); the first POST goes out at once,
 * and the first after a failure again carries "resync": true, so a control
 * plane that restarted pushes its state. A CP that wants everything again (it restored the
 * daemon from its store) answers "resync": the next beat follows within 100 ms with it. The same keep-alive pool carries
 * other calls (metrics).
 */
#ifndef DIRIGENT_HEARTBEAT_H
#define DIRIGENT_HEARTBEAT_H

#include <jansson.h>
#include <uv.h>

#include "dirigent/http.h"

struct dg_heartbeat;

/* `address` is the CP's IP:PORT (copied); `body(ud)` builds the JSON sent each time (the
 * heartbeat adds "resync"; NULL: no beat this time, the next at its time). Returns NULL with `err` set on a bad address. */
struct dg_heartbeat *dg_heartbeat_start(uv_loop_t *loop, const char *address, const char *path,
                                        uint64_t interval_ms, json_t *(*body)(void *ud), void *ud,
                                        struct dg_err *err);
/* The same with several control-plane replicas: it talks to one at a time; when that one fails
 * or refuses, it moves to the leader the refusal names (header X-Dirigent-Leader) or to the
 * next, and beats again within 100 ms. */
struct dg_heartbeat *dg_heartbeat_start_list(uv_loop_t *loop, const struct dg_strlist *addresses,
                                             const char *path, uint64_t interval_ms,
                                             json_t *(*body)(void *ud), void *ud,
                                             struct dg_err *err);
/* The same over up to `max_conns` connections per control plane (0: 4, the default): the
 * owner of heartbeats that borrow its connections (dg_heartbeat_start_shared). */
struct dg_heartbeat *dg_heartbeat_start_conns(uv_loop_t *loop, const struct dg_strlist *addresses,
                                              const char *path, uint64_t interval_ms,
                                              unsigned max_conns, json_t *(*body)(void *ud),
                                              void *ud, struct dg_err *err);
/* Another heartbeat over `owner`'s connections (its control planes, path and interval): one
 * process that beats for many nodes (a worker's emulatedNodes) keeps a few keep-alive
 * connections instead of one per node. Its first beat goes out after `first_ms` (spread the
 * nodes over the interval). Stop every borrower before its owner; a borrower sets no bearer
 * (the pool's is the owner's). */
struct dg_heartbeat *dg_heartbeat_start_shared(struct dg_heartbeat *owner, uint64_t first_ms,
                                               json_t *(*body)(void *ud), void *ud);
/* Send `body` (taken) as JSON POST to `path` on the CP; errors are logged once per kind. */
void dg_heartbeat_post(struct dg_heartbeat *h, const char *path, json_t *body);
/* The same with the answer: `cbs->on_done(q, resp, err, ud)` (always called, also when the
 * heartbeat stops with the request in flight). */
void dg_heartbeat_post_cb(struct dg_heartbeat *h, const char *path, json_t *body,
                          const struct dg_http_client_cbs *cbs, void *ud);
/* The same with the JSON already as text (`body` taken, NUL-terminated). */
void dg_heartbeat_post_text(struct dg_heartbeat *h, const char *path, char *body);
/* Every request from now on (beats and posts) carries this credential (copied; NULL: none):
 * "Authorization: Bearer CRED". Call right after start: the first beat goes out from the
 * loop. A 401/403 answer is logged as an error once (a missing or wrong key). */
void dg_heartbeat_set_bearer(struct dg_heartbeat *h, const char *bearer);
/* Beat now (from the loop: at its next turn; after the one in flight, if any), then every
 * interval again: the daemon's state changed in a way the CP should know before the next
 * period (a worker became saturated or free again). */
void dg_heartbeat_kick(struct dg_heartbeat *h);
/* Hold (true) or release (false) the heartbeat: held, it sends nothing (its timer stopped: a
 * process beating for 10,000 emulated nodes keeps 10,000 timers otherwise) and a kick is
 * ignored; released, it beats again at its own phase of the interval. A beat in flight ends
 * as usual. */
void dg_heartbeat_hold(struct dg_heartbeat *h, bool hold);
/* True while the heartbeats say "resync" (the first one, the first after a failure, and the
 * next after the CP answered "resync"): a body builder then includes its whole state. */
bool dg_heartbeat_resyncing(const struct dg_heartbeat *h);
/* True once the CP has answered a heartbeat with 200. */
bool dg_heartbeat_ok(const struct dg_heartbeat *h);
void dg_heartbeat_stop(struct dg_heartbeat *h);

#endif
