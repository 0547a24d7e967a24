/* make_seeds.c -- writes the seed corpus of the fuzz harnesses
 * (tests/fuzz/corpus/<harness>/) from the library's own writers, so every
 * seed is a valid file of the current formats.  Not part of `make test`:
 *
 *     cc -std=c99 -D_POSIX_C_SOURCE=200809L -I. -o /tmp/make_seeds \
 *        tests/fuzz/make_seeds.c -lm -lpthread && /tmp/make_seeds tests/fuzz/corpus
 *
 * Seeds taken from tests/fixtures (small PNM images, merges files, configs)
 * are copied by hand; this program writes the rest.  Every seed is small
 * (a few KB) so the committed corpus stays well under 1 MB. */
#define AESALIGN_IMPLEMENTATION
#include "aesalign.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "tests/fuzz/fuzz_ivf_index.h"

static const char *g_root;
static aes_ctx *g_ctx;

static void die(const char *what) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, aes_last_error(g_ctx));
    exit(1);
}

static void put(const char *harness, const char *name, const void *data, size_t len) {
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", g_root, harness);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/%s", g_root, harness, name);
    f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void put_text(const char *harness, const char *name, const char *text) {
    put(harness, name, text, strlen(text));
}

/* [u16 LE n][n bytes config][blob]; flags go in the top bits of byte 1
 * (the harnesses read options from there), so configs stay under 8 KB. */
static void put_split(const char *harness, const char *name, const char *config, const void *blob,
                      size_t len, unsigned flags) {
    size_t n = config ? strlen(config) : 0;
    unsigned char *buf = (unsigned char *)malloc(2 + n + len);
    if (n >= 0x2000) { fprintf(stderr, "config too long\n"); exit(1); }
    buf[0] = (unsigned char)(n & 0xff);
    buf[1] = (unsigned char)((n >> 8) | flags);
    memcpy(buf + 2, config, n);
    memcpy(buf + 2 + n, blob, len);
    /* the harness clamps n to the input, so flags in the top bits would
     * swallow the blob: only use them when they keep n small */
    put(harness, name, buf, 2 + n + len);
    free(buf);
}

static const char *tiny_hf_config =
    "{\"model_type\":\"clip\",\"projection_dim\":8,\"logit_scale_init_value\":2.6592,"
    "\"text_config\":{\"hidden_act\":\"quick_gelu\",\"layer_norm_eps\":1e-05,\"hidden_size\":8,"
    "\"intermediate_size\":16,\"num_attention_heads\":2,\"num_hidden_layers\":1,"
    "\"max_position_embeddings\":8,\"vocab_size\":40,\"bos_token_id\":38,\"eos_token_id\":39},"
    "\"vision_config\":{\"hidden_act\":\"quick_gelu\",\"layer_norm_eps\":1e-05,\"hidden_size\":8,"
    "\"intermediate_size\":16,\"num_attention_heads\":2,\"num_hidden_layers\":1,"
    "\"image_size\":16,\"patch_size\":8,\"num_channels\":3}}";

static aes_clip_config tiny_config(int vision, int text) {
    aes_clip_config c;
    memset(&c, 0, sizeof c);
    c.image_size = 16; c.patch_size = 8;
    c.vision_width = 8; c.vision_layers = 1; c.vision_heads = 2; c.vision_mlp = 16;
    c.context_length = 8; c.vocab_size = 40;
    c.text_width = 8; c.text_layers = 1; c.text_heads = 2; c.text_mlp = 16;
    c.embed_dim = 8;
    c.act = AES_ACT_QUICK_GELU;
    c.ln_eps = 1e-5f;
    c.has_vision = vision;
    c.has_text = text;
    return c;
}

static void seeds_clip(void) {
    static const struct { int vision, text; aes_layout layout; int dtype; const char *name; int cfg; } v[] = {
        {1, 1, AES_LAYOUT_HF, AES_DTYPE_F32, "hf_f32_both", 1},
        {1, 1, AES_LAYOUT_OPENAI, AES_DTYPE_F16, "openai_f16_both", 0},
        {1, 0, AES_LAYOUT_HF, AES_DTYPE_BF16, "hf_bf16_vision", 0},
        {0, 1, AES_LAYOUT_OPENAI, AES_DTYPE_F32, "openai_f32_text", 0},
    };
    size_t i;
    for (i = 0; i < sizeof v / sizeof *v; i++) {
        aes_clip_config c = tiny_config(v[i].vision, v[i].text);
        aes_clip *m = NULL;
        void *buf = NULL;
        size_t len = 0;
        if (aes_clip_create_random(g_ctx, &c, 1 + i, &m) != AES_OK) die("aes_clip_create_random");
        if (aes_clip_serialize(g_ctx, m, v[i].layout, v[i].dtype, &buf, &len) != AES_OK) die("aes_clip_serialize");
        put_split("clip", v[i].name, v[i].cfg ? tiny_hf_config : NULL, buf, len, 0);
        /* the raw container, for the safetensors harness too */
        if (i == 2) put("safetensors", "clip_bf16_vision", buf, len);
        aes_free(buf);
        aes_clip_free(m);
    }
}

/* A checkpoint is a model file: what the trainer saves is aes_clip_save. */
static void seeds_checkpoint(void) {
    int layout;
    for (layout = 0; layout < 2; layout++) {
        aes_clip_config c = tiny_config(1, layout == 0);
        aes_clip *m = NULL;
        void *buf = NULL;
        size_t len = 0;
        if (aes_clip_create_random(g_ctx, &c, 7 + (uint64_t)layout, &m) != AES_OK) die("aes_clip_create_random");
        if (aes_clip_serialize(g_ctx, m, layout ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF, AES_DTYPE_F32, &buf, &len) !=
            AES_OK)
            die("aes_clip_serialize");
        put_split("checkpoint", layout ? "openai_vision" : "hf_both_config", layout ? NULL : tiny_hf_config, buf,
                  len, 0);
        if (layout == 0) put_split("checkpoint", "hf_both_noconfig", NULL, buf, len, 0);
        aes_free(buf);
        aes_clip_free(m);
    }
}

static void seeds_safetensors(void) {
    float f[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    uint16_t bf[3] = {0x3f80, 0xbf80, 0x4049};
    int64_t ids[3] = {0, 1, 2};
    double d = 3.25;
    int8_t i8[5] = {-1, 2, -3, 4, 127};
    aes_tensor_out t[6];
    const char *meta[] = {"format", "pt", "note", "seed \"quoted\" \\ value"};
    void *buf = NULL;
    size_t len = 0;
    memset(t, 0, sizeof t);
    t[0].name = "w"; t[0].dtype = AES_DTYPE_F32; t[0].ndim = 2; t[0].shape[0] = 2; t[0].shape[1] = 3; t[0].data = f;
    t[1].name = "h"; t[1].dtype = AES_DTYPE_F16; t[1].ndim = 1; t[1].shape[0] = 4; t[1].data = h;
    t[2].name = "b.bf16"; t[2].dtype = AES_DTYPE_BF16; t[2].ndim = 3; t[2].shape[0] = 1; t[2].shape[1] = 3;
    t[2].shape[2] = 1; t[2].data = bf;
    t[3].name = "position_ids"; t[3].dtype = AES_DTYPE_I64; t[3].ndim = 1; t[3].shape[0] = 3; t[3].data = ids;
    t[4].name = "scalar"; t[4].dtype = AES_DTYPE_F64; t[4].ndim = 0; t[4].data = &d;
    t[5].name = "q"; t[5].dtype = AES_DTYPE_I8; t[5].ndim = 1; t[5].shape[0] = 5; t[5].data = i8;
    if (aes_safetensors_serialize(g_ctx, t, 6, meta, 2, &buf, &len) != AES_OK) die("aes_safetensors_serialize");
    put("safetensors", "mixed", buf, len);
    aes_free(buf);
    t[0].shape[0] = 0;   /* an empty tensor */
    if (aes_safetensors_serialize(g_ctx, t, 1, NULL, 0, &buf, &len) != AES_OK) die("aes_safetensors_serialize");
    put("safetensors", "empty_tensor", buf, len);
    aes_free(buf);
    if (aes_safetensors_serialize(g_ctx, t, 0, meta, 1, &buf, &len) != AES_OK) die("aes_safetensors_serialize");
    put("safetensors", "metadata_only", buf, len);
    aes_free(buf);
}

static void seeds_head(void) {
    static const int hidden[4] = {6, 5, 4, 3};
    const char *kv[] = {"aesalign.model_id", "0123456789abcdef", "aesalign.trained_on", "seed"};
    static const struct { int kind, output, act, dim; const char *name; } v[] = {
        {AES_HEAD_LINEAR, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 8, "linear_score"},
        {AES_HEAD_MLP, AES_HEAD_SCORE, AES_HEAD_ACT_NONE, 8, "mlp_score"},
        {AES_HEAD_MLP, AES_HEAD_HIST10, AES_HEAD_ACT_RELU, 8, "mlp_hist10_relu"},
        {AES_HEAD_LINEAR, AES_HEAD_HIST10, AES_HEAD_ACT_NONE, 4, "linear_hist10"},
    };
    size_t i;
    for (i = 0; i < sizeof v / sizeof *v; i++) {
        aes_head h;
        void *buf = NULL;
        size_t len = 0;
        memset(&h, 0, sizeof h);
        if (aes_head_init(g_ctx, &h, v[i].kind, v[i].output, v[i].act, v[i].dim, hidden, 3 + i) != AES_OK)
            die("aes_head_init");
        if (aes_head_serialize(g_ctx, &h, i == 1 ? kv : NULL, i == 1 ? 2 : 0, &buf, &len) != AES_OK)
            die("aes_head_serialize");
        put("head", v[i].name, buf, len);
        if (i == 0) put("safetensors", "head_linear", buf, len);
        aes_free(buf);
        aes_head_free(&h);
    }
}

static void seeds_index(void) {
    static const unsigned storage[3] = {AES_INDEX_F32, AES_INDEX_I8, AES_INDEX_F32 | AES_INDEX_I8};
    static const char *names[3] = {"f32", "i8", "f32_i8"};
    int s;
    for (s = 0; s < 3; s++) {
        aes_index *idx = NULL;
        void *buf = NULL;
        size_t len = 0;
        int r, d;
        if (aes_index_create(g_ctx, 8, storage[s], s ? "clip-x" : "", s == 2 ? "head-y" : "", &idx) != AES_OK)
            die("aes_index_create");
        for (r = 0; r < 4; r++) {
            float e[8];
            char path[64];
            for (d = 0; d < 8; d++) e[d] = (float)(((r + 1) * (d + 3)) % 7) - 2.5f;
            snprintf(path, sizeof path, "photos/%s/img_%d.jpg", r & 1 ? "b" : "a", r);
            if (aes_index_add(g_ctx, idx, path, 1000u + (unsigned)r, 1700000000000000000LL + r, e,
                              r == 2 ? NAN : 4.5f + (float)r) != AES_OK)
                die("aes_index_add");
        }
        if (s == 2 && aes_index_set_meta(g_ctx, idx, "model=clip-x\nnote=seed\n") != AES_OK) die("aes_index_set_meta");
        if (aes_index_save_memory(g_ctx, idx, &buf, &len) != AES_OK) die("aes_index_save_memory");
        put("index", names[s], buf, len);
        aes_free(buf);
        aes_index_free(idx);
    }
    {   /* an empty index */
        aes_index *idx = NULL;
        void *buf = NULL;
        size_t len = 0;
        if (aes_index_create(g_ctx, 4, AES_INDEX_F32, "", "", &idx) != AES_OK) die("aes_index_create");
        if (aes_index_save_memory(g_ctx, idx, &buf, &len) != AES_OK) die("aes_index_save_memory");
        put("index", "empty", buf, len);
        aes_free(buf);
        aes_index_free(idx);
    }
}

/* The same layout as tests/fuzz/fuzz_optim.c. */
static void seeds_optim(void) {
    int kind;
    for (kind = 0; kind < 2; kind++) {
        aes_optim_config cfg = aes_optim_config_default(kind ? AES_OPTIM_ADAMW : AES_OPTIM_SGD);
        aes_param_segment seg[2];
        aes_optim *opt = NULL;
        float p[40], g[40];
        unsigned char *buf = NULL;
        size_t len = 0;
        int i, step;
        seg[0].offset = 0;  seg[0].count = 16; seg[0].decay = 1;
        seg[1].offset = 24; seg[1].count = 12; seg[1].decay = 0;
        cfg.lr = 1e-2f;
        if (kind) { cfg.warmup_steps = 2; cfg.total_steps = 10; cfg.clip_norm = 1.0f; }
        if (aes_optim_create(g_ctx, &cfg, 40, seg, 2, &opt) != AES_OK) die("aes_optim_create");
        for (i = 0; i < 40; i++) { p[i] = 0.02f * (float)i; g[i] = 0.05f - 0.003f * (float)i; }
        if (aes_optim_save_memory(g_ctx, opt, &buf, &len) != AES_OK) die("aes_optim_save_memory");
        put("optim", kind ? "adamw_fresh" : "sgd_fresh", buf, len);
        aes_free(buf);
        for (step = 0; step < 3; step++)
            if (aes_optim_step(g_ctx, opt, p, g, aes_lr_schedule(&cfg, aes_optim_steps_done(opt)), NULL) != AES_OK)
                die("aes_optim_step");
        if (aes_optim_save_memory(g_ctx, opt, &buf, &len) != AES_OK) die("aes_optim_save_memory");
        put("optim", kind ? "adamw_3steps" : "sgd_3steps", buf, len);
        aes_free(buf);
        aes_optim_free(opt);
    }
}

static void seeds_pairs(void) {
    aes_pair_set *set = NULL;
    char *text = NULL;
    size_t len = 0;
    if (aes_pair_set_create(g_ctx, &set) != AES_OK) die("aes_pair_set_create");
    if (aes_pair_set_add(g_ctx, set, "a cat", "cats/1.jpg", "cats/2.jpg", 1.0f) != AES_OK ||
        aes_pair_set_add(g_ctx, set, "a cat", "cats/3.jpg", "cats/2.jpg", 0.5f) != AES_OK ||
        aes_pair_set_add(g_ctx, set, "tab\there, new\nline \\ slash", "x y.png", "caf\xc3\xa9.ppm", 2.0f) != AES_OK)
        die("aes_pair_set_add");
    if (aes_pair_set_format(g_ctx, set, &text, &len) != AES_OK) die("aes_pair_set_format");
    put("pairs", "formatted", text, len);
    aes_free(text);
    aes_pair_set_free(set);
    put_text("pairs", "comments", "# query\tpreferred\trejected\tweight\n\nsunset\ta.jpg\tb.jpg\n"
                                  "sunset\tc.jpg\tb.jpg\t0.25\r\n");
}

static void seeds_merges(void) {
    static const char *const captions[] = {
        "a photo of a cat", "a photo of a dog", "two cats on a red sofa", "caf\xc3\xa9 au lait",
        "\xe7\x8c\xab\xe3\x81\xa8\xe7\x8a\xac", "sunset over the mountains, oil painting",
    };
    aes_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0;
    if (aes_tokenizer_train(g_ctx, captions, 6, 40, &tok) != AES_OK) die("aes_tokenizer_train");
    if (aes_tokenizer_merges_text(g_ctx, tok, &text, &len) != AES_OK) die("aes_tokenizer_merges_text");
    put("merges", "trained.txt", text, len);
    aes_free(text);
    aes_tokenizer_free(tok);
}

static void seeds_text(void) {
    /* json */
    put_text("json", "values", "{\"a\":[1,-2.5e3,0.0,true,false,null],\"s\":\"x\\\"y\\\\z\\n\\u00e9\\ud83d\\ude00\","
                               "\"nested\":{\"k\":[[[]],{}]},\"big\":123456789012345678,\"neg\":-0}");
    put_text("json", "array", " [ \"caf\xc3\xa9\" , 1e-7 , -1E+2 , {\"\":\"\"} ] ");
    put_text("json", "scalar", "\"just a string\"");
    /* tokenize */
    put_text("tokenize", "caption", "a photo of a cat");
    put_text("tokenize", "mixed", "  A Painting OF a SHIP at 4k!!! &amp; caf\xc3\xa9 \xe7\x8c\xab\xe3\x81\xa8 don't it's  ");
    put("tokenize", "invalid_utf8", "\x01\xff\xfe a \xc3\x28 b \xe2\x82 \xf0\x90\x8d \x00 c", 22);
    put_text("tokenize", "long_word", "pneumonoultramicroscopicsilicovolcanoconiosis"
                                      "pneumonoultramicroscopicsilicovolcanoconiosis 123456789 ...");
    /* labels: CSV and AVA */
    put_text("labels", "csv_score", "\xEF\xBB\xBFpath,score\r\n\"img,1.jpg\",5.5\r\nimg2.jpg, 7.25 \r\n\r\n");
    put_text("labels", "csv_hist", "id,h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n1,0,0,0,0,1,1,0,0,0,0\n2,1,0,0,0,0,0,0,0,0,3\n");
    put_text("labels", "csv_both", "H10,h9,h8,h7,h6,h5,h4,h3,h2,h1,Score,path\n2,0,0,0,0,0,0,0,0,2,4.0,\"a \"\"q\"\".jpg\"\n");
    put_text("labels", "ava", "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\n"
                              "2 953958 10 7 15 33 30 13 5 2 1 2 1 22 1396\n");
    /* expansions */
    put_text("expansions", "cache", "# cache\r\nA cat\ta cat, soft light\r\n\nthe  sea \tthe sea at dawn\n"
                                    "the sea\tthe calm sea at dawn\n");
    put_text("expansions", "unicode", "caf\xc3\xa9\tun caf\xc3\xa9 au soleil\n\xe7\x8c\xab\t\xe7\x8c\xab\xe3\x81\xa8\n");
    /* eval: the first byte also picks K; '#' gives 33 */
    put_text("eval", "full", "# two queries\n"
                             "result\tq1\t1\ta\t0.9\t5\nresult\tq1\t2\tb\t0.8\t7\nresult\tq1\t3\tc\t0.7\t3\n"
                             "result\tq2\t2\td\t0.5\nresult\tq2\t1\te\t0.6\n"
                             "rel\tq1\tb\t2\nrel\tq1\tz\t1\nrel\tq2\te\t1\n"
                             "aesthetic\td\t4\naesthetic\te\t6\nscore\tq2\tx\t0.1\n"
                             "pair\tq1\ta,b\tc\tA\t2\npair\tq2\te\tx\tB\npair\tq2\td\tnever\tA\n");
    put_text("eval", "results_only", "\nresult\tq\t1\ta\nresult\tq\t2\tb\t0.5\t6.5\nrel\tq\ta\t1\n");
    /* pnm: hand-written bitmaps beside the fixtures */
    put_text("pnm", "p1_bitmap", "P1\n# a 4x3 bitmap\n4 3\n0 1 1 0\n1 0 0 1\n0 1 1 0\n");
    put("pnm", "p4_bitmap", "P4\n9 2\n\xAA\x80\x55\x00", 13);
    put_text("pnm", "p2_max7", "P2 3 2 7 0 1 2 3 4 7");
    put("pnm", "p6_16bit", "P6 1 2 65535\n\x12\x34\x56\x78\x9a\xbc\xff\xff\x00\x00\x80\x00", 25);
}

/* IVFs of fuzz_ivf_index.h's index: one list, four, one per row. */
static void seeds_ivf(void) {
    static const int nlist[3] = {1, 4, 64};
    static const char *names[3] = {"one_list", "four_lists", "row_lists"};
    aes_index *idx = fz_ivf_index(g_ctx);
    int s;
    if (!idx) die("fz_ivf_index");
    for (s = 0; s < 3; s++) {
        aes_ivf *ivf = NULL;
        void *buf = NULL;
        size_t len = 0;
        if (aes_ivf_build(g_ctx, idx, nlist[s], 1, &ivf) != AES_OK) die("aes_ivf_build");
        if (aes_ivf_save_memory(g_ctx, ivf, &buf, &len) != AES_OK) die("aes_ivf_save_memory");
        put("ivf", names[s], buf, len);
        aes_free(buf);
        aes_ivf_free(ivf);
    }
    aes_index_free(idx);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    g_root = argv[1];
    mkdir(g_root, 0777);
    g_ctx = aes_ctx_create();
    if (!g_ctx) return 1;
    seeds_safetensors();
    seeds_clip();
    seeds_checkpoint();
    seeds_head();
    seeds_index();
    seeds_ivf();
    seeds_optim();
    seeds_pairs();
    seeds_merges();
    seeds_text();
    aes_ctx_free(g_ctx);
    return 0;
}
