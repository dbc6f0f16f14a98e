// Hand-made results for the report tests: small enough to compute every table cell by hand.
import type { CompareResults, EvalResults, MonitorPoint, ResultRow, Role } from '../src/eval/results.js';

/** task → [primary metric, role, higher is better] */
const TASKS: Record<string, [string, Role, boolean]> = {
  arc_easy: ['acc', 'general', true],
  hellaswag: ['acc_norm', 'general', true],
  wikitext2: ['bits_per_char', 'general', false],
  'Q&A': ['exact_match', 'target', true],
};

export function run(label: string, methods: string[], values: Record<string, number>, opts: { monitor?: boolean; path?: string } = {}): EvalResults {
  const rows: ResultRow[] = [];
  for (const [task, value] of Object.entries(values)) {
    const [metric, role, hib] = TASKS[task];
    rows.push({ task, metric, value, stderr: metric === 'bits_per_char' ? null : 0.0123, higher_is_better: hib, n: 200, role, primary: true });
    // A secondary metric, to show that details list every metric while the table uses only the primary one.
    if (metric === 'acc_norm') rows.push({ task, metric: 'acc', value: value - 0.02, stderr: 0.0111, higher_is_better: true, n: 200, role, primary: false });
  }
  const monitor: MonitorPoint[] | undefined = opts.monitor
    ? [0, 50, 100].flatMap((step) => Object.entries(values).map(([task, v]) => {
      const [metric, role, hib] = TASKS[task];
      // General probes drift down (up for a loss), target probes rise: enough to draw a line.
      const drift = (step / 100) * 0.05 * (role === 'target' ? 1 : -1) * (hib ? 1 : -1);
      return { step, task, metric, value: v + drift, role, higher_is_better: hib };
    }))
    : undefined;
  return {
    format: 'retain.eval/1', label,
    model: { path: opts.path ?? `/models/${label}`, name: label, hash: `sha256:${label.length}abc`, parameters: 124_000 },
    methods, date: '2025-03-01T12:00:00.000Z',
    config: { tasks: Object.keys(values), limit: 200, batch_size: 16, seed: 0, device: 'cpu' },
    rows, results: {}, higher_is_better: {}, 'n-samples': {}, versions: Object.fromEntries(Object.keys(values).map((t) => [t, 1])), configs: {},
    ...(monitor ? { monitor } : {}),
  };
}

export const BASE = run('base', [], { arc_easy: 0.6234, hellaswag: 0.4511, wikitext2: 1.2346, 'Q&A': 0.102 });
export const FT = run('FT', ['full'], { arc_easy: 0.5917, hellaswag: 0.4488, wikitext2: 1.3012, 'Q&A': 0.4133 }, { monitor: true });
export const FLOW = run('FLOW', ['flow'], { arc_easy: 0.6301, hellaswag: 0.4402, wikitext2: 1.2298, 'Q&A': 0.3517 }, { monitor: true });

export function compare(tuned: EvalResults[] = [FT, FLOW]): CompareResults {
  return { format: 'retain.compare/1', date: '2025-03-01T12:00:00.000Z', base: BASE, tuned };
}
