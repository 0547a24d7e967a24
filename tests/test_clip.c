/* test_clip.c - the CLIP model of aesalign.h against tools/clip_reference.py.
 *
 * The fixtures (tests/fixtures/clip, made by `tools/clip_reference.py fixtures`)
 * hold a tiny random CLIP in both layouts and three dtypes, with inputs and
 * reference embeddings computed in float64 from the weights exactly as
 * stored.  "Relative error" below is max_i |ours_i - ref_i| / max_i |ref_i|
 * per embedding (elementwise ratios are meaningless near zero).
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

/* The 64-bit weight hash that ends aes_clip_id. */
static uint64_t clip_hash(const aes_clip *m) { return (void)aes_clip_id(m), m->hash; }

#define FIX "tests/fixtures/clip/"

static aes_ctx *ctx;

/* ---- reference data ------------------------------------------------------------ */
static float refbuf[64][16384];
static int nref;

/* A tensor of the refs file as floats (static storage, fine for a test). */
static const float *ref(const char *name, int64_t *numel) {
    aes_safetensors *st = NULL;
    const aes_tensor_view *v;
    float *dst = NULL;
    if (aes_safetensors_open(ctx, FIX "clip_refs.safetensors", &st) != AES_OK) {
        tl_fail_at(__FILE__, __LINE__, "refs: %s", aes_last_error(ctx));
        return NULL;
    }
    v = aes_safetensors_find(st, name);
    if (!v || v->numel > 16384 || nref >= 64) {
        tl_fail_at(__FILE__, __LINE__, "refs: no tensor %s", name);
    } else {
        dst = refbuf[nref++];
        if (v->dtype == AES_DTYPE_I32) memcpy(dst, v->data, (size_t)v->numel * 4); /* tokens: raw bits */
        else CHECK_OK(ctx, aes_tensor_to_f32(ctx, v, dst, (size_t)v->numel));
        if (numel) *numel = v->numel;
    }
    aes_safetensors_close(st);
    if (nref >= 48) nref = 0; /* recycle: callers use a few at a time */
    return dst;
}

static const float *pixels(void) { return ref("pixels", NULL); }
static const int32_t *tokens(void) {
    const float *t = ref("tokens", NULL);
    return (const int32_t *)(const void *)t;
}

#define NIMG 3
#define NTXT 4
#define EMB 24

/* Compares B rows of width n; returns the worst relative error. */
static double compare(const float *ours, const float *want, int B, int n, double tol, const char *what) {
    int b, i;
    double worst = 0.0;
    for (b = 0; b < B; b++) {
        const float *x = ours + (size_t)b * n, *y = want + (size_t)b * n;
        double dot = 0, nx = 0, ny = 0, maxd = 0, maxy = 0, cosv, rel;
        for (i = 0; i < n; i++) {
            dot += (double)x[i] * y[i];
            nx += (double)x[i] * x[i];
            ny += (double)y[i] * y[i];
            maxd = fmax(maxd, fabs((double)x[i] - y[i]));
            maxy = fmax(maxy, fabs((double)y[i]));
        }
        cosv = dot / sqrt(nx * ny);
        rel = maxd / maxy;
        worst = fmax(worst, rel);
        CHECK_MSG(cosv >= 0.99999, "%s row %d: cosine %.8f", what, b, cosv);
        CHECK_MSG(rel <= tol, "%s row %d: relative error %.3g > %.3g", what, b, rel, tol);
    }
    if (getenv("TL_VERBOSE")) fprintf(stderr, "    %-34s max rel err %.3g\n", what, worst);
    return worst;
}

static aes_clip *load(const char *file, const aes_clip_load_opts *o) {
    aes_clip *m = NULL;
    aes_status st = aes_clip_load(ctx, file, o, &m);
    CHECK_MSG(st == AES_OK, "loading %s: %s", file, aes_last_error(ctx));
    return m;
}

/* Encodes the reference inputs and compares with refs "<tag>_<act>_{image,text}". */
static void check_model(aes_clip *m, const char *tag, const char *act, double tol) {
    float out[NTXT * EMB];
    char name[96];
    const aes_clip_config *c;
    if (!m) return;
    c = aes_clip_config_get(m);
    if (c->has_vision) {
        snprintf(name, sizeof name, "%s_%s_image", tag, act);
        CHECK_OK(ctx, aes_clip_encode_image(ctx, m, pixels(), NIMG, out));
        compare(out, ref(name, NULL), NIMG, EMB, tol, name);
    }
    if (c->has_text) {
        snprintf(name, sizeof name, "%s_%s_text", tag, act);
        CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tokens(), NTXT, out));
        compare(out, ref(name, NULL), NTXT, EMB, tol, name);
    }
}

/* ---- layouts, dtypes, activations ----------------------------------------------- */

static void test_hf_f32(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL); /* config.json beside: quick_gelu, 2 heads */
    const aes_clip_config *c;
    const float *ls;
    if (!m) return;
    c = aes_clip_config_get(m);
    CHECK(c->layout == AES_LAYOUT_HF && c->has_vision && c->has_text);
    CHECK(c->image_size == 32 && c->patch_size == 8 && c->vision_width == 32 && c->vision_layers == 2);
    CHECK(c->vision_heads == 2 && c->vision_mlp == 128 && c->context_length == 16 && c->vocab_size == 256);
    CHECK(c->text_width == 32 && c->text_layers == 2 && c->text_heads == 2 && c->text_mlp == 128);
    CHECK(c->embed_dim == EMB && c->act == AES_ACT_QUICK_GELU && fabsf(c->ln_eps - 1e-5f) < 1e-12f);
    check_model(m, "f32", "quick_gelu", 1e-4);
    ls = ref("logit_scale", NULL);
    CHECK_NEAR(aes_clip_logit_scale(m), expf(ls[0]), 1e-4);
    aes_clip_free(m);
}

static void test_hf_f32_gelu(void) {
    aes_clip_load_opts o;
    aes_clip *m;
    memset(&o, 0, sizeof o);
    o.config_path = FIX "config_gelu.json";
    m = load(FIX "clip_hf_f32.safetensors", &o);
    if (m) CHECK(aes_clip_config_get(m)->act == AES_ACT_GELU);
    check_model(m, "f32", "gelu", 1e-4);
    aes_clip_free(m);
    /* the option overrides the config beside the file */
    memset(&o, 0, sizeof o);
    o.act = AES_ACT_GELU;
    m = load(FIX "clip_hf_f32.safetensors", &o);
    check_model(m, "f32", "gelu", 1e-4);
    aes_clip_free(m);
}

static void test_openai_f16(void) {
    aes_clip_load_opts o;
    aes_clip *m = load(FIX "clip_openai_f16.safetensors", NULL);
    if (m) CHECK(aes_clip_config_get(m)->layout == AES_LAYOUT_OPENAI);
    check_model(m, "f16", "quick_gelu", 1e-4);
    aes_clip_free(m);
    /* open_clip's config: quick_gelu absent means GELU */
    memset(&o, 0, sizeof o);
    o.config_path = FIX "open_clip_config.json";
    m = load(FIX "clip_openai_f16.safetensors", &o);
    if (m) CHECK(aes_clip_config_get(m)->act == AES_ACT_GELU && aes_clip_config_get(m)->text_heads == 2);
    check_model(m, "f16", "gelu", 1e-4);
    aes_clip_free(m);
    /* no config at all: heads must be given (width 32 / 64 would be 1) */
    memset(&o, 0, sizeof o);
    o.no_config_search = 1;
    o.vision_heads = o.text_heads = 2;
    m = load(FIX "clip_openai_f16.safetensors", &o);
    check_model(m, "f16", "quick_gelu", 1e-4);
    aes_clip_free(m);
}

static void test_keep_16bit(void) {
    aes_clip_load_opts o;
    aes_clip *m;
    memset(&o, 0, sizeof o);
    o.keep_16bit = 1;
    /* f32 file with its matrices narrowed to f16 (vectors stay f32): within
     * the f16 rounding budget of the f32 reference */
    m = load(FIX "clip_hf_f32.safetensors", &o);
    if (m) {
        CHECK(aes_clip_params_data(m) == NULL && aes_clip_params_get(m)->vision_blocks[1].fc1_w.h != NULL);
        CHECK(aes_clip_params_get(m)->token_emb.h != NULL && !aes_clip_params_get(m)->token_emb.h_is_bf16);
        CHECK(aes_clip_params_get(m)->vision_blocks[1].fc1_b != NULL);
    }
    check_model(m, "f32", "quick_gelu", 2e-3);
    aes_clip_free(m);
    m = load(FIX "clip_openai_f16.safetensors", &o);
    check_model(m, "f16", "quick_gelu", 1e-4);
    aes_clip_free(m);
    m = load(FIX "clip_hf_vision_bf16.safetensors", &o);
    if (m) CHECK(aes_clip_params_get(m)->vision_blocks[0].qkv_w.h_is_bf16);
    check_model(m, "bf16", "quick_gelu", 1e-4);
    aes_clip_free(m);
}

static void test_single_towers(void) {
    float out[NTXT * EMB];
    aes_clip *m = load(FIX "clip_hf_vision_bf16.safetensors", NULL);
    if (m) {
        CHECK(aes_clip_config_get(m)->has_vision && !aes_clip_config_get(m)->has_text);
        CHECK(aes_clip_encode_text(ctx, m, tokens(), NTXT, out) == AES_ERR_INVALID_ARG);
    }
    check_model(m, "bf16", "quick_gelu", 1e-4);
    aes_clip_free(m);
    m = load(FIX "clip_openai_text_f32.safetensors", NULL);
    if (m) {
        CHECK(!aes_clip_config_get(m)->has_vision && aes_clip_config_get(m)->has_text);
        CHECK(aes_clip_encode_image(ctx, m, pixels(), NIMG, out) == AES_ERR_INVALID_ARG);
    }
    check_model(m, "f32", "quick_gelu", 1e-4);
    aes_clip_free(m);
}

/* The 16-bit references differ from the f32 ones by the weight rounding:
 * small for f16 (< 2e-3), larger for bf16 -- which is why each file is
 * checked against the reference of its own stored weights. */
static void test_rounding_budget(void) {
    const float *a = ref("f16_quick_gelu_image", NULL), *b = ref("f32_quick_gelu_image", NULL);
    double maxd = 0, maxy = 0;
    int i;
    /* plain comparisons, not an fmax() reduction: that loop crashes the
     * vectoriser of Debian's aarch64 gcc 12.2 at -O2 (internal compiler error) */
    for (i = 0; i < NIMG * EMB; i++) {
        double d = fabs((double)a[i] - b[i]), y = fabs((double)b[i]);
        if (d > maxd) maxd = d;
        if (y > maxy) maxy = y;
    }
    CHECK(maxd / maxy < 2e-3 && maxd > 0);
}

/* ---- identity ------------------------------------------------------------------------ */
static void test_hash(void) {
    aes_clip_load_opts o;
    aes_clip *a, *b, *c, *d;
    memset(&o, 0, sizeof o);
    o.keep_16bit = 1;
    a = load(FIX "clip_openai_f16.safetensors", NULL); /* f16 values as f32 */
    b = load(FIX "clip_openai_f16.safetensors", &o);   /* the same values kept in 16 bits */
    c = load(FIX "clip_hf_f32.safetensors", NULL);     /* f32 values */
    memset(&o, 0, sizeof o);
    o.act = AES_ACT_GELU;
    d = load(FIX "clip_hf_f32.safetensors", &o);       /* same values, other activation */
    if (a && b && c && d) {
        CHECK(clip_hash(a) == clip_hash(b));
        CHECK(clip_hash(a) != clip_hash(c));
        CHECK(clip_hash(c) != clip_hash(d));
        CHECK(strstr(aes_clip_id(c), "clip-v32p8w32l2-t16w32l2-e24-quick_gelu-") == aes_clip_id(c));
        CHECK(strstr(aes_clip_id(d), "-gelu-") != NULL);
    }
    aes_clip_free(a); aes_clip_free(b); aes_clip_free(c); aes_clip_free(d);
}

/* Saving in either layout and dtype and loading back: the same model
 * (same hash: the hash does not depend on the layout), the same outputs. */
static void test_save_roundtrip(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL), *back = NULL;
    aes_clip_load_opts o;
    void *buf = NULL;
    size_t len = 0;
    int layout;
    if (!m) return;
    memset(&o, 0, sizeof o);
    o.vision_heads = o.text_heads = 2;
    for (layout = AES_LAYOUT_HF; layout <= AES_LAYOUT_OPENAI; layout++) {
        CHECK_OK(ctx, aes_clip_serialize(ctx, m, (aes_layout)layout, AES_DTYPE_F32, &buf, &len));
        CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &back));
        aes_free(buf);
        if (!back) continue;
        CHECK(aes_clip_config_get(back)->layout == (aes_layout)layout);
        CHECK(clip_hash(back) == clip_hash(m));
        check_model(back, "f32", "quick_gelu", 1e-4);
        aes_clip_free(back);
        back = NULL;
    }
    /* f16 in OpenAI layout = the f16 fixture's values */
    CHECK_OK(ctx, aes_clip_serialize(ctx, m, AES_LAYOUT_OPENAI, AES_DTYPE_F16, &buf, &len));
    CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &back));
    aes_free(buf);
    check_model(back, "f16", "quick_gelu", 1e-4);
    /* and a 16-bit model saves what it holds */
    if (back) {
        aes_clip *again = NULL, *kept = NULL;
        aes_clip_load_opts k = o;
        k.keep_16bit = 1;
        CHECK_OK(ctx, aes_clip_serialize(ctx, back, AES_LAYOUT_HF, AES_DTYPE_F16, &buf, &len));
        CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &k, &kept));
        aes_free(buf);
        CHECK_OK(ctx, aes_clip_serialize(ctx, kept, AES_LAYOUT_OPENAI, AES_DTYPE_F32, &buf, &len));
        CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &again));
        aes_free(buf);
        if (again && kept) CHECK(clip_hash(again) == clip_hash(back) && clip_hash(kept) == clip_hash(back));
        aes_clip_free(again);
        aes_clip_free(kept);
    }
    aes_clip_free(back);
    CHECK(aes_clip_serialize(ctx, m, AES_LAYOUT_AUTO, AES_DTYPE_F32, &buf, &len) == AES_ERR_INVALID_ARG);
    CHECK(aes_clip_serialize(ctx, m, AES_LAYOUT_HF, AES_DTYPE_I32, &buf, &len) == AES_ERR_INVALID_ARG);
    aes_clip_free(m);
}

static void test_create_random(void) {
    aes_clip_config c;
    aes_clip *a = NULL, *b = NULL;
    float out[2 * 16];
    int32_t tok[2 * 8] = {6, 1, 2, 7, 0, 0, 0, 0, 6, 5, 5, 5, 5, 5, 5, 7};
    static float px[2 * 3 * 16 * 16];
    memset(&c, 0, sizeof c);
    c.image_size = 16; c.patch_size = 4; c.vision_width = 16; c.vision_layers = 1; c.vision_heads = 2;
    c.vision_mlp = 64; c.context_length = 8; c.vocab_size = 8; c.text_width = 16; c.text_layers = 1;
    c.text_heads = 2; c.text_mlp = 64; c.embed_dim = 16; c.has_vision = c.has_text = 1;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 7, &a));
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 7, &b));
    if (a && b) {
        CHECK(clip_hash(a) == clip_hash(b));
        CHECK(aes_clip_config_get(a)->act == AES_ACT_QUICK_GELU);
        CHECK_NEAR(aes_clip_logit_scale(a), 1.0 / 0.07, 1e-3);
        CHECK_OK(ctx, aes_clip_encode_image(ctx, a, px, 2, out));
        CHECK_OK(ctx, aes_clip_encode_text(ctx, a, tok, 2, out));
        CHECK(isfinite(out[0]) && isfinite(out[31]));
        { /* activations of one model do not fit another */
            aes__clip_acts *acts = NULL;
            aes_clip *fx = load(FIX "clip_hf_f32.safetensors", NULL);
            static float big[NIMG * EMB];
            CHECK_OK(ctx, aes__clip_acts_create(ctx, a, AES__CLIP_VISION, NIMG, 0, &acts));
            if (fx && acts) CHECK(aes__clip_vision_forward(ctx, fx, pixels(), 1, acts, big) == AES_ERR_INVALID_ARG);
            aes__clip_acts_free(acts);
            aes_clip_free(fx);
        }
    }
    aes_clip_free(b);
    b = NULL;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 8, &b));
    if (a && b) CHECK(clip_hash(a) != clip_hash(b));
    aes_clip_free(b);
    b = NULL;
    c.text_heads = 3;
    CHECK(aes_clip_create_random(ctx, &c, 7, &b) == AES_ERR_INVALID_ARG && b == NULL);
    aes_clip_free(a);
}

/* ---- the parameter table and saved activations (what training uses) ------------------ */
static void test_params_layout(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL);
    const aes_clip_tensor *t;
    aes_clip_params gp;
    float *grads, *data;
    size_t total = 0;
    int n, i, found = 0;
    if (!m) return;
    t = aes_clip_tensors(m, &n);
    CHECK(n == 5 + 2 * 12 + 3 + 2 + 2 * 12 + 3 + 1);
    for (i = 0; i < n; i++) {
        CHECK(t[i].offset == total);
        total += t[i].numel;
    }
    CHECK(total == aes_clip_num_params(m));
    CHECK(!strcmp(t[0].name, "vision.patch_embed.weight") && !strcmp(t[n - 1].name, "logit_scale"));
    grads = (float *)aes__calloc(ctx, total, sizeof(float));
    aes__clip_point_params(m, grads, &gp);
    for (i = 0; i < n; i++)
        if (!strcmp(t[i].name, "text.blocks.1.mlp.fc2.weight")) {
            found = 1;
            CHECK(gp.text_blocks[1].fc2_w.f == grads + t[i].offset);
            CHECK(t[i].shape[0] == 32 && t[i].shape[1] == 128);
        }
    CHECK(found);
    CHECK(gp.logit_scale == grads + total - 1);
    /* the model's own pointers are the same layout over its buffer (once it
     * has one: a model loaded from a file may use the mapped file's pages) */
    data = aes_clip_params_data(m);
    CHECK(data && aes_clip_params_get(m)->vision_blocks[0].qkv_w.f == data + t[5 + 2].offset);
    aes_free(grads);
    aes_clip_free(m);
}

/* ---- weights used in place from a mapped file ------------------------------------------ */

/* Image and text embeddings of fixed inputs, for comparing two models. */
static void mapped_embed(const aes_clip *m, float *img, float *txt) {
    static float px[2 * 3 * 32 * 32];
    static int32_t tok[2 * 16];
    int i;
    for (i = 0; i < 2 * 3 * 32 * 32; i++) px[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (i = 0; i < 2 * 16; i++) tok[i] = i % 16 < 6 ? 1 + (i * 13) % 200 : 0;
    tok[5] = tok[16 + 5] = 255; /* end token: the largest id */
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 2, img));
    CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tok, 2, txt));
}

#if defined(AES__IO_MMAP)
/* Does x point into the model's mapped file? */
static int mapped_inside(const aes_clip *m, const float *x) {
    const unsigned char *b = m->mapped->file, *p = (const unsigned char *)x;
    return p >= b && p < b + m->mapped->file_len;
}
#endif

/* Writes buf to path with `pad` spaces appended to the JSON header (which
 * moves every tensor's data by pad bytes). */
static void mapped_write_padded(const char *path, const void *buf, size_t len, int pad) {
    const unsigned char *b = (const unsigned char *)buf;
    unsigned char *o = (unsigned char *)malloc(len + (size_t)pad);
    uint64_t n = 0;
    int i;
    if (!o) { CHECK(0); return; }
    for (i = 7; i >= 0; i--) n = (n << 8) | b[i];
    memcpy(o + 8, b + 8, (size_t)n);
    memset(o + 8 + n, ' ', (size_t)pad);
    memcpy(o + 8 + n + pad, b + 8 + n, len - 8 - (size_t)n);
    n += (uint64_t)pad;
    for (i = 0; i < 8; i++) o[i] = (unsigned char)(n >> (8 * i));
    CHECK_OK(ctx, aes_write_file_atomic(ctx, path, o, len + (size_t)pad));
    free(o);
}

/* A model loaded from a file computes exactly what the same file loaded
 * from memory computes, whether its tensors are used in place (aligned F32)
 * or copied (HF q/k/v, OpenAI projections, misaligned data); the file may
 * be replaced by rename under it; params_data and a trainer give it its own
 * writable copy with the same values. */
static void test_mapped_weights(void) {
    aes_clip_config c;
    aes_clip *r = NULL;
    aes_clip_load_opts o;
    const char *path = tl_tmp("mapped.safetensors");
    int layout, pad;
    memset(&c, 0, sizeof c);
    c.image_size = 32; c.patch_size = 8; c.vision_width = 32; c.vision_layers = 2; c.vision_heads = 2;
    c.vision_mlp = 64; c.context_length = 16; c.vocab_size = 256; c.text_width = 32; c.text_layers = 2;
    c.text_heads = 2; c.text_mlp = 64; c.embed_dim = 24; c.has_vision = c.has_text = 1;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 3, &r));
    if (!r) return;
    memset(&o, 0, sizeof o);
    o.no_config_search = 1;
    for (layout = AES_LAYOUT_HF; layout <= AES_LAYOUT_OPENAI; layout++)
        for (pad = 0; pad <= 5; pad += (pad ? 4 : 1)) { /* data moved by 0, 1 and 5 bytes */
            float img_f[2 * 24], txt_f[2 * 24], img_m[2 * 24], txt_m[2 * 24];
            aes_clip *mf = NULL, *mm = NULL;
            void *buf = NULL;
            size_t len = 0, n = aes_clip_num_params(r);
            float *pf, *pm;
            CHECK_OK(ctx, aes_clip_serialize(ctx, r, (aes_layout)layout, AES_DTYPE_F32, &buf, &len));
            if (!buf) continue;
            mapped_write_padded(path, buf, len, pad);
            aes_free(buf);
            CHECK_OK(ctx, aes_read_file(ctx, path, &buf, &len));
#if defined(AES__IO_MMAP)
            {   /* pages released after a tensor is copied read back as the file */
                aes_safetensors *st = NULL;
                int k;
                CHECK_OK(ctx, aes_safetensors_open(ctx, path, &st));
                if (st && buf) {
                    CHECK(st->mapping != NULL && st->fd >= 0 && st->file_len == len);
                    for (k = 0; k < aes_safetensors_count(st); k++) aes__st_release(st, aes_safetensors_at(st, k));
                    CHECK(!st->damaged && !memcmp(st->file, buf, len));
                }
                aes_safetensors_close(st);
            }
#endif
            CHECK_OK(ctx, aes_clip_load(ctx, path, &o, &mf));
            if (buf) CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &mm));
            aes_free(buf);
            if (!mf || !mm) { aes_clip_free(mf); aes_clip_free(mm); continue; }
            CHECK(mm->mapped == NULL && mm->params != NULL);
#if defined(AES__IO_MMAP)
            /* aligned F32 data is used where it lies, misaligned data copied */
            if (pad % 4 == 0) {
                const aes_clip_params *p = aes_clip_params_get(mf);
                CHECK(mf->mapped != NULL && mf->params == NULL);
                if (mf->mapped) {
                    CHECK(mapped_inside(mf, p->vision_blocks[1].fc1_w.f) && mapped_inside(mf, p->text_pos) &&
                          mapped_inside(mf, p->patch_w.f) && mapped_inside(mf, p->logit_scale));
                    CHECK(mapped_inside(mf, p->vision_blocks[0].qkv_w.f) == (layout == AES_LAYOUT_OPENAI));
                    CHECK(mapped_inside(mf, p->vision_proj.f) == (layout == AES_LAYOUT_HF));
                }
            } else {
                CHECK(mf->mapped == NULL && mf->params != NULL);
            }
#else
            CHECK(mf->mapped == NULL && mf->params != NULL);
#endif
            CHECK(!strcmp(aes_clip_id(mf), aes_clip_id(mm)) && clip_hash(mm) == clip_hash(r));
            mapped_embed(mf, img_f, txt_f);
            mapped_embed(mm, img_m, txt_m);
            CHECK(!memcmp(img_f, img_m, sizeof img_f) && !memcmp(txt_f, txt_m, sizeof txt_f));
            if (layout == AES_LAYOUT_OPENAI && pad == 0) {
                /* replaced by rename (what every atomic writer does): the
                 * mapping keeps the old file's pages */
                aes_clip *other = NULL;
                CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 4, &other));
                if (other) CHECK_OK(ctx, aes_clip_save(ctx, other, path, AES_LAYOUT_OPENAI, AES_DTYPE_F32));
                aes_clip_free(other);
                mapped_embed(mf, img_f, txt_f);
                CHECK(!memcmp(img_f, img_m, sizeof img_f) && !memcmp(txt_f, txt_m, sizeof txt_f));
            }
            /* writable parameters: a copy in memory, same values, same id */
            pf = aes_clip_params_data(mf);
            pm = aes_clip_params_data(mm);
            CHECK(pf && pm && mf->mapped == NULL && !memcmp(pf, pm, n * sizeof(float)));
            CHECK(!strcmp(aes_clip_id(mf), aes_clip_id(mm)));
            mapped_embed(mf, img_f, txt_f);
            CHECK(!memcmp(img_f, img_m, sizeof img_f) && !memcmp(txt_f, txt_m, sizeof txt_f));
            aes_clip_free(mf);
            aes_clip_free(mm);
        }
    {   /* a trainer copies a mapped model's weights before it writes them */
        aes_clip *mf = NULL;
        aes_clip_trainer *tr = NULL;
        CHECK_OK(ctx, aes_clip_save(ctx, r, path, AES_LAYOUT_OPENAI, AES_DTYPE_F32));
        CHECK_OK(ctx, aes_clip_load(ctx, path, &o, &mf));
        if (mf) {
            CHECK_OK(ctx, aes_clip_trainer_create(ctx, mf, NULL, &tr));
            CHECK(mf->mapped == NULL && mf->params != NULL && clip_hash(mf) == clip_hash(r));
            CHECK(!memcmp(mf->params, r->params, aes_clip_num_params(r) * sizeof(float)));
        }
        aes_clip_trainer_free(tr);
        aes_clip_free(mf);
    }
    remove(path);
    aes_clip_free(r);
}

static void test_saved_activations(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL);
    aes__clip_acts *va = NULL, *ta = NULL;
    const int32_t *tok = tokens();
    float out[NTXT * EMB];
    int b;
    if (!m) return;
    CHECK_OK(ctx, aes__clip_acts_create(ctx, m, AES__CLIP_VISION, NIMG, 1, &va));
    CHECK_OK(ctx, aes__clip_acts_create(ctx, m, AES__CLIP_TEXT, NTXT, 1, &ta));
    if (va && ta) {
        CHECK_OK(ctx, aes__clip_vision_forward(ctx, m, pixels(), NIMG, va, out));
        compare(out, ref("f32_quick_gelu_image", NULL), NIMG, EMB, 1e-4, "image (saved acts)");
        compare(va->ln_pre, ref("f32_quick_gelu_vision_ln_pre", NULL), 1, NIMG * 17 * 32, 1e-4, "vision ln_pre");
        compare(va->blocks[0].res2, ref("f32_quick_gelu_vision_block0", NULL), 1, NIMG * 17 * 32, 1e-4, "vision block 0");
        compare(va->blocks[1].res2, ref("f32_quick_gelu_vision_block1", NULL), 1, NIMG * 17 * 32, 1e-4, "vision block 1");
        CHECK(va->blocks[0].res2 != va->blocks[1].res2 && va->blocks[1].att != NULL);
        /* attention rows are probabilities */
        {
            double s = 0;
            int u;
            for (u = 0; u < 17; u++) s += va->blocks[1].att[5 * 17 + u];
            CHECK_NEAR(s, 1.0, 1e-5);
        }
        /* misuse is an error, not an overflow */
        CHECK(aes__clip_vision_forward(ctx, m, pixels(), NIMG + 1, va, out) == AES_ERR_INVALID_ARG);
        CHECK(aes__clip_text_forward(ctx, m, tok, NTXT, va, out) == AES_ERR_INVALID_ARG);
        CHECK_OK(ctx, aes__clip_text_forward(ctx, m, tok, NTXT, ta, out));
        compare(out, ref("f32_quick_gelu_text", NULL), NTXT, EMB, 1e-4, "text (saved acts)");
        {
            const float *b1 = ref("f32_quick_gelu_text_block1", NULL); /* [4, 16, 32], all positions */
            int lens[NTXT] = {5, 16, 2, 9};
            for (b = 0; b < NTXT; b++) {
                CHECK(ta->seq_len[b] == lens[b]);
                compare(ta->blocks[1].res2 + (size_t)ta->seq_start[b] * 32, b1 + (size_t)b * 16 * 32, 1,
                        lens[b] * 32, 1e-4, "text block 1 (packed rows)");
            }
            CHECK(ta->R == 5 + 16 + 2 + 9);
        }
    }
    aes__clip_acts_free(va);
    aes__clip_acts_free(ta);
    aes_clip_free(m);
}

/* 2 threads, or 1 in an AES_NO_THREADS build (the comparison then is trivially equal) */
static void set_threads(int n) {
    aes_status st = aes_threads_set(ctx, n);
    if (st == AES_ERR_UNSUPPORTED) aes_clear_error(ctx);
    else CHECK_OK(ctx, st);
}

/* ---- batching and threads --------------------------------------------------------------- */
static void test_threads_and_batches(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL);
    enum { NB = 37 }; /* more than one image chunk */
    static float px[NB * 3 * 32 * 32], one[NB * EMB], two[NB * EMB], single[EMB];
    static int32_t tok[NB * 16];
    const float *p = pixels();
    const int32_t *t = tokens();
    int b;
    if (!m) return;
    for (b = 0; b < NB; b++) {
        memcpy(px + (size_t)b * 3072, p + (size_t)(b % NIMG) * 3072, 3072 * sizeof(float));
        memcpy(tok + (size_t)b * 16, t + (size_t)(b % NTXT) * 16, 16 * sizeof(int32_t));
    }
    set_threads(1);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, NB, one));
    set_threads(2);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, NB, two));
    CHECK(memcmp(one, two, sizeof one) == 0);
    compare(two + 36 * EMB, ref("f32_quick_gelu_image", NULL), 1, EMB, 1e-4, "image 36 of a batch of 37");
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px + 36 * 3072, 1, single));
    compare(single, ref("f32_quick_gelu_image", NULL), 1, EMB, 1e-4, "image alone");
    /* an image alone embeds to the bits it gets in a batch (a sharded
     * index must equal a one-machine one) */
    CHECK(memcmp(single, two + 36 * EMB, sizeof single) == 0);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px + 5 * 3072, 1, single));
    CHECK(memcmp(single, two + 5 * EMB, sizeof single) == 0);
    set_threads(1);
    CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tok, NB, one));
    set_threads(2);
    CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tok, NB, two));
    CHECK(memcmp(one, two, sizeof(float) * NB * EMB) == 0);
    compare(two + 35 * EMB, ref("f32_quick_gelu_text", NULL) + 3 * EMB, 1, EMB, 1e-4, "text 35 of a batch of 37");
    CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tok + 35 * 16, 1, single));
    CHECK(memcmp(single, two + 35 * EMB, sizeof single) == 0);
    set_threads(1);
    /* bad token ids are errors, not reads out of bounds */
    tok[3] = 256;
    CHECK(aes_clip_encode_text(ctx, m, tok, 1, one) == AES_ERR_INVALID_ARG);
    tok[3] = -5;
    tok[4] = 255;
    CHECK(aes_clip_encode_text(ctx, m, tok, 1, one) == AES_ERR_INVALID_ARG);
    aes_clip_free(m);
}

/* Packed weights (the default of aes_clip_load) give the bits of the
 * unpacked model, for images and texts, on 1 and 2 threads, on every ISA
 * (a model packed for another ISA than the context's runs unpacked); writing
 * the weights drops the packed copies, and packing again follows the new
 * values. */
static void test_packed_weights(void) {
    aes_clip_load_opts o;
    aes_clip *pk = load(FIX "clip_hf_f32.safetensors", NULL), *un;
    enum { NB = 5 };
    static float px[NB * 3 * 32 * 32], a[NB * EMB], b[NB * EMB], c[NB * EMB];
    static int32_t tok[NB * 16];
    aes_isa isas[2];
    int i, th, nisa = 1;
    memset(&o, 0, sizeof o);
    o.no_packed_weights = 1;
    un = load(FIX "clip_hf_f32.safetensors", &o);
    if (!pk || !un) { aes_clip_free(pk); aes_clip_free(un); return; }
    for (i = 0; i < NB; i++) {
        memcpy(px + (size_t)i * 3072, pixels() + (size_t)(i % NIMG) * 3072, 3072 * sizeof(float));
        memcpy(tok + (size_t)i * 16, tokens() + (size_t)(i % NTXT) * 16, 16 * sizeof(int32_t));
    }
    CHECK(pk->npacked > 0 && pk->packed_isa == aes_isa_get(ctx));
    CHECK(un->npacked == 0);
    isas[0] = aes_isa_get(ctx);
    if (isas[0] != AES_ISA_SCALAR) isas[nisa++] = AES_ISA_SCALAR;
    for (i = 0; i < nisa; i++) {
        CHECK_OK(ctx, aes_isa_set(ctx, isas[i]));
        for (th = 1; th <= 2; th++) {
            set_threads(th);
            CHECK_OK(ctx, aes_clip_encode_image(ctx, pk, px, NB, a));
            CHECK_OK(ctx, aes_clip_encode_image(ctx, un, px, NB, b));
            CHECK_MSG(memcmp(a, b, sizeof a) == 0, "images, isa %s, %d threads: packed differs", aes_cpu_name(ctx), th);
            if (th == 1) memcpy(c, a, sizeof c);
            else CHECK(memcmp(a, c, sizeof a) == 0);
            CHECK_OK(ctx, aes_clip_encode_text(ctx, pk, tok, NB, a));
            CHECK_OK(ctx, aes_clip_encode_text(ctx, un, tok, NB, b));
            CHECK_MSG(memcmp(a, b, sizeof a) == 0, "texts, isa %s, %d threads: packed differs", aes_cpu_name(ctx), th);
        }
    }
    CHECK_OK(ctx, aes_isa_set(ctx, isas[0]));
    set_threads(1);
    /* a weight changed in place: the packed copies go, packing again follows */
    aes_clip_params_data(pk)[aes_clip_params_get(pk)->vision_blocks[0].fc1_w.f - pk->params] += 0.5f;
    aes_clip_params_data(un)[aes_clip_params_get(un)->vision_blocks[0].fc1_w.f - un->params] += 0.5f;
    CHECK(pk->npacked == 0);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, pk, px, NB, a));
    CHECK_OK(ctx, aes_clip_pack_weights(ctx, pk, 1));
    CHECK(pk->npacked > 0);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, pk, px, NB, b));
    CHECK_OK(ctx, aes_clip_encode_image(ctx, un, px, NB, c));
    CHECK(memcmp(a, c, sizeof a) == 0 && memcmp(b, c, sizeof b) == 0);
    CHECK_OK(ctx, aes_clip_pack_weights(ctx, pk, 0));
    CHECK(pk->npacked == 0);
    aes_clip_free(pk);
    aes_clip_free(un);
}

/* ---- hostile files ------------------------------------------------------------------------- */

/* The HF f32 fixture re-serialised with one change, loaded from memory. */
typedef enum { DROP, RESHAPE, RETYPE, NAN_VALUE, EXTRA, RENAME_ALL } mutation;

static aes_status load_mutated(const char *file, mutation what, const char *target, const char *config,
                               aes_clip **out) {
    aes_safetensors *st = NULL;
    aes_tensor_out t[512];
    static float nanbuf[4096];
    char names[512][128];
    int n, i, k = 0;
    void *buf = NULL;
    size_t len = 0;
    aes_status s;
    *out = NULL;
    if (aes_safetensors_open(ctx, file, &st) != AES_OK) return aes_last_status(ctx);
    n = aes_safetensors_count(st);
    for (i = 0; i < n && k < 510; i++) {
        const aes_tensor_view *v = aes_safetensors_at(st, i);
        int match = target && !strcmp(v->name, target);
        if (what == DROP && match) continue;
        memset(&t[k], 0, sizeof t[k]);
        snprintf(names[k], sizeof names[k], "%s%s", what == RENAME_ALL ? "module." : "", v->name);
        t[k].name = names[k];
        t[k].dtype = v->dtype;
        t[k].ndim = v->ndim;
        memcpy(t[k].shape, v->shape, sizeof t[k].shape);
        t[k].data = v->data;
        if (match && what == RESHAPE) { t[k].shape[0] = v->shape[1]; t[k].shape[1] = v->shape[0]; }
        if (match && what == RETYPE) t[k].dtype = AES_DTYPE_I32; /* same size, wrong kind */
        if (match && what == NAN_VALUE) {
            memcpy(nanbuf, v->data, v->nbytes);
            nanbuf[7] = NAN;
            t[k].data = nanbuf;
        }
        k++;
    }
    if (what == EXTRA) {
        static float gamma[32];
        memset(&t[k], 0, sizeof t[k]);
        t[k].name = target;
        t[k].dtype = AES_DTYPE_F32;
        t[k].ndim = 1;
        t[k].shape[0] = 32;
        t[k].data = gamma;
        k++;
    }
    s = aes_safetensors_serialize(ctx, t, k, NULL, 0, &buf, &len);
    aes_safetensors_close(st);
    if (s) return s;
    s = aes_clip_load_memory(ctx, buf, len, config, NULL, out);
    aes_free(buf);
    return s;
}

static char *slurp(const char *path) {
    void *d = NULL;
    size_t n = 0;
    if (aes_read_file(ctx, path, &d, &n) != AES_OK) return NULL;
    return (char *)d;
}

#define EXPECT_ERR(call, status, needle) \
    do { aes_clip *m_ = NULL; aes_status s_ = (call); \
         CHECK_MSG(s_ == (status), "%s -> %d (%s), wanted %d", #call, (int)s_, aes_last_error(ctx), (int)(status)); \
         CHECK_MSG(strstr(aes_last_error(ctx), needle) != NULL, "message '%s' lacks '%s'", aes_last_error(ctx), needle); \
         (void)m_; } while (0)

static void test_hostile(void) {
    const char *f = FIX "clip_hf_f32.safetensors";
    char *cfg = slurp(FIX "config.json");
    aes_clip *m = NULL;
    float junk[64];
    void *d = NULL;
    size_t n = 0;
    if (!cfg) { CHECK(0); return; }
    /* the unmodified file loads from memory with its config */
    CHECK_OK(ctx, load_mutated(f, DROP, NULL, cfg, &m));
    check_model(m, "f32", "quick_gelu", 1e-4);
    aes_clip_free(m);
    EXPECT_ERR(load_mutated(f, DROP, "vision_model.encoder.layers.1.self_attn.k_proj.weight", cfg, &m),
               AES_ERR_FORMAT, "'vision_model.encoder.layers.1.self_attn.k_proj.weight' is missing");
    EXPECT_ERR(load_mutated(f, DROP, "text_model.final_layer_norm.bias", cfg, &m), AES_ERR_FORMAT,
               "'text_model.final_layer_norm.bias' is missing");
    EXPECT_ERR(load_mutated(f, DROP, "logit_scale", cfg, &m), AES_ERR_FORMAT, "'logit_scale' is missing");
    EXPECT_ERR(load_mutated(f, DROP, "visual_projection.weight", cfg, &m), AES_ERR_FORMAT,
               "'visual_projection.weight' is missing");
    EXPECT_ERR(load_mutated(f, RESHAPE, "text_model.encoder.layers.0.mlp.fc2.weight", cfg, &m), AES_ERR_SHAPE,
               "'text_model.encoder.layers.0.mlp.fc2.weight' has shape [128, 32]");
    EXPECT_ERR(load_mutated(f, RETYPE, "vision_model.encoder.layers.0.layer_norm2.bias", cfg, &m),
               AES_ERR_UNSUPPORTED, "'vision_model.encoder.layers.0.layer_norm2.bias' is stored as I32");
    EXPECT_ERR(load_mutated(f, NAN_VALUE, "text_model.encoder.layers.1.self_attn.v_proj.bias", cfg, &m),
               AES_ERR_NUMERIC, "'text_model.encoder.layers.1.self_attn.v_proj.bias' holds a NaN");
    EXPECT_ERR(load_mutated(f, EXTRA, "vision_model.encoder.layers.0.layer_scale1", cfg, &m), AES_ERR_UNSUPPORTED,
               "'vision_model.encoder.layers.0.layer_scale1'");
    /* a gap in the blocks: layer 5 exists, 2..4 do not */
    EXPECT_ERR(load_mutated(f, EXTRA, "vision_model.encoder.layers.5.layer_norm1.weight", NULL, &m), AES_ERR_FORMAT,
               "'vision_model.encoder.layers.2.layer_norm1.weight' is missing");
    EXPECT_ERR(load_mutated(f, RESHAPE, "vision_model.embeddings.position_embedding.weight", cfg, &m),
               AES_ERR_SHAPE, "position embedding");
    /* a single-tower file with a stray piece of the other tower names what is missing;
     * tensors outside CLIP's names (e.g. a head saved alongside) are ignored */
    EXPECT_ERR(load_mutated(FIX "clip_hf_vision_bf16.safetensors", EXTRA, "text_projection.weight", NULL, &m),
               AES_ERR_FORMAT, "'text_model.embeddings.token_embedding.weight' is missing");
    CHECK_OK(ctx, load_mutated(FIX "clip_hf_vision_bf16.safetensors", EXTRA, "aesthetic_head.weight", NULL, &m));
    CHECK(m && !aes_clip_config_get(m)->has_text);
    aes_clip_free(m);
    /* a prefix is found and stripped */
    CHECK_OK(ctx, load_mutated(f, RENAME_ALL, NULL, cfg, &m));
    check_model(m, "f32", "quick_gelu", 1e-4);
    aes_clip_free(m);
    /* configs that contradict the tensors or make no sense */
    EXPECT_ERR(load_mutated(f, DROP, NULL, "{\"vision_config\": {\"hidden_size\": 768}}", &m), AES_ERR_MISMATCH,
               "hidden_size is 768");
    EXPECT_ERR(load_mutated(f, DROP, NULL, "{\"text_config\": {\"num_attention_heads\": 3}}", &m), AES_ERR_FORMAT,
               "3 attention heads");
    EXPECT_ERR(load_mutated(f, DROP, NULL, "{\"text_config\": {\"hidden_act\": \"relu\"}}", &m), AES_ERR_UNSUPPORTED,
               "'relu'");
    EXPECT_ERR(load_mutated(f, DROP, NULL, "{\"text_config\": ", &m), AES_ERR_FORMAT, "<config>");
    EXPECT_ERR(load_mutated(f, DROP, NULL, "{\"foo\": 1}", &m), AES_ERR_FORMAT, "not a CLIP config");
    /* not CLIP at all, truncated, garbage */
    EXPECT_ERR(aes_clip_load(ctx, "tests/fixtures/clip/clip_refs.safetensors", NULL, &m), AES_ERR_FORMAT,
               "not a CLIP checkpoint");
    CHECK(aes_clip_load(ctx, "tests/fixtures/clip/does-not-exist.safetensors", NULL, &m) == AES_ERR_IO);
    CHECK(m == NULL);
    if (aes_read_file(ctx, f, &d, &n) == AES_OK) {
        size_t cut;
        for (cut = 0; cut < n; cut += n / 7 + 1)
            CHECK(aes_clip_load_memory(ctx, d, cut, cfg, NULL, &m) != AES_OK && m == NULL);
        aes_free(d);
    }
    memset(junk, 0x7f, sizeof junk);
    CHECK(aes_clip_load_memory(ctx, junk, sizeof junk, NULL, NULL, &m) != AES_OK && m == NULL);
    aes_free(cfg);
}

/* ---- the CLI: `aesalign embed` prints what the library computes ---------------------------- */
static void test_cli_embed(void) {
    const char *cli = tl_cli();
    char cmd[1024], path[256];
    aes_image img;
    aes_clip *m;
    float px[3 * 32 * 32], want[2 * EMB];
    FILE *p;
    int i, k, got = 0;
    if (!cli) return;
    snprintf(path, sizeof path, "/tmp/aes_test_clip_%ld.ppm", (long)time(NULL) ^ (long)clock());
    memset(&img, 0, sizeof img);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 45, 37, 3));
    for (i = 0; i < 45 * 37 * 3; i++) img.pixels[i] = (uint8_t)((i * 37 + i / 7) & 255);
    CHECK_OK(ctx, aes_image_save_ppm(ctx, path, &img));
    m = load(FIX "clip_hf_f32.safetensors", NULL);
    if (m) {
        CHECK_OK(ctx, aes_clip_preprocess(ctx, &img, 32, px));
        CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 1, want));
        memcpy(want + EMB, want, sizeof(float) * EMB);
        aes_l2norm_forward(want + EMB, NULL, want + EMB, 1, EMB, 1e-12f);
        /* the same image twice: raw, then --normalize in a second call */
        for (k = 0; k < 2; k++) {
            snprintf(cmd, sizeof cmd, "%s embed --model " FIX "clip_hf_f32.safetensors %s--image %s", cli,
                     k ? "--normalize " : "", path);
            p = popen(cmd, "r");
            if (!p) { CHECK(0); break; }
            for (i = 0; i < EMB; i++) {
                double v;
                if (fscanf(p, "%lf", &v) != 1) break;
                /* the CLI may run another ISA path than this program (valgrind
                 * hides AVX-512 from the test but not from the CLI): a few ulps */
                CHECK_NEAR(v, want[k * EMB + i], 1e-5 * (fabs(want[k * EMB + i]) + 1e-3));
                got++;
            }
            CHECK(pclose(p) == 0);
        }
        CHECK(got == 2 * EMB);
    }
    aes_clip_free(m);
    aes_image_free(&img);
    remove(path);
}

/* ---- int8 ------------------------------------------------------------------------------------ */
static double min_cosine(const float *a, const float *b, int B, int n) {
    double worst = 1.0;
    int r, i;
    for (r = 0; r < B; r++) {
        double d = 0, na = 0, nb = 0, c;
        for (i = 0; i < n; i++) {
            d += (double)a[r * n + i] * b[r * n + i];
            na += (double)a[r * n + i] * a[r * n + i];
            nb += (double)b[r * n + i] * b[r * n + i];
        }
        c = d / sqrt(na * nb + 1e-300);
        if (!(c >= worst)) worst = c;
    }
    return worst;
}

/* A small random model in float and int8: embeddings close to float's
 * (cosine >= 0.99), the same bits for every thread count and ISA, and a
 * quantize -> save (I8) -> load round trip giving the same model, in both
 * layouts. */
static void test_int8_model(void) {
    aes_clip_config c;
    aes_clip *f = NULL, *q = NULL, *back = NULL;
    aes_clip_load_opts o;
    enum { B = 3, E = 32 };
    static float px[B * 3 * 32 * 32], ef[B * E], eq[B * E], e2[B * E], tf[B * E], tq[B * E];
    int32_t tok[B * 16];
    void *buf = NULL;
    size_t len = 0;
    uint64_t seed = 9;
    int i, layout;
    aes_isa isa, best = aes_isa_get(ctx);
    memset(&c, 0, sizeof c);
    c.image_size = 32; c.patch_size = 8; c.vision_width = 64; c.vision_layers = 2; c.vision_heads = 2;
    c.vision_mlp = 256; c.context_length = 16; c.vocab_size = 64; c.text_width = 48; c.text_layers = 2;
    c.text_heads = 2; c.text_mlp = 192; c.embed_dim = E; c.has_vision = c.has_text = 1;
    for (i = 0; i < B * 3 * 32 * 32; i++) px[i] = (float)aes__rand_normal(&seed);
    for (i = 0; i < B * 16; i++) tok[i] = i % 16 == 0 ? 1 : i % 16 < 5 + i / 16 ? 2 + (i * 7) % 50 : i % 16 == 5 + i / 16 ? 63 : 0;
    memset(&o, 0, sizeof o);
    o.no_config_search = 1;
    CHECK_OK(ctx, aes_clip_create_random(ctx, &c, 3, &f));
    if (!f) return;
    CHECK_OK(ctx, aes_clip_serialize(ctx, f, AES_LAYOUT_OPENAI, AES_DTYPE_F32, &buf, &len));
    o.int8 = 1;
    CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &q));
    aes_free(buf);
    if (!q) { aes_clip_free(f); return; }
    CHECK(strstr(aes_clip_id(q), "-int8-") != NULL && clip_hash(q) != clip_hash(f));
    CHECK(aes_clip_weight_bytes(q) < aes_clip_weight_bytes(f) / 2);
    CHECK(aes_clip_params_data(q) == NULL);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, f, px, B, ef));
    CHECK_OK(ctx, aes_clip_encode_image(ctx, q, px, B, eq));
    CHECK_OK(ctx, aes_clip_encode_text(ctx, f, tok, B, tf));
    CHECK_OK(ctx, aes_clip_encode_text(ctx, q, tok, B, tq));
    CHECK_MSG(min_cosine(ef, eq, B, E) >= 0.99, "int8 image cosine %f", min_cosine(ef, eq, B, E));
    CHECK_MSG(min_cosine(tf, tq, B, E) >= 0.99, "int8 text cosine %f", min_cosine(tf, tq, B, E));
    CHECK(memcmp(ef, eq, sizeof ef) != 0); /* it did run in int8 */
    /* threads: the same bits.  Other ISAs: the int8 layers agree bit for bit
     * (test_gemm), the float ones (LayerNorm, attention, ...) by rounding */
    set_threads(2);
    CHECK_OK(ctx, aes_clip_encode_image(ctx, q, px, B, e2));
    CHECK(memcmp(e2, eq, sizeof e2) == 0);
    set_threads(1);
    for (isa = AES_ISA_SCALAR; isa < best; isa = (aes_isa)(isa + 1)) {
        if (aes_isa_set(ctx, isa) != AES_OK) { aes_clear_error(ctx); continue; }
        memset(e2, 0, sizeof e2);
        CHECK_OK(ctx, aes_clip_encode_text(ctx, q, tok, B, e2));
        CHECK_MSG(min_cosine(e2, tq, B, E) >= 0.9999, "int8 text tower on %s: cosine %f", aes_cpu_name(ctx),
                  min_cosine(e2, tq, B, E));
    }
    aes_isa_set(ctx, best);
    /* quantize -> I8 file -> load: the same model, in both layouts */
    for (layout = AES_LAYOUT_HF; layout <= AES_LAYOUT_OPENAI; layout++) {
        aes_safetensors *st = NULL;
        CHECK_OK(ctx, aes_clip_serialize(ctx, q, (aes_layout)layout, AES_DTYPE_I8, &buf, &len));
        CHECK_OK(ctx, aes_safetensors_load_memory(ctx, buf, len, 0, &st));
        if (st) {
            const aes_tensor_view *v = aes_safetensors_find(st, layout == AES_LAYOUT_HF
                                                                ? "vision_model.encoder.layers.1.self_attn.k_proj.weight"
                                                                : "visual.transformer.resblocks.1.attn.in_proj_weight");
            const aes_tensor_view *s = aes_safetensors_find(st, layout == AES_LAYOUT_HF
                                                                ? "vision_model.encoder.layers.1.self_attn.k_proj.weight_scale"
                                                                : "visual.transformer.resblocks.1.attn.in_proj_weight_scale");
            const aes_tensor_view *ln = aes_safetensors_find(st, layout == AES_LAYOUT_HF
                                                                 ? "vision_model.encoder.layers.1.layer_norm1.weight"
                                                                 : "visual.transformer.resblocks.1.ln_1.weight");
            CHECK(v && v->dtype == AES_DTYPE_I8 && v->ndim == 2 && v->shape[1] == 64);
            CHECK(s && s->dtype == AES_DTYPE_F32 && s->ndim == 1 && v && s->shape[0] == v->shape[0]);
            CHECK(ln && ln->dtype == AES_DTYPE_F32);
            aes_safetensors_close(st);
        }
        CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &back)); /* int8 by its dtype */
        aes_free(buf);
        if (!back) continue;
        CHECK(clip_hash(back) == clip_hash(q));
        CHECK_OK(ctx, aes_clip_encode_image(ctx, back, px, B, e2));
        CHECK(memcmp(e2, eq, sizeof e2) == 0);
        aes_clip_free(back);
        back = NULL;
    }
    /* a float model saved as I8 quantises as the load option does */
    CHECK_OK(ctx, aes_clip_serialize(ctx, f, AES_LAYOUT_HF, AES_DTYPE_I8, &buf, &len));
    o.int8 = 0;
    CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &back));
    aes_free(buf);
    if (back) CHECK(clip_hash(back) == clip_hash(q));
    aes_clip_free(back);
    back = NULL;
    /* an int8 model saved as F32 writes value * scale; it is not trainable */
    CHECK_OK(ctx, aes_clip_serialize(ctx, q, AES_LAYOUT_HF, AES_DTYPE_F32, &buf, &len));
    CHECK_OK(ctx, aes_clip_load_memory(ctx, buf, len, NULL, &o, &back));
    aes_free(buf);
    if (back) {
        CHECK_OK(ctx, aes_clip_encode_image(ctx, back, px, B, e2));
        CHECK(min_cosine(e2, eq, B, E) >= 0.99);
    }
    aes_clip_free(back);
    {
        aes__clip_acts *acts = NULL;
        aes_clip_params g;
        static float dout[B * E];
        memset(&g, 0, sizeof g);
        CHECK_OK(ctx, aes__clip_acts_create(ctx, q, AES__CLIP_VISION, B, 1, &acts));
        if (acts) {
            CHECK_OK(ctx, aes__clip_vision_forward(ctx, q, px, B, acts, NULL));
            CHECK(aes__clip_vision_backward(ctx, q, acts, px, dout, &g, 0) == AES_ERR_UNSUPPORTED);
            CHECK(strstr(aes_last_error(ctx), "int8") != NULL);
        }
        aes__clip_acts_free(acts);
    }
    aes_clip_free(q);
    aes_clip_free(f);
}

/* An I8 file with one change (from the int8 fixture model), loaded. */
typedef enum { I8_DROP, I8_SCALE_SHAPE, I8_SCALE_NEG, I8_WEIGHT_SHAPE, I8_LN_AS_I8 } i8_mutation;

static aes_status load_i8_mutated(const void *file, size_t flen, i8_mutation what, const char *target,
                                  aes_clip **out) {
    aes_safetensors *st = NULL;
    aes_tensor_out t[512];
    static float fbuf[8192];
    static int8_t ibuf[8192];
    int n, i, k = 0;
    void *buf = NULL;
    size_t len = 0;
    aes_status s;
    aes_clip_load_opts o;
    *out = NULL;
    if (aes_safetensors_load_memory(ctx, file, flen, 0, &st) != AES_OK) return aes_last_status(ctx);
    n = aes_safetensors_count(st);
    for (i = 0; i < n && k < 510; i++) {
        const aes_tensor_view *v = aes_safetensors_at(st, i);
        int match = !strcmp(v->name, target);
        if (what == I8_DROP && match) continue;
        memset(&t[k], 0, sizeof t[k]);
        t[k].name = v->name;
        t[k].dtype = v->dtype;
        t[k].ndim = v->ndim;
        memcpy(t[k].shape, v->shape, sizeof t[k].shape);
        t[k].data = v->data;
        if (match && what == I8_SCALE_SHAPE) { t[k].ndim = 2; t[k].shape[0] = v->shape[0] / 2; t[k].shape[1] = 2; }
        if (match && what == I8_WEIGHT_SHAPE) { t[k].shape[0] = v->shape[1]; t[k].shape[1] = v->shape[0]; }
        if (match && what == I8_SCALE_NEG && v->nbytes <= sizeof fbuf) {
            memcpy(fbuf, v->data, v->nbytes);
            fbuf[1] = -fbuf[1];
            t[k].data = fbuf;
        }
        if (match && what == I8_LN_AS_I8 && v->numel <= 8192) { /* same bytes count: numel x 1 */
            memset(ibuf, 1, (size_t)v->numel);
            t[k].dtype = AES_DTYPE_I8;
            t[k].data = ibuf;
        }
        k++;
    }
    s = aes_safetensors_serialize(ctx, t, k, NULL, 0, &buf, &len);
    aes_safetensors_close(st);
    if (s) return s;
    memset(&o, 0, sizeof o);
    o.no_config_search = 1;
    s = aes_clip_load_memory(ctx, buf, len, NULL, &o, out);
    aes_free(buf);
    return s;
}

static void test_int8_hostile(void) {
    aes_clip *m = load(FIX "clip_hf_f32.safetensors", NULL);
    void *file = NULL;
    size_t flen = 0;
    const char *w = "vision_model.encoder.layers.1.mlp.fc1.weight";
    if (!m) return;
    CHECK_OK(ctx, aes_clip_serialize(ctx, m, AES_LAYOUT_HF, AES_DTYPE_I8, &file, &flen));
    aes_clip_free(m);
    if (!file) return;
    CHECK_OK(ctx, load_i8_mutated(file, flen, I8_DROP, "nothing", &m)); /* unmodified: loads */
    aes_clip_free(m);
    EXPECT_ERR(load_i8_mutated(file, flen, I8_DROP, "vision_model.encoder.layers.1.mlp.fc1.weight_scale", &m),
               AES_ERR_FORMAT, "'vision_model.encoder.layers.1.mlp.fc1.weight_scale' (F32 [128], one per output "
               "channel) are missing");
    EXPECT_ERR(load_i8_mutated(file, flen, I8_SCALE_SHAPE, "vision_model.encoder.layers.1.mlp.fc1.weight_scale", &m),
               AES_ERR_SHAPE, "have shape [64, 2]; the I8 weight [128, 32] needs [128]");
    EXPECT_ERR(load_i8_mutated(file, flen, I8_SCALE_NEG, "text_model.encoder.layers.0.self_attn.v_proj.weight_scale",
                               &m), AES_ERR_NUMERIC, "scales must be finite and >= 0");
    EXPECT_ERR(load_i8_mutated(file, flen, I8_WEIGHT_SHAPE, w, &m), AES_ERR_SHAPE, "has shape [32, 128]");
    EXPECT_ERR(load_i8_mutated(file, flen, I8_LN_AS_I8, "text_model.encoder.layers.0.layer_norm1.weight", &m),
               AES_ERR_UNSUPPORTED, "is stored as I8; only the blocks' attention and MLP weights may be int8");
    aes_free(file);
}

/* CLI: quantize writes a file that embeds exactly as --int8 on the float
 * file does, and as the library's int8 model. */
static void test_cli_int8(void) {
    const char *cli = tl_cli();
    char cmd[1024], path[256], qpath[300];
    aes_image img;
    aes_clip *m;
    aes_clip_load_opts o;
    float px[3 * 32 * 32], want[EMB], got[2][EMB];
    FILE *p;
    int i, k;
    if (!cli) return;
    snprintf(path, sizeof path, "/tmp/aes_test_int8_%ld.ppm", (long)time(NULL) ^ (long)clock());
    snprintf(qpath, sizeof qpath, "%s.i8.safetensors", path);
    memset(&img, 0, sizeof img);
    CHECK_OK(ctx, aes_image_alloc(ctx, &img, 40, 33, 3));
    for (i = 0; i < 40 * 33 * 3; i++) img.pixels[i] = (uint8_t)((i * 53 + i / 11) & 255);
    CHECK_OK(ctx, aes_image_save_ppm(ctx, path, &img));
    memset(&o, 0, sizeof o);
    o.int8 = 1;
    m = load(FIX "clip_hf_f32.safetensors", &o);
    snprintf(cmd, sizeof cmd, "%s quantize " FIX "clip_hf_f32.safetensors %s 2>/dev/null", cli, qpath);
    CHECK(system(cmd) == 0);
    if (m) {
        CHECK_OK(ctx, aes_clip_preprocess(ctx, &img, 32, px));
        CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 1, want));
        for (k = 0; k < 2; k++) {
            if (k == 0)
                snprintf(cmd, sizeof cmd, "%s embed --int8 --model " FIX "clip_hf_f32.safetensors --image %s", cli, path);
            else
                snprintf(cmd, sizeof cmd, "%s embed --model %s --config " FIX "config.json --image %s", cli, qpath, path);
            p = popen(cmd, "r");
            if (!p) { CHECK(0); break; }
            for (i = 0; i < EMB; i++) {
                double v;
                if (fscanf(p, "%lf", &v) != 1) { CHECK_MSG(0, "%s: too few values", cmd); break; }
                got[k][i] = (float)v;
                /* printed digits, and the float parts' last bits: the CLI may run on
                 * another ISA than this test (valgrind has no AVX-512) */
                CHECK_NEAR(v, want[i], 1e-4 * fabs(want[i]) + 1e-6);
            }
            CHECK(pclose(p) == 0);
        }
        CHECK(memcmp(got[0], got[1], sizeof got[0]) == 0);
    }
    /* --help shows the option; bad usage is refused */
    snprintf(cmd, sizeof cmd, "%s embed --help | grep -q -- --int8", cli);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s quantize %s 2>/dev/null", cli, path);
    CHECK(system(cmd) != 0);
    snprintf(cmd, sizeof cmd, "%s quantize /nonexistent/x.safetensors %s.never 2>/dev/null", cli, qpath);
    CHECK(system(cmd) != 0);
    aes_clip_free(m);
    aes_image_free(&img);
    remove(path);
    remove(qpath);
}

/* ---- optional: the ViT-B/32-shaped checkpoint of `clip_reference.py vitb32 PATH` ---------- */
static void test_vitb32_slow(void) {
    const char *path = getenv("AES_CLIP_VITB32");
    char refs[4096];
    aes_safetensors *st = NULL;
    aes_clip *m = NULL;
    static float px[2 * 3 * 224 * 224], want[3 * 512], out[3 * 512];
    static int32_t tok[3 * 77];
    if (!path) { tl_skip("set AES_CLIP_VITB32=PATH (tools/clip_reference.py vitb32 PATH)"); return; }
    snprintf(refs, sizeof refs, "%s.refs.safetensors", path);
    if (aes_safetensors_open(ctx, refs, &st) != AES_OK) { CHECK_OK(ctx, aes_last_status(ctx)); return; }
    CHECK_OK(ctx, aes_tensor_to_f32(ctx, aes_safetensors_find(st, "pixels"), px, 2 * 3 * 224 * 224));
    memcpy(tok, aes_safetensors_find(st, "tokens")->data, sizeof tok);
    m = load(path, NULL);
    set_threads(2);
    if (m) {
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, aes_safetensors_find(st, "image"), want, 2 * 512));
        CHECK_OK(ctx, aes_clip_encode_image(ctx, m, px, 2, out));
        compare(out, want, 2, 512, 1e-4, "ViT-B/32 image");
        CHECK_OK(ctx, aes_tensor_to_f32(ctx, aes_safetensors_find(st, "text"), want, 3 * 512));
        CHECK_OK(ctx, aes_clip_encode_text(ctx, m, tok, 3, out));
        compare(out, want, 3, 512, 1e-4, "ViT-B/32 text");
    }
    set_threads(1);
    aes_clip_free(m);
    aes_safetensors_close(st);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    RUN(test_hf_f32);
    RUN(test_hf_f32_gelu);
    RUN(test_openai_f16);
    RUN(test_keep_16bit);
    RUN(test_single_towers);
    RUN(test_rounding_budget);
    RUN(test_hash);
    RUN(test_save_roundtrip);
    RUN(test_create_random);
    RUN(test_params_layout);
    RUN(test_mapped_weights);
    RUN(test_saved_activations);
    RUN(test_threads_and_batches);
    RUN(test_packed_weights);
    RUN(test_hostile);
    RUN(test_cli_embed);
    RUN(test_int8_model);
    RUN(test_int8_hostile);
    RUN(test_cli_int8);
    RUN(test_vitb32_slow);
    aes_ctx_free(ctx);
    return tl_report();
}
