// Method options are read by one schema per method (methods/registry.ts): documented field by field, checked inside a
// config with the file and the entry named, data specs given their defaults and their paths resolved from the
// schema's marks, never from the look of a value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTrainConfig } from '../src/config.js';
import { dataSpecSchema } from '../src/data/spec.js';
import type { Example } from '../src/data/formats.js';
import { METHODS } from '../src/methods/registry.js';
import { ewcOptions } from '../src/methods/ewc.js';
import { mixingOptions } from '../src/methods/mixing.js';
import { fieldKind, objectOf, parseOptions } from '../src/options.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-options-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

function config(name: string, methods: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const f = join(dir, 'c.yaml');
  writeFileSync(f, `model: {path: m}\ndata: {train: {path: d.jsonl, format: {type: text}}}\ntraining: {}\noutput_dir: out\nmethods: ${methods}\n`);
  return f;
}

test('every option of every registered method has a description', () => {
  for (const [name, m] of METHODS) {
    for (const [key, field] of Object.entries(objectOf(m.schema).shape)) {
      if (fieldKind(field) === 'code') continue;
      assert.ok(field.description && field.description.length > 10, `${name}.${key} has no describe() text`);
    }
  }
});

test("every wrong value of every option is reported in the method's words, not zod's", () => {
  const wrong: unknown[] = ['x', -1, 1.5, {}, [], [{}], true, null, [-1]];
  let cases = 0;
  for (const [name, m] of METHODS) {
    for (const key of Object.keys(objectOf(m.schema).shape)) {
      for (const v of wrong) {
        let message = '';
        try {
          m.create({ [key]: v });
        } catch (e) {
          message = (e as Error).message;
        }
        if (!message) continue;
        cases++;
        assert.ok(message.startsWith(`${name}: `), message);
        assert.doesNotMatch(message, /Expected |Invalid input|must contain|Number must|received |\(Required\)/, `${name} {${key}: ${JSON.stringify(v)}}`);
      }
    }
  }
  assert.ok(cases > 300, `${cases} cases`);
});

test('a method entry in a config is checked by its schema: the file, the entry, the option and what it must be', () => {
  const f = config('bad', "[{name: l2, lamda: 0.1}, {name: ewc, lambda: 1, data: {path: g.jsonl, format: {type: completion}}}, {name: wise, alpha: 0.5, evaluate: best}, {name: lora, r: 0}, {name: mixing, ratio: '1:1', general: {path: g.jsonl, format: {type: text}}, probabilities: {target: 1}}, {lambda: 1}]");
  assert.throws(() => loadTrainConfig(f), { message: [
    `invalid config ${f}:`,
    "  methods[0]: l2: option 'lambda' is required (a non-negative number)",
    "  methods[0]: l2: unknown option 'lamda'; allowed: lambda, reduction, exclude, head_lambda",
    "  methods[1]: ewc: data.format.type: use one of 'prompt_completion', 'alpaca', 'sharegpt', 'messages', 'chat', 'text', 'classification', 'image_classification'",
    '  methods[2]: wise: option \'evaluate\' must be a function (model) => score, higher is better, got "best"',
    "  methods[3]: lora: option 'r' must be a positive integer, got 0",
    "  methods[4]: mixing: probabilities apply to mode: probabilistic; ratio mode takes 'm:n' only",
    `  methods[5]: a method entry needs name: <method>; available: ${[...METHODS.keys()].sort().join(', ')}`,
  ].join('\n') });
});

test('data specs and paths in method entries resolve against the config folder, found by the schema', () => {
  const f = config('paths', "[{name: ewc, lambda: 1, data: {path: fisher.jsonl, format: {type: text}}}, {name: mixing, ratio: '1:1', general: [{path: a.jsonl, format: {type: text}}, {path: /data/b.jsonl, format: {type: text}}]}, {name: lora, adapter: adapters/one}, {name: flow, cache_dir: cache}]");
  const dir = join(tmp, 'paths');
  const [ewc, mixing, lora, flow] = loadTrainConfig(f).methods as Record<string, any>[];
  assert.equal(ewc.data.path, join(dir, 'fisher.jsonl'));
  assert.deepEqual(mixing.general.map((g: { path: string }) => g.path), [join(dir, 'a.jsonl'), '/data/b.jsonl']);
  assert.equal(lora.adapter, join(dir, 'adapters', 'one'));
  // A plain string option is not a data path (flow's cache folder stays as written, relative to the working directory).
  assert.equal(flow.cache_dir, 'cache');
  // The entries stay as written (no defaults filled in), so a saved run_config.yaml reads back the same.
  assert.deepEqual(Object.keys(ewc.data), ['path', 'format']);
});

test("a method's data spec is parsed by the same schema as data.train; Examples given in code pass as they are", () => {
  const spec = { path: 'g.jsonl', format: { type: 'alpaca' } };
  const parsed = parseOptions('ewc', ewcOptions, { lambda: 1, data: spec }).data;
  assert.deepEqual(parsed, dataSpecSchema.parse(spec));
  assert.equal((parsed as { max_length: number }).max_length, 512);
  const examples: Example[] = [{ id: '0', source: 'g', ids: [1, 2, 3], lossMask: [0, 1, 1] } as Example];
  assert.equal(parseOptions('ewc', ewcOptions, { lambda: 1, data: examples }).data, examples);
  // mixing's general: one spec or a list of them, always a list once parsed.
  assert.equal(parseOptions('mixing', mixingOptions, { ratio: '1:1', general: spec }).general.length, 1);
  assert.throws(() => parseOptions('ewc', ewcOptions, { lambda: 1, data: 'g.jsonl' }), { message: 'ewc: option \'data\' must be Examples or a data spec {path, format, ...}, got "g.jsonl"' });
  assert.throws(() => parseOptions('ewc', ewcOptions, { lambda: 1, data: { ...spec, max_len: 3 } }), { message: "ewc: data: unknown key 'max_len'" });
});
