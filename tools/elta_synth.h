/* elta_synth.h - a synthetic long-tailed aesthetics benchmark on real
 * embeddings, shared by `aesalign elta-bench` (tools/cmd_head.c), the tests
 * (tests/test_elta.c) and examples/train_iaa_elta.c.
 *
 * Not part of the library: it uses only aesalign.h's public API plus libc
 * and libm.  Every function is static, so a plain #include (after
 * aesalign.h) is all a program needs.  Names start with synth_.
 *
 * anchors[10, D] are embeddings of rising aesthetic level (e.g. LAION's
 * rating-0..9 embeddings in ../shared/data).  A sample's latent score s is
 * drawn from a normal law truncated to [1, 10] (rare at both ends: the long
 * tail).  Its embedding is the point at s + position_sd * N(0,1) (clamped to
 * [1, 10]) on the polyline through the anchors -- an image shows its quality
 * only in part -- plus "content" (a Gaussian in a random subspace of rank
 * content_rank, the same for every sample of one world seed) plus isotropic
 * noise, L2-normalised.  Its label is a histogram of `votes` votes
 * round(s + vote_sd * N(0,1)) clamped to 1..10.  Because the embedding
 * tells the score only up to position_sd, the least-squares head shrinks
 * its predictions toward the mean by about sd^2 / (sd^2 + position_sd^2):
 * the rarer a score, the worse it is predicted -- the failure ELTA targets
 * -- while rank metrics stay those of a decent head (SRCC near 0.75 with the
 * defaults, AVA-like).
 */
#ifndef ELTA_SYNTH_H
#define ELTA_SYNTH_H

#include "aesalign.h"
#include <math.h>
#include <string.h>

typedef struct synth_cfg {
    float mean, sd;            /* latent score law (default 5.5, 1.0)                */
    float content_scale;       /* default 0.6                                        */
    int   content_rank;        /* default 32                                         */
    float noise_scale;         /* default 0.35 (norm of the isotropic noise)         */
    float position_sd;         /* default 0.8 (score units)                          */
    int   votes;               /* default 100                                        */
    float vote_sd;             /* default 1.2                                        */
} synth_cfg;

static void synth_default(synth_cfg *cfg) {
    cfg->mean = 5.5f;
    cfg->sd = 1.0f;
    cfg->content_scale = 0.6f;
    cfg->content_rank = 32;
    cfg->noise_scale = 0.35f;
    cfg->position_sd = 0.8f;
    cfg->votes = 100;
    cfg->vote_sd = 1.2f;
}

/* Standard normal: splitmix64 (Steele, Lea, Flood, OOPSLA 2014) for 53-bit
 * uniforms, Box-Muller for the normal (one value of the pair). */
static double synth__normal(uint64_t *state) {
    double u[2];
    int i;
    for (i = 0; i < 2; i++) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        u[i] = (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
    }
    if (u[0] < 1e-300) u[0] = 1e-300;
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* Fills x[n, D] and labels (allocated; free with aes_labels_free).  World
 * seed fixes the content subspace; sample_seed the samples.  Bad arguments
 * return AES_ERR_INVALID_ARG (with no message: only the library writes
 * aes_last_error); a failed allocation, the library's status and message. */
static aes_status synth_make(aes_ctx *ctx, float *x, aes_labels *labels, int n, const float *anchors, int D,
                             const synth_cfg *cfg, uint64_t world_seed, uint64_t sample_seed) {
    float *basis;
    double *z;
    uint64_t wr = world_seed * 0xD1B54A32D192ED03ull + 1, sr = sample_seed * 0x8CB92BA72F3D8DD7ull + 7;
    int i, k, c, rank;
    if (!x || !labels || !anchors || !cfg || n < 1 || D < 1 || cfg->content_rank < 0 || cfg->votes < 1 ||
        !(cfg->sd > 0.0f))
        return AES_ERR_INVALID_ARG;
    memset(labels, 0, sizeof *labels);
    rank = cfg->content_rank;
    basis = (float *)aes_alloc(ctx, (size_t)(rank ? rank : 1) * D, sizeof(float));
    z = (double *)aes_alloc(ctx, (size_t)D, sizeof(double));
    labels->score = (float *)aes_alloc(ctx, (size_t)n, sizeof(float));
    labels->hist = (float *)aes_alloc(ctx, (size_t)n * AES_SCORE_BINS, sizeof(float));
    if (!basis || !z || !labels->score || !labels->hist) {
        aes_free(basis); aes_free(z); aes_labels_free(labels);
        return aes_last_status(ctx);
    }
    labels->n = n;
    labels->has_hist = 1;
    for (i = 0; i < rank * D; i++) basis[i] = (float)(synth__normal(&wr) / sqrt((double)D));
    for (i = 0; i < n; i++) {
        double s, t, norm = 0.0, sum = 0.0, mean = 0.0, w = 0.0;
        int i0;
        float *h = labels->hist + (size_t)i * AES_SCORE_BINS, *xi = x + (size_t)i * D;
        do s = cfg->mean + cfg->sd * synth__normal(&sr); while (s < 1.0 || s > 10.0);
        t = s + cfg->position_sd * synth__normal(&sr);
        t = (t < 1.0 ? 1.0 : (t > 10.0 ? 10.0 : t)) - 1.0; /* on the polyline through the 10 anchors */
        i0 = (int)floor(t);
        if (i0 > 8) i0 = 8;
        t -= i0;
        for (c = 0; c < D; c++)
            z[c] = (1.0 - t) * anchors[(size_t)i0 * D + c] + t * anchors[(size_t)(i0 + 1) * D + c] +
                   cfg->noise_scale * synth__normal(&sr) / sqrt((double)D);
        for (k = 0; k < rank; k++) {
            double a = cfg->content_scale * synth__normal(&sr) / sqrt((double)rank);
            for (c = 0; c < D; c++) z[c] += a * basis[(size_t)k * D + c];
        }
        for (c = 0; c < D; c++) norm += z[c] * z[c];
        norm = sqrt(norm);
        for (c = 0; c < D; c++) xi[c] = (float)(z[c] / (norm > 0.0 ? norm : 1.0));
        for (k = 0; k < AES_SCORE_BINS; k++) h[k] = 0.0f;
        for (k = 0; k < cfg->votes; k++) {
            long v = lround(s + cfg->vote_sd * synth__normal(&sr));
            v = v < 1 ? 1 : (v > 10 ? 10 : v);
            h[v - 1] += 1.0f;
        }
        for (k = 0; k < AES_SCORE_BINS; k++) sum += h[k];
        for (k = 0; k < AES_SCORE_BINS; k++) h[k] = (float)(h[k] / sum);
        for (k = 0; k < AES_SCORE_BINS; k++) {
            mean += (double)(k + 1) * h[k];
            w += h[k];
        }
        labels->score[i] = (float)(mean / w);
    }
    aes_free(basis);
    aes_free(z);
    return AES_OK;
}

#endif /* ELTA_SYNTH_H */
