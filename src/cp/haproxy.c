/*
 * haproxy.c: the leader keeps HAProxy's data-plane backend equal to the data planes it knows
 * (DESIGN.md §7), through HAProxy's runtime API (the "stats socket"): no config file edits
 * and no restarts, unlike the original, which rewrote haproxy.cfg and restarted HAProxy.
 *
 * A sync reads `show servers state BACKEND`, then adds what is missing
 * (`add server B/dp_NAME IP:PORT <haproxy.serverOptions>`, `enable health`, `enable server`), moves servers
 * whose address changed (`set server ... addr`), puts back a server an earlier sync
 * disabled, and removes the servers of data planes that are gone (`disable server`, then
 * `del server`; a server with sessions left stays disabled until the next sync). Only
 * servers named dp_* are ours: an operator's static servers are left alone. HAProxy's own
 * health checks take a dead data plane out within its check interval; the sync follows the
 * registry (a DP silent for three heartbeats is removed from both).
 *
 * One command per connection (the API closes a non-interactive connection after its
 * answer), one at a time, on the CP's loop; a sync asked for while one runs runs again
 * after it. Errors are logged when the state changes (reachable or not), not every time.
 */
#include "haproxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cp.h"
#include "dirigent/log.h"

#define HX_TIMEOUT_MS 2000

struct hx_conn {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } u;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    struct dg_buf out;
    char *cmd;
    char rbuf[8192];
    int open_handles;
    bool finished;
};

/* The daemon's HAProxy state (cp.haproxy). */
struct cp_haproxy {
    uv_loop_t *loop;
    char *api, *backend, *server_opts;
    bool unix_socket;
    struct sockaddr_in addr;
    bool running, again, failing;
    bool reading_state; /* the answer expected is the state's (else a command's) */
    char **cmds;        /* the current sync's commands after the state was read */
    size_t ncmds, next;
    struct hx_conn *conn; /* the command in flight */
    bool closing;
};

static void hx_step(const char *answer, const char *err);

static void hx_conn_closed(uv_handle_t *h)
{
    struct hx_conn *c = h->data;
    if (--c->open_handles == 0) {
        dg_buf_free(&c->out);
        free(c->cmd);
        free(c);
    }
}

/* The answer (NUL-terminated) or an error, once; then both handles close. */
static void hx_finish(struct hx_conn *c, const char *err)
{
    if (c->finished)
        return;
    c->finished = true;
    cp.haproxy->conn = NULL;
    dg_buf_append(&c->out, "", 1);
    if (!cp.haproxy->closing)
        hx_step(err ? NULL : c->out.data, err);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, hx_conn_closed);
    uv_close(&c->u.h, hx_conn_closed);
}

static void hx_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct hx_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void hx_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct hx_conn *c = s->data;
    if (n > 0) {
        dg_buf_append(&c->out, buf->base, (size_t)n);
        if (c->out.len > (1u << 20))
            hx_finish(c, "answer larger than 1 MiB");
    } else if (n == UV_EOF) {
        hx_finish(c, NULL);
    } else if (n < 0) {
        hx_finish(c, uv_strerror((int)n));
    }
}

static void hx_written(uv_write_t *w, int status)
{
    struct hx_conn *c = w->data;
    if (status < 0)
        hx_finish(c, uv_strerror(status));
}

static void hx_connected(uv_connect_t *r, int status)
{
    struct hx_conn *c = r->data;
    if (c->finished)
        return;
    if (status < 0) {
        hx_finish(c, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(c->cmd, (unsigned)strlen(c->cmd));
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, &c->u.s, &b, 1, hx_written);
    if (rc == 0)
        rc = uv_read_start(&c->u.s, hx_alloc, hx_read);
    if (rc < 0)
        hx_finish(c, uv_strerror(rc));
}

static void hx_timeout(uv_timer_t *t)
{
    hx_finish(t->data, "no answer within 2 s");
}

/* Send one command; hx_step gets its answer. */
static void hx_send(const char *cmd)
{
    struct hx_conn *c = dg_xcalloc(1, sizeof(*c));
    c->cmd = dg_xasprintf("%s\n", cmd);
    c->open_handles = 2;
    c->creq.data = c;
    int rc = 0;
    if (cp.haproxy->unix_socket)
        uv_pipe_init(cp.haproxy->loop, &c->u.pipe, 0);
    else
        uv_tcp_init(cp.haproxy->loop, &c->u.tcp);
    c->u.h.data = c;
    cp.haproxy->conn = c;
    uv_timer_init(cp.haproxy->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, hx_timeout, HX_TIMEOUT_MS, 0);
    if (cp.haproxy->unix_socket)
        uv_pipe_connect(&c->creq, &c->u.pipe, cp.haproxy->api, hx_connected);
    else
        rc = uv_tcp_connect(&c->creq, &c->u.tcp, (const struct sockaddr *)&cp.haproxy->addr,
                            hx_connected);
    if (rc < 0)
        hx_finish(c, uv_strerror(rc));
}

/* ---- the sync --------------------------------------------------------------------------- */

static void hx_sync_done(void)
{
    for (size_t i = 0; i < cp.haproxy->ncmds; i++)
        free(cp.haproxy->cmds[i]);
    free(cp.haproxy->cmds);
    cp.haproxy->cmds = NULL;
    cp.haproxy->ncmds = cp.haproxy->next = 0;
    cp.haproxy->running = false;
    cp.haproxy->reading_state = false;
    if (cp.haproxy->again) {
        cp.haproxy->again = false;
        cp_haproxy_sync();
    }
}

static void hx_push(const char *verb, const char *server, const char *rest)
{
    cp.haproxy->cmds =
        dg_xrealloc(cp.haproxy->cmds, (cp.haproxy->ncmds + 1) * sizeof(*cp.haproxy->cmds));
    cp.haproxy->cmds[cp.haproxy->ncmds++] = dg_xasprintf("%s %s/%s%s%s", verb, cp.haproxy->backend,
                                                         server, rest ? " " : "", rest ? rest : "");
}

/* HAProxy server names: letters, digits and "-_.:"; anything else becomes '_'. */
static void server_name(const char *dp, char *out, size_t n)
{
    size_t i = 0;
    i += (size_t)snprintf(out, n, "dp_");
    for (; *dp && i + 1 < n; dp++)
        out[i++] = (char)((*dp >= 'a' && *dp <= 'z') || (*dp >= 'A' && *dp <= 'Z') ||
                                  (*dp >= '0' && *dp <= '9') || strchr("-_.:", *dp)
                              ? *dp
                              : '_');
    out[i] = '\0';
}

struct hx_server {
    char name[128], addr[64], port[8];
    long admin;
    bool seen;
};

/* `show servers state B`: "1", a "# be_id be_name srv_id srv_name ..." header naming the
 * columns, then one row per server. Returns the rows, or -1 if the answer is not that. */
static ssize_t parse_state(char *text, struct hx_server **out)
{
    int c_name = -1, c_addr = -1, c_admin = -1, c_port = -1;
    struct hx_server *v = NULL;
    size_t n = 0;
    bool header = false;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *cols[64], *s2 = NULL;
        int nc = 0;
        for (char *t = strtok_r(line, " ", &s2); t && nc < 64; t = strtok_r(NULL, " ", &s2))
            cols[nc++] = t;
        if (nc == 0)
            continue;
        if (strcmp(cols[0], "#") == 0) {
            for (int i = 1; i < nc; i++) { /* column i of a row is cols[i] here, minus '#' */
                if (strcmp(cols[i], "srv_name") == 0)
                    c_name = i - 1;
                else if (strcmp(cols[i], "srv_addr") == 0)
                    c_addr = i - 1;
                else if (strcmp(cols[i], "srv_admin_state") == 0)
                    c_admin = i - 1;
                else if (strcmp(cols[i], "srv_port") == 0)
                    c_port = i - 1;
            }
            header = c_name >= 0 && c_addr >= 0 && c_admin >= 0 && c_port >= 0;
            continue;
        }
        if (!header) {
            if (nc == 1 && strcmp(cols[0], "1") == 0)
                continue; /* the format version */
            free(v);
            return -1;
        }
        if (nc <= c_name || nc <= c_addr || nc <= c_admin || nc <= c_port)
            continue;
        v = dg_xrealloc(v, (n + 1) * sizeof(*v));
        struct hx_server *s = &v[n++];
        memset(s, 0, sizeof(*s));
        snprintf(s->name, sizeof(s->name), "%s", cols[c_name]);
        snprintf(s->addr, sizeof(s->addr), "%s", cols[c_addr]);
        snprintf(s->port, sizeof(s->port), "%s", cols[c_port]);
        s->admin = strtol(cols[c_admin], NULL, 10);
    }
    if (!header) {
        free(v);
        return -1;
    }
    *out = v;
    return (ssize_t)n;
}

/* From the servers HAProxy has to the commands that make them the registry's data planes. */
static void plan(struct hx_server *have, size_t nhave)
{
    for (struct cp_dp *d = cp.core.dps; d; d = d->next) {
        char name[128], host[64];
        server_name(d->name, name, sizeof(name));
        const char *colon = strrchr(d->proxy, ':');
        if (!colon || (size_t)(colon - d->proxy) >= sizeof(host))
            continue;
        snprintf(host, sizeof(host), "%.*s", (int)(colon - d->proxy), d->proxy);
        struct hx_server *s = NULL;
        for (size_t i = 0; i < nhave && !s; i++)
            if (strcmp(have[i].name, name) == 0)
                s = &have[i];
        if (!s) {
            char arg[256];
            snprintf(arg, sizeof(arg), "%s %s", d->proxy, cp.haproxy->server_opts);
            hx_push("add server", name, arg);
            hx_push("enable health", name, NULL);
            hx_push("enable server", name, NULL);
            continue;
        }
        s->seen = true;
        if (strcmp(s->addr, host) != 0 || strcmp(s->port, colon + 1) != 0) {
            char arg[96];
            snprintf(arg, sizeof(arg), "addr %s port %s", host, colon + 1);
            hx_push("set server", name, arg);
        }
        if (s->admin & 1) /* forced maintenance: an earlier sync disabled it */
            hx_push("enable server", name, NULL);
    }
    for (size_t i = 0; i < nhave; i++)
        if (!have[i].seen && strncmp(have[i].name, "dp_", 3) == 0) {
            if (!(have[i].admin & 1))
                hx_push("disable server", have[i].name, NULL);
            hx_push("del server", have[i].name, NULL);
        }
}

static void hx_fail(const char *what)
{
    if (!cp.haproxy->failing)
        dg_log(DG_LOG_ERROR, "haproxy", "runtime API %s: %s (retrying every 5 s)", cp.haproxy->api,
               what);
    cp.haproxy->failing = true;
}

/* The answer to the state query (cp.haproxy->cmds empty), or to cp.haproxy->cmds[cp.haproxy->next - 1]. */
static void hx_step(const char *answer, const char *err)
{
    if (err) {
        hx_fail(err);
        hx_sync_done();
        return;
    }
    if (cp.haproxy->reading_state) {
        cp.haproxy->reading_state = false;
        char *text = dg_xstrdup(answer);
        struct hx_server *have = NULL;
        ssize_t n = parse_state(text, &have);
        free(text);
        if (n < 0) {
            char what[200];
            snprintf(what, sizeof(what), "backend '%s': %.120s", cp.haproxy->backend, answer);
            for (char *p = what; *p; p++)
                if (*p == '\n')
                    *p = ' ';
            hx_fail(what);
            hx_sync_done();
            return;
        }
        if (cp.haproxy->failing)
            dg_log_always("haproxy", "runtime API %s answers again", cp.haproxy->api);
        cp.haproxy->failing = false;
        plan(have, (size_t)n);
        free(have);
        if (!cp.haproxy->cmds) {
            hx_sync_done();
            return;
        }
    } else if (cp.haproxy->cmds && cp.haproxy->next > 0) {
        const char *cmd = cp.haproxy->cmds[cp.haproxy->next - 1];
        /* answers: "New server registered.", "Server deleted.", or empty for enable/disable;
         * anything else is HAProxy's reason */
        const char *a = answer;
        while (*a == '\n' || *a == ' ')
            a++;
        bool ok = !*a || strstr(a, "registered") || strstr(a, "deleted");
        if (ok)
            dg_log(DG_LOG_INFO, "haproxy", "%s", cmd);
        else
            dg_log(DG_LOG_WARN, "haproxy", "%s: %.*s", cmd, (int)strcspn(a, "\n"), a);
    }
    if (cp.haproxy->cmds && cp.haproxy->next < cp.haproxy->ncmds) {
        hx_send(cp.haproxy->cmds[cp.haproxy->next++]);
        return;
    }
    hx_sync_done();
}

int cp_haproxy_init(uv_loop_t *loop, const char *api, const char *backend, const char *server_opts,
                    struct dg_err *err)
{
    cp.haproxy = dg_xcalloc(1, sizeof(*cp.haproxy));
    cp.haproxy->loop = loop;
    if (!api || !*api)
        return 0;
    cp.haproxy->unix_socket = api[0] == '/' || api[0] == '.';
    if (!cp.haproxy->unix_socket) {
        const char *colon = strrchr(api, ':');
        char host[64];
        if (!colon || (size_t)(colon - api) >= sizeof(host)) {
            return dg_err_set(err, DG_E_INVAL,
                              "haproxy.api: expected a unix socket path (/run/haproxy.sock) "
                              "or IP:PORT, got '%s'",
                              api);
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - api), api);
        if (uv_ip4_addr(host, atoi(colon + 1), &cp.haproxy->addr) < 0 || atoi(colon + 1) <= 0)
            return dg_err_set(err, DG_E_INVAL,
                              "haproxy.api: expected a unix socket path or IPv4:PORT, got '%s'",
                              api);
    }
    if (!backend || !*backend || strpbrk(backend, " /;\n"))
        return dg_err_set(err, DG_E_INVAL, "haproxy.backend: expected a backend name, got '%s'",
                          backend ? backend : "");
    if (strpbrk(server_opts, ";\n"))
        return dg_err_set(err, DG_E_INVAL,
                          "haproxy.serverOptions: expected server keywords without ';' or "
                          "newlines, got '%s'",
                          server_opts);
    cp.haproxy->api = dg_xstrdup(api);
    cp.haproxy->backend = dg_xstrdup(backend);
    cp.haproxy->server_opts = dg_xstrdup(server_opts);
    return 0;
}

void cp_haproxy_sync(void)
{
    if (!cp.haproxy->api || !cp.leader || cp.haproxy->closing)
        return;
    if (cp.haproxy->running) {
        cp.haproxy->again = true;
        return;
    }
    cp.haproxy->running = true;
    cp.haproxy->reading_state = true;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "show servers state %s", cp.haproxy->backend);
    hx_send(cmd);
}

void cp_haproxy_close(void)
{
    cp.haproxy->closing = true;
    if (cp.haproxy->conn)
        hx_finish(cp.haproxy->conn, "closing");
    hx_sync_done();
}

void cp_haproxy_free(void)
{
    if (!cp.haproxy)
        return;
    free(cp.haproxy->api);
    free(cp.haproxy->backend);
    free(cp.haproxy->server_opts);
    free(cp.haproxy);
    cp.haproxy = NULL;
}
