/* tests/test_world.c - the synthetic aesthetic world (tools/world.h). */
#define AESALIGN_IMPLEMENTATION
#include "../aesalign.h"
#define WORLD_IMPLEMENTATION
#include "../tools/world.h"
#include "testlib.h"
#include <sys/stat.h>
#include <unistd.h>

static aes_ctx *ctx;

/* CHECK_OK for world_ calls: their messages are in world_last_error(). */
#define CHECK_WORLD(expr) \
    do { int st_ = (int)(expr); \
         if (st_ != 0) tl_fail_at(__FILE__, __LINE__, "%s -> status %d: %s", #expr, st_, world_last_error()); } while (0)

/* A hand-made scene: a plain mid-grey-blue background, no defects; the
 * caller adds groups/objects. */
static void blank_scene(world_scene *s) {
    memset(s, 0, sizeof *s);
    s->seed = 99;
    s->index = 1;
    s->background = WORLD_BG_PLAIN;
    s->contrast = 1.0f;
    s->bg_period = 0.18f;
    s->bg_dir[0] = 1.0f;
    s->rater_sd = 1.2f;
    s->composition = WORLD_LOOSE;
    s->harmony = WORLD_NEUTRAL;
}

static void set_bg(world_scene *s, float r, float g, float b) {
    s->bg_rgb[0][0] = s->bg_rgb[1][0] = r;
    s->bg_rgb[0][1] = s->bg_rgb[1][1] = g;
    s->bg_rgb[0][2] = s->bg_rgb[1][2] = b;
}

static void add_group(world_scene *s, int count, world_size size, world_colour colour,
                      world_shape shape) {
    world_group *g = &s->groups[s->ngroups++];
    g->count = count;
    g->size = size;
    g->colour = colour;
    g->shape = shape;
}

static void add_object(world_scene *s, int group, float x, float y) {
    world_object *o = &s->objects[s->nobjects++];
    static const float radius[3] = {0.075f, 0.11f, 0.155f};
    const world_group *g = &s->groups[group];
    static const float rgb[8][3] = {{0.86f, 0.16f, 0.16f}, {0.96f, 0.55f, 0.08f}, {0.96f, 0.84f, 0.12f},
                                    {0.16f, 0.67f, 0.24f}, {0.16f, 0.35f, 0.86f}, {0.55f, 0.20f, 0.75f},
                                    {0.96f, 0.96f, 0.96f}, {0.08f, 0.08f, 0.08f}};
    o->shape = g->shape;
    o->colour = g->colour;
    o->group = group;
    o->x = x;
    o->y = y;
    o->radius = radius[g->size];
    memcpy(o->rgb, rgb[g->colour], sizeof o->rgb);
}

/* A query from its parts (size/background -1 = any, relation NONE = none). */
static world_query make_query(int count, int size, world_colour colour, world_shape shape, int bg,
                                  world_relation rel, int count2, world_colour colour2,
                                  world_shape shape2) {
    world_query q;
    memset(&q, 0, sizeof q);
    q.count = count;
    q.size = size;
    q.colour = colour;
    q.shape = shape;
    q.background = bg;
    q.relation = rel;
    q.count2 = count2;
    q.colour2 = colour2;
    q.shape2 = shape2;
    return q;
}

/* ---- determinism --------------------------------------------------------- */
static void test_determinism(void) {
    world_scene a, b, c;
    uint8_t img_a[64 * 64 * 3], img_b[64 * 64 * 3];
    int i, differ = 0;
    CHECK_WORLD(world_sample(ctx, 7, 123, NULL, &a));
    CHECK_WORLD(world_sample(ctx, 7, 5, NULL, &c)); /* other scenes in between change nothing */
    CHECK_WORLD(world_sample(ctx, 7, 123, NULL, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    CHECK_WORLD(world_render(ctx, &a, 64, 64, img_a));
    CHECK_WORLD(world_render(ctx, &b, 64, 64, img_b));
    CHECK(memcmp(img_a, img_b, sizeof img_a) == 0);
    /* another seed gives another world: every one of 20 images differs */
    for (i = 0; i < 20; i++) {
        CHECK_WORLD(world_sample(ctx, 7, i, NULL, &a));
        CHECK_WORLD(world_sample(ctx, 8, i, NULL, &b));
        CHECK_WORLD(world_render(ctx, &a, 64, 64, img_a));
        CHECK_WORLD(world_render(ctx, &b, 64, 64, img_b));
        differ += memcmp(img_a, img_b, sizeof img_a) != 0;
    }
    CHECK(differ == 20);
    /* and a neighbouring index is another scene */
    CHECK_WORLD(world_sample(ctx, 7, 124, NULL, &c));
    CHECK(memcmp(&a, &c, sizeof a) != 0);
}

/* Pinned: the first scenes of world 1.  If this fails the world changed,
 * and every number measured on it (demo tables, README) must be redone. */
static void test_golden_captions(void) {
    static const char *const want[3] = {
        "a black ring on a textured background",
        "two purple circles below two yellow stars on a textured background",
        "a red square below a blue cross on a plain background",
    };
    int i;
    for (i = 0; i < 3; i++) {
        world_scene s;
        char cap[WORLD_TEXT_MAX];
        CHECK_WORLD(world_sample(ctx, 1, i, NULL, &s));
        CHECK_WORLD(world_caption(ctx, &s, 1, cap, sizeof cap));
        CHECK_MSG(strcmp(cap, want[i]) == 0, "scene %d: '%s', want '%s'", i, cap, want[i]);
    }
}

/* Pinned pixels: FNV-1a of the 64x64 renders of scenes 0..2 of world 1.  The
 * same on x86-64 (gcc, clang), AArch64 and 32-bit ARM with glibc; another
 * libm could round a cos/sin/exp differently and move a pixel by one level. */
static void test_golden_pixels(void) {
    static uint8_t img[64 * 64 * 3];
    uint64_t h = 1469598103934665603ull;
    int i, k;
    for (i = 0; i < 3; i++) {
        world_scene s;
        CHECK_WORLD(world_sample(ctx, 1, i, NULL, &s));
        CHECK_WORLD(world_render(ctx, &s, 64, 64, img));
        for (k = 0; k < 64 * 64 * 3; k++) h = (h ^ img[k]) * 1099511628211ull;
    }
    CHECK_MSG(h == 0x108544c414e1ac66ull, "renders changed: FNV-1a %016llx", (unsigned long long)h);
}

/* world_render_many renders on the calling thread: the same bytes as
 * world_render, whatever the context's thread count. */
static void test_render_many_threads(void) {
    enum { N = 24, W = 48, H = 40 };
    world_scene scenes[N];
    static uint8_t one[N * W * H * 3], many1[N * W * H * 3], many2[N * W * H * 3];
    int i;
    for (i = 0; i < N; i++) {
        CHECK_WORLD(world_sample(ctx, 11, i, NULL, &scenes[i]));
        CHECK_WORLD(world_render(ctx, &scenes[i], W, H, one + (size_t)i * W * H * 3));
    }
    CHECK_OK(ctx, aes_threads_set(ctx, 1));
    CHECK_WORLD(world_render_many(ctx, scenes, N, W, H, many1));
    CHECK(memcmp(one, many1, sizeof one) == 0);
    if (aes_threads_set(ctx, 2) != AES_OK) {   /* an AES_NO_THREADS build */
        aes_clear_error(ctx);
        return;
    }
    CHECK_WORLD(world_render_many(ctx, scenes, N, W, H, many2));
    CHECK_OK(ctx, aes_threads_set(ctx, 1));
    CHECK(memcmp(one, many2, sizeof one) == 0);
}

/* ---- the score distribution is long-tailed like AVA's ---------------------- */
static void check_distribution(uint64_t seed, int n) {
    int bins[11] = {0}, i, mid;
    double mean = 0.0, lo, hi;
    for (i = 0; i < n; i++) {
        world_scene s;
        int b;
        CHECK_WORLD(world_sample(ctx, seed, i, NULL, &s));
        CHECK(s.score > 1.0f && s.score < 10.0f);
        CHECK_NEAR(s.score, world_score(&s, NULL), 0.0);
        b = (int)floor((double)s.score + 0.5);
        bins[b < 1 ? 1 : b > 10 ? 10 : b]++;
        mean += s.score;
    }
    mean /= n;
    mid = bins[4] + bins[5] + bins[6] + bins[7];
    lo = (double)(bins[1] + bins[2] + bins[3]) / n;
    hi = (double)(bins[8] + bins[9] + bins[10]) / n;
    if (getenv("TL_VERBOSE")) {
        fprintf(stderr, "  seed %llu, %d scenes, mean %.2f, bins 1..10:", (unsigned long long)seed, n, mean);
        for (i = 1; i <= 10; i++) fprintf(stderr, " %d", bins[i]);
        fprintf(stderr, "\n");
    }
    CHECK_MSG((double)mid / n >= 0.6, "only %.1f%% in bins 4-7", 100.0 * mid / n);
    CHECK_MSG(lo < 0.1 && lo > 0.0, "low tail (bins 1-3) holds %.1f%%", 100.0 * lo);
    CHECK_MSG(hi < 0.1 && hi > 0.0, "high tail (bins 8-10) holds %.1f%%", 100.0 * hi);
    CHECK_MSG(mean > 5.0 && mean < 5.9, "mean score %.2f is not AVA-like", mean);
    /* the tails are the minority: the two middle bins outweigh both tails 5:1 */
    CHECK(bins[5] + bins[6] > 5 * (bins[1] + bins[2] + bins[3] + bins[8] + bins[9] + bins[10]));
}

static void test_score_distribution(void) {
    check_distribution(2024, 4000);
    check_distribution(1, 3000);
}

/* ---- vote histograms ------------------------------------------------------ */
static void test_histograms(void) {
    int i, k, n = 600, checked = 0;
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, r, dev = 0.0;
    int32_t h[WORLD_NBINS], h2[WORLD_NBINS];
    world_scene s;
    for (i = 0; i < n; i++) {
        double mean = 0.0;
        int total = 0;
        CHECK_WORLD(world_sample(ctx, 5, i, NULL, &s));
        CHECK_WORLD(world_histogram(ctx, &s, 120, h));
        for (k = 0; k < WORLD_NBINS; k++) {
            CHECK(h[k] >= 0);
            total += h[k];
            mean += (k + 1) * (double)h[k];
        }
        CHECK(total == 120);
        mean /= 120.0;
        if (s.score > 2.5f && s.score < 8.5f) {
            /* 120 votes with spread ~1.3: the mean's own noise is ~0.12 */
            CHECK_MSG(fabs(mean - s.score) < 0.6, "scene %d: vote mean %.2f vs score %.2f", i, mean, (double)s.score);
            dev += fabs(mean - s.score);
            checked++;
        }
        sx += s.score; sy += mean; sxx += (double)s.score * s.score; syy += mean * mean; sxy += s.score * mean;
    }
    r = (n * sxy - sx * sy) / sqrt((n * sxx - sx * sx) * (n * syy - sy * sy));
    CHECK_MSG(r > 0.98, "vote mean vs score: Pearson %.4f", r);
    CHECK(checked > n / 2);
    CHECK_MSG(dev / checked < 0.15, "mean |vote mean - score| = %.3f", dev / checked);
    if (getenv("TL_VERBOSE")) fprintf(stderr, "  vote mean vs score: Pearson %.4f, mean abs diff %.3f\n", r, dev / checked);
    /* deterministic, and the other raters' counts still add up */
    CHECK_WORLD(world_histogram(ctx, &s, 120, h2));
    CHECK(memcmp(h, h2, sizeof h) == 0);
    CHECK_WORLD(world_histogram(ctx, &s, 1, h2));
    for (k = 0, i = 0; k < WORLD_NBINS; k++) i += h2[k];
    CHECK(i == 1);
    CHECK(world_histogram(ctx, &s, 0, h2) == AES_ERR_INVALID_ARG);
    CHECK(world_histogram(ctx, NULL, 10, h2) == AES_ERR_INVALID_ARG);
    /* a bad scene gets low votes, a good one high votes */
    s.score = 2.0f;
    CHECK_WORLD(world_histogram(ctx, &s, 200, h));
    s.score = 8.0f;
    CHECK_WORLD(world_histogram(ctx, &s, 200, h2));
    CHECK(h[0] + h[1] + h[2] > 120 && h2[7] + h2[8] + h2[9] > 80);
}

/* ---- relevance on hand-checked scenes ---------------------------------------- */
static void test_relevance(void) {
    world_scene s, t;
    world_query q;
    char text[WORLD_TEXT_MAX];
    const world_relation NONE = WORLD_REL_NONE;

    /* "two small red circles above a large blue square on a striped background" */
    blank_scene(&s);
    s.background = WORLD_BG_STRIPED;
    add_group(&s, 2, WORLD_SMALL, WORLD_RED, WORLD_CIRCLE);
    add_group(&s, 1, WORLD_LARGE, WORLD_BLUE, WORLD_SQUARE);
    s.relation = WORLD_ABOVE;
    q = make_query(2, -1, WORLD_RED, WORLD_CIRCLE, -1, NONE, 0, WORLD_RED, WORLD_CIRCLE);
    CHECK(world_relevance(&q, &s) == 2);
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "two red circles") == 0);
    q.count = 1;   /* "a red circle": the scene has two */
    CHECK(world_relevance(&q, &s) == 1);
    q.count = 0;   /* any count */
    CHECK(world_relevance(&q, &s) == 2);
    q.count = 2; q.size = WORLD_SMALL;
    CHECK(world_relevance(&q, &s) == 2);
    q.size = WORLD_LARGE;
    CHECK(world_relevance(&q, &s) == 1);
    q.size = -1; q.background = WORLD_BG_STRIPED;
    CHECK(world_relevance(&q, &s) == 2);
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "two red circles on a striped background") == 0);
    q.background = WORLD_BG_CHECKERED;
    CHECK(world_relevance(&q, &s) == 1);

    /* relations, both ways round */
    q = make_query(2, -1, WORLD_RED, WORLD_CIRCLE, -1, WORLD_ABOVE, 1, WORLD_BLUE, WORLD_SQUARE);
    CHECK(world_relevance(&q, &s) == 2);
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "two red circles above a blue square") == 0);
    q = make_query(1, -1, WORLD_BLUE, WORLD_SQUARE, -1, WORLD_BELOW, 2, WORLD_RED, WORLD_CIRCLE);
    CHECK(world_relevance(&q, &s) == 2);
    q.relation = WORLD_ABOVE;   /* wrong way round */
    CHECK(world_relevance(&q, &s) == 1);
    q.relation = WORLD_LEFT_OF;
    CHECK(world_relevance(&q, &s) == 1);
    q = make_query(2, -1, WORLD_RED, WORLD_CIRCLE, -1, WORLD_ABOVE, 1, WORLD_BLUE, WORLD_CIRCLE);
    CHECK(world_relevance(&q, &s) == 1);
    q = make_query(2, -1, WORLD_RED, WORLD_CIRCLE, -1, WORLD_ABOVE, 2, WORLD_BLUE, WORLD_SQUARE);
    CHECK(world_relevance(&q, &s) == 1);   /* one blue square, not two */

    /* the second group is findable; absent colour/shape pairs are 0 */
    q = make_query(1, WORLD_LARGE, WORLD_BLUE, WORLD_SQUARE, -1, NONE, 0, WORLD_RED, WORLD_CIRCLE);
    CHECK(world_relevance(&q, &s) == 2);
    q.colour = WORLD_GREEN;
    CHECK(world_relevance(&q, &s) == 0);
    q.colour = WORLD_RED;   /* red present, but not as a square */
    CHECK(world_relevance(&q, &s) == 0);
    q.colour = WORLD_BLUE; q.shape = WORLD_CIRCLE;
    CHECK(world_relevance(&q, &s) == 0);

    /* one group: "a medium yellow star on a plain background" */
    blank_scene(&t);
    add_group(&t, 1, WORLD_MEDIUM, WORLD_YELLOW, WORLD_STAR);
    q = make_query(1, -1, WORLD_YELLOW, WORLD_STAR, WORLD_BG_PLAIN, NONE, 0, WORLD_RED, WORLD_CIRCLE);
    CHECK(world_relevance(&q, &t) == 2);
    q.relation = WORLD_ABOVE; q.count2 = 1;
    CHECK(world_relevance(&q, &t) == 1);
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "a yellow star above a red circle on a plain background") == 0);
    q = make_query(1, WORLD_SMALL, WORLD_ORANGE, WORLD_CROSS, -1, NONE, 0, WORLD_RED, WORLD_CIRCLE);
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "a small orange cross") == 0);
    q.size = -1; q.count = 3;
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "three orange crosses") == 0);
    q.count = 1;
    CHECK_WORLD(world_query_text(ctx, &q, text, sizeof text));
    CHECK(strcmp(text, "an orange cross") == 0);
    CHECK(world_relevance(&q, &t) == 0);
    CHECK(world_relevance(NULL, &t) == 0 && world_relevance(&q, NULL) == 0);
    q.colour = (world_colour)99;
    CHECK(world_query_text(ctx, &q, text, sizeof text) == AES_ERR_INVALID_ARG);
}

/* ---- captions ---------------------------------------------------------------- */
static int has_word(const char *text, const char *phrase) { /* phrase as whole words */
    size_t n = strlen(phrase);
    const char *p = text;
    while ((p = strstr(p, phrase)) != NULL) {
        if ((p == text || p[-1] == ' ') && (p[n] == 0 || p[n] == ' ')) return 1;
        p++;
    }
    return 0;
}

static void test_captions(void) {
    static const char *const counts[] = {"", "a", "two", "three"};
    int i, v, quality[4] = {0, 0, 0, 0};
    char cap[WORLD_TEXT_MAX], small[12];
    world_scene s;
    for (i = 0; i < 400; i++) {
        CHECK_WORLD(world_sample(ctx, 3, i, NULL, &s));
        for (v = 0; v < WORLD_NVARIANTS; v++) {
            int g;
            CHECK_WORLD(world_caption(ctx, &s, v, cap, sizeof cap));
            CHECK(strlen(cap) > 10 && !strstr(cap, "  ") && !strstr(cap, "a orange") && !strstr(cap, "\t"));
            CHECK_MSG(has_word(cap, world_background_name(s.background)), "'%s' lacks the background", cap);
            for (g = 0; g < s.ngroups; g++) {
                const world_group *gr = &s.groups[g];
                char phrase[64];
                if (gr->count == 1) {
                    const char *next = v == 0 || v == 2 ? world_size_name(gr->size) : world_colour_name(gr->colour);
                    snprintf(phrase, sizeof phrase, "%s", next[0] == 'o' ? "an" : "a");
                } else {
                    snprintf(phrase, sizeof phrase, "%s", counts[gr->count]);
                }
                if (v == 0 || v == 2)
                    snprintf(phrase + strlen(phrase), sizeof phrase - strlen(phrase), " %s", world_size_name(gr->size));
                snprintf(phrase + strlen(phrase), sizeof phrase - strlen(phrase), " %s %s%s",
                         world_colour_name(gr->colour), world_shape_name(gr->shape),
                         gr->count == 1 ? "" : gr->shape == WORLD_CROSS ? "es" : "s");
                CHECK_MSG(has_word(cap, phrase), "'%s' lacks '%s'", cap, phrase);
            }
            if (s.ngroups == 2) {
                CHECK_MSG(has_word(cap, world_relation_name(v == 2 ? (s.relation == WORLD_ABOVE ? WORLD_BELOW
                                                                          : s.relation == WORLD_BELOW ? WORLD_ABOVE
                                                                          : s.relation == WORLD_LEFT_OF ? WORLD_RIGHT_OF
                                                                          : WORLD_LEFT_OF)
                                                                       : s.relation)),
                          "'%s' lacks the relation", cap);
            }
            if (v == 3) {
                CHECK(strstr(cap, "photo of ") != NULL);
                quality[0] += strstr(cap, "blurry") != NULL || strstr(cap, "noisy") != NULL;
                /* good scenes say it the way the expansion templates do, after the scene */
                quality[1] += strstr(cap, " background, balanced composition") != NULL ||
                              strstr(cap, " background, vivid colors") != NULL;
                quality[2] += strstr(cap, "beautiful") != NULL;
                quality[3] += strncmp(cap, "a photo of", 10) == 0;
            }
            if (getenv("TL_VERBOSE") && i < 3) fprintf(stderr, "  %d.%d %.2f %s\n", i, v, (double)s.score, cap);
        }
        CHECK_WORLD(world_caption(ctx, &s, 2, cap, sizeof cap));
        CHECK(strncmp(cap, "a ", 2) == 0 && strstr(cap, " background with ") != NULL);
    }
    /* the quality phrase says different things for different scenes; most say nothing */
    CHECK(quality[0] > 0 && quality[1] > 0 && quality[2] > 0 && quality[3] > 200);
    /* buffers: too small is an error with a terminated string */
    CHECK(world_caption(ctx, &s, 0, small, sizeof small) == AES_ERR_LIMIT);
    CHECK(strlen(small) == sizeof small - 1);
    CHECK(world_caption(ctx, &s, 4, cap, sizeof cap) == AES_ERR_INVALID_ARG);
    CHECK(world_caption(ctx, &s, -1, cap, sizeof cap) == AES_ERR_INVALID_ARG);
    CHECK(world_caption(ctx, NULL, 0, cap, sizeof cap) == AES_ERR_INVALID_ARG);
}

/* ---- aesthetic factors move the score the documented way ------------------------ */
static float luma_variance_of_diffs(const uint8_t *img, int w, int h) { /* high-frequency energy */
    double s = 0.0;
    int x, y, c;
    for (y = 0; y < h; y++)
        for (x = 1; x < w; x++)
            for (c = 0; c < 3; c++) {
                double d = (double)img[(y * w + x) * 3 + c] - img[(y * w + x - 1) * 3 + c];
                s += d * d;
            }
    return (float)(s / (w * h * 3));
}

static void test_factor_directions(void) {
    world_scene base, s;
    world_score_parts p0, p1;
    uint8_t a[64 * 64 * 3], b[64 * 64 * 3];
    float s0, e0;
    int k;

    /* a blue circle on a power point over a soft orange (complementary) background */
    blank_scene(&base);
    set_bg(&base, 0.93f, 0.78f, 0.6f);
    add_group(&base, 1, WORLD_MEDIUM, WORLD_BLUE, WORLD_CIRCLE);
    add_object(&base, 0, 1.0f / 3.0f, 1.0f / 3.0f);
    s0 = world_score(&base, &p0);
    CHECK(s0 > 6.0f);
    CHECK_MSG(p0.thirds > 0.99f && p0.cut == 0.0f && p0.edge == 0.0f && p0.hue_harmony > 0.9f, "thirds %g cut %g edge %g harmony %g", p0.thirds, p0.cut, p0.edge, p0.hue_harmony);
    CHECK_WORLD(world_render(ctx, &base, 64, 64, a));
    e0 = luma_variance_of_diffs(a, 64, 64);

    s = base; s.noise = 20.0f;                            /* noise lowers it ... */
    CHECK(world_score(&s, NULL) < s0 - 0.5f);
    CHECK_WORLD(world_render(ctx, &s, 64, 64, b));  /* ... and shows */
    CHECK(luma_variance_of_diffs(b, 64, 64) > 4.0f * e0);

    s = base; s.blur = 1.5f / 64.0f;                      /* blur */
    CHECK(world_score(&s, NULL) < s0 - 0.5f);
    CHECK_WORLD(world_render(ctx, &s, 64, 64, b));
    CHECK(luma_variance_of_diffs(b, 64, 64) < 0.7f * e0);

    s = base;                                             /* clutter */
    for (k = 0; k < 6; k++) {
        world_stroke *st = &s.clutter[s.nclutter++];
        st->x0 = 0.1f + 0.12f * k; st->y0 = 0.8f; st->x1 = st->x0 + 0.08f; st->y1 = 0.65f;
        st->width = 0.015f;
        st->rgb[0] = 0.3f; st->rgb[1] = 0.5f; st->rgb[2] = 0.3f;
    }
    CHECK(world_score(&s, NULL) < s0 - 1.0f);
    CHECK_WORLD(world_render(ctx, &s, 64, 64, b));
    CHECK(memcmp(a, b, sizeof a) != 0);

    s = base; set_bg(&s, 0.35f, 0.85f, 0.25f);           /* a clashing green background */
    world_score(&s, &p1);
    CHECK(p1.hue_harmony < 0.0f && p1.score < s0 - 1.0f);

    s = base; s.contrast = 0.5f;                          /* washed out */
    CHECK(world_score(&s, NULL) < s0 - 0.3f);
    s = base; set_bg(&s, 0.3f, 0.36f, 0.36f);            /* subject luma ~ background luma */
    world_score(&s, &p1);
    CHECK(p1.luma_diff < 0.1f && p1.score < s0 - 1.0f);

    s = base; s.objects[0].x = 0.99f;                     /* cut by the frame */
    world_score(&s, &p1);
    CHECK(p1.cut > 0.3f && p1.edge == 1.0f && p1.score < s0 - 2.0f);
    s = base; s.objects[0].x = 0.5f; s.objects[0].y = 0.5f; /* centred: fine, less than thirds */
    world_score(&s, &p1);
    CHECK(p1.centred > 0.99f && p1.score < s0 && p1.score > s0 - 1.0f);
    s = base; s.objects[0].x = 0.53f; s.objects[0].y = 0.16f; /* neither: off, near the top */
    CHECK(world_score(&s, NULL) < p1.score);

    s = base; s.shadow = 1.0f;                            /* depth helps */
    CHECK(world_score(&s, NULL) > s0);
    CHECK_WORLD(world_render(ctx, &s, 64, 64, b));
    CHECK(memcmp(a, b, sizeof a) != 0);

    /* over sampled scenes: the labels the sampler drew order the mean scores
     * the way the formula promises, and the latent skill drives the score */
    {
        double sum[WORLD_NCOMPOSITIONS] = {0}, hsum[WORLD_NHARMONIES] = {0};
        int cnt[WORLD_NCOMPOSITIONS] = {0}, hcnt[WORLD_NHARMONIES] = {0}, i, n = 3000;
        double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, r;
        for (i = 0; i < n; i++) {
            CHECK_WORLD(world_sample(ctx, 9, i, NULL, &s));
            sum[s.composition] += s.score; cnt[s.composition]++;
            hsum[s.harmony] += s.score; hcnt[s.harmony]++;
            sx += s.skill; sy += s.score; sxx += (double)s.skill * s.skill; syy += (double)s.score * s.score;
            sxy += (double)s.skill * s.score;
        }
        for (i = 0; i < WORLD_NCOMPOSITIONS; i++) CHECK(cnt[i] > 50);
        CHECK(sum[WORLD_THIRDS] / cnt[WORLD_THIRDS] > sum[WORLD_CENTRED] / cnt[WORLD_CENTRED]);
        CHECK(sum[WORLD_CENTRED] / cnt[WORLD_CENTRED] > sum[WORLD_LOOSE] / cnt[WORLD_LOOSE]);
        CHECK(sum[WORLD_LOOSE] / cnt[WORLD_LOOSE] > sum[WORLD_CRAMPED] / cnt[WORLD_CRAMPED]);
        CHECK(hsum[WORLD_COMPLEMENTARY] / hcnt[WORLD_COMPLEMENTARY] > hsum[WORLD_CLASHING] / hcnt[WORLD_CLASHING] + 1.0);
        CHECK(hsum[WORLD_ANALOGOUS] / hcnt[WORLD_ANALOGOUS] > hsum[WORLD_NEUTRAL] / hcnt[WORLD_NEUTRAL]);
        r = (n * sxy - sx * sy) / sqrt((n * sxx - sx * sx) * (n * syy - sy * sy));
        CHECK_MSG(r > 0.5, "skill vs score: Pearson %.3f", r);
    }
}

/* ---- rendering: edges, odd sizes, bad input ------------------------------------------ */
static void test_render_edges(void) {
    static const int sizes[][2] = {{1, 1}, {2, 3}, {7, 5}, {64, 64}, {100, 37}, {13, 90}};
    enum { GUARD = 64 };
    static uint8_t buf[GUARD + 100 * 90 * 3 + GUARD];
    world_scene s;
    int i, k, sh;
    blank_scene(&s);
    set_bg(&s, 0.2f, 0.3f, 0.4f);
    s.background = WORLD_BG_CHECKERED;
    s.noise = 10.0f;
    s.blur = 0.02f;
    s.shadow = 1.0f;
    add_group(&s, 6, WORLD_LARGE, WORLD_YELLOW, WORLD_STAR);
    /* objects on, over and far beyond every edge and corner, huge and tiny */
    {
        static const float xy[6][2] = {{0.0f, 0.0f}, {1.0f, 1.0f}, {-0.3f, 0.5f}, {1.2f, -0.2f}, {0.5f, 1.05f}, {0.5f, 0.5f}};
        for (k = 0; k < 6; k++) add_object(&s, 0, xy[k][0], xy[k][1]);
        s.objects[5].radius = 2.0f;
        s.objects[4].radius = 0.001f;
    }
    for (k = 0; k < 4; k++) {
        world_stroke *st = &s.clutter[s.nclutter++];
        st->x0 = -0.5f + k * 0.5f; st->y0 = -0.3f; st->x1 = 1.4f - k * 0.3f; st->y1 = 1.3f;
        st->width = 0.05f;
    }
    for (sh = 0; sh < WORLD_NSHAPES; sh++) {
        for (k = 0; k < s.nobjects; k++) s.objects[k].shape = (world_shape)sh;
        for (i = 0; i < (int)(sizeof sizes / sizeof *sizes); i++) {
            int w = sizes[i][0], h = sizes[i][1], j, intact = 1;
            size_t n = (size_t)w * h * 3;
            memset(buf, 0xAB, sizeof buf);
            CHECK_WORLD(world_render(ctx, &s, w, h, buf + GUARD));
            for (j = 0; j < GUARD; j++) intact &= buf[j] == 0xAB && buf[GUARD + n + j] == 0xAB;
            CHECK_MSG(intact, "shape %d, %dx%d: a write outside the image", sh, w, h);
        }
    }
    /* bad input is refused, not drawn */
    CHECK(world_render(ctx, &s, 0, 64, buf) == AES_ERR_INVALID_ARG);
    CHECK(world_render(ctx, &s, 64, -1, buf) == AES_ERR_INVALID_ARG);
    CHECK(world_render(ctx, NULL, 64, 64, buf) == AES_ERR_INVALID_ARG);
    CHECK(world_render(ctx, &s, 64, 64, NULL) == AES_ERR_INVALID_ARG);
    s.nobjects = WORLD_MAX_OBJECTS + 1;
    CHECK(world_render(ctx, &s, 8, 8, buf) == AES_ERR_INVALID_ARG);
    s.nobjects = 6;
    s.objects[2].radius = NAN;
    CHECK(world_render(ctx, &s, 8, 8, buf) == AES_ERR_INVALID_ARG);
    s.objects[2].radius = 0.1f;
    s.objects[2].shape = (world_shape)77;
    CHECK(world_render(ctx, &s, 8, 8, buf) == AES_ERR_INVALID_ARG);
    s.objects[2].shape = WORLD_RING;
    s.blur = INFINITY;
    CHECK(world_render(ctx, &s, 8, 8, buf) == AES_ERR_INVALID_ARG);
    s.blur = 0.0f;
    s.background = (world_background)-3;
    CHECK(world_render(ctx, &s, 8, 8, buf) == AES_ERR_INVALID_ARG);
    CHECK(strlen(world_last_error()) > 0);
    s.background = WORLD_BG_GRADIENT;   /* NaN colours and directions: drawn, no undefined conversions */
    s.bg_rgb[0][1] = NAN;
    s.bg_dir[0] = NAN;
    s.objects[0].rgb[2] = NAN;
    CHECK_WORLD(world_render(ctx, &s, 16, 16, buf));
    {
        int32_t votes[WORLD_NBINS];
        s.score = NAN;
        CHECK_WORLD(world_histogram(ctx, &s, 10, votes));
        CHECK(votes[0] == 10);
    }
    CHECK(world_render_many(ctx, &s, -1, 8, 8, buf) == AES_ERR_INVALID_ARG);
    CHECK_WORLD(world_render_many(ctx, &s, 0, 8, 8, buf));
    {
        world_params p;
        world_params_default(&p);
        p.max_clutter = 99;
        CHECK(world_sample(ctx, 1, 0, &p, &s) == AES_ERR_INVALID_ARG);
        p.max_clutter = 12;
        p.factor_correlation = 2.0f;
        CHECK(world_sample(ctx, 1, 0, &p, &s) == AES_ERR_INVALID_ARG);
        CHECK(strstr(world_last_error(), "factor_correlation") != NULL);
    }
    world_clear_error();
    CHECK(world_last_error()[0] == 0);
}

/* ---- queries from the gallery ------------------------------------------------------------ */
static void test_query_set(void) {
    enum { G = 2000, Q = 200 };
    static world_scene gallery[G];
    static world_query queries[Q];
    char text[WORLD_TEXT_MAX], other[WORLD_TEXT_MAX], cap[WORLD_TEXT_MAX + 2];
    int i, j, n = 0, templates[4] = {0, 0, 0, 0}, n2;
    world_query again[Q];
    for (i = 0; i < G; i++) CHECK_WORLD(world_sample(ctx, 3, i, NULL, &gallery[i]));
    CHECK_WORLD(world_query_set(ctx, 3, gallery, G, Q, queries, &n));
    CHECK(n == Q);
    CHECK_WORLD(world_query_set(ctx, 3, gallery, G, Q, again, &n2));
    CHECK(n2 == n && memcmp(again, queries, sizeof again) == 0);
    for (i = 0; i < n; i++) {
        int full = 0;
        CHECK(queries[i].template_id >= 0 && queries[i].template_id < 4);
        templates[queries[i].template_id & 3]++;
        CHECK_WORLD(world_query_text(ctx, &queries[i], text, sizeof text));
        for (j = 0; j < i; j++) {   /* distinct */
            CHECK_WORLD(world_query_text(ctx, &queries[j], other, sizeof other));
            CHECK(strcmp(text, other) != 0);
        }
        for (j = 0; j < G; j++) {
            int rel = world_relevance(&queries[i], &gallery[j]);
            full += rel == 2;
            /* captions and relevance agree: for "<count> <colour> <shape>" queries a
             * scene is fully relevant exactly when its size-free caption says so */
            if (queries[i].template_id == 0) {
                cap[0] = ' ';
                CHECK_WORLD(world_caption(ctx, &gallery[j], 1, cap + 1, sizeof cap - 1));
                CHECK_MSG((rel == 2) == has_word(cap + 1, text), "'%s' vs '%s': relevance %d", text, cap + 1, rel);
            }
            if (queries[i].template_id == 1 && rel == 2) {
                CHECK_WORLD(world_caption(ctx, &gallery[j], 0, cap, sizeof cap));
                CHECK_MSG(has_word(cap, text), "'%s' vs '%s'", text, cap);
            }
        }
        CHECK_MSG(full >= 1, "query '%s' has no relevant scene in its gallery", text);
    }
    for (i = 0; i < 4; i++) CHECK(templates[i] > 10);
    /* a tiny gallery yields fewer distinct queries than asked, without failing */
    CHECK_WORLD(world_query_set(ctx, 3, gallery, 1, 50, again, &n2));
    CHECK(n2 >= 1 && n2 < 50);
    CHECK(world_query_set(ctx, 3, NULL, 5, 5, again, &n2) == AES_ERR_INVALID_ARG);
}

/* ---- the command line tool ---------------------------------------------------------------- */
static long count_lines(const char *path, int *columns) {
    FILE *f = fopen(path, "rb");
    long lines = 0;
    int c, cols = 1;
    if (!f) return -1;
    *columns = -1;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\t') cols++;
        if (c == '\n') {
            if (*columns == -1) *columns = cols;
            else if (*columns != cols) *columns = -2;  /* ragged */
            cols = 1;
            lines++;
        }
    }
    fclose(f);
    return lines;
}

static void test_cli(void) {
    const char *cli = tl_cli();
    char dir[] = "/tmp/aes_test_world_XXXXXX", cmd[1024], path[600];
    int cols, rc;
    struct stat st;
    FILE *f;
    if (!cli) return;
    if (!mkdtemp(dir)) { tl_skip("no temporary directory"); return; }
    snprintf(cmd, sizeof cmd, "%s world --out %s/a --n 30 --queries 12 --seed 5 > /dev/null", cli, dir);
    rc = system(cmd);
    CHECK(rc == 0);
    snprintf(path, sizeof path, "%s/a/scenes.tsv", dir);
    CHECK(count_lines(path, &cols) == 31 && cols == 36);
    snprintf(path, sizeof path, "%s/a/queries.tsv", dir);
    CHECK(count_lines(path, &cols) == 13 && cols == 5);
    snprintf(path, sizeof path, "%s/a/qrels.tsv", dir);
    CHECK(count_lines(path, &cols) > 12 && cols == 3);
    snprintf(path, sizeof path, "%s/a/images/000029.ppm", dir);
    CHECK(stat(path, &st) == 0 && st.st_size == 13 + 64 * 64 * 3);
    f = fopen(path, "rb");
    if (f) {
        char head[16] = {0};
        CHECK(fread(head, 1, 13, f) == 13 && memcmp(head, "P6\n64 64\n255\n", 13) == 0);
        fclose(f);
    }
    /* the same command makes the same bytes; the in-process render agrees */
    snprintf(cmd, sizeof cmd, "%s world --out %s/b --n 30 --queries 12 --seed 5 > /dev/null && "
                              "cmp -s %s/a/scenes.tsv %s/b/scenes.tsv && cmp -s %s/a/qrels.tsv %s/b/qrels.tsv && "
                              "cmp -s %s/a/images/000017.ppm %s/b/images/000017.ppm",
             cli, dir, dir, dir, dir, dir, dir, dir);
    CHECK(system(cmd) == 0);
    {
        world_scene s;
        static uint8_t img[64 * 64 * 3], file[13 + 64 * 64 * 3];
        snprintf(path, sizeof path, "%s/a/images/000017.ppm", dir);
        f = fopen(path, "rb");
        CHECK(f != NULL);
        if (f) {
            CHECK(fread(file, 1, sizeof file, f) == sizeof file);
            fclose(f);
            CHECK_WORLD(world_sample(ctx, 5, 17, NULL, &s));
            CHECK_WORLD(world_render(ctx, &s, 64, 64, img));
            CHECK(memcmp(file + 13, img, sizeof img) == 0);
        }
    }
    snprintf(cmd, sizeof cmd, "%s world --n 5 > /dev/null 2>&1", cli);   /* no --out: usage error */
    CHECK(system(cmd) != 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
    TL_INIT(argc, argv);
    ctx = aes_ctx_create();
    RUN(test_determinism);
    RUN(test_golden_captions);
    RUN(test_golden_pixels);
    RUN(test_render_many_threads);
    RUN(test_score_distribution);
    RUN(test_histograms);
    RUN(test_relevance);
    RUN(test_captions);
    RUN(test_factor_directions);
    RUN(test_render_edges);
    RUN(test_query_set);
    RUN(test_cli);
    aes_ctx_free(ctx);
    return tl_report();
}
