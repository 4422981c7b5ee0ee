/*
 * cp_core.h: the control plane's I/O-free core (DESIGN.md §1-§5). `struct cp_core` is the
 * registry (functions with their autoscaler state and sandboxes, workers, data planes, the
 * tick slots, the functions whose endpoint lists changed, those waiting for capacity) and
 * everything that decides on it: the autoscaling tick, reconcile (placement, scale up and
 * down), the sandbox lifecycle (creating, ready, draining, deleted; adopted after a restart;
 * exited by itself), endpoint bookkeeping, and lost workers and data planes.
 *
 * Plain C: no loop, no sockets, no JSON, no file-scope state. The core acts on the world only
 * through its effects table (struct cp_effects: create, delete, drain, push, persist, the
 * clock, "soon") and learns about it only through the cp_core_on_* events. The daemon's
 * adapters (scaling.c: effects over HTTP and libuv; api.c: HTTP handlers into events), the
 * simulator (src/sim) and the unit tests (tests/unit/test_cp_core.c) drive the same code.
 *
 * Every object has one create, one lost and one free here: a function is made by
 * cp_core_fn_register and freed once deleted, drained and pushed; a worker or a data plane is
 * made by its first heartbeat (or restored from the store), lost when silent (a data plane is
 * then freed; a worker stays, unschedulable, and may come back); a sandbox is made by a
 * placement or an adoption and freed when its delete is answered, its create failed, or it
 * exited.
 */
#ifndef DIRIGENT_CP_CP_CORE_H
#define DIRIGENT_CP_CP_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autoscaler.h"
#include "dirigent/resources.h"
#include "dirigent/strmap.h"
#include "fn_error.h"
#include "function.h"
#include "placement.h"

struct dg_metric;

#define CP_TICK_SLOTS      40  /* the daemon's 2 s tick in 50 ms slots (cp_core_tick) */
#define CP_EXIT_REASON_MAX 256 /* a worker's reason a sandbox exited */
#define CP_EXITED_MAX      64  /* exits reported per function per push (the first say enough) */

struct cp_worker {
    struct cp_node node; /* what placement sees, reserved on in place: name, schedulable
                            capacity, reservations (max(request, floor) per sandbox), floors,
                            sandbox count, schedulable */
    char *name;
    char *address;          /* host:port of its API */
    void *io;               /* the adapter's (connections, batches); NULL in the simulator */
    struct dg_res_node res; /* as advertised: capacity, CPU overcommit, per-sandbox floors */
    uint64_t last_seen_ms;
    char *boot;      /* the daemon's start id: a new one means it restarted */
    bool need_list;  /* its next heartbeat must list its sandboxes (answered "resync"):
                        restored from the store, given up, a create's answer lost, or its
                        count of sandboxes differs from the registry's */
    bool list_asked; /* need_list was answered: list_asked_seq is when (c->seq) */
    uint64_t list_asked_seq;
    char **deleting; /* ids it was asked to delete: a listing taken before the delete arrived
                        does not bring them back (until a listing lacks them or the delete
                        is answered) */
    size_t ndeleting;
    struct dg_strmap deleting_ix; /* id -> its index in deleting + 1 (a big scale-down's
                                     deletes are looked up without a walk) */
    bool reconstructing;      /* restored from the store (this CP restarted or took over): its first
                            listing may adopt sandboxes this CP did not ask for; no other
                            listing does (docs/security.md) */
    uint32_t sb_net, sb_mask; /* its sandbox subnet (IPv4, host order): adopted endpoints lie
                                 in it; sb_mask 0: none known (sb_host below) */
    char *sb_host;            /* no subnet said and its address no IPv4: endpoints on this host */
    char *subnet;             /* the subnet as it said it (persisted), NULL: none said */
    bool subnet_known;        /* it said (a beat), or the store had it: listings can be judged */
    double create_tokens;     /* rate limit (maxCreatesPerWorkerPerSecond): a token bucket */
    uint64_t tokens_ms;       /* when create_tokens was last refilled */
    struct cp_worker *next;
    /* the schedulable workers, least recently heard first (a heartbeat moves its worker to
     * the end): the silent ones are found from the front without a walk of all */
    struct cp_worker *seen_prev, *seen_next;
    bool in_seen;
    /* the create rate limit's workers whose bucket is not full (tokens_refill looks at these
     * only) */
    struct cp_worker *refill_next;
    bool in_refill;
};

struct cp_dp {
    char *name;
    char *api;   /* host:port of its API */
    char *proxy; /* host:port invocations go to */
    void *io;    /* the adapter's */
    uint64_t last_seen_ms;
    bool need_sync; /* a push or a forget to it failed: its next heartbeat gets every list
                       (cp_core_dp_resync) */
    struct cp_dp *next;
};

enum cp_sb_state { CP_SB_CREATING, CP_SB_READY, CP_SB_DRAINING };

struct cp_sandbox {
    char *id; /* the worker's id; NULL while creating */
    char *endpoint;
    struct cp_worker *worker; /* NULL once its worker is gone */
    enum cp_sb_state state;
    struct cp_fn *fn;
    struct cp_worker *abandoned_on; /* its worker went silent while creating it (replaced)
                                       or draining it (its delete still goes there) */
    uint64_t known_seq; /* when its id became known (c->seq): a listing asked for later that
                           lacks a ready one means it is gone */
    struct cp_sandbox *next;
};

struct cp_metric {
    struct cp_dp *dp; /* NULL once that data plane is gone */
    double inflight;
};

struct cp_exit {
    char *id, *reason;
};

struct cp_fn {
    struct cp_fn_spec spec;
    struct cp_as_config as;
    struct cp_as_state ast;
    struct cp_sandbox *sbs; /* newest first */
    unsigned ready, creating, draining;
    int desired;
    struct cp_metric *metrics;
    size_t nmetrics;
    bool deleted;
    bool unschedulable;        /* sandboxes wanted that no worker has room for */
    bool dirty;                /* its endpoint list changed since the last push */
    bool push_error;           /* the next push carries error.reason (a create just failed) */
    struct cp_fn_error *error; /* the last failure (allocated at the first; most functions
                                  never fail: 350 bytes each saved) */
    struct cp_exit *exited;    /* sandboxes that exited by themselves since the last push */
    unsigned nexited;
    uint64_t hold_down_until_ms; /* no scale-down before (sandboxes adopted after a restart) */
    uint64_t retry_after_ms;     /* a create of it just failed: freed capacity does not retry it
                                    before (its tick does) */
    unsigned tick_slot;          /* which tick slot decides it */
    size_t slot_pos;             /* its index in that slot */
    struct cp_fn *next_dirty;
    struct cp_fn *sd_prev, *sd_next; /* in the core's scale-down queue (sd_queued) */
    bool sd_queued;
    struct cp_worker *pool_hint; /* a worker that holds pre-created sandboxes of it (the pool
                                    table's first for it, src/cp/pool.c): its next cold start
                                    goes there if it fits; NULL: none (workers never leave) */
    struct cp_fn *next;
    struct cp_fn **pprev; /* what points at it in the core's list: O(1) removal (150,000
                             functions, 90,000 of them deleted at once) */
    void *ctx; /* whoever drives the core (the simulator: its per-function state); unused by
                  the core */
};

/* A drain round: the victims are out of every DP's list; each DP answers once their requests
 * finished; then cp_core_on_drained deletes them. */
struct cp_drain {
    struct cp_fn *f;
    struct cp_sandbox **victims;
    size_t n;
    unsigned pending; /* the adapter's count of DPs yet to answer */
};

/* One function in a push: its whole list (the READY sandboxes of f->sbs), and why requests
 * waiting for it must fail now (`error`, or NULL), and which sandboxes exited and why. */
struct cp_push_item {
    const struct cp_fn *f;
    const char *error;
    const struct cp_exit *exited;
    unsigned nexited;
};

enum cp_soon {
    CP_SOON_PUSH,     /* call cp_core_flush_pushes once the current event is handled */
    CP_SOON_CAPACITY, /* call cp_core_capacity_freed once the current event is handled */
    /* call cp_core_scale_downs once the current event is handled and, when it calls for more
     * itself, after the I/O that waits (its budget is spent: other work goes first) */
    CP_SOON_SCALE_DOWN,
};

enum cp_peer { CP_PEER_WORKER, CP_PEER_DP };

/* What the core does to the world. Every function gets `ud`. */
struct cp_effects {
    void *ud;
    uint64_t (*now_ms)(void *ud);  /* monotonic clock */
    uint64_t (*wall_ms)(void *ud); /* wall clock, Unix ms (shown with errors) */
    void (*soon)(void *ud, enum cp_soon what);
    /* create s (s->fn's spec) on s->worker; answer with cp_core_on_created(s) */
    void (*create)(void *ud, struct cp_sandbox *s);
    /* delete sandbox `id` on `w`; answer with cp_core_on_deleted(s); s NULL: no answer wanted
     * (a create that came back after its worker was given up) */
    void (*destroy)(void *ud, struct cp_worker *w, const char *id, struct cp_sandbox *s);
    /* take d->victims out of every DP once their requests finished; cp_core_on_drained(d)
     * once all answered (d is the core's until then) */
    void (*drain)(void *ud, struct cp_drain *d);
    /* these functions' whole endpoint lists to every DP (items borrowed for the call; it must
     * not call back into this core: the daemon sends, the simulators queue) */
    void (*push)(void *ud, const struct cp_push_item *items, size_t n);
    /* every function's whole list to `d` alone, as its whole table: it drops the functions
     * not in it (a resync). May be NULL: every list to every DP (cp_core_push_all) instead */
    void (*push_dp)(void *ud, struct cp_dp *d, const struct cp_push_item *items, size_t n);
    /* a deleted function leaves every DP */
    void (*forget_fn)(void *ud, const char *name);
    /* open (or move to `address`) the connection of a peer in *io (NULL: none yet); -1 with
     * err, and *io unchanged, for a bad address */
    int (*connect)(void *ud, enum cp_peer kind, void **io, const char *address, struct dg_err *err);
    void (*disconnect)(void *ud, enum cp_peer kind, void *io); /* and free */
    /* a worker or data plane that came or moved: keep it across restarts */
    void (*persist)(void *ud, enum cp_peer kind, const void *peer);
    /* a worker's capacity or reservations changed (for /metrics); may be NULL */
    void (*worker_changed)(void *ud, const struct cp_worker *w);
    /* f wants sandboxes no worker has room for (once per episode); may be NULL */
    void (*unschedulable)(void *ud, const struct cp_fn *f);
};

/* Quotas (the CP's config; docs/security.md "Control plane: adoption and quotas"): 0 is no
 * limit. The core never asks for more: reconcile caps what it creates by them, placement
 * skips a worker at its cap or out of create tokens, and the function waits for room. */
struct cp_quotas {
    unsigned max_functions;            /* maxFunctions: registrations beyond are refused (API) */
    unsigned max_per_function;         /* maxSandboxesPerFunction: bounds above are refused */
    unsigned max_per_worker;           /* maxSandboxesPerWorker */
    unsigned max_total;                /* maxSandboxes: in the whole cluster */
    unsigned creates_per_worker_per_s; /* maxCreatesPerWorkerPerSecond: a token bucket per
                                          worker, one second deep */
};

struct cp_core_config {
    enum cp_place_policy placement;
    double chbl_eps;
    uint64_t seed;
    bool knative;        /* autoscaler: knative's defaults */
    unsigned tick_slots; /* 0: CP_TICK_SLOTS */
    struct cp_quotas quotas;
    /* scaleDownBudget: sandboxes a cp_core_scale_downs call scales down at most; the rest wait
     * for its next call. 0: no budget, a scale-down happens where it is decided */
    unsigned scale_down_budget;
};

struct cp_slot {
    struct cp_fn **v;
    size_t n, cap;
};

struct cp_core {
    struct cp_effects fx;
    bool knative;
    struct cp_fn *fns;
    struct dg_strmap fn_index; /* name -> function (a deleted one until it is freed) */
    struct dg_strmap sb_index; /* sandbox id -> sandbox (every one with an id): a create's
                                  answer, an adoption, an exit find theirs without a walk */
    struct cp_slot *slots;     /* the functions each tick slot decides */
    unsigned nslots, next_slot;
    struct cp_worker *workers;     /* by name: round-robin is stable */
    struct dg_strmap worker_index; /* name -> worker: a heartbeat finds its own without a walk */
    struct cp_worker *seen_head, *seen_tail; /* cp_worker.seen_prev/next */
    struct cp_worker *refill;                /* cp_worker.refill_next */
    struct cp_dp *dps;
    struct dg_strmap dp_index; /* name -> data plane */
    struct cp_placer placer;
    struct cp_node **view; /* placement's view: every worker's node, in name order */
    size_t nview, view_cap;
    size_t *chosen; /* placement's answer (scratch) */
    unsigned chosen_cap;
    unsigned unschedulable; /* functions waiting for capacity */
    bool capacity_soon, push_soon, scale_down_soon;
    unsigned scale_down_budget;
    struct cp_fn *sd_head, *sd_tail; /* functions whose scale-down waits for the budget, FIFO */
    struct cp_fn *dirty;             /* functions whose lists go out in the next push */
    struct cp_push_item *items;
    size_t items_cap;
    struct dg_metric *m_creates, *m_create_failures; /* counters, or NULL */
    uint64_t seq; /* orders sandboxes becoming known against listings asked for */
    struct cp_quotas q;
    unsigned nfns; /* registered functions (not being deleted): maxFunctions */
    unsigned
        nsandboxes;   /* every sandbox in the registry (creating, ready, draining): maxSandboxes */
    uint64_t refused; /* sandboxes listed by workers and refused (not adopted) */
};

void cp_core_init(struct cp_core *c, const struct cp_core_config *cfg, const struct cp_effects *fx);
/* Free everything (at exit; nothing is sent): peers' io through fx.disconnect. */
void cp_core_free(struct cp_core *c);

/* ---- functions -------------------------------------------------------------------------- */

/* A registered function (not being deleted), or NULL. */
struct cp_fn *cp_core_fn(struct cp_core *c, struct dg_str name);
/* The same, a function still being deleted included. */
struct cp_fn *cp_core_fn_any(struct cp_core *c, struct dg_str name);
/* Install `spec` (taken) as a function (registered now, or restored from the store): the DPs
 * get it with its empty list; its lower bound is created at once. */
struct cp_fn *cp_core_fn_register(struct cp_core *c, struct cp_fn_spec *spec);
/* New scaling bounds (lo <= hi): desired is brought within them at once. */
void cp_core_fn_set_bounds(struct cp_core *c, struct cp_fn *f, int lo, int hi);
/* Scale to zero, then forget (freed after its last delete and push). */
void cp_core_fn_delete(struct cp_core *c, struct cp_fn *f);
/* Its concurrency: the sum of the data planes' last reports. */
double cp_fn_sample(const struct cp_fn *f);
/* f's last failure (a cleared one if it never had any). */
const struct cp_fn_error *cp_fn_error_of(const struct cp_fn *f);

/* ---- events ------------------------------------------------------------------------------ */

/* Slot `slot` of the tick: decide its functions (each function once per c->nslots calls). A
 * scale-down it decides is queued when there is a budget (cp_core_scale_downs). */
void cp_core_tick(struct cp_core *c, unsigned slot);
/* A data plane's report of f's requests in flight; a function at zero scales at once. */
void cp_core_on_metric(struct cp_core *c, struct cp_dp *d, struct cp_fn *f, double inflight);
/* Record a report without deciding (the simulator samples right before a tick). */
void cp_core_set_metric(struct cp_core *c, struct cp_dp *d, struct cp_fn *f, double inflight);
/* A create answered: id and endpoint, or the worker's reason it failed (reason != NULL). */
void cp_core_on_created(struct cp_core *c, struct cp_sandbox *s, const char *id,
                        const char *endpoint, const char *reason);
/* A create whose answer never came (the connection failed or timed out, or the answer could
 * not be read): failed as above with `reason`, and the worker lists its sandboxes at its next
 * heartbeat, since it may have made it. */
void cp_core_on_create_lost(struct cp_core *c, struct cp_sandbox *s, const char *reason);
/* A delete answered (err: its reason, logged; the sandbox is gone from the registry
 * either way). */
void cp_core_on_deleted(struct cp_core *c, struct cp_sandbox *s, const char *err);
/* Every DP answered a drain round: its victims are deleted. */
void cp_core_on_drained(struct cp_core *c, struct cp_drain *d);
/* A sandbox died on its own: `reason` (e.g. "OOM-killed: memory limit 64 MiB") becomes f's
 * last failure and goes to the DPs with the list; a ready one is replaced at once, a draining
 * one goes on to its delete. False if unknown. */
bool cp_core_on_exited(struct cp_core *c, struct cp_fn *f, const char *id, const char *reason);
/* The effects' "soon" calls. */
void cp_core_flush_pushes(struct cp_core *c);
void cp_core_capacity_freed(struct cp_core *c);
/* The queued scale-downs, up to the budget of sandboxes (a function's whole scale-down counts
 * at once); asks to be called again (CP_SOON_SCALE_DOWN) while some wait. A function decided
 * otherwise meanwhile (it got requests, or a create) is skipped. */
void cp_core_scale_downs(struct cp_core *c);
/* Every function's whole list in the next push (a DP resyncs; reconstruction done). */
void cp_core_push_all(struct cp_core *c);

/* ---- workers and data planes ------------------------------------------------------------ */

enum cp_origin {
    CP_FROM_PEER,  /* the peer said so: a new name or address is persisted */
    CP_FROM_STORE, /* read back from the store (resync adoption): not written again */
};

struct cp_sandbox_report {
    const char *id, *function, *endpoint;
};

struct cp_worker_report {
    const char *name, *address;
    const char *boot;       /* NULL: not said */
    const char *subnet;     /* its sandboxes' subnet, IPv4 CIDR; NULL: the host of its address */
    struct dg_res_node res; /* capacity, overcommit (<= 0: 1), floors (0: none) */
    bool listed;            /* it lists its sandboxes (a resync heartbeat) */
    bool has_count;         /* it says how many ready sandboxes it runs (`count`) */
    size_t count;
    bool saturated; /* its create or delete queue is full: placement passes it over (issue 16) */
    const struct cp_sandbox_report *sandboxes;
    size_t nsandboxes;
};

/* A worker's heartbeat (it registers with its first): added or moved; if it restarted (a new
 * boot) the sandboxes of its previous life are deleted there and forgotten; of the sandboxes
 * it lists that this CP does not know, its first listing after this CP restored it adopts
 * those cp_core_adopt takes, a create under way may explain one (kept, listed again), and
 * every other is refused: logged and deleted on the worker; schedulable. A listing this CP asked for that lacks a ready sandbox known before the ask
 * means it exited unreported: handled as cp_core_on_exited. A count (r->has_count) that
 * differs from the registry's while no create or delete is under way there asks for a
 * listing. NULL with err for a bad address (nothing changed). Its need_list then says whether
 * it must list its sandboxes ("resync"). */
struct cp_worker *cp_core_on_worker_heartbeat(struct cp_core *c, const struct cp_worker_report *r,
                                              struct dg_err *err);
/* A worker read back from the store: known, unschedulable until its heartbeat, which must list
 * its sandboxes. `subnet`: its sandbox subnet as the store has it (a CIDR, "" for "none said":
 * its host), NULL if the record predates it (a listing waits for its beat). */
struct cp_worker *cp_core_worker_restore(struct cp_core *c, const char *name, const char *address,
                                         const char *subnet, struct dg_err *err);
/* A sandbox a worker lists that this CP does not know, while it reconstructs (w restored from
 * the store, its first listing not in yet): adopted as ready; scale down is held off for one
 * stable window. False (nothing changed) if known already; otherwise false with `why` (NULL:
 * not wanted) saying why it is refused: w not reconstructing, f unknown, or the endpoint
 * outside w's sandbox subnet. The quotas bound creates, not adoptions (logged when above). */
bool cp_core_adopt(struct cp_core *c, struct cp_worker *w, const char *function, const char *id,
                   const char *endpoint, const char **why);
/* A listing of w's sandboxes other than in its heartbeat (the reconstruction asks each restored
 * worker): each unknown one adopted or refused as in cp_core_on_worker_heartbeat; w's
 * reconstruction is over. */
void cp_core_worker_listed(struct cp_core *c, struct cp_worker *w,
                           const struct cp_sandbox_report *sbs, size_t n);
/* The quota a function's scaling bounds may not exceed (0: none): maxSandboxesPerFunction. A
 * registration or an update above it is refused by the API; one read back from the store is
 * clamped. */
unsigned cp_core_max_per_function(const struct cp_core *c);
/* A worker's sandboxes are gone (it restarted): out of the lists; the next tick replaces
 * them. */
void cp_core_worker_forget_sandboxes(struct cp_core *c, struct cp_worker *w);
/* Silent: unschedulable, its sandboxes lost (replaced). */
void cp_core_on_worker_lost(struct cp_core *c, struct cp_worker *w);

/* A data plane's heartbeat (or, CP_FROM_STORE, read back): added, or at a new API address.
 * NULL with err for a bad address. *fresh: new or moved (it needs every list). */
struct cp_dp *cp_core_on_dp_heartbeat(struct cp_core *c, const char *name, const char *api,
                                      const char *proxy, enum cp_origin origin, bool *fresh,
                                      struct dg_err *err);
/* d's whole table again: every function (those being deleted included) with its whole list,
 * to d alone (fx.push_dp), which drops the functions not in it. Clears d->need_sync. */
void cp_core_dp_resync(struct cp_core *c, struct cp_dp *d);
/* A push or a forget to data plane `name` failed (lost, timed out, refused): it may hold stale
 * lists, so its next heartbeat gets a resync (d->need_sync). Nothing if it is gone. */
void cp_core_on_dp_push_failed(struct cp_core *c, const char *name);
/* Silent: its reports stop counting, its connection closes, it is freed. */
void cp_core_on_dp_lost(struct cp_core *c, struct cp_dp *d);
struct cp_dp *cp_core_dp(struct cp_core *c, const char *name);
/* The worker `name`, or NULL (an index: no walk). */
struct cp_worker *cp_core_worker(struct cp_core *c, const char *name);
/* Workers and data planes silent for more than `silent_ms`: lost. Returns the data planes
 * lost. */
unsigned cp_core_check_peers(struct cp_core *c, uint64_t silent_ms);

/* The CPU placement may reserve on a worker: its advertised CPU x its overcommit. */
int64_t cp_worker_cpu_schedulable(const struct cp_worker *w);

#endif
