/* cuBLAS for the CUDA emulation (emu.h): GemmEx as cuBLAS documents it, column-major,
 *     C = alpha * op(A) * op(B) + beta * C,  op(A) m x k, op(B) k x n, C m x n,
 * with its argument checks, computed in double on the CPU and queued on the handle's stream (so it is
 * ordered with the kernels around it and recorded by graph capture). */
#include <vector>

#include "tests/cuda_emu/emu_internal.h"

struct cublasContext {
    cudaStream_t stream = 0;
    cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}

static size_t type_bytes(cudaDataType_t t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    case CUDA_R_16F: case CUDA_R_16BF: return 2;
    default: return 0;
    }
}

static double load(cudaDataType_t t, const void *p, size_t i) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_64F: return ((const double *)p)[i];
    case CUDA_R_16F: return (float)((const __half *)p)[i];
    default: return (float)((const __nv_bfloat16 *)p)[i];
    }
}

static void store(cudaDataType_t t, void *p, size_t i, double v) {
    switch (t) {
    case CUDA_R_32F: ((float *)p)[i] = (float)v; break;
    case CUDA_R_64F: ((double *)p)[i] = v; break;
    case CUDA_R_16F: ((__half *)p)[i] = __half((float)v); break;
    default: ((__nv_bfloat16 *)p)[i] = __nv_bfloat16((float)v); break;
    }
}

/* Scalars are float for 32-bit compute types, double for 64F, __half for 16F. */
static double scalar(cublasComputeType_t c, const void *p) {
    if (c == CUBLAS_COMPUTE_64F || c == CUBLAS_COMPUTE_64F_PEDANTIC) return *(const double *)p;
    if (c == CUBLAS_COMPUTE_16F || c == CUBLAS_COMPUTE_16F_PEDANTIC) return (float)*(const __half *)p;
    return *(const float *)p;
}

/* The type combinations of cuBLAS's GemmEx table that the emulation computes. */
static bool combination_supported(cudaDataType_t ab, cudaDataType_t c, cublasComputeType_t ct) {
    bool c32 = ct == CUBLAS_COMPUTE_32F || ct == CUBLAS_COMPUTE_32F_PEDANTIC || ct == CUBLAS_COMPUTE_32F_FAST_16F ||
               ct == CUBLAS_COMPUTE_32F_FAST_16BF || ct == CUBLAS_COMPUTE_32F_FAST_TF32;
    if (ct == CUBLAS_COMPUTE_64F || ct == CUBLAS_COMPUTE_64F_PEDANTIC) return ab == CUDA_R_64F && c == CUDA_R_64F;
    if (ct == CUBLAS_COMPUTE_16F || ct == CUBLAS_COMPUTE_16F_PEDANTIC) return ab == CUDA_R_16F && c == CUDA_R_16F;
    if (!c32) return false;
    if (ab == CUDA_R_32F) return c == CUDA_R_32F;
    if (ab == CUDA_R_16F || ab == CUDA_R_16BF) return c == ab || c == CUDA_R_32F;
    return false;
}

/* A matrix operand of rows x cols (as stored, column-major with leading dimension ld) must be device
 * memory covering its last element. */
static bool operand_ok(const char *name, const void *p, cudaDataType_t t, int rows, int cols, int ld) {
    if (rows == 0 || cols == 0) return true;
    size_t last = (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
    if (emu::is_device_range(p, last * type_bytes(t))) return true;
    emu::report_fault("cublasGemmEx: %s (%p, %d x %d, ld %d) is not device memory of that size", name, p, rows, cols,
                      ld);
    emu::set_sticky(cudaErrorIllegalAddress);
    return false;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    bool a_n = ta == CUBLAS_OP_N, b_n = tb == CUBLAS_OP_N;
    int a_rows = a_n ? m : k, a_cols = a_n ? k : m, b_rows = b_n ? k : n, b_cols = b_n ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1) || ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (at != bt || !combination_supported(at, ct, compute)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!operand_ok("A", A, at, a_rows, a_cols, lda) || !operand_ok("B", B, bt, b_rows, b_cols, ldb) ||
        !operand_ok("C", C, ct, m, n, ldc))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    /* Host scalars are read at the call; device ones (CUBLAS_POINTER_MODE_DEVICE) when the product runs. */
    bool on_device = h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    size_t sb = (compute == CUBLAS_COMPUTE_64F || compute == CUBLAS_COMPUTE_64F_PEDANTIC) ? 8
                : (compute == CUBLAS_COMPUTE_16F || compute == CUBLAS_COMPUTE_16F_PEDANTIC) ? 2 : 4;
    if (on_device && (!emu::is_device_range(alpha, sb) || !emu::is_device_range(beta, sb))) {
        emu::report_fault("cublasGemmEx: device pointer mode, but alpha %p or beta %p is not device memory", alpha,
                          beta);
        emu::set_sticky(cudaErrorIllegalAddress);
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    double al_host = on_device ? 0.0 : scalar(compute, alpha), be_host = on_device ? 0.0 : scalar(compute, beta);
    cudaError_t e = emu::enqueue(h->stream, "cublasGemmEx", [=] {
        double al = on_device ? scalar(compute, alpha) : al_host, be = on_device ? scalar(compute, beta) : be_host;
        /* op(A) as m rows of k and op(B) as n rows of k, converted once, so each sum runs over contiguous k */
        std::vector<double> ra((size_t)m * k), rb((size_t)n * k);
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
                ra[(size_t)i * k + p] = load(at, A, a_n ? (size_t)i + (size_t)p * lda : (size_t)p + (size_t)i * lda);
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++)
                rb[(size_t)j * k + p] = load(bt, B, b_n ? (size_t)p + (size_t)j * ldb : (size_t)j + (size_t)p * ldb);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const double *x = &ra[(size_t)i * k], *y = &rb[(size_t)j * k];
                double s = 0.0;
                for (int p = 0; p < k; p++) s += x[p] * y[p];
                size_t ci = (size_t)i + (size_t)j * ldc;
                /* beta == 0: C is not read (it may hold NaN) */
                store(ct, C, ci, al * s + (be == 0.0 ? 0.0 : be * load(ct, C, ci)));
            }
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    return cublasGemmEx(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C, CUDA_R_32F, ldc,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
