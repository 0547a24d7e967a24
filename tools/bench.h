/* bench.h - what every tools/bench_*.c program needs besides the library:
 * a monotonic clock, peak RSS, a median, and one way to stop on an error.
 * Define BENCH_NAME (the program's name, for messages) before including it,
 * after aesalign.h.  Benchmarks only: never part of the library. */
#ifndef AES_TOOLS_BENCH_H
#define AES_TOOLS_BENCH_H
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/resource.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including tools/bench.h"

/* CLIP ViT-B/32's shapes (quick_gelu, as OpenAI's checkpoint): the image
 * tower, and the text tower too when with_text is set. */
static inline void vitb32_config(aes_clip_config *cfg, int with_text) {
    memset(cfg, 0, sizeof *cfg);
    cfg->image_size = 224; cfg->patch_size = 32;
    cfg->vision_width = 768; cfg->vision_layers = 12; cfg->vision_heads = 12; cfg->vision_mlp = 3072;
    cfg->embed_dim = 512; cfg->act = AES_ACT_QUICK_GELU; cfg->ln_eps = 1e-5f;
    cfg->has_vision = 1;
    if (with_text) {
        cfg->context_length = 77; cfg->vocab_size = 49408;
        cfg->text_width = 512; cfg->text_layers = 12; cfg->text_heads = 8; cfg->text_mlp = 2048;
        cfg->has_text = 1;
    }
}
#endif

/* Seconds on the monotonic clock (POSIX; the Makefile sets _POSIX_C_SOURCE). */
static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The process's peak resident set so far, in MB (Linux reports kilobytes). */
static inline double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* Prints "BENCH_NAME: what: the context's last error" and exits 1. */
static inline void die(aes_ctx *ctx, const char *what) {
    fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what, ctx ? aes_last_error(ctx) : "");
    exit(1);
}

/* qsort order for doubles. */
static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0, n) (sorts v). */
static inline double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* CLIP ViT-B/32's shapes (quick_gelu, as OpenAI's checkpoint): the image
 * tower, and the text tower too when with_text is set. */
static inline void vitb32_config(aes_clip_config *cfg, int with_text) {
    memset(cfg, 0, sizeof *cfg);
    cfg->image_size = 224; cfg->patch_size = 32;
    cfg->vision_width = 768; cfg->vision_layers = 12; cfg->vision_heads = 12; cfg->vision_mlp = 3072;
    cfg->embed_dim = 512; cfg->act = AES_ACT_QUICK_GELU; cfg->ln_eps = 1e-5f;
    cfg->has_vision = 1;
    if (with_text) {
        cfg->context_length = 77; cfg->vocab_size = 49408;
        cfg->text_width = 512; cfg->text_layers = 12; cfg->text_heads = 8; cfg->text_mlp = 2048;
        cfg->has_text = 1;
    }
}
#endif
