/*
 * runtime.h: the interface between the worker's sandbox registry (registry.c) and a sandbox
 * runtime (DESIGN.md §6). A runtime is an operation table: `process` (runtime_process.c) runs
 * the function's command as a child process on a free local port; `emulated`
 * (runtime_emulated.c) costs a configured delay and points every sandbox at one shared
 * dirigent-fn; `oci` (runtime_oci.c) runs an OCI container under crun.
 *
 * Ownership: the registry owns each `struct wk_sandbox` (one allocation of
 * sizeof(struct wk_sandbox) + the runtime's `sb_size`: the runtime's per-sandbox state lives
 * in `sb->ext`, so a create costs no second allocation). A runtime owns its shared state
 * (made by `init`, freed by `free`) and the contents of `sb->ext`; it reports back only
 * through wk_sandbox_created, wk_sandbox_exited and wk_sandbox_gone (registry.h).
 */
#ifndef DIRIGENT_WORKER_RUNTIME_H
#define DIRIGENT_WORKER_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dirigent/common.h"
#include "dirigent/resources.h"
#include "dirigent/wire.h" /* struct dg_wire_create: what a sandbox runs (its spec) */

struct wk_instance;
struct wk_prewarm;
struct dg_batch_reply;

/* Time spent per step of a create, microseconds (the CP's cold-start trace). */
struct wk_latency {
    uint64_t image_us, rootfs_us, network_us, start_us, ready_us, total_us;
};

enum wk_sb_state { WK_SB_CREATING, WK_SB_READY, WK_SB_EXITED, WK_SB_DELETING };

struct wk_registry;

/* Who waits for a create's answer: item i of a reply sink (lib/batch.c: a batch request's, or
 * a plain request's, a batch of one); batch NULL: nobody. */
struct wk_reply {
    struct dg_batch_reply *batch;
    size_t i;
};

struct wk_sandbox {
    struct wk_sandbox *prev, *next; /* the registry's list */
    struct wk_registry *reg;
    char id[96]; /* <worker name>-<run>-<n>: unique across the worker's restarts */
    char *function;
    char host[48]; /* the endpoint, set by the runtime */
    int port;
    enum wk_sb_state state;
    int64_t exit_status;
    char exit_reason[128]; /* why it exited by itself ("" while it runs): wk_sandbox_exited */
    struct wk_latency lat;
    uint64_t t0_us;
    struct wk_reply reply; /* who waits for the create's answer (the API's) */
    /* the create queue (registry.c, maxConcurrentCreates): a sandbox waits there, its spec
     * copied, until a create slot frees; the runtime never saw it */
    struct wk_sandbox *qprev, *qnext;
    struct dg_wire_create *queued; /* non-NULL while it waits */
    bool create_slot;              /* it holds one of the slots (until created or gone) */
    uint64_t t_delete_us;          /* when its delete began (0: none yet) */
    bool stopped;                  /* wk_sandbox_stopped was called */
    /* the runtime's per-sandbox state: wk_runtime.sb_size bytes */
    _Alignas(max_align_t) unsigned char ext[];
};

/* What every runtime is configured with (borrowed: outlives the runtime). */
struct wk_runtime_conf {
    uv_loop_t *loop;
    const char *host;              /* workerNodeIp: the address local endpoints are given with */
    uint64_t readiness_timeout_ms; /* a sandbox not answering by then fails its create */
    const char *data_dir;          /* the worker's dataDir (image cache) */
    const char *run_dir;           /* the instance's runDir */
    struct wk_instance *instance;  /* the names on the host (instance.h), and the lock */
    int64_t min_cpu_milli, min_memory_mib; /* the accounting rule's floors (lib/resources.c) */
    struct {
        int64_t delay_ms;      /* emulatedCreateDelayMs */
        const char *fn_binary; /* the dirigent-fn to share */
    } emulated;
    struct {
        const char *user; /* processUser ("": none; a root worker then refuses creates) */
        const struct dg_strlist *allowed_dirs; /* processAllowedDirs, never empty */
    } process;
    struct {
        const char *runtime;         /* crun, runc or runsc (on PATH) */
        const char *bridge, *subnet; /* subnet "": the instance's default (instance.h) */
        int64_t netns_pool;
        int64_t address_quarantine_ms; /* addressQuarantine, resolved (netpool.h) */
        int64_t pids_limit;
        struct dg_cpu_limit cpu_limit; /* sandboxCpuLimit */
        int64_t kill_grace_ms;
        const struct dg_strlist *insecure_registries, *prefetch;
        const char *egress;                        /* sandboxEgress: none, internet */
        const struct dg_strlist *egress_allow;     /* sandboxEgressAllow */
        const struct dg_strlist *caps;             /* sandboxCapabilities */
        const char *userns;                        /* sandboxUserNamespace: auto, on, off */
        const struct dg_strlist *image_roots;      /* imageRoots, never empty */
        const struct dg_strlist *image_registries; /* imageRegistries */
        uint64_t pull_timeout_ms;                  /* imagePullTimeout */
        unsigned max_deletes; /* maxConcurrentDeletes, resolved: clean-ups at once */
        const char *init;     /* sandboxInit: the init binary on the host ("": none) */
    } oci;
};

typedef void (*wk_runtime_ready_cb)(void *ud, const struct dg_err *err);

struct wk_runtime {
    const char *name;
    size_t sb_size; /* bytes of per-sandbox state at sb->ext */
    /* Its sandboxes cost the machine nothing (emulated): they are accounted by their request
     * alone, without the floors. */
    bool weightless;
    /* The runtime keeps files in dataDir: it is made before the instance is named from it. */
    bool uses_data_dir;
    /* Prepare what the runtime shares between sandboxes; *state is its own. */
    int (*init)(const struct wk_runtime_conf *conf, void **state, struct dg_err *err);
    /* Optional: `ready` once (later, or at once) when sandboxes can be served; an error then
     * means never. Without it, the runtime is ready after init. */
    void (*start)(void *state, wk_runtime_ready_cb ready, void *ud);
    /* Optional: check a spec before anything is made; 0, or -1 with the 400 text in err
     * ("field '...': ..."). */
    int (*validate)(void *state, const struct dg_wire_create *spec, struct dg_err *err);
    /* Start creating `sb` from `spec` (borrowed for the call); report through
     * wk_sandbox_created (later, or at once on failure). */
    void (*create)(void *state, struct wk_sandbox *sb, const struct dg_wire_create *spec);
    /* Stop `sb`; call wk_sandbox_gone when nothing of it is left. */
    void (*destroy)(void *state, struct wk_sandbox *sb);
    /* Optional: a second signal during shutdown: kill `sb`, being stopped, now (no grace). */
    void (*hurry)(void *state, struct wk_sandbox *sb);
    /* Optional: shutdown: every sandbox was asked to stop; release what is shared once the
     * last is gone (while the loop still runs). */
    void (*deinit)(void *state);
    /* After the loop has stopped: free the state (NULL: nothing made). */
    void (*free)(void *state);
    /* Optional: the IPv4 CIDR its sandboxes' endpoints lie in, told to the CP (which adopts no
     * endpoint outside it); NULL: on the worker's own host address. */
    const char *(*sandbox_subnet)(void *state);
    /* Optional: its pool of pre-created sandboxes (prewarm.h), made in init. */
    struct wk_prewarm *(*prewarm)(void *state);
};

extern const struct wk_runtime wk_runtime_process;
extern const struct wk_runtime wk_runtime_emulated;
extern const struct wk_runtime wk_runtime_oci;

/* A runtime's per-sandbox state, and the sandbox of one. */
#define WK_SB_EXT(sb)   ((void *)(sb)->ext)
#define WK_SB_OF(state) ((struct wk_sandbox *)((char *)(state)-offsetof(struct wk_sandbox, ext)))

#endif
