// lm-evaluation-harness task files under `retain eval` without lm_eval itself: the pieces that make retain's prompts
// lm_eval's (Python's random for the few-shot draw, Jinja as Python renders it, lm_eval's reading of doc_to_target),
// the prompts and scores on the fixture tasks, and the errors for what the subset leaves out. parity.lmeval-yaml
// checks the same task files against lm_eval 0.4.13 end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { PyRandom } from '../src/eval/pyrandom.js';
import { renderText, renderValue } from '../src/eval/lmeval-jinja.js';
import { docTarget, parseLmevalConfig } from '../src/eval/lmeval-task.js';
import { resolveTasks } from '../src/eval/tasks.js';
import { evaluate, loadDocs, type Sample } from '../src/eval/harness.js';
import { loadEvalModel, type EvalModel } from '../src/eval/model.js';

torch.setNumThreads(1);
const TASKS = new URL('fixtures/lmeval-tasks', import.meta.url).pathname;
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

test("PyRandom draws what CPython 3.11's random.Random(1234) draws", () => {
  // Expected values printed by CPython 3.11.7: r = random.Random(1234); [r.getrandbits(32), r.getrandbits(32),
  // r.sample(range(6), 3), r.sample(range(100), 4), r.sample(range(1000), 30)] (the last two take sample's set path).
  const r = new PyRandom(1234);
  assert.deepEqual([r.uint32(), r.uint32()], [4150886329, 3342196574]);
  assert.deepEqual(r.sample([0, 1, 2, 3, 4, 5], 3), [3, 0, 4]);
  assert.deepEqual(r.sample([...Array(100).keys()], 4), [11, 74, 4, 85]);
  assert.deepEqual(r.sample([...Array(1000).keys()], 30), [709, 85, 100, 784, 363, 242, 17, 31, 807, 16, 354, 663, 638, 495, 630, 474, 152, 93, 187, 730, 117, 865, 14, 515, 498, 901, 988, 255, 66, 683]);
  assert.throws(() => new PyRandom(1).sample([1, 2], 3), /sample larger than population/);
});

test('Jinja fields render as lm_eval renders them (Python Jinja defaults, keep_trailing_newline, StrictUndefined)', () => {
  const doc = { question: ' Why? ', choices: { text: ['x', 'y'] }, label: 1, n: 0 };
  assert.equal(renderText('Q: {{question.strip()}}\n', doc, 'doc_to_text'), 'Q: Why?\n');
  // No block trimming: the newline after a block tag and the indentation before one stay.
  assert.equal(renderText('{% if label %}\nA{% endif %}|', doc, 'description'), '\nA|');
  assert.equal(renderText('  {% if label %}B{% endif %}', doc, 'description'), '  B');
  assert.deepEqual(renderValue('{{choices.text}}', doc, 'doc_to_choice'), ['x', 'y']);
  assert.equal(renderValue('{{ label }}', doc, 'doc_to_target'), 1);
  assert.throws(() => renderText('{{ questoin }}', doc, 'doc_to_text'), /doc_to_text: the template uses 'questoin', which the record does not have \(record has: question, choices, label, n\)/);
  assert.equal(renderText('{% for c in choices.text %}{{ c }}{% endfor %}', doc, 'doc_to_text'), 'xy');
});

test("doc_to_target is read as lm_eval reads it: an index with choices, text without, a field's value as is", () => {
  const cfg = (extra: Record<string, unknown>) => parseLmevalConfig({ task: 't', dataset_path: 'json', doc_to_text: 'q', output_type: 'generate_until', ...extra }, 't.yaml');
  assert.equal(docTarget(cfg({ doc_to_target: '{{ label }}', doc_to_choice: ['a', 'b'], output_type: 'multiple_choice' }), { label: 1 }), 1);
  assert.equal(docTarget(cfg({ doc_to_target: '{{ label }}' }), { label: 1 }), '1');
  assert.equal(docTarget(cfg({ doc_to_target: 'label' }), { label: 7 }), 7);
  // Text around the expression makes the whole template text: the space stays (lm_eval's tiny_gen target is " blue").
  assert.equal(docTarget(cfg({ doc_to_target: ' {{ answer }}' }), { answer: 'blue' }), ' blue');
  assert.deepEqual(docTarget(cfg({ doc_to_target: '{{ [answer, "x"] }}' }), { answer: 'blue' }), ['blue', 'x']);
});

test('keys outside the subset are refused by name, with what to do instead', () => {
  const base = { task: 't', dataset_path: 'json', doc_to_text: 'q', doc_to_target: 'a' };
  const err = (raw: Record<string, unknown>) => {
    try {
      parseLmevalConfig(raw, 't.yaml');
    } catch (e) {
      return (e as Error).message;
    }
    return 'accepted';
  };
  assert.match(err({ ...base, process_docs: 'x' }), /^t\.yaml: lm-eval key 'process_docs' is not supported by retain \(prepare the records in the data file instead\)/);
  assert.match(err({ ...base, filter_list: [] }), /lm-eval key 'filter_list' is not supported/);
  assert.match(err({ ...base, output_type: 'multiple_choice' }), /output_type multiple_choice needs doc_to_choice/);
  assert.match(err({ ...base, dataset_kwargs: { data_files: 'x.json', field: 'data' } }), /dataset_kwargs: unknown key 'field' \(not in the lm-eval subset retain runs/);
  assert.match(err({ ...base, fewshot_as_multiturn: true }), /unknown key 'fewshot_as_multiturn'/);
  assert.match(err({ ...base, metric_list: [{ metric: 'bleu' }] }), /metric 'bleu' is not one retain computes for output_type generate_until \(use exact_match\)/);
  assert.match(err({ ...base, generation_kwargs: { do_sample: true } }), /generation_kwargs\.do_sample: retain decodes greedily/);
  assert.match(err({ group: 'g', task: ['a', 'b'] }), /an lm-eval group file .* is not supported; give each task's file to --tasks/);
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-task-'));
  writeFileSync(join(dir, 'fn.yaml'), 'task: t\ndataset_path: json\ndoc_to_text: !function utils.text\ndoc_to_target: a\n');
  assert.throws(() => resolveTasks([join(dir, 'fn.yaml')]), /fn\.yaml: doc_to_text: !function \(Python code\) is not supported by retain; write doc_to_text as a Jinja template or a field name/);
  writeFileSync(join(dir, 'split.yaml'), `task: t\ndataset_path: json\ndataset_kwargs: {data_files: {train: ${JSON.stringify(join(TASKS, 'tiny.jsonl'))}}}\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n`);
  assert.throws(() => resolveTasks([join(dir, 'split.yaml')]), /split\.yaml: test_split 'test' is not one of the data's splits \(train\)/);
  writeFileSync(join(dir, 'hub.yaml'), 'task: t\ndataset_path: allenai/ai2_arc\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n');
  assert.throws(() => resolveTasks([join(dir, 'hub.yaml')]), /dataset_path 'allenai\/ai2_arc' is neither a local file or folder .* retain reads local data only/);
});

test('--num-fewshot replaces num_fewshot of lm-eval task files and of retain tasks; a training monitor refuses lm-eval files', async () => {
  const [t] = resolveTasks([join(TASKS, 'tiny_mc.yaml')]);
  assert.equal(t.lmeval!.config.num_fewshot, 2);
  assert.equal(t.spec.name, 'tiny_mc');
  assert.deepEqual(t.lmeval!.evalFiles, [join(TASKS, 'tiny.jsonl')], 'data_files resolve beside the task file when not in the working directory');
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-shots-'));
  writeFileSync(join(dir, 'own.yaml'), `{name: own, kind: multiple_choice, data: ${JSON.stringify(join(TASKS, 'tiny.jsonl'))}, prompt: "{question}", choices: choices, answer: label, num_fewshot: 3}\n`);
  const [z, b] = resolveTasks([join(TASKS, 'tiny_mc.yaml'), join(dir, 'own.yaml')], { numFewshot: 0 });
  assert.equal(z.lmeval!.config.num_fewshot, 0);
  assert.equal(b.spec.num_fewshot, 0);
  await assert.rejects(loadDocs(t), /tiny_mc: an lm-evaluation-harness task file runs under retain eval and retain compare, not as a training monitor's probe/);
});

/** stories260K with a stand-in chat template (it has none), for the prompt layout under --apply-chat-template. */
async function storiesWithChat(): Promise<EvalModel> {
  const m = await loadEvalModel(MODEL);
  return { ...m, chatTemplate: (msgs) => msgs.map((x) => `[${x.role}]${x.content}`).join('|') + '|[assistant]' };
}

test("an lm-eval task's prompts: lm_eval's few-shot draw and layout, plain and through a chat template as lm_eval 0.4.13 folds them", { timeout: 120_000 }, async () => {
  const m = await storiesWithChat();
  const samples = new Map<string, Sample[]>();
  const tasks = resolveTasks([join(TASKS, 'tiny_mc.yaml'), join(TASKS, 'tiny_split.yaml')]);
  const res = await evaluate(m, tasks, { onSamples: (t, s) => samples.set(t, s) });
  // Doc 0 of tiny_mc as lm_eval 0.4.13 prompted it (its samples_tiny_mc file): two examples drawn by
  // Random(1234).sample from the test split itself, the doc among them (lm_eval excludes it only for fewshot_split).
  const mc = samples.get('tiny_mc')!;
  assert.deepEqual(mc[0].arguments.gen_args_0, {
    arg_0: 'Answer the question.\n\nQuestion: What do bees make?\nAnswer: honey\n\nQuestion: What colour is the sky on a clear day?\nAnswer: blue\n\nQuestion: What colour is the sky on a clear day?\nAnswer:',
    arg_1: ' blue',
  });
  assert.deepEqual(mc[0].doc, JSON.parse(readFileSync(join(TASKS, 'tiny.jsonl'), 'utf8').split('\n')[0]));
  assert.deepEqual([mc[0].target, mc[0].metrics], ['0', ['acc', 'acc_norm']]);
  // first_n: the first three records of the CSV training split, newline-delimited; the CSV label is a number.
  const split = samples.get('tiny_split')!;
  assert.equal(split[0].arguments.gen_args_1.arg_0, 'Fire is hot. True or False?\nAnswer: True\nSnow is black. True or False?\nAnswer: False\nFish can swim. True or False?\nAnswer: True\nWater is wet. True or False?\nAnswer:');
  assert.equal(split[0].arguments.gen_args_1.arg_1, ' True');
  assert.deepEqual(res.rows.filter((x) => x.task === 'tiny_split').map((x) => x.metric), ['acc', 'acc_norm', 'acc_bytes', 'exact_match']);
  const acc = res.rows.find((x) => x.task === 'tiny_split' && x.metric === 'acc')!;
  assert.equal(acc.value, split.reduce((s, x) => s + (x.acc as number), 0) / split.length);

  const chat = new Map<string, Sample[]>();
  await evaluate(m, tasks.slice(0, 1), { applyChatTemplate: true, onSamples: (t, s) => chat.set(t, s) });
  // Each example its own user and assistant turn, the description the system turn, no target delimiter.
  assert.deepEqual(chat.get('tiny_mc')![0].arguments.gen_args_0, {
    arg_0: '[system]Answer the question.\n\n|[user]Question: What do bees make?\nAnswer:|[assistant]honey|[user]Question: What colour is the sky on a clear day?\nAnswer:|[assistant]blue|[user]Question: What colour is the sky on a clear day?\nAnswer:|[assistant]',
    arg_1: 'blue',
  });
  m.module.dispose();
});

test('--apply-chat-template on a retain task file: the preamble as the system turn, each example a user and an assistant turn', { timeout: 120_000 }, async () => {
  const m = await storiesWithChat();
  const dir = mkdtempSync(join(tmpdir(), 'retain-chat-own-'));
  writeFileSync(join(dir, 'own.yaml'), `{name: own, kind: multiple_choice, data: ${JSON.stringify(join(TASKS, 'tiny.jsonl'))}, preamble: "Quiz.\\n", prompt: "Q: {question}", choices: choices, answer: label, num_fewshot: 1}\n`);
  const [plain, chat] = [new Map<string, Sample[]>(), new Map<string, Sample[]>()];
  const tasks = resolveTasks([join(dir, 'own.yaml')]);
  await evaluate(m, tasks, { onSamples: (t, s) => plain.set(t, s) });
  await evaluate(m, tasks, { applyChatTemplate: true, onSamples: (t, s) => chat.set(t, s) });
  const p = plain.get('own')![0].arguments.gen_args_0 as { arg_0: string; arg_1: string };
  const c = chat.get('own')![0].arguments.gen_args_0 as { arg_0: string; arg_1: string };
  // The same example in both (one seeded draw); plain text joins it with the delimiters, the chat template does not.
  const shot = /^Quiz\.\n(Q: [^?]*\?) (.*)\n\nQ: What colour is the sky on a clear day\?$/.exec(p.arg_0);
  assert.ok(shot, p.arg_0);
  assert.equal(c.arg_0, `[system]Quiz.\n|[user]${shot[1]}|[assistant]${shot[2]}|[user]Q: What colour is the sky on a clear day?|[assistant]`);
  assert.deepEqual([p.arg_1, c.arg_1], [' blue', 'blue']);
  m.module.dispose();
});

test("exact_match with lm_eval's options, and the perplexities' aggregation over documents", { timeout: 120_000 }, async () => {
  const real = await loadEvalModel(MODEL);
  // Every generation is " Yes."; tiny_shots ignores case, punctuation and leading spaces, so it matches 'yes' docs.
  const m: EvalModel = { ...real, generate: () => ' Yes.' };
  const samples = new Map<string, Sample[]>();
  const res = await evaluate(m, resolveTasks([join(TASKS, 'tiny_shots.yaml'), join(TASKS, 'tiny_ppl.yaml')]), { onSamples: (t, s) => samples.set(t, s) });
  const em = res.rows.find((x) => x.task === 'tiny_shots')!;
  assert.deepEqual([em.metric, em.value, em.n], ['exact_match', 3 / 5, 5]);
  assert.deepEqual(samples.get('tiny_shots')!.map((x) => [x.target, x.exact_match]), [['yes', 1], ['no', 0], ['yes', 1], ['no', 0], ['yes', 1]]);
  // Per sample, each perplexity is [log-likelihood, words or bytes]; the task's figure is from the sums.
  const ppl = samples.get('tiny_ppl')!;
  const ll = ppl.reduce((s, x) => s + (x.word_perplexity as number[])[0], 0);
  const words = ppl.reduce((s, x) => s + (x.word_perplexity as number[])[1], 0);
  const bytes = ppl.reduce((s, x) => s + (x.bits_per_byte as number[])[1], 0);
  assert.equal(words, 13 + 9 + 7 + 8 + 7 + 11);
  const row = (metric: string) => res.rows.find((x) => x.task === 'tiny_ppl' && x.metric === metric)!;
  assert.ok(Math.abs(row('word_perplexity').value - Math.exp(-ll / words)) < 1e-9 * row('word_perplexity').value);
  assert.ok(Math.abs(row('bits_per_byte').value - -ll / bytes / Math.LN2) < 1e-12);
  assert.deepEqual([row('word_perplexity').stderr, row('word_perplexity').higher_is_better, row('word_perplexity').primary], [null, false, true]);
  real.module.dispose();
});

test('retain eval --apply-chat-template on a model without a chat template says so; the flags are in --help', () => {
  const r = spawnSync(process.execPath, [CLI, 'eval', '--model', MODEL, '--tasks', join(TASKS, 'tiny_mc.yaml'), '--apply-chat-template', '-o', join(mkdtempSync(join(tmpdir(), 'retain-lmeval-cli-')), 'r.json')], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /tiny_mc: doc 0: --apply-chat-template: stories260K\.bin's tokenizer has no chat template/);
  const help = spawnSync(process.execPath, [CLI, 'eval', '--help'], { encoding: 'utf8' }).stdout;
  for (const flag of ['--num-fewshot <n>', '--apply-chat-template', '--log-samples']) assert.ok(help.includes(flag), flag);
  const neg = spawnSync(process.execPath, [CLI, 'eval', '--model', MODEL, '--tasks', 'x', '--num-fewshot', '-1'], { encoding: 'utf8' });
  assert.match(neg.stderr, /--num-fewshot <n>' argument '-1' is invalid\. '-1' must be an integer ≥ 0/);
});
