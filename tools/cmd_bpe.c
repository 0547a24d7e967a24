/* aesalign train-bpe: a small BPE vocabulary trained on the project's own
 * captions (aes_tokenizer_train), so the offline demo needs no downloaded
 * vocabulary.
 *
 *   aesalign train-bpe --text FILE [--column N] [--skip-header] [--merges N] --out merges.txt
 *
 * Reads one text per line (or field N of tab-separated lines; several
 * --column options take several fields of the same line), trains at most N
 * merges and writes them in the merges format `aesalign tokenize --vocab`,
 * train-clip and the retrieval commands load.
 */
#include "cli.h"

static void train_bpe_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign train-bpe --text FILE [--column N]... [--skip-header] [--merges N] --out FILE\n"
            "Trains a byte-level BPE (the CLIP tokenizer's pre-tokenizer and format) on texts and\n"
            "writes its merges file.\n"
            "  --text FILE      one text per line ('-' = standard input)\n"
            "  --column N       take the N-th tab-separated field (1-based) of each line; repeat the\n"
            "                   option for several fields (e.g. the four captions of scenes.tsv)\n"
            "  --skip-header    ignore the first line\n"
            "  --merges N       merges to learn at most (default 1000; fewer when no pair repeats)\n"
            "  --out FILE       the merges file (\"#version: 0.2\" then one merge per line)\n");
}

/* Appends a copy of s[0..n) to the list. */
static int push_text(char ***list, int *n, int *cap, const char *s, size_t len) {
    char *c;
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 1024;
        char **nl = (char **)realloc(*list, sizeof(char *) * (size_t)nc);
        if (!nl) return 0;
        *list = nl;
        *cap = nc;
    }
    c = (char *)malloc(len + 1);
    if (!c) return 0;
    memcpy(c, s, len);
    c[len] = 0;
    (*list)[(*n)++] = c;
    return 1;
}

/* Field `col` (1-based) of a tab-separated line, or NULL. */
static const char *field(const char *line, size_t len, int col, size_t *flen) {
    size_t i = 0, start = 0;
    int k = 1;
    for (i = 0; i <= len; i++) {
        if (i == len || line[i] == '\t') {
            if (k == col) { *flen = i - start; return line + start; }
            k++;
            start = i + 1;
        }
    }
    return NULL;
}

CLI_COMMAND(train_bpe, "train a small BPE vocabulary on captions (merges file for --vocab)") {
    const char *text_path = NULL, *out = NULL;
    long merges = 1000, col;
    int cols[16], ncols = 0, skip_header = 0, i, r, rc = 1, n = 0, cap = 0, line_no = 0;
    char **texts = NULL;
    aes_ctx *ctx = NULL;
    aes_tokenizer *tok = NULL;
    void *data = NULL;
    size_t len = 0, pos = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { train_bpe_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--skip-header")) { skip_header = 1; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--column", &col)) != 0) {
            if (r < 0) return 2;
            if (col < 1 || col > 1000 || ncols == (int)(sizeof cols / sizeof *cols))
                return cli_fail("train-bpe", NULL, "--column must be in [1, 1000], at most 16 times");
            cols[ncols++] = (int)col;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--text", &text_path)) ||
            (r = cli_opt_str(argc, argv, &i, "--out", &out)) ||
            (r = cli_opt_int(argc, argv, &i, "--merges", &merges))) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "aesalign train-bpe: unknown option '%s'\n", argv[i]);
        train_bpe_usage(stderr);
        return 2;
    }
    if (!text_path || !out) { train_bpe_usage(stderr); return 2; }
    if (merges < 0 || merges > AES_TOKENIZER_CLIP_MERGES)
        return cli_fail("train-bpe", NULL, "--merges must be in [0, %d]", AES_TOKENIZER_CLIP_MERGES);
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("train-bpe", NULL, "out of memory");
    if (!strcmp(text_path, "-")) {
        size_t cap_b = 1 << 16;
        char *buf = (char *)malloc(cap_b);
        size_t got;
        while (buf && (got = fread(buf + len, 1, cap_b - len, stdin)) > 0) {
            len += got;
            if (len == cap_b) {
                char *nb = (char *)realloc(buf, cap_b * 2);
                if (!nb) { free(buf); buf = NULL; break; }
                buf = nb;
                cap_b *= 2;
            }
        }
        if (!buf) { cli_fail("train-bpe", NULL, "out of memory reading standard input"); goto done; }
        data = buf;
    } else if (aes_read_file(ctx, text_path, &data, &len) != AES_OK) {
        cli_fail("train-bpe", ctx, "reading %s", text_path);
        goto done;
    }
    while (pos < len) {
        const char *line = (const char *)data + pos;
        size_t e = 0, ll;
        while (pos + e < len && line[e] != '\n') e++;
        pos += e + 1;
        ll = e;
        if (ll && line[ll - 1] == '\r') ll--;
        line_no++;
        if (line_no == 1 && skip_header) continue;
        if (!ll) continue;
        if (!ncols) {
            if (!push_text(&texts, &n, &cap, line, ll)) { cli_fail("train-bpe", NULL, "out of memory"); goto done; }
            continue;
        }
        for (r = 0; r < ncols; r++) {
            size_t fl = 0;
            const char *f = field(line, ll, cols[r], &fl);
            if (!f) { cli_fail("train-bpe", NULL, "%s:%d: no field %d", text_path, line_no, cols[r]); goto done; }
            if (fl && !push_text(&texts, &n, &cap, f, fl)) { cli_fail("train-bpe", NULL, "out of memory"); goto done; }
        }
    }
    if (n == 0) { cli_fail("train-bpe", NULL, "%s: no text", text_path); goto done; }
    if (aes_tokenizer_train(ctx, (const char *const *)texts, n, (int)merges, &tok) != AES_OK) {
        cli_fail("train-bpe", ctx, "training");
        goto done;
    }
    if (aes_tokenizer_save_merges(ctx, tok, out) != AES_OK) {
        cli_fail("train-bpe", ctx, "writing %s", out);
        goto done;
    }
    fprintf(stderr, "train-bpe: %d texts, %d merges, vocabulary %d -> %s\n", n, aes_tokenizer_n_merges(tok),
            aes_tokenizer_vocab_size(tok), out);
    rc = 0;
done:
    if (texts) for (i = 0; i < n; i++) free(texts[i]);
    free(texts);
    if (data) {
        if (!strcmp(text_path, "-")) free(data);
        else aes_free(data);
    }
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
    return rc;
}
