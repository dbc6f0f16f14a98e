import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { needPython, py } from '../../torch/test/helpers.js';
import { sharedContextLogits, type EvalModel } from '../src/eval/model.js';
import { encodeRequest, extractAnswer, exactMatch, loglikelihood, meanStderr, textLoglik } from '../src/eval/score.js';
import { evaluate } from '../src/eval/harness.js';
import { readTaskFile, resolveTasks } from '../src/eval/tasks.js';
import { needShared, sharedPath } from './helpers.js';

const REF = new URL('../../../bench/py/', import.meta.url).pathname;
const ALPHABET = ' abcdefghijklmnopqrstuvwxyz.?:\n';

function tinyConfig(): LlamaConfig {
  return {
    model_type: 'llama', vocab_size: ALPHABET.length + 1, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: false,
  };
}

/** A random float64 Llama with a character tokenizer (id 0 = BOS), wrapped as an EvalModel with a short window. */
function tinyModel(maxLength: number): { em: EvalModel; model: LlamaForCausalLM } {
  torch.manualSeed(11);
  const model = new LlamaForCausalLM(tinyConfig()).to('float64');
  torch.noGrad(() => model.parameters().forEach((p) => p.normal_(0, 0.3)));
  model.eval();
  const encode = (t: string) => [...t].map((ch) => {
    const i = ALPHABET.indexOf(ch);
    if (i < 0) throw new Error(`char ${ch}`);
    return i + 1;
  });
  const em: EvalModel = {
    name: 'tiny', path: 'tiny', kind: 'lm', module: model, maxLength, bosId: 0, encode,
    decode: (ids) => ids.map((i) => ALPHABET[i - 1]).join(''),
    dropUnknown: (t) => t,
    logits: (ids) => model.forward(ids) as torch.Tensor,
    generate: () => { throw new Error('unused'); },
    classify: () => { throw new Error('unused'); },
  };
  return { em, model };
}

/** The same model in python3-torch; returns log-probs of each target given everything before it (no windowing). */
function pyLogprobs(model: LlamaForCausalLM, seqs: number[][]): number[][] {
  const c = tinyConfig();
  const w: Record<string, number[]> = {};
  const shapes: Record<string, number[]> = {};
  for (const [k, v] of model.stateDict()) {
    w[k.replace(/^model\./, '')] = (v.toArray() as number[]).flat(Infinity as 1) as number[];
    shapes[k.replace(/^model\./, '')] = v.shape;
  }
  return py(`
import sys; sys.path.insert(0, ${JSON.stringify(REF)})
from llama_ref import Llama
m = Llama(inp['c']).double()
m.load_state_dict({k: torch.tensor(v, dtype=torch.float64).reshape(inp['shapes'][k]) for k, v in inp['w'].items()})
res = []
with torch.no_grad():
    for s in inp['seqs']:
        ids = torch.tensor([s])
        lp = torch.log_softmax(m(ids)[0, :-1], -1)
        res.append(lp.gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1).tolist())
out['lp'] = res
`, {
    c: { vocab_size: c.vocab_size, dim: c.hidden_size, hidden_dim: c.intermediate_size, n_layers: c.num_hidden_layers, n_heads: c.num_attention_heads, n_kv_heads: c.num_key_value_heads, seq_len: c.max_position_embeddings, eps: c.rms_norm_eps, rope_theta: c.rope_theta, rope_scaling: null, tie: false, qkv_bias: false },
    w, shapes, seqs,
  }).lp;
}

test('multiple-choice log-likelihoods and acc / acc_norm match python3-torch on the same model', { skip: needPython() }, async () => {
  const { em, model } = tinyModel(64);
  const dir = mkdtempSync(join(tmpdir(), 'retain-eval-'));
  const docs = [
    { q: 'the cat sat on the', choices: ['mat', 'moon', 'a very long answer here'], a: 0 },
    { q: 'what is two and two?', choices: ['four', 'five'], a: 1 },
    { q: 'pick one:', choices: ['x', 'yy', 'zzz', 'w'], a: 2 },
    { q: 'is it good?', choices: ['yes', 'no'], a: 0 },
  ];
  writeFileSync(join(dir, 'd.jsonl'), docs.map((d) => JSON.stringify(d)).join('\n'));
  writeFileSync(join(dir, 'task.yaml'), 'name: toy\nkind: multiple_choice\ndata: d.jsonl\nprompt: "question: {q}\\nanswer:"\nchoices: choices\nanswer: a\n');
  const tasks = resolveTasks([join(dir, 'task.yaml')]);
  const reqs = docs.flatMap((d) => d.choices.map((c) => ({ context: `question: ${d.q}\nanswer:`, continuation: ' ' + c })));
  const ours = loglikelihood(em, reqs, 3);
  const enc = reqs.map((r) => encodeRequest(em, r));
  const ref = pyLogprobs(model, enc.map((e) => e.ids)).map((lp, i) => lp.slice(-enc[i].contLen).reduce((a, b) => a + b, 0));
  ours.forEach((o, i) => assert.ok(Math.abs(o.logprob - ref[i]) < 1e-9, `request ${i}: ${o.logprob} vs python ${ref[i]}`));
  // acc / acc_norm from the reference log-likelihoods, by lm-evaluation-harness's definitions.
  let k = 0;
  const acc: number[] = [];
  const accNorm: number[] = [];
  for (const d of docs) {
    const lls = ref.slice(k, k + d.choices.length);
    // acc_norm divides by the choice's characters, not counting the target delimiter.
    const norm = lls.map((x, j) => x / d.choices[j].length);
    k += d.choices.length;
    const am = (xs: number[]) => xs.indexOf(Math.max(...xs));
    acc.push(+(am(lls) === d.a));
    accNorm.push(+(am(norm) === d.a));
  }
  const r = await evaluate(em, tasks, { batchSize: 5 });
  const get = (m: string) => r.rows.find((x) => x.metric === m)!;
  assert.equal(get('acc').value, acc.reduce((a, b) => a + b) / docs.length);
  assert.equal(get('acc_norm').value, accNorm.reduce((a, b) => a + b) / docs.length);
  assert.equal(get('acc').n, 4);
  assert.equal(get('acc').primary, true);
  assert.equal(r.results.toy['acc,none'], get('acc').value);
  assert.equal(r['n-samples'].toy.effective, 4);
  assert.match(r.model.hash, /^[0-9a-f]{16}$/);
});

test('rolling text log-likelihood predicts every token once across windows and matches python3-torch', { skip: needPython() }, () => {
  const { em, model } = tinyModel(8);
  const texts = ['the quick brown fox jumps over the lazy dog.', 'ab', 'hello world'];
  const ours = textLoglik(em, texts, 2);
  // Reference: the same disjoint windows (a window's first input is the previous window's last token).
  texts.forEach((t, d) => {
    const ids = [0, ...em.encode(t)];
    const windows: number[][] = [];
    for (let s = 1; s < ids.length; s += 8) windows.push(ids.slice(s - 1, Math.min(s + 8, ids.length)));
    const lp = pyLogprobs(model, windows).flat();
    assert.equal(ours[d].tokens, ids.length - 1);
    assert.equal(lp.length, ids.length - 1);
    const nll = -lp.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(ours[d].nll - nll) < 1e-9, `text ${d}: ${ours[d].nll} vs ${nll}`);
    assert.equal(ours[d].chars, t.length);
  });
  // A window of 8 must differ from one long window for the long text (context is cut), which shows windows are real.
  const long = textLoglik({ ...em, maxLength: 64 }, [texts[0]], 1)[0];
  assert.ok(Math.abs(long.nll - ours[0].nll) > 1e-6);
});

test('answer extraction and exact match', () => {
  assert.equal(extractAnswer('she has 3 + 4 = 7 apples\n#### 1,234', 'gsm8k'), '1234');
  assert.equal(extractAnswer('so the answer is 42.', 'gsm8k'), '42');
  assert.equal(extractAnswer('costs $-3.50 then 18.0', 'last_number'), '18');
  assert.equal(extractAnswer('  Paris \nmore', 'first_line'), 'Paris');
  assert.ok(exactMatch(' Paris', 'paris '));
  assert.ok(!exactMatch('Paris.', 'paris'));
  const m = meanStderr([1, 0, 1, 1]);
  assert.equal(m.mean, 0.75);
  assert.ok(Math.abs(m.stderr! - Math.sqrt(0.25 / 4)) < 1e-12);
});

test('task errors name the problem: unknown task, unknown key, missing data with the paths looked at', () => {
  assert.throws(() => resolveTasks(['arc_eazy']), /unknown task 'arc_eazy'.*arc_easy/);
  const dir = mkdtempSync(join(tmpdir(), 'retain-task-'));
  writeFileSync(join(dir, 'bad.yaml'), 'name: t\nkind: multiple_choice\ndata: x.jsonl\nchoices: c\nanwser: a\n');
  assert.throws(() => readTaskFile(join(dir, 'bad.yaml')), /unknown key 'anwser'/);
  writeFileSync(join(dir, 'kind.yaml'), 'name: t\nkind: mcq\ndata: x.jsonl\n');
  assert.throws(() => readTaskFile(join(dir, 'kind.yaml')), /kind: 'mcq' is not allowed; use one of 'multiple_choice'/);
  writeFileSync(join(dir, 'miss.yaml'), 'name: t\nkind: perplexity\ndata: nowhere/x.txt\n');
  assert.throws(() => resolveTasks([join(dir, 'miss.yaml')], { dataDir: join(dir, 'dd') }), (e: Error) => e.message.includes(join(dir, 'nowhere/x.txt')) && e.message.includes('task data not found'));
  assert.throws(() => resolveTasks(['gsm8k'], { dataDir: join(dir, 'empty') }), new RegExp(`looked for ${join(dir, 'empty', 'gsm8k/test.jsonl').replace(/[/.]/g, '\\$&')}`));
});

test('every built-in task reads its shared data and builds valid docs', { skip: needShared('data') }, async () => {
  const { BUILTIN_TASKS } = await import('../src/eval/tasks.js');
  const { loadDocs } = await import('../src/eval/harness.js');
  for (const t of resolveTasks(BUILTIN_TASKS.map((x) => x.name), { dataDir: sharedPath('data') })) {
    const { docs, original } = await loadDocs(t, 50);
    assert.ok(docs.length > 0 && original >= docs.length, t.spec.name);
    for (const d of docs) {
      if (t.spec.kind === 'multiple_choice') {
        assert.ok(d.choices!.length >= 2 && d.gold! >= 0 && d.gold! < d.choices!.length, `${t.spec.name} ${d.id}`);
        assert.ok(d.choices!.every((c) => c.length > 0), `${t.spec.name} ${d.id}: empty choice`);
      }
      if (t.spec.kind === 'generate') assert.match(d.answer!, /^-?\d+(\.\d+)?$/, `${t.spec.name} ${d.id}: numeric answer`);
    }
  }
  // Spot checks against the files: ARC-Easy's first record, PIQA's label file, HellaSwag's 6-line layout, SICK labels.
  const one = async (n: string) => (await loadDocs(resolveTasks([n], { dataDir: sharedPath('data') })[0], 3)).docs;
  const arc = (await one('arc_easy'))[0];
  assert.equal(arc.choices![0], 'Sunlight is the source of energy for nearly all ecosystems.');
  assert.equal(arc.gold, 0);
  assert.match(arc.prompt, /^Question: Which statement best explains why photosynthesis/);
  const hs = (await one('hellaswag'))[0];
  assert.equal(hs.gold, 3);
  assert.equal(hs.choices![3], 'starts pulling up roofing on a roof.');
  // lm-evaluation-harness's prompts (bench/parity/lmeval.ts compares them all with lm_eval's own).
  assert.equal(hs.prompt, 'Roof shingle removal: A man is sitting on a roof. He');
  assert.equal((await one('boolq'))[0].prompt, 'Question: does ethanol take more energy make that produces?\nAnswer:');
  const mm = (await one('mmlu_dev'))[0];
  assert.equal(mm.preamble + mm.prompt, 'The following are multiple choice questions (with answers) about abstract algebra.\n\nFind all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:');
  const wg = (await one('winogrande'))[0];
  assert.equal(wg.contexts![1], 'Sarah was a much better surgeon than Maria so Maria');
  const g = (await one('gsm8k'))[0];
  assert.equal(g.answer, '18');
});

// Known answer of docs/DATA.md: the char-LSTM's 1.33 nats/char on shakespeare.txt, under `retain eval`'s protocol for
// perplexity tasks (every character predicted once, in 512-character windows that start from the zero state, the
// window's first input being the previous window's last character).
test('retain eval: charrnn-shakespeare scores 1.33 ± 0.02 nats/char on shakespeare.txt', { skip: needShared('models', 'charrnn-shakespeare'), timeout: 120_000 }, async () => {
  const { loadEvalModel } = await import('../src/eval/model.js');
  const m = await loadEvalModel(sharedPath('models', 'charrnn-shakespeare'));
  assert.equal(m.maxLength, 512);
  const r = await evaluate(m, resolveTasks(['shakespeare'], { dataDir: sharedPath('data') }), { batchSize: 64 });
  const nats = r.rows.find((x) => x.metric === 'nats_per_char')!.value;
  assert.ok(Math.abs(nats - 1.33) <= 0.02, `got ${nats.toFixed(4)} nats/char`);
  assert.ok(Math.abs(r.rows.find((x) => x.metric === 'bits_per_char')!.value - nats / Math.LN2) < 1e-12);
  assert.equal(r.rows.find((x) => x.primary)!.metric, 'bits_per_char');
  m.module.dispose();
});

test('retain eval and retain compare (CLI): results JSON in lm-evaluation-harness layout, table with deltas', { timeout: 120_000 }, async () => {
  const { spawnSync } = await import('node:child_process');
  const { readFileSync, writeFileSync: write } = await import('node:fs');
  const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;
  const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
  const TEXT = new URL('../assets/data/tinystories-eval.txt', import.meta.url).pathname;
  const dir = mkdtempSync(join(tmpdir(), 'retain-evalcli-'));
  write(join(dir, 'tasks.yaml'), `- name: stories\n  kind: perplexity\n  data: ${TEXT}\n  split: blank_lines\n  primary: next_token_acc\n- name: story_mc\n  kind: multiple_choice\n  data: mc.jsonl\n  prompt: "{p}"\n  choices: [" park.", " moon."]\n  answer: a\n  role: target\n`);
  write(join(dir, 'mc.jsonl'), ['{"p": "lily went to play in the", "a": 0}', '{"p": "the dog ran to the", "a": 0}', '{"p": "they looked up at the", "a": 1}'].join('\n'));
  const run = (...a: string[]) => spawnSync(process.execPath, [BIN, ...a], { encoding: 'utf8', cwd: dir });
  const e = run('eval', '--model', MODEL, '--tasks', join(dir, 'tasks.yaml'), '--limit', '20', '-o', join(dir, 'r.json'));
  assert.equal(e.status, 0, e.stderr);
  const r = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8'));
  assert.equal(r.format, 'retain.eval/1');
  assert.equal(typeof r.results.stories['next_token_acc,none'], 'number');
  assert.equal(r.results.stories['perplexity_stderr,none'], 'N/A');
  assert.equal(r.higher_is_better.stories.ce, false);
  assert.deepEqual(r['n-samples'].stories, { original: 152, effective: 20 });
  assert.equal(r.rows.find((x: { task: string; primary: boolean }) => x.task === 'story_mc' && x.primary).role, 'target');
  assert.match(e.stdout, /stories\tnext_token_acc\t0\.\d{4}/);
  // The same weights under two names: every delta is zero, and the hash is the same.
  const c = run('compare', '--base', MODEL, '--tuned', `copy=${MODEL}`, '--tasks', join(dir, 'tasks.yaml'), '--limit', '20', '-o', join(dir, 'c.json'));
  assert.equal(c.status, 0, c.stderr);
  const cj = JSON.parse(readFileSync(join(dir, 'c.json'), 'utf8'));
  assert.equal(cj.tuned[0].label, 'copy');
  assert.equal(cj.tuned[0].model.hash, cj.base.model.hash);
  assert.match(c.stdout, /copy\s+\d+\.\d \(0\.0\)/);
  const bad = run('eval', '--model', MODEL, '--tasks', 'gsm8k', '--data-dir', join(dir, 'nodata'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /task data not found: looked for .*nodata\/gsm8k\/test\.jsonl/);
});

test('choices that share a context run it once through a copied cache and score as python3-torch does on the whole text', { skip: needPython() }, () => {
  const { em, model } = tinyModel(24);
  const shared = sharedContextLogits(model)!;
  const calls: number[][] = [];
  em.logitsAfter = (prefix, rows) => {
    calls.push([prefix.shape[1], ...rows.shape]);
    return shared(prefix, rows);
  };
  const reqs = [
    ...['mat', 'moon', 'a cat'].map((c) => ({ context: 'the cat sat on the', continuation: ' ' + c })),
    { context: 'alone:', continuation: ' here' },
    // Past the 24-token window: these two run whole, left end cut, as without sharing.
    ...['yes', 'no'].map((c) => ({ context: 'a question much longer than the window', continuation: ' ' + c })),
  ];
  const ours = loglikelihood(em, reqs, 4);
  // One group of three: BOS and the context but its last character as prefix, rows of the longest continuation.
  assert.deepEqual(calls, [[1 + 'the cat sat on the'.length - 1, 3, ' a cat'.length]]);
  const enc = reqs.map((r) => encodeRequest(em, r));
  const ref = pyLogprobs(model, enc.map((e) => e.ids.slice(-25))).map((lp, i) => lp.slice(-enc[i].contLen).reduce((a, b) => a + b, 0));
  ours.forEach((o, i) => assert.ok(Math.abs(o.logprob - ref[i]) < 1e-9, `request ${i}: ${o.logprob} vs python ${ref[i]}`));
  assert.deepEqual(ours.map((o) => o.truncated), [false, false, false, false, true, true]);
  em.logitsAfter = undefined;
  const whole = loglikelihood(em, reqs, 4);
  assert.deepEqual(whole.map((o) => [o.tokens, o.greedy]), ours.map((o) => [o.tokens, o.greedy]));
});

test('two perplexity tasks over the same text score it once in one evaluate call, with the figures of separate calls', async () => {
  const { em } = tinyModel(16);
  const dir = mkdtempSync(join(tmpdir(), 'retain-eval-ppl-'));
  writeFileSync(join(dir, 'text.txt'), 'the cat sat on the mat.\n\na dog ran to the park and sat down.\n');
  const task = (name: string, primary: string) => `- name: ${name}\n  kind: perplexity\n  data: text.txt\n  split: blank_lines\n  primary: ${primary}\n`;
  writeFileSync(join(dir, 'tasks.yaml'), task('acc', 'next_token_acc') + task('loss', 'ce'));
  const forward = em.logits;
  let calls = 0;
  em.logits = (ids) => (calls++, forward(ids));
  const together = await evaluate(em, resolveTasks([join(dir, 'tasks.yaml')]));
  const once = calls;
  const apart = [];
  for (const t of resolveTasks([join(dir, 'tasks.yaml')])) apart.push(...(await evaluate(em, [t])).rows);
  assert.equal(calls, 3 * once, 'the pair in one call costs what one task alone does');
  assert.deepEqual(together.rows, apart);
});

test('inputs longer than the window lose their left end; an over-long continuation is scored on the tokens that fit', () => {
  const { em } = tinyModel(8);
  const [short] = loglikelihood(em, [{ context: 'abc', continuation: ' de' }]);
  assert.equal(short.tokens, 3);
  const [long] = loglikelihood(em, [{ context: 'abc', continuation: ' defghijklmnop' }]);
  assert.equal(long.tokens, 8);
  assert.ok(Number.isFinite(long.logprob) && long.logprob < 0);
});

test("whitespace ending a context is scored with the continuation, as lm-evaluation-harness's _encode_pair does", () => {
  const { em } = tinyModel(64);
  const moved = encodeRequest(em, { context: 'answer:  ', continuation: 'paris' });
  assert.deepEqual(moved, encodeRequest(em, { context: 'answer:', continuation: '  paris' }));
  assert.equal(moved.contLen, 7);
  const [a, b] = loglikelihood(em, [{ context: 'answer: ', continuation: 'paris' }, { context: 'answer:', continuation: ' paris' }]);
  assert.equal(a.logprob, b.logprob);
  assert.equal(a.tokens, 6);
});

test("a task's preamble comes once, before the few-shot examples, as lm-evaluation-harness's description", async () => {
  const { em } = tinyModel(64);
  const dir = mkdtempSync(join(tmpdir(), 'retain-preamble-'));
  writeFileSync(join(dir, 'd.jsonl'), '{"q": "one", "a": 0}\n{"q": "two", "a": 1}\n');
  writeFileSync(join(dir, 'task.yaml'), 'name: pre\nkind: multiple_choice\ndata: d.jsonl\npreamble: "about {q}.\\n\\n"\nprompt: "q: {q}\\na:"\nchoices: ["yes", "no"]\nanswer: a\nnum_fewshot: 1\n');
  const args: unknown[] = [];
  await evaluate(em, resolveTasks([join(dir, 'task.yaml')]), { onSamples: (_, s) => args.push(...s.map((x) => x.arguments.gen_args_1)) });
  assert.deepEqual(args, [
    { arg_0: 'about one.\n\nq: two\na: no\n\nq: one\na:', arg_1: ' no' },
    { arg_0: 'about two.\n\nq: one\na: yes\n\nq: two\na:', arg_1: ' no' },
  ]);
});
