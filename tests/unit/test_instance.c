/*
 * test_instance.c: the worker instance's names (src/worker/instance.c): the id is a stable
 * function of the absolute path, every default name carries it, the sandbox subnet skips
 * ranges the host routes already, the lock refuses a second holder with its pid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "instance.h"

static void test_hash(void **state)
{
    /* FNV-1a 32 of "" is the offset basis 0x811c9dc5, folded: 0x1c9dc5 ^ 0x81 */
    assert_int_equal(wk_instance_hash(""), 0x1c9dc5 ^ 0x81);
    assert_int_equal(wk_instance_hash("/tmp/wkt/d1"), 0x602b9a); /* as tests/scripts compute */
    assert_int_not_equal(wk_instance_hash("/a/state/worker"), wk_instance_hash("/b/state/worker"));
}

static void test_names(void **state)
{
    struct wk_instance a, b, c;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    char *abs = malloc(strlen(cwd) + 64);
    snprintf(abs, strlen(cwd) + 64, "%s/no-such-dir/state/worker", cwd);
    /* a relative, not yet existing dataDir names the same instance as its absolute path */
    wk_instance_init(&a, "worker-local", "no-such-dir/./state//x/../worker/", "", "");
    wk_instance_init(&b, "worker-local", abs, "", "");
    assert_string_equal(a.key, abs);
    assert_string_equal(a.hex, b.hex);
    assert_int_equal(strlen(a.hex), 6);
    char want[128];
    snprintf(want, sizeof(want), "/run/dirigent/worker-local-%s", a.hex);
    assert_string_equal(a.run_dir, want);
    snprintf(want, sizeof(want), "dg%s", a.hex);
    assert_string_equal(a.bridge, want);
    assert_true(a.bridge_derived);
    snprintf(want, sizeof(want), "dv%s", a.hex);
    assert_string_equal(a.veth_prefix, want);
    /* 5 digits of index fit IFNAMSIZ */
    assert_true(strlen(a.veth_prefix) + 5 <= 15);
    /* configured keys win; a configured runDir is what the id is hashed from */
    wk_instance_init(&c, "w", "/var/lib/x", "/tmp/run-x", "br0");
    assert_string_equal(c.run_dir, "/tmp/run-x");
    assert_string_equal(c.bridge, "br0");
    assert_false(c.bridge_derived);
    assert_int_equal(c.id, wk_instance_hash("/tmp/run-x"));
    wk_instance_free(&a);
    wk_instance_free(&b);
    wk_instance_free(&c);
    free(abs);
}

static void test_subnet(void **state)
{
    char s[32], conflict[64];
    uint32_t net;
    /* inside 100.64.0.0/10, /22-aligned */
    for (uint32_t id = 0; id < 0x1000000; id += 0x12345) {
        uint32_t n = wk_subnet_candidate(id, 0);
        assert_true(wk_subnet_overlaps(n, 22, WK_SUBNET_BASE, 10));
        assert_int_equal(n & 0x3ff, 0);
    }
    assert_int_equal(wk_subnet_candidate(4095, 1), WK_SUBNET_BASE); /* wraps */
    assert_true(wk_subnet_overlaps(0x64640000, 16, 0x64640400, 22));
    assert_false(wk_subnet_overlaps(0x64640000, 22, 0x64640400, 22));
    /* the host routes the first candidate (100.64.0.0/22 for id 0) through eth1 and the
     * second through this instance's own bridge (its predecessor's: not a conflict) */
    const char *routes =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth1\t00004064\t00000000\t0001\t0\t0\t0\t00FCFFFF\t0\t0\t0\n"
        "dg000000\t00044064\t00000000\t0001\t0\t0\t0\t00FCFFFF\t0\t0\t0\n";
    assert_int_equal(wk_subnet_pick(0, routes, "dg000000", &net, conflict, sizeof(conflict)), 1);
    wk_subnet_format(net, s, sizeof(s));
    assert_string_equal(s, "100.64.4.0/22");
    assert_string_equal(conflict, "100.64.0.0/22 on eth1");
    /* no routes: the first; a default route never conflicts */
    assert_int_equal(wk_subnet_pick(5, NULL, "x", &net, conflict, sizeof(conflict)), 0);
    wk_subnet_format(net, s, sizeof(s));
    assert_string_equal(s, "100.64.20.0/22");
    /* everything routed (100.64.0.0/10 on one link) */
    const char *all = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                      "x\t00004064\t00000000\t0001\t0\t0\t0\t0000C0FF\n";
    assert_int_equal(wk_subnet_pick(7, all, "dg", &net, conflict, sizeof(conflict)), -1);
}

/* Two workers whose ids are equal mod 4096 get different subnets (the second skips the first's
 * route) and so different uid ranges: the slot follows the subnet, not the id. */
static void test_userns_slot(void **state)
{
    (void)state;
    char first[32], second[32], conflict[64], route[256];
    uint32_t net;
    uint32_t id1 = 0x000005, id2 = 0x001005; /* equal mod 4096 */
    assert_int_equal(wk_subnet_pick(id1, NULL, "dg000005", &net, conflict, sizeof(conflict)), 0);
    wk_subnet_format(net, first, sizeof(first));
    snprintf(route, sizeof(route),
             "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
             "dg000005\t%08X\t00000000\t0001\t0\t0\t0\t00FCFFFF\n",
             (unsigned)htonl(net));
    assert_int_equal(wk_subnet_pick(id2, route, "dg001005", &net, conflict, sizeof(conflict)), 1);
    wk_subnet_format(net, second, sizeof(second));
    assert_string_not_equal(first, second);
    assert_int_equal(wk_userns_slot(id1, first), 5);
    assert_int_equal(wk_userns_slot(id2, second), 6);
    assert_int_equal(wk_userns_slot(0, "100.127.252.0/22"), 4095);
    assert_int_equal(wk_userns_slot(0, "100.64.4.128/25"), 1);
    /* outside 100.64.0.0/10, wider than a /22 or malformed: the id's */
    assert_int_equal(wk_userns_slot(0x1007, "10.0.0.0/22"), 7);
    assert_int_equal(wk_userns_slot(0x1007, "100.64.0.0/16"), 7);
    assert_int_equal(wk_userns_slot(0x1007, "junk"), 7);
    assert_int_equal(wk_userns_slot(0x1007, NULL), 7);
}

static void test_lock(void **state)
{
    char dir[] = "/tmp/dg-test-instance.XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct wk_instance a;
    struct dg_err err = {0};
    wk_instance_init(&a, "w", "/unused", dir, "");
    assert_int_equal(wk_instance_lock(&a, &err), 0);
    /* another process on the same instance is refused and told who holds it */
    pid_t child = fork();
    if (child == 0) {
        struct wk_instance b;
        struct dg_err e = {0};
        char want[64];
        wk_instance_init(&b, "w", "/unused", dir, "");
        snprintf(want, sizeof(want), "already running (pid %ld)", (long)getppid());
        _exit(wk_instance_lock(&b, &e) == -1 && strstr(e.msg, want) ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wk_instance_unlock(&a);
    char lock[128];
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    assert_int_equal(access(lock, F_OK), -1); /* removed at a clean stop */
    wk_instance_free(&a);
    rmdir(dir);
}

/* Workers starting and stopping on one instance at once never both hold the lock: a stop
 * unlinks the file before it lets go, so a starter that opened the old file must not count
 * the lock it then gets on it (it is no longer the lock); and a stop removes the run
 * directory, which a starter then makes again rather than failing. */
static void test_lock_handover(void **state)
{
    char dir[] = "/tmp/dg-test-instance.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char marker[128];
    snprintf(marker, sizeof(marker), "%s/holder", dir);
    enum { PROCS = 4, ROUNDS = 3000 };
    pid_t kids[PROCS];
    for (int k = 0; k < PROCS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int i = 0; i < ROUNDS; i++) {
                struct wk_instance in;
                struct dg_err e = {0};
                wk_instance_init(&in, "w", "/unused", dir, "");
                if (wk_instance_lock(&in, &e) == 0) {
                    /* the holder alone: a second one finds the marker */
                    int fd = open(marker, O_CREAT | O_EXCL | O_WRONLY, 0600);
                    if (fd == -1)
                        _exit(1);
                    close(fd);
                    unlink(marker);
                    wk_instance_unlock(&in);
                    rmdir(dir); /* as a clean stop: the run directory goes when empty */
                } else if (!strstr(e.msg, "already running")) {
                    _exit(2);
                }
                wk_instance_free(&in);
            }
            _exit(0);
        }
    }
    int bad = 0;
    for (int k = 0; k < PROCS; k++) {
        int st;
        assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    char lock[128];
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    unlink(lock);
    unlink(marker);
    rmdir(dir);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash),          cmocka_unit_test(test_names),
        cmocka_unit_test(test_subnet),        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_lock_handover), cmocka_unit_test(test_userns_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
