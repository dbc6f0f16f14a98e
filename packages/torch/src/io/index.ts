// Checkpoint input and output.
export {
  loadSafetensors, openSafetensors, saveSafetensors, parseHeader, SafetensorsFile, SafetensorsError, MAX_HEADER_BYTES,
  type TensorInfo, type LoadOptions, type ConvertOptions, type LoadedTensors, type TensorDict,
} from './safetensors.js';
export { loadSharded, readShardedHeaders, saveSharded, type SaveShardedOptions, type SaveShardedResult } from './sharded.js';
