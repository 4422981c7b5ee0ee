/*
 * haproxy.h: the leader keeps HAProxy's data-plane backend equal to the registered data
 * planes through its runtime API (haproxy.c; `api`: a unix socket path or IP:PORT; "" = off).
 */
#ifndef DIRIGENT_CP_HAPROXY_H
#define DIRIGENT_CP_HAPROXY_H

#include <uv.h>

#include "dirigent/common.h"

int cp_haproxy_init(uv_loop_t *loop, const char *api, const char *backend, const char *server_opts,
                    struct dg_err *err);
void cp_haproxy_sync(void);  /* soon (coalesced); a no-op on a follower */
void cp_haproxy_close(void); /* shutdown: abandon the command in flight */
void cp_haproxy_free(void);

#endif
