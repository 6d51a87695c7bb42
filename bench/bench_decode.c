/* Decode benchmark: plain greedy decoding through the engine (the loop `specd generate` runs) on models
 * far larger than the last-level cache, as a fraction of the machine's memory read bandwidth measured in
 * the same run (each decode step paired with a probe pass beside it).
 *
 *   build/bench_decode [-t THREADS] [-n TOKENS] [--prefill N,N..] [--reps R] [--no-probe] [--ttft N] MODEL...
 *   build/bench_decode [-t THREADS] --probe      the read probe alone: median of 9 passes
 *
 * --prefill: time to first token of requests with an N-token prompt (random ids, a fresh session each,
 * median of R after one warm-up), as prompt tokens per second. --no-probe: decode without the probe passes
 * (runs beside other load, bench/contention.sh). --ttft N (instead of the rest): the first request of a
 * freshly opened engine (N-token prompt) against the next one, R engines (issue 16 item 4). Lines starting "RESULT" are what scripts read
 * (bench/vs_llamacpp.sh): "RESULT tokens/s WHAT TYPE VALUE" and "RESULT probe GB/s VALUE".
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
#include <sys/resource.h>
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

/* Random prompt ids in [3, vocab): every request a different prompt, so no cached prefix is reused. */
static uint64_t prompt_rng = 0x9e3779b97f4a7c15ull;
static void random_prompt(int32_t *ids, int n, int vocab) {
    for (int i = 0; i < n; i++) {
        prompt_rng ^= prompt_rng << 13, prompt_rng ^= prompt_rng >> 7, prompt_rng ^= prompt_rng << 17;
        ids[i] = 3 + (int32_t)(prompt_rng % (uint64_t)(vocab > 3 ? vocab - 3 : 1));
    }
}

/* Seconds from the start of a request with an n-token prompt on a fresh session to its first token (the
 * prefill pass and the pick of one token); -1 on error (printed). */
static double time_to_first_token(sd_engine *e, int n) {
    sd_err err = {{0}};
    sd_session *s = NULL;
    sd_gen *g = NULL;
    double t = -1;
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    sd_gen_params p = sd_gen_params_default();
    p.sampling = sd_sampling_greedy();
    p.max_tokens = 2;
    p.mode = SD_MODE_PLAIN;
    if (!ids) return -1;
    random_prompt(ids, n, e->target->hp.vocab);
    double t0 = sd_now_s();
    if (sd_session_new(e, &s, &err) || sd_gen_start(s, ids, n, &p, &g, &err)) goto out;
    sd_gen_stats st = {0};
    while (st.generated < 1 && sd_gen_finish(g) == SD_FINISH_NONE) {
        if (sd_gen_step(g, &err)) goto out;
        sd_gen_get_stats(g, &st);
    }
    if (st.generated >= 1) t = sd_now_s() - t0;
    else sd_errf(&err, "no token after the prompt");
out:
    if (t < 0) fprintf(stderr, "bench_decode: prefill %d: %s\n", n, err.msg);
    if (g) sd_gen_free(g);
    if (s) sd_session_free(s);
    free(ids);
    return t;
}

typedef struct bench_opts {
    int threads, n, reps, probe, ttft;
    int prefill[8], n_prefill;
} bench_opts;

/* Prompt tokens per second of each --prefill length: median of reps requests after a warm-up. */
static int bench_prefill(sd_engine *e, const bench_opts *o, const char *type) {
    double v[64];
    for (int k = 0; k < o->n_prefill; k++) {
        int n = o->prefill[k];
        if (time_to_first_token(e, n) < 0) return -1;
        for (int r = 0; r < o->reps; r++)
            if ((v[r] = time_to_first_token(e, n)) < 0) return -1;
        double med = sd_median(v, o->reps);
        printf("  prefill %d tokens: %.1f ms to the first token, %.1f tokens/s (median of %d)\n", n, 1e3 * med,
               n / med, o->reps);
        printf("RESULT tokens/s prefill%d %s %.2f\n", n, type, n / med);
    }
    return 0;
}

static long minor_faults(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

/* The first request of a freshly opened engine against the next one (each on a fresh session): what a
 * request pays for state made on first use (workspace, KV blocks, the weights' pages). Each rep opens
 * the engine anew; the median of the per-engine ratios (a shared machine's load hits both alike). */
static int bench_first_request(const char *path, const bench_opts *o) {
    double first[64], warm[64], ratio[64];
    long faults[2] = {0, 0};
    sd_engine_config cfg = {.target_path = path, .device = "cpu", .n_threads = o->threads, .ctx = o->ttft + 64};
    const char *type = "?";
    for (int r = 0; r < o->reps; r++) {
        sd_err err = {{0}};
        sd_engine *e = NULL;
        if (sd_engine_open(&cfg, &e, &err)) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return -1;
        }
        type = sd_dtype_name(e->target->layers[0].wq.type) ? sd_dtype_name(e->target->layers[0].wq.type) : "?";
        long f0 = minor_faults();
        first[r] = time_to_first_token(e, o->ttft);
        long f1 = minor_faults();
        warm[r] = first[r] < 0 ? -1 : time_to_first_token(e, o->ttft);
        faults[0] += f1 - f0, faults[1] += minor_faults() - f1;
        sd_engine_free(e);
        if (warm[r] < 0) return -1;
        ratio[r] = first[r] / warm[r];
    }
    double rt = sd_median(ratio, o->reps);
    printf("%s: first request of an engine, %d-token prompt: %.1f ms to the first token, the next request %.1f ms "
           "(medians of %d engines)\n", path, o->ttft, 1e3 * sd_median(first, o->reps), 1e3 * sd_median(warm, o->reps), o->reps);
    printf("  page faults per request: first %ld, next %ld (means)\n", faults[0] / o->reps, faults[1] / o->reps);
    printf("RESULT first-request %s %.2fx the next request's time to first token\n", type, rt);
    return 0;
}

static int bench_model(const char *path, const bench_opts *o) {
    sd_err err = {{0}};
    int max_prefill = 0;
    for (int k = 0; k < o->n_prefill; k++) max_prefill = o->prefill[k] > max_prefill ? o->prefill[k] : max_prefill;
    sd_engine_config cfg = {.target_path = path, .device = "cpu", .n_threads = o->threads,
                            .ctx = (o->n > max_prefill ? o->n : max_prefill) + 64};
    sd_engine *e = NULL;
    if (sd_engine_open(&cfg, &e, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return -1;
    }
    const sd_model *m = e->target;
    const char *type = sd_dtype_name(m->layers[0].wq.type);
    type = type ? type : "?";
    printf("%s: %s, %.0fM parameters, %.1f MB read per token, %s\n", path, type, m->n_params / 1e6,
           m->bytes_per_token / 1e6, e->be->device ? e->be->device : e->be->name);
    sd_bw_probe *probe = o->probe ? sd_bw_probe_new(o->threads, BW_BYTES) : NULL;
    if (o->probe && !probe) {
        fprintf(stderr, "bench_decode: cannot allocate the probe buffer\n");
        sd_engine_free(e);
        return -1;
    }
    decode_result warm = {0}, r = {0};
    int rc = decode_once(e, 8, NULL, &warm); /* page the weights in, wake the threads */
    if (!rc && o->n > 0) rc = decode_once(e, o->n, probe, &r);
    if (!rc && o->n > 0 && probe) forward_overhead(e, 12);
    if (!rc && o->n > 0) {
        printf("  decode %d tokens: mean %.2f ms/token (%.2f GB/s), median step %.2f ms (%.2f GB/s)\n", r.steps,
               r.ms_per_token, r.gbs, r.median_ms, r.median_gbs);
        if (probe)
            printf("RESULT decode %-5s %5.1f%% of read bandwidth (median of per-step ratios; probe median %.2f GB/s)\n",
                   type, 100 * r.frac, r.probe_gbs);
        printf("RESULT tokens/s decode %s %.2f\n", type, 1e3 / r.median_ms);
        if (probe) printf("RESULT probe GB/s %.2f\n", r.probe_gbs);
    }
    if (!rc) rc = bench_prefill(e, o, type);
    sd_bw_probe_free(probe);
    sd_engine_free(e);
    return rc;
}

/* The read probe alone (beside another program's runs): median of 9 passes. */
static int probe_only(int threads) {
    double g = sd_bench_read_bandwidth(threads, BW_BYTES, 9);
    if (g < 0) {
        fprintf(stderr, "bench_decode: cannot allocate the probe buffer\n");
        return 1;
    }
    printf("RESULT probe GB/s %.2f\n", g);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_decode [-t THREADS] [-n TOKENS (0, or >= 2)] [--prefill N,N..] [--reps R] [--no-probe] [--ttft N] MODEL...\n"
                    "       bench_decode [-t THREADS] --probe\n");
    return 2;
}

int main(int argc, char **argv) {
    bench_opts o = {.n = 64, .reps = 3, .probe = 1};
    int n_models = 0, rc = 0, only_probe = 0;
    const char *models[16];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) o.n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) o.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-probe")) o.probe = 0;
        else if (!strcmp(argv[i], "--ttft") && i + 1 < argc) o.ttft = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--probe")) only_probe = 1;
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) {
            for (char *t = strtok(argv[++i], ","); t; t = strtok(NULL, ",")) {
                int v = atoi(t);
                if (o.n_prefill == 8 || v < 1 || v > 1 << 16) {
                    fprintf(stderr, "bench_decode: --prefill takes at most 8 lengths in 1..65536 ('%s')\n", t);
                    return 2;
                }
                o.prefill[o.n_prefill++] = v;
            }
        } else if (argv[i][0] != '-' && n_models < 16) models[n_models++] = argv[i];
        else return usage();
    }
    if (only_probe) return probe_only(o.threads);
    if (!n_models || o.n == 1 || o.n < 0 || o.reps < 1 || o.reps > 64 || o.ttft < 0 || o.ttft > 1 << 16) return usage();
    for (int i = 0; i < n_models; i++)
        if (o.ttft ? bench_first_request(models[i], &o) : bench_model(models[i], &o)) rc = 1;
    return rc;
}
