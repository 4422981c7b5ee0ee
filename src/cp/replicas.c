/*
 * replicas.c: a replicated control plane (replicas.h). Raft (election.c) elects the leader;
 * the elected replica restores the registry from the shared store without blocking its loop
 * and then acts; a deposed one starts afresh as a follower.
 */
#include "replicas.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "cp.h"
#include "election.h"
#include "haproxy.h"
#include "dirigent/log.h"

static void take_over(uv_timer_t *t);

/* Restored (or not): a leader acts only on the whole registry, so a store it cannot read
 * yet (Redis restarting) is read again in 1 s while it answers "restoring". */
static void took_over(void *ud, const struct dg_err *err)
{
    if (!cp.rep.election || !cp_election_is_leader(cp.rep.election)) {
        cp.taking_over = false; /* lost it again meanwhile */
        return;
    }
    if (err) {
        dg_log(DG_LOG_ERROR, "cp", "restoring: %s; trying again in 1 s", err->msg);
        uv_timer_start(&cp.rep.retry_restore, take_over, 1000, 0);
        return;
    }
    cp.taking_over = false;
    cp.leader = true;
    cp_haproxy_sync();
}

static void take_over(uv_timer_t *t)
{
    if (cp.rep.stopping || !cp.rep.election || !cp_election_is_leader(cp.rep.election)) {
        cp.taking_over = false;
        return;
    }
    cp_restore_async(took_over, NULL);
}

/* A deposed leader drops its registry, as the original does: the new leader owns the
 * sandboxes, the store and the pushes now, and a stale registry would push endpoints that
 * no longer exist should this replica lead again. Tearing down a live registry with
 * creates, drains and pushes in flight is where bugs hide; starting afresh is what a crash
 * does, and that path is tested. So the replica executes itself again (same pid, same
 * arguments; libuv's descriptors are close-on-exec) and comes back as a follower. */
static void reexec(uv_timer_t *t)
{
    if (cp.rep.stopping)
        return;
    dg_log_always("cp", "replica %lld was deposed: starting afresh to drop its registry",
                  (long long)cp.replica_id);
    execv("/proc/self/exe", cp.rep.argv);
    dg_log(DG_LOG_ERROR, "cp", "restarting itself: %s; it stays a follower with a stale registry",
           strerror(errno));
}

/* Leadership changed (raft, on the loop). */
static void on_leadership(void *ud, bool is_leader, unsigned leader_id, const char *leader_raft)
{
    free(cp.leader_api);
    cp.leader_api =
        leader_id >= 1 && leader_id <= cp.nreplicas ? dg_xstrdup(cp.replicas[leader_id - 1]) : NULL;
    if (is_leader && !cp.leader && !cp.taking_over) {
        dg_log_always("cp", "replica %lld leads: restoring from %s", (long long)cp.replica_id,
                      cp_store_backend(cp.store));
        cp.taking_over = true; /* it acts once restored, without blocking the loop */
        cp_restore_async(took_over, NULL);
    } else if (!is_leader && (cp.leader || cp.taking_over)) {
        cp.leader = false;
        dg_log(DG_LOG_WARN, "cp", "replica %lld no longer leads (leader: %s)",
               (long long)cp.replica_id, cp.leader_api ? cp.leader_api : "none yet");
        if (!cp.rep.stopping) /* not from within raft's callback */
            uv_timer_start(&cp.rep.reexec, reexec, 0, 0);
    } else if (!is_leader) {
        dg_log(DG_LOG_INFO, "cp", "replica %lld follows %s", (long long)cp.replica_id,
               cp.leader_api ? cp.leader_api : "(no leader yet)");
    }
}

int cp_replicas_start(char **argv, char **raft, size_t nraft, const char *data_dir,
                      int64_t election_timeout_ms, struct dg_err *err)
{
    cp.rep.argv = argv;
    uv_timer_init(cp.loop, &cp.rep.retry_restore);
    uv_timer_init(cp.loop, &cp.rep.reexec);
    cp.rep.timers_open = true;
    if (cp.nreplicas == 0)
        return 0;
    char *raft_dir = dg_xasprintf("%s/raft-%zu", data_dir, cp.replica_id);
    mkdir(data_dir, 0700);
    struct cp_election_opts eo = {.id = (unsigned)cp.replica_id,
                                  .peers = (const char *const *)raft,
                                  .npeers = nraft,
                                  .dir = raft_dir,
                                  .election_timeout_ms = (unsigned)election_timeout_ms,
                                  .heartbeat_timeout_ms =
                                      (unsigned)DG_MAX(10, election_timeout_ms / 3),
                                  /* with authTokenFile raft connections carry cp credentials */
                                  .auth_key = cp.auth_on ? &cp.auth_key : NULL};
    cp.rep.election = cp_election_start(cp.loop, &eo, on_leadership, NULL, err);
    free(raft_dir);
    return cp.rep.election ? 0 : -1;
}

void cp_replicas_stop(void)
{
    cp.rep.stopping = true;
    if (cp.rep.timers_open)
        uv_timer_stop(&cp.rep.retry_restore);
}

void cp_replicas_close(void)
{
    if (cp.rep.timers_open) {
        cp.rep.timers_open = false;
        uv_close((uv_handle_t *)&cp.rep.retry_restore, NULL);
        uv_close((uv_handle_t *)&cp.rep.reexec, NULL);
    }
    if (cp.rep.election) {
        cp_election_stop(cp.rep.election, NULL, NULL);
        cp.rep.election = NULL;
    }
}
