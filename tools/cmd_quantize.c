/* aesalign quantize: write a CLIP checkpoint with int8 attention and MLP
 * weights.
 *
 *   aesalign quantize IN.safetensors OUT.safetensors [--config FILE] [--act A]
 *                     [--layout hf|openai]
 *
 * Every block's qkv, out, fc1 and fc2 weight becomes dtype I8 under its
 * usual name, with its per-output-channel scales in "<name>_scale" (F32
 * [out]); everything else is written as F32 (README, "int8").  The values
 * are those `--int8` computes at load time, so loading OUT gives the same
 * model (same id) as loading IN with --int8, at a quarter of the size of
 * the matrices.  OUT is written atomically. */
#include "cli.h"

static void quantize_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign quantize IN.safetensors OUT.safetensors [options]\n"
            "  writes IN with int8 attention/MLP weights (I8 + <name>_scale F32 per output channel),\n"
            "  the rest F32, atomically; `--int8` on other commands computes the same model from IN\n"
            "  --config FILE        Hugging Face config.json / open_clip config (default: beside IN)\n"
            "  --act quick_gelu|gelu  force the activation (recorded in OUT)\n"
            "  --layout hf|openai   tensor names of OUT (default: IN's)\n"
            "  --help               this text\n");
}

CLI_COMMAND(quantize, "write a CLIP checkpoint with int8 attention/MLP weights (see --int8)") {
    const char *in = NULL, *out = NULL, *layout_name = NULL;
    cli_model_opts o;
    aes_ctx *ctx = NULL;
    aes_clip *m = NULL;
    aes_layout layout;
    int i, rc = 1;
    memset(&o, 0, sizeof o);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { quantize_usage(stdout); return 0; }
        if ((r = cli_opt_str(argc, argv, &i, "--config", &o.config))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--act", &o.act))) {
            if (r < 0) return 2;
            if (strcmp(o.act, "gelu") && strcmp(o.act, "quick_gelu")) {
                fprintf(stderr, "aesalign quantize: --act wants quick_gelu or gelu, not '%s'\n", o.act);
                return 2;
            }
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--layout", &layout_name))) {
            if (r < 0) return 2;
            if (strcmp(layout_name, "hf") && strcmp(layout_name, "openai")) {
                fprintf(stderr, "aesalign quantize: --layout wants hf or openai, not '%s'\n", layout_name);
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "aesalign quantize: unknown option '%s'\n", argv[i]);
            quantize_usage(stderr);
            return 2;
        }
        if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else {
            fprintf(stderr, "aesalign quantize: one input and one output file, not '%s' too\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) { quantize_usage(stderr); return 2; }
    o.model = in;
    o.int8 = 1;
    ctx = aes_ctx_create();
    if (!ctx || aes_threads_set(ctx, cli_threads())) return cli_fail("quantize", ctx, "no context");
    if (cli_load_model(ctx, &o, &m)) { rc = cli_fail("quantize", ctx, "loading %s", in); goto done; }
    layout = aes_clip_config_get(m)->layout;
    if (layout_name) layout = strcmp(layout_name, "hf") ? AES_LAYOUT_OPENAI : AES_LAYOUT_HF;
    if (aes_clip_save(ctx, m, out, layout, AES_DTYPE_I8)) { rc = cli_fail("quantize", ctx, "writing %s", out); goto done; }
    fprintf(stderr, "aesalign quantize: %s -> %s (%s layout): %.1f MB of weights in memory, model %s\n", in, out,
            layout == AES_LAYOUT_HF ? "hf" : "openai", (double)aes_clip_weight_bytes(m) / 1e6, aes_clip_id(m));
    rc = 0;
done:
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return rc;
}
