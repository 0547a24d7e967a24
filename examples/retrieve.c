/* retrieve.c - aesthetics-aware image retrieval in one file: the pipeline of
 * arXiv 2406.09397 (stages 1-2) with aesalign.h.
 *
 *   build/examples/retrieve MODEL.safetensors HEAD.safetensors MERGES.txt "query" IMAGE...
 *
 *   1. embed every image with CLIP's image tower, score it with the
 *      aesthetic head, and put both into an index (in memory here; the
 *      `aesalign index build` command saves one to disk);
 *   2. expand the query with aesthetic expectations (offline templates; an
 *      LLM or a cached file of rephrasings in a real deployment) and embed
 *      the original and the expansion with CLIP's text tower;
 *   3. find the best candidates by cosine similarity and re-rank them by
 *      semantic + W * z(aesthetic).
 */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#include <stdio.h>
#include <string.h>
#ifdef AES_HAVE_STB
#include <stb_image.h>
#endif

/* PPM/PGM through the library; JPEG, PNG, ... through stb_image when the
 * build has it (Debian's libstb-dev). */
static aes_status load_image(aes_ctx *ctx, const char *path, aes_image *img) {
    aes_status st = aes_image_load(ctx, path, img);
#ifdef AES_HAVE_STB
    if (st != AES_OK) {
        int w, h, c;
        unsigned char *px = stbi_load(path, &w, &h, &c, 3);
        if (!px) return st;
        aes_clear_error(ctx);
        st = aes_image_alloc(ctx, img, w, h, 3);
        if (st == AES_OK) memcpy(img->pixels, px, (size_t)w * h * 3);
        stbi_image_free(px);
    }
#endif
    return st;
}

/* CLIP text embedding of one string. */
static aes_status embed_text(aes_ctx *ctx, const aes_clip *model, const aes_tokenizer *tok,
                             const char *text, float *out) {
    int32_t ids[256];
    int L = aes_clip_config_get(model)->context_length;
    aes_status st;
    if (L > 256) return AES_ERR_UNSUPPORTED;
    st = aes_tokenizer_encode(ctx, tok, text, strlen(text), ids, L, NULL);
    return st != AES_OK ? st : aes_clip_encode_text(ctx, model, ids, 1, out);
}

#define CHECK(call, what)                                                              \
    do {                                                                               \
        if ((call) != AES_OK) {                                                        \
            fprintf(stderr, "retrieve: %s: %s\n", what, aes_last_error(ctx));          \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

int main(int argc, char **argv) {
    aes_ctx *ctx = aes_ctx_create();
    aes_clip *model = NULL;
    aes_tokenizer *tok = NULL;
    aes_head head;
    aes_index *index = NULL;
    aes_retrieve_opts opts;
    aes_result results[10];
    char expanded[1024];
    float *pixels, *emb, *e_query, *e_expanded, *query, score;
    int i, S, E, n_results = 0;

    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL HEAD MERGES \"query\" IMAGE...\n", argv[0]);
        return 2;
    }
    aes_threads_set(ctx, 2);
    CHECK(aes_clip_load(ctx, argv[1], NULL, &model), "loading the CLIP model");
    CHECK(aes_head_load(ctx, argv[2], &head), "loading the aesthetic head");
    CHECK(aes_tokenizer_load_merges(ctx, argv[3], &tok), "loading the BPE merges");
    S = aes_clip_config_get(model)->image_size;
    E = aes_clip_config_get(model)->embed_dim;
    pixels = (float *)malloc(sizeof(float) * 3 * S * S);
    emb = (float *)malloc(sizeof(float) * E * 4);
    if (!pixels || !emb) return 1;
    e_query = emb + E;
    e_expanded = emb + 2 * E;
    query = emb + 3 * E;

    /* 1. The index: one L2-normalized embedding and one aesthetic score
     *    per image (fp32 + int8 storage, as `aesalign index build`). */
    CHECK(aes_index_create(ctx, E, AES_INDEX_F32 | AES_INDEX_I8, aes_clip_id(model), "", &index),
          "creating the index");
    for (i = 5; i < argc; i++) {
        aes_image img;
        memset(&img, 0, sizeof img);
        if (load_image(ctx, argv[i], &img) != AES_OK ||
            aes_clip_preprocess(ctx, &img, S, pixels) != AES_OK) {
            fprintf(stderr, "retrieve: skipping %s: %s\n", argv[i], aes_last_error(ctx));
            aes_image_free(&img);
            continue;
        }
        aes_image_free(&img);
        CHECK(aes_clip_encode_image(ctx, model, pixels, 1, emb), "embedding an image");
        CHECK(aes_head_score(ctx, &head, emb, 1, &score), "scoring an image");
        CHECK(aes_index_add(ctx, index, argv[i], 0, 0, emb, score), "adding to the index");
    }
    printf("indexed %zu images\n", index->count);

    /* 2. Query expansion: the query plus the aesthetic expectations a
     *    person has but does not type; the two embeddings are averaged
     *    (normalized mean) so the original keeps the meaning anchored. */
    CHECK(aes_expand_template(ctx, argv[4], expanded, sizeof expanded), "expanding the query");
    printf("query:    %s\nexpanded: %s\n", argv[4], expanded);
    CHECK(embed_text(ctx, model, tok, argv[4], e_query), "embedding the query");
    CHECK(embed_text(ctx, model, tok, expanded, e_expanded), "embedding the expansion");
    CHECK(aes_query_combine(ctx, e_query, e_expanded, E, 0.5f, query), "combining");

    /* 3. Retrieval and re-ranking: the best `candidates` by cosine, then
     *    final = semantic + W * z(aesthetic) over those candidates. */
    aes_retrieve_opts_default(&opts);
    opts.k = 10;
    opts.candidates = 200;
    opts.aesthetic_weight = 0.02f;
    CHECK(aes_index_retrieve(ctx, index, query, &opts, results, &n_results), "searching");

    printf("rank\tsemantic\taesthetic\tfinal\tpath\n");
    for (i = 0; i < n_results; i++)
        printf("%d\t%.4f\t%.3f\t%.4f\t%s\n", i + 1, results[i].semantic, results[i].aesthetic,
               results[i].final, aes_index_path(index, (size_t)results[i].row));

    free(pixels);
    free(emb);
    aes_index_free(index);
    aes_head_free(&head);
    aes_tokenizer_free(tok);
    aes_clip_free(model);
    aes_ctx_free(ctx);
    return 0;
}
