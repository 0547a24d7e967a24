/* test_train.c -- optimizers, schedule, losses (finite differences), preference
 * pairs and their TSV format, optimizer state save/resume, the training loops
 * (aes_dpo_finetune, aes_clip_train) and the CLI that drives them. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

/* The 64-bit weight hash that ends aes_clip_id. */
static uint64_t clip_hash(const aes_clip *m) { return (void)aes_clip_id(m), m->hash; }

/* ---- helpers --------------------------------------------------------------- */

static double rel_err(double a, double b) {
    double den = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return den < 1e-12 ? fabs(a - b) : fabs(a - b) / den;
}

static void normalize_rows(float *x, int n, int d) {
    int i, k;
    for (i = 0; i < n; i++) {
        double s = 0;
        for (k = 0; k < d; k++) s += (double)x[i * d + k] * x[i * d + k];
        s = sqrt(s);
        for (k = 0; k < d; k++) x[i * d + k] = (float)(x[i * d + k] / s);
    }
}

/* ---- schedule ---------------------------------------------------------------- */

static void test_lr_schedule(void) {
    aes_optim_config c = aes_optim_config_default(AES_OPTIM_ADAMW);
    c.lr = 1.0f;
    c.warmup_steps = 4;
    c.total_steps = 14;
    c.min_lr_frac = 0.1f;
    CHECK_NEAR(aes_lr_schedule(&c, 0), 0.25, 1e-7);
    CHECK_NEAR(aes_lr_schedule(&c, 3), 1.0, 1e-7);
    CHECK_NEAR(aes_lr_schedule(&c, 4), 1.0, 1e-7);                  /* cosine starts at the peak */
    CHECK_NEAR(aes_lr_schedule(&c, 9), 0.1 + 0.9 * 0.5, 1e-6);      /* half way */
    CHECK_NEAR(aes_lr_schedule(&c, 14), 0.1, 1e-7);
    CHECK_NEAR(aes_lr_schedule(&c, 1000), 0.1, 1e-7);               /* stays at the floor */
    CHECK(aes_lr_schedule(&c, 6) > aes_lr_schedule(&c, 7));
    c.total_steps = 0;
    CHECK_NEAR(aes_lr_schedule(&c, 100), 1.0, 0);
}

/* ---- optimizers against the formulas, in double ----------------------------- */

static void test_sgd_momentum_nesterov(void) {
    aes_ctx *ctx = aes_ctx_create();
    int nesterov;
    for (nesterov = 0; nesterov <= 1; nesterov++) {
        aes_optim_config c = aes_optim_config_default(AES_OPTIM_SGD);
        aes_optim *opt = NULL;
        float p[5], g[5];
        double pr[5], buf[5] = {0};
        int s, i;
        c.lr = 0.1f;
        c.momentum = 0.8f;
        c.nesterov = nesterov;
        c.weight_decay = 0.05f;
        tl_seed(11);
        tl_fill(p, 5, 1.0f);
        for (i = 0; i < 5; i++) pr[i] = p[i];
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 5, NULL, 0, &opt));
        for (s = 0; s < 4; s++) {
            tl_fill(g, 5, 1.0f);
            CHECK_OK(ctx, aes_optim_step(ctx, opt, p, g, c.lr, NULL));
            for (i = 0; i < 5; i++) {
                double d;
                pr[i] *= 1.0 - 0.1 * 0.05;
                buf[i] = s == 0 ? g[i] : 0.8 * buf[i] + g[i];
                d = nesterov ? g[i] + 0.8 * buf[i] : buf[i];
                pr[i] -= 0.1 * d;
            }
        }
        for (i = 0; i < 5; i++) CHECK_NEAR(p[i], pr[i], 1e-6);
        CHECK(aes_optim_steps_done(opt) == 4);
        aes_optim_free(opt);
    }
    aes_ctx_free(ctx);
}

static void test_adamw_and_segments(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_optim_config c = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_param_segment seg[2] = {{1, 3, 1}, {6, 2, 0}};   /* 0, 4, 5 frozen; 6..7 no decay */
    aes_optim *opt = NULL;
    float p[8], p0[8], g[8];
    double pr[8], m[8] = {0}, v[8] = {0};
    int s, i;
    c.lr = 0.01f;
    c.weight_decay = 0.1f;
    tl_seed(5);
    tl_fill(p, 8, 1.0f);
    memcpy(p0, p, sizeof p);
    for (i = 0; i < 8; i++) pr[i] = p[i];
    CHECK_OK(ctx, aes_optim_create(ctx, &c, 8, seg, 2, &opt));
    CHECK(aes_optim_trainable(opt) == 5);
    for (s = 1; s <= 3; s++) {
        tl_fill(g, 8, 0.5f);
        CHECK_OK(ctx, aes_optim_step(ctx, opt, p, g, c.lr, NULL));
        for (i = 0; i < 8; i++) {
            int train = (i >= 1 && i <= 3) || i >= 6, decay = i >= 1 && i <= 3;
            if (!train) continue;
            if (decay) pr[i] *= 1.0 - 0.01 * 0.1;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * (double)g[i] * g[i];
            pr[i] -= 0.01 * (m[i] / (1 - pow(0.9, s))) / (sqrt(v[i] / (1 - pow(0.999, s))) + 1e-8);
        }
    }
    for (i = 0; i < 8; i++) CHECK_NEAR(p[i], pr[i], 2e-6);
    CHECK(p[0] == p0[0] && p[4] == p0[4] && p[5] == p0[5]);     /* frozen: bit-identical */
    aes_optim_free(opt);
    /* overlapping or out-of-range segments are rejected */
    seg[1].offset = 2;
    CHECK(aes_optim_create(ctx, &c, 8, seg, 2, &opt) == AES_ERR_INVALID_ARG);
    seg[1].offset = 7;
    CHECK(aes_optim_create(ctx, &c, 8, seg, 2, &opt) == AES_ERR_INVALID_ARG);
    c.beta1 = 1.5f;
    CHECK(aes_optim_create(ctx, &c, 8, NULL, 0, &opt) == AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

static void test_clip_norm_and_nonfinite(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_optim_config c = aes_optim_config_default(AES_OPTIM_SGD);
    aes_optim *opt = NULL;
    aes_optim_stats st;
    float p[2] = {0, 0}, g[2] = {3, 4};
    c.momentum = 0;
    c.lr = 1.0f;
    c.clip_norm = 1.0f;
    CHECK_OK(ctx, aes_optim_create(ctx, &c, 2, NULL, 0, &opt));
    CHECK_OK(ctx, aes_optim_step(ctx, opt, p, g, 1.0f, &st));
    CHECK_NEAR(st.grad_norm, 5.0, 1e-12);
    CHECK_NEAR(p[0], -0.6, 1e-6);           /* g scaled to unit norm */
    CHECK_NEAR(p[1], -0.8, 1e-6);
    g[1] = NAN;
    CHECK(aes_optim_step(ctx, opt, p, g, 1.0f, &st) == AES_ERR_NUMERIC);
    CHECK_NEAR(p[0], -0.6, 1e-6);           /* untouched */
    CHECK(aes_optim_steps_done(opt) == 1);
    aes_optim_free(opt);
    aes_ctx_free(ctx);
}

/* Same result with 1 and 2 threads, to the bit, on a buffer of many chunks. */
static void test_optim_thread_invariance(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_optim_config c = aes_optim_config_default(AES_OPTIM_ADAMW);
    size_t n = 100003, i;
    float *p1 = (float *)malloc(n * 4), *p2 = (float *)malloc(n * 4), *g = (float *)malloc(n * 4);
    aes_optim *o1 = NULL, *o2 = NULL;
    aes_optim_stats s1, s2;
    int k, same = 1;
    c.clip_norm = 0.5f;
    tl_seed(3);
    tl_fill(p1, n, 1.0f);
    memcpy(p2, p1, n * 4);
    CHECK_OK(ctx, aes_optim_create(ctx, &c, n, NULL, 0, &o1));
    CHECK_OK(ctx, aes_optim_create(ctx, &c, n, NULL, 0, &o2));
    for (k = 0; k < 3; k++) {
        tl_fill(g, n, 1.0f);
        aes_threads_set(ctx, 1);
        CHECK_OK(ctx, aes_optim_step(ctx, o1, p1, g, 1e-3f, &s1));
        aes_threads_set(ctx, 2);
        CHECK_OK(ctx, aes_optim_step(ctx, o2, p2, g, 1e-3f, &s2));
        CHECK(s1.grad_norm == s2.grad_norm);
    }
    for (i = 0; i < n; i++) same &= p1[i] == p2[i];
    CHECK(same);
    aes_optim_free(o1);
    aes_optim_free(o2);
    free(p1); free(p2); free(g);
    aes_ctx_free(ctx);
}

/* Interrupt after 2 steps, save, load into a fresh optimizer, continue:
 * the same parameters as an uninterrupted run, to the bit. */
static void test_optim_save_resume(void) {
    aes_ctx *ctx = aes_ctx_create();
    int kind;
    for (kind = 0; kind <= 1; kind++) {
        aes_optim_config c = aes_optim_config_default((aes_optim_kind)kind);
        aes_param_segment seg[2] = {{0, 7, 1}, {9, 4, 0}};
        aes_optim *a = NULL, *b = NULL;
        float pa[13], pb[13], g[5][13];
        unsigned char *blob = NULL;
        size_t len = 0;
        int s, i, same = 1;
        const char *path = tl_tmp("test_train_optim.safetensors");
        c.nesterov = kind == 0;
        tl_seed(77);
        tl_fill(pa, 13, 1.0f);
        memcpy(pb, pa, sizeof pa);
        for (s = 0; s < 5; s++) tl_fill(g[s], 13, 1.0f);
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 13, seg, 2, &a));
        for (s = 0; s < 5; s++) CHECK_OK(ctx, aes_optim_step(ctx, a, pa, g[s], aes_lr_schedule(&c, s), NULL));
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 13, seg, 2, &b));
        for (s = 0; s < 2; s++) CHECK_OK(ctx, aes_optim_step(ctx, b, pb, g[s], aes_lr_schedule(&c, s), NULL));
        CHECK_OK(ctx, aes_optim_save(ctx, b, path));
        aes_optim_free(b);
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 13, seg, 2, &b));
        CHECK_OK(ctx, aes_optim_load(ctx, b, path));
        CHECK(aes_optim_steps_done(b) == 2);
        for (s = 2; s < 5; s++)
            CHECK_OK(ctx, aes_optim_step(ctx, b, pb, g[s], aes_lr_schedule(&c, aes_optim_steps_done(b)), NULL));
        for (i = 0; i < 13; i++) same &= pa[i] == pb[i];
        CHECK(same);
        /* a different layout or truncated data is refused */
        CHECK_OK(ctx, aes_optim_save_memory(ctx, b, &blob, &len));
        aes_optim_free(b);
        seg[1].count = 3;
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 13, seg, 2, &b));
        CHECK(aes_optim_load_memory(ctx, b, blob, len) == AES_ERR_MISMATCH);
        aes_optim_free(b);
        seg[1].count = 4;
        CHECK_OK(ctx, aes_optim_create(ctx, &c, 13, seg, 2, &b));
        CHECK(aes_optim_load_memory(ctx, b, blob, len - 4) == AES_ERR_FORMAT);
        CHECK(aes_optim_load_memory(ctx, b, blob, 5) == AES_ERR_FORMAT);
        CHECK_OK(ctx, aes_optim_load_memory(ctx, b, blob, len));
        aes_free(blob);
        aes_optim_free(a);
        aes_optim_free(b);
        remove(path);
    }
    aes_ctx_free(ctx);
}

/* ---- losses ------------------------------------------------------------------ */

/* CLIP loss computed independently in double, straight from the definition. */
static double clip_loss_ref(const float *img, const float *txt, int n, int d, double ls, double eps) {
    double total = 0, scale = exp(ls);
    int i, j, k, dir;
    for (dir = 0; dir < 2; dir++)
        for (i = 0; i < n; i++) {
            double mx = -1e300, s = 0, lg[64];
            for (j = 0; j < n; j++) {
                const float *a = dir ? txt + i * d : img + i * d, *b = dir ? img + j * d : txt + j * d;
                double dot = 0;
                for (k = 0; k < d; k++) dot += (double)a[k] * b[k];
                lg[j] = scale * dot;
                if (lg[j] > mx) mx = lg[j];
            }
            for (j = 0; j < n; j++) s += exp(lg[j] - mx);
            for (j = 0; j < n; j++) {
                double q = (i == j ? 1 - eps : 0) + eps / n;
                total -= q * (lg[j] - mx - log(s));
            }
        }
    return total / (2.0 * n);
}

typedef struct clip_fd { const float *img, *txt; int n, d; const float *ls; double eps; } clip_fd;
static double clip_fd_loss(void *p) {
    const clip_fd *q = (const clip_fd *)p;
    return clip_loss_ref(q->img, q->txt, q->n, q->d, *q->ls, q->eps);
}

static void test_clip_loss_gradcheck(void) {
    aes_ctx *ctx = aes_ctx_create();
    enum { N = 5, D = 7 };
    float img[N * D], txt[N * D], dimg[N * D], dtxt[N * D], work[N * N + 2 * N];
    float ls = 1.3f, dls, loss, acc;
    double worst = 0;
    int sm, i;
    tl_seed(21);
    tl_fill(img, N * D, 1.0f);
    tl_fill(txt, N * D, 1.0f);
    normalize_rows(img, N, D);
    normalize_rows(txt, N, D);
    for (sm = 0; sm <= 1; sm++) {
        float eps = sm ? 0.1f : 0.0f, gs = 0.7f;
        memset(dimg, 0, sizeof dimg);
        memset(dtxt, 0, sizeof dtxt);
        dls = 0;
        CHECK_OK(ctx, aes_clip_loss(ctx, img, txt, N, D, ls, eps, gs, dimg, dtxt, &dls, work, &loss, &acc));
        CHECK_NEAR(loss, clip_loss_ref(img, txt, N, D, ls, eps), 1e-5);
        CHECK(acc >= 0 && acc <= 1);
        /* central differences in double through the reference loss */
        {
            clip_fd q;
            tl_fd_opts o = tl_fd_default();
            tl_fd_result r;
            q.img = img; q.txt = txt; q.n = N; q.d = D; q.ls = &ls; q.eps = eps;
            o.h = 1e-3; o.rtol = 1e-3; o.atol = 2e-4; o.scale = gs;
            r = CHECK_GRAD("clip loss dimg", clip_fd_loss, &q, img, dimg, N * D, &o);
            if (r.max_rel_err > worst) worst = r.max_rel_err;
            r = CHECK_GRAD("clip loss dtxt", clip_fd_loss, &q, txt, dtxt, N * D, &o);
            if (r.max_rel_err > worst) worst = r.max_rel_err;
            o.atol = 1e-4;
            CHECK_GRAD("clip loss dlogit_scale", clip_fd_loss, &q, &ls, &dls, 1, &o);
        }
    }
    CHECK(worst < 5e-3);
    /* perfectly matched, well separated pairs: loss ~ 0 and accuracy 1 */
    memset(img, 0, sizeof img);
    for (i = 0; i < N; i++) img[i * D + i] = 1.0f;
    memcpy(txt, img, sizeof img);
    CHECK_OK(ctx, aes_clip_loss(ctx, img, txt, N, D, 4.6f, 0.0f, 1.0f, NULL, NULL, NULL, work, &loss, &acc));
    CHECK(loss < 1e-3f);
    CHECK(acc == 1.0f);
    CHECK(aes_clip_loss(ctx, img, txt, N, D, 4.6f, 1.0f, 1.0f, NULL, NULL, NULL, work, &loss, &acc) ==
          AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

static double dpo_loss_ref(const float *txt, const float *img, int d, double ls, const aes_dpo_item *it,
                           int n, double beta, double eps) {
    double total = 0, wsum = 0, scale = exp(ls);
    int p, k;
    for (p = 0; p < n; p++) wsum += it[p].weight;
    for (p = 0; p < n; p++) {
        double cw = 0, cl = 0, h;
        for (k = 0; k < d; k++) {
            cw += (double)txt[it[p].query * d + k] * img[it[p].preferred * d + k];
            cl += (double)txt[it[p].query * d + k] * img[it[p].rejected * d + k];
        }
        h = (scale * cw - it[p].ref_preferred) - (scale * cl - it[p].ref_rejected);
        total += it[p].weight / wsum *
                 (-(1 - eps) * log(1 / (1 + exp(-beta * h))) - eps * log(1 / (1 + exp(beta * h))));
    }
    return total;
}

typedef struct dpo_fd {
    const float *txt, *img, *ls;
    int d, n;
    const aes_dpo_item *it;
    double beta, eps;
} dpo_fd;
static double dpo_fd_loss(void *p) {
    const dpo_fd *q = (const dpo_fd *)p;
    return dpo_loss_ref(q->txt, q->img, q->d, *q->ls, q->it, q->n, q->beta, q->eps);
}

static void test_dpo_loss_gradcheck(void) {
    aes_ctx *ctx = aes_ctx_create();
    enum { NT = 3, NI = 6, D = 8, NP = 7 };
    float txt[NT * D], img[NI * D], dtxt[NT * D], dimg[NI * D], ref_txt[NT * D], ref_img[NI * D];
    aes_dpo_item it[NP];
    aes_dpo_stats st;
    float ls = 2.0f, dls = 0, beta = 0.5f, eps = 0.1f, gs = 1.3f;
    int p;
    tl_seed(8);
    tl_fill(txt, NT * D, 1.0f);
    tl_fill(img, NI * D, 1.0f);
    normalize_rows(txt, NT, D);
    normalize_rows(img, NI, D);
    for (p = 0; p < NP; p++) {
        it[p].query = p % NT;
        it[p].preferred = p % NI;
        it[p].rejected = (p + 2) % NI;
        it[p].weight = 0.5f + (float)p / 4;
    }
    /* at the reference itself h = 0 for every pair: L = log 2, zero margin */
    CHECK_OK(ctx, aes_dpo_items_set_reference(ctx, it, NP, txt, NT, img, NI, D, ls));
    CHECK_OK(ctx, aes_dpo_loss(ctx, txt, NT, img, NI, D, ls, it, NP, beta, 0.0f, 1.0f, NULL, NULL, NULL, &st));
    CHECK_NEAR(st.loss, log(2.0), 1e-6);
    CHECK_NEAR(st.margin, 0.0, 1e-6);
    CHECK(st.reward_accuracy == 0.0f);
    /* a different reference, then check gradients */
    memcpy(ref_txt, txt, sizeof txt);
    memcpy(ref_img, img, sizeof img);
    tl_fill(ref_img, NI * D, 1.0f);
    normalize_rows(ref_img, NI, D);
    CHECK_OK(ctx, aes_dpo_items_set_reference(ctx, it, NP, ref_txt, NT, ref_img, NI, D, ls));
    memset(dtxt, 0, sizeof dtxt);
    memset(dimg, 0, sizeof dimg);
    CHECK_OK(ctx, aes_dpo_loss(ctx, txt, NT, img, NI, D, ls, it, NP, beta, eps, gs, dtxt, dimg, &dls, &st));
    CHECK_NEAR(st.loss, dpo_loss_ref(txt, img, D, ls, it, NP, beta, eps), 1e-5);
    {
        dpo_fd q;
        tl_fd_opts o = tl_fd_default();
        q.txt = txt; q.img = img; q.d = D; q.ls = &ls; q.it = it; q.n = NP; q.beta = beta; q.eps = eps;
        o.h = 1e-3; o.rtol = 1e-3; o.atol = 1e-4; o.scale = gs;
        CHECK_GRAD("dpo loss dimg", dpo_fd_loss, &q, img, dimg, NI * D, &o);
        CHECK_GRAD("dpo loss dtxt", dpo_fd_loss, &q, txt, dtxt, NT * D, &o);
        CHECK_GRAD("dpo loss dlogit_scale", dpo_fd_loss, &q, &ls, &dls, 1, &o);
    }
    /* bad items are refused with a message */
    it[2].rejected = NI;
    CHECK(aes_dpo_loss(ctx, txt, NT, img, NI, D, ls, it, NP, beta, eps, 1, NULL, NULL, NULL, &st) ==
          AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(ctx), "item 2") != NULL);
    aes_ctx_free(ctx);
}

/* ---- preference pairs ---------------------------------------------------------- */

static void test_pairs_grid(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_pair_grid_config g = {2, 3, 1, 0, AES_PAIR_ROWS_RERANKED};
    /* candidates in retrieval order; aesthetic scores */
    float aes[8] = {1.0f, 3.0f, 2.0f, 9.0f, 5.0f, 7.0f, 100.0f, 100.0f};
    aes_pair_index out[64];
    int n = 0, i, found;
    CHECK(aes_pair_grid_max(&g) == 3 * 6 - 6);
    CHECK_OK(ctx, aes_pairs_from_grid(ctx, &g, aes, 8, out, 64, &n));
    CHECK(n == 12);
    /* row 0 sorted by aesthetic: 1 (3.0), 2 (2.0), 0 (1.0); row 1: 3, 5, 4 */
    found = 0;
    for (i = 0; i < n; i++) {
        int w = out[i].preferred, l = out[i].rejected;
        CHECK(w < 6 && l < 6);                 /* candidates 6, 7 are outside the grid */
        if (w == 1 && l == 0) found |= 1;       /* same row: more aesthetic wins */
        if (w == 1 && l == 3) found |= 2;       /* column 0 row 0 beats column 0 row 1 */
        if (w == 0 && l == 3) found |= 4;       /* must NOT happen: less aesthetic column */
        if (w == 2 && l == 4) found |= 8;       /* (0,1) beats (1,2) */
        CHECK(out[i].weight == 1.0f);
    }
    CHECK(found == (1 | 2 | 8));
    /* stride 2: candidates 0, 2, 4, 6 -> one 2 x 2 grid at most */
    g.rows = 2; g.cols = 2; g.stride = 2;
    CHECK_OK(ctx, aes_pairs_from_grid(ctx, &g, aes, 8, out, 64, &n));
    CHECK(n == 5);
    for (i = 0; i < n; i++) CHECK(out[i].preferred % 2 == 0 && out[i].rejected % 2 == 0);
    /* too few candidates shrink the grid; max_pairs thins evenly */
    g.rows = 4; g.cols = 3; g.stride = 1; g.max_pairs = 0;
    CHECK_OK(ctx, aes_pairs_from_grid(ctx, &g, aes, 7, out, 64, &n));
    CHECK(n == 12);
    g.max_pairs = 5;
    CHECK_OK(ctx, aes_pairs_from_grid(ctx, &g, aes, 7, out, 64, &n));
    CHECK(n == 5);
    CHECK(aes_pairs_from_grid(ctx, &g, aes, 7, out, 3, &n) == AES_ERR_LIMIT);
    g.stride = 0;
    CHECK(aes_pairs_from_grid(ctx, &g, aes, 7, out, 64, &n) == AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

/* Rows from the re-ranked list (the paper's, the default) or the raw cosine
 * order: the same four results give different grids. */
static void test_pairs_from_results(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_pair_grid_config g;
    /* cosine order 1 0 2 3; re-ranked (final) order 2 1 3 0 */
    aes_result res[4] = {{10, 0.30f, 5.0f, 0.29f}, {11, 0.35f, 4.0f, 0.31f}, {12, 0.28f, 7.0f, 0.33f},
                         {13, 0.25f, 6.0f, 0.30f}};
    /* cosine: rows {1, 0} -> [0, 1] by aesthetic, {2, 3} -> [2, 3] */
    static const int want_cos[5][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 3}, {2, 3}};
    /* re-ranked: rows {2, 1} -> [2, 1], {3, 0} -> [3, 0] */
    static const int want_rr[5][2] = {{2, 1}, {2, 3}, {2, 0}, {1, 0}, {3, 0}};
    aes_pair_index out[16];
    int n = 0, i;
    memset(&g, 0, sizeof g);
    g.rows = 2; g.cols = 2; g.stride = 1;
    CHECK(g.rows_from == AES_PAIR_ROWS_RERANKED);   /* zero = the paper's */
    CHECK_OK(ctx, aes_pairs_from_results(ctx, &g, res, 4, out, 16, &n));
    CHECK(n == 5);
    for (i = 0; i < n && i < 5; i++)
        CHECK_MSG(out[i].preferred == want_rr[i][0] && out[i].rejected == want_rr[i][1],
                  "re-ranked pair %d: %d > %d, want %d > %d", i, out[i].preferred, out[i].rejected, want_rr[i][0], want_rr[i][1]);
    g.rows_from = AES_PAIR_ROWS_COSINE;
    CHECK_OK(ctx, aes_pairs_from_results(ctx, &g, res, 4, out, 16, &n));
    CHECK(n == 5);
    for (i = 0; i < n && i < 5; i++)
        CHECK_MSG(out[i].preferred == want_cos[i][0] && out[i].rejected == want_cos[i][1],
                  "cosine pair %d: %d > %d, want %d > %d", i, out[i].preferred, out[i].rejected, want_cos[i][0], want_cos[i][1]);
    /* a result the grid uses without an aesthetic score is refused; one it
     * does not use (beyond rows x cols) is not looked at */
    res[3].aesthetic = NAN;
    CHECK(aes_pairs_from_results(ctx, &g, res, 4, out, 16, &n) == AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(ctx), "result 3 has no aesthetic score") != NULL);
    g.rows = 1;
    CHECK_OK(ctx, aes_pairs_from_results(ctx, &g, res, 4, out, 16, &n));
    CHECK(n == 1 && out[0].preferred == 0 && out[0].rejected == 1);
    g.rows_from = (aes_pair_rows)7;
    CHECK(aes_pairs_from_results(ctx, &g, res, 4, out, 16, &n) == AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

static void test_pair_tsv(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_pair_set *a = NULL, *b = NULL;
    const char *text =
        "# comment\r\n"
        "a red fox\timgs/1.jpg\timgs/2.jpg\r\n"
        "\n"
        "a red fox\timgs/3.jpg\timgs/2.jpg\t2.5\n"
        "tab\\there\\\\x\timgs/4.jpg\timgs/1.jpg";           /* no final newline */
    char *out = NULL;
    size_t len = 0;
    int i;
    const char *path = tl_tmp("test_train_pairs.tsv");
    CHECK_OK(ctx, aes_pair_set_create(ctx, &a));
    CHECK_OK(ctx, aes_pair_set_parse(ctx, a, text, strlen(text), "mem"));
    CHECK(a->npairs == 3 && a->nqueries == 2 && a->npaths == 4);
    CHECK(!strcmp(a->queries[1], "tab\there\\x"));
    CHECK(a->pairs[1].weight == 2.5f && a->pairs[0].weight == 1.0f);
    CHECK(a->pairs[1].rejected == a->pairs[0].rejected);
    CHECK_OK(ctx, aes_pair_set_write(ctx, a, path));
    CHECK_OK(ctx, aes_pair_set_create(ctx, &b));
    CHECK_OK(ctx, aes_pair_set_read(ctx, b, path));
    CHECK(b->npairs == 3);
    for (i = 0; i < 3 && b->npairs == 3; i++) {
        CHECK(!strcmp(a->queries[a->pairs[i].query], b->queries[b->pairs[i].query]));
        CHECK(!strcmp(a->paths[a->pairs[i].preferred], b->paths[b->pairs[i].preferred]));
        CHECK(!strcmp(a->paths[a->pairs[i].rejected], b->paths[b->pairs[i].rejected]));
        CHECK(a->pairs[i].weight == b->pairs[i].weight);
    }
    CHECK_OK(ctx, aes_pair_set_format(ctx, b, &out, &len));
    CHECK(strstr(out, "tab\\there\\\\x\t") != NULL);
    aes_free(out);
    /* errors name the line */
    CHECK(aes_pair_set_parse(ctx, b, "q\ta\n\nq\ta\tb\tx\n", 14, "f.tsv") == AES_ERR_FORMAT);
    CHECK(strstr(aes_last_error(ctx), "f.tsv:1") != NULL);
    CHECK(aes_pair_set_parse(ctx, b, "q\ta\tb\t-1\n", 9, "f.tsv") == AES_ERR_FORMAT);
    CHECK(aes_pair_set_parse(ctx, b, "q\ta\ta\n", 6, "f.tsv") == AES_ERR_INVALID_ARG);
    CHECK(aes_pair_set_parse(ctx, b, "q\\x\ta\tb\n", 8, "f.tsv") == AES_ERR_FORMAT);
    CHECK(aes_pair_set_parse(ctx, b, "q\ta\tb\t1\t2\n", 10, "f.tsv") == AES_ERR_FORMAT);
    CHECK(aes_pair_set_read(ctx, b, tl_tmp("does-not-exist.tsv")) == AES_ERR_IO);
    aes_pair_set_free(a);
    aes_pair_set_free(b);
    remove(path);
    aes_ctx_free(ctx);
}


/* ---- the CLIP model ----------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); return NULL; }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A tensor of a safetensors file as float32 (the library's own reader);
 * "tokens" (I32) comes back as its raw 32-bit words. */
static float *st_tensor(aes_ctx *ctx, const unsigned char *buf, size_t len, const char *name, size_t *count) {
    aes_safetensors *st;
    const aes_tensor_view *v;
    float *out = NULL;
    if (aes_safetensors_load_memory(ctx, buf, len, 0, &st) != AES_OK) return NULL;
    v = aes_safetensors_find(st, name);
    if (v && (v->dtype == AES_DTYPE_F32 || v->dtype == AES_DTYPE_F16 || v->dtype == AES_DTYPE_BF16 ||
              v->dtype == AES_DTYPE_F64)) {
        out = (float *)malloc((size_t)v->numel * sizeof(float) + 4);
        if (out && aes_tensor_to_f32(ctx, v, out, (size_t)v->numel) != AES_OK) { free(out); out = NULL; }
        if (count) *count = (size_t)v->numel;
    } else if (v && v->dtype == AES_DTYPE_I32 && !strcmp(name, "tokens")) {
        out = (float *)malloc((size_t)v->numel * sizeof(float) + 4);
        if (out) memcpy(out, v->data, (size_t)v->numel * 4);
        if (count) *count = (size_t)v->numel;
    }
    aes_safetensors_close(st);
    return out;
}

/* A tiny CLIP of either layout and activation, CLIP-initialised. */
static aes_clip_config tiny_config(aes_layout layout, int quick) {
    aes_clip_config c;
    memset(&c, 0, sizeof c);
    c.has_vision = c.has_text = 1;
    c.image_size = 16; c.patch_size = 8; c.vision_width = 8; c.vision_layers = 2; c.vision_heads = 2; c.vision_mlp = 16;
    c.context_length = 7; c.vocab_size = 20; c.text_width = 8; c.text_layers = 2; c.text_heads = 2; c.text_mlp = 12;
    c.embed_dim = 6;
    c.act = quick ? AES_ACT_QUICK_GELU : AES_ACT_GELU;
    c.ln_eps = 1e-5f;
    c.layout = layout;
    return c;
}

static aes_clip *tiny_model(aes_ctx *ctx, aes_layout layout, int quick, uint64_t seed) {
    aes_clip_config c = tiny_config(layout, quick);
    aes_clip *m = NULL;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, seed, &m));
    return m;
}

/* Perturbs every parameter a little so no LN weight is 1 and no bias 0. */
static void perturb_params(aes_clip *m, float scale) {
    size_t n = aes_clip_num_params(m), i;
    float *p = aes_clip_params_data(m);
    for (i = 0; i < n; i++) p[i] += scale * tl_randf();
}

static int params_equal(const aes_clip *a, const aes_clip *b) {
    size_t n = aes_clip_num_params(a);
    return n == aes_clip_num_params(b) &&
           !memcmp(aes_clip_params_data((aes_clip *)a), aes_clip_params_data((aes_clip *)b), n * sizeof(float));
}

static void make_tiny_batch(float *pixels, int nimg, int32_t *tokens, int ntxt, int ctxlen, int vocab) {
    int b, k;
    tl_fill(pixels, (size_t)nimg * 3 * 16 * 16, 1.0f);
    for (b = 0; b < ntxt; b++) {
        int len = 2 + b % (ctxlen - 1);                   /* start, words, end */
        for (k = 0; k < ctxlen; k++) tokens[b * ctxlen + k] = 0;
        tokens[b * ctxlen] = vocab - 2;
        for (k = 1; k < len - 1; k++) tokens[b * ctxlen + k] = 1 + (int)(tl_uniform() * (vocab - 3));
        tokens[b * ctxlen + len - 1] = vocab - 1;
    }
}

/* The trainer's embeddings against the PyTorch reference of tools/clip_reference.py. */
static void test_clip_forward_matches_fixture(void) {
    aes_ctx *ctx = aes_ctx_create();
    const char *files[2] = {"tests/fixtures/clip/clip_hf_f32.safetensors", "tests/fixtures/clip/clip_openai_f16.safetensors"};
    const char *tags[2] = {"f32", "f16"};
    size_t rlen, n;
    unsigned char *refs = read_file("tests/fixtures/clip/clip_refs.safetensors", &rlen);
    int f;
    if (!refs) { tl_skip("tests/fixtures/clip not present"); aes_ctx_free(ctx); return; }
    for (f = 0; f < 2; f++) {
        aes_train_options o = aes_train_options_default();
        aes_clip_trainer *tr = NULL;
        aes_clip *m = NULL;
        float *pixels = st_tensor(ctx, refs, rlen, "pixels", &n), *emb, *want;
        int32_t *tokens = (int32_t *)st_tensor(ctx, refs, rlen, "tokens", NULL);
        char name[64];
        int nimg, ntxt, E, i, k;
        o.max_images = 3;
        o.max_texts = 4;
        CHECK_OK(ctx, aes_clip_load(ctx, files[f], NULL, &m));
        if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &o, &tr));
        if (!tr || !pixels || !tokens) { free(pixels); free(tokens); aes_clip_free(m); continue; }
        CHECK(aes_clip_config_get(m)->layout == (f == 0 ? AES_LAYOUT_HF : AES_LAYOUT_OPENAI));
        CHECK(aes_clip_config_get(m)->vision_heads == 2 && aes_clip_config_get(m)->text_layers == 2);
        E = aes_clip_config_get(m)->embed_dim;
        nimg = (int)(n / (3 * 32 * 32));
        ntxt = 4;
        emb = (float *)malloc(sizeof(float) * 8 * E);
        for (i = 0; i < 2; i++) {
            size_t wn;
            int rows = i == 0 ? nimg : ntxt;
            double worst = 0, cosmin = 1;
            snprintf(name, sizeof name, "%s_quick_gelu_%s", tags[f], i == 0 ? "image" : "text");
            want = st_tensor(ctx, refs, rlen, name, &wn);
            CHECK(want && wn == (size_t)rows * E);
            if (!want) continue;
            if (i == 0) CHECK_OK(ctx, aes_clip_trainer_encode_images(ctx, tr, pixels, nimg, emb));
            else CHECK_OK(ctx, aes_clip_trainer_encode_texts(ctx, tr, tokens, ntxt, emb));
            normalize_rows(want, rows, E);
            for (k = 0; k < rows; k++) {
                double dot = 0;
                int c;
                for (c = 0; c < E; c++) {
                    dot += (double)emb[k * E + c] * want[k * E + c];
                    if (fabs(emb[k * E + c] - want[k * E + c]) > worst) worst = fabs(emb[k * E + c] - want[k * E + c]);
                }
                if (dot < cosmin) cosmin = dot;
            }
            CHECK_MSG(cosmin >= 0.99999 && worst < 1e-4, "%s: min cosine %.8f, max abs diff %.3g", name, cosmin, worst);
            free(want);
        }
        free(emb); free(pixels); free(tokens);
        aes_clip_trainer_free(tr);
        aes_clip_free(m);
    }
    free(refs);
    aes_ctx_free(ctx);
}

/* Loss of the combined objective at the current parameters (no backward). */
static double combined_loss(aes_ctx *ctx, aes_clip_trainer *tr, const aes_dpo_config *cfg, const aes_dpo_batch *b) {
    aes_train_step_stats st;
    if (aes_dpo_forward_backward(ctx, tr, cfg, b, 0, &st) != AES_OK) return NAN;
    return st.loss;
}

typedef struct step_fd {
    aes_ctx *ctx;
    aes_clip_trainer *tr;
    const aes_dpo_config *cfg;
    const aes_dpo_batch *b;
} step_fd;
static double step_fd_loss(void *p) {
    const step_fd *q = (const step_fd *)p;
    return combined_loss(q->ctx, q->tr, q->cfg, q->b);
}

/* Every tensor of both towers against central differences of the full loss
 * (DPO + contrastive), both layouts and both activations (3 entries of each
 * tensor, evenly spread). */
static void test_clip_backward_gradcheck(void) {
    aes_ctx *ctx = aes_ctx_create();
    int variant;
    for (variant = 0; variant < 3; variant++) {
        aes_clip *m = tiny_model(ctx, variant == 1 ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF, variant != 2, 42 + variant);
        aes_train_options o = aes_train_options_default();
        aes_clip_trainer *tr = NULL;
        aes_dpo_config cfg = aes_dpo_config_default();
        aes_dpo_batch b;
        aes_dpo_item items[4];
        float pixels[3 * 3 * 16 * 16], *p, *g;
        int32_t tokens[4 * 7];
        const aes_clip_tensor *tensors;
        step_fd q;
        tl_fd_opts fd = tl_fd_default();
        int i, nt = 0;
        o.train_text = 1;
        o.train_logit_scale = 1;
        o.max_images = 3;
        o.max_texts = 4;
        if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &o, &tr));
        if (!tr) { aes_clip_free(m); continue; }
        tl_seed(100 + variant);
        perturb_params(m, 0.1f);
        make_tiny_batch(pixels, 3, tokens, 4, 7, 20);
        for (i = 0; i < 4; i++) {
            items[i].query = i;
            items[i].preferred = i % 3;
            items[i].rejected = (i + 1) % 3;
            items[i].weight = 1.0f + i;
            items[i].ref_preferred = 0.5f * tl_randf();
            items[i].ref_rejected = 0.5f * tl_randf();
        }
        memset(&b, 0, sizeof b);
        b.pixels = pixels; b.nimages = 3; b.tokens = tokens; b.ntexts = 4;
        b.items = items; b.nitems = 4; b.nmatched = 3;
        cfg.beta = 0.5f;
        cfg.lambda = 0.7f;
        cfg.clip_label_smoothing = 0.1f;
        CHECK_OK(ctx, aes_dpo_forward_backward(ctx, tr, &cfg, &b, 1, NULL));
        p = aes_clip_params_data(m);
        g = aes_clip_trainer_grads(tr, NULL);
        tensors = aes_clip_tensors(m, &nt);
        q.ctx = ctx; q.tr = tr; q.cfg = &cfg; q.b = &b;
        fd.h = 2e-3; fd.rtol = 5e-2; fd.atol = 2e-3; fd.max_entries = 3;
        for (i = 0; i < nt; i++) {
            char what[96];
            snprintf(what, sizeof what, "variant %d %s", variant, tensors[i].name);
            CHECK_GRAD(what, step_fd_loss, &q, p + tensors[i].offset, g + tensors[i].offset, tensors[i].numel, &fd);
        }
        aes_clip_trainer_free(tr);
        aes_clip_free(m);
    }
    aes_ctx_free(ctx);
}

/* A vision-only model (no text tower) trains on cached text embeddings:
 * the trainer keeps its text capacity for them. */
static void test_vision_only_cached_texts(void) {
    aes_ctx *ctx = tl_ctx();
    aes_clip_config c = tiny_config(AES_LAYOUT_HF, 1);
    aes_clip *m = NULL;
    aes_clip_trainer *tr = NULL;
    aes_train_options o = aes_train_options_default();
    aes_dpo_config cfg = aes_dpo_config_default();
    aes_dpo_item items[2] = {{0, 0, 1, 1.0f, 0.1f, -0.2f}, {1, 2, 0, 1.0f, 0.0f, 0.3f}};
    aes_dpo_batch b;
    aes_train_step_stats st;
    float pixels[3 * 3 * 16 * 16], txt[2 * 6];
    int32_t tokens[3 * 7];
    c.has_text = 0;
    o.max_images = 3;
    o.max_texts = 2;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 9, &m));
    if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &o, &tr));
    if (tr) {
        tl_seed(6);
        make_tiny_batch(pixels, 3, tokens, 3, 7, 20);
        tl_fill(txt, 2 * 6, 1.0f);
        normalize_rows(txt, 2, 6);
        memset(&b, 0, sizeof b);
        b.pixels = pixels; b.nimages = 3; b.text_emb = txt; b.ntexts = 2; b.items = items; b.nitems = 2;
        CHECK_OK(ctx, aes_dpo_forward_backward(ctx, tr, &cfg, &b, 1, &st));
        CHECK(st.loss > 0.0f && st.loss == st.loss);
        b.ntexts = 3;   /* one more cached row than the capacity: refused with a message */
        CHECK(aes_dpo_forward_backward(ctx, tr, &cfg, &b, 1, &st) == AES_ERR_LIMIT);
        CHECK(aes_clip_trainer_encode_texts(ctx, tr, tokens, 1, txt) == AES_ERR_UNSUPPORTED);
    }
    aes_clip_trainer_free(tr);
    aes_clip_free(m);
    aes_ctx_free(ctx);
}

/* Is this canonical vision tensor at or above vision block 1? */
static int above_vision_block1(const char *name) {
    int blk;
    if (strncmp(name, "vision.", 7)) return 0;
    if (sscanf(name, "vision.blocks.%d.", &blk) == 1) return blk >= 1;
    return strstr(name, "ln_post") || strstr(name, "proj.weight");
}

/* Frozen parts get exactly zero gradient; trainable parts exactly the
 * gradient they get when nothing is frozen; the optimizer segments cover
 * exactly the trainable tensors. */
static void test_clip_freeze(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *m = tiny_model(ctx, AES_LAYOUT_HF, 1, 7);
    aes_train_options full = aes_train_options_default(), part;
    aes_clip_trainer *t1 = NULL, *t2 = NULL;
    aes_dpo_config cfg = aes_dpo_config_default();
    aes_dpo_batch b;
    aes_dpo_item items[2] = {{0, 0, 1, 1.0f, 0.1f, -0.2f}, {1, 2, 0, 1.0f, 0.0f, 0.3f}};
    float pixels[3 * 3 * 16 * 16];
    int32_t tokens[3 * 7];
    const float *g1, *g2;
    const aes_clip_tensor *tensors;
    int i, zero_ok = 1, same_ok = 1, cover_ok = 1, nseg, nt = 0;
    const aes_param_segment *seg;
    full.train_text = 1;
    full.max_images = full.max_texts = 3;
    part = full;
    part.train_text = 0;
    part.freeze_vision_blocks = 1;
    if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &full, &t1));
    if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &part, &t2));
    if (!t1 || !t2) { aes_clip_trainer_free(t1); aes_clip_trainer_free(t2); aes_clip_free(m); aes_ctx_free(ctx); return; }
    tl_seed(9);
    make_tiny_batch(pixels, 3, tokens, 3, 7, 20);
    memset(&b, 0, sizeof b);
    b.pixels = pixels; b.nimages = 3; b.tokens = tokens; b.ntexts = 3; b.items = items; b.nitems = 2; b.nmatched = 3;
    CHECK_OK(ctx, aes_dpo_forward_backward(ctx, t1, &cfg, &b, 1, NULL));
    CHECK_OK(ctx, aes_dpo_forward_backward(ctx, t2, &cfg, &b, 1, NULL));
    g1 = aes_clip_trainer_grads(t1, NULL);
    g2 = aes_clip_trainer_grads(t2, NULL);
    aes_clip_trainer_segments(t2, &seg, &nseg);
    tensors = aes_clip_tensors(m, &nt);
    for (i = 0; i < nt; i++) {
        const aes_clip_tensor *t = &tensors[i];
        size_t k;
        int want_trainable = above_vision_block1(t->name), in_seg = 0, s;
        for (s = 0; s < nseg; s++)
            in_seg |= t->offset >= seg[s].offset && t->offset + t->numel <= seg[s].offset + seg[s].count;
        if (in_seg != want_trainable) {
            cover_ok = 0;
            fprintf(stderr, "  %s: in a segment %d, trainable %d\n", t->name, in_seg, want_trainable);
        }
        if (!strcmp(t->name, "logit_scale")) continue;   /* the losses always write its gradient */
        for (k = 0; k < t->numel; k++) {
            if (!want_trainable) zero_ok &= g2[t->offset + k] == 0.0f;
            else same_ok &= g2[t->offset + k] == g1[t->offset + k];
        }
    }
    CHECK(zero_ok);
    CHECK(same_ok);
    CHECK(cover_ok);
    CHECK(nseg >= 2);
    aes_clip_trainer_free(t1);
    aes_clip_trainer_free(t2);
    aes_clip_free(m);
    aes_ctx_free(ctx);
}

/* One full step (forward, DPO + contrastive, backward, clipping, AdamW)
 * against tools/train_reference.py: parameters within 1e-5 relative.  The
 * fixture names tensors as Hugging Face does, so the model is compared
 * through its own writer in that layout. */
static void test_reference_step(void) {
    aes_ctx *ctx = aes_ctx_create();
    size_t rlen, elen, n, olen = 0;
    unsigned char *refs = read_file("tests/fixtures/clip/clip_refs.safetensors", &rlen);
    unsigned char *exp = read_file("tests/fixtures/train/step_expected.safetensors", &elen);
    aes_train_options o = aes_train_options_default();
    aes_clip_trainer *tr = NULL;
    aes_clip *m = NULL;
    aes_optim_config oc = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_optim *opt = NULL;
    aes_dpo_config cfg;
    aes_dpo_batch b;
    aes_dpo_item items[16];
    aes_train_step_stats st;
    aes_safetensors *after = NULL;
    void *out = NULL;
    float *pixels = NULL, *ref = NULL, *it = NULL, *want, *got;
    int32_t *tokens = NULL;
    const aes_param_segment *seg;
    int nseg, i, nitems, compared = 0;
    double worst = 0;
    char worst_name[128] = "?";
    if (!refs || !exp) { tl_skip("fixtures absent"); free(refs); free(exp); aes_ctx_free(ctx); return; }
    o.train_text = 1;
    o.train_logit_scale = 1;
    o.max_images = 3;
    o.max_texts = 4;
    CHECK_OK(ctx, aes_clip_load(ctx, "tests/fixtures/clip/clip_hf_f32.safetensors", NULL, &m));
    if (m) CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &o, &tr));
    pixels = st_tensor(ctx, refs, rlen, "pixels", &n);
    tokens = (int32_t *)st_tensor(ctx, refs, rlen, "tokens", NULL);
    ref = st_tensor(ctx, exp, elen, "ref", NULL);
    it = st_tensor(ctx, exp, elen, "items", &n);
    if (!tr || !pixels || !tokens || !ref || !it) { CHECK(0); goto done; }
    nitems = (int)(n / 4);
    for (i = 0; i < nitems; i++) {
        items[i].query = (int)it[4 * i];
        items[i].preferred = (int)it[4 * i + 1];
        items[i].rejected = (int)it[4 * i + 2];
        items[i].weight = it[4 * i + 3];
        items[i].ref_preferred = ref[2 * i];
        items[i].ref_rejected = ref[2 * i + 1];
    }
    cfg.beta = 0.2f; cfg.label_smoothing = 0.1f; cfg.clip_label_smoothing = 0.05f; cfg.lambda = 0.5f;
    /* eps 1e-3 as in tools/train_reference.py: keeps the first Adam update a
     * smooth function of the gradient (see there) */
    oc.lr = 1e-3f; oc.weight_decay = 0.1f; oc.clip_norm = 1.0f; oc.eps = 1e-3f;
    aes_clip_trainer_segments(tr, &seg, &nseg);
    CHECK_OK(ctx, aes_optim_create(ctx, &oc, aes_clip_num_params(m), seg, nseg, &opt));
    memset(&b, 0, sizeof b);
    b.pixels = pixels; b.nimages = 3; b.tokens = tokens; b.ntexts = 4; b.items = items; b.nitems = nitems;
    b.nmatched = 3;
    CHECK_OK(ctx, aes_dpo_train_step(ctx, tr, opt, &cfg, &b, oc.lr, &st));
    {
        float *l = st_tensor(ctx, exp, elen, "loss_dpo", NULL), *c = st_tensor(ctx, exp, elen, "loss_clip", NULL);
        float *gn = st_tensor(ctx, exp, elen, "grad_norm", NULL);
        if (l && c && gn) {
            CHECK_MSG(rel_err(st.dpo.loss, l[0]) < 1e-5, "dpo loss %.8f vs %.8f", st.dpo.loss, l[0]);
            CHECK_MSG(rel_err(st.clip_loss, c[0]) < 1e-5, "clip loss %.8f vs %.8f", st.clip_loss, c[0]);
            CHECK_MSG(rel_err(st.optim.grad_norm, gn[0]) < 1e-4, "grad norm %.8f vs %.8f", st.optim.grad_norm, gn[0]);
        }
        free(l); free(c); free(gn);
    }
    CHECK_OK(ctx, aes_clip_serialize(ctx, m, AES_LAYOUT_HF, AES_DTYPE_F32, &out, &olen));
    if (out) CHECK_OK(ctx, aes_safetensors_load_memory(ctx, out, olen, 0, &after));
    for (i = 0; after && i < aes_safetensors_count(after); i++) {
        const aes_tensor_view *v = aes_safetensors_at(after, i);
        char name[160];
        size_t k, wn;
        double maxd = 0, maxv = 0;
        snprintf(name, sizeof name, "after.%s", v->name);
        want = st_tensor(ctx, exp, elen, name, &wn);
        CHECK_MSG(want && wn == (size_t)v->numel, "%s missing from the fixture", name);
        if (!want) continue;
        got = (float *)malloc(sizeof(float) * wn + 4);
        if (!got || aes_tensor_to_f32(ctx, v, got, wn) != AES_OK) { free(got); free(want); CHECK(0); continue; }
        for (k = 0; k < wn; k++) {
            double d = fabs((double)got[k] - want[k]);
            if (d > maxd) maxd = d;
            if (fabs(want[k]) > maxv) maxv = fabs(want[k]);
        }
        free(got);
        compared++;
        if (maxv > 0 && maxd / maxv > worst) { worst = maxd / maxv; snprintf(worst_name, sizeof worst_name, "%s", v->name); }
        if (getenv("TL_VERBOSE") && maxv > 0 && maxd / maxv > 1e-6) fprintf(stderr, "  %s: %.3g\n", v->name, maxd / maxv);
        free(want);
    }
    CHECK_MSG(compared > 20, "compared only %d tensors", compared);
    CHECK_MSG(worst <= 1e-5, "largest relative parameter error %.3g in %s", worst, worst_name);
    if (getenv("TL_VERBOSE")) fprintf(stderr, "  reference step: worst relative parameter error %.3g\n", worst);
done:
    free(pixels); free(tokens); free(ref); free(it); free(refs); free(exp);
    aes_safetensors_close(after);
    aes_free(out);
    aes_optim_free(opt);
    aes_clip_trainer_free(tr);
    aes_clip_free(m);
    aes_ctx_free(ctx);
}

/* A checkpoint is the model in its own layout: an interrupted run resumed
 * from it and the optimizer sidecar reproduces the uninterrupted one bit
 * for bit, and 1 or 2 threads give the same bits. */
static void test_checkpoint_resume(void) {
    aes_ctx *ctx = aes_ctx_create();
    int layout;
    for (layout = 0; layout <= 1; layout++) {
        aes_layout lay = layout ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF;
        aes_clip *ma = tiny_model(ctx, lay, 1, 3), *mb = tiny_model(ctx, lay, 1, 3), *mc = NULL;
        aes_clip_load_opts lo;
        aes_train_options o = aes_train_options_default();
        aes_clip_trainer *ta = NULL, *tb = NULL;
        aes_optim_config oc = aes_optim_config_default(AES_OPTIM_ADAMW);
        aes_optim *oa = NULL, *ob = NULL;
        aes_dpo_config cfg = aes_dpo_config_default();
        aes_dpo_batch b;
        aes_dpo_item items[2] = {{0, 0, 1, 1.0f, 0.1f, -0.2f}, {1, 2, 0, 1.0f, 0.0f, 0.3f}};
        float pixels[3 * 3 * 16 * 16];
        int32_t tokens[3 * 7];
        const aes_param_segment *seg;
        int nseg, s;
        size_t np, blen = 0;
        void *blob = NULL;
        aes_safetensors *file = NULL;
        const char *mpath = tl_tmp("test_train_ckpt.safetensors"), *opath = tl_tmp("test_train_ckpt.optim");
        memset(&lo, 0, sizeof lo);
        lo.no_config_search = 1;
        o.train_text = 1;
        o.train_logit_scale = 1;
        o.max_images = o.max_texts = 3;
        oc.lr = 1e-2f;
        oc.warmup_steps = 2;
        oc.total_steps = 6;
        if (ma && mb) {
            CHECK_OK(ctx, aes_clip_trainer_create(ctx, ma, &o, &ta));
            CHECK_OK(ctx, aes_clip_trainer_create(ctx, mb, &o, &tb));
        }
        if (!ta || !tb) { aes_clip_trainer_free(ta); aes_clip_trainer_free(tb); aes_clip_free(ma); aes_clip_free(mb); break; }
        np = aes_clip_num_params(ma);
        aes_clip_trainer_segments(ta, &seg, &nseg);
        CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &oa));
        CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &ob));
        tl_seed(4);
        make_tiny_batch(pixels, 3, tokens, 3, 7, 20);
        memset(&b, 0, sizeof b);
        b.pixels = pixels; b.nimages = 3; b.tokens = tokens; b.ntexts = 3; b.items = items; b.nitems = 2; b.nmatched = 3;
        aes_threads_set(ctx, 1);
        for (s = 0; s < 5; s++)
            CHECK_OK(ctx, aes_dpo_train_step(ctx, ta, oa, &cfg, &b, aes_lr_schedule(&oc, s), NULL));
        aes_threads_set(ctx, 2);
        for (s = 0; s < 2; s++)
            CHECK_OK(ctx, aes_dpo_train_step(ctx, tb, ob, &cfg, &b, aes_lr_schedule(&oc, s), NULL));
        CHECK_OK(ctx, aes_clip_save(ctx, mb, mpath, lay, AES_DTYPE_F32));
        CHECK_OK(ctx, aes_optim_save(ctx, ob, opath));
        aes_clip_trainer_free(tb);
        aes_clip_free(mb);
        aes_optim_free(ob);
        tb = NULL; mb = NULL; ob = NULL;
        /* the checkpoint keeps the layout's own names ... */
        CHECK_OK(ctx, aes_safetensors_open(ctx, mpath, &file));
        if (file)
            CHECK(aes_safetensors_find(file, layout ? "visual.transformer.resblocks.1.attn.in_proj_weight"
                                                    : "vision_model.encoder.layers.1.self_attn.k_proj.weight") != NULL);
        aes_safetensors_close(file);
        /* ... and loads back as the model it was, activation included (no config) */
        CHECK_OK(ctx, aes_clip_load(ctx, mpath, &lo, &mb));
        if (mb) {
            CHECK(aes_clip_config_get(mb)->layout == lay);
            CHECK_OK(ctx, aes_clip_trainer_create(ctx, mb, &o, &tb));
        }
        CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &ob));
        CHECK_OK(ctx, aes_optim_load(ctx, ob, opath));
        for (s = (int)aes_optim_steps_done(ob); tb && s < 5; s++)
            CHECK_OK(ctx, aes_dpo_train_step(ctx, tb, ob, &cfg, &b, aes_lr_schedule(&oc, s), NULL));
        CHECK(mb && params_equal(ma, mb));
        /* the serialised bytes round-trip exactly; half of them are an error */
        if (mb) CHECK_OK(ctx, aes_clip_serialize(ctx, mb, lay, AES_DTYPE_F32, &blob, &blen));
        if (blob) {
            CHECK_OK(ctx, aes_clip_load_memory(ctx, blob, blen, NULL, NULL, &mc));
            CHECK(mc && params_equal(mb, mc) && !strcmp(aes_clip_id(mb), aes_clip_id(mc)));
            aes_clip_free(mc);
            mc = NULL;
            CHECK(aes_clip_load_memory(ctx, blob, blen / 2, NULL, NULL, &mc) != AES_OK && mc == NULL);
        }
        aes_free(blob);
        aes_clip_trainer_free(ta);
        aes_clip_trainer_free(tb);
        aes_clip_free(ma);
        aes_clip_free(mb);
        aes_optim_free(oa);
        aes_optim_free(ob);
        remove(mpath);
        remove(opath);
    }
    aes_threads_set(ctx, 1);
    aes_ctx_free(ctx);
}

/* ---- a short fine-tune on generated data ------------------------------------------
 * A toy world: 8 classes (a square in one of 4 quadrants, red or blue) with
 * captions "<quadrant> <colour>", and a hidden aesthetic a in [0, 1] that
 * shifts the green channel.  A tiny CLIP is first trained contrastively
 * (captions never mention a, so its ranking ignores it), then fine-tuned
 * with ranked DPO on pairs built by the paper's grid from its own retrieval
 * results, with the contrastive term kept.  Held-out checks: preference
 * accuracy on same-class pairs must rise well above chance while held-out
 * image->caption recall@1 stays within 0.05 of where it was. */

#define FT_CLASSES 8
#define FT_RES 16

static void ft_image(float *px, int cls, float a) {
    int c, y, x, qx = (cls % 4) % 2, qy = (cls % 4) / 2, colour = cls / 4;
    for (c = 0; c < 3; c++)
        for (y = 0; y < FT_RES; y++)
            for (x = 0; x < FT_RES; x++) {
                float v = 0.3f * tl_randf();
                int in = x / 8 == qx && y / 8 == qy;
                if (in && c == (colour ? 2 : 0)) v += 1.5f;
                if (c == 1) v += 1.6f * (a - 0.5f);
                px[(c * FT_RES + y) * FT_RES + x] = v;
            }
}

static void ft_caption(int32_t *tok, int cls) {
    memset(tok, 0, 6 * sizeof *tok);
    tok[0] = 14;
    tok[1] = 1 + cls % 4;
    tok[2] = 5 + cls / 4;
    tok[3] = 15;
}

/* L2-normalised embeddings of n images, in chunks of the trainer's capacity. */
static void ft_embed_images(aes_ctx *ctx, aes_clip_trainer *tr, const float *px, int n, float *emb) {
    int cap = tr->opt.max_images, E = 16, i;
    for (i = 0; i < n; i += cap) {
        int m = n - i < cap ? n - i : cap;
        aes_clip_trainer_encode_images(ctx, tr, px + (size_t)i * 3 * FT_RES * FT_RES, m, emb + (size_t)i * E);
    }
}

typedef struct ft_eval { double recall1, pref_acc; } ft_eval;

static ft_eval ft_evaluate(aes_ctx *ctx, aes_clip_trainer *tr, const float *px, const int *cls, const float *aes,
                           int n, const float *txt) {
    int E = 16, i, j, c, hits = 0, good = 0, total = 0;
    float *emb = (float *)malloc(sizeof(float) * n * E);
    ft_eval r;
    ft_embed_images(ctx, tr, px, n, emb);
    for (i = 0; i < n; i++) {          /* image -> caption recall@1 over the 8 captions */
        int best = 0;
        float bs = -1e30f;
        for (c = 0; c < FT_CLASSES; c++) {
            float s = 0;
            int k;
            for (k = 0; k < E; k++) s += emb[i * E + k] * txt[c * E + k];
            if (s > bs) { bs = s; best = c; }
        }
        hits += best == cls[i];
    }
    for (i = 0; i < n; i++)            /* same-class pairs with a clear aesthetic gap */
        for (j = 0; j < n; j++) {
            float si = 0, sj = 0;
            int k;
            if (cls[i] != cls[j] || aes[i] < aes[j] + 0.2f) continue;
            for (k = 0; k < E; k++) {
                si += emb[i * E + k] * txt[cls[i] * E + k];
                sj += emb[j * E + k] * txt[cls[i] * E + k];
            }
            good += si > sj;
            total++;
        }
    free(emb);
    r.recall1 = (double)hits / n;
    r.pref_acc = total ? (double)good / total : 0;
    return r;
}

static void test_finetune_raises_preference_accuracy(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_clip_config a;
    aes_clip *model = NULL;
    aes_train_options o = aes_train_options_default();
    aes_clip_trainer *tr = NULL;
    aes_optim_config oc = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_optim *opt = NULL;
    enum { NG = 640, NH = 160, BATCH = 40, TOPK = 48 };
    float *gpx = (float *)malloc(sizeof(float) * NG * 3 * FT_RES * FT_RES);
    float *hpx = (float *)malloc(sizeof(float) * NH * 3 * FT_RES * FT_RES);
    float *bpx = (float *)malloc(sizeof(float) * BATCH * 3 * FT_RES * FT_RES);
    float *gaes = (float *)malloc(sizeof(float) * NG), haes[NH], txt[FT_CLASSES * 16], *gemb = NULL;
    int *gcls = (int *)malloc(sizeof(int) * NG), hcls[NH], i, s, c;
    int32_t caps[FT_CLASSES * 6];
    aes_pair_index *pairs = NULL;
    int *pair_q = NULL, npairs = 0;
    aes_dpo_item *all_items = NULL;
    ft_eval before, after;
    const aes_param_segment *seg;
    int nseg;
    size_t np;
    double t0 = tl_now();

    memset(&a, 0, sizeof a);
    a.has_vision = a.has_text = 1;
    a.image_size = FT_RES; a.patch_size = 4; a.vision_width = 32; a.vision_layers = 2; a.vision_heads = 2;
    a.vision_mlp = 64;
    a.context_length = 6; a.vocab_size = 16; a.text_width = 32; a.text_layers = 1; a.text_heads = 2; a.text_mlp = 64;
    a.embed_dim = 16; a.act = AES_ACT_QUICK_GELU; a.ln_eps = 1e-5f; a.layout = AES_LAYOUT_HF;
    o.train_vision = 1; o.train_text = 1; o.max_images = BATCH; o.max_texts = FT_CLASSES;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &a, 2024, &model));
    if (model) CHECK_OK(ctx, aes_clip_trainer_create(ctx, model, &o, &tr));
    if (!tr) goto done;
    tl_seed(31337);
    for (i = 0; i < NG; i++) { gcls[i] = i % FT_CLASSES; gaes[i] = (float)tl_uniform(); ft_image(gpx + (size_t)i * 3 * FT_RES * FT_RES, gcls[i], gaes[i]); }
    for (i = 0; i < NH; i++) { hcls[i] = i % FT_CLASSES; haes[i] = (float)tl_uniform(); ft_image(hpx + (size_t)i * 3 * FT_RES * FT_RES, hcls[i], haes[i]); }
    for (c = 0; c < FT_CLASSES; c++) ft_caption(caps + c * 6, c);

    /* 1. contrastive pre-training: each batch holds one fresh image per class */
    oc.lr = 1e-3f; oc.weight_decay = 0.01f; oc.warmup_steps = 10;
    oc.total_steps = 500;
    np = aes_clip_num_params(model);
    aes_clip_trainer_segments(tr, &seg, &nseg);
    CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &opt));
    for (s = 0; s < oc.total_steps; s++) {
        for (c = 0; c < FT_CLASSES; c++) ft_image(bpx + (size_t)c * 3 * FT_RES * FT_RES, c, (float)tl_uniform());
        CHECK_OK(ctx, aes_clip_train_step(ctx, tr, opt, bpx, caps, FT_CLASSES, 0.0f, aes_lr_schedule(&oc, s), NULL));
    }
    aes_optim_free(opt);
    opt = NULL;
    CHECK_OK(ctx, aes_clip_trainer_encode_texts(ctx, tr, caps, FT_CLASSES, txt));
    before = ft_evaluate(ctx, tr, hpx, hcls, haes, NH, txt);

    /* 2. pairs the paper's way: retrieve top 32 per caption from the
     *    training gallery with the current model, grid 4 x 4 at stride 2 */
    gemb = (float *)malloc(sizeof(float) * NG * 16);
    ft_embed_images(ctx, tr, gpx, NG, gemb);
    pairs = (aes_pair_index *)malloc(sizeof *pairs * FT_CLASSES * 200);
    pair_q = (int *)malloc(sizeof(int) * FT_CLASSES * 200);
    for (c = 0; c < FT_CLASSES; c++) {
        int order[NG], k, got = 0, j;
        float sc[NG], cand_aes[TOPK];
        aes_pair_grid_config g = {4, 4, 3, 0, AES_PAIR_ROWS_RERANKED};
        for (i = 0; i < NG; i++) {
            int e;
            sc[i] = 0;
            for (e = 0; e < 16; e++) sc[i] += gemb[i * 16 + e] * txt[c * 16 + e];
            order[i] = i;
        }
        for (i = 0; i < TOPK; i++)          /* partial selection sort: top TOPK */
            for (j = i + 1; j < NG; j++)
                if (sc[order[j]] > sc[order[i]]) { k = order[i]; order[i] = order[j]; order[j] = k; }
        for (i = 0; i < TOPK; i++) cand_aes[i] = gaes[order[i]];
        CHECK_OK(ctx, aes_pairs_from_grid(ctx, &g, cand_aes, TOPK, pairs + npairs, 200, &got));
        for (i = 0; i < got; i++) {
            pairs[npairs + i].preferred = order[pairs[npairs + i].preferred];
            pairs[npairs + i].rejected = order[pairs[npairs + i].rejected];
            pair_q[npairs + i] = c;
        }
        npairs += got;
    }
    {
        aes_pair_grid_config g_all = {4, 4, 3, 0, AES_PAIR_ROWS_RERANKED};
        CHECK(npairs == FT_CLASSES * aes_pair_grid_max(&g_all));
    }
    /* cached reference similarities: the model as it is now */
    all_items = (aes_dpo_item *)malloc(sizeof *all_items * npairs);
    for (i = 0; i < npairs; i++) {
        all_items[i].query = pair_q[i];
        all_items[i].preferred = pairs[i].preferred;
        all_items[i].rejected = pairs[i].rejected;
        all_items[i].weight = 1.0f;
    }
    CHECK_OK(ctx, aes_dpo_items_set_reference(ctx, all_items, npairs, txt, FT_CLASSES, gemb, NG, 16,
                                              aes_clip_params_get(model)->logit_scale[0]));

    /* 3. DPO fine-tuning of the vision tower (text frozen, embeddings cached) */
    o.train_text = 0;
    CHECK_OK(ctx, aes_clip_trainer_set_trainable(ctx, tr, &o));
    aes_clip_trainer_segments(tr, &seg, &nseg);
    oc = aes_optim_config_default(AES_OPTIM_ADAMW);
    oc.lr = 1e-3f; oc.weight_decay = 0.0f; oc.warmup_steps = 5; oc.clip_norm = 1.0f;
    oc.total_steps = 150;
    CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &opt));
    {
        aes_dpo_config cfg = aes_dpo_config_default();
        aes_dpo_item items[16];
        aes_dpo_batch b;
        aes_train_step_stats st;
        cfg.beta = 0.5f; cfg.label_smoothing = 0.05f; cfg.lambda = 1.0f;
        for (s = 0; s < oc.total_steps; s++) {
            int nimg = FT_CLASSES, slot[NG];
            for (i = 0; i < NG; i++) slot[i] = -1;
            /* rows 0..7: fresh image per class, matched with captions 0..7 (the
             * contrastive "pre-training" term the paper keeps) */
            for (c = 0; c < FT_CLASSES; c++) ft_image(bpx + (size_t)c * 3 * FT_RES * FT_RES, c, (float)tl_uniform());
            for (i = 0; i < 16; i++) {
                aes_dpo_item it = all_items[(int)(tl_uniform() * npairs)];
                int *ends[2], k;
                ends[0] = &it.preferred;
                ends[1] = &it.rejected;
                for (k = 0; k < 2; k++) {
                    int gi = *ends[k];
                    if (slot[gi] < 0) {
                        slot[gi] = nimg++;
                        memcpy(bpx + (size_t)slot[gi] * 3 * FT_RES * FT_RES, gpx + (size_t)gi * 3 * FT_RES * FT_RES,
                               sizeof(float) * 3 * FT_RES * FT_RES);
                    }
                    *ends[k] = slot[gi];
                }
                items[i] = it;
            }
            memset(&b, 0, sizeof b);
            b.pixels = bpx; b.nimages = nimg; b.text_emb = txt; b.ntexts = FT_CLASSES;
            b.items = items; b.nitems = 16; b.nmatched = FT_CLASSES;
            CHECK_OK(ctx, aes_dpo_train_step(ctx, tr, opt, &cfg, &b, aes_lr_schedule(&oc, s), &st));
            if (getenv("TL_VERBOSE") && s % 20 == 0)
                fprintf(stderr, "  dpo step %3d loss %.4f acc %.2f margin %+.3f clip %.3f\n", s, st.loss,
                        st.dpo.accuracy, st.dpo.margin, st.clip_loss);
        }
    }
    after = ft_evaluate(ctx, tr, hpx, hcls, haes, NH, txt);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  held-out: preference accuracy %.3f -> %.3f, recall@1 %.3f -> %.3f (%.1f s)\n",
                before.pref_acc, after.pref_acc, before.recall1, after.recall1, tl_now() - t0);
    CHECK_MSG(before.recall1 >= 0.8, "pre-training reached only recall@1 %.3f", before.recall1);
    CHECK_MSG(after.pref_acc >= 0.75 && after.pref_acc >= before.pref_acc + 0.2,
              "preference accuracy %.3f -> %.3f", before.pref_acc, after.pref_acc);
    CHECK_MSG(after.recall1 >= before.recall1 - 0.05, "recall@1 %.3f -> %.3f (tolerance 0.05)", before.recall1,
              after.recall1);
done:
    free(gpx); free(hpx); free(bpx); free(gemb); free(pairs); free(pair_q); free(all_items); free(gaes); free(gcls);
    aes_optim_free(opt);
    aes_clip_trainer_free(tr);
    aes_clip_free(model);
    aes_ctx_free(ctx);
}


static const unsigned char *which_src(int trial, const unsigned char *model, const unsigned char *optim) {
    return trial % 3 == 1 ? optim : model;
}

/* Corrupted checkpoints, optimizer files and pair files: errors, never a crash
 * (run under -fsanitize=address,undefined in CI). */
static void test_hostile_inputs(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = tiny_model(ctx, AES_LAYOUT_HF, 1, 1), *m2 = NULL;
    aes_train_options o = aes_train_options_default();
    aes_clip_trainer *t2 = NULL;
    aes_optim *opt = NULL;
    aes_optim_config oc = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_pair_set *set = NULL;
    unsigned char *ob = NULL, *m;
    void *blob = NULL;
    size_t len = 0, olen = 0, k;
    int trial, ok_count = 0;
    o.max_images = o.max_texts = 2;
    if (!model) { aes_ctx_free(ctx); return; }
    CHECK_OK(ctx, aes_optim_create(ctx, &oc, aes_clip_num_params(model), NULL, 0, &opt));
    CHECK_OK(ctx, aes_clip_serialize(ctx, model, AES_LAYOUT_HF, AES_DTYPE_F32, &blob, &len));
    CHECK_OK(ctx, aes_optim_save_memory(ctx, opt, &ob, &olen));
    CHECK_OK(ctx, aes_pair_set_create(ctx, &set));
    if (!blob || !ob || !set) { CHECK(0); goto done; }
    m = (unsigned char *)malloc(len > olen ? len : olen);
    tl_seed(99);
    for (trial = 0; trial < 600; trial++) {
        const unsigned char *src = which_src(trial, (const unsigned char *)blob, ob);
        int which = trial % 3, flips = 1 + trial % 4, f;
        size_t n = which == 0 ? len : which == 1 ? olen : 64;
        size_t hdr = which == 2 ? 64 : 8 + (size_t)(src[0] | src[1] << 8);
        if (which == 2) {
            static const char good[] = "q\ta\tb\t2\n#x\n\\t\t\\\\\tz\n";
            for (k = 0; k < 64; k++)
                m[k] = (unsigned char)(good[k % (sizeof good - 1)] ^ (tl_uniform() < 0.1 ? (int)(tl_uniform() * 256) : 0));
        } else {
            memcpy(m, src, n);
            for (f = 0; f < flips; f++) m[(size_t)(tl_uniform() * (double)(hdr < n ? hdr : n))] = (unsigned char)(tl_uniform() * 256);
            if (trial % 7 == 0) n = (size_t)(tl_uniform() * (double)n);
        }
        if (which == 0) {
            /* whatever loads is a model the trainer takes */
            if (aes_clip_load_memory(ctx, m, n, NULL, NULL, &m2) == AES_OK) {
                ok_count++;
                CHECK_OK(ctx, aes_clip_trainer_create(ctx, m2, &o, &t2));
                aes_clip_trainer_free(t2);
                aes_clip_free(m2);
                t2 = NULL;
                m2 = NULL;
            }
        } else if (which == 1) {
            if (aes_optim_load_memory(ctx, opt, m, n) == AES_OK) ok_count++;
        } else {
            aes_pair_set_parse(ctx, set, (const char *)m, n, "fuzz");
        }
    }
    CHECK(aes_optim_load_memory(ctx, opt, ob, olen) == AES_OK);   /* still fine */
    CHECK(ok_count < 600);
    free(m);
done:
    aes_free(blob);
    aes_free(ob);
    aes_pair_set_free(set);
    aes_optim_free(opt);
    aes_clip_free(model);
    aes_ctx_free(ctx);
}

/* One model, one validator: over the edge values of every dimension, what
 * the library creates it trains, saves (both layouts) and loads back with
 * the same identity; what the validator refuses cannot be made, and a file
 * of that shape does not load. */
typedef struct edge_case { const char *what; int field, value, ok; } edge_case;

static int *config_field(aes_clip_config *c, int f) {
    int *fields[] = {&c->image_size, &c->patch_size, &c->vision_width, &c->vision_layers, &c->vision_heads,
                     &c->vision_mlp, &c->context_length, &c->vocab_size, &c->text_width, &c->text_layers,
                     &c->text_heads, &c->text_mlp, &c->embed_dim};
    return fields[f];
}

static void test_one_validator_edges(void) {
    static const edge_case cases[] = {
        {"image = patch (one patch)", 0, 8, 1}, {"image not a multiple of patch", 0, 20, 0},
        {"patch 1", 1, 1, 1}, {"patch 0", 1, 0, 0},
        {"vision width 1", 2, 1, 0},                       /* 2 heads do not divide 1 */
        {"vision width = heads", 2, 2, 1},
        {"vision layers 1", 3, 1, 1}, {"vision layers 64", 3, 64, 1},
        {"vision layers 0", 3, 0, 0}, {"vision layers 65", 3, 65, 0},
        {"vision heads = width", 4, 8, 1}, {"vision heads not dividing", 4, 3, 0},
        {"vision mlp 1", 5, 1, 1}, {"vision mlp 0", 5, 0, 0},
        {"context 2", 6, 2, 1}, {"context 0", 6, 0, 0},
        {"vocab 2", 7, 2, 1}, {"vocab 1", 7, 1, 0},
        {"text layers 64", 9, 64, 1}, {"text layers 65", 9, 65, 0}, {"text layers 0", 9, 0, 0},
        {"text heads 1", 10, 1, 1}, {"text heads 0", 10, 0, 0},
        {"embed 1", 12, 1, 1}, {"embed 0", 12, 0, 0},
    };
    aes_ctx *ctx = tl_ctx();
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        aes_clip_config c = tiny_config(AES_LAYOUT_HF, 1);
        aes_clip *m = NULL;
        aes_status st;
        int layout;
        *config_field(&c, cases[i].field) = cases[i].value;
        if (cases[i].field == 6) c.context_length = cases[i].value;
        st = aes_clip_create_random(ctx, &c, 5, &m);
        CHECK_MSG((st == AES_OK) == cases[i].ok, "%s: create gave %s (%s)", cases[i].what, aes_status_name(st),
                  aes_last_error(ctx));
        if (!m) continue;
        {   /* it trains: one contrastive step on two image/caption rows */
            aes_train_options o = aes_train_options_default();
            aes_clip_trainer *tr = NULL;
            int S = c.image_size, L = c.context_length, k;
            float *px = (float *)calloc((size_t)2 * 3 * S * S, sizeof(float));
            int32_t *tok = (int32_t *)calloc((size_t)2 * L, sizeof(int32_t));
            for (k = 0; k < 2 * 3 * S * S; k++) px[k] = (float)sin(0.1 * k);
            tok[0] = c.vocab_size - 1; tok[L] = 0; tok[L + (L > 1)] = c.vocab_size - 1;
            o.train_text = 1;
            o.max_images = o.max_texts = 2;
            CHECK_OK(ctx, aes_clip_trainer_create(ctx, m, &o, &tr));
            if (tr) CHECK_MSG(aes_clip_train_step(ctx, tr, NULL, px, tok, 2, 0.0f, 0.0f, NULL) == AES_OK,
                              "%s: step: %s", cases[i].what, aes_last_error(ctx));
            aes_clip_trainer_free(tr);
            free(px);
            free(tok);
        }
        for (layout = 0; layout < 2; layout++) {   /* it saves and loads back as itself */
            void *buf = NULL;
            size_t len = 0;
            aes_clip *back = NULL;
            aes_layout lay = layout ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF;
            CHECK_OK(ctx, aes_clip_serialize(ctx, m, lay, AES_DTYPE_F32, &buf, &len));
            if (buf) CHECK_MSG(aes_clip_load_memory(ctx, buf, len, NULL, NULL, &back) == AES_OK, "%s, layout %d: %s",
                               cases[i].what, layout, aes_last_error(ctx));
            if (back) CHECK_MSG(params_equal(m, back) && clip_hash(m) == clip_hash(back) &&
                                aes_clip_config_get(back)->layout == lay, "%s, layout %d: round trip differs",
                                cases[i].what, layout);
            aes_clip_free(back);
            aes_free(buf);
        }
        aes_clip_free(m);
    }
    {   /* a file with 65 blocks (one past the limit) is refused by the loader */
        aes_clip_config c = tiny_config(AES_LAYOUT_HF, 1);
        aes_clip *m = NULL, *back = NULL;
        void *buf = NULL;
        size_t len = 0;
        c.vision_layers = 64;
        c.vision_width = 2; c.vision_heads = 1; c.vision_mlp = 1;
        CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 1, &m));
        if (m) CHECK_OK(ctx, aes_clip_serialize(ctx, m, AES_LAYOUT_OPENAI, AES_DTYPE_F32, &buf, &len));
        if (buf) {
            /* block 63 renamed 64: the block numbers now reach a 65th block */
            char *p = (char *)buf;
            size_t hdr = (size_t)(unsigned char)p[0] | (size_t)(unsigned char)p[1] << 8 | (size_t)(unsigned char)p[2] << 16, k;
            for (k = 8; k + 13 < 8 + hdr; k++)
                if (!memcmp(p + k, "resblocks.63.", 13)) memcpy(p + k, "resblocks.64.", 13);
            CHECK(aes_clip_load_memory(ctx, buf, len, NULL, NULL, &back) != AES_OK && back == NULL);
        }
        aes_clip_free(back);
        aes_clip_free(m);
        aes_free(buf);
    }
    aes_ctx_free(ctx);
}

/* ---- the training loops: aes_dpo_finetune and aes_clip_train ------------------------
 * A tiny random model (vocabulary of a 4-merge tokenizer), images made up
 * from their names by the caller's loader, a handful of pairs. */

#define LP_MERGES "#version: 0.2\nc a\nca t</w>\nd o\ndo g</w>\n"

typedef struct lp_user {
    int loads, starts, steps, checkpoints, saves;
    long stop_at;                 /* stop once this many steps are done (0 never, -1 at START) */
    float first_margin;
    unsigned char *model_blob, *optim_blob;   /* the memory checkpoint */
    size_t model_len, optim_len;
} lp_user;

/* "imgN" gets a pattern of its own; any other name fails without a message. */
static aes_status lp_load(void *user, aes_ctx *ctx, const char *path, int size, float *px) {
    lp_user *u = (lp_user *)user;
    int k, i;
    (void)ctx;
    if (u) u->loads++;
    if (strncmp(path, "img", 3)) return AES_ERR_IO;
    k = atoi(path + 3);
    for (i = 0; i < 3 * size * size; i++) px[i] = (float)sin(0.05 * i * (k % 5 + 1) + 0.7 * k) * (1.0f + 0.1f * (float)k);
    return AES_OK;
}

static int lp_progress(void *user, const aes_train_progress *p) {
    lp_user *u = (lp_user *)user;
    if (p->event == AES_TRAIN_START) { u->starts++; return u->stop_at < 0; }
    if (p->event == AES_TRAIN_CHECKPOINT) { u->checkpoints++; return 0; }
    u->steps++;
    if (p->step == 1) u->first_margin = p->stats.dpo.margin;
    return u->stop_at > 0 && p->step >= u->stop_at;
}

static aes_status lp_save(void *user, aes_ctx *ctx, const aes_clip *model, const aes_optim *opt) {
    lp_user *u = (lp_user *)user;
    aes_status st;
    aes_free(u->model_blob);
    aes_free(u->optim_blob);
    u->model_blob = u->optim_blob = NULL;
    u->saves++;
    st = aes_clip_serialize(ctx, model, AES_LAYOUT_HF, AES_DTYPE_F32, (void **)&u->model_blob, &u->model_len);
    if (st == AES_OK) st = aes_optim_save_memory(ctx, opt, &u->optim_blob, &u->optim_len);
    return st;
}

static aes_status lp_restore(void *user, aes_ctx *ctx, aes_clip *model, aes_optim *opt, int *found) {
    lp_user *u = (lp_user *)user;
    aes_clip *saved = NULL;
    aes_status st;
    *found = 0;
    if (!u->model_blob || !u->optim_blob) return AES_OK;
    st = aes_clip_load_memory(ctx, u->model_blob, u->model_len, NULL, NULL, &saved);
    if (st == AES_OK) {
        memcpy(aes_clip_params_data(model), aes_clip_params_data(saved), aes_clip_num_params(model) * sizeof(float));
        st = aes_optim_load_memory(ctx, opt, u->optim_blob, u->optim_len);
    }
    aes_clip_free(saved);
    *found = st == AES_OK;
    return st;
}

/* The model the trainer of these tests trains (one at a time). */
static aes_clip *lp_clip;
static float *lp_params(void) { return aes_clip_params_data(lp_clip); }
static void lp_free(aes_clip_trainer *tr) {
    aes_clip_trainer_free(tr);
    aes_clip_free(lp_clip);
    lp_clip = NULL;
}

/* The same fresh model every time (seed 5), capacity 6 images / 6 texts. */
static aes_clip_trainer *lp_model(aes_ctx *ctx, const aes_tokenizer *tok, int train_text, size_t *np) {
    aes_clip_config c = tiny_config(AES_LAYOUT_HF, 1);
    aes_train_options o = aes_train_options_default();
    aes_clip_trainer *tr = NULL;
    c.vocab_size = aes_tokenizer_vocab_size(tok);
    o.train_text = train_text;
    o.train_logit_scale = train_text;
    o.max_images = o.max_texts = 6;
    if (lp_clip || aes_clip_create_random(ctx, &c, 5, &lp_clip) != AES_OK) return NULL;
    if (aes_clip_trainer_create(ctx, lp_clip, &o, &tr) != AES_OK) { aes_clip_free(lp_clip); lp_clip = NULL; return NULL; }
    *np = aes_clip_num_params(lp_clip);
    return tr;
}

/* A DPO run on a fresh model with `threads` threads; the final parameters
 * (malloc'd) go to *params. */
static aes_status lp_dpo(aes_ctx *ctx, const aes_tokenizer *tok, const aes_pair_set *set, const aes_caption_list *caps,
                         const aes_dpo_finetune_config *cfg, int train_text, int threads, float **params,
                         aes_train_result *res) {
    size_t np = 0;
    aes_clip_trainer *tr = lp_model(ctx, tok, train_text, &np);
    aes_status st;
    if (!tr) return AES_ERR_NOMEM;
    aes_threads_set(ctx, threads);
    st = aes_dpo_finetune(ctx, tr, NULL, tok, set, caps, cfg, res);
    aes_threads_set(ctx, 1);
    if (params) {
        *params = (float *)malloc(np * sizeof(float));
        if (*params) memcpy(*params, lp_params(), np * sizeof(float));
    }
    lp_free(tr);
    return st;
}

static int lp_same(const float *a, const float *b, size_t n) { return a && b && !memcmp(a, b, n * sizeof(float)); }

/* ---- augmentation of the DPO rows ---------------------------------------------- */

static void aug_image(float *px, int S) {   /* a horizontal ramp per channel, in CLIP's normalised units */
    int c, y, x;
    for (c = 0; c < 3; c++)
        for (y = 0; y < S; y++)
            for (x = 0; x < S; x++) px[(c * S + y) * S + x] = -1.5f + 3.0f * (float)x / (float)(S - 1) + 0.1f * (float)c + 0.01f;
}

static void test_augment_pixels(void) {
    enum { S = 16, N = 3 * S * S };
    static const float mean[3] = {AES_CLIP_MEAN_R, AES_CLIP_MEAN_G, AES_CLIP_MEAN_B};
    static const float sd[3] = {AES_CLIP_STD_R, AES_CLIP_STD_G, AES_CLIP_STD_B};
    aes_ctx *ctx = aes_ctx_create();
    aes_augment_config a;
    float src[N], px[N], px2[N];
    int i, c, y, x, zeros, monotone, same_rows, differ = 0;
    uint64_t seed;
    aug_image(src, S);
    /* all off: the image as it was */
    aes_augment_config_default(&a, 0);
    memcpy(px, src, sizeof px);
    CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, 1));
    CHECK(!memcmp(px, src, sizeof px));
    /* a flip of probability 1 mirrors every row exactly */
    a.flip = 1.0f;
    CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, 2));
    for (i = 0; i < N; i++) CHECK(px[i] == src[(i / S) * S + (S - 1 - i % S)]);
    /* a crop keeps a ramp a ramp: rows stay equal, values rise along x and
     * stay inside the original range, the range shrinks for some seed */
    aes_augment_config_default(&a, 0);
    a.crop_scale = 0.3f;
    for (seed = 1; seed <= 20; seed++) {
        memcpy(px, src, sizeof px);
        CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, seed));
        monotone = same_rows = 1;
        for (c = 0; c < 3; c++)
            for (y = 0; y < S; y++)
                for (x = 0; x < S; x++) {
                    float v = px[(c * S + y) * S + x];
                    if (x && v < px[(c * S + y) * S + x - 1] - 1e-6f) monotone = 0;
                    if (y && fabsf(v - px[(c * S + y - 1) * S + x]) > 1e-6f) same_rows = 0;
                    if (v < src[c * S * S] - 1e-6f || v > src[c * S * S + S - 1] + 1e-6f) monotone = 0;
                }
        CHECK_MSG(monotone && same_rows, "crop, seed %d: not a ramp any more", (int)seed);
        differ += memcmp(px, src, sizeof px) != 0;
    }
    CHECK(differ >= 15);
    /* colour jitter keeps every pixel a colour in [0, 1] */
    aes_augment_config_default(&a, 0);
    a.brightness = a.contrast = a.saturation = 0.9f;
    memcpy(px, src, sizeof px);
    CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, 5));
    CHECK(memcmp(px, src, sizeof px) != 0);
    for (i = 0; i < N; i++) {
        float v = px[i] * sd[i / (S * S)] + mean[i / (S * S)];
        if (!(v >= -1e-5f && v <= 1.0f + 1e-5f)) { CHECK_MSG(0, "jitter: pixel %d is %g in [0, 1] units", i, (double)v); break; }
    }
    /* erasing with probability 1: one box of zeros, about the asked area */
    aes_augment_config_default(&a, 0);
    a.erase = 1.0f;
    a.erase_min = a.erase_max = 0.25f;
    memcpy(px, src, sizeof px);
    CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, 9));
    for (i = 0, zeros = 0; i < S * S; i++) zeros += px[i] == 0.0f && px[S * S + i] == 0.0f && px[2 * S * S + i] == 0.0f;
    CHECK_MSG(zeros >= 40 && zeros <= 90, "erased %d of 256 pixels for an area share of 0.25", zeros);
    /* everything on: a function of the seed */
    aes_augment_config_default(&a, 1);
    memcpy(px, src, sizeof px);
    memcpy(px2, src, sizeof px);
    CHECK_OK(ctx, aes_augment_pixels(ctx, px, S, &a, 77));
    CHECK_OK(ctx, aes_augment_pixels(ctx, px2, S, &a, 77));
    CHECK(!memcmp(px, px2, sizeof px));
    memcpy(px2, src, sizeof px);
    CHECK_OK(ctx, aes_augment_pixels(ctx, px2, S, &a, 78));
    CHECK(memcmp(px, px2, sizeof px) != 0);
    /* bad settings */
    a.flip = 1.5f;
    CHECK(aes_augment_pixels(ctx, px, S, &a, 1) == AES_ERR_INVALID_ARG);
    aes_augment_config_default(&a, 1);
    a.erase_min = 0.5f; a.erase_max = 0.2f;
    CHECK(aes_augment_pixels(ctx, px, S, &a, 1) == AES_ERR_INVALID_ARG);
    CHECK(aes_augment_pixels(ctx, NULL, S, &a, 1) == AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

/* DPO with augmentation: seeded by (seed, step, row), so stopped + resumed
 * is the same run; it changes the training; and the cached reference is of
 * the plain images, so the first step's margin is no longer 0. */
static void test_dpo_finetune_augment(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL;
    aes_pair_set *set = NULL;
    static const char *const qs[4] = {"a cat", "a dog", "cat and dog", "a red cat"};
    aes_dpo_finetune_config cfg = aes_dpo_finetune_config_default(), c2;
    aes_train_result res;
    lp_user u;
    float *plain = NULL, *straight = NULL, *p2 = NULL;
    size_t np = 0;
    aes_clip_trainer *tr;
    char name[2][16];
    float plain_margin, aug_margin;
    int q, i;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, LP_MERGES, strlen(LP_MERGES), 0, &tok));
    CHECK_OK(ctx, aes_pair_set_create(ctx, &set));
    if (!tok || !set) goto out;
    for (q = 0; q < 4; q++)
        for (i = 0; i < 5; i++) {
            snprintf(name[0], sizeof name[0], "img%d", (q + i) % 8);
            snprintf(name[1], sizeof name[1], "img%d", (q + 2 * i + 3) % 8);
            if (strcmp(name[0], name[1])) CHECK_OK(ctx, aes_pair_set_add(ctx, set, qs[q], name[0], name[1], 1.0f));
        }
    tr = lp_model(ctx, tok, 0, &np);   /* for np */
    if (!tr) { CHECK(0); goto out; }
    lp_free(tr);
    cfg.steps = 4;
    cfg.batch = 6;
    cfg.pairs_per_step = 3;
    cfg.seed = 3;
    cfg.optim.lr = 1e-2f;
    cfg.load_image = lp_load;
    cfg.progress = lp_progress;
    cfg.user = &u;
    memset(&u, 0, sizeof u);
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &cfg, 0, 1, &plain, &res));
    plain_margin = u.first_margin;
    aes_augment_config_default(&cfg.augment, 1);
    memset(&u, 0, sizeof u);
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &cfg, 0, 1, &straight, &res));
    aug_margin = u.first_margin;
    CHECK(res.steps_done == 4 && straight && plain && !lp_same(straight, plain, np));
    CHECK_MSG(fabsf(plain_margin) < 1e-4f && fabsf(aug_margin) > 1e-4f,
              "first-step margin %g without, %g with augmentation", (double)plain_margin, (double)aug_margin);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "    first-step margin (mean h at the reference): plain %.2e, augmented %.2e\n",
                (double)plain_margin, (double)aug_margin);
    /* stopped after 2 steps, resumed: the same bits (2 threads on the second half) */
    c2 = cfg;
    c2.save = lp_save;
    c2.restore = lp_restore;
    c2.resume = 1;
    memset(&u, 0, sizeof u);
    u.stop_at = 2;
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &c2, 0, 1, NULL, &res));
    CHECK(res.stopped && res.steps_done == 2);
    u.stop_at = 0;
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &c2, 0, 2, &p2, &res));
    CHECK(res.resumed && res.start_step == 2 && res.steps_done == 4);
    CHECK_MSG(lp_same(straight, p2, np), "augmented: stopped + resumed differs from straight");
    aes_free(u.model_blob);
    aes_free(u.optim_blob);
    /* bad settings are refused before anything runs */
    c2 = cfg;
    c2.augment.erase = 2.0f;
    memset(&u, 0, sizeof u);
    CHECK(lp_dpo(ctx, tok, set, NULL, &c2, 0, 1, NULL, &res) == AES_ERR_INVALID_ARG);
    CHECK(u.steps == 0 && strstr(aes_last_error(ctx), "augment") != NULL);
out:
    free(plain); free(straight); free(p2);
    aes_pair_set_free(set);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_dpo_finetune_loop(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL, *big = NULL;
    aes_pair_set *set = NULL;
    static const char *const qs[4] = {"a cat", "a dog", "cat and dog", "a red cat"};
    static const char *const cap_img[6] = {"img0", "img1", "img2", "img3", "img4", "img5"};
    static const char *const cap_txt[6] = {"a cat", "dog", "cat", "a dog", "red", "blue"};
    aes_caption_list caps = {cap_img, cap_txt, 6};
    aes_dpo_finetune_config cfg = aes_dpo_finetune_config_default(), c2;
    aes_train_result res;
    lp_user u;
    float *init = NULL, *straight = NULL, *p2 = NULL, *p3 = NULL;
    size_t np = 0;
    aes_clip_trainer *tr = NULL;
    const char *ck = tl_tmp("loop_dpo.safetensors"), *ck_opt = tl_tmp("loop_dpo.safetensors.optim");
    char name[2][16];
    int q, i, tt;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, LP_MERGES, strlen(LP_MERGES), 0, &tok));
    CHECK_OK(ctx, aes_pair_set_create(ctx, &set));
    if (!tok || !set) goto out;
    for (q = 0; q < 4; q++)   /* 20 pairs over 4 queries and 8 images */
        for (i = 0; i < 5; i++) {
            snprintf(name[0], sizeof name[0], "img%d", (q + i) % 8);
            snprintf(name[1], sizeof name[1], "img%d", (q + 2 * i + 3) % 8);
            if (strcmp(name[0], name[1])) CHECK_OK(ctx, aes_pair_set_add(ctx, set, qs[q], name[0], name[1], 1.0f + 0.25f * i));
        }
    tr = lp_model(ctx, tok, 0, &np);
    if (!tr) { CHECK(0); goto out; }
    init = (float *)malloc(np * sizeof(float));
    memcpy(init, lp_params(), np * sizeof(float));
    lp_free(tr);
    tr = NULL;
    cfg.steps = 6;
    cfg.batch = 6;
    cfg.pairs_per_step = 3;
    cfg.seed = 3;
    cfg.optim.lr = 1e-2f;
    cfg.load_image = lp_load;
    cfg.progress = lp_progress;
    cfg.user = &u;

    for (tt = 0; tt < 2; tt++) {   /* text tower frozen (cached embeddings), then both towers trained */
        /* 1. a straight run: it trains, the reference is the model as passed
         *    in (first margin 0), 2 threads give the same bits as 1 */
        memset(&u, 0, sizeof u);
        CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &cfg, tt, 1, &straight, &res));
        CHECK(res.steps_done == 6 && res.start_step == 0 && !res.stopped && !res.resumed);
        CHECK(u.starts == 1 && u.steps == 6 && u.checkpoints == 0);
        CHECK(u.loads >= 8);                          /* the reference pass saw every image */
        CHECK_MSG(fabsf(u.first_margin) < 1e-4f, "first step's margin %g (reference = initial model)",
                  (double)u.first_margin);
        CHECK(straight && !lp_same(straight, init, np));
        memset(&u, 0, sizeof u);
        CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &cfg, tt, 2, &p2, NULL));
        CHECK_MSG(lp_same(straight, p2, np), "train_text %d: 1 and 2 threads differ", tt);
        free(p2);
        p2 = NULL;

        /* 2. stopped by the callback after 2 steps with file checkpoints,
         *    then resumed: the same bits as the straight run */
        remove(ck);
        remove(ck_opt);
        c2 = cfg;
        c2.checkpoint = ck;
        c2.resume = 1;                                 /* nothing there yet: starts at 0 */
        memset(&u, 0, sizeof u);
        u.stop_at = 2;
        CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &c2, tt, 1, NULL, &res));
        CHECK(res.stopped && res.steps_done == 2 && !res.resumed && u.steps == 2 && u.checkpoints == 1);
        memset(&u, 0, sizeof u);
        CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &c2, tt, 2, &p2, &res));
        CHECK(res.resumed && res.start_step == 2 && res.steps_done == 6 && !res.stopped && u.steps == 4);
        CHECK_MSG(lp_same(straight, p2, np), "train_text %d: stopped + resumed differs from straight", tt);
        free(p2);
        p2 = NULL;
        free(straight);
        straight = NULL;
    }

    /* 3. captions for the contrastive term, checkpoints through callbacks
     *    (memory), every 2 steps: straight == stopped at 3 + resumed */
    c2 = cfg;
    c2.save = lp_save;
    c2.restore = lp_restore;
    c2.save_every = 2;
    memset(&u, 0, sizeof u);
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, &caps, &c2, 0, 1, &straight, &res));
    CHECK(u.saves == 3 && u.checkpoints == 3);        /* after steps 2, 4 and at the end */
    aes_free(u.model_blob);
    aes_free(u.optim_blob);
    memset(&u, 0, sizeof u);
    u.stop_at = 3;
    c2.resume = 1;
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, &caps, &c2, 0, 1, NULL, &res));
    CHECK(res.stopped && res.steps_done == 3 && u.saves == 2);   /* after step 2, and at the stop */
    u.stop_at = 0;
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, &caps, &c2, 0, 1, &p2, &res));
    CHECK(res.resumed && res.start_step == 3);
    CHECK_MSG(lp_same(straight, p2, np), "captions: stopped + resumed differs from straight");
    free(p2);
    p2 = NULL;
    aes_free(u.model_blob);
    aes_free(u.optim_blob);

    /* 4. a stop at START: no step, nothing changes */
    memset(&u, 0, sizeof u);
    u.stop_at = -1;
    CHECK_OK(ctx, lp_dpo(ctx, tok, set, NULL, &cfg, 0, 1, &p3, &res));
    CHECK(res.stopped && res.steps_done == 0 && u.steps == 0 && lp_same(p3, init, np));
    free(p3);
    p3 = NULL;

    /* 5. bad input: errors with a message, the model untouched */
    memset(&u, 0, sizeof u);
    tr = lp_model(ctx, tok, 0, &np);
    if (!tr) { CHECK(0); goto out; }
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, NULL, NULL) == AES_ERR_INVALID_ARG);
    CHECK(aes_dpo_finetune(ctx, tr, NULL, NULL, set, NULL, &cfg, NULL) == AES_ERR_INVALID_ARG);
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, NULL, NULL, &cfg, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.batch = 7;                                      /* over the capacity */
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.batch = 1;
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.steps = 0;
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    if (LONG_MAX > INT_MAX) {
        c2 = cfg; c2.steps = (long)INT_MAX + 1;
        CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_LIMIT);
    }
    c2 = cfg; c2.loss.beta = 0.0f;
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.save = lp_save;                                  /* save without restore */
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.save = lp_save; c2.restore = lp_restore; c2.checkpoint = ck;   /* two ways at once */
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    c2 = cfg; c2.optim.lr = -1.0f;
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &c2, NULL) == AES_ERR_INVALID_ARG);
    set->pairs[0].preferred = set->npaths;                        /* an index off the set */
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &cfg, NULL) == AES_ERR_INVALID_ARG);
    set->pairs[0].preferred = 0;
    set->pairs[0].rejected = 1;
    {
        aes_caption_list bad = {cap_img, cap_txt, -1};
        CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, &bad, &cfg, NULL) == AES_ERR_INVALID_ARG);
    }
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, LP_MERGES "r e\n", strlen(LP_MERGES) + 4, 0, &big));
    CHECK(aes_dpo_finetune(ctx, tr, NULL, big, set, NULL, &cfg, NULL) == AES_ERR_MISMATCH);
    CHECK(strstr(aes_last_error(ctx), "vocabulary") != NULL);
    CHECK_OK(ctx, aes_pair_set_add(ctx, set, "a cat", "img1", "nope.ppm", 1.0f));   /* the loader fails */
    CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &cfg, NULL) == AES_ERR_IO);
    CHECK_MSG(strstr(aes_last_error(ctx), "nope.ppm") != NULL, "message: %s", aes_last_error(ctx));
    CHECK(lp_same(lp_params(), init, np));
    {   /* nothing trainable */
        aes_train_options o = tr->opt;
        o.train_vision = 0;
        CHECK_OK(ctx, aes_clip_trainer_set_trainable(ctx, tr, &o));
        CHECK(aes_dpo_finetune(ctx, tr, NULL, tok, set, NULL, &cfg, NULL) == AES_ERR_INVALID_ARG);
        CHECK(strstr(aes_last_error(ctx), "nothing to train") != NULL);
    }
out:
    remove(ck);
    remove(ck_opt);
    free(init);
    free(straight);
    lp_free(tr);
    aes_pair_set_free(set);
    aes_tokenizer_free(tok);
    aes_tokenizer_free(big);
    aes_ctx_free(ctx);
}

/* The grouped shuffle of aes_clip_train: a permutation whose runs of g stay
 * whole and in order, the runs themselves shuffled; g = 1 is the plain one. */
static void test_group_permutation(void) {
    int a[24], b[24], seen[24], i, g, moved = 0;
    uint64_t s1 = 5, s2 = 5;
    aes__group_permutation(&s1, a, 24, 1);
    aes__rand_permutation(&s2, b, 24);
    CHECK(!memcmp(a, b, sizeof a) && s1 == s2);
    for (g = 2; g <= 6; g += 2) {
        memset(seen, 0, sizeof seen);
        aes__group_permutation(&s1, a, 24, g);
        for (i = 0; i < 24; i++) {
            CHECK(a[i] >= 0 && a[i] < 24 && !seen[a[i]]++);
            if (i % g) CHECK_MSG(a[i] == a[i - 1] + 1, "g %d: entry %d", g, i);
            else CHECK(a[i] % g == 0);
            moved += a[i] != i;
        }
    }
    CHECK(moved > 0);
}

static void test_clip_train_loop(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL;
    static const char *const img[8] = {"img0", "img1", "img2", "img3", "img4", "img5", "img6", "img7"};
    static const char *const txt[8] = {"a cat", "a dog", "cat", "dog", "red cat", "blue dog", "a a", "c"};
    aes_caption_list data = {img, txt, 8};
    aes_clip_train_config cfg = aes_clip_train_config_default(), c2;
    aes_clip_trainer *tr = NULL;
    aes_optim *opt = NULL;
    aes_train_result res;
    lp_user u;
    float *straight = NULL;
    size_t np = 0;
    const char *ck = tl_tmp("loop_clip.safetensors"), *ck_opt = tl_tmp("loop_clip.safetensors.optim");
    int run;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, LP_MERGES, strlen(LP_MERGES), 0, &tok));
    if (!tok) goto out;
    cfg.steps = 5;
    cfg.batch = 4;
    cfg.seed = 11;
    cfg.optim.lr = 1e-2f;
    cfg.load_image = lp_load;
    cfg.progress = lp_progress;
    cfg.user = &u;
    remove(ck);
    remove(ck_opt);
    /* runs: 0 straight (cached images), 1 two threads, 2 images loaded per
     * batch, 3 stopped after 2 (files), 4 resumed, 5 the caller's optimizer,
     * 2 steps in one call and the rest in a second call */
    for (run = 0; run < 6; run++) {
        float *p;
        tr = lp_model(ctx, tok, 1, &np);
        if (!tr) { CHECK(0); break; }
        c2 = cfg;
        memset(&u, 0, sizeof u);
        if (run == 2) c2.cache_images = 0;
        if (run == 3) u.stop_at = 2;
        if (run == 3 || run == 4) { c2.checkpoint = ck; c2.resume = 1; }
        aes_threads_set(ctx, run == 1 || run == 4 ? 2 : 1);
        if (run == 5) {
            const aes_param_segment *seg;
            int nseg;
            aes_optim_config oc = cfg.optim;
            oc.warmup_steps = 5 / 20;
            oc.total_steps = 5;
            aes_clip_trainer_segments(tr, &seg, &nseg);
            CHECK_OK(ctx, aes_optim_create(ctx, &oc, np, seg, nseg, &opt));
            c2.steps = 2;
            CHECK_OK(ctx, aes_clip_train(ctx, tr, opt, tok, &data, &c2, &res));
            CHECK(res.steps_done == 2 && aes_optim_steps_done(opt) == 2);
            c2.steps = 5;
        }
        CHECK_OK(ctx, aes_clip_train(ctx, tr, opt, tok, &data, &c2, &res));
        aes_threads_set(ctx, 1);
        p = (float *)malloc(np * sizeof(float));
        memcpy(p, lp_params(), np * sizeof(float));
        if (run == 0) {
            straight = p;
            CHECK(res.steps_done == 5 && u.steps == 5 && u.loads == 8 && res.last.clip_loss > 0);
        } else {
            if (run == 2) CHECK(u.loads == 5 * 4);
            if (run == 3) CHECK(res.stopped && res.steps_done == 2);
            if (run == 4) CHECK(res.resumed && res.start_step == 2 && u.steps == 3);
            if (run != 3) CHECK_MSG(lp_same(straight, p, np), "run %d differs from the straight run", run);
            free(p);
        }
        aes_optim_free(opt);
        opt = NULL;
        lp_free(tr);
        tr = NULL;
    }
    /* bad input */
    tr = lp_model(ctx, tok, 1, &np);
    if (tr) {
        float *before = (float *)malloc(np * sizeof(float));
        memcpy(before, lp_params(), np * sizeof(float));
        data.n = 1;
        CHECK(aes_clip_train(ctx, tr, NULL, tok, &data, &cfg, NULL) == AES_ERR_INVALID_ARG);
        data.n = 8;
        CHECK(aes_clip_train(ctx, tr, NULL, tok, NULL, &cfg, NULL) == AES_ERR_INVALID_ARG);
        c2 = cfg; c2.label_smoothing = 1.0f;
        CHECK(aes_clip_train(ctx, tr, NULL, tok, &data, &c2, NULL) == AES_ERR_INVALID_ARG);
        c2 = cfg; c2.batch = 9;
        CHECK(aes_clip_train(ctx, tr, NULL, tok, &data, &c2, NULL) == AES_ERR_INVALID_ARG);
        c2 = cfg; c2.group = 3;     /* 8 rows are not runs of 3 */
        CHECK(aes_clip_train(ctx, tr, NULL, tok, &data, &c2, NULL) == AES_ERR_INVALID_ARG);
        c2 = cfg; c2.group = 8;     /* nor is a batch of 4 */
        CHECK(aes_clip_train(ctx, tr, NULL, tok, &data, &c2, NULL) == AES_ERR_INVALID_ARG);
        {
            static const char *const bad_img[3] = {"img0", "broken", "img1"};
            aes_caption_list bad = {bad_img, txt, 3};
            c2 = cfg; c2.batch = 2;
            CHECK(aes_clip_train(ctx, tr, NULL, tok, &bad, &c2, NULL) == AES_ERR_IO);
            CHECK_MSG(!strcmp(aes_last_error(ctx), "broken: i/o error"), "message: %s", aes_last_error(ctx));
        }
        CHECK(lp_same(lp_params(), before, np));
        free(before);
    }
out:
    remove(ck);
    remove(ck_opt);
    free(straight);
    aes_optim_free(opt);
    lp_free(tr);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* ---- the CLI: index -> make-pairs -> finetune-dpo, interrupted and resumed ---- */

#include <sys/stat.h>
#define TFIX "tests/fixtures/retrieval/"

static int sh(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int files_equal(const char *a, const char *b) {
    aes_ctx *c = aes_ctx_create();
    void *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = c && aes_read_file(c, a, &x, &nx) == AES_OK && aes_read_file(c, b, &y, &ny) == AES_OK && nx == ny &&
               !memcmp(x, y, nx);
    aes_free(x);
    aes_free(y);
    aes_ctx_free(c);
    return same;
}

static void test_cli_make_pairs_finetune_resume(void) {
    const char *cli = tl_cli();
    char dir[] = "/tmp/aes_test_dpo_XXXXXX", path[512], line[2048];
    const char *model = TFIX "tiny_clip.safetensors", *vocab = TFIX "merges.txt";
    aes_ctx *c;
    aes_index *idx = NULL;
    aes_clip *m0 = NULL, *m1 = NULL;
    aes_tokenizer *tok = NULL;
    FILE *f;
    int i, npairs = 0, ordered = 1;
    if (!cli) return;
    if (!mkdtemp(dir)) { tl_skip("no temporary directory"); return; }
    c = aes_ctx_create();
    snprintf(path, sizeof path, "%s/imgs", dir);
    mkdir(path, 0777);
    for (i = 0; i < 16; i++) {   /* 16 small images with different colours and textures */
        aes_image img;
        int p;
        memset(&img, 0, sizeof img);
        if (aes_image_alloc(c, &img, 24 + i, 20 + 2 * i, 3) != AES_OK) break;
        for (p = 0; p < img.width * img.height * 3; p++)
            img.pixels[p] = (uint8_t)(((p % 3) * 80 * (i % 4) + (p / 3 % img.width) * (i + 1) * 5 + i * 13) & 255);
        snprintf(path, sizeof path, "%s/imgs/%02d.ppm", dir, i);
        CHECK_OK(c, aes_image_save_ppm(c, path, &img));
        aes_image_free(&img);
    }
    CHECK(sh("%s index build --model %s --head " TFIX "head.safetensors --out %s/x.idx --quiet %s/imgs 2>/dev/null",
             cli, model, dir, dir) == 0);
    snprintf(path, sizeof path, "%s/queries.txt", dir);
    f = fopen(path, "w");
    if (f) { fputs("a red cat\na blue square\nsomething bright\n", f); fclose(f); }
    CHECK(sh("%s make-pairs --index %s/x.idx --model %s --vocab %s --queries %s --k 12 --rows 3 --cols 3 "
             "--stride 1 --expand none --out %s/pairs.tsv 2>/dev/null", cli, dir, model, vocab, path, dir) == 0);
    CHECK(sh("%s make-pairs --index %s/x.idx --model %s --vocab %s --queries %s --k 12 --rows 3 --cols 3 "
             "--stride 1 --rows-from cosine --out %s/pairs_cos.tsv 2>/dev/null", cli, dir, model, vocab, path, dir) == 0);
    CHECK(sh("%s make-pairs --index %s/x.idx --model %s --vocab %s --queries %s --rows-from bogus "
             "--out %s/pairs_bad.tsv 2>/dev/null", cli, dir, model, vocab, path, dir) != 0);

    /* every pair names two indexed images, and the 2-D order never prefers an
     * image that is worse on both counts: the rejected one is never both more
     * relevant (cosine to the query) and more aesthetic than the preferred */
    snprintf(path, sizeof path, "%s/x.idx", dir);
    CHECK_OK(c, aes_index_load(c, path, &idx));
    CHECK_OK(c, aes_clip_load(c, model, NULL, &m0));
    CHECK_OK(c, aes_tokenizer_load_merges(c, vocab, &tok));
    if (!m0 || !tok || !idx || idx->dim > 64) { CHECK(0); goto out; }
    snprintf(path, sizeof path, "%s/pairs.tsv", dir);
    f = fopen(path, "r");
    CHECK(f != NULL);
    while (f && idx && fgets(line, sizeof line, f)) {
        char *q = line, *w = strchr(q, '\t'), *l = w ? strchr(w + 1, '\t') : NULL;
        int64_t iw, il;
        if (line[0] == '#') continue;
        CHECK(w && l);
        if (!w || !l) break;
        *w++ = 0;
        *l++ = 0;
        l[strcspn(l, "\t\r\n")] = 0;
        iw = aes_index_find(idx, w);
        il = aes_index_find(idx, l);
        CHECK(iw >= 0 && il >= 0 && iw != il);
        if (iw < 0 || il < 0) continue;
        {
            int32_t ids[128];
            float qv[64];
            double sw = 0, sl = 0;
            int k, ctxlen = aes_clip_config_get(m0)->context_length;
            CHECK(ctxlen <= 128);
            CHECK_OK(c, aes_tokenizer_encode(c, tok, q, strlen(q), ids, ctxlen, NULL));
            CHECK_OK(c, aes_clip_encode_text(c, m0, ids, 1, qv));
            for (k = 0; k < idx->dim; k++) {
                sw += (double)qv[k] * idx->vectors[(size_t)iw * idx->dim + k];
                sl += (double)qv[k] * idx->vectors[(size_t)il * idx->dim + k];
            }
            if (sl > sw + 1e-6 && idx->aesthetic[il] > idx->aesthetic[iw] + 1e-6f) ordered = 0;
        }
        npairs++;
    }
    if (f) fclose(f);
    CHECK(npairs >= 6);
    CHECK(ordered);
    aes_clip_free(m0);
    m0 = NULL;

    /* 4 steps straight, and 2 + 2 with a stop and --resume: the same bytes */
    CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
             "--seed 3 --out %s/a.safetensors > /dev/null 2>&1", cli, model, vocab, dir, dir) == 0);
    CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
             "--seed 3 --stop-after 2 --out %s/b.safetensors > /dev/null 2>&1", cli, model, vocab, dir, dir) == 0);
    CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
             "--seed 3 --resume --out %s/b.safetensors > /dev/null 2>&1", cli, model, vocab, dir, dir) == 0);
    {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/a.safetensors", dir);
        snprintf(b, sizeof b, "%s/b.safetensors", dir);
        CHECK(files_equal(a, b));
        /* the same with --augment: resumed == straight, and not the plain run */
        CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
                 "--seed 3 --augment --aug-erase 0.5 --out %s/c.safetensors > /dev/null 2>&1", cli, model, vocab, dir, dir) == 0);
        CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
                 "--seed 3 --augment --aug-erase 0.5 --stop-after 2 --out %s/d.safetensors > /dev/null 2>&1", cli, model,
                 vocab, dir, dir) == 0);
        CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 4 --batch 6 --lr 1e-3 "
                 "--seed 3 --augment --aug-erase 0.5 --resume --out %s/d.safetensors > /dev/null 2>&1", cli, model, vocab,
                 dir, dir) == 0);
        CHECK(sh("%s finetune-dpo --model %s --vocab %s --pairs %s/pairs.tsv --steps 1 --aug-flip 2 "
                 "--out %s/e.safetensors > /dev/null 2>&1", cli, model, vocab, dir, dir) != 0);
        {
            char c_[600], d_[600];
            snprintf(c_, sizeof c_, "%s/c.safetensors", dir);
            snprintf(d_, sizeof d_, "%s/d.safetensors", dir);
            CHECK(files_equal(c_, d_));
            CHECK(!files_equal(a, c_));
        }
        /* the result loads in the inference model, and it moved */
        CHECK_OK(c, aes_clip_load(c, model, NULL, &m0));
        CHECK_OK(c, aes_clip_load(c, a, NULL, &m1));
        CHECK(m0 && m1 && strcmp(aes_clip_id(m0), aes_clip_id(m1)) != 0);
    }
out:
    aes_tokenizer_free(tok);
    aes_clip_free(m0);
    aes_clip_free(m1);
    aes_index_free(idx);
    aes_ctx_free(c);
    sh("rm -rf '%s'", dir);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    RUN(test_lr_schedule);
    RUN(test_sgd_momentum_nesterov);
    RUN(test_adamw_and_segments);
    RUN(test_clip_norm_and_nonfinite);
    RUN(test_optim_thread_invariance);
    RUN(test_optim_save_resume);
    RUN(test_clip_loss_gradcheck);
    RUN(test_dpo_loss_gradcheck);
    RUN(test_pairs_grid);
    RUN(test_pairs_from_results);
    RUN(test_augment_pixels);
    RUN(test_pair_tsv);
    RUN(test_clip_forward_matches_fixture);
    RUN(test_clip_backward_gradcheck);
    RUN(test_clip_freeze);
    RUN(test_vision_only_cached_texts);
    RUN(test_reference_step);
    RUN(test_checkpoint_resume);
    RUN(test_hostile_inputs);
    RUN(test_finetune_raises_preference_accuracy);
    RUN(test_one_validator_edges);
    RUN(test_dpo_finetune_loop);
    RUN(test_dpo_finetune_augment);
    RUN(test_group_permutation);
    RUN(test_clip_train_loop);
    RUN(test_cli_make_pairs_finetune_resume);
    return tl_report();
}
