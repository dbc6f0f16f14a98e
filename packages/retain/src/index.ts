// @retain/retain as a library: the entry points a script needs to do what `retain train` and `retain generate` do.
// Every other module is reachable by its path (`@retain/retain/eval/harness.js`, from dist/).
export { loadTrainConfig, type TrainConfig } from './config.js';
export { runTraining } from './train/run.js';
export { loadPretrained, savePretrained, type Pretrained } from './models/hub.js';
export { generate, type GenerateOptions } from './models/generate.js';
export { readRecords } from './data/readers.js';
export { DataError, type Record_ } from './data/records.js';
