/* fuzz_checkpoint.c -- a training checkpoint is a model file: aes_clip_load_memory
 * with a config.json, then the trainer on what loaded (resume path).
 * Input: [u16 LE n][n bytes config.json][safetensors].  A checkpoint that
 * loads must serialise and load back as the same model, take a trainer, and
 * run a trainer forward pass when small. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    const uint8_t *st;
    size_t st_len;
    char *config = fz_split_text(data, size, &st, &st_len);
    uint8_t *buf = fz_copy(st, st_len);
    aes_train_options opt = aes_train_options_default();
    aes_clip *m = NULL, *back = NULL;
    aes_clip_trainer *tr = NULL;
    aes_status s;

    opt.max_images = 1;
    opt.max_texts = 1;
    opt.train_text = 1;
    s = aes_clip_load_memory(ctx, buf, st_len, config, NULL, &m);
    fz_check_error(ctx, s, "aes_clip_load_memory");
    if (s == AES_OK) {
        const aes_clip_config *a = aes_clip_config_get(m);
        void *saved = NULL;
        size_t slen = 0;
        s = aes_clip_serialize(ctx, m, a->layout == AES_LAYOUT_OPENAI ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF,
                               AES_DTYPE_F32, &saved, &slen);
        fz_check_error(ctx, s, "aes_clip_serialize");
        if (s == AES_OK) {
            if (aes_clip_load_memory(ctx, saved, slen, config, NULL, &back) != AES_OK ||
                strcmp(aes_clip_id(back), aes_clip_id(m)) != 0) {
                fprintf(stderr, "checkpoint round trip failed: %s\n", aes_last_error(ctx));
                abort();
            }
            aes_clip_free(back);
            aes_free(saved);
        }
        s = aes_clip_trainer_create(ctx, m, &opt, &tr);
        fz_check_error(ctx, s, "aes_clip_trainer_create");
        if (s == AES_OK && aes_clip_num_params(m) <= (1u << 20)) {
            float emb[4096];
            if (a->has_vision && a->image_size <= 64 && a->embed_dim <= 4096) {
                size_t n = 3 * (size_t)a->image_size * (size_t)a->image_size, i;
                float *px = (float *)malloc(sizeof(float) * n);
                for (i = 0; i < n; i++) px[i] = (float)((int)(i % 5) - 2) * 0.3f;
                s = aes_clip_trainer_encode_images(ctx, tr, px, 1, emb);
                fz_check_error(ctx, s, "aes_clip_trainer_encode_images");
                free(px);
            }
            if (a->has_text && a->context_length <= 128 && a->vocab_size >= 3 && a->embed_dim <= 4096) {
                int32_t *tok = (int32_t *)calloc((size_t)a->context_length, sizeof(int32_t));
                tok[0] = a->vocab_size - 2;
                tok[a->context_length > 1] = a->vocab_size - 1;
                s = aes_clip_trainer_encode_texts(ctx, tr, tok, 1, emb);
                fz_check_error(ctx, s, "aes_clip_trainer_encode_texts");
                free(tok);
            }
        }
        aes_clip_trainer_free(tr);
        aes_clip_free(m);
    }
    free(buf);
    free(config);
    return 0;
}
