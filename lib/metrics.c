/*
 * metrics.c: a Prometheus registry and its text exposition (format 0.0.4).
 *
 * A registry keeps its families in creation order, and renders them in that
 * order. A family owns its children (one per label set): each child is a
 * separate allocation, so the pointer dg_metric_get returns stays valid while
 * other children come and go; callers look a child up once (per function, per
 * upstream) and keep it, so the hot path is one add on a double. The children
 * sit in a chained hash keyed by the label values (for lookup) and in a
 * doubly-linked list (for rendering in creation order and O(1) removal). The
 * label part of each series (`function="hello",code="200"`) is escaped once at
 * creation, not at every scrape.
 *
 * Histograms keep a non-cumulative count per bucket (the last one is +Inf) so
 * an observation is one increment; rendering accumulates them, as the format
 * wants `le` buckets cumulative.
 *
 * Misuse (an invalid metric or label name, a duplicate family, a wrong label
 * count, non-increasing bounds, a negative counter increment, an operation on
 * the wrong metric type) is a programming error: it prints a message to stderr
 * and aborts.
 *
 * Not thread-safe: a registry belongs to one daemon's libuv loop thread.
 */
#include "dirigent/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dg_metric {
    struct dg_metric_family *fam;
    struct dg_metric *hnext;       /* hash chain */
    struct dg_metric *prev, *next; /* creation order */
    uint64_t hash;
    char **values;      /* nlabels copies, raw */
    char *labels_text;  /* `l1="v1",l2="v2"`, escaped; "" without labels */
    double value;       /* counter or gauge value; histogram sum */
    uint64_t count;     /* histogram observations */
    uint64_t buckets[]; /* histogram: nbounds + 1 non-cumulative counts, the last is +Inf */
};

struct dg_metric_family {
    struct dg_metric_family *next; /* creation order in the registry */
    char *name, *help;
    enum dg_metric_type type;
    char **labels;
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    double (*fn)(void *ud); /* dg_metrics_gauge_fn: computed at render time */
    void *ud;
    struct dg_metric **table; /* nbuckets chains */
    size_t nbuckets, nchildren;
    struct dg_metric *head, *tail;
};

struct dg_metrics {
    struct dg_metric_family *head, *tail;
};

const double dg_metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
const size_t dg_metrics_latency_nbuckets = DG_ARRAY_LEN(dg_metrics_latency_buckets);

static void misuse(const char *fmt, ...) DG_PRINTF(1, 2) __attribute__((noreturn));

static void misuse(const char *fmt, ...)
{
    va_list ap;
    fputs("fatal: metrics misuse: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_metric_name(const char *s)
{
    if (!s || !*s || is_digit(*s))
        return false;
    for (; *s; s++)
        if (!is_alpha_(*s) && !is_digit(*s) && *s != ':')
            return false;
    return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, and names starting with "__" are reserved by Prometheus. */
static bool valid_label_name(const char *s)
{
    if (!s || !*s || is_digit(*s) || strncmp(s, "__", 2) == 0)
        return false;
    for (; *s; s++)
        if (!is_alpha_(*s) && !is_digit(*s))
            return false;
    return true;
}

/* Split "a, b" into label names, checking each; spaces around names are ignored. */
static void parse_labels(struct dg_metric_family *f, const char *labels)
{
    if (!labels || !*labels)
        return;
    size_t n = 1;
    for (const char *p = labels; *p; p++)
        n += *p == ',';
    f->labels = dg_xcalloc(n, sizeof(*f->labels));
    const char *p = labels;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        char *name = dg_xstrndup(a, (size_t)(b - a));
        if (!valid_label_name(name))
            misuse("%s: invalid label name '%s' in \"%s\"", f->name, name, labels);
        if (f->type == DG_METRIC_HISTOGRAM && strcmp(name, "le") == 0)
            misuse("%s: a histogram cannot have a label named 'le'", f->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->labels[j], name) == 0)
                misuse("%s: duplicate label name '%s'", f->name, name);
        f->labels[i] = name;
        f->nlabels++;
        p = *end ? end + 1 : end;
    }
}

static struct dg_metric_family *family_new(struct dg_metrics *m, const char *name, const char *help,
                                           enum dg_metric_type type, const char *labels)
{
    if (!m)
        misuse("NULL registry");
    if (!valid_metric_name(name))
        misuse("invalid metric name '%s'", name ? name : "(null)");
    for (struct dg_metric_family *g = m->head; g; g = g->next)
        if (strcmp(g->name, name) == 0)
            misuse("metric '%s' registered twice", name);
    struct dg_metric_family *f = dg_xcalloc(1, sizeof(*f));
    f->name = dg_xstrdup(name);
    f->help = dg_xstrdup(help ? help : "");
    f->type = type;
    parse_labels(f, labels);
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

struct dg_metrics *dg_metrics_new(void)
{
    return dg_xcalloc(1, sizeof(struct dg_metrics));
}

static void child_free(struct dg_metric *c)
{
    for (size_t i = 0; i < c->fam->nlabels; i++)
        free(c->values[i]);
    free(c->values);
    free(c->labels_text);
    free(c);
}

void dg_metrics_free(struct dg_metrics *m)
{
    if (!m)
        return;
    struct dg_metric_family *f = m->head;
    while (f) {
        struct dg_metric_family *fnext = f->next;
        struct dg_metric *c = f->head;
        while (c) {
            struct dg_metric *cnext = c->next;
            child_free(c);
            c = cnext;
        }
        for (size_t i = 0; i < f->nlabels; i++)
            free(f->labels[i]);
        free(f->labels);
        free(f->bounds);
        free(f->table);
        free(f->name);
        free(f->help);
        free(f);
        f = fnext;
    }
    free(m);
}

struct dg_metric_family *dg_metrics_counter(struct dg_metrics *m, const char *name,
                                            const char *help, const char *labels)
{
    return family_new(m, name, help, DG_METRIC_COUNTER, labels);
}

struct dg_metric_family *dg_metrics_gauge(struct dg_metrics *m, const char *name, const char *help,
                                          const char *labels)
{
    return family_new(m, name, help, DG_METRIC_GAUGE, labels);
}

struct dg_metric_family *dg_metrics_histogram(struct dg_metrics *m, const char *name,
                                              const char *help, const char *labels,
                                              const double *bounds, size_t nbounds)
{
    /* Check the bounds before registering so a misuse message names the real problem. */
    if (nbounds > 0 && !bounds)
        misuse("%s: NULL bounds with nbounds %zu", name ? name : "(null)", nbounds);
    for (size_t i = 0; i < nbounds; i++) {
        if (!isfinite(bounds[i]))
            misuse("%s: bucket bound %zu is not finite (+Inf is implicit)", name ? name : "(null)",
                   i);
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            misuse("%s: bucket bounds must be strictly increasing (%g after %g)",
                   name ? name : "(null)", bounds[i], bounds[i - 1]);
    }
    struct dg_metric_family *f = family_new(m, name, help, DG_METRIC_HISTOGRAM, labels);
    if (nbounds > 0) {
        f->bounds = dg_xmalloc(nbounds * sizeof(*bounds));
        memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
    }
    f->nbounds = nbounds;
    return f;
}

void dg_metrics_gauge_fn(struct dg_metrics *m, const char *name, const char *help,
                         double (*fn)(void *ud), void *ud)
{
    if (!fn)
        misuse("%s: NULL gauge function", name ? name : "(null)");
    struct dg_metric_family *f = family_new(m, name, help, DG_METRIC_GAUGE, NULL);
    f->fn = fn;
    f->ud = ud;
}

/* ---- children ---- */

/* FNV-1a over the values, each with its terminating NUL so ("a","bc") != ("ab","c"). */
static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)values[i];
        do {
            h ^= *p;
            h *= 1099511628211ull;
        } while (*p++);
    }
    return h;
}

/* Abort unless `values` fits the family's label names. Only a NULL where a value should be
 * can be detected: the array carries no length. */
static void check_values(const struct dg_metric_family *f, const char *const *values)
{
    if (f->fn)
        misuse("%s: a gauge function has no children", f->name);
    if (f->nlabels == 0) {
        if (values)
            misuse("%s: takes no label values", f->name);
        return;
    }
    if (!values)
        misuse("%s: needs %zu label values, got none", f->name, f->nlabels);
    for (size_t i = 0; i < f->nlabels; i++)
        if (!values[i])
            misuse("%s: label '%s' has a NULL value", f->name, f->labels[i]);
}

static struct dg_metric *find_child(const struct dg_metric_family *f, const char *const *values,
                                    uint64_t h)
{
    if (!f->table)
        return NULL;
    for (struct dg_metric *c = f->table[h & (f->nbuckets - 1)]; c; c = c->hnext) {
        if (c->hash != h)
            continue;
        size_t i = 0;
        while (i < f->nlabels && strcmp(c->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels)
            return c;
    }
    return NULL;
}

static void grow_table(struct dg_metric_family *f)
{
    size_t n = f->nbuckets ? f->nbuckets * 2 : 16;
    struct dg_metric **t = dg_xcalloc(n, sizeof(*t));
    for (struct dg_metric *c = f->head; c; c = c->next) {
        c->hnext = t[c->hash & (n - 1)];
        t[c->hash & (n - 1)] = c;
    }
    free(f->table);
    f->table = t;
    f->nbuckets = n;
}

/* Label value escaping of the text format: backslash, double quote and newline. */
static void put_escaped(struct dg_buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            dg_buf_puts(b, "\\\\");
        else if (*s == '\n')
            dg_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            dg_buf_puts(b, "\\\"");
        else
            dg_buf_append(b, s, 1);
    }
}

static struct dg_metric *child_new(struct dg_metric_family *f, const char *const *values,
                                   uint64_t h)
{
    size_t nb = f->type == DG_METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
    struct dg_metric *c = dg_xcalloc(1, sizeof(*c) + nb * sizeof(c->buckets[0]));
    c->fam = f;
    c->hash = h;
    c->values = dg_xcalloc(f->nlabels ? f->nlabels : 1, sizeof(*c->values));
    struct dg_buf lt = {0};
    for (size_t i = 0; i < f->nlabels; i++) {
        /* values has nlabels entries (check_values) */
        c->values[i] = dg_xstrdup(values[i]); // NOLINT(clang-analyzer-core.CallAndMessage)
        dg_buf_printf(&lt, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(&lt, values[i], true);
        dg_buf_puts(&lt, "\"");
    }
    c->labels_text = lt.data ? lt.data : dg_xstrdup("");

    if (f->nchildren + 1 > f->nbuckets)
        grow_table(f);
    c->hnext = f->table[h & (f->nbuckets - 1)];
    f->table[h & (f->nbuckets - 1)] = c;
    c->prev = f->tail;
    if (f->tail)
        f->tail->next = c;
    else
        f->head = c;
    f->tail = c;
    f->nchildren++;
    return c;
}

struct dg_metric *dg_metric_get(struct dg_metric_family *f, const char *const *values)
{
    static const char *const no_values[1] = {""};
    check_values(f, values);
    if (!values) /* only for families without labels (check_values made sure) */
        values = no_values;
    uint64_t h = hash_values(values, f->nlabels);
    struct dg_metric *c = find_child(f, values, h);
    return c ? c : child_new(f, values, h);
}

struct dg_metric *dg_metric_get1(struct dg_metric_family *f, const char *value)
{
    if (!value)
        return dg_metric_get(f, NULL);
    if (f->nlabels != 1)
        misuse("%s: dg_metric_get1 on a family with %zu labels", f->name, f->nlabels);
    return dg_metric_get(f, &value);
}

void dg_metric_remove(struct dg_metric_family *f, const char *const *values)
{
    static const char *const no_values[1] = {""};
    check_values(f, values);
    if (!values) /* only for families without labels (check_values made sure) */
        values = no_values;
    uint64_t h = hash_values(values, f->nlabels);
    struct dg_metric *c = find_child(f, values, h);
    if (!c)
        return;
    struct dg_metric **pp = &f->table[h & (f->nbuckets - 1)];
    while (*pp != c)
        pp = &(*pp)->hnext;
    *pp = c->hnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        f->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        f->tail = c->prev;
    f->nchildren--;
    child_free(c);
}

/* ---- updates (the hot path) ---- */

static const char *const type_names[] = {"counter", "gauge", "histogram"};

static void check_type(const struct dg_metric *c, enum dg_metric_type t, const char *op)
{
    if (!c)
        misuse("%s on a NULL metric", op);
    if (c->fam->type != t)
        misuse("%s: %s on a %s", c->fam->name, op, type_names[c->fam->type]);
}

void dg_counter_add(struct dg_metric *c, double v)
{
    check_type(c, DG_METRIC_COUNTER, "dg_counter_add");
    if (!(v >= 0)) /* also catches NaN */
        misuse("%s: counter increment %g is negative", c->fam->name, v);
    c->value += v;
}

void dg_gauge_set(struct dg_metric *g, double v)
{
    check_type(g, DG_METRIC_GAUGE, "dg_gauge_set");
    g->value = v;
}

void dg_gauge_add(struct dg_metric *g, double v)
{
    check_type(g, DG_METRIC_GAUGE, "dg_gauge_add");
    g->value += v;
}

void dg_histogram_observe(struct dg_metric *h, double v)
{
    check_type(h, DG_METRIC_HISTOGRAM, "dg_histogram_observe");
    const struct dg_metric_family *f = h->fam;
    /* First bucket with v <= bound; NaN compares false everywhere and lands in +Inf. */
    size_t lo = 0, hi = f->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    h->buckets[lo]++;
    h->count++;
    h->value += v;
}

double dg_metric_value(const struct dg_metric *c)
{
    return c->value;
}

/* ---- rendering ---- */

/* A sample value as the text format spells it: whole numbers below 2^53 without an
 * exponent ("3"), others in the shortest %g form that reads back to the same double
 * (so a bound of 0.005 renders as "0.005", not "0.0050000000000000001"). */
static void put_value(struct dg_buf *b, double v)
{
    if (isnan(v)) {
        dg_buf_puts(b, "NaN");
    } else if (isinf(v)) {
        dg_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        dg_buf_puts(b, "0"); /* also -0 */
    } else if (fabs(v) < 9007199254740992.0 && v == trunc(v)) {
        dg_buf_printf(b, "%.0f", v);
    } else {
        char s[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(s, sizeof(s), "%.*g", prec, v);
            if (strtod(s, NULL) == v)
                break;
        }
        dg_buf_puts(b, s);
    }
}

static void put_series_name(struct dg_buf *b, const struct dg_metric_family *f, const char *suffix,
                            const char *labels)
{
    dg_buf_puts(b, f->name);
    dg_buf_puts(b, suffix);
    if (*labels)
        dg_buf_printf(b, "{%s}", labels);
    dg_buf_puts(b, " ");
}

/* One child's lines; `c` NULL renders the zero value of an unlabelled family. */
static void render_child(struct dg_buf *b, const struct dg_metric_family *f,
                         const struct dg_metric *c)
{
    const char *labels = c ? c->labels_text : "";
    double value = c ? c->value : 0;
    if (f->type != DG_METRIC_HISTOGRAM) {
        put_series_name(b, f, "", labels);
        put_value(b, value);
        dg_buf_puts(b, "\n");
        return;
    }
    uint64_t cum = 0, count = c ? c->count : 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += c ? c->buckets[i] : 0;
        dg_buf_printf(b, "%s_bucket{%s%sle=\"", f->name, labels, *labels ? "," : "");
        if (i < f->nbounds)
            put_value(b, f->bounds[i]);
        else
            dg_buf_puts(b, "+Inf");
        dg_buf_printf(b, "\"} %" PRIu64 "\n", cum);
    }
    put_series_name(b, f, "_sum", labels);
    put_value(b, value);
    dg_buf_puts(b, "\n");
    put_series_name(b, f, "_count", labels);
    dg_buf_printf(b, "%" PRIu64 "\n", count);
}

void dg_metrics_render(struct dg_metrics *m, struct dg_buf *out)
{
    for (const struct dg_metric_family *f = m->head; f; f = f->next) {
        if (*f->help) {
            dg_buf_printf(out, "# HELP %s ", f->name);
            put_escaped(out, f->help, false);
            dg_buf_puts(out, "\n");
        }
        dg_buf_printf(out, "# TYPE %s %s\n", f->name, type_names[f->type]);
        if (f->fn) {
            put_series_name(out, f, "", "");
            put_value(out, f->fn(f->ud));
            dg_buf_puts(out, "\n");
        } else if (!f->head) {
            /* An unlabelled family shows its zero value, so a scrape shows it exists; a
             * labelled one has no series to show until a label set is used. */
            if (f->nlabels == 0)
                render_child(out, f, NULL);
        } else {
            for (const struct dg_metric *c = f->head; c; c = c->next)
                render_child(out, f, c);
        }
    }
}
