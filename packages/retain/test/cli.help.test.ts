// `retain --help`: every command listed with its usage and description without importing any command's module
// (so without libtorch); the table in src/cli/commands.ts agrees with what each module registers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Command, Help } from 'commander';
import { COMMANDS } from '../src/cli/commands.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
// An addon path that does not exist: any import of @retain/torch fails loudly, so a listing that succeeds loaded none.
const NO_TORCH = { ...process.env, RETAIN_TORCH_ADDON: '/nonexistent/retain_torch.node' };

test('each module registers the usage the table lists, leaves the description to the table, and nothing else', async () => {
  const registered = new Set<string>();
  for (const entry of COMMANDS) {
    const program = new Command();
    (await entry.load())(program);
    const cmd = program.commands.find((c) => c.name() === entry.name);
    assert.ok(cmd, `${entry.name}: its module registers no command of that name`);
    assert.equal(new Help().subcommandTerm(cmd), entry.usage, `${entry.name}: usage in src/cli/commands.ts differs from the module's`);
    assert.equal(cmd.description(), '', `${entry.name}: the module sets its own description; it belongs in src/cli/commands.ts`);
    for (const c of program.commands) registered.add(c.name());
  }
  assert.deepEqual([...registered].sort(), COMMANDS.map((c) => c.name).sort(), 'a module registers a command the table does not list');
});

test('retain --help lists every command with its description, without loading libtorch', () => {
  const r = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8', env: NO_TORCH });
  assert.equal(r.status, 0, r.stderr);
  for (const c of COMMANDS) {
    const line = r.stdout.split('\n').find((l) => l.trimStart().startsWith(c.usage + ' '));
    assert.ok(line, `no line for ${c.usage} in:\n${r.stdout}`);
    assert.ok(line.includes(c.description.slice(0, 30)), `${c.name} is listed without its description: ${line}`);
  }
  assert.ok(COMMANDS.every((c) => c.description.length > 20));
  const v = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8', env: NO_TORCH });
  assert.equal(v.stdout.trim(), '0.1.0');
});

test('a named command is the real one; an unknown one gets a suggestion', () => {
  for (const args of [['help', 'train'], ['train', '--help']]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Usage: retain train \[options\] <config> \[overrides\.\.\.\]\n\nfine-tune a model as the config says/);
    assert.match(r.stdout, /--nproc <n>/);
  }
  const u = spawnSync(process.execPath, [CLI, 'trian'], { encoding: 'utf8', env: NO_TORCH });
  assert.equal(u.status, 1);
  assert.match(u.stderr, /unknown command 'trian'\n\(Did you mean train\?\)/);
});

test('a command whose module cannot load (no addon) fails with one line naming the fix', () => {
  const r = spawnSync(process.execPath, [CLI, 'inspect', 'x'], { encoding: 'utf8', env: NO_TORCH });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^retain: @retain\/torch: the native addon is not built \(\/nonexistent\/retain_torch\.node is missing\)/);
});
