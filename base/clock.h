/* The monotonic clock, for timings and deadlines everywhere (library, daemon, client, benchmarks, tests).
 * Header-only so that both libspecd.a and libspecd-client.a can use it without linking anything. */
#ifndef SD_CLOCK_H
#define SD_CLOCK_H
#include <time.h>

/* CLOCK_MONOTONIC in seconds. */
static inline double sd_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline double sd_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
#endif
