/* aesalign train-head / eval-head / predict-head / elta-bench: aesthetic
 * heads on frozen CLIP embeddings, with ELTA against the long tail.
 *
 *   aesalign train-head --features FILE --labels FILE --out FILE [--elta] ...
 *   aesalign eval-head --head FILE --features FILE --labels FILE
 *   aesalign predict-head --head FILE --features FILE
 *   aesalign elta-bench [--seeds N] ...       (the ablation table of the README)
 *   aesalign embed-dataset --model FILE --images DIR (--labels CSV | --ava AVA.txt) --out PREFIX
 *
 * Formats.  --features: safetensors with one F32 (or F16/BF16/F64) tensor
 * `embeddings` [N, D]; rows are L2-normalised before use, as the LAION heads
 * expect (and as the retrieval code does before scoring).  --labels: CSV with
 * a header and one row per embedding row, a column `score` (1-10) or columns
 * h1..h10 (vote counts), see aes_labels_parse_csv in aesalign.h.
 */
#include "cli.h"
#include "elta_synth.h"
#include <limits.h>
#include <math.h>
#include <time.h>

/* ---- shared helpers ---------------------------------------------------------- */

/* Reads tensor `embeddings` [N, D] as float and L2-normalises its rows. */
static int load_embeddings(aes_ctx *ctx, const char *cmd, const char *path, float **x, int *n, int *d) {
    aes_safetensors *st = NULL;
    const aes_tensor_view *t;
    int i, c;
    *x = NULL;
    if (aes_safetensors_open(ctx, path, &st) != AES_OK) return cli_fail(cmd, ctx, "cannot read features");
    t = aes_safetensors_find(st, "embeddings");
    if (!t) {
        aes_safetensors_close(st);
        return cli_fail(cmd, NULL, "%s: no tensor 'embeddings' (expected [N, D])", path);
    }
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > INT_MAX / 2 || t->shape[1] > (1 << 20)) {
        aes_safetensors_close(st);
        return cli_fail(cmd, NULL, "%s: 'embeddings' must be a non-empty [N, D] matrix", path);
    }
    *n = (int)t->shape[0];
    *d = (int)t->shape[1];
    *x = (float *)aes_alloc(ctx, (size_t)t->numel, sizeof(float));
    if (!*x || aes_tensor_to_f32(ctx, t, *x, (size_t)t->numel) != AES_OK) {
        aes_free(*x);
        *x = NULL;
        aes_safetensors_close(st);
        return cli_fail(cmd, ctx, "%s: cannot convert 'embeddings'", path);
    }
    aes_safetensors_close(st);
    for (i = 0; i < *n; i++) {
        float *r = *x + (size_t)i * *d;
        double ss = 0;
        for (c = 0; c < *d; c++) {
            if (!(fabsf(r[c]) < 1e30f)) {
                aes_free(*x);
                *x = NULL;
                return cli_fail(cmd, NULL, "%s: embedding row %d is not finite", path, i);
            }
            ss += (double)r[c] * r[c];
        }
        if (ss > 0)
            for (c = 0; c < *d; c++) r[c] = (float)(r[c] / sqrt(ss));
    }
    return 0;
}

static int parse_head_kind(const char *s, int *kind) {
    if (!strcmp(s, "linear")) *kind = AES_HEAD_LINEAR;
    else if (!strcmp(s, "mlp")) *kind = AES_HEAD_MLP;
    else return 0;
    return 1;
}

static const char *const seg_names[3] = {"pct0_20", "pct20_80", "pct80_100"};

static void print_metrics(FILE *f, const aes_iaa_metrics *m) {
    int k;
    fprintf(f, "n %d\n", m->n);
    fprintf(f, "srcc %.6f\nplcc %.6f\nacc %.6f\nmae %.6f\nrmse %.6f\n", m->srcc, m->plcc, m->acc, m->mae, m->rmse);
    if (m->emd == m->emd) fprintf(f, "emd %.6f\n", m->emd);
    fprintf(f, "head_mae %.6f\nmedium_mae %.6f\ntail_mae %.6f\nbalanced_mae %.6f\n", m->head_mae, m->medium_mae,
            m->tail_mae, m->balanced_mae);
    for (k = 0; k < AES_SCORE_BINS; k++)
        fprintf(f, "mae_bin%d %.6f\n", k + 1, m->bin_mae[k]);
    for (k = 0; k < AES_SCORE_BINS; k++)
        fprintf(f, "count_bin%d %d\n", k + 1, m->bin_count[k]);
    fprintf(f, "groups ");
    for (k = 0; k < AES_SCORE_BINS; k++) fputc("HMT"[m->group[k]], f);
    fputc('\n', f);
    /* the ELTA authors' percentile segments (metric.py piecewise_mae) */
    for (k = 0; k < 3; k++)
        fprintf(f, "%s_mae %.6f\n%s_count %d\n", seg_names[k], m->seg_mae[k], seg_names[k], m->seg_count[k]);
    fprintf(f, "pct_edges %.6f %.6f %.6f %.6f\n", m->seg_edge[0], m->seg_edge[1], m->seg_edge[2], m->seg_edge[3]);
}

/* ---- train-head ------------------------------------------------------------------ */

typedef struct { int quiet, stage; } progress_state;

static void on_epoch(void *user, const aes_head_epoch_info *e) {
    progress_state *ps = (progress_state *)user;
    if (ps->quiet) return;
    if (e->stage == 2 && ps->stage != 2)
        fprintf(stderr, "ELTA refinement: %d unlabelled rows pseudo-labelled; training on %d rows\n", e->n_pseudo,
                e->n_train);
    ps->stage = e->stage;
    fprintf(stderr, "epoch %3d/%-3d %s loss %.5f", e->epoch, e->epochs, e->stage == 2 ? "[pseudo]" : "        ",
            e->train_loss);
    if (e->sim_loss > 0) fprintf(stderr, " sim %.4f", e->sim_loss);
    if (e->has_val)
        fprintf(stderr, " | val srcc %.4f plcc %.4f acc %.3f mae %.4f tail_mae %.4f bal_mae %.4f%s", e->val.srcc,
                e->val.plcc, e->val.acc, e->val.mae, e->val.tail_mae, e->val.balanced_mae, e->best ? " *" : "");
    fprintf(stderr, "  %.1fs\n", e->seconds);
}

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign train-head --features FILE --labels FILE --out FILE [options]\n"
            "  trains an aesthetic head on frozen (L2-normalised) embeddings and saves it as safetensors\n"
            "  --head linear|mlp        head layout (default linear; mlp = 5 layers as LAION v2)\n"
            "  --hidden A,B,C,D         MLP hidden sizes (default 1024,128,64,16)\n"
            "  --act none|relu          MLP activation (default none, as LAION v2)\n"
            "  --loss emd|mse           default: emd when the labels have h1..h10, else mse\n"
            "  --epochs N               (default 20)   --batch N (64)   --lr X (1e-3)   --wd X (1e-4)\n"
            "  --seed N                 (default 42)   --val-split F (0.1)\n"
            "  --elta                   ELTA on: mixup, similarity consistency (mlp), refinement (emd + --unlabeled)\n"
            "  --no-mixup --no-simloss --no-refine   switch single ELTA parts off again\n"
            "  --mixup --simloss --refine            switch single ELTA parts on\n"
            "  --unlabeled FILE         embeddings without labels, for ELTA's pseudo-labels (part 3)\n"
            "  --refine-epochs N        epochs of the pseudo-label stage (default: as many as --epochs, as\n"
            "                           the authors' code); it runs only when more than 10 rows are selected\n"
            "  --mse-scale X            score (mse) heads: scale of the scores mixup's temperatures act on\n"
            "                           (default 0.1 = the authors' 0.1-1 scale; 1 = the 1-10 scale)\n"
            "  --n-mix N                mixed samples per batch (default 16)\n"
            "  --sim-weight X           weight of the similarity-consistency loss (default 0.5)\n"
            "  --anchor deviation|invfreq|uniform   mixup anchors (default deviation, the paper's)\n"
            "  --lambda paper|beta      mixup factor (default paper: P(i) / (P(i) + P(j)))\n"
            "  --quiet                  no progress lines\n");
}

CLI_COMMAND(train_head, "train an aesthetic head on embeddings: linear or MLP, EMD or MSE, optional ELTA") {
    const char *features = NULL, *labels_path = NULL, *out = NULL, *unl_path = NULL, *s;
    int kind = AES_HEAD_LINEAR, act = AES_HEAD_ACT_NONE, loss = -1, hidden[4] = {1024, 128, 64, 16}, i, n, d, nu = 0, du = 0;
    int want_mixup = -1, want_sim = -1, want_refine = -1, elta = 0, rc = 1;
    long v;
    double fv;
    float *x = NULL, *xu = NULL;
    aes_labels labels;
    aes_head head;
    aes_head_train_config cfg;
    aes_head_train_result res;
    progress_state ps = {0, 0};
    aes_ctx *ctx;
    char info[256];
    const char *meta[4];
    memset(&labels, 0, sizeof labels);
    memset(&head, 0, sizeof head);
    aes_head_train_config_default(&cfg);
    aes_elta_config_default(&cfg.elta, 0);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { train_usage(stdout); return 0; }
        if ((r = cli_opt_str(argc, argv, &i, "--features", &features))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--labels", &labels_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--out", &out))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--unlabeled", &unl_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--head", &s))) {
            if (r < 0 || !parse_head_kind(s, &kind)) return cli_fail("train-head", NULL, "--head wants linear or mlp") + 1;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--act", &s))) {
            if (r < 0) return 2;
            if (!strcmp(s, "none")) act = AES_HEAD_ACT_NONE;
            else if (!strcmp(s, "relu")) act = AES_HEAD_ACT_RELU;
            else return cli_fail("train-head", NULL, "--act wants none or relu") + 1;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--hidden", &s))) {
            if (r < 0 || sscanf(s, "%d,%d,%d,%d", &hidden[0], &hidden[1], &hidden[2], &hidden[3]) != 4)
                return cli_fail("train-head", NULL, "--hidden wants four sizes A,B,C,D") + 1;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--loss", &s))) {
            if (r < 0) return 2;
            if (!strcmp(s, "emd")) loss = AES_LOSS_EMD;
            else if (!strcmp(s, "mse")) loss = AES_LOSS_MSE;
            else return cli_fail("train-head", NULL, "--loss wants emd or mse") + 1;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--anchor", &s))) {
            if (r < 0) return 2;
            if (!strcmp(s, "deviation")) cfg.elta.mix.anchor = AES_ELTA_ANCHOR_DEVIATION;
            else if (!strcmp(s, "invfreq")) cfg.elta.mix.anchor = AES_ELTA_ANCHOR_INV_FREQ;
            else if (!strcmp(s, "uniform")) cfg.elta.mix.anchor = AES_ELTA_ANCHOR_UNIFORM;
            else return cli_fail("train-head", NULL, "--anchor wants deviation, invfreq or uniform") + 1;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--lambda", &s))) {
            if (r < 0) return 2;
            if (!strcmp(s, "paper")) cfg.elta.mix.lambda_mode = AES_ELTA_LAMBDA_PAPER;
            else if (!strcmp(s, "beta")) cfg.elta.mix.lambda_mode = AES_ELTA_LAMBDA_BETA;
            else return cli_fail("train-head", NULL, "--lambda wants paper or beta") + 1;
            continue;
        }
        if ((r = cli_opt_int(argc, argv, &i, "--epochs", &v))) { if (r < 0 || v < 1 || v > 100000) return 2; cfg.epochs = (int)v; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--batch", &v))) { if (r < 0 || v < 1 || v > 65536) return 2; cfg.batch = (int)v; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--seed", &v))) { if (r < 0) return 2; cfg.seed = (uint64_t)v; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--refine-epochs", &v))) { if (r < 0 || v < 0 || v > 100000) return 2; cfg.elta.refine_epochs = (int)v; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--n-mix", &v))) { if (r < 0 || v < 0 || v > 65536) return 2; cfg.elta.mix.n_mix = (int)v; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--lr", &fv))) { if (r < 0 || !(fv > 0)) return 2; cfg.lr = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--wd", &fv))) { if (r < 0 || !(fv >= 0)) return 2; cfg.weight_decay = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--val-split", &fv))) { if (r < 0 || !(fv >= 0 && fv < 1)) return 2; cfg.val_split = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--sim-weight", &fv))) { if (r < 0 || !(fv >= 0)) return 2; cfg.elta.sim_weight = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--mse-scale", &fv))) {
            if (r < 0 || !(fv > 0 && fv < 1e6)) return cli_fail("train-head", NULL, "--mse-scale wants a positive number") + 1;
            cfg.elta.mix_mse_scale = (float)fv;
            continue;
        }
        if (!strcmp(argv[i], "--elta")) { elta = 1; continue; }
        if (!strcmp(argv[i], "--mixup")) { want_mixup = 1; continue; }
        if (!strcmp(argv[i], "--no-mixup")) { want_mixup = 0; continue; }
        if (!strcmp(argv[i], "--simloss")) { want_sim = 1; continue; }
        if (!strcmp(argv[i], "--no-simloss")) { want_sim = 0; continue; }
        if (!strcmp(argv[i], "--refine")) { want_refine = 1; continue; }
        if (!strcmp(argv[i], "--no-refine")) { want_refine = 0; continue; }
        if (!strcmp(argv[i], "--quiet")) { ps.quiet = 1; continue; }
        train_usage(stderr);
        return cli_fail("train-head", NULL, "unknown option '%s'", argv[i]) + 1;
    }
    if (!features || !labels_path || !out) {
        train_usage(stderr);
        return 2;
    }
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("train-head", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (load_embeddings(ctx, "train-head", features, &x, &n, &d)) goto done;
    if (aes_labels_read_csv(ctx, &labels, labels_path) != AES_OK) { cli_fail("train-head", ctx, "cannot read labels"); goto done; }
    if (labels.n != n) {
        cli_fail("train-head", NULL, "%s has %d label rows but %s has %d embeddings", labels_path, labels.n, features, n);
        goto done;
    }
    if (unl_path) {
        if (load_embeddings(ctx, "train-head", unl_path, &xu, &nu, &du)) goto done;
        if (du != d) { cli_fail("train-head", NULL, "%s has %d-dim embeddings, %s has %d", unl_path, du, features, d); goto done; }
    }
    if (loss < 0) loss = labels.has_hist ? AES_LOSS_EMD : AES_LOSS_MSE;
    cfg.loss = loss;
    /* --elta switches on what applies; single parts can be switched after */
    cfg.elta.mixup = want_mixup >= 0 ? want_mixup : elta;
    cfg.elta.simloss = want_sim >= 0 ? want_sim : (elta && kind == AES_HEAD_MLP);
    cfg.elta.refine = want_refine >= 0 ? want_refine : (elta && loss == AES_LOSS_EMD && xu != NULL);
    if (elta && !ps.quiet) {
        if (kind != AES_HEAD_MLP && want_sim < 0)
            fprintf(stderr, "note: similarity consistency (ELTA part 2) needs an MLP head; off for --head linear\n");
        if (loss != AES_LOSS_EMD && want_refine < 0)
            fprintf(stderr, "note: pseudo-label refinement (ELTA part 3) needs the EMD loss; off for --loss mse\n");
        else if (!xu && want_refine < 0)
            fprintf(stderr, "note: pseudo-label refinement (ELTA part 3) needs --unlabeled FILE; off\n");
    }
    if (aes_head_init(ctx, &head, kind, loss == AES_LOSS_EMD ? AES_HEAD_HIST10 : AES_HEAD_SCORE, act, d, hidden,
                      cfg.seed) != AES_OK) { cli_fail("train-head", ctx, "cannot create the head"); goto done; }
    cfg.on_epoch = on_epoch;
    cfg.user = &ps;
    if (!ps.quiet)
        fprintf(stderr, "training a %s %s head on %d x %d embeddings (%s loss; ELTA mixup %s, similarity %s, refinement %s)\n",
                aes_head_kind_name(kind), aes_head_output_name(head.output), n, d, loss == AES_LOSS_EMD ? "EMD" : "MSE",
                cfg.elta.mixup ? "on" : "off", cfg.elta.simloss ? "on" : "off", cfg.elta.refine ? "on" : "off");
    if (aes_head_train(ctx, &head, x, n, d, &labels, xu, nu, &cfg, &res) != AES_OK) {
        cli_fail("train-head", ctx, "training failed");
        goto done;
    }
    snprintf(info, sizeof info, "loss=%s epochs=%d lr=%g seed=%llu elta_mixup=%d elta_simloss=%d elta_refine=%d pseudo=%d best_epoch=%d",
             loss == AES_LOSS_EMD ? "emd" : "mse", cfg.epochs, cfg.lr, (unsigned long long)cfg.seed, cfg.elta.mixup,
             cfg.elta.simloss, cfg.elta.refine, res.n_pseudo, res.best_epoch);
    meta[0] = "aesalign.train";
    meta[1] = info;
    meta[2] = "aesalign.input";
    meta[3] = "L2-normalized image embedding";
    if (aes_head_save(ctx, &head, out, meta, 2) != AES_OK) { cli_fail("train-head", ctx, "cannot save the head"); goto done; }
    if (!ps.quiet) {
        fprintf(stderr, "saved %s: %s %s head, weights of epoch %d", out, aes_head_kind_name(kind),
                aes_head_output_name(head.output), res.best_epoch);
        if (res.n_val) fprintf(stderr, " (val srcc %.4f, tail_mae %.4f, balanced_mae %.4f)", res.val.srcc, res.val.tail_mae,
                               res.val.balanced_mae);
        fputc('\n', stderr);
    }
    rc = 0;
done:
    aes_head_free(&head);
    aes_labels_free(&labels);
    aes_free(x);
    aes_free(xu);
    aes_ctx_free(ctx);
    return rc;
}

/* ---- eval-head / predict-head ------------------------------------------------------ */

static int predict_rows(aes_ctx *ctx, const char *cmd, const aes_head *head, const float *x, int n, int d,
                        float **scores, float **hist) {
    if (head->dim[0] != d)
        return cli_fail(cmd, NULL, "the head takes %d-dim embeddings, the features are %d-dim", head->dim[0], d);
    *scores = (float *)aes_alloc(ctx, (size_t)n, sizeof(float));
    *hist = head->output == AES_HEAD_HIST10 ? (float *)aes_alloc(ctx, (size_t)n * AES_SCORE_BINS, sizeof(float)) : NULL;
    if (!*scores || (head->output == AES_HEAD_HIST10 && !*hist)) return cli_fail(cmd, ctx, "out of memory");
    if (aes_head_predict(ctx, head, *scores, *hist, x, n) != AES_OK) return cli_fail(cmd, ctx, "prediction failed");
    return 0;
}

CLI_COMMAND(eval_head, "print IAA metrics of a head on labelled embeddings: srcc, plcc, acc, mae, tail_mae, ...") {
    const char *head_path = NULL, *features = NULL, *labels_path = NULL, *split_path = NULL;
    float *x = NULL, *pred = NULL, *ph = NULL;
    aes_labels labels, split;
    aes_head head;
    aes_iaa_metrics m;
    aes_iaa_eval_opts o;
    int i, n, d, rc = 1, split_counts[AES_SCORE_BINS];
    double thr = 5.0;
    aes_ctx *ctx;
    memset(&labels, 0, sizeof labels);
    memset(&split, 0, sizeof split);
    memset(&head, 0, sizeof head);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign eval-head --head FILE --features FILE --labels FILE [--split-labels FILE] [--threshold X]\n"
                   "  prints one metric per line, `name value`: n, srcc, plcc, acc (at --threshold, default 5),\n"
                   "  mae, rmse, emd (hist10 head and h1..h10 labels), head_mae, medium_mae, tail_mae,\n"
                   "  balanced_mae, mae_bin1..10, count_bin1..10, groups (H/M/T per bin).  Head/medium/tail\n"
                   "  bins come from the label counts of --split-labels (e.g. the training set), else --labels.\n"
                   "  Then the ELTA authors' long-tail metric (their metric.py): pct0_20_mae, pct20_80_mae,\n"
                   "  pct80_100_mae (and _count) = MAE of the rows whose true score lies strictly between the\n"
                   "  0th/20th, 20th/80th, 80th/100th percentiles of the true scores, and pct_edges (the four\n"
                   "  percentiles).\n");
            return 0;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--head", &head_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--features", &features))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--labels", &labels_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--split-labels", &split_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--threshold", &thr))) { if (r < 0) return 2; continue; }
        return cli_fail("eval-head", NULL, "unknown option '%s' (see --help)", argv[i]) + 1;
    }
    if (!head_path || !features || !labels_path)
        return cli_fail("eval-head", NULL, "--head, --features and --labels are required") + 1;
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("eval-head", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (aes_head_load(ctx, head_path, &head) != AES_OK) { cli_fail("eval-head", ctx, "cannot load the head"); goto done; }
    if (load_embeddings(ctx, "eval-head", features, &x, &n, &d)) goto done;
    if (aes_labels_read_csv(ctx, &labels, labels_path) != AES_OK) { cli_fail("eval-head", ctx, "cannot read labels"); goto done; }
    if (labels.n != n) {
        cli_fail("eval-head", NULL, "%s has %d label rows but %s has %d embeddings", labels_path, labels.n, features, n);
        goto done;
    }
    if (predict_rows(ctx, "eval-head", &head, x, n, d, &pred, &ph)) goto done;
    memset(&o, 0, sizeof o);
    o.threshold = (float)thr;
    if (split_path) {
        if (aes_labels_read_csv(ctx, &split, split_path) != AES_OK) { cli_fail("eval-head", ctx, "cannot read split labels"); goto done; }
        aes_score_bin_counts(split.score, split.n, split_counts);
        o.split_counts = split_counts;
    }
    if (aes_iaa_evaluate(ctx, &m, pred, labels.score, ph, labels.has_hist ? labels.hist : NULL, n, &o) != AES_OK) {
        cli_fail("eval-head", ctx, "evaluation failed");
        goto done;
    }
    print_metrics(stdout, &m);
    rc = 0;
done:
    aes_head_free(&head);
    aes_labels_free(&labels);
    aes_labels_free(&split);
    aes_free(x); aes_free(pred); aes_free(ph);
    aes_ctx_free(ctx);
    return rc;
}

CLI_COMMAND(predict_head, "print one predicted mean score, 1-10 scale, per embedding row") {
    const char *head_path = NULL, *features = NULL;
    float *x = NULL, *pred = NULL, *ph = NULL;
    aes_head head;
    int i, n, d, rc = 1;
    aes_ctx *ctx;
    memset(&head, 0, sizeof head);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign predict-head --head FILE --features FILE\n"
                   "  prints one line per embedding row: the predicted mean score on the 1-10 scale\n"
                   "  (for a hist10 head: sum_k k * softmax(logits)_k)\n");
            return 0;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--head", &head_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--features", &features))) { if (r < 0) return 2; continue; }
        return cli_fail("predict-head", NULL, "unknown option '%s' (see --help)", argv[i]) + 1;
    }
    if (!head_path || !features) return cli_fail("predict-head", NULL, "--head and --features are required") + 1;
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("predict-head", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (aes_head_load(ctx, head_path, &head) != AES_OK) { cli_fail("predict-head", ctx, "cannot load the head"); goto done; }
    if (load_embeddings(ctx, "predict-head", features, &x, &n, &d)) goto done;
    if (predict_rows(ctx, "predict-head", &head, x, n, d, &pred, &ph)) goto done;
    for (i = 0; i < n; i++) printf("%.6f\n", pred[i]);
    rc = 0;
done:
    aes_head_free(&head);
    aes_free(x); aes_free(pred); aes_free(ph);
    aes_ctx_free(ctx);
    return rc;
}

/* ---- elta-bench: the ablation ------------------------------------------------------ */

typedef struct {
    const char *name;
    int kind, loss, mixup, simloss, refine;
} bench_cfg;

#define BENCH_COLS 11
typedef struct { double v[BENCH_COLS]; } bench_row; /* srcc plcc mae head medium tail balanced acc, authors' segments */

static const char *const bench_cols[BENCH_COLS] = {"SRCC", "PLCC", "MAE", "head MAE", "medium MAE", "tail MAE", "balanced MAE", "acc",
                                                  "MAE 0-20%", "MAE 20-80%", "MAE 80-100%"};

static int load_anchors(aes_ctx *ctx, const char *path, float **a, int *d) {
    int n;
    if (load_embeddings(ctx, "elta-bench", path, a, &n, d)) return 1;
    if (n != 10) {
        aes_free(*a);
        return cli_fail("elta-bench", NULL, "%s: 'embeddings' has %d rows, the benchmark wants 10 (rating 0..9)", path, n);
    }
    return 0;
}

/* A smooth curve on the sphere, for when ../shared is absent. */
static float *synthetic_anchors(int D) {
    float *a = (float *)malloc(sizeof(float) * 10 * (size_t)D), *u = (float *)malloc(sizeof(float) * (size_t)D * 2);
    uint64_t s = 7;
    int k, c;
    if (!a || !u) { free(a); free(u); return NULL; }
    for (c = 0; c < 2 * D; c++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        u[c] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    for (k = 0; k < 10; k++) {
        double t = 0.09 * k, nrm = 0;
        for (c = 0; c < D; c++) { a[k * D + c] = (float)(cos(t) * u[c] + sin(t) * u[D + c]); nrm += a[k * D + c] * a[k * D + c]; }
        for (c = 0; c < D; c++) a[k * D + c] = (float)(a[k * D + c] / sqrt(nrm));
    }
    free(u);
    return a;
}

/* Writes embeddings as safetensors `embeddings` [n, d] and, when labels is
 * given, a CSV with columns score,h1..h10 (histograms as vote fractions). */
static int export_set(aes_ctx *ctx, const char *prefix, const char *part, const float *x, int n, int d,
                      const aes_labels *labels) {
    char path[4096];
    aes_tensor_out t;
    int i, k;
    memset(&t, 0, sizeof t);
    t.name = "embeddings";
    t.dtype = AES_DTYPE_F32;
    t.ndim = 2;
    t.shape[0] = n;
    t.shape[1] = d;
    t.data = x;
    snprintf(path, sizeof path, "%s-%s.safetensors", prefix, part);
    if (aes_safetensors_write(ctx, path, &t, 1, NULL, 0) != AES_OK) return cli_fail("elta-bench", ctx, "export");
    printf("wrote %s\n", path);
    if (labels) {   /* formatted in memory, written atomically */
        char *text = NULL;
        size_t tlen = 0;
        FILE *f = open_memstream(&text, &tlen);
        int bad;
        snprintf(path, sizeof path, "%s-%s.csv", prefix, part);
        if (!f) return cli_fail("elta-bench", NULL, "%s: out of memory", path);
        fprintf(f, "score,h1,h2,h3,h4,h5,h6,h7,h8,h9,h10\n");
        for (i = 0; i < n; i++) {
            fprintf(f, "%.6f", labels->score[i]);
            for (k = 0; k < AES_SCORE_BINS; k++) fprintf(f, ",%.6g", labels->hist[(size_t)i * AES_SCORE_BINS + k]);
            fputc('\n', f);
        }
        bad = fclose(f) != 0 || aes_write_file_atomic(ctx, path, text, tlen) != AES_OK;
        free(text);
        if (bad) return cli_fail("elta-bench", ctx, "%s: write error", path);
        printf("wrote %s\n", path);
    }
    return 0;
}

CLI_COMMAND(elta_bench, "ELTA ablation on a long-tailed benchmark built on real CLIP embeddings") {
    static const bench_cfg cfgs[] = {
        {"linear MSE", AES_HEAD_LINEAR, AES_LOSS_MSE, 0, 0, 0},
        {"linear MSE + mixup (1)", AES_HEAD_LINEAR, AES_LOSS_MSE, 1, 0, 0},
        {"linear EMD", AES_HEAD_LINEAR, AES_LOSS_EMD, 0, 0, 0},
        {"linear EMD + mixup (1)", AES_HEAD_LINEAR, AES_LOSS_EMD, 1, 0, 0},
        {"linear EMD + refine (3)", AES_HEAD_LINEAR, AES_LOSS_EMD, 0, 0, 1},
        {"linear EMD + ELTA (1+3)", AES_HEAD_LINEAR, AES_LOSS_EMD, 1, 0, 1},
        {"MLP EMD", AES_HEAD_MLP, AES_LOSS_EMD, 0, 0, 0},
        {"MLP EMD + mixup (1)", AES_HEAD_MLP, AES_LOSS_EMD, 1, 0, 0},
        {"MLP EMD + similarity (2)", AES_HEAD_MLP, AES_LOSS_EMD, 0, 1, 0},
        {"MLP EMD + refine (3)", AES_HEAD_MLP, AES_LOSS_EMD, 0, 0, 1},
        {"MLP EMD + ELTA (1+2+3)", AES_HEAD_MLP, AES_LOSS_EMD, 1, 1, 1},
    };
    const int ncfg = (int)(sizeof cfgs / sizeof *cfgs);
    const char *anchors_path = "../shared/data/laion-rating-embeddings-vit-l-14.safetensors", *only = NULL, *s;
    const char *export_prefix = NULL;
    long seeds = 3, seed_base = 0, ntr = 16000, nte = 20000, nun = 16000, epochs = 20, refine_epochs = 10, v;
    double fv;
    float bench_lr = 1e-3f;
    int i, k, c, d, base = 0, rc = 1, act = AES_HEAD_ACT_NONE, hidden[4] = {256, 64, 32, 16}, verbose = 0, select_best = 1;
    float *anchors = NULL, *xtr = NULL, *xte = NULL, *xun = NULL, *pred = NULL;
    bench_row *rows = NULL;
    synth_cfg sc;
    aes_elta_config ec;
    aes_ctx *ctx;
    double t0 = (double)time(NULL);
    synth_default(&sc);
    aes_elta_config_default(&ec, 1);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign elta-bench [--anchors FILE] [--seeds N] [--seed-base N] [--n-train N] [--n-test N] [--n-unlabeled N]\n"
                   "                          [--epochs N] [--refine-epochs N] [--only SUBSTRING] [--act none|relu]\n"
                   "                          [--n-mix N] [--sim-weight X] [--sim-layer N] [--anchor deviation|invfreq|uniform]\n"
                   "                          [--lambda paper|beta] [--tau1 X] [--mse-scale X] [--beta X] [--threshold X] [--refine-label 0|1]\n"
                   "                          [--content X] [--noise X] [--sd X] [--position-sd X] [--verbose]\n"
                   "                          [--select srcc|last] [--lr X] [--export PREFIX]  (write the first seed's sets as PREFIX-{train,test,unlabeled}.*\n"
                   "                          for train-head / eval-head, and stop)\n"
                   "  Builds a long-tailed benchmark from 10 real CLIP embeddings of rising aesthetic level\n"
                   "  (default %s; a synthetic curve if absent), see tools/elta_synth.h,\n"
                   "  trains every configuration of the ablation on the same data for each seed and prints\n"
                   "  a markdown table of test metrics, mean +- sd over seeds, with paired differences to the\n"
                   "  baseline of the same head.  Every configuration trains the same number of epochs.\n"
                   "  Seeds are seed-base+1 .. seed-base+N (tune on another seed-base than the one you report).\n"
                   "  Metrics: the library's head/medium/tail bins by training frequency, and the ELTA authors'\n"
                   "  MAE over the 0-20th / 20-80th / 80-100th percentiles of the true test scores.\n"
                   "  --mse-scale: scale of MSE heads' scores for mixup (default 0.1, the authors'; 1 = 1-10).\n"
                   "  --refine-epochs defaults to 10 here (the benchmark's protocol; train-head's default is the\n"
                   "  authors', as long as stage 1).\n",
                   anchors_path);
            return 0;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--anchors", &anchors_path))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--only", &only))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--export", &export_prefix))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--seeds", &seeds))) { if (r < 0 || seeds < 1 || seeds > 1000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--seed-base", &seed_base))) { if (r < 0 || seed_base < 0) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--n-train", &ntr))) { if (r < 0 || ntr < 10 || ntr > 10000000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--n-test", &nte))) { if (r < 0 || nte < 10 || nte > 10000000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--n-unlabeled", &nun))) { if (r < 0 || nun < 0 || nun > 10000000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--epochs", &epochs))) { if (r < 0 || epochs < 1 || epochs > 10000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--refine-epochs", &refine_epochs))) { if (r < 0 || refine_epochs < 0 || refine_epochs > 10000) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--n-mix", &v))) { if (r < 0 || v < 0 || v > 4096) return 2; ec.mix.n_mix = (int)v; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--sim-weight", &fv))) { if (r < 0) return 2; ec.sim_weight = (float)fv; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--sim-layer", &v))) { if (r < 0 || v < 1 || v > 4) return 2; ec.sim_layer = (int)v; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--content", &fv))) { if (r < 0) return 2; sc.content_scale = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--noise", &fv))) { if (r < 0) return 2; sc.noise_scale = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--position-sd", &fv))) { if (r < 0 || !(fv >= 0)) return 2; sc.position_sd = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--sd", &fv))) { if (r < 0 || !(fv > 0)) return 2; sc.sd = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--tau1", &fv))) { if (r < 0) return 2; ec.mix.tau1 = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--mse-scale", &fv))) {
            if (r < 0 || !(fv > 0 && fv < 1e6)) return cli_fail("elta-bench", NULL, "--mse-scale wants a positive number") + 1;
            ec.mix_mse_scale = (float)fv;
            continue;
        }
        if ((r = cli_opt_float(argc, argv, &i, "--beta", &fv))) { if (r < 0) return 2; ec.refine_beta = (float)fv; continue; }
        if ((r = cli_opt_float(argc, argv, &i, "--threshold", &fv))) { if (r < 0) return 2; ec.refine_threshold = (float)fv; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--refine-label", &v))) { if (r < 0) return 2; ec.refine_label = (int)v; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--anchor", &s))) {
            if (r < 0) return 2;
            if (!strcmp(s, "deviation")) ec.mix.anchor = AES_ELTA_ANCHOR_DEVIATION;
            else if (!strcmp(s, "invfreq")) ec.mix.anchor = AES_ELTA_ANCHOR_INV_FREQ;
            else if (!strcmp(s, "uniform")) ec.mix.anchor = AES_ELTA_ANCHOR_UNIFORM;
            else return 2;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--lambda", &s))) {
            if (r < 0) return 2;
            ec.mix.lambda_mode = !strcmp(s, "beta") ? AES_ELTA_LAMBDA_BETA : AES_ELTA_LAMBDA_PAPER;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--act", &s))) {
            if (r < 0) return 2;
            act = !strcmp(s, "relu") ? AES_HEAD_ACT_RELU : AES_HEAD_ACT_NONE;
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--select", &s))) {
            if (r < 0 || (strcmp(s, "srcc") && strcmp(s, "last"))) return cli_fail("elta-bench", NULL, "--select wants srcc or last") + 1;
            select_best = !strcmp(s, "srcc");
            continue;
        }
        if ((r = cli_opt_float(argc, argv, &i, "--lr", &fv))) { if (r < 0 || !(fv > 0)) return 2; bench_lr = (float)fv; continue; }
        if (!strcmp(argv[i], "--verbose")) { verbose = 1; continue; }
        return cli_fail("elta-bench", NULL, "unknown option '%s' (see --help)", argv[i]) + 1;
    }
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("elta-bench", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    {
        FILE *f = fopen(anchors_path, "rb");
        if (f) {
            fclose(f);
            if (load_anchors(ctx, anchors_path, &anchors, &d)) goto done;
            printf("anchors: %s (10 x %d real CLIP embeddings)\n", anchors_path, d);
        } else {
            float *a;
            d = 768;
            a = synthetic_anchors(d);
            anchors = (float *)aes_alloc(ctx, 10 * (size_t)d, sizeof(float));
            if (!a || !anchors) { free(a); cli_fail("elta-bench", ctx, "out of memory"); goto done; }
            memcpy(anchors, a, sizeof(float) * 10 * (size_t)d);
            free(a);
            printf("anchors: %s is absent; using a synthetic curve of 10 unit vectors in %d dims\n", anchors_path, d);
        }
    }
    printf("benchmark: %ld train / %ld test / %ld unlabelled rows per seed, latent score ~ N(%.2f, %.2f) on [1, 10], "
           "position sd %.2f, content %.2f (rank %d), noise %.2f, %d votes (sd %.2f); %ld seeds; %ld epochs (+%ld pseudo-label epochs "
           "for refine; others train the same total)\n",
           ntr, nte, nun, sc.mean, sc.sd, sc.position_sd, sc.content_scale, sc.content_rank, sc.noise_scale, sc.votes, sc.vote_sd, seeds,
           epochs, refine_epochs);
    printf("training: lr %g (cosine), batch 64, AdamW wd 1e-4, 10%% validation, weights of %s\n", bench_lr,
           select_best ? "the best validation SRCC epoch (the paper's protocol)" : "the last epoch");
    printf("ELTA: n_mix %d, anchor %s, lambda %s, tau1 %.2f, tau2 %.2f, sim_weight %.2f, refine beta %.2f threshold %.2f label %s; MLP hidden %d,%d,%d,%d act %s\n\n",
           ec.mix.n_mix, ec.mix.anchor == 0 ? "deviation" : ec.mix.anchor == 1 ? "invfreq" : "uniform",
           ec.mix.lambda_mode ? "beta" : "paper", ec.mix.tau1, ec.mix.tau2, ec.sim_weight, ec.refine_beta,
           ec.refine_threshold, ec.refine_label ? "refined" : "output", hidden[0], hidden[1], hidden[2], hidden[3],
           act ? "relu" : "none");
    xtr = (float *)aes_alloc(ctx, (size_t)ntr * d, sizeof(float));
    xte = (float *)aes_alloc(ctx, (size_t)nte * d, sizeof(float));
    xun = (float *)aes_alloc(ctx, (size_t)(nun ? nun : 1) * d, sizeof(float));
    pred = (float *)aes_alloc(ctx, (size_t)nte, sizeof(float));
    rows = (bench_row *)calloc((size_t)ncfg * seeds, sizeof *rows);
    if (!xtr || !xte || !xun || !pred || !rows) { cli_fail("elta-bench", ctx, "out of memory"); goto done; }
    for (k = 0; k < seeds; k++) {
        aes_labels ltr, lte, lun;
        int counts[AES_SCORE_BINS];
        uint64_t seed = (uint64_t)(seed_base + k + 1);
        if (synth_make(ctx, xtr, &ltr, (int)ntr, anchors, d, &sc, seed, 1000 + seed) != AES_OK ||
            synth_make(ctx, xte, &lte, (int)nte, anchors, d, &sc, seed, 2000 + seed) != AES_OK ||
            synth_make(ctx, xun, &lun, (int)(nun ? nun : 1), anchors, d, &sc, seed, 3000 + seed) != AES_OK) {
            cli_fail("elta-bench", ctx, "cannot generate the benchmark");
            goto done;
        }
        if (export_prefix) { /* the first seed's sets as files, for train-head / eval-head */
            int bad = export_set(ctx, export_prefix, "train", xtr, (int)ntr, d, &ltr) ||
                      export_set(ctx, export_prefix, "test", xte, (int)nte, d, &lte) ||
                      (nun > 0 && export_set(ctx, export_prefix, "unlabeled", xun, (int)nun, d, NULL));
            aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
            rc = bad;
            goto done;
        }
        aes_score_bin_counts(ltr.score, ltr.n, counts);
        if (k == 0) {
            printf("training bin counts (seed %d):", (int)seed);
            for (c = 0; c < AES_SCORE_BINS; c++) printf(" %d", counts[c]);
            printf("\n\n");
        }
        for (c = 0; c < ncfg; c++) {
            aes_head head;
            aes_head_train_config tc;
            aes_iaa_metrics m;
            aes_iaa_eval_opts o;
            aes_head_train_result tr;
            bench_row *row = &rows[(size_t)c * seeds + k];
            if (only && !strstr(cfgs[c].name, only)) continue;
            aes_head_train_config_default(&tc);
            tc.loss = cfgs[c].loss;
            tc.seed = seed;
            tc.select_best = select_best;
            tc.lr = bench_lr;
            tc.elta = ec;
            tc.elta.mixup = cfgs[c].mixup;
            tc.elta.simloss = cfgs[c].simloss;
            tc.elta.refine = cfgs[c].refine && nun > 0;
            tc.elta.refine_epochs = (int)refine_epochs;
            tc.epochs = (int)(tc.elta.refine ? epochs : epochs + refine_epochs);
            if (aes_head_init(ctx, &head, cfgs[c].kind, cfgs[c].loss == AES_LOSS_EMD ? AES_HEAD_HIST10 : AES_HEAD_SCORE,
                              act, d, hidden, seed) != AES_OK ||
                aes_head_train(ctx, &head, xtr, (int)ntr, d, &ltr, nun ? xun : NULL, (int)nun, &tc, &tr) != AES_OK ||
                aes_head_predict(ctx, &head, pred, NULL, xte, (int)nte) != AES_OK) {
                cli_fail("elta-bench", ctx, "%s, seed %d", cfgs[c].name, (int)seed);
                aes_head_free(&head);
                aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
                goto done;
            }
            memset(&o, 0, sizeof o);
            o.split_counts = counts; /* head/medium/tail bins by training frequency */
            if (aes_iaa_evaluate(ctx, &m, pred, lte.score, NULL, NULL, (int)nte, &o) != AES_OK) {
                cli_fail("elta-bench", ctx, "evaluation");
                aes_head_free(&head);
                aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
                goto done;
            }
            row->v[0] = m.srcc; row->v[1] = m.plcc; row->v[2] = m.mae; row->v[3] = m.head_mae;
            row->v[4] = m.medium_mae; row->v[5] = m.tail_mae; row->v[6] = m.balanced_mae; row->v[7] = m.acc;
            row->v[8] = m.seg_mae[0]; row->v[9] = m.seg_mae[1]; row->v[10] = m.seg_mae[2];
            if (verbose)
                fprintf(stderr, "seed %d %-26s srcc %.4f plcc %.4f mae %.4f head %.4f medium %.4f tail %.4f balanced %.4f"
                        " pct 0-20 %.4f 20-80 %.4f 80-100 %.4f (best epoch %d, %d pseudo-labels)\n", (int)seed, cfgs[c].name,
                        m.srcc, m.plcc, m.mae, m.head_mae, m.medium_mae, m.tail_mae, m.balanced_mae, m.seg_mae[0],
                        m.seg_mae[1], m.seg_mae[2], tr.best_epoch, tr.n_pseudo);
            aes_head_free(&head);
        }
        aes_labels_free(&ltr); aes_labels_free(&lte); aes_labels_free(&lun);
    }
    /* the table: mean +- sd over seeds; for ELTA rows the paired difference
     * to the baseline of the same head and loss, and on how many seeds the
     * tail / balanced MAE went down */
    printf("| configuration |");
    for (i = 0; i < BENCH_COLS; i++) printf(" %s |", bench_cols[i]);
    printf(" d tail MAE | d balanced MAE | tail better |\n|---|");
    for (i = 0; i < BENCH_COLS + 3; i++) printf("---|");
    printf("\n");
    for (c = 0; c < ncfg; c++) {
        double dt = 0, db = 0;
        int better = 0;
        if (only && !strstr(cfgs[c].name, only)) continue;
        if (!cfgs[c].mixup && !cfgs[c].simloss && !cfgs[c].refine) base = c;
        printf("| %s |", cfgs[c].name);
        for (i = 0; i < BENCH_COLS; i++) {
            double mean = 0, var = 0;
            for (k = 0; k < seeds; k++) mean += rows[(size_t)c * seeds + k].v[i];
            mean /= seeds;
            for (k = 0; k < seeds; k++) var += pow(rows[(size_t)c * seeds + k].v[i] - mean, 2);
            var = seeds > 1 ? var / (seeds - 1) : 0;
            printf(" %.4f ± %.4f |", mean, sqrt(var));
        }
        if (c == base) { printf(" - | - | - |\n"); continue; }
        for (k = 0; k < seeds; k++) {
            double a = rows[(size_t)c * seeds + k].v[5] - rows[(size_t)base * seeds + k].v[5];
            dt += a;
            db += rows[(size_t)c * seeds + k].v[6] - rows[(size_t)base * seeds + k].v[6];
            better += a < 0;
        }
        printf(" %+.4f | %+.4f | %d/%ld |\n", dt / seeds, db / seeds, better, seeds);
    }
    printf("\n(%.0f s)\n", (double)time(NULL) - t0);
    rc = 0;
done:
    aes_free(anchors); aes_free(xtr); aes_free(xte); aes_free(xun); aes_free(pred);
    free(rows);
    aes_ctx_free(ctx);
    return rc;
}

/* ---- embed-dataset ------------------------------------------------------------------ */


static void ed_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign embed-dataset --model FILE --images DIR (--labels FILE.csv | --ava AVA.txt) --out PREFIX\n"
            "                              [--config FILE] [--vocab FILE] [--act quick_gelu|gelu] [--f16] [--batch N]\n"
            "                              [--skip-missing]\n"
            "  Embeds a labelled image folder once with a CLIP image tower and writes\n"
            "    PREFIX.safetensors  tensor `embeddings` [N, D], L2-normalised, one row per image\n"
            "    PREFIX.csv          path,score,h1..h10 (or path,score), one row per embedding row\n"
            "  the --features / --labels pair that train-head and eval-head read.\n"
            "  --labels  a CSV with a `path` column (relative to --images unless absolute) and `score`\n"
            "            or h1..h10; --ava  AVA.txt, images found as DIR/<image id>.jpg.\n"
            "  Unreadable or missing images stop the run unless --skip-missing (then they are left out\n"
            "  of both files and counted).\n"
            CLI_MODEL_HELP);
}

CLI_COMMAND(embed_dataset, "embed a labelled image folder with CLIP, writing features and labels for train-head") {
    const char *dir = NULL, *csv = NULL, *ava = NULL, *out = NULL;
    cli_model_opts mo;
    int skip = 0, i, k, rc = 1, S, E, kept = 0, missing = 0;
    long batch = 16;
    aes_ctx *ctx = NULL;
    aes_clip *m = NULL;
    aes_labels L;
    float *px = NULL, *emb = NULL, *all = NULL;
    int *rows = NULL, nb = 0;
    char path[8192];
    FILE *fc = NULL;
    char *csv_text = NULL;           /* the labels CSV, built in memory */
    size_t csv_len = 0;
    memset(&L, 0, sizeof L);
    memset(&mo, 0, sizeof mo);
    for (i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { ed_usage(stdout); return 0; }
        if ((r = cli_model_opt(argc, argv, &i, &mo))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--images", &dir))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--labels", &csv))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--ava", &ava))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--out", &out))) { if (r < 0) return 2; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--batch", &batch))) { if (r < 0 || batch < 1 || batch > 4096) return 2; continue; }
        if (!strcmp(argv[i], "--skip-missing")) { skip = 1; continue; }
        ed_usage(stderr);
        return cli_fail("embed-dataset", NULL, "unknown option '%s'", argv[i]) + 1;
    }
    if (!mo.model || !dir || !out || (!csv == !ava)) {
        ed_usage(stderr);
        return cli_fail("embed-dataset", NULL, "--model, --images, --out and one of --labels / --ava are required") + 1;
    }
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("embed-dataset", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (csv) {
        if (aes_labels_read_csv(ctx, &L, csv) != AES_OK) { cli_fail("embed-dataset", ctx, "labels"); goto done; }
        if (!L.paths) { cli_fail("embed-dataset", NULL, "%s has no 'path' column", csv); goto done; }
    } else if (aes_labels_read_ava(ctx, &L, ava) != AES_OK) {
        cli_fail("embed-dataset", ctx, "labels");
        goto done;
    }
    if (cli_load_model(ctx, &mo, &m) != AES_OK) { cli_fail("embed-dataset", ctx, "loading %s", mo.model); goto done; }
    if (!aes_clip_config_get(m)->has_vision) { cli_fail("embed-dataset", NULL, "%s has no image tower", mo.model); goto done; }
    S = aes_clip_config_get(m)->image_size;
    E = aes_clip_config_get(m)->embed_dim;
    px = (float *)aes_alloc(ctx, (size_t)batch * 3 * S * S, sizeof(float));
    emb = (float *)aes_alloc(ctx, (size_t)batch * E, sizeof(float));
    all = (float *)aes_alloc(ctx, (size_t)L.n * E, sizeof(float));
    rows = (int *)aes_alloc(ctx, (size_t)batch, sizeof(int));
    if (!px || !emb || !all || !rows) { cli_fail("embed-dataset", ctx, "out of memory"); goto done; }
    for (i = 0; i <= L.n; i++) {
        if (i < L.n) { /* preprocess image i into the batch */
            aes_image img;
            aes_status st;
            if (L.paths) {
                if (L.paths[i][0] == '/') snprintf(path, sizeof path, "%s", L.paths[i]);
                else snprintf(path, sizeof path, "%s/%s", dir, L.paths[i]);
            } else {
                snprintf(path, sizeof path, "%s/%lld.jpg", dir, (long long)L.ids[i]);
            }
            memset(&img, 0, sizeof img);
            st = (aes_status)cli_load_image(ctx, path, &img);
            if (!st) st = aes_clip_preprocess(ctx, &img, S, px + (size_t)nb * 3 * S * S);
            aes_image_free(&img);
            if (st) {
                if (!skip) { cli_fail("embed-dataset", ctx, "%s (use --skip-missing to leave it out)", path); goto done; }
                missing++;
                aes_clear_error(ctx);
            } else {
                rows[nb++] = i;
            }
        }
        if (nb == batch || (i == L.n && nb > 0)) { /* encode the batch */
            if (aes_clip_encode_image(ctx, m, px, nb, emb) != AES_OK) { cli_fail("embed-dataset", ctx, "encoding"); goto done; }
            aes_l2norm_forward(emb, NULL, emb, nb, E, 1e-12f);
            for (k = 0; k < nb; k++) {
                memcpy(all + (size_t)kept * E, emb + (size_t)k * E, sizeof(float) * (size_t)E);
                /* compact the label rows to the kept images, in order */
                L.score[kept] = L.score[rows[k]];
                if (L.has_hist)
                    memmove(L.hist + (size_t)kept * AES_SCORE_BINS, L.hist + (size_t)rows[k] * AES_SCORE_BINS,
                            sizeof(float) * AES_SCORE_BINS);
                if (L.paths && kept != rows[k]) { char *t = L.paths[kept]; L.paths[kept] = L.paths[rows[k]]; L.paths[rows[k]] = t; }
                if (L.ids) L.ids[kept] = L.ids[rows[k]];
                kept++;
            }
            nb = 0;
            fprintf(stderr, "\rembedded %d / %d images", kept, L.n);
        }
    }
    fputc('\n', stderr);
    if (kept == 0) { cli_fail("embed-dataset", NULL, "no image could be read"); goto done; }
    {
        aes_tensor_out t;
        const char *meta[4];
        memset(&t, 0, sizeof t);
        t.name = "embeddings";
        t.dtype = AES_DTYPE_F32;
        t.ndim = 2;
        t.shape[0] = kept;
        t.shape[1] = E;
        t.data = all;
        meta[0] = "aesalign.model";
        meta[1] = aes_clip_id(m);
        meta[2] = "aesalign.normalized";
        meta[3] = "1";
        snprintf(path, sizeof path, "%s.safetensors", out);
        if (aes_safetensors_write(ctx, path, &t, 1, meta, 2) != AES_OK) { cli_fail("embed-dataset", ctx, "writing"); goto done; }
    }
    snprintf(path, sizeof path, "%s.csv", out);
    fc = open_memstream(&csv_text, &csv_len);   /* formatted in memory, written atomically */
    if (!fc) { cli_fail("embed-dataset", NULL, "%s: out of memory", path); goto done; }
    fprintf(fc, "path,score");
    if (L.has_hist) for (k = 1; k <= AES_SCORE_BINS; k++) fprintf(fc, ",h%d", k);
    fputc('\n', fc);
    for (i = 0; i < kept; i++) {
        if (L.paths) {
            const char *q = L.paths[i];
            fputc('"', fc);
            for (; *q; q++) { if (*q == '"') fputc('"', fc); fputc(*q, fc); }
            fputc('"', fc);
        } else {
            fprintf(fc, "%lld.jpg", (long long)L.ids[i]);
        }
        fprintf(fc, ",%.6f", L.score[i]);
        if (L.has_hist) for (k = 0; k < AES_SCORE_BINS; k++) fprintf(fc, ",%.6g", L.hist[(size_t)i * AES_SCORE_BINS + k]);
        fputc('\n', fc);
    }
    if (fclose(fc) != 0 || aes_write_file_atomic(ctx, path, csv_text, csv_len) != AES_OK) {
        fc = NULL;
        cli_fail("embed-dataset", ctx, "%s: write error", path);
        goto done;
    }
    fc = NULL;
    fprintf(stderr, "wrote %s.safetensors (%d x %d) and %s.csv%s", out, kept, E, out, missing ? "" : "\n");
    if (missing) fprintf(stderr, "; %d images left out\n", missing);
    rc = 0;
done:
    if (fc) fclose(fc);
    free(csv_text);
    aes_free(px); aes_free(emb); aes_free(all); aes_free(rows);
    aes_labels_free(&L);
    aes_clip_free(m);
    aes_ctx_free(ctx);
    return rc;
}
