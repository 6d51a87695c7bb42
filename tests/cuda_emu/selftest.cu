/* Tests of the CUDA emulation itself (emu.h), built like the kernels of kernels/cuda: tiny kernels that must run
 * right (collectives, shared memory, atomics, graphs, cuBLAS, stream order) and planted bugs that must be
 * flagged (a barrier deadlock, a thread leaving a barrier, a shuffle with an exited lane or a lane outside
 * its mask, a host pointer passed to a kernel, an out-of-bounds write caught by ASan). */
#include <sys/wait.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "tests/test.h"

/* ---- kernels that must work ---- */

__global__ void k_collectives(int *out) {
    __shared__ int hits;
    __shared__ float part[4];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) hits = 0;
    __syncthreads();
    atomicAdd(&hits, 1);
    float v = (float)threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) part[warp] = v;
    unsigned even = __ballot_sync(0xffffffffu, lane % 2 == 0);
    int up = __shfl_up_sync(0xffffffffu, lane, 1);
    int down = __shfl_down_sync(0xffffffffu, lane, 3);
    int from7 = __shfl_sync(0xffffffffu, lane * 10, 7);
    int count = __syncthreads_count(threadIdx.x < 100);
    int votes = __any_sync(0xffffffffu, lane == 31) + 2 * __all_sync(0xffffffffu, lane < 31);
    if (threadIdx.x == 33) {
        out[0] = hits;
        out[1] = (int)(part[0] + part[1] + part[2] + part[3]);
        out[2] = (int)even;
        out[3] = up;      /* lane 1 gets lane 0's */
        out[4] = down;    /* lane 1 gets lane 4's */
        out[5] = from7;
        out[6] = count;
        out[7] = votes;
    }
}

__global__ void k_dynamic_smem(float *out, int n) {
    extern __shared__ float buf[];
    buf[threadIdx.x] = (float)threadIdx.x * 2.0f;
    __syncthreads();
    out[blockIdx.x * n + threadIdx.x] = buf[n - 1 - threadIdx.x] + (float)blockIdx.x;
}

__global__ void k_unwritten_shared(float *out) {
    __shared__ float never;
    out[0] = never; /* no thread wrote it: the emulation's poison */
}

__global__ void k_add_one(int *x) { x[threadIdx.x] += 1; }

__global__ void k_copy(int *dst, const int *src) { dst[threadIdx.x] = src[threadIdx.x]; }

/* ---- planted bugs ---- */

__global__ void k_two_barriers(int *out) {
    if (threadIdx.x == 0) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void k_exit_before_barrier(int *out) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void k_shuffle_exited_lane(float *out) {
    if (threadIdx.x >= 16) return;
    float v = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
    out[threadIdx.x] = v;
}

__global__ void k_shuffle_outside_mask(int *out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 20);
}

__global__ void k_oob_write(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f; /* one past the end */
}

/* ---- helpers ---- */

static int *dev_ints(int n, int fill) {
    int *d = NULL;
    if (cudaMalloc(&d, sizeof(int) * (size_t)n) != cudaSuccess) return NULL;
    cudaMemset(d, fill, sizeof(int) * (size_t)n);
    return d;
}

/* A planted bug: the launch must be flagged (a fault naming the kernel and `what`) and leave the sticky
 * error; the device is reset afterwards for the next test. */
static void expect_fault(const char *kernel, const char *what) {
    int before = emu::fault_count();
    cudaError_t e = cudaDeviceSynchronize();
    CHECKF(emu::fault_count() == before + 1, "%s: no fault flagged", kernel);
    CHECKF(e == cudaErrorLaunchFailure || e == cudaErrorIllegalAddress, "%s: sync returned %s", kernel,
           cudaGetErrorName(e));
    CHECKF(cudaGetLastError() == e, "%s: the error is not sticky", kernel);
    CHECKF(strstr(emu::last_fault(), kernel) && strstr(emu::last_fault(), what), "%s: report \"%s\"", kernel,
           emu::last_fault());
    emu::reset_device();
}

/* ---- tests ---- */

static void test_collectives_and_shared_memory(void) {
    int *d = dev_ints(8, 0), h[8];
    k_collectives<<<1, 128>>>(d);
    REQUIRE(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(h[0], 128);
    CHECK_EQ_INT(h[1], 127 * 128 / 2);
    CHECK_EQ_INT((unsigned)h[2], 0x55555555u);
    CHECK_EQ_INT(h[3], 0);
    CHECK_EQ_INT(h[4], 4);
    CHECK_EQ_INT(h[5], 70);
    CHECK_EQ_INT(h[6], 100);
    CHECK_EQ_INT(h[7], 1);
    cudaFree(d);

    enum { N = 64, B = 3 };
    float *o = NULL, ho[N * B];
    REQUIRE(cudaMalloc(&o, sizeof ho) == cudaSuccess);
    k_dynamic_smem<<<B, N, N * sizeof(float)>>>(o, N);
    REQUIRE(cudaMemcpy(ho, o, sizeof ho, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++) CHECK_EQ_INT((int)ho[b * N + i], 2 * (N - 1 - i) + b);
    k_unwritten_shared<<<1, 1>>>(o);
    REQUIRE(cudaMemcpy(ho, o, sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(isnan(ho[0]));
    cudaFree(o);
}

static void test_launch_configuration_errors(void) {
    int *d = dev_ints(32, 0);
    k_add_one<<<1, 2048>>>(d);
    CHECK_EQ_INT(cudaGetLastError(), cudaErrorInvalidConfiguration);
    CHECK_EQ_INT(cudaGetLastError(), cudaSuccess); /* not sticky */
    k_add_one<<<0, 32>>>(d);
    CHECK_EQ_INT(cudaGetLastError(), cudaErrorInvalidConfiguration);
    k_dynamic_smem<<<1, 32, 64 << 10>>>((float *)d, 32);
    CHECK_EQ_INT(cudaGetLastError(), cudaErrorInvalidValue);
    cudaFree(d);
}

static void test_flags_barrier_deadlocks(void) {
    int *d = dev_ints(64, 0);
    k_two_barriers<<<1, 64>>>(d);
    expect_fault("k_two_barriers", "while thread (0,0,0) waits at __syncthreads");
    k_exit_before_barrier<<<2, 64>>>(d);
    expect_fault("k_exit_before_barrier", "thread (5,0,0): exited while 63 threads wait at __syncthreads");
    cudaFree(d);
}

static void test_flags_bad_shuffles(void) {
    float *f = NULL;
    REQUIRE(cudaMalloc(&f, 32 * sizeof(float)) == cudaSuccess);
    k_shuffle_exited_lane<<<1, 32>>>(f);
    expect_fault("k_shuffle_exited_lane", "waits for lane 16, which has exited");
    int *d = dev_ints(32, 0);
    k_shuffle_outside_mask<<<1, 32>>>(d);
    expect_fault("k_shuffle_outside_mask", "reads lane 20, which is not in the mask 0x0000ffff");
    cudaFree(f);
    cudaFree(d);
}

static void test_flags_host_pointer_argument(void) {
    int host[32] = {0};
    int before = emu::fault_count();
    k_add_one<<<1, 32>>>(host);
    CHECK_EQ_INT(emu::fault_count(), before + 1);
    CHECKF(strstr(emu::last_fault(), "argument 0") && strstr(emu::last_fault(), "not device memory"), "report \"%s\"",
           emu::last_fault());
    CHECK_EQ_INT(host[0], 0); /* never ran */
    emu::reset_device();
}

/* ASan ends the process at an out-of-bounds access: the planted write runs in a child, whose report must
 * name the overflow and the GPU thread. */
static void test_flags_out_of_bounds_write(void) {
    int fd[2];
    REQUIRE(pipe(fd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        float *o = NULL;
        if (cudaMalloc(&o, 100 * sizeof(float)) != cudaSuccess) _exit(3);
        k_oob_write<<<1, 128>>>(o, 100);
        cudaDeviceSynchronize();
        _exit(0); /* not reached when ASan catches the write */
    }
    close(fd[1]);
    static char out[1 << 16];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECKF(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the out-of-bounds write went unnoticed");
    CHECKF(strstr(out, "heap-buffer-overflow") != NULL, "no ASan report:\n%s", out);
    CHECKF(strstr(out, "happened in kernel k_oob_write, block (0,0,0), thread (100,0,0)") != NULL,
           "the report does not name the GPU thread:\n%s", out);
}

/* A capture records launches without running them; each replay runs them; calls that would synchronise
 * inside a capture fail it. */
static void test_graph_capture_and_replay(void) {
    cudaStream_t s;
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    int *d = dev_ints(32, 0), h[32];
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    k_add_one<<<1, 32, 0, s>>>(d);
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
    REQUIRE(cudaGraphInstantiate(&x, g, 0) == cudaSuccess);
    cudaGraphDestroy(g);
    REQUIRE(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(h[0], 0); /* captured, not run */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(cudaGraphLaunch(x, s), cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    REQUIRE(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(h[31], 3);
    cudaGraphExecDestroy(x);

    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    void *p = NULL;
    CHECK_EQ_INT(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
    CHECK_EQ_INT(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    CHECK_EQ_INT(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    CHECK(g == NULL);
    cudaGetLastError();
    cudaFree(d);
    cudaStreamDestroy(s);
}

/* Work runs when the host waits, in the order CUDA documents: a synchronous copy from pageable memory
 * returns once staged while its DMA is ordered on the legacy stream only, so a kernel on a non-blocking
 * stream may read the old contents (issue 13, item 2); stream order fixes it. */
static void test_stream_order_is_emulated(void) {
    cudaStream_t s;
    REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    int src[32], h[32], *a = dev_ints(32, 0), *b = dev_ints(32, 0);
    for (int i = 0; i < 32; i++) src[i] = 7;
    REQUIRE(cudaMemcpy(a, src, sizeof src, cudaMemcpyHostToDevice) == cudaSuccess);
    k_copy<<<1, 32, 0, s>>>(b, a);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    REQUIRE(cudaMemcpy(h, b, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(h[0], 0); /* the race, made visible */
    for (int i = 0; i < 32; i++) src[i] = 9;
    REQUIRE(cudaMemcpyAsync(a, src, sizeof src, cudaMemcpyHostToDevice, s) == cudaSuccess);
    k_copy<<<1, 32, 0, s>>>(b, a);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    REQUIRE(cudaMemcpy(h, b, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(h[31], 9);
    cudaFree(a);
    cudaFree(b);
    cudaStreamDestroy(s);
}

/* GemmEx against its column-major definition, with op(A) = Aᵀ, F16 inputs, beta accumulating. */
static void test_cublas_gemm_ex(void) {
    enum { M = 5, N = 3, K = 7 };
    __half a[K * M], b[K * N];
    float c[M * N], ref[M * N];
    for (int i = 0; i < K * M; i++) a[i] = __float2half((float)(i % 11) - 5.0f);
    for (int i = 0; i < K * N; i++) b[i] = __float2half((float)(i % 5) * 0.5f);
    for (int i = 0; i < M * N; i++) c[i] = (float)i;
    const float alpha = 2.0f, beta = 1.0f;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            float s = 0;
            for (int p = 0; p < K; p++) s += __half2float(a[p + i * K]) * __half2float(b[p + j * K]); /* A is K x M */
            ref[i + j * M] = alpha * s + beta * c[i + j * M];
        }
    void *da, *db;
    float *dc;
    REQUIRE(cudaMalloc(&da, sizeof a) == cudaSuccess && cudaMalloc(&db, sizeof b) == cudaSuccess &&
            cudaMalloc(&dc, sizeof c) == cudaSuccess);
    cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice);
    cudaMemcpy(dc, c, sizeof c, cudaMemcpyHostToDevice);
    cublasHandle_t h;
    REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    CHECK_EQ_INT(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, da, CUDA_R_16F, K, db, CUDA_R_16F, K, &beta,
                              dc, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 CUBLAS_STATUS_SUCCESS);
    cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    for (int i = 0; i < M * N; i++) CHECK_NEAR(c[i], ref[i], 1e-4);
    CHECK_EQ_INT(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, da, CUDA_R_16F, K - 1, db, CUDA_R_16F, K,
                              &beta, dc, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 CUBLAS_STATUS_INVALID_VALUE); /* lda < k for op T */
    cublasDestroy(h);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
}

int main(void) {
    emu::set_fatal(false); /* planted faults are expected here; the child of the ASan test dies anyway */
    RUN(test_collectives_and_shared_memory);
    RUN(test_launch_configuration_errors);
    RUN(test_flags_barrier_deadlocks);
    RUN(test_flags_bad_shuffles);
    RUN(test_flags_host_pointer_argument);
    RUN(test_flags_out_of_bounds_write);
    RUN(test_graph_capture_and_replay);
    RUN(test_stream_order_is_emulated);
    RUN(test_cublas_gemm_ex);
    return TEST_DONE();
}
