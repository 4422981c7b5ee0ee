/*
 * commands.c: the CLI's command table and everything made from it: the command-line parser,
 * `--help`/`-h` at any position, `dirigent help [COMMAND ...]` and docs/cli.md
 * (`dirigent help --all`). Each command's handler lives in its own file (up.c, function.c,
 * invoke.c, status.c, haproxy.c, load.c) and is declared in cli.h; only `help` is here.
 *
 * The table is the single source of truth, so dispatch and help cannot drift apart. Global
 * options (--cp, --dp, --json) are accepted anywhere on the line; an option a command declares
 * itself takes precedence after the command (haproxy-config's --cp).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

/* ---- the command table ------------------------------------------------------------------ */

/* Options are written positionally (name, value, default, help) with the rare flags
 * designated after them; the fields left out are false on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const struct cli_opt global_opts[] = {
    {"--cp", "HOST:PORT", "127.0.0.1:9091", "the control plane's registration server"},
    {"--dp", "HOST:PORT", "127.0.0.1:8080", "the data plane's proxy"},
    {"--json", NULL, NULL, "machine-readable output (the API's JSON)"},
    {"--token-file", "FILE", NULL,
     "an operator credential for the control plane (mode 0600); default: $DIRIGENT_TOKEN, "
     "else <state-dir>/operator.token when present"},
    {"--state-dir", "DIR", "data/local",
     "the `dirigent up` cluster to talk to: its operator.token is the credential sent"},
    {"--help", NULL, NULL, "this usage, anywhere on the line; acts on nothing"},
    {0}};

static const struct cli_opt up_opts[] = {
    {"--runtime", "auto|oci|process|emulated", "auto",
     "sandboxes: containers under crun (oci), plain processes, or emulated; auto picks oci as "
     "root with crun and the image, else process (and says why)"},
    {"--state-dir", "DIR", "data/local",
     "logs, pids, the CP's database and the worker's data (created with its parents); one "
     "cluster per state directory"},
    {"--port-base", "N", "8080",
     "moves every port of the cluster by N-8080 (the data plane's proxy listens on N)"},
    {"--cp-replicas", "N", "1", "control-plane replicas (1, 3, 5 or 7: Redis, raft, HAProxy)"},
    {"--dataplanes", "M", "1", "data planes (1 to 8; more than one: behind HAProxy)"},
    {"--async", NULL, NULL,
     "asynchronous invocations (InVitro's async mode): the data planes answer with a request "
     "id, results on 8082 (+10 per data plane)"},
    {0}};

static const struct cli_opt deploy_opts[] = {
    {"--image", "IMG", NULL,
     "a registry reference (127.0.0.1:5000/fn:latest), oci:PATH:TAG, docker-archive:PATH, or "
     "with the process runtime an executable's path",
     .required = true},
    {"--port", "P", "80", "the port the function listens on in its sandbox"},
    {"--min", "N", "0", "sandboxes kept at least (scaling_lower_bound)"},
    {"--max", "N", "unbounded", "sandboxes at most (scaling_upper_bound)"},
    {"--cpu", "MILLI", "1", "milli-CPU requested per sandbox (requested_cpu)"},
    {"--memory", "MIB", "1", "MiB requested per sandbox (requested_memory)"},
    {"--concurrency", "N", "1",
     "requests at once per sandbox, 0 unlimited (container_concurrency)"},
    {"--cold-start-sweep", NULL, NULL, "InVitro's cold-start profile (upper bound 1)"},
    {"--no-init", NULL, NULL,
     "run the image's entrypoint as its sandbox's PID 1, without the worker's minimal init "
     "(init: false; the init forwards SIGTERM to an entrypoint that does not handle it as PID 1)"},
    {"--prewarm", "N", "0",
     "sandboxes kept pre-created (created, not started) besides what the autoscaler predicts "
     "(prewarm; the oci runtime)"},
    {"--upstream-protocol", "http1|h2c", "http1",
     "how the data planes reach its sandboxes: HTTP/1.1, or HTTP/2 cleartext (upstream_protocol; "
     "gRPC calls always go over h2c)"},
    {0}};

static const struct cli_opt invoke_opts[] = {
    {"--data", "STR", NULL, "the request body (sent with POST; without it GET)"},
    {"--header", "NAME:VALUE", NULL, "an extra request header (repeatable, up to 32)",
     .repeat = true},
    {0}};

static const struct cli_opt haproxy_opts[] = {
    {"--socket", "PATH", NULL, "HAProxy's runtime API socket (the CP's haproxy.api)",
     .required = true},
    {"--cp", "REG1,REG2,...", NULL, "the control planes' registration servers", .required = true},
    {"--invocations", "IP:PORT", "127.0.0.1:8079", "the invocations frontend"},
    {"--registration", "IP:PORT", "127.0.0.1:9092", "the registrations frontend"},
    {"--backend", "NAME", "dataplanes", "the data planes' backend (the CP's haproxy.backend)"},
    {"--tls-cert", "FILE.pem", NULL,
     "terminate TLS: both frontends bind with 'ssl crt FILE.pem' (certificate and key in one "
     "PEM file; docs/security.md)"},
    {0}};

#define LOAD_COMMON                                                                                \
    {"--protocol", "http1|h2c|grpc", "http1",                                                      \
     "how to call the data plane: HTTP/1.1, HTTP/2 cleartext (prior knowledge), or gRPC "          \
     "faas.Executor/Execute as InVitro (docs/load.md)"},                                           \
        {"--csv", "FILE", NULL, "a row per invocation"},                                           \
    {                                                                                              \
        "--timeout", "S", "120", "seconds a request may take"                                      \
    }

/* asynchronous invocations (a DP with async: true): submit, then poll the results port */
#define LOAD_ASYNC                                                                                 \
    {"--async", NULL, NULL,                                                                        \
     "submit asynchronously (POST), then fetch each result from --results until done or "          \
     "--timeout; latency is submission to result (Duration-Microseconds)"},                        \
    {                                                                                              \
        "--results", "IP:PORT", "the --dp host, port 8082", "with --async: the results port"       \
    }

static const struct cli_opt burst_opts[] = {LOAD_COMMON, LOAD_ASYNC, {0}};

static const struct cli_opt rps_opts[] = {
    {"--rate", "R", NULL, "requests per second, 0 < R <= 100000", .required = true},
    {"--duration", "S", NULL, "seconds, 0 < S <= 3600", .required = true},
    {"--cold", NULL, NULL,
     "every call a cold start: registers ceil(R x cooldown) functions (InVitro's RPS mode) and "
     "removes them when it ends (also on Ctrl-C)"},
    {"--cooldown", "S", "10", "with --cold: seconds between two calls of one function (1..600)"},
    {"--image", "IMG", "the dirigent-fn next to this binary", "with --cold: the functions' image"},
    {"--keep", NULL, NULL, "with --cold: keep the functions it registered"},
    LOAD_COMMON,
    LOAD_ASYNC,
    {0}};

static const struct cli_opt trace_opts[] = {
    {"--minutes", "N", "0 (all)", "replay only the first N minutes"},
    {"--warmup-minutes", "W", "0", "minutes sent but not counted (fewer than --minutes)"},
    {"--seed", "S", "1", "the arrivals' random seed (>= 1)"},
    {"--speed", "X", "1", "replay X times faster (0.01..1000)"},
    {"--iat", "equidistant|uniform|exponential", "exponential",
     "arrivals within a minute, as InVitro's"},
    {"--image", "IMG", "the dirigent-fn next to this binary", "the functions' image"},
    {"--prefix", "P", "trace-", "the functions' name prefix"},
    {"--dry-run", NULL, NULL, "print the plan as CSV, send nothing"},
    LOAD_COMMON,
    LOAD_ASYNC,
    {0}};

static const struct cli_opt token_init_opts[] = {
    {"--key", "FILE", NULL, "where to write the new cluster key (mode 0600; never overwritten)",
     .required = true},
    {0}};

static const struct cli_opt token_create_opts[] = {
    {"--key", "FILE", NULL, "the cluster key", .required = true},
    {"--role", "operator|node|cp", NULL, "what the credential may do (docs/security.md)",
     .required = true},
    {"--name", "NAME", NULL,
     "who it is: a node's worker or data plane name, an operator's name (A-Z a-z 0-9 _ -)",
     .required = true},
    {"--out", "FILE", NULL, "write it to a new file of mode 0600 instead of stdout"},
    {0}};

static const struct cli_opt help_opts[] = {
    {"--all", NULL, NULL, "every command's usage (docs/cli.md is this output)"}, {0}};

static int cmd_help(struct cli_ctx *c);

static const struct cli_cmd commands[] = {
    {"up", "", 0, 0, "a local cluster in the foreground (Ctrl-C stops it)", up_opts,
     "dirigent up --runtime process --state-dir /tmp/a --port-base 18080",
     "Starts a control plane, a data plane and a worker (with --cp-replicas/--dataplanes also\n"
     "Redis and HAProxy), deploys the sample function `hello` and prints\n"
     "`ready: curl -H 'Host: hello' http://127.0.0.1:8080/`. Before it starts anything it locks\n"
     "the state directory (a second `up` on it: `already running (pid N)`) and checks that\n"
     "every port is free (a busy one is named with the process holding it). Ports, N being\n"
     "--port-base (8080): data plane j proxy N+10j, API N+1+10j; control plane i internal API\n"
     "N+1010+10i, registration N+1011+10i, raft N+1015+10i; worker N+1930; HAProxy\n"
     "invocations N-1, registrations N+1012; Redis N-1700.",
     cli_cmd_up},
    {"function", "", 0, 0, "deploy, list, get and delete functions", NULL, "dirigent function list",
     NULL, NULL},
    {"function deploy", "NAME", 1, 1, "register a function with the control plane", deploy_opts,
     "dirigent function deploy mine --image oci:$PWD/build/images/dirigent-fn:latest --max 5", NULL,
     cli_cmd_deploy},
    {"function list", "", 0, 0, "every function: state, sandboxes, bounds, image", NULL,
     "dirigent function list", NULL, cli_cmd_list},
    {"function get", "NAME", 1, 1, "one function (with the reason its last create failed)", NULL,
     "dirigent --json function get hello", NULL, cli_cmd_get},
    {"function delete", "NAME", 1, 1, "scale a function to zero, then forget it", NULL,
     "dirigent function delete mine", NULL, cli_cmd_delete},
    {"invoke", "NAME", 1, 1, "call a function through the data plane and print its answer",
     invoke_opts, "dirigent invoke hello --header 'requested_cpu: 20'", NULL, cli_cmd_invoke},
    {"status", "", 0, 0, "the cluster: control-plane replicas, workers, data planes, functions",
     NULL, "dirigent status", NULL, cli_cmd_status},
    {"haproxy-config", "", 0, 0, "print HAProxy's config for data planes and control planes",
     haproxy_opts,
     "dirigent haproxy-config --socket /run/haproxy.sock --cp 10.0.0.1:9091,10.0.0.2:9091", NULL,
     cli_cmd_haproxy_config},
    {"token", "", 0, 0, "cluster keys and credentials (docs/security.md)", NULL,
     "dirigent token init --key /etc/dirigent/cluster.key", NULL, NULL},
    {"token init", "", 0, 0, "make a new cluster key (32 random bytes, hex, mode 0600)",
     token_init_opts, "dirigent token init --key /etc/dirigent/cluster.key",
     "Every daemon of the cluster gets the key file as authTokenFile; they derive their own\n"
     "credentials from it. Keep it secret: whoever holds it can make any credential.",
     cli_cmd_token_init},
    {"token create", "", 0, 0, "print a credential derived from the key", token_create_opts,
     "dirigent token create --key cluster.key --role operator --name alice --out alice.token",
     "Operators use theirs as DIRIGENT_TOKEN or --token-file; node credentials are for tools\n"
     "that act as a worker or data plane (daemons derive theirs from authTokenFile).",
     cli_cmd_token_create},
    {"load", "", 0, 0, "the open-loop load generator (docs/load.md)", NULL,
     "dirigent load rps --rate 200 --duration 10 hello", NULL, NULL},
    {"load burst", "N FUNCTION", 2, 2, "N requests at once", burst_opts,
     "dirigent load burst 100 hello", NULL, cli_cmd_load_burst},
    {"load rps", "[FUNCTION]", 0, 1, "a constant rate to FUNCTION, or with --cold to fresh ones",
     rps_opts, "dirigent load rps --rate 20 --duration 10 --cold",
     "Give either a FUNCTION or --cold. Exit status 3 when a counted request failed.",
     cli_cmd_load_rps},
    {"load trace", "DIR|FILE", 1, 1, "replay an Azure Functions trace (2019 directory, 2021 file)",
     trace_opts, "dirigent load trace tests/data/invitro-example --minutes 3 --warmup-minutes 1",
     "Registers the trace's functions first (as InVitro does), then sends each invocation at\n"
     "its time asking the function to work for its duration.",
     cli_cmd_load_trace},
    {"load summarize", "FILE.csv", 1, 1, "the summary of a CSV written by --csv", NULL,
     "dirigent load summarize run.csv", NULL, cli_cmd_load_summarize},
    {"help", "[COMMAND ...]", 0, 8, "a command's usage", help_opts, "dirigent help function deploy",
     NULL, cmd_help},
};

static const struct cli_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static const struct cli_opt *find_opt(const struct cli_opt *opts, const char *name, size_t len)
{
    for (const struct cli_opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

/* ---- help ------------------------------------------------------------------------------- */

/* "--name ARG" */
static int opt_width(const struct cli_opt *opts, int w)
{
    for (const struct cli_opt *o = opts; o && o->name; o++) {
        int n = (int)strlen(o->name) + (o->arg ? 1 + (int)strlen(o->arg) : 0);
        if (strcmp(o->name, "--help") == 0)
            n += 4; /* "-h, " */
        w = n > w ? n : w;
    }
    return w;
}

/* "  HEAD  TEXT" with TEXT wrapped at 100 columns under itself. */
static void print_wrapped(FILE *out, int w, const char *head, const char *text)
{
    fprintf(out, "  %-*s", w, head);
    int col = w + 2, indent = w + 4;
    const char *p = text;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (col > indent && col + 1 + (int)word > 100) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else {
            fputs(col == w + 2 ? "  " : " ", out);
            col += col == w + 2 ? 2 : 1;
        }
        for (size_t i = 0; i < word; i++) /* \1: a space that does not break */
            fputc(p[i] == '\1' ? ' ' : p[i], out);
        col += (int)word;
        p += word;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

static void print_opts(FILE *out, const struct cli_opt *opts, int w)
{
    for (const struct cli_opt *o = opts; o && o->name; o++) {
        char head[128], text[1024];
        snprintf(head, sizeof(head), "%s%s%s%s", strcmp(o->name, "--help") == 0 ? "-h, " : "",
                 o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        snprintf(text, sizeof(text), "%s%s%s%s", o->help, o->required ? " (required)" : "",
                 !o->required && o->def ? " (default:\1" : "",
                 !o->required && o->def ? o->def : "");
        if (!o->required && o->def)
            snprintf(text + strlen(text), sizeof(text) - strlen(text), ")");
        print_wrapped(out, w, head, text);
    }
}

static bool is_child(const struct cli_cmd *parent, const struct cli_cmd *c)
{
    size_t n = strlen(parent->name);
    return strncmp(c->name, parent->name, n) == 0 && c->name[n] == ' ' &&
           !strchr(c->name + n + 1, ' ');
}

static void print_usage(FILE *out, const struct cli_cmd *c)
{
    if (!c) { /* dirigent itself */
        fprintf(out, "usage: dirigent [--cp HOST:PORT] [--dp HOST:PORT] [--json] COMMAND ...\n\n"
                     "commands:\n");
        int w = 0;
        for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++)
            w = DG_MAX(w, (int)strlen(commands[i].name));
        for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++)
            fprintf(out, "  %-*s  %s\n", w, commands[i].name, commands[i].summary);
        fprintf(out, "\nglobal options (anywhere on the line):\n");
        print_opts(out, global_opts, opt_width(global_opts, 0));
        fprintf(out, "\n`dirigent help COMMAND` (or `dirigent COMMAND --help`) shows a command's "
                     "options and an example.\n");
        return;
    }
    if (!c->run) { /* a group */
        fprintf(out, "usage: dirigent %s SUBCOMMAND ...\n\n%c%s.\n\nsub-commands:\n", c->name,
                toupper(c->summary[0]), c->summary + 1);
        int w = 0;
        for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++)
            if (is_child(c, &commands[i]))
                w = DG_MAX(w, (int)strlen(commands[i].name));
        for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++)
            if (is_child(c, &commands[i]))
                fprintf(out, "  %-*s  %s\n", w, commands[i].name, commands[i].summary);
        fprintf(out, "\nexample:\n  %s\n", c->example);
        return;
    }
    fprintf(out, "usage: dirigent %s", c->name);
    if (c->args[0])
        fprintf(out, " %s", c->args);
    for (const struct cli_opt *o = c->opts; o && o->name; o++)
        if (o->required)
            fprintf(out, " %s %s", o->name, o->arg);
    bool optional = false;
    for (const struct cli_opt *o = c->opts; o && o->name; o++)
        optional |= !o->required;
    fprintf(out, "%s\n\n%c%s.\n", optional ? " [options]" : "", toupper(c->summary[0]),
            c->summary + 1);
    int w = opt_width(global_opts, opt_width(c->opts, 0));
    if (c->opts) {
        fprintf(out, "\noptions:\n");
        print_opts(out, c->opts, w);
    }
    fprintf(out, "\nglobal options:\n");
    print_opts(out, global_opts, w);
    if (c->more)
        fprintf(out, "\n%s\n", c->more);
    fprintf(out, "\nexample:\n  %s\n", c->example);
}

static int cmd_help(struct cli_ctx *c)
{
    if (cli_flag(c, "--all")) {
        for (size_t i = 0; i < DG_ARRAY_LEN(commands); i++) {
            printf("%s## dirigent %s\n\n```text\n", i ? "\n" : "", commands[i].name);
            print_usage(stdout, &commands[i]);
            printf("```\n");
        }
        return 0;
    }
    if (c->nargs == 0) {
        print_usage(stdout, NULL);
        return 0;
    }
    char name[256] = "";
    for (int i = 0; i < c->nargs; i++)
        snprintf(name + strlen(name), sizeof(name) - strlen(name), "%s%s", i ? " " : "",
                 c->args[i]);
    const struct cli_cmd *cmd = find_cmd(name);
    if (!cmd)
        return cli_usage_error(c, "no command '%s' (see dirigent help)", name);
    print_usage(stdout, cmd);
    return 0;
}

/* ---- parsing and dispatch --------------------------------------------------------------- */

/* argv -> ctx. Returns -1 when parsed (then *help says whether usage was asked for), else the
 * exit status of a usage error. */
static int parse(int argc, char **argv, struct cli_ctx *c, bool *help)
{
    const struct cli_cmd *cmd = NULL;
    bool leaf = false, dashdash = false;
    char name[256] = "";
    c->args = dg_xcalloc((size_t)argc + 1, sizeof(char *));
    c->opts = dg_xcalloc((size_t)argc + 1, sizeof(*c->opts));
    /* --help anywhere wins: the rest is parsed only to know which command, never acted on */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            *help = true;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!dashdash && strcmp(a, "--") == 0) {
            dashdash = true;
            continue;
        }
        if (!dashdash && a[0] == '-' && a[1]) {
            if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
                continue;
            const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            const struct cli_opt *o = cmd ? find_opt(cmd->opts, a, len) : NULL;
            if (!o)
                o = find_opt(global_opts, a, len);
            if (!o) {
                if (*help)
                    continue;
                c->cmd = cmd;
                return cli_usage_error(c, "unknown option '%.*s' (see dirigent help%s%s)", (int)len,
                                       a, cmd ? " " : "", cmd ? cmd->name : "");
            }
            const char *val = "";
            if (o->arg) {
                if (eq)
                    val = eq + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else if (*help)
                    continue;
                else {
                    c->cmd = cmd;
                    return cli_usage_error(c, "%s needs a value (%s)", o->name, o->arg);
                }
            } else if (eq) {
                if (*help)
                    continue;
                c->cmd = cmd;
                return cli_usage_error(c, "%s takes no value, got '%s'", o->name, a);
            }
            bool global = o >= global_opts && o < global_opts + DG_ARRAY_LEN(global_opts);
            if (global && strcmp(o->name, "--cp") == 0)
                c->cp = val;
            else if (global && strcmp(o->name, "--dp") == 0)
                c->dp = val;
            else if (global && strcmp(o->name, "--json") == 0)
                c->json = true;
            else
                c->opts[c->nopts++] = (struct cli_optval){o, val};
            continue;
        }
        if (!leaf) {
            char next[256];
            snprintf(next, sizeof(next), "%s%s%s", name, name[0] ? " " : "", a);
            const struct cli_cmd *sub = find_cmd(next);
            if (sub) {
                cmd = sub;
                snprintf(name, sizeof(name), "%s", next);
                continue;
            }
            if (!cmd || !cmd->run) {
                c->cmd = cmd;
                if (cmd)
                    return cli_usage_error(c, "unknown sub-command '%s' (see dirigent help %s)", a,
                                           cmd->name);
                return cli_usage_error(c, "unknown command '%s' (see dirigent help)", a);
            }
            leaf = true;
        }
        c->args[c->nargs++] = argv[i];
    }
    c->cmd = cmd;
    return -1;
}

int cli_parse(int argc, char **argv, struct cli_ctx *c)
{
    bool help = false;
    int rc = parse(argc, argv, c, &help);
    if (rc >= 0)
        return rc;
    if (help) {
        print_usage(stdout, c->cmd);
        return 0;
    }
    if (!c->cmd) {
        print_usage(stderr, NULL);
        return CLI_USAGE;
    }
    if (!c->cmd->run)
        return cli_usage_error(c, "expected a sub-command (see dirigent help %s)", c->cmd->name);
    if (c->nargs < c->cmd->min_args)
        return cli_usage_error(c, "expected %s (see dirigent help %s)", c->cmd->args, c->cmd->name);
    if (c->nargs > c->cmd->max_args)
        return cli_usage_error(c, "unexpected argument '%s' (see dirigent help %s)",
                               c->args[c->cmd->max_args], c->cmd->name);
    for (const struct cli_opt *o = c->cmd->opts; o && o->name; o++)
        if (o->required && !cli_get(c, o->name))
            return cli_usage_error(c, "%s %s is required (see dirigent help %s)", o->name, o->arg,
                                   c->cmd->name);
    return -1;
}
