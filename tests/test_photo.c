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

/* Runs a shell command line made from fmt: "%C" is the CLI (with its
 * runner), "%D" the test's folder; other text is taken as is.  Returns the
 * exit status (0 = success). */
static int sh(const char *fmt) {
    char cmd[8192];
    size_t n = 0;
    const char *p;
    for (p = fmt; *p && n + 512 < sizeof cmd; p++) {
        if (p[0] == '%' && p[1] == 'C') { n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s", tl_cli()); p++; }
        else if (p[0] == '%' && p[1] == 'D') { n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s", tdir); p++; }
        else cmd[n++] = *p;
    }
    cmd[n] = 0;
    return system(cmd);
}

/* The text of a file in the test's folder (malloc'ed, "" when missing). */
static char *slurp(const char *name) {
    char path[256];
    void *buf = NULL;
    size_t len = 0;
    char *s;
    snprintf(path, sizeof path, "%s/%s", tdir, name);
    if (aes_read_file(ctx, path, &buf, &len) != AES_OK) { aes_clear_error(ctx); len = 0; }
    s = (char *)malloc(len + 1);
    if (s) { if (len) memcpy(s, buf, len); s[len] = 0; }
    aes_free(buf);
    return s;
}

static void nap_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

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

    /* two writers start while the lock is held, then it is released */
    CHECK(sh("(%C index update --index %D/x.idx --quiet %D/P 2>%D/logP; echo $? >%D/rcP) & "
             "(%C index update --index %D/x.idx --quiet %D/Q 2>%D/logQ; echo $? >%D/rcQ) & "
             "sleep 0.3; exit 0") == 0);
    if (fd >= 0) close(fd);        /* releases the lock */
    for (i = 0; i < 600; i++) {    /* both finish (60 s at most) */
        char a[256], b[256];
        snprintf(a, sizeof a, "%s/rcP", tdir);
        snprintf(b, sizeof b, "%s/rcQ", tdir);
        if (access(a, F_OK) == 0 && access(b, F_OK) == 0) break;
        nap_ms(100);
    }
    nap_ms(100);
    log = slurp("rcP"); CHECK(!strcmp(log, "0\n")); free(log);
    log = slurp("rcQ"); CHECK(!strcmp(log, "0\n")); free(log);
    log = slurp("logP");
    {
        char *lq = slurp("logQ");
        CHECK_MSG(strstr(log, "waiting for pid") || strstr(lq, "waiting for pid"), "logs: %s / %s", log, lq);
        free(lq);
    }
    free(log);
    if ((idx = load_index("x.idx")) != NULL) {
        CHECK_MSG(idx->count == (size_t)(1 + 2 * n), "%zu images, want %d", idx->count, 1 + 2 * n);
        CHECK(find(idx, "P/p0.ppm") >= 0 && find(idx, "Q/q0.ppm") >= 0 && find(idx, "base/0.ppm") >= 0);
        aes_index_free(idx);
    }
    rm_tdir();
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    if (!ctx) return 1;
    RUN(test_update_keeps_folders);
    RUN(test_update_concurrent);
    aes_ctx_free(ctx);
    return tl_report();
}
