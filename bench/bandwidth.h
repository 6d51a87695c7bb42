/* The machine's memory read bandwidth: the yardstick decode speed is measured against. */
#ifndef SD_BANDWIDTH_H
#define SD_BANDWIDTH_H
#include <stddef.h>

/* Streams through a buffer of `bytes` (make it far larger than the last-level cache) with n_threads
 * threads (<= 0: all online CPUs), each reading its own contiguous part with wide loads, and returns the
 * best of several passes in GB/s (1e9 bytes per second), or a negative value when the buffer cannot be
 * allocated. */
double sd_bench_read_bandwidth(int n_threads, size_t bytes);

#endif
