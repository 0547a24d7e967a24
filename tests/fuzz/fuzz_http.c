/* fuzz_http.c -- the request parser of `aesalign serve` (tools/http.h):
 * requests one after another in the input (as a keep-alive connection
 * delivers them), the query-string decoder on what parses, and the
 * parser's promises: a complete request's length within the input, its
 * body inside it, a path starting with '/', refusals only with the
 * statuses it documents. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "tools/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = (char *)malloc(size ? size : 1);   /* exact size: reads past it are caught */
    http_request *req = (http_request *)malloc(sizeof *req);
    size_t off = 0;
    if (!buf || !req) abort();
    if (size) memcpy(buf, data, size);
    while (off < size) {
        long n = http_parse(buf + off, size - off, req);
        if (n == 0) break;
        if (n < 0) {
            if (n != -400 && n != -413 && n != -414 && n != -431 && n != -501 && n != -505) abort();
            break;
        }
        if ((size_t)n > size - off || req->body_off + req->body_len != (size_t)n) abort();
        if (req->path[0] != '/' || !req->method[0] || req->body_len > HTTP_MAX_BODY) abort();
        if (strlen(req->path) >= sizeof req->path || strlen(req->query) >= sizeof req->query) abort();
        {
            static const char *const names[] = {"q", "image", "k", "weight", "", "a=b"};
            char out[64];
            size_t k;
            for (k = 0; k < sizeof names / sizeof *names; k++) {
                int g = http_query_get(req->query, names[k], out, sizeof out);
                if (g < -1 || g > 1) abort();
                if (g == 1 && strlen(out) >= sizeof out) abort();
            }
        }
        off += (size_t)n;
    }
    free(req);
    free(buf);
    return 0;
}
