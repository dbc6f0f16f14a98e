// CUDA smoke check for the lent GPU machine: device placement, autograd, bf16 matmul, memory stats.
import * as torch from '../../packages/torch/src/index.js';
import { native } from '../../packages/torch/src/core.js';

console.log('torch', torch.torchVersion(), 'cuda devices', torch.cudaDeviceCount());
torch.manualSeed(0);
torch.tidy(() => {
  const a = torch.randn([256, 256], { device: 'cuda', requiresGrad: true });
  const b = torch.randn([256, 256], { device: 'cuda' });
  const y = a.matmul(b).relu().sum();
  y.backward();
  const g = a.grad!;
  console.log('device', a.device, 'grad device', g.device, 'loss', y.item().toFixed(3));
  const ref = a.detach().cpu().matmul(b.cpu()).relu().sum().item();
  console.log('cpu vs cuda loss rel err', Math.abs(ref - y.item()) / Math.abs(ref));
  const h = a.detach().bfloat16().matmul(b.bfloat16());
  console.log('bf16 dtype', h.dtype, h.device);
  const att = torch.scaledDotProductAttention(torch.randn([2, 4, 64, 32], { device: 'cuda', dtype: 'bfloat16' }),
    torch.randn([2, 4, 64, 32], { device: 'cuda', dtype: 'bfloat16' }), torch.randn([2, 4, 64, 32], { device: 'cuda', dtype: 'bfloat16' }), { causal: true });
  console.log('sdpa', att.shape, att.dtype);
  native.cudaSynchronize();
  console.log('cuda memory [allocated, peak, reserved]', native.cudaMemory(0));
});
