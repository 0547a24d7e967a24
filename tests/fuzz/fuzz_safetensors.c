/* fuzz_safetensors.c -- the safetensors container (aes_safetensors_load_memory):
 * header length, strict JSON header, dtypes, shapes, data_offsets, metadata,
 * then every accessor and the float conversion of every (small) tensor. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_safetensors *st = NULL;
    aes_status s = aes_safetensors_load_memory(ctx, buf, size, 0, &st);
    fz_check_error(ctx, s, "aes_safetensors_load_memory");
    if (s == AES_OK) {
        int i, n = aes_safetensors_count(st);
        for (i = 0; i < n; i++) {
            const aes_tensor_view *t = aes_safetensors_at(st, i);
            if (!t || aes_safetensors_find(st, t->name) != t) abort();   /* lookup must agree */
            if ((const uint8_t *)t->data < buf || t->nbytes > size ||
                (const uint8_t *)t->data + t->nbytes > buf + size)
                abort();                                                  /* view inside the buffer */
            if (t->numel <= 4096) {
                float *f = (float *)malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
                aes_status c = aes_tensor_to_f32(ctx, t, f, (size_t)t->numel);
                fz_check_error(ctx, c, "aes_tensor_to_f32");
                free(f);
            }
        }
        for (i = 0;; i++) {
            const char *k, *v;
            if (!aes_safetensors_metadata_at(st, i, &k, &v)) break;
            if (aes_safetensors_metadata(st, k) == NULL) abort();
        }
        aes_safetensors_close(st);
    }
    /* The copying variant must behave the same. */
    st = NULL;
    if (aes_safetensors_load_memory(ctx, buf, size, 1, &st) != s) abort();
    aes_safetensors_close(st);
    free(buf);
    return 0;
}
