// Robustness: 10,000 random calls with wrong shapes, dtypes, arities and values through the generated wrappers,
// native.call, Tensor methods, creation functions and the other native entry points. The fuzzing runs in a child
// process (fixtures/fuzz.ts) so that an abort or a segfault shows up here as a signal with the call that caused it,
// not as a dead test runner. Every crash found so far is replayed below, one child each (fixtures/crashers.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CASES } from './fixtures/crashers.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

// glibc's checking malloc (part of libc6 since 2.34) aborts at the first free() near a heap overflow instead of
// letting the process run on with a damaged heap, so an overflow is blamed on the call that made it.
const MALLOC_DEBUG = ['/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0', '/usr/lib/aarch64-linux-gnu/libc_malloc_debug.so.0'].find((p) => existsSync(p));
const checkingMalloc = MALLOC_DEBUG ? { LD_PRELOAD: MALLOC_DEBUG, MALLOC_CHECK_: '3' } : {};

// Random calls reach file-writing ops (save, to_file, ...) with random names: the child runs in a scratch folder
// so those files land there, and tsx is named by its resolved path so it loads from any folder.
const TSX = import.meta.resolve('tsx');

function runChild(args: string[], timeoutMs: number): Promise<Run> {
  const cwd = mkdtempSync(join(tmpdir(), 'retain-fuzz-'));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', TSX, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OMP_NUM_THREADS: '1', ...checkingMalloc },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      rmSync(cwd, { recursive: true, force: true });
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

test('fuzz: 10,000 random calls end in results or Errors, never in a crash', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-fuzz-'));
  const log = join(dir, 'calls.log');
  try {
    const r = await runChild([join(fixtures, 'fuzz.ts'), '--seed', '20261123', '--calls', '10000', '--log', log], 240_000);
    if (r.code !== 0 || r.signal !== null) {
      let last = '';
      try {
        last = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-3).join('\n');
      } catch {}
      const how = r.timedOut ? 'timed out (a call hung)' : r.signal ? `died of ${r.signal}` : `exited with code ${r.code}`;
      assert.fail(`the fuzz process ${how}; last calls:\n${last}\nstderr tail:\n${r.stderr.slice(-1500)}`);
    }
    const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
    t.diagnostic(`${s.calls} calls: ${s.threw} threw an Error, ${s.ok} returned; ${s.opsWrapped} wrapped ops, ${s.opsNative} ops through native.call, ${s.excludedOps} aten overloads excluded; memory guard: ${s.memoryGuard}; checking malloc: ${MALLOC_DEBUG ? 'on' : 'off'}`);
    for (const [kind, c] of Object.entries(s.byKind as Record<string, { ok: number; threw: number }>)) t.diagnostic(`  ${kind}: ${c.ok} ok, ${c.threw} threw`);
    assert.equal(s.calls, 10000);
    assert.deepEqual(s.nonErrors, [], 'everything thrown is an Error');
    assert.deepEqual(s.gradModeLeaks, [], 'no call leaves grad mode changed');
    assert.deepEqual(s.handleLeaks, [], 'no call leaves a native handle behind after its tidy scope');
    // Both outcomes must be well represented, or the fuzzer is only testing argument conversion.
    assert.ok(s.ok > 1500, `only ${s.ok} calls succeeded`);
    assert.ok(s.threw > 3000, `only ${s.threw} calls threw`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Every crash the fuzzer has found, replayed in its own process. Fixed ones are regression tests; open ones
// (still crashing) are `todo`, so they do not fail the suite: when the native fix lands the todo passes, and the
// case's `open` flag and the fuzzer's skip can go.
test('crashes found by fuzzing, one process each', { concurrency: 4 }, async (t) => {
  await Promise.all(
    Object.entries(CASES).map(([name, c]) =>
      t.test(name, c.open ? { todo: c.what } : {}, async () => {
        // A child that loads PyTorch 2.x's libraries on a busy 2-core machine needs ~15 s just to start; a real hang
        // never ends, so a generous limit costs nothing when the case is fixed.
        const r = await runChild([join(fixtures, 'crashers.ts'), name], c.hangs ? 45_000 : 90_000);
        const last = r.stdout.trim().split('\n').pop() ?? '';
        const how = r.timedOut ? 'hung' : (r.signal ?? `exit ${r.code}`);
        assert.ok(r.code === 0 && r.signal === null, `${name} (${c.what}): ${how} ${last}`);
        assert.match(r.stdout, /survived/);
      }),
    ),
  );
});
