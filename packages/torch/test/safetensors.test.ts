import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as torch from '../src/index.js';
import { io, type DType, type Tensor } from '../src/index.js';
import { PYTHON, needPython, py } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'retain-safetensors-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const fresh = (stem = 'f') => path.join(tmp, `${stem}-${++counter}.safetensors`);

const hex = (t: Tensor): string => Buffer.from(torch.native.toBytes(t.h)).toString('hex');
const bitsOf = <T extends ArrayBufferView>(arr: T, dtype: DType, shape: number[]): Tensor => torch.fromBytes(arr, dtype, shape);

/** One tensor of every dtype, with the values that break careless code: extremes, NaN payloads, -0, subnormals. */
function everyDType(): Map<string, Tensor> {
  return new Map<string, Tensor>([
    ['bool', torch.tensor([true, false, true, true])],
    ['uint8', torch.tensor(new Uint8Array([0, 1, 127, 128, 255]))],
    ['int8', torch.tensor(new Int8Array([-128, -1, 0, 1, 127]))],
    ['int16', torch.tensor(new Int16Array([-32768, -1, 0, 32767]))],
    ['int32', torch.tensor(new Int32Array([-(2 ** 31), -7, 0, 2 ** 31 - 1]), { shape: [2, 2] })],
    ['int64', torch.tensor(new BigInt64Array([2n ** 62n + 1n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, 0n, -3n]), { shape: [3, 2] })],
    // +1, -2, inf, -inf, a NaN with payload, -0, the smallest subnormal, the largest finite.
    ['bfloat16', bitsOf(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0xff80, 0x7fc1, 0x8000, 0x0001, 0x7f7f]), 'bfloat16', [2, 4])],
    ['float16', bitsOf(new Uint16Array([0x3c00, 0xc000, 0x7c00, 0xfc00, 0x7e01, 0x8000, 0x0001, 0x7bff]), 'float16', [8])],
    ['float32', bitsOf(new Uint32Array([0x3fc00000, 0x7f800000, 0xff800000, 0x7fc00123, 0x80000000, 0x00000001, 0x7f7fffff]), 'float32', [7])],
    ['float64', torch.tensor(new Float64Array([Math.PI, -1e300, 5e-324, -0, Infinity]))],
  ]);
}

test('every dtype round-trips bit for bit, with shapes', () => {
  torch.tidy(() => {
    const src = everyDType();
    const file = fresh();
    io.saveSafetensors(file, src);
    const got = io.loadSafetensors(file);
    assert.deepEqual([...got.keys()].sort(), [...src.keys()].sort());
    for (const [name, t] of src) {
      const g = got.get(name)!;
      assert.equal(g.dtype, t.dtype, name);
      assert.deepEqual(g.shape, t.shape, name);
      assert.equal(hex(g), hex(t), `${name} bytes`);
    }
    const big = got.get('int64')!.data() as BigInt64Array;
    assert.deepEqual([...big], [2n ** 62n + 1n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, 0n, -3n]);
    assert.deepEqual(got.get('bool')!.toArray(), [true, false, true, true]);
    assert.deepEqual(new Uint16Array(torch.native.toBytes(got.get('bfloat16')!.h)), new Uint16Array([0x3f80, 0xc000, 0x7f80, 0xff80, 0x7fc1, 0x8000, 0x0001, 0x7f7f]));
    assert.deepEqual(got.metadata, {});
  });
});

test('scalars, empty tensors, strided, GPU-less non-contiguous and grad-requiring tensors save correctly', () => {
  torch.tidy(() => {
    const m = torch.arange(12, undefined, 1, { dtype: 'float32' }).reshape(3, 4);
    const src = new Map<string, Tensor>([
      ['scalar_f', torch.tensor(7.25)],
      ['scalar_i', torch.tensor(-9)],
      ['scalar_b', torch.tensor(true)],
      ['empty', torch.zeros([0])],
      ['empty3', torch.zeros([2, 0, 3], { dtype: 'bfloat16' })],
      ['transposed', m.t()],
      ['sliced', m.i(':', '1::2')],
      ['grad', torch.ones([2], { requiresGrad: true })],
    ]);
    const file = fresh();
    io.saveSafetensors(file, src);
    const got = io.loadSafetensors(file);
    assert.equal(got.get('scalar_f')!.item(), 7.25);
    assert.deepEqual(got.get('scalar_f')!.shape, []);
    assert.equal(got.get('scalar_i')!.dtype, 'int64');
    assert.equal(got.get('scalar_i')!.item(), -9);
    assert.equal(got.get('scalar_b')!.toArray(), true);
    assert.deepEqual(got.get('empty')!.shape, [0]);
    assert.deepEqual(got.get('empty3')!.shape, [2, 0, 3]);
    assert.equal(got.get('empty3')!.dtype, 'bfloat16');
    assert.deepEqual(got.get('transposed')!.toArray(), m.t().toArray());
    assert.deepEqual(got.get('sliced')!.toArray(), [[1, 3], [5, 7], [9, 11]]);
    assert.equal(got.get('grad')!.requiresGrad, false);
    assert.deepEqual(got.get('grad')!.toArray(), [1, 1]);
  });
});

test('metadata round-trips; the header is padded to 8 bytes with spaces and its keys are sorted', () => {
  torch.tidy(() => {
    const file = fresh();
    const meta = { format: 'pt', 'ключ': 'значение ✓', empty: '', json: '{"step": 3}' };
    // Insertion order differs from sorted order, and integer-like names would come first in a JS object.
    io.saveSafetensors(file, new Map([['b', torch.ones([3])], ['10', torch.ones([1])], ['2', torch.ones([2], { dtype: 'float64' })], ['a', torch.ones([1], { dtype: 'int8' })]]), meta);
    const got = io.loadSafetensors(file);
    assert.deepEqual(got.metadata, meta);
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = buf.subarray(8, 8 + n).toString('utf8');
    assert.match(text, /^\{.*\} *$/s);
    const keys = [...text.matchAll(/"([^"]+)":\{"dtype"/g)].map((x) => x[1]);
    assert.deepEqual(keys, ['10', '2', 'a', 'b']);
    assert.ok(text.startsWith('{"__metadata__":'));
    // Widest dtypes first keeps every tensor aligned to its element size.
    const hdr = JSON.parse(text);
    assert.equal(hdr['2'].data_offsets[0], 0);
    assert.equal(hdr.a.data_offsets[1], buf.length - 8 - n);
  });
});

test('load options: name filters, dtype conversion of floating tensors, lazy open', () => {
  torch.tidy(() => {
    const file = fresh();
    const w = torch.tensor([[1.5, -2.25], [3, 4.125]]);
    io.saveSafetensors(file, { w, ids: torch.tensor([1, 2, 3]), mask: torch.tensor([true, false]) });

    const some = io.loadSafetensors(file, { names: ['w', 'mask'] });
    assert.deepEqual([...some.keys()].sort(), ['mask', 'w']);
    const pred = io.loadSafetensors(file, { names: (n, info) => info.dtype !== 'float32' && n !== 'mask' });
    assert.deepEqual([...pred.keys()], ['ids']);
    assert.throws(() => io.loadSafetensors(file, { names: ['nope'] }), (e: Error) => e.message === `${file}: tensor 'nope': no such tensor (the file has 3: 'ids', 'w', 'mask')`);

    const conv = io.loadSafetensors(file, { dtype: 'bfloat16' });
    assert.equal(conv.get('w')!.dtype, 'bfloat16');
    assert.deepEqual(conv.get('w')!.toArray(), [[1.5, -2.25], [3, 4.125]]);
    assert.equal(conv.get('ids')!.dtype, 'int64');
    assert.equal(conv.get('mask')!.dtype, 'bool');
    assert.deepEqual(conv.get('mask')!.toArray(), [true, false]);
    const f64 = io.loadSafetensors(file, { dtype: 'float64', device: 'cpu' });
    assert.equal(f64.get('w')!.dtype, 'float64');

    const f = io.openSafetensors(file);
    assert.deepEqual(f.names.sort(), ['ids', 'mask', 'w']);
    const info = f.tensors.get('w')!;
    assert.equal(info.dtype, 'float32');
    assert.equal(info.format, 'F32');
    assert.deepEqual(info.shape, [2, 2]);
    assert.equal(info.byteLength, 16);
    assert.deepEqual(f.get('w').toArray(), w.toArray());
    assert.equal(f.get('w', { dtype: 'float16' }).dtype, 'float16');
    assert.deepEqual(f.get('ids').toArray(), [1, 2, 3]);
    f.close();
    assert.throws(() => f.get('w'), /the file was closed/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Against an independent writer and reader in Python (no safetensors package: just struct, json and torch).

const PY_DTYPES = `
DT = {'F32': torch.float32, 'F64': torch.float64, 'F16': torch.float16, 'BF16': torch.bfloat16, 'I64': torch.int64,
      'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}
NAME = {v: k for k, v in DT.items()}
def raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16: t = t.view(torch.int16)
    return t.numpy().tobytes()
def values(t):
    if t.dtype == torch.bool: return t.flatten().tolist()
    if t.is_floating_point(): return [x if math.isfinite(x) else repr(x) for x in t.double().flatten().tolist()]
    return [str(x) for x in t.flatten().tolist()]
`;

function jsValues(t: Tensor): unknown[] {
  if (t.dtype === 'bool') return (t.reshape(-1).toArray() as boolean[]);
  if (torch.isFloating(t.dtype)) {
    return Array.from(t.to('float64').data() as Float64Array, (x) => (Number.isFinite(x) ? x : Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf'));
  }
  const d = t.dtype === 'int64' ? (t.data() as BigInt64Array) : t.data();
  return Array.from(d as ArrayLike<number | bigint>, (x) => String(x));
}

test('reads a file written by an independent Python writer (unpadded header, metadata last)', { skip: needPython() }, () => {
  const file = fresh('py');
  const out = py(PY_DTYPES + `
import struct
T = {}
T['layers.0.weight'] = torch.tensor([[1.5, -2.25, 3.0], [float('inf'), -0.0, 1e-40]], dtype=torch.float32)
T['f64'] = torch.tensor([math.pi, -1e300, 5e-324], dtype=torch.float64)
T['f16'] = torch.frombuffer(bytearray(struct.pack('<6H', 0x3c00, 0x7c00, 0x8000, 0x0001, 0x7e01, 0xfbff)), dtype=torch.float16)
T['bf16_bits'] = torch.frombuffer(bytearray(struct.pack('<6H', 0x3f80, 0xff80, 0x7fc1, 0x8000, 0x0001, 0x7f7f)), dtype=torch.bfloat16).reshape(2, 3)
T['bf16'] = torch.tensor([1.0, 3.14159, -2.5e-3, 1e30]).to(torch.bfloat16)
T['10'] = torch.tensor([2**62 + 1, -2**63, 2**63 - 1, 0], dtype=torch.int64)
T['2'] = torch.tensor([-2**31, 2**31 - 1], dtype=torch.int32)
T['i16'] = torch.tensor([-32768, 32767], dtype=torch.int16)
T['i8'] = torch.tensor([-128, 127], dtype=torch.int8)
T['u8'] = torch.tensor([0, 255, 7], dtype=torch.uint8)
T['mask'] = torch.tensor([[True, False], [False, True]])
T['scalar'] = torch.tensor(7.25)
T['empty'] = torch.zeros(0, 4)
header, blobs, pos = {}, [], 0
for name, t in T.items():
    b = raw(t)
    header[name] = {'dtype': NAME[t.dtype], 'shape': list(t.shape), 'data_offsets': [pos, pos + len(b)]}
    blobs.append(b)
    pos += len(b)
header['__metadata__'] = {'format': 'pt', 'note': 'π ünïcode'}
h = json.dumps(header, ensure_ascii=False).encode('utf-8')
with open(inp['path'], 'wb') as f:
    f.write(struct.pack('<Q', len(h)))
    f.write(h)
    for b in blobs: f.write(b)
out['tensors'] = {k: {'dtype': NAME[t.dtype], 'shape': list(t.shape), 'hex': raw(t).hex(), 'values': values(t)} for k, t in T.items()}
`, { path: file });
  torch.tidy(() => {
    const got = io.loadSafetensors(file);
    assert.deepEqual(got.metadata, { format: 'pt', note: 'π ünïcode' });
    assert.deepEqual([...got.keys()].sort(), Object.keys(out.tensors).sort());
    for (const [name, exp] of Object.entries<any>(out.tensors)) {
      const t = got.get(name)!;
      assert.equal(t.dtype, ({ F32: 'float32', F64: 'float64', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool' } as Record<string, DType>)[exp.dtype], name);
      assert.deepEqual(t.shape, exp.shape, name);
      assert.equal(hex(t), exp.hex, `${name} bytes`);
      assert.deepEqual(jsValues(t), exp.values, `${name} values`);
    }
  });
});

test('a file we write is read correctly by an independent Python reader', { skip: needPython() }, () => {
  const file = fresh('ours');
  const src = torch.tidy(() => {
    const s = everyDType();
    s.set('scalar', torch.tensor(-0.5, { dtype: 'float64' }));
    s.set('empty', torch.zeros([3, 0], { dtype: 'float16' }));
    s.set('bf16_values', torch.tensor([1, 3.14159, -2.5e-3, 1e30]).bfloat16());
    io.saveSafetensors(file, s, { format: 'pt', step: '1200' });
    return s;
  });
  const out = py(PY_DTYPES + `
import struct
data = open(inp['path'], 'rb').read()
n = struct.unpack('<Q', data[:8])[0]
text = data[8:8 + n].decode('utf-8')
out['n'] = n
out['padding'] = len(text) - len(text.rstrip(' '))
pairs = json.loads(text, object_pairs_hook=lambda p: p)
out['keys'] = [k for k, _ in pairs]
hdr = dict(pairs)
out['metadata'] = dict(hdr.pop('__metadata__'))
buf = bytearray(data[8 + n:])
spans, res = [], {}
for k, v in hdr.items():
    v = dict(v)
    b, e = v['data_offsets']
    spans.append((b, e))
    dt = DT[v['dtype']]
    numel = math.prod(v['shape'])
    t = torch.empty(v['shape'], dtype=dt) if numel == 0 else torch.frombuffer(buf, dtype=dt, offset=b, count=numel).reshape(v['shape'])
    res[k] = {'dtype': v['dtype'], 'shape': v['shape'], 'hex': bytes(buf[b:e]).hex(), 'values': values(t),
              'aligned': (8 + n + b) % t.element_size() == 0}
spans.sort()
pos, tiled = 0, True
for b, e in spans:
    tiled = tiled and b == pos
    pos = e
out['tiled'] = tiled and pos == len(buf)
out['tensors'] = res
`, { path: file });
  torch.tidy(() => {
    assert.equal(out.n % 8, 0);
    assert.deepEqual(out.metadata, { format: 'pt', step: '1200' });
    assert.equal(out.tiled, true);
    const names = [...src.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    assert.deepEqual(out.keys, ['__metadata__', ...names]);
    for (const [name, t] of src) {
      const r = out.tensors[name];
      assert.equal(r.shape.join(','), t.shape.join(','), name);
      assert.equal(r.hex, hex(t), `${name} bytes`);
      assert.deepEqual(r.values, jsValues(t), `${name} values`);
      assert.equal(r.aligned, true, `${name} aligned`);
    }
    assert.equal(out.tensors.bfloat16.dtype, 'BF16');
    assert.equal(out.tensors.bool.dtype, 'BOOL');
    torch.dispose(src.values());
  });
});

function needReference(): string | false {
  const why = needPython();
  if (why) return why;
  const r = spawnSync(PYTHON, ['-c', 'import safetensors'], { encoding: 'utf8' });
  return r.status === 0 ? false : `needs the safetensors package for ${PYTHON} (not packaged by Debian; runs where it exists)`;
}

test('the reference safetensors package reads our files, and we read its files', { skip: needReference() }, () => {
  const ours = fresh('ours-ref');
  const theirs = fresh('theirs-ref');
  const src = torch.tidy(() => {
    const s = everyDType();
    s.set('scalar', torch.tensor(-0.5, { dtype: 'float64' }));
    s.set('empty', torch.zeros([3, 0], { dtype: 'float16' }));
    io.saveSafetensors(ours, s, { format: 'pt', step: '1200' });
    return s;
  });
  const out = py(PY_DTYPES + `
import struct
from safetensors import safe_open
from safetensors.torch import load_file, save_file
loaded = load_file(inp['ours'])
with safe_open(inp['ours'], framework='pt') as f:
    out['metadata'] = f.metadata()
out['ours'] = {k: {'dtype': NAME[t.dtype], 'shape': list(t.shape), 'hex': raw(t).hex()} for k, t in loaded.items()}
T = {
  'w': torch.tensor([[1.5, -2.25], [3.0, 1e-40]]),
  'bf16': torch.tensor([1.0, 3.14159, -2.5e-3, 1e30]).to(torch.bfloat16),
  'f16': torch.tensor([65504.0, -0.0, 6e-8]).to(torch.float16),
  'big': torch.tensor([2**62 + 1, -2**63], dtype=torch.int64),
  'mask': torch.tensor([True, False, True]),
  'u8': torch.tensor([0, 255], dtype=torch.uint8),
  'scalar': torch.tensor(3, dtype=torch.int32),
  'empty': torch.zeros(0, 2, dtype=torch.int16),
}
save_file(T, inp['theirs'], metadata={'format': 'pt', 'k': 'v'})
out['theirs'] = {k: {'dtype': NAME[t.dtype], 'shape': list(t.shape), 'hex': raw(t).hex()} for k, t in T.items()}
`, { ours, theirs });
  torch.tidy(() => {
    assert.deepEqual(out.metadata, { format: 'pt', step: '1200' });
    assert.deepEqual(Object.keys(out.ours).sort(), [...src.keys()].sort());
    for (const [name, t] of src) {
      assert.deepEqual(out.ours[name].shape, t.shape, name);
      assert.equal(out.ours[name].hex, hex(t), `${name}: bytes the reference read`);
    }
    const got = io.loadSafetensors(theirs);
    assert.deepEqual(got.metadata, { format: 'pt', k: 'v' });
    assert.deepEqual([...got.keys()].sort(), Object.keys(out.theirs).sort());
    for (const [name, exp] of Object.entries<any>(out.theirs)) {
      assert.deepEqual(got.get(name)!.shape, exp.shape, name);
      assert.equal(hex(got.get(name)!), exp.hex, `${name}: bytes the reference wrote`);
    }
    torch.dispose(src.values());
  });
});

test('CUDA tensors save from and load onto the GPU', { skip: torch.cudaDeviceCount() === 0 ? 'no CUDA device' : false }, () => {
  torch.tidy(() => {
    const file = fresh('cuda');
    const src = everyDType();
    const onGpu = new Map([...src].map(([k, t]) => [k, t.to('cuda')]));
    const m = torch.randn([64, 48]);
    onGpu.set('strided', m.to('cuda').t());
    io.saveSafetensors(file, onGpu);
    const back = io.loadSafetensors(file);
    for (const [k, t] of src) assert.equal(hex(back.get(k)!), hex(t), k);
    assert.equal(hex(back.get('strided')!), hex(m.t().contiguous()));

    const gpu = io.loadSafetensors(file, { device: 'cuda' });
    for (const [k, t] of gpu) {
      assert.ok(t.device.startsWith('cuda'), `${k} on ${t.device}`);
      assert.equal(hex(t), hex(back.get(k)!), k);
    }
    const half = io.loadSafetensors(file, { device: 'cuda', dtype: 'bfloat16', names: ['strided', 'int64'] });
    assert.equal(half.get('strided')!.dtype, 'bfloat16');
    assert.equal(half.get('int64')!.dtype, 'int64');
    assert.equal(hex(half.get('strided')!), hex(m.t().contiguous().bfloat16()));
    io.saveSharded(path.join(tmp, 'cuda-sharded'), gpu, { maxShardBytes: 4096 });
    const sh = io.loadSharded(path.join(tmp, 'cuda-sharded'), { device: 'cuda' });
    for (const [k, t] of gpu) assert.equal(hex(sh.get(k)!), hex(t), k);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Malformed files: each gets its own message naming the file (and the tensor, when one is at fault).

function craft(header: string | object | Uint8Array, data: Uint8Array | number = 0, declared?: bigint): string {
  const file = fresh('bad');
  const h = header instanceof Uint8Array ? Buffer.from(header) : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declared ?? BigInt(h.length));
  const body = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  fs.writeFileSync(file, Buffer.concat([prefix, h, body]));
  return file;
}

function rejects(file: string, tensor: string | null, problem: RegExp): void {
  assert.throws(() => io.loadSafetensors(file), (e: unknown) => {
    assert.ok(e instanceof io.SafetensorsError, `expected a SafetensorsError, got ${String(e)}`);
    const lead = `${file}: ${tensor === null ? '' : `tensor '${tensor}': `}`;
    assert.ok(e.message.startsWith(lead), `message should start with ${JSON.stringify(lead)}: ${e.message}`);
    assert.match(e.message.slice(lead.length), problem);
    assert.equal(e.tensor, tensor);
    return true;
  });
}

const f32 = (shape: number[], offsets: unknown) => ({ dtype: 'F32', shape, data_offsets: offsets });

test('malformed files: length prefix and header encoding', () => {
  const short = fresh('bad');
  fs.writeFileSync(short, Buffer.from([1, 2, 3, 4, 5]));
  rejects(short, null, /^the file has 5 bytes, too short for the 8-byte header length$/);

  rejects(craft('{}', 4, 1000n), null, /^the header length 1000 is larger than the 6 bytes that follow it/);
  rejects(craft('{}', 0, 2n ** 64n - 1n), null, /^the header length 18446744073709551615 is larger than/);

  // A length over the limit inside a file that is big enough: sparse, so it costs no disk.
  const huge = craft('{}', 0, 110_000_000n);
  fs.truncateSync(huge, 120_000_000);
  rejects(huge, null, /^the header length 110000000 is larger than the 100000000-byte limit/);

  rejects(craft(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), null, /^the header is not valid UTF-8$/);
  rejects(craft('{"a": '), null, /^the header is not valid JSON \(/);
  rejects(craft('[1, 2]'), null, /^the header is not a JSON object \(it must start with '\{', found "\[1, 2\]"\)$/);
  rejects(craft(' {}'), null, /^the header is not a JSON object/);
  // An empty header section (no tensors) is valid, and so is trailing space padding.
  assert.equal(io.loadSafetensors(craft('{}    ')).size, 0);
});

test('malformed files: tensor entries', () => {
  rejects(craft({ a: 5 }), 'a', /^the entry must be an object with 'dtype', 'shape' and 'data_offsets', got number 5$/);
  rejects(craft({ a: { shape: [1], data_offsets: [0, 4] } }, 4), 'a', /^missing 'dtype'$/);
  rejects(craft({ a: { dtype: 'F32', data_offsets: [0, 4] } }, 4), 'a', /^missing 'shape'$/);
  rejects(craft({ a: { dtype: 'F32', shape: [1] } }, 4), 'a', /^missing 'data_offsets'$/);
  rejects(craft({ a: { dtype: 32, shape: [1], data_offsets: [0, 4] } }, 4), 'a', /^'dtype' must be a string, got number 32$/);
  rejects(craft({ a: { dtype: 'F17', shape: [1], data_offsets: [0, 4] } }, 4), 'a', /^unknown dtype 'F17' \(expected one of BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64\)$/);
  for (const d of ['U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2']) {
    rejects(craft({ a: { dtype: d, shape: [1], data_offsets: [0, 4] } }, 4), 'a', new RegExp(`^dtype '${d}' is valid safetensors but this engine has no such tensor type`));
  }
  rejects(craft({ a: f32([2, -1], [0, 4]) }, 4), 'a', /^'shape' entry 1 is number -1; dimensions must be non-negative integers$/);
  rejects(craft({ a: f32([1.5], [0, 4]) }, 4), 'a', /^'shape' entry 0 is number 1.5;/);
  rejects(craft({ a: f32(['2'] as any, [0, 4]) }, 4), 'a', /^'shape' entry 0 is the string "2";/);
  rejects(craft({ a: f32(4 as any, [0, 4]) }, 4), 'a', /^'shape' must be an array of non-negative integers, got number 4$/);
  rejects(craft({ a: f32([2 ** 30, 2 ** 30, 2 ** 30], [0, 4]) }, 4), 'a', /^'shape' \[1073741824, 1073741824, 1073741824\] has too many elements$/);
  rejects(craft({ a: f32([1], [0]) }, 4), 'a', /^'data_offsets' must be \[begin, end\], two non-negative integers; got \[0\]$/);
  rejects(craft({ a: f32([1], [-4, 0]) }, 4), 'a', /^'data_offsets' must be \[begin, end\]/);
  rejects(craft({ a: f32([1], ['0', '4']) }, 4), 'a', /^'data_offsets' must be \[begin, end\]/);
  rejects(craft({ a: f32([1], [8, 4]) }, 8), 'a', /^'data_offsets' \[8, 4\] ends before it begins$/);
  rejects(craft({ a: f32([2, 2], [0, 12]) }, 12), 'a', /^'data_offsets' \[0, 12\] span 12 bytes but shape \[2, 2\] of F32 needs 16$/);
  rejects(craft({ a: f32([4], [0, 16]) }, 8), 'a', /^'data_offsets' \[0, 16\] run past the end of the data section \(8 bytes follow the header\): the file is truncated/);
  rejects(craft({ a: f32([1], [0, 4]), b: f32([2], [4, 12]) }, 8), 'b', /^'data_offsets' \[4, 12\] run past the end/);
});

test('malformed files: ranges must tile the data section; metadata must be strings', () => {
  rejects(craft({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, 12), 'b', /^'data_offsets' \[4, 12\] overlap those of tensor 'a' \[0, 8\]$/);
  // Two names for one range (what a duplicate JSON key could hide) is an overlap too.
  rejects(craft({ a: f32([1], [0, 4]), b: f32([1], [0, 4]) }, 4), 'b', /overlap those of tensor 'a'/);
  rejects(craft({ a: f32([1], [0, 4]), b: f32([1], [8, 12]) }, 12), 'b', /^'data_offsets' \[8, 12\] leave data bytes 4\.\.8 unused; the format does not allow holes$/);
  rejects(craft({ a: f32([1], [4, 8]) }, 8), 'a', /leave data bytes 0\.\.4 unused/);
  rejects(craft({ a: f32([1], [0, 4]) }, 8), null, /^the data section has 8 bytes but the tensors cover only 4; trailing bytes are not allowed$/);
  // Header order does not matter, and empty tensors may sit anywhere.
  const ok = craft({ b: f32([1], [4, 8]), e: f32([0, 2], [4, 4]), a: f32([1], [0, 4]) }, new Uint8Array(new Float32Array([1, 2]).buffer));
  torch.tidy(() => {
    const m = io.loadSafetensors(ok);
    assert.deepEqual([...m.keys()], ['a', 'e', 'b']);
    assert.deepEqual(m.get('b')!.toArray(), [2]);
  });

  rejects(craft({ __metadata__: { epoch: 3 } }), null, /^'__metadata__' value for key 'epoch' must be a string, got number 3$/);
  rejects(craft({ __metadata__: ['x'] }), null, /^'__metadata__' must be an object of strings, got an array$/);
  assert.deepEqual(io.loadSafetensors(craft({ __metadata__: null })).metadata, {});

  // Any non-zero byte is true (as the reference reader has it), stored as 1 so torch's bool kernels stay correct.
  torch.tidy(() => {
    const m = io.loadSafetensors(craft({ m: { dtype: 'BOOL', shape: [4], data_offsets: [0, 4] } }, new Uint8Array([1, 0, 2, 255]))).get('m')!;
    assert.equal(hex(m), '01000101');
    assert.equal(m.sum().item(), 3);
  });
  assert.throws(() => io.openSafetensors(path.join(tmp, 'missing.safetensors')), /ENOENT/);
});

// ---------------------------------------------------------------------------------------------------------------
// Saving: validation and atomicity

test('save refuses bad names, non-string metadata and non-tensors, writing nothing', () => {
  torch.tidy(() => {
    const file = fresh();
    const t = torch.ones([2]);
    const errs: [() => void, RegExp][] = [
      [() => io.saveSafetensors(file, { a: t }, { epoch: 3 } as any), /: metadata value for key 'epoch' must be a string, got number 3/],
      [() => io.saveSafetensors(file, [['a', t], ['a', t]]), /: tensor 'a': two tensors have this name$/],
      [() => io.saveSafetensors(file, { __metadata__: t }), /: tensor '__metadata__': the name '__metadata__' is reserved/],
      [() => io.saveSafetensors(file, { a: [1, 2] as any }), /: tensor 'a': expected a Tensor, got an array$/],
      [() => io.saveSafetensors(file, [[1 as any, t]]), /: tensor names must be strings, got number 1$/],
    ];
    const gone = torch.ones([1]);
    gone.dispose();
    errs.push([() => io.saveSafetensors(file, { g: gone }), /: tensor 'g': the tensor was disposed$/]);
    for (const [fn, re] of errs) assert.throws(fn, (e: Error) => e instanceof io.SafetensorsError && e.message.startsWith(file) && re.test(e.message));
    assert.equal(fs.existsSync(file), false);
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), []);
  });
});

test('a failed save leaves the old file intact and no temporary file', () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'atomic-'));
  const file = path.join(dir, 'model.safetensors');
  torch.tidy(() => {
    io.saveSafetensors(file, { w: torch.arange(10, undefined, 1, { dtype: 'float32' }) }, { v: 'old' });
    const before = fs.readFileSync(file);
    // complex64 has no safetensors dtype here; it sits between two good tensors.
    const bad = torch.ops.complex(torch.ones([2]), torch.zeros([2]));
    assert.throws(
      () => io.saveSafetensors(file, new Map([['a', torch.ones([3])], ['b', bad], ['c', torch.ones([3])]])),
      (e: Error) => e.message.startsWith(`${file}: tensor 'b': its dtype cannot be saved`),
    );
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  });
});

test('a save that fails midway through writing (file size limit) leaves the old file intact and no temporary file', { skip: process.platform !== 'linux' ? 'needs ulimit -f' : false }, () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'efbig-'));
  const file = path.join(dir, 'model.safetensors');
  torch.tidy(() => io.saveSafetensors(file, { w: torch.ones([4]) }, { v: 'old' }));
  const before = fs.readFileSync(file);
  const script = path.join(dir, 'writer.mts');
  const index = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/index.ts');
  fs.writeFileSync(script, `import * as torch from ${JSON.stringify(index)};
try {
  torch.io.saveSafetensors(${JSON.stringify(file)}, { a: torch.ones([1024]), big: torch.zeros([8, 1024, 1024]) });
  console.log('SAVED');
} catch (e) {
  console.log('ERROR ' + e.message);
}
`);
  // 4 MiB file size limit (bash counts 1 KiB blocks); the 32 MiB tensor hits it after part of the file is written.
  // Node ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process.
  const r = spawnSync('bash', ['-c', `ulimit -f 4096 && exec "${process.execPath}" --import tsx "${script}"`], { encoding: 'utf8', cwd: process.cwd() });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`ERROR ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: writing failed, the previous file \\(if any\\) is unchanged: .*EFBIG`));
  assert.deepEqual(fs.readFileSync(file), before);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['model.safetensors', 'writer.mts']);
});

// ---------------------------------------------------------------------------------------------------------------
// Sharded checkpoints

test('sharded checkpoints round-trip, with a Hugging Face style index, and a re-save cleans up stale shards', () => {
  const dir = path.join(tmp, 'sharded');
  torch.tidy(() => {
    const src = new Map<string, Tensor>();
    for (let i = 0; i < 5; i++) src.set(`layers.${i}.weight`, torch.randn([64, 64])); // 16 KiB each
    src.set('embed', torch.randn([256, 64])); // 64 KiB: larger than a shard, gets its own
    src.set('ids', torch.arange(10));
    const res = io.saveSharded(dir, src, { maxShardBytes: 40_000, metadata: { step: '7' } });
    assert.deepEqual(res.files, ['model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors', 'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors']);
    assert.equal(res.index, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(path.join(dir, res.index!), 'utf8'));
    assert.equal(index.metadata.total_size, 5 * 16384 + 65536 + 80);
    assert.deepEqual(Object.keys(index.weight_map), ['embed', 'ids', 'layers.0.weight', 'layers.1.weight', 'layers.2.weight', 'layers.3.weight', 'layers.4.weight']);
    assert.equal(index.weight_map['layers.0.weight'], 'model-00001-of-00004.safetensors');
    assert.equal(index.weight_map['layers.2.weight'], 'model-00002-of-00004.safetensors');
    assert.equal(index.weight_map['layers.4.weight'], 'model-00004-of-00004.safetensors');
    assert.equal(index.weight_map.embed, 'model-00003-of-00004.safetensors');
    assert.equal(index.weight_map.ids, 'model-00004-of-00004.safetensors');
    assert.deepEqual(io.openSafetensors(path.join(dir, res.files[0])).metadata, { format: 'pt', step: '7' });

    const got = io.loadSharded(dir);
    assert.equal(got.size, src.size);
    for (const [k, t] of src) assert.equal(hex(got.get(k)!), hex(t), k);
    assert.deepEqual(got.metadata, { format: 'pt', step: '7' });
    assert.deepEqual([...io.loadSharded(path.join(dir, 'model.safetensors.index.json'), { names: ['ids'] }).keys()], ['ids']);
    assert.equal(io.loadSharded(dir, { dtype: 'float16' }).get('embed')!.dtype, 'float16');
    assert.throws(() => io.loadSharded(dir, { names: ['nope'] }), /tensor 'nope': no such tensor in the index's weight_map/);

    // Fewer shards: the old ones must go, or a loader could pick up stale weights.
    io.saveSharded(dir, src, { maxShardBytes: 70_000 });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json']);
    // Everything fits: a single file and no index.
    const one = io.saveSharded(dir, src);
    assert.deepEqual(one, { files: ['model.safetensors'], index: null, totalBytes: 5 * 16384 + 65536 + 80 });
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    const again = io.loadSharded(dir);
    for (const [k, t] of src) assert.equal(hex(again.get(k)!), hex(t), k);
    assert.equal(io.loadSharded(path.join(dir, 'model.safetensors')).size, src.size);
  });
});

test('sharded checkpoints: broken indexes give clear errors', () => {
  const dir = fs.mkdtempSync(path.join(tmp, 'badindex-'));
  torch.tidy(() => io.saveSafetensors(path.join(dir, 's1.safetensors'), { a: torch.ones([2]) }));
  const idx = path.join(dir, 'model.safetensors.index.json');
  const write = (o: unknown) => fs.writeFileSync(idx, typeof o === 'string' ? o : JSON.stringify(o));
  write({ weight_map: { a: 's1.safetensors', b: 's1.safetensors' } });
  assert.throws(() => io.loadSharded(dir), (e: Error) => e.message === `${path.join(dir, 's1.safetensors')}: tensor 'b': listed in model.safetensors.index.json but missing from this shard`);
  write({ weight_map: { a: '../elsewhere.safetensors' } });
  assert.throws(() => io.loadSharded(dir), /tensor 'a': shard '..\/elsewhere.safetensors' is outside the checkpoint directory/);
  write({ metadata: {} });
  assert.throws(() => io.loadSharded(dir), /model.safetensors.index.json: the index has no 'weight_map' object/);
  write('{not json');
  assert.throws(() => io.loadSharded(dir), /model.safetensors.index.json: cannot read the index: /);
  write({ weight_map: { a: 's9.safetensors' } });
  assert.throws(() => io.loadSharded(dir), /tensor 'a': cannot open its shard 's9.safetensors': ENOENT/);
  const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
  assert.throws(() => io.loadSharded(empty), /no checkpoint here: neither model.safetensors.index.json nor model.safetensors exists/);
  write({ weight_map: { a: 's1.safetensors' } });
  torch.tidy(() => assert.deepEqual(io.loadSharded(dir).get('a')!.toArray(), [1, 1]));
});

// ---------------------------------------------------------------------------------------------------------------
// Memory: a large file is read straight into tensor memory, not through an intermediate buffer.

test('loading a 300 MB file grows memory by about its size, not twice', () => {
  const file = fresh('big');
  const perChunk = 3_000_000;
  const chunks = 25;
  const numel = perChunk * chunks;
  const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [numel], data_offsets: [0, numel * 4] } }));
  const fd = fs.openSync(file, 'w');
  try {
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    fs.writeSync(fd, prefix);
    fs.writeSync(fd, header);
    const chunk = new Float32Array(perChunk);
    for (let k = 0; k < chunks; k++) {
      chunk.fill(k);
      fs.writeSync(fd, new Uint8Array(chunk.buffer));
    }
  } finally {
    fs.closeSync(fd);
  }
  const size = fs.statSync(file).size;
  try {
    const rss0 = process.memoryUsage().rss;
    const m = io.loadSafetensors(file);
    const grown = process.memoryUsage().rss - rss0;
    const w = m.get('w')!;
    try {
      assert.deepEqual(w.shape, [numel]);
      torch.tidy(() => {
        assert.equal(w.narrow(0, 0, 1).item(), 0);
        assert.equal(w.narrow(0, perChunk * 12 + 5, 1).item(), 12);
        assert.equal(w.narrow(0, numel - 1, 1).item(), chunks - 1);
      });
      assert.ok(grown < 1.6 * size, `RSS grew by ${(grown / 1e6).toFixed(0)} MB loading a ${(size / 1e6).toFixed(0)} MB file`);
      assert.ok(grown > 0.5 * size, `RSS grew by only ${(grown / 1e6).toFixed(0)} MB: did the measurement work?`);
    } finally {
      w.dispose();
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('loadSharded refuses weights linked from outside the checkpoint folder, allows links inside it and the Hugging Face cache layout', () => {
  const root = path.join(tmp, 'links');
  const outside = path.join(root, 'outside');
  fs.mkdirSync(outside, { recursive: true });
  fs.writeFileSync(path.join(outside, 'secret.txt'), 'TOPSECRET-0123456789');
  io.saveSafetensors(path.join(outside, 'w.safetensors'), { w: torch.tensor([1, 2, 3]) });
  const linked = (name: string, target: string, file = 'model.safetensors') => {
    const dir = path.join(root, name);
    fs.mkdirSync(dir, { recursive: true });
    fs.symlinkSync(target, path.join(dir, file));
    return dir;
  };
  const secret = linked('secret', path.join(outside, 'secret.txt'));
  for (const f of [() => io.loadSharded(secret), () => io.readShardedHeaders(secret)]) {
    assert.throws(f, (e: Error) => {
      assert.match(e.message, /secret\/model\.safetensors: is a symbolic link to .*outside\/secret\.txt, outside the checkpoint folder .*secret; retain reads weights only from inside it \(copy the file into the folder\)$/);
      // It used to open the target and quote its first 8 bytes back as a header length.
      assert.doesNotMatch(e.message, new RegExp(`TOPSECRET|${Buffer.from('TOPSECRE').readBigUInt64LE()}`));
      return true;
    });
  }
  assert.throws(() => io.loadSharded(linked('weights', path.join(outside, 'w.safetensors'))), /is a symbolic link to .*w\.safetensors, outside the checkpoint folder/);
  assert.throws(() => io.loadSharded(linked('dangling', path.join(outside, 'gone.safetensors'))), /is a symbolic link to nothing/);
  // A shard named by an index is checked the same way.
  const idx = linked('indexed', path.join(outside, 'w.safetensors'), 'model-00001-of-00001.safetensors');
  fs.writeFileSync(path.join(idx, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 'model-00001-of-00001.safetensors' } }));
  assert.throws(() => io.loadSharded(idx), /model-00001-of-00001\.safetensors: is a symbolic link to .*outside the checkpoint folder/);
  // Inside the folder, and the hub cache's snapshots/<revision>/ → ../../blobs/<hash>, load.
  const inside = path.join(root, 'inside');
  fs.mkdirSync(inside);
  io.saveSafetensors(path.join(inside, 'real.safetensors'), { w: torch.tensor([4, 5]) });
  fs.symlinkSync('real.safetensors', path.join(inside, 'model.safetensors'));
  assert.deepEqual(io.loadSharded(inside).get('w')!.toArray(), [4, 5]);
  const repo = path.join(root, 'models--org--tiny');
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  fs.mkdirSync(path.join(repo, 'snapshots', 'abc123'), { recursive: true });
  io.saveSafetensors(path.join(repo, 'blobs', 'f00d'), { w: torch.tensor([6]) });
  fs.symlinkSync('../../blobs/f00d', path.join(repo, 'snapshots', 'abc123', 'model.safetensors'));
  assert.deepEqual(io.loadSharded(path.join(repo, 'snapshots', 'abc123')).get('w')!.toArray(), [6]);
  assert.deepEqual(io.readShardedHeaders(path.join(repo, 'snapshots', 'abc123')).get('w')!.shape, [1]);
});

test('a safetensors path that is a folder is named as one (reading it failed with an EISDIR naming no path)', () => {
  const dir = path.join(tmp, 'folder.safetensors');
  fs.mkdirSync(dir);
  assert.throws(() => io.loadSafetensors(dir), /folder\.safetensors: is a folder, where a file is needed$/);
});
