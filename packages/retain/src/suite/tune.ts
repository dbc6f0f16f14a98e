// `retain tune`'s choice: of the runs of the sweep (tuneRecipes in recipes.ts) on the demo's setup, the one with the
// best target score among those whose forgetting stays within the budget. The command is cli/tune.ts.
import type { CompareResults, EvalResults } from '../eval/results.js';
import type { Recipe } from './recipes.js';

export interface TunePoint {
  label: string;
  methods: Recipe['methods'];
  target: number;
  general: number;
  /** General points lost against the base (positive = forgot). */
  forgetting: number;
}

const pct = (r: EvalResults, task: string, metric: string) => 100 * (r.rows.find((x) => x.task === task && x.metric === metric)?.value ?? NaN);

/** Scores each run and picks the best target among those within the budget (null when none is). */
export function pickWithinBudget(c: CompareResults, recipes: Recipe[], maxForgetting: number): { points: TunePoint[]; best: TunePoint | null } {
  const g0 = pct(c.base, 'tinystories_heldout', 'next_token_acc');
  const points = c.tuned.map((r) => {
    const general = pct(r, 'tinystories_heldout', 'next_token_acc');
    return { label: r.label, methods: recipes.find((x) => x.label === r.label)!.methods, target: pct(r, 'arithmetic', 'exact_match'), general, forgetting: g0 - general };
  });
  const ok = points.filter((p) => p.forgetting <= maxForgetting);
  // Ties on target go to the one that forgot less.
  const best = ok.sort((a, b) => b.target - a.target || a.forgetting - b.forgetting)[0] ?? null;
  return { points, best };
}
