import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { ResNet, resnet18, resnet50, type ResNetDepth } from '../src/models/resnet.js';
import { needPython } from '../../torch/test/helpers.js';
import { assertTensorClose, pyTensors } from './pyref.js';

// BatchNorm at its initial values (weight 1, bias 0, mean 0, var 1) would hide a swapped or ignored statistic.
function perturbNorms(m: ResNet): void {
  torch.noGrad(() => {
    for (const mod of m.modules()) {
      if (!(mod instanceof torch.nn.BatchNorm2d)) continue;
      mod.weight!.uniform_(0.5, 1.5);
      mod.bias!.normal_(0, 0.1);
      mod.running_mean!.normal_(0, 0.1);
      mod.running_var!.uniform_(0.5, 1.5);
      mod.num_batches_tracked!.fill_(3);
    }
  });
}

// torchvision is not installed beside Debian's python3-torch, so the reference is bench/py/resnet_ref.py, a plain
// PyTorch ResNet with torchvision's module names.
for (const [depth, size] of [[18, 48], [50, 64]] as [ResNetDepth, number][]) {
  test(`ResNet-${depth}: keys, eval and train logits, gradients and running statistics match python3-torch (bench/py/resnet_ref.py)`, { skip: needPython(), timeout: 240_000 }, () => {
    torch.manualSeed(depth);
    const model = new ResNet(depth, { num_classes: 10 }).to('float64');
    perturbNorms(model);
    const x = torch.randn([2, 3, size, size], { dtype: 'float64' });
    const y = [3, 7];
    const tensors = new Map(model.stateDict());
    tensors.set('__x', x);
    const ref = pyTensors(`
from resnet_ref import ResNet
x = W.pop('__x')
m = ResNet(inp['depth'], num_classes=10).double()
out['keys'] = list(m.state_dict().keys())
m.load_state_dict(W, strict=True)
with torch.no_grad():
    OUT['eval'] = m.eval()(x)
logits = m.train()(x)
torch.nn.functional.cross_entropy(logits, torch.tensor(inp['y'])).backward()
OUT['train'] = logits
for k, p in m.named_parameters():
    OUT['grad.' + k] = p.grad
for k, b in m.named_buffers():
    OUT['buf.' + k] = b
`, tensors, { depth, y });
    assert.deepEqual([...model.stateDict().keys()], ref.out.keys, 'state-dict keys and order are torchvision\'s');
    torch.tidy(() => {
      const evalLogits = torch.noGrad(() => model.eval().forward(x)); // [2, 10]
      assertTensorClose(evalLogits, ref.tensors.get('eval'), { rtol: 1e-10, atol: 1e-12, msg: 'eval logits' });
      const logits = model.train().forward(x);
      assertTensorClose(logits, ref.tensors.get('train'), { rtol: 1e-9, atol: 1e-11, msg: 'train logits' });
      torch.crossEntropy(logits, torch.tensor(y)).backward();
      for (const [k, p] of model.namedParameters()) assertTensorClose(p.grad!, ref.tensors.get(`grad.${k}`), { rtol: 1e-7, atol: 1e-10, msg: `grad ${k}` });
      for (const [k, b] of model.namedBuffers()) assertTensorClose(b, ref.tensors.get(`buf.${k}`), { rtol: 1e-10, atol: 1e-12, msg: `buffer ${k}` });
    });
    model.dispose();
    torch.dispose(ref.tensors.values());
  });
}

test('ResNet-18 and ResNet-50 have torchvision\'s parameter counts and key layout', () => {
  const r18 = resnet18();
  assert.equal(r18.numParameters(), 11_689_512);
  assert.equal(r18.numFeatures, 512);
  const keys18 = [...r18.stateDict().keys()];
  assert.equal(keys18.length, 122);
  for (const k of ['conv1.weight', 'bn1.running_var', 'bn1.num_batches_tracked', 'layer1.0.conv2.weight', 'layer2.0.downsample.0.weight', 'layer2.0.downsample.1.running_mean', 'layer4.1.bn2.bias', 'fc.weight', 'fc.bias']) {
    assert.ok(keys18.includes(k), k);
  }
  assert.ok(!keys18.includes('layer1.0.downsample.0.weight'), 'layer1 keeps its width: no shortcut projection');
  assert.deepEqual(r18.getParameter('fc.weight').shape, [1000, 512]);
  r18.dispose();
  const r50 = resnet50();
  assert.equal(r50.numParameters(), 25_557_032);
  assert.equal(r50.numFeatures, 2048);
  const keys50 = [...r50.stateDict().keys()];
  assert.equal(keys50.length, 320);
  assert.ok(keys50.includes('layer1.0.downsample.0.weight') && keys50.includes('layer3.5.conv3.weight'));
  assert.deepEqual(r50.getParameter('layer2.0.conv2.weight').shape, [128, 128, 3, 3]);
  r50.dispose();
});

test('ResNet: replaceHead gives a new task\'s classifier; features skip it; shape errors name the key', () => {
  torch.manualSeed(0);
  const model = resnet18({ num_classes: 10 });
  const pretrained = model.stateDict();
  const head = model.replaceHead(5);
  assert.equal(model.fc, head);
  assert.equal(model.config.num_classes, 5);
  assert.deepEqual(model.getParameter('fc.weight').shape, [5, 512]);
  assert.ok(model.parameters().includes(head.weight), 'the optimiser sees the new head');
  torch.noGrad(() => torch.tidy(() => {
    const x = torch.randn([2, 3, 32, 32]);
    model.eval();
    assert.deepEqual(model.forward(x).shape, [2, 5]);
    const f = model.features(x); // [2, 512]
    assert.deepEqual(f.shape, [2, 512]);
    assertTensorClose(head.forward(f), model.forward(x), { rtol: 1e-6, atol: 1e-6, msg: 'features then head' });
  }));
  // A 10-class checkpoint no longer fits: the error names the head's keys.
  assert.throws(() => model.loadStateDict(pretrained), /size mismatch for fc\.weight: copying a param with shape \[10, 512\] from checkpoint, the shape in current model is \[5, 512\]/);
  // The body loads alone (non-strict), leaving the new head as it is.
  const body = new Map([...pretrained].filter(([k]) => !k.startsWith('fc.')));
  const r = model.loadStateDict(body, { strict: false });
  assert.deepEqual(r.missingKeys, ['fc.weight', 'fc.bias']);
  assert.throws(() => new ResNet(20 as ResNetDepth), /depth must be one of 18, 34, 50, 101, 152/);
  model.dispose();
});

test('ResNet: zero_init_residual starts every block\'s last BatchNorm at zero', () => {
  const m = new ResNet(50, { zero_init_residual: true, num_classes: 4 });
  torch.tidy(() => {
    assert.equal(m.getParameter('layer1.0.bn3.weight').abs().sum().item(), 0);
    assert.equal(m.getParameter('layer1.0.bn2.weight').sum().item(), 64);
  });
  m.dispose();
});
