/*
 * images.h: the oci runtime's image cache (images.c): one pull per reference, one unpacked
 * rootfs per digest, shared read-only by every sandbox of it.
 */
#ifndef DIRIGENT_WORKER_IMAGES_H
#define DIRIGENT_WORKER_IMAGES_H

#include <stdint.h>
#include <uv.h>

#include "dirigent/common.h"
#include "dirigent/image.h"

struct wk_exec;

enum wk_image_state { WK_IMG_NEW, WK_IMG_PULLING, WK_IMG_READY, WK_IMG_FAILED };
struct wk_images;
struct wk_image_wait;

struct wk_image {
    struct wk_images *store;
    char *ref; /* as registered */
    struct dg_image_ref parsed;
    enum wk_image_state state;
    char *layout;    /* the OCI layout it was pulled into */
    char digest[80]; /* its manifest's */
    char *bundle;    /* <cache>/rootfs/<digest hex> */
    char *rootfs;    /* <bundle>/rootfs: shared, read-only below each sandbox's overlay */
    struct dg_strlist entrypoint, cmd, env; /* the image config's */
    char *cwd;
    int port; /* the first exposed port, 0 if none */
    unsigned uid, gid;
    struct dg_err error; /* the last failure */
    uint64_t retry_at_ms, backoff_ms, t0_us, pull_us, ready_us;
    struct wk_image_wait *waiters;
    struct wk_image *next;
    struct wk_exec *pull;   /* the skopeo copy running (killed on timeout and shutdown) */
    uv_timer_t *pull_timer; /* imagePullTimeout's */
    bool timed_out;
};

typedef void (*wk_image_cb)(void *ud, struct wk_image *img, const struct dg_err *err);
/* What may be pulled from where (docs/security.md, "Images"); borrowed for the call. */
struct wk_images_opts {
    const struct dg_strlist *insecure;   /* registries reached without TLS (local ones always) */
    const struct dg_strlist *roots;      /* imageRoots: local images only below these */
    const struct dg_strlist *registries; /* imageRegistries (NULL: any) */
    uint64_t pull_timeout_ms;            /* imagePullTimeout (0: none) */
};
struct wk_images *wk_images_new(uv_loop_t *loop, const char *dir, const struct wk_images_opts *o,
                                struct dg_err *err);
/* Whether `ref` may be pulled here: 0, or -1 with the public reason in err (naming the field
 * 'image' and the key that allows it; never whether a host path exists). */
int wk_images_check(struct wk_images *s, const char *ref, struct dg_err *err);
/* The image `ref`, pulled and unpacked: `cb` at once if it is ready (or failed recently),
 * then NULL is returned; else when the pull ends, and the wait is returned (cancellable). */
struct wk_image_wait *wk_image_get(struct wk_images *s, const char *ref, wk_image_cb cb, void *ud);
void wk_image_wait_cancel(struct wk_image_wait *w);
void wk_images_close(struct wk_images *s); /* shutdown: pulls still running are killed */
void wk_images_free(struct wk_images *s);  /* after the loop has stopped */

#endif
