/* GGUF v3 writer. Metadata is serialized into a buffer as it is added; tensor data is written at save
 * time, either from a copy made when the tensor was added or streamed chunk by chunk from a fill
 * callback, so a model larger than memory never has to exist in memory. The file is written under a
 * temporary name and renamed, so a failed save never leaves a half-written model behind. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "model/gguf.h"

#define GGUF_MAGIC 0x46554747u
#define CHUNK (4u << 20) /* streaming buffer for fill callbacks */

typedef struct wtensor {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    size_t nbytes;
    uint64_t offset;
    void *data;        /* owned copy, or NULL when fill is set */
    gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct gguf_writer {
    uint32_t alignment;
    uint8_t *kv;       /* serialized metadata entries */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    wtensor *t;
    size_t n_t, cap_t;
    char error[256];   /* first problem met while adding; reported by save */
};

static void fail(gguf_writer *w, const char *fmt, const char *arg) {
    if (!w->error[0]) snprintf(w->error, sizeof w->error, fmt, arg);
}

static void put(gguf_writer *w, const void *p, size_t n) {
    if (w->error[0]) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *nb = realloc(w->kv, cap);
        if (!nb) { fail(w, "out of memory%s", ""); return; }
        w->kv = nb;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

static void put_u32(gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(gguf_writer *w, const char *s, size_t n) {
    put_u64(w, n);
    put(w, s, n);
}

static void put_key(gguf_writer *w, const char *key, gguf_vtype type) {
    put_str(w, key, strlen(key));
    put_u32(w, type);
    w->n_kv++;
}

gguf_writer *gguf_writer_new(uint32_t alignment) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = alignment ? alignment : 32;
    if (w->alignment & (w->alignment - 1)) fail(w, "alignment is not a power of two%s", "");
    if (w->alignment != 32) gguf_w_u32(w, "general.alignment", w->alignment);
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv);
    free(w);
}

void gguf_w_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v) {
    size_t n = gguf_type_size(type);
    if (!n) { fail(w, "key '%s': not a scalar type", key); return; }
    put_key(w, key, type);
    put(w, v, n);
}

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) { gguf_w_scalar(w, key, GGUF_T_UINT32, &v); }
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { gguf_w_scalar(w, key, GGUF_T_INT32, &v); }
void gguf_w_f32(gguf_writer *w, const char *key, float v) { gguf_w_scalar(w, key, GGUF_T_FLOAT32, &v); }
void gguf_w_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    gguf_w_scalar(w, key, GGUF_T_BOOL, &b);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *v) {
    put_key(w, key, GGUF_T_STRING);
    put_str(w, v, strlen(v));
}

void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *v, size_t n) {
    size_t es = gguf_type_size(elem);
    if (!es) { fail(w, "key '%s': array elements must be fixed-size", key); return; }
    put_key(w, key, GGUF_T_ARRAY);
    put_u32(w, elem);
    put_u64(w, n);
    put(w, v, n * es);
}

void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n) {
    gguf_w_arr(w, key, GGUF_T_FLOAT32, v, n);
}
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    gguf_w_arr(w, key, GGUF_T_INT32, v, n);
}

void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n) {
    put_key(w, key, GGUF_T_ARRAY);
    put_u32(w, GGUF_T_STRING);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_str(w, v[i], strlen(v[i]));
}

void gguf_w_raw(gguf_writer *w, const char *key, gguf_vtype type, const void *bytes, size_t n) {
    put_key(w, key, type);
    put(w, bytes, n);
}

/* Registers a tensor after checking its shape and type; returns NULL (error recorded) when invalid. */
static wtensor *add_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne) {
    if (w->error[0]) return NULL;
    int block = sd_dtype_block((int)type);
    if (!block) { fail(w, "tensor '%s': unknown type", name); return NULL; }
    if (n_dims < 1 || n_dims > 4) { fail(w, "tensor '%s': 1 to 4 dimensions", name); return NULL; }
    size_t rows = 1;
    for (int d = 1; d < n_dims; d++) rows *= (size_t)ne[d];
    if (ne[0] <= 0 || ne[0] % block) { fail(w, "tensor '%s': row length not a multiple of the block", name); return NULL; }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) { fail(w, "out of memory%s", ""); return NULL; }
        w->t = nt;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) { fail(w, "out of memory%s", ""); return NULL; }
    w->n_t++;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = sd_dtype_row_bytes((int)type, ne[0]) * rows;
    return t;
}

void gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne, const void *data) {
    wtensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return;
    if (!(t->data = malloc(t->nbytes ? t->nbytes : 1))) { fail(w, "out of memory for tensor '%s'", name); return; }
    memcpy(t->data, data, t->nbytes);
}

void gguf_w_tensor_fn(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                      gguf_fill_fn fill, void *ctx) {
    wtensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return;
    t->fill = fill;
    t->ctx = ctx;
}

static int pad(FILE *fp, uint64_t pos, uint32_t align) {
    static const uint8_t zeros[256];
    size_t n = (size_t)((align - pos % align) % align);
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, fp) != k) return -1;
        n -= k;
    }
    return 0;
}

static int write_header(gguf_writer *w, FILE *fp, uint64_t *pos) {
    uint32_t hdr32[2] = {GGUF_MAGIC, 3};
    uint64_t hdr64[2] = {w->n_t, w->n_kv};
    if (fwrite(hdr32, 4, 2, fp) != 2 || fwrite(hdr64, 8, 2, fp) != 2) return -1;
    if (w->kv_len && fwrite(w->kv, 1, w->kv_len, fp) != w->kv_len) return -1;
    *pos = 24 + w->kv_len;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims;
        t->offset = off;
        if (fwrite(&len, 8, 1, fp) != 1 || fwrite(t->name, 1, len, fp) != len || fwrite(&nd, 4, 1, fp) != 1 ||
            fwrite(t->ne, 8, nd, fp) != nd || fwrite(&t->type, 4, 1, fp) != 1 || fwrite(&off, 8, 1, fp) != 1)
            return -1;
        *pos += 8 + len + 4 + 8 * nd + 4 + 8;
        off += (t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
    }
    if (!w->n_t) return 0; /* like llama.cpp: no data section, no padding */
    if (pad(fp, *pos, w->alignment)) return -1;
    *pos = (*pos + w->alignment - 1) / w->alignment * w->alignment;
    return 0;
}

static int write_data(gguf_writer *w, FILE *fp) {
    uint8_t *buf = NULL;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        if (t->data) {
            if (fwrite(t->data, 1, t->nbytes, fp) != t->nbytes) goto fail;
        } else {
            if (!buf && !(buf = malloc(CHUNK))) goto fail;
            for (size_t off = 0; off < t->nbytes; off += CHUNK) {
                size_t n = t->nbytes - off < CHUNK ? t->nbytes - off : CHUNK;
                t->fill(t->ctx, buf, off, n);
                if (fwrite(buf, 1, n, fp) != n) goto fail;
            }
        }
        if (pad(fp, t->nbytes, w->alignment)) goto fail;
    }
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

int gguf_writer_save(gguf_writer *w, const char *path, sd_err *err) {
    if (!w) return sd_errf(err, "%s: out of memory", path);
    if (w->error[0]) return sd_errf(err, "%s: %s", path, w->error);
    for (size_t i = 0; i < w->n_t; i++)
        for (size_t j = i + 1; j < w->n_t; j++)
            if (!strcmp(w->t[i].name, w->t[j].name))
                return sd_errf(err, "%s: duplicate tensor '%s'", path, w->t[i].name);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp)
        return sd_errf(err, "%s: path too long", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return sd_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
    setvbuf(fp, NULL, _IOFBF, 1 << 20);
    uint64_t pos;
    int bad = write_header(w, fp, &pos) || write_data(w, fp);
    int saved = errno;
    if (fclose(fp) && !bad) {
        bad = 1;
        saved = errno;
    }
    if (!bad && rename(tmp, path)) {
        bad = 1;
        saved = errno;
    }
    if (bad) {
        unlink(tmp);
        return sd_errf(err, "%s: write failed: %s", path, strerror(saved));
    }
    return 0;
}
