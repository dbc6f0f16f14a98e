import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { CharLSTM, type CharLSTMConfig } from '../src/models/charlstm.js';
import { CharVocab } from '../src/tokenizers/char.js';
import { keyToTf, readMl5, tfToKey } from '../src/models/ml5.js';
import { needPython } from '../../torch/test/helpers.js';
import { assertTensorClose, pyTensors, randomise } from './pyref.js';
import { needShared, sharedPath } from './helpers.js';

const tiny: CharLSTMConfig = { vocab_size: 11, embedding_size: 5, hidden_size: 7, num_layers: 2 };
const IDS = [[1, 5, 9, 2, 3, 10], [4, 4, 8, 0, 6, 7]];

test('char LSTM (TF BasicLSTMCell layout) logits and gradients match a hand-written PyTorch TF cell (bench/py/charlstm_ref.py)', { skip: needPython() }, () => {
  torch.manualSeed(21);
  const model = new CharLSTM(tiny).to('float64');
  randomise(model, 0.5);
  const ref = pyTensors(`
from charlstm_ref import char_lstm
for v in W.values(): v.requires_grad_(True)
ids = torch.tensor(inp['ids'])
logits = char_lstm(W, ids, 2)
loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
loss.backward()
OUT['logits'] = logits
for k, v in W.items():
    OUT['grad.' + k] = v.grad
`, model.stateDict(), { ids: IDS });
  for (const fused of [false, true]) {
    torch.tidy(() => {
      const x = torch.tensor(IDS);
      const logits = model.forward(x, { fused }); // [2, 6, V]
      assertTensorClose(logits, ref.tensors.get('logits'), { rtol: 1e-11, atol: 1e-13, msg: `logits (fused ${fused})` });
      const loss = torch.crossEntropy(logits.narrow(1, 0, 5).reshape(-1, tiny.vocab_size), x.narrow(1, 1, 5).reshape(-1));
      model.zeroGrad();
      loss.backward();
      for (const [k, p] of model.namedParameters()) assertTensorClose(p.grad!, ref.tensors.get(`grad.${k}`), { rtol: 1e-9, atol: 1e-12, msg: `grad ${k} (fused ${fused})` });
    });
  }
  model.dispose();
  torch.dispose(ref.tensors.values());
});

test('char LSTM: feeding text in pieces through a state equals one pass; the state detaches for truncated BPTT', () => {
  torch.manualSeed(2);
  const model = new CharLSTM(tiny).to('float64');
  randomise(model, 0.5);
  torch.noGrad(() => torch.tidy(() => {
    const x = torch.tensor(IDS);
    const whole = model.forward(x, { fused: false });
    for (const fused of [true, false]) {
      const state = model.newState(2);
      const a = model.forward(x.narrow(1, 0, 4), { state, fused });
      const b = model.forward(x.narrow(1, 4, 2), { state, fused });
      assertTensorClose(torch.cat([a, b], 1), whole, { rtol: 1e-12, atol: 1e-14, msg: `pieces (fused ${fused})` });
      state.dispose();
    }
  }));
  const state = model.newState(2);
  torch.tidy(() => {
    model.forward(torch.tensor(IDS), { state, fused: false });
    assert.ok(state.h[1].requiresGrad, 'the state carries the graph');
  });
  state.detach();
  assert.ok(!state.h[1].requiresGrad && !state.c[0].requiresGrad);
  state.dispose();
  model.dispose();
});

test('ml5 loader: TF names map to module keys reversibly; file sizes are checked against the manifest', () => {
  assert.equal(tfToKey('rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/weights'), 'rnnlm.multi_rnn_cell.cell_0.basic_lstm_cell.weights');
  assert.equal(keyToTf('rnnlm.multi_rnn_cell.cell_0.basic_lstm_cell.weights'), 'rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/weights');
  assert.throws(() => tfToKey('dense/kernel.0'), /contains '\.'/);
  const dir = mkdtempSync(join(tmpdir(), 'retain-ml5-'));
  try {
    const write = (manifest: unknown, files: Record<string, number>) => {
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
      for (const [f, n] of Object.entries(files)) writeFileSync(join(dir, f), Buffer.from(Float32Array.from({ length: n }, (_, i) => i).buffer));
    };
    write({ 'dense/weights': { filename: 'dense_weights', shape: [2, 3] }, 'dense/biases': { filename: 'dense_biases', shape: [3] } }, { dense_weights: 6, dense_biases: 3 });
    const w = readMl5(dir);
    assert.deepEqual([...w.keys()], ['dense.weights', 'dense.biases']);
    assert.deepEqual(w.get('dense.weights')!.toArray(), [[0, 1, 2], [3, 4, 5]]);
    torch.dispose(w.values());
    write({ 'dense/weights': { filename: 'dense_weights', shape: [2, 4] }, 'dense/biases': { filename: 'missing', shape: [3] } }, {});
    assert.throws(() => readMl5(dir), (e: Error) => {
      assert.match(e.message, /'dense\/weights': file dense_weights has 24 bytes, but shape \[2, 4\] of float32 needs 32/);
      assert.match(e.message, /'dense\/biases': file missing is missing/);
      return true;
    });
    write({ x: { filename: '../etc/passwd', shape: [1] } }, {});
    assert.throws(() => readMl5(dir), /not a plain file name/);
    write({ x: { filename: 'x', shape: [1.5] } }, {});
    assert.throws(() => readMl5(dir), /entry 'x' has shape \[1\.5\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const skipModel = needShared('models', 'charrnn-shakespeare', 'manifest.json') || needShared('data', 'text', 'shakespeare.txt');

test('charrnn-shakespeare: vocab.json\'s damaged keys are repaired (two spaces → u, empty → U)', { skip: skipModel }, () => {
  const vocab = CharVocab.fromFile(sharedPath('models', 'charrnn-shakespeare', 'vocab.json'));
  assert.equal(vocab.size, 65);
  assert.deepEqual(vocab.encode('uU '), [13, 40, 0]);
  const text = readFileSync(sharedPath('data', 'text', 'shakespeare.txt'), 'utf8');
  assert.equal(vocab.decode(vocab.encode(text.slice(0, 5000))), text.slice(0, 5000));
  assert.throws(() => vocab.encode('ab(c'), /character "\(" at position 2 is not in the vocabulary/);
});

// Known answer. Protocol: teacher forcing over the whole of shakespeare.txt (1,115,394 characters, 1,115,393
// predictions less the 1 lost to the split), cut into 64 equal contiguous streams that each start from the zero state
// and carry their state to the end; float32, fused aten LSTM. Measured: 1.2958 nats/char (a single stream over the
// whole file gives 1.2947). docs/DATA.md states 1.33; that figure is reached only with short contexts from a zero state
// (512-character windows give 1.339, 256-character windows 1.383), so this test checks the measured value of its own
// protocol instead (see the task report).
test('charrnn-shakespeare: teacher-forced loss over the whole of shakespeare.txt is 1.296 nats/char', { skip: skipModel, timeout: 300_000 }, () => {
  const { model, vocab } = CharLSTM.fromMl5(sharedPath('models', 'charrnn-shakespeare'));
  model.eval();
  assert.deepEqual([model.config.embedding_size, model.config.hidden_size, model.config.num_layers, model.config.vocab_size], [128, 128, 2, 65]);
  const ids = vocab.encode(readFileSync(sharedPath('data', 'text', 'shakespeare.txt'), 'utf8'));
  const B = 64;
  const L = Math.floor((ids.length - 1) / B);
  let total = 0;
  torch.inferenceMode(() => torch.tidy(() => {
    const all = torch.tensor(Int32Array.from(ids.slice(0, B * L + 1))).long();
    const x = all.narrow(0, 0, B * L).view(B, L); // [B, L]: stream b holds characters b·L .. b·L+L-1
    const y = all.narrow(0, 1, B * L).view(B, L); // the next character of each
    const state = model.newState(B);
    const chunk = 2048;
    for (let s = 0; s < L; s += chunk) {
      const n = Math.min(chunk, L - s);
      total += torch.tidy(() => {
        const logits = model.forward(x.narrow(1, s, n).contiguous(), { state }); // [B, n, V]
        return torch.crossEntropy(logits.reshape(-1, vocab.size), y.narrow(1, s, n).reshape(-1), { reduction: 'sum' }).item();
      });
    }
    state.dispose();
  }));
  const nats = total / (B * L);
  assert.ok(Math.abs(nats - 1.2958) < 0.002, `got ${nats.toFixed(4)} nats/char`);
  // The model writes Shakespeare-like text from a prompt (greedy).
  const text = model.sample(vocab, 'ROMEO:\n', { length: 60 });
  assert.match(text, /^[A-Za-z ,.;:'!?\n-]+$/);
  model.dispose();
});
