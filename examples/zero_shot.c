/* zero_shot.c - CLIP zero-shot classification in a few calls.
 *
 *   build/examples/zero_shot MODEL.safetensors MERGES.txt IMAGE.ppm "a cat" "a dog" ...
 *
 * CLIP scores an image against each label's text; a softmax over
 * exp(logit_scale) * cos(image, text) turns the scores into probabilities
 * (Radford et al. 2021, section 3.1.2).  Images: PPM/PGM (JPEG/PNG with stb).
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>
#endif

static aes_status load_image(aes_ctx *ctx, const char *path, aes_image *img) {
#ifdef AES_HAVE_STB
    int w, h, c;
    unsigned char *px = stbi_load(path, &w, &h, &c, 3);
    if (px) {
        aes_status st = aes_image_alloc(ctx, img, w, h, 3);
        if (!st) memcpy(img->pixels, px, (size_t)w * h * 3);
        stbi_image_free(px);
        return st;
    }
#endif
    return aes_image_load(ctx, path, img);
}

int main(int argc, char **argv) {
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_image img = {0, 0, 0, NULL};
    float *pixels = NULL, *image_emb = NULL, *text_emb = NULL, *logits = NULL;
    int32_t *tokens = NULL;
    int n = argc - 4, i, S, E, L;
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.safetensors MERGES.txt IMAGE.ppm LABEL...\n", argv[0]);
        return 2;
    }
    aes_threads_set(ctx, 2);
    /* 1. the model (either layout; config.json beside it is used when present) and tokenizer */
    if (aes_clip_load(ctx, argv[1], NULL, &model) || aes_tokenizer_load_merges(ctx, argv[2], &tok)) goto fail;
    S = aes_clip_config_get(model)->image_size;
    E = aes_clip_config_get(model)->embed_dim;
    L = aes_clip_config_get(model)->context_length;
    pixels = (float *)aes_alloc(ctx, (size_t)3 * S * S, sizeof(float));
    image_emb = (float *)aes_alloc(ctx, (size_t)E, sizeof(float));
    text_emb = (float *)aes_alloc(ctx, (size_t)n * E, sizeof(float));
    logits = (float *)aes_alloc(ctx, (size_t)n, sizeof(float));
    tokens = (int32_t *)aes_alloc(ctx, (size_t)n * L, sizeof(int32_t));
    if (!pixels || !image_emb || !text_emb || !logits || !tokens) goto fail;
    /* 2. the image: resize, crop, normalise as CLIP does, then encode */
    if (load_image(ctx, argv[3], &img) || aes_clip_preprocess(ctx, &img, S, pixels)) goto fail;
    if (aes_clip_encode_image(ctx, model, pixels, 1, image_emb)) goto fail;
    /* 3. the labels: tokenize ([sot] words [eot] 0...) and encode as one batch */
    for (i = 0; i < n; i++)
        if (aes_tokenizer_encode(ctx, tok, argv[4 + i], strlen(argv[4 + i]), tokens + (size_t)i * L, L, NULL))
            goto fail;
    if (aes_clip_encode_text(ctx, model, tokens, n, text_emb)) goto fail;
    /* 4. cosine similarities, scaled by CLIP's learned temperature, softmaxed */
    aes_l2norm_forward(image_emb, NULL, image_emb, 1, E, 1e-12f);
    aes_l2norm_forward(text_emb, NULL, text_emb, n, E, 1e-12f);
    for (i = 0; i < n; i++)
        logits[i] = aes_clip_logit_scale(model) * aes_dot(ctx, image_emb, text_emb + (size_t)i * E, (size_t)E);
    aes_softmax_forward(ctx, logits, logits, 1, n);
    for (i = 0; i < n; i++) printf("%6.2f%%  %s\n", 100.0 * logits[i], argv[4 + i]);
    aes_image_free(&img);
    aes_free(pixels); aes_free(image_emb); aes_free(text_emb); aes_free(logits); aes_free(tokens);
    aes_tokenizer_free(tok);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return 0;
fail:
    fprintf(stderr, "zero_shot: %s\n", aes_last_error(ctx));
    return 1;
}
