// `retain train config.yaml key=value ...` (overrides.ts) and `retain schema` (schema.ts): overrides change nested keys
// and lists, are validated with the file and saved with it in output_dir/run_config.yaml, which reads back to the same
// config; the JSON Schema accepts the shipped configs and refuses what the zod schema refuses, checked by Python's
// jsonschema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { applyOverrides } from '../src/overrides.js';
import { loadTrainConfig, parseTrainConfig } from '../src/config.js';
import { trainConfigJsonSchema } from '../src/schema.js';
import { RUN_CONFIG } from '../src/train/saved-config.js';
import { REFENV_PYTHON } from '../../../bench/refenv.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-overrides-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const CONFIGS = new URL('../configs/', import.meta.url).pathname;
const ASSETS = new URL('../assets/', import.meta.url).pathname;

test('overrides: dotted keys, YAML values, lists, list indices and new sections; a later one wins', () => {
  const raw = { training: { lr: 0.1, betas: [0.9, 0.99] }, methods: ['flow'] };
  const out = applyOverrides(raw, ['training.lr=3e-4', 'training.eval_every=null', 'methods=[flow, {name: l2, lambda: 0.01}]', 'methods.1.lambda=0.5', 'methods.0.tau=2', 'monitor.tasks=[tinystories]', 'training.betas.1=0.95', 'output_dir=runs/x', 'training.lr=1e-3']);
  assert.deepEqual(out, {
    training: { lr: 1e-3, betas: [0.9, 0.95], eval_every: null },
    methods: [{ name: 'flow', tau: 2 }, { name: 'l2', lambda: 0.5 }],
    monitor: { tasks: ['tinystories'] },
    output_dir: 'runs/x',
  });
  // The file's own object is left as it was.
  assert.deepEqual(raw, { training: { lr: 0.1, betas: [0.9, 0.99] }, methods: ['flow'] });
});

test('overrides: a malformed one is named with what to write', () => {
  const bad: [string, RegExp][] = [
    ['training.lr', /override 'training\.lr': write key=value with a dotted key, e\.g\. training\.lr=3e-4 or methods=\[flow,l2\]$/],
    ['=3', /override '=3': write key=value/],
    ['training..lr=1', /override 'training\.\.lr=1': the key 'training\.\.lr' has an empty part; write it as section\.key, e\.g\. training\.lr$/],
    ['methods=[flow', /override 'methods=\[flow': the value is not valid YAML \(/],
    ['training.lr.x=1', /override 'training\.lr\.x=1': training\.lr is 0\.1, not a section with keys$/],
    ['training.betas.first=1', /override 'training\.betas\.first=1': training\.betas is a list; index it with a number, e\.g\. training\.betas\.0$/],
    ['training.betas.5=1', /override 'training\.betas\.5=1': training\.betas\.5 is past the end of a list of 2$/],
  ];
  for (const [o, re] of bad) assert.throws(() => applyOverrides({ training: { lr: 0.1, betas: [0.9, 0.99] } }, [o]), re, o);
});

function writeConfig(name: string, extra = ''): string {
  const f = join(tmp, name);
  writeFileSync(f, `model: {path: ${join(ASSETS, 'stories260K', 'stories260K.bin')}}\ndata:\n  train: {path: ${join(ASSETS, 'data', 'arith.jsonl')}, format: {type: prompt_completion}, max_length: 48, limit: 32}\ntraining: {batch_size: 8, lr: 0.002, max_steps: 50}\noutput_dir: run\n${extra}`);
  return f;
}

test('loadTrainConfig: overrides are validated with the file, named in the error; their paths resolve as the file\'s', () => {
  const f = writeConfig('c.yaml');
  const cfg = loadTrainConfig(f, ['training.lr=0.01', 'output_dir=runs/o', 'methods=[flow]']);
  assert.equal(cfg.training.lr, 0.01);
  assert.equal(cfg.output_dir, join(tmp, 'runs', 'o'));
  assert.deepEqual(cfg.methods, ['flow']);
  assert.throws(() => loadTrainConfig(f, ['training.lr=fast']), (e: Error) => e.message === `invalid config ${f} with training.lr=fast:\n  training.lr: Expected number, received string`);
  assert.throws(() => loadTrainConfig(f, ['training.lrr=1']), /invalid config .* with training\.lrr=1:\n {2}training: unknown key 'lrr'/);
  assert.throws(() => loadTrainConfig(f, ['training.optimizer=adam']), /training\.optimizer: 'adam' is not allowed; use one of 'adamw', 'sgd'/);
});

function retain(args: string[], cwd: string) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd, timeout: 300_000 });
}

test('retain train with overrides trains as they say and saves run_config.yaml, which reads back to the same config', { timeout: 300_000 }, () => {
  const f = writeConfig('run.yaml');
  const r = retain(['train', f, 'training.max_steps=2', 'training.lr=0.01', 'training.log_every=1', 'output_dir=out'], tmp);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()!).steps, 2);
  const saved = join(tmp, 'out', RUN_CONFIG);
  const text = readFileSync(saved, 'utf8');
  assert.match(text, new RegExp(`^# retain train ${f.replace(/[.]/g, '\\.')} training\\.max_steps=2 training\\.lr=0\\.01 training\\.log_every=1 output_dir=out\\n`));
  assert.deepEqual(loadTrainConfig(saved), loadTrainConfig(f, ['training.max_steps=2', 'training.lr=0.01', 'training.log_every=1', 'output_dir=out']));
  assert.equal(parseYaml(text).training.lr, 0.01);
  const bad = retain(['train', f, 'training.batch_size=0'], tmp);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^retain: invalid config .*run\.yaml with training\.batch_size=0:\n {2}training\.batch_size: Number must be greater than or equal to 1\n$/);
});

test('retain schema prints the JSON Schema of the whole config', () => {
  const r = retain(['schema'], tmp);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.deepEqual(s, JSON.parse(JSON.stringify(trainConfigJsonSchema())));
  assert.deepEqual(s.required, ['model', 'data', 'training', 'output_dir']);
  assert.equal(s.additionalProperties, false);
  const t = s.properties.training.properties;
  assert.deepEqual(t.optimizer, { type: 'string', enum: ['adamw', 'sgd'], default: 'adamw', description: 'The optimizer.' });
  assert.deepEqual(t.batch_size, { type: 'integer', minimum: 1, maximum: 1e6, default: 8, description: 'Examples per micro-batch.' });
  const formats = s.properties.data.properties.train.properties.format.oneOf.map((f: { properties: { type: { const: string } } }) => f.properties.type.const);
  assert.ok(['prompt_completion', 'chat', 'alpaca', 'sharegpt', 'messages', 'text'].every((k) => formats.includes(k)), formats.join(', '));
  // Methods: a bare name only where every option has a default; otherwise one object per method, from its schema.
  const entries = s.properties.methods.items.anyOf;
  assert.ok(entries[0].enum.includes('flow') && !entries[0].enum.includes('ewc') && !entries[0].enum.includes('l2'), entries[0].enum.join(', '));
  const l2 = entries.find((e: { title?: string }) => e.title === 'l2');
  assert.deepEqual(l2.required, ['name', 'lambda']);
  assert.equal(l2.additionalProperties, false);
  assert.deepEqual({ ...l2.properties.reduction, description: undefined }, { type: 'string', enum: ['sum', 'mean'], default: 'sum', description: undefined });
  assert.match(l2.properties.reduction.description, /mean/);
  const ewc = entries.find((e: { title?: string }) => e.title === 'ewc');
  assert.equal(ewc.properties.data.$ref, '#/$defs/data_spec');
  const { description: _role, ...train } = s.properties.data.properties.train;
  assert.deepEqual(s.$defs.data_spec, train, 'a method\'s data spec is the same schema as data.train');
  // What only code can pass (WiSE-FT's evaluate function) is not a config key.
  const wise = entries.find((e: { title?: string }) => e.title === 'wise');
  assert.ok(!('evaluate' in wise.properties) && 'eval_data' in wise.properties, Object.keys(wise.properties).join(', '));
  assert.equal(s.properties.monitor.properties.limit.default, 200);
});

// Python's jsonschema: the reference environment does not pin it, so a python3 on PATH that has it serves too.
const JSONSCHEMA_PYTHON = [REFENV_PYTHON, 'python3'].find((py) => spawnSync(py, ['-c', 'import jsonschema'], { encoding: 'utf8' }).status === 0);
const refMissing = JSONSCHEMA_PYTHON ? false : `needs Python's jsonschema (in the reference environment ${REFENV_PYTHON}, or a python3 on PATH with it: pip install jsonschema)`;

test('parity: Python\'s jsonschema accepts the shipped configs under the schema and refuses what zod refuses', { skip: refMissing }, () => {
  const shipped = readdirSync(CONFIGS).filter((n) => n.endsWith('.yaml')).map((n) => parseYaml(readFileSync(join(CONFIGS, n), 'utf8')));
  const methods = "[flow, {name: l2, lambda: 0.01}, {name: ewc, lambda: 0.5, data: {path: g.jsonl, format: {type: text}}}, {name: mixing, ratio: '1:1', general: [{path: a.jsonl, format: {type: alpaca}, max_length: 64}]}]";
  const good = parseYaml(readFileSync(writeConfig('g.yaml', `methods: ${methods}\nmonitor: {every: 5, tasks: [tinystories]}\n`), 'utf8'));
  const variants: [string, unknown][] = [
    ['unknown key', applyOverrides(good, ['training.lrr=1'])],
    ['enum', applyOverrides(good, ['training.optimizer=adam'])],
    ['integer', applyOverrides(good, ['training.batch_size=1.5'])],
    ['ceiling', applyOverrides(good, ['training.max_steps=1e300'])],
    ['format type', applyOverrides(good, ['data.train.format={type: completion}'])],
    ['format key', applyOverrides(good, ['data.train.format={type: sharegpt, tags: {role: from}}'])],
    ['missing output_dir', { ...(good as object), output_dir: undefined }],
    ['device', applyOverrides(good, ['model.device=gpu'])],
    ['betas', applyOverrides(good, ['training.betas=[0.9]'])],
    ['method option unknown', applyOverrides(good, ['methods.1={name: l2, lambda: 0.01, lamda: 1}'])],
    ['method option value', applyOverrides(good, ['methods.1.lambda=-1'])],
    ['method option missing', applyOverrides(good, ['methods=[ewc]'])],
    ['method unknown', applyOverrides(good, ['methods=[forgetnot]'])],
    ['method data spec', applyOverrides(good, ['methods.2.data.format={type: completion}'])],
    ['method data list', applyOverrides(good, ['methods.3.general=[{path: a.jsonl}]'])],
    ['code-only option', applyOverrides(good, ['methods=[{name: wise, alpha: 0.5, evaluate: best}]'])],
    ['monitor', applyOverrides(good, ['monitor.on_exceed=halt'])],
  ];
  for (const [name, v] of variants) assert.throws(() => parseTrainConfig(JSON.parse(JSON.stringify(v))), /invalid config/, name);
  const py = `
import json, sys, jsonschema
inp = json.load(sys.stdin)
jsonschema.Draft202012Validator.check_schema(inp['schema'])
v = jsonschema.Draft202012Validator(inp['schema'])
print(json.dumps({'errors': [[e.message for e in v.iter_errors(c)] for c in inp['configs']]}))
`;
  const run = spawnSync(JSONSCHEMA_PYTHON!, ['-c', py], { encoding: 'utf8', input: JSON.stringify({ schema: trainConfigJsonSchema(), configs: [...shipped, good, ...variants.map(([, v]) => v)] }) });
  assert.equal(run.status, 0, run.stderr);
  const ref = JSON.parse(run.stdout);
  ref.errors.slice(0, shipped.length + 1).forEach((e: string[], i: number) => assert.deepEqual(e, [], `config ${i}`));
  ref.errors.slice(shipped.length + 1).forEach((e: string[], i: number) => assert.ok(e.length > 0, `${variants[i][0]}: jsonschema accepted it`));
});
