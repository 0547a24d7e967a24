/* fuzz_ivf.c -- the IVF file (aes_ivf_load_memory) against a fixed index
 * (fuzz_ivf_index.h).  As in fuzz_index.c every input is tried twice: as
 * is, and with the length field, the CRC and the end mark patched to be
 * correct, so mutated bytes reach the structural checks behind the
 * checksum.  An IVF that loads must search (a few lists and all of them,
 * which must find as many rows as exact search), save and load again. */
#include "fuzz_common.h"
#include "fuzz_ivf_index.h"

static void use_ivf(aes_ctx *ctx, const aes_index *idx, aes_ivf *ivf) {
    float q[8];
    aes_hit a[8], b[8];
    int d, na = 0, nb = 0, i;
    void *again = NULL;
    size_t alen = 0;
    aes_status s;
    for (d = 0; d < 8; d++) q[d] = (float)((d * 13) % 7) - 3.0f + 0.5f;
    s = aes_ivf_search(ctx, ivf, idx, q, 1, 8, 2, a, &na);
    fz_check_error(ctx, s, "aes_ivf_search");
    s = aes_ivf_search(ctx, ivf, idx, q, 1, 8, ivf->nlist, a, &na);
    fz_check_error(ctx, s, "aes_ivf_search all lists");
    /* every list: as many hits as exact search, distinct rows in range
     * (the order may differ from it only between int8 ties) */
    if (s == AES_OK && aes_index_search(ctx, idx, q, 1, 8, 1, b, &nb) == AES_OK) {
        if (na != nb) abort();
        for (i = 0; i < na; i++) {
            if (a[i].row < 0 || (size_t)a[i].row >= idx->count) abort();
            for (d = 0; d < i; d++)
                if (a[d].row == a[i].row) abort();
        }
    }
    s = aes_ivf_save_memory(ctx, ivf, &again, &alen);
    fz_check_error(ctx, s, "aes_ivf_save_memory");
    if (s == AES_OK) {
        aes_ivf *v2 = NULL;
        s = aes_ivf_load_memory(ctx, again, alen, "resaved", idx, &v2);
        if (s != AES_OK || v2->nlist != ivf->nlist ||
            memcmp(v2->ids, ivf->ids, ivf->count * sizeof *ivf->ids) != 0) {
            fprintf(stderr, "IVF round trip failed: %s\n", aes_last_error(ctx));
            abort();
        }
        aes_ivf_free(v2);
        aes_free(again);
    }
}

static void try_load(aes_ctx *ctx, const aes_index *idx, const uint8_t *buf, size_t size) {
    aes_ivf *ivf = NULL;
    aes_status s = aes_ivf_load_memory(ctx, buf, size, "fuzz.ivf", idx, &ivf);
    fz_check_error(ctx, s, "aes_ivf_load_memory");
    if (s == AES_OK) {
        use_ivf(ctx, idx, ivf);
        aes_ivf_free(ivf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static aes_index *idx;
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf;
    if (!idx && !(idx = fz_ivf_index(ctx))) abort();
    buf = fz_copy(data, size);
    try_load(ctx, idx, buf, size);
    if (size >= 72) {
        uint64_t len = size;
        uint32_t crc;
        int i;
        for (i = 0; i < 8; i++) buf[40 + i] = (uint8_t)(len >> (8 * i));
        memcpy(buf + size - 4, "AEND", 4);
        crc = aes__crc32(0, buf, size - 8);
        for (i = 0; i < 4; i++) buf[size - 8 + i] = (uint8_t)(crc >> (8 * i));
        try_load(ctx, idx, buf, size);
    }
    free(buf);
    return 0;
}
