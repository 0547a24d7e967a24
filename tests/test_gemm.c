/* test_gemm.c -- the packed GEMM (aesalign.h) against a double-precision
 * reference: every transpose, odd sizes, padded leading dimensions,
 * misaligned pointers, alpha/beta corner cases, every ISA the machine has,
 * and bit-identical results for any thread count; the int8 linear layer
 * against an exact integer reference on every kernel the machine runs. */
/* A small packing budget, so mid-sized cases here are cut into several
 * super-blocks (M, N and K splits) exactly as huge problems are, and a
 * small K budget, so deep ones (prepacked weights too) are cut along K
 * first as the deep ViT shapes are. */
#define AES__GEMM_PACK_BUDGET ((size_t)1 << 17)
#define AES__GEMM_K_BUDGET ((size_t)1 << 16)
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

/* op(X)(r, c) of a row-major matrix with leading dimension ld */
static float op_at(const float *X, int ld, aes_trans t, int r, int c) {
    return t == AES_NO_TRANS ? X[(size_t)r * (size_t)ld + (size_t)c] : X[(size_t)c * (size_t)ld + (size_t)r];
}

/* One problem: inputs with padded leading dimensions, stored one float past
 * a 64-byte boundary (so nothing is aligned), and C with a sentinel in its
 * padding columns. */
typedef struct {
    aes_trans ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    float *abuf, *bbuf, *cbuf, *c0buf;  /* allocations */
    float *A, *B, *C, *C0;              /* misaligned views; C0 = C before */
} problem;

static const float SENTINEL = 12345.0f;

static void problem_make(problem *p, aes_trans ta, aes_trans tb, int M, int N, int K, float alpha,
                         float beta, int pad) {
    size_t arows, brows, na, nb, nc;
    memset(p, 0, sizeof *p);
    p->ta = ta; p->tb = tb; p->M = M; p->N = N; p->K = K; p->alpha = alpha; p->beta = beta;
    p->lda = (ta == AES_NO_TRANS ? K : M) + pad;
    p->ldb = (tb == AES_NO_TRANS ? N : K) + pad;
    p->ldc = N + pad;
    arows = (size_t)(ta == AES_NO_TRANS ? M : K);
    brows = (size_t)(tb == AES_NO_TRANS ? K : N);
    na = arows * (size_t)p->lda + 1;
    nb = brows * (size_t)p->ldb + 1;
    nc = (size_t)M * (size_t)p->ldc + 1;
    p->abuf = (float *)malloc(sizeof(float) * (na + 1));
    p->bbuf = (float *)malloc(sizeof(float) * (nb + 1));
    p->cbuf = (float *)malloc(sizeof(float) * (nc + 1));
    p->c0buf = (float *)malloc(sizeof(float) * (nc + 1));
    p->A = p->abuf + 1; p->B = p->bbuf + 1; p->C = p->cbuf + 1; p->C0 = p->c0buf + 1;
    tl_fill(p->A, na - 1, 1.0f);
    tl_fill(p->B, nb - 1, 1.0f);
    tl_fill(p->C0, nc - 1, 1.0f);
    { /* padding columns of C hold a sentinel that must survive */
        int i, j;
        for (i = 0; i < M; i++)
            for (j = N; j < p->ldc; j++) p->C0[(size_t)i * (size_t)p->ldc + (size_t)j] = SENTINEL;
    }
}

static void problem_free(problem *p) {
    free(p->abuf); free(p->bbuf); free(p->cbuf); free(p->c0buf);
}

/* C := C0 (or NaN everywhere inside the M x N block when nan_c) and run. */
static void problem_run(problem *p, aes_ctx *ctx, int nan_c) {
    size_t nc = (size_t)p->M * (size_t)p->ldc;
    memcpy(p->C, p->C0, sizeof(float) * nc);
    if (nan_c) {
        int i, j;
        for (i = 0; i < p->M; i++)
            for (j = 0; j < p->N; j++) p->C[(size_t)i * (size_t)p->ldc + (size_t)j] = NAN;
    }
    aes__gemm_opt(ctx, p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta,
                  p->C, p->ldc);
}

/* Compares C with the double-precision result.  The allowed error of an
 * fp32 dot product grows like sqrt(K) times the size of its terms:
 * |err| <= 1e-5 * sqrt(K) * (|alpha| sum_k |a b| + |beta c|) + tiny. */
static int problem_check(const problem *p, const char *what) {
    int i, j, k, bad = 0;
    double tol_k = 1e-5 * sqrt((double)(p->K > 0 ? p->K : 1));
    for (i = 0; i < p->M; i++) {
        for (j = 0; j < p->ldc; j++) {
            float got = p->C[(size_t)i * (size_t)p->ldc + (size_t)j];
            float c0 = p->C0[(size_t)i * (size_t)p->ldc + (size_t)j];
            double sum = 0, mag = 0, want, scale;
            if (j >= p->N) { /* padding column: untouched */
                if (got != SENTINEL) bad++;
                continue;
            }
            if (p->alpha != 0.0f)
                for (k = 0; k < p->K; k++) {
                    double t = (double)op_at(p->A, p->lda, p->ta, i, k) * (double)op_at(p->B, p->ldb, p->tb, k, j);
                    sum += t;
                    mag += fabs(t);
                }
            want = (double)p->alpha * sum + (p->beta == 0.0f ? 0.0 : (double)p->beta * (double)c0);
            scale = fabs((double)p->alpha) * mag + (p->beta == 0.0f ? 0.0 : fabs((double)p->beta * c0));
            if (!(fabs((double)got - want) <= tol_k * scale + 1e-30)) {
                if (bad < 3)
                    fprintf(stderr, "    %s: C[%d,%d] = %.9g, want %.9g (M%d N%d K%d ta%d tb%d a%g b%g)\n", what,
                            i, j, got, want, p->M, p->N, p->K, (int)p->ta, (int)p->tb, p->alpha, p->beta);
                bad++;
            }
        }
    }
    return bad;
}

/* The ISAs this build and CPU can run (scalar always first). */
static int available_isas(aes_isa *out) {
    int n = 0;
    aes_isa cand[4] = { AES_ISA_SCALAR, AES_ISA_NEON, AES_ISA_AVX2, AES_ISA_AVX512 };
    aes_ctx *ctx = aes_ctx_create();
    int i;
    for (i = 0; i < 4; i++)
        if (aes_isa_set(ctx, cand[i]) == AES_OK) out[n++] = cand[i];
    aes_ctx_free(ctx);
    return n;
}

static const int odd_shapes[][3] = { /* M, N, K */
    { 1, 1, 1 }, { 3, 3, 3 }, { 17, 17, 17 }, { 63, 63, 63 }, { 1, 257, 63 }, { 257, 1, 17 },
    { 63, 17, 257 }, { 17, 257, 3 }, { 3, 63, 1 }, { 257, 63, 17 }, { 9, 49, 385 }, { 50, 100, 800 },
};
#define NSHAPES ((int)(sizeof odd_shapes / sizeof odd_shapes[0]))

/* Every transpose combination x odd shapes x every ISA, with padded leading
 * dimensions, misaligned pointers and a general alpha / beta. */
static void test_all_transposes_odd_sizes(void) {
    aes_isa isas[4];
    int nisa = available_isas(isas), s, t, ii;
    aes_ctx *ctx = aes_ctx_create();
    tl_seed(1);
    for (ii = 0; ii < nisa; ii++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
        for (s = 0; s < NSHAPES; s++)
            for (t = 0; t < 4; t++) {
                problem p;
                problem_make(&p, (aes_trans)(t & 1), (aes_trans)(t >> 1), odd_shapes[s][0], odd_shapes[s][1],
                             odd_shapes[s][2], 0.75f, -0.5f, 1 + (s % 3) * 5);
                problem_run(&p, ctx, 0);
                CHECK_MSG(problem_check(&p, aes__isa_name(isas[ii])) == 0, "isa %s shape %d trans %d",
                          aes__isa_name(isas[ii]), s, t);
                problem_free(&p);
            }
    }
    aes_ctx_free(ctx);
}

/* Tight leading dimensions (no padding) too, the common case. */
static void test_tight_leading_dims(void) {
    aes_ctx *ctx = aes_ctx_create();
    int t;
    tl_seed(2);
    for (t = 0; t < 4; t++) {
        problem p;
        problem_make(&p, (aes_trans)(t & 1), (aes_trans)(t >> 1), 96, 144, 100, 1.0f, 0.0f, 0);
        problem_run(&p, ctx, 0);
        CHECK(problem_check(&p, "tight") == 0);
        problem_free(&p);
    }
    aes_ctx_free(ctx);
}

/* alpha / beta: beta == 0 must not read C (NaN must not leak), beta == 1
 * accumulates, alpha == 0 and K == 0 only scale C. */
static void test_alpha_beta(void) {
    static const float ab[][2] = { { 1, 0 }, { 1, 1 }, { -2, 0.5f }, { 0.25f, -1 }, { 0, 0.5f }, { 0, 0 } };
    aes_isa isas[4];
    int nisa = available_isas(isas), ii, v, t;
    aes_ctx *ctx = aes_ctx_create();
    tl_seed(3);
    for (ii = 0; ii < nisa; ii++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
        for (v = 0; v < (int)(sizeof ab / sizeof ab[0]); v++)
            for (t = 0; t < 12; t++) { /* a GEMM, one row of C, one column of C */
                static const int shapes[3][3] = { { 19, 53, 41 }, { 1, 53, 41 }, { 19, 1, 41 } };
                problem p;
                problem_make(&p, (aes_trans)(t & 1), (aes_trans)((t >> 1) & 1), shapes[t / 4][0],
                             shapes[t / 4][1], shapes[t / 4][2], ab[v][0], ab[v][1], 2);
                problem_run(&p, ctx, ab[v][1] == 0.0f);
                CHECK_MSG(problem_check(&p, "alpha/beta") == 0, "isa %s alpha %g beta %g case %d",
                          aes__isa_name(isas[ii]), ab[v][0], ab[v][1], t);
                problem_free(&p);
            }
    }
    aes_ctx_free(ctx);
}

static void test_degenerate_sizes(void) {
    aes_ctx *ctx = aes_ctx_create();
    problem p;
    tl_seed(4);
    /* K == 0: C = beta * C; with beta == 0 NaN is overwritten by 0 */
    problem_make(&p, AES_NO_TRANS, AES_NO_TRANS, 5, 7, 0, 1.0f, 2.0f, 1);
    problem_run(&p, ctx, 0);
    CHECK(problem_check(&p, "K=0") == 0);
    p.beta = 0.0f;
    problem_run(&p, ctx, 1);
    CHECK(problem_check(&p, "K=0 beta=0") == 0);
    problem_free(&p);
    /* M == 0 or N == 0: nothing is touched */
    {
        float c[4] = { 1, 2, 3, 4 }, a[4] = { 1, 1, 1, 1 };
        aes__gemm_opt(ctx, AES_NO_TRANS, AES_NO_TRANS, 0, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2);
        aes__gemm_opt(ctx, AES_TRANS, AES_TRANS, 2, 0, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2);
        CHECK(c[0] == 1 && c[1] == 2 && c[2] == 3 && c[3] == 4);
    }
    /* a NULL context works (best ISA, one thread) */
    problem_make(&p, AES_TRANS, AES_NO_TRANS, 33, 65, 129, 1.5f, 0.5f, 3);
    memcpy(p.C, p.C0, sizeof(float) * (size_t)p.M * (size_t)p.ldc);
    aes__gemm_opt(NULL, p.ta, p.tb, p.M, p.N, p.K, p.alpha, p.A, p.lda, p.B, p.ldb, p.beta, p.C, p.ldc);
    CHECK(problem_check(&p, "NULL ctx") == 0);
    problem_free(&p);
    aes_ctx_free(ctx);
}

/* Each SIMD path agrees with the scalar path (both are also checked
 * against the reference above; here the same inputs go through both). */
static void test_isa_paths_agree(void) {
    aes_isa isas[4];
    int nisa = available_isas(isas), ii, t;
    aes_ctx *ctx = aes_ctx_create();
    if (nisa < 2) { tl_skip("only the scalar path is available"); aes_ctx_free(ctx); return; }
    tl_seed(5);
    for (t = 0; t < 4; t++) {
        problem p;
        float *scalar_c;
        size_t nc, i;
        int K = 300, bad = 0;
        problem_make(&p, (aes_trans)(t & 1), (aes_trans)(t >> 1), 70, 110, K, 1.0f, 0.0f, 4);
        nc = (size_t)p.M * (size_t)p.ldc;
        scalar_c = (float *)malloc(sizeof(float) * nc);
        CHECK_OK(ctx, aes_isa_set(ctx, AES_ISA_SCALAR));
        problem_run(&p, ctx, 0);
        memcpy(scalar_c, p.C, sizeof(float) * nc);
        for (ii = 1; ii < nisa; ii++) {
            CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
            problem_run(&p, ctx, 0);
            /* entries are sums of K products of values in [-1, 1): both
             * paths are within ~1e-5 * sqrt(K) * K / 3 of the truth */
            for (i = 0; i < nc; i++)
                if (!(fabs((double)p.C[i] - (double)scalar_c[i]) <= 2e-5 * sqrt((double)K) * K / 3.0)) bad++;
            CHECK_MSG(bad == 0, "isa %s differs from scalar in %d entries (trans %d)", aes__isa_name(isas[ii]),
                      bad, t);
        }
        free(scalar_c);
        problem_free(&p);
    }
    aes_ctx_free(ctx);
}

/* Results are bit-identical for 1, 2 and 3 threads, on every ISA, for
 * shapes with many tiles, several kc blocks and super-block splits. */
static void test_threads_bit_identical(void) {
    /* the last two are matrix-vector products, big enough to be threaded */
    static const int shapes[][3] = { { 200, 300, 800 }, { 129, 517, 70 }, { 801, 96, 300 }, { 40, 1700, 200 },
                                     { 5, 700, 900 }, { 1, 3000, 900 }, { 2000, 1, 1500 } };
    aes_isa isas[4];
    int nisa = available_isas(isas), ii, s, t, th;
    aes_ctx *ctx = aes_ctx_create();
    if (aes_threads_set(ctx, 2) != AES_OK) {
        tl_skip("built without threads");
        aes_ctx_free(ctx);
        return;
    }
    tl_seed(6);
    for (ii = 0; ii < nisa; ii++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
        for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
            problem p;
            float *one;
            size_t nc;
            t = s & 3; /* a different transpose combination per shape */
            problem_make(&p, (aes_trans)(t & 1), (aes_trans)(t >> 1), shapes[s][0], shapes[s][1], shapes[s][2],
                         1.0f, s == 1 ? 0.5f : 0.0f, 1);
            nc = (size_t)p.M * (size_t)p.ldc;
            one = (float *)malloc(sizeof(float) * nc);
            CHECK_OK(ctx, aes_threads_set(ctx, 1));
            problem_run(&p, ctx, 0);
            memcpy(one, p.C, sizeof(float) * nc);
            if (ii == nisa - 1) CHECK(problem_check(&p, "threads") == 0);
            for (th = 2; th <= 3; th++) {
                CHECK_OK(ctx, aes_threads_set(ctx, th));
                problem_run(&p, ctx, 0);
                CHECK_MSG(memcmp(one, p.C, sizeof(float) * nc) == 0, "isa %s shape %d: %d threads differ from 1",
                          aes__isa_name(isas[ii]), s, th);
            }
            free(one);
            problem_free(&p);
        }
    }
    aes_ctx_free(ctx);
}

/* A row of C does not depend on the rows computed with it: each row alone
 * (M = 1) and in blocks of 3 gives the bits of the whole product, for every
 * ISA, both layouts of B and with packed weights.  This is what makes an
 * image embed to the same vector in a batch of 1 and of 16. */
static void test_rows_batch_invariant(void) {
    static const int shapes[][3] = { { 7, 40, 33 }, { 10, 768, 96 }, { 5, 300, 1100 } }; /* M, N, K */
    aes_isa isas[4];
    int nisa = available_isas(isas), ii, s, tb, r, packed;
    aes_ctx *ctx = aes_ctx_create();
    tl_seed(9);
    for (ii = 0; ii < nisa; ii++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
        for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++)
            for (tb = 0; tb < 2; tb++)
                for (packed = 0; packed < 2; packed++) {
                    int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], bad = 0;
                    float *A = (float *)malloc(sizeof(float) * (size_t)M * (size_t)K);
                    float *B = (float *)malloc(sizeof(float) * (size_t)N * (size_t)K);
                    float *C = (float *)malloc(sizeof(float) * (size_t)M * (size_t)N);
                    float *R = (float *)malloc(sizeof(float) * (size_t)M * (size_t)N), *wp = NULL;
                    for (r = 0; r < M * K; r++) A[r] = tl_randf();
                    for (r = 0; r < N * K; r++) B[r] = tl_randf();
                    if (packed && tb) { /* packed weights are W[N,K], the linear layer's */
                        wp = (float *)aes_alloc(NULL, aes__gemm_packed_weight_floats(isas[ii], N, K), sizeof(float));
                        if (wp) aes__gemm_pack_weight(ctx, isas[ii], B, N, K, wp);
                    }
                    if (packed && !wp) goto next;
                    if (wp) aes__linear_forward_packed(ctx, C, A, B, wp, NULL, M, K, N);
                    else aes_gemm(ctx, AES_NO_TRANS, tb ? AES_TRANS : AES_NO_TRANS, M, N, K, 1.0f, A, K, B,
                                  tb ? K : N, 0.0f, C, N);
                    for (r = 0; r < M; r += 1) {
                        int rows = r % 2 ? AES__MIN(3, M - r) : 1;
                        if (wp) aes__linear_forward_packed(ctx, R + (size_t)r * N, A + (size_t)r * K, B, wp, NULL, rows, K, N);
                        else aes_gemm(ctx, AES_NO_TRANS, tb ? AES_TRANS : AES_NO_TRANS, rows, N, K, 1.0f,
                                      A + (size_t)r * K, K, B, tb ? K : N, 0.0f, R + (size_t)r * N, N);
                        if (memcmp(R + (size_t)r * N, C + (size_t)r * N, sizeof(float) * (size_t)rows * (size_t)N)) bad++;
                        r += rows - 1;
                    }
                    CHECK_MSG(bad == 0, "isa %s shape %d tb %d packed %d: %d row blocks differ from the whole product",
                              aes__isa_name(isas[ii]), s, tb, packed, bad);
                next:
                    aes_free(wp);
                    free(A); free(B); free(C); free(R);
                }
    }
    aes_ctx_free(ctx);
}

/* When the packing buffers cannot be had (here: an allocation limit), the
 * unpacked path still gives the right answer and leaves no error behind. */
static void test_allocation_failure_fallback(void) {
    aes_ctx *ctx = aes_ctx_create();
    int t;
    tl_seed(7);
    CHECK_OK(ctx, aes_limit_set(ctx, AES_LIMIT_ALLOC_BYTES, 64));
    for (t = 0; t < 12; t++) { /* a GEMM, a row and a column (whose vector must be gathered) */
        static const int shapes[3][3] = { { 23, 31, 45 }, { 1, 31, 45 }, { 23, 1, 45 } };
        problem p;
        problem_make(&p, (aes_trans)(t & 1), (aes_trans)((t >> 1) & 1), shapes[t / 4][0], shapes[t / 4][1],
                     shapes[t / 4][2], -1.0f, 0.5f, 2);
        problem_run(&p, ctx, 0);
        CHECK(problem_check(&p, "no memory") == 0);
        problem_free(&p);
    }
    CHECK(aes_last_status(ctx) == AES_OK);
    aes_ctx_free(ctx);
}

/* ---- int8 linear ------------------------------------------------------------
 * The reference: the same quantisation (aes__i8_quantize_row, checked
 * against an independent formula below), int64 sums in plain C, the
 * documented epilogue fmaf(acc, s_x * s_w, bias).  Every kernel, ISA and
 * thread count must give these bits exactly. */
static void i8_reference(const float *x, const float *w, const float *bias, int M, int K, int N, float *out) {
    int8_t *qx = (int8_t *)malloc((size_t)M * K), *qw = (int8_t *)malloc((size_t)N * K);
    float *sx = (float *)malloc(sizeof(float) * (size_t)M), *sw = (float *)malloc(sizeof(float) * (size_t)N);
    int m, n, k;
    for (m = 0; m < M; m++) sx[m] = aes__i8_quantize_row(x + (size_t)m * K, K, qx + (size_t)m * K);
    for (n = 0; n < N; n++) sw[n] = aes__i8_quantize_row(w + (size_t)n * K, K, qw + (size_t)n * K);
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            int64_t acc = 0;
            for (k = 0; k < K; k++) acc += (int64_t)qx[(size_t)m * K + k] * qw[(size_t)n * K + k];
            out[(size_t)m * N + n] = fmaf((float)(int32_t)acc, sx[m] * sw[n], bias ? bias[n] : 0.0f);
        }
    free(qx); free(qw); free(sx); free(sw);
}

static void i8_fill(float *x, size_t n, uint64_t seed, float scale) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * (float)aes__rand_normal(&seed);
}

static void test_i8_quantize_row(void) {
    float x[67];
    int8_t q1[67], q2[67];
    int i, k;
    uint64_t seed = 3;
    for (k = 0; k < 20; k++) {
        float s1, s2;
        for (i = 0; i < 67; i++) x[i] = (float)aes__rand_normal(&seed) * (k < 10 ? 1.0f : 1e-30f);
        if (k == 5) x[66] = -40.0f; /* the extreme is the last, negative value */
        if (k == 6) for (i = 0; i < 67; i++) x[i] = 0.0f;
        s1 = aes__i8_quantize_row(x, 67, q1);
        s2 = aes__i8_quantize_row_isa(aes_isa_get(NULL), x, 67, q2);
        CHECK(memcmp(&s1, &s2, sizeof s1) == 0 && memcmp(q1, q2, 67) == 0);
        for (i = 0; i < 67; i++) { /* independent: round(x / s), |x| <= 127 s */
            CHECK(q1[i] >= -127 && q1[i] <= 127);
            if (s1 > 0) CHECK(fabs((double)x[i] / s1 - q1[i]) <= 0.5 + 1e-4);
            else CHECK(q1[i] == 0);
        }
        if (k == 5) CHECK(q1[66] == -127);
    }
    x[3] = NAN;
    CHECK(isnan(aes__i8_quantize_row(x, 67, q1)) && q1[0] == 0 && q1[66] == 0);
    CHECK(isnan(aes__i8_quantize_row_isa(aes_isa_get(NULL), x, 67, q2)) && q2[0] == 0);
}

static void test_i8_kernels_exact(void) {
    static const int shapes[][3] = {{1, 1, 1}, {13, 70, 35}, {6, 4, 16}, {37, 33, 48}, {9, 129, 17}, {50, 256, 64}};
    aes_ctx *ctx = aes_ctx_create();
    const aes__i8_arch *archs[8];
    int na = aes__i8_archs_available(aes_isa_get(ctx), archs), s, a, t;
    CHECK(na >= 1 && archs[na - 1] == &aes__i8_arch_scalar);
    for (s = 0; s < (int)(sizeof shapes / sizeof *shapes); s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = (float *)malloc(sizeof(float) * (size_t)M * K), *w = (float *)malloc(sizeof(float) * (size_t)N * K);
        float *b = (float *)malloc(sizeof(float) * (size_t)N), *want = (float *)malloc(sizeof(float) * (size_t)M * N);
        float *got = (float *)malloc(sizeof(float) * (size_t)M * N);
        aes_i8_weights *qw = NULL;
        i8_fill(x, (size_t)M * K, 11 + (uint64_t)s, 2.0f);
        i8_fill(w, (size_t)N * K, 21 + (uint64_t)s, 0.05f);
        i8_fill(b, (size_t)N, 31 + (uint64_t)s, 1.0f);
        if (M > 3) { /* a zero row (gives the bias), a row at full scale, one NaN row */
            memset(x + K, 0, sizeof(float) * (size_t)K);
            x[2 * K] = -1e30f;
            x[3 * K + K / 2] = NAN;
        }
        if (M > 5) { /* rows 4 and 5 all at +-127 with the signs of weight rows 0 and 1,
                      * which are all at +-127 too: every product is +-127 * 127 (the
                      * largest pairs a 16-bit kernel stage can see) */
            int k;
            for (k = 0; k < K; k++) {
                float sg = (k * 7 + k / 3) % 5 < 2 ? -1.0f : 1.0f;
                w[k] = 0.05f * sg;
                w[K + k] = -0.05f * sg;
                x[4 * K + k] = 2.0f * sg;
                x[5 * K + k] = 2.0f * sg;
            }
        }
        CHECK_OK(ctx, aes_i8_weights_quantize(ctx, w, N, K, &qw));
        for (t = 0; t < 2; t++) { /* with and without bias */
            i8_reference(x, w, t ? b : NULL, M, K, N, want);
            for (a = 0; a < na && qw; a++) {
                int th;
                for (th = 1; th <= 3; th++) {
                    aes_status st;
                    if (aes_threads_set(ctx, th) != AES_OK) { aes_clear_error(ctx); continue; }
                    memset(got, 0x55, sizeof(float) * (size_t)M * N);
                    st = aes__linear_i8(ctx, archs[a], got, x, qw, t ? b : NULL, M, K, N, NULL);
                    CHECK_OK(ctx, st);
                    CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)M * N) == 0,
                              "int8 kernel %s, %d threads, [%d, %d] x [%d, %d]^T: not the reference bits",
                              archs[a]->name, th, M, K, N, K);
                }
            }
            if (M > 3) CHECK(isnan(want[3 * N]) && want[N] == (t ? b[0] : 0.0f));
        }
        aes_i8_weights_free(qw);
        free(x); free(w); free(b); free(want); free(got);
    }
    aes_ctx_free(ctx);
}

/* An ISA lowered with aes_isa_set stands for a CPU without the extensions
 * beyond it: AVX2 forced on an AVX-512 (VNNI) machine runs the plain AVX2
 * int8 kernel, not AVX-VNNI. */
static void test_i8_lowered_isa_kernel(void) {
#if defined(AES__X86)
    if (aes__isa_best() == AES_ISA_AVX512) CHECK(aes__i8_arch_for(AES_ISA_AVX2) == &aes__i8_arch_avx2);
    if (aes__isa_best() >= AES_ISA_AVX2) CHECK(aes__i8_arch_for(AES_ISA_SCALAR) == &aes__i8_arch_scalar);
#endif
}

/* The public entry point on every ISA aes_isa_set accepts: the same bits. */
static void test_i8_isas_agree(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_isa best = aes_isa_get(ctx), isa;
    enum { M = 21, K = 96, N = 40 };
    static float x[M * K], w[N * K], b[N], want[M * N], got[M * N];
    aes_i8_weights *qw = NULL;
    i8_fill(x, M * K, 5, 1.0f);
    i8_fill(w, N * K, 6, 0.1f);
    i8_fill(b, N, 7, 1.0f);
    CHECK_OK(ctx, aes_i8_weights_quantize(ctx, w, N, K, &qw));
    i8_reference(x, w, b, M, K, N, want);
    for (isa = AES_ISA_SCALAR; isa <= best && qw; isa = (aes_isa)(isa + 1)) {
        if (aes_isa_set(ctx, isa) != AES_OK) { aes_clear_error(ctx); continue; }
        CHECK_OK(ctx, aes_linear_forward_i8(ctx, got, x, qw, b, M, K, N));
        CHECK_MSG(memcmp(got, want, sizeof got) == 0, "aes_linear_forward_i8 on %s differs", aes_cpu_name(ctx));
    }
    /* close to the float layer: relative error of a few 1e-3 */
    {
        static float f[M * N];
        double num = 0, den = 0;
        int i;
        aes_linear_forward(ctx, f, x, w, b, M, K, N);
        for (i = 0; i < M * N; i++) { num += (f[i] - got[i]) * (double)(f[i] - got[i]); den += (double)f[i] * f[i]; }
        CHECK_MSG(sqrt(num / den) < 0.02, "int8 vs float relative error %g", sqrt(num / den));
    }
    /* bad arguments */
    CHECK(aes_linear_forward_i8(ctx, got, x, qw, b, M, K + 1, N) == AES_ERR_SHAPE);
    CHECK(strstr(aes_last_error(ctx), "does not fit") != NULL);
    CHECK(aes_linear_forward_i8(ctx, NULL, x, qw, b, M, K, N) == AES_ERR_INVALID_ARG);
    {
        aes_i8_weights *bad = NULL;
        int8_t q[4] = {1, 2, 3, 4};
        float sc[1] = {-1.0f};
        w[5] = INFINITY;
        CHECK(aes_i8_weights_quantize(ctx, w, N, K, &bad) == AES_ERR_NUMERIC && !bad);
        CHECK(aes__i8_weights_from(ctx, q, sc, 1, 4, &bad) == AES_ERR_NUMERIC && !bad);
        sc[0] = 0.5f;
        CHECK(aes__i8_weights_from(ctx, q, sc, 1, AES_I8_MAX_K + 1, &bad) == AES_ERR_INVALID_ARG && !bad);
        CHECK_OK(ctx, aes__i8_weights_from(ctx, q, sc, 1, 4, &bad));
        aes_i8_weights_free(bad);
    }
    aes_i8_weights_free(qw);
    aes_ctx_free(ctx);
}

/* A weight packed once (aes__gemm_pack_weight) gives the bits of the
 * forward that packs it on every call, on every ISA, for 1, 2 and 3 threads:
 * several kc blocks, odd N (a part panel), M and K cut into super-blocks by
 * the small budgets, and one row (the matrix-vector path, which reads W). */
static void test_packed_weight_bit_identical(void) {
    static const int shapes[][3] = { { 50, 77, 800 }, { 300, 96, 1700 }, { 7, 33, 5 }, { 1, 200, 300 },
                                     { 130, 2304, 64 } };
    aes_isa isas[4];
    int nisa = available_isas(isas), ii, s, th, maxth = 3;
    aes_ctx *ctx = aes_ctx_create();
    if (aes_threads_set(ctx, 2) != AES_OK) maxth = 1;
    tl_seed(8);
    for (ii = 0; ii < nisa; ii++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[ii]));
        for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            size_t i, nw = (size_t)N * (size_t)K, nx = (size_t)M * (size_t)K, ny = (size_t)M * (size_t)N;
            float *w = (float *)malloc(sizeof(float) * nw), *x = (float *)malloc(sizeof(float) * nx);
            float *bias = (float *)malloc(sizeof(float) * (size_t)N);
            float *y0 = (float *)malloc(sizeof(float) * ny), *y1 = (float *)malloc(sizeof(float) * ny);
            float *wp = (float *)aes_alloc(NULL, aes__gemm_packed_weight_floats(isas[ii], N, K), sizeof(float));
            for (i = 0; i < nw; i++) w[i] = tl_randf();
            for (i = 0; i < nx; i++) x[i] = tl_randf();
            for (i = 0; i < (size_t)N; i++) bias[i] = tl_randf();
            CHECK_OK(ctx, aes_threads_set(ctx, 1));
            aes_linear_forward(ctx, y0, x, w, bias, M, K, N);
            for (th = 1; th <= maxth; th++) {
                CHECK_OK(ctx, aes_threads_set(ctx, th));
                aes__gemm_pack_weight(ctx, isas[ii], w, N, K, wp);
                for (i = 0; i < ny; i++) y1[i] = -7.0f; /* beta 0: must not be read */
                aes__linear_forward_packed(ctx, y1, x, w, wp, bias, M, K, N);
                CHECK_MSG(memcmp(y0, y1, sizeof(float) * ny) == 0,
                          "isa %s shape %d, %d threads: packed weight differs from unpacked", aes__isa_name(isas[ii]),
                          s, th);
            }
            aes_free(wp);
            free(w); free(x); free(bias); free(y0); free(y1);
        }
    }
    aes_ctx_free(ctx);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    RUN(test_all_transposes_odd_sizes);
    RUN(test_tight_leading_dims);
    RUN(test_alpha_beta);
    RUN(test_degenerate_sizes);
    RUN(test_isa_paths_agree);
    RUN(test_threads_bit_identical);
    RUN(test_rows_batch_invariant);
    RUN(test_allocation_failure_fallback);
    RUN(test_i8_quantize_row);
    RUN(test_i8_kernels_exact);
    RUN(test_i8_isas_agree);
    RUN(test_i8_lowered_isa_kernel);
    RUN(test_packed_weight_bit_identical);
    return tl_report();
}
