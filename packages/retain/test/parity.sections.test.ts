// `npm run -s parity -- <sections>`: a name that is no section is refused before anything runs. It used to run
// nothing and print the versions alone with status 0, which reads as a parity run with nothing wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const PARITY = new URL('../../../bench/parity.ts', import.meta.url).pathname;

test('parity refuses a section name it does not have, listing the ones it has', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', PARITY, 'arch', 'lmevals'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trim(), "parity: no section 'lmevals'; the sections are arch, peft, tokenizers, lmeval, lmeval-yaml, real_models (none named: all of them)");
  assert.equal(r.status, 2);
});
