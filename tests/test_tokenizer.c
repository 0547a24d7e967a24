/* test_tokenizer.c -- the CLIP BPE tokenizer (aesalign.h) against the
 * project's Python reference (tools/tokenizer_ref.py writes the fixtures):
 * with CLIP's first 10,000 merges (committed in tests/fixtures/tokenizer/clip10k/,
 * so it runs in a clean clone) and with the full list from ../shared (skipped
 * when absent); and the parts that need no shared data: character tables,
 * cleanup, a hand-made merges list, BPE variants, training, gzip, robustness. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"

/* Test helpers built from the library's internal pieces. */
/* The raw bytes of one vocabulary entry ("</w>" literally at the end of
 * word-final symbols); NULL for an id outside the vocabulary. */
static const char *tok_token_bytes(const aes_tokenizer *tok, int32_t id, size_t *len) {
    if (!tok || id < 0 || id >= tok->vocab_size) { if (len) *len = 0; return NULL; }
    if (len) *len = tok->vocab.off[id + 1] - tok->vocab.off[id];
    return (const char *)tok->vocab.bytes + tok->vocab.off[id];
}

#define FIXDIR "tests/fixtures/tokenizer/"

/* ---- helpers ------------------------------------------------------------ */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (n + 65536 + 1 > cap) {
            char *nb;
            cap = (n + 65536 + 1) * 2;
            nb = (char *)realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, 65536, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One JSON string (the line's content) to bytes.  Lone surrogates
 * \udc80..\udcff stand for raw bytes 0x80..0xff (Python's surrogateescape).
 * Returns the byte count or -1 on a malformed line. */
static long json_string_to_bytes(const char *s, size_t n, unsigned char *out) {
    size_t i = 0;
    long k = 0;
    if (n < 2 || s[0] != '"') return -1;
    for (i = 1; i < n && s[i] != '"';) {
        unsigned long cp;
        if (s[i] != '\\') { out[k++] = (unsigned char)s[i++]; continue; }
        if (i + 1 >= n) return -1;
        switch (s[i + 1]) {
        case '"': out[k++] = '"'; i += 2; continue;
        case '\\': out[k++] = '\\'; i += 2; continue;
        case '/': out[k++] = '/'; i += 2; continue;
        case 'b': out[k++] = '\b'; i += 2; continue;
        case 'f': out[k++] = '\f'; i += 2; continue;
        case 'n': out[k++] = '\n'; i += 2; continue;
        case 'r': out[k++] = '\r'; i += 2; continue;
        case 't': out[k++] = '\t'; i += 2; continue;
        case 'u': break;
        default: return -1;
        }
        {
            int j;
            if (i + 6 > n) return -1;
            cp = 0;
            for (j = 0; j < 4; j++) {
                int h = hexval(s[i + 2 + j]);
                if (h < 0) return -1;
                cp = cp * 16 + (unsigned long)h;
            }
            i += 6;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u') {
            unsigned long lo = 0;
            int j, okhex = 1;
            for (j = 0; j < 4; j++) {
                int h = hexval(s[i + 2 + j]);
                if (h < 0) okhex = 0;
                lo = lo * 16 + (unsigned long)(h < 0 ? 0 : h);
            }
            if (okhex && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        if (cp >= 0xDC80 && cp <= 0xDCFF) { out[k++] = (unsigned char)(cp - 0xDC00); continue; }
        if (cp >= 0xD800 && cp <= 0xDFFF) return -1;
        k += aes__tok_utf8_put((uint32_t)cp, out + k);
    }
    return k;
}

/* The CLIP tokenizer from ../shared, or NULL (test skipped) when absent. */
static aes_tokenizer *clip_tokenizer(aes_ctx *ctx, int gz) {
    char path[4300];
    const char *dir = tl_shared_dir();
    aes_tokenizer *tok = NULL;
    FILE *f;
    if (!dir) { tl_skip("../shared is absent (no CLIP merges file)"); return NULL; }
    snprintf(path, sizeof path, "%s/data/bpe_simple_vocab_16e6.txt%s", dir, gz ? ".gz" : "");
    f = fopen(path, "rb");
    if (!f) { tl_skip("../shared/data/bpe_simple_vocab_16e6.txt[.gz] is absent"); return NULL; }
    fclose(f);
    CHECK_OK(ctx, aes_tokenizer_load_merges(ctx, path, &tok));
    return tok;
}

/* A hand-written merges list: h e, l l, he ll, hell o</w>, l o</w>, w o, wo r, wor l, worl d</w>. */
static const char tiny_merges[] =
    "#version: 0.2\n"
    "h e\n" "l l\n" "he ll\n" "hell o</w>\n" "l o</w>\n" "w o\n" "wo r\n" "wor l\n" "worl d</w>\n";

static aes_tokenizer *tiny_tokenizer(aes_ctx *ctx) {
    aes_tokenizer *tok = NULL;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, tiny_merges, sizeof tiny_merges - 1, 0, &tok));
    return tok;
}

/* Byte id of an ASCII printable character in GPT-2's alphabet order. */
static int32_t ascii_id(char c) { return (int32_t)(unsigned char)c - 0x21; }

/* ---- character tables ------------------------------------------------------ */

static void test_unicode_classes(void) {
    CHECK(aes__tok_class('a') == AES__TOK_LETTER);
    CHECK(aes__tok_class('Z') == AES__TOK_LETTER);
    CHECK(aes__tok_class(0xE9) == AES__TOK_LETTER);        /* e acute */
    CHECK(aes__tok_class(0x3A3) == AES__TOK_LETTER);       /* Sigma */
    CHECK(aes__tok_class(0x4E2D) == AES__TOK_LETTER);      /* CJK */
    CHECK(aes__tok_class(0x0627) == AES__TOK_LETTER);      /* Arabic alef */
    CHECK(aes__tok_class(0x928) == AES__TOK_LETTER);       /* Devanagari na */
    CHECK(aes__tok_class(0x94D) == AES__TOK_OTHER);        /* virama: Mn, not a letter */
    CHECK(aes__tok_class(0x11F04) == AES__TOK_LETTER);     /* Kawi: Unicode 15 in the regex module */
    CHECK(aes__tok_class(0x31350) == AES__TOK_LETTER);     /* CJK extension H */
    CHECK(aes__tok_class(0x2B0) == AES__TOK_LETTER);       /* modifier letter (Lm) */
    CHECK(aes__tok_class('7') == AES__TOK_NUMBER);
    CHECK(aes__tok_class(0xBD) == AES__TOK_NUMBER);        /* one half (No) */
    CHECK(aes__tok_class(0x663) == AES__TOK_NUMBER);       /* Arabic-indic three */
    CHECK(aes__tok_class(0x2167) == AES__TOK_NUMBER);      /* Roman numeral eight (Nl) */
    CHECK(aes__tok_class(0xFF11) == AES__TOK_NUMBER);      /* fullwidth one */
    CHECK(aes__tok_class(' ') == AES__TOK_SKIP);
    CHECK(aes__tok_class('\t') == AES__TOK_SKIP);
    CHECK(aes__tok_class(0x85) == AES__TOK_SKIP);
    CHECK(aes__tok_class(0x3000) == AES__TOK_SKIP);
    CHECK(aes__tok_class(0x345) == AES__TOK_SKIP);         /* matched by no alternative */
    CHECK(aes__tok_class('!') == AES__TOK_OTHER);
    CHECK(aes__tok_class('\'') == AES__TOK_OTHER);
    CHECK(aes__tok_class(0) == AES__TOK_OTHER);
    CHECK(aes__tok_class(0x1C) == AES__TOK_OTHER);         /* isspace() but not regex \s */
    CHECK(aes__tok_class(0x1F600) == AES__TOK_OTHER);      /* emoji */
    CHECK(aes__tok_class(0x200D) == AES__TOK_OTHER);       /* ZWJ */
    CHECK(aes__tok_class(0xFFFD) == AES__TOK_OTHER);
    CHECK(aes__tok_class(0x10FFFF) == AES__TOK_OTHER);
    CHECK(aes__tok_is_py_space(0x1C) && !aes__tok_is_regex_space(0x1C));
    CHECK(aes__tok_is_py_space(0xA0) && aes__tok_is_regex_space(0xA0));
    CHECK(aes__tok_is_py_space(0x2028) && aes__tok_is_regex_space(0x2028));
    CHECK(!aes__tok_is_py_space(0x200B) && !aes__tok_is_regex_space(0x200B));
    CHECK(!aes__tok_is_py_space(0x180E));
}

static void test_lowercase(void) {
    static const uint32_t pairs[][2] = {
        {'A', 'a'}, {'z', 'z'}, {0xC9, 0xE9}, {0x3A3, 0x3C3}, {0x212A, 'k'}, {0x2126, 0x3C9},
        {0xFF21, 0xFF41}, {0x10400, 0x10428}, {0x1E9E, 0xDF}, {0x1C5, 0x1C6}, {0x1C4, 0x1C6},
        {0x2160, 0x2170}, {0x17F, 0x17F}, {0x100, 0x101}, {0x101, 0x101}, {0x178, 0xFF}, {0x410, 0x430},
        {0x24B6, 0x24D0}, {0x1E900, 0x1E922}, {0x13A0, 0xAB70}, {0x4E2D, 0x4E2D}, {0x1F600, 0x1F600},
    };
    size_t i;
    uint32_t in[8], out[16];
    size_t n;
    for (i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        CHECK_MSG(aes__tok_lower1(pairs[i][0]) == pairs[i][1], "lower(U+%04X) = U+%04X, want U+%04X",
                  (unsigned)pairs[i][0], (unsigned)aes__tok_lower1(pairs[i][0]), (unsigned)pairs[i][1]);
    in[0] = 0x130;                                         /* the two-code-point mapping */
    n = aes__tok_lower(in, 1, out);
    CHECK(n == 2 && out[0] == 'i' && out[1] == 0x307);
    in[0] = 0x391; in[1] = 0x3A3;                          /* final sigma */
    n = aes__tok_lower(in, 2, out);
    CHECK(n == 2 && out[0] == 0x3B1 && out[1] == 0x3C2);
    in[2] = 0x391;                                         /* not final when a letter follows */
    n = aes__tok_lower(in, 3, out);
    CHECK(n == 3 && out[1] == 0x3C3);
    in[0] = 0x3A3;                                         /* alone: not final */
    n = aes__tok_lower(in, 1, out);
    CHECK(n == 1 && out[0] == 0x3C3);
    in[0] = 'A'; in[1] = '\''; in[2] = 0x3A3; in[3] = '.'; /* apostrophe and '.' are case-ignorable */
    n = aes__tok_lower(in, 4, out);
    CHECK(n == 4 && out[2] == 0x3C2);
    in[3] = '\''; in[4] = 'B';                             /* ... so "A'S'B" is not final */
    n = aes__tok_lower(in, 5, out);
    CHECK(n == 5 && out[2] == 0x3C3);
}

static void test_utf8_replace(void) {
    struct { const char *in; int n; uint32_t want[6]; int nwant; } cases[] = {
        {"a", 1, {'a'}, 1},
        {"\xc3\xa9", 2, {0xE9}, 1},
        {"\xe2\x82\xac", 3, {0x20AC}, 1},
        {"\xf0\x9f\x98\x80", 4, {0x1F600}, 1},
        {"\x80", 1, {0xFFFD}, 1},
        {"\xc3", 1, {0xFFFD}, 1},
        {"\xc3(", 2, {0xFFFD, '('}, 2},
        {"\xe2\x82(", 3, {0xFFFD, '('}, 2},                 /* maximal subpart: one U+FFFD */
        {"\xed\xa0\x80", 3, {0xFFFD, 0xFFFD, 0xFFFD}, 3},  /* surrogate */
        {"\xc0\xaf", 2, {0xFFFD, 0xFFFD}, 2},              /* overlong */
        {"\xf4\x90\x80\x80", 4, {0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD}, 4},
        {"\xf0\x9f\x98", 3, {0xFFFD}, 1},
        {"a\0b", 3, {'a', 0, 'b'}, 3},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t out[8];
        size_t n = aes__tok_utf8_decode((const unsigned char *)cases[i].in, (size_t)cases[i].n, out);
        int ok = n == (size_t)cases[i].nwant, j;
        for (j = 0; ok && j < cases[i].nwant; j++) ok = out[j] == cases[i].want[j];
        CHECK_MSG(ok, "utf8 case %d", (int)i);
    }
}

/* cleanup(text) as UTF-8 */
static int cleaned_equals(const char *in, const char *want) {
    uint32_t *c;
    size_t n, i, k = 0;
    unsigned char buf[512];
    if (aes__tok_clean(NULL, in, strlen(in), &c, &n) != AES_OK) return 0;
    for (i = 0; i < n && k + 4 < sizeof buf; i++) k += (size_t)aes__tok_utf8_put(c[i], buf + k);
    aes_free(c);
    buf[k] = 0;
    if (strcmp((const char *)buf, want) != 0) {
        fprintf(stderr, "    clean(\"%s\") = \"%s\", want \"%s\"\n", in, buf, want);
        return 0;
    }
    return 1;
}

static void test_cleanup(void) {
    CHECK(cleaned_equals("fish &amp; chips", "fish & chips"));
    CHECK(cleaned_equals("&amp;amp;", "&"));                 /* unescaped twice */
    CHECK(cleaned_equals("&amp;amp;amp;", "&amp;"));
    CHECK(cleaned_equals("it&#39;s &#x27;x&#X27;", "it's 'x'"));
    CHECK(cleaned_equals("a&nbsp;b", "a b"));                /* nbsp is \s: collapsed */
    CHECK(cleaned_equals("&ampx &notit; &hellip", "&x \xc2\xacit; &hellip"));
    CHECK(cleaned_equals("&#128;&#150;", "\xe2\x82\xac\xe2\x80\x93"));   /* Windows-1252 */
    CHECK(cleaned_equals("&#0;&#xD800;&#x110000;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(cleaned_equals("a&#1;b&#xFFFE;c", "abc"));         /* dropped code points */
    CHECK(cleaned_equals("&nvlt;", "<\xe2\x83\x92"));        /* two code points */
    CHECK(cleaned_equals("&#; &# &#x &;", "&#; &# &#x &;"));
    CHECK(cleaned_equals("&EACUTE; &Eacute;", "&eacute; \xc3\xa9"));
    CHECK(cleaned_equals("  Hello\t\n  World  ", "hello world"));
    CHECK(cleaned_equals("\x1c" "a\x1c" "b\x1f", "a\x1c" "b"));  /* strip() removes 1C..1F */
    CHECK(cleaned_equals("\xc4\xb0stanbul", "i\xcc\x87stanbul"));
    CHECK(cleaned_equals("", ""));
    CHECK(cleaned_equals(" \t ", ""));
}

static void test_pretokenizer(void) {
    /* the pre-token lengths of a lowercased string */
    static const struct { const char *text; const char *cuts; } cases[] = {
        {"it's a cat!!", "2 2 1 3 2"},   /* "it" "'s" "a" "cat" "!!" */
        {"1234", "1 1 1 1"},
        {"<|endoftext|>x", "13 1"},
        {"!<|endoftext|>", "3 9 2"},     /* a symbol run swallows '<|' */
        {"'re'd", "3 2"},
        {"''s", "2 1"},                  /* "''" then "s" */
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t c[64];
        size_t n = aes__tok_utf8_decode((const unsigned char *)cases[i].text, strlen(cases[i].text), c), at = 0;
        char got[128];
        int k = 0;
        got[0] = 0;
        while (at < n) {
            size_t len = aes__tok_pretoken_len(c, n, at);
            if (!len) { at++; continue; }
            k += snprintf(got + k, sizeof got - (size_t)k, k ? " %d" : "%d", (int)len);
            at += len;
        }
        CHECK_MSG(!strcmp(got, cases[i].cuts), "pre-tokens of \"%s\": %s, want %s", cases[i].text, got,
                  cases[i].cuts);
    }
}

/* ---- a hand-written merges list ---------------------------------------------- */

static void test_tiny_merges(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = tiny_tokenizer(ctx);
    int32_t ids[16];
    size_t n;
    char text[64];
    if (!tok) { aes_ctx_free(ctx); return; }
    CHECK(aes_tokenizer_vocab_size(tok) == 512 + 9 + 2);
    CHECK(aes_tokenizer_n_merges(tok) == 9);
    CHECK((aes_tokenizer_vocab_size(tok) - 2) == 521 && (aes_tokenizer_vocab_size(tok) - 1) == 522);
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "Hello World", 11, ids, 16, &n));
    CHECK(n == 2 && ids[0] == 512 + 3 && ids[1] == 512 + 8);      /* "hello</w>" "world</w>" */
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "hell", 4, ids, 16, &n));
    /* h e l l</w>: (h,e) rank 0 -> he; (l, l</w>) is not a merge */
    CHECK(n == 3 && ids[0] == 512 && ids[1] == ascii_id('l') && ids[2] == 256 + ascii_id('l'));
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "lo", 2, ids, 16, &n));
    CHECK(n == 1 && ids[0] == 512 + 4);
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "x", 1, ids, 16, &n));
    CHECK(n == 1 && ids[0] == 256 + ascii_id('x'));
    /* the count is reported even when ids has no room (snprintf style) */
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "a b c", 5, NULL, 0, &n));
    CHECK(n == 3);
    ids[0] = 512 + 3;
    ids[1] = 512 + 8;
    CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, ids, 2, text, sizeof text, &n));
    CHECK(!strcmp(text, "hello world ") && n == 12);
    {
        const char *b = tok_token_bytes(tok, 512 + 3, &n);
        CHECK(b && n == 9 && !memcmp(b, "hello</w>", 9));
        CHECK(tok_token_bytes(tok, 523, &n) == NULL);
    }
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* Rank order matters, not length: with "a b" ranked after "b c", "abc"
 * becomes a + bc</w>, although "ab" exists. */
static void test_rank_not_greedy(void) {
    static const char merges[] = "#version: 0.2\nb c</w>\na b\nab c</w>\n";
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL;
    int32_t ids[8];
    size_t n;
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, merges, sizeof merges - 1, 0, &tok));
    if (tok) {
        CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "abc", 3, ids, 8, &n));
        CHECK(n == 2 && ids[0] == ascii_id('a') && ids[1] == 512);
        aes_tokenizer_free(tok);
    }
    aes_ctx_free(ctx);
}

static void test_empty_and_truncation_tiny(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = tiny_tokenizer(ctx);
    int32_t ids[AES_TOKENIZER_CONTEXT];
    int used, k;
    char *text;
    if (!tok) { aes_ctx_free(ctx); return; }
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "", 0, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 2 && ids[0] == (aes_tokenizer_vocab_size(tok) - 2) && ids[1] == (aes_tokenizer_vocab_size(tok) - 1));
    for (k = 2; k < AES_TOKENIZER_CONTEXT; k++) CHECK(ids[k] == 0);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, NULL, 0, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 2);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, " \t\n ", 4, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 2);
    /* 200 words: cut to 77 with eot in slot 76 */
    text = (char *)malloc(200 * 6 + 1);
    for (k = 0; k < 200; k++) memcpy(text + 6 * k, "hello ", 6);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, text, 200 * 6, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 77 && ids[0] == (aes_tokenizer_vocab_size(tok) - 2) && ids[76] == (aes_tokenizer_vocab_size(tok) - 1));
    for (k = 1; k < 76; k++) CHECK(ids[k] == 512 + 3);
    /* exactly 75 words fit: [sot] + 75 + [eot] = 77, no cut */
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, text, 75 * 6, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 77 && ids[75] == 512 + 3 && ids[76] == (aes_tokenizer_vocab_size(tok) - 1));
    /* a context of 2 keeps only sot and eot */
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, text, 12, ids, 2, &used));
    CHECK(used == 2 && ids[0] == (aes_tokenizer_vocab_size(tok) - 2) && ids[1] == (aes_tokenizer_vocab_size(tok) - 1));
    CHECK(aes_tokenizer_encode(ctx, tok, text, 12, ids, 1, &used) == AES_ERR_INVALID_ARG);
    free(text);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_decode_limits(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = tiny_tokenizer(ctx);
    int32_t ids[4];
    char out[8];
    size_t n;
    if (!tok) { aes_ctx_free(ctx); return; }
    ids[0] = 512 + 3;                                      /* "hello " */
    CHECK(aes_tokenizer_decode(ctx, tok, ids, 1, out, 4, &n) == AES_ERR_LIMIT);
    CHECK(n == 6 && !strcmp(out, "hel"));
    CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, ids, 1, NULL, 0, &n));   /* size query */
    CHECK(n == 6);
    CHECK(aes_tokenizer_decode(ctx, tok, ids, 1, out, 6, &n) == AES_ERR_LIMIT);   /* no room for NUL */
    CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, ids, 1, out, 7, &n));
    CHECK(!strcmp(out, "hello "));
    ids[0] = -1;
    CHECK(aes_tokenizer_decode(ctx, tok, ids, 1, out, 8, &n) == AES_ERR_INVALID_ARG);
    ids[0] = aes_tokenizer_vocab_size(tok);
    CHECK(aes_tokenizer_decode(ctx, tok, ids, 1, out, 8, &n) == AES_ERR_INVALID_ARG);
    /* a multi-byte character split over two byte ids decodes; a lone lead byte gives U+FFFD */
    {
        char big[32];
        int32_t e[3];
        e[0] = 0xC3 - 0xAE + 94 + 12;   /* byte 0xC3 (in the third printable run) */
        e[1] = 0xA9 - 0xA1 + 94 + 256;  /* byte 0xA9 + "</w>" */
        CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, e, 2, big, sizeof big, &n));
        CHECK(!strcmp(big, "\xc3\xa9 "));
        CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, e, 1, big, sizeof big, &n));
        CHECK(!strcmp(big, "\xef\xbf\xbd"));
    }
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_bad_merges(void) {
    static const char *bad[] = {
        "#version: 0.2\nh e\nlonely\n",          /* one field */
        "#version: 0.2\nh e f\n",                /* three fields */
        "#version: 0.2\nh e\n\nl l\n",           /* blank line inside */
        "#version: 0.2\nh \xe2\x82\xac\n",       /* a character outside the byte alphabet */
        "#version: 0.2\nh \xff\n",               /* invalid UTF-8 */
        "#version: 0.2\nhe llo\n",               /* "llo" is not a symbol */
    };
    static const char ok_crlf[] = "#version: 0.2\r\nh e\r\nl l\r\n\r\n";
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok;
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok = (aes_tokenizer *)1;
        CHECK_MSG(aes_tokenizer_load_merges_memory(ctx, bad[i], strlen(bad[i]), 0, &tok) == AES_ERR_FORMAT,
                  "bad merges %d accepted", (int)i);
        CHECK(tok == NULL);
        CHECK(aes_last_error(ctx)[0] != 0);
    }
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, ok_crlf, sizeof ok_crlf - 1, 0, &tok));
    CHECK(tok && aes_tokenizer_n_merges(tok) == 2);
    aes_tokenizer_free(tok);
    /* no merges at all: byte-level */
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, "", 0, 0, &tok));
    CHECK(tok && aes_tokenizer_vocab_size(tok) == 514);
    aes_tokenizer_free(tok);
    /* n_merges_max cuts */
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, tiny_merges, sizeof tiny_merges - 1, 3, &tok));
    CHECK(tok && aes_tokenizer_n_merges(tok) == 3);
    aes_tokenizer_free(tok);
    CHECK(aes_tokenizer_load_merges(ctx, "tests/fixtures/tokenizer/no-such-file.txt", &tok) == AES_ERR_IO);
    aes_ctx_free(ctx);
}

/* ---- robustness --------------------------------------------------------------- */

static void fuzz_one_tokenizer(aes_ctx *ctx, const aes_tokenizer *tok, int rounds) {
    unsigned char buf[300];
    int32_t ids[AES_TOKENIZER_CONTEXT], raw[1200];
    char text[8192];
    int r, used, k, bad = 0;
    size_t n, tl;
    for (r = 0; r < rounds; r++) {
        int len = (int)(tl_uniform() * 300);
        for (k = 0; k < len; k++) {
            double u = tl_uniform();
            /* mostly bytes that matter: '&', '#', ';', letters, high bytes */
            buf[k] = u < 0.1 ? '&' : u < 0.15 ? '#' : u < 0.2 ? ';' : u < 0.45 ? (unsigned char)('a' + (int)(tl_uniform() * 26))
                   : (unsigned char)(tl_uniform() * 256);
        }
        if (aes_tokenizer_encode(ctx, tok, (const char *)buf, (size_t)len, ids, AES_TOKENIZER_CONTEXT, &used) != AES_OK)
            bad++;
        for (k = 0; k < AES_TOKENIZER_CONTEXT; k++)
            if (ids[k] < 0 || ids[k] >= aes_tokenizer_vocab_size(tok)) bad++;
        if (aes_tokenizer_encode_raw(ctx, tok, (const char *)buf, (size_t)len, raw, 1200, &n) != AES_OK || n > 1200)
            bad++;
        else if (aes_tokenizer_decode(ctx, tok, raw, (int)n, text, sizeof text, &tl) != AES_OK)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d failures on random bytes", bad);
}

static void test_invalid_utf8_no_crash(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = tiny_tokenizer(ctx);
    int32_t a[AES_TOKENIZER_CONTEXT], b[AES_TOKENIZER_CONTEXT];
    int ua, ub;
    if (!tok) { aes_ctx_free(ctx); return; }
    tl_seed(7);
    fuzz_one_tokenizer(ctx, tok, 2000);
    /* an embedded NUL is a character, not the end of the text */
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "a\0b", 3, a, AES_TOKENIZER_CONTEXT, &ua));
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "a", 1, b, AES_TOKENIZER_CONTEXT, &ub));
    CHECK(ua == 5 && ub == 3);                             /* a, NUL, b */
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_huge_word(void) {
    /* one 2 MB word ("hello" 400000 times): the O(n log n) BPE path; encode stops after 77 tokens */
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = tiny_tokenizer(ctx);
    size_t len = 2000000, n = 0, k;
    char *text = (char *)malloc(len);
    int32_t ids[AES_TOKENIZER_CONTEXT];
    int used;
    if (!tok || !text) { free(text); aes_tokenizer_free(tok); aes_ctx_free(ctx); return; }
    for (k = 0; k < len; k++) text[k] = "hello"[k % 5];
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, text, len, NULL, 0, &n));
    /* "hellohello...hello</w>": (h,e) then (l,l) then (he,ll) merge everywhere; "o" stays
     * alone except the last "o</w>" which joins "hell" -> hello</w>. */
    CHECK(n == 2 * (len / 5) - 1);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, text, len, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 77 && ids[1] == 512 + 2 && ids[2] == ascii_id('o') && ids[76] == (aes_tokenizer_vocab_size(tok) - 1));
    free(text);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* The simple and the heap BPE must agree on every word, also for a merges
 * list whose ranks do not follow the order symbols are built in. */
static void compare_bpe_paths(const aes_tokenizer *tok, const char *alphabet, int rounds, int maxlen) {
    int32_t *a = (int32_t *)malloc(sizeof(int32_t) * (size_t)maxlen), *b = (int32_t *)malloc(sizeof(int32_t) * (size_t)maxlen);
    aes__tok_bpe_work w;
    int r, k, mism = 0, na = strlen(alphabet) > 0 ? (int)strlen(alphabet) : 1;
    memset(&w, 0, sizeof w);
    for (r = 0; r < rounds; r++) {
        int n = 1 + (int)(tl_uniform() * maxlen), ma, mb;
        for (k = 0; k < n; k++) a[k] = tok->byte_id[(unsigned char)alphabet[(int)(tl_uniform() * na)]];
        a[n - 1] = tok->byte_end_id[(unsigned char)alphabet[(int)(tl_uniform() * na)]];
        memcpy(b, a, sizeof(int32_t) * (size_t)n);
        ma = aes__tok_bpe_simple(tok, a, n);
        if (!aes__tok_bpe_work_reserve(&w, n)) { mism++; break; }
        mb = aes__tok_bpe_heap(tok, b, n, &w);
        if (ma != mb || memcmp(a, b, sizeof(int32_t) * (size_t)ma)) mism++;
    }
    aes__tok_bpe_work_free(&w);
    free(a);
    free(b);
    CHECK_MSG(mism == 0, "%d of %d words differ between the two BPE paths", mism, rounds);
}

static void test_bpe_paths_agree(void) {
    /* later merges with lower "natural" order: the rank of (a, bc) is below (b, c) would be
     * impossible in a trained list, but the loader accepts it, so both paths must agree */
    static const char odd[] = "#version: 0.2\nb c\na b\nab c\nc c\nbc c\na a\naa a\nab ab\nc a\nca b\n"
                              "a c</w>\nb b</w>\nab c</w>\nbc a\nc</w> a\n";
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL;
    tl_seed(11);
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, odd, sizeof odd - 1, 0, &tok));
    if (tok) compare_bpe_paths(tok, "abc", 3000, 40);
    aes_tokenizer_free(tok);
    tok = tiny_tokenizer(ctx);
    if (tok) compare_bpe_paths(tok, "helowrd", 2000, 60);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* ---- training ---------------------------------------------------------------- */

static const char *const captions[] = {
    "a photo of a cat sitting on a red sofa",
    "a photo of a dog running on the beach",
    "an oil painting of a sunset over the sea",
    "a black and white photo of a cat",
    "a blurry photo of a parking lot at night",
    "a beautiful landscape painting with mountains and a lake",
    "a close-up photo of a red rose",
    "two dogs playing in the snow, 4k photo",
    "a painting of a ship in a storm",
    "portrait photo of a woman smiling",
    "a cat and a dog sleeping together",
    "a photo of the sea at sunset",
    "It's a café &amp; bakery in Paris",
    "\xce\xb3\xce\xac\xcf\x84\xce\xb1 \xe7\x8c\xab \xf0\x9f\x98\x80",
};
#define N_CAPTIONS ((int)(sizeof captions / sizeof captions[0]))

typedef struct { char *buf; size_t n, cap; } pieces_t;
static int collect_piece(void *user, const unsigned char *b, size_t nb) {
    pieces_t *p = (pieces_t *)user;
    if (p->n + nb + 2 > p->cap) return -(int)AES_ERR_LIMIT;
    memcpy(p->buf + p->n, b, nb);
    p->n += nb;
    p->buf[p->n++] = ' ';
    p->buf[p->n] = 0;
    return 0;
}

static void test_train_roundtrip(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = NULL, *again = NULL;
    int32_t ids[256], ids2[256];
    char text[1024], *merges = NULL, *merges2 = NULL;
    size_t n, n2, total_bytes = 0, total_ids = 0, mlen, mlen2;
    int i;
    CHECK_OK(ctx, aes_tokenizer_train(ctx, captions, N_CAPTIONS, 200, &tok));
    if (!tok) { aes_ctx_free(ctx); return; }
    CHECK(aes_tokenizer_n_merges(tok) > 20 && aes_tokenizer_n_merges(tok) <= 200);
    CHECK(aes_tokenizer_vocab_size(tok) == 512 + aes_tokenizer_n_merges(tok) + 2);
    CHECK((aes_tokenizer_vocab_size(tok) - 2) == aes_tokenizer_vocab_size(tok) - 2);
    CHECK((aes_tokenizer_vocab_size(tok) - 1) == aes_tokenizer_vocab_size(tok) - 1);
    /* the most frequent pair of this corpus is learned first ('a' + '</w>' or similar):
     * "a photo of" words must come out as single tokens */
    CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, "a photo of a cat", 16, ids, 256, &n));
    CHECK(n == 5);
    CHECK_OK(ctx, aes_tokenizer_merges_text(ctx, tok, &merges, &mlen));
    CHECK_OK(ctx, aes_tokenizer_load_merges_memory(ctx, merges, mlen, 0, &again));
    for (i = 0; i < N_CAPTIONS; i++) {
        pieces_t p;
        char expect[1024];
        size_t len = strlen(captions[i]);
        p.buf = expect; p.n = 0; p.cap = sizeof expect;
        expect[0] = 0;
        CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, captions[i], len, ids, 256, &n));
        CHECK_OK(ctx, aes_tokenizer_decode(ctx, tok, ids, (int)n, text, sizeof text, &n2));
        /* decode gives the cleaned pre-tokens, each followed by a space */
        CHECK_OK(ctx, aes__tok_pretokenize(ctx, captions[i], len, collect_piece, &p));
        CHECK_MSG(!strcmp(text, expect), "round trip of \"%s\": \"%s\" vs \"%s\"", captions[i], text, expect);
        if (again) {
            CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, again, captions[i], len, ids2, 256, &n2));
            CHECK(n2 == n && !memcmp(ids, ids2, n * sizeof *ids));
        }
        total_bytes += len;
        total_ids += n;
    }
    CHECK_MSG(total_ids * 2 < total_bytes, "%zu ids for %zu bytes", total_ids, total_bytes);  /* it compresses its corpus */
    if (again) {
        CHECK_OK(ctx, aes_tokenizer_merges_text(ctx, again, &merges2, &mlen2));
        CHECK(merges2 && mlen2 == mlen && !memcmp(merges, merges2, mlen));
    }
    /* save (atomic) and load back */
    {
        const char *path = tl_tmp("test_tokenizer_trained_merges.txt");
        aes_tokenizer *loaded = NULL;
        CHECK_OK(ctx, aes_tokenizer_save_merges(ctx, tok, path));
        CHECK_OK(ctx, aes_tokenizer_load_merges(ctx, path, &loaded));
        if (loaded) {
            CHECK(aes_tokenizer_vocab_size(loaded) == aes_tokenizer_vocab_size(tok));
            CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, loaded, captions[0], strlen(captions[0]), ids2, 256, &n2));
            CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, captions[0], strlen(captions[0]), ids, 256, &n));
            CHECK(n == n2 && !memcmp(ids, ids2, n * sizeof *ids));
        }
        aes_tokenizer_free(loaded);
        remove(path);
    }
    /* trained tokenizers use their own sot/eot in the CLIP format */
    {
        int used;
        int32_t ctxids[AES_TOKENIZER_CONTEXT];
        CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "a cat", 5, ctxids, AES_TOKENIZER_CONTEXT, &used));
        CHECK(used == 4 && ctxids[0] == (aes_tokenizer_vocab_size(tok) - 2) && ctxids[3] == (aes_tokenizer_vocab_size(tok) - 1));
    }
    aes_free(merges);
    aes_free(merges2);
    aes_tokenizer_free(again);
    aes_tokenizer_free(tok);
    /* degenerate inputs */
    CHECK_OK(ctx, aes_tokenizer_train(ctx, captions, 0, 100, &tok));
    CHECK(tok && aes_tokenizer_n_merges(tok) == 0);
    aes_tokenizer_free(tok);
    CHECK(aes_tokenizer_train(ctx, captions, 1, -1, &tok) == AES_ERR_INVALID_ARG);
    aes_ctx_free(ctx);
}

/* ---- gzip ------------------------------------------------------------------------ */

static void test_gunzip_fixtures(void) {
    static const char *const gz[] = {FIXDIR "stored.gz", FIXDIR "fixed.gz", FIXDIR "cases.txt.gz"};
    static const char *const plain[] = {FIXDIR "small.txt", FIXDIR "small.txt", FIXDIR "cases.txt"};
    aes_ctx *ctx = aes_ctx_create();
    int i;
    for (i = 0; i < 3; i++) {
        size_t nz, np, nout;
        char *z = read_all(gz[i], &nz), *p = read_all(plain[i], &np);
        unsigned char *out = NULL;
        CHECK_MSG(z && p, "fixture %s or %s missing", gz[i], plain[i]);
        if (z && p) {
            CHECK_OK(ctx, aes__tok_gunzip(ctx, (const unsigned char *)z, nz, gz[i], &out, &nout));
            CHECK_MSG(out && nout == np && !memcmp(out, p, np), "%s inflates wrong", gz[i]);
            AES_FREE(out);
            /* corruption is caught, truncation too, and nothing crashes */
            if (nz > 40) {
                size_t cut;
                z[nz / 2] ^= 0x55;
                out = NULL;
                CHECK(aes__tok_gunzip(ctx, (const unsigned char *)z, nz, gz[i], &out, &nout) != AES_OK);
                AES_FREE(out);
                z[nz / 2] ^= 0x55;
                for (cut = 0; cut < nz; cut += 1 + nz / 50) {
                    out = NULL;
                    CHECK(aes__tok_gunzip(ctx, (const unsigned char *)z, cut, gz[i], &out, &nout) != AES_OK);
                    AES_FREE(out);
                }
            }
        }
        free(z);
        free(p);
    }
    aes_ctx_free(ctx);
}

/* ---- the Python reference's ids, case by case ----------------------------------- */

/* Encodes every line of a cases file (one JSON string a line) in the 77-id
 * format and compares it with the same line of an expected file (77 ids a
 * line, written by tools/tokenizer_ref.py).  Returns the number of cases. */
static int check_cases(aes_ctx *ctx, const aes_tokenizer *tok, const char *cases_path, const char *expected_path,
                       const char *label) {
    size_t nc, ne;
    char *cases = read_all(cases_path, &nc), *expected = read_all(expected_path, &ne), *cl, *el;
    int total = 0, match = 0, shown = 0;
    CHECK_MSG(cases && expected, "%s or %s missing (tools/tokenizer_ref.py writes them)", cases_path, expected_path);
    if (cases && expected) {
        unsigned char *bytes = (unsigned char *)malloc(nc + 1);
        cl = cases;
        el = expected;
        while (*cl && *el) {
            char *cend = strchr(cl, '\n'), *eend = strchr(el, '\n'), *p;
            int32_t want[AES_TOKENIZER_CONTEXT], got[AES_TOKENIZER_CONTEXT];
            long nb;
            int k, used, ok = 1;
            if (!cend || !eend) break;
            nb = json_string_to_bytes(cl, (size_t)(cend - cl), bytes);
            CHECK_MSG(nb >= 0, "%s line %d is not a JSON string", cases_path, total + 1);
            p = el;
            for (k = 0; k < AES_TOKENIZER_CONTEXT; k++) want[k] = (int32_t)strtol(p, &p, 10);
            CHECK_MSG(p == eend, "%s line %d does not hold 77 ids", expected_path, total + 1);
            if (nb >= 0) {
                CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, (const char *)bytes, (size_t)nb, got,
                                                   AES_TOKENIZER_CONTEXT, &used));
                for (k = 0; k < AES_TOKENIZER_CONTEXT; k++) ok &= got[k] == want[k];
                if (!ok && shown++ < 5) {
                    fprintf(stderr, "  mismatch on case %d: %.*s\n    got ", total + 1, (int)(cend - cl), cl);
                    for (k = 0; k < 20; k++) fprintf(stderr, "%d ", (int)got[k]);
                    fprintf(stderr, "\n   want ");
                    for (k = 0; k < 20; k++) fprintf(stderr, "%d ", (int)want[k]);
                    fprintf(stderr, "\n");
                }
                match += ok;
            }
            total++;
            cl = cend + 1;
            el = eend + 1;
        }
        CHECK_MSG(!*cl && !*el, "%s and %s differ in length", cases_path, expected_path);
        free(bytes);
        printf("%s: %d of %d cases match the Python reference id for id\n", label, match, total);
        CHECK(match == total);
    }
    free(cases);
    free(expected);
    return total;
}

/* ---- CLIP's first 10,000 merges: a committed fixture, runs in a clean clone ------- */

#define CUTDIR FIXDIR "clip10k/"
#define CUT_MERGES 10000

static aes_tokenizer *cut_tokenizer(aes_ctx *ctx) {
    aes_tokenizer *tok = NULL;
    CHECK_OK(ctx, aes_tokenizer_load_merges(ctx, CUTDIR "merges.txt", &tok));
    return tok;
}

/* GPT-2's byte alphabet, from its definition: the printable bytes '!'..'~',
 * 0xA1..0xAC, 0xAE..0xFF stand for themselves, the other 68 bytes are
 * U+0100, U+0101, ... in byte order.  Returns the byte of code point cp or -1. */
static int alphabet_byte(unsigned long cp) {
    int b, extra = 0;
    for (b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable && cp == (unsigned long)b) return b;
        if (!printable && cp == 256ul + (unsigned long)extra++) return b;
    }
    return -1;
}

/* A merges-file symbol (UTF-8 over the byte alphabet, maybe ending "</w>")
 * to the bytes it stands for, "</w>" kept literally.  Returns the length or -1. */
static long symbol_bytes(const char *s, size_t n, unsigned char *out) {
    long k = 0;
    size_t i = 0, end = n;
    if (n >= 4 && !memcmp(s + n - 4, "</w>", 4)) end = n - 4;
    while (i < end) {
        unsigned char c = (unsigned char)s[i];
        unsigned long cp;
        int b;
        if (c < 0x80) { cp = c; i += 1; }
        else if ((c & 0xE0) == 0xC0 && i + 1 < end) { cp = ((unsigned long)(c & 0x1F) << 6) | (s[i + 1] & 0x3F); i += 2; }
        else return -1;                     /* the alphabet stops at U+0143: two bytes at most */
        b = alphabet_byte(cp);
        if (b < 0) return -1;
        out[k++] = (unsigned char)b;
    }
    if (end < n) { memcpy(out + k, "</w>", 4); k += 4; }
    return k;
}

/* The vocabulary of a cut list: 512 byte symbols, then merge k as id 512 + k
 * with the bytes of its two parts, then start and end. */
static void test_cut_vocabulary(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = cut_tokenizer(ctx);
    size_t len, n;
    char *text = read_all(CUTDIR "merges.txt", &len), *line, *next;
    int k = 0, bad = 0;
    if (!tok || !text) { CHECK(text != NULL); free(text); aes_tokenizer_free(tok); aes_ctx_free(ctx); return; }
    CHECK(aes_tokenizer_n_merges(tok) == CUT_MERGES);
    CHECK(aes_tokenizer_vocab_size(tok) == 512 + CUT_MERGES + 2);
    CHECK((aes_tokenizer_vocab_size(tok) - 2) == 512 + CUT_MERGES && (aes_tokenizer_vocab_size(tok) - 1) == 512 + CUT_MERGES + 1);
    line = strchr(text, '\n');                                  /* after the version header */
    for (line = line ? line + 1 : text + len; *line; line = next, k++) {
        unsigned char want[128];
        char *sp, *eol = strchr(line, '\n');
        const char *got;
        long a, b;
        next = eol ? eol + 1 : line + strlen(line);
        if (!eol) eol = next;
        sp = (char *)memchr(line, ' ', (size_t)(eol - line));
        if (!sp || eol - line > 60) { bad++; continue; }
        a = symbol_bytes(line, (size_t)(sp - line), want);
        b = a < 0 ? -1 : symbol_bytes(sp + 1, (size_t)(eol - sp - 1), want + a);
        got = tok_token_bytes(tok, 512 + k, &n);
        if (b < 0 || !got || n != (size_t)(a + b) || memcmp(got, want, n)) {
            if (bad++ < 3) fprintf(stderr, "  merge %d (%.*s): id %d holds other bytes\n", k, (int)(eol - line), line, 512 + k);
        }
    }
    CHECK(k == CUT_MERGES);
    CHECK_MSG(bad == 0, "%d of %d merges are not id 512 + rank with their parts' bytes", bad, k);
    /* the byte symbols: id i is byte alphabet entry i, id 256 + i the same with "</w>" */
    {
        const char *b0 = tok_token_bytes(tok, 0, &n);
        CHECK(b0 && n == 1 && b0[0] == '!');
        b0 = tok_token_bytes(tok, 256 + ('a' - '!'), &n);
        CHECK(b0 && n == 5 && !memcmp(b0, "a</w>", 5));
        CHECK(tok_token_bytes(tok, 512 + CUT_MERGES + 2, &n) == NULL);
    }
    free(text);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* Every case of cases.txt against the reference run with the same cut list. */
static void test_cut_fixture_cases(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = cut_tokenizer(ctx);
    if (tok) CHECK(check_cases(ctx, tok, FIXDIR "cases.txt", CUTDIR "expected.txt", "tokenizer, first 10,000 merges") >= 500);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* Reads the next line of a long_expected.txt into ids (growing it). */
static size_t parse_ids(const char *line, const char *end, int32_t **ids, size_t *cap) {
    size_t n = 0;
    char *p = (char *)line;
    while (p < end) {
        char *q;
        long v = strtol(p, &q, 10);
        if (q == p) break;
        if (n == *cap) {
            *cap = *cap ? 2 * *cap : 1024;
            *ids = (int32_t *)realloc(*ids, *cap * sizeof(int32_t));
        }
        (*ids)[n++] = (int32_t)v;
        p = q;
    }
    return n;
}

/* Long texts, all their ids (no sot/eot, no cut), against the reference; then
 * the first of them (a caption paragraph that ends in a space) repeated 4,000
 * times (1 MB): the pre-tokenizer splits at the spaces between copies, so
 * the ids are the paragraph's ids 4,000 times over. */
static void test_cut_long_texts(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = cut_tokenizer(ctx);
    size_t nc, ne, cap = 0, got_cap = 0;
    char *cases = read_all(CUTDIR "long_cases.txt", &nc), *expected = read_all(CUTDIR "long_expected.txt", &ne);
    int32_t *want = NULL, *got = NULL, *para_ids = NULL;
    unsigned char *para = NULL;
    size_t npara_ids = 0;
    long npara = -1;
    int lines = 0;
    CHECK_MSG(cases && expected, "%s fixtures missing", CUTDIR);
    if (tok && cases && expected) {
        char *cl = cases, *el = expected;
        unsigned char *bytes = (unsigned char *)malloc(nc + 1);
        while (*cl && *el) {
            char *cend = strchr(cl, '\n'), *eend = strchr(el, '\n');
            long nb;
            size_t nw, n = 0;
            if (!cend || !eend) break;
            nb = json_string_to_bytes(cl, (size_t)(cend - cl), bytes);
            nw = parse_ids(el, eend, &want, &cap);
            CHECK(nb > 0 && nw > 0);
            if (nb > 0) {
                CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, (const char *)bytes, (size_t)nb, NULL, 0, &n));
                CHECK_MSG(n == nw, "long text %d: %zu ids, the reference has %zu", lines + 1, n, nw);
                if (n > got_cap) { got_cap = n; got = (int32_t *)realloc(got, n * sizeof(int32_t)); }
                CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, (const char *)bytes, (size_t)nb, got, got_cap, &n));
                CHECK_MSG(n == nw && !memcmp(got, want, n * sizeof(int32_t)), "long text %d differs from the reference",
                          lines + 1);
                if (lines == 0) {
                    para = (unsigned char *)malloc((size_t)nb);
                    memcpy(para, bytes, (size_t)nb);
                    npara = nb;
                    para_ids = (int32_t *)malloc(nw * sizeof(int32_t));
                    memcpy(para_ids, want, nw * sizeof(int32_t));
                    npara_ids = nw;
                }
            }
            lines++;
            cl = cend + 1;
            el = eend + 1;
        }
        free(bytes);
        CHECK(lines >= 5);
    }
    if (para && npara > 0 && para[npara - 1] == ' ') {
        size_t reps = 4000, k, n = 0, bad = 0;
        char *text = (char *)malloc((size_t)npara * reps);
        int32_t *all = (int32_t *)malloc(npara_ids * reps * sizeof(int32_t));
        for (k = 0; k < reps; k++) memcpy(text + k * (size_t)npara, para, (size_t)npara);
        CHECK_OK(ctx, aes_tokenizer_encode_raw(ctx, tok, text, (size_t)npara * reps, all, npara_ids * reps, &n));
        CHECK_MSG(n == npara_ids * reps, "%zu ids, want %zu", n, npara_ids * reps);
        for (k = 0; k < n && k < npara_ids * reps; k++) bad += all[k] != para_ids[k % npara_ids];
        CHECK_MSG(bad == 0, "%zu ids differ from the paragraph's", bad);
        free(text);
        free(all);
    } else {
        CHECK_MSG(0, "long_cases.txt line 1 is not a paragraph ending in a space");
    }
    free(para);
    free(para_ids);
    free(want);
    free(got);
    free(cases);
    free(expected);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* The two BPE loops agree, and random bytes do not hurt, on real merges. */
static void test_cut_bpe_paths_and_fuzz(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = cut_tokenizer(ctx);
    if (!tok) { aes_ctx_free(ctx); return; }
    tl_seed(4);
    compare_bpe_paths(tok, "etaoinshrdlucmfwypvbgkqjxz", 3000, 40);
    compare_bpe_paths(tok, "aeiounst", 300, 400);
    fuzz_one_tokenizer(ctx, tok, 500);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

/* ---- against the Python reference (needs ../shared) ---------------------------- */

static void test_clip_known_ids(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = clip_tokenizer(ctx, 0);
    static const int32_t want[] = {49406, 320, 1125, 539, 320, 2368, 49407};
    int32_t ids[AES_TOKENIZER_CONTEXT];
    int used, k;
    if (!tok) { aes_ctx_free(ctx); return; }
    CHECK(aes_tokenizer_vocab_size(tok) == 49408);
    CHECK((aes_tokenizer_vocab_size(tok) - 2) == 49406 && (aes_tokenizer_vocab_size(tok) - 1) == 49407);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "a photo of a cat", 16, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 7);
    for (k = 0; k < 7; k++) CHECK(ids[k] == want[k]);
    for (k = 7; k < AES_TOKENIZER_CONTEXT; k++) CHECK(ids[k] == 0);
    CHECK_OK(ctx, aes_tokenizer_encode(ctx, tok, "", 0, ids, AES_TOKENIZER_CONTEXT, &used));
    CHECK(used == 2 && ids[0] == 49406 && ids[1] == 49407 && ids[2] == 0);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_clip_fixtures(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = clip_tokenizer(ctx, 0);
    if (tok) CHECK(check_cases(ctx, tok, FIXDIR "cases.txt", FIXDIR "expected.txt", "tokenizer, CLIP's merges") >= 500);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

static void test_clip_gz_equals_plain(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *a = clip_tokenizer(ctx, 0), *b = a ? clip_tokenizer(ctx, 1) : NULL;
    char *ta = NULL, *tb = NULL;
    size_t la, lb;
    if (a && b) {
        CHECK(aes_tokenizer_vocab_size(a) == aes_tokenizer_vocab_size(b));
        CHECK_OK(ctx, aes_tokenizer_merges_text(ctx, a, &ta, &lb));
        CHECK_OK(ctx, aes_tokenizer_merges_text(ctx, b, &tb, &la));
        CHECK(ta && tb && la == lb && !memcmp(ta, tb, la));
    }
    aes_free(ta);
    aes_free(tb);
    aes_tokenizer_free(a);
    aes_tokenizer_free(b);
    aes_ctx_free(ctx);
}

static void test_clip_bpe_paths_and_fuzz(void) {
    aes_ctx *ctx = aes_ctx_create();
    aes_tokenizer *tok = clip_tokenizer(ctx, 0);
    if (!tok) { aes_ctx_free(ctx); return; }
    tl_seed(3);
    compare_bpe_paths(tok, "etaoinshrdlucmfwypvbgkqjxz", 3000, 40);
    compare_bpe_paths(tok, "aeiounst", 300, 400);
    fuzz_one_tokenizer(ctx, tok, 500);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    RUN(test_unicode_classes);
    RUN(test_lowercase);
    RUN(test_utf8_replace);
    RUN(test_cleanup);
    RUN(test_pretokenizer);
    RUN(test_tiny_merges);
    RUN(test_rank_not_greedy);
    RUN(test_empty_and_truncation_tiny);
    RUN(test_decode_limits);
    RUN(test_bad_merges);
    RUN(test_invalid_utf8_no_crash);
    RUN(test_huge_word);
    RUN(test_bpe_paths_agree);
    RUN(test_train_roundtrip);
    RUN(test_gunzip_fixtures);
    RUN(test_cut_vocabulary);
    RUN(test_cut_fixture_cases);
    RUN(test_cut_long_texts);
    RUN(test_cut_bpe_paths_and_fuzz);
    RUN(test_clip_known_ids);
    RUN(test_clip_fixtures);
    RUN(test_clip_gz_equals_plain);
    RUN(test_clip_bpe_paths_and_fuzz);
    return tl_report();
}
