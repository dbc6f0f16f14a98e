// Cross-entropy over a large vocabulary in chunks of positions, so that float32 logits for the whole batch
// ([B, T, V]: Llama-3's 128K vocabulary at 8K tokens is 4 GB) never exist, in the forward or in backward.
//
// @retain/torch has no JS-defined autograd Function, so the loss is split in two phases around the caller's backward:
//   1. forward: the model's final hidden states h [B, T, C] (with their graph); per chunk, under no_grad, the head's
//      logits and token losses; the per-sample sums are returned as  sums + p,  p a zero leaf [B].
//   2. the caller weights and reduces the sums as it likes (FLOW weights, the step's token count) and runs backward,
//      which stops at p: p.grad = u, the weight of each sample's sum in the caller's loss.
//   3. completeBackward(): per chunk, recompute the logits from a detached copy of h with grad on, backprop
//      Σ u_b·(token losses of the chunk) into that copy and the head's weights (one chunk's logits alive at a time),
//      then hidden.backward(accumulated d/dh) carries it through the decoder.
// The head's gradient is Σ_b u_b·dW_b, which is why u must be known before the chunks' backward: a weighted loss
// cannot be folded in afterwards without keeping per-sample head gradients.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { SampleLosses, TrainableModel } from './hooks.js';
import type { LossFn } from './losses.js';

/** training.loss_chunk: positions per chunk, 'auto' (chunk only where the whole logits would be large) or 'off'. */
export type LossChunkSetting = number | 'auto' | 'off';

/** 'auto' chunks once one batch's logits exceed this many elements (512 MiB in float32) ... */
export const AUTO_CHUNK_ABOVE = 2 ** 27;
/** ... into chunks of at most this many logits (128 MiB in float32). */
export const AUTO_CHUNK_ELEMENTS = 2 ** 25;

/** Positions per chunk for a batch of B×T tokens over V classes, or null where the plain loss is used. */
export function chunkPositions(setting: LossChunkSetting, B: number, T: number, V: number): number | null {
  if (setting === 'off') return null;
  if (setting === 'auto') return B * T * V > AUTO_CHUNK_ABOVE ? Math.max(1, Math.floor(AUTO_CHUNK_ELEMENTS / V)) : null;
  return setting < B * T ? setting : null;
}

/**
 * The output head of a causal LM that can return its final hidden states (`forward(ids, { hidden: true })`): the
 * logits of hidden rows [n, C] -> [n, V], with Gemma's final soft-cap, and V. Null for a model without one.
 */
export function outputHead(model: TrainableModel): { logits: (h: Tensor) => Tensor; vocab: number } | null {
  const m = model as unknown as { kind?: string; lm_head?: { forward(x: Tensor): Tensor; weight?: Tensor }; g?: { finalCap?: number | null } };
  if (m.kind !== 'causal-lm' || !m.lm_head?.weight) return null;
  const head = m.lm_head;
  const cap = m.g?.finalCap ?? null; // Gemma 2/3 cap the logits after the head (models/gemma2.ts)
  const logits = cap === null ? (h: Tensor) => head.forward(h) : (h: Tensor) => head.forward(h).div(cap).tanh().mul(cap);
  return { logits, vocab: head.weight!.shape[0] };
}

/** Positions per chunk for this model and batch, or null where the plain loss is used. */
export function batchChunk(model: TrainableModel, batch: Batch, setting: LossChunkSetting): number | null {
  const head = outputHead(model);
  const [B, T] = batch.ids.shape;
  return head ? chunkPositions(setting, B, T, head.vocab) : null;
}

/** `plain` (the causal-LM loss) with the head chunked for the batches where `setting` asks for it. */
export function chunkedLoss(plain: LossFn, setting: LossChunkSetting): LossFn {
  return (model, batch) => {
    const chunk = batchChunk(model, batch, setting);
    return chunk === null ? plain(model, batch) : chunkedCausalLm(model, batch, chunk, outputHead(model)!.logits);
  };
}

/** Token losses of rows [lo, lo + n) of the flattened batch: hidden [N, C], targets [N] -> [n]. */
function chunkLosses(head: (h: Tensor) => Tensor, hidden: Tensor, targets: Tensor, lo: number, n: number): Tensor {
  return torch.crossEntropy(head(hidden.narrow(0, lo, n)), targets.narrow(0, lo, n), { reduction: 'none' });
}

/**
 * The causal-LM loss with the head applied `chunk` positions at a time. Under no_grad it only computes the values;
 * with grad on, the caller must call `completeBackward()` right after its backward through `sums` (the trainer does).
 */
export function chunkedCausalLm(model: TrainableModel, batch: Batch, chunk: number, head: (h: Tensor) => Tensor): SampleLosses {
  const [B, T] = batch.ids.shape;
  const N = B * T;
  const counts = batch.targets.ne(-100).sum(1).to('float32'); // [B]
  const hidden = model.forward(batch.ids, { hidden: true }) as Tensor; // [B, T, C]
  const C = hidden.shape[2];
  const targets = batch.targets.reshape(N);
  const tok = torch.noGrad(() => {
    const flat = hidden.reshape(N, C);
    const parts: Tensor[] = [];
    for (let lo = 0; lo < N; lo += chunk) parts.push(torch.tidy(() => chunkLosses(head, flat, targets, lo, Math.min(chunk, N - lo))));
    const all = torch.cat(parts, 0); // [N]
    torch.dispose(parts);
    return all;
  });
  const values = tok.view(B, T).sum(1); // [B]
  if (!hidden.requiresGrad) return { sums: values, counts };
  const probe = torch.zeros([B], { device: values.device, requiresGrad: true }); // receives u = d(caller's loss)/d(sums)
  const completeBackward = (): void => {
    const u = probe.grad;
    if (!u) return; // the caller's loss did not use the sums
    torch.tidy(() => {
      const perRow = u.view(B, 1).expand(B, T).reshape(N); // [N]: each position's sample weight
      const h = hidden.detach().requiresGrad_(true); // [B, T, C], a leaf collecting d/dh over the chunks
      for (let lo = 0; lo < N; lo += chunk) {
        torch.tidy(() => {
          const n = Math.min(chunk, N - lo);
          torch.enableGrad(() => chunkLosses(head, h.reshape(N, C), targets, lo, n).mul(perRow.narrow(0, lo, n)).sum()).backward();
        });
      }
      hidden.backward(h.grad!);
    });
  };
  return { sums: values.add(probe), counts, completeBackward };
}
