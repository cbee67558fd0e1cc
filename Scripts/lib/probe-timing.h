// Shared by the C probes in Scripts/lib: a monotonic clock in nanoseconds and a qsort comparator
// for latencies.
#ifndef RINGLOG_PROBE_TIMING_H
#define RINGLOG_PROBE_TIMING_H
#include <time.h>

static inline long long nanos(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

static inline int compare_nanos(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}
#endif
