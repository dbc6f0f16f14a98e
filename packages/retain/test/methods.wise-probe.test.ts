// WiSE-FT (docs/METHODS.md §9) and the linear probe / LP-FT (§11): α = 0 gives the base and α = 1 the fine-tuned state bit
// for bit, α = 0.5 the midpoint, buffers included; the sweep scores every α on held-out data; LoRA is scaled instead;
// a probe leaves the body bit-identical; LP-FT switches phase on time and resumes exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { classificationLoss, train } from '../src/train/trainer.js';
import { checkComposition } from '../src/train/hooks.js';
import { applyWise, wiseInterpolate, WiseFT } from '../src/methods/wise.js';
import { L2SP } from '../src/methods/l2sp.js';
import { EWC } from '../src/methods/ewc.js';
import { LinearProbe } from '../src/methods/probe.js';
import { buildMethods } from '../src/methods/registry.js';
import { loraModules } from '../src/methods/lora/index.js';
import { atStep, constant, featureExamples, sameTensors, snapshot, tinyLlama, tinyNet, tokenExamples, type TinyNet } from './methods-a.fixtures.js';

const ex = featureExamples(24, 1);
const held = featureExamples(12, 2, 'heldout');

async function fineTune(model: TinyNet, steps: number, methods: import('../src/train/hooks.js').Method[] = [], extra: Partial<Parameters<typeof train>[0]> = {}) {
  const r = await train({ model, optimizer: { kind: 'adamw', weightDecay: 0.1 }, examples: ex, lossFn: classificationLoss, batchSize: 6, maxSteps: steps, schedule: constant(0.05), methods, progress: false, seed: 3, ...extra });
  return r;
}

function dispose(m: Map<string, Tensor>): void {
  torch.dispose(m.values());
}

test('wiseInterpolate: α = 0 is the base and α = 1 the tuned state bit for bit, α = 0.5 the midpoint, over every tensor including buffers', async () => {
  const model = tinyNet(4);
  const base = snapshot(model);
  await fineTune(model, 4);
  const tuned = snapshot(model);
  assert.ok(base.has('bn.running_mean') && base.has('bn.num_batches_tracked'));
  assert.notDeepEqual(sameTensors(base, tuned), [], 'fine-tuning moved the state');
  const w0 = wiseInterpolate(base, tuned, 0);
  const w1 = wiseInterpolate(base, tuned, 1);
  const wh = wiseInterpolate(base, tuned, 0.5);
  assert.deepEqual(sameTensors(base, w0), []);
  assert.deepEqual(sameTensors(tuned, w1), []);
  assert.equal(wh.size, base.size);
  for (const [k, a] of base) {
    const b = tuned.get(k)!;
    if (k.endsWith('num_batches_tracked')) {
      assert.equal(wh.get(k)!.item(), Math.round((a.item() + b.item()) / 2));
      assert.equal(wh.get(k)!.dtype, 'int64');
      continue;
    }
    const want = torch.tidy(() => a.double().add(b.double()).div(2));
    assert.ok(torch.tidy(() => wh.get(k)!.double().allclose(want, 1e-6, 1e-7)), `${k} is not the midpoint`);
    want.dispose();
  }
  // Writing θ_α into a model changes parameters and buffers alike.
  applyWise(model, base, tuned, 0);
  assert.deepEqual(sameTensors(base, snapshot(model)), []);
  assert.throws(() => wiseInterpolate(base, tuned, 1.5), /alpha must be a number in \[0, 1\]/);
  const fewer = new Map([...tuned].filter(([k]) => k !== 'head.bias'));
  assert.throws(() => wiseInterpolate(base, fewer, 0.5), /missing from the tuned one: head.bias/);
  for (const m of [base, tuned, w0, w1, wh]) dispose(m);
  model.dispose();
});

test('WiSE-FT in the loop: α = 0.3 gives (1−α)·θ₀ + α·θ_ft of the same run without it; a run resumed after the end does not interpolate twice', async () => {
  const plain = tinyNet(5);
  const theta0 = snapshot(plain);
  await fineTune(plain, 5);
  const ft = snapshot(plain);
  const dir = mkdtempSync(join(tmpdir(), 'retain-wise-'));
  const model = tinyNet(5);
  const wise = new WiseFT({ alpha: 0.3 });
  const r = await fineTune(model, 5, [wise], { outputDir: dir, saveEvery: 10, resume: true });
  const want = wiseInterpolate(theta0, ft, 0.3);
  assert.deepEqual(sameTensors(want, snapshot(model)), []);
  assert.equal(r.history.find((h) => h.wise_alpha_chosen !== undefined)!.wise_by, 'state-dict interpolation');
  // The final checkpoint holds θ_α; resuming from it must leave θ_α alone.
  const again = tinyNet(5);
  const r2 = await fineTune(again, 5, [new WiseFT({ alpha: 0.3 })], { outputDir: dir, saveEvery: 10, resume: true });
  assert.equal(r2.resumedFrom, 5);
  assert.deepEqual(sameTensors(want, snapshot(again)), []);
  assert.match(String(r2.history.find((h) => h.kind === 'wise')!.wise_note), /already applied/);
  wise.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('WiSE-FT sweep: every α from 0 to 1 is scored on held-out data and logged, the best is kept', async () => {
  const plain = tinyNet(6);
  const theta0 = snapshot(plain);
  await fineTune(plain, 6);
  const ft = snapshot(plain);
  const model = tinyNet(6);
  const r = await fineTune(model, 6, [new WiseFT({ alpha: 'sweep', eval_data: held })]);
  const scores = r.history.filter((h) => h.kind === 'wise' && h.wise_score !== undefined && h.wise_alpha !== undefined);
  assert.deepEqual(scores.map((h) => h.wise_alpha), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]);
  // The score is minus the mean held-out loss of θ_α in eval mode, computed here without WiSE-FT's code path.
  const check = tinyNet(0);
  for (const h of [scores[0], scores[5], scores[10]]) {
    applyWise(check, theta0, ft, h.wise_alpha as number);
    check.eval();
    const loss = torch.noGrad(() => torch.tidy(() => torch.crossEntropy(check.forward(torch.tensor(held.map((e) => Array.from(e.features!)))), torch.tensor(held.map((e) => e.label!))).item()));
    assert.ok(Math.abs((h.wise_score as number) + loss) < 1e-5, `α ${h.wise_alpha}: score ${h.wise_score} vs −loss ${-loss}`);
  }
  const best = scores.reduce((a, b) => ((b.wise_score as number) >= (a.wise_score as number) ? b : a));
  const chosen = r.history.find((h) => h.wise_alpha_chosen !== undefined)!;
  assert.equal(chosen.wise_alpha_chosen, best.wise_alpha);
  assert.deepEqual(sameTensors(wiseInterpolate(theta0, ft, best.wise_alpha as number), snapshot(model)), []);
  assert.throws(() => new WiseFT({ alpha: 'sweep' }), /alpha: sweep needs held-out data/);
});

test('WiSE-FT with LoRA scales the adapters by α instead of interpolating A and B', async () => {
  const model = tinyLlama(7);
  const data = tokenExamples(8, 3);
  const methods = buildMethods([{ name: 'lora', r: 2 }, { name: 'wise', alpha: 0.4 }]);
  const r = await train({ model, optimizer: { kind: 'adamw' }, examples: data, batchSize: 4, maxSteps: 2, schedule: constant(0.01), methods, progress: false });
  const layers = loraModules(model);
  assert.ok(layers.length > 0);
  for (const [, l] of layers) assert.equal(l.scale, 0.4);
  assert.equal(r.history.find((h) => h.wise_alpha_chosen !== undefined)!.wise_by, 'adapter scale');
  model.dispose();
});

test('linear probe: only the head trains; the body (weights and batch-norm statistics) stays bit-identical, also across evaluations', async () => {
  const model = tinyNet(8);
  const start = snapshot(model);
  const evaluate = () => {
    // An evaluation between steps flips the whole model to eval and back to train.
    model.eval();
    model.train();
    return { probe_eval: 1 };
  };
  const r = await fineTune(model, 6, [new LinearProbe({ head: '^head\\.' })], { evaluate, evalEvery: 2 });
  const end = snapshot(model);
  assert.deepEqual(sameTensors(start, end, (k) => !k.startsWith('head.')), [], 'body unchanged');
  assert.deepEqual(sameTensors(start, end, (k) => k.startsWith('head.')).sort(), ['head.bias', 'head.weight']);
  assert.ok((r.history.filter((h) => h.loss !== undefined).at(-1)!.loss as number) < (r.history.find((h) => h.loss !== undefined)!.loss as number), 'the probe learns');
  const line = r.history.find((h) => h.kind === 'probe')!;
  assert.equal(line.probe_head_tensors, 2);
  assert.equal(line.probe_body_tensors, 4);
  assert.throws(() => new LinearProbe({}), /option 'head' is required/);
  assert.throws(() => new LinearProbe({ head: 'x', then: 'finetune' }), /needs probe_steps or probe_epochs/);
  await assert.rejects(fineTune(tinyNet(0), 1, [new LinearProbe({ head: '^classifier\\.' })]), /no parameter matches the head pattern \/\^classifier\\.\/; parameters: fc.weight/);
  assert.throws(() => checkComposition(buildMethods([{ name: 'probe', head: 'x' }, 'hft'])), /cannot run together/);
});

test('LP-FT: the probe phase ends after probe_steps (or probe_epochs), then everything trains; resume across the switch is exact', async () => {
  for (const phase of [{ probe_steps: 3 }, { probe_epochs: 1 }]) {
    const switchAt = 'probe_steps' in phase ? 3 : 4; // 24 examples in batches of 6: an epoch is 4 steps
    const run = async (dir: string | null, steps: number) => {
      const model = tinyNet(9);
      const start = snapshot(model);
      let mid: Map<string, Tensor> | null = null;
      const r = await fineTune(model, steps, [atStep([switchAt], () => (mid = snapshot(model))), new LinearProbe({ head: '^head\\.', then: 'finetune', ...phase })], { outputDir: dir, saveEvery: dir ? 2 : null, resume: true });
      return { r, start, mid: mid as Map<string, Tensor> | null, end: snapshot(model) };
    };
    const a = await run(null, 8);
    assert.deepEqual(sameTensors(a.start, a.mid!, (k) => !k.startsWith('head.')), [], `${JSON.stringify(phase)}: body frozen through the probe`);
    const moved = sameTensors(a.mid!, a.end, (k) => !k.startsWith('head.'));
    for (const k of ['fc.weight', 'fc.bias', 'bn.weight', 'bn.running_mean', 'bn.num_batches_tracked']) assert.ok(moved.includes(k), `${k} trains after the switch`);
    assert.equal(a.r.history.find((h) => h.probe_phase === 'finetune')!.step, switchAt);
    const dir = mkdtempSync(join(tmpdir(), 'retain-lpft-'));
    await run(dir, 2);
    const b = await run(dir, 8);
    assert.equal(b.r.resumedFrom, 2);
    assert.deepEqual(sameTensors(a.end, b.end), [], `${JSON.stringify(phase)}: resumed run`);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('L2-SP and EWC leave a new head out of θ₀ (it has no pretrained value): with a linear probe they train the head exactly as the probe alone', async () => {
  const general = featureExamples(9, 4, 'general');
  const probeOnly = tinyNet(10);
  await fineTune(probeOnly, 5, [new LinearProbe({ head: '^head\\.' })]);
  const want = snapshot(probeOnly);
  // Listed before the probe: the head is known before any setup runs.
  const l2 = new L2SP({ lambda: 5 });
  for (const anchor of [l2, new EWC({ lambda: 50, data: general })]) {
    const model = tinyNet(10);
    await fineTune(model, 5, [anchor, new LinearProbe({ head: '^head\\.' })]);
    assert.deepEqual(sameTensors(want, snapshot(model)), [], `${anchor.name}: the head is not pulled back to its random initialisation`);
    model.dispose();
  }
  assert.deepEqual(l2.anchors.map(([n]) => n), ['fc.weight', 'fc.bias', 'bn.weight', 'bn.bias']);
  assert.deepEqual(l2.heads.map(([n]) => n), ['head.weight', 'head.bias']);
  // head_lambda gives the new head a plain L2, λ_head·Σθ², without an exclude pattern.
  const plain = new L2SP({ lambda: 5, head_lambda: 0.1 });
  const model = tinyNet(11);
  const r = await fineTune(model, 2, [new LinearProbe({ head: '^head\\.' }), plain]);
  const sq = torch.tidy(() => model.head.weight.square().sum().add(model.head.bias!.square().sum()).item());
  assert.ok(Math.abs(torch.tidy(() => plain.penalty().item()) - 0.1 * sq) < 1e-6 * sq, 'plain L2 on the head');
  assert.equal(r.history.find((h) => h.kind === 'l2')!.l2_excluded_tensors, 2);
  await assert.rejects(fineTune(tinyNet(0), 1, [new L2SP({ lambda: 1, head_lambda: 0.1 })]), /l2: head_lambda applies to new heads \(a probe's head, or tensors matched by 'exclude'\), and this run has none/);
  model.dispose();
  probeOnly.dispose();
});

test("WiSE-FT interpolates a new head against the probe's head (LP-FT: the head at the switch; a plain probe: its final head), and resumes across the switch exactly", async () => {
  const lpft = () => new LinearProbe({ head: '^head\\.', then: 'finetune', probe_steps: 3 });
  const plain = tinyNet(12);
  const theta0 = snapshot(plain);
  let atSwitch: Map<string, Tensor> | null = null;
  await fineTune(plain, 7, [atStep([3], () => (atSwitch = snapshot(plain))), lpft()]);
  const ft = snapshot(plain);
  const base = new Map([...theta0].map(([k, t]) => [k, k.startsWith('head.') ? atSwitch!.get(k)! : t]));
  const want = wiseInterpolate(base, ft, 0.5);
  const run = async (dir: string | null, steps: number) => {
    const model = tinyNet(12);
    const r = await fineTune(model, steps, [lpft(), new WiseFT({ alpha: 0.5 })], { outputDir: dir, saveEvery: dir ? 2 : null, keepCheckpoints: 10, resume: true });
    return { r, w: snapshot(model) };
  };
  const a = await run(null, 7);
  assert.deepEqual(sameTensors(want, a.w), [], 'θ_0.5: body against θ₀, head against the probe head');
  // Resumed from a checkpoint written after the switch: the probe head comes from the checkpoint.
  const da = mkdtempSync(join(tmpdir(), 'retain-wise-head-'));
  const db = mkdtempSync(join(tmpdir(), 'retain-wise-head-'));
  await run(da, 7);
  cpSync(join(da, 'checkpoint-4'), join(db, 'checkpoint-4'), { recursive: true });
  const b = await run(db, 7);
  assert.equal(b.r.resumedFrom, 4);
  assert.deepEqual(sameTensors(want, b.w), [], 'resumed after the switch');
  // A plain probe: the head's base is its own final value, so θ_α keeps the probed head (and the frozen body).
  const probed = tinyNet(13);
  await fineTune(probed, 4, [new LinearProbe({ head: '^head\\.' })]);
  const withWise = tinyNet(13);
  await fineTune(withWise, 4, [new WiseFT({ alpha: 0.3 }), new LinearProbe({ head: '^head\\.' })]);
  assert.deepEqual(sameTensors(snapshot(probed), snapshot(withWise)), []);
  rmSync(da, { recursive: true, force: true });
  rmSync(db, { recursive: true, force: true });
});
