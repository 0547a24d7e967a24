/* test_atomic.c - no lost data: a writer killed with SIGKILL part-way
 * through aes_write_file_atomic / aes_index_save leaves the previous file
 * byte-identical, the temporary file it leaves behind does not get in the
 * way of the next write, and the next write (the "next run") succeeds.
 *
 * A child process writes; the parent watches for the child's temporary file
 * ("<path>.tmp-<pid>-<n>", created exclusively beside the target) and kills
 * the child as soon as it holds some bytes, i.e. while the data is being
 * written.
 * When the rename wins the race instead, the target must be the complete
 * new file; either way it is never a mix.  The kill is retried until it
 * has landed mid-write at least once. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define FILE_BYTES ((size_t)2 << 20)   /* 2 MiB: long enough to be caught mid-write */
#define MAX_TRIES 40

static char g_dir[256];


static void path_in_dir(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", g_dir, name); }

/* Version `v` of the test file: every byte depends on v and its position. */
static unsigned char *make_version(unsigned v, size_t n) {
    unsigned char *p = (unsigned char *)malloc(n);
    uint32_t x = 0x9E3779B9u * (v + 1);
    size_t i;
    if (!p) exit(1);
    for (i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

static int file_equals(const char *path, const unsigned char *want, size_t n) {
    aes_ctx *ctx = tl_ctx();
    void *got = NULL;
    size_t len = 0;
    int same = aes_read_file(ctx, path, &got, &len) == AES_OK && len == n && !memcmp(got, want, n);
    aes_free(got);
    aes_ctx_free(ctx);
    return same;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void sleep_us(long us) {
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

/* The writer: `what` 0 = aes_write_file_atomic(data), 1 = aes_index_save
 * of `idx`.  It says it finished through the pipe, then waits to be killed
 * (it never exits on its own: the parent always kills it). */
static void child_write(int what, const char *path, const unsigned char *data, size_t n, const aes_index *idx,
                        int done_fd) {
    aes_ctx *ctx = aes_ctx_create();   /* a fresh context: no threads cross fork() */
    aes_status st = AES_ERR_NOMEM;
    char c;
    if (ctx) st = what == 0 ? aes_write_file_atomic(ctx, path, data, n) : aes_index_save(ctx, idx, path);
    c = st == AES_OK ? 'd' : 'e';
    if (write(done_fd, &c, 1) != 1) _exit(3);
    for (;;) pause();
}

/* Forks a writer and SIGKILLs it once its temporary file exists (or once it
 * has finished).  Returns 1 when the kill landed mid-write (the temporary
 * file was left behind), 0 when the write had completed, -1 on a failure
 * of the test itself.  *tmp_out receives the temporary's name. */
static int write_and_kill(int what, const char *path, const unsigned char *data, size_t n, const aes_index *idx,
                          char *tmp_out, size_t tmp_size) {
    int fds[2], status = 0, mid = -1;
    pid_t pid;
    double t0 = tl_now();
    char c = 0;
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid = fork();
    if (pid < 0) { close(fds[0]); close(fds[1]); return -1; }
    if (pid == 0) {
        close(fds[0]);
        child_write(what, path, data, n, idx, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    (void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
    snprintf(tmp_out, tmp_size, "%s.tmp-%ld-0", path, (long)pid);
    for (;;) {
        struct stat sb;
        /* once it holds some bytes: part-way through the data */
        if (stat(tmp_out, &sb) == 0 && sb.st_size > 0) { kill(pid, SIGKILL); break; }
        if (read(fds[0], &c, 1) == 1) { kill(pid, SIGKILL); break; }
        if (tl_now() - t0 > 20) { kill(pid, SIGKILL); break; }   /* never: a stuck child */
        sleep_us(20);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    close(fds[0]);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) return -1;
    if (c == 'e') return -1;
    /* the temporary is still there: the rename had not happened */
    mid = exists(tmp_out) ? 1 : 0;
    return mid;
}

static void test_kill_atomic_writer(void) {
    char path[512], tmp[600];
    unsigned char *v0 = make_version(0, FILE_BYTES), *v1 = make_version(1, FILE_BYTES);
    unsigned char *v2 = make_version(2, FILE_BYTES);
    aes_ctx *ctx = tl_ctx();
    int tries, killed_mid = 0, completed = 0, r;
    path_in_dir(path, sizeof path, "data.bin");
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, v0, FILE_BYTES));
    for (tries = 0; tries < MAX_TRIES && !killed_mid; tries++) {
        r = write_and_kill(0, path, v1, FILE_BYTES, NULL, tmp, sizeof tmp);
        CHECK_MSG(r >= 0, "the writer did not die of SIGKILL, or its write failed");
        if (r < 0) break;
        if (r == 1) {
            /* killed mid-write: the old file, byte for byte */
            killed_mid++;
            CHECK_MSG(file_equals(path, v0, FILE_BYTES), "try %d: the previous file changed under a killed writer",
                      tries);
            /* the leftover temporary does not stop the next run */
            CHECK(exists(tmp));
            CHECK_OK(ctx, aes_write_file_atomic(ctx, path, v2, FILE_BYTES));
            CHECK(file_equals(path, v2, FILE_BYTES));
            remove(tmp);
        } else {
            /* the rename won the race: the new file, complete */
            completed++;
            CHECK_MSG(file_equals(path, v1, FILE_BYTES), "try %d: the file is not the complete new one", tries);
            CHECK(!exists(tmp));
            CHECK_OK(ctx, aes_write_file_atomic(ctx, path, v0, FILE_BYTES));   /* back to v0 */
        }
    }
    CHECK_MSG(killed_mid > 0, "no kill landed mid-write in %d tries (%d completed)", tries, completed);
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  %d kill(s) mid-write, %d after the rename\n", killed_mid, completed);
    remove(path);
    free(v0);
    free(v1);
    free(v2);
    aes_ctx_free(ctx);
}

/* A stale temporary with the very name the next writer would pick (same
 * pid, attempt 0: what a killed process whose pid is reused leaves) is
 * stepped around, not truncated or renamed over the target. */
static void test_stale_temp_same_name(void) {
    char path[512], stale[600];
    static const char junk[] = "half-written junk from a killed writer";
    unsigned char *v = make_version(7, 4096);
    aes_ctx *ctx = tl_ctx();
    void *got = NULL;
    size_t len = 0;
    path_in_dir(path, sizeof path, "stale.bin");
    snprintf(stale, sizeof stale, "%s.tmp-%ld-0", path, (long)getpid());
    CHECK_OK(ctx, aes_write_file_atomic(ctx, stale, junk, sizeof junk));   /* plant it */
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, v, 4096));
    CHECK(file_equals(path, v, 4096));
    CHECK_OK(ctx, aes_read_file(ctx, stale, &got, &len));
    CHECK(len == sizeof junk && got && !memcmp(got, junk, len));   /* left alone */
    aes_free(got);
    remove(stale);
    remove(path);
    free(v);
    aes_ctx_free(ctx);
}

static aes_index *make_index(aes_ctx *ctx, int rows, int dim, int first) {
    aes_index *idx = NULL;
    float *e = (float *)malloc(sizeof(float) * (size_t)dim);
    int r, d;
    char p[64];
    if (aes_index_create(ctx, dim, AES_INDEX_F32 | AES_INDEX_I8, "clip-test", "", &idx) != AES_OK) exit(1);
    for (r = first; r < first + rows; r++) {
        for (d = 0; d < dim; d++) e[d] = (float)((r * 31 + d * 17) % 23) - 11.0f + 0.5f;
        snprintf(p, sizeof p, "img/%06d.jpg", r);
        if (aes_index_add(ctx, idx, p, 1000u + (unsigned)r, (int64_t)r, e, 5.0f) != AES_OK) exit(1);
    }
    free(e);
    return idx;
}

static void test_kill_index_writer(void) {
    enum { DIM = 256, ROWS0 = 300, ROWS1 = 2000 };
    char path[512], tmp[600];
    aes_ctx *ctx = tl_ctx();
    aes_index *old = make_index(ctx, ROWS0, DIM, 0), *bigger = make_index(ctx, ROWS1, DIM, 0), *got = NULL;
    void *old_bytes = NULL;
    size_t old_len = 0;
    int tries, killed_mid = 0, r;
    path_in_dir(path, sizeof path, "photos.aesidx");
    CHECK_OK(ctx, aes_index_save(ctx, old, path));
    CHECK_OK(ctx, aes_read_file(ctx, path, &old_bytes, &old_len));
    for (tries = 0; tries < MAX_TRIES && !killed_mid; tries++) {
        r = write_and_kill(1, path, NULL, 0, bigger, tmp, sizeof tmp);
        CHECK_MSG(r >= 0, "the index writer did not die of SIGKILL, or its save failed");
        if (r < 0) break;
        if (r == 1) {
            killed_mid++;
            CHECK_MSG(file_equals(path, (const unsigned char *)old_bytes, old_len),
                      "try %d: the previous index changed under a killed writer", tries);
            CHECK_OK(ctx, aes_index_load(ctx, path, &got));
            CHECK(got && got->count == ROWS0 && got->dim == DIM);
            aes_index_free(got);
            got = NULL;
        } else {
            CHECK_OK(ctx, aes_index_load(ctx, path, &got));
            CHECK(got && got->count == ROWS1);
            aes_index_free(got);
            got = NULL;
            CHECK_OK(ctx, aes_index_save(ctx, old, path));   /* back to the old one */
        }
    }
    CHECK_MSG(killed_mid > 0, "no kill landed mid-write in %d tries", tries);
    /* the next run: load what is there, add to it, save over the leftover */
    CHECK_OK(ctx, aes_index_load(ctx, path, &got));
    if (got) {
        float e[DIM];
        int d;
        for (d = 0; d < DIM; d++) e[d] = (float)(d % 5) - 2.0f;
        CHECK_OK(ctx, aes_index_add(ctx, got, "img/new.jpg", 1, 1, e, 6.0f));
        CHECK_OK(ctx, aes_index_save(ctx, got, path));
        aes_index_free(got);
        got = NULL;
        CHECK_OK(ctx, aes_index_load(ctx, path, &got));
        CHECK(got && got->count == ROWS0 + 1 && aes_index_find(got, "img/new.jpg") == ROWS0);
        aes_index_free(got);
    }
    remove(tmp);
    remove(path);
    aes_free(old_bytes);
    aes_index_free(old);
    aes_index_free(bigger);
    aes_ctx_free(ctx);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    mkdir("build", 0777);
    snprintf(g_dir, sizeof g_dir, "build/tmp_test_atomic_%ld", (long)getpid());
    mkdir(g_dir, 0777);
    RUN(test_kill_atomic_writer);
    RUN(test_stale_temp_same_name);
    RUN(test_kill_index_writer);
    rmdir(g_dir);
    return tl_report();
}
