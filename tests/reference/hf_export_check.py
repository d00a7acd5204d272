#!/usr/bin/env python3
"""Checks a `tsumugi export --format hf` directory as transformers would read it.

Reads only config.json (Hugging Face keys) and model.safetensors, runs an independent float64
NumPy GPT-2/Llama, decodes greedily from the prompt ids, and requires the same tokens as
`tsumugi generate --temperature 0` (until the reference's two best logits come within 1e-3 of
each other, where float32 and float64 may rightly disagree). Also checks that the tensor names
and shapes are those transformers expects for the config, and that the tokenizer files exist.

Usage: hf_export_check.py EXPORT_DIR PROMPT_IDS GENERATED_IDS   (ids comma-separated)
"""
import json
import os
import sys

import numpy as np

from reference_models import forward, from_hf_config, read_safetensors


def expected_shapes(hf):
    """Tensor names and shapes of a transformers state dict for this config (persistent ones)."""
    shapes = {}
    if hf["model_type"] == "gpt2":
        d, v, n, f = hf["n_embd"], hf["vocab_size"], hf["n_positions"], hf.get("n_inner") or 4 * hf["n_embd"]
        shapes["transformer.wte.weight"] = (v, d)
        shapes["transformer.wpe.weight"] = (n, d)
        for i in range(hf["n_layer"]):
            p = f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                shapes[p + ln + ".weight"] = shapes[p + ln + ".bias"] = (d,)
            shapes[p + "attn.c_attn.weight"], shapes[p + "attn.c_attn.bias"] = (d, 3 * d), (3 * d,)
            shapes[p + "attn.c_proj.weight"], shapes[p + "attn.c_proj.bias"] = (d, d), (d,)
            shapes[p + "mlp.c_fc.weight"], shapes[p + "mlp.c_fc.bias"] = (d, f), (f,)
            shapes[p + "mlp.c_proj.weight"], shapes[p + "mlp.c_proj.bias"] = (f, d), (d,)
        shapes["transformer.ln_f.weight"] = shapes["transformer.ln_f.bias"] = (d,)
    else:
        d, v, f = hf["hidden_size"], hf["vocab_size"], hf["intermediate_size"]
        hd = hf.get("head_dim", d // hf["num_attention_heads"])
        q, kv = hf["num_attention_heads"] * hd, hf["num_key_value_heads"] * hd
        shapes["model.embed_tokens.weight"] = (v, d)
        for i in range(hf["num_hidden_layers"]):
            p = f"model.layers.{i}."
            shapes[p + "self_attn.q_proj.weight"] = (q, d)
            shapes[p + "self_attn.k_proj.weight"] = shapes[p + "self_attn.v_proj.weight"] = (kv, d)
            shapes[p + "self_attn.o_proj.weight"] = (d, q)
            shapes[p + "mlp.gate_proj.weight"] = shapes[p + "mlp.up_proj.weight"] = (f, d)
            shapes[p + "mlp.down_proj.weight"] = (d, f)
            shapes[p + "input_layernorm.weight"] = shapes[p + "post_attention_layernorm.weight"] = (d,)
        shapes["model.norm.weight"] = (d,)
    if not hf.get("tie_word_embeddings", hf["model_type"] == "gpt2"):
        shapes["lm_head.weight"] = (hf["vocab_size"], d)
    return shapes


def main():
    out, prompt, generated = sys.argv[1], sys.argv[2], sys.argv[3]
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
                 "tokenizer_config.json", "special_tokens_map.json"):
        if not os.path.exists(f"{out}/{name}"):
            sys.exit(f"missing {name}")
    hf = json.load(open(f"{out}/config.json"))
    weights = read_safetensors(f"{out}/model.safetensors")
    want = expected_shapes(hf)
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != want:
        sys.exit(f"state dict differs from what transformers expects: "
                 f"missing {sorted(set(want) - set(got))[:5]}, unexpected {sorted(set(got) - set(want))[:5]}, "
                 f"shapes {[(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]][:5]}")
    tokenizer_config = json.load(open(f"{out}/tokenizer_config.json"))
    assert tokenizer_config["tokenizer_class"] == "LlamaTokenizer" and not tokenizer_config["add_bos_token"]

    config = from_hf_config(hf)
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    ids = [int(x) for x in prompt.split(",")]
    expected = [int(x) for x in generated.split(",")]
    # Every generated token is checked. Where the reference's two best logits are within 1e-3
    # (a near tie, which float32 may rightly break the other way), tsumugi's token must be one of
    # the two, and decoding goes on from it.
    matched = ties = 0
    for token in expected:
        logits = forward(w, config, np.array([ids]))[0, -1]
        second, best = np.argsort(logits)[-2:]
        if logits[best] - logits[second] < 1e-3:
            if token not in (int(best), int(second)):
                sys.exit(f"token {matched + ties}: reference has a near tie of {int(best)} and {int(second)}, "
                         f"tsumugi picked {token}")
            ties += 1
        elif int(best) != token:
            sys.exit(f"token {matched + ties}: reference picks {int(best)}, tsumugi picked {token}")
        else:
            matched += 1
        ids.append(token)
    if matched < len(expected) // 2:
        sys.exit(f"only {matched} of {len(expected)} tokens were clear choices ({ties} near ties)")
    print(f"{hf['model_type']}: {len(want)} tensors as transformers expects; {matched} greedy tokens identical"
          f"{f', {ties} near tie(s) within the top two' if ties else ''}")


if __name__ == "__main__":
    main()
