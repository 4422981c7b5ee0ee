/*
 * scaling.h: the control plane core's effects over HTTP and libuv (scaling.c): the table the
 * daemon's core is made with, and its timers and connections around the loop's life.
 */
#ifndef DIRIGENT_CP_SCALING_H
#define DIRIGENT_CP_SCALING_H

#include "cp_core.h"

extern const struct cp_effects cp_io_effects;

void cp_io_init(void);  /* the timers, once the loop is there */
void cp_io_flush(void); /* send what is batched now */
/* Shutdown: flush, close every peer's connections and the timers. */
void cp_io_close(void);
void cp_io_free(void); /* after the loop: trace rows never pushed */
/* Call fn(ud, true) once this loop turn's push has been answered by every data plane (or
 * failed), or fn(ud, false) at shutdown if it never was: a registration is answered once the
 * DPs know the function, as the original's RegisterService returned after AddDeployment. */
/* The workload's start-up env (COLD_START_BUSY_LOOP_MS, ITERATIONS_MULTIPLIER) appended to
 * `env` (room for two more; the strings live in bufs): a create's env, and a pool's (pool.c),
 * which must be the same for a create to find its pre-created sandbox. */
void cp_sandbox_workload_env(const struct cp_fn_spec *spec, struct dg_strlist *env,
                             char bufs[2][64]);
void cp_after_push(void (*fn)(void *ud, bool pushed), void *ud);

#endif
