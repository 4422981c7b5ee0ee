/*
 * auth.c: the cluster key, credentials derived from it, and the HTTP servers' auth hook
 * (auth.h).
 *
 * A credential is "dg1.ROLE.NAME.MAC" with MAC = hex HMAC-SHA256(key, "ROLE.NAME"): no state
 * on either side, nothing to distribute but the key (to daemons) or one credential (to a
 * user). Verification parses the three parts, recomputes the MAC over what the credential
 * claims and compares the 32 bytes with CRYPTO_memcmp, whose time does not depend on where
 * the bytes differ. Names are restricted to [A-Za-z0-9_-] so "ROLE.NAME" has one reading.
 *
 * Key and token files must not be readable by group or others: a daemon refuses to start
 * with one (fix: chmod 600), as ssh does with private keys.
 */
#include "dirigent/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dirigent/log.h"

#define MAC_BYTES 32

static const char *const role_names[] = {"node", "cp", "operator"};
static const unsigned role_bits[] = {DG_AUTH_NODE, DG_AUTH_CP, DG_AUTH_OPERATOR};

const char *dg_auth_role_name(unsigned role)
{
    for (size_t i = 0; i < DG_ARRAY_LEN(role_bits); i++)
        if (role == role_bits[i])
            return role_names[i];
    return "anonymous";
}

int dg_auth_role_parse(const char *s)
{
    for (size_t i = 0; i < DG_ARRAY_LEN(role_names); i++)
        if (strcmp(s, role_names[i]) == 0)
            return (int)role_bits[i];
    return -1;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static bool name_ok(struct dg_str n)
{
    if (n.len == 0 || n.len > DG_AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n.len; i++)
        if (!name_char(n.ptr[i]))
            return false;
    return true;
}

int dg_auth_name_check(const char *name, struct dg_err *err)
{
    if (!name_ok(dg_str_c(name)))
        return dg_err_set(err, DG_E_INVAL,
                          "credential name '%.80s': expected 1..%d characters of A-Z a-z 0-9 _ -",
                          name, DG_AUTH_NAME_MAX);
    return 0;
}

/* ---- key files -------------------------------------------------------------------------- */

int dg_auth_key_generate(struct dg_auth_key *key, struct dg_err *err)
{
    size_t got = 0;
    while (got < sizeof(key->k)) {
        ssize_t n = getrandom(key->k + got, sizeof(key->k) - got, 0);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return dg_err_set(err, -errno, "getrandom: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    return 0;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = 0;
}

static bool from_hex(const char *s, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = dg_hex_digit((unsigned char)s[2 * i]),
            lo = dg_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

int dg_auth_key_write(const char *path, const struct dg_auth_key *key, struct dg_err *err)
{
    char text[2 * DG_AUTH_KEY_BYTES + 2];
    to_hex(key->k, sizeof(key->k), text);
    text[2 * DG_AUTH_KEY_BYTES] = '\n';
    text[2 * DG_AUTH_KEY_BYTES + 1] = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1)
        return dg_err_set(err, -errno, "key file '%s': %s", path, strerror(errno));
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int e = errno;
    if (close(fd) == -1 || w != (ssize_t)len) {
        unlink(path);
        return dg_err_set(err, w == -1 ? -e : DG_E_INVAL, "key file '%s': write failed", path);
    }
    return 0;
}

/* Read the first line of a secret file (at most size-1 bytes) after checking its mode. */
static int read_secret(const char *what, const char *path, char *out, size_t size,
                       struct dg_err *err)
{
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return dg_err_set(err, -errno, "%s '%s': %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dg_err_set(err, DG_E_INVAL, "%s '%s': not a regular file", what, path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return dg_err_set(err, DG_E_INVAL,
                          "%s '%s' is accessible by group or others (mode %04o): it is a secret; "
                          "chmod 600 %s",
                          what, path, (unsigned)(st.st_mode & 07777), path);
    }
    ssize_t n = read(fd, out, size - 1);
    int e = errno;
    close(fd);
    if (n == -1)
        return dg_err_set(err, -e, "%s '%s': %s", what, path, strerror(e));
    out[n] = 0;
    out[strcspn(out, "\r\n")] = 0;
    return 0;
}

int dg_auth_key_load(const char *path, struct dg_auth_key *key, struct dg_err *err)
{
    char text[2 * DG_AUTH_KEY_BYTES + 8] = {0};
    if (read_secret("key file", path, text, sizeof(text), err) < 0)
        return err->code;
    bool ok = from_hex(text, strlen(text), key->k, sizeof(key->k));
    OPENSSL_cleanse(text, sizeof(text));
    if (!ok)
        return dg_err_set(err, DG_E_INVAL,
                          "key file '%s': expected %d hex characters (make one with: dirigent "
                          "token init --key %s)",
                          path, 2 * DG_AUTH_KEY_BYTES, path);
    return 0;
}

int dg_auth_cred_load(const char *path, char *out, size_t size, struct dg_err *err)
{
    if (read_secret("token file", path, out, size, err) < 0)
        return err->code;
    if (!out[0])
        return dg_err_set(err, DG_E_INVAL, "token file '%s' is empty", path);
    return 0;
}

/* ---- credentials ------------------------------------------------------------------------ */

static void mac(const struct dg_auth_key *key, struct dg_str role, struct dg_str name,
                unsigned char out[MAC_BYTES])
{
    char msg[16 + DG_AUTH_NAME_MAX + 2];
    int n =
        snprintf(msg, sizeof(msg), "%.*s.%.*s", (int)role.len, role.ptr, (int)name.len, name.ptr);
    unsigned len = MAC_BYTES;
    if (!HMAC(EVP_sha256(), key->k, (int)sizeof(key->k), (const unsigned char *)msg, (size_t)n, out,
              &len))
        abort(); /* HMAC-SHA256 has no failure mode with these arguments */
}

int dg_auth_credential(const struct dg_auth_key *key, unsigned role, const char *name, char *out,
                       size_t size, struct dg_err *err)
{
    const char *rn = dg_auth_role_name(role);
    if (role == DG_AUTH_ANON || strcmp(rn, "anonymous") == 0)
        return dg_err_set(err, DG_E_INVAL, "credential role: expected node, cp or operator");
    if (dg_auth_name_check(name, err) < 0)
        return err->code;
    unsigned char m[MAC_BYTES];
    mac(key, dg_str_c(rn), dg_str_c(name), m);
    char hex[2 * MAC_BYTES + 1];
    to_hex(m, sizeof(m), hex);
    int n = snprintf(out, size, "dg1.%s.%s.%s", rn, name, hex);
    if (n < 0 || (size_t)n >= size)
        return dg_err_set(err, DG_E_INVAL, "credential: buffer too small");
    return 0;
}

int dg_auth_verify(const struct dg_auth_key *key, struct dg_str cred, struct dg_auth_identity *id,
                   struct dg_err *err)
{
    static const char malformed[] = "malformed credential (expected dg1.ROLE.NAME.MAC)";
    if (cred.len < 4 || memcmp(cred.ptr, "dg1.", 4) != 0)
        return dg_err_set(err, DG_E_INVAL, "%s", malformed);
    const char *p = cred.ptr + 4, *end = cred.ptr + cred.len;
    const char *d1 = memchr(p, '.', (size_t)(end - p));
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2)
        return dg_err_set(err, DG_E_INVAL, "%s", malformed);
    struct dg_str role = {p, (size_t)(d1 - p)}, name = {d1 + 1, (size_t)(d2 - d1 - 1)},
                  hex = {d2 + 1, (size_t)(end - d2 - 1)};
    int bit = -1;
    for (size_t i = 0; i < DG_ARRAY_LEN(role_names); i++)
        if (dg_str_eq(role, role_names[i]))
            bit = (int)role_bits[i];
    if (bit < 0)
        return dg_err_set(err, DG_E_INVAL, "unknown credential role '%.*s'",
                          (int)DG_MIN(role.len, 20), role.ptr);
    unsigned char given[MAC_BYTES], want[MAC_BYTES];
    if (!name_ok(name) || !from_hex(hex.ptr, hex.len, given, sizeof(given)))
        return dg_err_set(err, DG_E_INVAL, "%s", malformed);
    mac(key, role, name, want);
    if (CRYPTO_memcmp(given, want, sizeof(want)) != 0)
        return dg_err_set(err, DG_E_INVAL,
                          "bad credential signature (made with another cluster's key?)");
    id->role = (unsigned)bit;
    memcpy(id->name, name.ptr, name.len);
    id->name[name.len] = 0;
    return 0;
}

bool dg_auth_host_is_loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
        return true;
    const char *v4 = host;
    if (strncasecmp(host, "::ffff:", 7) == 0)
        v4 = host + 7;
    unsigned char a[4];
    if (inet_pton(AF_INET, v4, a) == 1)
        return a[0] == 127;
    return false;
}

/* ---- HTTP glue -------------------------------------------------------------------------- */

const char *dg_auth_who(const struct dg_http_req *r, char *buf, size_t size)
{
    const char *name;
    unsigned role = dg_http_req_identity(r, &name);
    if (role == DG_AUTH_ANON)
        snprintf(buf, size, "anonymous");
    else
        snprintf(buf, size, "%s.%s", dg_auth_role_name(role), name);
    return buf;
}

void dg_auth_audit(const struct dg_http_req *r, const char *fmt, ...)
{
    char who[DG_AUTH_NAME_MAX + 16], what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    dg_log_always("audit", "who=%s from=%s %s", dg_auth_who(r, who, sizeof(who)),
                  dg_http_req_peer(r), what);
}

/* "node", "node or cp", "cp or operator" ... */
static void roles_text(unsigned need, char *buf, size_t size)
{
    buf[0] = 0;
    size_t n = 0;
    for (size_t i = 0; i < DG_ARRAY_LEN(role_bits); i++) {
        if (!(need & role_bits[i]))
            continue;
        int w = snprintf(buf + n, size - n, "%s%s", n ? " or " : "", role_names[i]);
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
}

static int auth_hook(struct dg_http_req *r, unsigned need, void *ud, char *msg, size_t size)
{
    const struct dg_auth_key *key = ud;
    struct dg_str h = dg_http_req_header(r, "authorization");
    struct dg_str path = dg_http_req_path(r);
    const char *method = dg_http_req_method(r);
    char roles[64];
    unsigned allowed = need & DG_HTTP_AUTH_ROLES;
    roles_text(allowed, roles, sizeof(roles));
    int status = 0;
    if (!h.ptr) {
        if (!allowed || (need & DG_HTTP_AUTH_ANON))
            return 0;
        snprintf(msg, size,
                 "no Authorization header: %s %.*s needs a %s credential (Authorization: Bearer "
                 "CRED; daemons: authTokenFile, the CLI: DIRIGENT_TOKEN or --token-file)",
                 method, (int)DG_MIN(path.len, 100), path.ptr, roles);
        status = 401;
    } else if (h.len < 7 || strncasecmp(h.ptr, "Bearer ", 7) != 0) {
        snprintf(msg, size, "Authorization header: expected 'Bearer CRED'");
        status = 401;
    } else {
        struct dg_str cred = {h.ptr + 7, h.len - 7};
        while (cred.len && cred.ptr[0] == ' ')
            cred.ptr++, cred.len--;
        struct dg_auth_identity id = {0};
        struct dg_err err = {0};
        if (dg_auth_verify(key, cred, &id, &err) < 0) {
            snprintf(msg, size, "%s", err.msg);
            status = 401;
        } else {
            dg_http_req_set_identity(r, id.role, id.name);
            if (allowed && !(allowed & id.role)) {
                snprintf(msg, size, "credential role %s cannot call %s %.*s (it needs %s)",
                         dg_auth_role_name(id.role), method, (int)DG_MIN(path.len, 100), path.ptr,
                         roles);
                status = 403;
            }
        }
    }
    if (status)
        dg_auth_audit(r, "refused %d %s %.*s: %s", status, method, (int)DG_MIN(path.len, 100),
                      path.ptr, msg);
    return status;
}

void dg_auth_server(struct dg_http_server *s, const struct dg_auth_key *key)
{
    dg_http_server_set_auth(s, auth_hook, (void *)key);
}

int dg_auth_daemon_setup(const char *prog, const char *key_file, unsigned role, const char *name,
                         const char *const *hosts, size_t n, struct dg_auth_key *key, char *cred,
                         struct dg_err *err)
{
    if (key_file && key_file[0]) {
        if (dg_auth_key_load(key_file, key, err) < 0 ||
            dg_auth_credential(key, role, name, cred, DG_AUTH_CRED_MAX, err) < 0)
            return dg_err_wrap(err, "authTokenFile");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!dg_auth_host_is_loopback(hosts[i]))
            return dg_err_set(err, DG_E_INVAL,
                              "authTokenFile: not set, and the internal API listens on '%s', "
                              "which is not loopback: anyone who reaches it could take the "
                              "cluster over. Create a cluster key (dirigent token init --key "
                              "FILE, mode 0600) and set authTokenFile: FILE on every daemon, "
                              "or listen on 127.0.0.1",
                              hosts[i]);
    dg_log(DG_LOG_WARN, prog,
           "internal API unauthenticated (loopback only): set authTokenFile to require "
           "credentials");
    return 0;
}
