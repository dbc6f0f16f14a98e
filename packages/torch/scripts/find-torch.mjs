// Locates a libtorch to build against and describes it as JSON:
//   { includeDirs, libDir, cxx11Abi, cuda, source, version }
// Order: TORCH_DIR (an unpacked libtorch or a torch package folder), TORCH_PYTHON (an interpreter with torch),
// then Debian's libtorch-dev. Exits non-zero with one actionable message when none is found.
import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

function fromDir(dir, source) {
  const inc = join(dir, 'include');
  const lib = join(dir, 'lib');
  if (!existsSync(join(inc, 'ATen', 'ATen.h'))) throw new Error(`${source}=${dir}: ${inc}/ATen/ATen.h not found`);
  const libs = existsSync(lib) ? lib : null;
  if (!libs || !existsSync(join(lib, 'libtorch_cpu.so'))) throw new Error(`${source}=${dir}: ${lib}/libtorch_cpu.so not found`);
  return {
    includeDirs: [inc, join(inc, 'torch', 'csrc', 'api', 'include')],
    libDir: lib,
    cxx11Abi: process.env.TORCH_CXX11_ABI ? process.env.TORCH_CXX11_ABI === '1' : true,
    cuda: existsSync(join(lib, 'libtorch_cuda.so')),
    source: `${source}=${dir}`,
  };
}

export function findTorch() {
  if (process.env.TORCH_DIR) return fromDir(process.env.TORCH_DIR, 'TORCH_DIR');
  if (process.env.TORCH_PYTHON) {
    const py = process.env.TORCH_PYTHON;
    const code = [
      'import json, os, torch',
      'import torch.utils.cpp_extension as ce',
      // RETAIN_CUDA=0 builds a CPU addon against a CUDA wheel (the reference environment on a machine without the
      // CUDA toolkit, whose headers a CUDA build needs); the wheel's own CUDA libraries still load at run time.
      `cuda = torch.version.cuda is not None and ${process.env.RETAIN_CUDA === '0' ? 'False' : 'True'}`,
      'inc = list(ce.include_paths())',
      'if cuda:',
      '    try: inc = list(ce.include_paths("cuda"))',
      '    except TypeError: inc = list(ce.include_paths(cuda=True))',
      '    if ce.CUDA_HOME: inc.append(os.path.join(ce.CUDA_HOME, "include"))',
      'print(json.dumps({"includeDirs": inc, "libDir": os.path.join(os.path.dirname(torch.__file__), "lib"),',
      '  "cxx11Abi": bool(torch.compiled_with_cxx11_abi()), "cuda": cuda, "version": torch.__version__}))',
    ].join('\n');
    let out;
    try {
      out = execFileSync(py, ['-c', code], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`TORCH_PYTHON=${py} could not import torch: ${String(e.stderr || e.message).trim().split('\n').pop()}`);
    }
    const info = JSON.parse(out.trim().split('\n').pop());
    info.includeDirs = info.includeDirs.filter((d) => !/TH|THC/.test(d.split('/').pop()));
    return { ...info, source: `TORCH_PYTHON=${py}` };
  }
  const debInc = '/usr/include/ATen/ATen.h';
  const multiarch = ['x86_64-linux-gnu', 'aarch64-linux-gnu'].find((a) => existsSync(`/usr/lib/${a}/libtorch_cpu.so`));
  if (existsSync(debInc) && multiarch) {
    return {
      includeDirs: ['/usr/include', '/usr/include/torch/csrc/api/include'],
      libDir: `/usr/lib/${multiarch}`,
      cxx11Abi: true,
      cuda: existsSync(`/usr/lib/${multiarch}/libtorch_cuda.so`),
      source: 'Debian libtorch-dev',
    };
  }
  throw new Error(
    'libtorch was not found. Install it with `sudo apt-get install -y libtorch-dev` (Debian/Ubuntu), ' +
      'or point the build at a PyTorch: TORCH_PYTHON=/path/to/python (with torch installed) or TORCH_DIR=/path/to/libtorch.',
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    console.log(JSON.stringify(findTorch(), null, 2));
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
