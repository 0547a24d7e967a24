/* aesalign index: build, update and describe an image index (aesalign.h).
 *
 *   aesalign index build  --model M [--head H] [--out FILE] [options] DIR...
 *   aesalign index update --index FILE --model M [--head H] [options] [DIR...]
 *   aesalign index merge  OUT SHARD...
 *   aesalign index ivf    FILE [--out F] [--nlist N] [--seed S] [--threads T]
 *   aesalign index export --npy DIR FILE
 *   aesalign index info   FILE
 *
 * build walks the folders recursively (entries sorted by name, hidden ones
 * skipped, symlinked folders followed once), embeds every image with the
 * CLIP image tower, scores it with the aesthetic head and writes one index
 * file.  Files that cannot be decoded are skipped with a warning and
 * counted; the run never stops on one bad file.
 *
 * Crash safety: the index is written atomically at the end, so an
 * interrupted run leaves the previous FILE as it was.  While it runs, a
 * checkpoint FILE.partial (itself a complete index, written atomically) is
 * refreshed every --checkpoint-every images; the next build or update with
 * the same model picks it up and embeds only what is missing.
 *
 * update re-walks the folders given (by default every recorded one), keeps
 * the entries whose file size and mtime are unchanged, embeds new and
 * changed files and drops files that are gone; the entries of recorded
 * folders not given are kept as they are, and only --remove DIR drops a
 * folder.  A new file whose bytes equal an indexed file's (a rename, move
 * or copy) reuses that embedding, found by content hash.  A different head
 * only re-scores the stored vectors.
 *
 * Every entry gets its date (EXIF DateTimeOriginal, else the mtime) and
 * content hash.  Writers take a lock on FILE.lock first (see index_lock),
 * so concurrent builds and updates of one index run one after the other.
 */
#include "cli.h"
#include <math.h>
#include <time.h>
#include <errno.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <limits.h>

static void ivf_note_stale(aes_ctx *ctx, const char *cmd, const char *path, const aes_index *idx);


/* ============================================================================
 *  Walking folders
 * ========================================================================= */

int cli_is_image_name(const char *name) {
    static const char *const ext[] = {"jpg", "jpeg", "png", "ppm", "pgm", "pnm", "bmp", "gif", "tga", "webp"};
    const char *dot = strrchr(name, '.');
    size_t k, i;
    if (!dot) return 0;
    for (k = 0; k < sizeof ext / sizeof *ext; k++) {
        const char *e = ext[k];
        for (i = 0; e[i] && dot[1 + i]; i++) {
            char c = dot[1 + i];
            if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
            if (c != e[i]) break;
        }
        if (!e[i] && !dot[1 + i]) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join_path(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    char *p = (char *)malloc(dl + nl + 2);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (dl && dir[dl - 1] != '/') p[dl++] = '/';
    memcpy(p + dl, name, nl + 1);
    return p;
}

static int64_t stat_mtime_ns(const struct stat *sb) {
    return (int64_t)sb->st_mtim.tv_sec * 1000000000 + (int64_t)sb->st_mtim.tv_nsec;
}

/* Adds the images under `path` (a folder or a file); returns 0 when out of memory. */
static int walk_path(cli_walk *w, const char *path, int depth) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "aesalign %s: warning: %s: %s (skipped)\n", w->cmd ? w->cmd : "index", path, strerror(errno));
        w->unreadable_dirs++;
        return 1;
    }
    if (S_ISDIR(sb.st_mode)) {
        DIR *d;
        struct dirent *e;
        char **names = NULL;
        size_t nn = 0, cn = 0, i, k;
        for (k = 0; k < w->nseen; k++)
            if (w->seen[k].dev == (unsigned long long)sb.st_dev && w->seen[k].ino == (unsigned long long)sb.st_ino) return 1;   /* loop */
        if (depth > 64) return 1;
        if (w->nseen == w->capseen) {
            size_t c = w->capseen ? w->capseen * 2 : 64;
            void *p = realloc(w->seen, c * sizeof *w->seen);
            if (!p) return 0;
            w->seen = p;
            w->capseen = c;
        }
        w->seen[w->nseen].dev = (unsigned long long)sb.st_dev;
        w->seen[w->nseen].ino = (unsigned long long)sb.st_ino;
        w->nseen++;
        if (!(d = opendir(path))) {
            fprintf(stderr, "aesalign %s: warning: cannot read folder %s: %s (skipped)\n", w->cmd ? w->cmd : "index", path,
                    strerror(errno));
            w->unreadable_dirs++;
            return 1;
        }
        for (;;) {
            errno = 0;
            if (!(e = readdir(d))) {
                /* e.g. EOVERFLOW: a 32-bit build without _FILE_OFFSET_BITS=64 on a
                 * file system with 64-bit inode numbers */
                if (errno) {
                    fprintf(stderr, "aesalign %s: warning: cannot list folder %s: %s (skipped the rest)\n",
                            w->cmd ? w->cmd : "index", path, strerror(errno));
                    w->unreadable_dirs++;
                }
                break;
            }
            if (e->d_name[0] == '.') continue;            /* ., .., hidden files and folders */
            if (nn == cn) {
                size_t c = cn ? cn * 2 : 64;
                char **p = (char **)realloc(names, c * sizeof *names);
                if (!p) { closedir(d); return 0; }
                names = p;
                cn = c;
            }
            if (!(names[nn] = join_path(path, e->d_name))) { closedir(d); return 0; }
            nn++;
        }
        closedir(d);
        qsort(names, nn, sizeof *names, cmp_str);     /* the same order on every run */
        for (i = 0; i < nn; i++) {
            int ok = walk_path(w, names[i], depth + 1);
            free(names[i]);
            if (!ok) { for (i++; i < nn; i++) free(names[i]); free(names); return 0; }
        }
        free(names);
        return 1;
    }
    if (!S_ISREG(sb.st_mode) || !cli_is_image_name(path)) {
        w->ignored++;
        return 1;
    }
    if (w->n == w->cap) {
        size_t c = w->cap ? w->cap * 2 : 256;
        cli_walk_file *p = (cli_walk_file *)realloc(w->files, c * sizeof *p);
        if (!p) return 0;
        w->files = p;
        w->cap = c;
    }
    if (!(w->files[w->n].path = (char *)malloc(strlen(path) + 1))) return 0;
    strcpy(w->files[w->n].path, path);
    w->files[w->n].size = (uint64_t)sb.st_size;
    w->files[w->n].mtime_ns = stat_mtime_ns(&sb);
    w->n++;
    return 1;
}

int cli_walk_add(cli_walk *w, const char *path) { return walk_path(w, path, 0); }

void cli_walk_free(cli_walk *w) {
    size_t i;
    for (i = 0; i < w->n; i++) free(w->files[i].path);
    free(w->files);
    free(w->seen);
    memset(w, 0, sizeof *w);
}

/* ============================================================================
 *  Progress line
 * ========================================================================= */

typedef struct progress {
    double t0, last;
    size_t total, shown;
    int tty;
} progress;

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, cap, "?");
    else if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

/* "done/total, images/s, ETA" on stderr: in place on a terminal, else one
 * line every 10 s. */
static void progress_show(progress *p, size_t done, int final) {
    double now = cli_now(), rate, el = now - p->t0;
    char eta[32];
    if (!final && now - p->last < (p->tty ? 0.25 : 10.0)) return;
    if (final && !p->tty && p->shown == done) return;   /* already said */
    p->last = now;
    p->shown = done;
    rate = el > 0 ? (double)done / el : 0;
    fmt_duration(eta, sizeof eta, rate > 0 ? (double)(p->total - done) / rate : -1);
    fprintf(stderr, "%sindex: %zu/%zu images, %.1f images/s, ETA %s%s", p->tty ? "\r" : "", done, p->total, rate,
            final ? "0s" : eta, p->tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* ============================================================================
 *  build / update
 * ========================================================================= */

typedef struct build_opts {
    cli_model_opts m;
    const char *head, *out;
    unsigned storage;
    long batch, checkpoint_every;
    int quiet;
    const char **dirs;
    int ndirs;
    long shard_k, shard_n;      /* --shard K/N (N = 0: all files) */
} build_opts;

/* The nth value of "key=" in an index's meta text, copied to a malloc'ed
 * string, or NULL. */
static char *meta_value(const aes_index *idx, const char *key, int nth) {
    size_t n = (idx->meta ? strlen(idx->meta) : 0) + 1;   /* a value is shorter than the whole text */
    char *v = (char *)malloc(n);
    if (v && aes_index_get_meta(idx, key, nth, v, n) != AES_OK) { free(v); v = NULL; }
    return v;
}

/* Files that failed to decode are remembered in the meta as
 * "bad=SIZE MTIME_NS PATH", so an unchanged bad file is not retried on
 * every update. */
static int meta_is_bad(const char *meta, const cli_walk_file *wf) {
    char want[64];
    size_t wl;
    const char *p = meta;
    snprintf(want, sizeof want, "bad=%llu %lld ", (unsigned long long)wf->size, (long long)wf->mtime_ns);
    wl = strlen(want);
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > wl && !strncmp(p, want, wl) && ll - wl == strlen(wf->path) && !strncmp(p + wl, wf->path, ll - wl))
            return 1;
        p += ll + (eol ? 1 : 0);
    }
    return 0;
}

/* A growing meta text, capped below AES_INDEX_META_MAX. */
typedef struct meta_buf { char *s; size_t len, cap; } meta_buf;
static void meta_add(meta_buf *m, const char *key, const char *fmt_value1, const char *value2) {
    char line[8192];
    size_t n;
    if (strchr(fmt_value1, '\n') || (value2 && strchr(value2, '\n'))) return;
    n = (size_t)snprintf(line, sizeof line, "%s=%s%s\n", key, fmt_value1, value2 ? value2 : "");
    if (n >= sizeof line || m->len + n + 1 > AES_INDEX_META_MAX) return;
    if (m->len + n + 1 > m->cap) {
        size_t c = (m->cap ? m->cap : 4096);
        char *q;
        while (c < m->len + n + 1) c *= 2;
        if (!(q = (char *)realloc(m->s, c))) return;
        m->s = q;
        m->cap = c;
    }
    memcpy(m->s + m->len, line, n + 1);
    m->len += n;
}

/* ---- the lock: one writer at a time ------------------------------------------
 * A POSIX record lock on the side file FILE.lock, held from before the
 * index is read until after it is written, so two writers cannot both
 * start from the same old index and one lose the other's additions.  The
 * holder writes "pid N on host H" into the file for the other's message.
 * The lock file itself stays (removing it would let a third writer lock a
 * new file while the second waits on the old one).  Readers (search) need
 * no lock: the index is replaced by an atomic rename. */
static void lock_holder(int fd, char *out, size_t cap) {
    struct flock fl;
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[0 > n ? 0 : n] = 0;
    if (n > 0 && out[n - 1] == '\n') out[n - 1] = 0;
    if (n > 0) return;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) snprintf(out, cap, "pid %ld", (long)fl.l_pid);
    else snprintf(out, cap, "another process");
}

static int index_lock(const char *cmd, const char *index, int nowait) {
    char path[4200], holder[512], host[256];
    struct flock fl;
    int fd;
    snprintf(path, sizeof path, "%s.lock", index);
    if ((fd = open(path, O_RDWR | O_CREAT, 0666)) < 0) {
        cli_fail(cmd, NULL, "cannot open the lock file %s: %s", path, strerror(errno));
        return -1;
    }
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        if (errno != EACCES && errno != EAGAIN) {
            cli_fail(cmd, NULL, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        lock_holder(fd, holder, sizeof holder);
        if (nowait) {
            cli_fail(cmd, NULL, "%s is being written by %s (lock file %s); --no-wait: giving up", index, holder, path);
            close(fd);
            return -1;
        }
        fprintf(stderr, "aesalign %s: waiting for %s, which is writing %s (lock file %s)\n", cmd, holder, index, path);
        while (fcntl(fd, F_SETLKW, &fl) != 0) {
            if (errno == EINTR) continue;
            cli_fail(cmd, NULL, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    snprintf(holder, sizeof holder, "pid %ld on host %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, strlen(holder), 0) < 0) { /* the message only */ }
    return fd;
}

static void index_unlock(int fd) {
    if (fd < 0) return;
    if (ftruncate(fd, 0) != 0) { /* the next holder rewrites it */ }
    close(fd);          /* releases the lock */
}

/* ---- folders ------------------------------------------------------------------ */

/* A folder as recorded: without trailing slashes ("/" stays). */
static char *norm_dir(const char *d) {
    size_t n = strlen(d);
    char *c;
    while (n > 1 && d[n - 1] == '/') n--;
    if (!(c = (char *)malloc(n + 1))) return NULL;
    memcpy(c, d, n);
    c[n] = 0;
    return c;
}

/* 1 when path is root or inside it (root as norm_dir gives it). */
static int under(const char *path, const char *root) {
    size_t n = strlen(root);
    if (strncmp(path, root, n) != 0) return 0;
    return path[n] == 0 || path[n] == '/' || (n && root[n - 1] == '/');
}

static int under_any(const char *path, char **roots, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (under(path, roots[i])) return 1;
    return 0;
}

/* A list of malloc'ed strings without duplicates. */
typedef struct str_list { char **s; int n; } str_list;
static int str_list_add(str_list *l, const char *v) {
    int i;
    char **p;
    for (i = 0; i < l->n; i++)
        if (!strcmp(l->s[i], v)) return 1;
    if (!(p = (char **)realloc(l->s, (size_t)(l->n + 1) * sizeof *p))) return 0;
    l->s = p;
    if (!(l->s[l->n] = norm_dir(v))) return 0;
    l->n++;
    return 1;
}
static void str_list_free(str_list *l) {
    int i;
    for (i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->s = NULL;
    l->n = 0;
}

/* ---- dates -------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil, public domain algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t cli_civil_seconds(int y, int mo, int d, int h, int mi, int s) {
    return days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + s;
}

/* The index's date of a photo: EXIF "YYYY:MM:DD HH:MM:SS" when there is
 * one (year 0 and month 0, written by some cameras for "unset", count as
 * none), else the file's mtime as local wall-clock time. */
int64_t cli_photo_date(const char *exif, int64_t mtime_ns) {
    int y, mo, d, h, mi, s;
    time_t t;
    struct tm tm;
    if (exif && exif[0] && sscanf(exif, "%4d:%2d:%2d%*c%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &s) == 6 && y > 0 &&
        mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 && s < 61)
        return cli_civil_seconds(y, mo, d, h, mi, s);
    t = (time_t)(mtime_ns / 1000000000);
    if (!localtime_r(&t, &tm)) return mtime_ns / 1000000000;
    return cli_civil_seconds(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- content hashes of the indexes at hand ------------------------------------ */
typedef struct hash_ref { uint64_t hash; const aes_index *src; size_t row; } hash_ref;
static int cmp_hash_ref(const void *a, const void *b) {
    uint64_t x = ((const hash_ref *)a)->hash, y = ((const hash_ref *)b)->hash;
    return x < y ? -1 : x > y;
}

static int hashes_add(hash_ref **h, size_t *n, const aes_index *src) {
    size_t i;
    hash_ref *p;
    if (!src || !src->count) return 1;
    if (!(p = (hash_ref *)realloc(*h, (*n + src->count) * sizeof *p))) return 0;
    *h = p;
    for (i = 0; i < src->count; i++)
        if (src->content_hash[i]) { p[*n].hash = src->content_hash[i]; p[*n].src = src; p[(*n)++].row = i; }
    return 1;
}

/* ---- shards ------------------------------------------------------------------- */

/* The shard of a file: FNV-1a (64-bit; Fowler, Noll, Vo) of its path
 * relative to the folder given on the command line, modulo N.  Relative,
 * so machines that mount the collection at different places agree; a
 * hash, so a file keeps its shard when others are added or removed. */
static long shard_of(const char *path, char **roots, int nroots, long n) {
    uint64_t h = 14695981039346656037ULL;
    const char *rel = path;
    int i;
    for (i = 0; i < nroots; i++)
        if (under(path, roots[i])) {
            size_t l = strlen(roots[i]);
            rel = path + l;
            while (*rel == '/') rel++;
            break;
        }
    for (; *rel; rel++) {
        h ^= (unsigned char)*rel;
        h *= 1099511628211ULL;
    }
    return (long)(h % (uint64_t)n);
}

/* "K/N" with 0 <= K < N. */
static int parse_shard(const char *s, long *k, long *n) {
    char *e;
    long a, b;
    errno = 0;
    a = strtol(s, &e, 10);
    if (e == s || *e != '/' || errno) return 0;
    s = e + 1;
    b = strtol(s, &e, 10);
    if (e == s || *e || errno || b < 1 || b > 1000000 || a < 0 || a >= b) return 0;
    *k = a;
    *n = b;
    return 1;
}

/* ---- build / update --------------------------------------------------------- */

static int cmd_build(int argc, char **argv, int update) {
    const char *cmd = update ? "index update" : "index build";
    build_opts o;
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = NULL;
    aes_head head;
    int have_head = 0, from_partial = 0, rc = 1, S, E, i, nowait = 0, lockfd = -1, head_differs = 0;
    char head_id[17] = "", partial[4200], *owned[4] = {NULL, NULL, NULL, NULL};
    str_list recorded = {NULL, 0}, removed = {NULL, 0}, walked = {NULL, 0}, roots = {NULL, 0}, excluded = {NULL, 0};
    aes_index *prev = NULL, *cache = NULL, *idx = NULL;
    cli_walk w;
    meta_buf meta = {NULL, 0, 0};
    hash_ref *hashes = NULL;
    size_t nhashes = 0;
    size_t f, reused = 0, changed = 0, embedded = 0, skipped = 0, known_bad = 0, rescored = 0, dropped = 0, kept = 0;
    size_t copied = 0, since_ckpt = 0, *todo = NULL, ntodo = 0, *batch_file = NULL;
    float *pixels = NULL, *emb = NULL, *scores = NULL;
    double t0 = cli_now(), ckpt_cost = 0;
    uint64_t *batch_hash = NULL;
    int64_t *batch_date = NULL;
    progress pg;
    memset(&o, 0, sizeof o);
    memset(&w, 0, sizeof w);
    memset(&head, 0, sizeof head);
    w.cmd = cmd;
    o.storage = AES_INDEX_F32 | AES_INDEX_I8;
    o.batch = 16;
    o.checkpoint_every = 256;
    if (!ctx) return cli_fail(cmd, NULL, "out of memory");
    o.dirs = (const char **)calloc((size_t)argc + 1, sizeof *o.dirs);
    if (!o.dirs) { aes_ctx_free(ctx); return cli_fail(cmd, NULL, "out of memory"); }
    for (i = 2; i < argc; i++) {
        const char *s;
        int r;
        if ((r = cli_model_opt(argc, argv, &i, &o.m))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_str(argc, argv, &i, "--head", &o.head))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_str(argc, argv, &i, update ? "--index" : "--out", &o.out))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--batch", &o.batch))) { if (r < 0) goto done; continue; }
        if ((r = cli_opt_int(argc, argv, &i, "--checkpoint-every", &o.checkpoint_every))) { if (r < 0) goto done; continue; }
        if (update && (r = cli_opt_str(argc, argv, &i, "--remove", &s))) {
            if (r < 0) goto done;
            if (!str_list_add(&removed, s)) { cli_fail(cmd, NULL, "out of memory"); goto done; }
            continue;
        }
        if ((r = cli_opt_str(argc, argv, &i, "--storage", &s))) {
            if (r < 0) goto done;
            if (!strcmp(s, "f32")) o.storage = AES_INDEX_F32;
            else if (!strcmp(s, "int8")) o.storage = AES_INDEX_I8;
            else if (!strcmp(s, "both")) o.storage = AES_INDEX_F32 | AES_INDEX_I8;
            else { cli_fail(cmd, NULL, "--storage wants f32, int8 or both, not '%s'", s); goto done; }
            continue;
        }
        if (!update && (r = cli_opt_str(argc, argv, &i, "--shard", &s))) {
            if (r < 0) goto done;
            if (!parse_shard(s, &o.shard_k, &o.shard_n)) { cli_fail(cmd, NULL, "--shard wants K/N with 0 <= K < N, not '%s'", s); goto done; }
            continue;
        }
        if (!strcmp(argv[i], "--quiet")) { o.quiet = 1; continue; }
        if (!strcmp(argv[i], "--no-wait")) { nowait = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (update)
                printf("usage: aesalign index update --index FILE [--model M] [--head H] [--remove DIR]... [options] [DIR...]\n"
                       "  re-walks the folders given (default: every folder recorded in FILE), embeds new and\n"
                       "  changed images and drops deleted ones there; every other recorded folder is kept as\n"
                       "  it is, and folders given for the first time are added.  Images renamed, moved or\n"
                       "  copied reuse their embedding (found by content hash).  --model and --head default\n"
                       "  to the recorded paths.\n"
                       "  --remove DIR         drop DIR (a recorded folder or one inside it, which then stays out\n"
                       "                       until given again) and its images\n");
            else
                printf("usage: aesalign index build --model M [--head H] [--out FILE] [options] DIR...\n"
                       "  --shard K/N          embed only shard K (0..N-1) of N: the files whose path relative to\n"
                       "                       the DIR given hashes (FNV-1a) to K mod N; `aesalign index merge`\n"
                       "                       joins the N shard indexes into the index one build would make\n");
            printf(CLI_MODEL_HELP
                   "  --head H             aesthetic head (safetensors); without one, no aesthetic scores\n"
                   "  %-20s the index file%s\n"
                   "  --storage S          f32, int8 or both (default both: int8 scans, fp32 re-scores)\n"
                   "  --batch N            images per encoder batch (default 16)\n"
                   "  --checkpoint-every N refresh FILE.partial every N new images (default 256)\n"
                   "  --no-wait            fail at once when another process is writing FILE (default: wait)\n"
                   "  --quiet              no progress line\n"
                   "One writer at a time: FILE.lock names the process writing FILE.  Every image's date\n"
                   "(EXIF DateTimeOriginal, else the file's mtime) and content hash are stored.\n"
                   "Threads: $AES_THREADS, else every core.\n", update ? "--index FILE" : "--out FILE",
                   update ? "" : " (default index.aesidx)");
            rc = 0;
            goto done;
        }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        o.dirs[o.ndirs++] = argv[i];
    }
    if (!o.out) o.out = update ? NULL : "index.aesidx";
    if (!o.out) { cli_fail(cmd, NULL, "--index FILE is required"); goto done; }
    if (o.batch < 1 || o.batch > 1024) { cli_fail(cmd, NULL, "--batch must be in [1, 1024]"); goto done; }
    if (o.checkpoint_every < 1) o.checkpoint_every = 1;
    if (!update && o.ndirs == 0) { cli_fail(cmd, NULL, "no folders given"); goto done; }
    snprintf(partial, sizeof partial, "%s.partial", o.out);
    aes_threads_set(ctx, cli_threads());
    if ((lockfd = index_lock(cmd, o.out, nowait)) < 0) goto done;

    /* update: the index to bring up to date, and what it recorded */
    if (update) {
        char *d;
        int k = 0;
        if (aes_index_load(ctx, o.out, &prev) != AES_OK) {
            cli_fail(cmd, ctx, "cannot read the index (use `aesalign index build` to make one)");
            goto done;
        }
        if (!o.m.model) o.m.model = owned[0] = meta_value(prev, "model", 0);
        if (!o.head && prev->head_id[0]) o.head = owned[1] = meta_value(prev, "head", 0);
        while ((d = meta_value(prev, "root", k++)) != NULL) {
            int ok = str_list_add(&recorded, d);
            free(d);
            if (!ok) { cli_fail(cmd, NULL, "out of memory"); goto done; }
        }
        /* folders removed from inside a recorded one stay out, unless given again */
        k = 0;
        while ((d = meta_value(prev, "exclude", k++)) != NULL) {
            int ok = 1;
            for (i = 0; i < o.ndirs && ok; i++) ok = !under(d, o.dirs[i]);
            ok = !ok || str_list_add(&excluded, d);
            free(d);
            if (!ok) { cli_fail(cmd, NULL, "out of memory"); goto done; }
        }
        for (i = 0; i < removed.n; i++) {
            int k2, known = 0;
            for (k2 = 0; k2 < recorded.n; k2++) known |= under(removed.s[i], recorded.s[k2]);
            if (!known) {
                cli_fail(cmd, NULL, "--remove %s: not a folder of this index (`aesalign index info %s` lists them)",
                         removed.s[i], o.out);
                goto done;
            }
        }
    }
    /* the folders walked now: the ones given, else every recorded one */
    for (i = 0; i < o.ndirs; i++)
        if (!str_list_add(&walked, o.dirs[i])) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    if (o.ndirs == 0)
        for (i = 0; i < recorded.n; i++)
            if (!under_any(recorded.s[i], removed.s, removed.n) && !str_list_add(&walked, recorded.s[i])) {
                cli_fail(cmd, NULL, "out of memory");
                goto done;
            }
    /* the folders recorded afterwards: the old ones but the removed, then the new */
    for (i = 0; i < recorded.n; i++)
        if (!under_any(recorded.s[i], removed.s, removed.n) && !str_list_add(&roots, recorded.s[i])) goto oom;
    for (i = 0; i < walked.n; i++)
        if (!under_any(walked.s[i], roots.s, roots.n) && !str_list_add(&roots, walked.s[i])) goto oom;
    for (i = 0; i < removed.n; i++) {          /* removed from inside a folder still recorded */
        int k2, inside = 0;
        for (k2 = 0; k2 < roots.n; k2++) inside |= under(removed.s[i], roots.s[k2]) && strcmp(removed.s[i], roots.s[k2]);
        if (inside && !str_list_add(&excluded, removed.s[i])) goto oom;
    }
    for (i = 0; i < excluded.n; i++)           /* and nothing under them is walked or kept */
        if (!str_list_add(&removed, excluded.s[i])) goto oom;
    if (!o.m.model) { cli_fail(cmd, NULL, "--model is required"); goto done; }

    if (cli_load_model(ctx, &o.m, &model) != AES_OK) { cli_fail(cmd, ctx, "loading %s", o.m.model); goto done; }
    if (!aes_clip_config_get(model)->has_vision) { cli_fail(cmd, NULL, "%s has no image tower", o.m.model); goto done; }
    S = aes_clip_config_get(model)->image_size;
    E = aes_clip_config_get(model)->embed_dim;
    if (prev && aes_index_check_model(ctx, prev, aes_clip_id(model)) != AES_OK) {
        cli_fail(cmd, ctx, "%s (rebuild it with `aesalign index build`)", o.out);
        goto done;
    }
    if (o.head) {
        if (aes_head_load(ctx, o.head, &head) != AES_OK) { cli_fail(cmd, ctx, "loading the head"); goto done; }
        have_head = 1;
        if (head.dim[0] != E) {
            cli_fail(cmd, NULL, "the head %s takes %d-dim embeddings but the model gives %d", o.head, head.dim[0], E);
            goto done;
        }
        aes_head_identity(&head, head_id);
        if (owned[1] && strcmp(head_id, prev->head_id) != 0) {
            cli_fail(cmd, NULL, "the head file %s recorded in the index has changed: give --head H", o.head);
            goto done;
        }
    }

    /* an interrupted run's checkpoint: a cache of embeddings */
    if (access(partial, F_OK) == 0) {
        if (aes_index_load(ctx, partial, &cache) != AES_OK) {
            fprintf(stderr, "aesalign %s: warning: ignoring the checkpoint: %s\n", cmd, aes_last_error(ctx));
            aes_clear_error(ctx);
        } else if (aes_index_check_model(ctx, cache, aes_clip_id(model)) != AES_OK || cache->dim != E) {
            fprintf(stderr, "aesalign %s: warning: ignoring %s, it is from another model\n", cmd, partial);
            aes_clear_error(ctx);
            aes_index_free(cache);
            cache = NULL;
        } else {
            from_partial = 1;
            fprintf(stderr, "aesalign %s: resuming from %s (%zu images done)\n", cmd, partial, cache->count);
        }
    }

    /* walk */
    for (i = 0; i < walked.n; i++)
        if (!cli_walk_add(&w, walked.s[i])) { cli_fail(cmd, NULL, "out of memory walking %s", walked.s[i]); goto done; }
    if (!o.quiet)
        fprintf(stderr, "aesalign %s: %zu images in %d folder%s (%zu other file%s ignored)\n", cmd, w.n, walked.n,
                walked.n == 1 ? "" : "s", w.ignored, w.ignored == 1 ? "" : "s");
    if (o.shard_n > 0) {        /* keep this shard's files only, in walk order */
        size_t n2 = 0, all = w.n;
        char num[64];
        for (f = 0; f < w.n; f++) {
            if (shard_of(w.files[f].path, walked.s, walked.n, o.shard_n) == o.shard_k) w.files[n2++] = w.files[f];
            else free(w.files[f].path);
        }
        w.n = n2;
        snprintf(num, sizeof num, "%ld/%ld", o.shard_k, o.shard_n);
        if (!o.quiet) fprintf(stderr, "aesalign %s: shard %s: %zu of the %zu images\n", cmd, num, w.n, all);
    }

    /* the new index: the entries of folders not walked, then the walked ones (reused first) */
    if (aes_index_create(ctx, E, o.storage, aes_clip_id(model), head_id, &idx) != AES_OK) { cli_fail(cmd, ctx, "index"); goto done; }
    meta_add(&meta, "model", o.m.model, NULL);
    if (o.head) meta_add(&meta, "head", o.head, NULL);
    for (i = 0; i < roots.n; i++) meta_add(&meta, "root", roots.s[i], NULL);
    for (i = 0; i < excluded.n; i++) meta_add(&meta, "exclude", excluded.s[i], NULL);
    if (o.shard_n > 0) {    /* merge checks that the shards make a whole */
        char num[64];
        snprintf(num, sizeof num, "%ld/%ld", o.shard_k, o.shard_n);
        meta_add(&meta, "shard", num, NULL);
    }
    for (f = 0; prev && f < prev->count; f++) {
        const char *p = aes_index_path(prev, f);
        if (under_any(p, removed.s, removed.n)) { dropped++; continue; }
        if (under_any(p, walked.s, walked.n)) continue;
        if (aes_index_add_from(ctx, idx, prev, f, NULL, 0, 0) != AES_OK) { cli_fail(cmd, ctx, "index"); goto done; }
        kept++;
    }
    if (prev) {     /* bad files remembered in folders not walked */
        const char *p = prev->meta;
        while (p && *p) {
            const char *eol = strchr(p, '\n'), *sp;
            size_t ll = eol ? (size_t)(eol - p) : strlen(p);
            if (ll > 4 && !strncmp(p, "bad=", 4) && (sp = memchr(p + 4, ' ', ll - 4)) && (sp = memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - p)))) {
                char *path = (char *)malloc(ll + 1), num[64];
                if (path) {
                    size_t pl = ll - (size_t)(sp + 1 - p);
                    memcpy(path, sp + 1, pl);
                    path[pl] = 0;
                    if (!under_any(path, removed.s, removed.n) && !under_any(path, walked.s, walked.n) &&
                        (size_t)(sp + 1 - (p + 4)) < sizeof num) {
                        memcpy(num, p + 4, (size_t)(sp + 1 - (p + 4)));
                        num[sp + 1 - (p + 4)] = 0;
                        meta_add(&meta, "bad", num, path);
                    }
                    free(path);
                }
            }
            p += ll + (eol ? 1 : 0);
        }
    }
    todo = (size_t *)malloc((w.n + 1) * sizeof *todo);
    if (!todo) goto oom;
    for (f = 0; f < w.n; f++) {
        const cli_walk_file *wf = &w.files[f];
        const aes_index *src = NULL;
        int64_t row = -1;
        if (under_any(wf->path, removed.s, removed.n) || aes_index_find(idx, wf->path) >= 0) continue;
        if (cache && (row = aes_index_find(cache, wf->path)) >= 0 && cache->file_size[row] == wf->size &&
            cache->mtime_ns[row] == wf->mtime_ns)
            src = cache;
        else if (prev && (row = aes_index_find(prev, wf->path)) >= 0 && prev->file_size[row] == wf->size &&
                 prev->mtime_ns[row] == wf->mtime_ns)
            src = prev;
        if (src) {
            if (aes_index_add_from(ctx, idx, src, (size_t)row, NULL, 0, 0) != AES_OK) { cli_fail(cmd, ctx, "index"); goto done; }
            head_differs |= strcmp(src->head_id, head_id) != 0;
            reused++;
        } else if ((cache && meta_is_bad(cache->meta, wf)) || (prev && meta_is_bad(prev->meta, wf))) {
            char num[64];
            snprintf(num, sizeof num, "%llu %lld ", (unsigned long long)wf->size, (long long)wf->mtime_ns);
            meta_add(&meta, "bad", num, wf->path);
            known_bad++;
        } else {
            if (prev && aes_index_find(prev, wf->path) >= 0) changed++;
            todo[ntodo++] = f;
        }
    }
    {   /* entries of the walked folders whose file is gone */
        char **sorted = (char **)malloc((w.n + 1) * sizeof *sorted);
        if (!sorted) goto oom;
        for (f = 0; f < w.n; f++) sorted[f] = w.files[f].path;
        qsort(sorted, w.n, sizeof *sorted, cmp_str);
        for (f = 0; prev && f < prev->count; f++) {
            const char *key = aes_index_path(prev, f);
            if (under_any(key, removed.s, removed.n) || !under_any(key, walked.s, walked.n)) continue;
            dropped += bsearch(&key, sorted, w.n, sizeof *sorted, cmp_str) == NULL;
        }
        free(sorted);
    }
    /* new files with the content of an indexed one (renamed, moved, copied):
     * the embedding is reused, found by content hash */
    if (ntodo && (!hashes_add(&hashes, &nhashes, prev) || !hashes_add(&hashes, &nhashes, cache))) goto oom;
    if (nhashes) {
        size_t n2 = 0;
        qsort(hashes, nhashes, sizeof *hashes, cmp_hash_ref);
        for (f = 0; f < ntodo; f++) {
            const cli_walk_file *wf = &w.files[todo[f]];
            void *data = NULL;
            size_t len = 0;
            hash_ref key, *hit;
            aes_exif exif;
            if (aes_read_file(ctx, wf->path, &data, &len) != AES_OK) { aes_clear_error(ctx); todo[n2++] = todo[f]; continue; }
            key.hash = aes_content_hash(data, len);
            hit = (hash_ref *)bsearch(&key, hashes, nhashes, sizeof *hashes, cmp_hash_ref);
            aes_jpeg_exif(data, len, &exif);
            aes_free(data);
            if (!hit || aes_index_add_from(ctx, idx, hit->src, hit->row, wf->path, wf->size, wf->mtime_ns) != AES_OK ||
                aes_index_set_info(ctx, idx, idx->count - 1, cli_photo_date(exif.datetime_original, wf->mtime_ns),
                                   key.hash) != AES_OK) {
                aes_clear_error(ctx);
                todo[n2++] = todo[f];
                continue;
            }
            head_differs |= strcmp(hit->src->head_id, head_id) != 0;
            copied++;
        }
        ntodo = n2;
    }
    /* a different head (or none now): re-score what was reused */
    if (head_differs || (kept && strcmp(prev->head_id, head_id) != 0)) {
        if (aes_index_rescore(ctx, idx, have_head ? &head : NULL) != AES_OK) { cli_fail(cmd, ctx, "re-scoring"); goto done; }
        rescored = have_head ? idx->count : 0;
    }
    if (update && !ntodo && !dropped && !rescored && !copied && !from_partial && reused + kept == idx->count &&
        idx->count == prev->count && idx->storage == prev->storage && meta.s && !strcmp(meta.s, prev->meta)) {
        if (!o.quiet) fprintf(stderr, "aesalign %s: %s is up to date (%zu images)\n", cmd, o.out, idx->count);
        rc = 0;
        goto done;
    }

    /* embed what is new or changed */
    pixels = (float *)malloc((size_t)o.batch * 3 * S * S * sizeof(float));
    emb = (float *)malloc((size_t)o.batch * E * sizeof(float));
    scores = (float *)malloc((size_t)o.batch * sizeof(float));
    batch_file = (size_t *)malloc((size_t)o.batch * sizeof *batch_file);
    batch_hash = (uint64_t *)malloc((size_t)o.batch * sizeof *batch_hash);
    batch_date = (int64_t *)malloc((size_t)o.batch * sizeof *batch_date);
    if (!pixels || !emb || !scores || !batch_file || !batch_hash || !batch_date) goto oom;
    memset(&pg, 0, sizeof pg);
    pg.t0 = pg.last = cli_now();
    pg.total = ntodo;
    pg.tty = isatty(2);
    for (f = 0; f < ntodo;) {
        int B = 0, b;
        double tc;
        /* decode + preprocess up to `batch` good images; a bad one is skipped */
        while (f < ntodo && B < o.batch) {
            const cli_walk_file *wf = &w.files[todo[f++]];
            aes_image img;
            aes_status st;
            cli_photo_info info;
            memset(&img, 0, sizeof img);
            st = (aes_status)cli_load_photo(ctx, wf->path, &img, &info);
            if (st == AES_OK) st = aes_clip_preprocess(ctx, &img, S, pixels + (size_t)B * 3 * S * S);
            aes_image_free(&img);
            if (st != AES_OK) {
                char num[64];
                if (pg.tty && !o.quiet) fputc('\n', stderr);
                fprintf(stderr, "aesalign %s: warning: skipping %s: %s\n", cmd, wf->path,
                        aes_last_error(ctx)[0] ? aes_last_error(ctx) : aes_status_name(st));
                aes_clear_error(ctx);
                snprintf(num, sizeof num, "%llu %lld ", (unsigned long long)wf->size, (long long)wf->mtime_ns);
                meta_add(&meta, "bad", num, wf->path);
                skipped++;
                continue;
            }
            batch_hash[B] = info.hash;
            batch_date[B] = cli_photo_date(info.exif_date, wf->mtime_ns);
            batch_file[B++] = todo[f - 1];
        }
        if (B > 0) {
            if (aes_clip_encode_image(ctx, model, pixels, B, emb) != AES_OK) { cli_fail(cmd, ctx, "encoding images"); goto done; }
            for (b = 0; b < B; b++) scores[b] = NAN;
            if (have_head && aes_head_score(ctx, &head, emb, B, scores) != AES_OK) { cli_fail(cmd, ctx, "scoring"); goto done; }
        }
        for (b = 0; b < B; b++) {
            const cli_walk_file *wf = &w.files[batch_file[b]];
            if (aes_index_add(ctx, idx, wf->path, wf->size, wf->mtime_ns, emb + (size_t)b * E, scores[b]) != AES_OK) {
                fprintf(stderr, "aesalign %s: warning: skipping %s: %s\n", cmd, wf->path, aes_last_error(ctx));
                aes_clear_error(ctx);
                skipped++;
                continue;
            }
            aes_index_set_info(ctx, idx, idx->count - 1, batch_date[b], batch_hash[b]);
            embedded++;
            since_ckpt++;
        }
        if (!o.quiet) progress_show(&pg, embedded + skipped, 0);
        /* checkpoint every N new images, but spend at most ~10% of the time on it */
        tc = cli_now();
        if (since_ckpt >= (size_t)o.checkpoint_every && f < ntodo && tc - pg.t0 > 10 * ckpt_cost) {
            if (aes_index_set_meta(ctx, idx, meta.s ? meta.s : "") != AES_OK || aes_index_save(ctx, idx, partial) != AES_OK) {
                fprintf(stderr, "aesalign %s: warning: checkpoint failed: %s\n", cmd, aes_last_error(ctx));
                aes_clear_error(ctx);
            }
            ckpt_cost += cli_now() - tc;
            since_ckpt = 0;
        }
    }
    if (!o.quiet && ntodo) progress_show(&pg, embedded + skipped, 1);

    if (aes_index_set_meta(ctx, idx, meta.s ? meta.s : "") != AES_OK || aes_index_save(ctx, idx, o.out) != AES_OK) {
        cli_fail(cmd, ctx, "writing %s", o.out);
        goto done;
    }
    remove(partial);
    ivf_note_stale(ctx, cmd, o.out, idx);
    {
        double el = cli_now() - t0;
        struct stat sb;
        double mb = stat(o.out, &sb) == 0 ? (double)sb.st_size / 1048576.0 : 0;
        fprintf(stderr,
                "aesalign %s: wrote %s: %zu images (%zu embedded of which %zu changed, %zu reused, %zu found by content, "
                "%zu kept from other folders, %zu re-scored, %zu dropped); %zu skipped (%zu known bad); %.1f MB; "
                "%.1f s, %.1f images/s\n",
                cmd, o.out, idx->count, embedded, changed, reused, copied, kept, rescored, dropped, skipped + known_bad,
                known_bad, mb, el, el > 0 ? (double)embedded / el : 0.0);
    }
    rc = 0;
    goto done;
oom:
    cli_fail(cmd, NULL, "out of memory");
done:
    free(pixels); free(emb); free(scores); free(batch_file); free(batch_hash); free(batch_date); free(todo); free(meta.s);
    free(hashes);
    free(o.dirs);
    for (i = 0; i < 4; i++) free(owned[i]);
    str_list_free(&recorded); str_list_free(&removed); str_list_free(&walked); str_list_free(&roots);
    str_list_free(&excluded);
    cli_walk_free(&w);
    aes_index_free(prev);
    aes_index_free(cache);
    aes_index_free(idx);
    if (have_head) aes_head_free(&head);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    index_unlock(lockfd);
    return rc;
}

/* ============================================================================
 *  merge: shard indexes into one
 * ========================================================================= */

/* The order a build walks files in: folders given first to last, and in a
 * folder its entries by name with a subfolder's files right after the
 * subfolder's name, i.e. paths compared with '/' below every other byte. */
static int walk_order_cmp(const char *a, const char *b) {
    for (;; a++, b++) {
        unsigned ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca != cb) {
            unsigned ra = ca == 0 ? 0 : ca == '/' ? 1 : ca + 1, rb = cb == 0 ? 0 : cb == '/' ? 1 : cb + 1;
            return ra < rb ? -1 : 1;
        }
        if (!ca) return 0;
    }
}

typedef struct merge_row {
    const aes_index *src;
    size_t row;
    int root, shard;          /* root: first recorded folder holding the path */
    const char *path;
} merge_row;

static int cmp_merge_row(const void *pa, const void *pb) {
    const merge_row *a = (const merge_row *)pa, *b = (const merge_row *)pb;
    int c;
    if (a->root != b->root) return a->root < b->root ? -1 : 1;
    if ((c = walk_order_cmp(a->path, b->path)) != 0) return c;
    if (a->shard != b->shard) return a->shard < b->shard ? -1 : 1;
    return a->row < b->row ? -1 : a->row > b->row;
}

static int cmd_merge(int argc, char **argv) {
    const char *cmd = "index merge", *out = NULL;
    const char **in = (const char **)calloc((size_t)argc + 1, sizeof *in);
    aes_index **sh = (aes_index **)calloc((size_t)argc + 1, sizeof *sh), *idx = NULL;
    aes_ctx *ctx = aes_ctx_create();
    int nin = 0, i, k, rc = 1, nowait = 0, quiet = 0, lockfd = -1, shard_n = -1;
    unsigned char *have_shard = NULL;
    str_list roots = {NULL, 0}, excluded = {NULL, 0};
    meta_buf meta = {NULL, 0, 0};
    merge_row *rows = NULL;
    size_t nrows = 0, total = 0, f, dups = 0;
    char *model_path = NULL, *head_path = NULL;
    if (!in || !sh || !ctx) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "--no-wait")) { nowait = 1; continue; }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: aesalign index merge [options] OUT SHARD...\n"
                   "  joins indexes (the shards of `aesalign index build --shard K/N`) into OUT, written\n"
                   "  atomically: entries in the order one build over the same folders gives them, a path\n"
                   "  in several shards kept once (from the first shard given).  Every shard must come\n"
                   "  from the same model, aesthetic head, dimension and storage.\n"
                   "  --no-wait            fail at once when another process is writing OUT (default: wait)\n"
                   "  --quiet              no summary line\n");
            rc = 0;
            goto done;
        }
        if (argv[i][0] == '-' && argv[i][1]) { cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[i]); goto done; }
        if (!out) out = argv[i];
        else in[nin++] = argv[i];
    }
    if (!out || nin == 0) { cli_fail(cmd, NULL, "usage: aesalign index merge OUT SHARD... (see --help)"); goto done; }
    for (i = 0; i < nin; i++)
        if (!strcmp(in[i], out)) { cli_fail(cmd, NULL, "OUT %s is also a shard: write the merge to a new file", out); goto done; }
    aes_threads_set(ctx, cli_threads());
    if ((lockfd = index_lock(cmd, out, nowait)) < 0) goto done;
    for (i = 0; i < nin; i++) {
        char *v;
        if (aes_index_load(ctx, in[i], &sh[i]) != AES_OK) { cli_fail(cmd, ctx, "cannot load the shard %s", in[i]); goto done; }
        if (i > 0) {
            const aes_index *a = sh[0], *b = sh[i];
            if (strcmp(a->model_id, b->model_id)) {
                cli_fail(cmd, NULL, "%s was made with another model than %s (model %s, not %s)", in[i], in[0], b->model_id, a->model_id);
                goto done;
            }
            if (strcmp(a->head_id, b->head_id)) {
                cli_fail(cmd, NULL, "%s was scored with another aesthetic head than %s (head %s, not %s)", in[i], in[0],
                         b->head_id[0] ? b->head_id : "none", a->head_id[0] ? a->head_id : "none");
                goto done;
            }
            if (a->dim != b->dim || a->storage != b->storage) {
                cli_fail(cmd, NULL, "%s has dimension %d and storage %u, %s has %d and %u", in[i], b->dim, b->storage, in[0], a->dim, a->storage);
                goto done;
            }
        }
        if ((v = meta_value(sh[i], "shard", 0)) != NULL) {    /* which of how many */
            long sk, sn;
            if (parse_shard(v, &sk, &sn)) {
                if (shard_n < 0) { shard_n = (int)sn; have_shard = (unsigned char *)calloc((size_t)sn, 1); if (!have_shard) { free(v); goto oom; } }
                if (sn != shard_n) fprintf(stderr, "aesalign %s: warning: %s is shard %s, the others are of %d\n", cmd, in[i], v, shard_n);
                else if (have_shard[sk]++) fprintf(stderr, "aesalign %s: warning: shard %s given twice (%s)\n", cmd, v, in[i]);
            }
            free(v);
        }
        for (k = 0; (v = meta_value(sh[i], "root", k)) != NULL; k++) {
            int ok = str_list_add(&roots, v);
            free(v);
            if (!ok) goto oom;
        }
        for (k = 0; (v = meta_value(sh[i], "exclude", k)) != NULL; k++) {
            int ok = str_list_add(&excluded, v);
            free(v);
            if (!ok) goto oom;
        }
        total += sh[i]->count;
    }
    for (k = 0; k < shard_n; k++)
        if (!have_shard[k]) fprintf(stderr, "aesalign %s: warning: shard %d/%d is missing: its images are not in %s\n", cmd, k, shard_n, out);
    if (!(rows = (merge_row *)malloc((total + 1) * sizeof *rows))) goto oom;
    for (i = 0; i < nin; i++)
        for (f = 0; f < sh[i]->count; f++) {
            merge_row *r = &rows[nrows++];
            r->src = sh[i];
            r->row = f;
            r->shard = i;
            r->path = aes_index_path(sh[i], f);
            for (r->root = 0; r->root < roots.n && !under(r->path, roots.s[r->root]); r->root++) {}
        }
    qsort(rows, nrows, sizeof *rows, cmp_merge_row);
    if (aes_index_create(ctx, sh[0]->dim, sh[0]->storage, sh[0]->model_id, sh[0]->head_id, &idx) != AES_OK) {
        cli_fail(cmd, ctx, "index");
        goto done;
    }
    model_path = meta_value(sh[0], "model", 0);
    head_path = meta_value(sh[0], "head", 0);
    if (model_path) meta_add(&meta, "model", model_path, NULL);
    if (head_path) meta_add(&meta, "head", head_path, NULL);
    for (k = 0; k < roots.n; k++) meta_add(&meta, "root", roots.s[k], NULL);
    for (k = 0; k < excluded.n; k++) meta_add(&meta, "exclude", excluded.s[k], NULL);
    for (i = 0; i < nin; i++) {     /* files that failed to decode, remembered for updates */
        char *v;
        for (k = 0; (v = meta_value(sh[i], "bad", k)) != NULL; k++) {
            meta_add(&meta, "bad", v, NULL);
            free(v);
        }
    }
    for (f = 0; f < nrows; f++) {
        if (f > 0 && !strcmp(rows[f].path, rows[f - 1].path)) { dups++; continue; }
        if (aes_index_add_from(ctx, idx, rows[f].src, rows[f].row, NULL, 0, 0) != AES_OK) { cli_fail(cmd, ctx, "index"); goto done; }
    }
    if (aes_index_set_meta(ctx, idx, meta.s ? meta.s : "") != AES_OK || aes_index_save(ctx, idx, out) != AES_OK) {
        cli_fail(cmd, ctx, "writing %s", out);
        goto done;
    }
    if (!quiet)
        fprintf(stderr, "aesalign %s: wrote %s: %zu images from %d shard%s (%zu duplicates dropped)\n", cmd, out, idx->count,
                nin, nin == 1 ? "" : "s", dups);
    ivf_note_stale(ctx, cmd, out, idx);
    rc = 0;
    goto done;
oom:
    cli_fail(cmd, NULL, "out of memory");
done:
    for (i = 0; sh && i < nin; i++) aes_index_free(sh[i]);
    free(sh);
    free(in);
    free(rows);
    free(have_shard);
    free(meta.s);
    free(model_path);
    free(head_path);
    str_list_free(&roots);
    str_list_free(&excluded);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    index_unlock(lockfd);
    return rc;
}

/* ============================================================================
 *  export: NumPy .npy + JSON Lines, the layout FAISS / autofaiss users load
 * ========================================================================= */

/* A file written through a temporary in the same folder, flushed to disk
 * and renamed over the target at the end: a crash leaves no half file. */
typedef struct out_file { FILE *f; char tmp[4200], path[4200]; } out_file;

static int out_open(out_file *o, const char *dir, const char *name) {
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    snprintf(o->tmp, sizeof o->tmp, "%s/.%s.tmp%ld", dir, name, (long)getpid());
    o->f = fopen(o->tmp, "wb");
    return o->f != NULL;
}

static int out_commit(out_file *o) {
    int ok = fflush(o->f) == 0 && !ferror(o->f) && fsync(fileno(o->f)) == 0;
    ok &= fclose(o->f) == 0;
    o->f = NULL;
    if (ok && rename(o->tmp, o->path) == 0) return 1;
    remove(o->tmp);
    return 0;
}

static void out_abort(out_file *o) {
    if (o->f) { fclose(o->f); o->f = NULL; remove(o->tmp); }
}

/* The NPY format version 1.0 (numpy.lib.format): magic "\x93NUMPY", 1, 0,
 * a little-endian u16 header length, then a Python dict literal padded
 * with spaces and ended by '\n' so the data starts at a multiple of 64. */
static int write_npy_header(FILE *f, uint64_t rows, int cols) {
    char dict[256];
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%llu, %d), }",
                     (unsigned long long)rows, cols);
    int total = (10 + n + 1 + 63) / 64 * 64, hl = total - 10;
    pre[8] = (unsigned char)(hl & 255);
    pre[9] = (unsigned char)(hl >> 8);
    if (fwrite(pre, 1, 10, f) != 10 || fwrite(dict, 1, (size_t)n, f) != (size_t)n) return 0;
    for (; n < hl - 1; n++) fputc(' ', f);
    return fputc('\n', f) != EOF;
}

static int cmd_export(int argc, char **argv) {
    const char *cmd = "index export", *path = NULL, *dir = NULL;
    aes_ctx *ctx;
    aes_index *idx = NULL;
    out_file nf, jf;
    unsigned char *buf = NULL;
    float *row = NULL;
    size_t i;
    int k, d, rc = 1;
    memset(&nf, 0, sizeof nf);
    memset(&jf, 0, sizeof jf);
    for (k = 2; k < argc; k++) {
        int r;
        if ((r = cli_opt_str(argc, argv, &k, "--index", &path))) { if (r < 0) return 1; continue; }
        if ((r = cli_opt_str(argc, argv, &k, "--npy", &dir))) { if (r < 0) return 1; continue; }
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            printf("usage: aesalign index export --npy DIR [--index] FILE\n"
                   "  writes DIR/embeddings.npy (float32 [images, dim], C order, L2-normalized: inner\n"
                   "  product = cosine, e.g. faiss.IndexFlatIP) and DIR/metadata.jsonl (one line per row,\n"
                   "  in the same order: row, path, aesthetic (null when unscored), date (the photo's\n"
                   "  wall-clock time, null when unknown)).  An index stored as int8 only is exported\n"
                   "  dequantized.  Each file is written atomically.\n"
                   "  --npy DIR            the folder to write to (made when missing)\n"
                   "  --index FILE         the index (or give FILE alone)\n");
            return 0;
        }
        if (argv[k][0] == '-' && argv[k][1]) return cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[k]);
        path = argv[k];
    }
    if (!path) return cli_fail(cmd, NULL, "which index? (aesalign index export --npy DIR FILE)");
    if (!dir) return cli_fail(cmd, NULL, "--npy DIR is required");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return cli_fail(cmd, NULL, "cannot make %s: %s", dir, strerror(errno));
    if (!(ctx = aes_ctx_create())) return cli_fail(cmd, NULL, "out of memory");
    if (aes_index_load(ctx, path, &idx) != AES_OK) { cli_fail(cmd, ctx, "cannot load the index"); goto done; }
    buf = (unsigned char *)malloc((size_t)idx->dim * 4 + 1);
    row = (float *)malloc((size_t)idx->dim * sizeof *row + 1);
    if (!buf || !row) { cli_fail(cmd, NULL, "out of memory"); goto done; }
    if (!out_open(&nf, dir, "embeddings.npy") || !out_open(&jf, dir, "metadata.jsonl")) {
        cli_fail(cmd, NULL, "cannot write in %s: %s", dir, strerror(errno));
        goto done;
    }
    if (!write_npy_header(nf.f, idx->count, idx->dim)) goto wfail;
    for (i = 0; i < idx->count; i++) {
        if (idx->vectors) memcpy(row, idx->vectors + i * (size_t)idx->dim, (size_t)idx->dim * sizeof *row);
        else {      /* int8 only: dequantized and renormalized, as aes_index_add_from does */
            double ss = 0;
            for (d = 0; d < idx->dim; d++) {
                row[d] = (float)idx->qvectors[i * (size_t)idx->dim + (size_t)d] * idx->qscales[i];
                ss += (double)row[d] * row[d];
            }
            for (d = 0; d < idx->dim && ss > 0; d++) row[d] = (float)(row[d] / sqrt(ss));
        }
        for (d = 0; d < idx->dim; d++) {    /* little-endian on every host */
            uint32_t u;
            memcpy(&u, &row[d], 4);
            buf[4 * d] = (unsigned char)u;
            buf[4 * d + 1] = (unsigned char)(u >> 8);
            buf[4 * d + 2] = (unsigned char)(u >> 16);
            buf[4 * d + 3] = (unsigned char)(u >> 24);
        }
        if (fwrite(buf, 4, (size_t)idx->dim, nf.f) != (size_t)idx->dim) goto wfail;
        fprintf(jf.f, "{\"row\": %zu, \"path\": ", i);
        cli_json_string(jf.f, aes_index_path(idx, i));
        fputs(", \"aesthetic\": ", jf.f);
        if (idx->aesthetic[i] != idx->aesthetic[i]) fputs("null", jf.f);
        else fprintf(jf.f, "%.9g", (double)idx->aesthetic[i]);
        fputs(", \"date\": ", jf.f);
        {
            time_t t = (time_t)idx->date[i];
            struct tm tm;
            char ds[32];
            if (idx->date[i] != AES_INDEX_NO_DATE && (int64_t)t == idx->date[i] && gmtime_r(&t, &tm) &&
                strftime(ds, sizeof ds, "%Y-%m-%dT%H:%M:%S", &tm))
                fprintf(jf.f, "\"%s\"", ds);
            else fputs("null", jf.f);
        }
        if (fputs("}\n", jf.f) == EOF) goto wfail;
    }
    if (!out_commit(&nf) || !out_commit(&jf)) goto wfail;
    fprintf(stderr, "aesalign %s: wrote %s/embeddings.npy (%zu x %d float32) and %s/metadata.jsonl\n", cmd, dir,
            idx->count, idx->dim, dir);
    rc = 0;
    goto done;
wfail:
    cli_fail(cmd, NULL, "writing in %s failed: %s", dir, strerror(errno));
done:
    out_abort(&nf);
    out_abort(&jf);
    free(buf);
    free(row);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    return rc;
}

/* ============================================================================
 *  ivf
 * ========================================================================= */

/* After a writer replaced the index at path: a warning when path.ivf no
 * longer matches it (our choice: warn, not rebuild; the k-means takes
 * minutes on millions of rows, and search falls back to exact meanwhile). */
static void ivf_note_stale(aes_ctx *ctx, const char *cmd, const char *path, const aes_index *idx) {
    char ip[PATH_MAX + 8];
    aes_ivf *ivf = NULL;
    cli_ivf_path(path, ip, sizeof ip);
    if (!cli_file_exists(ip)) return;
    if (aes_ivf_load(ctx, ip, idx, &ivf) == AES_OK) { aes_ivf_free(ivf); return; }
    fprintf(stderr, "aesalign %s: warning: %s no longer matches %s; search ignores it (exact search) until it is "
                    "rebuilt: aesalign index ivf %s\n", cmd, ip, path, path);
    aes_clear_error(ctx);
}

static int cmd_ivf(int argc, char **argv) {
    const char *cmd = "index ivf", *path = NULL, *out = NULL;
    char defout[PATH_MAX + 8];
    long nlist = 0, threads = 0, seed = 1;
    int k, quiet = 0, rc = 1;
    aes_ctx *ctx = NULL;
    aes_index *idx = NULL;
    aes_ivf *ivf = NULL;
    double t0;
    for (k = 2; k < argc; k++) {
        int r;
        if ((r = cli_opt_str(argc, argv, &k, "--index", &path))) { if (r < 0) return 1; continue; }
        if ((r = cli_opt_str(argc, argv, &k, "--out", &out))) { if (r < 0) return 1; continue; }
        if ((r = cli_opt_int(argc, argv, &k, "--nlist", &nlist))) { if (r < 0) return 1; continue; }
        if ((r = cli_opt_int(argc, argv, &k, "--seed", &seed))) { if (r < 0) return 1; continue; }
        if ((r = cli_opt_int(argc, argv, &k, "--threads", &threads))) { if (r < 0) return 1; continue; }
        if (!strcmp(argv[k], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            printf("usage: aesalign index ivf [--index] FILE [--out F] [--nlist N] [--seed S] [--threads T]\n"
                   "  builds an IVF (inverted file: k-means coarse quantiser + one list of int8 vectors per\n"
                   "  centroid) over the index's int8 vectors and writes it atomically.  `aesalign search`\n"
                   "  uses FILE.ivf by itself when it matches the index, scanning --nprobe lists instead of\n"
                   "  every vector.  The IVF records a fingerprint of the vectors: after `index update`\n"
                   "  changes them, search ignores it (with a warning) until it is rebuilt.\n"
                   "  --index FILE         the index (or give FILE alone; it needs int8 storage)\n"
                   "  --out F              the IVF file (default FILE.ivf, which search looks for)\n"
                   "  --nlist N            lists (default round(sqrt(images)), at most the image count)\n"
                   "  --seed S             k-means seed (default 1): the same seed, the same file, for\n"
                   "                       any thread count\n"
                   "  --threads T          threads (default $AES_THREADS, else every core)\n"
                   "  --quiet              no progress lines\n");
            return 0;
        }
        if (argv[k][0] == '-' && argv[k][1]) return cli_fail(cmd, NULL, "unknown option %s (see --help)", argv[k]);
        path = argv[k];
    }
    if (!path) return cli_fail(cmd, NULL, "which index? (aesalign index ivf FILE)");
    if (nlist < 0 || nlist > 1L << 24) return cli_fail(cmd, NULL, "--nlist must be in [1, 2^24]");
    if (threads < 0 || threads > 64) return cli_fail(cmd, NULL, "--threads must be in [1, 64]");
    if (seed < 0) return cli_fail(cmd, NULL, "--seed must be >= 0");
    if (!out) { cli_ivf_path(path, defout, sizeof defout); out = defout; }
    if (!(ctx = aes_ctx_create())) return cli_fail(cmd, NULL, "out of memory");
    aes_threads_set(ctx, threads ? (int)threads : cli_threads());
    t0 = cli_now();
    if (aes_index_load(ctx, path, &idx) != AES_OK) { cli_fail(cmd, ctx, "cannot load the index"); goto done; }
    if (!(idx->storage & AES_INDEX_I8)) {
        cli_fail(cmd, NULL, "%s has no int8 vectors (rebuild it with --storage both or int8)", path);
        goto done;
    }
    if (idx->count == 0) { cli_fail(cmd, NULL, "%s is empty: nothing to build an IVF on", path); goto done; }
    if (nlist == 0) nlist = (long)floor(sqrt((double)idx->count) + 0.5);
    if (nlist < 1) nlist = 1;
    if ((size_t)nlist > idx->count) { cli_fail(cmd, NULL, "--nlist %ld is more than the %zu images", nlist, idx->count); goto done; }
    if (!quiet)
        fprintf(stderr, "aesalign %s: %s: %zu images, dim %d; k-means of %ld lists on %zu sampled images (12 rounds), "
                        "then every image to its list...\n", cmd, path, idx->count, idx->dim, nlist,
                (size_t)nlist * 256 < idx->count ? (size_t)nlist * 256 : idx->count);
    if (aes_ivf_build(ctx, idx, (int)nlist, (uint64_t)seed, &ivf) != AES_OK) { cli_fail(cmd, ctx, "building the IVF"); goto done; }
    if (aes_ivf_save(ctx, ivf, out) != AES_OK) { cli_fail(cmd, ctx, "writing %s", out); goto done; }
    if (!quiet) {
        uint64_t lo = UINT64_MAX, hi = 0;
        int l;
        for (l = 0; l < ivf->nlist; l++) {
            uint64_t n = ivf->list_start[l + 1] - ivf->list_start[l];
            if (n < lo) lo = n;
            if (n > hi) hi = n;
        }
        fprintf(stderr, "aesalign %s: wrote %s: %d lists of %llu to %llu images; %.1f s\n", cmd, out, ivf->nlist,
                (unsigned long long)lo, (unsigned long long)hi, cli_now() - t0);
    }
    rc = 0;
done:
    aes_ivf_free(ivf);
    aes_index_free(idx);
    aes_ctx_free(ctx);
    return rc;
}

/* ============================================================================
 *  info
 * ========================================================================= */

static int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    aes_ctx *ctx;
    aes_index *idx = NULL;
    struct stat sb;
    size_t i, scored = 0;
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    int k;
    for (k = 2; k < argc; k++) {
        int r;
        if ((r = cli_opt_str(argc, argv, &k, "--index", &path))) { if (r < 0) return 1; continue; }
        if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
            printf("usage: aesalign index info FILE\n  prints what an index holds (and whether FILE.ivf matches it)\n");
            return 0;
        }
        path = argv[k];
    }
    if (!path) return cli_fail("index info", NULL, "which index? (aesalign index info FILE)");
    if (!(ctx = aes_ctx_create())) return cli_fail("index info", NULL, "out of memory");
    if (aes_index_load(ctx, path, &idx) != AES_OK) {
        int r = cli_fail("index info", ctx, "cannot load the index");
        aes_ctx_free(ctx);
        return r;
    }
    for (i = 0; i < idx->count; i++) {
        float a = idx->aesthetic[i];
        if (a != a) continue;
        scored++;
        sum += a;
        if (a < lo) lo = a;
        if (a > hi) hi = a;
    }
    printf("file\t%s\n", path);
    printf("bytes\t%lld\n", stat(path, &sb) == 0 ? (long long)sb.st_size : -1LL);
    printf("version\t%d\n", AES_INDEX_VERSION);
    printf("images\t%zu\n", idx->count);
    printf("dim\t%d\n", idx->dim);
    printf("storage\t%s\n", idx->storage == 3 ? "f32+int8" : idx->storage == 1 ? "f32" : "int8");
    printf("model\t%s\n", idx->model_id);
    printf("head\t%s\n", idx->head_id[0] ? idx->head_id : "(none)");
    if (scored) printf("aesthetic\t%zu scored, min %.3f, mean %.3f, max %.3f\n", scored, lo, sum / (double)scored, hi);
    else printf("aesthetic\tnone\n");
    {   /* photo dates (wall-clock time) and content hashes */
        int64_t dmin = INT64_MAX, dmax = INT64_MIN;
        size_t dated = 0, hashed = 0;
        for (i = 0; i < idx->count; i++) {
            hashed += idx->content_hash[i] != 0;
            if (idx->date[i] == AES_INDEX_NO_DATE) continue;
            dated++;
            if (idx->date[i] < dmin) dmin = idx->date[i];
            if (idx->date[i] > dmax) dmax = idx->date[i];
        }
        if (dated) {
            char a[32], b[32];
            time_t ta = (time_t)dmin, tb = (time_t)dmax;
            struct tm ma, mb;
            if (gmtime_r(&ta, &ma) && gmtime_r(&tb, &mb)) {     /* the dates are wall-clock seconds: no zone */
                strftime(a, sizeof a, "%Y-%m-%d %H:%M:%S", &ma);
                strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", &mb);
                printf("dates\t%zu dated, %s to %s\n", dated, a, b);
            }
        } else printf("dates\tnone (a version 1 index: the file times are used)\n");
        printf("hashed\t%zu of %zu\n", hashed, idx->count);
    }
    {   /* the IVF beside it */
        char ip[PATH_MAX + 8];
        aes_ivf *ivf = NULL;
        cli_ivf_path(path, ip, sizeof ip);
        if (!cli_file_exists(ip)) printf("ivf\tnone\n");
        else if (aes_ivf_load(ctx, ip, idx, &ivf) == AES_OK) printf("ivf\t%s: %d lists\n", ip, ivf->nlist);
        else printf("ivf\t%s: not used: %s\n", ip, aes_last_error(ctx));
        aes_ivf_free(ivf);
    }
    {
        const char *p = idx->meta;
        while (p && *p) {
            const char *eol = strchr(p, '\n');
            int ll = eol ? (int)(eol - p) : (int)strlen(p);
            const char *eq = (const char *)memchr(p, '=', (size_t)ll);
            if (eq) printf("%.*s\t%.*s\n", (int)(eq - p), p, (int)(ll - (eq - p) - 1), eq + 1);
            p += ll + (eol ? 1 : 0);
        }
    }
    aes_index_free(idx);
    aes_ctx_free(ctx);
    return 0;
}

CLI_COMMAND(index, "build, update, merge, export or describe an image index, or build its IVF: index build, update, merge, ivf, export, info") {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        printf("usage: aesalign index build  --model M [--head H] [--out FILE] [options] DIR...\n"
               "       aesalign index update --index FILE [--model M] [--head H] [--remove DIR]... [options] [DIR...]\n"
               "       aesalign index merge  OUT SHARD...\n"
               "       aesalign index ivf    FILE [--out F] [--nlist N] [--seed S] [--threads T]\n"
               "       aesalign index export --npy DIR FILE\n"
               "       aesalign index info   FILE\n"
               "`aesalign index build --help` lists the options.\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "build")) return cmd_build(argc, argv, 0);
    if (!strcmp(argv[1], "update")) return cmd_build(argc, argv, 1);
    if (!strcmp(argv[1], "info")) return cmd_info(argc, argv);
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc, argv);
    if (!strcmp(argv[1], "export")) return cmd_export(argc, argv);
    if (!strcmp(argv[1], "ivf")) return cmd_ivf(argc, argv);
    return cli_fail("index", NULL, "unknown subcommand '%s' (build, update, merge, ivf, export, info)", argv[1]);
}
