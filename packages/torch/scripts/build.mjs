// Builds the native addon with node-gyp against the libtorch that find-torch.mjs reports.
// Writes native/torch.gypi (ignored by git) so binding.gyp stays free of machine paths.
import { writeFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findTorch } from './find-torch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');

let torch;
try {
  torch = findTorch();
} catch (e) {
  console.error(`\n@retain/torch: ${e.message}\n`);
  process.exit(1);
}
console.log(`@retain/torch: building against ${torch.source}${torch.cuda ? ' (CUDA)' : ''}`);

const libs = ['-Wl,--no-as-needed', `-L${torch.libDir}`, '-ltorch', '-ltorch_cpu', '-lc10'];
if (torch.cuda) libs.push('-ltorch_cuda', '-lc10_cuda');
libs.push('-Wl,--as-needed', `-Wl,-rpath,${torch.libDir}`);
// Included inside the target, so these keys merge into it.
const gypi = {
  include_dirs: torch.includeDirs,
  defines: [`_GLIBCXX_USE_CXX11_ABI=${torch.cxx11Abi ? 1 : 0}`, ...(torch.cuda ? ['RETAIN_CUDA=1'] : [])],
  libraries: libs,
};
writeFileSync(join(pkg, 'native', 'torch.gypi'), JSON.stringify(gypi, null, 2));

function nodeGyp() {
  const candidates = [];
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    const npm = execFileSync('sh', ['-c', 'readlink -f "$(command -v npm)"'], { encoding: 'utf8' }).trim();
    candidates.push(join(dirname(npm), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  } catch {}
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    console.error('@retain/torch: node-gyp not found (it ships with npm); install npm or node-gyp');
    process.exit(1);
  }
  return found;
}

const jobs = process.env.JOBS || '2';
const args = [nodeGyp(), 'rebuild', `--jobs=${jobs}`];
// node-gyp would download headers; use the ones installed beside this Node (offline machines have no other).
const nodeDir = process.env.NODE_DIR || process.env.npm_config_nodedir || dirname(dirname(process.execPath));
if (existsSync(join(nodeDir, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${nodeDir}`);
try {
  execFileSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });
} catch {
  console.error('@retain/torch: native build failed (see the compiler output above)');
  process.exit(1);
}
