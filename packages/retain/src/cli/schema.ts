// `retain schema`: the training config's JSON Schema.
import type { Command } from 'commander';
import { trainConfigJsonSchema } from '../schema.js';

export function registerSchemaCommand(program: Command): void {
  program
    .command('schema')
    .action(() => {
      console.log(JSON.stringify(trainConfigJsonSchema(), null, 2));
    });
}
