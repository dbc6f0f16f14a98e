// LSTM layers over aten's lstm_cell / lstm kernels. Gates are stacked i, f, g, o along dim 0 of each weight, and
// parameters are named weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 (…_reverse for the backward direction),
// as PyTorch's, so checkpoints load unchanged.
import { Tensor, tidy } from '../tensor.js';
import { empty, zeros } from '../creation.js';
import * as G from '../ops/generated.js';
import { Module, type FactoryOptions } from './module.js';
import * as init from './init.js';

function positiveInt(v: number, what: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what} must be a positive integer, got ${v}`);
  return v;
}

export interface LSTMCellOptions extends FactoryOptions {
  bias?: boolean;
}

/** One LSTM step: (x [B, I], (h [B, H], c [B, H])) -> (h', c'); unbatched [I] inputs work too. */
export class LSTMCell extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  weight_ih: Tensor;
  weight_hh: Tensor;
  bias_ih: Tensor | null;
  bias_hh: Tensor | null;

  constructor(inputSize: number, hiddenSize: number, opts: LSTMCellOptions = {}) {
    super();
    this.inputSize = positiveInt(inputSize, 'inputSize');
    this.hiddenSize = positiveInt(hiddenSize, 'hiddenSize');
    const f = { dtype: opts.dtype, device: opts.device };
    const bias = opts.bias ?? true;
    this.weight_ih = this.registerParameter('weight_ih', empty([4 * hiddenSize, inputSize], f));
    this.weight_hh = this.registerParameter('weight_hh', empty([4 * hiddenSize, hiddenSize], f));
    this.bias_ih = this.registerParameter('bias_ih', bias ? empty([4 * hiddenSize], f) : null);
    this.bias_hh = this.registerParameter('bias_hh', bias ? empty([4 * hiddenSize], f) : null);
    this.resetParameters();
  }

  resetParameters(): void {
    const stdv = this.hiddenSize > 0 ? 1.0 / Math.sqrt(this.hiddenSize) : 0;
    for (const p of this.parameters()) init.uniform_(p, -stdv, stdv);
  }

  forward(x: Tensor, hx?: [Tensor, Tensor] | null): [Tensor, Tensor] {
    if (x.ndim !== 1 && x.ndim !== 2) throw new RangeError(`LSTMCell: expected input [B, ${this.inputSize}] or [${this.inputSize}], got ${x.ndim}D`);
    return tidy(() => {
      const batched = x.ndim === 2;
      // [B, I]
      const xb = batched ? x : x.unsqueeze(0);
      let h: Tensor;
      let c: Tensor;
      if (hx) {
        h = batched ? hx[0] : hx[0].unsqueeze(0);
        c = batched ? hx[1] : hx[1].unsqueeze(0);
      } else {
        // [B, H]
        h = zeros([xb.shape[0], this.hiddenSize], { dtype: x.dtype, device: x.device });
        c = h;
      }
      const [h1, c1] = G.lstm_cell(xb, [h, c], this.weight_ih, this.weight_hh, this.bias_ih, this.bias_hh);
      return batched ? [h1, c1] : [h1.squeeze(0), c1.squeeze(0)];
    });
  }

  extraRepr(): string {
    return `${this.inputSize}, ${this.hiddenSize}${this.bias_ih ? '' : ', bias=False'}`;
  }
}

export interface LSTMOptions extends FactoryOptions {
  numLayers?: number;
  bias?: boolean;
  /** Input and output are [B, T, *] instead of [T, B, *] (the state stays [layers·dirs, B, H]). */
  batchFirst?: boolean;
  /** Dropout on the outputs of every layer but the last, in training. */
  dropout?: number;
  bidirectional?: boolean;
}

/**
 * A stack of LSTM layers over a whole sequence through aten::lstm. forward(input, [h0, c0]?) returns
 * [output, [hn, cn]]: output [T, B, dirs·H] (or [B, T, dirs·H] with batchFirst), hn and cn [layers·dirs, B, H].
 */
export class LSTM extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly bidirectional: boolean;
  /** Parameter names in aten's flat-weights order: per layer, per direction, w_ih, w_hh, b_ih, b_hh. */
  readonly flatWeightsNames: string[] = [];

  constructor(inputSize: number, hiddenSize: number, opts: LSTMOptions = {}) {
    super();
    this.inputSize = positiveInt(inputSize, 'inputSize');
    this.hiddenSize = positiveInt(hiddenSize, 'hiddenSize');
    this.numLayers = positiveInt(opts.numLayers ?? 1, 'numLayers');
    this.bias = opts.bias ?? true;
    this.batchFirst = opts.batchFirst ?? false;
    this.dropout = opts.dropout ?? 0;
    this.bidirectional = opts.bidirectional ?? false;
    if (!(this.dropout >= 0 && this.dropout <= 1)) throw new RangeError(`dropout should be a number in range [0, 1], got ${this.dropout}`);
    const f = { dtype: opts.dtype, device: opts.device };
    const dirs = this.bidirectional ? 2 : 1;
    for (let l = 0; l < this.numLayers; l++) {
      const layerIn = l === 0 ? inputSize : hiddenSize * dirs;
      for (let d = 0; d < dirs; d++) {
        const sfx = `_l${l}${d === 1 ? '_reverse' : ''}`;
        const shapes: [string, number[]][] = [[`weight_ih${sfx}`, [4 * hiddenSize, layerIn]], [`weight_hh${sfx}`, [4 * hiddenSize, hiddenSize]]];
        if (this.bias) shapes.push([`bias_ih${sfx}`, [4 * hiddenSize]], [`bias_hh${sfx}`, [4 * hiddenSize]]);
        for (const [name, shape] of shapes) {
          this.registerParameter(name, empty(shape, f));
          this.flatWeightsNames.push(name);
        }
      }
    }
    this.resetParameters();
  }

  resetParameters(): void {
    const stdv = 1.0 / Math.sqrt(this.hiddenSize);
    for (const p of this.parameters()) init.uniform_(p, -stdv, stdv);
  }

  /** The parameters in aten's order. */
  flatWeights(): Tensor[] {
    return this.flatWeightsNames.map((n) => this._parameters.get(n)!);
  }

  forward(input: Tensor, hx?: [Tensor, Tensor] | null): [Tensor, [Tensor, Tensor]] {
    if (input.ndim !== 2 && input.ndim !== 3) throw new RangeError(`LSTM: expected input of 2 (unbatched) or 3 dimensions, got ${input.ndim}`);
    const last = input.shape[input.ndim - 1];
    if (last !== this.inputSize) throw new RangeError(`LSTM: input.size(-1) must be equal to inputSize. Expected ${this.inputSize}, got ${last}`);
    return tidy(() => {
      const batched = input.ndim === 3;
      const batchDim = this.batchFirst ? 0 : 1;
      // [T, B, I] or [B, T, I]
      const x = batched ? input : input.unsqueeze(batchDim);
      const B = x.shape[batchDim];
      const dirs = this.bidirectional ? 2 : 1;
      let h0: Tensor;
      let c0: Tensor;
      if (hx) {
        h0 = batched ? hx[0] : hx[0].unsqueeze(1);
        c0 = batched ? hx[1] : hx[1].unsqueeze(1);
        const want = [this.numLayers * dirs, B, this.hiddenSize];
        for (const [n, t] of [['h0', h0], ['c0', c0]] as const) {
          const s = t.shape;
          if (s.length !== 3 || s.some((v, i) => v !== want[i])) throw new RangeError(`LSTM: expected ${n} of shape [${want.join(', ')}], got [${s.join(', ')}]`);
        }
      } else {
        // [layers·dirs, B, H]
        h0 = zeros([this.numLayers * dirs, B, this.hiddenSize], { dtype: input.dtype, device: input.device });
        c0 = h0;
      }
      const [out, hn, cn] = G.lstm_input(x, [h0, c0], this.flatWeights(), this.bias, this.numLayers, this.dropout, this.training, this.bidirectional, this.batchFirst);
      if (batched) return [out, [hn, cn]];
      return [out.squeeze(batchDim), [hn.squeeze(1), cn.squeeze(1)]];
    });
  }

  extraRepr(): string {
    let s = `${this.inputSize}, ${this.hiddenSize}`;
    if (this.numLayers !== 1) s += `, num_layers=${this.numLayers}`;
    if (!this.bias) s += ', bias=False';
    if (this.batchFirst) s += ', batch_first=True';
    if (this.dropout) s += `, dropout=${this.dropout}`;
    if (this.bidirectional) s += ', bidirectional=True';
    return s;
  }
}
