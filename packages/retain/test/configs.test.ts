// Every shipped config parses, names only existing files, and resolves its methods.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadTrainConfig } from '../src/config.js';
import { buildMethods } from '../src/methods/registry.js';

const dir = new URL('../configs/', import.meta.url).pathname;

for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
  // A config for a model that scripts/models.py brings is checked once that model is there.
  const model = /path: \.\.\/\.\.\/\.\.\/\.models\/(\S+)/.exec(readFileSync(join(dir, f), 'utf8'))?.[1];
  const missing = model && !existsSync(join(dir, '../../../.models', model)) ? `needs .models/${model}: .refenv/bin/python scripts/models.py ${model}` : false;
  test(`shipped config ${f} is valid`, { skip: missing }, () => {
    const cfg = loadTrainConfig(join(dir, f));
    assert.ok(existsSync(cfg.model.path), `model ${cfg.model.path}`);
    assert.ok(existsSync(cfg.data.train.path), `data ${cfg.data.train.path}`);
    assert.equal(buildMethods(cfg.methods).length, cfg.methods.length);
    // Method data (mixing's general source, EWC's Fisher data) is resolved against the config file too.
    const specs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        if (typeof o.path === 'string' && 'format' in o) specs.push(o.path);
        Object.values(o).forEach(walk);
      }
    };
    walk(cfg.methods);
    for (const p of specs) assert.ok(existsSync(p), `method data ${p}`);
  });
}

test('training settings that contradict each other are refused, naming both', async () => {
  const { parseTrainConfig } = await import('../src/config.js');
  const base = { model: { path: 'm' }, data: { train: { path: 'd', format: { type: 'text' } } }, output_dir: 'o' };
  const bad = (training: Record<string, unknown>) => () => parseTrainConfig({ ...base, training });
  assert.throws(bad({ warmup_steps: 10, warmup_ratio: 0.1 }), /training\.warmup_steps: both warmup_steps \(10\) and warmup_ratio \(0\.1\) are set; keep one/);
  assert.throws(bad({ max_steps: 2, warmup_steps: 100 }), /training\.warmup_steps: 100 is more than max_steps 2: the learning rate would never reach lr/);
  assert.throws(bad({ optimizer: 'sgd', momentum: 5 }), /training\.momentum: Number must be less than 1/);
  assert.throws(bad({ momentum: 0.9 }), /training\.momentum: momentum applies to optimizer sgd; AdamW's momentum is betas\[0\]/);
  assert.equal(parseTrainConfig({ ...base, training: { optimizer: 'sgd', momentum: 0.9, max_steps: 5, warmup_steps: 5 } }).training.momentum, 0.9);
});
