/* llama2.c checkpoints: a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; a negative vocab_size means the classifier is stored separately) followed by F32 weights in
 * llama2.c's order. The file is mmapped and the tensors point into it: no copy. llama2.c's w1/w3/w2 are
 * the gate/up/down projections; its RoPE pairs adjacent dimensions (not NeoX), base 10000, eps 1e-5. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model_internal.h"

#define HEADER_BYTES (7 * 4)

/* Validates the header; fills hp and whether the classifier is shared. */
static int read_header(sd_model *m, const int32_t h[7], bool *shared, sd_err *err) {
    sd_hparams *hp = &m->hp;
    memset(hp, 0, sizeof *hp);
    hp->arch = SD_ARCH_LLAMA;
    hp->dim = h[0];
    hp->ffn = h[1];
    hp->n_layers = h[2];
    hp->n_heads = h[3];
    hp->n_kv_heads = h[4];
    *shared = h[5] > 0;
    hp->vocab = h[5] == INT32_MIN ? 0 : abs(h[5]);
    hp->ctx = h[6];
    hp->eps = 1e-5f;
    hp->rope_base = 10000.0f;
    if (hp->n_heads <= 0 || hp->n_heads > SD_MAX_HEADS)
        return sd_errf(err, "%s: not a GGUF file, and not a valid llama2.c checkpoint: n_heads = %d", m->path, hp->n_heads);
    if (hp->dim <= 0 || hp->dim % hp->n_heads)
        return sd_errf(err, "%s: not a GGUF file, and not a valid llama2.c checkpoint: dim %d is not a positive multiple of n_heads %d", m->path,
                       hp->dim, hp->n_heads);
    hp->head_dim = hp->dim / hp->n_heads;
    hp->n_rot = hp->head_dim;
    return sd_model_check_hparams(m, err);
}

/* Walks the weights in file order, either counting floats (base == NULL) or binding tensors. */
typedef struct walker {
    sd_model *m;
    const float *base;
    uint64_t off; /* floats consumed so far */
    char (*names)[48];
    int n_names;
} walker;

/* The next `count` tensors of [cols, rows] each, one per layer (count == 1: a single tensor). */
static void take(walker *w, sd_tensor *first, size_t stride, int count, int64_t cols, int64_t rows, const char *name) {
    for (int i = 0; i < count; i++) {
        if (w->base) {
            sd_tensor *t = (sd_tensor *)((char *)first + (size_t)i * stride);
            t->type = t->data_type = SD_F32;
            t->cols = cols;
            t->rows = rows;
            t->host = w->base + w->off;
            char *nm = w->names[w->n_names++];
            if (count == 1) snprintf(nm, 48, "%s", name);
            else snprintf(nm, 48, "blk.%d.%s", i, name);
            t->name = nm;
        }
        w->off += (uint64_t)cols * (uint64_t)rows;
    }
}

/* The layer tensors of a checkpoint in file order (each for all layers in turn); llama2.c's w1, w2, w3 are
 * ffn_gate, ffn_down, ffn_up. Shapes come from the tensor table (model.h). */
static const char *const k_layer_order[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                            "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight",
                                            "ffn_down.weight", "ffn_up.weight"};

static void walk(walker *w, bool shared) {
    sd_model *m = w->m;
    const sd_hparams *hp = &m->hp;
    int L = hp->n_layers;
    int64_t dim = hp->dim;
    sd_layer dummy[1];
    sd_layer *ly = w->base ? m->layers : dummy;
    size_t st = sizeof(sd_layer);
    sd_tensor scratch;
    take(w, w->base ? &m->tok_embd : &scratch, 0, 1, dim, hp->vocab, "token_embd.weight");
    for (int i = 0; i < (int)(sizeof k_layer_order / sizeof k_layer_order[0]); i++) {
        const sd_layer_tensor *r = &sd_layer_tensors[sd_layer_tensor_find(k_layer_order[i])];
        take(w, (sd_tensor *)((char *)ly + r->field), st, L, sd_dim_size(hp, r->cols), sd_dim_size(hp, r->rows),
             r->suffix);
    }
    take(w, w->base ? &m->out_norm : &scratch, 0, 1, dim, 1, "output_norm.weight");
    w->off += 2 * (uint64_t)hp->ctx * (uint64_t)(hp->head_dim / 2); /* freq_cis_real, freq_cis_imag: unused */
    if (!shared) take(w, w->base ? &m->output : &scratch, 0, 1, dim, hp->vocab, "output.weight");
}

static int map_file(sd_model *m, sd_err *err) {
    int fd = open(m->path, O_RDONLY);
    if (fd < 0) return sd_errf(err, "%s: cannot open: %s", m->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return sd_errf(err, "%s: not a regular file", m->path);
    }
    if (st.st_size < HEADER_BYTES) {
        close(fd);
        return sd_errf(err, "%s: not a GGUF file and too short for a llama2.c checkpoint (%lld bytes)", m->path,
                       (long long)st.st_size);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return sd_errf(err, "%s: cannot mmap: %s", m->path, strerror(errno));
    m->map = p;
    m->map_size = (size_t)st.st_size;
    return 0;
}

int sd_llama2c_load(sd_model *m, const char *tok_path, sd_err *err) {
    if (map_file(m, err)) return -1;
    int32_t h[7];
    memcpy(h, m->map, sizeof h);
    bool shared;
    if (read_header(m, h, &shared, err)) return -1;
    walker w = {.m = m};
    walk(&w, shared);
    uint64_t want = HEADER_BYTES + 4 * w.off;
    if (want != m->map_size)
        return sd_errf(err, "%s: llama2.c checkpoint size %zu does not match its header (dim %d, hidden %d, "
                            "%d layers, %d heads, %d kv heads, vocab %d%s, seq_len %d: %llu bytes expected)",
                       m->path, m->map_size, m->hp.dim, m->hp.ffn, m->hp.n_layers, m->hp.n_heads, m->hp.n_kv_heads,
                       m->hp.vocab, shared ? " shared" : " separate", m->hp.ctx, (unsigned long long)want);
    if (!tok_path) return sd_errf(err, "%s: a llama2.c checkpoint needs its tokenizer file (-z tokenizer.bin)", m->path);
    if (!(m->layers = calloc((size_t)m->hp.n_layers, sizeof *m->layers))) return sd_errf(err, "out of memory");
    walker b = {.m = m, .base = (const float *)((const char *)m->map + HEADER_BYTES)};
    b.names = sd_model_own(m, (size_t)(3 + 9 * m->hp.n_layers) * sizeof *b.names, err);
    if (!b.names) return -1;
    walk(&b, shared);
    if (shared) m->output = m->tok_embd;
    if (sd_tok_from_llama2c(tok_path, m->hp.vocab, &m->tok, err)) return -1;
    return sd_model_finish(m, NULL, err);
}
