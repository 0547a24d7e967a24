#!/bin/sh
# bench_anchors.sh [BUILD] - aesalign (fp32) against PyTorch and ONNX Runtime
# on the same weights: the ViT-B/32 image tower with random weights that
# BUILD/bench_image_tower writes (f32 safetensors, OpenAI layout).
#
#   ours          BUILD/bench_image_tower --run (aes_clip_load: weights mapped)
#   PyTorch       tools/anchor_torch.py run (eager, tools/clip_reference.py's
#                 forward pass on the file's tensors; python3-torch)
#   ONNX Runtime  tools/anchor_ort.js under node (npm's onnxruntime-node, CPU
#                 provider, all graph optimisations) on the tower exported by
#                 tools/anchor_torch.py export
#
# Every engine: 2 threads, images/s at batch 16 and ms at batch 1, each the
# median of calls over $AES_ANCHOR_SECONDS (3) seconds, in $AES_ANCHOR_ROUNDS
# (3) rounds that interleave the engines (one fresh process per engine and
# round); the table shows the medians over rounds, the ratios to ours, each
# engine's peak RSS and ISA, and the first values of one embedding (the
# same inputs everywhere: they must agree).  An engine that is not installed
# is skipped with a message; onnxruntime-node is installed under
# BUILD/ort when npm can reach its registry.  Run by `make bench`, never by
# `make test`.
set -u
BUILD=${1:-build}
SECS=${AES_ANCHOR_SECONDS:-3}
ROUNDS=${AES_ANCHOR_ROUNDS:-3}
DIR=$BUILD/anchors
OURS=$BUILD/bench_image_tower
MODEL=$DIR/vitb32_image.safetensors
ONNX=$DIR/vitb32_image.onnx
TOOLS=$(dirname "$0")

mkdir -p "$DIR" || exit 1
if [ ! -x "$OURS" ]; then
    echo "bench_anchors: $OURS is missing (make $OURS)" >&2
    exit 1
fi
# the weights come from the library's seeded initialisation: rewritten when
# the program is newer, and the ONNX export redone only if they changed
if [ ! -f "$MODEL" ] || [ "$OURS" -nt "$MODEL" ]; then
    "$OURS" --write "$MODEL.new" || exit 1
    if [ -f "$MODEL" ] && cmp -s "$MODEL.new" "$MODEL"; then
        rm -f "$MODEL.new"
        touch "$MODEL"
        [ -f "$ONNX" ] && touch "$ONNX"
    else
        mv "$MODEL.new" "$MODEL" || exit 1
        rm -f "$ONNX"
    fi
fi

# ---- which anchors are here ----------------------------------------------------
PY=
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch, numpy' >/dev/null 2>&1; then PY=$p; break; fi
done
[ -n "$PY" ] || echo "PyTorch anchor skipped: no python3 with torch and numpy (Debian: apt-get install python3-torch)"

HAVE_ORT=
if ! command -v node >/dev/null 2>&1; then
    echo "ONNX Runtime anchor skipped: no node (Debian: apt-get install nodejs npm)"
else
    NODE_PATH=$BUILD/ort/node_modules
    export NODE_PATH
    if ! node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
        if command -v npm >/dev/null 2>&1; then
            echo "installing onnxruntime-node under $BUILD/ort (CPU library only)..."
            mkdir -p "$BUILD/ort"
            # its install script would fetch GPU libraries; the CPU one is in the package
            (cd "$BUILD/ort" && ONNXRUNTIME_NODE_INSTALL=skip timeout 600 npm install --no-audit --no-fund \
                --loglevel=error onnxruntime-node >/dev/null 2>&1)
        fi
    fi
    if node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
        if [ -f "$ONNX" ] && [ ! "$MODEL" -nt "$ONNX" ]; then
            HAVE_ORT=1
        elif [ -n "$PY" ]; then
            echo "exporting the tower to ONNX (torch.onnx.export)..."
            if "$PY" "$TOOLS/anchor_torch.py" export "$MODEL" "$ONNX" >"$DIR/export.log" 2>&1; then
                HAVE_ORT=1
            else
                echo "ONNX Runtime anchor skipped: the ONNX export failed (see $DIR/export.log)"
            fi
        else
            echo "ONNX Runtime anchor skipped: exporting the model to ONNX needs python3-torch"
        fi
    else
        echo "ONNX Runtime anchor skipped: npm package onnxruntime-node is not installed and could not be (registry unreachable?)"
    fi
fi

# ---- interleaved rounds -----------------------------------------------------------
: >"$DIR/ours.txt"; : >"$DIR/torch.txt"; : >"$DIR/ort.txt"
FAILED=
one() { # engine command...
    e=$1; shift
    if out=$("$@" 2>"$DIR/$e.err"); then
        echo "$out" >>"$DIR/$e.txt"
    else
        echo "bench_anchors: the $e run failed:" >&2
        cat "$DIR/$e.err" >&2
        FAILED="$FAILED $e"
    fi
}
LOAD=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
r=1
while [ "$r" -le "$ROUNDS" ]; do
    one ours "$OURS" --run "$MODEL" "$SECS"
    [ -n "$PY" ] && one torch "$PY" "$TOOLS/anchor_torch.py" run "$MODEL" "$SECS"
    [ -n "$HAVE_ORT" ] && one ort node "$TOOLS/anchor_ort.js" "$ONNX" "$SECS"
    r=$((r + 1))
done

# the median over rounds of key in engine's lines
med() {
    sed -n "s/.*[ ^]*$2=\([^ ]*\).*/\1/p" "$DIR/$1.txt" | sort -g |
        awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
                               else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
field() { sed -n "1s/.*$2=\([^ ]*\).*/\1/p" "$DIR/$1.txt"; }

CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
case "$FLAGS" in *avx512f*) CPUISA=avx512 ;; *avx2*) CPUISA=avx2 ;; *) CPUISA=other ;; esac
echo "Anchors: ViT-B/32 image tower, random f32 weights ($(($(wc -c <"$MODEL") / 1048576)) MB), $ROUNDS interleaved rounds,"
echo "  medians of calls over $SECS s per measurement; 2 threads; $CPU, $(nproc 2>/dev/null) cores, load average $LOAD"
OIPS=$(med ours ips); OMS=$(med ours ms)
printf '  %-28s %10s %8s %9s %8s %9s  %s\n' engine "images/s@16" "ours/x" "ms@batch1" "x/ours" "peak RSS" ISA
row() { # label engine isa
    [ -s "$DIR/$2.txt" ] || return 0
    ips=$(med "$2" ips); ms=$(med "$2" ms); rss=$(med "$2" rss_mb)
    printf '  %-28s %10s %8s %9s %8s %6s MB  %s\n' "$1" "$ips" \
        "$(awk -v a="$OIPS" -v b="$ips" 'BEGIN {printf "%.2f", a / b}')" "$ms" \
        "$(awk -v a="$ms" -v b="$OMS" 'BEGIN {printf "%.2f", a / b}')" "$rss" "$3"
}
row "aesalign (fp32)" ours "$(field ours isa)"
[ -n "$PY" ] && row "PyTorch $("$PY" -c 'import torch; print(torch.__version__)') (eager)" torch "$(field torch isa)"
[ -n "$HAVE_ORT" ] && row "ONNX Runtime $(field ort version) (node)" ort "MLAS, runtime dispatch ($CPUISA CPU)"
printf '  embedding[0][0:3], same input:'
for e in ours torch ort; do [ -s "$DIR/$e.txt" ] && printf ' %s %s' "$e" "$(field $e emb)"; done
echo
[ -z "$FAILED" ] || { echo "bench_anchors: failed:$FAILED" >&2; exit 1; }
exit 0
