// The training loop's data-parallel plumbing (the scheme is dist.ts's): one start for every rank, each rank's rows of
// a step, batch-norm statistics from rank 0, and the sums of gradients and loss over ranks. The loop calls it at
// fixed points of its phases (trainer.ts); a single-process run has none.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { disposeBatch, type Batch } from '../data/loader.js';
import type { DistContext, NamedParams, TrainableModel } from './hooks.js';
import { shardBatch, shardRange } from './dist.js';

export class Replicas {
  private readonly buffers: Tensor[];
  private reducer: torch.distributed.GradReducer | null = null;
  /** This step's way of summing: the Reducer during the last micro-batch's backward, or null (after backward). */
  private overlapped: torch.distributed.GradReducer | null = null;
  private trainable: Tensor[] = [];

  constructor(readonly dist: DistContext, model: TrainableModel, private readonly device: string) {
    // Buffers (batch-norm running statistics) move with each rank's own rows. As under DDP (which broadcasts them
    // from rank 0 before every forward) every forward starts from rank 0's; here they are sent right after each
    // forward, so that between steps too — the final model, checkpoints, eval-mode passes in hooks (FLOW's scores at
    // a probe switch, EWC's Fisher, a probe's body) — every rank holds rank 0's statistics.
    this.buffers = modelBuffers(model);
  }

  get rank(): number {
    return this.dist.rank;
  }

  /**
   * After setup and resume: every rank starts from rank 0's weights, as DDP does, so a method's random initialisation
   * (LoRA) or a checkpoint read on another machine cannot leave the replicas apart.
   */
  start(params: NamedParams): void {
    torch.noGrad(() => torch.tidy(() => this.dist.broadcast(params.map(([, p]) => p.detach()), 0)));
    this.syncBuffers();
  }

  /** After each micro-batch's forward and backward. */
  syncBuffers(): void {
    if (this.buffers.length) torch.noGrad(() => this.dist.broadcast(this.buffers, 0));
  }

  /**
   * Keeps this rank's rows of each micro-batch (in place) and of its sample weights [B]: the step's rules saw the
   * global batch, as one process without data parallelism does.
   */
  shard(micro: Batch[], weights: (Tensor | null)[][]): void {
    const { rank, worldSize } = this.dist;
    micro.forEach((b, i) => {
      const [lo, hi] = shardRange(b.sampleIds.length, rank, worldSize);
      weights[i] = weights[i].map((w) => {
        if (!w) return w;
        const mine = torch.keep(w.narrow(0, lo, hi - lo));
        w.dispose();
        return mine;
      });
      micro[i] = shardBatch(b, rank, worldSize);
      disposeBatch(b);
    });
  }

  /**
   * Before a step's forward and backward: how its gradient sum goes. The Reducer (torch DDP's engine) overlaps it
   * with the last micro-batch's backward, launching each bucket's all-reduce from the grad-accumulator hooks; the
   * micro-batches before accumulate locally, as under DDP's no_sync. Every rank must run that backward, so it is used
   * only when the last micro-batch gives each rank a row (`lastRows`, a fact of the global batch that all ranks
   * share) and when the loop allows it (`overlapOk`); otherwise the step sums after backward.
   */
  beginStep(params: NamedParams, lastRows: number, overlapOk: boolean): void {
    const named = params.filter(([, p]) => p.requiresGrad);
    this.trainable = named.map(([, p]) => p);
    const use = this.dist.overlap && overlapOk && named.length > 0 && lastRows >= this.dist.worldSize;
    this.overlapped = use ? this.reducerFor(named) : null;
  }

  /** Backpropagates a micro-batch's loss; the last one's through the Reducer when the step overlaps. */
  backward(loss: Tensor, last: boolean): void {
    const red = last ? this.overlapped : null;
    if (red) red.backward(red.prepare([loss])[0]);
    else loss.backward();
  }

  /**
   * After the step's backward: the gradients summed over ranks are the global batch's; the loss is summed with them,
   * so every rank sees the same loss (and makes the same non-finite-loss decision).
   */
  endStep(loss: number): number {
    if (this.overlapped) return torch.distributed.sumScalars([loss], this.device)[0];
    return torch.distributed.reduceGradients(this.trainable, { scalars: [loss], bucketBytes: this.dist.bucketBytes }).scalars[0];
  }

  dispose(): void {
    this.reducer?.dispose();
    this.reducer = null;
  }

  /** The Reducer over the trainable parameters, rebuilt (identically on every rank) when a method changes which those are. */
  private reducerFor(ps: NamedParams): torch.distributed.GradReducer {
    const r = this.reducer;
    if (!r || ps.length !== r.params.length || ps.some(([, p], i) => p !== r.params[i])) {
      r?.dispose();
      this.reducer = new torch.distributed.GradReducer(ps.map(([, p]) => p), { bucketBytes: this.dist.bucketBytes, names: ps.map(([n]) => n) });
    }
    return this.reducer!;
  }
}

/** The persistent buffers of a model (state-dict entries that are not parameters), as registered. */
function modelBuffers(model: TrainableModel): Tensor[] {
  const params = new Set(model.parameters());
  return [...model.stateDict({ keepVars: true }).values()].filter((t) => !params.has(t));
}
