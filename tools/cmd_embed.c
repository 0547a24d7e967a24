/* aesalign embed / classify: CLIP embeddings and zero-shot classification.
 *
 *   aesalign embed --model FILE [--config FILE] [--vocab FILE] [--normalize] [--f16]
 *                  [--act quick_gelu|gelu] (--image PATH | --text STRING)...
 *   aesalign classify --model FILE --image PATH --labels "a cat,a dog" [--template "a photo of {}"]
 *
 * `embed` prints one line per input, in the order given: the projected
 * embedding, values separated by single spaces, %.9g (enough digits to
 * round-trip a float).  `classify` prints one line per label:
 * "<probability>\t<label>", the softmax over labels of
 * exp(logit_scale) * cos(image, text), as CLIP's zero-shot classifier.
 */
#include "cli.h"
#include <math.h>

/* ---- shared by both commands ---------------------------------------------------- */

/* Preprocessed images [n, 3, S, S]. */
static aes_status images_to_pixels(aes_ctx *ctx, const aes_clip *m, char **paths, int n, float *px, const char *cmd) {
    int S = aes_clip_config_get(m)->image_size, i;
    for (i = 0; i < n; i++) {
        aes_image img;
        aes_status st;
        memset(&img, 0, sizeof img);
        st = (aes_status)cli_load_image(ctx, paths[i], &img);
        if (!st) st = aes_clip_preprocess(ctx, &img, S, px + (size_t)i * 3 * S * S);
        aes_image_free(&img);
        if (st) {
            cli_fail(cmd, ctx, "image %d", i + 1);
            return st;
        }
    }
    return AES_OK;
}

/* Token rows [n, context_length]. */
static aes_status texts_to_tokens(aes_ctx *ctx, const aes_clip *m, const aes_tokenizer *tok, char **texts, int n,
                                  int32_t *ids, const char *cmd) {
    int L = aes_clip_config_get(m)->context_length, i;
    if (aes_tokenizer_vocab_size(tok) > aes_clip_config_get(m)->vocab_size) {
        cli_fail(cmd, NULL, "the tokenizer has %d tokens but the model's vocabulary only %d",
                 aes_tokenizer_vocab_size(tok), aes_clip_config_get(m)->vocab_size);
        return AES_ERR_MISMATCH;
    }
    for (i = 0; i < n; i++) {
        aes_status st = aes_tokenizer_encode(ctx, tok, texts[i], strlen(texts[i]), ids + (size_t)i * L, L, NULL);
        if (st) {
            cli_fail(cmd, ctx, "tokenizing '%s'", texts[i]);
            return st;
        }
    }
    return AES_OK;
}

static void l2_normalize(float *x, int n) {
    aes_l2norm_forward(x, NULL, x, 1, n, 1e-12f);
}

/* ---- embed ------------------------------------------------------------------------ */

static void embed_usage(FILE *f) {
    fprintf(f, "usage: aesalign embed --model FILE [--config FILE] [--vocab FILE] [--normalize] [--f16]\n"
               "                      [--act quick_gelu|gelu] (--image PATH | --text STRING)...\n"
               "Prints one line per input, in order: its CLIP embedding (%%.9g, space separated).\n"
               CLI_MODEL_HELP
               "  --normalize          L2-normalise the embeddings\n");
}

CLI_COMMAND(embed, "print CLIP embeddings of images and texts") {
    cli_model_opts o;
    aes_ctx *ctx = NULL;
    aes_clip *m = NULL;
    aes_tokenizer *tok = NULL;
    char **img_paths = NULL, **texts = NULL;
    int *kind = NULL; /* per input in order: 0 image, 1 text */
    int n_in = 0, n_img = 0, n_txt = 0, i, rc = 1, E, normalize = 0;
    float *px = NULL, *img_emb = NULL, *txt_emb = NULL;
    int32_t *ids = NULL;
    memset(&o, 0, sizeof o);
    kind = (int *)calloc((size_t)argc + 1, sizeof(int));
    img_paths = (char **)calloc((size_t)argc + 1, sizeof(char *));
    texts = (char **)calloc((size_t)argc + 1, sizeof(char *));
    if (!kind || !img_paths || !texts) { rc = cli_fail("embed", NULL, "out of memory"); goto out; }
    for (i = 1; i < argc; i++) {
        const char *val;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { embed_usage(stdout); rc = 0; goto out; }
        if ((r = cli_model_opt(argc, argv, &i, &o))) { if (r < 0) goto out; continue; }
        if (!strcmp(argv[i], "--normalize")) { normalize = 1; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--image", &val))) {
            if (r < 0) goto out;
            kind[n_in++] = 0;
            img_paths[n_img++] = (char *)val;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--text", &val))) {
            if (r < 0) goto out;
            kind[n_in++] = 1;
            texts[n_txt++] = (char *)val;
            continue;
        }
        fprintf(stderr, "aesalign embed: unknown option '%s'\n", argv[i]);
        embed_usage(stderr);
        rc = 2;
        goto out;
    }
    if (!o.model || n_in == 0) { embed_usage(stderr); rc = 2; goto out; }
    ctx = aes_ctx_create();
    if (!ctx || aes_threads_set(ctx, cli_threads())) { rc = cli_fail("embed", ctx, "no context"); goto out; }
    if (cli_load_model(ctx, &o, &m)) { rc = cli_fail("embed", ctx, "loading %s", o.model); goto out; }
    E = aes_clip_config_get(m)->embed_dim;
    if (n_img) {
        int S = aes_clip_config_get(m)->image_size;
        px = (float *)aes_alloc(ctx, (size_t)n_img * 3 * S * S, sizeof(float));
        img_emb = (float *)aes_alloc(ctx, (size_t)n_img * E, sizeof(float));
        if (!px || !img_emb) { rc = cli_fail("embed", ctx, "images"); goto out; }
        if (images_to_pixels(ctx, m, img_paths, n_img, px, "embed")) goto out;
        if (aes_clip_encode_image(ctx, m, px, n_img, img_emb)) { rc = cli_fail("embed", ctx, "images"); goto out; }
    }
    if (n_txt) {
        int L = aes_clip_config_get(m)->context_length;
        if (!aes_clip_config_get(m)->has_text) { rc = cli_fail("embed", NULL, "%s has no text tower", o.model); goto out; }
        if (cli_load_tokenizer(ctx, o.vocab, o.model, "embed", &tok)) goto out;
        ids = (int32_t *)aes_alloc(ctx, (size_t)n_txt * L, sizeof(int32_t));
        txt_emb = (float *)aes_alloc(ctx, (size_t)n_txt * E, sizeof(float));
        if (!ids || !txt_emb) { rc = cli_fail("embed", ctx, "texts"); goto out; }
        if (texts_to_tokens(ctx, m, tok, texts, n_txt, ids, "embed")) goto out;
        if (aes_clip_encode_text(ctx, m, ids, n_txt, txt_emb)) { rc = cli_fail("embed", ctx, "texts"); goto out; }
    }
    {
        int ii = 0, it = 0, k;
        for (i = 0; i < n_in; i++) {
            float *e = kind[i] ? txt_emb + (size_t)it++ * E : img_emb + (size_t)ii++ * E;
            if (normalize) l2_normalize(e, E);
            for (k = 0; k < E; k++) printf(k ? " %.9g" : "%.9g", (double)e[k]);
            putchar('\n');
        }
    }
    rc = fflush(stdout) == 0 ? 0 : cli_fail("embed", NULL, "writing the output failed");
out:
    aes_free(px); aes_free(img_emb); aes_free(txt_emb); aes_free(ids);
    aes_tokenizer_free(tok);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    free(kind); free(img_paths); free(texts);
    return rc;
}

/* ---- classify ---------------------------------------------------------------------- */

static void classify_usage(FILE *f) {
    fprintf(f, "usage: aesalign classify --model FILE --image PATH --labels \"a cat,a dog\"\n"
               "                         [--template \"a photo of {}\"] [--config FILE] [--vocab FILE] [--f16]\n"
               "                         [--act quick_gelu|gelu]\n"
               "Prints \"<probability>\\t<label>\" per label: softmax(exp(logit_scale) * cos(image, label)).\n"
               CLI_MODEL_HELP);
}

CLI_COMMAND(classify, "zero-shot classify an image against comma-separated labels") {
    cli_model_opts o;
    const char *image = NULL, *labels = NULL, *template_ = NULL;
    aes_ctx *ctx = NULL;
    aes_clip *m = NULL;
    aes_tokenizer *tok = NULL;
    char *labels_copy = NULL, **label = NULL, **prompts = NULL;
    int n = 0, i, rc = 1, E, L, S;
    float *px = NULL, *img = NULL, *txt = NULL, *logit = NULL;
    int32_t *ids = NULL;
    memset(&o, 0, sizeof o);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { classify_usage(stdout); return 0; }
        if ((r = cli_model_opt(argc, argv, &i, &o))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--image", &image))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--labels", &labels))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--template", &template_))) { if (r < 0) return 2; continue; }
        fprintf(stderr, "aesalign classify: unknown option '%s'\n", argv[i]);
        classify_usage(stderr);
        return 2;
    }
    if (!o.model || !image || !labels) { classify_usage(stderr); return 2; }
    /* split the labels on commas (empty ones skipped) */
    labels_copy = (char *)malloc(strlen(labels) + 1);
    label = (char **)calloc(strlen(labels) + 1, sizeof(char *));
    prompts = (char **)calloc(strlen(labels) + 1, sizeof(char *));
    if (!labels_copy || !label || !prompts) { rc = cli_fail("classify", NULL, "out of memory"); goto out; }
    strcpy(labels_copy, labels);
    {
        char *s = labels_copy, *comma;
        for (;;) {
            comma = strchr(s, ',');
            if (comma) *comma = 0;
            while (*s == ' ') s++;
            if (*s) label[n++] = s;
            if (!comma) break;
            s = comma + 1;
        }
    }
    if (n == 0) { rc = cli_fail("classify", NULL, "no labels in '%s'", labels); goto out; }
    for (i = 0; i < n; i++) { /* "{}" in the template is replaced by the label */
        const char *t = template_ ? template_ : "{}", *hole = strstr(t, "{}");
        size_t len = strlen(t) + strlen(label[i]) + 1;
        prompts[i] = (char *)malloc(len);
        if (!prompts[i]) { rc = cli_fail("classify", NULL, "out of memory"); goto out; }
        if (hole) snprintf(prompts[i], len, "%.*s%s%s", (int)(hole - t), t, label[i], hole + 2);
        else snprintf(prompts[i], len, "%s", t);
    }
    ctx = aes_ctx_create();
    if (!ctx || aes_threads_set(ctx, cli_threads())) { rc = cli_fail("classify", ctx, "no context"); goto out; }
    if (cli_load_model(ctx, &o, &m)) { rc = cli_fail("classify", ctx, "loading %s", o.model); goto out; }
    if (!aes_clip_config_get(m)->has_vision || !aes_clip_config_get(m)->has_text) {
        rc = cli_fail("classify", NULL, "%s needs both towers", o.model);
        goto out;
    }
    if (cli_load_tokenizer(ctx, o.vocab, o.model, "classify", &tok)) goto out;
    E = aes_clip_config_get(m)->embed_dim;
    L = aes_clip_config_get(m)->context_length;
    S = aes_clip_config_get(m)->image_size;
    px = (float *)aes_alloc(ctx, (size_t)3 * S * S, sizeof(float));
    img = (float *)aes_alloc(ctx, (size_t)E, sizeof(float));
    txt = (float *)aes_alloc(ctx, (size_t)n * E, sizeof(float));
    logit = (float *)aes_alloc(ctx, (size_t)n, sizeof(float));
    ids = (int32_t *)aes_alloc(ctx, (size_t)n * L, sizeof(int32_t));
    if (!px || !img || !txt || !logit || !ids) { rc = cli_fail("classify", ctx, "memory"); goto out; }
    if (images_to_pixels(ctx, m, (char **)&image, 1, px, "classify")) goto out;
    if (texts_to_tokens(ctx, m, tok, prompts, n, ids, "classify")) goto out;
    if (aes_clip_encode_image(ctx, m, px, 1, img) || aes_clip_encode_text(ctx, m, ids, n, txt)) {
        rc = cli_fail("classify", ctx, "encoding");
        goto out;
    }
    /* CLIP's zero-shot logits: exp(logit_scale) * cos(image, text) */
    l2_normalize(img, E);
    for (i = 0; i < n; i++) {
        l2_normalize(txt + (size_t)i * E, E);
        logit[i] = aes_clip_logit_scale(m) * aes_dot(ctx, img, txt + (size_t)i * E, (size_t)E);
    }
    aes_softmax_forward(ctx, logit, logit, 1, n);
    for (i = 0; i < n; i++) printf("%.6f\t%s\n", (double)logit[i], label[i]);
    rc = fflush(stdout) == 0 ? 0 : cli_fail("classify", NULL, "writing the output failed");
out:
    aes_free(px); aes_free(img); aes_free(txt); aes_free(logit); aes_free(ids);
    aes_tokenizer_free(tok);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    if (prompts) for (i = 0; i < n; i++) free(prompts[i]);
    free(prompts); free(label); free(labels_copy);
    return rc;
}
