/* fuzz_optim.c -- the optimizer state sidecar (aes_optim_load_memory): a
 * safetensors blob with the config, step, segment layout and the moment
 * buffers.  Every input is loaded into an AdamW and an SGD optimizer of a
 * fixed layout (the seeds were saved from the same layouts).  State that
 * loads must take a step on finite gradients without producing NaN/Inf. */
#include "fuzz_common.h"

#define FZ_NPARAMS 40

static aes_optim *fz_optim(aes_ctx *ctx, int adamw) {
    static aes_optim *opt[2];
    if (!opt[adamw]) {
        aes_optim_config cfg = aes_optim_config_default(adamw ? AES_OPTIM_ADAMW : AES_OPTIM_SGD);
        aes_param_segment seg[2];
        seg[0].offset = 0;  seg[0].count = 16; seg[0].decay = 1;
        seg[1].offset = 24; seg[1].count = 12; seg[1].decay = 0;
        cfg.lr = 1e-2f;
        if (aes_optim_create(ctx, &cfg, FZ_NPARAMS, seg, 2, &opt[adamw]) != AES_OK) abort();
    }
    return opt[adamw];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    aes_ctx *ctx = fz_ctx();
    uint8_t *buf = fz_copy(data, size);
    int kind;
    for (kind = 0; kind < 2; kind++) {
        aes_optim *opt = fz_optim(ctx, kind);
        aes_status s;
        aes_clear_error(ctx);
        s = aes_optim_load_memory(ctx, opt, buf, size);
        fz_check_error(ctx, s, "aes_optim_load_memory");
        if (s == AES_OK) {
            float params[FZ_NPARAMS], grads[FZ_NPARAMS];
            int i;
            for (i = 0; i < FZ_NPARAMS; i++) { params[i] = 0.01f * (float)i; grads[i] = 0.1f - 0.005f * (float)i; }
            s = aes_optim_step(ctx, opt, params, grads, 1e-2f, NULL);
            fz_check_error(ctx, s, "aes_optim_step");
            if (s == AES_OK)
                for (i = 0; i < FZ_NPARAMS; i++)
                    if (!(params[i] - params[i] == 0.0f)) {   /* NaN or Inf */
                        fprintf(stderr, "loaded optimizer state turned parameter %d into %g\n", i,
                                (double)params[i]);
                        abort();
                    }
        }
    }
    free(buf);
    return 0;
}
