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


def train_steps(c, steps):
    torch.manual_seed(0)
    model = Llama(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
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
    out["step_ms"], out["step_cpu_ms"], out["final_loss"] = train_steps(cfg["model"], cfg["steps"])
print(json.dumps(out))
