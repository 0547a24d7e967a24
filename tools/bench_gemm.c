/* bench_gemm.c -- speed of the packed GEMM on the ViT-B/32 layer shapes, next
 * to OpenBLAS when it is installed.
 *
 * The shapes are those of one training step of the two kinds of linear
 * layers of ViT-B/32 at a batch of 16 images (M = 16 x 50 tokens = 800,
 * width 768, MLP width 3072).  For a layer y = x W^T with W [Nout, Kin]:
 *
 *     forward  y  = x W^T     NO,TRANS   M=800   N=Nout  K=Kin
 *     backward dx = dy W      NO,NO      M=800   N=Kin   K=Nout
 *     backward dW = dy^T x    TRANS,NO   M=Nout  N=Kin   K=800
 *
 * Other processes may share the CPU, so the two libraries are timed in
 * alternation, call after call, and the medians are compared.
 *
 *   build/bench_gemm [--isa avx2|avx512|neon|scalar] [seconds per case, default 1.2]
 *
 * --isa forces our instruction set (aes_isa_set); OpenBLAS picks its kernels
 * when it is loaded, from OPENBLAS_CORETYPE, so the comparison of like with
 * like runs the program twice (make bench does):
 *   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench_gemm
 *   env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell build/bench_gemm --isa avx2
 * Each line names our ISA and OpenBLAS's core. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#ifdef AES_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define MAX_REPS 201

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* POSIX; the Makefile sets _POSIX_C_SOURCE */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    const char *name;
    aes_trans ta, tb;
    int M, N, K;
} shape;

static const shape shapes[] = {
    { "fwd  y=xW^T  Nout=768 ", AES_NO_TRANS, AES_TRANS, 800, 768, 768 },
    { "bwd  dx=dyW  Nout=768 ", AES_NO_TRANS, AES_NO_TRANS, 800, 768, 768 },
    { "bwd  dW=dy^Tx Nout=768", AES_TRANS, AES_NO_TRANS, 768, 768, 800 },
    { "fwd  y=xW^T  Nout=3072", AES_NO_TRANS, AES_TRANS, 800, 3072, 768 },
    { "bwd  dx=dyW  Nout=3072", AES_NO_TRANS, AES_NO_TRANS, 800, 768, 3072 },
    { "bwd  dW=dy^Tx Nout=3072", AES_TRANS, AES_NO_TRANS, 3072, 768, 800 },
};

static float *random_matrix(size_t n, unsigned *seed) {
    float *x = (float *)aes_alloc(NULL, n, sizeof(float));
    size_t i;
    if (!x) { fprintf(stderr, "bench_gemm: out of memory\n"); exit(1); }
    for (i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = (float)((*seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return x;
}

static int parse_isa(const char *name, aes_isa *isa) {
    static const char *const names[] = { "scalar", "neon", "avx2", "avx512" };
    int i;
    for (i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) {
            *isa = (aes_isa)i;
            return 1;
        }
    return 0;
}

int main(int argc, char **argv) {
    double budget = 1.2;
    aes_ctx *ctx = aes_ctx_create();
    unsigned seed = 12345;
    const char *blas_core = "none";
    int s, th, a;
    if (!ctx) return 1;
    for (a = 1; a < argc; a++) {
        aes_isa isa;
        if (!strcmp(argv[a], "--isa") && a + 1 < argc) {
            if (!parse_isa(argv[++a], &isa)) {
                fprintf(stderr, "bench_gemm: unknown isa %s (scalar, neon, avx2, avx512)\n", argv[a]);
                return 2;
            }
            if (aes_isa_set(ctx, isa) != AES_OK) {
                printf("bench_gemm: %s; skipped\n", aes_last_error(ctx));
                aes_ctx_free(ctx);
                return 0;
            }
        } else {
            budget = atof(argv[a]);
        }
    }
    if (budget <= 0) budget = 1.2;
#ifdef AES_HAVE_OPENBLAS
    blas_core = openblas_get_corename();
#endif
    printf("bench_gemm: isa %s vs openblas core %s, %.1f s per case; median GFLOP/s of calls alternating "
           "with OpenBLAS\n", aes_cpu_name(ctx), blas_core, budget);
#ifndef AES_HAVE_OPENBLAS
    printf("openblas: not installed, ratio skipped\n");
#endif
    for (th = 1; th <= 2; th++) {
        if (aes_threads_set(ctx, th) != AES_OK) {
            printf("threads %d: not available in this build (%s)\n", th, aes_last_error(ctx));
            continue;
        }
#ifdef AES_HAVE_OPENBLAS
        openblas_set_num_threads(th);
#endif
        for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
            const shape *sh = &shapes[s];
            int lda = sh->ta == AES_NO_TRANS ? sh->K : sh->M, ldb = sh->tb == AES_NO_TRANS ? sh->N : sh->K;
            float *A = random_matrix((size_t)sh->M * (size_t)sh->K, &seed);
            float *B = random_matrix((size_t)sh->K * (size_t)sh->N, &seed);
            float *C = random_matrix((size_t)sh->M * (size_t)sh->N, &seed);
            double flops = 2.0 * sh->M * sh->N * (double)sh->K, t_ours[MAX_REPS], t0, start;
            int reps = 0, i;
#ifdef AES_HAVE_OPENBLAS
            double t_blas[MAX_REPS], maxdiff = 0, maxref = 0;
            float *C2 = random_matrix((size_t)sh->M * (size_t)sh->N, &seed);
            CBLAS_TRANSPOSE ta = sh->ta == AES_NO_TRANS ? CblasNoTrans : CblasTrans;
            CBLAS_TRANSPOSE tb = sh->tb == AES_NO_TRANS ? CblasNoTrans : CblasTrans;
            cblas_sgemm(CblasRowMajor, ta, tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, 0.0f, C2, sh->N);
#endif
            /* warm up (pool threads, page faults, allocator thresholds) */
            aes__gemm_opt(ctx, sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, 0.0f, C, sh->N);
            start = now_seconds();
            while (reps < MAX_REPS && (reps < 11 || now_seconds() - start < budget)) {
                t0 = now_seconds();
                aes__gemm_opt(ctx, sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, 0.0f, C, sh->N);
                t_ours[reps] = now_seconds() - t0;
#ifdef AES_HAVE_OPENBLAS
                t0 = now_seconds();
                cblas_sgemm(CblasRowMajor, ta, tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, 0.0f, C2, sh->N);
                t_blas[reps] = now_seconds() - t0;
#endif
                reps++;
            }
#ifdef AES_HAVE_OPENBLAS
            for (i = 0; i < sh->M * sh->N; i++) {
                double d = fabs((double)C[i] - (double)C2[i]), r = fabs((double)C2[i]);
                if (d > maxdiff) maxdiff = d;
                if (r > maxref) maxref = r;
            }
            {
                double ours = flops / median(t_ours, reps) * 1e-9, blas = flops / median(t_blas, reps) * 1e-9;
                printf("%-6s threads %d  %-24s M%5d N%5d K%5d  ours %6.1f GFLOP/s  openblas %6.1f GFLOP/s  "
                       "ratio vs openblas %.3f  (%d reps, max|diff| %.1e of max %.1f)\n",
                       aes_cpu_name(ctx), th, sh->name, sh->M, sh->N, sh->K, ours, blas, ours / blas, reps, maxdiff, maxref);
            }
            aes_free(C2);
#else
            AES__UNUSED(i);
            printf("%-6s threads %d  %-24s M%5d N%5d K%5d  ours %6.1f GFLOP/s  (%d reps)\n", aes_cpu_name(ctx),
                   th, sh->name, sh->M,
                   sh->N, sh->K, flops / median(t_ours, reps) * 1e-9, reps);
#endif
            fflush(stdout);
            aes_free(A);
            aes_free(B);
            aes_free(C);
        }
    }
    aes_ctx_free(ctx);
    return 0;
}
