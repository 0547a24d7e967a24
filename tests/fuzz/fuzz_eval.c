/* fuzz_eval.c -- the `aesalign eval` TSV reader (world_eval_tsv in
 * tools/world.h): result, rel, aesthetic, score and pair records, with K
 * from the first byte.  Its messages are in world_last_error(). */
#include "fuzz_common.h"
#define WORLD_IMPLEMENTATION
#include "tools/world.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    world_eval_report rep;
    int k = size ? (int)(data[0] % 40) - 2 : 10;     /* includes 0 and negatives */
    aes_status s;
    world_clear_error();
    s = world_eval_tsv(ctx, (const char *)buf, size, "fuzz.tsv", k, &rep);
    if (s != AES_OK && world_last_error()[0] == 0) {
        fprintf(stderr, "fuzz: world_eval_tsv failed with status %d (%s) but no message\n", (int)s,
                aes_status_name(s));
        abort();
    }
    free(buf);
    return 0;
}
