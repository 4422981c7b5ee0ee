/*
 * cli.c: what the command files share (cli.h): a handler's view of its parsed options, usage
 * and action errors in the CLI's wording, the blocking request and how its answer is printed,
 * tables sized to their content, and two formatters. It knows no command: the table is in
 * commands.c, the handlers in their own files.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dirigent/auth.h"

/* ---- options ---------------------------------------------------------------------------- */

const char *cli_get(const struct cli_ctx *c, const char *name)
{
    for (int i = c->nopts; i-- > 0;)
        if (strcmp(c->opts[i].opt->name, name) == 0)
            return c->opts[i].val;
    return NULL;
}

bool cli_flag(const struct cli_ctx *c, const char *name)
{
    return cli_get(c, name) != NULL;
}

int cli_usage_error(const struct cli_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dirigent: ");
    if (c && c->cmd)
        fprintf(stderr, "%s: ", c->cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_USAGE;
}

int cli_int(const struct cli_ctx *c, const char *name, int64_t def, int64_t lo, int64_t hi,
            int64_t *out)
{
    const char *v = cli_get(c, name);
    *out = def;
    if (!v)
        return 0;
    if (!dg_str_to_i64(dg_str_c(v), out) || *out < lo || *out > hi)
        return cli_usage_error(c, "%s: expected an integer %lld..%lld, got '%s'", name,
                               (long long)lo, (long long)hi, v);
    return 0;
}

int cli_double(const struct cli_ctx *c, const char *name, double def, double lo, bool lo_incl,
               double hi, double *out)
{
    const char *v = cli_get(c, name);
    *out = def;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    if (!*v || *end || errno || !(lo_incl ? *out >= lo : *out > lo) || !(*out <= hi))
        return cli_usage_error(c, "%s: expected a number %s %g and at most %g, got '%s'", name,
                               lo_incl ? "at least" : "above", lo, hi, v);
    return 0;
}

/* ---- requests --------------------------------------------------------------------------- */

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct cli_result *r = ud;
    r->done = true;
    if (resp) {
        r->status = resp->status;
        dg_buf_append(&r->body, resp->body.ptr, resp->body.len);
    } else {
        snprintf(r->err, sizeof(r->err), "%s", err->msg);
    }
}

/* The operator credential every control-plane request carries (cli_token_setup); NULL: none. */
static char *cli_token;

void cli_set_token(const char *token)
{
    free(cli_token);
    cli_token = token ? dg_xstrdup(token) : NULL;
}

const char *cli_get_token(void)
{
    return cli_token;
}

int cli_token_setup(const struct cli_ctx *c)
{
    char cred[DG_AUTH_CRED_MAX];
    struct dg_err err = {0};
    const char *env = getenv(DG_AUTH_CRED_ENV);
    const char *file = cli_get(c, "--token-file");
    if (env && env[0]) {
        cli_set_token(env);
        return 0;
    }
    if (file) {
        if (dg_auth_cred_load(file, cred, sizeof(cred), &err) < 0)
            return cli_fail("--token-file: %s", err.msg);
        cli_set_token(cred);
        return 0;
    }
    /* the one `dirigent up` made for the state directory, when there is one */
    const char *state = cli_get(c, "--state-dir") ? cli_get(c, "--state-dir") : "data/local";
    char *path = dg_xasprintf("%s/operator.token", state);
    if (access(path, F_OK) == 0) {
        if (dg_auth_cred_load(path, cred, sizeof(cred), &err) < 0)
            fprintf(stderr, "dirigent: warning: %s (not used)\n", err.msg);
        else
            cli_set_token(cred);
    }
    free(path);
    return 0;
}

static int request(const char *addr, const char *method, const char *path,
                   const struct dg_http_header *hdrs, size_t n, const char *body,
                   struct cli_result *r, bool with_token)
{
    memset(r, 0, sizeof(*r));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_err err = {0};
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.bearer = with_token ? cli_token : NULL;
    struct dg_http_pool *p = dg_http_pool_new_addr(&loop, addr, &o, &err);
    if (!p) {
        snprintf(r->err, sizeof(r->err), "%s", err.msg);
        uv_loop_close(&loop);
        dg_buf_append(&r->body, "", 0);
        return -1;
    }
    static const struct dg_http_client_cbs cbs = {.on_done = on_done};
    dg_http_request(p, method, path, hdrs, n, body, body ? strlen(body) : 0, &cbs, r);
    while (!r->done)
        uv_run(&loop, UV_RUN_ONCE);
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (!r->body.data)
        dg_buf_append(&r->body, "", 0);
    return r->err[0] ? -1 : r->status;
}

int cli_request(const char *addr, const char *method, const char *path,
                const struct dg_http_header *hdrs, size_t n, const char *body, struct cli_result *r)
{
    return request(addr, method, path, hdrs, n, body, r, true);
}

int cli_request_anon(const char *addr, const char *method, const char *path,
                     const struct dg_http_header *hdrs, size_t n, const char *body,
                     struct cli_result *r)
{
    return request(addr, method, path, hdrs, n, body, r, false);
}

void cli_transport_error(char *out, size_t n, const char *role, const char *addr, const char *msg)
{
    if (strstr(msg, "connection refused"))
        snprintf(out, n,
                 "cannot reach the %s at %s: connection refused; is a cluster running? Start "
                 "one with `dirigent up` (or `make up`), or point %s at yours",
                 role, addr, strstr(role, "data") ? "--dp HOST:PORT" : "--cp HOST:PORT");
    else
        snprintf(out, n, "the %s at %s: %s", role, addr, msg);
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dirigent: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_answer(const struct cli_ctx *c, struct cli_result *r, int status, const char *role,
               void (*table)(json_t *))
{
    if (status < 0) {
        char msg[768];
        cli_transport_error(msg, sizeof(msg), role, strstr(role, "data") ? c->dp : c->cp, r->err);
        dg_buf_free(&r->body);
        return cli_fail("%s: %s", c->cmd->name, msg);
    }
    if (status >= 300) {
        fprintf(stderr, "dirigent: %s: %d: %s", c->cmd->name, status, r->body.data);
        if (r->body.len && r->body.data[r->body.len - 1] != '\n')
            fputc('\n', stderr);
        dg_buf_free(&r->body);
        return 1;
    }
    json_t *j = NULL;
    if (c->json || !table || dg_json_parse(r->body.data, r->body.len, &j, NULL) < 0) {
        fputs(r->body.data, stdout);
        if (r->body.len && r->body.data[r->body.len - 1] != '\n')
            putchar('\n');
    } else {
        table(j);
    }
    json_decref(j);
    dg_buf_free(&r->body);
    return 0;
}

/* ---- tables ----------------------------------------------------------------------------- */

static void table_grow(struct cli_table *t)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cells = dg_xrealloc(t->cells, t->cap * t->ncols * sizeof(char *));
        t->note = dg_xrealloc(t->note, t->cap * sizeof(bool));
    }
}

static void table_vrow(struct cli_table *t, va_list ap)
{
    table_grow(t);
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + i] = dg_xstrdup(s ? s : "-");
    }
    t->note[t->nrows++] = false;
}

void cli_table_init(struct cli_table *t, size_t ncols, ...)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    va_list ap;
    va_start(ap, ncols);
    table_vrow(t, ap);
    va_end(ap);
}

void cli_table_row(struct cli_table *t, ...)
{
    va_list ap;
    va_start(ap, t);
    table_vrow(t, ap);
    va_end(ap);
}

void cli_table_note(struct cli_table *t, const char *fmt, ...)
{
    table_grow(t);
    va_list ap;
    va_start(ap, fmt);
    struct dg_buf b = {0};
    dg_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    dg_buf_append(&b, "", 1);
    t->cells[t->nrows * t->ncols] = b.data;
    for (size_t i = 1; i < t->ncols; i++)
        t->cells[t->nrows * t->ncols + i] = NULL;
    t->note[t->nrows++] = true;
}

void cli_table_print(struct cli_table *t, FILE *out)
{
    size_t *w = dg_xcalloc(t->ncols, sizeof(size_t));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols && !t->note[r]; i++)
            w[i] = DG_MAX(w[i], strlen(t->cells[r * t->ncols + i]));
    for (size_t r = 0; r < t->nrows; r++) {
        if (t->note[r]) {
            fprintf(out, "%s\n", t->cells[r * t->ncols]);
        } else {
            for (size_t i = 0; i < t->ncols; i++) {
                if (i + 1 < t->ncols)
                    fprintf(out, "%-*s  ", (int)w[i], t->cells[r * t->ncols + i]);
                else
                    fprintf(out, "%s\n", t->cells[r * t->ncols + i]);
            }
        }
        for (size_t i = 0; i < t->ncols; i++)
            free(t->cells[r * t->ncols + i]);
    }
    free(w);
    free(t->cells);
    free(t->note);
    memset(t, 0, sizeof(*t));
}

void cli_fmt_bounds(char *out, size_t n, long long lower, long long upper)
{
    if (upper >= 2147483647)
        snprintf(out, n, "%lld..unbounded", lower);
    else
        snprintf(out, n, "%lld..%lld", lower, upper);
}

char *cli_form_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = dg_xmalloc(3 * strlen(s) + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~/:", *p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}
