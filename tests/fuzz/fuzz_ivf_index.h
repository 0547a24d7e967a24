/* tests/fuzz/fuzz_ivf_index.h -- the index the IVF harness loads its inputs
 * against, and make_seeds.c builds the IVF seeds on: 64 rows of dim 8,
 * fp32 + int8, from a fixed generator, so the seeds' fingerprints match it
 * and mutated inputs reach every check behind the fingerprint's. */
#ifndef AES_FUZZ_IVF_INDEX_H
#define AES_FUZZ_IVF_INDEX_H

static aes_index *fz_ivf_index(aes_ctx *ctx) {
    aes_index *idx = NULL;
    uint64_t st = 12345;
    float e[8];
    char path[16];
    int r, d;
    if (aes_index_create(ctx, 8, AES_INDEX_F32 | AES_INDEX_I8, "clip-x", "", &idx) != AES_OK) return NULL;
    for (r = 0; r < 64; r++) {
        for (d = 0; d < 8; d++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            /* four clusters, so the k-means has something to find */
            e[d] = (float)((st >> 40) % 1000) / 4000.0f + (d == r % 4 ? 1.0f : 0.0f);
        }
        snprintf(path, sizeof path, "r%d", r);
        if (aes_index_add(ctx, idx, path, 0, 0, e, NAN) != AES_OK) {
            aes_index_free(idx);
            return NULL;
        }
    }
    return idx;
}

#endif
