/* finetune_dpo.c -- preference fine-tuning of CLIP's image tower, the whole
 * loop in one readable file (arXiv 2406.09397, stage 3).
 *
 *   build/examples/finetune_dpo MODEL.safetensors PAIRS.tsv OUT.safetensors [steps]
 *
 * PAIRS.tsv has lines  query<TAB>preferred-image<TAB>rejected-image  (what
 * `aesalign make-pairs` writes, or your own judgments).  The tokenizer is
 * merges.txt beside the model (or $AES_VOCAB).  Images: PPM/PGM here, and
 * JPEG/PNG when built with stb_image.  `aesalign finetune-dpo` is the same loop
 * with every option; this file shows the steps one by one.
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>
#endif

#define BATCH_PAIRS 8          /* pairs per step: up to 16 images, 8 queries */

static void die(aes_ctx *ctx, const char *what) {
    fprintf(stderr, "finetune_dpo: %s: %s\n", what, aes_last_error(ctx));
    exit(1);
}

/* An image file -> CLIP-preprocessed [3, S, S]. */
static void load_pixels(aes_ctx *ctx, const char *path, int S, float *out) {
    aes_image img;
    memset(&img, 0, sizeof img);
    if (aes_image_load(ctx, path, &img) != AES_OK) {
#ifdef AES_HAVE_STB
        int w, h, c;
        unsigned char *px = stbi_load(path, &w, &h, &c, 3);
        if (!px || aes_image_alloc(ctx, &img, w, h, 3) != AES_OK) die(ctx, path);
        memcpy(img.pixels, px, (size_t)w * h * 3);
        stbi_image_free(px);
#else
        die(ctx, path);
#endif
    }
    if (aes_clip_preprocess(ctx, &img, S, out) != AES_OK) die(ctx, path);
    aes_image_free(&img);
}

int main(int argc, char **argv) {
    aes_ctx *ctx = aes_ctx_create();
    aes_pair_set *pairs = NULL;
    aes_clip *clip = NULL;
    aes_clip_trainer *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_optim *opt = NULL;
    aes_train_options topt = aes_train_options_default();
    aes_optim_config ocfg = aes_optim_config_default(AES_OPTIM_ADAMW);
    const aes_param_segment *seg;
    char vocab[4096];
    int steps = argc > 4 ? atoi(argv[4]) : 50, nseg, step, i, S, L, E;
    size_t nparams;
    float *pixels, *img_emb, *txt_emb, *dimg, *ref_w, *ref_l, *t_rows, *i_rows, *di;
    int32_t *tokens;

    if (argc < 4) { fprintf(stderr, "usage: finetune_dpo MODEL PAIRS.tsv OUT [steps]\n"); return 2; }
    aes_threads_set(ctx, 2);

    /* 1. Data, model, tokenizer.  Only the image tower is trained (the
     *    paper's setting); the text tower is frozen. */
    if (aes_pair_set_create(ctx, &pairs) || aes_pair_set_read(ctx, pairs, argv[2])) die(ctx, argv[2]);
    topt.train_vision = 1;
    topt.max_images = 2 * BATCH_PAIRS;
    topt.max_texts = pairs->nqueries > 2 * BATCH_PAIRS ? pairs->nqueries : 2 * BATCH_PAIRS;
    if (aes_clip_load(ctx, argv[1], NULL, &clip) || aes_clip_trainer_create(ctx, clip, &topt, &model)) die(ctx, argv[1]);
    S = aes_clip_config_get(clip)->image_size;
    L = aes_clip_config_get(clip)->context_length;
    E = aes_clip_config_get(clip)->embed_dim;
    snprintf(vocab, sizeof vocab, "%s", getenv("AES_VOCAB") ? getenv("AES_VOCAB") : argv[1]);
    if (!getenv("AES_VOCAB")) {
        char *slash = strrchr(vocab, '/');
        snprintf(slash ? slash + 1 : vocab, sizeof vocab - (size_t)(slash ? slash + 1 - vocab : 0), "merges.txt");
    }
    if (aes_tokenizer_load_merges(ctx, vocab, &tok)) die(ctx, vocab);

    pixels = (float *)malloc(sizeof(float) * 2 * BATCH_PAIRS * 3 * S * S);
    img_emb = (float *)malloc(sizeof(float) * 2 * BATCH_PAIRS * E);
    dimg = (float *)malloc(sizeof(float) * 2 * BATCH_PAIRS * E);
    txt_emb = (float *)malloc(sizeof(float) * pairs->nqueries * E);
    tokens = (int32_t *)malloc(sizeof(int32_t) * pairs->nqueries * L);
    ref_w = (float *)malloc(sizeof(float) * pairs->npairs);
    ref_l = (float *)malloc(sizeof(float) * pairs->npairs);
    t_rows = (float *)malloc(sizeof(float) * BATCH_PAIRS * E);   /* contrastive rows */
    i_rows = (float *)malloc(sizeof(float) * BATCH_PAIRS * E);
    di = (float *)malloc(sizeof(float) * BATCH_PAIRS * E);

    /* 2. Text embeddings, once: the text tower is frozen, so they never change. */
    for (i = 0; i < pairs->nqueries; i++)
        if (aes_tokenizer_encode(ctx, tok, pairs->queries[i], strlen(pairs->queries[i]), tokens + i * L, L, NULL))
            die(ctx, "tokenizer");
    if (aes_clip_trainer_encode_texts(ctx, model, tokens, pairs->nqueries, txt_emb)) die(ctx, "text encoder");

    /* 3. Reference similarities s_ref(q, i) = exp(logit_scale) cos(q, i) of
     *    the model BEFORE training, cached per pair: DPO compares the model
     *    with this frozen reference, and caching means no second copy. */
    for (i = 0; i < pairs->npairs; i++) {
        const aes_pair_rec *p = &pairs->pairs[i];
        aes_dpo_item it = {0, 0, 1, 1.0f, 0.0f, 0.0f};
        load_pixels(ctx, pairs->paths[p->preferred], S, pixels);
        load_pixels(ctx, pairs->paths[p->rejected], S, pixels + 3 * S * S);
        if (aes_clip_trainer_encode_images(ctx, model, pixels, 2, img_emb)) die(ctx, "image encoder");
        if (aes_dpo_items_set_reference(ctx, &it, 1, txt_emb + p->query * E, 1, img_emb, 2, E,
                                        aes_clip_params_get(clip)->logit_scale[0]))
            die(ctx, "reference");
        ref_w[i] = it.ref_preferred;
        ref_l[i] = it.ref_rejected;
    }

    /* 4. AdamW over the trainable tensors, warmup + cosine schedule. */
    ocfg.lr = 1e-5f;
    ocfg.warmup_steps = steps / 10;
    ocfg.total_steps = steps;
    ocfg.clip_norm = 1.0f;
    nparams = aes_clip_num_params(clip);
    aes_clip_trainer_segments(model, &seg, &nseg);
    if (aes_optim_create(ctx, &ocfg, nparams, seg, nseg, &opt)) die(ctx, "optimizer");

    /* 5. The loop. */
    for (step = 0; step < steps; step++) {
        aes_dpo_item items[BATCH_PAIRS];
        aes_dpo_stats st = {0};
        float lr = aes_lr_schedule(&ocfg, step), clip_loss = 0, clip_acc = 0, dls = 0;
        float work[BATCH_PAIRS * BATCH_PAIRS + 2 * BATCH_PAIRS];   /* aes_clip_loss_work_floats */
        int n = 0;
        /* a batch: BATCH_PAIRS pairs in file order, two images each */
        for (i = 0; i < BATCH_PAIRS; i++) {
            int pi = (step * BATCH_PAIRS + i) % pairs->npairs;
            const aes_pair_rec *p = &pairs->pairs[pi];
            load_pixels(ctx, pairs->paths[p->preferred], S, pixels + (size_t)n * 3 * S * S);
            load_pixels(ctx, pairs->paths[p->rejected], S, pixels + (size_t)(n + 1) * 3 * S * S);
            items[i].query = p->query;
            items[i].preferred = n;
            items[i].rejected = n + 1;
            items[i].weight = p->weight;
            items[i].ref_preferred = ref_w[pi];
            items[i].ref_rejected = ref_l[pi];
            n += 2;
        }
        /* forward: image embeddings (activations kept for backward) */
        aes_clip_trainer_zero_grad(model);
        if (aes_clip_trainer_encode_images(ctx, model, pixels, n, img_emb)) die(ctx, "forward");
        /* loss: ranked DPO, plus a little contrastive loss pairing each
         * query's text with its preferred image (keeps retrieval intact) */
        memset(dimg, 0, sizeof(float) * n * E);
        if (aes_dpo_loss(ctx, txt_emb, pairs->nqueries, img_emb, n, E, aes_clip_params_get(clip)->logit_scale[0], items,
                         BATCH_PAIRS, 0.1f, 0.1f, 1.0f, NULL, dimg, &dls, &st))
            die(ctx, "dpo loss");
        {
            int m = 0, k;
            {
                for (i = 0; i < BATCH_PAIRS; i++) {    /* distinct queries only */
                    for (k = 0; k < i && items[k].query != items[i].query; k++) {}
                    if (k < i) continue;
                    memcpy(t_rows + m * E, txt_emb + items[i].query * E, sizeof(float) * E);
                    memcpy(i_rows + m * E, img_emb + items[i].preferred * E, sizeof(float) * E);
                    m++;
                }
                if (m >= 2) {
                    memset(di, 0, sizeof(float) * m * E);
                    if (aes_clip_loss(ctx, i_rows, t_rows, m, E, aes_clip_params_get(clip)->logit_scale[0], 0.0f, 0.5f, di,
                                      NULL, &dls, work, &clip_loss, &clip_acc))
                        die(ctx, "clip loss");
                    for (m = 0, i = 0; i < BATCH_PAIRS; i++) {   /* route gradients back to the batch rows */
                        for (k = 0; k < i && items[k].query != items[i].query; k++) {}
                        if (k < i) continue;
                        for (k = 0; k < E; k++) dimg[items[i].preferred * E + k] += di[m * E + k];
                        m++;
                    }
                }
            }
        }
        /* backward through the image tower, then the update */
        if (aes_clip_trainer_backward_images(ctx, model, dimg)) die(ctx, "backward");
        if (aes_optim_step(ctx, opt, aes_clip_params_data(clip), aes_clip_trainer_grads(model, NULL), lr, NULL))
            die(ctx, "optimizer step");
        printf("step %3d  dpo %.4f  contrastive %.4f  pref-acc %.2f  margin %+.4f  lr %.2e\n", step + 1, st.loss,
               clip_loss, st.accuracy, st.margin, (double)lr);
    }

    /* 6. Save under the tensor names the model came with. */
    if (aes_clip_save(ctx, clip, argv[3], aes_clip_config_get(clip)->layout, AES_DTYPE_F32)) die(ctx, argv[3]);
    printf("wrote %s\n", argv[3]);
    free(pixels); free(img_emb); free(dimg); free(txt_emb); free(tokens); free(ref_w); free(ref_l);
    free(t_rows); free(i_rows); free(di);
    aes_optim_free(opt);
    aes_tokenizer_free(tok);
    aes_clip_trainer_free(model);
    aes_clip_free(clip);
    aes_pair_set_free(pairs);
    aes_ctx_free(ctx);
    return 0;
}
