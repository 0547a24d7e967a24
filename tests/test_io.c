/* test_io.c - safetensors, JSON, files, PNM images, PIL-exact resizing and
 * CLIP preprocessing (aesalign.h).
 *
 * The image references in tests/fixtures/io/ come from PIL 9.4 through
 * tools/ref_preprocess.py (see manifest.txt there). */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/io/"
#define TMP "build/tmp_test_io"


static void make_tmp_dir(void) {
    mkdir("build", 0777);
    mkdir(TMP, 0777);
}

/* Number of entries in dir whose name contains `part`. */
static int count_files_containing(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static int64_t numel_of(const int64_t *shape, int ndim) {
    int64_t n = 1;
    int i;
    for (i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* ========================================================================
 *  dtypes and safetensors
 * ===================================================================== */

static void test_dtypes(void) {
    static const size_t sizes[AES_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1, 2, 4, 8, 1, 1};
    int i;
    for (i = 0; i < AES_DTYPE_COUNT; i++) {
        aes_dtype d;
        CHECK(aes__dtype_size((aes_dtype)i) == sizes[i]);
        CHECK(aes__dtype_from_name(aes__dtype_name((aes_dtype)i), &d) && d == (aes_dtype)i);
    }
    CHECK(!strcmp(aes__dtype_name(AES_DTYPE_BF16), "BF16"));
    CHECK(!strcmp(aes__dtype_name(AES_DTYPE_F8_E4M3), "F8_E4M3"));
    CHECK(aes__dtype_size((aes_dtype)99) == 0);
    CHECK(!aes__dtype_from_name("F4", NULL));
    CHECK(!aes__dtype_from_name("f32", NULL));
}

/* One tensor of every dtype, with scalar, empty and odd shapes. */
typedef struct {
    aes_tensor_out t[AES_DTYPE_COUNT + 2];
    unsigned char *data[AES_DTYPE_COUNT + 2];
    char names[AES_DTYPE_COUNT + 2][32];
    int n;
} tensor_set;

static void tensor_set_make(tensor_set *s) {
    int i;
    memset(s, 0, sizeof *s);
    tl_seed(42);
    for (i = 0; i < AES_DTYPE_COUNT + 2; i++) {
        aes_tensor_out *t = &s->t[i];
        size_t bytes, k;
        t->dtype = (aes_dtype)(i % AES_DTYPE_COUNT);
        snprintf(s->names[i], sizeof s->names[i], "layer.%d.%s", i, aes__dtype_name(t->dtype));
        t->name = s->names[i];
        if (i == AES_DTYPE_COUNT) {           /* a scalar */
            t->ndim = 0;
        } else if (i == AES_DTYPE_COUNT + 1) { /* an empty tensor */
            t->ndim = 2;
            t->shape[0] = 0;
            t->shape[1] = 5;
        } else {
            t->ndim = 1 + i % 4;
            for (k = 0; k < (size_t)t->ndim; k++) t->shape[k] = 1 + (int64_t)((i * 7 + k * 3) % 5);
        }
        bytes = (size_t)numel_of(t->shape, t->ndim) * aes__dtype_size(t->dtype);
        s->data[i] = (unsigned char *)malloc(bytes + 1);
        for (k = 0; k < bytes; k++) s->data[i][k] = (unsigned char)(tl_uniform() * 256);
        t->data = s->data[i];
    }
    s->n = AES_DTYPE_COUNT + 2;
}

static void tensor_set_free(tensor_set *s) {
    int i;
    for (i = 0; i < s->n; i++) free(s->data[i]);
}

static const char *const test_meta[] = {
    "format", "pt",
    "quote\"and\\slash", "line\nbreak\ttab\x01",
    "utf8", "caf\xc3\xa9 \xf0\x9f\x98\x80",
};

/* Every tensor of s is in st with the same bytes; offsets are aligned. */
static void check_tensor_set(const tensor_set *s, const aes_safetensors *st, const void *file_base) {
    int i, k;
    CHECK(aes_safetensors_count(st) == s->n);
    for (i = 0; i < s->n; i++) {
        const aes_tensor_out *t = &s->t[i];
        const aes_tensor_view *v = aes_safetensors_find(st, t->name);
        size_t bytes = (size_t)numel_of(t->shape, t->ndim) * aes__dtype_size(t->dtype);
        CHECK_MSG(v != NULL, "tensor %s not found", t->name);
        if (!v) continue;
        CHECK(!strcmp(v->name, t->name));
        CHECK(v->dtype == t->dtype);
        CHECK(v->ndim == t->ndim);
        for (k = 0; k < t->ndim; k++) CHECK(v->shape[k] == t->shape[k]);
        CHECK(v->numel == numel_of(t->shape, t->ndim));
        CHECK(v->nbytes == bytes);
        CHECK(bytes == 0 || !memcmp(v->data, t->data, bytes));
        /* the writer puts big elements first, so every tensor is aligned */
        if (file_base)
            CHECK_MSG(((size_t)((const char *)v->data - (const char *)file_base)) % aes__dtype_size(v->dtype) == 0,
                      "tensor %s is not aligned to its element size", t->name);
    }
    CHECK(aes_safetensors_find(st, "nope") == NULL);
    CHECK(aes_safetensors_at(st, -1) == NULL && aes_safetensors_at(st, s->n) == NULL);
}

static void check_test_meta(const aes_safetensors *st) {
    const char *k, *v;
    int i;
    for (i = 0; i < 3; i++) {
        const char *got = aes_safetensors_metadata(st, test_meta[2 * i]);
        CHECK_MSG(got && !strcmp(got, test_meta[2 * i + 1]), "metadata %s", test_meta[2 * i]);
    }
    CHECK(aes_safetensors_metadata(st, "absent") == NULL);
    CHECK(aes_safetensors_metadata_at(st, 0, &k, &v) && !strcmp(k, "format") && !strcmp(v, "pt"));
    CHECK(aes_safetensors_metadata_at(st, 2, &k, &v) && !aes_safetensors_metadata_at(st, 3, &k, &v));
}

static void test_st_roundtrip(void) {
    aes_ctx *ctx = tl_ctx();
    tensor_set s;
    void *buf = NULL;
    size_t len = 0;
    uint64_t hlen;
    aes_safetensors *st = NULL;
    int copy;
    tensor_set_make(&s);
    CHECK_OK(ctx, aes_safetensors_serialize(ctx, s.t, s.n, test_meta, 3, &buf, &len));
    if (!buf) { tensor_set_free(&s); aes_ctx_free(ctx); return; }
    memcpy(&hlen, buf, 8);   /* the test machine is little-endian */
    CHECK(hlen % 8 == 0);
    CHECK(((char *)buf)[8] == '{');
    CHECK(((char *)buf)[8 + hlen - 1] == '}' || ((char *)buf)[8 + hlen - 1] == ' ');
    for (copy = 0; copy <= 1; copy++) {
        CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, len, copy, &st));
        if (!st) continue;
        check_tensor_set(&s, st, copy ? NULL : buf);
        check_test_meta(st);
        CHECK(!strcmp(aes__safetensors_source(st), "<memory>"));
        aes_safetensors_close(st);
        st = NULL;
    }
    /* the copy survives the caller's buffer */
    CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, len, 1, &st));
    memset(buf, 0, len);
    if (st) {
        check_tensor_set(&s, st, NULL);
        aes_safetensors_close(st);
    }
    aes_free(buf);
    /* no tensors, no metadata: "{}" padded */
    CHECK_OK(ctx, aes_safetensors_serialize(ctx, NULL, 0, NULL, 0, &buf, &len));
    CHECK(len == 16 && !memcmp((char *)buf + 8, "{}      ", 8));
    CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, len, 0, &st));
    CHECK(aes_safetensors_count(st) == 0 && !aes_safetensors_metadata_at(st, 0, NULL, NULL));
    aes_safetensors_close(st);
    aes_free(buf);
    tensor_set_free(&s);
    aes_ctx_free(ctx);
}

static void test_st_serialize_errors(void) {
    aes_ctx *ctx = tl_ctx();
    float x[4] = {1, 2, 3, 4};
    aes_tensor_out t[2];
    const char *dup_meta[] = {"a", "1", "a", "2"};
    void *buf = NULL;
    size_t len;
    memset(t, 0, sizeof t);
    t[0].name = "w";
    t[0].dtype = AES_DTYPE_F32;
    t[0].ndim = 1;
    t[0].shape[0] = 4;
    t[0].data = x;
    t[1] = t[0];
    CHECK(aes_safetensors_serialize(ctx, t, 2, NULL, 0, &buf, &len) == AES_ERR_INVALID_ARG);
    CHECK(strstr(aes_last_error(ctx), "'w'") != NULL);
    CHECK(aes_safetensors_serialize(ctx, t, 1, dup_meta, 2, &buf, &len) == AES_ERR_INVALID_ARG);
    t[1].name = "__metadata__";
    CHECK(aes_safetensors_serialize(ctx, t, 2, NULL, 0, &buf, &len) == AES_ERR_INVALID_ARG);
    t[1].name = "v";
    t[1].shape[0] = -1;
    CHECK(aes_safetensors_serialize(ctx, t, 2, NULL, 0, &buf, &len) == AES_ERR_INVALID_ARG);
    t[1].shape[0] = 4;
    t[1].data = NULL;
    CHECK(aes_safetensors_serialize(ctx, t, 2, NULL, 0, &buf, &len) == AES_ERR_INVALID_ARG);
    t[1].data = x;
    t[1].name = "bad\xff";
    CHECK(aes_safetensors_serialize(ctx, t, 2, NULL, 0, &buf, &len) == AES_ERR_INVALID_ARG);
    CHECK(buf == NULL);
    aes_ctx_free(ctx);
}

static void test_st_file(void) {
    aes_ctx *ctx = tl_ctx();
    tensor_set s;
    void *mem = NULL, *file = NULL;
    size_t mlen = 0, flen = 0;
    aes_safetensors *st = NULL;
    const char *path = TMP "/roundtrip.safetensors";
    make_tmp_dir();
    tensor_set_make(&s);
    remove(path);
    CHECK_OK(ctx, aes_safetensors_write(ctx, path, s.t, s.n, test_meta, 3));
    CHECK_OK(ctx, aes_safetensors_serialize(ctx, s.t, s.n, test_meta, 3, &mem, &mlen));
    CHECK_OK(ctx, aes_read_file(ctx, path, &file, &flen));
    /* streaming writer and in-memory serializer agree byte for byte */
    CHECK(flen == mlen && file && mem && !memcmp(file, mem, flen));
    CHECK_OK(ctx, aes_safetensors_open(ctx, path, &st));
    if (st) {
        check_tensor_set(&s, st, NULL);
        check_test_meta(st);
        CHECK(!strcmp(aes__safetensors_source(st), path));
        aes_safetensors_close(st);
    }
    CHECK(count_files_containing(TMP, ".tmp-") == 0);
    /* errors name the file */
    CHECK(aes_safetensors_open(ctx, TMP "/does-not-exist.safetensors", &st) == AES_ERR_IO);
    CHECK(st == NULL && strstr(aes_last_error(ctx), "does-not-exist") != NULL);
    if (file) {
        const char *bad = TMP "/truncated.safetensors";
        CHECK_OK(ctx, aes_write_file_atomic(ctx, bad, file, flen - 3));
        CHECK(aes_safetensors_open(ctx, bad, &st) == AES_ERR_FORMAT);
        CHECK(strstr(aes_last_error(ctx), bad) != NULL);
        CHECK_OK(ctx, aes_write_file_atomic(ctx, bad, file, 5));
        CHECK(aes_safetensors_open(ctx, bad, &st) == AES_ERR_FORMAT);
        remove(bad);
    }
    aes_free(mem);
    aes_free(file);
    remove(path);
    tensor_set_free(&s);
    aes_ctx_free(ctx);
}

/* The exact value of an IEEE half, computed the slow way. */
static float ref_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? (double)NAN : (double)INFINITY;
    else v = ldexp((double)(m + 1024), e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static int same_float(float a, float b) {
    uint32_t x, y;
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

static void test_tensor_to_f32(void) {
    aes_ctx *ctx = tl_ctx();
    unsigned char *raw = (unsigned char *)malloc(65536 * 8 + 1);
    float *out = (float *)malloc(65536 * sizeof(float));
    aes_tensor_view v;
    int isa, bad, i;
    memset(&v, 0, sizeof v);
    v.name = "halves";
    v.ndim = 1;
    v.shape[0] = 65536;
    v.numel = 65536;
    v.nbytes = 65536 * 2;
    /* every half bit pattern, stored at an odd address */
    for (i = 0; i < 65536; i++) {
        raw[1 + 2 * i] = (unsigned char)(i & 255);
        raw[2 + 2 * i] = (unsigned char)(i >> 8);
    }
    v.data = raw + 1;
    for (isa = 0; isa < 2; isa++) {
        if (isa == 1) aes_isa_set(ctx, AES_ISA_SCALAR);
        v.dtype = AES_DTYPE_F16;
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, &v, out, 65536));
        for (i = 0, bad = 0; i < 65536; i++) bad += !same_float(out[i], ref_f16((uint16_t)i));
        CHECK_MSG(bad == 0, "%d f16 values differ (%s)", bad, aes_cpu_name(ctx));
        v.dtype = AES_DTYPE_BF16;
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, &v, out, 65536));
        for (i = 0, bad = 0; i < 65536; i++) {
            uint32_t bits = (uint32_t)i << 16;
            float f;
            memcpy(&f, &bits, 4);
            bad += !same_float(out[i], f);
        }
        CHECK_MSG(bad == 0, "%d bf16 values differ (%s)", bad, aes_cpu_name(ctx));
    }
    /* F32 and F64, unaligned */
    {
        double d[5] = {1.5, -2.25, 1e300, -1e-300, 3.0000001};
        float f[5] = {1.5f, -2.25f, 1e30f, -0.0f, 7.0f};
        memcpy(raw + 3, d, sizeof d);
        v.data = raw + 3;
        v.dtype = AES_DTYPE_F64;
        v.shape[0] = v.numel = 5;
        v.nbytes = 40;
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, &v, out, 5));
        CHECK(out[0] == 1.5f && out[1] == -2.25f && isinf(out[2]) && out[3] == 0.0f && out[4] == (float)3.0000001);
        memcpy(raw + 3, f, sizeof f);
        v.dtype = AES_DTYPE_F32;
        v.nbytes = 20;
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, &v, out, 5));
        CHECK(!memcmp(out, f, sizeof f));
        CHECK(aes_tensor_to_f32(ctx, &v, out, 4) == AES_ERR_SHAPE);
        CHECK(strstr(aes_last_error(ctx), "halves") != NULL);
        v.dtype = AES_DTYPE_I32;
        CHECK(aes_tensor_to_f32(ctx, &v, out, 5) == AES_ERR_UNSUPPORTED);
    }
    free(raw);
    free(out);
    aes_ctx_free(ctx);
}

/* A safetensors buffer: 8-byte length `hlen_field` + header text + data. */
static aes_status parse_st(aes_ctx *ctx, const char *header, size_t header_len, uint64_t hlen_field, size_t data_len,
                           size_t truncate_to) {
    size_t len = 8 + header_len + data_len, i;
    unsigned char *buf = (unsigned char *)calloc(1, len + 1);
    aes_safetensors *st = NULL;
    aes_status s;
    for (i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen_field >> (8 * i));
    memcpy(buf + 8, header, header_len);
    if (truncate_to && truncate_to < len) len = truncate_to;
    s = aes_safetensors_load_memory(ctx, buf, len, 0, &st);
    if (s == AES_OK) aes_safetensors_close(st);
    else if (st) s = (aes_status)-1;   /* must stay NULL on failure */
    free(buf);
    return s;
}

static aes_status parse_header(aes_ctx *ctx, const char *header, size_t data_len) {
    return parse_st(ctx, header, strlen(header), strlen(header), data_len, 0);
}

static void test_st_hostile(void) {
    static const struct {
        const char *what, *header;
        size_t data_len;
        aes_status want;
        const char *mention;   /* the message must name this (tensor) */
    } cases[] = {
        {"bad JSON", "{\"a\":", 0, AES_ERR_FORMAT, "<memory>"},
        {"not an object", "[1, 2]", 0, AES_ERR_FORMAT, "<memory>"},
        {"trailing junk", "{} x", 0, AES_ERR_FORMAT, "<memory>"},
        {"trailing NUL", "{}\0", 0, AES_ERR_FORMAT, "<memory>"},
        {"negative shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, AES_ERR_FORMAT, "'t'"},
        {"fractional shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, AES_ERR_FORMAT, "'t'"},
        {"overflowing shape",
         "{\"big\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4, AES_ERR_FORMAT,
         "'big'"},
        {"overflow then zero",
         "{\"big\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", 0, AES_ERR_FORMAT,
         "'big'"},
        {"bytes overflow", "{\"b\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
         AES_ERR_FORMAT, "'b'"},
        {"shape 2^70", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1180591620717411303424],\"data_offsets\":[0,1]}}", 1,
         AES_ERR_FORMAT, "'t'"},
        {"overlapping tensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, AES_ERR_FORMAT, "'b'"},
        {"same range twice",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, AES_ERR_FORMAT, "overlap"},
        {"offsets past end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16, AES_ERR_FORMAT,
         "'t'"},
        {"offset 2^63", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775807,9223372036854775808]}}",
         1, AES_ERR_FORMAT, "'t'"},
        {"reversed offsets", "{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"negative offset", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"three offsets", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"offsets as strings", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[\"0\",\"1\"]}}", 8, AES_ERR_FORMAT,
         "'t'"},
        {"duplicate names",
         "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, AES_ERR_FORMAT, "\"w\""},
        {"wrong dtype size", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"wrong dtype size 2", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 8, AES_ERR_FORMAT,
         "'t'"},
        {"unknown dtype", "{\"t\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 8, AES_ERR_UNSUPPORTED, "F4"},
        {"lowercase dtype", "{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, AES_ERR_UNSUPPORTED,
         "'t'"},
        {"dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"no dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"no shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"no offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 8, AES_ERR_FORMAT, "'t'"},
        {"nine dims", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 8,
         AES_ERR_UNSUPPORTED, "'t'"},
        {"entry not an object", "{\"t\":5}", 0, AES_ERR_FORMAT, "'t'"},
        {"metadata not an object", "{\"__metadata__\":[\"a\"]}", 0, AES_ERR_FORMAT, "__metadata__"},
        {"metadata number", "{\"__metadata__\":{\"a\":1}}", 0, AES_ERR_FORMAT, "\"a\""},
        {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, AES_ERR_FORMAT,
         "NUL"},
        {"bad UTF-8", "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, AES_ERR_FORMAT, "UTF-8"},
        {"lone surrogate", "{\"\\ud800\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, AES_ERR_FORMAT,
         "surrogate"},
    };
    aes_ctx *ctx = tl_ctx();
    size_t i;
    char deep[4096];
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t hl = strlen(cases[i].header);
        aes_status s;
        if (!strcmp(cases[i].what, "trailing NUL")) hl += 1;
        s = parse_st(ctx, cases[i].header, hl, hl, cases[i].data_len, 0);
        CHECK_MSG(s == cases[i].want, "%s: status %d (%s), want %d", cases[i].what, (int)s, aes_last_error(ctx),
                  (int)cases[i].want);
        CHECK_MSG(strstr(aes_last_error(ctx), "<memory>") && strstr(aes_last_error(ctx), cases[i].mention),
                  "%s: message '%s' should name <memory> and %s", cases[i].what, aes_last_error(ctx),
                  cases[i].mention);
    }
    /* lengths: too short, 2^60, past the end, over 100 MB */
    CHECK(parse_st(ctx, "{}", 2, 2, 0, 4) == AES_ERR_FORMAT);
    CHECK(strstr(aes_last_error(ctx), "too short") != NULL);
    CHECK(parse_st(ctx, "", 0, 0, 0, 0) == AES_ERR_FORMAT);
    CHECK(parse_st(ctx, "{}", 2, (uint64_t)1 << 60, 0, 0) == AES_ERR_LIMIT);
    CHECK(parse_st(ctx, "{}", 2, UINT64_MAX, 0, 0) == AES_ERR_LIMIT);
    CHECK(parse_st(ctx, "{}", 2, 200000000, 0, 0) == AES_ERR_LIMIT);
    CHECK(parse_st(ctx, "{}", 2, 100, 0, 0) == AES_ERR_FORMAT);
    CHECK(strstr(aes_last_error(ctx), "past the end") != NULL);
    /* truncated data section */
    CHECK(parse_st(ctx, "{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 51, 51, 8, 8 + 51 + 7) ==
          AES_ERR_FORMAT);
    /* deep nesting */
    strcpy(deep, "{\"t\":");
    for (i = 0; i < 1000; i++) strcat(deep, "[");
    CHECK(parse_header(ctx, deep, 0) == AES_ERR_LIMIT);
    CHECK(strstr(aes_last_error(ctx), "nesting") != NULL);
    aes_ctx_free(ctx);
}

static void test_st_valid_edges(void) {
    aes_ctx *ctx = tl_ctx();
    const char *h =
        "{\"__metadata__\":null,"
        "\"empty1\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
        "\"scalar\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4],\"extra\":[1,{}]},"
        "\"empty2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"after_gap\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}     ";
    size_t hl = strlen(h), i;
    unsigned char *buf = (unsigned char *)calloc(1, 8 + hl + 10);
    aes_safetensors *st = NULL;
    int32_t val = -123456;
    for (i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    memcpy(buf + 8 + hl, &val, 4);
    CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, 8 + hl + 10, 0, &st));
    if (st) {
        const aes_tensor_view *v = aes_safetensors_find(st, "scalar");
        int32_t got = 0;
        CHECK(aes_safetensors_count(st) == 4);
        CHECK(!aes_safetensors_metadata_at(st, 0, NULL, NULL) && aes_safetensors_metadata(st, "x") == NULL);
        CHECK(v && v->ndim == 0 && v->numel == 1 && v->nbytes == 4);
        if (v) memcpy(&got, v->data, 4);
        CHECK(got == val);
        /* header order is kept; find works for all */
        CHECK(!strcmp(aes_safetensors_at(st, 0)->name, "empty1"));
        CHECK(!strcmp(aes_safetensors_at(st, 3)->name, "after_gap"));
        CHECK(aes_safetensors_find(st, "empty2") && aes_safetensors_find(st, "empty2")->numel == 0);
        aes_safetensors_close(st);
    }
    free(buf);
    aes_ctx_free(ctx);
}

/* The real LAION rating embeddings from ../shared, when present. */
static void test_st_shared_file(void) {
    const char *dir = tl_shared_dir();
    char path[4200];
    aes_ctx *ctx;
    aes_safetensors *st = NULL;
    const aes_tensor_view *v;
    if (!dir) { tl_skip("../shared is absent"); return; }
    snprintf(path, sizeof path, "%s/data/laion-rating-embeddings-vit-b-32.safetensors", dir);
    ctx = tl_ctx();
    CHECK_OK(ctx, aes_safetensors_open(ctx, path, &st));
    v = st ? aes_safetensors_find(st, "embeddings") : NULL;
    CHECK(v && v->dtype == AES_DTYPE_F32 && v->ndim == 2 && v->shape[0] == 10 && v->shape[1] == 512);
    if (v) {
        float *e = (float *)malloc(5120 * sizeof(float));
        int r, k;
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, v, e, 5120));
        for (r = 0; r < 10; r++) {   /* rows are L2-normalised */
            double n = 0;
            for (k = 0; k < 512; k++) n += (double)e[r * 512 + k] * e[r * 512 + k];
            CHECK_NEAR(sqrt(n), 1.0, 1e-3);
        }
        free(e);
    }
    aes_safetensors_close(st);
    aes_ctx_free(ctx);
}

/* ========================================================================
 *  JSON
 * ===================================================================== */

static aes__json *parse_json(aes_ctx *ctx, const char *text) {
    aes__json *root = NULL;
    CHECK_OK(ctx, aes__json_parse(ctx, text, strlen(text), &root));
    return root;
}

static void test_json_valid(void) {
    aes_ctx *ctx = tl_ctx();
    const char *text =
        " {\"a\": [1, 2.5, -3e2, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\b\\f\\r\\t\"],\n"
        "  \"b\": {\"c\": {}, \"d\": []}, \"\": 0, \"k\\u0000z\": 1, \"caf\xc3\xa9\": \"\xe2\x82\xac\"} ";
    aes__json *root = parse_json(ctx, text);
    const aes__json *a, *s;
    int64_t iv;
    if (!root) { aes_ctx_free(ctx); return; }
    CHECK(aes__json_type_of(root) == AES__JSON_OBJECT && aes__json_length(root) == 5);
    a = aes__json_get(root, "a");
    CHECK(aes__json_type_of(a) == AES__JSON_ARRAY && aes__json_length(a) == 7);
    CHECK(aes__json_number(aes__json_at(a, 0), 0) == 1 && aes__json_int64(aes__json_at(a, 0), &iv) && iv == 1);
    CHECK(aes__json_number(aes__json_at(a, 1), 0) == 2.5 && !aes__json_int64(aes__json_at(a, 1), &iv));
    CHECK(aes__json_number(aes__json_at(a, 2), 0) == -300 && !aes__json_int64(aes__json_at(a, 2), &iv));
    CHECK(aes__json_bool(aes__json_at(a, 3), 0) == 1 && aes__json_bool(aes__json_at(a, 4), 1) == 0);
    CHECK(aes__json_type_of(aes__json_at(a, 5)) == AES__JSON_NULL && aes__json_at(a, 5) != NULL);
    s = aes__json_at(a, 6);
    CHECK(aes__json_string(s) && !strcmp(aes__json_string(s), "x\xc3\xa9\xf0\x9f\x98\x80\n\"\\/\b\f\r\t"));
    CHECK(s->u.str.len == 15);
    CHECK(aes__json_at(a, 7) == NULL && aes__json_at(a, -1) == NULL);
    CHECK(aes__json_type_of(aes__json_get(aes__json_get(root, "b"), "c")) == AES__JSON_OBJECT);
    CHECK(aes__json_length(aes__json_get(aes__json_get(root, "b"), "d")) == 0);
    CHECK(aes__json_number(aes__json_get(root, ""), -1) == 0);
    CHECK(aes__json_get(root, "k") == NULL);   /* the key is "k\0z" */
    CHECK(!strcmp(aes__json_key_at(root, 3), "k"));
    CHECK(!strcmp(aes__json_string(aes__json_get(root, "caf\xc3\xa9")), "\xe2\x82\xac"));
    CHECK(!strcmp(aes__json_key_at(root, 0), "a") && !strcmp(aes__json_key_at(root, 1), "b"));
    /* wrong-type accessors fall back */
    CHECK(aes__json_get(a, "x") == NULL && aes__json_string(a) == NULL && aes__json_number(a, 7) == 7);
    CHECK(aes__json_bool(NULL, 5) == 5 && aes__json_length(NULL) == 0 && aes__json_key_at(a, 0) == NULL);
    aes__json_free((aes__json *)aes__json_at(a, 0));   /* not a root: ignored */
    aes__json_free(root);
    aes__json_free(NULL);
    /* scalars at the top level (RFC 8259) */
    root = parse_json(ctx, "  42  ");
    CHECK(aes__json_number(root, 0) == 42);
    aes__json_free(root);
    root = parse_json(ctx, "\"s\"");
    CHECK(!strcmp(aes__json_string(root), "s"));
    aes__json_free(root);
    root = parse_json(ctx, "true");
    CHECK(aes__json_bool(root, 0) == 1);
    aes__json_free(root);
    /* length bounds the text: no NUL needed */
    root = NULL;
    CHECK_OK(ctx, aes__json_parse(ctx, "[1,2]garbage", 5, &root));
    CHECK(aes__json_length(root) == 2);
    aes__json_free(root);
    aes_ctx_free(ctx);
}

static void test_json_numbers(void) {
    static const struct { const char *text; double value; int is_int; int64_t i; } cases[] = {
        {"0", 0, 1, 0},
        {"-0", -0.0, 1, 0},
        {"9223372036854775807", 9223372036854775807.0, 1, INT64_MAX},
        {"-9223372036854775808", -9223372036854775808.0, 1, INT64_MIN},
        {"9223372036854775808", 9223372036854775808.0, 0, 0},
        {"123456789012345678901234567890", 1.2345678901234568e29, 0, 0},
        {"1.5e3", 1500, 0, 0},
        {"1E-2", 0.01, 0, 0},
        {"-0.000001", -1e-6, 0, 0},
        {"4.9e-324", 4.9e-324, 0, 0},
        {"2.2250738585072014e-308", 2.2250738585072014e-308, 0, 0},
        {"1.7976931348623157e308", 1.7976931348623157e308, 0, 0},
        {"0.1", 0.1, 0, 0},
        {"1e-400", 0.0, 0, 0},
    };
    aes_ctx *ctx = tl_ctx();
    size_t k;
    for (k = 0; k < sizeof cases / sizeof *cases; k++) {
        aes__json *root = parse_json(ctx, cases[k].text);
        int64_t iv = 0;
        CHECK_MSG(aes__json_number(root, 99) == cases[k].value, "%s -> %.17g", cases[k].text, aes__json_number(root, 99));
        CHECK_MSG(aes__json_int64(root, &iv) == cases[k].is_int && iv == cases[k].i, "%s integer", cases[k].text);
        aes__json_free(root);
    }
    aes_ctx_free(ctx);
}

static void test_json_invalid(void) {
    static const char *const bad[] = {
        "", "   ", "{", "[", "[1,]", "[1 2]", "{\"a\":1,}", "{'a':1}", "{\"a\" 1}", "{\"a\":}", "{a:1}", "01", "-01",
        "1.", ".5", "-", "+1", "1e", "1e+", "1.e5", "0x10", "NaN", "Infinity", "-Infinity", "tru", "nul", "True",
        "[\"\\x\"]", "\"\\u12\"", "\"\\u12G4\"", "\"\\uD800\"", "\"\\uDC00\"", "\"\\uD800\\u0041\"", "\"\\uD800x\"",
        "\"a\nb\"", "\"\t\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "\"\x80\"",
        "\"\xff\"", "\xef\xbb\xbf{}", "{} x", "[1]]", "{\"a\":1,\"a\":2}", "{\"b\":{\"x\":1,\"y\":2,\"x\":3}}", "1e400",
        "-1e400", "\"abc", "\"abc\\\"", "[1,2", "[-]", "// c\n1", "/* c */ 1", "[1,,2]", "[,]", "{,}", "\"\\",
    };
    aes_ctx *ctx = tl_ctx();
    size_t k;
    char deep[700];
    aes__json *root;
    for (k = 0; k < sizeof bad / sizeof *bad; k++) {
        root = NULL;
        CHECK_MSG(aes__json_parse(ctx, bad[k], strlen(bad[k]), &root) == AES_ERR_FORMAT, "accepted bad JSON #%zu: %s",
                  k, bad[k]);
        CHECK(root == NULL);
        CHECK_MSG(strstr(aes_last_error(ctx), "JSON") && strstr(aes_last_error(ctx), "line"), "message: %s",
                  aes_last_error(ctx));
    }
    CHECK(aes__json_parse(ctx, "[\0]", 3, &root) == AES_ERR_FORMAT);
    CHECK(aes__json_parse(ctx, "{\"a\":1,\"a\":2}", 13, &root) == AES_ERR_FORMAT && strstr(aes_last_error(ctx), "duplicate"));
    /* the depth limit: AES_JSON_MAX_DEPTH levels parse, one more does not */
    memset(deep, '[', AES_JSON_MAX_DEPTH);
    memset(deep + AES_JSON_MAX_DEPTH, ']', AES_JSON_MAX_DEPTH);
    CHECK_OK(ctx, aes__json_parse(ctx, deep, 2 * AES_JSON_MAX_DEPTH, &root));
    aes__json_free(root);
    memset(deep, '[', AES_JSON_MAX_DEPTH + 1);
    memset(deep + AES_JSON_MAX_DEPTH + 1, ']', AES_JSON_MAX_DEPTH + 1);
    CHECK(aes__json_parse(ctx, deep, 2 * AES_JSON_MAX_DEPTH + 2, &root) == AES_ERR_LIMIT);
    CHECK(aes__json_parse(ctx, NULL, 0, &root) == AES_ERR_FORMAT);
    CHECK(aes__json_parse(ctx, "1", 1, NULL) == AES_ERR_INVALID_ARG);
    /* the message says where */
    CHECK(aes__json_parse(ctx, "{\n  \"a\": tru\n}", 14, &root) == AES_ERR_FORMAT);
    CHECK(strstr(aes_last_error(ctx), "line 2, column 8") != NULL);
    aes_ctx_free(ctx);
}

/* A big object (a vocabulary): every key is found by binary search. */
static void test_json_big_object(void) {
    aes_ctx *ctx = tl_ctx();
    size_t cap = 60000 * 24, len = 0;
    char *text = (char *)malloc(cap), key[32];
    aes__json *root = NULL;
    int i, bad = 0;
    text[len++] = '{';
    for (i = 0; i < 50000; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"tok%d</w>\":%d", i ? "," : "", (i * 7919) % 50000, i);
    text[len++] = '}';
    CHECK_OK(ctx, aes__json_parse(ctx, text, len, &root));
    CHECK(aes__json_length(root) == 50000);
    for (i = 0; i < 50000; i++) {
        int64_t v = -1;
        snprintf(key, sizeof key, "tok%d</w>", (i * 7919) % 50000);
        if (!aes__json_int64(aes__json_get(root, key), &v) || v != i) bad++;
    }
    CHECK(bad == 0);
    CHECK(aes__json_get(root, "tok50000</w>") == NULL);
    aes__json_free(root);
    free(text);
    aes_ctx_free(ctx);
}

/* ========================================================================
 *  files
 * ===================================================================== */

static void test_files(void) {
    aes_ctx *ctx = tl_ctx();
    const char *path = TMP "/file.bin";
    unsigned char data[3000];
    void *got = NULL;
    size_t len = 0, i;
    make_tmp_dir();
    for (i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 31 + 7);
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, data, sizeof data));
    CHECK_OK(ctx, aes_read_file(ctx, path, &got, &len));
    CHECK(len == sizeof data && got && !memcmp(got, data, len) && ((char *)got)[len] == 0);
    aes_free(got);
    /* replace it: readers never see a mix */
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, "hello", 5));
    CHECK_OK(ctx, aes_read_file(ctx, path, &got, &len));
    CHECK(len == 5 && !strcmp((char *)got, "hello"));
    aes_free(got);
    /* empty file */
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, NULL, 0));
    CHECK_OK(ctx, aes_read_file(ctx, path, &got, &len));
    CHECK(len == 0 && got && ((char *)got)[0] == 0);
    aes_free(got);
    CHECK(count_files_containing(TMP, ".tmp-") == 0);
    /* the size limit */
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, data, sizeof data));
    aes_limit_set(ctx, AES_LIMIT_FILE_BYTES, 100);
    CHECK(aes_read_file(ctx, path, &got, &len) == AES_ERR_LIMIT && got == NULL);
    CHECK(strstr(aes_last_error(ctx), path) != NULL);
    aes_limit_set(ctx, AES_LIMIT_FILE_BYTES, (uint64_t)64 << 30);
    /* failures: missing file, missing directory, a directory as target */
    CHECK(aes_read_file(ctx, TMP "/missing.bin", &got, &len) == AES_ERR_IO);
    CHECK(strstr(aes_last_error(ctx), "missing.bin") != NULL);
    CHECK(aes_read_file(ctx, TMP, &got, &len) == AES_ERR_IO);
    CHECK(aes_write_file_atomic(ctx, TMP "/no/such/dir/x.bin", data, 10) == AES_ERR_IO);
    mkdir(TMP "/a_directory", 0777);
    CHECK(aes_write_file_atomic(ctx, TMP "/a_directory", data, 10) == AES_ERR_IO);
    CHECK(strstr(aes_last_error(ctx), "rename") != NULL);
    CHECK(count_files_containing(TMP, ".tmp-") == 0);
    rmdir(TMP "/a_directory");
    remove(path);
    aes_ctx_free(ctx);
}

/* ========================================================================
 *  images
 * ===================================================================== */

static int load_fixture(aes_ctx *ctx, const char *name, aes_image *img) {
    char path[512];
    snprintf(path, sizeof path, FIX "%s", name);
    if (aes_image_load(ctx, path, img) != AES_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, aes_last_error(ctx));
        return 0;
    }
    return 1;
}

static void *load_raw(aes_ctx *ctx, const char *name, size_t *len) {
    char path[512];
    void *data = NULL;
    snprintf(path, sizeof path, FIX "%s", name);
    if (aes_read_file(ctx, path, &data, len) != AES_OK) CHECK_MSG(0, "cannot read %s", path);
    return data;
}

/* Calls fn(kind, fields...) for every manifest line of the given kind. */
typedef struct { char kind[16], src[128], ref[128]; int w, h; } manifest_line;
static int read_manifest(manifest_line *lines, int max) {
    FILE *f = fopen(FIX "manifest.txt", "r");
    char buf[512];
    int n = 0;
    if (!f) return -1;
    while (n < max && fgets(buf, sizeof buf, f)) {
        manifest_line *m = &lines[n];
        memset(m, 0, sizeof *m);
        if (buf[0] == '#') continue;
        if (sscanf(buf, "%15s", m->kind) != 1) continue;
        if (!strcmp(m->kind, "resize") && sscanf(buf, "%*s %127s %d %d %127s", m->src, &m->w, &m->h, m->ref) == 4) n++;
        else if ((!strcmp(m->kind, "clip") || !strcmp(m->kind, "digest")) &&
                 sscanf(buf, "%*s %127s %d %127s", m->src, &m->w, m->ref) == 3) n++;
        else if (!strcmp(m->kind, "pnm") && sscanf(buf, "%*s %127s %127s", m->src, m->ref) == 2) n++;
    }
    fclose(f);
    return n;
}

static void test_pnm_vs_pil(void) {
    aes_ctx *ctx = tl_ctx();
    manifest_line lines[128];
    int n = read_manifest(lines, 128), i, cases = 0;
    CHECK(n > 0);
    for (i = 0; i < n; i++) {
        aes_image img;
        size_t len = 0;
        void *ref;
        if (strcmp(lines[i].kind, "pnm")) continue;
        if (!load_fixture(ctx, lines[i].src, &img)) continue;
        ref = load_raw(ctx, lines[i].ref, &len);
        CHECK_MSG(ref && len == (size_t)img.width * img.height * img.channels && !memcmp(ref, img.pixels, len),
                  "%s decodes differently from PIL", lines[i].src);
        aes_free(ref);
        aes_image_free(&img);
        cases++;
    }
    CHECK(cases == 5);
    aes_ctx_free(ctx);
}

static aes_status decode_str(aes_ctx *ctx, const char *s, size_t len, aes_image *img) {
    return aes_image_decode_pnm(ctx, s, len, img);
}

static void test_pnm_handmade(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img;
    static const unsigned char p4[] = {'P', '4', ' ', '1', '0', ' ', '2', '\n', 0x80, 0x40, 0xFF, 0xC0};
    static const unsigned char p5_16[] = {'P', '5', ' ', '3', ' ', '1', ' ', '6', '5', '5', '3', '5', '\n',
                                          0x00, 0x80, 0x01, 0x01, 0xFF, 0xFF};
    const uint8_t want_p1[] = {255, 0, 255, 0, 0, 255};
    const uint8_t want_p4[] = {0, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK_OK(ctx, decode_str(ctx, "P1\n# c\n3 2\n0 1 0\n110", 20, &img));
    CHECK(img.width == 3 && img.height == 2 && img.channels == 1 && !memcmp(img.pixels, want_p1, 6));
    aes_image_free(&img);
    CHECK_OK(ctx, aes_image_decode_pnm(ctx, p4, sizeof p4, &img));
    CHECK(img.width == 10 && img.height == 2 && !memcmp(img.pixels, want_p4, 20));
    aes_image_free(&img);
    /* 16-bit gray: round(v / 65535 * 255): 128 -> 0 (0.498), 257 -> 1, 65535 -> 255 */
    CHECK_OK(ctx, aes_image_decode_pnm(ctx, p5_16, sizeof p5_16, &img));
    CHECK(img.pixels[0] == 0 && img.pixels[1] == 1 && img.pixels[2] == 255);
    aes_image_free(&img);
    /* maxval 2: 1 -> round(127.5) = 128 (half to even), as PIL */
    CHECK_OK(ctx, decode_str(ctx, "P2 3 1 2 0 1 2", 14, &img));
    CHECK(img.pixels[0] == 0 && img.pixels[1] == 128 && img.pixels[2] == 255);
    aes_image_free(&img);
    /* samples over maxval in binary files are clamped (PIL does the same) */
    CHECK_OK(ctx, decode_str(ctx, "P5 2 1 100\n\x64\xff", 13, &img));
    CHECK(img.pixels[0] == 255 && img.pixels[1] == 255);
    aes_image_free(&img);
    aes_ctx_free(ctx);
}

static void test_pnm_malformed(void) {
    static const struct { const char *what, *data; size_t len; aes_status want; } cases[] = {
        {"empty", "", 0, AES_ERR_FORMAT},
        {"just P", "P", 1, AES_ERR_FORMAT},
        {"PAM", "P7\nWIDTH 1\n", 10, AES_ERR_FORMAT},
        {"PNG", "\x89PNG\r\n\x1a\n", 8, AES_ERR_FORMAT},
        {"no width", "P6\n", 3, AES_ERR_FORMAT},
        {"zero width", "P6 0 5 255\n", 11, AES_ERR_FORMAT},
        {"zero height", "P5 5 0 255\n", 11, AES_ERR_FORMAT},
        {"negative width", "P6 -5 5 255\n", 12, AES_ERR_FORMAT},
        {"maxval 0", "P6 2 2 0\n", 9, AES_ERR_FORMAT},
        {"maxval 65536", "P6 2 2 65536\n", 13, AES_ERR_FORMAT},
        {"no space after header", "P5 1 1 255", 10, AES_ERR_FORMAT},
        {"truncated P6", "P6 2 2 255\n01234567890", 22, AES_ERR_FORMAT},
        {"truncated 16-bit", "P6 2 2 1000\n01234567890123456789012", 35, AES_ERR_FORMAT},
        {"huge dims", "P5 99999 99999 255\n", 19, AES_ERR_LIMIT},
        {"absurd number", "P5 99999999999 1 255\n", 21, AES_ERR_LIMIT},
        {"huge dims, tiny ASCII", "P2 10000 10000 255\n1 2 3", 24, AES_ERR_FORMAT},
        {"truncated P2", "P2 2 2 10\n1 2 3", 15, AES_ERR_FORMAT},
        {"P2 over maxval", "P2 2 2 10\n1 2 3 11", 18, AES_ERR_FORMAT},
        {"P3 junk", "P3 1 1 255\n1 2 x", 16, AES_ERR_FORMAT},
        {"P1 bad bit", "P1 2 2\n0 1 2 0", 14, AES_ERR_FORMAT},
        {"P4 truncated", "P4 9 2\n\xff\xff\xff", 10, AES_ERR_FORMAT},
    };
    aes_ctx *ctx = tl_ctx();
    aes_image img;
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        aes_status s = decode_str(ctx, cases[i].data, cases[i].len, &img);
        CHECK_MSG(s == cases[i].want, "%s: status %d (%s)", cases[i].what, (int)s, aes_last_error(ctx));
        CHECK(img.pixels == NULL && img.width == 0);
    }
    /* the pixel limit is the context's */
    aes_limit_set(ctx, AES_LIMIT_IMAGE_PIXELS, 100);
    CHECK(decode_str(ctx, "P5 11 10 255\n", 13, &img) == AES_ERR_LIMIT);
    CHECK(aes_image_alloc(ctx, &img, 11, 10, 3) == AES_ERR_LIMIT);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 10, 10, 3));
    aes_image_free(&img);
    aes_ctx_free(ctx);
}

static void test_image_basics(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img, back, rgb;
    int i;
    make_tmp_dir();
    CHECK(aes_image_alloc(ctx, &img, 0, 5, 3) == AES_ERR_FORMAT);
    CHECK(aes_image_alloc(ctx, &img, 5, 5, 5) == AES_ERR_INVALID_ARG);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 7, 5, 3));
    for (i = 0; i < 7 * 5 * 3; i++) img.pixels[i] = (uint8_t)(i * 13);
    CHECK_OK(ctx, aes_image_save_ppm(ctx, TMP "/x.ppm", &img));
    CHECK_OK(ctx, aes_image_load(ctx, TMP "/x.ppm", &back));
    CHECK(back.width == 7 && back.height == 5 && back.channels == 3 && !memcmp(back.pixels, img.pixels, 105));
    aes_image_free(&back);
    aes_image_free(&img);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 3, 2, 1));
    for (i = 0; i < 6; i++) img.pixels[i] = (uint8_t)(40 * i);
    CHECK_OK(ctx, aes_image_save_ppm(ctx, TMP "/x.pgm", &img));
    CHECK_OK(ctx, aes_image_load(ctx, TMP "/x.pgm", &back));
    CHECK(back.channels == 1 && !memcmp(back.pixels, img.pixels, 6));
    CHECK_OK(ctx, aes_image_to_rgb(ctx, &back, &rgb));
    CHECK(rgb.channels == 3 && rgb.pixels[9] == 120 && rgb.pixels[10] == 120 && rgb.pixels[11] == 120);
    /* dst == src replaces the image in place */
    CHECK_OK(ctx, aes_image_to_rgb(ctx, &back, &back));
    CHECK(back.channels == 3 && !memcmp(back.pixels, rgb.pixels, 18));
    aes_image_free(&back);
    aes_image_free(&rgb);
    aes_image_free(&img);
    CHECK(count_files_containing(TMP, ".tmp-") == 0);
    /* JPEG / PNG are refused with a message */
    CHECK_OK(ctx, aes_write_file_atomic(ctx, TMP "/x.png", "\x89PNG\r\n\x1a\n....", 12));
    CHECK(aes_image_load(ctx, TMP "/x.png", &img) == AES_ERR_UNSUPPORTED && strstr(aes_last_error(ctx), "PNG"));
    CHECK(aes_image_load(ctx, TMP "/missing.ppm", &img) == AES_ERR_IO);
    remove(TMP "/x.ppm");
    remove(TMP "/x.pgm");
    remove(TMP "/x.png");
    aes_ctx_free(ctx);
}

static void test_resize_vs_pil(void) {
    aes_ctx *ctx = tl_ctx();
    manifest_line lines[128];
    int n = read_manifest(lines, 128), i, cases = 0, worst = 0;
    long mismatched = 0;
    for (i = 0; i < n; i++) {
        aes_image src, ref, out;
        size_t k, total;
        if (strcmp(lines[i].kind, "resize")) continue;
        if (!load_fixture(ctx, lines[i].src, &src)) continue;
        if (!load_fixture(ctx, lines[i].ref, &ref)) { aes_image_free(&src); continue; }
        CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &src, lines[i].w, lines[i].h, &out));
        CHECK(out.width == ref.width && out.height == ref.height && out.channels == ref.channels);
        total = (size_t)ref.width * ref.height * ref.channels;
        if (out.pixels && out.width == ref.width && out.height == ref.height && out.channels == ref.channels) {
            int case_worst = 0;
            for (k = 0; k < total; k++) {
                int d = abs((int)out.pixels[k] - (int)ref.pixels[k]);
                if (d) mismatched++;
                if (d > case_worst) case_worst = d;
            }
            CHECK_MSG(case_worst == 0, "%s -> %dx%d: max |diff| %d levels vs PIL", lines[i].src, lines[i].w,
                      lines[i].h, case_worst);
            if (case_worst > worst) worst = case_worst;
        }
        aes_image_free(&out);
        aes_image_free(&ref);
        aes_image_free(&src);
        cases++;
    }
    CHECK(cases >= 20);
    fprintf(stderr, "  resize vs PIL: %d cases, max |diff| %d levels, %ld values differ\n", cases, worst, mismatched);
    aes_ctx_free(ctx);
}

static uint64_t fnv1a64(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 0xCBF29CE484222325ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

/* A float difference in 8-bit levels: d * std * 255 (std <= 0.276). */
#define LEVELS(d) ((d) * 0.27577711 * 255.0)

static void test_clip_vs_pil(void) {
    aes_ctx *ctx = tl_ctx();
    manifest_line lines[128];
    int n = read_manifest(lines, 128), i, full = 0, digests = 0;
    double worst = 0;
    for (i = 0; i < n; i++) {
        aes_image src;
        size_t len = 0, k, count;
        unsigned char *ref;
        float *out;
        int size = lines[i].w;
        if (strcmp(lines[i].kind, "clip") && strcmp(lines[i].kind, "digest")) continue;
        if (!load_fixture(ctx, lines[i].src, &src)) continue;
        ref = (unsigned char *)load_raw(ctx, lines[i].ref, &len);
        count = (size_t)3 * size * size;
        out = (float *)malloc(count * sizeof(float));
        CHECK_OK(ctx, aes_clip_preprocess(ctx, &src, size, out));
        if (ref && !strcmp(lines[i].kind, "clip")) {
            double case_worst = 0;
            CHECK(len == count * 4);
            for (k = 0; k < count && len == count * 4; k++) {
                float r;
                memcpy(&r, ref + 4 * k, 4);
                if (fabs((double)out[k] - r) > case_worst) case_worst = fabs((double)out[k] - r);
            }
            CHECK_MSG(case_worst <= 1e-6, "%s at %d: max |diff| %.3g", lines[i].src, size, case_worst);
            if (case_worst > worst) worst = case_worst;
            full++;
        } else if (ref) {
            /* "AESD", size, count, 0, fnv1a64, then (index, value) pairs */
            uint32_t hdr[4], idx;
            uint64_t hash;
            double case_worst = 0;
            memcpy(hdr, ref, 16);
            memcpy(&hash, ref + 16, 8);
            CHECK(!memcmp(ref, "AESD", 4) && hdr[1] == (uint32_t)size && len == 24 + 8 * (size_t)hdr[2]);
            for (k = 0; k < hdr[2] && len == 24 + 8 * (size_t)hdr[2]; k++) {
                float r;
                memcpy(&idx, ref + 24 + 8 * k, 4);
                memcpy(&r, ref + 28 + 8 * k, 4);
                if (idx < count && fabs((double)out[idx] - r) > case_worst) case_worst = fabs((double)out[idx] - r);
            }
            CHECK_MSG(case_worst <= 1e-6, "%s at %d: max |diff| %.3g on samples", lines[i].src, size, case_worst);
            CHECK_MSG(fnv1a64(out, count * 4) == hash, "%s at %d: the tensor is not bit-identical to PIL's",
                      lines[i].src, size);
            if (case_worst > worst) worst = case_worst;
            digests++;
        }
        free(out);
        aes_free(ref);
        aes_image_free(&src);
    }
    CHECK(full == 5 && digests == 5);
    fprintf(stderr, "  CLIP preprocessing vs PIL+numpy: %d full tensors + %d hashed, max |diff| %.3g (%.3g levels)\n",
            full, digests, worst, LEVELS(worst));
    aes_ctx_free(ctx);
}

/* The windowed resize inside aes_clip_preprocess equals a full resize,
 * a center crop and the normalisation done by hand (up to a photo-sized
 * 1024x768; its speed is in tools/bench_inputs.c). */
static void test_clip_matches_steps(void) {
    static const int sizes[][3] = {{97, 61, 33}, {61, 97, 32}, {50, 50, 7}, {10, 300, 16}, {300, 11, 9}, {8, 8, 8},
                                   {2, 3, 5}, {224, 224, 224}, {225, 400, 224}, {1024, 768, 224}};
    const float mean[3] = {AES_CLIP_MEAN_R, AES_CLIP_MEAN_G, AES_CLIP_MEAN_B};
    const float stdv[3] = {AES_CLIP_STD_R, AES_CLIP_STD_G, AES_CLIP_STD_B};
    aes_ctx *ctx = tl_ctx();
    size_t c;
    int t, ch;
    tl_seed(5);
    for (t = 0; t < (int)(sizeof sizes / sizeof *sizes); t++) {
        for (ch = 1; ch <= 3; ch += 2) {
            int w = sizes[t][0], h = sizes[t][1], size = sizes[t][2], nw, nh, bad = 0;
            aes_image img, big, crop;
            float *out = (float *)malloc(sizeof(float) * 3 * size * size);
            size_t k, plane = (size_t)size * size;
            CHECK_OK(ctx, aes_image_alloc(ctx, &img, w, h, ch));
            for (k = 0; k < (size_t)w * h * ch; k++) img.pixels[k] = (uint8_t)(tl_uniform() * 256);
            nw = w <= h ? size : (int)((double)size * w / h);
            nh = w <= h ? (int)((double)size * h / w) : size;
            CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &img, nw, nh, &big));
            CHECK_OK(ctx, aes_image_center_crop(ctx, &big, size, size, &crop));
            CHECK_OK(ctx, aes_clip_preprocess(ctx, &img, size, out));
            for (c = 0; c < 3; c++)
                for (k = 0; k < plane; k++) {
                    float x = (float)crop.pixels[k * ch + (ch == 1 ? 0 : c)] / 255.0f;
                    if (!same_float(out[c * plane + k], (x - mean[c]) / stdv[c])) bad++;
                }
            CHECK_MSG(bad == 0, "%dx%d (%d ch) at %d: %d values differ", w, h, ch, size, bad);
            aes_image_free(&img);
            aes_image_free(&big);
            aes_image_free(&crop);
            free(out);
        }
    }
    aes_ctx_free(ctx);
}

static void test_center_crop(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img, out;
    int x, y;
    /* offsets: round((H - h) / 2.0) with halves to even */
    static const int cases[][4] = {   /* image w, crop w, expected left */
        {10, 4, 3}, {11, 4, 4}, {13, 4, 4}, {9, 4, 2}, {15, 4, 6}, {5, 4, 0}, {7, 4, 2}, {4, 4, 0}, {3, 4, -0},
        {2, 5, -1}, {1, 5, -2}};
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        int w = cases[i][0], cw = cases[i][1], want = cases[i][2];
        CHECK_OK(ctx, aes_image_alloc(ctx, &img, w, 1, 1));
        for (x = 0; x < w; x++) img.pixels[x] = (uint8_t)(x + 1);
        CHECK_OK(ctx, aes_image_center_crop(ctx, &img, cw, 1, &out));
        for (x = 0; x < cw; x++) {
            int sx = x + want;
            uint8_t expect = (sx >= 0 && sx < w) ? (uint8_t)(sx + 1) : 0;
            CHECK_MSG(out.pixels[x] == expect, "width %d crop %d: pixel %d is %d, want %d", w, cw, x, out.pixels[x],
                      expect);
        }
        aes_image_free(&out);
        aes_image_free(&img);
    }
    /* 2-D, RGB */
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 6, 9, 3));
    for (y = 0; y < 9; y++)
        for (x = 0; x < 6; x++) img.pixels[(y * 6 + x) * 3 + 1] = (uint8_t)(10 * y + x);
    CHECK_OK(ctx, aes_image_center_crop(ctx, &img, 3, 4, &out));
    /* left = round(1.5) = 2, top = round(2.5) = 2 */
    CHECK(out.width == 3 && out.height == 4 && out.pixels[1] == 22 && out.pixels[(3 * 3 + 2) * 3 + 1] == 54);
    aes_image_free(&out);
    aes_image_free(&img);
    aes_ctx_free(ctx);
}

static void test_resize_threads_and_limits(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img, a, b;
    size_t k;
    static const int targets[][2] = {{123, 77}, {700, 460}, {37, 500}, {640, 3}};
    int t;
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 640, 480, 3));
    tl_seed(9);
    for (k = 0; k < (size_t)640 * 480 * 3; k++) img.pixels[k] = (uint8_t)(tl_uniform() * 256);
    for (t = 0; t < 4; t++) {
        aes_threads_set(ctx, 1);
        CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &img, targets[t][0], targets[t][1], &a));
        aes_threads_set(ctx, 2);
        CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &img, targets[t][0], targets[t][1], &b));
        CHECK(a.pixels && b.pixels && !memcmp(a.pixels, b.pixels, (size_t)a.width * a.height * 3));
        aes_image_free(&a);
        aes_image_free(&b);
    }
    /* a constant image stays constant (coefficients sum to 1 in fixed point) */
    memset(img.pixels, 200, (size_t)640 * 480 * 3);
    CHECK_OK(ctx, aes_image_resize_bicubic(ctx, &img, 97, 41, &a));
    for (k = 0, t = 0; k < (size_t)97 * 41 * 3; k++) t += a.pixels[k] != 200;
    CHECK(t == 0);
    aes_image_free(&a);
    /* limits and bad arguments */
    aes_limit_set(ctx, AES_LIMIT_IMAGE_PIXELS, 1000000);
    CHECK(aes_image_resize_bicubic(ctx, &img, 2000, 2000, &a) == AES_ERR_LIMIT);
    CHECK(aes_image_resize_bicubic(ctx, &img, 0, 10, &a) == AES_ERR_FORMAT);
    {
        float out[3 * 4 * 4];
        CHECK(aes_clip_preprocess(ctx, &img, 0, out) == AES_ERR_INVALID_ARG);
        CHECK(aes_clip_preprocess(ctx, &img, 2000, out) == AES_ERR_LIMIT);
        CHECK(aes_clip_preprocess(ctx, NULL, 4, out) == AES_ERR_INVALID_ARG);
        /* a very elongated image: only the crop is computed, no huge resize */
        aes_image_free(&img);
        CHECK_OK(ctx, aes_image_alloc(ctx, &img, 1, 100000, 1));
        CHECK_OK(ctx, aes_clip_preprocess(ctx, &img, 4, out));
    }
    aes_image_free(&img);
    aes_ctx_free(ctx);
}

/* The CLI end to end, when the test runs under `make test` (AES_CLI set). */
static void test_cli_preprocess(void) {
    const char *cli = tl_cli();
    char cmd[1024];
    aes_ctx *ctx;
    void *got = NULL, *ref = NULL;
    size_t glen = 0, rlen = 0;
    if (!cli) return;
    make_tmp_dir();
    ctx = tl_ctx();
    remove(TMP "/cli.f32");
    snprintf(cmd, sizeof cmd, "%s preprocess --size 32 " FIX "gray_45x70.pgm --out " TMP "/cli.f32 >/dev/null", cli);
    CHECK(system(cmd) == 0);
    CHECK_OK(ctx, aes_read_file(ctx, TMP "/cli.f32", &got, &glen));
    CHECK_OK(ctx, aes_read_file(ctx, FIX "clip32_gray_45x70.f32", &ref, &rlen));
    CHECK(got && ref && glen == rlen && glen == 3 * 32 * 32 * 4 && !memcmp(got, ref, glen));
    snprintf(cmd, sizeof cmd, "%s preprocess --size 32 " TMP "/missing.ppm --out " TMP "/cli2.f32 2>/dev/null", cli);
    CHECK(system(cmd) != 0);
    CHECK(access(TMP "/cli2.f32", F_OK) != 0);
    aes_free(got);
    aes_free(ref);
    remove(TMP "/cli.f32");
    aes_ctx_free(ctx);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    RUN(test_dtypes);
    RUN(test_st_roundtrip);
    RUN(test_st_serialize_errors);
    RUN(test_st_file);
    RUN(test_tensor_to_f32);
    RUN(test_st_hostile);
    RUN(test_st_valid_edges);
    RUN(test_st_shared_file);
    RUN(test_json_valid);
    RUN(test_json_numbers);
    RUN(test_json_invalid);
    RUN(test_json_big_object);
    RUN(test_files);
    RUN(test_pnm_vs_pil);
    RUN(test_pnm_handmade);
    RUN(test_pnm_malformed);
    RUN(test_image_basics);
    RUN(test_resize_vs_pil);
    RUN(test_clip_vs_pil);
    RUN(test_clip_matches_steps);
    RUN(test_center_crop);
    RUN(test_resize_threads_and_limits);
    RUN(test_cli_preprocess);
    return tl_report();
}
