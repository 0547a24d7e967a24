/* test_elta.c - labels, IAA losses and metrics, ELTA's three parts, heads and
 * their training (aesalign.h).
 *
 *   - every backward against central finite differences (loss summed in
 *     double), relative error printed with TL_VERBOSE=1;
 *   - losses at hand-computed values and at torch float64 autograd values
 *     (tests/fixtures/elta/losses.txt, tools/elta_ref.py);
 *   - metrics at numpy/scipy values (tests/fixtures/elta/metrics.txt);
 *   - the mixup sampler's measured anchor / partner / bin frequencies
 *     against the formulas;
 *   - a small end-to-end training on a fixed seed where ELTA must lower the
 *     tail MAE. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "../tools/elta_synth.h"
#include "testlib.h"

/* Test helpers built from the library's internal pieces. */
/* The probabilities the sampler draws with: anchor[B] = P(i)
 * of the chosen anchor rule; partner[B] = P(j | i) for a given anchor i
 * (partner[i] = 0; all 0 when i has no eligible partner). */
static aes_status elta_anchor_probs(aes_ctx *ctx, float *anchor, const float *scores,
                                    const float *anchor_weight, int B,
                                    const aes_elta_mixup_cfg *cfg) {
    double *w, total = 0.0;
    int i;
    if (!anchor || !scores || !cfg || B < 1) return aes__fail(ctx, AES_ERR_INVALID_ARG, "ELTA anchor probabilities: bad argument");
    w = (double *)aes_alloc(ctx, (size_t)B, sizeof(double));
    if (!w) return aes_last_status(ctx);
    aes__elta_anchor_logw(w, scores, anchor_weight, B, cfg);
    aes__elta_exp_shift(w, B);
    for (i = 0; i < B; i++) total += w[i];
    for (i = 0; i < B; i++) anchor[i] = total > 0.0 ? (float)(w[i] / total) : 0.0f;
    aes_free(w);
    return AES_OK;
}

static void elta_partner_probs(float *partner, const float *scores, int B, int i,
                               const aes_elta_mixup_cfg *cfg) {
    double w[256], *pw = w, total = 0.0;
    int j;
    if (B > 256) pw = (double *)AES_MALLOC(sizeof(double) * (size_t)B);
    if (!pw) { for (j = 0; j < B; j++) partner[j] = 0.0f; return; }
    aes__elta_partner_w(pw, scores, B, i, cfg);
    for (j = 0; j < B; j++) total += pw[j];
    for (j = 0; j < B; j++) partner[j] = total > 0.0 ? (float)(pw[j] / total) : 0.0f;
    if (pw != w) AES_FREE(pw);
}

/* The head trainer's inner step on its own: loss and gradients
 * of a head on R rows, the task loss (MSE on score[R] for a score head; EMD
 * on softmax(logits) vs hist[R, 10] for a hist10 head) plus sim_weight *
 * L_sim on hidden layer sim_layer (0: the last one; weight 0 = off; MLP
 * only).  ACCUMULATES into dw[l] ([dim[l+1], dim[l]]) and db[l]
 * ([dim[l+1]]) for each layer l; the task loss goes to *task_loss and L_sim
 * to *sim_loss (either may be NULL). */
static aes_status head_loss_grad(aes_ctx *ctx, const aes_head *head, float **dw, float **db,
                                 const float *x, const float *hist, const float *score, int R,
                                 float sim_weight, int sim_layer, double *task_loss,
                                 double *sim_loss) {
    aes__elta_ws w;
    double loss, sim = 0.0;
    aes_status st = aes__elta_head_check(ctx, head, "head loss");
    if (st != AES_OK) return st;
    if (!dw || !db || !x || !score || R < 1 || (head->output == AES_HEAD_HIST10 && !hist))
        return aes__fail(ctx, AES_ERR_INVALID_ARG, "head loss: bad argument");
    if ((st = aes__elta_ws_alloc(ctx, &w, head, R, sim_weight != 0.0f && head->nlayers > 1)) != AES_OK) return st;
    memcpy(w.act[0], x, sizeof(float) * (size_t)R * head->dim[0]);
    loss = aes__elta_loss_grad(ctx, &w, head, R, hist, score, sim_weight, sim_layer, dw, db, &sim);
    aes__elta_ws_free(&w);
    if (task_loss) *task_loss = loss;
    if (sim_loss) *sim_loss = sim;
    return AES_OK;
}
#include <time.h>

static aes_ctx *ctx;

static float *fbuf(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

static int verbose(void) { return getenv("TL_VERBOSE") != NULL; }

/* ---- finite differences ------------------------------------------------------
 * CHECK_GRAD (testlib.h) against central differences of a loss summed in
 * double: |diff| <= rtol |numeric| + floor x the tensor's largest |gradient|
 * (float rounding in a float forward pass puts an absolute noise on the
 * numeric slope that follows the tensor's scale; an entry far below it only
 * measures that noise), and entries where a ReLU switches inside
 * [x - h, x + h] skipped, at most one in ten. */
static tl_fd_opts elta_fd(double h, double rtol, double floor_of_max) {
    tl_fd_opts o = tl_fd_default();
    o.h = h;
    o.rtol = rtol;
    o.atol = 1e-9;
    o.atol_of_max = floor_of_max;
    o.kink_fraction = 0.1;
    return o;
}

/* ============================================================================
 *  Labels
 * ========================================================================= */

static void test_score_bins(void) {
    static const float s[] = {1.0f, 1.49f, 1.5f, 2.49f, 5.0f, 5.5f, 9.49f, 9.5f, 10.0f, 0.2f, 12.0f};
    static const int want[] = {0, 0, 1, 1, 4, 5, 8, 9, 9, 0, 9};
    int i, counts[10];
    for (i = 0; i < 11; i++) CHECK_MSG(aes__score_bin(s[i]) == want[i], "bin(%g) = %d, want %d", s[i], aes__score_bin(s[i]), want[i]);
    CHECK(aes__score_bin(NAN) == 0);
    aes_score_bin_counts(s, 11, counts);
    CHECK(counts[0] == 3 && counts[1] == 2 && counts[9] == 3 && counts[4] == 1);
}

static void test_bin_groups(void) {
    /* max 100: head >= 50, tail < 20 */
    static const int counts[10] = {0, 3, 19, 20, 100, 50, 49, 10, 1, 0};
    static const int want[10] = {2, 2, 2, 1, 0, 0, 1, 2, 2, 2};
    int g[10], k;
    aes__bin_groups(counts, 0, 0, g);
    for (k = 0; k < 10; k++) CHECK_MSG(g[k] == want[k], "bin %d group %d want %d", k + 1, g[k], want[k]);
    aes__bin_groups(counts, 0.9f, 0.05f, g); /* stricter head, looser tail */
    CHECK(g[4] == AES_BIN_HEAD && g[5] == AES_BIN_MEDIUM && g[1] == AES_BIN_TAIL && g[2] == AES_BIN_MEDIUM);
}

static void test_hist_mean(void) {
    float h[10] = {0, 0, 0, 0, 1, 1, 0, 0, 0, 0};   /* scores 5 and 6 */
    float c[10] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 3};   /* (1 + 30) / 4 */
    float z[10] = {0};
    CHECK_NEAR(aes__hist_mean(h), 5.5, 1e-6);
    CHECK_NEAR(aes__hist_mean(c), 7.75, 1e-6);
    CHECK_NEAR(aes__hist_mean(z), 0.0, 0);
}

static void test_csv_labels(void) {
    aes_labels L;
    const char *a = "\xEF\xBB\xBFpath,score\r\n\"img,1.jpg\",5.5\r\nimg2.jpg, 7.25 \r\n\r\n";
    const char *b = "id,h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n1,0,0,0,0,1,1,0,0,0,0\n2,1,0,0,0,0,0,0,0,0,3\n";
    const char *c = "H10,h9,h8,h7,h6,h5,h4,h3,h2,h1,Score\n2,0,0,0,0,0,0,0,0,2,4.0\n";
    CHECK_OK(ctx, aes_labels_parse_csv(ctx, &L, a, strlen(a), "a.csv"));
    CHECK(L.n == 2 && !L.has_hist && L.hist == NULL && L.paths != NULL);
    if (L.n == 2) { CHECK_NEAR(L.score[0], 5.5, 0); CHECK_NEAR(L.score[1], 7.25, 0); }
    if (L.n == 2 && L.paths) CHECK(!strcmp(L.paths[0], "img,1.jpg") && !strcmp(L.paths[1], "img2.jpg"));
    aes_labels_free(&L);
    CHECK_OK(ctx, aes_labels_parse_csv(ctx, &L, b, strlen(b), "b.csv"));
    CHECK(L.n == 2 && L.has_hist);
    if (L.n == 2 && L.hist) {
        CHECK_NEAR(L.score[0], 5.5, 1e-6);
        CHECK_NEAR(L.score[1], 7.75, 1e-6);
        CHECK_NEAR(L.hist[4], 0.5, 1e-7);
        CHECK_NEAR(L.hist[10 + 9], 0.75, 1e-7);
    }
    aes_labels_free(&L);
    /* columns in any order and case; an explicit score is kept as given */
    CHECK_OK(ctx, aes_labels_parse_csv(ctx, &L, c, strlen(c), "c.csv"));
    CHECK(L.n == 1 && L.has_hist);
    if (L.n == 1 && L.hist) {
        CHECK_NEAR(L.score[0], 4.0, 0);
        CHECK_NEAR(L.hist[0], 0.5, 1e-7);
        CHECK_NEAR(L.hist[9], 0.5, 1e-7);
    }
    aes_labels_free(&L);
}

static void test_csv_errors(void) {
    static const char *bad[] = {
        "",                                           /* no header */
        "path,value\nx,1\n",                          /* no score / h columns */
        "h1,h2,h3\n1,2,3\n",                          /* some of h1..h10 */
        "score\nfive\n",                              /* not a number */
        "score\nnan\n",                               /* not finite */
        "a,score\nx\n",                               /* short row */
        "h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n0,0,0,0,0,0,0,0,0,0\n", /* no votes */
        "h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n0,0,0,-1,5,0,0,0,0,0\n", /* negative */
        "score\n",                                    /* header only */
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        aes_labels L;
        aes_status st = aes_labels_parse_csv(ctx, &L, bad[i], strlen(bad[i]), "bad.csv");
        CHECK_MSG(st == AES_ERR_FORMAT, "case %d: status %d (%s)", (int)i, (int)st, aes_last_error(ctx));
        CHECK(L.n == 0 && L.score == NULL);
        CHECK_MSG(strstr(aes_last_error(ctx), "bad.csv") != NULL, "message names the file: %s", aes_last_error(ctx));
    }
}

static void test_ava_labels(void) {
    aes_labels L;
    const char *ok = "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\n"
                     "2 953958 10 7 15 33 30 13 5 2 1 2 1 22 1396\n";
    const char *short_line = "1 953619 0 1 5 17 38 36 15 6 5 1 1 22\n";
    const char *junk = "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 x\n";
    CHECK_OK(ctx, aes_labels_parse_ava(ctx, &L, ok, strlen(ok), "AVA.txt"));
    CHECK(L.n == 2 && L.has_hist && L.ids);
    if (L.n == 2 && L.ids) {
        /* image 953619: (2*1 + 3*5 + 4*17 + 5*38 + 6*36 + 7*15 + 8*6 + 9*5 + 10*1) / 124 */
        CHECK(L.ids[0] == 953619 && L.ids[1] == 953958);
        CHECK_NEAR(L.score[0], 699.0 / 124.0, 1e-5);
        CHECK_NEAR(L.hist[4], 38.0 / 124.0, 1e-6);
    }
    aes_labels_free(&L);
    CHECK(aes_labels_parse_ava(ctx, &L, short_line, strlen(short_line), "AVA.txt") == AES_ERR_FORMAT);
    CHECK(aes_labels_parse_ava(ctx, &L, junk, strlen(junk), "AVA.txt") == AES_ERR_FORMAT);
}

/* ============================================================================
 *  Losses
 * ========================================================================= */

static void test_emd_hand(void) {
    float p[20] = {0}, t[20] = {0}, per[2];
    p[0] = 1;           t[9] = 1;            /* CDF gap 1 on 9 of 10 bins: sqrt(0.9) */
    p[10] = 0.5f; p[11] = 0.5f; t[11] = 1;   /* gap 0.5 on bin 1 only: sqrt(0.025) */
    CHECK_NEAR(aes_emd_forward(p, t, 1, NULL), sqrt(0.9), 1e-6);
    CHECK_NEAR(aes_emd_forward(p, t, 2, per), 0.5 * (sqrt(0.9) + sqrt(0.025)), 1e-6);
    CHECK_NEAR(per[1], sqrt(0.025), 1e-7);
    CHECK_NEAR(aes_emd_forward(t, t, 2, NULL), 0.0, 0);
}

/* Fixture reader: finds "key" at the start of a line and reads n numbers. */
static int fx_read(FILE *f, const char *key, double *v, int n) {
    char word[64];
    int i;
    while (fscanf(f, "%63s", word) == 1) {
        if (word[0] == '#') { int c; while ((c = fgetc(f)) != '\n' && c != EOF) {} continue; }
        if (strcmp(word, key) == 0) {
            for (i = 0; i < n; i++) {
                char num[64];
                if (fscanf(f, "%63s", num) != 1) return 0;
                v[i] = strcmp(num, "nan") == 0 ? NAN : strtod(num, NULL);
            }
            return 1;
        }
    }
    return 0;
}

/* The value of "expect <key> <value>" in a fixture (NaN when absent or nan). */
static double fx_expect(FILE *f, const char *key) {
    char w[64], k[64], v[64];
    rewind(f);
    while (fscanf(f, "%63s", w) == 1)
        if (!strcmp(w, "expect") && fscanf(f, "%63s %63s", k, v) == 2 && !strcmp(k, key))
            return strcmp(v, "nan") ? strtod(v, NULL) : NAN;
    return NAN;
}

typedef struct { int B; float *z, *p, *t; } emd_prob;
/* EMD through softmax, all in double (independent of the library's forward). */
static double emd_loss(void *q) {
    emd_prob *e = (emd_prob *)q;
    double total = 0;
    int b, k;
    for (b = 0; b < e->B; b++) {
        double mx = -1e300, sum = 0, p[10], cdf = 0, ss = 0;
        for (k = 0; k < 10; k++) mx = fmax(mx, e->z[b * 10 + k]);
        for (k = 0; k < 10; k++) { p[k] = exp((double)e->z[b * 10 + k] - mx); sum += p[k]; }
        for (k = 0; k < 10; k++) {
            cdf += p[k] / sum - e->t[b * 10 + k];
            ss += cdf * cdf;
        }
        total += sqrt(ss / 10);
    }
    return total / e->B;
}

static void test_emd_reference_and_fd(void) {
    FILE *f = fopen("tests/fixtures/elta/losses.txt", "r");
    double v[10], loss;
    float z[50], p[50], t[50], dp[50], dz[50], gref[50];
    emd_prob e;
    tl_fd_opts FDO = elta_fd(1e-2, 4e-3, 2e-5);
    int b, k, B;
    if (!f) { tl_skip("tests/fixtures/elta/losses.txt missing (run from the repo root)"); return; }
    CHECK(fx_read(f, "emd", v, 1));
    B = (int)v[0];
    CHECK(B == 5);
    for (b = 0; b < 5; b++) { CHECK(fx_read(f, "logits", v, 10)); for (k = 0; k < 10; k++) z[b * 10 + k] = (float)v[k]; }
    for (b = 0; b < 5; b++) { CHECK(fx_read(f, "target", v, 10)); for (k = 0; k < 10; k++) t[b * 10 + k] = (float)v[k]; }
    CHECK(fx_read(f, "loss", &loss, 1));
    for (b = 0; b < 5; b++) { CHECK(fx_read(f, "grad", v, 10)); for (k = 0; k < 10; k++) gref[b * 10 + k] = (float)v[k]; }
    fclose(f);
    aes_softmax_forward(ctx, p, z, 5, 10);
    CHECK_NEAR(aes_emd_forward(p, t, 5, NULL), loss, 2e-6);
    memset(dp, 0, sizeof dp); memset(dz, 0, sizeof dz);
    aes_emd_backward(dp, p, t, 5, 1.0f);
    aes_softmax_backward(ctx, dz, dp, p, 5, 10);
    for (k = 0; k < 50; k++) CHECK_NEAR(dz[k], gref[k], 2e-6);
    e.B = 5; e.z = z; e.p = p; e.t = t;
    CHECK_GRAD("emd (through softmax)", emd_loss, &e, z, dz, 50, &FDO);
    /* scale and accumulation */
    aes_softmax_forward(ctx, p, z, 5, 10);
    memset(dp, 0, sizeof dp);
    aes_emd_backward(dp, p, t, 5, 2.0f);
    aes_emd_backward(dp, p, t, 5, 1.0f);
    memset(dz, 0, sizeof dz);
    aes_softmax_backward(ctx, dz, dp, p, 5, 10);
    for (k = 0; k < 50; k++) CHECK_NEAR(dz[k], 3.0 * gref[k], 6e-6);
}

/* ============================================================================
 *  ELTA part 2: similarity consistency
 * ========================================================================= */

static void test_simloss_hand(void) {
    float f1[4] = {1, 0, 0, 1}, f2[4] = {1, 2, 2, 4}, s[2] = {3, 7}, same[2] = {5, 5};
    float fhat[4], norm[2], sim[4];
    /* orthogonal features, opposite labels: S = I = T, loss 0 */
    CHECK_NEAR(aes_elta_simloss_forward(ctx, fhat, norm, sim, f1, s, 2, 2), 0.0, 1e-7);
    /* parallel features, opposite labels: off-diagonal (1 - 0)^2 twice / 4 */
    CHECK_NEAR(aes_elta_simloss_forward(ctx, fhat, norm, sim, f2, s, 2, 2), 0.5, 1e-6);
    /* equal labels: T = 1 everywhere (our convention), parallel features: 0 */
    CHECK_NEAR(aes_elta_simloss_forward(ctx, fhat, norm, sim, f2, same, 2, 2), 0.0, 1e-6);
    /* orthogonal features with equal labels: 0.5 */
    CHECK_NEAR(aes_elta_simloss_forward(ctx, fhat, norm, sim, f1, same, 2, 2), 0.5, 1e-6);
}

typedef struct { int B, D; float *x, *s; } sim_prob;
/* L_sim in double, straight from the formula. */
static double sim_loss(void *q) {
    sim_prob *p = (sim_prob *)q;
    double lo = p->s[0], hi = p->s[0], total = 0;
    int i, j, c;
    for (i = 1; i < p->B; i++) { lo = fmin(lo, p->s[i]); hi = fmax(hi, p->s[i]); }
    for (i = 0; i < p->B; i++)
        for (j = 0; j < p->B; j++) {
            double dij = 0, ni = 0, nj = 0, t;
            for (c = 0; c < p->D; c++) {
                double a = p->x[i * p->D + c], b = p->x[j * p->D + c];
                dij += a * b; ni += a * a; nj += b * b;
            }
            t = hi > lo ? 1.0 - fabs((double)p->s[i] - p->s[j]) / (hi - lo) : 1.0;
            dij = dij / sqrt(ni * nj) - t;
            total += dij * dij;
        }
    return total / ((double)p->B * p->B);
}

static void test_simloss_reference_and_fd(void) {
    FILE *f = fopen("tests/fixtures/elta/losses.txt", "r");
    double v[16], loss;
    float x[42], s[6], g[42], gref[42], fhat[42], norm[6], sim[36], work[42];
    sim_prob p;
    tl_fd_opts FDO = elta_fd(1e-2, 4e-3, 2e-5);
    int b, k;
    if (!f) { tl_skip("tests/fixtures/elta/losses.txt missing (run from the repo root)"); return; }
    CHECK(fx_read(f, "sim", v, 2));
    CHECK(v[0] == 6 && v[1] == 7);
    for (b = 0; b < 6; b++) { CHECK(fx_read(f, "feat", v, 7)); for (k = 0; k < 7; k++) x[b * 7 + k] = (float)v[k]; }
    CHECK(fx_read(f, "scores", v, 6));
    for (b = 0; b < 6; b++) s[b] = (float)v[b];
    CHECK(fx_read(f, "loss", &loss, 1));
    for (b = 0; b < 6; b++) { CHECK(fx_read(f, "grad", v, 7)); for (k = 0; k < 7; k++) gref[b * 7 + k] = (float)v[k]; }
    fclose(f);
    CHECK_NEAR(aes_elta_simloss_forward(ctx, fhat, norm, sim, x, s, 6, 7), loss, 2e-6);
    memset(g, 0, sizeof g);
    aes_elta_simloss_backward(ctx, g, work, fhat, norm, sim, s, 6, 7, 1.0f);
    for (k = 0; k < 42; k++) CHECK_NEAR(g[k], gref[k], 2e-6);
    p.B = 6; p.D = 7; p.x = x; p.s = s;
    CHECK_NEAR(sim_loss(&p), loss, 1e-6);
    CHECK_GRAD("similarity consistency", sim_loss, &p, x, g, 42, &FDO);
}

static void test_simloss_fd_large(void) {
    enum { B = 20, D = 33 };
    float *x = fbuf(B * D), *g = fbuf(B * D), *w = fbuf(B * D), *fh = fbuf(B * D), s[B], nrm[B], *sim = fbuf(B * B);
    sim_prob p;
    tl_fd_opts FDO = elta_fd(1e-2, 4e-3, 2e-5);
    int i;
    tl_seed(7);
    tl_fill(x, B * D, 1.0f);
    for (i = 0; i < B; i++) s[i] = 5.5f + 3.0f * tl_randf();
    aes_elta_simloss_forward(ctx, fh, nrm, sim, x, s, B, D);
    aes_elta_simloss_backward(ctx, g, w, fh, nrm, sim, s, B, D, 0.7f);
    for (i = 0; i < B * D; i++) g[i] /= 0.7f;
    p.B = B; p.D = D; p.x = x; p.s = s;
    CHECK_GRAD("similarity consistency 20x33", sim_loss, &p, x, g, B * D, &FDO);
    free(x); free(g); free(w); free(fh); free(sim);
}

/* ============================================================================
 *  ELTA part 1: tail-aware mixup
 * ========================================================================= */

typedef struct { int n, C; float *x, *mixed, *R; const int *ia, *ib; const float *lam; } mix_prob;
static double mix_loss(void *q) {
    mix_prob *m = (mix_prob *)q;
    double s = 0;
    int i;
    aes_elta_mixup_forward(m->mixed, m->x, m->ia, m->ib, m->lam, m->n, m->C);
    for (i = 0; i < m->n * m->C; i++) s += (double)m->mixed[i] * m->R[i];
    return s;
}

static void test_mixup_forward_backward(void) {
    enum { B = 6, C = 5, N = 4 };
    static const int ia[N] = {0, 3, 5, 3}, ib[N] = {1, 2, 0, 2};
    static const float lam[N] = {0.25f, 0.9f, 0.5f, 0.1f};
    float x[B * C], mixed[N * C], R[N * C], dx[B * C];
    mix_prob m;
    tl_fd_opts FDO = elta_fd(1e-2, 2e-4, 1e-6);
    int c;
    tl_seed(3);
    tl_fill(x, B * C, 2.0f);
    tl_fill(R, N * C, 1.0f);
    aes_elta_mixup_forward(mixed, x, ia, ib, lam, N, C);
    for (c = 0; c < C; c++) CHECK_NEAR(mixed[1 * C + c], 0.9f * x[3 * C + c] + 0.1f * x[2 * C + c], 1e-6);
    memset(dx, 0, sizeof dx);
    aes_elta_mixup_backward(dx, R, ia, ib, lam, N, C);
    m.n = N; m.C = C; m.x = x; m.mixed = mixed; m.R = R; m.ia = ia; m.ib = ib; m.lam = lam;
    CHECK_GRAD("mixup", mix_loss, &m, x, dx, B * C, &FDO);
    /* rows 4 never mixed: no gradient */
    for (c = 0; c < C; c++) CHECK(dx[4 * C + c] == 0.0f);
}

/* The paper's probabilities, computed here in double straight from the formulas. */
static void paper_probs(const float *s, int B, double tau1, double tau2, double *P, double *Pj, int anchor) {
    double mean = 0, tot = 0;
    int i;
    for (i = 0; i < B; i++) mean += s[i];
    mean /= B;
    for (i = 0; i < B; i++) { P[i] = exp(fabs(mean - s[i]) / tau1); tot += P[i]; }
    for (i = 0; i < B; i++) P[i] /= tot;
    tot = 0;
    for (i = 0; i < B; i++) {
        Pj[i] = i == anchor ? 0 : exp(tau2 / (fabs((double)s[anchor] - s[i]) + 0.01));
        tot += Pj[i];
    }
    for (i = 0; i < B; i++) Pj[i] /= tot;
}

static void test_sampler_paper_frequencies(void) {
    enum { B = 8, DRAWS = 40000 };
    static const float s[B] = {5.2f, 5.6f, 5.4f, 6.1f, 3.0f, 8.2f, 7.9f, 5.5f};
    aes_elta_mixup_cfg cfg;
    double P[B], Pj[B], worst_a = 0, worst_p = 0;
    float Pf[B], Pjf[B];
    int anchor_hits[B] = {0}, pair_hits[B] = {0}, d, i, ia, ib, np;
    float lam;
    uint64_t rng = 12345;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_mix = 1; cfg.anchor = AES_ELTA_ANCHOR_DEVIATION; cfg.tau1 = 0.5f; cfg.tau2 = 2.0f;
    cfg.lambda_mode = AES_ELTA_LAMBDA_PAPER;
    paper_probs(s, B, 0.5, 2.0, P, Pj, 4); /* partner law of anchor 4 (score 3.0) */
    CHECK_OK(ctx, elta_anchor_probs(ctx, Pf, s, NULL, B, &cfg));
    elta_partner_probs(Pjf, s, B, 4, &cfg);
    for (i = 0; i < B; i++) { CHECK_NEAR(Pf[i], P[i], 1e-6); CHECK_NEAR(Pjf[i], Pj[i], 1e-6); }
    for (d = 0; d < DRAWS; d++) {
        CHECK_OK(ctx, aes_elta_mixup_sample(ctx, &ia, &ib, &lam, &np, s, NULL, B, &cfg, &rng));
        if (np != 1) { CHECK(np == 1); break; }
        anchor_hits[ia]++;
        CHECK(ib != ia);
        if (ia == 4) pair_hits[ib]++;
        /* lambda = P(i) / (P(i) + P(j)) */
        if (d < 50) CHECK_NEAR(lam, P[ia] / (P[ia] + P[ib]), 1e-6);
    }
    for (i = 0; i < B; i++) {
        double ea = (double)anchor_hits[i] / DRAWS, tol = 4.0 * sqrt(P[i] * (1 - P[i]) / DRAWS) + 1e-3;
        double ep = anchor_hits[4] ? (double)pair_hits[i] / anchor_hits[4] : 0;
        double tolp = 4.0 * sqrt(Pj[i] * (1 - Pj[i]) / (anchor_hits[4] + 1)) + 2e-3;
        CHECK_MSG(fabs(ea - P[i]) <= tol, "anchor %d: measured %.4f, P(i) %.4f", i, ea, P[i]);
        CHECK_MSG(fabs(ep - Pj[i]) <= tolp, "partner %d of anchor 4: measured %.4f, P(j|i) %.4f", i, ep, Pj[i]);
        if (fabs(ea - P[i]) > worst_a) worst_a = fabs(ea - P[i]);
        if (fabs(ep - Pj[i]) > worst_p) worst_p = fabs(ep - Pj[i]);
    }
    /* the tail samples (3.0 and 8.2) are the likeliest anchors */
    CHECK(anchor_hits[4] > anchor_hits[0] * 10 && anchor_hits[5] > anchor_hits[1] * 5);
    if (verbose())
        fprintf(stderr, "    anchor freq |err| <= %.4f, partner freq |err| <= %.4f (%d draws)\n", worst_a, worst_p, DRAWS);
}

static void test_sampler_inverse_frequency(void) {
    /* a long-tailed batch: bin counts 2,5,20,60,150,150,60,20,5,2 */
    static const int counts[10] = {2, 5, 20, 60, 150, 150, 60, 20, 5, 2};
    enum { DRAWS = 30000 };
    float *s, lam[4];
    int B = 0, k, i, d, hits[10] = {0}, ia[4], ib[4], np;
    aes_elta_mixup_cfg cfg;
    uint64_t rng = 99;
    double worst = 0;
    for (k = 0; k < 10; k++) B += counts[k];
    s = fbuf((size_t)B);
    for (k = 0, i = 0; k < 10; k++) {
        int c;
        for (c = 0; c < counts[k]; c++) s[i++] = (float)(k + 1) + 0.3f * ((float)c / counts[k] - 0.5f);
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.n_mix = 1; cfg.anchor = AES_ELTA_ANCHOR_INV_FREQ; cfg.tau2 = 2.0f; cfg.lambda_mode = AES_ELTA_LAMBDA_BETA;
    cfg.beta_alpha = 0.4f;
    for (d = 0; d < DRAWS; d++) {
        CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s, NULL, B, &cfg, &rng));
        if (np == 1) hits[aes__score_bin(s[ia[0]])]++;
    }
    for (k = 0; k < 10; k++) {
        double f = (double)hits[k] / DRAWS;
        CHECK_MSG(fabs(f - 0.1) < 0.012, "bin %d drawn with frequency %.4f, inverse-frequency weighting wants 0.1", k + 1, f);
        if (fabs(f - 0.1) > worst) worst = fabs(f - 0.1);
    }
    if (verbose()) {
        fprintf(stderr, "    inverse-frequency anchors per bin:");
        for (k = 0; k < 10; k++) fprintf(stderr, " %.3f", (double)hits[k] / DRAWS);
        fprintf(stderr, " (|err| <= %.4f; data share of bin 1: %.4f)\n", worst, 2.0 / B);
    }
    /* the same through explicit per-sample weights 1/count */
    {
        float *w = fbuf((size_t)B), P[474];
        CHECK(B == 474);
        for (i = 0; i < B; i++) w[i] = 1.0f / counts[aes__score_bin(s[i])];
        CHECK_OK(ctx, elta_anchor_probs(ctx, P, s, w, B, &cfg));
        CHECK_NEAR(P[0], 0.1 / 2, 1e-6);      /* bin 1 has 2 samples */
        CHECK_NEAR(P[300], 0.1 / 150, 1e-7);  /* a sample of bin 5/6 */
        free(w);
    }
    free(s);
}

static void test_sampler_gap_and_counts(void) {
    static const float s[6] = {2.0f, 2.2f, 5.0f, 5.1f, 9.0f, 5.3f};
    aes_elta_mixup_cfg cfg;
    int ia[32], ib[32], np, k, d, seen9 = 0;
    float lam[32];
    uint64_t rng = 5;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_mix = 6; cfg.anchor = AES_ELTA_ANCHOR_UNIFORM; cfg.tau2 = 2.0f; cfg.max_gap = 0.5f;
    for (d = 0; d < 200; d++) {
        CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s, NULL, 6, &cfg, &rng));
        CHECK(np == 5); /* score 9.0 has no partner within 0.5: dropped */
        for (k = 0; k < np; k++) {
            CHECK(fabsf(s[ia[k]] - s[ib[k]]) <= 0.5f && ia[k] != ib[k]);
            CHECK(lam[k] > 0.0f && lam[k] < 1.0f);
            seen9 |= ia[k] == 4 || ib[k] == 4;
        }
        /* anchors without replacement */
        for (k = 1; k < np; k++) { int j; for (j = 0; j < k; j++) CHECK(ia[j] != ia[k]); }
    }
    CHECK(!seen9);
    /* more pairs than samples: wraps around */
    cfg.max_gap = 0; cfg.n_mix = 20;
    CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s, NULL, 6, &cfg, &rng));
    CHECK(np == 20);
    /* B < 2: nothing */
    CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s, NULL, 1, &cfg, &rng));
    CHECK(np == 0);
}

static void test_beta_sampler(void) {
    static const float alphas[3] = {0.4f, 1.0f, 2.0f};
    int a, i, N = 40000;
    uint64_t rng = 77;
    for (a = 0; a < 3; a++) {
        double m = 0, v = 0, al = alphas[a], want_var = 1.0 / (4.0 * (2.0 * al + 1.0));
        for (i = 0; i < N; i++) {
            double x = aes__elta_beta_sample(alphas[a], &rng);
            CHECK(x >= 0.0 && x <= 1.0);
            m += x;
            v += x * x;
        }
        m /= N;
        v = v / N - m * m;
        CHECK_NEAR(m, 0.5, 0.01);
        CHECK_NEAR(v, want_var, 0.006);
    }
}

/* ============================================================================
 *  ELTA part 3: refinement
 * ========================================================================= */

static void test_refine(void) {
    /* row 0 predicts the middle, row 1 the top: row 1 is sharpened more */
    float z[30] = {0}, r[30], conf[3], p[10];
    double c = 0, s[3];
    int i, k;
    for (k = 0; k < 10; k++) {
        z[k] = -0.3f * (k - 4.5f) * (k - 4.5f) / 4.0f;
        z[10 + k] = 0.35f * k;
        z[20 + k] = -0.1f * (k - 4.0f) * (k - 4.0f) / 2.0f;
    }
    for (i = 0; i < 3; i++) {
        double mx = -1e9, sum = 0, e = 0;
        for (k = 0; k < 10; k++) mx = z[i * 10 + k] > mx ? z[i * 10 + k] : mx;
        for (k = 0; k < 10; k++) { p[k] = (float)exp(z[i * 10 + k] - mx); sum += p[k]; }
        for (k = 0; k < 10; k++) e += (k + 1) * p[k] / sum;
        s[i] = e;
        c += e / 3;
    }
    CHECK_OK(ctx, aes_elta_refine(ctx, r, conf, z, 3, 1.25f));
    for (i = 0; i < 3; i++) {
        double mul = exp(1.25 * fabs(c - s[i])), mx = -1e9, sum = 0, best = 0;
        for (k = 0; k < 10; k++) mx = z[i * 10 + k] * mul > mx ? z[i * 10 + k] * mul : mx;
        for (k = 0; k < 10; k++) sum += exp(z[i * 10 + k] * mul - mx);
        for (k = 0; k < 10; k++) {
            double want = exp(z[i * 10 + k] * mul - mx) / sum;
            CHECK_NEAR(r[i * 10 + k], want, 1e-6);
            best = want > best ? want : best;
        }
        CHECK_NEAR(conf[i], best, 1e-6);
    }
    CHECK(conf[1] > conf[0]);
    /* beta = 0: no refinement, plain softmax */
    CHECK_OK(ctx, aes_elta_refine(ctx, r, NULL, z, 3, 0.0f));
    aes_softmax_forward(ctx, p, z + 10, 1, 10);
    for (k = 0; k < 10; k++) CHECK_NEAR(r[10 + k], p[k], 1e-6);
}

/* ============================================================================
 *  Metrics
 * ========================================================================= */

static void test_srcc_hand(void) {
    float x[4] = {1, 2, 2, 3}, y[4] = {1, 3, 2, 4}, c[4] = {2, 2, 2, 2};
    double r, p;
    /* ranks x = 1, 2.5, 2.5, 4; y = 1, 3, 2, 4: 4.5 / sqrt(4.5 * 5) */
    CHECK_OK(ctx, aes__plcc_srcc(ctx, x, y, 4, &p, &r));
    CHECK_NEAR(r, 4.5 / sqrt(22.5), 1e-12);
    CHECK_NEAR(p, 4.5 / sqrt(22.5) , 1e-7); /* same numbers: x, y are already ranks-like */
    CHECK_OK(ctx, aes__plcc_srcc(ctx, x, c, 4, &p, &r));
    CHECK(r != r && p != p); /* constant input: undefined */
}

static void test_metrics_reference(void) {
    FILE *f = fopen("tests/fixtures/elta/metrics.txt", "r");
    double v[22], n_d;
    float *pred, *truth, *ph, *th;
    aes_iaa_metrics m;
    int n, i, k;
    char name[32];
    if (!f) { tl_skip("tests/fixtures/elta/metrics.txt missing (run from the repo root)"); return; }
    CHECK(fx_read(f, "n", &n_d, 1));
    n = (int)n_d;
    CHECK(n == 150);
    pred = fbuf((size_t)n); truth = fbuf((size_t)n); ph = fbuf((size_t)n * 10); th = fbuf((size_t)n * 10);
    for (i = 0; i < n; i++) {
        CHECK(fx_read(f, "row", v, 22));
        pred[i] = (float)v[0];
        truth[i] = (float)v[1];
        for (k = 0; k < 10; k++) { ph[i * 10 + k] = (float)v[2 + k]; th[i * 10 + k] = (float)v[12 + k]; }
    }
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, pred, truth, ph, th, n, NULL));
#define EXPECT(key, got, tol) do { double e_ = fx_expect(f, key); \
        if (e_ != e_) CHECK_MSG((got) != (got), "%s = %g, reference nan", key, (double)(got)); \
        else CHECK_NEAR(got, e_, tol); } while (0)
    EXPECT("srcc", m.srcc, 1e-9);
    EXPECT("plcc", m.plcc, 1e-6);
    EXPECT("acc", m.acc, 1e-12);
    EXPECT("mae", m.mae, 1e-6);
    EXPECT("rmse", m.rmse, 1e-6);
    EXPECT("emd", m.emd, 1e-6);
    EXPECT("head_mae", m.head_mae, 1e-6);
    EXPECT("medium_mae", m.medium_mae, 1e-6);
    EXPECT("tail_mae", m.tail_mae, 1e-6);
    EXPECT("balanced_mae", m.balanced_mae, 1e-6);
    for (k = 0; k < 10; k++) {
        sprintf(name, "bin_mae%d", k + 1);
        EXPECT(name, m.bin_mae[k], 1e-6);
        sprintf(name, "group%d", k + 1);
        EXPECT(name, m.group[k], 0);
        sprintf(name, "count%d", k + 1);
        EXPECT(name, m.bin_count[k], 0);
    }
#undef EXPECT
    if (verbose()) fprintf(stderr, "    srcc %.6f plcc %.6f acc %.3f mae %.4f tail %.4f balanced %.4f\n", m.srcc,
                           m.plcc, m.acc, m.mae, m.tail_mae, m.balanced_mae);
    /* without histograms EMD is undefined */
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, pred, truth, NULL, th, n, NULL));
    CHECK(m.emd != m.emd);
    /* a NaN prediction is an error, not a silent number */
    pred[3] = NAN;
    CHECK(aes_iaa_evaluate(ctx, &m, pred, truth, NULL, NULL, n, NULL) == AES_ERR_NUMERIC);
    fclose(f);
    free(pred); free(truth); free(ph); free(th);
}

/* ============================================================================
 *  Heads
 * ========================================================================= */

typedef struct { aes_head *h; const float *x, *hist, *score; int R; float simw; int sim_layer; } head_prob;
/* The head's loss written again in double, straight from the definitions:
 * layers (+ ReLU), then MSE or EMD(softmax), plus simw * L_sim on layer 1. */
static double head_loss(void *q) {
    head_prob *p = (head_prob *)q;
    const aes_head *h = p->h;
    int R = p->R, L = h->nlayers, l, i, o, c, j;
    double *a[6], loss = 0;
    a[0] = (double *)malloc(sizeof(double) * (size_t)R * h->dim[0]);
    for (i = 0; i < R * h->dim[0]; i++) a[0][i] = p->x[i];
    for (l = 0; l < L; l++) {
        a[l + 1] = (double *)malloc(sizeof(double) * (size_t)R * h->dim[l + 1]);
        for (i = 0; i < R; i++)
            for (o = 0; o < h->dim[l + 1]; o++) {
                double v = h->b[l][o];
                for (c = 0; c < h->dim[l]; c++) v += (double)h->w[l][(size_t)o * h->dim[l] + c] * a[l][(size_t)i * h->dim[l] + c];
                if (h->act == AES_HEAD_ACT_RELU && l + 1 < L && v < 0) v = 0;
                a[l + 1][(size_t)i * h->dim[l + 1] + o] = v;
            }
    }
    for (i = 0; i < R; i++) {
        const double *z = a[L] + (size_t)i * h->dim[L];
        if (h->output == AES_HEAD_SCORE) {
            loss += (z[0] - p->score[i]) * (z[0] - p->score[i]) / R;
        } else {
            double mx = -1e300, sum = 0, cdf = 0, ss = 0, e[10];
            for (c = 0; c < 10; c++) mx = fmax(mx, z[c]);
            for (c = 0; c < 10; c++) { e[c] = exp(z[c] - mx); sum += e[c]; }
            for (c = 0; c < 10; c++) { cdf += e[c] / sum - p->hist[i * 10 + c]; ss += cdf * cdf; }
            loss += sqrt(ss / 10) / R;
        }
    }
    if (p->simw != 0 && L > 1) {
        double lo = p->score[0], hi = p->score[0], sim = 0;
        int sl = p->sim_layer < 1 || p->sim_layer > L - 1 ? L - 1 : p->sim_layer, D1 = h->dim[sl];
        for (i = 1; i < R; i++) { lo = fmin(lo, p->score[i]); hi = fmax(hi, p->score[i]); }
        for (i = 0; i < R; i++)
            for (j = 0; j < R; j++) {
                double d = 0, ni = 0, nj = 0, t;
                for (c = 0; c < D1; c++) {
                    double u = a[sl][(size_t)i * D1 + c], v = a[sl][(size_t)j * D1 + c];
                    d += u * v; ni += u * u; nj += v * v;
                }
                t = hi > lo ? 1 - fabs((double)p->score[i] - p->score[j]) / (hi - lo) : 1;
                d = d / sqrt(ni * nj) - t;
                sim += d * d;
            }
        loss += p->simw * sim / ((double)R * R);
    }
    for (l = 0; l <= L; l++) free(a[l]);
    return loss;
}

static void check_head_grads(const char *what, int kind, int output, int act, float simw, int sim_layer) {
    enum { R = 9, D = 12 };
    static const int hidden[4] = {10, 8, 6, 5};
    aes_head h;
    float x[R * D], hist[R * 10], score[R], *dw[5], *db[5];
    head_prob p;
    char label[96];
    int i, k, l;
    /* small steps through ReLUs: fewer kinks inside [x - h, x + h] */
    tl_fd_opts FDO = elta_fd(act == AES_HEAD_ACT_RELU ? 1e-3 : 1e-2, 4e-3, 2e-5);
    double task = 0.0, sim = 0.0;
    tl_seed(11 + kind * 3 + output * 5 + act * 7);
    tl_fill(x, R * D, 1.0f);
    for (i = 0; i < R; i++) {
        double sum = 0;
        for (k = 0; k < 10; k++) { hist[i * 10 + k] = 0.05f + (float)tl_uniform(); sum += hist[i * 10 + k]; }
        for (k = 0; k < 10; k++) hist[i * 10 + k] = (float)(hist[i * 10 + k] / sum);
        score[i] = aes__hist_mean(hist + i * 10);
    }
    CHECK_OK(ctx, aes_head_init(ctx, &h, kind, output, act, D, hidden, 5));
    for (l = 0; l < h.nlayers; l++) { /* bigger weights so ReLUs switch and the signal survives 5 layers */
        size_t j, nw = (size_t)h.dim[l] * h.dim[l + 1];
        for (j = 0; j < nw; j++) h.w[l][j] *= 2.0f;
    }
    for (l = 0; l < h.nlayers; l++) {
        dw[l] = fbuf((size_t)h.dim[l] * h.dim[l + 1]);
        db[l] = fbuf((size_t)h.dim[l + 1]);
    }
    CHECK_OK(ctx, head_loss_grad(ctx, &h, dw, db, x, hist, score, R, simw, sim_layer, &task, &sim));
    p.h = &h; p.x = x; p.hist = hist; p.score = score; p.R = R; p.simw = simw; p.sim_layer = sim_layer;
    CHECK_NEAR(task + simw * sim, head_loss(&p), 1e-5 * (1 + fabs(head_loss(&p))));
    for (l = 0; l < h.nlayers; l++) {
        sprintf(label, "%s W%d", what, l);
        CHECK_GRAD(label, head_loss, &p, h.w[l], dw[l], (size_t)h.dim[l] * h.dim[l + 1], &FDO);
        sprintf(label, "%s b%d", what, l);
        CHECK_GRAD(label, head_loss, &p, h.b[l], db[l], (size_t)h.dim[l + 1], &FDO);
        free(dw[l]); free(db[l]);
    }
    aes_head_free(&h);
}

static void test_head_grads(void) {
    check_head_grads("linear mse", AES_HEAD_LINEAR, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 0.0f, 0);
    check_head_grads("linear emd", AES_HEAD_LINEAR, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, 0.0f, 0);
    check_head_grads("mlp mse", AES_HEAD_MLP, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 0.0f, 0);
    check_head_grads("mlp relu emd + sim(last)", AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_RELU, 0.5f, 0);
    check_head_grads("mlp relu emd + sim(1)", AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_RELU, 0.5f, 1);
    check_head_grads("mlp mse + sim(2)", AES_HEAD_MLP, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 1.0f, 2);
}

static void test_head_predict(void) {
    aes_head h;
    float x[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0.5f, 0.5f, 0, 0}, out[30], sc[3], hist[30];
    int i;
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_LINEAR, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, 4, NULL, 1));
    CHECK(aes__head_out_dim(&h) == 10 && h.nlayers == 1);
    CHECK_OK(ctx, aes__head_forward(ctx, &h, out, x, 3));
    CHECK_OK(ctx, aes_head_predict(ctx, &h, sc, hist, x, 3));
    for (i = 0; i < 3; i++) {
        float p[10];
        aes_softmax_forward(ctx, p, out + i * 10, 1, 10);
        CHECK_NEAR(sc[i], aes__hist_mean(p), 1e-5);
        CHECK_NEAR(hist[i * 10 + 3], p[3], 1e-6);
    }
    aes_head_free(&h);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_MLP, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 4, NULL, 1));
    CHECK(h.nlayers == 5 && h.dim[1] == 1024 && h.dim[2] == 128 && h.dim[3] == 64 && h.dim[4] == 16 && h.dim[5] == 1);
    aes_head_free(&h);
    CHECK(aes_head_init(ctx, &h, 7, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 4, NULL, 1) == AES_ERR_INVALID_ARG);
}

/* ============================================================================
 *  Training
 * ========================================================================= */

/* Anchors for a synthetic world: a smooth curve on the unit sphere (like
 * the real LAION rating embeddings, consecutive cosines near 0.99). */
static void make_anchors(float *a, int D, unsigned long long seed) {
    float *u = fbuf((size_t)D), *v = fbuf((size_t)D);
    int k, c;
    tl_seed(seed);
    tl_fill(u, (size_t)D, 1.0f);
    tl_fill(v, (size_t)D, 1.0f);
    for (k = 0; k < 10; k++) {
        double t = 0.09 * k, nrm = 0;
        for (c = 0; c < D; c++) { a[k * D + c] = (float)(cos(t) * u[c] + sin(t) * v[c]); nrm += a[k * D + c] * a[k * D + c]; }
        for (c = 0; c < D; c++) a[k * D + c] = (float)(a[k * D + c] / sqrt(nrm));
    }
    free(u); free(v);
}

static void test_synth(void) {
    enum { D = 24, N = 3000 };
    float anchors[10 * D], *x = fbuf((size_t)N * D);
    aes_labels L;
    synth_cfg sc;
    int counts[10], groups[10], i, c;
    make_anchors(anchors, D, 1);
    synth_default(&sc);
    CHECK_OK(ctx, synth_make(ctx, x, &L, N, anchors, D, &sc, 1, 2));
    CHECK(L.n == N && L.has_hist);
    for (i = 0; i < N; i += 97) {
        double nrm = 0;
        for (c = 0; c < D; c++) nrm += x[i * D + c] * x[i * D + c];
        CHECK_NEAR(nrm, 1.0, 1e-5);
        CHECK_NEAR(aes__hist_mean(L.hist + i * 10), L.score[i], 1e-5);
    }
    aes_score_bin_counts(L.score, N, counts);
    aes__bin_groups(counts, 0, 0, groups);
    /* long-tailed: the middle bins hold most, the ends little */
    CHECK(counts[4] + counts[5] > N / 2);
    CHECK(counts[1] + counts[8] < N / 40);
    CHECK(groups[4] == AES_BIN_HEAD && groups[5] == AES_BIN_HEAD && groups[2] == AES_BIN_TAIL && groups[7] == AES_BIN_TAIL);
    if (verbose()) {
        fprintf(stderr, "    synthetic bin counts:");
        for (i = 0; i < 10; i++) fprintf(stderr, " %d", counts[i]);
        fprintf(stderr, "\n");
    }
    aes_labels_free(&L);
    free(x);
}

typedef struct { double tail, bal, srcc, plcc, mae; } run_result;

static run_result train_and_test(int kind, int loss, int elta_on, const float *xtr, const aes_labels *ltr, int ntr,
                                 const float *xte, const aes_labels *lte, int nte, int D, const float *xun, int nun) {
    aes_head h;
    aes_head_train_config cfg;
    aes_iaa_metrics m;
    aes_iaa_eval_opts o;
    int counts[10];
    float *pred = fbuf((size_t)nte);
    static const int hidden[4] = {64, 32, 16, 8};
    run_result r;
    aes_head_train_config_default(&cfg);
    cfg.loss = loss;
    cfg.epochs = 12;
    cfg.seed = 3;
    aes_elta_config_default(&cfg.elta, elta_on);
    if (kind == AES_HEAD_LINEAR) cfg.elta.simloss = 0;
    if (loss == AES_LOSS_MSE) cfg.elta.refine = 0;
    cfg.elta.refine_epochs = 6;
    if (!elta_on && loss == AES_LOSS_EMD) cfg.epochs = 18; /* same number of epochs as with part 3 */
    CHECK_OK(ctx, aes_head_init(ctx, &h, kind, loss == AES_LOSS_EMD ? AES_HEAD_HIST10 : AES_HEAD_SCORE, AES_HEAD_ACT_NONE,
                                D, hidden, 9));
    CHECK_OK(ctx, aes_head_train(ctx, &h, xtr, ntr, D, ltr, xun, nun, &cfg, NULL));
    CHECK_OK(ctx, aes_head_predict(ctx, &h, pred, NULL, xte, nte));
    memset(&o, 0, sizeof o);
    aes_score_bin_counts(ltr->score, ntr, counts);
    o.split_counts = counts;
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, pred, lte->score, NULL, NULL, nte, &o));
    r.tail = m.tail_mae; r.bal = m.balanced_mae; r.srcc = m.srcc; r.plcc = m.plcc; r.mae = m.mae;
    aes_head_free(&h);
    free(pred);
    return r;
}

static void test_train_elta_lowers_tail_mae(void) {
    enum { D = 32, NTR = 4000, NTE = 8000, NUN = 4000 };
    float anchors[10 * D];
    float *xtr = fbuf((size_t)NTR * D), *xte = fbuf((size_t)NTE * D), *xun = fbuf((size_t)NUN * D);
    aes_labels ltr, lte, lun;
    synth_cfg sc;
    double t0 = tl_now();
    int kind;
    make_anchors(anchors, D, 4);
    synth_default(&sc);
    sc.noise_scale = 0.1f;   /* 32 dims instead of 768: less noise for a similar difficulty */
    sc.content_scale = 0.3f;
    CHECK_OK(ctx, synth_make(ctx, xtr, &ltr, NTR, anchors, D, &sc, 21, 1));
    CHECK_OK(ctx, synth_make(ctx, xte, &lte, NTE, anchors, D, &sc, 21, 2));
    CHECK_OK(ctx, synth_make(ctx, xun, &lun, NUN, anchors, D, &sc, 21, 3));
    for (kind = 0; kind < 2; kind++) {
        int loss = kind == AES_HEAD_MLP ? AES_LOSS_EMD : AES_LOSS_MSE;
        run_result base = train_and_test(kind, loss, 0, xtr, &ltr, NTR, xte, &lte, NTE, D, xun, NUN);
        run_result elta = train_and_test(kind, loss, 1, xtr, &ltr, NTR, xte, &lte, NTE, D, xun, NUN);
        if (verbose())
            fprintf(stderr, "    %-6s %s: tail MAE %.3f -> %.3f, balanced %.3f -> %.3f, SRCC %.3f -> %.3f, MAE %.3f -> %.3f\n",
                    kind ? "mlp" : "linear", loss == AES_LOSS_EMD ? "emd" : "mse", base.tail, elta.tail, base.bal,
                    elta.bal, base.srcc, elta.srcc, base.mae, elta.mae);
        CHECK_MSG(elta.tail < base.tail, "%s: ELTA tail MAE %.4f is not below %.4f", kind ? "mlp" : "linear", elta.tail, base.tail);
        CHECK_MSG(elta.bal < base.bal, "%s: ELTA balanced MAE %.4f is not below %.4f", kind ? "mlp" : "linear", elta.bal, base.bal);
        CHECK_MSG(elta.srcc > base.srcc - 0.02, "%s: ELTA SRCC %.4f fell below %.4f", kind ? "mlp" : "linear", elta.srcc, base.srcc);
        CHECK(base.srcc > 0.5);
    }
    if (verbose()) fprintf(stderr, "    end-to-end: %.2f s\n", tl_now() - t0);
    aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
    free(xtr); free(xte); free(xun);
}

/* The ELTA authors' piecewise MAE (metric.py): percentile edges as numpy's
 * default interpolation, rows strictly inside an edge pair. */
static void test_piecewise_mae(void) {
    /* 1..10: the 20th percentile sits at position 1.8 (2.8), the 80th at 7.2 (8.2) */
    float t1[10], p1[10];
    /* ties on the edges: sorted 3.2 4 5 5.5 5.5 5.5 5.5 6 6.5 7 8.9, edges 3.2 5 6.5 8.9 */
    static const float t2[11] = {5.5f, 5.5f, 5.5f, 4.0f, 7.0f, 3.2f, 8.9f, 5.0f, 6.0f, 5.5f, 6.5f};
    float p2[11];
    aes_iaa_metrics m;
    int i;
    for (i = 0; i < 10; i++) { t1[i] = (float)(10 - i); p1[i] = t1[i] + 0.1f * (float)(i + 1); }
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, p1, t1, NULL, NULL, 10, NULL));
    CHECK_NEAR(m.seg_edge[0], 1.0, 1e-6); CHECK_NEAR(m.seg_edge[1], 2.8, 1e-6);
    CHECK_NEAR(m.seg_edge[2], 8.2, 1e-6); CHECK_NEAR(m.seg_edge[3], 10.0, 1e-6);
    /* low: truth 2 (row 8, error 0.9); middle: truth 3..8 (rows 2..7); high: truth 9 (row 1) */
    CHECK(m.seg_count[0] == 1 && m.seg_count[1] == 6 && m.seg_count[2] == 1);
    CHECK_NEAR(m.seg_mae[0], 0.9, 1e-6);
    CHECK_NEAR(m.seg_mae[1], (0.3 + 0.4 + 0.5 + 0.6 + 0.7 + 0.8) / 6.0, 1e-6);
    CHECK_NEAR(m.seg_mae[2], 0.2, 1e-6);
    for (i = 0; i < 11; i++) p2[i] = t2[i] + (i % 2 ? 0.5f : -0.25f);
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, p2, t2, NULL, NULL, 11, NULL));
    CHECK_NEAR(m.seg_edge[1], 5.0, 1e-6); CHECK_NEAR(m.seg_edge[2], 6.5, 1e-6);
    CHECK(m.seg_count[0] == 1 && m.seg_count[1] == 5 && m.seg_count[2] == 1); /* 4 | 5.5 x4, 6 | 7 */
    CHECK_NEAR(m.seg_mae[0], 0.5, 1e-6);                                         /* row 3 */
    CHECK_NEAR(m.seg_mae[1], (0.25 + 0.5 + 0.25 + 0.25 + 0.5) / 5.0, 1e-6);     /* rows 0 1 2 8 9 */
    CHECK_NEAR(m.seg_mae[2], 0.25, 1e-6);                                        /* row 4 */
    /* all equal: every row on an edge, every segment empty */
    for (i = 0; i < 10; i++) t1[i] = 5.0f;
    CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, p1, t1, NULL, NULL, 10, NULL));
    CHECK(m.seg_count[0] == 0 && m.seg_mae[0] != m.seg_mae[0] && m.seg_mae[2] != m.seg_mae[2]);
}

/* Score heads draw mixup pairs on the authors' 0.1-1 scale.  With tau1 =
 * 0.5, P(i) ~ exp(|s_bar - s_i| / tau1) is exp(9) times more skewed per 4.5
 * score points on the 1-10 scale than on 0.1-1: there the anchors are almost
 * only the extreme rows; on the authors' scale every row can be one. */
static void test_mixup_mse_scale(void) {
    enum { B = 64, D = 16, N = 400 };
    float s[B], s10[B], P1[B], P01[B], lam[B], anchors[10 * D], *x = fbuf((size_t)N * D);
    int ia[B], ib[B], np, i, k, l, same;
    double far1 = 0, far01 = 0, spread1 = 0, spread01 = 0, mean = 0, lo = 1e9, hi = -1e9;
    uint64_t rng = 99, z = 5;
    aes_elta_mixup_cfg mc;
    synth_cfg sc;
    aes_labels L;
    aes_head_train_config cfg;
    aes_head h[4];
    static const int hidden[4] = {8, 8, 8, 4};
    for (i = 0; i < B; i++) {
        double u = (double)(aes__splitmix64(&z) >> 11) / 9007199254740992.0;
        s[i] = (float)(5.5 + 12.0 * (u - 0.5) * fabs(u - 0.5)); /* 2.5 .. 8.5, crowded near 5.5 */
        s10[i] = s[i] * 0.1f;
        mean += s[i] / B;
    }
    aes_elta_config_default(&cfg.elta, 1);
    CHECK(cfg.elta.mix_mse_scale == 0.1f);
    mc = cfg.elta.mix;
    CHECK_OK(ctx, elta_anchor_probs(ctx, P1, s, NULL, B, &mc));
    CHECK_OK(ctx, elta_anchor_probs(ctx, P01, s10, NULL, B, &mc));
    for (i = 0; i < B; i++) {
        double dev = fabs(s[i] - mean);
        if (dev > 1.5) { far1 += P1[i]; far01 += P01[i]; }
        if (P01[i] < lo) lo = P01[i];
        if (P01[i] > hi) hi = P01[i];
    }
    for (k = 0; k < 50; k++) {
        CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s, NULL, B, &mc, &rng));
        for (i = 0; i < np; i++) spread1 += fabs(lam[i] - 0.5) / (50.0 * np);
        CHECK_OK(ctx, aes_elta_mixup_sample(ctx, ia, ib, lam, &np, s10, NULL, B, &mc, &rng));
        for (i = 0; i < np; i++) spread01 += fabs(lam[i] - 0.5) / (50.0 * np);
    }
    if (verbose())
        fprintf(stderr, "    anchor mass beyond 1.5 from the mean: 1-10 scale %.3f, 0.1-1 scale %.3f; P(i) max/min on 0.1-1 %.2f;"
                " mean |lambda - 0.5|: %.3f vs %.3f\n", far1, far01, hi / lo, spread1, spread01);
    CHECK_MSG(far1 > 0.8, "1-10 scale: anchor mass in the tails %.3f", far1);
    CHECK_MSG(far01 < 0.5, "0.1-1 scale: anchor mass in the tails %.3f", far01);
    CHECK_MSG(hi / lo < exp(0.1 * 3.1 / 0.5), "0.1-1 scale: P(i) max/min %.3f", hi / lo);
    /* the trainer: default = 0.1 = 0 (taken as 0.1); 1 differs; EMD heads ignore it */
    make_anchors(anchors, D, 3);
    synth_default(&sc);
    CHECK_OK(ctx, synth_make(ctx, x, &L, N, anchors, D, &sc, 7, 8));
    for (k = 0; k < 4; k++) {
        int emd = k == 3;
        aes_head_train_config_default(&cfg);
        cfg.epochs = 2;
        cfg.loss = emd ? AES_LOSS_EMD : AES_LOSS_MSE;
        cfg.elta.mixup = 1;
        cfg.elta.mix_mse_scale = k == 1 ? 0.0f : k == 2 ? 1.0f : 0.1f;
        CHECK_OK(ctx, aes_head_init(ctx, &h[k], AES_HEAD_MLP, emd ? AES_HEAD_HIST10 : AES_HEAD_SCORE, AES_HEAD_ACT_NONE, D,
                                    hidden, 1));
        CHECK_OK(ctx, aes_head_train(ctx, &h[k], x, N, D, &L, NULL, 0, &cfg, NULL));
    }
    for (l = 0, same = 1; l < h[0].nlayers; l++)
        same &= memcmp(h[0].w[l], h[1].w[l], sizeof(float) * (size_t)h[0].dim[l] * h[0].dim[l + 1]) == 0;
    CHECK_MSG(same, "mix_mse_scale 0 is not the default 0.1");
    for (l = 0, same = 1; l < h[0].nlayers; l++)
        same &= memcmp(h[0].w[l], h[2].w[l], sizeof(float) * (size_t)h[0].dim[l] * h[0].dim[l + 1]) == 0;
    CHECK_MSG(!same, "mix_mse_scale 1 trained the same weights as 0.1");
    {   /* EMD: the same weights whatever the MSE scale */
        aes_head e2;
        aes_head_train_config_default(&cfg);
        cfg.epochs = 2;
        cfg.loss = AES_LOSS_EMD;
        cfg.elta.mixup = 1;
        cfg.elta.mix_mse_scale = 1.0f;
        CHECK_OK(ctx, aes_head_init(ctx, &e2, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, D, hidden, 1));
        CHECK_OK(ctx, aes_head_train(ctx, &e2, x, N, D, &L, NULL, 0, &cfg, NULL));
        for (l = 0, same = 1; l < e2.nlayers; l++)
            same &= memcmp(h[3].w[l], e2.w[l], sizeof(float) * (size_t)e2.dim[l] * e2.dim[l + 1]) == 0;
        CHECK_MSG(same, "the MSE scale changed an EMD head");
        aes_head_free(&e2);
    }
    for (k = 0; k < 4; k++) aes_head_free(&h[k]);
    aes_labels_free(&L);
    free(x);
}

typedef struct { int epochs, last_stage, n_pseudo; } stage_log;
static void log_epoch(void *user, const aes_head_epoch_info *e) {
    stage_log *g = (stage_log *)user;
    g->epochs = e->epochs;
    g->last_stage = e->stage;
    g->n_pseudo = e->n_pseudo;
}

/* The pseudo-label stage as the authors run it: as long as stage 1 by
 * default, and only when more than refine_min (10) rows are selected. */
static void test_refine_stage_rules(void) {
    enum { D = 16, N = 600, NU = 300 };
    float anchors[10 * D], *x = fbuf((size_t)N * D), *xu = fbuf((size_t)NU * D);
    aes_labels L, LU;
    synth_cfg sc;
    aes_head_train_config cfg;
    aes_head_train_result res;
    aes_head h, g;
    stage_log log;
    static const int hidden[4] = {16, 8, 8, 4};
    int l, same;
    make_anchors(anchors, D, 8);
    synth_default(&sc);
    CHECK_OK(ctx, synth_make(ctx, x, &L, N, anchors, D, &sc, 5, 6));
    CHECK_OK(ctx, synth_make(ctx, xu, &LU, NU, anchors, D, &sc, 5, 7));
    aes_head_train_config_default(&cfg);
    cfg.loss = AES_LOSS_EMD;
    cfg.epochs = 3;
    cfg.elta.refine = 1;
    CHECK(cfg.elta.refine_epochs == -1 && cfg.elta.refine_min == 10);
    cfg.elta.refine_threshold = 0.2f; /* most rows pass */
    cfg.on_epoch = log_epoch;
    cfg.user = &log;
    memset(&log, 0, sizeof log);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, D, hidden, 1));
    CHECK_OK(ctx, aes_head_train(ctx, &h, x, N, D, &L, xu, NU, &cfg, &res));
    CHECK_MSG(log.epochs == 6 && log.last_stage == 2, "stage 2 as long as stage 1: %d epochs, stage %d", log.epochs, log.last_stage);
    CHECK(res.n_pseudo > 10 && res.best_epoch > 3);
    aes_head_free(&h);
    /* 10 or fewer selected rows: no second stage, the stage-1 head (bit for bit
     * what training without refinement gives) */
    cfg.elta.refine_min = NU;
    memset(&log, 0, sizeof log);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, D, hidden, 1));
    CHECK_OK(ctx, aes_head_train(ctx, &h, x, N, D, &L, xu, NU, &cfg, &res));
    CHECK(res.n_pseudo == 0 && res.best_epoch <= 3 && log.last_stage == 1);
    cfg.elta.refine = 0;
    CHECK_OK(ctx, aes_head_init(ctx, &g, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, D, hidden, 1));
    CHECK_OK(ctx, aes_head_train(ctx, &g, x, N, D, &L, xu, NU, &cfg, NULL));
    for (l = 0, same = 1; l < h.nlayers; l++)
        same &= memcmp(h.w[l], g.w[l], sizeof(float) * (size_t)h.dim[l] * h.dim[l + 1]) == 0 &&
                memcmp(h.b[l], g.b[l], sizeof(float) * (size_t)h.dim[l + 1]) == 0;
    CHECK_MSG(same, "a skipped pseudo-label stage changed the head");
    /* an explicit length */
    cfg.elta.refine = 1;
    cfg.elta.refine_min = 10;
    cfg.elta.refine_epochs = 2;
    aes_head_free(&h);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, D, hidden, 1));
    CHECK_OK(ctx, aes_head_train(ctx, &h, x, N, D, &L, xu, NU, &cfg, &res));
    CHECK(log.epochs == 5 && log.last_stage == 2);
    aes_head_free(&h); aes_head_free(&g);
    aes_labels_free(&L); aes_labels_free(&LU);
    free(x); free(xu);
}

static void test_train_deterministic(void) {
    enum { D = 16, N = 600 };
    float anchors[10 * D], *x = fbuf((size_t)N * D);
    aes_labels L;
    synth_cfg sc;
    aes_head_train_config cfg;
    aes_head h1, h2;
    static const int hidden[4] = {16, 8, 8, 4};
    int l, same = 1;
    make_anchors(anchors, D, 8);
    synth_default(&sc);
    CHECK_OK(ctx, synth_make(ctx, x, &L, N, anchors, D, &sc, 5, 6));
    aes_head_train_config_default(&cfg);
    cfg.loss = AES_LOSS_EMD;
    cfg.epochs = 3;
    aes_elta_config_default(&cfg.elta, 1);
    cfg.elta.refine_epochs = 2;
    CHECK_OK(ctx, aes_head_init(ctx, &h1, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_RELU, D, hidden, 1));
    CHECK_OK(ctx, aes_head_init(ctx, &h2, AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_RELU, D, hidden, 1));
    CHECK_OK(ctx, aes_threads_set(ctx, 1));
    CHECK_OK(ctx, aes_head_train(ctx, &h1, x, N, D, &L, x, N / 2, &cfg, NULL));
    if (aes_threads_set(ctx, 2) != AES_OK) aes_clear_error(ctx); /* AES_NO_THREADS: same seed twice */
    CHECK_OK(ctx, aes_head_train(ctx, &h2, x, N, D, &L, x, N / 2, &cfg, NULL));
    CHECK_OK(ctx, aes_threads_set(ctx, 1));
    for (l = 0; l < h1.nlayers; l++)
        same &= memcmp(h1.w[l], h2.w[l], sizeof(float) * (size_t)h1.dim[l] * h1.dim[l + 1]) == 0 &&
                memcmp(h1.b[l], h2.b[l], sizeof(float) * (size_t)h1.dim[l + 1]) == 0;
    CHECK_MSG(same, "same seed, 1 vs 2 threads: different weights");
    aes_head_free(&h1); aes_head_free(&h2);
    aes_labels_free(&L);
    free(x);
}

static void test_train_errors(void) {
    float x[8 * 4] = {0};
    float sc[8] = {5, 5, 6, 6, 4, 4, 5, 7};
    aes_labels L;
    aes_head h;
    aes_head_train_config cfg;
    memset(&L, 0, sizeof L);
    L.n = 8; L.score = sc;
    aes_head_train_config_default(&cfg);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_LINEAR, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, 4, NULL, 1));
    cfg.loss = AES_LOSS_EMD; /* scores only: EMD impossible */
    CHECK(aes_head_train(ctx, &h, x, 8, 4, &L, NULL, 0, &cfg, NULL) == AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(ctx), "histograms") != NULL);
    cfg.loss = AES_LOSS_MSE; /* hist10 head with MSE */
    CHECK(aes_head_train(ctx, &h, x, 8, 4, &L, NULL, 0, &cfg, NULL) == AES_ERR_INVALID_ARG);
    aes_head_free(&h);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_LINEAR, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 4, NULL, 1));
    cfg.elta.simloss = 1; /* no hidden layer */
    CHECK(aes_head_train(ctx, &h, x, 8, 4, &L, NULL, 0, &cfg, NULL) == AES_ERR_UNSUPPORTED);
    cfg.elta.simloss = 0;
    CHECK(aes_head_train(ctx, &h, x, 8, 3, &L, NULL, 0, &cfg, NULL) == AES_ERR_SHAPE);
    CHECK(aes_head_train(ctx, &h, x, 7, 4, &L, NULL, 0, &cfg, NULL) == AES_ERR_SHAPE);
    CHECK_OK(ctx, aes_head_train(ctx, &h, x, 8, 4, &L, NULL, 0, &cfg, NULL));
    aes_head_free(&h);
}

/* ============================================================================
 *  Saving heads; the CLI end to end
 * ========================================================================= */

static void test_head_save_load(void) {
    static const int hidden[4] = {9, 7, 5, 3};
    static const char *const extra[2] = {"aesalign.train", "test"};
    int kinds[3] = {AES_HEAD_LINEAR, AES_HEAD_MLP, AES_HEAD_MLP}, outs[3] = {AES_HEAD_SCORE, AES_HEAD_HIST10, AES_HEAD_SCORE};
    int acts[3] = {AES_HEAD_ACT_NONE, AES_HEAD_ACT_RELU, AES_HEAD_ACT_NONE}, c, l;
    for (c = 0; c < 3; c++) {
        aes_head h, g;
        void *buf = NULL;
        size_t len = 0;
        aes_safetensors *st = NULL;
        float x[2 * 11], a[20], b[20];
        int same = 1;
        tl_seed(40 + c);
        tl_fill(x, 22, 1.0f);
        CHECK_OK(ctx, aes_head_init(ctx, &h, kinds[c], outs[c], acts[c], 11, hidden, 3 + c));
        CHECK_OK(ctx, aes_head_serialize(ctx, &h, extra, 1, &buf, &len));
        CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, len, 0, &st));
        if (st) {
            CHECK(!strcmp(aes_safetensors_metadata(st, "aesalign.head"), kinds[c] ? "mlp" : "linear"));
            CHECK(!strcmp(aes_safetensors_metadata(st, "aesalign.output"), outs[c] ? "hist10" : "score"));
            CHECK(!strcmp(aes_safetensors_metadata(st, "aesalign.activation"), acts[c] ? "relu" : "none"));
            CHECK(!strcmp(aes_safetensors_metadata(st, "aesalign.train"), "test"));
            if (kinds[c] == AES_HEAD_LINEAR) CHECK(aes_safetensors_find(st, "weight") && aes_safetensors_find(st, "bias"));
            else CHECK(aes_safetensors_find(st, "layers.0.weight") && aes_safetensors_find(st, "layers.6.bias") &&
                       aes_safetensors_find(st, "layers.7.weight") && !aes_safetensors_find(st, "layers.8.weight"));
            aes_safetensors_close(st);
        }
        /* the retrieval loader reads it back: same layout, same outputs */
        CHECK_OK(ctx, aes_head_load_memory(ctx, buf, len, &g));
        CHECK(g.kind == h.kind && g.output == h.output && g.act == h.act && g.nlayers == h.nlayers);
        for (l = 0; l < h.nlayers && l < g.nlayers; l++)
            same &= g.dim[l + 1] == h.dim[l + 1] &&
                    !memcmp(g.w[l], h.w[l], sizeof(float) * (size_t)h.dim[l] * h.dim[l + 1]) &&
                    !memcmp(g.b[l], h.b[l], sizeof(float) * (size_t)h.dim[l + 1]);
        CHECK(same);
        CHECK_OK(ctx, aes_head_predict(ctx, &h, a, NULL, x, 2));
        CHECK_OK(ctx, aes_head_predict(ctx, &g, b, NULL, x, 2));
        CHECK(a[0] == b[0] && a[1] == b[1]);
        aes_free(buf);
        aes_head_free(&h);
        aes_head_free(&g);
    }
}

/* Writes x [n, d] as `embeddings` and labels as CSV (score,h1..h10). */
static void write_set(const char *fpath, const char *lpath, const float *x, int n, int d, const aes_labels *L) {
    aes_tensor_out t;
    FILE *f;
    int i, k;
    memset(&t, 0, sizeof t);
    t.name = "embeddings"; t.dtype = AES_DTYPE_F32; t.ndim = 2; t.shape[0] = n; t.shape[1] = d; t.data = x;
    CHECK_OK(ctx, aes_safetensors_write(ctx, fpath, &t, 1, NULL, 0));
    if (!lpath) return;
    f = fopen(lpath, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "id,score,h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n");
    for (i = 0; i < n; i++) {
        fprintf(f, "img%d,%.6f", i, L->score[i]);
        for (k = 0; k < 10; k++) fprintf(f, ",%.7g", L->hist[i * 10 + k] * 100.0f);
        fputc('\n', f);
    }
    fclose(f);
}

static void test_cli_train_eval_predict(void) {
    enum { D = 24, N = 1200 };
    const char *cli = tl_cli();
    char dir[128], feat[256], lab[256], head_path[256], cmd[2048], line[256];
    float anchors[10 * D], *x = fbuf((size_t)N * D), *want = fbuf(N);
    aes_labels L;
    synth_cfg sc;
    aes_head h;
    aes_iaa_metrics m;
    FILE *p;
    int got = 0, seen_srcc = 0, seen_tail = 0, seen_seg = 0;
    if (!cli) { free(x); free(want); return; }
    snprintf(dir, sizeof dir, "/tmp/aes_test_elta_%ld", (long)time(NULL) ^ (long)clock());
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    CHECK(system(cmd) == 0);
    snprintf(feat, sizeof feat, "%s/train.safetensors", dir);
    snprintf(lab, sizeof lab, "%s/train.csv", dir);
    snprintf(head_path, sizeof head_path, "%s/head.safetensors", dir);
    make_anchors(anchors, D, 12);
    synth_default(&sc);
    CHECK_OK(ctx, synth_make(ctx, x, &L, N, anchors, D, &sc, 3, 4));
    write_set(feat, lab, x, N, D, &L);
    /* train: an MLP on hist labels -> EMD, hist10 head, ELTA mixup + similarity */
    snprintf(cmd, sizeof cmd, "%s train-head --features %s --labels %s --out %s --head mlp --hidden 16,8,8,4 "
             "--epochs 3 --elta --quiet", cli, feat, lab, head_path);
    CHECK(system(cmd) == 0);
    memset(&h, 0, sizeof h);
    CHECK_OK(ctx, aes_head_load(ctx, head_path, &h));
    CHECK(h.kind == AES_HEAD_MLP && h.output == AES_HEAD_HIST10 && h.dim[1] == 16 && h.dim[0] == D);
    if (h.nlayers == 5) {
        /* the CLI normalises rows; the synthetic ones already are */
        CHECK_OK(ctx, aes_head_predict(ctx, &h, want, NULL, x, N));
        snprintf(cmd, sizeof cmd, "%s predict-head --head %s --features %s", cli, head_path, feat);
        p = popen(cmd, "r");
        CHECK(p != NULL);
        if (p) {
            double v;
            while (fscanf(p, "%lf", &v) == 1) {
                if (got < N) CHECK_NEAR(v, want[got], 2e-5 * (1 + fabs(v)));
                got++;
            }
            CHECK(pclose(p) == 0);
        }
        CHECK(got == N);
        CHECK_OK(ctx, aes_iaa_evaluate(ctx, &m, want, L.score, NULL, NULL, N, NULL));
        snprintf(cmd, sizeof cmd, "%s eval-head --head %s --features %s --labels %s", cli, head_path, feat, lab);
        p = popen(cmd, "r");
        CHECK(p != NULL);
        if (p) {
            while (fgets(line, sizeof line, p)) {
                char name[64];
                double v;
                if (sscanf(line, "%63s %lf", name, &v) != 2) continue;
                if (!strcmp(name, "srcc")) { CHECK_NEAR(v, m.srcc, 1e-5); seen_srcc = 1; }
                if (!strcmp(name, "tail_mae")) { CHECK_NEAR(v, m.tail_mae, 1e-5); seen_tail = 1; }
                if (!strcmp(name, "balanced_mae")) CHECK_NEAR(v, m.balanced_mae, 1e-5);
                if (!strcmp(name, "emd")) CHECK(v > 0 && v < 1);
                if (!strcmp(name, "pct0_20_mae")) { CHECK_NEAR(v, m.seg_mae[0], 1e-5); seen_seg++; }
                if (!strcmp(name, "pct20_80_mae")) { CHECK_NEAR(v, m.seg_mae[1], 1e-5); seen_seg++; }
                if (!strcmp(name, "pct80_100_mae")) { CHECK_NEAR(v, m.seg_mae[2], 1e-5); seen_seg++; }
            }
            CHECK(pclose(p) == 0);
        }
        CHECK(seen_srcc && seen_tail && seen_seg == 3);
    }
    aes_head_free(&h);
    /* bad input: a label file with the wrong number of rows is refused */
    snprintf(cmd, sizeof cmd, "printf 'score\\n5\\n6\\n' > %s/short.csv && %s train-head --features %s --labels %s/short.csv "
             "--out %s/x.safetensors --quiet 2>/dev/null", dir, cli, feat, dir, dir);
    CHECK(system(cmd) != 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    aes_labels_free(&L);
    free(x); free(want);
}

static void test_cli_embed_dataset(void) {
    const char *cli = tl_cli(), *model = "tests/fixtures/clip/clip_hf_f32.safetensors";
    char dir[128], cmd[2048], path[256];
    aes_clip *m = NULL;
    aes_safetensors *st = NULL;
    aes_labels L;
    FILE *f;
    int i, k, E;
    if (!cli) return;
    if (aes_clip_load(ctx, model, NULL, &m) != AES_OK) { tl_skip("CLIP test fixture missing"); aes_clear_error(ctx); return; }
    E = aes_clip_config_get(m)->embed_dim;
    snprintf(dir, sizeof dir, "/tmp/aes_test_elta_ed_%ld", (long)time(NULL) ^ (long)clock());
    snprintf(cmd, sizeof cmd, "mkdir -p %s/img", dir);
    CHECK(system(cmd) == 0);
    for (i = 0; i < 3; i++) {
        aes_image img;
        int j;
        memset(&img, 0, sizeof img);
        CHECK_OK(ctx, aes_image_alloc(ctx, &img, 40 + 7 * i, 33, 3));
        for (j = 0; j < (40 + 7 * i) * 33 * 3; j++) img.pixels[j] = (uint8_t)((j * (13 + i) + j / 5) & 255);
        snprintf(path, sizeof path, "%s/img/p%d.ppm", dir, i);
        CHECK_OK(ctx, aes_image_save_ppm(ctx, path, &img));
        aes_image_free(&img);
    }
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) { aes_clip_free(m); return; }
    fprintf(f, "path,score\np0.ppm,3.5\nmissing.ppm,5\np2.ppm,8.25\np1.ppm,6\n");
    fclose(f);
    /* a missing image stops the run ... */
    snprintf(cmd, sizeof cmd, "%s embed-dataset --model %s --images %s/img --labels %s --out %s/set 2>/dev/null", cli,
             model, dir, path, dir);
    CHECK(system(cmd) != 0);
    /* ... unless told to leave it out */
    snprintf(cmd, sizeof cmd, "%s embed-dataset --model %s --images %s/img --labels %s --out %s/set --batch 2 "
             "--skip-missing 2>/dev/null", cli, model, dir, path, dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/set.safetensors", dir);
    if (aes_safetensors_open(ctx, path, &st) == AES_OK) {
        const aes_tensor_view *t = aes_safetensors_find(st, "embeddings");
        CHECK(t && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == E);
        if (t && t->shape[0] == 3 && t->shape[1] == E) {
            float *got = fbuf((size_t)3 * E), *px, want[64];
            int S = aes_clip_config_get(m)->image_size, order[3] = {0, 2, 1};
            px = fbuf((size_t)3 * S * S);
            CHECK_OK(ctx, aes_tensor_to_f32(ctx, t, got, (size_t)3 * E));
            for (i = 0; i < 3 && E <= 64; i++) { /* rows follow the CSV order, minus the missing one */
                aes_image img;
                memset(&img, 0, sizeof img);
                snprintf(path, sizeof path, "%s/img/p%d.ppm", dir, order[i]);
                CHECK_OK(ctx, aes_image_load(ctx, path, &img));
                CHECK_OK(ctx, aes_clip_preprocess(ctx, &img, S, px));
                CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 1, want));
                aes_l2norm_forward(want, NULL, want, 1, E, 1e-12f);
                for (k = 0; k < E; k++) CHECK_NEAR(got[i * E + k], want[k], 1e-5);
                aes_image_free(&img);
            }
            free(got); free(px);
        }
        aes_safetensors_close(st);
    } else {
        CHECK(0);
    }
    snprintf(path, sizeof path, "%s/set.csv", dir);
    CHECK_OK(ctx, aes_labels_read_csv(ctx, &L, path));
    CHECK(L.n == 3 && L.paths != NULL);
    if (L.n == 3 && L.paths) {
        CHECK(!strcmp(L.paths[0], "p0.ppm") && !strcmp(L.paths[1], "p2.ppm") && !strcmp(L.paths[2], "p1.ppm"));
        CHECK_NEAR(L.score[1], 8.25, 1e-6);
    }
    aes_labels_free(&L);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    aes_clip_free(m);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    RUN(test_score_bins);
    RUN(test_bin_groups);
    RUN(test_hist_mean);
    RUN(test_csv_labels);
    RUN(test_csv_errors);
    RUN(test_ava_labels);
    RUN(test_emd_hand);
    RUN(test_emd_reference_and_fd);
    RUN(test_simloss_hand);
    RUN(test_simloss_reference_and_fd);
    RUN(test_simloss_fd_large);
    RUN(test_mixup_forward_backward);
    RUN(test_sampler_paper_frequencies);
    RUN(test_sampler_inverse_frequency);
    RUN(test_sampler_gap_and_counts);
    RUN(test_beta_sampler);
    RUN(test_refine);
    RUN(test_srcc_hand);
    RUN(test_metrics_reference);
    RUN(test_head_grads);
    RUN(test_head_predict);
    RUN(test_synth);
    RUN(test_train_deterministic);
    RUN(test_piecewise_mae);
    RUN(test_mixup_mse_scale);
    RUN(test_refine_stage_rules);
    RUN(test_train_errors);
    RUN(test_head_save_load);
    RUN(test_cli_train_eval_predict);
    RUN(test_cli_embed_dataset);
    RUN(test_train_elta_lowers_tail_mae);
    aes_ctx_free(ctx);
    return tl_report();
}
