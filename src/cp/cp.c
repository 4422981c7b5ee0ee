/*
 * cp.c: the control-plane daemon's one instance (cp.h), shared by its adapters (api.c,
 * scaling.c, haproxy.c, replicas.c) and wired by main.c.
 */
#include "cp.h"

struct cp cp;
