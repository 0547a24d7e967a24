/* fuzz_index.c -- the index file (aes_index_load_memory).  The format ends
 * with a CRC-32 and records its own length, which random mutations almost
 * never get right; so every input is tried twice: as is, and with the length
 * field, the CRC and the end mark patched to be correct, which sends the
 * mutated bytes through all the structural checks behind the checksum.
 * An index that loads must search, re-rank, save and load again. */
#include "fuzz_common.h"

static void use_index(aes_ctx *ctx, aes_index *idx) {
    aes_status s;
    char meta[64];
    size_t i;
    if (idx->dim <= 0) abort();
    for (i = 0; i < idx->count && i < 64; i++) {
        const char *p = aes_index_path(idx, i);
        if (!p || aes_index_find(idx, p) != (int64_t)i) abort();
    }
    (void)aes_index_get_meta(idx, "model", 0, meta, sizeof meta);
    (void)aes_index_check_model(ctx, idx, "clip-x");
    if (idx->dim <= 4096 && idx->count <= 4096) {
        float *q = (float *)malloc(sizeof(float) * (size_t)idx->dim);
        aes_hit hits[8];
        aes_result res[8];
        aes_retrieve_opts o;
        int nh = 0, d;
        void *again = NULL;
        size_t alen = 0;
        for (d = 0; d < idx->dim; d++) q[d] = (float)((d * 13) % 7) - 3.0f + 0.5f;
        if (idx->storage & AES_INDEX_F32) {
            s = aes_index_search(ctx, idx, q, 1, 8, 0, hits, &nh);
            fz_check_error(ctx, s, "aes_index_search");
        }
        if (idx->storage & AES_INDEX_I8) {
            s = aes_index_search(ctx, idx, q, 1, 8, 1, hits, &nh);
            fz_check_error(ctx, s, "aes_index_search int8");
        }
        aes_retrieve_opts_default(&o);
        o.k = 8;
        o.candidates = 16;
        s = aes_index_retrieve(ctx, idx, q, &o, res, &nh);
        fz_check_error(ctx, s, "aes_index_retrieve");
        /* what loads must save and load again */
        s = aes_index_save_memory(ctx, idx, &again, &alen);
        fz_check_error(ctx, s, "aes_index_save_memory");
        if (s == AES_OK) {
            aes_index *idx2 = NULL;
            s = aes_index_load_memory(ctx, again, alen, "resaved", &idx2);
            if (s != AES_OK || idx2->count != idx->count || idx2->dim != idx->dim) {
                fprintf(stderr, "index round trip failed: %s\n", aes_last_error(ctx));
                abort();
            }
            aes_index_free(idx2);
            aes_free(again);
        }
        free(q);
    }
}

static void try_load(aes_ctx *ctx, const uint8_t *buf, size_t size) {
    aes_index *idx = NULL;
    aes_status s = aes_index_load_memory(ctx, buf, size, "fuzz.idx", &idx);
    fz_check_error(ctx, s, "aes_index_load_memory");
    if (s == AES_OK) {
        use_index(ctx, idx);
        aes_index_free(idx);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    try_load(ctx, buf, size);
    if (size >= 72) {
        uint64_t len = size;
        uint32_t crc;
        int i;
        for (i = 0; i < 8; i++) buf[32 + i] = (uint8_t)(len >> (8 * i));
        memcpy(buf + size - 4, "AEND", 4);
        crc = aes__crc32(0, buf, size - 8);
        for (i = 0; i < 4; i++) buf[size - 8 + i] = (uint8_t)(crc >> (8 * i));
        try_load(ctx, buf, size);
    }
    free(buf);
    return 0;
}
