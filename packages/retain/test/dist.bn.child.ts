// One rank of the BatchNorm test in dist.train.test.ts, started by launchWorkers (RANK, WORLD_SIZE, MASTER_* set):
// trains the fixtures' TinyNet (batch norm in its body) on its rows of each global batch and writes its state dict
// (weights and running statistics) to <out>/rank<R>.json.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { classificationLoss, train } from '../src/train/trainer.js';
import { distSettings, startDist, stopDist } from '../src/train/dist.js';
import { constant, featureExamples, tinyNet } from './methods-a.fixtures.js';

const out = process.argv[2];
const dist = startDist(distSettings()!);
const model = tinyNet(3);
await train({ model, optimizer: { kind: 'sgd' }, examples: featureExamples(24, 6), lossFn: classificationLoss, batchSize: 8, gradAccum: 2, maxSteps: 3, schedule: constant(0.1), progress: false, seed: 2, dist });
const state = Object.fromEntries(torch.tidy(() => [...model.stateDict()].map(([k, t]) => [k, Array.from(t.double().reshape(-1).data() as Float64Array)])));
writeFileSync(join(out, `rank${dist.rank}.json`), JSON.stringify(state));
stopDist();
