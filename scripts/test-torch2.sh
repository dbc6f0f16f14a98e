#!/usr/bin/env bash
# The whole test suite again, on PyTorch 2.x: the reference environment's torch (scripts/refenv.sh) gets its own addon
# in packages/torch/build-torch2 (CPU kernels; the wheel's CUDA libraries only load), and every test runs against it.
# Arguments are test-file filters, as for `npm test`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/refenv.sh
py="${RETAIN_REFENV:-$root/.refenv}/bin/python"
RETAIN_CUDA=0 TORCH_PYTHON="$py" RETAIN_ADDON_DIR=packages/torch/build-torch2 node packages/torch/scripts/build.mjs
export RETAIN_TORCH_ADDON="$root/packages/torch/build-torch2/Release/retain_torch.node"
echo "test:torch2: $("$py" -c 'import torch; print("torch", torch.__version__)') via $RETAIN_TORCH_ADDON"
exec node scripts/run-tests.mjs "$@"
