// Printing in PyTorch's style: `tensor([[1.0000, 2.5000]], dtype=torch.float64, requires_grad=True)`.
import type { Tensor } from './tensor.js';

const EDGE = 3;
const THRESHOLD = 1000;

function floatFormatter(values: number[]): (v: number) => string {
  const finite = values.filter((v) => Number.isFinite(v));
  const intMode = finite.every((v) => Number.isInteger(v));
  const abs = finite.map(Math.abs).filter((v) => v > 0);
  const max = abs.length ? Math.max(...abs) : 0;
  const min = abs.length ? Math.min(...abs) : 0;
  const special = (v: number) => (Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf');
  if (intMode) {
    if (max > 1e8) return (v) => (Number.isFinite(v) ? sci(v) : special(v));
    return (v) => (Number.isFinite(v) ? `${v}.` : special(v));
  }
  if (max / Math.max(min, Number.MIN_VALUE) > 1000 || max > 1e8 || (min > 0 && min < 1e-4)) {
    return (v) => (Number.isFinite(v) ? sci(v) : special(v));
  }
  return (v) => (Number.isFinite(v) ? v.toFixed(4) : special(v));
}

function sci(v: number): string {
  const [m, e] = v.toExponential(4).split('e');
  const ex = Number(e);
  return `${m}e${ex < 0 ? '-' : '+'}${String(Math.abs(ex)).padStart(2, '0')}`;
}

export function formatTensor(t: Tensor): string {
  const shape = t.shape;
  const dtype = t.dtype;
  const numel = shape.reduce((a, b) => a * b, 1);
  const summarize = numel > THRESHOLD;
  const flat: number[] = numel === 0 ? [] : (t.toArray() as unknown as number[]);
  const values = shape.length === 0 ? [flat as unknown as number] : (flat as unknown[]).flat(Infinity as 1) as (number | boolean)[];
  const isFloat = dtype.startsWith('float') || dtype === 'bfloat16';
  const fmt =
    dtype === 'bool' ? (v: number | boolean) => (v ? 'True' : 'False')
    : isFloat ? floatFormatter(values as number[]) : (v: number | boolean) => String(v);
  const shown = summarize ? edgeValues(t.toArray(), shape.length) : values;
  const width = Math.max(1, ...shown.map((v) => (fmt as (v: unknown) => string)(v).length));
  const cell = (v: unknown) => (fmt as (v: unknown) => string)(v).padStart(width);
  const render = (a: unknown, depth: number): string => {
    if (depth === shape.length) return cell(a);
    const arr = a as unknown[];
    const indent = ' '.repeat(depth + 8);
    const parts: string[] = [];
    const cut = summarize && arr.length > 2 * EDGE;
    for (let i = 0; i < arr.length; i++) {
      if (cut && i === EDGE) {
        parts.push('...');
        i = arr.length - EDGE - 1;
        continue;
      }
      parts.push(render(arr[i], depth + 1));
    }
    const sep = depth === shape.length - 1 ? ', ' : ',' + '\n'.repeat(shape.length - depth - 1) + indent;
    return '[' + parts.join(sep) + ']';
  };
  let body: string;
  if (numel === 0) body = shape.length === 1 ? '[]' : `[], size=(${shape.join(', ')})`;
  else body = render(shape.length === 0 ? flat : t.toArray(), 0);
  const extras: string[] = [];
  if (t.device !== 'cpu') extras.push(`device='${t.device}'`);
  if (!(dtype === 'float32' || dtype === 'int64' || dtype === 'bool')) extras.push(`dtype=torch.${dtype}`);
  const gf = t.gradFn;
  if (gf) extras.push(`grad_fn=<${gf}>`);
  else if (t.requiresGrad) extras.push('requires_grad=True');
  return `tensor(${body}${extras.length ? ', ' + extras.join(', ') : ''})`;
}

function edgeValues(a: unknown, depth: number): unknown[] {
  if (depth === 0) return [a];
  const arr = a as unknown[];
  const pick = arr.length > 2 * EDGE ? [...arr.slice(0, EDGE), ...arr.slice(-EDGE)] : arr;
  return pick.flatMap((x) => edgeValues(x, depth - 1));
}
