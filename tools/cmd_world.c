/* aesalign world: writes a synthetic aesthetic world to a directory.
 *
 *   DIR/images/000000.ppm ...   the renders (binary PPM, P6)
 *   DIR/scenes.tsv              one row per scene: captions, score, votes, attributes
 *   DIR/queries.tsv             the held-out queries
 *   DIR/qrels.tsv               graded relevance of gallery scenes to queries (non-zero rows)
 *
 * Every TSV has a header row; fields never contain tabs or newlines.  The
 * TSVs are written to a temporary file, flushed to disk and renamed, so a
 * reader never sees half a file; they are written after the images, so a
 * complete scenes.tsv means every image it lists is there. */
#include "cli.h"
#include "world.h"
#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *world_usage =
    "usage: aesalign world --out DIR [--n N] [--seed S] [--first I] [--size PX] [--queries Q]\n"
    "                      [--raters R] [--skill-sd X] [--min-relevant M]\n"
    "       aesalign world --print [--n N] [--seed S] [--first I]\n"
    "\n"
    "Generates scenes first..first+N-1 of the synthetic world SEED (default: 2000 scenes,\n"
    "seed 1, first 0, 64x64 pixels, 200 queries, 120 raters per vote histogram) and writes\n"
    "DIR/images/NNNNNN.ppm, DIR/scenes.tsv, DIR/queries.tsv and DIR/qrels.tsv.\n"
    "--min-relevant M keeps only queries with at least M fully relevant scenes in the gallery\n"
    "(default 1: every query; a query with fewer than K fully relevant scenes cannot fill a\n"
    "top K with them, so precision@K is measured on queries with M >= K).\n"
    "--print writes the captions and scores to stdout instead.\n"
    "\n"
    "scenes.tsv columns: id path caption caption_1 caption_2 caption_3 score h1..h10\n"
    "  vote_mean background count1 size1 colour1 shape1 relation count2 size2 colour2 shape2\n"
    "  composition harmony contrast clutter noise blur crop shadow\n"
    "  (id = scene index; h1..h10 = votes for 1..10; group 2 fields are '-' for one group;\n"
    "  noise in 8-bit levels, blur and crop in image widths).\n"
    "queries.tsv columns: query_id text template n_relevant n_partial\n"
    "qrels.tsv columns:   query_id image_id relevance   (2 = all attributes match,\n"
    "  1 = first colour and shape present; pairs not listed are 0).\n";

/* ---- atomic files: temp in the same directory, fsync, rename --------------- */
typedef struct world_file {
    FILE *f;
    char tmp[4096], path[4096];
} world_file;

static int world_file_open(world_file *a, const char *dir, const char *name) {
    int n1 = snprintf(a->path, sizeof a->path, "%s/%s", dir, name);
    int n2 = snprintf(a->tmp, sizeof a->tmp, "%s/.%s.tmp.%ld", dir, name, (long)getpid());
    a->f = NULL;
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof a->path || (size_t)n2 >= sizeof a->tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    a->f = fopen(a->tmp, "wb");
    return a->f ? 0 : -1;
}

static int world_file_commit(world_file *a) {
    int bad = ferror(a->f) || fflush(a->f) != 0 || fsync(fileno(a->f)) != 0;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad || rename(a->tmp, a->path) != 0) {
        int e = errno;
        remove(a->tmp);
        errno = e ? e : EIO;
        return -1;
    }
    return 0;
}

static void world_file_abort(world_file *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    remove(a->tmp);
}

static int world_mkdir(const char *path) {
    struct stat st;
    if (mkdir(path, 0777) == 0) return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return -1;
}

static double world_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One scenes.tsv row. */
static aes_status world_write_row(aes_ctx *ctx, FILE *f, const world_scene *s, int raters) {
    char caption[WORLD_TEXT_MAX];
    int32_t votes[WORLD_NBINS];
    double mean = 0.0;
    int v, k;
    aes_status st;
    fprintf(f, "%lld\timages/%06lld.ppm", (long long)s->index, (long long)s->index);
    for (v = 0; v < WORLD_NVARIANTS; v++) {
        if ((st = world_caption(ctx, s, v, caption, sizeof caption)) != AES_OK) return st;
        fprintf(f, "\t%s", caption);
    }
    if ((st = world_histogram(ctx, s, raters, votes)) != AES_OK) return st;
    fprintf(f, "\t%.4f", (double)s->score);
    for (k = 0; k < WORLD_NBINS; k++) {
        fprintf(f, "\t%ld", (long)votes[k]);
        mean += (double)(k + 1) * votes[k];
    }
    fprintf(f, "\t%.4f\t%s", mean / raters, world_background_name(s->background));
    for (k = 0; k < 2; k++) {
        if (k == 1) fprintf(f, "\t%s", s->ngroups == 2 ? world_relation_name(s->relation) : "-");
        if (k < s->ngroups)
            fprintf(f, "\t%d\t%s\t%s\t%s", s->groups[k].count, world_size_name(s->groups[k].size),
                    world_colour_name(s->groups[k].colour), world_shape_name(s->groups[k].shape));
        else
            fprintf(f, "\t-\t-\t-\t-");
    }
    fprintf(f, "\t%s\t%s\t%.4f\t%d\t%.4f\t%.5f\t%.4f\t%.4f\n", world_composition_name(s->composition),
            world_harmony_name(s->harmony), (double)s->contrast, s->nclutter, (double)s->noise, (double)s->blur,
            (double)s->crop, (double)s->shadow);
    return AES_OK;
}

static int world_print(aes_ctx *ctx, uint64_t seed, long first, long n, const world_params *params) {
    long i;
    int v;
    for (i = 0; i < n; i++) {
        world_scene s;
        char caption[WORLD_TEXT_MAX];
        if (world_sample(ctx, seed, first + i, params, &s) != AES_OK)
            return cli_fail("world", NULL, "sampling: %s", world_last_error());
        printf("%ld\t%.2f", first + i, (double)s.score);
        for (v = 0; v < WORLD_NVARIANTS; v++) {
            if (world_caption(ctx, &s, v, caption, sizeof caption) != AES_OK)
                return cli_fail("world", NULL, "caption: %s", world_last_error());
            printf("\t%s", caption);
        }
        printf("\n");
    }
    return 0;
}

CLI_COMMAND(world, "generate the synthetic aesthetic world: images, captions, scores, queries") {
    const char *out = NULL;
    long n = 2000, seed = 1, first = 0, size = 64, nq = 200, raters = 120, chunk = 256, done, min_rel = 1;
    double skill_sd = -1.0, t0 = world_now();
    int i, print = 0, r, progress, nqueries = 0, bins[WORLD_NBINS] = {0};
    world_params params;
    world_scene *scenes = NULL;
    world_query *queries = NULL;
    uint8_t *pixels = NULL;
    aes_ctx *ctx;
    world_file tsv;
    char dir[4096];

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(world_usage, stdout); return 0; }
        if (!strcmp(argv[i], "--print")) { print = 1; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--out", &out)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--n", &n)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--seed", &seed)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--first", &first)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--size", &size)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--queries", &nq)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--raters", &raters)) != 0 ||
            (r = cli_opt_int(argc, argv, &i, "--min-relevant", &min_rel)) != 0 ||
            (r = cli_opt_float(argc, argv, &i, "--skill-sd", &skill_sd)) != 0) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "aesalign world: unknown option '%s'\n\n%s", argv[i], world_usage);
        return 2;
    }
    if (n < 1 || n > 100000000L) { cli_fail("world", NULL, "--n %ld is not in [1, 100000000]", n); return 2; }
    if (first < 0) { cli_fail("world", NULL, "--first %ld is negative", first); return 2; }
    if (seed < 0) { cli_fail("world", NULL, "--seed %ld is negative", seed); return 2; }
    if (size < 8 || size > 1024) { cli_fail("world", NULL, "--size %ld is not in [8, 1024]", size); return 2; }
    if (nq < 0 || nq > 1000000) { cli_fail("world", NULL, "--queries %ld is not in [0, 1000000]", nq); return 2; }
    if (min_rel < 1 || min_rel > 1000000) { cli_fail("world", NULL, "--min-relevant %ld is not in [1, 1000000]", min_rel); return 2; }
    if (raters < 1 || raters > 100000) { cli_fail("world", NULL, "--raters %ld is not in [1, 100000]", raters); return 2; }
    if (!print && !out) { fprintf(stderr, "aesalign world: --out DIR is required\n\n%s", world_usage); return 2; }

    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("world", NULL, "out of memory");
    world_params_default(&params);
    if (skill_sd >= 0.0) params.skill_sd = (float)skill_sd;
    if (print) {
        r = world_print(ctx, (uint64_t)seed, first, n, &params);
        aes_ctx_free(ctx);
        return r;
    }

    snprintf(dir, sizeof dir, "%s/images", out);
    if (world_mkdir(out) != 0 || world_mkdir(dir) != 0) {
        aes_ctx_free(ctx);
        return cli_fail("world", NULL, "cannot create %s: %s", dir, strerror(errno));
    }
    scenes = (world_scene *)aes_alloc(ctx, (size_t)n, sizeof *scenes);
    pixels = (uint8_t *)aes_alloc(ctx, (size_t)chunk * size * size, 3);
    if (!scenes || !pixels) { r = cli_fail("world", ctx, "allocating %ld scenes", n); goto done; }
    for (i = 0; i < n; i++)
        if (world_sample(ctx, (uint64_t)seed, first + i, &params, &scenes[i]) != AES_OK) {
            r = cli_fail("world", NULL, "sampling scene %ld: %s", first + i, world_last_error());
            goto done;
        }

    /* images and scenes.tsv, a chunk at a time */
    if (world_file_open(&tsv, out, "scenes.tsv") != 0) {
        r = cli_fail("world", NULL, "cannot write %s/scenes.tsv: %s", out, strerror(errno));
        goto done;
    }
    fprintf(tsv.f, "id\tpath\tcaption\tcaption_1\tcaption_2\tcaption_3\tscore");
    for (i = 1; i <= WORLD_NBINS; i++) fprintf(tsv.f, "\th%d", i);
    fprintf(tsv.f, "\tvote_mean\tbackground\tcount1\tsize1\tcolour1\tshape1\trelation\tcount2\tsize2\tcolour2\tshape2"
                   "\tcomposition\tharmony\tcontrast\tclutter\tnoise\tblur\tcrop\tshadow\n");
    progress = n >= 1000;
    for (done = 0; done < n; done += chunk) {
        int m = (int)(n - done < chunk ? n - done : chunk), k;
        if (world_render_many(ctx, scenes + done, m, (int)size, (int)size, pixels) != AES_OK) {
            world_file_abort(&tsv);
            r = cli_fail("world", NULL, "rendering: %s", world_last_error());
            goto done;
        }
        for (k = 0; k < m; k++) {
            const world_scene *sc = &scenes[done + k];
            char path[4096];
            int bin = (int)floor((double)sc->score + 0.5);
            aes_image img;
            img.width = img.height = (int)size;
            img.channels = 3;
            img.pixels = pixels + (size_t)k * size * size * 3;
            snprintf(path, sizeof path, "%s/images/%06lld.ppm", out, (long long)sc->index);
            if (aes_image_save_ppm(ctx, path, &img) != AES_OK) {   /* atomic */
                world_file_abort(&tsv);
                r = cli_fail("world", ctx, "writing an image");
                goto done;
            }
            if (world_write_row(ctx, tsv.f, sc, (int)raters) != AES_OK) {
                world_file_abort(&tsv);
                r = cli_fail("world", NULL, "scene %lld: %s", (long long)sc->index, world_last_error());
                goto done;
            }
            bins[bin < 1 ? 0 : bin > 10 ? 9 : bin - 1]++;
        }
        if (progress) fprintf(stderr, "\rworld: %ld/%ld scenes", done + m, n);
    }
    if (progress) fputc('\n', stderr);
    if (world_file_commit(&tsv) != 0) {
        r = cli_fail("world", NULL, "cannot write %s/scenes.tsv: %s", out, strerror(errno));
        goto done;
    }

    /* queries built from the gallery, and their exact relevance */
    if (nq > 0) {
        char text[WORLD_TEXT_MAX];
        world_file qf, rf;
        long q;
        /* with --min-relevant, draw more candidates (the same sequence, so the
         * kept queries are a deterministic subsequence) and keep the first nq
         * that have enough fully relevant scenes */
        long ncand = min_rel > 1 ? (nq * 20 < 1000000 ? nq * 20 : 1000000) : nq;
        queries = (world_query *)aes_alloc(ctx, (size_t)ncand, sizeof *queries);
        if (!queries) { r = cli_fail("world", ctx, "allocating %ld queries", ncand); goto done; }
        if (world_query_set(ctx, (uint64_t)seed, scenes, (int)n, (int)ncand, queries, &nqueries) != AES_OK) {
            r = cli_fail("world", NULL, "making queries: %s", world_last_error());
            goto done;
        }
        if (min_rel > 1) {
            int kept = 0;
            for (q = 0; q < nqueries && kept < nq; q++) {
                long full = 0, j;
                for (j = 0; j < n && full < min_rel; j++) full += world_relevance(&queries[q], &scenes[j]) == 2;
                if (full >= min_rel) queries[kept++] = queries[q];
            }
            nqueries = kept;
        }
        if (world_file_open(&qf, out, "queries.tsv") != 0) {
            r = cli_fail("world", NULL, "cannot write %s/queries.tsv: %s", out, strerror(errno));
            goto done;
        }
        if (world_file_open(&rf, out, "qrels.tsv") != 0) {
            world_file_abort(&qf);
            r = cli_fail("world", NULL, "cannot write %s/qrels.tsv: %s", out, strerror(errno));
            goto done;
        }
        fprintf(qf.f, "query_id\ttext\ttemplate\tn_relevant\tn_partial\n");
        fprintf(rf.f, "query_id\timage_id\trelevance\n");
        for (q = 0; q < nqueries; q++) {
            long full = 0, partial = 0, j;
            for (j = 0; j < n; j++) {
                int rel = world_relevance(&queries[q], &scenes[j]);
                if (rel) fprintf(rf.f, "%ld\t%lld\t%d\n", q, (long long)scenes[j].index, rel);
                full += rel == 2;
                partial += rel == 1;
            }
            if (world_query_text(ctx, &queries[q], text, sizeof text) != AES_OK) {
                world_file_abort(&qf);
                world_file_abort(&rf);
                r = cli_fail("world", NULL, "query %ld: %s", q, world_last_error());
                goto done;
            }
            fprintf(qf.f, "%ld\t%s\t%d\t%ld\t%ld\n", q, text, queries[q].template_id, full, partial);
        }
        if (world_file_commit(&qf) != 0 || world_file_commit(&rf) != 0) {
            world_file_abort(&rf);
            r = cli_fail("world", NULL, "cannot write the query files in %s: %s", out, strerror(errno));
            goto done;
        }
    }
    printf("wrote %ld scenes (%ldx%ld) and %d queries to %s in %.2f s\n", n, size, size, nqueries, out,
           world_now() - t0);
    printf("score bins 1..10:");
    for (i = 0; i < WORLD_NBINS; i++) printf(" %d", bins[i]);
    printf("\n");
    r = 0;
done:
    aes_free(queries);
    aes_free(pixels);
    aes_free(scenes);
    aes_ctx_free(ctx);
    return r;
}
