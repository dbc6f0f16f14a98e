// Every `retain` command: how `retain --help` lists it (usage and description, the one place its description is
// written) and the module that registers it, imported only when that command runs, so the listing loads neither
// libtorch nor any model code. cli.help test: each module registers the usage written here.
import { Help, type Command } from 'commander';

export interface CommandEntry {
  name: string;
  /** The usage `retain --help` lists, as commander would derive it from the registered command. */
  usage: string;
  description: string;
  /** Registers the command (and, for eval/compare, its sibling) on the program. */
  load(): Promise<(program: Command) => void>;
}

export const COMMANDS: CommandEntry[] = [
  { name: 'train', usage: 'train [options] <config> [overrides...]', description: 'fine-tune a model as the config says; checkpoints and metrics.jsonl go to output_dir', load: async () => (await import('./train.js')).registerTrainCommand },
  { name: 'generate', usage: 'generate [options] <model>', description: 'continue a prompt; decoding as the model\'s generation_config.json says (eos ids, do_sample, temperature, top_p, top_k, max_new_tokens) unless a flag says otherwise', load: async () => (await import('./generate.js')).registerGenerateCommand },
  { name: 'schema', usage: 'schema', description: 'print the JSON Schema of a training config (every key and method option: type, allowed values, default, description)', load: async () => (await import('./schema.js')).registerSchemaCommand },
  { name: 'inspect', usage: 'inspect [options] <model>', description: 'print the architecture, parameter counts and config; with --memory, the predicted peak memory of a training step', load: async () => (await import('./inspect.js')).registerInspectCommand },
  { name: 'eval', usage: 'eval [options]', description: 'evaluate a model on tasks and write results JSON (lm-evaluation-harness layout)', load: async () => (await import('./eval.js')).registerEvalCommands },
  { name: 'compare', usage: 'compare [options]', description: 'evaluate a base model and tuned models on the same tasks (or read their lm-evaluation-harness results); print the forgetting table', load: async () => (await import('./eval.js')).registerEvalCommands },
  { name: 'demo', usage: 'demo [options]', description: 'fine-tune the embedded stories260K on arithmetic with each anti-forgetting recipe; print the forgetting table and write report.html', load: async () => (await import('./demo.js')).registerDemoCommand },
  { name: 'tune', usage: 'tune [options] [config] [overrides...]', description: 'search anti-forgetting recipes (successive halving on the monitor\'s probes) for the best target score within a forgetting budget; writes the frontier, best.yaml and the report', load: async () => (await import('./tune.js')).registerTuneCommand },
  { name: 'report', usage: 'report [options] <runs...>', description: 'render results JSON as report.md, a self-contained report.html and charts (SVG + PNG)', load: async () => (await import('./report.js')).registerReportCommand },
  { name: 'synth', usage: 'synth [options]', description: 'generate general-domain replay data from the base model (bos, magpie or fewshot), filtered, deduplicated, resumable', load: async () => (await import('./synth.js')).registerSynthCommand },
  { name: 'merge', usage: 'merge [options] <adapter>', description: 'merge a LoRA adapter into its base model and write the merged model as a Hugging Face folder', load: async () => (await import('./merge.js')).registerMergeCommand },
];

/**
 * The program with every command: the one `argv` names registered for real (its module imported), the others as
 * listing entries with their usage and description, which is all `retain --help` and commander's "unknown command
 * (did you mean ...)" need. `help <command>` counts as naming the command.
 */
export async function addCommands(program: Command, argv: string[]): Promise<void> {
  // The program itself has no option taking a value, so the first word that is not an option is the command.
  const words = argv.filter((a) => !a.startsWith('-'));
  const wanted = COMMANDS.find((c) => c.name === (words[0] === 'help' ? words[1] : words[0]));
  if (wanted) (await wanted.load())(program);
  for (const c of COMMANDS) {
    const have = program.commands.find((x) => x.name() === c.name);
    (have ?? program.command(c.name)).description(c.description);
  }
  const plain = new Help();
  program.configureHelp({ subcommandTerm: (cmd) => COMMANDS.find((c) => c.name === cmd.name())?.usage ?? plain.subcommandTerm(cmd) });
}
