/*
 * cli.h: what the dirigent CLI's command files share: the command table's types, the parsed
 * command line a handler receives, a blocking request, and tables sized to their content.
 *
 * One table (commands.c) lists every command and sub-command with its synopsis, options (with
 * defaults), an example and its handler; the parser, `--help`, `dirigent help` and docs/cli.md
 * are all made from it, so dispatch and help cannot drift apart. The helpers are in cli.c, the
 * handlers (declared at the end) one file each; none of them includes the table.
 */
#ifndef DIRIGENT_CLI_H
#define DIRIGENT_CLI_H

#include <stdio.h>

#include "dirigent/common.h"
#include "dirigent/http.h"
#include "dirigent/json.h"

/* Exit statuses: 0 done, 1 the action failed, 2 the command line was wrong. */
#define CLI_USAGE 2

/* One option of a command. `arg` is the value's name ("N"), NULL for a flag. */
struct cli_opt {
    const char *name; /* "--max" */
    const char *arg;
    const char *def; /* the default as the user reads it, or NULL */
    const char *help;
    bool required, repeat;
};

struct cli_ctx;

struct cli_cmd {
    const char *name; /* "function deploy"; a group ("function") has no handler */
    const char *args; /* positional arguments of the synopsis: "NAME", "[FUNCTION]" */
    int min_args, max_args;
    const char *summary;        /* one line */
    const struct cli_opt *opts; /* ends with {0}; NULL: none */
    const char *example;
    const char *more; /* a paragraph after the options, or NULL */
    int (*run)(struct cli_ctx *c);
};

/* The parsed command line a handler gets (all strings borrowed from argv). */
struct cli_ctx {
    const struct cli_cmd *cmd;
    const char *cp, *dp; /* the global --cp and --dp */
    bool json;
    const char *self_dir, *src_dir; /* where the binaries are; the source tree (configs) */
    int nargs;
    char **args;
    int nopts;
    struct cli_optval {
        const struct cli_opt *opt;
        const char *val; /* "" for a flag */
    } * opts;
};

/* The last value given for option `name`, or NULL. */
const char *cli_get(const struct cli_ctx *c, const char *name);
bool cli_flag(const struct cli_ctx *c, const char *name);
/* Option `name` as an integer lo..hi (its default `def` if absent) into *out; on a bad value
 * prints "CMD: NAME: expected an integer LO..HI, got 'V'" and returns CLI_USAGE, else 0. */
int cli_int(const struct cli_ctx *c, const char *name, int64_t def, int64_t lo, int64_t hi,
            int64_t *out);
/* The same for a number lo < v <= hi (lo_incl: lo <= v). */
int cli_double(const struct cli_ctx *c, const char *name, double def, double lo, bool lo_incl,
               double hi, double *out);
/* "dirigent: CMD: MESSAGE" on stderr for a wrong command line; returns CLI_USAGE. */
int cli_usage_error(const struct cli_ctx *c, const char *fmt, ...) DG_PRINTF(2, 3);

struct cli_result {
    bool done;
    int status;
    struct dg_buf body;
    char err[512];
};

/* One request, waited for on a private loop. Returns the status, or -1 with r->err set; a
 * refused connection's error names the address and how to start a cluster (`role` says what
 * was asked: "control plane", "data plane"). */
int cli_request(const char *addr, const char *method, const char *path,
                const struct dg_http_header *hdrs, size_t n, const char *body,
                struct cli_result *r);
/* The same without the operator credential: for the data plane's proxy (a credential would
 * reach the function) and open health checks. */
int cli_request_anon(const char *addr, const char *method, const char *path,
                     const struct dg_http_header *hdrs, size_t n, const char *body,
                     struct cli_result *r);
/* The operator credential cli_request sends (docs/security.md): $DIRIGENT_TOKEN, else
 * --token-file FILE, else STATE/operator.token when present (--state-dir, default data/local).
 * Returns 0, or 1 after printing why (an unreadable --token-file). */
int cli_token_setup(const struct cli_ctx *c);
void cli_set_token(const char *token); /* copied; NULL: none */
const char *cli_get_token(void);
/* The error text for a transport failure `msg` talking to `role` at `addr`, with the fix. */
void cli_transport_error(char *out, size_t n, const char *role, const char *addr, const char *msg);
/* "dirigent: MESSAGE" on stderr; returns 1 (the exit status). */
int cli_fail(const char *fmt, ...) DG_PRINTF(1, 2);
/* 0 when `name` is a function name as the control plane registers them, else the usage error
 * (printed) and CLI_USAGE. */
int cli_check_name(const struct cli_ctx *c, const char *name);
/* Print an API answer: JSON as is with --json (or without `table`), else through `table`.
 * `role` names the daemon for transport errors. Returns the exit status. */
int cli_answer(const struct cli_ctx *c, struct cli_result *r, int status, const char *role,
               void (*table)(json_t *));

/* A table whose columns are as wide as their content. Rows are copied. A note is a line of
 * its own printed under the row before it. */
struct cli_table {
    size_t ncols, nrows, cap;
    char **cells; /* ncols per row; a note row: cells[0] the text, the rest NULL */
    bool *note;
};
void cli_table_init(struct cli_table *t, size_t ncols, ...);
void cli_table_row(struct cli_table *t, ...);
void cli_table_note(struct cli_table *t, const char *fmt, ...) DG_PRINTF(2, 3);
/* Prints and frees. */
void cli_table_print(struct cli_table *t, FILE *out);

/* A function's bounds as the user reads them: "0..unbounded" for 2147483647. */
void cli_fmt_bounds(char *out, size_t n, long long lower, long long upper);
/* `s` as a form value (application/x-www-form-urlencoded: a path with '+', '&', '%' or ' '
 * stays itself at the control plane). Returns a new string. */
char *cli_form_escape(const char *s);

/* Handlers (one file each). */
int cli_cmd_up(struct cli_ctx *c);
int cli_cmd_deploy(struct cli_ctx *c);
int cli_cmd_list(struct cli_ctx *c);
int cli_cmd_get(struct cli_ctx *c);
int cli_cmd_delete(struct cli_ctx *c);
int cli_cmd_invoke(struct cli_ctx *c);
int cli_cmd_status(struct cli_ctx *c);
int cli_cmd_haproxy_config(struct cli_ctx *c);
int cli_cmd_token_init(struct cli_ctx *c);
int cli_cmd_token_create(struct cli_ctx *c);
int cli_cmd_load_burst(struct cli_ctx *c);
int cli_cmd_load_rps(struct cli_ctx *c);
int cli_cmd_load_trace(struct cli_ctx *c);
int cli_cmd_load_summarize(struct cli_ctx *c);

/* The function table of `function list`/`get` and `status`. */
void cli_fn_table(json_t *list);

/* haproxy.c: HAProxy's config in front of data planes and registration servers. */
struct cli_hx_conf {
    const char *invocations, *registration, *socket, *backend;
    const char *tls_cert; /* a PEM file (certificate and key): both frontends bind with TLS */
    char **cps;           /* the CPs' registration servers */
    size_t ncps;
};
void cli_haproxy_config(FILE *out, const struct cli_hx_conf *c);
/* "a,b,c" into a NULL-terminated vector of at most cap entries (v has cap + 1 slots; the
 * strings point into `s`, which is modified). */
size_t cli_split_list(char *s, char **v, size_t cap);

#endif
