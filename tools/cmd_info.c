/* aesalign info: what this build is and what the CPU gives it. */
#include "cli.h"

CLI_COMMAND(info, "print the version, instruction set and thread count") {
    aes_ctx *ctx = aes_ctx_create();
    (void)argc; (void)argv;
    if (!ctx) return cli_fail("info", NULL, "out of memory");
    printf("version %s\nisa %s\nthreads %d\n", AES_VERSION_STRING, aes_cpu_name(ctx), cli_threads());
    aes_ctx_free(ctx);
    return 0;
}
