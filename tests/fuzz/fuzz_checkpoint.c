/* fuzz_checkpoint.c -- the training checkpoint reader (its own safetensors
 * and JSON code): aes_train_arch_from_safetensors, aes_clip_trainer_load_memory
 * with a config.json, and aes_clip_trainer_restore_memory (resume).
 * Input: [u16 LE n][n bytes config.json][safetensors].  A checkpoint that
 * loads must save and restore again, and run a forward pass when small. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    const uint8_t *st;
    size_t st_len;
    char *config = fz_split_text(data, size, &st, &st_len);
    uint8_t *buf = fz_copy(st, st_len);
    int quick = size >= 2 ? (data[1] >> 7) & 1 : 1;
    aes_train_arch arch;
    aes_train_options opt = aes_train_options_default();
    aes_clip_trainer *tr = NULL;
    aes_status s;

    s = aes_train_arch_from_safetensors(ctx, buf, st_len, config, quick, &arch);
    fz_check_error(ctx, s, "aes_train_arch_from_safetensors");
    aes_clear_error(ctx);
    opt.max_images = 1;
    opt.max_texts = 1;
    opt.train_text = 1;
    s = aes_clip_trainer_load_memory(ctx, buf, st_len, config, quick, &opt, &tr);
    fz_check_error(ctx, s, "aes_clip_trainer_load_memory");
    if (s == AES_OK) {
        const aes_train_arch *a = aes_clip_trainer_arch(tr);
        size_t np = 0;
        unsigned char *saved = NULL;
        size_t slen = 0;
        (void)aes_clip_trainer_params(tr, &np);
        s = aes_clip_trainer_save_memory(ctx, tr, &saved, &slen);
        fz_check_error(ctx, s, "aes_clip_trainer_save_memory");
        if (s == AES_OK) {
            if (aes_clip_trainer_restore_memory(ctx, tr, saved, slen) != AES_OK) {
                fprintf(stderr, "checkpoint round trip failed: %s\n", aes_last_error(ctx));
                abort();
            }
            aes_free(saved);
        }
        if (np <= (1u << 20)) {
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
                tok[1] = a->vocab_size - 1;
                s = aes_clip_trainer_encode_texts(ctx, tr, tok, 1, emb);
                fz_check_error(ctx, s, "aes_clip_trainer_encode_texts");
                free(tok);
            }
        }
        aes_clip_trainer_free(tr);
    }
    free(buf);
    free(config);
    return 0;
}
