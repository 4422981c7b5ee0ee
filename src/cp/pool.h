/*
 * pool.h: the control plane's side of pre-created sandboxes (pool.c): how many of each
 * function the workers keep created but not started, sent to them as tables.
 */
#ifndef DIRIGENT_CP_POOL_H
#define DIRIGENT_CP_POOL_H

#include <stdint.h>

#include "cp_core.h"

/* How many pre-created sandboxes `f` should have across the workers now: its `prewarm` plus
 * the autoscaler's expected scale beyond the sandboxes it has, within its upper bound. */
int cp_pool_want(const struct cp_fn *f);

/* The leader's cron (main.c): at most once a second, each worker's table, sent where it
 * changed. */
void cp_pool_tick(uint64_t now_ms);

#endif
