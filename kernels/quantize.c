/* Reference quantizers (see quantize.h). The searches follow ggml's: for the symmetric and min/max types
 * a closed form; for the K-quants a per-sub-block fit of scale (and min) minimising a weighted error over
 * a small grid of candidate scales, then the sub-block scales quantized against the super-block's
 * largest and the levels recomputed with the scales as stored; for IQ4 the same fit over the non-linear
 * levels. Float expressions keep ggml's order of operations so that the same inputs give the same
 * levels. */
#include "kernels/quantize.h"

#include <math.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/quant_k.h"

#define GROUP_EPS 1e-15f /* a group whose largest |x| is below this is all zero */

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves the integer in the low bits of
 * the mantissa (the current rounding mode does the rounding). */
static int nearest(float v) {
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The element of largest magnitude (its signed value; the first one on ties). */
static float signed_extreme(const float *x, int n, float *amax_out) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (amax < fabsf(x[i])) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax_out) *amax_out = amax;
    return max;
}

/* 32 levels (0..15 or 0..31) into nibbles (element j low, j + 16 high) and, for 5 bits, the qh word. */
static void pack32(const int *L, uint8_t *qs, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 15) | (L[j + 16] & 15) << 4);
        h |= (uint32_t)((L[j] >> 4) & 1) << j | (uint32_t)((L[j + 16] >> 4) & 1) << (j + 16);
    }
    if (qh)
        for (int b = 0; b < 4; b++) qh[b] = (uint8_t)(h >> (8 * b));
}

/* ---- blocks of 32 ---- */

/* Q4_0 / Q5_0: d = -extreme / 2^(bits-1), so the extreme lands on the lowest level exactly. */
static void q_sym(const float *x, int half, uint16_t *dh, uint8_t *qs, uint8_t *qh) {
    float max = signed_extreme(x, 32, NULL);
    float d = max / (float)-half, id = d ? 1.0f / d : 0.0f;
    *dh = sd_fp32_to_fp16(d);
    int L[32];
    for (int j = 0; j < 32; j++) {
        int l = (int)(x[j] * id + ((float)half + 0.5f)); /* non-negative: truncation is floor */
        L[j] = l < 2 * half - 1 ? l : 2 * half - 1;
    }
    pack32(L, qs, qh);
}

/* Q4_1 / Q5_1: levels over [min, max]. */
static void q_minmax(const float *x, int nlev, uint16_t *dh, uint16_t *mh, uint8_t *qs, uint8_t *qh) {
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    float d = (max - min) / (float)(nlev - 1), id = d ? 1.0f / d : 0.0f;
    *dh = sd_fp32_to_fp16(d);
    *mh = sd_fp32_to_fp16(min);
    int L[32];
    for (int j = 0; j < 32; j++) {
        int l = (int)((x[j] - min) * id + 0.5f);
        L[j] = l < nlev - 1 ? l : nlev - 1;
    }
    pack32(L, qs, qh);
}

static void q8_0(const float *x, sd_block_q8_0 *b) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    b->d = sd_fp32_to_fp16(d);
    for (int j = 0; j < 32; j++) b->qs[j] = (int8_t)roundf(x[j] * id);
}

/* ---- the fits the K-quants share ---- */

/* Scale and min (x ~ scale * L + min, min <= 0, L in 0..nmax) minimising sum w * err (err: |diff| when
 * mad, else diff^2): the plain min/max fit, then nstep + 1 candidate scales (nmax + rmin + rdelta * i
 * levels over the range), each refined by weighted least squares. Returns the scale; *neg_min = -min. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min, float rmin,
                           float rdelta, int nstep, bool mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best += w[i] * (mad ? fabsf(diff) : diff * diff);
    }
    uint8_t aux[32];
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * (x[i] - min)), 0, nmax);
            aux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float s = (sum_w * sum_xl - sum_x * sum_l) / D, m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (m > 0) {
            m = 0;
            s = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * aux[i] + m - x[i];
            err += w[i] * (mad ? fabsf(diff) : diff * diff);
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Symmetric levels -nmax..nmax-1 weighted by x^2 (Q6_K): the scale putting the extreme on -nmax, then
 * 18 nearby candidates, each with its least-squares scale; L gets level + nmax. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
    float amax, max = signed_extreme(x, n, &amax);
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -(float)nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clampi(nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's fit: levels -nmax..nmax-1 from the extreme, then up to 5 rounds of moving single elements to
 * the level that improves the x^2-weighted fit. L gets level + nmax. */
static float fit_scale_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax, max = signed_extreme(x, n, &amax);
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -(float)nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i], slx = sumlx - w * x[i] * (float)L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            int nl = clampi(nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (nl == L[i]) continue;
            slx += w * x[i] * (float)nl;
            sl2 += w * (float)nl * (float)nl;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Four 2-bit planes of 128 levels into 32 bytes (element 32 * s + l at bits 2s of byte l). */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int half = 0; half < 2; half++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *p = L + 128 * half + l;
            qs[32 * half + l] = (uint8_t)(p[0] | p[32] << 2 | p[64] << 4 | p[96] << 6);
        }
}

/* ---- K-quants ---- */

static void q2_K(const float *x, sd_block_q2_K *y) {
    uint8_t L[256];
    float w[16], scales[16], mins[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
        scales[j] = fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    memset(y->scales, 0, 16);
    y->d = y->dmin = sd_fp32_to_fp16(0.f);
    if (max_scale > 0) {
        float is = 15.f / max_scale;
        for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)nearest(is * scales[j]);
        y->d = sd_fp32_to_fp16(max_scale / 15.f);
    }
    if (max_min > 0) {
        float is = 15.f / max_min;
        for (int j = 0; j < 16; j++) y->scales[j] |= (uint8_t)(nearest(is * mins[j]) << 4);
        y->dmin = sd_fp32_to_fp16(max_min / 15.f);
    }
    for (int j = 0; j < 16; j++) { /* the levels again, against the scales as stored */
        float d = sd_fp16_to_fp32(y->d) * (float)(y->scales[j] & 15);
        if (!d) continue;
        float dm = sd_fp16_to_fp32(y->dmin) * (float)(y->scales[j] >> 4);
        for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)clampi(nearest((x[16 * j + i] + dm) / d), 0, 3);
    }
    pack_2bit(L, y->qs);
}

static void q3_K(const float *x, sd_block_q3_K *y) {
    int8_t L[256];
    float scales[16], max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = fit_scale_q3(16, 4, x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(y->scales, 0, 12);
    if (max_scale) {
        float is = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            int l = clampi((int8_t)nearest(is * scales[j]), -32, 31) + 32;
            if (j < 8) y->scales[j] = (uint8_t)(l & 15);
            else y->scales[j - 8] |= (uint8_t)((l & 15) << 4);
            y->scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        y->d = sd_fp32_to_fp16(1 / is);
    } else {
        y->d = sd_fp32_to_fp16(0.f);
    }
    for (int j = 0; j < 16; j++) {
        float d = sd_fp16_to_fp32(y->d) * (float)sd_q3k_scale(y->scales, j);
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clampi(nearest(x[16 * j + i] / d), -4, 3) + 4);
    }
    /* the third bit of element j goes to bit j / 32 of hmask[j % 32] */
    memset(y->hmask, 0, 32);
    uint8_t low[256];
    for (int j = 0; j < 256; j++) {
        if (L[j] > 3) y->hmask[j % 32] |= (uint8_t)(1u << (j / 32));
        low[j] = (uint8_t)(L[j] > 3 ? L[j] - 4 : L[j]);
    }
    pack_2bit(low, y->qs);
}

/* Q4_K / Q5_K: 8 sub-blocks of 32 fitted with weights rms(x) + |x|; 6-bit scales and mins. */
static void fit_k4(const float *x, int nmax, float rmin, int nstep, uint8_t *scales12, uint16_t *dh, uint16_t *dminh,
                   uint8_t *L) {
    float w[32], scales[8], mins[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xb[l] * xb[l];
        float av = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av + fabsf(xb[l]);
        scales[j] = fit_scale_min(32, nmax, xb, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        int ls = (uint8_t)nearest(inv_scale * scales[j]), lm = (uint8_t)nearest(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales12[j] = (uint8_t)ls;
            scales12[j + 4] = (uint8_t)lm;
        } else {
            scales12[j + 4] = (uint8_t)((ls & 15) | (lm & 15) << 4);
            scales12[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales12[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *dh = sd_fp32_to_fp16(max_scale / 63.f);
    *dminh = sd_fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        sd_k4_scale_min(scales12, j, &sc, &m);
        float d = sd_fp16_to_fp32(*dh) * (float)sc;
        if (!d) continue;
        float dm = sd_fp16_to_fp32(*dminh) * (float)m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clampi(nearest((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

static void q4_K(const float *x, sd_block_q4_K *y) {
    uint8_t L[256];
    fit_k4(x, 15, -1.f, 20, y->scales, &y->d, &y->dmin, L);
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < 32; l++) y->qs[32 * i + l] = (uint8_t)(L[64 * i + l] | L[64 * i + 32 + l] << 4);
}

static void q5_K(const float *x, sd_block_q5_K *y) {
    uint8_t L[256];
    fit_k4(x, 31, -0.5f, 15, y->scales, &y->d, &y->dmin, L);
    memset(y->qh, 0, 32);
    for (int i = 0; i < 4; i++)
        for (int l = 0; l < 32; l++) {
            int lo = L[64 * i + l], hi = L[64 * i + 32 + l];
            y->qh[l] |= (uint8_t)((lo >> 4) << (2 * i) | (hi >> 4) << (2 * i + 1));
            y->qs[32 * i + l] = (uint8_t)((lo & 15) | (hi & 15) << 4);
        }
}

static void q6_K(const float *x, sd_block_q6_K *y) {
    int8_t L[256];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > max_abs) {
            max_abs = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    if (max_abs < GROUP_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    float is = -128.f / max_scale;
    y->d = sd_fp32_to_fp16(1 / is);
    for (int j = 0; j < 16; j++) {
        int s = nearest(is * scales[j]);
        y->scales[j] = (int8_t)(s < 127 ? s : 127);
    }
    for (int j = 0; j < 16; j++) {
        float d = sd_fp16_to_fp32(y->d) * (float)y->scales[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clampi(nearest(x[16 * j + i] / d), -32, 31) + 32);
    }
    for (int half = 0; half < 2; half++) {
        const int8_t *p = L + 128 * half;
        uint8_t *ql = y->ql + 64 * half, *qh = y->qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((p[l] & 15) | (p[l + 64] & 15) << 4);
            ql[l + 32] = (uint8_t)((p[l + 32] & 15) | (p[l + 96] & 15) << 4);
            qh[l] = (uint8_t)(p[l] >> 4 | (p[l + 32] >> 4) << 2 | (p[l + 64] >> 4) << 4 | (p[l + 96] >> 4) << 6);
        }
    }
}

/* ---- IQ4 ---- */

/* Index of the IQ4 level nearest to v (the upper one on ties). */
static int iq4_index(float v) {
    const int8_t *val = sd_iq4nl_values;
    if (v <= val[0]) return 0;
    if (v >= val[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < val[mid]) hi = mid;
        else lo = mid;
    }
    return v - val[hi - 1] < val[hi] - v ? hi - 1 : hi;
}

/* Scale of one block of 32 over the IQ4 levels, weights x^2: the extreme on the lowest level, then 15
 * candidates around it, each with its least-squares scale. */
static float fit_iq4(const float *x) {
    float amax, max = signed_extreme(x, 32, &amax);
    if (amax < GROUP_EPS) return 0;
    const float v0 = sd_iq4nl_values[0];
    float d = -max / v0, id = 1 / d, sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        float q = sd_iq4nl_values[iq4_index(id * x[j])], w = x[j] * x[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int t = -7; t <= 7; t++) {
        id = ((float)t + v0) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            float q = sd_iq4nl_values[iq4_index(id * x[j])], w = x[j] * x[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

static void iq4_levels(const float *x, float id, uint8_t *qs) {
    int L[32];
    for (int j = 0; j < 32; j++) L[j] = iq4_index(id * x[j]);
    pack32(L, qs, NULL);
}

static void iq4_nl(const float *x, sd_block_iq4_nl *y) {
    float d = fit_iq4(x);
    y->d = sd_fp32_to_fp16(d);
    iq4_levels(x, d ? 1 / d : 0, y->qs);
}

static void iq4_xs(const float *x, sd_block_iq4_xs *y) {
    float scales[8], max_scale = 0, amax = 0;
    for (int ib = 0; ib < 8; ib++) {
        scales[ib] = fit_iq4(x + 32 * ib);
        if (fabsf(scales[ib]) > amax) {
            amax = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    float d = -max_scale / 32, id = d ? 1 / d : 0.f;
    y->d = sd_fp32_to_fp16(d);
    y->scales_h = 0;
    memset(y->scales_l, 0, 4);
    for (int ib = 0; ib < 8; ib++) {
        int l = clampi(nearest(id * scales[ib]), -32, 31);
        float dl = d * (float)l;
        iq4_levels(x + 32 * ib, dl ? 1 / dl : 0.f, y->qs + 16 * ib);
        l += 32;
        y->scales_l[ib / 2] |= (uint8_t)((l & 15) << (4 * (ib % 2)));
        y->scales_h |= (uint16_t)((l >> 4) << (2 * ib));
    }
}

/* ---- entry points ---- */

bool sd_quantize_supported(int type) { return sd_dtype_loadable(type); }

int sd_quantize_row(int type, const float *x, void *out, int64_t n) {
    int qk = sd_dtype_block(type);
    if (!sd_quantize_supported(type) || qk <= 0 || n < 0 || n % qk) return -1;
    uint8_t *o = out;
    size_t bb = sd_dtype_block_bytes(type);
    for (int64_t b = 0; b < n / qk; b++, x += qk, o += bb) {
        switch (type) {
        case SD_F32: memcpy(o, x, 4); break;
        case SD_F16: { uint16_t h = sd_fp32_to_fp16(*x); memcpy(o, &h, 2); break; }
        case SD_BF16: { uint16_t h = sd_fp32_to_bf16(*x); memcpy(o, &h, 2); break; }
        case SD_Q8_0: q8_0(x, (sd_block_q8_0 *)o); break;
        case SD_Q4_0: { sd_block_q4_0 *y = (sd_block_q4_0 *)o; q_sym(x, 8, &y->d, y->qs, NULL); break; }
        case SD_Q5_0: { sd_block_q5_0 *y = (sd_block_q5_0 *)o; q_sym(x, 16, &y->d, y->qs, y->qh); break; }
        case SD_Q4_1: { sd_block_q4_1 *y = (sd_block_q4_1 *)o; q_minmax(x, 16, &y->d, &y->m, y->qs, NULL); break; }
        case SD_Q5_1: { sd_block_q5_1 *y = (sd_block_q5_1 *)o; q_minmax(x, 32, &y->d, &y->m, y->qs, y->qh); break; }
        case SD_Q2_K: q2_K(x, (sd_block_q2_K *)o); break;
        case SD_Q3_K: q3_K(x, (sd_block_q3_K *)o); break;
        case SD_Q4_K: q4_K(x, (sd_block_q4_K *)o); break;
        case SD_Q5_K: q5_K(x, (sd_block_q5_K *)o); break;
        case SD_Q6_K: q6_K(x, (sd_block_q6_K *)o); break;
        case SD_IQ4_NL: iq4_nl(x, (sd_block_iq4_nl *)o); break;
        case SD_IQ4_XS: iq4_xs(x, (sd_block_iq4_xs *)o); break;
        default: return -1;
        }
    }
    return 0;
}
