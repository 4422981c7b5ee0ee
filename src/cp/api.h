/*
 * api.h: the control plane's HTTP API (api.c): the registration server and the internal API
 * as handlers that decode requests into core events (cp_core.h), a follower's forwarding to the
 * leader, and the start-up restore from the store with the workers' sandboxes
 * (reconstruction).
 */
#ifndef DIRIGENT_CP_API_H
#define DIRIGENT_CP_API_H

#include "dirigent/http.h"

void cp_api_mount(struct dg_http_server *internal, struct dg_http_server *registration);
void cp_api_close(void); /* shutdown: the pool a follower forwards with */
/* Start-up: functions, workers and data planes from the store (before serving), then ask the
 * workers for their sandboxes and push every list to the data planes (reconstruction). */
int cp_restore(struct dg_err *err);
void cp_restore_close(void); /* shutdown */
/* The same without blocking the loop (a replica taking over); `done` when it is restored. */
void cp_restore_async(void (*done)(void *ud, const struct dg_err *err), void *ud);

#endif
