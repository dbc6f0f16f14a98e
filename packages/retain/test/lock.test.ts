// One writer per output (src/lock.ts): the holder is named, a dead holder's lock is taken over, two starters racing
// for one lock (or for one stale lock) end with exactly one winner, and the lock goes with its process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireLock, LockedError, lockOutputDir } from '../src/lock.js';
import { compare, FT } from './report.fixtures.js';

const LOCK_TS = new URL('../src/lock.ts', import.meta.url).pathname;

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'retain-lock-'));
}

/** The pid of a process that has exited (so no process has it, barring reuse in the test's few milliseconds). */
function deadPid(): number {
  return spawnSync('true').pid!;
}

test('the lock names its holder; a live holder on this host refuses a second taker with its pid, host and start', () => {
  const dir = tmp();
  const file = join(dir, 'out', '.retain.lock');
  const holder = { pid: process.ppid, host: hostname(), started: '2026-01-02T03:04:05.000Z', command: 'train a.yaml' };
  const lock = lockOutputDir(join(dir, 'out'));
  const mine = JSON.parse(readFileSync(file, 'utf8'));
  assert.equal(mine.pid, process.pid);
  assert.equal(mine.host, hostname());
  assert.ok(Date.now() - Date.parse(mine.started) < 60_000);
  assert.throws(() => lockOutputDir(join(dir, 'out')), (e: Error) => e instanceof LockedError && e.message === `output_dir ${join(dir, 'out')} is already in use by this process (lock ${file}); one output cannot be written twice at once`);
  lock.release();
  assert.ok(!existsSync(file), 'released');
  writeFileSync(file, JSON.stringify(holder));
  assert.throws(() => lockOutputDir(join(dir, 'out')), {
    message: `output_dir ${join(dir, 'out')} is in use by process ${process.ppid} on ${hostname()}, started 2026-01-02T03:04:05.000Z (train a.yaml) (lock ${file}); wait for that run to end or use another output. If ${process.ppid} is not a retain run, remove the lock file.`,
  });
  // A holder on another host cannot be checked from here: refused, however old.
  writeFileSync(file, JSON.stringify({ ...holder, pid: deadPid(), host: 'elsewhere-node-7' }));
  assert.throws(() => acquireLock(file, 'x'), /x is in use by process \d+ on elsewhere-node-7, .*remove the lock file \(a process on another host cannot be checked from here\)/);
  rmSync(dir, { recursive: true, force: true });
});

test('a stale lock (holder gone, same host) is taken over with a notice; release leaves a lock that is no longer ours', () => {
  const dir = tmp();
  const file = join(dir, 'results.json.lock');
  const gone = deadPid();
  writeFileSync(file, JSON.stringify({ pid: gone, host: hostname(), started: '2026-01-02T03:04:05.000Z', command: 'eval' }));
  const notes: string[] = [];
  const lock = acquireLock(file, join(dir, 'results.json'), (m) => notes.push(m));
  assert.deepEqual(notes, [`took over the lock of ${join(dir, 'results.json')} from process ${gone} on ${hostname()}, started 2026-01-02T03:04:05.000Z (eval), which is no longer running (${file})`]);
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).pid, process.pid);
  assert.ok(!existsSync(`${file}.takeover`));
  // Someone removed ours by hand and took it: our release must not remove theirs.
  writeFileSync(file, JSON.stringify({ pid: process.ppid, host: hostname(), started: 'x', command: '' }));
  lock.release();
  assert.ok(existsSync(file));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts `n` processes that each try to take `file` at the same moment. The winner holds it until every starter has
 * tried (each appends a line to a tally file), so that a starter slowed by load cannot arrive after the winner has
 * released it and win a second, later race (seen with the test suite beside a benchmark).
 */
async function race(file: string, n: number): Promise<{ code: number | null; out: string }[]> {
  const go = Date.now() + 1500; // every child is loaded by then, usually
  const tally = `${file}.tried`;
  const code = `import { acquireLock } from ${JSON.stringify(LOCK_TS)};
    import { appendFileSync, existsSync, readFileSync } from 'node:fs';
    const tried = () => appendFileSync(${JSON.stringify(tally)}, 'x');
    const all = () => existsSync(${JSON.stringify(tally)}) && readFileSync(${JSON.stringify(tally)}, 'utf8').length >= ${n};
    while (Date.now() < ${go}) {}
    try {
      acquireLock(${JSON.stringify(file)}, 'the output', (m) => console.log('NOTE ' + m));
      console.log('WON ' + process.pid);
      tried();
      const until = Date.now() + 120000;
      const wait = () => (all() || Date.now() > until ? undefined : setTimeout(wait, 20));
      wait();
    } catch (e) { console.log('LOST ' + e.message); process.exitCode = 3; tried(); }`;
  rmSync(tally, { force: true });
  const kids = Array.from({ length: n }, () => {
    const c = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout!.on('data', (d) => (out += d));
    return new Promise<{ code: number | null; out: string }>((res) => c.on('exit', (code) => res({ code, out })));
  });
  const r = await Promise.all(kids);
  rmSync(tally, { force: true });
  return r;
}

test('starters racing for one lock, or for one stale lock, end with exactly one winner; the others name it', async () => {
  const dir = tmp();
  const file = join(dir, '.retain.lock');
  for (const stale of [false, true]) {
    if (stale) writeFileSync(file, JSON.stringify({ pid: deadPid(), host: hostname(), started: 'then', command: '' }));
    const r = await race(file, 4);
    const won = r.filter((x) => x.out.includes('WON'));
    assert.equal(won.length, 1, r.map((x) => x.out).join('\n'));
    const winner = /WON (\d+)/.exec(won[0].out)![1];
    for (const x of r.filter((y) => !y.out.includes('WON'))) assert.match(x.out, new RegExp(`LOST the output is in use by process ${winner} on `));
    // The stale lock is taken over once. Usually by the winner; but a starter that arrives after the taker removed the
    // stale file may create the lock first (seen on a loaded machine), and the taker then loses to it like any other.
    const notes = r.filter((x) => /NOTE took over the lock of the output from process \d+ .*which is no longer running/.test(x.out));
    if (stale) assert.ok(notes.length <= 1, r.map((x) => x.out).join('\n'));
    else assert.equal(notes.length, 0);
    assert.ok(!existsSync(file), 'the winner released the lock at exit');
    assert.ok(!existsSync(`${file}.takeover`));
  }
  rmSync(dir, { recursive: true, force: true });
});

test('an error exit releases the lock; SIGKILL leaves it for the next taker to take over', () => {
  const dir = tmp();
  const file = join(dir, '.retain.lock');
  const run = (tail: string) => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `import { acquireLock } from ${JSON.stringify(LOCK_TS)}; acquireLock(${JSON.stringify(file)}, 'o'); ${tail}`], { encoding: 'utf8' });
  const failed = run(`throw new Error('boom');`);
  assert.equal(failed.status, 1);
  assert.match(failed.stderr, /boom/);
  assert.ok(!existsSync(file), 'released on the error exit');
  const killed = run(`process.kill(process.pid, 'SIGKILL');`);
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal(JSON.parse(readFileSync(file, 'utf8')).pid, killed.pid);
  const notes: string[] = [];
  acquireLock(file, 'o', (m) => notes.push(m)).release();
  assert.match(notes[0], new RegExp(`took over the lock of o from process ${killed.pid} `));
  rmSync(dir, { recursive: true, force: true });
});

test('retain eval -o, compare -o, synth --out and report --out refuse an output another live process holds, naming it', () => {
  const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
  const dir = tmp();
  const model = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
  writeFileSync(join(dir, 'compare.json'), JSON.stringify(compare([FT])));
  const cases: [string[], string, string][] = [
    [['eval', '--model', model, '--tasks', 'arc_easy', '-o', join(dir, 'r.json')], `${join(dir, 'r.json')}.lock`, join(dir, 'r.json')],
    [['compare', '--base', model, '--tuned', model, '--tasks', 'arc_easy', '-o', join(dir, 'c.json')], `${join(dir, 'c.json')}.lock`, join(dir, 'c.json')],
    [['synth', '--model', model, '--out', join(dir, 's.jsonl'), '--count', '2'], `${join(dir, 's.jsonl')}.lock`, join(dir, 's.jsonl')],
    [['report', join(dir, 'compare.json'), '--out', join(dir, 'rep')], join(dir, 'rep', '.retain.lock'), `--out ${join(dir, 'rep')}`],
  ];
  for (const [args, file, what] of cases) {
    const lock = acquireLock(file, what);
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
    lock.release();
    assert.equal(r.status, 1, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^retain: ${what.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is in use by process ${process.pid} on ${hostname()}, started `), args[0]);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('a run whose method entry cannot be built releases its output lock (a retry in the same process is not refused)', async () => {
  const { loadTrainConfig } = await import('../src/config.js');
  const { runTraining } = await import('../src/train/run.js');
  const dir = tmp();
  const cfg = loadTrainConfig(new URL('../configs/stories260k-arith.yaml', import.meta.url).pathname);
  // Past the config's validation, as a program calling runTraining directly can be.
  const bad = { ...cfg, methods: [{ name: 'no_such_method' }], output_dir: join(dir, 'run') } as typeof cfg;
  await assert.rejects(runTraining(bad, undefined, { progress: false }), /methods\[0\]/);
  assert.equal(existsSync(join(dir, 'run', '.retain.lock')), false, 'the lock file outlived the failed run');
  rmSync(dir, { recursive: true, force: true });
});
