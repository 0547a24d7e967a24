#!/usr/bin/python3
"""convert_head.py - turn a published aesthetic head (.pth) into safetensors for aesalign.

    /usr/bin/python3 tools/convert_head.py IN.pth OUT.safetensors [--check EMB.safetensors]

Handles the heads the retrieval code loads (aesalign.h, aes_head_load):
  - LAION aesthetic predictor v1 (sa_0_4_vit_*_linear.pth): one nn.Linear,
    `weight` [1, D] and `bias` [1];
  - the "improved aesthetic predictor" v2 (sac+logos+ava1-l14-linearMSE.pth):
    nn.Sequential `layers.{0,2,4,6,7}` 768-1024-128-64-16-1, no activations;
    the reluMSE variant `layers.{0,3,6,9,11}` has a ReLU after each hidden layer.
The file may hold a bare state_dict, a {"state_dict": ...} checkpoint or a whole
pickled module; "module." / "model." prefixes (DataParallel, Lightning) are removed.
Tensors are written as float32 with metadata aesalign.head (linear | mlp),
aesalign.activation (none | relu), aesalign.output (score), the source file name
and its SHA-256.  --check scores the rows of a tensor named `embeddings` (after
L2 normalization, as the library does) so the numbers can be compared with
`aesalign predict-head` or the known values in ../shared/README.md.

Needs Debian's python3-torch (use /usr/bin/python3); nothing else.
"""
import hashlib
import json
import os
import re
import struct
import sys

import torch


def load_state_dict(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:              # torch < 1.13 has no weights_only
        obj = torch.load(path, map_location="cpu")
    except Exception:              # a pickled nn.Module needs the full unpickler
        obj = torch.load(path, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SystemExit(f"{path}: not a state_dict (got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        k = re.sub(r"^(module\.|model\.)+", "", k)
        out[k] = v.detach().to(torch.float32).contiguous()
    return out


def classify(sd):
    """Returns (kind, activation, ordered tensor names) or raises."""
    if "weight" in sd and "bias" in sd and not any(k.startswith("layers.") for k in sd):
        w = sd["weight"]
        if w.ndim != 2 or sd["bias"].shape != (w.shape[0],):
            raise SystemExit(f"linear head: weight {tuple(w.shape)} / bias {tuple(sd['bias'].shape)} do not fit")
        return "linear", "none", ["weight", "bias"]
    idx = sorted(int(m.group(1)) for k in sd for m in [re.match(r"^layers\.(\d+)\.weight$", k)] if m)
    if len(idx) < 2:
        raise SystemExit("no aesthetic head here: neither weight/bias nor layers.N.weight")
    for a, b in zip(idx, idx[1:]):
        wa, wb = sd[f"layers.{a}.weight"], sd[f"layers.{b}.weight"]
        if wb.shape[1] != wa.shape[0]:
            raise SystemExit(f"layers.{b}.weight takes {wb.shape[1]} inputs, layers.{a} gives {wa.shape[0]}")
    # nn.Sequential numbers parameterless modules too: Linear, ReLU, Dropout
    # leave a gap of 3 (reluMSE), Linear, Dropout a gap of 2 (linearMSE).
    act = "relu" if any(b - a == 3 for a, b in zip(idx, idx[1:])) else "none"
    names = []
    for i in idx:
        names += [f"layers.{i}.weight", f"layers.{i}.bias"]
    return "mlp", act, names


def save_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_safetensors_tensor(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        assert info["dtype"] == "F32", "check embeddings must be F32"
        a, b = info["data_offsets"]
        f.seek(8 + n + a)
        data = f.read(b - a)
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(info["shape"])


def forward(sd, kind, act, names, x):
    x = x / x.norm(dim=-1, keepdim=True)           # the heads expect unit vectors
    if kind == "linear":
        return x @ sd["weight"].T + sd["bias"]
    layers = [(sd[names[i]], sd[names[i + 1]]) for i in range(0, len(names), 2)]
    for j, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if act == "relu" and j + 1 < len(layers):
            x = torch.relu(x)
    return x


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) > 1 else 2
    src, dst = argv[1], argv[2]
    check = argv[argv.index("--check") + 1] if "--check" in argv else None
    sd = load_state_dict(src)
    kind, act, names = classify(sd)
    missing = [n for n in names if n not in sd]
    if missing:
        raise SystemExit(f"{src}: missing {', '.join(missing)}")
    with open(src, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    dims = [sd[names[0]].shape[1]] + [sd[n].shape[0] for n in names[::2]]
    meta = {
        "aesalign.head": kind,
        "aesalign.activation": act,
        "aesalign.output": "score" if dims[-1] == 1 else "hist10",
        "source": os.path.basename(src),
        "source_sha256": sha,
        "input": "L2-normalized CLIP image embedding",
        "generator": "tools/convert_head.py",
    }
    save_safetensors(dst, {n: sd[n] for n in names}, meta)
    print(f"{dst}: {kind} head, activation {act}, widths {'-'.join(str(d) for d in dims)}, "
          f"source sha256 {sha[:16]}...")
    if check:
        emb = read_safetensors_tensor(check, "embeddings").to(torch.float64)
        sd64 = {k: v.to(torch.float64) for k, v in sd.items()}
        scores = forward(sd64, kind, act, names, emb).reshape(-1)
        print("scores:", " ".join(f"{s:.5f}" for s in scores.tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
