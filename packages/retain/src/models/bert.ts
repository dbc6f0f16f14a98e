// BERT-family encoders (model_type 'bert': BERT, MiniLM, all-MiniLM-L6-v2) in Hugging Face's BertModel layout, so
// that parameter names are the checkpoint keys: embeddings.{word,position,token_type}_embeddings + embeddings.LayerNorm,
// encoder.layer.N.{attention.self.{query,key,value}, attention.output.{dense,LayerNorm}, intermediate.dense,
// output.{dense,LayerNorm}}, pooler.dense. Post-norm layers (LayerNorm after each residual add), bidirectional
// attention with padded keys masked out, GELU (erf) in the feed-forward block.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { checkPositiveInt, checkPositiveNumber, checkProbability, ModelConfigError } from './weights.js';

const { nn } = torch;

/** The fields of a Hugging Face BERT config.json that this architecture reads (others are kept and ignored). */
export interface BertConfig {
  model_type?: 'bert' | string;
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  max_position_embeddings: number;
  type_vocab_size?: number;
  hidden_act?: 'gelu' | 'gelu_new' | 'relu';
  layer_norm_eps?: number;
  hidden_dropout_prob?: number;
  attention_probs_dropout_prob?: number;
  initializer_range?: number;
  position_embedding_type?: 'absolute' | string;
  pad_token_id?: number;
  [k: string]: unknown;
}

const ACTIVATIONS: Record<string, (x: Tensor) => Tensor> = {
  gelu: (x) => torch.gelu(x),
  gelu_new: (x) => torch.gelu(x, 'tanh'),
  relu: (x) => x.relu(),
};

export function validateBertConfig(c: BertConfig): void {
  for (const k of ['vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'max_position_embeddings']) checkPositiveInt(c, k);
  checkPositiveInt(c, 'type_vocab_size', { optional: true });
  checkPositiveNumber(c, 'layer_norm_eps', { optional: true, hint: 'BERT uses 1e-12' });
  for (const k of ['hidden_dropout_prob', 'attention_probs_dropout_prob']) checkProbability(c, k);
  if (c.hidden_size % c.num_attention_heads !== 0) {
    throw new ModelConfigError(`hidden_size ${c.hidden_size} must be a multiple of num_attention_heads ${c.num_attention_heads}`);
  }
  const act = c.hidden_act ?? 'gelu';
  if (!(act in ACTIVATIONS)) throw new ModelConfigError(`hidden_act '${act}' is not supported; use ${Object.keys(ACTIVATIONS).join(', ')}`);
  const pos = c.position_embedding_type ?? 'absolute';
  if (pos !== 'absolute') throw new ModelConfigError(`position_embedding_type '${pos}' is not supported; only 'absolute' is`);
}

/** A Linear followed by dropout, a residual add and LayerNorm: BERT's "output" blocks. */
class AddNorm extends nn.Module {
  dense: torch.nn.Linear;
  LayerNorm: torch.nn.LayerNorm;
  dropout: torch.nn.Dropout;

  constructor(inFeatures: number, c: BertConfig) {
    super();
    this.dense = this.registerModule('dense', new nn.Linear(inFeatures, c.hidden_size));
    this.LayerNorm = this.registerModule('LayerNorm', new nn.LayerNorm(c.hidden_size, { eps: c.layer_norm_eps ?? 1e-12 }));
    this.dropout = this.registerModule('dropout', new nn.Dropout(c.hidden_dropout_prob ?? 0.1));
  }

  forward(x: Tensor, residual: Tensor): Tensor {
    return this.LayerNorm.forward(this.dropout.forward(this.dense.forward(x)).add(residual));
  }
}

class BertSelfAttention extends nn.Module {
  query: torch.nn.Linear;
  key: torch.nn.Linear;
  value: torch.nn.Linear;
  readonly heads: number;
  readonly hd: number;

  constructor(readonly c: BertConfig) {
    super();
    const H = c.hidden_size;
    this.heads = c.num_attention_heads;
    this.hd = H / this.heads;
    this.query = this.registerModule('query', new nn.Linear(H, H));
    this.key = this.registerModule('key', new nn.Linear(H, H));
    this.value = this.registerModule('value', new nn.Linear(H, H));
  }

  /** x [B, T, H], keyMask bool [B, 1, 1, T] (true = a real token) or null -> [B, T, H]. */
  forward(x: Tensor, keyMask: Tensor | null): Tensor {
    const [B, T, H] = x.shape;
    const split = (t: Tensor) => t.view(B, T, this.heads, this.hd).transpose(1, 2); // [B, heads, T, hd]
    const y = torch.scaledDotProductAttention(split(this.query.forward(x)), split(this.key.forward(x)), split(this.value.forward(x)), {
      mask: keyMask,
      dropout: this.training ? this.c.attention_probs_dropout_prob ?? 0.1 : 0,
    });
    return y.transpose(1, 2).reshape(B, T, H);
  }
}

class BertAttention extends nn.Module {
  self: BertSelfAttention;
  output: AddNorm;

  constructor(c: BertConfig) {
    super();
    this.self = this.registerModule('self', new BertSelfAttention(c));
    this.output = this.registerModule('output', new AddNorm(c.hidden_size, c));
  }

  forward(x: Tensor, keyMask: Tensor | null): Tensor {
    return this.output.forward(this.self.forward(x, keyMask), x);
  }
}

class BertIntermediate extends nn.Module {
  dense: torch.nn.Linear;

  constructor(readonly c: BertConfig) {
    super();
    this.dense = this.registerModule('dense', new nn.Linear(c.hidden_size, c.intermediate_size));
  }

  forward(x: Tensor): Tensor {
    return ACTIVATIONS[this.c.hidden_act ?? 'gelu'](this.dense.forward(x));
  }
}

export class BertLayer extends nn.Module {
  attention: BertAttention;
  intermediate: BertIntermediate;
  output: AddNorm;

  constructor(c: BertConfig) {
    super();
    this.attention = this.registerModule('attention', new BertAttention(c));
    this.intermediate = this.registerModule('intermediate', new BertIntermediate(c));
    this.output = this.registerModule('output', new AddNorm(c.intermediate_size, c));
  }

  forward(x: Tensor, keyMask: Tensor | null): Tensor {
    const h = this.attention.forward(x, keyMask);
    return this.output.forward(this.intermediate.forward(h), h);
  }
}

class BertEmbeddings extends nn.Module {
  word_embeddings: torch.nn.Embedding;
  position_embeddings: torch.nn.Embedding;
  token_type_embeddings: torch.nn.Embedding;
  LayerNorm: torch.nn.LayerNorm;
  dropout: torch.nn.Dropout;

  constructor(c: BertConfig) {
    super();
    const H = c.hidden_size;
    const std = c.initializer_range ?? 0.02;
    this.word_embeddings = this.registerModule('word_embeddings', new nn.Embedding(c.vocab_size, H, { paddingIdx: c.pad_token_id ?? 0 }));
    this.position_embeddings = this.registerModule('position_embeddings', new nn.Embedding(c.max_position_embeddings, H));
    this.token_type_embeddings = this.registerModule('token_type_embeddings', new nn.Embedding(c.type_vocab_size ?? 2, H));
    for (const e of [this.word_embeddings, this.position_embeddings, this.token_type_embeddings]) nn.init.normal_(e.weight, 0, std);
    this.LayerNorm = this.registerModule('LayerNorm', new nn.LayerNorm(H, { eps: c.layer_norm_eps ?? 1e-12 }));
    this.dropout = this.registerModule('dropout', new nn.Dropout(c.hidden_dropout_prob ?? 0.1));
  }

  /** ids, tokenTypes [B, T] int64 -> [B, T, H]. */
  forward(ids: Tensor, tokenTypes: Tensor): Tensor {
    const pos = torch.arange(0, ids.shape[1], 1, { device: ids.device }); // [T]
    const x = this.word_embeddings.forward(ids).add(this.position_embeddings.forward(pos)).add(this.token_type_embeddings.forward(tokenTypes));
    return this.dropout.forward(this.LayerNorm.forward(x));
  }
}

class BertEncoder extends nn.Module {
  layer: torch.nn.ModuleList<BertLayer>;

  constructor(c: BertConfig) {
    super();
    this.layer = this.registerModule('layer', new nn.ModuleList(Array.from({ length: c.num_hidden_layers }, () => new BertLayer(c))));
  }
}

/** The [CLS] state through dense + tanh (BERT's next-sentence head input; sentence-transformers' mean pooling skips it). */
class BertPooler extends nn.Module {
  dense: torch.nn.Linear;

  constructor(c: BertConfig) {
    super();
    this.dense = this.registerModule('dense', new nn.Linear(c.hidden_size, c.hidden_size));
  }

  forward(hidden: Tensor): Tensor {
    return this.dense.forward(hidden.select(1, 0)).tanh(); // [B, H]
  }
}

export interface BertForwardOptions {
  /** [B, T], 1 (or true) for real tokens and 0 for padding; absent means no padding. */
  attentionMask?: Tensor | null;
  /** [B, T] segment ids; absent means all 0. */
  tokenTypeIds?: Tensor | null;
}

export class BertModel extends nn.Module {
  embeddings: BertEmbeddings;
  encoder: BertEncoder;
  pooler: BertPooler;
  readonly kind = 'encoder' as const;

  constructor(readonly config: BertConfig) {
    super();
    validateBertConfig(config);
    this.embeddings = this.registerModule('embeddings', new BertEmbeddings(config));
    this.encoder = this.registerModule('encoder', new BertEncoder(config));
    this.pooler = this.registerModule('pooler', new BertPooler(config));
    const std = config.initializer_range ?? 0.02;
    for (const [name, p] of this.namedParameters()) if (/\.(query|key|value|dense)\.weight$/.test(name)) nn.init.normal_(p, 0, std);
  }

  /** ids [B, T] int64 -> the last layer's hidden states [B, T, H]. */
  forward(ids: Tensor, opts: BertForwardOptions = {}): Tensor {
    const T = ids.shape[1];
    if (T > this.config.max_position_embeddings) throw new RangeError(`sequence of ${T} tokens exceeds the model's ${this.config.max_position_embeddings} positions`);
    const types = opts.tokenTypeIds ?? torch.zeros(ids.shape, { dtype: 'int64', device: ids.device });
    // Padded keys are hidden from every query; a padded query still attends to the real tokens, as in transformers.
    const keyMask = opts.attentionMask ? opts.attentionMask.to('bool').view(ids.shape[0], 1, 1, T) : null; // [B, 1, 1, T]
    let x = this.embeddings.forward(ids, types);
    for (const layer of this.encoder.layer) x = torch.tidy(() => layer.forward(x, keyMask));
    return x;
  }
}

/**
 * Checkpoint tensors → this model's keys. Checkpoints saved by transformers before 4.31 hold the
 * `embeddings.position_ids` buffer ([1, 512] int64, always 0..n-1), which this model computes instead.
 */
export function bertCheckpointKeys(weights: Map<string, Tensor>): Map<string, Tensor> {
  return new Map([...weights].filter(([k]) => k !== 'embeddings.position_ids'));
}
