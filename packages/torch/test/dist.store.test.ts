// storeSet/storeGet: one rank's decision reaches the others through the rendezvous TCPStore with a deadline of its
// own, so the others can wait out a computation longer than the group's collective timeout (the forgetting monitor's
// probes on rank 0); a writer that dies ends the wait with an error instead of leaving it to the deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { runRank } from './helpers.js';

const WORKER = new URL('./fixtures/dist-store-worker.ts', import.meta.url).pathname;
const skip = torch.distributed.available().c10d ? false : 'this build of @retain/torch has no c10d';

test('storeGet waits past the group timeout for a value rank 0 publishes late, and returns it exactly', { skip }, async () => {
  const port = await torch.distributed.freePort();
  const [r0, r1] = await Promise.all([runRank(WORKER, 0, port, { MODE: 'ok' }), runRank(WORKER, 1, port, { MODE: 'ok' })]);
  assert.equal(r0.code, 0, r0.err);
  assert.equal(r1.code, 0, r1.err);
  assert.equal(r1.out!.value, JSON.stringify({ stop: true, forgetting: 0.1 + 0.2 }));
  assert.ok(r1.out!.waitedMs > 2_000, `waited ${r1.out!.waitedMs} ms, past the 2 s group timeout`);
});

test('storeGet ends with an error naming the rank when the writer dies without publishing', { skip }, async () => {
  const port = await torch.distributed.freePort();
  const [r0, r1] = await Promise.all([runRank(WORKER, 0, port, { MODE: 'die' }), runRank(WORKER, 1, port, { MODE: 'die' })]);
  assert.equal(r0.code, 3);
  assert.match(r1.out!.error, /c10d store get failed on rank 1 of 2/);
  assert.ok(r1.out!.waitedMs < 25_000, `the wait ended ${r1.out!.waitedMs} ms in, not at its 30 s deadline`);
});
