/*
 * resources.c: the accounting rule (what a sandbox takes on a worker) and the
 * CPU limit policy, in one place for the control plane and the worker. See
 * include/dirigent/resources.h and docs/decisions.md for why.
 */
#include "dirigent/resources.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dg_res_take(const struct dg_res_node *node, int64_t cpu, int64_t mem, int64_t *cpu_out,
                 int64_t *mem_out)
{
    int64_t min_cpu = node && node->min_cpu_milli > 0 ? node->min_cpu_milli : 1;
    int64_t min_mem = node && node->min_memory_mib > 0 ? node->min_memory_mib : 1;
    *cpu_out = DG_MAX(cpu, min_cpu);
    *mem_out = DG_MAX(mem, min_mem);
}

int64_t dg_res_cpu_schedulable(const struct dg_res_node *node)
{
    double f = node->cpu_overcommit > 0 ? node->cpu_overcommit : 1.0;
    double v = floor((double)node->cpu_milli * f);
    return v >= (double)INT64_MAX ? INT64_MAX : (int64_t)v;
}

int dg_cpu_limit_parse(const char *s, struct dg_cpu_limit *out, struct dg_err *err)
{
    if (strcmp(s, "none") == 0) {
        *out = (struct dg_cpu_limit){.kind = DG_CPU_LIMIT_NONE};
        return 0;
    }
    if (strcmp(s, "request") == 0) {
        *out = (struct dg_cpu_limit){.kind = DG_CPU_LIMIT_REQUEST, .factor = 1.0};
        return 0;
    }
    char *end;
    errno = 0;
    double f = *s ? strtod(s, &end) : 0;
    if (*s && (*end == 'x' || *end == 'X'))
        end++;
    if (!*s || errno || *end || !(f > 0) || f > 1000 || s[0] == '+' || s[0] == ' ')
        return dg_err_set(err, DG_E_INVAL,
                          "expected none, request or a factor of the request like 2x "
                          "(0 < factor <= 1000), got '%.32s'",
                          s);
    *out = (struct dg_cpu_limit){.kind = DG_CPU_LIMIT_FACTOR, .factor = f};
    return 0;
}

int64_t dg_cpu_limit_quota(const struct dg_cpu_limit *l, int64_t cpu_milli)
{
    if (l->kind == DG_CPU_LIMIT_NONE)
        return 0;
    double f = l->kind == DG_CPU_LIMIT_REQUEST ? 1.0 : l->factor;
    double q = ceil((double)DG_MAX(cpu_milli, 1) * f);
    return q >= 1e15 ? (int64_t)1e15 : DG_MAX((int64_t)q, 1);
}

uint64_t dg_res_cpu_shares(int64_t cpu_milli)
{
    if (cpu_milli <= 0)
        return 2;
    uint64_t s = (uint64_t)cpu_milli * 1024u / 1000u;
    return s < 2 ? 2 : s > 262144 ? 262144 : s; /* the kernel's cpu.shares bounds */
}
