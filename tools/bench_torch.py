#!/usr/bin/env python3
"""The training step of tsumugi's benchmark models written in plain PyTorch, eager and compiled.

The reference that `tsumugi bench train --preset gpt2-124m|llama-1b --device cuda --dtype bf16`
is compared with in the GPU check (tools/gpu/run-gpu-check.sh, docs/gpu.md). Same shapes, same
step (forward, cross-entropy, backward, global-norm clipping to 1.0, AdamW), same FLOP count.

Recipe: PyTorch's standard fast mixed precision: fp32 parameters, the forward and the loss
under torch.autocast(bfloat16) (the matrix products and attention run in bf16, the
cross-entropy in fp32), fused AdamW on the fp32 parameters, F.scaled_dot_product_attention
(causal; flash attention on an H200; grouped-query heads through enable_gqa). Optimizer state
and weights take 16 bytes per parameter, as tsumugi's bf16 weights + fp32 master + moments.

Models (the arithmetic of Hugging Face's GPT2LMHeadModel and LlamaForCausalLM):
  gpt2-124m: 12 layers, d 768, 12 heads, vocab 32768, T 1024, batch 32; tied embeddings,
             learned positions, LayerNorm, GELU (tanh), biases.
  llama-1b:  16 layers, d 2048, 32 heads, 8 key/value heads, SwiGLU 8192, vocab 32768, T 2048,
             batch 8; tied embeddings, RMSNorm, RoPE (rotate-half, theta 10000), no biases.

MFU = model FLOPs per second / the bf16 rate of an 8192^3 torch.matmul measured in the same
process (best of 10 after 3 warm-ups). Model FLOPs per token = 6 N + 12 L T D, N = parameters in
matrix products (projections and the tied head; not the embedding lookups), as tsumugi counts.

Each configuration prints a line `RESULT {json}`; a failed one prints `RESULT {"error": ...}` and
the script goes on with the next. Standard library + torch only.

  python3 tools/bench_torch.py --models gpt2-124m,llama-1b --modes eager,compile

On a CPU (`--device cpu`, fp32, `--threads N`) the same script is the reference for
`tsumugi bench train --device cpu` (tools/bench_cpu_vs_torch.sh). It also runs on PyTorch 1.13
(Debian 12's python3-torch), which has neither F.scaled_dot_product_attention, nn.RMSNorm nor
torch.compile: attention is then the explicit masked softmax(q k^T / sqrt(hd)) v that models
of that version were written with, RMSNorm the Hugging Face formula, and `compile` reports an
error.
"""
import argparse
import gc
import json
import math
import resource
import statistics
import sys
import time
import traceback

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("bench_torch: PyTorch is not installed for " + sys.executable, file=sys.stderr)
    sys.exit(2)

PRESETS = {
    "gpt2-124m": dict(arch="gpt2", layers=12, heads=12, kv_heads=12, dim=768, ffn=3072, vocab=32768, seq=1024,
                      batch=32),
    "llama-1b": dict(arch="llama", layers=16, heads=32, kv_heads=8, dim=2048, ffn=8192, vocab=32768, seq=2048,
                     batch=8),
    # tsumugi bench train's defaults (`--arch gpt2`, and `--arch llama --kv-heads 2`): CPU comparisons.
    "gpt2-small": dict(arch="gpt2", layers=4, heads=4, kv_heads=4, dim=256, ffn=1024, vocab=8192, seq=256, batch=8),
    "llama-small": dict(arch="llama", layers=4, heads=4, kv_heads=2, dim=256, ffn=768, vocab=8192, seq=256, batch=8),
    # A few seconds on a CPU: checks this script, not a benchmark.
    "tiny": dict(arch="llama", layers=2, heads=4, kv_heads=2, dim=64, ffn=160, vocab=512, seq=64, batch=2),
    "tiny-gpt2": dict(arch="gpt2", layers=2, heads=4, kv_heads=4, dim=64, ffn=256, vocab=512, seq=64, batch=2),
}


def causal_attention(q, k, v):
    """(B, H, T, hd) queries, (B, Hkv, T, hd) keys and values -> (B, H, T, hd), causal."""
    grouped = k.shape[1] != q.shape[1]
    if hasattr(F, "scaled_dot_product_attention"):
        if grouped:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if grouped:  # PyTorch 1.x: each key/value head serves H / Hkv query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    T = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


class RMSNormFallback(nn.Module):
    """nn.RMSNorm for PyTorch before 2.4: x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


RMSNorm = getattr(nn, "RMSNorm", RMSNormFallback)


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["dim"]
        self.heads = c["heads"]
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)  # q, k, v (HF stores it transposed, as a Conv1D)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, c["ffn"])
        self.mlp_proj = nn.Linear(c["ffn"], d)

    def forward(self, x):
        B, T, D = x.shape
        hd = D // self.heads
        q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab"], c["dim"])
        self.wpe = nn.Embedding(c["seq"], c["dim"])
        self.h = nn.ModuleList(GPT2Block(c) for _ in range(c["layers"]))
        self.ln_f = nn.LayerNorm(c["dim"], eps=1e-5)

    def forward(self, ids, targets):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)  # dimension i pairs with i + head_dim / 2
    return torch.cat((-x2, x1), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["dim"], c["dim"] // c["heads"]
        self.heads, self.kv_heads = c["heads"], c["kv_heads"]
        self.input_layernorm = RMSNorm(d, eps=1e-5)
        self.q_proj = nn.Linear(d, c["heads"] * hd, bias=False)
        self.k_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False)
        self.v_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False)
        self.o_proj = nn.Linear(c["heads"] * hd, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d, eps=1e-5)
        self.gate_proj = nn.Linear(d, c["ffn"], bias=False)
        self.up_proj = nn.Linear(d, c["ffn"], bias=False)
        self.down_proj = nn.Linear(c["ffn"], d, bias=False)

    def forward(self, x, cos, sin):
        B, T, D = x.shape
        hd = D // self.heads
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kv_heads, hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = causal_attention(q, k, v)
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, D))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c, theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleList(LlamaBlock(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"], eps=1e-5)
        hd = c["dim"] // c["heads"]
        inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
        angles = torch.outer(torch.arange(c["seq"], dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # (T, hd)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.embed_tokens(ids)
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = F.linear(self.norm(x), self.embed_tokens.weight)  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def init_weights(model, layers):
    """normal(0, 0.02), residual output projections scaled by 1/sqrt(2 L), biases 0 (as tsumugi)."""
    for name, p in model.named_parameters():
        if p.dim() == 1:  # norm weights 1, biases (of linears and LayerNorms) 0
            nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
        else:
            residual = name.endswith(("attn_proj.weight", "mlp_proj.weight", "o_proj.weight", "down_proj.weight"))
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers) if residual else 0.02)


def matmul_parameters(model, c):
    embeddings = ("wte.weight", "wpe.weight", "embed_tokens.weight")
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and not name.endswith(embeddings))
    return n + c["vocab"] * c["dim"]  # the tied head


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_gemm_tflops(device, n):
    """Best of 10 timed (n, n) x (n, n) products after 3 warm-ups, random normal data."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = 0.0
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - start) / 1e12)
    return best


def run_config(name, c, mode, args, device, gemm_tflops):
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    if int(torch.__version__.split(".")[0]) >= 2:  # a device is a context manager: build on it
        with torch.device(device):
            model = GPT2(c) if c["arch"] == "gpt2" else Llama(c)
    else:
        model = (GPT2(c) if c["arch"] == "gpt2" else Llama(c)).to(device)
    init_weights(model, c["layers"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    fused = {"fused": True} if device.type == "cuda" else {}  # PyTorch 1.x's AdamW has no `fused`
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.95), eps=1e-8, **fused)
    if mode == "compile" and not hasattr(torch, "compile"):
        raise RuntimeError(f"torch {torch.__version__} has no torch.compile (PyTorch 2.0 or newer)")
    step_model = torch.compile(model) if mode == "compile" else model
    generator = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, c["vocab"], (c["batch"], c["seq"] + 1), generator=generator).to(device)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6.0 * matmul_parameters(model, c) + 12.0 * c["layers"] * c["seq"] * c["dim"]
    print(f"bench_torch: {name} {mode}: {n_params / 1e6:.1f} M parameters, batch {c['batch']}, seq {c['seq']}",
          flush=True)
    times, losses, warmup_s = [], [], 0.0
    for step in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = step_model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        elapsed = time.perf_counter() - start
        losses.append(loss.item())
        if step < args.warmup:
            warmup_s += elapsed
        else:
            times.append(elapsed)
        print(f"step {step:3d}{' (warm-up)' if step < args.warmup else ''} loss {losses[-1]:.4f} "
              f"time {elapsed:.3f} s", flush=True)
    step_s = statistics.median(times)
    tokens_per_s = c["batch"] * c["seq"] / step_s
    model_tflops = flops_per_token * tokens_per_s / 1e12
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    # On the CPU, the process's peak resident memory (what tsumugi bench train reports there).
    rss = {} if device.type == "cuda" else {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    return {"bench": "train", "impl": f"torch-{mode}", "preset": name, "device": str(device),
            "dtype": "bf16-autocast" if device.type == "cuda" else "f32",
            "batch": c["batch"], "seq": c["seq"], "params": n_params, "step_ms": round(step_s * 1e3, 2),
            "tokens_per_s": round(tokens_per_s, 1), "model_tflops": round(model_tflops, 4),
            "gemm_tflops": round(gemm_tflops, 4), "mfu": round(model_tflops / gemm_tflops, 4),
            "peak_mem_gib": round(peak, 2), "warmup_s": round(warmup_s, 1), "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4), "torch": torch.__version__, **rss}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2-124m,llama-1b", help="comma-separated: " + ", ".join(PRESETS))
    parser.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    parser.add_argument("--batch", type=int, default=0, help="sequences per step (0: the preset's)")
    parser.add_argument("--seq", type=int, default=0, help="sequence length (0: the preset's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (to check the script only)")
    parser.add_argument("--gemm-size", type=int, default=0,
                        help="n of the n^3 product MFU is taken against (0: 8192 on a GPU, 2048 on the CPU, as tsumugi)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads; 0: PyTorch's default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.gemm_size == 0:
        args.gemm_size = 8192 if device.type == "cuda" else 2048
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_torch: --device {args.device}: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    for m in models:
        if m not in PRESETS:
            parser.error(f"unknown model {m!r} (choose from {', '.join(PRESETS)})")
    for m in modes:
        if m not in ("eager", "compile"):
            parser.error(f"unknown mode {m!r} (eager or compile)")
    if device.type == "cuda":
        print(f"bench_torch: torch {torch.__version__}, {torch.cuda.get_device_name(device)}", flush=True)
    else:
        print(f"bench_torch: torch {torch.__version__}, cpu, {torch.get_num_threads()} threads", flush=True)
    gemm_tflops = measure_gemm_tflops(device, args.gemm_size)
    print("RESULT " + json.dumps({"bench": "gemm", "impl": "torch", "device": str(device), "n": args.gemm_size,
                                  "tflops": round(gemm_tflops, 2)}), flush=True)
    failed = 0
    for name in models:
        c = dict(PRESETS[name])
        c["batch"] = args.batch or c["batch"]
        c["seq"] = args.seq or c["seq"]
        for mode in modes:
            try:
                result = run_config(name, c, mode, args, device, gemm_tflops)
            except Exception as e:  # out of memory, a compiler error: report it, go on
                traceback.print_exc()
                failed += 1
                result = {"bench": "train", "impl": f"torch-{mode}", "preset": name,
                          "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
            print("RESULT " + json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
