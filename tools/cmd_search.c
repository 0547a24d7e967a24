/* aesalign search / eval: aesthetics-aware retrieval over an index
 * (aesalign.h; arXiv 2406.09397 stages 1-2) and its metrics (the eval
 * format is world_eval_tsv in tools/world.h).
 *
 *   aesalign search --index FILE --model M [--head H] [--k 20] [--candidates 200]
 *                   [--aesthetic-weight W] [--expand none|template|file]
 *                   [--expansions FILE] [--scan-int8] [--nprobe N] [--exact]
 *                   [--html FILE] [--format tsv|json|paths]
 *                   [--min-aesthetic X] [--under DIR] [--after DATE] [--before DATE]
 *                   [--sort final|aesthetic|semantic] QUERY...
 *   aesalign search ... --queries FILE        (lines "QID<TAB>query")
 *   aesalign eval [--k 10] FILE.tsv
 *
 * A QUERY is terms joined by "+" / "-" arguments; a term naming a file is
 * an image term (see add_term).  search prints a TSV by default: a header
 * line, then one line per result:
 *     rank  path  semantic  aesthetic  final
 * (several queries: a "# query: ..." line before each list).  With
 * --queries the output is the `result` records `aesalign eval` reads:
 *     result  QID  rank  path  final  aesthetic
 * --format json prints one object per result, --format paths the paths.
 * The filters select the images searched (before retrieval), so --k
 * results come back whenever that many images pass.
 * --html writes a page of thumbnails (paths relative to the page, nothing
 * fetched from the network) that a person can open to judge the results.
 * When FILE.ivf (aesalign index ivf) exists and matches the index, the
 * semantic candidates come from it (approximate: --nprobe lists scanned);
 * --exact, a filter, or a stale FILE.ivf give an exact scan instead.
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
    const char *index, *head, *expand, *expansions, *html, *queries, *sort, *under;
    long k, candidates;
    double weight, expand_weight, min_aesthetic;     /* min_aesthetic NaN: no filter */
    int64_t after, before;
    long nprobe;                                     /* -1: CLI_IVF_DEFAULT_NPROBE */
    int int8, format, has_after, has_before, exact;
} search_opts;

typedef struct query_term {
    char  *text;                       /* the text, or the image's path */
    int    image;
    double weight;                     /* signed: - terms are subtracted */
} query_term;

typedef struct query_run {
    char *qid, *text, *expanded;       /* expanded: NULL when not expanded */
    query_term *terms;
    int nterms;
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
void cli_relative_path(const char *base, const char *target, char *out, size_t cap) {
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

void cli_html_escape(FILE *f, const char *s) {
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
void cli_url_escape(FILE *f, const char *s) {
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
    cli_html_escape(f, o->index);
    fprintf(f, " &middot; %zu images &middot; k %ld &middot; candidates %ld &middot; aesthetic weight %g%s</p>\n",
            idx->count, o->k, o->candidates, o->weight, o->int8 ? " &middot; int8" : "");
    for (q = 0; q < nruns; q++) {
        fprintf(f, "<h2>");
        cli_html_escape(f, runs[q].text);
        fprintf(f, "</h2>\n");
        if (runs[q].expanded) {
            fprintf(f, "<p class=\"exp\">expanded: ");
            cli_html_escape(f, runs[q].expanded);
            fprintf(f, "</p>\n");
        }
        fprintf(f, "<div class=\"grid\">\n");
        for (r = 0; r < runs[q].nres; r++) {
            const aes_result *x = &runs[q].res[r];
            const char *p = aes_index_path(idx, (size_t)x->row);
            if (p[0] == '/') snprintf(abs_img, sizeof abs_img, "%s", p);
            else if (!realpath(p, abs_img)) snprintf(abs_img, sizeof abs_img, "%s", p);
            if (abs_img[0] == '/' && dir[0] == '/') cli_relative_path(dir, abs_img, rel, sizeof rel);
            else snprintf(rel, sizeof rel, "%s", p);
            fprintf(f, "<div class=\"card\"><a href=\"");
            cli_url_escape(f, rel);
            fprintf(f, "\"><img loading=\"lazy\" src=\"");
            cli_url_escape(f, rel);
            fprintf(f, "\" alt=\"\"></a><div><b>#%d</b> <span class=\"num\">final %.4f &middot; sem %.4f &middot; aes %.2f</span></div>"
                       "<div class=\"path\">", r + 1, x->final, x->semantic, x->aesthetic);
            cli_html_escape(f, p);
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

/* ---- query terms -------------------------------------------------------------------
 * A query is terms joined by "+" and "-" arguments (as rclip's):
 *     "golden retriever" + beach.jpg - people
 * A term naming an existing file is an image term (image tower), else text;
 * "W:term" weighs it (2:sunset).  The query embedding is the normalised
 * sum of the terms' normalised embeddings times their signed weights. */

/* Adds term `arg` to the last query (sign +1 / -1) or, with sign 0, starts
 * a new query with it.  image: 1 image, 0 text, -1 decide (a file: image).
 * Returns 0 after a message on error. */
static int add_term(query_run **runs, int *nruns, int sign, const char *arg, int image, const char *cmd) {
    query_run *run;
    query_term *t;
    const char *colon = strchr(arg, ':'), *body = arg;
    double w = 1;
    struct stat sb;
    size_t tl;
    if (colon && colon > arg && colon[1]) {       /* "W:term" */
        char num[64], *end;
        size_t nl = (size_t)(colon - arg);
        if (nl < sizeof num) {
            double v;
            memcpy(num, arg, nl);
            num[nl] = 0;
            v = strtod(num, &end);
            if (end != num && !*end && v == v && fabs(v) < 1e6 && stat(arg, &sb) != 0) { w = v; body = colon + 1; }
        }
    }
    if (image < 0) image = stat(body, &sb) == 0 && S_ISREG(sb.st_mode);
    else if (image && stat(body, &sb) != 0) { cli_fail(cmd, NULL, "--image %s: %s", body, strerror(errno)); return 0; }
    if (sign == 0 || *nruns == 0) {
        query_run *nr = (query_run *)realloc(*runs, (size_t)(*nruns + 1) * sizeof **runs);
        if (!nr) return cli_fail(cmd, NULL, "out of memory") == 0;
        *runs = nr;
        run = &nr[*nruns];
        memset(run, 0, sizeof *run);
        if (!(run->qid = (char *)malloc(16))) return cli_fail(cmd, NULL, "out of memory") == 0;
        snprintf(run->qid, 16, "%d", *nruns + 1);
        (*nruns)++;
        if (sign == 0) sign = 1;
    } else {
        run = &(*runs)[*nruns - 1];
    }
    t = (query_term *)realloc(run->terms, (size_t)(run->nterms + 1) * sizeof *t);
    if (!t) return cli_fail(cmd, NULL, "out of memory") == 0;
    run->terms = t;
    t = &t[run->nterms];
    t->image = image;
    t->weight = sign * w;
    if (!(t->text = (char *)malloc(strlen(body) + 1))) return cli_fail(cmd, NULL, "out of memory") == 0;
    strcpy(t->text, body);
    run->nterms++;
    /* the query as typed, for the output */
    tl = (run->text ? strlen(run->text) : 0) + strlen(arg) + 4;
    {
        char *nt = (char *)realloc(run->text, tl);
        if (!nt) return cli_fail(cmd, NULL, "out of memory") == 0;
        if (!run->text) nt[0] = 0;
        else strcat(nt, sign > 0 ? " + " : " - ");
        if (run->nterms == 1 && sign < 0) strcat(nt, "- ");
        strcat(nt, arg);
        run->text = nt;
    }
    return 1;
}

/* ---- filters and order ------------------------------------------------------------- */

/* Keeps the images that pass --min-aesthetic, --under, --after, --before. */
static aes_status apply_filters(aes_ctx *ctx, aes_index *idx, const search_opts *o) {
    unsigned char *keep;
    size_t r, n = 0;
    aes_status st;
    if (o->min_aesthetic != o->min_aesthetic && !o->under && !o->has_after && !o->has_before) return AES_OK;
    if (!(keep = (unsigned char *)malloc(idx->count + 1))) return AES_ERR_NOMEM;
    for (r = 0; r < idx->count; r++) {
        int64_t date = idx->date[r] != AES_INDEX_NO_DATE ? idx->date[r] : cli_photo_date(NULL, idx->mtime_ns[r]);
        keep[r] = 1;
        if (o->min_aesthetic == o->min_aesthetic && !(idx->aesthetic[r] >= (float)o->min_aesthetic)) keep[r] = 0;
        if (o->under && !cli_path_under(aes_index_path(idx, r), o->under)) keep[r] = 0;
        if (o->has_after && date < o->after) keep[r] = 0;
        if (o->has_before && date >= o->before) keep[r] = 0;
        n += keep[r];
    }
    st = n == idx->count ? AES_OK : aes_index_filter(ctx, idx, keep);
    free(keep);
    return st;
}

static int cmp_by_aesthetic(const void *a, const void *b) {
    const aes_result *x = (const aes_result *)a, *y = (const aes_result *)b;
    int xn = x->aesthetic != x->aesthetic, yn = y->aesthetic != y->aesthetic;
    if (xn != yn) return xn - yn;                           /* unscored last */
    if (!xn && x->aesthetic != y->aesthetic) return x->aesthetic > y->aesthetic ? -1 : 1;
    if (x->final != y->final) return x->final > y->final ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int cmp_by_semantic(const void *a, const void *b) {
    const aes_result *x = (const aes_result *)a, *y = (const aes_result *)b;
    if (x->semantic != y->semantic) return x->semantic > y->semantic ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static void print_results(FILE *out, const aes_index *idx, const query_run *run, const search_opts *o, int nruns) {
    int i;
    if (o->format == CLI_FMT_TSV && !o->queries && nruns > 1) fprintf(out, "# query: %s\n", run->text);
    if (o->format == CLI_FMT_TSV && !o->queries && run->expanded) fprintf(out, "# expanded: %s\n", run->expanded);
    for (i = 0; i < run->nres; i++) {
        const aes_result *x = &run->res[i];
        const char *path = aes_index_path(idx, (size_t)x->row);
        if (o->format == CLI_FMT_PATHS) {
            fprintf(out, "%s\n", path);
        } else if (o->format == CLI_FMT_JSON) {
            fprintf(out, "{");
            if (o->queries) { fprintf(out, "\"query\":"); cli_json_string(out, run->qid); fprintf(out, ","); }
            else if (nruns > 1) { fprintf(out, "\"query\":"); cli_json_string(out, run->text); fprintf(out, ","); }
            fprintf(out, "\"rank\":%d,\"path\":", i + 1);
            cli_json_string(out, path);
            fprintf(out, ",\"semantic\":"); cli_json_number(out, x->semantic);
            fprintf(out, ",\"aesthetic\":"); cli_json_number(out, x->aesthetic);
            fprintf(out, ",\"final\":"); cli_json_number(out, x->final);
            fprintf(out, "}\n");
        } else if (o->queries) {
            fprintf(out, "result\t%s\t%d\t%s\t%.6f\t%.4f\n", run->qid, i + 1, path, x->final, x->aesthetic);
        } else {
            fprintf(out, "%d\t%s\t%.6f\t%.4f\t%.6f\n", i + 1, path, x->semantic, x->aesthetic, x->final);
        }
    }
}

/* ---- the IVF ------------------------------------------------------------------------ */

void cli_ivf_path(const char *index_path, char *out, size_t cap) { snprintf(out, cap, "%s.ivf", index_path); }

aes_ivf *cli_ivf_open(aes_ctx *ctx, const char *index_path, const aes_index *idx, const char *cmd) {
    char path[PATH_MAX + 8];
    aes_ivf *ivf = NULL;
    cli_ivf_path(index_path, path, sizeof path);
    if (!cli_file_exists(path)) return NULL;
    if (aes_ivf_load(ctx, path, idx, &ivf) != AES_OK) {
        fprintf(stderr, "aesalign %s: warning: %s; not using it (exact search)\n", cmd, aes_last_error(ctx));
        aes_clear_error(ctx);
        return NULL;
    }
    return ivf;
}

/* aes_index_retrieve with the candidates from the IVF: the same re-ranking
 * of the same kind of candidate list (exact fp32 scores when stored). */
static aes_status retrieve_ivf(aes_ctx *ctx, const aes_index *idx, const aes_ivf *ivf, int nprobe, const float *q,
                               const aes_retrieve_opts *o, aes_result *out, int *nout) {
    int C = o->candidates > o->k ? o->candidates : o->k, nc = 0, i;
    aes_hit *cand = (aes_hit *)malloc((size_t)C * sizeof *cand);
    aes_result *res = (aes_result *)malloc((size_t)C * sizeof *res);
    float *a = (float *)malloc((size_t)C * sizeof *a);
    aes_status st = AES_ERR_NOMEM;
    *nout = 0;
    if (cand && res && a && (st = aes_ivf_search(ctx, ivf, idx, q, 1, C, nprobe, cand, &nc)) == AES_OK) {
        for (i = 0; i < nc; i++) a[i] = idx->aesthetic[cand[i].row];
        if ((st = aes_rerank(ctx, cand, a, nc, o->aesthetic_weight, res)) == AES_OK) {
            *nout = nc < o->k ? nc : o->k;
            memcpy(out, res, (size_t)*nout * sizeof *out);
        }
    }
    free(cand); free(res); free(a);
    return st;
}

/* ---- search ---------------------------------------------------------------------- */

static void search_usage(void) {
    printf("usage: aesalign search --index FILE --model M [options] QUERY...\n"
           "       aesalign search --index FILE --model M [options] --queries FILE\n"
           "A QUERY is terms joined by + and - arguments:  \"golden retriever\" + beach.jpg - people\n"
           "  a term naming an existing file is an image term (embedded with the image tower), else\n"
           "  text; W:term weighs it (2:sunset).  The query is the normalised weighted sum of the\n"
           "  terms' normalised embeddings, - terms subtracted.  Terms not joined by + or - are\n"
           "  separate queries.  Image-only queries need no tokenizer.\n"
           "  --image PATH           an image term (joined with + to the query before it)\n"
           CLI_FORMAT_HELP
           "                         (json: rank, path, semantic, aesthetic, final; and query: the QID\n"
           "                         with --queries, the query text when there are several)\n"
           "  --min-aesthetic X      only images scored at least X\n"
           "  --under DIR            only images under DIR (relative or absolute, either way)\n"
           "  --after DATE           only photos taken at or after DATE (YYYY-MM-DD[ HH:MM[:SS]]; the\n"
           "  --before DATE          date is EXIF DateTimeOriginal, else the file's mtime); before DATE\n"
           "  --sort KEY             final (default), aesthetic or semantic: another key re-orders all\n"
           "                         re-ranked candidates by it and keeps the first k\n"
           "  --head H               score with this head instead of the index's stored scores\n"
           "  --k N                  results (default %d)\n"
           "  --candidates N         semantic candidates re-ranked (default %d)\n"
           "  --aesthetic-weight W   final = semantic + W * z(aesthetic) (default %g; 0 = plain retrieval)\n"
           "  --expand MODE          none (default), template (offline aesthetic expectations),\n"
           "                         file (rephrasings from --expansions FILE; see tools/rephrase.py)\n"
           "  --expansions FILE      TSV cache query<TAB>rephrased (implies --expand file)\n"
           "  --expand-weight A      weight of the expanded query's embedding (default 0.5)\n"
           "  --scan-int8            scan the index's int8 vectors (fp32 re-scores the best when stored)\n"
           "  --nprobe N             with FILE.ivf (aesalign index ivf): lists scanned (default %d; more:\n"
           "                         slower, closer to exact; the number of lists: exact)\n"
           "  --exact                ignore FILE.ivf: scan every vector\n"
           "  --html FILE            also write a page of thumbnails\n"
           "  --queries FILE         lines QID<TAB>query (text); prints `result` records for `aesalign eval`\n"
           CLI_MODEL_HELP
           "When FILE.ivf exists and matches the index (a stale one, from before the index last\n"
           "changed, is ignored with a warning), the semantic candidates come from it: approximate,\n"
           "much faster on large indexes.  With a filter (--min-aesthetic, --under, --after,\n"
           "--before) the search is exact: the IVF covers the whole index, the filters cut it.\n",
           AES_RETRIEVE_DEFAULT_K, AES_RERANK_DEFAULT_CANDIDATES, (double)AES_RERANK_DEFAULT_WEIGHT,
           CLI_IVF_DEFAULT_NPROBE);
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
        if (!((*runs)[*n].terms = (query_term *)calloc(1, sizeof(query_term))) ||
            !((*runs)[*n].terms[0].text = (char *)malloc(strlen(q) + 1))) { aes_free(buf); return 0; }
        strcpy((*runs)[*n].terms[0].text, q);
        (*runs)[*n].terms[0].weight = 1;
        (*runs)[*n].nterms = 1;
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

/* The search command with its output going to `out` (the CLI: stdout;
 * `aesalign serve`: a buffer, so /api/search prints what the CLI prints).
 * pre, when not NULL, holds a model and tokenizer loaded already (used
 * instead of --model's file, which must still be given; not freed).
 * Messages go to stderr.  Returns the exit status. */
int cli_search_run(int argc, char **argv, FILE *out, const cli_search_preloaded *pre) {
    const char *cmd = "search";
    search_opts o;
    aes_ctx *ctx = aes_ctx_create();
    aes_index *idx = NULL;
    aes_ivf *ivf = NULL, *own_ivf = NULL;
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_expansions *ex = NULL;
    query_run *runs = NULL;
    float *e0 = NULL, *e1 = NULL, *qv = NULL, *pixels = NULL;
    int nruns = 0, rc = 1, i, q, E = 0, S = 0, scored = 0, pending = 0, need_text = 0, need_image = 0, fetch;
    aes_retrieve_opts ro;
    size_t r;
    memset(&o, 0, sizeof o);
    o.k = AES_RETRIEVE_DEFAULT_K;
    o.candidates = AES_RERANK_DEFAULT_CANDIDATES;
    o.weight = AES_RERANK_DEFAULT_WEIGHT;
    o.expand_weight = 0.5;
    o.min_aesthetic = NAN;
    o.nprobe = -1;
    o.sort = "final";
    if (!ctx) return cli_fail(cmd, NULL, "out of memory");
    for (i = 1; i < argc; i++) {
        int rr;
        const char *s;
        if ((rr = cli_model_opt(argc, argv, &i, &o.m))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--index", &o.index))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--head", &o.head))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--expand", &o.expand))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--expansions", &o.expansions))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--html", &o.html))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--queries", &o.queries))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--sort", &o.sort))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--under", &o.under))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--k", &o.k))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--candidates", &o.candidates))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--nprobe", &o.nprobe))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--aesthetic-weight", &o.weight))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--expand-weight", &o.expand_weight))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_float(argc, argv, &i, "--min-aesthetic", &o.min_aesthetic))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_format(argc, argv, &i, &o.format))) { if (rr < 0) goto done; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--after", &s)) || (rr = cli_opt_str(argc, argv, &i, "--before", &s))) {
            int after = !strcmp(argv[i - 1], "--after");
            if (rr < 0) goto done;
            if (!cli_parse_date(s, after ? &o.after : &o.before)) {
                cli_fail(cmd, NULL, "%s wants YYYY-MM-DD or \"YYYY-MM-DD HH:MM[:SS]\", not '%s'", argv[i - 1], s);
                goto done;
            }
            if (after) o.has_after = 1; else o.has_before = 1;
            continue;
        }
        if ((rr = cli_opt_str(argc, argv, &i, "--image", &s))) {   /* an image term, joined with + */
            if (rr < 0) goto done;
            if (!add_term(&runs, &nruns, nruns > 0 ? +1 : 0, s, 1, cmd)) goto done;
            pending = 0;
            continue;
        }
        if (!strcmp(argv[i], "--scan-int8")) { o.int8 = 1; continue; }
        if (!strcmp(argv[i], "--exact")) { o.exact = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { search_usage(); rc = 0; goto done; }
        if (!strcmp(argv[i], "+") || !strcmp(argv[i], "-")) {
            if (pending) { cli_fail(cmd, NULL, "'%s' after '%s': a term must come between them", argv[i], argv[i - 1]); goto done; }
            pending = argv[i][0] == '+' ? +1 : -1;
            if (nruns == 0 && pending > 0) { cli_fail(cmd, NULL, "a query cannot start with '+'"); goto done; }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        /* a term: joined to the current query after + / -, else a new query */
        if (!add_term(&runs, &nruns, pending, argv[i], -1, cmd)) goto done;
        pending = 0;
    }
    if (pending) { cli_fail(cmd, NULL, "the query ends with '%c': a term must follow it", pending > 0 ? '+' : '-'); goto done; }
    if (!o.index || !o.m.model) { cli_fail(cmd, NULL, "--index and --model are required (see --help)"); goto done; }
    if (o.k < 1 || o.k > 100000 || o.candidates < 1 || o.candidates > 10000000) {
        cli_fail(cmd, NULL, "--k must be in [1, 100000] and --candidates in [1, 10^7]");
        goto done;
    }
    if (o.nprobe == -1) o.nprobe = CLI_IVF_DEFAULT_NPROBE;
    if (o.nprobe < 1 || o.nprobe > 1000000000) { cli_fail(cmd, NULL, "--nprobe must be in [1, 10^9]"); goto done; }
    if (!(o.weight == o.weight) || fabs(o.weight) > 1e6 || !(o.expand_weight >= 0 && o.expand_weight <= 1)) {
        cli_fail(cmd, NULL, "--aesthetic-weight must be finite and --expand-weight in [0, 1]");
        goto done;
    }
    if (strcmp(o.sort, "final") && strcmp(o.sort, "aesthetic") && strcmp(o.sort, "semantic")) {
        cli_fail(cmd, NULL, "--sort wants final, aesthetic or semantic, not '%s'", o.sort);
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
    for (q = 0; q < nruns; q++)
        for (i = 0; i < runs[q].nterms; i++) {
            if (runs[q].terms[i].image) need_image = 1;
            else need_text = 1;
        }
    aes_threads_set(ctx, cli_threads());

    /* a preloaded index only when no filter would cut it down in place */
    if (pre && pre->idx && o.min_aesthetic != o.min_aesthetic && !o.under && !o.has_after && !o.has_before) idx = pre->idx;
    else if (aes_index_load(ctx, o.index, &idx) != AES_OK) { cli_fail(cmd, ctx, "cannot load the index"); goto done; }
    if (pre && pre->model) model = pre->model;
    else if (cli_load_model(ctx, &o.m, &model) != AES_OK) { cli_fail(cmd, ctx, "loading %s", o.m.model); goto done; }
    if (need_text && !aes_clip_config_get(model)->has_text) { cli_fail(cmd, NULL, "%s has no text tower (image terms only)", o.m.model); goto done; }
    if (need_image && !aes_clip_config_get(model)->has_vision) { cli_fail(cmd, NULL, "%s has no image tower (text terms only)", o.m.model); goto done; }
    if (aes_index_check_model(ctx, idx, aes_clip_id(model)) != AES_OK) { cli_fail(cmd, ctx, "%s", o.index); goto done; }
    if (need_text && pre && pre->tok) tok = pre->tok;
    else if (need_text && cli_load_tokenizer(ctx, o.m.vocab, o.m.model, cmd, &tok) != AES_OK) goto done;
    E = aes_clip_config_get(model)->embed_dim;
    if (need_image) S = aes_clip_config_get(model)->image_size;
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
    if (!scored && (o.weight != 0 || o.min_aesthetic == o.min_aesthetic || !strcmp(o.sort, "aesthetic")))
        fprintf(stderr, "aesalign search: warning: the index has no aesthetic scores (give --head H)\n");
    if (o.int8 && !(idx->storage & AES_INDEX_I8)) { cli_fail(cmd, NULL, "--scan-int8: the index has no int8 vectors"); goto done; }
    if (!strcmp(o.expand, "file") && aes_expansions_load(ctx, o.expansions, &ex) != AES_OK) {
        cli_fail(cmd, ctx, "reading the expansions");
        goto done;
    }
    /* the IVF: with the whole index only (filters cut it below) */
    if (!o.exact) {
        int filtered = o.min_aesthetic == o.min_aesthetic || o.under || o.has_after || o.has_before;
        char ivf_path[PATH_MAX + 8];
        cli_ivf_path(o.index, ivf_path, sizeof ivf_path);
        if (filtered) {
            if (!pre && cli_file_exists(ivf_path))
                fprintf(stderr, "aesalign search: a filter is given: exact search (%s covers the whole index)\n", ivf_path);
        } else if (pre && idx == pre->idx) {
            ivf = pre->ivf;
        } else if ((ivf = own_ivf = cli_ivf_open(ctx, o.index, idx, cmd)) != NULL) {
            fprintf(stderr, "aesalign search: using IVF %s (nlist %d, nprobe %ld)\n", ivf_path, ivf->nlist,
                    o.nprobe < ivf->nlist ? o.nprobe : (long)ivf->nlist);
        }
    }
    if (apply_filters(ctx, idx, &o) != AES_OK) { cli_fail(cmd, ctx, "filtering"); goto done; }
    if (idx->count == 0) fprintf(stderr, "aesalign search: warning: no image of the index passes the filters\n");

    e0 = (float *)malloc((size_t)E * sizeof(float));
    e1 = (float *)malloc((size_t)E * sizeof(float));
    qv = (float *)malloc((size_t)E * sizeof(float));
    if (S) pixels = (float *)malloc((size_t)3 * S * S * sizeof(float));
    if (!e0 || !e1 || !qv || (S && !pixels)) goto done;
    aes_retrieve_opts_default(&ro);
    /* another order than final: re-order every re-ranked candidate, keep k */
    fetch = strcmp(o.sort, "final") ? (int)(o.candidates > o.k ? o.candidates : o.k) : (int)o.k;
    ro.k = fetch;
    ro.candidates = (int)o.candidates;
    ro.aesthetic_weight = (float)o.weight;
    ro.use_int8 = o.int8;
    if (!o.queries && o.format == CLI_FMT_TSV) fprintf(out, "rank\tpath\tsemantic\taesthetic\tfinal\n");
    for (q = 0; q < nruns; q++) {
        query_run *run = &runs[q];
        double norm = 0;
        int t, d;
        memset(qv, 0, (size_t)E * sizeof(float));
        for (t = 0; t < run->nterms; t++) {
            query_term *term = &run->terms[t];
            double n2 = 0;
            char *expanded = NULL;
            if (term->image) {
                aes_image img;
                aes_status st;
                memset(&img, 0, sizeof img);
                st = (aes_status)cli_load_image(ctx, term->text, &img);
                if (st == AES_OK) st = aes_clip_preprocess(ctx, &img, S, pixels);
                aes_image_free(&img);
                if (st != AES_OK || aes_clip_encode_image(ctx, model, pixels, 1, e0) != AES_OK) {
                    cli_fail(cmd, ctx, "image term %s", term->text);
                    goto done;
                }
            } else {
                /* stage 1: expansion of the positive text terms */
                if (term->weight > 0 && !strcmp(o.expand, "template")) {
                    char buf[2048];
                    if (aes_expand_template(ctx, term->text, buf, sizeof buf) != AES_OK) { cli_fail(cmd, ctx, "expanding"); goto done; }
                    if ((expanded = (char *)malloc(strlen(buf) + 1)) != NULL) strcpy(expanded, buf);
                } else if (term->weight > 0 && ex) {
                    const char *x = aes_expansions_find(ex, term->text);
                    if (!x) fprintf(stderr, "aesalign search: warning: no rephrasing of '%s' in %s: using the query as is\n",
                                    term->text, o.expansions);
                    else if ((expanded = (char *)malloc(strlen(x) + 1)) != NULL) strcpy(expanded, x);
                }
                if (embed_text(ctx, model, tok, term->text, e0) != AES_OK) { free(expanded); cli_fail(cmd, ctx, "encoding '%s'", term->text); goto done; }
                if (expanded) {
                    if (embed_text(ctx, model, tok, expanded, e1) != AES_OK ||
                        aes_query_combine(ctx, e0, e1, E, (float)o.expand_weight, e0) != AES_OK) {
                        free(expanded);
                        cli_fail(cmd, ctx, "encoding the expansion");
                        goto done;
                    }
                    if (!run->expanded) run->expanded = expanded;
                    else free(expanded);
                }
            }
            /* the normalised weighted sum of the normalised term embeddings */
            for (d = 0; d < E; d++) n2 += (double)e0[d] * e0[d];
            if (!(n2 > 0)) { cli_fail(cmd, NULL, "the embedding of term '%s' is zero", term->text); goto done; }
            for (d = 0; d < E; d++) qv[d] += (float)(term->weight * e0[d] / sqrt(n2));
        }
        for (d = 0; d < E; d++) norm += (double)qv[d] * qv[d];
        if (!(norm > 1e-12)) { cli_fail(cmd, NULL, "the terms of '%s' cancel out: nothing to search for", run->text); goto done; }
        /* stages 2 and 3: retrieval and re-ranking */
        run->res = (aes_result *)malloc((size_t)fetch * sizeof(aes_result));
        if (!run->res) goto done;
        run->nres = 0;
        if (idx->count && (ivf ? retrieve_ivf(ctx, idx, ivf, (int)o.nprobe, qv, &ro, run->res, &run->nres)
                                : aes_index_retrieve(ctx, idx, qv, &ro, run->res, &run->nres)) != AES_OK) {
            cli_fail(cmd, ctx, "search");
            goto done;
        }
        if (!strcmp(o.sort, "aesthetic")) qsort(run->res, (size_t)run->nres, sizeof *run->res, cmp_by_aesthetic);
        else if (!strcmp(o.sort, "semantic")) qsort(run->res, (size_t)run->nres, sizeof *run->res, cmp_by_semantic);
        if (run->nres > o.k) run->nres = (int)o.k;
        print_results(out, idx, run, &o, nruns);
    }
    fflush(out);
    if (o.html) {
        if (write_html(ctx, o.html, idx, runs, nruns, &o) != AES_OK) { cli_fail(cmd, ctx, "writing %s", o.html); goto done; }
        fprintf(stderr, "aesalign search: wrote %s\n", o.html);
    }
    rc = 0;
done:
    for (q = 0; q < nruns; q++) {
        for (i = 0; i < runs[q].nterms; i++) free(runs[q].terms[i].text);
        free(runs[q].terms); free(runs[q].qid); free(runs[q].text); free(runs[q].expanded); free(runs[q].res);
    }
    free(runs);
    free(e0); free(e1); free(qv); free(pixels);
    aes_expansions_free(ex);
    if (!(pre && tok == pre->tok)) aes_tokenizer_free(tok);
    if (!(pre && model == pre->model)) aes_clip_free(model);
    aes_ivf_free(own_ivf);
    if (!(pre && idx == pre->idx)) aes_index_free(idx);
    aes_ctx_free(ctx);
    return rc;
}

CLI_COMMAND(search, "aesthetics-aware image search: text, image and combined queries, filters, re-ranking") {
    return cli_search_run(argc, argv, stdout, NULL);
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
                   "Prints recall@K, precision@K, nDCG@K (exponential gain), the mean aesthetic of the top K and the\n"
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
    if (r.nrecall) printf("precision@%ld\t%.4f\n", k, r.precision);
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
