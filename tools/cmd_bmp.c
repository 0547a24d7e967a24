/* aesalign to-bmp: copies of images as 24-bit BMP files, which every browser
 * shows (PPM, what `aesalign world` writes, is not shown by browsers).  The
 * offline demo uses it for the thumbnails of demo.html.
 *
 *   aesalign to-bmp --out DIR IMAGE...     writes DIR/<name without extension>.bmp
 */
#include "cli.h"

static void to_bmp_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign to-bmp --out DIR IMAGE...\n"
            "Writes DIR/<name>.bmp (24-bit, uncompressed) for every IMAGE the CLI can read\n"
            "(PPM/PGM, and JPEG/PNG when built with stb_image).  DIR must exist.\n");
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

aes_status cli_bmp_encode(const aes_image *img, unsigned char **out, size_t *len) {
    size_t row = ((size_t)img->width * 3 + 3) & ~(size_t)3, size = 54 + row * (size_t)img->height;
    unsigned char *buf;
    int x, y;
    *out = NULL;
    *len = 0;
    if (size > 0x7fffffffu) return AES_ERR_LIMIT;
    buf = (unsigned char *)calloc(1, size);
    if (!buf) return AES_ERR_NOMEM;
    buf[0] = 'B'; buf[1] = 'M';
    put32(buf + 2, (uint32_t)size);
    put32(buf + 10, 54);
    put32(buf + 14, 40);
    put32(buf + 18, (uint32_t)img->width);
    put32(buf + 22, (uint32_t)img->height);      /* positive: rows bottom-up */
    buf[26] = 1; buf[28] = 24;
    put32(buf + 34, (uint32_t)(row * (size_t)img->height));
    put32(buf + 38, 2835); put32(buf + 42, 2835);
    for (y = 0; y < img->height; y++) {
        unsigned char *d = buf + 54 + row * (size_t)(img->height - 1 - y);
        const uint8_t *s = img->pixels + (size_t)y * img->width * img->channels;
        for (x = 0; x < img->width; x++, s += img->channels, d += 3) {
            int c = img->channels;
            d[0] = s[c >= 3 ? 2 : 0]; d[1] = s[c >= 3 ? 1 : 0]; d[2] = s[0];
        }
    }
    *out = buf;
    *len = size;
    return AES_OK;
}

static aes_status write_bmp(aes_ctx *ctx, const char *path, const aes_image *img) {
    size_t size;
    unsigned char *buf;
    aes_status st = cli_bmp_encode(img, &buf, &size);
    if (st != AES_OK) return st;
    st = aes_write_file_atomic(ctx, path, buf, size);
    free(buf);
    return st;
}

CLI_COMMAND(to_bmp, "write BMP copies of images (browsers show BMP, not PPM), for demo.html") {
    const char *out = NULL;
    int i, r, first = -1, rc = 0;
    aes_ctx *ctx;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { to_bmp_usage(stdout); return 0; }
        if ((r = cli_opt_str(argc, argv, &i, "--out", &out)) != 0) { if (r < 0) return 2; continue; }
        if (argv[i][0] == '-') { to_bmp_usage(stderr); return 2; }
        first = i;
        break;
    }
    if (!out || first < 0) { to_bmp_usage(stderr); return 2; }
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("to-bmp", NULL, "out of memory");
    for (i = first; i < argc && !rc; i++) {
        aes_image img;
        char path[4200];
        const char *base = strrchr(argv[i], '/'), *dot;
        int blen;
        base = base ? base + 1 : argv[i];
        dot = strrchr(base, '.');
        blen = dot ? (int)(dot - base) : (int)strlen(base);
        snprintf(path, sizeof path, "%s/%.*s.bmp", out, blen, base);
        memset(&img, 0, sizeof img);
        if (cli_load_image(ctx, argv[i], &img) != AES_OK) rc = cli_fail("to-bmp", ctx, "%s", argv[i]);
        else if (write_bmp(ctx, path, &img) != AES_OK) rc = cli_fail("to-bmp", ctx, "writing %s", path);
        aes_image_free(&img);
    }
    aes_ctx_free(ctx);
    return rc;
}
