// The char-LSTM family end to end through the CLI and the loaders: `retain generate` on the shipped ml5 model and
// on a saved (final/-style) folder, the MNIST MLP refused by name, and ml5 exports with TF LSTMCell tensor names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { CharLSTM } from '../src/models/charlstm.js';
import { needShared, sharedPath } from './helpers.js';

torch.setNumThreads(1);
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const LSTM = sharedPath('models', 'charrnn-shakespeare');
const MLP = sharedPath('models', 'mnist-mlp');
const dir = mkdtempSync(join(tmpdir(), 'retain-charlstm-cli-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  assert.doesNotMatch(r.stderr, /TypeError|^\s+at /m, r.stderr);
  return r;
}

/** Greedy continuation by teacher forcing: the whole text so far through a fresh forward, argmax of the last position. */
function greedyReference(model: CharLSTM, encode: (t: string) => number[], decode: (ids: number[]) => string, prompt: string, n: number): string {
  let text = prompt;
  torch.inferenceMode(() => {
    for (let k = 0; k < n; k++) {
      text += decode([torch.tidy(() => model.forward(torch.tensor([encode(text)], { dtype: 'int64' })).i(0, -1).argmax().item())]);
    }
  });
  return text;
}

test('retain generate on the ml5 char-LSTM and on its saved folder: greedy text equals teacher-forced argmax; --stop cuts; an empty prompt is refused', { skip: needShared('models', 'charrnn-shakespeare'), timeout: 120_000 }, async () => {
  const p = await loadPretrained(LSTM);
  const tok = p.tokenizer!;
  const want = greedyReference(p.model as unknown as CharLSTM, (t) => tok.encode(t), (ids) => tok.decode(ids), 'ROMEO:\n', 60);
  const r = cli('generate', LSTM, '-p', 'ROMEO:\n', '-n', '60');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, want + '\n');
  // A trained run's final/ folder is the HF layout (config.json + safetensors + vocab.json).
  const saved = join(dir, 'final');
  savePretrained(p, saved);
  p.model.dispose();
  const s = cli('generate', saved, '-p', 'ROMEO:\n', '-n', '60');
  assert.equal(s.status, 0, s.stderr);
  assert.equal(s.stdout, want + '\n');
  // --stop ends at the first stop string, as for the other families.
  const gen = want.slice('ROMEO:\n'.length);
  const stop = gen.slice(10, 12);
  const cut = cli('generate', LSTM, '-p', 'ROMEO:\n', '-n', '60', '--stop', stop);
  assert.equal(cut.status, 0, cut.stderr);
  assert.equal(cut.stdout, 'ROMEO:\n' + gen.slice(0, gen.indexOf(stop)) + '\n');
  const empty = cli('generate', LSTM);
  assert.equal(empty.status, 1);
  assert.match(empty.stderr, /^retain: .*charrnn-shakespeare is a character LSTM without a start-of-text symbol: give -p with at least one character/m);
  const unk = cli('generate', LSTM, '-p', 'caf\u00e9');
  assert.equal(unk.status, 1);
  assert.match(unk.stderr, /^retain: -p: character "é" at position 3 is not in the vocabulary of .*charrnn-shakespeare \(65 characters\)/m);
});

test('retain generate on the MNIST MLP says it is a classifier, with or without --tokenizer', { skip: needShared('models', 'mnist-mlp'), timeout: 60_000 }, () => {
  for (const extra of [[], ['--tokenizer', join(LSTM, 'vocab.json')]]) {
    if (extra.length && needShared('models', 'charrnn-shakespeare')) continue;
    const r = cli('generate', MLP, '-p', 'hello', ...extra);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^retain: .*mnist-mlp is an image classifier \(model_type mnist_mlp\) and does not generate text; score it with retain eval and an image_classification task$/m);
  }
});

/** A copy of the shipped model whose manifest names the tensors as `rename` says (the weight files stay). */
function renamedCopy(name: string, rename: (tfName: string) => string): string {
  const to = join(dir, name);
  cpSync(LSTM, to, { recursive: true });
  const m = JSON.parse(readFileSync(join(to, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(to, 'manifest.json'), JSON.stringify(Object.fromEntries(Object.entries(m).map(([k, v]) => [rename(k), v]))));
  return to;
}

test('ml5 exports naming the cells as TF LSTMCell (lstm_cell/kernel, lstm_cell/bias) load to the same network; a missing kernel is named, not the embedding', { skip: needShared('models', 'charrnn-shakespeare'), timeout: 60_000 }, () => {
  const lstmCell = renamedCopy('lstm-cell', (k) => k.replace('basic_lstm_cell/weights', 'lstm_cell/kernel').replace('basic_lstm_cell/biases', 'lstm_cell/bias'));
  const a = CharLSTM.fromMl5(LSTM);
  const b = CharLSTM.fromMl5(lstmCell);
  assert.equal(b.model.config.num_layers, 2);
  torch.tidy(() => {
    const ids = torch.tensor([a.vocab.encode('ROMEO:\nBut soft, what light')], { dtype: 'int64' });
    assert.equal(a.model.forward(ids).sub(b.model.forward(ids)).abs().max().item(), 0);
  });
  a.model.dispose();
  b.model.dispose();
  // The generate CLI reads it too.
  const r = cli('generate', lstmCell, '-p', 'ROMEO:', '-n', '5');
  assert.equal(r.status, 0, r.stderr);
  // A manifest whose first cell has neither naming says which tensor is missing and lists what it holds.
  const noCell = renamedCopy('no-cell', (k) => k.replace('cell_0/basic_lstm_cell/weights', 'cell_0/basic_lstm_cell/kernel_typo'));
  assert.throws(() => CharLSTM.fromMl5(noCell), (e: Error) => {
    assert.match(e.message, /manifest\.json lacks 'rnnlm\/multi_rnn_cell\/cell_0\/basic_lstm_cell\/weights' \(or TF LSTMCell's 'rnnlm\/multi_rnn_cell\/cell_0\/lstm_cell\/kernel'\); it holds embedding, /);
    assert.doesNotMatch(e.message, /lacks 'embedding'/);
    return true;
  });
});
