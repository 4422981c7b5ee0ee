/*
 * worker.h: the worker daemon's shared types. A worker creates and deletes
 * sandboxes through one runtime (DESIGN.md §6): `process` runs the function's
 * command as a child process on a free local port; `emulated` costs a
 * configured delay and points every sandbox at one shared dirigent-fn. The
 * container runtime (`oci`) comes with the container issue behind the same
 * interface.
 */
#ifndef DIRIGENT_WORKER_H
#define DIRIGENT_WORKER_H

#include <sys/types.h>
#include <uv.h>

#include "dirigent/batch.h"
#include "dirigent/strmap.h"
#include "dirigent/common.h"
#include "dirigent/http.h"
#include "dirigent/image.h"
#include "dirigent/metrics.h"
#include "dirigent/resources.h"

struct wk_worker;
struct wk_sandbox;
struct wk_instance;

/* What a sandbox runs. Strings owned by the spec. */
struct wk_spec {
    char *function;
    char *image; /* process runtime: the command (absolute path) */
    int64_t port;
    struct dg_strlist env, args;
    int64_t cpu_milli, memory_mib;
};
void wk_spec_free(struct wk_spec *s);

/* Time spent per step of a create, microseconds (the CP's cold-start trace). */
struct wk_latency {
    uint64_t image_us, rootfs_us, network_us, start_us, ready_us, total_us;
};

enum wk_sb_state { WK_SB_CREATING, WK_SB_READY, WK_SB_EXITED, WK_SB_DELETING };

typedef void (*wk_created_cb)(struct wk_sandbox *sb, const struct dg_err *err, void *ud);

struct wk_sandbox {
    struct wk_sandbox *prev, *next; /* the worker's list */
    struct wk_worker *w;
    char id[96]; /* <worker name>-<run>-<n>: unique across the worker's restarts */
    char *function;
    char host[48];
    int port;
    enum wk_sb_state state;
    int64_t exit_status;
    char exit_reason[128]; /* why it exited by itself ("" while it runs): wk_sandbox_exited */
    struct wk_latency lat;
    uint64_t t0_us;
    wk_created_cb created;
    void *created_ud;             /* the create request to answer (NULL: none) */
    struct dg_batch_reply *batch; /* or the batch it came in, and its item there */
    size_t batch_i;
    /* process runtime */
    uv_process_t proc;
    uv_timer_t timer; /* emulated delay; process kill grace */
    struct wk_probe *probe;
    unsigned handles; /* libuv handles of this sandbox not yet closed */
    bool proc_running, proc_open, timer_open;
    void *rt; /* the runtime's own state (oci) */
};

struct wk_runtime {
    const char *name;
    /* Start creating `sb` from `spec` (borrowed for the call); report through
     * wk_sandbox_created (later, or at once on failure). */
    void (*create)(struct wk_sandbox *sb, const struct wk_spec *spec);
    /* Stop `sb`; call wk_sandbox_gone when nothing of it is left. */
    void (*destroy)(struct wk_sandbox *sb);
    /* Prepare / release what the runtime shares between sandboxes. */
    int (*init)(struct wk_worker *w, struct dg_err *err);
    void (*deinit)(struct wk_worker *w);
    /* Optional: a second signal during shutdown: kill what still runs now (no grace). */
    void (*hurry)(struct wk_worker *w);
};

extern const struct wk_runtime wk_runtime_process;
extern const struct wk_runtime wk_runtime_emulated;
extern const struct wk_runtime wk_runtime_oci;
void wk_oci_free(struct wk_worker *w); /* after the loop has stopped */
void wk_process_free(void);            /* after the loop has stopped */

/* The oci runtime's settings (worker config). */
struct wk_oci_conf {
    const char *oci_runtime;      /* crun, runc or runsc (on PATH) */
    const char *data_dir;         /* image cache */
    const char *run_dir;          /* sandboxes, namespaces, the runtime's state */
    struct wk_instance *instance; /* the names on the host (instance.h), and the lock */
    const char *bridge, *subnet;  /* subnet "": the instance's default (instance.h) */
    int64_t netns_pool;
    int64_t pids_limit;
    int64_t min_cpu_milli, min_memory_mib; /* the accounting rule's floors (lib/resources.c) */
    struct dg_cpu_limit cpu_limit;         /* sandboxCpuLimit */
    int64_t kill_grace_ms;
    const struct dg_strlist *insecure_registries, *prefetch;
};

struct wk_worker {
    uv_loop_t *loop;
    const struct wk_runtime *rt;
    struct wk_sandbox *sandboxes;
    struct dg_strmap by_id; /* id -> sandbox (deletes look them up) */
    unsigned nsandboxes;
    uint64_t next_id;
    unsigned run; /* this run's mark in sandbox ids (from its start time) */
    char name[64];
    const char *host; /* workerNodeIp: the address endpoints are given with */
    uint64_t readiness_timeout_ms;
    int64_t emulated_delay_ms;
    char *fn_binary;
    /* emulated: the one shared dirigent-fn */
    uv_process_t shared_fn;
    bool shared_fn_running;
    int shared_fn_port;
    const struct wk_oci_conf *oci;
    void *oci_state;
    struct dg_metrics *metrics;
    struct dg_metric *creates, *create_failures, *unexpected_exits;
    struct dg_metric_family *create_seconds;
};

/* Runtime -> worker: the create finished (err NULL: ready), the sandbox went away. */
void wk_sandbox_created(struct wk_sandbox *sb, const struct dg_err *err);
void wk_sandbox_gone(struct wk_sandbox *sb);
/* An exit nobody asked for (reported to the CP once registration exists). `status` is the
 * exit status, or -signal; `reason` (borrowed; NULL: said from the status) is what the CP,
 * `dirigent function get` and the caller's 502 show after "sandbox ID ": e.g.
 * "OOM-killed: memory limit 64 MiB", "exited with status 1", "killed by signal 9 (Killed)". */
void wk_sandbox_exited(struct wk_sandbox *sb, int64_t status, const char *reason);
/* `status` (exit status or -signal) as such a reason, into buf. */
void wk_exit_reason(int64_t status, char *buf, size_t len);

/* A free TCP port on 127.0.0.1 (bound and released at once). */
int wk_free_port(struct dg_err *err);
/* Readiness: GET /health on host:port, retried with back-off (1 ms doubling to 50 ms) until
 * any HTTP answer (the server is up) or `timeout_ms`; then `cb` once, unless cancelled. */
struct wk_probe;
typedef void (*wk_probe_cb)(void *ud, const struct dg_err *err);
struct wk_probe *wk_probe_start(uv_loop_t *loop, const char *host, int port, uint64_t timeout_ms,
                                wk_probe_cb cb, void *ud);
void wk_probe_cancel(struct wk_probe *p);

/* ---- exec.c: helper commands off the loop ---------------------------------------------- */

enum wk_exec_capture { WK_EXEC_STDERR, WK_EXEC_STDOUT, WK_EXEC_NONE };
/* `output` is what the command printed on the captured stream (up to 4 KiB, trailing
 * newlines cut). The other streams go to the worker's stderr. */
typedef void (*wk_exec_cb)(void *ud, int64_t status, int term_signal, const char *output);
int wk_exec(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture, wk_exec_cb cb,
            void *ud, struct dg_err *err);
/* The reason in a Go tool's log line (msg="..."), or `out` itself. */
const char *wk_tool_message(const char *out);
/* Reap exited children nobody waits for (as a child subreaper the worker inherits crun's
 * middle processes); `keep(pid)` spares pids someone else reaps. Returns how many. */
unsigned wk_reap_orphans(bool (*keep)(pid_t pid, void *ud), void *ud);
/* Run argv to completion (blocking: start-up only); its stdout into out (NUL-terminated). */
int wk_run_sync(char *const argv[], char *out, size_t outlen);

/* ---- images.c: the image cache --------------------------------------------------------- */

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
};

typedef void (*wk_image_cb)(void *ud, struct wk_image *img, const struct dg_err *err);
struct wk_images *wk_images_new(uv_loop_t *loop, const char *dir, const struct dg_strlist *insecure,
                                struct dg_err *err);
/* The image `ref`, pulled and unpacked: `cb` at once if it is ready (or failed recently),
 * then NULL is returned; else when the pull ends, and the wait is returned (cancellable). */
struct wk_image_wait *wk_image_get(struct wk_images *s, const char *ref, wk_image_cb cb, void *ud);
void wk_image_wait_cancel(struct wk_image_wait *w);
void wk_images_close(struct wk_images *s); /* shutdown: pulls still running are ignored */
void wk_images_free(struct wk_images *s);  /* after the loop has stopped */

#endif
