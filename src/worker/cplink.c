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
#include "dirigent/wire.h"
#include "cplink.h"

struct wk_cplink_node {
    struct wk_cplink *link;
    char *name; /* NULL: the worker's own (one node) */
    struct dg_heartbeat *hb;
};

static json_t *registration_body(void *ud)
{
    struct wk_cplink_node *node = ud;
    struct wk_cplink *l = node->link;
    const struct wk_cplink_conf *c = &l->conf;
    char address[96];
    snprintf(address, sizeof(address), "%s:%d", c->host, l->port);
    /* capacity for placement: configured, else the machine's (an emulated node stands for a
     * machine like this one: emulated sandboxes use nothing real), and the accounting rule's
     * parameters: the CP reserves by them (lib/resources.c) */
    struct dg_wire_worker_beat m = {
        .name = node->name ? node->name : l->reg->name,
        .address = address,
        .boot = (char *)c->boot,
        .cpu_milli = c->cpu_milli ? c->cpu_milli : (int64_t)uv_available_parallelism() * 1000,
        .memory_mib =
            c->memory_mib ? c->memory_mib : (int64_t)(uv_get_total_memory() / (1024 * 1024)),
        .cpu_overcommit = c->cpu_overcommit,
        .min_cpu_milli = c->min_cpu_milli,
        .min_memory_mib = c->min_memory_mib,
        .sandbox_subnet = (char *)c->sandbox_subnet,
        .saturated = wk_registry_saturated(l->reg)};
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
    m.sandboxes = dg_xcalloc(l->reg->n + 1, sizeof(*m.sandboxes));
    char(*eps)[80] = dg_xcalloc(l->reg->n + 1, sizeof(*eps));
    for (struct wk_sandbox *sb = l->reg->sandboxes; sb; sb = sb->next) {
        if (sb->state != WK_SB_READY)
            continue;
        size_t k = m.nsandboxes++;
        snprintf(eps[k], sizeof(eps[k]), "%s:%d", sb->host, sb->port);
        m.sandboxes[k] = (struct dg_wire_sandbox_ref){
            .id = sb->id, .function = sb->function, .endpoint = eps[k]};
    }
    json_t *body = dg_wire_worker_beat_encode(&m);
    free(m.sandboxes);
    free(eps);
    return body;
}

int wk_cplink_start(struct wk_cplink *l, uv_loop_t *loop, const struct wk_cplink_conf *conf,
                    struct wk_registry *reg, int port, struct dg_err *err)
{
    l->conf = *conf;
    l->reg = reg;
    l->port = port;
    int64_t n = conf->nodes;
    l->nodes = dg_xcalloc((size_t)n, sizeof(*l->nodes));
    for (int64_t i = 0; i < n; i++) {
        struct wk_cplink_node *node = &l->nodes[i];
        node->link = l;
        node->name = n > 1 ? dg_xasprintf("%s-%lld", reg->name, (long long)i) : NULL;
        node->hb = dg_heartbeat_start_list(loop, conf->cp_addresses, DG_WIRE_PATH_WORKERS,
                                           conf->heartbeat_ms, registration_body, node, err);
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
        dg_heartbeat_kick(l->nodes[i].hb);
}

void wk_cplink_stop(struct wk_cplink *l)
{
    for (int64_t i = 0; l->nodes && i < l->conf.nodes; i++) {
        dg_heartbeat_stop(l->nodes[i].hb);
        l->nodes[i].hb = NULL;
    }
}

void wk_cplink_free(struct wk_cplink *l)
{
    for (int64_t i = 0; l->nodes && i < l->conf.nodes; i++)
        free(l->nodes[i].name);
    free(l->nodes);
    l->nodes = NULL;
}
