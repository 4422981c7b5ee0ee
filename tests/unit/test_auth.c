/*
 * test_auth.c: the cluster key and its credentials (lib/auth.c), and the HTTP server's auth
 * hook with route flags through real sockets: derive and verify, every tampering refused,
 * roles and names, key files and their modes, the loopback rule, and 401/403 answered as soon
 * as the headers are in (before a body that never comes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dirigent/auth.h"
#include "testlib.h"

static struct dg_auth_key key_a, key_b;

static int setup(void **state)
{
    struct dg_err err = {0};
    if (dg_auth_key_generate(&key_a, &err) < 0 || dg_auth_key_generate(&key_b, &err) < 0)
        return -1;
    return 0;
}

static void test_derive_verify(void **state)
{
    char cred[DG_AUTH_CRED_MAX];
    struct dg_err err = {0};
    assert_int_equal(dg_auth_credential(&key_a, DG_AUTH_NODE, "w1", cred, sizeof(cred), &err), 0);
    assert_true(strncmp(cred, "dg1.node.w1.", 12) == 0);
    assert_int_equal(strlen(cred), 12 + 64);
    struct dg_auth_identity id;
    assert_int_equal(dg_auth_verify(&key_a, dg_str_c(cred), &id, &err), 0);
    assert_int_equal(id.role, DG_AUTH_NODE);
    assert_string_equal(id.name, "w1");
    /* deterministic: the same key and identity give the same credential */
    char again[DG_AUTH_CRED_MAX];
    dg_auth_credential(&key_a, DG_AUTH_NODE, "w1", again, sizeof(again), &err);
    assert_string_equal(cred, again);
    /* another cluster's key: bad signature */
    assert_true(dg_auth_verify(&key_b, dg_str_c(cred), &id, &err) < 0);
    assert_non_null(strstr(err.msg, "bad credential signature"));
    dg_auth_credential(&key_a, DG_AUTH_OPERATOR, "admin", cred, sizeof(cred), &err);
    assert_int_equal(dg_auth_verify(&key_a, dg_str_c(cred), &id, &err), 0);
    assert_int_equal(id.role, DG_AUTH_OPERATOR);
    dg_auth_credential(&key_a, DG_AUTH_CP, "cp", cred, sizeof(cred), &err);
    assert_int_equal(dg_auth_verify(&key_a, dg_str_c(cred), &id, &err), 0);
    assert_int_equal(id.role, DG_AUTH_CP);
}

/* Flipping any one character of the MAC, or claiming another role or name with the same MAC,
 * is refused (the comparison covers every byte: CRYPTO_memcmp in dg_auth_verify). */
static void test_tampered(void **state)
{
    char cred[DG_AUTH_CRED_MAX], t[DG_AUTH_CRED_MAX];
    struct dg_err err = {0};
    struct dg_auth_identity id;
    dg_auth_credential(&key_a, DG_AUTH_NODE, "w1", cred, sizeof(cred), &err);
    size_t mac_at = strlen("dg1.node.w1.");
    for (size_t i = mac_at; i < strlen(cred); i++) {
        strcpy(t, cred);
        t[i] = t[i] == '0' ? '1' : '0';
        assert_true(dg_auth_verify(&key_a, dg_str_c(t), &id, &err) < 0);
        assert_non_null(strstr(err.msg, "bad credential signature"));
    }
    /* the MAC of node.w1 presented as node.w2, as operator.w1 and as cp.w1 */
    const char *mac = cred + mac_at;
    const char *claims[] = {"dg1.node.w2.", "dg1.operator.w1.", "dg1.cp.w1."};
    for (size_t i = 0; i < 3; i++) {
        snprintf(t, sizeof(t), "%s%s", claims[i], mac);
        assert_true(dg_auth_verify(&key_a, dg_str_c(t), &id, &err) < 0);
        assert_non_null(strstr(err.msg, "bad credential signature"));
    }
    /* malformed */
    const char *bad[] = {"",
                         "dg1",
                         "dg2.node.w1.00",
                         "dg1.node.w1",
                         "dg1.node..abcd",
                         "dg1.node.w 1.abcd",
                         "dg1.node.w1.zz",
                         "Bearer dg1.node.w1.00"};
    for (size_t i = 0; i < DG_ARRAY_LEN(bad); i++) {
        assert_true(dg_auth_verify(&key_a, dg_str_c(bad[i]), &id, &err) < 0);
        assert_non_null(strstr(err.msg, "malformed credential"));
    }
    snprintf(t, sizeof(t), "dg1.root.w1.%s", mac);
    assert_true(dg_auth_verify(&key_a, dg_str_c(t), &id, &err) < 0);
    assert_non_null(strstr(err.msg, "unknown credential role 'root'"));
    /* a MAC one character short or long */
    snprintf(t, sizeof(t), "%.*s", (int)strlen(cred) - 1, cred);
    assert_true(dg_auth_verify(&key_a, dg_str_c(t), &id, &err) < 0);
    snprintf(t, sizeof(t), "%s0", cred);
    assert_true(dg_auth_verify(&key_a, dg_str_c(t), &id, &err) < 0);
}

static void test_names_and_roles(void **state)
{
    struct dg_err err = {0};
    char cred[DG_AUTH_CRED_MAX];
    assert_int_equal(dg_auth_name_check("worker-1_a", &err), 0);
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = 0;
    const char *bad[] = {"", "a.b", "a b", "a\nb", "ä", long_name};
    for (size_t i = 0; i < DG_ARRAY_LEN(bad); i++) {
        assert_true(dg_auth_name_check(bad[i], &err) < 0);
        assert_non_null(strstr(err.msg, "credential name"));
        assert_true(dg_auth_credential(&key_a, DG_AUTH_NODE, bad[i], cred, sizeof(cred), &err) < 0);
    }
    long_name[63] = 0;
    assert_int_equal(dg_auth_credential(&key_a, DG_AUTH_NODE, long_name, cred, sizeof(cred), &err),
                     0);
    assert_true(dg_auth_credential(&key_a, DG_AUTH_ANON, "x", cred, sizeof(cred), &err) < 0);
    assert_int_equal(dg_auth_role_parse("node"), DG_AUTH_NODE);
    assert_int_equal(dg_auth_role_parse("operator"), DG_AUTH_OPERATOR);
    assert_int_equal(dg_auth_role_parse("cp"), DG_AUTH_CP);
    assert_int_equal(dg_auth_role_parse("admin"), -1);
    assert_string_equal(dg_auth_role_name(0), "anonymous");
}

static void test_key_files(void **state)
{
    char dir[] = "/tmp/dg-auth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], tok[256];
    snprintf(path, sizeof(path), "%s/cluster.key", dir);
    snprintf(tok, sizeof(tok), "%s/op.token", dir);
    struct dg_err err = {0};
    assert_int_equal(dg_auth_key_write(path, &key_a, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* exists: not overwritten */
    assert_true(dg_auth_key_write(path, &key_b, &err) < 0);
    struct dg_auth_key k;
    assert_int_equal(dg_auth_key_load(path, &k, &err), 0);
    assert_memory_equal(k.k, key_a.k, sizeof(k.k));
    /* readable by others: refused, naming the file and the fix */
    assert_int_equal(chmod(path, 0644), 0);
    assert_true(dg_auth_key_load(path, &k, &err) < 0);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(path, 0600), 0);
    /* not a key */
    FILE *f = fopen(tok, "w");
    fputs("not hex\n", f);
    fclose(f);
    chmod(tok, 0600);
    assert_true(dg_auth_key_load(tok, &k, &err) < 0);
    assert_non_null(strstr(err.msg, "hex characters"));
    char cred[DG_AUTH_CRED_MAX];
    assert_int_equal(dg_auth_cred_load(tok, cred, sizeof(cred), &err), 0);
    assert_string_equal(cred, "not hex");
    chmod(tok, 0640);
    assert_true(dg_auth_cred_load(tok, cred, sizeof(cred), &err) < 0);
    assert_non_null(strstr(err.msg, "chmod 600"));
    /* the daemons' rule: with a key, their own credential; without, loopback only */
    struct dg_auth_key dk;
    const char *lo[] = {"127.0.0.1", "::1", "127.0.0.2"};
    assert_int_equal(dg_auth_daemon_setup("test", path, DG_AUTH_NODE, "w1", lo, 3, &dk, cred, &err),
                     1);
    assert_true(strncmp(cred, "dg1.node.w1.", 12) == 0);
    assert_int_equal(dg_auth_daemon_setup("test", "", DG_AUTH_NODE, "w1", lo, 3, &dk, cred, &err),
                     0);
    const char *wide[] = {"127.0.0.1", "0.0.0.0"};
    assert_true(dg_auth_daemon_setup("test", NULL, DG_AUTH_NODE, "w1", wide, 2, &dk, cred, &err) <
                0);
    assert_non_null(strstr(err.msg, "authTokenFile"));
    assert_non_null(strstr(err.msg, "'0.0.0.0'"));
    unlink(path);
    unlink(tok);
    rmdir(dir);
}

static void test_loopback(void **state)
{
    const char *yes[] = {"127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1"};
    const char *no[] = {"0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "128.0.0.1", "::ffff:10.0.0.1",
                        "", "127.0.0.1.5",
                        /* getaddrinfo's shorthands (0 is 0.0.0.0) and a name below localhost:
                         * not loopback (the listeners take dotted quads only) */
                        "0", "127.1", "localhost.example.com", "::ffff:0.0.0.0"};
    for (size_t i = 0; i < DG_ARRAY_LEN(yes); i++)
        assert_true(dg_auth_host_is_loopback(yes[i]));
    for (size_t i = 0; i < DG_ARRAY_LEN(no); i++)
        assert_false(dg_auth_host_is_loopback(no[i]));
}

/* ---- the hook on a real server ------------------------------------------------------------ */

static void who(struct dg_http_req *r, void *ud)
{
    char buf[128];
    dg_http_respond_text(r, 200, "%s", dg_auth_who(r, buf, sizeof(buf)));
}

static void mount(struct dg_http_server *s, uv_loop_t *loop, void *ud)
{
    dg_auth_server(s, &key_a);
    dg_http_route(s, "POST", "/node", who, NULL, DG_HTTP_AUTH_NODE);
    dg_http_route(s, "GET", "/ops", who, NULL, DG_HTTP_AUTH_OPERATOR | DG_HTTP_AUTH_NODE);
    dg_http_route(s, "GET", "/open", who, NULL, 0);
}

static int call(int port, const char *method, const char *path, const char *cred, const char *extra,
                struct tl_resp *r)
{
    char req[1024];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%s%s\r\n", method, path,
             cred ? "Authorization: Bearer " : "", cred ? cred : "", cred ? "\r\n" : "",
             extra ? extra : "");
    return tl_roundtrip(port, req, r);
}

static void test_hook(void **state)
{
    struct tl_server *t = tl_server_start(NULL, mount, NULL);
    int port = tl_server_port(t);
    char node[DG_AUTH_CRED_MAX], op[DG_AUTH_CRED_MAX], other[DG_AUTH_CRED_MAX];
    struct dg_err err = {0};
    dg_auth_credential(&key_a, DG_AUTH_NODE, "w1", node, sizeof(node), &err);
    dg_auth_credential(&key_a, DG_AUTH_OPERATOR, "admin", op, sizeof(op), &err);
    dg_auth_credential(&key_b, DG_AUTH_NODE, "w1", other, sizeof(other), &err);
    struct tl_resp r;

    /* anonymous, with a body announced that never comes: refused at once, naming the role */
    assert_int_equal(call(port, "POST", "/node", NULL, "Content-Length: 100\r\n", &r), 401);
    assert_non_null(strstr(r.body, "no Authorization header"));
    assert_non_null(strstr(r.body, "node credential"));
    assert_string_equal(tl_resp_header(&r, "www-authenticate"), "Bearer");
    tl_resp_free(&r);
    assert_int_equal(call(port, "POST", "/node", op, "Content-Length: 0\r\n", &r), 403);
    assert_non_null(strstr(r.body, "credential role operator cannot call POST /node"));
    tl_resp_free(&r);
    assert_int_equal(call(port, "POST", "/node", other, "Content-Length: 0\r\n", &r), 401);
    assert_non_null(strstr(r.body, "bad credential signature"));
    tl_resp_free(&r);
    assert_int_equal(call(port, "POST", "/node", node, "Content-Length: 2\r\n\r\nhi", &r), 200);
    assert_string_equal(r.body, "node.w1\n");
    tl_resp_free(&r);
    assert_int_equal(call(port, "GET", "/ops", op, NULL, &r), 200);
    assert_string_equal(r.body, "operator.admin\n");
    tl_resp_free(&r);
    assert_int_equal(call(port, "GET", "/ops", node, NULL, &r), 200);
    tl_resp_free(&r);
    /* open: anonymous is fine, a bad credential is not */
    assert_int_equal(call(port, "GET", "/open", NULL, NULL, &r), 200);
    assert_string_equal(r.body, "anonymous\n");
    tl_resp_free(&r);
    assert_int_equal(call(port, "GET", "/open", other, NULL, &r), 401);
    tl_resp_free(&r);
    char req[512];
    snprintf(req, sizeof(req), "GET /ops HTTP/1.1\r\nHost: x\r\nAuthorization: Basic abc\r\n\r\n");
    assert_int_equal(tl_roundtrip(port, req, &r), 401);
    assert_non_null(strstr(r.body, "Bearer"));
    tl_resp_free(&r);
    tl_server_stop(t, 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derive_verify),   cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_names_and_roles), cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_loopback),        cmocka_unit_test(test_hook),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
