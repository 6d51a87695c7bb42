/* Sampling: filtered distributions and a deterministic RNG.
 *
 * Everything here is single-threaded and uses a fixed order of operations, so the same logits and seed
 * give the same draws on every machine and thread count. Work is proportional to the vocabulary for the
 * softmax, and the expensive part (ordering candidates) is limited to the candidates that can survive:
 * top-k uses a bounded heap, top-p and min-p first discard tokens that provably cannot be kept. */
#include "target/sampler.h"

#include "base/heap.h"
#include "kernels/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sd_sampling sd_sampling_greedy(void) {
    sd_sampling s = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
    return s;
}

sd_sample_cfg sd_sampling_cfg(const sd_sampling *s) {
    sd_sample_cfg c = {.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p, .min_p = s->min_p};
    return c;
}

bool sd_sampling_is_greedy(const sd_sampling *s) { return s->temperature <= 0.0f || s->top_k == 1; }

/* ---- RNG: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sd_rng_seed(sd_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sd_rng_u64(sd_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* 24 random bits: every value is exactly representable and strictly below 1. */
float sd_rng_f32(sd_rng *r) { return (float)(sd_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

/* ---- distributions ---- */

#define COUNT_N 65537 /* radix-sort buckets (16 bits) + 1 */
static size_t probs_bytes(int vocab);

int sd_probs_init(sd_probs *d, int vocab) {
    memset(d, 0, sizeof *d);
    if (vocab <= 0) return -1;
    d->p = calloc(1, probs_bytes(vocab)); /* p, then the sampling scratch (see get_scratch) */
    d->ids = malloc((size_t)vocab * sizeof *d->ids);
    if (!d->p || !d->ids) {
        sd_probs_free(d);
        return -1;
    }
    d->vocab = vocab;
    return 0;
}

void sd_probs_free(sd_probs *d) {
    free(d->p);
    free(d->ids);
    memset(d, 0, sizeof *d);
}

/* NaN compares as the lowest value so a broken logit never wins. */
static bool better(float a, int32_t ia, float b, int32_t ib) { return sd_argmax_prefers(a, ia, b, ib); }

int32_t sd_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (better(x[i], i, x[best], best)) best = i;
    return best;
}

/* Candidate: a token id and a value (logit or probability); ordered by value descending, id ascending. */
typedef struct cand {
    float v;
    int32_t id;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (better(x->v, x->id, y->v, y->id)) return -1;
    if (better(y->v, y->id, x->v, x->id)) return 1;
    return 0;
}

/* Sorts n candidates best first. Values must be >= 0 (probabilities) when n is large: then an LSD radix
 * sort on the float bits (monotonic for non-negative floats) keeps it linear; it is stable, and the input
 * is in ascending id order, so ties stay in ascending id order exactly as cand_cmp would put them. */
static void sort_probs(cand *c, int n, cand *tmp, int *count, bool id_ordered) {
    if (n <= 1024 || !id_ordered) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        return;
    }
    cand *src = c, *dst = tmp;
    for (int shift = 0; shift < 32; shift += 16) {
        memset(count, 0, COUNT_N * sizeof *count);
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i].v, 4);
            count[((~bits) >> shift & 0xFFFF) + 1]++;
        }
        for (int k = 0; k < 65536; k++) count[k + 1] += count[k];
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i].v, 4);
            dst[count[(~bits) >> shift & 0xFFFF]++] = src[i];
        }
        cand *t = src; src = dst; dst = t;
    }
    /* two passes: the result is back in c */
}

/* Heap order for top-k: the worst of the k kept candidates at the root, replaced by any better logit. */
static bool worse(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return better(y->v, y->id, x->v, x->id);
}

static int top_k_select(const float *logits, int vocab, int k, cand *out) {
    for (int i = 0; i < k; i++) out[i] = (cand){logits[i], i};
    for (int i = k / 2 - 1; i >= 0; i--) sd_heap_down(out, (size_t)k, (size_t)i, sizeof *out, worse);
    for (int32_t i = k; i < vocab; i++) {
        if (!better(logits[i], i, out[0].v, out[0].id)) continue;
        out[0] = (cand){logits[i], i};
        sd_heap_down(out, (size_t)k, 0, sizeof *out, worse);
    }
    return k;
}

/* Scratch for one call lives in the same allocation as d->p, after its vocab floats (sd_probs_init
 * makes it), so sampling allocates nothing per token and needs no global state. */
typedef struct scratch {
    cand *cand, *tmp;
    int *count;
} scratch;

static size_t cand_offset(int vocab) { return ((size_t)vocab * sizeof(float) + 15) & ~(size_t)15; }
static size_t probs_bytes(int vocab) {
    return cand_offset(vocab) + 2 * (size_t)vocab * sizeof(cand) + COUNT_N * sizeof(int);
}
static scratch get_scratch(const sd_probs *d) {
    char *base = (char *)d->p + cand_offset(d->vocab);
    scratch sc = {(cand *)base, (cand *)base + d->vocab, (int *)((cand *)base + 2 * (size_t)d->vocab)};
    return sc;
}

static void one_hot(sd_probs *d, int32_t id) {
    d->p[id] = 1.0f;
    d->ids[0] = id;
    d->n = 1;
}

/* Turns candidate logits into probabilities in place (softmax at temperature t); returns false when the
 * logits are unusable (all NaN or -inf). */
static bool softmax(cand *c, int n, float t, float maxv) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float e = isnan(c[i].v) ? 0.0f : expf((c[i].v - maxv) / t);
        c[i].v = e;
        sum += e;
    }
    if (!(sum > 0.0) || !isfinite(sum)) return false;
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) c[i].v *= inv;
    return true;
}

/* Drops candidates that no later filter could keep, before the sort. Both top-p and min-p keep a prefix
 * of the sorted order, so everything below a safe bound can go:
 *  - min-p keeps p >= min_p * p_max exactly;
 *  - top-p: if the tokens below eps sum to < 1 - top_p, the tokens >= eps sum to > top_p, so the nucleus
 *    lies within them. eps = (1 - top_p) / (2n) guarantees that sum bound with margin for rounding. */
static int prefilter(cand *c, int n, const sd_sampling *s) {
    float pmax = 0.0f;
    for (int i = 0; i < n; i++)
        if (c[i].v > pmax) pmax = c[i].v;
    float bound = 0.0f;
    if (s->min_p > 0.0f) bound = s->min_p * pmax;
    if (s->top_p < 1.0f) {
        float eps = (float)((1.0 - (double)s->top_p) / (2.0 * n));
        if (eps > bound) bound = eps;
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (c[i].v > 0.0f && c[i].v >= bound) c[m++] = c[i];
    return m;
}

void sd_sampling_probs(const sd_sampling *s, const float *logits, int vocab, sd_probs *d) {
    memset(d->p, 0, (size_t)d->vocab * sizeof *d->p);
    d->n = 0;
    if (vocab > d->vocab) vocab = d->vocab;
    int32_t best = sd_argmax(logits, vocab);
    if (sd_sampling_is_greedy(s)) {
        one_hot(d, best);
        return;
    }
    scratch sc = get_scratch(d);
    cand *c = sc.cand;
    int n;
    if (s->top_k > 0 && s->top_k < vocab) {
        n = top_k_select(logits, vocab, s->top_k, c);
    } else {
        n = vocab;
        for (int32_t i = 0; i < vocab; i++) c[i] = (cand){logits[i], i};
    }
    if (!softmax(c, n, s->temperature, logits[best])) {
        one_hot(d, best);
        return;
    }
    bool id_ordered = n == vocab; /* top-k candidates come out of the heap unordered */
    n = prefilter(c, n, s);
    if (n == 0) {
        one_hot(d, best);
        return;
    }
    sort_probs(c, n, sc.tmp, sc.count, id_ordered);

    /* top-p: the shortest prefix whose mass reaches top_p (renormalised over the top-k survivors) */
    if (s->top_p < 1.0f) {
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += c[i].v;
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    /* min-p: relative to the most likely token (invariant under renormalisation) */
    if (s->min_p > 0.0f) {
        float bound = s->min_p * c[0].v;
        int keep = 1;
        while (keep < n && c[keep].v >= bound) keep++;
        n = keep;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += c[i].v;
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) {
        d->p[c[i].id] = c[i].v * inv;
        d->ids[i] = c[i].id;
    }
    d->n = n;
}

int32_t sd_probs_draw(const sd_probs *d, float u) {
    if (d->n <= 0) return 0;
    double total = 0.0;
    for (int i = 0; i < d->n; i++) total += d->p[d->ids[i]];
    double target = (double)u * total, cum = 0.0;
    for (int i = 0; i < d->n; i++) {
        cum += d->p[d->ids[i]];
        if (target < cum) return d->ids[i];
    }
    return d->ids[d->n - 1];
}
