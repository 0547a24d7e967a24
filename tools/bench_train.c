/* bench_train.c -- training-step throughput of a ViT-B/32-shaped vision tower.
 *
 * One step = forward (batch 32, 224x224), ranked DPO + contrastive loss
 * against cached text embeddings (the text tower frozen, as finetune-dpo
 * does by default), backward, AdamW update of all 88M vision parameters.
 * 2 threads.  Prints images/s, ms/step, peak RSS and the activation memory,
 * then runs `tools/train_reference.py --bench` (PyTorch, same step) when
 * /usr/bin/python3 has torch, and prints the ratio.
 *
 *   make build/bench_train && build/bench_train [batch] [steps]
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define BENCH_NAME "bench_train"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

int main(int argc, char **argv) {
    int batch = argc > 1 ? atoi(argv[1]) : 32, steps = argc > 2 ? atoi(argv[2]) : 3, i, s;
    aes_ctx *ctx = aes_ctx_create();
    aes_clip_config a;
    aes_clip *model = NULL;
    aes_train_options o = aes_train_options_default();
    aes_clip_trainer *tr = NULL;
    aes_optim_config oc = aes_optim_config_default(AES_OPTIM_ADAMW);
    aes_optim *opt = NULL;
    aes_dpo_config cfg = aes_dpo_config_default();
    aes_dpo_batch b;
    aes_dpo_item *items;
    aes_train_step_stats st;
    const aes_param_segment *seg;
    int nseg;
    size_t np;
    float *pixels, *txt;
    double t0, dt, ours;
    FILE *py;
    char line[512];

    if (batch < 2 || steps < 1) { fprintf(stderr, "usage: bench_train [batch>=2] [steps>=1]\n"); return 2; }
    aes_threads_set(ctx, 2);
    memset(&a, 0, sizeof a);
    a.has_vision = 1;
    a.image_size = 224; a.patch_size = 32; a.vision_width = 768; a.vision_layers = 12; a.vision_heads = 12;
    a.vision_mlp = 3072; a.embed_dim = 512; a.act = AES_ACT_QUICK_GELU; a.ln_eps = 1e-5f; a.layout = AES_LAYOUT_HF;
    o.train_vision = 1;
    o.max_images = batch;
    o.max_texts = batch;
    if (aes_clip_create_random(ctx, &a, 1, &model) || aes_clip_trainer_create(ctx, model, &o, &tr)) {
        fprintf(stderr, "%s\n", aes_last_error(ctx));
        return 1;
    }
    np = aes_clip_num_params(model);
    aes_clip_trainer_segments(tr, &seg, &nseg);
    if (aes_optim_create(ctx, &oc, np, seg, nseg, &opt)) { fprintf(stderr, "%s\n", aes_last_error(ctx)); return 1; }
    pixels = (float *)malloc(sizeof(float) * (size_t)batch * 3 * 224 * 224);
    txt = (float *)malloc(sizeof(float) * (size_t)batch * 512);
    items = (aes_dpo_item *)malloc(sizeof *items * (size_t)batch);
    srand(1);
    for (i = 0; i < batch * 3 * 224 * 224; i++) pixels[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    for (i = 0; i < batch; i++) {
        double n = 0;
        int k;
        for (k = 0; k < 512; k++) { txt[i * 512 + k] = (float)rand() / RAND_MAX - 0.5f; n += (double)txt[i * 512 + k] * txt[i * 512 + k]; }
        for (k = 0; k < 512; k++) txt[i * 512 + k] = (float)(txt[i * 512 + k] / sqrt(n));
        items[i].query = i; items[i].preferred = i; items[i].rejected = (i + 1) % batch;
        items[i].weight = 1.0f; items[i].ref_preferred = 0.0f; items[i].ref_rejected = 0.0f;
    }
    memset(&b, 0, sizeof b);
    b.pixels = pixels; b.nimages = batch; b.text_emb = txt; b.ntexts = batch;
    b.items = items; b.nitems = batch; b.nmatched = batch;
    printf("bench_train: ViT-B/32 vision tower, %zu trainable parameters, batch %d, 2 threads, isa %s\n",
           aes_optim_trainable(opt), batch, aes_cpu_name(ctx));
    if (aes_dpo_train_step(ctx, tr, opt, &cfg, &b, 1e-5f, &st)) { fprintf(stderr, "%s\n", aes_last_error(ctx)); return 1; }
    t0 = now();
    for (s = 0; s < steps; s++)
        if (aes_dpo_train_step(ctx, tr, opt, &cfg, &b, 1e-5f, &st)) { fprintf(stderr, "%s\n", aes_last_error(ctx)); return 1; }
    dt = (now() - t0) / steps;
    ours = batch / dt;
    printf("aesalign train step (forward + DPO/contrastive + backward + AdamW): %.2f images/s (%.0f ms/step)\n", ours,
           1000 * dt);
    printf("peak RSS %.0f MB (parameters + gradients + AdamW state %.0f MB)\n", peak_rss_mb(),
           4.0 * (double)np * 4 / 1048576.0);
    fflush(stdout);
    /* PyTorch, the same step, in the same run */
    py = popen("/usr/bin/python3 -c 'import torch' 2>/dev/null && /usr/bin/python3 tools/train_reference.py --bench 2>&1", "r");
    if (py) {
        double theirs = 0;
        while (fgets(line, sizeof line, py)) {
            const char *p = strstr(line, "threads): ");
            fputs(line, stdout);
            if (p) theirs = atof(p + 10);
        }
        pclose(py);
        if (theirs > 0) printf("ratio vs pytorch: %.2fx\n", ours / theirs);
        else printf("pytorch: not available (python3-torch), no ratio\n");
    }
    aes_optim_free(opt);
    aes_clip_trainer_free(tr);
    aes_clip_free(model);
    free(pixels); free(txt); free(items);
    aes_ctx_free(ctx);
    return 0;
}
