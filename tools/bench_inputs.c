/* bench_inputs.c - the input side of the pipeline, one thread each:
 *
 *   tokenizer   loading CLIP's merges list, then M tokens/s and MB/s of
 *               aes_tokenizer_encode_raw on a 1 MB text (a caption
 *               paragraph 4,000 times), and microseconds per caption in the
 *               77-id format.  The merges come from ../shared (or
 *               $AES_SHARED_DIR) when present, else from the committed
 *               fixture tests/fixtures/tokenizer/clip10k/ (CLIP's first 10,000
 *               merges: fewer merges, words end in more pieces; it says which).
 *   preprocess  aes_clip_preprocess of a 1024x768 RGB photo-sized image to
 *               224x224 (resize, crop, normalise), ms per image.
 *   world       world_sample + world_render (tools/world.h) of 64x64 scenes, scenes/s
 *               and seconds per 2,000 scenes (the demo's training world has 3,000).
 *
 * Each time is the best of a few repetitions after a warm-up.  These were
 * "tests" that only printed speeds; their correctness checks stay in
 * tests/test_tokenizer.c (test_cut_long_texts), tests/test_io.c
 * (test_clip_matches_steps at 1024x768) and tests/test_world.c.
 *
 *   make build/bench_inputs && build/bench_inputs      (from the repository root)
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_inputs"
#include "bench.h"
#define WORLD_IMPLEMENTATION
#include "world.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int readable(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

/* ---- tokenizer ------------------------------------------------------------------ */

static void bench_tokenizer(aes_ctx *ctx) {
    static const char para[] =
        "A photograph of a quiet harbour at dawn, small fishing boats resting on still water, "
        "soft pink light over the hills; an old man mends his nets while gulls circle overhead. "
        "Award-winning, 35mm film, high detail, trending on ArtStation (2019) & more!! ";
    const char *env = getenv("AES_SHARED_DIR");
    char path[4200];
    const char *what;
    aes_tokenizer *tok = NULL;
    size_t plen = sizeof para - 1, reps = 4000, k, n = 0;
    int32_t ids[AES_TOKENIZER_CONTEXT];
    double t, best;
    char *text;
    int r, i, used, calls = 20000;

    snprintf(path, sizeof path, "%s/data/bpe_simple_vocab_16e6.txt", env ? env : "../shared");
    what = "CLIP's merges list";
    if (!readable(path)) {
        snprintf(path, sizeof path, "tests/fixtures/tokenizer/clip10k/merges.txt");
        what = "CLIP's first 10,000 merges (../shared is absent)";
        if (!readable(path)) {
            printf("tokenizer: no merges file (run from the repository root); skipped\n");
            return;
        }
    }
    best = 1e30;
    for (r = 0; r < 3; r++) {
        aes_tokenizer_free(tok);
        tok = NULL;
        t = now();
        if (aes_tokenizer_load_merges(ctx, path, &tok)) die(ctx, path);
        t = now() - t;
        if (t < best) best = t;
    }
    printf("tokenizer: %s, %d merges, loaded in %.1f ms\n", what, aes_tokenizer_n_merges(tok), 1e3 * best);

    text = (char *)malloc(plen * reps);
    if (!text) die(NULL, "out of memory");
    for (k = 0; k < reps; k++) memcpy(text + k * plen, para, plen);
    best = 1e30;
    for (r = 0; r < 3; r++) {
        t = now();
        if (aes_tokenizer_encode_raw(ctx, tok, text, plen * reps, NULL, 0, &n)) die(ctx, "encode_raw");
        t = now() - t;
        if (t < best) best = t;
    }
    printf("tokenizer: %zu tokens from %.2f MB in %.3f s = %.2f M tokens/s (%.1f MB/s)\n", n,
           (double)(plen * reps) / 1e6, best, (double)n / best / 1e6, (double)(plen * reps) / best / 1e6);

    best = 1e30;
    for (r = 0; r < 3; r++) {
        t = now();
        for (i = 0; i < calls; i++)
            if (aes_tokenizer_encode(ctx, tok, para, plen / 3, ids, AES_TOKENIZER_CONTEXT, &used)) die(ctx, "encode");
        t = now() - t;
        if (t < best) best = t;
    }
    printf("tokenizer: %.2f us per caption (%zu bytes) in the 77-id format\n", 1e6 * best / calls, plen / 3);
    free(text);
    aes_tokenizer_free(tok);
}

/* ---- image preprocessing -------------------------------------------------------- */

static void bench_preprocess(aes_ctx *ctx) {
    aes_image img;
    float *out = (float *)malloc(sizeof(float) * 3 * 224 * 224);
    uint64_t s = 3;
    size_t k;
    double t, best = 1e30;
    int r, i, per = 5;
    if (!out) die(NULL, "out of memory");
    if (aes_image_alloc(ctx, &img, 1024, 768, 3)) die(ctx, "image");
    for (k = 0; k < (size_t)1024 * 768 * 3; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        img.pixels[k] = (uint8_t)(s >> 56);
    }
    if (aes_clip_preprocess(ctx, &img, 224, out)) die(ctx, "preprocess");
    for (r = 0; r < 5; r++) {
        t = now();
        for (i = 0; i < per; i++)
            if (aes_clip_preprocess(ctx, &img, 224, out)) die(ctx, "preprocess");
        t = (now() - t) / per;
        if (t < best) best = t;
    }
    printf("preprocess: 1024x768 RGB -> 224x224: %.2f ms per image (%.0f images/s)\n", 1e3 * best, 1.0 / best);
    aes_image_free(&img);
    free(out);
}

/* ---- the synthetic world -------------------------------------------------------- */

static void bench_world(aes_ctx *ctx) {
    static uint8_t img[64 * 64 * 3];
    world_scene sc;
    double t, best = 1e30;
    int r, i, n = 500;
    for (r = 0; r < 3; r++) {
        t = now();
        for (i = 0; i < n; i++) {
            if (world_sample(ctx, 12, i, NULL, &sc)) die(NULL, world_last_error());
            if (world_render(ctx, &sc, 64, 64, img)) die(NULL, world_last_error());
        }
        t = now() - t;
        if (t < best) best = t;
    }
    printf("world: sample + render 64x64: %.0f scenes/s, %.3f s per 2,000 scenes\n", n / best, best * 2000.0 / n);
}

int main(void) {
    aes_ctx *ctx = aes_ctx_create();
    if (!ctx || aes_threads_set(ctx, 1)) die(ctx, "context");
    printf("bench_inputs: one thread, %s\n", aes_cpu_name(ctx));
    bench_tokenizer(ctx);
    bench_preprocess(ctx);
    bench_world(ctx);
    aes_ctx_free(ctx);
    return 0;
}
