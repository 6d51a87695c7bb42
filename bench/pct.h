/* Percentiles of samples for the benchmark programs (sorts v in place; nearest rank). */
#ifndef SD_BENCH_PCT_H
#define SD_BENCH_PCT_H
#include <stdlib.h>

static inline int bench_cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-quantile (0..1) of v[0..n); 0 when empty. */
static inline double pct(double *v, int n, double p) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_d);
    return v[(int)(p * (n - 1) + 0.5)];
}
#endif
