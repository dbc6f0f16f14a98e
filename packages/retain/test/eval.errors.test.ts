// retain eval / compare on bad input: task files that are empty, hold no examples, repeat a name or give choices
// neither form allows; compare's duplicate labels and missing models; a context cap too small to score; a model
// without a tokenizer. Each is refused with what is wrong and how to fix it, before results are written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Command } from 'commander';
import * as torch from '@retain/torch';
import { readTaskFile, resolveTasks } from '../src/eval/tasks.js';
import { loadDocs } from '../src/eval/harness.js';
import { loadEvalModel } from '../src/eval/model.js';
import { registerEvalCommands } from '../src/cli/eval.js';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-eval-errors-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const MC = (name: string, data = 'mc.jsonl') => `name: ${name}\nkind: multiple_choice\ndata: ${data}\nprompt: "{p}"\nchoices: [" park.", " moon."]\nanswer: a\n`;
writeFileSync(join(dir, 'mc.jsonl'), '{"p": "lily went to play in the", "a": 0}\n{"p": "they looked up at the", "a": 1}\n');
writeFileSync(join(dir, 'ok.yaml'), MC('story_mc'));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'a user error prints no stack');
  return r;
}

function taskFile(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

test('a task whose data file holds no examples is refused (CLI: status 1, no results written), not scored as n=0', async () => {
  writeFileSync(join(dir, 'empty.jsonl'), '');
  const t = taskFile('empty-data.yaml', MC('story_mc', 'empty.jsonl'));
  const out = join(dir, 'empty-results.json');
  const r = cli('eval', '--model', MODEL, '--tasks', t, '-o', out);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^retain: story_mc: .*empty\.jsonl holds no examples; point the task's data at a file with records/m);
  assert.doesNotMatch(r.stderr, /evaluating/, 'refused before any model work');
  assert.equal(existsSync(out), false);
  // A file that is not empty but has no records (blank lines), and a text task whose text is all whitespace.
  writeFileSync(join(dir, 'blank.jsonl'), '\n\n');
  await assert.rejects(loadDocs(resolveTasks([taskFile('blank.yaml', MC('blank_mc', 'blank.jsonl'))])[0]), /^Error: blank_mc: .*blank\.jsonl holds no examples/);
  writeFileSync(join(dir, 'blank.txt'), '  \n\n \n');
  await assert.rejects(loadDocs(resolveTasks([taskFile('blank-text.yaml', 'name: blank_text\nkind: perplexity\ndata: blank.txt\nsplit: blank_lines\n')])[0]), /blank_text: .*blank\.txt holds no examples/);
});

test('choices neither a field name nor a list of templates: the message says which forms are allowed', () => {
  const t = taskFile('choices5.yaml', MC('c5').replace('choices: [" park.", " moon."]', 'choices: 5'));
  assert.throws(() => readTaskFile(t), (e: Error) => {
    assert.match(e.message, /choices: 5 is neither a field name holding each record's list of choices \(choices: endings\) nor a list of at least 2 choice templates/);
    assert.doesNotMatch(e.message, /Invalid input/);
    return true;
  });
  const one = taskFile('choices1.yaml', MC('c1').replace('choices: [" park.", " moon."]', 'choices: [" park."]'));
  assert.throws(() => readTaskFile(one), /choices: a list of choice templates needs at least 2 \(one per choice\)/);
});

test('an empty task file (or an empty list) says so instead of "Expected object, received null"', () => {
  for (const text of ['', '# nothing yet\n']) {
    const t = taskFile('empty.yaml', text);
    assert.throws(() => readTaskFile(t), /empty\.yaml: the task file is empty; write one task \(name, kind, data, …\) or a list of them/);
  }
  assert.throws(() => readTaskFile(taskFile('empty-list.yaml', '[]\n')), /empty-list\.yaml: the task file is an empty list/);
  const r = cli('eval', '--model', MODEL, '--tasks', join(dir, 'empty.yaml'));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^retain: .*empty\.yaml: the task file is empty/m);
  assert.doesNotMatch(r.stderr, /Expected object/);
});

test('two tasks of one name (in one file, in two files, or a group and one of its tasks) are refused', () => {
  const two = taskFile('two.yaml', `- ${MC('dup').replace(/\n(?=.)/g, '\n  ')}- ${MC('dup').replace(/\n(?=.)/g, '\n  ')}`);
  assert.throws(() => resolveTasks([two]), /task 'dup' appears twice \(in .*two\.yaml\); results are keyed by task name, so rename one/);
  const other = taskFile('other.yaml', MC('story_mc'));
  assert.throws(() => resolveTasks([join(dir, 'ok.yaml'), other]), /task 'story_mc' appears twice \(in .*ok\.yaml and in .*other\.yaml\)/);
  // Built-ins resolve their data; an empty data dir with the files the group names is enough to get to the check.
  const data = join(dir, 'data');
  for (const f of ['arc-easy/test.json', 'arc-challenge/test.json', 'piqa/valid.jsonl', 'social_i_qa/test.json', 'winogrande/test.json', 'openbookqa/test.json', 'boolq/test.json', 'hellaswag/hellaswag_val_full.txt.bz2']) {
    mkdirSync(join(data, f, '..'), { recursive: true });
    writeFileSync(join(data, f), '[{}]');
  }
  assert.throws(() => resolveTasks(['commonsense', 'piqa'], { dataDir: data }), /task 'piqa' appears twice \(in group commonsense and in built-in piqa\)/);
});

/** `retain <args>` for eval/compare parsed in this process: the error it stops with. */
async function refusal(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerEvalCommands(program);
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    return (e as Error).message;
  }
  return 'accepted';
}

test('compare: duplicate labels and a missing model are refused before any model is evaluated', async () => {
  const tasks = join(dir, 'ok.yaml');
  const dupe = cli('compare', '--base', MODEL, '--tuned', `a=${MODEL}`, `a=${MODEL}`, '--tasks', tasks, '-o', join(dir, 'c.json'));
  assert.equal(dupe.status, 1, dupe.stderr);
  assert.match(dupe.stderr, /^retain: two models are labelled 'a' \(--tuned a=.*stories260K\.bin and --tuned a=.*stories260K\.bin\); give each tuned model its own label as name=path/m);
  assert.doesNotMatch(dupe.stderr, /evaluating/);
  const missing = cli('compare', '--base', MODEL, '--tuned', `ok=${MODEL}`, '/missing-model', '--tasks', tasks, '-o', join(dir, 'c.json'));
  assert.equal(missing.status, 1, missing.stderr);
  assert.match(missing.stderr, /^retain: --tuned \/missing-model: model not found/m);
  assert.doesNotMatch(missing.stderr, /evaluating/, 'the base was not evaluated first');
  assert.equal(existsSync(join(dir, 'c.json')), false);
  // Two unlabelled paths with one folder name would be two columns of one name too; so would a tuned model called base.
  assert.match(await refusal(['compare', '--base', MODEL, '--tuned', MODEL, MODEL, '--tasks', tasks]), /two models are labelled 'stories260K\.bin'/);
  assert.match(await refusal(['compare', '--base', MODEL, '--tuned', `base=${MODEL}`, '--tasks', tasks]), /two models are labelled 'base' \(--base .* and --tuned base=.*\); 'base' is the base model's label/);
  assert.match(await refusal(['compare', '--base', '/missing-base', '--tuned', MODEL, '--tasks', tasks]), /^--base \/missing-base: model not found/);
});

test('--max-length below 2 is refused at the option; loadEvalModel refuses it too', async () => {
  const r = cli('eval', '--model', MODEL, '--tasks', join(dir, 'ok.yaml'), '--max-length', '1', '-o', join(dir, 'ml.json'));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /option '--max-length <n>' argument '1' is invalid\. '1' is too small: .* use at least 2/);
  assert.equal(existsSync(join(dir, 'ml.json')), false);
  await assert.rejects(loadEvalModel(MODEL, { maxLength: 1 }), /maxLength must be an integer ≥ 2, got 1/);
  const m = await loadEvalModel(MODEL, { maxLength: 2 });
  assert.equal(m.maxLength, 2);
  m.module.dispose();
});

test('a model without a tokenizer: eval names --tokenizer, callers without that option (retain demo) only where to put one', async () => {
  const lone = join(dir, 'lone');
  mkdirSync(lone, { recursive: true });
  copyFileSync(MODEL, join(lone, 'stories260K.bin'));
  const r = cli('eval', '--model', join(lone, 'stories260K.bin'), '--tasks', join(dir, 'ok.yaml'));
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /no tokenizer found \(its directory holds no tokenizer\.json or llama2\.c tok\*\.bin\); evaluation needs one: pass --tokenizer <file or directory>, or put the model's tokenizer there/);
  await assert.rejects(loadEvalModel(join(lone, 'stories260K.bin')), (e: Error) => {
    assert.match(e.message, /evaluation needs one: put the model's tokenizer there/);
    assert.doesNotMatch(e.message, /--tokenizer/);
    return true;
  });
});
