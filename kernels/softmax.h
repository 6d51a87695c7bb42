/* Online softmax states and their merge, shared by the CPU attention and the CUDA attention kernels
 * (single pass and split over the sequence), so the CPU tests cover the math the GPU runs.
 *
 * A partial state over scores s_i with value rows v_i is
 *     m = max_i s_i,   l = sum_i exp(s_i - m),   acc = sum_i exp(s_i - m) * v_i   (unnormalised),
 * and the softmax-weighted sum of all values is acc / l. An empty state is m = -inf, l = 0, acc = 0.
 * Two states over disjoint sets merge into the state of their union by moving both to the larger max. */
#ifndef SD_SOFTMAX_H
#define SD_SOFTMAX_H
#include <math.h>

#ifndef SD_HD
#ifdef __CUDACC__
#define SD_HD __host__ __device__
#else
#define SD_HD
#endif
#endif

/* exp(m_old - m_new) for m_new >= m_old: the factor that moves a state's l and acc from max m_old to max
 * m_new. 0 for an empty state (m_old = -inf), also when m_new is -inf too (where exp would give NaN). */
static inline SD_HD float sd_softmax_rescale(float m_old, float m_new) {
    return m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
}

/* Merges the state (m2, l2) into (*m, *l) and returns in *f1, *f2 the factors for the accumulators:
 * acc = f1 * acc + f2 * acc2. Either or both states may be empty (an empty one gets factor 0). */
static inline SD_HD void sd_softmax_merge(float *m, float *l, float m2, float l2, float *f1, float *f2) {
    float mm = fmaxf(*m, m2);
    *f1 = sd_softmax_rescale(*m, mm);
    *f2 = sd_softmax_rescale(m2, mm);
    *l = *l * *f1 + l2 * *f2;
    *m = mm;
}

/* f * a, but 0 when f is 0 whatever a is, so an empty state's accumulator is never read as a number. */
static inline SD_HD float sd_softmax_scaled(float f, float a) { return f != 0.0f ? f * a : 0.0f; }

/* The whole merge of (m2, l2, acc2[n]) into (*m, *l, acc[n]). */
static inline SD_HD void sd_softmax_merge_acc(float *m, float *l, float *acc, float m2, float l2, const float *acc2,
                                              int n) {
    float f1, f2;
    sd_softmax_merge(m, l, m2, l2, &f1, &f2);
    for (int d = 0; d < n; d++) acc[d] = sd_softmax_scaled(f1, acc[d]) + sd_softmax_scaled(f2, acc2[d]);
}

#endif
