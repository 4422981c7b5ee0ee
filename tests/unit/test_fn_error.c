/*
 * test_fn_error.c: a function's last create failure (src/cp/fn_error.h) with a fake clock:
 * recording, clearing, the age, the state word the API shows and when the failure is pushed
 * to the data planes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fn_error.h"

static void test_set_and_clear(void **state)
{
    struct cp_fn_error e = {0};
    assert_false(e.set);
    cp_fn_error_set(&e, "w1", "503: create failed: no such file or directory", 1000, 1700000000000);
    assert_true(e.set);
    assert_string_equal(e.reason, "503: create failed: no such file or directory");
    assert_string_equal(e.worker, "w1");
    assert_int_equal(e.wall_ms, 1700000000000ull);
    /* a later failure replaces it (the last one is what users see) */
    cp_fn_error_set(&e, "w2", "connect to 127.0.0.1:1: connection refused", 3000, 1700000002000);
    assert_string_equal(e.reason, "connect to 127.0.0.1:1: connection refused");
    assert_string_equal(e.worker, "w2");
    assert_int_equal(cp_fn_error_age_ms(&e, 3500), 500);
    cp_fn_error_clear(&e);
    assert_false(e.set);
    assert_string_equal(e.reason, "");
    assert_string_equal(e.worker, "");
    assert_int_equal(cp_fn_error_age_ms(&e, 9000), 0);
}

static void test_missing_and_long(void **state)
{
    struct cp_fn_error e = {0};
    cp_fn_error_set(&e, NULL, "", 10, 10); /* its worker was gone; no message */
    assert_string_equal(e.worker, "");
    assert_string_equal(e.reason, "unknown error");
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cp_fn_error_set(&e, big, big, 10, 10); /* truncated, terminated */
    assert_int_equal(strlen(e.reason), sizeof(e.reason) - 1);
    assert_int_equal(strlen(e.worker), sizeof(e.worker) - 1);
    /* a clock that went backwards: age 0, not a huge number */
    assert_int_equal(cp_fn_error_age_ms(&e, 5), 0);
}

static void test_state_word(void **state)
{
    struct cp_fn_error none = {0}, err = {0};
    cp_fn_error_set(&err, "w1", "boom", 0, 0);
    assert_string_equal(cp_fn_state(&none, 0, 0, 0), "idle");
    assert_string_equal(cp_fn_state(&none, 0, 0, 1), "pending"); /* no schedulable worker */
    assert_string_equal(cp_fn_state(&none, 0, 2, 2), "creating");
    assert_string_equal(cp_fn_state(&none, 1, 0, 1), "ready");
    /* an error without a ready sandbox is failing, also while the retry is in flight and
     * after the decider gave up (desired 0: the last attempt still failed) */
    assert_string_equal(cp_fn_state(&err, 0, 0, 1), "failing");
    assert_string_equal(cp_fn_state(&err, 0, 1, 1), "failing");
    assert_string_equal(cp_fn_state(&err, 0, 0, 0), "failing");
    /* a ready sandbox serves: ready (the error is still shown beside it) */
    assert_string_equal(cp_fn_state(&err, 2, 1, 3), "ready");
}

/* A sandbox that exited by itself (an OOM kill) stays the last failure after its replacement
 * starts, never makes the function "failing", and the next failure of either kind replaces it. */
static void test_exit_failure(void **state)
{
    struct cp_fn_error e = {0};
    cp_fn_error_set_exit(&e, "w1", "sandbox w1-1-1 OOM-killed: memory limit 64 MiB", 100, 5000);
    assert_true(e.set);
    assert_string_equal(cp_fn_error_kind(&e), "exit");
    assert_string_equal(cp_fn_state(&e, 0, 1, 1), "creating"); /* its replacement */
    assert_string_equal(cp_fn_state(&e, 0, 0, 0), "idle");
    assert_false(cp_fn_error_create_worked(&e)); /* the replacement started: still shown */
    assert_true(e.set);
    assert_string_equal(e.reason, "sandbox w1-1-1 OOM-killed: memory limit 64 MiB");
    assert_int_equal(cp_fn_error_age_ms(&e, 400), 300);
    /* a failed create replaces it, and a working create clears that one */
    cp_fn_error_set(&e, "w2", "no such image", 500, 5400);
    assert_string_equal(cp_fn_error_kind(&e), "create");
    assert_string_equal(cp_fn_state(&e, 0, 0, 1), "failing");
    assert_true(cp_fn_error_create_worked(&e));
    assert_false(e.set);
    assert_string_equal(e.reason, "");
    /* and an exit replaces a create failure */
    cp_fn_error_set(&e, "w2", "no such image", 500, 5400);
    cp_fn_error_set_exit(&e, "w1", "sandbox w1-1-2 killed by signal 9 (Killed)", 600, 5500);
    assert_string_equal(cp_fn_error_kind(&e), "exit");
    assert_string_equal(e.worker, "w1");
}

static void test_push_due(void **state)
{
    assert_true(cp_fn_error_push_due(0, 0));  /* nothing will serve the waiting requests */
    assert_false(cp_fn_error_push_due(1, 0)); /* a ready sandbox serves them */
    assert_false(cp_fn_error_push_due(0, 1)); /* another create may still work */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_clear), cmocka_unit_test(test_missing_and_long),
        cmocka_unit_test(test_state_word),    cmocka_unit_test(test_exit_failure),
        cmocka_unit_test(test_push_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
