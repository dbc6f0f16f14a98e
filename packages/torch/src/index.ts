// @retain/torch: PyTorch's libtorch for TypeScript.
export { native, physicalCores, hasOp, opId, isFloating, DTYPE_CODE, DTYPE_SIZE, type DType, type Scalar, type DeviceLike } from './core.js';
export { Tensor, tidy, keep, dispose, liveTensors, type IndexSpec } from './tensor.js';
export * from './creation.js';
export * from './autograd.js';
export * from './functional.js';
export * as ops from './ops/generated.js';
export * as nn from './nn/index.js';
export * as io from './io/index.js';
export * as optim from './optim/index.js';
export * as distributed from './distributed.js';
