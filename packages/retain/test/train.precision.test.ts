// training.precision bf16 on CPU (train/precision.ts): bfloat16 weights with AdamW's float32 master weights and
// moments, on stories260K through runTraining; the checkpoint holds the float32 state and a resumed run continues
// bit-identically; contradicting settings are refused naming the keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { parseTrainConfig } from '../src/config.js';
import { runTraining } from '../src/train/run.js';
import { precisionPlan } from '../src/train/precision.js';
import { needShared, sharedPath } from './helpers.js';

const MODEL = sharedPath('models', 'stories260K', 'stories260K.bin');

function config(dir: string, out: string, training: Record<string, unknown>, model: Record<string, unknown> = {}) {
  return parseTrainConfig({
    model: { path: MODEL, ...model },
    data: { train: { path: join(dir, 'train.jsonl'), format: { type: 'prompt_completion' }, max_length: 48 } },
    training: { max_steps: 6, batch_size: 4, lr: 0.002, schedule: 'constant', seed: 1, threads: 1, save_every: 3, ...training },
    output_dir: join(dir, out),
  });
}

test('precision bf16 on CPU: bfloat16 weights, float32 master weights and moments in the checkpoint, bit-identical resume, losses near float32', { skip: needShared('models', 'stories260K', 'stories260K.bin') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-bf16-'));
  try {
    const rows = Array.from({ length: 16 }, (_, i) => ({ prompt: `Tom had ${i % 7} apples.`, completion: ` Now he has ${i % 5}.` }));
    writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    const fp32 = await runTraining(config(dir, 'fp32', {}), [], { progress: false });
    const bf16 = await runTraining(config(dir, 'bf16', { precision: 'bf16' }), [], { progress: false });
    const weights = torch.io.loadSafetensors(join(dir, 'bf16', 'final', 'model.safetensors'));
    assert.deepEqual([...new Set([...weights.values()].map((w) => w.dtype))], ['bfloat16']);
    const state = torch.io.loadSafetensors(join(dir, 'bf16', 'checkpoint-3', 'state.safetensors'));
    const masters = [...state].filter(([k]) => k.includes('master'));
    assert.ok(masters.length > 0, `no master weights in the checkpoint: ${[...state.keys()].slice(0, 5).join(', ')}`);
    for (const [k, t] of state) if (/master|exp_avg/.test(k)) assert.equal(t.dtype, 'float32', k);
    const loss = (r: typeof fp32) => r.history.filter((h) => h.loss !== undefined).map((h) => h.loss as number);
    console.log(`stories260K, 6 AdamW steps: fp32 losses ${loss(fp32).map((x) => x.toFixed(4)).join(' ')}; bf16 ${loss(bf16).map((x) => x.toFixed(4)).join(' ')}`);
    // The first steps start from the same weights (rounded); later the runs part as a high learning rate lets them.
    loss(bf16).slice(0, 3).forEach((l, i) => assert.ok(Math.abs(l - loss(fp32)[i]) < 0.05 * loss(fp32)[i], `step ${i + 1}: bf16 ${l} vs fp32 ${loss(fp32)[i]}`));
    assert.ok(loss(bf16)[5] < 0.3 * loss(bf16)[0], 'bf16 training learns');
    // Resume: stop after step 3 (its checkpoint), rerun to 6: the same final weights, bit for bit.
    const cut = config(dir, 'cut', { precision: 'bf16', max_steps: 3 });
    await runTraining(cut, [], { progress: false });
    const resumed = await runTraining(config(dir, 'cut', { precision: 'bf16' }), [], { progress: false });
    assert.equal(resumed.resumedFrom, 3);
    const a = torch.io.loadSafetensors(join(dir, 'bf16', 'final', 'model.safetensors'));
    const b = torch.io.loadSafetensors(join(dir, 'cut', 'final', 'model.safetensors'));
    for (const [k, t] of a) assert.deepEqual(t.to('float32').toArray(), b.get(k)!.to('float32').toArray(), `${k} differs after resume`);
    assert.ok(readdirSync(join(dir, 'cut')).includes('checkpoint-3'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('precision bf16 on CPU refuses what contradicts it, naming the keys', () => {
  const dir = '/nonexistent';
  assert.throws(() => precisionPlan(config(dir, 'o', { precision: 'bf16', optimizer: 'sgd' })), { message: 'training.precision bf16 on CPU keeps float32 master weights in AdamW; optimizer sgd has none (use adamw, or model.dtype bfloat16 for plain bfloat16 sgd)' });
  assert.throws(() => precisionPlan(config(dir, 'o', { precision: 'bf16' }, { dtype: 'float64' })), { message: 'training.precision bf16 on CPU loads the weights in bfloat16, but model.dtype is float64; drop one of them' });
  assert.throws(() => precisionPlan(config(dir, 'o', { precision: 'fp16' })), /training\.precision fp16 needs model\.device cuda/);
  assert.deepEqual(precisionPlan(config(dir, 'o', { precision: 'bf16' })), { dtype: 'bfloat16', autocast: null, masterWeights: true });
  assert.deepEqual(precisionPlan(config(dir, 'o', {}, { dtype: 'bfloat16' })), { dtype: 'bfloat16', autocast: null, masterWeights: false });
});
