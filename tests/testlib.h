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

/* Runs a shell command line made from fmt: "%C" is the CLI (with its
 * runner), "%D" the folder dir; other text is taken as is.  Returns the exit
 * status (0 = success). */
static inline int tl_sh(const char *dir, const char *fmt) {
    char cmd[8192];
    size_t n = 0;
    const char *p, *cli = tl_cli();
    for (p = fmt; *p && n + 512 < sizeof cmd; p++) {
        if (p[0] == '%' && p[1] == 'C') { n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s", cli ? cli : "false"); p++; }
        else if (p[0] == '%' && p[1] == 'D') { n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s", dir); p++; }
        else cmd[n++] = *p;
    }
    cmd[n] = 0;
    return system(cmd);
}

/* The text of dir/name (malloc'ed and NUL-terminated; "" when missing). */
static inline char *tl_slurp(const char *dir, const char *name) {
    char path[512];
    FILE *f;
    long len = 0;
    char *s;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (f && fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0) len = 0;
    s = (char *)malloc((size_t)len + 1);
    if (s) {
        if (f && len && (fseek(f, 0, SEEK_SET) != 0 || fread(s, 1, (size_t)len, f) != (size_t)len)) len = 0;
        s[len] = 0;
    }
    if (f) fclose(f);
    return s;
}

/* Sleeps ms milliseconds (tests that wait for a server or a lock). */
#include <time.h>
static inline void tl_sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
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

/* ---- finite-difference gradient check ---------------------------------------
 *
 * One checker for every backward pass:
 *
 *     typedef double (*tl_loss_fn)(void *problem);
 *
 *     tl_fd_result CHECK_GRAD(const char *what, tl_loss_fn loss, void *problem,
 *                             float *x, const float *grad, size_t n,
 *                             const tl_fd_opts *opts);          (opts NULL: defaults)
 *     tl_fd_result CHECK_GRAD_D(what, loss, problem, double *x, const double *grad, n, opts);
 *
 *     tl_fd_opts o = tl_fd_default();  o.h = 1e-3;  ...;  CHECK_GRAD("w", f, &p, w, dw, n, &o);
 *     (or a static initializer in field order: h, rtol, atol, atol_of_max,
 *      scale, kink_fraction, min_cosine, max_entries)
 *
 * loss(problem) computes the scalar loss from the CURRENT contents of x (the
 * problem struct holds x and whatever else it needs) and returns it as a
 * double (sum it in double).  grad[0..n-1] is the analytic dLoss/dx to check.
 * For each checked entry i, x[i] is set to x_i + h and x_i - h and restored
 * bit for bit afterwards (loss is called once more at the end, so buffers the
 * loss writes are left at the unperturbed point).  The numeric slope is
 *
 *     numeric = scale * (L(x_i + h) - L(x_i - h)) / ((x_i + h) - (x_i - h))
 *
 * in double, with the denominator taken from the values actually stored
 * (float rounding of x_i +- h included).  An entry passes when
 *
 *     |analytic - numeric| <= atol + atol_of_max * max_j |grad_j| + rtol * |numeric|
 *
 * and CHECK_GRAD fails the current case (with file and line) when an entry does
 * not, naming the worst entry (largest |diff| / allowed) with its index, both
 * values and the bound.  Options (tl_fd_default() gives the defaults):
 *
 *     h            step (1e-2)
 *     rtol, atol   the tolerances above (5e-3, 1e-5); atol_of_max (0) scales
 *                  an absolute floor by the tensor's largest |grad|, for float
 *                  forward passes whose rounding noise follows the tensor's scale
 *     max_entries  0 checks every entry; m > 0 checks m entries evenly spread
 *                  over 0..n-1 (first and last included)
 *     scale        multiplies the numeric slope (a loss reference without the
 *                  backward's gradient scale: pass that scale here) (1)
 *     kink_fraction  0: off.  > 0: entries whose central differences at h and
 *                  h/2 disagree (|d_h - d_h/2| > 0.1 (|d_h| + |d_h/2|) + 4 (atol +
 *                  atol_of_max max|grad|):
 *                  a ReLU switched inside [x - h, x + h]) have no derivative to
 *                  check and are skipped, and the check fails when more than
 *                  this fraction of the checked entries were skipped
 *     min_cosine   0: off.  > 0: also fail when the cosine between the numeric
 *                  and analytic vectors (over the checked entries) is below it
 *
 * The result: worst (largest |diff| / allowed; <= 1 passes), worst_index,
 * worst_analytic, worst_numeric, worst_allowed, max_rel_err (|diff| /
 * max(|numeric|, |analytic|) over entries where that is > 1e-12), the counts
 * checked / failed / kinks and cosine.  TL_VERBOSE=1 prints one line per check.
 * tl_fd_compare() / tl_fd_compare_d() are the same computation without the
 * CHECK (a test of the checker itself, or a test that wants the numbers).
 * A scalar parameter (a logit scale) is checked as a 1-entry array; a loss
 * over two tensors is checked once per tensor.  opts is evaluated twice. */
typedef double (*tl_loss_fn)(void *problem);

typedef struct {
    double h, rtol, atol, atol_of_max, scale, kink_fraction, min_cosine;
    size_t max_entries;
} tl_fd_opts;

typedef struct {
    double worst, worst_analytic, worst_numeric, worst_allowed, max_rel_err, cosine;
    size_t worst_index, checked, failed, kinks;
} tl_fd_result;

static inline tl_fd_opts tl_fd_default(void) {
    tl_fd_opts o;
    o.h = 1e-2;
    o.rtol = 5e-3;
    o.atol = 1e-5;
    o.atol_of_max = 0.0;
    o.scale = 1.0;
    o.kink_fraction = 0.0;
    o.min_cosine = 0.0;
    o.max_entries = 0;
    return o;
}

/* x is float (xf) or double (xd); the other is NULL. */
static inline double tl__fd_get(float *xf, double *xd, size_t i) { return xf ? (double)xf[i] : xd[i]; }
/* Sets x[i] = v as stored and returns the stored value. */
static inline double tl__fd_set(float *xf, double *xd, size_t i, double v) {
    if (xf) { xf[i] = (float)v; return (double)xf[i]; }
    xd[i] = v;
    return xd[i];
}

/* The central difference at step h around the value keep (restores keep). */
static inline double tl__fd_slope(tl_loss_fn loss, void *problem, float *xf, double *xd, size_t i, double keep,
                                  double h) {
    double hi, lo, lp, lm;
    hi = tl__fd_set(xf, xd, i, keep + h);
    lp = loss(problem);
    lo = tl__fd_set(xf, xd, i, keep - h);
    lm = loss(problem);
    if (xf) xf[i] = (float)keep; else xd[i] = keep;
    return hi > lo ? (lp - lm) / (hi - lo) : 0.0;
}

static inline tl_fd_result tl__fd_run(tl_loss_fn loss, void *problem, float *xf, double *xd, const float *gf,
                                      const double *gd, size_t n, const tl_fd_opts *opts) {
    tl_fd_opts o = opts ? *opts : tl_fd_default();
    tl_fd_result r;
    size_t k, m, i;
    double gmax = 0.0, abs_floor, dot = 0.0, nn = 0.0, aa = 0.0;
    memset(&r, 0, sizeof r);
    r.cosine = 1.0;
    for (i = 0; i < n; i++) gmax = fmax(gmax, fabs(gf ? (double)gf[i] : gd[i]));
    abs_floor = o.atol + o.atol_of_max * gmax;
    m = o.max_entries && o.max_entries < n ? o.max_entries : n;
    for (k = 0; k < m; k++) {
        double keep, num, ana, diff, allowed, ratio, big;
        i = m == n ? k : (m == 1 ? 0 : (size_t)((double)k * (double)(n - 1) / (double)(m - 1) + 0.5));
        keep = tl__fd_get(xf, xd, i);
        ana = gf ? (double)gf[i] : gd[i];
        num = o.scale * tl__fd_slope(loss, problem, xf, xd, i, keep, o.h);
        if (o.kink_fraction > 0.0) {
            double half = o.scale * tl__fd_slope(loss, problem, xf, xd, i, keep, 0.5 * o.h);
            if (fabs(num - half) > 0.1 * (fabs(num) + fabs(half)) + 4.0 * abs_floor) { r.kinks++; continue; }
        }
        r.checked++;
        diff = fabs(ana - num);
        allowed = abs_floor + o.rtol * fabs(num);
        ratio = allowed > 0 ? diff / allowed : (diff > 0 ? HUGE_VAL : 0.0);
        if (!(ratio <= 1.0)) r.failed++;
        if (r.checked == 1 || (r.worst == r.worst && !(ratio <= r.worst))) { /* a NaN stays the worst */
            r.worst = ratio;
            r.worst_index = i;
            r.worst_analytic = ana;
            r.worst_numeric = num;
            r.worst_allowed = allowed;
        }
        big = fmax(fabs(num), fabs(ana));
        if (big > 1e-12 && diff / big > r.max_rel_err) r.max_rel_err = diff / big;
        dot += num * ana;
        nn += num * num;
        aa += ana * ana;
    }
    if (nn > 0 && aa > 0) r.cosine = dot / sqrt(nn * aa);
    else if (nn > 0 || aa > 0) r.cosine = 0.0;
    (void)loss(problem); /* leave the problem's buffers at the unperturbed point */
    return r;
}

static inline tl_fd_result tl_fd_compare(tl_loss_fn loss, void *problem, float *x, const float *grad, size_t n,
                                         const tl_fd_opts *opts) {
    return tl__fd_run(loss, problem, x, NULL, grad, NULL, n, opts);
}
static inline tl_fd_result tl_fd_compare_d(tl_loss_fn loss, void *problem, double *x, const double *grad, size_t n,
                                           const tl_fd_opts *opts) {
    return tl__fd_run(loss, problem, NULL, x, NULL, grad, n, opts);
}

static inline tl_fd_result tl__fd_check_at(const char *file, int line, const char *what, tl_fd_result r,
                                           const tl_fd_opts *opts) {
    tl_fd_opts o = opts ? *opts : tl_fd_default();
    if (getenv("TL_VERBOSE")) {
        fprintf(stderr, "    %-34s worst %.3f of allowed at [%lu], max rel err %.2e, cosine %.8f, %lu entries", what,
                r.worst, (unsigned long)r.worst_index, r.max_rel_err, r.cosine, (unsigned long)r.checked);
        if (o.kink_fraction > 0) fprintf(stderr, ", %lu at a kink skipped", (unsigned long)r.kinks);
        fputc('\n', stderr);
    }
    if (r.failed)
        tl_fail_at(file, line,
                   "%s: %lu of %lu entries off; worst [%lu]: analytic %.9g, numeric %.9g, |diff| %.3g > allowed %.3g "
                   "(h %g, rtol %g, atol %g)",
                   what, (unsigned long)r.failed, (unsigned long)r.checked, (unsigned long)r.worst_index,
                   r.worst_analytic, r.worst_numeric, fabs(r.worst_analytic - r.worst_numeric), r.worst_allowed, o.h,
                   o.rtol, o.atol);
    if (r.checked == 0) tl_fail_at(file, line, "%s: no entry checked", what);
    if (o.kink_fraction > 0 && (double)r.kinks > o.kink_fraction * (double)(r.checked + r.kinks))
        tl_fail_at(file, line, "%s: %lu of %lu entries at a kink", what, (unsigned long)r.kinks,
                   (unsigned long)(r.checked + r.kinks));
    if (o.min_cosine > 0 && !(r.cosine >= o.min_cosine))
        tl_fail_at(file, line, "%s: cosine(analytic, numeric) %.8f < %.8f", what, r.cosine, o.min_cosine);
    return r;
}

#define CHECK_GRAD(what, loss, problem, x, grad, n, opts) \
    tl__fd_check_at(__FILE__, __LINE__, (what), tl_fd_compare((loss), (problem), (x), (grad), (n), (opts)), (opts))
#define CHECK_GRAD_D(what, loss, problem, x, grad, n, opts) \
    tl__fd_check_at(__FILE__, __LINE__, (what), tl_fd_compare_d((loss), (problem), (x), (grad), (n), (opts)), (opts))

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
