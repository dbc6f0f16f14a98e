// training.precision: what it means on each device. On CUDA, bf16/fp16 autocast over float32 weights. On CPU, bf16
// loads the weights in bfloat16 and AdamW keeps float32 master weights and moments (torch/optim/adamw.ts
// masterWeights): half the weight memory and bfloat16 matmuls, while updates smaller than a bfloat16 step still add up.
import type { DType } from '@retain/torch';
import type { TrainConfig } from '../config.js';

export interface PrecisionPlan {
  /** The dtype to load the weights in; undefined keeps the checkpoint's float32. */
  dtype: DType | undefined;
  autocast: 'bfloat16' | 'float16' | null;
  masterWeights: boolean;
}

export function precisionPlan(cfg: TrainConfig): PrecisionPlan {
  const t = cfg.training;
  const loadAs = cfg.model.dtype === 'float32' ? undefined : cfg.model.dtype;
  if (cfg.model.device.startsWith('cuda') || t.precision === 'fp32') {
    return { dtype: loadAs, autocast: t.precision === 'bf16' ? 'bfloat16' : t.precision === 'fp16' ? 'float16' : null, masterWeights: false };
  }
  if (t.precision === 'fp16') throw new Error('training.precision fp16 needs model.device cuda (float16 autocast); on CPU use precision bf16 (bfloat16 weights, float32 optimizer state)');
  if (loadAs && loadAs !== 'bfloat16') throw new Error(`training.precision bf16 on CPU loads the weights in bfloat16, but model.dtype is ${cfg.model.dtype}; drop one of them`);
  if (t.optimizer !== 'adamw') throw new Error(`training.precision bf16 on CPU keeps float32 master weights in AdamW; optimizer ${t.optimizer} has none (use adamw, or model.dtype bfloat16 for plain bfloat16 ${t.optimizer})`);
  return { dtype: 'bfloat16', autocast: null, masterWeights: true };
}
