#include "kernels/cpu/threadpool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Spin iterations before sleeping: long enough to bridge the gap between two ops of one forward pass
 * (a few microseconds), short enough not to burn a shared machine's cores while idle. */
#define SPIN_ITERS 4000

/* Every job is a list of chunks that any thread may run. Threads claim chunks one at a time from
 * `claim`, which holds the job's generation (high 32 bits) and how many chunks are left to claim (low 32
 * bits; both in one word, so a claim can never pair one job's generation with another's count), and
 * the caller returns once `done` reaches the chunk count. The caller never waits for a worker that
 * has no chunk: on a shared machine a worker may sit descheduled for milliseconds, and then the caller
 * (or the other workers) simply runs its share. A worker that wakes late finds the generation moved on
 * and claims nothing, so it never touches a finished job; job fields are read only after a successful
 * claim, when the job cannot finish (and so cannot change) before this worker reports its chunk done. */
typedef struct pool_job {
    sd_pool_range_fn fn;
    void *arg;
    int64_t n, grain;
    uint32_t chunks;
} pool_job;

struct sd_pool {
    int n;
    pthread_t *threads;
    pool_job job;
    _Atomic uint64_t claim;    /* generation << 32 | chunks left to claim */
    _Atomic uint32_t done;     /* chunks finished in the current job; the caller waits on it */
    _Atomic uint32_t gen;      /* bumped once per job; workers futex-wait on it */
    _Atomic int sleepers;      /* workers inside futex_wait on gen (skip the wake syscall when 0) */
    _Atomic int caller_asleep; /* the caller is (about to be) in futex_wait on done */
    _Atomic int stop;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Runs chunks of job `gen` until none is left to claim. */
static void run_chunks(sd_pool *p, uint32_t gen) {
    for (;;) {
        uint64_t w = atomic_load(&p->claim);
        uint32_t left = (uint32_t)w;
        if ((uint32_t)(w >> 32) != gen || left == 0) return;
        if (!atomic_compare_exchange_weak(&p->claim, &w, w - 1)) continue;
        const pool_job *j = &p->job; /* stable from here until this chunk is counted done */
        int64_t i = (int64_t)(j->chunks - left); /* chunks go out in ascending order */
        int64_t b = i * j->grain, e = b + j->grain < j->n ? b + j->grain : j->n;
        j->fn(j->arg, b, e);
        uint32_t chunks = j->chunks;
        if (atomic_fetch_add(&p->done, 1) + 1 == chunks && atomic_load(&p->caller_asleep)) futex_wake(&p->done, 1);
    }
}

typedef struct worker_arg {
    sd_pool *p;
} worker_arg;

static void *worker_main(void *v) {
    sd_pool *p = ((worker_arg *)v)->p;
    free(v);
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = atomic_load(&p->gen);
        for (int i = 0; i < SPIN_ITERS && g == seen; i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen) futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        run_chunks(p, g);
    }
}

int sd_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int sd_pool_new(int n_threads, sd_pool **out, sd_err *err) {
    *out = NULL;
    if (n_threads <= 0) n_threads = sd_online_cpus();
    if (n_threads > 1024) return sd_errf(err, "thread pool: %d threads is too many (at most 1024)", n_threads);
    sd_pool *p = calloc(1, sizeof *p);
    if (!p) return sd_errf(err, "thread pool: out of memory");
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return sd_errf(err, "thread pool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = ENOMEM;
        if (wa) {
            wa->p = p;
            rc = pthread_create(&p->threads[i], NULL, worker_main, wa);
        }
        if (rc != 0) {
            free(wa);
            p->n = i; /* shut down the i - 1 workers already started */
            sd_pool_free(p);
            return sd_errf(err, "thread pool: cannot start thread %d: %s", i, strerror(rc));
        }
    }
    *out = p;
    return 0;
}

void sd_pool_free(sd_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}

int sd_pool_size(const sd_pool *p) { return p->n; }

/* Publishes a job of `chunks` chunks, runs chunks on the calling thread, and waits for the rest. */
static void pool_exec(sd_pool *p, sd_pool_range_fn fn, void *arg, int64_t n, int64_t grain, uint32_t chunks) {
    p->job = (pool_job){fn, arg, n, grain, chunks};
    atomic_store(&p->done, 0);
    uint32_t g = atomic_load(&p->gen) + 1;
    atomic_store(&p->claim, (uint64_t)g << 32 | chunks); /* seq_cst: a successful claim sees the job fields */
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    run_chunks(p, g);
    uint32_t d = atomic_load(&p->done);
    for (int i = 0; i < SPIN_ITERS && d != chunks; i++) {
        cpu_relax();
        d = atomic_load_explicit(&p->done, memory_order_acquire);
    }
    if (d != chunks) {
        atomic_store(&p->caller_asleep, 1);
        while ((d = atomic_load(&p->done)) != chunks) futex_wait(&p->done, d);
        atomic_store(&p->caller_asleep, 0);
    }
}

typedef struct run_job {
    sd_pool_fn fn;
    void *arg;
    int nth;
} run_job;

static void run_one(void *v, int64_t b, int64_t e) {
    const run_job *r = v;
    for (int64_t i = b; i < e; i++) r->fn(r->arg, (int)i, r->nth);
}

void sd_pool_run(sd_pool *p, sd_pool_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    run_job r = {fn, arg, p->n};
    pool_exec(p, run_one, &r, p->n, 1, (uint32_t)p->n);
}

void sd_pool_for(sd_pool *p, int64_t n, int64_t grain, sd_pool_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain || p->n == 1) {
        fn(arg, 0, n);
        return;
    }
    int64_t chunks = (n + grain - 1) / grain;
    if (chunks > UINT32_MAX) { /* never in practice: widen the grain rather than overflow the claim word */
        grain = (n + UINT32_MAX - 1) / UINT32_MAX;
        chunks = (n + grain - 1) / grain;
    }
    pool_exec(p, fn, arg, n, grain, (uint32_t)chunks);
}
