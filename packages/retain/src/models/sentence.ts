// Sentence embeddings as sentence-transformers computes them from a model folder: the transformer's last hidden
// states (module 0), pooled as 1_Pooling/config.json says (mean over the attention mask, or the [CLS] token), then
// L2-normalised when modules.json lists a Normalize module. Texts are cut to sentence_bert_config.json's
// max_seq_length and padded on the right to the longest in the batch, as its tokenizer call does.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';

const { nn } = torch;
import { BertModel, type BertConfig } from './bert.js';
import { checkPositiveInt } from './weights.js';
import type { Tokenizer } from '../tokenizers/types.js';

export interface SentenceSettings {
  pooling: 'mean' | 'cls';
  normalize: boolean;
  maxSeqLength: number;
}

function readJson(path: string): any {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message}); it is one of sentence-transformers' module files, write it again with model.save(dir)`);
  }
}

/** The pooling, normalisation and length limit a sentence-transformers folder declares; plain mean pooling without one. */
export function readSentenceSettings(dir: string, maxPositions: number): SentenceSettings {
  const modulesPath = join(dir, 'modules.json');
  const modules: { type?: string; path?: string }[] = existsSync(modulesPath) ? readJson(modulesPath) : [];
  if (!Array.isArray(modules)) throw new Error(`${modulesPath}: must hold a list of modules ({"type": ..., "path": ...})`);
  const poolingDir = modules.find((m) => String(m.type).endsWith('.Pooling'))?.path;
  let pooling: SentenceSettings['pooling'] = 'mean';
  if (poolingDir !== undefined) {
    const cfgPath = join(dir, poolingDir, 'config.json');
    const cfg = readJson(cfgPath);
    const modes = Object.entries(cfg).filter(([k, v]) => k.startsWith('pooling_mode_') && v === true).map(([k]) => k.slice('pooling_mode_'.length));
    if (modes.length !== 1 || !['mean_tokens', 'cls_token'].includes(modes[0])) {
      throw new Error(`${cfgPath}: pooling modes [${modes.join(', ')}] are not supported; retain pools with exactly one of pooling_mode_mean_tokens, pooling_mode_cls_token`);
    }
    pooling = modes[0] === 'cls_token' ? 'cls' : 'mean';
  }
  const stPath = join(dir, 'sentence_bert_config.json');
  const declared = existsSync(stPath) ? readJson(stPath).max_seq_length : undefined;
  const maxSeqLength = Number.isInteger(declared) && declared > 0 ? Math.min(declared, maxPositions) : maxPositions;
  return { pooling, normalize: modules.some((m) => String(m.type).endsWith('.Normalize')), maxSeqLength };
}

/** Token ids of each text with the tokenizer's special tokens, cut to `max` tokens keeping the closing one ([SEP]). */
export function sentenceIds(tok: Tokenizer, texts: string[], max: number): number[][] {
  return texts.map((t) => {
    const ids = tok.encode(t);
    return ids.length <= max ? ids : [...ids.slice(0, max - 1), ids[ids.length - 1]];
  });
}

/** Right-padded ids and attention mask, both int64 [B, T] with T the longest row. */
export function padBatch(rows: number[][], padId: number): { ids: Tensor; mask: Tensor } {
  const T = Math.max(...rows.map((r) => r.length));
  const ids = rows.flatMap((r) => [...r, ...Array(T - r.length).fill(padId)]);
  const mask = rows.flatMap((r) => [...Array(r.length).fill(1), ...Array(T - r.length).fill(0)]);
  return {
    ids: torch.tensor(ids, { dtype: 'int64' }).view(rows.length, T),
    mask: torch.tensor(mask, { dtype: 'int64' }).view(rows.length, T),
  };
}

/** Indices of the rows, longest first (ties in their order). */
export function lengthOrder(rows: number[][]): number[] {
  return rows.map((_, i) => i).sort((a, b) => rows[b].length - rows[a].length || a - b);
}

/** hidden [B, T, H], mask [B, T] -> [B, H]: the mean over real tokens (sentence-transformers' divisor floor of 1e-9). */
export function meanPool(hidden: Tensor, mask: Tensor): Tensor {
  const m = mask.unsqueeze(-1).to(hidden.dtype); // [B, T, 1]
  return hidden.mul(m).sum(1).div(m.sum(1).clamp(1e-9));
}

export class SentenceEncoder {
  constructor(readonly model: BertModel, readonly tokenizer: Tokenizer, readonly settings: SentenceSettings) {}

  static fromDir(dir: string, model: BertModel, tokenizer: Tokenizer): SentenceEncoder {
    return new SentenceEncoder(model, tokenizer, readSentenceSettings(dir, model.config.max_position_embeddings));
  }

  /**
   * texts -> embeddings [N, H], in batches of `batchSize` padded to their longest text; as SentenceTransformer.encode,
   * in eval mode (no dropout) without gradients. The model's mode is restored after, so a training loop may call it.
   */
  encode(texts: string[], batchSize = 32): Tensor {
    const rows = sentenceIds(this.tokenizer, texts, this.settings.maxSeqLength);
    // Batches of similar lengths, as SentenceTransformer.encode sorts them: a batch pads to its longest text, and
    // mixed lengths spent most of a short-sentence set's time on padding. Rows come back in the texts' order.
    const order = lengthOrder(rows);
    const wasTraining = this.model.training;
    this.model.eval();
    const parts: Tensor[] = [];
    try {
      for (let i = 0; i < rows.length; i += batchSize) {
        parts.push(torch.tidy(() => torch.noGrad(() => this.pooled(order.slice(i, i + batchSize).map((j) => rows[j])))));
      }
      return torch.tidy(() => {
        const sorted = parts.length === 1 ? parts[0] : torch.cat(parts, 0); // [N, H], in length order
        const back = new Array<number>(order.length);
        order.forEach((j, i) => (back[j] = i));
        return sorted.indexSelect(0, torch.tensor(back, { dtype: 'int64' }));
      });
    } finally {
      torch.dispose(parts);
      this.model.train(wasTraining);
    }
  }

  /** One padded batch through the model, pooled and normalised: [b, H]. */
  pooled(rows: number[][]): Tensor {
    const { ids, mask } = padBatch(rows, this.model.config.pad_token_id ?? 0);
    const hidden = this.model.forward(ids, { attentionMask: mask }); // [b, T, H]
    const e = this.settings.pooling === 'cls' ? hidden.select(1, 0) : meanPool(hidden, mask);
    // F.normalize(p=2, dim=1): divided by the norm floored at 1e-12
    return this.settings.normalize ? e.div(e.norm(2, 1, true).clamp(1e-12)) : e;
  }
}

/** config.json of a sentence classifier: the encoder's BERT config plus the head's class count. */
export interface SentenceClassifierConfig extends BertConfig {
  model_type: 'bert_sentence_classifier';
  num_labels: number;
}

/**
 * A BERT encoder with a linear head on its mean-pooled last hidden states (model_type 'bert_sentence_classifier'):
 * the embedding sentence-transformers would pool, before normalisation, mapped to class logits. A sentence pair goes
 * in as one sequence ("a [SEP] b"). Parameters are the encoder's under `bert.` and the head's under `classifier.`,
 * so `bert` taken alone is the sentence encoder again.
 */
export class BertSentenceClassifier extends nn.Module {
  bert: BertModel;
  classifier: torch.nn.Linear;
  readonly kind = 'sequence-classifier' as const;

  constructor(readonly config: SentenceClassifierConfig) {
    super();
    checkPositiveInt(config, 'num_labels');
    this.bert = this.registerModule('bert', new BertModel(config));
    this.classifier = this.registerModule('classifier', new nn.Linear(config.hidden_size, config.num_labels));
  }

  /** ids [B, T] int64, right-padded with pad_token_id -> logits [B, num_labels]. */
  forward(ids: Tensor): Tensor {
    const mask = ids.ne(this.config.pad_token_id ?? 0).to('int64'); // [B, T]
    return this.classifier.forward(meanPool(this.bert.forward(ids, { attentionMask: mask }), mask));
  }
}
