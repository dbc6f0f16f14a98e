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
# The soak and the SIGINT storm check retain's own stop-and-resume logic, which the libtorch pass before this one runs
# at full size (20 runs, 30 signals); here a few of each show it holds on 2.x, and keep CI within its time.
export RETAIN_SOAK_RUNS="${RETAIN_SOAK_RUNS:-6}" RETAIN_SIGINT_RUNS="${RETAIN_SIGINT_RUNS:-10}"
exec node scripts/run-tests.mjs "$@"
