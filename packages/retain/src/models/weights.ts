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
export function loadWeights(model: HasTiedKeys, weights: Map<string, torch.Tensor>, opts: { strict?: boolean; source?: string; config?: string } = {}): void {
  const sd = new Map(weights);
  for (const [alias, source] of model.tiedKeys?.() ?? []) {
    if (!sd.has(alias) && sd.has(source)) sd.set(alias, sd.get(source)!);
  }
  try {
    model.loadStateDict(sd, { strict: opts.strict ?? true });
  } catch (e) {
    if (!opts.source) throw e;
    throw new WeightsMismatchError(opts.source, opts.config ?? null, (e as Error).message);
  }
}

/**
 * The checkpoint does not fit the model its config describes. PyTorch's message lists every tensor (48 lines for a
 * 5-layer model whose hidden size was changed); this keeps the first few, counts the rest and says what to check.
 */
export class WeightsMismatchError extends Error {
  constructor(source: string, config: string | null, detail: string) {
    const lines = detail.split('\n\t').slice(1);
    const shown = lines.slice(0, 4).map((l) => `  ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`);
    if (lines.length > shown.length) shown.push(`  … and ${lines.length - shown.length} more`);
    super(
      `${source}: the weights do not fit the model${config ? ` that ${config} describes` : ''}:\n${shown.join('\n')}\n` +
      (config
        ? `check that ${config} belongs to these weights (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings)`
        : 'the checkpoint is damaged or not of this architecture'),
    );
    this.name = 'WeightsMismatchError';
  }
}
