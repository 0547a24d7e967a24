/* test_hostile.c - hostile input gets a clear error, never a crash: the
 * regression tests of the bugs the fuzzers (tests/fuzz/, tools/fuzz.sh)
 * and the hardening review found, and the hostile cases of issue 7 that the
 * other test files do not cover yet (absurd sizes, NaN / Inf in weights and
 * inputs, zero-size and over-limit images, bad text to the tokenizer, a
 * model that does not match the index).  Every case checks the status AND
 * that the message says what is wrong. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

#include <stdint.h>


/* status == want and the message contains every one of the needles */
#define EXPECT(ctx, call, want, needle1, needle2)                                                              \
    do {                                                                                                       \
        aes_status st_ = (call);                                                                               \
        const char *msg_ = aes_last_error(ctx);                                                                \
        CHECK_MSG(st_ == (want), "%s -> %d (%s), wanted %d", #call, (int)st_, msg_, (int)(want));              \
        CHECK_MSG(strstr(msg_, needle1) != NULL && strstr(msg_, needle2) != NULL,                              \
                  "%s: message '%s' should mention '%s' and '%s'", #call, msg_, needle1, needle2);              \
        aes_clear_error(ctx);                                                                                  \
    } while (0)

/* A small CLIP model (both towers, 16x16 images, 40-token vocabulary). */
static aes_clip_config tiny_config(void) {
    aes_clip_config c;
    memset(&c, 0, sizeof c);
    c.image_size = 16; c.patch_size = 8;
    c.vision_width = 8; c.vision_layers = 1; c.vision_heads = 2; c.vision_mlp = 16;
    c.context_length = 8; c.vocab_size = 40;
    c.text_width = 8; c.text_layers = 1; c.text_heads = 2; c.text_mlp = 16;
    c.embed_dim = 8;
    c.has_vision = 1;
    c.has_text = 1;
    return c;
}

/* Serialises a random tiny model (HF layout, F32) and overwrites element
 * `elem` of tensor `name` with `value` inside the buffer. */
static void *tiny_checkpoint_with(aes_ctx *ctx, const char *name, size_t elem, float value, size_t *len) {
    aes_clip_config c = tiny_config();
    aes_clip *m = NULL;
    aes_safetensors *st = NULL;
    void *buf = NULL;
    const aes_tensor_view *t;
    if (aes_clip_create_random(ctx, &c, 11, &m) != AES_OK) return NULL;
    if (aes_clip_serialize(ctx, m, AES_LAYOUT_HF, AES_DTYPE_F32, &buf, len) != AES_OK) { aes_clip_free(m); return NULL; }
    aes_clip_free(m);
    if (aes_safetensors_load_memory(ctx, buf, *len, 0, &st) != AES_OK) { aes_free(buf); return NULL; }
    t = aes_safetensors_find(st, name);
    if (!t || t->dtype != AES_DTYPE_F32 || (size_t)t->numel <= elem) {
        aes_safetensors_close(st);
        aes_free(buf);
        return NULL;
    }
    memcpy((unsigned char *)t->data + 4 * elem, &value, 4);   /* the view points into buf */
    aes_safetensors_close(st);
    return buf;
}

/* ========================================================================
 *  Bugs found by fuzzing / hardening (one regression test each)
 * ===================================================================== */

/* fuzz_merges: a gzip member that inflates to nothing left the output
 * pointer NULL, and its CRC was computed over NULL + 0 (undefined behaviour,
 * UBSan "applying zero offset to null pointer"). */
static void test_gzip_empty_member(void) {
    static const unsigned char one[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3,  /* header */
                                        0x03, 0x00,                          /* final fixed block: end only */
                                        0, 0, 0, 0, 0, 0, 0, 0};             /* CRC 0, size 0 */
    static const unsigned char two_bad[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x03, 0x00, 0, 0, 0, 0, 1, 0, 0, 0};
    aes_ctx *ctx = tl_ctx();
    aes_tokenizer *tok = NULL, *plain = NULL;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, (const char *)one, sizeof one, 0, &tok));
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, "", 0, 0, &plain));   /* the same as no merges */
    CHECK(tok && plain && aes_tokenizer_vocab_size(tok) == aes_tokenizer_vocab_size(plain));
    aes_tokenizer_free(tok);
    aes_tokenizer_free(plain);
    tok = NULL;
    /* a second empty member whose size field says 1 */
    EXPECT(ctx, aes_tokenizer_load_merges_memory(ctx, (const char *)two_bad, sizeof two_bad, 0, &tok), AES_ERR_FORMAT,
           "gzip", "checksum");
    CHECK(tok == NULL);
    aes_ctx_free(ctx);
}

/* Hardening: a checkpoint with an infinity or a NaN in a weight is refused
 * with the tensor's name, so neither inference nor training (which resumes
 * by loading the checkpoint as the model) starts from it. */
static void test_trainer_checkpoint_inf(void) {
    const char *names[2] = {"vision_model.encoder.layers.0.mlp.fc1.weight", "text_model.final_layer_norm.bias"};
    aes_ctx *ctx = tl_ctx();
    int i;
    for (i = 0; i < 2; i++) {
        size_t len = 0;
        void *buf = tiny_checkpoint_with(ctx, names[i], i ? 0 : 3, i ? NAN : INFINITY, &len);
        aes_clip *m = NULL;
        CHECK_MSG(buf != NULL, "tiny checkpoint: %s", aes_last_error(ctx));
        if (!buf) continue;
        EXPECT(ctx, aes_clip_load_memory(ctx, buf, len, NULL, NULL, &m), AES_ERR_NUMERIC, names[i],
               i ? "NaN" : "infinity");
        CHECK(m == NULL);
        aes_free(buf);
    }
    aes_ctx_free(ctx);
}

/* Hardening: a NaN / Inf pixel gave a NaN embedding and AES_OK. */
static void test_clip_nan_pixels(void) {
    aes_ctx *ctx = tl_ctx();
    aes_clip_config c = tiny_config();
    aes_clip *m = NULL;
    float px[2 * 3 * 16 * 16], emb[2 * 8];
    int i;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 5, &m));
    if (!m) { aes_ctx_free(ctx); return; }
    for (i = 0; i < 2 * 3 * 16 * 16; i++) px[i] = 0.01f * (float)(i % 50) - 0.25f;
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 2, emb));
    for (i = 0; i < 16; i++) CHECK(emb[i] - emb[i] == 0.0f);
    px[3 * 16 * 16 + 17] = NAN;                       /* image 1, pixel 17 */
    EXPECT(ctx, aes_clip_encode_image(ctx, m, px, 2, emb), AES_ERR_NUMERIC, "pixel 17 of image 1", "NaN");
    px[3 * 16 * 16 + 17] = 0.0f;
    px[5] = -INFINITY;
    EXPECT(ctx, aes_clip_encode_image(ctx, m, px, 2, emb), AES_ERR_NUMERIC, "pixel 5 of image 0", "infinite");
    aes_clip_free(m);
    aes_ctx_free(ctx);
}

/* Hardening: optimizer state with NaN / Inf moments, a negative second
 * moment or an absurd step count loaded, and the next step turned the
 * parameters into NaN (or overflowed the step counter). */
static void test_optim_state_hostile(void) {
    aes_ctx *ctx = tl_ctx();
    aes_optim_config cfg = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_optim *opt = NULL;
    unsigned char *buf = NULL;
    size_t len = 0, data;
    float p[8], g[8];
    int i;
    CHECK_OK(ctx, aes_optim_create(ctx, &cfg, 8, NULL, 0, &opt));
    if (!opt) { aes_ctx_free(ctx); return; }
    for (i = 0; i < 8; i++) { p[i] = 0.1f * (float)i; g[i] = 0.5f - 0.1f * (float)i; }
    CHECK_OK(ctx, aes_optim_step(ctx, opt, p, g, 1e-3f, NULL));
    CHECK_OK(ctx, aes_optim_save_memory(ctx, opt, &buf, &len));
    if (!buf) { aes_optim_free(opt); aes_ctx_free(ctx); return; }
    data = len - 2 * 8 * 4;                           /* state.0 (m) then state.1 (v), 8 floats each */
    {
        unsigned char *bad = (unsigned char *)malloc(len);
        float v;
        memcpy(bad, buf, len);
        v = INFINITY;
        memcpy(bad + data + 4 * 2, &v, 4);            /* m[2] */
        EXPECT(ctx, aes_optim_load_memory(ctx, opt, bad, len), AES_ERR_NUMERIC, "state.0[2]", "not finite");
        memcpy(bad, buf, len);
        v = -1.0f;
        memcpy(bad + data + 32 + 4 * 7, &v, 4);       /* v[7] < 0 */
        EXPECT(ctx, aes_optim_load_memory(ctx, opt, bad, len), AES_ERR_NUMERIC, "state.1[7]", ">= 0");
        /* fuzz_optim: a finite but huge first moment beside a tiny second
         * one loaded, and the next step sent parameter 9 to -5.8e31 */
        memcpy(bad, buf, len);
        v = 7.5e31f;
        memcpy(bad + data + 4 * 1, &v, 4);            /* m[1] */
        EXPECT(ctx, aes_optim_load_memory(ctx, opt, bad, len), AES_ERR_NUMERIC, "state.0[1]", "too large");
        CHECK(aes_optim_steps_done(opt) == 1);        /* a refused file changes nothing */
        free(bad);
    }
    {   /* every state AdamW really reaches stays loadable (the bound is
         * exact, whatever the betas), also with wild gradients */
        static const float betas[3][2] = {{0.9f, 0.999f}, {0.99f, 0.9f}, {0.5f, 0.25f}};
        int b, step;
        for (b = 0; b < 3; b++) {
            aes_optim_config c2 = aes_optim_config_default(AES_OPTIM_ADAMW);
            aes_optim *o2 = NULL;
            unsigned char *s2 = NULL;
            size_t l2 = 0;
            c2.beta1 = betas[b][0];
            c2.beta2 = betas[b][1];
            CHECK_OK(ctx, aes_optim_create(ctx, &c2, 8, NULL, 0, &o2));
            if (!o2) continue;
            tl_seed(99 + (unsigned)b);
            for (step = 0; step < 60; step++) {
                for (i = 0; i < 8; i++)
                    g[i] = (float)((step % 7 == 3 ? 1e12 : step % 5 == 0 ? 1e-12 : 1.0) * tl_randf());
                CHECK_OK(ctx, aes_optim_step(ctx, o2, p, g, 1e-3f, NULL));
                if (step % 6 == 5 || step < 3) {
                    CHECK_OK(ctx, aes_optim_save_memory(ctx, o2, &s2, &l2));
                    CHECK_MSG(aes_optim_load_memory(ctx, o2, s2, l2) == AES_OK, "betas %g %g, step %d: %s",
                              (double)c2.beta1, (double)c2.beta2, step, aes_last_error(ctx));
                    aes_free(s2);
                    s2 = NULL;
                }
            }
            aes_optim_free(o2);
        }
    }
    {   /* a step count past 2^31 */
        char *text = (char *)malloc(len + 32), *at;
        size_t hl = 0;
        int k;
        for (k = 0; k < 8; k++) hl |= (size_t)buf[k] << (8 * k);
        memcpy(text, buf + 8, hl);
        text[hl] = 0;
        at = strstr(text, "\"step\":\"1\"");
        CHECK(at != NULL);
        if (at) {
            /* the header rebuilt with a 12-digit step (padded to 8 bytes again) */
            unsigned char *bad = (unsigned char *)malloc(len + 32);
            char hdr[4096];
            size_t nl = (size_t)snprintf(hdr, sizeof hdr, "%.*s\"step\":\"999999999999\"%s", (int)(at - text), text,
                                         at + strlen("\"step\":\"1\""));
            while (nl % 8) hdr[nl++] = ' ';
            for (k = 0; k < 8; k++) bad[k] = (unsigned char)(nl >> (8 * k));
            memcpy(bad + 8, hdr, nl);
            memcpy(bad + 8 + nl, buf + 8 + hl, len - 8 - hl);
            EXPECT(ctx, aes_optim_load_memory(ctx, opt, bad, 8 + nl + (len - 8 - hl)), AES_ERR_FORMAT, "bad step",
                   "999999999999");
            free(bad);
        }
        free(text);
    }
    CHECK_OK(ctx, aes_optim_load_memory(ctx, opt, buf, len));   /* the original still loads */
    aes_free(buf);
    aes_optim_free(opt);
    aes_ctx_free(ctx);
}

/* ========================================================================
 *  Hostile inputs of issue 7 not covered elsewhere
 * ===================================================================== */

/* A safetensors header that claims 2^60 bytes (test_io checks the status). */
static void test_st_header_2_60(void) {
    unsigned char b[16] = {0, 0, 0, 0, 0, 0, 0, 0x10, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    aes_ctx *ctx = tl_ctx();
    aes_safetensors *st = NULL;
    EXPECT(ctx, aes_safetensors_load_memory(ctx, b, sizeof b, 0, &st), AES_ERR_LIMIT, "header length 1152921504606846976",
           "over the limit");
    CHECK(st == NULL);
    /* the same through the CLIP and head loaders */
    {
        aes_clip *m = NULL;
        aes_head h;
        EXPECT(ctx, aes_clip_load_memory(ctx, b, sizeof b, NULL, NULL, &m), AES_ERR_LIMIT, "header length",
               "over the limit");
        CHECK(m == NULL);
        memset(&h, 0, sizeof h);
        EXPECT(ctx, aes_head_load_memory(ctx, b, sizeof b, &h), AES_ERR_LIMIT, "header length", "over the limit");
    }
    aes_ctx_free(ctx);
}

static void test_clip_inf_weight(void) {
    const char *name = "vision_model.encoder.layers.0.mlp.fc1.weight";
    aes_ctx *ctx = tl_ctx();
    size_t len = 0;
    void *buf = tiny_checkpoint_with(ctx, name, 3, -INFINITY, &len);
    aes_clip *m = NULL;
    CHECK_MSG(buf != NULL, "tiny checkpoint: %s", aes_last_error(ctx));
    if (buf) {
        EXPECT(ctx, aes_clip_load_memory(ctx, buf, len, NULL, NULL, &m), AES_ERR_NUMERIC, name, "infinity");
        CHECK(m == NULL);
        aes_free(buf);
    }
    aes_ctx_free(ctx);
}

static void test_head_nan_weight(void) {
    aes_ctx *ctx = tl_ctx();
    aes_head h, back;
    void *buf = NULL;
    size_t len = 0;
    float e[8] = {1, 2, 3, 4, 5, 6, 7, 8}, s = 0;
    memset(&h, 0, sizeof h);
    memset(&back, 0, sizeof back);
    CHECK_OK(ctx, aes_head_init(ctx, &h, AES_HEAD_LINEAR, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 8, NULL, 1));
    if (!h.w[0]) { aes_ctx_free(ctx); return; }
    h.w[0][2] = NAN;
    CHECK_OK(ctx, aes_head_serialize(ctx, &h, NULL, 0, &buf, &len));
    EXPECT(ctx, aes_head_load_memory(ctx, buf, len, &back), AES_ERR_NUMERIC, "'weight'", "NaN or Inf");
    aes_free(buf);
    /* and a NaN embedding to score */
    h.w[0][2] = 0.5f;
    e[3] = NAN;
    EXPECT(ctx, aes_head_score(ctx, &h, e, 1, &s), AES_ERR_NUMERIC, "embedding 0", "not finite");
    aes_head_free(&h);
    aes_ctx_free(ctx);
}

static void test_zero_size_image(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img, z, out;
    unsigned char px[3] = {1, 2, 3};
    float pix[3 * 16 * 16];
    memset(&img, 0, sizeof img);
    EXPECT(ctx, aes_image_decode_pnm(ctx, "P6 0 0 255\n", 11, &img), AES_ERR_FORMAT, "0 x 0", "empty");
    CHECK(img.pixels == NULL);
    EXPECT(ctx, aes_image_decode_pnm(ctx, "P5 7 0 255\n", 11, &img), AES_ERR_FORMAT, "7 x 0", "empty");
    /* an image struct that says 0 x 5 */
    memset(&z, 0, sizeof z);
    z.width = 0; z.height = 5; z.channels = 3; z.pixels = px;
    EXPECT(ctx, aes_clip_preprocess(ctx, &z, 16, pix), AES_ERR_FORMAT, "0 x 5", "empty");
    memset(&out, 0, sizeof out);
    EXPECT(ctx, aes_image_resize_bicubic(ctx, &z, 4, 4, &out), AES_ERR_FORMAT, "0 x 5", "empty");
    aes_ctx_free(ctx);
}

static void test_huge_image_limit(void) {
    aes_ctx *ctx = tl_ctx();
    aes_image img;
    memset(&img, 0, sizeof img);
    /* the default limit (2^28 pixels): refused from the header alone */
    EXPECT(ctx, aes_image_decode_pnm(ctx, "P6 100000 100000 255\n", 21, &img), AES_ERR_LIMIT, "100000 x 100000",
           "over the limit of 268435456 pixels");
    CHECK(img.pixels == NULL);
    /* a limit the caller sets */
    aes_limit_set(ctx, AES_LIMIT_IMAGE_PIXELS, 1000);
    EXPECT(ctx, aes_image_decode_pnm(ctx, "P5 40 30 255\n", 13, &img), AES_ERR_LIMIT, "40 x 30",
           "over the limit of 1000 pixels");
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 40, 25, 1));
    {   /* resizing past the limit */
        aes_image big;
        memset(&big, 0, sizeof big);
        CHECK(aes_image_resize_bicubic(ctx, &img, 100, 100, &big) == AES_ERR_LIMIT);
        CHECK_MSG(strstr(aes_last_error(ctx), "limit") != NULL, "message: %s", aes_last_error(ctx));
        CHECK(big.pixels == NULL);
    }
    aes_image_free(&img);
    aes_ctx_free(ctx);
}

static void test_tokenizer_bad_text(void) {
    static const char *const caps[] = {"a photo of a cat", "a photo of a dog", "caf\xc3\xa9 au lait"};
    static const char bad_utf8[] = "\xff\xfe a \xc3\x28 caf\xe9 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf end";
    aes_ctx *ctx = tl_ctx();
    aes_tokenizer *tok = NULL;
    int32_t ids[AES_TOKENIZER_CONTEXT], bad_ids[3];
    int n = 0, i;
    size_t nraw = 0;
    char out[256];
    CHECK_OK(ctx, aes_tokenizer_train(ctx, caps, 3, 30, &tok));
    if (!tok) { aes_ctx_free(ctx); return; }
    /* invalid UTF-8 (stray bytes, truncated, surrogate, past U+10FFFF,
     * overlong) is encoded byte by byte, as CLIP's byte-level BPE does */
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, bad_utf8, sizeof bad_utf8 - 1, ids, AES_TOKENIZER_CONTEXT, &n));
    CHECK(n > 2 && ids[0] == (aes_tokenizer_vocab_size(tok) - 2) && ids[n - 1] == (aes_tokenizer_vocab_size(tok) - 1));
    for (i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < aes_tokenizer_vocab_size(tok));
    CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, ids, n, out, sizeof out, NULL));
    CHECK(strstr(out, "end") != NULL);
    /* empty and all-space strings: just start and end */
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "", 0, ids, AES_TOKENIZER_CONTEXT, &n));
    CHECK(n == 2);
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "", 0, NULL, 0, &nraw));
    CHECK(nraw == 0);
    /* ids outside the vocabulary are an error naming the id */
    bad_ids[0] = (aes_tokenizer_vocab_size(tok) - 2);
    bad_ids[1] = 999999;
    bad_ids[2] = (aes_tokenizer_vocab_size(tok) - 1);
    EXPECT(ctx, aes_tokenizer_decode(ctx, tok, bad_ids, 3, out, sizeof out, NULL), AES_ERR_INVALID_ARG, "999999",
           "outside the vocabulary");
    bad_ids[1] = -5;
    EXPECT(ctx, aes_tokenizer_decode(ctx, tok, bad_ids, 3, out, sizeof out, NULL), AES_ERR_INVALID_ARG, "-5",
           "outside the vocabulary");
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* A query model that is not the one the index was built with. */
static void test_model_index_mismatch(void) {
    aes_ctx *ctx = tl_ctx();
    aes_clip_config c = tiny_config();
    aes_clip *a = NULL, *b = NULL;
    aes_index *idx = NULL;
    float e[8] = {1, 0, 0, 0, 0, 0, 0, 0}, q[8] = {NAN, 1, 0, 0, 0, 0, 0, 0};
    aes_hit hits[2];
    int nh = 0;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 1, &a));
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 2, &b));   /* same shape, other weights */
    if (!a || !b) { aes_clip_free(a); aes_clip_free(b); aes_ctx_free(ctx); return; }
    CHECK(strcmp(aes_clip_id(a), aes_clip_id(b)) != 0);
    CHECK_OK(ctx, aes_index_create(ctx, 8, AES_INDEX_F32, aes_clip_id(a), "", &idx));
    if (idx) {
        CHECK_OK(ctx, aes_index_add(ctx, idx, "a.jpg", 1, 1, e, NAN));
        CHECK_OK(ctx, aes_index_check_model(ctx, idx, aes_clip_id(a)));
        EXPECT(ctx, aes_index_check_model(ctx, idx, aes_clip_id(b)), AES_ERR_MISMATCH, aes_clip_id(a), aes_clip_id(b));
        /* and a non-finite query */
        EXPECT(ctx, aes_index_search(ctx, idx, q, 1, 2, 0, hits, &nh), AES_ERR_NUMERIC, "query 0", "not finite");
        aes_index_free(idx);
    }
    aes_clip_free(a);
    aes_clip_free(b);
    aes_ctx_free(ctx);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    RUN(test_gzip_empty_member);
    RUN(test_trainer_checkpoint_inf);
    RUN(test_clip_nan_pixels);
    RUN(test_optim_state_hostile);
    RUN(test_st_header_2_60);
    RUN(test_clip_inf_weight);
    RUN(test_head_nan_weight);
    RUN(test_zero_size_image);
    RUN(test_huge_image_limit);
    RUN(test_tokenizer_bad_text);
    RUN(test_model_index_mismatch);
    return tl_report();
}
