// The data losses the loop trains with: per-sample sums of token (or example) losses and the trained-token counts
// that normalise them (trainer.ts divides by the step's total).
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { SampleLosses, TrainableModel } from './hooks.js';

/** Maps a batch to per-sample loss sums and trained-token counts. */
export type LossFn = (model: TrainableModel, batch: Batch) => SampleLosses;

/** Causal-LM loss: next-token cross-entropy per position, summed per sample. */
export const causalLmLoss: LossFn = (model, batch) => {
  const logits = model.forward(batch.ids) as Tensor; // [B, T, V]
  const [B, T, V] = logits.shape;
  const tok = torch.crossEntropy(logits.reshape(B * T, V), batch.targets.reshape(B * T), { reduction: 'none' }).view(B, T); // [B, T]
  const counts = batch.targets.ne(-100).sum(1).to('float32'); // [B]
  return { sums: tok.sum(1), counts };
};

/**
 * Classification loss over class logits [B, C] against batch.labels [B]; the model reads batch.features (images) or,
 * for text classification, the padded token ids.
 */
export const classificationLoss: LossFn = (model, batch) => {
  if (!batch.labels) throw new Error('classification loss needs labelled examples (image_classification or classification format)');
  const logits = model.forward(batch.features ?? batch.ids) as Tensor; // [B, C]
  const sums = torch.crossEntropy(logits, batch.labels, { reduction: 'none' });
  return { sums, counts: torch.onesLike(sums) };
};

/** Training stopped because the loss (or, found at a checkpoint, a weight) became NaN or Inf. */
export class NonFiniteLossError extends Error {}
