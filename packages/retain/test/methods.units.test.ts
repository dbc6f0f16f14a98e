// The parts of SAM, MoFO, LoRA and HFT that the methods table does not reach: MoFO's quantile estimate for large
// tensors, HFT's draws and a resume from a later epoch, LoRA's target matching, adapter-file errors, dropout and
// precision, and `retain train` writing a PEFT adapter (and the merged model) from a config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { loadTrainConfig } from '../src/config.js';
import { train } from '../src/train/trainer.js';
import { rng } from '../src/data/loader.js';
import { buildMethods } from '../src/methods/registry.js';
import { MofoAdamW, mofoK } from '../src/methods/mofo.js';
import { hftDraw } from '../src/methods/hft.js';
import { LoraLinear, loadAdapter, loraModules, mergeAndUnload, saveAdapter, targetMatcher, wrapLinears } from '../src/methods/lora/index.js';
import { patternValue } from '../src/models/lora/peft.js';
import { Conv1D, GPT2LMHeadModel } from '../src/models/gpt2.js';
import { needShared, sharedPath } from './helpers.js';

const CONFIG: LlamaConfig = {
  model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
  num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};
const PATHS = ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.0.mlp.down_proj', 'model.layers.1.mlp.gate_proj', 'lm_head'];

function examples(n: number, seed: number) {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 10 }, () => Math.floor(r() * 64));
    return { id: `s${i}`, ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)), source: 'train' };
  });
}

test('MoFO above exact_max estimates the quantile from a strided sample: about α·n coordinates move', (t) => {
  torch.manualSeed(3);
  const p = torch.randn([300, 337]).requiresGrad_(true); // n = 101100
  const names = new Map([[p, 'layers.0.mlp.up_proj.weight']]);
  const exact = p.detach().clone().requiresGrad_(true);
  const est = new MofoAdamW([p], { lr: 1e-2, weightDecay: 0, alpha: 0.1, names, exactMax: 1000, sampleSize: 4096 });
  const ref = new MofoAdamW([exact], { lr: 1e-2, weightDecay: 0, alpha: 0.1, names: new Map([[exact, 'layers.0.mlp.up_proj.weight']]) });
  const k = mofoK(0.1, p.numel());
  const counts: number[] = [];
  for (let s = 0; s < 3; s++) {
    const g = torch.randn([300, 337]);
    const before = p.detach().clone();
    const beforeExact = exact.detach().clone();
    p.grad = g;
    exact.grad = g.clone();
    est.step();
    ref.step();
    counts.push(torch.tidy(() => p.ne(before).sum().item()));
    assert.equal(torch.tidy(() => exact.ne(beforeExact).sum().item()), k, 'the exact path moves exactly k');
  }
  for (const c of counts) assert.ok(Math.abs(c - k) / k < 0.1, `estimated path moved ${c}, k = ${k}`);
  t.diagnostic(`n = ${p.numel()}, k = ${k}, estimated path moved ${counts.join(', ')}`);
  est.dispose();
  ref.dispose();
});

test('SAM, MoFO, LoRA and HFT refuse option names they do not know', () => {
  assert.throws(() => buildMethods([{ name: 'sam', rh0: 0.1 }]), /sam: unknown option 'rh0'; allowed: rho/);
  assert.throws(() => buildMethods([{ name: 'mofo', aplha: 0.1 }]), /mofo: unknown option 'aplha'/);
  assert.throws(() => buildMethods([{ name: 'lora', rank: 4 }]), /lora: unknown option 'rank'; allowed: r, alpha, dropout, targets, save_merged, adapter/);
  assert.throws(() => buildMethods([{ name: 'lora', adapter: 'final', r: 4, targets: ['q'] }]), /^Error: lora: r, targets cannot be set with adapter; the adapter's adapter_config\.json fixes them \(drop r, targets, or drop adapter to start a fresh one\)$/);
  assert.throws(() => buildMethods([{ name: 'lora', adapter: 3 }]), /lora: option 'adapter' must be the path of a saved adapter directory, got 3$/);
  assert.throws(() => buildMethods([{ name: 'hft', seeds: 1 }]), /hft: unknown option 'seeds'/);
  assert.throws(() => buildMethods([{ name: 'sam', rho: -1 }]), /sam: option 'rho' must be a number ≥ 0/);
  assert.throws(() => buildMethods([{ name: 'mofo', alpha: 1.5 }]), /mofo: option 'alpha' must be a fraction in \(0, 1\]/);
  assert.throws(() => buildMethods([{ name: 'lora', save_merged: 'maybe' }]), /lora: option 'save_merged' must be true or false, got "maybe"/);
  // YAML's .nan and .inf reach the check as numbers and are shown as such, not as JSON's null.
  assert.throws(() => buildMethods([{ name: 'l2', lambda: Number.NaN }]), /l2: option 'lambda' must be .*, got NaN$/);
  assert.throws(() => buildMethods([{ name: 'sam', rho: Number.POSITIVE_INFINITY }]), /sam: option 'rho' must be a number ≥ 0, got Infinity$/);
});

test('MoFO refuses a run whose optimizer is not AdamW', async () => {
  const model = new LlamaForCausalLM(CONFIG);
  await assert.rejects(
    train({ model, optimizer: { kind: 'sgd' }, examples: examples(4, 1), batchSize: 2, maxSteps: 1, schedule: { kind: 'constant', lr: 0.1 }, methods: buildMethods(['mofo']), progress: false }),
    /mofo is a filtered AdamW: it needs the run's optimizer to be adamw/,
  );
  model.dispose();
});

test('HFT draws: a pure function of (seed, epoch); 2 of 4 attention and half the layers 2 of 3 MLP projections', () => {
  for (const L of [2, 5, 6, 32]) {
    const layers = Array.from({ length: L }, (_, i) => i);
    const a = hftDraw(layers, 7, 3);
    const b = hftDraw(layers, 7, 3);
    assert.deepEqual([...a].map(([l, s]) => [l, [...s].sort()]), [...b].map(([l, s]) => [l, [...s].sort()]));
    let two = 0;
    for (const s of a.values()) {
      assert.equal(['q_proj', 'k_proj', 'v_proj', 'o_proj'].filter((c) => s.has(c)).length, 2);
      const mlp = ['gate_proj', 'up_proj', 'down_proj'].filter((c) => s.has(c)).length;
      assert.ok(mlp === 1 || mlp === 2);
      if (mlp === 2) two++;
    }
    assert.ok(two === Math.floor(L / 2) || two === Math.ceil(L / 2), `${two} of ${L} layers train 2 MLP projections`);
  }
  const layers = Array.from({ length: 8 }, (_, i) => i);
  const key = (e: number) => JSON.stringify([...hftDraw(layers, 1, e)].map(([l, s]) => [l, [...s].sort()]));
  assert.ok(new Set([0, 1, 2, 3].map(key)).size > 1, 'different epochs draw different halves');
});

test('HFT resumed from a checkpoint in a later epoch redraws that epoch and ends bit-identical', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-hft-'));
  const run = async (dir: string, resume: boolean) => {
    torch.manualSeed(4);
    const model = new LlamaForCausalLM(CONFIG);
    // 8 examples, batch 2: 4 steps per epoch; 12 steps are 3 epochs; the checkpoint at 6 is inside epoch 1.
    await train({ model, optimizer: { kind: 'adamw', weightDecay: 0.1 }, examples: examples(8, 2), batchSize: 2, maxSteps: 12, schedule: { kind: 'constant', lr: 1e-2 }, seed: 4, methods: buildMethods([{ name: 'hft', seed: 9 }]), outputDir: dir, saveEvery: 6, progress: false, resume });
    return model;
  };
  try {
    const a = await run(join(root, 'a'), false);
    cpSync(join(root, 'a', 'checkpoint-6'), join(root, 'b', 'checkpoint-6'), { recursive: true });
    const b = await run(join(root, 'b'), true);
    const sa = a.stateDict();
    const sb = b.stateDict();
    assert.deepEqual([...sa.keys()].filter((k) => !sa.get(k)!.equal(sb.get(k)!)), []);
    const lines = readFileSync(join(root, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'hft');
    assert.deepEqual(lines.map((r) => r.epoch), [0, 1, 2], 'one draw per epoch, logged with the modules that train');
    assert.match(lines[0].hft_training, /^0:[a-z,]+ 1:[a-z,]+$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('LoRA targets: names, aliases, dotted suffixes, /regex/, a full-match string, all-linear', () => {
  const on = (t: Parameters<typeof targetMatcher>[0]) => PATHS.filter(targetMatcher(t));
  assert.deepEqual(on(['q', 'down']), ['model.layers.0.self_attn.q_proj', 'model.layers.0.mlp.down_proj']);
  assert.deepEqual(on(['self_attn.k_proj']), ['model.layers.0.self_attn.k_proj']);
  assert.deepEqual(on(['/layers\\.1\\./']), ['model.layers.1.mlp.gate_proj']);
  assert.deepEqual(on('.*\\.(q|k)_proj'), ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj']);
  assert.deepEqual(on('q_proj'), [], 'a string is a full-path regular expression, as in PEFT');
  assert.deepEqual(on('all-linear'), PATHS.slice(0, 4), 'all-linear leaves the output head alone');
  const model = new LlamaForCausalLM(CONFIG);
  assert.throws(() => wrapLinears(model, ['query'], { r: 2, alpha: 4 }), /no Linear layer matches targets \["query"\]; this model's Linear layers are named: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj/);
  assert.throws(() => wrapLinears(model, 'q_proj', { r: 2, alpha: 4 }), /no Linear layer matches targets "q_proj";.* a single string is a regular expression the whole path must match \(as in PEFT\), e\.g\. '\.\*\\\.q_proj' — for module names give a list: \[q_proj\]/);
  assert.throws(() => wrapLinears(model, ['layers.0.mlp'], { r: 2, alpha: 4 }), /model\.layers\.0\.mlp \(LlamaMLP\) matched the targets but only Linear layers can take an adapter/);
  model.dispose();
});

test('LoRA layer: starts as the base layer, dropout only in training, rsLoRA scaling, float32 adapters on a bf16 base', () => {
  torch.manualSeed(1);
  const base = new torch.nn.Linear(8, 6);
  const x = torch.randn([3, 8]);
  const y0 = base.forward(x);
  const l = new LoraLinear(base, { r: 4, alpha: 8, dropout: 0.5 });
  assert.deepEqual(l.lora_A.weight.shape, [4, 8]);
  assert.deepEqual(l.lora_B.weight.shape, [6, 4]);
  assert.ok(l.forward(x).equal(y0), 'B = 0: the wrapped layer is the base layer');
  const bound = 1 / Math.sqrt(8);
  assert.ok(torch.tidy(() => l.lora_A.weight.abs().max().item()) <= bound, 'A ~ kaiming-uniform(a=√5) = U(±1/√in)');
  torch.noGrad(() => l.lora_B.weight.normal_());
  l.eval();
  const ref = y0.add(x.matmul(l.lora_A.weight.t()).matmul(l.lora_B.weight.t()).mul(8 / 4));
  assert.ok(torch.tidy(() => l.forward(x).sub(ref).abs().max().item()) < 1e-5, 'eval: y = xW₀ᵀ + b + (α/r)·xAᵀBᵀ');
  l.train();
  assert.ok(!torch.tidy(() => l.forward(x).allclose(ref)), 'training: dropout on the adapter input');
  const rs = new LoraLinear(new torch.nn.Linear(8, 6), { r: 4, alpha: 8, rslora: true });
  assert.equal(rs.scaling, 8 / 2);
  const half = new torch.nn.Linear(8, 6, { dtype: 'bfloat16' });
  const lb = new LoraLinear(half, { r: 2, alpha: 2 });
  assert.equal(lb.lora_A.weight.dtype, 'float32');
  assert.equal(lb.forward(x.bfloat16()).dtype, 'bfloat16');
});

test('PEFT adapter files: errors name the problem; keys with an adapter name (.default.) load too', () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-peft-'));
  try {
    torch.manualSeed(2);
    const model = new LlamaForCausalLM(CONFIG);
    wrapLinears(model, ['q_proj', 'v_proj'], { r: 2, alpha: 4 });
    for (const [, l] of loraModules(model)) torch.noGrad(() => l.lora_B.weight.normal_());
    const dir = join(root, 'ok');
    saveAdapter(model, dir, { baseModel: 'base' });
    // A file written by PEFT with its adapter name in the keys.
    const named = join(root, 'named');
    mkdirSync(named);
    const t = torch.io.loadSafetensors(join(dir, 'adapter_model.safetensors'));
    torch.io.saveSafetensors(join(named, 'adapter_model.safetensors'), new Map([...t].map(([k, v]) => [k.replace(/\.weight$/, '.default.weight'), v])));
    cpSync(join(dir, 'adapter_config.json'), join(named, 'adapter_config.json'));
    torch.manualSeed(2);
    const fresh = new LlamaForCausalLM(CONFIG);
    loadAdapter(fresh, named);
    const ids = torch.tensor([[1, 2, 3, 4]]);
    assert.ok(torch.tidy(() => fresh.forward(ids).equal(model.forward(ids))));
    // A key gone, and a DoRA config.
    const broken = join(root, 'broken');
    mkdirSync(broken);
    torch.io.saveSafetensors(join(broken, 'adapter_model.safetensors'), new Map([...t].filter(([k]) => !k.includes('layers.1.self_attn.v_proj.lora_B'))));
    cpSync(join(dir, 'adapter_config.json'), join(broken, 'adapter_config.json'));
    torch.manualSeed(2);
    assert.throws(() => loadAdapter(new LlamaForCausalLM(CONFIG), broken), /model\.layers\.1\.self_attn\.v_proj\.lora_B\.weight is missing/);
    const dora = join(root, 'dora');
    cpSync(dir, dora, { recursive: true });
    writeFileSync(join(dora, 'adapter_config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')), use_dora: true }));
    assert.throws(() => loadAdapter(new LlamaForCausalLM(CONFIG), dora), /DoRA adapters \(use_dora: true\) are not supported/);
    assert.throws(() => loadAdapter(new LlamaForCausalLM(CONFIG), root), /no adapter_config\.json/);
    // An adapter saved as a pickle (PEFT before safe_serialization became its default) is named with the conversion.
    const pickled = join(root, 'pickled');
    mkdirSync(pickled);
    cpSync(join(dir, 'adapter_config.json'), join(pickled, 'adapter_config.json'));
    writeFileSync(join(pickled, 'adapter_model.bin'), Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]));
    assert.throws(() => loadAdapter(new LlamaForCausalLM(CONFIG), pickled), (e: Error) => e.message.startsWith(`${join(pickled, 'adapter_model.bin')} is a PyTorch pickle checkpoint, which retain does not load`) && /safe_serialization=True/.test(e.message));
    rmSync(join(pickled, 'adapter_model.bin'));
    assert.throws(() => loadAdapter(new LlamaForCausalLM(CONFIG), pickled), { message: `${pickled}: no adapter_model.safetensors; a PEFT adapter folder holds it beside adapter_config.json (PeftModel.save_pretrained writes both)` });
    // Weights for layers the model lacks: an adapter made for another base model.
    const other = new LlamaForCausalLM({ ...CONFIG, num_hidden_layers: 1 });
    wrapLinears(other, ['q_proj', 'v_proj'], { r: 2, alpha: 4 });
    assert.throws(() => loadAdapter(other, dir), /the adapter has weights for 'model\.layers\.1\.self_attn\.[qv]_proj', which is not a LoRA layer of this model \(an adapter made for another base model\? its adapter_config\.json names base_model_name_or_path /);
    other.dispose();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('LoRA + WiSE-FT: the adapter scale survives a resume from the final checkpoint', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-lora-wise-'));
  const run = async (resume: boolean) => {
    torch.manualSeed(5);
    const model = new LlamaForCausalLM(CONFIG);
    const methods = buildMethods([{ name: 'lora', r: 2 }, { name: 'wise', alpha: 0.3 }]);
    await train({ model, optimizer: { kind: 'adamw' }, examples: examples(8, 3), batchSize: 2, maxSteps: 4, schedule: { kind: 'constant', lr: 1e-2 }, methods, outputDir: root, saveEvery: 2, progress: false, resume });
    return model;
  };
  try {
    const a = await run(false);
    assert.ok(loraModules(a).every(([, l]) => l.scale === 0.3));
    // The run is complete: resuming loads checkpoint-4 (written after WiSE-FT), trains nothing, and must keep α.
    const b = await run(true);
    assert.ok(loraModules(b).every(([, l]) => l.scale === 0.3), 'the scale came back from the checkpoint');
    const ids = torch.tensor([[1, 2, 3, 4, 5]]);
    assert.ok(torch.tidy(() => a.forward(ids).equal(b.forward(ids))));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("PEFT's rank_pattern / alpha_pattern rule: first key in file order matching the path's end at a dot", () => {
  const pattern = { q_proj: 2, 'self_attn.q_proj': 5, 'layers.1.mlp.down_proj': 6, 'layers\\.[23]\\..*_proj': 7 };
  assert.equal(patternValue(pattern, 'model.layers.0.self_attn.q_proj', 4), 2);
  assert.equal(patternValue(pattern, 'model.layers.1.mlp.down_proj', 4), 6);
  assert.equal(patternValue(pattern, 'model.layers.0.mlp.down_proj', 4), 4);
  assert.equal(patternValue(pattern, 'model.layers.0.self_attn.xq_proj', 4), 4, 'a key matches whole dotted parts only');
  assert.equal(patternValue(pattern, 'model.layers.3.mlp.up_proj', 4), 7);
  assert.equal(patternValue({}, 'q_proj', 4), 4);
});

test('LoRA on GPT-2 Conv1D layers: A and B as for Linear, merged transposed into the [in, out] weight', () => {
  torch.manualSeed(4);
  const model = new GPT2LMHeadModel({ vocab_size: 40, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 }).eval();
  const ids = torch.tensor([[1, 2, 3, 4, 5]]);
  const before = model.forward(ids);
  assert.deepEqual(wrapLinears(model, ['c_attn', 'c_fc'], { r: 2, alpha: 4 }), ['transformer.h.0.attn.c_attn', 'transformer.h.0.mlp.c_fc']);
  const [[, l]] = loraModules(model);
  assert.ok(l.fanInFanOut);
  assert.deepEqual([l.lora_A.weight.shape, l.lora_B.weight.shape], [[2, 16], [48, 2]]);
  assert.ok(torch.tidy(() => model.forward(ids).equal(before)), 'B = 0: the wrapped model is the base');
  for (const [, m] of loraModules(model)) torch.noGrad(() => m.lora_B.weight.normal_());
  const w0 = l.weight.clone();
  const adapted = model.forward(ids);
  const expected = torch.tidy(() => w0.add(l.lora_B.weight.matmul(l.lora_A.weight).t(), 2)); // [in, out] + (α/r)·(B·A)ᵀ
  mergeAndUnload(model);
  const c = model.getSubmodule('transformer.h.0.attn.c_attn') as Conv1D;
  assert.ok(c instanceof Conv1D, 'a plain Conv1D is back in place');
  assert.ok(torch.tidy(() => c.weight.sub(expected).abs().max().item()) < 1e-6);
  const diff = torch.tidy(() => model.forward(ids).sub(adapted).abs().max().item());
  assert.ok(diff < 1e-5, `merged vs unmerged logits: ${diff}`);
  assert.ok(torch.tidy(() => adapted.sub(before).abs().max().item()) > 1e-3, 'the adapter changes the output');
});

test('PEFT adapter files: biases and modules_to_save replace base tensors; what retain cannot hold is refused by name', () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-peft-extra-'));
  const qwen: LlamaConfig = { ...CONFIG, model_type: 'qwen2' };
  try {
    torch.manualSeed(6);
    const model = new LlamaForCausalLM(qwen);
    wrapLinears(model, ['q_proj', 'v_proj'], { r: 2, alpha: 4 });
    const dir = join(root, 'ok');
    saveAdapter(model, dir, { baseModel: 'base' });
    const t = torch.io.loadSafetensors(join(dir, 'adapter_model.safetensors'));
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    // What PEFT writes for bias "lora_only" (the adapted layer's bias under base_layer) and modules_to_save lm_head.
    const bias = torch.randn([16]);
    const head = torch.randn([64, 16]);
    const write = (name: string, extra: [string, torch.Tensor][], over: Record<string, unknown> = {}) => {
      const d = join(root, name);
      mkdirSync(d);
      torch.io.saveSafetensors(join(d, 'adapter_model.safetensors'), new Map([...t, ...extra]));
      writeFileSync(join(d, 'adapter_config.json'), JSON.stringify({ ...cfg, ...over }));
      return d;
    };
    const full = write('full', [['base_model.model.model.layers.1.self_attn.q_proj.base_layer.bias', bias], ['base_model.model.lm_head.weight', head]], { bias: 'lora_only', modules_to_save: ['lm_head'] });
    torch.manualSeed(6);
    const fresh = new LlamaForCausalLM(qwen);
    loadAdapter(fresh, full);
    assert.ok((fresh.getSubmodule('model.layers.1.self_attn.q_proj') as LoraLinear).bias!.equal(bias));
    assert.ok(fresh.lm_head.weight.equal(head));
    torch.manualSeed(6);
    const tied = new LlamaForCausalLM({ ...qwen, tie_word_embeddings: true });
    assert.throws(() => loadAdapter(tied, full), /full\/adapter_model\.safetensors replaces 'lm_head\.weight', which this model ties to 'model\.embed_tokens\.weight' \(tie_word_embeddings\); retain cannot load an untied copy/);
    const odd = write('odd', [['base_model.model.model.layers.0.self_attn.k_proj.base_layer.bias', torch.zeros([3])], ['base_model.model.model.extra.weight', torch.zeros([2])]]);
    assert.throws(() => loadAdapter(new LlamaForCausalLM(qwen), odd), (e: Error) => {
      assert.match(e.message, /'model\.layers\.0\.self_attn\.k_proj\.bias' has shape \[3\] in .*odd\/adapter_model\.safetensors, the model's is \[16\]/);
      assert.match(e.message, /odd\/adapter_model\.safetensors holds 'model\.extra\.weight', which is neither a LoRA matrix nor a tensor of this model/);
      return true;
    });
    const loraBias = write('lorabias', [], { lora_bias: true });
    assert.throws(() => loadAdapter(new LlamaForCausalLM(qwen), loraBias), /lorabias\/adapter_config\.json: adapters with a bias on lora_B \(lora_bias: true\) are not supported; retain loads plain LoRA adapters \(set lora_bias to its default\)/);
    const embedding = write('embedding', [['base_model.model.model.embed_tokens.lora_embedding_A', torch.zeros([2, 64])]]);
    assert.throws(() => loadAdapter(new LlamaForCausalLM(qwen), embedding), /embedding\/adapter_model\.safetensors: unexpected key 'base_model\.model\.model\.embed_tokens\.lora_embedding_A': retain reads LoRA on Linear and GPT-2 Conv1D layers .*; adapters on embeddings or other layer kinds are not supported$/);
    const badBias = write('badbias', [], { bias: 'some' });
    assert.throws(() => loadAdapter(new LlamaForCausalLM(qwen), badBias), /badbias\/adapter_config\.json: bias must be "none", "lora_only" or "all", got "some"/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a LoRA adapter directory loads as a model: its base (relative to the adapter) with the adapter merged', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-adapter-model-'));
  try {
    torch.manualSeed(8);
    const model = new LlamaForCausalLM(CONFIG);
    const base = join(root, 'base');
    savePretrained({ model, config: CONFIG as unknown as Record<string, unknown>, tokenizer: null, source: { path: base, format: 'hf' }, tokenizerFiles: [] }, base);
    wrapLinears(model, ['q', 'k', 'v', 'o', 'gate', 'up', 'down'], { r: 2, alpha: 4 });
    for (const [, l] of loraModules(model)) torch.noGrad(() => l.lora_B.weight.normal_());
    saveAdapter(model, join(root, 'adapter'), { baseModel: '../base' });
    const p = await loadPretrained(join(root, 'adapter'));
    assert.equal(p.source.path, join(root, 'adapter'));
    assert.equal(loraModules(p.model).length, 0, 'merged: plain layers again');
    const ids = torch.tensor([[3, 1, 4, 1, 5, 9]]);
    model.eval();
    p.model.eval();
    const diff = torch.tidy(() => (p.model as LlamaForCausalLM).forward(ids).sub(model.forward(ids)).abs().max().item());
    assert.ok(diff < 1e-5, `adapter directory as a model vs base + adapter: ${diff}`);
    assert.ok(torch.tidy(() => p.model.stateDict().get('model.layers.0.self_attn.q_proj.weight')!.dtype === 'float32'));
    const bf = await loadPretrained(join(root, 'adapter'), { dtype: 'bfloat16' });
    assert.equal(bf.model.parameters()[0].dtype, 'bfloat16', 'merged in float32, then cast');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const skipStories = needShared('models', 'stories260K', 'stories260K.bin');

function cliRun(methods: unknown[], steps = 4): { dir: string; status: number | null; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-methods-cli-'));
  const rows = Array.from({ length: 16 }, (_, i) => ({ prompt: `Lily had ${i % 5} cats.`, completion: ` She loved them ${i % 3} times.` }));
  writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const cfg = {
    model: { path: sharedPath('models', 'stories260K', 'stories260K.bin') },
    data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 48 } },
    training: { max_steps: steps, batch_size: 4, lr: 0.005, schedule: 'constant', seed: 1, threads: 1 },
    methods,
    output_dir: 'out',
  };
  writeFileSync(join(dir, 'train.yaml'), JSON.stringify(cfg));
  const r = spawnSync(process.execPath, [CLI, 'train', join(dir, 'train.yaml')], { encoding: 'utf8', timeout: 120_000 });
  return { dir, status: r.status, stderr: r.stderr };
}

test('retain train with lora writes a PEFT adapter and, with save_merged, the merged model that matches it', { skip: skipStories }, async () => {
  const { dir, status, stderr } = cliRun([{ name: 'lora', r: 4, alpha: 8, targets: ['q', 'v', 'down'], save_merged: true }]);
  try {
    assert.equal(status, 0, stderr);
    const final = join(dir, 'out', 'final');
    const cfg = JSON.parse(readFileSync(join(final, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.base_model_name_or_path, sharedPath('models', 'stories260K', 'stories260K.bin'));
    assert.deepEqual(cfg.target_modules, ['down_proj', 'q_proj', 'v_proj']);
    assert.ok(existsSync(join(final, 'adapter_model.safetensors')));
    assert.ok(!existsSync(join(final, 'model.safetensors')), 'the adapter replaces the full model in final/');
    const merged = await loadPretrained(join(final, 'merged'));
    const base = await loadPretrained(sharedPath('models', 'stories260K', 'stories260K.bin'));
    loadAdapter(base.model, final);
    const ids = torch.tensor([[1, 300, 20, 45, 7, 99]]);
    base.model.eval();
    merged.model.eval();
    const diff = torch.tidy(() => (base.model as LlamaForCausalLM).forward(ids).sub((merged.model as LlamaForCausalLM).forward(ids)).abs().max().item());
    assert.ok(diff < 1e-4, `merged model vs base + adapter: ${diff}`);
    assert.ok(loraModules(base.model).length === 15, '5 layers × 3 targets');
    // final/ itself loads as a model (its base from base_model_name_or_path), as `retain eval --model final` does.
    const asModel = await loadPretrained(final);
    asModel.model.eval();
    const diff2 = torch.tidy(() => (asModel.model as LlamaForCausalLM).forward(ids).sub((merged.model as LlamaForCausalLM).forward(ids)).abs().max().item());
    assert.ok(diff2 < 1e-5, `final/ as a model vs merged/: ${diff2}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('retain train with lora adapter: continues a saved adapter (path relative to the config) and writes it with the same layers', { skip: skipStories }, async () => {
  const first = cliRun([{ name: 'lora', r: 4, alpha: 8, targets: ['q', 'v'] }]);
  const dir = mkdtempSync(join(tmpdir(), 'retain-lora-continue-'));
  try {
    assert.equal(first.status, 0, first.stderr);
    const start = join(first.dir, 'out', 'final');
    cpSync(start, join(dir, 'start'), { recursive: true });
    writeFileSync(join(dir, 'continue.yaml'), JSON.stringify({ model: { path: 'base' }, data: { train: { path: 'train.jsonl', format: { type: 'text' } } }, training: {}, output_dir: 'out', methods: [{ name: 'lora', adapter: 'start' }] }));
    const cfg = loadTrainConfig(join(dir, 'continue.yaml'));
    assert.deepEqual(cfg.methods, [{ name: 'lora', adapter: join(dir, 'start') }]);
    const second = cliRun([{ name: 'lora', adapter: join(dir, 'start') }], 2);
    try {
      assert.equal(second.status, 0, second.stderr);
      const log = readFileSync(join(second.dir, 'out', 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.kind === 'lora');
      assert.deepEqual([log.lora_layers, log.lora_r, log.lora_alpha, log.lora_adapter], [10, 4, 8, join(dir, 'start')]);
      const a = torch.io.loadSafetensors(join(start, 'adapter_model.safetensors'));
      const b = torch.io.loadSafetensors(join(second.dir, 'out', 'final', 'adapter_model.safetensors'));
      assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      const moved = torch.tidy(() => Math.max(...[...a].map(([k, t]) => t.sub(b.get(k)!).abs().max().item() as number)));
      assert.ok(moved > 0 && moved < 0.1, `two more steps moved the adapter by ${moved}`);
    } finally {
      rmSync(second.dir, { recursive: true, force: true });
    }
  } finally {
    rmSync(first.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

test('retain train runs sam + mofo + hft from a config and logs each', { skip: skipStories }, () => {
  const { dir, status, stderr } = cliRun(['sam', { name: 'mofo', alpha: 0.1 }, { name: 'hft', seed: 3 }], 3);
  try {
    assert.equal(status, 0, stderr);
    const lines = readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.filter((r) => r.kind === 'sam').length, 3);
    assert.ok(lines.some((r) => r.kind === 'mofo' && r.mofo_alpha === 0.1));
    assert.ok(lines.some((r) => r.kind === 'hft' && typeof r.hft_training === 'string'));
    assert.ok(existsSync(join(dir, 'out', 'final', 'model.safetensors')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
