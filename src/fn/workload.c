/*
 * workload.c: a real CPU loop. InVitro's trace function spins `multiplier`
 * iterations per requested millisecond, each iteration 100 square roots; the
 * result is kept in a volatile sink so the compiler cannot drop the work.
 */
#include "workload.h"

#include <math.h>

#include "dirigent/common.h"

static volatile double sink;

void fn_work_iterations(uint64_t iterations)
{
    double x = sink + 2.0;
    for (uint64_t i = 0; i < iterations; i++)
        for (int k = 0; k < 100; k++)
            x = sqrt(x + (double)k);
    sink = x;
}

uint64_t fn_spin_ms(uint64_t ms)
{
    uint64_t end = dg_now_us() + ms * 1000u, n = 0;
    while (dg_now_us() < end) {
        fn_work_iterations(8); /* ~2-5 us of work between clock reads */
        n += 8;
    }
    return n;
}

uint64_t fn_calibrate(uint64_t sample_ms)
{
    uint64_t iters = 0, start = dg_now_us(), end = start + sample_ms * 1000u, now;
    while ((now = dg_now_us()) < end) {
        fn_work_iterations(64);
        iters += 64;
    }
    uint64_t us = now - start;
    return us ? iters * 1000u / us : iters;
}
