/*
 * config_compat.h: the original's configuration keys, as the config loader (config.h) accepts
 * them; the tables themselves are in lib/config_compat.c. Apart from config.h so that the
 * tables need nothing of the loader and the loader, which looks a program's table up, is the
 * only one of the two that depends on the other.
 *
 * Go Dirigent's YAML files (cmd/DAEMON/config*.yaml) use keys and values ours
 * does not (`verbosity: trace`, `persistence: false`, `criType`, the firecracker* keys...). A
 * program's compat table lists each of them with what it becomes, so those files load with one
 * warning per such key ("PATH:LINE: verbosity: the original's key; using logLevel: trace")
 * instead of failing at the first one. Keys in neither table stay errors.
 *
 * An entry's `key` is the original's key, dotted when nested; "group.*" covers every key of a
 * group (one warning for the whole group). An entry whose key is one of ours translates only the
 * original's values of that key (`persistence: false`); other values load as usual, silently.
 */
#ifndef DIRIGENT_CONFIG_COMPAT_H
#define DIRIGENT_CONFIG_COMPAT_H

#include <stddef.h>

#include "dirigent/common.h"

enum dg_conf_compat_kind {
    DG_COMPAT_MAP,    /* the value (through `value` when set) goes to our key `to` */
    DG_COMPAT_IGNORE, /* accepted and dropped, with `why` in the warning */
    DG_COMPAT_HOST,   /* the host part of our IP:PORT key `to`; `def` is the port if none given */
    DG_COMPAT_PORT,   /* the port part of our IP:PORT key `to`; `def` is the host if none given */
};

/* What a value translator did with the original's `text`. */
enum dg_conf_compat_result {
    DG_COMPAT_SAME = 0, /* the text is already ours: load it as it is (no warning) */
    DG_COMPAT_USE = 1,  /* use the text written to buf instead */
    DG_COMPAT_DROP = 2, /* ignore the key (the warning gives *note, or the entry's why) */
};

/* Translate `text` (borrowed) into buf[n]. May point *note at a static string for the warning.
 * Returns a dg_conf_compat_result, or a negative code with `err` set to the reason (the loader
 * prefixes "PATH:LINE: KEY: "). */
typedef int (*dg_conf_compat_value_fn)(const char *text, char *buf, size_t n, const char **note,
                                       struct dg_err *err);

struct dg_conf_compat {
    const char *key; /* the original's key: "verbosity", "redis.dockerAddress", "firecracker.*" */
    enum dg_conf_compat_kind kind;
    const char *to;                /* MAP, HOST, PORT: our key */
    dg_conf_compat_value_fn value; /* optional */
    const char *def;               /* HOST, PORT: the other part when the file has none */
    const char *why;               /* the reason shown in the warning (IGNORE: required) */
};

/* The compat table of a daemon by program name ("dirigent-cp", "dirigent-dp",
 * "dirigent-worker"; lib/config_compat.c), or NULL with *n = 0. */
const struct dg_conf_compat *dg_conf_compat_for(const char *prog, size_t *n);

#endif
