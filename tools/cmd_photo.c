/* aesalign score / dedup: the photo-library commands.
 *
 *   aesalign score --model M --head H [--format tsv|json|paths] [--sort] [--top K] IMAGE|DIR...
 *   aesalign dedup --index FILE [--threshold T] [--format ...] [--others] [--html FILE]
 *
 * score prints each image's aesthetic score: the head on the L2-normalised
 * CLIP image embedding (what the LAION aesthetic predictor computes).
 * Folders are walked as `index build` walks them; a file named on the
 * command line is read whatever its extension.  Bad files are reported and
 * skipped; the run goes on.
 *
 * dedup groups near-duplicate images of an index (cosine similarity of the
 * stored embeddings at least the threshold, grouped transitively) and
 * names the one to keep in each group: the best aesthetic score, ties
 * broken by more pixels, then by path.  It never deletes or moves a file:
 * `--format paths --others` lists the ones not kept, for the user's own
 * `xargs`.
 */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700       /* realpath */
#endif
#include "cli.h"
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>
#include <stb_image_write.h>
#endif

/* ============================================================================
 *  score
 * ========================================================================= */

typedef struct scored { const char *path; float score; } scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = (const scored *)a, *y = (const scored *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return strcmp(x->path, y->path);
}

/* Adds a command-line argument: a folder is walked, a file taken as is. */
static int walk_arg(cli_walk *w, const char *arg) {
    struct stat sb;
    if (stat(arg, &sb) == 0 && S_ISREG(sb.st_mode) && !cli_is_image_name(arg)) {
        if (w->n == w->cap) {
            size_t c = w->cap ? w->cap * 2 : 64;
            cli_walk_file *p = (cli_walk_file *)realloc(w->files, c * sizeof *p);
            if (!p) return 0;
            w->files = p;
            w->cap = c;
        }
        if (!(w->files[w->n].path = (char *)malloc(strlen(arg) + 1))) return 0;
        strcpy(w->files[w->n].path, arg);
        w->files[w->n].size = (uint64_t)sb.st_size;
        w->files[w->n].mtime_ns = 0;
        w->n++;
        return 1;
    }
    return cli_walk_add(w, arg);
}

static void print_scored(const scored *s, int fmt) {
    if (fmt == CLI_FMT_PATHS) printf("%s\n", s->path);
    else if (fmt == CLI_FMT_JSON) {
        printf("{\"path\":");
        cli_json_string(stdout, s->path);
        printf(",\"aesthetic\":");
        cli_json_number(stdout, s->score);
        printf("}\n");
    } else printf("%s\t%.4f\n", s->path, s->score);
}

CLI_COMMAND(score, "print the aesthetic score of images and folders (the LAION predictor's number)") {
    const char *cmd = "score";
    cli_model_opts mo;
    const char *head_path = NULL;
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = NULL;
    aes_head head;
    cli_walk w;
    scored *out = NULL;
    float *pixels = NULL, *emb = NULL, *sc = NULL;
    size_t *batch_file = NULL, f, nout = 0, bad = 0;
    long top = 0, batch = 16;
    int fmt = CLI_FMT_TSV, sort = 0, rc = 1, have_head = 0, i, S, E, nargs = 0;
    memset(&mo, 0, sizeof mo);
    memset(&w, 0, sizeof w);
    memset(&head, 0, sizeof head);
    w.cmd = cmd;
    if (!ctx) return cli_fail(cmd, NULL, "out of memory");
    for (i = 1; i < argc; i++) {
        int r;
        if ((r = cli_model_opt(argc, argv, &i, &mo))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--head", &head_path))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--top", &top))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--batch", &batch))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_format(argc, argv, &i, &fmt))) { if (r < 0) goto done; continue; }
        if (!strcmp(argv[i], "--sort")) { sort = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign score --model M --head H [options] IMAGE|DIR...\n"
                   "  prints each image's aesthetic score: the head on the L2-normalised CLIP image\n"
                   "  embedding.  Folders are walked recursively (hidden entries skipped); bad files\n"
                   "  are reported on stderr and skipped.\n"
                   CLI_MODEL_HELP
                   "  --head H             aesthetic head (safetensors), e.g. a LAION predictor\n"
                   CLI_FORMAT_HELP
                   "                       (tsv: path, aesthetic; json: {path, aesthetic})\n"
                   "  --sort               best first (default: the order walked)\n"
                   "  --top K              only the K best (implies --sort)\n"
                   "  --batch N            images per encoder batch (default 16)\n"
                   "Threads: $AES_THREADS, else every core.\n");
            rc = 0;
            goto done;
        }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        nargs++;
        if (!walk_arg(&w, argv[i])) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    }
    if (!mo.model || !head_path) { cli_fail(cmd, NULL, "--model and --head are required (see --help)"); goto done; }
    if (nargs == 0) { cli_fail(cmd, NULL, "no images or folders given"); goto done; }
    if (top < 0 || batch < 1 || batch > 1024) { cli_fail(cmd, NULL, "--top must be >= 0 and --batch in [1, 1024]"); goto done; }
    if (top) sort = 1;
    aes_threads_set(ctx, cli_threads());
    if (cli_load_model(ctx, &mo, &model) != AES_OK) { cli_fail(cmd, ctx, "loading %s", mo.model); goto done; }
    if (!aes_clip_config_get(model)->has_vision) { cli_fail(cmd, NULL, "%s has no image tower", mo.model); goto done; }
    if (aes_head_load(ctx, head_path, &head) != AES_OK) { cli_fail(cmd, ctx, "loading the head"); goto done; }
    have_head = 1;
    S = aes_clip_config_get(model)->image_size;
    E = aes_clip_config_get(model)->embed_dim;
    if (head.dim[0] != E) { cli_fail(cmd, NULL, "the head takes %d-dim embeddings but the model gives %d", head.dim[0], E); goto done; }
    pixels = (float *)malloc((size_t)batch * 3 * S * S * sizeof(float));
    emb = (float *)malloc((size_t)batch * E * sizeof(float));
    sc = (float *)malloc((size_t)batch * sizeof(float));
    batch_file = (size_t *)malloc((size_t)batch * sizeof *batch_file);
    out = (scored *)malloc((w.n + 1) * sizeof *out);
    if (!pixels || !emb || !sc || !batch_file || !out) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    if (fmt == CLI_FMT_TSV) printf("path\taesthetic\n");
    for (f = 0; f < w.n;) {
        int B = 0, b;
        while (f < w.n && B < batch) {
            const char *path = w.files[f++].path;
            aes_image img;
            aes_status st;
            memset(&img, 0, sizeof img);
            st = (aes_status)cli_load_image(ctx, path, &img);
            if (st == AES_OK) st = aes_clip_preprocess(ctx, &img, S, pixels + (size_t)B * 3 * S * S);
            aes_image_free(&img);
            if (st != AES_OK) {
                fprintf(stderr, "aesalign %s: warning: skipping %s: %s\n", cmd, path,
                        aes_last_error(ctx)[0] ? aes_last_error(ctx) : aes_status_name(st));
                aes_clear_error(ctx);
                bad++;
                continue;
            }
            batch_file[B++] = f - 1;
        }
        if (!B) continue;
        if (aes_clip_encode_image(ctx, model, pixels, B, emb) != AES_OK || aes_head_score(ctx, &head, emb, B, sc) != AES_OK) {
            cli_fail(cmd, ctx, "scoring");
            goto done;
        }
        for (b = 0; b < B; b++) {
            out[nout].path = w.files[batch_file[b]].path;
            out[nout].score = sc[b];
            if (!sort) print_scored(&out[nout], fmt);
            nout++;
        }
        if (!sort) fflush(stdout);
    }
    if (sort) {
        qsort(out, nout, sizeof *out, cmp_scored);
        if (top && (size_t)top < nout) nout = (size_t)top;
    }
    for (f = 0; sort && f < nout; f++) print_scored(&out[f], fmt);
    if (bad) fprintf(stderr, "aesalign %s: %zu file%s skipped\n", cmd, bad, bad == 1 ? "" : "s");
    rc = 0;
done:
    free(pixels); free(emb); free(sc); free(batch_file); free(out);
    cli_walk_free(&w);
    if (have_head) aes_head_free(&head);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return rc;
}

/* ============================================================================
 *  dedup
 * ========================================================================= */

/* Cosine similarity at or above which two images count as near-duplicates
 * (our default; see the README's photo-library section and --calibrate). */
#define DEDUP_DEFAULT_THRESHOLD 0.95
/* Neighbours looked at per image; larger groups still join through chains
 * of neighbours. */
#define DEDUP_NEIGHBOURS 32

static size_t uf_find(size_t *parent, size_t x) {
    while (parent[x] != x) { parent[x] = parent[parent[x]]; x = parent[x]; }
    return x;
}

typedef struct dd_member { size_t row, group; long long pixels; float sim; int keep; } dd_member;

static int cmp_member(const void *a, const void *b) {
    const dd_member *x = (const dd_member *)a, *y = (const dd_member *)b;
    if (x->group != y->group) return x->group < y->group ? -1 : 1;
    if (x->keep != y->keep) return y->keep - x->keep;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* Pixels of an image file (0 when it cannot be read). */
static long long image_pixels(aes_ctx *ctx, const char *path) {
    aes_image img;
    long long n = 0;
    memset(&img, 0, sizeof img);
    if (cli_load_image(ctx, path, &img) == AES_OK) n = (long long)img.width * img.height;
    aes_clear_error(ctx);
    aes_image_free(&img);
    return n;
}

/* Unit fp32 vector of row r (dequantized when only int8 is stored). */
static void row_vector(const aes_index *idx, size_t r, float *out) {
    int d;
    double n = 0;
    for (d = 0; d < idx->dim; d++) {
        out[d] = idx->vectors ? idx->vectors[r * (size_t)idx->dim + (size_t)d]
                              : (float)idx->qvectors[r * (size_t)idx->dim + (size_t)d] * idx->qscales[r];
        n += (double)out[d] * out[d];
    }
    for (d = 0; d < idx->dim && n > 0; d++) out[d] = (float)(out[d] / sqrt(n));
}

static float dot_rows(const aes_index *idx, size_t a, size_t b, float *va, float *vb) {
    double s = 0;
    int d;
    row_vector(idx, a, va);
    row_vector(idx, b, vb);
    for (d = 0; d < idx->dim; d++) s += (double)va[d] * vb[d];
    return (float)s;
}

static aes_status dedup_html(aes_ctx *ctx, const char *html, const aes_index *idx, const dd_member *m, size_t nm,
                             double threshold) {
    char dir[PATH_MAX], abs_img[PATH_MAX], rel[3 * PATH_MAX], *slash, *buf = NULL;
    size_t len = 0, i, groups = 0;
    FILE *f = open_memstream(&buf, &len);
    aes_status st;
    if (!f) return AES_ERR_NOMEM;
    snprintf(rel, sizeof rel, "%s", html);
    slash = strrchr(rel, '/');
    if (slash) *slash = 0;
    if (!realpath(slash ? (rel[0] ? rel : "/") : ".", dir)) snprintf(dir, sizeof dir, ".");
    for (i = 0; i < nm; i++) groups += i == 0 || m[i].group != m[i - 1].group;
    fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>aesalign dedup</title>\n<style>\n"
               "body{font-family:sans-serif;margin:1em;background:#fafafa}\n"
               ".grid{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:1.5em}\n"
               ".card{width:200px;background:#fff;border:1px solid #ddd;padding:4px;font-size:12px}\n"
               ".keep{border:3px solid #2a2}\n"
               ".card img{width:200px;height:200px;object-fit:cover;display:block}\n"
               ".path{overflow-wrap:anywhere;color:#333}.num{color:#666}\n"
               "</style></head><body>\n<p>");
    fprintf(f, "%zu groups of near-duplicates (cosine &ge; %g); the framed image of each group is the one to keep. "
               "Nothing was moved or deleted.</p>\n", groups, threshold);
    for (i = 0; i < nm; i++) {
        const char *p = aes_index_path(idx, m[i].row);
        if (i == 0 || m[i].group != m[i - 1].group) fprintf(f, "%s<h3>group %zu</h3><div class=\"grid\">\n", i ? "</div>\n" : "", m[i].group);
        if (p[0] == '/') snprintf(abs_img, sizeof abs_img, "%s", p);
        else if (!realpath(p, abs_img)) snprintf(abs_img, sizeof abs_img, "%s", p);
        if (abs_img[0] == '/' && dir[0] == '/') cli_relative_path(dir, abs_img, rel, sizeof rel);
        else snprintf(rel, sizeof rel, "%s", p);
        fprintf(f, "<div class=\"card%s\"><a href=\"", m[i].keep ? " keep" : "");
        cli_url_escape(f, rel);
        fprintf(f, "\"><img loading=\"lazy\" src=\"");
        cli_url_escape(f, rel);
        fprintf(f, "\" alt=\"\"></a><div><b>%s</b> <span class=\"num\">aes %.2f &middot; cos %.4f</span></div><div class=\"path\">",
                m[i].keep ? "keep" : "other", idx->aesthetic[m[i].row], m[i].sim);
        cli_html_escape(f, p);
        fprintf(f, "</div></div>\n");
    }
    fprintf(f, "%s</body></html>\n", nm ? "</div>\n" : "");
    fclose(f);
    st = aes_write_file_atomic(ctx, html, buf, len);
    free(buf);
    return st;
}

/* ---- dedup --calibrate: the threshold measured on the user's photos ----------------
 * For a sample of the photos, near-duplicates are made in memory (nothing
 * is written): halved in size, cropped to 90 %, re-encoded as JPEG at
 * quality 75 (with stb_image_write), and a burst shot (noise of +-3 levels
 * and a 1-pixel shift).  The cosine of each copy to its original is set
 * against each original's nearest other photo; the suggested threshold
 * lies halfway between the copies' 5th percentile and the distinct pairs'
 * 95th (a library holds real duplicates too, so not their maximum). */

#ifdef AES_HAVE_STB
static void cal_mem_write(void *user, void *data, int size) {
    aes_image *b = (aes_image *)user;     /* pixels: bytes, width: length, height: capacity */
    if (b->width + size > b->height) return;
    memcpy(b->pixels + b->width, data, (size_t)size);
    b->width += size;
}
#endif

/* Variant v of src into dst: 0 halved, 1 cropped 90 %, 2 burst, 3 JPEG q75. */
static aes_status cal_variant(aes_ctx *ctx, const aes_image *src, int v, aes_image *dst) {
    aes_status st;
    memset(dst, 0, sizeof *dst);
    if (v == 0) return aes_image_resize_bicubic(ctx, src, src->width / 2 > 0 ? src->width / 2 : 1,
                                                src->height / 2 > 0 ? src->height / 2 : 1, dst);
    if (v == 1) return aes_image_center_crop(ctx, src, src->width * 9 / 10 > 0 ? src->width * 9 / 10 : 1,
                                             src->height * 9 / 10 > 0 ? src->height * 9 / 10 : 1, dst);
    if (v == 2) {
        size_t k, C = (size_t)src->channels, W = (size_t)src->width, n = W * (size_t)src->height * C;
        if ((st = aes_image_alloc(ctx, dst, src->width, src->height, src->channels)) != AES_OK) return st;
        for (k = 0; k < n; k++) {
            size_t from = k % (W * C) >= C ? k - C : k;          /* one pixel to the right */
            int x = src->pixels[from] + (int)((k * 2654435761u >> 9) % 7) - 3;
            dst->pixels[k] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
        }
        return AES_OK;
    }
#ifdef AES_HAVE_STB
    {
        aes_image buf;
        unsigned char *px;
        int w, h, n;
        memset(&buf, 0, sizeof buf);
        buf.height = src->width * src->height * src->channels + 65536;
        if (!(buf.pixels = (uint8_t *)malloc((size_t)buf.height))) return AES_ERR_NOMEM;
        if (!stbi_write_jpg_to_func(cal_mem_write, &buf, src->width, src->height, src->channels, src->pixels, 75) ||
            !(px = stbi_load_from_memory(buf.pixels, buf.width, &w, &h, &n, src->channels))) {
            free(buf.pixels);
            return AES_ERR_FORMAT;
        }
        free(buf.pixels);
        if ((st = aes_image_alloc(ctx, dst, w, h, src->channels)) == AES_OK)
            memcpy(dst->pixels, px, (size_t)w * (size_t)h * (size_t)src->channels);
        stbi_image_free(px);
        return st;
    }
#else
    return AES_ERR_UNSUPPORTED;
#endif
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float pct(const float *sorted, size_t n, double p) {
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return n ? sorted[k < n ? k : n - 1] : NAN;
}

static int dedup_calibrate(const char *cmd, const cli_model_opts *mo, long sample, char **dirs, int ndirs) {
    static const char *const kind[4] = {"halved", "cropped-90%", "burst", "jpeg-q75"};
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = NULL;
    cli_walk w;
    float *px = NULL, *emb = NULL, *copy[4] = {NULL, NULL, NULL, NULL}, *distinct = NULL;
    size_t ncopy[4] = {0, 0, 0, 0}, n = 0, i, j, allc = 0;
    int rc = 1, S, E, v, nv, d;
    float *all = NULL, lo, hi;
    memset(&w, 0, sizeof w);
    w.cmd = cmd;
    if (!ctx) return cli_fail(cmd, NULL, "out of memory");
    for (d = 0; d < ndirs; d++)
        if (!cli_walk_add(&w, dirs[d])) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    if (w.n < 2) { cli_fail(cmd, NULL, "--calibrate needs at least 2 images in the folders given"); goto done; }
    aes_threads_set(ctx, cli_threads());
    if (cli_load_model(ctx, mo, &model) != AES_OK) { cli_fail(cmd, ctx, "loading %s", mo->model); goto done; }
    S = aes_clip_config_get(model)->image_size;
    E = aes_clip_config_get(model)->embed_dim;
#ifdef AES_HAVE_STB
    nv = 4;
#else
    nv = 3;
    fprintf(stderr, "aesalign %s: JPEG re-encoding needs libstb-dev: calibrating on the other copies\n", cmd);
#endif
    if ((size_t)sample > w.n) sample = (long)w.n;
    px = (float *)malloc((size_t)(nv + 1) * 3 * S * S * sizeof(float));
    emb = (float *)malloc((size_t)sample * (size_t)(nv + 1) * E * sizeof(float));
    distinct = (float *)malloc((size_t)sample * sizeof(float));
    for (v = 0; v < nv; v++) copy[v] = (float *)malloc((size_t)sample * sizeof(float));
    all = (float *)malloc((size_t)sample * (size_t)nv * sizeof(float));
    if (!px || !emb || !distinct || !all || !copy[nv - 1]) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    for (i = 0; i < (size_t)sample; i++) {      /* evenly spread over the walk */
        const char *path = w.files[i * w.n / (size_t)sample].path;
        aes_image img, var;
        aes_status st;
        float *e = emb + n * (size_t)(nv + 1) * E;
        memset(&img, 0, sizeof img);
        st = (aes_status)cli_load_image(ctx, path, &img);
        if (st == AES_OK) st = aes_clip_preprocess(ctx, &img, S, px);
        for (v = 0; st == AES_OK && v < nv; v++) {
            st = cal_variant(ctx, &img, v, &var);
            if (st == AES_OK) st = aes_clip_preprocess(ctx, &var, S, px + (size_t)(v + 1) * 3 * S * S);
            aes_image_free(&var);
        }
        aes_image_free(&img);
        if (st == AES_OK) st = aes_clip_encode_image(ctx, model, px, nv + 1, e);
        if (st != AES_OK) {
            fprintf(stderr, "aesalign %s: warning: skipping %s: %s\n", cmd, path, aes_last_error(ctx)[0] ? aes_last_error(ctx) : aes_status_name(st));
            aes_clear_error(ctx);
            continue;
        }
        for (v = 0; v <= nv; v++) {     /* unit vectors */
            double s = 0;
            for (d = 0; d < E; d++) s += (double)e[v * E + d] * e[v * E + d];
            for (d = 0; d < E && s > 0; d++) e[v * E + d] = (float)(e[v * E + d] / sqrt(s));
        }
        n++;
    }
    if (n < 2) { cli_fail(cmd, NULL, "fewer than 2 readable images"); goto done; }
    for (i = 0; i < n; i++) {
        const float *o = emb + i * (size_t)(nv + 1) * E;
        float best = -2;
        for (v = 0; v < nv; v++) {
            double s = 0;
            for (d = 0; d < E; d++) s += (double)o[d] * o[(v + 1) * E + d];
            copy[v][ncopy[v]++] = (float)s;
            all[allc++] = (float)s;
        }
        for (j = 0; j < n; j++) {
            const float *p = emb + j * (size_t)(nv + 1) * E;
            double s = 0;
            if (j == i) continue;
            for (d = 0; d < E; d++) s += (double)o[d] * p[d];
            if (s > best) best = (float)s;
        }
        distinct[i] = best;
    }
    printf("kind\tcount\tmin\tp05\tmedian\tmax\n");
    for (v = 0; v < nv; v++) {
        qsort(copy[v], ncopy[v], sizeof(float), cmp_float);
        printf("copy:%s\t%zu\t%.4f\t%.4f\t%.4f\t%.4f\n", kind[v], ncopy[v], copy[v][0], pct(copy[v], ncopy[v], 0.05),
               pct(copy[v], ncopy[v], 0.5), copy[v][ncopy[v] - 1]);
    }
    qsort(all, allc, sizeof(float), cmp_float);
    qsort(distinct, n, sizeof(float), cmp_float);
    printf("nearest-other-photo\t%zu\t%.4f\t%.4f\t%.4f\t%.4f\n", n, distinct[0], pct(distinct, n, 0.05),
           pct(distinct, n, 0.5), distinct[n - 1]);
    lo = pct(all, allc, 0.05);
    hi = pct(distinct, n, 0.95);
    printf("suggested-threshold\t%.4f\n", lo > hi ? (lo + hi) / 2 : lo);
    if (!(lo > hi))
        fprintf(stderr, "aesalign %s: warning: copies (5th percentile %.4f) and distinct photos (95th percentile %.4f) "
                        "overlap with this model: the suggestion is the copies' 5th percentile\n", cmd, lo, hi);
    rc = 0;
done:
    for (v = 0; v < 4; v++) free(copy[v]);
    free(px); free(emb); free(distinct); free(all);
    cli_walk_free(&w);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return rc;
}

/* The dedup command with its listing going to `out` (the CLI: stdout;
 * `aesalign serve`: a buffer for /api/dedup).  Returns the exit status. */
int cli_dedup_run(int argc, char **argv, FILE *out) {
    const char *cmd = "dedup", *index = NULL, *html = NULL;
    double threshold = DEDUP_DEFAULT_THRESHOLD;
    aes_ctx *ctx = aes_ctx_create();
    aes_index *idx = NULL;
    size_t *parent = NULL, *size = NULL, n = 0, r, nm = 0, ngroups = 0;
    dd_member *m = NULL;
    float *q = NULL, *va = NULL, *vb = NULL;
    aes_hit *hits = NULL;
    int fmt = CLI_FMT_TSV, others = 0, rc = 1, i, K, dim, calibrate = 0, ndirs = 0;
    cli_model_opts mo;
    long sample = 50;
    char **dirs = (char **)calloc((size_t)argc + 1, sizeof *dirs);
    memset(&mo, 0, sizeof mo);
    if (!ctx || !dirs) { free(dirs); aes_ctx_free(ctx); return cli_fail(cmd, NULL, "out of memory"); }
    for (i = 1; i < argc; i++) {
        int rr;
        if ((rr = cli_model_opt(argc, argv, &i, &mo))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--sample", &sample))) { if (rr < 0) goto done; continue; }
        if (!strcmp(argv[i], "--calibrate")) { calibrate = 1; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--index", &index))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--html", &html))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--threshold", &threshold))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_format(argc, argv, &i, &fmt))) { if (rr < 0) goto done; continue; }
        if (!strcmp(argv[i], "--others")) { others = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign dedup --index FILE [options]\n"
                   "  groups near-duplicate images of the index (cosine similarity of their embeddings at\n"
                   "  least the threshold, joined transitively) and names the one to keep in each group:\n"
                   "  the best aesthetic score, ties broken by more pixels.  Nothing is moved or deleted.\n"
                   "  --index FILE         the index (`aesalign index build`)\n"
                   "  --threshold T        cosine similarity of near-duplicates (default %.2f)\n"
                   CLI_FORMAT_HELP
                   "                       (tsv/json: group, keep|other, path, aesthetic, similarity to the\n"
                   "                       kept image; paths: the kept image of each group)\n"
                   "  --others             list only the images not kept (with --format paths: for xargs)\n"
                   "  --html FILE          also write a page of the groups' thumbnails\n"
                   "\n"
                   "       aesalign dedup --calibrate --model M [--sample N] DIR...\n"
                   "  measures the threshold for your photos and model: for N photos (default 50) makes\n"
                   "  near-duplicates in memory (halved, cropped to 90%%, burst: noise and a 1-pixel shift,\n"
                   "  JPEG quality 75), prints the cosine of copies to their original and of each photo to\n"
                   "  its nearest other photo, and a suggested --threshold.  Nothing is written.\n"
                   CLI_MODEL_HELP,
                   DEDUP_DEFAULT_THRESHOLD);
            rc = 0;
            goto done;
        }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        dirs[ndirs++] = argv[i];
    }
    if (calibrate) {
        if (!mo.model || !ndirs) { cli_fail(cmd, NULL, "--calibrate needs --model M and folders of photos"); goto done; }
        if (sample < 2) { cli_fail(cmd, NULL, "--sample must be at least 2"); goto done; }
        rc = dedup_calibrate(cmd, &mo, sample, dirs, ndirs);
        goto done;
    }
    if (!index && ndirs == 1) index = dirs[0];
    else if (ndirs) { cli_fail(cmd, NULL, "unexpected argument '%s' (see --help)", dirs[ndirs - 1]); goto done; }
    if (!index) { cli_fail(cmd, NULL, "--index FILE is required"); goto done; }
    if (!(threshold > -1 && threshold <= 1)) { cli_fail(cmd, NULL, "--threshold must be in (-1, 1]"); goto done; }
    aes_threads_set(ctx, cli_threads());
    if (aes_index_load(ctx, index, &idx) != AES_OK) { cli_fail(cmd, ctx, "cannot load the index"); goto done; }
    n = idx->count;
    dim = idx->dim;
    K = n < DEDUP_NEIGHBOURS + 1 ? (int)n : DEDUP_NEIGHBOURS + 1;
    parent = (size_t *)malloc((n + 1) * sizeof *parent);
    size = (size_t *)calloc(n + 1, sizeof *size);
    m = (dd_member *)malloc((n + 1) * sizeof *m);
    va = (float *)malloc((size_t)dim * sizeof(float));
    vb = (float *)malloc((size_t)dim * sizeof(float));
    if (!parent || !size || !m || !va || !vb) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    for (r = 0; r < n; r++) parent[r] = r;
    if (n > 1) {   /* each image's nearest neighbours, in chunks of queries */
        const size_t chunk = 256;
        size_t c0;
        q = (float *)malloc(chunk * (size_t)dim * sizeof(float));
        hits = (aes_hit *)malloc(chunk * (size_t)K * sizeof *hits);
        if (!q || !hits) { cli_fail(cmd, NULL, "out of memory"); goto done; }
        for (c0 = 0; c0 < n; c0 += chunk) {
            size_t nc = n - c0 < chunk ? n - c0 : chunk, j;
            int h;
            for (j = 0; j < nc; j++) row_vector(idx, c0 + j, q + j * (size_t)dim);
            if (aes_index_search(ctx, idx, q, (int)nc, K, 0, hits, NULL) != AES_OK) { cli_fail(cmd, ctx, "searching"); goto done; }
            for (j = 0; j < nc; j++)
                for (h = 0; h < K; h++) {
                    const aes_hit *x = &hits[j * (size_t)K + (size_t)h];
                    size_t a, b;
                    if (x->row < 0 || (size_t)x->row == c0 + j || x->score < threshold) continue;
                    a = uf_find(parent, c0 + j);
                    b = uf_find(parent, (size_t)x->row);
                    if (a != b) parent[a > b ? a : b] = a < b ? a : b;   /* the smaller row is the root */
                }
        }
    }
    for (r = 0; r < n; r++) size[uf_find(parent, r)]++;
    /* the groups (two or more images), and the one to keep in each */
    for (r = 0; r < n; r++) {
        size_t root = uf_find(parent, r);
        if (size[root] < 2) continue;
        m[nm].row = r;
        m[nm].group = root;
        m[nm].pixels = -1;
        m[nm].keep = 0;
        m[nm].sim = 1;
        nm++;
    }
    {
        size_t a = 0;
        qsort(m, nm, sizeof *m, cmp_member);     /* by group (root row), then row */
        while (a < nm) {
            size_t b = a, best = a, g = ++ngroups;
            while (b < nm && m[b].group == m[a].group) b++;
            for (r = a + 1; r < b; r++) {
                float x = idx->aesthetic[m[r].row], y = idx->aesthetic[m[best].row];
                int better;
                if (x == x && (y != y || x > y)) better = 1;
                else if (x != x ? y == y : x < y) better = 0;
                else {      /* equal scores (or none): more pixels */
                    if (m[r].pixels < 0) m[r].pixels = image_pixels(ctx, aes_index_path(idx, m[r].row));
                    if (m[best].pixels < 0) m[best].pixels = image_pixels(ctx, aes_index_path(idx, m[best].row));
                    better = m[r].pixels > m[best].pixels;
                }
                if (better) best = r;
            }
            m[best].keep = 1;
            for (r = a; r < b; r++) {
                m[r].sim = r == best ? 1.0f : dot_rows(idx, m[r].row, m[best].row, va, vb);
                m[r].group = g;
            }
            a = b;
        }
        qsort(m, nm, sizeof *m, cmp_member);     /* the kept image first in each group */
    }
    if (fmt == CLI_FMT_TSV) fprintf(out, "group\tstatus\tpath\taesthetic\tsimilarity\n");
    for (r = 0; r < nm; r++) {
        const char *p = aes_index_path(idx, m[r].row);
        if (others && m[r].keep) continue;
        if (fmt == CLI_FMT_PATHS) {
            if (others || m[r].keep) fprintf(out, "%s\n", p);
        } else if (fmt == CLI_FMT_JSON) {
            fprintf(out, "{\"group\":%zu,\"keep\":%s,\"path\":", m[r].group, m[r].keep ? "true" : "false");
            cli_json_string(out, p);
            fprintf(out, ",\"aesthetic\":");
            cli_json_number(out, idx->aesthetic[m[r].row]);
            fprintf(out, ",\"similarity\":");
            cli_json_number(out, m[r].sim);
            fprintf(out, "}\n");
        } else {
            fprintf(out, "%zu\t%s\t%s\t%.4f\t%.4f\n", m[r].group, m[r].keep ? "keep" : "other", p, idx->aesthetic[m[r].row], m[r].sim);
        }
    }
    fflush(out);
    fprintf(stderr, "aesalign %s: %zu images, %zu groups of near-duplicates holding %zu images (%zu not kept); threshold %g\n",
            cmd, n, ngroups, nm, nm - ngroups, threshold);
    if (html) {
        if (dedup_html(ctx, html, idx, m, nm, threshold) != AES_OK) { cli_fail(cmd, ctx, "writing %s", html); goto done; }
        fprintf(stderr, "aesalign %s: wrote %s\n", cmd, html);
    }
    rc = 0;
done:
    free(parent); free(size); free(m); free(q); free(va); free(vb); free(hits); free(dirs);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    return rc;
}

CLI_COMMAND(dedup, "near-duplicate groups of an index and the best shot of each (never deletes anything)") {
    return cli_dedup_run(argc, argv, stdout);
}
