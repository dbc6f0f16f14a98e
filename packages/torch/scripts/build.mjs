// Builds the native addon with node-gyp against the libtorch that find-torch.mjs reports.
// Writes native/torch.gypi (ignored by git) so binding.gyp stays free of machine paths.
import { writeFileSync, existsSync, mkdirSync, renameSync, readFileSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findTorch } from './find-torch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
// RETAIN_ADDON_DIR builds a second addon beside the default one (the reference environment's PyTorch 2.x build lives in
// build-torch2/); it is always built directly with g++, since node-gyp writes only to build/. Load it with
// RETAIN_TORCH_ADDON=<dir>/Release/retain_torch.node.
const buildDir = process.env.RETAIN_ADDON_DIR ? resolve(process.env.RETAIN_ADDON_DIR) : join(pkg, 'build');
// Translation units of the addon; binding.gyp lists the same.
const SOURCES = ['engine.cc', 'dist.cc'];

let torch;
try {
  torch = findTorch();
} catch (e) {
  console.error(`\n@retain/torch: ${e.message}\n`);
  process.exit(1);
}
console.log(`@retain/torch: building against ${torch.source}${torch.cuda ? ' (CUDA)' : ''}`);

const c10d = detectC10d(torch);
console.log(`@retain/torch: distributed (c10d): ${c10d.gloo ? `Gloo${c10d.nccl ? ' + NCCL' : ''}${c10d.reducer ? ', c10d::Reducer' : ''}` : `off (${c10d.why})`}`);

const libs = ['-Wl,--no-as-needed', `-L${torch.libDir}`, '-ltorch', '-ltorch_cpu', '-lc10'];
if (torch.cuda) libs.push('-ltorch_cuda', '-lc10_cuda');
libs.push('-Wl,--as-needed', `-Wl,-rpath,${torch.libDir}`);
// Included inside the target, so these keys merge into it.
const gypi = {
  include_dirs: [...torch.includeDirs, ...c10d.includeDirs],
  defines: [
    `_GLIBCXX_USE_CXX11_ABI=${torch.cxx11Abi ? 1 : 0}`, ...(torch.cuda ? ['RETAIN_CUDA=1'] : []),
    ...(c10d.gloo ? ['RETAIN_C10D=1', 'USE_C10D_GLOO=1'] : []), ...(c10d.reducer ? ['RETAIN_C10D_REDUCER=1'] : []), ...(c10d.nccl ? ['RETAIN_NCCL=1', 'USE_C10D_NCCL=1'] : []),
  ],
  libraries: libs,
};
// node-gyp's input; a second addon (RETAIN_ADDON_DIR) is built directly and leaves the default build's file alone.
if (!process.env.RETAIN_ADDON_DIR) writeFileSync(join(pkg, 'native', 'torch.gypi'), JSON.stringify(gypi, null, 2));

// c10d is compiled in only when everything it needs is present: libtorch's c10d headers, Gloo's own headers (Debian:
// libgloo-dev; not every PyTorch ships them) and ProcessGroupGloo exported from libtorch_cpu (a USE_DISTRIBUTED
// build). NCCL additionally needs a CUDA libtorch, its c10d NCCL header and nccl.h. RETAIN_C10D=0 turns it off.
function detectC10d(t) {
  const off = (why) => ({ gloo: false, nccl: false, includeDirs: [], why });
  if (process.env.RETAIN_C10D === '0') return off('RETAIN_C10D=0');
  const c10dDir = t.includeDirs.map((d) => join(d, 'torch', 'csrc', 'distributed', 'c10d')).find((d) => existsSync(join(d, 'ProcessGroupGloo.hpp')));
  if (!c10dDir) return off('libtorch has no c10d headers');
  const glooRoots = [...t.includeDirs, '/usr/include', '/usr/local/include'];
  const glooInc = glooRoots.find((d) => existsSync(join(d, 'gloo', 'algorithm.h')));
  if (!glooInc) return off('Gloo headers not found: apt-get install -y libgloo-dev');
  let syms = null;
  try {
    syms = execFileSync('nm', ['-D', '-C', join(t.libDir, 'libtorch_cpu.so')], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });
    if (!/ T c10d::ProcessGroupGloo::ProcessGroupGloo\(/.test(syms)) return off('libtorch_cpu.so does not export ProcessGroupGloo');
  } catch {
    // Without nm the headers decide; a mismatch shows up as an undefined symbol when the addon loads.
  }
  const extra = glooRoots.includes(glooInc) && t.includeDirs.includes(glooInc) ? [] : [glooInc];
  const nccl = Boolean(t.cuda) && existsSync(join(c10dDir, 'ProcessGroupNCCL.hpp')) &&
    [...t.includeDirs, '/usr/include', '/usr/local/cuda/include'].some((d) => existsSync(join(d, 'nccl.h')));
  // DDP's own Reducer (gradient all-reduce overlapped with backward) needs reducer.hpp and its exported constructor.
  // Debian's headers lack the dist-autograd context.h that reducer.hpp includes; native/shim declares the two names it
  // uses, and goes last on the include path so a complete PyTorch install keeps its own.
  const reducer = existsSync(join(c10dDir, 'reducer.hpp')) && (!syms || / T c10d::Reducer::Reducer\(/.test(syms));
  const hasContext = t.includeDirs.some((d) => existsSync(join(d, 'torch', 'csrc', 'distributed', 'autograd', 'context', 'context.h')));
  if (reducer && !hasContext) extra.push(join(pkg, 'native', 'shim'));
  return { gloo: true, nccl, reducer, includeDirs: extra, why: '' };
}

function nodeGypPath() {
  const candidates = [];
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    const npm = execFileSync('sh', ['-c', 'readlink -f "$(command -v npm)"'], { encoding: 'utf8' }).trim();
    if (npm) candidates.push(join(dirname(npm), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  } catch {}
  return candidates.find((c) => existsSync(c));
}

// node-gyp would download headers; use the ones installed beside this Node (offline machines have no other).
const nodeDir = process.env.NODE_DIR || process.env.npm_config_nodedir || dirname(dirname(process.execPath));
if (!existsSync(join(nodeDir, 'include', 'node', 'node_api.h'))) {
  console.error(`@retain/torch: Node's headers were not found under ${nodeDir}/include/node; set NODE_DIR to the prefix that has them`);
  process.exit(1);
}

// The same flags node-gyp would use, for machines without npm (the lent GPU machine): one g++ call.
function buildDirect() {
  const out = join(buildDir, 'Release');
  mkdirSync(out, { recursive: true });
  const cxx = process.env.CXX || 'g++';
  const args = [
    '-shared', '-fPIC', '-O3', '-std=c++17', '-fexceptions', '-frtti', '-Wno-deprecated-declarations',
    '-DNODE_GYP_MODULE_NAME=retain_torch', '-DBUILDING_NODE_EXTENSION', ...gypi.defines.map((d) => `-D${d}`),
    `-I${join(nodeDir, 'include', 'node')}`, ...gypi.include_dirs.map((d) => `-I${d}`),
    ...SOURCES.map((f) => join(pkg, 'native', f)), '-o', join(out, 'retain_torch.node.tmp'), ...libs,
  ];
  console.log(`@retain/torch: ${cxx} ${args.join(' ')}`);
  execFileSync(cxx, args, { stdio: 'inherit' });
  // Rename, never overwrite in place: a running process may have the old library mapped.
  renameSync(join(out, 'retain_torch.node.tmp'), join(out, 'retain_torch.node'));
}

// `npm install` in a working checkout re-runs this; rebuilding (which deletes build/) under running processes is
// disruptive, so an addon newer than its source and built against the same torch is kept. RETAIN_REBUILD=1 forces.
const addon = join(buildDir, 'Release', 'retain_torch.node');
const stamp = join(buildDir, 'torch-source.json');
const stampText = JSON.stringify({ source: torch.source, includeDirs: torch.includeDirs, libDir: torch.libDir, cuda: torch.cuda, c10d: gypi.defines });
if (process.env.RETAIN_REBUILD !== '1' && existsSync(addon) && existsSync(stamp) && readFileSync(stamp, 'utf8') === stampText &&
    [...SOURCES, 'engine.h'].every((f) => statSync(addon).mtimeMs > statSync(join(pkg, 'native', f)).mtimeMs)) {
  console.log('@retain/torch: addon is up to date (RETAIN_REBUILD=1 to force)');
  process.exit(0);
}

const gyp = nodeGypPath();
try {
  if (process.env.RETAIN_BUILD === 'direct' || process.env.RETAIN_ADDON_DIR || !gyp) {
    buildDirect();
  } else {
    const args = [gyp, 'rebuild', `--jobs=${process.env.JOBS || '2'}`, `--nodedir=${nodeDir}`];
    execFileSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });
  }
} catch {
  console.error('@retain/torch: native build failed (see the compiler output above)');
  process.exit(1);
}
writeFileSync(stamp, stampText);
