import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arithmeticProblems } from '../src/suite/arith.js';
import type { CompareResults, EvalResults } from '../src/eval/results.js';

const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;

test('arithmetic problems: deterministic, distinct, answers correct, held-out split disjoint', () => {
  const a = arithmeticProblems(300, 5);
  assert.deepEqual(a, arithmeticProblems(300, 5));
  assert.notDeepEqual(a.map((p) => p.prompt), arithmeticProblems(300, 6).map((p) => p.prompt));
  assert.equal(new Set(a.map((p) => p.prompt)).size, 300);
  for (const p of a) {
    const q = /^question: (.*)\nanswer:$/.exec(p.prompt)![1];
    let m: RegExpExecArray | null;
    let want: number;
    if ((m = /^solve (\d+)\*x \+ (\d+) = (-?\d+) for x\.$/.exec(q))) want = (Number(m[3]) - Number(m[2])) / Number(m[1]);
    else if ((m = /(-?\d+) ([+*-]) (-?\d+)/.exec(q))) want = m[2] === '+' ? +m[1] + +m[3] : m[2] === '-' ? +m[1] - +m[3] : +m[1] * +m[3];
    else if ((m = /^(add|sum|multiply) (\d+) and (\d+)\.$/.exec(q))) want = m[1] === 'multiply' ? +m[2] * +m[3] : +m[2] + +m[3];
    else if ((m = /^subtract (\d+) from (\d+)\.$/.exec(q))) want = +m[2] - +m[1];
    else throw new Error(`unparsed: ${q}`);
    assert.equal(p.answer, String(want), q);
    assert.equal(p.completion, ` ${want}`);
  }
  const test_ = arithmeticProblems(50, 1);
  const train = arithmeticProblems(500, 0, { exclude: new Set(test_.map((p) => p.prompt.slice(10, -8))) });
  const held = new Set(test_.map((p) => p.prompt));
  assert.ok(train.every((p) => !held.has(p.prompt)));
});

test('retain demo end to end (CLI, two recipes, few steps): forgetting table printed, results and report written', { timeout: 300_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-demo-'));
  const r = spawnSync(process.execPath, [BIN, 'demo', '--out', out, '--steps', '40', '--only', 'FT,mix 1:1'], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /FT/);
  assert.match(r.stdout, /mix 1:1/);
  assert.match(r.stdout, /base/);
  for (const f of ['compare.json', 'report.html', 'report.md', 'runs/FT/results.json', 'runs/mix_1_1/results.json', 'runs/FT/final/model.safetensors']) assert.ok(existsSync(join(out, f)), `${f} missing`);
  const c = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareResults;
  const get = (e: EvalResults, m: string) => e.rows.find((x) => x.metric === m)!.value;
  assert.equal(get(c.base, 'exact_match'), 0, 'the base model cannot do arithmetic');
  // Standard fine-tuning at this learning rate damages the general skill; replay keeps it near the base.
  const [ft, mix] = c.tuned;
  assert.ok(get(ft, 'next_token_acc') < get(c.base, 'next_token_acc') - 0.1, `FT general ${get(ft, 'next_token_acc')} vs base ${get(c.base, 'next_token_acc')}`);
  assert.ok(get(mix, 'next_token_acc') > get(ft, 'next_token_acc') + 0.1);
  assert.ok(ft.monitor!.length >= 4 && ft.monitor!.some((p) => p.step === 40));
  assert.match(r.stderr, /training FT/);
  // Under the table: the frontier study's best recipe for this setup, with its interval or an honest 'not measured'.
  assert.match(r.stdout, /is the best recipe found for this setup \(npm run -s bench:frontier -- --only stories .*\); (interval: not measured yet|study interval \(95%)/);
});
