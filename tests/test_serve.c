/* test_serve.c - `aesalign serve` on an index of images the test makes:
 * /api/search byte for byte against `aesalign search --format json`,
 * /api/dedup against `aesalign dedup --format json`, malformed and
 * oversized requests (4xx, and the server keeps serving), 50 concurrent
 * connections, path traversal refused, reload after `index update`, a clean
 * stop on SIGTERM, and the page itself in headless chromium (its ?selftest
 * scenario) when /usr/bin/chromium is installed.  The model is the tiny
 * fixture CLIP of tests/fixtures/retrieval. */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include "testlib.h"
#include <stdlib.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define RFIX "tests/fixtures/retrieval/"
#define MODEL "--model " RFIX "tiny_clip.safetensors"
#define HEAD "--head " RFIX "head.safetensors"

static aes_ctx *ctx;
static char tdir[64];
static pid_t server = -1;
static int port;

/* "%C" is the CLI, "%D" the test's folder (testlib.h). */
static int sh(const char *fmt) { return tl_sh(tdir, fmt); }

static char *slurp(const char *name) { return tl_slurp(tdir, name); }

/* A PPM with smooth colours chosen by seed (seeds differ: pictures differ). */
static void write_ppm(const char *name, int w, int h, unsigned seed) {
    char path[256];
    aes_image img;
    int x, y;
    memset(&img, 0, sizeof img);
    snprintf(path, sizeof path, "%s/%s", tdir, name);
    if (aes_image_alloc(ctx, &img, w, h, 3) != AES_OK) return;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            uint8_t *p = img.pixels + ((size_t)y * w + x) * 3;
            int r = (int)((seed * 53) % 256), g = (int)((seed * 97) % 256), b = (int)((seed * 151) % 256);
            int ring = ((x - w / 2) * (x - w / 2) + (y - h / 2) * (y - h / 2)) < (int)(seed % 5 + 3) * w;
            p[0] = (uint8_t)((r + x * 4 * (int)(seed % 3)) & 255);
            p[1] = (uint8_t)((g + y * 3 * (int)(seed % 4)) & 255);
            p[2] = (uint8_t)(ring ? 255 - b : b);
        }
    aes_image_save_ppm(ctx, path, &img);
    aes_image_free(&img);
}

/* ---- a tiny HTTP client ---------------------------------------------------------- */

static int dial(void) {
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return -1; }
    return fd;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* Reads the whole response (the server closes after it); returns the
 * status and, in *body (malloc'ed), what follows the head. */
static int read_response(int fd, char **body) {
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap + 1), *b;
    int status = -1;
    *body = NULL;
    if (!buf) return -1;
    for (;;) {
        ssize_t got;
        if (n == cap) {
            char *nb = (char *)realloc(buf, cap * 2 + 1);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    buf[n] = 0;
    if (n > 12 && !strncmp(buf, "HTTP/1.1 ", 9)) status = atoi(buf + 9);
    b = strstr(buf, "\r\n\r\n");
    if (b) {
        memmove(buf, b + 4, n - (size_t)(b + 4 - buf) + 1);
        *body = buf;
    } else {
        free(buf);
    }
    return status;
}

/* Sends raw bytes, returns the status (body in *body unless NULL). */
static int raw(const char *req, size_t len, char **body) {
    char *b = NULL;
    int fd = dial(), st;
    if (fd < 0) return -1;
    send_all(fd, req, len);          /* a refused request may be cut short: read the answer anyway */
    st = read_response(fd, &b);
    close(fd);
    if (body) *body = b; else free(b);
    return st;
}

static int get(const char *target, char **body) {
    char req[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target);
    return raw(req, (size_t)n, body);
}

/* ---- the server ------------------------------------------------------------------- */

static int start_server(void) {
    char cmd[4096], path[256];
    int i;
    snprintf(path, sizeof path, "%s/port", tdir);
    unlink(path);
    snprintf(cmd, sizeof cmd, "exec %s serve --index %s/x.idx " MODEL " --port 0 --port-file %s 2>%s/serve.log", tl_cli(),
             tdir, path, tdir);
    server = fork();
    if (server < 0) return 0;
    if (server == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 300; i++) {     /* up to 30 s (sanitizer builds load slowly) */
        char *s = slurp("port");
        port = s ? atoi(s) : 0;
        free(s);
        if (port > 0) return 1;
        if (waitpid(server, NULL, WNOHANG) == server) { server = -1; return 0; }
        tl_sleep_ms(100);
    }
    return 0;
}

/* SIGTERM, then the exit status (-1: did not stop within 10 s). */
static int stop_server(void) {
    int i, status;
    if (server <= 0) return -1;
    kill(server, SIGTERM);
    for (i = 0; i < 100; i++) {
        if (waitpid(server, &status, WNOHANG) == server) {
            server = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        tl_sleep_ms(100);
    }
    kill(server, SIGKILL);
    waitpid(server, &status, 0);
    server = -1;
    return -1;
}

/* The API's answer to target equals the CLI's stdout for args. */
static void check_same(const char *target, const char *args) {
    char cmd[4096], *api = NULL, *cli;
    int st = get(target, &api);
    int dedup = !strcmp(args, "dedup");
    snprintf(cmd, sizeof cmd, "%%C %s --format json %s >%%D/cli.out 2>/dev/null",
             dedup ? "dedup --index %D/x.idx" : "search --index %D/x.idx " MODEL, dedup ? "" : args);
    CHECK_MSG(sh(cmd) == 0, "the CLI failed: %s", args);
    cli = slurp("cli.out");
    CHECK_MSG(st == 200, "%s -> %d", target, st);
    CHECK_MSG(cli && cli[0], "the CLI printed nothing for %s", args);
    CHECK_MSG(api && cli && !strcmp(api, cli), "%s differs from the CLI:\n--- api\n%s--- cli\n%s", target, api ? api : "", cli ? cli : "");
    free(api);
    free(cli);
}

/* The page's ?selftest scenario in headless chromium: its DOM dumped, and
 * in the same run (chromium takes seconds to start) a screenshot of the page
 * after the scenario, build/serve_screenshot.png. */
static void run_browser(void) {
    char cmd[2048], png[300], *dom;
    const char *chromium = getenv("AES_CHROMIUM") ? getenv("AES_CHROMIUM") : "/usr/bin/chromium";
    struct stat sb;
    if (access(chromium, X_OK) != 0) {
        fprintf(stderr, "  (browser test skipped: no %s; apt-get install chromium)\n", chromium);
        return;
    }
    if (stat("build", &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(png, sizeof png, "build/serve_screenshot.png");
    else snprintf(png, sizeof png, "%s/serve_screenshot.png", tdir);
    unlink(png);
    snprintf(cmd, sizeof cmd, "timeout 120 %s --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions "
             "--hide-scrollbars --virtual-time-budget=30000 --user-data-dir=%s/chromium --window-size=1100,760 "
             "--screenshot=%s --dump-dom 'http://127.0.0.1:%d/?selftest=1&q=red%%20car' >%s/dom.html 2>%s/chromium.log",
             chromium, tdir, png, port, tdir, tdir);
    CHECK(system(cmd) == 0);
    dom = slurp("dom.html");
    CHECK_MSG(dom && strstr(dom, "selftest PASS") && strstr(dom, "<title>PASS</title>"),
              "the page's selftest did not pass:\n%s", dom && strstr(dom, "id=\"selftest\"") ? strstr(dom, "id=\"selftest\"") : "(no DOM; see chromium.log)");
    CHECK(dom && strstr(dom, "more like this #") && strstr(dom, "moving the aesthetic slider changed the order"));
    free(dom);
    CHECK_MSG(stat(png, &sb) == 0 && sb.st_size > 1000, "no screenshot %s", png);
}

static double t0;
static void stamp(const char *what) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (!t0) t0 = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if (getenv("AES_SERVE_TIMES")) fprintf(stderr, "  %6.2f s %s\n", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec - t0, what);
}

static void test_serve(void) {
    aes_index *idx = NULL;
    char path[256], target[1024], args[1024], *body = NULL;
    int i, st, fds[50], ok;
    if (getenv("AES_SLOW_RUNNER")) { tl_skip("a slow runner (valgrind / qemu)"); return; }
    if (!tl_cli()) return;
    stamp("begin");
    snprintf(tdir, sizeof tdir, "/tmp/aes_serve_XXXXXX");
    if (!mkdtemp(tdir)) { CHECK(0); return; }
    CHECK(sh("mkdir -p %D/photos") == 0);
    for (i = 0; i < 14; i++) {
        char name[64];
        snprintf(name, sizeof name, "photos/p%02d.ppm", i);
        write_ppm(name, 48 + 2 * i, 40, (unsigned)i * 7 + 1);
    }
    CHECK(sh("cp %D/photos/p05.ppm %D/photos/p05-copy.ppm") == 0);   /* a duplicate for the dedup view */
    CHECK(sh("%C index build " MODEL " " HEAD " --out %D/x.idx --quiet %D/photos 2>%D/build.log") == 0);
    CHECK(sh("%C index ivf %D/x.idx --nlist 3 --quiet") == 0);     /* serve uses it as search does */
    snprintf(path, sizeof path, "%s/x.idx", tdir);
    CHECK_OK(ctx, aes_index_load(ctx, path, &idx));
    if (!idx) goto out;
    if (!start_server()) { CHECK_MSG(0, "the server did not start (see %s/serve.log)", tdir); goto out; }

    stamp("started");
    /* the API prints what the CLI prints */
    check_same("/api/search?q=red+car&k=5&weight=1", "--k 5 --aesthetic-weight 1 'red car'");
    check_same("/api/search?q=blue%20sky%20%2B%202%3Asunset%20-%20people&k=7&weight=0.3&sort=aesthetic",
               "--k 7 --aesthetic-weight 0.3 --sort aesthetic 'blue sky' + 2:sunset - people");
    snprintf(target, sizeof target, "/api/search?image=3&k=6&weight=0&min=%.3f", (double)idx->aesthetic[3] - 0.3);
    snprintf(args, sizeof args, "--k 6 --aesthetic-weight 0 --min-aesthetic %.3f --image %s", (double)idx->aesthetic[3] - 0.3,
             aes_index_path(idx, 3));
    check_same(target, args);
    snprintf(args, sizeof args, "--k 4 --sort semantic 'a photo' --image %s", aes_index_path(idx, 2));   /* joined with + */
    check_same("/api/search?q=a+photo&image=2&k=4&sort=semantic", args);
    check_same("/api/dedup", "dedup");
    check_same("/api/search?q=red+car&k=5&weight=1&nprobe=1", "--k 5 --aesthetic-weight 1 --nprobe 1 'red car'");

    stamp("api compared");
    /* malformed and oversized requests: 4xx/5xx, and the server goes on */
    CHECK(raw("GARBAGE\r\n\r\n", strlen("GARBAGE\r\n\r\n"), NULL) == 400);
    CHECK(raw("GET / HTTP/2.0\r\n\r\n", strlen("GET / HTTP/2.0\r\n\r\n"), NULL) == 505);
    CHECK(raw("GET nothing HTTP/1.1\r\n\r\n", strlen("GET nothing HTTP/1.1\r\n\r\n"), NULL) == 400);
    CHECK(raw("GET / HTTP/1.1\r\nbad header\r\n\r\n", strlen("GET / HTTP/1.1\r\nbad header\r\n\r\n"), NULL) == 400);
    CHECK(raw("POST /api/search HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", strlen("POST /api/search HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"), NULL) == 413);
    CHECK(raw("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", strlen("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), NULL) == 501);
    CHECK(raw("DELETE /api/index HTTP/1.1\r\nConnection: close\r\n\r\n", strlen("DELETE /api/index HTTP/1.1\r\nConnection: close\r\n\r\n"), NULL) == 405);
    CHECK(get("/api/search?q=%zz", NULL) == 400);
    CHECK(get("/api/search?k=5", NULL) == 400);
    CHECK(get("/api/search?q=x&k=abc", NULL) == 400);
    {
        static char big[40000];
        memset(big, 'a', sizeof big);
        memcpy(big, "GET /", 5);
        CHECK(raw(big, sizeof big, NULL) == 414);     /* a request line without end */
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        CHECK(raw(big, sizeof big, NULL) == 431);     /* headers without end */
    }
    st = get("/api/info", &body);
    CHECK_MSG(st == 200 && body && strstr(body, "\"images\":15"), "after bad requests: %d %s", st, body ? body : "");
    free(body);
    body = NULL;

    stamp("malformed");
    /* images only by id: nothing outside the index */
    CHECK(get("/img/../../../../etc/passwd", &body) == 404 && body && !strstr(body, "root:"));
    free(body);
    body = NULL;
    CHECK(get("/img/%2e%2e%2f%2e%2e%2fetc%2fpasswd", NULL) == 404);
    CHECK(get("/thumb/99999", NULL) == 404);
    CHECK(get("/thumb/-1", NULL) == 404);
    CHECK(get("/../etc/passwd", NULL) == 404);
    CHECK(get("/api/search?q=/etc/passwd", NULL) == 400);
    CHECK(get("/api/search?q=2%3A/etc/passwd", NULL) == 400);
    st = get("/thumb/1", &body);
    CHECK(st == 200);
    free(body);
    body = NULL;
    CHECK(get("/img/1", NULL) == 200);
    st = get("/", &body);
    CHECK(st == 200 && body && strstr(body, "more like this") && !strstr(body, "http://") && !strstr(body, "https://"));
    free(body);
    body = NULL;

    stamp("traversal");
    /* 50 connections at once: all open before any request is sent */
    for (i = 0; i < 50; i++) fds[i] = dial();
    for (i = 0; i < 50; i++) {
        char req[256];
        int n = snprintf(req, sizeof req, "GET /api/search?q=photo+%d&k=3 HTTP/1.1\r\nConnection: close\r\n\r\n", i);
        if (fds[i] >= 0 && !send_all(fds[i], req, (size_t)n)) { close(fds[i]); fds[i] = -1; }
    }
    for (ok = 0, i = 0; i < 50; i++) {
        if (fds[i] < 0) continue;
        st = read_response(fds[i], &body);
        ok += st == 200 && body && strstr(body, "\"rank\":3");
        free(body);
        body = NULL;
        close(fds[i]);
    }
    CHECK_MSG(ok == 50, "%d of 50 concurrent searches answered", ok);

    /* keep-alive: two requests on one connection */
    {
        const char two[] = "GET /api/info HTTP/1.1\r\n\r\nGET /api/info HTTP/1.1\r\nConnection: close\r\n\r\n";
        st = raw(two, sizeof two - 1, &body);
        CHECK(st == 200 && body && strstr(body, "HTTP/1.1 200 OK"));
        free(body);
        body = NULL;
    }

    stamp("concurrent");
    run_browser();

    stamp("browser");
    /* reload: `index update` while serving */
    write_ppm("photos/new.ppm", 50, 50, 999);
    CHECK(sh("%C index update --index %D/x.idx --quiet 2>%D/update.log") == 0);
    st = get("/api/info", &body);
    CHECK_MSG(st == 200 && body && strstr(body, "\"images\":16"), "after index update: %s", body ? body : "");
    free(body);
    body = NULL;
    st = get("/api/index", &body);
    CHECK(st == 200 && body && strstr(body, "/photos/new.ppm\""));
    free(body);
    body = NULL;
    check_same("/api/search?q=red+car&k=16&weight=1", "--k 16 --aesthetic-weight 1 'red car'");

    stamp("reload");
    /* SIGTERM: a clean stop */
    CHECK(stop_server() == 0);
    body = slurp("serve.log");
    CHECK_MSG(body && strstr(body, "stopping") && strstr(body, "reloaded"), "serve.log:\n%s", body ? body : "");
    /* the IVF: used from the start, then stale after the update (exact search) */
    CHECK_MSG(body && strstr(body, "using IVF") && strstr(body, "stale"), "serve.log:\n%s", body ? body : "");
    free(body);
    body = NULL;
out:
    if (server > 0) stop_server();
    aes_index_free(idx);
    if (tl_failed == 0) sh("rm -rf %D");
    else fprintf(stderr, "  (kept %s)\n", tdir);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    if (!ctx) return 1;
    signal(SIGPIPE, SIG_IGN);        /* the server may close before reading all we send */
    RUN(test_serve);
    aes_ctx_free(ctx);
    return tl_report();
}
