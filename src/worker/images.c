/*
 * images.c: the worker's image cache (DESIGN.md §6). An image is pulled once
 * (skopeo copy into an OCI layout under the cache, one per reference),
 * resolved to its manifest digest, and unpacked once per digest (umoci
 * unpack) into a rootfs that every sandbox of it shares read-only, below its
 * own overlay. Concurrent first cold starts wait for the one pull. A failed
 * pull is remembered with skopeo's reason; creates fail at once with it until
 * a back-off (5 s, doubling to 5 min) allows the next attempt.
 *
 * What may be pulled is confined (docs/security.md, "Images"): local references (oci:,
 * oci-archive:, docker-archive:) only below imageRoots (symlinks resolved; archives regular
 * files, layouts directories), registries only from imageRegistries; the public error of a
 * refused or failed local reference never says whether a host path exists (the worker's log
 * has the reason). A pull (skopeo, in its own process group) is killed after imagePullTimeout
 * and at shutdown.
 *
 * Commands run as children (exec.c) and file work on the thread pool: the
 * event loop never waits for either.
 *
 *   <cache>/layouts/<hash of the reference>   OCI layout, tag "img"
 *   <cache>/rootfs/<digest hex>/rootfs        the unpacked image, shared
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dirigent/json.h"
#include "dirigent/log.h"
#include "hostpaths.h"
#include "exec.h"
#include "images.h"

#define BACKOFF_MIN_MS 5000
#define BACKOFF_MAX_MS 300000

struct wk_image_wait {
    struct wk_image_wait *next;
    struct wk_image *img;
    wk_image_cb cb;
    void *ud;
};

struct wk_images {
    uv_loop_t *loop;
    char *dir;
    struct dg_strlist insecure; /* registries reached without TLS besides local ones */
    struct wk_dirs roots;       /* imageRoots */
    struct dg_strlist registries;
    char *registries_text; /* imageRegistries, comma-separated: for messages */
    bool any_registry;     /* no imageRegistries list was given: every registry */
    uint64_t pull_timeout_ms;
    struct wk_image *list;
    unsigned seq;
    bool closing; /* shutdown: callbacks of commands still running do nothing */
};

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static json_t *load_json(const char *path, struct dg_err *err)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        dg_err_set(err, DG_E_INVAL, "%s: %s", path, je.text);
    return j;
}

/* The blob a descriptor points at, in the layout. */
static json_t *load_blob(const char *layout, json_t *desc, struct dg_err *err)
{
    const char *digest = json_string_value(json_object_get(desc, "digest"));
    if (!digest || strncmp(digest, "sha256:", 7) != 0 || strchr(digest, '/')) {
        dg_err_set(err, DG_E_INVAL, "unsupported digest '%s'", digest ? digest : "");
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/blobs/sha256/%s", layout, digest + 7);
    return load_json(path, err);
}

static void strlist_from_json(struct dg_strlist *l, json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v))
        dg_strlist_push(l, dg_xstrdup(json_string_value(v)));
}

/* ---- resolving (thread pool): layout -> digest -> image config -------------------------- */

struct resolve_job {
    uv_work_t work;
    struct wk_image *img;
    struct dg_err err;
    bool unpacked;
};

static void resolve_work(uv_work_t *w)
{
    struct resolve_job *j = w->data;
    struct wk_image *img = j->img;
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", img->layout);
    json_t *index = load_json(path, &j->err), *manifest = NULL, *config = NULL;
    if (!index)
        return;
    size_t i;
    json_t *m, *desc = NULL;
    json_array_foreach(json_object_get(index, "manifests"), i, m)
    {
        const char *tag = json_string_value(json_object_get(json_object_get(m, "annotations"),
                                                            "org.opencontainers.image.ref.name"));
        if (tag && strcmp(tag, "img") == 0)
            desc = m;
    }
    if (!desc) {
        dg_err_set(&j->err, DG_E_INVAL, "%s: no image tagged 'img'", path);
        goto out;
    }
    snprintf(img->digest, sizeof(img->digest), "%s",
             json_string_value(json_object_get(desc, "digest")));
    if (!(manifest = load_blob(img->layout, desc, &j->err)) ||
        !(config = load_blob(img->layout, json_object_get(manifest, "config"), &j->err)))
        goto out;
    json_t *c = json_object_get(config, "config");
    strlist_from_json(&img->entrypoint, json_object_get(c, "Entrypoint"));
    strlist_from_json(&img->cmd, json_object_get(c, "Cmd"));
    strlist_from_json(&img->env, json_object_get(c, "Env"));
    const char *wd = json_string_value(json_object_get(c, "WorkingDir"));
    img->cwd = dg_xstrdup(wd && wd[0] == '/' ? wd : "/");
    const char *user = json_string_value(json_object_get(c, "User"));
    unsigned uid = 0, gid = 0;
    if (user && *user && sscanf(user, "%u:%u", &uid, &gid) < 1) {
        dg_err_set(&j->err, DG_E_INVAL,
                   "image user '%s': only numeric UID[:GID] is supported (no /etc/passwd lookup)",
                   user);
        goto out;
    }
    img->uid = uid;
    img->gid = gid;
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(c, "ExposedPorts"), key, v)
    {
        int port = atoi(key);
        if (port > 0 && img->port == 0)
            img->port = port;
    }
    const char *hex = img->digest + 7;
    free(img->bundle);
    img->bundle = dg_xasprintf("%s/rootfs/%s", img->store->dir, hex);
    free(img->rootfs);
    img->rootfs = dg_xasprintf("%s/rootfs", img->bundle);
    struct stat st;
    j->unpacked = stat(img->rootfs, &st) == 0 && S_ISDIR(st.st_mode);
out:
    json_decref(config);
    json_decref(manifest);
    json_decref(index);
}

/* ---- what may be pulled ----------------------------------------------------------------- */

static bool is_local_kind(enum dg_image_kind k)
{
    return k == DG_IMAGE_OCI_LAYOUT || k == DG_IMAGE_OCI_ARCHIVE || k == DG_IMAGE_DOCKER_ARCHIVE;
}

/* Check a parsed reference against the allowlists; a local one's source is rewritten with the
 * resolved path (what skopeo then opens is what was checked). The public error says only
 * what the operator configured; the reason goes to the log. */
static int confine_ref(struct wk_images *s, const char *ref, struct dg_image_ref *r,
                       struct dg_err *err)
{
    if (r->kind == DG_IMAGE_REGISTRY) {
        const char *registry = r->registry[0] ? r->registry : "docker.io";
        if (s->any_registry || wk_registry_allowed(&s->registries, registry))
            return 0;
        return dg_err_set(err, DG_E_INVAL,
                          "field 'image': registry '%s' is not one this worker pulls from "
                          "(imageRegistries: %s)",
                          registry, s->registries_text[0] ? s->registries_text : "none");
    }
    if (!is_local_kind(r->kind))
        return 0;
    /* TRANSPORT:PATH[:REST]: skopeo splits at the first ':' after the transport */
    const char *colon = strchr(r->source, ':');
    const char *path = colon + 1;
    const char *rest = strchr(path, ':');
    char want[PATH_MAX], resolved[PATH_MAX];
    size_t plen = rest ? (size_t)(rest - path) : strlen(path);
    snprintf(want, sizeof(want), "%.*s", (int)DG_MIN(plen, sizeof(want) - 1), path);
    const char *why = NULL;
    struct stat st;
    switch (wk_dirs_check(&s->roots, want, resolved, sizeof(resolved))) {
    case WK_PATH_REFUSED:
        why = "outside imageRoots (or a '.', '..' or symlink out)";
        break;
    case WK_PATH_MISSING:
        why = "no such file";
        break;
    case WK_PATH_OK:
        if (stat(resolved, &st) < 0)
            why = strerror(errno);
        else if (r->kind == DG_IMAGE_OCI_LAYOUT && !S_ISDIR(st.st_mode))
            why = "an oci: layout must be a directory";
        else if (r->kind != DG_IMAGE_OCI_LAYOUT && !S_ISREG(st.st_mode))
            why = "an archive must be a regular file (not a FIFO, device or directory)";
        break;
    }
    if (why) {
        dg_log(DG_LOG_WARN, "image", "%s refused: %s: %s", ref, want, why);
        return dg_err_set(err, DG_E_INVAL,
                          "field 'image': '%.200s' is not an image below this worker's image "
                          "roots (imageRoots: %s; its log has the reason)",
                          ref, s->roots.text);
    }
    char source[sizeof(r->source)];
    int n = snprintf(source, sizeof(source), "%.*s:%s%s", (int)(colon - r->source), r->source,
                     resolved, rest ? rest : "");
    if (n < 0 || (size_t)n >= sizeof(source))
        return dg_err_set(err, DG_E_INVAL, "field 'image': '%.200s': the path is too long", ref);
    memcpy(r->source, source, (size_t)n + 1);
    return 0;
}

int wk_images_check(struct wk_images *s, const char *ref, struct dg_err *err)
{
    struct dg_image_ref r;
    if (dg_image_ref_parse(ref, &r, err) < 0) {
        dg_err_wrap(err, "field 'image'");
        return -1;
    }
    if (r.kind == DG_IMAGE_PATH)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'image': '%.200s' is a path: the oci runtime runs images "
                          "(host/name:tag, oci:PATH:TAG, ...)",
                          ref);
    return confine_ref(s, ref, &r, err);
}

/* ---- the pull state machine ------------------------------------------------------------- */

static void image_done(struct wk_image *img, const struct dg_err *err)
{
    uint64_t now = uv_now(img->store->loop);
    if (err) {
        img->state = WK_IMG_FAILED;
        img->error = *err;
        img->backoff_ms =
            img->backoff_ms ? DG_MIN(img->backoff_ms * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
        img->retry_at_ms = now + img->backoff_ms;
        dg_log(DG_LOG_WARN, "image", "%s: %s (next attempt in %llu s)", img->ref, err->msg,
               (unsigned long long)img->backoff_ms / 1000);
    } else {
        img->state = WK_IMG_READY;
        img->backoff_ms = 0;
        img->ready_us = dg_now_us() - img->t0_us;
        dg_log(DG_LOG_INFO, "image", "%s: ready (%s) in %llu ms", img->ref, img->digest,
               (unsigned long long)img->ready_us / 1000);
    }
    struct wk_image_wait *w = img->waiters;
    img->waiters = NULL;
    while (w) {
        struct wk_image_wait *next = w->next;
        if (w->cb)
            w->cb(w->ud, err ? NULL : img, err);
        free(w);
        w = next;
    }
}

struct unpack_job {
    uv_work_t work;
    struct wk_image *img;
    char *tmp;
    struct dg_err err;
};

static void rm_rf(const char *path)
{
    /* only ever below the cache directory, built from names this file made */
    char *argv[] = {"rm", "-rf", "--one-file-system", (char *)path, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
            ;
}

static void rename_work(uv_work_t *w)
{
    struct unpack_job *j = w->data;
    if (j->err.msg[0]) { /* umoci failed: remove what it left */
        rm_rf(j->tmp);
        return;
    }
    if (rename(j->tmp, j->img->bundle) == 0)
        return;
    if (errno == EEXIST || errno == ENOTEMPTY) { /* another reference of the same digest won */
        rm_rf(j->tmp);
        return;
    }
    dg_err_set(&j->err, DG_E_INVAL, "rename %s: %m", j->tmp);
    rm_rf(j->tmp);
}

static void rename_done(uv_work_t *w, int status)
{
    struct unpack_job *j = w->data;
    if (!j->img->store->closing)
        image_done(j->img, j->err.msg[0] ? &j->err : NULL);
    free(j->tmp);
    free(j);
}

static void unpacked(void *ud, int64_t status, int sig, const char *out)
{
    struct unpack_job *j = ud;
    if (j->img->store->closing) {
        free(j->tmp);
        free(j);
        return;
    }
    if (status != 0 || sig) {
        dg_err_set(&j->err, DG_E_INVAL, "umoci unpack of %s failed: %s", j->img->ref,
                   wk_tool_message(out));
    }
    j->work.data = j;
    uv_queue_work(j->img->store->loop, &j->work, rename_work, rename_done);
}

static void resolved(uv_work_t *w, int status)
{
    struct resolve_job *j = w->data;
    struct wk_image *img = j->img;
    if (img->store->closing) {
        free(j);
        return;
    }
    img->pull_us = dg_now_us() - img->t0_us;
    if (j->err.msg[0]) {
        dg_err_wrap(&j->err, "image %s", img->ref);
        image_done(img, &j->err);
    } else if (j->unpacked) {
        image_done(img, NULL);
    } else {
        struct unpack_job *u = dg_xcalloc(1, sizeof(*u));
        u->img = img;
        u->tmp = dg_xasprintf("%s.tmp-%d-%u", img->bundle, (int)getpid(), ++img->store->seq);
        char *image = dg_xasprintf("%s:img", img->layout);
        char *argv[] = {"umoci", "unpack", "--image", image, u->tmp, NULL};
        struct dg_err err;
        if (wk_exec(img->store->loop, argv, WK_EXEC_STDERR, unpacked, u, &err) < 0) {
            image_done(img, &err);
            free(u->tmp);
            free(u);
        }
        free(image);
    }
    free(j);
}

static void timer_freed(uv_handle_t *h)
{
    free(h);
}

static void stop_pull_timer(struct wk_image *img)
{
    if (img->pull_timer) {
        uv_close((uv_handle_t *)img->pull_timer, timer_freed);
        img->pull_timer = NULL;
    }
}

static void pull_timed_out(uv_timer_t *t)
{
    struct wk_image *img = t->data;
    img->timed_out = true;
    dg_log(DG_LOG_WARN, "image", "%s: the pull ran for imagePullTimeout (%llu s): killed", img->ref,
           (unsigned long long)img->store->pull_timeout_ms / 1000);
    wk_exec_kill(img->pull);
}

static void pulled(void *ud, int64_t status, int sig, const char *out)
{
    struct wk_image *img = ud;
    img->pull = NULL;
    if (img->store->closing)
        return;
    stop_pull_timer(img);
    if (img->timed_out) {
        struct dg_err err;
        dg_err_set(&err, DG_E_INVAL, "pull of %s failed: timed out after %llu s (imagePullTimeout)",
                   img->ref, (unsigned long long)img->store->pull_timeout_ms / 1000);
        image_done(img, &err);
        return;
    }
    if (status != 0 || sig) {
        struct dg_err err;
        const char *reason = out[0] ? wk_tool_message(out) : "skopeo failed without a message";
        if (is_local_kind(img->parsed.kind)) {
            /* skopeo's words may quote the host's files: the log only */
            dg_log(DG_LOG_WARN, "image", "pull of %s failed: %s", img->ref, reason);
            dg_err_set(&err, DG_E_INVAL,
                       "pull of %s failed: not a readable image (the worker's log has the reason)",
                       img->ref);
        } else {
            dg_err_set(&err, DG_E_INVAL, "pull of %s failed: %s", img->ref, reason);
        }
        image_done(img, &err);
        return;
    }
    struct resolve_job *j = dg_xcalloc(1, sizeof(*j));
    j->img = img;
    j->work.data = j;
    dg_strlist_free(&img->entrypoint);
    dg_strlist_free(&img->cmd);
    dg_strlist_free(&img->env);
    free(img->cwd);
    img->cwd = NULL;
    img->port = 0;
    uv_queue_work(img->store->loop, &j->work, resolve_work, resolved);
}

static bool registry_insecure(struct wk_images *s, const char *registry)
{
    if (dg_image_registry_is_local(registry))
        return true;
    for (size_t i = 0; i < s->insecure.n; i++)
        if (strcmp(s->insecure.v[i], registry) == 0)
            return true;
    return false;
}

static void pull(struct wk_image *img)
{
    struct wk_images *s = img->store;
    img->state = WK_IMG_PULLING;
    img->t0_us = dg_now_us();
    img->timed_out = false;
    struct dg_err cerr;
    /* again at each attempt: the file may have changed since (its resolved path is used) */
    if (dg_image_ref_parse(img->ref, &img->parsed, &cerr) < 0 ||
        confine_ref(s, img->ref, &img->parsed, &cerr) < 0) {
        image_done(img, &cerr);
        return;
    }
    char *dest = dg_xasprintf("oci:%s:img", img->layout);
    char *argv[8];
    int n = 0;
    argv[n++] = "skopeo";
    argv[n++] = "copy";
    argv[n++] = "--quiet";
    if (img->parsed.kind == DG_IMAGE_REGISTRY && registry_insecure(s, img->parsed.registry))
        argv[n++] = "--src-tls-verify=false";
    argv[n++] = img->parsed.source;
    argv[n++] = dest;
    argv[n] = NULL;
    struct dg_err err;
    /* skopeo wants the layout's parent directory to exist */
    char *parent = dg_xasprintf("%s/layouts", s->dir);
    mkdir(parent, 0700);
    free(parent);
    dg_log(DG_LOG_INFO, "image", "pulling %s", img->ref);
    img->pull = wk_exec_group(s->loop, argv, WK_EXEC_STDERR, pulled, img, &err);
    if (!img->pull) {
        image_done(img, &err);
    } else if (s->pull_timeout_ms) {
        img->pull_timer = dg_xcalloc(1, sizeof(*img->pull_timer));
        uv_timer_init(s->loop, img->pull_timer);
        img->pull_timer->data = img;
        uv_timer_start(img->pull_timer, pull_timed_out, s->pull_timeout_ms, 0);
    }
    free(dest);
}

/* ---- API -------------------------------------------------------------------------------- */

struct wk_images *wk_images_new(uv_loop_t *loop, const char *dir, const struct wk_images_opts *o,
                                struct dg_err *err)
{
    const struct dg_strlist *insecure = o->insecure;
    struct wk_dirs roots;
    struct dg_strlist none = {0};
    if (wk_dirs_init(&roots, o->roots ? o->roots : &none, "imageRoots", err) < 0)
        return NULL;
    char *rootfs = dg_xasprintf("%s/rootfs", dir);
    char *layouts = dg_xasprintf("%s/layouts", dir);
    int rc = dg_mkdir_p(rootfs, 0700, err);
    if (rc == 0)
        rc = dg_mkdir_p(layouts, 0700, err);
    free(rootfs);
    free(layouts);
    if (rc < 0) {
        wk_dirs_free(&roots);
        return NULL;
    }
    struct wk_images *s = dg_xcalloc(1, sizeof(*s));
    s->roots = roots;
    s->pull_timeout_ms = o->pull_timeout_ms;
    s->any_registry = !o->registries;
    for (size_t i = 0; o->registries && i < o->registries->n; i++)
        dg_strlist_push(&s->registries, dg_xstrdup(o->registries->v[i]));
    s->registries_text = wk_strlist_join(&s->registries);
    s->loop = loop;
    s->dir = dg_xstrdup(dir);
    for (size_t i = 0; insecure && i < insecure->n; i++)
        dg_strlist_push(&s->insecure, dg_xstrdup(insecure->v[i]));
    return s;
}

struct wk_image_wait *wk_image_get(struct wk_images *s, const char *ref, wk_image_cb cb, void *ud)
{
    struct wk_image *img = s->list;
    while (img && strcmp(img->ref, ref) != 0)
        img = img->next;
    if (!img) {
        struct dg_err err;
        img = dg_xcalloc(1, sizeof(*img));
        if (dg_image_ref_parse(ref, &img->parsed, &err) < 0 || img->parsed.kind == DG_IMAGE_PATH) {
            if (err.msg[0] == '\0' || img->parsed.kind == DG_IMAGE_PATH)
                dg_err_set(&err, DG_E_INVAL,
                           "'%s' is a path: the oci runtime runs images (host/name:tag, "
                           "oci:PATH:TAG, ...)",
                           ref);
            free(img);
            cb(ud, NULL, &err);
            return NULL;
        }
        if (confine_ref(s, ref, &img->parsed, &err) < 0) { /* nothing remembered of it */
            free(img);
            cb(ud, NULL, &err);
            return NULL;
        }
        img->store = s;
        img->ref = dg_xstrdup(ref);
        img->layout = dg_xasprintf("%s/layouts/%016llx", s->dir, (unsigned long long)fnv1a(ref));
        img->state = WK_IMG_NEW;
        img->next = s->list;
        s->list = img;
    }
    switch (img->state) {
    case WK_IMG_READY:
        cb(ud, img, NULL);
        return NULL;
    case WK_IMG_FAILED:
        if (uv_now(s->loop) < img->retry_at_ms) {
            struct dg_err err = img->error;
            dg_err_wrap(&err, "not retried for %llu s more",
                        (unsigned long long)(img->retry_at_ms - uv_now(s->loop) + 999) / 1000);
            cb(ud, NULL, &err);
            return NULL;
        }
        pull(img);
        break;
    case WK_IMG_NEW:
        pull(img);
        break;
    case WK_IMG_PULLING:
        break;
    }
    if (img->state != WK_IMG_PULLING) { /* pull() failed at once and answered the waiters */
        return wk_image_get(s, ref, cb, ud);
    }
    struct wk_image_wait *w = dg_xcalloc(1, sizeof(*w));
    w->img = img;
    w->cb = cb;
    w->ud = ud;
    w->next = img->waiters;
    img->waiters = w;
    return w;
}

void wk_image_wait_cancel(struct wk_image_wait *w)
{
    if (w)
        w->cb = NULL; /* freed when the pull ends */
}

static void image_free(struct wk_image *img)
{
    free(img->ref);
    free(img->layout);
    free(img->bundle);
    free(img->rootfs);
    free(img->cwd);
    dg_strlist_free(&img->entrypoint);
    dg_strlist_free(&img->cmd);
    dg_strlist_free(&img->env);
    free(img);
}

void wk_images_close(struct wk_images *s)
{
    if (!s)
        return;
    s->closing = true;
    /* a pull may hang for ever (a registry that never answers): it must not hold the
     * shutdown */
    for (struct wk_image *img = s->list; img; img = img->next) {
        stop_pull_timer(img);
        if (img->pull) {
            dg_log(DG_LOG_INFO, "image", "%s: shutdown: the pull is killed", img->ref);
            wk_exec_kill(img->pull);
        }
    }
}

void wk_images_free(struct wk_images *s)
{
    if (!s)
        return;
    /* pulls in flight hold their image: the loop has stopped by now (shutdown) */
    while (s->list) {
        struct wk_image *img = s->list;
        s->list = img->next;
        struct wk_image_wait *w = img->waiters;
        while (w) {
            struct wk_image_wait *next = w->next;
            free(w);
            w = next;
        }
        image_free(img);
    }
    dg_strlist_free(&s->insecure);
    dg_strlist_free(&s->registries);
    free(s->registries_text);
    wk_dirs_free(&s->roots);
    free(s->dir);
    free(s);
}
