/*
 * hostpaths.c: allowed directories and registries (hostpaths.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/image.h"
#include "dirigent/log.h"
#include "hostpaths.h"

int wk_dirs_init(struct wk_dirs *d, const struct dg_strlist *dirs, const char *key,
                 struct dg_err *err)
{
    memset(d, 0, sizeof(*d));
    d->text = wk_strlist_join(dirs);
    for (size_t i = 0; i < dirs->n; i++) {
        const char *dir = dirs->v[i];
        if (dir[0] != '/') {
            wk_dirs_free(d);
            return dg_err_set(err, DG_E_INVAL, "%s: expected absolute directories, got '%s'", key,
                              dir);
        }
        char real[PATH_MAX];
        if (!realpath(dir, real)) {
            dg_log(DG_LOG_INFO, "worker", "%s: %s: %s (left out)", key, dir, strerror(errno));
            continue;
        }
        dg_strlist_push(&d->dirs, dg_xstrdup(real));
    }
    return 0;
}

char *wk_strlist_join(const struct dg_strlist *l)
{
    size_t cap = 1;
    for (size_t i = 0; i < l->n; i++)
        cap += strlen(l->v[i]) + 1;
    char *s = dg_xcalloc(1, cap), *p = s;
    for (size_t i = 0; i < l->n; i++) {
        size_t n = strlen(l->v[i]);
        if (i)
            *p++ = ',';
        memcpy(p, l->v[i], n);
        p += n;
    }
    *p = '\0';
    return s;
}

void wk_dirs_free(struct wk_dirs *d)
{
    dg_strlist_free(&d->dirs);
    free(d->text);
    d->text = NULL;
}

/* `path` is `dir` or below it. */
static bool below(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static bool lexically_clean(const char *path)
{
    if (path[0] != '/')
        return false;
    for (const char *p = path; *p;) {
        const char *s = strchr(p + 1, '/');
        size_t n = s ? (size_t)(s - p - 1) : strlen(p + 1);
        const char *c = p + 1;
        if ((n == 0 && s) || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        if (!s)
            break;
        p = s;
    }
    return true;
}

enum wk_path_verdict wk_dirs_check(const struct wk_dirs *d, const char *path, char *resolved,
                                   size_t len)
{
    if (!lexically_clean(path))
        return WK_PATH_REFUSED;
    bool inside = false;
    for (size_t i = 0; i < d->dirs.n && !inside; i++)
        inside = below(d->dirs.v[i], path);
    /* a configured directory may itself be reached through a symlink (/bin -> usr/bin):
     * its written form counts too */
    for (const char *t = d->text; t && *t && !inside;) {
        const char *comma = strchr(t, ',');
        size_t n = comma ? (size_t)(comma - t) : strlen(t);
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%.*s", (int)DG_MIN(n, sizeof(dir) - 1), t);
        while (strlen(dir) > 1 && dir[strlen(dir) - 1] == '/')
            dir[strlen(dir) - 1] = '\0';
        inside = below(dir, path);
        t = comma ? comma + 1 : NULL;
    }
    if (!inside)
        return WK_PATH_REFUSED;
    char real[PATH_MAX];
    if (!realpath(path, real))
        return errno == ENOENT || errno == ENOTDIR ? WK_PATH_MISSING : WK_PATH_REFUSED;
    for (size_t i = 0; i < d->dirs.n; i++)
        if (below(d->dirs.v[i], real)) {
            snprintf(resolved, len, "%s", real);
            return WK_PATH_OK;
        }
    return WK_PATH_REFUSED; /* a symlink out */
}

bool wk_registry_allowed(const struct dg_strlist *allowed, const char *registry)
{
    char host[256];
    const char *colon = registry[0] == '[' ? strstr(registry, "]:") : strrchr(registry, ':');
    if (colon && registry[0] == '[')
        colon++;
    size_t hn = colon ? (size_t)(colon - registry) : strlen(registry);
    snprintf(host, sizeof(host), "%.*s", (int)DG_MIN(hn, sizeof(host) - 1), registry);
    for (size_t i = 0; i < allowed->n; i++) {
        const char *a = allowed->v[i];
        if (strcmp(a, "loopback") == 0 ? dg_image_registry_is_local(registry)
                                       : strcmp(a, registry) == 0 || strcmp(a, host) == 0)
            return true;
    }
    return false;
}

bool wk_status_ids_are(const char *status, unsigned long uid, unsigned long gid)
{
    int ok = 0;
    bool groups = false;
    for (const char *line = status; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        bool is_uid = strncmp(line, "Uid:", 4) == 0, is_gid = strncmp(line, "Gid:", 4) == 0;
        if (strncmp(line, "Groups:", 7) == 0) {
            groups = true;
            const char *p = line + 7;
            for (;;) {
                while (*p == ' ' || *p == '\t')
                    p++;
                if (*p == '\n' || *p == '\0')
                    break;
                char *end;
                unsigned long g = strtoul(p, &end, 10);
                if (end == p || g != gid)
                    return false;
                p = end;
            }
            continue;
        }
        if (!is_uid && !is_gid)
            continue;
        unsigned long v[4];
        if (sscanf(line + 4, "%lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3]) != 4)
            return false;
        unsigned long want = is_uid ? uid : gid;
        if (v[0] == want && v[1] == want && v[2] == want && v[3] == want)
            ok++;
    }
    return ok == 2 && groups;
}
