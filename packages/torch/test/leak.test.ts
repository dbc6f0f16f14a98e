// Leak tests: a training loop inside tidy() must leave the native handle table exactly as it found it, and the
// process's resident memory must stop growing once the allocator has warmed up. liveTensors() alone cannot see
// memory held outside the handle table (autograd graphs, storages kept by views, allocator retention), hence RSS.
// docs/MEMORY.md explains the numbers and the glibc behaviour behind them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';

type Tensor = torch.Tensor;
const MB = 2 ** 20;
const rss = () => process.memoryUsage.rss();

// 32 → 256 → 10 with a ReLU: [256, 256] float32 activations are 256 KB, above glibc's initial 128 KB mmap
// threshold, so the loop exercises both the mmap path and the heap path that the dynamic threshold switches to.
function mlp(seed: number): Tensor[] {
  torch.manualSeed(seed);
  return torch.tidy(() => {
    const ps = [torch.randn([32, 256]).mul(0.15), torch.zeros([256]), torch.randn([256, 10]).mul(0.06), torch.zeros([10])];
    for (const p of ps) p.requiresGrad_(true);
    return torch.keep(ps);
  });
}

function step(ps: Tensor[], x: Tensor, y: Tensor, lr: number): number {
  return torch.tidy(() => {
    const h = x.matmul(ps[0]).add(ps[1]).relu();
    const logits = h.matmul(ps[2]).add(ps[3]);
    const loss = torch.crossEntropy(logits, y);
    loss.backward();
    torch.noGrad(() => {
      for (const p of ps) {
        p.sub_(p.grad!, lr);
        p.grad = null;
      }
    });
    return loss.item();
  });
}

test('1,000 MLP training steps: handle count exactly flat, RSS bounded, loss goes down', () => {
  const ps = mlp(0);
  const [x, y] = torch.tidy(() => torch.keep([torch.randn([256, 32]), torch.randint(0, 10, [256])]));
  const warmup = 50;
  let first = 0;
  for (let i = 0; i < warmup; i++) {
    const l = step(ps, x, y, 0.1);
    if (i === 0) first = l;
  }
  const live = torch.liveTensors();
  const rss0 = rss();
  let peak = rss0;
  let last = 0;
  for (let i = 0; i < 1000; i++) {
    last = step(ps, x, y, 0.1);
    if (i % 50 === 0) {
      assert.equal(torch.liveTensors(), live, `live tensors changed at step ${i}`);
      peak = Math.max(peak, rss());
    }
  }
  const growth = (Math.max(peak, rss()) - rss0) / MB;
  assert.equal(torch.liveTensors(), live);
  assert.ok(growth < 100, `RSS grew by ${growth.toFixed(1)} MB after warm-up`);
  assert.ok(last < first * 0.5, `loss went from ${first} to ${last}`);
  torch.dispose([...ps, x, y]);
  assert.equal(torch.liveTensors(), live - 6);
});

test('4 MB temporaries of varying size: RSS stays bounded after warm-up', () => {
  // The allocation pattern of docs/MEMORY.md: each step allocates and frees several [L, 1024] float32 tensors with
  // L changing every step (2-6 MB), which is where glibc's heap would fragment if anything were kept.
  let seed = 7;
  const nextL = () => 512 + ((seed = (seed * 16807) % 2147483647) % 1024);
  const w = torch.tidy(() => torch.keep(torch.randn([1024])));
  const run = (steps: number) => {
    for (let i = 0; i < steps; i++) torch.tidy(() => torch.full([nextL(), 1024], 0.5).mul(2).add(w).exp().sum().item());
  };
  run(100);
  const live = torch.liveTensors();
  const rss0 = rss();
  let peak = rss0;
  for (let k = 0; k < 10; k++) {
    run(50);
    peak = Math.max(peak, rss());
  }
  const growth = (peak - rss0) / MB;
  assert.equal(torch.liveTensors(), live);
  assert.ok(growth < 100, `RSS grew by ${growth.toFixed(1)} MB over 500 steps after warm-up`);
  w.dispose();
});

test('errors inside tidy release what the step made', () => {
  const live = torch.liveTensors();
  const rss0 = rss();
  for (let i = 0; i < 100; i++) {
    assert.throws(() =>
      torch.tidy(() => {
        const a = torch.randn([128, 128]);
        a.matmul(a).relu();
        return a.matmul(torch.ones([3, 3])); // shape error after a few allocations
      }),
    );
  }
  assert.equal(torch.liveTensors(), live);
  assert.ok((rss() - rss0) / MB < 50);
});

test('V8 is told about native memory in step with the handle table', () => {
  // Only tensors the garbage collector owns (made outside a scope, or kept) are reported through
  // napi_adjust_external_memory, and a release takes back exactly what its handle reported: the total must not drift
  // under autograd (it used to, by -4 MB per step, docs/MEMORY.md), and temporaries inside tidy() are not counted.
  const e0 = torch.native.externalBytes();
  const big = torch.zeros([1024, 1024]); // 4 MB, GC-owned
  assert.ok(torch.native.externalBytes() - e0 >= 4 * MB);
  torch.tidy(() => void torch.zeros([2048, 1024]).add(1));
  big.dispose();
  assert.equal(torch.native.externalBytes(), e0);
  const ps = mlp(1);
  const [x, y] = torch.tidy(() => torch.keep([torch.randn([256, 32]), torch.randint(0, 10, [256])]));
  step(ps, x, y, 0.01);
  const before = torch.native.externalBytes();
  for (let i = 0; i < 50; i++) step(ps, x, y, 0.01);
  const drift = (torch.native.externalBytes() - before) / MB;
  torch.dispose([...ps, x, y]);
  assert.ok(Math.abs(drift) < 1, `external memory drifted by ${drift.toFixed(1)} MB over 50 steps`);
});
