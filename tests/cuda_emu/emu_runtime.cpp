/* The CUDA emulation's runtime (see emu.h): device memory, streams that queue work until the host waits,
 * events, graph capture and replay, errors (the last error and the sticky one). One lock serialises every
 * call, so kernels run one block at a time whatever host thread waits for them. */
#include <sys/time.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "tests/cuda_emu/emu_internal.h"

struct CUstream_st;

namespace emu {
struct capture;
} // namespace emu

/* A queued op runs after the listed (stream, sequence number) points, then itself. */
struct emu_op {
    uint64_t seq;
    const char *what;
    std::vector<std::pair<CUstream_st *, uint64_t>> after;
    std::function<void()> run;
};

struct CUstream_st {
    std::deque<emu_op> q;
    uint64_t next_seq = 1, done_seq = 0;
    bool nonblocking = false;
    emu::capture *cap = nullptr;
};

struct CUevent_st {
    CUstream_st *stream = nullptr; /* where it was last recorded */
    uint64_t seq = 0;              /* the record's op */
    bool timing = true, in_capture = false;
    std::shared_ptr<double> when = std::make_shared<double>(-1.0); /* seconds, set when the record runs */
};

/* Memory that a captured cudaMallocAsync made: it belongs to the graph and every instance of it. */
struct emu_graph_mem {
    std::vector<void *> ptrs;
    ~emu_graph_mem();
};

struct CUgraph_st {
    std::vector<std::pair<const char *, std::function<void()>>> nodes;
    std::shared_ptr<emu_graph_mem> mem;
};
struct CUgraphExec_st {
    std::vector<std::pair<const char *, std::function<void()>>> nodes;
    std::shared_ptr<emu_graph_mem> mem;
};

namespace emu {

struct capture {
    CUstream_st *stream;
    cudaStreamCaptureMode mode;
    std::thread::id thread;
    bool invalid = false;
    std::vector<std::pair<const char *, std::function<void()>>> nodes;
    std::shared_ptr<emu_graph_mem> mem = std::make_shared<emu_graph_mem>();
};

static std::recursive_mutex lock;
#define LOCK std::lock_guard<std::recursive_mutex> guard_(lock)
static cudaError_t last_error = cudaSuccess, sticky = cudaSuccess;
static CUstream_st legacy;
static std::set<CUstream_st *> streams = {&legacy};
static std::set<capture *> captures;
static std::map<uintptr_t, size_t> dev_mem, pinned_mem; /* base -> bytes */
static size_t dev_used;
static const size_t DEV_TOTAL = (size_t)24 << 30; /* what the emulated device says it has */
static std::map<const void *, int> func_smem_limit;

static cudaError_t fail(cudaError_t e) {
    if (e != cudaSuccess) last_error = e;
    return e;
}

void set_sticky(cudaError_t e) {
    if (sticky == cudaSuccess) sticky = e;
    last_error = e;
    for (CUstream_st *s : streams) s->q.clear(); /* a dead context runs nothing more */
}

static double now() {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

/* ---- memory registry ---- */

static bool in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t bytes, bool end_ok) {
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return false;
    --it;
    uintptr_t end = it->first + it->second;
    return bytes ? a + bytes <= end : (end_ok ? a <= end : a < end || (a == it->first));
}

bool is_device_range(const void *p, size_t bytes) { return in_map(dev_mem, p, bytes, false); }
static bool is_device_ptr(const void *p) { return in_map(dev_mem, p, 0, true); }
static bool is_pinned(const void *p, size_t bytes) { return in_map(pinned_mem, p, bytes ? bytes : 1, false); }

static void *dev_alloc(size_t bytes) {
    if (bytes > DEV_TOTAL - dev_used) return NULL;
    void *p = malloc(bytes ? bytes : 1); /* malloc, so ASan sees every overrun */
    if (!p) return NULL;
    dev_mem[(uintptr_t)p] = bytes;
    dev_used += bytes;
    return p;
}

static bool dev_forget(void *p) {
    auto it = dev_mem.find((uintptr_t)p);
    if (it == dev_mem.end()) return false;
    dev_used -= it->second;
    dev_mem.erase(it);
    return true;
}

} // namespace emu

emu_graph_mem::~emu_graph_mem() {
    for (void *p : ptrs)
        if (emu::dev_forget(p)) free(p);
}

namespace emu {

bool arg_pointer_ok(const char *kernel, int index, const void *p) {
    LOCK;
    if (!p || is_device_ptr(p) || is_pinned(p, 1)) return true;
    report_fault("kernel %s: argument %d is %p, which is not device memory (a host pointer, or freed)", kernel,
                 index, p);
    set_sticky(cudaErrorIllegalAddress);
    return false;
}

/* ---- streams ---- */

static CUstream_st *stream_of(cudaStream_t s) {
    if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread) return &legacy;
    return streams.count(s) ? s : NULL;
}

static void run_until(CUstream_st *s, uint64_t seq) {
    while (!s->q.empty() && s->q.front().seq <= seq) {
        emu_op op = std::move(s->q.front());
        s->q.pop_front();
        for (auto &a : op.after)
            if (streams.count(a.first)) run_until(a.first, a.second);
        op.run();
        s->done_seq = op.seq;
    }
}

static void drain(CUstream_st *s) { run_until(s, UINT64_MAX); }
static void drain_all() {
    for (CUstream_st *s : streams) drain(s);
}

/* The legacy stream waits for the blocking streams' earlier work, and they wait for its. */
static std::vector<std::pair<CUstream_st *, uint64_t>> implicit_deps(CUstream_st *s) {
    std::vector<std::pair<CUstream_st *, uint64_t>> d;
    if (s->nonblocking) return d;
    for (CUstream_st *o : streams)
        if (o != s && !o->nonblocking && !o->q.empty() && (s == &legacy || o == &legacy)) d.push_back({o, o->next_seq - 1});
    return d;
}

cudaError_t enqueue(cudaStream_t stream, const char *what, std::function<void()> fn) {
    LOCK;
    if (sticky) return fail(sticky);
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (s->cap) {
        if (s->cap->invalid) return fail(cudaErrorStreamCaptureInvalidated);
        s->cap->nodes.push_back({what, std::move(fn)});
        return cudaSuccess;
    }
    s->q.push_back(emu_op{s->next_seq++, what, implicit_deps(s), std::move(fn)});
    return cudaSuccess;
}

/* Calls CUDA forbids while a stream captures in global or thread-local mode (they may synchronise
 * implicitly): they fail, and so does the capture. */
static cudaError_t capture_forbids(const char *call) {
    for (capture *c : captures) {
        if (c->mode == cudaStreamCaptureModeRelaxed) continue;
        if (c->mode == cudaStreamCaptureModeThreadLocal && c->thread != std::this_thread::get_id()) continue;
        fprintf(stderr, "cuda-emu: %s while a stream captures a graph: not permitted; the capture is invalidated\n",
                call);
        c->invalid = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return cudaSuccess;
}

static cudaError_t capture_check_stream(CUstream_st *s, const char *call) {
    if (!s->cap) return cudaSuccess;
    fprintf(stderr, "cuda-emu: %s on a capturing stream: not permitted; the capture is invalidated\n", call);
    s->cap->invalid = true;
    return fail(cudaErrorStreamCaptureUnsupported);
}

} // namespace emu

using namespace emu;

#define API_ENTER LOCK; if (sticky) return fail(sticky)

/* ---- errors and device ---- */

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
#define N(x) case x: return #x;
        N(cudaSuccess) N(cudaErrorInvalidValue) N(cudaErrorMemoryAllocation) N(cudaErrorInitializationError)
        N(cudaErrorInvalidConfiguration) N(cudaErrorInvalidMemcpyDirection) N(cudaErrorInvalidDeviceFunction)
        N(cudaErrorNoDevice) N(cudaErrorInvalidDevice) N(cudaErrorInvalidResourceHandle) N(cudaErrorIllegalState)
        N(cudaErrorNotReady) N(cudaErrorIllegalAddress) N(cudaErrorLaunchOutOfResources) N(cudaErrorAssert)
        N(cudaErrorLaunchFailure) N(cudaErrorNotPermitted) N(cudaErrorNotSupported)
        N(cudaErrorStreamCaptureUnsupported) N(cudaErrorStreamCaptureInvalidated) N(cudaErrorStreamCaptureUnmatched)
        N(cudaErrorStreamCaptureUnjoined) N(cudaErrorStreamCaptureImplicit) N(cudaErrorStreamCaptureWrongThread)
        N(cudaErrorUnknown)
#undef N
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "operation not permitted in current state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from "
                                                   "another thread";
    default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetLastError(void) {
    LOCK;
    cudaError_t e = sticky ? sticky : last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) {
    LOCK;
    return sticky ? sticky : last_error;
}

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda-emu (CPU emulation)");
    p->totalGlobalMem = DEV_TOTAL;
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    p->concurrentKernels = 1;
    p->canMapHostMemory = 1;
    p->unifiedAddressing = 1;
    p->asyncEngineCount = 2;
    p->totalConstMem = 64 << 10;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, int attr, int device) {
    fprintf(stderr, "cuda-emu: cudaDeviceGetAttribute(%d) is not emulated\n", attr);
    *value = 0;
    return fail(cudaErrorNotSupported);
}

cudaError_t cudaDeviceSynchronize(void) {
    API_ENTER;
    if (cudaError_t e = capture_forbids("cudaDeviceSynchronize")) return e;
    drain_all();
    return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaDeviceReset(void) {
    emu::reset_device();
    return cudaSuccess;
}

void emu::reset_device(void) {
    LOCK;
    for (CUstream_st *s : streams) {
        s->q.clear();
        s->cap = nullptr;
    }
    for (capture *c : captures) delete c;
    captures.clear();
    sticky = last_error = cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    API_ENTER;
    *free_bytes = DEV_TOTAL - dev_used;
    *total_bytes = DEV_TOTAL;
    return cudaSuccess;
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **p, size_t bytes) {
    API_ENTER;
    *p = NULL;
    if (cudaError_t e = capture_forbids("cudaMalloc")) return e;
    *p = dev_alloc(bytes);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void *p) {
    API_ENTER;
    if (!p) return cudaSuccess;
    if (cudaError_t e = capture_forbids("cudaFree")) return e;
    drain_all(); /* cudaFree waits for the device */
    if (!dev_forget(p)) {
        fprintf(stderr, "cuda-emu: cudaFree(%p): not a live device allocation (freed twice, or not from cudaMalloc)\n",
                p);
        return fail(cudaErrorInvalidValue);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t stream) {
    API_ENTER;
    *p = NULL;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    *p = dev_alloc(bytes);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    if (s->cap) s->cap->mem->ptrs.push_back(*p); /* a graph allocation: lives as long as the graph */
    return cudaSuccess;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t stream) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (!p) return cudaSuccess;
    if (s->cap) {
        auto &v = s->cap->mem->ptrs;
        for (void *q : v)
            if (q == p) return cudaSuccess; /* freed with the graph */
        fprintf(stderr, "cuda-emu: cudaFreeAsync(%p) inside a capture of memory allocated outside it: not emulated\n",
                p);
        s->cap->invalid = true;
        return fail(cudaErrorNotSupported);
    }
    if (!dev_forget(p)) { /* later launches that pass p are caught as not device memory */
        fprintf(stderr, "cuda-emu: cudaFreeAsync(%p): not a live device allocation (freed twice?)\n", p);
        return fail(cudaErrorInvalidValue);
    }
    return enqueue(stream, "cudaFreeAsync", [p] { free(p); });
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags) {
    API_ENTER;
    *p = NULL;
    if (cudaError_t e = capture_forbids("cudaHostAlloc")) return e;
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    pinned_mem[(uintptr_t)*p] = bytes;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }

cudaError_t cudaFreeHost(void *p) {
    API_ENTER;
    if (!p) return cudaSuccess;
    if (cudaError_t e = capture_forbids("cudaFreeHost")) return e;
    drain_all();
    if (!pinned_mem.erase((uintptr_t)p)) {
        fprintf(stderr, "cuda-emu: cudaFreeHost(%p): not from cudaMallocHost/cudaHostAlloc\n", p);
        return fail(cudaErrorInvalidValue);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags) {
    API_ENTER;
    if (cudaError_t e = capture_forbids("cudaHostRegister")) return e;
    pinned_mem[(uintptr_t)p] = bytes;
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p) {
    API_ENTER;
    drain_all();
    return pinned_mem.erase((uintptr_t)p) ? cudaSuccess : fail(cudaErrorInvalidValue);
}

/* Checks a copy's pointers against its kind (device ranges must lie inside one allocation); fills in
 * the kind for cudaMemcpyDefault. */
static cudaError_t check_copy(const char *call, void *dst, const void *src, size_t bytes, cudaMemcpyKind *kind) {
    bool dd = is_device_ptr(dst), sd = is_device_ptr(src);
    if (*kind == cudaMemcpyDefault)
        *kind = sd ? (dd ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                   : (dd ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    bool want_d = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
    bool want_s = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
    if (*kind > cudaMemcpyDefault) return fail(cudaErrorInvalidMemcpyDirection);
    const char *bad = NULL;
    if (want_d && !is_device_range(dst, bytes)) bad = dd ? "the destination runs past its device allocation"
                                                         : "the destination is not device memory";
    else if (!want_d && dd) bad = "the destination is device memory but the kind says host";
    else if (want_s && !is_device_range(src, bytes)) bad = sd ? "the source runs past its device allocation"
                                                              : "the source is not device memory";
    else if (!want_s && sd) bad = "the source is device memory but the kind says host";
    if (!bad) return cudaSuccess;
    fprintf(stderr, "cuda-emu: %s(dst %p, src %p, %zu bytes, kind %d): %s\n", call, dst, src, bytes, (int)*kind, bad);
    return fail(cudaErrorInvalidValue);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    API_ENTER;
    if (cudaError_t e = capture_forbids("cudaMemcpy")) return e;
    if (cudaError_t e = check_copy("cudaMemcpy", dst, src, bytes, &kind)) return e;
    if (kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes)) {
        /* From pageable memory the call returns once the data is staged; the DMA itself is ordered on the
         * legacy stream, so a kernel on a non-blocking stream may still see the old contents. */
        std::shared_ptr<std::vector<char>> staged = std::make_shared<std::vector<char>>((const char *)src,
                                                                                      (const char *)src + bytes);
        return enqueue(0, "cudaMemcpy", [dst, staged] { memcpy(dst, staged->data(), staged->size()); });
    }
    drain(&legacy);
    for (CUstream_st *s : streams)
        if (!s->nonblocking) drain(s);
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, bytes, &kind)) return e;
    bool pageable = (kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes)) ||
                    (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes));
    if (pageable && s->cap) return capture_check_stream(s, "cudaMemcpyAsync from or to pageable host memory");
    if (pageable) {
        /* pageable memory: the copy happens in stream order before the call returns */
        drain(s);
        if (sticky) return fail(sticky);
        memmove(dst, src, bytes);
        return cudaSuccess;
    }
    return enqueue(stream, "cudaMemcpyAsync", [dst, src, bytes] { memmove(dst, src, bytes); });
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    API_ENTER;
    if (cudaError_t e = capture_forbids("cudaMemset")) return e;
    if (!is_device_range(p, bytes)) {
        fprintf(stderr, "cuda-emu: cudaMemset(%p, %zu bytes): not inside one device allocation\n", p, bytes);
        return fail(cudaErrorInvalidValue);
    }
    drain_all();
    memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) {
    API_ENTER;
    if (!is_device_range(p, bytes)) {
        fprintf(stderr, "cuda-emu: cudaMemsetAsync(%p, %zu bytes): not inside one device allocation\n", p, bytes);
        return fail(cudaErrorInvalidValue);
    }
    return enqueue(stream, "cudaMemsetAsync", [p, value, bytes] { memset(p, value, bytes); });
}

/* ---- streams ---- */

cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority) {
    API_ENTER;
    CUstream_st *st = new CUstream_st;
    st->nonblocking = (flags & cudaStreamNonBlocking) != 0;
    streams.insert(st);
    *s = st;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) { return cudaStreamCreateWithPriority(s, flags, 0); }
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithPriority(s, 0, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    LOCK;
    CUstream_st *s = stream_of(stream);
    if (!s || s == &legacy) return fail(cudaErrorInvalidResourceHandle);
    if (s->cap) return capture_check_stream(s, "cudaStreamDestroy");
    drain(s); /* queued work still completes */
    streams.erase(s);
    delete s;
    return sticky ? fail(sticky) : cudaSuccess;
}

/* Waits for a stream's work (the legacy stream's includes the blocking streams'). Queries wait too: the
 * emulation has no background progress, and a polling loop must end. */
static cudaError_t stream_wait(cudaStream_t stream, const char *call) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (cudaError_t e = capture_check_stream(s, call)) return e;
    if (s == &legacy) drain_all();
    else drain(s);
    return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return stream_wait(stream, "cudaStreamSynchronize"); }
cudaError_t cudaStreamQuery(cudaStream_t stream) { return stream_wait(stream, "cudaStreamQuery"); }

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t e, unsigned flags) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s || !e) return fail(cudaErrorInvalidResourceHandle);
    if (e->in_capture) {
        fprintf(stderr, "cuda-emu: cudaStreamWaitEvent on an event recorded inside a capture (multi-stream capture) "
                        "is not emulated\n");
        return fail(cudaErrorNotSupported);
    }
    if (!e->stream || s->cap) return cudaSuccess;
    s->q.push_back(emu_op{s->next_seq++, "cudaStreamWaitEvent", {{e->stream, e->seq}}, [] {}});
    return cudaSuccess;
}

/* ---- events ---- */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    API_ENTER;
    *e = new CUevent_st;
    (*e)->timing = !(flags & cudaEventDisableTiming);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    LOCK;
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    delete e; /* a queued record keeps its own reference to the time it sets */
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s || !e) return fail(cudaErrorInvalidResourceHandle);
    if (s->cap) { /* inside a capture an event only orders streams of the capture */
        e->in_capture = true;
        return cudaSuccess;
    }
    e->in_capture = false;
    std::shared_ptr<double> when = e->when;
    *when = -1.0;
    cudaError_t r = enqueue(stream, "cudaEventRecord", [when] { *when = now(); });
    e->stream = s;
    e->seq = s->next_seq - 1;
    return r;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    API_ENTER;
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    if (e->in_capture) {
        fprintf(stderr, "cuda-emu: cudaEventSynchronize on an event recorded inside a capture: not permitted\n");
        for (capture *c : captures) c->invalid = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    if (e->stream && streams.count(e->stream)) run_until(e->stream, e->seq);
    return sticky ? fail(sticky) : cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    API_ENTER;
    if (!a || !b || !a->timing || !b->timing) return fail(cudaErrorInvalidResourceHandle);
    if (*a->when < 0 || *b->when < 0) return fail(cudaErrorNotReady);
    *ms = (float)((*b->when - *a->when) * 1e3);
    return cudaSuccess;
}

/* ---- graphs ---- */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (s == &legacy) return fail(cudaErrorStreamCaptureUnsupported);
    if (s->cap) return fail(cudaErrorIllegalState);
    capture *c = new capture;
    c->stream = s;
    c->mode = mode;
    c->thread = std::this_thread::get_id();
    s->cap = c;
    captures.insert(c);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    LOCK;
    *graph = NULL;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    capture *c = s->cap;
    if (!c) return fail(cudaErrorIllegalState);
    if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
        return fail(cudaErrorStreamCaptureWrongThread);
    s->cap = nullptr;
    captures.erase(c);
    cudaError_t r = cudaSuccess;
    if (sticky) r = fail(sticky);
    else if (c->invalid) r = fail(cudaErrorStreamCaptureInvalidated);
    else *graph = new CUgraph_st{std::move(c->nodes), c->mem};
    delete c;
    return r;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus *status) {
    API_ENTER;
    CUstream_st *s = stream_of(stream);
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    *status = !s->cap ? cudaStreamCaptureStatusNone
                      : s->cap->invalid ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    API_ENTER;
    if (!graph) return fail(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{graph->nodes, graph->mem};
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    return cudaGraphInstantiate(exec, graph, flags);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    API_ENTER;
    if (!exec) return fail(cudaErrorInvalidValue);
    for (auto &n : exec->nodes) {
        std::function<void()> fn = n.second;
        std::shared_ptr<emu_graph_mem> mem = exec->mem; /* an instance may be destroyed while queued */
        if (cudaError_t e = enqueue(stream, n.first, [fn, mem] { fn(); })) return e;
    }
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    LOCK;
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    LOCK;
    delete exec;
    return cudaSuccess;
}

/* ---- launches ---- */

cudaError_t emu::func_set_attribute(const void *func, int attr, int value) {
    API_ENTER;
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > (227 << 10)) return fail(cudaErrorInvalidValue);
        func_smem_limit[func] = value;
    }
    return cudaSuccess;
}

/* cudaSuccess, or the error a launch with this configuration gets (and a line saying why). */
static cudaError_t config_error(const char *kernel, dim3 grid, dim3 block, size_t smem, const void *func) {
    const char *bad = NULL;
    cudaError_t e = cudaErrorInvalidConfiguration;
    size_t threads = (size_t)block.x * block.y * block.z;
    auto lim = func_smem_limit.find(func);
    size_t smem_max = lim == func_smem_limit.end() ? 48 << 10 : (size_t)lim->second;
    if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) bad = "a zero dimension";
    else if (threads > 1024 || block.z > 64) bad = "more than 1024 threads per block (or blockDim.z > 64)";
    else if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) bad = "a grid beyond (2^31-1, 65535, 65535)";
    else if (smem > smem_max) {
        bad = "more dynamic shared memory than allowed (over 48 KiB needs cudaFuncSetAttribute)";
        e = cudaErrorInvalidValue;
    }
    if (!bad) return cudaSuccess;
    fprintf(stderr, "cuda-emu: launch of %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>>: %s\n", kernel, grid.x, grid.y, grid.z,
            block.x, block.y, block.z, smem, bad);
    return e;
}

void emu::launch(const char *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const void *func,
                 std::function<void()> body) {
    LOCK;
    if (sticky) {
        fail(sticky);
        return;
    }
    if (cudaError_t e = config_error(kernel, grid, block, smem, func)) {
        fail(e);
        return;
    }
    enqueue(stream, kernel, [kernel, grid, block, smem, body] {
        if (!run_kernel(kernel, grid, block, smem, body)) set_sticky(cudaErrorLaunchFailure);
    });
}
