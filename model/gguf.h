/* GGUF v2/v3 reader (mmapped, no copy of tensor data) and writer (used by mkmodel and tests). */
#ifndef SD_GGUF_H
#define SD_GGUF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum gguf_vtype {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3, GGUF_T_UINT32 = 4,
    GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7, GGUF_T_STRING = 8, GGUF_T_ARRAY = 9,
    GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11, GGUF_T_FLOAT64 = 12,
} gguf_vtype;

/* Byte size of a value of a fixed-size type; 0 for string, array and unknown types. */
size_t gguf_type_size(uint32_t type);

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
    uint64_t len;
    const char *ptr;
} gguf_str;

typedef struct gguf_kv {
    char *key;            /* NUL-terminated copy */
    gguf_vtype type;
    union {
        uint64_t u;       /* all unsigned ints and bool */
        int64_t i;        /* all signed ints */
        double f;         /* float32/float64 */
        gguf_str s;
    } v;
    /* arrays: element type, count; elements of fixed-size types are at arr_data (unaligned, in the
     * mapping); string arrays are decoded into arr_strs[arr_n]. */
    gguf_vtype arr_type;
    uint64_t arr_n;
    const void *arr_data;
    gguf_str *arr_strs;
    /* the value's serialized bytes in the mapping (type tag excluded): lets a writer copy it verbatim.
     * Nested arrays (arr_type == GGUF_T_ARRAY) are validated but only reachable through these bytes. */
    const void *raw;
    uint64_t raw_len;
} gguf_kv;

typedef struct gguf_tensor_info {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];        /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint32_t type;        /* GGML type id (see sd_dtype) */
    uint64_t offset;      /* relative to the data section */
    const void *data;     /* in the mapping, bounds-checked */
    size_t nbytes;
} gguf_tensor_info;

typedef struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor_info *tensors;
    uint64_t alignment;
    uint64_t data_offset;
} gguf_file;

/* Opens and validates a GGUF file: magic, version, every kv and tensor info, tensor bounds, alignment.
 * Errors name the file and what is wrong. */
int gguf_open(const char *path, gguf_file **out, sd_err *err);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name);
/* Typed getters: 0 ok; -1 when missing (message says so) or of the wrong type. Integers of any width
 * convert when the value fits. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, sd_err *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, sd_err *err);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, sd_err *err);
/* Copies a string value into a fresh NUL-terminated malloc'd buffer. */
int gguf_get_str(const gguf_file *f, const char *key, char **out, sd_err *err);
/* Array element access with bounds/type checks (integers of any width convert). */
int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out);

/* ---- writer ---- */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(uint32_t alignment);
void gguf_writer_free(gguf_writer *w);
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_bool(gguf_writer *w, const char *key, bool v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n);
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* Any numeric or bool scalar: v points at a value of that type's width (uint8_t, int16_t, double...). */
void gguf_w_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v);
/* An array of n fixed-size elements of type elem (not string, not array). */
void gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *v, size_t n);
/* A value given as its serialized bytes (after the type tag): copies values between files, nested arrays. */
void gguf_w_raw(gguf_writer *w, const char *key, gguf_vtype type, const void *bytes, size_t n);
/* Adds a tensor; data (nbytes per its type and shape) is copied. ne[0] is the contiguous dimension. */
void gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne, const void *data);
/* Adds a tensor whose bytes are produced at save time (for models larger than memory): fill(ctx, buf,
 * offset, nbytes) writes bytes [offset, offset+nbytes) of the tensor's data into buf. */
typedef void (*gguf_fill_fn)(void *ctx, void *buf, size_t offset, size_t nbytes);
void gguf_w_tensor_fn(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                      gguf_fill_fn fill, void *ctx);
int gguf_writer_save(gguf_writer *w, const char *path, sd_err *err);

#endif
