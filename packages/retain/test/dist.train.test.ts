// Data-parallel training (train/dist.ts, native/dist.cc): real worker processes on loopback through c10d/Gloo.
// Two ranks must train the same weights as one process on the same global batch, for standard fine-tuning and for
// FLOW + mixing, SAM, EWC + MoFO with the forgetting monitor's rollback; batch-norm statistics must agree across
// ranks; a rank killed with SIGKILL must end the other with an error, not a hang; a killed run resumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { checkDistConfig, distSettings, freePort, launchWorkers, rankDevice, shardRange, workerThreads } from '../src/train/dist.js';
import { DEFAULT_MODEL, prepareDemoData } from '../src/suite/demo.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const ASSETS = new URL('../assets/stories260K/', import.meta.url).pathname;
const skip = torch.distributed.available().c10d ? false : 'this build of @retain/torch has no c10d/Gloo';

function makeRun(training: Record<string, unknown> = {}, methods: unknown[] = []): { dir: string; cfg: string } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-dist-'));
  const rows = Array.from({ length: 24 }, (_, i) => ({ prompt: `Tom had ${i % 7} apples and got ${(i * 3) % 5} more. Now Tom has`, completion: ` ${(i % 7) + ((i * 3) % 5)} apples.` }));
  writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const general = Array.from({ length: 10 }, (_, i) => ({ text: `Once upon a time there was a ${['cat', 'dog', 'bird', 'girl', 'boy'][i % 5]} who liked to ${['run', 'play', 'sing'][i % 3]} in the park.` }));
  writeFileSync(join(dir, 'general.jsonl'), general.map((r) => JSON.stringify(r)).join('\n'));
  const cfg = {
    model: { path: join(ASSETS, 'stories260K.bin'), tokenizer: join(ASSETS, 'tok512.bin') },
    data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: 6, batch_size: 4, lr: 0.002, schedule: 'cosine', warmup_steps: 1, seed: 1, threads: 1, save_every: 2, ...training },
    output_dir: 'out',
    methods,
  };
  const path = join(dir, 'train.yaml');
  writeFileSync(path, JSON.stringify(cfg));
  return { dir, cfg: path };
}

const ENV = { RETAIN_DIST_TIMEOUT: '30' };

function retain(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...ENV, ...env }, timeout: 120_000 });
}

/** Largest |a − b| / max|a| over the tensors of two safetensors files (same names required). */
function maxRelDiff(fa: string, fb: string): number {
  const a = torch.io.loadSafetensors(fa);
  const b = torch.io.loadSafetensors(fb);
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let worst = 0;
  for (const [k, ta] of a) {
    const x = ta.to({ dtype: 'float64' }).data() as Float64Array;
    const y = b.get(k)!.to({ dtype: 'float64' }).data() as Float64Array;
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < x.length; i++) {
      scale = Math.max(scale, Math.abs(x[i]));
      diff = Math.max(diff, Math.abs(x[i] - y[i]));
    }
    worst = Math.max(worst, diff / Math.max(scale, 1e-12));
  }
  torch.dispose([...a.values(), ...b.values()]);
  return worst;
}

function losses(dir: string): number[] {
  return readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.loss !== undefined).map((r) => r.loss);
}

const finalWeights = (dir: string) => join(dir, 'out', 'final', 'model.safetensors');

test('shardRange splits a batch into disjoint contiguous rows that cover it', () => {
  for (const [n, w] of [[8, 2], [7, 2], [1, 2], [10, 3], [4, 4]]) {
    const rows: number[] = [];
    for (let r = 0; r < w; r++) {
      const [lo, hi] = shardRange(n, r, w);
      for (let i = lo; i < hi; i++) rows.push(i);
    }
    assert.deepEqual(rows, Array.from({ length: n }, (_, i) => i), `n=${n} world=${w}`);
  }
});

test('under NCCL each rank takes its own GPU (cuda → cuda:LOCAL_RANK); an explicit device and Gloo ranks stay as configured', () => {
  assert.equal(rankDevice('cuda', 3, 'nccl'), 'cuda:3');
  assert.equal(rankDevice('cuda:1', 0, 'nccl'), 'cuda:1');
  assert.equal(rankDevice('cpu', 1, 'gloo'), 'cpu');
});

test('workers share the cores unless OMP_NUM_THREADS says otherwise', () => {
  assert.deepEqual(workerThreads(2, 16, {}), { threads: 8, fromEnv: false });
  assert.deepEqual(workerThreads(3, 2, {}), { threads: 1, fromEnv: false }, 'never below one');
  assert.deepEqual(workerThreads(2, 16, { OMP_NUM_THREADS: '3' }), { threads: 3, fromEnv: true });
  assert.deepEqual(workerThreads(2, 16, { OMP_NUM_THREADS: 'lots' }), { threads: 8, fromEnv: false }, 'an unusable value is ignored');
});

test('retain train refuses bad data-parallel settings before training', { skip }, () => {
  const { dir, cfg } = makeRun({ batch_size: 5 });
  // Through the CLI once; the other refusals come from the same checks, called directly.
  const odd = retain(['train', cfg, '--nproc', '2']);
  assert.equal(odd.status, 1);
  assert.match(odd.stderr, /batch_size 5 is the global batch and must divide evenly over 2 processes/);
  assert.ok(!existsSync(join(dir, 'out', 'metrics.jsonl')), 'nothing trained');
  const c = { model: { device: 'cpu' }, training: { batch_size: 4 } };
  assert.throws(() => checkDistConfig(c, 0), /--nproc must be a positive integer/);
  assert.equal(checkDistConfig(c, 2), 'gloo');
  if (!torch.distributed.available().nccl) assert.throws(() => checkDistConfig({ ...c, model: { device: 'cuda' } }, 2), /model\.device is cuda but this build has no NCCL/);
  assert.throws(() => distSettings({}, { WORLD_SIZE: '2' }), /world size is 2 but this process has no rank/);
  assert.throws(() => distSettings({ rank: 2, worldSize: 2 }), /rank 2 is outside 0\.\.1/);
  assert.equal(distSettings({}, {}), null, 'one process: no group');
  assert.equal(distSettings({ rank: 0, worldSize: 1 }), null);
  assert.throws(() => distSettings({ rank: 1, worldSize: 1 }), /rank 1 is outside 0\.\.0: the world size is 1/);
  assert.deepEqual(distSettings({}, { WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29511', RETAIN_DIST_TIMEOUT: '7' }), { rank: 1, worldSize: 2, masterAddr: '10.0.0.1', masterPort: 29511, timeoutMs: 7000, backend: 'gloo', overlap: true, bucketBytes: 25 * 2 ** 20 });
  const off = distSettings({}, { WORLD_SIZE: '2', RANK: '0', RETAIN_DIST_OVERLAP: '0', RETAIN_DIST_BUCKET_MB: '0.5' })!;
  assert.deepEqual([off.overlap, off.bucketBytes], [false, 2 ** 19]);
  assert.throws(() => distSettings({}, { WORLD_SIZE: '2', RANK: '0', RETAIN_DIST_BUCKET_MB: '-1' }), /RETAIN_DIST_BUCKET_MB must be a positive number/);
  rmSync(dir, { recursive: true, force: true });
});

test('standard fine-tuning: 2 ranks train the weights of 1 process on the same global batch; a killed 2-rank run resumes', { skip }, () => {
  const one = makeRun();
  const two = makeRun();
  const t0 = performance.now();
  const r1 = retain(['train', one.cfg]);
  assert.equal(r1.status, 0, r1.stderr);
  const t1 = performance.now();
  const r2 = retain(['train', two.cfg, '--nproc', '2']);
  assert.equal(r2.status, 0, r2.stderr);
  const t2 = performance.now();
  // The launcher says who does what; only rank 0 prints the result and writes files.
  assert.match(r2.stderr, /rank 0: rows 0\.\.1 of every global batch of 4; writes checkpoints/);
  assert.match(r2.stderr, /rank 1: rows 2\.\.3 of every global batch of 4/);
  assert.equal(r2.stdout.trim().split('\n').length, 1, r2.stdout);
  assert.match(r2.stdout, /"world_size":2/);
  const rel = maxRelDiff(finalWeights(one.dir), finalWeights(two.dir));
  console.log(`dist FT: 1 process ${((t1 - t0) / 1000).toFixed(1)} s, 2 ranks ${((t2 - t1) / 1000).toFixed(1)} s, max relative weight difference ${rel.toExponential(2)}`);
  assert.ok(rel < 1e-5, `weights differ by ${rel} (relative)`);
  const l1 = losses(one.dir);
  const l2 = losses(two.dir);
  assert.equal(l2.length, 6, 'one metrics line per step, from rank 0 only');
  l1.forEach((v, i) => assert.ok(Math.abs(v - l2[i]) < 1e-5 * Math.max(1, Math.abs(v)), `step ${i + 1}: loss ${l2[i]} vs ${v}`));

  // Kill rank 1 after step 3: the launcher reports it and fails; rank 0 ends with an error instead of waiting.
  const killed = makeRun();
  const k = retain(['train', killed.cfg, '--nproc', '2'], { RETAIN_KILL_AT_STEP: '3', RETAIN_KILL_RANK: '1' });
  assert.equal(k.status, 1, k.stderr);
  assert.match(k.stderr, /rank 1 was killed by SIGKILL/);
  assert.match(k.stderr, /data-parallel run failed/);
  assert.ok(!existsSync(finalWeights(killed.dir)));
  assert.ok(readdirSync(join(killed.dir, 'out')).includes('checkpoint-2'));
  const resumed = retain(['train', killed.cfg, '--nproc', '2']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /"resumed_from":2/);
  assert.ok(readFileSync(finalWeights(killed.dir)).equals(readFileSync(finalWeights(two.dir))), 'the resumed 2-rank run ends bit-identical to the uninterrupted one');
  for (const r of [one, two, killed]) rmSync(r.dir, { recursive: true, force: true });
});

test('FLOW + mixing: 2 ranks give the weights of 1 process (weights and composition per global batch)', { skip }, () => {
  const methods = [
    { name: 'flow', normalize: 'mean', batch_size: 5 },
    { name: 'mixing', ratio: '3:1', general: { path: 'general.jsonl', format: { type: 'text' }, max_length: 64, name: 'stories' } },
  ];
  const one = makeRun({ batch_size: 8, max_steps: 5, grad_accum: 2 }, methods);
  const two = makeRun({ batch_size: 8, max_steps: 5, grad_accum: 2 }, methods);
  // Method data paths resolve against the working directory.
  const r1 = spawnSync(process.execPath, [CLI, 'train', one.cfg], { encoding: 'utf8', cwd: one.dir, env: { ...process.env, ...ENV }, timeout: 120_000 });
  assert.equal(r1.status, 0, r1.stderr);
  const r2 = spawnSync(process.execPath, [CLI, 'train', two.cfg, '--nproc', '2'], { encoding: 'utf8', cwd: two.dir, env: { ...process.env, ...ENV }, timeout: 120_000 });
  assert.equal(r2.status, 0, r2.stderr);
  const rel = maxRelDiff(finalWeights(one.dir), finalWeights(two.dir));
  console.log(`dist FLOW+mixing: max relative weight difference ${rel.toExponential(2)}`);
  assert.ok(rel < 1e-5, `weights differ by ${rel} (relative)`);
  // Same FLOW weights and the same mixing shares per step as one process.
  const lines = (d: string) => readFileSync(join(d, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const a = lines(one.dir);
  const b = lines(two.dir);
  const flowA = a.find((r) => r.kind === 'flow');
  const flowB = b.find((r) => r.kind === 'flow');
  assert.equal(flowB.flow_tau, flowA.flow_tau);
  assert.equal(flowB.flow_weight_mean, flowA.flow_weight_mean);
  const shares = (rs: Record<string, unknown>[]) => rs.filter((r) => r.kind === 'mixing' && r.samples_stories !== undefined).map((r) => [r.samples_stories, r.tokens_stories, r.tokens_train]);
  assert.deepEqual(shares(b), shares(a));
  assert.equal(shares(a).length, 5);
  assert.deepEqual(shares(a)[0].slice(0, 1), [4], '3:1 of 8, two micro-batches: 2 general samples each');
  for (const r of [one, two]) rmSync(r.dir, { recursive: true, force: true });
});

test('SAM (two reducing backwards per step), gradients summed during backward and after it: 2 ranks give the weights of 1 process', { skip }, () => {
  // Small buckets, so that several all-reduces are launched from inside each backward.
  const training = { batch_size: 4, max_steps: 4 };
  const one = makeRun(training, [{ name: 'sam', rho: 0.05 }]);
  const on = makeRun(training, [{ name: 'sam', rho: 0.05 }]);
  const off = makeRun(training, [{ name: 'sam', rho: 0.05 }]);
  const r1 = retain(['train', one.cfg]);
  assert.equal(r1.status, 0, r1.stderr);
  const rOn = retain(['train', on.cfg, '--nproc', '2'], { RETAIN_DIST_BUCKET_MB: '0.25' });
  assert.equal(rOn.status, 0, rOn.stderr);
  const rOff = retain(['train', off.cfg, '--nproc', '2'], { RETAIN_DIST_OVERLAP: '0', RETAIN_DIST_BUCKET_MB: '0.25' });
  assert.equal(rOff.status, 0, rOff.stderr);
  assert.match(rOn.stderr, /rank 1: gradients summed during backward \(c10d Reducer, 0\.25 MiB buckets\)/);
  assert.match(rOff.stderr, /rank 1: gradients summed after backward \(reduceGradients, 0\.25 MiB buckets\)/);
  const relOn = maxRelDiff(finalWeights(one.dir), finalWeights(on.dir));
  const relOff = maxRelDiff(finalWeights(one.dir), finalWeights(off.dir));
  console.log(`dist SAM: max relative weight difference ${relOn.toExponential(2)} (overlapped), ${relOff.toExponential(2)} (after backward)`);
  assert.ok(relOn < 1e-5, `overlapped: weights differ by ${relOn} (relative)`);
  assert.ok(relOff < 1e-5, `after backward: weights differ by ${relOff} (relative)`);
  // The two 2-rank paths sum the same numbers in the same order (rank 0's + rank 1's, per element).
  assert.ok(readFileSync(finalWeights(on.dir)).equals(readFileSync(finalWeights(off.dir))), 'overlapped and post-backward sums give identical weights');
  for (const r of [one, on, off]) rmSync(r.dir, { recursive: true, force: true });
});

test('EWC + MoFO with the forgetting monitor: 2 ranks give the weights of 1 process; only rank 0 probes, and every rank rolls back together', { skip }, () => {
  const mk = () => {
    const dir = mkdtempSync(join(tmpdir(), 'retain-dist-mon-'));
    const d = prepareDemoData(dir, { trainSize: 64, testSize: 12, seed: 0 });
    writeFileSync(join(dir, 'general.jsonl'), readFileSync(join(ASSETS, '..', 'data', 'tinystories-replay.txt'), 'utf8').split(/\n\s*\n/).slice(0, 16).map((t) => JSON.stringify({ text: t.trim() })).join('\n'));
    const cfg = {
      model: { path: DEFAULT_MODEL },
      data: { train: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64 } },
      // A learning rate at which the general probe stays within the budget for a few steps, then falls past it (one
      // process: within at step 4, 2.26 points; past at step 6, 4.29), so the rollback restores a trained state.
      training: { max_steps: 12, batch_size: 8, lr: 0.001, schedule: 'constant', seed: 0, threads: 1 },
      methods: [
        { name: 'ewc', lambda: 50, data: { path: join(dir, 'general.jsonl'), format: { type: 'text' }, max_length: 64 }, fisher_samples: 8, fisher_batch_size: 2 },
        { name: 'mofo', alpha: 0.2 },
      ],
      monitor: { tasks: [join(dir, 'data', 'tasks.yaml')], target: ['arithmetic'], limit: 12, every: 2, max_forgetting: 3, on_exceed: 'rollback' },
      output_dir: join(dir, 'out'),
    };
    writeFileSync(join(dir, 'train.yaml'), JSON.stringify(cfg));
    return { dir, cfg: join(dir, 'train.yaml') };
  };
  const one = mk();
  const two = mk();
  const r1 = retain(['train', one.cfg]);
  assert.equal(r1.status, 0, r1.stderr);
  const r2 = retain(['train', two.cfg, '--nproc', '2']);
  assert.equal(r2.status, 0, r2.stderr);
  const rel = maxRelDiff(finalWeights(one.dir), finalWeights(two.dir));
  console.log(`dist EWC+MoFO+monitor: max relative weight difference ${rel.toExponential(2)}`);
  assert.ok(rel < 1e-5, `weights differ by ${rel} (relative)`);
  // The same stop and rollback as one process, announced once (rank 0), and probe lines once per probed step.
  const stop = (s: string) => s.match(/retain: forgetting [\d.]+ exceeded max_forgetting 3 at step (\d+); rolled the weights back to step (\d+)/g) ?? [];
  assert.equal(stop(r1.stderr).length, 1, r1.stderr);
  assert.deepEqual(stop(r2.stderr), stop(r1.stderr), r2.stderr);
  const [, stoppedAt, rolledBackTo] = /at step (\d+); rolled the weights back to step (\d+)/.exec(r1.stderr)!.map(Number);
  assert.ok(rolledBackTo > 0 && stoppedAt > rolledBackTo, `rolled back from ${stoppedAt} to ${rolledBackTo}: the kept state must be a trained one`);
  const probed = (s: string) => (s.match(/^monitor @(\d+):/gm) ?? []);
  assert.equal(probed(r1.stderr).length, stoppedAt / 2 + 1);
  assert.deepEqual(probed(r2.stderr), probed(r1.stderr), 'rank 1 does not probe: one line per probed step');
  // Rank 0's probes measure what one process measures (up to float summation order).
  const mon = (d: string) => readFileSync(join(d, 'out', 'monitor.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const [a, b] = [mon(one.dir), mon(two.dir)];
  assert.equal(b.length, a.length);
  a.forEach((p, i) => {
    assert.deepEqual([b[i].step, b[i].task, b[i].metric], [p.step, p.task, p.metric]);
    assert.ok(Math.abs(b[i].value - p.value) <= 1e-6 * Math.max(1, Math.abs(p.value)), `${p.task} @${p.step}: ${b[i].value} vs ${p.value}`);
  });
  for (const r of [one, two]) rmSync(r.dir, { recursive: true, force: true });
});

test('BatchNorm running statistics: every forward starts from rank 0\'s buffers, as under DDP, and the replicas agree after training', { skip }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-dist-bn-'));
  const child = new URL('./dist.bn.child.ts', import.meta.url).pathname;
  const code = await launchWorkers({ nproc: 2, args: ['--import', 'tsx', child, out], timeoutS: 30, log: () => {} });
  assert.equal(code, 0, 'both ranks finished');
  const [r0, r1] = [0, 1].map((r) => JSON.parse(readFileSync(join(out, `rank${r}.json`), 'utf8')) as Record<string, number[]>);
  assert.deepEqual(Object.keys(r1), Object.keys(r0));
  for (const k of ['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']) assert.ok(k in r0, k);
  for (const k of Object.keys(r0)) assert.deepEqual(r1[k], r0[k], `${k} differs between the ranks`);
  // 3 steps of 2 micro-batches: the statistics moved, by 6 updates.
  assert.deepEqual(r0['bn.num_batches_tracked'], [6]);
  assert.ok(r0['bn.running_mean'].some((v) => v !== 0), 'the running mean moved');
  rmSync(out, { recursive: true, force: true });
});

test('SIGKILL of one rank ends the other with a clear error within the timeout (ranks launched by hand, as on two machines)', { skip }, async () => {
  const { dir, cfg } = makeRun({ max_steps: 200, save_every: null });
  const port = await freePort();
  const start = (rank: number) => spawn(process.execPath, [CLI, 'train', cfg, '--rank', String(rank), '--world-size', '2', '--master-addr', '127.0.0.1', '--master-port', String(port), '--dist-timeout', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const r0 = start(0);
  const r1 = start(1);
  let err0 = '';
  r0.stderr!.on('data', (d) => (err0 += d));
  r1.stderr!.resume();
  const exit0 = new Promise<{ code: number | null; at: number }>((res) => r0.on('exit', (code) => res({ code, at: performance.now() })));
  // Kill rank 1 once training is under way (rank 0's metrics have a step).
  const metrics = join(dir, 'out', 'metrics.jsonl');
  const deadline = performance.now() + 60_000;
  while (!(existsSync(metrics) && /"loss"/.test(readFileSync(metrics, 'utf8')))) {
    assert.ok(performance.now() < deadline, `training did not start: ${err0}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const killedAt = performance.now();
  r1.kill('SIGKILL');
  const timer = setTimeout(() => r0.kill('SIGKILL'), 60_000);
  const { code, at } = await exit0;
  clearTimeout(timer);
  const seconds = (at - killedAt) / 1000;
  console.log(`dist SIGKILL: rank 0 exited ${seconds.toFixed(2)} s after rank 1 was killed`);
  assert.equal(code, 1, err0);
  assert.ok(seconds < 25, `rank 0 took ${seconds} s to notice`);
  assert.match(err0, /c10d allreduce failed on rank 0 of 2: .*(Connection closed by peer|Connection reset|Broken pipe|Timed out)/i);
  assert.match(err0, /retain: rank 0 of 2 failed/);
  rmSync(dir, { recursive: true, force: true });
});
