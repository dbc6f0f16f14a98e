"""Python PyTorch peer for bench/gpu/step.ts: a Llama training step on CUDA under bf16 autocast, AdamW (PyTorch's
default implementation for CUDA tensors), same shapes. Prints JSON with per-step milliseconds (CUDA-synchronised)."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Llama  # noqa: E402

job = json.loads(sys.argv[1])
c = job["model"]
torch.manual_seed(0)
model = Llama(c).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=job.get("fused", False))
ids = torch.randint(0, c["vocab_size"], (job["batch"], c["seq_len"] + 1), device="cuda")
x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
times = []
for _ in range(job["steps"]):
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"torch": torch.__version__, "step_ms": times, "loss": loss.item(), "params": sum(p.numel() for p in model.parameters()), "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9}))
