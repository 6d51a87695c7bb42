/* The device-sampling algorithm in plain C, step for step as kernels/cuda/sample.cu runs it (one block
 * per row there, one loop per pass here); the shared per-element math is kernels/sample_math.h. */
#include "kernels/sample_ref.h"

#include <math.h>
#include <string.h>

#include "kernels/sample_math.h"

/* A threshold filter's result: keep sd_keep_ranked(key, id, thr, last). NO_CUT keeps everything. */
typedef struct cut {
    uint32_t thr;
    int32_t last;
} cut;
static const cut NO_CUT = {0, INT32_MAX};

enum { BY_COUNT_OF_LOGITS, BY_MASS_OF_PROBS };

static void element(const float *x, int mode, int i, uint32_t *key, uint64_t *amount) {
    if (mode == BY_COUNT_OF_LOGITS) {
        *key = sd_logit_key(x[i]);
        *amount = 1;
    } else {
        *key = sd_prob_key(x[i]);
        *amount = sd_mass_fp(x[i]);
    }
}

/* The smallest prefix of the order (key descending, id ascending) whose amount reaches need. */
static cut radix_select(const float *x, int width, int mode, uint64_t need) {
    uint64_t hist[SD_RADIX_BINS];
    uint32_t prefix = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        memset(hist, 0, sizeof hist);
        for (int i = 0; i < width; i++) {
            uint32_t key;
            uint64_t amount;
            element(x, mode, i, &key, &amount);
            if (sd_radix_match(key, prefix, shift)) hist[(key >> shift) & 0xFF] += amount;
        }
        uint64_t above;
        int d = sd_radix_pick(hist, need, &above);
        if (d < 0) return NO_CUT; /* everything together falls short: keep it all */
        prefix |= (uint32_t)d << shift;
        need -= above;
    }
    /* prefix is the threshold key; keep the first ties at it (id order) until need is met */
    uint64_t unit = mode == BY_COUNT_OF_LOGITS ? 1 : sd_mass_fp(sd_bits_f32(prefix));
    uint64_t ties = sd_ties_needed(need, unit), seen = 0;
    cut c = {prefix, INT32_MAX};
    for (int i = 0; i < width; i++) {
        uint32_t key;
        uint64_t amount;
        element(x, mode, i, &key, &amount);
        if (key == prefix && ++seen == ties) {
            c.last = i;
            break;
        }
    }
    return c;
}

static int32_t argmax(const float *x, int width) {
    int32_t best = 0;
    for (int32_t i = 1; i < width; i++)
        if (sd_argmax_prefers(x[i], i, x[best], best)) best = i;
    return best;
}

static void one_hot(float *probs, int width, int32_t id) {
    memset(probs, 0, (size_t)width * sizeof *probs);
    probs[id] = 1.0f;
}

void sd_sample_ref_row(float *probs, const float *logits, int width, const sd_sample_cfg *cfg) {
    int32_t best = argmax(logits, width);
    if (sd_sample_greedy(cfg)) {
        one_hot(probs, width, best);
        return;
    }
    /* top-k on the logits, then softmax at temperature over the survivors */
    cut k = NO_CUT;
    if (cfg->top_k > 0 && cfg->top_k < width) k = radix_select(logits, width, BY_COUNT_OF_LOGITS, (uint64_t)cfg->top_k);
    float maxv = logits[best];
    double sum = 0.0;
    for (int i = 0; i < width; i++) {
        float l = logits[i];
        bool keep = l == l && sd_keep_ranked(sd_logit_key(l), i, k.thr, k.last);
        probs[i] = keep ? expf((l - maxv) / cfg->temperature) : 0.0f;
        sum += probs[i];
    }
    if (!(sum > 0.0) || !isfinite(sum)) {
        one_hot(probs, width, best);
        return;
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < width; i++) probs[i] *= inv;
    /* top-p on those probabilities, min-p relative to the largest, then renormalise */
    cut p = NO_CUT;
    if (cfg->top_p < 1.0f) p = radix_select(probs, width, BY_MASS_OF_PROBS, sd_top_p_need(cfg->top_p));
    float bound = cfg->min_p > 0.0f ? cfg->min_p * probs[best] : 0.0f;
    double kept = 0.0;
    for (int i = 0; i < width; i++) {
        float v = probs[i];
        if (!(v > 0.0f && v >= bound && sd_keep_ranked(sd_prob_key(v), i, p.thr, p.last))) probs[i] = 0.0f;
        kept += probs[i];
    }
    if (!(kept > 0.0)) {
        one_hot(probs, width, best);
        return;
    }
    inv = (float)(1.0 / kept);
    for (int i = 0; i < width; i++) probs[i] *= inv;
}

/* Inverse-CDF draw in id order over p (residual: over max(0, p - q) after draft x); -1 when it is empty. */
static int32_t draw_mass(const float *p, const float *q, int32_t x, bool residual, int width, float u) {
    uint64_t total = 0;
    for (int32_t i = 0; i < width; i++) total += sd_mass_fp(residual ? sd_residual_at(p, q, x, i) : p[i]);
    if (total == 0) return -1;
    uint64_t target = sd_draw_target(u, total), cum = 0;
    for (int32_t i = 0; i < width; i++) {
        uint64_t m = sd_mass_fp(residual ? sd_residual_at(p, q, x, i) : p[i]);
        if (sd_draw_hit(cum, m, target)) return i;
        cum += m;
    }
    return -1; /* not reached: target < total */
}

int32_t sd_sample_ref_draw(const float *probs, int width, float u) {
    int32_t t = draw_mass(probs, NULL, -1, false, width, u);
    return t >= 0 ? t : argmax(probs, width);
}

void sd_sample_rows_ref(sd_backend *b, int32_t *ids, float *probs, const float *logits, int rows, int width,
                        const sd_sample_cfg *cfg, const float *u) {
    (void)b;
    for (int r = 0; r < rows; r++) {
        float *row = probs + (size_t)r * width;
        sd_sample_ref_row(row, logits + (size_t)r * width, width, cfg);
        if (ids) ids[r] = sd_sample_ref_draw(row, width, u[r]);
    }
}

int sd_spec_accept_ref(sd_backend *b, int32_t *next, const float *p, const float *q, const int32_t *draft, int k,
                       int width, const float *u) {
    (void)b;
    for (int i = 0; i < k; i++) {
        const float *pi = p + (size_t)i * width, *qi = q ? q + (size_t)i * width : NULL;
        int32_t x = draft[i];
        float px = x >= 0 && x < width ? pi[x] : 0.0f, qx = qi ? (x >= 0 && x < width ? qi[x] : 0.0f) : 1.0f;
        if (sd_spec_accepts(px, qx, u[i])) continue;
        int32_t t = draw_mass(pi, qi, x, true, width, u[k]);
        *next = t >= 0 ? t : sd_sample_ref_draw(pi, width, u[k]);
        return i;
    }
    *next = sd_sample_ref_draw(p + (size_t)k * width, width, u[k]);
    return k;
}
