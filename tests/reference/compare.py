#!/usr/bin/env python3
"""Checks tsumugi's GPT-2 and Llama against an independent float64 NumPy implementation.

Runs dump_model (which writes weights with Hugging Face names, ids, and tsumugi's float32 logits
and loss), recomputes the forward pass here from the safetensors file following the Hugging Face
transformers definitions (GPT2LMHeadModel with gelu_new; LlamaForCausalLM with RMSNorm,
rotate-half RoPE, SwiGLU and grouped-query attention), and requires agreement to 1e-5 relative.

Usage: compare.py DUMP_MODEL_EXE gpt2|llama
"""
import json
import subprocess
import sys
import tempfile

import numpy as np

from reference_models import forward, read_safetensors


def main():
    exe, arch = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([exe, arch, d], check=True)
        c = json.load(open(f"{d}/config.json"))
        w = {k: v.astype(np.float64) for k, v in read_safetensors(f"{d}/model.safetensors").items()}
        out = read_safetensors(f"{d}/outputs.safetensors")
    ids, targets = out["inputs"].astype(np.int64), out["targets"].astype(np.int64)
    logits = forward(w, c, ids)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    loss = -np.take_along_axis(log_probs, targets[..., None], axis=-1).mean()
    logit_error = np.abs(out["logits"] - logits).max() / np.abs(logits).max()
    loss_error = abs(float(out["loss"][0]) - loss) / abs(loss)
    print(f"{arch}: logits max relative error {logit_error:.2e}, loss {loss:.6f} relative error {loss_error:.2e}")
    if not (logit_error < 1e-5 and loss_error < 1e-5):
        sys.exit(f"{arch}: tsumugi differs from the reference implementation")


if __name__ == "__main__":
    main()
