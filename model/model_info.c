/* `specd info`: a human-readable description of a loaded model. */
#include <stdio.h>
#include <stdlib.h>

#include "model/model_internal.h"

/* 1234567 -> "1.23M" */
static void human(double v, const char *unit, char *out, size_t cap) {
    const char *suffix[] = {"", "K", "M", "G", "T"};
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(out, cap, i ? "%.2f %s%s" : "%.0f %s%s", v, suffix[i], unit);
}

static void print_rope(const sd_hparams *hp, FILE *f) {
    fprintf(f, "rope:               %s pairs, %d of %d dims rotate, base %g", hp->rope_neox ? "NeoX" : "adjacent",
            hp->n_rot, hp->head_dim, (double)hp->rope_base);
    if (hp->rope_scaling == 1) fprintf(f, ", linear scaling x%g", (double)hp->rope_factor);
    if (hp->rope_scaling == 2)
        fprintf(f, ", llama3 scaling x%g (low %g, high %g, original context %d)", (double)hp->rope_factor,
                (double)hp->rope_low_freq, (double)hp->rope_high_freq, hp->rope_orig_ctx);
    fputc('\n', f);
}

/* "f32: 9, q8_0: 28": tensors per type, in type-id order. */
static void print_types(sd_model *m, FILE *f) {
    sd_tensor **list = malloc(SD_MODEL_MAX_TENSORS(m->hp.n_layers) * sizeof *list);
    if (!list) return;
    int n = sd_model_tensors(m, list);
    fprintf(f, "tensor types:      ");
    const char *sep = " ";
    for (int type = 0; type < 64; type++) {
        int count = 0;
        for (int i = 0; i < n; i++) count += (int)list[i]->type == type;
        if (!count) continue;
        fprintf(f, "%s%s: %d", sep, sd_dtype_name(type) ? sd_dtype_name(type) : "?", count);
        sep = ", ";
    }
    fprintf(f, " (%d tensors)\n", n);
    for (int i = 0; i < n; i++) /* a file that specd can describe but not run says so, and why */
        if (!sd_dtype_loadable(list[i]->type)) {
            fprintf(f, "not computable:     tensor '%s' has type %s (specd computes %s)\n",
                    list[i]->name ? list[i]->name : "?", sd_dtype_name(list[i]->type), sd_dtype_loadable_list());
            break;
        }
    free(list);
}

void sd_model_print_info(const sd_model *cm, void *file) {
    FILE *f = file;
    sd_model *m = (sd_model *)cm; /* only read: the tensor walk takes a mutable model */
    const sd_hparams *hp = &m->hp;
    char a[32], b[32], c[32];
    fprintf(f, "model:              %s\n", m->path);
    if (m->gguf) fprintf(f, "format:             GGUF v%u\n", m->gguf->version);
    else fprintf(f, "format:             llama2.c checkpoint\n");
    fprintf(f, "architecture:       %s\n", sd_arch_name(hp->arch));
    fprintf(f, "embedding length:   %d\n", hp->dim);
    fprintf(f, "layers:             %d\n", hp->n_layers);
    fprintf(f, "attention heads:    %d (kv heads %d%s, head dim %d)\n", hp->n_heads, hp->n_kv_heads,
            hp->n_kv_heads < hp->n_heads ? ", GQA" : "", hp->head_dim);
    fprintf(f, "feed-forward:       %d\n", hp->ffn);
    fprintf(f, "vocabulary:         %d\n", hp->vocab);
    fprintf(f, "context length:     %d\n", hp->ctx);
    fprintf(f, "rms norm epsilon:   %g\n", (double)hp->eps);
    print_rope(hp, f);
    bool biases = m->layers[0].bq.rows, qk = m->layers[0].q_norm.rows;
    if (biases || qk)
        fprintf(f, "extras:             %s%s%s\n", biases ? "q/k/v biases" : "", biases && qk ? ", " : "",
                qk ? "per-head q/k RMSNorm" : "");
    fprintf(f, "classifier:         %s\n", m->output.host == m->tok_embd.host ? "tied to the embedding" : "separate");
    print_types(m, f);
    human((double)m->n_params, "", a, sizeof a);
    fprintf(f, "parameters:         %s (%llu)\n", a, (unsigned long long)m->n_params);
    human((double)m->weight_bytes, "B", b, sizeof b);
    fprintf(f, "weights:            %s (%zu bytes)\n", b, m->weight_bytes);
    human((double)m->bytes_per_token, "B", c, sizeof c);
    fprintf(f, "bytes read / token: %s (%zu bytes)\n", c, m->bytes_per_token);
    if (m->tok) fprintf(f, "tokenizer:          %s, %d tokens, bos %d, eos %d\n",
                        sd_tok_kind_of(m->tok) == SD_TOK_BPE ? "byte-level BPE" : "SentencePiece-style",
                        sd_tok_vocab_size(m->tok), (int)sd_tok_bos(m->tok), (int)sd_tok_eos(m->tok));
}
