// `npm run -s parity`: retain checked against the real Hugging Face stack and PyTorch 2.x in the reference environment
// (scripts/refenv.sh). Prints one JSON object; each section lives in bench/parity/<name>.ts and returns its own keys
// (architectures and max_logit_diff; peft_roundtrips; tokenizers and templates; lmeval_tasks and max_loglik_diff;
// lmeval_yaml_cases, lm-eval task files run by both).
// `npm run -s parity -- arch peft` runs only those sections.
import { needRefenv, refenvVersions } from './refenv.js';

const SECTIONS = ['arch', 'peft', 'tokenizers', 'lmeval', 'lmeval-yaml', 'real_models'];

async function main(): Promise<void> {
  const chosen = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  // A misspelt section would otherwise run nothing and print versions alone, which reads as a clean result.
  const unknown = chosen.filter((name) => !SECTIONS.includes(name));
  if (unknown.length) {
    console.error(`parity: no section ${unknown.map((u) => `'${u}'`).join(', ')}; the sections are ${SECTIONS.join(', ')} (none named: all of them)`);
    process.exit(2);
  }
  const missing = needRefenv();
  if (missing) {
    console.error(`parity: ${missing}`);
    process.exit(2);
  }
  const result: Record<string, unknown> = { torch: null };
  const failures: Record<string, string> = {};
  for (const name of SECTIONS) {
    if (chosen.length && !chosen.includes(name)) continue;
    const mod: { run: () => Promise<Record<string, unknown>> } = await import(`./parity/${name}.js`);
    const t0 = Date.now();
    try {
      Object.assign(result, await mod.run());
    } catch (e) {
      failures[name] = (e as Error).message;
    }
    console.error(`parity: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const versions = refenvVersions();
  const native = await import('@retain/torch');
  result.torch = { retain_addon: native.torchVersion(), reference: versions.torch };
  result.versions = versions;
  if (Object.keys(failures).length) result.failures = failures;
  console.log(JSON.stringify(result, null, 2));
  if (Object.keys(failures).length) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
