/* test_core.c - the kernels: every backward against central finite
 * differences, every SIMD path against the scalar one on odd sizes and
 * unaligned pointers, bit-identical results across thread counts, half
 * precision conversions, and the context's error handling. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

static aes_ctx *ctx;

static float *fbuf(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

/* ---- finite differences ------------------------------------------------------
 * A kernel under test is wrapped as "loss = sum(forward(x) * R)" for a fixed
 * random R, so dLoss/dout = R and the backward pass must return dLoss/dx;
 * CHECK_GRAD (testlib.h) compares it with central differences of that loss. */

/* Float kernels, the loss summed in double: step 1e-2, |diff| <= 3e-5 + 5e-3 |numeric|
 * (the absolute part covers the float rounding of the forward pass, which
 * differs between the SIMD paths, AES_NO_SIMD and compilers).
 * Fields: h, rtol, atol, atol_of_max, scale, kink_fraction, min_cosine, max_entries. */
static const tl_fd_opts FD = {1e-2, 5e-3, 3e-5, 0, 1, 0, 0, 0};
/* Elementwise activations: a smaller step.  (quick)GELU's third derivative
 * is large where its first is small: the truncation error h^2 f'''/6 reaches
 * ~2e-5 at h = 1e-2 and a quarter of that at h = 5e-3, where the rounding
 * noise (one float output moves per entry) is still small. */
static const tl_fd_opts FD_ACT = {5e-3, 5e-3, 1e-5, 0, 1, 0, 0, 0};

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The checker itself (testlib.h): it passes a right gradient and names a
 * wrong entry, samples evenly, restores x, honours scale and kinks. */
typedef struct { size_t n; const float *xf; const double *xd; const float *R; int relu; } fd_self_prob;
static double fd_self_loss(void *p) {  /* sum R_i sin(x_i), or sum R_i max(x_i, 0) */
    fd_self_prob *q = (fd_self_prob *)p;
    double s = 0;
    size_t i;
    for (i = 0; i < q->n; i++) {
        double x = q->xf ? (double)q->xf[i] : q->xd[i];
        s += q->R[i] * (q->relu ? (x > 0 ? x : 0) : sin(x));
    }
    return s;
}
static void test_fd_checker(void) {
    enum { N = 20 };
    float x[N], keep[N], R[N], g[N];
    double xd[N], gd[N];
    fd_self_prob q;
    tl_fd_opts o = tl_fd_default();
    tl_fd_result r;
    size_t i;
    tl_seed(12);
    tl_fill(x, N, 2);
    tl_fill(R, N, 1);
    for (i = 0; i < N; i++) {
        g[i] = (float)(R[i] * cos((double)x[i]));
        xd[i] = x[i];
        gd[i] = R[i] * cos(xd[i]);
    }
    memcpy(keep, x, sizeof x);
    q.n = N; q.xf = x; q.xd = NULL; q.R = R; q.relu = 0;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed == 0 && r.checked == N && r.worst <= 1.0 && r.cosine > 0.99999);
    CHECK(memcmp(x, keep, sizeof x) == 0);                 /* x restored bit for bit */
    /* one entry 2% off: found, and named */
    g[7] *= 1.02f;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed == 1 && r.worst_index == 7 && r.worst > 1.0);
    CHECK_NEAR(r.worst_analytic, g[7], 0);
    CHECK_NEAR(r.worst_numeric, R[7] * cos((double)x[7]), 1e-4 * fabs(R[7]));
    /* 5 samples of 20 (0, 5, 10, 14, 19): entry 7 is not among them, 19 is */
    o.max_entries = 5;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.checked == 5 && r.failed == 0);
    g[7] /= 1.02f;
    g[19] = -g[19];
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed == 1 && r.worst_index == 19);
    g[19] = -g[19];
    o.max_entries = 0;
    /* a gradient 1% too large everywhere fails where it is not tiny */
    for (i = 0; i < N; i++) g[i] *= 1.01f;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed >= N / 2);
    /* ... and passes when the loss is told that scale */
    o.scale = 1.01;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed == 0);
    o.scale = 1.0;
    /* double parameters */
    q.xf = NULL; q.xd = xd;
    r = tl_fd_compare_d(fd_self_loss, &q, xd, gd, N, &o);
    CHECK(r.failed == 0 && r.worst < 0.05);                /* double: only truncation error */
    gd[3] += 1e-3;
    r = tl_fd_compare_d(fd_self_loss, &q, xd, gd, N, &o);
    CHECK(r.failed == 1 && r.worst_index == 3);
    /* kinks: a ReLU whose input sits within h of 0 has no derivative to check */
    q.xf = x; q.xd = NULL; q.relu = 1;
    x[4] = 0.004f;
    x[11] = -0.003f;
    for (i = 0; i < N; i++) g[i] = x[i] > 0 ? R[i] : 0.0f;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);      /* without kink detection: both fail */
    CHECK(r.failed == 2);
    o.kink_fraction = 0.1;
    r = tl_fd_compare(fd_self_loss, &q, x, g, N, &o);
    CHECK(r.failed == 0 && r.kinks == 2 && r.checked == N - 2);
}

/* linear */
typedef struct { int M, K, N; float *x, *w, *b, *y, *R; } lin_prob;
static double lin_loss(void *p) {
    lin_prob *q = (lin_prob *)p;
    aes_linear_forward(ctx, q->y, q->x, q->w, q->b, q->M, q->K, q->N);
    return dot_d(q->y, q->R, (size_t)q->M * q->N);
}
static void test_linear_backward(void) {
    lin_prob q = {7, 13, 5, 0, 0, 0, 0, 0};
    float *dx, *dw, *db;
    tl_seed(1);
    q.x = fbuf(7 * 13); q.w = fbuf(5 * 13); q.b = fbuf(5); q.y = fbuf(7 * 5); q.R = fbuf(7 * 5);
    dx = fbuf(7 * 13); dw = fbuf(5 * 13); db = fbuf(5);
    tl_fill(q.x, 7 * 13, 1); tl_fill(q.w, 5 * 13, 1); tl_fill(q.b, 5, 1); tl_fill(q.R, 35, 1);
    lin_loss(&q);
    aes_linear_backward(ctx, dx, dw, db, q.R, q.x, q.w, 7, 13, 5);
    CHECK_GRAD("linear dx", lin_loss, &q, q.x, dx, 7 * 13, &FD);
    CHECK_GRAD("linear dw", lin_loss, &q, q.w, dw, 5 * 13, &FD);
    CHECK_GRAD("linear db", lin_loss, &q, q.b, db, 5, &FD);
    /* backward accumulates: a second call doubles the gradient */
    {
        float before = dw[3];
        aes_linear_backward(ctx, NULL, dw, NULL, q.R, q.x, q.w, 7, 13, 5);
        CHECK_NEAR(dw[3], 2 * before, 1e-5 * fabs(before) + 1e-6);
    }
    free(q.x); free(q.w); free(q.b); free(q.y); free(q.R); free(dx); free(dw); free(db);
}

/* layernorm */
typedef struct { int M, C; float *x, *w, *b, *y, *mean, *rstd, *R; } ln_prob;
static double ln_loss(void *p) {
    ln_prob *q = (ln_prob *)p;
    aes_layernorm_forward(ctx, q->y, q->mean, q->rstd, q->x, q->w, q->b, q->M, q->C, 1e-5f);
    return dot_d(q->y, q->R, (size_t)q->M * q->C);
}
static void test_layernorm_backward(void) {
    ln_prob q;
    float *dx, *dw, *db;
    int M = 5, C = 19;
    tl_seed(2);
    q.M = M; q.C = C;
    q.x = fbuf(M * C); q.w = fbuf(C); q.b = fbuf(C); q.y = fbuf(M * C); q.mean = fbuf(M); q.rstd = fbuf(M);
    q.R = fbuf(M * C);
    dx = fbuf(M * C); dw = fbuf(C); db = fbuf(C);
    tl_fill(q.x, M * C, 2); tl_fill(q.w, C, 1); tl_fill(q.b, C, 1); tl_fill(q.R, M * C, 1);
    ln_loss(&q);
    { /* forward against a double-precision definition */
        int c;
        double m = 0, v = 0;
        for (c = 0; c < C; c++) m += q.x[c];
        m /= C;
        for (c = 0; c < C; c++) v += (q.x[c] - m) * (q.x[c] - m);
        v /= C;
        CHECK_NEAR(q.y[4], (q.x[4] - m) / sqrt(v + 1e-5) * q.w[4] + q.b[4], 1e-5);
    }
    aes_layernorm_backward(ctx, dx, dw, db, q.R, q.x, q.w, q.mean, q.rstd, M, C);
    CHECK_GRAD("layernorm dx", ln_loss, &q, q.x, dx, M * C, &FD);
    CHECK_GRAD("layernorm dw", ln_loss, &q, q.w, dw, C, &FD);
    CHECK_GRAD("layernorm db", ln_loss, &q, q.b, db, C, &FD);
    free(q.x); free(q.w); free(q.b); free(q.y); free(q.mean); free(q.rstd); free(q.R); free(dx); free(dw); free(db);
}

/* softmax */
typedef struct { int M, C; float *x, *y, *R; } sm_prob;
static double sm_loss(void *p) {
    sm_prob *q = (sm_prob *)p;
    aes_softmax_forward(ctx, q->y, q->x, q->M, q->C);
    return dot_d(q->y, q->R, (size_t)q->M * q->C);
}
static void test_softmax_backward(void) {
    sm_prob q = {3, 11, 0, 0, 0};
    float *dx = fbuf(33);
    int c;
    double s = 0;
    tl_seed(3);
    q.x = fbuf(33); q.y = fbuf(33); q.R = fbuf(33);
    tl_fill(q.x, 33, 3); tl_fill(q.R, 33, 1);
    sm_loss(&q);
    for (c = 0; c < 11; c++) s += q.y[c];
    CHECK_NEAR(s, 1.0, 1e-6);
    aes_softmax_backward(ctx, dx, q.R, q.y, 3, 11);
    CHECK_GRAD("softmax dx", sm_loss, &q, q.x, dx, 33, &FD);
    /* large inputs do not overflow */
    q.x[0] = 1000.0f; q.x[1] = 999.0f;
    sm_loss(&q);
    CHECK(isfinite(q.y[0]) && q.y[0] > q.y[1]);
    free(q.x); free(q.y); free(q.R); free(dx);
}

/* attention */
typedef struct { int B, T, C, NH, causal; float *qkv, *y, *att, *R; } at_prob;
static double at_loss(void *p) {
    at_prob *q = (at_prob *)p;
    aes_attention_forward(ctx, q->y, q->att, q->qkv, q->B, q->T, q->C, q->NH, q->causal);
    return dot_d(q->y, q->R, (size_t)q->B * q->T * q->C);
}
static void attention_case(int causal) {
    at_prob q;
    int B = 2, T = 7, C = 12, NH = 3;
    size_t nq = (size_t)B * T * 3 * C, ny = (size_t)B * T * C;
    float *dqkv = fbuf(nq), *y2 = fbuf(ny);
    tl_seed(4 + causal);
    q.B = B; q.T = T; q.C = C; q.NH = NH; q.causal = causal;
    q.qkv = fbuf(nq); q.y = fbuf(ny); q.att = fbuf((size_t)B * NH * T * T); q.R = fbuf(ny);
    tl_fill(q.qkv, nq, 1); tl_fill(q.R, ny, 1);
    at_loss(&q);
    /* inference mode (att == NULL) gives the same output */
    aes_attention_forward(ctx, y2, NULL, q.qkv, B, T, C, NH, causal);
    CHECK(memcmp(y2, q.y, ny * sizeof(float)) == 0);
    if (causal) { /* the first query can only see itself: output = its own value */
        int d;
        for (d = 0; d < C / NH; d++) CHECK_NEAR(q.y[d], q.qkv[2 * C + d], 1e-6);
    }
    aes_attention_backward(ctx, dqkv, q.R, q.qkv, q.att, B, T, C, NH, causal);
    CHECK_GRAD(causal ? "attention dqkv (causal)" : "attention dqkv", at_loss, &q, q.qkv, dqkv, nq, &FD);
    free(q.qkv); free(q.y); free(q.att); free(q.R); free(dqkv); free(y2);
}
static void test_attention_backward(void) { attention_case(0); }
static void test_attention_causal_backward(void) { attention_case(1); }

/* activations */
typedef struct { int kind; size_t n; float *x, *y, *R; } act_prob;
static double act_loss(void *p) {
    act_prob *q = (act_prob *)p;
    if (q->kind == 0) aes_gelu_forward(ctx, q->y, q->x, q->n);
    else aes_quickgelu_forward(ctx, q->y, q->x, q->n);
    return dot_d(q->y, q->R, q->n);
}
static void test_activations_backward(void) {
    act_prob q = {0, 41, 0, 0, 0};
    float *dx = fbuf(41);
    tl_seed(6);
    q.x = fbuf(41); q.y = fbuf(41); q.R = fbuf(41);
    tl_fill(q.x, 41, 4); tl_fill(q.R, 41, 1);
    act_loss(&q);
    CHECK_NEAR(q.y[0], 0.5 * q.x[0] * (1 + erf(q.x[0] / sqrt(2.0))), 1e-6);
    aes_gelu_backward(ctx, dx, q.R, q.x, 41);
    CHECK_GRAD("gelu dx", act_loss, &q, q.x, dx, 41, &FD_ACT);
    q.kind = 1;
    memset(dx, 0, 41 * sizeof(float));
    act_loss(&q);
    CHECK_NEAR(q.y[0], q.x[0] / (1 + exp(-1.702 * q.x[0])), 1e-6);
    aes_quickgelu_backward(ctx, dx, q.R, q.x, 41);
    CHECK_GRAD("quickgelu dx", act_loss, &q, q.x, dx, 41, &FD_ACT);
    /* the two really differ (mixing them up changes CLIP's embeddings) */
    {
        float x = 1.0f, g, qg;
        aes_gelu_forward(ctx, &g, &x, 1);
        aes_quickgelu_forward(ctx, &qg, &x, 1);
        CHECK(fabsf(g - qg) > 1e-3f);
    }
    free(q.x); free(q.y); free(q.R); free(dx);
}

static void test_residual(void) {
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {5, 4, 3, 2, 1}, o[5], da[5] = {0}, db[5] = {1, 1, 1, 1, 1};
    int i;
    aes__residual_forward(o, a, b, 5);
    for (i = 0; i < 5; i++) CHECK(o[i] == 6.0f);
    aes__add_inplace(da, a, 5);
    aes__add_inplace(db, a, 5);
    for (i = 0; i < 5; i++) CHECK(da[i] == a[i] && db[i] == 1 + a[i]);
}

/* patch embedding */
typedef struct { int B, Cin, H, W, P, Cout; float *img, *w, *b, *y, *R; } pe_prob;
static double pe_loss(void *p) {
    pe_prob *q = (pe_prob *)p;
    aes_patch_embed_forward(ctx, q->y, q->img, q->w, q->b, q->B, q->Cin, q->H, q->W, q->P, q->Cout);
    return dot_d(q->y, q->R, (size_t)q->B * (q->H / q->P) * (q->W / q->P) * q->Cout);
}
static void test_patch_embed(void) {
    pe_prob q = {2, 3, 8, 12, 4, 5, 0, 0, 0, 0, 0};
    size_t nimg = 2 * 3 * 8 * 12, nw = 5 * 3 * 4 * 4, ny = 2 * 6 * 5;
    float *dimg = fbuf(nimg), *dw = fbuf(nw), *db = fbuf(5);
    tl_seed(7);
    q.img = fbuf(nimg); q.w = fbuf(nw); q.b = fbuf(5); q.y = fbuf(ny); q.R = fbuf(ny);
    tl_fill(q.img, nimg, 1); tl_fill(q.w, nw, 0.5f); tl_fill(q.b, 5, 1); tl_fill(q.R, ny, 1);
    CHECK_OK(ctx, aes_patch_embed_forward(ctx, q.y, q.img, q.w, q.b, 2, 3, 8, 12, 4, 5));
    { /* one output by the convolution's definition: batch 1, patch (1, 2), channel 3 */
        double s = q.b[3];
        int c, ky, kx;
        for (c = 0; c < 3; c++)
            for (ky = 0; ky < 4; ky++)
                for (kx = 0; kx < 4; kx++)
                    s += (double)q.w[((3 * 3 + c) * 4 + ky) * 4 + kx] *
                         q.img[((1 * 3 + c) * 8 + 4 + ky) * 12 + 8 + kx];
        CHECK_NEAR(q.y[(1 * 6 + 1 * 3 + 2) * 5 + 3], s, 1e-5);
    }
    CHECK_OK(ctx, aes_patch_embed_backward(ctx, dimg, dw, db, q.R, q.img, q.w, 2, 3, 8, 12, 4, 5));
    CHECK_GRAD("patch embed dimg", pe_loss, &q, q.img, dimg, nimg, &FD);
    CHECK_GRAD("patch embed dw", pe_loss, &q, q.w, dw, nw, &FD);
    CHECK_GRAD("patch embed db", pe_loss, &q, q.b, db, 5, &FD);
    CHECK(aes_patch_embed_forward(ctx, q.y, q.img, q.w, q.b, 1, 3, 3, 3, 4, 5) == AES_ERR_SHAPE);
    free(q.img); free(q.w); free(q.b); free(q.y); free(q.R); free(dimg); free(dw); free(db);
}

/* embedding */
static void test_embedding(void) {
    int32_t tok[6] = {3, 0, 9, 3, 3, 1};
    float wte[10 * 4], wpe[3 * 4], out[6 * 4], R[6 * 4], dwte[40] = {0}, dwpe[12] = {0};
    int i;
    tl_seed(8);
    tl_fill(wte, 40, 1); tl_fill(wpe, 12, 1); tl_fill(R, 24, 1);
    CHECK_OK(ctx, aes_embedding_forward(ctx, out, tok, wte, wpe, 2, 3, 4, 10));
    CHECK(out[(1 * 3 + 2) * 4 + 1] == wte[1 * 4 + 1] + wpe[2 * 4 + 1]);
    aes_embedding_backward(dwte, dwpe, R, tok, 2, 3, 4);
    /* token 3 appears at (0,0), (1,0), (1,1): its gradient is the sum */
    CHECK_NEAR(dwte[3 * 4 + 2], R[0 * 4 + 2] + R[3 * 4 + 2] + R[4 * 4 + 2], 1e-6);
    CHECK_NEAR(dwpe[1 * 4 + 0], R[1 * 4] + R[4 * 4], 1e-6);
    for (i = 0; i < 4; i++) CHECK(dwte[2 * 4 + i] == 0.0f);
    tok[4] = 10;
    CHECK(aes_embedding_forward(ctx, out, tok, wte, wpe, 2, 3, 4, 10) == AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(ctx), "outside the vocabulary") != NULL);
    tok[4] = -1;
    CHECK(aes_embedding_forward(ctx, out, tok, wte, wpe, 2, 3, 4, 10) == AES_ERR_INVALID_ARG);
}

/* l2norm */
typedef struct { int M, C; float *x, *y, *n, *R; } l2_prob;
static double l2_loss(void *p) {
    l2_prob *q = (l2_prob *)p;
    aes_l2norm_forward(q->y, q->n, q->x, q->M, q->C, 1e-12f);
    return dot_d(q->y, q->R, (size_t)q->M * q->C);
}
static void test_l2norm(void) {
    l2_prob q = {4, 9, 0, 0, 0, 0};
    float *dx = fbuf(36);
    tl_seed(9);
    q.x = fbuf(36); q.y = fbuf(36); q.n = fbuf(4); q.R = fbuf(36);
    tl_fill(q.x, 36, 1); tl_fill(q.R, 36, 1);
    l2_loss(&q);
    CHECK_NEAR(dot_d(q.y, q.y, 9), 1.0, 1e-6);
    aes_l2norm_backward(dx, q.R, q.y, q.n, 4, 9);
    CHECK_GRAD("l2norm dx", l2_loss, &q, q.x, dx, 36, &FD);
    free(q.x); free(q.y); free(q.n); free(q.R); free(dx);
}

/* cross-entropy */
typedef struct { int M, C; float *x, *p; int32_t *t; } ce_prob;
static double ce_loss(void *p) {
    ce_prob *q = (ce_prob *)p;
    return aes_cross_entropy_forward(q->p, q->x, q->t, q->M, q->C);
}
static void test_cross_entropy(void) {
    int32_t t[3] = {2, 0, 6};
    ce_prob q = {3, 7, 0, 0, t};
    float *dx = fbuf(21), lsm[21];
    double l;
    int c;
    tl_seed(10);
    q.x = fbuf(21); q.p = fbuf(21);
    tl_fill(q.x, 21, 3);
    l = ce_loss(&q);
    aes_log_softmax_forward(lsm, q.x, 3, 7);
    CHECK_NEAR(l, -(lsm[2] + lsm[7] + lsm[20]) / 3.0, 1e-5);
    for (c = 0; c < 7; c++) CHECK_NEAR(exp(lsm[c]), q.p[c], 1e-6);
    aes_cross_entropy_backward(dx, q.p, t, 3, 7, 1.0f);
    CHECK_GRAD("cross-entropy dlogits", ce_loss, &q, q.x, dx, 21, &FD);
    free(q.x); free(q.p); free(dx);
}

static void test_mse(void) {
    float p[4] = {1, 2, 3, 4}, t[4] = {1, 0, 3, 5}, d[4] = {0};
    CHECK_NEAR(aes_mse_forward(p, t, 4), (0 + 4 + 0 + 1) / 4.0, 1e-7);
    aes_mse_backward(d, p, t, 4, 1.0f);
    CHECK_NEAR(d[1], 2 * 2 / 4.0, 1e-7);
    CHECK_NEAR(d[3], 2 * -1 / 4.0, 1e-7);
}

/* ---- GEMM, SIMD paths and threads ------------------------------------------------ */
static void gemm_ref(aes_trans ta, aes_trans tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    int i, j, p;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = 0;
            for (p = 0; p < K; p++)
                s += (double)(ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                     (tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
            C[(size_t)i * ldc + j] = (float)(alpha * s + (beta == 0.0f ? 0.0 : beta * C[(size_t)i * ldc + j]));
        }
}

static void test_gemm_all_paths(void) {
    static const int sizes[][3] = {{1, 1, 1}, {3, 17, 63}, {17, 3, 257}, {63, 65, 5}, {1, 257, 63}, {33, 31, 129}};
    aes_isa best = aes__isa_best(), isa;
    size_t s;
    int ta, tb;
    tl_seed(11);
    for (isa = AES_ISA_SCALAR; isa <= best; isa = (aes_isa)(isa + 1)) {
        if (aes_isa_set(ctx, isa) != AES_OK) continue;
        for (s = 0; s < sizeof sizes / sizeof *sizes; s++)
            for (ta = 0; ta < 2; ta++)
                for (tb = 0; tb < 2; tb++) {
                    int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                    size_t na = (size_t)(ta ? K : M) * lda + 1, nb = (size_t)(tb ? N : K) * ldb + 1,
                           nc = (size_t)M * ldc + 1;
                    float *A = fbuf(na), *B = fbuf(nb), *C = fbuf(nc), *R = fbuf(nc);
                    size_t i;
                    double worst = 0;
                    tl_fill(A, na, 1); tl_fill(B, nb, 1); tl_fill(C, nc, 1);
                    memcpy(R, C, nc * sizeof(float));
                    /* +1: unaligned pointers */
                    aes_gemm(ctx, (aes_trans)ta, (aes_trans)tb, M, N, K, 0.75f, A + 1, lda, B + 1, ldb, 0.5f, C + 1, ldc);
                    gemm_ref((aes_trans)ta, (aes_trans)tb, M, N, K, 0.75f, A + 1, lda, B + 1, ldb, 0.5f, R + 1, ldc);
                    for (i = 0; i < nc; i++) worst = fmax(worst, fabs(C[i] - R[i]));
                    CHECK_MSG(worst <= 1e-5 * sqrt((double)K) * 4, "gemm %s ta=%d tb=%d %dx%dx%d: max err %.3g",
                              aes__isa_name(isa), ta, tb, M, N, K, worst);
                    /* beta = 0 ignores NaN in C */
                    for (i = 0; i < nc; i++) C[i] = NAN;
                    aes_gemm(ctx, (aes_trans)ta, (aes_trans)tb, M, N, K, 1.0f, A + 1, lda, B + 1, ldb, 0.0f, C + 1, ldc);
                    CHECK_MSG(isfinite(C[1]) && isfinite(C[1 + (size_t)(M - 1) * ldc + N - 1]),
                              "gemm beta=0 read C (%s)", aes__isa_name(isa));
                    free(A); free(B); free(C); free(R);
                }
    }
    aes_isa_set(ctx, best);
}

static void test_dot_all_paths(void) {
    static const size_t sizes[] = {0, 1, 3, 15, 16, 17, 31, 63, 257, 1000};
    float *a = fbuf(1002), *b = fbuf(1002);
    aes_isa best = aes__isa_best(), isa;
    size_t s;
    tl_seed(12);
    tl_fill(a, 1002, 1); tl_fill(b, 1002, 1);
    for (isa = AES_ISA_SCALAR; isa <= best; isa = (aes_isa)(isa + 1)) {
        if (aes_isa_set(ctx, isa) != AES_OK) continue;
        for (s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            double ref = dot_d(a + 1, b + 1, sizes[s]);
            CHECK_NEAR(aes_dot(ctx, a + 1, b + 1, sizes[s]), ref, 1e-5 * (1 + sqrt((double)sizes[s])));
        }
    }
    aes_isa_set(ctx, best);
    free(a); free(b);
}

/* Attention and layernorm through every ISA: same answer as scalar. */
static void test_kernels_simd_vs_scalar(void) {
    int B = 2, T = 17, C = 63 * 3, NH = 3;
    size_t nq = (size_t)B * T * 3 * C, ny = (size_t)B * T * C;
    float *qkv = fbuf(nq + 1), *y0 = fbuf(ny), *y1 = fbuf(ny), *R = fbuf(ny), *d0 = fbuf(nq), *d1 = fbuf(nq),
          *att = fbuf((size_t)B * NH * T * T);
    aes_isa best = aes__isa_best(), isa;
    size_t i;
    tl_seed(13);
    tl_fill(qkv, nq + 1, 1); tl_fill(R, ny, 1);
    aes_isa_set(ctx, AES_ISA_SCALAR);
    aes_attention_forward(ctx, y0, att, qkv + 1, B, T, C, NH, 1);
    aes_attention_backward(ctx, d0, R, qkv + 1, att, B, T, C, NH, 1);
    for (isa = AES_ISA_NEON; isa <= best; isa = (aes_isa)(isa + 1)) {
        double wy = 0, wd = 0;
        if (aes_isa_set(ctx, isa) != AES_OK) continue;
        memset(d1, 0, nq * sizeof(float));
        aes_attention_forward(ctx, y1, att, qkv + 1, B, T, C, NH, 1);
        aes_attention_backward(ctx, d1, R, qkv + 1, att, B, T, C, NH, 1);
        for (i = 0; i < ny; i++) wy = fmax(wy, fabs(y0[i] - y1[i]));
        for (i = 0; i < nq; i++) wd = fmax(wd, fabs(d0[i] - d1[i]));
        CHECK_MSG(wy < 1e-5 && wd < 1e-4, "attention %s vs scalar: %.3g / %.3g", aes__isa_name(isa), wy, wd);
    }
    aes_isa_set(ctx, best);
    free(qkv); free(y0); free(y1); free(R); free(d0); free(d1); free(att);
}

/* The same computation with 1, 2 and 3 threads gives the same bits. */
static void test_threads_bit_identical(void) {
    int M = 67, K = 129, N = 71, n;
    float *x = fbuf((size_t)M * K), *w = fbuf((size_t)N * K), *b = fbuf(N), *y[3], *dx[3], *dw[3];
    int B = 3, T = 13, C = 48, NH = 4;
    float *qkv = fbuf((size_t)B * T * 3 * C), *ao[3], *att = fbuf((size_t)B * NH * T * T);
#ifdef AES_NO_THREADS
    CHECK(aes_threads_set(ctx, 2) == AES_ERR_UNSUPPORTED);
    tl_skip("built with AES_NO_THREADS");
    free(x); free(w); free(b); free(qkv); free(att);
    return;
#endif
    tl_seed(14);
    tl_fill(x, (size_t)M * K, 1); tl_fill(w, (size_t)N * K, 1); tl_fill(b, N, 1);
    tl_fill(qkv, (size_t)B * T * 3 * C, 1);
    for (n = 0; n < 3; n++) {
        CHECK_OK(ctx, aes_threads_set(ctx, n + 1));
        y[n] = fbuf((size_t)M * N); dx[n] = fbuf((size_t)M * K); dw[n] = fbuf((size_t)N * K);
        ao[n] = fbuf((size_t)B * T * C);
        aes_linear_forward(ctx, y[n], x, w, b, M, K, N);
        aes_linear_backward(ctx, dx[n], dw[n], NULL, y[n], x, w, M, K, N);
        aes_attention_forward(ctx, ao[n], att, qkv, B, T, C, NH, 0);
    }
    for (n = 1; n < 3; n++) {
        CHECK(memcmp(y[0], y[n], sizeof(float) * (size_t)M * N) == 0);
        CHECK(memcmp(dx[0], dx[n], sizeof(float) * (size_t)M * K) == 0);
        CHECK(memcmp(dw[0], dw[n], sizeof(float) * (size_t)N * K) == 0);
        CHECK(memcmp(ao[0], ao[n], sizeof(float) * (size_t)B * T * C) == 0);
    }
    for (n = 0; n < 3; n++) { free(y[n]); free(dx[n]); free(dw[n]); free(ao[n]); }
    aes_threads_set(ctx, 1);
    free(x); free(w); free(b); free(qkv); free(att);
}

/* ---- half precision ------------------------------------------------------------------ */
static void test_f16_exhaustive(void) {
    /* every half value converts to float and back to itself (NaNs stay NaN) */
    uint32_t h;
    int bad = 0;
    uint16_t all[65536], back[65536];
    float f[65536];
    aes_isa best = aes__isa_best(), isa;
    for (h = 0; h < 65536; h++) {
        float v = aes__f16_to_f32_1((uint16_t)h);
        uint16_t r = aes__f32_to_f16_1(v);
        int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (is_nan ? !isnan(v) : r != h) bad++;
        all[h] = (uint16_t)h;
    }
    CHECK_MSG(bad == 0, "%d half values do not round-trip", bad);
    CHECK(aes__f16_to_f32_1(0x3c00) == 1.0f && aes__f16_to_f32_1(0xc000) == -2.0f);
    CHECK(aes__f16_to_f32_1(0x0001) == 5.9604644775390625e-8f);
    CHECK(aes__f32_to_f16_1(65520.0f) == 0x7c00 && aes__f32_to_f16_1(65504.0f) == 0x7bff);
    CHECK(aes__f32_to_f16_1(1.0f + 1.0f / 2048) == 0x3c00);           /* tie to even: down */
    CHECK(aes__f32_to_f16_1(1.0f + 3.0f / 2048) == 0x3c02);           /* tie to even: up */
    CHECK(aes__f32_to_f16_1(2.98023224e-8f) == 0x0000);               /* half of the smallest subnormal */
    CHECK(aes__f32_to_f16_1(2.98023224e-8f * 1.5f) == 0x0001);
    /* SIMD paths equal the scalar one for every value (non-NaN) */
    for (isa = AES_ISA_SCALAR; isa <= best; isa = (aes_isa)(isa + 1)) {
        if (aes_isa_set(ctx, isa) != AES_OK) continue;
        aes_f16_to_f32(ctx, f, all, 65536);
        aes_f32_to_f16(ctx, back, f, 65536);
        bad = 0;
        for (h = 0; h < 65536; h++) {
            int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
            if (is_nan ? !isnan(f[h]) : (back[h] != h || f[h] != aes__f16_to_f32_1((uint16_t)h))) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %d half values differ", aes__isa_name(isa), bad);
    }
    aes_isa_set(ctx, best);
}

static void test_bf16(void) {
    float v[7] = {1.0f, -3.5f, 1.00390625f, 1.01171875f, 3.0e38f, INFINITY, NAN}, r[7];
    uint16_t h[7];
    aes_f32_to_bf16(ctx, h, v, 7);
    aes_bf16_to_f32(ctx, r, h, 7);
    CHECK(r[0] == 1.0f && r[1] == -3.5f);
    CHECK(h[2] == 0x3f80);                 /* 1 + 2^-8 is a tie: to even (down) */
    CHECK(h[3] == 0x3f82);                 /* 1 + 3*2^-8 is a tie: to even (up) */
    CHECK(isinf(r[5]) && isnan(r[6]));
    CHECK(fabsf(r[4] - 3.0e38f) / 3.0e38f < 1e-2f);
}

/* ---- context and errors ------------------------------------------------------------------ */
static void test_context_errors(void) {
    aes_ctx *c = aes_ctx_create();
    void *p;
    CHECK(c != NULL);
    CHECK(aes_last_error(c)[0] == 0);
    CHECK(aes_threads_set(c, 0) == AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(c), "thread count") != NULL);
    CHECK(aes_limit_set(c, AES_LIMIT_ALLOC_BYTES, 1000) == AES_OK);
    p = aes_alloc(c, 10, 200);
    CHECK(p == NULL && aes_last_status(c) == AES_ERR_LIMIT);
    p = aes_alloc(c, (size_t)-1, 16);
    CHECK(p == NULL && aes_last_status(c) == AES_ERR_LIMIT);
    p = aes_alloc(c, 10, 10);
    CHECK(p != NULL && ((uintptr_t)p & 63) == 0);
    aes_free(p);
    aes_clear_error(c);
    CHECK(aes_last_status(c) == AES_OK);
    CHECK(strcmp(aes_status_name(AES_ERR_FORMAT), "bad format") == 0);
    CHECK(aes_isa_set(c, AES_ISA_SCALAR) == AES_OK && aes_isa_get(c) == AES_ISA_SCALAR);
    aes_ctx_free(c);
    aes_ctx_free(NULL); /* harmless */
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    RUN(test_fd_checker);
    RUN(test_linear_backward);
    RUN(test_layernorm_backward);
    RUN(test_softmax_backward);
    RUN(test_attention_backward);
    RUN(test_attention_causal_backward);
    RUN(test_activations_backward);
    RUN(test_residual);
    RUN(test_patch_embed);
    RUN(test_embedding);
    RUN(test_l2norm);
    RUN(test_cross_entropy);
    RUN(test_mse);
    RUN(test_gemm_all_paths);
    RUN(test_dot_all_paths);
    RUN(test_kernels_simd_vs_scalar);
    RUN(test_threads_bit_identical);
    RUN(test_f16_exhaustive);
    RUN(test_bf16);
    RUN(test_context_errors);
    aes_ctx_free(ctx);
    return tl_report();
}
