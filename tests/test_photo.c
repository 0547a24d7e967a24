/* test_photo.c - the CLI on a photo library the test makes itself:
 * incremental and concurrent index updates, image / combined queries,
 * output formats, filters, `aesalign score`, `aesalign dedup`, EXIF
 * orientation and dates, WebP.  The model is the tiny fixture CLIP of
 * tests/fixtures/retrieval (32 px images, 24-dim embeddings). */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef AES_HAVE_STB
#include <stb_image_write.h>
#endif
#ifdef AES_HAVE_WEBP
#include <webp/encode.h>
#endif

#define RFIX "tests/fixtures/retrieval/"
#define MODEL "--model " RFIX "tiny_clip.safetensors"
#define HEAD "--head " RFIX "head.safetensors"

static aes_ctx *ctx;
static char tdir[64];

/* "%C" is the CLI, "%D" the test's folder (testlib.h). */
static int sh(const char *fmt) { return tl_sh(tdir, fmt); }

static char *slurp(const char *name) { return tl_slurp(tdir, name); }

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

#ifdef AES_HAVE_STB   /* (the EXIF JPEG test's) */
/* Days since 1970-01-01 (proleptic Gregorian), by counting. */
static long days_since_epoch(int y, int m, int d) {
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long n = 0;
    int k;
    for (k = 1970; k < y; k++) n += 365 + ((k % 4 == 0 && k % 100 != 0) || k % 400 == 0);
    for (k = 1; k < m; k++) n += mdays[k - 1] + (k == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    return n + d - 1;
}
#endif

/* A PPM with a pattern chosen by seed (different seeds: different pictures). */
static void write_ppm(const char *name, int w, int h, unsigned seed) {
    char path[256];
    aes_image img;
    int i;
    memset(&img, 0, sizeof img);
    snprintf(path, sizeof path, "%s/%s", tdir, name);
    if (aes_image_alloc(ctx, &img, w, h, 3) != AES_OK) return;
    for (i = 0; i < w * h * 3; i++) img.pixels[i] = (uint8_t)((i * (7 + seed) + seed * 31 + (i / (3 * w)) * seed) & 255);
    aes_image_save_ppm(ctx, path, &img);
    aes_image_free(&img);
}

static aes_index *load_index(const char *name) {
    char path[256];
    aes_index *idx = NULL;
    snprintf(path, sizeof path, "%s/%s", tdir, name);
    if (aes_index_load(ctx, path, &idx) != AES_OK) { CHECK_MSG(0, "cannot load %s: %s", path, aes_last_error(ctx)); return NULL; }
    return idx;
}

static int64_t find(const aes_index *idx, const char *rel) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tdir, rel);
    return aes_index_find(idx, path);
}

static int make_tdir(void) {
    snprintf(tdir, sizeof tdir, "/tmp/aes_photo_XXXXXX");
    if (!mkdtemp(tdir)) { CHECK(0); return 0; }
    return 1;
}

static void rm_tdir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
    if (system(cmd) != 0) fprintf(stderr, "  (could not remove %s)\n", tdir);
}

/* Takes the index's writer lock as the CLI does (fd >= 0 on success). */
static int hold_lock(const char *idxname) {
    char path[256], who[64];
    struct flock fl;
    int fd;
    snprintf(path, sizeof path, "%s/%s.lock", tdir, idxname);
    fd = open(path, O_RDWR | O_CREAT, 0666);
    if (fd < 0) return -1;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) != 0) { close(fd); return -1; }
    snprintf(who, sizeof who, "pid %ld on host testhost\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, who, strlen(who)) < 0) { close(fd); return -1; }
    return fd;
}

/* ---- index update: folders kept, removed, renames, two writers ------------------- */

static void test_update_keeps_folders(void) {
    aes_index *idx = NULL;
    char *log = NULL, path[256];
    float before[24];
    int64_t r;
    int i;
    if (!tl_cli() || !make_tdir()) return;
    sh("mkdir -p %D/A %D/B %D/C");
    for (i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "A/a%d.ppm", i); write_ppm(name, 24 + i, 30, (unsigned)i + 1);
        snprintf(name, sizeof name, "B/b%d.ppm", i); write_ppm(name, 30, 24 + i, (unsigned)i + 11);
    }
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/A %D/B/ 2>%D/log0") == 0);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 8);
    /* dates and content hashes are stored */
    r = find(idx, "A/a1.ppm");
    CHECK(r >= 0 && idx->date[r] != AES_INDEX_NO_DATE && idx->content_hash[r] != 0);
    if (r >= 0) {
        struct stat sb;
        struct tm tm;
        time_t t;
        snprintf(path, sizeof path, "%s/A/a1.ppm", tdir);
        stat(path, &sb);
        t = sb.st_mtime;
        localtime_r(&t, &tm);
        CHECK(idx->date[r] % 86400 == tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec);
        memcpy(before, idx->vectors + r * 24, sizeof before);
    }
    aes_index_free(idx);
    CHECK(sh("%C index info %D/x.idx | grep -q '^dates.8 dated' && %C index info %D/x.idx | grep -q '^hashed.8 of 8'") == 0);

    /* update of A alone keeps B (the folder list given adds, never replaces) */
    write_ppm("A/new.ppm", 26, 26, 40);
    CHECK(sh("%C index update --index %D/x.idx --quiet %D/A 2>%D/log1") == 0);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 9 && find(idx, "B/b2.ppm") >= 0 && find(idx, "A/new.ppm") >= 0);
    aes_index_free(idx);

    /* renamed and copied files reuse their embedding (content hash), nothing embedded */
    sh("mv %D/A/a1.ppm %D/A/renamed.ppm && cp %D/A/a2.ppm %D/C/copy.ppm");
    CHECK(sh("%C index update --index %D/x.idx %D/A %D/C 2>%D/log2") == 0);
    log = slurp("log2");
    CHECK_MSG(strstr(log, "(0 embedded") && strstr(log, "2 found by content"), "log: %s", log);
    free(log);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 10 && find(idx, "A/a1.ppm") < 0 && find(idx, "B/b0.ppm") >= 0);
    r = find(idx, "A/renamed.ppm");
    CHECK(r >= 0 && find(idx, "C/copy.ppm") >= 0);
    if (r >= 0) CHECK(!memcmp(before, idx->vectors + r * 24, sizeof before) && idx->date[r] != AES_INDEX_NO_DATE);
    CHECK(strstr(idx->meta, "root=") && strstr(idx->meta, "/C\n") && strstr(idx->meta, "/B\n"));
    aes_index_free(idx);

    /* nothing changed: up to date */
    CHECK(sh("%C index update --index %D/x.idx 2>%D/log3") == 0);
    log = slurp("log3");
    CHECK_MSG(strstr(log, "up to date") != NULL, "log: %s", log);
    free(log);

    /* dropping a folder is explicit; an unknown one is an error */
    CHECK(sh("%C index update --index %D/x.idx --quiet --remove %D/B 2>%D/log4") == 0);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 6 && find(idx, "B/b0.ppm") < 0 && find(idx, "C/copy.ppm") >= 0 && !strstr(idx->meta, "/B\n"));
    aes_index_free(idx);
    CHECK(sh("%C index update --index %D/x.idx --quiet --remove %D/nowhere 2>%D/log5") != 0);
    log = slurp("log5");
    CHECK(strstr(log, "not a folder of this index") != NULL);
    free(log);
    /* a folder removed from inside a recorded one stays out of later updates until given again */
    sh("mkdir -p %D/A/junk");
    write_ppm("A/junk/j0.ppm", 22, 22, 60);
    CHECK(sh("%C index update --index %D/x.idx --quiet 2>/dev/null") == 0);
    if ((idx = load_index("x.idx")) != NULL) { CHECK(idx->count == 7); aes_index_free(idx); }
    CHECK(sh("%C index update --index %D/x.idx --quiet --remove %D/A/junk 2>/dev/null && "
             "%C index update --index %D/x.idx --quiet 2>/dev/null") == 0);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK(idx->count == 6 && find(idx, "A/junk/j0.ppm") < 0 && strstr(idx->meta, "exclude=") != NULL);
        aes_index_free(idx);
    }
    CHECK(sh("%C index update --index %D/x.idx --quiet %D/A/junk 2>/dev/null") == 0);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK(idx->count == 7 && find(idx, "A/junk/j0.ppm") >= 0 && !strstr(idx->meta, "exclude="));
        aes_index_free(idx);
    }
    idx = NULL;
out:
    aes_index_free(idx);
    rm_tdir();
}

/* Two `index update` processes on one index at once: the second waits for
 * the first, and neither's additions are lost.  The test holds the lock
 * while both start, so they contend for it at the same moment. */
static void test_update_concurrent(void) {
    aes_index *idx = NULL;
    char *log = NULL;
    int i, fd, n = getenv("AES_SLOW_RUNNER") ? 2 : 5;
    if (!tl_cli() || !make_tdir()) return;
    sh("mkdir -p %D/base %D/P %D/Q");
    write_ppm("base/0.ppm", 20, 20, 1);
    for (i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "P/p%d.ppm", i); write_ppm(name, 24 + i, 28, (unsigned)i + 3);
        snprintf(name, sizeof name, "Q/q%d.ppm", i); write_ppm(name, 28, 24 + i, (unsigned)i + 23);
    }
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/base 2>/dev/null") == 0);

    /* --no-wait fails at once and names the holder */
    fd = hold_lock("x.idx");
    CHECK(fd >= 0);
    CHECK(sh("%C index update --index %D/x.idx --no-wait --quiet %D/P 2>%D/nowait") != 0);
    log = slurp("nowait");
    {
        char who[64];
        snprintf(who, sizeof who, "pid %ld on host testhost", (long)getpid());
        CHECK_MSG(strstr(log, who) && strstr(log, "--no-wait"), "log: %s", log);
    }
    free(log);

    /* two writers start while the lock is held; once both wait, it is released
     * and they contend for it */
    CHECK(sh("(%C index update --index %D/x.idx --quiet %D/P 2>%D/logP; echo $? >%D/rcP) & "
             "(%C index update --index %D/x.idx --quiet %D/Q 2>%D/logQ; echo $? >%D/rcQ) & exit 0") == 0);
    for (i = 0; i < 600; i++) {
        char *a = slurp("logP"), *b = slurp("logQ");
        int both = strstr(a, "waiting for pid") && strstr(b, "waiting for pid");
        free(a);
        free(b);
        if (both) break;
        tl_sleep_ms(100);
    }
    CHECK(i < 600);
    if (fd >= 0) close(fd);        /* releases the lock */
    for (i = 0; i < 600; i++) {    /* both finish (60 s at most) */
        char a[256], b[256];
        snprintf(a, sizeof a, "%s/rcP", tdir);
        snprintf(b, sizeof b, "%s/rcQ", tdir);
        if (access(a, F_OK) == 0 && access(b, F_OK) == 0) break;
        tl_sleep_ms(100);
    }
    tl_sleep_ms(100);
    log = slurp("rcP"); CHECK(!strcmp(log, "0\n")); free(log);
    log = slurp("rcQ"); CHECK(!strcmp(log, "0\n")); free(log);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK_MSG(idx->count == (size_t)(1 + 2 * n), "%zu images, want %d", idx->count, 1 + 2 * n);
        CHECK(find(idx, "P/p0.ppm") >= 0 && find(idx, "Q/q0.ppm") >= 0 && find(idx, "base/0.ppm") >= 0);
        aes_index_free(idx);
    }
    rm_tdir();
}

/* ---- search: image and combined queries, formats, filters, order ----------------- */

/* The unit embedding the CLI computes for a PPM file. */
static int embed_image_file(aes_clip *m, const char *rel, float *out) {
    char path[256];
    aes_image img;
    float px[3 * 32 * 32];
    int ok, d;
    double n = 0;
    memset(&img, 0, sizeof img);
    snprintf(path, sizeof path, "%s/%s", tdir, rel);
    ok = aes_image_load(ctx, path, &img) == AES_OK && aes_clip_preprocess(ctx, &img, 32, px) == AES_OK &&
         aes_clip_encode_image(ctx, m, px, 1, out) == AES_OK;
    aes_image_free(&img);
    for (d = 0; d < 24; d++) n += (double)out[d] * out[d];
    for (d = 0; d < 24 && n > 0; d++) out[d] = (float)(out[d] / sqrt(n));
    return ok;
}

static int embed_text_unit(aes_clip *m, aes_tokenizer *tok, const char *text, float *out) {
    int32_t ids[16];
    int d;
    double n = 0;
    if (aes_tokenizer_encode(ctx, tok, text, strlen(text), ids, 16, NULL) != AES_OK ||
        aes_clip_encode_text(ctx, m, ids, 1, out) != AES_OK) return 0;
    for (d = 0; d < 24; d++) n += (double)out[d] * out[d];
    for (d = 0; d < 24 && n > 0; d++) out[d] = (float)(out[d] / sqrt(n));
    return 1;
}

typedef struct json_row { int rank; char path[256]; double sem, aes, fin; } json_row;

/* Parses the JSON lines of `name` (search output) into rows; returns the count. */
static int read_json_rows(const char *name, json_row *rows, int cap) {
    char *s = slurp(name), *p = s;
    int n = 0;
    while (p && *p && n < cap) {
        char aes[32];
        char *q = strstr(p, "\"rank\":");
        if (!q) break;
        if (sscanf(q, "\"rank\":%d,\"path\":\"%255[^\"]\",\"semantic\":%lf,\"aesthetic\":%31[^,],\"final\":%lf", &rows[n].rank,
                   rows[n].path, &rows[n].sem, aes, &rows[n].fin) == 5) {
            rows[n].aes = strcmp(aes, "null") ? atof(aes) : NAN;
            n++;
        }
        p = strchr(q, '\n');
    }
    free(s);
    return n;
}

static void test_search_queries_formats_filters(void) {
    aes_clip *m = NULL;
    aes_tokenizer *tok = NULL;
    aes_index *idx = NULL;
    json_row rows[32];
    char *out = NULL;
    int i, n;
    if (!tl_cli() || !make_tdir()) return;
    sh("mkdir -p %D/A %D/B");
    for (i = 0; i < 6; i++) {
        char name[64];
        snprintf(name, sizeof name, "A/a%d.ppm", i); write_ppm(name, 24 + 3 * i, 30, (unsigned)i + 1);
        snprintf(name, sizeof name, "B/b%d.ppm", i); write_ppm(name, 30, 24 + 3 * i, (unsigned)i + 17);
    }
    /* the B photos are from 2019, the A photos from 2024 (file times, no EXIF) */
    CHECK(sh("touch -m -d '2019-05-04 12:00:00' %D/B/*.ppm && touch -m -d '2024-02-03 12:00:00' %D/A/*.ppm") == 0);
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/A %D/B 2>/dev/null") == 0);
    CHECK_OK(ctx, aes_clip_load(ctx, RFIX "tiny_clip.safetensors", NULL, &m));
    CHECK_OK(ctx, aes_tokenizer_load_merges(ctx, RFIX "merges.txt", &tok));
    if (!m || !tok || !(idx = load_index("x.idx"))) goto out;

    /* an image-only query needs no tokenizer: the image itself comes first */
    CHECK(sh("%C search --index %D/x.idx " MODEL " --vocab /nonexistent --format json --k 3 %D/A/a2.ppm >%D/s1 2>%D/e1") == 0);
    n = read_json_rows("s1", rows, 32);
    CHECK(n == 3);
    if (n >= 1) {
        CHECK(strstr(rows[0].path, "/A/a2.ppm") != NULL && rows[0].rank == 1);
        CHECK_NEAR(rows[0].sem, 1.0, 1e-4);
    }
    /* a combined, weighted query: the library's retrieval of the same vector */
    CHECK(sh("%C search --index %D/x.idx " MODEL " --vocab " RFIX "merges.txt --format json --k 5 "
             "--aesthetic-weight 0.05 '2:a red cat' + %D/B/b1.ppm - blue >%D/s2 2>%D/e2") == 0);
    n = read_json_rows("s2", rows, 32);
    CHECK(n == 5);
    {
        float t1[24], im[24], t2[24], q[24];
        aes_retrieve_opts o;
        aes_result res[5];
        int nres = 0, d;
        if (embed_text_unit(m, tok, "a red cat", t1) && embed_image_file(m, "B/b1.ppm", im) &&
            embed_text_unit(m, tok, "blue", t2)) {
            for (d = 0; d < 24; d++) q[d] = 2 * t1[d] + im[d] - t2[d];
            aes_retrieve_opts_default(&o);
            o.k = 5;
            o.aesthetic_weight = 0.05f;
            CHECK_OK(ctx, aes_index_retrieve(ctx, idx, q, &o, res, &nres));
            for (i = 0; i < n && i < nres; i++) {
                CHECK(!strcmp(rows[i].path, aes_index_path(idx, (size_t)res[i].row)));
                CHECK_NEAR(rows[i].sem, res[i].semantic, 2e-5);
                CHECK_NEAR(rows[i].fin, res[i].final, 2e-5);
            }
        } else CHECK(0);
    }
    /* --image is the flag form of an image term; paths: one path per line */
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format paths --k 4 --image %D/A/a4.ppm >%D/s3 2>/dev/null") == 0);
    out = slurp("s3");
    {
        char want[256];
        snprintf(want, sizeof want, "%s/A/a4.ppm\n", tdir);
        CHECK(!strncmp(out, want, strlen(want)));
        n = 0;
        for (i = 0; out[i]; i++) n += out[i] == '\n';
        CHECK(n == 4 && !strchr(out, '\t'));
    }
    free(out);
    /* filters: --min-aesthetic, --under, --after / --before (mtime dates) */
    {
        float sorted[12], med;
        size_t r;
        for (r = 0; r < idx->count && r < 12; r++) sorted[r] = idx->aesthetic[r];
        for (r = 1; r < 12; r++) {
            size_t j;
            for (j = r; j > 0 && sorted[j - 1] > sorted[j]; j--) { float t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t; }
        }
        med = sorted[6];
        {
            char line[512];
            snprintf(line, sizeof line, "%%C search --index %%D/x.idx " MODEL " --format json --k 50 --min-aesthetic %.9g "
                     "%%D/A/a0.ppm >%%D/s4 2>/dev/null", (double)med);
            CHECK(sh(line) == 0);
        }
        n = read_json_rows("s4", rows, 32);
        { char *dbg = slurp("s4"); CHECK_MSG(n == 6, "%d results, want 6 (med %.9g): %s", n, (double)med, dbg); free(dbg); }
        for (i = 0; i < n; i++) CHECK(rows[i].aes >= med - 1e-4);   /* printed with 6 digits */
    }
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 50 --under %D/B/ %D/A/a0.ppm >%D/s5 2>/dev/null") == 0);
    n = read_json_rows("s5", rows, 32);
    CHECK(n == 6);
    for (i = 0; i < n; i++) CHECK(strstr(rows[i].path, "/B/b") != NULL);
    /* the same folder spelt otherwise; a name that only starts like it is not it */
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 50 --under %D//A/../B/. %D/A/a0.ppm >%D/s5 2>/dev/null") == 0);
    CHECK(read_json_rows("s5", rows, 32) == 6);
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 50 --under %D/B/b %D/A/a0.ppm >%D/s5 2>/dev/null") == 0);
    CHECK(read_json_rows("s5", rows, 32) == 0);
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 50 --before 2020-01-01 %D/A/a0.ppm >%D/s6 2>/dev/null") == 0);
    n = read_json_rows("s6", rows, 32);
    CHECK(n == 6);
    for (i = 0; i < n; i++) CHECK(strstr(rows[i].path, "/B/b") != NULL);
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 50 --after '2024-02-01 08:00' %D/A/a0.ppm >%D/s7 2>/dev/null") == 0);
    n = read_json_rows("s7", rows, 32);
    CHECK(n == 6);
    for (i = 0; i < n; i++) CHECK(strstr(rows[i].path, "/A/a") != NULL);
    /* --sort aesthetic: the candidates in aesthetic order */
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format json --k 5 --sort aesthetic %D/A/a0.ppm >%D/s8 2>/dev/null") == 0);
    n = read_json_rows("s8", rows, 32);
    CHECK(n == 5);
    for (i = 1; i < n; i++) CHECK(rows[i - 1].aes >= rows[i].aes);
    /* malformed queries and options are refused with a reason */
    CHECK(sh("%C search --index %D/x.idx " MODEL " + cat 2>%D/e9") != 0);
    out = slurp("e9"); CHECK(strstr(out, "cannot start with '+'") != NULL); free(out);
    CHECK(sh("%C search --index %D/x.idx " MODEL " cat + 2>%D/e9") != 0);
    out = slurp("e9"); CHECK(strstr(out, "ends with '+'") != NULL); free(out);
    CHECK(sh("%C search --index %D/x.idx " MODEL " --after yesterday cat 2>%D/e9") != 0);
    out = slurp("e9"); CHECK(strstr(out, "YYYY-MM-DD") != NULL); free(out);
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format xml cat 2>%D/e9") != 0);
    out = slurp("e9"); CHECK(strstr(out, "tsv, json or paths") != NULL); free(out);
    CHECK(sh("%C search --help | grep -q -- --min-aesthetic") == 0);
out:
    aes_index_free(idx);
    aes_tokenizer_free(tok);
    aes_clip_free(m);
    rm_tdir();
}

/* ---- score and dedup ---------------------------------------------------------------- */

/* A smooth picture (gradients and a disc) whose layout and colours follow seed. */
static void make_picture(aes_image *img, int w, int h, unsigned seed) {
    int x, y;
    double cx = w * (0.3 + 0.4 * ((seed * 37u) % 11) / 10.0), cy = h * (0.3 + 0.4 * ((seed * 53u) % 7) / 6.0);
    double rad = (w < h ? w : h) * (0.2 + 0.05 * (seed % 4));
    if (aes_image_alloc(ctx, img, w, h, 3) != AES_OK) return;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            uint8_t *p = img->pixels + ((size_t)y * (size_t)w + (size_t)x) * 3;
            double u = (double)x / w, v = (double)y / h, in = (x - cx) * (x - cx) + (y - cy) * (y - cy) < rad * rad;
            p[0] = (uint8_t)(255 * (in ? 0.9 - 0.5 * v : u * ((seed * 7) % 5) / 4.0));
            p[1] = (uint8_t)(255 * (in ? 0.2 + 0.6 * ((seed * 3) % 4) / 3.0 : v));
            p[2] = (uint8_t)(255 * (in ? u : 1 - 0.8 * ((seed * 11) % 6) / 5.0 * v));
        }
}

static void save_picture(const char *rel, const aes_image *img) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tdir, rel);
    CHECK_OK(ctx, aes_image_save_ppm(ctx, path, img));
}

static void test_score_and_dedup(void) {
    aes_image base, tmp, tmp2;
    aes_index *idx = NULL;
    char *out = NULL, *p;
    int i, lines = 0, ok = 1;
    if (!tl_cli() || !make_tdir()) return;
    memset(&base, 0, sizeof base); memset(&tmp, 0, sizeof tmp); memset(&tmp2, 0, sizeof tmp2);
    sh("mkdir -p %D/lib");
    /* six distinct pictures, and near-duplicates of the first two */
    for (i = 0; i < 6; i++) {
        char name[64];
        make_picture(&base, 64, 48, (unsigned)i * 5 + 1);
        snprintf(name, sizeof name, "lib/p%d.ppm", i);
        save_picture(name, &base);
        if (i == 0) {       /* resized to half, and a slight crop */
            CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &base, 32, 24, &tmp));
            save_picture("lib/p0_small.ppm", &tmp);
            aes_image_free(&tmp);
            CHECK_OK(ctx, aes_image_center_crop(ctx, &base, 60, 45, &tmp));
            save_picture("lib/p0_crop.ppm", &tmp);
            aes_image_free(&tmp);
        }
        if (i == 1) {       /* a burst shot: the same scene, a little noise */
            size_t k;
            CHECK_OK(ctx, aes_image_alloc(ctx, &tmp, base.width, base.height, 3));
            for (k = 0; k < (size_t)base.width * base.height * 3; k++) {
                int v = base.pixels[k] + (int)((k * 2654435761u >> 7) % 7) - 3;
                tmp.pixels[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
            save_picture("lib/p1_burst.ppm", &tmp);
            aes_image_free(&tmp);
        }
        aes_image_free(&base);
    }
    sh("printf 'P6\\n4 4\\n255\\nxx' >%D/lib/broken.ppm");

    /* score: every image, the broken one reported and skipped, the same numbers as the index */
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/lib 2>/dev/null") == 0);
    CHECK(sh("%C score " MODEL " " HEAD " %D/lib >%D/sc 2>%D/sce") == 0);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 9);
    out = slurp("sc");
    for (p = strchr(out, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        char path[256];
        double v;
        if (sscanf(p + 1, "%255[^\t]\t%lf", path, &v) != 2) { ok = 0; break; }
        lines++;
        ok &= aes_index_find(idx, path) >= 0 && fabs(v - idx->aesthetic[aes_index_find(idx, path)]) < 1e-3;
    }
    CHECK(ok && lines == 9 && !strncmp(out, "path\taesthetic\n", 15));
    free(out);
    out = slurp("sce");
    CHECK(strstr(out, "skipping") && strstr(out, "broken.ppm") && strstr(out, "1 file skipped"));
    free(out);
    CHECK(sh("%C score " MODEL " " HEAD " --top 3 --format json %D/lib >%D/sc2 2>/dev/null") == 0);
    out = slurp("sc2");
    {
        double prev = 1e9, v;
        int n = 0;
        for (p = out; (p = strstr(p, "\"aesthetic\":")) != NULL; p++) {
            v = atof(p + 12);
            CHECK(v <= prev);
            prev = v;
            n++;
        }
        CHECK(n == 3);
    }
    free(out);

    /* dedup: the threshold between the copies' and the distinct pictures' similarities
     * (the tiny test model's scale, not CLIP's), groups as made, the best score kept */
    {
        const char *copies[3][2] = {{"p0.ppm", "p0_small.ppm"}, {"p0.ppm", "p0_crop.ppm"}, {"p1.ppm", "p1_burst.ppm"}};
        double lo_copy = 2, hi_other = -2, thr;
        int a, b, d;
        char line[512], want_keep[2][256];
        for (a = 0; a < (int)idx->count; a++)
            for (b = a + 1; b < (int)idx->count; b++) {
                const char *pa = strrchr(aes_index_path(idx, (size_t)a), '/') + 1, *pb = strrchr(aes_index_path(idx, (size_t)b), '/') + 1;
                double s = 0;
                int copy = 0, k;
                for (d = 0; d < 24; d++) s += (double)idx->vectors[a * 24 + d] * idx->vectors[b * 24 + d];
                for (k = 0; k < 3; k++)
                    copy |= (!strcmp(pa, copies[k][0]) && !strcmp(pb, copies[k][1])) || (!strcmp(pb, copies[k][0]) && !strcmp(pa, copies[k][1])) ||
                            (k == 0 && !strcmp(pa, "p0_small.ppm") && !strcmp(pb, "p0_crop.ppm")) ||
                            (k == 0 && !strcmp(pb, "p0_small.ppm") && !strcmp(pa, "p0_crop.ppm"));
                if (copy && s < lo_copy) lo_copy = s;
                if (!copy && s > hi_other) hi_other = s;
            }
        CHECK_MSG(lo_copy > hi_other, "copies %.4f, distinct %.4f: not separable with the test model", lo_copy, hi_other);
        thr = (lo_copy + hi_other) / 2;
        for (a = 0; a < 2; a++) {      /* the expected keeper of each group: the best score */
            const char *g0[3] = {"p0.ppm", "p0_small.ppm", "p0_crop.ppm"}, *g1[2] = {"p1.ppm", "p1_burst.ppm"};
            float best = -1e30f;
            int k;
            for (k = 0; k < (a ? 2 : 3); k++) {
                char rel[64];
                int64_t r;
                snprintf(rel, sizeof rel, "lib/%s", a ? g1[k] : g0[k]);
                r = find(idx, rel);
                if (r >= 0 && idx->aesthetic[r] > best) { best = idx->aesthetic[r]; snprintf(want_keep[a], 256, "%s/%s", tdir, rel); }
            }
        }
        snprintf(line, sizeof line, "%%C dedup --index %%D/x.idx --threshold %.6f --html %%D/page/dd.html >%%D/dd 2>%%D/dde", thr);
        sh("mkdir -p %D/page");
        CHECK(sh(line) == 0);
        out = slurp("dd");
        CHECK_MSG(count_lines(out) == 6, "dedup: %s", out);     /* header + 3 + 2 */
        for (a = 0; a < 2; a++) {
            char keep_line[600];
            snprintf(keep_line, sizeof keep_line, "\tkeep\t%s\t", want_keep[a]);
            CHECK_MSG(strstr(out, keep_line) != NULL, "want %s kept: %s", want_keep[a], out);
        }
        CHECK(!strstr(out, "p2.ppm") && !strstr(out, "p5.ppm"));
        free(out);
        /* --format paths --others: the ones not kept, for xargs */
        snprintf(line, sizeof line, "%%C dedup --index %%D/x.idx --threshold %.6f --format paths --others >%%D/dd2 2>/dev/null", thr);
        CHECK(sh(line) == 0);
        out = slurp("dd2");
        CHECK(count_lines(out) == 3 && !strstr(out, want_keep[0]) && !strstr(out, want_keep[1]) && !strchr(out, '\t'));
        free(out);
        out = slurp("page/dd.html");
        CHECK(strstr(out, "class=\"card keep\"") && strstr(out, "src=\"../lib/"));
        free(out);
    }
    /* --calibrate: copies made in memory, the statistics and a threshold */
    CHECK(sh("%C dedup --calibrate " MODEL " --sample 100 %D/lib >%D/cal 2>%D/cale") == 0);
    out = slurp("cal");
    {
        char *t = strstr(out, "suggested-threshold\t");
        double thr = t ? atof(t + 20) : 9;
        CHECK_MSG(strstr(out, "copy:halved\t9\t") && strstr(out, "copy:burst\t9\t") && strstr(out, "nearest-other-photo\t9\t") &&
                  thr > -1 && thr < 1, "calibrate: %s", out);
    }
    free(out);
    out = slurp("cale");
    CHECK(strstr(out, "broken.ppm") != NULL);       /* reported and skipped */
    free(out);
    CHECK(sh("%C dedup --help | grep -q -- --others && %C score --help | grep -q -- --top") == 0);
out:
    aes_index_free(idx);
    rm_tdir();
}

/* ---- EXIF: orientation and date ------------------------------------------------------ */

static void put16(unsigned char *p, unsigned v, int big) {
    if (big) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
    else { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
}
static void put32(unsigned char *p, unsigned long v, int big) {
    if (big) { put16(p, (unsigned)(v >> 16), 1); put16(p + 2, (unsigned)(v & 0xFFFF), 1); }
    else { put16(p, (unsigned)(v & 0xFFFF), 0); put16(p + 2, (unsigned)(v >> 16), 0); }
}

/* An APP1 Exif segment (marker included) as a camera writes it: IFD0 with
 * Orientation and the Exif IFD pointer, the Exif IFD with DateTimeOriginal.
 * Returns its length (88 bytes). */
static size_t exif_segment(unsigned char *seg, int orientation, const char *date, int big) {
    unsigned char *t = seg + 10;
    memset(seg, 0, 88);
    seg[0] = 0xFF; seg[1] = 0xE1;
    put16(seg + 2, 2 + 6 + 76, 1);                    /* JPEG lengths are big-endian */
    memcpy(seg + 4, "Exif\0\0", 6);
    memcpy(t, big ? "MM\0*" : "II*\0", 4);
    put32(t + 4, 8, big);
    put16(t + 8, 2, big);                             /* IFD0: two entries */
    put16(t + 10, 0x0112, big); put16(t + 12, 3, big); put32(t + 14, 1, big); put16(t + 18, (unsigned)orientation, big);
    put16(t + 22, 0x8769, big); put16(t + 24, 4, big); put32(t + 26, 1, big); put32(t + 30, 38, big);
    put32(t + 34, 0, big);
    put16(t + 38, 1, big);                            /* Exif IFD: one entry */
    put16(t + 40, 0x9003, big); put16(t + 42, 2, big); put32(t + 44, 20, big); put32(t + 48, 56, big);
    put32(t + 52, 0, big);
    memcpy(t + 56, date, 19);
    return 10 + 76;
}

static void test_exif_parse_and_orient(void) {
    unsigned char jpg[200];
    aes_exif ex;
    aes_image img, ref;
    size_t n, cut;
    int big, o, x, y, same;
    for (big = 0; big < 2; big++) {
        jpg[0] = 0xFF; jpg[1] = 0xD8;
        n = 2 + exif_segment(jpg + 2, 6, "2021:07:04 10:30:00", big);
        jpg[n] = 0xFF; jpg[n + 1] = 0xD9;
        n += 2;
        CHECK(aes_jpeg_exif(jpg, n, &ex) == AES_OK && ex.orientation == 6 && !strcmp(ex.datetime_original, "2021:07:04 10:30:00"));
        for (cut = 0; cut < n; cut++)     /* every truncation: no crash, nothing invented */
            CHECK(aes_jpeg_exif(jpg, cut, &ex) == AES_OK && (ex.orientation == 0 || ex.orientation == 6));
    }
    n = 2 + exif_segment(jpg + 2, 9, "2021:13:04 10:30:0x", 0);
    CHECK(aes_jpeg_exif(jpg, n, &ex) == AES_OK && ex.orientation == 0 && ex.datetime_original[0] == 0);
    CHECK(aes_jpeg_exif("P6\n", 3, &ex) == AES_OK && ex.orientation == 0);
    CHECK(aes_jpeg_exif(NULL, 0, &ex) == AES_OK && aes_jpeg_exif(jpg, n, NULL) == AES_ERR_INVALID_ARG);

    /* orientation: 6 turns a wide picture with a red left half into a tall one, red on top */
    memset(&img, 0, sizeof img);
    memset(&ref, 0, sizeof ref);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 4, 2, 3));
    if (!img.pixels) return;
    for (y = 0; y < 2; y++)
        for (x = 0; x < 4; x++) img.pixels[(y * 4 + x) * 3] = (uint8_t)(x < 2 ? 255 : 0), img.pixels[(y * 4 + x) * 3 + 1] = (uint8_t)(10 * x + y);
    CHECK_OK(ctx, aes_image_alloc(ctx, &ref, 4, 2, 3));
    memcpy(ref.pixels, img.pixels, 24);
    CHECK_OK(ctx, aes_image_orient(ctx, &img, 6));
    CHECK(img.width == 2 && img.height == 4 && img.pixels[0] == 255 && img.pixels[(3 * 2 + 1) * 3] == 0);
    CHECK(img.pixels[1] == 1);                       /* top-left comes from the bottom-left */
    /* 8 undoes 6; 3 is 6 twice; 2, 4 are their own inverse; 5 = 2 then 8; 7 = 2 then 6 */
    CHECK_OK(ctx, aes_image_orient(ctx, &img, 8));
    CHECK(img.width == 4 && !memcmp(img.pixels, ref.pixels, 24));
    for (o = 2; o <= 4; o += 2) {
        CHECK_OK(ctx, aes_image_orient(ctx, &img, o));
        CHECK(memcmp(img.pixels, ref.pixels, 24) != 0);
        CHECK_OK(ctx, aes_image_orient(ctx, &img, o));
        CHECK(!memcmp(img.pixels, ref.pixels, 24));
    }
    {
        aes_image a, b;
        int pairs[3][3] = {{3, 6, 6}, {5, 2, 8}, {7, 2, 6}};
        int k;
        for (k = 0; k < 3; k++) {
            memset(&a, 0, sizeof a); memset(&b, 0, sizeof b);
            CHECK_OK(ctx, aes_image_alloc(ctx, &a, 4, 2, 3));
            CHECK_OK(ctx, aes_image_alloc(ctx, &b, 4, 2, 3));
            if (!a.pixels || !b.pixels) break;
            memcpy(a.pixels, ref.pixels, 24);
            memcpy(b.pixels, ref.pixels, 24);
            CHECK_OK(ctx, aes_image_orient(ctx, &a, pairs[k][0]));
            CHECK_OK(ctx, aes_image_orient(ctx, &b, pairs[k][1]));
            CHECK_OK(ctx, aes_image_orient(ctx, &b, pairs[k][2]));
            same = a.width == b.width && !memcmp(a.pixels, b.pixels, 24);
            CHECK_MSG(same, "orientation %d", pairs[k][0]);
            aes_image_free(&a);
            aes_image_free(&b);
        }
    }
    CHECK(aes_image_orient(ctx, &img, 9) == AES_ERR_INVALID_ARG);
    aes_image_free(&img);
    aes_image_free(&ref);
}

#ifdef AES_HAVE_STB
static void mem_write(void *user, void *data, int size) {
    aes_image *buf = (aes_image *)user;     /* pixels = bytes, width = length */
    if (buf->width + size > buf->height) return;
    memcpy(buf->pixels + buf->width, data, (size_t)size);
    buf->width += size;
}
#endif

/* A phone photo stored sideways with EXIF Orientation 6: every command sees
 * it upright (the same tensor as the upright picture, within JPEG error),
 * and its date is the EXIF DateTimeOriginal. */
static void test_exif_jpeg_cli(void) {
#ifndef AES_HAVE_STB
    tl_skip("JPEG writing needs Debian's libstb-dev (stb_image_write)");
#else
    aes_image side, up, enc;
    unsigned char seg[100];
    char path[256];
    float a[3 * 32 * 32], b[3 * 32 * 32], c[3 * 32 * 32];
    double dab = 0, dcb = 0;
    FILE *f;
    int x, y, k;
    aes_index *idx = NULL;
    if (!tl_cli() || !make_tdir()) return;
    memset(&side, 0, sizeof side); memset(&up, 0, sizeof up); memset(&enc, 0, sizeof enc);
    sh("mkdir -p %D/phone");
    /* stored sideways: 64 x 32, left half red, right half blue (8-pixel blocks: JPEG keeps them) */
    CHECK_OK(ctx, aes_image_alloc(ctx, &side, 64, 32, 3));
    CHECK_OK(ctx, aes_image_alloc(ctx, &up, 32, 64, 3));
    if (!side.pixels || !up.pixels) return;
    for (y = 0; y < 32; y++)
        for (x = 0; x < 64; x++) side.pixels[(y * 64 + x) * 3 + (x < 32 ? 0 : 2)] = 255;
    for (y = 0; y < 64; y++)
        for (x = 0; x < 32; x++) up.pixels[(y * 32 + x) * 3 + (y < 32 ? 0 : 2)] = 255;
    save_picture("upright.ppm", &up);
    enc.pixels = (uint8_t *)malloc(1 << 16);
    enc.height = 1 << 16;
    if (!enc.pixels) return;
    CHECK(stbi_write_jpg_to_func(mem_write, &enc, 64, 32, 3, side.pixels, 95) != 0);
    /* plain.jpg: no EXIF; phone/rot.jpg: SOI, the Exif segment, the rest */
    snprintf(path, sizeof path, "%s/plain.jpg", tdir);
    f = fopen(path, "wb"); if (f) { fwrite(enc.pixels, 1, (size_t)enc.width, f); fclose(f); }
    k = (int)exif_segment(seg, 6, "2021:07:04 10:30:00", 1);
    snprintf(path, sizeof path, "%s/phone/rot.jpg", tdir);
    f = fopen(path, "wb");
    if (f) { fwrite(enc.pixels, 1, 2, f); fwrite(seg, 1, (size_t)k, f); fwrite(enc.pixels + 2, 1, (size_t)enc.width - 2, f); fclose(f); }
    free(enc.pixels);
    CHECK(sh("%C preprocess --size 32 %D/phone/rot.jpg --out %D/a.f32 >/dev/null && "
             "%C preprocess --size 32 %D/upright.ppm --out %D/b.f32 >/dev/null && "
             "%C preprocess --size 32 %D/plain.jpg --out %D/c.f32 >/dev/null") == 0);
    {
        FILE *fa, *fb, *fc;
        snprintf(path, sizeof path, "%s/a.f32", tdir); fa = fopen(path, "rb");
        snprintf(path, sizeof path, "%s/b.f32", tdir); fb = fopen(path, "rb");
        snprintf(path, sizeof path, "%s/c.f32", tdir); fc = fopen(path, "rb");
        CHECK(fa && fb && fc && fread(a, 4, 3072, fa) == 3072 && fread(b, 4, 3072, fb) == 3072 && fread(c, 4, 3072, fc) == 3072);
        if (fa) fclose(fa);
        if (fb) fclose(fb);
        if (fc) fclose(fc);
    }
    for (k = 0; k < 3072; k++) {
        dab = fmax(dab, fabs(a[k] - b[k]));
        dcb = fmax(dcb, fabs(c[k] - b[k]));
    }
    CHECK_MSG(dab < 0.3 && dcb > 2, "rotated vs upright %.3f, unrotated vs upright %.3f", dab, dcb);
    /* the index dates the photo by its EXIF, and --after / --before find it */
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/phone 2>/dev/null") == 0);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK(idx->count == 1 && idx->date[0] == (int64_t)days_since_epoch(2021, 7, 4) * 86400 + 10 * 3600 + 30 * 60);
        aes_index_free(idx);
    }
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format paths --after 2021-07-04 --before '2021-07-04 10:31' "
             "%D/upright.ppm >%D/s 2>/dev/null") == 0);
    {
        char *out = slurp("s");
        CHECK(strstr(out, "rot.jpg") != NULL);
        free(out);
    }
    CHECK(sh("%C search --index %D/x.idx " MODEL " --format paths --before 2021-07-04 %D/upright.ppm >%D/s 2>/dev/null") == 0);
    {
        char *out = slurp("s");
        CHECK(out[0] == 0);
        free(out);
    }
    aes_image_free(&side);
    aes_image_free(&up);
    rm_tdir();
#endif
}

/* WebP files are read through libwebp when the build has it. */
static void test_webp(void) {
#ifndef AES_HAVE_WEBP
    tl_skip("WebP needs Debian's libwebp-dev");
#else
    aes_image img;
    uint8_t *webp = NULL;
    size_t n;
    char path[256];
    FILE *f;
    aes_index *idx = NULL;
    if (!tl_cli() || !make_tdir()) return;
    memset(&img, 0, sizeof img);
    make_picture(&img, 40, 30, 3);
    if (!img.pixels) return;
    n = WebPEncodeLosslessRGB(img.pixels, 40, 30, 40 * 3, &webp);
    CHECK(n > 0);
    save_picture("same.ppm", &img);
    snprintf(path, sizeof path, "%s/pic.webp", tdir);
    f = fopen(path, "wb"); if (f && webp) { fwrite(webp, 1, n, f); fclose(f); }
    WebPFree(webp);
    /* lossless: the same embedding as the PPM of the same pixels */
    CHECK(sh("%C index build " MODEL " --out %D/x.idx --quiet %D/pic.webp %D/same.ppm 2>/dev/null") == 0);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK(idx->count == 2);
        if (idx->count == 2) CHECK(!memcmp(idx->vectors, idx->vectors + 24, 24 * sizeof(float)));
        aes_index_free(idx);
    }
    aes_image_free(&img);
    rm_tdir();
#endif
}

/* ---- shards: build --shard K/N, index merge ------------------------------------ */

/* 1 when two indexes hold the same rows in the same order, bit for bit. */
static int same_rows(const aes_index *a, const aes_index *b) {
    size_t i;
    if (a->count != b->count || a->dim != b->dim || a->storage != b->storage) return 0;
    for (i = 0; i < a->count; i++) {
        if (strcmp(aes_index_path(a, i), aes_index_path(b, i))) return 0;
        if (memcmp(&a->aesthetic[i], &b->aesthetic[i], sizeof(float)) || a->date[i] != b->date[i] ||
            a->content_hash[i] != b->content_hash[i] || a->file_size[i] != b->file_size[i])
            return 0;
    }
    if (a->vectors && memcmp(a->vectors, b->vectors, a->count * (size_t)a->dim * sizeof(float))) return 0;
    if (a->qvectors && (memcmp(a->qvectors, b->qvectors, a->count * (size_t)a->dim) ||
                        memcmp(a->qscales, b->qscales, a->count * sizeof(float))))
        return 0;
    return 1;
}

static void test_shard_merge(void) {
    aes_index *one = NULL, *merged = NULL, *s[3] = {NULL, NULL, NULL};
    char *a = NULL, *b = NULL, *log = NULL;
    int i, q;
    size_t total = 0;
    if (!tl_cli() || !make_tdir()) return;
    /* names that sort differently as whole paths and as a walk (A/b.ppm,
     * A/b/..., A/b-c.ppm) and copies of one picture (equal scores: ties) */
    sh("mkdir -p %D/A/b %D/B");
    write_ppm("A/b.ppm", 28, 30, 3);
    write_ppm("A/b-c.ppm", 30, 26, 4);
    write_ppm("A/b/x.ppm", 26, 28, 5);
    write_ppm("A/b/y.ppm", 26, 28, 5);
    write_ppm("A/a.ppm", 26, 28, 5);
    for (i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "B/p%d.ppm", i);
        write_ppm(name, 24 + 2 * i, 30 - i, (unsigned)(i % 5) + 6);
    }
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/one.idx --quiet %D/A %D/B 2>/dev/null") == 0);
    for (i = 0; i < 3; i++) {
        char cmd[512], name[16];
        snprintf(cmd, sizeof cmd, "%%C index build " MODEL " " HEAD " --shard %d/3 --batch 3 --out %%D/s%d.idx --quiet %%D/A %%D/B 2>/dev/null", i, i);
        CHECK(sh(cmd) == 0);
        snprintf(name, sizeof name, "s%d.idx", i);
        if ((s[i] = load_index(name)) != NULL) total += s[i]->count;
    }
    CHECK(sh("%C index merge %D/m.idx %D/s2.idx %D/s0.idx %D/s1.idx 2>%D/log") == 0);
    if (!(one = load_index("one.idx")) || !(merged = load_index("m.idx"))) goto out;
    CHECK(one->count == 12 && total == 12);
    for (i = 0; i < 3; i++) CHECK(s[i] && s[i]->count > 0 && s[i]->count < 12);     /* a real split */
    CHECK(same_rows(one, merged));
    /* search output, byte for byte, for several image queries (int8 and fp32) */
    for (q = 0; q < 6; q++) {
        char cmd[512];
        static const char *const img[6] = {"A/a.ppm", "A/b.ppm", "B/p0.ppm", "B/p3.ppm", "A/b-c.ppm", "B/p6.ppm"};
        snprintf(cmd, sizeof cmd, "%%C search --index %%D/one.idx " MODEL " --format tsv --k 12 %s %%D/%s >%%D/q1 2>/dev/null",
                 q & 1 ? "--scan-int8" : "", img[q]);
        CHECK(sh(cmd) == 0);
        snprintf(cmd, sizeof cmd, "%%C search --index %%D/m.idx " MODEL " --format tsv --k 12 %s %%D/%s >%%D/q2 2>/dev/null",
                 q & 1 ? "--scan-int8" : "", img[q]);
        CHECK(sh(cmd) == 0);
        free(a); free(b);
        a = slurp("q1");
        b = slurp("q2");
        CHECK(a && b && count_lines(a) == 13 && !strcmp(a, b));
    }
    /* a shard given twice: its rows once */
    CHECK(sh("%C index merge %D/m2.idx %D/s0.idx %D/s1.idx %D/s2.idx %D/s1.idx 2>%D/log") == 0);
    log = slurp("log");
    CHECK(strstr(log, "given twice") != NULL);
    aes_index_free(merged);
    CHECK((merged = load_index("m2.idx")) != NULL && same_rows(one, merged));
    /* a missing shard is named; a shard scored by another head is refused, by name */
    free(log);
    CHECK(sh("%C index merge %D/m3.idx %D/s0.idx %D/s2.idx 2>%D/log") == 0);
    log = slurp("log");
    CHECK(strstr(log, "shard 1/3 is missing") != NULL);
    CHECK(sh("%C index build " MODEL " --shard 1/3 --out %D/nohead.idx --quiet %D/A %D/B 2>/dev/null") == 0);
    CHECK(sh("%C index merge %D/m4.idx %D/s0.idx %D/nohead.idx %D/s2.idx 2>%D/log") != 0);
    free(log);
    log = slurp("log");
    CHECK(strstr(log, "nohead.idx") != NULL && strstr(log, "head") != NULL);
    {
        char path[256];
        snprintf(path, sizeof path, "%s/m4.idx", tdir);
        CHECK(access(path, F_OK) != 0);
    }
    CHECK(sh("%C index build " MODEL " --shard 3/3 --out %D/bad.idx %D/A 2>/dev/null") != 0);
    /* tools/slurm_index.sh's two roles, run by hand as Slurm would run them
     * (array tasks 0..2, then the merge) */
    CHECK(sh("for k in 0 1 2; do SLURM_ARRAY_TASK_ID=$k AESALIGN='%C' sh tools/slurm_index.sh shard 3 %D/sl.idx " MODEL " " HEAD
             " %D/A %D/B 2>/dev/null || exit 1; done && AESALIGN='%C' sh tools/slurm_index.sh merge 3 %D/sl.idx 2>/dev/null") == 0);
    aes_index_free(merged);
    CHECK((merged = load_index("sl.idx")) != NULL && same_rows(one, merged));
out:
    free(a); free(b); free(log);
    aes_index_free(one);
    aes_index_free(merged);
    for (i = 0; i < 3; i++) aes_index_free(s[i]);
    rm_tdir();
}

/* ---- tools/slurm_index.sh on a real (single-node) Slurm cluster ------------------
 * tests/slurm_cluster.sh starts munged, slurmctld and slurmd privately
 * (ports, socket, state in the test's folder), runs the submission and
 * stops them on any exit.  The 3 shard tasks and the merge run as Slurm
 * jobs; the merged index must equal one build on this machine.  A shard's
 * batches hold other images than one build's, so this also checks that an
 * image's embedding does not depend on the images batched with it. */
static const char *const slurm_job =
    "set -e\n"
    "out=$(sh tools/slurm_index.sh submit 3 \"$1/sl.idx\" " MODEL " " HEAD " \"$1/A\" \"$1/B\")\n"
    "echo \"$out\"\n"
    "mid=${out##*merge: job }; mid=${mid%% *}\n"
    "i=0\n"
    "while [ $i -lt 200 ]; do\n"           /* 50 s */
    "    st=$(scontrol show job \"$mid\" | sed -n 's/.*JobState=\\([A-Z_]*\\).*/\\1/p')\n"
    "    case $st in COMPLETED) exit 0 ;; PENDING|RUNNING|CONFIGURING|COMPLETING|'') ;; *) echo \"merge job $mid: $st\"; exit 1 ;; esac\n"
    "    sleep 0.25; i=$((i + 1))\n"
    "done\n"
    "echo \"merge job $mid did not finish in 50 s\"; squeue; exit 1\n";

static void test_slurm(void) {
    aes_index *one = NULL, *merged = NULL;
    char *log = NULL, *a = NULL, *b = NULL, path[256];
    FILE *f;
    int i, rc;
    if (getenv("AES_SLOW_RUNNER")) { tl_skip("AES_SLOW_RUNNER is set: the Slurm run is a native-build test"); return; }
    if (getenv("AES_NO_SLURM")) { tl_skip("AES_NO_SLURM is set (CI runs the Slurm test in its default build only)"); return; }
    if (!tl_cli() || !make_tdir()) return;
    sh("mkdir -p %D/A/b %D/B");
    for (i = 0; i < 9; i++) {
        char name[64];
        snprintf(name, sizeof name, i < 4 ? "A/p%d.ppm" : i < 6 ? "A/b/p%d.ppm" : "B/p%d.ppm", i);
        write_ppm(name, 22 + 2 * i, 30 - i, (unsigned)(i % 4) + 2);       /* copies of pictures: ties */
    }
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/one.idx --quiet %D/A %D/B 2>/dev/null") == 0);
    snprintf(path, sizeof path, "%s/job.sh", tdir);
    if ((f = fopen(path, "w")) != NULL) { fputs(slurm_job, f); fclose(f); }
    rc = sh("AESALIGN='%C' sh tests/slurm_cluster.sh %D/cluster sh %D/job.sh %D >%D/log 2>&1");
    log = slurp("log");
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
        char *m = strstr(log, "slurm: skipped: ");
        char *e = m ? strchr(m, '\n') : NULL;
        if (e) *e = 0;
        tl_skip(m ? m : "the Slurm cluster did not start");
        goto out;
    }
    CHECK_MSG(rc == 0, "the Slurm run failed (%d): %s", rc, log);
    if (rc != 0) {
        free(log);
        log = slurp("cluster/slurmctld.log");
        fprintf(stderr, "slurmctld.log:\n%s\n", log);
        goto out;
    }
    CHECK(strstr(log, "shards: job") != NULL);
    for (i = 0; i < 3; i++) {       /* each shard was a Slurm array task, with its own log */
        char name[64];
        aes_index *s;
        snprintf(name, sizeof name, "sl.idx.shard%d-of-3", i);
        CHECK((s = load_index(name)) != NULL && s->count > 0 && s->count < 9);
        aes_index_free(s);
    }
    if (!(one = load_index("one.idx")) || !(merged = load_index("sl.idx"))) { CHECK(0); goto out; }
    CHECK(one->count == 9 && same_rows(one, merged));
    /* the same search results, byte for byte */
    CHECK(sh("%C search --index %D/one.idx " MODEL " --k 9 %D/A/p1.ppm >%D/q1 2>/dev/null") == 0);
    CHECK(sh("%C search --index %D/sl.idx " MODEL " --k 9 %D/A/p1.ppm >%D/q2 2>/dev/null") == 0);
    a = slurp("q1");
    b = slurp("q2");
    CHECK(a && b && count_lines(a) == 10 && !strcmp(a, b));
    /* every daemon stopped: the cluster's pid files name no live process */
    CHECK(sh("for p in munged slurmctld slurmd; do f=%D/cluster/$p.pid; [ ! -f $f ] || ! kill -0 $(cat $f) 2>/dev/null || exit 1; done") == 0);
out:
    free(log); free(a); free(b);
    aes_index_free(one);
    aes_index_free(merged);
    rm_tdir();
}

/* ---- export: .npy + JSON Lines, read back here and by FAISS --------------------- */

/* Checks the python program FAISS's test runs (written to the test's folder). */
static const char *const faiss_check_py =
    "import json, sys, numpy as np, faiss\n"
    "d = sys.argv[1]\n"
    "x = np.load(d + '/out/embeddings.npy')\n"
    "meta = [json.loads(l) for l in open(d + '/out/metadata.jsonl')]\n"
    "assert x.dtype == np.float32 and x.flags['C_CONTIGUOUS'] and x.shape[0] == len(meta), (x.shape, len(meta))\n"
    "index = faiss.IndexFlatIP(x.shape[1])\n"
    "index.add(x)\n"
    "row = {m['path']: m['row'] for m in meta}\n"
    "bad = 0\n"
    "for q in range(20):\n"
    "    want = open('%s/r%d' % (d, q)).read().split()\n"
    "    qpath = open('%s/q%d' % (d, q)).read().strip()\n"
    "    s, i = index.search(x[row[qpath]:row[qpath] + 1], 10)\n"
    "    got = [meta[j]['path'] for j in i[0]]\n"
    "    if got != want:\n"
    "        print('query', q, qpath, 'faiss', got, 'aesalign', want); bad += 1\n"
    "sys.exit(1 if bad else 0)\n";

static void test_export_npy(void) {
    aes_index *idx = NULL;
    char *npy = NULL, *jl = NULL, path[256];
    void *buf = NULL;
    size_t len = 0, i;
    int q;
    const char *py = NULL;
    if (!tl_cli() || !make_tdir()) return;
    sh("mkdir -p %D/P");
    for (i = 0; i < 22; i++) {
        char name[64];
        snprintf(name, sizeof name, "P/p%02d.ppm", (int)i);
        write_ppm(name, 24 + (int)(i % 7) * 2, 24 + (int)(i / 7) * 3, (unsigned)i * 3 + 1);
    }
    CHECK(sh("touch -m -d '2021-06-07 08:09:10' %D/P/p00.ppm") == 0);
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/P 2>/dev/null") == 0);
    CHECK(sh("%C index export --npy %D/out %D/x.idx 2>/dev/null") == 0);
    if (!(idx = load_index("x.idx"))) goto out;
    CHECK(idx->count == 22);
    /* the .npy: NPY 1.0 header, then the fp32 vectors as stored, little-endian */
    snprintf(path, sizeof path, "%s/out/embeddings.npy", tdir);
    CHECK_OK(ctx, aes_read_file(ctx, path, &buf, &len));
    if (buf && len >= 10) {
        const unsigned char *p = (const unsigned char *)buf;
        size_t hl = (size_t)p[8] | (size_t)p[9] << 8, d;
        char *hdr = (char *)malloc(hl + 1);
        int same = 1;
        CHECK(!memcmp(p, "\x93NUMPY\x01\x00", 8) && (10 + hl) % 64 == 0 && p[10 + hl - 1] == '\n');
        CHECK(len == 10 + hl + idx->count * 24 * 4);
        if (hdr && 10 + hl <= len) {
            memcpy(hdr, p + 10, hl);
            hdr[hl] = 0;
            CHECK(strstr(hdr, "'descr': '<f4'") && strstr(hdr, "'fortran_order': False") && strstr(hdr, "'shape': (22, 24)"));
        }
        free(hdr);
        for (i = 0; i < idx->count && len == 10 + hl + idx->count * 96; i++)
            for (d = 0; d < 24; d++) {
                const unsigned char *b = p + 10 + hl + (i * 24 + d) * 4;
                uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
                float v;
                memcpy(&v, &u, 4);
                same &= memcmp(&v, &idx->vectors[i * 24 + d], 4) == 0;
            }
        CHECK(same);
    }
    /* the JSON Lines: one row per entry, in index order, with score and date */
    jl = slurp("out/metadata.jsonl");
    CHECK(count_lines(jl) == 22);
    {
        char want[512];
        snprintf(want, sizeof want, "{\"row\": 0, \"path\": \"%s/P/p00.ppm\", \"aesthetic\": ", tdir);
        CHECK(!strncmp(jl, want, strlen(want)));
        CHECK(strstr(jl, "\"date\": \"2021-06-07T08:09:10\"}\n") != NULL);
        CHECK((float)atof(jl + strlen(want)) == idx->aesthetic[0]);     /* %.9g: the float back exactly */
    }
    /* FAISS: a flat inner-product index over the export finds what aesalign search finds */
    if (system("python3 -c 'import faiss, numpy' >/dev/null 2>&1") == 0) py = "python3";
    else if (system("/usr/bin/python3 -c 'import faiss, numpy' >/dev/null 2>&1") == 0) py = "/usr/bin/python3";
    if (!py) tl_skip("python3 with numpy and faiss (Debian python3-faiss) is absent: the FAISS round trip is not tested");
    else {
        char cmd[1024];
        FILE *f;
        snprintf(path, sizeof path, "%s/check.py", tdir);
        if ((f = fopen(path, "w")) != NULL) { fputs(faiss_check_py, f); fclose(f); }
        for (q = 0; q < 20; q++) {     /* plain retrieval (no aesthetic re-ranking), exact fp32 */
            snprintf(cmd, sizeof cmd, "echo %%D/P/p%02d.ppm >%%D/q%d && %%C search --index %%D/x.idx " MODEL
                     " --aesthetic-weight 0 --format paths --k 10 %%D/P/p%02d.ppm >%%D/r%d 2>/dev/null", q, q, q, q);
            CHECK(sh(cmd) == 0);
        }
        snprintf(cmd, sizeof cmd, "%s %%D/check.py %%D", py);
        CHECK(sh(cmd) == 0);
    }
out:
    aes_free(buf);
    free(npy); free(jl);
    aes_index_free(idx);
    rm_tdir();
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    if (!ctx) return 1;
    RUN(test_update_keeps_folders);
    RUN(test_update_concurrent);
    RUN(test_search_queries_formats_filters);
    RUN(test_score_and_dedup);
    RUN(test_exif_parse_and_orient);
    RUN(test_exif_jpeg_cli);
    RUN(test_webp);
    RUN(test_shard_merge);
    RUN(test_slurm);
    RUN(test_export_npy);
    aes_ctx_free(ctx);
    return tl_report();
}
