/* bench_clip - CLIP ViT-B/32 forward speed on this machine.
 *
 * Random weights of the ViT-B/32 shapes (224/32, width 768, 12 layers;
 * text 77 x 49408, width 512, 12 layers; embed 512) made in C with a fixed
 * seed: no file needed.  Reports, on 2 threads (override with $AES_THREADS):
 *   images/s at batch 16, ms per image at batch 1,
 *   text encodes/s at batch 16 on 8-20 token captions,
 *   the same with the weights kept in 16 bits (--f16, converted per matmul),
 *   peak RSS.
 * Goals on the 2-core AVX-512 machine: >= 40 images/s batched, <= 40 ms at
 * batch 1, >= 145 texts/s (10x PyTorch's 14.5); with AVX2 forced (as on an
 * AVX2-only machine): <= 80 ms at batch 1 (ONNX Runtime: 98 ms).  The f32
 * model runs on the native ISA and on AVX2 (when the CPU has AVX-512), each
 * with packed weights (as loaded) and without.  Batch 1 is the median of 31
 * calls (best also shown).  `--f32-only` skips the 16-bit run.
 * PyTorch's numbers for the same shapes: `tools/clip_reference.py bench`.
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_clip"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

/* Seconds per call of one encode after a warm-up: best of reps, and the
 * median in *median when it is not NULL (reps <= 64). */
static double time_images(aes_ctx *ctx, const aes_clip *m, const float *px, int B, float *out, int reps,
                          double *median) {
    double t[64];
    int r;
    if (reps > 64) reps = 64;
    if (aes_clip_encode_image(ctx, m, px, B, out)) die(ctx, "encode_image");
    for (r = 0; r < reps; r++) {
        double t0 = now();
        if (aes_clip_encode_image(ctx, m, px, B, out)) die(ctx, "encode_image");
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    if (median) *median = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    return t[0];
}

static double time_texts(aes_ctx *ctx, const aes_clip *m, const int32_t *tok, int B, float *out, int reps) {
    double best = 1e30;
    int r;
    if (aes_clip_encode_text(ctx, m, tok, B, out)) die(ctx, "encode_text");
    for (r = 0; r < reps; r++) {
        double t0 = now();
        if (aes_clip_encode_text(ctx, m, tok, B, out)) die(ctx, "encode_text");
        t0 = now() - t0;
        if (t0 < best) best = t0;
    }
    return best;
}

static void run(aes_ctx *ctx, const aes_clip *m, const char *label, const float *px, const int32_t *tok,
                float *out) {
    double med1, t16 = time_images(ctx, m, px, 16, out, 3, NULL);
    double t1 = time_images(ctx, m, px, 1, out, 31, &med1);
    double tt = time_texts(ctx, m, tok, 16, out, 5);
    printf("%-6s %-10s images/s at batch 16: %7.1f   ms/image at batch 1: median %6.1f best %6.1f   "
           "texts/s at batch 16: %7.1f\n", aes_cpu_name(ctx), label, 16.0 / t16, 1000.0 * med1, 1000.0 * t1, 16.0 / tt);
}

int main(int argc, char **argv) {
    aes_clip_config cfg;
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *m = NULL;
    const char *env = getenv("AES_THREADS");
    int threads = env ? atoi(env) : 2, b, t, with_f16 = !(argc > 1 && !strcmp(argv[1], "--f32-only"));
    static float px[16 * 3 * 224 * 224], out[16 * 512];
    static int32_t tok[16 * 77];
    uint64_t s = 12345;
    double t0;

    if (!ctx || aes_threads_set(ctx, threads > 0 ? threads : 2)) die(ctx, "context");
    vitb32_config(&cfg, 1);
    t0 = now();
    if (aes_clip_create_random(ctx, &cfg, 42, &m)) die(ctx, "create");
    printf("ViT-B/32 shapes, %zu parameters, random weights in %.2f s; %d threads, %s\n", aes_clip_num_params(m),
           now() - t0, aes_threads_get(ctx), aes_cpu_name(ctx));

    /* inputs: normalised-looking pixels; captions of 8..20 tokens (sot ... eot) */
    for (b = 0; b < 16 * 3 * 224 * 224; b++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        px[b] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
    }
    for (b = 0; b < 16; b++) {
        int len = 8 + (b * 5) % 13;
        tok[b * 77] = 49406;
        for (t = 1; t < len - 1; t++) tok[b * 77 + t] = 1000 + (b * 131 + t * 977) % 40000;
        tok[b * 77 + len - 1] = 49407;
    }
    {   /* the native ISA, then AVX2 forced when the CPU has more (an AVX2-only
         * machine's figures); weights packed as aes_clip_load packs them,
         * and once unpacked (aes_clip_load_opts.no_packed_weights) */
        aes_isa best = aes_isa_get(ctx), isa;
        for (isa = best; ; isa = AES_ISA_AVX2) {
            if (aes_isa_set(ctx, isa)) die(ctx, "isa");
            if (aes_clip_pack_weights(ctx, m, 1)) die(ctx, "pack weights");
            run(ctx, m, "f32", px, tok, out);
            if (aes_clip_pack_weights(ctx, m, 0)) die(ctx, "unpack weights");
            run(ctx, m, "f32-unpk", px, tok, out);
            if (best != AES_ISA_AVX512) break;
            if (isa == AES_ISA_AVX2) break;
        }
        if (aes_isa_set(ctx, best)) die(ctx, "isa");
    }
    printf("peak RSS after f32: %.0f MB\n", peak_rss_mb());
    printf("weights in memory: %.0f MB (f32)\n", (double)aes_clip_weight_bytes(m) / 1048576.0);
    if (with_f16) {
        /* the same weights kept in 16 bits: through a safetensors image in memory */
        void *buf = NULL;
        size_t len = 0;
        aes_clip *m16 = NULL;
        aes_clip_load_opts o;
        memset(&o, 0, sizeof o);
        o.keep_16bit = 1;
        if (aes_clip_serialize(ctx, m, AES_LAYOUT_HF, AES_DTYPE_F16, &buf, &len)) die(ctx, "serialize");
        aes_clip_free(m);
        m = NULL;
        if (aes_clip_load_memory(ctx, buf, len, NULL, &o, &m16)) die(ctx, "load f16");
        aes_free(buf);
        printf("weights in memory: %.0f MB (--f16)\n", (double)aes_clip_weight_bytes(m16) / 1048576.0);
        run(ctx, m16, "f16", px, tok, out);
        aes_clip_free(m16);
        printf("peak RSS at the end: %.0f MB (includes the f32 model and the in-memory f16 file)\n",
               peak_rss_mb());
    }
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return 0;
}
