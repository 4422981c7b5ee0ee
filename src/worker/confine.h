/*
 * confine.h: what confines an oci sandbox besides its namespaces (confine.c): the seccomp
 * profile (an allowlist at least as strict as Docker's default) and the capability names a
 * worker may grant (sandboxCapabilities).
 */
#ifndef DIRIGENT_WORKER_CONFINE_H
#define DIRIGENT_WORKER_CONFINE_H

#include <jansson.h>
#include <stdbool.h>

#include "dirigent/common.h"

/* The OCI linux.seccomp section (a new reference): default EPERM, the allowlist, clone
 * without namespace flags, clone3 ENOSYS (libc falls back to clone), socket only for
 * AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE. Built once at start. */
json_t *wk_seccomp_profile(void);
/* Whether `name` is a Linux capability name (CAP_...). */
bool wk_cap_known(const char *name);

#endif
