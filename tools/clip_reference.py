#!/usr/bin/python3
"""clip_reference.py - an independent PyTorch reference for the CLIP model in aesalign.h.

Written from the papers (ViT: Dosovitskiy et al. 2021; CLIP: Radford et al. 2021) with
plain torch ops: no open_clip, no transformers.  It writes everything in safetensors
with its own tiny writer (the `safetensors` package is not needed).

Modes:
  fixtures DIR          tiny random CLIP (image 32/patch 8, width 32, 2 layers; text ctx 16,
                        vocab 256, width 32, 2 layers; embed 24), every tensor perturbed, saved
                        in both layouts (Hugging Face / OpenAI) and dtypes (f32/f16/bf16), with
                        config.json files, inputs and reference outputs -> tests/fixtures/clip
  vitb32 PATH [--layout hf|openai] [--dtype f32|f16|bf16]
                        a ViT-B/32-shaped random checkpoint (224/32, width 768, 12 layers; text
                        77 x 49408, width 512, 12 layers; embed 512) plus PATH.refs.safetensors
                        with reference embeddings of a few inputs (for a slow check)
  bench                 PyTorch timings for the same shapes as tools/bench_clip.c (2 threads)
  embed MODEL [--act quick_gelu|gelu] (--image PATH | --text STRING)...
                        embeddings of a safetensors CLIP (either layout) for an end-to-end
                        check of `aesalign embed`: same output format; images through PIL
                        (CLIP's resize/crop/normalise), texts through tools/tokenizer_ref.py

Reference outputs are computed in float64 from the weights exactly as stored (after their
rounding to f16/bf16), so the C code's only error is its own float32 arithmetic.
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

# ----------------------------------------------------------------------------
# safetensors writer: 8-byte little-endian header size, JSON header, raw data.
# ----------------------------------------------------------------------------
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int32: "I32", torch.int64: "I64", torch.float64: "F64"}


def _tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def save_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = _tensor_bytes(t)
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # the data section starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# The model, on a dict of tensors in OpenAI's names (the canonical layout here).
# ----------------------------------------------------------------------------
class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def layer_norm(x, w, pre, eps):
    return F.layer_norm(x, (x.shape[-1],), w[pre + ".weight"], w[pre + ".bias"], eps)


def activation(x, act):
    if act == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)  # OpenAI's QuickGELU
    return F.gelu(x)  # exact erf GELU


def attention(x, w, pre, heads, causal):
    """Multi-head self-attention (Vaswani et al. 2017, eq. 1) with PyTorch's fused in_proj."""
    B, T, C = x.shape
    hs = C // heads
    qkv = x @ w[pre + ".in_proj_weight"].t() + w[pre + ".in_proj_bias"]
    q, k, v = qkv.split(C, dim=-1)
    q = q.view(B, T, heads, hs).transpose(1, 2)
    k = k.view(B, T, heads, hs).transpose(1, 2)
    v = v.view(B, T, heads, hs).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return y @ w[pre + ".out_proj.weight"].t() + w[pre + ".out_proj.bias"]


def block(x, w, pre, heads, causal, act, eps):
    """Pre-LN residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    x = x + attention(layer_norm(x, w, pre + ".ln_1", eps), w, pre + ".attn", heads, causal)
    h = layer_norm(x, w, pre + ".ln_2", eps)
    h = activation(h @ w[pre + ".mlp.c_fc.weight"].t() + w[pre + ".mlp.c_fc.bias"], act)
    h = h @ w[pre + ".mlp.c_proj.weight"].t() + w[pre + ".mlp.c_proj.bias"]
    return x + h


def encode_image(w, cfg, pixels, act, trace=None):
    P = cfg.patch_size
    x = F.conv2d(pixels, w["visual.conv1.weight"], stride=P)  # [B, W, g, g]
    B, Wd = x.shape[0], x.shape[1]
    x = x.reshape(B, Wd, -1).permute(0, 2, 1)  # patches in row-major order
    cls = w["visual.class_embedding"].expand(B, 1, Wd)
    x = torch.cat([cls, x], dim=1) + w["visual.positional_embedding"]
    x = layer_norm(x, w, "visual.ln_pre", cfg.eps)
    if trace is not None:
        trace["vision_ln_pre"] = x.clone()
    for i in range(cfg.vision_layers):
        x = block(x, w, "visual.transformer.resblocks.%d" % i, cfg.vision_heads, False, act, cfg.eps)
        if trace is not None:
            trace["vision_block%d" % i] = x.clone()
    x = layer_norm(x[:, 0, :], w, "visual.ln_post", cfg.eps)
    return x @ w["visual.proj"]


def encode_text(w, cfg, tokens, act, trace=None):
    T = tokens.shape[1]
    x = w["token_embedding.weight"][tokens] + w["positional_embedding"][:T]
    for i in range(cfg.text_layers):
        x = block(x, w, "transformer.resblocks.%d" % i, cfg.text_heads, True, act, cfg.eps)
        if trace is not None:
            trace["text_block%d" % i] = x.clone()
    x = layer_norm(x, w, "ln_final", cfg.eps)
    # pool at the end token: the largest id in the row (as OpenAI's code does)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return x @ w["text_projection"]


# ----------------------------------------------------------------------------
# Random weights, every tensor perturbed (no zero bias, no unit LN weight).
# ----------------------------------------------------------------------------
def random_weights(cfg, gen):
    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    w = {}

    def tower(pre, width, layers, mlp):
        attn_std = width ** -0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for i in range(layers):
            b = "%s.resblocks.%d" % (pre, i)
            for ln in ("ln_1", "ln_2"):
                w[b + "." + ln + ".weight"] = 1.0 + randn(width, std=0.1)
                w[b + "." + ln + ".bias"] = randn(width, std=0.05)
            w[b + ".attn.in_proj_weight"] = randn(3 * width, width, std=attn_std)
            w[b + ".attn.in_proj_bias"] = randn(3 * width, std=0.05)
            w[b + ".attn.out_proj.weight"] = randn(width, width, std=proj_std)
            w[b + ".attn.out_proj.bias"] = randn(width, std=0.05)
            w[b + ".mlp.c_fc.weight"] = randn(mlp, width, std=fc_std)
            w[b + ".mlp.c_fc.bias"] = randn(mlp, std=0.05)
            w[b + ".mlp.c_proj.weight"] = randn(width, mlp, std=proj_std)
            w[b + ".mlp.c_proj.bias"] = randn(width, std=0.05)

    if cfg.has_vision:
        W, P, g = cfg.vision_width, cfg.patch_size, cfg.image_size // cfg.patch_size
        w["visual.conv1.weight"] = randn(W, 3, P, P, std=(3 * P * P) ** -0.5)
        w["visual.class_embedding"] = randn(W, std=W ** -0.5)
        w["visual.positional_embedding"] = randn(g * g + 1, W, std=W ** -0.5)
        for ln in ("ln_pre", "ln_post"):
            w["visual.%s.weight" % ln] = 1.0 + randn(W, std=0.1)
            w["visual.%s.bias" % ln] = randn(W, std=0.05)
        tower("visual.transformer", W, cfg.vision_layers, cfg.vision_mlp)
        w["visual.proj"] = randn(W, cfg.embed_dim, std=W ** -0.5)
    if cfg.has_text:
        W = cfg.text_width
        w["token_embedding.weight"] = randn(cfg.vocab_size, W, std=0.02 if W >= 256 else 0.5)
        w["positional_embedding"] = randn(cfg.context_length, W, std=0.01 if W >= 256 else 0.2)
        tower("transformer", W, cfg.text_layers, cfg.text_mlp)
        w["ln_final.weight"] = 1.0 + randn(W, std=0.1)
        w["ln_final.bias"] = randn(W, std=0.05)
        w["text_projection"] = randn(W, cfg.embed_dim, std=W ** -0.5)
    w["logit_scale"] = torch.tensor(math.log(1 / 0.07) + 0.123, dtype=torch.float64)
    return w


def round_to(w, dtype):
    """The weights as a file of that dtype stores them, back in float64."""
    return {k: v.to(dtype).to(torch.float64) for k, v in w.items()}


def to_hf(w, cfg):
    """OpenAI/open_clip names -> Hugging Face CLIPModel names (q/k/v split, projections transposed)."""
    out = {}

    def tower(src, dst, width, layers):
        for i in range(layers):
            s, d = "%s.resblocks.%d" % (src, i), "%s.layers.%d" % (dst, i)
            ipw, ipb = w[s + ".attn.in_proj_weight"], w[s + ".attn.in_proj_bias"]
            for j, n in enumerate(("q_proj", "k_proj", "v_proj")):
                out[d + ".self_attn.%s.weight" % n] = ipw[j * width:(j + 1) * width]
                out[d + ".self_attn.%s.bias" % n] = ipb[j * width:(j + 1) * width]
            out[d + ".self_attn.out_proj.weight"] = w[s + ".attn.out_proj.weight"]
            out[d + ".self_attn.out_proj.bias"] = w[s + ".attn.out_proj.bias"]
            for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[d + ".%s.weight" % b] = w[s + ".%s.weight" % a]
                out[d + ".%s.bias" % b] = w[s + ".%s.bias" % a]

    if cfg.has_vision:
        out["vision_model.embeddings.class_embedding"] = w["visual.class_embedding"]
        out["vision_model.embeddings.patch_embedding.weight"] = w["visual.conv1.weight"]
        out["vision_model.embeddings.position_embedding.weight"] = w["visual.positional_embedding"]
        n = w["visual.positional_embedding"].shape[0]
        out["vision_model.embeddings.position_ids"] = torch.arange(n, dtype=torch.int64)[None]
        for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
            out["vision_model.%s.weight" % b] = w["visual.%s.weight" % a]
            out["vision_model.%s.bias" % b] = w["visual.%s.bias" % a]
        tower("visual.transformer", "vision_model.encoder", cfg.vision_width, cfg.vision_layers)
        out["visual_projection.weight"] = w["visual.proj"].t()
    if cfg.has_text:
        out["text_model.embeddings.token_embedding.weight"] = w["token_embedding.weight"]
        out["text_model.embeddings.position_embedding.weight"] = w["positional_embedding"]
        out["text_model.embeddings.position_ids"] = torch.arange(cfg.context_length, dtype=torch.int64)[None]
        tower("transformer", "text_model.encoder", cfg.text_width, cfg.text_layers)
        out["text_model.final_layer_norm.weight"] = w["ln_final.weight"]
        out["text_model.final_layer_norm.bias"] = w["ln_final.bias"]
        out["text_projection.weight"] = w["text_projection"].t()
    if "logit_scale" in w:
        out["logit_scale"] = w["logit_scale"]
    return out


def select(w, vision, text):
    """The subset of an OpenAI-named dict for a vision-only or text-only file."""
    def is_vision(k):
        return k.startswith("visual.")
    return {k: v for k, v in w.items()
            if (vision and is_vision(k)) or (text and not is_vision(k) and k != "logit_scale")
            or (k == "logit_scale" and vision and text)}


def cast(w, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in w.items()}


def hf_config(cfg, act):
    common = {"hidden_act": act, "layer_norm_eps": cfg.eps, "projection_dim": cfg.embed_dim}
    return {
        "architectures": ["CLIPModel"], "model_type": "clip",
        "projection_dim": cfg.embed_dim, "logit_scale_init_value": 2.6592,
        "text_config": dict(common, hidden_size=cfg.text_width, intermediate_size=cfg.text_mlp,
                            num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers,
                            max_position_embeddings=cfg.context_length, vocab_size=cfg.vocab_size,
                            bos_token_id=cfg.vocab_size - 2, eos_token_id=cfg.vocab_size - 1,
                            model_type="clip_text_model"),
        "vision_config": dict(common, hidden_size=cfg.vision_width, intermediate_size=cfg.vision_mlp,
                              num_attention_heads=cfg.vision_heads, num_hidden_layers=cfg.vision_layers,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=3,
                              model_type="clip_vision_model"),
    }


def make_tokens(cfg, lengths, gen):
    """Rows of [start, words..., end, 0...] with end = the largest id (as CLIP's 49407)."""
    V, T = cfg.vocab_size, cfg.context_length
    toks = torch.zeros(len(lengths), T, dtype=torch.int64)
    for r, n in enumerate(lengths):  # n = tokens including start and end
        toks[r, 0] = V - 2
        toks[r, 1:n - 1] = torch.randint(1, V - 2, (n - 2,), generator=gen)
        toks[r, n - 1] = V - 1
    return toks


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------
TINY = Cfg(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2, vision_mlp=128,
           context_length=16, vocab_size=256, text_width=32, text_layers=2, text_heads=2, text_mlp=128,
           embed_dim=24, eps=1e-5, has_vision=True, has_text=True)

VITB32 = Cfg(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
             vision_mlp=3072, context_length=77, vocab_size=49408, text_width=512, text_layers=12,
             text_heads=8, text_mlp=2048, embed_dim=512, eps=1e-5, has_vision=True, has_text=True)


def references(w, cfg, pixels, tokens, tag, out, trace=False):
    for act in ("quick_gelu", "gelu"):
        tr = {} if (trace and act == "quick_gelu") else None
        with torch.no_grad():
            out["%s_%s_image" % (tag, act)] = encode_image(w, cfg, pixels, act, tr).float()
            out["%s_%s_text" % (tag, act)] = encode_text(w, cfg, tokens, act, tr).float()
        if tr is not None:
            for k, v in tr.items():
                out["%s_%s_%s" % (tag, act, k)] = v.float()


def mode_fixtures(d):
    os.makedirs(d, exist_ok=True)
    gen = torch.Generator().manual_seed(20240610)
    cfg = TINY
    w = random_weights(cfg, gen)
    g = cfg.image_size
    pixels = torch.randn(3, 3, g, g, generator=gen, dtype=torch.float64)
    tokens = make_tokens(cfg, [5, 16, 2, 9], gen)  # different lengths, one full row, one empty caption

    # The weight files.  Rounding is done once here, in the dict that is also
    # the reference's input, so file and reference agree bit for bit.
    w32, w16, wbf = round_to(w, torch.float32), round_to(w, torch.float16), round_to(w, torch.bfloat16)
    meta = {"format": "pt", "generator": "tools/clip_reference.py"}
    save_safetensors(os.path.join(d, "clip_hf_f32.safetensors"), cast(to_hf(w32, cfg), torch.float32), meta)
    save_safetensors(os.path.join(d, "clip_openai_f16.safetensors"), cast(w16, torch.float16), meta)
    vcfg = Cfg(**dict(cfg.__dict__, has_text=False))
    save_safetensors(os.path.join(d, "clip_hf_vision_bf16.safetensors"),
                     cast(to_hf(select(wbf, True, False), vcfg), torch.bfloat16), meta)
    save_safetensors(os.path.join(d, "clip_openai_text_f32.safetensors"),
                     cast(select(w32, False, True), torch.float32), meta)
    write_json(os.path.join(d, "config.json"), hf_config(cfg, "quick_gelu"))
    write_json(os.path.join(d, "config_gelu.json"), hf_config(cfg, "gelu"))
    # open_clip's model config form (quick_gelu absent means GELU there)
    write_json(os.path.join(d, "open_clip_config.json"), {"model_cfg": {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"image_size": cfg.image_size, "layers": cfg.vision_layers, "width": cfg.vision_width,
                       "patch_size": cfg.patch_size, "head_width": cfg.vision_width // cfg.vision_heads},
        "text_cfg": {"context_length": cfg.context_length, "vocab_size": cfg.vocab_size,
                     "width": cfg.text_width, "heads": cfg.text_heads, "layers": cfg.text_layers}}})

    refs = {"pixels": pixels.float(), "tokens": tokens.to(torch.int32)}
    references(w32, cfg, pixels, tokens, "f32", refs, trace=True)
    references(w16, cfg, pixels, tokens, "f16", refs)
    references(wbf, cfg, pixels, tokens, "bf16", refs)
    refs["logit_scale"] = w32["logit_scale"].float().reshape(1)
    save_safetensors(os.path.join(d, "clip_refs.safetensors"), refs, meta)
    for k in ("f32", "f16", "bf16"):
        a, b = refs[k + "_quick_gelu_image"], refs["f32_quick_gelu_image"]
        print("%-5s image embeddings vs f32: max rel %.2e" % (k, ((a - b).abs().max() / b.abs().max()).item()))
        a, b = refs[k + "_quick_gelu_text"], refs["f32_quick_gelu_text"]
        print("%-5s text  embeddings vs f32: max rel %.2e" % (k, ((a - b).abs().max() / b.abs().max()).item()))
    print("wrote", d)


def mode_vitb32(path, layout, dtype):
    gen = torch.Generator().manual_seed(32)
    cfg = VITB32
    w = random_weights(cfg, gen)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    wr = round_to(w, dt)
    del w
    out = to_hf(wr, cfg) if layout == "hf" else dict(wr)
    save_safetensors(path, cast(out, dt), {"format": "pt", "generator": "tools/clip_reference.py vitb32"})
    del out
    if layout == "hf":
        write_json(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json"),
                   hf_config(cfg, "quick_gelu"))
    pixels = torch.randn(2, 3, 224, 224, generator=gen, dtype=torch.float64)
    tokens = make_tokens(cfg, [7, 12, 20], gen)
    refs = {"pixels": pixels.float(), "tokens": tokens.to(torch.int32)}
    with torch.no_grad():
        refs["image"] = encode_image(wr, cfg, pixels, "quick_gelu").float()
        refs["text"] = encode_text(wr, cfg, tokens, "quick_gelu").float()
    save_safetensors(path + ".refs.safetensors", refs)
    print("wrote", path, "and", path + ".refs.safetensors")


def mode_bench():
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(1)
    cfg = VITB32
    w = {k: v.float() for k, v in random_weights(cfg, gen).items()}

    def timeit(fn, reps):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    with torch.inference_mode():
        px16 = torch.randn(16, 3, 224, 224)
        px1 = torch.randn(1, 3, 224, 224)
        t = timeit(lambda: encode_image(w, cfg, px16, "quick_gelu"), 3)
        print("torch images/s at batch 16: %.1f" % (16 / t))
        t = timeit(lambda: encode_image(w, cfg, px1, "quick_gelu"), 10)
        print("torch ms/image at batch 1: %.1f" % (1000 * t))
        tok = make_tokens(cfg, [8 + (i * 5) % 13 for i in range(16)], gen)
        t = timeit(lambda: encode_text(w, cfg, tok, "quick_gelu"), 3)
        print("torch texts/s at batch 16 (padded to 77): %.1f" % (16 / t))


def load_safetensors(path):
    """A tiny reader: {name: float64 tensor} (integer tensors are skipped)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        raw = data[a:b]
        if h["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        elif h["dtype"] == "F16":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f2").copy())
        elif h["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
        else:
            continue
        out[name] = t.to(torch.float64).reshape(h["shape"])
    return out


def from_hf(h):
    """Hugging Face names -> OpenAI names (the inverse of to_hf)."""
    w = {}
    for k, v in h.items():
        if k.startswith("vision_model.encoder.layers.") or k.startswith("text_model.encoder.layers."):
            continue
    ren = {"vision_model.embeddings.class_embedding": "visual.class_embedding",
           "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
           "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
           "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "logit_scale": "logit_scale"}
    for a, b in ren.items():
        if a in h:
            w[b] = h[a]
    for a, b in (("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post"),
                 ("text_model.final_layer_norm", "ln_final")):
        if a + ".weight" in h:
            w[b + ".weight"], w[b + ".bias"] = h[a + ".weight"], h[a + ".bias"]
    if "visual_projection.weight" in h:
        w["visual.proj"] = h["visual_projection.weight"].t()
    if "text_projection.weight" in h:
        w["text_projection"] = h["text_projection.weight"].t()
    for src, dst in (("vision_model.encoder.layers", "visual.transformer.resblocks"),
                     ("text_model.encoder.layers", "transformer.resblocks")):
        i = 0
        while "%s.%d.mlp.fc1.weight" % (src, i) in h:
            s, d = "%s.%d" % (src, i), "%s.%d" % (dst, i)
            w[d + ".attn.in_proj_weight"] = torch.cat([h[s + ".self_attn.%s_proj.weight" % q] for q in "qkv"])
            w[d + ".attn.in_proj_bias"] = torch.cat([h[s + ".self_attn.%s_proj.bias" % q] for q in "qkv"])
            for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                w[d + ".%s.weight" % b], w[d + ".%s.bias" % b] = h[s + ".%s.weight" % a], h[s + ".%s.bias" % a]
            i += 1
    return w


def cfg_from_weights(w):
    """The architecture from the shapes (heads = width / 64, as the C loader's default)."""
    c = Cfg(eps=1e-5, has_vision="visual.conv1.weight" in w, has_text="token_embedding.weight" in w)
    if c.has_vision:
        c.vision_width, _, c.patch_size, _ = w["visual.conv1.weight"].shape
        g = int(round((w["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        c.image_size = g * c.patch_size
        c.vision_layers = sum(1 for k in w if k.startswith("visual.transformer.resblocks.") and k.endswith("ln_1.weight"))
        c.vision_heads = max(1, c.vision_width // 64)
    if c.has_text:
        c.vocab_size, c.text_width = w["token_embedding.weight"].shape
        c.context_length = w["positional_embedding"].shape[0]
        c.text_layers = sum(1 for k in w if k.startswith("transformer.resblocks.") and k.endswith("ln_1.weight"))
        c.text_heads = max(1, c.text_width // 64)
    return c


def clip_preprocess(path, size):
    """OpenAI's _transform: Resize(size, BICUBIC) of the shorter side, CenterCrop, /255, normalise."""
    from PIL import Image
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im, dtype=np.float64) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float64)[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float64)[:, None, None]
    return ((x - mean) / std)[None]


def mode_embed(argv):
    import subprocess
    path, act, inputs, i = argv[0], "quick_gelu", [], 1
    while i < len(argv):
        if argv[i] in ("--image", "--text", "--act"):
            if argv[i] == "--act":
                act = argv[i + 1]
            else:
                inputs.append((argv[i], argv[i + 1]))
            i += 2
        else:
            raise SystemExit("unknown option " + argv[i])
    w = load_safetensors(path)
    if any(k.startswith("vision_model.") or k.startswith("text_model.") for k in w):
        w = from_hf(w)
    cfg = cfg_from_weights(w)
    here = os.path.dirname(os.path.abspath(__file__))
    with torch.no_grad():
        for kind, val in inputs:
            if kind == "--image":
                e = encode_image(w, cfg, clip_preprocess(val, cfg.image_size), act)[0]
            else:
                ids = subprocess.run(["/usr/bin/python3", os.path.join(here, "tokenizer_ref.py"), val],
                                     check=True, capture_output=True, text=True).stdout.split()
                tokens = torch.tensor([[int(x) for x in ids]], dtype=torch.int64)
                e = encode_text(w, cfg, tokens, act)[0]
            print(" ".join("%.9g" % float(v) for v in e.float()))


def main(argv):
    if len(argv) >= 2 and argv[1] == "fixtures":
        mode_fixtures(argv[2] if len(argv) > 2 else "tests/fixtures/clip")
    elif len(argv) >= 3 and argv[1] == "vitb32":
        layout, dtype = "hf", "f32"
        i = 3
        while i < len(argv):
            if argv[i] == "--layout":
                layout = argv[i + 1]
            elif argv[i] == "--dtype":
                dtype = argv[i + 1]
            else:
                raise SystemExit("unknown option " + argv[i])
            i += 2
        mode_vitb32(argv[2], layout, dtype)
    elif len(argv) >= 2 and argv[1] in ("bench", "--bench"):
        mode_bench()
    elif len(argv) >= 3 and argv[1] == "embed":
        mode_embed(argv[2:])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
