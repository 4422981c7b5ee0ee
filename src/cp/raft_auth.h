/*
 * raft_auth.h: authenticated raft connections between control-plane replicas (issue 14,
 * finding 1; docs/security.md "Raft").
 *
 * A `struct raft_uv_transport` that wraps libraft 0.15's own TCP transport (raft_uv_tcp):
 * listen and connect go to the inner transport, and every connection it makes or accepts must
 * then pass one exchange before libraft sees it:
 *
 *   connecting side, after libraft's own handshake (protocol, id, address) was written:
 *       frame  "DGRA" | version 1 | 0 | credential length (2 bytes, big-endian) | credential
 *   listening side, after it read libraft's handshake and exactly the frame:
 *       one byte, 'A' (accepted: the stream goes to libraft) or 'R' (refused, then closed)
 *
 * The credential is the replica's cp credential from the cluster key (lib/auth.h), named
 * cp-<raft id>; the listener accepts it only as the id the peer's raft handshake claims. Both
 * sides give up after CP_RAFT_AUTH_TIMEOUT_MS; libraft's client then retries as after any
 * failed connection. Refusals are audit lines (module audit, at most one a second with a count
 * of those not shown). Without a key the election uses raft_uv_tcp as it is (loopback only).
 *
 * All of it runs on the raft loop (election.c's raft thread).
 */
#ifndef DIRIGENT_CP_RAFT_AUTH_H
#define DIRIGENT_CP_RAFT_AUTH_H

#include <stddef.h>

#include <uv.h>

#include "dirigent/auth.h"
#include "dirigent/common.h"

#define CP_RAFT_AUTH_HDR        8    /* the frame's fixed header */
#define CP_RAFT_AUTH_TIMEOUT_MS 2000 /* a connection's exchange must finish within this */
#define CP_RAFT_AUTH_PENDING    32   /* at most this many incoming exchanges at once */
#define CP_RAFT_AUTH_ACCEPT     'A'
#define CP_RAFT_AUTH_REFUSE     'R'

struct raft_uv_transport;
struct cp_raft_auth;

/* The frame for `cred` into out (size >= CP_RAFT_AUTH_HDR + strlen(cred)); returns its length,
 * 0 if cred is empty or longer than a credential can be. */
size_t cp_raft_auth_frame(const char *cred, unsigned char *out, size_t size);

/* Check a frame's header; on success *cred_len is the credential's length that follows.
 * Errors name what is wrong ("raft authentication: bad magic ..."). */
int cp_raft_auth_header_parse(const unsigned char *hdr, size_t *cred_len, struct dg_err *err);

/* A wrapping transport on `loop` (the raft loop) around a new raft_uv_tcp transport. `key` is
 * copied; this replica presents cp-<self_id>. bind_address: as raft_uv_tcp_set_bind_address
 * (NULL: the replica's own address). NULL with err set on failure. */
struct cp_raft_auth *cp_raft_auth_new(uv_loop_t *loop, const struct dg_auth_key *key,
                                      unsigned self_id, const char *bind_address,
                                      struct dg_err *err);

/* What to give raft_uv_init. */
struct raft_uv_transport *cp_raft_auth_transport(struct cp_raft_auth *a);

/* Release it: after libraft closed the transport (raft_close's callback), or when it was never
 * handed to libraft. */
void cp_raft_auth_free(struct cp_raft_auth *a);

#endif
