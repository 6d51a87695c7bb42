/* Backend selection ("auto", "cpu", "cuda", "cuda:N"); the type tables live in kernels/dtype.c. */
#include "kernels/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SD_HAVE_CUDA
int sd_backend_cuda_new(int device, sd_backend **out, sd_err *err) {
    *out = NULL;
    return sd_errf(err, "cuda backend: built without CUDA (nvcc was not found at build time, or CUDA=0)");
}
#endif

static void set_why(char *why, size_t why_len, const char *msg) {
    if (why && why_len) snprintf(why, why_len, "%s", msg);
}

int sd_backend_open(const char *spec, int n_threads, sd_backend **out, char *why, size_t why_len, sd_err *err) {
    *out = NULL;
    set_why(why, why_len, "");
    if (!spec || !*spec || strcmp(spec, "auto") == 0) {
        sd_err cerr = {{0}};
        if (sd_backend_cuda_new(0, out, &cerr) == 0) {
            set_why(why, why_len, "cuda device 0 found");
            return 0;
        }
        char msg[600];
        snprintf(msg, sizeof msg, "using cpu: %s", cerr.msg);
        set_why(why, why_len, msg);
        return sd_backend_cpu_new(n_threads, out, err);
    }
    if (strcmp(spec, "cpu") == 0) return sd_backend_cpu_new(n_threads, out, err);
    if (strncmp(spec, "cuda", 4) == 0) {
        int dev = 0;
        if (spec[4] == ':') {
            char *end;
            long d = strtol(spec + 5, &end, 10);
            if (end == spec + 5 || *end || d < 0 || d > 1024)
                return sd_errf(err, "backend \"%s\": bad device index (expected cuda:N)", spec);
            dev = (int)d;
        } else if (spec[4]) {
            return sd_errf(err, "unknown backend \"%s\" (expected auto, cpu, cuda or cuda:N)", spec);
        }
        if (sd_backend_cuda_new(dev, out, err) != 0) return sd_err_prefix(err, "backend \"%s\"", spec);
        return 0;
    }
    return sd_errf(err, "unknown backend \"%s\" (expected auto, cpu, cuda or cuda:N)", spec);
}

void sd_backend_fail(sd_backend *b, const char *fmt, ...) {
    if (b->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->fail_msg, sizeof b->fail_msg, fmt, ap);
    va_end(ap);
    b->failed = true;
}

int sd_backend_check(const sd_backend *b, sd_err *err) {
    if (!b->failed) return 0;
    return sd_errf(err, "backend %s failed: %s", b->name, b->fail_msg);
}

int sd_kv_mem_shape(sd_kv_mem *kv, int n_layers, int kv_dim, int n_blocks, sd_dtype type, sd_err *err) {
    memset(kv, 0, sizeof *kv);
    if (n_layers <= 0 || n_blocks <= 0 || kv_dim <= 0)
        return sd_errf(err, "kv pool: bad shape (%d layers, %d blocks, kv_dim %d)", n_layers, n_blocks, kv_dim);
    if (type != SD_F16 && type != SD_F32)
        return sd_errf(err, "kv pool: type %s is not supported (f16 or f32)", sd_dtype_name(type) ? sd_dtype_name(type) : "?");
    double bytes = (double)n_layers * n_blocks * SD_KV_BLOCK * kv_dim * (double)sd_dtype_block_bytes(type);
    if (bytes > (double)(SIZE_MAX / 4)) return sd_errf(err, "kv pool: size overflows");
    *kv = (sd_kv_mem){.n_layers = n_layers, .kv_dim = kv_dim, .n_blocks = n_blocks, .type = type};
    return 0;
}

size_t sd_kv_layer_bytes(const sd_kv_mem *kv) {
    return (size_t)kv->n_blocks * SD_KV_BLOCK * (size_t)kv->kv_dim * sd_dtype_block_bytes(kv->type);
}
