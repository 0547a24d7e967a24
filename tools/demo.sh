#!/bin/sh
# tools/demo.sh - the whole method offline, on the synthetic aesthetic world
# (`aesalign world`, tools/world.h).
#
#   sh tools/demo.sh demo        the real run (`make demo`): a 2,000-scene gallery,
#                                the shipped weights, the table, demo.html, ELTA
#   sh tools/demo.sh smoke       the same on a 600-scene gallery, machine-readable
#                                lines "metric<TAB>way<TAB>value" (make test reads them)
#   sh tools/demo.sh reproduce   builds weights/ from scratch: world -> train-bpe ->
#                                train-clip -> train-head (ELTA) -> index + make-pairs ->
#                                finetune-dpo of the vision tower
#
# Environment:
#   AES_CLI          the aesalign binary (default build/aesalign)
#   AES_DEMO_DIR     where everything is written (default demo/, gitignored)
#   AES_WEIGHTS      the weights folder read by demo/smoke, written by reproduce
#                    (default weights/)
#   AES_THREADS      threads (default: every core)
#   AES_SMOKE_SCENES, AES_SMOKE_QUERIES, AES_SMOKE_HEAD_SCENES, AES_SMOKE_MIN_RELEVANT
#                    smoke sizes: gallery (600), its queries (40), the world the
#                    aesthetic heads of the ELTA comparison train on (1000), the
#                    fully relevant scenes a query needs in the gallery (5)
#
# Outputs: OUT/gallery (world), OUT/eval (indexes, search results, metrics),
# OUT/headtrain (the head-training world), OUT/demo.html + OUT/thumbs (the page),
# OUT/reproduce (everything reproduce makes before copying it to weights/).
#
# Nothing is downloaded.  The gallery and its queries come from another world
# seed than the training data, so every query is held out.
set -eu

MODE=${1:-demo}
CLI=${AES_CLI:-build/aesalign}
OUT=${AES_DEMO_DIR:-demo}
WEIGHTS=${AES_WEIGHTS:-weights}

# --- the settings the shipped weights were made with (weights/README.md) ------------
TRAIN_SEED=11          # world seed of all training data
TRAIN_SCENES=20000
TRAIN_QUERIES=300
BPE_MERGES=1000
CLIP_SHAPE="--width 64 --layers 3 --heads 2 --patch 8 --text-width 64 --text-layers 2 --text-heads 2 --embed 64 --context 32"
CLIP_STEPS=400
CLIP_BATCH=768       # large batches: enough in-batch negatives that differ only in shape
CLIP_LR=1.5e-3
HEAD_OPTS="--head mlp --epochs 20"
DPO_OPTS="--steps 400 --batch 32 --lr 1e-4 --beta 0.1 --lambda 0.5"
PAIR_OPTS="--k 48 --rows 4 --cols 4 --stride 2 --expand template --rows-from cosine"  # the shipped weights: rows in cosine order

# --- the demo's settings ------------------------------------------------------------------
GALLERY_SEED=2024
MIN_RELEVANT=10        # demo queries have at least this many fully relevant gallery scenes
EXPAND_OPTS="--expand template"
RERANK_OPTS="--aesthetic-weight 0.1 --candidates 50"
TOL=0.02               # nDCG@10 may drop by at most this much (absolute)
WAYS="plain expand rerank both dpo"

die() { echo "demo.sh: $*" >&2; exit 1; }
now() { date +%s; }
log() { echo "== $*" >&2; }

[ -x "$CLI" ] || die "no CLI at $CLI (run make first, or set AES_CLI)"

way_label() {
    case $1 in
        plain)  echo "(a) plain retrieval" ;;
        expand) echo "(b) expanded query only" ;;
        rerank) echo "(c) aesthetic re-ranking only" ;;
        both)   echo "(d) expanded query + re-ranking" ;;
        dpo)    echo "(e) DPO-fine-tuned encoder alone" ;;
    esac
}

# One sentence per metric (the table's footnote, the page, the README say the same).
metric_help() { # npairs
    echo "P@10 (precision@10): the fraction of the top 10 that is fully relevant (every attribute of the query matches)."
    echo "R@10 (recall@10): the fraction of the query's fully relevant scenes that are in the top 10."
    echo "nDCG (nDCG@10): rank-weighted relevance of the top 10, partly relevant = 1, fully = 2, 1.0 = the best possible order."
    echo "aes@10: the mean ground-truth aesthetic score (1-10) of the top 10."
    echo "HPIR: how often the way's scores prefer the better-looking of two groups of 3 fully relevant scenes ($1 pairs; 0.5 = chance)."
}

# scenes.tsv -> labels CSV for embed-dataset: path,score,h1..h10
labels_csv() { # scenes.tsv out.csv
    awk -F'\t' 'NR == 1 { print "path,score,h1,h2,h3,h4,h5,h6,h7,h8,h9,h10"; next }
                { printf "%s,%s", $2, $7; for (k = 8; k <= 17; k++) printf ",%s", $k; printf "\n" }' "$1" > "$2"
}

# queries.tsv -> "QID<TAB>text" lines for search --queries / plain text lines for make-pairs
query_list() { awk -F'\t' 'NR > 1 { print $1 "\t" $2 }' "$1"; }

# ---------------------------------------------------------------------------------------
#  evaluation: search three ways, then `aesalign eval` on results + ground truth
# ---------------------------------------------------------------------------------------

# Ground truth records for `aesalign eval` (items are scene ids): relevance,
# aesthetic, and HPIR-style pairs.  A pair: two disjoint groups of 3 fully
# relevant scenes of one query; "people" prefer the group with the higher mean
# ground-truth score, confidence = the difference of the means.
ground_truth() { # world_dir out
    awk -F'\t' '
        FNR == 1 { file++; next }
        file == 1 { print "aesthetic\t" $1 "\t" $7; score[$1] = $7; next }
        file == 2 { print "rel\t" $1 "\t" $2 "\t" $3
                    if ($3 == 2) { n[$1]++; item[$1, n[$1]] = $2 } }
        END {
            for (q in n) {
                for (p = 0; p < 3 && 6 * (p + 1) <= n[q]; p++) {
                    a = ""; b = ""; sa = 0; sb = 0
                    for (j = 1; j <= 3; j++) {
                        x = item[q, 6 * p + j]; y = item[q, 6 * p + 3 + j]
                        a = a (j > 1 ? "," : "") x; sa += score[x]
                        b = b (j > 1 ? "," : "") y; sb += score[y]
                    }
                    if (sa == sb) continue
                    d = (sa - sb) / 3; if (d < 0) d = -d
                    printf "pair\t%s\t%s\t%s\t%s\t%.4f\n", q, a, b, (sa > sb ? "A" : "B"), d
                }
            }
        }' "$1/scenes.tsv" "$1/qrels.tsv" > "$2"
}

# search --queries output -> records with scene ids as items.
# $2 = result (top-K list) or score (every item's system score, for the pairs).
to_records() { # kind < search output
    awk -F'\t' -v kind="$1" '$1 == "result" {
        it = $4; sub(/.*\//, "", it); sub(/\.[a-z]*$/, "", it); it = it + 0
        if (kind == "result") print "result\t" $2 "\t" $3 "\t" it "\t" $5
        else print "score\t" $2 "\t" it "\t" $5 }'
}

# One way: NAME INDEX MODEL SEARCH_OPTIONS...
run_way() {
    name=$1; idx=$2; model=$3; shift 3
    "$CLI" search --index "$idx" --model "$model" --queries "$E/queries.txt" --k 10 "$@" 2>/dev/null \
        | tee "$E/$name.search.tsv" | to_records result > "$E/$name.eval.tsv" || die "search ($name) failed"
    # the system's score of every gallery item, for the HPIR-style pairs
    "$CLI" search --index "$idx" --model "$model" --queries "$E/queries.txt" --k "$N" --candidates "$N" "$@" \
        2>/dev/null | to_records score >> "$E/$name.eval.tsv" || die "search ($name, all items) failed"
    # recall and precision count the fully relevant scenes (grade 2); nDCG uses both grades
    { grep '^result' "$E/$name.eval.tsv"; awk -F'\t' '$1 != "rel" || $4 == 2' "$E/truth.tsv"; } > "$E/$name.eval_full.tsv"
    cat "$E/truth.tsv" >> "$E/$name.eval.tsv"
    { "$CLI" eval --k 10 "$E/$name.eval.tsv" | grep -v '^recall\|^precision'
      "$CLI" eval --k 10 "$E/$name.eval_full.tsv" | grep '^recall\|^precision'; } > "$E/$name.metrics.txt" || die "eval ($name) failed"
}

# Which attributes a way's top 10 gets right: of all top-10 results, the fraction
# whose scene has a group of the query's colour, one of its shape, one of both;
# of those with both, the fraction with the query's count, and with its size (for
# queries that name a size); of the results of queries that name a background,
# the fraction on it.  Chance for shape is about 1/6 (2/6 for two-group scenes).
attributes() { # world_dir search_output
    awk -F'\t' '
        function sing(w) { if (w == "crosses") return "cross"; sub(/s$/, "", w); return w }
        function num(w) { return w == "a" ? 1 : w == "two" ? 2 : w == "three" ? 3 : 0 }
        FNR == 1 { file++; if (file < 3) next }
        file == 1 { for (g = 0; g < 2; g++) { c[$1, g] = $(20 + 5 * g); sz[$1, g] = $(21 + 5 * g)
                                               col[$1, g] = $(22 + 5 * g); shp[$1, g] = $(23 + 5 * g) }
                    bg[$1] = $19; ng[$1] = $24 == "-" ? 1 : 2; next }
        file == 2 { n = split($2, w, " "); i = 1; qc[$1] = num(w[i++]); qs[$1] = ""
                    if (w[i] ~ /^(small|medium|large)$/) qs[$1] = w[i++]
                    qcol[$1] = w[i++]; qshp[$1] = sing(w[i++]); qbg[$1] = ""
                    for (j = i; j <= n; j++) if (w[j] == "background") qbg[$1] = w[j - 1]
                    next }
        $1 == "result" {
            q = $2; it = $4; sub(/.*\//, "", it); sub(/\.[a-z]*$/, "", it); it += 0
            hc = hs = 0; m = -1
            for (g = 0; g < ng[it]; g++) {
                hc += col[it, g] == qcol[q]; hs += shp[it, g] == qshp[q]
                if (col[it, g] == qcol[q] && shp[it, g] == qshp[q]) m = g
            }
            n_all++; n_c += hc > 0; n_s += hs > 0
            if (m >= 0) { n_cs++; n_count += c[it, m] == qc[q]; if (qs[q] != "") { n_sq++; n_size += sz[it, m] == qs[q] } }
            if (qbg[q] != "") { n_bq++; n_bg += bg[it] == qbg[q] }
        }
        END {
            printf "colour %.2f  shape %.2f  colour+shape %.2f  | of those: count %.2f  size %.2f  | background %.2f\n",
                n_c / n_all, n_s / n_all, n_cs / n_all, n_cs ? n_count / n_cs : 0, n_sq ? n_size / n_sq : 0,
                n_bq ? n_bg / n_bq : 0
        }' "$1/scenes.tsv" "$1/queries.tsv" "$2"
}

metric() { # file name
    awk -F'\t' -v m="$2" '$1 == m { print $2 }' "$1"
}

# ELTA on the long-tailed test set: heads trained on the shipped CLIP's embeddings of a
# training world (without / with ELTA), evaluated on the gallery's embeddings.
elta_eval() { # train_world test_world ntrain
    tw=$1; gw=$2
    labels_csv "$tw/scenes.tsv" "$E/train_labels.csv"
    labels_csv "$gw/scenes.tsv" "$E/test_labels.csv"
    "$CLI" embed-dataset --model "$WEIGHTS/clip.safetensors" --images "$tw" --labels "$E/train_labels.csv" \
        --out "$E/train_emb" --batch 64 >/dev/null 2>&1 || die "embed-dataset (train) failed"
    "$CLI" embed-dataset --model "$WEIGHTS/clip.safetensors" --images "$gw" --labels "$E/test_labels.csv" \
        --out "$E/test_emb" --batch 64 >/dev/null 2>&1 || die "embed-dataset (test) failed"
    for v in base elta; do
        flag=""; [ $v = elta ] && flag="--elta"
        # shellcheck disable=SC2086
        "$CLI" train-head --features "$E/train_emb.safetensors" --labels "$E/train_emb.csv" --out "$E/head_$v.safetensors" \
            $HEAD_OPTS $flag --quiet >/dev/null 2>&1 || die "train-head ($v) failed"
        "$CLI" eval-head --head "$E/head_$v.safetensors" --features "$E/test_emb.safetensors" --labels "$E/test_emb.csv" \
            --split-labels "$E/train_emb.csv" | tr ' ' '\t' > "$E/elta_$v.txt" || die "eval-head ($v) failed"
    done
}

# The HTML page: a summary chart of the metrics of every way (inline SVG), the
# metrics' meaning, then for the queries where the ways differ most the top 6
# of each way side by side, each image with its aesthetic score and relevance.
write_page() { # page world_dir
    page=$1; gw=$2
    rm -rf "$OUT/thumbs"; mkdir -p "$OUT/thumbs"
    : > "$E/page_items.txt"
    {
        for w in $WAYS; do
            f=$E/$w.metrics.txt
            printf 'way\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $w "$(way_label $w)" "$(metric "$f" precision@10)" \
                "$(metric "$f" recall@10)" "$(metric "$f" ndcg@10)" "$(metric "$f" mean_aesthetic@10)" \
                "$(metric "$f" hpir_agreement)"
        done
        metric_help "$(awk -F'\t' '$1 == "hpir_weighted" { sub(/^\(/, "", $3); sub(/ .*/, "", $3); print $3 }' \
            "$E/plain.metrics.txt")" | sed 's/^/help\t/'
    } > "$E/page_summary.tsv"
    awk -F'\t' -v nq=8 -v items="$E/page_items.txt" -v dir="$gw/images" -v nways=5 '
        function esc(x) { gsub(/&/, "\\&amp;", x); gsub(/</, "\\&lt;", x); gsub(/"/, "\\&quot;", x); return x }
        FNR == 1 { file++ }
        file == 1 { if ($1 == "way") { nw++; wid[nw] = $2; wname[nw] = $3; for (m = 1; m <= 5; m++) val[nw, m] = $(3 + m) }
                    else if ($1 == "help") help[++nh] = $2
                    next }
        file == 2 && FNR > 1 { score[$1] = $7; cap[$1] = $3; next }
        file == 3 && FNR > 1 { text[$1] = $2; nrel[$1] = $4; next }
        file == 4 && FNR > 1 { rel[$1, $2] = $3; next }
        file >= 5 && $1 == "result" && $3 <= 6 { w = file - 4; top[w, $2, $3] = $4; sa[w, $2] += score[$4]; na[w, $2]++; next }
        END {
            print "<!doctype html><html><head><meta charset=\"utf-8\"><title>aesalign offline demo</title>"
            print "<style>body{font-family:sans-serif;margin:1em;max-width:1100px}td{text-align:center;font-size:11px;padding:3px}"
            print "img{width:80px;height:80px;image-rendering:pixelated}.r2{outline:3px solid #2a2}.r1{outline:3px solid #da2}"
            print ".r0{outline:3px solid #d22}th{text-align:left;padding-right:1em;font-size:12px;font-weight:normal}"
            print "li{font-size:13px}</style></head><body>"
            print "<h1>aesalign: aesthetics-aware retrieval on the synthetic world</h1>"
            print "<p>Held-out queries on a gallery the models never saw, five ways of searching it.</p>"
            # the summary chart: one panel per metric, one bar per way
            mname[1] = "precision@10"; mname[2] = "recall@10"; mname[3] = "nDCG@10"; mname[4] = "aesthetic@10"; mname[5] = "HPIR"
            colour[1] = "#888"; colour[2] = "#6a9fd8"; colour[3] = "#e0a030"; colour[4] = "#d0602a"; colour[5] = "#4a9a5a"
            pw = 200; ph = 170; bw = 28
            printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", 5 * pw + 10, ph + 60
            for (m = 1; m <= 5; m++) {
                lo = 0; hi = 1
                if (m == 4) {       # aesthetic on its 1-10 scale, zoomed to the values
                    lo = 10; hi = 1
                    for (w = 1; w <= nw; w++) { if (val[w, m] < lo) lo = val[w, m]; if (val[w, m] > hi) hi = val[w, m] }
                    lo = int(lo - 0.5); hi = int(hi + 1)
                }
                x0 = (m - 1) * pw + 10
                printf "<text x=\"%d\" y=\"14\" font-weight=\"bold\">%s%s</text>\n", x0, mname[m], m == 4 ? " (axis " lo "-" hi ")" : ""
                printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", x0, 20 + ph - 20, x0 + nw * (bw + 6), 20 + ph - 20
                for (w = 1; w <= nw; w++) {
                    v = val[w, m] + 0; f = (v - lo) / (hi - lo); if (f < 0) f = 0; if (f > 1) f = 1
                    h = f * (ph - 40); x = x0 + (w - 1) * (bw + 6); y = 20 + ph - 20 - h
                    printf "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>%s: %s %.3f</title></rect>\n", x, y, bw, h, colour[w], esc(wname[w]), mname[m], v
                    printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"9\">%.2f</text>\n", x + bw / 2, y - 3, v
                    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x + bw / 2, 20 + ph - 6, substr(wname[w], 1, 3)
                }
            }
            for (w = 1; w <= nw; w++)
                printf "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n", 10 + (w - 1) * 200, ph + 30, colour[w], 24 + (w - 1) * 200, ph + 39, esc(wname[w])
            print "</svg>"
            print "<ul>"; for (i = 1; i <= nh; i++) printf "<li>%s</li>\n", esc(help[i]); print "</ul>"
            print "<p>Below, the queries where the ways differ most (largest spread of the mean aesthetic score of their top 6) first.  Frame: green = fully relevant, orange = partly, red = not relevant.  Under each image: its ground-truth aesthetic score (1-10) and relevance (2 / 1 / 0).  Hover for the caption.</p>"
            # order: queries with >= 6 fully relevant scenes, by the spread of mean aesthetic@6 over the ways
            n = 0
            for (q in text) {
                if (nrel[q] < 6) continue
                mn = 99; mx = -99
                for (w = 1; w <= nw; w++) { a = na[w, q] ? sa[w, q] / na[w, q] : 0; if (a < mn) mn = a; if (a > mx) mx = a }
                n++; qs[n] = q; spread[q] = mx - mn
            }
            for (i = 2; i <= n; i++)       # insertion sort: spread descending, then query id
                for (j = i; j > 1 && (spread[qs[j]] > spread[qs[j - 1]] || (spread[qs[j]] == spread[qs[j - 1]] && qs[j] + 0 < qs[j - 1] + 0)); j--) { t = qs[j]; qs[j] = qs[j - 1]; qs[j - 1] = t }
            for (i = 1; i <= n && i <= nq; i++) {
                q = qs[i]
                printf "<h3>%s <small>(%d fully relevant in the gallery; spread %.2f)</small></h3><table>\n", esc(text[q]), nrel[q], spread[q]
                for (w = 1; w <= nw; w++) {
                    printf "<tr><th>%s</th>", esc(wname[w])
                    for (r = 1; r <= 6; r++) {
                        it = top[w, q, r]; if (it == "") continue
                        g = ((q, it) in rel) ? rel[q, it] : 0
                        printf "<td><img class=\"r%d\" src=\"thumbs/%06d.bmp\" title=\"%s\"><br>%.2f &middot; %d</td>", g, it, esc(cap[it]), score[it], g
                        printf "%s/%06d.ppm\n", dir, it > items
                    }
                    print "</tr>"
                }
                print "</table>"
            }
            print "</body></html>"
        }' "$E/page_summary.tsv" "$gw/scenes.tsv" "$gw/queries.tsv" "$gw/qrels.tsv" \
        "$E/plain.eval.tsv" "$E/expand.eval.tsv" "$E/rerank.eval.tsv" "$E/both.eval.tsv" "$E/dpo.eval.tsv" \
        > "$page.tmp" && mv "$page.tmp" "$page"
    sort -u "$E/page_items.txt" | xargs "$CLI" to-bmp --out "$OUT/thumbs" || die "to-bmp failed"
}

evaluate() { # gallery_scenes gallery_queries head_training_scenes min_relevant machine(0|1)
    n=$1; nq=$2; nh=$3; minrel=$4; machine=$5
    t0=$(now)
    G=$OUT/gallery
    E=$OUT/eval
    mkdir -p "$E"
    rm -rf "$G"
    log "gallery: $n scenes, $nq queries, world seed $GALLERY_SEED"
    "$CLI" world --out "$G" --n "$n" --queries "$nq" --seed $GALLERY_SEED --min-relevant "$minrel" >/dev/null 2>&1 \
        || die "world failed"
    N=$n
    query_list "$G/queries.tsv" > "$E/queries.txt"
    ground_truth "$G" "$E/truth.tsv"
    log "indexing with the shipped CLIP + aesthetic head, and with the DPO-fine-tuned CLIP"
    rm -f "$E/gallery.idx" "$E/gallery_dpo.idx"
    "$CLI" index build --model "$WEIGHTS/clip.safetensors" --head "$WEIGHTS/head_elta.safetensors" --out "$E/gallery.idx" \
        --storage f32 --batch 64 --quiet "$G/images" 2>/dev/null || die "index build failed"
    "$CLI" index build --model "$WEIGHTS/clip_dpo.safetensors" --head "$WEIGHTS/head_elta.safetensors" \
        --out "$E/gallery_dpo.idx" --storage f32 --batch 64 --quiet "$G/images" 2>/dev/null || die "index build (DPO) failed"
    log "searching five ways"
    # shellcheck disable=SC2086
    run_way plain "$E/gallery.idx" "$WEIGHTS/clip.safetensors" --aesthetic-weight 0
    # shellcheck disable=SC2086
    run_way expand "$E/gallery.idx" "$WEIGHTS/clip.safetensors" $EXPAND_OPTS --aesthetic-weight 0
    # shellcheck disable=SC2086
    run_way rerank "$E/gallery.idx" "$WEIGHTS/clip.safetensors" $RERANK_OPTS
    # shellcheck disable=SC2086
    run_way both "$E/gallery.idx" "$WEIGHTS/clip.safetensors" $EXPAND_OPTS $RERANK_OPTS
    run_way dpo "$E/gallery_dpo.idx" "$WEIGHTS/clip_dpo.safetensors" --aesthetic-weight 0
    log "ELTA: heads on the shipped CLIP's embeddings of a training world, tested on the gallery"
    tw=$OUT/headtrain
    if [ ! -f "$tw/scenes.tsv" ] || [ "$(wc -l < "$tw/scenes.tsv")" -ne $((nh + 1)) ]; then
        rm -rf "$tw"
        "$CLI" world --out "$tw" --n "$nh" --queries 1 --seed $TRAIN_SEED >/dev/null 2>&1 || die "world (head training) failed"
    fi
    elta_eval "$tw" "$G"
    if [ "$machine" = 1 ]; then
        for w in $WAYS; do
            f=$E/$w.metrics.txt
            printf 'precision@10\t%s\t%s\n' $w "$(metric "$f" precision@10)"
            printf 'recall@10\t%s\t%s\n' $w "$(metric "$f" recall@10)"
            printf 'mean_aesthetic@10\t%s\t%s\n' $w "$(metric "$f" mean_aesthetic@10)"
            printf 'ndcg@10\t%s\t%s\n' $w "$(metric "$f" ndcg@10)"
            printf 'hpir\t%s\t%s\n' $w "$(metric "$f" hpir_agreement)"
        done
        for v in base elta; do
            for m in srcc plcc mae head_mae medium_mae tail_mae; do
                printf '%s\t%s\t%s\n' $m $v "$(metric "$E/elta_$v.txt" $m)"
            done
        done
        printf 'tolerance\tndcg@10\t%s\n' $TOL
        printf 'seconds\tall\t%s\n' $(($(now) - t0))
        return 0
    fi
    write_page "$OUT/demo.html" "$G"
    echo
    echo "aesalign offline demo: $n-scene gallery (world seed $GALLERY_SEED), $(wc -l < "$E/queries.txt") held-out queries,"
    echo "shipped weights from $WEIGHTS/ (tiny CLIP trained from scratch on world seed $TRAIN_SEED; see $WEIGHTS/README.md)"
    echo
    printf '%-36s %6s %6s %6s %6s %6s\n' "way" "P@10" "R@10" "nDCG" "aes@10" "HPIR"
    for w in $WAYS; do
        f=$E/$w.metrics.txt
        printf '%-36s %6.3f %6.3f %6.3f %6.3f %6.3f\n' "$(way_label $w)" "$(metric "$f" precision@10)" \
            "$(metric "$f" recall@10)" "$(metric "$f" ndcg@10)" "$(metric "$f" mean_aesthetic@10)" "$(metric "$f" hpir_agreement)"
    done
    np=$(awk -F'\t' '$1 == "hpir_weighted" { sub(/^\(/, "", $3); sub(/ .*/, "", $3); print $3 }' "$E/plain.metrics.txt")
    metric_help "$np" | sed 's/^/  /'
    echo
    echo "What the top 10 of plain retrieval gets right (fractions of all results; chance for shape is about 0.2):"
    echo "  $(attributes "$G" "$E/plain.search.tsv")"
    echo
    echo "ELTA on the long-tailed test set (the gallery's scores; head/tail bins from the training labels):"
    printf '%-22s %7s %7s %8s %9s %9s %9s\n' "aesthetic head" SRCC PLCC MAE "head MAE" "mid MAE" "tail MAE"
    for v in base elta; do
        f=$E/elta_$v.txt
        label="MLP, EMD"; [ $v = elta ] && label="MLP, EMD + ELTA"
        printf '%-22s %7.4f %7.4f %8.4f %9.4f %9.4f %9.4f\n' "$label" "$(metric "$f" srcc)" "$(metric "$f" plcc)" \
            "$(metric "$f" mae)" "$(metric "$f" head_mae)" "$(metric "$f" medium_mae)" "$(metric "$f" tail_mae)"
    done
    printf 'per-bin MAE  %s\n' "bin:     1      2      3      4      5      6      7      8      9     10"
    for v in base elta; do
        f=$E/elta_$v.txt
        printf '%-12s     ' $v
        for b in 1 2 3 4 5 6 7 8 9 10; do
            x=$(metric "$f" mae_bin$b); case $x in ''|nan|-nan|NaN) printf '%7s' '-' ;; *) printf '%7.3f' "$x" ;; esac
        done
        echo
    done
    printf 'groups           '; metric "$E/elta_base.txt" groups
    printf 'test count       '; for b in 1 2 3 4 5 6 7 8 9 10; do printf '%7s' "$(metric "$E/elta_base.txt" count_bin$b)"; done; echo
    echo
    echo "page: $OUT/demo.html (open it in a browser; nothing is fetched)"
    echo "time: $(($(now) - t0)) s"
}

# ---------------------------------------------------------------------------------------
#  reproduce: weights/ from scratch
# ---------------------------------------------------------------------------------------
reproduce() {
    t0=$(now)
    R=$OUT/reproduce
    mkdir -p "$R/clip" "$R/dpo" "$WEIGHTS"
    log "1/7 training world: $TRAIN_SCENES scenes, $TRAIN_QUERIES queries, seed $TRAIN_SEED"
    [ -f "$R/world/scenes.tsv" ] || "$CLI" world --out "$R/world" --n $TRAIN_SCENES --queries $TRAIN_QUERIES \
        --seed $TRAIN_SEED >/dev/null 2>&1 || die "world failed"
    log "2/7 BPE on the captions"
    "$CLI" train-bpe --text "$R/world/scenes.tsv" --skip-header --column 3 --column 4 --column 5 --column 6 \
        --merges $BPE_MERGES --out "$R/merges.txt" || die "train-bpe failed"
    # one caption per image, the four phrasings in turn
    awk -F'\t' -v d="$R/world" 'NR > 1 { c = 3 + (NR % 4); print d "/" $2 "\t" $c }' "$R/world/scenes.tsv" > "$R/captions.tsv"
    log "3/7 contrastive CLIP from scratch"
    # shellcheck disable=SC2086
    [ -f "$R/clip/clip.safetensors" ] || "$CLI" train-clip --data "$R/captions.tsv" --vocab "$R/merges.txt" \
        --out "$R/clip/clip.safetensors" $CLIP_SHAPE --steps $CLIP_STEPS --batch $CLIP_BATCH --lr $CLIP_LR --seed 1 \
        --log-every 100 || die "train-clip failed"
    cp "$R/merges.txt" "$R/clip/merges.txt"
    log "4/7 aesthetic head with ELTA on the CLIP's embeddings"
    labels_csv "$R/world/scenes.tsv" "$R/labels.csv"
    "$CLI" embed-dataset --model "$R/clip/clip.safetensors" --images "$R/world" --labels "$R/labels.csv" \
        --out "$R/emb" --batch 64 || die "embed-dataset failed"
    # shellcheck disable=SC2086
    "$CLI" train-head --features "$R/emb.safetensors" --labels "$R/emb.csv" --out "$R/head_elta.safetensors" \
        $HEAD_OPTS --elta --quiet || die "train-head failed"
    log "5/7 index of the training world + DPO pairs from its queries"
    rm -f "$R/train.idx"
    "$CLI" index build --model "$R/clip/clip.safetensors" --head "$R/head_elta.safetensors" --out "$R/train.idx" \
        --storage f32 --batch 64 --quiet "$R/world/images" || die "index build failed"
    awk -F'\t' 'NR > 1 { print $2 }' "$R/world/queries.tsv" > "$R/queries.txt"
    # shellcheck disable=SC2086
    "$CLI" make-pairs --index "$R/train.idx" --model "$R/clip/clip.safetensors" --queries "$R/queries.txt" \
        --out "$R/pairs.tsv" $PAIR_OPTS || die "make-pairs failed"
    log "6/7 DPO fine-tuning of the vision tower"
    # shellcheck disable=SC2086
    "$CLI" finetune-dpo --model "$R/clip/clip.safetensors" --pairs "$R/pairs.tsv" --captions "$R/captions.tsv" \
        --out "$R/clip/clip_dpo.safetensors" --train vision $DPO_OPTS --seed 1 --log-every 25 || die "finetune-dpo failed"
    log "7/7 weights -> $WEIGHTS/"
    cp "$R/clip/clip.safetensors" "$R/clip/clip_dpo.safetensors" "$R/clip/config.json" "$R/merges.txt" \
        "$R/head_elta.safetensors" "$WEIGHTS/"
    echo "reproduce: done in $(($(now) - t0)) s; $WEIGHTS/:"
    ls -l "$WEIGHTS"
}

case $MODE in
    demo)
        for f in clip.safetensors clip_dpo.safetensors config.json merges.txt head_elta.safetensors; do
            [ -f "$WEIGHTS/$f" ] || die "missing $WEIGHTS/$f (sh tools/demo.sh reproduce builds it)"
        done
        evaluate 2000 200 2000 $MIN_RELEVANT 0 ;;
    smoke)
        evaluate "${AES_SMOKE_SCENES:-600}" "${AES_SMOKE_QUERIES:-40}" "${AES_SMOKE_HEAD_SCENES:-1000}" \
            "${AES_SMOKE_MIN_RELEVANT:-5}" 1 ;;
    reproduce) reproduce ;;
    *) die "usage: sh tools/demo.sh demo|smoke|reproduce" ;;
esac
