// The character-level LSTM language model of ml5.js's charRNN exports (../shared/models/charrnn-shakespeare), in
// TensorFlow's layout so that the ml5 files load without conversion:
//
//   embedding                                             [V, E]       character embedding
//   rnnlm/multi_rnn_cell/cell_N/basic_lstm_cell/weights   [in+H, 4H]   kernel applied to concat(x, h)
//   rnnlm/multi_rnn_cell/cell_N/basic_lstm_cell/biases    [4H]
//   (exports made with TF's LSTMCell name the same two tensors cell_N/lstm_cell/kernel and cell_N/lstm_cell/bias)
//   rnnlm/softmax_w                                       [H, V]       logits = h·W + b
//   rnnlm/softmax_b                                       [V]
//
// Parameter names are these TensorFlow names with '/' → '.' (ml5.ts, tfToKey), so the module tree mirrors the
// variable scopes: `rnnlm.multi_rnn_cell.cell_0.basic_lstm_cell.weights`.
//
// TensorFlow's BasicLSTMCell splits the 4H gate columns as i (input), j (candidate), f (forget), o (output) and adds
// a constant forget bias of 1.0 to f that is not stored in the checkpoint:
//   c' = c·σ(f + 1) + σ(i)·tanh(j),   h' = tanh(c')·σ(o).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { CharVocab } from '../tokenizers/char.js';
import { keyToTf, readMl5 } from './ml5.js';
import { sampleNext, type GenerateOptions } from './generate.js';
import { checkPositiveInt, ModelConfigError } from './weights.js';

const { nn } = torch;

export interface CharLSTMConfig {
  vocab_size: number;
  /** Width of the character embedding (the first cell's input). */
  embedding_size: number;
  hidden_size: number;
  num_layers: number;
  /** Added to the forget gate's pre-activation; TensorFlow's BasicLSTMCell default is 1.0. */
  forget_bias?: number;
}

/** TensorFlow's BasicLSTMCell: kernel `weights` [in+H, 4H] over concat(x, h), gate columns i, j, f, o. */
export class BasicLSTMCell extends nn.Module {
  weights: Tensor;
  biases: Tensor;

  constructor(readonly inputSize: number, readonly hiddenSize: number, readonly forgetBias = 1.0, opts: torch.nn.FactoryOptions = {}) {
    super();
    this.weights = this.registerParameter('weights', torch.empty([inputSize + hiddenSize, 4 * hiddenSize], opts));
    this.biases = this.registerParameter('biases', torch.zeros([4 * hiddenSize], opts));
    // TensorFlow 1.x initialised the kernel Glorot-uniform and the biases at zero.
    nn.init.xavierUniform_(this.weights);
  }

  /** One step: x [B, in], (h, c) [B, H] each → (h', c'). Differentiable: plain engine ops. */
  forward(x: Tensor, h: Tensor, c: Tensor): [Tensor, Tensor] {
    // [B, in+H]·[in+H, 4H] + [4H] -> [B, 4H]
    const gates = torch.ops.addmm(this.biases, torch.cat([x, h], 1), this.weights);
    const [i, j, f, o] = gates.chunk(4, 1); // [B, H] each
    const c1 = c.mul(f.add(this.forgetBias).sigmoid()).add(i.sigmoid().mul(j.tanh()));
    const h1 = c1.tanh().mul(o.sigmoid());
    return [h1, c1];
  }

  /**
   * The same cell in PyTorch's LSTM layout (w_ih [4H, in], w_hh [4H, H], b_ih, b_hh with gates i, f, g, o), for
   * aten's fused sequence kernel. Built from the parameters with differentiable ops, so gradients reach them.
   */
  atenWeights(): [Tensor, Tensor, Tensor, Tensor] {
    const H = this.hiddenSize;
    return torch.tidy(() => {
      // TensorFlow's column blocks i, j, f, o → PyTorch's row blocks i, f, g(=j), o.
      const order = torch.tensor([0, 2, 1, 3], { device: this.weights.device });
      const w = this.weights.view(this.inputSize + H, 4, H).indexSelect(1, order).reshape(this.inputSize + H, 4 * H); // [in+H, 4H]
      const wIh = w.narrow(0, 0, this.inputSize).t().contiguous(); // [4H, in]
      const wHh = w.narrow(0, this.inputSize, H).t().contiguous(); // [4H, H]
      const forget = torch.zeros([4, H], { dtype: this.biases.dtype, device: this.biases.device });
      forget.narrow(0, 1, 1).fill_(this.forgetBias);
      const bIh = this.biases.view(4, H).indexSelect(0, order).add(forget).reshape(4 * H); // [4H]
      const bHh = torch.zeros([4 * H], { dtype: this.biases.dtype, device: this.biases.device });
      return [wIh, wHh, bIh, bHh] as [Tensor, Tensor, Tensor, Tensor];
    });
  }
}

// The `cell_N` variable scope around each BasicLSTMCell.
class CellScope extends nn.Module {
  basic_lstm_cell: BasicLSTMCell;
  constructor(cell: BasicLSTMCell) {
    super();
    this.basic_lstm_cell = this.registerModule('basic_lstm_cell', cell);
  }
}

export class MultiRNNCell extends nn.Module {
  readonly cells: BasicLSTMCell[] = [];
  constructor(c: CharLSTMConfig, opts: torch.nn.FactoryOptions = {}) {
    super();
    for (let l = 0; l < c.num_layers; l++) {
      const cell = new BasicLSTMCell(l === 0 ? c.embedding_size : c.hidden_size, c.hidden_size, c.forget_bias ?? 1.0, opts);
      this.registerModule(`cell_${l}`, new CellScope(cell));
      this.cells.push(cell);
    }
  }
}

export class RnnLm extends nn.Module {
  multi_rnn_cell: MultiRNNCell;
  softmax_w: Tensor;
  softmax_b: Tensor;
  constructor(c: CharLSTMConfig, opts: torch.nn.FactoryOptions = {}) {
    super();
    this.multi_rnn_cell = this.registerModule('multi_rnn_cell', new MultiRNNCell(c, opts));
    this.softmax_w = this.registerParameter('softmax_w', torch.empty([c.hidden_size, c.vocab_size], opts));
    this.softmax_b = this.registerParameter('softmax_b', torch.zeros([c.vocab_size], opts));
    nn.init.xavierUniform_(this.softmax_w);
  }
}

/**
 * Recurrent state per layer, h and c [B, H]. forward() with a state reads it and replaces its tensors with the
 * state after the last position (kept outside scopes; the old ones are released), so text can be fed in pieces.
 */
export class LSTMState {
  constructor(public h: Tensor[], public c: Tensor[]) {
    torch.keep([...h, ...c]);
  }

  /** Cuts the graph behind the state (truncated backpropagation through time). */
  detach(): this {
    this.set(this.h.map((t) => t.detach()), this.c.map((t) => t.detach()));
    return this;
  }

  /** @internal */
  set(h: Tensor[], c: Tensor[]): void {
    const old = [...this.h, ...this.c];
    this.h = torch.keep(h);
    this.c = torch.keep(c);
    torch.dispose(old.filter((t) => !h.includes(t) && !c.includes(t)));
  }

  dispose(): void {
    torch.dispose([...this.h, ...this.c]);
  }
}

export interface CharLSTMForwardOptions {
  state?: LSTMState;
  /**
   * Run the layers through aten's fused LSTM kernel (weights rearranged into PyTorch's layout) instead of the
   * step-by-step cell. Same numbers up to floating-point summation order; both are differentiable. Default true.
   */
  fused?: boolean;
  /** Return the last layer's outputs [B, T, H] instead of logits (sentence embeddings for synthesis). */
  hidden?: boolean;
}

export class CharLSTM extends nn.Module {
  embedding: Tensor;
  rnnlm: RnnLm;

  constructor(readonly config: CharLSTMConfig, opts: torch.nn.FactoryOptions = {}) {
    super();
    validate(config);
    this.embedding = this.registerParameter('embedding', torch.empty([config.vocab_size, config.embedding_size], opts));
    // TensorFlow's embedding_lookup variables default to Glorot-uniform as well.
    nn.init.xavierUniform_(this.embedding);
    this.rnnlm = this.registerModule('rnnlm', new RnnLm(config, opts));
  }

  get cells(): BasicLSTMCell[] {
    return this.rnnlm.multi_rnn_cell.cells;
  }

  /** Zero state for a batch. */
  newState(batch: number): LSTMState {
    const p = this.embedding;
    const z = () => torch.zeros([batch, this.config.hidden_size], { dtype: p.dtype, device: p.device });
    return new LSTMState(this.cells.map(z), this.cells.map(z));
  }

  /** ids [B, T] int64 → logits [B, T, V] (hidden: outputs [B, T, H]); with opts.state, continues from it and leaves the final state in it. */
  forward(ids: Tensor, opts: CharLSTMForwardOptions = {}): Tensor {
    if (ids.ndim !== 2) throw new RangeError(`CharLSTM: expected ids [B, T], got ${ids.ndim}D`);
    const [B, T] = ids.shape;
    const fresh = opts.state ? null : this.newState(B);
    const state = opts.state ?? fresh!;
    if (state.h[0].shape[0] !== B) throw new RangeError(`CharLSTM: the state holds a batch of ${state.h[0].shape[0]}, ids a batch of ${B}`);
    try {
      const [logits, h, c] = torch.tidy(() => {
        let x = torch.embedding(ids, this.embedding); // [B, T, E]
        const hs: Tensor[] = [];
        const cs: Tensor[] = [];
        this.cells.forEach((cell, l) => {
          let hl: Tensor;
          let cl: Tensor;
          if (opts.fused ?? true) {
            // [B, T, in] -> [B, T, H]; aten's state is [layers, B, H]
            // train = grad mode: cuDNN keeps what its backward needs only when asked (there is no dropout either way).
            const [out, hn, cn] = torch.ops.lstm_input(x, [state.h[l].unsqueeze(0), state.c[l].unsqueeze(0)], cell.atenWeights(), true, 1, 0, torch.isGradEnabled(), false, true);
            x = out;
            hl = hn.squeeze(0);
            cl = cn.squeeze(0);
          } else {
            hl = state.h[l];
            cl = state.c[l];
            const outs: Tensor[] = [];
            for (let t = 0; t < T; t++) {
              [hl, cl] = cell.forward(x.select(1, t), hl, cl); // [B, H]
              outs.push(hl);
            }
            x = torch.stack(outs, 1); // [B, T, H]
          }
          hs.push(hl);
          cs.push(cl);
        });
        if (opts.hidden) return [x, hs, cs] as [Tensor, Tensor[], Tensor[]];
        // [B, T, H]·[H, V] + [V] -> [B, T, V]
        const out = torch.ops.addmm(this.rnnlm.softmax_b, x.reshape(B * T, -1), this.rnnlm.softmax_w).view(B, T, -1);
        return [out, hs, cs] as [Tensor, Tensor[], Tensor[]];
      });
      if (opts.state) opts.state.set(h, c);
      else torch.dispose([...h, ...c]);
      return logits;
    } finally {
      fresh?.dispose();
    }
  }

  /**
   * Samples `length` characters after `prompt` (greedy when temperature is 0 or absent), ending early at the first of
   * `o.stop` and cut before it. The prompt runs through the network once; each new character costs one step.
   */
  sample(vocab: CharVocab, prompt: string, o: GenerateOptions & { length?: number } = {}): string {
    if (prompt.length === 0) throw new Error('CharLSTM.sample: the prompt must have at least one character');
    if (o.seed !== undefined) torch.manualSeed(o.seed);
    const length = o.length ?? 100;
    const state = this.newState(1);
    const device = this.embedding.device;
    const out: number[] = [];
    // A stop string can only newly appear within the last (longest stop) characters.
    const longestStop = Math.max(0, ...(o.stop ?? []).map((x) => [...x].length));
    try {
      torch.inferenceMode(() => {
        let next = torch.tidy(() => {
          const logits = this.forward(torch.tensor([vocab.encode(prompt)], { dtype: 'int64', device }), { state }); // [1, T, V]
          return sampleNext(logits.i(0, -1), o);
        });
        while (out.length < length) {
          out.push(next);
          if (out.length === length || (longestStop > 0 && hasStop(vocab.decode(out.slice(-longestStop)), o.stop))) break;
          const prev = next;
          next = torch.tidy(() => sampleNext(this.forward(torch.tensor([[prev]], { dtype: 'int64', device }), { state }).i(0, 0), o));
        }
      });
    } finally {
      state.dispose();
    }
    const text = vocab.decode(out);
    const cuts = (o.stop ?? []).map((x) => text.indexOf(x)).filter((i) => i >= 0);
    return cuts.length ? text.slice(0, Math.min(...cuts)) : text;
  }

  /**
   * Reads an ml5 charRNN folder (manifest.json, raw float32 files, vocab.json). The manifest's scalar `Variable` is
   * training state exported beside the weights (the network never reads it) and is left out.
   */
  static fromMl5(dir: string): { model: CharLSTM; vocab: CharVocab } {
    const vocab = CharVocab.fromFile(join(dir, 'vocab.json'));
    const w = lstmCellNames(dir, readMl5(dir, { skip: hasVariable(dir) ? ['Variable'] : [] }));
    try {
      const emb = w.get('embedding');
      const w0 = w.get(cellKey(0, 'weights'));
      const missing = [!emb && "'embedding'", !w0 && `'${keyToTf(cellKey(0, 'weights'))}' (or TF LSTMCell's '${keyToTf(cellKey(0, 'weights', LSTM_CELL))}')`].filter(Boolean);
      if (missing.length) throw new Error(`${dir}: manifest.json lacks ${missing.join(' and ')}; it holds ${[...w.keys()].map(keyToTf).join(', ')}`);
      let layers = 0;
      while (w.has(cellKey(layers, 'weights'))) layers++;
      const [V, E] = emb!.shape;
      const H = w0!.shape[1] / 4;
      if (V !== vocab.size) throw new Error(`${dir}: the embedding has ${V} rows but vocab.json has ${vocab.size} characters`);
      const model = new CharLSTM({ vocab_size: V, embedding_size: E, hidden_size: H, num_layers: layers });
      model.loadStateDict(w);
      return { model, vocab };
    } finally {
      torch.dispose(w.values());
    }
  }
}

/** The state-dict key of layer `l`'s kernel or bias, under BasicLSTMCell's names or (with LSTM_CELL) LSTMCell's. */
function cellKey(l: number, what: 'weights' | 'biases', names: Record<'scope' | 'weights' | 'biases', string> = BASIC_LSTM_CELL): string {
  return `rnnlm.multi_rnn_cell.cell_${l}.${names.scope}.${names[what]}`;
}

const BASIC_LSTM_CELL = { scope: 'basic_lstm_cell', weights: 'weights', biases: 'biases' };
const LSTM_CELL = { scope: 'lstm_cell', weights: 'kernel', biases: 'bias' };

/**
 * TensorFlow's LSTMCell (no peepholes, no projection) stores the same [in+H, 4H] kernel over concat(x, h), gate
 * columns i, j, f, o, and the same unstored forget bias as BasicLSTMCell, as `lstm_cell/kernel` and `lstm_cell/bias`;
 * exports made with it are the same network under other names, renamed here to the module's.
 */
function lstmCellNames(dir: string, w: Map<string, torch.Tensor>): Map<string, torch.Tensor> {
  const out = new Map<string, torch.Tensor>();
  for (const [k, t] of w) {
    const m = /^rnnlm\.multi_rnn_cell\.cell_(\d+)\.lstm_cell\.(kernel|bias)$/.exec(k);
    out.set(m ? cellKey(Number(m[1]), m[2] === 'kernel' ? 'weights' : 'biases') : k, t);
  }
  if (out.size < w.size) {
    torch.dispose(w.values());
    throw new Error(`${dir}/manifest.json names a layer's kernel or bias under both TF's BasicLSTMCell (basic_lstm_cell/weights, biases) and LSTMCell (lstm_cell/kernel, bias); keep one of each`);
  }
  return out;
}

function hasStop(tail: string, stop: string[] | undefined): boolean {
  return !!stop?.some((x) => x.length > 0 && tail.includes(x));
}

function hasVariable(dir: string): boolean {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, { shape?: number[] }>;
  return 'Variable' in m && Array.isArray(m.Variable.shape) && m.Variable.shape.length === 0;
}

function validate(c: CharLSTMConfig): void {
  const f = c as unknown as Record<string, unknown>;
  for (const k of ['vocab_size', 'embedding_size', 'hidden_size', 'num_layers']) checkPositiveInt(f, k);
  if (c.forget_bias != null && (typeof c.forget_bias !== 'number' || !Number.isFinite(c.forget_bias))) {
    throw new ModelConfigError(`forget_bias must be a finite number (TensorFlow's default is 1.0), got ${JSON.stringify(c.forget_bias)}`);
  }
}
