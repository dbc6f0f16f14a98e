// GPU training step of a Llama-1B-shaped model (TinyLlama's shape) in bf16 autocast: ours vs PyTorch eager in
// Python on the same machine in the same command. Prints JSON with the step-time ratio and MFU.
// Run on the lent GPU machine after bench/gpu/setup.sh.  Env: GPU_STEPS (12), GPU_BATCH (4), GPU_SEQ (2048).
import { execFileSync } from 'node:child_process';
import * as torch from '../../packages/torch/src/index.js';
import { native } from '../../packages/torch/src/core.js';
import { LlamaForCausalLM, type LlamaConfig } from '../../packages/retain/src/models/llama.js';

const steps = Number(process.env.GPU_STEPS ?? 12);
const batch = Number(process.env.GPU_BATCH ?? 4);
const seq = Number(process.env.GPU_SEQ ?? 2048);
const PEAK_BF16 = Number(process.env.GPU_PEAK_TFLOPS ?? 989) * 1e12; // H100 SXM dense bf16
const shape = { vocab_size: 32000, dim: 2048, hidden_dim: 5632, n_layers: 22, n_heads: 32, n_kv_heads: 4, seq_len: seq, eps: 1e-5, rope_theta: 10000 };
const config: LlamaConfig = {
  model_type: 'llama', vocab_size: shape.vocab_size, hidden_size: shape.dim, intermediate_size: shape.hidden_dim, num_hidden_layers: shape.n_layers,
  num_attention_heads: shape.n_heads, num_key_value_heads: shape.n_kv_heads, max_position_embeddings: seq, rms_norm_eps: shape.eps, rope_theta: 10000,
};
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

torch.manualSeed(0);
const model = new LlamaForCausalLM(config).to('cuda');
const params = model.parameters();
const nParams = params.reduce((s, p) => s + p.numel(), 0);
const opt = new torch.optim.AdamW(params, { lr: 1e-4, weightDecay: 0 });
const ids = torch.randint(0, shape.vocab_size, [batch, seq + 1], { device: 'cuda' });
const x = ids.narrow(1, 0, seq);
const y = ids.narrow(1, 1, seq).reshape(-1);
const ms: number[] = [];
let loss = NaN;
for (let i = 0; i < steps; i++) {
  native.cudaSynchronize();
  const t = performance.now();
  torch.tidy(() => {
    const logits = torch.autocast('bfloat16', () => model.forward(x));
    const l = torch.crossEntropy(logits.float().reshape(-1, shape.vocab_size), y);
    l.backward();
    opt.step();
    opt.zeroGrad();
    loss = l.item();
  });
  native.cudaSynchronize();
  ms.push(performance.now() - t);
}
const [, peak] = native.cudaMemory(0);
model.dispose();
opt.dispose();
torch.dispose([ids, x, y]);
native.cudaMemory(0, true);
const py = JSON.parse(execFileSync('python3', ['bench/py/gpu_step_peer.py', JSON.stringify({ model: shape, batch, steps })], { encoding: 'utf8' }).trim().split('\n').pop()!);
const pyFused = JSON.parse(execFileSync('python3', ['bench/py/gpu_step_peer.py', JSON.stringify({ model: shape, batch, steps, fused: true })], { encoding: 'utf8' }).trim().split('\n').pop()!);
const warm = 3;
const ours = median(ms.slice(warm));
const theirs = median((py.step_ms as number[]).slice(warm));
const theirsFused = median((pyFused.step_ms as number[]).slice(warm));
const tokens = batch * seq;
// 6·N·tokens for the dense parts plus attention's 12·layers·d·T² per sequence (forward + backward), causal halved.
const flops = 6 * nParams * tokens + 6 * shape.n_layers * shape.dim * seq * seq * batch;
console.log(JSON.stringify({
  benchmark: 'gpu-step', model: 'Llama (TinyLlama-1.1B shape), bf16 autocast, AdamW', params: nParams, batch, seq, torch: torch.torchVersion(),
  ratio: +(ours / theirs).toFixed(3), ratio_vs_python_fused_adamw: +(ours / theirsFused).toFixed(3),
  ours: { median_ms: +ours.toFixed(1), step_ms: ms.map((v) => +v.toFixed(1)), loss, peak_mem_gb: +(peak / 1e9).toFixed(2), mfu: +(flops / (ours / 1000) / PEAK_BF16).toFixed(3) },
  python: { median_ms: +theirs.toFixed(1), step_ms: (py.step_ms as number[]).map((v: number) => +v.toFixed(1)), loss: py.loss, peak_mem_gb: +py.peak_mem_gb.toFixed(2), mfu: +(flops / (theirs / 1000) / PEAK_BF16).toFixed(3) },
  python_fused_adamw: { median_ms: +theirsFused.toFixed(1), mfu: +(flops / (theirsFused / 1000) / PEAK_BF16).toFixed(3) },
  peak_tflops_assumed: PEAK_BF16 / 1e12, targets: { ratio: '<= 0.95', mfu: '>= 0.40' },
}, null, 2));
