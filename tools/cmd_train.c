/* aesalign finetune-dpo / make-pairs / train-clip: the training commands.
 *
 *   aesalign make-pairs --index FILE --model M --queries FILE --out PAIRS.tsv
 *                       [--k 48] [--rows 4] [--cols 4] [--stride 2] [--max-pairs N]
 *                       [--expand none|template] [--expansions FILE]
 *       For every query (one per line), retrieve the top k with the (expanded)
 *       query, lay the candidates out in the paper's u x v grid (rows by semantic
 *       rank, columns by the index's aesthetic score) and write the pairs the
 *       2-D order implies (arXiv 2406.09397 Sec. 4.1; see aesalign.h).
 *
 *   aesalign finetune-dpo --model M --pairs FILE --out FILE [--train vision|text|both]
 *                         [--freeze N] [--optimizer sgd|adamw] [--lr X] [--beta X]
 *                         [--label-smoothing X] [--lambda X] [--steps N] [--batch N] ...
 *       Preference fine-tuning with the ranked DPO loss plus the contrastive term.
 *
 *   aesalign train-clip --data FILE --vocab FILE --out M [shape options] ...
 *       Contrastive training from scratch (or from --init M) on image<TAB>caption
 *       lines: how the offline demo makes its tiny CLIP.
 *
 * The two training loops are library calls (aes_dpo_finetune, aes_clip_train
 * in aesalign.h section 9, "Training loops"): here they get their flags, an
 * image loader that also reads JPEG/PNG, and a progress printer.
 */
#include "cli.h"
#include <math.h>
#include <time.h>

/* ---- helpers shared by the three commands ------------------------------------- */

/* The training loops' image loader: any image the CLI reads (PPM/PGM, and
 * JPEG/PNG through stb_image) -> [3, S, S] preprocessed as CLIP does. */
static aes_status load_pixels(void *user, aes_ctx *ctx, const char *path, int S, float *out) {
    aes_image img;
    aes_status st;
    (void)user;
    memset(&img, 0, sizeof img);
    st = (aes_status)cli_load_image(ctx, path, &img);
    if (!st) st = aes_clip_preprocess(ctx, &img, S, out);
    aes_image_free(&img);
    return st;
}

/* Lines of a text file (no empty lines, no '#' comments, CR dropped). */
static char **read_lines(aes_ctx *ctx, const char *path, int *n) {
    void *data;
    size_t len, i, start = 0;
    char **lines = NULL, *text;
    int cap = 0;
    *n = 0;
    if (aes_read_file(ctx, path, &data, &len) != AES_OK) return NULL;
    text = (char *)data;
    for (i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            size_t e = i;
            if (e > start && text[e - 1] == '\r') e--;
            if (e > start && text[start] != '#') {
                char *s = (char *)malloc(e - start + 1);
                if (*n == cap) {
                    char **nl = (char **)realloc(lines, sizeof(char *) * (size_t)(cap = cap ? cap * 2 : 64));
                    if (!nl) break;
                    lines = nl;
                }
                if (!s) break;
                memcpy(s, text + start, e - start);
                s[e - start] = 0;
                lines[(*n)++] = s;
            }
            start = i + 1;
        }
    }
    aes_free(data);
    if (!lines) lines = (char **)calloc(1, sizeof(char *));
    return lines;
}

static void free_lines(char **lines, int n) {
    int i;
    for (i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

/* Token rows [n, L] for n texts (checks the vocabulary fits the model). */
static aes_status tokenize_all(aes_ctx *ctx, const aes_tokenizer *tok, char *const *texts, int n, int L, int vocab,
                               int32_t *ids, const char *cmd) {
    int i;
    if (aes_tokenizer_vocab_size(tok) > vocab) {
        cli_fail(cmd, NULL, "the tokenizer has %d tokens but the model's vocabulary only %d",
                 aes_tokenizer_vocab_size(tok), vocab);
        return AES_ERR_MISMATCH;
    }
    for (i = 0; i < n; i++) {
        aes_status st = aes_tokenizer_encode(ctx, tok, texts[i], strlen(texts[i]), ids + (size_t)i * L, L, NULL);
        if (st) {
            cli_fail(cmd, ctx, "tokenizing '%s'", texts[i]);
            return st;
        }
    }
    return AES_OK;
}

/* ============================================================================
 *  make-pairs
 * ========================================================================= */

static void make_pairs_usage(FILE *f) {
    fprintf(f,
            "usage: aesalign make-pairs --index FILE --model M --queries FILE --out PAIRS.tsv\n"
            "                           [--config FILE] [--vocab FILE] [--act quick_gelu|gelu] [--f16]\n"
            "                           [--k 48] [--rows 4] [--cols 4] [--stride 2] [--max-pairs N]\n"
            "                           [--rows-from reranked|cosine] [--candidates 200] [--aesthetic-weight 0.02]\n"
            "                           [--expand none|template] [--expansions FILE]\n"
            "For each query (one per line) retrieves the top k images of the index with the\n"
            "(expanded) query, orders them in a rows x cols grid (rows: rank in the result list,\n"
            "taking every stride-th candidate; columns: the index's aesthetic score) and writes\n"
            "the pairs the 2-D order implies (arXiv 2406.09397 Sec. 4.1) as TSV:\n"
            "  query<TAB>preferred<TAB>rejected\n"
            "  --rows-from reranked  (default, the paper's) the list is the re-ranked results:\n"
            "                        the top --candidates by cosine re-ranked by\n"
            "                        semantic + W * z(aesthetic), W = --aesthetic-weight\n"
            "  --rows-from cosine    the list is the raw cosine order (no re-ranking)\n"
            CLI_MODEL_HELP);
}

CLI_COMMAND(make_pairs, "build DPO preference pairs from an index and a query list") {
    const char *index_path = NULL, *queries_path = NULL, *out = NULL, *expand = "none", *expansions_path = NULL;
    const char *rows_from = "reranked";
    cli_model_opts mo;
    long k = 48, rows = 4, cols = 4, stride = 2, max_pairs = 0, candidates = 200;
    double weight = 0.02;
    aes_ctx *ctx = NULL;
    aes_index *idx = NULL;
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_expansions *ex = NULL;
    aes_pair_set *set = NULL;
    char **queries = NULL;
    int nq = 0, i, rc = 1, r, total = 0, skipped = 0;
    aes_result *hits = NULL;
    aes_pair_index *pairs = NULL;
    memset(&mo, 0, sizeof mo);
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { make_pairs_usage(stdout); return 0; }
        if ((r = cli_model_opt(argc, argv, &i, &mo)) ||
            (r = cli_opt_str(argc, argv, &i, "--index", &index_path)) ||
            (r = cli_opt_str(argc, argv, &i, "--queries", &queries_path)) ||
            (r = cli_opt_str(argc, argv, &i, "--out", &out)) ||
            (r = cli_opt_str(argc, argv, &i, "--expand", &expand)) ||
            (r = cli_opt_str(argc, argv, &i, "--expansions", &expansions_path)) ||
            (r = cli_opt_int(argc, argv, &i, "--k", &k)) ||
            (r = cli_opt_int(argc, argv, &i, "--rows", &rows)) ||
            (r = cli_opt_int(argc, argv, &i, "--cols", &cols)) ||
            (r = cli_opt_int(argc, argv, &i, "--stride", &stride)) ||
            (r = cli_opt_int(argc, argv, &i, "--max-pairs", &max_pairs)) ||
            (r = cli_opt_str(argc, argv, &i, "--rows-from", &rows_from)) ||
            (r = cli_opt_int(argc, argv, &i, "--candidates", &candidates)) ||
            (r = cli_opt_float(argc, argv, &i, "--aesthetic-weight", &weight))) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "aesalign make-pairs: unknown option '%s'\n", argv[i]);
        make_pairs_usage(stderr);
        return 2;
    }
    if (!index_path || !mo.model || !queries_path || !out) { make_pairs_usage(stderr); return 2; }
    if (k < 2 || k > 100000 || rows < 1 || rows > 64 || cols < 1 || cols > 64 || stride < 1 || max_pairs < 0 ||
        (strcmp(expand, "none") && strcmp(expand, "template")) || candidates < 1 || candidates > 1000000 ||
        !(weight >= 0 && weight < 1e6))
        return cli_fail("make-pairs", NULL, "bad --k/--rows/--cols/--stride/--max-pairs/--expand/--candidates/--aesthetic-weight value");
    if (strcmp(rows_from, "reranked") && strcmp(rows_from, "cosine"))
        return cli_fail("make-pairs", NULL, "--rows-from wants reranked or cosine");
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("make-pairs", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (cli_load_model(ctx, &mo, &model)) { cli_fail("make-pairs", ctx, "loading the model"); goto done; }
    if (aes_index_load(ctx, index_path, &idx)) { cli_fail("make-pairs", ctx, "loading the index"); goto done; }
    if (aes_index_check_model(ctx, idx, aes_clip_id(model))) { cli_fail("make-pairs", ctx, "index and model"); goto done; }
    if (!idx->aesthetic) { cli_fail("make-pairs", NULL, "%s has no aesthetic scores (build it with --head)", index_path); goto done; }
    if (cli_load_tokenizer(ctx, mo.vocab, mo.model, "make-pairs", &tok)) goto done;
    if (expansions_path && aes_expansions_load(ctx, expansions_path, &ex)) { cli_fail("make-pairs", ctx, "expansions"); goto done; }
    queries = read_lines(ctx, queries_path, &nq);
    if (!queries) { cli_fail("make-pairs", ctx, "reading queries"); goto done; }
    if (aes_pair_set_create(ctx, &set)) goto done;
    {
        const aes_clip_config *cc = aes_clip_config_get(model);
        aes_pair_grid_config g;
        aes_retrieve_opts ro;
        int L = cc->context_length, E = cc->embed_dim, cap;
        int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * 2 * L);
        float *qe = (float *)malloc(sizeof(float) * 3 * E);
        g.rows = (int)rows; g.cols = (int)cols; g.stride = (int)stride; g.max_pairs = (int)max_pairs;
        g.rows_from = strcmp(rows_from, "cosine") ? AES_PAIR_ROWS_RERANKED : AES_PAIR_ROWS_COSINE;
        /* the result list: the top k after re-ranking the top `candidates`
         * (the paper's), or the top k by cosine (W = 0: no re-ranking) */
        aes_retrieve_opts_default(&ro);
        ro.k = (int)k;
        ro.candidates = (int)candidates;
        ro.aesthetic_weight = g.rows_from == AES_PAIR_ROWS_COSINE ? 0.0f : (float)weight;
        cap = aes_pair_grid_max(&g);
        hits = (aes_result *)malloc(sizeof *hits * (size_t)k);
        pairs = (aes_pair_index *)malloc(sizeof *pairs * (size_t)(cap > 0 ? cap : 1));
        if (!ids || !qe || !hits || !pairs) { free(ids); free(qe); cli_fail("make-pairs", NULL, "out of memory"); goto done; }
        for (i = 0; i < nq; i++) {
            char expanded[1024];
            const char *exp_text = NULL;
            int nh = 0, np = 0, j, ok = 1;
            /* the retrieval query: original, or combined with its expansion */
            if (ex) exp_text = aes_expansions_find(ex, queries[i]);
            if (!exp_text && !strcmp(expand, "template") &&
                aes_expand_template(ctx, queries[i], expanded, sizeof expanded) == AES_OK)
                exp_text = expanded;
            if (tokenize_all(ctx, tok, &queries[i], 1, L, cc->vocab_size, ids, "make-pairs")) { free(ids); free(qe); goto done; }
            if (aes_clip_encode_text(ctx, model, ids, 1, qe)) { free(ids); free(qe); cli_fail("make-pairs", ctx, "encoding"); goto done; }
            if (exp_text) {
                char *t = (char *)exp_text;
                if (tokenize_all(ctx, tok, &t, 1, L, cc->vocab_size, ids + L, "make-pairs") ||
                    aes_clip_encode_text(ctx, model, ids + L, 1, qe + E) ||
                    aes_query_combine(ctx, qe, qe + E, E, 0.5f, qe + 2 * E)) {
                    free(ids); free(qe); cli_fail("make-pairs", ctx, "expanding '%s'", queries[i]); goto done;
                }
                memcpy(qe, qe + 2 * E, sizeof(float) * E);
            } else {
                double s = 0;
                for (j = 0; j < E; j++) s += (double)qe[j] * qe[j];
                for (j = 0; j < E; j++) qe[j] = (float)(qe[j] / (sqrt(s) + 1e-12));
            }
            if (aes_index_retrieve(ctx, idx, qe, &ro, hits, &nh)) { free(ids); free(qe); cli_fail("make-pairs", ctx, "search"); goto done; }
            for (j = 0; j < nh; j++)
                if (!(hits[j].aesthetic == hits[j].aesthetic)) ok = 0;
            if (!ok) { skipped++; continue; }      /* unscored images: no aesthetic order */
            if (aes_pairs_from_results(ctx, &g, hits, nh, pairs, cap, &np)) { free(ids); free(qe); cli_fail("make-pairs", ctx, "grid"); goto done; }
            for (j = 0; j < np; j++)
                if (aes_pair_set_add(ctx, set, queries[i], aes_index_path(idx, (size_t)hits[pairs[j].preferred].row),
                                     aes_index_path(idx, (size_t)hits[pairs[j].rejected].row), 1.0f)) {
                    free(ids); free(qe); cli_fail("make-pairs", ctx, "adding a pair"); goto done;
                }
            total += np;
        }
        free(ids);
        free(qe);
    }
    if (aes_pair_set_write(ctx, set, out)) { cli_fail("make-pairs", ctx, "writing"); goto done; }
    fprintf(stderr, "make-pairs: %d queries, %d pairs -> %s%s\n", nq, total, out,
            skipped ? " (some queries skipped: unscored candidates)" : "");
    rc = 0;
done:
    free(hits); free(pairs);
    if (queries) free_lines(queries, nq);
    aes_pair_set_free(set);
    aes_expansions_free(ex);
    aes_tokenizer_free(tok);
    aes_index_free(idx);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return rc;
}

/* ============================================================================
 *  finetune-dpo
 * ========================================================================= */

typedef struct ft_opts {
    cli_model_opts m;        /* for_training: no --f16; --act gelu forces GELU */
    const char *pairs, *out, *train, *optimizer, *captions;
    long freeze, steps, batch, pairs_per_step, warmup, seed, save_every, log_every, stop_after;
    double lr, beta, smoothing, lambda, clip_smoothing, weight_decay, clip_norm, momentum;
    int resume, train_logit_scale;
} ft_opts;

static void finetune_usage(FILE *f) {
    fprintf(f,
        "usage: aesalign finetune-dpo --model M --pairs FILE --out FILE [options]\n"
        "Preference fine-tuning with the ranked DPO loss (arXiv 2406.09397 stage 3):\n"
        "  total = L_dpo + lambda * L_contrastive, s(q,i) = exp(logit_scale) cos(q, i),\n"
        "  h = [s(q,w) - s_ref(q,w)] - [s(q,l) - s_ref(q,l)],\n"
        "  L_dpo = -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h).\n"
        "The reference similarities s_ref are computed once, before training, with the\n"
        "initial model and cached: no second model is kept in memory.\n"
        "  --pairs FILE          TSV query<TAB>preferred<TAB>rejected[<TAB>weight]\n"
        "  --train vision|text|both   towers to update (vision)\n"
        "  --freeze N            keep the first N blocks (and the embeddings) fixed (0)\n"
        "  --optimizer adamw|sgd (adamw); --lr X (1e-5); --weight-decay X (0.01 adamw, 0 sgd)\n"
        "  --momentum X (sgd, 0.9); --warmup N (steps/10); --clip-norm X (1.0)\n"
        "  --beta X (0.1)  --label-smoothing X (0.1)  --lambda X (0.5)\n"
        "  --clip-label-smoothing X   label smoothing of the contrastive term (0)\n"
        "  --steps N (100)  --batch N images per step (32)  --pairs-per-step N (batch/2)\n"
        "  --captions FILE       image<TAB>caption lines for the contrastive term; without it\n"
        "                        the term pairs each query of a step with its first preferred image\n"
        "  --train-logit-scale   also update logit_scale\n"
        "  --augment             augment every training image (the paper fine-tunes with\n"
        "                        augmentation): random resized crop (area 0.5-1), flip 0.5,\n"
        "                        colour jitter 0.4, random erasing 0.25; seeded by --seed and the step,\n"
        "                        so --resume sees the same views.  s_ref stays that of the plain image.\n"
        "  --aug-crop X          smallest crop area share (0: no crop)   --aug-flip P\n"
        "  --aug-jitter X        brightness/contrast/saturation strength  --aug-erase P\n"
        "                        (each alone turns that augmentation on, or overrides --augment's value)\n"
        CLI_MODEL_TRAIN_HELP
        "  --seed N (1)  --log-every N (1)  --save-every N (0)  --resume\n"
        "  --stop-after N        save and stop after step N (as if interrupted; --resume goes on)\n"
        "Writes FILE (safetensors, same tensor names as the input) and FILE.optim (optimizer\n"
        "state); --resume continues from both.\n");
}

/* The progress printer (and --stop-after) of a run. */
typedef struct ft_run {
    const ft_opts *o;
    float lr;
    int warned_no_match;     /* the contrastive term had no match in some step */
    double t_start;
} ft_run;

static int ft_progress(void *user, const aes_train_progress *p) {
    ft_run *r = (ft_run *)user;
    const ft_opts *o = r->o;
    if (p->event == AES_TRAIN_START) {
        fprintf(stderr, "finetune-dpo: training %zu of %zu parameters (%s tower%s, %ld blocks frozen), %s lr %.3g\n",
                p->trainable, p->nparams, o->train, strcmp(o->train, "both") ? "" : "s", o->freeze, o->optimizer,
                (double)r->lr);
        if (p->resumed) fprintf(stderr, "finetune-dpo: resumed from %s at step %ld\n", o->out, p->start_step);
        r->t_start = cli_now();
    } else if (p->event == AES_TRAIN_STEP) {
        if (p->nmatched == 0 && o->lambda > 0 && !r->warned_no_match) {   /* say it once, not every step */
            fprintf(stderr, "finetune-dpo: note: step %ld has fewer than 2 query/image matches, so no contrastive "
                    "term; give --captions (image<TAB>caption) to keep it in every step\n", p->step);
            r->warned_no_match = 1;
        }
        if (p->step % o->log_every == 0 || p->step == o->steps)
            fprintf(stderr, "step %4ld/%ld  loss %.4f  pref-acc %.3f  margin %+.4f  clip %.4f  lr %.3e  %.1f img/s\n",
                    p->step, o->steps, p->stats.loss, p->stats.dpo.accuracy, p->stats.dpo.margin, p->stats.clip_loss,
                    (double)p->lr, p->nimages / p->stats.seconds);
    } else {
        return 0;
    }
    return o->stop_after > 0 && p->step >= o->stop_after;   /* as if interrupted: saved, --resume goes on */
}

CLI_COMMAND(finetune_dpo, "preference fine-tuning with the ranked DPO loss, arXiv 2406.09397") {
    ft_opts o;
    ft_run run;
    aes_ctx *ctx = NULL;
    aes_clip_trainer *tr = NULL;
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_pair_set *set = NULL;
    aes_train_options to = aes_train_options_default();
    aes_dpo_finetune_config cfg = aes_dpo_finetune_config_default();
    aes_caption_list caps;
    aes_optim_config *oc = &cfg.optim;
    const aes_clip_config *A;
    char optim_path[4200], **cap_lines = NULL, **cap_txt = NULL;
    int i, r, rc = 1, ncap = 0, augment = 0;
    double aug_crop = -1, aug_flip = -1, aug_jitter = -1, aug_erase = -1;

    memset(&o, 0, sizeof o);
    memset(&run, 0, sizeof run);
    memset(&caps, 0, sizeof caps);
    o.m.for_training = 1;
    o.train = "vision"; o.optimizer = "adamw"; o.steps = 100; o.batch = 32; o.warmup = -1; o.seed = 1;
    o.log_every = 1; o.lr = -1; o.weight_decay = -1; o.momentum = 0.9; o.clip_norm = 1.0;
    o.beta = cfg.loss.beta; o.smoothing = cfg.loss.label_smoothing; o.lambda = cfg.loss.lambda; o.clip_smoothing = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { finetune_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--resume")) { o.resume = 1; continue; }
        if (!strcmp(argv[i], "--train-logit-scale")) { o.train_logit_scale = 1; continue; }
        if (!strcmp(argv[i], "--augment")) { augment = 1; continue; }
        if ((r = cli_model_opt(argc, argv, &i, &o.m)) ||
            (r = cli_opt_float(argc, argv, &i, "--aug-crop", &aug_crop)) ||
            (r = cli_opt_float(argc, argv, &i, "--aug-flip", &aug_flip)) ||
            (r = cli_opt_float(argc, argv, &i, "--aug-jitter", &aug_jitter)) ||
            (r = cli_opt_float(argc, argv, &i, "--aug-erase", &aug_erase)) ||
            (r = cli_opt_str(argc, argv, &i, "--pairs", &o.pairs)) ||
            (r = cli_opt_str(argc, argv, &i, "--out", &o.out)) ||
            (r = cli_opt_str(argc, argv, &i, "--train", &o.train)) ||
            (r = cli_opt_str(argc, argv, &i, "--optimizer", &o.optimizer)) ||
            (r = cli_opt_str(argc, argv, &i, "--captions", &o.captions)) ||
            (r = cli_opt_int(argc, argv, &i, "--freeze", &o.freeze)) ||
            (r = cli_opt_int(argc, argv, &i, "--steps", &o.steps)) ||
            (r = cli_opt_int(argc, argv, &i, "--batch", &o.batch)) ||
            (r = cli_opt_int(argc, argv, &i, "--pairs-per-step", &o.pairs_per_step)) ||
            (r = cli_opt_int(argc, argv, &i, "--warmup", &o.warmup)) ||
            (r = cli_opt_int(argc, argv, &i, "--seed", &o.seed)) ||
            (r = cli_opt_int(argc, argv, &i, "--save-every", &o.save_every)) ||
            (r = cli_opt_int(argc, argv, &i, "--log-every", &o.log_every)) ||
            (r = cli_opt_int(argc, argv, &i, "--stop-after", &o.stop_after)) ||
            (r = cli_opt_float(argc, argv, &i, "--lr", &o.lr)) ||
            (r = cli_opt_float(argc, argv, &i, "--beta", &o.beta)) ||
            (r = cli_opt_float(argc, argv, &i, "--label-smoothing", &o.smoothing)) ||
            (r = cli_opt_float(argc, argv, &i, "--lambda", &o.lambda)) ||
            (r = cli_opt_float(argc, argv, &i, "--clip-label-smoothing", &o.clip_smoothing)) ||
            (r = cli_opt_float(argc, argv, &i, "--weight-decay", &o.weight_decay)) ||
            (r = cli_opt_float(argc, argv, &i, "--momentum", &o.momentum)) ||
            (r = cli_opt_float(argc, argv, &i, "--clip-norm", &o.clip_norm))) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "aesalign finetune-dpo: unknown option '%s'\n", argv[i]);
        finetune_usage(stderr);
        return 2;
    }
    if (!o.m.model || !o.pairs || !o.out) { finetune_usage(stderr); return 2; }
    aes_augment_config_default(&cfg.augment, augment);
    if (aug_crop >= 0) { cfg.augment.crop_scale = (float)aug_crop; if (!augment) cfg.augment.crop_ratio = 4.0f / 3.0f; }
    if (aug_flip >= 0) cfg.augment.flip = (float)aug_flip;
    if (aug_jitter >= 0) cfg.augment.brightness = cfg.augment.contrast = cfg.augment.saturation = (float)aug_jitter;
    if (aug_erase >= 0) cfg.augment.erase = (float)aug_erase;
    if ((aug_crop != -1 && !(aug_crop >= 0 && aug_crop <= 1)) || (aug_flip != -1 && !(aug_flip >= 0 && aug_flip <= 1)) ||
        (aug_jitter != -1 && !(aug_jitter >= 0 && aug_jitter <= 10)) || (aug_erase != -1 && !(aug_erase >= 0 && aug_erase <= 1)))
        return cli_fail("finetune-dpo", NULL, "--aug-crop, --aug-flip and --aug-erase want 0..1, --aug-jitter 0..10");
    if (strcmp(o.train, "vision") && strcmp(o.train, "text") && strcmp(o.train, "both"))
        return cli_fail("finetune-dpo", NULL, "--train wants vision, text or both, not '%s'", o.train);
    if (strcmp(o.optimizer, "adamw") && strcmp(o.optimizer, "sgd"))
        return cli_fail("finetune-dpo", NULL, "--optimizer wants adamw or sgd, not '%s'", o.optimizer);
    if (o.steps < 1 || o.batch < 2 || o.batch > 4096 || o.freeze < 0 || o.log_every < 1 || o.save_every < 0)
        return cli_fail("finetune-dpo", NULL, "bad --steps/--batch/--freeze/--log-every/--save-every");
    if (o.pairs_per_step <= 0) o.pairs_per_step = o.batch / 2 > 0 ? o.batch / 2 : 1;
    snprintf(optim_path, sizeof optim_path, "%s.optim", o.out);

    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("finetune-dpo", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (aes_pair_set_create(ctx, &set) || aes_pair_set_read(ctx, set, o.pairs)) {
        cli_fail("finetune-dpo", ctx, "reading pairs");
        goto done;
    }
    if (set->npairs == 0) { cli_fail("finetune-dpo", NULL, "%s holds no pairs", o.pairs); goto done; }
    if (o.captions) {
        cap_lines = read_lines(ctx, o.captions, &ncap);
        if (!cap_lines) { cli_fail("finetune-dpo", ctx, "reading captions"); goto done; }
        cap_txt = (char **)calloc((size_t)ncap + 1, sizeof(char *));
        if (!cap_txt) { cli_fail("finetune-dpo", NULL, "out of memory"); goto done; }
        for (i = 0; i < ncap; i++) {
            char *tab = strchr(cap_lines[i], '\t');
            if (!tab) { cli_fail("finetune-dpo", NULL, "%s:%d: expected image<TAB>caption", o.captions, i + 1); goto done; }
            *tab = 0;
            cap_txt[i] = tab + 1;
        }
        caps.images = (const char *const *)cap_lines;
        caps.texts = (const char *const *)cap_txt;
        caps.n = ncap;
    }
    to.train_vision = strcmp(o.train, "text") != 0;
    to.train_text = strcmp(o.train, "vision") != 0;
    to.train_logit_scale = o.train_logit_scale;
    to.freeze_vision_blocks = to.freeze_text_blocks = (int)o.freeze;
    to.max_images = (int)o.batch;
    to.max_texts = (int)o.batch;
    if (cli_load_model(ctx, &o.m, &model) || aes_clip_trainer_create(ctx, model, &to, &tr)) {
        cli_fail("finetune-dpo", ctx, "loading the model");
        goto done;
    }
    A = aes_clip_config_get(model);
    if (!A->has_vision || !A->has_text) { cli_fail("finetune-dpo", NULL, "the model needs both towers"); goto done; }
    if (cli_load_tokenizer(ctx, o.m.vocab, o.m.model, "finetune-dpo", &tok)) goto done;

    /* the run: aes_dpo_finetune does the reference pass, the sampling, the
     * steps and the checkpoints (FILE and FILE.optim); we print progress */
    *oc = aes_optim_config_default(strcmp(o.optimizer, "sgd") ? AES_OPTIM_ADAMW : AES_OPTIM_SGD);
    if (o.lr > 0) oc->lr = (float)o.lr;
    if (o.weight_decay >= 0) oc->weight_decay = (float)o.weight_decay;
    if (oc->kind == AES_OPTIM_SGD) oc->momentum = (float)o.momentum;
    oc->clip_norm = (float)o.clip_norm;
    oc->warmup_steps = o.warmup >= 0 ? (int)o.warmup : (int)(o.steps / 10);
    oc->total_steps = (int)o.steps;
    oc->min_lr_frac = 0.1f;
    cfg.steps = o.steps;
    cfg.batch = (int)o.batch;
    cfg.pairs_per_step = (int)o.pairs_per_step;
    cfg.seed = (uint64_t)o.seed;
    cfg.loss.beta = (float)o.beta;
    cfg.loss.label_smoothing = (float)o.smoothing;
    cfg.loss.lambda = (float)o.lambda;
    cfg.loss.clip_label_smoothing = (float)o.clip_smoothing;
    cfg.save_every = o.save_every;
    cfg.checkpoint = o.out;
    cfg.resume = o.resume;
    cfg.load_image = load_pixels;
    cfg.progress = ft_progress;
    cfg.user = &run;
    run.o = &o;
    run.lr = oc->lr;
    fprintf(stderr, "finetune-dpo: %d pairs, %d queries, %d images; computing reference similarities\n",
            set->npairs, set->nqueries, set->npaths);
    if (aes_dpo_finetune(ctx, tr, NULL, tok, set, ncap ? &caps : NULL, &cfg, NULL)) {
        cli_fail("finetune-dpo", NULL, "%s", aes_last_error(ctx));
        goto done;
    }
    fprintf(stderr, "finetune-dpo: wrote %s (and %s) after %.1f s\n", o.out, optim_path, cli_now() - run.t_start);
    rc = 0;
done:
    if (cap_lines) free_lines(cap_lines, ncap);
    free(cap_txt);
    aes_pair_set_free(set);
    aes_tokenizer_free(tok);
    aes_clip_trainer_free(tr);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return rc;
}

/* ============================================================================
 *  train-clip
 * ========================================================================= */

static void train_clip_usage(FILE *f) {
    fprintf(f,
        "usage: aesalign train-clip --data FILE --vocab FILE --out M [options]\n"
        "Contrastive training (CLIP, Radford et al. 2021) on image<TAB>caption lines,\n"
        "from scratch or from --init M.  All images are preprocessed once and kept in memory.\n"
        "  shape (new models): --image-size 64 --patch 8 --width 128 --layers 4 --heads 4 --mlp 4*width\n"
        "                      --text-width 128 --text-layers 4 --text-heads 4 --context 32 --embed 128\n"
        "                      --act gelu|quick_gelu (quick_gelu) --layout hf|openai (hf)\n"
        "  --steps N (1000)  --batch N (64)  --lr X (5e-4)  --warmup N (steps/20)\n"
        "  --weight-decay X (0.1)  --label-smoothing X (0)  --seed N (1)  --log-every N (50)\n"
        "  --group G (1): shuffle runs of G consecutive lines, which so share a batch (hard\n"
        "                 negatives: lines made to differ in one attribute); G divides the\n"
        "                 number of lines and --batch\n"
        "  --resume (continue from M and M.optim)\n"
        "Writes M (safetensors) and a Hugging Face config.json beside it (heads, activation).\n");
}

static aes_status write_hf_config(aes_ctx *ctx, const aes_clip_config *a, const char *model_path) {
    char path[4200], text[2048];
    const char *slash = strrchr(model_path, '/');
    int dlen = slash ? (int)(slash - model_path) + 1 : 0, n;
    const char *act = a->act == AES_ACT_GELU ? "gelu" : "quick_gelu";
    snprintf(path, sizeof path, "%.*sconfig.json", dlen, model_path);
    n = snprintf(text, sizeof text,
                 "{\n  \"architectures\": [\"CLIPModel\"],\n  \"model_type\": \"clip\",\n  \"projection_dim\": %d,\n"
                 "  \"text_config\": {\"hidden_act\": \"%s\", \"layer_norm_eps\": %g, \"hidden_size\": %d,"
                 " \"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_hidden_layers\": %d,"
                 " \"max_position_embeddings\": %d, \"vocab_size\": %d, \"projection_dim\": %d},\n"
                 "  \"vision_config\": {\"hidden_act\": \"%s\", \"layer_norm_eps\": %g, \"hidden_size\": %d,"
                 " \"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_hidden_layers\": %d,"
                 " \"image_size\": %d, \"patch_size\": %d, \"num_channels\": 3, \"projection_dim\": %d}\n}\n",
                 a->embed_dim, act, (double)a->ln_eps, a->text_width, a->text_mlp, a->text_heads, a->text_layers,
                 a->context_length, a->vocab_size, a->embed_dim, act, (double)a->ln_eps, a->vision_width,
                 a->vision_mlp, a->vision_heads, a->vision_layers, a->image_size, a->patch_size, a->embed_dim);
    return aes_write_file_atomic(ctx, path, text, (size_t)n);
}

/* The progress printer of train-clip. */
typedef struct tc_run {
    long steps, log_every, batch;
    int n;
    double t_start;
} tc_run;

static int tc_progress(void *user, const aes_train_progress *p) {
    tc_run *r = (tc_run *)user;
    if (p->event == AES_TRAIN_START) {
        fprintf(stderr, "train-clip: %d image/caption pairs, %zu parameters, batch %ld, %ld steps\n", r->n, p->nparams,
                r->batch, r->steps);
        if (p->resumed) fprintf(stderr, "train-clip: resumed at step %ld\n", p->start_step);
        r->t_start = cli_now();
    } else if (p->event == AES_TRAIN_STEP && (p->step % r->log_every == 0 || p->step == r->steps)) {
        fprintf(stderr, "step %5ld/%ld  loss %.4f  acc %.3f  logit_scale %.3f  lr %.3e  %.1f img/s\n", p->step,
                r->steps, p->stats.clip_loss, p->stats.clip_acc, p->logit_scale, (double)p->lr,
                p->nimages / p->stats.seconds);
    }
    return 0;
}

CLI_COMMAND(train_clip, "contrastive CLIP training from image/caption lists, for the offline demo") {
    const char *data = NULL, *vocab = NULL, *out = NULL, *init = NULL, *act = "quick_gelu", *layout = "hf";
    long image_size = 64, patch = 8, width = 128, layers = 4, heads = 4, mlp = 0, twidth = 128, tlayers = 4;
    long theads = 4, tmlp = 0, context = 32, embed = 128, steps = 1000, batch = 64, warmup = -1, seed = 1;
    long log_every = 50, group = 1;
    double lr = 5e-4, wd = 0.1, smoothing = 0;
    int resume = 0, i, r, rc = 1, n = 0;
    aes_ctx *ctx = NULL;
    aes_tokenizer *tok = NULL;
    aes_clip_trainer *tr = NULL;
    aes_clip *model = NULL;
    aes_clip_train_config cfg = aes_clip_train_config_default();
    aes_caption_list list;
    aes_train_options to = aes_train_options_default();
    tc_run run;
    char **lines = NULL, **caps = NULL, optim_path[4200];
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { train_clip_usage(stdout); return 0; }
        if (!strcmp(argv[i], "--resume")) { resume = 1; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--data", &data)) ||
            (r = cli_opt_str(argc, argv, &i, "--vocab", &vocab)) ||
            (r = cli_opt_str(argc, argv, &i, "--out", &out)) ||
            (r = cli_opt_str(argc, argv, &i, "--init", &init)) ||
            (r = cli_opt_str(argc, argv, &i, "--act", &act)) ||
            (r = cli_opt_str(argc, argv, &i, "--layout", &layout)) ||
            (r = cli_opt_int(argc, argv, &i, "--image-size", &image_size)) ||
            (r = cli_opt_int(argc, argv, &i, "--patch", &patch)) ||
            (r = cli_opt_int(argc, argv, &i, "--width", &width)) ||
            (r = cli_opt_int(argc, argv, &i, "--layers", &layers)) ||
            (r = cli_opt_int(argc, argv, &i, "--heads", &heads)) ||
            (r = cli_opt_int(argc, argv, &i, "--mlp", &mlp)) ||
            (r = cli_opt_int(argc, argv, &i, "--text-width", &twidth)) ||
            (r = cli_opt_int(argc, argv, &i, "--text-layers", &tlayers)) ||
            (r = cli_opt_int(argc, argv, &i, "--text-heads", &theads)) ||
            (r = cli_opt_int(argc, argv, &i, "--text-mlp", &tmlp)) ||
            (r = cli_opt_int(argc, argv, &i, "--context", &context)) ||
            (r = cli_opt_int(argc, argv, &i, "--embed", &embed)) ||
            (r = cli_opt_int(argc, argv, &i, "--steps", &steps)) ||
            (r = cli_opt_int(argc, argv, &i, "--batch", &batch)) ||
            (r = cli_opt_int(argc, argv, &i, "--warmup", &warmup)) ||
            (r = cli_opt_int(argc, argv, &i, "--seed", &seed)) ||
            (r = cli_opt_int(argc, argv, &i, "--log-every", &log_every)) ||
            (r = cli_opt_int(argc, argv, &i, "--group", &group)) ||
            (r = cli_opt_float(argc, argv, &i, "--lr", &lr)) ||
            (r = cli_opt_float(argc, argv, &i, "--weight-decay", &wd)) ||
            (r = cli_opt_float(argc, argv, &i, "--label-smoothing", &smoothing))) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "aesalign train-clip: unknown option '%s'\n", argv[i]);
        train_clip_usage(stderr);
        return 2;
    }
    if (!data || !out) { train_clip_usage(stderr); return 2; }
    if (steps < 1 || batch < 2 || batch > 4096 || log_every < 1 || group < 1 || group > batch || (strcmp(act, "gelu") && strcmp(act, "quick_gelu")) ||
        (strcmp(layout, "hf") && strcmp(layout, "openai")))
        return cli_fail("train-clip", NULL, "bad --steps/--batch/--log-every/--group/--act/--layout");
    snprintf(optim_path, sizeof optim_path, "%s.optim", out);
    ctx = aes_ctx_create();
    if (!ctx) return cli_fail("train-clip", NULL, "out of memory");
    aes_threads_set(ctx, cli_threads());
    if (cli_load_tokenizer(ctx, vocab, init, "train-clip", &tok)) goto done;
    to.train_vision = to.train_text = to.train_logit_scale = 1;
    to.max_images = to.max_texts = (int)batch;
    if (resume && cli_file_exists(out)) init = out;
    if (init) {
        cli_model_opts mo;    /* --act gelu forces GELU, else the file's own activation */
        memset(&mo, 0, sizeof mo);
        mo.model = init;
        mo.act = act;
        mo.for_training = 1;
        if (cli_load_model(ctx, &mo, &model) || aes_clip_trainer_create(ctx, model, &to, &tr)) {
            cli_fail("train-clip", ctx, "loading %s", init);
            goto done;
        }
    } else {
        aes_clip_config a;
        memset(&a, 0, sizeof a);
        a.has_vision = a.has_text = 1;
        a.image_size = (int)image_size; a.patch_size = (int)patch; a.vision_width = (int)width;
        a.vision_layers = (int)layers; a.vision_heads = (int)heads; a.vision_mlp = (int)(mlp > 0 ? mlp : 4 * width);
        a.context_length = (int)context; a.vocab_size = aes_tokenizer_vocab_size(tok); a.text_width = (int)twidth;
        a.text_layers = (int)tlayers; a.text_heads = (int)theads; a.text_mlp = (int)(tmlp > 0 ? tmlp : 4 * twidth);
        a.embed_dim = (int)embed; a.act = strcmp(act, "gelu") ? AES_ACT_QUICK_GELU : AES_ACT_GELU; a.ln_eps = 1e-5f;
        a.layout = strcmp(layout, "openai") ? AES_LAYOUT_HF : AES_LAYOUT_OPENAI;
        if (aes_clip_create_random(ctx, &a, (uint64_t)seed, &model) || aes_clip_trainer_create(ctx, model, &to, &tr)) {
            cli_fail("train-clip", ctx, "model shape");
            goto done;
        }
    }
    lines = read_lines(ctx, data, &n);
    if (!lines || n < 2) { cli_fail("train-clip", ctx, "%s: need at least 2 image<TAB>caption lines", data); goto done; }
    caps = (char **)calloc((size_t)n, sizeof(char *));
    if (!caps) { cli_fail("train-clip", NULL, "out of memory"); goto done; }
    for (i = 0; i < n; i++) {
        char *tab = strchr(lines[i], '\t');
        if (!tab) { cli_fail("train-clip", NULL, "%s:%d: expected image<TAB>caption", data, i + 1); goto done; }
        *tab = 0;
        caps[i] = tab + 1;
    }
    /* the run: aes_clip_train keeps every image preprocessed in memory,
     * samples batches, steps, and writes M and M.optim; we print progress */
    list.images = (const char *const *)lines;
    list.texts = (const char *const *)caps;
    list.n = n;
    cfg.steps = steps;
    cfg.batch = (int)batch;
    cfg.seed = (uint64_t)seed;
    cfg.label_smoothing = (float)smoothing;
    cfg.group = (int)group;
    cfg.optim.lr = (float)lr;
    cfg.optim.weight_decay = (float)wd;
    cfg.optim.warmup_steps = warmup >= 0 ? (int)warmup : (int)(steps / 20);
    cfg.optim.total_steps = (int)steps;
    cfg.cache_images = 1;
    cfg.checkpoint = out;
    cfg.resume = resume;
    cfg.load_image = load_pixels;
    cfg.progress = tc_progress;
    cfg.user = &run;
    memset(&run, 0, sizeof run);
    run.steps = steps;
    run.log_every = log_every;
    run.batch = batch;
    run.n = n;
    if (aes_clip_train(ctx, tr, NULL, tok, &list, &cfg, NULL)) {
        cli_fail("train-clip", NULL, "%s", aes_last_error(ctx));
        goto done;
    }
    if (write_hf_config(ctx, aes_clip_config_get(model), out)) {
        cli_fail("train-clip", ctx, "saving");
        goto done;
    }
    fprintf(stderr, "train-clip: wrote %s, %s and config.json beside it (%.1f s)\n", out, optim_path,
            cli_now() - run.t_start);
    rc = 0;
done:
    if (lines) free_lines(lines, n);
    free(caps);
    aes_clip_trainer_free(tr);
    aes_clip_free(model);
    aes_tokenizer_free(tok);
    aes_ctx_free(ctx);
    return rc;
}
