/*
 * replicas.h: leadership among control-plane replicas (replicas.c): with `replicas`
 * configured, raft elects the one that acts; it restores from the shared store first
 * (answering "restoring" meanwhile), and a deposed leader executes itself again to come back
 * as a follower with no registry.
 */
#ifndef DIRIGENT_CP_REPLICAS_H
#define DIRIGENT_CP_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#include "dirigent/common.h"

/* The timers, and with replicas (cp.nreplicas > 0) the election: raft at raft[replica_id - 1]
 * of `nraft`, its state in DATA_DIR/raft-ID. `argv`: how this replica executes itself again. */
int cp_replicas_start(char **argv, char **raft, size_t nraft, const char *data_dir,
                      int64_t election_timeout_ms, struct dg_err *err);
void cp_replicas_stop(void);  /* shutdown began: no more takeovers or restarts */
void cp_replicas_close(void); /* the timers and the election */

#endif
