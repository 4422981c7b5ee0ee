/*
 * test_firewall.c: the oci worker's nftables ruleset (src/worker/firewall.c) and seccomp
 * profile (src/worker/confine.c) as text: what each sandboxEgress mode drops and accepts, bad
 * keys refused naming the field, and, where nft is installed and this runs as root, that
 * `nft -c` (check only: nothing is loaded) accepts every ruleset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "confine.h"
#include "firewall.h"

static char rules[65536];

static int make(const char *egress, const char *const *allow, size_t n, struct dg_err *err)
{
    struct dg_strlist l = {.v = (char **)allow, .n = n};
    struct wk_fw_opts o = {.table = "dirigent_abc123",
                           .bridge = "dgabc123",
                           .prefix = "dvabc123",
                           .egress = egress,
                           .allow = &l};
    return wk_firewall_ruleset(&o, rules, sizeof(rules), err);
}

/* nft -c -f: the ruleset parses and would load; skipped without root or nft */
static void nft_accepts(void)
{
    if (geteuid() != 0 || system("command -v nft >/dev/null 2>&1") != 0)
        return;
    char path[] = "/tmp/dg-fw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rules, strlen(rules)), (ssize_t)strlen(rules));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "nft -c -f %s", path);
    int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
}

static void test_none(void **state)
{
    struct dg_err err = {0};
    assert_int_equal(make("none", NULL, 0, &err), 0);
    /* a crashed predecessor's tables go in the same transaction */
    assert_non_null(
        strstr(rules, "add table inet dirigent_abc123\ndelete table inet dirigent_abc123\n"));
    assert_non_null(strstr(rules, "iifname \"dgabc123\" ct state established,related accept"));
    assert_non_null(strstr(rules, "comment \"sandbox to host\""));
    assert_non_null(strstr(rules, "iifname \"dgabc123\" oifname \"dgabc123\" counter drop"));
    assert_non_null(strstr(rules, "comment \"sandbox egress none\""));
    assert_non_null(strstr(rules, "iifname \"dvabc123*\" oifname \"dvabc123*\" counter drop"));
    assert_null(strstr(rules, "private4"));
    assert_null(strstr(rules, "allow4"));
    nft_accepts();
}

static void test_internet_and_allow(void **state)
{
    struct dg_err err = {0};
    const char *allow[] = {"192.0.2.7", "198.51.100.0/24"};
    assert_int_equal(make("internet", allow, 2, &err), 0);
    assert_non_null(strstr(rules, "elements = { 192.0.2.7/32, 198.51.100.0/24 }"));
    assert_non_null(strstr(rules, "ip daddr @allow4 accept"));
    assert_non_null(strstr(rules, "ip daddr @private4 counter drop"));
    assert_non_null(strstr(rules, "169.254.0.0/16"));
    assert_non_null(strstr(rules, "meta nfproto ipv6 counter drop"));
    assert_null(strstr(rules, "egress none"));
    /* the allow list is accepted before the private ranges are dropped */
    assert_true(strstr(rules, "@allow4 accept") < strstr(rules, "@private4 counter drop"));
    nft_accepts();
}

static void test_bad_keys(void **state)
{
    struct dg_err err = {0};
    assert_true(make("some", NULL, 0, &err) < 0);
    assert_non_null(strstr(err.msg, "sandboxEgress 'some'"));
    static const char *const bad[] = {"10.0.0.1/8",
                                      "10.0.0.0/33",
                                      "300.1.1.1",
                                      "fe80::1",
                                      "10.0.0.0/",
                                      "",
                                      "1.2.3.4 ; flush ruleset"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[] = {bad[i]};
        memset(&err, 0, sizeof(err));
        assert_true(make("none", one, 1, &err) < 0);
        assert_non_null(strstr(err.msg, "sandboxEgressAllow"));
    }
}

static void test_bad_bridge(void **state)
{
    struct dg_err err = {0};
    struct wk_fw_opts o = {.table = "dirigent_abc123",
                           .bridge = "dg\" accept #",
                           .prefix = "dvabc123",
                           .egress = "none"};
    assert_true(wk_firewall_ruleset(&o, rules, sizeof(rules), &err) < 0);
    assert_non_null(strstr(err.msg, "bridge"));
}

static void test_seccomp_profile(void **state)
{
    json_t *p = wk_seccomp_profile();
    assert_string_equal(json_string_value(json_object_get(p, "defaultAction")), "SCMP_ACT_ERRNO");
    char *s = json_dumps(p, JSON_COMPACT);
    /* the allowlist has what a server needs and none of the escape hatches */
    assert_non_null(strstr(s, "\"accept4\""));
    assert_non_null(strstr(s, "\"epoll_wait\""));
    static const char *const never[] = {
        "\"mount\"",       "\"unshare\"",   "\"setns\"",          "\"bpf\"",
        "\"keyctl\"",      "\"ptrace\"",    "\"io_uring_setup\"", "\"perf_event_open\"",
        "\"init_module\"", "\"kexec_load\""};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        assert_null(strstr(s, never[i]));
    /* clone only without namespace flags; socket by family */
    assert_non_null(strstr(s, "SCMP_CMP_MASKED_EQ"));
    assert_non_null(strstr(s, "2114060288"));
    free(s);
    json_decref(p);
    assert_true(wk_cap_known("CAP_NET_BIND_SERVICE"));
    assert_false(wk_cap_known("CAP_FOO"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_internet_and_allow),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_bad_bridge),
        cmocka_unit_test(test_seccomp_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
