/* fuzz_merges.c -- the BPE merges file reader (aes_tokenizer_load_merges_memory),
 * which also inflates gzip (RFC 1951/1952) when the data starts with 1F 8B.
 * A tokenizer that loads must encode, decode and round-trip its merges. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char text[] = "A photo of a CAT, sitting on 2 mats! &amp; caf\xc3\xa9 \xe7\x8c\xab";
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_tokenizer *tok = NULL;
    /* the low bits of the first byte pick a merge cap: all, 1, 7 or CLIP's */
    static const int caps[4] = {0, 1, 7, AES_TOKENIZER_CLIP_MERGES};
    int cap = size ? caps[data[0] & 3] : 0;
    aes_status s = aes_tokenizer_load_merges_memory(ctx, (const char *)buf, size, cap, &tok);
    fz_check_error(ctx, s, "aes_tokenizer_load_merges_memory");
    if (s == AES_OK) {
        int32_t ids[AES_TOKENIZER_CONTEXT];
        char out[512], *mt = NULL;
        size_t mlen = 0;
        int n = 0;
        aes_tokenizer *again = NULL;
        s = aes_tokenizer_encode(ctx, tok, text, sizeof text - 1, ids, AES_TOKENIZER_CONTEXT, &n);
        fz_check_error(ctx, s, "aes_tokenizer_encode");
        if (s == AES_OK) {
            s = aes_tokenizer_decode(ctx, tok, ids, n, out, sizeof out, NULL);
            fz_check_error(ctx, s, "aes_tokenizer_decode");
        }
        /* What it wrote must read back to the same vocabulary. */
        s = aes_tokenizer_merges_text(ctx, tok, &mt, &mlen);
        fz_check_error(ctx, s, "aes_tokenizer_merges_text");
        if (s == AES_OK) {
            s = aes_tokenizer_load_merges_memory(ctx, mt, mlen, 0, &again);
            if (s != AES_OK || aes_tokenizer_vocab_size(again) != aes_tokenizer_vocab_size(tok)) {
                fprintf(stderr, "merges round trip failed: %s\n", aes_last_error(ctx));
                abort();
            }
            aes_tokenizer_free(again);
            aes_free(mt);
        }
        aes_tokenizer_free(tok);
    }
    free(buf);
    return 0;
}
