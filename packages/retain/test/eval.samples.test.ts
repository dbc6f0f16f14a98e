// retain eval --log-samples: one JSONL line per scored item in lm-evaluation-harness's samples_<task>.jsonl layout.
// The logged log-likelihoods are checked against the scorer run on the same model, and the logged per-item metrics
// against the results file, so the samples and the results cannot disagree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';
import { loadEvalModel } from '../src/eval/model.js';
import { loglikelihood, textLoglik } from '../src/eval/score.js';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-eval-samples-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const jsonl = (p: string) => readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l));

test('--log-samples writes samples_<task>.jsonl: per-choice log-likelihoods, prediction and metrics agree with the scorer and the results', { timeout: 120_000 }, async () => {
  writeFileSync(join(dir, 'mc.jsonl'), ['{"p": "lily went to play in the", "a": 0}', '{"p": "the dog ran to the", "a": 0}', '{"p": "they looked up at the", "a": 1}'].join('\n'));
  writeFileSync(join(dir, 'gen.jsonl'), ['{"q": "once upon a time", "a": "there"}', '{"q": "the cat", "a": "sat"}'].join('\n'));
  writeFileSync(join(dir, 'text.txt'), 'lily went to the park.\n\nthe dog ran home.\n\nthey looked up at the moon.\n');
  writeFileSync(join(dir, 'tasks.yaml'), [
    '- {name: story_mc, kind: multiple_choice, data: mc.jsonl, prompt: "{p}", choices: ["park.", "moon."], answer: a}',
    '- {name: story_gen, kind: generate, data: gen.jsonl, prompt: "{q}", answer: a, generation: {max_new_tokens: 4, stop: ["."], extract: first_line}}',
    '- {name: story_text, kind: perplexity, data: text.txt, split: blank_lines}',
  ].join('\n') + '\n');
  const out = join(dir, 'out', 'r.json');
  const r = spawnSync(process.execPath, [CLI, 'eval', '--model', MODEL, '--tasks', join(dir, 'tasks.yaml'), '--log-samples', '-o', out], { encoding: 'utf8', cwd: dir });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /story_mc: wrote 3 samples to .*out\/samples_story_mc\.jsonl/);
  const res = JSON.parse(readFileSync(out, 'utf8'));

  const m = await loadEvalModel(MODEL);
  const mc = jsonl(join(dir, 'out', 'samples_story_mc.jsonl'));
  assert.deepEqual(mc.map((x) => x.doc_id), [0, 1, 2]);
  const ref = loglikelihood(m, mc.flatMap((x) => x.doc.choices.map((c: string) => ({ context: x.doc.prompt, continuation: ' ' + c }))));
  mc.forEach((x, i) => {
    assert.deepEqual(Object.keys(x).slice(0, 6), ['doc_id', 'doc', 'target', 'arguments', 'resps', 'filtered_resps']);
    assert.deepEqual(x.arguments, { gen_args_0: { arg_0: x.doc.prompt, arg_1: ' park.' }, gen_args_1: { arg_0: x.doc.prompt, arg_1: ' moon.' } });
    const lls = x.filtered_resps.map((f: [number, boolean]) => f[0]);
    assert.deepEqual(lls, [ref[2 * i].logprob, ref[2 * i + 1].logprob]);
    assert.deepEqual(x.filtered_resps.map((f: [number, boolean]) => f[1]), [ref[2 * i].greedy, ref[2 * i + 1].greedy]);
    assert.deepEqual(x.resps, x.filtered_resps.map((f: unknown) => [f]));
    assert.equal(x.pred, lls[0] >= lls[1] ? 0 : 1);
    assert.equal(x.target, String(x.doc.gold));
    assert.equal(x.acc, x.pred === x.doc.gold ? 1 : 0);
  });
  assert.equal(mc.reduce((s, x) => s + x.acc, 0) / 3, res.results.story_mc['acc,none']);
  assert.equal(mc.reduce((s, x) => s + x.acc_norm, 0) / 3, res.results.story_mc['acc_norm,none']);

  const gen = jsonl(join(dir, 'out', 'samples_story_gen.jsonl'));
  assert.equal(gen.length, 2);
  assert.deepEqual(gen[0].arguments, { gen_args_0: { arg_0: 'once upon a time', arg_1: { until: ['.'], max_gen_toks: 4 } } });
  for (const x of gen) {
    assert.equal(x.filtered_resps[0], x.resps[0][0].trim().split(/\r?\n/)[0].trim());
    assert.equal(x.exact_match, x.filtered_resps[0].toLowerCase() === x.target ? 1 : 0);
  }
  assert.equal(gen.reduce((s, x) => s + x.exact_match, 0) / 2, res.results.story_gen['exact_match,none']);

  const text = jsonl(join(dir, 'out', 'samples_story_text.jsonl'));
  assert.deepEqual(text.map((x) => x.doc.text), ['lily went to the park.', 'the dog ran home.', 'they looked up at the moon.']);
  const tl = textLoglik(m, text.map((x) => x.doc.text));
  text.forEach((x, i) => {
    assert.equal(x.filtered_resps[0], -tl[i].nll);
    assert.equal(x.tokens, tl[i].tokens);
  });
  const nll = -text.reduce((s, x) => s + x.filtered_resps[0], 0);
  const tokens = text.reduce((s, x) => s + x.tokens, 0);
  assert.ok(Math.abs(nll / tokens - res.results.story_text['ce,none']) < 1e-12);
  m.module.dispose();

  // Without the flag nothing is written beside the results.
  const plain = join(dir, 'plain', 'r.json');
  const p = spawnSync(process.execPath, [CLI, 'eval', '--model', MODEL, '--tasks', join(dir, 'tasks.yaml'), '-o', plain], { encoding: 'utf8', cwd: dir });
  assert.equal(p.status, 0, p.stderr);
  assert.equal(existsSync(join(dir, 'plain', 'samples_story_mc.jsonl')), false);
});
