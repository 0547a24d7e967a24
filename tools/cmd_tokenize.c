/* aesalign tokenize: CLIP token ids of texts, one line per text. */
#include "cli.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign tokenize [--vocab FILE] [--context N] [--raw] [--] TEXT...\n"
            "\n"
            "Prints, per TEXT, one line of token ids separated by single spaces: by default\n"
            "the 77 ids CLIP's text tower reads (start token, BPE ids, end token, zero\n"
            "padding; long texts are cut keeping the end token last, as\n"
            "clip.tokenize(truncate=True)).  Without TEXT, every line of standard input is\n"
            "one text.\n"
            "\n"
            "  --vocab FILE   the BPE merges: OpenAI's bpe_simple_vocab_16e6.txt (or .gz),\n"
            "                 a Hugging Face merges.txt, or a file written by training;\n"
            "                 default: $AES_VOCAB\n"
            "  --context N    ids per line (default 77)\n"
            "  --raw          only the BPE ids: no start/end token, padding or cut\n"
            "\n"
            "Differences from clip.tokenize: ftfy.fix_text is not applied; invalid UTF-8\n"
            "reads as U+FFFD (see aesalign.h).\n");
}

static int tokenize_one(aes_ctx *ctx, const aes_tokenizer *tok, const char *text, size_t len, int context,
                        int raw, int32_t *ids) {
    int k, used = 0;
    if (raw) {
        size_t n = 0, i;
        int32_t *all;
        if (aes_tokenizer_encode_raw(ctx, tok, text, len, NULL, 0, &n) != AES_OK) return 0;
        all = (int32_t *)aes_alloc(ctx, n + 1, sizeof(int32_t));
        if (!all || aes_tokenizer_encode_raw(ctx, tok, text, len, all, n, &n) != AES_OK) {
            aes_free(all);
            return 0;
        }
        for (i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)all[i]);
        putchar('\n');
        aes_free(all);
        return 1;
    }
    if (aes_tokenizer_encode(ctx, tok, text, len, ids, context, &used) != AES_OK) return 0;
    for (k = 0; k < context; k++) printf(k ? " %d" : "%d", (int)ids[k]);
    putchar('\n');
    return 1;
}

CLI_COMMAND(tokenize, "print 77 CLIP token ids per text") {
    const char *vocab = NULL;
    long context = AES_TOKENIZER_CONTEXT;
    int raw = 0, i, first_text = argc, status = 0;
    aes_ctx *ctx;
    aes_tokenizer *tok = NULL;
    int32_t *ids;
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { tokenize_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--")) { first_text = i + 1; break; }
        if (!strcmp(argv[i], "--raw")) { raw = 1; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--vocab", &vocab)) != 0) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--context", &context)) != 0) { if (r < 0) return 2; continue; }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "aesalign tokenize: unknown option %s (texts starting with '-' go after --)\n", argv[i]);
            tokenize_usage(stderr);
            return 2;
        }
        first_text = i;
        break;
    }
    if (context < 2 || context > 1000000) return cli_fail("tokenize", NULL, "--context %ld is not in [2, 1000000]", context);
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("tokenize", NULL, "out of memory");
    if (cli_load_tokenizer(ctx, vocab, NULL, "tokenize", &tok) != AES_OK) {
        aes_ctx_free(ctx);
        return 1;
    }
    ids = (int32_t *)aes_alloc(ctx, (size_t)context, sizeof(int32_t));
    if (!ids) {
        status = cli_fail("tokenize", ctx, "out of memory");
    } else if (first_text < argc) {
        for (i = first_text; i < argc && !status; i++)
            if (!tokenize_one(ctx, tok, argv[i], strlen(argv[i]), (int)context, raw, ids))
                status = cli_fail("tokenize", ctx, "text %d", i - first_text + 1);
    } else {
        /* one text per line of standard input (without its '\n' / "\r\n") */
        size_t cap = 4096, len = 0;
        char *line = (char *)malloc(cap);
        int c, line_no = 0, eof = 0;
        if (!line) status = cli_fail("tokenize", NULL, "out of memory");
        while (line && !status && !eof) {
            len = 0;
            while ((c = getchar()) != EOF && c != '\n') {
                if (len + 1 >= cap) {
                    char *nl = (char *)realloc(line, cap * 2);
                    if (!nl) { status = cli_fail("tokenize", NULL, "out of memory"); break; }
                    line = nl;
                    cap *= 2;
                }
                line[len++] = (char)c;
            }
            if (c == EOF) { eof = 1; if (len == 0) break; }
            if (len && line[len - 1] == '\r') len--;
            line_no++;
            if (!status && !tokenize_one(ctx, tok, line, len, (int)context, raw, ids))
                status = cli_fail("tokenize", ctx, "line %d", line_no);
        }
        free(line);
    }
    if (fflush(stdout) != 0 && !status) status = cli_fail("tokenize", NULL, "cannot write the output");
    aes_free(ids);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
    return status;
}
