/*
 * dst.c: deterministic simulation tests of the real cores (docs/testing.md, "Deterministic
 * simulation"), after FoundationDB's and TigerBeetle's simulators. One control plane
 * (struct cp_core), 1-3 data planes (struct dp_core), 2-4 simulated workers and their clients
 * run on one fake clock in a simulated cluster (world.h, world.c: every effect of a core is a
 * message on a simulated network, a priority queue of deliveries by time). A seeded PRNG
 * picks each step's operation (registrations, deletes, bound updates, invocations) and fault
 * (worker, data plane and control plane crashes and restarts, lost, slow and reordered
 * messages, partitions, clock jumps, sandboxes exiting by themselves). After every step the
 * invariants are checked; every few hundred steps the faults stop, everything heals,
 * simulated time runs until nothing is in flight, and convergence is checked too. The first
 * violation stops the run with the seed's one-line reproduction.
 *
 * Running the same seed twice prints the same bytes (tests/dst/test_dst.sh checks it).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/log.h"
#include "world.h"

/* ---- invariants --------------------------------------------------------------------------- */

static const char *state_name(enum cp_sb_state st)
{
    return st == CP_SB_CREATING ? "creating" : st == CP_SB_READY ? "ready" : "draining";
}

/* After every step. */
static void check_always(struct sim *s)
{
    for (size_t i = 0; i < s->nreqs && !s->fail[0]; i++) {
        struct sreq *q = s->reqs[i];
        if (!q->answers && s->now - q->t0 > ANSWER_BOUND_US)
            dst_failf(s, "request %" PRIu64 " (%s at dp%d) not answered after %.1f s", q->id, q->fn,
                      q->dp, (double)(s->now - q->t0) / 1e6);
    }
    struct cp_core *c = s->cp;
    if (!c)
        return;
    /* accounting: each worker's reservations == what its sandboxes take */
    for (struct cp_worker *w = c->workers; w && !s->fail[0]; w = w->next) {
        int64_t cpu = 0, mem = 0;
        unsigned n = 0;
        for (struct cp_fn *f = c->fns; f; f = f->next)
            for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next) {
                if (sb->worker != w || sb->abandoned_on)
                    continue;
                /* max(request, floor) by the worker's advertised floors (not the core's copy) */
                const struct dg_res_node *res = &s->wk[dst_worker_idx(w)].res;
                cpu += DG_MAX(f->spec.cpu_milli, res->min_cpu_milli > 0 ? res->min_cpu_milli : 1);
                mem +=
                    DG_MAX(f->spec.memory_mib, res->min_memory_mib > 0 ? res->min_memory_mib : 1);
                n++;
            }
        if (cpu != w->node.cpu_used || mem != w->node.mem_used || n != w->node.sandboxes)
            dst_failf(s,
                      "worker %s: reserved cpu=%lld mem=%lld sandboxes=%u, but its sandboxes take "
                      "cpu=%lld mem=%lld sandboxes=%u",
                      w->name, (long long)w->node.cpu_used, (long long)w->node.mem_used,
                      w->node.sandboxes, (long long)cpu, (long long)mem, n);
    }
    /* the count behind maxSandboxes (world.c cp_create checks the quotas at every create) */
    unsigned total = 0;
    for (struct cp_fn *f = c->fns; f; f = f->next)
        for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next)
            total++;
    if (total != c->nsandboxes)
        dst_failf(s, "%u sandboxes in the registry, the core counts %u", total, c->nsandboxes);
    /* desired within bounds; counts match; no sandbox twice */
    for (struct cp_fn *f = c->fns; f && !s->fail[0]; f = f->next) {
        if (!f->deleted && (f->desired < f->spec.lower_bound || f->desired > f->spec.upper_bound))
            dst_failf(s, "fn %s: desired %d outside its bounds [%d, %d]", f->spec.name, f->desired,
                      f->spec.lower_bound, f->spec.upper_bound);
        unsigned ready = 0, creating = 0, draining = 0;
        for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next) {
            if (sb->abandoned_on && sb->state == CP_SB_CREATING)
                continue; /* not counted: replaced */
            ready += sb->state == CP_SB_READY;
            creating += sb->state == CP_SB_CREATING;
            draining += sb->state == CP_SB_DRAINING;
            if (!sb->id)
                continue;
            for (struct cp_fn *g = c->fns; g; g = g->next)
                for (struct cp_sandbox *o = g->sbs; o; o = o->next)
                    if (o != sb && o->id && !o->abandoned_on && strcmp(o->id, sb->id) == 0)
                        dst_failf(s, "sandbox %s twice in the registry (fn %s %s, fn %s %s)",
                                  sb->id, f->spec.name, state_name(sb->state), g->spec.name,
                                  state_name(o->state));
        }
        if (ready != f->ready || creating != f->creating || draining != f->draining)
            dst_failf(s, "fn %s: counts ready=%u creating=%u draining=%u, list has %u/%u/%u",
                      f->spec.name, f->ready, f->creating, f->draining, ready, creating, draining);
    }
}

static bool quiet_now(struct sim *s)
{
    if (s->rpcs_out || !s->cp || s->cp->push_soon || s->cp->capacity_soon || s->cp->scale_down_soon)
        return false;
    for (struct cp_dp *d = s->cp->dps; d; d = d->next)
        if (d->need_sync)
            return false;
    for (size_t i = 0; i < s->nreqs; i++)
        if (!s->reqs[i]->answers)
            return false;
    for (struct cp_fn *f = s->cp->fns; f; f = f->next)
        if (f->creating || f->draining || f->deleted)
            return false;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Two sets of ids (sorted in place) are equal, else the first difference in `diff`. */
static bool same_ids(char **a, size_t na, char **b, size_t nb, char *diff, size_t len)
{
    if (na > 1)
        qsort(a, na, sizeof(*a), cmp_str);
    if (nb > 1)
        qsort(b, nb, sizeof(*b), cmp_str);
    size_t i = 0, k = 0;
    while (i < na || k < nb) {
        int c = i == na ? 1 : k == nb ? -1 : strcmp(a[i], b[k]);
        if (c < 0) {
            snprintf(diff, len, "%s only in the first (%zu vs %zu)", a[i], na, nb);
            return false;
        }
        if (c > 0) {
            snprintf(diff, len, "%s only in the second (%zu vs %zu)", b[k], na, nb);
            return false;
        }
        i++;
        k++;
    }
    return true;
}

/* After quiescence: nothing leaked, every list converged, every request answered. */
static void check_converged(struct sim *s)
{
    struct cp_core *c = s->cp;
    char diff[160];
    char **a = NULL, **b = NULL;
    size_t cap = 0;
    for (int i = 0; i < s->nwk && !s->fail[0]; i++) {
        struct sim_worker *w = &s->wk[i];
        size_t na = 0, nb = 0;
        for (struct cp_fn *f = c->fns; f; f = f->next)
            for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next)
                na += sb->worker && strcmp(sb->worker->name, w->name) == 0;
        if (na + w->n > cap) {
            cap = 2 * (na + w->n);
            a = dg_xrealloc(a, cap * sizeof(*a));
            b = dg_xrealloc(b, cap * sizeof(*b));
        }
        na = 0;
        for (struct cp_fn *f = c->fns; f; f = f->next)
            for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next)
                if (sb->worker && strcmp(sb->worker->name, w->name) == 0)
                    a[na++] = sb->id;
        for (size_t k = 0; k < w->n; k++)
            b[nb++] = w->sbs[k].id;
        if (!same_ids(a, na, b, nb, diff, sizeof(diff)))
            dst_failf(s, "worker %s: the CP's sandboxes there != the worker's (leak or ghost): %s",
                      w->name, diff);
    }
    for (int i = 0; i < s->ndp && !s->fail[0] && !s->o->no_dp_lists; i++) {
        struct sim_dp *d = &s->dp[i];
        for (struct cp_fn *f = c->fns; f && !s->fail[0]; f = f->next) {
            struct dp_function *df =
                dp_core_function_find(d->core, f->spec.name, strlen(f->spec.name));
            if (!df) {
                dst_failf(s, "dp%d: fn %s registered at the CP is missing", i, f->spec.name);
                break;
            }
            size_t na = 0, nb = 0;
            if (f->ready + df->neps > cap) {
                cap = 2 * (f->ready + df->neps);
                a = dg_xrealloc(a, cap * sizeof(*a));
                b = dg_xrealloc(b, cap * sizeof(*b));
            }
            for (struct cp_sandbox *sb = f->sbs; sb; sb = sb->next)
                if (sb->state == CP_SB_READY)
                    a[na++] = sb->id;
            for (size_t k = 0; k < df->neps; k++)
                b[nb++] = df->eps[k]->id;
            if (!same_ids(a, na, b, nb, diff, sizeof(diff)))
                dst_failf(s, "dp%d: fn %s: the CP's ready sandboxes != the DP's endpoints: %s", i,
                          f->spec.name, diff);
        }
        for (struct dp_function *df = dp_core_functions(d->core); df && !s->fail[0]; df = df->next)
            if (!cp_core_fn_any(c, dg_str_c(df->name)) && df->neps)
                dst_failf(s, "dp%d: fn %s unknown to the CP still has %zu endpoints", i, df->name,
                          df->neps);
    }
    for (size_t i = 0; i < s->nfns && !s->fail[0]; i++)
        if (!cp_core_fn(c, dg_str_c(s->fns[i].name)))
            dst_failf(s, "fn %s in the store is not registered at the CP", s->fns[i].name);
    free(a);
    free(b);
}

/* Stop faults and new work, heal everything, run until nothing is in flight, check. */
static void quiesce(struct sim *s)
{
    s->quiet = true;
    s->st_quiesce++;
    dst_tracef(s, "quiesce");
    for (int i = 0; i < s->nwk; i++) {
        s->wk[i].part_until = 0;
        if (!s->wk[i].alive)
            dst_wk_start(s, &s->wk[i]);
    }
    for (int i = 0; i < s->ndp; i++) {
        s->dp[i].part_until = 0;
        if (!s->dp[i].alive)
            dst_dp_start(s, &s->dp[i]);
    }
    if (!s->cp) {
        dst_tracef(s, "control plane restores (life %" PRIu64 ")", s->cp_gen);
        dst_cp_restore(s);
    }
    uint64_t t0 = s->now;
    for (;;) {
        dst_run_until(s, s->now + CRON_US);
        check_always(s);
        if (s->fail[0])
            return;
        if (s->now - t0 >= QUIESCE_MIN_US && quiet_now(s))
            break;
        if (s->now - t0 > QUIESCE_MAX_US) {
            dst_failf(s, "no quiescence after %.0f s (%u calls in flight)",
                      (double)QUIESCE_MAX_US / 1e6, s->rpcs_out);
            return;
        }
    }
    check_converged(s);
    s->quiet = false;
}

/* ---- operations -------------------------------------------------------------------------- */

/* POST /v1/functions: stored, then registered (a name still being deleted is refused). */
static void op_register(struct sim *s)
{
    if (!s->cp || s->nfns == MAX_FNS)
        return;
    struct stored_fn sf = {0};
    snprintf(sf.name, sizeof(sf.name), "fn%u", s->fn_counter++ % 12);
    if (cp_core_fn_any(s->cp, dg_str_c(sf.name)))
        return;
    sf.cpu = 100 + 100 * (int64_t)dst_rnd(s, 10);
    sf.mem = 64 * (int64_t)(1 + dst_rnd(s, 8));
    sf.concurrency = (int)dst_rnd(s, 4); /* 0: unlimited */
    sf.lo = (int)dst_rnd(s, 3);
    sf.hi = sf.lo + (int)dst_rnd(s, 5);
    if (sf.hi == 0)
        sf.hi = 1;
    s->fns[s->nfns++] = sf;
    dst_tracef(s, "register %s cpu=%lld mem=%lld cc=%d bounds=[%d,%d]", sf.name, (long long)sf.cpu,
               (long long)sf.mem, sf.concurrency, sf.lo, sf.hi);
    struct cp_fn_spec spec = dst_spec_of(&sf);
    cp_core_fn_register(s->cp, &spec);
}

static void op_delete(struct sim *s)
{
    if (!s->cp || !s->nfns)
        return;
    size_t i = dst_rnd(s, s->nfns);
    if (dst_cp_reconstructing(s)) { /* api.c: 503, the caller retries later */
        dst_tracef(s, "delete %s refused: reconstructing", s->fns[i].name);
        return;
    }
    struct cp_fn *f = cp_core_fn(s->cp, dg_str_c(s->fns[i].name));
    dst_tracef(s, "delete %s", s->fns[i].name);
    s->fns[i] = s->fns[--s->nfns];
    if (f)
        cp_core_fn_delete(s->cp, f);
}

static void op_bounds(struct sim *s)
{
    if (!s->cp || !s->nfns)
        return;
    struct stored_fn *sf = &s->fns[dst_rnd(s, s->nfns)];
    struct cp_fn *f = cp_core_fn(s->cp, dg_str_c(sf->name));
    if (!f)
        return;
    sf->lo = (int)dst_rnd(s, 3);
    sf->hi = sf->lo + (int)dst_rnd(s, 5);
    if (sf->hi == 0)
        sf->hi = 1;
    dst_tracef(s, "bounds %s [%d,%d]", sf->name, sf->lo, sf->hi);
    cp_core_fn_set_bounds(s->cp, f, sf->lo, sf->hi);
}

static void op_invoke(struct sim *s)
{
    const char *name = s->nfns && dst_rnd(s, 20) ? s->fns[dst_rnd(s, s->nfns)].name : "nosuchfn";
    int di = (int)dst_rnd(s, (uint64_t)s->ndp);
    unsigned n = 1 + (unsigned)(dst_rnd(s, 4) == 0 ? dst_rnd(s, 8) : 0);
    for (unsigned k = 0; k < n; k++)
        dst_invoke(s, name, di);
}

static void op_fault(struct sim *s)
{
    unsigned f = s->o->faults;
    switch (dst_rnd(s, 8)) {
    case 0: { /* a worker crashes (it restarts 1-10 s later) */
        if (!(f & F_CRASH_WORKER))
            break;
        struct sim_worker *w = &s->wk[dst_rnd(s, (uint64_t)s->nwk)];
        if (w->alive)
            dst_wk_crash(s, w);
        break;
    }
    case 1: { /* a data plane crashes */
        if (!(f & F_CRASH_DP))
            break;
        struct sim_dp *d = &s->dp[dst_rnd(s, (uint64_t)s->ndp)];
        if (d->alive)
            dst_dp_crash(s, d);
        break;
    }
    case 2: /* the leader fails over */
        if ((f & F_FAILOVER) && s->cp && dst_rnd(s, 3) == 0)
            dst_cp_failover(s);
        break;
    case 3:
    case 4: { /* a worker or a DP unreachable for 0.2-8 s */
        if (!(f & F_PARTITION))
            break;
        s->st_parts++;
        uint64_t until = s->now + 200000 + dst_rnd(s, 8000000);
        if (dst_rnd(s, 2)) {
            struct sim_worker *w = &s->wk[dst_rnd(s, (uint64_t)s->nwk)];
            w->part_until = until;
            dst_tracef(s, "fault: worker %s partitioned for %.1f s", w->name,
                       (double)(until - s->now) / 1e6);
        } else {
            struct sim_dp *d = &s->dp[dst_rnd(s, (uint64_t)s->ndp)];
            d->part_until = until;
            dst_tracef(s, "fault: data plane %s partitioned for %.1f s", d->name,
                       (double)(until - s->now) / 1e6);
        }
        break;
    }
    case 5: { /* a monotonic clock jumps forward 0.1-5 s (a paused VM) */
        if (!(f & F_CLOCK))
            break;
        s->st_jumps++;
        uint64_t j = 100000 + dst_rnd(s, 5000000);
        int who = (int)dst_rnd(s, (uint64_t)s->ndp + 1);
        if (who == s->ndp)
            s->cp_off += j;
        else
            s->dp[who].clock_off += j;
        dst_tracef(s, "fault: clock of %s%d jumps %.1f s", who == s->ndp ? "cp" : "dp",
                   who == s->ndp ? 0 : who, (double)j / 1e6);
        break;
    }
    default: { /* a sandbox exits by itself */
        if (!(f & F_EXIT))
            break;
        struct sim_worker *w = &s->wk[dst_rnd(s, (uint64_t)s->nwk)];
        if (w->alive)
            dst_wk_exit_one(s, w);
        break;
    }
    }
}

static void step(struct sim *s)
{
    unsigned r = (unsigned)dst_rnd(s, 100);
    if (r < 45)
        op_invoke(s);
    else if (r < 50)
        op_register(s);
    else if (r < 52)
        op_delete(s);
    else if (r < 55)
        op_bounds(s);
    else if (r < 58 && s->o->faults)
        op_fault(s);
    dst_run_until(s, s->now + dst_rnd(s, 200000));
    check_always(s);
}

/* ---- a run --------------------------------------------------------------------------------- */

static const char *const fault_names[] = {"crash-worker", "crash-dp", "failover", "partition",
                                          "loss",         "slow",     "clock",    "exit",
                                          "reorder",      NULL};

static const char *const bug_names[] = {"none", "double-answer", "leak-delete", NULL};

/* One seed: 0 if every invariant held. */
static int run_seed(struct opts *o, uint64_t seed)
{
    struct sim s;
    dst_sim_init(&s, o, seed);
    for (s.step = 1; s.step <= o->steps && !s.fail[0]; s.step++) {
        step(&s);
        if (!s.fail[0] && (s.step % o->quiesce_every == 0 || s.step == o->steps))
            quiesce(&s);
    }
    int rc = 0;
    if (s.fail[0]) {
        printf("FAIL seed %" PRIu64 " step %u t=%.3fs: %s\n", seed, s.step - 1, (double)s.now / 1e6,
               s.fail);
        printf("reproduce: %s --seed %" PRIu64 " --steps %u%s%s%s%s%s\n", o->argv0, seed, o->steps,
               o->bug ? " --inject-bug " : "", o->bug ? bug_names[o->bug] : "",
               o->faults_arg ? " --faults " : "", o->faults_arg ? o->faults_arg : "",
               o->no_dp_lists ? " --no-dp-lists" : "");
        rc = 1;
    } else {
        printf("seed %" PRIu64 ": %u steps, %.0f s simulated, %u workers, %d dps; requests %u ok "
               "%u errors; creates %u (%u failed); crashes %u worker %u dp; failovers %u; "
               "partitions %u; clock jumps %u; exits %u; lost calls %u; busy deletes %u; "
               "quiescences %u\n",
               seed, o->steps, (double)s.now / 1e6, (unsigned)s.nwk, s.ndp, s.st_ok, s.st_err,
               s.st_creates, s.st_create_fail, s.st_crash_w, s.st_crash_dp, s.st_failover,
               s.st_parts, s.st_jumps, s.st_exits, s.st_lost, s.st_busy_deletes, s.st_quiesce);
    }
    fflush(stdout);
    dst_sim_free(&s);
    return rc;
}

static void usage(const char *argv0)
{
    fprintf(
        stderr,
        "usage: %s [--seed N] [--seeds COUNT] [--steps N] [--quiesce-every N] [--loss PERMILLE]\n"
        "          [--slow PERMILLE] [--faults all|none|CLASS,...] [--no-dp-lists] [--trace] "
        "[--log]\n"
        "          [--inject-bug double-answer|leak-delete]\n"
        "Runs the control plane's and data planes' cores on a simulated cluster for seeds\n"
        "N..N+COUNT-1 and checks the invariants after every step (docs/testing.md).\n",
        argv0);
}

/* "crash-worker,loss,..." or "all" or "none" into a mask; -1 naming the bad one. */
static int parse_faults(const char *s, unsigned *mask)
{
    *mask = 0;
    if (strcmp(s, "none") == 0)
        return 0;
    if (strcmp(s, "all") == 0) {
        *mask = (1u << 9) - 1;
        return 0;
    }
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (fault_names[k] && strcmp(fault_names[k], tok) != 0)
            k++;
        if (!fault_names[k]) {
            fprintf(stderr,
                    "dst: --faults: unknown fault '%s': expected all, none, or a comma-separated "
                    "list of crash-worker, crash-dp, failover, partition, loss, slow, clock, "
                    "exit, reorder\n",
                    tok);
            return -1;
        }
        *mask |= 1u << k;
    }
    return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s)
        return false;
    *out = strtoull(s, &end, 10);
    return *end == '\0';
}

int main(int argc, char **argv)
{
    struct opts o = {.seed = 1,
                     .seeds = 1,
                     .steps = 2000,
                     .quiesce_every = 500,
                     .loss_permille = 10,
                     .slow_permille = 30,
                     .faults = (1u << 9) - 1,
                     .argv0 = argv[0]};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        bool num = parse_u64(v, &n);
        if (strcmp(a, "--trace") == 0) {
            o.trace = true;
            continue;
        }
        if (strcmp(a, "--log") == 0) {
            o.log = true;
            continue;
        }
        if (strcmp(a, "--no-dp-lists") == 0) {
            o.no_dp_lists = true;
            continue;
        }
        if (strcmp(a, "--faults") == 0 && v) {
            if (parse_faults(v, &o.faults) < 0)
                return 2;
            o.faults_arg = v;
            i++;
            continue;
        }
        if (strcmp(a, "--inject-bug") == 0 && v) {
            int b = 0;
            while (bug_names[b] && strcmp(bug_names[b], v) != 0)
                b++;
            if (!bug_names[b]) {
                fprintf(stderr,
                        "dst: --inject-bug: expected double-answer or leak-delete, got '%s'\n", v);
                return 2;
            }
            o.bug = (enum bug)b;
            i++;
            continue;
        }
        if (!num) {
            usage(argv[0]);
            return 2;
        }
        if (strcmp(a, "--seed") == 0)
            o.seed = n;
        else if (strcmp(a, "--seeds") == 0 && n > 0)
            o.seeds = (unsigned)n;
        else if (strcmp(a, "--steps") == 0 && n > 0)
            o.steps = (unsigned)n;
        else if (strcmp(a, "--quiesce-every") == 0 && n > 0)
            o.quiesce_every = (unsigned)n;
        else if (strcmp(a, "--loss") == 0 && n <= 1000)
            o.loss_permille = (unsigned)n;
        else if (strcmp(a, "--slow") == 0 && n <= 1000)
            o.slow_permille = (unsigned)n;
        else {
            usage(argv[0]);
            return 2;
        }
        i++;
    }
    dg_log_set_level(o.log ? DG_LOG_DEBUG : DG_LOG_OFF);
    unsigned failed = 0;
    for (unsigned k = 0; k < o.seeds; k++)
        failed += (unsigned)run_seed(&o, o.seed + k);
    printf("%u of %u seeds failed\n", failed, o.seeds);
    return failed ? 1 : 0;
}
