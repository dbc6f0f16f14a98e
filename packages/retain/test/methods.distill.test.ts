// Distillation replay's term (docs/METHODS.md §12) against PyTorch's own KL: λ·T²·KL(softmax(z₀/T) ‖ softmax(z/T)) per
// token, averaged over tokens, is F.kl_div(log_softmax(z/T), log_softmax(z₀/T), log_target=True, 'batchmean')·λ·T²;
// its value and its gradient with respect to the model's logits must agree. The option errors name the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { needPython, py } from '../../torch/test/helpers.js';
import { Distill, distillKl } from '../src/methods/distill.js';
import { rng } from '../src/data/loader.js';

test('distill: λ·T²·KL and its gradient equal python3-torch F.kl_div (batchmean)', { skip: needPython() }, () => {
  const r = rng(5);
  const N = 7;
  const V = 11;
  const z0 = Array.from({ length: N * V }, () => 4 * r() - 2);
  const z = Array.from({ length: N * V }, () => 4 * r() - 2);
  for (const [T, w] of [[2, 1], [1, 0.7], [3.5, 0.25]]) {
    const ref = py(`
import torch.nn.functional as F
z0 = torch.tensor(inp['z0'], dtype=torch.float64).view(${N}, ${V})
z = torch.tensor(inp['z'], dtype=torch.float64).view(${N}, ${V}).requires_grad_(True)
T, w = inp['T'], inp['w']
loss = F.kl_div(F.log_softmax(z / T, -1), F.log_softmax(z0 / T, -1), reduction='batchmean', log_target=True) * w * T * T
loss.backward()
out['loss'] = loss.item()
out['grad'] = z.grad.view(-1)
`, { z0, z, T, w });
    const { loss, grad } = torch.tidy(() => {
      const base = torch.tensor(z0, { dtype: 'float64' }).view(N, V).div(T).logSoftmax(-1);
      const logits = torch.tensor(z, { dtype: 'float64' }).view(N, V).requiresGrad_(true);
      const l = distillKl(base, logits, T, w);
      l.backward();
      return { loss: l.item(), grad: Array.from(logits.grad!.reshape(-1).data() as Float64Array) };
    });
    assert.ok(Math.abs(loss - ref.loss) < 1e-12, `T=${T}: loss ${loss} vs ${ref.loss}`);
    const gErr = Math.max(...grad.map((g, i) => Math.abs(g - ref.grad[i])));
    assert.ok(gErr < 1e-12, `T=${T}: gradient differs by ${gErr}`);
  }
});

test('distill: the term is 0 at the base distribution and its options are checked by name', () => {
  const zero = torch.tidy(() => {
    const z = torch.randn([3, 5]);
    return distillKl(z.div(2).logSoftmax(-1), z, 2, 1).item();
  });
  assert.ok(Math.abs(zero) < 1e-6, `KL(p‖p) = ${zero}`);
  assert.throws(() => new Distill({}), /^Error: distill: option 'data' is required \(general text to distil on: Examples or a data spec/);
  assert.throws(() => new Distill({ data: [], temperature: 0 }), /^Error: distill: option 'temperature' must be a positive number, got 0$/);
  assert.throws(() => new Distill({ data: [], tau: 2 }), /^Error: distill: unknown option 'tau'; allowed: data, weight, temperature, batch_size, seed$/);
  const d = new Distill({ data: [] });
  assert.deepEqual([d.temperature, d.weight, d.batchSize], [2, 1, 4], 'Li & Hoiem defaults: T = 2, λ_o = 1');
});
