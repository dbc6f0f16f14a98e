// Loading checkpoint tensors into a model with PyTorch's strictness, allowing for tied weights.
import type * as torch from '@retain/torch';

export interface HasTiedKeys {
  tiedKeys?(): [string, string][];
  loadStateDict(sd: Map<string, torch.Tensor>, opts?: { strict?: boolean }): { missingKeys: string[]; unexpectedKeys: string[] };
}

/**
 * Copies `weights` into `model` (strict key and shape checks). A tied key missing from the checkpoint (HF omits
 * lm_head.weight when it equals the embedding) is filled from its partner, which is the same tensor in the model.
 */
export function loadWeights(model: HasTiedKeys, weights: Map<string, torch.Tensor>, opts: { strict?: boolean } = {}): void {
  const sd = new Map(weights);
  for (const [alias, source] of model.tiedKeys?.() ?? []) {
    if (!sd.has(alias) && sd.has(source)) sd.set(alias, sd.get(source)!);
  }
  model.loadStateDict(sd, { strict: opts.strict ?? true });
}
