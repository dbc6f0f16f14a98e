// Intra-op threads: PyTorch's default is every physical core; Debian's libtorch 1.13 started with one (a 2-core VM
// ran every training step on one core). Without OMP_NUM_THREADS, loading @retain/torch sets the physical core count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { physicalCores } from '../src/core.js';

const cpu = (socket: number, core: number) => `processor\t: x\nphysical id\t: ${socket}\ncore id\t\t: ${core}\n`;

test('physical cores: distinct (socket, core) pairs of /proc/cpuinfo, capped by the CPUs allowed; the allowed count without core ids', () => {
  const allowed = availableParallelism();
  // Two hyperthreads on each of 2 cores, and the same core ids on a second socket.
  assert.equal(physicalCores([cpu(0, 0), cpu(0, 0), cpu(0, 1), cpu(0, 1)].join('\n')), Math.min(2, allowed));
  assert.equal(physicalCores([cpu(0, 0), cpu(1, 0)].join('\n')), Math.min(2, allowed));
  assert.equal(physicalCores('processor\t: 0\nmodel name\t: some ARM\n'), allowed);
  assert.equal(physicalCores(null), allowed);
});

test('loading the addon without OMP_NUM_THREADS uses at least every physical core; OMP_NUM_THREADS=1 keeps one', () => {
  const threads = (env: NodeJS.ProcessEnv) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', "import('@retain/torch').then((t) => console.log(t.getNumThreads(), t.physicalCores()))"], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim().split(' ').map(Number);
  };
  const { OMP_NUM_THREADS: _, ...rest } = process.env;
  const [n, cores] = threads(rest);
  // At least every physical core (a libtorch that starts with more keeps its count).
  assert.ok(n >= cores, `${n} threads for ${cores} physical cores`);
  assert.deepEqual(threads({ ...rest, OMP_NUM_THREADS: '1' })[0], 1);
});
