// storeSet/storeGet: one rank's decision reaches the others through the rendezvous TCPStore with a deadline of its
// own, so the others can wait out a computation longer than the group's collective timeout (the forgetting monitor's
// probes on rank 0); a writer that dies ends the wait with an error instead of leaving it to the deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import * as torch from '../src/index.js';

const WORKER = new URL('./fixtures/dist-store-worker.ts', import.meta.url).pathname;
const skip = torch.distributed.available().c10d ? false : 'this build of @retain/torch has no c10d';

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function runRank(rank: number, port: number, mode: string): Promise<{ code: number | null; out: Record<string, any> | null; err: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, ['--import', 'tsx', WORKER], { env: { ...process.env, RANK: String(rank), MASTER_PORT: String(port), MODE: mode } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop();
      res({ code, out: last ? JSON.parse(last) : null, err });
    });
  });
}

test('storeGet waits past the group timeout for a value rank 0 publishes late, and returns it exactly', { skip }, async () => {
  const port = await freePort();
  const [r0, r1] = await Promise.all([runRank(0, port, 'ok'), runRank(1, port, 'ok')]);
  assert.equal(r0.code, 0, r0.err);
  assert.equal(r1.code, 0, r1.err);
  assert.equal(r1.out!.value, JSON.stringify({ stop: true, forgetting: 0.1 + 0.2 }));
  assert.ok(r1.out!.waitedMs > 2_000, `waited ${r1.out!.waitedMs} ms, past the 2 s group timeout`);
});

test('storeGet ends with an error naming the rank when the writer dies without publishing', { skip }, async () => {
  const port = await freePort();
  const [r0, r1] = await Promise.all([runRank(0, port, 'die'), runRank(1, port, 'die')]);
  assert.equal(r0.code, 3);
  assert.match(r1.out!.error, /c10d store get failed on rank 1 of 2/);
  assert.ok(r1.out!.waitedMs < 25_000, `the wait ended ${r1.out!.waitedMs} ms in, not at its 30 s deadline`);
});
