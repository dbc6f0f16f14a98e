#!/usr/bin/env node
// The `retain` command. An installed package runs its compiled JavaScript (dist/). A source checkout (src/ beside
// this file, with tsx installed: the workspace) runs the TypeScript sources through tsx instead, with the workspace's
// tsconfig.json, so that an edit is what runs and tests check the sources rather than a build of them.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const tsconfig = new URL('../../../tsconfig.json', import.meta.url);
let tsx = null;
if (existsSync(source) && existsSync(tsconfig)) {
  try {
    tsx = await import('tsx/esm/api');
  } catch {
    // No tsx (a checkout installed without dev dependencies): the build runs.
  }
}
if (tsx) {
  tsx.register({ tsconfig: tsconfig.pathname });
  await import(source.href);
} else {
  await import('../dist/cli/main.js');
}
