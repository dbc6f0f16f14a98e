// Every nn layer against python3-torch: same weights and inputs, then forward outputs, the input gradients, every
// parameter gradient and the buffers after the step must agree. One python process computes all references.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

const { nn } = torch;
type Tensor = torch.Tensor;
type DT = 'float32' | 'float64';

// Python counterparts of the modules torch 1.13 lacks (RMSNorm, attention, the blocks), written independently of the
// TypeScript ones: attention is spelled out with matmul/softmax and the grouped-query heads with expand+reshape.
const PY_PRELUDE = `
import torch.nn as nn
import torch.nn.functional as F

class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
    def forward(self, x):
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)

class Attn(nn.Module):
    def __init__(self, C, H, Hkv=None, fused=False, bias=True):
        super().__init__()
        self.H, self.Hkv, self.D, self.fused = H, Hkv or H, C // H, fused
        D, Hkv = self.D, self.Hkv
        if fused:
            self.c_attn = nn.Linear(C, (H + 2 * Hkv) * D, bias=bias)
            self.c_proj = nn.Linear(H * D, C, bias=bias)
        else:
            self.q_proj = nn.Linear(C, H * D, bias=bias)
            self.k_proj = nn.Linear(C, Hkv * D, bias=bias)
            self.v_proj = nn.Linear(C, Hkv * D, bias=bias)
            self.o_proj = nn.Linear(H * D, C, bias=bias)
    def forward(self, x):
        B, T, C = x.shape
        H, Hkv, D = self.H, self.Hkv, self.D
        if self.fused:
            q, k, v = self.c_attn(x).split([H * D, Hkv * D, Hkv * D], 2)
            out = self.c_proj
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            out = self.o_proj
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, Hkv, D).transpose(1, 2)
        v = v.view(B, T, Hkv, D).transpose(1, 2)
        rep = H // Hkv
        k = k[:, :, None].expand(B, Hkv, rep, T, D).reshape(B, H, T, D)
        v = v[:, :, None].expand(B, Hkv, rep, T, D).reshape(B, H, T, D)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float('-inf')).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
        return out(y)

class MLP(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.c_fc = nn.Linear(C, hidden)
        self.c_proj = nn.Linear(hidden, C)
    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))

class GatedMLP(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(C, hidden, bias=False)
        self.up_proj = nn.Linear(C, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, C, bias=False)
    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

class GPT2Block(nn.Module):
    def __init__(self, C, H, hidden):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = Attn(C, H, fused=True)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = MLP(C, hidden)
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class LlamaBlock(nn.Module):
    def __init__(self, C, H, Hkv, hidden):
        super().__init__()
        self.input_layernorm = RMSNorm(C)
        self.self_attn = Attn(C, H, Hkv, fused=False, bias=False)
        self.post_attention_layernorm = RMSNorm(C)
        self.mlp = GatedMLP(C, hidden)
    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))

class Stack(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
    def forward(self, x):
        for l in self.layers:
            x = torch.tanh(l(x))
        return x
`;

const PY_DRIVER = `
res = {}
for c in inp:
    dt = getattr(torch, c['dtype'])
    m = eval(c['py']).to(dt)
    cur = m.state_dict()
    m.load_state_dict({k: torch.tensor(v, dtype=cur[k].dtype) for k, v in c['sd'].items()})
    m.train(c['train'])
    xs = [torch.tensor(x['v'], dtype=getattr(torch, x['dtype'])).requires_grad_(x['grad']) for x in c['inputs']]
    if c['seed'] is not None:
        torch.manual_seed(c['seed'])
    env = {'m': m, 'xs': xs, 'torch': torch, 'F': F}
    exec(c['pyRun'], env)
    ys = env['ys']
    loss = sum((y * torch.tensor(r, dtype=y.dtype)).sum() for y, r in zip(ys, c['rs']))
    loss.backward()
    res[c['name']] = {'ys': ys, 'gx': [x.grad for x in xs if x.requires_grad],
                      'gp': {n: p.grad for n, p in m.named_parameters()}, 'buf': dict(m.named_buffers())}
out['res'] = res
`;

/** A JS module with a ModuleList, mirroring the python Stack. */
class Stack extends nn.Module {
  layers: InstanceType<typeof nn.ModuleList<InstanceType<typeof nn.Linear>>>;
  constructor(sizes: number[], dtype?: DT) {
    super();
    this.layers = this.registerModule('layers', new nn.ModuleList(sizes.slice(1).map((b, i) => new nn.Linear(sizes[i], b, { dtype }))));
  }
  forward(x: Tensor): Tensor {
    return torch.tidy(() => {
      let h = x;
      for (const l of this.layers) h = l.forward(h).tanh();
      return h;
    });
  }
}

interface Case {
  name: string;
  build: (dtype: DT) => torch.nn.Module;
  py: string;
  /** Input shapes (random normal leaves requiring grad) or ready tensors (indices). */
  inputs: (number[] | (() => Tensor))[];
  run?: (m: any, xs: Tensor[]) => Tensor[];
  pyRun?: string;
  dtype?: DT;
  train?: boolean;
  seed?: number;
  prep?: (m: any) => void;
  tol?: { rtol: number; atol: number };
}

const F64 = { rtol: 1e-9, atol: 1e-11 };

const CASES: Case[] = [
  { name: 'Linear', build: (d) => new nn.Linear(5, 3, { dtype: d }), py: 'nn.Linear(5, 3)', inputs: [[4, 5]] },
  { name: 'Linear no bias, 3-d input', build: (d) => new nn.Linear(5, 3, { bias: false, dtype: d }), py: 'nn.Linear(5, 3, bias=False)', inputs: [[2, 4, 5]] },
  { name: 'Linear float32', dtype: 'float32', build: (d) => new nn.Linear(6, 4, { dtype: d }), py: 'nn.Linear(6, 4)', inputs: [[3, 6]], tol: { rtol: 1e-5, atol: 1e-6 } },
  {
    name: 'Embedding padding_idx',
    build: (d) => new nn.Embedding(7, 4, { paddingIdx: 2, dtype: d }),
    py: 'nn.Embedding(7, 4, padding_idx=2)',
    inputs: [() => torch.tensor([[0, 2, 5], [2, 6, 0]])],
  },
  {
    name: 'Embedding negative padding_idx',
    build: (d) => new nn.Embedding(5, 3, { paddingIdx: -1, dtype: d }),
    py: 'nn.Embedding(5, 3, padding_idx=-1)',
    inputs: [() => torch.tensor([4, 1, 4, 0])],
  },
  { name: 'LayerNorm', build: (d) => new nn.LayerNorm(6, { dtype: d }), py: 'nn.LayerNorm(6)', inputs: [[2, 3, 6]] },
  { name: 'LayerNorm 2-d shape', build: (d) => new nn.LayerNorm([3, 4], { eps: 1e-3, dtype: d }), py: 'nn.LayerNorm([3, 4], eps=1e-3)', inputs: [[2, 3, 4]] },
  { name: 'LayerNorm no affine', build: (d) => new nn.LayerNorm(5, { elementwiseAffine: false, dtype: d }), py: 'nn.LayerNorm(5, elementwise_affine=False)', inputs: [[4, 5]] },
  { name: 'RMSNorm', build: (d) => new nn.RMSNorm(6, { dtype: d }), py: 'RMSNorm(6)', inputs: [[2, 3, 6]] },
  { name: 'RMSNorm eps', build: (d) => new nn.RMSNorm(4, { eps: 1e-2, dtype: d }), py: 'RMSNorm(4, eps=1e-2)', inputs: [[5, 4]] },
  { name: 'Dropout train', build: () => new nn.Dropout(0.3), py: 'nn.Dropout(0.3)', inputs: [[6, 7]], seed: 1234 },
  { name: 'Dropout eval', build: () => new nn.Dropout(0.3), py: 'nn.Dropout(0.3)', inputs: [[6, 7]], train: false },
  { name: 'Conv2d', build: (d) => new nn.Conv2d(3, 4, 3, { padding: 1, dtype: d }), py: 'nn.Conv2d(3, 4, 3, padding=1)', inputs: [[2, 3, 6, 5]] },
  {
    name: 'Conv2d stride dilation groups',
    build: (d) => new nn.Conv2d(4, 6, [3, 2], { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 2, dtype: d }),
    py: 'nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)',
    inputs: [[2, 4, 7, 6]],
  },
  { name: 'Conv2d no bias, same padding', build: (d) => new nn.Conv2d(2, 3, 3, { padding: 'same', bias: false, dtype: d }), py: "nn.Conv2d(2, 3, 3, padding='same', bias=False)", inputs: [[1, 2, 5, 5]] },
  { name: 'Conv2d unbatched', build: (d) => new nn.Conv2d(2, 3, 2, { dtype: d }), py: 'nn.Conv2d(2, 3, 2)', inputs: [[2, 4, 4]] },
  {
    name: 'BatchNorm2d train',
    build: (d) => new nn.BatchNorm2d(3, { dtype: d }),
    py: 'nn.BatchNorm2d(3)',
    inputs: [[4, 3, 3, 2]],
    prep: perturbRunningStats,
  },
  {
    name: 'BatchNorm2d eval',
    build: (d) => new nn.BatchNorm2d(3, { dtype: d }),
    py: 'nn.BatchNorm2d(3)',
    inputs: [[4, 3, 3, 2]],
    train: false,
    prep: perturbRunningStats,
  },
  {
    name: 'BatchNorm2d cumulative momentum, no affine',
    build: (d) => new nn.BatchNorm2d(2, { momentum: null, affine: false, eps: 1e-3, dtype: d }),
    py: 'nn.BatchNorm2d(2, momentum=None, affine=False, eps=1e-3)',
    inputs: [[3, 2, 2, 2]],
  },
  {
    name: 'BatchNorm2d without running stats, eval',
    build: (d) => new nn.BatchNorm2d(2, { trackRunningStats: false, dtype: d }),
    py: 'nn.BatchNorm2d(2, track_running_stats=False)',
    inputs: [[3, 2, 2, 2]],
    train: false,
  },
  {
    name: 'LSTMCell',
    build: (d) => new nn.LSTMCell(3, 4, { dtype: d }),
    py: 'nn.LSTMCell(3, 4)',
    inputs: [[2, 3], [2, 4], [2, 4]],
    run: (m, [x, h, c]) => m.forward(x, [h, c]),
    pyRun: 'ys = list(m(xs[0], (xs[1], xs[2])))',
  },
  {
    name: 'LSTMCell zero state, unbatched',
    build: (d) => new nn.LSTMCell(3, 2, { dtype: d }),
    py: 'nn.LSTMCell(3, 2)',
    inputs: [[3]],
    run: (m, [x]) => m.forward(x),
    pyRun: 'ys = list(m(xs[0]))',
  },
  {
    name: 'LSTM 2 layers batch_first',
    build: (d) => new nn.LSTM(3, 4, { numLayers: 2, batchFirst: true, dtype: d }),
    py: 'nn.LSTM(3, 4, num_layers=2, batch_first=True)',
    inputs: [[2, 5, 3], [2, 2, 4], [2, 2, 4]],
    run: (m, [x, h, c]) => {
      const [o, [hn, cn]] = m.forward(x, [h, c]);
      return [o, hn, cn];
    },
    pyRun: 'o, (hn, cn) = m(xs[0], (xs[1], xs[2]))\nys = [o, hn, cn]',
  },
  {
    name: 'LSTM bidirectional, sequence first, zero state',
    build: (d) => new nn.LSTM(2, 3, { bidirectional: true, dtype: d }),
    py: 'nn.LSTM(2, 3, bidirectional=True)',
    inputs: [[4, 2, 2]],
    run: (m, [x]) => {
      const [o, [hn, cn]] = m.forward(x);
      return [o, hn, cn];
    },
    pyRun: 'o, (hn, cn) = m(xs[0])\nys = [o, hn, cn]',
  },
  {
    name: 'LSTM unbatched, no bias',
    build: (d) => new nn.LSTM(2, 3, { numLayers: 2, bias: false, dtype: d }),
    py: 'nn.LSTM(2, 3, num_layers=2, bias=False)',
    inputs: [[4, 2]],
    run: (m, [x]) => {
      const [o, [hn, cn]] = m.forward(x);
      return [o, hn, cn];
    },
    pyRun: 'o, (hn, cn) = m(xs[0])\nys = [o, hn, cn]',
  },
  {
    name: 'Sequential with activations',
    build: (d) =>
      new nn.Sequential(
        new nn.Linear(4, 5, { dtype: d }), new nn.ReLU(), new nn.Linear(5, 5, { dtype: d }), new nn.GELU(),
        new nn.Linear(5, 4, { dtype: d }), new nn.SiLU(), new nn.Linear(4, 3, { dtype: d }), new nn.Sigmoid(), new nn.Tanh(),
      ),
    py: 'nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.GELU(), nn.Linear(5, 4), nn.SiLU(), nn.Linear(4, 3), nn.Sigmoid(), nn.Tanh())',
    inputs: [[3, 4]],
  },
  { name: 'ModuleList', build: (d) => new Stack([4, 6, 5, 3], d), py: 'Stack([4, 6, 5, 3])', inputs: [[2, 4]] },
  {
    name: 'CausalSelfAttention fused',
    build: (d) => new nn.CausalSelfAttention({ nEmbd: 8, nHead: 2, fused: true, dtype: d }),
    py: 'Attn(8, 2, fused=True)',
    inputs: [[2, 5, 8]],
  },
  {
    name: 'CausalSelfAttention grouped-query',
    build: (d) => new nn.CausalSelfAttention({ nEmbd: 12, nHead: 4, nKvHead: 2, bias: false, dtype: d }),
    py: 'Attn(12, 4, 2, bias=False)',
    inputs: [[2, 6, 12]],
  },
  {
    name: 'TransformerBlock gpt2',
    build: (d) => new nn.TransformerBlock({ nEmbd: 8, nHead: 2, style: 'gpt2', dtype: d }),
    py: 'GPT2Block(8, 2, 32)',
    inputs: [[2, 5, 8]],
  },
  {
    name: 'TransformerBlock llama GQA',
    build: (d) => new nn.TransformerBlock({ nEmbd: 8, nHead: 4, nKvHead: 2, style: 'llama', mlpHidden: 12, dtype: d }),
    py: 'LlamaBlock(8, 4, 2, 12)',
    inputs: [[2, 6, 8]],
  },
  {
    name: 'TransformerBlock llama float32',
    dtype: 'float32',
    build: (d) => new nn.TransformerBlock({ nEmbd: 8, nHead: 2, style: 'llama', mlpHidden: 16, dtype: d }),
    py: 'LlamaBlock(8, 2, 2, 16)',
    inputs: [[2, 4, 8]],
    tol: { rtol: 1e-4, atol: 1e-5 },
  },
];

function perturbRunningStats(m: torch.nn.BatchNorm2d): void {
  torch.noGrad(() => torch.tidy(() => {
    m.running_mean!.add_(torch.randn(m.running_mean!.shape, { dtype: m.running_mean!.dtype }).mul(0.3));
    m.running_var!.mul_(torch.rand(m.running_var!.shape, { dtype: m.running_var!.dtype }).add(0.5));
    m.num_batches_tracked!.fill_(3);
  }));
}

function toRecord(pairs: Iterable<[string, Tensor]>): Record<string, unknown> {
  const r: Record<string, unknown> = {};
  for (const [k, v] of pairs) r[k] = v.toArray();
  return r;
}

interface JsResult {
  ys: unknown[];
  gx: unknown[];
  gp: Record<string, unknown>;
  buf: Record<string, unknown>;
}

let cache: { js: Map<string, JsResult>; ref: Record<string, any> } | undefined;

// Runs every case in TypeScript, then all of them at once in python with the same state dicts, inputs and output
// weights (the loss is Σ y·r for fixed random r, so every output element gets a distinct gradient).
function results(): NonNullable<typeof cache> {
  if (cache) return cache;
  const js = new Map<string, JsResult>();
  const payload: unknown[] = [];
  CASES.forEach((c, ci) => {
    torch.tidy(() => {
      const dtype = c.dtype ?? 'float64';
      torch.manualSeed(100 + ci);
      const m = c.build(dtype);
      // Defaults such as LayerNorm's ones/zeros would hide a swapped weight and bias.
      torch.noGrad(() => {
        for (const p of m.parameters()) p.add_(torch.randn(p.shape, { dtype: p.dtype }).mul(0.1));
      });
      c.prep?.(m);
      if (c.train === false) m.eval();
      const sd = toRecord(m.stateDict());
      const xs = c.inputs.map((s) => (typeof s === 'function' ? s() : torch.randn(s, { dtype, requiresGrad: true })));
      if (c.seed !== undefined) torch.manualSeed(c.seed);
      const ys = c.run ? c.run(m, xs) : [m.forward(...xs)];
      const rs = ys.map((y) => torch.randn(y.shape, { dtype: y.dtype }));
      let loss = ys[0].mul(rs[0]).sum();
      for (let i = 1; i < ys.length; i++) loss = loss.add(ys[i].mul(rs[i]).sum());
      loss.backward();
      js.set(c.name, {
        ys: ys.map((y) => y.toArray()),
        gx: xs.filter((x) => x.requiresGrad).map((x) => x.grad!.toArray()),
        gp: Object.fromEntries(m.namedParameters().map(([n, p]) => [n, p.grad ? p.grad.toArray() : null])),
        buf: toRecord(m.namedBuffers()),
      });
      payload.push({
        name: c.name, py: c.py, dtype, train: c.train ?? true, seed: c.seed ?? null, pyRun: c.pyRun ?? 'ys = [m(*xs)]', sd,
        inputs: xs.map((x) => ({ v: x.toArray(), dtype: x.dtype, grad: x.requiresGrad })),
        rs: rs.map((r) => r.toArray()),
      });
      m.dispose();
    });
  });
  const ref = py(PY_PRELUDE + PY_DRIVER, payload).res;
  cache = { js, ref };
  return cache;
}

for (const c of CASES) {
  test(`nn parity: ${c.name}`, { skip: needPython() }, () => {
    const { js, ref } = results();
    const mine = js.get(c.name)!;
    const theirs = ref[c.name];
    const tol = c.tol ?? F64;
    assert.equal(mine.ys.length, theirs.ys.length, 'number of outputs');
    mine.ys.forEach((y, i) => assertClose(y as number[], theirs.ys[i], { ...tol, msg: `output ${i}` }));
    assert.equal(mine.gx.length, theirs.gx.length, 'number of input grads');
    mine.gx.forEach((g, i) => assertClose(g as number[], theirs.gx[i], { ...tol, msg: `input ${i} grad` }));
    assert.deepEqual(Object.keys(mine.gp), Object.keys(theirs.gp), 'parameter names');
    for (const [n, g] of Object.entries(mine.gp)) {
      assert.ok(g !== null && theirs.gp[n] !== null, `${n} has a gradient on both sides`);
      assertClose(g as number[], theirs.gp[n], { ...tol, msg: `grad of ${n}` });
    }
    assert.deepEqual(Object.keys(mine.buf), Object.keys(theirs.buf), 'buffer names');
    for (const [n, b] of Object.entries(mine.buf)) assertClose(b as number[], theirs.buf[n], { ...tol, msg: `buffer ${n}` });
  });
}

test('module printing matches PyTorch', { skip: needPython() }, () => {
  const mods: [torch.nn.Module, string][] = [
    [new nn.Linear(3, 4), 'nn.Linear(3, 4)'],
    [new nn.Linear(3, 4, { bias: false }), 'nn.Linear(3, 4, bias=False)'],
    [new nn.Embedding(6, 4, { paddingIdx: 1 }), 'nn.Embedding(6, 4, padding_idx=1)'],
    [new nn.LayerNorm(5), 'nn.LayerNorm(5)'],
    [new nn.Dropout(0.25), 'nn.Dropout(0.25)'],
    [new nn.Conv2d(4, 6, 3, { padding: 1, groups: 2 }), 'nn.Conv2d(4, 6, 3, padding=1, groups=2)'],
    [new nn.Conv2d(2, 3, [3, 1], { stride: 2, dilation: [2, 1], bias: false }), 'nn.Conv2d(2, 3, (3, 1), stride=2, dilation=(2, 1), bias=False)'],
    [new nn.BatchNorm2d(3, { momentum: null }), 'nn.BatchNorm2d(3, momentum=None)'],
    [new nn.LSTMCell(3, 4), 'nn.LSTMCell(3, 4)'],
    [new nn.LSTM(3, 4, { numLayers: 2, batchFirst: true }), 'nn.LSTM(3, 4, num_layers=2, batch_first=True)'],
    [new nn.Sequential(new nn.Linear(2, 3), new nn.ReLU(), new nn.GELU('tanh'), new nn.Sequential(new nn.Tanh())),
      "nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.GELU(approximate='tanh'), nn.Sequential(nn.Tanh()))"],
  ];
  const ref = py(`import torch.nn as nn\nout['s'] = [${mods.map(([, p]) => `repr(${p})`).join(', ')}]`).s as string[];
  assert.deepEqual(mods.map(([m]) => m.toString()), ref);
  for (const [m] of mods) m.dispose();
});
