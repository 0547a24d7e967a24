/* fuzz_tokenize.c -- encoding arbitrary bytes (invalid UTF-8, NULs, HTML
 * entities, huge words) with a fixed tokenizer, and decoding arbitrary ids.
 * The tokenizer is CLIP's real merges list when ../shared is present (or
 * AES_FUZZ_MERGES names a merges file), else one trained on a few captions. */
#include "fuzz_common.h"

static aes_tokenizer *fz_tokenizer(aes_ctx *ctx) {
    static aes_tokenizer *tok;
    if (!tok) {
        static const char *const captions[] = {
            "a photo of a cat", "a photo of a dog", "a painting of a mountain lake at sunset",
            "two cats sleeping on a red sofa", "close-up of a flower, shallow depth of field",
            "people walking in the rain", "caf\xc3\xa9 au lait", "\xe7\x8c\xab\xe3\x81\xa8\xe7\x8a\xac",
        };
        const char *path = getenv("AES_FUZZ_MERGES");
        if (!path) path = "../shared/data/bpe_simple_vocab_16e6.txt";
        if (aes_tokenizer_load_merges(ctx, path, &tok) != AES_OK) {
            tok = NULL;
            if (aes_tokenizer_train(ctx, captions, (int)(sizeof captions / sizeof *captions), 200, &tok) != AES_OK)
                abort();
        }
        aes_clear_error(ctx);
    }
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    const aes_tokenizer *tok = fz_tokenizer(ctx);
    uint8_t *buf = fz_copy(data, size);
    int32_t ids[AES_TOKENIZER_CONTEXT], *raw = NULL;
    size_t nraw = 0, i;
    int n = 0, ctxlen = 2 + (size ? data[0] % (AES_TOKENIZER_CONTEXT - 1) : 0);
    char out[1024];
    aes_status s;

    s = aes_tokenizer_encode(ctx, tok, size ? (const char *)buf : NULL, size, ids, ctxlen, &n);
    fz_check_error(ctx, s, "aes_tokenizer_encode");
    if (s == AES_OK) {
        if (n < 2 || n > ctxlen || ids[0] != (aes_tokenizer_vocab_size(tok) - 2) || ids[n - 1] != (aes_tokenizer_vocab_size(tok) - 1))
            abort();
        s = aes_tokenizer_decode(ctx, tok, ids, n, out, sizeof out, NULL);
        fz_check_error(ctx, s, "aes_tokenizer_decode");
    }
    /* raw ids: size first, then fill; every id must be in the vocabulary */
    s = aes_tokenizer_encode_raw(ctx, tok, size ? (const char *)buf : NULL, size, NULL, 0, &nraw);
    fz_check_error(ctx, s, "aes_tokenizer_encode_raw");
    if (s == AES_OK && nraw <= 1u << 16) {
        size_t again = 0;
        raw = (int32_t *)malloc(sizeof(int32_t) * (nraw ? nraw : 1));
        s = aes_tokenizer_encode_raw(ctx, tok, size ? (const char *)buf : NULL, size, raw, nraw, &again);
        if (s != AES_OK || again != nraw) abort();
        for (i = 0; i < nraw; i++)
            if (raw[i] < 0 || raw[i] >= aes_tokenizer_vocab_size(tok)) abort();
        free(raw);
    }
    /* the input read as ids: out-of-range ids are an error, not a crash */
    if (size >= 4) {
        int nid = (int)(size / 4);
        int32_t *arb = (int32_t *)malloc(sizeof(int32_t) * (size_t)nid);
        memcpy(arb, data, sizeof(int32_t) * (size_t)nid);
        s = aes_tokenizer_decode(ctx, tok, arb, nid, out, 1 + data[0] % sizeof out, NULL);
        fz_check_error(ctx, s, "aes_tokenizer_decode");
        free(arb);
    }
    free(buf);
    return 0;
}
