/* tests/fuzz/fuzz_common.h -- what every libFuzzer harness shares.
 *
 * Each harness is one translation unit that compiles the whole library
 * (AESALIGN_IMPLEMENTATION) and defines LLVMFuzzerTestOneInput for one
 * parser.  tools/fuzz.sh builds them with
 *     clang -fsanitize=fuzzer,address,undefined
 * and runs each for a bounded time.  What counts as a bug:
 *   - any sanitizer report (out-of-bounds read or write, use after free,
 *     leak, signed overflow, misaligned access, ...),
 *   - a crash, abort or timeout,
 *   - an allocation past libFuzzer's -malloc_limit_mb (the harness lowers the
 *     library's own AES_LIMIT_ALLOC_BYTES well below it, so only memory the
 *     library takes WITHOUT going through the limit can trip it),
 *   - a failure without a message: every error must say what is wrong
 *     (fz_check_error below traps when aes_last_error() is empty).
 */
#ifndef AES_FUZZ_COMMON_H
#define AES_FUZZ_COMMON_H

/* Each harness compiles the library itself, unless AES_FUZZ_SEPARATE_LIB
 * says it is linked in from one object (tools/fuzz.sh builds it once for
 * all the harnesses: the header takes far longer to compile with the
 * sanitizers than a harness does). */
#ifndef AES_FUZZ_SEPARATE_LIB
#define AESALIGN_IMPLEMENTATION
#endif
#include "aesalign.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each harness uses some of these helpers; inline keeps compilers quiet
 * about the others (-Wunused-function, an error in the strict builds). */
#define AES_FUZZ_HELPER inline

/* Bounds for hostile input: 64 MiB per allocation, 1 Mpixel images. */
#define FZ_ALLOC_LIMIT  (64u << 20)
#define FZ_PIXEL_LIMIT  (1u << 20)

/* One context for the whole run (contexts are cheap, but the harness is
 * called millions of times); each input starts with a clean error. */
static AES_FUZZ_HELPER aes_ctx *fz_ctx(void) {
    static aes_ctx *ctx;
    if (!ctx) {
        ctx = aes_ctx_create();
        if (!ctx) abort();
        aes_limit_set(ctx, AES_LIMIT_ALLOC_BYTES, FZ_ALLOC_LIMIT);
        aes_limit_set(ctx, AES_LIMIT_IMAGE_PIXELS, FZ_PIXEL_LIMIT);
        aes_limit_set(ctx, AES_LIMIT_FILE_BYTES, FZ_ALLOC_LIMIT);
    }
    aes_clear_error(ctx);
    return ctx;
}

/* A failed call must leave a message behind. */
static AES_FUZZ_HELPER void fz_check_error(aes_ctx *ctx, aes_status st, const char *what) {
    if (st != AES_OK && aes_last_error(ctx)[0] == 0) {
        fprintf(stderr, "fuzz: %s failed with status %d (%s) but no message\n", what, (int)st,
                aes_status_name(st));
        abort();
    }
}

/* A NUL-terminated copy of the input (for APIs that take C strings) that
 * also lets ASan see reads one past the end of the original length. */
static AES_FUZZ_HELPER char *fz_strndup(const uint8_t *data, size_t size) {
    char *s = (char *)malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* An exact-size heap copy (ASan flags a read one byte past it). */
static AES_FUZZ_HELPER uint8_t *fz_copy(const uint8_t *data, size_t size) {
    uint8_t *p = (uint8_t *)malloc(size ? size : 1);
    if (!p) abort();
    p[0] = 0;   /* an empty input still hands over initialised memory */
    if (size) memcpy(p, data, size);
    return p;
}

/* Splits "[u16 little-endian n][n bytes of text][rest]" (the layout of the
 * harnesses that take a config.json beside a file).  Returns the text as a
 * malloc'd C string or NULL when n == 0; *rest / *rest_len get the rest. */
static AES_FUZZ_HELPER char *fz_split_text(const uint8_t *data, size_t size, const uint8_t **rest, size_t *rest_len) {
    size_t n;
    char *text = NULL;
    if (size < 2) { *rest = data + size; *rest_len = 0; return NULL; }
    n = (size_t)data[0] | ((size_t)data[1] << 8);
    if (n > size - 2) n = size - 2;
    if (n) text = fz_strndup(data + 2, n);
    *rest = data + 2 + n;
    *rest_len = size - 2 - n;
    return text;
}

#endif
