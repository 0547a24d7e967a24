/* fuzz_pnm.c -- PPM/PGM/PBM decoding (aes_image_decode_pnm), then the CLIP
 * preprocessing chain on what it decodes (resize, crop, normalise). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_image img;
    aes_status s;
    memset(&img, 0, sizeof img);
    s = aes_image_decode_pnm(ctx, buf, size, &img);
    fz_check_error(ctx, s, "aes_image_decode_pnm");
    if (s == AES_OK) {
        if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4 || !img.pixels) abort();
        if ((uint64_t)img.width * (uint64_t)img.height > FZ_PIXEL_LIMIT) abort();   /* limit honoured */
        if ((size_t)img.width * (size_t)img.height <= 65536) {
            float out[3 * 16 * 16];
            aes_image small;
            s = aes_clip_preprocess(ctx, &img, 16, out);
            fz_check_error(ctx, s, "aes_clip_preprocess");
            memset(&small, 0, sizeof small);
            s = aes_image_resize_bicubic(ctx, &img, 1 + img.width % 7, 1 + img.height % 5, &small);
            fz_check_error(ctx, s, "aes_image_resize_bicubic");
            aes_image_free(&small);
        }
        aes_image_free(&img);
    }
    free(buf);
    return 0;
}
