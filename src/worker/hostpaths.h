/*
 * hostpaths.h: what a create may name on the worker's host (docs/security.md): paths only
 * below directories the operator allowed (processAllowedDirs, imageRoots), with symlinks
 * resolved, and registries only from imageRegistries.
 */
#ifndef DIRIGENT_WORKER_HOSTPATHS_H
#define DIRIGENT_WORKER_HOSTPATHS_H

#include <stdbool.h>
#include <stddef.h>

#include "dirigent/common.h"

/* A set of allowed directories, each resolved (realpath) once. */
struct wk_dirs {
    struct dg_strlist dirs; /* resolved; a directory that does not exist is left out */
    char *text;             /* as configured, comma-separated: for messages */
};

/* Resolve `dirs` (absolute paths). -1 with err naming `key` when one is relative. */
int wk_dirs_init(struct wk_dirs *d, const struct dg_strlist *dirs, const char *key,
                 struct dg_err *err);
void wk_dirs_free(struct wk_dirs *d);

enum wk_path_verdict {
    WK_PATH_OK,      /* resolved[] is the real path, below an allowed directory */
    WK_PATH_MISSING, /* below an allowed directory as written, and does not exist */
    WK_PATH_REFUSED, /* not absolute, '.' or '..' or '//' in it, or it (or its target) is
                        outside every allowed directory */
};
/* Where `path` lies. The lexical checks come first: a path outside the allowed directories
 * is refused without touching the file system (nothing about it is learnt). */
enum wk_path_verdict wk_dirs_check(const struct wk_dirs *d, const char *path, char *resolved,
                                   size_t len);

/* The items of `l` joined by ',' (malloc'd; "" for none). */
char *wk_strlist_join(const struct dg_strlist *l);

/* Registries: entries HOST, HOST:PORT or "loopback" (localhost, 127.0.0.0/8 as a canonical
 * dotted quad, [::1]; a name the resolver would look up, e.g. 127.0.0.256, is not). */
bool wk_registry_allowed(const struct dg_strlist *allowed, const char *registry);

/* Whether the text of /proc/PID/status shows every uid (real, effective, saved, fs) equal to
 * `uid`, every gid to `gid`, and no supplementary group but `gid` (libuv's setgroups(0, NULL)
 * before a drop is not checked by libuv). */
bool wk_status_ids_are(const char *status, unsigned long uid, unsigned long gid);

#endif
