// The run's metrics as TensorBoard events and CSV (train/metrics-files.ts, train/tfevents.ts): read back with the real
// tensorboard package of the reference environment, and followed through a resume as metrics.jsonl is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needRefenv, refPy } from '../../../bench/refenv.js';
import { crc32c, readRecords, eventStep } from '../src/train/tfevents.js';
import { MetricsFiles, scalarsOf } from '../src/train/metrics-files.js';
import { trimLogs } from '../src/train/checkpoint.js';

const refMissing = needRefenv('tensorboard');
type Line = Record<string, number | string>;

/** As the trainer logs: the line goes to metrics.jsonl, then to the other files. */
function log(dir: string, files: MetricsFiles | null, line: Line): void {
  appendFileSync(join(dir, 'metrics.jsonl'), JSON.stringify(line) + '\n');
  files?.add(line);
}

function trainLine(step: number, loss: number): Line {
  return { step, epoch: 0, loss, lr: 0.001 * step, tokens: 100 + step, grad_norm: loss / 3 };
}

const eventFiles = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('events.out.tfevents.'));

/** Every scalar TensorBoard's EventAccumulator reads from `dir`, by tag: [step, value, wall_time][]; and the file version. */
function tensorboardScalars(dir: string): { version: string; scalars: Record<string, [number, number, number][]>; canonical: boolean } {
  return refPy(`
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2
acc = event_accumulator.EventAccumulator(inp['dir'], size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
out['scalars'] = {t: [[e.step, e.value, e.wall_time] for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}
files = [f for f in os.listdir(inp['dir']) if 'tfevents' in f]
assert len(files) == 1, files
# The raw records, re-serialized by protobuf itself: the hand-made bytes must be the canonical encoding.
canonical = True
for i, raw in enumerate(event_file_loader.RawEventFileLoader(os.path.join(inp['dir'], files[0])).Load()):
    ev = event_pb2.Event.FromString(raw)
    if i == 0: out['version'] = ev.file_version
    if ev.SerializeToString() != raw: canonical = False
out['canonical'] = canonical
`, { dir });
}

test('CRC-32C matches the standard check value; scalars are tagged by kind', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.deepEqual(scalarsOf({ step: 3, loss: 1.5, lr: 0.1, note: 'x' }), [{ tag: 'train/loss', value: 1.5 }, { tag: 'train/lr', value: 0.1 }]);
  assert.deepEqual(scalarsOf({ step: 3, kind: 'eval', eval_loss: 2 }), [{ tag: 'eval/loss', value: 2 }]);
  assert.deepEqual(scalarsOf({ step: 3, kind: 'sam', sam_grad_norm: 0.5, mode: 'x' }), [{ tag: 'sam/grad_norm', value: 0.5 }]);
});

test('TensorBoard reads back every tag, step and value; metrics.csv has one header and one row per step', { skip: refMissing }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-metrics-'));
  const files = MetricsFiles.open(dir, { tensorboard: true, csv: true });
  const lines: Line[] = [{ step: 0, kind: 'lora', lora_r: 8, lora_note: 'q, "v"' }];
  for (let s = 1; s <= 5; s++) {
    lines.push(trainLine(s, 3 / s + 0.123456789));
    if (s % 2 === 0) lines.push({ step: s, kind: 'eval', eval_loss: 2.5 - s / 10 });
  }
  for (const l of lines) log(dir, files, l);

  const tb = tensorboardScalars(dir);
  assert.equal(tb.version, 'brain.Event:2');
  assert.ok(tb.canonical, 'protobuf re-serializes each record to the same bytes');
  assert.deepEqual(Object.keys(tb.scalars).sort(), ['eval/loss', 'lora/r', 'train/epoch', 'train/grad_norm', 'train/loss', 'train/lr', 'train/tokens']);
  // simple_value is a float32: the values are what Math.fround makes of the logged numbers.
  const want = (tag: string) => lines.flatMap((l) => scalarsOf(l).filter((s) => s.tag === tag).map((s) => [l.step, Math.fround(s.value)]));
  for (const tag of Object.keys(tb.scalars)) assert.deepEqual(tb.scalars[tag].map(([s, v]) => [s, v]), want(tag), tag);
  assert.deepEqual(tb.scalars['train/loss'].map(([s]) => s), [1, 2, 3, 4, 5]);

  const csv = readFileSync(join(dir, 'metrics.csv'), 'utf8').split('\n');
  assert.equal(csv[0], 'step,lora_r,lora_note,epoch,loss,lr,tokens,grad_norm,eval_loss');
  assert.equal(csv.length, 1 + 6 + 1, 'header, steps 0..5, final newline');
  assert.equal(csv[1], '0,8,"q, ""v""",,,,,,');
  // Step 2's eval line is merged into its training row.
  const l2 = lines[2];
  assert.equal(csv[3], `2,,,0,${l2.loss},${l2.lr},${l2.tokens},${l2.grad_norm},2.3`);
  assert.equal(csv[4], `3,,,0,${lines[4].loss},${lines[4].lr},${lines[4].tokens},${lines[4].grad_norm},`);
  rmSync(dir, { recursive: true, force: true });
});

test('a resumed run keeps the events and rows up to its checkpoint, with their wall times, and redoes the rest', { skip: refMissing }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-metrics-'));
  const first = MetricsFiles.open(dir, { tensorboard: true, csv: true });
  for (let s = 1; s <= 5; s++) log(dir, first, trainLine(s, 10 + s));
  const before = tensorboardScalars(dir).scalars['train/loss'];
  // Killed during step 5's write: its record is torn; the run resumes from a checkpoint at step 3.
  const ev = join(dir, eventFiles(dir)[0]);
  truncateSync(ev, statSync(ev).size - 5);
  trimLogs(dir, 3);
  const resumed = MetricsFiles.open(dir, { tensorboard: true, csv: true });
  assert.equal(eventFiles(dir).length, 1, 'the kept events moved into one new file');
  for (let s = 4; s <= 6; s++) log(dir, resumed, { ...trainLine(s, 20 + s), eval_extra: s });

  const after = tensorboardScalars(dir).scalars;
  assert.deepEqual(after['train/loss'].map(([s, v]) => [s, v]), [[1, 11], [2, 12], [3, 13], [4, 24], [5, 25], [6, 26]]);
  assert.deepEqual(after['train/loss'].slice(0, 3).map(([, , w]) => w), before.slice(0, 3).map(([, , w]) => w), 'kept events keep their wall times');
  assert.deepEqual(after['train/eval_extra'].map(([s]) => s), [4, 5, 6]);
  const csv = readFileSync(join(dir, 'metrics.csv'), 'utf8').trimEnd().split('\n');
  // A new column (eval_extra) rewrote the file with it; the steps are those of the JSONL, each once.
  assert.equal(csv[0], 'step,epoch,loss,lr,tokens,grad_norm,eval_extra');
  assert.deepEqual(csv.slice(1).map((r) => r.split(',')[2]), ['11', '12', '13', '24', '25', '26']);
  assert.equal(csv[1].split(',').at(-1), '', 'rows before the column have an empty cell');
  rmSync(dir, { recursive: true, force: true });
});

test('event records frame and parse without Python; a torn tail ends the read; switched off, nothing is written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-metrics-'));
  const files = MetricsFiles.open(dir, { tensorboard: true, csv: false });
  for (let s = 1; s <= 3; s++) log(dir, files, trainLine(s, s));
  const ev = join(dir, eventFiles(dir)[0]);
  const recs = readRecords(readFileSync(ev));
  assert.deepEqual(recs.map(eventStep), [0, 1, 2, 3]);
  const buf = readFileSync(ev);
  buf[buf.length - 3] ^= 0xff; // damage the last record's data CRC
  assert.deepEqual(readRecords(buf).map(eventStep), [0, 1, 2]);
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('metrics.csv')), [], 'csv: false writes no CSV');
  assert.equal(MetricsFiles.open(dir, { tensorboard: false, csv: false }), null);
  rmSync(dir, { recursive: true, force: true });
});
