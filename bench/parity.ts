// `npm run -s parity`: retain checked against the real Hugging Face stack and PyTorch 2.x in the reference environment
// (scripts/refenv.sh). Prints one JSON object; each section lives in bench/parity/<name>.ts and returns its own keys
// (architectures and max_logit_diff; peft_roundtrips; tokenizers and templates; lmeval_tasks and max_loglik_diff).
// `npm run -s parity -- arch peft` runs only those sections.
import { needRefenv, refenvVersions } from './refenv.js';

const SECTIONS = ['arch', 'peft', 'tokenizers', 'lmeval', 'real_models'];

async function main(): Promise<void> {
  const missing = needRefenv();
  if (missing) {
    console.error(`parity: ${missing}`);
    process.exit(2);
  }
  const chosen = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const result: Record<string, unknown> = { torch: null };
  const failures: Record<string, string> = {};
  for (const name of SECTIONS) {
    if (chosen.length && !chosen.includes(name)) continue;
    let mod: { run?: () => Promise<Record<string, unknown>> };
    try {
      mod = await import(`./parity/${name}.js`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String((e as Error).message).includes(`parity/${name}`)) continue;
      throw e;
    }
    const t0 = Date.now();
    try {
      Object.assign(result, await mod.run!());
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
