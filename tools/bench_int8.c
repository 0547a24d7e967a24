/* bench_int8 - int8 vs f32 CLIP ViT-B/32 image tower, side by side.
 *
 * Random weights of the ViT-B/32 shapes (as bench_clip), the f32 model and
 * the same model with int8 attention/MLP weights (quantised at load, as
 * `--int8`).  Reports, on 2 threads (override with $AES_THREADS), for the
 * best ISA and for AVX2 forced (the comparison with ONNX Runtime's AVX2
 * fp32, ~13 images/s on this machine):
 *   images/s at batch 16, f32 and int8 runs interleaved, median of 5;
 *   per-image cosine of the int8 embedding to the f32 one (16 images);
 *   with ../shared present, the score differences of LAION's aesthetic
 *   predictor v1 (ViT-B/32 linear head) on the two embeddings;
 *   the int8 linear layer alone (fc1's 800 x 768 x 3072) with every kernel
 *   this CPU runs, against the f32 one of each ISA level, in GOP/s; the
 *   images/s lines name the int8 kernel that ran (AVX2 forced runs the plain
 *   AVX2 kernel, as an AVX2-only CPU would).
 * Goal: int8 >= 2x ONNX Runtime fp32, cosine >= 0.995.
 * `--quick`: 3 rounds instead of 5, best ISA only.
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_int8"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The linear layer alone: every int8 kernel of the context's ISA level and
 * the f32 GEMM of that level, interleaved, median GOP/s (2 M K N operations
 * per call); then the speed of each int8 kernel of that level over the f32.
 * main runs it at the best ISA and again with AVX2 forced, after the
 * best-ISA tower timing: on the AVX-512 machine we measured, AVX2 f32 code
 * run earlier in the process slowed the AVX-512 int8 kernels that ran
 * after it. */
static void kernels(aes_ctx *ctx, int rounds) {
    enum { M = 800, K = 768, N = 3072 };
    float *x = (float *)malloc(sizeof(float) * M * K), *w = (float *)malloc(sizeof(float) * N * K);
    float *y = (float *)malloc(sizeof(float) * M * N);
    const aes__i8_arch *archs[8];
    aes_i8_weights *qw = NULL;
    double t[9][8];
    uint64_t s = 3;
    aes_isa isa = aes_isa_get(ctx);
    int na = aes__i8_archs_available(isa, archs), a, r, i;
    if (!x || !w || !y) die(ctx, "memory");
    for (i = 0; i < M * K; i++) x[i] = (float)aes__rand_normal(&s);
    for (i = 0; i < N * K; i++) w[i] = 0.03f * (float)aes__rand_normal(&s);
    if (aes_i8_weights_quantize(ctx, w, N, K, &qw)) die(ctx, "quantize");
    if (na > 1 && archs[na - 1] == &aes__i8_arch_scalar) na--; /* too slow to matter */
    for (r = 0; r < rounds; r++) {
        for (a = 0; a <= na; a++) {
            double t0 = now();
            if (a < na) aes__linear_i8(ctx, archs[a], y, x, qw, NULL, M, K, N, NULL);
            else aes_linear_forward(ctx, y, x, w, NULL, M, K, N);
            t[a][r] = 2.0 * M * K * N / (now() - t0) * 1e-9;
        }
    }
    printf("isa %-7s linear 800 x 768 x 3072 (GOP/s, median of %d):", aes_cpu_name(ctx), rounds);
    for (a = 0; a <= na; a++) {
        qsort(t[a], (size_t)rounds, sizeof(double), cmp_double);
        printf("  %s%s %.0f", a < na ? archs[a]->name : "f32-", a < na ? "" : aes_cpu_name(ctx), t[a][rounds / 2]);
    }
    printf("\n  int8 kernel / f32 of its ISA:");
    for (a = 0; a < na; a++)
        if (archs[a]->epilogue == isa)
            printf("  %s x%.2f", archs[a]->name, t[a][rounds / 2] / t[na][rounds / 2]);
    printf("\n");
    aes_i8_weights_free(qw);
    free(x); free(w); free(y);
}

/* Median images/s of f32 and int8 at batch 16, runs interleaved. */
static void speed(aes_ctx *ctx, const aes_clip *f, const aes_clip *q, const float *px, float *out, int rounds) {
    double tf[8], tq[8];
    int r;
    if (aes_clip_encode_image(ctx, f, px, 16, out) || aes_clip_encode_image(ctx, q, px, 16, out)) die(ctx, "encode");
    for (r = 0; r < rounds; r++) {
        double t0 = now();
        if (aes_clip_encode_image(ctx, f, px, 16, out)) die(ctx, "encode f32");
        tf[r] = 16.0 / (now() - t0);
        t0 = now();
        if (aes_clip_encode_image(ctx, q, px, 16, out)) die(ctx, "encode int8");
        tq[r] = 16.0 / (now() - t0);
    }
    qsort(tf, (size_t)rounds, sizeof *tf, cmp_double);
    qsort(tq, (size_t)rounds, sizeof *tq, cmp_double);
    printf("isa %-7s int8 kernel %-12s images/s at batch 16:  f32 %6.1f   int8 %6.1f   (x%.2f)\n", aes_cpu_name(ctx),
           aes__i8_arch_for(aes_isa_get(ctx))->name, tf[rounds / 2], tq[rounds / 2], tq[rounds / 2] / tf[rounds / 2]);
}

int main(int argc, char **argv) {
    aes_clip_config cfg;
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *f = NULL, *q = NULL;
    aes_clip_load_opts o;
    const char *env = getenv("AES_THREADS");
    int threads = env ? atoi(env) : 2, quick = argc > 1 && !strcmp(argv[1], "--quick"), b, i, y, x, c;
    static float px[16 * 3 * 224 * 224], ef[16 * 512], eq[16 * 512], out[16 * 512];
    void *buf = NULL;
    size_t len = 0;
    uint64_t s = 777;
    double t0, cmin = 1.0, csum = 0.0;

    if (!ctx || aes_threads_set(ctx, threads > 0 ? threads : 2)) die(ctx, "context");
    vitb32_config(&cfg, 0);
    if (aes_clip_create_random(ctx, &cfg, 42, &f)) die(ctx, "create");
    if (aes_clip_serialize(ctx, f, AES_LAYOUT_OPENAI, AES_DTYPE_F32, &buf, &len)) die(ctx, "serialize");
    memset(&o, 0, sizeof o);
    o.int8 = 1;
    o.no_config_search = 1;
    t0 = now();
    if (aes_clip_load_memory(ctx, buf, len, NULL, &o, &q)) die(ctx, "load int8");
    aes_free(buf);
    printf("ViT-B/32 image tower, random weights; %d threads; int8 load+quantise %.2f s; weights %.0f MB f32, "
           "%.0f MB int8\n", aes_threads_get(ctx), now() - t0, (double)aes_clip_weight_bytes(f) / 1048576.0,
           (double)aes_clip_weight_bytes(q) / 1048576.0);

    /* images: smooth random fields (a few low-frequency waves per channel)
     * plus noise, at the scale of CLIP-normalised pixels */
    for (b = 0; b < 16; b++)
        for (c = 0; c < 3; c++) {
            double a1 = aes__rand_normal(&s), a2 = aes__rand_normal(&s), f1 = 0.1 * aes__rand_uniform(&s),
                   f2 = 0.1 * aes__rand_uniform(&s), ph = 6.28 * aes__rand_uniform(&s);
            for (y = 0; y < 224; y++)
                for (x = 0; x < 224; x++)
                    px[((size_t)(b * 3 + c) * 224 + (size_t)y) * 224 + (size_t)x] =
                        (float)(a1 * sin(f1 * x + ph) + a2 * cos(f2 * y + b) + 0.3 * aes__rand_normal(&s));
        }
    if (aes_clip_encode_image(ctx, f, px, 16, ef) || aes_clip_encode_image(ctx, q, px, 16, eq)) die(ctx, "encode");
    for (b = 0; b < 16; b++) {
        double d = 0, na = 0, nb = 0, cs;
        for (i = 0; i < 512; i++) {
            d += (double)ef[b * 512 + i] * eq[b * 512 + i];
            na += (double)ef[b * 512 + i] * ef[b * 512 + i];
            nb += (double)eq[b * 512 + i] * eq[b * 512 + i];
        }
        cs = d / sqrt(na * nb);
        csum += cs;
        if (cs < cmin) cmin = cs;
    }
    printf("cosine int8 vs f32 embedding, 16 images: min %.5f mean %.5f\n", cmin, csum / 16);
    {   /* LAION aesthetic predictor v1 (ViT-B/32 linear) on both embeddings */
        aes_safetensors *st = NULL;
        const char *head = "../shared/weights/laion-aesthetic-v1-vit-b-32-linear.safetensors";
        float w[512], bias = 0.0f;
        if (aes_safetensors_open(ctx, head, &st) == AES_OK && aes_safetensors_find(st, "weight") &&
            aes_safetensors_find(st, "bias") &&
            !aes_tensor_to_f32(ctx, aes_safetensors_find(st, "weight"), w, 512) &&
            !aes_tensor_to_f32(ctx, aes_safetensors_find(st, "bias"), &bias, 1)) {
            double dmax = 0, dsum = 0, lo = 1e30, hi = -1e30;
            aes_l2norm_forward(ef, NULL, ef, 16, 512, 1e-12f);
            aes_l2norm_forward(eq, NULL, eq, 16, 512, 1e-12f);
            for (b = 0; b < 16; b++) {
                double sf = bias, sq = bias;
                for (i = 0; i < 512; i++) { sf += (double)w[i] * ef[b * 512 + i]; sq += (double)w[i] * eq[b * 512 + i]; }
                dsum += fabs(sf - sq);
                if (fabs(sf - sq) > dmax) dmax = fabs(sf - sq);
                if (sf < lo) lo = sf;
                if (sf > hi) hi = sf;
            }
            printf("LAION aesthetic v1 score (f32 range %.3f..%.3f): |int8 - f32| mean %.4f max %.4f\n", lo, hi,
                   dsum / 16, dmax);
        } else {
            aes_clear_error(ctx);
            printf("LAION aesthetic head: %s not found (skipped)\n", head);
        }
        aes_safetensors_close(st);
    }
    kernels(ctx, quick ? 3 : 5);
    speed(ctx, f, q, px, out, quick ? 3 : 5);
    if (!quick && aes_isa_get(ctx) > AES_ISA_AVX2 && aes_isa_set(ctx, AES_ISA_AVX2) == AES_OK) {
        kernels(ctx, 5);
        speed(ctx, f, q, px, out, 5);
    }
    aes_clip_free(f);
    aes_clip_free(q);
    aes_ctx_free(ctx);
    return 0;
}
