#!/usr/bin/env bash
# Checks the packages as a user gets them: `npm pack` of @retain/torch and @retain/retain (each builds its dist/ in
# prepack), both tarballs installed into a fresh folder outside the workspace (the addon is compiled there by
# @retain/torch's install script), then `npx retain --help` and `npx retain demo` run there on the compiled
# JavaScript, with no TypeScript loader installed. Prints the time of each stage.
# Usage: bash scripts/pack-check.sh [demo arguments...]   (default: the whole demo, as README's set-up runs it)
# Environment: PACK_CHECK_DIR (default: a new folder under /tmp; kept afterwards for a look), and whatever the addon
# build reads (TORCH_PYTHON, TORCH_DIR, JOBS).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${PACK_CHECK_DIR:-$(mktemp -d /tmp/retain-pack-check.XXXXXX)}"
mkdir -p "$dir/app"
case "$dir" in "$root"/*) echo "pack-check: $dir is inside the workspace; give a folder outside it" >&2; exit 2;; esac
start=$SECONDS
stage() { echo "pack-check: $1 ($((SECONDS - start)) s so far)"; }

stage "packing into $dir"
(cd "$root" && npm pack --silent --pack-destination "$dir" -w @retain/torch -w @retain/retain >/dev/null)
ls "$dir"/retain-torch-*.tgz "$dir"/retain-retain-*.tgz
# What a tarball must not carry: TypeScript sources or tests; what it must: the compiled entry points and types.
# (Listings go through files: grep -q closing a pipe early would fail the pipeline under pipefail.)
for t in "$dir"/retain-*.tgz; do
  tar -tzf "$t" > "$t.files"
  if grep -E '^package/(src|test)/|\.ts$' "$t.files" | grep -v '\.d\.ts$' | grep -q .; then
    echo "pack-check: $t carries TypeScript sources or tests" >&2; exit 1
  fi
done
grep -qx 'package/dist/index.d.ts' "$dir"/retain-torch-*.tgz.files
grep -qx 'package/dist/cli/main.js' "$dir"/retain-retain-*.tgz.files
grep -qx 'package/assets/stories260K/stories260K.bin' "$dir"/retain-retain-*.tgz.files

stage "installing both tarballs into $dir/app (compiles the addon)"
cd "$dir/app"
# allowScripts: npm 11 warns (and a later npm may refuse) to run a dependency's install script not approved here; a
# tarball is approved by its file: spec, as `npm install-scripts approve` writes it.
torch_tgz=$(ls "$dir"/retain-torch-*.tgz)
[ -f package.json ] || printf '{"name": "retain-pack-check", "private": true, "type": "module", "allowScripts": {"file:%s": true}}\n' "$torch_tgz" > package.json
npm install --no-audit --no-fund "$dir"/retain-torch-*.tgz "$dir"/retain-retain-*.tgz
if [ -e node_modules/tsx ] || [ -e node_modules/typescript ]; then
  echo "pack-check: a TypeScript loader or compiler was installed with the packages" >&2; exit 1
fi

stage "retain --help"
test -s node_modules/@retain/torch/build/Release/retain_torch.node
timed() { local t0; t0=$(date +%s.%N); "$@" >/dev/null; echo "pack-check: '$*' took $(echo "$(date +%s.%N) - $t0" | bc) s"; }
timed npx retain --help
timed node node_modules/.bin/retain --help
# The library entry and a module by its path, as the README shows them, from plain Node.
node --input-type=module -e "
  const m = await import('@retain/retain');
  const r = await import('@retain/retain/data/readers.js');
  if (typeof m.runTraining !== 'function' || typeof r.readRecords !== 'function') throw new Error('exports missing');"

stage "npx retain demo $*"
npx retain demo "$@"
test -s runs/demo/report.html
stage "done: packed, installed and ran the demo from $dir/app"
