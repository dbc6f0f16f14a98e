// The reference environment (scripts/refenv.sh): a Python virtual environment with the real transformers, PEFT,
// tokenizers, safetensors, lm-evaluation-harness and PyTorch 2.x. Parity tests and `npm run parity` run their
// reference side there. Tests skip naming what is missing; nothing here ever falls back to another interpreter.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(new URL('..', import.meta.url).pathname);
export const REFENV = process.env.RETAIN_REFENV ? resolve(process.env.RETAIN_REFENV) : join(ROOT, '.refenv');
export const REFENV_PYTHON = join(REFENV, 'bin', 'python');

let ready: string | false | undefined;

/**
 * Skip reason for a test that needs the reference environment (or one of its packages), or false when it is there.
 * A half-made environment (no stamp) counts as missing, so a killed install never makes tests pass vacuously.
 */
export function needRefenv(...modules: string[]): string | false {
  if (ready === undefined) {
    ready = existsSync(join(REFENV, '.stamp')) && existsSync(REFENV_PYTHON)
      ? false
      : `needs the reference environment ${REFENV} (create it with \`bash scripts/refenv.sh\`)`;
  }
  if (ready || modules.length === 0) return ready;
  const r = spawnSync(REFENV_PYTHON, ['-c', modules.map((m) => `import ${m}`).join('\n')], { encoding: 'utf8' });
  return r.status === 0 ? false : `needs ${modules.join(', ')} in the reference environment ${REFENV}: ${r.stderr.trim().split('\n').pop()}`;
}

/** Versions of the reference packages, for reports ({torch, transformers, peft, tokenizers, lm_eval, ...}). */
export function refenvVersions(): Record<string, string> {
  return refPy(`
import importlib
for name in ['torch', 'transformers', 'peft', 'tokenizers', 'safetensors', 'lm_eval', 'sentence_transformers']:
    try: out[name] = importlib.import_module(name).__version__
    except Exception as e: out[name] = 'missing'
`);
}

/**
 * Runs Python code in the reference environment with `inp` (the JSON input) and `out` (a dict) defined and returns
 * `out` as JSON. Torch runs on one thread with deterministic settings so figures repeat. Python's stderr is kept in
 * the error when the code fails.
 */
export function refPy(code: string, input?: unknown, opts: { timeoutMs?: number; env?: Record<string, string> } = {}): any {
  const dir = mkdtempSync(join(tmpdir(), 'retain-refpy-'));
  const outPath = join(dir, 'out.json');
  const prelude = `import sys, json, os, math
inp = json.loads(sys.stdin.read() or 'null')
out = {}
try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    pass
`;
  const epilogue = `
def _conv(v):
    try:
        import torch
        if isinstance(v, torch.Tensor): return v.detach().double().tolist() if v.is_floating_point() else v.tolist()
    except ImportError:
        pass
    if isinstance(v, (list, tuple)): return [_conv(x) for x in v]
    if isinstance(v, dict): return {k: _conv(x) for k, x in v.items()}
    return v
with open(${JSON.stringify(outPath)}, 'w') as f: json.dump(_conv(out), f)
`;
  try {
    execFileSync(REFENV_PYTHON, ['-c', prelude + code + epilogue], {
      input: JSON.stringify(input ?? null),
      encoding: 'utf8',
      maxBuffer: 256 << 20,
      timeout: opts.timeoutMs ?? 600_000,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', HF_DATASETS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false', OMP_NUM_THREADS: '1', ...opts.env },
    });
    return JSON.parse(readFileSync(outPath, 'utf8'));
  } catch (e: any) {
    const err = String(e.stderr ?? '').trim().split('\n').slice(-15).join('\n');
    throw new Error(`reference Python failed${err ? `:\n${err}` : `: ${e.message}`}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
