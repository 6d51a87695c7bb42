/* A persistent pool of worker threads for the CPU backend. Created once with the backend; each op hands
 * it a job split into chunks that the threads (the caller included) claim one at a time. Between ops
 * workers spin briefly, then sleep on a futex, so no thread is created per op or per token. The caller
 * waits only for chunks in progress, never for a worker that is late to wake (a shared machine). */
#ifndef SD_THREADPOOL_H
#define SD_THREADPOOL_H
#include <stdint.h>

#include "base/err.h"

typedef struct sd_pool sd_pool;

/* fn(arg, ith, nth) runs once for each ith in [0, nth), nth = the pool size, on some thread of the pool
 * (usually thread ith; a late worker's share runs on another thread). */
typedef void (*sd_pool_fn)(void *arg, int ith, int nth);
/* fn(arg, begin, end) handles items [begin, end) of a parallel for. */
typedef void (*sd_pool_range_fn)(void *arg, int64_t begin, int64_t end);

/* n_threads <= 0: one per online CPU. */
int sd_pool_new(int n_threads, sd_pool **out, sd_err *err);
void sd_pool_free(sd_pool *p);
int sd_pool_size(const sd_pool *p);
/* Runs fn for every ith and returns when all are done. Not reentrant: one caller at a time. */
void sd_pool_run(sd_pool *p, sd_pool_fn fn, void *arg);
/* Splits [0, n) into chunks of `grain` items (the last may be shorter; chunk boundaries are multiples of
 * grain, so they never depend on the thread count) handed out dynamically. Runs on the calling thread
 * alone when n <= grain. */
void sd_pool_for(sd_pool *p, int64_t n, int64_t grain, sd_pool_range_fn fn, void *arg);
/* Online CPUs of this machine (at least 1). */
int sd_online_cpus(void);

#endif
