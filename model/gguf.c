/* GGUF reader: the file is mmapped and every read is bounds-checked against its size, so a truncated or
 * corrupt file gives an error naming the file and the problem instead of a crash. Tensor data is never
 * copied: gguf_tensor_info.data points into the mapping. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/backend.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGN 32
#define GGUF_MAX_ALIGN (1 << 16)  /* general.alignment: padding beyond a page size is absurd */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_KEY 65535      /* the spec's limit on key length */
#define GGUF_MAX_NAME 4096      /* generous; llama.cpp itself stops at 63 */
#define GGUF_MAX_NEST 8         /* nested array depth we accept */

/* A bounds-checked cursor over the mapping. */
typedef struct cursor {
    const uint8_t *p;
    size_t size, off;
    sd_err *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->off)
        return sd_errf(c->err, "truncated file: %s needs %llu bytes at offset %zu but only %zu remain", what,
                       (unsigned long long)n, c->off, c->size - c->off);
    return 0;
}

static int rd(cursor *c, void *dst, size_t n, const char *what) {
    if (need(c, n, what)) return -1;
    memcpy(dst, c->p + c->off, n);
    c->off += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* A string: u64 length then bytes. The length is checked against what is left before anything trusts it. */
static int rd_str(cursor *c, gguf_str *s, uint64_t max_len, const char *what) {
    size_t at = c->off;
    if (rd_u64(c, &s->len, what)) return -1;
    if (s->len > c->size - c->off)
        return sd_errf(c->err, "%s: string length %llu at offset %zu runs past the end of the file (truncated or corrupt file)", what,
                       (unsigned long long)s->len, at);
    if (s->len > max_len)
        return sd_errf(c->err, "%s: string length %llu at offset %zu exceeds the limit of %llu", what,
                       (unsigned long long)s->len, at, (unsigned long long)max_len);
    s->ptr = (const char *)c->p + c->off;
    c->off += s->len;
    return 0;
}

static char *dup_str(gguf_str s) {
    char *r = malloc(s.len + 1);
    if (!r) return NULL;
    memcpy(r, s.ptr, s.len);
    r[s.len] = 0;
    return r;
}

size_t gguf_type_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_known(uint32_t t) { return t <= GGUF_T_FLOAT64; }

/* Reads a fixed-size scalar into the kv's union (sign- or zero-extended, floats widened). */
static void load_scalar(gguf_kv *kv, const uint8_t *p) {
    switch (kv->type) {
    case GGUF_T_UINT8: case GGUF_T_BOOL: kv->v.u = p[0]; break;
    case GGUF_T_INT8: kv->v.i = (int8_t)p[0]; break;
    case GGUF_T_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case GGUF_T_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case GGUF_T_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case GGUF_T_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case GGUF_T_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case GGUF_T_UINT64: memcpy(&kv->v.u, p, 8); break;
    case GGUF_T_INT64: memcpy(&kv->v.i, p, 8); break;
    case GGUF_T_FLOAT64: memcpy(&kv->v.f, p, 8); break;
    default: break;
    }
}

/* Skips (validating) one array body: element type, count, elements. Used for nested arrays. */
static int skip_array(cursor *c, const char *key, int depth) {
    uint32_t et;
    uint64_t n;
    if (depth > GGUF_MAX_NEST) return sd_errf(c->err, "key '%s': arrays nested deeper than %d", key, GGUF_MAX_NEST);
    if (rd_u32(c, &et, "array element type") || rd_u64(c, &n, "array length")) return -1;
    if (!vtype_known(et)) return sd_errf(c->err, "key '%s': unknown array element type %u", key, et);
    size_t es = gguf_type_size(et);
    if (es) {
        if (n > (c->size - c->off) / es)
            return sd_errf(c->err, "key '%s': array of %llu elements runs past the end of the file", key,
                           (unsigned long long)n);
        c->off += n * es;
        return 0;
    }
    /* strings or arrays: each element takes at least 8 bytes, which bounds the loop by the file size */
    if (n > (c->size - c->off) / 8)
        return sd_errf(c->err, "key '%s': array of %llu elements runs past the end of the file", key,
                       (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (et == GGUF_T_STRING ? rd_str(c, &s, UINT64_MAX, "array string") : skip_array(c, key, depth + 1))
            return -1;
    }
    return 0;
}

static int read_array(cursor *c, gguf_kv *kv) {
    uint32_t et;
    if (rd_u32(c, &et, "array element type") || rd_u64(c, &kv->arr_n, "array length")) return -1;
    if (!vtype_known(et)) return sd_errf(c->err, "key '%s': unknown array element type %u", kv->key, et);
    kv->arr_type = (gguf_vtype)et;
    size_t es = gguf_type_size(et);
    if (es) {
        if (kv->arr_n > (c->size - c->off) / es)
            return sd_errf(c->err, "key '%s': array of %llu elements runs past the end of the file", kv->key,
                           (unsigned long long)kv->arr_n);
        kv->arr_data = c->p + c->off;
        c->off += kv->arr_n * es;
        return 0;
    }
    if (kv->arr_n > (c->size - c->off) / 8)
        return sd_errf(c->err, "key '%s': array of %llu elements runs past the end of the file", kv->key,
                       (unsigned long long)kv->arr_n);
    kv->arr_data = c->p + c->off;
    if (et == GGUF_T_ARRAY) {
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (skip_array(c, kv->key, 2)) return -1;
        return 0;
    }
    kv->arr_strs = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *kv->arr_strs);
    if (!kv->arr_strs) return sd_errf(c->err, "out of memory for %llu strings", (unsigned long long)kv->arr_n);
    for (uint64_t i = 0; i < kv->arr_n; i++)
        if (rd_str(c, &kv->arr_strs[i], UINT64_MAX, kv->key)) return -1;
    return 0;
}

static int read_kv(cursor *c, gguf_kv *kv, uint64_t idx) {
    gguf_str key;
    uint32_t t;
    char what[64];
    snprintf(what, sizeof what, "key of metadata entry %llu", (unsigned long long)idx);
    if (rd_str(c, &key, GGUF_MAX_KEY, what)) return -1;
    if (!(kv->key = dup_str(key))) return sd_errf(c->err, "out of memory");
    if (rd_u32(c, &t, "metadata value type")) return -1;
    if (!vtype_known(t)) return sd_errf(c->err, "key '%s': unknown value type %u", kv->key, t);
    kv->type = (gguf_vtype)t;
    size_t start = c->off;
    if (t == GGUF_T_STRING) {
        if (rd_str(c, &kv->v.s, UINT64_MAX, kv->key)) return -1;
    } else if (t == GGUF_T_ARRAY) {
        if (read_array(c, kv)) return -1;
    } else {
        size_t n = gguf_type_size(t);
        if (need(c, n, kv->key)) return -1;
        load_scalar(kv, c->p + c->off);
        c->off += n;
    }
    kv->raw = c->p + start;
    kv->raw_len = c->off - start;
    return 0;
}

static int read_tensor_info(cursor *c, gguf_tensor_info *ti, uint64_t idx) {
    gguf_str name;
    char what[64];
    snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)idx);
    if (rd_str(c, &name, GGUF_MAX_NAME, what)) return -1;
    if (!(ti->name = dup_str(name))) return sd_errf(c->err, "out of memory");
    if (rd_u32(c, &ti->n_dims, "tensor dimension count")) return -1;
    if (ti->n_dims < 1 || ti->n_dims > GGUF_MAX_DIMS)
        return sd_errf(c->err, "tensor '%s' has %u dimensions (1 to %d supported)", ti->name, ti->n_dims,
                       GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) ti->ne[d] = 1;
    uint64_t total = 1;
    for (uint32_t d = 0; d < ti->n_dims; d++) {
        uint64_t ne;
        if (rd_u64(c, &ne, "tensor dimension")) return -1;
        /* 2^40 elements per dim and 2^50 in total are far beyond any model, and keep products in range */
        if (ne == 0 || ne > (1ull << 40) || total > (1ull << 50) / ne)
            return sd_errf(c->err, "tensor '%s' has an absurd dimension %u: %llu", ti->name, d,
                           (unsigned long long)ne);
        ti->ne[d] = (int64_t)ne;
        total *= ne;
    }
    if (rd_u32(c, &ti->type, "tensor type") || rd_u64(c, &ti->offset, "tensor offset")) return -1;
    int block = sd_dtype_block((int)ti->type);
    if (!block) return sd_errf(c->err, "tensor '%s' has unknown type %u", ti->name, ti->type);
    if (ti->ne[0] % block)
        return sd_errf(c->err, "tensor '%s': row length %lld is not a multiple of the %s block size %d", ti->name,
                       (long long)ti->ne[0], sd_dtype_name((int)ti->type), block);
    ti->nbytes = sd_dtype_row_bytes((int)ti->type, ti->ne[0]) * (total / (uint64_t)ti->ne[0]);
    return 0;
}

static int check_alignment(gguf_file *f, sd_err *err) {
    f->alignment = GGUF_DEFAULT_ALIGN;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv) return 0;
    uint32_t a;
    if (gguf_get_u32(f, "general.alignment", &a, err)) return -1;
    if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGN)
        return sd_errf(err, "general.alignment %u is not a power of two up to %d", a, GGUF_MAX_ALIGN);
    f->alignment = a;
    return 0;
}

/* The alignment the kernels need to load a tensor's elements in place: the largest power of two that
 * divides its block size, at most 8 (F32 4, F16 2, Q8_0's 34-byte blocks 2). */
static uint64_t type_align(uint32_t type) {
    size_t bb = sd_dtype_block_bytes((int)type);
    uint64_t a = 1;
    while (a < 8 && bb % (a * 2) == 0) a *= 2;
    return a;
}

/* Tensor data must lie inside the file, be aligned, and not repeat a name. */
static int place_tensors(gguf_file *f, size_t header_end, sd_err *err) {
    uint64_t a = f->alignment;
    f->data_offset = (header_end + a - 1) / a * a;
    if (f->n_tensors && f->data_offset > f->size)
        return sd_errf(err, "truncated file: tensor data section starts at %llu but the file has %zu bytes",
                       (unsigned long long)f->data_offset, f->size);
    uint64_t avail = f->n_tensors ? f->size - f->data_offset : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        if (t->offset % a)
            return sd_errf(err, "tensor '%s': data offset %llu is not a multiple of the alignment %llu", t->name,
                           (unsigned long long)t->offset, (unsigned long long)a);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return sd_errf(err, "tensor '%s': data [%llu, +%zu) lies outside the data section (%llu bytes): truncated or corrupt file",
                           t->name, (unsigned long long)t->offset, t->nbytes, (unsigned long long)avail);
        /* general.alignment may be 1: the offset in the file (the mapping is page-aligned) must still suit
         * the element type, or the kernels would load misaligned values */
        uint64_t ta = type_align(t->type);
        if ((f->data_offset + t->offset) % ta)
            return sd_errf(err, "tensor '%s': data at file offset %llu is not aligned to %llu bytes as %s needs "
                           "(general.alignment %llu)", t->name, (unsigned long long)(f->data_offset + t->offset),
                           (unsigned long long)ta, sd_dtype_name((int)t->type), (unsigned long long)a);
        t->data = f->map + f->data_offset + t->offset;
    }
    return 0;
}

/* Names must be unique: a duplicated key or tensor would make lookups silently pick one of them. */
static int check_unique(const gguf_file *f, sd_err *err) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        for (uint64_t j = i + 1; j < f->n_kv; j++)
            if (!strcmp(f->kv[i].key, f->kv[j].key)) return sd_errf(err, "duplicate key '%s'", f->kv[i].key);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        for (uint64_t j = i + 1; j < f->n_tensors; j++)
            if (!strcmp(f->tensors[i].name, f->tensors[j].name))
                return sd_errf(err, "duplicate tensor '%s'", f->tensors[i].name);
    return 0;
}

static int parse(gguf_file *f, sd_err *err) {
    cursor c = {f->map, f->size, 0, err};
    uint32_t magic;
    if (rd_u32(&c, &magic, "magic")) return -1;
    if (magic != GGUF_MAGIC) return sd_errf(err, "not a GGUF file (bad magic 0x%08x)", magic);
    if (rd_u32(&c, &f->version, "version")) return -1;
    if (f->version != 2 && f->version != 3)
        return sd_errf(err, "unsupported GGUF version %u (2 and 3 are supported)", f->version);
    if (rd_u64(&c, &f->n_tensors, "tensor count") || rd_u64(&c, &f->n_kv, "metadata count")) return -1;
    /* each metadata entry takes >= 12 bytes and each tensor info >= 32: bounds counts before allocating */
    if (f->n_kv > (f->size - c.off) / 12)
        return sd_errf(err, "absurd metadata count %llu for a file of %zu bytes (truncated or corrupt file)", (unsigned long long)f->n_kv,
                       f->size);
    if (f->n_tensors > (f->size - c.off) / 32)
        return sd_errf(err, "absurd tensor count %llu for a file of %zu bytes (truncated or corrupt file)", (unsigned long long)f->n_tensors,
                       f->size);
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return sd_errf(err, "out of memory");
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (read_kv(&c, &f->kv[i], i)) return -1;
    if (check_alignment(f, err)) return -1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (read_tensor_info(&c, &f->tensors[i], i)) return -1;
    if (check_unique(f, err)) return -1;
    return place_tensors(f, c.off, err);
}

int gguf_open(const char *path, gguf_file **out, sd_err *err) {
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return sd_errf(err, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        sd_errf(err, "%s: cannot open: %s", path, strerror(errno));
        gguf_close(f);
        return -1;
    }
    struct stat st;
    const char *bad = NULL;
    if (fstat(fd, &st)) bad = strerror(errno);
    else if (!S_ISREG(st.st_mode)) bad = "not a regular file";
    else if (st.st_size == 0) bad = "empty file";
    if (bad) {
        close(fd);
        sd_errf(err, "%s: %s", path, bad);
        gguf_close(f);
        return -1;
    }
    f->size = (size_t)st.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        sd_errf(err, "%s: cannot mmap: %s", path, strerror(errno));
        gguf_close(f);
        return -1;
    }
    f->map = m;
    if (parse(f, err)) {
        sd_err_prefix(err, "%s", path);
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            free(f->kv[i].arr_strs);
        }
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    if (f->map) munmap((void *)f->map, f->size);
    free(f->path);
    free(f);
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && !strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static bool is_unsigned(gguf_vtype t) {
    return t == GGUF_T_UINT8 || t == GGUF_T_UINT16 || t == GGUF_T_UINT32 || t == GGUF_T_UINT64;
}
static bool is_signed(gguf_vtype t) {
    return t == GGUF_T_INT8 || t == GGUF_T_INT16 || t == GGUF_T_INT32 || t == GGUF_T_INT64;
}

static const gguf_kv *find_req(const gguf_file *f, const char *key, sd_err *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) sd_errf(err, "%s: missing metadata key '%s'", f->path, key);
    return kv;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, sd_err *err) {
    const gguf_kv *kv = find_req(f, key, err);
    if (!kv) return -1;
    if (is_unsigned(kv->type) && kv->v.u <= UINT32_MAX) *out = (uint32_t)kv->v.u;
    else if (is_signed(kv->type) && kv->v.i >= 0 && kv->v.i <= (int64_t)UINT32_MAX) *out = (uint32_t)kv->v.i;
    else return sd_errf(err, "%s: key '%s' is not an unsigned 32-bit integer", f->path, key);
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, sd_err *err) {
    const gguf_kv *kv = find_req(f, key, err);
    if (!kv) return -1;
    if (kv->type == GGUF_T_FLOAT32 || kv->type == GGUF_T_FLOAT64) *out = (float)kv->v.f;
    else if (is_unsigned(kv->type)) *out = (float)kv->v.u;
    else if (is_signed(kv->type)) *out = (float)kv->v.i;
    else return sd_errf(err, "%s: key '%s' is not a number", f->path, key);
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, sd_err *err) {
    const gguf_kv *kv = find_req(f, key, err);
    if (!kv) return -1;
    if (kv->type == GGUF_T_BOOL || is_unsigned(kv->type)) *out = kv->v.u != 0;
    else if (is_signed(kv->type)) *out = kv->v.i != 0;
    else return sd_errf(err, "%s: key '%s' is not a bool", f->path, key);
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, char **out, sd_err *err) {
    const gguf_kv *kv = find_req(f, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_T_STRING) return sd_errf(err, "%s: key '%s' is not a string", f->path, key);
    if (!(*out = dup_str(kv->v.s))) return sd_errf(err, "out of memory");
    return 0;
}

/* Element i of a fixed-size array, as raw bytes; NULL when out of range or not such an array. */
static const uint8_t *arr_elem(const gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != GGUF_T_ARRAY || i >= kv->arr_n) return NULL;
    size_t es = gguf_type_size(kv->arr_type);
    return es ? (const uint8_t *)kv->arr_data + i * es : NULL;
}

int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out) {
    const uint8_t *p = arr_elem(kv, i);
    if (!p) return -1;
    gguf_kv tmp = {.type = kv->arr_type};
    load_scalar(&tmp, p);
    if (is_signed(tmp.type)) *out = tmp.v.i;
    else if ((is_unsigned(tmp.type) || tmp.type == GGUF_T_BOOL) && tmp.v.u <= INT64_MAX) *out = (int64_t)tmp.v.u;
    else return -1;
    return 0;
}

int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out) {
    const uint8_t *p = arr_elem(kv, i);
    if (!p) return -1;
    gguf_kv tmp = {.type = kv->arr_type};
    load_scalar(&tmp, p);
    if (tmp.type == GGUF_T_FLOAT32 || tmp.type == GGUF_T_FLOAT64) *out = (float)tmp.v.f;
    else if (is_signed(tmp.type)) *out = (float)tmp.v.i;
    else if (is_unsigned(tmp.type)) *out = (float)tmp.v.u;
    else return -1;
    return 0;
}
