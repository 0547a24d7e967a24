/* bench_image_tower - the ViT-B/32 image tower loaded from a file: memory
 * and the timing rounds of tools/bench_anchors.sh.
 *
 * Random weights of the ViT-B/32 image tower (224/32, width 768, 12 layers,
 * embed 512; seed 42 as tools/bench_clip.c) saved as f32 safetensors.
 *
 *   bench_image_tower            peak RSS of load + one batch-16 embed in a
 *                                fresh process, against the f32 weights' size
 *                                (MB = 2^20 bytes), for aes_clip_load of the
 *                                file as OpenAI f32 (tensors used in place), HF
 *                                f32 (q/k/v stacked into a copy) and OpenAI f16
 *                                (converted to f32 tensor by tensor), and for
 *                                aes_clip_load_memory of the f32 file's bytes
 *                                (the file buffer plus a copy of the weights)
 *   bench_image_tower --write PATH [hf|openai]
 *                                writes the model (OpenAI layout by default)
 *   bench_image_tower --rss PATH [memory]
 *                                one load + batch-16 embed; prints peak RSS
 *   bench_image_tower --run PATH SECONDS
 *                                one timing round: images/s at batch 16 and ms
 *                                at batch 1, each the median of calls over
 *                                SECONDS; one line "key=value ..." for the
 *                                anchors script
 * Threads: 2 (override with $AES_THREADS).  The model file goes beside the
 * program (build/) when no path is given.
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_image_tower"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPX (3 * 224 * 224)

static aes_ctx *context(void) {
    const char *env = getenv("AES_THREADS");
    int threads = env ? atoi(env) : 2;
    aes_ctx *ctx = aes_ctx_create();
    if (!ctx || aes_threads_set(ctx, threads > 0 ? threads : 2)) die(ctx, "context");
    return ctx;
}

/* The inputs every engine of the anchors script uses: pixel i of the batch
 * is ((i * 37) mod 101) / 50 - 1 (normalised-looking values in [-1, 1]). */
static float *pixels(int B) {
    float *px = (float *)malloc(sizeof(float) * (size_t)B * NPX);
    size_t i;
    if (!px) { fprintf(stderr, "bench_image_tower: out of memory\n"); exit(1); }
    for (i = 0; i < (size_t)B * NPX; i++) px[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    return px;
}

static int write_model(const char *path, aes_layout layout, aes_dtype dtype) {
    aes_ctx *ctx = context();
    aes_clip_config cfg;
    aes_clip *m = NULL;
    vitb32_config(&cfg, 0);
    if (aes_clip_create_random(ctx, &cfg, 42, &m)) die(ctx, "create");
    if (aes_clip_save(ctx, m, path, layout, dtype)) die(ctx, "save");
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return 0;
}

static aes_clip *load(aes_ctx *ctx, const char *path, int from_memory) {
    aes_clip_load_opts o;
    aes_clip *m = NULL;
    memset(&o, 0, sizeof o);
    o.no_config_search = 1;
    if (from_memory) {
        void *buf = NULL;
        size_t len = 0;
        if (aes_read_file(ctx, path, &buf, &len)) die(ctx, "read");
        if (aes_clip_load_memory(ctx, buf, len, NULL, &o, &m)) die(ctx, "load_memory");
        aes_free(buf);
    } else if (aes_clip_load(ctx, path, &o, &m)) {
        die(ctx, "load");
    }
    return m;
}

/* Load + one batch-16 embed; prints "rss_mb=... weights_mb=...". */
static int rss(const char *path, int from_memory) {
    aes_ctx *ctx = context();
    aes_clip *m = load(ctx, path, from_memory);
    float *px = pixels(16), out[16 * 512];
    if (aes_clip_encode_image(ctx, m, px, 16, out)) die(ctx, "encode_image");
    printf("rss_mb=%.0f weights_mb=%.0f\n", peak_rss_mb(), (double)aes_clip_weight_bytes(m) / 1048576.0);
    free(px);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return 0;
}

/* Median seconds per call of encode_image at batch B over about `secs`. */
static double median_call(aes_ctx *ctx, const aes_clip *m, const float *px, int B, float *out, double secs) {
    double t[4096], start;
    int n = 0;
    if (aes_clip_encode_image(ctx, m, px, B, out)) die(ctx, "encode_image"); /* warm-up */
    start = now();
    while (n < 4096 && (n < 3 || now() - start < secs)) {
        double t0 = now();
        if (aes_clip_encode_image(ctx, m, px, B, out)) die(ctx, "encode_image");
        t[n++] = now() - t0;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int run(const char *path, double secs) {
    aes_ctx *ctx = context();
    aes_clip *m = load(ctx, path, 0);
    float *px = pixels(16), out[16 * 512];
    double t16 = median_call(ctx, m, px, 16, out, secs), t1 = median_call(ctx, m, px, 1, out, secs);
    printf("ips=%.2f ms=%.2f rss_mb=%.0f isa=%s threads=%d emb=%.5f,%.5f,%.5f\n", 16.0 / t16, 1000.0 * t1,
           peak_rss_mb(), aes_cpu_name(ctx), aes_threads_get(ctx), out[0], out[1], out[2]);
    free(px);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return 0;
}

/* Runs this program again (a fresh process: its own peak RSS) and relays
 * the line it prints. */
static void child(const char *self, const char *path, const char *how, const char *label) {
    char line[256] = "";
    int fd[2], status = 0;
    pid_t pid;
    FILE *f;
    fflush(stdout);
    if (pipe(fd) || (pid = fork()) < 0) { perror("bench_image_tower"); exit(1); }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(self, self, "--rss", path, how, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    f = fdopen(fd[0], "r");
    if (!f || !fgets(line, sizeof line, f)) line[0] = 0;
    if (f) fclose(f);
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) || !line[0]) {
        fprintf(stderr, "bench_image_tower: the %s run failed\n", label);
        exit(1);
    }
    {
        double r = 0, w = 0;
        if (sscanf(line, "rss_mb=%lf weights_mb=%lf", &r, &w) == 2)
            printf("  %-44s peak RSS %4.0f MB = weights %3.0f MB + %4.0f MB\n", label, r, w, r - w);
    }
}

int main(int argc, char **argv) {
    char path[4096];
    const char *slash = strrchr(argv[0], '/');
    if (argc >= 3 && !strcmp(argv[1], "--write"))
        return write_model(argv[2], argc >= 4 && !strcmp(argv[3], "hf") ? AES_LAYOUT_HF : AES_LAYOUT_OPENAI,
                           AES_DTYPE_F32);
    if (argc >= 3 && !strcmp(argv[1], "--rss")) return rss(argv[2], argc >= 4 && !strcmp(argv[3], "memory"));
    if (argc >= 4 && !strcmp(argv[1], "--run")) return run(argv[2], atof(argv[3]));
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--write PATH [hf|openai] | --rss PATH [memory] | --run PATH SECONDS]\n", argv[0]);
        return 2;
    }
    /* the memory lines: files in both layouts and dtypes, and a file's bytes from memory */
    printf("ViT-B/32 image tower, safetensors -> f32 weights, load + one batch-16 embed (each a fresh process):\n");
    {
        static const char *const names[3] = {"openai_f32", "hf_f32", "openai_f16"};
        static const char *const labels[3] = {"aes_clip_load, OpenAI f32 (in place)", "aes_clip_load, HF f32 (q/k/v copied)",
                                              "aes_clip_load, OpenAI f16 (converted)"};
        int k;
        for (k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%.*sbench_image_tower_%s.safetensors", slash ? (int)(slash - argv[0] + 1) : 0,
                     argv[0], names[k]);
            if (write_model(path, k == 1 ? AES_LAYOUT_HF : AES_LAYOUT_OPENAI, k == 2 ? AES_DTYPE_F16 : AES_DTYPE_F32))
                return 1;
            child(argv[0], path, "file", labels[k]);
            if (k == 0) child(argv[0], path, "memory", "aes_read_file + aes_clip_load_memory, f32");
            remove(path);
        }
    }
    return 0;
}
