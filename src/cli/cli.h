/*
 * cli.h: what the dirigent CLI's command files share.
 */
#ifndef DIRIGENT_CLI_H
#define DIRIGENT_CLI_H

#include "dirigent/common.h"
#include "dirigent/http.h"

struct cli_result {
    bool done;
    int status;
    struct dg_buf body;
    char err[256];
};

/* One request, waited for on a private loop. Returns the status, or -1 with r->err set. */
int cli_request(const char *addr, const char *method, const char *path,
                const struct dg_http_header *hdrs, size_t n, const char *body,
                struct cli_result *r);
/* "dirigent: MESSAGE" on stderr; returns 1 (the exit status). */
int cli_fail(const char *fmt, ...) DG_PRINTF(1, 2);
/* The value of option `name` at argv[*i] (advancing *i), or NULL if argv[*i] is not it. */
const char *cli_opt(int *i, int argc, char **argv, const char *name);

int cli_load(int argc, char **argv, const char *cp, const char *dp, const char *fn_path, bool json);

#endif
