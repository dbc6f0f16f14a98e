// Containers: children registered under their position ("0", "1", …), as PyTorch's, or under given names.
import { Module } from './module.js';

function indexOf(i: number, n: number, what: string): number {
  if (!Number.isInteger(i) || i >= n || i < -n) throw new RangeError(`${what} index ${i} is out of range (length ${n})`);
  return i < 0 ? i + n : i;
}

/** Children called in order, each on the previous one's output. new Sequential(a, b) or new Sequential({ fc: a, act: b }). */
export class Sequential extends Module {
  constructor(...modules: Module[] | [Record<string, Module>]) {
    super();
    if (modules.length === 1 && !(modules[0] instanceof Module)) {
      for (const [n, m] of Object.entries(modules[0] as Record<string, Module>)) this.registerModule(n, m);
    } else {
      for (const m of modules as Module[]) this.append(m);
    }
  }

  append(m: Module): this {
    this.registerModule(String(this._modules.size), m);
    return this;
  }

  get length(): number {
    return this._modules.size;
  }

  get<M extends Module = Module>(i: number): M {
    const mods = this.children();
    return mods[indexOf(i, mods.length, 'Sequential')] as M;
  }

  [Symbol.iterator](): Iterator<Module> {
    return this.children()[Symbol.iterator]();
  }

  forward(x: any): any {
    let y = x;
    for (const m of this.children()) y = m.forward(y);
    return y;
  }
}

/** A list of children with PyTorch's positional names (`layers.0.…`); it has no forward of its own. */
export class ModuleList<M extends Module = Module> extends Module {
  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.append(m);
  }

  append(m: M): this {
    this.registerModule(String(this._modules.size), m);
    return this;
  }

  extend(ms: Iterable<M>): this {
    for (const m of ms) this.append(m);
    return this;
  }

  get length(): number {
    return this._modules.size;
  }

  get(i: number): M {
    const mods = this.children() as M[];
    return mods[indexOf(i, mods.length, 'ModuleList')];
  }

  [Symbol.iterator](): Iterator<M> {
    return (this.children() as M[])[Symbol.iterator]();
  }

  map<T>(fn: (m: M, i: number) => T): T[] {
    return (this.children() as M[]).map(fn);
  }
}

/** Children under string keys (`blocks.attn.…`). */
export class ModuleDict<M extends Module = Module> extends Module {
  constructor(modules: Record<string, M> = {}) {
    super();
    for (const [k, m] of Object.entries(modules)) this.set(k, m);
  }

  set(key: string, m: M): this {
    this._modules.delete(key);
    this.registerModule(key, m);
    return this;
  }

  get(key: string): M {
    const m = this._modules.get(key);
    if (!m) throw new Error(`ModuleDict has no key '${key}'`);
    return m as M;
  }

  has(key: string): boolean {
    return this._modules.has(key);
  }

  keys(): string[] {
    return [...this._modules.keys()];
  }

  entries(): [string, M][] {
    return this.namedChildren() as [string, M][];
  }
}
