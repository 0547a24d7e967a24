/* fuzz_pairs.c -- preference pair files (TSV with backslash escapes,
 * aes_pair_set_parse).  What parses must format and parse back to the same
 * set. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_pair_set *set = NULL, *again = NULL;
    aes_status s;
    if (aes_pair_set_create(ctx, &set) != AES_OK) abort();
    s = aes_pair_set_parse(ctx, set, (const char *)buf, size, "fuzz.tsv");
    fz_check_error(ctx, s, "aes_pair_set_parse");
    if (s == AES_OK) {
        char *text = NULL;
        size_t len = 0;
        int i;
        s = aes_pair_set_format(ctx, set, &text, &len);
        fz_check_error(ctx, s, "aes_pair_set_format");
        if (s == AES_OK) {
            if (aes_pair_set_create(ctx, &again) != AES_OK) abort();
            s = aes_pair_set_parse(ctx, again, text, len, "formatted");
            if (s != AES_OK || again->npairs != set->npairs) {
                fprintf(stderr, "pair round trip failed: %s\n", aes_last_error(ctx));
                abort();
            }
            for (i = 0; i < set->npairs; i++) {
                const aes_pair_rec *a = &set->pairs[i], *b = &again->pairs[i];
                if (strcmp(set->queries[a->query], again->queries[b->query]) ||
                    strcmp(set->paths[a->preferred], again->paths[b->preferred]) ||
                    strcmp(set->paths[a->rejected], again->paths[b->rejected]) || a->weight != b->weight) {
                    fprintf(stderr, "pair %d differs after a round trip\n", i);
                    abort();
                }
            }
            aes_pair_set_free(again);
            aes_free(text);
        }
    }
    aes_pair_set_free(set);
    free(buf);
    return 0;
}
