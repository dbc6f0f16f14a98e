// Runs that survive their environment (issue #21), through the real `retain train` CLI on stories260K: one run per
// output_dir, a stop signal ending the run after a checkpoint with status 75 and a resume bit-identical to an
// uninterrupted run (a second signal mid-save keeps the checkpoint before), a full disk while a checkpoint or final/
// is written (injected, and on a real small tmpfs where this user may mount one), and a stop signal under --nproc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { loadCheckpoint, removeStaleTemps } from '../src/train/checkpoint.js';
import { lossesOf, leftovers, makeRun } from './preempt.fixtures.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const noDist = torch.distributed.available().c10d ? false : 'this build of @retain/torch has no c10d/Gloo';

function retain(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, RETAIN_DIST_TIMEOUT: '30', ...env }, timeout: 120_000 });
}

const weights = (out: string) => readFileSync(join(out, 'final', 'model.safetensors'));
/** The output folder's checkpoints, logs and temporary files (results.json, written or not, left out). */
// results.json and run_config.yaml (the settings, saved by retain train) are not checkpoint state; metrics.csv and the
// TensorBoard events are made from metrics.jsonl (train.metrics tests).
const listing = (out: string) => readdirSync(out).filter((f) => f !== 'results.json' && f !== 'run_config.yaml' && f !== 'metrics.csv' && !f.startsWith('events.out.tfevents.')).sort();

let reference: { out: string; weights: Buffer; losses: number[] } | null = null;
/** The uninterrupted run every interrupted one must equal (made once). */
function uninterrupted() {
  if (!reference) {
    const a = makeRun();
    const r = retain(['train', a.cfg]);
    assert.equal(r.status, 0, r.stderr);
    reference = { out: a.out, weights: weights(a.out), losses: lossesOf(a.out) };
  }
  return reference;
}

/** Reruns until done and checks the result against the uninterrupted run. */
function resumeAndCompare(b: { cfg: string; out: string }, from: number) {
  const resumed = retain(['train', b.cfg]);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, new RegExp(`"resumed_from":${from}`));
  assert.ok(weights(b.out).equals(uninterrupted().weights), 'the resumed run ends bit-identical to the uninterrupted one');
  assert.deepEqual(lossesOf(b.out), uninterrupted().losses);
  assert.deepEqual(leftovers(b.out), []);
}

test('SIGTERM, SIGINT and SIGUSR1 end the run after the current step with a checkpoint and status 75; the rerun is bit-identical', () => {
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGUSR1']) {
    const b = makeRun();
    const r = retain(['train', b.cfg], { RETAIN_FAULT: `step-3:${sig}` });
    assert.equal(r.status, 75, r.stderr);
    assert.match(r.stderr, new RegExp(`retain: ${sig} received: finishing this step, then writing a checkpoint and exiting with status 75`));
    assert.match(r.stderr, new RegExp(`retain: stopped by ${sig} after step 3, checkpoint written; exit status 75: rerun the same command to resume`));
    const res = JSON.parse(r.stdout);
    assert.deepEqual({ ...res, final_loss: +res.final_loss.toFixed(6) }, { steps: 3, final_loss: uninterrupted().losses[2], resumed_from: null, preempted: sig });
    // checkpoint-3 is the stop's own (save_every is 2); no final/ for an unfinished run; the lock is released.
    assert.deepEqual(listing(b.out), ['checkpoint-2', 'checkpoint-3', 'latest.json', 'metrics.jsonl']);
    resumeAndCompare(b, 3);
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test('a second signal while the stop checkpoint is written ends the run at once and keeps the checkpoint before', () => {
  const b = makeRun();
  const r = retain(['train', b.cfg], { RETAIN_FAULT: 'step-3:SIGTERM,checkpoint-3:SIGTERM' });
  assert.equal(r.signal, 'SIGTERM', r.stderr);
  assert.ok(existsSync(join(b.out, 'checkpoint-3.tmp', 'model.safetensors')), 'killed inside the write of checkpoint-3');
  assert.ok(!existsSync(join(b.out, 'checkpoint-3')));
  assert.equal(loadCheckpoint(join(b.out, 'checkpoint-2')).step, 2);
  resumeAndCompare(b, 2);
  rmSync(b.dir, { recursive: true, force: true });
});

test('a second run on an output_dir in use is refused, naming the holder; the first one finishes unharmed', async () => {
  const b = makeRun();
  // The first run stops itself (SIGSTOP) after step 1, holding the lock, until the test continues it.
  const first = spawn(process.execPath, [CLI, 'train', b.cfg], { env: { ...process.env, RETAIN_FAULT: 'step-1:SIGSTOP' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((res) => first.on('exit', (code) => res(code)));
  while (!existsSync(join(b.out, 'metrics.jsonl'))) await new Promise((res) => setTimeout(res, 50));
  await new Promise((res) => setTimeout(res, 300));
  const second = retain(['train', b.cfg, 'training.seed=2']);
  first.kill('SIGCONT');
  assert.equal(second.status, 1);
  // Refused before it wrote anything: the settings saved there are still the first run's.
  assert.match(readFileSync(join(b.out, 'run_config.yaml'), 'utf8'), /^ {2}seed: 1$/m);
  assert.match(second.stderr, new RegExp(`^retain: output_dir ${b.out.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is in use by process ${first.pid} on ${hostname()}, started \\S+ \\(train ${b.cfg}\\) \\(lock ${b.out}/\\.retain\\.lock\\); wait for that run to end or use another output`));
  assert.equal(await exited, 0);
  assert.ok(weights(b.out).equals(uninterrupted().weights));
  assert.deepEqual(lossesOf(b.out), uninterrupted().losses, 'one log line per step: the refused run wrote nothing');
  assert.deepEqual(leftovers(b.out), [], 'the lock is released at exit');
  rmSync(b.dir, { recursive: true, force: true });
});

test('a full disk while a checkpoint is written keeps the newest complete checkpoint (keep_checkpoints waits for the new one), removes the partial files and says how much space is needed', () => {
  const b = makeRun({ keep_checkpoints: 1 });
  const r = retain(['train', b.cfg], { RETAIN_FAULT: 'checkpoint-4:ENOSPC' });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^retain: no space left on the device writing checkpoint checkpoint-4 in ${b.out}: it needs about 3\\.\\d MB, [\\d.]+ [MG]B is free there\\. The partial files were removed and the newest complete checkpoint, checkpoint-2, is kept\\. Free some space \\(or lower keep_checkpoints, or move output_dir to a larger disk\\) and rerun the same command to resume\\.\\n$`, 'm'));
  assert.deepEqual(listing(b.out), ['checkpoint-2', 'latest.json', 'metrics.jsonl']);
  const r2 = retain(['train', b.cfg]);
  assert.equal(r2.status, 0, r2.stderr);
  assert.ok(weights(b.out).equals(uninterrupted().weights));
  // Injected at the final model: the checkpoints stay, and the rerun (nothing left to train) writes final/.
  const c = makeRun();
  const f = retain(['train', c.cfg], { RETAIN_FAULT: 'final:ENOSPC' });
  assert.equal(f.status, 1, f.stderr);
  assert.match(f.stderr, /^retain: no space left on the device writing the final model \S+\/final: it needs about 1\.\d MB, .* the newest complete checkpoint, checkpoint-6, is kept\./m);
  assert.ok(!existsSync(join(c.out, 'final')));
  resumeAndCompare(c, 6);
  rmSync(b.dir, { recursive: true, force: true });
  rmSync(c.dir, { recursive: true, force: true });
});

/** Mounts a tmpfs of `size` at `dir`; false where this user may not (not root, or no mount in the container). */
function mountTmpfs(dir: string, size: string): boolean {
  mkdirSync(dir, { recursive: true });
  return spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]).status === 0;
}
const canMount = (() => {
  const d = mkdtempSync(join(tmpdir(), 'retain-mnt-'));
  const ok = mountTmpfs(d, '1m');
  if (ok) spawnSync('umount', [d]);
  rmSync(d, { recursive: true, force: true });
  return ok ? false : 'cannot mount a tmpfs here (needs root in a container that allows mount)';
})();

test('on a real full disk (a 5 MB tmpfs) the checkpoint that does not fit is removed and the one before is kept', { skip: canMount }, () => {
  const b = makeRun({}, 'disk/out');
  const disk = join(b.dir, 'disk');
  assert.ok(mountTmpfs(disk, '5m'));
  try {
    const r = retain(['train', b.cfg]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^retain: no space left on the device writing checkpoint checkpoint-4 in \S+: it needs about 3\.\d MB, [\d.]+ MB is free there\. The partial files were removed and the newest complete checkpoint, checkpoint-2, is kept\./m);
    assert.deepEqual(listing(b.out), ['checkpoint-2', 'latest.json', 'metrics.jsonl']);
    assert.equal(loadCheckpoint(join(b.out, 'checkpoint-2')).step, 2);
  } finally {
    spawnSync('umount', [disk]);
  }
  rmSync(b.dir, { recursive: true, force: true });
});

test('--nproc 2: a signal to one rank stops both after the same step, status 75; the resumed run equals the uninterrupted 2-rank run bit for bit', { skip: noDist }, () => {
  const a = makeRun();
  const ra = retain(['train', a.cfg, '--nproc', '2']);
  assert.equal(ra.status, 0, ra.stderr);
  const b = makeRun();
  const rb = retain(['train', b.cfg, '--nproc', '2'], { RETAIN_FAULT: 'step-3@1:SIGTERM' });
  assert.equal(rb.status, 75, rb.stderr);
  assert.match(rb.stdout, /"steps":3,.*"preempted":"a signal to another rank"/);
  assert.deepEqual(listing(b.out), ['checkpoint-2', 'checkpoint-3', 'latest.json', 'metrics.jsonl']);
  const resumed = retain(['train', b.cfg, '--nproc', '2']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /"resumed_from":3/);
  assert.ok(weights(b.out).equals(weights(a.out)));
  assert.deepEqual(lossesOf(b.out), lossesOf(a.out));
  assert.deepEqual(leftovers(b.out), []);
  rmSync(a.dir, { recursive: true, force: true });
  rmSync(b.dir, { recursive: true, force: true });
});

test('--nproc 2: Ctrl-C in a terminal (SIGINT to the launcher\'s process group), or the terminal closing (SIGHUP), stops the run once, with a checkpoint and status 75', { skip: noDist }, async () => {
  for (const sig of ['SIGINT', 'SIGHUP'] as const) await groupSignal(sig);
});

async function groupSignal(sig: NodeJS.Signals): Promise<void> {
  const b = makeRun({ max_steps: 40, save_every: 100 });
  // The launcher leads a process group, as a shell's foreground job does; the terminal signals the whole group.
  const launcher = spawn(process.execPath, [CLI, 'train', b.cfg, '--nproc', '2'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RETAIN_DIST_TIMEOUT: '30' } });
  let stderr = '';
  let stdout = '';
  launcher.stdout!.on('data', (d) => (stdout += d));
  launcher.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((res) => launcher.on('exit', (code, signal) => res({ code, signal })));
  while (!/"step":2,/.test(existsSync(join(b.out, 'metrics.jsonl')) ? readFileSync(join(b.out, 'metrics.jsonl'), 'utf8') : '')) await new Promise((res) => setTimeout(res, 20));
  process.kill(-launcher.pid!, sig);
  const r = await exited;
  assert.equal(r.code, 75, `${sig}: ${stderr}`);
  const steps = JSON.parse(stdout).steps;
  assert.ok(steps >= 2 && steps < 40, stdout);
  assert.deepEqual(listing(b.out), [`checkpoint-${steps}`, 'latest.json', 'metrics.jsonl']);
  rmSync(b.dir, { recursive: true, force: true });
}

test('what a run killed mid-write leaves is removed by the next run, run_config.yaml\'s temporary file included', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-stale-'));
  const gone = spawnSync('true').pid!;
  const names = [`run_config.yaml.tmp-${gone}`, `latest.json.tmp-${gone}`, 'checkpoint-4.tmp'];
  for (const n of names) writeFileSync(join(dir, n), '');
  writeFileSync(join(dir, `run_config.yaml.tmp-${process.ppid}`), ''); // its writer is alive: left alone
  assert.deepEqual(removeStaleTemps(dir).sort(), [...names].sort());
  assert.deepEqual(readdirSync(dir), [`run_config.yaml.tmp-${process.ppid}`]);
  rmSync(dir, { recursive: true, force: true });
});

test.after(() => {
  if (reference) rmSync(join(reference.out, '..'), { recursive: true, force: true });
});
