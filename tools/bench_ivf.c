/* bench_ivf.c - the IVF index (aes_ivf_*) against exact search on
 * 2,000,000 x 512 clustered synthetic vectors (fp32 + int8 storage, so both
 * re-score their candidates in fp32): recall@10 of the IVF against the
 * exact top 10, and time per query, one query at a time, 2 threads.
 *
 * Goal (issue 15): recall@10 >= 0.95 at >= 10x the speed of exact search.
 * Data: 20,000 random centres, each row a centre plus isotropic noise, so
 * a row's nearest neighbours are mostly, not only, in its own cluster;
 * queries are fresh rows of the same distribution.  Memory: ~7 GB at the
 * default size.  Runtime: a few minutes (the k-means dominates).
 *
 *   make build/bench_ivf && build/bench_ivf [N] [NLIST]
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand(void) {      /* xorshift64*: uniform in [-1, 1) */
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (float)((double)((rng * 2685821657736338717ull) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

#define DIM 512
#define NCENT 20000
#define NQ 200
#define K 10

static void make_row(const float *cent, float *out) {
    const float *c = cent + (size_t)((urand() + 1.0f) * 0.5f * NCENT) % NCENT * DIM;
    int d;
    for (d = 0; d < DIM; d++) out[d] = c[d] + 0.5f * urand();
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 2000000, i;
    int nlist = argc > 2 ? atoi(argv[2]) : 1024, p, q, j, probes[] = {8, 16, 32, 64, 128};
    aes_ctx *ctx = aes_ctx_create();
    aes_index *idx = NULL;
    aes_ivf *ivf = NULL;
    float *cent = (float *)malloc((size_t)NCENT * DIM * sizeof(float)), *qs = (float *)malloc((size_t)NQ * DIM * sizeof(float));
    float row[DIM];
    aes_hit *ex = (aes_hit *)malloc((size_t)NQ * K * sizeof *ex), *ap = (aes_hit *)malloc((size_t)NQ * K * sizeof *ap);
    double t, t_exact;
    char name[32];
    if (!ctx || !cent || !qs || !ex || !ap) return 1;
    aes_threads_set(ctx, 2);
    for (i = 0; i < (size_t)NCENT * DIM; i++) cent[i] = urand();
    if (aes_index_create(ctx, DIM, AES_INDEX_F32 | AES_INDEX_I8, "bench", "", &idx) != AES_OK) return 1;
    t = now();
    for (i = 0; i < n; i++) {
        make_row(cent, row);
        snprintf(name, sizeof name, "%zu", i);
        if (aes_index_add(ctx, idx, name, 0, 0, row, 0.0f) != AES_OK) { fprintf(stderr, "%s\n", aes_last_error(ctx)); return 1; }
    }
    for (q = 0; q < NQ; q++) make_row(cent, qs + (size_t)q * DIM);
    printf("bench_ivf: %zu x %d clustered vectors (%d centres), fp32 + int8, isa %s, 2 threads; made in %.1f s\n", n, DIM,
           NCENT, aes_cpu_name(ctx), now() - t);
    t = now();
    if (aes_ivf_build(ctx, idx, nlist, 1, &ivf) != AES_OK) { fprintf(stderr, "%s\n", aes_last_error(ctx)); return 1; }
    printf("  IVF build, %d lists (k-means on %d sampled rows, 12 iterations): %.1f s\n", nlist,
           (int)((size_t)nlist * 256 < n ? (size_t)nlist * 256 : n), now() - t);
    t = now();
    for (q = 0; q < NQ; q++)
        if (aes_index_search(ctx, idx, qs + (size_t)q * DIM, 1, K, 1, ex + (size_t)q * K, NULL) != AES_OK) return 1;
    t_exact = (now() - t) / NQ;
    printf("  exact (int8 scan + fp32 re-scoring): %.2f ms per query\n", 1e3 * t_exact);
    for (p = 0; p < (int)(sizeof probes / sizeof *probes); p++) {
        int found = 0;
        double tq;
        t = now();
        for (q = 0; q < NQ; q++)
            if (aes_ivf_search(ctx, ivf, idx, qs + (size_t)q * DIM, 1, K, probes[p], ap + (size_t)q * K, NULL) != AES_OK) return 1;
        tq = (now() - t) / NQ;
        for (q = 0; q < NQ; q++)
            for (j = 0; j < K; j++) {
                int u;
                for (u = 0; u < K; u++) found += ap[q * K + u].row == ex[q * K + j].row;
            }
        printf("  IVF nprobe %3d: recall@10 %.3f, %.3f ms per query, %.1fx exact\n", probes[p], found / (double)(NQ * K),
               1e3 * tq, t_exact / tq);
    }
    aes_ivf_free(ivf);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    free(cent); free(qs); free(ex); free(ap);
    return 0;
}
