// npx tsx bench/sdft_teacher.ts [--model path] [--n 200] — is SDFT's teacher better than its student? (docs/METHODS.md §15
// asks for this before any SDFT result on a small model.) On the demo's held-out arithmetic problems (retain demo's
// test set: arithmeticProblems(n, 1000)), the mean log-likelihood per answer token and the greedy token accuracy of
// the answer c under:
//   student        — the model given the prompt x only (what SDFT trains),
//   teacher_own    — the SDFT teacher: x and c in context through sdft's default template, then x again,
//   teacher_other  — one-shot in-context learning proper: another problem of the same family with its answer, then x.
// Per answer token, and per digit token (the leading space piece, which every context predicts, left out).
// teacher_own shows whether the model can copy an answer from its context (the signal SDFT distils); teacher_other
// whether a demonstration teaches it anything about a new problem. One JSON object on stdout.
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { loadPretrained } from '../packages/retain/src/models/hub.js';
import { toExample, type Example } from '../packages/retain/src/data/formats.js';
import { Sdft, SDFT_TEMPLATE } from '../packages/retain/src/methods/sdft.js';
import { arithmeticProblems } from '../packages/retain/src/suite/arith.js';
import type { TrainableModel } from '../packages/retain/src/train/hooks.js';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
const modelPath = opt('--model', join(new URL('../packages/retain/assets/stories260K/', import.meta.url).pathname, 'stories260K.bin'));
const n = Number(opt('--n', '200'));

/** Log-probabilities of `answer` after `context`: per-token values and whether each was the argmax. */
function score(model: TrainableModel, context: number[], answer: number[]): { lp: number[]; top: boolean[] } {
  return torch.tidy(() => {
    const ids = [...context, ...answer];
    const logits = (model.forward(torch.tensor([ids], { dtype: 'int64' })) as Tensor).select(0, 0); // [T, V]
    const lsm = logits.narrow(0, context.length - 1, answer.length).float().logSoftmax(-1); // [n, V]
    const rows = lsm.toArray() as number[][];
    return {
      lp: answer.map((a, i) => rows[i][a]),
      top: answer.map((a, i) => rows[i].indexOf(Math.max(...rows[i])) === a),
    };
  });
}

async function main() {
  const p = await loadPretrained(modelPath);
  const tok = p.tokenizer!;
  const model = p.model as unknown as TrainableModel;
  model.eval();
  const problems = arithmeticProblems(n, 1000);
  const examples: Example[] = problems.map((q) => toExample({ id: q.id, prompt: q.prompt, completion: q.completion }, { type: 'prompt_completion' }, { tokenizer: tok, source: 'arith' }));
  const sdft = new Sdft({ tokenizer: tok });
  sdft.setup({ model, examples, log: () => {}, params: [], state: new Map(), step: 0, epoch: 0, totalSteps: 1 } as never);
  const split = (e: Example) => {
    const first = e.lossMask.indexOf(1);
    const demo = e.ids.slice(first);
    return { prompt: e.ids.slice(0, first), answer: demo[demo.length - 1] === tok.eosId ? demo.slice(0, -1) : demo };
  };
  const fresh = () => ({ lp: [] as number[], digits: [] as number[], top: [] as boolean[] });
  const acc = { student: fresh(), teacher_own: fresh(), teacher_other: fresh() };
  // The answer's first token is often the bare space piece, which any context predicts; the digits carry the answer.
  const isDigit = (id: number) => /\d/.test(tok.piece(id));
  const perProblem = { own_better: 0, other_better: 0 };
  torch.noGrad(() => {
    examples.forEach((e, i) => {
      const { prompt, answer } = split(e);
      // Another problem of the same family (the next one in the list that has it) is the one-shot example.
      const j = [...Array(n).keys()].map((k) => (i + 1 + k) % n).find((k) => problems[k].family === problems[i].family && k !== i)!;
      const own = sdft.teacherContext(e);
      const xj = split(examples[j]).prompt;
      const ofJ = sdft.teacherContext(examples[j]);
      const other = [...ofJ.slice(0, ofJ.length - (xj.length - 1)), ...prompt.slice(1)];
      const s = score(model, prompt, answer);
      const t1 = score(model, own, answer);
      const t2 = score(model, other, answer);
      const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
      if (mean(t1.lp) > mean(s.lp)) perProblem.own_better++;
      if (mean(t2.lp) > mean(s.lp)) perProblem.other_better++;
      for (const [k, r] of [['student', s], ['teacher_own', t1], ['teacher_other', t2]] as const) {
        acc[k].lp.push(mean(r.lp));
        acc[k].digits.push(mean(r.lp.filter((_, t) => isDigit(answer[t]))));
        acc[k].top.push(r.top.every(Boolean));
      }
    });
  });
  const summary = (k: keyof typeof acc) => ({
    mean_loglik_per_answer_token: +(acc[k].lp.reduce((a, b) => a + b, 0) / n).toFixed(4),
    mean_loglik_per_digit_token: +(acc[k].digits.reduce((a, b) => a + b, 0) / n).toFixed(4),
    answer_greedy_exact: +(acc[k].top.filter(Boolean).length / n).toFixed(3),
  });
  console.log(JSON.stringify({
    benchmark: 'sdft_teacher', model: modelPath, problems: `${n} held-out arithmetic problems (arithmeticProblems(${n}, 1000), retain demo's test set)`, template: SDFT_TEMPLATE,
    student: summary('student'), teacher_own: summary('teacher_own'), teacher_other: summary('teacher_other'),
    problems_where_teacher_own_beats_student: perProblem.own_better, problems_where_teacher_other_beats_student: perProblem.other_better,
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
