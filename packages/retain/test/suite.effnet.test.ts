// The EfficientNet-Lite0 forgetting suite (packages/retain/src/suite/effnet.ts) at a few steps on small slices: the
// digits reach the model as 64×64 three-channel images in [−1, 1], the base agrees with itself, fine-tuning learns
// the new head, and a linear probe leaves the body (BatchNorm statistics included) exactly as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { modelPath } from '../../../bench/models.js';
import { EFFNET, naturalCrops, needEffnetSuite } from '../../../bench/parity/real_models.js';
import { digitsToImages, runEffnetSuite } from '../src/suite/effnet.js';
import { readMnistDigits } from '../src/suite/mnist.js';
import type { EvalResults } from '../src/eval/results.js';

const value = (r: EvalResults, task: string) => r.rows.find((x) => x.task === task && x.primary)!.value;

test('digitsToImages: 28×28 in 0..1 → [N, 3, 64, 64] in [−1, 1], the same grey in every channel', () => {
  const digits = readMnistDigits().slice(0, 3);
  torch.tidy(() => {
    const x = digitsToImages(digits);
    assert.deepEqual(x.shape, [3, 3, 64, 64]);
    assert.equal(x.min().item(), -127 / 128); // background pixel 0 → (0 − 127) / 128
    assert.ok(x.max().item() <= 1 && x.max().item() > 0.5);
    assert.equal(x.select(1, 0).sub(x.select(1, 2)).abs().max().item(), 0);
  });
});

test('EfficientNet suite, FT and probe × 8 steps: FT learns the digits and moves the body; the probe keeps ImageNet agreement at 100%', { skip: needEffnetSuite(), timeout: 900_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-suite-effnet-'));
  try {
    const natural = naturalCrops(join(out, 'crops.safetensors'), 8);
    const c = await runEffnetSuite({ outDir: out, model: modelPath(EFFNET), natural, steps: 8, only: ['FT', 'probe'], trainDigits: 64, testDigits: 64, progress: false });
    assert.deepEqual(c.tuned.map((r) => r.label), ['FT', 'probe']);
    const [ft, probe] = c.tuned;
    assert.equal(value(c.base, 'imagenet_agreement'), 1);
    // The probe's body stays in eval mode and frozen: the ImageNet head on it predicts exactly what the base does.
    assert.equal(value(probe, 'imagenet_agreement'), 1);
    assert.equal(probe.rows.find((x) => x.metric === 'acc_tuned_bn')!.value, 1);
    // A fresh 10-class head starts at about ln 10 = 2.30 nats; eight steps of 16 on 64 repeated digits bring it
    // clearly under (1.87 when written).
    const loss = ft.train!.map((x) => x.loss);
    assert.ok(loss.length >= 1 && loss[loss.length - 1] < Math.log(10) - 0.25, `FT training loss ${loss}`);
    for (const r of c.tuned) {
      assert.deepEqual(r.rows.map((x) => [x.task, x.metric, x.primary, x.n]), [['imagenet_agreement', 'acc', true, 8], ['imagenet_agreement', 'acc_tuned_bn', false, 8], ['mnist64', 'acc', true, 64]]);
      assert.notEqual(value(r, 'mnist64'), value(c.base, 'mnist64'), `${r.label} should move the digit accuracy`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
