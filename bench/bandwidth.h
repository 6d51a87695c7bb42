/* The machine's memory read bandwidth: the yardstick decode speed is measured against.
 *
 * On a shared (virtual) machine the bandwidth a process gets changes from one pass to the next (here it
 * jumps between about 33 and 57 GB/s as neighbours come and go), so "best of N" picks a rare quiet moment
 * and makes every ratio against it look worse than it is. Benchmarks therefore pair each timed pass of
 * their own with a probe pass taken right beside it and report the median of the per-pair ratios. */
#ifndef SD_BANDWIDTH_H
#define SD_BANDWIDTH_H
#include <stddef.h>

typedef struct sd_bw_probe sd_bw_probe;

/* A buffer of `bytes` (make it far larger than the last-level cache) read by n_threads threads (<= 0: all
 * online CPUs), each its own contiguous part with wide loads. NULL when it cannot be allocated. */
sd_bw_probe *sd_bw_probe_new(int n_threads, size_t bytes);
/* One read of the whole buffer, in GB/s (1e9 bytes per second). */
double sd_bw_probe_pass(sd_bw_probe *p);
void sd_bw_probe_free(sd_bw_probe *p);

/* The median of `passes` passes in GB/s, or a negative value when the buffer cannot be allocated. */
double sd_bench_read_bandwidth(int n_threads, size_t bytes, int passes);

/* Median of n values (sorts v in place); 0 when n == 0. */
double sd_median(double *v, int n);

#endif
