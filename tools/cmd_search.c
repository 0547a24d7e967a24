/* aesalign search / eval: aesthetics-aware retrieval over an index
 * (aesalign.h; arXiv 2406.09397 stages 1-2) and its metrics (the eval
 * format is world_eval_tsv in tools/world.h).
 *
 *   aesalign search --index FILE --model M [--head H] [--k 20] [--candidates 200]
 *                   [--aesthetic-weight W] [--expand none|template|file]
 *                   [--expansions FILE] [--int8] [--html FILE] "query"...
 *   aesalign search ... --queries FILE        (lines "QID<TAB>query")
 *   aesalign eval [--k 10] FILE.tsv
 *
 * search prints a TSV: a header line, then one line per result:
 *     rank  path  semantic  aesthetic  final
 * (several queries: a "# query: ..." line before each list).  With
 * --queries the output is the `result` records `aesalign eval` reads:
 *     result  QID  rank  path  final  aesthetic
 * --html writes a page of thumbnails (paths relative to the page, nothing
 * fetched from the network) that a person can open to judge the results.
 */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700       /* realpath */
#endif
#include "cli.h"
#include "world.h"
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ---- one query ---------------------------------------------------------------- */

typedef struct search_opts {
    cli_model_opts m;
    const char *index, *head, *expand, *expansions, *html, *queries;
    long k, candidates;
    double weight, expand_weight;
    int int8;
} search_opts;

typedef struct query_run {
    char *qid, *text, *expanded;       /* expanded: NULL when not expanded */
    aes_result *res;
    int nres;
} query_run;

/* The text embedding of one string. */
static aes_status embed_text(aes_ctx *ctx, const aes_clip *model, const aes_tokenizer *tok, const char *text,
                             float *out) {
    int L = aes_clip_config_get(model)->context_length;
    int32_t *ids = (int32_t *)calloc((size_t)L, sizeof(int32_t));
    aes_status st;
    if (!ids) return AES_ERR_NOMEM;
    st = aes_tokenizer_encode(ctx, tok, text, strlen(text), ids, L, NULL);
    if (st == AES_OK) st = aes_clip_encode_text(ctx, model, ids, 1, out);
    free(ids);
    return st;
}

/* ---- the HTML page --------------------------------------------------------------- */

/* Path of `target` relative to the folder `base` (both absolute, resolved):
 * "../" for every folder of base below their common prefix, then the rest
 * of target. */
static void relative_path(const char *base, const char *target, char *out, size_t cap) {
    size_t i = 0, common = 0, len = 0;
    const char *p;
    while (base[i] && target[i] && base[i] == target[i]) {
        i++;
        if (base[i - 1] == '/') common = i;
    }
    if (!base[i] && (target[i] == '/' || !target[i])) common = i + (target[i] == '/' ? 1 : 0);
    out[0] = 0;
    for (p = base + common; *p;) {          /* one ".." per remaining folder of base */
        const char *e = strchr(p, '/');
        if (e != p && len + 4 < cap) { memcpy(out + len, "../", 4); len += 3; }
        if (!e) break;
        p = e + 1;
    }
    snprintf(out + len, cap - len, "%s", target + common);
}

static void html_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A URL path: bytes outside [A-Za-z0-9/._~-] percent-encoded. */
static void url_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '.' ||
            c == '_' || c == '~' || c == '-')
            fputc(c, f);
        else
            fprintf(f, "%%%02X", c);
    }
}

static aes_status write_html(aes_ctx *ctx, const char *html, const aes_index *idx, const query_run *runs, int nruns,
                             const search_opts *o) {
    char dir[PATH_MAX], abs_img[PATH_MAX], rel[3 * PATH_MAX], *slash, *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    aes_status st;
    int q, r;
    if (!f) return AES_ERR_NOMEM;
    {   /* create the page's folder (and its parents) when missing */
        char d[PATH_MAX];
        size_t k;
        snprintf(d, sizeof d, "%s", html);
        for (k = 1; d[k]; k++)
            if (d[k] == '/') { d[k] = 0; mkdir(d, 0777); d[k] = '/'; }
    }
    /* the page's folder, resolved (the page itself may not exist yet) */
    snprintf(rel, sizeof rel, "%s", html);
    slash = strrchr(rel, '/');
    if (slash) *slash = 0; else snprintf(rel, sizeof rel, ".");
    if (!realpath(slash && rel[0] ? rel : (slash ? "/" : "."), dir)) snprintf(dir, sizeof dir, ".");
    fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>aesalign search</title>\n<style>\n"
               "body{font-family:sans-serif;margin:1em;background:#fafafa}\n"
               "h2{margin:1.2em 0 .2em}.exp{color:#555;margin:0 0 .6em}\n"
               ".grid{display:flex;flex-wrap:wrap;gap:10px}\n"
               ".card{width:200px;background:#fff;border:1px solid #ddd;padding:4px;font-size:12px}\n"
               ".card img{width:200px;height:200px;object-fit:cover;display:block}\n"
               ".path{overflow-wrap:anywhere;color:#333}.num{color:#666}\n"
               "</style></head><body>\n");
    fprintf(f, "<p class=\"exp\">index: ");
    html_escape(f, o->index);
    fprintf(f, " &middot; %zu images &middot; k %ld &middot; candidates %ld &middot; aesthetic weight %g%s</p>\n",
            idx->count, o->k, o->candidates, o->weight, o->int8 ? " &middot; int8" : "");
    for (q = 0; q < nruns; q++) {
        fprintf(f, "<h2>");
        html_escape(f, runs[q].text);
        fprintf(f, "</h2>\n");
        if (runs[q].expanded) {
            fprintf(f, "<p class=\"exp\">expanded: ");
            html_escape(f, runs[q].expanded);
            fprintf(f, "</p>\n");
        }
        fprintf(f, "<div class=\"grid\">\n");
        for (r = 0; r < runs[q].nres; r++) {
            const aes_result *x = &runs[q].res[r];
            const char *p = aes_index_path(idx, (size_t)x->row);
            if (p[0] == '/') snprintf(abs_img, sizeof abs_img, "%s", p);
            else if (!realpath(p, abs_img)) snprintf(abs_img, sizeof abs_img, "%s", p);
            if (abs_img[0] == '/' && dir[0] == '/') relative_path(dir, abs_img, rel, sizeof rel);
            else snprintf(rel, sizeof rel, "%s", p);
            fprintf(f, "<div class=\"card\"><a href=\"");
            url_escape(f, rel);
            fprintf(f, "\"><img loading=\"lazy\" src=\"");
            url_escape(f, rel);
            fprintf(f, "\" alt=\"\"></a><div><b>#%d</b> <span class=\"num\">final %.4f &middot; sem %.4f &middot; aes %.2f</span></div>"
                       "<div class=\"path\">", r + 1, x->final, x->semantic, x->aesthetic);
            html_escape(f, p);
            fprintf(f, "</div></div>\n");
        }
        fprintf(f, "</div>\n");
    }
    fprintf(f, "</body></html>\n");
    fclose(f);
    st = aes_write_file_atomic(ctx, html, buf, len);
    free(buf);
    return st;
}

/* ---- search ---------------------------------------------------------------------- */

static void search_usage(void) {
    printf("usage: aesalign search --index FILE --model M [options] \"query\"...\n"
           "       aesalign search --index FILE --model M [options] --queries FILE\n"
           "  --head H               score with this head instead of the index's stored scores\n"
           "  --k N                  results (default %d)\n"
           "  --candidates N         semantic candidates re-ranked (default %d)\n"
           "  --aesthetic-weight W   final = semantic + W * z(aesthetic) (default %g; 0 = plain retrieval)\n"
           "  --expand MODE          none (default), template (offline aesthetic expectations),\n"
           "                         file (rephrasings from --expansions FILE; see tools/rephrase.py)\n"
           "  --expansions FILE      TSV cache query<TAB>rephrased (implies --expand file)\n"
           "  --expand-weight A      weight of the expanded query's embedding (default 0.5)\n"
           "  --int8                 scan int8 vectors (fp32 re-scores the best when stored)\n"
           "  --html FILE            also write a page of thumbnails\n"
           "  --queries FILE         lines QID<TAB>query; prints `result` records for `aesalign eval`\n"
           CLI_MODEL_HELP,
           AES_RETRIEVE_DEFAULT_K, AES_RERANK_DEFAULT_CANDIDATES, (double)AES_RERANK_DEFAULT_WEIGHT);
}

/* Reads "QID<TAB>query" lines (a line without a tab: QID = line number). */
static int read_queries(aes_ctx *ctx, const char *path, query_run **runs, int *n) {
    char *buf = NULL, *p, *line;
    size_t len = 0;
    int cap = 0, ln = 0;
    if (aes_read_file(ctx, path, (void **)&buf, &len) != AES_OK) return 0;
    for (p = buf; p && *p; p = line) {
        char *eol = strchr(p, '\n'), *tab, *q;
        line = eol ? eol + 1 : NULL;
        if (eol) *eol = 0;
        if (eol && eol > p && eol[-1] == '\r') eol[-1] = 0;
        ln++;
        if (!*p || *p == '#') continue;
        if (*n == cap) {
            query_run *r;
            cap = cap ? cap * 2 : 16;
            if (!(r = (query_run *)realloc(*runs, (size_t)cap * sizeof *r))) { aes_free(buf); return 0; }
            *runs = r;
        }
        memset(&(*runs)[*n], 0, sizeof **runs);
        tab = strchr(p, '\t');
        q = tab ? tab + 1 : p;
        if (tab) *tab = 0;
        (*runs)[*n].qid = (char *)malloc(tab ? strlen(p) + 1 : 16);
        (*runs)[*n].text = (char *)malloc(strlen(q) + 1);
        if (!(*runs)[*n].qid || !(*runs)[*n].text) { aes_free(buf); return 0; }
        if (tab) strcpy((*runs)[*n].qid, p); else snprintf((*runs)[*n].qid, 16, "%d", ln);
        strcpy((*runs)[*n].text, q);
        (*n)++;
    }
    aes_free(buf);
    return 1;
}

CLI_COMMAND(search, "aesthetics-aware image search: query expansion, retrieval, aesthetic re-ranking") {
    const char *cmd = "search";
    search_opts o;
    aes_ctx *ctx = aes_ctx_create();
    aes_index *idx = NULL;
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_expansions *ex = NULL;
    query_run *runs = NULL;
    float *e0 = NULL, *e1 = NULL, *qv = NULL;
    int nruns = 0, rc = 1, i, q, E, scored = 0;
    aes_retrieve_opts ro;
    size_t r;
    memset(&o, 0, sizeof o);
    o.k = AES_RETRIEVE_DEFAULT_K;
    o.candidates = AES_RERANK_DEFAULT_CANDIDATES;
    o.weight = AES_RERANK_DEFAULT_WEIGHT;
    o.expand_weight = 0.5;
    if (!ctx) return cli_fail(cmd, NULL, "out of memory");
    for (i = 1; i < argc; i++) {
        int rr;
        if ((rr = cli_model_opt(argc, argv, &i, &o.m))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--index", &o.index))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--head", &o.head))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--expand", &o.expand))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--expansions", &o.expansions))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--html", &o.html))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--queries", &o.queries))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--k", &o.k))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--candidates", &o.candidates))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--aesthetic-weight", &o.weight))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--expand-weight", &o.expand_weight))) { if (rr < 0) goto done; continue; }
        if (!strcmp(argv[i], "--int8")) { o.int8 = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { search_usage(); rc = 0; goto done; }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        {   /* a query */
            query_run *nr = (query_run *)realloc(runs, (size_t)(nruns + 1) * sizeof *runs);
            if (!nr) goto done;
            runs = nr;
            memset(&runs[nruns], 0, sizeof *runs);
            runs[nruns].qid = (char *)malloc(16);
            runs[nruns].text = (char *)malloc(strlen(argv[i]) + 1);
            if (!runs[nruns].qid || !runs[nruns].text) goto done;
            snprintf(runs[nruns].qid, 16, "%d", nruns + 1);
            strcpy(runs[nruns].text, argv[i]);
            nruns++;
        }
    }
    if (!o.index || !o.m.model) { cli_fail(cmd, NULL, "--index and --model are required (see --help)"); goto done; }
    if (o.k < 1 || o.k > 100000 || o.candidates < 1 || o.candidates > 10000000) {
        cli_fail(cmd, NULL, "--k must be in [1, 100000] and --candidates in [1, 10^7]");
        goto done;
    }
    if (!(o.weight == o.weight) || fabs(o.weight) > 1e6 || !(o.expand_weight >= 0 && o.expand_weight <= 1)) {
        cli_fail(cmd, NULL, "--aesthetic-weight must be finite and --expand-weight in [0, 1]");
        goto done;
    }
    if (!o.expand) o.expand = o.expansions ? "file" : "none";
    if (strcmp(o.expand, "none") && strcmp(o.expand, "template") && strcmp(o.expand, "file")) {
        cli_fail(cmd, NULL, "--expand wants none, template or file, not '%s'", o.expand);
        goto done;
    }
    if (!strcmp(o.expand, "file") && !o.expansions) { cli_fail(cmd, NULL, "--expand file needs --expansions FILE"); goto done; }
    if (o.queries && !read_queries(ctx, o.queries, &runs, &nruns)) { cli_fail(cmd, ctx, "reading %s", o.queries); goto done; }
    if (nruns == 0) { cli_fail(cmd, NULL, "no query given"); goto done; }
    aes_threads_set(ctx, cli_threads());

    if (aes_index_load(ctx, o.index, &idx) != AES_OK) { cli_fail(cmd, ctx, "cannot load the index"); goto done; }
    if (cli_load_model(ctx, &o.m, &model) != AES_OK) { cli_fail(cmd, ctx, "loading %s", o.m.model); goto done; }
    if (!aes_clip_config_get(model)->has_text) { cli_fail(cmd, NULL, "%s has no text tower", o.m.model); goto done; }
    if (aes_index_check_model(ctx, idx, aes_clip_id(model)) != AES_OK) { cli_fail(cmd, ctx, "%s", o.index); goto done; }
    if (cli_load_tokenizer(ctx, o.m.vocab, o.m.model, cmd, &tok) != AES_OK) goto done;
    E = aes_clip_config_get(model)->embed_dim;
    if (o.head) {       /* scores from this head, unless the index already has them */
        aes_head head;
        char id[17];
        if (aes_head_load(ctx, o.head, &head) != AES_OK) { cli_fail(cmd, ctx, "loading the head"); goto done; }
        aes_head_identity(&head, id);
        if (strcmp(id, idx->head_id) != 0 && aes_index_rescore(ctx, idx, &head) != AES_OK) {
            aes_head_free(&head);
            cli_fail(cmd, ctx, "scoring the index with %s", o.head);
            goto done;
        }
        aes_head_free(&head);
    }
    for (r = 0; r < idx->count; r++) scored += idx->aesthetic[r] == idx->aesthetic[r];
    if (!scored && o.weight != 0)
        fprintf(stderr, "aesalign search: warning: the index has no aesthetic scores (give --head H): plain retrieval\n");
    if (o.int8 && !(idx->storage & AES_INDEX_I8)) { cli_fail(cmd, NULL, "--int8: the index has no int8 vectors"); goto done; }
    if (!strcmp(o.expand, "file") && aes_expansions_load(ctx, o.expansions, &ex) != AES_OK) {
        cli_fail(cmd, ctx, "reading the expansions");
        goto done;
    }

    e0 = (float *)malloc((size_t)E * sizeof(float));
    e1 = (float *)malloc((size_t)E * sizeof(float));
    qv = (float *)malloc((size_t)E * sizeof(float));
    if (!e0 || !e1 || !qv) goto done;
    aes_retrieve_opts_default(&ro);
    ro.k = (int)o.k;
    ro.candidates = (int)o.candidates;
    ro.aesthetic_weight = (float)o.weight;
    ro.use_int8 = o.int8;
    if (!o.queries) printf("rank\tpath\tsemantic\taesthetic\tfinal\n");
    for (q = 0; q < nruns; q++) {
        query_run *run = &runs[q];
        /* stage 1: expansion */
        if (!strcmp(o.expand, "template")) {
            char buf[2048];
            if (aes_expand_template(ctx, run->text, buf, sizeof buf) != AES_OK) { cli_fail(cmd, ctx, "expanding"); goto done; }
            run->expanded = (char *)malloc(strlen(buf) + 1);
            if (run->expanded) strcpy(run->expanded, buf);
        } else if (ex) {
            const char *x = aes_expansions_find(ex, run->text);
            if (!x) fprintf(stderr, "aesalign search: warning: no rephrasing of '%s' in %s: using the query as is\n",
                            run->text, o.expansions);
            else if ((run->expanded = (char *)malloc(strlen(x) + 1)) != NULL) strcpy(run->expanded, x);
        }
        if (embed_text(ctx, model, tok, run->text, e0) != AES_OK) { cli_fail(cmd, ctx, "encoding '%s'", run->text); goto done; }
        if (run->expanded) {
            if (embed_text(ctx, model, tok, run->expanded, e1) != AES_OK) { cli_fail(cmd, ctx, "encoding the expansion"); goto done; }
            if (aes_query_combine(ctx, e0, e1, E, (float)o.expand_weight, qv) != AES_OK) { cli_fail(cmd, ctx, "combining"); goto done; }
        } else {
            memcpy(qv, e0, (size_t)E * sizeof(float));
        }
        /* stages 2 and 3: retrieval and re-ranking */
        run->res = (aes_result *)malloc((size_t)o.k * sizeof(aes_result));
        if (!run->res) goto done;
        if (aes_index_retrieve(ctx, idx, qv, &ro, run->res, &run->nres) != AES_OK) { cli_fail(cmd, ctx, "search"); goto done; }
        if (!o.queries && nruns > 1) printf("# query: %s\n", run->text);
        if (!o.queries && run->expanded) printf("# expanded: %s\n", run->expanded);
        for (i = 0; i < run->nres; i++) {
            const aes_result *x = &run->res[i];
            if (o.queries)
                printf("result\t%s\t%d\t%s\t%.6f\t%.4f\n", run->qid, i + 1, aes_index_path(idx, (size_t)x->row),
                       x->final, x->aesthetic);
            else
                printf("%d\t%s\t%.6f\t%.4f\t%.6f\n", i + 1, aes_index_path(idx, (size_t)x->row), x->semantic,
                       x->aesthetic, x->final);
        }
    }
    fflush(stdout);
    if (o.html) {
        if (write_html(ctx, o.html, idx, runs, nruns, &o) != AES_OK) { cli_fail(cmd, ctx, "writing %s", o.html); goto done; }
        fprintf(stderr, "aesalign search: wrote %s\n", o.html);
    }
    rc = 0;
done:
    for (q = 0; q < nruns; q++) { free(runs[q].qid); free(runs[q].text); free(runs[q].expanded); free(runs[q].res); }
    free(runs);
    free(e0); free(e1); free(qv);
    aes_expansions_free(ex);
    aes_tokenizer_free(tok);
    aes_clip_free(model);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    return rc;
}

/* ---- eval ------------------------------------------------------------------------- */

CLI_COMMAND(eval, "retrieval metrics from a TSV: recall@K, nDCG@K, mean aesthetic, HPIR agreement") {
    const char *path = NULL;
    long k = 10;
    aes_ctx *ctx;
    void *buf = NULL;
    size_t len = 0;
    world_eval_report r;
    int i, rc = 0;
    for (i = 1; i < argc; i++) {
        int rr;
        if ((rr = cli_opt_int(argc, argv, &i, "--k", &k))) { if (rr < 0) return 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign eval [--k 10] FILE.tsv\n"
                   "Records, one per line, tab-separated ('#' lines skipped):\n"
                   "  result  QUERY  RANK  ITEM  [SCORE  [AESTHETIC]]   a system's ranked results\n"
                   "  rel     QUERY  ITEM  GRADE                        graded relevance (> 0 relevant)\n"
                   "  aesthetic ITEM  VALUE                             ground-truth aesthetic of an item\n"
                   "  score   QUERY  ITEM  VALUE                        the system's score of an item\n"
                   "  pair    QUERY  ITEMS_A  ITEMS_B  A|B  [CONFIDENCE] people's choice between two groups\n"
                   "Prints recall@K, nDCG@K (exponential gain), the mean aesthetic of the top K and the\n"
                   "HPIR-style agreement (plain and confidence-weighted).  `aesalign search --queries`\n"
                   "prints the result records.\n");
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_fail("eval", NULL, "unknown option %s", argv[i]);
        path = argv[i];
    }
    if (!path) return cli_fail("eval", NULL, "which file? (aesalign eval FILE.tsv)");
    if (k < 1 || k > 1000000) return cli_fail("eval", NULL, "--k must be in [1, 10^6]");
    if (!(ctx = aes_ctx_create())) return cli_fail("eval", NULL, "out of memory");
    if (aes_read_file(ctx, path, &buf, &len) != AES_OK)
        rc = cli_fail("eval", ctx, "cannot evaluate");
    else if (world_eval_tsv(ctx, (const char *)buf, len, path, (int)k, &r) != AES_OK)
        rc = cli_fail("eval", NULL, "cannot evaluate: %s", world_last_error());
    if (rc) {
        aes_free(buf);
        aes_ctx_free(ctx);
        return rc;
    }
    printf("queries\t%d\n", r.nqueries);
    if (r.nrecall) printf("recall@%ld\t%.4f\t(%d queries with relevance judgements)\n", k, r.recall, r.nrecall);
    if (r.nndcg) printf("ndcg@%ld\t%.4f\n", k, r.ndcg);
    if (r.naesthetic) printf("mean_aesthetic@%ld\t%.4f\t(%d queries)\n", k, r.mean_aesthetic, r.naesthetic);
    if (r.npairs)
        printf("hpir_agreement\t%.4f\nhpir_weighted\t%.4f\t(%d pairs, %d skipped: unscored items)\n", r.agreement,
               r.weighted_agreement, r.npairs, r.npairs_skipped);
    else if (r.npairs_skipped)
        printf("hpir_agreement\tn/a\t(%d pairs skipped: unscored items)\n", r.npairs_skipped);
    aes_free(buf);
    aes_ctx_free(ctx);
    return 0;
}
