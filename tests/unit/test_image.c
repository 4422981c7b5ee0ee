/*
 * test_image.c: image references as users register them: what is accepted,
 * what skopeo is given, and errors that say what is wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dirigent/image.h"

static void test_accepted(void **state)
{
    static const struct {
        const char *in, *source, *registry;
        enum dg_image_kind kind;
    } cases[] = {
        {"/usr/local/bin/dirigent-fn", "/usr/local/bin/dirigent-fn", "", DG_IMAGE_PATH},
        {"127.0.0.1:5000/dirigent-fn:latest", "docker://127.0.0.1:5000/dirigent-fn:latest",
         "127.0.0.1:5000", DG_IMAGE_REGISTRY},
        {"docker.io/cvetkovic/dirigent_trace_function:latest",
         "docker://docker.io/cvetkovic/dirigent_trace_function:latest", "docker.io",
         DG_IMAGE_REGISTRY},
        {"busybox", "docker://busybox", "", DG_IMAGE_REGISTRY},
        {"library/busybox:1.36", "docker://library/busybox:1.36", "", DG_IMAGE_REGISTRY},
        {"localhost/fn", "docker://localhost/fn", "localhost", DG_IMAGE_REGISTRY},
        {"docker://localhost:5000/a/b-c__d.e:v1.2", "docker://localhost:5000/a/b-c__d.e:v1.2",
         "localhost:5000", DG_IMAGE_REGISTRY},
        {"r.example.com/fn@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "docker://r.example.com/fn@sha256:"
         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "r.example.com", DG_IMAGE_REGISTRY},
        {"[::1]:5000/fn:1", "docker://[::1]:5000/fn:1", "[::1]:5000", DG_IMAGE_REGISTRY},
        {"oci:build/images/dirigent-fn:latest", "oci:build/images/dirigent-fn:latest", "",
         DG_IMAGE_OCI_LAYOUT},
        {"oci:/var/cache/fn", "oci:/var/cache/fn", "", DG_IMAGE_OCI_LAYOUT},
        {"oci-archive:/tmp/fn.tar:latest", "oci-archive:/tmp/fn.tar:latest", "",
         DG_IMAGE_OCI_ARCHIVE},
        {"docker-archive:/tmp/fn.tar", "docker-archive:/tmp/fn.tar", "", DG_IMAGE_DOCKER_ARCHIVE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dg_image_ref r;
        struct dg_err e = {0};
        int rc = dg_image_ref_parse(cases[i].in, &r, &e);
        if (rc != 0)
            fail_msg("'%s': %s", cases[i].in, e.msg);
        assert_int_equal(r.kind, cases[i].kind);
        assert_string_equal(r.source, cases[i].source);
        assert_string_equal(r.registry, cases[i].registry);
    }
}

static void test_rejected(void **state)
{
    static const struct {
        const char *in, *msg;
    } cases[] = {
        {"", "expected an image reference"},
        {"has space", "expected no spaces"},
        {"Upper/Case", "expected a repository name"},
        {"fn:", "expected a tag"},
        {"fn:-x", "expected a tag"},
        {"fn@sha256:xyz", "expected a digest"},
        {"fn@sha256:0123", "expected a digest"},
        {"bad_host!.com/fn", "expected a registry host[:port]"},
        {"host.com:99999999/fn", "expected a registry host[:port]"},
        {"a//b", "expected a repository name"},
        {"fn/", "expected a repository name"},
        {"a--", "expected a repository name"},
        {"a..b", "expected a repository name"},
        {"dir:/tmp/x", "unknown transport 'dir:'"},
        {"https://example.com/fn", "unknown transport 'https:'"},
        {"oci:", "expected oci:PATH[:TAG]"},
        {"docker-archive::x", "expected docker-archive:PATH[:TAG]"},
        {"docker://", "expected a repository name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dg_image_ref r;
        struct dg_err e = {0};
        if (dg_image_ref_parse(cases[i].in, &r, &e) == 0)
            fail_msg("'%s' was accepted", cases[i].in);
        if (!strstr(e.msg, cases[i].msg))
            fail_msg("'%s': got '%s', want '%s'", cases[i].in, e.msg, cases[i].msg);
    }
    char big[DG_IMAGE_REF_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct dg_image_ref r;
    struct dg_err e = {0};
    assert_true(dg_image_ref_parse(big, &r, &e) < 0);
}

static void test_local_registry(void **state)
{
    assert_true(dg_image_registry_is_local("127.0.0.1:5000"));
    assert_true(dg_image_registry_is_local("localhost:5000"));
    assert_true(dg_image_registry_is_local("localhost"));
    assert_true(dg_image_registry_is_local("[::1]:5000"));
    assert_false(dg_image_registry_is_local("localhost.example.com"));
    assert_false(dg_image_registry_is_local("docker.io"));
    assert_false(dg_image_registry_is_local("127.example.com:5000")); /* a name, not 127/8 */
    assert_false(dg_image_registry_is_local("127.0.0.1.nip.io"));
    assert_false(dg_image_registry_is_local(""));
    assert_false(dg_image_registry_is_local("127.0.0.256:5000")); /* not an address: DNS */
    assert_false(dg_image_registry_is_local("127.0.0.0001"));
    assert_false(dg_image_registry_is_local("[::1]x"));
    assert_true(dg_image_registry_is_local("127.1.2.3"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_local_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
