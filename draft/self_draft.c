/* Self-drafting: the target's own first L layers followed by its final norm and output head, run as a
 * second sequence of the same model (its own, shallower KV cache). No second model, no second vocabulary. */
#include "draft/proposer.h"

/* Bytes of one layer's weights (what a decode step reads for it). */
static size_t tensor_bytes(const sd_tensor *t) {
    return t->rows > 0 ? sd_dtype_row_bytes(t->type, t->cols) * (size_t)t->rows : 0;
}

static size_t layer_bytes(sd_layer *l) {
    size_t b = 0;
    for (int i = 0; i < SD_LAYER_TENSORS; i++) b += tensor_bytes(sd_layer_tensor_at(l, i));
    return b;
}

int sd_prop_self_new(sd_model *target, int n_layers, int ctx, int max_k, sd_proposer **out, sd_err *err) {
    *out = NULL;
    if (n_layers < 1 || n_layers >= target->hp.n_layers)
        return sd_errf(err, "--draft-layers %d: the target has %d layers, so L must be in 1..%d", n_layers,
                       target->hp.n_layers, target->hp.n_layers - 1);
    /* Cost: the first L layers plus the output head, relative to the whole model. */
    size_t all = 0, part = 0;
    for (int i = 0; i < target->hp.n_layers; i++) {
        size_t b = layer_bytes(&target->layers[i]);
        all += b;
        if (i < n_layers) part += b;
    }
    size_t head = tensor_bytes(&target->output) + tensor_bytes(&target->out_norm);
    double cost = all + head > 0 ? (double)(part + head) / (double)(all + head) : (double)n_layers / target->hp.n_layers;
    return sd_prop_model_new("self", target, n_layers, ctx, max_k, cost, out, err);
}
