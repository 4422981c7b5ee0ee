/*
 * cplink.c: the worker's link to the control plane, an adapter between the registry and the
 * CP's internal API. The worker registers by its heartbeats (POST /v1/workers through
 * lib/heartbeat.c: the original's register = heartbeat): its name, address and boot, the
 * capacity placement may use and the accounting rule's parameters, and, when the CP may not
 * know them, the sandboxes it runs so that a restarted CP adopts them; a one-node worker says
 * in every beat how many it runs, so that a CP whose count differs asks for them. With emulatedNodes N,
 * one process registers as N workers NAME-0..N-1 at one address. A sandbox that exits on its
 * own is reported at once (POST /v1/sandboxes/exited). The messages are dirigent/wire.h's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/heartbeat.h"
#include "dirigent/log.h"
#include "dirigent/wire.h"
#include "cplink.h"
#include "prewarm.h"

/* A listing over one body (DG_WIRE_PART_MAX), in parts: taken whole at its first part (the
 * parts are one moment's list), sent one part per beat while the CP answers "resync". */
struct listing {
    int64_t id, next, parts;
    struct dg_wire_sandbox_ref *refs; /* owned copies */
    size_t n;
    size_t *end; /* one past each part's last ref */
};

struct wk_cplink_node {
    struct wk_cplink *link;
    char *name; /* NULL: the worker's own (one node) */
    struct dg_heartbeat *hb;
    struct listing ls; /* node 0's listing in parts (parts 0: none) */
    bool grouped;      /* beaten by node 0's sibling beats, not its own */
};

/* Sibling beats (POST /v1/workers/siblings): nodes 1..N-1, once each registered by its own
 * beat, are beaten by node 0 in groups of at most SIBLINGS_PER_BEAT, one group every
 * interval / groups (node i in group (i - 1) % groups): 100 messages a second at 10,000
 * nodes instead of 10,000. */
#define SIBLINGS_PER_BEAT 100
struct wk_cplink_siblings {
    struct wk_cplink *link;
    uv_timer_t timer;
    int64_t groups, next;
    bool *in_flight; /* per group: its last message is unanswered (the next waits) */
    bool *kicked;    /* per group: send again when it is answered (the state changed) */
    bool stopped;
};

static void listing_clear(struct listing *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        dg_wire_sandbox_ref_free(&ls->refs[i]);
    free(ls->refs);
    free(ls->end);
    *ls = (struct listing){.id = ls->id};
}

/* capacity for placement: configured, else the machine's (an emulated node stands for a
 * machine like this one: emulated sandboxes use nothing real), and the accounting rule's
 * parameters: the CP reserves by them (lib/resources.c). `address` holds the "IP:PORT". */
static struct dg_wire_worker_beat beat_fields(struct wk_cplink *l, char address[96])
{
    const struct wk_cplink_conf *c = &l->conf;
    snprintf(address, 96, "%s:%d", c->host, l->port);
    struct dg_wire_worker_beat m = {.address = address,
                                    .boot = (char *)c->boot,
                                    .cpu_milli = c->cpu_milli ? c->cpu_milli : l->machine_cpu_milli,
                                    .memory_mib =
                                        c->memory_mib ? c->memory_mib : l->machine_memory_mib,
                                    .cpu_overcommit = c->cpu_overcommit,
                                    .min_cpu_milli = c->min_cpu_milli,
                                    .min_memory_mib = c->min_memory_mib,
                                    .sandbox_subnet = (char *)c->sandbox_subnet,
                                    .saturated = wk_registry_saturated(l->reg)};
    /* what pre-created sandboxes hold is not there to place on (prewarm.c) */
    if (l->reg->rt->prewarm)
        m.memory_mib -=
            DG_MIN(m.memory_mib - 1, wk_prewarm_held_mib(l->reg->rt->prewarm(l->reg->rt_state)));
    return m;
}

static json_t *registration_body(void *ud)
{
    struct wk_cplink_node *node = ud;
    struct wk_cplink *l = node->link;
    if (node->grouped) /* node 0's sibling beats say it */
        return NULL;
    char address[96];
    struct dg_wire_worker_beat m = beat_fields(l, address);
    m.name = node->name ? node->name : l->reg->name;
    /* the sandboxes it runs (the first node reports them, for all), when the CP may not know
     * them (the first beat, the first after a failure, or when the CP asks): it adopts them.
     * Not on every beat: with thousands of sandboxes that list would be most of the CP's
     * work. */
    if (l->conf.nodes == 1) { /* every beat: how many it runs, so that a CP whose count
                                 differs (a lost exit report, a create of a previous leader)
                                 asks for the list */
        m.has_sandbox_count = true;
        for (struct wk_sandbox *sb = l->reg->sandboxes; sb; sb = sb->next)
            m.sandbox_count += sb->state == WK_SB_READY;
    }
    if (node != &l->nodes[0] || (node->hb && !dg_heartbeat_resyncing(node->hb)))
        return dg_wire_worker_beat_encode(&m);
    m.has_sandboxes = true;
    struct listing *ls = &node->ls;
    /* the CP took the part before ("resync" for the next): go on with the same listing */
    if (!(ls->parts && ls->next < ls->parts && node->hb && dg_heartbeat_ok(node->hb))) {
        listing_clear(ls);
        ls->refs = dg_xcalloc(l->reg->n + 1, sizeof(*ls->refs));
        ls->end = dg_xcalloc(l->reg->n + 1, sizeof(*ls->end));
        struct dg_wire_parts split;
        dg_wire_parts_init(&split, DG_WIRE_PART_MAX - DG_WIRE_WORKER_BEAT_ENVELOPE);
        for (struct wk_sandbox *sb = l->reg->sandboxes; sb; sb = sb->next) {
            if (sb->state != WK_SB_READY)
                continue;
            char ep[80];
            snprintf(ep, sizeof(ep), "%s:%d", sb->host, sb->port);
            struct dg_err err;
            if (dg_wire_parts_add(&split, DG_WIRE_SANDBOX_REF_BYTES(sb->id, sb->function, ep),
                                  &err) == DG_WIRE_PART_NEW &&
                ls->n > 0)
                ls->end[ls->parts++] = ls->n;
            ls->refs[ls->n++] = (struct dg_wire_sandbox_ref){
                dg_xstrdup(sb->id), dg_xstrdup(sb->function), dg_xstrdup(ep)};
        }
        ls->end[ls->parts++] = ls->n;
        ls->next = 0;
        if (ls->parts > 1 && ls->id == 0) /* unlike a previous run's */
            ls->id = (int64_t)(dg_wall_ms() % 1000000000) * 1000;
        ls->id += ls->parts > 1;
    }
    size_t first = ls->next ? ls->end[ls->next - 1] : 0;
    m.sandboxes = ls->refs + first;
    m.nsandboxes = ls->end[ls->next] - first;
    if (ls->parts > 1) {
        m.listing = ls->id;
        m.listing_part = ls->next;
        m.listing_parts = ls->parts;
    }
    ls->next++;
    json_t *body = dg_wire_worker_beat_encode(&m);
    if (ls->next == ls->parts) /* the last (or only) part: nothing to keep */
        listing_clear(ls);
    return body;
}

static void siblings_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                          const struct dg_err *err, void *ud);

/* Node i's index from its name NAME-i (an answer's), or -1. */
static int64_t node_index(const struct wk_cplink *l, const char *name)
{
    size_t bl = strlen(l->reg->name);
    if (strncmp(name, l->reg->name, bl) != 0 || name[bl] != '-')
        return -1;
    char *end;
    long long i = strtoll(name + bl + 1, &end, 10);
    return *end || i < 1 || i >= l->conf.nodes || strcmp(l->nodes[i].name, name) != 0 ? -1 : i;
}

/* A group's message: the pointer carries the link's siblings and the group. */
struct siblings_req {
    struct wk_cplink_siblings *sib;
    int64_t group;
};

/* Group g's message, now (unless one is in flight: then at its answer if `kick`). */
static void siblings_send(struct wk_cplink_siblings *sib, int64_t g, bool kick)
{
    struct wk_cplink *l = sib->link;
    if (sib->in_flight[g]) {
        sib->kicked[g] |= kick;
        return;
    }
    /* node 0 registered (the CP checks the siblings against its address and boot) */
    if (sib->stopped || !dg_heartbeat_ok(l->nodes[0].hb) || dg_heartbeat_resyncing(l->nodes[0].hb))
        return;
    char address[96];
    struct dg_wire_worker_beat b = beat_fields(l, address);
    struct dg_wire_sibling_beat m = {.sender = l->nodes[0].name,
                                     .address = b.address,
                                     .boot = b.boot,
                                     .cpu_milli = b.cpu_milli,
                                     .memory_mib = b.memory_mib,
                                     .cpu_overcommit = b.cpu_overcommit,
                                     .min_cpu_milli = b.min_cpu_milli,
                                     .min_memory_mib = b.min_memory_mib,
                                     .sandbox_subnet = b.sandbox_subnet,
                                     .saturated = b.saturated};
    char *names[SIBLINGS_PER_BEAT];
    size_t n = 0;
    for (int64_t i = 1 + g; i < l->conf.nodes && n < SIBLINGS_PER_BEAT; i += sib->groups) {
        struct wk_cplink_node *node = &l->nodes[i];
        /* registered by its own beat (its own credential), and that beat not failing */
        if (!node->grouped && !(dg_heartbeat_ok(node->hb) && !dg_heartbeat_resyncing(node->hb)))
            continue;
        if (!node->grouped)
            dg_heartbeat_hold(node->hb, true); /* its own beats stop while the group's go */
        node->grouped = true;
        names[n++] = node->name;
    }
    if (n == 0)
        return;
    m.nodes = (struct dg_strlist){.v = names, .n = n};
    static const struct dg_http_client_cbs cbs = {.on_done = siblings_done};
    struct siblings_req *rq = dg_xcalloc(1, sizeof(*rq));
    *rq = (struct siblings_req){sib, g};
    sib->in_flight[g] = true;
    sib->kicked[g] = false;
    dg_heartbeat_post_cb(l->nodes[0].hb, DG_WIRE_PATH_SIBLINGS, dg_wire_sibling_beat_encode(&m),
                         &cbs, rq);
}

/* Node back to its own beats, the first now (its last beat through the group may be an
 * interval old already). */
static void ungroup(struct wk_cplink_node *node)
{
    if (!node->grouped)
        return;
    node->grouped = false;
    dg_heartbeat_hold(node->hb, false);
    dg_heartbeat_kick(node->hb);
}

static void siblings_tick(uv_timer_t *t)
{
    struct wk_cplink_siblings *sib = t->data;
    int64_t g = sib->next;
    sib->next = (sib->next + 1) % sib->groups;
    siblings_send(sib, g, false);
}

/* Nodes the CP did not take, or all of the group when the message failed, beat on their own
 * again (their own beat registers them anew, or finds the leader, or logs what is wrong). */
static void siblings_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                          const struct dg_err *err, void *ud)
{
    struct siblings_req *rq = ud;
    struct wk_cplink_siblings *sib = rq->sib;
    struct wk_cplink *l = sib->link;
    int64_t g = rq->group;
    free(rq);
    sib->in_flight[g] = false;
    if (!l->nodes)
        return;
    if (sib->kicked[g] && !sib->stopped) /* a change came while it was on its way */
        siblings_send(sib, g, false);
    struct dg_wire_sibling_answer a;
    struct dg_err perr = {0};
    if (resp && resp->status == 200 &&
        dg_wire_sibling_answer_parse(resp->body.ptr, resp->body.len, &a, &perr) == 0) {
        for (size_t k = 0; k < a.refused.n; k++) {
            int64_t i = node_index(l, a.refused.v[k]);
            if (i > 0)
                ungroup(&l->nodes[i]);
        }
        if (a.refused.n)
            dg_log(DG_LOG_INFO, "heartbeat",
                   "control plane took %zu sibling node(s) not (%s...): they beat on their own",
                   a.refused.n, a.refused.v[0]);
        dg_wire_sibling_answer_free(&a);
        return;
    }
    if (!sib->stopped)
        dg_log(DG_LOG_INFO, "heartbeat", "sibling beat: %s%.*s%s: those nodes beat on their own",
               err                           ? err->msg
               : resp && resp->status == 200 ? "bad answer: "
                                             : "refused: ",
               resp ? (int)DG_MIN(resp->body.len, 200) : 0, resp ? resp->body.ptr : "",
               perr.msg[0] ? perr.msg : "");
    for (int64_t i = 1 + g; i < l->conf.nodes; i += sib->groups)
        ungroup(&l->nodes[i]);
}

int wk_cplink_start(struct wk_cplink *l, uv_loop_t *loop, const struct wk_cplink_conf *conf,
                    struct wk_registry *reg, int port, struct dg_err *err)
{
    l->conf = *conf;
    l->reg = reg;
    l->port = port;
    /* read once: every beat of every node says it (/proc/meminfo 10,000 times a second was
     * most of an emulating worker's heartbeat cost) */
    l->machine_cpu_milli = (int64_t)uv_available_parallelism() * 1000;
    l->machine_memory_mib = (int64_t)(uv_get_total_memory() / (1024 * 1024));
    int64_t n = conf->nodes;
    l->nodes = dg_xcalloc((size_t)n, sizeof(*l->nodes));
    for (int64_t i = 0; i < n; i++) {
        struct wk_cplink_node *node = &l->nodes[i];
        node->link = l;
        node->name = n > 1 ? dg_xasprintf("%s-%lld", reg->name, (long long)i) : NULL;
        /* emulated nodes without credentials share node 0's connections (a CP sees a few
         * keep-alive connections, not one per node) and beat spread over the interval (not
         * all in the same millisecond); with a key each node keeps its own pool: the bearer
         * is the pool's */
        if (i > 0 && !conf->key)
            node->hb = dg_heartbeat_start_shared(l->nodes[0].hb,
                                                 (uint64_t)i * conf->heartbeat_ms / (uint64_t)n,
                                                 registration_body, node);
        else /* node 0 of many: connections for all (one beat in flight per connection) */
            node->hb = dg_heartbeat_start_conns(
                loop, conf->cp_addresses, DG_WIRE_PATH_WORKERS, conf->heartbeat_ms,
                n > 1 && !conf->key ? (unsigned)DG_MIN(64, 4 + n / 100) : 4, registration_body,
                node, err);
        if (!node->hb)
            return -1;
        if (conf->key) {
            char cred[DG_AUTH_CRED_MAX];
            if (dg_auth_credential(conf->key, DG_AUTH_NODE, node->name ? node->name : reg->name,
                                   cred, sizeof(cred), err) < 0)
                return dg_err_wrap(err, "authTokenFile");
            dg_heartbeat_set_bearer(node->hb, cred);
        }
    }
    if (n > 1) { /* sibling beats, one group every interval / groups, at least 2 ms apart */
        struct wk_cplink_siblings *sib = l->sib = dg_xcalloc(1, sizeof(*sib));
        sib->link = l;
        int64_t groups = (n - 1 + SIBLINGS_PER_BEAT - 1) / SIBLINGS_PER_BEAT;
        uint64_t every = DG_MAX(2, conf->heartbeat_ms / (uint64_t)groups);
        sib->groups = groups;
        sib->in_flight = dg_xcalloc((size_t)groups, sizeof(*sib->in_flight));
        sib->kicked = dg_xcalloc((size_t)groups, sizeof(*sib->kicked));
        uv_timer_init(loop, &sib->timer);
        sib->timer.data = sib;
        uv_timer_start(&sib->timer, siblings_tick, every, every);
        uv_unref((uv_handle_t *)&sib->timer);
    }
    return 0;
}

void wk_cplink_exited(void *ud, const struct wk_sandbox *sb)
{
    struct wk_cplink *l = ud;
    if (!l->nodes || !l->nodes[0].hb)
        return;
    /* the CP replaces it at once, and tells the data planes why it went */
    struct dg_wire_sandbox_exit m = {.worker = l->reg->name,
                                     .id = (char *)sb->id,
                                     .function = sb->function,
                                     .status = sb->exit_status,
                                     .reason = (char *)sb->exit_reason};
    dg_heartbeat_post(l->nodes[0].hb, DG_WIRE_PATH_SANDBOX_EXITED, dg_wire_sandbox_exit_encode(&m));
}

void wk_cplink_saturation(void *ud, bool saturated)
{
    struct wk_cplink *l = ud;
    /* a flapping queue must not turn thousands of emulated nodes into a storm of beats: past
     * 100 nodes the next periodic beat says it */
    for (int64_t i = 0; l->nodes && l->conf.nodes <= 100 && i < l->conf.nodes; i++)
        dg_heartbeat_kick(l->nodes[i].hb); /* those in sibling beats: below */
    for (int64_t g = 0; l->sib && l->conf.nodes <= 100 && g < l->sib->groups; g++)
        siblings_send(l->sib, g, true);
}

static void siblings_closed(uv_handle_t *h)
{
    struct wk_cplink_siblings *sib = h->data;
    free(sib->in_flight);
    free(sib->kicked);
    free(sib);
}

void wk_cplink_stop(struct wk_cplink *l)
{
    if (l->sib) { /* its messages in flight end with node 0's pools, below */
        l->sib->stopped = true;
        uv_timer_stop(&l->sib->timer);
    }
    for (int64_t i = l->nodes ? l->conf.nodes - 1 : -1; i >= 0; i--) { /* node 0's pools last */
        dg_heartbeat_stop(l->nodes[i].hb);
        l->nodes[i].hb = NULL;
    }
    if (l->sib) {
        uv_close((uv_handle_t *)&l->sib->timer, siblings_closed);
        l->sib = NULL;
    }
}

void wk_cplink_free(struct wk_cplink *l)
{
    for (int64_t i = 0; l->nodes && i < l->conf.nodes; i++) {
        free(l->nodes[i].name);
        listing_clear(&l->nodes[i].ls);
    }
    free(l->nodes);
    l->nodes = NULL;
}
