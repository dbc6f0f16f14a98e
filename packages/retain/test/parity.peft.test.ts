// LoRA adapters both ways against the real PEFT in the reference environment (bench/parity/peft.ts): adapters PEFT
// saves (all seven projections, biases, modules_to_save, rank/alpha patterns, rsLoRA, GPT-2's Conv1D) give retain
// PeftModel's logits, adapters retain saves load in PeftModel.from_pretrained with the same logits, and both merges
// agree tensor for tensor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needRefenv } from '../../../bench/refenv.js';
import { FROM_PEFT, FROM_RETAIN, runCases } from '../../../bench/parity/peft.js';

const skip = needRefenv('peft', 'transformers');

test('PEFT LoRA adapters both ways: logits within 1e-4, merged tensors within 1e-5 (float32)', { skip, timeout: 300_000 }, async (t) => {
  const cases = await runCases();
  assert.deepEqual(cases.map((c) => c.name), [...FROM_PEFT, ...FROM_RETAIN].map((c) => c.name));
  for (const c of cases) {
    await t.test(`${c.direction}: ${c.name}`, () => {
      assert.ok(c.max_logit_diff <= 1e-4, `logits differ by ${c.max_logit_diff}`);
      assert.ok(c.max_merge_diff <= 1e-5, `merged weights differ by ${c.max_merge_diff}`);
      // A zero adapter would pass the bounds whatever retain did with it.
      assert.ok(c.adapter_effect > 1e-2, `the adapter moves the logits by only ${c.adapter_effect}`);
      assert.ok(c.lora_layers >= 8 && c.merged_tensors >= 21, `${c.lora_layers} LoRA layers, ${c.merged_tensors} merged tensors compared`);
    });
  }
});
