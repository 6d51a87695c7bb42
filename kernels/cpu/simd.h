/* Runtime SIMD dispatch for the CPU backend: the instruction-set levels, CPU feature detection, and the
 * table of inner kernels each level provides. One binary carries every level (each kernel file compiles
 * its functions with __attribute__((target(...)))); the best level the CPU supports is chosen at run time,
 * capped by the environment variable SPECD_SIMD=scalar|avx|avx2|avx512 (tests and benchmarks). */
#ifndef SD_CPU_SIMD_H
#define SD_CPU_SIMD_H
#include <stddef.h>
#include <stdint.h>

typedef enum sd_simd {
    SD_SIMD_SCALAR = 0, /* plain C: the reference every other level is tested against */
    SD_SIMD_AVX = 1,    /* AVX + FMA + F16C (no AVX2) */
    SD_SIMD_AVX2 = 2,   /* + AVX2 */
    SD_SIMD_AVX512 = 3, /* + AVX-512 F/BW/VL/VNNI */
    SD_SIMD_COUNT
} sd_simd;

/* One matrix product: out[i * out_stride + r] = dot(row r of w, x + i * cols) for i < n.
 * Quantized weights (Q8_0 and SD_MM_QUANT) multiply the activations quantized to 8 bits per block of 32
 * (xq: n x cols int8, xd: the n x cols/32 block scales, from sd_quant_act_q8), as llama.cpp does:
 * integer block sums are exact and several times cheaper than converting weights to float. F32/F16/BF16 weights use x as is. */
typedef struct sd_mm_job {
    float *out;
    int64_t out_stride;
    const uint8_t *w;
    size_t row_bytes;
    int64_t cols;
    const float *x;
    const int8_t *xq;
    const float *xd;
    const int32_t *xs; /* the sum of each block of xq (n x cols/32), for kernels that make the weights
                        * unsigned (w + 128, Q4_0's q + 8) or have minimums, and take sum(x) terms back off */
    const struct sd_act_group *xg; /* SD_MM_QUANT: the activations by group of 256 columns (sd_act_group) */
    int n;
    int type; /* sd_dtype of w: which block layout the SD_MM_QUANT kernel decodes */
    int path; /* SD_MM_AUTO (0): the kernel's crossover (block_min); the others force a path (tests, bench) */
} sd_mm_job;

/* One group of 256 columns of one quantized activation vector as the SD_MM_QUANT kernels read it: the 8
 * blocks' levels, in a whole group interleaved so that one 32-byte load holds word v of all 8 blocks
 * (word v of block k at word 8 * v + k), in a row's last, partial group in column order; the blocks'
 * scales, level sums and their products (0 past the row's end). The records of a product lie group by group, the n
 * activations' records of a group side by side (group g of activation i at xg[g * n + i]), so that a
 * kernel reaches the activations of a tile at fixed offsets from one pointer. */
typedef struct sd_act_group {
    int8_t q[256];
    float d[8];
    int32_t s[8];
    float ds[8]; /* d * s: the offset and minimum terms take it in one multiply-add per group */
} sd_act_group;

/* The records (g, one per group of 256 columns, gstride records apart) of one activation vector of cols
 * columns already quantized (q, and per block of 32 the scale d and level sum sums: quant_act). The plain
 * C form, which every SIMD level's (sd_cpu_kernels.act_groups) equals. */
void sd_act_groups_ref(const int8_t *q, const float *d, const int32_t *sums, int64_t cols, sd_act_group *g,
                       int64_t gstride);

/* The two ways a kernel runs a product: register tiles streaming each weight row once (1-8 activations:
 * decode, verify blocks), or cache-blocked panels (many activations: prefill, batches; mm_tmpl.h). Both
 * give bitwise the same result for every element, so the choice is speed alone. */
enum { SD_MM_AUTO, SD_MM_SMALL, SD_MM_BLOCKED };

/* Computes rows [r0, r1) of a job. r0 is a multiple of SD_MM_ROW_ALIGN; a kernel groups rows only at
 * absolute multiples of its group size, so every output element is computed by the same instruction
 * sequence whatever the split across threads (results are bitwise independent of the thread count). */
typedef void (*sd_mm_rows_fn)(const sd_mm_job *j, int64_t r0, int64_t r1);
#define SD_MM_ROW_ALIGN 16

/* Weight types a matmul kernel handles, as indices into sd_cpu_kernels.mm. SD_MM_QUANT: every other
 * loadable quantized type (kernels/quant_k.h, the job's type says which), multiplied like Q8_0 with the
 * activations quantized per block of 32 (xq, xd, xs), in integers per block (kernels/cpu/quant_tmpl.h). */
enum { SD_MM_F32, SD_MM_F16, SD_MM_BF16, SD_MM_Q8_0, SD_MM_QUANT, SD_MM_NTYPES };

/* Positions of a chunk of the attention kernels (a multiple of 16). */
#define SD_ATT_CHUNK 64

typedef struct sd_cpu_kernels {
    sd_simd level;
    const char *name;
    sd_mm_rows_fn mm[SD_MM_NTYPES];
    int block_min[SD_MM_NTYPES]; /* activations from which mm[] takes the blocked path (INT_MAX: never) */
    /* Attention over chunks of SD_ATT_CHUNK positions (kernels/cpu/attention.c drives them). A K/V block is
     * n <= 16 rows of hd elements (F16 bits when f16, else F32), `stride` elements apart; rows are padded
     * to hdp floats (a multiple of 16), zero past hd and past row n. attn_load_k: a block into columns
     * col..col+15 of kt ([hdp][SD_ATT_CHUNK]: K transposed); attn_load_v: into 16 rows of hdp floats.
     * attn_row: the g queries of one row (q [g][hdp]) against the first n positions of a chunk so loaded:
     * each query's online-softmax update of its state (ml[2i], ml[2i+1] = m, l; acc [g][hdp];
     * kernels/softmax.h), scores times scale; s: scratch of 4 x SD_ATT_CHUNK floats. */
    void (*attn_load_k)(float *kt, int col, const void *src, size_t stride, int n, int hd, int hdp, int f16);
    void (*attn_load_v)(float *v, const void *src, size_t stride, int n, int hd, int hdp, int f16);
    void (*attn_row)(const float *q, int g, const float *kt, const float *v, int n, int hdp, float scale, float *ml,
                     float *acc, float *s);
    /* sd_quant_act_q8 (kernels/quant.h), bitwise: the activations of an integer product quantized per
     * block of 32, without the reference's branch per value (its sign test mispredicts half the time). */
    void (*quant_act)(const float *x, int64_t n, int8_t *q, float *d, int32_t *sums);
    /* sd_act_groups_ref, bitwise: the quantized activations as the SD_MM_QUANT kernels read them. */
    void (*act_groups)(const int8_t *q, const float *d, const int32_t *sums, int64_t cols, sd_act_group *g,
                       int64_t gstride);
} sd_cpu_kernels;

/* Best level this CPU (and OS) supports, ignoring SPECD_SIMD. */
sd_simd sd_simd_detect(void);
/* The level to use: sd_simd_detect() capped by SPECD_SIMD when set. */
sd_simd sd_simd_default(void);
/* "scalar", "avx", "avx2", "avx512". */
const char *sd_simd_name(sd_simd s);
/* Kernels of a level (NULL when the level is unknown). Does not check the CPU supports it. */
const sd_cpu_kernels *sd_simd_kernels(sd_simd s);

extern const sd_cpu_kernels sd_kernels_scalar, sd_kernels_avx, sd_kernels_avx2, sd_kernels_avx512;

#endif
