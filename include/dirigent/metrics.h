/*
 * metrics.h: Prometheus text exposition (format 0.0.4): counters, gauges and
 * histograms with fixed buckets, optionally with labels. A family is created
 * once; a child (one label set) is looked up once and the pointer kept, so the
 * hot path does one add on a double.
 */
#ifndef DIRIGENT_METRICS_H
#define DIRIGENT_METRICS_H

#include "dirigent/common.h"

struct dg_metrics;
struct dg_metric_family;
struct dg_metric;

enum dg_metric_type { DG_METRIC_COUNTER, DG_METRIC_GAUGE, DG_METRIC_HISTOGRAM };

struct dg_metrics *dg_metrics_new(void);
void dg_metrics_free(struct dg_metrics *m);

/* Create a family. `labels` is a comma-separated list of label names ("function,code") or NULL
 * for none. Strings are copied. Names must be valid Prometheus names (checked: abort on misuse,
 * these are programming errors). Histograms take `nbounds` strictly increasing upper bounds
 * (+Inf is implicit). */
struct dg_metric_family *dg_metrics_counter(struct dg_metrics *m, const char *name,
                                            const char *help, const char *labels);
struct dg_metric_family *dg_metrics_gauge(struct dg_metrics *m, const char *name, const char *help,
                                          const char *labels);
struct dg_metric_family *dg_metrics_histogram(struct dg_metrics *m, const char *name,
                                              const char *help, const char *labels,
                                              const double *bounds, size_t nbounds);
/* A gauge whose value is computed at render time. */
void dg_metrics_gauge_fn(struct dg_metrics *m, const char *name, const char *help,
                         double (*fn)(void *ud), void *ud);

/* The child for a label set (values in the order of the family's label names; count must
 * match; values are copied and escaped on output). Created on first use. The pointer stays
 * valid until dg_metric_remove of that label set or dg_metrics_free. For a family without
 * labels pass NULL. */
struct dg_metric *dg_metric_get(struct dg_metric_family *f, const char *const *values);
/* Shorthand for one label (or none when `value` is NULL). */
struct dg_metric *dg_metric_get1(struct dg_metric_family *f, const char *value);
void dg_metric_remove(struct dg_metric_family *f, const char *const *values);

void dg_counter_add(struct dg_metric *c, double v); /* v >= 0 */
void dg_gauge_set(struct dg_metric *g, double v);
void dg_gauge_add(struct dg_metric *g, double v);
void dg_histogram_observe(struct dg_metric *h, double v);
double dg_metric_value(const struct dg_metric *c); /* counter/gauge value; histogram sum */

/* Append the exposition text of every family (in creation order) to `out`. */
void dg_metrics_render(struct dg_metrics *m, struct dg_buf *out);

/* Common bucket sets, in seconds. */
extern const double dg_metrics_latency_buckets[]; /* 0.0005 .. 60 */
extern const size_t dg_metrics_latency_nbuckets;

#endif
