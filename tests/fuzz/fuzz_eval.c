/* fuzz_eval.c -- the `aesalign eval` TSV reader (aes_eval_tsv): result,
 * rel, aesthetic, score and pair records, with K from the first byte. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_eval_report rep;
    int k = size ? (int)(data[0] % 40) - 2 : 10;     /* includes 0 and negatives */
    aes_status s = aes_eval_tsv(ctx, (const char *)buf, size, "fuzz.tsv", k, &rep);
    fz_check_error(ctx, s, "aes_eval_tsv");
    free(buf);
    return 0;
}
