import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeReport } from '../src/report/report.js';
import { BASE, compare, FLOW, FT, run } from './report.fixtures.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'retain-report-'));

test('report.html escapes every string from data and stays self-contained', async () => {
  const evil = run('<script>alert(1)</script>', ['flow'], { arc_easy: 0.61, hellaswag: 0.45, wikitext2: 1.25, 'Q&A': 0.3 }, { monitor: true, path: '/m/"x" & <y>' });
  const out = tmp();
  await writeReport(compare([FT, evil]), out);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.ok(!/<script/i.test(html), 'no script tag, not even from a label');
  assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), 'the label appears escaped');
  assert.ok(html.includes('Q&amp;A') && !/Q&A/.test(html), 'a task name with & is escaped everywhere, charts included');
  assert.ok(html.includes('/m/&quot;x&quot; &amp; &lt;y&gt;'), 'model paths are escaped');
  // Self-contained: no external resource of any kind (scripts, stylesheets, images, fonts, links).
  assert.ok(!/\b(src|href)\s*=|url\(|@import|<link|<img|<iframe|<object/i.test(html), 'no references to other files');
  assert.ok(!/https?:|file:/i.test(html), 'no URL at all');
  assert.equal(html.match(/<svg\b/g)?.length, 2, 'both charts inline');
  assert.ok(html.includes('<style>'));
  // The Markdown keeps the label from being raw HTML too.
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.ok(md.includes('\\<script\\>alert(1)\\</script\\>') && !md.includes('<script>'));
});

test('writeReport writes Markdown, HTML and both charts as SVG and PNG, with details and provenance', async () => {
  const out = tmp();
  const r = await writeReport([FLOW, BASE, FT], out);
  for (const f of ['report.md', 'report.html', 'dynamics.svg', 'dynamics.png', 'pareto.svg', 'pareto.png']) assert.ok(r.files.includes(join(out, f)) && existsSync(join(out, f)), f);
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  // The base is the run without methods even though FLOW came first.
  assert.match(md, /^# Forgetting report: base and 2 tuned runs/);
  // Every score with its standard error (1.23 points for each accuracy here; none for bits per char); an average's
  // combines its tasks' as independent: √2 · 1.23 / 2 = 0.87 for two tasks, √3 · 1.23 / 3 = 0.71 for three.
  assert.match(md, /\| base \| 62\.3 ± 1\.2 \| 45\.1 ± 1\.2 \| 1\.235 \| 53\.7 ± 0\.9 \| 10\.2 ± 1\.2 \| 39\.2 ± 0\.7 \|/);
  assert.match(md, /\| FT \| 59\.2 ± 1\.2 \(−3\.2\) \| /);
  // Averages: forgetting = 53.725 − 52.025 = 1.7 ± √(0.87² + 0.87²) = 1.23, gain = 41.33 − 10.2 = 31.13 ± √2 · 1.23 = 1.74.
  assert.match(md, /\| FT \| 52\.0 ± 0\.9 \| 41\.3 ± 1\.2 \| 48\.5 ± 0\.7 \| \+1\.7 ± 1\.2 \| \+31\.1 ± 1\.7 \|/);
  assert.match(md, /\| base \| 53\.7 ± 0\.9 \| 10\.2 ± 1\.2 \| 39\.2 ± 0\.7 \| – \| – \|/);
  // Details carry stderr (in points for accuracies) and n, secondary metrics included.
  assert.match(md, /\| FT \| acc_norm ★ \| 44\.88% \| 1\.23 \| 200 \|/);
  assert.match(md, /\| FT \| acc \| 42\.88% \| 1\.11 \| 200 \|/);
  assert.match(md, /\| base \| bits_per_char ★ ↓ \| 1\.2346 \| – \| 200 \|/);
  assert.match(md, /sha256:2abc/);
  assert.match(md, /\(none: base model\)/);
  assert.ok(!/retain (eval|compare|report) /.test(md), 'provenance is command-free');
  for (const f of ['dynamics.png', 'pareto.png']) {
    const png = readFileSync(join(out, f));
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    assert.ok(png.readUInt32BE(16) > 400 && png.readUInt32BE(20) > 200, `${f} has a useful size`);
  }
  const svg = readFileSync(join(out, 'pareto.svg'), 'utf8');
  for (const label of ['base', 'FT', 'FLOW', 'target average (%)', 'general average (%)']) assert.ok(svg.includes(`>${label}</text>`), label);
  const dyn = readFileSync(join(out, 'dynamics.svg'), 'utf8');
  assert.ok(dyn.includes('general: arc_easy acc %') && dyn.includes('target: Q&amp;A exact_match %') && dyn.includes('>step</text>'));
  // One line group per panel (4 probes × 3 layers of the facet grid would be more; at least one per panel).
  assert.ok((dyn.match(/class="mark-line role-mark/g) ?? []).length >= 4, 'line marks drawn');
  assert.ok(/class="mark-line role-mark[^>]*>\s*<path[^>]* d="M[^"]+L/.test(dyn), 'a line with at least two points');
});

test('without monitor data the dynamics chart is left out with a note, and a stale one is removed', async () => {
  const out = tmp();
  await writeReport(compare(), out);
  assert.ok(existsSync(join(out, 'dynamics.png')));
  const plain = (r: typeof FT) => ({ ...r, monitor: undefined });
  const r = await writeReport(compare([plain(FT), plain(FLOW)]), out);
  assert.ok(!existsSync(join(out, 'dynamics.png')) && !existsSync(join(out, 'dynamics.svg')));
  assert.ok(existsSync(join(out, 'pareto.png')));
  assert.match(r.notes.join('\n'), /no training-dynamics chart/);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.equal(html.match(/<svg\b/g)?.length, 1);
  assert.match(html, /No run has forgetting-monitor data/);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /_No run has forgetting-monitor data/);
});

/** FT with a training-loss log as `retain train` writes it into results.json: `n` steps, falling. */
function withLoss(r: typeof FT, n: number): typeof FT {
  return { ...r, train: Array.from({ length: n }, (_, i) => ({ step: i + 1, loss: 2 + 3 / (i + 1) })) };
}

test('the training loss is plotted for each run that has one; a report without any says so and removes a stale chart', async () => {
  const out = tmp();
  const r = await writeReport(compare([withLoss(FT, 40), FLOW]), out);
  assert.ok(r.files.includes(join(out, 'loss.svg')) && existsSync(join(out, 'loss.png')));
  const svg = readFileSync(join(out, 'loss.svg'), 'utf8');
  assert.ok(svg.includes('>Training loss</text>') && svg.includes('>training loss</text>') && svg.includes('>step</text>'));
  // One line (FT's; FLOW has no log), through all 40 points.
  const lines = [...svg.matchAll(/class="mark-line role-mark[^>]*>\s*<path[^>]* d="(M[^"]+)"/g)].map((m) => m[1]);
  assert.equal(lines.length, 1);
  assert.equal(lines[0].split(/[ML]/).filter(Boolean).length, 40);
  assert.ok(svg.includes('>FT</text>') && !svg.includes('>FLOW</text>'), 'the legend names the runs with a loss log only');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.ok(html.includes('id="chart-loss"'));
  assert.equal(html.match(/<svg\b/g)?.length, 3);

  // A long log is thinned to 2000 points, its last step kept.
  await writeReport(compare([withLoss(FT, 5001)]), out);
  const long = readFileSync(join(out, 'loss.svg'), 'utf8').match(/class="mark-line role-mark[^>]*>\s*<path[^>]* d="(M[^"]+)"/)![1];
  assert.equal(long.split(/[ML]/).filter(Boolean).length, 1668); // every 3rd of 5001 steps, the last one included

  const plain = await writeReport(compare(), out);
  assert.ok(!existsSync(join(out, 'loss.svg')) && !existsSync(join(out, 'loss.png')), 'no stale loss chart');
  assert.match(plain.notes.join('\n'), /No run has a training-loss log/);
  assert.match(readFileSync(join(out, 'report.html'), 'utf8'), /No run has a training-loss log/);
});

test('the Pareto chart has error bars of one standard error on both averages, left out where a task has none', async () => {
  const out = tmp();
  await writeReport(compare(), out);
  const bars = (svg: string) => [...svg.matchAll(/aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="errorbar"/g)].map((m) => m[1]);
  const all = bars(readFileSync(join(out, 'pareto.svg'), 'utf8'));
  assert.equal(all.length, 6, 'x and y bars for each of 3 runs');
  // FT's target average 41.33 % ± 1.23 points; its general average 52.025 ± 0.870 (√2 · 1.23 / 2).
  assert.ok(all.some((a) => /target: 41\.33; target \+ targetSe: 42\.56; target - targetSe: 40\.1\b/.test(a)), all.join('\n'));
  assert.ok(all.some((a) => /general: 52\.025; general \+ generalSe: 52\.89474\d*; general - generalSe: 51\.15525\d*/.test(a)), all.join('\n'));
  // FLOW's Q&A without a standard error: no target bar for FLOW (its general bar stays).
  const noSe = { ...FLOW, rows: FLOW.rows.map((r) => (r.task === 'Q&A' ? { ...r, stderr: null } : r)) };
  await writeReport(compare([FT, noSe]), out);
  const some = bars(readFileSync(join(out, 'pareto.svg'), 'utf8'));
  assert.equal(some.length, 5);
  assert.ok(!some.some((a) => /target: 35\.17; target \+ targetSe/.test(a)));
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| FLOW \| 63\.0 ± 1\.2 \(\+0\.7\) \| .* \| 35\.2 \(\+25\.0\) \| 47\.4 \(\+8\.2\) \|/);
});
