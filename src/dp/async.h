/*
 * async.h: asynchronous invocations on the data plane (config `async: true`; docs/api.md
 * "Asynchronous invocations"). Every request on the proxy port is then accepted with an id
 * once the control plane has stored it, run later through the normal invocation path (the
 * core's queue, slots and load balancing, reached through a loopback listener of dp_invoke),
 * retried up to numberRetries times when its sandbox fails, and its result stored with the CP;
 * the result port (portProxyRead) answers a fetch of the id.
 */
#ifndef DIRIGENT_DP_ASYNC_H
#define DIRIGENT_DP_ASYNC_H

#include "dirigent/common.h"
#include "dirigent/http.h"
#include "dp.h"

struct dp_async_config {
    const char *host;                    /* the result port listens here */
    int port_read;                       /* portProxyRead (0: ephemeral) */
    unsigned retries;                    /* numberRetries */
    unsigned max_pending;                /* asyncMaxPending */
    const struct dg_strlist *cp;         /* controlPlaneAddress (at least one) */
    const char *bearer;                  /* the DP's credential for the CP (NULL: none) */
    const struct dg_http_limits *limits; /* the ingress's (the result port's body is capped) */
};

/* Take over `ingress`'s fallback (submissions), open the loopback runner and the result port,
 * and claim this DP's unfinished requests from the CP. */
int dp_async_start(struct dp *dp, struct dg_http_server *ingress, const struct dp_async_config *c,
                   struct dg_err *err);
int dp_async_read_port(void);
/* Shutdown: requests in flight are dropped (the CP keeps them; the next start claims them);
 * `done` once both servers closed. */
void dp_async_stop(uint64_t grace_ms, void (*done)(void *ud), void *ud);

#endif
