// Merging beyond WiSE-FT (docs/METHODS.md §14) on hand-made tensors whose results are worked out by hand in the comments:
// TIES' trimming (ties with the smallest kept magnitude stay), sign election by summed mass, the disjoint mean; task
// arithmetic over several vectors; DARE's rescale (kept entries exactly τ/(1−p), mean ≈ τ, seeded, the global RNG
// untouched); and the method in a real run merging this run's task vector with a second one passed under `with`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { dareDrop, Merge, mergeStateDicts, tiesMerge, trimTopK, type MergeSettings } from '../src/methods/merge.js';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { train } from '../src/train/trainer.js';
import { rng } from '../src/data/loader.js';
import { loadPretrained } from '../src/models/hub.js';
import { needShared, sharedPath } from './helpers.js';

const STORIES = ['models', 'stories260K', 'stories260K.bin'] as const;

const t = (v: number[]) => torch.tensor(v, { dtype: 'float64' });
const arr = (x: Tensor) => Array.from(x.data() as Float64Array);

test('merge: TIES trims per tensor, elects signs by summed mass and averages only the agreeing entries', () => {
  torch.tidy(() => {
    // k = 0.4 of 5 entries keeps the 2 largest magnitudes.
    assert.deepEqual(arr(trimTopK(t([0.5, -3, 1, 0.1, -2]), 0.4)), [0, -3, 0, 0, -2]);
    // No trimming (k = 1): sums [-2, 0, 3, 0.75] elect signs [-, 0, +, +]; coordinate 0 keeps only -4, coordinate 1
    // has no sign, coordinate 2 averages 3 and 1 (the -1 disagrees), coordinate 3 averages 0.5 and 0.5.
    const v = [t([1, -2, 3, 0.5]), t([-4, 1, 1, 0.5]), t([1, 1, -1, -0.25])];
    assert.deepEqual(arr(tiesMerge(v, 1)), [-4, 0, 2, 0.5]);
    // k = 0.5 keeps 2 of 4: [0, -2, 3, 0], [-4, 1, 1, 0] (the two 1s tie for second), [1, 1, -1, 0] (three tie);
    // sums [-3, 0, 3, 0] elect [-, 0, +, 0] → [-4, 0, mean(3, 1), 0].
    assert.deepEqual(arr(tiesMerge(v, 0.5)), [-4, 0, 2, 0]);
    // One vector: TIES is trimmed task arithmetic.
    assert.deepEqual(arr(tiesMerge([t([0.5, -3, 1, 0.1, -2])], 0.4)), [0, -3, 0, 0, -2]);
  });
});

test('merge: state dicts — θ₀ + λ·merged τ on floating tensors; integer buffers and kept keys take the run\'s values', () => {
  torch.tidy(() => {
    const base = new Map([['w', t([1, 1, 1, 1])], ['steps', torch.tensor([3], { dtype: 'int64' })], ['head', t([0, 0])]]);
    const a = new Map([['w', t([2, -1, 4, 1.5])], ['steps', torch.tensor([7], { dtype: 'int64' })], ['head', t([5, 6])]]);
    const b = new Map([['w', t([-3, 2, 2, 1.5])], ['steps', torch.tensor([9], { dtype: 'int64' })], ['head', t([7, 8])]]);
    const c = new Map([['w', t([2, 2, 0, 0.75])], ['steps', torch.tensor([9], { dtype: 'int64' })], ['head', t([7, 8])]]);
    const s: MergeSettings = { mode: 'ties', lambda: 0.5, k: 1, p: 0, seed: 0 };
    // τ = [1,-2,3,.5], [-4,1,1,.5], [1,1,-1,-.25] as above → merged [-4, 0, 2, 0.5].
    const out = mergeStateDicts(base, [{ name: 'a', state: a }, { name: 'b', state: b }, { name: 'c', state: c }], s, (k) => k === 'head');
    assert.deepEqual(arr(out.get('w')!), [-1, 1, 2, 1.25]);
    assert.deepEqual(Array.from(out.get('steps')!.data() as BigInt64Array), [7n]);
    assert.deepEqual(arr(out.get('head')!), [5, 6]);
    // Task arithmetic sums the vectors: 1 + 0.5·(τa + τb) = 1 + 0.5·[-3, -1, 4, 1].
    const ta = mergeStateDicts(base, [{ name: 'a', state: a }, { name: 'b', state: b }], { ...s, mode: 'task_arithmetic' });
    assert.deepEqual(arr(ta.get('w')!), [-0.5, 0.5, 3, 1.5]);
    assert.deepEqual(arr(ta.get('head')!), [6, 7], 'without keepTuned every floating tensor merges: 0.5·([5,6] + [7,8])');
    const short = new Map([['w', t([1, 2, 3, 4])]]);
    assert.throws(() => mergeStateDicts(base, [{ name: 'a', state: a }, { name: '/m/other', state: short }], s), /^Error: merge: \/m\/other lacks 2 tensor\(s\) of the model: steps, head; every merged model needs the same architecture$/);
  });
});

test('merge: DARE keeps entries with probability 1−p, rescaled by 1/(1−p) (expectation τ), seeded, global RNG untouched', () => {
  torch.tidy(() => {
    const n = 200_000;
    const tau = torch.full([n], 0.3, { dtype: 'float64' });
    torch.manualSeed(123);
    const expectNext = torch.rand([4]);
    torch.manualSeed(123);
    const d = dareDrop(tau, 0.9, 42);
    assert.ok(torch.rand([4]).equal(expectNext), 'the global RNG stream is unchanged by DARE');
    const kept = d.ne(0);
    const frac = kept.double().mean().item();
    // Binomial: sd of the kept fraction is sqrt(0.1·0.9/n) = 6.7e-4; 5 sd.
    assert.ok(Math.abs(frac - 0.1) < 3.4e-3, `kept fraction ${frac}`);
    const vals = torch.ops.masked_select(d, kept);
    assert.ok(Math.abs(vals.min().item() - 0.3 / 0.1) < 1e-12 && Math.abs(vals.max().item() - 0.3 / 0.1) < 1e-12, 'kept entries are τ/(1−p)');
    assert.ok(Math.abs(d.mean().item() - 0.3) < 0.3 * 0.034, `mean ${d.mean().item()} ≈ τ`);
    assert.ok(d.equal(dareDrop(tau, 0.9, 42)), 'same seed, same mask');
    assert.ok(!d.equal(dareDrop(tau, 0.9, 43)), 'another seed, another mask');
    assert.ok(dareDrop(tau, 0, 1).equal(tau), 'p = 0 keeps τ');
  });
});

test('merge: options are checked by name', () => {
  assert.deepEqual([new Merge().mode, new Merge().lambda], ['ties', 1]);
  assert.throws(() => new Merge({ mode: 'tie' }), /^Error: merge: option 'mode' must be one of task_arithmetic, ties, dare, dare_ties, got "tie"$/);
  assert.throws(() => new Merge({ k: 0 }), /^Error: merge: option 'k' must be a fraction in \(0, 1\], got 0$/);
  assert.throws(() => new Merge({ mode: 'task_arithmetic', p: 0.5 }), /^Error: merge: option 'p' \(DARE's drop probability\) applies to mode dare or dare_ties, not task_arithmetic$/);
  assert.throws(() => new Merge({ lambda: 'sweep' }), /^Error: merge: lambda: sweep needs held-out data to choose λ/);
  assert.throws(() => new Merge({ lambdas: [0.5] }), /^Error: merge: option 'lambdas' applies to lambda: sweep$/);
});

const CONFIG: LlamaConfig = {
  model_type: 'llama', vocab_size: 32, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2,
  num_key_value_heads: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};

test('merge in a run: task arithmetic of this run and a model under `with`; a sweep keeps the best λ', async () => {
  const r = rng(3);
  const examples = Array.from({ length: 8 }, (_, i) => {
    const ids = Array.from({ length: 6 }, () => Math.floor(r() * 32));
    return { id: `e${i}`, ids, lossMask: ids.map((_, j) => (j ? 1 : 0)), source: 'train' };
  });
  const fresh = () => {
    torch.manualSeed(5);
    return new LlamaForCausalLM(CONFIG);
  };
  const theta0 = new Map([...fresh().stateDict()].map(([k, v]) => [k, torch.keep(v.detach().clone())]));
  // The other "fine-tuned model": θ₀ plus a fixed offset.
  const other = new Map([...theta0].map(([k, v]) => [k, torch.keep(v.add(0.01))]));
  const run = async (opts: Record<string, unknown>) => {
    const model = fresh();
    const merge = new Merge(opts);
    let ft: Map<string, Tensor> | null = null;
    const inner = merge.finish.bind(merge);
    merge.finish = async (ctx) => {
      ft = new Map([...ctx.model.stateDict()].map(([k, v]) => [k, torch.keep(v.detach().clone())]));
      await inner(ctx);
    };
    await train({ model, optimizer: { kind: 'adamw' }, examples, batchSize: 4, maxSteps: 2, schedule: { kind: 'constant', lr: 1e-2 }, seed: 1, methods: [merge], progress: false });
    return { model, merge, ft: ft! };
  };
  const { model, ft } = await run({ mode: 'task_arithmetic', lambda: 0.5, with: [other] });
  let err = 0;
  for (const [k, v] of model.stateDict()) {
    const want = theta0.get(k)!.double().add(ft.get(k)!.double().sub(theta0.get(k)!.double()).add(0.01).mul(0.5));
    err = Math.max(err, v.double().sub(want).abs().max().item());
  }
  assert.ok(err < 1e-6, `θ₀ + 0.5·(τ_run + τ_with) differs by ${err}`);
  // The sweep's choice is the λ with the best score (here: the one closest to 0.3 by a made-up score).
  const scoreOf = (m: LlamaForCausalLM) => -Math.abs(m.stateDict().get('model.norm.weight')!.double().sub(theta0.get('model.norm.weight')!.double()).sum().item());
  const s = await run({ mode: 'ties', k: 0.5, lambda: 'sweep', lambdas: [0, 0.5, 1], evaluate: scoreOf });
  assert.deepEqual(s.merge.scores.map(([x]) => x.lambda), [0, 0.5, 1]);
  assert.equal(s.merge.chosen!.lambda, 0, 'λ = 0 (θ₀ itself) scores best on a score that measures the distance from θ₀');
  await assert.rejects(run({ with: ['/nonexistent/model'] }), /^Error: merge: with\[0\] "\/nonexistent\/model" does not exist; give fine-tuned models of the same base model/);
});

test('merge in a run on stories260K: a model under `with` is loaded from disk (here θ₀ itself, τ = 0)', { skip: needShared(...STORIES) }, async () => {
  const path = sharedPath(...STORIES);
  const p = await loadPretrained(path);
  const tok = p.tokenizer!;
  const examples = ['Lily liked to count: 1, 2, 3.', 'Tom had 4 red cars and 2 blue cars.'].map((text, i) => {
    const ids = tok.encode(text, { bos: true });
    return { id: `s${i}`, source: 'train', ids, lossMask: ids.map((_, j) => (j ? 1 : 0)) };
  });
  const model = p.model as unknown as LlamaForCausalLM;
  const theta0 = new Map([...model.stateDict()].map(([k, v]) => [k, torch.keep(v.detach().clone())]));
  const merge = new Merge({ mode: 'task_arithmetic', lambda: 0.5, with: [path] });
  let ft: Map<string, Tensor> | null = null;
  const inner = merge.finish.bind(merge);
  merge.finish = async (ctx) => {
    ft = new Map([...ctx.model.stateDict()].map(([k, v]) => [k, torch.keep(v.detach().clone())]));
    await inner(ctx);
  };
  await train({ model, optimizer: { kind: 'adamw' }, examples, batchSize: 2, maxSteps: 2, schedule: { kind: 'constant', lr: 1e-3 }, seed: 1, methods: [merge], progress: false });
  let err = 0;
  let moved = 0;
  for (const [k, v] of model.stateDict()) {
    const t0 = theta0.get(k)!.double();
    // θ₀ + 0.5·(τ_run + 0): the midpoint between θ₀ and the fine-tuned weights.
    err = Math.max(err, torch.tidy(() => v.double().sub(t0.add(ft!.get(k)!.double().sub(t0).mul(0.5))).abs().max().item()));
    moved = Math.max(moved, torch.tidy(() => ft!.get(k)!.double().sub(t0).abs().max().item()));
  }
  assert.ok(moved > 0, 'training moved the weights');
  assert.ok(err < 1e-6, `θ₀ + 0.5·τ differs by ${err}`);
});
