/* aesalign serve: a local web page that searches an index live.
 *
 *   aesalign serve --index FILE --model M [--head H] [--vocab V] [--bind 127.0.0.1] [--port 8080]
 *
 * One thread, one poll() loop over plain sockets: the listening socket and
 * every connection (reads and writes never block; a request is answered
 * when it is complete).  A search runs to its end before the next request
 * is looked at; the page's searches take milliseconds to a second, and one
 * thread needs no locking around the model (our choice for a local tool).
 *
 * Routes (GET or HEAD):
 *   /                 the page (HTML, CSS and JS in this file; nothing from the network)
 *   /api/search       what `aesalign search --format json` prints for the same query
 *                     (parameters below), one JSON object per line
 *   /api/dedup        what `aesalign dedup --format json` prints
 *   /api/index        {"id":N,"path":P,"aesthetic":A} per image; /api/info the count
 *   /img/ID, /thumb/ID  an image of the index by its row: the original (PPM/PGM converted
 *                     so browsers show it) and a thumbnail (JPEG with stb, else BMP)
 * Images are addressed by id only: no path from a request is ever opened.
 * The index file is checked (inode, size, mtime) on every request and
 * reloaded when it changed, so `aesalign index update` shows up at once.
 */
#include "cli.h"
#include "http.h"
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <poll.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#ifdef AES_HAVE_STB
#include <stb_image_resize.h>
#include <stb_image_write.h>
#endif

#define SERVE_MAX_CONN   256
#define SERVE_IDLE_SECS  30.0
#define SERVE_THUMB_SIDE 256

#include "serve_page.h"

static char *serve_page;         /* serve_page_lines joined (at start) */
static size_t serve_page_len;

/* ---- state --------------------------------------------------------------------- */

typedef struct serve_conn {
    int fd;
    char *in;                       /* bytes received, HTTP_MAX_HEAD + HTTP_MAX_BODY at most */
    size_t nin;
    char *out;                      /* the response being sent */
    size_t nout, sent;
    int close_after;
    int draining;                   /* response sent, write side shut: reading until EOF */
    double last;                    /* cli_now() of the last activity */
} serve_conn;

typedef struct serve_thumb {
    size_t id;
    unsigned gen;                   /* the index generation it was made from */
    int full;                       /* 1: /img (converted original), 0: /thumb */
    char *data;
    size_t len;
    const char *type;
    unsigned long used;             /* for least-recently-used eviction */
} serve_thumb;

typedef struct serve_state {
    const char *index_path, *head, *model_path, *config, *vocab, *act;
    int f16;
    cli_search_preloaded pre;
    aes_ctx *ctx;
    aes_index *idx;
    unsigned gen;
    struct stat idx_st, ivf_st;
    serve_thumb *thumbs;
    size_t nthumbs, thumb_bytes, thumb_cap;
    unsigned long clock;
} serve_state;

static volatile sig_atomic_t serve_stop;
static void serve_on_signal(int sig) { (void)sig; serve_stop = 1; }

/* ---- the index, reloaded when its file changes ------------------------------------ */

static void serve_thumbs_clear(serve_state *s) {
    size_t i;
    for (i = 0; i < s->nthumbs; i++) free(s->thumbs[i].data);
    s->nthumbs = 0;
    s->thumb_bytes = 0;
}

/* 1 when the file's identity (inode, size, mtime) differs from *st, which
 * is updated; a missing file has st_ino 0. */
static int serve_file_changed(const char *path, struct stat *st) {
    struct stat sb;
    if (stat(path, &sb) != 0) memset(&sb, 0, sizeof sb);
    if (sb.st_ino == st->st_ino && sb.st_dev == st->st_dev && sb.st_size == st->st_size && sb.st_mtime == st->st_mtime)
        return 0;
    *st = sb;
    return 1;
}

/* INDEX.ivf for the current index (cli_ivf_open: none, or a stale one, is
 * NULL and search scans exactly). */
static void serve_load_ivf(serve_state *s) {
    aes_ivf_free(s->pre.ivf);
    s->pre.ivf = cli_ivf_open(s->ctx, s->index_path, s->idx, "serve");
    if (s->pre.ivf)
        fprintf(stderr, "aesalign serve: using IVF %s.ivf (nlist %d; searches pass --nprobe, default %d)\n", s->index_path,
                s->pre.ivf->nlist, CLI_IVF_DEFAULT_NPROBE);
}

/* Loads the index when it is not loaded or its file changed (and its IVF,
 * INDEX.ivf, with it or when that file changed).  On a failed reload (a
 * writer mid-way) the previous index is kept. */
static void serve_check_index(serve_state *s) {
    struct stat sb;
    aes_index *idx = NULL;
    char ivf_path[PATH_MAX + 8];
    if (stat(s->index_path, &sb) != 0) return;
    cli_ivf_path(s->index_path, ivf_path, sizeof ivf_path);
    if (s->idx && sb.st_ino == s->idx_st.st_ino && sb.st_dev == s->idx_st.st_dev && sb.st_size == s->idx_st.st_size &&
        sb.st_mtime == s->idx_st.st_mtime) {
        if (serve_file_changed(ivf_path, &s->ivf_st)) serve_load_ivf(s);
        return;
    }
    if (aes_index_load(s->ctx, s->index_path, &idx) != AES_OK) {
        fprintf(stderr, "aesalign serve: cannot reload %s: %s\n", s->index_path, aes_last_error(s->ctx));
        aes_clear_error(s->ctx);
        return;
    }
    if (s->idx) fprintf(stderr, "aesalign serve: %s changed: reloaded (%zu images)\n", s->index_path, idx->count);
    aes_index_free(s->idx);
    s->idx = idx;
    s->idx_st = sb;
    s->gen++;
    serve_thumbs_clear(s);
    serve_file_changed(ivf_path, &s->ivf_st);
    serve_load_ivf(s);
}

/* ---- responses ------------------------------------------------------------------- */

static const char *serve_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Queues a response on c (the head, and the body unless head_only). */
static void serve_respond(serve_conn *c, int status, const char *type, const char *body, size_t len, int head_only) {
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                      "X-Content-Type-Options: nosniff\r\nConnection: %s\r\n\r\n",
                      status, serve_reason(status), type, len, c->close_after ? "close" : "keep-alive");
    size_t total = (size_t)hl + (head_only ? 0 : len);
    char *o = (char *)realloc(c->out, c->nout + total);
    if (!o) { c->close_after = 1; return; }
    c->out = o;
    memcpy(o + c->nout, head, (size_t)hl);
    if (!head_only && len) memcpy(o + c->nout + hl, body, len);
    c->nout += total;
}

static void serve_error(serve_conn *c, int status, const char *msg, int head_only) {
    char body[512];
    int n;
    n = snprintf(body, sizeof body, "{\"error\":\"%d %s: %s\"}\n", status, serve_reason(status), msg);
    serve_respond(c, status, "application/json", body, (size_t)n, head_only);
}

/* ---- /api/search and /api/dedup: the commands themselves, output in a buffer ---------- */

typedef struct serve_argv {
    char *v[64];
    char store[64][HTTP_MAX_LINE / 4];
    int n;
} serve_argv;

static int serve_arg(serve_argv *a, const char *s) {
    if (a->n >= 63 || strlen(s) >= sizeof a->store[0]) return 0;
    snprintf(a->store[a->n], sizeof a->store[0], "%s", s);
    a->v[a->n] = a->store[a->n];
    a->n++;
    a->v[a->n] = NULL;
    return 1;
}

/* Runs fn(argc, argv, buffer) and answers with what it printed. */
static void serve_run(serve_conn *c, serve_argv *a, int search, serve_state *s, int head_only) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;
    if (!f) { serve_error(c, 500, "out of memory", head_only); return; }
    s->pre.idx = s->idx;                 /* current: serve_check_index ran for this request */
    rc = search ? cli_search_run(a->n, a->v, f, &s->pre) : cli_dedup_run(a->n, a->v, f);
    fclose(f);
    if (rc == 0) serve_respond(c, 200, "application/x-ndjson", buf, len, head_only);
    else serve_error(c, 400, search ? "the search failed (the server's log says why)" : "dedup failed (the server's log says why)", head_only);
    free(buf);
}

/* A parameter copied as an option when present: --opt VALUE.  Returns 0
 * after answering 400 when malformed. */
static int serve_param(serve_conn *c, const http_request *r, serve_argv *a, const char *name, const char *opt, int head_only) {
    char v[HTTP_MAX_LINE / 4];
    int g = http_query_get(r->query, name, v, sizeof v);
    if (g < 0 || (g == 1 && !v[0])) {
        char msg[128];
        snprintf(msg, sizeof msg, "bad parameter %s", name);
        serve_error(c, 400, msg, head_only);
        return 0;
    }
    if (g == 1 && (!serve_arg(a, opt) || !serve_arg(a, v))) { serve_error(c, 400, "too many parameters", head_only); return 0; }
    return 1;
}

static void serve_common_args(serve_state *s, serve_argv *a, const char *cmd) {
    a->n = 0;
    serve_arg(a, cmd);
    serve_arg(a, "--index");
    serve_arg(a, s->index_path);
    serve_arg(a, "--format");
    serve_arg(a, "json");
}

/* An image id from text: the row of the current index, or -1. */
static long serve_id(const serve_state *s, const char *t) {
    char *end;
    long v;
    if (!t[0] || t[0] < '0' || t[0] > '9' || strlen(t) > 12) return -1;
    v = strtol(t, &end, 10);
    if (*end || !s->idx || v < 0 || (size_t)v >= s->idx->count) return -1;
    return v;
}

/* /api/search?q=TEXT&image=ID&k=&candidates=&weight=&min=&sort=&under=&after=&before=&nprobe=
 * q uses the CLI's syntax: terms joined by " + " and " - " (a term may be
 * W:term).  Terms naming files are refused: images come by id (image=ID,
 * joined with +), so a request cannot make the server read a file outside
 * the index. */
static void serve_search(serve_conn *c, const http_request *r, serve_state *s, int head_only) {
    serve_argv *a = (serve_argv *)malloc(sizeof *a);
    char q[HTTP_MAX_LINE / 4], img[32];
    int g, gi;
    if (!a) { serve_error(c, 500, "out of memory", head_only); return; }
    serve_common_args(s, a, "search");
    serve_arg(a, "--model");
    serve_arg(a, s->model_path);
    if (s->head) { serve_arg(a, "--head"); serve_arg(a, s->head); }
    if (!serve_param(c, r, a, "k", "--k", head_only) || !serve_param(c, r, a, "candidates", "--candidates", head_only) ||
        !serve_param(c, r, a, "weight", "--aesthetic-weight", head_only) ||
        !serve_param(c, r, a, "min", "--min-aesthetic", head_only) || !serve_param(c, r, a, "sort", "--sort", head_only) ||
        !serve_param(c, r, a, "under", "--under", head_only) || !serve_param(c, r, a, "after", "--after", head_only) ||
        !serve_param(c, r, a, "before", "--before", head_only) || !serve_param(c, r, a, "nprobe", "--nprobe", head_only))
        goto out;
    g = http_query_get(r->query, "q", q, sizeof q);
    gi = http_query_get(r->query, "image", img, sizeof img);
    if (g < 0 || gi < 0) { serve_error(c, 400, "bad q or image", head_only); goto out; }
    if (g == 1) {     /* words between lone '+' / '-' are one term */
        char term[HTTP_MAX_LINE / 4];
        size_t tl = 0;
        char *p = q;
        for (;;) {
            char *w;
            while (*p == ' ') p++;
            w = p;
            while (*p && *p != ' ') p++;
            if ((w == p || ((p - w) == 1 && (*w == '+' || *w == '-'))) && tl) {   /* a term ends */
                struct stat sb;
                const char *colon = strchr(term, ':');
                term[tl] = 0;
                if (term[0] == '-' || stat(term, &sb) == 0 || (colon && stat(colon + 1, &sb) == 0)) {
                    serve_error(c, 400, "a term names a file or starts with '-': give images as image=ID", head_only);
                    goto out;
                }
                if (!serve_arg(a, term)) { serve_error(c, 400, "query too long", head_only); goto out; }
                tl = 0;
            }
            if (w == p) break;
            if ((p - w) == 1 && (*w == '+' || *w == '-')) {
                char op[2];
                op[0] = *w; op[1] = 0;
                if (!serve_arg(a, op)) { serve_error(c, 400, "query too long", head_only); goto out; }
                continue;
            }
            if (tl + (size_t)(p - w) + 2 >= sizeof term) { serve_error(c, 400, "query too long", head_only); goto out; }
            if (tl) term[tl++] = ' ';
            memcpy(term + tl, w, (size_t)(p - w));
            tl += (size_t)(p - w);
        }
    }
    if (gi == 1) {
        long id = serve_id(s, img);
        if (id < 0) { serve_error(c, 404, "no image with that id", head_only); goto out; }
        if (!serve_arg(a, "--image") || !serve_arg(a, aes_index_path(s->idx, (size_t)id))) {
            serve_error(c, 400, "query too long", head_only);
            goto out;
        }
    }
    if (g != 1 && gi != 1) { serve_error(c, 400, "give q=TEXT or image=ID", head_only); goto out; }
    serve_run(c, a, 1, s, head_only);
out:
    free(a);
}

/* /api/dedup?threshold=T */
static void serve_dedup(serve_conn *c, const http_request *r, serve_state *s, int head_only) {
    serve_argv *a = (serve_argv *)malloc(sizeof *a);
    if (!a) { serve_error(c, 500, "out of memory", head_only); return; }
    serve_common_args(s, a, "dedup");
    if (serve_param(c, r, a, "threshold", "--threshold", head_only)) serve_run(c, a, 0, s, head_only);
    free(a);
}

/* /api/index: the id and path of every image; /api/info: counts. */
static void serve_list(serve_conn *c, serve_state *s, int info, int head_only) {
    char *buf = NULL;
    size_t len = 0, r;
    FILE *f = open_memstream(&buf, &len);
    if (!f) { serve_error(c, 500, "out of memory", head_only); return; }
    if (info) {
        fprintf(f, "{\"images\":%zu,\"generation\":%u,\"index\":", s->idx ? s->idx->count : 0, s->gen);
        cli_json_string(f, s->index_path);
        fprintf(f, "}\n");
    } else {
        for (r = 0; s->idx && r < s->idx->count; r++) {
            fprintf(f, "{\"id\":%zu,\"path\":", r);
            cli_json_string(f, aes_index_path(s->idx, r));
            fprintf(f, ",\"aesthetic\":");
            cli_json_number(f, s->idx->aesthetic[r]);
            fprintf(f, "}\n");
        }
    }
    fclose(f);
    serve_respond(c, 200, "application/x-ndjson", buf, len, head_only);
    free(buf);
}

/* ---- images: originals and thumbnails by id ------------------------------------------- */

#ifdef AES_HAVE_STB
typedef struct serve_mem { char *p; size_t n, cap; int bad; } serve_mem;
static void serve_mem_write(void *ctx, void *data, int size) {
    serve_mem *m = (serve_mem *)ctx;
    if (m->bad || size <= 0) return;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = (m->n + (size_t)size) * 2;
        char *p = (char *)realloc(m->p, cap);
        if (!p) { m->bad = 1; return; }
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}
#endif

/* Makes the thumbnail (full = 0: at most SERVE_THUMB_SIDE pixels a side)
 * or the browser-viewable original (full = 1) of image id. */
static char *serve_make_image(serve_state *s, size_t id, int full, size_t *len, const char **type) {
    aes_image img, small;
    char *out = NULL;
    int w, h;
    memset(&img, 0, sizeof img);
    memset(&small, 0, sizeof small);
    if (cli_load_image(s->ctx, aes_index_path(s->idx, id), &img) != AES_OK) {
        fprintf(stderr, "aesalign serve: %s: %s\n", aes_index_path(s->idx, id), aes_last_error(s->ctx));
        aes_clear_error(s->ctx);
        return NULL;
    }
    w = img.width;
    h = img.height;
    if (!full && (w > SERVE_THUMB_SIDE || h > SERVE_THUMB_SIDE)) {
        if (w >= h) { h = (int)((long)h * SERVE_THUMB_SIDE / w); w = SERVE_THUMB_SIDE; }
        else { w = (int)((long)w * SERVE_THUMB_SIDE / h); h = SERVE_THUMB_SIDE; }
        if (w < 1) w = 1;
        if (h < 1) h = 1;
    }
    if (w != img.width || h != img.height) {
        if (aes_image_alloc(s->ctx, &small, w, h, img.channels) != AES_OK) { aes_clear_error(s->ctx); goto done; }
#ifdef AES_HAVE_STB
        stbir_resize_uint8(img.pixels, img.width, img.height, 0, small.pixels, w, h, 0, img.channels);
#else
        {   /* without stb: nearest pixel (ours; thumbnails only) */
            int x, y, ch;
            for (y = 0; y < h; y++)
                for (x = 0; x < w; x++)
                    for (ch = 0; ch < img.channels; ch++)
                        small.pixels[((size_t)y * w + x) * img.channels + ch] =
                            img.pixels[((size_t)(y * img.height / h) * img.width + (size_t)(x * img.width / w)) * img.channels + ch];
        }
#endif
    }
#ifdef AES_HAVE_STB
    {
        serve_mem m;
        const aes_image *src = small.pixels ? &small : &img;
        memset(&m, 0, sizeof m);
        if (stbi_write_jpg_to_func(serve_mem_write, &m, src->width, src->height, src->channels, src->pixels, 85) && !m.bad) {
            out = m.p;
            *len = m.n;
            *type = "image/jpeg";
        } else {
            free(m.p);
        }
    }
#else
    {
        unsigned char *bmp = NULL;
        if (cli_bmp_encode(small.pixels ? &small : &img, &bmp, len) == AES_OK) out = (char *)bmp;
    }
    *type = "image/bmp";
#endif
done:
    aes_image_free(&small);
    aes_image_free(&img);
    return out;
}

/* The content type of an original by its name; NULL: convert it (PPM/PGM). */
static const char *serve_original_type(const char *path) {
    const char *dot = strrchr(path, '.');
    static const char *const map[][2] = {{".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".png", "image/png"},
                                         {".gif", "image/gif"},  {".bmp", "image/bmp"},   {".webp", "image/webp"}};
    size_t k;
    if (!dot) return NULL;
    for (k = 0; k < sizeof map / sizeof *map; k++)
        if (http_eq_nocase(dot, strlen(dot), map[k][0])) return map[k][1];
    return NULL;
}

static void serve_image(serve_conn *c, serve_state *s, const char *idtext, int full, int head_only) {
    long id = serve_id(s, idtext);
    size_t k, len = 0;
    const char *type = NULL;
    char *data;
    serve_thumb *t;
    if (id < 0) { serve_error(c, 404, "no image with that id", head_only); return; }
    if (full && (type = serve_original_type(aes_index_path(s->idx, (size_t)id))) != NULL) {
        void *buf = NULL;
        if (aes_read_file(s->ctx, aes_index_path(s->idx, (size_t)id), &buf, &len) != AES_OK) {
            aes_clear_error(s->ctx);
            serve_error(c, 404, "the image cannot be read", head_only);
            return;
        }
        serve_respond(c, 200, type, (const char *)buf, len, head_only);
        aes_free(buf);
        return;
    }
    for (k = 0; k < s->nthumbs; k++) {
        t = &s->thumbs[k];
        if (t->id == (size_t)id && t->full == full && t->gen == s->gen) {
            t->used = ++s->clock;
            serve_respond(c, 200, t->type, t->data, t->len, head_only);
            return;
        }
    }
    if (!(data = serve_make_image(s, (size_t)id, full, &len, &type))) { serve_error(c, 404, "the image cannot be read", head_only); return; }
    serve_respond(c, 200, type, data, len, head_only);
    /* cache it, evicting the least recently used while over the byte bound */
    if (len > s->thumb_cap) { free(data); return; }
    while (s->nthumbs && s->thumb_bytes + len > s->thumb_cap) {
        size_t old = 0;
        for (k = 1; k < s->nthumbs; k++)
            if (s->thumbs[k].used < s->thumbs[old].used) old = k;
        s->thumb_bytes -= s->thumbs[old].len;
        free(s->thumbs[old].data);
        s->thumbs[old] = s->thumbs[--s->nthumbs];
    }
    t = (serve_thumb *)realloc(s->thumbs, (s->nthumbs + 1) * sizeof *t);
    if (!t) { free(data); return; }
    s->thumbs = t;
    t = &t[s->nthumbs++];
    t->id = (size_t)id;
    t->gen = s->gen;
    t->full = full;
    t->data = data;
    t->len = len;
    t->type = type;
    t->used = ++s->clock;
    s->thumb_bytes += len;
}

/* ---- one request ---------------------------------------------------------------------- */

static void serve_handle(serve_conn *c, const http_request *r, serve_state *s) {
    int head_only = !strcmp(r->method, "HEAD");
    if (!r->keep_alive) c->close_after = 1;
    if (strcmp(r->method, "GET") && !head_only) { serve_error(c, 405, "GET or HEAD only", 0); return; }
    serve_check_index(s);
    if (!strcmp(r->path, "/") || !strcmp(r->path, "/index.html"))
        serve_respond(c, 200, "text/html; charset=utf-8", serve_page, serve_page_len, head_only);
    else if (!strcmp(r->path, "/api/search")) serve_search(c, r, s, head_only);
    else if (!strcmp(r->path, "/api/dedup")) serve_dedup(c, r, s, head_only);
    else if (!strcmp(r->path, "/api/index")) serve_list(c, s, 0, head_only);
    else if (!strcmp(r->path, "/api/info")) serve_list(c, s, 1, head_only);
    else if (!strncmp(r->path, "/img/", 5)) serve_image(c, s, r->path + 5, 1, head_only);
    else if (!strncmp(r->path, "/thumb/", 7)) serve_image(c, s, r->path + 7, 0, head_only);
    else serve_error(c, 404, "no such page", head_only);
}

/* Answers every complete request in c->in (pipelining allowed). */
static void serve_input(serve_conn *c, serve_state *s) {
    while (c->nin && !c->close_after) {
        http_request *r = (http_request *)malloc(sizeof *r);
        long n;
        if (!r) { c->close_after = 1; return; }
        n = http_parse(c->in, c->nin, r);
        if (n == 0) { free(r); return; }
        if (n < 0) {
            c->close_after = 1;            /* the stream cannot be trusted after a bad request */
            serve_error(c, (int)-n, "malformed or too large request", 0);
            free(r);
            return;
        }
        serve_handle(c, r, s);
        free(r);
        memmove(c->in, c->in + n, c->nin - (size_t)n);
        c->nin -= (size_t)n;
    }
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void serve_close(serve_conn *c) {
    close(c->fd);
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static void serve_usage(void) {
    printf("usage: aesalign serve --index FILE --model M [options]\n"
           "A local web page that searches the index live (HTML, CSS and JS inside the binary).\n"
           "  --index FILE         the index (`aesalign index build`); reloaded when the file changes;\n"
           "                       FILE.ivf is used as by `aesalign search` when it matches the index\n"
           "  --head H             score with this head instead of the index's stored scores\n"
           "  --bind ADDR          IPv4 address to listen on (default 127.0.0.1: this machine only)\n"
           "  --port N             TCP port (default 8080; 0: any free port, printed)\n"
           "  --cache-mb N         memory for thumbnails (default 64)\n"
           "  --port-file FILE     write the port there once listening (for scripts and tests)\n"
           "Routes: / (the page), /api/search (what `aesalign search --format json` prints; parameters\n"
           "q, image=ID, k, candidates, weight, min, sort, under, after, before, nprobe), /api/dedup\n"
           "(threshold), /api/index, /api/info, /img/ID, /thumb/ID.  Images only by their id.\n"
           "SIGINT / SIGTERM stop it.\n"
           CLI_MODEL_HELP);
}

CLI_COMMAND(serve, "a local web page to search an index: live results, aesthetic sliders, dedup view") {
    const char *cmd = "serve", *bind_addr = "127.0.0.1", *port_file = NULL;
    long port = 8080, cache_mb = 64;
    cli_model_opts mo;
    serve_state s;
    serve_conn *conns = NULL;
    struct pollfd *pfd = NULL;
    struct sockaddr_in sa;
    struct sigaction act, old_int, old_term, old_pipe;
    int lfd = -1, rc = 1, i, one = 1;
    size_t k;
    memset(&mo, 0, sizeof mo);
    memset(&s, 0, sizeof s);
    for (i = 1; i < argc; i++) {
        int rr;
        if ((rr = cli_model_opt(argc, argv, &i, &mo))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--index", &s.index_path))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--head", &s.head))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--bind", &bind_addr))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_str(argc, argv, &i, "--port-file", &port_file))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--port", &port))) { if (rr < 0) return 1; continue; }
        if ((rr = cli_opt_int(argc, argv, &i, "--cache-mb", &cache_mb))) { if (rr < 0) return 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { serve_usage(); return 0; }
        return cli_fail(cmd, NULL, "unknown argument %s (see --help)", argv[i]);
    }
    if (!s.index_path || !mo.model) return cli_fail(cmd, NULL, "--index and --model are required (see --help)");
    if (port < 0 || port > 65535) return cli_fail(cmd, NULL, "--port must be in [0, 65535]");
    if (cache_mb < 0 || cache_mb > 65536) return cli_fail(cmd, NULL, "--cache-mb must be in [0, 65536]");
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) return cli_fail(cmd, NULL, "--bind wants an IPv4 address, not '%s'", bind_addr);
    s.model_path = mo.model;
    s.thumb_cap = (size_t)cache_mb << 20;
    if (!(s.ctx = aes_ctx_create())) return cli_fail(cmd, NULL, "out of memory");
    aes_threads_set(s.ctx, cli_threads());
    serve_check_index(&s);
    if (!s.idx) { cli_fail(cmd, NULL, "cannot load the index %s", s.index_path); goto done; }
    /* the model and tokenizer once; /api/search runs the search command with them */
    if (cli_load_model(s.ctx, &mo, &s.pre.model) != AES_OK) { cli_fail(cmd, s.ctx, "loading %s", mo.model); goto done; }
    if (aes_clip_config_get(s.pre.model)->has_text &&
        cli_load_tokenizer(s.ctx, mo.vocab, mo.model, cmd, &s.pre.tok) != AES_OK)
        goto done;
    {
        size_t n = 0, j;
        for (j = 0; serve_page_lines[j]; j++) n += strlen(serve_page_lines[j]);
        if (!(serve_page = (char *)malloc(n + 1))) { cli_fail(cmd, NULL, "out of memory"); goto done; }
        for (j = 0, n = 0; serve_page_lines[j]; j++) {
            memcpy(serve_page + n, serve_page_lines[j], strlen(serve_page_lines[j]));
            n += strlen(serve_page_lines[j]);
        }
        serve_page[n] = 0;
        serve_page_len = n;
    }
    conns = (serve_conn *)calloc(SERVE_MAX_CONN, sizeof *conns);
    pfd = (struct pollfd *)calloc(SERVE_MAX_CONN + 1, sizeof *pfd);
    if (!conns || !pfd) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    for (k = 0; k < SERVE_MAX_CONN; k++) conns[k].fd = -1;

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) { cli_fail(cmd, NULL, "socket: %s", strerror(errno)); goto done; }
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0) { cli_fail(cmd, NULL, "bind %s:%ld: %s", bind_addr, port, strerror(errno)); goto done; }
    if (listen(lfd, 128) != 0) { cli_fail(cmd, NULL, "listen: %s", strerror(errno)); goto done; }
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    {
        socklen_t sl = sizeof sa;
        getsockname(lfd, (struct sockaddr *)&sa, &sl);
        port = ntohs(sa.sin_port);
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = serve_on_signal;
    sigemptyset(&act.sa_mask);
    sigaction(SIGINT, &act, &old_int);
    sigaction(SIGTERM, &act, &old_term);
    act.sa_handler = SIG_IGN;                  /* a client closing early is not our death */
    sigaction(SIGPIPE, &act, &old_pipe);
    if (strcmp(bind_addr, "127.0.0.1") != 0)
        fprintf(stderr, "aesalign serve: WARNING: listening on %s, not 127.0.0.1: anyone who can reach this machine on port %ld "
                        "can search the index and see its images (there is no password)\n", bind_addr, port);
    fprintf(stderr, "aesalign serve: %zu images; open http://%s:%ld/  (Ctrl-C stops)\n", s.idx->count, bind_addr, port);
    if (port_file) {
        char text[32];
        int n = snprintf(text, sizeof text, "%ld\n", port);
        if (aes_write_file_atomic(s.ctx, port_file, text, (size_t)n) != AES_OK) { cli_fail(cmd, s.ctx, "writing %s", port_file); goto restore; }
    }

    while (!serve_stop) {
        int np = 0, ready;
        double now = cli_now();
        pfd[np].fd = lfd;
        pfd[np].events = POLLIN;
        pfd[np].revents = 0;
        np++;
        for (k = 0; k < SERVE_MAX_CONN; k++) {
            serve_conn *c = &conns[k];
            if (c->fd < 0) continue;
            if (now - c->last > (c->draining ? 2.0 : SERVE_IDLE_SECS)) { serve_close(c); continue; }
            pfd[np].fd = c->fd;
            pfd[np].events = (short)(c->sent < c->nout ? POLLOUT : POLLIN);
            pfd[np].revents = 0;
            np++;
        }
        ready = poll(pfd, (nfds_t)np, 500);
        if (ready < 0) {
            if (errno == EINTR) continue;
            cli_fail(cmd, NULL, "poll: %s", strerror(errno));
            goto restore;
        }
        if (pfd[0].revents & POLLIN) {
            for (;;) {    /* accept all waiting; over the limit: refuse with 503 */
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0) break;
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                for (k = 0; k < SERVE_MAX_CONN && conns[k].fd >= 0; k++) {}
                if (k == SERVE_MAX_CONN) {
                    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    if (write(fd, busy, sizeof busy - 1) < 0) {}
                    close(fd);
                    continue;
                }
                memset(&conns[k], 0, sizeof conns[k]);
                conns[k].fd = fd;
                conns[k].last = cli_now();
            }
        }
        for (i = 1; i < np; i++) {
            serve_conn *c = NULL;
            if (!pfd[i].revents) continue;
            for (k = 0; k < SERVE_MAX_CONN; k++)
                if (conns[k].fd == pfd[i].fd) { c = &conns[k]; break; }
            if (!c) continue;
            c->last = cli_now();
            if (c->sent < c->nout) {
                ssize_t w = write(c->fd, c->out + c->sent, c->nout - c->sent);
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { serve_close(c); continue; }
                if (w > 0) c->sent += (size_t)w;
                if (c->sent == c->nout) {
                    c->sent = c->nout = 0;
                    if (c->close_after) {
                        /* a lingering close: closing with unread bytes would reset the
                         * connection and could destroy the response before it is read */
                        shutdown(c->fd, SHUT_WR);
                        c->draining = 1;
                        continue;
                    }
                    serve_input(c, &s);
                }
                continue;
            }
            if (c->draining) {
                char sink[4096];
                ssize_t got = read(c->fd, sink, sizeof sink);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) serve_close(c);
                continue;
            }
            {
                ssize_t got;
                if (!c->in && !(c->in = (char *)malloc(HTTP_MAX_HEAD + HTTP_MAX_BODY))) { serve_close(c); continue; }
                got = read(c->fd, c->in + c->nin, HTTP_MAX_HEAD + HTTP_MAX_BODY - c->nin);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) { serve_close(c); continue; }
                if (got > 0) c->nin += (size_t)got;
                serve_input(c, &s);
                if (c->nin == HTTP_MAX_HEAD + HTTP_MAX_BODY && c->nout == 0) {   /* cannot happen: parse bounds it */
                    c->close_after = 1;
                    serve_error(c, 413, "request too large", 0);
                }
            }
        }
    }
    fprintf(stderr, "aesalign serve: stopping\n");
    rc = 0;
restore:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
done:
    if (conns)
        for (k = 0; k < SERVE_MAX_CONN; k++)
            if (conns[k].fd >= 0) serve_close(&conns[k]);
    free(conns);
    free(pfd);
    free(serve_page);
    serve_page = NULL;
    if (lfd >= 0) close(lfd);
    serve_thumbs_clear(&s);
    free(s.thumbs);
    aes_ivf_free(s.pre.ivf);
    aes_tokenizer_free(s.pre.tok);
    aes_clip_free(s.pre.model);
    aes_index_free(s.idx);
    aes_ctx_free(s.ctx);
    return rc;
}
