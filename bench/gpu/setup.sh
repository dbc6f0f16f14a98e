#!/usr/bin/env bash
# Prepares the lent GPU machine (see docs/GPU.md): unpacks the carried Node, builds the addon against that machine's
# CUDA PyTorch and regenerates the op wrappers from its dispatcher. Run from the repository root, with `.gpu` carried.
set -euo pipefail
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node
export PATH=/tmp:$PATH
rm -rf node_modules && cp -r .gpu/node_modules node_modules
mkdir -p node_modules/@retain && ln -sfn ../../packages/torch node_modules/@retain/torch && ln -sfn ../../packages/retain node_modules/@retain/retain
TORCH_PYTHON=python3 NODE_DIR=$PWD/.gpu/nodedir RETAIN_BUILD=direct node packages/torch/scripts/build.mjs
node packages/torch/scripts/gen-ops.mjs
