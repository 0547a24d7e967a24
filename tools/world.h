/* world.h - the synthetic aesthetic world and the `aesalign eval` TSV format.
 *
 * A companion of aesalign.h in the same single-file style, shared by the
 * CLI (tools/cmd_world.c, tools/cmd_search.c), the tests and tools/demo.sh.
 * It is not part of the library: it uses only aesalign.h's public API plus
 * libc and libm.  In exactly one C file of a program:
 *
 *     #define WORLD_IMPLEMENTATION
 *     #include "world.h"
 *
 * and a plain #include "world.h" elsewhere; the library is compiled as usual
 * (AESALIGN_IMPLEMENTATION in one file).  This file includes "aesalign.h",
 * so the directory holding it must be on the include path (-I.).
 *
 * Names start with world_ / WORLD_; names with a double underscore
 * (world__x) are internal.
 *
 * Errors: every call that can fail returns an aes_status, as the library's
 * do, and leaves a message in world_last_error() (one buffer per thread
 * with gcc and clang, else one per process), not in aes_last_error(ctx),
 * which only the library writes.  When a library call fails inside a world
 * call, world_last_error() repeats the library's message.  The aes_ctx
 * argument is what the world's allocations and limits go through.
 *
 *  1. the world: scenes, renders, scores, vote histograms, captions, queries
 *  2. `aesalign eval`: retrieval metrics from a TSV of records
 */
#ifndef WORLD_H
#define WORLD_H

#include "aesalign.h"
#include <stddef.h>
#include <stdint.h>

#ifndef WORLD_API
#ifdef __cplusplus
#define WORLD_API extern "C"
#else
#define WORLD_API extern
#endif
#endif

/* The message of the last world_ call that failed on this thread ("" when
 * none), and a way to forget it. */
WORLD_API const char *world_last_error(void);
WORLD_API void        world_clear_error(void);

/* ============================================================================
 *  1. The synthetic aesthetic world (offline demo data)
 * ========================================================================= */
/* A synthetic aesthetic world: small scenes whose meaning and whose beauty
 * are both known exactly.
 *
 * ============================================================================
 *  WHY IT EXISTS
 * ============================================================================
 *  Aesthetics-aware retrieval has two halves that real data never labels
 *  together: "is this image about the query?" (semantics) and "is it a good
 *  picture?" (aesthetics).  This generator makes both exact.  A scene is a
 *  short description -- "two small red circles above a blue square on a
 *  striped background" -- plus a handful of photographic factors that do not
 *  change what the scene shows but change how good it looks: composition,
 *  colour harmony, contrast, clutter, noise, blur and cropping.  From the
 *  description we get
 *
 *     - the rendered image (64x64 RGB by default, anti-aliased),
 *     - captions (several phrasings), for training a tiny CLIP,
 *     - a ground-truth aesthetic score on 1..10 with a documented formula,
 *     - a 10-bin vote histogram like AVA's (simulated raters),
 *     - queries with exact graded relevance, for recall and nDCG.
 *
 *  Everything is deterministic: scene `index` of world `seed` is always the
 *  same scene, whatever else was generated before it (each scene draws from
 *  its own counter-based random stream), so a gallery of 2,000 scenes is the
 *  prefix of a gallery of 20,000.
 *
 * ============================================================================
 *  THE WORLD
 * ============================================================================
 *  Semantics (what captions and queries talk about):
 *     shapes       circle square triangle star ring cross
 *     colours      red orange yellow green blue purple white black
 *     sizes        small medium large       (radius 0.075 / 0.11 / 0.155 of
 *                                            the image width)
 *     counts       one to three objects of the same kind form a group
 *     groups       one group, or two groups and a relation between them:
 *                  above / below / to the left of / to the right of
 *     background   plain gradient striped checkered textured
 *  Two groups never share both colour and shape, so "the red circles" of a
 *  caption are exactly the red circles in the picture, and counts are exact.
 *
 *  Aesthetics (what the score measures; none of it changes the semantics):
 *     composition  where the subject sits: on a rule-of-thirds power point,
 *                  centred, anywhere, or cramped against the frame
 *     crop         a pan of the frame that cuts objects at the edge
 *                  (every object keeps its centre 0.4 radii inside the
 *                  frame, so most of it stays visible and counts stay true)
 *     harmony      the background hue relative to the subject (analogous,
 *                  complementary, triadic, neutral grey, clashing) and the
 *                  colour of the second group
 *     contrast     luminance difference between subject and background, and
 *                  a global contrast change (washed out or harsh)
 *     clutter      thin distractor strokes drawn under the objects; they are
 *                  not shapes, so they never change what a query matches
 *     noise, blur  additive Gaussian pixel noise, Gaussian blur
 *     depth        soft drop shadows under the objects
 *
 * ============================================================================
 *  THE SCORE (world_score; all terms computed from the description)
 * ============================================================================
 *     raw = 5.5                                      base
 *         + 1.3 T + 0.7 C (1 - T) - 0.8 E            composition
 *         - 6 cut                                    crop
 *         + 1.2 H                                    colour harmony
 *         + f(dL * c) - 2.5 max(0, c - 1.2)          contrast
 *         - 0.25 n_clutter                           clutter
 *         - 0.06 sigma_noise                         noise (8-bit levels)
 *         - 0.9 max(0, 64 blur - 0.3)                blur (sigma in pixels of
 *                                                    a 64 px image)
 *         + 0.8 shadow                               depth (drop shadows)
 *         + b(background)                            plain 0, gradient +0.2,
 *                                                    striped 0, checkered -0.2,
 *                                                    textured -0.1
 *     score = 5.5 + 4.5 t / sqrt(1 + t^2),  t = (raw - 5.5) / 4.5
 *  where
 *     T   = max(0, 1 - d3 / 0.1), d3 the distance from the subject group's
 *           centroid to the nearest rule-of-thirds power point (1/3 or 2/3
 *           on each axis), in image widths;
 *     C   = max(0, 1 - dc / 0.1), dc the distance from the centre of the
 *           bounding box of all objects to the image centre;
 *     E   = clamp(1 - margin / 0.04, 0, 1), margin the smallest distance
 *           from an object's extent box (centre +- 1.15 r) to the frame:
 *           objects touching the frame edge look cramped ("tangents");
 *     cut = the fraction of the objects' extent-box area outside the frame;
 *     H   = mean over colour pairs (subject-background, second group-
 *           background, subject-second group) of h(hue difference), h a
 *           piecewise-linear harmony curve in the spirit of the hue
 *           templates of Matsuda and Cohen-Or et al. ("Color Harmonization",
 *           SIGGRAPH 2006): 1 for analogous (~25 deg) and complementary
 *           (165-180 deg), 0.3 for a triad (~120 deg), -1 for the clashing
 *           70-100 deg band; a pair with an achromatic colour (HSV
 *           saturation < 0.2: white, black, greys) scores 0;
 *     dL  = |luma(subject colour) - luma(mean background colour)|, Rec. 601
 *           luma; c the global contrast factor (1 = unchanged); f piecewise
 *           linear through (0,-1.8) (0.08,-1.4) (0.22,-0.3) (0.3,0)
 *           (0.42,0.15) (0.5,0.7) (0.6,0.8), flat after.
 *  The final squash keeps scores inside (1, 10), is the identity to first
 *  order around 5.5 and compresses the extremes the way rating scales do
 *  (an 8 is much harder to get than a 7; a scene perfect in every factor
 *  scores 8.6).
 *
 *  Why the distribution is long-tailed: each scene has a latent
 *  "photographer skill" z ~ N(0, skill_sd), and every factor's quality is
 *  q_f = rho z + sqrt(1 - rho^2) e_f with its own noise e_f (rho = 0.5).
 *  Each factor is unremarkable for most q and goes good or bad only in its
 *  tails (good: thirds 12%, harmonious colours 14%, strong contrast 12%,
 *  shadows 18%; bad: cramped 10%, clashing 12%, low contrast 10%, washed out
 *  or harsh 6%, clutter 22%, noise 16%, blur 14%, crop 7%), and the mid
 *  states contribute about 0, so most scenes pile up around 5-6 while the
 *  shared skill makes all-good and all-bad scenes more frequent than
 *  independent factors would: few very good, few very bad, as in AVA (mean
 *  5.4, most mass in the middle bins).
 *  Normal draws are Irwin-Hall sums of four uniforms (bounded at +-3.46
 *  sigma).  Sampling uses only + - * / and sqrt, one random draw per
 *  statement, so scene descriptions are the same on every IEEE platform.
 *
 *  Vote histograms (AVA gives 10 counts per image): rater k has a fixed
 *  leniency b_k ~ 0.4 N(0,1) shared across the world's scenes; each vote is
 *  round(score + b_k + s_img N(0,1)) clamped to 1..10, where s_img in
 *  [1.0, 1.6) is the scene's own ambiguity.  The vote mean tracks the score
 *  (clamping at 1 and 10 pulls it inward near the ends).
 *
 *  Relevance (world_relevance): a query names a count, a colour and a
 *  shape, and optionally a size, a background, or a relation to a second
 *  counted colour+shape.  Grade 2: every attribute matches, counts exactly
 *  (a scene with two red circles is not "a red circle"); grade 1: the scene
 *  has an object of the query's first colour and shape but something else
 *  differs; grade 0: no such object.  Binary relevance is grade == 2.
 */

typedef enum world_shape {
    WORLD_CIRCLE = 0, WORLD_SQUARE, WORLD_TRIANGLE, WORLD_STAR, WORLD_RING,
    WORLD_CROSS, WORLD_NSHAPES
} world_shape;

typedef enum world_colour {
    WORLD_RED = 0, WORLD_ORANGE, WORLD_YELLOW, WORLD_GREEN, WORLD_BLUE,
    WORLD_PURPLE, WORLD_WHITE, WORLD_BLACK, WORLD_NCOLOURS
} world_colour;

typedef enum world_size {
    WORLD_SMALL = 0, WORLD_MEDIUM, WORLD_LARGE, WORLD_NSIZES
} world_size;

typedef enum world_background {
    WORLD_BG_PLAIN = 0, WORLD_BG_GRADIENT, WORLD_BG_STRIPED, WORLD_BG_CHECKERED,
    WORLD_BG_TEXTURED, WORLD_NBACKGROUNDS
} world_background;

/* "groups[0] <relation> groups[1]" */
typedef enum world_relation {
    WORLD_REL_NONE = 0, WORLD_ABOVE, WORLD_BELOW, WORLD_LEFT_OF, WORLD_RIGHT_OF,
    WORLD_NRELATIONS
} world_relation;

/* How the sampler placed the subject (the score measures the result). */
typedef enum world_composition {
    WORLD_THIRDS = 0, WORLD_CENTRED, WORLD_LOOSE, WORLD_CRAMPED, WORLD_NCOMPOSITIONS
} world_composition;

/* How the sampler chose the background hue (the score measures the result). */
typedef enum world_harmony {
    WORLD_COMPLEMENTARY = 0, WORLD_ANALOGOUS, WORLD_TRIADIC, WORLD_NEUTRAL,
    WORLD_CLASHING, WORLD_NHARMONIES
} world_harmony;

#define WORLD_MAX_GROUP      6    /* objects in one group (the sampler uses 1..3) */
#define WORLD_MAX_OBJECTS   12
#define WORLD_MAX_CLUTTER   16
#define WORLD_NVARIANTS      4    /* caption phrasings per scene */
#define WORLD_TEXT_MAX     256    /* a buffer this long always holds a caption or query */
#define WORLD_NBINS         10    /* vote histogram bins: scores 1..10 */

/* A counted kind of object: "two small red circles". */
typedef struct world_group {
    int count;                        /* 1..WORLD_MAX_GROUP */
    world_shape shape;
    world_colour colour;
    world_size size;
} world_group;

/* One drawn object.  Coordinates are fractions of the image: x across the
 * width, y down the height, (0,0) the top-left corner; radius in image widths. */
typedef struct world_object {
    world_shape shape;
    world_colour colour;
    int group;                        /* index into world_scene.groups */
    float x, y, radius, angle;        /* centre, nominal radius, rotation (radians) */
    float rgb[3];                     /* the palette colour with a little jitter, 0..1 */
} world_object;

/* A distractor stroke (clutter): a line segment with round caps. */
typedef struct world_stroke {
    float x0, y0, x1, y1, width;      /* image widths */
    float rgb[3];
} world_stroke;

typedef struct world_scene {
    uint64_t seed;                    /* world seed and scene index: also key the */
    int64_t index;                    /* render noise, texture and rater streams  */
    /* semantics */
    world_background background;
    int ngroups;                      /* 1 or 2 */
    world_group groups[2];
    world_relation relation;          /* NONE when ngroups == 1 */
    /* geometry and colour */
    int nobjects;
    world_object objects[WORLD_MAX_OBJECTS];
    float bg_rgb[2][3];               /* the two tones of the background pattern */
    float bg_dir[2];                  /* gradient / stripe direction (unit vector) */
    float bg_period;                  /* stripe period / checker period, image widths */
    int nclutter;
    world_stroke clutter[WORLD_MAX_CLUTTER];
    /* photographic factors */
    world_composition composition;
    world_harmony harmony;
    float crop;                       /* requested frame pan, image widths (0 = none) */
    float contrast;                   /* global contrast factor around mid grey, 1 = none */
    float noise;                      /* sigma of additive noise, 8-bit levels */
    float blur;                       /* Gaussian blur sigma, image widths */
    float shadow;                     /* soft drop shadows under the objects, 0..1 (depth) */
    float rater_sd;                   /* spread of the votes for this scene */
    float skill;                      /* the latent quality the factors were drawn from */
    float score;                      /* world_score() at sampling time */
} world_scene;

/* The terms of the score formula (see THE SCORE above). */
typedef struct world_score_parts {
    float composition, crop, harmony, contrast, clutter, noise, blur, shadow, background;
    float raw, score;
    float thirds, centred, edge, cut, hue_harmony, luma_diff; /* the measurements */
} world_score_parts;

typedef struct world_params {
    float skill_sd;                   /* spread of the latent skill (1): larger = flatter scores */
    float factor_correlation;         /* rho between factor qualities (0.5) */
    float p_two_groups;               /* probability of a second group + relation (0.55) */
    int max_clutter;                  /* <= WORLD_MAX_CLUTTER (12) */
} world_params;

/* A query: "<count> [size] <colour> <shape> [relation <count2> <colour2> <shape2>]
 * [on a <background> background]". */
typedef struct world_query {
    int count;                        /* exact count wanted, 0 = any */
    int size;                         /* world_size, or -1 = any */
    world_colour colour;
    world_shape shape;
    int background;                   /* world_background, or -1 = any */
    world_relation relation;          /* NONE, or "first <relation> second" */
    int count2;                       /* 0 = any */
    world_colour colour2;
    world_shape shape2;
    int template_id;                  /* which query template made it (0..3) */
} world_query;

WORLD_API void world_params_default(world_params *p);

/* Scene `index` of world `seed` (params NULL = defaults).  Fills every field,
 * including score. */
WORLD_API aes_status world_sample(aes_ctx *ctx, uint64_t seed, int64_t index, const world_params *params,
                                  world_scene *out);

/* Renders into rgb: width*height*3 bytes, interleaved RGB, rows top to bottom
 * (the pixel layout of the library's 8-bit images).  Any size >= 1x1; a
 * non-square size stretches the scene. */
WORLD_API aes_status world_render(aes_ctx *ctx, const world_scene *scene, int width, int height,
                                  uint8_t *rgb);

/* The same into an aes_image it allocates (3 channels; aes_image_free it).
 * *out is overwritten without being freed. */
WORLD_API aes_status world_render_image(aes_ctx *ctx, const world_scene *scene, int width, int height,
                                        aes_image *out);

/* Renders n scenes into pixels (n * width * height * 3 bytes, one image
 * after another), on the calling thread: the same bytes as world_render. */
WORLD_API aes_status world_render_many(aes_ctx *ctx, const world_scene *scenes, int n, int width,
                                       int height, uint8_t *pixels);

/* The ground-truth score in (1, 10) from the description; parts may be NULL.
 * Call again after editing a scene (scene->score is the value at sampling). */
WORLD_API float world_score(const world_scene *scene, world_score_parts *parts);

/* Vote counts of nraters simulated raters for bins 1..10 (counts[0] is the
 * number of 1s).  Deterministic from (seed, index). */
WORLD_API aes_status world_histogram(aes_ctx *ctx, const world_scene *scene, int nraters,
                                     int32_t counts[WORLD_NBINS]);

/* Caption phrasing `variant` in [0, WORLD_NVARIANTS):
 *   0  canonical, with sizes:     "two small red circles above a large blue square on a striped background"
 *   1  without sizes:             "two red circles above a blue square on a striped background"
 *   2  background first, relation turned around:
 *                                 "a striped background with a large blue square below two small red circles"
 *   3  with what a viewer would say about its quality:
 *                                 "a blurry and noisy photo of two red circles above a blue square on a ..."
 *                                 "a beautiful photo of a red circle on a plain background, balanced
 *                                  composition, vivid colors"
 * Fails with AES_ERR_LIMIT (and a truncated, terminated string) when cap is too small;
 * WORLD_TEXT_MAX always suffices. */
WORLD_API aes_status world_caption(aes_ctx *ctx, const world_scene *scene, int variant, char *buf,
                                   size_t cap);

/* Up to nwanted distinct queries built from attribute combinations of gallery
 * scenes (so each has at least one grade-2 scene in the gallery); *nout gets
 * how many were made (fewer when the gallery is too small to give distinct ones). */
WORLD_API aes_status world_query_set(aes_ctx *ctx, uint64_t seed, const world_scene *gallery, int ngallery,
                                     int nwanted, world_query *out, int *nout);
WORLD_API aes_status world_query_text(aes_ctx *ctx, const world_query *q, char *buf, size_t cap);

/* 2: all attributes match, 1: first colour+shape present, 0: not. */
WORLD_API int world_relevance(const world_query *q, const world_scene *scene);

/* Names used in captions ("red", "circle", "striped", "to the left of", ...);
 * "?" when out of range. */
WORLD_API const char *world_shape_name(int shape);
WORLD_API const char *world_colour_name(int colour);
WORLD_API const char *world_size_name(int size);
WORLD_API const char *world_background_name(int background);
WORLD_API const char *world_relation_name(int relation);
WORLD_API const char *world_composition_name(int composition);
WORLD_API const char *world_harmony_name(int harmony);

/* ============================================================================
 *  2. `aesalign eval`: retrieval metrics from a TSV of records
 * ============================================================================
 *  The metrics themselves are the library's (aes_ndcg_at_k,
 *  aes_hpir_agreement: section 8 R6 of aesalign.h). */

/* `aesalign eval` input: a TSV file of records, one per line, fields
 * separated by single tabs; '#' lines and blank lines are skipped.
 *
 *   result  QUERY  RANK  ITEM  [SCORE  [AESTHETIC]]   a system's ranked list
 *   rel     QUERY  ITEM  GRADE                        graded relevance (>0 relevant)
 *   aesthetic ITEM  VALUE                             ground-truth aesthetic
 *   score   QUERY  ITEM  VALUE                        system score of an item
 *   pair    QUERY  ITEMS_A  ITEMS_B  A|B  [CONFIDENCE]
 *                                    items comma-separated; A|B = preferred
 *
 * RANK is 1-based.  Per query with results: recall@K, precision@K (the
 * fraction of the K places holding a relevant item: aes_precision_at_k) and
 * nDCG@K (queries with a positive grade), mean aesthetic of the top K (the `aesthetic`
 * value of an item, else the result's AESTHETIC column).  A pair's group
 * score is the mean system score of its items (`score` lines, else the
 * result's SCORE); pairs with an unscored item are counted as skipped. */
typedef struct world_eval_report {
    int    k;
    int    nqueries;                      /* queries with results              */
    int    nrecall;   double recall;      /* means over the queries counted    */
    int    nndcg;     double ndcg;
    int    naesthetic; double mean_aesthetic;
    int    npairs, npairs_skipped;
    double agreement, weighted_agreement;
    double precision;                     /* over the nrecall queries */
} world_eval_report;

/* Reads text (len bytes, need not be NUL-terminated) and fills *out for K =
 * k >= 1; name labels the messages ("name:line: ...").  AES_ERR_FORMAT on
 * a malformed record. */
WORLD_API aes_status world_eval_tsv(aes_ctx *ctx, const char *text, size_t len,
                                    const char *name, int k, world_eval_report *out);

#endif /* WORLD_H */

/* ############################################################################
 *  IMPLEMENTATION
 * ######################################################################### */
#ifdef WORLD_IMPLEMENTATION
#ifndef WORLD_IMPLEMENTATION_DONE
#define WORLD_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define WORLD__MIN(a, b) ((a) < (b) ? (a) : (b))
#define WORLD__MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- errors ------------------------------------------------------------------ */
#ifndef WORLD_THREAD_LOCAL
#if defined(__GNUC__)
#define WORLD_THREAD_LOCAL __thread
#else
#define WORLD_THREAD_LOCAL
#endif
#endif

static WORLD_THREAD_LOCAL char world__error[1024];

WORLD_API const char *world_last_error(void) { return world__error; }
WORLD_API void world_clear_error(void) { world__error[0] = 0; }

/* Records a failure and returns st:  return world__fail(AES_ERR_LIMIT, "...", ...); */
static aes_status world__fail(aes_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static aes_status world__fail(aes_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(world__error, sizeof world__error, fmt, ap);
    va_end(ap);
    return st;
}

/* A library call made by `what` failed: its status and message. */
static aes_status world__lib_fail(aes_ctx *ctx, const char *what) {
    aes_status st = aes_last_status(ctx);
    world__fail(st != AES_OK ? st : AES_ERR_NOMEM, "%s: %s", what, aes_last_error(ctx));
    return st != AES_OK ? st : AES_ERR_NOMEM;
}

/* ============================================================================
 *  1. The synthetic aesthetic world
 * ========================================================================= */
/* ---- names ------------------------------------------------------------------- */
static const char *const world__shape_names[] = {"circle", "square", "triangle", "star", "ring", "cross"};
static const char *const world__shape_plurals[] = {"circles", "squares", "triangles", "stars", "rings",
                                                   "crosses"};
static const char *const world__colour_names[] = {"red",    "orange", "yellow", "green",
                                                  "blue",   "purple", "white",  "black"};
static const char *const world__size_names[] = {"small", "medium", "large"};
static const char *const world__bg_names[] = {"plain", "gradient", "striped", "checkered", "textured"};
static const char *const world__rel_names[] = {"", "above", "below", "to the left of", "to the right of"};
static const char *const world__comp_names[] = {"thirds", "centred", "loose", "cramped"};
static const char *const world__harmony_names[] = {"complementary", "analogous", "triadic", "neutral",
                                                   "clashing"};
static const char *const world__count_words[] = {"no", "a", "two", "three", "four", "five", "six"};

#define WORLD__NAME(table, i) \
    ((i) >= 0 && (size_t)(i) < sizeof(table) / sizeof *(table) ? (table)[i] : "?")
WORLD_API const char *world_shape_name(int i) { return WORLD__NAME(world__shape_names, i); }
WORLD_API const char *world_colour_name(int i) { return WORLD__NAME(world__colour_names, i); }
WORLD_API const char *world_size_name(int i) { return WORLD__NAME(world__size_names, i); }
WORLD_API const char *world_background_name(int i) { return WORLD__NAME(world__bg_names, i); }
WORLD_API const char *world_relation_name(int i) {
    return i == WORLD_REL_NONE ? "none" : WORLD__NAME(world__rel_names, i);
}
WORLD_API const char *world_composition_name(int i) { return WORLD__NAME(world__comp_names, i); }
WORLD_API const char *world_harmony_name(int i) { return WORLD__NAME(world__harmony_names, i); }

/* v in [0, n): enum fields are checked through int, because a compiler with
 * short unsigned enums (arm-none-eabi) would call `e < 0` always false. */
static int world__in(int v, int n) { return v >= 0 && v < n; }

/* ---- the palette ----------------------------------------------------------------
 * Saturated, well separated colours so a 64x64 render leaves no doubt which
 * one an object has.  Hues (degrees): red 0, orange 32, yellow 51, green 129,
 * blue 224, purple 278; white and black are achromatic. */
static const float world__palette[WORLD_NCOLOURS][3] = {
    {0.86f, 0.16f, 0.16f}, {0.96f, 0.55f, 0.08f}, {0.96f, 0.84f, 0.12f}, {0.16f, 0.67f, 0.24f},
    {0.16f, 0.35f, 0.86f}, {0.55f, 0.20f, 0.75f}, {0.96f, 0.96f, 0.96f}, {0.08f, 0.08f, 0.08f}};

/* Nominal radius of each size class, in image widths. */
static const float world__size_radius[WORLD_NSIZES] = {0.075f, 0.11f, 0.155f};
/* Every shape fits in a box of +- WORLD__EXTENT * radius around its centre. */
#define WORLD__EXTENT 1.15f

/* Rec. 601 luma of gamma-encoded RGB: what "brightness" means for contrast. */
static float world__luma(const float *rgb) { return 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2]; }

/* RGB -> hue (degrees, [0, 360)) and HSV saturation. */
static void world__hue_sat(const float *rgb, float *hue, float *sat) {
    float r = rgb[0], g = rgb[1], b = rgb[2];
    float mx = WORLD__MAX(r, WORLD__MAX(g, b)), mn = WORLD__MIN(r, WORLD__MIN(g, b)), d = mx - mn, h;
    *sat = mx > 0.0f ? d / mx : 0.0f;
    if (d <= 0.0f) { *hue = 0.0f; return; }
    if (mx == r) h = 60.0f * ((g - b) / d);
    else if (mx == g) h = 60.0f * (2.0f + (b - r) / d);
    else h = 60.0f * (4.0f + (r - g) / d);
    if (h < 0.0f) h += 360.0f;
    *hue = h;
}

static float world__wrap_hue(float h) {
    while (h < 0.0f) h += 360.0f;
    while (h >= 360.0f) h -= 360.0f;
    return h;
}

/* HSV -> RGB, h in degrees. */
static void world__hsv(float h, float s, float v, float *rgb) {
    float hh = world__wrap_hue(h) / 60.0f, f, p, q, t;
    int sector = (int)hh;
    if (sector > 5) sector = 5;
    f = hh - (float)sector;
    p = v * (1.0f - s);
    q = v * (1.0f - s * f);
    t = v * (1.0f - s * (1.0f - f));
    switch (sector) {
    case 0: rgb[0] = v; rgb[1] = t; rgb[2] = p; break;
    case 1: rgb[0] = q; rgb[1] = v; rgb[2] = p; break;
    case 2: rgb[0] = p; rgb[1] = v; rgb[2] = t; break;
    case 3: rgb[0] = p; rgb[1] = q; rgb[2] = v; break;
    case 4: rgb[0] = t; rgb[1] = p; rgb[2] = v; break;
    default: rgb[0] = v; rgb[1] = p; rgb[2] = q; break;
    }
}

/* The colour of hue h, saturation at most s, with luma exactly L (clamped to
 * [0.02, 0.98]).  HSV colours scale with v, so luma(h, s, v) = v luma(h, s, 1):
 * darker targets take v = L / luma(h, s, 1).  Brighter targets than the
 * saturated colour allows move toward white at v = 1, where
 * rgb = 1 - s' (1 - pure hue) and luma = 1 - s' (1 - luma(pure hue)). */
static void world__colour_with_luma(float h, float s, float L, float *rgb) {
    float full[3], pure[3], Lfull, Lpure;
    L = L < 0.02f ? 0.02f : L > 0.98f ? 0.98f : L;
    world__hsv(h, s, 1.0f, full);
    Lfull = world__luma(full);
    if (L <= Lfull) {
        float v = L / Lfull;
        rgb[0] = full[0] * v; rgb[1] = full[1] * v; rgb[2] = full[2] * v;
        return;
    }
    world__hsv(h, 1.0f, 1.0f, pure);
    Lpure = world__luma(pure);
    {
        float s2 = (1.0f - L) / (1.0f - Lpure);
        int c;
        for (c = 0; c < 3; c++) rgb[c] = 1.0f - s2 * (1.0f - pure[c]);
    }
}

/* Harmony of two hues d degrees apart (0..180): a piecewise-linear curve in
 * the spirit of the harmonic hue templates (Matsuda 1995; Cohen-Or et al.,
 * "Color Harmonization", SIGGRAPH 2006): analogous and complementary pairs
 * are pleasing, a triad acceptable, the 60-100 degree band clashes. */
static float world__hue_harmony(float d) {
    static const float xs[] = {0, 25, 40, 55, 70, 100, 115, 125, 145, 165, 180};
    static const float ys[] = {0.6f, 1.0f, 0.5f, -0.6f, -1.0f, -1.0f, 0.0f, 0.3f, 0.5f, 1.0f, 1.0f};
    int i;
    if (d < 0.0f) d = -d;
    if (d > 180.0f) d = 360.0f - d;
    for (i = 1; i < (int)(sizeof xs / sizeof *xs); i++)
        if (d <= xs[i]) return ys[i - 1] + (ys[i] - ys[i - 1]) * (d - xs[i - 1]) / (xs[i] - xs[i - 1]);
    return ys[10];
}

/* Harmony of two colours: hue harmony when both are chromatic; a pair with
 * an achromatic colour (white, black, grey) is safe but unremarkable. */
#define WORLD__CHROMATIC 0.2f
static float world__pair_harmony(const float *a, const float *b) {
    float ha, sa, hb, sb;
    world__hue_sat(a, &ha, &sa);
    world__hue_sat(b, &hb, &sb);
    if (sa < WORLD__CHROMATIC || sb < WORLD__CHROMATIC) return 0.0f;
    return world__hue_harmony(ha - hb);
}

/* ---- counter-based random numbers ----------------------------------------------
 * splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014).  Each (seed, index, stream) gets its own
 * sequence, so scene i never depends on scenes before it, and a render
 * stream (noise, texture) never shifts the layout stream. */
enum {
    WORLD__STREAM_SCENE = 1, WORLD__STREAM_NOISE, WORLD__STREAM_TEXTURE, WORLD__STREAM_VOTES,
    WORLD__STREAM_RATERS, WORLD__STREAM_QUERIES
};

static uint64_t world__mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t world__key(uint64_t seed, int64_t index, uint64_t stream) {
    uint64_t k = world__mix(seed + 0x9E3779B97F4A7C15ull * (stream + 1));
    return world__mix(k ^ (world__mix((uint64_t)index + 0xD1B54A32D192ED03ull)));
}

typedef struct world__rng { uint64_t state; } world__rng;

static uint64_t world__next(world__rng *r) {
    r->state += 0x9E3779B97F4A7C15ull;
    return world__mix(r->state);
}

static float world__unit(uint64_t bits) { return (float)(bits >> 40) * (1.0f / 16777216.0f); } /* [0,1) */
static float world__uniform(world__rng *r) { return world__unit(world__next(r)); }
static float world__range(world__rng *r, float a, float b) { return a + (b - a) * world__uniform(r); }
static int world__int(world__rng *r, int n) {
    int i = (int)(world__uniform(r) * (float)n);
    return i < n ? i : n - 1;
}
static float world__sign(world__rng *r) { return (world__next(r) >> 63) ? -1.0f : 1.0f; }

/* An approximately standard normal number from 64 random bits: the sum of
 * four 16-bit uniforms (Irwin-Hall, variance 4/12) rescaled to variance 1. */
static float world__normal_bits(uint64_t x) {
    float s = 0.0f;
    int k;
    for (k = 0; k < 4; k++) s += ((float)((x >> (16 * k)) & 0xffffu) + 0.5f) * (1.0f / 65536.0f);
    return (s - 2.0f) * 1.7320508f;
}
static float world__normal(world__rng *r) { return world__normal_bits(world__next(r)); }

/* Unit directions at multiples of 22.5 degrees (no libm in sampling). */
static const float world__dirs[16][2] = {
    {1.00000f, 0.00000f},  {0.92388f, 0.38268f},  {0.70711f, 0.70711f},  {0.38268f, 0.92388f},
    {0.00000f, 1.00000f},  {-0.38268f, 0.92388f}, {-0.70711f, 0.70711f}, {-0.92388f, 0.38268f},
    {-1.00000f, 0.00000f}, {-0.92388f, -0.38268f}, {-0.70711f, -0.70711f}, {-0.38268f, -0.92388f},
    {0.00000f, -1.00000f}, {0.38268f, -0.92388f}, {0.70711f, -0.70711f}, {0.92388f, -0.38268f}};

/* ---- sampling a scene --------------------------------------------------------- */
WORLD_API void world_params_default(world_params *p) {
    if (!p) return;
    p->skill_sd = 1.0f;
    p->factor_correlation = 0.5f;
    p->p_two_groups = 0.55f;
    p->max_clutter = 12;
}

static float world__clampf(float x, float lo, float hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Picks the second group's colour: a harmonious partner of the subject for
 * harmonious scenes, a clashing one for clashing scenes, any otherwise. */
static world_colour world__partner_colour(world__rng *r, world_colour a, world_harmony hm) {
    int cand[WORLD_NCOLOURS], n = 0, c;
    for (c = 0; c < WORLD_NCOLOURS; c++) {
        float h = world__pair_harmony(world__palette[a], world__palette[c]);
        int ok = 1;
        if (hm == WORLD_COMPLEMENTARY || hm == WORLD_ANALOGOUS) ok = h >= 0.5f;
        else if (hm == WORLD_CLASHING) ok = h <= -0.3f;
        if (ok) cand[n++] = c;
    }
    if (n == 0) return (world_colour)world__int(r, WORLD_NCOLOURS);
    return (world_colour)cand[world__int(r, n)];
}

/* Background hue and saturation for a harmony scheme relative to hue h0. */
static void world__bg_hue(world__rng *r, world_harmony hm, float h0, float *hue, float *sat) {
    /* (one random draw per statement: C leaves the order of operands unspecified) */
    float side = world__sign(r);
    switch (hm) {
    case WORLD_COMPLEMENTARY:
        *hue = h0 + 180.0f + world__range(r, -12.0f, 12.0f);
        *sat = world__range(r, 0.35f, 0.6f);
        break;
    case WORLD_ANALOGOUS:
        *hue = h0 + side * world__range(r, 15.0f, 30.0f);
        *sat = world__range(r, 0.3f, 0.55f);
        break;
    case WORLD_TRIADIC:
        *hue = h0 + side * world__range(r, 112.0f, 128.0f);
        *sat = world__range(r, 0.3f, 0.55f);
        break;
    case WORLD_CLASHING:
        *hue = h0 + side * world__range(r, 65.0f, 100.0f);
        *sat = world__range(r, 0.7f, 0.95f);
        break;
    default: /* neutral: a grey with a hint of colour */
        *hue = world__range(r, 0.0f, 360.0f);
        *sat = world__range(r, 0.0f, 0.1f);
        break;
    }
    *hue = world__wrap_hue(*hue);
}

/* Lays out the objects of the groups and places the block according to the
 * composition, then pans the frame by the crop.  Groups are rows of objects
 * (columns when the relation is left/right, so the block stays compact). */
static void world__layout(world_scene *s, world__rng *r) {
    float gx[2] = {0, 0}, gy[2] = {0, 0}, hw[2] = {0, 0}, hh[2] = {0, 0};
    float minx, maxx, miny, maxy, bw, bh, tx = 0.5f, ty = 0.5f, margin = 0.03f;
    int g, k, vertical = (s->relation == WORLD_LEFT_OF || s->relation == WORLD_RIGHT_OF);

    /* half-extents of each group (a row, or a column for left/right), and a
     * conservative half-extent of the two-group block; shrink sizes until
     * the block fits in the frame with margins */
    for (;;) {
        float gap = 0.06f;
        for (g = 0; g < s->ngroups; g++) {
            float rad = world__size_radius[s->groups[g].size], along;
            along = (float)(s->groups[g].count - 1) * 2.5f * rad * 0.5f + WORLD__EXTENT * rad;
            hw[g] = vertical ? WORLD__EXTENT * rad : along;
            hh[g] = vertical ? along : WORLD__EXTENT * rad;
        }
        bw = s->ngroups == 2 && vertical ? hw[0] + hw[1] + gap : WORLD__MAX(hw[0], hw[1]);
        bh = s->ngroups == 2 && !vertical ? hh[0] + hh[1] + gap : WORLD__MAX(hh[0], hh[1]);
        if (bw <= 0.47f - margin && bh <= 0.47f - margin) break;
        g = (s->ngroups == 2 && s->groups[1].size > s->groups[0].size) ? 1 : 0;
        if (s->groups[g].size == WORLD_SMALL) g = 1 - g;
        if (s->groups[g].size == WORLD_SMALL) break; /* cannot happen with <= 3 per group */
        s->groups[g].size = (world_size)(s->groups[g].size - 1);
    }

    /* relative group centres: group 0 at the origin */
    if (s->ngroups == 2) {
        float gap = world__range(r, 0.05f, 0.1f);
        float jitter = 0.3f * world__range(r, -1.0f, 1.0f);
        switch (s->relation) {
        case WORLD_ABOVE: gx[1] = jitter * WORLD__MIN(hw[0], hw[1]); gy[1] = hh[0] + gap + hh[1]; break;
        case WORLD_BELOW: gx[1] = jitter * WORLD__MIN(hw[0], hw[1]); gy[1] = -(hh[0] + gap + hh[1]); break;
        case WORLD_LEFT_OF: gx[1] = hw[0] + gap + hw[1]; gy[1] = jitter * WORLD__MIN(hh[0], hh[1]); break;
        default: gx[1] = -(hw[0] + gap + hw[1]); gy[1] = jitter * WORLD__MIN(hh[0], hh[1]); break;
        }
    }
    minx = -hw[0]; maxx = hw[0]; miny = -hh[0]; maxy = hh[0];
    if (s->ngroups == 2) {
        minx = WORLD__MIN(minx, gx[1] - hw[1]); maxx = WORLD__MAX(maxx, gx[1] + hw[1]);
        miny = WORLD__MIN(miny, gy[1] - hh[1]); maxy = WORLD__MAX(maxy, gy[1] + hh[1]);
    }
    bw = 0.5f * (maxx - minx);
    bh = 0.5f * (maxy - miny);

    /* where group 0's centre goes: (tx, ty) */
    switch (s->composition) {
    case WORLD_THIRDS: {
        /* the subject on a power point; try them in random order until the block fits */
        int start = world__int(r, 4), t;
        for (t = 0; t < 4; t++) {
            int p = (start + t) & 3;
            tx = (p & 1) ? 2.0f / 3.0f : 1.0f / 3.0f;
            ty = (p & 2) ? 2.0f / 3.0f : 1.0f / 3.0f;
            if (tx + minx >= margin && tx + maxx <= 1.0f - margin && ty + miny >= margin && ty + maxy <= 1.0f - margin)
                break;
            if (t == 3) { tx = (start & 1) ? 2.0f / 3.0f : 1.0f / 3.0f; ty = (start & 2) ? 2.0f / 3.0f : 1.0f / 3.0f; }
        }
        tx += world__range(r, -0.015f, 0.015f);
        ty += world__range(r, -0.015f, 0.015f);
        break;
    }
    case WORLD_CENTRED:
        tx = 0.5f - 0.5f * (minx + maxx) + world__range(r, -0.02f, 0.02f);
        ty = 0.5f - 0.5f * (miny + maxy) + world__range(r, -0.02f, 0.02f);
        break;
    case WORLD_CRAMPED: {
        /* pushed against one or two sides so the extent box touches the frame */
        int side = world__int(r, 8);
        tx = world__range(r, margin - minx, 1.0f - margin - maxx);
        ty = world__range(r, margin - miny, 1.0f - margin - maxy);
        if (side == 0 || side == 4 || side == 5) tx = -minx + world__range(r, -0.015f, 0.005f);
        if (side == 1 || side == 6 || side == 7) tx = 1.0f - maxx - world__range(r, -0.015f, 0.005f);
        if (side == 2 || side == 4 || side == 6) ty = -miny + world__range(r, -0.015f, 0.005f);
        if (side == 3 || side == 5 || side == 7) ty = 1.0f - maxy - world__range(r, -0.015f, 0.005f);
        break;
    }
    default: /* loose: anywhere it fits */
        tx = world__range(r, margin - minx, 1.0f - margin - maxx);
        ty = world__range(r, margin - miny, 1.0f - margin - maxy);
        break;
    }
    if (s->composition != WORLD_CRAMPED) {
        tx = world__clampf(tx, margin - minx, 1.0f - margin - maxx);
        ty = world__clampf(ty, margin - miny, 1.0f - margin - maxy);
    }

    /* the objects */
    s->nobjects = 0;
    for (g = 0; g < s->ngroups; g++) {
        float rad = world__size_radius[s->groups[g].size];
        float step = 2.5f * rad, off0 = -0.5f * step * (float)(s->groups[g].count - 1);
        for (k = 0; k < s->groups[g].count && s->nobjects < WORLD_MAX_OBJECTS; k++) {
            world_object *o = &s->objects[s->nobjects++];
            /* a little rotation, more for shapes that still read well tilted */
            static const float tilt[WORLD_NSHAPES] = {0.0f, 0.15f, 0.2f, 0.3f, 0.0f, 0.2f};
            float along = off0 + step * (float)k, across = 0.1f * rad * world__range(r, -1.0f, 1.0f);
            int c;
            o->shape = s->groups[g].shape;
            o->colour = s->groups[g].colour;
            o->group = g;
            o->radius = rad;
            o->x = tx + gx[g] + (vertical ? across : along);
            o->y = ty + gy[g] + (vertical ? along : across);
            o->angle = tilt[o->shape] * world__range(r, -1.0f, 1.0f);
            for (c = 0; c < 3; c++)
                o->rgb[c] = world__clampf(world__palette[o->colour][c] + world__range(r, -0.03f, 0.03f),
                                          0.0f, 1.0f);
        }
    }

    /* crop: pan the frame; every centre stays 0.4 radii inside it, so most of
     * each object stays visible and the counts stay true */
    if (s->crop > 0.0f) {
        const float *d = world__dirs[2 * world__int(r, 8)];
        float dx = s->crop * d[0], dy = s->crop * d[1];
        int i;
        for (i = 0; i < s->nobjects; i++) {
            const world_object *o = &s->objects[i];
            float lo = 0.4f * o->radius, hi = 1.0f - 0.4f * o->radius;
            if (o->x + dx < lo) dx = lo - o->x;
            if (o->x + dx > hi) dx = hi - o->x;
            if (o->y + dy < lo) dy = lo - o->y;
            if (o->y + dy > hi) dy = hi - o->y;
        }
        for (i = 0; i < s->nobjects; i++) { s->objects[i].x += dx; s->objects[i].y += dy; }
    }
}

static aes_status world__check_params(const world_params *p) {
    if (!(p->skill_sd >= 0.0f && p->skill_sd <= 10.0f))
        return world__fail(AES_ERR_INVALID_ARG, "world params: skill_sd %g is not in [0, 10]", (double)p->skill_sd);
    if (!(p->factor_correlation >= 0.0f && p->factor_correlation <= 1.0f))
        return world__fail(AES_ERR_INVALID_ARG, "world params: factor_correlation %g is not in [0, 1]",
                           (double)p->factor_correlation);
    if (!(p->p_two_groups >= 0.0f && p->p_two_groups <= 1.0f))
        return world__fail(AES_ERR_INVALID_ARG, "world params: p_two_groups %g is not in [0, 1]",
                           (double)p->p_two_groups);
    if (p->max_clutter < 0 || p->max_clutter > WORLD_MAX_CLUTTER)
        return world__fail(AES_ERR_INVALID_ARG, "world params: max_clutter %d is not in [0, %d]", p->max_clutter,
                           WORLD_MAX_CLUTTER);
    return AES_OK;
}

WORLD_API aes_status world_sample(aes_ctx *ctx, uint64_t seed, int64_t index, const world_params *params,
                                  world_scene *out) {
    world_params defaults;
    world__rng rng, *r = &rng;
    world_scene *s = out;
    float z, rho, rest, q[8], hue0, sat0, bg_hue, bg_sat, dl, L0, Lbg, spread;
    int f;
    aes_status st;
    enum { Q_COMP, Q_CROP, Q_HARMONY, Q_CONTRAST, Q_CLUTTER, Q_NOISE, Q_BLUR, Q_SHADOW, NQ };

    (void)ctx;
    if (!out) return world__fail(AES_ERR_INVALID_ARG, "world_sample: out is NULL");
    if (!params) { world_params_default(&defaults); params = &defaults; }
    if ((st = world__check_params(params)) != AES_OK) return st;
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->index = index;
    rng.state = world__key(seed, index, WORLD__STREAM_SCENE);

    /* 1. what the scene shows */
    s->background = (world_background)world__int(r, WORLD_NBACKGROUNDS);
    s->ngroups = world__uniform(r) < params->p_two_groups ? 2 : 1;
    {
        float u = world__uniform(r);
        world_group *a = &s->groups[0];
        a->shape = (world_shape)world__int(r, WORLD_NSHAPES);
        a->colour = (world_colour)world__int(r, WORLD_NCOLOURS);
        a->count = u < 0.6f ? 1 : u < 0.88f ? 2 : 3;
        a->size = (world_size)(a->count == 3 ? world__int(r, 2) : world__int(r, WORLD_NSIZES));
    }
    s->relation = s->ngroups == 2 ? (world_relation)(1 + world__int(r, 4)) : WORLD_REL_NONE;

    /* 2. the photographic factors: a shared skill and a quality per factor */
    rho = params->factor_correlation;
    rest = (float)sqrt(1.0 - (double)rho * rho);
    z = params->skill_sd * world__normal(r);
    s->skill = z;
    for (f = 0; f < NQ; f++) q[f] = rho * z + rest * world__normal(r);

    s->composition = q[Q_COMP] > 1.2f ? WORLD_THIRDS : q[Q_COMP] > 0.5f ? WORLD_CENTRED
                     : q[Q_COMP] > -1.3f ? WORLD_LOOSE : WORLD_CRAMPED;
    s->crop = q[Q_CROP] > -1.5f ? 0.0f : WORLD__MIN(0.35f, 0.08f + 0.15f * (-1.5f - q[Q_CROP]));
    if (q[Q_HARMONY] > 1.1f) s->harmony = world__uniform(r) < 0.5f ? WORLD_COMPLEMENTARY : WORLD_ANALOGOUS;
    else if (q[Q_HARMONY] > -1.2f) s->harmony = world__uniform(r) < 0.5f ? WORLD_TRIADIC : WORLD_NEUTRAL;
    else s->harmony = WORLD_CLASHING;
    dl = q[Q_CONTRAST] > 1.1f ? world__range(r, 0.45f, 0.65f)
       : q[Q_CONTRAST] > -1.25f ? world__range(r, 0.25f, 0.42f) : world__range(r, 0.09f, 0.18f);
    if (q[Q_CONTRAST] > -1.6f) s->contrast = 1.0f + 0.04f * world__normal(r);
    else s->contrast = world__uniform(r) < 0.65f ? world__range(r, 0.45f, 0.7f) : world__range(r, 1.4f, 1.7f);
    s->nclutter = q[Q_CLUTTER] > -0.8f ? 0 : 1 + (int)(4.0f * (-0.8f - q[Q_CLUTTER]));
    if (s->nclutter > params->max_clutter) s->nclutter = params->max_clutter;
    s->noise = q[Q_NOISE] > -1.0f ? world__range(r, 0.0f, 1.5f) : 3.0f + 12.0f * (-1.0f - q[Q_NOISE]);
    s->blur = q[Q_BLUR] > -1.1f ? 0.0f : WORLD__MIN(3.5f, 0.4f + 1.3f * (-1.1f - q[Q_BLUR])) / 64.0f;
    s->shadow = q[Q_SHADOW] > 0.9f ? world__range(r, 0.5f, 1.0f) : 0.0f;
    s->rater_sd = world__range(r, 1.0f, 1.6f);

    /* 3. the second group, coloured by the harmony scheme */
    if (s->ngroups == 2) {
        world_group *b = &s->groups[1];
        b->shape = (world_shape)world__int(r, WORLD_NSHAPES);
        b->colour = world__partner_colour(r, s->groups[0].colour, s->harmony);
        b->count = world__uniform(r) < 0.85f ? 1 : 2;
        b->size = (world_size)world__int(r, WORLD_NSIZES);
        if (b->colour == s->groups[0].colour && b->shape == s->groups[0].shape)
            b->shape = (world_shape)((b->shape + 1 + world__int(r, WORLD_NSHAPES - 1)) % WORLD_NSHAPES);
    }

    /* 4. background colour: hue from the harmony scheme (relative to the
     *    subject, or to the second group when the subject is white/black),
     *    luma from the contrast target */
    world__hue_sat(world__palette[s->groups[0].colour], &hue0, &sat0);
    if (sat0 < WORLD__CHROMATIC && s->ngroups == 2)
        world__hue_sat(world__palette[s->groups[1].colour], &hue0, &sat0);
    if (sat0 < WORLD__CHROMATIC) hue0 = world__range(r, 0.0f, 360.0f);
    world__bg_hue(r, s->harmony, hue0, &bg_hue, &bg_sat);
    L0 = world__luma(world__palette[s->groups[0].colour]);
    spread = s->background == WORLD_BG_PLAIN ? 0.0f : world__range(r, 0.08f, 0.12f);
    /* both tones of the pattern stay on the same side of the subject's luma,
     * so a low-contrast subject is faint but never the exact colour of a tone */
    spread = WORLD__MIN(spread, 0.6f * dl);
    {
        /* go to the side with room for the target difference (and the pattern spread) */
        float up = L0 + dl, down = L0 - dl;
        int go_up = L0 < 0.5f;
        if (dl < 0.2f && world__uniform(r) < 0.5f) go_up = !go_up;
        if (go_up && up + spread > 0.98f) go_up = 0;
        if (!go_up && down - spread < 0.02f) go_up = 1;
        Lbg = world__clampf(go_up ? up : down, 0.02f + spread, 0.98f - spread);
    }
    world__colour_with_luma(bg_hue, bg_sat, Lbg + spread, s->bg_rgb[0]);
    world__colour_with_luma(bg_hue, bg_sat, Lbg - spread, s->bg_rgb[1]);
    {
        int d = world__int(r, 16);
        if (s->background == WORLD_BG_STRIPED) d = 2 * world__int(r, 4); /* 0/45/90/135 degrees */
        if (s->background == WORLD_BG_CHECKERED) d = 0;
        s->bg_dir[0] = world__dirs[d][0];
        s->bg_dir[1] = world__dirs[d][1];
        s->bg_period = s->background == WORLD_BG_STRIPED ? world__range(r, 0.12f, 0.2f)
                     : s->background == WORLD_BG_CHECKERED ? world__range(r, 0.2f, 0.32f) : 0.18f;
    }

    /* 5. geometry, then clutter strokes across the frame */
    world__layout(s, r);
    for (f = 0; f < s->nclutter; f++) {
        world_stroke *k = &s->clutter[f];
        const float *d = world__dirs[world__int(r, 16)];
        float cx = world__range(r, 0.05f, 0.95f), cy = world__range(r, 0.05f, 0.95f);
        float half = world__range(r, 0.04f, 0.12f), hue, sat, val;
        k->x0 = cx - half * d[0]; k->y0 = cy - half * d[1];
        k->x1 = cx + half * d[0]; k->y1 = cy + half * d[1];
        k->width = world__range(r, 0.012f, 0.022f);
        hue = world__range(r, 0.0f, 360.0f);
        sat = world__range(r, 0.15f, 0.55f);
        val = world__range(r, 0.3f, 0.9f);
        world__hsv(hue, sat, val, k->rgb);
    }
    s->score = world_score(s, NULL);
    return AES_OK;
}

/* ---- the score ---------------------------------------------------------------- */
static float world__piecewise(float x, const float *xs, const float *ys, int n) {
    int i;
    if (x <= xs[0]) return ys[0];
    for (i = 1; i < n; i++)
        if (x <= xs[i]) return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1]);
    return ys[n - 1];
}

WORLD_API float world_score(const world_scene *s, world_score_parts *parts) {
    static const float bg_bonus[WORLD_NBACKGROUNDS] = {0.0f, 0.2f, 0.0f, -0.2f, -0.1f};
    static const float cx[] = {0.0f, 0.08f, 0.22f, 0.3f, 0.42f, 0.5f, 0.6f};
    static const float cy[] = {-1.8f, -1.4f, -0.3f, 0.0f, 0.15f, 0.7f, 0.8f};
    world_score_parts p;
    float area = 0.0f, outside = 0.0f, margin = 1.0f, sx = 0.0f, sy = 0.0f, ns = 0.0f;
    float minx = 1e9f, maxx = -1e9f, miny = 1e9f, maxy = -1e9f, bg_mid[3], t, pair_sum = 0.0f;
    int i, npairs = 0, c;

    memset(&p, 0, sizeof p);
    if (!s) return 0.0f;
    /* composition and crop, from the objects' extent boxes */
    for (i = 0; i < s->nobjects && i < WORLD_MAX_OBJECTS; i++) {
        const world_object *o = &s->objects[i];
        float e = WORLD__EXTENT * o->radius;
        float x0 = o->x - e, x1 = o->x + e, y0 = o->y - e, y1 = o->y + e;
        float ix = WORLD__MAX(0.0f, WORLD__MIN(x1, 1.0f) - WORLD__MAX(x0, 0.0f));
        float iy = WORLD__MAX(0.0f, WORLD__MIN(y1, 1.0f) - WORLD__MAX(y0, 0.0f));
        area += 4.0f * e * e;
        if (x0 < 0.0f || x1 > 1.0f || y0 < 0.0f || y1 > 1.0f) outside += 4.0f * e * e - ix * iy;
        margin = WORLD__MIN(margin, WORLD__MIN(WORLD__MIN(x0, 1.0f - x1), WORLD__MIN(y0, 1.0f - y1)));
        minx = WORLD__MIN(minx, x0); maxx = WORLD__MAX(maxx, x1);
        miny = WORLD__MIN(miny, y0); maxy = WORLD__MAX(maxy, y1);
        if (o->group == 0) { sx += o->x; sy += o->y; ns += 1.0f; }
    }
    if (s->nobjects > 0 && area > 0.0f) {
        float d3 = 1e9f, dx, dy;
        int pp;
        if (ns == 0.0f) { sx = 0.5f * (minx + maxx); sy = 0.5f * (miny + maxy); ns = 1.0f; }
        sx /= ns; sy /= ns;
        for (pp = 0; pp < 4; pp++) {
            float px = (pp & 1) ? 2.0f / 3.0f : 1.0f / 3.0f, py = (pp & 2) ? 2.0f / 3.0f : 1.0f / 3.0f;
            float d = (float)sqrt((double)((sx - px) * (sx - px) + (sy - py) * (sy - py)));
            d3 = WORLD__MIN(d3, d);
        }
        dx = 0.5f * (minx + maxx) - 0.5f;
        dy = 0.5f * (miny + maxy) - 0.5f;
        p.thirds = WORLD__MAX(0.0f, 1.0f - d3 / 0.1f);
        p.centred = WORLD__MAX(0.0f, 1.0f - (float)sqrt((double)(dx * dx + dy * dy)) / 0.1f);
        p.edge = world__clampf(1.0f - margin / 0.04f, 0.0f, 1.0f);
        p.cut = outside / area;
        p.composition = 1.3f * p.thirds + 0.7f * p.centred * (1.0f - p.thirds) - 0.8f * p.edge;
        p.crop = -6.0f * p.cut;
    }

    /* colour harmony: subject-background, second group-background, subject-second group */
    for (c = 0; c < 3; c++) bg_mid[c] = 0.5f * (s->bg_rgb[0][c] + s->bg_rgb[1][c]);
    for (i = 0; i < s->ngroups && i < 2; i++) {
        if (!world__in((int)s->groups[i].colour, WORLD_NCOLOURS)) continue;
        pair_sum += world__pair_harmony(world__palette[s->groups[i].colour], bg_mid);
        npairs++;
    }
    if (s->ngroups == 2 && world__in((int)s->groups[0].colour, WORLD_NCOLOURS) &&
        world__in((int)s->groups[1].colour, WORLD_NCOLOURS)) {
        pair_sum += world__pair_harmony(world__palette[s->groups[0].colour],
                                        world__palette[s->groups[1].colour]);
        npairs++;
    }
    p.hue_harmony = npairs ? pair_sum / (float)npairs : 0.0f;
    p.harmony = 1.2f * p.hue_harmony;

    /* contrast of the subject against the background, after the global change */
    if (world__in((int)s->groups[0].colour, WORLD_NCOLOURS) && s->ngroups > 0)
        p.luma_diff = (float)fabs((double)(world__luma(world__palette[s->groups[0].colour]) -
                                           world__luma(bg_mid)));
    p.contrast = world__piecewise(p.luma_diff * s->contrast, cx, cy, 7) - 2.5f * WORLD__MAX(0.0f, s->contrast - 1.2f);

    p.clutter = -0.25f * (float)s->nclutter;
    p.noise = -0.06f * s->noise;
    p.blur = -0.9f * WORLD__MAX(0.0f, 64.0f * s->blur - 0.3f);
    p.shadow = 0.8f * world__clampf(s->shadow, 0.0f, 1.0f);
    p.background = world__in((int)s->background, WORLD_NBACKGROUNDS) ? bg_bonus[s->background] : 0.0f;
    p.raw = 5.5f + p.composition + p.crop + p.harmony + p.contrast + p.clutter + p.noise + p.blur + p.shadow + p.background;
    t = (p.raw - 5.5f) / 4.5f;
    p.score = 5.5f + 4.5f * t / (float)sqrt(1.0 + (double)t * t);
    if (parts) *parts = p;
    return p.score;
}

/* ---- vote histograms ------------------------------------------------------------ */
WORLD_API aes_status world_histogram(aes_ctx *ctx, const world_scene *s, int nraters,
                                     int32_t counts[WORLD_NBINS]) {
    uint64_t vote_key, rater_key;
    int k;
    (void)ctx;
    if (!s || !counts) return world__fail(AES_ERR_INVALID_ARG, "world_histogram: NULL argument");
    if (nraters < 1 || nraters > 1000000)
        return world__fail(AES_ERR_INVALID_ARG, "world_histogram: %d raters is not in [1, 1000000]", nraters);
    vote_key = world__key(s->seed, s->index, WORLD__STREAM_VOTES);
    rater_key = world__key(s->seed, 0, WORLD__STREAM_RATERS);
    for (k = 0; k < WORLD_NBINS; k++) counts[k] = 0;
    for (k = 0; k < nraters; k++) {
        /* rater k's leniency is the same for every scene of the world */
        float leniency = 0.4f * world__normal_bits(world__mix(rater_key + (uint64_t)k));
        float v = s->score + leniency + s->rater_sd * world__normal_bits(world__mix(vote_key + (uint64_t)k));
        int bin;
        if (!(v >= 1.0f)) v = 1.0f;   /* also a NaN from a hand-edited scene */
        if (v > 10.0f) v = 10.0f;
        bin = (int)floor((double)v + 0.5);
        counts[bin - 1]++;
    }
    return AES_OK;
}

/* ---- rendering -------------------------------------------------------------------
 * Shapes are signed distance functions in the object's own frame (rotated,
 * divided by the radius): negative inside.  A pixel's coverage is
 * clamp(0.5 - distance_in_pixels, 0, 1), the area of a one-pixel box filter
 * straddling a straight edge: anti-aliasing without supersampling. */

/* Signed distance to a simple polygon (any winding, may be concave): the
 * distance to the nearest edge, negative when an even-odd ray test says inside. */
static float world__polygon_sd(const float (*v)[2], int n, float px, float py) {
    float best = 1e30f;
    int i, j, inside = 0;
    for (i = 0, j = n - 1; i < n; j = i++) {
        float ex = v[j][0] - v[i][0], ey = v[j][1] - v[i][1];
        float wx = px - v[i][0], wy = py - v[i][1];
        float t = world__clampf((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0f, 1.0f);
        float bx = wx - ex * t, by = wy - ey * t, d2 = bx * bx + by * by;
        if (d2 < best) best = d2;
        if ((v[i][1] > py) != (v[j][1] > py) && px < ex * (py - v[i][1]) / ey + v[i][0]) inside = !inside;
    }
    return (inside ? -1.0f : 1.0f) * (float)sqrt((double)best);
}

/* Distance to an axis-aligned box of half-sizes (bx, by), exact inside and out. */
static float world__box_sd(float px, float py, float bx, float by) {
    float qx = (float)fabs((double)px) - bx, qy = (float)fabs((double)py) - by;
    float ox = WORLD__MAX(qx, 0.0f), oy = WORLD__MAX(qy, 0.0f);
    return (float)sqrt((double)(ox * ox + oy * oy)) + WORLD__MIN(WORLD__MAX(qx, qy), 0.0f);
}

/* The triangle and the star are centred on their bounding boxes, so they
 * look centred; every shape stays within +-WORLD__EXTENT. */
static const float world__triangle[3][2] = {{0.0f, -0.825f}, {0.95263f, 0.825f}, {-0.95263f, 0.825f}};
static const float world__star[10][2] = {
    {0.00000f, -1.04f}, {0.28214f, -0.27833f}, {1.09371f, -0.24537f}, {0.45651f, 0.25833f}, {0.67595f, 1.04037f},
    {0.00000f, 0.59f},  {-0.67595f, 1.04037f}, {-0.45651f, 0.25833f}, {-1.09371f, -0.24537f}, {-0.28214f, -0.27833f}};

/* Signed distance (in radii) from local point (px, py) to a unit shape. */
static float world__shape_sd(world_shape shape, float px, float py) {
    switch (shape) {
    case WORLD_CIRCLE: return (float)sqrt((double)(px * px + py * py)) - 1.0f;
    case WORLD_RING: return (float)fabs(sqrt((double)(px * px + py * py)) - 0.76) - 0.24f;
    case WORLD_SQUARE: return world__box_sd(px, py, 0.8f, 0.8f);
    case WORLD_TRIANGLE: return world__polygon_sd(world__triangle, 3, px, py);
    case WORLD_STAR: return world__polygon_sd(world__star, 10, px, py);
    case WORLD_CROSS:
        return WORLD__MIN(world__box_sd(px, py, 1.0f, 0.34f), world__box_sd(px, py, 0.34f, 1.0f));
    default: return 1e30f;
    }
}

typedef struct world__canvas {
    float *rgb;          /* w * h * 3, 0..1 */
    int w, h;
    float px_per_unit;   /* pixels per image width, for distances (min of w, h) */
} world__canvas;

static void world__blend(float *dst, const float *src, float alpha) {
    dst[0] += alpha * (src[0] - dst[0]);
    dst[1] += alpha * (src[1] - dst[1]);
    dst[2] += alpha * (src[2] - dst[2]);
}

/* Pixel index range [lo, hi) covering the image-fraction interval [a, b],
 * clipped to [0, n): the only place object bounds meet the buffer. */
static void world__span(float a, float b, int n, int *lo, int *hi) {
    double fa = floor((double)a * n) - 1.0, fb = ceil((double)b * n) + 1.0;
    *lo = fa < 0.0 ? 0 : fa > n ? n : (int)fa;
    *hi = fb < 0.0 ? 0 : fb > n ? n : (int)fb;
}

static void world__draw_object(world__canvas *cv, const world_object *o) {
    float e = WORLD__EXTENT * o->radius, ca = (float)cos((double)o->angle), sa = (float)sin((double)o->angle);
    float to_px = o->radius * cv->px_per_unit;
    int x0, x1, y0, y1, x, y;
    if (!(o->radius > 0.0f)) return;
    world__span(o->x - e, o->x + e, cv->w, &x0, &x1);
    world__span(o->y - e, o->y + e, cv->h, &y0, &y1);
    for (y = y0; y < y1; y++)
        for (x = x0; x < x1; x++) {
            float dx = ((float)x + 0.5f) / (float)cv->w - o->x, dy = ((float)y + 0.5f) / (float)cv->h - o->y;
            /* into the object's frame: rotate by -angle, divide by the radius */
            float lx = (ca * dx + sa * dy) / o->radius, ly = (-sa * dx + ca * dy) / o->radius;
            float cover = world__clampf(0.5f - world__shape_sd(o->shape, lx, ly) * to_px, 0.0f, 1.0f);
            if (cover > 0.0f) world__blend(cv->rgb + ((size_t)y * cv->w + x) * 3, o->rgb, cover);
        }
}

/* A soft drop shadow: the shape moved down-right, its edge spread over ~3
 * pixels, darkening what is under it.  It gives the flat shapes depth. */
static void world__draw_shadow(world__canvas *cv, const world_object *o, float strength) {
    static const float black[3] = {0.0f, 0.0f, 0.0f};
    float ox = 0.02f, oy = 0.025f, e = WORLD__EXTENT * o->radius + 0.05f;
    float ca = (float)cos((double)o->angle), sa = (float)sin((double)o->angle), to_px = o->radius * cv->px_per_unit;
    int x0, x1, y0, y1, x, y;
    if (!(o->radius > 0.0f)) return;
    world__span(o->x + ox - e, o->x + ox + e, cv->w, &x0, &x1);
    world__span(o->y + oy - e, o->y + oy + e, cv->h, &y0, &y1);
    for (y = y0; y < y1; y++)
        for (x = x0; x < x1; x++) {
            float dx = ((float)x + 0.5f) / (float)cv->w - o->x - ox, dy = ((float)y + 0.5f) / (float)cv->h - o->y - oy;
            float lx = (ca * dx + sa * dy) / o->radius, ly = (-sa * dx + ca * dy) / o->radius;
            float cover = world__clampf(0.5f - world__shape_sd(o->shape, lx, ly) * to_px / 3.0f, 0.0f, 1.0f);
            if (cover > 0.0f) world__blend(cv->rgb + ((size_t)y * cv->w + x) * 3, black, 0.4f * strength * cover);
        }
}

static void world__draw_stroke(world__canvas *cv, const world_stroke *k) {
    float hw = 0.5f * k->width, ex = k->x1 - k->x0, ey = k->y1 - k->y0, len2 = ex * ex + ey * ey;
    int x0, x1, y0, y1, x, y;
    world__span(WORLD__MIN(k->x0, k->x1) - hw, WORLD__MAX(k->x0, k->x1) + hw, cv->w, &x0, &x1);
    world__span(WORLD__MIN(k->y0, k->y1) - hw, WORLD__MAX(k->y0, k->y1) + hw, cv->h, &y0, &y1);
    for (y = y0; y < y1; y++)
        for (x = x0; x < x1; x++) {
            float wx = ((float)x + 0.5f) / (float)cv->w - k->x0, wy = ((float)y + 0.5f) / (float)cv->h - k->y0;
            float t = len2 > 0.0f ? world__clampf((wx * ex + wy * ey) / len2, 0.0f, 1.0f) : 0.0f;
            float bx = wx - ex * t, by = wy - ey * t;
            float d = ((float)sqrt((double)(bx * bx + by * by)) - hw) * cv->px_per_unit;
            float cover = world__clampf(0.5f - d, 0.0f, 1.0f);
            if (cover > 0.0f) world__blend(cv->rgb + ((size_t)y * cv->w + x) * 3, k->rgb, 0.9f * cover);
        }
}

/* Coverage of the second tone of a band pattern with period `period` along
 * coordinate u (image widths): tone 2 on the second half of each period,
 * edges box-filtered over one pixel. */
static float world__band(float u, float period, float px_per_unit) {
    float f = u / period - (float)floor((double)(u / period)), sd;
    if (f >= 0.5f) sd = WORLD__MIN(f - 0.5f, 1.0f - f);   /* inside tone 2: distance to its edges */
    else sd = -WORLD__MIN(0.5f - f, f);
    return world__clampf(0.5f + sd * period * px_per_unit, 0.0f, 1.0f);
}

/* Smooth value noise: random values on a lattice of `cell` image widths,
 * interpolated with a smoothstep; keyed by the scene so it is reproducible. */
static float world__lattice(uint64_t key, int ix, int iy) {
    return world__unit(world__mix(key ^ ((uint64_t)(uint32_t)ix * 0x9E3779B1u) ^
                                  ((uint64_t)(uint32_t)iy << 32)));
}
static float world__value_noise(uint64_t key, float x, float y, float cell) {
    float gx = x / cell, gy = y / cell, fx, fy, a, b, c, d;
    int ix = (int)floor((double)gx), iy = (int)floor((double)gy);
    fx = gx - (float)ix; fy = gy - (float)iy;
    fx = fx * fx * (3.0f - 2.0f * fx);
    fy = fy * fy * (3.0f - 2.0f * fy);
    a = world__lattice(key, ix, iy); b = world__lattice(key, ix + 1, iy);
    c = world__lattice(key, ix, iy + 1); d = world__lattice(key, ix + 1, iy + 1);
    return (a + (b - a) * fx) + ((c + (d - c) * fx) - (a + (b - a) * fx)) * fy;
}

static void world__draw_background(world__canvas *cv, const world_scene *s) {
    uint64_t tex = world__key(s->seed, s->index, WORLD__STREAM_TEXTURE);
    float period = s->bg_period > 0.01f ? s->bg_period : 0.01f;
    int x, y;
    for (y = 0; y < cv->h; y++)
        for (x = 0; x < cv->w; x++) {
            float u = ((float)x + 0.5f) / (float)cv->w, v = ((float)y + 0.5f) / (float)cv->h, m = 0.0f;
            float *px = cv->rgb + ((size_t)y * cv->w + x) * 3;
            switch (s->background) {
            case WORLD_BG_GRADIENT:
                m = world__clampf((u - 0.5f) * s->bg_dir[0] + (v - 0.5f) * s->bg_dir[1] + 0.5f, 0.0f, 1.0f);
                break;
            case WORLD_BG_STRIPED:
                m = world__band(u * s->bg_dir[0] + v * s->bg_dir[1], period, cv->px_per_unit);
                break;
            case WORLD_BG_CHECKERED: {
                float a = world__band(u, period, cv->px_per_unit), b = world__band(v, period, cv->px_per_unit);
                m = a * (1.0f - b) + b * (1.0f - a); /* exclusive or of two band patterns */
                break;
            }
            case WORLD_BG_TEXTURED:
                m = 0.65f * world__value_noise(tex, u, v, 0.18f) + 0.35f * world__value_noise(tex + 1, u, v, 0.07f);
                m = world__clampf(1.6f * (m - 0.5f) + 0.5f, 0.0f, 1.0f);
                break;
            default: m = 0.5f; break;
            }
            px[0] = s->bg_rgb[0][0] + m * (s->bg_rgb[1][0] - s->bg_rgb[0][0]);
            px[1] = s->bg_rgb[0][1] + m * (s->bg_rgb[1][1] - s->bg_rgb[0][1]);
            px[2] = s->bg_rgb[0][2] + m * (s->bg_rgb[1][2] - s->bg_rgb[0][2]);
        }
}

/* Separable Gaussian blur, edges clamped; tmp has the size of img. */
static void world__blur(float *img, float *tmp, int w, int h, float sigma_x, float sigma_y) {
    float kx[129], ky[129];
    int rx = (int)ceil(3.0 * sigma_x), ry = (int)ceil(3.0 * sigma_y), x, y, i, c;
    float sx = 0.0f, sy = 0.0f;
    if (rx > 64) rx = 64;
    if (ry > 64) ry = 64;
    for (i = -rx; i <= rx; i++) sx += kx[i + rx] = (float)exp(-0.5 * (double)i * i / ((double)sigma_x * sigma_x));
    for (i = -ry; i <= ry; i++) sy += ky[i + ry] = (float)exp(-0.5 * (double)i * i / ((double)sigma_y * sigma_y));
    for (i = 0; i <= 2 * rx; i++) kx[i] /= sx;
    for (i = 0; i <= 2 * ry; i++) ky[i] /= sy;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++)
            for (c = 0; c < 3; c++) {
                float acc = 0.0f;
                for (i = -rx; i <= rx; i++) {
                    int xx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i;
                    acc += kx[i + rx] * img[((size_t)y * w + xx) * 3 + c];
                }
                tmp[((size_t)y * w + x) * 3 + c] = acc;
            }
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++)
            for (c = 0; c < 3; c++) {
                float acc = 0.0f;
                for (i = -ry; i <= ry; i++) {
                    int yy = y + i < 0 ? 0 : y + i >= h ? h - 1 : y + i;
                    acc += ky[i + ry] * tmp[((size_t)yy * w + x) * 3 + c];
                }
                img[((size_t)y * w + x) * 3 + c] = acc;
            }
}

static aes_status world__check_scene(const world_scene *s) {
    int i;
    if (s->nobjects < 0 || s->nobjects > WORLD_MAX_OBJECTS || s->nclutter < 0 ||
        s->nclutter > WORLD_MAX_CLUTTER || s->ngroups < 0 || s->ngroups > 2)
        return world__fail(AES_ERR_INVALID_ARG, "world scene %lld: %d objects, %d strokes, %d groups is out of range",
                           (long long)s->index, s->nobjects, s->nclutter, s->ngroups);
    if (!world__in((int)s->background, WORLD_NBACKGROUNDS))
        return world__fail(AES_ERR_INVALID_ARG, "world scene %lld: unknown background %d", (long long)s->index,
                           (int)s->background);
    for (i = 0; i < s->nobjects; i++) {
        const world_object *o = &s->objects[i];
        if (!world__in((int)o->shape, WORLD_NSHAPES) || !(o->radius >= 0.0f && o->radius <= 10.0f) ||
            !(o->x > -100.0f && o->x < 100.0f) || !(o->y > -100.0f && o->y < 100.0f) ||
            !(o->angle > -100.0f && o->angle < 100.0f))
            return world__fail(AES_ERR_INVALID_ARG, "world scene %lld: object %d has a bad shape or geometry",
                               (long long)s->index, i);
    }
    for (i = 0; i < s->nclutter; i++) {
        const world_stroke *k = &s->clutter[i];
        if (!(k->x0 > -100.0f && k->x0 < 100.0f && k->x1 > -100.0f && k->x1 < 100.0f && k->y0 > -100.0f &&
              k->y0 < 100.0f && k->y1 > -100.0f && k->y1 < 100.0f && k->width >= 0.0f && k->width < 10.0f))
            return world__fail(AES_ERR_INVALID_ARG, "world scene %lld: stroke %d has bad geometry",
                               (long long)s->index, i);
    }
    if (!(s->contrast >= 0.0f && s->contrast <= 10.0f) || !(s->noise >= 0.0f && s->noise <= 255.0f) ||
        !(s->blur >= 0.0f && s->blur <= 1.0f) || !(s->shadow >= 0.0f && s->shadow <= 1.0f) || !(s->bg_period >= 0.0f && s->bg_period <= 100.0f))
        return world__fail(AES_ERR_INVALID_ARG, "world scene %lld: contrast %g, noise %g, blur %g or period %g out of range",
                           (long long)s->index, (double)s->contrast, (double)s->noise, (double)s->blur,
                         (double)s->bg_period);
    return AES_OK;
}

/* Renders one checked scene; scratch holds 2 * w * h * 3 floats. */
static void world__render_into(const world_scene *s, int w, int h, uint8_t *out, float *scratch) {
    world__canvas cv;
    size_t n = (size_t)w * h * 3, i;
    uint64_t noise_key = world__key(s->seed, s->index, WORLD__STREAM_NOISE);
    float c = s->contrast, haze = c < 1.0f ? 0.15f * (1.0f - c) : 0.0f, sigma = s->noise / 255.0f;
    int k;
    cv.rgb = scratch;
    cv.w = w;
    cv.h = h;
    cv.px_per_unit = (float)WORLD__MIN(w, h);
    world__draw_background(&cv, s);
    /* clutter first: it distracts, but never hides what the caption names */
    for (k = 0; k < s->nclutter; k++) world__draw_stroke(&cv, &s->clutter[k]);
    if (s->shadow > 0.0f)
        for (k = 0; k < s->nobjects; k++) world__draw_shadow(&cv, &s->objects[k], WORLD__MIN(s->shadow, 1.0f));
    for (k = 0; k < s->nobjects; k++) world__draw_object(&cv, &s->objects[k]);
    if (s->blur > 0.0f) {
        float sx = s->blur * (float)w, sy = s->blur * (float)h;
        if (sx > 0.05f || sy > 0.05f) world__blur(cv.rgb, scratch + n, w, h, WORLD__MAX(sx, 0.05f), WORLD__MAX(sy, 0.05f));
    }
    /* global contrast around mid grey (washed-out images also lift toward a
     * light haze), then sensor-like noise, then 8 bits */
    for (i = 0; i < n; i++) {
        float v = 0.5f + c * (cv.rgb[i] - 0.5f) + haze;
        if (sigma > 0.0f) v += sigma * world__normal_bits(world__mix(noise_key + (uint64_t)i));
        if (!(v > 0.0f)) v = 0.0f;    /* NaN from a hand-made colour becomes black */
        if (v > 1.0f) v = 1.0f;
        out[i] = (uint8_t)(v * 255.0f + 0.5f);
    }
}

static aes_status world__check_size(aes_ctx *ctx, int w, int h) {
    if (w < 1 || h < 1 || w > 65536 || h > 65536)
        return world__fail(AES_ERR_INVALID_ARG, "world render: size %dx%d is not in [1, 65536]", w, h);
    if ((uint64_t)w * (uint64_t)h * 6u * sizeof(float) > (uint64_t)SIZE_MAX)
        return world__fail(AES_ERR_LIMIT, "world render: %dx%d does not fit in memory here", w, h);
    if ((uint64_t)w * (uint64_t)h > aes_limit_get(ctx, AES_LIMIT_IMAGE_PIXELS) && ctx)
        return world__fail(AES_ERR_LIMIT, "world render: %dx%d is over the image pixel limit", w, h);
    return AES_OK;
}

WORLD_API aes_status world_render(aes_ctx *ctx, const world_scene *scene, int width, int height,
                                  uint8_t *rgb) {
    float *scratch;
    aes_status st;
    if (!scene || !rgb) return world__fail(AES_ERR_INVALID_ARG, "world_render: NULL argument");
    if ((st = world__check_size(ctx, width, height)) != AES_OK) return st;
    if ((st = world__check_scene(scene)) != AES_OK) return st;
    scratch = (float *)aes_alloc(ctx, (size_t)width * height * 6, sizeof(float));
    if (!scratch) return world__lib_fail(ctx, "world_render");
    world__render_into(scene, width, height, rgb, scratch);
    aes_free(scratch);
    return AES_OK;
}

WORLD_API aes_status world_render_image(aes_ctx *ctx, const world_scene *scene, int width, int height,
                                        aes_image *out) {
    aes_status st;
    if (!out) return world__fail(AES_ERR_INVALID_ARG, "world_render_image: out is NULL");
    out->pixels = NULL;
    out->width = out->height = out->channels = 0;
    if (!scene) return world__fail(AES_ERR_INVALID_ARG, "world_render_image: scene is NULL");
    if ((st = world__check_size(ctx, width, height)) != AES_OK) return st;
    if (aes_image_alloc(ctx, out, width, height, 3) != AES_OK) return world__lib_fail(ctx, "world_render_image");
    if ((st = world_render(ctx, scene, width, height, out->pixels)) != AES_OK) aes_image_free(out);
    return st;
}

WORLD_API aes_status world_render_many(aes_ctx *ctx, const world_scene *scenes, int n, int width,
                                       int height, uint8_t *pixels) {
    float *scratch;
    size_t img;
    aes_status st;
    int i;
    if (n < 0 || (n > 0 && (!scenes || !pixels)))
        return world__fail(AES_ERR_INVALID_ARG, "world_render_many: bad arguments (n = %d)", n);
    if (n == 0) return AES_OK;
    if ((st = world__check_size(ctx, width, height)) != AES_OK) return st;
    for (i = 0; i < n; i++)
        if ((st = world__check_scene(&scenes[i])) != AES_OK) return st;
    scratch = (float *)aes_alloc(ctx, (size_t)width * height * 6, sizeof(float));
    if (!scratch) return world__lib_fail(ctx, "world_render_many");
    img = (size_t)width * height * 3;
    for (i = 0; i < n; i++) world__render_into(&scenes[i], width, height, pixels + img * i, scratch);
    aes_free(scratch);
    return AES_OK;
}

/* ---- captions and queries ---------------------------------------------------- */
typedef struct world__text {
    char *buf;
    size_t cap, len;
    int overflow;
} world__text;

static void world__put(world__text *t, const char *s) {
    for (; *s; s++) {
        if (t->len + 1 < t->cap) t->buf[t->len++] = *s;
        else t->overflow = 1;
    }
    if (t->cap) t->buf[t->len < t->cap ? t->len : t->cap - 1] = 0;
}

/* "a small red circle", "an orange star", "two large blue squares" */
static void world__put_group(world__text *t, int count, int size, int colour, int shape) {
    const char *next = size >= 0 ? world_size_name(size) : world_colour_name(colour);
    if (count <= 1) world__put(t, strchr("aeiou", next[0]) ? "an " : "a ");
    else {
        world__put(t, count < (int)(sizeof world__count_words / sizeof *world__count_words)
                              ? world__count_words[count] : "many");
        world__put(t, " ");
    }
    if (size >= 0) { world__put(t, world_size_name(size)); world__put(t, " "); }
    world__put(t, world_colour_name(colour));
    world__put(t, " ");
    world__put(t, count <= 1 ? world_shape_name(shape) : WORLD__NAME(world__shape_plurals, shape));
}

static world_relation world__inverse(world_relation r) {
    switch (r) {
    case WORLD_ABOVE: return WORLD_BELOW;
    case WORLD_BELOW: return WORLD_ABOVE;
    case WORLD_LEFT_OF: return WORLD_RIGHT_OF;
    case WORLD_RIGHT_OF: return WORLD_LEFT_OF;
    default: return r;
    }
}

/* "<group a> [relation <group b>]", optionally with sizes, optionally turned around. */
static void world__put_body(world__text *t, const world_scene *s, int sizes, int turned) {
    int a = turned && s->ngroups == 2 ? 1 : 0, i;
    for (i = 0; i < s->ngroups && i < 2; i++) {
        const world_group *g = &s->groups[i == 0 ? a : 1 - a];
        if (i == 1) {
            world__put(t, " ");
            world__put(t, world_relation_name(turned ? world__inverse(s->relation) : s->relation));
            world__put(t, " ");
        }
        world__put_group(t, g->count, sizes ? (int)g->size : -1, g->colour, g->shape);
    }
}

/* What a viewer would say about the picture's quality: the two strongest
 * defects for poor scenes ("a blurry and noisy photo of ..."), the two
 * strongest qualities for good ones.  The good ones are said the way real
 * captions and the library's expansion templates (aes_expand_template) say
 * them, after the scene: "a beautiful photo of ... background, balanced
 * composition, vivid colors" (our choice of words for the factors:
 * composition -> balanced composition, harmony -> vivid colors, contrast ->
 * sharp focus, drop shadows -> natural lighting); scores from 6.5 are
 * "high-quality", from 7.5 "beautiful". */
static int world__quality_words(const world_scene *s, const char **words, int *good_out);

static void world__put_quality_after(world__text *t, const world_scene *s) {
    const char *words[8];
    int good, n = world__quality_words(s, words, &good), i;
    if (!good) return;
    for (i = 0; i < n; i++) {
        world__put(t, ", ");
        world__put(t, words[i]);
    }
}

static void world__put_quality(world__text *t, const world_scene *s) {
    const char *words[8];
    int good, n = world__quality_words(s, words, &good), i;
    float score = world_score(s, NULL);
    world__put(t, "a ");
    if (score >= 7.5f) world__put(t, "beautiful ");
    else if (score >= 6.5f) world__put(t, "high-quality ");
    if (!good)
        for (i = 0; i < n; i++) {
            if (i == 1) world__put(t, " and ");
            world__put(t, words[i]);
            world__put(t, i == n - 1 ? " " : "");
        }
    world__put(t, "photo of ");
}

/* The quality words of a scene, strongest first (at most 2, in words[0..8)),
 * and whether they are the good ones (*good_out) or defects. */
static int world__quality_words(const world_scene *s, const char **words, int *good_out) {
    world_score_parts p;
    float strength[8];
    int n = 0, i, j, good;
    float score = world_score(s, &p);
    good = score >= 6.5f;
    *good_out = good;
    if (good) {
        if (p.composition >= 0.9f) { words[n] = "balanced composition"; strength[n++] = p.composition; }
        if (p.harmony >= 0.9f) { words[n] = "vivid colors"; strength[n++] = p.harmony; }
        if (p.contrast >= 0.4f) { words[n] = "sharp focus"; strength[n++] = p.contrast; }
        if (p.shadow >= 0.5f) { words[n] = "natural lighting"; strength[n++] = p.shadow; }
    } else if (score < 4.5f) {
        float harsh = 2.5f * WORLD__MAX(0.0f, s->contrast - 1.2f), flat = p.contrast + harsh;
        if (p.blur <= -0.5f) { words[n] = "blurry"; strength[n++] = -p.blur; }
        if (p.noise <= -0.5f) { words[n] = "noisy"; strength[n++] = -p.noise; }
        if (p.clutter <= -0.9f) { words[n] = "cluttered"; strength[n++] = -p.clutter; }
        if (flat <= -0.6f) { words[n] = s->contrast < 0.8f ? "washed-out" : "dull"; strength[n++] = -flat; }
        if (harsh >= 0.5f) { words[n] = "harsh"; strength[n++] = harsh; }
        if (p.harmony <= -0.5f) { words[n] = "garish"; strength[n++] = -p.harmony; }
        if (p.crop <= -0.6f) { words[n] = "badly cropped"; strength[n++] = -p.crop; }
        if (p.composition <= -0.6f) { words[n] = "cramped"; strength[n++] = -p.composition; }
    }
    /* strongest first (insertion sort; ties keep the order above) */
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && strength[j] > strength[j - 1]; j--) {
            const char *w = words[j]; float x = strength[j];
            words[j] = words[j - 1]; strength[j] = strength[j - 1];
            words[j - 1] = w; strength[j - 1] = x;
        }
    if (n > 2) n = 2;
    return n;
}

static aes_status world__text_done(world__text *t, const char *what) {
    if (t->overflow)
        return world__fail(AES_ERR_LIMIT, "%s: buffer of %zu bytes is too small (WORLD_TEXT_MAX = %d suffices)",
                           what, t->cap, WORLD_TEXT_MAX);
    return AES_OK;
}

static int world__group_ok(const world_group *g) {
    return g->count >= 1 && g->count <= WORLD_MAX_GROUP && world__in((int)g->shape, WORLD_NSHAPES) &&
           world__in((int)g->colour, WORLD_NCOLOURS) && world__in((int)g->size, WORLD_NSIZES);
}

WORLD_API aes_status world_caption(aes_ctx *ctx, const world_scene *s, int variant, char *buf, size_t cap) {
    world__text t;
    int i;
    (void)ctx;
    if (!s || !buf || cap == 0) return world__fail(AES_ERR_INVALID_ARG, "world_caption: NULL argument");
    buf[0] = 0;
    if (variant < 0 || variant >= WORLD_NVARIANTS)
        return world__fail(AES_ERR_INVALID_ARG, "world_caption: variant %d is not in [0, %d)", variant,
                           WORLD_NVARIANTS);
    if (s->ngroups < 1 || s->ngroups > 2 || (s->ngroups == 2 && (s->relation <= 0 || s->relation >= WORLD_NRELATIONS)))
        return world__fail(AES_ERR_INVALID_ARG, "world_caption: scene %lld has %d groups, relation %d",
                           (long long)s->index, s->ngroups, (int)s->relation);
    for (i = 0; i < s->ngroups; i++)
        if (!world__group_ok(&s->groups[i]))
            return world__fail(AES_ERR_INVALID_ARG, "world_caption: scene %lld group %d is malformed",
                               (long long)s->index, i);
    t.buf = buf; t.cap = cap; t.len = 0; t.overflow = 0;
    if (variant == 2) {
        world__put(&t, "a ");
        world__put(&t, world_background_name(s->background));
        world__put(&t, " background with ");
        world__put_body(&t, s, 1, 1);
    } else {
        if (variant == 3) world__put_quality(&t, s);
        world__put_body(&t, s, variant == 0, 0);
        world__put(&t, " on a ");
        world__put(&t, world_background_name(s->background));
        world__put(&t, " background");
        if (variant == 3) world__put_quality_after(&t, s);
    }
    return world__text_done(&t, "world_caption");
}

static int world__query_ok(const world_query *q) {
    return q->count >= 0 && q->count <= WORLD_MAX_GROUP && q->size >= -1 && q->size < WORLD_NSIZES &&
           world__in((int)q->colour, WORLD_NCOLOURS) && world__in((int)q->shape, WORLD_NSHAPES) &&
           q->background >= -1 && q->background < WORLD_NBACKGROUNDS &&
           world__in((int)q->relation, WORLD_NRELATIONS) &&
           (q->relation == WORLD_REL_NONE ||
            (q->count2 >= 0 && q->count2 <= WORLD_MAX_GROUP &&
             world__in((int)q->colour2, WORLD_NCOLOURS) && world__in((int)q->shape2, WORLD_NSHAPES)));
}

WORLD_API aes_status world_query_text(aes_ctx *ctx, const world_query *q, char *buf, size_t cap) {
    world__text t;
    (void)ctx;
    if (!q || !buf || cap == 0) return world__fail(AES_ERR_INVALID_ARG, "world_query_text: NULL argument");
    buf[0] = 0;
    if (!world__query_ok(q)) return world__fail(AES_ERR_INVALID_ARG, "world_query_text: malformed query");
    t.buf = buf; t.cap = cap; t.len = 0; t.overflow = 0;
    world__put_group(&t, q->count ? q->count : 1, q->size, q->colour, q->shape);
    if (q->relation != WORLD_REL_NONE) {
        world__put(&t, " ");
        world__put(&t, world_relation_name(q->relation));
        world__put(&t, " ");
        world__put_group(&t, q->count2 ? q->count2 : 1, -1, q->colour2, q->shape2);
    }
    if (q->background >= 0) {
        world__put(&t, " on a ");
        world__put(&t, world_background_name(q->background));
        world__put(&t, " background");
    }
    return world__text_done(&t, "world_query_text");
}

/* How many objects of this colour and shape (and size, when size >= 0) the scene has. */
static int world__count(const world_scene *s, int colour, int shape, int size) {
    int i, n = 0;
    for (i = 0; i < s->ngroups && i < 2; i++)
        if ((int)s->groups[i].colour == colour && (int)s->groups[i].shape == shape && (size < 0 || (int)s->groups[i].size == size))
            n += s->groups[i].count;
    return n;
}

static int world__group_matches(const world_group *g, int count, int size, int colour, int shape) {
    return (int)g->colour == colour && (int)g->shape == shape && (count == 0 || g->count == count) &&
           (size < 0 || (int)g->size == size);
}

WORLD_API int world_relevance(const world_query *q, const world_scene *s) {
    int n;
    if (!q || !s || s->ngroups < 1 || s->ngroups > 2) return 0;
    if (world__count(s, q->colour, q->shape, -1) == 0) return 0;
    /* present: grade 1 at least; grade 2 needs every attribute */
    n = world__count(s, q->colour, q->shape, q->size);
    if (n == 0 || (q->count > 0 && n != q->count)) return 1;
    if (q->background >= 0 && (int)s->background != q->background) return 1;
    if (q->relation != WORLD_REL_NONE) {
        const world_group *g0 = &s->groups[0], *g1 = &s->groups[1];
        int same = s->ngroups == 2 && s->relation == q->relation &&
                   world__group_matches(g0, q->count, q->size, q->colour, q->shape) &&
                   world__group_matches(g1, q->count2, -1, q->colour2, q->shape2);
        int turned = s->ngroups == 2 && s->relation == world__inverse(q->relation) &&
                     world__group_matches(g1, q->count, q->size, q->colour, q->shape) &&
                     world__group_matches(g0, q->count2, -1, q->colour2, q->shape2);
        if (!same && !turned) return 1;
    }
    return 2;
}

/* A query from the attributes of one gallery scene, by template:
 *   0  count colour shape                 "two blue squares"
 *   1  count size colour shape            "a small green triangle"
 *   2  count colour shape background      "a yellow star on a striped background"
 *   3  relation between the two groups    "a red circle above two blue squares"
 *      (template 2 when the scene has one group) */
static void world__make_query(world__rng *r, const world_scene *s, world_query *q) {
    float u = world__uniform(r);
    int tpl = u < 0.3f ? 0 : u < 0.5f ? 1 : u < 0.75f ? 2 : 3;
    int g = s->ngroups == 2 && world__uniform(r) < 0.5f ? 1 : 0;
    memset(q, 0, sizeof *q);
    if (tpl == 3 && s->ngroups < 2) tpl = 2;
    q->size = -1;
    q->background = -1;
    q->relation = WORLD_REL_NONE;
    q->template_id = tpl;
    if (tpl == 3) {
        int a = g, b = 1 - g;
        q->count = s->groups[a].count; q->colour = s->groups[a].colour; q->shape = s->groups[a].shape;
        q->count2 = s->groups[b].count; q->colour2 = s->groups[b].colour; q->shape2 = s->groups[b].shape;
        q->relation = a == 0 ? s->relation : world__inverse(s->relation);
        return;
    }
    q->count = s->groups[g].count;
    q->colour = s->groups[g].colour;
    q->shape = s->groups[g].shape;
    if (tpl == 1) q->size = (int)s->groups[g].size;
    if (tpl == 2) q->background = (int)s->background;
}

static int world__same_query(const world_query *a, const world_query *b) {
    return a->count == b->count && a->size == b->size && a->colour == b->colour && a->shape == b->shape &&
           a->background == b->background && a->relation == b->relation &&
           (a->relation == WORLD_REL_NONE ||
            (a->count2 == b->count2 && a->colour2 == b->colour2 && a->shape2 == b->shape2));
}

static uint64_t world__query_hash(const world_query *q) {
    uint64_t h = (uint64_t)q->count;
    h = h * 31 + (uint64_t)(q->size + 1);
    h = h * 31 + (uint64_t)q->colour;
    h = h * 31 + (uint64_t)q->shape;
    h = h * 31 + (uint64_t)(q->background + 1);
    h = h * 31 + (uint64_t)q->relation;
    if (q->relation != WORLD_REL_NONE) {
        h = h * 31 + (uint64_t)q->count2;
        h = h * 31 + (uint64_t)q->colour2;
        h = h * 31 + (uint64_t)q->shape2;
    }
    return world__mix(h);
}

WORLD_API aes_status world_query_set(aes_ctx *ctx, uint64_t seed, const world_scene *gallery, int ngallery,
                                     int nwanted, world_query *out, int *nout) {
    world__rng rng;
    int *table, tsize = 16, n = 0, i;
    int64_t attempt, max_attempts;
    if (!nout || (nwanted > 0 && !out) || (ngallery > 0 && !gallery) || nwanted < 0 || ngallery < 0)
        return world__fail(AES_ERR_INVALID_ARG, "world_query_set: bad arguments");
    *nout = 0;
    if (nwanted == 0 || ngallery == 0) return AES_OK;
    if (nwanted > (1 << 24)) return world__fail(AES_ERR_LIMIT, "world_query_set: %d queries is too many", nwanted);
    for (i = 0; i < ngallery; i++)
        if (gallery[i].ngroups < 1 || gallery[i].ngroups > 2 || !world__group_ok(&gallery[i].groups[0]) ||
            (gallery[i].ngroups == 2 && !world__group_ok(&gallery[i].groups[1])))
            return world__fail(AES_ERR_INVALID_ARG, "world_query_set: gallery scene %d is malformed", i);
    while (tsize < 2 * nwanted) tsize *= 2;
    /* open addressing over the queries made so far, to keep them distinct */
    table = (int *)aes_alloc(ctx, (size_t)tsize, sizeof(int));
    if (!table) return world__lib_fail(ctx, "world_query_set");
    for (i = 0; i < tsize; i++) table[i] = -1;
    rng.state = world__key(seed, 0, WORLD__STREAM_QUERIES);
    max_attempts = 50 * (int64_t)nwanted + 1000;
    for (attempt = 0; attempt < max_attempts && n < nwanted; attempt++) {
        world_query q;
        int slot, dup = 0;
        world__make_query(&rng, &gallery[world__int(&rng, ngallery)], &q);
        slot = (int)(world__query_hash(&q) & (uint64_t)(tsize - 1));
        while (table[slot] >= 0) {
            if (world__same_query(&out[table[slot]], &q)) { dup = 1; break; }
            slot = (slot + 1) & (tsize - 1);
        }
        if (dup) continue;
        out[n] = q;
        table[slot] = n++;
    }
    aes_free(table);
    *nout = n;
    return AES_OK;
}

/* ============================================================================
 *  2. `aesalign eval`
 * ========================================================================= */
typedef struct world__ev_rec { int64_t q, item; double a, b; int rank; } world__ev_rec;

struct world__ev_pair { int64_t q; size_t a0, a1, b0, b1; int prefer_b; double conf; };

/* Query or item names -> ids 0, 1, ... in order of first appearance: open
 * addressing (linear probing) over slots holding id + 1 (0 = empty). */
typedef struct world__ev_names {
    char **names;                     /* [n], owned */
    size_t n, cap;
    int64_t *slots;                   /* [nslots], nslots a power of two or 0 */
    size_t nslots;
} world__ev_names;

typedef struct world__ev {
    const char *name;
    size_t line;
    world__ev_names qn, in;           /* query names, item names */
    world__ev_rec *res, *rel, *sc;    /* result (a = score, b = aesthetic), rel (a = grade), score (a) */
    size_t nres, nrel, nsc, capres, caprel, capsc;
    double *item_aes;                 /* [in.n] after parsing */
    double *aes_val; int64_t *aes_item; size_t naes, capaes;
    int64_t *pitems; size_t npitems, cappitems;   /* pair item lists, flattened */
    struct world__ev_pair *pairs;
    size_t npairs, cappairs;
} world__ev;

static int world__ev_push(void **arr, size_t *n, size_t *cap, size_t size) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        void *p = realloc(*arr, c * size);
        if (!p) return 0;
        *arr = p;
        *cap = c;
    }
    (*n)++;
    return 1;
}

static uint64_t world__ev_hash(const char *s, size_t len) {   /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* Doubles the slots; 0 when out of memory. */
static int world__ev_grow(world__ev_names *t) {
    size_t ns = t->nslots ? t->nslots * 2 : 64, i, j;
    int64_t *slots = (int64_t *)calloc(ns, sizeof *slots);
    if (!slots) return 0;
    for (i = 0; i < t->n; i++) {
        j = (size_t)world__ev_hash(t->names[i], strlen(t->names[i])) & (ns - 1);
        while (slots[j]) j = (j + 1) & (ns - 1);
        slots[j] = (int64_t)i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 1;
}

/* Interns a query (item = 0) or item name; returns its id or -1 when out of memory. */
static int64_t world__ev_intern(world__ev *ev, const char *s, size_t len, int item) {
    world__ev_names *t = item ? &ev->in : &ev->qn;
    size_t j;
    char *name;
    if ((t->n + 1) * 4 > t->nslots * 3 && !world__ev_grow(t)) return -1;
    for (j = (size_t)world__ev_hash(s, len) & (t->nslots - 1); t->slots[j]; j = (j + 1) & (t->nslots - 1)) {
        const char *o = t->names[t->slots[j] - 1];
        if (!strncmp(o, s, len) && o[len] == 0) return t->slots[j] - 1;
    }
    if (!(name = (char *)malloc(len + 1))) return -1;
    if (!world__ev_push((void **)&t->names, &t->n, &t->cap, sizeof *t->names)) { free(name); return -1; }
    memcpy(name, s, len);
    name[len] = 0;
    t->names[t->n - 1] = name;
    t->slots[j] = (int64_t)t->n;
    return (int64_t)t->n - 1;
}

static void world__ev_names_free(world__ev_names *t) {
    size_t i;
    for (i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->slots);
}

static aes_status world__ev_num(world__ev *ev, const char *s, size_t len, double *out, const char *what) {
    char buf[64], *end;
    if (len == 0 || len >= sizeof buf)
        return world__fail(AES_ERR_FORMAT, "%s:%zu: %s is not a number", ev->name, ev->line, what);
    memcpy(buf, s, len);
    buf[len] = 0;
    *out = strtod(buf, &end);
    if (*end || *out != *out || *out - *out != 0.0)
        return world__fail(AES_ERR_FORMAT, "%s:%zu: %s '%s' is not a finite number", ev->name, ev->line, what, buf);
    return AES_OK;
}

static int world__ev_rec_cmp(const void *pa, const void *pb) {   /* by (q, item), then rank */
    const world__ev_rec *a = (const world__ev_rec *)pa, *b = (const world__ev_rec *)pb;
    if (a->q != b->q) return a->q < b->q ? -1 : 1;
    if (a->item != b->item) return a->item < b->item ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static int world__ev_rank_cmp(const void *pa, const void *pb) {  /* by (q, rank) */
    const world__ev_rec *a = (const world__ev_rec *)pa, *b = (const world__ev_rec *)pb;
    if (a->q != b->q) return a->q < b->q ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

/* The first record of query q in an array sorted by world__ev_rec_cmp. */
static size_t world__ev_lower(const world__ev_rec *arr, size_t n, int64_t q) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (arr[mid].q < q) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The record of (q, item) in an array sorted by world__ev_rec_cmp, or NULL. */
static const world__ev_rec *world__ev_find(const world__ev_rec *arr, size_t n, int64_t q, int64_t item) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (arr[mid].q < q || (arr[mid].q == q && arr[mid].item < item)) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && arr[lo].q == q && arr[lo].item == item ? &arr[lo] : NULL;
}

static void world__ev_free(world__ev *ev) {
    world__ev_names_free(&ev->qn);
    world__ev_names_free(&ev->in);
    free(ev->res); free(ev->rel); free(ev->sc); free(ev->item_aes);
    free(ev->aes_val); free(ev->aes_item); free(ev->pitems); free(ev->pairs);
}

#define WORLD__EV_MAXF 8
static aes_status world__ev_line(world__ev *ev, const char *s, size_t len) {
    const char *f[WORLD__EV_MAXF] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t fl[WORLD__EV_MAXF] = {0, 0, 0, 0, 0, 0, 0, 0};
    int nf = 0, i;
    size_t p = 0;
    aes_status st;
    double v;
    world__ev_rec r;
#define WORLD__EV_OOM world__fail(AES_ERR_NOMEM, "%s: out of memory", ev->name)
    while (nf < WORLD__EV_MAXF) {
        const char *t = (const char *)memchr(s + p, '\t', len - p);
        f[nf] = s + p;
        fl[nf] = t ? (size_t)(t - (s + p)) : len - p;
        nf++;
        if (!t) break;
        p = (size_t)(t - s) + 1;
    }
    if (nf == WORLD__EV_MAXF && memchr(f[nf - 1], '\t', fl[nf - 1]))
        return world__fail(AES_ERR_FORMAT, "%s:%zu: too many fields", ev->name, ev->line);
    for (i = 0; i < nf; i++)
        if (!fl[i]) return world__fail(AES_ERR_FORMAT, "%s:%zu: field %d is empty", ev->name, ev->line, i + 1);
    memset(&r, 0, sizeof r);
#define WORLD__IS(word) (fl[0] == strlen(word) && !memcmp(f[0], word, fl[0]))
    if (WORLD__IS("result")) {
        if (nf < 4 || nf > 6) return world__fail(AES_ERR_FORMAT, "%s:%zu: 'result' wants QUERY RANK ITEM [SCORE [AESTHETIC]]", ev->name, ev->line);
        if ((st = world__ev_num(ev, f[2], fl[2], &v, "RANK")) != AES_OK) return st;
        if (v < 1 || v > 1e9 || v != floor(v)) return world__fail(AES_ERR_FORMAT, "%s:%zu: RANK must be an integer >= 1", ev->name, ev->line);
        r.rank = (int)v;
        r.a = r.b = NAN;
        if (nf > 4 && (st = world__ev_num(ev, f[4], fl[4], &r.a, "SCORE")) != AES_OK) return st;
        if (nf > 5 && (st = world__ev_num(ev, f[5], fl[5], &r.b, "AESTHETIC")) != AES_OK) return st;
        if ((r.q = world__ev_intern(ev, f[1], fl[1], 0)) < 0 || (r.item = world__ev_intern(ev, f[3], fl[3], 1)) < 0 ||
            !world__ev_push((void **)&ev->res, &ev->nres, &ev->capres, sizeof r))
            return WORLD__EV_OOM;
        ev->res[ev->nres - 1] = r;
    } else if (WORLD__IS("rel") || WORLD__IS("score")) {
        int rel = WORLD__IS("rel");
        if (nf != 4) return world__fail(AES_ERR_FORMAT, "%s:%zu: '%s' wants QUERY ITEM %s", ev->name, ev->line, rel ? "rel" : "score", rel ? "GRADE" : "VALUE");
        if ((st = world__ev_num(ev, f[3], fl[3], &r.a, rel ? "GRADE" : "VALUE")) != AES_OK) return st;
        if (rel && (r.a < 0 || r.a > 30)) return world__fail(AES_ERR_FORMAT, "%s:%zu: GRADE must be in [0, 30]", ev->name, ev->line);
        if ((r.q = world__ev_intern(ev, f[1], fl[1], 0)) < 0 || (r.item = world__ev_intern(ev, f[2], fl[2], 1)) < 0)
            return WORLD__EV_OOM;
        if (rel) { if (!world__ev_push((void **)&ev->rel, &ev->nrel, &ev->caprel, sizeof r)) return WORLD__EV_OOM; ev->rel[ev->nrel - 1] = r; }
        else { if (!world__ev_push((void **)&ev->sc, &ev->nsc, &ev->capsc, sizeof r)) return WORLD__EV_OOM; ev->sc[ev->nsc - 1] = r; }
    } else if (WORLD__IS("aesthetic")) {
        int64_t item;
        size_t n1, c1;
        if (nf != 3) return world__fail(AES_ERR_FORMAT, "%s:%zu: 'aesthetic' wants ITEM VALUE", ev->name, ev->line);
        if ((st = world__ev_num(ev, f[2], fl[2], &v, "VALUE")) != AES_OK) return st;
        if ((item = world__ev_intern(ev, f[1], fl[1], 1)) < 0) return WORLD__EV_OOM;
        n1 = ev->naes; c1 = ev->capaes;
        if (!world__ev_push((void **)&ev->aes_val, &ev->naes, &ev->capaes, sizeof(double))) return WORLD__EV_OOM;
        if (!world__ev_push((void **)&ev->aes_item, &n1, &c1, sizeof(int64_t))) { ev->naes--; return WORLD__EV_OOM; }
        ev->aes_val[ev->naes - 1] = v;
        ev->aes_item[ev->naes - 1] = item;
    } else if (WORLD__IS("pair")) {
        struct world__ev_pair pr;
        int g;
        if (nf != 5 && nf != 6) return world__fail(AES_ERR_FORMAT, "%s:%zu: 'pair' wants QUERY ITEMS_A ITEMS_B A|B [CONFIDENCE]", ev->name, ev->line);
        memset(&pr, 0, sizeof pr);
        if ((pr.q = world__ev_intern(ev, f[1], fl[1], 0)) < 0) return WORLD__EV_OOM;
        for (g = 0; g < 2; g++) {
            const char *lst = f[2 + g];
            size_t ln = fl[2 + g], q0 = 0, start = ev->npitems;
            while (q0 <= ln) {
                const char *c = (const char *)memchr(lst + q0, ',', ln - q0);
                size_t el = c ? (size_t)(c - (lst + q0)) : ln - q0;
                int64_t item;
                if (!el) return world__fail(AES_ERR_FORMAT, "%s:%zu: empty item in a group", ev->name, ev->line);
                if ((item = world__ev_intern(ev, lst + q0, el, 1)) < 0 ||
                    !world__ev_push((void **)&ev->pitems, &ev->npitems, &ev->cappitems, sizeof(int64_t)))
                    return WORLD__EV_OOM;
                ev->pitems[ev->npitems - 1] = item;
                q0 += el + 1;
                if (!c) break;
            }
            if (g == 0) { pr.a0 = start; pr.a1 = ev->npitems; } else { pr.b0 = start; pr.b1 = ev->npitems; }
        }
        if (fl[4] == 1 && (f[4][0] == 'A' || f[4][0] == 'a')) pr.prefer_b = 0;
        else if (fl[4] == 1 && (f[4][0] == 'B' || f[4][0] == 'b')) pr.prefer_b = 1;
        else return world__fail(AES_ERR_FORMAT, "%s:%zu: the preferred group must be A or B", ev->name, ev->line);
        pr.conf = 1.0;
        if (nf == 6) {
            if ((st = world__ev_num(ev, f[5], fl[5], &pr.conf, "CONFIDENCE")) != AES_OK) return st;
            if (!(pr.conf > 0)) return world__fail(AES_ERR_FORMAT, "%s:%zu: CONFIDENCE must be > 0", ev->name, ev->line);
        }
        if (!world__ev_push((void **)&ev->pairs, &ev->npairs, &ev->cappairs, sizeof pr)) return WORLD__EV_OOM;
        ev->pairs[ev->npairs - 1] = pr;
    } else {
        return world__fail(AES_ERR_FORMAT, "%s:%zu: unknown record '%.*s' (result, rel, aesthetic, score, pair)",
                           ev->name, ev->line, (int)WORLD__MIN(fl[0], (size_t)32), f[0]);
    }
#undef WORLD__IS
#undef WORLD__EV_OOM
    return AES_OK;
}

/* The system score of (q, item): a `score` record, else the result's SCORE. */
static double world__ev_score(const world__ev *ev, const world__ev_rec *res_by_item, int64_t q, int64_t item) {
    const world__ev_rec *r = world__ev_find(ev->sc, ev->nsc, q, item);
    if (r) return r->a;
    r = world__ev_find(res_by_item, ev->nres, q, item);
    return r ? r->a : NAN;
}

WORLD_API aes_status world_eval_tsv(aes_ctx *ctx, const char *text, size_t len, const char *name, int k,
                                    world_eval_report *out) {
    world__ev ev;
    world__ev_rec *by_item = NULL;
    float *grades = NULL, *all = NULL;
    aes_pref_pair *pp = NULL;
    size_t pos = 0, i, j;
    aes_status st = AES_OK;
    if (!out || (!text && len) || k < 1) return world__fail(AES_ERR_INVALID_ARG, "world_eval_tsv: bad arguments (k %d)", k);
    memset(out, 0, sizeof *out);
    out->k = k;
    memset(&ev, 0, sizeof ev);
    ev.name = name ? name : "eval";
    while (pos < len) {
        const char *s = text + pos, *nl = (const char *)memchr(s, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - s) : len - pos;
        pos += ll + (nl ? 1 : 0);
        ev.line++;
        if (ll && s[ll - 1] == '\r') ll--;
        if (ll == 0 || s[0] == '#') continue;
        if (memchr(s, 0, ll)) { st = world__fail(AES_ERR_FORMAT, "%s:%zu: NUL byte", ev.name, ev.line); goto done; }
        if ((st = world__ev_line(&ev, s, ll)) != AES_OK) goto done;
    }
    /* item -> ground-truth aesthetic (last record wins) */
    if (!(ev.item_aes = (double *)malloc((ev.in.n ? ev.in.n : 1) * sizeof(double)))) { st = world__fail(AES_ERR_NOMEM, "out of memory"); goto done; }
    for (i = 0; i < ev.in.n; i++) ev.item_aes[i] = NAN;
    for (i = 0; i < ev.naes; i++) ev.item_aes[ev.aes_item[i]] = ev.aes_val[i];
    if (ev.nrel) qsort(ev.rel, ev.nrel, sizeof *ev.rel, world__ev_rec_cmp);
    if (ev.nsc) qsort(ev.sc, ev.nsc, sizeof *ev.sc, world__ev_rec_cmp);
    for (i = 1; i < ev.nrel; i++)
        if (ev.rel[i].q == ev.rel[i - 1].q && ev.rel[i].item == ev.rel[i - 1].item) {
            st = world__fail(AES_ERR_FORMAT, "%s: 'rel' for query '%s' item '%s' is given twice", ev.name,
                             ev.qn.names[ev.rel[i].q], ev.in.names[ev.rel[i].item]);
            goto done;
        }
    by_item = (world__ev_rec *)malloc((ev.nres ? ev.nres : 1) * sizeof *by_item);
    grades = (float *)malloc(((size_t)k + ev.nrel + 1) * sizeof(float));
    all = (float *)malloc((ev.nrel + 1) * sizeof(float));
    pp = (aes_pref_pair *)malloc((ev.npairs + 1) * sizeof *pp);
    if (!by_item || !grades || !all || !pp) { st = world__fail(AES_ERR_NOMEM, "out of memory"); goto done; }
    if (ev.nres) memcpy(by_item, ev.res, ev.nres * sizeof *by_item);
    if (ev.nres) {
        qsort(by_item, ev.nres, sizeof *by_item, world__ev_rec_cmp);
        qsort(ev.res, ev.nres, sizeof *ev.res, world__ev_rank_cmp);
    }
    for (i = 0; i < ev.nres;) {            /* one query's ranked list: res[i, j) */
        int64_t q = ev.res[i].q;
        size_t r0, r1, topn, nall = 0, nrelevant = 0, found = 0, naes = 0;
        double sum_aes = 0.0;
        for (j = i; j < ev.nres && ev.res[j].q == q; j++)
            if (j > i && ev.res[j].rank == ev.res[j - 1].rank) {
                st = world__fail(AES_ERR_FORMAT, "%s: query '%s' has rank %d twice", ev.name, ev.qn.names[q], ev.res[j].rank);
                goto done;
            }
        topn = WORLD__MIN(j - i, (size_t)k);
        out->nqueries++;
        r0 = world__ev_lower(ev.rel, ev.nrel, q);
        for (r1 = r0; r1 < ev.nrel && ev.rel[r1].q == q; r1++) {
            all[nall++] = (float)ev.rel[r1].a;
            if (ev.rel[r1].a > 0) nrelevant++;
        }
        for (j = 0; j < topn; j++) {
            const world__ev_rec *rr = &ev.res[i + j];
            const world__ev_rec *g = world__ev_find(ev.rel, ev.nrel, q, rr->item);
            double a = ev.item_aes[rr->item];
            grades[j] = g ? (float)g->a : 0.0f;
            if (g && g->a > 0) found++;
            if (a != a) a = rr->b;
            if (a == a) { sum_aes += a; naes++; }
        }
        if (nrelevant) {
            out->nrecall++;
            out->recall += (double)found / (double)nrelevant;
            out->precision += (double)found / (double)k;
            out->nndcg++;
            out->ndcg += aes_ndcg_at_k(grades, (int)topn, all, (int)nall, k);
        }
        if (naes) { out->naesthetic++; out->mean_aesthetic += sum_aes / (double)naes; }
        while (i < ev.nres && ev.res[i].q == q) i++;
    }
    if (out->nrecall) { out->recall /= out->nrecall; out->precision /= out->nrecall; out->ndcg /= out->nndcg; }
    if (out->naesthetic) out->mean_aesthetic /= out->naesthetic;
    for (i = 0; i < ev.npairs; i++) {
        const struct world__ev_pair *pr = &ev.pairs[i];
        double sa = 0.0, sb = 0.0;
        int ok = 1;
        for (j = pr->a0; j < pr->a1; j++) sa += world__ev_score(&ev, by_item, pr->q, ev.pitems[j]);
        for (j = pr->b0; j < pr->b1; j++) sb += world__ev_score(&ev, by_item, pr->q, ev.pitems[j]);
        if (sa != sa || sb != sb) ok = 0;
        if (!ok) { out->npairs_skipped++; continue; }
        pp[out->npairs].score_a = sa / (double)(pr->a1 - pr->a0);
        pp[out->npairs].score_b = sb / (double)(pr->b1 - pr->b0);
        pp[out->npairs].prefer_b = pr->prefer_b;
        pp[out->npairs].confidence = pr->conf;
        out->npairs++;
    }
    if (out->npairs && aes_hpir_agreement(ctx, pp, out->npairs, &out->agreement, &out->weighted_agreement) != AES_OK)
        st = world__lib_fail(ctx, ev.name);
done:
    free(by_item); free(grades); free(all); free(pp);
    world__ev_free(&ev);
    return st;
}

#endif /* WORLD_IMPLEMENTATION_DONE */
#endif /* WORLD_IMPLEMENTATION */
