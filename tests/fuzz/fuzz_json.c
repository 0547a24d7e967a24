/* fuzz_json.c -- the strict RFC 8259 DOM parser (aes_json_parse) and every
 * accessor over whatever tree it builds. */
#include "fuzz_common.h"

static void walk(const aes_json *v, int depth) {
    int i, n;
    int64_t iv;
    if (depth > AES_JSON_MAX_DEPTH + 1) abort();   /* the depth limit must hold */
    switch (aes_json_type_of(v)) {
    case AES_JSON_NULL: break;
    case AES_JSON_BOOL: (void)aes_json_bool(v, 0); break;
    case AES_JSON_NUMBER: (void)aes_json_number(v, 0.0); (void)aes_json_int64(v, &iv); break;
    case AES_JSON_STRING: {
        const char *s = aes_json_string(v);
        size_t len = aes_json_string_len(v);
        if (!s || s[len] != 0) abort();            /* strings are NUL-terminated */
        break;
    }
    case AES_JSON_ARRAY:
        n = aes_json_length(v);
        for (i = 0; i < n; i++) walk(aes_json_at(v, i), depth + 1);
        break;
    case AES_JSON_OBJECT:
        n = aes_json_length(v);
        for (i = 0; i < n; i++) {
            const char *k = aes_json_key_at(v, i);
            if (!k || aes_json_get(v, k) != aes_json_at(v, i)) abort();   /* lookup agrees */
            walk(aes_json_at(v, i), depth + 1);
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_json *root = NULL;
    aes_status s = aes_json_parse(ctx, (const char *)buf, size, &root);
    fz_check_error(ctx, s, "aes_json_parse");
    if (s == AES_OK) walk(root, 0);
    aes_json_free(root);
    free(buf);
    return 0;
}
