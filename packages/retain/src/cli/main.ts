// The `retain` command line. Only the command being run is imported (commands.ts), so `retain --help` starts
// without loading libtorch.
import { Command } from 'commander';
import { describeFsError } from '../files.js';
import { addCommands } from './commands.js';

const program = new Command();
program.name('retain').description('Fine-tune pretrained models without catastrophic forgetting, on libtorch.').version('0.1.0');

// The command's module is imported inside the chain, so a failure to load it (no native addon built, say) gets the
// same one-line message as any other.
addCommands(program, process.argv.slice(2)).then(() => program.parseAsync(process.argv)).catch((e: unknown) => {
  // A failure the user can act on (bad config, data, checkpoint, shapes, NaN loss, a dead rank) is one clear message;
  // a stack only helps when retain itself is at fault (a JS programming error), or when asked for.
  const err = e instanceof Error ? e : new Error(String(e));
  const bug = err instanceof TypeError || err instanceof ReferenceError || err instanceof SyntaxError;
  if (process.env.RETAIN_DEBUG === '1' || bug) {
    console.error(`retain: ${err.stack ?? err.message}`);
    if (bug) console.error('retain: this looks like a bug in retain itself; please report it with the lines above');
  } else {
    console.error(`retain: ${describeFsError(err) ?? err.message}`);
  }
  process.exitCode = 1;
});
