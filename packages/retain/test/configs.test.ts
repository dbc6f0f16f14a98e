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
