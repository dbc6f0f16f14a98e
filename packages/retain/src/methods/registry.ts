// The anti-forgetting methods by name. Each method lives in its own file (or folder) and registers here with one
// line; `methods: [flow, lora, {name: l2, lambda: 0.01}]` in a config resolves through this table.
import type { Method } from '../train/hooks.js';
import { Sam } from './sam.js';
import { Mofo } from './mofo.js';
import { Lora } from './lora/index.js';
import { Hft } from './hft.js';
import { Flow } from './flow.js';
import { Mixing } from './mixing.js';
import { L2SP } from './l2sp.js';
import { EWC } from './ewc.js';
import { WiseFT } from './wise.js';
import { LinearProbe } from './probe.js';
import { Distill } from './distill.js';
import { Merge } from './merge.js';
import { SelfDistillTargets } from './selfdistill.js';
import { Sdft } from './sdft.js';

/** Builds a method from its config options (everything in the config entry except `name`). */
export type MethodFactory = (options: Record<string, unknown>) => Method;

export const METHODS = new Map<string, MethodFactory>([
  // one line per method, e.g. ['flow', (o) => new Flow(o)],
  ['sam', (o) => new Sam(o)],
  ['mofo', (o) => new Mofo(o)],
  ['lora', (o) => new Lora(o)],
  ['hft', (o) => new Hft(o)],
  ['flow', (o) => new Flow(o)],
  ['flow_vision', (o) => new Flow(o, 'vision')],
  ['mixing', (o) => new Mixing(o)],
  ['l2', (o) => new L2SP(o)],
  ['ewc', (o) => new EWC(o)],
  ['wise', (o) => new WiseFT(o)],
  ['probe', (o) => new LinearProbe(o)],
  ['distill', (o) => new Distill(o)],
  ['merge', (o) => new Merge(o)],
  ['selfdistill_targets', (o) => new SelfDistillTargets(o)],
  ['sdft', (o) => new Sdft(o)],
]);

export function registerMethod(name: string, factory: MethodFactory): void {
  METHODS.set(name, factory);
}

/** Resolves config entries (`'flow'` or `{ name: 'flow', tau: 'median' }`) into methods, with clear errors. */
export function buildMethods(entries: (string | Record<string, unknown>)[]): Method[] {
  return entries.map((e, i) => {
    const name = typeof e === 'string' ? e : String(e.name ?? '');
    const factory = METHODS.get(name);
    if (!factory) throw new Error(`methods[${i}]: unknown method '${name}'; available: ${[...METHODS.keys()].sort().join(', ') || '(none registered)'}`);
    const { name: _n, ...opts } = typeof e === 'string' ? { name } : e;
    void _n;
    return factory(opts);
  });
}
