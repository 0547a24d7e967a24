/* aesalign - the command-line front end of aesalign.h.
 * `aesalign help` lists the subcommands; each lives in tools/cmd_*.c. */
#define AESALIGN_IMPLEMENTATION
#include "cli.h"
#define WORLD_IMPLEMENTATION      /* the synthetic world and `eval` (cmd_world.c, cmd_search.c) */
#include "world.h"
#include <stdarg.h>
#include <unistd.h>
#include <time.h>

#define CLI_X(name, summary) int cli_cmd_##name(int argc, char **argv);
#include "cli_commands.h"
#undef CLI_X

typedef struct {
    const char *name, *summary;
    int (*fn)(int, char **);
} cli_entry;

static const cli_entry cli_table[] = {
#define CLI_X(name, summary) {#name, summary, cli_cmd_##name},
#include "cli_commands.h"
#undef CLI_X
    {NULL, NULL, NULL}
};

int cli_fail(const char *cmd, aes_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "aesalign %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (ctx && aes_last_error(ctx)[0]) fprintf(stderr, ": %s", aes_last_error(ctx));
    fputc('\n', stderr);
    return 1;
}

int cli_opt_str(int argc, char **argv, int *i, const char *name, const char **out) {
    if (strcmp(argv[*i], name) != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "aesalign: option %s needs a value\n", name);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

int cli_opt_int(int argc, char **argv, int *i, const char *name, long *out) {
    const char *s;
    char *end;
    int r = cli_opt_str(argc, argv, i, name, &s);
    if (r != 1) return r;
    *out = strtol(s, &end, 10);
    if (end == s || *end) {
        fprintf(stderr, "aesalign: option %s wants an integer, not '%s'\n", name, s);
        return -1;
    }
    return 1;
}

int cli_opt_float(int argc, char **argv, int *i, const char *name, double *out) {
    const char *s;
    char *end;
    int r = cli_opt_str(argc, argv, i, name, &s);
    if (r != 1) return r;
    *out = strtod(s, &end);
    if (end == s || *end) {
        fprintf(stderr, "aesalign: option %s wants a number, not '%s'\n", name, s);
        return -1;
    }
    return 1;
}

int cli_opt_format(int argc, char **argv, int *i, int *fmt) {
    const char *s;
    int r = cli_opt_str(argc, argv, i, "--format", &s);
    if (r != 1) return r;
    if (!strcmp(s, "tsv")) *fmt = CLI_FMT_TSV;
    else if (!strcmp(s, "json")) *fmt = CLI_FMT_JSON;
    else if (!strcmp(s, "paths")) *fmt = CLI_FMT_PATHS;
    else {
        fprintf(stderr, "aesalign: --format wants tsv, json or paths, not '%s'\n", s);
        return -1;
    }
    return 1;
}

void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

void cli_json_number(FILE *f, double v) {
    if (v - v != 0) fputs("null", f);
    else fprintf(f, "%.6g", v);
}

int cli_parse_date(const char *s, int64_t *out) {
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0, k;
    char c;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3) return 0;
    if (s[n]) {
        c = s[n];
        if (c != ' ' && c != 'T') return 0;
        k = n + 1;
        if (sscanf(s + k, "%2d:%2d%n", &h, &mi, &n) != 2) return 0;
        k += n;
        if (s[k] == ':') {
            if (sscanf(s + k + 1, "%2d%n", &sec, &n) != 1) return 0;
            k += 1 + n;
        }
        if (s[k]) return 0;
    }
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0 || sec < 0)
        return 0;
    *out = cli_civil_seconds(y, mo, d, h, mi, sec);
    return 1;
}

/* $AES_THREADS, else every online core (1 in an AES_NO_THREADS build). */
int cli_threads(void) {
#ifdef AES_NO_THREADS
    return 1;
#else
    const char *env = getenv("AES_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 64) n = 64;
    return (int)n;
#endif
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the model and tokenizer options (cli.h) ------------------------------------ */

int cli_model_opt(int argc, char **argv, int *i, cli_model_opts *o) {
    int r;
    if ((r = cli_opt_str(argc, argv, i, "--model", &o->model))) return r;
    if ((r = cli_opt_str(argc, argv, i, "--config", &o->config))) return r;
    if ((r = cli_opt_str(argc, argv, i, "--vocab", &o->vocab))) return r;
    if ((r = cli_opt_str(argc, argv, i, "--act", &o->act))) {
        if (r == 1 && strcmp(o->act, "gelu") && strcmp(o->act, "quick_gelu")) {
            fprintf(stderr, "aesalign: --act wants quick_gelu or gelu, not '%s'\n", o->act);
            return -1;
        }
        return r;
    }
    if (!o->for_training && !strcmp(argv[*i], "--f16")) { o->f16 = 1; return 1; }
    if (!o->for_training && !strcmp(argv[*i], "--int8")) { o->int8 = 1; return 1; }
    return 0;
}

aes_status cli_load_model(aes_ctx *ctx, const cli_model_opts *o, aes_clip **out) {
    aes_clip_load_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.config_path = o->config;
    lo.keep_16bit = o->for_training ? 0 : o->f16;
    lo.int8 = o->for_training ? 0 : o->int8;
    if (o->act && !strcmp(o->act, "gelu")) lo.act = AES_ACT_GELU;
    else if (o->act && !o->for_training) lo.act = AES_ACT_QUICK_GELU;
    return aes_clip_load(ctx, o->model, &lo, out);
}

int cli_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* path made absolute (against the working folder) with "." and ".."
 * components and repeated or trailing slashes removed, malloc'ed; NULL when
 * out of memory or the working folder cannot be read.  Lexical: symbolic
 * links are not followed.  The working folder is read once (the CLI never
 * changes it), since a filter normalises every path of an index. */
static char *cli_path_norm(const char *path) {
    static char cwd[4096];
    static int have_cwd;
    size_t plen = strlen(path), clen = 0, n = 0, i = 0, total;
    char *out;
    if (path[0] != '/') {
        if (!have_cwd && !getcwd(cwd, sizeof cwd)) return NULL;
        have_cwd = 1;
        clen = strlen(cwd);
    }
    total = clen + 1 + plen + 2;
    if (!(out = (char *)malloc(total))) return NULL;
    {   /* the joined path, then rewritten in place component by component */
        char *joined = (char *)malloc(total);
        if (!joined) { free(out); return NULL; }
        memcpy(joined, cwd, clen);
        joined[clen] = '/';
        memcpy(joined + clen + 1, path, plen + 1);
        out[0] = 0;
        while (joined[i]) {
            size_t start, len;
            while (joined[i] == '/') i++;
            start = i;
            while (joined[i] && joined[i] != '/') i++;
            len = i - start;
            if (len == 0 || (len == 1 && joined[start] == '.')) continue;
            if (len == 2 && joined[start] == '.' && joined[start + 1] == '.') {
                while (n > 0 && out[n - 1] != '/') n--;   /* drop the last component */
                if (n > 0) n--;
                continue;
            }
            out[n++] = '/';
            memcpy(out + n, joined + start, len);
            n += len;
        }
        free(joined);
    }
    if (n == 0) out[n++] = '/';
    out[n] = 0;
    return out;
}

int cli_path_under(const char *path, const char *dir) {
    char *p = cli_path_norm(path), *d = cli_path_norm(dir);
    int r = 0;
    if (p && d) {
        size_t n = strlen(d);
        r = !strncmp(p, d, n) && (p[n] == '/' || p[n] == 0 || n == 1);
    }
    free(p);
    free(d);
    return r;
}

aes_status cli_load_tokenizer(aes_ctx *ctx, const char *vocab, const char *model_path, const char *cmd,
                              aes_tokenizer **out) {
    static const char *const beside[] = {"merges.txt", "bpe_simple_vocab_16e6.txt", "bpe_simple_vocab_16e6.txt.gz"};
    char path[4096];
    const char *v = vocab && *vocab ? vocab : getenv("AES_VOCAB");
    aes_status st;
    size_t k;
    if (v && !*v) v = NULL;
    if (!v && model_path) {
        const char *slash = strrchr(model_path, '/');
        int dlen = slash ? (int)(slash - model_path) + 1 : 0;
        for (k = 0; k < sizeof beside / sizeof *beside && !v; k++) {
            snprintf(path, sizeof path, "%.*s%s", dlen, model_path, beside[k]);
            if (cli_file_exists(path)) v = path;
        }
    }
    if (!v) {
        if (model_path)
            cli_fail(cmd, NULL, "no tokenizer: give --vocab FILE, set AES_VOCAB, or put merges.txt beside the model");
        else
            cli_fail(cmd, NULL, "no vocabulary: pass --vocab FILE or set AES_VOCAB to CLIP's "
                     "bpe_simple_vocab_16e6.txt[.gz] (or a Hugging Face merges.txt)");
        return AES_ERR_IO;
    }
    if ((st = aes_tokenizer_load_merges(ctx, v, out)) != AES_OK) cli_fail(cmd, ctx, "cannot load the vocabulary");
    return st;
}

static void usage(FILE *f) {
    const cli_entry *e;
    fprintf(f, "aesalign %s - aesthetics-aware image retrieval\n\nusage: aesalign <command> [options]\n\n",
            AES_VERSION_STRING);
    for (e = cli_table; e->name; e++) {
        char name[64];
        size_t k;
        snprintf(name, sizeof name, "%s", e->name);
        for (k = 0; name[k]; k++) if (name[k] == '_') name[k] = '-';
        fprintf(f, "  %-16s %s\n", name, e->summary);
    }
    fprintf(f, "\n`aesalign <command> --help` describes a command.\n");
}

int main(int argc, char **argv) {
    const cli_entry *e;
    char name[64];
    size_t k;
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("aesalign %s\n", AES_VERSION_STRING);
        return 0;
    }
    snprintf(name, sizeof name, "%s", argv[1]);
    for (k = 0; name[k]; k++) if (name[k] == '-') name[k] = '_';
    for (e = cli_table; e->name; e++)
        if (!strcmp(e->name, name)) return e->fn(argc - 1, argv + 1);
    fprintf(stderr, "aesalign: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
