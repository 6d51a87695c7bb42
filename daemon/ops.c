/* The daemon's quick ops: info (packed for the socket thread), tokenize and detokenize (answered by the
 * engine thread between turns). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/srv.h"
#include "base/clock.h"

const char *srv_proposer_name(sd_proposer_kind k) {
    return k == SD_PROP_DRAFT ? "draft" : k == SD_PROP_LOOKUP ? "lookup" : k == SD_PROP_SELF ? "self" : "none";
}

static void pack_model(msgpack_packer *pk, const char *key, const sd_model *m) {
    sd_pack_cstr(pk, key);
    if (!m) { msgpack_pack_nil(pk); return; }
    msgpack_pack_map(pk, 6);
    /* absolute: the daemon's working directory means nothing to a client */
    char *abs = m->path ? realpath(m->path, NULL) : NULL;
    sd_pack_kv_str(pk, "path", abs ? abs : m->path ? m->path : "");
    free(abs);
    sd_pack_kv_str(pk, "arch", sd_arch_name(m->hp.arch));
    sd_pack_kv_uint(pk, "params", m->n_params);
    sd_pack_kv_int(pk, "layers", m->hp.n_layers);
    sd_pack_kv_int(pk, "vocab", m->hp.vocab);
    sd_pack_kv_int(pk, "ctx", m->hp.ctx);
}

/* vocab: size, the special ids (-1 when none), the end-of-generation ids and every special token's text. */
static void pack_vocab(msgpack_packer *pk, const sd_tokenizer *tok) {
    const int32_t *eog, *special;
    int n_eog = sd_tok_eog_ids(tok, &eog), n_special = sd_tok_special_ids(tok, &special);
    sd_pack_cstr(pk, "vocab");
    msgpack_pack_map(pk, 6);
    sd_pack_kv_int(pk, "size", sd_tok_vocab_size(tok));
    sd_pack_kv_int(pk, "bos", sd_tok_bos(tok));
    sd_pack_kv_int(pk, "eos", sd_tok_eos(tok));
    sd_pack_kv_int(pk, "eot", sd_tok_eot(tok));
    sd_pack_cstr(pk, "eog");
    msgpack_pack_array(pk, (size_t)n_eog);
    for (int i = 0; i < n_eog; i++) msgpack_pack_int32(pk, eog[i]);
    sd_pack_cstr(pk, "special");
    msgpack_pack_array(pk, (size_t)n_special);
    for (int i = 0; i < n_special; i++) {
        msgpack_pack_map(pk, 2);
        sd_pack_kv_int(pk, "id", special[i]);
        const char *text = sd_tok_text(tok, special[i]);
        bool utf8 = sd_utf8_valid(text, strlen(text));
        sd_pack_kv_str(pk, "text", utf8 ? text : "\xef\xbf\xbd"); /* strings in replies are UTF-8 */
    }
}

void srv_pack_info(msgpack_sbuffer *sb, const sd_engine *e, const sd_server_opts *o, const sd_chat *chat,
                   uint64_t id) {
    const sd_tokenizer *tok = e->target->tok;
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    sd_enc_result_begin(&pk, id, SD_OP_INFO, 11);
    sd_pack_kv_str(&pk, "version", SD_VERSION_STR);
    sd_pack_kv_int(&pk, "protocol", SD_PROTO_VERSION);
    sd_pack_kv_str(&pk, "backend", e->be && e->be->name ? e->be->name : "?");
    sd_pack_kv_str(&pk, "backend_note", e->backend_note);
    sd_pack_kv_str(&pk, "proposer", srv_proposer_name(e->proposer));
    pack_model(&pk, "target", e->target);
    pack_model(&pk, "draft", e->draft);
    sd_pack_cstr(&pk, "chat_template");
    if (chat) sd_pack_cstr(&pk, sd_chat_source(chat));
    else msgpack_pack_nil(&pk);
    pack_vocab(&pk, tok);
    sd_pack_cstr(&pk, "limits");
    msgpack_pack_map(&pk, 10);
    sd_pack_kv_int(&pk, "max_sessions", o->max_sessions);
    sd_pack_kv_int(&pk, "queue", o->queue);
    sd_pack_kv_int(&pk, "ctx", e->ctx);
    sd_pack_kv_int(&pk, "max_tokens", e->ctx);
    sd_pack_kv_int(&pk, "max_text_bytes", SD_PROTO_MAX_TEXT_BYTES);
    sd_pack_kv_int(&pk, "max_input_tokens", SD_PROTO_MAX_INPUT_TOKENS);
    sd_pack_kv_int(&pk, "max_stop", SD_PROTO_MAX_STOP);
    sd_pack_kv_int(&pk, "max_stop_bytes", SD_PROTO_MAX_STOP_BYTES);
    sd_pack_kv_int(&pk, "max_message_bytes", SD_PROTO_MAX_MSG_BYTES);
    sd_pack_kv_int(&pk, "draft_max", SD_DRAFT_LIMIT);
    sd_pack_cstr(&pk, "defaults");
    const sd_gen_params *d = &o->defaults;
    msgpack_pack_map(&pk, 8);
    sd_pack_kv_int(&pk, "max_tokens", o->max_tokens);
    sd_pack_kv_float(&pk, "temperature", d->sampling.temperature);
    sd_pack_kv_int(&pk, "top_k", d->sampling.top_k);
    sd_pack_kv_float(&pk, "top_p", d->sampling.top_p);
    sd_pack_kv_float(&pk, "min_p", d->sampling.min_p);
    sd_pack_kv_str(&pk, "mode", d->mode == SD_MODE_PLAIN ? "plain" : "spec");
    sd_pack_kv_int(&pk, "draft_max", d->draft_max);
    sd_pack_kv_int(&pk, "draft_min", d->draft_min);
}

/* Checks ids against the vocabulary; names the first bad one. */
int srv_check_vocab(const sd_engine *e, const int32_t *ids, int n, const char *field, char *fname, size_t fcap,
                    char *msg, size_t mcap) {
    int vocab = sd_tok_vocab_size(e->target->tok);
    for (int i = 0; i < n; i++)
        if (ids[i] >= vocab) {
            snprintf(fname, fcap, "%s[%d]", field, i);
            snprintf(msg, mcap, "field '%s': token id %d is out of range (vocabulary of %d)", fname, ids[i], vocab);
            return -1;
        }
    return 0;
}

void srv_op_tokenize(srv *S, const sd_peer *to, sd_request *q) {
    int32_t *ids = NULL;
    int n = 0;
    sd_err err = {{0}};
    int flags = (q->add_bos ? SD_TOK_ADD_BOS : 0) | (q->special ? SD_TOK_PARSE_SPECIAL : 0);
    if (sd_tok_encode(S->e->target->tok, q->text, q->text_len, flags, &ids, &n, &err)) {
        srv_error(S, to, true, q->id, SD_E_INTERNAL, "text", err.msg);
        return;
    }
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_result_tokens(&S->sb, q->id, ids, n);
    free(ids);
    srv_post(S, to, q->id, true);
}

void srv_op_detokenize(srv *S, const sd_peer *to, sd_request *q) {
    char field[64], msg[256];
    if (srv_check_vocab(S->e, q->tokens, q->n_tokens, "tokens", field, sizeof field, msg, sizeof msg)) {
        srv_error(S, to, true, q->id, SD_E_OUT_OF_RANGE, field, msg);
        return;
    }
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    sd_detok d;
    sd_detok_init(&d, S->e->target->tok, -1);
    d.special = q->special;
    for (int i = 0; i <= q->n_tokens && out; i++) {
        if (cap - len < SD_TOK_MAX_PIECE + 64) {
            char *nb = realloc(out, cap * 2);
            if (!nb) { free(out); out = NULL; break; }
            out = nb;
            cap *= 2;
        }
        if (i < q->n_tokens) len += sd_detok_push(&d, q->tokens[i], out + len, cap - len);
        else len += sd_detok_flush(&d, out + len, cap - len);
    }
    if (!out) { srv_error(S, to, true, q->id, SD_E_INTERNAL, NULL, "out of memory"); return; }
    msgpack_sbuffer_clear(&S->sb);
    sd_enc_result_text(&S->sb, q->id, out, len);
    free(out);
    srv_post(S, to, q->id, true);
}

