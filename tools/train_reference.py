#!/usr/bin/python3
"""train_reference.py - an independent PyTorch reference for one training step of aesalign.h.

One full step of preference fine-tuning (arXiv 2406.09397, stage 3) on the tiny random CLIP that
tools/clip_reference.py writes to tests/fixtures/clip:

    forward both towers -> L2-normalised embeddings
    loss = L_dpo (ranked DPO over preference items, cached reference similarities)
         + lambda * L_clip (symmetric InfoNCE with label smoothing, learned logit_scale)
    backward (autograd, float64) -> global-norm clipping -> one AdamW update (decoupled weight
    decay on tensors with 2 or more dimensions)

and writes the parameters after the step (Hugging Face names, float32) plus the losses to
tests/fixtures/train/step_expected.safetensors.  The model is written here from the papers with
plain torch ops (ViT: Dosovitskiy et al. 2021; CLIP: Radford et al. 2021); no transformers or
open_clip.  Needs Debian's python3-torch: run with /usr/bin/python3.

Modes:
  step [CLIP_FIXTURES_DIR] [OUT_DIR]   the reference step (defaults tests/fixtures/clip,
                                       tests/fixtures/train)
  --bench [BATCH]                      PyTorch images/s for forward + backward + AdamW of a
                                       ViT-B/32-shaped vision tower at batch 32, 2 threads
                                       (the same step as tools/bench_train.c)
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# safetensors, read and write (8-byte LE header length, JSON header, raw data)
# ---------------------------------------------------------------------------
_NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=_NP[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        b = t.numpy().tobytes()
        dt = {torch.float32: "F32", torch.int32: "I32", torch.float64: "F64"}[t.dtype]
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------
# CLIP on Hugging Face names
# ---------------------------------------------------------------------------
def act_fn(x, act):
    return x * torch.sigmoid(1.702 * x) if act == "quick_gelu" else F.gelu(x)


def ln(x, p, pre):
    return F.layer_norm(x, (x.shape[-1],), p[pre + ".weight"], p[pre + ".bias"], 1e-5)


def lin(x, p, pre, bias=True):
    y = x @ p[pre + ".weight"].t()
    return y + p[pre + ".bias"] if bias else y


def encoder_layer(x, p, pre, heads, causal, act):
    """Pre-LN block: x + attn(ln1(x)); x + mlp(ln2(x)) (Radford et al. 2019 / ViT)."""
    B, T, C = x.shape
    hs = C // heads
    h = ln(x, p, pre + ".layer_norm1")
    q = lin(h, p, pre + ".self_attn.q_proj").view(B, T, heads, hs).transpose(1, 2)
    k = lin(h, p, pre + ".self_attn.k_proj").view(B, T, heads, hs).transpose(1, 2)
    v = lin(h, p, pre + ".self_attn.v_proj").view(B, T, heads, hs).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(hs)
    if causal:
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    x = x + lin(a, p, pre + ".self_attn.out_proj")
    h = ln(x, p, pre + ".layer_norm2")
    return x + lin(act_fn(lin(h, p, pre + ".mlp.fc1"), act), p, pre + ".mlp.fc2")


def n_layers(p, tower):
    return len({k.split(".")[3] for k in p if k.startswith(tower + ".encoder.layers.")})


def encode_image(p, pixels, heads, act):
    w = p["vision_model.embeddings.patch_embedding.weight"]
    P = w.shape[-1]
    x = F.conv2d(pixels, w, stride=P)
    B, C = x.shape[0], x.shape[1]
    x = x.reshape(B, C, -1).transpose(1, 2)
    cls = p["vision_model.embeddings.class_embedding"].expand(B, 1, C)
    x = torch.cat([cls, x], 1) + p["vision_model.embeddings.position_embedding.weight"]
    x = ln(x, p, "vision_model.pre_layrnorm")
    for i in range(n_layers(p, "vision_model")):
        x = encoder_layer(x, p, "vision_model.encoder.layers.%d" % i, heads, False, act)
    x = ln(x[:, 0], p, "vision_model.post_layernorm")
    return lin(x, p, "visual_projection", bias=False)


def encode_text(p, tokens, heads, act):
    T = tokens.shape[1]
    x = p["text_model.embeddings.token_embedding.weight"][tokens] + \
        p["text_model.embeddings.position_embedding.weight"][:T]
    for i in range(n_layers(p, "text_model")):
        x = encoder_layer(x, p, "text_model.encoder.layers.%d" % i, heads, True, act)
    x = ln(x, p, "text_model.final_layer_norm")
    x = x[torch.arange(x.shape[0]), tokens.argmax(-1)]   # pool at the end token (largest id)
    return lin(x, p, "text_projection", bias=False)


# ---------------------------------------------------------------------------
# The losses, written from their definitions (see aesalign.h for the formulas)
# ---------------------------------------------------------------------------
def clip_loss(img, txt, logit_scale, smoothing):
    logits = logit_scale.exp() * img @ txt.t()
    target = torch.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(logits, target, label_smoothing=smoothing) +
                  F.cross_entropy(logits.t(), target, label_smoothing=smoothing))


def dpo_loss(img, txt, logit_scale, items, ref, beta, eps):
    """items: rows (query, preferred, rejected, weight); ref: rows (s_ref(q,w), s_ref(q,l))."""
    q, w, l = items[:, 0].long(), items[:, 1].long(), items[:, 2].long()
    wt = items[:, 3] / items[:, 3].sum()
    s = logit_scale.exp() * txt @ img.t()
    h = (s[q, w] - ref[:, 0]) - (s[q, l] - ref[:, 1])
    per = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return (wt * per).sum(), s


def adamw_step(params, grads, lr, b1, b2, eps, wd, decay):
    """One AdamW step from zero state (Loshchilov & Hutter 2019), PyTorch's operation order."""
    out = {}
    for k, p in params.items():
        g = grads[k]
        if decay[k]:
            p = p * (1 - lr * wd)
        m = (1 - b1) * g
        v = (1 - b2) * g * g
        denom = (v.sqrt() / math.sqrt(1 - b2)) + eps
        out[k] = p - (lr / (1 - b1)) * m / denom
    return out


# The step's settings; tests/test_train.c uses the same numbers (stored in the fixture too).
# adam_eps is 1e-3, not PyTorch's 1e-8, on purpose: Adam's first update is lr * g / (|g| + eps),
# i.e. lr * sign(g) for a tiny eps, so any gradient that is mathematically ~0 would turn float32
# rounding noise into a full-size step and the comparison would test the noise.  With eps = 1e-3
# the update is a smooth function of the gradient and the 1e-5 check tests the gradients.
SETTINGS = dict(beta=0.2, dpo_smoothing=0.1, clip_smoothing=0.05, lam=0.5, lr=1e-3, beta1=0.9,
                beta2=0.999, adam_eps=1e-3, weight_decay=0.1, clip_norm=1.0)
# (query, preferred, rejected, weight) over the fixture's 4 texts and 3 images
ITEMS = [(0, 0, 1, 1.0), (1, 1, 2, 1.0), (2, 2, 0, 2.0), (3, 0, 2, 0.5), (0, 2, 1, 1.0)]
REF_OFFSETS = [(0.3, -0.2), (-0.1, 0.25), (0.05, 0.0), (0.4, 0.1), (-0.3, -0.35)]


def mode_step(clip_dir, out_dir):
    model = read_safetensors(os.path.join(clip_dir, "clip_hf_f32.safetensors"))
    refs = read_safetensors(os.path.join(clip_dir, "clip_refs.safetensors"))
    cfg = json.load(open(os.path.join(clip_dir, "config.json")))
    act = cfg["vision_config"]["hidden_act"]
    vh, th = cfg["vision_config"]["num_attention_heads"], cfg["text_config"]["num_attention_heads"]
    params = {k: v.double().requires_grad_(True) for k, v in model.items() if v.dtype == torch.float32}
    pixels = refs["pixels"].double()
    tokens = refs["tokens"].long()
    S = SETTINGS
    img = F.normalize(encode_image(params, pixels, vh, act), dim=-1)
    txt = F.normalize(encode_text(params, tokens, th, act), dim=-1)
    ls = params["logit_scale"]
    items = torch.tensor(ITEMS, dtype=torch.float64)
    with torch.no_grad():   # cached reference similarities: the initial model's, shifted
        s0 = ls.exp() * txt @ img.t()
        # the C side computes s_ref in float32; round the same way so both see the same numbers
        ref = torch.tensor([[float(np.float32(s0[q, w].item() + a)), float(np.float32(s0[q, l].item() + b))]
                            for (q, w, l, _), (a, b) in zip(ITEMS, REF_OFFSETS)], dtype=torch.float64)
    l_dpo, s = dpo_loss(img, txt, ls, items, ref, S["beta"], S["dpo_smoothing"])
    n = pixels.shape[0]   # images 0..n-1 match texts 0..n-1
    l_clip = clip_loss(img, txt[:n], ls, S["clip_smoothing"])
    total = l_dpo + S["lam"] * l_clip
    total.backward()
    grads = {k: v.grad for k, v in params.items()}
    gnorm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    coef = min(1.0, S["clip_norm"] / (gnorm + 1e-6))
    grads = {k: g * coef for k, g in grads.items()}
    decay = {k: v.dim() >= 2 for k, v in params.items()}
    new = adamw_step({k: v.detach() for k, v in params.items()}, grads, S["lr"], S["beta1"], S["beta2"],
                     S["adam_eps"], S["weight_decay"], decay)
    out = {"after." + k: v.float() for k, v in new.items()}
    out["loss_dpo"] = l_dpo.detach().float().reshape(1)
    out["loss_clip"] = l_clip.detach().float().reshape(1)
    out["loss_total"] = total.detach().float().reshape(1)
    out["grad_norm"] = torch.tensor([gnorm], dtype=torch.float32)
    out["ref"] = ref.float()
    out["items"] = items.float()
    out["sim"] = s.detach().float()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "step_expected.safetensors")
    write_safetensors(path, out, dict(S, generator="tools/train_reference.py step"))
    print("loss_dpo %.7f loss_clip %.7f total %.7f grad_norm %.6f" %
          (l_dpo.item(), l_clip.item(), total.item(), gnorm))
    print("wrote", path)


# ---------------------------------------------------------------------------
# Bench: ViT-B/32 vision tower, forward + backward + AdamW, batch 32, 2 threads
# ---------------------------------------------------------------------------
def mode_bench(batch):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    W, L, P, R, E, H = 768, 12, 32, 224, 512, 12
    g = R // P
    p = {"vision_model.embeddings.patch_embedding.weight": torch.randn(W, 3, P, P) * 0.02,
         "vision_model.embeddings.class_embedding": torch.randn(W) * 0.02,
         "vision_model.embeddings.position_embedding.weight": torch.randn(g * g + 1, W) * 0.02,
         "vision_model.pre_layrnorm.weight": torch.ones(W), "vision_model.pre_layrnorm.bias": torch.zeros(W),
         "vision_model.post_layernorm.weight": torch.ones(W), "vision_model.post_layernorm.bias": torch.zeros(W),
         "visual_projection.weight": torch.randn(E, W) * 0.02, "logit_scale": torch.tensor(math.log(1 / 0.07))}
    for i in range(L):
        pre = "vision_model.encoder.layers.%d" % i
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            p[pre + ".self_attn.%s.weight" % n] = torch.randn(W, W) * 0.02
            p[pre + ".self_attn.%s.bias" % n] = torch.zeros(W)
        for n in ("layer_norm1", "layer_norm2"):
            p[pre + ".%s.weight" % n] = torch.ones(W)
            p[pre + ".%s.bias" % n] = torch.zeros(W)
        p[pre + ".mlp.fc1.weight"] = torch.randn(4 * W, W) * 0.02
        p[pre + ".mlp.fc1.bias"] = torch.zeros(4 * W)
        p[pre + ".mlp.fc2.weight"] = torch.randn(W, 4 * W) * 0.02
        p[pre + ".mlp.fc2.bias"] = torch.zeros(W)
    ls = p.pop("logit_scale")
    for v in p.values():
        v.requires_grad_(True)
    opt = torch.optim.AdamW(list(p.values()), lr=1e-5, weight_decay=0.01)
    pixels = torch.randn(batch, 3, R, R)
    txt = F.normalize(torch.randn(batch, E), dim=-1)        # frozen text tower: cached embeddings
    items = torch.tensor([(i, i, (i + 1) % batch, 1.0) for i in range(batch)], dtype=torch.float32)
    ref = torch.zeros(batch, 2)

    def step():
        opt.zero_grad()
        img = F.normalize(encode_image(p, pixels, H, "quick_gelu"), dim=-1)
        l_dpo, _ = dpo_loss(img, txt, ls, items, ref, 0.1, 0.1)
        loss = l_dpo + 0.5 * clip_loss(img, txt, ls, 0.0)
        loss.backward()
        opt.step()

    step()
    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    dt = (time.perf_counter() - t0) / reps
    print("torch train step (ViT-B/32 vision, batch %d, 2 threads): %.2f images/s (%.0f ms/step)" %
          (batch, batch / dt, 1000 * dt))


def main(argv):
    if len(argv) >= 2 and argv[1] == "step":
        mode_step(argv[2] if len(argv) > 2 else "tests/fixtures/clip",
                  argv[3] if len(argv) > 3 else "tests/fixtures/train")
    elif len(argv) >= 2 and argv[1] in ("--bench", "bench"):
        mode_bench(int(argv[2]) if len(argv) > 2 else 32)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
