import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { toExample } from '../src/data/formats.js';
import { classificationLoss, train } from '../src/train/trainer.js';

// An image-classification run through the same loop: features in, class logits out, per-sample losses.
test('the loop trains a classifier on feature examples (image_classification format)', async () => {
  torch.manualSeed(0);
  // Two Gaussian blobs in 4-D: class = sign of the first coordinate.
  const recs = Array.from({ length: 64 }, (_, i) => {
    const c = i % 2;
    const x = [c ? 1.5 : -1.5, Math.sin(i), Math.cos(i), (i % 5) / 5];
    return { id: `p${i}`, image: x, label: c };
  });
  const examples = recs.map((r) => toExample(r, { type: 'image_classification', shape: [4], numClasses: 2 }, { tokenizer: null as never }));
  const model = new torch.nn.Sequential(new torch.nn.Linear(4, 8), new torch.nn.ReLU(), new torch.nn.Linear(8, 2));
  const r = await train({ model: model as never, optimizer: { kind: 'sgd' }, examples, lossFn: classificationLoss, batchSize: 16, epochs: 5, schedule: { kind: 'constant', lr: 0.2 }, clipGradNorm: null, progress: false });
  assert.equal(r.steps, 20);
  const first = r.history[0].loss as number;
  assert.ok(r.finalLoss < first / 2, `loss ${first} -> ${r.finalLoss}`);
  const acc = torch.tidy(() => {
    const x = torch.tensor(recs.map((q) => q.image));
    return (model.forward(x) as torch.Tensor).argmax(1).eq(torch.tensor(recs.map((q) => q.label))).float().mean().item();
  });
  assert.ok(acc > 0.95, `accuracy ${acc}`);
  assert.throws(() => toExample({ id: 'bad', image: [1, 2], label: 0 }, { type: 'image_classification', shape: [4], numClasses: 2 }, { tokenizer: null as never }), /record bad: 'image' must be an array of 4 numbers/);
  model.dispose();
});
