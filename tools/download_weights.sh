#!/bin/sh
# download_weights.sh - fetch real CLIP weights and the LAION aesthetic heads.
#
#   tools/download_weights.sh [DEST]          (default DEST: weights/real)
#
# Fetches, into DEST:
#   clip-vit-base-patch32/model.safetensors, config.json, merges.txt
#       (Hugging Face openai/clip-vit-base-patch32, Hugging Face layout)
#   bpe_simple_vocab_16e6.txt.gz                  (OpenAI CLIP's merges list)
#   sa_0_4_vit_b_32_linear.pth, sa_0_4_vit_l_14_linear.pth
#                                                 (LAION aesthetic predictor v1)
#   sac+logos+ava1-l14-linearMSE.pth              (improved aesthetic predictor)
# and verifies every file's SHA-256: the LAION heads and the merges list
# against the digests pinned below; the Hugging Face files against the
# SHA-256 the Hub publishes for them (its LFS object id, asked from its API at
# the pinned revision).  Then, when PyTorch is installed, converts the .pth
# heads to safetensors with tools/convert_head.py.
#
# Nothing in the library or the tests downloads anything; this script is the
# only networked step and is never run by `make test`.  Without network, do
# the same by hand: download the files listed above from the pages named in
# weights/README.md, put them in DEST, and check them with `sha256sum -c`.
set -eu

DEST=${1:-weights/real}
HF_REPO=openai/clip-vit-base-patch32
HF_REV=${HF_REV:-main}
HF=https://huggingface.co

mkdir -p "$DEST/clip-vit-base-patch32"

fetch() { # url dest
    if [ -s "$2" ]; then echo "have  $2"; return 0; fi
    echo "fetch $1"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$2.part" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2.part" "$1"
    else
        echo "need curl or wget" >&2; exit 1
    fi
    mv "$2.part" "$2"
}

verify() { # file sha256
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then
        echo "SHA-256 MISMATCH for $1: got $got, want $2" >&2
        rm -f "$1"
        exit 1
    fi
    echo "ok    $1"
}

# Pinned digests of the published originals.
fetch https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz "$DEST/bpe_simple_vocab_16e6.txt.gz"
verify "$DEST/bpe_simple_vocab_16e6.txt.gz" 924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
LAION=https://github.com/LAION-AI/aesthetic-predictor/raw/main
fetch "$LAION/sa_0_4_vit_b_32_linear.pth" "$DEST/sa_0_4_vit_b_32_linear.pth"
verify "$DEST/sa_0_4_vit_b_32_linear.pth" c7b14cead230694acc7b9447974d3cad78003c72da032e402a303b6c2429e85f
fetch "$LAION/sa_0_4_vit_l_14_linear.pth" "$DEST/sa_0_4_vit_l_14_linear.pth"
verify "$DEST/sa_0_4_vit_l_14_linear.pth" 2cd4e60f4f24ae3bcd57b847b13c1f3ba27edc28cc1a7f9ce74ee9f421243cba
fetch "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth" \
      "$DEST/sac+logos+ava1-l14-linearMSE.pth"
verify "$DEST/sac+logos+ava1-l14-linearMSE.pth" 21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0

# Hugging Face: the Hub's tree API lists each LFS file with its SHA-256.
tree=$(curl -fsL "$HF/api/models/$HF_REPO/tree/$HF_REV" 2>/dev/null || true)
for f in model.safetensors config.json merges.txt; do
    fetch "$HF/$HF_REPO/resolve/$HF_REV/$f" "$DEST/clip-vit-base-patch32/$f"
done
want=$(printf '%s' "$tree" | tr '{' '\n' | grep '"path":"model.safetensors"' -A2 | \
       sed -n 's/.*"oid":"\([0-9a-f]\{64\}\)".*/\1/p' | head -n 1)
if [ -n "$want" ]; then
    verify "$DEST/clip-vit-base-patch32/model.safetensors" "$want"
else
    echo "warning: could not read the Hub's SHA-256 for model.safetensors; its header is still" >&2
    echo "         fully validated when aesalign loads it" >&2
fi

if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch' 2>/dev/null; then
    for h in sa_0_4_vit_b_32_linear sa_0_4_vit_l_14_linear "sac+logos+ava1-l14-linearMSE"; do
        python3 tools/convert_head.py "$DEST/$h.pth" "$DEST/$h.safetensors"
    done
else
    echo "PyTorch not installed: convert the .pth heads later with tools/convert_head.py" >&2
fi

echo
echo "Try:  build/aesalign embed --model $DEST/clip-vit-base-patch32/model.safetensors \\"
echo "        --vocab $DEST/clip-vit-base-patch32/merges.txt --text 'a photo of a cat' --normalize"
