// Generates src/ops/generated.ts from the live dispatcher of the libtorch the addon was built against.
// Run after building for a new torch version: `node scripts/gen-ops.mjs`. Never edit the output by hand.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const require = createRequire(import.meta.url);
const native = require(join(pkg, 'build', 'Release', 'retain_torch.node'));

const RESERVED = new Set(
  ('break case catch class const continue debugger default delete do else enum export extends false finally for ' +
    'function if import in instanceof new null return super switch this throw true try typeof var void while with ' +
    'yield let static implements interface package private protected public await arguments eval').split(' '),
);

const TS_TYPE = {
  Tensor: 'Tensor',
  'Tensor[]': 'Tensor[]',
  'Tensor?[]': '(Tensor | null)[]',
  int: 'number',
  SymInt: 'number',
  'int[]': 'number | number[]',
  'SymInt[]': 'number | number[]',
  float: 'number',
  'float[]': 'number | number[]',
  bool: 'boolean',
  'bool[]': 'boolean[]',
  Scalar: 'Scalar',
  'Scalar[]': 'Scalar[]',
  ScalarType: 'DType',
  Layout: 'number',
  Device: 'DeviceLike',
  MemoryFormat: 'number',
  str: 'string',
  Generator: 'null',
};

function ident(name) {
  const id = name.replace(/[^A-Za-z0-9_]/g, '_');
  return RESERVED.has(id) ? `${id}_` : id;
}

// JS expression that turns parameter `p` of schema kind `k` into what native.call expects.
function toNative(p, k, optional) {
  switch (k) {
    case 'Tensor':
      return optional ? `${p}?.h` : `${p}.h`;
    case 'Tensor[]':
      return `hs(${p})`;
    case 'Tensor?[]':
      return `ohs(${p})`;
    case 'ScalarType':
      return `dt(${p})`;
    case 'Device':
      return `dev(${p})`;
    default:
      return p;
  }
}

const ops = native.listOps().sort((a, b) => (a[0] + '.' + a[1] < b[0] + '.' + b[1] ? -1 : 1));
const version = native.version();
const rows = [];
const names = [];
const seen = new Set();
let skipped = 0;
for (const [name, overload, schema, args, rets] of ops) {
  if (!name.startsWith('aten::')) continue;
  const base = name.slice(6);
  const fname = ident(overload ? `${base}_${overload}` : base);
  if (seen.has(fname)) continue;
  const bad = args.find((a) => a[1] === 'unsupported' && !a[4] && !a[2]);
  const badRet = rets.find((r) => r[0] === 'unsupported');
  if (bad || badRet) {
    skipped++;
    continue;
  }
  seen.add(fname);
  const idx = names.length;
  names.push(`${name}.${overload}`);
  // Optional-looking parameters (default or None-able) become `?` only after the last required one.
  let lastRequired = -1;
  args.forEach((a, i) => {
    const [, kind, optional, , hasDefault] = a;
    if (!optional && !hasDefault && kind !== 'Generator') lastRequired = i;
  });
  const params = [];
  const passes = [];
  const used = new Set();
  args.forEach((a, i) => {
    const [aname, kind, optional, , hasDefault] = a;
    let p = ident(aname);
    while (used.has(p)) p += '_';
    used.add(p);
    if (kind === 'unsupported') {
      params.push(i > lastRequired ? `${p}?: undefined` : `${p}: undefined`);
      passes.push('undefined');
      return;
    }
    let t = TS_TYPE[kind];
    if (optional && kind !== 'Generator') t += ' | null';
    const soft = optional || hasDefault || kind === 'Generator';
    if (soft && i > lastRequired) params.push(`${p}?: ${t}`);
    else if (soft) params.push(`${p}: ${t} | undefined`);
    else params.push(`${p}: ${t}`);
    passes.push(toNative(p, kind, optional || hasDefault || kind === 'Generator'));
  });
  let retType;
  let body;
  const call = `native.call(op(${idx})${passes.length ? ', ' + passes.join(', ') : ''})`;
  const retTs = (r) => {
    if (r[2] >= 0) return 'Tensor';
    const t = { Tensor: 'Tensor', 'Tensor[]': 'Tensor[]' }[r[0]] ?? TS_TYPE[r[0]] ?? 'unknown';
    return r[1] ? `${t} | null` : t;
  };
  const argName = (j) => [...used][j];
  if (rets.length === 0) {
    retType = 'void';
    body = `${call};`;
  } else if (rets.length === 1) {
    const r = rets[0];
    retType = retTs(r);
    if (r[2] >= 0) body = `${call};\n  return ${argName(r[2])};`;
    else if (r[0] === 'Tensor') body = `return wrapOpt(${call});`;
    else if (r[0] === 'Tensor[]') body = `return wrapList(${call});`;
    else if (r[0] === 'ScalarType') body = `return dtName(${call});`;
    else body = `return ${call};`;
  } else {
    retType = `[${rets.map(retTs).join(', ')}]`;
    const conv = rets.map((r, j) => {
      if (r[2] >= 0) return argName(r[2]);
      if (r[0] === 'Tensor') return `wrapOpt(r[${j}])`;
      if (r[0] === 'Tensor[]') return `wrapList(r[${j}])`;
      return `r[${j}]`;
    });
    body = `const r = ${call};\n  return [${conv.join(', ')}] as ${retType};`;
  }
  rows.push(`/** \`${schema.replace(/\*\//g, '* /')}\` */\nexport function ${fname}(${params.join(', ')}): ${retType} {\n  ${body}\n}`);
}

const header = `// GENERATED by packages/torch/scripts/gen-ops.mjs from the dispatcher of libtorch ${version}.
// Do not edit: regenerate with \`node packages/torch/scripts/gen-ops.mjs\` after building against another torch.
// ${rows.length} aten overloads; ${skipped} skipped because an argument or return type cannot cross to JS.
/* eslint-disable */
import { native, dt, dtName, dev, opResolver, type Scalar, type DType, type DeviceLike } from '../core.js';
import { wrapOpt, wrapList, hs, ohs, type Tensor } from '../tensor.js';

const op = opResolver(${JSON.stringify(names)});
`;
const out = join(pkg, 'src', 'ops', 'generated.ts');
writeFileSync(out, header + '\n' + rows.join('\n\n') + '\n');
console.log(`wrote ${out}: ${rows.length} ops (${skipped} skipped) for libtorch ${version}`);
