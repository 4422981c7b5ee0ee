/*
 * invitro_trace.c (invitro_trace.h): the Azure trace formats InVitro reads
 * (../shared/data/traces/invitro-example/SOURCE.md), turned into invocations with arrival times and
 * durations. The 2019 format has counts per minute: the arrivals within a
 * minute are equidistant, uniform or exponential (InVitro's IAT modes) and
 * durations are drawn from the function's duration percentiles (piecewise
 * linear between them). The 2021 format lists every invocation. Everything is
 * drawn from one seeded generator in a fixed order: same seed, same trace.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "dirigent/invitro_trace.h"

#define US_PER_MIN 60000000ULL

/* ---- CSV -------------------------------------------------------------------------------- */

struct csv {
    FILE *f;
    char *line;
    size_t cap;
    char **cols;
    size_t ncols, colcap;
    const char *path;
    unsigned lineno;
};

static int csv_open(struct csv *c, const char *path, struct dg_err *err)
{
    memset(c, 0, sizeof(*c));
    c->path = path;
    c->f = fopen(path, "re");
    if (!c->f)
        return dg_err_set(err, -errno, "%s: %s", path, strerror(errno));
    return 0;
}

/* The next line split on commas (no quoting in these traces); false at the end. */
static bool csv_next(struct csv *c)
{
    ssize_t n = getline(&c->line, &c->cap, c->f);
    if (n < 0)
        return false;
    c->lineno++;
    while (n > 0 && (c->line[n - 1] == '\n' || c->line[n - 1] == '\r'))
        c->line[--n] = '\0';
    c->ncols = 0;
    for (char *p = c->line;;) {
        if (c->ncols == c->colcap) {
            c->colcap = c->colcap ? c->colcap * 2 : 64;
            c->cols = dg_xrealloc(c->cols, c->colcap * sizeof(*c->cols));
        }
        c->cols[c->ncols++] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    return true;
}

static void csv_close(struct csv *c)
{
    if (c->f)
        fclose(c->f);
    free(c->line);
    free(c->cols);
}

static int col_index(const struct csv *c, const char *name)
{
    for (size_t i = 0; i < c->ncols; i++)
        if (strcmp(c->cols[i], name) == 0)
            return (int)i;
    return -1;
}

/* One function's invocations in one minute of a trace: more is no load a generator sends, and
 * its arrival times would not fit in memory. */
#define INVITRO_MAX_PER_MINUTE 6000000

/* A function's memory in a trace: at most 1 TiB (Azure's functions use at most a few GiB). */
#define TRACE_MAX_MIB (1024 * 1024)

static int parse_double(const struct csv *c, int col, double *out, struct dg_err *err)
{
    char *end;
    if (col < 0 || (size_t)col >= c->ncols)
        return dg_err_set(err, DG_E_INVAL, "%s:%u: missing column %d", c->path, c->lineno, col);
    errno = 0;
    *out = strtod(c->cols[col], &end);
    if (errno || end == c->cols[col] || *end || !isfinite(*out) || *out < 0)
        return dg_err_set(err, DG_E_INVAL, "%s:%u: column %d: expected a number >= 0, got '%.40s'",
                          c->path, c->lineno, col + 1, c->cols[col]);
    return 0;
}

/* ---- functions by name ------------------------------------------------------------------ */

static int fn_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dg_invitro_function *)a)->name,
                  ((const struct dg_invitro_function *)b)->name);
}

static struct dg_invitro_function *fn_find(struct dg_invitro_trace *t, const char *name)
{
    struct dg_invitro_function key = {0};
    snprintf(key.name, sizeof(key.name), "%s", name);
    return bsearch(&key, t->fns, t->nfns, sizeof(*t->fns), fn_cmp);
}

static double rand01(uint64_t *rng)
{
    return (double)(dg_rand_next(rng) >> 11) / 9007199254740992.0; /* [0, 1) */
}

/* A duration (ms) from the percentile points 0, 1, 25, 50, 75, 99, 100. */
static double sample_duration(const struct dg_invitro_function *f, uint64_t *rng)
{
    static const double q[7] = {0, 0.01, 0.25, 0.50, 0.75, 0.99, 1};
    double u = rand01(rng);
    for (int i = 1; i < 7; i++)
        if (u <= q[i]) {
            double w = (u - q[i - 1]) / (q[i] - q[i - 1]);
            return f->dur_pct[i - 1] + w * (f->dur_pct[i] - f->dur_pct[i - 1]);
        }
    return f->dur_pct[6];
}

/* ---- 2019: invocations.csv + durations.csv + memory.csv + dirigent.json ------------------ */

static int load_2019_durations(struct dg_invitro_trace *t, const char *dir, struct dg_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/durations.csv", dir);
    struct csv c;
    if (csv_open(&c, path, err) < 0)
        return -1;
    static const char *const names[7] = {"percentile_Average_0",  "percentile_Average_1",
                                         "percentile_Average_25", "percentile_Average_50",
                                         "percentile_Average_75", "percentile_Average_99",
                                         "percentile_Average_100"};
    int cols[7], fcol;
    int rc = 0;
    if (!csv_next(&c) || (fcol = col_index(&c, "HashFunction")) < 0) {
        rc = dg_err_set(err, DG_E_INVAL, "%s: expected a header with HashFunction", path);
        goto out;
    }
    for (int i = 0; i < 7; i++)
        if ((cols[i] = col_index(&c, names[i])) < 0) {
            rc = dg_err_set(err, DG_E_INVAL, "%s: no column %s", path, names[i]);
            goto out;
        }
    while (csv_next(&c)) {
        if ((size_t)fcol >= c.ncols)
            continue;
        struct dg_invitro_function *f = fn_find(t, c.cols[fcol]);
        if (!f)
            continue;
        for (int i = 0; i < 7; i++)
            if ((rc = parse_double(&c, cols[i], &f->dur_pct[i], err)) < 0)
                goto out;
        for (int i = 1; i < 7; i++) /* a CDF never goes down */
            if (f->dur_pct[i] < f->dur_pct[i - 1])
                f->dur_pct[i] = f->dur_pct[i - 1];
        f->has_pct = true;
    }
out:
    csv_close(&c);
    return rc;
}

static int load_2019_memory(struct dg_invitro_trace *t, const char *dir,
                            const struct dg_invitro_trace_opts *o, struct dg_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/memory.csv", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return 0; /* optional: the defaults stay */
    struct csv c;
    if (csv_open(&c, path, err) < 0)
        return -1;
    int fcol = -1, mcol = -1, rc = 0;
    /* the request covers the function's peak: the 100th percentile of its allocation */
    if (!csv_next(&c) || (fcol = col_index(&c, "HashFunction")) < 0 ||
        (mcol = col_index(&c, "AverageAllocatedMb_pct100")) < 0) {
        rc = dg_err_set(err, DG_E_INVAL,
                        "%s: expected a header with HashFunction and AverageAllocatedMb_pct100",
                        path);
        goto out;
    }
    while (csv_next(&c)) {
        if ((size_t)fcol >= c.ncols)
            continue;
        struct dg_invitro_function *f = fn_find(t, c.cols[fcol]);
        double mb = 0;
        if (!f)
            continue;
        if ((rc = parse_double(&c, mcol, &mb, err)) < 0)
            goto out;
        if (mb > TRACE_MAX_MIB) { /* also keeps the conversion below in range */
            rc = dg_err_set(err, DG_E_INVAL,
                            "%s:%u: AverageAllocatedMb_pct100 %.6g MiB is over the most a trace "
                            "may ask for (%d MiB)",
                            c.path, c.lineno, mb, TRACE_MAX_MIB);
            goto out;
        }
        f->memory_mib = (int64_t)DG_MAX(1.0, ceil(mb));
        if (o->cpu_per_mib > 0)
            f->cpu_milli = (int64_t)DG_MAX(1.0, ceil((double)f->memory_mib * o->cpu_per_mib));
    }
out:
    csv_close(&c);
    return rc;
}

static int load_2019_deployment(struct dg_invitro_trace *t, const char *dir, struct dg_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/dirigent.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j || !json_is_array(j)) {
        json_decref(j);
        return dg_err_set(err, DG_E_INVAL, "%s:%d: %s", path, je.line,
                          j ? "expected an array" : je.text);
    }
    size_t i;
    json_t *item;
    json_array_foreach(j, i, item)
    {
        const char *h = json_string_value(json_object_get(item, "HashFunction"));
        struct dg_invitro_function *f = h ? fn_find(t, h) : NULL;
        if (!f)
            continue;
        json_t *up = json_object_get(item, "ScalingUpperBound");
        json_t *lo = json_object_get(item, "ScalingLowerBound");
        if (json_is_integer(up) && json_integer_value(up) > 0)
            f->upper_bound = (int)DG_MIN(json_integer_value(up), INT32_MAX);
        if (json_is_integer(lo) && json_integer_value(lo) >= 0)
            f->lower_bound = (int)DG_MIN(json_integer_value(lo), INT32_MAX);
    }
    json_decref(j);
    return 0;
}

static int inv_cmp(const void *a, const void *b)
{
    const struct dg_invitro_invocation *x = a, *y = b;
    if (x->arrival_us != y->arrival_us)
        return x->arrival_us < y->arrival_us ? -1 : 1;
    return x->fn < y->fn ? -1 : x->fn > y->fn;
}

static void push_inv(struct dg_invitro_trace *t, size_t *cap, uint64_t arrival, uint64_t dur,
                     uint32_t fn)
{
    if (t->ninvs == *cap) {
        *cap = *cap ? *cap * 2 : 4096;
        t->invs = dg_xrealloc(t->invs, *cap * sizeof(*t->invs));
    }
    t->invs[t->ninvs++] = (struct dg_invitro_invocation){arrival, dur ? dur : 1, fn};
}

static int load_2019(const char *dir, const struct dg_invitro_trace_opts *o,
                     struct dg_invitro_trace *t, struct dg_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/invocations.csv", dir);
    struct csv c;
    if (csv_open(&c, path, err) < 0)
        return -1;
    int fcol, first = -1, rc = 0;
    if (!csv_next(&c) || (fcol = col_index(&c, "HashFunction")) < 0 ||
        (first = col_index(&c, "1")) < 0) {
        csv_close(&c);
        return dg_err_set(err, DG_E_INVAL,
                          "%s: expected a header HashOwner,HashApp,HashFunction,Trigger,1,2,...",
                          path);
    }
    size_t minutes = c.ncols - (size_t)first;
    if (o->minutes > 0 && (size_t)o->minutes < minutes)
        minutes = (size_t)o->minutes;
    /* the counts, kept until the functions are sorted and their durations known */
    size_t cap = 0, ncounts = 0;
    uint32_t *counts = dg_xcalloc(1, sizeof(*counts));
    while (csv_next(&c)) {
        if (c.ncols < (size_t)first + minutes) {
            rc = dg_err_set(err, DG_E_INVAL, "%s:%u: expected %zu minute columns, got %zu", path,
                            c.lineno, minutes, c.ncols - DG_MIN(c.ncols, (size_t)first));
            goto out;
        }
        if (t->nfns == cap) {
            cap = cap ? cap * 2 : 64;
            t->fns = dg_xrealloc(t->fns, cap * sizeof(*t->fns));
            counts = dg_xrealloc(counts, (cap * minutes + 1) * sizeof(*counts));
        }
        struct dg_invitro_function *f = &t->fns[t->nfns];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", c.cols[fcol]);
        f->memory_mib = o->memory_mib;
        f->cpu_milli = o->cpu_milli;
        for (size_t m = 0; m < minutes; m++) {
            double v;
            if ((rc = parse_double(&c, first + (int)m, &v, err)) < 0)
                goto out;
            if (v > INVITRO_MAX_PER_MINUTE) {
                rc = dg_err_set(err, DG_E_INVAL,
                                "%s:%u: column %d: at most %d invocations a minute (100,000/s), "
                                "got '%.40s'",
                                path, c.lineno, first + (int)m + 1, INVITRO_MAX_PER_MINUTE,
                                c.cols[first + (int)m]);
                goto out;
            }
            counts[t->nfns * minutes + m] = (uint32_t)v;
        }
        t->nfns++;
        ncounts++;
    }
    /* sort functions by name, keeping their counts with them */
    {
        size_t *order = dg_xcalloc(t->nfns ? t->nfns : 1, sizeof(*order));
        struct dg_invitro_function *sorted = dg_xcalloc(t->nfns ? t->nfns : 1, sizeof(*sorted));
        for (size_t i = 0; i < t->nfns; i++)
            sorted[i] = t->fns[i];
        qsort(sorted, t->nfns, sizeof(*sorted), fn_cmp);
        for (size_t i = 0; i < t->nfns; i++)
            order[i] = (size_t)(fn_find(&(struct dg_invitro_trace){.fns = sorted, .nfns = t->nfns},
                                        t->fns[i].name) -
                                sorted);
        uint32_t *c2 = dg_xcalloc(t->nfns * minutes + 1, sizeof(*c2));
        for (size_t i = 0; i < t->nfns; i++)
            memcpy(&c2[order[i] * minutes], &counts[i * minutes], minutes * sizeof(*c2));
        free(t->fns);
        free(counts);
        t->fns = sorted;
        counts = c2;
        free(order);
    }
    if ((rc = load_2019_durations(t, dir, err)) < 0 ||
        (rc = load_2019_memory(t, dir, o, err)) < 0 || (rc = load_2019_deployment(t, dir, err)) < 0)
        goto out;
    for (size_t i = 0; i < t->nfns; i++)
        if (!t->fns[i].has_pct) {
            rc = dg_err_set(err, DG_E_INVAL, "%s/durations.csv: no row for function %s", dir,
                            t->fns[i].name);
            goto out;
        }
    uint64_t rng = o->seed ? o->seed : 1;
    size_t icap = 0;
    for (size_t m = 0; m < minutes; m++) {
        for (size_t i = 0; i < t->nfns; i++) {
            uint32_t n = counts[i * minutes + m];
            if (n == 0)
                continue;
            uint64_t base = m * US_PER_MIN;
            double *at = dg_xcalloc(n + 1, sizeof(*at));
            if (o->iat == DG_INVITRO_IAT_EQUIDISTANT) {
                for (uint32_t k = 0; k < n; k++)
                    at[k] = (double)k * 60e6 / n;
            } else if (o->iat == DG_INVITRO_IAT_UNIFORM) {
                for (uint32_t k = 0; k < n; k++)
                    at[k] = rand01(&rng) * 60e6;
            } else { /* exponential gaps, scaled so the minute holds them all */
                double sum = 0;
                for (uint32_t k = 0; k <= n; k++)
                    sum += (at[k] = -log(1 - rand01(&rng)));
                double acc = 0;
                for (uint32_t k = 0; k < n; k++) {
                    acc += at[k];
                    at[k] = acc / sum * 60e6;
                }
            }
            for (uint32_t k = 0; k < n; k++) {
                double ms = sample_duration(&t->fns[i], &rng);
                push_inv(t, &icap, base + (uint64_t)at[k], (uint64_t)(ms * 1000), (uint32_t)i);
            }
            free(at);
        }
    }
    if (t->ninvs) /* qsort(NULL, 0, ...) is undefined (found by fuzz_trace) */
        qsort(t->invs, t->ninvs, sizeof(*t->invs), inv_cmp);
    t->end_us = minutes * US_PER_MIN;
    t->format = "azure-2019";
out:
    free(counts);
    csv_close(&c);
    return rc;
}

/* ---- 2021: app,func,end_timestamp,duration ---------------------------------------------- */

static int load_2021(const char *path, const struct dg_invitro_trace_opts *o,
                     struct dg_invitro_trace *t, struct dg_err *err)
{
    struct csv c;
    if (csv_open(&c, path, err) < 0)
        return -1;
    int fcol, ecol, dcol, rc = 0;
    if (!csv_next(&c) || (fcol = col_index(&c, "func")) < 0 ||
        (ecol = col_index(&c, "end_timestamp")) < 0 || (dcol = col_index(&c, "duration")) < 0) {
        csv_close(&c);
        return dg_err_set(err, DG_E_INVAL, "%s: expected a header app,func,end_timestamp,duration",
                          path);
    }
    /* two passes over the rows in memory: functions first (sorted), then invocations */
    struct row {
        char name[72];
        double end, dur;
    } *rows = NULL;
    size_t nrows = 0, rcap = 0;
    while (csv_next(&c)) {
        double end, dur;
        if ((rc = parse_double(&c, ecol, &end, err)) < 0 ||
            (rc = parse_double(&c, dcol, &dur, err)) < 0)
            goto out;
        if ((size_t)fcol >= c.ncols) {
            rc = dg_err_set(err, DG_E_INVAL, "%s:%u: no func column", path, c.lineno);
            goto out;
        }
        if (nrows == rcap) {
            rcap = rcap ? rcap * 2 : 1024;
            rows = dg_xrealloc(rows, rcap * sizeof(*rows));
        }
        snprintf(rows[nrows].name, sizeof(rows[nrows].name), "%s", c.cols[fcol]);
        rows[nrows].end = end;
        rows[nrows].dur = dur;
        nrows++;
    }
    /* the functions: every name once, sorted */
    t->fns = dg_xcalloc(nrows ? nrows : 1, sizeof(*t->fns));
    for (size_t i = 0; i < nrows; i++)
        snprintf(t->fns[i].name, sizeof(t->fns[i].name), "%s", rows[i].name);
    qsort(t->fns, nrows, sizeof(*t->fns), fn_cmp);
    for (size_t i = 0; i < nrows; i++) {
        if (t->nfns && strcmp(t->fns[t->nfns - 1].name, t->fns[i].name) == 0)
            continue;
        struct dg_invitro_function *f = &t->fns[t->nfns++];
        memmove(f->name, t->fns[i].name, sizeof(f->name));
        f->memory_mib = o->memory_mib;
        f->cpu_milli = o->cpu_milli;
    }
    size_t icap = 0;
    for (size_t i = 0; i < nrows; i++) {
        double start = DG_MAX(0.0, rows[i].end - rows[i].dur);
        uint32_t fn = (uint32_t)(fn_find(t, rows[i].name) - t->fns);
        push_inv(t, &icap, (uint64_t)llround(start * 1e6), (uint64_t)llround(rows[i].dur * 1e6),
                 fn);
        t->end_us = DG_MAX(t->end_us, (uint64_t)llround(rows[i].end * 1e6));
    }
    if (t->ninvs)
        qsort(t->invs, t->ninvs, sizeof(*t->invs), inv_cmp);
    t->format = "azure-2021";
out:
    free(rows);
    csv_close(&c);
    return rc;
}

int dg_invitro_trace_load(const char *path, const struct dg_invitro_trace_opts *o,
                          struct dg_invitro_trace *out, struct dg_err *err)
{
    memset(out, 0, sizeof(*out));
    struct stat st;
    if (stat(path, &st) != 0)
        return dg_err_set(err, -errno, "trace '%s': %s", path, strerror(errno));
    int rc;
    if (S_ISDIR(st.st_mode)) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/invocations.csv", path);
        if (stat(p, &st) == 0) {
            rc = load_2019(path, o, out, err);
        } else { /* a directory with one 2021 CSV */
            DIR *d = opendir(path);
            struct dirent *e;
            char found[4096] = "";
            while (d && (e = readdir(d)))
                if (strstr(e->d_name, ".csv") && !found[0])
                    snprintf(found, sizeof(found), "%s/%s", path, e->d_name);
            if (d)
                closedir(d);
            if (!found[0])
                return dg_err_set(err, DG_E_INVAL,
                                  "trace '%s': neither invocations.csv (Azure 2019) nor a CSV of "
                                  "invocations (Azure 2021) in it",
                                  path);
            rc = load_2021(found, o, out, err);
        }
    } else {
        rc = load_2021(path, o, out, err);
    }
    if (rc == 0 && out->ninvs == 0)
        rc = dg_err_set(err, DG_E_INVAL, "trace '%s': no invocations", path);
    if (rc < 0)
        dg_invitro_trace_free(out);
    return rc;
}

void dg_invitro_trace_free(struct dg_invitro_trace *t)
{
    free(t->fns);
    free(t->invs);
    memset(t, 0, sizeof(*t));
}
