// Shared test helpers: the python3-torch reference and tensor comparison.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import assert from 'node:assert/strict';
import { Tensor } from '../src/index.js';

/** Debian's python3-torch. The `python3` on PATH may be another interpreter without torch. */
export const PYTHON = process.env.RETAIN_TEST_PYTHON || '/usr/bin/python3';

let pyOk: boolean | undefined;
export function hasPythonTorch(): boolean {
  if (pyOk === undefined) {
    const r = !PYTHON.includes('/') || existsSync(PYTHON) ? spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }) : null;
    pyOk = !!r && r.status === 0;
  }
  return pyOk;
}

/** Skip reason for tests that need python3-torch, or false when it is there. */
export function needPython(): string | false {
  return hasPythonTorch() ? false : `needs ${PYTHON} with torch (apt-get install -y python3-torch)`;
}

/**
 * Runs a Python snippet with torch imported and `out` (a dict) defined; returns `out` as JSON.
 * Tensors in `out` are converted with .tolist(); use float64 for exact comparisons.
 */
export function py(code: string, input?: unknown): any {
  const prelude = `import sys, json, torch, math
torch.set_num_threads(1)
inp = json.loads(sys.stdin.read() or 'null')
out = {}
`;
  const epilogue = `
def conv(v):
    if isinstance(v, torch.Tensor): return v.detach().double().tolist() if v.is_floating_point() else v.tolist()
    if isinstance(v, (list, tuple)): return [conv(x) for x in v]
    if isinstance(v, dict): return {k: conv(x) for k, x in v.items()}
    return v
print(json.dumps(conv(out)))
`;
  const res = execFileSync(PYTHON, ['-c', prelude + code + epilogue], {
    input: JSON.stringify(input ?? null),
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  return JSON.parse(res.trim().split('\n').pop()!);
}

function flatten(a: unknown): number[] {
  return Array.isArray(a) ? a.flatMap(flatten) : [Number(a)];
}

/** Asserts |a - b| <= atol + rtol·|b| elementwise, with a message naming the worst element. */
export function assertClose(actual: Tensor | number[] | number, expected: unknown, opts: { rtol?: number; atol?: number; msg?: string } = {}): void {
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-6;
  const a = flatten(actual instanceof Tensor ? actual.toArray() : actual);
  const b = flatten(expected);
  assert.equal(a.length, b.length, `${opts.msg ?? ''} length ${a.length} vs ${b.length}`);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]) - (atol + rtol * Math.abs(b[i]));
    if (!(err <= 0) && (worst < 0 || err > worstErr || Number.isNaN(err))) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) assert.fail(`${opts.msg ?? 'tensors differ'}: element ${worst}: ${a[worst]} vs expected ${b[worst]} (rtol ${rtol}, atol ${atol})`);
}

/**
 * Runs one rank of a two-process test: a fixture script under tsx with RANK and MASTER_PORT (plus `env`) set; resolves
 * with its exit code, the last JSON line it printed (or null) and its stderr. Killed after 90 s so a hang fails.
 */
export function runRank(worker: string, rank: number, port: number, env: Record<string, string> = {}): Promise<{ code: number | null; out: Record<string, any> | null; err: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, ['--import', 'tsx', worker], { env: { ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_PORT: String(port), ...env } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop();
      res({ code, out: last ? JSON.parse(last) : null, err });
    });
  });
}
