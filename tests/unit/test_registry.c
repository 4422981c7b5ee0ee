/*
 * test_registry.c: the worker's sandbox registry (src/worker/registry.c) driven through a
 * scripted runtime: one create (a refused spec makes nothing), every create answered exactly
 * once (ready, failed, deleted while creating, or nobody when the caller left), one lost
 * (an exit is reported once with its reason), one free (the sandbox is gone from the list and
 * the id lookup), shutdown stopping every sandbox, and the runtime's per-sandbox state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

/* ---- a scripted runtime and the adapters' side ------------------------------------------- */

struct fake_sb {
    unsigned created, destroyed, hurried;
    uint64_t pattern;
};

static struct {
    unsigned creates, destroys, hurries, deinits, binds, answers, answers_ok, exits;
    unsigned saturations; /* saturation events */
    bool saturated;       /* the last one's */
    bool refuse;          /* validate says no */
    bool gone_on_destroy; /* destroy frees the sandbox at once */
    struct wk_sandbox *last;
    char last_err[256];
    struct wk_reply last_to;
    const struct wk_sandbox *last_exit;
} f;

static int fake_validate(void *state, const struct dg_wire_create *spec, struct dg_err *err)
{
    if (f.refuse)
        return dg_err_set(err, DG_E_INVAL, "field 'image': refused");
    return 0;
}

static void fake_create(void *state, struct wk_sandbox *sb, const struct dg_wire_create *spec)
{
    struct fake_sb *x = WK_SB_EXT(sb);
    assert_int_equal(x->created, 0); /* zeroed */
    assert_int_equal((uintptr_t)x % _Alignof(max_align_t), 0);
    assert_ptr_equal(WK_SB_OF(x), sb);
    x->created++;
    x->pattern = 0x5a5a5a5a5a5a5a5aull;
    f.creates++;
    f.last = sb;
}

static void fake_destroy(void *state, struct wk_sandbox *sb)
{
    struct fake_sb *x = WK_SB_EXT(sb);
    assert_int_equal(sb->state, WK_SB_DELETING);
    x->destroyed++;
    f.destroys++;
    if (f.gone_on_destroy)
        wk_sandbox_gone(sb);
}

static void fake_hurry(void *state, struct wk_sandbox *sb)
{
    struct fake_sb *x = WK_SB_EXT(sb);
    x->hurried++;
    f.hurries++;
}

static void fake_deinit(void *state)
{
    f.deinits++;
}

static const struct wk_runtime fake_rt = {
    .name = "fake",
    .sb_size = sizeof(struct fake_sb),
    .validate = fake_validate,
    .create = fake_create,
    .destroy = fake_destroy,
    .hurry = fake_hurry,
    .deinit = fake_deinit,
};

static void ev_bind(void *ud, struct wk_sandbox *sb)
{
    f.binds++;
}

static void ev_answer(void *ud, struct wk_sandbox *sb, struct wk_reply to, const struct dg_err *err)
{
    f.answers++;
    f.answers_ok += !err;
    f.last_to = to;
    snprintf(f.last_err, sizeof(f.last_err), "%s", err ? err->msg : "");
    assert_null(sb->reply.batch); /* cleared before: answered once */
}

static void ev_exited(void *ud, const struct wk_sandbox *sb)
{
    f.exits++;
    f.last_exit = sb;
}

static void ev_saturation(void *ud, bool saturated)
{
    f.saturations++;
    f.saturated = saturated;
}

static struct wk_registry reg;
static struct dg_metrics *metrics;
/* a reply sink is only carried, never used, by the registry: any non-NULL token will do */
static struct dg_batch_reply *const REPLY = (struct dg_batch_reply *)&reg;

static int setup(void **state)
{
    memset(&f, 0, sizeof(f));
    memset(&reg, 0, sizeof(reg));
    metrics = dg_metrics_new();
    struct wk_registry_events ev = {
        .bind = ev_bind, .answer = ev_answer, .exited = ev_exited, .saturation = ev_saturation};
    wk_registry_init(&reg, "w1", &fake_rt, NULL, &ev, metrics);
    reg.run = 0xabc;
    return 0;
}

static int teardown(void **state)
{
    f.gone_on_destroy = true;
    while (reg.sandboxes) { /* what a test left: its runtime finishes it */
        struct wk_sandbox *sb = reg.sandboxes;
        if (sb->state != WK_SB_DELETING)
            wk_registry_delete(&reg, dg_str_c(sb->id));
        else
            wk_sandbox_gone(sb);
    }
    wk_registry_deinit(&reg);
    dg_metrics_free(metrics);
    return 0;
}

static struct wk_sandbox *create(size_t i)
{
    struct dg_wire_create spec = {.function = "hello", .image = "/bin/true"};
    struct dg_err err = {0};
    assert_int_equal(wk_registry_create(&reg, &spec, (struct wk_reply){REPLY, i}, &err), 0);
    return f.last;
}

/* The value of a metric line `name` in the registry's metrics text (-1: absent). */
static double metric(const char *name)
{
    struct dg_buf b = {0};
    dg_metrics_render(metrics, &b);
    dg_buf_append(&b, "", 1);
    double v = -1;
    size_t n = strlen(name);
    for (const char *p = b.data; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            v = strtod(p + n + 1, NULL);
    dg_buf_free(&b);
    return v;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_create_ready(void **state)
{
    struct wk_sandbox *sb = create(3);
    assert_int_equal(f.binds, 1);
    assert_int_equal(f.creates, 1);
    assert_int_equal(reg.n, 1);
    assert_int_equal(sb->state, WK_SB_CREATING);
    assert_string_equal(sb->function, "hello");
    assert_string_equal(sb->id, "w1-abc-1");
    assert_int_equal(metric("dg_worker_sandboxes"), 1);
    wk_sandbox_created(sb, NULL);
    assert_int_equal(sb->state, WK_SB_READY);
    assert_int_equal(f.answers, 1);
    assert_int_equal(f.answers_ok, 1);
    assert_ptr_equal(f.last_to.batch, REPLY);
    assert_int_equal(f.last_to.i, 3);
    assert_int_equal(metric("dg_worker_sandbox_creates_total"), 1);
    /* a second create gets the next id */
    assert_string_equal(create(0)->id, "w1-abc-2");
}

static void test_refused_makes_nothing(void **state)
{
    f.refuse = true;
    struct dg_wire_create spec = {.function = "hello"};
    struct dg_err err = {0};
    assert_int_equal(wk_registry_create(&reg, &spec, (struct wk_reply){REPLY, 0}, &err), -1);
    assert_string_equal(err.msg, "field 'image': refused");
    assert_int_equal(f.creates + f.binds + f.answers, 0);
    assert_int_equal(reg.n, 0);
    assert_null(reg.sandboxes);
}

static void test_create_failed(void **state)
{
    struct wk_sandbox *sb = create(0);
    struct dg_err e;
    dg_err_set(&e, DG_E_INVAL, "image not found");
    sb->state = WK_SB_DELETING; /* as a runtime does: nothing left to run */
    wk_sandbox_created(sb, &e);
    assert_int_equal(f.answers, 1);
    assert_int_equal(f.answers_ok, 0);
    assert_string_equal(f.last_err, "image not found");
    assert_int_equal(metric("dg_worker_sandbox_create_failures_total"), 1);
    assert_int_equal(metric("dg_worker_sandbox_creates_total"), 0);
    wk_sandbox_gone(sb);
    assert_int_equal(reg.n, 0);
}

static void test_delete_while_creating(void **state)
{
    struct wk_sandbox *sb = create(0);
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(sb->id)), 0);
    assert_int_equal(f.answers, 1);
    assert_string_equal(f.last_err, "deleted while it was being created");
    assert_int_equal(f.destroys, 1);
    /* going already: a second delete finds nothing to do, and the runtime's late report
     * answers nobody */
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(sb->id)), -1);
    wk_sandbox_created(sb, NULL);
    assert_int_equal(f.answers, 1);
    assert_int_equal(f.destroys, 1);
    /* the free: the id is unknown after */
    char id[96];
    snprintf(id, sizeof(id), "%s", sb->id);
    wk_sandbox_gone(sb);
    assert_int_equal(reg.n, 0);
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(id)), -1);
    assert_int_equal(wk_registry_delete(&reg, dg_str_c("w1-abc-99")), -1);
}

static void test_abandoned(void **state)
{
    struct wk_sandbox *sb = create(0);
    wk_registry_abandon(sb); /* the caller went away */
    assert_int_equal(f.destroys, 1);
    assert_int_equal(sb->state, WK_SB_DELETING);
    wk_sandbox_created(sb, NULL);
    assert_int_equal(f.answers, 0);
}

static void test_exit_lost_once(void **state)
{
    struct wk_sandbox *a = create(0), *b = create(1);
    wk_sandbox_created(a, NULL);
    wk_sandbox_created(b, NULL);
    wk_sandbox_exited(a, -SIGKILL, NULL);
    assert_int_equal(f.exits, 1);
    assert_ptr_equal(f.last_exit, a);
    assert_int_equal(a->state, WK_SB_EXITED);
    assert_int_equal(a->exit_status, -SIGKILL);
    assert_string_equal(a->exit_reason, "killed by signal 9 (Killed)");
    wk_sandbox_exited(b, 137, "OOM-killed: memory limit 64 MiB");
    assert_string_equal(b->exit_reason, "OOM-killed: memory limit 64 MiB");
    assert_int_equal(metric("dg_worker_sandbox_unexpected_exits_total"), 2);
    /* the CP deletes an exited sandbox: no create answer is due any more */
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(a->id)), 0);
    assert_int_equal(f.answers, 2);
    char reason[64];
    wk_exit_reason(3, reason, sizeof(reason));
    assert_string_equal(reason, "exited with status 3");
}

static void test_stop_and_hurry(void **state)
{
    struct wk_sandbox *a = create(0), *b = create(1), *c = create(2);
    wk_sandbox_created(b, NULL);
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(c->id)), 0); /* going already */
    wk_registry_hurry(&reg); /* a second signal before the sandboxes were stopped */
    assert_int_equal(f.hurries, 3);
    f.gone_on_destroy = true; /* the list changes under the stop's walk */
    wk_registry_stop(&reg);
    assert_int_equal(f.destroys, 3); /* a and b now, c before: once each */
    assert_int_equal(f.deinits, 1);
    assert_int_equal(f.hurries, 4); /* again after the stop, for what is still going: c */
    assert_int_equal(reg.n, 1);
    assert_ptr_equal(reg.sandboxes, c);
    (void)a;
}

/* maxConcurrentCreates (issue 16): creates past the bound wait in order, the runtime never
 * sees more at once; a queued one deleted is gone at once; the worker is saturated while as
 * many wait as run. */
static void test_create_queue(void **state)
{
    wk_registry_set_max_creates(&reg, 2);
    struct wk_sandbox *a = create(0), *b = create(1);
    assert_int_equal(f.creates, 2);
    assert_false(wk_registry_saturated(&reg));
    f.last = NULL;
    create(2); /* waits */
    assert_null(f.last);
    assert_int_equal(f.creates, 2);
    assert_int_equal(reg.n, 3);
    assert_false(wk_registry_saturated(&reg)); /* 1 waits, 2 run */
    struct wk_sandbox *d = reg.sandboxes;      /* the newest: the list is newest first */
    assert_int_equal(d->state, WK_SB_CREATING);
    create(3);
    assert_true(wk_registry_saturated(&reg)); /* 2 wait, 2 run */
    assert_int_equal(f.saturations, 1);
    assert_true(f.saturated);
    assert_int_equal(metric("dg_worker_create_queue"), 2);
    struct wk_sandbox *e = reg.sandboxes;
    /* a queued one deleted: answered, gone, the runtime never saw it */
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(e->id)), 0);
    assert_string_equal(f.last_err, "deleted while it was being created");
    assert_int_equal(f.destroys, 0);
    assert_int_equal(reg.n, 3);
    assert_false(f.saturated);
    /* a slot frees: the oldest waiting starts */
    wk_sandbox_created(a, NULL);
    assert_int_equal(f.creates, 3);
    assert_ptr_equal(f.last, d);
    assert_int_equal(metric("dg_worker_create_queue"), 0);
    /* a create deleted while its runtime made it gives its slot back when gone */
    create(4);
    assert_int_equal(f.creates, 3);
    f.gone_on_destroy = true;
    assert_int_equal(wk_registry_delete(&reg, dg_str_c(b->id)), 0);
    assert_int_equal(f.creates, 4);
    assert_int_equal(reg.creating, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_makes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_while_creating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_lost_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_and_hurry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_queue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
