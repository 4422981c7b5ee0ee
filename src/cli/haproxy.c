/*
 * haproxy.c: `dirigent haproxy-config`, HAProxy's config in front of data planes and
 * registration servers; `dirigent up --cp-replicas/--dataplanes` writes the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The two frontends of the original's configs/haproxy.cfg: invocations hashed on Host over
 * the data planes (servers added at run time by the CP leader through the stats socket), and
 * registrations spread over the CPs' registration servers (a follower forwards to the
 * leader). Timeouts are the original's; health checks every 500 ms (it had 2.5 s). */
void cli_haproxy_config(FILE *out, const struct cli_hx_conf *c)
{
    /* TLS terminated here (docs/security.md): both frontends take HTTPS with this PEM file */
    const char *ssl = c->tls_cert ? " ssl crt " : "", *crt = c->tls_cert ? c->tls_cert : "";
    fprintf(out,
            "# HAProxy for dirigent (written by `dirigent haproxy-config`)\n"
            "global\n"
            "    stats socket %s mode 600 level admin\n"
            "    log stdout format raw local0 info\n\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            "    option httplog\n"
            "    option dontlog-normal\n"
            "    timeout connect 1s\n"
            "    timeout client 900s\n"
            "    timeout server 900s\n"
            "    timeout http-request 60s\n"
            "    timeout http-keep-alive 60s\n"
            "    timeout queue 60s\n"
            "    timeout check 2s\n"
            "    retries 3\n"
            "    option redispatch 1\n"
            "    http-reuse always\n\n"
            "frontend invocations\n"
            "    bind %s%s%s\n"
            "    default_backend %s\n\n"
            "# servers dp_<name>: added and removed by the control plane leader (haproxy.api)\n"
            "backend %s\n"
            "    balance hdr(host)\n"
            "    hash-type consistent\n"
            "    option httpchk GET /health\n"
            "    retry-on conn-failure empty-response\n"
            "    default-server inter 500ms fall 2 rise 1\n\n"
            "frontend registration\n"
            "    bind %s%s%s\n"
            "    default_backend registration\n\n"
            "backend registration\n"
            "    balance roundrobin\n"
            "    option httpchk GET /health\n"
            "    option http-buffer-request\n"
            "    retry-on conn-failure empty-response 503\n"
            "    # a replica that refuses a connection is out at once (not after two checks): a\n"
            "    # registration during a failover is retried on a live one\n"
            "    default-server inter 500ms fall 2 rise 1 observe layer4 error-limit 1 "
            "on-error mark-down\n",
            c->socket, c->invocations, ssl, crt, c->backend, c->backend, c->registration, ssl, crt);
    for (size_t i = 0; i < c->ncps; i++)
        fprintf(out, "    server cp%zu %s check\n", i, c->cps[i]);
}

size_t cli_split_list(char *s, char **v, size_t cap)
{
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t && n < cap;
         t = strtok_r(NULL, ",", &save))
        v[n++] = t;
    v[n] = NULL;
    return n;
}

int cli_cmd_haproxy_config(struct cli_ctx *c)
{
    struct cli_hx_conf h = {.invocations = cli_get(c, "--invocations") ?: "127.0.0.1:8079",
                            .registration = cli_get(c, "--registration") ?: "127.0.0.1:9092",
                            .backend = cli_get(c, "--backend") ?: "dataplanes",
                            .socket = cli_get(c, "--socket"),
                            .tls_cert = cli_get(c, "--tls-cert")};
    char *cps[65];
    char *list = dg_xstrdup(cli_get(c, "--cp"));
    h.cps = cps;
    h.ncps = cli_split_list(list, cps, 64);
    cli_haproxy_config(stdout, &h);
    free(list);
    return 0;
}
