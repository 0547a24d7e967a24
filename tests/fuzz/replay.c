/* tests/fuzz/replay.c -- runs one libFuzzer harness over its committed seed
 * corpus without libFuzzer, as a `make test` program.
 *
 * The Makefile compiles every tests/fuzz/fuzz_NAME.c with this file and
 * -DFUZZ_NAME='"NAME"' into build/tests/fuzz_NAME.  So `make test` (with any
 * compiler, and under the sanitizer, valgrind-free CI builds) checks that
 * each harness still compiles against the library's current API and that
 * every seed input passes its checks; tools/fuzz.sh does the open-ended
 * mutation runs with clang.  A harness signals a bug by aborting, so a
 * failing seed shows as a crash, which tests/run_tests.sh counts as failed.
 *
 * Prints the summary line tests/run_tests.sh reads:
 *     fuzz_NAME: N passed, 0 failed, 0 skipped
 * where N is the number of seeds replayed (a missing corpus is a failure). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_NAME
#error "compile with -DFUZZ_NAME='\"name\"' (the harness tests/fuzz/fuzz_NAME.c)"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The whole file, in a buffer of exactly its size (so ASan sees a read past
 * the input's end as one); NULL when it cannot be read. */
static uint8_t *replay_read(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
        *size = (size_t)n;
    }
    fclose(f);
    return buf;
}

int main(void) {
    const char *dir = "tests/fuzz/corpus/" FUZZ_NAME;
    char path[1024];
    DIR *d = opendir(dir);
    struct dirent *e;
    int passed = 0, failed = 0;
    if (!d) {
        printf("  FAIL fuzz_%s: no seed corpus at %s (run from the repository root)\n", FUZZ_NAME, dir);
        failed = 1;
    } else {
        while ((e = readdir(d)) != NULL) {
            size_t size = 0;
            uint8_t *buf;
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            buf = replay_read(path, &size);
            if (!buf) {
                printf("  FAIL fuzz_%s: cannot read %s\n", FUZZ_NAME, path);
                failed++;
                continue;
            }
            fflush(stdout);
            (void)LLVMFuzzerTestOneInput(buf, size);   /* aborts on a bug */
            free(buf);
            passed++;
        }
        closedir(d);
        if (passed == 0 && failed == 0) {
            printf("  FAIL fuzz_%s: the seed corpus %s is empty\n", FUZZ_NAME, dir);
            failed = 1;
        }
    }
    printf("fuzz_%s: %d passed, %d failed, 0 skipped\n", FUZZ_NAME, passed, failed);
    return failed ? 1 : 0;
}
