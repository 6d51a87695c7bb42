/* Decode benchmark: plain greedy decoding through the engine (the loop `specd generate` runs) on models
 * far larger than the last-level cache, as a fraction of the machine's memory read bandwidth measured in
 * the same run (each decode step paired with a probe pass beside it).
 *
 *   build/bench_decode [-t THREADS] [-n TOKENS] MODEL...
 *
 * Decode bandwidth = weight bytes one decode step reads × decode steps ÷ decode time (the first token,
 * which comes out of the prefill, is not counted). Reported for the whole decode (mean) and for the
 * median step, which a shared machine's other work disturbs far less. The fraction of the read bandwidth
 * pairs every decode step with a probe pass right after it (bench/bandwidth.h) and takes the median of
 * the per-step ratios, so the machine's changing bandwidth cancels out. Built by
 * `make build/bench_decode`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bandwidth.h"
#include "base/clock.h"
#include "target/engine.h"


#define BW_BYTES ((size_t)256 << 20) /* 8x the largest L3 here; a pass takes about as long as a step */

typedef struct decode_result {
    double ms_per_token, gbs;        /* over the whole decode (what `specd generate` prints) */
    double median_ms, median_gbs;    /* median decode step: robust against other work on the machine */
    double frac, probe_gbs;          /* median of step bandwidth / the probe pass after it; median probe */
    int steps;
} decode_result;

/* Greedy decode of n tokens after a short prompt; 0 ok, -1 error (printed). With a probe, every timed
 * step is followed by a probe pass (not counted in the decode time). */
static int decode_once(sd_engine *e, int n, sd_bw_probe *probe, decode_result *r) {
    sd_err err = {{0}};
    sd_session *s = NULL;
    sd_gen *g = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, rc = -1, n_steps = 0;
    double *step_s = calloc(3 * ((size_t)n + 1), sizeof *step_s), *frac = step_s + n + 1, *pg = frac + n + 1;
    const char *prompt = "The quick brown fox jumps over the lazy dog";
    sd_gen_params p = sd_gen_params_default();
    p.sampling = sd_sampling_greedy();
    p.max_tokens = n;
    p.mode = SD_MODE_PLAIN;
    if (sd_tok_encode(e->target->tok, prompt, strlen(prompt), SD_TOK_ADD_BOS, &ids, &n_ids, &err)) goto out;
    if (sd_session_new(e, &s, &err) || sd_gen_start(s, ids, n_ids, &p, &g, &err)) goto out;
    for (bool first = true; sd_gen_finish(g) == SD_FINISH_NONE; first = false) {
        double t0 = sd_now_s();
        if (sd_gen_step(g, &err)) goto out;
        if (first || !step_s || n_steps > n) continue;
        step_s[n_steps] = sd_now_s() - t0; /* plain: one token a step */
        if (probe) {
            pg[n_steps] = sd_bw_probe_pass(probe);
            frac[n_steps] = (double)e->target->bytes_per_token / step_s[n_steps] / 1e9 / pg[n_steps];
        }
        n_steps++;
    }
    sd_gen_stats st;
    sd_gen_get_stats(g, &st);
    double t = st.t_total - st.t_prefill; /* the engine times its steps only: probe passes are not in it */
    r->steps = st.generated - 1;
    if (r->steps < 1 || t <= 0) {
        sd_errf(&err, "only %d tokens generated", st.generated);
        goto out;
    }
    r->ms_per_token = 1e3 * t / r->steps;
    r->gbs = (double)e->target->bytes_per_token * r->steps / t / 1e9;
    r->median_ms = r->ms_per_token;
    if (step_s && n_steps > 0) r->median_ms = 1e3 * sd_median(step_s, n_steps);
    r->frac = probe && n_steps > 0 ? sd_median(frac, n_steps) : 0;
    r->probe_gbs = probe && n_steps > 0 ? sd_median(pg, n_steps) : 0;
    r->median_gbs = (double)e->target->bytes_per_token / (r->median_ms * 1e-3) / 1e9;
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench_decode: %s\n", err.msg);
    if (g) sd_gen_free(g);
    if (s) sd_session_free(s);
    free(ids);
    free(step_s);
    return rc;
}

/* The forward pass's own cost beyond its weight reads: best-of-reps time of one decode step (sd_forward of
 * one token) against best-of-reps time of the same matrix products issued alone. */
static void forward_overhead(sd_engine *e, int reps) {
    sd_err err = {{0}};
    sd_model *m = e->target;
    sd_backend *be = e->be;
    sd_seq *s = NULL;
    size_t width = (size_t)m->hp.dim > (size_t)m->hp.ffn ? (size_t)m->hp.dim : (size_t)m->hp.ffn;
    width = width > (size_t)m->hp.n_heads * m->hp.head_dim ? width : (size_t)m->hp.n_heads * m->hp.head_dim;
    float *logits = malloc(sizeof(float) * m->hp.vocab);
    size_t ywidth = (size_t)m->hp.vocab > width ? (size_t)m->hp.vocab : width;
    float *x = be->alloc(be, width, &err), *y = be->alloc(be, ywidth, &err);
    if (!logits || !x || !y || sd_seq_new(m, 64, 0, &s, &err)) {
        fprintf(stderr, "bench_decode: overhead: %s\n", err.msg);
        goto out;
    }
    double best_fwd = 1e30, best_mm = 1e30;
    for (int r = 0; r < reps; r++) {
        int32_t tok = 1 + r % 7;
        if (s->pos >= 60) sd_seq_truncate(s, 0);
        double t0 = sd_now_s();
        if (sd_forward(s, &tok, 1, false, logits, &err)) break;
        double t = sd_now_s() - t0;
        if (t < best_fwd) best_fwd = t;
        t0 = sd_now_s();
        for (int l = 0; l < m->hp.n_layers; l++) {
            for (int i = 0; i < SD_LAYER_TENSORS; i++) /* the matrices: rows beyond one */
                if (sd_layer_tensors[i].rows != SD_DIM_ONE) be->matmul(be, y, sd_layer_tensor_at(&m->layers[l], i), x, 1);
        }
        be->matmul(be, y, &m->output, x, 1);
        be->sync(be);
        t = sd_now_s() - t0;
        if (t < best_mm) best_mm = t;
    }
    printf("  one decode step, best of %d: forward %.2f ms, its matrix products alone %.2f ms (overhead %+.1f%%)\n",
           reps, 1e3 * best_fwd, 1e3 * best_mm, 100 * (best_fwd - best_mm) / best_mm);
out:
    sd_seq_free(s);
    if (x) be->release(be, x);
    if (y) be->release(be, y);
    free(logits);
}

static int bench_model(const char *path, int threads, int n) {
    sd_err err = {{0}};
    sd_engine_config cfg = {.target_path = path, .device = "cpu", .n_threads = threads, .ctx = n + 64};
    sd_engine *e = NULL;
    if (sd_engine_open(&cfg, &e, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return -1;
    }
    const sd_model *m = e->target;
    const char *type = sd_dtype_name(m->layers[0].wq.type);
    printf("%s: %s, %.0fM parameters, %.1f MB read per token, %s\n", path, type ? type : "?",
           m->n_params / 1e6, m->bytes_per_token / 1e6, e->be->device ? e->be->device : e->be->name);
    sd_bw_probe *probe = sd_bw_probe_new(threads, BW_BYTES);
    if (!probe) {
        fprintf(stderr, "bench_decode: cannot allocate the probe buffer\n");
        sd_engine_free(e);
        return -1;
    }
    decode_result warm, r;
    int rc = decode_once(e, 8, NULL, &warm); /* page the weights in, wake the threads */
    if (!rc) rc = decode_once(e, n, probe, &r);
    if (!rc) forward_overhead(e, 12);
    if (!rc) {
        printf("  decode %d tokens: mean %.2f ms/token (%.2f GB/s), median step %.2f ms (%.2f GB/s)\n", r.steps,
               r.ms_per_token, r.gbs, r.median_ms, r.median_gbs);
        printf("RESULT decode %-5s %5.1f%% of read bandwidth (median of per-step ratios; probe median %.2f GB/s)\n",
               type ? type : "?", 100 * r.frac, r.probe_gbs);
    }
    sd_bw_probe_free(probe);
    sd_engine_free(e);
    return rc;
}

int main(int argc, char **argv) {
    int threads = 0, n = 64, n_models = 0, rc = 0;
    const char *models[16];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (argv[i][0] != '-' && n_models < 16) models[n_models++] = argv[i];
        else {
            fprintf(stderr, "usage: bench_decode [-t THREADS] [-n TOKENS] MODEL...\n");
            return 2;
        }
    }
    if (!n_models || n < 2) {
        fprintf(stderr, "usage: bench_decode [-t THREADS] [-n TOKENS >= 2] MODEL...\n");
        return 2;
    }
    for (int i = 0; i < n_models; i++)
        if (bench_model(models[i], threads, n)) rc = 1;
    return rc;
}

