/*
 * auth.h: the cluster's credentials. One secret, the cluster key (32 random bytes, kept as 64
 * hex characters in a file of mode 0600), and credentials derived from it:
 *
 *     dg1.<role>.<name>.<hex HMAC-SHA256(key, "<role>.<name>")>
 *
 * Roles: node (workers and data planes; the name is the worker's or data plane's name), cp
 * (the control plane calling nodes), operator (CLI, registration and user API). Whoever holds
 * the key can make any credential; a credential proves its role and name and nothing else.
 * Verification recomputes the MAC and compares in constant time (CRYPTO_memcmp).
 *
 * The HTTP glue (dg_auth_server) installs a server's auth hook (http.h): routes say which roles
 * may call them (DG_HTTP_AUTH_* flags, the same bits as DG_AUTH_*); a refusal answers 401/403
 * naming what is missing and is logged as an audit line. docs/security.md has the threat model.
 */
#ifndef DIRIGENT_AUTH_H
#define DIRIGENT_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "dirigent/common.h"
#include "dirigent/http.h"

enum dg_auth_role {
    DG_AUTH_ANON = 0,
    DG_AUTH_NODE = DG_HTTP_AUTH_NODE,
    DG_AUTH_CP = DG_HTTP_AUTH_CP,
    DG_AUTH_OPERATOR = DG_HTTP_AUTH_OPERATOR,
};

#define DG_AUTH_KEY_BYTES 32
#define DG_AUTH_NAME_MAX  63  /* a credential's name: [A-Za-z0-9_-], 1..63 bytes */
#define DG_AUTH_CRED_MAX  160 /* a credential's length, with its NUL */
#define DG_AUTH_CRED_ENV  "DIRIGENT_TOKEN"

struct dg_auth_key {
    unsigned char k[DG_AUTH_KEY_BYTES];
};

struct dg_auth_identity {
    unsigned role; /* enum dg_auth_role */
    char name[DG_AUTH_NAME_MAX + 1];
};

/* "node", "cp", "operator" ("anonymous" for 0); parse returns the role or -1. */
const char *dg_auth_role_name(unsigned role);
int dg_auth_role_parse(const char *s);
/* A name a credential may carry: 1..63 of [A-Za-z0-9_-] (no '.', the separator).
 * Error: "credential name 'x y': expected 1..63 characters of A-Z a-z 0-9 _ -". */
int dg_auth_name_check(const char *name, struct dg_err *err);

/* 32 bytes from getrandom. */
int dg_auth_key_generate(struct dg_auth_key *key, struct dg_err *err);
/* Write the key as 64 hex characters and a newline to a new file of mode 0600 (fails if
 * `path` exists). */
int dg_auth_key_write(const char *path, const struct dg_auth_key *key, struct dg_err *err);
/* Read a key file. Refused: a file readable or writable by group or others ("key file 'P' is
 * readable by others (mode 0644): chmod 600 P"), anything but 64 hex characters. */
int dg_auth_key_load(const char *path, struct dg_auth_key *key, struct dg_err *err);

/* The credential of (role, name) into out (size >= DG_AUTH_CRED_MAX). */
int dg_auth_credential(const struct dg_auth_key *key, unsigned role, const char *name, char *out,
                       size_t size, struct dg_err *err);
/* Check a credential: its form, its role and name, its MAC (constant-time). On success fills
 * `id`. Errors name what is wrong: "malformed credential (expected dg1.ROLE.NAME.MAC)",
 * "unknown credential role 'x'", "bad credential signature (another cluster's key?)". */
int dg_auth_verify(const struct dg_auth_key *key, struct dg_str cred, struct dg_auth_identity *id,
                   struct dg_err *err);

/* A credential from a file (the first line; e.g. the operator token `dirigent up` writes):
 * refused like a key file when group or others may read it. */
int dg_auth_cred_load(const char *path, char *out, size_t size, struct dg_err *err);

/* True for a numeric loopback address: any of 127.0.0.0/8, ::1, ::ffff:127.x.y.z, and
 * "localhost". Everything else (0.0.0.0 and :: included) is not. */
bool dg_auth_host_is_loopback(const char *host);

/* ---- HTTP glue ---------------------------------------------------------------------------- */

/* Install the auth hook on `s` with `key` (borrowed; must outlive the server). Requests to a
 * route with DG_HTTP_AUTH_* flags need a credential of one of those roles ("Authorization:
 * Bearer CRED"); elsewhere a credential is optional but checked when present. Refusals:
 * 401 (none, malformed, bad signature), 403 (valid, wrong role); each logged by
 * dg_auth_audit. */
void dg_auth_server(struct dg_http_server *s, const struct dg_auth_key *key);

/* One audit line (log module "audit", level info): who (role.name or "anonymous"), what,
 * from where (the peer address): "audit: who=node.w1 from=127.0.0.1:5555 register worker w1". */
void dg_auth_audit(const struct dg_http_req *r, const char *fmt, ...) DG_PRINTF(2, 3);
/* "role.name" of the caller, or "anonymous", into buf. */
const char *dg_auth_who(const struct dg_http_req *r, char *buf, size_t size);

/* A daemon's start-up rule: with `key_file` set, load the key into `key`, derive the daemon's
 * own credential (role, name) into `cred` (size >= DG_AUTH_CRED_MAX) and return 1. Without it,
 * return 0 when every host in `hosts` (n of them) is loopback (the caller logs its warning),
 * else fail naming `prog`, the listener and how to make a key. */
int dg_auth_daemon_setup(const char *prog, const char *key_file, unsigned role, const char *name,
                         const char *const *hosts, size_t n, struct dg_auth_key *key, char *cred,
                         struct dg_err *err);

#endif
