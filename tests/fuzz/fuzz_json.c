/* fuzz_json.c -- the strict RFC 8259 DOM parser (aes__json_parse) and every
 * accessor over whatever tree it builds. */
#include "fuzz_common.h"

static void walk(const aes__json *v, int depth) {
    int i, n;
    int64_t iv;
    if (depth > AES_JSON_MAX_DEPTH + 1) abort();   /* the depth limit must hold */
    switch (aes__json_type_of(v)) {
    case AES__JSON_NULL: break;
    case AES__JSON_BOOL: (void)aes__json_bool(v, 0); break;
    case AES__JSON_NUMBER: (void)aes__json_number(v, 0.0); (void)aes__json_int64(v, &iv); break;
    case AES__JSON_STRING: {
        const char *s = aes__json_string(v);
        size_t len = v->u.str.len;
        if (!s || s[len] != 0) abort();            /* strings are NUL-terminated */
        break;
    }
    case AES__JSON_ARRAY:
        n = aes__json_length(v);
        for (i = 0; i < n; i++) walk(aes__json_at(v, i), depth + 1);
        break;
    case AES__JSON_OBJECT:
        n = aes__json_length(v);
        for (i = 0; i < n; i++) {
            const char *k = aes__json_key_at(v, i);
            if (!k) abort();
            /* lookup by name agrees (a key holding \u0000 cannot be named by
             * a C string: the parser keeps such keys, lookups never see them) */
            if (strlen(k) == v->u.con.keys[i].len && aes__json_get(v, k) != aes__json_at(v, i)) abort();
            walk(aes__json_at(v, i), depth + 1);
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes__json *root = NULL;
    aes_status s = aes__json_parse(ctx, (const char *)buf, size, &root);
    fz_check_error(ctx, s, "aes__json_parse");
    if (s == AES_OK) walk(root, 0);
    aes__json_free(root);
    free(buf);
    return 0;
}
