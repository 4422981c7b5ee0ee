/*
 * invitro_trace.h: the Azure Functions trace formats InVitro reads (the 2019 format: a
 * directory with invocations.csv, durations.csv, memory.csv and dirigent.json; the 2021
 * format: one CSV app,func,end_timestamp,duration), loaded into invocations with arrival times
 * and durations. `dirigent-sim` replays them through the cores; `dirigent load --trace` sends
 * them to a cluster. Same seed, same invocations.
 */
#ifndef DIRIGENT_INVITRO_TRACE_H
#define DIRIGENT_INVITRO_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dirigent/common.h"

struct dg_invitro_function {
    char name[72];      /* the trace's hash (shortened in tables) */
    int64_t memory_mib; /* its request */
    int64_t cpu_milli;
    int upper_bound, lower_bound; /* from dirigent.json when present */
    /* durations: the percentile points (ms) of the 2019 format, for sampling */
    double dur_pct[7]; /* 0, 1, 25, 50, 75, 99, 100 */
    bool has_pct;
};

struct dg_invitro_invocation {
    uint64_t arrival_us;
    uint64_t duration_us;
    uint32_t fn; /* index into the trace's fns */
};

struct dg_invitro_trace {
    struct dg_invitro_function *fns; /* sorted by name */
    size_t nfns;
    struct dg_invitro_invocation *invs; /* sorted by arrival, then function */
    size_t ninvs;
    uint64_t end_us;    /* the trace's length (whole minutes for the 2019 format) */
    const char *format; /* "azure-2019" or "azure-2021" (static) */
};

/* How the 2019 format's arrivals are spread within each minute (InVitro's IAT modes). */
enum dg_invitro_iat {
    DG_INVITRO_IAT_EQUIDISTANT,
    DG_INVITRO_IAT_UNIFORM,
    DG_INVITRO_IAT_EXPONENTIAL
};

struct dg_invitro_trace_opts {
    int64_t minutes;         /* 2019: the first N minutes (0: all) */
    enum dg_invitro_iat iat; /* 2019: arrivals within each minute */
    uint64_t seed;           /* arrivals and durations */
    int64_t cpu_milli;       /* a function's CPU request (2021, or no memory.csv): default */
    int64_t memory_mib;      /* its memory request when the trace has none */
    double cpu_per_mib;      /* 2019 with memory.csv: milli-CPU per MiB (Lambda's 1 vCPU per
                                 1769 MB: 0.565); 0 = use cpu_milli */
};

/* Load `path`: a 2019 directory, a 2021 CSV file, or a directory holding one. On success
 * `*out` is owned by the caller (dg_invitro_trace_free); on error it holds nothing and `err`
 * names the file and line. */
int dg_invitro_trace_load(const char *path, const struct dg_invitro_trace_opts *o,
                          struct dg_invitro_trace *out, struct dg_err *err);
void dg_invitro_trace_free(struct dg_invitro_trace *t);

#endif
