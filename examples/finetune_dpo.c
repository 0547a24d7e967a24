/* finetune_dpo.c -- preference fine-tuning of CLIP's image tower with the
 * library's training loop (arXiv 2406.09397, stage 3).
 *
 *   build/examples/finetune_dpo MODEL.safetensors PAIRS.tsv OUT.safetensors [steps]
 *
 * PAIRS.tsv has lines  query<TAB>preferred-image<TAB>rejected-image  (what
 * `aesalign make-pairs` writes, or your own judgments).  The tokenizer is
 * merges.txt beside the model (or $AES_VOCAB).  Images: PPM/PGM, and
 * JPEG/PNG when built with stb_image.  OUT and OUT.optim are a checkpoint:
 * run the same command again after an interruption and it goes on from
 * there, to the same result as an uninterrupted run (a finished OUT is kept
 * as it is; delete it to start over).  `aesalign finetune-dpo` is the same
 * call with every option.
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>

/* Images for the loop: PPM/PGM through the library, anything else through
 * stb_image; then CLIP's preprocessing (resize, crop, normalise). */
static aes_status load_image(void *user, aes_ctx *ctx, const char *path, int size, float *pixels) {
    aes_image img = {0, 0, 0, NULL};
    unsigned char *px;
    aes_status st;
    int w, h, c;
    (void)user;
    if (aes_image_load_preprocessed(NULL, ctx, path, size, pixels) == AES_OK) return AES_OK;
    if (!(px = stbi_load(path, &w, &h, &c, 3))) return AES_ERR_IO;
    st = aes_image_alloc(ctx, &img, w, h, 3);
    if (st == AES_OK) {
        memcpy(img.pixels, px, (size_t)w * h * 3);
        st = aes_clip_preprocess(ctx, &img, size, pixels);
    }
    stbi_image_free(px);
    aes_image_free(&img);
    return st;
}
#endif

/* Called when the set-up is done, after every step and every checkpoint.
 * Returning nonzero would stop the run cleanly (after a checkpoint). */
static int show(void *user, const aes_train_progress *p) {
    (void)user;
    if (p->event == AES_TRAIN_START && p->resumed) printf("resumed at step %ld\n", p->start_step);
    if (p->event == AES_TRAIN_STEP)
        printf("step %3ld/%ld  loss %.4f  pref-acc %.2f  margin %+.4f  contrastive %.4f  lr %.2e\n", p->step,
               p->steps, p->stats.loss, p->stats.dpo.accuracy, p->stats.dpo.margin, p->stats.clip_loss, (double)p->lr);
    return 0;
}

int main(int argc, char **argv) {
    aes_ctx *ctx = aes_ctx_create();
    aes_pair_set *pairs = NULL;
    aes_clip *model = NULL;
    aes_clip_trainer *trainer = NULL;
    aes_tokenizer *tok = NULL;
    aes_train_options topt = aes_train_options_default();
    aes_dpo_finetune_config cfg = aes_dpo_finetune_config_default();
    char vocab[4096];
    int rc = 1;

    if (argc < 4) { fprintf(stderr, "usage: finetune_dpo MODEL PAIRS.tsv OUT [steps]\n"); return 2; }
    aes_threads_set(ctx, 2);

    /* 1. The pairs, the model and its tokenizer.  Only the image tower is
     *    trained (the paper's setting, and the default); the trainer holds
     *    the model's gradients and activations for 16 images and 16 texts. */
    topt.max_images = topt.max_texts = 16;
    if (getenv("AES_VOCAB")) {
        snprintf(vocab, sizeof vocab, "%s", getenv("AES_VOCAB"));
    } else {
        const char *slash = strrchr(argv[1], '/');
        snprintf(vocab, sizeof vocab, "%.*smerges.txt", slash ? (int)(slash - argv[1]) + 1 : 0, argv[1]);
    }
    if (aes_pair_set_create(ctx, &pairs) || aes_pair_set_read(ctx, pairs, argv[2]) ||
        aes_clip_load(ctx, argv[1], NULL, &model) || aes_clip_trainer_create(ctx, model, &topt, &trainer) ||
        aes_tokenizer_load_merges(ctx, vocab, &tok))
        goto out;

    /* 2. The run.  Defaults: AdamW at lr 1e-5 with warmup and a cosine decay,
     *    the ranked DPO loss (beta 0.1, label smoothing 0.1) plus 0.5 x the
     *    contrastive loss.  Before the first step the loop embeds every query
     *    and image once and caches the reference similarities s_ref, so no
     *    frozen copy of the model is needed.  Each step then draws 8 pairs
     *    (each query and image embedded once per step), runs forward, both
     *    losses, backward and the optimizer. */
    cfg.steps = argc > 4 ? atol(argv[4]) : 50;
    cfg.batch = 16;                  /* images per step: 8 pairs */
    cfg.checkpoint = argv[3];        /* the model, and the optimizer in OUT.optim */
    cfg.save_every = 10;
    cfg.resume = 1;
    cfg.progress = show;
#ifdef AES_HAVE_STB
    cfg.load_image = load_image;     /* NULL: the library's PPM/PGM loader */
#endif
    if (aes_dpo_finetune(ctx, trainer, NULL, tok, pairs, NULL, &cfg, NULL)) goto out;
    printf("wrote %s (same tensor names as %s)\n", argv[3], argv[1]);
    rc = 0;
out:
    if (rc) fprintf(stderr, "finetune_dpo: %s\n", aes_last_error(ctx));
    aes_tokenizer_free(tok);
    aes_clip_trainer_free(trainer);
    aes_clip_free(model);
    aes_pair_set_free(pairs);
    aes_ctx_free(ctx);
    return rc;
}
