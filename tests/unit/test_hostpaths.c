/*
 * test_hostpaths.c: what a create may name on the worker's host (src/worker/hostpaths.c):
 * allowed directories (a sibling sharing the prefix, '..', '.', '//', symlinks out and in),
 * the "loopback" registry entry (names a resolver would look up are not loopback) and the
 * process runtime's check of a dropped process's ids (supplementary groups included).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostpaths.h"

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static void test_dirs(void **state)
{
    (void)state;
    char tmp[] = "/tmp/dg-test-hostpaths.XXXXXX", p[PATH_MAX], q[PATH_MAX], res[PATH_MAX];
    assert_non_null(mkdtemp(tmp));
    snprintf(p, sizeof(p), "%s/allowed", tmp);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/allowed-evil", tmp);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/allowed/fn", tmp);
    touch(p);
    snprintf(p, sizeof(p), "%s/allowed-evil/sh", tmp);
    touch(p);
    snprintf(p, sizeof(p), "%s/allowed/out", tmp);
    snprintf(q, sizeof(q), "%s/allowed-evil/sh", tmp);
    assert_int_equal(symlink(q, p), 0);
    snprintf(p, sizeof(p), "%s/allowed/in", tmp);
    assert_int_equal(symlink("fn", p), 0);

    struct dg_strlist l = {0};
    snprintf(p, sizeof(p), "%s/allowed/", tmp); /* a trailing slash as configured */
    dg_strlist_push(&l, strdup(p));
    struct wk_dirs d;
    struct dg_err err;
    assert_int_equal(wk_dirs_init(&d, &l, "processAllowedDirs", &err), 0);

    snprintf(p, sizeof(p), "%s/allowed/fn", tmp);
    assert_int_equal(wk_dirs_check(&d, p, res, sizeof(res)), WK_PATH_OK);
    assert_string_equal(res, p);
    snprintf(p, sizeof(p), "%s/allowed/in", tmp); /* a link to an allowed file: its target */
    assert_int_equal(wk_dirs_check(&d, p, res, sizeof(res)), WK_PATH_OK);
    snprintf(q, sizeof(q), "%s/allowed/fn", tmp);
    assert_string_equal(res, q);
    snprintf(p, sizeof(p), "%s/allowed/missing", tmp);
    assert_int_equal(wk_dirs_check(&d, p, res, sizeof(res)), WK_PATH_MISSING);
    /* refused: a sibling sharing the prefix, a link out, '..', '.', '//', relative */
    const char *bad[] = {"/allowed-evil/sh", "/allowed/out", "/allowed/../allowed-evil/sh",
                         "/allowed/./fn",    "/allowed//fn", "/allowed/..",
                         "/allowed-evil",    "/allowedfn"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", tmp, bad[i]);
        assert_int_equal(wk_dirs_check(&d, p, res, sizeof(res)), WK_PATH_REFUSED);
    }
    assert_int_equal(wk_dirs_check(&d, "allowed/fn", res, sizeof(res)), WK_PATH_REFUSED);
    wk_dirs_free(&d);
    dg_strlist_free(&l);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    assert_int_equal(system(cmd), 0);
}

static void test_registries(void **state)
{
    (void)state;
    char *v[] = {"loopback", "registry.example.com", "10.0.0.7:5000"};
    struct dg_strlist l = {.v = v, .n = 3};
    const char *ok[] = {"localhost",      "localhost:5000",       "127.0.0.1",
                        "127.0.0.1:5000", "127.1.2.3:443",        "[::1]",
                        "[::1]:5000",     "registry.example.com", "registry.example.com:443",
                        "10.0.0.7:5000"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(wk_registry_allowed(&l, ok[i]));
    /* names a resolver would look up, other addresses, other ports of a HOST:PORT entry */
    const char *no[] = {"127.0.0.256",
                        "127.0.0.0001:5000",
                        "127.000.0.1",
                        "127.example.com",
                        "localhost.",
                        "localhost.:5000",
                        "127.0.0.1.",
                        "169.254.169.254",
                        "[::ffff:127.0.0.1]:5000",
                        "10.0.0.7",
                        "10.0.0.7:5001",
                        "docker.io",
                        "registry.example.com.",
                        "evil.registry.example.com"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (wk_registry_allowed(&l, no[i]))
            fail_msg("registry '%s' allowed", no[i]);
    }
    struct dg_strlist none = {0};
    assert_false(wk_registry_allowed(&none, "localhost:5000"));
}

static void test_status(void **state)
{
    (void)state;
    const char *dropped = "Name:\tdirigent-fn\nUid:\t65534\t65534\t65534\t65534\n"
                          "Gid:\t65534\t65534\t65534\t65534\nFDSize:\t64\nGroups:\t \n";
    assert_true(wk_status_ids_are(dropped, 65534, 65534));
    /* setgroups not done: root's groups kept */
    const char *groups = "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n"
                         "Groups:\t0 4 27 \n";
    assert_false(wk_status_ids_are(groups, 65534, 65534));
    const char *own = "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n"
                      "Groups:\t65534 \n";
    assert_true(wk_status_ids_are(own, 65534, 65534));
    const char *saved = "Uid:\t65534\t65534\t0\t65534\nGid:\t65534\t65534\t65534\t65534\n"
                        "Groups:\t\n";
    assert_false(wk_status_ids_are(saved, 65534, 65534));
    assert_false(wk_status_ids_are("Uid:\t65534\t65534\t65534\t65534\n", 65534, 65534));
    assert_false(wk_status_ids_are("", 65534, 65534));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirs),
        cmocka_unit_test(test_registries),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
