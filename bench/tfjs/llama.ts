// TF.js peer for bench/engine.ts, which installs TF.js into this folder on first use: the same Llama-style training
// step (RMSNorm, rotate-half RoPE, causal attention, SwiGLU MLP, untied head, cross-entropy, Adam) written with
// tfjs-core ops. TF.js has no decoupled weight decay, so it runs plain Adam: slightly less work than AdamW, which only
// favours TF.js.
import { createRequire } from 'node:module';
import type * as TF from '@tensorflow/tfjs';

// The packages' CommonJS builds: their ESM builds use directory imports that Node's loader rejects.
const require = createRequire(import.meta.url);
// The umbrella package registers gradients and chained ops, which tfjs-core's CommonJS build alone does not.
const tf: typeof TF = require('@tensorflow/tfjs');
type Tensor = TF.Tensor;

export interface LlamaShape {
  vocab_size: number; dim: number; n_layers: number; n_heads: number; n_kv_heads: number; hidden_dim: number;
  seq_len: number; batch: number; eps: number; rope_theta: number;
}

export async function tfjsStepMs(c: LlamaShape, backend: string, steps: number): Promise<{ stepMs: number[]; backend: string; loss: number }> {
  if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(backend);
  await tf.ready();
  const hd = c.dim / c.n_heads;
  const v = (shape: number[], scale: number) => tf.variable(tf.randomNormal(shape, 0, scale, 'float32', 1));
  const s = 1 / Math.sqrt(c.dim);
  const P = {
    emb: v([c.vocab_size, c.dim], 1),
    layers: Array.from({ length: c.n_layers }, () => ({
      n1: tf.variable(tf.ones([c.dim])), wq: v([c.dim, c.dim], s), wk: v([c.dim, c.dim], s), wv: v([c.dim, c.dim], s),
      wo: v([c.dim, c.dim], s), n2: tf.variable(tf.ones([c.dim])), wg: v([c.dim, c.hidden_dim], s),
      wu: v([c.dim, c.hidden_dim], s), wd: v([c.hidden_dim, c.dim], 1 / Math.sqrt(c.hidden_dim)),
    })),
    norm: tf.variable(tf.ones([c.dim])),
    head: v([c.dim, c.vocab_size], s),
  };
  const T = c.seq_len, B = c.batch;
  const inv = Array.from({ length: hd / 2 }, (_, i) => 1 / c.rope_theta ** ((2 * i) / hd));
  const ang = Array.from({ length: T }, (_, t) => [...inv, ...inv].map((f) => t * f));
  const cos = tf.tensor2d(ang.map((r) => r.map(Math.cos))); // [T, hd]
  const sin = tf.tensor2d(ang.map((r) => r.map(Math.sin)));
  const maskData = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) maskData[i * T + j] = -1e9;
  const mask = tf.tensor2d(maskData, [T, T]);
  const ids = tf.randomUniform([B, T + 1], 0, c.vocab_size, 'int32', 2);
  const x0 = ids.slice([0, 0], [B, T]);
  const oneHotX = backend === 'wasm' ? tf.oneHot(x0.reshape([-1]) as TF.Tensor1D, c.vocab_size).toFloat() : null;
  const y = tf.oneHot(ids.slice([0, 1], [B, T]).reshape([-1]), c.vocab_size);

  const rms = (x: Tensor, w: Tensor) => x.mul(x.square().mean(-1, true).add(c.eps).rsqrt()).mul(w);
  const rot = (x: Tensor) => {
    const a = x.slice([0, 0, 0, 0], [-1, -1, -1, hd / 2]);
    const b = x.slice([0, 0, 0, hd / 2], [-1, -1, -1, hd / 2]);
    return tf.concat([b.neg(), a], -1);
  };
  const heads = (x2: Tensor) => x2.reshape([B, T, c.n_heads, hd]).transpose([0, 2, 1, 3]);
  const lossFn = () => {
    // WASM has no UnsortedSegmentSum kernel (the gradient of gather), so there the lookup is a one-hot product.
    let x = (backend === 'wasm' ? tf.matMul(oneHotX as TF.Tensor2D, P.emb as TF.Tensor2D) : tf.gather(P.emb, x0).reshape([B * T, c.dim])) as Tensor;
    for (const L of P.layers) {
      const h = rms(x, L.n1);
      let q = heads(h.matMul(L.wq as TF.Tensor2D)), k = heads(h.matMul(L.wk as TF.Tensor2D));
      const vv = heads(h.matMul(L.wv as TF.Tensor2D));
      q = q.mul(cos).add(rot(q).mul(sin));
      k = k.mul(cos).add(rot(k).mul(sin));
      const att = tf.softmax(tf.matMul(q as TF.Tensor4D, k as TF.Tensor4D, false, true).mul(1 / Math.sqrt(hd)).add(mask));
      const o = tf.matMul(att as TF.Tensor4D, vv as TF.Tensor4D).transpose([0, 2, 1, 3]).reshape([B * T, c.dim]);
      x = x.add((o as TF.Tensor2D).matMul(L.wo as TF.Tensor2D));
      const h2 = rms(x, L.n2) as TF.Tensor2D;
      const g = h2.matMul(L.wg as TF.Tensor2D);
      x = x.add(g.mul(g.sigmoid()).mul(h2.matMul(L.wu as TF.Tensor2D)).matMul(L.wd as TF.Tensor2D));
    }
    const logits = (rms(x, P.norm) as TF.Tensor2D).matMul(P.head as TF.Tensor2D);
    return tf.losses.softmaxCrossEntropy(y, logits) as TF.Scalar;
  };
  const opt = tf.train.adam(1e-3);
  const stepMs: number[] = [];
  let loss = NaN;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const l = opt.minimize(lossFn, true)!;
    loss = (await l.data())[0];
    l.dispose();
    stepMs.push(performance.now() - t0);
  }
  return { stepMs, backend: tf.getBackend(), loss };
}
