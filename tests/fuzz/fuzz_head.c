/* fuzz_head.c -- aesthetic head loading (aes_head_load_memory: LAION v1
 * linear, v2 MLP, this library's own heads and their metadata); a head that
 * loads must score an embedding. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_head head;
    aes_status s;
    memset(&head, 0, sizeof head);
    s = aes_head_load_memory(ctx, buf, size, &head);
    fz_check_error(ctx, s, "aes_head_load_memory");
    if (s == AES_OK) {
        int d = head.dim[0], i;
        char id[17];
        if (d <= 0) abort();
        if (d <= 8192) {
            float *emb = (float *)malloc(sizeof(float) * 2 * (size_t)d), scores[2];
            for (i = 0; i < 2 * d; i++) emb[i] = (float)((i * 37) % 11) - 5.0f;
            s = aes_head_score(ctx, &head, emb, 2, scores);
            fz_check_error(ctx, s, "aes_head_score");
            free(emb);
        }
        aes_head_identity(&head, id);
        aes_head_free(&head);
    }
    free(buf);
    return 0;
}
