#!/usr/bin/python3
"""anchor_torch.py - the PyTorch side of tools/bench_anchors.sh.

The model is the ViT-B/32 image tower that build/bench_image_tower --write saves (f32
safetensors, OpenAI layout); its forward pass is tools/clip_reference.py's encode_image
(QuickGELU, eps 1e-5) on the same weights.

  export MODEL OUT.onnx   the tower as ONNX (torch.onnx.export, opset 14, dynamic batch;
                          input "pixels" [B, 3, 224, 224], output "embedding" [B, 512])
  run MODEL SECONDS       one timing round on 2 threads: images/s at batch 16 and ms at
                          batch 1 (each the median of calls over SECONDS), peak RSS; one line
                          of key=value for the driver

Inputs are those of the other engines: pixel i of the batch is ((i * 37) mod 101) / 50 - 1.
"""
import json
import os
import resource
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_reference as ref  # noqa: E402


def load_f32(path):
    """{name: float32 tensor} sharing one buffer of the file (no second copy)."""
    buf = bytearray(os.path.getsize(path))
    with open(path, "rb") as f:
        if f.readinto(buf) != len(buf):
            raise SystemExit("%s: short read" % path)
    n = struct.unpack("<Q", bytes(buf[:8]))[0]
    header = json.loads(bytes(buf[8:8 + n]))
    w = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        if h["dtype"] != "F32":
            raise SystemExit("%s: tensor %s is %s; this anchor reads F32 files" % (path, name, h["dtype"]))
        a, b = h["data_offsets"]
        arr = np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=8 + n + a)
        w[name] = torch.from_numpy(arr).reshape(h["shape"])
    return w


def _layer_norm(x, w, pre, eps):
    """clip_reference's layer_norm with the normalised size taken from the weight (a constant
    for the ONNX tracer, where x.shape[-1] would be a traced value)."""
    g = w[pre + ".weight"]
    return torch.nn.functional.layer_norm(x, (g.shape[0],), g, w[pre + ".bias"], eps)


ref.layer_norm = _layer_norm


class Tower(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w
        self.cfg = ref.cfg_from_weights(w)

    def forward(self, pixels):
        return ref.encode_image(self.w, self.cfg, pixels, "quick_gelu")


def pixels(B):
    i = np.arange(B * 3 * 224 * 224, dtype=np.int64)
    return torch.from_numpy((((i * 37) % 101) / 50.0 - 1.0).astype(np.float32)).reshape(B, 3, 224, 224)


def isa():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":")[1].strip().lower()
    return "unknown"


def median_call(fn, secs):
    fn()  # warm-up
    t, start = [], time.perf_counter()
    while len(t) < 3 or time.perf_counter() - start < secs:
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def mode_export(model, out):
    torch.set_num_threads(2)
    tower = Tower(load_f32(model)).eval()
    tmp = out + ".tmp"
    with torch.no_grad():
        torch.onnx.export(tower, (pixels(1),), tmp, input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=14,
                          do_constant_folding=True)
    os.replace(tmp, out)


def mode_run(model, secs):
    torch.set_num_threads(2)
    tower = Tower(load_f32(model)).eval()
    px16, px1 = pixels(16), pixels(1)
    with torch.inference_mode():
        t16 = median_call(lambda: tower(px16), secs)
        t1 = median_call(lambda: tower(px1), secs)
        e = tower(px1)[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes
    print("ips=%.2f ms=%.2f rss_mb=%.0f isa=%s threads=%d emb=%.5f,%.5f,%.5f" %
          (16 / t16, 1000 * t1, rss, isa(), torch.get_num_threads(), e[0], e[1], e[2]))


def main(argv):
    if len(argv) == 4 and argv[1] == "export":
        mode_export(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "run":
        mode_run(argv[2], float(argv[3]))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
