/* fuzz_exif.c -- JPEG EXIF parsing (aes_jpeg_exif: segment walk, TIFF IFDs,
 * offsets into the buffer), then aes_image_orient with what it found on a
 * small image. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    aes_exif ex;
    aes_image img;
    size_t k;
    if (aes_jpeg_exif(buf, size, &ex) != AES_OK) abort();
    if (ex.orientation < 0 || ex.orientation > 8) abort();
    if (memchr(ex.datetime_original, 0, sizeof ex.datetime_original) == NULL) abort();
    if (ex.datetime_original[0] && strlen(ex.datetime_original) != 19) abort();
    memset(&img, 0, sizeof img);
    if (aes_image_alloc(ctx, &img, 3 + (int)(size % 5), 2 + (int)(size % 3), 1 + (int)(size % 3)) == AES_OK) {
        int w = img.width, h = img.height;
        for (k = 0; k < (size_t)w * (size_t)h * (size_t)img.channels; k++) img.pixels[k] = (uint8_t)k;
        if (aes_image_orient(ctx, &img, ex.orientation) != AES_OK) abort();
        if (ex.orientation >= 5 ? (img.width != h || img.height != w) : (img.width != w || img.height != h)) abort();
        aes_image_free(&img);
    }
    free(buf);
    return 0;
}
