#!/usr/bin/python3
"""ref_preprocess.py - PIL reference results for aesalign's image code.

Writes tests/fixtures/io/:
  * a few synthetic, photo-like test images (gradients, waves, hard-edged
    shapes, 1-pixel stripes, noise) as binary PPM/PGM;
  * small PNM variants (ASCII, comments, maxval 15/100/1000/65535) and the
    pixels PIL decodes from them;
  * PIL's Image.resize(..., BICUBIC) of the images at several sizes
    (shrinking, enlarging, one axis only, non-integer factors);
  * CLIP preprocessing as OpenAI's clip._transform does it -- torchvision's
    Resize(n, BICUBIC), CenterCrop(n), convert("RGB"), ToTensor, Normalize --
    reproduced with PIL + numpy because torchvision is not installed here:
    full float32 tensors at size 32, and at size 224 (to keep the fixtures
    small) an FNV-1a hash of the whole tensor plus 512 sampled values;
  * manifest.txt, which tests/test_io.c reads.

Run with Debian's python (python3-pil, python3-numpy):
    /usr/bin/python3 tools/ref_preprocess.py
The output is deterministic; rerunning rewrites identical files.
"""
import os
import struct
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "io")

# OpenAI CLIP's normalisation (clip/clip.py, _transform)
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

BICUBIC = getattr(Image, "Resampling", Image).BICUBIC


def synth(w, h, seed, gray=False):
    """A deterministic photo-like image: smooth gradients and waves, a
    hard-edged rectangle and disc (ringing and clamping of the cubic's
    negative lobes), a band of 1-pixel stripes (what antialiasing is for),
    saturated corners and Gaussian noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    img = np.empty((h, w, 3))
    img[..., 0] = 255 * u
    img[..., 1] = 255 * v
    img[..., 2] = 127.5 + 127.5 * np.sin(2 * np.pi * (3 * u + 2 * v))
    r0, r1, c0, c1 = int(0.2 * h), int(0.55 * h), int(0.15 * w), int(0.5 * w)
    img[r0:r1, c0:c1] = rng.integers(0, 256, 3)
    disc = (x - 0.7 * w) ** 2 + (y - 0.6 * h) ** 2 < (0.18 * min(w, h)) ** 2
    img[disc] = (250, 250, 20)
    band = (y > 0.75 * h) & (y < 0.9 * h)
    img[band] = np.where((x[band].astype(int) % 2 == 0)[:, None], 0.0, 255.0)
    img += rng.normal(0, 10, img.shape)
    img[: max(h // 10, 1), : max(w // 10, 1)] = 255
    img[-max(h // 10, 1):, -max(w // 10, 1):] = 0
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if gray:
        img = np.clip(np.rint(img.astype(np.float64) @ [0.299, 0.587, 0.114]), 0, 255).astype(np.uint8)
    return img


def pnm_bytes(arr):
    if arr.ndim == 2:
        return b"P5\n%d %d\n255\n" % (arr.shape[1], arr.shape[0]) + arr.tobytes()
    return b"P6\n%d %d\n255\n" % (arr.shape[1], arr.shape[0]) + arr.tobytes()


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def load(name):
    im = Image.open(os.path.join(OUT, name))
    im.load()
    return im


def clip_preprocess(im, size):
    """clip._transform(size) on a PIL image, torchvision semantics by hand."""
    # Resize(size): shorter side -> size, longer -> int(size * long / short)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), BICUBIC)
    # CenterCrop(size): offsets int(round((H - h) / 2.0)); the crop fits here
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    im = im.convert("RGB")
    # ToTensor: uint8 HWC -> float32 CHW / 255; Normalize: (x - m) / s in float32
    a = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(MEAN, dtype=np.float32)[:, None, None]
    std = np.array(STD, dtype=np.float32)[:, None, None]
    return ((a - mean) / std).astype(np.float32)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def digest_bytes(t, seed, nsamples=512):
    flat = t.reshape(-1).astype("<f4")
    raw = flat.tobytes()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(flat.size, size=min(nsamples, flat.size), replace=False))
    out = struct.pack("<4sIIIQ", b"AESD", t.shape[-1], len(idx), 0, fnv1a64(raw))
    for i in idx:
        out += struct.pack("<If", int(i), float(flat[i]))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = ["# written by tools/ref_preprocess.py with PIL %s, numpy %s" % (Image.__version__, np.__version__),
                "# resize SRC W H REF      PIL Image.resize((W, H), BICUBIC)",
                "# clip SRC N REF          CLIP preprocessing, float32 [3, N, N] little-endian",
                "# digest SRC N REF        the same at size N: FNV-1a 64 + sampled values",
                "# pnm SRC REF             PIL's decoded pixels (mode L or RGB, raw bytes)"]

    images = [("img_97x61.ppm", synth(97, 61, 1)),
              ("img_240x160.ppm", synth(240, 160, 2)),
              ("img_64x64.ppm", synth(64, 64, 3)),
              ("img_33x80.ppm", synth(33, 80, 4)),
              ("gray_45x70.pgm", synth(45, 70, 5, gray=True))]
    targets = {"img_97x61.ppm": [(40, 25), (120, 70), (50, 90), (97, 30), (13, 61)],
               "img_240x160.ppm": [(37, 23), (101, 67), (120, 80), (240, 7)],
               "img_64x64.ppm": [(80, 80), (21, 21), (1, 1), (64, 64), (128, 17)],
               "img_33x80.ppm": [(32, 77), (50, 121), (7, 3)],
               "gray_45x70.pgm": [(20, 31), (90, 140), (45, 69)]}

    for seed, (name, arr) in enumerate(images):
        write(name, pnm_bytes(arr))
        im = load(name)
        assert np.array_equal(np.asarray(im), arr), name
        for (tw, th) in targets[name]:
            ref = np.asarray(im.resize((tw, th), BICUBIC))
            ext = "pgm" if ref.ndim == 2 else "ppm"
            rname = "resize_%s_%dx%d.%s" % (name.split(".")[0], tw, th, ext)
            write(rname, pnm_bytes(ref))
            manifest.append("resize %s %d %d %s" % (name, tw, th, rname))
        t = clip_preprocess(im, 32)
        rname = "clip32_%s.f32" % name.split(".")[0]
        write(rname, t.astype("<f4").tobytes())
        manifest.append("clip %s 32 %s" % (name, rname))
        t = clip_preprocess(im, 224)
        rname = "clip224_%s.dig" % name.split(".")[0]
        write(rname, digest_bytes(t, 100 + seed))
        manifest.append("digest %s 224 %s" % (name, rname))

    # PNM variants the decoder must read the way PIL does
    rng = np.random.default_rng(7)
    p3 = rng.integers(0, 256, (5, 7, 3))
    body = "\n".join(" ".join(str(v) for v in row.reshape(-1)) for row in p3)
    variants = [
        ("small_p3_comments.ppm", ("P3\n# an ASCII PPM\n7 # width\n5\n# maxval next\n255\n" + body + "\n").encode()),
        ("small_p2_100.pgm", ("P2\n6 4\n100\n" + " ".join(str(v) for v in rng.integers(0, 101, 24)) + "\n").encode()),
        ("small_p5_15.pgm", b"P5 9 3 15\n" + bytes(int(v) for v in rng.integers(0, 16, 27))),
        ("small_p6_1000.ppm", b"P6\n4 3\n1000\n" + rng.integers(0, 1001, 36).astype(">u2").tobytes()),
        ("small_p6_65535.ppm", b"P6\n5 2\n65535\n" + rng.integers(0, 65536, 30).astype(">u2").tobytes()),
    ]
    for name, data in variants:
        write(name, data)
        im = load(name)
        assert im.mode in ("L", "RGB"), (name, im.mode)
        rname = name.rsplit(".", 1)[0] + ".raw"
        write(rname, np.asarray(im).tobytes())
        manifest.append("pnm %s %s" % (name, rname))

    write("manifest.txt", ("\n".join(manifest) + "\n").encode())
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
