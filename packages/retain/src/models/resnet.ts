// ResNets (He et al. 2015) with torchvision's state-dict keys, so torchvision checkpoints load unchanged:
// conv1, bn1, layer{1..4}.N.{conv1, bn1, conv2, bn2[, conv3, bn3], downsample.{0: conv, 1: bn}}, fc. BatchNorm running
// statistics are buffers (running_mean, running_var, num_batches_tracked), so eval() uses them and train() updates
// them. Bottleneck blocks stride in their 3×3 convolution (torchvision's "ResNet v1.5").
//
// For transfer learning the head can be swapped (replaceHead) and the pooled features read without it (features).
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';

const { nn } = torch;

export type ResNetDepth = 18 | 34 | 50 | 101 | 152;

export interface ResNetOptions {
  /** Outputs of the classifier `fc`; torchvision's ImageNet models have 1000. */
  num_classes?: number;
  /** Start each block's last BatchNorm at weight 0, so every residual branch begins as the identity. */
  zero_init_residual?: boolean;
}

const LAYOUT: Record<ResNetDepth, { block: 'basic' | 'bottleneck'; layers: [number, number, number, number] }> = {
  18: { block: 'basic', layers: [2, 2, 2, 2] },
  34: { block: 'basic', layers: [3, 4, 6, 3] },
  50: { block: 'bottleneck', layers: [3, 4, 6, 3] },
  101: { block: 'bottleneck', layers: [3, 4, 23, 3] },
  152: { block: 'bottleneck', layers: [3, 8, 36, 3] },
};

function conv(inC: number, outC: number, k: number, stride = 1): torch.nn.Conv2d {
  const c = new nn.Conv2d(inC, outC, k, { stride, padding: (k - 1) / 2, bias: false });
  // torchvision initialises every convolution with He-normal over fan-out.
  nn.init.kaimingNormal_(c.weight, { mode: 'fan_out', nonlinearity: 'relu' });
  return c;
}

// 1×1 convolution and BatchNorm on the shortcut, where a block changes the width or the resolution.
function downsample(inC: number, outC: number, stride: number): torch.nn.Sequential | null {
  if (stride === 1 && inC === outC) return null;
  return new nn.Sequential(conv(inC, outC, 1, stride), new nn.BatchNorm2d(outC));
}

/** Two 3×3 convolutions (ResNet-18/34). */
export class BasicBlock extends nn.Module {
  static readonly expansion = 1;
  conv1: torch.nn.Conv2d;
  bn1: torch.nn.BatchNorm2d;
  conv2: torch.nn.Conv2d;
  bn2: torch.nn.BatchNorm2d;
  downsample: torch.nn.Sequential | null;

  constructor(inC: number, planes: number, stride: number) {
    super();
    this.conv1 = this.registerModule('conv1', conv(inC, planes, 3, stride));
    this.bn1 = this.registerModule('bn1', new nn.BatchNorm2d(planes));
    this.conv2 = this.registerModule('conv2', conv(planes, planes, 3));
    this.bn2 = this.registerModule('bn2', new nn.BatchNorm2d(planes));
    this.downsample = this.registerModule('downsample', downsample(inC, planes, stride));
  }

  get lastBn(): torch.nn.BatchNorm2d {
    return this.bn2;
  }

  forward(x: Tensor): Tensor {
    // [N, C, H, W] -> [N, planes, H/s, W/s]
    const h = this.bn2.forward(this.conv2.forward(this.bn1.forward(this.conv1.forward(x)).relu()));
    const identity = this.downsample ? this.downsample.forward(x) : x;
    return h.add(identity).relu();
  }
}

/** 1×1 reduce, 3×3 (strided), 1×1 expand by 4 (ResNet-50/101/152). */
export class Bottleneck extends nn.Module {
  static readonly expansion = 4;
  conv1: torch.nn.Conv2d;
  bn1: torch.nn.BatchNorm2d;
  conv2: torch.nn.Conv2d;
  bn2: torch.nn.BatchNorm2d;
  conv3: torch.nn.Conv2d;
  bn3: torch.nn.BatchNorm2d;
  downsample: torch.nn.Sequential | null;

  constructor(inC: number, planes: number, stride: number) {
    super();
    const out = planes * Bottleneck.expansion;
    this.conv1 = this.registerModule('conv1', conv(inC, planes, 1));
    this.bn1 = this.registerModule('bn1', new nn.BatchNorm2d(planes));
    this.conv2 = this.registerModule('conv2', conv(planes, planes, 3, stride));
    this.bn2 = this.registerModule('bn2', new nn.BatchNorm2d(planes));
    this.conv3 = this.registerModule('conv3', conv(planes, out, 1));
    this.bn3 = this.registerModule('bn3', new nn.BatchNorm2d(out));
    this.downsample = this.registerModule('downsample', downsample(inC, out, stride));
  }

  get lastBn(): torch.nn.BatchNorm2d {
    return this.bn3;
  }

  forward(x: Tensor): Tensor {
    // [N, C, H, W] -> [N, 4·planes, H/s, W/s]
    let h = this.bn1.forward(this.conv1.forward(x)).relu();
    h = this.bn2.forward(this.conv2.forward(h)).relu();
    h = this.bn3.forward(this.conv3.forward(h));
    const identity = this.downsample ? this.downsample.forward(x) : x;
    return h.add(identity).relu();
  }
}

export class ResNet extends nn.Module {
  conv1: torch.nn.Conv2d;
  bn1: torch.nn.BatchNorm2d;
  layer1: torch.nn.Sequential;
  layer2: torch.nn.Sequential;
  layer3: torch.nn.Sequential;
  layer4: torch.nn.Sequential;
  fc: torch.nn.Linear;
  /** Width of the pooled features that feed fc (512 for ResNet-18/34, 2048 for ResNet-50 and deeper). */
  readonly numFeatures: number;
  readonly config: { depth: ResNetDepth; num_classes: number; zero_init_residual: boolean };

  constructor(depth: ResNetDepth, opts: ResNetOptions = {}) {
    super();
    const layout = LAYOUT[depth];
    if (!layout) throw new Error(`ResNet depth must be one of 18, 34, 50, 101, 152, got ${depth}`);
    const numClasses = opts.num_classes ?? 1000;
    if (!Number.isInteger(numClasses) || numClasses <= 0) throw new Error(`num_classes must be a positive integer, got ${numClasses}`);
    this.config = { depth, num_classes: numClasses, zero_init_residual: opts.zero_init_residual ?? false };
    const Block = layout.block === 'basic' ? BasicBlock : Bottleneck;
    this.conv1 = this.registerModule('conv1', conv(3, 64, 7, 2));
    this.bn1 = this.registerModule('bn1', new nn.BatchNorm2d(64));
    let inC = 64;
    const stage = (planes: number, blocks: number, stride: number): torch.nn.Sequential => {
      const seq = new nn.Sequential();
      for (let i = 0; i < blocks; i++) {
        const b = new Block(inC, planes, i === 0 ? stride : 1);
        if (this.config.zero_init_residual) torch.noGrad(() => b.lastBn.weight!.zero_());
        seq.append(b);
        inC = planes * Block.expansion;
      }
      return seq;
    };
    this.layer1 = this.registerModule('layer1', stage(64, layout.layers[0], 1));
    this.layer2 = this.registerModule('layer2', stage(128, layout.layers[1], 2));
    this.layer3 = this.registerModule('layer3', stage(256, layout.layers[2], 2));
    this.layer4 = this.registerModule('layer4', stage(512, layout.layers[3], 2));
    this.numFeatures = inC;
    this.fc = this.registerModule('fc', new nn.Linear(inC, numClasses));
  }

  /** Images [N, 3, H, W] -> pooled features [N, numFeatures] (everything but fc). */
  features(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== 3) throw new RangeError(`ResNet: expected images [N, 3, H, W], got [${x.shape.join(', ')}]`);
    let h = this.bn1.forward(this.conv1.forward(x)).relu(); // [N, 64, H/2, W/2]
    h = torch.maxPool2d(h, 3, 2, 1); // [N, 64, H/4, W/4]
    h = this.layer4.forward(this.layer3.forward(this.layer2.forward(this.layer1.forward(h)))); // [N, C, H/32, W/32]
    return torch.adaptiveAvgPool2d(h, 1).flatten(1); // [N, C]
  }

  /** Images [N, 3, H, W] -> class logits [N, num_classes]. */
  forward(x: Tensor): Tensor {
    return this.fc.forward(this.features(x));
  }

  /**
   * Puts a fresh classifier (PyTorch's default Linear initialisation) in place of fc for a task with numClasses
   * outputs, and returns it. The old head's tensors are released unless keepOld; the new head keeps the name `fc`,
   * so state dicts of the adapted model stay torchvision-shaped.
   */
  replaceHead(numClasses: number, opts: { keepOld?: boolean } = {}): torch.nn.Linear {
    if (!Number.isInteger(numClasses) || numClasses <= 0) throw new Error(`num_classes must be a positive integer, got ${numClasses}`);
    const old = this.fc;
    const p = old.weight;
    const fc = new nn.Linear(this.numFeatures, numClasses).to({ dtype: p.dtype, device: p.device });
    this.fc = this.registerModule('fc', fc);
    this.config.num_classes = numClasses;
    if (!opts.keepOld) old.dispose();
    return fc;
  }
}

export function resnet18(opts: ResNetOptions = {}): ResNet {
  return new ResNet(18, opts);
}

export function resnet50(opts: ResNetOptions = {}): ResNet {
  return new ResNet(50, opts);
}
