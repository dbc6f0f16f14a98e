// Preemption: a scheduler or a user stops a run with SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 (what SLURM's --signal
// sends ahead of a time limit). The run finishes the step it is in, writes a checkpoint and exits with
// EXIT_RESUMABLE, so that a requeue loop knows that rerunning the same command continues it (bit-identically on CPU).
import * as torch from '@retain/torch';
import type { DistContext } from './hooks.js';

/** Exit status of a run stopped by a signal after writing its checkpoint: EX_TEMPFAIL, "try again later". */
export const EXIT_RESUMABLE = 75;

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGUSR1'];

/** Listens for the stop signals while a run trains; `signal` is the first one received. */
export class StopRequest {
  signal: NodeJS.Signals | null = null;
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.signal = sig;
    this.note(`${sig} received: finishing this step, then writing a checkpoint and exiting with status ${EXIT_RESUMABLE} (rerun to resume); a second signal ends the run at once, keeping the checkpoint before`);
    // Back to the default action: a second signal is someone who will not wait. The checkpoint being written is then
    // lost with its temporary folder, never the complete one before it (saveCheckpoint renames only when done).
    this.uninstall();
  };

  constructor(private readonly note: (msg: string) => void) {
    for (const s of STOP_SIGNALS) process.on(s, this.onSignal);
  }

  uninstall(): void {
    for (const s of STOP_SIGNALS) process.off(s, this.onSignal);
  }
}

/**
 * Lets a pending signal's handler run. A training step is synchronous, and a handler only runs when the event loop
 * turns, which a synchronous loop never lets it do; one setImmediate per step costs microseconds.
 */
export function yieldToSignals(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Whether to stop after this step. Under data parallelism a signal may reach the ranks at different steps (or one
 * rank only), so each step's flags are summed over the ranks: every rank stops after the same step.
 */
export function stopAgreed(local: boolean, dist: DistContext | null | undefined, device: string): boolean {
  if (!dist) return local;
  return torch.distributed.sumScalars([local ? 1 : 0], device)[0] > 0;
}
