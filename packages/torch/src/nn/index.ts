// torch.nn: modules, layers and initialisers.
export { Module, type StateDict, type StateDictLike, type FactoryOptions, type ConvertTarget, type LoadResult } from './module.js';
export * from './layers.js';
export * from './rnn.js';
export * from './container.js';
export * from './attention.js';
export * as init from './init.js';
