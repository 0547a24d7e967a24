/* fuzz_expansions.c -- the query-expansion cache ("query<TAB>rephrased"
 * lines, aes_expansions_parse) and its case/space-insensitive lookup. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_expansions *ex = NULL;
    aes_status s = aes_expansions_parse(ctx, (const char *)buf, size, "fuzz.tsv", &ex);
    fz_check_error(ctx, s, "aes_expansions_parse");
    if (s == AES_OK) {
        /* look up every prefix of every line (up to its first tab) */
        char *text = fz_strndup(data, size), *line = text;
        (void)aes_expansions_find(ex, "");
        (void)aes_expansions_find(ex, "  A  cat ");
        while (line && *line) {
            char *nl = strchr(line, '\n'), *tab;
            if (nl) *nl = 0;
            tab = strchr(line, '\t');
            if (tab) *tab = 0;
            (void)aes_expansions_find(ex, line);
            line = nl ? nl + 1 : NULL;
        }
        free(text);
        aes_expansions_free(ex);
    }
    free(buf);
    return 0;
}
