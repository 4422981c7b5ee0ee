/*
 * world.h: the simulated cluster the deterministic simulation tests run the real cores in
 * (tests/dst/dst.c drives it and checks the invariants; docs/testing.md describes the model).
 * One struct sim holds everything of one seed's run: the fake clock, the event queue, the
 * control plane's core (NULL while it fails over) and its store, the data planes' cores, the
 * simulated workers and every client request. Nothing is global: runs of many seeds in one
 * process do not influence each other.
 */
#ifndef DIRIGENT_TESTS_DST_WORLD_H
#define DIRIGENT_TESTS_DST_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cp_core.h"
#include "dirigent/common.h"
#include "dp_core.h"

/* ---- model constants ---------------------------------------------------------------------- */

#define MAX_WORKERS      4
#define MAX_DPS          3
#define MAX_FNS          8
#define RPC_TIMEOUT_US   (10 * 1000 * 1000ULL) /* a call nobody answers fails after this */
#define HB_US            (1000 * 1000ULL)      /* heartbeats: every 1 s */
#define SILENT_MS        3000                  /* the CP gives a peer up after 3 heartbeats */
#define CRON_US          (50 * 1000ULL)        /* the daemons' cron */
#define QUEUE_TIMEOUT_MS 10000
#define ANSWER_BOUND_US  (60 * 1000 * 1000ULL) /* any request: answered within this */
#define CREATES_PER_S    50 /* creates of one function in one second of simulated time */
#define QUIESCE_MIN_US   (30 * 1000 * 1000ULL)
#define QUIESCE_MAX_US   (300 * 1000 * 1000ULL)

/* ---- the world ------------------------------------------------------------------------------ */

enum bug { BUG_NONE, BUG_DOUBLE_ANSWER, BUG_LEAK_DELETE };

/* The fault classes (--faults): each can be left out. */
enum fault {
    F_CRASH_WORKER = 1 << 0, /* a worker dies with its sandboxes, restarts 1-10 s later */
    F_CRASH_DP = 1 << 1,     /* a data plane dies with its requests, restarts 0.5-5.5 s later */
    F_FAILOVER = 1 << 2,     /* the leader dies; a new one restores from the store */
    F_PARTITION = 1 << 3,    /* a worker or data plane unreachable for 0.2-8 s */
    F_LOSS = 1 << 4,         /* a call or its answer lost: the sender's call times out */
    F_SLOW = 1 << 5,         /* a message takes 0.1-3.1 s (what follows on its link waits) */
    F_CLOCK = 1 << 6,        /* a daemon's monotonic clock jumps forward 0.1-5 s */
    F_EXIT = 1 << 7,         /* a sandbox dies by itself (OOM); its worker tells the CP */
    F_REORDER = 1 << 8,      /* a message overtakes an earlier one between the same two nodes */
};

struct opts {
    uint64_t seed;
    unsigned seeds, steps, quiesce_every;
    enum bug bug;
    bool trace;
    bool log;         /* --log: the cores' own log lines on stderr (with wall-clock stamps) */
    bool no_dp_lists; /* --no-dp-lists: skip the DPs' convergence (known failures) */
    unsigned faults;  /* enum fault */
    const char *faults_arg;
    unsigned loss_permille, slow_permille;
    const char *argv0;
};

enum node_kind { N_CP, N_WORKER, N_DP };

struct wsb { /* a sandbox on a simulated worker */
    char *id, *fn, *endpoint;
    unsigned inflight;
};

struct sim_worker {
    int idx;
    char name[16], address[32];
    bool alive, list_next;
    unsigned boot;
    struct dg_res_node res;
    struct wsb *sbs;
    size_t n, cap;
    uint64_t part_until; /* unreachable until then */
    unsigned next_sb;
};

struct sim_dp {
    int idx;
    char name[16], api[32], proxy[32];
    struct dp_core *core;
    struct sim *sim;
    unsigned gen; /* one per life */
    bool alive, resync;
    uint64_t part_until;
    uint64_t clock_off;
};

struct sreq { /* a client's invocation */
    struct dp_req core;
    uint64_t id;
    int dp;
    unsigned dp_gen, attempt;
    uint64_t t0;
    unsigned answers;
    int status;
    bool in_core; /* the core may still hand it back */
    bool running; /* on sandbox `sb` now */
    char fn[CP_NAME_MAX + 1];
    char sb[48]; /* the sandbox it runs on (attempt) */
};

struct stored_fn {
    char name[CP_NAME_MAX + 1];
    int64_t cpu, mem;
    int concurrency, lo, hi;
};

struct push_fn {
    char *name;
    int concurrency;
    struct dp_endpoint_spec *eps;
    size_t neps;
    char *error;
    char **ex_id, **ex_reason;
    unsigned nex;
};

enum rpc_kind {
    R_CREATE,
    R_DESTROY,
    R_DRAIN,
    R_PUSH,
    R_FORGET,
    R_WK_HB,
    R_DP_HB,
    R_METRIC,
    R_EXITED
};

struct rpc {
    enum rpc_kind kind;
    int peer;          /* the worker's or DP's index (the other end is the CP) */
    uint64_t cp_gen;   /* the CP life that sent it or that it is for */
    unsigned peer_inc; /* the worker's boot / DP's gen when sent (from a peer) */
    uint64_t sent;
    bool lose_reply;
    /* payloads */
    struct cp_sandbox *s;
    struct cp_drain *d;
    char *id, *fn;
    struct push_fn *push;
    size_t npush;
    struct cp_worker_report wr;
    struct cp_sandbox_report *wsr;
    struct dp_report_item *items;
    size_t nitems;
    bool resync;
    /* the answer */
    bool ok;
    char *r_id, *r_ep, *r_err;
};

enum ev_kind {
    EV_ARRIVE,    /* an rpc reaches its receiver */
    EV_REPLY,     /* its sender gets the answer (or the error) */
    EV_CREATED,   /* a worker finished a create */
    EV_CP_CRON,   /* check peers, tick */
    EV_CP_SOON,   /* the core's "soon" */
    EV_CP_UP,     /* the new leader restores */
    EV_DP_CRON,   /* dp_core_tick */
    EV_DP_REPORT, /* dp_core_report_due */
    EV_WK_HB,
    EV_DP_HB,
    EV_REQ_DONE, /* the sandbox answered */
    EV_REQ_FAIL, /* the connection to the sandbox failed */
    EV_WK_UP,
    EV_DP_UP,
};

struct ev {
    uint64_t t, seq;
    enum ev_kind kind;
    int a;
    uint64_t gen;
    void *p;
};

struct sim {
    struct opts *o;
    uint64_t seed, rng, now, seq;
    unsigned step;
    struct ev *heap;
    size_t nheap, capheap;
    /* the control plane */
    struct cp_core *cp; /* NULL while down (failover) */
    uint64_t cp_gen, cp_off;
    uint64_t recon_until; /* a restored CP reconstructs until then, or until every restored
                             worker listed (api.c: its 3 s deadline); deletes are refused */
    unsigned cp_slot;
    struct cp_drain **drains; /* in flight, to free at failover */
    size_t ndrains, capdrains;
    /* its store */
    struct stored_fn fns[MAX_FNS];
    size_t nfns;
    bool st_worker[MAX_WORKERS], st_dp[MAX_DPS];
    unsigned fn_counter;
    /* the others */
    struct sim_worker wk[MAX_WORKERS];
    int nwk;
    struct sim_dp dp[MAX_DPS];
    int ndp;
    struct sreq **reqs;
    size_t nreqs, capreqs;
    unsigned rpcs_out; /* sent, not yet answered to their sender */
    /* creates per function name (fn0..fn11) in the current second of simulated time */
    unsigned creates_win[16];
    uint64_t win_start;
    /* the last delivery on each link (CP to peer, peer to CP): messages between two nodes
     * arrive in order (one connection), unless a reorder fault lets one overtake */
    uint64_t link_last[2][MAX_WORKERS + MAX_DPS];
    bool quiet; /* quiescence: no faults, no new work */
    char fail[512];
    /* statistics */
    unsigned st_ok, st_err, st_creates, st_create_fail, st_crash_w, st_crash_dp, st_failover,
        st_parts, st_jumps, st_lost, st_exits, st_quiesce, st_busy_deletes;
};

/* ---- the world's operations (world.c) ----------------------------------------------------- */

/* The seeded PRNG: [0, n), and true `permille` times in 1000. */
uint64_t dst_rnd(struct sim *s, uint64_t n);
bool dst_chance(struct sim *s, unsigned permille);
/* The first violation (later ones are dropped): the run stops after this step. */
void dst_failf(struct sim *s, const char *fmt, ...) DG_PRINTF(2, 3);
/* One line of --trace, stamped with simulated time. */
void dst_tracef(struct sim *s, const char *fmt, ...) DG_PRINTF(2, 3);

/* A run: its nodes started on a fresh clock (o borrowed for the run); everything freed. */
void dst_sim_init(struct sim *s, struct opts *o, uint64_t seed);
void dst_sim_free(struct sim *s);
/* Every event up to `until`; the clock then stands there. */
void dst_run_until(struct sim *s, uint64_t until);

/* The control plane: a new leader restored from the store; the leader failing over. */
void dst_cp_restore(struct sim *s);
void dst_cp_failover(struct sim *s);
/* A restored CP is still asking its workers for their sandboxes (api.c cp_reconstructing). */
bool dst_cp_reconstructing(const struct sim *s);
/* A stored function as a registration (the spec owns a new image string). */
struct cp_fn_spec dst_spec_of(const struct stored_fn *sf);
/* The simulated worker a registry worker stands for ("w3": 3). */
int dst_worker_idx(const struct cp_worker *w);

/* Workers: start (a new boot), crash (restarts later), one sandbox exiting by itself. */
void dst_wk_start(struct sim *s, struct sim_worker *w);
void dst_wk_crash(struct sim *s, struct sim_worker *w);
void dst_wk_exit_one(struct sim *s, struct sim_worker *w);
/* Data planes: start (a fresh core asking for a resync), crash (its clients answered). */
void dst_dp_start(struct sim *s, struct sim_dp *d);
void dst_dp_crash(struct sim *s, struct sim_dp *d);
/* A client's invocation of `fn` at data plane `di`. */
void dst_invoke(struct sim *s, const char *fn, int di);

#endif
