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

struct sd_pool {
    int n;
    pthread_t *threads;
    sd_pool_fn fn;
    void *arg;
    _Atomic uint32_t gen;      /* bumped once per job; workers futex-wait on it */
    _Atomic uint32_t pending;  /* workers still running the current job; the caller waits on it */
    _Atomic int sleepers;      /* workers inside futex_wait on gen (skip the wake syscall when 0) */
    _Atomic int caller_asleep; /* the caller is (about to be) in futex_wait on pending */
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

typedef struct worker_arg {
    sd_pool *p;
    int ith;
} worker_arg;

static void *worker_main(void *v) {
    worker_arg wa = *(worker_arg *)v;
    free(v);
    sd_pool *p = wa.p;
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
        p->fn(p->arg, wa.ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_asleep)) futex_wake(&p->pending, 1);
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
            wa->ith = i;
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

void sd_pool_run(sd_pool *p, sd_pool_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, (uint32_t)(p->n - 1));
    atomic_fetch_add(&p->gen, 1); /* seq_cst: orders fn/arg/pending before the workers see the new job */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    fn(arg, 0, p->n);
    uint32_t left = atomic_load(&p->pending);
    for (int i = 0; i < SPIN_ITERS && left; i++) {
        cpu_relax();
        left = atomic_load_explicit(&p->pending, memory_order_acquire);
    }
    if (left) {
        atomic_store(&p->caller_asleep, 1);
        while ((left = atomic_load(&p->pending)) != 0) futex_wait(&p->pending, left);
        atomic_store(&p->caller_asleep, 0);
    }
}

typedef struct for_job {
    int64_t n, grain;
    _Atomic int64_t next;
    sd_pool_range_fn fn;
    void *arg;
} for_job;

static void for_worker(void *v, int ith, int nth) {
    for_job *j = v;
    for (;;) {
        int64_t b = atomic_fetch_add(&j->next, j->grain);
        if (b >= j->n) return;
        int64_t e = b + j->grain < j->n ? b + j->grain : j->n;
        j->fn(j->arg, b, e);
    }
}

void sd_pool_for(sd_pool *p, int64_t n, int64_t grain, sd_pool_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain || p->n == 1) {
        fn(arg, 0, n);
        return;
    }
    for_job j = {.n = n, .grain = grain, .fn = fn, .arg = arg};
    atomic_init(&j.next, 0);
    sd_pool_run(p, for_worker, &j);
}
