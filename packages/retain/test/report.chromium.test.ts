// Opens report.html in headless Chromium and checks that the charts really render: the DOM holds SVG marks and chart
// text, and a screenshot has drawn (and coloured) pixels inside each chart's box while the page margin stays blank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { writeReport } from '../src/report/report.js';
import { compare, FLOW, FT, run } from './report.fixtures.js';

const CANDIDATES = process.env.CHROMIUM ? [process.env.CHROMIUM] : ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
const CHROMIUM = CANDIDATES.find((p) => existsSync(p));
const skip = CHROMIUM ? false : `Chromium not found at ${CANDIDATES.join(', ')} (apt-get install chromium, or set CHROMIUM=path)`;
const WIDTH = 1280;
const HEIGHT = 2200;

function chromium(profile: string, ...args: string[]): string {
  const r = spawnSync(CHROMIUM!, ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--force-device-scale-factor=1',
    `--user-data-dir=${profile}`, `--window-size=${WIDTH},${HEIGHT}`, ...args], { encoding: 'utf8', timeout: 30_000, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `chromium failed: ${r.stderr}`);
  return r.stdout;
}

/** Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) to RGBA rows. */
function decodePng(buf: Buffer): { width: number; height: number; px: (x: number, y: number) => [number, number, number] } {
  assert.equal(buf.subarray(1, 4).toString(), 'PNG');
  let off = 8;
  let width = 0, height = 0, channels = 0;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.subarray(off + 4, off + 8).toString();
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [depth, color, , , interlace] = data.subarray(8, 13);
      assert.ok(depth === 8 && (color === 2 || color === 6) && interlace === 0, `unsupported PNG (depth ${depth}, colour type ${color}, interlace ${interlace})`);
      channels = color === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? out[y * stride + i - channels] : 0;
      const b = y > 0 ? out[(y - 1) * stride + i] : 0;
      const c = i >= channels && y > 0 ? out[(y - 1) * stride + i - channels] : 0;
      let p = 0;
      if (f === 1) p = a;
      else if (f === 2) p = b;
      else if (f === 3) p = (a + b) >> 1;
      else if (f === 4) {
        const q = a + b - c;
        const pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[y * stride + i] = (line[i] + p) & 255;
    }
  }
  return { width, height, px: (x, y) => [out[y * stride + x * channels], out[y * stride + x * channels + 1], out[y * stride + x * channels + 2]] };
}

interface Box { id: string; x: number; y: number; w: number; h: number; paths: number; texts: number; symbols: number }

// Runs in the page (a copy of the report, so the report itself stays script-free) and leaves the chart boxes and mark
// counts in a <pre> that --dump-dom prints.
const PROBE = `<script>
addEventListener('load', () => {
  const boxes = [...document.querySelectorAll('figure[id^=chart-]')].map((f) => {
    const s = f.querySelector('svg'); const r = (s || f).getBoundingClientRect();
    return { id: f.id, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
      paths: s ? s.querySelectorAll('path').length : 0, texts: s ? [...s.querySelectorAll('text')].filter((t) => t.textContent.trim()).length : 0,
      symbols: s ? s.querySelectorAll('.mark-symbol path, .mark-line path').length : 0 };
  });
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(boxes); document.body.appendChild(pre);
});
</script>`;

/** Everything wrong with how Chromium shows report.html (empty when the charts render). */
function renderProblems(dir: string, htmlFile: string): string[] {
  const problems: string[] = [];
  const html = readFileSync(htmlFile, 'utf8');
  const probeFile = join(dir, 'probe.html');
  writeFileSync(probeFile, html.replace('</body>', `${PROBE}</body>`));
  const dom = chromium(join(dir, 'profile-dom'), '--dump-dom', `file://${probeFile}`);
  const m = dom.match(/<pre id="probe">([^<]*)<\/pre>/);
  if (!m) return ['the probe found no charts'];
  const boxes: Box[] = JSON.parse(m[1].replace(/&quot;/g, '"').replace(/&amp;/g, '&'));
  if (boxes.length !== 2) problems.push(`expected 2 charts, found ${boxes.length}`);
  for (const b of boxes) {
    if (b.paths === 0 || b.symbols === 0) problems.push(`${b.id}: no marks in the DOM (paths ${b.paths}, line/point marks ${b.symbols})`);
    if (b.texts === 0) problems.push(`${b.id}: no text in the DOM`);
    if (b.w < 200 || b.h < 150) problems.push(`${b.id}: laid out at ${b.w}×${b.h}`);
  }
  for (const text of ['>step</text>', '>target average (%)</text>', '>FLOW</text>', '>base</text>']) if (!dom.includes(text)) problems.push(`chart text ${text} missing from the DOM`);

  const shotFile = join(dir, 'shot.png');
  chromium(join(dir, 'profile-shot'), `--screenshot=${shotFile}`, `file://${htmlFile}`);
  const img = decodePng(readFileSync(shotFile));
  const count = (x0: number, y0: number, w: number, h: number) => {
    let drawn = 0, coloured = 0, total = 0;
    for (let y = Math.max(0, Math.floor(y0)); y < Math.min(img.height, y0 + h); y += 2) {
      for (let x = Math.max(0, Math.floor(x0)); x < Math.min(img.width, x0 + w); x += 2) {
        const [r, g, b] = img.px(x, y);
        total++;
        if (r < 235 || g < 235 || b < 235) drawn++;
        if (Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured++;
      }
    }
    return { drawn, coloured, total };
  };
  for (const b of boxes) {
    if (b.y + b.h > img.height) problems.push(`${b.id}: below the screenshot (${b.y + b.h} > ${img.height})`);
    const c = count(b.x, b.y, b.w, b.h);
    // Axes, grid and text alone give a few percent; coloured pixels come only from the data marks.
    if (c.drawn < c.total * 0.02) problems.push(`${b.id}: only ${c.drawn} of ${c.total} sampled pixels drawn`);
    if (c.coloured < 40) problems.push(`${b.id}: only ${c.coloured} coloured pixels (no data marks painted)`);
  }
  // The right margin (the body is at most 1200 px wide) must stay blank, or the counts above prove nothing.
  const margin = count(WIDTH - 30, 0, 30, Math.min(img.height, HEIGHT));
  if (margin.drawn > 0) problems.push(`the page margin has ${margin.drawn} drawn pixels: the screenshot check cannot tell charts from background`);
  return problems;
}

test('headless Chromium renders the report charts (DOM marks, chart text, painted pixels)', { skip, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-report-chromium-'));
  await writeReport(compare([FT, FLOW, run('dominated', ['x'], { arc_easy: 0.5, hellaswag: 0.4, wikitext2: 1.3, 'Q&A': 0.2 })]), dir);
  assert.deepEqual(renderProblems(dir, join(dir, 'report.html')), []);
});

test('the Chromium check fails when the charts have no marks', { skip, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-report-chromium-neg-'));
  await writeReport(compare([FT, FLOW]), dir);
  const htmlFile = join(dir, 'report.html');
  // Keep each <svg> element (and its size) but drop everything drawn inside it.
  const blank = readFileSync(htmlFile, 'utf8').replace(/(<svg\b[^>]*>)[\s\S]*?<\/svg>/g, '$1</svg>');
  const blankFile = join(dir, 'blank.html');
  writeFileSync(blankFile, blank);
  const problems = renderProblems(dir, blankFile);
  assert.ok(problems.some((p) => /no marks in the DOM/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /coloured pixels/.test(p)), problems.join('\n'));
});
