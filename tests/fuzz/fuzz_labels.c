/* fuzz_labels.c -- the label readers: CSV (score / h1..h10 / path columns,
 * quoted fields; aes_labels_parse_csv) and AVA.txt (aes_labels_parse_ava),
 * both on every input. */
#include "fuzz_common.h"

static void check(const aes_labels *l) {
    int i, k;
    if (l->n < 0 || (l->n > 0 && !l->score)) abort();
    for (i = 0; i < l->n; i++) {
        (void)l->score[i];
        if (l->has_hist)
            for (k = 0; k < AES_SCORE_BINS; k++) (void)l->hist[i * AES_SCORE_BINS + k];
        if (l->paths && l->paths[i]) (void)strlen(l->paths[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_labels l;
    aes_status s;
    memset(&l, 0, sizeof l);
    s = aes_labels_parse_csv(ctx, &l, (const char *)buf, size, "fuzz.csv");
    fz_check_error(ctx, s, "aes_labels_parse_csv");
    if (s == AES_OK) check(&l);
    aes_labels_free(&l);
    memset(&l, 0, sizeof l);
    aes_clear_error(ctx);
    s = aes_labels_parse_ava(ctx, &l, (const char *)buf, size, "AVA.txt");
    fz_check_error(ctx, s, "aes_labels_parse_ava");
    if (s == AES_OK) check(&l);
    aes_labels_free(&l);
    free(buf);
    return 0;
}
