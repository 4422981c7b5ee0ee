/*
 * election.h: which control-plane replica leads. Each replica runs a libraft
 * (canonical raft 0.15) server over libraft's own libuv TCP transport and disk
 * log; the replicas are a static configuration of voters, bootstrapped on
 * first start. Nothing is replicated through raft (the store is Redis): raft
 * only elects, so the FSM is a no-op and the log holds just the bootstrap
 * configuration (0.15 appends nothing when a leader is elected).
 *
 * libraft runs on a thread and libuv loop of its own, because it writes its
 * term and vote with a synchronous fsync on the loop it runs on (0.6 s seen on
 * a busy VM disk): the caller's loop only gets the results. Leadership changes
 * are posted to the caller's loop and reported through one callback, without
 * polling: libraft 0.15 has no state-change callback, so election.c wraps the
 * raft_io vtable's tick and receive callbacks (where libraft changes role or
 * learns a leader; anything else, such as a failed disk write, shows at the
 * next tick) and compares raft_state()/raft_leader() with what it last posted.
 * Changes in quick succession may reach the callback as the latest one only.
 *
 * Timing with the defaults (300 ms election, 100 ms heartbeat), measured on one
 * host: a first leader 0.3-0.7 s after start; a SIGKILLed leader replaced in
 * 0.3-0.9 s, median 0.5 s. Not the earlier but the later of the survivors'
 * randomized timeouts counts: libraft 0.15 refuses votes while it knows a
 * leader, however long ago it last heard from it. A stopped leader hands over
 * in about a millisecond (cp_election_stop).
 *
 * Leadership is not a lease: a leader cut off from the others keeps
 * is_leader true until libraft steps it down, one election timeout after it
 * last heard from a majority, and a new leader may already exist by then.
 */
#ifndef DIRIGENT_CP_ELECTION_H
#define DIRIGENT_CP_ELECTION_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "dirigent/auth.h"
#include "dirigent/common.h"

struct cp_election;

struct cp_election_opts {
    unsigned id;              /* this replica's index + 1 (raft ids start at 1) */
    const char *const *peers; /* every replica's raft address "host:port", this one included, in
                                 id order; host is an IPv4 address: libraft 0.15 does not
                                 resolve names (uv_ip4_addr) */
    size_t npeers;
    const char *dir;                    /* raft data directory (created) */
    unsigned election_timeout_ms;       /* default 300 (0: default) */
    unsigned heartbeat_timeout_ms;      /* default 100 (0: default); below the election timeout */
    const char *bind_address;           /* optional "ip:port" to listen on instead of
                                      peers[id - 1] (containers: "0.0.0.0:port"); the port
                                      must be the same */
    const struct dg_auth_key *auth_key; /* the cluster key (copied): every raft connection
                                           presents and checks a cp credential (raft_auth.h);
                                           NULL: unauthenticated (loopback only) */
};

/* is_leader: this replica leads now; leader_id/leader_address: the current leader (0/NULL when
 * none known). Called on the loop whenever leadership changes (here or elsewhere).
 * leader_address is owned by the election and valid until the next callback or stop; copy it
 * to keep it. The callback may call cp_election_stop. */
typedef void (*cp_election_cb)(void *ud, bool is_leader, unsigned leader_id,
                               const char *leader_address);

/* Create the data directory if needed, bootstrap the static configuration (all peers voters)
 * on the first start, and start the raft server on a thread and loop of its own. `cb`
 * (required) runs on `loop` (the caller's) for every leadership change until cp_election_stop.
 * `o` and everything it points at are borrowed (copied). Returns the election, or NULL with
 * `err` set (bad options, the directory, the listening port), with everything released (if the
 * thread could not be created, one handle still closes on `loop`). Start-up reads and writes
 * the raft directory synchronously (libraft does; about 40 ms on first start here), so call this
 * before serving. */
struct cp_election *cp_election_start(uv_loop_t *loop, const struct cp_election_opts *o,
                                      cp_election_cb cb, void *ud, struct dg_err *err);

/* Whether this replica leads, as last told to the callback (see the lease note above). */
bool cp_election_is_leader(const struct cp_election *e);

/* The current leader's id as last told to the callback, 0 if none known; `*address` (may be
 * NULL) gets its raft address (owned by the election, valid until the next change callback or
 * stop) or NULL. */
unsigned cp_election_leader(const struct cp_election *e, const char **address);

/* Stop (raft_close); done(ud) (may be NULL) runs on `loop` once everything is closed, the
 * thread joined and `e` freed. No callback runs after this call. A leader first hands
 * leadership to an up-to-date follower (raft transfer, at most one election timeout) so the
 * others need not wait out their timeouts. Call once, from `loop`'s thread (the callback
 * included); do not use `e` afterwards. */
void cp_election_stop(struct cp_election *e, void (*done)(void *ud), void *ud);

#endif
