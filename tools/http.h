/* http.h - the HTTP/1.1 request parser of `aesalign serve` (tools/cmd_serve.c),
 * in a header of static functions so the libFuzzer harness
 * (tests/fuzz/fuzz_http.c) can call it without the rest of the CLI.
 *
 * Only what a local page needs: a request line "METHOD TARGET HTTP/1.x",
 * headers (Content-Length and Connection read; Transfer-Encoding refused),
 * a body of Content-Length bytes.  Everything is bounded (HTTP_MAX_*); a
 * request over a bound or malformed gets a 4xx/5xx status, never a crash.
 * RFC 9112 is the reference; the bounds are ours. */
#ifndef AES_HTTP_H
#define AES_HTTP_H
#include <stddef.h>
#include <string.h>

#define HTTP_MAX_LINE    8192     /* the request line */
#define HTTP_MAX_HEAD    16384    /* request line and headers together */
#define HTTP_MAX_BODY    65536
#define HTTP_MAX_METHOD  16

typedef struct http_request {
    char   method[HTTP_MAX_METHOD];
    char   path[HTTP_MAX_LINE];   /* the target up to '?', percent-decoded */
    char   query[HTTP_MAX_LINE];  /* after '?' (not decoded), "" when none */
    int    minor;                 /* HTTP/1.minor */
    int    keep_alive;            /* 1.1 unless "Connection: close"; 1.0 only with keep-alive */
    size_t body_len;
    size_t body_off;              /* where the body starts in the buffer */
} http_request;

static int http_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 1 when the n bytes at a equal the NUL-terminated b, ASCII case ignored. */
static int http_eq_nocase(const char *a, size_t n, const char *b) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!b[i] || http_lower((unsigned char)a[i]) != http_lower((unsigned char)b[i])) return 0;
    return b[n] == 0;
}

static int http_hex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with the NUL); plus_space: '+'
 * means ' ' (query strings).  A NUL byte (%00) or a bad escape is refused.
 * Returns 0 on success, -1 when malformed or too long. */
static int http_decode(const char *s, size_t n, char *out, size_t cap, int plus_space) {
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= n) return -1;
            h = http_hex((unsigned char)s[i + 1]);
            l = http_hex((unsigned char)s[i + 2]);
            if (h < 0 || l < 0) return -1;
            c = h * 16 + l;
            if (c == 0) return -1;
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (o + 1 >= cap) return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

/* The value of parameter `name` in a query string "a=1&b=x%20y", decoded.
 * Returns 1 found, 0 absent, -1 malformed or longer than cap. */
static int http_query_get(const char *query, const char *name, char *out, size_t cap) {
    const char *p = query;
    size_t nl = strlen(name);
    while (*p) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p), *eq = p;
        while (eq < end && *eq != '=') eq++;
        if ((size_t)(eq - p) == nl && !memcmp(p, name, nl))
            return http_decode(eq < end ? eq + 1 : end, eq < end ? (size_t)(end - eq - 1) : 0, out, cap, 1) ? -1 : 1;
        if (!amp) break;
        p = amp + 1;
    }
    return 0;
}

/* Parses the request at the start of buf[0..len).  Returns 0 when more
 * bytes are needed, the request's total length (head and body) when it is
 * complete (req filled), or minus an HTTP status when it must be refused:
 * -400 malformed, -413 body too large, -414 request line too long,
 * -431 headers too large, -501 a transfer coding, -505 not HTTP/1.x. */
static long http_parse(const char *buf, size_t len, http_request *req) {
    size_t i, line_end, head_end = 0, sp1, sp2, tl;
    const char *q;
    int have_len = 0, conn_close = 0, conn_keep = 0;
    memset(req, 0, sizeof *req);
    /* the end of the head: the first empty line (CRLF CRLF, or bare LFs) */
    for (i = 0; i < len && i < HTTP_MAX_HEAD; i++) {
        if (buf[i] != '\n') continue;
        if (i >= 1 && buf[i - 1] == '\n') { head_end = i + 1; break; }
        if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n') { head_end = i + 1; break; }
    }
    for (line_end = 0; line_end < len && buf[line_end] != '\n'; line_end++) {}
    if (line_end >= len) return len > HTTP_MAX_LINE ? -414 : 0;   /* no complete request line yet */
    if (line_end > HTTP_MAX_LINE) return -414;
    if (!head_end) return len >= HTTP_MAX_HEAD ? -431 : 0;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    tl = line_end > 0 && buf[line_end - 1] == '\r' ? line_end - 1 : line_end;
    for (sp1 = 0; sp1 < tl && buf[sp1] != ' '; sp1++) {
        int c = (unsigned char)buf[sp1];
        if (!(c >= 'A' && c <= 'Z')) return -400;
    }
    if (sp1 == 0 || sp1 >= tl || sp1 >= HTTP_MAX_METHOD) return -400;
    for (sp2 = sp1 + 1; sp2 < tl && buf[sp2] != ' '; sp2++) {
        int c = (unsigned char)buf[sp2];
        if (c <= 0x20 || c >= 0x7f) return -400;
    }
    if (sp2 == sp1 + 1 || sp2 >= tl) return -400;
    if (tl - sp2 - 1 != 8 || memcmp(buf + sp2 + 1, "HTTP/1.", 7) != 0) {
        return tl - sp2 - 1 == 8 && !memcmp(buf + sp2 + 1, "HTTP/", 5) ? -505 : -400;
    }
    if (buf[tl - 1] < '0' || buf[tl - 1] > '9') return -400;
    req->minor = buf[tl - 1] - '0';
    memcpy(req->method, buf, sp1);
    req->method[sp1] = 0;
    if (buf[sp1 + 1] != '/') return -400;                /* origin-form only */
    for (q = buf + sp1 + 1; q < buf + sp2 && *q != '?'; q++) {}
    if (http_decode(buf + sp1 + 1, (size_t)(q - (buf + sp1 + 1)), req->path, sizeof req->path, 0)) return -400;
    if (q < buf + sp2) {
        size_t ql = (size_t)(buf + sp2 - q - 1);
        if (ql >= sizeof req->query) return -414;
        memcpy(req->query, q + 1, ql);
        req->query[ql] = 0;
    }
    /* headers: NAME ":" OWS VALUE OWS */
    for (i = line_end + 1; i < head_end;) {
        size_t e = i, ve, c, vs;
        while (e < head_end && buf[e] != '\n') e++;
        ve = e > i && buf[e - 1] == '\r' ? e - 1 : e;
        if (ve == i) break;                               /* the empty line */
        for (c = i; c < ve && buf[c] != ':'; c++) {
            int ch = (unsigned char)buf[c];
            if (ch <= 0x20 || ch >= 0x7f) return -400;    /* no space before ':', no obs-fold */
        }
        if (c == i || c >= ve) return -400;
        for (vs = c + 1; vs < ve && (buf[vs] == ' ' || buf[vs] == '\t'); vs++) {}
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
        {
            size_t k;
            for (k = vs; k < ve; k++)
                if (buf[k] == 0 || buf[k] == '\r') return -400;
        }
        if (http_eq_nocase(buf + i, c - i, "content-length")) {
            size_t v = 0, k;
            if (have_len || vs == ve) return -400;
            for (k = vs; k < ve; k++) {
                if (buf[k] < '0' || buf[k] > '9') return -400;
                if (v > HTTP_MAX_BODY) return -413;
                v = v * 10 + (size_t)(buf[k] - '0');
            }
            if (v > HTTP_MAX_BODY) return -413;
            req->body_len = v;
            have_len = 1;
        } else if (http_eq_nocase(buf + i, c - i, "transfer-encoding")) {
            return -501;
        } else if (http_eq_nocase(buf + i, c - i, "connection")) {
            if (http_eq_nocase(buf + vs, ve - vs, "close")) conn_close = 1;
            else if (http_eq_nocase(buf + vs, ve - vs, "keep-alive")) conn_keep = 1;
        }
        i = e + 1;
    }
    req->keep_alive = !conn_close && (req->minor >= 1 || conn_keep);
    req->body_off = head_end;
    if (len - head_end < req->body_len) return 0;
    return (long)(head_end + req->body_len);
}

#endif
