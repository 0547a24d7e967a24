/* bench_augment.c - what DPO's image augmentation does to the cached
 * reference similarities (aes_dpo_finetune_config.augment).
 *
 * The reference pass embeds every image once, un-augmented, and caches
 * s_ref(q, i) = exp(logit_scale) cos(q, i); training then sees augmented
 * views, so at the reference model the DPO argument is not 0 but
 *     h0 = [s(q, aug w) - s_ref(q, w)] - [s(q, aug l) - s_ref(q, l)].
 * This measures h0 on the shipped demo model (weights/clip.safetensors, a
 * tiny CLIP trained on the synthetic world) over preference pairs built as
 * make-pairs builds them: for each query (a held-out scene's caption), the top
 * 32 scenes of a 600-scene world by cosine, every 2nd in a 4 x 4 grid with the
 * ground-truth aesthetic score as columns.  For each augmentation alone and
 * all together (aes_augment_config_default(.., 1)), 4 views per image:
 *   |ds|     mean |s(q, aug i) - s_ref(q, i)| (logit units)
 *   rms h0   and its share of the pairs' reference margins rms (s_ref(w) - s_ref(l))
 *   L(h0)    the mean DPO loss at the reference (beta 0.1, smoothing 0.1); L(0) = 0.693
 *   flips    pairs whose reference-model preference (sign of s(q,w) - s(q,l))
 *            changes between the plain and the augmented views
 *
 *   make build/bench_augment && build/bench_augment   (from the repository root)
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define WORLD_IMPLEMENTATION
#include "world.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 600, Q = 60, VIEWS = 4 };

#define FAIL() do { printf("bench_augment: line %d: %s\n", __LINE__, aes_last_error(ctx)); return 1; } while (0)

static int cmp_desc(const void *a, const void *b, const float *key) {
    float x = key[*(const int *)a], y = key[*(const int *)b];
    return (x < y) - (x > y);
}
static const float *g_key;

static void normalize(float *v, int n) {
    double ss = 0;
    int i;
    for (i = 0; i < n; i++) ss += (double)v[i] * v[i];
    for (i = 0; i < n; i++) v[i] = (float)(v[i] / (sqrt(ss) + 1e-12));
}
static int cmp_key(const void *a, const void *b) { return cmp_desc(a, b, g_key); }

int main(void) {
    const char *model_path = "weights/clip.safetensors", *merges = "weights/merges.txt";
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *m = NULL;
    aes_tokenizer *tok = NULL;
    world_scene *sc;
    float *px, *img, *aug, *txt, *cosr, *aesv, ls;
    int *pw, *pl, *pq, npairs = 0, S, E, L, i, q, v, k;
    int32_t *ids;
    const char *names[6] = {"none", "crop 0.5", "flip 0.5", "jitter 0.4", "erase 0.25", "all (defaults)"};
    if (!ctx || aes_clip_load(ctx, model_path, NULL, &m) != AES_OK || aes_tokenizer_load_merges(ctx, merges, &tok) != AES_OK) {
        printf("bench_augment: skipped: %s (run from the repository root)\n", ctx ? aes_last_error(ctx) : "no memory");
        aes_clip_free(m);
        aes_ctx_free(ctx);
        return 0;
    }
    S = aes_clip_config_get(m)->image_size;
    E = aes_clip_config_get(m)->embed_dim;
    L = aes_clip_config_get(m)->context_length;
    ls = aes_clip_logit_scale(m);
    sc = (world_scene *)calloc(N + Q, sizeof *sc);
    px = (float *)malloc(sizeof(float) * 3 * S * S * (size_t)N);
    img = (float *)malloc(sizeof(float) * (size_t)N * E);
    aug = (float *)malloc(sizeof(float) * (size_t)N * E * VIEWS);
    txt = (float *)malloc(sizeof(float) * (size_t)Q * E);
    cosr = (float *)malloc(sizeof(float) * N);
    aesv = (float *)malloc(sizeof(float) * N);
    ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)L);
    pw = (int *)malloc(sizeof(int) * Q * 96);
    pl = (int *)malloc(sizeof(int) * Q * 96);
    pq = (int *)malloc(sizeof(int) * Q * 96);
    if (!sc || !px || !img || !aug || !txt || !cosr || !aesv || !ids || !pw || !pl || !pq) FAIL();
    /* the world: N gallery scenes, Q query scenes (seed 11, the training world's) */
    for (i = 0; i < N + Q; i++) {
        aes_image im;
        if (world_sample(ctx, 11, i, NULL, &sc[i]) != AES_OK) FAIL();
        if (i >= N) continue;
        if (world_render_image(ctx, &sc[i], S, S, &im) != AES_OK ||
            aes_clip_preprocess(ctx, &im, S, px + (size_t)i * 3 * S * S) != AES_OK) FAIL();
        aes_image_free(&im);
        aesv[i] = world_score(&sc[i], NULL);
    }
    for (i = 0; i < N; i += 50)
        if (aes_clip_encode_image(ctx, m, px + (size_t)i * 3 * S * S, N - i < 50 ? N - i : 50, img + (size_t)i * E) != AES_OK) FAIL();
    for (i = 0; i < N; i++) normalize(img + (size_t)i * E, E);
    for (q = 0; q < Q; q++) {
        char cap[WORLD_TEXT_MAX];
        int order[N], cand[16], j, r;
        aes_pair_grid_config g = {4, 4, 1, 0, AES_PAIR_ROWS_RERANKED};
        aes_pair_index out[96];
        float ca[16];
        int np = 0;
        if (world_caption(ctx, &sc[N + q], 1, cap, sizeof cap) != AES_OK ||
            aes_tokenizer_encode(ctx, tok, cap, strlen(cap), ids, L, NULL) != AES_OK ||
            aes_clip_encode_text(ctx, m, ids, 1, txt + (size_t)q * E) != AES_OK) FAIL();
        normalize(txt + (size_t)q * E, E);
        for (i = 0; i < N; i++) {
            double d = 0;
            for (k = 0; k < E; k++) d += (double)txt[(size_t)q * E + k] * img[(size_t)i * E + k];
            cosr[i] = (float)d;
            order[i] = i;
        }
        g_key = cosr;
        qsort(order, N, sizeof(int), cmp_key);
        for (j = 0; j < 16; j++) { cand[j] = order[2 * j]; ca[j] = aesv[cand[j]]; }
        if (aes_pairs_from_grid(ctx, &g, ca, 16, out, 96, &np) != AES_OK) FAIL();
        for (r = 0; r < np; r++) { pq[npairs] = q; pw[npairs] = cand[out[r].preferred]; pl[npairs] = cand[out[r].rejected]; npairs++; }
    }
    printf("bench_augment: %s (%dx%d images), %d queries, %d pairs, %d views per image, logit scale %.1f\n\n",
           model_path, S, S, Q, npairs, VIEWS, ls);
    printf("| augmentation | mean abs ds | rms h0 | rms h0 / rms margin | L(h0) | flips |\n|---|---|---|---|---|---|\n");
    for (k = 0; k < 6; k++) {
        aes_augment_config a;
        double sum_ds = 0, n_ds = 0, sum_h2 = 0, sum_m2 = 0, sum_L = 0, flips = 0, nh = 0;
        float *buf = (float *)malloc(sizeof(float) * 3 * S * S);
        aes_augment_config_default(&a, 0);
        if (k == 1) { a.crop_scale = 0.5f; a.crop_ratio = 4.0f / 3.0f; }
        if (k == 2) a.flip = 0.5f;
        if (k == 3) a.brightness = a.contrast = a.saturation = 0.4f;
        if (k == 4) { a.erase = 0.25f; a.erase_min = 0.02f; a.erase_max = 1.0f / 3.0f; a.erase_ratio = 3.3f; }
        if (k == 5) aes_augment_config_default(&a, 1);
        for (v = 0; v < VIEWS; v++)
            for (i = 0; i < N; i++) {
                memcpy(buf, px + (size_t)i * 3 * S * S, sizeof(float) * 3 * S * S);
                if (aes_augment_pixels(ctx, buf, S, &a, (uint64_t)(1000003 * v + i + 1)) != AES_OK ||
                    aes_clip_encode_image(ctx, m, buf, 1, aug + ((size_t)v * N + i) * E) != AES_OK) FAIL();
                normalize(aug + ((size_t)v * N + i) * E, E);
            }
        for (i = 0; i < npairs; i++) {
            const float *t = txt + (size_t)pq[i] * E;
            double sw = 0, sl = 0;
            int c;
            for (c = 0; c < E; c++) { sw += (double)t[c] * img[(size_t)pw[i] * E + c]; sl += (double)t[c] * img[(size_t)pl[i] * E + c]; }
            sw *= ls; sl *= ls;
            sum_m2 += (sw - sl) * (sw - sl);
            for (v = 0; v < VIEWS; v++) {
                double aw = 0, al = 0, h;
                const float *ew = aug + ((size_t)v * N + pw[i]) * E, *el = aug + ((size_t)v * N + pl[i]) * E;
                for (c = 0; c < E; c++) { aw += (double)t[c] * ew[c]; al += (double)t[c] * el[c]; }
                aw *= ls; al *= ls;
                sum_ds += fabs(aw - sw) + fabs(al - sl);
                n_ds += 2;
                h = (aw - sw) - (al - sl);
                sum_h2 += h * h;
                sum_L += -0.9 * log(1.0 / (1.0 + exp(-0.1 * h))) - 0.1 * log(1.0 / (1.0 + exp(0.1 * h)));
                flips += ((aw - al) > 0) != ((sw - sl) > 0);
                nh++;
            }
        }
        printf("| %s | %.3f | %.3f | %.3f | %.4f | %.3f |\n", names[k], sum_ds / n_ds, sqrt(sum_h2 / nh),
               sqrt(sum_h2 / nh) / sqrt(sum_m2 / npairs), sum_L / nh, flips / nh);
        free(buf);
    }
    free(sc); free(px); free(img); free(aug); free(txt); free(cosr); free(aesv); free(ids); free(pw); free(pl); free(pq);
    aes_tokenizer_free(tok);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return 0;
}
