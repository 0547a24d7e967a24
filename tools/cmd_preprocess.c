/* aesalign preprocess: CLIP's image preprocessing into a raw float32 tensor.
 *
 *   aesalign preprocess --size N IMAGE --out FILE
 *
 * writes [3, N, N] float32 little-endian (CHW planes, normalised with CLIP's
 * mean / std) atomically: the same numbers as OpenAI's clip._transform(N)
 * on a PIL image (bit-exact for PPM/PGM input; JPEG decoders differ from
 * PIL's libjpeg by a level here and there, so JPEG input is close but not
 * bit-exact).  Read it back with numpy:
 *     np.fromfile(FILE, "<f4").reshape(3, N, N)
 */
#include "cli.h"
#include <limits.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>
#endif
#ifdef AES_HAVE_WEBP
#include <webp/decode.h>
#endif

/* Loads any image the CLI understands: PPM/PGM through the library, and
 * JPEG, PNG, BMP, GIF, TGA, ... through stb_image when the build has it
 * (-DAES_HAVE_STB, Debian's libstb-dev).  Gray (+alpha) images come back
 * with 1 channel, colour (+alpha) images with 3: alpha is dropped, as PIL's
 * convert("RGB") does.  A JPEG's EXIF orientation is applied (phones store
 * their photos sideways and say so in the EXIF only), so every command sees
 * the picture upright.  WebP comes through libwebp (-DAES_HAVE_WEBP,
 * Debian's libwebp-dev).  Returns 0 (AES_OK) or an aes_status with the
 * reason in aes_last_error(ctx).
 * Declared in cli.h; every command that reads images uses it. */

static int cli_is_pnm(const unsigned char *b, size_t len) {
    return len >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6';
}

int cli_load_image(aes_ctx *ctx, const char *path, aes_image *out) {
    return cli_load_photo(ctx, path, out, NULL);
}

int cli_load_photo(aes_ctx *ctx, const char *path, aes_image *out, cli_photo_info *info) {
    void *data = NULL;
    size_t len = 0;
    const unsigned char *b;
    aes_status st;
    aes_exif exif;
    if (!out) return AES_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (info) memset(info, 0, sizeof *info);
    if ((st = aes_read_file(ctx, path, &data, &len)) != AES_OK) return st;
    b = (const unsigned char *)data;
    aes_jpeg_exif(b, len, &exif);
    if (info) {
        info->hash = aes_content_hash(b, len);
        info->orientation = exif.orientation;
        memcpy(info->exif_date, exif.datetime_original, sizeof info->exif_date);
    }
    if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) {
#ifdef AES_HAVE_WEBP
        int w = 0, h = 0;
        aes_clear_error(ctx);
        if (!WebPGetInfo(b, len, &w, &h)) {
            aes_free(data);
            fprintf(stderr, "aesalign: %s: not a WebP image libwebp can read\n", path);
            return AES_ERR_FORMAT;
        }
        if ((st = aes_image_alloc(ctx, out, w, h, 3)) != AES_OK) { aes_free(data); return st; }
        if (!WebPDecodeRGBInto(b, len, out->pixels, (size_t)w * (size_t)h * 3, w * 3)) {
            aes_free(data);
            aes_image_free(out);
            fprintf(stderr, "aesalign: %s: WebP decoding failed\n", path);
            return AES_ERR_FORMAT;
        }
        aes_free(data);
        return AES_OK;
#else
        aes_free(data);
        aes_clear_error(ctx);
        fprintf(stderr, "aesalign: %s: WebP needs Debian's libwebp-dev: apt-get install libwebp-dev (then rebuild)\n", path);
        return AES_ERR_UNSUPPORTED;
#endif
    }
    if (cli_is_pnm(b, len)) {
        /* through the library's loader, so messages name the file */
        aes_free(data);
        return aes_image_load(ctx, path, out);
    }
    /* Other formats: the reason is printed here (stb_image has no context
     * to carry it) and the context's error is cleared. */
    aes_clear_error(ctx);
#ifdef AES_HAVE_STB
    {
        int w = 0, h = 0, n = 0, want;
        unsigned char *pixels;
        if (len > (size_t)INT_MAX || !stbi_info_from_memory(b, (int)len, &w, &h, &n)) {
            aes_free(data);
            fprintf(stderr, "aesalign: %s: not an image stb_image can read (%s)\n", path, stbi_failure_reason());
            return AES_ERR_FORMAT;
        }
        /* size checked before decoding: a small file can claim a huge image */
        want = n <= 2 ? 1 : 3;
        if ((st = aes_image_alloc(ctx, out, w, h, want)) != AES_OK) {
            aes_free(data);
            return st;
        }
        pixels = stbi_load_from_memory(b, (int)len, &w, &h, &n, want);
        aes_free(data);
        if (!pixels || w != out->width || h != out->height) {
            if (pixels) stbi_image_free(pixels);
            aes_image_free(out);
            fprintf(stderr, "aesalign: %s: decoding failed (%s)\n", path, stbi_failure_reason());
            return AES_ERR_FORMAT;
        }
        memcpy(out->pixels, pixels, (size_t)w * (size_t)h * (size_t)want);
        stbi_image_free(pixels);
        return aes_image_orient(ctx, out, exif.orientation);
    }
#else
    if ((len >= 8 && !memcmp(b, "\x89PNG", 4)) || (len >= 3 && b[0] == 0xFF && b[1] == 0xD8))
        fprintf(stderr, "aesalign: %s: JPEG/PNG need Debian's libstb-dev: apt-get install libstb-dev "
                        "(then rebuild), or convert the image to PPM\n", path);
    else
        fprintf(stderr, "aesalign: %s: not a PPM/PGM image (other formats need Debian's libstb-dev: "
                        "apt-get install libstb-dev)\n", path);
    aes_free(data);
    return AES_ERR_UNSUPPORTED;
#endif
}

static void preprocess_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign preprocess --size N IMAGE --out FILE [--threads N]\n"
            "\n"
            "CLIP's preprocessing (OpenAI clip._transform): the shorter side is resized to N\n"
            "with PIL-exact bicubic (antialiased when shrinking), the center N x N is cropped,\n"
            "pixels are divided by 255 and normalised with CLIP's mean and std.  FILE gets\n"
            "3*N*N float32 values, little-endian, in CHW order (written atomically).\n"
            "IMAGE: PPM/PGM%s.\n",
#ifdef AES_HAVE_STB
            ", JPEG (EXIF orientation applied), PNG, BMP, GIF, TGA (through stb_image)"
#else
            " (JPEG/PNG need Debian's libstb-dev)"
#endif
#ifdef AES_HAVE_WEBP
            ", WebP (libwebp)"
#endif
    );
}

CLI_COMMAND(preprocess, "CLIP-preprocess an image into a raw float32 [3,N,N] tensor") {
    const char *image = NULL, *outpath = NULL;
    long size = 0, threads = cli_threads();
    aes_ctx *ctx = NULL;
    aes_image img;
    float *tensor = NULL;
    size_t count;
    int i, r, rc = 1;
    memset(&img, 0, sizeof img);
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { preprocess_usage(stdout); return 0; }
        if ((r = cli_opt_int(argc, argv, &i, "--size", &size))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--out", &outpath))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--threads", &threads))) { if (r < 0) return 2; continue; }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "aesalign preprocess: unknown option %s\n", argv[i]);
            preprocess_usage(stderr);
            return 2;
        }
        if (image) {
            fprintf(stderr, "aesalign preprocess: one image at a time (got %s and %s)\n", image, argv[i]);
            return 2;
        }
        image = argv[i];
    }
    if (!image || !outpath || size < 1 || size > 4096 || threads < 1) {
        preprocess_usage(stderr);
        return 2;
    }
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("preprocess", NULL, "out of memory");
    if (aes_threads_set(ctx, (int)threads) != AES_OK) aes_clear_error(ctx);
    if (cli_load_image(ctx, image, &img) != AES_OK) {
        rc = cli_fail("preprocess", ctx, "cannot load %s", image);
        goto done;
    }
    count = (size_t)3 * (size_t)size * (size_t)size;
    tensor = (float *)aes_alloc(ctx, count, sizeof(float));
    if (!tensor || aes_clip_preprocess(ctx, &img, (int)size, tensor) != AES_OK) {
        rc = cli_fail("preprocess", ctx, "%s", image);
        goto done;
    }
    {
        /* the file format is little-endian whatever the host */
        const uint16_t one = 1;
        unsigned char first;
        memcpy(&first, &one, 1);
        if (first != 1) {
            size_t k;
            for (k = 0; k < count; k++) {
                unsigned char *p = (unsigned char *)&tensor[k], t;
                t = p[0]; p[0] = p[3]; p[3] = t;
                t = p[1]; p[1] = p[2]; p[2] = t;
            }
        }
    }
    if (aes_write_file_atomic(ctx, outpath, tensor, count * sizeof(float)) != AES_OK) {
        rc = cli_fail("preprocess", ctx, "cannot write %s", outpath);
        goto done;
    }
    printf("%s: %dx%d %s -> %s: float32 [3, %ld, %ld], %zu bytes\n", image, img.width, img.height,
           img.channels == 1 ? "gray" : "RGB", outpath, size, size, count * sizeof(float));
    rc = 0;
done:
    aes_free(tensor);
    aes_image_free(&img);
    aes_ctx_free(ctx);
    return rc;
}
