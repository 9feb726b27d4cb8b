"""PyTorch fp16 on the shapes of bench/gpu.mjs: a Llama/Mistral decoder with random weights,
static KV caches, scaled_dot_product_attention; decode at batch 1, 8 and 32 and prefill of
512 and 2048 tokens. One JSON line per measurement. Argument: the shape as JSON."""
import json
import sys
import time

import torch
import torch.nn.functional as F

cfg = json.loads(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit("torch has no CUDA device")
dev, dt = "cuda", torch.float16
H, I, L = cfg["hidden"], cfg["intermediate"], cfg["layers"]
NH, KVH, D, V = cfg["heads"], cfg["kvHeads"], cfg["headDim"], cfg["vocab"]
STEPS = int(cfg.get("steps", 64))
P = 4096
torch.manual_seed(0)


def weight(n, k):
    return torch.randn(n, k, device=dev, dtype=dt) / k**0.5


layers = [
    {
        "qkv": weight((NH + 2 * KVH) * D, H),
        "o": weight(H, NH * D),
        "gate_up": weight(2 * I, H),
        "down": weight(H, I),
        "n1": torch.ones(H, device=dev, dtype=dt),
        "n2": torch.ones(H, device=dev, dtype=dt),
    }
    for _ in range(L)
]
embed, head, final_norm = weight(V, H), weight(V, H), torch.ones(H, device=dev, dtype=dt)
inv_freq = 1.0 / (1e6 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
angles = torch.arange(P, device=dev, dtype=torch.float32)[:, None] * inv_freq[None, :]
cos, sin = angles.cos().to(dt), angles.sin().to(dt)


def rms(x, g):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * g


def rope(x, start):  # x: [B, T, heads, D]
    t = x.shape[1]
    c, s = cos[start : start + t][None, :, None, :], sin[start : start + t][None, :, None, :]
    a, b = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def forward(tokens, start, ck, cv):
    b, t = tokens.shape
    x = embed[tokens]
    for li, p in enumerate(layers):
        h = rms(x, p["n1"])
        q, k, v = (h @ p["qkv"].T).split([NH * D, KVH * D, KVH * D], dim=-1)
        q = rope(q.view(b, t, NH, D), start).transpose(1, 2)
        k = rope(k.view(b, t, KVH, D), start).transpose(1, 2)
        ck[li][:b, :, start : start + t] = k
        cv[li][:b, :, start : start + t] = v.view(b, t, KVH, D).transpose(1, 2)
        keys = ck[li][:b, :, : start + t].repeat_interleave(NH // KVH, dim=1)
        values = cv[li][:b, :, : start + t].repeat_interleave(NH // KVH, dim=1)
        a = F.scaled_dot_product_attention(q, keys, values, is_causal=t > 1)
        x = x + a.transpose(1, 2).reshape(b, t, NH * D) @ p["o"].T
        g, u = (rms(x, p["n2"]) @ p["gate_up"].T).split([I, I], dim=-1)
        x = x + (F.silu(g) * u) @ p["down"].T
    return rms(x[:, -1], final_norm) @ head.T


def caches(batch, length):
    shape = (batch, KVH, length, D)
    return [torch.empty(shape, device=dev, dtype=dt) for _ in range(L)], [torch.empty(shape, device=dev, dtype=dt) for _ in range(L)]


with torch.inference_mode():
    for batch in cfg.get("batches", (1, 8, 32)):
        ck, cv = caches(batch, 16 + 3 + STEPS + 1)
        forward(torch.randint(0, V, (batch, 16), device=dev), 0, ck, cv)
        for w in range(3):
            forward(torch.randint(0, V, (batch, 1), device=dev), 16 + w, ck, cv)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(STEPS):
            forward(torch.randint(0, V, (batch, 1), device=dev), 19 + s, ck, cv).argmax(-1).tolist()
        seconds = time.perf_counter() - t0
        print(json.dumps({"label": f"decode {L} layers", "batch": batch, "ms_per_step": seconds * 1000 / STEPS, "tok_s": batch * STEPS / seconds}))
        del ck, cv
    for n in cfg.get("prefill", (512, 2048)):
        ck, cv = caches(1, n)
        best = None
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            forward(torch.randint(0, V, (1, n), device=dev), 0, ck, cv).argmax(-1).tolist()
            seconds = time.perf_counter() - t0
            best = seconds if best is None else min(best, seconds)
        print(json.dumps({"label": f"prefill {L} layers", "tokens": n, "ms": best * 1000, "tok_s": n / best}))
        del ck, cv
