// GradReducer (c10d's Reducer: gradient all-reduce during backward) against the post-backward reduceGradients, with
// two real ranks on loopback (fixtures/dist-reducer-worker.ts): one backward, gradient accumulation over three
// micro-batches with a parameter only the first one uses, a parameter only rank 0 uses, one no rank uses, a second
// round, and backwards outside a round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { runRank } from './helpers.js';

const WORKER = new URL('./fixtures/dist-reducer-worker.ts', import.meta.url).pathname;
const skip = torch.distributed.available().reducer ? false : 'this build of @retain/torch has no c10d::Reducer';

async function rankResult(rank: number, port: number): Promise<Record<string, any>> {
  const r = await runRank(WORKER, rank, port);
  if (r.code !== 0) throw new Error(`rank ${rank} exited ${r.code}: ${r.err}`);
  return r.out!;
}

type G = (number[] | null)[];
const NAMES = ['w1', 'w2', 'early', 'rank0', 'never'];

test('GradReducer sums gradients during backward exactly as reduceGradients does after it', { skip }, async () => {
  const port = await torch.distributed.freePort();
  const [r0, r1] = await Promise.all([rankResult(0, port), rankResult(1, port)]);
  assert.ok(r0.buckets >= 3, `several buckets, got ${r0.buckets}`);
  for (const sc of ['one', 'accum3', 'again']) {
    for (const r of [r0, r1]) {
      const { overlap, post } = r[sc] as { overlap: G; post: G };
      // Same gradients as the post-backward path (same sums in the same order: bit-equal), null where it has null.
      NAMES.forEach((n, i) => assert.deepEqual(overlap[i], post[i], `${sc}, rank ${r.rank}: ${n}`));
    }
    NAMES.forEach((n, i) => assert.deepEqual((r0[sc] as { overlap: G }).overlap[i], (r1[sc] as { overlap: G }).overlap[i], `${sc}: ${n} equal on both ranks`));
    const g = (r0[sc] as { overlap: G }).overlap;
    assert.equal(g[NAMES.indexOf('never')], null, `${sc}: a parameter no rank used keeps grad null`);
    assert.notEqual(g[NAMES.indexOf('rank0')], null, `${sc}: a parameter one rank used gets that rank's gradient on every rank`);
  }
  // accum3: `early` is used by the first micro-batch only, so the reduction round's graph does not reach it.
  assert.notEqual((r1.accum3 as { overlap: G }).overlap[NAMES.indexOf('early')], null);
  // Outside a round (and after dispose) backward leaves local gradients: rank 1 never uses `rank0`.
  for (const k of ['idle', 'disposed']) {
    assert.notEqual(r0[k][NAMES.indexOf('rank0')], null);
    assert.equal(r1[k][NAMES.indexOf('rank0')], null);
    assert.notDeepEqual(r0[k][0], r1[k][0], `${k}: w1's gradient is this rank's own`);
  }
});
