// nn.Module mechanics: names, state dicts, modes, conversion, lifetimes; default initialisation against PyTorch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

const { nn } = torch;
type Tensor = torch.Tensor;

/** A tiny GPT: the names a Hugging Face / nanoGPT checkpoint uses, with the output head tied to the embedding. */
class TinyGPT extends nn.Module {
  wte: torch.nn.Embedding;
  layers: torch.nn.ModuleList<torch.nn.TransformerBlock>;
  ln_f: torch.nn.LayerNorm;
  lm_head: torch.nn.Linear;
  constructor(opts: { vocab?: number; nEmbd?: number; nLayer?: number; dtype?: torch.DType } = {}) {
    super();
    const V = opts.vocab ?? 11;
    const C = opts.nEmbd ?? 8;
    this.wte = this.registerModule('wte', new nn.Embedding(V, C, { dtype: opts.dtype }));
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: opts.nLayer ?? 2 }, () => new nn.TransformerBlock({ nEmbd: C, nHead: 2, dtype: opts.dtype }))));
    this.ln_f = this.registerModule('ln_f', new nn.LayerNorm(C, { dtype: opts.dtype }));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(C, V, { bias: false, dtype: opts.dtype }));
    // Tie the output head to the embedding, as GPT-2 does.
    this.lm_head.weight.dispose();
    this.lm_head.weight = this.lm_head.registerParameter('weight', this.wte.weight);
  }
  forward(idx: Tensor): Tensor {
    return torch.tidy(() => {
      let x = this.wte.forward(idx); // [B, T, C]
      for (const b of this.layers) x = b.forward(x);
      return this.lm_head.forward(this.ln_f.forward(x)); // [B, T, V]
    });
  }
}

const BLOCK_NAMES = [
  'ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias',
  'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias',
];

test('checkpoint-style dotted names, tied parameters listed once', () => {
  const m = new TinyGPT();
  const names = m.namedParameters().map(([n]) => n);
  assert.deepEqual(names, ['wte.weight', ...BLOCK_NAMES.map((n) => `layers.0.${n}`), ...BLOCK_NAMES.map((n) => `layers.1.${n}`), 'ln_f.weight', 'ln_f.bias']);
  const sd = torch.tidy(() => [...m.stateDict().keys()]);
  assert.deepEqual(sd, [...names, 'lm_head.weight']);
  assert.equal(m.namedParameters({ removeDuplicate: false }).length, names.length + 1);
  assert.equal(m.getParameter('layers.1.attn.c_attn.weight'), m.layers.get(1).attn.qkv!.weight);
  assert.equal(m.getSubmodule('layers.0.mlp'), m.layers.get(0).mlp);
  assert.equal(m.getParameter('lm_head.weight'), m.wte.weight);
  assert.throws(() => m.getSubmodule('layers.7'), /ModuleList has no submodule '7'/);
  assert.deepEqual(m.namedModules().map(([n]) => n).slice(0, 5), ['', 'wte', 'layers', 'layers.0', 'layers.0.ln_1']);
  assert.deepEqual(m.namedChildren().map(([n]) => n), ['wte', 'layers', 'ln_f', 'lm_head']);
  const expected = 11 * 8 + 2 * (2 * 8 + 2 * 8 + 8 * 24 + 24 + 8 * 8 + 8 + 8 * 32 + 32 + 32 * 8 + 8) + 2 * 8;
  assert.equal(m.numParameters(), expected);
  const bn = new nn.BatchNorm2d(3);
  assert.deepEqual(bn.namedBuffers().map(([n]) => n), ['running_mean', 'running_var', 'num_batches_tracked']);
  assert.deepEqual(torch.tidy(() => [...bn.stateDict().keys()]), ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']);
  const lstm = new nn.LSTM(3, 4, { numLayers: 2, bidirectional: true });
  assert.deepEqual(lstm.namedParameters().map(([n]) => n).slice(0, 8), [
    'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'weight_ih_l0_reverse', 'weight_hh_l0_reverse', 'bias_ih_l0_reverse', 'bias_hh_l0_reverse',
  ]);
  assert.deepEqual(lstm.getParameter('weight_ih_l1').shape, [16, 8]);
  const cell = new nn.LSTMCell(3, 4);
  assert.deepEqual(cell.namedParameters().map(([n, p]) => `${n}:${p.shape}`), ['weight_ih:16,3', 'weight_hh:16,4', 'bias_ih:16', 'bias_hh:16']);
  const llama = new nn.TransformerBlock({ nEmbd: 8, nHead: 4, nKvHead: 2, style: 'llama' });
  assert.deepEqual(llama.namedParameters().map(([n, p]) => `${n}:${p.shape}`), [
    'input_layernorm.weight:8', 'self_attn.q_proj.weight:8,8', 'self_attn.k_proj.weight:4,8', 'self_attn.v_proj.weight:4,8',
    'self_attn.o_proj.weight:8,8', 'post_attention_layernorm.weight:8', 'mlp.gate_proj.weight:24,8', 'mlp.up_proj.weight:24,8',
    'mlp.down_proj.weight:8,24',
  ]);
  const seq = new nn.Sequential({ fc: new nn.Linear(2, 3), act: new nn.ReLU(), out: new nn.Linear(3, 1) });
  assert.deepEqual(seq.namedParameters().map(([n]) => n), ['fc.weight', 'fc.bias', 'out.weight', 'out.bias']);
  for (const x of [m, bn, lstm, cell, llama, seq]) x.dispose();
});

test('small modules and containers: Identity, Flatten, ModuleDict, Sequential, Embedding from weights', () => {
  torch.tidy(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    assert.deepEqual(new nn.Flatten().forward(x).shape, [2, 12]);
    assert.deepEqual(new nn.Flatten(0, 1).forward(x).shape, [6, 4]);
    assert.ok(new nn.Identity().forward(x).equal(x));
    const d = new nn.ModuleDict({ enc: new nn.Linear(2, 3), dec: new nn.Linear(3, 2) });
    assert.deepEqual(d.namedParameters().map(([n]) => n), ['enc.weight', 'enc.bias', 'dec.weight', 'dec.bias']);
    assert.deepEqual(d.keys(), ['enc', 'dec']);
    assert.ok(d.has('enc') && !d.has('x'));
    assert.equal(d.get('dec').inFeatures, 3);
    assert.throws(() => d.get('x'), /ModuleDict has no key 'x'/);
    const s = new nn.Sequential(new nn.Linear(2, 2), new nn.ReLU());
    s.append(new nn.Linear(2, 1));
    assert.equal(s.length, 3);
    assert.equal(s.get(-1), [...s][2]);
    assert.throws(() => s.get(3), /out of range/);
    assert.deepEqual(s.forward(torch.ones([5, 2])).shape, [5, 1]);
    const w = torch.tensor([[1, 2], [3, 4], [5, 6]], { dtype: 'float64' });
    const e = new nn.Embedding(3, 2, { weight: w, paddingIdx: 0 });
    assert.deepEqual(e.forward(torch.tensor([2, 1])).toArray(), [[5, 6], [3, 4]]);
    assert.ok(e.weight !== w && e.weight.isLeaf && e.weight.requiresGrad && !w.requiresGrad);
    for (const m of [d, s, e]) m.dispose();
  });
});

test('registration rejects dotted names and attributes of another kind', () => {
  const m = new nn.Module();
  assert.throws(() => m.registerParameter('a.b', torch.zeros([1])), /cannot contain '\.'/);
  m.registerBuffer('x', torch.zeros([1]));
  assert.throws(() => m.registerParameter('x', torch.zeros([1])), /already has an attribute of that name of another kind/);
  assert.throws(() => m.registerModule('', new nn.ReLU()), /non-empty string/);
  assert.throws(() => new nn.Module().forward(), /Module has no forward\(\)/);
  m.dispose();
});

test('stateDict round trip keeps the tensors of the target model and their identity', () => {
  torch.manualSeed(1);
  const a = new TinyGPT();
  torch.manualSeed(2);
  const b = new TinyGPT();
  const before = b.parameters();
  const live = torch.liveTensors();
  torch.tidy(() => {
    assert.ok(!a.wte.weight.equal(b.wte.weight));
    const res = b.loadStateDict(a.stateDict());
    assert.deepEqual(res, { missingKeys: [], unexpectedKeys: [] });
  });
  assert.equal(torch.liveTensors(), live);
  const pa = a.namedParameters();
  const pb = b.namedParameters();
  pb.forEach(([n, p], i) => {
    assert.equal(p, before[i], `${n} is the same object`);
    assert.ok(p.requiresGrad && p.isLeaf, `${n} is still a trainable leaf`);
    assert.ok(p.equal(pa[i][1]), `${n} was copied`);
  });
  // A float64 checkpoint loads into a float32 model by conversion; stateDict values alias the model.
  const c = new TinyGPT({ dtype: 'float64' });
  torch.tidy(() => {
    b.loadStateDict(c.stateDict());
    assert.equal(b.wte.weight.dtype, 'float32');
    assertClose(b.wte.weight, c.wte.weight.toArray(), { rtol: 1e-6 });
    const sd = b.stateDict();
    sd.get('ln_f.bias')!.fill_(3);
    assert.deepEqual(b.ln_f.bias!.toArray(), Array(8).fill(3));
    assert.equal(sd.get('ln_f.bias')!.requiresGrad, false);
    assert.equal(b.stateDict({ keepVars: true }).get('ln_f.bias'), b.ln_f.bias);
  });
  // A plain record works as well as a Map.
  const l1 = new nn.Linear(2, 2);
  const l2 = new nn.Linear(2, 2);
  torch.tidy(() => l2.loadStateDict(Object.fromEntries(l1.stateDict())));
  assert.ok(l1.weight.equal(l2.weight) && l1.bias!.equal(l2.bias!));
  for (const x of [a, b, c, l1, l2]) x.dispose();
});

test('loadStateDict names missing keys, unexpected keys and shape mismatches, and copies nothing then', () => {
  const m = new nn.Sequential(new nn.Linear(3, 4), new nn.ReLU(), new nn.Linear(4, 2));
  const w0 = m.get<torch.nn.Linear>(0).weight.toArray();
  torch.tidy(() => {
    const sd = {
      '0.weight': torch.zeros([4, 4]),
      '0.bias': torch.zeros([4]),
      '2.weight': torch.zeros([2, 4]),
      '2.extra': torch.zeros([1]),
      'head.weight': torch.zeros([1]),
    };
    assert.throws(() => m.loadStateDict(sd), (e: Error) => {
      assert.equal(e.message, [
        'Error(s) in loading state_dict for Sequential:',
        '\tMissing key(s) in state_dict: "2.bias".',
        '\tUnexpected key(s) in state_dict: "2.extra", "head.weight".',
        '\tsize mismatch for 0.weight: copying a param with shape [4, 4] from checkpoint, the shape in current model is [4, 3].',
      ].join('\n'));
      return true;
    });
    assert.deepEqual(m.get<torch.nn.Linear>(0).weight.toArray(), w0, 'nothing copied after a failed check');
    // Not strict: missing and unexpected keys are reported, a shape mismatch still fails.
    assert.throws(() => m.loadStateDict(sd, { strict: false }), /Error\(s\) in loading state_dict for Sequential:\n\tsize mismatch for 0\.weight: copying a param with shape \[4, 4\] from checkpoint, the shape in current model is \[4, 3\]\.$/);
    const ok = { '0.bias': torch.ones([4]), '2.weight': torch.ones([2, 4]), 'head.weight': torch.zeros([1]) };
    const res = m.loadStateDict(ok, { strict: false });
    assert.deepEqual(res, { missingKeys: ['0.weight', '2.bias'], unexpectedKeys: ['head.weight'] });
    assert.deepEqual(m.get<torch.nn.Linear>(0).bias!.toArray(), [1, 1, 1, 1]);
    assert.throws(() => m.loadStateDict({ '0.weight': torch.zeros([4, 3]), '0.bias': torch.zeros([4]), '2.weight': torch.zeros([2, 4]) }), /Error\(s\) in loading state_dict for Sequential:\n\tMissing key\(s\) in state_dict: "2\.bias"\.$/);
    assert.throws(() => m.loadStateDict({ ...ok, '0.weight': 5 as unknown as Tensor, '2.bias': torch.zeros([2]) }, { strict: false }), /value for 0\.weight is not a Tensor/);
  });
  m.dispose();
});

test('to(dtype) converts parameters and floating buffers in place; grads follow', () => {
  const m = new nn.Sequential(new nn.Linear(3, 4), new nn.BatchNorm2d(4));
  const params = m.parameters();
  const lin = m.get<torch.nn.Linear>(0);
  const w = lin.weight.toArray();
  torch.tidy(() => lin.forward(torch.ones([2, 3])).sum().backward());
  const live = torch.liveTensors();
  m.to('float64');
  assert.equal(torch.liveTensors(), live, 'no handle leaked or lost');
  assert.deepEqual(m.parameters(), params, 'same Tensor objects');
  for (const p of params) assert.ok(p.dtype === 'float64' && p.requiresGrad && p.isLeaf);
  assertClose(lin.weight, w, { rtol: 0, atol: 0 });
  torch.tidy(() => {
    assert.equal(lin.weight.grad!.dtype, 'float64');
    assertClose(lin.weight.grad!, Array(4).fill([2, 2, 2]), { rtol: 0, atol: 0 });
    assert.equal(lin.bias!.grad!.dtype, 'float64');
  });
  const bn = m.get<torch.nn.BatchNorm2d>(1);
  assert.equal(bn.running_mean!.dtype, 'float64');
  assert.equal(bn.num_batches_tracked!.dtype, 'int64');
  m.half();
  assert.equal(lin.weight.dtype, 'float16');
  m.to({ dtype: 'float32', device: 'cpu' });
  assert.equal(lin.weight.dtype, 'float32');
  // Used again after conversion: the same objects still work in autograd.
  torch.tidy(() => {
    m.zeroGrad();
    lin.forward(torch.ones([1, 3])).sum().backward();
    assert.deepEqual(lin.bias!.grad!.toArray(), [1, 1, 1, 1]);
  });
  m.dispose();
});

test('freeze, unfreeze, zeroGrad, numParameters', () => {
  const m = new nn.Sequential(new nn.Linear(3, 4), new nn.Linear(4, 2));
  assert.equal(m.numParameters(), 3 * 4 + 4 + 4 * 2 + 2);
  m.get(0).freeze();
  assert.equal(m.numParameters({ trainableOnly: true }), 4 * 2 + 2);
  torch.tidy(() => {
    m.forward(torch.ones([1, 3])).sum().backward();
    assert.equal(m.get<torch.nn.Linear>(0).weight.grad, null);
    assert.notEqual(m.get<torch.nn.Linear>(1).weight.grad, null);
  });
  m.zeroGrad();
  assert.ok(m.parameters().every((p) => p.grad === null));
  m.unfreeze();
  assert.ok(m.parameters().every((p) => p.requiresGrad));
  m.dispose();
});

test('train() and eval() reach every descendant; Dropout differs between them', () => {
  const m = new TinyGPT();
  assert.ok(m.modules().every((x) => x.training));
  m.eval();
  assert.ok(m.modules().every((x) => !x.training));
  m.train();
  assert.ok(m.modules().every((x) => x.training));
  m.dispose();

  const d = new nn.Dropout(0.5);
  torch.tidy(() => {
    const x = torch.ones([4000]);
    torch.manualSeed(0);
    const y = d.forward(x).toArray() as number[];
    const zeros = y.filter((v) => v === 0).length;
    assert.ok(zeros > 1700 && zeros < 2300, `about half dropped (${zeros})`);
    assert.ok(y.every((v) => v === 0 || v === 2), 'survivors scaled by 1/(1-p)');
    d.eval();
    assert.deepEqual(d.forward(x).toArray(), Array(4000).fill(1));
  });
});

test('BatchNorm2d: batch statistics and running updates in training, running statistics in eval', () => {
  const bn = new nn.BatchNorm2d(2, { dtype: 'float64' });
  torch.tidy(() => {
    torch.manualSeed(3);
    const x = torch.randn([5, 2, 3, 3], { dtype: 'float64' }).mul(2).add(1);
    const y = bn.forward(x);
    // Training output: per channel mean 0, biased variance 1.
    const mean = y.mean([0, 2, 3]).toArray() as number[];
    const varb = y.var([0, 2, 3], { correction: 0 }).toArray() as number[];
    assertClose(mean, [0, 0], { atol: 1e-12 });
    assertClose(varb, [1, 1], { rtol: 1e-4 });
    assert.equal(bn.num_batches_tracked!.item(), 1);
    // running = 0.9·running + 0.1·batch (unbiased variance)
    assertClose(bn.running_mean!, x.mean([0, 2, 3]).mul(0.1).toArray(), { rtol: 1e-12 });
    assertClose(bn.running_var!, x.var([0, 2, 3]).mul(0.1).add(0.9).toArray(), { rtol: 1e-12 });
    bn.eval();
    const rm = bn.running_mean!.toArray();
    const ye = bn.forward(x);
    const manual = x.sub(bn.running_mean!.view(1, 2, 1, 1)).div(bn.running_var!.add(1e-5).sqrt().view(1, 2, 1, 1));
    assertClose(ye, manual.toArray(), { rtol: 1e-12, atol: 1e-12 });
    assert.deepEqual(bn.running_mean!.toArray(), rm, 'eval leaves running stats alone');
    assert.equal(bn.num_batches_tracked!.item(), 1);
    assert.ok(!ye.allclose(y));
  });
  assert.throws(() => torch.tidy(() => bn.forward(torch.zeros([2, 2, 3], { dtype: 'float64' }))), /expected 4D input/);
  bn.dispose();
});

test('tidy: forward + backward leaves no tensor behind; modules made in tidy survive it; dispose releases', () => {
  const base = torch.liveTensors();
  const m = torch.tidy(() => new TinyGPT({ dtype: 'float64' }));
  const owned = m.parameters().length + m.buffers().length;
  assert.equal(torch.liveTensors(), base + owned);
  const lstm = torch.tidy(() => new nn.LSTM(3, 4, { numLayers: 2 }));
  const conv = torch.tidy(() => new nn.Sequential(new nn.Conv2d(1, 2, 3), new nn.BatchNorm2d(2), new nn.ReLU()));
  const all = base + owned + lstm.parameters().length + conv.parameters().length + conv.buffers().length;
  assert.equal(torch.liveTensors(), all);
  for (let step = 0; step < 2; step++) {
    torch.tidy(() => {
      const idx = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]);
      const logits = m.forward(idx);
      torch.crossEntropy(logits.view(-1, 11), torch.tensor([2, 3, 4, 5, 6, 7, 8, 9])).backward();
      const [o, [h, c]] = lstm.forward(torch.randn([5, 2, 3]));
      o.sum().add(h.sum()).add(c.sum()).backward();
      conv.forward(torch.randn([2, 1, 5, 5])).sum().backward();
      // Reading a grad makes a handle; the scope takes it back.
      assert.ok(m.wte.weight.grad !== null);
    });
    assert.equal(torch.liveTensors(), all, `step ${step}`);
  }
  assert.ok(torch.tidy(() => m.parameters().every((p) => p.grad !== null)), 'grads live inside their parameters, not as handles');
  m.zeroGrad();
  m.dispose();
  lstm.dispose();
  conv.dispose();
  assert.equal(torch.liveTensors(), base);
  assert.throws(() => m.wte.weight.shape, /disposed|not live/);
});

test('default initialisation and init functions equal PyTorch under the same seed', { skip: needPython() }, () => {
  const ref = py(`
import torch.nn as nn, torch.nn.init as init
torch.manual_seed(10); l = nn.Linear(5, 3); out['lin'] = [l.weight, l.bias]
torch.manual_seed(11); e = nn.Embedding(6, 4, padding_idx=1); out['emb'] = e.weight
torch.manual_seed(12); c = nn.Conv2d(4, 6, 3, groups=2); out['conv'] = [c.weight, c.bias]
torch.manual_seed(13); r = nn.LSTM(3, 4, num_layers=2); out['lstm'] = list(r.parameters())
torch.manual_seed(14); r = nn.LSTMCell(2, 3); out['cell'] = list(r.parameters())
torch.manual_seed(15); m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)); out['seq'] = list(m.parameters())
t = torch.empty(5, 4, 3, 2)
torch.manual_seed(20); out['ku'] = init.kaiming_uniform_(t.clone())
torch.manual_seed(21); out['kn'] = init.kaiming_normal_(t.clone(), mode='fan_out', nonlinearity='relu')
torch.manual_seed(22); out['ku2'] = init.kaiming_uniform_(t.clone(), a=0.2, nonlinearity='leaky_relu')
torch.manual_seed(23); out['xu'] = init.xavier_uniform_(t.clone(), gain=init.calculate_gain('tanh'))
torch.manual_seed(24); out['xn'] = init.xavier_normal_(t.clone())
torch.manual_seed(25); out['tn'] = init.trunc_normal_(torch.empty(200), mean=0.5, std=2.0, a=-1.0, b=3.0)
torch.manual_seed(26); out['n'] = init.normal_(torch.empty(7), 1.0, 0.02)
torch.manual_seed(27); out['u'] = init.uniform_(torch.empty(7), -0.5, 0.25)
out['fans'] = [list(init._calculate_fan_in_and_fan_out(torch.empty(s))) for s in [(3, 4), (5, 4, 3, 2), (2, 3, 7)]]
out['gains'] = [init.calculate_gain(n, p) for n, p in [('linear', None), ('tanh', None), ('relu', None), ('leaky_relu', None), ('leaky_relu', 0.3), ('selu', None), ('sigmoid', None)]]
`);
  const exact = { rtol: 0, atol: 0 };
  torch.tidy(() => {
    const check = (mod: torch.nn.Module, expected: unknown[], what: string) => {
      const ps = mod.parameters();
      assert.equal(ps.length, expected.length, `${what}: parameter count`);
      ps.forEach((p, i) => assertClose(p, expected[i], { ...exact, msg: `${what} parameter ${i}` }));
      mod.dispose();
    };
    torch.manualSeed(10);
    check(new nn.Linear(5, 3), ref.lin, 'Linear');
    torch.manualSeed(11);
    check(new nn.Embedding(6, 4, { paddingIdx: 1 }), [ref.emb], 'Embedding');
    torch.manualSeed(12);
    check(new nn.Conv2d(4, 6, 3, { groups: 2 }), ref.conv, 'Conv2d');
    torch.manualSeed(13);
    check(new nn.LSTM(3, 4, { numLayers: 2 }), ref.lstm, 'LSTM');
    torch.manualSeed(14);
    check(new nn.LSTMCell(2, 3), ref.cell, 'LSTMCell');
    torch.manualSeed(15);
    check(new nn.Sequential(new nn.Linear(4, 8), new nn.LayerNorm(8), new nn.Linear(8, 2)), ref.seq, 'Sequential');

    const t = () => torch.empty([5, 4, 3, 2]);
    const I = nn.init;
    torch.manualSeed(20);
    assertClose(I.kaimingUniform_(t()), ref.ku, { ...exact, msg: 'kaimingUniform_' });
    torch.manualSeed(21);
    assertClose(I.kaimingNormal_(t(), { mode: 'fan_out', nonlinearity: 'relu' }), ref.kn, { rtol: 1e-7, atol: 0, msg: 'kaimingNormal_' });
    torch.manualSeed(22);
    assertClose(I.kaimingUniform_(t(), { a: 0.2 }), ref.ku2, { ...exact, msg: 'kaimingUniform_ a' });
    torch.manualSeed(23);
    assertClose(I.xavierUniform_(t(), I.calculateGain('tanh')), ref.xu, { ...exact, msg: 'xavierUniform_' });
    torch.manualSeed(24);
    assertClose(I.xavierNormal_(t()), ref.xn, { rtol: 1e-7, atol: 0, msg: 'xavierNormal_' });
    torch.manualSeed(25);
    const tn = I.truncNormal_(torch.empty([200]), 0.5, 2.0, -1.0, 3.0);
    assertClose(tn, ref.tn, { rtol: 1e-6, atol: 1e-6, msg: 'truncNormal_' });
    assert.ok((tn.toArray() as number[]).every((v) => v >= -1 && v <= 3));
    torch.manualSeed(26);
    assertClose(I.normal_(torch.empty([7]), 1.0, 0.02), ref.n, { rtol: 1e-7, atol: 0, msg: 'normal_' });
    torch.manualSeed(27);
    assertClose(I.uniform_(torch.empty([7]), -0.5, 0.25), ref.u, { ...exact, msg: 'uniform_' });
    assert.deepEqual([[3, 4], [5, 4, 3, 2], [2, 3, 7]].map((s) => I.calculateFanInAndFanOut(torch.empty(s))), ref.fans);
    const gains = [I.calculateGain('linear'), I.calculateGain('tanh'), I.calculateGain('relu'), I.calculateGain('leaky_relu'), I.calculateGain('leaky_relu', 0.3), I.calculateGain('selu'), I.calculateGain('sigmoid')];
    assert.deepEqual(gains, ref.gains);
    assert.throws(() => I.xavierUniform_(torch.empty([3])), /fewer than 2 dimensions/);
    assert.deepEqual(I.zeros_(torch.empty([2])).toArray(), [0, 0]);
    assert.deepEqual(I.ones_(torch.empty([2])).toArray(), [1, 1]);
    // Initialisers never record gradients, even on a trainable leaf.
    const p = torch.empty([3, 3], { requiresGrad: true });
    I.kaimingUniform_(p);
    assert.ok(p.isLeaf && p.gradFn === null);
  });
});
