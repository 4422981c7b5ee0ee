/*
 * token.c: `dirigent token init` (a new cluster key) and `dirigent token create` (a credential
 * derived from it), for clusters started without `dirigent up` (docs/security.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dirigent/auth.h"

int cli_cmd_token_init(struct cli_ctx *c)
{
    const char *path = cli_get(c, "--key");
    struct dg_auth_key key;
    struct dg_err err = {0};
    if (dg_auth_key_generate(&key, &err) < 0 || dg_auth_key_write(path, &key, &err) < 0)
        return cli_fail("token init: %s", err.msg);
    fprintf(stderr,
            "dirigent: wrote a new cluster key to %s (mode 0600): set authTokenFile: %s "
            "on every daemon\n",
            path, path);
    return 0;
}

int cli_cmd_token_create(struct cli_ctx *c)
{
    const char *role_s = cli_get(c, "--role"), *name = cli_get(c, "--name");
    const char *out = cli_get(c, "--out");
    int role = dg_auth_role_parse(role_s);
    if (role < 0)
        return cli_usage_error(c, "--role: expected operator, node or cp, got '%s'", role_s);
    struct dg_err err = {0};
    if (dg_auth_name_check(name, &err) < 0)
        return cli_usage_error(c, "--name: %s", err.msg);
    struct dg_auth_key key;
    char cred[DG_AUTH_CRED_MAX];
    if (dg_auth_key_load(cli_get(c, "--key"), &key, &err) < 0 ||
        dg_auth_credential(&key, (unsigned)role, name, cred, sizeof(cred), &err) < 0)
        return cli_fail("token create: %s", err.msg);
    if (!out) {
        printf("%s\n", cred);
        return 0;
    }
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1)
        return cli_fail("token create: --out %s: %s", out, strerror(errno));
    size_t len = strlen(cred);
    cred[len] = '\n';
    ssize_t w = write(fd, cred, len + 1);
    if (close(fd) == -1 || w != (ssize_t)len + 1)
        return cli_fail("token create: --out %s: write failed", out);
    return 0;
}
