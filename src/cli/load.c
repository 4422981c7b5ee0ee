/*
 * load.c: `dirigent load`, an open-loop load generator (DESIGN.md §9). Requests
 * are scheduled by time and sent whether or not earlier ones have answered; a
 * late response never delays the next send. Timestamps are monotonic, in µs.
 *
 *   dirigent load rps --rate R --duration S [--cold [--cooldown S] [--image PATH]] [FUNCTION]
 *
 * --cold reproduces InVitro's RPS mode with 100% cold starts: ceil(R x cooldown)
 * functions are registered (cold_start_sweep profile, upper bound 1) and each
 * is invoked once per cooldown, so every call finds its function at zero.
 * Targets only 127.0.0.0/8. Prints a summary (or --json).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dirigent/http.h"
#include "dirigent/json.h"

struct sample {
    uint64_t start_us, latency_us;
    int status; /* 0: transport error */
};

struct load {
    uv_loop_t loop;
    uv_timer_t timer;
    struct dg_http_pool *pool;
    double rate;
    uint64_t duration_us, t0, sent, planned, done;
    struct sample *samples;
    char **names;
    size_t nnames;
    bool finished_sending;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static struct load *g_load; /* one run per process */

static void on_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                    const struct dg_err *err, void *ud)
{
    struct sample *s = ud;
    s->latency_us = dg_now_us() - s->start_us;
    s->status = resp ? resp->status : 0;
    g_load->done++;
}

static void send_one(struct load *l)
{
    static const struct dg_http_client_cbs cbs = {.on_done = on_done};
    uint64_t i = l->sent++;
    struct sample *s = &l->samples[i];
    s->start_us = dg_now_us();
    const char *name = l->names[i % l->nnames];
    struct dg_http_header h[] = {{DG_STR("Host"), dg_str_c(name)}};
    dg_http_request(l->pool, "GET", "/", h, 1, NULL, 0, &cbs, s);
}

static void on_tick(uv_timer_t *t)
{
    struct load *l = t->data;
    uint64_t elapsed = dg_now_us() - l->t0;
    if (elapsed > l->duration_us)
        elapsed = l->duration_us;
    uint64_t due = (uint64_t)((double)elapsed / 1e6 * l->rate);
    if (due > l->planned)
        due = l->planned;
    while (l->sent < due)
        send_one(l);
    if (l->sent >= l->planned) {
        l->finished_sending = true;
        uv_timer_stop(t);
    }
}

struct reg_state {
    size_t done, failed;
    char first_err[256];
};

static void on_registered(struct dg_http_creq *q, const struct dg_http_resp *resp,
                          const struct dg_err *err, void *ud)
{
    struct reg_state *st = ud;
    st->done++;
    if (!resp || resp->status != 200) {
        if (!st->failed++)
            snprintf(st->first_err, sizeof(st->first_err), "%d %.*s", resp ? resp->status : 0,
                     resp ? (int)DG_MIN(resp->body.len, 200) : (int)strlen(err->msg),
                     resp ? resp->body.ptr : err->msg);
    }
}

/* Register n functions over one keep-alive pool, 64 at a time (InVitro registers its
 * functions the same way before a run). */
static int register_cold(const char *cp, const char *image, size_t n, char ***out, unsigned tag)
{
    static const struct dg_http_client_cbs cbs = {.on_done = on_registered};
    static const struct dg_http_header form[] = {
        {DG_STR("Content-Type"), DG_STR("application/x-www-form-urlencoded")}};
    char **names = dg_xcalloc(n, sizeof(char *));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 64;
    o.max_idle = 64;
    struct dg_err err = {0};
    struct dg_http_pool *p = dg_http_pool_new_addr(&loop, cp, &o, &err);
    if (!p) {
        free(names);
        uv_loop_close(&loop);
        return cli_fail("load: --cp %s: %s", cp, err.msg);
    }
    struct reg_state st = {0};
    for (size_t i = 0; i < n; i++) {
        names[i] = dg_xasprintf("cold-%u-%zu", tag, i);
        char *body = dg_xasprintf("name=%s&image=%s&port_forwarding=80&port_forwarding=tcp"
                                  "&requested_cpu=1&requested_memory=1&cold_start_sweep=true",
                                  names[i], image);
        dg_http_request(p, "POST", "/registerService", form, 1, body, strlen(body), &cbs, &st);
        free(body);
    }
    while (st.done < n)
        uv_run(&loop, UV_RUN_ONCE);
    dg_http_pool_close(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (st.failed) {
        for (size_t k = 0; k < n; k++)
            free(names[k]);
        free(names);
        return cli_fail("load: registering %zu function(s): %zu failed, first: %s", n, st.failed,
                        st.first_err);
    }
    *out = names;
    return 0;
}

int cli_load(int argc, char **argv, const char *cp, const char *dp, const char *fn_path, bool json)
{
    if (argc < 1 || strcmp(argv[0], "rps") != 0)
        return cli_fail("load: expected 'rps' (dirigent load rps --rate R --duration S ...)");
    double rate = 0, duration = 0, cooldown = 10;
    bool cold = false;
    const char *fn = NULL, *image = fn_path, *v;
    for (int i = 1; i < argc; i++) {
        if ((v = cli_opt(&i, argc, argv, "--rate")))
            rate = atof(v);
        else if ((v = cli_opt(&i, argc, argv, "--duration")))
            duration = atof(v);
        else if ((v = cli_opt(&i, argc, argv, "--cooldown")))
            cooldown = atof(v);
        else if ((v = cli_opt(&i, argc, argv, "--image")))
            image = v;
        else if (strcmp(argv[i], "--cold") == 0)
            cold = true;
        else if (argv[i][0] != '-' && !fn)
            fn = argv[i];
        else
            return cli_fail("load rps: unknown option '%s'", argv[i]);
    }
    if (!(rate > 0 && rate <= 100000))
        return cli_fail("load rps: --rate: expected requests per second 0 < R <= 100000");
    if (!(duration > 0 && duration <= 3600))
        return cli_fail("load rps: --duration: expected seconds 0 < S <= 3600");
    if (cold == (fn != NULL))
        return cli_fail("load rps: give either a FUNCTION or --cold");
    if (cold && !(cooldown >= 1 && cooldown <= 600))
        return cli_fail("load rps: --cooldown: expected seconds 1..600");
    if (strncmp(dp, "127.", 4) != 0)
        return cli_fail("load: --dp %s: only 127.0.0.0/8 is a target (the project's own hosts)",
                        dp);

    struct load l = {0};
    g_load = &l;
    l.rate = rate;
    l.duration_us = (uint64_t)(duration * 1e6);
    l.planned = (uint64_t)(rate * duration);
    if (l.planned == 0)
        l.planned = 1;
    if (cold) {
        l.nnames = (size_t)ceil(rate * cooldown);
        if (register_cold(cp, image, l.nnames, &l.names, (unsigned)(dg_now_us() % 100000)) != 0)
            return 1;
    } else {
        l.nnames = 1;
        l.names = dg_xcalloc(1, sizeof(char *));
        l.names[0] = dg_xstrdup(fn);
    }
    l.samples = dg_xcalloc(l.planned, sizeof(*l.samples));
    uv_loop_init(&l.loop);
    struct dg_http_pool_opts o;
    dg_http_pool_opts_default(&o);
    o.max_conns = 4000; /* open loop: never wait for a connection (ulimit is 20k) */
    o.max_idle = 4000;
    o.request_timeout_ms = 120000;
    struct dg_err err = {0};
    l.pool = dg_http_pool_new_addr(&l.loop, dp, &o, &err);
    if (!l.pool)
        return cli_fail("load: %s", err.msg);
    uv_timer_init(&l.loop, &l.timer);
    l.timer.data = &l;
    l.t0 = dg_now_us();
    uv_timer_start(&l.timer, on_tick, 0, 1);
    while (!(l.finished_sending && l.done == l.sent))
        uv_run(&l.loop, UV_RUN_ONCE);
    uint64_t wall_us = dg_now_us() - l.t0;
    uv_close((uv_handle_t *)&l.timer, NULL);
    dg_http_pool_close(l.pool);
    uv_run(&l.loop, UV_RUN_DEFAULT);
    uv_loop_close(&l.loop);

    uint64_t *lat = dg_xcalloc(l.sent, sizeof(uint64_t));
    uint64_t ok = 0, errors = 0, e5xx = 0, e4xx = 0, transport = 0;
    for (uint64_t i = 0; i < l.sent; i++) {
        int st = l.samples[i].status;
        if (st == 200) {
            lat[ok++] = l.samples[i].latency_us;
        } else {
            errors++;
            if (st == 0)
                transport++;
            else if (st >= 500)
                e5xx++;
            else
                e4xx++;
        }
    }
    qsort(lat, ok, sizeof(uint64_t), cmp_u64);
#define PCT(p) (ok ? lat[(size_t)((double)(ok - 1) * (p))] : 0)
    double achieved = (double)l.sent / ((double)wall_us / 1e6);
    if (json) {
        printf("{\"sent\":%llu,\"ok\":%llu,\"errors\":%llu,\"errors_5xx\":%llu,\"errors_4xx\":%llu,"
               "\"errors_transport\":%llu,\"rate_target\":%g,\"rate_achieved\":%.1f,"
               "\"functions\":%zu,\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu}\n",
               (unsigned long long)l.sent, (unsigned long long)ok, (unsigned long long)errors,
               (unsigned long long)e5xx, (unsigned long long)e4xx, (unsigned long long)transport,
               rate, achieved, l.nnames, (unsigned long long)PCT(0.5), (unsigned long long)PCT(0.9),
               (unsigned long long)PCT(0.99));
    } else {
        printf("sent %llu in %.2f s (%.1f/s, target %g/s) to %zu function(s)%s\n",
               (unsigned long long)l.sent, (double)wall_us / 1e6, achieved, rate, l.nnames,
               cold ? ", every call cold" : "");
        printf("ok %llu, errors %llu (5xx %llu, 4xx %llu, transport %llu)\n",
               (unsigned long long)ok, (unsigned long long)errors, (unsigned long long)e5xx,
               (unsigned long long)e4xx, (unsigned long long)transport);
        printf("latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", (double)PCT(0.5) / 1000,
               (double)PCT(0.9) / 1000, (double)PCT(0.99) / 1000);
    }
#undef PCT
    for (size_t i = 0; i < l.nnames; i++)
        free(l.names[i]);
    free(l.names);
    free(l.samples);
    free(lat);
    return errors ? 3 : 0;
}
