"""Python PyTorch peer for bench/engine.ts: the same measurements with the same libtorch and thread count.

Prints one JSON object: {"op_ns": ..., "step_ms": [...], "torch": version}.
The model mirrors packages/retain/src/models/llama.ts (Hugging Face Llama layout, rotate-half RoPE)."""
import json
import sys
import time

import os

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Llama  # noqa: E402

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])


def op_overhead(n):
    a = torch.ones(1)
    for _ in range(10000):
        a + a
    # CPU time of this process: robust to other load on a shared machine (single-threaded loop).
    best = float("inf")
    for _ in range(5):
        t = time.process_time_ns()
        for _ in range(n):
            a + a
        best = min(best, (time.process_time_ns() - t) / n)
    return best


def build(c, hf, compiled):
    """The bench's own Llama, or (hf) transformers' LlamaForCausalLM of the same shape as users run it; compiled wraps
    either in torch.compile (its first steps compile; the bench excludes them as warm-up)."""
    if hf:
        from transformers import LlamaConfig, LlamaForCausalLM
        conf = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["dim"], intermediate_size=c["hidden_dim"],
                           num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
                           num_key_value_heads=c["n_kv_heads"], max_position_embeddings=c["seq_len"],
                           rms_norm_eps=c["eps"], rope_theta=c["rope_theta"], tie_word_embeddings=False,
                           attn_implementation="sdpa")
        inner = LlamaForCausalLM(conf)
        model = lambda x: inner(input_ids=x, use_cache=False).logits  # noqa: E731
        params = inner.parameters()
    else:
        inner = Llama(c)
        model, params = inner, inner.parameters()
    if compiled:
        model = torch.compile(model)
    return model, list(params)


def train_steps(c, steps, hf=False, compiled=False):
    torch.manual_seed(0)
    model, params = build(c, hf, compiled)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, c["vocab_size"], (c["batch"], c["seq_len"] + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    times, cpu = [], []
    for _ in range(steps):
        t = time.perf_counter()
        c = time.process_time()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return times, cpu, float(loss)


out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
if cfg.get("op_n"):
    out["op_ns"] = op_overhead(cfg["op_n"])
if cfg.get("steps"):
    out["step_ms"], out["step_cpu_ms"], out["final_loss"] = train_steps(cfg["model"], cfg["steps"], cfg.get("hf", False), cfg.get("compile", False))
print(json.dumps(out))
