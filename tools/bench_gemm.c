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
 * interleaved rounds: each round runs a sustained loop of one library, then
 * one of the other (a phase each), and the ratio of the two rates is taken
 * per round; the line gives the medians over the rounds.  Calls of the two
 * libraries are not alternated one by one: after a call OpenBLAS's idle
 * threads keep spinning for a while (its THREAD_TIMEOUT, about 2^28
 * cycles), and a spinning thread takes a core away from the other library's
 * next call.  So each OpenBLAS phase is followed by a pause long enough for
 * its threads to go to sleep before the next phase starts.
 *
 *   build/bench_gemm [--isa avx2|avx512|neon|scalar] [--rounds R] [seconds per phase, default 0.4]
 *
 * --isa forces our instruction set (aes_isa_set); OpenBLAS picks its kernels
 * when it is loaded, from OPENBLAS_CORETYPE, so the comparison of like with
 * like runs the program twice (make bench does):
 *   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench_gemm
 *   env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell build/bench_gemm --isa avx2
 * Each line names our ISA and OpenBLAS's core. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_gemm"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#ifdef AES_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define MAX_ROUNDS 31
/* Pause after an OpenBLAS phase, longer than its threads' spin-wait. */
#define BLAS_SETTLE_SECONDS 0.15

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

static void sleep_seconds(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

static void run_ours(aes_ctx *ctx, const shape *sh, const float *A, int lda, const float *B, int ldb, float *C) {
    aes__gemm_opt(ctx, sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, 0.0f, C, sh->N);
}

#ifdef AES_HAVE_OPENBLAS
static void run_blas(const shape *sh, const float *A, int lda, const float *B, int ldb, float *C) {
    cblas_sgemm(CblasRowMajor, sh->ta == AES_NO_TRANS ? CblasNoTrans : CblasTrans,
                sh->tb == AES_NO_TRANS ? CblasNoTrans : CblasTrans, sh->M, sh->N, sh->K, 1.0f, A, lda, B,
                ldb, 0.0f, C, sh->N);
}
#endif

/* One phase: calls for at least `seconds` (and at least 3 calls); returns
 * GFLOP/s over the whole loop and adds the calls to *calls. */
static double phase(aes_ctx *ctx, int blas, const shape *sh, const float *A, int lda, const float *B, int ldb,
                    float *C, double seconds, int *calls) {
    double start = now(), t;
    int n = 0;
    do {
#ifdef AES_HAVE_OPENBLAS
        if (blas) run_blas(sh, A, lda, B, ldb, C);
        else
#endif
            run_ours(ctx, sh, A, lda, B, ldb, C);
        n++;
        t = now() - start;
    } while (n < 3 || t < seconds);
    AES__UNUSED(blas);
    *calls += n;
    return 2.0 * sh->M * sh->N * (double)sh->K * n / t * 1e-9;
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
    double budget = 0.4;
    aes_ctx *ctx = aes_ctx_create();
    unsigned seed = 12345;
    const char *blas_core = "none";
    int s, th, a, rounds = 5;
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
        } else if (!strcmp(argv[a], "--rounds") && a + 1 < argc) {
            rounds = atoi(argv[++a]);
        } else {
            budget = atof(argv[a]);
        }
    }
    if (budget <= 0) budget = 0.4;
    if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 5;
#ifdef AES_HAVE_OPENBLAS
    blas_core = openblas_get_corename();
#endif
    printf("bench_gemm: isa %s vs openblas core %s; %d interleaved rounds of %.1f s per library per case; "
           "GFLOP/s and ratio: medians over the rounds\n", aes_cpu_name(ctx), blas_core, rounds, budget);
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
            double r_ours[MAX_ROUNDS];
            int r, calls = 0;
#ifdef AES_HAVE_OPENBLAS
            double r_blas[MAX_ROUNDS], ratio[MAX_ROUNDS], maxdiff = 0, maxref = 0;
            float *C2 = random_matrix((size_t)sh->M * (size_t)sh->N, &seed);
            size_t i;
            run_blas(sh, A, lda, B, ldb, C2);
#endif
            /* warm up (pool threads, page faults, allocator thresholds) */
            run_ours(ctx, sh, A, lda, B, ldb, C);
            for (r = 0; r < rounds; r++) {
#ifdef AES_HAVE_OPENBLAS
                /* which library goes first alternates between rounds */
                if (r % 2) {
                    r_blas[r] = phase(ctx, 1, sh, A, lda, B, ldb, C2, budget, &calls);
                    sleep_seconds(BLAS_SETTLE_SECONDS);
                }
                r_ours[r] = phase(ctx, 0, sh, A, lda, B, ldb, C, budget, &calls);
                if (!(r % 2)) {
                    r_blas[r] = phase(ctx, 1, sh, A, lda, B, ldb, C2, budget, &calls);
                    sleep_seconds(BLAS_SETTLE_SECONDS);
                }
                ratio[r] = r_ours[r] / r_blas[r];
#else
                r_ours[r] = phase(ctx, 0, sh, A, lda, B, ldb, C, budget, &calls);
#endif
            }
#ifdef AES_HAVE_OPENBLAS
            for (i = 0; i < (size_t)sh->M * (size_t)sh->N; i++) {
                double d = fabs((double)C[i] - (double)C2[i]), ref = fabs((double)C2[i]);
                if (d > maxdiff) maxdiff = d;
                if (ref > maxref) maxref = ref;
            }
            printf("%-6s threads %d  %-24s M%5d N%5d K%5d  ours %6.1f GFLOP/s  openblas %6.1f GFLOP/s  "
                   "ratio vs openblas %.3f  (%d calls, max|diff| %.1e of max %.1f)\n",
                   aes_cpu_name(ctx), th, sh->name, sh->M, sh->N, sh->K, median(r_ours, rounds),
                   median(r_blas, rounds), median(ratio, rounds), calls, maxdiff, maxref);
            aes_free(C2);
#else
            printf("%-6s threads %d  %-24s M%5d N%5d K%5d  ours %6.1f GFLOP/s  (%d calls)\n", aes_cpu_name(ctx),
                   th, sh->name, sh->M, sh->N, sh->K, median(r_ours, rounds), calls);
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
