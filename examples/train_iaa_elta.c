/* train_iaa_elta.c - train an aesthetic head with and without ELTA and see
 * what happens to the rare scores.
 *
 *   build/examples/train_iaa_elta                      (a generated long-tailed set)
 *   build/examples/train_iaa_elta TRAIN.safetensors TRAIN.csv TEST.safetensors TEST.csv [UNLABELED.safetensors]
 *
 * Image aesthetics datasets are long-tailed: most photos are rated near the
 * middle of the 1-10 scale, few are very good or very bad.  A head trained
 * on such data learns to play safe and predicts scores close to the mean:
 * fine on average, wrong exactly for the photos a search engine most wants to
 * tell apart.  ELTA (Liu et al., ICML 2024) adds three things to training:
 *
 *   1. tail-aware mixup: extra training samples made by mixing the CLIP
 *      embeddings (and labels) of two images with close scores, preferring
 *      images far from the batch mean (the rare ones);
 *   2. similarity consistency: a loss asking the head's hidden features to be
 *      as similar as the labels are;
 *   3. pseudo-labels: the trained head labels extra unlabelled images; its
 *      output distributions are sharpened more the further they lie from the
 *      mean, and only confident ones join training.
 *
 * This program trains the same MLP head twice -- plain, then with ELTA --
 * and prints the error per score bin.  Everything it uses is in aesalign.h,
 * and the generated set in tools/elta_synth.h; the files it reads are the ones `aesalign train-head` reads
 * (`aesalign elta-bench --export PREFIX` writes such a set).
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "../tools/elta_synth.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* The rows of tensor `embeddings` in a safetensors file, L2-normalised. */
static float *read_embeddings(aes_ctx *ctx, const char *path, int *n, int *d) {
    aes_safetensors *st;
    const aes_tensor_view *t;
    float *x;
    int i, c;
    if (aes_safetensors_open(ctx, path, &st) != AES_OK) DIE("%s", aes_last_error(ctx));
    t = aes_safetensors_find(st, "embeddings");
    if (!t || t->ndim != 2) DIE("%s: no [N, D] tensor 'embeddings'", path);
    *n = (int)t->shape[0];
    *d = (int)t->shape[1];
    x = (float *)malloc(sizeof(float) * (size_t)t->numel);
    if (!x || aes_tensor_to_f32(ctx, t, x, (size_t)t->numel) != AES_OK) DIE("%s: cannot read", path);
    aes_safetensors_close(st);
    for (i = 0; i < *n; i++) {
        double ss = 0;
        for (c = 0; c < *d; c++) ss += (double)x[(size_t)i * *d + c] * x[(size_t)i * *d + c];
        for (c = 0; c < *d && ss > 0; c++) x[(size_t)i * *d + c] = (float)(x[(size_t)i * *d + c] / sqrt(ss));
    }
    return x;
}

/* Trains one head and returns its metrics on the test set. */
static aes_iaa_metrics train_and_test(aes_ctx *ctx, int use_elta, const float *xtr, const aes_labels *ltr, int ntr,
                                      const float *xte, const aes_labels *lte, int nte, const float *xun, int nun,
                                      int d) {
    static const int hidden[4] = {256, 64, 32, 16};
    aes_head head;
    aes_head_train_config cfg;
    aes_iaa_eval_opts opts;
    aes_iaa_metrics m;
    int train_counts[AES_SCORE_BINS];
    float *pred = (float *)malloc(sizeof(float) * (size_t)nte);
    /* An MLP head that outputs a 10-bin score distribution, trained with EMD. */
    if (!pred || aes_head_init(ctx, &head, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, d, hidden, 1) != AES_OK)
        DIE("%s", aes_last_error(ctx));
    aes_head_train_config_default(&cfg);
    cfg.loss = AES_LOSS_EMD;
    cfg.epochs = 20;
    aes_elta_config_default(&cfg.elta, use_elta);  /* all three parts, or none */
    if (!xun) cfg.elta.refine = 0;                  /* part 3 needs unlabelled images */
    cfg.elta.refine_epochs = 10;                    /* a shorter second stage than the authors' 20 */
    if (!(use_elta && cfg.elta.refine)) cfg.epochs += cfg.elta.refine_epochs; /* same training length */
    if (aes_head_train(ctx, &head, xtr, ntr, d, ltr, xun, nun, &cfg, NULL) != AES_OK) DIE("%s", aes_last_error(ctx));
    if (aes_head_predict(ctx, &head, pred, NULL, xte, nte) != AES_OK) DIE("%s", aes_last_error(ctx));
    /* Head / medium / tail bins are decided by how frequent they were in training. */
    aes_score_bin_counts(ltr->score, ntr, train_counts);
    memset(&opts, 0, sizeof opts);
    opts.split_counts = train_counts;
    if (aes_iaa_evaluate(ctx, &m, pred, lte->score, NULL, NULL, nte, &opts) != AES_OK) DIE("%s", aes_last_error(ctx));
    aes_head_free(&head);
    free(pred);
    return m;
}

int main(int argc, char **argv) {
    aes_ctx *ctx = aes_ctx_create();
    aes_labels ltr, lte, lun;
    float *xtr, *xte, *xun = NULL;
    int ntr, nte, nun = 0, d, k;
    aes_iaa_metrics plain, elta;
    aes_threads_set(ctx, 2);
    memset(&lun, 0, sizeof lun);
    if (argc >= 5) { /* your own embeddings and labels */
        int n2, d2;
        xtr = read_embeddings(ctx, argv[1], &ntr, &d);
        xte = read_embeddings(ctx, argv[3], &nte, &d2);
        if (d2 != d) DIE("train and test embeddings differ in size");
        if (aes_labels_read_csv(ctx, &ltr, argv[2]) != AES_OK || aes_labels_read_csv(ctx, &lte, argv[4]) != AES_OK)
            DIE("%s", aes_last_error(ctx));
        if (ltr.n != ntr || lte.n != nte) DIE("label rows do not match embedding rows");
        if (argc >= 6) {
            xun = read_embeddings(ctx, argv[5], &nun, &n2);
            if (n2 != d) DIE("unlabelled embeddings differ in size");
        }
    } else { /* a long-tailed set built on LAION's real rating embeddings (or a synthetic curve) */
        synth_cfg sc;
        aes_safetensors *st = NULL;
        float *anchors;
        const char *path = "../shared/data/laion-rating-embeddings-vit-l-14.safetensors";
        if (aes_safetensors_open(ctx, path, &st) == AES_OK) {
            const aes_tensor_view *t = aes_safetensors_find(st, "embeddings");
            if (!t || t->ndim != 2 || t->shape[0] != 10) DIE("%s: expected embeddings [10, D]", path);
            d = (int)t->shape[1];
            anchors = (float *)malloc(sizeof(float) * 10 * (size_t)d);
            if (!anchors || aes_tensor_to_f32(ctx, t, anchors, 10 * (size_t)d) != AES_OK) DIE("%s", aes_last_error(ctx));
            aes_safetensors_close(st);
            printf("anchors: LAION rating-0..9 CLIP ViT-L/14 embeddings (%s)\n", path);
        } else { /* ten points on a smooth arc of the unit sphere */
            d = 64;
            anchors = (float *)malloc(sizeof(float) * 10 * (size_t)d);
            for (k = 0; k < 10 * d; k++) {
                int row = k / d, c = k % d;
                anchors[k] = (float)((c == 0 ? cos(0.09 * row) : c == 1 ? sin(0.09 * row) : 0.0));
            }
            aes_clear_error(ctx);
            printf("anchors: %s not found, using a synthetic arc\n", path);
        }
        ntr = 16000; nte = 20000; nun = 16000;
        xtr = (float *)malloc(sizeof(float) * (size_t)ntr * d);
        xte = (float *)malloc(sizeof(float) * (size_t)nte * d);
        xun = (float *)malloc(sizeof(float) * (size_t)nun * d);
        synth_default(&sc);
        if (!xtr || !xte || !xun || synth_make(ctx, xtr, &ltr, ntr, anchors, d, &sc, 1, 1) != AES_OK ||
            synth_make(ctx, xte, &lte, nte, anchors, d, &sc, 1, 2) != AES_OK ||
            synth_make(ctx, xun, &lun, nun, anchors, d, &sc, 1, 3) != AES_OK)
            DIE("%s", aes_last_error(ctx));
        free(anchors);
    }
    printf("%d training, %d test%s rows of %d-dim embeddings\n", ntr, nte, xun ? ", plus unlabelled" : "", d);
    plain = train_and_test(ctx, 0, xtr, &ltr, ntr, xte, &lte, nte, NULL, 0, d);
    elta = train_and_test(ctx, 1, xtr, &ltr, ntr, xte, &lte, nte, xun, nun, d);

    printf("\n%-14s %10s %10s\n", "", "plain", "with ELTA");
    printf("%-14s %10.4f %10.4f\n", "SRCC", plain.srcc, elta.srcc);
    printf("%-14s %10.4f %10.4f\n", "PLCC", plain.plcc, elta.plcc);
    printf("%-14s %10.4f %10.4f\n", "accuracy", plain.acc, elta.acc);
    printf("%-14s %10.4f %10.4f\n", "MAE", plain.mae, elta.mae);
    printf("%-14s %10.4f %10.4f\n", "head MAE", plain.head_mae, elta.head_mae);
    printf("%-14s %10.4f %10.4f\n", "tail MAE", plain.tail_mae, elta.tail_mae);
    printf("%-14s %10.4f %10.4f\n", "balanced MAE", plain.balanced_mae, elta.balanced_mae);
    printf("\nMAE per score bin (test rows; H/M/T = head, medium, tail by training frequency)\n");
    for (k = 0; k < AES_SCORE_BINS; k++)
        if (plain.bin_count[k] > 0)
            printf("  score %2d  %c  %6d rows  %8.4f %10.4f\n", k + 1, "HMT"[plain.group[k]], plain.bin_count[k],
                   plain.bin_mae[k], elta.bin_mae[k]);
    aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
    free(xtr); free(xte); free(xun);
    aes_ctx_free(ctx);
    return 0;
}
