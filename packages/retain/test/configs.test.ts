// Every shipped config parses, names only existing files, and resolves its methods.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadTrainConfig } from '../src/config.js';
import { buildMethods } from '../src/methods/registry.js';

const dir = new URL('../configs/', import.meta.url).pathname;

for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
  test(`shipped config ${f} is valid`, () => {
    const cfg = loadTrainConfig(join(dir, f));
    assert.ok(existsSync(cfg.model.path), `model ${cfg.model.path}`);
    assert.ok(existsSync(cfg.data.train.path), `data ${cfg.data.train.path}`);
    assert.equal(buildMethods(cfg.methods).length, cfg.methods.length);
  });
}
