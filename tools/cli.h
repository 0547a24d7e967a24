/* cli.h - what the subcommands of build/aesalign share.
 *
 * A subcommand lives in tools/cmd_<area>.c and is declared with
 *
 *     CLI_COMMAND(tokenize, "print 77 CLIP token ids per text") {
 *         ... argc/argv start at the subcommand name ...
 *         return 0;   (exit status)
 *     }
 *
 * The Makefile collects those lines into the dispatch table; a name with an
 * underscore is typed with a dash (finetune_dpo -> finetune-dpo).
 */
#ifndef CLI_H
#define CLI_H
#include "../aesalign.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_COMMAND(name, summary) int cli_cmd_##name(int argc, char **argv)

/* Prints "aesalign <cmd>: <message>" to stderr and returns exit status 1;
 * with a context, appends the library's message. */
int cli_fail(const char *cmd, aes_ctx *ctx, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Option parsing helpers: at argv[*i] == name, take the value after it.
 * Return 1 when the option matched (and advance *i), 0 when not, and -1
 * (after a message) when the value is missing or malformed. */
int cli_opt_str(int argc, char **argv, int *i, const char *name, const char **out);
int cli_opt_int(int argc, char **argv, int *i, const char *name, long *out);
int cli_opt_float(int argc, char **argv, int *i, const char *name, double *out);

/* Loads any image the CLI accepts: PPM/PGM through the library, and
 * JPEG/PNG/BMP/GIF/TGA through stb_image when built with AES_HAVE_STB.
 * 1 channel for gray, 3 for colour (alpha dropped).  Returns an aes_status
 * (the library's message is in aes_last_error). */
int cli_load_image(aes_ctx *ctx, const char *path, aes_image *out);

/* cli_load_image that also tells what the file is: its content hash
 * (aes_content_hash of the bytes), EXIF orientation (already applied to
 * *out) and EXIF DateTimeOriginal ("" when none).  info may be NULL. */
typedef struct cli_photo_info {
    uint64_t hash;
    int orientation;
    char exif_date[20];
} cli_photo_info;
int cli_load_photo(aes_ctx *ctx, const char *path, aes_image *out, cli_photo_info *info);

/* ---- walking folders (tools/cmd_index.c) ------------------------------------
 * cli_walk_add adds the images under a folder (recursively, entries sorted
 * by name, hidden ones skipped, symlinked folders followed once) or the
 * file itself; unreadable folders are warned about ("aesalign <cmd>: ...")
 * and counted.  Returns 0 only when out of memory. */
typedef struct cli_walk_file {
    char    *path;
    uint64_t size;
    int64_t  mtime_ns;
} cli_walk_file;
typedef struct cli_walk {
    const char *cmd;                     /* for messages (default "index") */
    cli_walk_file *files;
    size_t n, cap;
    size_t ignored, unreadable_dirs;
    struct { unsigned long long dev, ino; } *seen;   /* folders visited (symlink loops) */
    size_t nseen, capseen;
} cli_walk;
int  cli_walk_add(cli_walk *w, const char *path);
void cli_walk_free(cli_walk *w);
/* 1 when the name ends in an image extension the CLI reads. */
int  cli_is_image_name(const char *name);

/* Seconds since 1970-01-01 of a wall-clock date counted as if it were UTC
 * (the index's photo dates, AES_INDEX_NO_DATE aside). */
int64_t cli_civil_seconds(int y, int mo, int d, int h, int mi, int s);

/* The index's date of a photo (cmd_index.c): the EXIF DateTimeOriginal
 * text when valid, else mtime_ns as local wall-clock time; seconds as
 * cli_civil_seconds gives them. */
int64_t cli_photo_date(const char *exif_date, int64_t mtime_ns);
/* "YYYY-MM-DD", "YYYY-MM-DD HH:MM" or "YYYY-MM-DD HH:MM:SS" ('T' between
 * them too) -> wall-clock seconds; 0 when malformed. */
int cli_parse_date(const char *s, int64_t *out);

/* ---- output formats of commands that list images ---------------------------------
 * tsv (a header line, then tab-separated rows), json (one JSON object per
 * line), paths (one path per line, for xargs). */
enum { CLI_FMT_TSV, CLI_FMT_JSON, CLI_FMT_PATHS };
#define CLI_FORMAT_HELP \
    "  --format F           tsv (default: a header, then tab-separated rows), json (one object\n" \
    "                       per line) or paths (one path per line, for xargs)\n"
/* At argv[*i] == "--format": 1 (and *fmt set), 0 not this option, -1 bad. */
int cli_opt_format(int argc, char **argv, int *i, int *fmt);
/* s as a JSON string (quotes, escapes; bytes >= 0x80 passed through). */
void cli_json_string(FILE *f, const char *s);
/* A float as JSON: %.6g, or null when not finite. */
void cli_json_number(FILE *f, double v);

/* HTML pages (cmd_search.c): text escaped for HTML, a path as a URL path
 * (bytes outside [A-Za-z0-9/._~-] percent-encoded), and the path of the
 * absolute `target` relative to the absolute folder `base`. */
void cli_html_escape(FILE *f, const char *s);
void cli_url_escape(FILE *f, const char *s);
void cli_relative_path(const char *base, const char *target, char *out, size_t cap);

/* img as a 24-bit BMP file in *out, malloc'ed (cmd_bmp.c; browsers show BMP,
 * not PPM): AES_ERR_NOMEM, or AES_ERR_LIMIT past 2 GB. */
aes_status cli_bmp_encode(const aes_image *img, unsigned char **out, size_t *len);

/* 1 when path opens for reading. */
int cli_file_exists(const char *path);

/* 1 when path is dir or inside it.  Both are compared absolute (relative
 * ones are taken from the working folder) with ".", ".." and repeated
 * slashes resolved lexically, so "photos/2024", "./photos/2024/" and
 * "/home/me/photos/2024" name the same folder however the index recorded
 * its paths.  Used by `search --under`. */
int cli_path_under(const char *path, const char *dir);

/* Threads for the CLI: $AES_THREADS, else the number of online CPUs. */
int cli_threads(void);

/* Seconds on a monotonic clock (progress lines, rates). */
double cli_now(void);

/* ---- commands run with their output in a FILE (`aesalign serve`) ------------------
 * cli_search_run is `aesalign search` writing its results to out; pre, when
 * not NULL, gives a model and tokenizer already loaded (used instead of
 * loading --model / --vocab; not freed) and the index of --index already
 * loaded (used when no filter is given: filters cut the index in place;
 * --head may re-score it; not freed).  cli_dedup_run is `aesalign dedup`.
 * Both return the exit status; messages go to stderr. */
typedef struct cli_search_preloaded {
    aes_clip *model;
    aes_tokenizer *tok;
    aes_index *idx;
    aes_ivf *ivf;           /* idx's IVF (cli_ivf_open), or NULL: used with idx only */
} cli_search_preloaded;
int cli_search_run(int argc, char **argv, FILE *out, const cli_search_preloaded *pre);
int cli_dedup_run(int argc, char **argv, FILE *out);

/* ---- the IVF beside an index (cmd_search.c) ----------------------------------------
 * INDEX.ivf, written by `aesalign index ivf`; search uses it when it
 * matches the index.  CLI_IVF_DEFAULT_NPROBE lists are scanned unless
 * --nprobe says otherwise (our choice: with nlist ~ sqrt(rows) that scans
 * a few percent of a large index). */
#define CLI_IVF_DEFAULT_NPROBE 32
/* The IVF file's name for an index: "INDEX.ivf" in out. */
void cli_ivf_path(const char *index_path, char *out, size_t cap);
/* INDEX.ivf loaded for idx; NULL when there is none, or (after a warning
 * on stderr naming cmd and the reason, e.g. stale) when it cannot be used. */
aes_ivf *cli_ivf_open(aes_ctx *ctx, const char *index_path, const aes_index *idx, const char *cmd);

/* ---- the model and tokenizer options ------------------------------------------
 *
 * --model FILE --config FILE --vocab FILE --act quick_gelu|gelu --f16 --int8,
 * parsed the same way by every command that loads a CLIP model.  A training
 * command sets for_training before parsing: it takes no --f16 or --int8
 * (16-bit and int8 weights cannot be trained), and --act quick_gelu (the
 * default) leaves the activation to the config or the file's metadata (else
 * QuickGELU); --act gelu forces GELU. */
typedef struct cli_model_opts {
    const char *model, *config, *vocab, *act;
    int f16;
    int int8;
    int for_training;
} cli_model_opts;

/* At argv[*i]: one of the options above?  1 matched (and *i advanced), 0 not,
 * -1 bad or missing value (after a message). */
int cli_model_opt(int argc, char **argv, int *i, cli_model_opts *o);

/* Loads o->model with o's config, activation and --f16. */
aes_status cli_load_model(aes_ctx *ctx, const cli_model_opts *o, aes_clip **out);

/* The tokenizer: vocab (--vocab), else $AES_VOCAB, else merges.txt,
 * bpe_simple_vocab_16e6.txt or bpe_simple_vocab_16e6.txt.gz beside
 * model_path (which may be NULL).  Prints "aesalign <cmd>: ..." on failure. */
aes_status cli_load_tokenizer(aes_ctx *ctx, const char *vocab, const char *model_path, const char *cmd,
                              aes_tokenizer **out);

/* Help lines of the options, for the usage texts. */
#define CLI_MODEL_HELP_FILES \
    "  --model FILE         CLIP checkpoint (safetensors, either layout)\n" \
    "  --config FILE        Hugging Face config.json / open_clip config (default: beside the model)\n" \
    "  --vocab FILE         BPE merges (default: $AES_VOCAB, else merges.txt beside the model)\n"
#define CLI_MODEL_HELP CLI_MODEL_HELP_FILES \
    "  --act quick_gelu|gelu  force the activation (OpenAI layout without a config: quick_gelu)\n" \
    "  --f16                keep the weights in 16 bits (half the memory)\n" \
    "  --int8               int8 attention/MLP weights, quantised at load (faster; an int8 file loads as int8)\n"
#define CLI_MODEL_TRAIN_HELP CLI_MODEL_HELP_FILES \
    "  --act quick_gelu|gelu  gelu forces GELU; quick_gelu (default): the config's or the file's, else QuickGELU\n"

#endif
