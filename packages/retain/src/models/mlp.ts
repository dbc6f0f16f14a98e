// The MNIST classifier of ../shared/models/mnist-mlp (784-128-32-10, ReLU), in the TensorFlow layout it was saved
// in: dense layers `hidden1`, `hidden2`, `softmax_linear`, each with `weights` [in, out] (TensorFlow multiplies
// x·W, so the matrix is the transpose of nn.Linear's) and `biases` [out]. Parameter names are the ml5 manifest's
// variable names with '/' → '.' (ml5.ts), e.g. `hidden1.weights`.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { readMl5 } from './ml5.js';
import { ModelConfigError } from './weights.js';

const { nn } = torch;

/** TensorFlow's dense layer: y = x·W + b with W [in, out]. */
export class Dense extends nn.Module {
  weights: Tensor;
  biases: Tensor;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: torch.nn.FactoryOptions = {}) {
    super();
    this.weights = this.registerParameter('weights', torch.empty([inFeatures, outFeatures], opts));
    this.biases = this.registerParameter('biases', torch.zeros([outFeatures], opts));
    // TensorFlow's default initialiser (Glorot uniform) is symmetric in fan-in and fan-out, so the [in, out]
    // layout does not change its bound.
    nn.init.xavierUniform_(this.weights);
  }

  forward(x: Tensor): Tensor {
    // [N, in] -> [N, out]: one fused b + x·W
    if (x.ndim === 2) return torch.ops.addmm(this.biases, x, this.weights);
    return x.matmul(this.weights).add(this.biases);
  }

  extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}`;
  }
}

export interface MnistMlpConfig {
  /** Layer widths from input to classes; the shared model's are [784, 128, 32, 10]. */
  sizes: number[];
}

const LAYER_NAMES = ['hidden1', 'hidden2', 'softmax_linear'];

/** Input pixels in 0..1, flattened [N, 784] (or [N, 28, 28] / [N, 1, 28, 28]) → class logits [N, 10]. */
export class MnistMLP extends nn.Module {
  readonly layers: Dense[] = [];

  constructor(readonly config: MnistMlpConfig = { sizes: [784, 128, 32, 10] }, opts: torch.nn.FactoryOptions = {}) {
    super();
    const s = config.sizes;
    if (!Array.isArray(s) || s.length !== 4 || !s.every((d) => Number.isInteger(d) && d > 0)) {
      throw new ModelConfigError(`sizes must be four positive integers (input, hidden1, hidden2, classes), got ${JSON.stringify(s)}`);
    }
    for (let i = 0; i < 3; i++) this.layers.push(this.registerModule(LAYER_NAMES[i], new Dense(s[i], s[i + 1], opts)));
  }

  forward(x: Tensor): Tensor {
    const n = x.shape[0];
    let h = x.reshape(n, -1); // [N, 784]
    if (h.shape[1] !== this.config.sizes[0]) throw new RangeError(`MnistMLP: expected ${this.config.sizes[0]} inputs per example, got ${h.shape[1]}`);
    h = this.layers[0].forward(h).relu(); // [N, 128]
    h = this.layers[1].forward(h).relu(); // [N, 32]
    return this.layers[2].forward(h); // [N, 10]
  }

  /** Reads an ml5 folder (manifest.json + raw float32 files) into a new model; the sizes come from the files. */
  static fromMl5(dir: string): MnistMLP {
    const w = readMl5(dir);
    try {
      const sizes = LAYER_NAMES.map((n) => {
        const t = w.get(`${n}.weights`);
        if (!t) throw new Error(`${dir}: no variable '${n}/weights' in manifest.json (has ${[...w.keys()].join(', ')})`);
        return t.shape;
      });
      const model = new MnistMLP({ sizes: [sizes[0][0], sizes[0][1], sizes[1][1], sizes[2][1]] });
      model.loadStateDict(w);
      return model;
    } finally {
      torch.dispose(w.values());
    }
  }
}
