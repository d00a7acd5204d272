"""Independent float64 NumPy implementations of Hugging Face's GPT2LMHeadModel and
LlamaForCausalLM, written from the transformers definitions, and a safetensors reader.

A config is a dict with keys arch, layers, heads, kv_heads, dim, norm_eps, rope_theta, tied;
from_hf_config() reads one from a Hugging Face config.json.
"""
import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v):
    """q (B, Hq, T, hd), k and v (B, Hkv, T, hd): causal, keys repeated for grouped heads."""
    groups = q.shape[1] // k.shape[1]
    k = np.repeat(k, groups, axis=1)
    v = np.repeat(v, groups, axis=1)
    t = q.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((t, t), dtype=bool)), scores, -np.inf)
    return softmax(scores) @ v


def gpt2_forward(w, c, ids):
    def layer_norm(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + c["norm_eps"]) * w[p + ".weight"] + w[p + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

    b, t = ids.shape
    h, d = c["heads"], c["dim"]
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][np.arange(t)]
    for i in range(c["layers"]):
        p = f"transformer.h.{i}."
        a = layer_norm(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D
        q, k, v = (z.reshape(b, t, h, d // h).transpose(0, 2, 1, 3) for z in np.split(a, 3, axis=-1))
        y = attention(q, k, v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = gelu_new(layer_norm(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, "transformer.ln_f")
    return x @ w["transformer.wte.weight"].T


def llama_forward(w, c, ids):
    def rms_norm(x, p):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + c["norm_eps"]) * w[p + ".weight"]

    def rope(x):  # x (B, H, T, hd); Hugging Face computes inv_freq and the angles in float32
        hd = x.shape[-1]
        inv_freq = (1.0 / (np.float32(c["rope_theta"]) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))))
        angles = np.arange(x.shape[2], dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
        emb = np.concatenate([angles, angles], axis=-1).astype(np.float64)
        rotated = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
        return x * np.cos(emb) + rotated * np.sin(emb)

    def silu(x):
        return x / (1.0 + np.exp(-x))

    b, t = ids.shape
    h, hkv, d = c["heads"], c["kv_heads"], c["dim"]
    hd = d // h
    x = w["model.embed_tokens.weight"][ids]
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        n = rms_norm(x, p + "input_layernorm")
        q = (n @ w[p + "self_attn.q_proj.weight"].T).reshape(b, t, h, hd).transpose(0, 2, 1, 3)
        k = (n @ w[p + "self_attn.k_proj.weight"].T).reshape(b, t, hkv, hd).transpose(0, 2, 1, 3)
        v = (n @ w[p + "self_attn.v_proj.weight"].T).reshape(b, t, hkv, hd).transpose(0, 2, 1, 3)
        y = attention(rope(q), rope(k), v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + y @ w[p + "self_attn.o_proj.weight"].T
        n = rms_norm(x, p + "post_attention_layernorm")
        m = silu(n @ w[p + "mlp.gate_proj.weight"].T) * (n @ w[p + "mlp.up_proj.weight"].T)
        x = x + m @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, "model.norm")
    head = w["model.embed_tokens.weight"] if c["tied"] else w["lm_head.weight"]
    return x @ head.T


def from_hf_config(hf):
    """Our config dict from a Hugging Face config.json (GPT2LMHeadModel or LlamaForCausalLM)."""
    if hf["model_type"] == "gpt2":
        return {"arch": "gpt2", "layers": hf["n_layer"], "heads": hf["n_head"], "kv_heads": hf["n_head"],
                "dim": hf["n_embd"], "norm_eps": hf["layer_norm_epsilon"], "rope_theta": 0.0,
                "tied": hf.get("tie_word_embeddings", True)}
    if hf["model_type"] == "llama":
        return {"arch": "llama", "layers": hf["num_hidden_layers"], "heads": hf["num_attention_heads"],
                "kv_heads": hf.get("num_key_value_heads", hf["num_attention_heads"]), "dim": hf["hidden_size"],
                "norm_eps": hf["rms_norm_eps"], "rope_theta": hf.get("rope_theta", 10000.0),
                "tied": hf.get("tie_word_embeddings", False)}
    raise ValueError(f"unsupported model_type {hf['model_type']}")


def forward(weights, config, ids):
    """Logits (B, T, V) for integer ids (B, T)."""
    return (gpt2_forward if config["arch"] == "gpt2" else llama_forward)(weights, config, ids)
