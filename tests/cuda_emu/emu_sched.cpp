/* The CUDA emulation's thread scheduler (see emu.h): each GPU thread of a block is a fiber; fibers switch
 * only at __syncthreads and warp collectives, which complete once every thread they wait for has arrived.
 * A block that can make no progress is a fault, reported with the threads and source lines involved. */
#include <stdarg.h>
#include <sys/mman.h>

#include <vector>

#include "tests/cuda_emu/emu.h"
#include "tests/cuda_emu/emu_internal.h"

/* This file itself is built without instrumentation (it is the hot loop); EMU_ASAN says whether the
 * program links ASan. ASan is not told about fiber switches (its hooks doubled the cost of a switch): it
 * needs them only for use-after-return checks (off) and noreturn calls (abort paths); its reports
 * unwind fiber stacks with the slow unwinder, and on_death names the GPU thread. */
#if defined(__SANITIZE_ADDRESS__) && !defined(EMU_ASAN)
#define EMU_ASAN 1
#endif
#if EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

enum { F_RUN, F_BAR, F_WARP, F_DONE };

struct fiber {
    void *sp;            /* saved stack pointer while switched out */
    char *stack;         /* lowest usable byte */
    uint3 tid;
    int state;
    const char *file;    /* where it waits */
    int line;
    int op;              /* warp_op or bar_op */
    unsigned mask;
    uint64_t value, result;
    int arg, width;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
};

fiber *cur;
uint3 block_idx;
dim3 block_dim, grid_dim;

static const size_t STACK_BYTES = 128 << 10; /* ASan frames are large; a guard page sits below */
static const size_t GUARD = 4096;
static std::vector<fiber> fibers;            /* of the running block */
static std::vector<char *> stacks;           /* reused by every block */
static std::vector<int> warp_waiting;        /* lanes of each warp at a collective */
static int n_threads, n_done, n_bar;
static const std::function<void()> *body;
static const char *kernel_name;
static void *dyn_smem_buf;
static bool faulted;
static void *sched_sp;

/* ---- context switching: callee-saved registers on the stack, then the stack pointer. The floating-point
 * control words are left alone: nothing here changes rounding modes, and saving them cost a third of a
 * switch. ---- */

#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void **save_sp, void *to_sp);
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
#else
static ucontext_t sched_uc;
#endif

static void fiber_main();

static void fiber_init(fiber *f) {
#if defined(__x86_64__)
    uint64_t *p = (uint64_t *)(((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15);
    *--p = 0;                      /* fiber_main's return address: it never returns */
    *--p = (uint64_t)&fiber_main;  /* where emu_ctx_switch's ret goes */
    for (int i = 0; i < 6; i++) *--p = 0; /* rbp, rbx, r12-r15 */
    f->sp = p;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = STACK_BYTES;
    f->uc.uc_link = NULL;
    makecontext(&f->uc, fiber_main, 0);
#endif
}

static void switch_into(fiber *f) {
    cur = f;
#if defined(__x86_64__)
    emu_ctx_switch(&sched_sp, f->sp);
#else
    swapcontext(&sched_uc, &f->uc);
#endif
    cur = NULL;
}

static void switch_out() {
    fiber *f = cur;
#if defined(__x86_64__)
    emu_ctx_switch(&f->sp, sched_sp);
#else
    swapcontext(&f->uc, &sched_uc);
#endif
}

/* Runs the kernel body; kept out of fiber_main so that fiber_main's own frame has nothing for ASan to
 * poison (its frame stays on the stack when the fiber ends). */
static __attribute__((noinline)) void run_body() { (*body)(); }

static void fiber_main() {
    run_body();
    cur->state = F_DONE;
    switch_out();
    abort(); /* not reached: a finished fiber is never resumed */
}

/* ---- fault reports ---- */

static bool fatal = true;
static int n_faults;
static char last_msg[1024];

static int fatal_from_env() {
    const char *e = getenv("SPECD_EMU_FATAL");
    return !(e && !strcmp(e, "0"));
}

void set_fatal(bool f) { fatal = f; }
int fault_count(void) { return n_faults; }
const char *last_fault(void) { return last_msg; }

void report_fault(const char *fmt, ...) {
    static bool env_read;
    if (!env_read) {
        env_read = true;
        if (!fatal_from_env()) fatal = false;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    n_faults++;
    fprintf(stderr, "cuda-emu: FAULT: %s\n", last_msg);
    if (fatal) {
        fprintf(stderr, "cuda-emu: aborting (SPECD_EMU_FATAL=0 turns faults into a sticky CUDA error)\n");
        abort();
    }
}

static const char *op_name(int op, bool barrier) {
    static const char *w[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                              "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp", "__match_any_sync",
                              "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync"};
    static const char *b[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or"};
    return barrier ? b[op] : w[op];
}

static void block_fault(const fiber *f, const char *fmt, ...) {
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    faulted = true;
    report_fault("kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s", kernel_name, block_idx.x, block_idx.y,
                 block_idx.z, f->tid.x, f->tid.y, f->tid.z, what);
}

/* Called by the sanitizers before they end the process: names the GPU thread that was running. */
static void on_death() {
    if (cur)
        fprintf(stderr, "cuda-emu: the error above happened in kernel %s, block (%u,%u,%u), thread (%u,%u,%u)\n",
                kernel_name, block_idx.x, block_idx.y, block_idx.z, cur->tid.x, cur->tid.y, cur->tid.z);
}

__attribute__((constructor)) static void install_death_callback() {
#if EMU_ASAN
    __sanitizer_set_death_callback(on_death);
#endif
}

/* ---- built-ins ---- */

const uint3 &thread_idx() {
    if (!cur) {
        fprintf(stderr, "cuda-emu: threadIdx read outside a kernel\n");
        abort();
    }
    return cur->tid;
}

void *dyn_smem() { return dyn_smem_buf; }

unsigned lane_id() { return (unsigned)(cur - fibers.data()) % 32; }

unsigned active_mask() {
    int base = (int)(cur - fibers.data()) / 32 * 32;
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < n_threads; l++)
        if (fibers[base + l].state != F_DONE) m |= 1u << l;
    return m;
}

static fiber *need_fiber(const char *what) {
    if (!cur) {
        fprintf(stderr, "cuda-emu: %s called outside a kernel\n", what);
        abort();
    }
    return cur;
}

uint64_t warp_collective(const char *file, int line, int op, unsigned mask, uint64_t value, int arg, int width) {
    fiber *f = need_fiber(op_name(op, false));
    f->file = file;
    f->line = line;
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->arg = arg;
    f->width = width;
    f->state = F_WARP;
    switch_out();
    return f->result;
}

int block_barrier(const char *file, int line, int op, int pred) {
    fiber *f = need_fiber(op_name(op, true));
    f->file = file;
    f->line = line;
    f->op = op;
    f->value = (uint64_t)pred;
    f->state = F_BAR;
    switch_out();
    return (int)f->result;
}

/* ---- warp collectives ---- */

static int lanes_in(unsigned mask) { return mask == 0xffffffffu ? 32 : __builtin_popcount(mask); }

/* The lane whose value lane l receives from a shuffle (l itself when the source is out of range). */
static int shfl_source(const fiber *f, int l) {
    int w = f->width, seg = l & ~(w - 1);
    switch (f->op) {
    case W_SHFL: return seg + (f->arg & (w - 1));
    case W_SHFL_UP: return (l - seg) >= f->arg ? l - f->arg : l;
    case W_SHFL_DOWN: return (l - seg) + f->arg < w ? l + f->arg : l;
    default: {
        int s = l ^ f->arg;
        return (s & ~(w - 1)) > seg || s > 31 ? l : s;
    }
    }
}

static void complete_warp(int base, const fiber *first) {
    unsigned mask = first->mask;
    uint64_t ballot = 0, sum = 0, mn = UINT32_MAX, mx = 0;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        const fiber *g = &fibers[base + l];
        if (g->value) ballot |= 1ull << l;
        sum += (uint32_t)g->value;
        mn = (uint32_t)g->value < mn ? (uint32_t)g->value : mn;
        mx = (uint32_t)g->value > mx ? (uint32_t)g->value : mx;
    }
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        fiber *g = &fibers[base + l];
        switch (g->op) {
        case W_SHFL: case W_SHFL_UP: case W_SHFL_DOWN: case W_SHFL_XOR: {
            int s = shfl_source(g, l);
            if (s != l && !(mask >> s & 1)) {
                block_fault(g, "%s at %s:%d reads lane %d, which is not in the mask 0x%08x", op_name(g->op, false),
                            g->file, g->line, s, mask);
                return;
            }
            g->result = fibers[base + s].value;
            break;
        }
        case W_BALLOT: g->result = ballot; break;
        case W_ANY: g->result = ballot != 0; break;
        case W_ALL: g->result = ballot == mask; break;
        case W_MATCH_ANY: {
            uint64_t m = 0;
            for (int k = 0; k < 32; k++)
                if ((mask >> k & 1) && fibers[base + k].value == g->value) m |= 1ull << k;
            g->result = m;
            break;
        }
        case W_REDUCE_ADD: g->result = (uint32_t)sum; break;
        case W_REDUCE_MIN: g->result = mn; break;
        case W_REDUCE_MAX: g->result = mx; break;
        default: g->result = 0; break;
        }
    }
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1) fibers[base + l].state = F_RUN;
    warp_waiting[base / 32] -= lanes_in(mask);
}

/* A lane arrived at a warp collective: check what can be checked now, complete the group when all its
 * lanes are there with the same collective and mask. */
static void warp_arrived(fiber *f) {
    int idx = (int)(f - fibers.data()), base = idx / 32 * 32, lane = idx % 32;
    warp_waiting[idx / 32]++;
    if (!(f->mask >> lane & 1)) {
        block_fault(f, "%s at %s:%d with mask 0x%08x, which leaves out the calling lane %d", op_name(f->op, false),
                    f->file, f->line, f->mask, lane);
        return;
    }
    if (f->width < 1 || f->width > 32 || (f->width & (f->width - 1))) {
        block_fault(f, "%s at %s:%d with width %d (a power of two up to 32 is required)", op_name(f->op, false),
                    f->file, f->line, f->width);
        return;
    }
    if (base + 32 > n_threads && (f->mask >> (n_threads - base) << (n_threads - base)) != 0) {
        int l = n_threads - base;
        while (!(f->mask >> l & 1)) l++;
        block_fault(f, "%s at %s:%d with mask 0x%08x names lane %d, which does not exist (blockDim (%u,%u,%u))",
                    op_name(f->op, false), f->file, f->line, f->mask, l, block_dim.x, block_dim.y, block_dim.z);
        return;
    }
    if (warp_waiting[idx / 32] < lanes_in(f->mask)) return;
    for (int l = 0; l < 32; l++) {
        if (!(f->mask >> l & 1)) continue;
        const fiber *g = &fibers[base + l];
        if (g->state != F_WARP || g->mask != f->mask || g->op != f->op) return;
    }
    complete_warp(base, f);
}

/* Nothing can run: say why, naming the first thread that waits for something that cannot happen. */
static void diagnose_stuck() {
    for (int i = 0; i < n_threads; i++) {
        const fiber *f = &fibers[i];
        if (f->state != F_WARP) continue;
        int base = i / 32 * 32;
        for (int l = 0; l < 32; l++) {
            if (!(f->mask >> l & 1)) continue;
            const fiber *g = &fibers[base + l];
            const char *op = op_name(f->op, false);
            if (g->state == F_DONE)
                return block_fault(f, "%s at %s:%d with mask 0x%08x waits for lane %d, which has exited", op, f->file,
                                   f->line, f->mask, l);
            if (g->state == F_BAR)
                return block_fault(f, "%s at %s:%d with mask 0x%08x waits for lane %d, which waits at %s at %s:%d", op,
                                   f->file, f->line, f->mask, l, op_name(g->op, true), g->file, g->line);
            if (g->state == F_WARP && (g->mask != f->mask || g->op != f->op))
                return block_fault(f, "%s at %s:%d with mask 0x%08x waits for lane %d, which is at %s at %s:%d with "
                                      "mask 0x%08x",
                                   op, f->file, f->line, f->mask, l, op_name(g->op, false), g->file, g->line, g->mask);
        }
    }
    block_fault(&fibers[0], "the block cannot make progress (emulator could not name the cause)");
}

/* Every thread that has not exited waits at a block barrier: release it, or report the mismatch. */
static void complete_barrier() {
    const fiber *w = NULL, *gone = NULL;
    for (int i = 0; i < n_threads; i++) {
        const fiber *f = &fibers[i];
        if (f->state == F_DONE && !gone) gone = f;
        if (f->state != F_BAR) continue;
        if (!w) {
            w = f;
        } else if (f->file != w->file || f->line != w->line || f->op != w->op) {
            return block_fault(f, "waits at %s at %s:%d while thread (%u,%u,%u) waits at %s at %s:%d",
                               op_name(f->op, true), f->file, f->line, w->tid.x, w->tid.y, w->tid.z,
                               op_name(w->op, true), w->file, w->line);
        }
    }
    if (gone)
        return block_fault(gone, "exited while %d threads wait at %s at %s:%d (every thread must reach it)", n_bar,
                           op_name(w->op, true), w->file, w->line);
    int count = 0;
    for (int i = 0; i < n_threads; i++) count += fibers[i].value != 0;
    int result = w->op == B_COUNT ? count : w->op == B_AND ? count == n_threads : w->op == B_OR ? count > 0 : 0;
    for (int i = 0; i < n_threads; i++) {
        fibers[i].result = (uint64_t)result;
        fibers[i].state = F_RUN;
    }
    n_bar = 0;
}

/* ---- blocks ---- */

static void ensure_stacks(int n) {
    while ((int)stacks.size() < n) {
        char *m = (char *)mmap(NULL, STACK_BYTES + GUARD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            fprintf(stderr, "cuda-emu: cannot map a fiber stack\n");
            abort();
        }
        mprotect(m, GUARD, PROT_NONE); /* a stack overflow faults instead of corrupting the next stack */
        stacks.push_back(m + GUARD);
    }
}

/* Shared memory no thread has written reads as all ones (NaN, -1) rather than the last block's values. */
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));
__attribute__((no_sanitize_address)) static void poison_shared(size_t dyn_bytes) {
    if (__start_emu_shared) memset(__start_emu_shared, 0xff, (size_t)(__stop_emu_shared - __start_emu_shared));
    if (dyn_smem_buf) memset(dyn_smem_buf, 0xff, dyn_bytes);
}

/* Runs one block to completion; false after a fault. */
static bool run_block(int n) {
    fibers.assign((size_t)n, fiber());
    warp_waiting.assign((size_t)(n + 31) / 32, 0);
    n_threads = n;
    n_done = n_bar = 0;
    faulted = false;
    for (int i = 0; i < n; i++) {
        fiber *f = &fibers[i];
        f->stack = stacks[(size_t)i];
        f->tid = uint3{(unsigned)i % block_dim.x, (unsigned)i / block_dim.x % block_dim.y,
                       (unsigned)i / (block_dim.x * block_dim.y)};
        f->state = F_RUN;
        fiber_init(f);
    }
    while (n_done < n) {
        bool ran = false;
        for (int i = 0; i < n && !faulted; i++) {
            fiber *f = &fibers[i];
            if (f->state != F_RUN) continue;
            ran = true;
            switch_into(f);
            if (f->state == F_DONE) n_done++;
            else if (f->state == F_BAR) n_bar++;
            else if (f->state == F_WARP) warp_arrived(f);
        }
        if (faulted) break;
        if (n_bar > 0 && n_bar + n_done == n) complete_barrier();
        else if (!ran && n_done < n) diagnose_stuck();
        if (faulted) break;
    }
    if (!faulted) return true;
#if EMU_ASAN
    /* abandoned fibers leave their frames' poison on the stacks they would have unwound */
    for (int i = 0; i < n; i++)
        if (fibers[i].state != F_DONE) __asan_unpoison_memory_region(fibers[i].stack, STACK_BYTES);
#endif
    return false;
}

bool run_kernel(const char *name, dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn) {
    int n = (int)(block.x * block.y * block.z);
    ensure_stacks(n);
    kernel_name = name;
    body = &fn;
    block_dim = block;
    grid_dim = grid;
    dyn_smem_buf = malloc(smem); /* ASan sees accesses past the launch's dynamic shared memory */
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; z++)
        for (unsigned y = 0; y < grid.y && ok; y++)
            for (unsigned x = 0; x < grid.x && ok; x++) {
                block_idx = uint3{x, y, z};
                poison_shared(smem);
                ok = run_block(n);
            }
    free(dyn_smem_buf);
    dyn_smem_buf = NULL;
    body = NULL;
    return ok;
}

} // namespace emu
