// Parity-test plumbing for the model architectures: tensors travel to python3-torch and back as safetensors files
// (bench/py/st_io.py reads and writes them there), which keeps million-parameter models out of JSON.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { py } from '../../torch/test/helpers.js';

export const REF = new URL('../../../bench/py/', import.meta.url).pathname;

/**
 * Runs `code` in python3-torch with `W` (the tensors given, by name) and `inp` (the JSON input) defined, and
 * `OUT`, a dict the code fills with tensors that come back by name. `out` (JSON) works as in py().
 */
export function pyTensors(code: string, tensors: Map<string, torch.Tensor>, input: Record<string, unknown> = {}): { out: any; tensors: Map<string, torch.Tensor> } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-ref-'));
  try {
    const inPath = join(dir, 'in.safetensors');
    const outPath = join(dir, 'out.safetensors');
    torch.io.saveSafetensors(inPath, tensors);
    const out = py(`
sys.path.insert(0, ${JSON.stringify(REF)})
import st_io
W = st_io.load(inp['__in'])
OUT = {}
${code}
st_io.save(inp['__out'], {k: v.detach().contiguous() for k, v in OUT.items()})
`, { ...input, __in: inPath, __out: outPath });
    const back = torch.io.loadSafetensors(outPath);
    return { out, tensors: new Map(back) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Asserts |a − b| ≤ atol + rtol·|b| elementwise (computed with the engine), naming the worst element. */
export function assertTensorClose(actual: torch.Tensor, expected: torch.Tensor | undefined, opts: { rtol?: number; atol?: number; msg?: string } = {}): void {
  const msg = opts.msg ?? 'tensors differ';
  assert.ok(expected, `${msg}: no expected tensor`);
  assert.deepEqual(actual.shape, expected.shape, `${msg}: shape`);
  torch.tidy(() => {
    const a = actual.detach().double();
    const b = expected.detach().double().to({ device: a.device });
    const excess = a.sub(b).abs().sub(b.abs().mul(opts.rtol ?? 1e-5).add(opts.atol ?? 1e-6)).reshape(-1); // [n]
    const bad = excess.isnan().logicalOr(excess.gt(0));
    if (bad.any().item()) {
      const i = excess.maskedFill(excess.isnan(), Infinity).argmax().item();
      const fa = a.reshape(-1).i(i).item();
      const fb = b.reshape(-1).i(i).item();
      assert.fail(`${msg}: element ${i}: ${fa} vs expected ${fb} (rtol ${opts.rtol ?? 1e-5}, atol ${opts.atol ?? 1e-6})`);
    }
  });
}

/** Sets every parameter (and floating buffer, optionally) to N(0, std²) so each path carries signal. */
export function randomise(m: torch.nn.Module, std: number, opts: { buffers?: boolean } = {}): void {
  torch.noGrad(() => {
    for (const p of m.parameters()) p.normal_(0, std);
    if (opts.buffers) for (const b of m.buffers()) if (torch.isFloating(b.dtype)) b.normal_(0, std);
  });
}
