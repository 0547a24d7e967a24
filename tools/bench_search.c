/* bench_search.c - flat exact top-k search over 1,000,000 x 512 vectors
 * (the size of a large personal photo collection with CLIP ViT-B/32):
 * fp32 vs int8, one query at a time and batched, 2 threads; with
 * -DAES_HAVE_OPENBLAS an OpenBLAS sgemv / sgemm baseline that computes the
 * same scores (without the top-k selection).
 *
 * Goals (issue 3): <= 60 ms per query with int8, >= 20 queries/s batched.
 * The fp32 scan reads 2 GB per query and is bounded by memory bandwidth;
 * int8 reads a quarter of it.  Memory: ~2.6 GB.  Runtime: ~30 s.
 *
 *   make build/bench_search && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench_search [N] [DIM]
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_search"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef AES_HAVE_OPENBLAS
#include <cblas.h>
extern void openblas_set_num_threads(int);
#endif

/* xorshift64*: uniform floats in [-1, 1); rows are normalized afterwards,
 * which is all a flat scan cares about (its cost does not depend on the
 * values). */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand(void) {
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (float)((double)((rng * 2685821657736338717ull) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void fill_unit_rows(float *x, size_t n, int dim) {
    size_t i;
    int d;
    for (i = 0; i < n; i++) {
        float *r = x + i * (size_t)dim;
        double ss = 0;
        for (d = 0; d < dim; d++) { r[d] = urand(); ss += (double)r[d] * r[d]; }
        for (d = 0; d < dim; d++) r[d] = (float)(r[d] / sqrt(ss));
    }
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 1000000;
    int dim = argc > 2 ? atoi(argv[2]) : 512, k = 10, nq1 = 8, nqb = 64, threads = 2, q;
    aes_ctx *ctx = aes_ctx_create();
    float *x, *queries, *scales;
    int8_t *qx;
    aes_hit *hf, *hi;
    double t, f32_single, i8_single, f32_batch, i8_batch, found = 0;
    if (!ctx || n < 1000 || dim < 1) return 1;
    aes_threads_set(ctx, threads);
    printf("bench_search: %zu x %d vectors, k %d, %d threads, isa %s\n", n, dim, k, threads, aes_cpu_name(ctx));
    x = (float *)malloc(n * (size_t)dim * sizeof(float));
    qx = (int8_t *)malloc(n * (size_t)dim);
    scales = (float *)malloc(n * sizeof(float));
    queries = (float *)malloc((size_t)nqb * dim * sizeof(float));
    hf = (aes_hit *)malloc((size_t)nqb * k * sizeof(aes_hit));
    hi = (aes_hit *)malloc((size_t)nqb * k * sizeof(aes_hit));
    if (!x || !qx || !scales || !queries || !hf || !hi) { fprintf(stderr, "out of memory\n"); return 1; }
    t = now();
    fill_unit_rows(x, n, dim);
    fill_unit_rows(queries, (size_t)nqb, dim);
    aes_quantize_i8(ctx, x, n, dim, qx, scales);
    printf("  data: fp32 %.0f MB, int8 %.0f MB (generated and quantized in %.1f s)\n",
           (double)n * dim * 4 / 1048576.0, (double)n * (dim + 4) / 1048576.0, now() - t);

    /* one query at a time (a first untimed pass warms the pages) */
    aes_topk_f32(ctx, x, n, dim, queries, 1, k, hf, NULL);
    aes_topk_i8(ctx, qx, scales, n, dim, queries, 1, k, hi, NULL);
    t = now();
    for (q = 0; q < nq1; q++) aes_topk_f32(ctx, x, n, dim, queries + (size_t)q * dim, 1, k, hf + q * k, NULL);
    f32_single = (now() - t) / nq1;
    t = now();
    for (q = 0; q < nq1; q++) aes_topk_i8(ctx, qx, scales, n, dim, queries + (size_t)q * dim, 1, k, hi + q * k, NULL);
    i8_single = (now() - t) / nq1;
    printf("  1 query:   fp32 %7.1f ms/query (%5.1f GB/s)   int8 %7.1f ms/query (%5.1f GB/s)   goal int8 <= 60 ms\n",
           1e3 * f32_single, (double)n * dim * 4 / f32_single / 1e9, 1e3 * i8_single,
           (double)n * (dim + 4) / i8_single / 1e9);

    /* batched */
    t = now();
    aes_topk_f32(ctx, x, n, dim, queries, nqb, k, hf, NULL);
    f32_batch = nqb / (now() - t);
    t = now();
    aes_topk_i8(ctx, qx, scales, n, dim, queries, nqb, k, hi, NULL);
    i8_batch = nqb / (now() - t);
    printf("  %d queries: fp32 %7.1f queries/s            int8 %7.1f queries/s            goal >= 20 queries/s\n",
           nqb, f32_batch, i8_batch);

    /* int8 scan alone vs exact fp32 (the index re-scores int8 candidates
     * with fp32 when it stores both, which makes this 1.0) */
    for (q = 0; q < nqb; q++) {
        int a, b;
        for (a = 0; a < k; a++)
            for (b = 0; b < k; b++)
                if (hf[q * k + a].row == hi[q * k + b].row) { found++; break; }
    }
    printf("  recall@%d of the int8 scan alone vs fp32: %.4f (uniform random data, the hardest case)\n", k,
           found / (nqb * k));

#ifdef AES_HAVE_OPENBLAS
    {
        float *y = (float *)malloc(n * (size_t)nqb * sizeof(float));
        double gemv, gemm;
        if (!y) { fprintf(stderr, "out of memory\n"); return 1; }
        openblas_set_num_threads(threads);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, dim, 1.0f, x, dim, queries, 1, 0.0f, y, 1);
        t = now();
        for (q = 0; q < nq1; q++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, dim, 1.0f, x, dim, queries + (size_t)q * dim, 1, 0.0f, y, 1);
        gemv = (now() - t) / nq1;
        t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, nqb, dim, 1.0f, x, dim, queries, dim, 0.0f, y, nqb);
        gemm = nqb / (now() - t);
        printf("  OpenBLAS (scores only, no top-k): sgemv %7.1f ms/query, sgemm %d queries: %7.1f queries/s\n",
               1e3 * gemv, nqb, gemm);
        printf("  ratios: int8 1-query %.2fx faster than sgemv; fp32 1-query %.2fx; int8 batched %.2fx sgemm\n",
               gemv / i8_single, gemv / f32_single, i8_batch / gemm);
        free(y);
    }
#else
    printf("  (no OpenBLAS baseline: built without AES_HAVE_OPENBLAS)\n");
#endif
    free(x); free(qx); free(scales); free(queries); free(hf); free(hi);
    aes_ctx_free(ctx);
    return 0;
}
