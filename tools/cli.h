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

/* Threads for the CLI: $AES_THREADS, else the number of online CPUs. */
int cli_threads(void);

#endif
