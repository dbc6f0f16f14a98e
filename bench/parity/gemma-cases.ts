// Gemma-2 / Gemma-3 cases for the architecture parity harness (arch.ts); filled in by the Gemma work.
import type { ArchCase } from './arch.js';

export const GEMMA_CASES: ArchCase[] = [];
