/* fuzz_clip.c -- CLIP checkpoint loading (aes_clip_load_memory): either
 * layout, one or both towers, F32/F16/BF16, with a config.json beside it.
 * Input: [u16 LE n][n bytes config.json][safetensors].  A model that loads
 * (and is small) must run both towers without a sanitizer report. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    const uint8_t *st;
    size_t st_len;
    char *config = fz_split_text(data, size, &st, &st_len);
    uint8_t *buf = fz_copy(st, st_len);
    aes_clip_load_opts opts;
    aes_clip *model = NULL;
    aes_status s;
    memset(&opts, 0, sizeof opts);
    /* the config length's top bits pick options: 16-bit weights, forced act */
    if (size >= 2) {
        opts.keep_16bit = (data[1] >> 7) & 1;
        opts.act = (aes_act)((data[1] >> 5) & 3);
        if (opts.act > AES_ACT_GELU) opts.act = AES_ACT_AUTO;
    }
    opts.no_config_search = 1;
    s = aes_clip_load_memory(ctx, buf, st_len, config, &opts, &model);
    fz_check_error(ctx, s, "aes_clip_load_memory");
    if (s == AES_OK) {
        const aes_clip_config *c = aes_clip_config_get(model);
        if (aes_clip_num_params(model) <= (1u << 20)) {
            float *emb = (float *)malloc(sizeof(float) * (size_t)(c->embed_dim > 0 ? c->embed_dim : 1));
            if (c->has_vision && c->image_size <= 64) {
                size_t np = 3 * (size_t)c->image_size * (size_t)c->image_size, i;
                float *px = (float *)malloc(sizeof(float) * np);
                for (i = 0; i < np; i++) px[i] = (float)((int)(i % 7) - 3) * 0.25f;
                s = aes_clip_encode_image(ctx, model, px, 1, emb);
                fz_check_error(ctx, s, "aes_clip_encode_image");
                free(px);
            }
            if (c->has_text && c->context_length >= 2 && c->context_length <= 128 && c->vocab_size >= 3) {
                int32_t *tok = (int32_t *)calloc((size_t)c->context_length, sizeof(int32_t));
                tok[0] = c->vocab_size - 2;
                tok[1] = 1;
                if (c->context_length > 2) tok[2] = c->vocab_size - 1; else tok[1] = c->vocab_size - 1;
                s = aes_clip_encode_text(ctx, model, tok, 1, emb);
                fz_check_error(ctx, s, "aes_clip_encode_text");
                free(tok);
            }
            free(emb);
        }
        (void)aes_clip_id(model);
        aes_clip_free(model);
    }
    free(buf);
    free(config);
    return 0;
}
