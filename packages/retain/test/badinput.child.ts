// Child process of badinput.catalogue.test.ts: runs a batch of bad-input cases through the in-process API and prints
// one JSON line per case with the error it raised and its own peak memory. The peak is per case because the kernel's
// high-water mark (VmHWM) is reset before each one (writing 5 to /proc/self/clear_refs), after a full GC, so a case
// is charged only for what it allocated beyond the resident set it started from.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadTrainConfig } from '../src/config.js';
import { runTraining, loadExamples } from '../src/train/run.js';
import { loadPretrained, loadTokenizer } from '../src/models/hub.js';
import { readRecords } from '../src/data/readers.js';
import { loadEvalModel } from '../src/eval/model.js';
import { resolveTasks } from '../src/eval/tasks.js';
import { evaluate } from '../src/eval/harness.js';

export type ChildCase =
  | { name: string; kind: 'train'; config: string }
  | { name: string; kind: 'load'; path: string; tokenizer?: string }
  | { name: string; kind: 'tokenizer'; path: string }
  | { name: string; kind: 'data'; path: string }
  | { name: string; kind: 'examples'; config: string }
  | { name: string; kind: 'eval'; model: string; tasks: string[]; dataDir?: string };

export interface ChildResult {
  name: string;
  /** The error's message, or 'ok: ...' when the case raised none. */
  message: string;
  /** The error's class name (a TypeError reads as a bug in retain). */
  errorName: string | null;
  /** Peak resident memory above the starting point, MiB. */
  growthMiB: number;
}

function statusKiB(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function run(c: ChildCase): Promise<string> {
  switch (c.kind) {
    case 'train': {
      const r = await runTraining(loadTrainConfig(c.config), undefined, { progress: false });
      return `ok: trained ${r.steps} steps`;
    }
    case 'examples': {
      const cfg = loadTrainConfig(c.config);
      const p = await loadPretrained(cfg.model.path, { tokenizer: cfg.model.tokenizer });
      const ex = await loadExamples(cfg.data.train, p, 'train');
      p.model.dispose();
      return `ok: ${ex.length} examples of ${ex.map((e) => e.ids.length).join(',')} tokens`;
    }
    case 'load': {
      const p = await loadPretrained(c.path, { tokenizer: c.tokenizer });
      p.model.dispose();
      return 'ok: loaded';
    }
    case 'tokenizer': {
      const t = await loadTokenizer(c.path);
      return `ok: vocabulary of ${t.vocabSize}`;
    }
    case 'data':
      return `ok: ${(await readRecords(c.path)).length} records`;
    case 'eval': {
      const m = await loadEvalModel(c.model);
      const r = await evaluate(m, resolveTasks(c.tasks, { dataDir: c.dataDir }), { limit: 4 });
      return `ok: ${Object.keys(r.results ?? {}).length} tasks`;
    }
  }
}

const [casesFile, outFile] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesFile, 'utf8')) as ChildCase[];
const results: ChildResult[] = [];
for (const c of cases) {
  // The parent reads this to name the case that was running if the process dies or is killed for its memory.
  process.stdout.write(`start ${c.name}\n`);
  (globalThis as { gc?: () => void }).gc?.();
  writeFileSync('/proc/self/clear_refs', '5');
  const base = statusKiB('VmRSS');
  let message: string;
  let errorName: string | null = null;
  try {
    message = await run(c);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    message = err.message;
    errorName = err.constructor?.name ?? err.name;
  }
  results.push({ name: c.name, message, errorName, growthMiB: Math.max(0, statusKiB('VmHWM') - base) / 1024 });
  writeFileSync(outFile, JSON.stringify(results));
}
