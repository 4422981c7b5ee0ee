/*
 * workload.h: the CPU work of dirigent-fn, kept apart from the server so it
 * can be unit-tested and calibrated.
 */
#ifndef DIRIGENT_FN_WORKLOAD_H
#define DIRIGENT_FN_WORKLOAD_H

#include <stdint.h>

/* InVitro's unit of work: 100 dependent square roots (sqrtsd). */
void fn_work_iterations(uint64_t iterations);
/* Spin for at least `ms` milliseconds of wall-clock time doing real work; returns the
 * iterations done. */
uint64_t fn_spin_ms(uint64_t ms);
/* Iterations per millisecond on this machine, measured over about `sample_ms`. */
uint64_t fn_calibrate(uint64_t sample_ms);

#endif
