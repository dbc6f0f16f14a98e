// EfficientNet-Lite (model_type 'efficientnet_lite'), the mobile variant of EfficientNet: no squeeze-and-excitation,
// ReLU6 instead of swish, and the stem and head left unscaled. Parameter names are those of the efficientnet-lite-pytorch
// package's checkpoints (_conv_stem, _bn0, _blocks.N.{_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2},
// _conv_head, _bn1, _fc), so its .pth files, converted to safetensors by scripts/models.py, load unchanged.
//
// Convolutions pad as TensorFlow's 'SAME' does (the weights were trained in TensorFlow): the output is ceil(in /
// stride) and a strided convolution's odd padding goes to the bottom and right. The package pads for its configured
// image size; this pads for the image it is given, which is the same at that size.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { checkPositiveInt, checkPositiveNumber, checkProbability } from './weights.js';

const { nn } = torch;

export interface EfficientNetLiteConfig {
  model_type?: 'efficientnet_lite' | string;
  width_coefficient: number;
  depth_coefficient: number;
  /** The resolution it was trained at (224 for Lite0). */
  image_size: number;
  dropout_rate?: number;
  /** Stochastic depth: the chance of skipping a block's residual branch grows linearly to this over the blocks. */
  drop_connect_rate?: number;
  num_labels?: number;
  batch_norm_eps?: number;
  /** PyTorch's convention (TensorFlow's 0.99 decay is 0.01 here). */
  batch_norm_momentum?: number;
  [k: string]: unknown;
}

/** Each stage: [repeats, kernel, stride, expansion, input filters, output filters], before width/depth scaling. */
const STAGES: [number, number, number, number, number, number][] = [
  [1, 3, 1, 1, 32, 16],
  [2, 3, 2, 6, 16, 24],
  [2, 5, 2, 6, 24, 40],
  [3, 3, 2, 6, 40, 80],
  [3, 5, 1, 6, 80, 112],
  [4, 5, 2, 6, 112, 192],
  [1, 3, 1, 6, 192, 320],
];

/** Width scaling to a multiple of 8, never more than 10% below the scaled width (TensorFlow's round_filters). */
export function roundFilters(filters: number, width: number): number {
  const scaled = filters * width;
  let out = Math.max(8, Math.floor((scaled + 4) / 8) * 8);
  if (out < 0.9 * scaled) out += 8;
  return out;
}

export function validateEfficientNetLiteConfig(c: EfficientNetLiteConfig): void {
  checkPositiveNumber(c, 'width_coefficient');
  checkPositiveNumber(c, 'depth_coefficient');
  checkPositiveInt(c, 'image_size');
  checkPositiveInt(c, 'num_labels', { optional: true });
  checkPositiveNumber(c, 'batch_norm_eps', { optional: true, hint: 'EfficientNet uses 1e-3' });
  for (const k of ['dropout_rate', 'drop_connect_rate', 'batch_norm_momentum']) checkProbability(c, k);
}

/** TensorFlow 'SAME' padding of x [N, C, H, W] for a k×k convolution with this stride: [left, right, top, bottom]. */
function samePadding(x: Tensor, k: number, stride: number): number[] {
  const pad = (size: number) => Math.max((Math.ceil(size / stride) - 1) * stride + k - size, 0);
  const [h, w] = [pad(x.shape[2]), pad(x.shape[3])];
  return [Math.floor(w / 2), w - Math.floor(w / 2), Math.floor(h / 2), h - Math.floor(h / 2)];
}

function sameConv(conv: torch.nn.Conv2d, x: Tensor): Tensor {
  const p = samePadding(x, conv.kernelSize[0], conv.stride[0]);
  return conv.forward(p.some((v) => v > 0) ? torch.ops.constant_pad_nd(x, p, 0) : x);
}

function convBn(c: EfficientNetLiteConfig, inC: number, outC: number, k: number, stride = 1, groups = 1): [torch.nn.Conv2d, torch.nn.BatchNorm2d] {
  const conv = new nn.Conv2d(inC, outC, k, { stride, groups, bias: false });
  nn.init.kaimingNormal_(conv.weight, { mode: 'fan_out', nonlinearity: 'relu' });
  return [conv, new nn.BatchNorm2d(outC, { eps: c.batch_norm_eps ?? 1e-3, momentum: c.batch_norm_momentum ?? 0.01 })];
}

const relu6 = (x: Tensor) => x.clamp(0, 6);

/** Inverted residual: 1×1 expansion (unless the ratio is 1), k×k depthwise, 1×1 projection; a skip when shapes allow. */
export class MBConvBlock extends nn.Module {
  _expand_conv: torch.nn.Conv2d | null = null;
  _bn0: torch.nn.BatchNorm2d | null = null;
  _depthwise_conv: torch.nn.Conv2d;
  _bn1: torch.nn.BatchNorm2d;
  _project_conv: torch.nn.Conv2d;
  _bn2: torch.nn.BatchNorm2d;
  readonly skip: boolean;

  constructor(c: EfficientNetLiteConfig, inC: number, outC: number, k: number, readonly stride: number, expand: number, readonly dropRate: number) {
    super();
    const mid = inC * expand;
    if (expand !== 1) {
      const [conv, bn] = convBn(c, inC, mid, 1);
      this._expand_conv = this.registerModule('_expand_conv', conv);
      this._bn0 = this.registerModule('_bn0', bn);
    }
    const [dw, bn1] = convBn(c, mid, mid, k, stride, mid);
    this._depthwise_conv = this.registerModule('_depthwise_conv', dw);
    this._bn1 = this.registerModule('_bn1', bn1);
    const [proj, bn2] = convBn(c, mid, outC, 1);
    this._project_conv = this.registerModule('_project_conv', proj);
    this._bn2 = this.registerModule('_bn2', bn2);
    this.skip = stride === 1 && inC === outC;
  }

  /** [N, in, H, W] -> [N, out, H / stride, W / stride] */
  forward(x: Tensor): Tensor {
    let h = this._expand_conv ? relu6(this._bn0!.forward(this._expand_conv.forward(x))) : x;
    h = relu6(this._bn1.forward(sameConv(this._depthwise_conv, h)));
    h = this._bn2.forward(this._project_conv.forward(h));
    if (!this.skip) return h;
    if (this.training && this.dropRate > 0) {
      // Stochastic depth: each sample's branch is dropped with probability dropRate, kept ones scaled up to match.
      const keep = 1 - this.dropRate;
      h = h.mul(torch.rand([h.shape[0], 1, 1, 1], { device: h.device }).add(keep).floor()).div(keep);
    }
    return h.add(x);
  }
}

export class EfficientNetLite extends nn.Module {
  _conv_stem: torch.nn.Conv2d;
  _bn0: torch.nn.BatchNorm2d;
  _blocks: torch.nn.ModuleList<MBConvBlock>;
  _conv_head: torch.nn.Conv2d;
  _bn1: torch.nn.BatchNorm2d;
  _dropout: torch.nn.Dropout;
  _fc: torch.nn.Linear;

  constructor(readonly config: EfficientNetLiteConfig) {
    super();
    validateEfficientNetLiteConfig(config);
    const c = config;
    const [stem, bn0] = convBn(c, 3, 32, 3, 2);
    this._conv_stem = this.registerModule('_conv_stem', stem);
    this._bn0 = this.registerModule('_bn0', bn0);
    const plan: [number, number, number, number, number][] = []; // [in, out, kernel, stride, expansion] per block
    STAGES.forEach(([repeats, k, stride, expand, inF, outF], i) => {
      const last = i === STAGES.length - 1;
      // Lite keeps the first and last stages' depth, and the first stage's input width (the unscaled stem's 32).
      const n = i === 0 || last ? repeats : Math.ceil(c.depth_coefficient * repeats);
      const inC = i === 0 ? 32 : roundFilters(inF, c.width_coefficient);
      const outC = roundFilters(outF, c.width_coefficient);
      for (let r = 0; r < n; r++) plan.push([r === 0 ? inC : outC, outC, k, r === 0 ? stride : 1, expand]);
    });
    const rate = c.drop_connect_rate ?? 0.2;
    this._blocks = this.registerModule('_blocks', new nn.ModuleList(plan.map(([inC, outC, k, s, e], b) => new MBConvBlock(c, inC, outC, k, s, e, (rate * b) / plan.length))));
    const [head, bn1] = convBn(c, plan[plan.length - 1][1], 1280, 1);
    this._conv_head = this.registerModule('_conv_head', head);
    this._bn1 = this.registerModule('_bn1', bn1);
    this._dropout = this.registerModule('_dropout', new nn.Dropout(c.dropout_rate ?? 0.2));
    this._fc = this.registerModule('_fc', new nn.Linear(1280, c.num_labels ?? 1000));
  }

  /** Images [N, 3, H, W] (normalised as in training) -> pooled features [N, 1280]. */
  features(x: Tensor): Tensor {
    let h = relu6(this._bn0.forward(sameConv(this._conv_stem, x))); // [N, 32, H/2, W/2]
    for (const block of this._blocks) h = torch.tidy(() => block.forward(h));
    h = relu6(this._bn1.forward(this._conv_head.forward(h))); // [N, 1280, H/32, W/32]
    return h.mean([2, 3]);
  }

  /** Images [N, 3, H, W] -> class logits [N, num_labels]. */
  forward(x: Tensor): Tensor {
    return this._fc.forward(this._dropout.forward(this.features(x)));
  }
}
