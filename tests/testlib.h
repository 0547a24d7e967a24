/* testlib.h - the project's tiny test runner.
 *
 * A test file is one program:
 *
 *     #include "testlib.h"
 *     static void test_add(void) { CHECK(1 + 1 == 2); CHECK_NEAR(0.1 + 0.2, 0.3, 1e-12); }
 *     int main(int argc, char **argv) { TL_INIT(argc, argv); RUN(test_add); return tl_report(); }
 *
 * Each RUN is one test case; it passes when none of its CHECKs failed and it
 * did not call tl_skip().  tl_report() prints "<file>: N passed, N failed,
 * N skipped" which tests/run_tests.sh adds up over all test programs.
 * `build/tests/test_x NAME` runs only the cases whose name contains NAME.
 */
#ifndef AES_TESTLIB_H
#define AES_TESTLIB_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int tl_passed, tl_failed, tl_skipped;
static int tl_case_failures, tl_case_skipped;
static const char *tl_prog = "test";
static const char *tl_filter = NULL;
static const char *tl_case = "";

#define TL_INIT(argc, argv) \
    do { tl_prog = (argv)[0]; if ((argc) > 1) tl_filter = (argv)[1]; } while (0)

static void tl_fail_at(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
#include <stdarg.h>
static void tl_fail_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    if (tl_case_failures < 10) {
        fprintf(stderr, "  FAIL %s (%s:%d): ", tl_case, file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    tl_case_failures++;
}

#define CHECK(cond) \
    do { if (!(cond)) tl_fail_at(__FILE__, __LINE__, "%s", #cond); } while (0)
#define CHECK_MSG(cond, ...) \
    do { if (!(cond)) tl_fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_NEAR(a, b, tol) \
    do { double tl_a_ = (double)(a), tl_b_ = (double)(b); \
         if (!(fabs(tl_a_ - tl_b_) <= (tol))) \
             tl_fail_at(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", \
                        #a, tl_a_, #b, tl_b_, fabs(tl_a_ - tl_b_), (double)(tol)); } while (0)
/* Equality of status codes with the library's message when it fails. */
#define CHECK_OK(ctx, expr) \
    do { int tl_st_ = (int)(expr); \
         if (tl_st_ != 0) tl_fail_at(__FILE__, __LINE__, "%s -> status %d: %s", #expr, tl_st_, \
                                     aes_last_error(ctx)); } while (0)

/* Marks the current case skipped (with a reason printed once). */
static inline void tl_skip(const char *why) {
    fprintf(stderr, "  SKIP %s: %s\n", tl_case, why);
    tl_case_skipped = 1;
}

/* The CLI command line the tests may run, or NULL (and the case skipped)
 * when there is none: $AES_CLI is the binary (`make test` sets it) and
 * $AES_CLI_RUNNER an optional prefix such as "qemu-arm -L /usr/arm-linux-gnueabihf"
 * for cross builds.  Whether it runs at all is checked once per program. */
static inline const char *tl_cli(void) {
    static char line[256];
    static int state;   /* 0 not checked yet, 1 runs, -1 does not */
    const char *cli = getenv("AES_CLI"), *runner = getenv("AES_CLI_RUNNER");
    if (!cli || !*cli) { tl_skip("AES_CLI is not set (make test sets it)"); return NULL; }
    if (!state) {
        char cmd[320];
        snprintf(line, sizeof line, "%s%s%s", runner ? runner : "", runner && *runner ? " " : "", cli);
        snprintf(cmd, sizeof cmd, "%s --version >/dev/null 2>&1", line);
        state = system(cmd) == 0 ? 1 : -1;
    }
    if (state < 0) { tl_skip("cannot run $AES_CLI here (a cross build without AES_CLI_RUNNER?)"); return NULL; }
    return line;
}

/* A scratch file path unique to this process: "/tmp/aes_test_<pid>_<name>".
 * Returns one of 8 rotating buffers, so a few can be held at once. */
#include <unistd.h>
static inline const char *tl_tmp(const char *name) {
    static char buf[8][256];
    static int next;
    char *p = buf[next++ & 7];
    snprintf(p, 256, "/tmp/aes_test_%ld_%s", (long)getpid(), name);
    return p;
}

#ifdef AESALIGN_H
/* A new library context; a test program cannot go on without one. */
static inline aes_ctx *tl_ctx(void) {
    aes_ctx *ctx = aes_ctx_create();
    if (!ctx) {
        fprintf(stderr, "no context (out of memory?)\n");
        exit(1);
    }
    return ctx;
}
#endif

static inline double tl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void tl_run(const char *name, void (*fn)(void)) {
    double t0;
    if (tl_filter && !strstr(name, tl_filter)) return;
    tl_case = name;
    tl_case_failures = 0;
    tl_case_skipped = 0;
    t0 = tl_now();
    fn();
    if (tl_case_failures) {
        tl_failed++;
        fprintf(stderr, "FAIL %s (%d checks failed)\n", name, tl_case_failures);
    } else if (tl_case_skipped) {
        tl_skipped++;
    } else {
        tl_passed++;
        if (getenv("TL_VERBOSE")) fprintf(stderr, "ok   %s (%.2fs)\n", name, tl_now() - t0);
    }
}
#define RUN(fn) tl_run(#fn, fn)

static inline int tl_report(void) {
    const char *base = strrchr(tl_prog, '/');
    printf("%s: %d passed, %d failed, %d skipped\n", base ? base + 1 : tl_prog, tl_passed, tl_failed,
           tl_skipped);
    return tl_failed ? 1 : 0;
}

/* Deterministic pseudo-random numbers for test data (xorshift64*). */
static unsigned long long tl_rng_state = 0x9E3779B97F4A7C15ull;
static inline void tl_seed(unsigned long long s) { tl_rng_state = s ? s : 1; }
static inline double tl_uniform(void) { /* [0, 1) */
    tl_rng_state ^= tl_rng_state >> 12;
    tl_rng_state ^= tl_rng_state << 25;
    tl_rng_state ^= tl_rng_state >> 27;
    return (double)((tl_rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static inline float tl_randf(void) { return (float)(2.0 * tl_uniform() - 1.0); } /* [-1, 1) */
static inline void tl_fill(float *x, size_t n, float scale) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * tl_randf();
}

/* The path of ../shared (beside the checkout) or NULL when absent. */
static inline const char *tl_shared_dir(void) {
    static char path[4096];
    const char *env = getenv("AES_SHARED_DIR");
    FILE *f;
    snprintf(path, sizeof path, "%s/README.md", env ? env : "../shared");
    f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    snprintf(path, sizeof path, "%s", env ? env : "../shared");
    return path;
}

#endif
