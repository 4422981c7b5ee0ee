/*
 * api.h: the worker's HTTP API (api.c): the adapter between the control plane's requests and
 * the sandbox registry.
 */
#ifndef DIRIGENT_WORKER_API_H
#define DIRIGENT_WORKER_API_H

#include "dirigent/http.h"
#include "registry.h"

/* Route the sandbox API on `s` to `reg` (borrowed; outlives the server). */
void wk_api_mount(struct dg_http_server *s, struct wk_registry *reg);
/* Registry events (registry.h): bind a create's reply to the client going away; answer it. */
void wk_api_bind(void *ud, struct wk_sandbox *sb);
void wk_api_answer(void *ud, struct wk_sandbox *sb, struct wk_reply to, const struct dg_err *err);

#endif
