// retain synth on bad input: out-of-range numbers stop at the option, a model without a tokenizer names where to put
// one, and a resume drops only a cut-off last line (with a notice) while damage in the middle stays an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';
import { Command } from 'commander';
import { synthesize, type SynthOptions } from '../src/synth/index.js';
import { registerSynthCommand } from '../src/cli/synth.js';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const ARITH = new URL('../assets/data/arith.jsonl', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-synth-errors-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

// The checkpoint alone in a folder: no tok*.bin beside it, so it loads without a tokenizer.
const LONE = join(mkdtempSync(join(dir, 'lone-')), 'stories260K.bin');
copyFileSync(MODEL, LONE);

const base: Omit<SynthOptions, 'out' | 'count'> = { model: MODEL, maxNewTokens: 16, batchSize: 4, progress: false };

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'a user error prints no stack');
  return r;
}

/** `retain synth <args>` parsed in this process (no model is loaded when an option is refused): the error it stops with. */
async function synthRefusal(args: string[]): Promise<string> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerSynthCommand(program);
  try {
    await program.parseAsync(['synth', '--model', '/nonexistent-model', '--out', join(dir, 'refused.jsonl'), '--count', '2', ...args], { from: 'user' });
  } catch (e) {
    return (e as Error).message;
  }
  return 'accepted';
}

test('synth CLI: out-of-range numbers are refused at the option with status 1 (top-p, top-k, -n, -t, count, jaccard, ...)', async () => {
  // Two through the real CLI: status 1, commander's message, nothing written.
  for (const [args, why] of [
    [['--top-p', '1.5'], /option '--top-p <p>' argument '1\.5' is invalid\. '1\.5' must be in \(0, 1\]/],
    [['-t', '-1'], /option '-t, --temperature <t>' argument '-1' is invalid\. '-1' must be a number ≥ 0/],
  ] as const) {
    const out = join(dir, 'refused.jsonl');
    const r = cli('synth', '--model', MODEL, '--out', out, '--count', '2', ...args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why, args.join(' '));
    assert.equal(existsSync(out), false, `${args.join(' ')} wrote nothing`);
  }
  const cases: [string[], RegExp][] = [
    [['--top-k', '-5'], /option '--top-k <k>' argument '-5' is invalid\. '-5' must be an integer ≥ 0/],
    [['-n', '0'], /option '-n, --max-new-tokens <n>' argument '0' is invalid\. '0' must be a positive integer/],
    [['--count', '0'], /option '--count <n>' argument '0' is invalid/],
    [['--jaccard', '0'], /option '--jaccard <j>' argument '0' is invalid\. '0' must be in \(0, 1\]/],
    [['--jaccard', '1.2'], /option '--jaccard <j>' argument '1\.2' is invalid/],
    [['--shots', '0'], /option '--shots <k>' argument '0' is invalid/],
    [['--batch-size', '-2'], /option '--batch-size <n>' argument '-2' is invalid/],
    [['--answer-tokens', '0'], /option '--answer-tokens <n>' argument '0' is invalid/],
    [['--min-tokens', '-1'], /option '--min-tokens <n>' argument '-1' is invalid/],
    [['--max-tokens', '0'], /option '--max-tokens <n>' argument '0' is invalid/],
    [['--min-loss', '-1'], /option '--min-loss <x>' argument '-1' is invalid/],
    [['--select-k', '0'], /option '--select-k <k>' argument '0' is invalid/],
    [['--per-cluster', '0'], /option '--per-cluster <n>' argument '0' is invalid/],
    [['--max-attempts', '0'], /option '--max-attempts <n>' argument '0' is invalid/],
    [['--threads', '0'], /option '--threads <n>' argument '0' is invalid/],
    [['--max-repeat', '1.5'], /option '--max-repeat <r>' argument '1\.5' is invalid\. '1\.5' must be in \[0, 1\]/],
    [['--min-score', '6'], /option '--min-score <s>' argument '6' is invalid\. '6' must be between 1 and 5/],
    [['--min-tokens', '30', '--max-tokens', '10'], /^synth: min tokens 30 is above max tokens 10 \(--min-tokens, --max-tokens\)/],
  ];
  for (const [args, why] of cases) assert.match(await synthRefusal(args), why, args.join(' '));
});

test('synthesize(): sampling numbers out of range are refused before the model is loaded', async () => {
  for (const [o, why] of [
    [{ topP: 1.5 }, /synth: topP must be in \(0, 1\], got 1\.5/],
    [{ topK: -5 }, /synth: topK must be an integer ≥ 0/],
    [{ maxNewTokens: 0 }, /synth: maxNewTokens \(-n\) must be a positive integer, got 0/],
    [{ temperature: -1 }, /synth: temperature must be a number ≥ 0/],
    [{ filters: { minLoss: 3, maxLoss: 1 } }, /synth: min loss 3 is above max loss 1/],
  ] as [Partial<SynthOptions>, RegExp][]) {
    await assert.rejects(synthesize({ ...base, model: '/nonexistent-model', out: join(dir, 'api.jsonl'), count: 2, ...o }), why);
  }
});

test('a model without a tokenizer: the base model is told --tokenizer, an answer model where to put one', async () => {
  const r = cli('synth', '--model', LONE, '--out', join(dir, 'notok.jsonl'), '--count', '2');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^retain: synth: .*stories260K\.bin has no tokenizer \(none was given and its directory holds no tokenizer\.json or llama2\.c tok\*\.bin\); pass --tokenizer <file or directory>/m);
  // With --tokenizer the same checkpoint runs.
  const ok = cli('synth', '--model', LONE, '--tokenizer', join(MODEL, '..', 'tok512.bin'), '--out', join(dir, 'withtok.jsonl'), '--count', '1', '-n', '8', '--quiet');
  assert.equal(ok.status, 0, ok.stderr);
  // --tokenizer is the base model's; an answer model's tokenizer must sit beside it.
  await assert.rejects(
    synthesize({ ...base, mode: 'fewshot', demos: ARITH, answerModels: [LONE], out: join(dir, 'answer-notok.jsonl'), count: 1 }),
    /synth: answer model .*stories260K\.bin has no tokenizer .*; put its tokenizer there \(--tokenizer is the base model's only\)/,
  );
});

test('resume: an only line cut off mid-record is dropped with a notice (with or without a newline after it); a bad line in the middle is an error', async () => {
  const full = join(dir, 'full.jsonl');
  await synthesize({ ...base, out: full, count: 3, seed: 5 });
  const whole = readFileSync(full, 'utf8');
  const first = whole.slice(0, whole.indexOf('\n') + 1);
  for (const [name, torn] of [['no-newline', first.slice(0, 30)], ['newline', first.slice(0, 30) + '\n']] as const) {
    const out = join(dir, `torn-${name}.jsonl`);
    copyFileSync(`${full}.meta.json`, `${out}.meta.json`);
    writeFileSync(out, torn);
    const said: string[] = [];
    const r = await synthesize({ ...base, out, count: 3, seed: 5, progress: (l) => said.push(l) });
    assert.equal(r.accepted, 3, name);
    assert.equal(readFileSync(out, 'utf8'), whole, `${name}: the same file as an uninterrupted run`);
    assert.match(said[0], new RegExp(`^synth: .*torn-${name}\\.jsonl:1 \\(\\d+ bytes, not valid JSON\\) is a record cut off by an interrupted run; dropping it and starting from the first record`), name);
  }
  // A torn line after whole ones: the notice counts them.
  const after = join(dir, 'torn-after.jsonl');
  copyFileSync(`${full}.meta.json`, `${after}.meta.json`);
  writeFileSync(after, first + first.slice(0, 20));
  const said: string[] = [];
  await synthesize({ ...base, out: after, count: 3, seed: 5, progress: (l) => said.push(l) });
  assert.match(said[0], /torn-after\.jsonl:2 .*resuming after the 1 whole record before it/);
  assert.equal(readFileSync(after, 'utf8'), whole);
  // A malformed line followed by whole records is not what an interruption leaves: refused, the file untouched.
  const mid = join(dir, 'mid.jsonl');
  copyFileSync(`${full}.meta.json`, `${mid}.meta.json`);
  const damaged = first.slice(0, 20) + '\n' + whole.slice(first.length);
  writeFileSync(mid, damaged);
  const r = cli('synth', '--model', MODEL, '--out', mid, '--count', '3', '--seed', '5', '-n', '16', '--batch-size', '4', '--quiet');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^retain: .*mid\.jsonl:1: not valid JSON .*only the last line can be a record cut off by an interrupted run/m);
  assert.equal(readFileSync(mid, 'utf8'), damaged);
});
