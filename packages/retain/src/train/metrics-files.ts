// The run's metrics in the forms other tools read, beside metrics.jsonl (which stays the record they are made from):
// a TensorBoard event file (numbers only, tagged `train/loss`, `eval/loss`, `sam/grad_norm`, ...) and metrics.csv
// (one header; one row per logged step, the lines of a step merged). Both follow metrics.jsonl through a resume:
// opening rebuilds the CSV from the (already trimmed) JSONL and keeps only the events of the steps it still holds.
import { appendFileSync, existsSync, readFileSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { writeTextAtomic } from './checkpoint.js';
import { EventFileWriter, type Scalar } from './tfevents.js';

export interface MetricsFilesSetting {
  tensorboard: boolean;
  csv: boolean;
}

type Line = Record<string, number | string>;

/**
 * TensorBoard tags of a log line's numbers: grouped by the line's kind (a method's name, 'eval'; the training step's
 * own line has none), with the kind's prefix dropped from the field name: eval_loss of an eval line is `eval/loss`.
 */
export function scalarsOf(line: Line): Scalar[] {
  const group = typeof line.kind === 'string' && line.kind ? line.kind : 'train';
  return Object.entries(line).flatMap(([k, v]) => {
    if (k === 'step' || k === 'kind' || typeof v !== 'number' || !Number.isFinite(v)) return [];
    const name = k.startsWith(`${group}_`) ? k.slice(group.length + 1) : k;
    return [{ tag: `${group}/${name}`, value: v }];
  });
}

/** A CSV row: the step and the fields of its lines. The kind is left out: one row merges the lines of several kinds. */
type Row = Map<string, number | string>;

/** Adds a line to the row when it is of the same step and changes no field the row holds; says whether it did. */
function mergeInto(row: Row, line: Line): boolean {
  if (row.get('step') !== line.step) return false;
  const fields = Object.entries(line).filter(([k]) => k !== 'kind');
  if (fields.some(([k, v]) => row.has(k) && row.get(k) !== v)) return false;
  for (const [k, v] of fields) row.set(k, v);
  return true;
}

function newRow(line: Line): Row {
  return new Map(Object.entries(line).filter(([k]) => k !== 'kind'));
}

function csvCell(v: number | string | undefined): string {
  if (v === undefined) return '';
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function readJsonl(file: string): Line[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').flatMap((l) => {
    try {
      const x = JSON.parse(l);
      return x && typeof x === 'object' && typeof x.step === 'number' ? [x as Line] : [];
    } catch {
      return []; // a line torn by a kill
    }
  });
}

/** metrics.csv, kept in step with metrics.jsonl: appended row by row, rewritten only when a new column appears. */
class CsvLog {
  private columns: string[] = [];
  private last: Row | null = null;
  /** Where the last row starts in the file, so that a line merged into it rewrites that row only. */
  private lastAt = 0;

  constructor(private readonly file: string, private readonly jsonl: string) {
    this.rebuild();
  }

  /** The whole file from metrics.jsonl, which already holds every line this log has been given. */
  private rebuild(): void {
    const rows: Row[] = [];
    for (const line of readJsonl(this.jsonl)) if (!rows.length || !mergeInto(rows[rows.length - 1], line)) rows.push(newRow(line));
    const cols = new Set<string>(['step']);
    for (const r of rows) for (const k of r.keys()) cols.add(k);
    this.columns = [...cols];
    writeTextAtomic(this.file, `${this.columns.map(csvCell).join(',')}\n${rows.map((r) => this.rowText(r)).join('')}`);
    this.last = rows.at(-1) ?? null;
    this.lastAt = this.last ? statSync(this.file).size - Buffer.byteLength(this.rowText(this.last)) : 0;
  }

  private rowText(r: Row): string {
    return this.columns.map((c) => csvCell(r.get(c))).join(',') + '\n';
  }

  add(line: Line): void {
    const merged = this.last !== null && mergeInto(this.last, line);
    if (!merged) this.last = newRow(line);
    if ([...this.last!.keys()].some((k) => !this.columns.includes(k))) return this.rebuild();
    if (merged) truncateSync(this.file, this.lastAt);
    else this.lastAt = statSync(this.file).size;
    appendFileSync(this.file, this.rowText(this.last!));
  }
}

/** The metrics files of a run folder; `add` takes each line after it is in metrics.jsonl. */
export class MetricsFiles {
  private constructor(private readonly events: EventFileWriter | null, private readonly csv: CsvLog | null) {}

  /** Null when both are off. Call after metrics.jsonl is trimmed for a resume (checkpoint.ts trimLogs). */
  static open(dir: string, setting: MetricsFilesSetting): MetricsFiles | null {
    if (!setting.tensorboard && !setting.csv) return null;
    const jsonl = join(dir, 'metrics.jsonl');
    // The events of steps past the last one the JSONL still holds are redone by this run.
    const lastStep = setting.tensorboard ? readJsonl(jsonl).reduce((m, l) => Math.max(m, l.step as number), -1) : -1;
    const events = setting.tensorboard ? new EventFileWriter(dir, lastStep) : null;
    return new MetricsFiles(events, setting.csv ? new CsvLog(join(dir, 'metrics.csv'), jsonl) : null);
  }

  add(line: Line): void {
    this.events?.add(line.step as number, scalarsOf(line));
    this.csv?.add(line);
  }
}
