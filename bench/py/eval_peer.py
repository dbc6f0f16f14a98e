"""Python PyTorch peer for bench/eval.ts: multiple-choice scoring by log-likelihood, lm-evaluation-harness style, in
eager PyTorch, on the token windows retain's harness built (so both sides score identical inputs).

Policy, the same as retain's src/eval/score.ts: windows sorted by input length, longest first (a stable sort, so ties
keep their order and the batches are the same); batches of B; right padding with id 0 (causal attention never lets a
real position see the padding after it); one forward per batch; log_softmax over only the continuation rows; gather
the targets. The argmax per row is taken too (lm-evaluation-harness's is_greedy), as retain computes it.

argv[1]: JSON file {threads, batch_size, warmup, repeats, model: {...llama_ref config}, weights: safetensors path with
retain's state-dict names, windows: [[input_ids, target_ids], ...]}. Prints one JSON line: the per-window summed
log-probabilities and greedy flags (from the last repeat) and the wall and CPU time of every timed pass."""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from llama_ref import Llama  # noqa: E402

job = json.load(open(sys.argv[1]))
torch.set_num_threads(job["threads"])

model = Llama(job["model"])
# retain names the decoder's parameters model.* (HF checkpoint keys); llama_ref keeps them at the top level.
sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in st_io.load(job["weights"]).items()}
model.load_state_dict(sd, strict=True)
model.eval()

windows = job["windows"]
B = job["batch_size"]


def score(windows):
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
    sums = [0.0] * len(windows)
    greedy = [False] * len(windows)
    with torch.inference_mode():
        for s in range(0, len(order), B):
            idx = order[s:s + B]
            T = len(windows[idx[0]][0])
            ids = torch.zeros(len(idx), T, dtype=torch.long)
            rows, tg = [], []
            for b, w in enumerate(idx):
                inp, targets = windows[w]
                ids[b, :len(inp)] = torch.tensor(inp)
                first = b * T + len(inp) - len(targets)
                rows.extend(range(first, first + len(targets)))
                tg.extend(targets)
            logits = model(ids)  # [b, T, V]
            sel = logits.view(-1, logits.shape[-1]).index_select(0, torch.tensor(rows))  # [N, V]
            target = torch.tensor(tg)
            lp = sel.log_softmax(-1).gather(1, target.unsqueeze(1)).squeeze(1).tolist()
            hit = (sel.argmax(-1) == target).tolist()
            k = 0
            for w in idx:
                n = len(windows[w][1])
                sums[w] = sum(lp[k:k + n])
                greedy[w] = all(hit[k:k + n])
                k += n
    return sums, greedy


for _ in range(job["warmup"]):
    score(windows)
# Wall time, and this process's CPU time: with one thread the CPU time is the work done, whatever else the machine runs.
times, cpu = [], []
for _ in range(job["repeats"]):
    t, c = time.perf_counter(), time.process_time()
    sums, greedy = score(windows)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"torch": torch.__version__, "seconds": times, "cpu_seconds": cpu, "logprobs": sums, "greedy": greedy}))
