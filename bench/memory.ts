// Peak memory of training steps, measured against retain's prediction (train/memory.ts; `retain inspect --memory`),
// and what activation checkpointing saves (issue #19). Each measurement is one training step in a fresh child
// process (packages/retain/test/memory.child.ts): the resident set's high-water mark over the resident set before
// the model was built ('total': weights, gradients, AdamW state, activations), or over the resident set once model
// and gradients exist ('step': what the step's forward and backward allocate: activations).
//   max_prediction_error            max |predicted − measured| / measured over the shapes, plain and checkpointed
//   checkpointing_activation_ratio  the 24-layer model's step growth without ÷ with checkpointing every layer
// Prints one JSON object. Usage: npm run bench:memory (about a minute on 2 cores).
import { caseConfig, measureStep, type MemoryCase } from '../packages/retain/test/memory.child.js';
import { predictMemory } from '../packages/retain/src/train/memory.js';

const SHAPES: (MemoryCase & { name: string })[] = [
  { name: 'C256 L4 V4096, 4x256', vocab: 4096, hidden: 256, layers: 4, heads: 4, intermediate: 688, batch: 4, seq: 256 },
  { name: 'C128 L8 V8192, 2x512', vocab: 8192, hidden: 128, layers: 8, heads: 4, intermediate: 344, batch: 2, seq: 512 },
  { name: 'C192 L24 V2048, 2x256', vocab: 2048, hidden: 192, layers: 24, heads: 6, intermediate: 512, batch: 2, seq: 256 },
];
const MiB = 2 ** 20;
const round = (x: number) => +x.toFixed(1);

const cases = [];
let maxError = 0;
for (const s of SHAPES) {
  for (const checkpointing of [false, true]) {
    const measured = measureStep({ ...s, measure: 'total', options: { gradientCheckpointing: checkpointing, lossChunk: 'off' } }).peakMiB;
    const p = predictMemory(caseConfig(s) as unknown as Record<string, unknown>, { batch: s.batch, seq: s.seq, checkpointing });
    const error = Math.abs(p.peak / MiB - measured) / measured;
    maxError = Math.max(maxError, error);
    cases.push({ shape: s.name, checkpointing, measured_peak_mib: round(measured), predicted_peak_mib: round(p.peak / MiB), error: +error.toFixed(3), predicted_at: p.at });
  }
}
const deep = SHAPES[2];
const plainStep = measureStep({ ...deep, options: { lossChunk: 'off' } }).peakMiB;
const ckptStep = measureStep({ ...deep, options: { gradientCheckpointing: true, lossChunk: 'off' } }).peakMiB;
console.log(JSON.stringify({
  max_prediction_error: +maxError.toFixed(3),
  checkpointing_activation_ratio: +(plainStep / ckptStep).toFixed(2),
  activation_step_mib_24_layers: { plain: round(plainStep), checkpointed: round(ckptStep) },
  cases,
}, null, 1));
