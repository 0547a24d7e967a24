/* aesalign - the command-line front end of aesalign.h.
 * `aesalign help` lists the subcommands; each lives in tools/cmd_*.c. */
#define AESALIGN_IMPLEMENTATION
#include "cli.h"
#define WORLD_IMPLEMENTATION      /* the synthetic world and `eval` (cmd_world.c, cmd_search.c) */
#include "world.h"
#include <stdarg.h>
#include <unistd.h>

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
