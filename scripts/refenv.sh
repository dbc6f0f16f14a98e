#!/usr/bin/env bash
# Creates the reference environment: a Python virtual environment holding the real implementations retain is checked
# against (PyTorch 2.x, transformers, PEFT, tokenizers, safetensors, lm-evaluation-harness, sentence-transformers,
# TensorBoard). Tests, benchmarks and the one-time model conversion use it; the product never does.
#
#   bash scripts/refenv.sh            # creates or completes .refenv/ at the repository root
#   RETAIN_REFENV=/path bash scripts/refenv.sh
#
# Idempotent: a finished environment (its stamp matches this file's pins) returns at once. The install time goes to
# .refenv/install-seconds so CI's log and docs/RESULTS.md can quote it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
env_dir="${RETAIN_REFENV:-$root/.refenv}"
python="${PYTHON:-python3}"

# One line per package; the stamp below is a hash of this list, so changing a pin rebuilds the environment.
pins="
torch==2.11.0
transformers==5.23.0
peft==0.21.2
tokenizers==0.23.3
safetensors==0.8.0
lm-eval==0.4.13
sentence-transformers==6.2.0
tensorboard==2.21.0
jsonschema==4.26.0
numpy
"
stamp="$(printf '%s' "$pins" | sha256sum | cut -c1-16)"
if [ -f "$env_dir/.stamp" ] && [ "$(cat "$env_dir/.stamp")" = "$stamp" ]; then
  echo "refenv: $env_dir is ready ($(cat "$env_dir/install-seconds" 2>/dev/null || echo '?') s to install)"
  exit 0
fi
start=$(date +%s)
"$python" -m venv "$env_dir"
# shellcheck disable=SC2086
"$env_dir/bin/pip" install --quiet --disable-pip-version-check $pins
# Models retain's tests use as references are built by transformers at test time; nothing is fetched from a hub.
"$env_dir/bin/python" - <<'PY'
import torch, transformers, peft, tokenizers, safetensors, lm_eval, sentence_transformers, tensorboard
print("refenv: torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__,
      "| tokenizers", tokenizers.__version__, "| lm-eval", lm_eval.__version__)
PY
echo $(( $(date +%s) - start )) > "$env_dir/install-seconds"
echo "$stamp" > "$env_dir/.stamp"
echo "refenv: installed in $(cat "$env_dir/install-seconds") s"
