// Progress with loss, tokens/s and ETA: one redrawn line on a terminal, plain lines otherwise (CI logs, pipes).
export class Progress {
  private readonly start = performance.now();
  private lastPlain = 0;
  private readonly tty: boolean;

  constructor(readonly total: number, readonly enabled = true, readonly stream: NodeJS.WriteStream = process.stderr) {
    this.tty = !!stream.isTTY;
  }

  note(msg: string): void {
    if (this.enabled) this.stream.write(`${this.tty ? '\r\x1b[K' : ''}${msg}\n`);
  }

  update(step: number, f: { loss: number; tokensPerSec: number }): void {
    if (!this.enabled) return;
    const elapsed = (performance.now() - this.start) / 1000;
    const eta = step > 0 ? (elapsed / step) * (this.total - step) : 0;
    const pct = ((100 * step) / this.total).toFixed(0).padStart(3);
    const line = `step ${step}/${this.total} ${pct}% | loss ${f.loss.toFixed(4)} | ${f.tokensPerSec.toFixed(0)} tok/s | ETA ${fmt(eta)}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round((width * step) / this.total);
      this.stream.write(`\r\x1b[K[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${line}`);
    } else if (step === this.total || performance.now() - this.lastPlain > 5000 || step === 1) {
      this.lastPlain = performance.now();
      this.stream.write(line + '\n');
    }
  }

  done(): void {
    if (this.enabled && this.tty) this.stream.write('\n');
  }
}

function fmt(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${Math.round(s % 60).toString().padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}
