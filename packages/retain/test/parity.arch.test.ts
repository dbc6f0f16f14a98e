// Architecture parity against the real transformers (bench/parity/arch.ts): for each case transformers builds and
// saves a small random model; retain's logits, greedy generation, gradients and saved directory must agree with it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { BOUNDS, CASES, checkCase, dropPrepared, prepareCases } from '../../../bench/parity/arch.js';
import { needRefenv } from '../../../bench/refenv.js';

const skip = needRefenv('transformers', 'safetensors');

// Every reference is built in one Python run (importing transformers once), before the cases are checked.
before(() => {
  if (!skip) prepareCases(CASES);
});
after(() => dropPrepared());

for (const c of CASES) {
  const variant = Object.entries(c.variant ?? {}).map(([k, v]) => `${k}=${v}`).join(', ');
  test(`${c.name} (${c.hf.model_type}${variant ? `, ${variant}` : ''}) matches transformers`, { skip }, async () => {
    const r = await checkCase(c);
    console.log(JSON.stringify(r));
    assert.ok(r.max_logit_diff <= BOUNDS.logits, `logits differ by ${r.max_logit_diff} (max |Δ|)`);
    assert.ok(r.greedy_equal, 'greedy generation differs from transformers generate(do_sample=False)');
    assert.ok(r.max_grad_rel_diff <= BOUNDS.gradRel, `gradients differ by ${r.max_grad_rel_diff} (per-tensor max|Δ|/max|ref|)`);
    assert.ok(r.roundtrip_logit_diff <= BOUNDS.roundtrip, `transformers reads retain's saved model to logits ${r.roundtrip_logit_diff} away`);
  });
}
