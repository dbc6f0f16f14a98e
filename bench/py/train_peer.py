"""Python PyTorch peer for bench/train.ts: the same training job (model shape, batches in the same order, AdamW,
cosine schedule with warm-up, clipping at 1.0, token-mean cross-entropy over trained tokens) in eager PyTorch.

argv[1]: JSON file {model: {...}, threads, lr, warmup, steps, batches: [[ids, targets], ...]}. Prints JSON with the
wall time of every step."""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Llama  # noqa: E402

job = json.load(open(sys.argv[1]))
torch.set_num_threads(job["threads"])
torch.manual_seed(0)
model = Llama(job["model"])
opt = torch.optim.AdamW(model.parameters(), lr=job["lr"], weight_decay=0.0)
# job["compile"]: the same model under torch.compile (PyTorch 2.x); its first steps compile.
forward = torch.compile(model) if job.get("compile") else model
total, warm = job["steps"], job["warmup"]


def lr_at(step):
    if step < warm:
        return job["lr"] * step / max(1, warm)
    p = (step - warm) / max(1, total - warm)
    return job["lr"] * 0.5 * (1 + math.cos(math.pi * p))


batches = [(torch.tensor(b[0]), torch.tensor(b[1])) for b in job["batches"]]
times, losses = [], []
for step in range(total):
    ids, tg = batches[step % len(batches)]
    t = time.perf_counter()
    logits = forward(ids)
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tg.reshape(-1), reduction="none")
    loss = tok.sum() / (tg != -100).sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append((time.perf_counter() - t) * 1000)
    losses.append(loss.item())
print(json.dumps({"torch": torch.__version__, "step_ms": times, "losses": losses}))
